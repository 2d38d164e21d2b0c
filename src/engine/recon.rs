//! Reconciliation: each row is checked against Starpay with one query (fresh msgId), through
//! the same kind of `Throttle` (limiter, in-flight bound, backoff, stop) as payouts, and put in
//! exactly one category. Rows stream from the store in pages through `engine::workers` (the
//! pool the payout engine uses too); results go back in batched transactions, so memory stays
//! flat whatever the number of rows, and a killed run resumes where it stopped without
//! re-querying rows already final.

use std::borrow::Cow::{self, Borrowed, Owned};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::domain::{Centavos, MsgId, ReconCategory as Cat, RowState, TrxState};
use crate::engine::msgid::MsgIds;
use crate::engine::payout::EngineError;
use crate::engine::policy::{self, QueryVerdict};
use crate::engine::stop::{StopReason, StopSite};
use crate::engine::throttle::Throttle;
use crate::engine::workers::{self, Next};
use crate::engine::{DriveResult, Settled};
use crate::input::recon::ReconKind;
use crate::starpay::client::{Answer, Client, ClientError};
use crate::starpay::codes::{reason_class, ReasonClass};
use crate::starpay::model::{
    DisburseQueryRequest, QueryResponse, RefNoQueryRequest, RepaymentQueryRequest,
};
use crate::store::recon::{MoveWhy, ReconResult, ReconTodo, RowMove};
use crate::store::Store;

/// Rows read from the store per page.
const PAGE: i64 = 512;
/// Results written per transaction (at most), and the longest a result waits to be written.
const BATCH: usize = 512;
const BATCH_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct ReconSettings {
    pub kind: ReconKind,
    /// PENDING younger than this, STALE_PENDING older (issue 5: 30 min for InstaPay).
    pub stale_after: Duration,
    /// Queries per row before it is UNKNOWN.
    pub max_tries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long one run keeps checking.
    pub deadline: Duration,
    /// §9.2: how long a FAIL with an AB0x reason is held before it counts.
    pub ab_hold: Duration,
}

impl ReconSettings {
    /// The job's resolve settings for a reconciliation of `kind`: four queries per row with a
    /// backoff from 0.5 s to 60 s before a row is UNKNOWN.
    pub fn new(kind: ReconKind, resolve: &crate::engine::policy::ResolveSettings) -> ReconSettings {
        ReconSettings {
            kind,
            stale_after: resolve.stale_after,
            max_tries: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            deadline: resolve.deadline,
            ab_hold: resolve.ab_hold,
        }
    }
}

/// What Starpay said about a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Found {
        state: TrxState,
        amount: Option<Centavos>,
        trx_date: Option<String>,
        error_code: Option<String>,
    },
    NotFound,
    /// Queries kept failing.
    Failed(String),
}

/// The expectation a row carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    pub amount: Option<Centavos>,
    pub state: Option<TrxState>,
    pub expect_not_found: bool,
    /// Reconciling one of our payout runs: the row is held as unpaid (REJECTED, UNSENT, or its
    /// attempt was never sent). Starpay having it SUCCESS or PROCESSING/INIT is then loud.
    pub recorded_unpaid: bool,
}

/// The action of a `PAID_BUT_RECORDED_UNPAID` row.
pub const PAID_BUT_RECORDED_UNPAID_ACTION: &str = "Starpay paid this row although it was recorded as unpaid: do not pay this reference again; check whether it was paid a second time elsewhere";

/// `1d 2h`, `30m`, `45s`: a hold duration as an operator reads it.
fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = Vec::new();
    for (unit, size) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out.join(" ")
}

