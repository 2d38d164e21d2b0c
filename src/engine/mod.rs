//! The engine: the payout job's row driver, its pure policy, the one transition function of a
//! payout row (`transition`), why a run stops (`stop::StopReason`) and the shared rate limiter.
//! Reconciliation jobs build on the same limiter, store and client; there is one engine.

pub mod approval;
pub mod clock;
pub mod limiter;
pub mod msgid;
pub mod payout;
pub mod policy;
pub mod prepare;
pub mod recon;
pub mod runners;
pub mod startup;
pub mod stop;
pub mod throttle;
pub mod transition;
pub mod workers;

use crate::domain::Centavos;
use crate::engine::stop::StopReason;
use crate::exit::Outcome;
use crate::starpay::client::Client;
use crate::starpay::model::{DisburseBalanceRequest, RepaymentBalanceRequest};

/// How a drive of a run ended.
#[derive(Debug, Clone, Default)]
pub struct DriveResult {
    /// Set when a stop-the-run code (401/402/410/411/414) or a signal stopped the run.
    pub stopped: Option<StopReason>,
    /// The first failure that left rows undriven (store or build failure); they stay
    /// unresolved.
    pub error: Option<String>,
}

impl DriveResult {
    /// Ran to its end (every row driven as far as it could go this run).
    pub fn is_complete(&self) -> bool {
        self.stopped.is_none() && self.error.is_none()
    }

    /// The outcome when the drive did not run to its end (it overrides the rows' outcome):
    /// an operator's interruption leaves rows to resume; a stop code or an error means the
    /// job could not run.
    pub fn cut_short(&self) -> Option<Outcome> {
        match (&self.stopped, &self.error) {
            (Some(reason), _) if reason.is_interrupted() => Some(Outcome::Unresolved),
            (Some(_), _) | (None, Some(_)) => Some(Outcome::CouldNotRun),
            (None, None) => None,
        }
    }
}

/// What a run's rows allow after a drive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settled {
    /// The run may be marked FINISHED (after its report is written).
    pub finish: bool,
    /// Reconciliation rows never checked (a reconcile pass cut by its deadline stays open).
    pub unchecked: i64,
}

/// Which account a balance query asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// 5.6: the disbursement (payout) account, net of payouts in progress.
    Disbursement,
    /// 6.6: the repayment (collection) account.
    Repayment,
}

/// A verified balance (5.6 or 6.6), through the throttle like every other request.
pub async fn query_balance(
    throttle: &throttle::Throttle,
    msg_ids: &msgid::MsgIds,
    client: &Client,
    account: Account,
) -> Result<Centavos, payout::EngineError> {
    use payout::EngineError;
    let msg_id = msg_ids.fresh('B', "balance", None).await?;
    let mch_id = client.mch_id().clone();
    let (section, answer) = {
        let _slot = throttle.slot().await?;
        throttle.pace().await;
        match account {
            Account::Disbursement => (
                "5.6",
                client
                    .disbursement_balance(&DisburseBalanceRequest { msg_id, mch_id })
                    .await,
            ),
            Account::Repayment => (
                "6.6",
                client
                    .repayment_balance(&RepaymentBalanceRequest { msg_id, mch_id })
                    .await,
            ),
        }
    };
    let answer = answer
        .map_err(|e| EngineError::Preflight(format!("balance query ({section}) failed: {e}")))?;
    if !answer.response.code.is_success() {
        return Err(EngineError::Preflight(format!(
            "balance query ({section}) answered code {} {}",
            answer.response.code, answer.response.message
        )));
    }
    answer.response.balance.ok_or_else(|| {
        EngineError::Preflight(format!("balance query ({section}) answer has no balance"))
    })
}
