//! Reconciliation categories: what one checked line is, compared with what Starpay says
//! (issue 5, issue 8). Stored as their upper-case names.

use std::fmt;

/// The category of one reconciliation line.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum ReconCategory {
    Matched,
    AmountMismatch,
    StateMismatch,
    /// Starpay paid a row our store held as unpaid.
    PaidButRecordedUnpaid,
    /// A second line claims a Starpay order another line already matched.
    DuplicateMatch,
    NotFound,
    Pending,
    /// A FAIL with an AB0x timeout reason, inside its hold (a late credit can still land).
    HeldTimeout,
    StalePending,
    ReversedAfterSuccess,
    DuplicateInInput,
    /// Not checked, or queries kept failing.
    #[default]
    Unknown,
}

impl ReconCategory {
    /// Every category, in report order.
    pub const ALL: [ReconCategory; 12] = [
        ReconCategory::Matched,
        ReconCategory::AmountMismatch,
        ReconCategory::StateMismatch,
        ReconCategory::PaidButRecordedUnpaid,
        ReconCategory::DuplicateMatch,
        ReconCategory::NotFound,
        ReconCategory::Pending,
        ReconCategory::HeldTimeout,
        ReconCategory::StalePending,
        ReconCategory::ReversedAfterSuccess,
        ReconCategory::DuplicateInInput,
        ReconCategory::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconCategory::Matched => "MATCHED",
            ReconCategory::AmountMismatch => "AMOUNT_MISMATCH",
            ReconCategory::StateMismatch => "STATE_MISMATCH",
            ReconCategory::PaidButRecordedUnpaid => "PAID_BUT_RECORDED_UNPAID",
            ReconCategory::DuplicateMatch => "DUPLICATE_MATCH",
            ReconCategory::NotFound => "NOT_FOUND",
            ReconCategory::Pending => "PENDING",
            ReconCategory::HeldTimeout => "HELD_TIMEOUT",
            ReconCategory::StalePending => "STALE_PENDING",
            ReconCategory::ReversedAfterSuccess => "REVERSED_AFTER_SUCCESS",
            ReconCategory::DuplicateInInput => "DUPLICATE_IN_INPUT",
            ReconCategory::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Option<ReconCategory> {
        ReconCategory::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The line can still change: a later run checks it again.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ReconCategory::Pending
                | ReconCategory::HeldTimeout
                | ReconCategory::StalePending
                | ReconCategory::Unknown
        )
    }

    /// A final finding someone must look at (everything final except MATCHED).
    pub fn is_finding(self) -> bool {
        self != ReconCategory::Matched && !self.is_open()
    }
}

impl fmt::Display for ReconCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_category_is_open_or_final() {
        for c in ReconCategory::ALL {
            assert_eq!(ReconCategory::parse(c.as_str()), Some(c));
            assert!(
                c.is_open() ^ (c.is_finding() || c == ReconCategory::Matched),
                "{c}"
            );
        }
        assert_eq!(ReconCategory::parse("UNCHECKED"), None);
    }
}