/// One category per row (issue 5, issue 8), with the hint for the report's `action` column
/// (fixed text, or built for this row). `ab_hold`: how long a FAIL with an AB0x timeout reason
/// is held (a late credit can still land). Pure.
///
/// Longer than ~100 lines on purpose: it is the category table of issue 5 as one `match` over
/// (expectation, observation), one arm per row of that table, so it can be checked against it.
pub fn categorize(
    kind: ReconKind,
    exp: &Expectation,
    obs: &Observation,
    now_ms: i64,
    stale_after: Duration,
    ab_hold: Duration,
) -> (Cat, Cow<'static, str>) {
    let (category, action) = match obs {
        Observation::Failed(_) => (Cat::Unknown, "queries kept failing: run the job again later"),
        Observation::NotFound if exp.expect_not_found => (Cat::Matched, "none: nothing at Starpay, as expected"),
        Observation::NotFound => match kind {
            ReconKind::Disbursement => (
                Cat::NotFound,
                "not at Starpay: safe to re-send with the same msgId once 10 minutes have passed since it was sent",
            ),
            ReconKind::Repayment => (Cat::NotFound, "no such payment at Starpay: check the reference with the payer"),
        },
        Observation::Found {
            state,
            amount,
            trx_date,
            error_code,
        } => {
            if *state == TrxState::Reversed && exp.state.as_ref() != Some(&TrxState::Reversed) {
                return (
                    Cat::ReversedAfterSuccess,
                    Borrowed(match kind {
                        ReconKind::Disbursement => "money came back: contact the recipient, then re-pay if still due",
                        ReconKind::Repayment => "payment reversed: follow up with the payer",
                    }),
                );
            }
            // Held as unpaid in our store, paid (or being paid) at Starpay: the loudest case.
            if exp.recorded_unpaid
                && matches!(
                    state,
                    TrxState::Success | TrxState::Processing | TrxState::Init
                )
            {
                return (
                    Cat::PaidButRecordedUnpaid,
                    Borrowed(PAID_BUT_RECORDED_UNPAID_ACTION),
                );
            }
            let parsed_date = trx_date
                .as_deref()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok());
            // A FAIL with an AB0x timeout reason (§9.2: a late credit can still land) is held
            // for `ab_hold` from its trxDate; after that it is a final FAIL.
            let timeout_code = error_code
                .as_deref()
                .filter(|c| reason_class(c) == ReasonClass::Timeout);
            if let (TrxState::Fail, Some(code)) = (state, timeout_code) {
                let hold_ms = i64::try_from(ab_hold.as_millis()).unwrap_or(i64::MAX);
                let final_at = parsed_date.and_then(|t| {
                    chrono::TimeDelta::try_milliseconds(hold_ms).and_then(|h| t.checked_add_signed(h))
                });
                let still_held = match &final_at {
                    Some(f) => now_ms < f.timestamp_millis(),
                    None => true,
                };
                if still_held {
                    let at = trx_date.as_deref().unwrap_or("an unknown time");
                    let after = final_at
                        .map(|f| f.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
                        .unwrap_or_else(|| format!("{} from the failure", human_duration(ab_hold)));
                    return (
                        Cat::HeldTimeout,
                        Owned(format!(
                            "a FAIL with timeout reason {code} at {at}, held for {} because a late credit can still land; final after {after}; re-check then",
                            human_duration(ab_hold)
                        )),
                    );
                }
            }
            // Not final yet: re-checked when the job runs again.
            if !state.is_final() {
                let age_ms = parsed_date.map(|t| now_ms - t.timestamp_millis());
                return match age_ms {
                    Some(a) if a >= stale_after.as_millis() as i64 => (
                        Cat::StalePending,
                        Borrowed("investigate with Starpay: still pending beyond the SLA"),
                    ),
                    _ => (Cat::Pending, Borrowed("re-check after the SLA")),
                };
            }
            if let (Some(want), Some(got)) = (exp.amount, amount) {
                if want != *got {
                    return (
                        Cat::AmountMismatch,
                        Borrowed("investigate with Starpay: the amounts differ"),
                    );
                }
            }
            match &exp.state {
                Some(want) if want == state => (Cat::Matched, "none"),
                Some(_) => (Cat::StateMismatch, "investigate with Starpay: the state differs from what was expected"),
                None if *state == TrxState::Success => (Cat::Matched, "none"),
                None => match kind {
                    ReconKind::Disbursement => (Cat::StateMismatch, "not paid: fix the data or funds, then re-pay with a new file"),
                    ReconKind::Repayment => (Cat::StateMismatch, "not paid: the payment did not complete"),
                },
            }
        }
    };
    (category, Borrowed(action))
}

