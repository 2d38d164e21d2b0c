//! The engine: the payout job's row driver, its pure policy, the one transition function of a
//! payout row (`transition`), why a run stops (`stop::StopReason`) and the shared rate limiter.
//! Reconciliation jobs build on the same limiter, store and client; there is one engine.

pub mod limiter;
pub mod payout;
pub mod policy;
pub mod pool;
pub mod recon;
pub mod startup;
pub mod stop;
pub mod transition;

use crate::domain::Centavos;
use crate::starpay::client::Client;
use crate::starpay::model::{DisburseBalanceRequest, RepaymentBalanceRequest};

/// Which account a balance query asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// 5.6: the disbursement (payout) account, net of payouts in progress.
    Disbursement,
    /// 6.6: the repayment (collection) account.
    Repayment,
}

/// A verified balance (5.6 or 6.6), through the pool like every other request.
pub async fn query_balance(
    pool: &pool::Pool,
    client: &Client,
    account: Account,
) -> Result<Centavos, payout::EngineError> {
    use payout::EngineError;
    let msg_id = pool.fresh_msg_id('B', "balance", None).await?;
    let mch_id = client.mch_id().clone();
    let (section, answer) = {
        let _slot = pool.slot().await?;
        pool.pace().await;
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
