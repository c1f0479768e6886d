//! Calendar quarters, the periods figures are reported for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A calendar quarter such as 2026-Q1. Ordered chronologically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quarter {
    year: u16,
    quarter: u8,
}

/// A calendar date, for the first and last days of a quarter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a calendar quarter (expected YYYY-QN with N from 1 to 4, e.g. 2026-Q1)")]
pub struct QuarterError(pub String);

impl Quarter {
    pub const FIRST_YEAR: u16 = 1900;
    pub const LAST_YEAR: u16 = 2999;

    pub fn new(year: u16, quarter: u8) -> Option<Self> {
        ((Self::FIRST_YEAR..=Self::LAST_YEAR).contains(&year) && (1..=4).contains(&quarter))
            .then_some(Quarter { year, quarter })
    }

    /// What [`Quarter::parse`] accepts, as a regular expression (for the OpenAPI document).
    pub const PATTERN: &'static str = "^(19|2[0-9])[0-9]{2}-[qQ][1-4]$";

    /// Accepts `2026-Q1` and the resource id form `2026-q1`.
    pub fn parse(text: &str) -> Result<Self, QuarterError> {
        let err = || QuarterError(text.to_owned());
        let (year, quarter) = text.split_once('-').ok_or_else(err)?;
        let quarter = quarter
            .strip_prefix('Q')
            .or_else(|| quarter.strip_prefix('q'))
            .ok_or_else(err)?;
        if year.len() != 4 || quarter.len() != 1 {
            return Err(err());
        }
        let year: u16 = year.parse().map_err(|_| err())?;
        let quarter: u8 = quarter.parse().map_err(|_| err())?;
        Quarter::new(year, quarter).ok_or_else(err)
    }

    /// The resource id: lowercase, `2026-q1`.
    pub fn id(&self) -> String {
        format!("{}-q{}", self.year, self.quarter)
    }

    pub fn first_date(&self) -> Date {
        Date {
            year: self.year,
            month: self.quarter * 3 - 2,
            day: 1,
        }
    }

    pub fn last_date(&self) -> Date {
        let month = self.quarter * 3;
        let day = match month {
            3 | 12 => 31,
            _ => 30,
        };
        Date {
            year: self.year,
            month,
            day,
        }
    }

    /// The same quarter one year earlier.
    pub fn year_earlier(&self) -> Option<Self> {
        Quarter::new(self.year.checked_sub(1)?, self.quarter)
    }

    /// The quarter before this one.
    pub fn previous(&self) -> Option<Self> {
        if self.quarter == 1 {
            Quarter::new(self.year.checked_sub(1)?, 4)
        } else {
            Quarter::new(self.year, self.quarter - 1)
        }
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-Q{}", self.year, self.quarter)
    }
}

impl std::str::FromStr for Quarter {
    type Err = QuarterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Quarter::parse(text)
    }
}

impl TryFrom<String> for Quarter {
    type Error = QuarterError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Quarter::parse(&text)
    }
}

impl From<Quarter> for String {
    fn from(quarter: Quarter) -> Self {
        quarter.to_string()
    }
}

impl Date {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '-');
        let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
        if year.len() != 4 || month.len() != 2 || day.len() != 2 {
            return None;
        }
        let date = Date {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
            day: day.parse().ok()?,
        };
        (date.month >= 1 && date.month <= 12 && date.day >= 1 && date.day <= date.days_in_month())
            .then_some(date)
    }

    fn days_in_month(&self) -> u8 {
        match self.month {
            2 if self.year.is_multiple_of(4)
                && (!self.year.is_multiple_of(100) || self.year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings_of_a_quarter() {
        let q = Quarter::parse("2026-Q1").unwrap();
        assert_eq!(q, Quarter::parse("2026-q1").unwrap());
        assert_eq!(q.to_string(), "2026-Q1");
        assert_eq!(q.id(), "2026-q1");
    }

    #[test]
    fn rejects_malformed_quarters() {
        for text in [
            "2026-Q5", "2026-Q0", "26Q1", "2026Q1", "2026-Q12", "abcd-Q1", "",
        ] {
            assert!(Quarter::parse(text).is_err(), "{text} parsed");
        }
    }

    #[test]
    fn knows_first_and_last_days() {
        let q = Quarter::parse("2026-Q2").unwrap();
        assert_eq!(q.first_date().to_string(), "2026-04-01");
        assert_eq!(q.last_date().to_string(), "2026-06-30");
        let q4 = Quarter::parse("2025-Q4").unwrap();
        assert_eq!(q4.last_date().to_string(), "2025-12-31");
        assert_eq!(Quarter::parse("2026-Q1").unwrap().previous(), Some(q4));
    }

    #[test]
    fn orders_chronologically() {
        let mut quarters: Vec<Quarter> = ["2026-Q1", "2025-Q4", "2025-Q1"]
            .iter()
            .map(|t| Quarter::parse(t).unwrap())
            .collect();
        quarters.sort();
        let names: Vec<String> = quarters.iter().map(|q| q.to_string()).collect();
        assert_eq!(names, ["2025-Q1", "2025-Q4", "2026-Q1"]);
    }

    #[test]
    fn validates_dates() {
        assert!(Date::parse("2024-02-29").is_some());
        assert!(Date::parse("2026-02-29").is_none());
        assert!(Date::parse("2026-4-30").is_none());
    }
}
