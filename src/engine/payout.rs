//! The payout engine: drives every open row of a run to a final state, or leaves it explicitly
//! unresolved for the next run (reference §12). Rows are driven by `engine::workers`
//! (`concurrency` workers; a row waiting for a poll or a backoff is parked, holding no worker);
//! the `Throttle` bounds requests in flight and paces sends and queries with one adaptive
//! limiter; `MsgIds` makes every msgId.
//!
//! Invariants (the non-negotiables):
//! - a payout's msgId and exact bytes are committed before the first send (`store::allocate_attempt`);
//! - an unknown outcome is resolved by query; the only resend is of the *same* msgId and bytes
//!   (406, a connect failure, a stop code, or the not-found rule);
//! - a row's state changes only from a verified `trxState` or a verified 404 after a verified
//!   rejection, through `transition` (built on `policy`), and is saved by compare-and-set with
//!   the raw answer as evidence. This module only does the I/O: it asks `transition::transition`
//!   (`change`/`commit`), applies the patch, persists and sends; it never assigns a state itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{Centavos, MchId, MsgId, RowState, TrxState};
use crate::engine::clock::{deadline_after, Clock, Timing};
use crate::engine::msgid::{MsgIdError, MsgIds};
use crate::engine::policy::ResolveSettings;
use crate::engine::stop::StopReason;
use crate::engine::throttle::{Throttle, ThrottleError};
use crate::engine::transition::{
    send_times, transition, Change, IllegalTransition, RowEvent, RowView, Signal, Step, Verified,
};
use crate::engine::workers::{self, Next};
use crate::logging::mask_account;
use crate::starpay::client::{Answer, Client};
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
    Throttle(#[from] ThrottleError),
    #[error(transparent)]
    MsgId(#[from] MsgIdError),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The row changed in the store underneath this engine (the notification receiver applied
    /// a notification): it has been reloaded; the caller goes on from the stored state.
    #[error("line {line}: the row changed underneath the engine; reloaded")]
    RowMoved { line: i64 },
}

/// Settings the engine needs, built by `cmd::context::JobContext` from the job file.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub concurrency: usize,
    pub requests_per_second: u32,
    pub burst: u32,
    pub resolve: ResolveSettings,
    pub notify_url: Option<String>,
    /// Several runners on one run (PostgreSQL): rows are claimed with leases and the
    /// merchant's rate is shared. `None`: this process drives every open row alone (SQLite).
    pub runners: Option<crate::engine::runners::RunnerSettings>,
}

pub use crate::engine::{DriveResult, Settled};

pub struct PayoutEngine {
    client: Client,
    store: Store,
    settings: EngineSettings,
    throttle: Throttle,
    msg_ids: MsgIds,
    done: AtomicU64,
    /// Rows the notification receiver changed (`run --listen`), taken by the next `drive`.
    wakes: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<i64>>>,
}

const OP_INSTAPAY: &str = "5.2";
const OP_WALLET: &str = "5.3";

impl PayoutEngine {
    /// `timing`: the clock and the jitter's seed (`Timing::system()` in production).
    pub async fn new(
        client: Client,
        store: Store,
        settings: EngineSettings,
        timing: Timing,
    ) -> Result<Arc<PayoutEngine>, EngineError> {
        let mut throttle = Throttle::new(
            settings.concurrency,
            settings.requests_per_second,
            settings.burst,
            &timing,
        );
        if settings.runners.is_some() {
            throttle = throttle
                .share_rate(
                    store.clone(),
                    client.mch_id().as_str(),
                    settings.requests_per_second,
                    settings.burst,
                )
                .await?;
        }
        let msg_ids = MsgIds::new(store.clone()).await?;
        Ok(Arc::new(PayoutEngine {
            client,
            store,
            settings,
            throttle,
            msg_ids,
            done: AtomicU64::new(0),
            wakes: std::sync::Mutex::new(None),
        }))
    }

    /// A channel for the notification receiver of `run --listen`: the id of each row a
    /// notification changed wakes that row if it is parked in the next `drive` (it is then
    /// taken at once, reloads the stored row and, final, needs no query). Bounded: 1,024 wakes
    /// not yet taken; beyond that a row waits for its poll as without `--listen`.
    pub fn wake_on_notifications(&self) -> tokio::sync::mpsc::Sender<i64> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        match self.wakes.lock() {
            Ok(mut w) => *w = Some(rx),
            Err(poisoned) => *poisoned.into_inner() = Some(rx),
        }
        tx
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops taking work (Ctrl-C or a stop code). In-flight requests finish; their rows stay
    /// IN_FLIGHT/UNKNOWN and are resolved by query on the next run.
    pub fn stop(&self, reason: StopReason) {
        self.throttle.stop(reason);
    }

    fn stopped(&self) -> bool {
        self.throttle.stopped()
    }

    fn clock(&self) -> &dyn Clock {
        self.throttle.clock()
    }

    /// The request throttle (limiter, in-flight bound, stop signal, backoff).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn rows_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Pre-flight balance (5.6): the available disbursement balance, verified.
    pub async fn balance(&self) -> Result<Centavos, EngineError> {
        crate::engine::query_balance(
            &self.throttle,
            &self.msg_ids,
            &self.client,
            crate::engine::Account::Disbursement,
        )
        .await
    }

