//! What a run is: a payout run, a reconciliation job's run, or a reconcile pass over a payout
//! run. Stored as its name (TEXT, `runs.kind`).

named_enum! {
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub enum RunKind {
        Payout => "payout",
        RepaymentRecon => "repayment-recon",
        DisbursementRecon => "disbursement-recon",
        /// `reconcile JOB --run ID`: a pass over one payout run.
        Reconcile => "reconcile",
    }
}

impl RunKind {
    /// Its rows are payout rows (else reconciliation lines).
    pub fn is_payout(self) -> bool {
        self == RunKind::Payout
    }
}
