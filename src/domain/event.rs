//! `EventKind`: what an entry of the append-only event table records.
//!
//! Stored as the same TEXT values as before this enum existed (`as_str`), so the database and
//! every reader of it are unchanged. Reading events back keeps the raw text (an older database
//! may hold values this build does not name).

use std::fmt;

/// `Default` exists only so that `store::Event` can be built with `..Event::default()`; every
/// caller names its kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum EventKind {
    RunCreated,
    RunFinished,
    RunReopened,
    /// The store refused a new attempt: the reference is blocked (the row is REJECTED).
    ReferenceBlocked,
    /// A new msgId and its request bytes were committed (the row is UNSENT).
    AttemptAllocated,
    /// The live check before a re-payment found an earlier attempt paid or in progress.
    RepayRefused,
    /// A row found IN_FLIGHT when a drive starts: the outcome is unknown.
    RecoveredInFlight,
    /// Still unresolved after the maximum resolve time (NEEDS_ATTENTION).
    GaveUp,
    /// The row is marked in flight just before its request leaves.
    Sending,
    /// A send that did not happen (run stopped, or the request provably never left).
    NotSent,
    /// The answer (or the failure) of a payout request.
    #[default]
    SendAnswer,
    /// The answer (or the failure) of a status query.
    QueryAnswer,
    /// A reconcile job checked a line.
    ReconChecked,
    /// `reconcile` moved a final row (Starpay's state drifted).
    ReconcileDrift,
    /// `reconcile` resolved a NEEDS_ATTENTION row from a verified state.
    ReconcileResolvedAttention,
    /// `reconcile` found paid a row our store held as unpaid.
    ReconcilePaidRecordedUnpaid,
    /// A command that drove the run ended, with this exit code.
    CommandEnded,
    /// `stage`: a payout file was recorded as prepared by someone (approval log, issue 13).
    FileStaged,
    /// `approve`: a payout file's exact bytes were approved.
    FileApproved,
    /// `approve --revoke`: an approval was revoked.
    ApprovalRevoked,
}

impl EventKind {
    /// The stored TEXT value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunCreated => "run_created",
            EventKind::RunFinished => "run_finished",
            EventKind::RunReopened => "run_reopened",
            EventKind::ReferenceBlocked => "reference_blocked",
            EventKind::AttemptAllocated => "attempt_allocated",
            EventKind::RepayRefused => "repay_refused",
            EventKind::RecoveredInFlight => "recovered_in_flight",
            EventKind::GaveUp => "gave_up",
            EventKind::Sending => "sending",
            EventKind::NotSent => "not_sent",
            EventKind::SendAnswer => "send_answer",
            EventKind::QueryAnswer => "query_answer",
            EventKind::ReconChecked => "recon_checked",
            EventKind::ReconcileDrift => "reconcile_drift",
            EventKind::ReconcileResolvedAttention => "reconcile_resolved_attention",
            EventKind::ReconcilePaidRecordedUnpaid => "reconcile_paid_recorded_unpaid",
            EventKind::CommandEnded => "command_ended",
            EventKind::FileStaged => "file_staged",
            EventKind::FileApproved => "file_approved",
            EventKind::ApprovalRevoked => "approval_revoked",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