    /// Pre-flight bank list (5.1): the `bankName`s that `receivingBank` must match.
    pub async fn bank_names(&self) -> Result<std::collections::HashSet<String>, EngineError> {
        let msg_id = self.msg_ids.fresh('L', "bank_list", None).await?;
        let req = crate::starpay::model::BankListRequest {
            msg_id,
            mch_id: self.client.mch_id().clone(),
        };
        self.throttle.pace().await;
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
    /// is stopped: a producer feeds the open rows, in input order and one page of
    /// [`ROW_PAGE`] at a time (memory stays flat however long the file), into
    /// `engine::workers` (`concurrency` workers); a row that must wait for its next poll or a
    /// backoff is parked there and holds no worker. A row whose turn fails is logged and stays
    /// unresolved; the others go on. A page that cannot be read ends the feed with an error
    /// (the rows not fed stay as stored, for the next run).
    pub async fn drive(self: &Arc<Self>, run_id: i64) -> Result<DriveResult, EngineError> {
        let deadline = deadline_after(self.clock(), self.settings.resolve.deadline);
        let first_error: Arc<std::sync::Mutex<Option<EngineError>>> = Arc::default();
        let engine = Arc::clone(self);
        let errors = Arc::clone(&first_error);
        // Rows fed and not done for this drive (the claim feed waits for them).
        let in_hand = Arc::new(AtomicU64::new(0));
        let hand = Arc::clone(&in_hand);
        let turn = move |job: RowJob| {
            let (engine, errors, hand) =
                (Arc::clone(&engine), Arc::clone(&errors), Arc::clone(&hand));
            async move {
                let line = job.row.line;
                match engine.row_turn(job, deadline).await {
                    Ok(Next::At(due, job)) => return Next::At(due, job),
                    Ok(Next::Done) => {}
                    Err(e) => {
                        tracing::error!(line, error = %e, "row could not be driven; it stays unresolved");
                        if let Ok(mut first) = errors.lock() {
                            first.get_or_insert(e);
                        }
                    }
                }
                engine.done.fetch_add(1, Ordering::Relaxed);
                hand.fetch_sub(1, Ordering::Relaxed);
                Next::Done
            }
        };
        let width = self.settings.concurrency.max(1) * WORKERS_PER_SLOT;
        if let Some(runners) = &self.settings.runners {
            return self
                .drive_claimed(run_id, runners, width, deadline, in_hand, first_error, turn)
                .await;
        }
        let store = self.store.clone();
        let feed_errors = Arc::clone(&first_error);
        let feed_rows = |mut feed: workers::Feed<RowJob>| async move {
            // Pages by line: a row is fed once, from the page read after the rows before it
            // were fed; a row that became final meanwhile (a notification) is not read.
            let mut after = 0i64;
            loop {
                let page = match store.rows_page(run_id, true, after, ROW_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(error = %e, "the run's rows could not be read; the rest stay unresolved");
                        if let Ok(mut first) = feed_errors.lock() {
                            first.get_or_insert(e.into());
                        }
                        return;
                    }
                };
                let Some(last) = page.last() else {
                    return;
                };
                after = last.line;
                for row in page {
                    in_hand.fetch_add(1, Ordering::Relaxed);
                    if !feed.put(RowJob::new(row)).await {
                        return;
                    }
                }
            }
        };
        let wakes = self.take_wakes();
        workers::run(width, &self.throttle, wakes, feed_rows, turn).await;
        Ok(self.drive_result(&first_error))
    }

    /// The notification wakes of `run --listen`, for this drive.
    fn take_wakes(&self) -> Option<workers::Wakes<RowJob>> {
        match self.wakes.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
        .map(|ids| workers::Wakes {
            ids,
            key: |job: &RowJob| job.row.id,
        })
    }

    fn drive_result(&self, first_error: &std::sync::Mutex<Option<EngineError>>) -> DriveResult {
        let error = match first_error.lock() {
            Ok(mut e) => e.take().map(|e| e.to_string()),
            Err(_) => Some("a row's error could not be read".into()),
        };
        DriveResult {
            stopped: self.throttle.stop_reason(),
            error,
        }
    }

