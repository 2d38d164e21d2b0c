//! The payout engine: drives every open row of a run to a final state, or leaves it explicitly
//! unresolved for the next run (reference §12). One task per row; a semaphore bounds requests in
//! flight; one adaptive limiter paces sends and queries.
//!
//! Invariants (the non-negotiables):
//! - a payout's msgId and exact bytes are committed before the first send (`store::allocate_attempt`);
//! - an unknown outcome is resolved by query; the only resend is of the *same* msgId and bytes
//!   (406, a connect failure, a stop code, or the not-found rule);
//! - a row's state changes only from a verified `trxState` or a verified 404 after a verified
//!   rejection, through `policy`, and is saved by compare-and-set with the raw answer as evidence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::domain::{Centavos, MchId, MsgId, RowState, TrxState};
use crate::engine::policy::{self, NotFoundAction, QueryVerdict, ResolveSettings, SendVerdict};
use crate::engine::pool::Pool;
use crate::logging::mask_account;
use crate::starpay::client::{Answer, Client, ClientError, Outcome};
use crate::starpay::model::{
    Currency, DisburseQueryRequest, DisburseResponse, InstapayDisburseRequest, Operation,
    QueryResponse, WalletDisburseRequest,
};
use crate::starpay::sign;
use crate::store::{self, Event, RowRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the request for line {line}: {detail}")]
    Build { line: i64, detail: String },
    #[error("{0}")]
    Preflight(String),
    #[error("a row task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Pool(#[from] crate::engine::pool::PoolError),
}

/// Settings the engine needs, built by `cmd::run` from the job file.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub concurrency: usize,
    pub requests_per_second: u32,
    pub burst: u32,
    pub resolve: ResolveSettings,
    pub notify_url: Option<String>,
}

/// How a drive of a run ended.
#[derive(Debug, Clone, Default)]
pub struct DriveResult {
    /// Set when a stop-the-run code (401/402/410/411/414) or Ctrl-C stopped the run.
    pub stopped: Option<String>,
    /// The first row that could not be driven (store or build failure); it stays unresolved.
    pub error: Option<String>,
}

