//! Reading XBRL: an instance document (`.xml`) or an inline XBRL filing (`.htm`, XHTML)
//! becomes its numeric facts, each with its context (the registrant, the period, the
//! dimensions it is reported on), its unit and its exact value. No network: the bytes are
//! given. A fact stated twice with the same value is kept once; stated twice with
//! different values it is an error naming both fact ids.
//!
//! Concepts and members are kept as the document writes them (`us-gaap:OperatingIncomeLoss`):
//! filers use the taxonomies' customary prefixes, and the mapping names them so. Inline
//! numbers written in a format that is not a figure (numbers in words, durations, dates)
//! are left out.

use std::collections::{HashMap, hash_map::Entry};

use quick_xml::{
    Reader, XmlVersion,
    events::{BytesStart, Event},
};

use crate::domain::{Date, Decimal};

/// The most digits after the point a value keeps, as the domain's decimals do.
const MAX_FRACTION_DIGITS: u32 = 9;

/// The largest document read: EDGAR's primary documents of the hyperscalers are a few
/// megabytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

/// What a fact's period is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// From the first day to the last, both included.
    Duration {
        start: Date,
        end: Date,
    },
    Instant(Date),
}

/// A fact's context: who reported it, for when, on which dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub id: String,
    /// The registrant's CIK, without leading zeros.
    pub cik: u64,
    pub period: Period,
    /// (axis, member), in the order the document gives them.
    pub dimensions: Vec<(String, String)>,
}

/// One numeric fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    /// The document's id of the fact, where it gives one.
    pub id: Option<String>,
    pub concept: String,
    pub context: Context,
    /// `iso4217:USD`, `xbrli:shares`, `iso4217:USD/xbrli:shares`, …, as the unit's
    /// measures are written.
    pub unit: String,
    pub value: Decimal,
    /// XBRL `decimals`: -6 is rounded to millions; `None` for `INF` (exact).
    pub decimals: Option<i32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XbrlError {
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the document is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the document holds no XBRL facts (neither an instance nor inline XBRL)")]
    NotXbrl,
    #[error("fact {fact}: {problem}")]
    BadFact { fact: String, problem: String },
    #[error("context {0}: {1}")]
    BadContext(String, String),
    #[error(
        "{concept} in context {context} is stated twice with different values ({first} and {second})"
    )]
    Conflict {
        concept: String,
        context: String,
        first: String,
        second: String,
    },
}

/// What a fact is before its context and unit are known.
struct RawFact {
    id: Option<String>,
    concept: String,
    context: String,
    unit: String,
    text: String,
    decimals: Option<String>,
    /// Inline XBRL: the power of ten the shown number is in, its sign, its format.
    scale: Option<String>,
    negative: bool,
    format: Option<String>,
}

#[derive(Default)]
struct PartialContext {
    id: String,
    cik: Option<u64>,
    start: Option<String>,
    end: Option<String>,
    instant: Option<String>,
    dimensions: Vec<(String, String)>,
}

/// Where the reader is inside the element it is collecting text for.
enum Collecting {
    Nothing,
    Identifier,
    Start,
    End,
    Instant,
    Member(String),
    Measure,
    Fact(Box<RawFact>, usize),
}

