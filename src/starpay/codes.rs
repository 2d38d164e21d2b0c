//! The code catalogue as data (reference §9): Starpay action codes and InstaPay reason codes,
//! each with the class the engine acts on.
//!
//! A `code` is only the result of a call; it never decides a transaction's final state
//! (reference §8, §9.1). The classes here say what the caller does next.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the engine does with a code or reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeClass {
    /// The call did what was asked; read the payload (`trxState` for a payout).
    Success,
    /// Outcome of the transaction is unknown or must be confirmed: query it (reference §12 rules 2, 7).
    ResolveByQuery,
    /// Too frequent: back off and resend the same msgId later (reference §12 rule 8).
    BackOff,
    /// Configuration or signature fault: stop the whole run (reference §12 rule 9).
    StopRun,
    /// No money moved and it will not without a change of data or funds.
    FinalFailure,
}

/// A Starpay action code. Travels as a JSON string (`"200"`); a number is accepted too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Code(String);

impl Code {
    pub fn new(s: impl Into<String>) -> Code {
        Code(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_success(&self) -> bool {
        self.0 == "200"
    }

    /// The catalogue entry, if the code is listed.
    pub fn entry(&self) -> Option<&'static StarpayCode> {
        STARPAY_CODES.iter().find(|c| c.code == self.0)
    }

    /// Class per reference §9.1; unlisted codes resolve by query.
    pub fn class(&self) -> CodeClass {
        self.entry().map_or(CodeClass::ResolveByQuery, |e| e.class)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.0)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The docs write a code both as a string and as a number.
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a code as a string or an integer")]
        enum Wire {
            Text(String),
            Signed(i64),
            Unsigned(u64),
        }
        Ok(Code(match Wire::deserialize(d)? {
            Wire::Text(s) => s,
            Wire::Signed(n) => n.to_string(),
            Wire::Unsigned(n) => n.to_string(),
        }))
    }
}

/// One row of reference §9.1.
#[derive(Debug)]
pub struct StarpayCode {
    pub code: &'static str,
    pub message: &'static str,
    pub class: CodeClass,
    pub action: &'static str,
}

/// Reference §9.1, in order.
pub static STARPAY_CODES: &[StarpayCode] = &[
    StarpayCode {
        code: "200",
        message: "success",
        class: CodeClass::Success,
        action: "read trxState / payload",
    },
    StarpayCode {
        code: "400",
        message: "Bad request",
        class: CodeClass::ResolveByQuery,
        action: "payout: query, then REJECTED if not found",
    },
    StarpayCode {
        code: "401",
        message: "Invalid signature",
        class: CodeClass::StopRun,
        action: "stop the run",
    },
    StarpayCode {
        code: "402",
        message: "Verify signature failed",
        class: CodeClass::StopRun,
        action: "stop the run",
    },
    StarpayCode {
        code: "403",
        message: "Repeated msgId",
        class: CodeClass::ResolveByQuery,
        action: "query it; never fail the row on 403",
    },
    StarpayCode {
        code: "404",
        message: "Not found",
        class: CodeClass::ResolveByQuery,
        action: "on a query: not-found rule; on a payout: query, then REJECTED if not found",
    },
    StarpayCode {
        code: "406",
        message: "Requests are too frequent",
        class: CodeClass::BackOff,
        action: "back off, resend the same msgId later",
    },
    StarpayCode {
        code: "410",
        message: "Configuration error",
        class: CodeClass::StopRun,
        action: "stop the run",
    },
    StarpayCode {
        code: "411",
        message: "Lack of configuration",
        class: CodeClass::StopRun,
        action: "stop the run",
    },
    StarpayCode {
        code: "412",
        message: "Illegal parameter",
        class: CodeClass::ResolveByQuery,
        action: "payout: query, then REJECTED if not found",
    },
    StarpayCode {
        code: "413",
        message: "Duplicate notification",
        class: CodeClass::ResolveByQuery,
        action: "log; no state change",
    },
    StarpayCode {
        code: "414",
        message: "Invalid merchant status",
        class: CodeClass::StopRun,
        action: "stop the run",
    },
];

/// InstaPay reason classes (reference §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonClass {
    /// `AB*`: not a final failure; a FAIL with it is held and re-queried.
    Timeout,
    /// `AC*`, `BE01`, `RC01`: fix the data before any re-run.
    BeneficiaryData,
    /// `AM04`: top up, then re-run.
    Funds,
    /// Anything else: final, reason kept verbatim.
    Other,
}

impl ReasonClass {
    /// The engine-level class of a FAIL carrying this reason.
    pub fn code_class(self) -> CodeClass {
        match self {
            ReasonClass::Timeout => CodeClass::ResolveByQuery,
            _ => CodeClass::FinalFailure,
        }
    }
}

#[derive(Debug)]
pub struct InstapayReason {
    pub code: &'static str,
    pub message: &'static str,
    pub class: ReasonClass,
    /// true where the code and message come from the docs; false for the ISO 20022 codes the
    /// project added (reference §9.2 "Decision (undocumented)").
    pub documented: bool,
}

