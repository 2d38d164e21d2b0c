//! `EventKind`: what an entry of the append-only event table records.
//!
//! Stored as the same TEXT values as before this enum existed (`as_str`), so the database and
//! every reader of it are unchanged. Reading events back keeps the raw text (an older database
//! may hold values this build does not name).

named_enum! {
    /// `Default` exists only so that `store::Event` can be built with `..Event::default()`; every
    /// caller names its kind.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub enum EventKind {
        RunCreated => "run_created",
        RunFinished => "run_finished",
        RunReopened => "run_reopened",
        /// The store refused a new attempt: the reference is blocked (the row is REJECTED).
        ReferenceBlocked => "reference_blocked",
        /// A new msgId and its request bytes were committed (the row is UNSENT).
        AttemptAllocated => "attempt_allocated",
        /// The live check before a re-payment found an earlier attempt paid or in progress.
        RepayRefused => "repay_refused",
        /// A row found IN_FLIGHT when a drive starts: the outcome is unknown.
        RecoveredInFlight => "recovered_in_flight",
        /// Still unresolved after the maximum resolve time (NEEDS_ATTENTION).
        GaveUp => "gave_up",
        /// The row is marked in flight just before its request leaves.
        Sending => "sending",
        /// A send that did not happen (run stopped, or the request provably never left).
        NotSent => "not_sent",
        /// The answer (or the failure) of a payout request.
        #[default]
        SendAnswer => "send_answer",
        /// The answer (or the failure) of a status query.
        QueryAnswer => "query_answer",
        /// A reconcile job checked a line.
        ReconChecked => "recon_checked",
        /// `reconcile` moved a final row (Starpay's state drifted).
        ReconcileDrift => "reconcile_drift",
        /// `reconcile` resolved a NEEDS_ATTENTION row from a verified state.
        ReconcileResolvedAttention => "reconcile_resolved_attention",
        /// `reconcile` found paid a row our store held as unpaid.
        ReconcilePaidRecordedUnpaid => "reconcile_paid_recorded_unpaid",
        /// A command that drove the run ended, with this exit code.
        CommandEnded => "command_ended",
        /// `stage`: a payout file was recorded as prepared by someone (approval log, issue 13).
        FileStaged => "file_staged",
        /// `approve`: a payout file's exact bytes were approved.
        FileApproved => "file_approved",
        /// `approve --revoke`: an approval was revoked.
        ApprovalRevoked => "approval_revoked",
        /// A verified notification changed a payout row (through `engine::transition`).
        NotificationApplied => "notification_applied",
        /// A verified notification stored without changing a row (duplicate, stale, conflict,
        /// unmatched, repayment).
        NotificationIgnored => "notification_ignored",
        /// A notification refused (bad or missing signature, wrong mchId, bad layout).
        NotificationRefused => "notification_refused",
    }
}