    /// `drive` with other runners on the same run (PostgreSQL): the feed claims open rows in
    /// batches under this runner's lease instead of reading them all, and goes on claiming
    /// (rows of a runner that died come free when its lease expires) until the run has no open
    /// row, the deadline passes, or this runner has nothing left and nobody else holds a live
    /// lease. A renewal task keeps the leases alive meanwhile; at the end they are given back.
    /// A row taken over is driven by the same `row_turn` as a resumed run's: IN_FLIGHT becomes
    /// UNKNOWN and is queried first; a msgId is resent only as the same bytes under the
    /// not-found rule.
    #[allow(clippy::too_many_arguments)]
    async fn drive_claimed<W, WF>(
        self: &Arc<Self>,
        run_id: i64,
        runners: &crate::engine::runners::RunnerSettings,
        width: usize,
        deadline: Instant,
        in_hand: Arc<AtomicU64>,
        first_error: Arc<std::sync::Mutex<Option<EngineError>>>,
        turn: W,
    ) -> Result<DriveResult, EngineError>
    where
        W: Fn(RowJob) -> WF + Clone + Send + 'static,
        WF: std::future::Future<Output = Next<RowJob>> + Send + 'static,
    {
        let renewal = crate::engine::runners::keep_leases(self.store.clone(), run_id, runners);
        let engine = Arc::clone(self);
        let runner = runners.clone();
        let feed_errors = Arc::clone(&first_error);
        let feed_claims = |mut feed: workers::Feed<RowJob>| async move {
            let fail = |e: StoreError| {
                tracing::error!(error = %e, "rows could not be claimed; the rest stay for the other runners or the next run");
                if let Ok(mut first) = feed_errors.lock() {
                    first.get_or_insert(e.into());
                }
            };
            loop {
                let claimed = engine
                    .store
                    .claim_rows(run_id, &runner.id, runner.lease_ms(), width as i64)
                    .await;
                match claimed {
                    Ok(rows) if !rows.is_empty() => {
                        tracing::debug!(runner = %runner.id, rows = rows.len(), "rows claimed");
                        for row in rows {
                            in_hand.fetch_add(1, Ordering::Relaxed);
                            if !feed.put(RowJob::new(row)).await {
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => return fail(e),
                }
                if engine.stopped() || engine.clock().now() >= deadline {
                    return;
                }
                if in_hand.load(Ordering::Relaxed) == 0 {
                    // Nothing of ours is still being driven: stay only while another runner
                    // holds rows (it may die; its rows are then ours to take over).
                    match engine.store.rows_held_by_others(run_id, &runner.id).await {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) => return fail(e),
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(runner.claim_poll()) => {}
                    () = engine.throttle.until_stopped() => return,
                }
            }
        };
        let wakes = self.take_wakes();
        workers::run(width, &self.throttle, wakes, feed_claims, turn).await;
        renewal.abort();
        if let Err(e) = self.store.release_leases(run_id, &runners.id).await {
            tracing::warn!(error = %e, "cannot give back this runner's leases; they expire on their own");
        }
        Ok(self.drive_result(&first_error))
    }

    /// After a drive: the run may be finished only when every row is final.
    pub async fn settle(&self, run_id: i64) -> Result<Settled, EngineError> {
        Ok(Settled {
            finish: self.store.open_rows(run_id).await? == 0,
            unchecked: 0,
        })
    }

    /// Asks the transition function about `event`, writes the change into `row` (in memory)
    /// and carries out its control action. An illegal transition is an error and leaves the
    /// row untouched.
    fn change(&self, row: &mut RowRecord, event: RowEvent<'_>) -> Result<Change, EngineError> {
        let view = RowView::of(row);
        let change = transition(&view, event, self.clock().now_ms(), &self.settings.resolve)?;
        change.apply_to(row);
        match &change.signal {
            Signal::None => {}
            Signal::Success => self.throttle.success(),
            Signal::Cut => self.throttle.cut(),
            Signal::Stop(reason) => self.throttle.stop(reason.clone()),
        }
        Ok(change)
    }

    /// `change`, then saves the row by compare-and-set from the state it had, with the event
    /// (`msg_id` and `raw`: the request and the answer it is about, kept as evidence).
    async fn commit(
        &self,
        row: &mut RowRecord,
        event: RowEvent<'_>,
        msg_id: Option<String>,
        raw: Option<Vec<u8>>,
    ) -> Result<Step, EngineError> {
        let old = row.state;
        let change = self.change(row, event)?;
        let event = Event {
            run_id: Some(row.run_id),
            row_id: Some(row.id),
            msg_id,
            kind: change.event,
            old_state: Some(old),
            new_state: Some(row.state),
            detail: change.detail,
            raw,
        };
        match self
            .store
            .save_row(row.clone(), old, change.sent, event)
            .await
        {
            Ok(()) => Ok(change.step),
            Err(StoreError::StateConflict { .. }) => {
                // Someone else (the notification receiver) changed the row since it was read:
                // the stored row is the truth; take it and go on from there.
                let line = row.line;
                *row = self.store.row(row.id).await?;
                tracing::debug!(line, state = %row.state, "row changed underneath; reloaded");
                Err(EngineError::RowMoved { line })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One turn of a row on a worker: everything the row can do now, until it is terminal,
    /// past the deadline, stopped (`Done`), or must wait for its next poll or a backoff
    /// (`At`, parked by `engine::workers` without holding the worker). Per row the steps are
    /// those of one task looping over the row with sleeps in between: the wait is the same, only
    /// who waits differs.
    ///
    /// Longer than ~100 lines on purpose: it is the row's life as one `match` over its state
    /// (allocate, send, query, give up), with the deadline, stop and max-resolve checks beside
    /// the step they guard; split, the order of those checks would be hidden.
    async fn row_turn(
        &self,
        mut job: RowJob,
        deadline: Instant,
    ) -> Result<Next<RowJob>, EngineError> {
        let row = &mut job.row;
        if row.state == RowState::InFlight {
            // Interrupted mid-request (crash or kill): the outcome is unknown (rule 2).
            moved_ok(
                self.commit(row, RowEvent::RecoveredInFlight, None, None)
                    .await,
            )?;
        }
        // A step whose save found the row changed underneath (`RowMoved`) has reloaded it:
        // go round again from the stored state (terminal → done).
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Err(EngineError::RowMoved { .. }) => continue,
                    other => other?,
                }
            };
        }
        loop {
            if self.stopped() || job.row.state.is_terminal() {
                return Ok(Next::Done);
            }
            match job.row.state {
                RowState::New => match step!(self.allocate(&mut job.row).await) {
                    Allocated::Yes | Allocated::Refused => job.backoff_try = 0,
                    Allocated::TryLater => {
                        if self.clock().now() >= deadline {
                            return Ok(Next::Done);
                        }
                        return Ok(self.backoff(job, deadline));
                    }
                },
                RowState::Unsent => {
                    if self.clock().now() >= deadline {
                        return Ok(Next::Done);
                    }
                    match step!(self.send(&mut job.row, deadline).await) {
                        Step::Continue => job.backoff_try = 0,
                        Step::Backoff => return Ok(self.backoff(job, deadline)),
                    }
                }
                RowState::InFlight => {
                    // Only reachable if a save failed mid-step; treat as unknown next time.
                    return Ok(Next::Done);
                }
                RowState::Pending | RowState::Unknown | RowState::FailHeld => {
                    // Back from a poll wait: ask now (the decision was made before the wait),
                    // unless the row moved meanwhile (a notification made it final): the
                    // stored row is the truth.
                    if std::mem::take(&mut job.query_now) {
                        let stored = self.store.row(job.row.id).await?;
                        let moved = stored.state != job.row.state;
                        job.row = stored;
                        if moved {
                            continue;
                        }
                    } else {
                        let now = self.clock().now_ms();
                        let row = &job.row;
                        let first_sent = row
                            .attempt
                            .as_ref()
                            .and_then(|a| a.first_sent_at)
                            .or(row.first_sent_at);
                        let too_old = first_sent.is_some_and(|first| {
                            now - first >= self.settings.resolve.max_resolve.as_millis() as i64
                        });
                        if too_old && job.queried_this_run {
                            let max_resolve = self.settings.resolve.max_resolve;
                            step!(
                                self.commit(
                                    &mut job.row,
                                    RowEvent::GaveUp { max_resolve },
                                    None,
                                    None
                                )
                                .await
                            );
                            return Ok(Next::Done);
                        }
                        // A row past the limit is asked at once (one last verified chance).
                        let due = if too_old {
                            now
                        } else {
                            self.next_query_at(row)
                        };
                        let wait = Duration::from_millis(due.saturating_sub(now).max(0) as u64);
                        let Some(at) = self.clock().now().checked_add(wait) else {
                            return Ok(Next::Done);
                        };
                        if at > deadline {
                            return Ok(Next::Done);
                        }
                        if !wait.is_zero() {
                            job.query_now = true;
                            return Ok(Next::At(at, job));
                        }
                    }
                    let asked = job.row.query_count;
                    let step = step!(self.query(&mut job.row, deadline).await);
                    // Counts only a query that actually went out (not one cut by a stop).
                    job.queried_this_run |= job.row.query_count != asked;
                    match step {
                        Step::Continue => job.backoff_try = 0,
                        Step::Backoff => return Ok(self.backoff(job, deadline)),
                    }
                }
                RowState::Success
                | RowState::Failed
                | RowState::Reversed
                | RowState::Rejected
                | RowState::NeedsAttention => return Ok(Next::Done),
            }
        }
    }

    /// The row waits out backoff number `backoff_try` (jittered, never past the deadline),
    /// parked; a stop meanwhile ends it.
    fn backoff(&self, mut job: RowJob, deadline: Instant) -> Next<RowJob> {
        let base = self.settings.resolve.backoff(job.backoff_try);
        let wait = self.throttle.backoff_wait(base, deadline);
        job.backoff_try += 1;
        Next::At(self.clock().now() + wait, job)
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
                    self.commit(row, RowEvent::RepayRefused { why }, None, None)
                        .await?;
                    return Ok(Allocated::Refused);
                }
            }
        } else {
            None
        };
        let seq = row.attempt.as_ref().map_or(1, |a| a.seq + 1);
        let msg_id = self
            .msg_ids
            .payout(row.run_id, row.line, seq)
            .map_err(|e| EngineError::Build {
                line: row.line,
                detail: e.to_string(),
            })?;
        let (op, bytes) = build_payout_bytes(
            row,
            msg_id.clone(),
            self.client.mch_id(),
            self.settings.notify_url.as_deref(),
        )?;
        let attempt = match self
            .store
            .allocate_attempt(row.clone(), msg_id.to_string(), op, bytes, repay_of.clone())
            .await?
        {
            store::Allocation::Allocated(a) => a,
            store::Allocation::Blocked { message } => {
                // Already written by the store (REJECTED, `reference_blocked`).
                tracing::warn!(line = row.line, "{message}");
                self.change(row, RowEvent::Blocked { message })?;
                return Ok(Allocated::Refused);
            }
        };
        tracing::debug!(line = row.line, msg_id = %attempt.msg_id, "attempt allocated");
        // Already written by the store (UNSENT, `attempt_allocated`).
        self.change(row, RowEvent::AttemptAllocated { attempt, repay_of })?;
        Ok(Allocated::Yes)
    }

