//! A fact's value written the way the article's table writes it: `~$29B`,
//! `~$13B (est.)`, `Not disclosed`, `TPU v5p, Axion`, `DeepMind (internal)`.

use super::{Decimal, FactBody, FactStatus, FactValue, Money};

pub fn display_value(body: &FactBody) -> String {
    let Some(value) = &body.value else {
        return "Not disclosed".to_owned();
    };
    let mut text = String::new();
    if body.lower_bound {
        text.push_str("over ");
    } else if body.upper_bound {
        text.push_str("up to ");
    }
    if body.approximate {
        text.push('~');
    }
    match value {
        FactValue::Money(money) => text.push_str(&compact_money(money)),
        FactValue::Percent(percent) => text.push_str(&format!("{}%", percent.normalized())),
        FactValue::Multiple(multiple) => text.push_str(&format!("{}x", multiple.normalized())),
        FactValue::Text(words) => text.push_str(words),
        FactValue::TextList(names) => text.push_str(&names.join(", ")),
    }
    if body.status == FactStatus::Estimated {
        text.push_str(" (est.)");
    }
    if let Some(note) = &body.note {
        text.push_str(&format!(" ({note})"));
    }
    text
}

/// `$29B`, `$12.5B`, `$750M`, `EUR 1.2T`: the largest suffix the amount reaches.
fn compact_money(money: &Money) -> String {
    const SUFFIXES: [(u32, &str); 4] = [(12, "T"), (9, "B"), (6, "M"), (3, "K")];
    let amount = money.amount();
    let magnitude = amount.mantissa().unsigned_abs() / 10u128.pow(amount.scale());
    let (number, suffix) = SUFFIXES
        .iter()
        .find(|(exponent, _)| magnitude >= 10u128.pow(*exponent))
        .map(|(exponent, suffix)| {
            let scaled = Decimal::new(amount.mantissa(), amount.scale() + exponent);
            (scaled.normalized(), *suffix)
        })
        .unwrap_or((amount, ""));
    let sign = if number.is_negative() { "-" } else { "" };
    let digits = number.to_string();
    let digits = digits.trim_start_matches('-');
    match money.currency.symbol() {
        Some(symbol) => format!("{sign}{symbol}{digits}{suffix}"),
        None => format!("{sign}{} {digits}{suffix}", money.currency),
    }
}

/// A duration as a reader says it: "3 days", "1 day and 12 hours", "30 minutes".
pub fn duration_in_words(duration: std::time::Duration) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = duration.as_secs();
    let mut parts = Vec::new();
    for (seconds, name) in UNITS {
        let count = left / seconds;
        left %= seconds;
        if count > 0 {
            parts.push(format!(
                "{count} {name}{}",
                if count == 1 { "" } else { "s" }
            ));
        }
    }
    match parts.as_slice() {
        [] => "a moment".to_owned(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CurrencyCode;

    fn body(value: Option<FactValue>, status: FactStatus) -> FactBody {
        FactBody {
            status,
            value,
            approximate: false,
            lower_bound: false,
            upper_bound: false,
            precision: None,
            estimated_by: None,
            quote: None,
            note: None,
            sources: vec![],
        }
    }

    #[test]
    fn durations_read_in_words() {
        use std::time::Duration;
        assert_eq!(duration_in_words(Duration::from_secs(72 * 3600)), "3 days");
        assert_eq!(
            duration_in_words(Duration::from_secs(36 * 3600)),
            "1 day and 12 hours"
        );
        assert_eq!(
            duration_in_words(Duration::from_secs(90_061)),
            "1 day, 1 hour, 1 minute and 1 second"
        );
        assert_eq!(duration_in_words(Duration::from_secs(1800)), "30 minutes");
    }

    fn usd(amount: &str) -> FactValue {
        let currency = CurrencyCode::parse("USD").unwrap();
        FactValue::Money(Money::from_decimal(currency, amount.parse().unwrap()).unwrap())
    }

    #[test]
    fn writes_money_as_the_article_does() {
        let mut fact = body(Some(usd("13000000000")), FactStatus::Estimated);
        fact.approximate = true;
        assert_eq!(display_value(&fact), "~$13B (est.)");
        let fact = body(Some(usd("12500000000")), FactStatus::Reported);
        assert_eq!(display_value(&fact), "$12.5B");
        let fact = body(Some(usd("750000000")), FactStatus::Reported);
        assert_eq!(display_value(&fact), "$750M");
        let fact = body(Some(usd("12.5")), FactStatus::Reported);
        assert_eq!(display_value(&fact), "$12.5");
    }

    #[test]
    fn writes_bounds_notes_and_missing_values() {
        let mut fact = body(Some(usd("15000000000")), FactStatus::Reported);
        fact.lower_bound = true;
        assert_eq!(display_value(&fact), "over $15B");
        assert_eq!(
            display_value(&body(None, FactStatus::NotDisclosed)),
            "Not disclosed"
        );
        let mut fact = body(
            Some(FactValue::Text("DeepMind".into())),
            FactStatus::Reported,
        );
        fact.note = Some("internal".into());
        assert_eq!(display_value(&fact), "DeepMind (internal)");
        let fact = body(
            Some(FactValue::TextList(vec!["TPU v5p".into(), "Axion".into()])),
            FactStatus::Reported,
        );
        assert_eq!(display_value(&fact), "TPU v5p, Axion");
    }
}
