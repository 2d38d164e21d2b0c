//! The public `Store` operations, each forwarded to the backend that holds the data: the SQLite
//! writer thread (`api.rs`) or PostgreSQL (`pg/ops.rs`). Both implement the same list with the
//! same signatures and the same atomic rules; callers never know which one they talk to.

use crate::domain::{Centavos, RowState};

use super::approvals::{ApprovalEntry, NewApprovalEntry};
use super::notifications::{
    Decision, NotifiedPayment, NotifyOutcome, Received, StoredNotification,
};
use super::recon::{ReconRecord, ReconResult, ReconTodo, ReconTotals};
use super::{
    Allocation, Backend, EarlierAttempt, Event, NewRow, NewRun, PayoutCounts, PayoutRowSink,
    ReconRowSink, ReferenceHistory, ReferenceUse, RowRecord, RunRecord, Store, StoreError,
};

/// `forward! { fn name(&self, arg: Type, …) -> Output; … }` makes each `Store::name` an async
/// operation that calls the same-named operation of the backend (one match per operation, so
/// a backend that lacks one does not compile).
macro_rules! forward {
    ($( $(#[$meta:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $out:ty; )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$out, StoreError> {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                        Backend::Postgres(p) => p.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    // ---------------------------------------------------------------- runs
    /// This database's id (part of every msgId it issues).
    fn db_id(&self) -> String;
    /// Runs of `job`, oldest first; with `sha256`, only runs of that input (or reconcile key).
    fn runs_for(&self, job: &str, sha256: Option<&str>) -> Vec<RunRecord>;
    fn run_by_id(&self, run_id: i64) -> Option<RunRecord>;
    /// Marks a run FINISHED with its event (both or neither).
    fn finish_run(&self, run_id: i64) -> ();
    /// Reopens a finished run with a `run_reopened` event saying why.
    fn reopen_run(&self, run_id: i64, why: String) -> ();
    /// Records how a command that drove the run ended (its exit code), with its event.
    fn record_exit(&self, run_id: i64, code: i32) -> ();
    /// Remembers the bank list (5.1) Starpay gave, for dry runs.
    fn save_bank_list(&self, names: Vec<String>) -> ();
    /// The last bank list Starpay gave, and when (UTC ms).
    fn last_bank_list(&self) -> Option<(Vec<String>, i64)>;

    // ---------------------------------------------------------------- approvals
    /// Appends an entry to the approval log with its event, in one transaction.
    fn record_approval(&self, entry: NewApprovalEntry) -> ApprovalEntry;
    /// The approval log of `job`, oldest first.
    fn approval_log(&self, job: &str) -> Vec<ApprovalEntry>;
    /// Records the balance read at a payout run's pre-flight (the first one stays).
    fn record_preflight_balance(&self, run_id: i64, balance: Centavos) -> ();
    /// The balance read at a payout run's pre-flight and when, if recorded.
    fn preflight_balance(&self, run_id: i64) -> Option<(Centavos, i64)>;

    // ---------------------------------------------------------------- payout rows
    /// Rows per state group and re-sends of a payout run.
    fn payout_counts(&self, run_id: i64) -> PayoutCounts;
    /// Rows of a run in input order; `only_open` keeps the rows a run still has work for.
    fn rows_of_run(&self, run_id: i64, only_open: bool) -> Vec<RowRecord>;
    /// At most `limit` rows of a run after line `after_line`, in input order.
    fn rows_page(&self, run_id: i64, only_open: bool, after_line: i64, limit: i64) -> Vec<RowRecord>;
    /// How many rows of a run are not terminal yet.
    fn open_rows(&self, run_id: i64) -> i64;
    /// Every earlier use of `reference` in this database (except row `except_row`).
    fn reference_uses(&self, reference: &str, except_row: Option<i64>) -> Vec<ReferenceUse>;
    /// Every row, attempt and event of `reference`, across runs.
    fn reference_history(&self, reference: &str) -> ReferenceHistory;
    /// Every attempt (msgId) ever allocated for `reference`.
    fn attempts_of_reference(&self, reference: &str) -> Vec<EarlierAttempt>;
    /// Allocates `msg_id` for `row` with the exact request bytes, blocking the reference in the
    /// same transaction: committed (durable) before it returns, so before the request leaves.
    fn allocate_attempt(
        &self,
        row: RowRecord,
        msg_id: String,
        operation: &'static str,
        request_bytes: Vec<u8>,
        repay_of: Option<String>,
    ) -> Allocation;
    /// Saves a row's change by compare-and-set from `expected`, with its event.
    fn save_row(&self, row: RowRecord, expected: RowState, sent: bool, event: Event) -> ();
    /// A fresh msgId `<prefix><db id><n>` for `purpose`, recorded before it is returned.
    fn new_msg_id(
        &self,
        prefix: char,
        db_id: &str,
        purpose: &'static str,
        row_id: Option<i64>,
    ) -> String;
    /// Reserves `n` values of a named counter; returns the new value (range `new - n .. new`).
    fn reserve_counter_block(&self, name: &str, n: i64) -> i64;
    /// One row as stored now.
    fn row(&self, row_id: i64) -> RowRecord;

    // ---------------------------------------------------------------- notifications
    /// Stores a refused notification (unverified, wrong mchId, bad layout) with its event.
    fn record_refused_notification(&self, n: Received, why: String) -> ();
    /// Notifications per outcome.
    fn notification_counts(&self) -> Vec<(String, i64)>;
    /// The last `limit` notifications needing a look (unmatched, conflict, refused).
    fn notifications_to_look_at(&self, limit: i64) -> Vec<StoredNotification>;
    /// Notifications about `reference` (its attempts' msgIds), or naming it as their msgId.
    fn notifications_about(&self, reference: &str) -> Vec<StoredNotification>;
    /// Verified `repayment` and `unmatched` notifications received since `since_ms` (for the
    /// reconciliation report's comparison with its file), oldest first.
    fn notifications_not_about_payouts(&self, since_ms: i64) -> Vec<NotifiedPayment>;
    /// The earliest and latest `trxDate` Starpay gave for the lines of a reconciliation run.
    fn recon_trx_dates(&self, run_id: i64) -> (Option<String>, Option<String>);

    // ---------------------------------------------------------------- reconciliation
    /// A reconcile pass over payout run `payout_run`: the run, its rows and its opening
    /// balance, in one transaction.
    fn create_reconcile_pass(&self, run: NewRun, payout_run: i64, opening_balance: Centavos) -> i64;
    /// Up to `limit` rows still to check, after row id `after_id`.
    fn recon_todo_page(&self, run_id: i64, after_id: i64, limit: i64) -> Vec<ReconTodo>;
    /// Saves a batch of checked rows (and the payout rows they move) in one transaction.
    fn save_recon_results(&self, run_id: i64, results: Vec<ReconResult>) -> ();
    /// Marks lines that claim a Starpay order another line already matched; returns how many.
    fn mark_duplicate_matches(&self, run_id: i64) -> usize;
    /// Rows whose category can still change (or that were never checked).
    fn open_recon_rows(&self, run_id: i64) -> i64;
    /// Rows never checked.
    fn unchecked_recon_rows(&self, run_id: i64) -> i64;
    /// Records the balance at the start (`start`) or the end of a reconciliation run.
    fn set_recon_balance(&self, run_id: i64, start: bool, balance: Centavos) -> ();
    /// Counts and amounts per category, and the balances at start and end.
    fn recon_totals(&self, run_id: i64) -> ReconTotals;
    /// Up to `limit` report rows of a reconciliation run in input order, after `after_line`.
    fn recon_report_page(&self, run_id: i64, after_line: i64, limit: i64) -> Vec<ReconRecord>;
}

impl Store {
    /// The time of the last command that exited 0 on any run of `job` (a heartbeat).
    pub async fn last_success_at(&self, job: &str) -> Result<Option<i64>, StoreError> {
        let runs = self.runs_for(job, None).await?;
        Ok(runs
            .iter()
            .filter(|r| r.last_exit_code == Some(0))
            .filter_map(|r| r.last_exit_at)
            .max())
    }

    /// Stores a verified notification and applies it in one transaction: dedupe on
    /// (originalMsgId, trxState), match the payout attempt by msgId, check it echoes the row's
    /// amount and current attempt, then `decide` (the transition) and the row's save.
    pub async fn apply_notification<F>(
        &self,
        n: Received,
        decide: F,
    ) -> Result<(NotifyOutcome, Option<i64>), StoreError>
    where
        F: FnOnce(&RowRecord) -> Decision + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.apply_notification(n, decide).await,
            Backend::Postgres(p) => p.apply_notification(n, decide).await,
        }
    }

    /// A payout run and all its rows (already in memory), in one transaction.
    pub async fn create_payout_run(
        &self,
        run: NewRun,
        rows: Vec<NewRow>,
    ) -> Result<i64, StoreError> {
        let created = self
            .create_payout_run_streamed(run, move |sink| {
                for r in rows {
                    sink.push(r)?;
                }
                Ok(Ok::<(), std::convert::Infallible>(()))
            })
            .await?;
        created.map_err(|never| match never {})
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
        match &self.backend {
            Backend::Sqlite(s) => s.create_payout_run_streamed(run, fill).await,
            Backend::Postgres(p) => p.create_payout_run_streamed(run, fill).await,
        }
    }

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
        match &self.backend {
            Backend::Sqlite(s) => s.load_recon_run(run, opening_balance, fill).await,
            Backend::Postgres(p) => p.load_recon_run(run, opening_balance, fill).await,
        }
    }

    /// Copies a SQLite database's whole history into this store, which must be PostgreSQL and
    /// hold no history yet (`migrate-store`; see `pg::copy`).
    pub async fn copy_from_sqlite(
        &self,
        sqlite: &std::path::Path,
    ) -> Result<super::pg::Copied, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Err(StoreError::BadState(
                "migrate-store copies into a PostgreSQL store (a postgres:// URL)".into(),
            )),
            Backend::Postgres(p) => p.copy_from_sqlite(sqlite).await,
        }
    }

    /// Takes the job's lock on PostgreSQL (a session advisory lock on a connection of its own,
    /// held until the guard is dropped or the process dies): `None` when another process holds
    /// it. SQLite uses a lock file beside the database instead (`cmd::context`).
    pub async fn try_lock_job(&self, job: &str) -> Result<Option<super::pg::JobLock>, StoreError> {
        self.postgres("the SQLite job lock is a lock file")?
            .try_lock_job(job, super::pg::LockMode::Exclusive)
            .await
    }

    /// The job's lock shared with the other runners of a payout job (`run` on PostgreSQL):
    /// `None` while a command holds it alone (`try_lock_job`).
    pub async fn try_lock_job_shared(
        &self,
        job: &str,
    ) -> Result<Option<super::pg::JobLock>, StoreError> {
        self.postgres("the SQLite job lock is a lock file")?
            .try_lock_job(job, super::pg::LockMode::Shared)
            .await
    }
}

