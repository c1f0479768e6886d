//! The XBRL reader on documents written here for each rule, and on two real 10-K
//! filings: Amazon's instance document and Alphabet's inline one.

use super::*;

const INSTANCE: &str = r#"<?xml version="1.0"?>
<xbrl xmlns="http://www.xbrl.org/2003/instance" xmlns:xbrldi="http://xbrl.org/2006/xbrldi"
  xmlns:us-gaap="http://fasb.org/us-gaap/2022" xmlns:iso4217="http://www.xbrl.org/2003/iso4217">
  <context id="FY2022_AWS">
<entity>
  <identifier scheme="http://www.sec.gov/CIK">0001018724</identifier>
  <segment><xbrldi:explicitMember dimension="us-gaap:StatementBusinessSegmentsAxis">amzn:AmazonWebServicesSegmentMember</xbrldi:explicitMember></segment>
</entity>
<period><startDate>2022-01-01</startDate><endDate>2022-12-31</endDate></period>
  </context>
  <context id="END2022"><entity><identifier scheme="http://www.sec.gov/CIK">0001018724</identifier></entity>
<period><instant>2022-12-31</instant></period></context>
  <unit id="usd"><measure>iso4217:USD</measure></unit>
<unit id="usdPerShare"><divide><unitNumerator><measure>iso4217:USD</measure></unitNumerator>
  <unitDenominator><measure>xbrli:shares</measure></unitDenominator></divide></unit>
  <us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax id="f1" contextRef="FY2022_AWS" unitRef="usd" decimals="-6">80096000000</us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax>
  <us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax id="f2" contextRef="FY2022_AWS" unitRef="usd" decimals="-6">80096000000</us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax>
  <us-gaap:Cash contextRef="END2022" unitRef="usd" decimals="INF">12.5</us-gaap:Cash>
  <us-gaap:Commitments contextRef="END2022" unitRef="usd" xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"></us-gaap:Commitments>
  <us-gaap:SegmentReportingDisclosure contextRef="END2022">text, not a number</us-gaap:SegmentReportingDisclosure>
  <us-gaap:EarningsPerShareBasic contextRef="END2022" unitRef="usdPerShare" decimals="2">-0.27</us-gaap:EarningsPerShareBasic>
</xbrl>"#;

#[test]
fn an_instance_gives_its_numeric_facts_with_context_unit_and_precision() {
    let facts = read(INSTANCE.as_bytes()).expect("facts");
    assert_eq!(
        facts.len(),
        3,
        "the repeated fact once, the text and nil facts not at all"
    );
    let per_share = &facts[2];
    assert_eq!(
        per_share.unit, "iso4217:USD/xbrli:shares",
        "per share, not money"
    );
    assert_eq!(per_share.value, "-0.27".parse().unwrap());
    let revenue = &facts[0];
    assert_eq!(revenue.id.as_deref(), Some("f1"));
    assert_eq!(
        revenue.concept,
        "us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax"
    );
    assert_eq!(revenue.value, "80096000000".parse().unwrap());
    assert_eq!(revenue.decimals, Some(-6));
    assert_eq!(revenue.unit, "iso4217:USD");
    assert_eq!(revenue.context.cik, 1018724);
    assert_eq!(
        revenue.context.period,
        Period::Duration {
            start: Date::parse("2022-01-01").unwrap(),
            end: Date::parse("2022-12-31").unwrap()
        }
    );
    assert_eq!(
        revenue.context.dimensions,
        [(
            "us-gaap:StatementBusinessSegmentsAxis".to_owned(),
            "amzn:AmazonWebServicesSegmentMember".to_owned()
        )]
    );
    assert_eq!(facts[1].decimals, None, "INF is exact");
    assert_eq!(
        facts[1].context.period,
        Period::Instant(Date::parse("2022-12-31").unwrap())
    );
}

