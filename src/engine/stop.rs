//! `StopReason`: why a run stopped taking work. The throttle keeps the first one; the commands map
//! it to an exit code (`is_interrupted`) and print it (`Display`, the operator's message).
//!
//! Must not: carry decisions. The texts are the ones the run prints and the tests read.

use std::fmt;
use std::sync::Arc;

use crate::starpay::client::ClientError;
use crate::starpay::codes::Code;

/// Where a stop-the-run code was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopSite {
    /// The payout request of this input line.
    Line(i64),
    /// A status query.
    Query,
}

#[derive(Debug, Clone)]
pub enum StopReason {
    /// The operator pressed Ctrl-C: rows are left to resume on the next run.
    Interrupted,
    /// Starpay answered a stop-the-run code (401/402/410/411/414, reference §9.1).
    /// `message` is the verified answer's message; `None` when the answer was not verified.
    StopCode {
        code: Code,
        message: Option<String>,
        site: StopSite,
    },
    /// A payout request could not be signed: nothing was sent.
    SigningFailed(Arc<ClientError>),
    /// Results could not be saved (the reconcile writer). The text of the store error: the
    /// error itself goes back to the caller as the drive's error.
    Store(String),
    /// A reconcile worker failed. The text of the engine error, which itself goes back to the
    /// caller as the drive's error.
    ReconFailed(String),
}

impl StopReason {
    /// Stopped by the operator (exit 3: rows remain), not by a failure (exit 1).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, StopReason::Interrupted)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Interrupted => f.write_str("interrupted by Ctrl-C"),
            StopReason::StopCode {
                code,
                message: Some(message),
                site: StopSite::Line(line),
            } => write!(
                f,
                "Starpay answered {code} {message} (line {line}): stopping the run; fix the configuration or keys and run again"
            ),
            StopReason::StopCode {
                code,
                message: None,
                site: StopSite::Line(line),
            } => write!(
                f,
                "Starpay answered {code} (unverified) on line {line}: stopping the run"
            ),
            StopReason::StopCode {
                code,
                message: Some(message),
                site: StopSite::Query,
            } => write!(
                f,
                "Starpay answered {code} {message} to a query: stopping the run"
            ),
            StopReason::StopCode {
                code,
                message: None,
                site: StopSite::Query,
            } => write!(
                f,
                "Starpay answered {code} (unverified) to a query: stopping the run"
            ),
            StopReason::SigningFailed(e) => write!(f, "signing failed: {e}"),
            StopReason::Store(e) => write!(f, "cannot save results: {e}"),
            StopReason::ReconFailed(e) => write!(f, "reconciliation failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_printed_before() {
        let c = Code::new;
        let table = [
            (StopReason::Interrupted, "interrupted by Ctrl-C"),
            (
                StopReason::StopCode {
                    code: c("402"),
                    message: Some("Sign error".into()),
                    site: StopSite::Line(7),
                },
                "Starpay answered 402 Sign error (line 7): stopping the run; fix the configuration or keys and run again",
            ),
            (
                StopReason::StopCode {
                    code: c("401"),
                    message: None,
                    site: StopSite::Line(3),
                },
                "Starpay answered 401 (unverified) on line 3: stopping the run",
            ),
            (
                StopReason::StopCode {
                    code: c("410"),
                    message: Some("IP".into()),
                    site: StopSite::Query,
                },
                "Starpay answered 410 IP to a query: stopping the run",
            ),
            (
                StopReason::StopCode {
                    code: c("414"),
                    message: None,
                    site: StopSite::Query,
                },
                "Starpay answered 414 (unverified) to a query: stopping the run",
            ),
            (
                StopReason::ReconFailed("x".into()),
                "reconciliation failed: x",
            ),
        ];
        for (reason, text) in table {
            assert_eq!(reason.to_string(), text);
            assert_eq!(
                reason.is_interrupted(),
                text.starts_with("interrupted"),
                "{text}"
            );
        }
    }
}