/// The numeric facts of an instance or inline XBRL document.
pub fn read(document: &[u8]) -> Result<Vec<Fact>, XbrlError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(XbrlError::TooLarge);
    }
    let mut reader = Reader::from_reader(document);
    reader.config_mut().check_end_names = true;
    let mut contexts: HashMap<String, Context> = HashMap::new();
    let mut units: HashMap<String, String> = HashMap::new();
    let mut raw_facts = Vec::new();
    let mut context = PartialContext::default();
    let mut unit: Option<(String, String)> = None;
    let mut collecting = Collecting::Nothing;
    let mut text = String::new();
    let mut depth = 0usize;
    let mut buffer = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buffer).map_err(|err| {
            XbrlError::Malformed(format!("at byte {}: {err}", reader.buffer_position()))
        })?;
        match event {
            Event::Start(element) => {
                depth += 1;
                let local = local_name(&element);
                match local.as_str() {
                    "context" => {
                        context = PartialContext {
                            id: attribute(&element, "id").unwrap_or_default(),
                            ..PartialContext::default()
                        }
                    }
                    "identifier" => collecting = Collecting::Identifier,
                    "startDate" => collecting = Collecting::Start,
                    "endDate" => collecting = Collecting::End,
                    "instant" => collecting = Collecting::Instant,
                    "explicitMember" => {
                        collecting =
                            Collecting::Member(attribute(&element, "dimension").unwrap_or_default())
                    }
                    "unit" => {
                        unit = Some((attribute(&element, "id").unwrap_or_default(), String::new()))
                    }
                    "measure" if unit.is_some() => collecting = Collecting::Measure,
                    _ => {
                        if !matches!(collecting, Collecting::Fact(..))
                            && let Some(fact) = fact_start(&element, &local)
                        {
                            collecting = Collecting::Fact(Box::new(fact), depth);
                            text.clear();
                        }
                    }
                }
                if !matches!(collecting, Collecting::Fact(..)) {
                    text.clear();
                }
            }
            Event::Text(content) => {
                let decoded = content
                    .decode()
                    .map_err(|err| XbrlError::Malformed(err.to_string()))?;
                text.push_str(&decoded);
            }
            Event::GeneralRef(reference) => {
                // Entities in numbers (`&#160;`, `&amp;`) only matter as separators.
                if let Ok(Some(ch)) = reference.resolve_char_ref() {
                    text.push(ch);
                }
            }
            Event::End(element) => {
                let local = String::from_utf8_lossy(element.local_name().as_ref()).into_owned();
                match std::mem::replace(&mut collecting, Collecting::Nothing) {
                    Collecting::Fact(mut fact, at) if at == depth => {
                        fact.text = text.trim().to_owned();
                        raw_facts.push(*fact);
                        text.clear();
                    }
                    fact @ Collecting::Fact(..) => collecting = fact,
                    Collecting::Identifier => context.cik = text.trim().parse().ok(),
                    Collecting::Start => context.start = Some(text.trim().to_owned()),
                    Collecting::End => context.end = Some(text.trim().to_owned()),
                    Collecting::Instant => context.instant = Some(text.trim().to_owned()),
                    Collecting::Member(axis) => {
                        context.dimensions.push((axis, text.trim().to_owned()))
                    }
                    // A ratio's numerator, then its denominator: USD per share is
                    // `iso4217:USD/xbrli:shares`, never plain money.
                    Collecting::Measure => {
                        if let Some((_, measure)) = &mut unit {
                            if !measure.is_empty() {
                                measure.push('/');
                            }
                            measure.push_str(text.trim());
                        }
                    }
                    Collecting::Nothing => {}
                }
                match local.as_str() {
                    "context" => {
                        let finished = finish_context(std::mem::take(&mut context))?;
                        contexts.insert(finished.id.clone(), finished);
                    }
                    "unit" => {
                        if let Some((id, measure)) = unit.take() {
                            units.insert(id, measure);
                        }
                    }
                    _ => {}
                }
                if !matches!(collecting, Collecting::Fact(..)) {
                    text.clear();
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof if depth > 0 => {
                return Err(XbrlError::Malformed(
                    "the document ends before its elements close".into(),
                ));
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if raw_facts.is_empty() && contexts.is_empty() {
        return Err(XbrlError::NotXbrl);
    }
    resolve(raw_facts, &contexts, &units)
}

/// A numeric fact's opening tag: an inline `ix:nonFraction`, or in an instance any
/// element with a `unitRef` (text facts have none).
fn fact_start(element: &BytesStart<'_>, local: &str) -> Option<RawFact> {
    // A nil fact states that nothing is reported: there is no value to read.
    if attribute(element, "nil").as_deref() == Some("true") {
        return None;
    }
    let context = attribute(element, "contextRef")?;
    let unit = attribute(element, "unitRef")?;
    let inline = local == "nonFraction";
    let concept = if inline {
        attribute(element, "name")?
    } else {
        String::from_utf8_lossy(element.name().as_ref()).into_owned()
    };
    Some(RawFact {
        id: attribute(element, "id"),
        concept,
        context,
        unit,
        text: String::new(),
        decimals: attribute(element, "decimals"),
        scale: inline.then(|| attribute(element, "scale")).flatten(),
        negative: inline && attribute(element, "sign").as_deref() == Some("-"),
        format: inline.then(|| attribute(element, "format")).flatten(),
    })
}

fn local_name(element: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(element.local_name().as_ref()).into_owned()
}

/// An attribute by its local name (`xbrldi:dimension` and `dimension` alike).
fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element.attributes().flatten().find_map(|attribute| {
        (attribute.key.local_name().as_ref() == name.as_bytes())
            .then(|| {
                attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .ok()
                    .map(|value| value.into_owned())
            })
            .flatten()
    })
}

fn finish_context(context: PartialContext) -> Result<Context, XbrlError> {
    let bad = |problem: &str| XbrlError::BadContext(context.id.clone(), problem.to_owned());
    let cik = context.cik.ok_or_else(|| bad("no registrant identifier"))?;
    let date = |text: &Option<String>| text.as_deref().and_then(Date::parse);
    let period = match (
        date(&context.start),
        date(&context.end),
        date(&context.instant),
    ) {
        (Some(start), Some(end), None) if start <= end => Period::Duration { start, end },
        (None, None, Some(instant)) => Period::Instant(instant),
        _ => return Err(bad("no valid period (startDate and endDate, or instant)")),
    };
    Ok(Context {
        id: context.id,
        cik,
        period,
        dimensions: context.dimensions,
    })
}

fn resolve(
    raw_facts: Vec<RawFact>,
    contexts: &HashMap<String, Context>,
    units: &HashMap<String, String>,
) -> Result<Vec<Fact>, XbrlError> {
    let mut facts: Vec<Fact> = Vec::new();
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    for raw in raw_facts {
        let name = raw
            .id
            .clone()
            .unwrap_or_else(|| format!("{} in {}", raw.concept, raw.context));
        let bad = |problem: String| XbrlError::BadFact {
            fact: name.clone(),
            problem,
        };
        let context = contexts.get(&raw.context).ok_or_else(|| {
            bad(format!(
                "its context {} is not in the document",
                raw.context
            ))
        })?;
        let unit = units
            .get(&raw.unit)
            .ok_or_else(|| bad(format!("its unit {} is not in the document", raw.unit)))?;
        let Some(value) = value(&raw).map_err(&bad)? else {
            continue;
        };
        let decimals = match raw.decimals.as_deref() {
            None | Some("INF") => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|_| bad(format!("decimals `{text}` is not a number")))?,
            ),
        };
        let fact = Fact {
            id: raw.id,
            concept: raw.concept,
            context: context.clone(),
            unit: unit.clone(),
            value,
            decimals,
        };
        match seen.entry((
            fact.concept.clone(),
            fact.context.id.clone(),
            fact.unit.clone(),
        )) {
            Entry::Occupied(first) => {
                let index = *first.get();
                let first = &facts[index];
                // Filings repeat a figure at other precisions (a sentence's "$8.5 billion"
                // beside a table's 8,452 million): consistent when they agree at the
                // coarser one, and the finer is kept (XBRL 2.1's duplicate rule).
                let coarser = match (first.decimals, fact.decimals) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if rounded(first.value, coarser) != rounded(fact.value, coarser) {
                    return Err(XbrlError::Conflict {
                        concept: fact.concept,
                        context: fact.context.id,
                        first: format!(
                            "{} ({})",
                            first.value,
                            first.id.as_deref().unwrap_or("no id")
                        ),
                        second: format!(
                            "{} ({})",
                            fact.value,
                            fact.id.as_deref().unwrap_or("no id")
                        ),
                    });
                }
                if finer(fact.decimals, first.decimals) {
                    facts[index] = fact;
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(facts.len());
                facts.push(fact);
            }
        }
    }
    Ok(facts)
}

/// `value` rounded (half away from zero) to `decimals` places, as (mantissa, power of
/// ten); `None` when it cannot be represented, which no other value equals.
fn rounded(value: Decimal, decimals: Option<i32>) -> Option<(i128, i32)> {
    let scale = i32::try_from(value.scale()).ok()?;
    let Some(decimals) = decimals.filter(|decimals| *decimals < scale) else {
        let normalized = value.normalized();
        return Some((
            normalized.mantissa(),
            i32::try_from(normalized.scale()).ok()?,
        ));
    };
    let divisor = 10i128.checked_pow(u32::try_from(scale - decimals).ok()?)?;
    let mantissa = value.mantissa();
    let quotient = mantissa / divisor;
    let remainder = (mantissa % divisor).abs();
    let away = if remainder * 2 >= divisor {
        mantissa.signum()
    } else {
        0
    };
    Some((quotient + away, decimals))
}

/// Whether precision `a` is finer than `b` (`None` is exact, the finest).
fn finer(a: Option<i32>, b: Option<i32>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// A fact's exact value: an instance's number as written; an inline number as shown,
/// read by its format, times ten to its scale, with its sign.
fn value(raw: &RawFact) -> Result<Option<Decimal>, String> {
    let format = raw
        .format
        .as_deref()
        .map(|format| format.rsplit(':').next().unwrap_or(format));
    let digits_and = |point: char| -> String {
        raw.text
            .chars()
            .filter(|ch| ch.is_ascii_digit() || *ch == point)
            .map(|ch| if ch == point { '.' } else { ch })
            .collect()
    };
    let shown = match format {
        // An instance's number, as written.
        None if raw.scale.is_none() => raw.text.clone(),
        None | Some("num-dot-decimal" | "numdotdecimal") => digits_and('.'),
        Some("num-comma-decimal" | "numcommadecimal") => digits_and(','),
        Some("fixed-zero" | "fixedzero" | "zerodash") => "0".to_owned(),
        // Numbers in words, durations, dates: not figures runrate drafts from.
        Some(_) => return Ok(None),
    };
    let number: Decimal = shown
        .parse()
        .map_err(|_| format!("`{}` is not a number", raw.text))?;
    let scale: i32 = match raw.scale.as_deref() {
        None => 0,
        Some(text) => text
            .parse()
            .map_err(|_| format!("scale `{text}` is not a whole number"))?,
    };
    // A negative scale shows a fraction as a whole: a percentage `28` at scale -2 is 0.28.
    let scaled = if scale >= 0 {
        number.scaled_by_power_of_ten(scale.unsigned_abs())
    } else {
        let places = number.scale() + scale.unsigned_abs();
        (places <= MAX_FRACTION_DIGITS).then(|| Decimal::new(number.mantissa(), places))
    }
    .ok_or_else(|| format!("`{}` at scale {scale} is out of range", raw.text))?;
    Ok(Some(if raw.negative {
        Decimal::new(-scaled.mantissa(), scaled.scale())
    } else {
        scaled
    }))
}

#[cfg(test)]
mod tests;