    /// A 5.4 status query about payout msgId `original` for `row`, under a fresh msgId
    /// (`prefix`, `purpose`: recorded before it is used).
    async fn status_query(
        &self,
        row: &RowRecord,
        original: &str,
        prefix: char,
        purpose: &'static str,
    ) -> Result<(MsgId, DisburseQueryRequest), EngineError> {
        let original = MsgId::new(original.to_string()).map_err(|e| EngineError::Build {
            line: row.line,
            detail: e.to_string(),
        })?;
        let msg_id = self.msg_ids.fresh(prefix, purpose, Some(row.id)).await?;
        let req = DisburseQueryRequest {
            msg_id: msg_id.clone(),
            mch_id: self.client.mch_id().clone(),
            original_msg_id: original,
        };
        Ok((msg_id, req))
    }

    /// The live check before a re-payment: one verified query of every earlier msgId of the
    /// row's reference, just before the new msgId is allocated. Each must be verified FAIL,
    /// CLOSE, CANCEL or REVERSED, or a verified 404 for an attempt we recorded REJECTED or never
    /// sent. SUCCESS / PROCESSING / INIT anywhere contradicts the store; no verified answer
    /// means "try again later".
    ///
    /// Longer than ~100 lines on purpose: it is one money rule (may this reference be paid
    /// again?) read top to bottom — build each query, send it through the throttle, verify the
    /// echo, then one `match` over every answer kind — so a reviewer sees every way a re-payment
    /// is refused in one place.
    async fn confirm_earlier_attempts(&self, row: &RowRecord) -> Result<EarlierCheck, EngineError> {
        let earlier = self.store.attempts_of_reference(&row.reference).await?;
        let mut seen = Vec::new();
        for e in &earlier {
            let (msg_id, req) = self
                .status_query(row, &e.msg_id, 'C', "repay_check")
                .await?;
            let answer = {
                let _permit = self.throttle.slot().await?;
                self.throttle.pace().await;
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
                        }) && !hold_over(r.trx_date.as_deref(), self.settings.resolve.ab_hold, self.clock().now_ms()) =>
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
        let permit = tokio::select! {
            p = self.throttle.slot() => p?,
            () = self.throttle.until_stopped() => return Ok(Step::Continue),
        };
        if self.stopped() || self.clock().now() >= deadline {
            return Ok(Step::Continue);
        }
        // Sign while holding the slot, so signing load follows the in-flight bound (pure, no
        // state change: a signing failure means nothing was sent).
        let signed = match self.client.sign_bytes(attempt.request_bytes.clone()).await {
            Ok(s) => s,
            Err(e) => {
                row.message = Some(format!("not sent: {e}"));
                self.throttle.stop(StopReason::SigningFailed(Arc::new(e)));
                return Ok(Step::Continue);
            }
        };
        // Mark in flight before the request can leave: a crash from here on means "outcome
        // unknown", resolved by query (never a new msgId).
        let before = send_times(row);
        let msg_id = Some(attempt.msg_id.clone());
        self.commit(row, RowEvent::SendStarted, msg_id.clone(), None)
            .await?;
        // The rate permit is the last thing before the request leaves (a database write in
        // between would bunch requests up), so the pacing granted is the pacing Starpay sees.
        tokio::select! {
            () = self.throttle.pace() => {}
            () = self.throttle.until_stopped() => {}
        }
        if self.stopped() {
            self.commit(row, RowEvent::SendNotMade { before }, None, None)
                .await?;
            return Ok(Step::Continue);
        }
        tracing::debug!(line = row.line, msg_id = %attempt.msg_id, account = %mask_account(&row.account_no), amount = %row.amount, "sending payout");

        let result = if attempt.operation == OP_WALLET {
            self.client.send::<WalletDisburseRequest>(&signed).await
        } else {
            self.client.send::<InstapayDisburseRequest>(&signed).await
        };
        // The request is over: its slot is free for the next one while the answer is saved
        // (the in-flight bound is about requests at Starpay, not our own writes).
        drop(permit);
        let (event, raw) = match &result {
            Ok(answer) => (
                self.send_answer_event(row, answer),
                Some(answer.raw_body.to_vec()),
            ),
            Err(error) => (
                RowEvent::SendFailed { error, before },
                error.raw_body().map(|b| b.to_vec()),
            ),
        };
        self.commit(row, event, msg_id, raw).await
    }

