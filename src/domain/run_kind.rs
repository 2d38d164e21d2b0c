//! What a run is: a payout run, a reconciliation job's run, or a reconcile pass over a payout
//! run. Stored as its name (TEXT, `runs.kind`).

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RunKind {
    Payout,
    RepaymentRecon,
    DisbursementRecon,
    /// `reconcile JOB --run ID`: a pass over one payout run.
    Reconcile,
}

impl RunKind {
    pub const ALL: [RunKind; 4] = [
        RunKind::Payout,
        RunKind::RepaymentRecon,
        RunKind::DisbursementRecon,
        RunKind::Reconcile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Payout => "payout",
            RunKind::RepaymentRecon => "repayment-recon",
            RunKind::DisbursementRecon => "disbursement-recon",
            RunKind::Reconcile => "reconcile",
        }
    }

    pub fn parse(s: &str) -> Option<RunKind> {
        RunKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Its rows are payout rows (else reconciliation lines).
    pub fn is_payout(self) -> bool {
        self == RunKind::Payout
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in RunKind::ALL {
            assert_eq!(RunKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RunKind::parse("PAYOUT"), None);
    }
}