#[test]
fn inline_numbers_are_read_by_their_format_scale_and_sign() {
    let document = r#"<html xmlns="http://www.w3.org/1999/xhtml" xmlns:ix="http://www.xbrl.org/2013/inlineXBRL"
  xmlns:xbrli="http://www.xbrl.org/2003/instance" xmlns:xbrldi="http://xbrl.org/2006/xbrldi"><body>
<ix:header><ix:resources>
  <xbrli:context id="c1"><xbrli:entity><xbrli:identifier scheme="http://www.sec.gov/CIK">0001652044</xbrli:identifier>
<xbrli:segment><xbrldi:explicitMember dimension="us-gaap:StatementBusinessSegmentsAxis">goog:GoogleCloudMember</xbrldi:explicitMember>
<xbrldi:explicitMember dimension="srt:ConsolidationItemsAxis">us-gaap:OperatingSegmentsMember</xbrldi:explicitMember></xbrli:segment></xbrli:entity>
<xbrli:period><xbrli:startDate>2024-01-01</xbrli:startDate><xbrli:endDate>2024-12-31</xbrli:endDate></xbrli:period></xbrli:context>
  <xbrli:unit id="usd"><xbrli:measure>iso4217:USD</xbrli:measure></xbrli:unit>
</ix:resources></ix:header>
<p>Revenue <ix:nonFraction id="r" name="us-gaap:Revenues" contextRef="c1" unitRef="usd" decimals="-6" scale="6" format="ixt:num-dot-decimal">43,229</ix:nonFraction>
loss <ix:nonFraction id="l" name="us-gaap:OperatingIncomeLoss" contextRef="c1" unitRef="usd" decimals="-6" scale="6" sign="-" format="ixt:num-dot-decimal">1,2<span>34</span></ix:nonFraction>
share <ix:nonFraction id="p" name="us-gaap:Share" contextRef="c1" unitRef="usd" decimals="2" scale="-2" format="ixt:num-dot-decimal">28</ix:nonFraction>
none <ix:nonFraction id="z" name="us-gaap:Other" contextRef="c1" unitRef="usd" decimals="-6" scale="6" format="ixt:fixed-zero">—</ix:nonFraction></p>
</body></html>"#;
    let facts = read(document.as_bytes()).expect("facts");
    let value = |id: &str| {
        facts
            .iter()
            .find(|fact| fact.id.as_deref() == Some(id))
            .map(|fact| fact.value)
            .expect(id)
    };
    assert_eq!(value("r"), "43229000000".parse().unwrap());
    assert_eq!(
        value("l"),
        "-1234000000".parse().unwrap(),
        "text split by markup, signed"
    );
    assert_eq!(value("z"), Decimal::from_integer(0));
    assert_eq!(
        value("p"),
        "0.28".parse().unwrap(),
        "a percentage shown whole"
    );
    assert_eq!(facts[0].context.dimensions.len(), 2, "both axes kept");
}

#[test]
fn a_figure_repeated_at_a_coarser_precision_agrees_and_the_finer_is_kept() {
    let coarse_first = INSTANCE.replacen(
        r#"decimals="-6">80096000000<"#,
        r#"decimals="-9">80000000000<"#,
        1,
    );
    let facts = read(coarse_first.as_bytes()).expect("consistent duplicates");
    assert_eq!(facts[0].value, "80096000000".parse().unwrap());
    assert_eq!(facts[0].decimals, Some(-6));
    let inconsistent = INSTANCE.replacen(
        r#"decimals="-6">80096000000<"#,
        r#"decimals="-9">81000000000<"#,
        1,
    );
    assert!(matches!(
        read(inconsistent.as_bytes()),
        Err(XbrlError::Conflict { .. })
    ));
    assert_eq!(
        rounded("8452000000".parse().unwrap(), Some(-8)),
        Some((85, -8))
    );
    assert_eq!(
        rounded("-8450000000".parse().unwrap(), Some(-8)),
        Some((-85, -8))
    );
    assert_eq!(rounded("12.5".parse().unwrap(), None), Some((125, 1)));
}