/// `postgres_only! { "why not on SQLite"; fn name(&self, arg: Type, …) -> Output; … }`: each
/// `Store::name` calls the same-named operation of the PostgreSQL backend, or refuses with
/// `why` on SQLite (whose callers never reach it).
macro_rules! postgres_only {
    ($why:literal; $( $(#[$meta:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $out:ty; )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$out, StoreError> {
                    self.postgres($why)?.$name($($arg),*).await
                }
            )*
        }
    };
}

impl Store {
    fn postgres(&self, why_not: &str) -> Result<&super::pg::PgStore, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Err(StoreError::BadState(why_not.into())),
            Backend::Postgres(p) => Ok(p),
        }
    }
}

postgres_only! {
    "SQLite has one runner per job (its lock file)";
    /// Serialises the creation of the run of `job` + `sha256` between runners starting together
    /// (held from "is there an open run of this file?" until the run exists): the second runner
    /// then finds the run and joins it. Waits while another runner holds it.
    fn lock_run_creation(&self, job: &str, sha256: &str) -> super::pg::JobLock;
}

// Several runners on one payout run (issue 14 part B): PostgreSQL only (SQLite keeps one
// runner per job, held by its lock file, and never calls these). See `pg::claims`.
postgres_only! {
    "several runners on one job need a PostgreSQL store";
    /// Claims up to `limit` open rows of `run_id` nobody holds (or whose lease expired) for
    /// `runner` until `lease_ms` from now, with `FOR UPDATE SKIP LOCKED`.
    fn claim_rows(&self, run_id: i64, runner: &str, lease_ms: i64, limit: i64) -> Vec<RowRecord>;
    /// Extends `runner`'s leases on `run_id`'s open rows; returns how many it holds.
    fn renew_leases(&self, run_id: i64, runner: &str, lease_ms: i64) -> u64;
    /// Gives back `runner`'s leases on `run_id` (it leaves).
    fn release_leases(&self, run_id: i64, runner: &str) -> u64;
    /// Open rows of `run_id` under a live lease of another runner than `runner`.
    fn rows_held_by_others(&self, run_id: i64, runner: &str) -> i64;
    /// Claims the writing of finished run `run_id`'s report for `runner`, atomically.
    fn claim_report(&self, run_id: i64, runner: &str, lease_ms: i64) -> super::pg::ReportClaim;
    /// Creates (or updates the configured rate and burst of) `mch_id`'s shared GCRA row.
    fn rate_limit_init(&self, mch_id: &str, max_rate: i32, burst: i32) -> ();
    /// One atomic GCRA take: 0 = go now, else microseconds to wait before asking again.
    fn rate_limit_take(&self, mch_id: &str) -> i64;
    /// A 406: halves `mch_id`'s shared rate for every runner; returns the new rate.
    fn rate_limit_cut(&self, mch_id: &str) -> i32;
    /// One additive step back up towards the configured rate; returns the new rate.
    fn rate_limit_raise(&self, mch_id: &str) -> i32;
    /// `mch_id`'s shared rate now, if its row exists.
    fn rate_limit_rate(&self, mch_id: &str) -> Option<i32>;
}
