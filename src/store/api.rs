//! The store's API: one named operation per thing the engines, reports and commands need.
//!
//! Callers never see a `rusqlite::Connection`, never compose a transaction and never pass a
//! closure over one: each method below is one unit of work on the writer thread (one
//! transaction where it writes more than one statement). This list is the seam a second
//! backend implements (issue 14): `pg/ops.rs` has the same operations on PostgreSQL and
//! `dispatch.rs` forwards each public `Store` operation to one of them. The SQL functions in
//! `mod.rs` and `recon.rs` are the SQLite backend's private detail.

use crate::domain::{Centavos, RowState};

use super::recon::{self as sql, NewReconRow, ReconRecord, ReconResult, ReconTodo};
use super::{
    Allocation, EarlierAttempt, Event, NewRow, ReferenceUse, RowRecord, RunRecord, Sqlite,
    StoreError,
};

/// Rows inserted per statement batch while a file is loaded into a run.
const INSERT_BATCH: usize = 5_000;

/// What identifies a new run: the job, its kind, the input and the input's SHA-256 (or, for a
/// reconcile pass, its key).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub job: String,
    pub kind: crate::domain::RunKind,
    pub input: String,
    pub sha256: String,
}

/// A row a file loads into a run through a [`RowSink`]: a payout row or a reconciliation row.
pub trait SinkRow: Send + Sized + 'static {
    /// Inserts one batch inside the SQLite writer thread's open transaction.
    fn insert_sqlite(
        tx: &rusqlite::Connection,
        run_id: i64,
        rows: &[Self],
    ) -> Result<(), StoreError>;
}

impl SinkRow for NewReconRow {
    fn insert_sqlite(
        tx: &rusqlite::Connection,
        run_id: i64,
        rows: &[Self],
    ) -> Result<(), StoreError> {
        sql::insert_recon_rows_tx(tx, run_id, rows)
    }
}

impl SinkRow for NewRow {
    fn insert_sqlite(
        tx: &rusqlite::Connection,
        run_id: i64,
        rows: &[Self],
    ) -> Result<(), StoreError> {
        super::insert_payout_rows_tx(tx, run_id, rows)
    }
}

/// Where a file's rows go while it is loaded (inside the run's transaction), in batches: the
/// file is streamed, never held whole.
pub struct RowSink<'a, R> {
    target: SinkTarget<'a, R>,
    batch: Vec<R>,
}

/// A reconciliation file's rows on their way into the run.
pub type ReconRowSink<'a> = RowSink<'a, NewReconRow>;
/// A payout file's rows (valid and REJECTED, in line order) on their way into the run.
pub type PayoutRowSink<'a> = RowSink<'a, NewRow>;

enum SinkTarget<'a, R> {
    /// Inserted at once, inside the writer thread's open transaction.
    Sqlite {
        tx: &'a rusqlite::Connection,
        run_id: i64,
    },
    /// Handed in batches to the async task that holds the PostgreSQL transaction (bounded).
    Postgres(tokio::sync::mpsc::Sender<Vec<R>>),
}

impl<R: SinkRow> RowSink<'_, R> {
    pub fn push(&mut self, row: R) -> Result<(), StoreError> {
        self.batch.push(row);
        if self.batch.len() >= INSERT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        match &self.target {
            SinkTarget::Sqlite { tx, run_id } => {
                R::insert_sqlite(tx, *run_id, &self.batch)?;
                self.batch.clear();
            }
            SinkTarget::Postgres(to) => {
                if !self.batch.is_empty() {
                    // Called on a blocking thread (see `pg::ops::stream_rows`).
                    to.blocking_send(std::mem::take(&mut self.batch))
                        .map_err(|_| StoreError::WriterGone)?;
                }
            }
        }
        Ok(())
    }
}

impl<R: SinkRow> RowSink<'static, R> {
    /// The PostgreSQL backend's sink: batches go to `to`.
    pub(crate) fn to_channel(to: tokio::sync::mpsc::Sender<Vec<R>>) -> Self {
        RowSink {
            target: SinkTarget::Postgres(to),
            batch: Vec::with_capacity(INSERT_BATCH),
        }
    }
}