#[test]
fn bad_documents_are_refused_naming_what_is_wrong() {
    assert!(matches!(
        read(b"<xbrl><context id=\"c\">"),
        Err(XbrlError::Malformed(_))
    ));
    assert_eq!(
        read(b"<html><body><p>hello</p></body></html>"),
        Err(XbrlError::NotXbrl)
    );
    let conflicting = INSTANCE.replacen(">80096000000<", ">80097000000<", 1);
    let err = read(conflicting.as_bytes()).unwrap_err().to_string();
    assert!(
        err.contains("f1") && err.contains("f2") && err.contains("different values"),
        "{err}"
    );
    let orphan = INSTANCE.replace(
        "contextRef=\"END2022\" unitRef",
        "contextRef=\"NOWHERE\" unitRef",
    );
    let err = read(orphan.as_bytes()).unwrap_err().to_string();
    assert!(
        err.contains("NOWHERE") && err.contains("not in the document"),
        "{err}"
    );
    let bad_number = INSTANCE.replace(">12.5<", ">twelve<");
    assert!(
        read(bad_number.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("twelve")
    );
    assert_eq!(
        read(&vec![b' '; MAX_DOCUMENT_BYTES + 1]),
        Err(XbrlError::TooLarge)
    );
}

/// A real filing from `../shared/fixtures/edgar/` (or `RUNRATE_TEST_EDGAR_FIXTURES`,
/// which `.ci/run` sets and which makes the filings required); `None` in a clone on
/// its own.
fn filing(name: &str) -> Option<Vec<u8>> {
    let named = std::env::var_os("RUNRATE_TEST_EDGAR_FIXTURES").map(std::path::PathBuf::from);
    let dir = named.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/edgar")
    });
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => Some(bytes),
        Err(err) if named.is_none() => {
            eprintln!("skipped: no {name} in {} ({err})", dir.display());
            None
        }
        Err(err) => panic!("{name} in {}: {err}", dir.display()),
    }
}

/// The one fact of `concept` for the calendar year `year` on exactly `dimensions`.
fn yearly(facts: &[Fact], concept: &str, year: u16, dimensions: &[(&str, &str)]) -> Decimal {
    let matching: Vec<&Fact> = facts
        .iter()
        .filter(|fact| {
            fact.concept == concept
                && fact.context.period
                    == Period::Duration {
                        start: Date::parse(&format!("{year}-01-01")).unwrap(),
                        end: Date::parse(&format!("{year}-12-31")).unwrap(),
                    }
                && fact.context.dimensions.len() == dimensions.len()
                && dimensions.iter().all(|(axis, member)| {
                    fact.context
                        .dimensions
                        .iter()
                        .any(|(a, m)| a == axis && m == member)
                })
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{concept} {year} {dimensions:?}: {matching:?}"
    );
    matching[0].value
}

#[test]
fn amazon_s_instance_gives_aws_segment_figures() {
    let Some(document) = filing("amzn-20221231_htm.xml") else {
        return;
    };
    let facts = read(&document).expect("the 10-K's facts");
    let aws = [(
        "us-gaap:StatementBusinessSegmentsAxis",
        "amzn:AmazonWebServicesSegmentMember",
    )];
    let revenue = "us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax";
    assert_eq!(
        yearly(&facts, revenue, 2022, &aws),
        "80096000000".parse().unwrap()
    );
    assert_eq!(
        yearly(&facts, revenue, 2021, &aws),
        "62202000000".parse().unwrap()
    );
    assert_eq!(
        yearly(&facts, "us-gaap:OperatingIncomeLoss", 2022, &aws),
        "22841000000".parse().unwrap()
    );
    assert!(facts.iter().all(|fact| fact.context.cik == 1018724));
}

#[test]
fn alphabet_s_inline_filing_gives_google_cloud_with_both_of_its_axes() {
    let Some(document) = filing("goog-20241231.htm") else {
        return;
    };
    let facts = read(&document).expect("the 10-K's facts");
    let cloud = [(
        "us-gaap:StatementBusinessSegmentsAxis",
        "goog:GoogleCloudMember",
    )];
    let revenue = "us-gaap:RevenueFromContractWithCustomerExcludingAssessedTax";
    assert_eq!(
        yearly(&facts, revenue, 2024, &cloud),
        "43229000000".parse().unwrap()
    );
    // Segment operating income carries a second axis, and a loss its sign.
    let operating = [
        cloud[0],
        (
            "srt:ConsolidationItemsAxis",
            "us-gaap:OperatingSegmentsMember",
        ),
    ];
    let income = "us-gaap:OperatingIncomeLoss";
    assert_eq!(
        yearly(&facts, income, 2024, &operating),
        "6112000000".parse().unwrap()
    );
    assert_eq!(
        yearly(&facts, income, 2022, &operating),
        "-1922000000".parse().unwrap()
    );
    assert!(facts.iter().all(|fact| fact.context.cik == 1652044));
}
