//! `TrxState`: the provider's transaction status (reference §8).
//!
//! Only a verified `trxState` can make a transaction final; any value we do not recognise is
//! carried verbatim in `Unknown` and counts as non-final.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum TrxState {
    Init,
    Processing,
    Success,
    Fail,
    Reversed,
    Close,
    Cancel,
    /// A value not in the reference; non-final, flagged for a human.
    Unknown(String),
}

impl TrxState {
    /// Exact upper-case match (reference §8 "Match exact upper-case strings").
    pub fn parse(s: &str) -> TrxState {
        match s {
            "INIT" => TrxState::Init,
            "PROCESSING" => TrxState::Processing,
            "SUCCESS" => TrxState::Success,
            "FAIL" => TrxState::Fail,
            "REVERSED" => TrxState::Reversed,
            "CLOSE" => TrxState::Close,
            "CANCEL" => TrxState::Cancel,
            other => TrxState::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TrxState::Init => "INIT",
            TrxState::Processing => "PROCESSING",
            TrxState::Success => "SUCCESS",
            TrxState::Fail => "FAIL",
            TrxState::Reversed => "REVERSED",
            TrxState::Close => "CLOSE",
            TrxState::Cancel => "CANCEL",
            TrxState::Unknown(s) => s,
        }
    }

    /// Final per reference §8. `SUCCESS` is final yet a payout may still become `REVERSED`.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TrxState::Success
                | TrxState::Fail
                | TrxState::Reversed
                | TrxState::Close
                | TrxState::Cancel
        )
    }

    /// Merge precedence of reference §8: REVERSED > {SUCCESS, FAIL, CLOSE, CANCEL} > PROCESSING >
    /// INIT; unknown values rank with PROCESSING (non-final).
    pub fn rank(&self) -> u8 {
        match self {
            TrxState::Init => 0,
            TrxState::Processing | TrxState::Unknown(_) => 1,
            TrxState::Success | TrxState::Fail | TrxState::Close | TrxState::Cancel => 2,
            TrxState::Reversed => 3,
        }
    }
}

impl fmt::Display for TrxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TrxState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrxState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(TrxState::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_finality() {
        let table = [
            ("INIT", false),
            ("PROCESSING", false),
            ("SUCCESS", true),
            ("FAIL", true),
            ("REVERSED", true),
            ("CLOSE", true),
            ("CANCEL", true),
            ("success", false),
            ("PENDING", false),
            ("", false),
        ];
        for (s, fin) in table {
            let st = TrxState::parse(s);
            assert_eq!(st.is_final(), fin, "{s}");
            assert_eq!(st.as_str(), s);
        }
        assert_eq!(
            TrxState::parse("success"),
            TrxState::Unknown("success".into())
        );
    }

    #[test]
    fn precedence() {
        assert!(TrxState::Reversed.rank() > TrxState::Success.rank());
        assert!(TrxState::Fail.rank() > TrxState::Processing.rank());
        assert!(TrxState::Processing.rank() > TrxState::Init.rank());
        assert_eq!(
            TrxState::Unknown("X".into()).rank(),
            TrxState::Processing.rank()
        );
    }
}

named_enum! {
    /// Our own row state (closed; stored as TEXT with a CHECK constraint). Changes only through
    /// `engine::transition` (payout rows; built on `engine::policy`) and the store's
    /// compare-and-set update.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub enum RowState {
        /// Validated, no msgId yet.
        #[default]
        New => "NEW",
        /// A msgId and signed bytes are stored; known not processed (connect error, 406, stop
        /// code): send the same bytes again.
        Unsent => "UNSENT",
        /// Sent (or being sent) and no answer recorded yet. After a crash this means outcome
        /// unknown.
        InFlight => "IN_FLIGHT",
        /// Accepted, `trxState` not final yet.
        Pending => "PENDING",
        /// Outcome unknown: resolve by query (reference §12 rule 2).
        Unknown => "UNKNOWN",
        /// `FAIL` with an AB0x timeout reason, held and re-queried (reference §9.2).
        FailHeld => "FAIL_HELD",
        Success => "SUCCESS",
        Failed => "FAILED",
        Reversed => "REVERSED",
        /// Never processed by Starpay (verified rejection + query 404), or invalid input.
        Rejected => "REJECTED",
        NeedsAttention => "NEEDS_ATTENTION",
    }
}

impl RowState {
    /// Nothing more will be done to this row by `run` (a human or `retry`/`reconcile` may).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RowState::Success
                | RowState::Failed
                | RowState::Reversed
                | RowState::Rejected
                | RowState::NeedsAttention
        )
    }

    /// Whether money may have moved or may still move for this row (blocks a re-pay of the
    /// same reference in a later run).
    pub fn may_have_paid(self) -> bool {
        !matches!(self, RowState::New | RowState::Failed | RowState::Rejected)
    }
}