/// The state a payout row should move to when a reconcile finds Starpay has moved on (§8:
/// SUCCESS → REVERSED is the only change between final states; an unresolved row takes the
/// verified final state). `None`: no change.
pub fn drift(
    ours: RowState,
    theirs: &TrxState,
    error_code: Option<&str>,
    ab_hold: Duration,
) -> Option<RowState> {
    // Never touched: FAILED/REJECTED/REVERSED (a REJECTED row Starpay paid is
    // `PAID_BUT_RECORDED_UNPAID`, see `recorded_unpaid_move`). A FAIL_HELD row stays held on a
    // FAIL (its AB0x reason still applies and the hold is the payout engine's to end); only
    // SUCCESS or REVERSED moves it here. NEEDS_ATTENTION is not a dead end (issue 8): a verified
    // final answer moves it to SUCCESS, FAILED or REVERSED; anything else (a non-final state, a
    // held timeout FAIL) leaves it for the human.
    let next = policy::state_from_trx(theirs, error_code, None, 0, ab_hold);
    let allowed = match ours {
        RowState::Success => next == RowState::Reversed,
        RowState::FailHeld => matches!(next, RowState::Success | RowState::Reversed),
        RowState::Pending | RowState::Unknown => theirs.is_final() && next != ours,
        RowState::NeedsAttention => {
            theirs.is_final()
                && matches!(
                    next,
                    RowState::Success | RowState::Failed | RowState::Reversed
                )
        }
        _ => false,
    };
    allowed.then_some(next)
}

/// The state a payout row held as unpaid moves to when Starpay (verified) has it SUCCESS or
/// PROCESSING/INIT: the state the answer implies when the amounts agree, NEEDS_ATTENTION when
/// they do not. `None` for any other answer.
pub fn recorded_unpaid_move(theirs: &TrxState, amounts_agree: bool) -> Option<RowState> {
    let implied = match theirs {
        TrxState::Success => RowState::Success,
        TrxState::Processing | TrxState::Init => RowState::Pending,
        _ => return None,
    };
    Some(if amounts_agree {
        implied
    } else {
        RowState::NeedsAttention
    })
}

pub struct ReconEngine {
    client: Client,
    store: Store,
    throttle: Throttle,
    msg_ids: MsgIds,
    settings: ReconSettings,
    done: AtomicU64,
}

impl ReconEngine {
    pub async fn new(
        client: Client,
        store: Store,
        throttle: Throttle,
        settings: ReconSettings,
    ) -> Result<Arc<ReconEngine>, EngineError> {
        Ok(Arc::new(ReconEngine {
            msg_ids: MsgIds::new(store.clone()).await?,
            client,
            store,
            throttle,
            settings,
            done: AtomicU64::new(0),
        }))
    }

    /// The request throttle (limiter, in-flight bound, stop signal, backoff).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn rows_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Balance of the account the job is about: 5.6 (disbursement) or 6.6 (repayment).
    pub async fn balance(&self) -> Result<Centavos, EngineError> {
        let account = match self.settings.kind {
            ReconKind::Disbursement => crate::engine::Account::Disbursement,
            ReconKind::Repayment => crate::engine::Account::Repayment,
        };
        crate::engine::query_balance(&self.throttle, &self.msg_ids, &self.client, account).await
    }

    /// Checks every open row of `run_id` (streamed), until done, the deadline, or a stop.
    pub async fn drive(self: &Arc<Self>, run_id: i64) -> DriveResult {
        match self.drive_rows(run_id).await {
            Ok(stopped) => DriveResult {
                stopped,
                error: None,
            },
            Err(e) => DriveResult {
                stopped: self.throttle.stop_reason(),
                error: Some(e.to_string()),
            },
        }
    }

    /// After a drive: the balance at the end (when it ran to the end), lines claiming one
    /// Starpay order, and whether the run may be finished. A recon job's run stays open while
    /// rows can still change (re-run to re-check them). A reconcile pass ends only when every
    /// row has been checked (issue 8: one cut by its deadline is resumed by the next
    /// `reconcile`); a finished pass is not resumed, the next `reconcile` starts a fresh pass
    /// over every row (drift can happen to rows that were final).
    pub async fn settle(
        &self,
        run_id: i64,
        drive: &DriveResult,
        reconcile_pass: bool,
    ) -> Result<Settled, EngineError> {
        let complete = drive.is_complete();
        if complete {
            match self.balance().await {
                Ok(b) => self.store.set_recon_balance(run_id, false, b).await?,
                Err(e) => tracing::warn!(error = %e, "balance at the end of the run is unknown"),
            }
        }
        // Two lines claiming one Starpay order: over the whole run, before the report (issue 8).
        let duplicates = self.store.mark_duplicate_matches(run_id).await?;
        if duplicates > 0 {
            tracing::warn!(
                rows = duplicates,
                "rows claim a Starpay order another line already matched"
            );
        }
        let open = self.store.open_recon_rows(run_id).await?;
        let unchecked = self.store.unchecked_recon_rows(run_id).await?;
        Ok(Settled {
            finish: complete && (open == 0 || (reconcile_pass && unchecked == 0)),
            unchecked,
        })
    }