impl<'a, R: SinkRow> RowSink<'a, R> {
    /// The SQLite backend's sink: batches go into `tx`, the run's open transaction.
    fn into_sqlite(tx: &'a rusqlite::Connection, run_id: i64) -> Self {
        RowSink {
            target: SinkTarget::Sqlite { tx, run_id },
            batch: Vec::with_capacity(INSERT_BATCH),
        }
    }

    /// Runs `fill` into this sink; its error (the file is invalid or changed) leaves the
    /// caller to roll back, a store error too.
    pub(crate) fn fill_with<E, F>(mut self, fill: F) -> Result<Result<(), E>, StoreError>
    where
        F: FnOnce(&mut Self) -> Result<Result<(), E>, StoreError>,
    {
        if let Err(e) = fill(&mut self)? {
            return Ok(Err(e));
        }
        self.flush()?;
        Ok(Ok(()))
    }
}

impl Sqlite {
    // ------------------------------------------------------------------ runs

    /// This database's id (part of every msgId it issues).
    pub async fn db_id(&self) -> Result<String, StoreError> {
        self.call(|c| super::db_id(c)).await
    }

    /// Runs of `job`, oldest first; with `sha256`, only runs of that input (or reconcile key).
    pub async fn runs_for(
        &self,
        job: &str,
        sha256: Option<&str>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (job, sha) = (job.to_string(), sha256.map(str::to_string));
        self.call(move |c| super::runs_for(c, &job, sha.as_deref()))
            .await
    }

    pub async fn run_by_id(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.call(move |c| super::run_by_id(c, run_id)).await
    }

