//! Process exit codes: one per meaning (README "Exit codes"), and the `Outcome` a run's rows
//! give, which the report and the commands map to a code in one place.

/// Every row final and good.
pub const OK: i32 = 0;
/// The job could not run (bad configuration, input or keys; a stop code; a store error):
/// nothing was sent, or what was sent is safe to resume.
pub const COULD_NOT_RUN: i32 = 1;
/// The run finished with FAILED, REVERSED or REJECTED rows (or reconciliation mismatches).
pub const FINISHED_WITH_FAILURES: i32 = 2;
/// Rows remain unresolved (PENDING, UNKNOWN, NOT_SENT, NEEDS_ATTENTION) or the run was
/// interrupted: run again to resume, or act on NEEDS_ATTENTION.
pub const UNRESOLVED: i32 = 3;

/// How a run ended, as its rows (or its stop) tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every row final and good.
    AllGood,
    /// Final, with failed, reversed, rejected or mismatched rows.
    WithFailures,
    /// Rows left to resolve, or the run was interrupted.
    Unresolved,
    /// Stopped by a stop code or an error: could not run to the end.
    CouldNotRun,
}

impl Outcome {
    /// The process exit code of this outcome.
    pub fn code(self) -> i32 {
        match self {
            Outcome::AllGood => OK,
            Outcome::WithFailures => FINISHED_WITH_FAILURES,
            Outcome::Unresolved => UNRESOLVED,
            Outcome::CouldNotRun => COULD_NOT_RUN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_code_per_outcome() {
        let all = [
            Outcome::AllGood,
            Outcome::WithFailures,
            Outcome::Unresolved,
            Outcome::CouldNotRun,
        ];
        let mut codes: Vec<i32> = all.iter().map(|o| o.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(Outcome::AllGood.code(), 0);
        assert_eq!(Outcome::Unresolved.code(), 3);
    }
}
