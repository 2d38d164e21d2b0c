//! `Centavos`: money as integer PHP minor units (reference §4, §12 rule 5).
//!
//! Owns: parsing decimal PHP text into centavos with integer arithmetic, formatting with two
//! decimals, and the wire form (`trxAmount`). Must not: touch floating point, anywhere.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount in centavos (1 PHP = 100 centavos). May be zero or negative only where the value is
/// a balance or a difference; requests check positivity where they are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Centavos(i64);

/// The InstaPay per-transfer cap: PHP 50,000 (reference §6 5.2, §12 rule 6).
pub const INSTAPAY_CAP: Centavos = Centavos(5_000_000);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a number like 1500, 1500.5 or 1,500.50")]
    Invalid(String),
    #[error("amount {0:?} has more than 2 decimal places")]
    TooManyDecimals(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Centavos {
    pub const ZERO: Centavos = Centavos(0);

    pub const fn new(value: i64) -> Self {
        Centavos(value)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Centavos) -> Option<Centavos> {
        self.0.checked_add(other.0).map(Centavos)
    }

    pub fn checked_sub(self, other: Centavos) -> Option<Centavos> {
        self.0.checked_sub(other.0).map(Centavos)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Parses PHP written as decimal text: `1500`, `1500.5`, `1,500.50`, `-3.10`, `.5`.
    /// Thousands separators must be well placed (`1,500` yes, `15,00` no).
    pub fn parse_php(text: &str) -> Result<Centavos, MoneyError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(MoneyError::Empty);
        }
        let invalid = || MoneyError::Invalid(text.to_string());
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int_part.is_empty() && frac_part.is_none_or(str::is_empty) {
            return Err(invalid());
        }
        // Integer part: digits, optionally grouped by commas in threes.
        let digits: String = if int_part.contains(',') {
            let groups: Vec<&str> = int_part.split(',').collect();
            let first_ok = !groups[0].is_empty() && groups[0].len() <= 3;
            let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
            if !first_ok || !rest_ok {
                return Err(invalid());
            }
            groups.concat()
        } else {
            int_part.to_string()
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let frac = frac_part.unwrap_or("");
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if frac_part.is_some() && frac.is_empty() && digits.is_empty() {
            return Err(invalid());
        }
        if frac.len() > 2 {
            return Err(MoneyError::TooManyDecimals(text.to_string()));
        }
        let overflow = || MoneyError::Overflow(text.to_string());
        let mut pesos: i64 = 0;
        for b in digits.bytes() {
            pesos = pesos
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        let mut cents: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            let weight = if i == 0 { 10 } else { 1 };
            cents += i64::from(b - b'0') * weight;
        }
        let total = pesos
            .checked_mul(100)
            .and_then(|v| v.checked_add(cents))
            .ok_or_else(overflow)?;
        Ok(Centavos(if negative { -total } else { total }))
    }

    /// PHP with exactly two decimals and no separators: `1500.50`, `-0.05`.
    pub fn to_php_string(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Centavos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let sign = if v < 0 { "-" } else { "" };
        let abs = v.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl std::iter::Sum for Centavos {
    /// Saturates instead of wrapping; callers that must detect overflow use `checked_add`.
    fn sum<I: Iterator<Item = Centavos>>(iter: I) -> Centavos {
        Centavos(iter.fold(0i64, |a, c| a.saturating_add(c.0)))
    }
}

/// Wire form: a JSON integer (reference §4, "the client sends a JSON integer").
impl Serialize for Centavos {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// Accepts a JSON integer or a string of digits (the docs use both); never a float.
impl<'de> Deserialize<'de> for Centavos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Centavos;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an integer number of centavos, as a JSON integer or a string of digits",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Centavos, E> {
                Ok(Centavos(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Centavos, E> {
                i64::try_from(v)
                    .map(Centavos)
                    .map_err(|_| E::custom("amount out of range"))
            }
            fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Centavos, E> {
                Err(E::custom(
                    "amount must be an integer number of centavos, not a decimal",
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Centavos, E> {
                let digits = v.strip_prefix('-').unwrap_or(v);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom(format!("amount {v:?} is not a string of digits")));
                }
                v.parse::<i64>()
                    .map(Centavos)
                    .map_err(|_| E::custom("amount out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_php_text_table() {
        let ok = [
            ("1500", 150_000),
            ("1500.5", 150_050),
            ("1500.50", 150_050),
            ("1,500.50", 150_050),
            ("1,234,567.01", 123_456_701),
            (" 7 ", 700),
            ("0.01", 1),
            (".5", 50),
            ("5.", 500),
            ("-3.10", -310),
            ("+2", 200),
            ("0", 0),
        ];
        for (text, want) in ok {
            assert_eq!(Centavos::parse_php(text), Ok(Centavos(want)), "{text}");
        }
        let bad = [
            ("", MoneyError::Empty),
            ("  ", MoneyError::Empty),
            ("1.234", MoneyError::TooManyDecimals("1.234".into())),
            ("abc", MoneyError::Invalid("abc".into())),
            ("1e3", MoneyError::Invalid("1e3".into())),
            ("15,00", MoneyError::Invalid("15,00".into())),
            ("1,5000", MoneyError::Invalid("1,5000".into())),
            (",500", MoneyError::Invalid(",500".into())),
            ("1.2.3", MoneyError::Invalid("1.2.3".into())),
            (".", MoneyError::Invalid(".".into())),
            ("-", MoneyError::Invalid("-".into())),
            ("PHP 5", MoneyError::Invalid("PHP 5".into())),
            (
                "99999999999999999999",
                MoneyError::Overflow("99999999999999999999".into()),
            ),
        ];
        for (text, want) in bad {
            assert_eq!(Centavos::parse_php(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn formats_two_decimals() {
        assert_eq!(Centavos(150_050).to_string(), "1500.50");
        assert_eq!(Centavos(5).to_string(), "0.05");
        assert_eq!(Centavos(-5).to_string(), "-0.05");
        assert_eq!(Centavos(0).to_string(), "0.00");
    }

    #[test]
    fn wire_form_is_integer_and_accepts_digit_strings() {
        assert_eq!(serde_json::to_string(&Centavos(10000)).unwrap(), "10000");
        let a: Centavos = serde_json::from_str("10000").unwrap();
        let b: Centavos = serde_json::from_str("\"1000\"").unwrap();
        assert_eq!((a, b), (Centavos(10000), Centavos(1000)));
        assert!(serde_json::from_str::<Centavos>("100.5").is_err());
        assert!(serde_json::from_str::<Centavos>("\"10.5\"").is_err());
        assert!(serde_json::from_str::<Centavos>("\"\"").is_err());
        assert!(serde_json::from_str::<Centavos>("true").is_err());
    }

    #[test]
    fn checked_arithmetic_detects_overflow() {
        assert_eq!(Centavos(i64::MAX).checked_add(Centavos(1)), None);
        assert_eq!(Centavos(5).checked_sub(Centavos(7)), Some(Centavos(-2)));
    }
}