    /// Creates a payout run and inserts its rows in one transaction, streaming: `fill` pushes
    /// every row (valid and REJECTED, in line order) into the sink. When `fill` fails (the
    /// file changed since it was validated), the transaction is rolled back and its error
    /// returned inside `Ok`: no run exists half-created.
    pub async fn create_payout_run_streamed<E, F>(
        &self,
        run: NewRun,
        fill: F,
    ) -> Result<Result<i64, E>, StoreError>
    where
        E: Send + 'static,
        F: FnOnce(&mut PayoutRowSink<'_>) -> Result<Result<(), E>, StoreError> + Send + 'static,
    {
        self.call(move |c| {
            let tx = c.savepoint()?;
            let run_id = super::create_payout_run_tx(&tx, &run)?;
            if let Err(e) = RowSink::into_sqlite(&tx, run_id).fill_with(fill)? {
                return Ok(Err(e));
            }
            super::seal_payout_run_tx(&tx, run_id, &run)?;
            tx.commit()?;
            Ok(Ok(run_id))
        })
        .await
    }

    /// Marks a run FINISHED with its event (both or neither).
    pub async fn finish_run(&self, run_id: i64) -> Result<(), StoreError> {
        self.call(move |c| super::finish_run(c, run_id)).await
    }

    /// Reopens a finished run with a `run_reopened` event saying why.
    pub async fn reopen_run(&self, run_id: i64, why: String) -> Result<(), StoreError> {
        self.call(move |c| super::reopen_run(c, run_id, &why)).await
    }

    /// Records how a command that drove the run ended (its exit code), with its event.
    pub async fn record_exit(&self, run_id: i64, code: i32) -> Result<(), StoreError> {
        self.call(move |c| super::record_exit(c, run_id, code))
            .await
    }

    /// Remembers the bank list (5.1) Starpay gave, for dry runs.
    pub async fn save_bank_list(&self, names: Vec<String>) -> Result<(), StoreError> {
        self.call(move |c| super::save_bank_list(c, &names)).await
    }

    /// The last bank list Starpay gave, and when (UTC ms).
    pub async fn last_bank_list(&self) -> Result<Option<(Vec<String>, i64)>, StoreError> {
        self.call(|c| super::last_bank_list(c)).await
    }

    // ------------------------------------------------------------------ approvals

    /// Appends an entry to the approval log (staged, approved, revoked) with its event, in one
    /// transaction; entries are never changed or deleted.
    pub async fn record_approval(
        &self,
        entry: super::approvals::NewApprovalEntry,
    ) -> Result<super::approvals::ApprovalEntry, StoreError> {
        self.call(move |c| super::approvals::append(c, &entry))
            .await
    }

    /// The approval log of `job`, oldest first.
    pub async fn approval_log(
        &self,
        job: &str,
    ) -> Result<Vec<super::approvals::ApprovalEntry>, StoreError> {
        let job = job.to_string();
        self.call(move |c| super::approvals::log_of_job(c, &job))
            .await
    }

    /// Records the balance read at a payout run's pre-flight (for its HTML summary).
    pub async fn record_preflight_balance(
        &self,
        run_id: i64,
        balance: Centavos,
    ) -> Result<(), StoreError> {
        self.call(move |c| super::approvals::record_preflight_balance(c, run_id, balance))
            .await
    }

    /// The balance read at a payout run's pre-flight and when, if recorded.
    pub async fn preflight_balance(
        &self,
        run_id: i64,
    ) -> Result<Option<(Centavos, i64)>, StoreError> {
        self.call(move |c| super::approvals::preflight_balance(c, run_id))
            .await
    }

    // ------------------------------------------------------------------ payout rows

    /// Rows per state group and re-sends of a payout run (aggregates only: cheap while it runs).
    pub async fn payout_counts(&self, run_id: i64) -> Result<super::PayoutCounts, StoreError> {
        self.call(move |c| super::payout_counts(c, run_id)).await
    }

    /// Rows of a run in input order; `only_open` keeps the rows a run still has work for.
    pub async fn rows_of_run(
        &self,
        run_id: i64,
        only_open: bool,
    ) -> Result<Vec<RowRecord>, StoreError> {
        self.call(move |c| super::rows_of_run(c, run_id, only_open))
            .await
    }

    /// At most `limit` rows of a run after line `after_line`, in input order (`only_open`: the
    /// rows a run still has work for). For readers that must not hold a whole run.
    pub async fn rows_page(
        &self,
        run_id: i64,
        only_open: bool,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<RowRecord>, StoreError> {
        self.call(move |c| super::rows_page(c, run_id, only_open, after_line, limit))
            .await
    }

    /// How many rows of a run are not terminal yet.
    pub async fn open_rows(&self, run_id: i64) -> Result<i64, StoreError> {
        self.call(move |c| super::open_rows(c, run_id)).await
    }

    /// Every earlier use of `reference` in this database (except row `except_row`).
    pub async fn reference_uses(
        &self,
        reference: &str,
        except_row: Option<i64>,
    ) -> Result<Vec<ReferenceUse>, StoreError> {
        let reference = reference.to_string();
        self.call(move |c| super::reference_uses(c, &reference, except_row))
            .await
    }

    /// Every row, attempt and event of `reference`, across runs.
    pub async fn reference_history(
        &self,
        reference: &str,
    ) -> Result<super::ReferenceHistory, StoreError> {
        let reference = reference.to_string();
        self.call(move |c| super::reference_history(c, &reference))
            .await
    }

    /// Every attempt (msgId) ever allocated for `reference`.
    pub async fn attempts_of_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<EarlierAttempt>, StoreError> {
        let reference = reference.to_string();
        self.call(move |c| super::attempts_of_reference(c, &reference))
            .await
    }

    /// Allocates `msg_id` for `row` with the exact request bytes, blocking the reference in the
    /// same transaction: durable before the request can leave.
    pub async fn allocate_attempt(
        &self,
        row: RowRecord,
        msg_id: String,
        operation: &'static str,
        request_bytes: Vec<u8>,
        repay_of: Option<String>,
    ) -> Result<Allocation, StoreError> {
        self.call(move |c| {
            super::allocate_attempt(
                c,
                &row,
                &msg_id,
                operation,
                &request_bytes,
                repay_of.as_deref(),
            )
        })
        .await
    }

    /// Saves a row's change by compare-and-set from `expected`, with its event.
    pub async fn save_row(
        &self,
        row: RowRecord,
        expected: RowState,
        sent: bool,
        event: Event,
    ) -> Result<(), StoreError> {
        self.call(move |c| super::save_row(c, &row, expected, sent, &event))
            .await
    }

    /// A fresh msgId `<prefix><db id><n>` for `purpose`, recorded before it is returned.
    pub async fn new_msg_id(
        &self,
        prefix: char,
        db_id: &str,
        purpose: &'static str,
        row_id: Option<i64>,
    ) -> Result<String, StoreError> {
        let db = db_id.to_string();
        self.call(move |c| {
            let n = super::next_counter(c, purpose)?;
            let id = format!("{prefix}{db}{n}");
            super::record_msg_id(c, &id, purpose, row_id)?;
            Ok(id)
        })
        .await
    }

    /// Reserves `n` values of a named counter; returns the new value (the range is
    /// `new - n .. new`).
    pub async fn reserve_counter_block(&self, name: &str, n: i64) -> Result<i64, StoreError> {
        let name = name.to_string();
        self.call(move |c| super::advance_counter(c, &name, n))
            .await
    }

    /// One row as stored now (to pick up a change made underneath a running engine, e.g. by
    /// the notification receiver).
    pub async fn row(&self, row_id: i64) -> Result<RowRecord, StoreError> {
        self.call(move |c| super::row_by_id(c, row_id)).await
    }

    // ------------------------------------------------------------------ notifications

    /// Stores a refused notification (unverified, wrong mchId, bad layout) with its event.
    pub async fn record_refused_notification(
        &self,
        n: super::notifications::Received,
        why: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| super::notifications::record_refused(c, &n, &why))
            .await
    }

    /// Stores a verified notification and applies it in one transaction: dedupe on
    /// (originalMsgId, trxState), match the payout attempt by msgId, check it echoes the row's
    /// amount and current attempt, then `decide` (the transition) and the row's save.
    pub async fn apply_notification<F>(
        &self,
        n: super::notifications::Received,
        decide: F,
    ) -> Result<(super::notifications::NotifyOutcome, Option<i64>), StoreError>
    where
        F: FnOnce(&RowRecord) -> super::notifications::Decision + Send + 'static,
    {
        self.call(move |c| super::notifications::apply(c, &n, decide))
            .await
    }

    /// Notifications per outcome.
    pub async fn notification_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.call(|c| super::notifications::counts(c)).await
    }

