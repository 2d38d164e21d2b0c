//! Reconciliation categories: what one checked line is, compared with what Starpay says
//! (issue 5, issue 8). Stored as their upper-case names.

named_enum! {
    /// The category of one reconciliation line.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub enum ReconCategory {
        Matched => "MATCHED",
        AmountMismatch => "AMOUNT_MISMATCH",
        StateMismatch => "STATE_MISMATCH",
        /// Starpay paid a row our store held as unpaid.
        PaidButRecordedUnpaid => "PAID_BUT_RECORDED_UNPAID",
        /// A second line claims a Starpay order another line already matched.
        DuplicateMatch => "DUPLICATE_MATCH",
        NotFound => "NOT_FOUND",
        Pending => "PENDING",
        /// A FAIL with an AB0x timeout reason, inside its hold (a late credit can still land).
        HeldTimeout => "HELD_TIMEOUT",
        StalePending => "STALE_PENDING",
        ReversedAfterSuccess => "REVERSED_AFTER_SUCCESS",
        DuplicateInInput => "DUPLICATE_IN_INPUT",
        /// Not checked, or queries kept failing.
        #[default]
        Unknown => "UNKNOWN",
    }
}

impl ReconCategory {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_open_or_final() {
        for c in ReconCategory::ALL {
            assert!(
                c.is_open() ^ (c.is_finding() || c == ReconCategory::Matched),
                "{c}"
            );
        }
    }
}
