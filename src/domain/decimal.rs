//! Exact decimal numbers: figures are never held as floats.

use std::{cmp::Ordering, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `mantissa × 10^-scale`, exactly. Equality and ordering compare values, so `12.50 == 12.5`.
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

/// The most digits after the point a decimal may carry (nanos, as in `google.type.Money`).
pub const MAX_SCALE: u32 = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error(
        "`{0}` is not a decimal number (expected digits with an optional sign and point, e.g. 12.5)"
    )]
    Malformed(String),
    #[error("`{0}` is too large")]
    OutOfRange(String),
    #[error("`{0}` has more than {MAX_SCALE} digits after the point")]
    TooPrecise(String),
}

impl Decimal {
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };

    pub fn new(mantissa: i128, scale: u32) -> Self {
        Decimal { mantissa, scale }
    }

    pub fn from_integer(value: i64) -> Self {
        Decimal::new(i128::from(value), 0)
    }

    pub fn mantissa(&self) -> i128 {
        self.mantissa
    }

    /// Digits after the point, as written (trailing zeros count).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// The same value with trailing zeros after the point removed.
    pub fn normalized(self) -> Self {
        let Decimal {
            mut mantissa,
            mut scale,
        } = self;
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Decimal { mantissa, scale }
    }

    /// Multiplies by `10^exponent`, keeping the value exact (the scale shrinks first).
    pub fn scaled_by_power_of_ten(self, exponent: u32) -> Option<Self> {
        if self.scale >= exponent {
            return Some(Decimal::new(self.mantissa, self.scale - exponent));
        }
        let factor = 10i128.checked_pow(exponent - self.scale)?;
        Some(Decimal::new(self.mantissa.checked_mul(factor)?, 0))
    }

    /// The value as a mantissa at the given scale, if it can be held exactly.
    pub fn mantissa_at_scale(&self, scale: u32) -> Option<i128> {
        if scale >= self.scale {
            self.mantissa
                .checked_mul(10i128.checked_pow(scale - self.scale)?)
        } else {
            let divisor = 10i128.checked_pow(self.scale - scale)?;
            (self.mantissa % divisor == 0).then_some(self.mantissa / divisor)
        }
    }

    fn cmp_value(&self, other: &Self) -> Ordering {
        let scale = self.scale.max(other.scale);
        match (
            self.mantissa_at_scale(scale),
            other.mantissa_at_scale(scale),
        ) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Only reachable for values near i128's limits; fall back to an approximate order.
            _ => (self.mantissa as f64 / 10f64.powi(self.scale as i32))
                .total_cmp(&(other.mantissa as f64 / 10f64.powi(other.scale as i32))),
        }
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_value(other)
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || DecimalError::Malformed(text.to_owned());
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(malformed());
        }
        if digits.contains('.') && fraction.is_empty() {
            return Err(malformed());
        }
        let scale = u32::try_from(fraction.len()).map_err(|_| malformed())?;
        if scale > MAX_SCALE {
            return Err(DecimalError::TooPrecise(text.to_owned()));
        }
        let mut mantissa: i128 = 0;
        for byte in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(byte - b'0')))
                .ok_or_else(|| DecimalError::OutOfRange(text.to_owned()))?;
        }
        Ok(Decimal::new(
            if negative { -mantissa } else { mantissa },
            scale,
        ))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for text in ["0", "12.5", "-3.25", "29000000000", "0.05", "100.10"] {
            assert_eq!(text.parse::<Decimal>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn compares_by_value_not_by_spelling() {
        let a: Decimal = "12.50".parse().unwrap();
        let b: Decimal = "12.5".parse().unwrap();
        assert_eq!(a, b);
        assert!("12.49".parse::<Decimal>().unwrap() < b);
    }

    #[test]
    fn rejects_what_is_not_a_plain_decimal() {
        for text in ["", ".5", "5.", "1e9", "NaN", "inf", "1,000", "--1", "12.5B"] {
            assert!(text.parse::<Decimal>().is_err(), "{text} parsed");
        }
    }

    #[test]
    fn scales_by_powers_of_ten_exactly() {
        let d: Decimal = "12.5".parse().unwrap();
        assert_eq!(
            d.scaled_by_power_of_ten(9).unwrap().to_string(),
            "12500000000"
        );
        assert_eq!(d.mantissa_at_scale(0), None);
        assert_eq!(d.mantissa_at_scale(3), Some(12500));
    }
}