/// `now + d`, saturating far in the future instead of overflowing.
fn deadline_from(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

pub struct PayoutEngine {
    client: Client,
    store: Store,
    settings: EngineSettings,
    pool: Pool,
    done: AtomicU64,
}

const OP_INSTAPAY: &str = "5.2";
const OP_WALLET: &str = "5.3";

impl PayoutEngine {
    pub async fn new(
        client: Client,
        store: Store,
        settings: EngineSettings,
    ) -> Result<Arc<PayoutEngine>, EngineError> {
        let pool = Pool::new(
            store.clone(),
            settings.concurrency,
            settings.requests_per_second,
            settings.burst,
        )
        .await?;
        Ok(Arc::new(PayoutEngine {
            client,
            store,
            settings,
            pool,
            done: AtomicU64::new(0),
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops taking work (Ctrl-C or a stop code). In-flight requests finish; their rows stay
    /// IN_FLIGHT/UNKNOWN and are resolved by query on the next run.
    pub fn stop(&self, reason: String) {
        self.pool.stop(reason);
    }

    fn stopped(&self) -> bool {
        self.pool.stopped()
    }

    /// The shared request pool (limiter, in-flight bound, stop signal, msgIds).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn rows_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Pre-flight balance (5.6): the available disbursement balance, verified.
    pub async fn balance(&self) -> Result<Centavos, EngineError> {
        crate::engine::query_balance(
            &self.pool,
            &self.client,
            crate::engine::Account::Disbursement,
        )
        .await
    }

    /// Pre-flight bank list (5.1): the `bankName`s that `receivingBank` must match.
    pub async fn bank_names(&self) -> Result<std::collections::HashSet<String>, EngineError> {
        let msg_id = self.pool.fresh_msg_id('L', "bank_list", None).await?;
        let req = crate::starpay::model::BankListRequest {
            msg_id,
            mch_id: self.client.mch_id().clone(),
        };
        self.pool.pace().await;
        let answer = self
            .client
            .bank_list(&req)
            .await
            .map_err(|e| EngineError::Preflight(format!("bank list (5.1) failed: {e}")))?;
        if !answer.response.code.is_success() {
            return Err(EngineError::Preflight(format!(
                "bank list (5.1) answered code {} {}",
                answer.response.code, answer.response.message
            )));
        }
        Ok(answer
            .response
            .banks
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.bank_name)
            .collect())
    }

    /// Drives every open row of `run_id` until it is terminal, the deadline passes, or the run
    /// is stopped.
    pub async fn drive(self: &Arc<Self>, run_id: i64) -> Result<DriveResult, EngineError> {
        let rows = self
            .store
            .call(move |c| store::rows_of_run(c, run_id, true))
            .await?;
        let deadline = deadline_from(self.settings.resolve.deadline);
        let mut tasks = JoinSet::new();
        for row in rows {
            let engine = Arc::clone(self);
            tasks.spawn(async move {
                let line = row.line;
                let result = engine.drive_row(row, deadline).await;
                engine.done.fetch_add(1, Ordering::Relaxed);
                (line, result)
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((line, Err(e))) => {
                    tracing::error!(line, error = %e, "row could not be driven; it stays unresolved");
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(EngineError::Task(e.to_string()));
                }
            }
        }
        let stopped = self.pool.stop_reason();
        Ok(DriveResult {
            stopped,
            error: first_error.map(|e| e.to_string()),
        })
    }

    async fn save(
        &self,
        row: &RowRecord,
        expected: RowState,
        sent: bool,
        mut event: Event,
    ) -> Result<(), EngineError> {
        event.run_id = Some(row.run_id);
        event.row_id = Some(row.id);
        event.old_state = Some(expected);
        event.new_state = Some(row.state);
        let row = row.clone();
        self.store
            .call(move |c| store::save_row(c, &row, expected, sent, &event))
            .await?;
        Ok(())
    }

    async fn drive_row(&self, mut row: RowRecord, deadline: Instant) -> Result<(), EngineError> {
        if row.state == RowState::InFlight {
            // Interrupted mid-request (crash or kill): the outcome is unknown (rule 2).
            let old = row.state;
            row.state = RowState::Unknown;
            row.message = Some("interrupted while in flight; resolving by query".into());
            self.save(
                &row,
                old,
                false,
                Event {
                    kind: "recovered_in_flight",
                    ..Event::default()
                },
            )
            .await?;
        }
        let mut backoff_try: u32 = 0;
        // Rule: every unresolved row is queried at least once in each run before it can be
        // given up as NEEDS_ATTENTION; a verified final answer wins whatever the row's age.
        let mut queried_this_run = false;
        loop {
            if self.stopped() || row.state.is_terminal() {
                return Ok(());
            }
            match row.state {
                RowState::New => match self.allocate(&mut row).await? {
                    Allocated::Yes | Allocated::Refused => backoff_try = 0,
                    Allocated::TryLater => {
                        if Instant::now() >= deadline {
                            return Ok(());
                        }
                        self.sleep_backoff(backoff_try, deadline).await;
                        backoff_try += 1;
                    }
                },
                RowState::Unsent => {
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                    match self.send(&mut row, deadline).await? {
                        Step::Continue => backoff_try = 0,
                        Step::Backoff => {
                            self.sleep_backoff(backoff_try, deadline).await;
                            backoff_try += 1;
                        }
                    }
                }
                RowState::InFlight => {
                    // Only reachable if a save failed mid-step; treat as unknown next time.
                    return Ok(());
                }
                RowState::Pending | RowState::Unknown | RowState::FailHeld => {
                    let now = store::now_ms();
                    let first_sent = row
                        .attempt
                        .as_ref()
                        .and_then(|a| a.first_sent_at)
                        .or(row.first_sent_at);
                    let too_old = first_sent.is_some_and(|first| {
                        now - first >= self.settings.resolve.max_resolve.as_millis() as i64
                    });
                    if too_old && queried_this_run {
                        let old = row.state;
                        row.state = RowState::NeedsAttention;
                        row.message = Some(format!(
                            "still unresolved {} h after it was sent (the maximum resolve time), last Starpay state {}: check with Starpay; `reconcile` re-checks it",
                            self.settings.resolve.max_resolve.as_secs() / 3600,
                            row.trx_state.as_deref().unwrap_or("unknown")
                        ));
                        self.save(
                            &row,
                            old,
                            false,
                            Event {
                                kind: "gave_up",
                                detail: row.message.clone(),
                                ..Event::default()
                            },
                        )
                        .await?;
                        return Ok(());
                    }
                    // A row past the limit is asked at once (one last verified chance).
                    let due = if too_old {
                        now
                    } else {
                        self.next_query_at(&row)
                    };
                    let wait = Duration::from_millis(due.saturating_sub(now).max(0) as u64);
                    if Instant::now()
                        .checked_add(wait)
                        .is_none_or(|t| t > deadline)
                    {
                        return Ok(());
                    }
                    if !wait.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = self.pool.until_stopped() => return Ok(()),
                        }
                    }
                    let asked = row.query_count;
                    let step = self.query(&mut row, deadline).await?;
                    // Counts only a query that actually went out (not one cut by a stop).
                    queried_this_run |= row.query_count != asked;
                    match step {
                        Step::Continue => backoff_try = 0,
                        Step::Backoff => {
                            self.sleep_backoff(backoff_try, deadline).await;
                            backoff_try += 1;
                        }
                    }
                }
                RowState::Success
                | RowState::Failed
                | RowState::Reversed
                | RowState::Rejected
                | RowState::NeedsAttention => return Ok(()),
            }
        }
    }

    /// When the next query of `row` is due (ms since epoch): the poll schedule counted from the
    /// last send, then every poll interval after the last check.
    fn next_query_at(&self, row: &RowRecord) -> i64 {
        let s = &self.settings.resolve;
        let n = row.query_count.max(0) as usize;
        match (row.last_sent_at, row.last_checked_at) {
            (Some(sent), _) if n < s.poll_schedule.len() => {
                sent + s.poll_delay(n).as_millis() as i64
            }
            (_, Some(checked)) => checked + s.poll_interval.as_millis() as i64,
            (Some(sent), None) => sent + s.poll_delay(n).as_millis() as i64,
            (None, None) => 0,
        }
    }

    async fn sleep_backoff(&self, n: u32, deadline: Instant) {
        self.pool
            .sleep_backoff(self.settings.resolve.backoff(n), deadline)
            .await;
    }

    /// Builds the payout request, derives its msgId from (database, run, line, attempt) and
    /// commits msgId + bytes before anything is sent. A re-payment (a `--repay` row, or a
    /// `retry` of a FAILED row) first queries every earlier msgId of its reference, live.
    pub async fn allocate(&self, row: &mut RowRecord) -> Result<Allocated, EngineError> {
        let repay_of = if row.repay || row.attempt.is_some() {
            match self.confirm_earlier_attempts(row).await? {
                EarlierCheck::Confirmed(text) => Some(text),
                EarlierCheck::Unconfirmed(why) => {
                    tracing::warn!(line = row.line, "re-payment not confirmed yet: {why}");
                    row.message = Some(format!("not sent yet: {why}"));
                    return Ok(Allocated::TryLater);
                }
                EarlierCheck::Contradicted(why) => {
                    let old = row.state;
                    row.state = RowState::NeedsAttention;
                    row.message = Some(format!("not re-paid: {why}"));
                    self.save(
                        row,
                        old,
                        false,
                        Event {
                            kind: "repay_refused",
                            detail: row.message.clone(),
                            ..Event::default()
                        },
                    )
                    .await?;
                    return Ok(Allocated::Refused);
                }
            }
        } else {
            None
        };
        let seq = row.attempt.as_ref().map_or(1, |a| a.seq + 1);
        let msg_id = format!("P{}R{}L{}A{}", self.pool.db_id(), row.run_id, row.line, seq);
        let msg_id = MsgId::new(msg_id).map_err(|e| EngineError::Build {
            line: row.line,
            detail: e.to_string(),
        })?;
        let (op, bytes) = build_payout_bytes(
            row,
            msg_id.clone(),
            self.client.mch_id(),
            self.settings.notify_url.as_deref(),
        )?;
        let r = row.clone();
        let mid = msg_id.to_string();
        let repay_text = repay_of.clone();
        let attempt = match self
            .store
            .call(move |c| store::allocate_attempt(c, &r, &mid, op, &bytes, repay_text.as_deref()))
            .await?
        {
            store::Allocation::Allocated(a) => a,
            store::Allocation::Blocked { message } => {
                tracing::warn!(line = row.line, "{message}");
                row.state = RowState::Rejected;
                row.message = Some(message);
                return Ok(Allocated::Refused);
            }
        };
        tracing::debug!(line = row.line, msg_id = %attempt.msg_id, "attempt allocated");
        row.attempt = Some(attempt);
        row.state = RowState::Unsent;
        row.verified_reject = false;
        row.not_found_count = 0;
        row.hold_since = None;
        for f in [
            &mut row.trx_state,
            &mut row.code,
            &mut row.message,
            &mut row.error_code,
            &mut row.error_message,
            &mut row.order_no,
            &mut row.ref_no,
        ] {
            *f = None;
        }
        if repay_of.is_some() {
            row.repay_of = repay_of;
        }
        row.query_count = 0;
        // first_sent_at / last_sent_at describe the row's sends over all attempts: kept.
        row.last_checked_at = None;
        row.resent_after_not_found = false;
        Ok(Allocated::Yes)
    }

    /// The live check before a re-payment: one verified query of every earlier msgId of the
    /// row's reference, just before the new msgId is allocated. Each must be verified FAIL,
    /// CLOSE, CANCEL or REVERSED, or a verified 404 for an attempt we recorded REJECTED or never
    /// sent. SUCCESS / PROCESSING / INIT anywhere contradicts the store; no verified answer
    /// means "try again later".
    async fn confirm_earlier_attempts(&self, row: &RowRecord) -> Result<EarlierCheck, EngineError> {
        let reference = row.reference.clone();
        let earlier = self
            .store
            .call(move |c| store::attempts_of_reference(c, &reference))
            .await?;
        let mut seen = Vec::new();
        for e in &earlier {
            let original = MsgId::new(e.msg_id.clone()).map_err(|err| EngineError::Build {
                line: row.line,
                detail: err.to_string(),
            })?;
            let msg_id = self
                .pool
                .fresh_msg_id('C', "repay_check", Some(row.id))
                .await?;
            let req = DisburseQueryRequest {
                msg_id: msg_id.clone(),
                mch_id: self.client.mch_id().clone(),
                original_msg_id: original,
            };
            let answer = {
                let _permit = self.pool.slot().await?;
                self.pool.pace().await;
                self.client.query_disbursement(&req).await
            };
            let where_ = format!(
                "earlier msgId {} (run {}, line {}, recorded {})",
                e.msg_id, e.run_id, e.line, e.row_state
            );
            let answer = match answer {
                Ok(a) => a,
                Err(err) => {
                    return Ok(EarlierCheck::Unconfirmed(format!(
                        "could not check {where_}: {err}"
                    )))
                }
            };
            let r = &answer.response;
            let echoes = r.msg_id.as_deref() == Some(msg_id.as_str())
                && r.original_msg_id
                    .as_deref()
                    .is_none_or(|m| m == e.msg_id.as_str())
                && (r.trx_state.is_none() || r.original_msg_id.is_some());
            if !echoes {
                return Ok(EarlierCheck::Unconfirmed(format!(
                    "the answer about {where_} did not echo the query"
                )));
            }
            let recorded_not_at_starpay =
                !e.current || e.row_state == RowState::Rejected || e.send_count == 0;
            match (&r.trx_state, r.code.as_str()) {
                (Some(t), _) if r.code.is_success() => match t {
                    // A FAIL with a timeout reason inside its hold may still be credited (§9.2).
                    TrxState::Fail
                        if r.error_code.as_deref().is_some_and(|c| {
                            crate::starpay::codes::reason_class(c)
                                == crate::starpay::codes::ReasonClass::Timeout
                        }) && !hold_over(r.trx_date.as_deref(), self.settings.resolve.ab_hold) =>
                    {
                        return Ok(EarlierCheck::Unconfirmed(format!(
                            "Starpay has {where_} as FAIL with timeout reason {}, held until the AB0x hold ends (a late credit can still land)",
                            r.error_code.as_deref().unwrap_or("?")
                        )))
                    }
                    TrxState::Fail | TrxState::Close | TrxState::Cancel | TrxState::Reversed => {
                        seen.push(format!("{} {t}", e.msg_id));
                    }
                    TrxState::Success | TrxState::Processing | TrxState::Init => {
                        return Ok(EarlierCheck::Contradicted(format!(
                            "Starpay has {where_} as {t}: this reference may have been paid; reconcile run {} and settle it with Starpay",
                            e.run_id
                        )));
                    }
                    TrxState::Unknown(v) => {
                        return Ok(EarlierCheck::Unconfirmed(format!(
                            "Starpay answered an unrecognised state {v:?} for {where_}"
                        )))
                    }
                },
                (None, "404") if recorded_not_at_starpay => {
                    seen.push(format!("{} not found", e.msg_id));
                }
                (None, "404") => {
                    return Ok(EarlierCheck::Unconfirmed(format!(
                        "Starpay does not find {where_} (query lag?)"
                    )))
                }
                _ => {
                    return Ok(EarlierCheck::Unconfirmed(format!(
                        "Starpay answered {} {} about {where_}",
                        r.code, r.message
                    )))
                }
            }
        }
        let first = earlier
            .iter()
            .find(|e| e.run_id != row.run_id || e.line != row.line);
        Ok(EarlierCheck::Confirmed(match first {
            Some(e) => format!(
                "re-payment of run {} line {}; checked live: {}",
                e.run_id,
                e.line,
                seen.join(", ")
            ),
            None => format!(
                "re-sent after a verified failure; checked live: {}",
                seen.join(", ")
            ),
        }))
    }

    /// Sends the row's current attempt (same msgId, same bytes) once.
    async fn send(&self, row: &mut RowRecord, deadline: Instant) -> Result<Step, EngineError> {
        let Some(attempt) = row.attempt.clone() else {
            return Err(EngineError::Build {
                line: row.line,
                detail: "UNSENT row has no attempt".into(),
            });
        };
        let _permit = tokio::select! {
            p = self.pool.slot() => p?,
            () = self.pool.until_stopped() => return Ok(Step::Continue),
        };
        if self.stopped() || Instant::now() >= deadline {
            return Ok(Step::Continue);
        }
        // Sign while holding the slot, so signing load follows the in-flight bound (pure, no
        // state change: a signing failure means nothing was sent).
        let signed = match self.client.sign_bytes(attempt.request_bytes.clone()).await {
            Ok(s) => s,
            Err(e) => {
                row.message = Some(format!("not sent: {e}"));
                self.pool.stop(format!("signing failed: {e}"));
                return Ok(Step::Continue);
            }
        };
        // Mark in flight before the request can leave: a crash from here on means "outcome
        // unknown", resolved by query (never a new msgId).
        let old = row.state;
        let old_times = send_times(row);
        let now = store::now_ms();
        let resend_after_not_found = row.resent_after_not_found;
        row.state = RowState::InFlight;
        row.first_sent_at.get_or_insert(now);
        row.last_sent_at = Some(now);
        if let Some(a) = row.attempt.as_mut() {
            a.first_sent_at.get_or_insert(now);
        }
        row.query_count = 0;
        self.save(
            row,
            old,
            false,
            Event {
                kind: "sending",
                msg_id: Some(attempt.msg_id.clone()),
                ..Event::default()
            },
        )
        .await?;
        // The rate permit is the last thing before the request leaves (a database write in
        // between would bunch requests up), so the pacing granted is the pacing Starpay sees.
        tokio::select! {
            () = self.pool.pace() => {}
            () = self.pool.until_stopped() => {}
        }
        if self.stopped() {
            row.state = RowState::Unsent;
            // Nothing left: the send times of a send that never happened are taken back.
            restore_send_times(row, old_times);
            self.save(
                row,
                RowState::InFlight,
                false,
                Event {
                    kind: "not_sent",
                    detail: Some("run stopped before sending".into()),
                    ..Event::default()
                },
            )
            .await?;
            return Ok(Step::Continue);
        }
        tracing::debug!(line = row.line, msg_id = %attempt.msg_id, account = %mask_account(&row.account_no), amount = %row.amount, "sending payout");

        let result = if attempt.operation == OP_WALLET {
            self.client.send::<WalletDisburseRequest>(&signed).await
        } else {
            self.client.send::<InstapayDisburseRequest>(&signed).await
        };
        let mut event = Event {
            kind: "send_answer",
            msg_id: Some(attempt.msg_id.clone()),
            ..Event::default()
        };
        // A request that provably never left (connection refused, …) is not a send.
        let left = !matches!(&result, Err(e) if e.outcome() == Outcome::NotSent);
        let step = match result {
            Ok(answer) => {
                event.raw = Some(answer.raw_body.to_vec());
                self.on_send_answer(row, &answer, resend_after_not_found)
            }
            Err(e) => {
                event.raw = e.raw_body().map(|b| b.to_vec());
                event.detail = Some(e.to_string());
                if !left {
                    event.kind = "not_sent";
                }
                self.on_send_error(row, &e, resend_after_not_found)
            }
        };
        if row.state == RowState::InFlight {
            // Defensive: every branch above sets a state; never leave a row in flight.
            row.state = RowState::Unknown;
        }
        if !left {
            restore_send_times(row, old_times);
        }
        // `left`: counts this send in the attempt's send_count.
        self.save(row, RowState::InFlight, left, event).await?;
        Ok(step)
    }

    fn on_send_answer(
        &self,
        row: &mut RowRecord,
        answer: &Answer<DisburseResponse>,
        resend_after_not_found: bool,
    ) -> Step {
        let r = &answer.response;
        row.code = Some(r.code.to_string());
        row.message = Some(r.message.clone());
        // The platform's signature does not cover our request: an answer that echoes another
        // msgId, merchant or amount is not about this payout. Outcome unknown → query.
        let msg_id = row.attempt.as_ref().map(|a| a.msg_id.as_str());
        // An answer that carries a trxState must name this payout (msgId, mchId, amount).
        let missing_echo = r.trx_state.is_some()
            && (r.msg_id.is_none() || r.mch_id.is_none() || r.trx_amount.is_none());
        let mismatch = missing_echo
            || r.msg_id.as_deref().is_some_and(|m| Some(m) != msg_id)
            || r.mch_id
                .as_deref()
                .is_some_and(|m| m != self.client.mch_id().as_str())
            || r.trx_amount.is_some_and(|a| a != row.amount);
        if mismatch {
            tracing::warn!(line = row.line, "answer does not echo this payout (msgId, mchId or amount differs); resolving by query");
            row.state = RowState::Unknown;
            row.message = Some("answer did not match the request; resolving by query".into());
            return Step::Continue;
        }
        match policy::on_send_code(&r.code, true, r.trx_state.is_some()) {
            SendVerdict::Apply => {
                self.pool.success();
                row.not_found_count = 0;
                self.apply_trx(
                    row,
                    r.trx_state.as_ref(),
                    r.order_no.clone(),
                    None,
                    r.error_code.clone(),
                    r.error_message.clone(),
                );
                Step::Continue
            }
            SendVerdict::Query { verified_reject } => {
                self.pool.success();
                if r.code.as_str() == "403" && resend_after_not_found {
                    // Rule 3: the resend is refused as repeated while queries say not found.
                    row.state = RowState::NeedsAttention;
                    row.message = Some("resend after not-found answered 403 Repeated msgId while queries answer 404; stopped touching the row".into());
                } else if verified_reject && resend_after_not_found {
                    // The same request was resent under the not-found rule and now rejected:
                    // the first send may still have landed. Not REJECTED (that would unblock
                    // the reference): a human decides.
                    row.state = RowState::NeedsAttention;
                    row.message = Some(format!(
                        "resend after not-found answered {} {}; the first send may still land: check with Starpay before paying again",
                        r.code, r.message
                    ));
                } else {
                    row.state = RowState::Unknown;
                    row.verified_reject = verified_reject;
                    row.not_found_count = 0;
                }
                Step::Continue
            }
            SendVerdict::BackOffResend => {
                self.pool.cut();
                row.state = RowState::Unsent;
                Step::Backoff
            }
            SendVerdict::StopRun => {
                row.state = RowState::Unsent;
                self.pool.stop(format!("Starpay answered {} {} (line {}): stopping the run; fix the configuration or keys and run again", r.code, r.message, row.line));
                Step::Continue
            }
        }
    }

    fn on_send_error(
        &self,
        row: &mut RowRecord,
        e: &ClientError,
        resend_after_not_found: bool,
    ) -> Step {
        if let ClientError::Unverified {
            code: Some(code), ..
        } = e
        {
            row.code = Some(code.to_string());
            match policy::on_send_code(code, false, false) {
                // An unverified answer is an unknown outcome for the row (§3.4): the code may
                // only drive the safe control action; the row is resolved by query.
                SendVerdict::StopRun => {
                    row.state = RowState::Unknown;
                    row.message = Some(format!("unverified answer with code {code}: {e}"));
                    self.pool.stop(format!(
                        "Starpay answered {code} (unverified) on line {}: stopping the run",
                        row.line
                    ));
                    return Step::Continue;
                }
                SendVerdict::BackOffResend => {
                    self.pool.cut();
                    row.state = RowState::Unknown;
                    row.message = Some(format!("unverified answer with code {code}: {e}"));
                    return Step::Backoff;
                }
                _ => {}
            }
        }
        match e.outcome() {
            Outcome::NotSent => {
                row.state = RowState::Unsent;
                row.message = Some(format!("not sent: {e}"));
                Step::Backoff
            }
            Outcome::Unknown => {
                let _ = resend_after_not_found;
                row.state = RowState::Unknown;
                row.message = Some(format!("outcome unknown: {e}"));
                Step::Continue
            }
        }
    }

    /// Applies a verified `trxState` to the row (§8 precedence: never from final to non-final).
    fn apply_trx(
        &self,
        row: &mut RowRecord,
        trx: Option<&TrxState>,
        order_no: Option<String>,
        ref_no: Option<String>,
        error_code: Option<String>,
        error_message: Option<String>,
    ) {
        let Some(trx) = trx else {
            row.state = RowState::Unknown;
            return;
        };
        let now = store::now_ms();
        // A verified trxState means the payout exists: a later 404 is lag, not a rejection.
        row.verified_reject = false;
        // AB0x hold (§9.2): while held, a PROCESSING (or other non-final) answer does not move
        // the row back, and a FAIL without a reason keeps the held reason.
        let held = row.state == RowState::FailHeld;
        if held && !trx.is_final() {
            row.last_checked_at = Some(now);
            return;
        }
        let error_code = match (held, trx, error_code) {
            (true, TrxState::Fail, None) => row.error_code.clone(),
            (_, _, e) => e,
        };
        let error_message = error_message.or_else(|| {
            if held && matches!(trx, TrxState::Fail) {
                row.error_message.clone()
            } else {
                None
            }
        });
        let timeout_fail = matches!(trx, TrxState::Fail)
            && error_code.as_deref().is_some_and(|c| {
                crate::starpay::codes::reason_class(c)
                    == crate::starpay::codes::ReasonClass::Timeout
            });
        if !timeout_fail {
            row.hold_since = None;
        } else if row.hold_since.is_none() {
            row.hold_since = Some(now);
        }
        let next = policy::state_from_trx(
            trx,
            error_code.as_deref(),
            row.hold_since,
            now,
            self.settings.resolve.ab_hold,
        );
        row.state = next;
        row.trx_state = Some(trx.as_str().to_string());
        if let TrxState::Unknown(s) = trx {
            row.message = Some(format!("UNRECOGNISED_STATE {s}: still polling"));
        }
        if next == RowState::FailHeld {
            row.message = Some(format!(
                "PENDING_TIMEOUT: FAIL with timeout reason {} is held and re-queried before it counts (a late credit can still land)",
                error_code.as_deref().unwrap_or("?")
            ));
        }
        if order_no.is_some() {
            row.order_no = order_no;
        }
        if ref_no.is_some() {
            row.ref_no = ref_no;
        }
        row.error_code = error_code;
        row.error_message = error_message;
    }

    /// One 5.4 query with a fresh msgId.
    async fn query(&self, row: &mut RowRecord, deadline: Instant) -> Result<Step, EngineError> {
        let Some(attempt) = row.attempt.clone() else {
            return Err(EngineError::Build {
                line: row.line,
                detail: "row to query has no attempt".into(),
            });
        };
        let original = MsgId::new(attempt.msg_id.clone()).map_err(|e| EngineError::Build {
            line: row.line,
            detail: e.to_string(),
        })?;
        let msg_id = self.pool.fresh_msg_id('Q', "query", Some(row.id)).await?;
        let req = DisburseQueryRequest {
            msg_id: msg_id.clone(),
            mch_id: self.client.mch_id().clone(),
            original_msg_id: original,
        };
        let result = {
            let _permit = tokio::select! {
                p = self.pool.slot() => p?,
                () = self.pool.until_stopped() => return Ok(Step::Continue),
            };
            tokio::select! {
                () = self.pool.pace() => {}
                () = self.pool.until_stopped() => return Ok(Step::Continue),
            }
            if Instant::now() >= deadline {
                return Ok(Step::Continue);
            }
            self.client.query_disbursement(&req).await
        };
        let old = row.state;
        row.last_checked_at = Some(store::now_ms());
        row.query_count += 1;
        let mut event = Event {
            kind: "query_answer",
            msg_id: Some(msg_id.to_string()),
            ..Event::default()
        };
        let step = match result {
            Ok(answer) => {
                event.raw = Some(answer.raw_body.to_vec());
                self.on_query_answer(row, &answer, msg_id.as_str()).await?
            }
            Err(e) => {
                // No verified answer is no evidence either way: it neither counts towards nor
                // breaks the streak of consecutive 404s (§12 rule 3).
                event.raw = e.raw_body().map(|b| b.to_vec());
                event.detail = Some(e.to_string());
                match &e {
                    ClientError::Unverified {
                        code: Some(code), ..
                    } => {
                        match policy::on_query_code(code, false, false) {
                            QueryVerdict::StopRun => {
                                self.pool.stop(format!("Starpay answered {code} (unverified) to a query: stopping the run"));
                                Step::Continue
                            }
                            QueryVerdict::BackOff => {
                                self.pool.cut();
                                Step::Backoff
                            }
                            _ => Step::Continue,
                        }
                    }
                    _ => Step::Continue,
                }
            }
        };
        self.save(row, old, row.state == RowState::InFlight, event)
            .await?;
        Ok(step)
    }

    async fn on_query_answer(
        &self,
        row: &mut RowRecord,
        answer: &Answer<QueryResponse>,
        query_msg_id: &str,
    ) -> Result<Step, EngineError> {
        let r = &answer.response;
        // The answer must be about this query and this payout (the signature does not cover
        // our request): otherwise ignore it and ask again.
        let original = row.attempt.as_ref().map(|a| a.msg_id.as_str());
        let mismatch = r.msg_id.as_deref() != Some(query_msg_id)
            || (r.trx_state.is_some() && r.original_msg_id.is_none())
            || r.original_msg_id
                .as_deref()
                .is_some_and(|m| Some(m) != original)
            || r.mch_id
                .as_deref()
                .is_some_and(|m| m != self.client.mch_id().as_str());
        if mismatch {
            // Not about this query or payout: no evidence either way (the not-found streak
            // is neither counted nor broken); ask again.
            tracing::warn!(line = row.line, "query answer does not match the query (msgId, originalMsgId or mchId differs); ignored");
            return Ok(Step::Continue);
        }
        if let Some(theirs) = r.trx_amount.filter(|a| *a != row.amount) {
            // A verified answer about this very payout with another amount: a human must
            // look now (waiting out the resolve time would only hide it).
            tracing::error!(line = row.line, ours = %row.amount, theirs = %theirs, "Starpay has another amount for this payout");
            row.state = RowState::NeedsAttention;
            row.code = Some(r.code.to_string());
            row.trx_state = r.trx_state.as_ref().map(|t| t.as_str().to_string());
            if r.order_no.is_some() {
                row.order_no = r.order_no.clone();
            }
            row.message = Some(format!(
                "AMOUNT_MISMATCH: Starpay has PHP {theirs} for this payout, we sent PHP {}; settle it with Starpay before anything else",
                row.amount
            ));
            return Ok(Step::Continue);
        }
        Ok(
            match policy::on_query_code(&r.code, true, r.trx_state.is_some()) {
                QueryVerdict::Apply => {
                    self.pool.success();
                    row.not_found_count = 0;
                    row.code = Some(r.code.to_string());
                    row.message = Some(r.message.clone());
                    self.apply_trx(
                        row,
                        r.trx_state.as_ref(),
                        r.order_no.clone(),
                        r.ref_no.clone(),
                        r.error_code.clone(),
                        r.error_message.clone(),
                    );
                    Step::Continue
                }
                QueryVerdict::NotFound => {
                    self.pool.success();
                    row.not_found_count += 1;
                    let since_send = row.last_sent_at.map_or(Duration::MAX, |t| {
                        Duration::from_millis(store::now_ms().saturating_sub(t).max(0) as u64)
                    });
                    match policy::on_not_found(
                        row.verified_reject,
                        row.not_found_count as u32,
                        since_send,
                        &self.settings.resolve,
                    ) {
                        NotFoundAction::Reject => {
                            row.state = RowState::Rejected;
                            row.message = Some(format!(
                            "rejected by Starpay ({} {}) and not found by query: no money moved",
                            row.code.as_deref().unwrap_or("?"),
                            row.message.as_deref().unwrap_or("")
                        ));
                        }
                        NotFoundAction::Wait => {}
                        NotFoundAction::Resend => {
                            tracing::warn!(line = row.line, "not found after {} queries over the window: resending the same msgId", row.not_found_count);
                            row.state = RowState::Unsent;
                            row.resent_after_not_found = true;
                            row.not_found_count = 0;
                        }
                    }
                    Step::Continue
                }
                // A verified answer without a trxState (403 on a query, a system error): says
                // nothing about the payout, so the not-found streak is neither counted nor broken.
                QueryVerdict::AskAgain => Step::Continue,
                QueryVerdict::BackOff => {
                    self.pool.cut();
                    Step::Backoff
                }
                QueryVerdict::StopRun => {
                    self.pool.stop(format!(
                        "Starpay answered {} {} to a query: stopping the run",
                        r.code, r.message
                    ));
                    Step::Continue
                }
            },
        )
    }
}

enum Step {
    Continue,
    Backoff,
}

/// Whether the AB0x hold of a FAIL dated `trx_date` (Starpay's time, with offset) is over.
/// An unreadable date is never "over".
fn hold_over(trx_date: Option<&str>, hold: Duration) -> bool {
    trx_date
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .is_some_and(|t| store::now_ms() - t.timestamp_millis() >= hold.as_millis() as i64)
}

/// The send times of a row and its attempt, to take back when a send did not happen.
type SendTimes = (Option<i64>, Option<i64>, Option<i64>);

fn send_times(row: &RowRecord) -> SendTimes {
    (
        row.first_sent_at,
        row.last_sent_at,
        row.attempt.as_ref().and_then(|a| a.first_sent_at),
    )
}

fn restore_send_times(row: &mut RowRecord, (first, last, attempt_first): SendTimes) {
    row.first_sent_at = first;
    row.last_sent_at = last;
    if let Some(a) = row.attempt.as_mut() {
        a.first_sent_at = attempt_first;
    }
}

/// What `allocate` did with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocated {
    /// A new attempt (msgId + bytes) is stored: the row is UNSENT.
    Yes,
    /// Not paid: REJECTED (the reference is blocked) or NEEDS_ATTENTION (the live check found
    /// an earlier attempt SUCCESS or in progress). The row's message says why.
    Refused,
    /// The live check of earlier attempts got no verified answer: nothing allocated; ask again.
    TryLater,
}

/// The live check of a re-payment's earlier attempts.
enum EarlierCheck {
    /// Every earlier msgId is verified not paid (the text describes them, for the report).
    Confirmed(String),
    /// Some earlier msgId could not be confirmed (no verified answer, lag): try later.
    Unconfirmed(String),
    /// Starpay has an earlier msgId as paid or in progress: a human must look.
    Contradicted(String),
}

/// The exact request bytes of a payout row (sorted, compact), and the operation.
pub fn build_payout_bytes(
    row: &RowRecord,
    msg_id: MsgId,
    mch_id: &MchId,
    notify_url: Option<&str>,
) -> Result<(&'static str, Vec<u8>), EngineError> {
    let build_err = |e: sign::CanonicalError| EngineError::Build {
        line: row.line,
        detail: e.to_string(),
    };
    if row.channel == "starpay" {
        let req = WalletDisburseRequest {
            msg_id,
            mch_id: mch_id.clone(),
            acct_no: row.account_no.clone(),
            acct_name: row.account_name.clone(),
            acct_middle_name: row.middle_name.clone(),
            acct_last_name: row.last_name.clone(),
            trx_amount: row.amount,
            currency: Currency::Php,
            attach: row.note.clone(),
            notify_url: notify_url.map(str::to_string),
        };
        let bytes = sign::canonical_bytes(&req, &[("service", WalletDisburseRequest::SERVICE)])
            .map_err(build_err)?;
        Ok((OP_WALLET, bytes))
    } else {
        let req = InstapayDisburseRequest {
            msg_id,
            mch_id: mch_id.clone(),
            acct_no: row.account_no.clone(),
            acct_name: row.account_name.clone(),
            acct_middle_name: row.middle_name.clone(),
            acct_last_name: row.last_name.clone(),
            receiving_bank: row.bank.clone().unwrap_or_default(),
            trx_amount: row.amount,
            currency: Currency::Php,
            attach: row.note.clone(),
            notify_url: notify_url.map(str::to_string),
        };
        let bytes = sign::canonical_bytes(&req, &[("service", InstapayDisburseRequest::SERVICE)])
            .map_err(build_err)?;
        Ok((OP_INSTAPAY, bytes))
    }
}