    /// The three stages of a reconciliation drive: a producer pages open rows from the store
    /// into `engine::workers` (bounded queue, `width()` workers, the throttle's stop as
    /// shutdown), each worker checks one row at a time, and one writer saves results in batches
    /// (at most `BATCH` rows or `BATCH_WAIT` old). A failure anywhere stops the run; the first
    /// error is returned.
    async fn drive_rows(self: &Arc<Self>, run_id: i64) -> Result<Option<StopReason>, EngineError> {
        let deadline =
            crate::engine::clock::deadline_after(self.throttle.clock(), self.settings.deadline);
        let (res_tx, res_rx) = mpsc::channel::<ReconResult>(BATCH * 2);
        let writer = tokio::spawn(Arc::clone(self).write_results(run_id, res_rx));
        let first_error: Arc<std::sync::Mutex<Option<EngineError>>> = Arc::default();
        let fail = {
            let (engine, errors) = (Arc::clone(self), Arc::clone(&first_error));
            move |e: EngineError| {
                engine.throttle.stop(StopReason::ReconFailed(e.to_string()));
                if let Ok(mut first) = errors.lock() {
                    first.get_or_insert(e);
                }
            }
        };
        let check = {
            let (engine, fail) = (Arc::clone(self), fail.clone());
            move |todo: ReconTodo| {
                let (engine, fail, tx) = (Arc::clone(&engine), fail.clone(), res_tx.clone());
                async move {
                    if engine.throttle.stopped() || engine.throttle.clock().now() >= deadline {
                        // Left unchecked: the next run checks it.
                        return Next::Done;
                    }
                    match engine.check(&todo, deadline).await {
                        // A closed channel: the writer failed and has stopped the run.
                        Ok(Some(result)) => drop(tx.send(result).await),
                        Ok(None) => {}
                        Err(e) => fail(e),
                    }
                    Next::Done
                }
            }
        };
        // Pages of open rows, in id order.
        let produce = {
            let engine = Arc::clone(self);
            move |mut feed: workers::Feed<ReconTodo>| async move {
                let mut after = 0i64;
                loop {
                    if engine.throttle.stopped() || engine.throttle.clock().now() >= deadline {
                        return;
                    }
                    let page = match engine.store.recon_todo_page(run_id, after, PAGE).await {
                        Ok(page) => page,
                        Err(e) => return fail(e.into()),
                    };
                    let Some(last) = page.last() else {
                        return;
                    };
                    after = last.id;
                    for todo in page {
                        if !feed.put(todo).await {
                            return;
                        }
                    }
                }
            }
        };
        workers::run(self.width(), &self.throttle, None, produce, check).await;
        // Every result sender was in the workers, now gone: the writer drains and ends.
        let written = writer.await;
        let first = match first_error.lock() {
            Ok(mut e) => e.take(),
            Err(_) => Some(EngineError::Task(
                "a worker's error could not be read".into(),
            )),
        };
        if let Some(e) = first {
            return Err(e);
        }
        match written {
            Ok(Ok(())) => Ok(self.throttle.stop_reason()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(EngineError::Task(e.to_string())),
        }
    }

    /// The writer: results saved in batched transactions. No result waits longer than
    /// `BATCH_WAIT` to be written, even while results keep coming (a kill then loses at most
    /// that much work, and progress is visible in the store). A failed save stops the run.
    async fn write_results(
        self: Arc<Self>,
        run_id: i64,
        mut res_rx: mpsc::Receiver<ReconResult>,
    ) -> Result<(), EngineError> {
        let mut batch = Vec::with_capacity(BATCH);
        // When the oldest result of the batch arrived.
        let mut oldest: Option<Instant> = None;
        loop {
            let wait = oldest.map_or(BATCH_WAIT, |t| BATCH_WAIT.saturating_sub(t.elapsed()));
            let (closed, idle) = match tokio::time::timeout(wait, res_rx.recv()).await {
                Ok(Some(r)) => {
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(r);
                    (false, false)
                }
                Ok(None) => (true, false),
                Err(_) => (false, true),
            };
            let due = oldest.is_some_and(|t| t.elapsed() >= BATCH_WAIT);
            if !batch.is_empty() && (batch.len() >= BATCH || closed || idle || due) {
                oldest = None;
                let items = std::mem::take(&mut batch);
                let n = items.len() as u64;
                if let Err(e) = self.store.save_recon_results(run_id, items).await {
                    self.throttle.stop(StopReason::Store(e.to_string()));
                    return Err(EngineError::from(e));
                }
                self.done.fetch_add(n, Ordering::Relaxed);
            }
            if closed {
                return Ok(());
            }
        }
    }

    fn width(&self) -> usize {
        self.throttle.capacity().max(1)
    }

    /// Queries one row until an answer, `max_tries`, or a stop. `None`: leave it unchecked.
    ///
    /// Longer than ~100 lines on purpose: the query differs per kind (6.8 by refNo, 6.2 or 5.4
    /// by msgId) and each answer must be verified, echo-checked and mapped to an observation;
    /// the retry loop around all of them is one piece.
    async fn check(
        &self,
        todo: &ReconTodo,
        deadline: Instant,
    ) -> Result<Option<ReconResult>, EngineError> {
        let mut result = ReconResult {
            id: todo.id,
            queries: todo.queries,
            ..ReconResult::default()
        };
        let mut tries = 0u32;
        let observation = loop {
            if self.throttle.stopped() {
                return Ok(None);
            }
            let msg_id = self.msg_ids.block('K').await?;
            result.query_ids.push(msg_id.to_string());
            result.queries += 1;
            let answer = {
                let _slot = self.throttle.slot().await?;
                self.throttle.pace().await;
                self.query(todo, msg_id.clone()).await
            };
            tries += 1;
            let mut backoff = false;
            match answer {
                Ok(a) if self.echoes(todo, &a, &msg_id) => {
                    let r = &a.response;
                    result.code = Some(r.code.to_string());
                    result.message = Some(r.message.clone());
                    match policy::on_query_code(&r.code, true, r.trx_state.is_some()) {
                        QueryVerdict::Apply => {
                            self.throttle.success();
                            result.raw = Some(a.raw_body.to_vec());
                            result.order_no = r.order_no.clone();
                            result.provider_amount = r.trx_amount;
                            result.trx_state = r.trx_state.as_ref().map(|s| s.as_str().to_string());
                            result.error_code = r.error_code.clone();
                            result.error_message = r.error_message.clone();
                            result.trx_date = r.trx_date.clone();
                            break Observation::Found {
                                state: r
                                    .trx_state
                                    .clone()
                                    .unwrap_or(TrxState::Unknown(String::new())),
                                amount: r.trx_amount,
                                trx_date: r.trx_date.clone(),
                                error_code: r.error_code.clone(),
                            };
                        }
                        QueryVerdict::NotFound => {
                            self.throttle.success();
                            result.raw = Some(a.raw_body.to_vec());
                            break Observation::NotFound;
                        }
                        QueryVerdict::AskAgain => {}
                        QueryVerdict::BackOff => {
                            self.throttle.cut();
                            backoff = true;
                        }
                        QueryVerdict::StopRun => {
                            self.throttle.stop(StopReason::StopCode {
                                code: r.code.clone(),
                                message: Some(r.message.clone()),
                                site: StopSite::Query,
                            });
                            return Ok(None);
                        }
                    }
                }
                Ok(_) => {
                    tracing::warn!(
                        line = todo.line,
                        "query answer does not match the query; ignored"
                    );
                    result.message = Some("answer did not match the query".into());
                }
                Err(e) => {
                    result.message = Some(e.to_string());
                    if let ClientError::Unverified {
                        code: Some(code), ..
                    } = &e
                    {
                        match policy::on_query_code(code, false, false) {
                            QueryVerdict::StopRun => {
                                self.throttle.stop(StopReason::StopCode {
                                    code: code.clone(),
                                    message: None,
                                    site: StopSite::Query,
                                });
                                return Ok(None);
                            }
                            QueryVerdict::BackOff => {
                                self.throttle.cut();
                                backoff = true;
                            }
                            _ => {}
                        }
                    }
                }
            }
            if tries >= self.settings.max_tries || self.throttle.clock().now() >= deadline {
                break Observation::Failed(result.message.clone().unwrap_or_default());
            }
            let n = if backoff { tries + 1 } else { tries };
            let base = self
                .settings
                .backoff_base
                .saturating_mul(1u32 << n.min(16).saturating_sub(1))
                .min(self.settings.backoff_max);
            self.throttle.sleep_backoff(base, deadline).await;
        };
        let now = self.throttle.clock().now_ms();
        let expectation = Expectation {
            amount: todo.expected_amount,
            state: todo.expected_state.as_deref().map(TrxState::parse),
            expect_not_found: todo.expect_not_found,
            recorded_unpaid: todo.recorded_unpaid,
        };
        let (category, action) = categorize(
            self.settings.kind,
            &expectation,
            &observation,
            now,
            self.settings.stale_after,
            self.settings.ab_hold,
        );
        result.category = category;
        result.action = action.into_owned();
        result.checked_at = now;
        if let (Some(row_id), Some(ours), Observation::Found { state, amount, .. }) =
            (todo.source_row_id, todo.source_state, &observation)
        {
            // A provider amount that differs from ours is a conflict for a human, not drift.
            let amounts_agree = amount.is_none() || *amount == todo.source_amount;
            if category == Cat::PaidButRecordedUnpaid {
                // Re-block the reference: the row leaves REJECTED/UNSENT for the state Starpay's
                // answer implies (or NEEDS_ATTENTION when the amounts differ).
                if let Some(next) = recorded_unpaid_move(state, amounts_agree) {
                    result.moved = Some(RowMove {
                        row_id,
                        old: ours,
                        new: next,
                        why: MoveWhy::PaidRecordedUnpaid {
                            ours: todo.source_amount,
                            theirs: *amount,
                        },
                    });
                }
            } else if todo.recorded_unpaid && category == Cat::HeldTimeout {
                // A FAIL with a timeout reason may still be credited (§9.2): like any row whose
                // money may still move, it must block its reference again.
                result.moved = Some(RowMove {
                    row_id,
                    old: ours,
                    new: RowState::FailHeld,
                    why: MoveWhy::PaidRecordedUnpaid {
                        ours: todo.source_amount,
                        theirs: *amount,
                    },
                });
            } else if amounts_agree {
                if let Some(next) = drift(
                    ours,
                    state,
                    result.error_code.as_deref(),
                    self.settings.ab_hold,
                ) {
                    result.moved = Some(RowMove {
                        row_id,
                        old: ours,
                        new: next,
                        why: if ours == RowState::NeedsAttention {
                            MoveWhy::ResolvedAttention
                        } else {
                            MoveWhy::Drift
                        },
                    });
                }
            }
        }
        Ok(Some(result))
    }

    /// The answer is about this query and this transaction (the signature does not cover our
    /// request).
    fn echoes(&self, todo: &ReconTodo, a: &Answer<QueryResponse>, msg_id: &MsgId) -> bool {
        let r = &a.response;
        let about_a_transaction = r.trx_state.is_some();
        r.msg_id.as_deref() == Some(msg_id.as_str())
            && r.mch_id
                .as_deref()
                .is_none_or(|m| m == self.client.mch_id().as_str())
            && (!about_a_transaction
                || match (&todo.ref_no, &todo.original_msg_id) {
                    (Some(rf), _) => r.ref_no.as_deref() == Some(rf.as_str()),
                    (None, Some(orig)) => r.original_msg_id.as_deref() == Some(orig.as_str()),
                    (None, None) => false,
                })
    }

    async fn query(
        &self,
        todo: &ReconTodo,
        msg_id: MsgId,
    ) -> Result<Answer<QueryResponse>, ClientError> {
        let mch_id = self.client.mch_id().clone();
        let original =
            |m: &String| MsgId::new(m.clone()).map_err(|e| ClientError::Config(e.to_string()));
        match (self.settings.kind, &todo.ref_no, &todo.original_msg_id) {
            (ReconKind::Repayment, Some(ref_no), _) => {
                self.client
                    .query_repayment_by_ref_no(&RefNoQueryRequest {
                        msg_id,
                        mch_id,
                        ref_no: ref_no.clone(),
                    })
                    .await
            }
            (ReconKind::Repayment, None, Some(m)) => {
                let request = RepaymentQueryRequest::of(msg_id, mch_id, original(m)?);
                self.client.query_repayment(&request).await
            }
            (ReconKind::Disbursement, _, Some(m)) => {
                let request = DisburseQueryRequest::of(msg_id, mch_id, original(m)?);
                self.client.query_disbursement(&request).await
            }
            _ => Err(ClientError::Config(format!(
                "line {}: nothing to query",
                todo.line
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLA: Duration = Duration::from_secs(1800);
    const HOLD: Duration = Duration::from_secs(86_400);

    fn found_code(state: TrxState, code: &str, age_s: i64, now_ms: i64) -> Observation {
        match found(state, 100, age_s, now_ms) {
            Observation::Found {
                state,
                amount,
                trx_date,
                ..
            } => Observation::Found {
                state,
                amount,
                trx_date,
                error_code: Some(code.into()),
            },
            other => other,
        }
    }

    fn found(state: TrxState, amount: i64, age_s: i64, now_ms: i64) -> Observation {
        let t = chrono::DateTime::from_timestamp_millis(now_ms - age_s * 1000)
            .unwrap()
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
        Observation::Found {
            state,
            amount: Some(Centavos::new(amount)),
            trx_date: Some(t.format("%Y-%m-%dT%H:%M:%S+08:00").to_string()),
            error_code: None,
        }
    }

    #[test]
    fn category_table() {
        let now = 1_800_000_000_000;
        let none = Expectation::default;
        let f = |state, amount, age_s| found(state, amount, age_s, now);
        let fc = |state, code, age_s| found_code(state, code, age_s, now);
        use Cat as C;
        use TrxState as T;
        let amt = |a: i64| Expectation {
            amount: Some(Centavos::new(a)),
            ..Expectation::default()
        };
        let st = |s: TrxState| Expectation {
            state: Some(s),
            ..Expectation::default()
        };
        let unpaid = |amount: Option<i64>, expect_not_found: bool| Expectation {
            amount: amount.map(Centavos::new),
            expect_not_found,
            recorded_unpaid: true,
            ..Expectation::default()
        };
        // Held as unpaid in the store, with the reference blocked (`true`) or not.
        let held = || unpaid(Some(100), true);
        let held_open = || unpaid(Some(100), false);
        let expect_nf = || Expectation {
            expect_not_found: true,
            ..Expectation::default()
        };
        // A FAIL with a reason code and neither amount nor date.
        let bare_fail = |code: &str| Observation::Found {
            state: T::Fail,
            amount: None,
            trx_date: None,
            error_code: Some(code.into()),
        };
        const PAID_UNPAID: Cat = Cat::PaidButRecordedUnpaid;
        const REVERSED: Cat = Cat::ReversedAfterSuccess;
        let d = ReconKind::Disbursement;
        let r = ReconKind::Repayment;
        let cases: Vec<(ReconKind, Expectation, Observation, Cat)> = vec![
            (r, none(), f(T::Success, 100, 60), C::Matched),
            (r, amt(100), f(T::Success, 100, 60), C::Matched),
            (r, amt(100), f(T::Success, 101, 60), C::AmountMismatch),
            (r, st(T::Fail), f(T::Success, 1, 60), C::StateMismatch),
            (d, none(), f(T::Fail, 1, 60), C::StateMismatch),
            (d, st(T::Fail), f(T::Fail, 1, 60), C::Matched),
            (d, none(), Observation::NotFound, C::NotFound),
            (d, expect_nf(), Observation::NotFound, C::Matched),
            (r, none(), f(T::Processing, 1, 60), C::Pending),
            (r, none(), f(T::Processing, 1, 1801), C::StalePending),
            (r, none(), f(T::Unknown("HELD".into()), 1, 60), C::Pending),
            (d, st(T::Success), f(T::Reversed, 1, 60), REVERSED),
            (d, none(), f(T::Reversed, 1, 60), REVERSED),
            (d, st(T::Reversed), f(T::Reversed, 1, 60), C::Matched),
            (d, none(), Observation::Failed("timeout".into()), C::Unknown),
            (r, amt(5), f(T::Processing, 1, 60), C::Pending),
            (d, st(T::Fail), bare_fail("AB05"), C::HeldTimeout),
            // Issue 8 defect 13: a held timeout FAIL is HELD_TIMEOUT inside the hold (however
            // old against the SLA), a final FAIL after it.
            (d, st(T::Fail), fc(T::Fail, "AB05", 60), C::HeldTimeout),
            (d, st(T::Fail), fc(T::Fail, "AB05", 3_600), C::HeldTimeout),
            (d, st(T::Fail), fc(T::Fail, "AB05", 86_401), C::Matched),
            (d, none(), fc(T::Fail, "AB06", 86_401), C::StateMismatch),
            // Issue 8 defect 3: held as unpaid, paid or being paid at Starpay.
            (d, held(), f(T::Success, 100, 60), PAID_UNPAID),
            (d, held(), f(T::Success, 999, 60), PAID_UNPAID),
            (d, held_open(), f(T::Processing, 100, 60), PAID_UNPAID),
            (d, held(), f(T::Init, 100, 4_000), PAID_UNPAID),
            (d, held(), fc(T::Fail, "AC01", 60), C::StateMismatch),
            (d, held(), Observation::NotFound, C::Matched),
            (d, held_open(), Observation::NotFound, C::NotFound),
            (d, st(T::Fail), bare_fail("AC01"), C::Matched),
        ];
        for (i, (kind, exp, obs, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                categorize(kind, &exp, &obs, now, SLA, HOLD).0,
                want,
                "case {i}: {exp:?} {obs:?}"
            );
        }
    }

    #[test]
    fn held_timeout_action_says_what_it_is() {
        let now = 1_800_000_000_000;
        let obs = found_code(TrxState::Fail, "AB05", 3_600, now);
        let Observation::Found {
            trx_date: Some(at), ..
        } = &obs
        else {
            panic!("fixture");
        };
        let final_at = chrono::DateTime::parse_from_rfc3339(at).unwrap()
            + chrono::TimeDelta::try_seconds(86_400).unwrap();
        let (category, action) = categorize(
            ReconKind::Disbursement,
            &Expectation::default(),
            &obs,
            now,
            SLA,
            HOLD,
        );
        assert_eq!(category, Cat::HeldTimeout);
        let want = format!(
            "a FAIL with timeout reason AB05 at {at}, held for 1d because a late credit can still land; final after {}; re-check then",
            final_at.format("%Y-%m-%dT%H:%M:%S%:z")
        );
        assert_eq!(action, want);
        assert_eq!(human_duration(Duration::from_secs(5_430)), "1h 30m 30s");
    }

    #[test]
    fn recorded_unpaid_moves() {
        use RowState as S;
        use TrxState as T;
        // (the verified answer, whether the amounts agree, where the row moves)
        let cases = [
            (T::Success, true, Some(S::Success)),
            (T::Processing, true, Some(S::Pending)),
            (T::Init, true, Some(S::Pending)),
            (T::Success, false, Some(S::NeedsAttention)),
            (T::Fail, true, None),
            (T::Reversed, true, None),
        ];
        for (trx, flag, want) in cases {
            assert_eq!(recorded_unpaid_move(&trx, flag), want, "{trx:?} {flag}");
        }
    }

    #[test]
    fn drift_table() {
        use RowState as S;
        use TrxState as T;
        let hold = Duration::from_secs(86_400);
        let (ac01, ab05) = (Some("AC01"), Some("AB05"));
        // (the row's state, the verified answer and its reason, what the row moves to)
        let cases: Vec<(S, T, Option<&str>, Option<S>)> = vec![
            (S::Success, T::Reversed, None, Some(S::Reversed)),
            (S::Success, T::Success, None, None),
            (S::Success, T::Fail, ac01, None), // conflict: flagged, not applied
            (S::Pending, T::Success, None, Some(S::Success)),
            (S::Unknown, T::Fail, ac01, Some(S::Failed)),
            (S::Pending, T::Fail, ab05, Some(S::FailHeld)),
            (S::FailHeld, T::Fail, ab05, None),
            (S::Pending, T::Processing, None, None),
            (S::FailHeld, T::Fail, None, None), // held reason still applies
            (S::FailHeld, T::Success, None, Some(S::Success)),
            // Issue 8 defect 2: a verified final answer resolves NEEDS_ATTENTION; a non-final one
            // or a held timeout FAIL leaves it.
            (S::NeedsAttention, T::Success, None, Some(S::Success)),
            (S::NeedsAttention, T::Fail, ac01, Some(S::Failed)),
            (S::NeedsAttention, T::Reversed, None, Some(S::Reversed)),
            (S::NeedsAttention, T::Close, None, Some(S::Failed)),
            (S::NeedsAttention, T::Processing, None, None),
            (S::NeedsAttention, T::Fail, ab05, None), // held: a late credit can still land
            (S::Failed, T::Success, None, None),
            (S::Rejected, T::Success, None, None),
        ];
        for (row, answer, code, want) in cases {
            let got = drift(row, &answer, code, hold);
            assert_eq!(got, want, "{row:?} + {answer:?} {code:?}");
        }
    }
}