    /// The last `limit` notifications needing a look (unmatched, conflict, refused).
    pub async fn notifications_to_look_at(
        &self,
        limit: i64,
    ) -> Result<Vec<super::notifications::StoredNotification>, StoreError> {
        self.call(move |c| {
            super::notifications::with_outcomes(c, &["unmatched", "conflict", "refused"], limit)
        })
        .await
    }

    /// Notifications about `reference` (its attempts' msgIds), or naming it as their msgId.
    pub async fn notifications_about(
        &self,
        reference: &str,
    ) -> Result<Vec<super::notifications::StoredNotification>, StoreError> {
        let reference = reference.to_string();
        self.call(move |c| super::notifications::about(c, &reference))
            .await
    }

    // ------------------------------------------------------------------ reconciliation

    /// Creates a reconciliation run and loads its rows in one transaction, streaming: `fill`
    /// pushes every row into the sink. When `fill` fails (the file is invalid or changed), the
    /// transaction is rolled back and its error returned inside `Ok`: no half-loaded run.
    pub async fn load_recon_run<E, F>(
        &self,
        run: NewRun,
        opening_balance: Centavos,
        fill: F,
    ) -> Result<Result<i64, E>, StoreError>
    where
        E: Send + 'static,
        F: FnOnce(&mut ReconRowSink<'_>) -> Result<Result<(), E>, StoreError> + Send + 'static,
    {
        self.call(move |c| {
            let tx = c.savepoint()?;
            let run_id =
                sql::create_recon_run(&tx, &run.job, run.kind.as_str(), &run.input, &run.sha256)?;
            if let Err(e) = RowSink::into_sqlite(&tx, run_id).fill_with(fill)? {
                return Ok(Err(e));
            }
            sql::seal_recon_run_tx(&tx, run_id)?;
            sql::set_balance(&tx, run_id, true, opening_balance)?;
            tx.commit()?;
            Ok(Ok(run_id))
        })
        .await
    }

    /// A reconcile pass over payout run `payout_run`: the run, its rows (one per payout row)
    /// and its opening balance, in one transaction.
    pub async fn create_reconcile_pass(
        &self,
        run: NewRun,
        payout_run: i64,
        opening_balance: Centavos,
    ) -> Result<i64, StoreError> {
        self.call(move |c| {
            let tx = c.savepoint()?;
            let id =
                sql::create_recon_run(&tx, &run.job, run.kind.as_str(), &run.input, &run.sha256)?;
            sql::fill_from_payout_run_tx(&tx, id, payout_run)?;
            sql::set_balance(&tx, id, true, opening_balance)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// Up to `limit` rows still to check, after row id `after_id`.
    pub async fn recon_todo_page(
        &self,
        run_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ReconTodo>, StoreError> {
        self.call(move |c| sql::recon_todo_page(c, run_id, after_id, limit))
            .await
    }

    /// Saves a batch of checked rows (and the payout rows they move) in one transaction.
    pub async fn save_recon_results(
        &self,
        run_id: i64,
        results: Vec<ReconResult>,
    ) -> Result<(), StoreError> {
        self.call(move |c| sql::save_recon_results(c, run_id, &results))
            .await
    }

    /// Marks lines that claim a Starpay order another line already matched; returns how many.
    pub async fn mark_duplicate_matches(&self, run_id: i64) -> Result<usize, StoreError> {
        self.call(move |c| sql::mark_duplicate_matches(c, run_id))
            .await
    }

    /// Rows whose category can still change (or that were never checked).
    pub async fn open_recon_rows(&self, run_id: i64) -> Result<i64, StoreError> {
        self.call(move |c| sql::open_recon_rows(c, run_id)).await
    }

    /// Rows never checked.
    pub async fn unchecked_recon_rows(&self, run_id: i64) -> Result<i64, StoreError> {
        self.call(move |c| sql::unchecked_recon_rows(c, run_id))
            .await
    }

    /// Records the balance at the start (`start`) or the end of a reconciliation run.
    pub async fn set_recon_balance(
        &self,
        run_id: i64,
        start: bool,
        balance: Centavos,
    ) -> Result<(), StoreError> {
        self.call(move |c| sql::set_balance(c, run_id, start, balance))
            .await
    }

    /// Counts and amounts per category, and the balances at start and end.
    pub async fn recon_totals(&self, run_id: i64) -> Result<sql::ReconTotals, StoreError> {
        self.call(move |c| {
            let (balance_start, balance_end) = sql::balances(c, run_id)?;
            Ok(sql::ReconTotals {
                counts: sql::recon_summary(c, run_id)?,
                balance_start,
                balance_end,
            })
        })
        .await
    }

    /// Up to `limit` report rows of a reconciliation run in input order, after line
    /// `after_line` (page through a run of any size with flat memory).
    pub async fn recon_report_page(
        &self,
        run_id: i64,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<ReconRecord>, StoreError> {
        self.call(move |c| sql::recon_report_page(c, run_id, after_line, limit))
            .await
    }

    // ------------------------------------------------------------------ notifications in reconciliation

    /// Verified `repayment` and `unmatched` notifications received since `since_ms` (for the
    /// reconciliation report's comparison with its file), oldest first.
    pub async fn notifications_not_about_payouts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<super::notifications::NotifiedPayment>, StoreError> {
        self.call(move |c| super::notifications::not_about_payouts(c, since_ms))
            .await
    }

    /// The earliest and latest `trxDate` Starpay gave for the lines of a reconciliation run.
    pub async fn recon_trx_dates(
        &self,
        run_id: i64,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        self.call(move |c| super::notifications::recon_trx_dates(c, run_id))
            .await
    }
}
