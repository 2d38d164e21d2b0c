//! Identifier newtypes (reference §4). Each validates on construction and on deserialization.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} {value:?} may only contain letters A-Z, a-z and digits 0-9")]
    BadChar { kind: &'static str, value: String },
}

fn check_alnum(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            kind,
            value: value.to_string(),
            max,
        });
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(IdError::BadChar {
            kind,
            value: value.to_string(),
        });
    }
    Ok(())
}

macro_rules! alnum_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_alnum($kind, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(v: String) -> Result<Self, IdError> {
                Self::new(v)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

alnum_id!(
    /// Message id made by the merchant: unique per merchant over all requests, 1–32 `[A-Za-z0-9]`.
    MsgId,
    "msgId",
    32
);
alnum_id!(
    /// Merchant id (12 digits in practice; validated as 1–32 `[A-Za-z0-9]`).
    MchId,
    "mchId",
    32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_id_rules() {
        assert!(MsgId::new("161415460871").is_ok());
        assert!(MsgId::new("S110202411271861610566972481536").is_ok());
        assert!(MsgId::new("a".repeat(32)).is_ok());
        assert!(matches!(MsgId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(
            MsgId::new("a".repeat(33)),
            Err(IdError::TooLong { .. })
        ));
        for bad in ["ab-c", "ab c", "ñ1", "a_b", "a/b"] {
            assert!(
                matches!(MsgId::new(bad), Err(IdError::BadChar { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn serde_validates() {
        let ok: MsgId = serde_json::from_str("\"ABC123\"").unwrap();
        assert_eq!(ok.as_str(), "ABC123");
        assert!(serde_json::from_str::<MsgId>("\"\"").is_err());
        assert!(serde_json::from_str::<MchId>("\"12-3\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"ABC123\"");
    }
}