    /// What a verified payout answer is: about this payout or not. The platform's signature
    /// does not cover our request: an answer that echoes another msgId, merchant or amount is
    /// not about this payout (outcome unknown → query).
    fn send_answer_event<'a>(
        &self,
        row: &RowRecord,
        answer: &'a Answer<DisburseResponse>,
    ) -> RowEvent<'a> {
        let r = &answer.response;
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
            return RowEvent::SendMismatch {
                code: &r.code,
                message: &r.message,
            };
        }
        RowEvent::SendAnswer(Verified {
            code: &r.code,
            message: &r.message,
            trx_state: r.trx_state.as_ref(),
            order_no: r.order_no.as_deref(),
            ref_no: None,
            error_code: r.error_code.as_deref(),
            error_message: r.error_message.as_deref(),
        })
    }

    /// One 5.4 query with a fresh msgId.
    async fn query(&self, row: &mut RowRecord, deadline: Instant) -> Result<Step, EngineError> {
        let Some(attempt) = row.attempt.clone() else {
            return Err(EngineError::Build {
                line: row.line,
                detail: "row to query has no attempt".into(),
            });
        };
        // The query's msgId comes from a reserved block (committed before any id of it is
        // handed out, so it is unique across crashes) and is recorded with the query's answer
        // (`store::save_row`): no store round trip before a query leaves. A query moves no
        // money; a crash before its answer is saved only leaves a reserved id unused.
        let original = MsgId::new(attempt.msg_id.clone()).map_err(|e| EngineError::Build {
            line: row.line,
            detail: e.to_string(),
        })?;
        let msg_id = self.msg_ids.block(QUERY_BLOCK_PREFIX).await?;
        let req = DisburseQueryRequest {
            msg_id: msg_id.clone(),
            mch_id: self.client.mch_id().clone(),
            original_msg_id: original,
        };
        let result = {
            let _permit = tokio::select! {
                p = self.throttle.slot() => p?,
                () = self.throttle.until_stopped() => return Ok(Step::Continue),
            };
            tokio::select! {
                () = self.throttle.pace() => {}
                () = self.throttle.until_stopped() => return Ok(Step::Continue),
            }
            if self.clock().now() >= deadline {
                return Ok(Step::Continue);
            }
            self.client.query_disbursement(&req).await
        };
        let (event, raw) = match &result {
            Ok(answer) => (
                self.query_answer_event(row, answer, msg_id.as_str()),
                Some(answer.raw_body.to_vec()),
            ),
            Err(error) => (
                RowEvent::QueryFailed { error },
                error.raw_body().map(|b| b.to_vec()),
            ),
        };
        let streak = row.not_found_count;
        let step = self
            .commit(row, event, Some(msg_id.to_string()), raw)
            .await?;
        if row.state == RowState::Unsent {
            tracing::warn!(
                line = row.line,
                "not found after {} queries over the window: resending the same msgId",
                streak + 1
            );
        }
        Ok(step)
    }

    /// What a verified query answer is: about this query and payout, with our amount or not.
    fn query_answer_event<'a>(
        &self,
        row: &RowRecord,
        answer: &'a Answer<QueryResponse>,
        query_msg_id: &str,
    ) -> RowEvent<'a> {
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
            return RowEvent::QueryMismatch;
        }
        let verified = Verified {
            code: &r.code,
            message: &r.message,
            trx_state: r.trx_state.as_ref(),
            order_no: r.order_no.as_deref(),
            ref_no: r.ref_no.as_deref(),
            error_code: r.error_code.as_deref(),
            error_message: r.error_message.as_deref(),
        };
        if let Some(theirs) = r.trx_amount.filter(|a| *a != row.amount) {
            // A verified answer about this very payout with another amount: a human must
            // look now (waiting out the resolve time would only hide it).
            tracing::error!(line = row.line, ours = %row.amount, theirs = %theirs, "Starpay has another amount for this payout");
            return RowEvent::QueryAmountMismatch {
                answer: verified,
                theirs,
            };
        }
        RowEvent::QueryAnswer(verified)
    }
}

