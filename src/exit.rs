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
/// interrupted (Ctrl-C, SIGTERM, SIGHUP): run again to resume, or act on NEEDS_ATTENTION.
pub const UNRESOLVED: i32 = 3;
/// Nothing to do: this input file was already completed by a finished run (pass `--new-run`
/// to run it again on purpose). Not an error for a scheduler that fired twice.
pub const ALREADY_DONE: i32 = 4;
/// Usage error: unknown flag, missing argument (sysexits.h `EX_USAGE`).
pub const USAGE: i32 = 64;
/// Temporary failure, try again later: the job's lock is held by another process, or Starpay
/// stayed unreachable through the start-up retries (sysexits.h `EX_TEMPFAIL`).
pub const TEMPFAIL: i32 = 75;

/// The exit-code table as shown at the end of `--help` (README "Running it every night" and
/// `samples/systemd/` list the same).
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0   OK: every row SUCCESS
  1   could not run (config, input, keys, balance, a stop code from Starpay): fix, then run again
  2   finished with FAILED, REVERSED or REJECTED rows: see the report
  3   unresolved rows (PENDING, UNKNOWN, NOT_SENT, NEEDS_ATTENTION) or interrupted: run again later
  4   nothing to do: this input file was already completed (--new-run to run it again)
  64  usage error (unknown flag, missing argument)
  75  temporary failure (job locked by another process, Starpay unreachable): retry later";

/// What an exit code means, in one line (the result file's `exit_meaning`; the table above).
pub fn meaning(code: i32) -> &'static str {
    match code {
        OK => "OK: every row final and good",
        COULD_NOT_RUN => "could not run to the end (config, input, keys, balance, a stop code from Starpay): fix, then run again",
        FINISHED_WITH_FAILURES => "finished with FAILED, REVERSED or REJECTED rows (or reconciliation findings): see the report",
        UNRESOLVED => "unresolved rows (PENDING, UNKNOWN, NOT_SENT, NEEDS_ATTENTION) or interrupted: run again later; act on NEEDS_ATTENTION",
        ALREADY_DONE => "nothing to do: this input file was already completed",
        USAGE => "usage error",
        TEMPFAIL => "temporary failure (job locked, Starpay unreachable): retry later",
        _ => "unknown exit code",
    }
}

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
