//! Money held exactly: whole units and nanos in one ISO 4217 currency.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::decimal::Decimal;

/// ISO 4217 codes runrate accepts, with the digits after the point each allows.
const CURRENCIES: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
];

/// A known ISO 4217 currency code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode(String);

impl CurrencyCode {
    pub fn parse(code: &str) -> Option<Self> {
        CURRENCIES
            .iter()
            .any(|(known, _)| *known == code)
            .then(|| CurrencyCode(code.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits after the point the currency allows (2 for USD, 0 for JPY).
    pub fn minor_unit_digits(&self) -> u32 {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == self.0)
            .map_or(2, |(_, digits)| *digits)
    }

    /// The symbol people write before an amount, where it is unambiguous.
    pub fn symbol(&self) -> Option<&'static str> {
        match self.0.as_str() {
            "USD" => Some("$"),
            "EUR" => Some("€"),
            "GBP" => Some("£"),
            _ => None,
        }
    }
}

impl TryFrom<String> for CurrencyCode {
    type Error = String;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        CurrencyCode::parse(&code).ok_or_else(|| format!("unknown currency code `{code}`"))
    }
}

impl From<CurrencyCode> for String {
    fn from(code: CurrencyCode) -> Self {
        code.0
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An exact amount of money, as `google.type.Money` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub currency: CurrencyCode,
    pub units: i64,
    /// Same sign as `units`; |nanos| < 10^9.
    pub nanos: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{amount} has more decimal places than {currency} allows ({allowed})")]
    TooManyDecimalPlaces {
        amount: Decimal,
        currency: CurrencyCode,
        allowed: u32,
    },
    #[error("{0} is too large for a money amount")]
    OutOfRange(Decimal),
}

impl Money {
    pub fn from_decimal(currency: CurrencyCode, amount: Decimal) -> Result<Self, MoneyError> {
        let amount = amount.normalized();
        let allowed = currency.minor_unit_digits();
        if amount.scale() > allowed {
            return Err(MoneyError::TooManyDecimalPlaces {
                amount,
                currency,
                allowed,
            });
        }
        let total_nanos = amount
            .mantissa_at_scale(9)
            .ok_or(MoneyError::OutOfRange(amount))?;
        Money::from_total_nanos(currency, total_nanos).ok_or(MoneyError::OutOfRange(amount))
    }

    pub fn from_total_nanos(currency: CurrencyCode, total_nanos: i128) -> Option<Self> {
        let units = i64::try_from(total_nanos / NANOS_PER_UNIT).ok()?;
        let nanos = i32::try_from(total_nanos % NANOS_PER_UNIT).ok()?;
        Some(Money {
            currency,
            units,
            nanos,
        })
    }

    pub fn total_nanos(&self) -> i128 {
        i128::from(self.units) * NANOS_PER_UNIT + i128::from(self.nanos)
    }

    pub fn amount(&self) -> Decimal {
        Decimal::new(self.total_nanos(), 9).normalized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> CurrencyCode {
        CurrencyCode::parse("USD").unwrap()
    }

    #[test]
    fn holds_twelve_and_a_half_billion_exactly() {
        let amount = "12500000000".parse().unwrap();
        let money = Money::from_decimal(usd(), amount).unwrap();
        assert_eq!((money.units, money.nanos), (12_500_000_000, 0));
        assert_eq!(money.amount().to_string(), "12500000000");
    }

    #[test]
    fn cents_become_nanos_with_the_sign_of_the_units() {
        let money = Money::from_decimal(usd(), "-1.25".parse().unwrap()).unwrap();
        assert_eq!((money.units, money.nanos), (-1, -250_000_000));
    }

    #[test]
    fn refuses_more_decimal_places_than_the_currency_has() {
        let err = Money::from_decimal(usd(), "1.005".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("USD allows (2)"), "{err}");
        let yen = CurrencyCode::parse("JPY").unwrap();
        assert!(Money::from_decimal(yen, "1.5".parse().unwrap()).is_err());
    }

    #[test]
    fn knows_only_real_currency_codes() {
        assert!(CurrencyCode::parse("USD").is_some());
        assert!(CurrencyCode::parse("usd").is_none());
        assert!(CurrencyCode::parse("XYZ").is_none());
    }
}