/// Whether the AB0x hold of a FAIL dated `trx_date` (Starpay's time, with offset) is over at
/// `now_ms`. An unreadable date is never "over".
/// A `RowMoved` is not a failure: the row was reloaded from the store.
fn moved_ok(r: Result<Step, EngineError>) -> Result<(), EngineError> {
    match r {
        Ok(_) | Err(EngineError::RowMoved { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn hold_over(trx_date: Option<&str>, hold: Duration, now_ms: i64) -> bool {
    trx_date
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .is_some_and(|t| now_ms - t.timestamp_millis() >= hold.as_millis() as i64)
}

/// Prefix of payout status queries' msgIds: the block msgIds of `MsgIds::block` (shared with
/// reconciliation queries, one counter, so never repeated).
const QUERY_BLOCK_PREFIX: char = 'K';

/// Workers per request slot (`concurrency`). A row's turn is mostly store writes (msgId
/// allocation, IN_FLIGHT before the send, the answer after it) around one request, so extra
/// workers keep the request slots busy while other rows wait on the store; the throttle still
/// bounds requests in flight to `concurrency`. Measured once (10,000 rows, concurrency 32, each
/// row parked ≥ 30 s for its first poll, fresh `starpay-batch sim`, debug build, loaded 2-core
/// machine): one task per row 74–76 s and 122–129 MB peak RSS; one worker per slot 62 s,
/// 65 MB; four per slot 50 s, 65 MB.
const WORKERS_PER_SLOT: usize = 4;

/// Open rows read from the store per page by `drive` (the feed's queue holds a few more).
const ROW_PAGE: i64 = 512;

/// A row between its turns on a worker, with what one task per row kept in its locals.
pub struct RowJob {
    row: RowRecord,
    /// Backoffs in a row so far (the next backoff's number).
    backoff_try: u32,
    /// Rule: every unresolved row is queried at least once in each run before it can be given
    /// up as NEEDS_ATTENTION; a verified final answer wins whatever the row's age.
    queried_this_run: bool,
    /// Parked for its next poll: query as soon as it is back.
    query_now: bool,
}

impl RowJob {
    fn new(row: RowRecord) -> RowJob {
        RowJob {
            row,
            backoff_try: 0,
            queried_this_run: false,
            query_now: false,
        }
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
    let wallet = WalletDisburseRequest {
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
    if row.channel == "starpay" {
        let bytes = sign::canonical_bytes(&wallet, &[("service", WalletDisburseRequest::SERVICE)])
            .map_err(build_err)?;
        Ok((OP_WALLET, bytes))
    } else {
        let req = wallet.into_bank(row.bank.clone().unwrap_or_default());
        let bytes = sign::canonical_bytes(&req, &[("service", InstapayDisburseRequest::SERVICE)])
            .map_err(build_err)?;
        Ok((OP_INSTAPAY, bytes))
    }
}

/// The row driver under paused tokio time: the poll schedule, the not-found window, the
/// deadline and the backoff pass instantly, and `TokioClock` makes the wall clock follow.
///
/// What works, and why (paused time and real sockets): while a paused runtime waits for
/// something real (the simulator's answer over a socket, the store's writer thread) with
/// nothing else to run, tokio auto-advances time to the next timer, so a first attempt with
/// day-long client timeouts failed at once with "no answer within 86400s". What works:
/// - **the test task never lets the runtime go idle while the engine does real I/O**:
///   `hold_until` yields in a loop until what the test waits for is in the simulator's log, so
///   paused time stands still during every request and store write;
/// - **the test moves time itself** with `tokio::time::advance`, to just before and exactly at
///   each due time, so "not early" and "on time" are both checked;
/// - the simulator runs on **its own thread and real-time runtime** (`start_sim`), so its 50 ms
///   ticker is not a timer of the paused runtime; its clock is real time, so it settles only
///   when the test calls `SimHandle::advance`;
/// - the client still gets day-long timeouts (no timer of its own can be the next one), and
///   the rate limiter (governor, its own real clock) a rate that never waits.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::sim::{FaultConfig, RequestRecord, SimConfig, SimHandle, Simulator};
    use crate::starpay::client::{ClientConfig, Environment};
    use crate::starpay::sign::{known, PrivateKey, PublicKey};
    use crate::store::{NewRow, NewRun, RawFields};

    const DAY: Duration = Duration::from_secs(86_400);
    /// The tests' wall clock starts here (2027-01-15), whatever the real date.
    const T0: i64 = 1_800_000_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Polls at +30 s, +2 min, +5 min after a send, then every 10 min; three 404s over 10 min.
    fn resolve(deadline: Duration) -> ResolveSettings {
        ResolveSettings {
            poll_schedule: vec![secs(30), secs(120), secs(300)],
            poll_interval: secs(600),
            not_found_queries: 3,
            not_found_window: secs(600),
            ab_hold: secs(3600),
            deadline,
            max_resolve: secs(72 * 3600),
            stale_after: secs(1800),
            backoff_base: secs(1),
            backoff_max: secs(60),
        }
    }

    /// Lets the engine work on real sockets and the store's thread while paused time stands
    /// still (this task keeps the runtime busy, so tokio never auto-advances), until `cond`.
    async fn hold_until(what: &str, mut cond: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for: {what}"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Same, for `real` wall time: to see that nothing happens.
    async fn hold_for(real: Duration) {
        let end = std::time::Instant::now() + real;
        while std::time::Instant::now() < end {
            tokio::task::yield_now().await;
        }
    }

    /// The simulator on its own thread and real-time runtime (see the module doc).
    fn start_sim(config: SimConfig) -> SimHandle {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("simulator runtime");
            rt.block_on(async move {
                let sim = Simulator::start(config).await.expect("simulator starts");
                let _ = tx.send(sim);
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("simulator handle")
    }

    fn sim_config() -> SimConfig {
        SimConfig {
            seed: 3,
            // Settles an hour (simulated) after acceptance: only when the test advances it.
            settle_delay_ms: 3_600_000,
            settle_jitter_ms: 0,
            rate_limit_per_sec: 0.0,
            ..SimConfig::default()
        }
    }

    type Drive = tokio::task::JoinHandle<Result<DriveResult, EngineError>>;

    struct Harness {
        sim: SimHandle,
        engine: Arc<PayoutEngine>,
        store: Store,
        run_id: i64,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        async fn new(sim: SimConfig, resolve: ResolveSettings, account: &str) -> Harness {
            let sim = start_sim(sim);
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(&dir.path().join("engine.db")).expect("store");
            let mut cfg = ClientConfig::new(
                Environment::parse(&sim.base_url()).expect("url"),
                MchId::new(known::DEMO_MCH_ID).expect("mch id"),
            );
            cfg.request_timeout = DAY;
            cfg.connect_timeout = DAY;
            let signer = PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo").expect("key");
            let platform =
                PublicKey::from_text(known::SIM_PLATFORM_PUBLIC_PEM, "sim").expect("key");
            let client = Client::new(cfg, Arc::new(signer), vec![platform]).expect("client");
            let settings = EngineSettings {
                concurrency: 4,
                requests_per_second: 10_000,
                burst: 10_000,
                resolve,
                notify_url: None,
                runners: None,
            };
            let engine = PayoutEngine::new(client, store.clone(), settings, Timing::tokio(T0, 7))
                .await
                .expect("engine");
            let row = NewRow {
                line: 2,
                reference: "REF-1".into(),
                channel: "instapay",
                account_no: account.into(),
                account_name: "Juan".into(),
                middle_name: "Santos".into(),
                last_name: "Dela Cruz".into(),
                bank: Some("GCash".into()),
                amount: Centavos::new(10_000),
                note: None,
                state: RowState::New,
                message: None,
                repay: false,
                raw: RawFields::default(),
            };
            let run = NewRun {
                job: "engine-test".into(),
                kind: crate::domain::RunKind::Payout,
                input: "engine-test.csv".into(),
                sha256: "0".repeat(64),
            };
            let run_id = store.create_payout_run(run, vec![row]).await.expect("run");
            Harness {
                sim,
                engine,
                store,
                run_id,
                _dir: dir,
            }
        }

        fn drive(&self) -> Drive {
            let engine = Arc::clone(&self.engine);
            let run_id = self.run_id;
            tokio::spawn(async move { engine.drive(run_id).await })
        }

        /// Waits (paused time still) for the drive to end.
        async fn finish(&self, drive: Drive) -> DriveResult {
            hold_until("the drive ends", || drive.is_finished()).await;
            drive.await.expect("join").expect("drive")
        }

        /// Waits for the drive to end complete (not stopped), then reads the row.
        async fn finish_complete(&self, drive: Drive) -> RowRecord {
            let result = self.finish(drive).await;
            assert!(result.is_complete(), "{result:?}");
            self.row().await
        }

        /// The row as stored. The read runs as its own task while this one holds the runtime
        /// busy: awaiting the store directly would let paused time jump ahead meanwhile.
        async fn row(&self) -> RowRecord {
            let (store, run_id) = (self.store.clone(), self.run_id);
            let read = tokio::spawn(async move { store.rows_of_run(run_id, false).await });
            hold_until("the row is read", || read.is_finished()).await;
            let rows = read.await.expect("join").expect("rows");
            rows.into_iter().next().expect("one row")
        }

        /// Holds paused time still until the stored row satisfies `cond`. Needed before moving
        /// time: a check is stamped when its answer is saved, so moving time while an answer
        /// is still on its way would make the check look later than it was.
        async fn row_until(&self, what: &str, cond: impl Fn(&RowRecord) -> bool) -> RowRecord {
            let end = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let row = self.row().await;
                if cond(&row) {
                    return row;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "timed out waiting for: {what}: {row:?}"
                );
            }
        }

        fn sends(&self) -> Vec<RequestRecord> {
            self.log("/v1/disburse")
        }

        fn queries(&self) -> Vec<RequestRecord> {
            self.log("/v1/disburse/query")
        }

        fn log(&self, path_end: &str) -> Vec<RequestRecord> {
            let log = self.sim.requests().into_iter();
            log.filter(|r| r.path.ends_with(path_end)).collect()
        }

        /// Starts a drive, waits for its one send to be accepted (PENDING), then steps through
        /// the first three polls of the schedule (+30 s, +2 min, +5 min).
        async fn drive_through_first_polls(&self) -> (tokio::time::Instant, Drive) {
            let start = tokio::time::Instant::now();
            let drive = self.drive();
            hold_until("the send", || self.sends().len() == 1).await;
            self.row_until("accepted", |r| r.state == RowState::Pending)
                .await;
            for (n, at) in [30, 120, 300].into_iter().enumerate() {
                self.query_due(start, secs(at), n + 1).await;
            }
            (start, drive)
        }

        /// Moves paused time to `at` (since the test started) in two steps: to just before it,
        /// where no new query may have gone out, then to it, where query number `n` must.
        async fn query_due(&self, start: tokio::time::Instant, at: Duration, n: usize) {
            let early = at - Duration::from_millis(1);
            tokio::time::advance(
                (start + early).saturating_duration_since(tokio::time::Instant::now()),
            )
            .await;
            hold_for(Duration::from_millis(50)).await;
            assert_eq!(
                self.queries().len(),
                n - 1,
                "query {n} went out before {at:?}"
            );
            tokio::time::advance(Duration::from_millis(1)).await;
            hold_until(&format!("query {n} at {at:?}"), || {
                self.queries().len() == n
            })
            .await;
            let saved = |r: &RowRecord| r.query_count == n as i64 || r.state.is_terminal();
            self.row_until(&format!("query {n} saved"), saved).await;
        }
    }

    /// A row that stays PROCESSING is queried exactly on the schedule (+30 s, +2 min, +5 min,
    /// then every 10 min), never before; the deadline (1000 s) leaves it PENDING; once Starpay
    /// settles, the resumed drive's next poll resolves it SUCCESS without a second send.
    /// Paused: 25 minutes of polling in milliseconds.
    #[tokio::test(start_paused = true)]
    async fn poll_schedule_deadline_then_resolved() {
        let h = Harness::new(sim_config(), resolve(secs(1000)), "000001123").await;
        let (start, drive) = h.drive_through_first_polls().await;
        h.query_due(start, secs(900), 4).await;
        // The next poll (1500 s) is past the deadline: the drive ends now, the row PENDING.
        let row = h.finish_complete(drive).await;
        assert_eq!(row.state, RowState::Pending, "{row:?}");
        assert_eq!(row.query_count, 4, "{row:?}");
        assert_eq!(row.last_sent_at, Some(T0), "sent at the start (paused)");
        assert_eq!(row.last_checked_at, Some(T0 + 900_000), "{row:?}");

        // Starpay settles; the next drive polls 10 min after the last check, and resolves.
        h.sim.advance(3600);
        let drive = h.drive();
        h.query_due(start, secs(1500), 5).await;
        let row = h.finish_complete(drive).await;
        assert_eq!(row.state, RowState::Success, "{row:?}");
        assert_eq!(row.query_count, 5, "{row:?}");
        assert_eq!(h.sends().len(), 1, "never sent again");
    }

    /// The not-found rule: three 404s inside the 10-minute window (at +30 s, +2 min, +5 min)
    /// resend nothing; the fourth (+15 min, the window passed) resends the *same* msgId with
    /// the *same* bytes.
    #[tokio::test(start_paused = true)]
    async fn not_found_resends_same_msg_id_after_window() {
        let mut sim = sim_config();
        sim.faults = FaultConfig {
            query_lag: 1.0,
            query_lag_secs: 1_000_000,
            ..FaultConfig::default()
        };
        let h = Harness::new(sim, resolve(secs(3000)), "000001123").await;
        let (start, drive) = h.drive_through_first_polls().await;
        hold_for(Duration::from_millis(100)).await;
        assert_eq!(
            h.sends().len(),
            1,
            "three 404s inside the window: no resend"
        );
        assert!(h.queries().iter().all(|q| q.code.as_deref() == Some("404")));
        h.query_due(start, secs(900), 4).await;
        hold_until("the resend", || h.sends().len() == 2).await;
        let sends = h.sends();
        assert_eq!(sends[0].msg_id, sends[1].msg_id, "same msgId");
        assert_eq!(
            sends[0].request_sha256, sends[1].request_sha256,
            "same bytes"
        );
        h.engine.stop(StopReason::Interrupted);
        let result = h.finish(drive).await;
        assert!(
            matches!(result.stopped, Some(StopReason::Interrupted)),
            "{result:?}"
        );
        let row = h.row().await;
        assert_eq!(row.first_sent_at, Some(T0), "{row:?}");
        assert_eq!(row.last_sent_at, Some(T0 + 900_000), "{row:?}");
        assert_eq!(row.attempt.map(|a| a.seq), Some(1), "no new attempt");
    }

    /// A stop during a backoff wait ends the wait at once: a 406 puts the row in a backoff of
    /// half an hour to an hour (seeded jitter); a stop a minute later ends the drive then,
    /// with the row UNSENT and its msgId sent once (without the stop it would be sent again
    /// when the backoff ends).
    #[tokio::test(start_paused = true)]
    async fn backoff_honours_stop() {
        let mut resolve = resolve(secs(10 * 3600));
        resolve.backoff_base = secs(3600);
        resolve.backoff_max = secs(3600);
        // `0900`: 406 the first time the msgId is seen.
        let h = Harness::new(sim_config(), resolve, "000000900").await;
        let start = tokio::time::Instant::now();
        let drive = h.drive();
        hold_until("the send", || h.sends().len() == 1).await;
        let backing_off = |r: &RowRecord| r.sends == 1 && r.state == RowState::Unsent;
        h.row_until("the 406 saved", backing_off).await;
        hold_for(Duration::from_millis(50)).await;
        tokio::time::advance(secs(60)).await;
        h.engine.stop(StopReason::Interrupted);
        let result = h.finish(drive).await;
        assert!(
            matches!(result.stopped, Some(StopReason::Interrupted)),
            "{result:?}"
        );
        assert_eq!(
            start.elapsed(),
            secs(60),
            "ended by the stop, not the backoff"
        );
        let sends = h.sends();
        assert_eq!(sends.len(), 1, "{sends:?}");
        assert_eq!(sends[0].code.as_deref(), Some("406"));
        let row = h.row().await;
        assert_eq!(row.state, RowState::Unsent, "{row:?}");
    }

    /// Applies a verified SUCCESS notification for the row's current attempt through the store
    /// (as the receiver does), off this task (see `Harness::row`).
    async fn notify_success(h: &Harness, row: &RowRecord) {
        use crate::starpay::model::Notification;
        use crate::store::notifications::{NotificationFields, NotifyOutcome, Received};
        let msg_id = row.attempt.as_ref().expect("attempt").msg_id.clone();
        let n = Notification {
            code: crate::starpay::codes::Code::new("200"),
            message: "success".into(),
            trx_date: "2027-01-15T10:00:00+08:00".into(),
            trx_amount: row.amount,
            trx_state: TrxState::Success,
            original_msg_id: msg_id.clone(),
            order_no: "O1".into(),
            mch_id: known::DEMO_MCH_ID.into(),
            device_info: None,
            ref_no: Some("R1".into()),
            error_code: None,
            error_message: None,
        };
        let received = Received {
            raw: b"{}".to_vec(),
            verified: true,
            verify_form: "raw_bytes".into(),
            fields: Some(NotificationFields {
                original_msg_id: msg_id,
                trx_state: "SUCCESS".into(),
                amount: row.amount,
                mch_id: known::DEMO_MCH_ID.into(),
                ..NotificationFields::default()
            }),
        };
        let decide = crate::receiver::decide(&n, &h.engine.settings.resolve, T0);
        let store = h.store.clone();
        let apply = tokio::spawn(async move { store.apply_notification(received, decide).await });
        hold_until("the notification is stored", || apply.is_finished()).await;
        let (outcome, _) = apply.await.expect("join").expect("stored");
        assert_eq!(outcome, NotifyOutcome::Applied);
    }

    /// A row made final underneath the engine (the receiver applied a notification while the
    /// row was parked for its first poll): when the poll is due the engine reloads the row,
    /// finds it SUCCESS and sends no query; the drive ends.
    #[tokio::test(start_paused = true)]
    async fn notified_while_parked_needs_no_query() {
        let h = Harness::new(sim_config(), resolve(secs(1000)), "000001123").await;
        let drive = h.drive();
        hold_until("the send", || h.sends().len() == 1).await;
        let row = h
            .row_until("accepted", |r| r.state == RowState::Pending)
            .await;
        notify_success(&h, &row).await;
        tokio::time::advance(secs(30)).await;
        let result = h.finish(drive).await;
        assert!(result.is_complete(), "{result:?}");
        assert_eq!(h.queries().len(), 0, "no query for a notified row");
        let row = h.row().await;
        assert_eq!(row.state, RowState::Success, "{row:?}");
        assert_eq!(row.query_count, 0, "{row:?}");
    }

    /// The engine saves a change from a stale copy of the row (the receiver changed it since):
    /// the compare-and-set fails, the engine reloads the stored row (`RowMoved`) and nothing of
    /// its stale change is written.
    #[tokio::test(start_paused = true)]
    async fn state_conflict_reloads_the_row() {
        let h = Harness::new(sim_config(), resolve(secs(1000)), "000001123").await;
        let drive = h.drive();
        hold_until("the send", || h.sends().len() == 1).await;
        let mut stale = h
            .row_until("accepted", |r| r.state == RowState::Pending)
            .await;
        h.engine.stop(StopReason::Interrupted);
        h.finish(drive).await;
        notify_success(&h, &stale).await;
        let error = crate::starpay::client::ClientError::Timeout(Duration::from_secs(1));
        let engine = Arc::clone(&h.engine);
        let saved = tokio::spawn(async move {
            let r = engine
                .commit(
                    &mut stale,
                    RowEvent::QueryFailed { error: &error },
                    None,
                    None,
                )
                .await;
            (r, stale)
        });
        hold_until("the save", || saved.is_finished()).await;
        let (result, reloaded) = saved.await.expect("join");
        assert!(
            matches!(result, Err(EngineError::RowMoved { .. })),
            "{result:?}"
        );
        assert_eq!(reloaded.state, RowState::Success, "{reloaded:?}");
        let stored = h.row().await;
        assert_eq!(stored.state, RowState::Success);
        assert_eq!(stored.query_count, 0, "the stale query was not written");
    }
}