pub static INSTAPAY_REASONS: &[InstapayReason] = &[
    InstapayReason {
        code: "AB01",
        message: "Aborted Clearing Timeout",
        class: ReasonClass::Timeout,
        documented: true,
    },
    InstapayReason {
        code: "AB05",
        message: "Timeout Creditor Agent",
        class: ReasonClass::Timeout,
        documented: true,
    },
    InstapayReason {
        code: "AB06",
        message: "Timeout Instructed Agent",
        class: ReasonClass::Timeout,
        documented: true,
    },
    InstapayReason {
        code: "AB08",
        message: "Offline Creditor Agent",
        class: ReasonClass::Timeout,
        documented: true,
    },
    InstapayReason {
        code: "AB09",
        message: "Error Creditor Agent",
        class: ReasonClass::Timeout,
        documented: true,
    },
    InstapayReason {
        code: "AC01",
        message: "Incorrect Account Number",
        class: ReasonClass::BeneficiaryData,
        documented: true,
    },
    InstapayReason {
        code: "AC03",
        message: "Invalid Creditor Account Number",
        class: ReasonClass::BeneficiaryData,
        documented: false,
    },
    InstapayReason {
        code: "AC04",
        message: "Closed Account Number",
        class: ReasonClass::BeneficiaryData,
        documented: false,
    },
    InstapayReason {
        code: "AC06",
        message: "Blocked Account",
        class: ReasonClass::BeneficiaryData,
        documented: false,
    },
    InstapayReason {
        code: "AM04",
        message: "Insufficient Funds",
        class: ReasonClass::Funds,
        documented: false,
    },
    InstapayReason {
        code: "AM02",
        message: "Not Allowed Amount",
        class: ReasonClass::Other,
        documented: false,
    },
    InstapayReason {
        code: "BE01",
        message: "Inconsistent With End Customer",
        class: ReasonClass::BeneficiaryData,
        documented: false,
    },
    InstapayReason {
        code: "RC01",
        message: "Bank Identifier Incorrect",
        class: ReasonClass::BeneficiaryData,
        documented: false,
    },
    InstapayReason {
        code: "AG01",
        message: "Transaction Forbidden",
        class: ReasonClass::Other,
        documented: false,
    },
    InstapayReason {
        code: "MS03",
        message: "Not Specified Reason Agent Generated",
        class: ReasonClass::Other,
        documented: false,
    },
];

/// Looks up a reason; unknown codes fall in the "anything else" class, except any `AB*`
/// code, which is a timeout by family (reference §9.2 "timeout (`AB*`)").
pub fn reason_class(error_code: &str) -> ReasonClass {
    if let Some(r) = INSTAPAY_REASONS.iter().find(|r| r.code == error_code) {
        return r.class;
    }
    if error_code.starts_with("AB") {
        return ReasonClass::Timeout;
    }
    if error_code.starts_with("AC") {
        return ReasonClass::BeneficiaryData;
    }
    ReasonClass::Other
}

pub fn reason_message(error_code: &str) -> Option<&'static str> {
    INSTAPAY_REASONS
        .iter()
        .find(|r| r.code == error_code)
        .map(|r| r.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starpay_classes_follow_reference_9_1() {
        // Each class with the codes reference §9.1 puts in it ("" = no code at all).
        let table: [(CodeClass, &[&str]); 4] = [
            (CodeClass::Success, &["200"]),
            (CodeClass::BackOff, &["406"]),
            (CodeClass::StopRun, &["401", "402", "410", "411", "414"]),
            (
                CodeClass::ResolveByQuery,
                &["400", "403", "404", "412", "511", ""],
            ),
        ];
        for (want, codes) in table {
            for c in codes {
                assert_eq!(Code::new(*c).class(), want, "{c}");
            }
        }
    }

    #[test]
    fn codes_parse_from_string_or_number() {
        let a: Code = serde_json::from_str("\"406\"").unwrap();
        let b: Code = serde_json::from_str("406").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"406\"");
    }

    #[test]
    fn reason_classes_follow_reference_9_2() {
        let table: [(ReasonClass, &[&str]); 4] = [
            (ReasonClass::Timeout, &["AB05", "AB99"]),
            (ReasonClass::BeneficiaryData, &["AC01", "BE01"]),
            (ReasonClass::Funds, &["AM04"]),
            (ReasonClass::Other, &["ZZ99"]),
        ];
        for (want, codes) in table {
            for c in codes {
                assert_eq!(reason_class(c), want, "{c}");
            }
        }
        assert_eq!(ReasonClass::Timeout.code_class(), CodeClass::ResolveByQuery);
        assert_eq!(ReasonClass::Funds.code_class(), CodeClass::FinalFailure);
        assert_eq!(reason_message("AC01"), Some("Incorrect Account Number"));
    }

    #[test]
    fn catalogue_has_unique_codes() {
        let mut seen = std::collections::HashSet::new();
        for c in STARPAY_CODES {
            assert!(seen.insert(c.code), "duplicate {}", c.code);
        }
        for r in INSTAPAY_REASONS {
            assert!(seen.insert(r.code), "duplicate {}", r.code);
        }
    }
}
