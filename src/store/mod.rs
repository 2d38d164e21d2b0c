//! The SQLite store: one writer thread owns the `rusqlite::Connection`; the named operations of
//! `api.rs` send it jobs over a bounded channel and get the result back on a oneshot. All SQL
//! lives in this module; callers never see a connection.
//!
//! Invariants: WAL, `foreign_keys=ON`, `busy_timeout`, `synchronous=FULL` (money ledger);
//! migrations are append-only, tracked by `PRAGMA user_version`, applied in one exclusive
//! transaction; timestamps are UTC milliseconds; `events` is append-only (enforced by triggers);
//! a row's state changes only by compare-and-set (`WHERE id=? AND state=?old`, exactly one row).
//! Must not: know about HTTP or CSV parsing.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::domain::{Centavos, EventKind, RowState};

mod api;
pub mod approvals;
#[cfg(test)]
mod backend_tests;
mod dispatch;
pub mod notifications;
pub mod pg;
pub mod recon;

pub use api::{NewRun, PayoutRowSink, ReconRowSink, RowSink, SinkRow};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_recon.sql"),
    include_str!("../../migrations/0003_recon_truth.sql"),
    include_str!("../../migrations/0004_report_truth.sql"),
    include_str!("../../migrations/0005_repay_and_attempt_times.sql"),
    include_str!("../../migrations/0006_run_exit.sql"),
    include_str!("../../migrations/0007_bank_list.sql"),
    include_str!("../../migrations/0008_approvals.sql"),
    include_str!("../../migrations/0009_notifications.sql"),
];
/// Bound of the command queue to the writer thread.
const QUEUE_CAPACITY: usize = 1024;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} was written by a newer starpay-batch (schema {found}, this build knows {known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("row {row_id} is no longer in state {expected} (concurrent change?)")]
    StateConflict { row_id: i64, expected: RowState },
    #[error("database has an unknown row state {0:?}")]
    BadState(String),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("database: the commit of this change failed, so it did not happen: {0}")]
    CommitFailed(String),
    #[error("database {url}: {why}")]
    PgOpen { url: String, why: String },
    #[error("database: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("database: no connection: {0}")]
    PgPool(String),
    #[error("job {job:?} already has an open payout run of this file (sha256 {}): finish it with `run` (or let its runners finish) before another run of the same file; nothing was sent", &sha256[..sha256.len().min(12)])]
    OpenRunExists { job: String, sha256: String },
    #[error("database {path} is at schema {found}, this build's is {known}: a real run upgrades it first")]
    Outdated {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// One unit of work for the writer thread. It runs inside the writer's group transaction and
/// returns how to deliver its result once that transaction's fate is known.
type Job = Box<dyn FnOnce(&mut Connection) -> Deliver + Send>;
/// Delivers a job's result: called with `None` once the group committed, or with the commit's
/// error (the job's changes did not happen).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// Jobs committed together at most (group commit: one fsync for many rows' changes).
const GROUP_MAX: usize = 256;

/// The one store API (`api.rs` names its operations; `dispatch.rs` forwards each to the
/// backend): SQLite (a path) or PostgreSQL (a `postgres://` URL). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(pg::PgStore),
}

/// Handle to the SQLite writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Sqlite {
    tx: SyncSender<Job>,
    /// Async callers take a slot before queueing, so they wait here (cheaply) instead of
    /// blocking a thread on a full queue. Half the queue; the rest is headroom.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Sqlite(s) => write!(f, "Store({})", s.path.display()),
            Backend::Postgres(p) => write!(f, "Store({})", p.describe()),
        }
    }
}

/// Every row of a query, each mapped by `f` (cached statement).
fn all_rows<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, f)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Runs a group of jobs in one transaction (see `Store::start`), then delivers their results.
/// Without a group transaction (a read-only store, or `BEGIN` failed — e.g. another process
/// held the write lock past the busy timeout), each job runs on its own: its savepoint is then
/// its own transaction, as if it were alone.
fn run_group(conn: &mut Connection, jobs: Vec<Job>, group_commit: bool) {
    let grouped = group_commit && conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let delivers: Vec<Deliver> = jobs.into_iter().map(|job| job(conn)).collect();
    let error = if grouped {
        if let Some(pause) = test_slow_commit() {
            std::thread::sleep(pause);
        }
        match conn.execute_batch("COMMIT") {
            Ok(()) => None,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(e.to_string())
            }
        }
    } else {
        None
    };
    for deliver in delivers {
        deliver(error.as_deref());
    }
}

/// Test hook (tests/payout_jobs.rs `killed_during_group_commit`): with
/// `STARPAY_TEST_SLOW_COMMIT_MS=N` the writer waits N ms inside each open group transaction
/// before its COMMIT, so a SIGKILL at a random moment almost surely lands while a group is
/// being written. Only slows the writer down; nothing else changes (a caller still hears of
/// its change only after the COMMIT). Read once.
fn test_slow_commit() -> Option<Duration> {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("STARPAY_TEST_SLOW_COMMIT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    let has_id: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'db_id'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if has_id.is_none() {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('db_id', ?1)",
            [new_db_id()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A random id for this database, part of every msgId it issues, so two databases of the same
/// merchant (or one deleted and re-created) never issue the same msgId.
fn new_db_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `database` names a PostgreSQL server (`postgres://` or `postgresql://`), not a file.
pub fn is_postgres_url(database: &Path) -> bool {
    let s = database.to_string_lossy();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl Store {
    /// Opens (creating and migrating if needed): a SQLite file, or the PostgreSQL database a
    /// `postgres://` URL names (see `pg`).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let backend = if is_postgres_url(path) {
            Backend::Postgres(pg::PgStore::open(&path.to_string_lossy())?)
        } else {
            Backend::Sqlite(Sqlite::start(open_connection(path)?, path, true)?)
        };
        Ok(Store { backend })
    }

    /// A read-only view of an existing database for a dry run (see `Sqlite::open_snapshot`;
    /// on PostgreSQL the live database, which a dry run only reads). `None` when the database
    /// does not exist (has never been migrated).
    pub fn open_snapshot(path: &Path) -> Result<Option<Store>, StoreError> {
        let backend = if is_postgres_url(path) {
            pg::PgStore::open_existing(&path.to_string_lossy())?.map(Backend::Postgres)
        } else {
            Sqlite::open_snapshot(path)?.map(Backend::Sqlite)
        };
        Ok(backend.map(|backend| Store { backend }))
    }

    /// The PostgreSQL backend: the job lock is an advisory lock there, not a lock file.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
}

impl Sqlite {
    /// A read-only view of an existing database that creates no file and migrates nothing, for
    /// a dry run. When a write-ahead log is beside the database (commits not yet checkpointed
    /// into it), the view reads through it (read-only, using the existing `-wal`/`-shm`);
    /// otherwise the database file is complete and is read as immutable (no `-shm` created).
    /// `None` when the database does not exist; an error when its schema is not this build's.
    fn open_snapshot(path: &Path) -> Result<Option<Sqlite>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // A URI: `%`, `?` and `#` in the path are escaped so they stay part of it.
        let escaped = path
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        let logged = Path::new(&wal).exists() && Path::new(&shm).exists();
        let uri = if logged {
            format!("file:{escaped}?mode=ro")
        } else {
            format!("file:{escaped}?immutable=1")
        };
        let conn = Connection::open_with_flags(
            uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(open_err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        let known = MIGRATIONS.len() as i64;
        if found != known {
            return Err(StoreError::Outdated {
                path: path.to_path_buf(),
                found,
                known,
            });
        }
        Sqlite::start(conn, path, false).map(Some)
    }

    /// Starts the thread that owns `conn`. With `group_commit`, the jobs waiting in the queue
    /// run together in one `BEGIN IMMEDIATE … COMMIT` (each inside its own savepoint, so one
    /// failing job rolls back only itself), and each job's result is delivered only after that
    /// commit: what a caller is told was stored is durable, with one fsync for the group
    /// instead of one per change.
    fn start(conn: Connection, path: &Path, group_commit: bool) -> Result<Sqlite, StoreError> {
        let (tx, rx) = sync_channel::<Job>(QUEUE_CAPACITY);
        let mut conn = conn;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                // Ends when every Store handle is dropped.
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < GROUP_MAX {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    run_group(&mut conn, jobs, group_commit);
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Sqlite {
            tx,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(QUEUE_CAPACITY / 2)),
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` on the writer thread and awaits its result (private: callers use the named
    /// operations of `api.rs`).
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let slot = std::sync::Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WriterGone)?;
        let (reply, wait) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            Box::new(move |commit_error: Option<&str>| {
                let result = match commit_error {
                    None => result,
                    Some(e) => Err(StoreError::CommitFailed(e.to_string())),
                };
                let _ = reply.send(result);
                drop(slot);
            })
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                // The queue is full: wait on the blocking pool.
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|_| StoreError::WriterGone)?
                    .map_err(|_| StoreError::WriterGone)?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(StoreError::WriterGone)
            }
        }
        wait.await.map_err(|_| StoreError::WriterGone)?
    }
}

// ------------------------------------------------------------------ typed columns

/// Domain enums are stored as their names (TEXT); a name this build does not know is an error
/// when read, never a silent default.
macro_rules! text_column {
    ($t:ty, $what:literal) => {
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }
        impl rusqlite::types::FromSql for $t {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!(concat!("unknown ", $what, " {:?}"), s).into(),
                    )
                })
            }
        }
    };
}
text_column!(RowState, "row state");
text_column!(crate::domain::RunKind, "run kind");
text_column!(crate::domain::ReconCategory, "reconciliation category");

impl rusqlite::types::ToSql for Centavos {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.get()))
    }
}

impl rusqlite::types::FromSql for Centavos {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        v.as_i64().map(Centavos::new)
    }
}

/// Reads a result row's columns one after the other (see `columns_into!`).
pub(crate) struct Columns<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    at: usize,
}

impl<'a, 'r> Columns<'a, 'r> {
    pub(crate) fn new(row: &'a rusqlite::Row<'r>) -> Self {
        Columns { row, at: 0 }
    }

    /// The next column, typed.
    pub(crate) fn next<T: rusqlite::types::FromSql>(&mut self) -> rusqlite::Result<T> {
        let v = self.row.get(self.at);
        self.at += 1;
        v
    }
}

/// A row mapper that fills a record's fields from the selected columns in the order named:
/// `columns_into!(Entry { id, job })` is `|r| Ok(Entry { id: r.get(0)?, job: r.get(1)? })`.
/// Every field type reads itself through `FromSql` (typed columns, `Centavos`, `bool`).
macro_rules! columns_into {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        |r: &rusqlite::Row<'_>| -> rusqlite::Result<$ty> {
            let mut col = $crate::store::Columns::new(r);
            Ok($ty { $($field: col.next()?),+ })
        }
    };
}
pub(crate) use columns_into;

// ------------------------------------------------------------------ records and SQL

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub kind: crate::domain::RunKind,
    pub input_path: String,
    pub input_sha256: String,
    pub finished: bool,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub row_count: i64,
    pub total: Centavos,
    /// Exit code of the last command that drove the run, and when it ended.
    pub last_exit_code: Option<i32>,
    pub last_exit_at: Option<i64>,
}

/// A row to insert.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub line: u64,
    pub reference: String,
    pub channel: &'static str,
    pub account_no: String,
    pub account_name: String,
    pub middle_name: String,
    pub last_name: String,
    pub bank: Option<String>,
    pub amount: Centavos,
    pub note: Option<String>,
    /// `Rejected` for rows skipped by `--skip-invalid`, else `New`.
    pub state: RowState,
    pub message: Option<String>,
    /// Re-pays a reference paid before (`run --repay`): checked live before its msgId exists.
    pub repay: bool,
    /// Raw text of a rejected line's fields that have no typed column (migration 0004).
    pub raw: RawFields,
}

/// Raw text of the fields of a rejected input line that do not fit a typed column: a channel
/// we do not know, an amount that does not parse (`"12.345"`), the currency. `None` on valid rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawFields {
    pub channel: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
}

/// A row as stored, with its current attempt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowRecord {
    pub id: i64,
    pub run_id: i64,
    pub line: i64,
    pub reference: String,
    pub channel: String,
    pub account_no: String,
    pub account_name: String,
    pub middle_name: String,
    pub last_name: String,
    pub bank: Option<String>,
    pub amount: Centavos,
    pub note: Option<String>,
    pub state: RowState,
    pub trx_state: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub order_no: Option<String>,
    pub ref_no: Option<String>,
    pub attempt: Option<AttemptRecord>,
    pub verified_reject: bool,
    pub not_found_count: i64,
    pub resent_after_not_found: bool,
    pub hold_since: Option<i64>,
    pub first_sent_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub last_checked_at: Option<i64>,
    pub query_count: i64,
    /// Sends over all attempts of the row.
    pub sends: i64,
    /// The row may re-pay a reference with earlier verified FAILED/REVERSED/REJECTED attempts.
    pub repay: bool,
    /// What the current attempt re-pays, for the report.
    pub repay_of: Option<String>,
    pub raw: RawFields,
    /// REVERSED after it was SUCCESS (a `SUCCESS -> REVERSED` event: a notification, or a
    /// `reconcile` finding): paid, then the money came back. Read from the event log; never
    /// written from here.
    pub reversed_after_success: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: i64,
    pub msg_id: String,
    pub seq: i64,
    pub supersedes: Option<i64>,
    pub operation: String,
    pub request_bytes: Vec<u8>,
    pub send_count: i64,
    /// When this attempt was first sent (the maximum resolve time counts from it).
    pub first_sent_at: Option<i64>,
}

/// One event to append.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub run_id: Option<i64>,
    pub row_id: Option<i64>,
    pub msg_id: Option<String>,
    pub kind: EventKind,
    pub old_state: Option<RowState>,
    pub new_state: Option<RowState>,
    pub detail: Option<String>,
    pub raw: Option<Vec<u8>>,
}

/// A compare-and-set update must change exactly one row; otherwise the row was no longer in the
/// state the caller read (a concurrent change) and nothing is written.
fn one_row_changed(changed: usize, row_id: i64, expected: RowState) -> Result<(), StoreError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::StateConflict { row_id, expected })
    }
}

pub fn db_id(conn: &Connection) -> Result<String, StoreError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'db_id'", [], |r| {
            r.get(0)
        })?,
    )
}

pub fn append_event(conn: &Connection, e: &Event) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (at, run_id, row_id, msg_id, kind, old_state, new_state, detail, raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        now_ms(),
        e.run_id,
        e.row_id,
        e.msg_id,
        e.kind.as_str(),
        e.old_state.map(RowState::as_str),
        e.new_state.map(RowState::as_str),
        e.detail,
        e.raw
    ])?;
    Ok(())
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    columns_into!(RunRecord {
        id,
        job,
        kind,
        input_path,
        input_sha256,
        finished,
        created_at,
        finished_at,
        row_count,
        total,
        last_exit_code,
        last_exit_at
    })(r)
}

const RUN_COLS: &str =
    "id, job, kind, input_path, input_sha256, status = 'FINISHED', created_at, finished_at,
     row_count, total, last_exit_code, last_exit_at";

/// Replaces the remembered bank list (5.1) with `names`.
pub fn save_bank_list(conn: &mut Connection, names: &[String]) -> Result<(), StoreError> {
    let tx = conn.savepoint()?;
    tx.execute("DELETE FROM bank_names", [])?;
    let now = now_ms();
    {
        let mut stmt =
            tx.prepare("INSERT OR IGNORE INTO bank_names (name, seen_at) VALUES (?1, ?2)")?;
        for n in names {
            stmt.execute(params![n, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The last bank list Starpay gave and when, if any was saved.
pub fn last_bank_list(conn: &Connection) -> Result<Option<(Vec<String>, i64)>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, seen_at FROM bank_names ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let seen_at = rows.iter().map(|r| r.1).max();
    Ok(seen_at.map(|at| (rows.into_iter().map(|r| r.0).collect(), at)))
}

/// Records how a command that drove `run_id` ended (its exit code), with its event.
pub fn record_exit(conn: &mut Connection, run_id: i64, code: i32) -> Result<(), StoreError> {
    let tx = conn.savepoint()?;
    let now = now_ms();
    tx.execute(
        "UPDATE runs SET last_exit_code = ?2, last_exit_at = ?3 WHERE id = ?1",
        params![run_id, code, now],
    )?;
    append_event(
        &tx,
        &Event {
            run_id: Some(run_id),
            kind: EventKind::CommandEnded,
            detail: Some(format!("exit code {code}")),
            ..Event::default()
        },
    )?;
    tx.commit()?;
    Ok(())
}

/// Everything the store knows about one reference, across runs (`show`).
#[derive(Debug, Clone, Default)]
pub struct ReferenceHistory {
    /// Rows carrying the reference, oldest first.
    pub rows: Vec<RowRecord>,
    /// Every attempt of those rows, oldest first.
    pub attempts: Vec<HistoryAttempt>,
    /// Every event of those rows, in order.
    pub events: Vec<HistoryEvent>,
}

#[derive(Debug, Clone)]
pub struct HistoryAttempt {
    pub row_id: i64,
    pub msg_id: String,
    pub seq: i64,
    pub operation: String,
    pub send_count: i64,
    pub created_at: i64,
    pub first_sent_at: Option<i64>,
    pub supersedes: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HistoryEvent {
    pub at: i64,
    pub run_id: Option<i64>,
    pub row_id: Option<i64>,
    pub msg_id: Option<String>,
    pub kind: String,
    pub old_state: Option<String>,
    pub new_state: Option<String>,
    pub detail: Option<String>,
    /// The request or verified answer the event is about, as stored.
    pub raw: Option<Vec<u8>>,
}

pub fn reference_history(
    conn: &Connection,
    reference: &str,
) -> Result<ReferenceHistory, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{ROW_SELECT} WHERE r.reference = ?1 ORDER BY r.id"
    ))?;
    let rows = stmt
        .query_map([reference], row_from)?
        .collect::<Result<Vec<_>, _>>()?;
    let attempts = all_rows(
        conn,
        "SELECT a.row_id, a.msg_id, a.seq, a.operation, a.send_count, a.created_at, a.first_sent_at,
                s.msg_id
         FROM attempts a JOIN rows r ON r.id = a.row_id
         LEFT JOIN attempts s ON s.id = a.supersedes
         WHERE r.reference = ?1 ORDER BY a.id",
        [reference],
        columns_into!(HistoryAttempt {
            row_id,
            msg_id,
            seq,
            operation,
            send_count,
            created_at,
            first_sent_at,
            supersedes
        }),
    )?;
    let events = all_rows(
        conn,
        "SELECT e.at, e.run_id, e.row_id, e.msg_id, e.kind, e.old_state, e.new_state, e.detail, e.raw
         FROM events e JOIN rows r ON r.id = e.row_id
         WHERE r.reference = ?1 ORDER BY e.id",
        [reference],
        columns_into!(HistoryEvent {
            at,
            run_id,
            row_id,
            msg_id,
            kind,
            old_state,
            new_state,
            detail,
            raw
        }),
    )?;
    Ok(ReferenceHistory {
        rows,
        attempts,
        events,
    })
}

pub fn runs_for(
    conn: &Connection,
    job: &str,
    sha: Option<&str>,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE job = ?1 AND (?2 IS NULL OR input_sha256 = ?2) ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![job, sha], run_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn run_by_id(conn: &Connection, id: i64) -> Result<Option<RunRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
            [id],
            run_from_row,
        )
        .optional()?)
}

/// Creates an open payout run without rows (inside the transaction that then inserts its
/// rows and seals it: `Sqlite::create_payout_run_streamed`).
pub fn create_payout_run_tx(tx: &Connection, run: &NewRun) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO runs (job, kind, input_path, input_sha256, status, created_at, row_count, total)
         VALUES (?1, ?2, ?3, ?4, 'OPEN', ?5, 0, 0)",
        params![run.job, run.kind.as_str(), run.input, run.sha256, now_ms()],
    )?;
    Ok(tx.last_insert_rowid())
}

/// One batch of a payout run's rows (inside the run's transaction).
pub fn insert_payout_rows_tx(
    tx: &Connection,
    run_id: i64,
    rows: &[NewRow],
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO rows (run_id, line, reference, channel, account_no, account_name, middle_name,
                           last_name, bank, amount, note, state, message, updated_at, repay,
                           raw_channel, raw_amount, raw_currency)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?;
    for r in rows {
        stmt.execute(params![
            run_id,
            r.line as i64,
            r.reference,
            r.channel,
            r.account_no,
            r.account_name,
            r.middle_name,
            r.last_name,
            r.bank,
            r.amount.get(),
            r.note,
            r.state.as_str(),
            r.message,
            now,
            r.repay as i64,
            r.raw.channel,
            r.raw.amount,
            r.raw.currency
        ])?;
    }
    Ok(())
}

/// After the last row: the run's row count and total (of the rows to send), and its
/// `run_created` event.
pub fn seal_payout_run_tx(tx: &Connection, run_id: i64, run: &NewRun) -> Result<(), StoreError> {
    let rows: i64 = tx.query_row(
        "UPDATE runs SET row_count = (SELECT COUNT(*) FROM rows WHERE run_id = ?1),
             total = (SELECT COALESCE(SUM(amount), 0) FROM rows WHERE run_id = ?1 AND state = 'NEW')
         WHERE id = ?1 RETURNING row_count",
        [run_id],
        |r| r.get(0),
    )?;
    append_event(
        tx,
        &Event {
            run_id: Some(run_id),
            kind: EventKind::RunCreated,
            detail: Some(format!(
                "{rows} rows from {} (sha256 {})",
                run.input, run.sha256
            )),
            ..Event::default()
        },
    )?;
    Ok(())
}

/// Marks a run FINISHED and records the event, in one transaction (both or neither).
pub fn finish_run(conn: &mut Connection, run_id: i64) -> Result<(), StoreError> {
    let tx = conn.savepoint()?;
    tx.execute(
        "UPDATE runs SET status = 'FINISHED', finished_at = ?2 WHERE id = ?1",
        params![run_id, now_ms()],
    )?;
    append_event(
        &tx,
        &Event {
            run_id: Some(run_id),
            kind: EventKind::RunFinished,
            ..Event::default()
        },
    )?;
    tx.commit()?;
    Ok(())
}

/// Reopens a finished run (for `retry`), so a crash mid-retry resumes it; records why, in the
/// same transaction.
pub fn reopen_run(conn: &mut Connection, run_id: i64, why: &str) -> Result<(), StoreError> {
    let tx = conn.savepoint()?;
    let changed = tx.execute(
        "UPDATE runs SET status = 'OPEN', finished_at = NULL WHERE id = ?1 AND status = 'FINISHED'",
        params![run_id],
    )?;
    if changed == 1 {
        append_event(
            &tx,
            &Event {
                run_id: Some(run_id),
                kind: EventKind::RunReopened,
                detail: Some(why.to_string()),
                ..Event::default()
            },
        )?;
    }
    tx.commit()?;
    Ok(())
}

const ROW_SELECT: &str =
    "SELECT r.id, r.run_id, r.line, r.reference, r.channel, r.account_no, r.account_name,
    r.middle_name, r.last_name, r.bank, r.amount, r.note, r.state, r.trx_state, r.code, r.message,
    r.error_code, r.error_message, r.order_no, r.ref_no, r.verified_reject, r.not_found_count,
    r.hold_since, r.first_sent_at, r.last_sent_at, r.last_checked_at, r.query_count,
    r.resent_after_not_found, a.id, a.msg_id, a.seq, a.supersedes, a.operation, a.request_bytes, a.send_count,
    (SELECT COALESCE(SUM(send_count), 0) FROM attempts x WHERE x.row_id = r.id),
    a.first_sent_at, r.repay, r.repay_of, r.raw_channel, r.raw_amount, r.raw_currency,
    (r.state = 'REVERSED' AND EXISTS (SELECT 1 FROM events e WHERE e.row_id = r.id
        AND e.old_state = 'SUCCESS' AND e.new_state = 'REVERSED'))
    FROM rows r LEFT JOIN attempts a ON a.id = r.attempt_id";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowRecord> {
    let attempt_id: Option<i64> = r.get(28)?;
    let attempt = match attempt_id {
        None => None,
        Some(id) => Some(AttemptRecord {
            id,
            msg_id: r.get(29)?,
            seq: r.get(30)?,
            supersedes: r.get(31)?,
            operation: r.get(32)?,
            request_bytes: r.get(33)?,
            send_count: r.get(34)?,
            first_sent_at: r.get(36)?,
        }),
    };
    Ok(RowRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        line: r.get(2)?,
        reference: r.get(3)?,
        channel: r.get(4)?,
        account_no: r.get(5)?,
        account_name: r.get(6)?,
        middle_name: r.get(7)?,
        last_name: r.get(8)?,
        bank: r.get(9)?,
        amount: Centavos::new(r.get(10)?),
        note: r.get(11)?,
        // A name this build does not know is an error (typed column), never a default.
        state: r.get(12)?,
        trx_state: r.get(13)?,
        code: r.get(14)?,
        message: r.get(15)?,
        error_code: r.get(16)?,
        error_message: r.get(17)?,
        order_no: r.get(18)?,
        ref_no: r.get(19)?,
        attempt,
        verified_reject: r.get::<_, i64>(20)? != 0,
        not_found_count: r.get(21)?,
        hold_since: r.get(22)?,
        first_sent_at: r.get(23)?,
        last_sent_at: r.get(24)?,
        last_checked_at: r.get(25)?,
        query_count: r.get(26)?,
        resent_after_not_found: r.get::<_, i64>(27)? != 0,
        sends: r.get(35)?,
        repay: r.get::<_, i64>(37)? != 0,
        repay_of: r.get(38)?,
        raw: RawFields {
            channel: r.get(39)?,
            amount: r.get(40)?,
            currency: r.get(41)?,
        },
        reversed_after_success: r.get::<_, i64>(42)? != 0,
    })
}

/// The states a payout run still has work for (the complement of `RowState::is_terminal`).
const OPEN_FILTER: &str =
    " AND r.state NOT IN ('SUCCESS','FAILED','REVERSED','REJECTED','NEEDS_ATTENTION')";

/// Rows of a run in input order; `only_open` keeps rows `run` still has work for.
pub fn rows_of_run(
    conn: &Connection,
    run_id: i64,
    only_open: bool,
) -> Result<Vec<RowRecord>, StoreError> {
    rows_page(conn, run_id, only_open, 0, i64::MAX)
}

/// At most `limit` rows of a run with a line after `after_line`, in input order; `only_open`
/// keeps rows `run` still has work for. Paging by line keeps a 100,000-row run's memory flat
/// (issue 11): a reader holds one page, never the run.
pub fn rows_page(
    conn: &Connection,
    run_id: i64,
    only_open: bool,
    after_line: i64,
    limit: i64,
) -> Result<Vec<RowRecord>, StoreError> {
    let filter = if only_open { OPEN_FILTER } else { "" };
    all_rows(
        conn,
        &format!(
            "{ROW_SELECT} WHERE r.run_id = ?1 AND r.line > ?2{filter} ORDER BY r.line LIMIT ?3"
        ),
        params![run_id, after_line, limit],
        row_from,
    )
}

/// How many rows of a run are still open (not terminal).
pub fn open_rows(conn: &Connection, run_id: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM rows r WHERE r.run_id = ?1{OPEN_FILTER}"
        ))?
        .query_row([run_id], |r| r.get(0))?)
}

pub fn row_by_id(conn: &Connection, row_id: i64) -> Result<RowRecord, StoreError> {
    Ok(conn.query_row(&format!("{ROW_SELECT} WHERE r.id = ?1"), [row_id], row_from)?)
}

/// One group of a payout run's rows, as the report states need it (metrics during a run: cheap
/// aggregates instead of every row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub state: RowState,
    pub resent_after_not_found: bool,
    /// The row's current attempt was sent at least once.
    pub attempt_sent: bool,
    pub rows: i64,
    pub amount: Centavos,
}

/// Counts of a payout run: rows per state group, and re-sends of an already-sent msgId (the
/// same signed bytes again) over every attempt of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayoutCounts {
    pub groups: Vec<StateCount>,
    pub resends: i64,
}

pub fn payout_counts(conn: &Connection, run_id: i64) -> Result<PayoutCounts, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.state, r.resent_after_not_found, COALESCE(a.send_count, 0) > 0, COUNT(*),
                COALESCE(SUM(r.amount), 0)
         FROM rows r LEFT JOIN attempts a ON a.id = r.attempt_id
         WHERE r.run_id = ?1 GROUP BY 1, 2, 3",
    )?;
    let mut groups = Vec::new();
    let mut q = stmt.query([run_id])?;
    while let Some(r) = q.next()? {
        let state: String = r.get(0)?;
        groups.push(StateCount {
            state: RowState::parse(&state).ok_or(StoreError::BadState(state))?,
            resent_after_not_found: r.get(1)?,
            attempt_sent: r.get(2)?,
            rows: r.get(3)?,
            amount: Centavos::new(r.get(4)?),
        });
    }
    let resends = conn.query_row(
        "SELECT COALESCE(SUM(MAX(a.send_count - 1, 0)), 0)
         FROM attempts a JOIN rows r ON r.id = a.row_id WHERE r.run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    Ok(PayoutCounts { groups, resends })
}

/// Records a new msgId (unique forever in this database).
pub fn record_msg_id(
    conn: &Connection,
    msg_id: &str,
    purpose: &str,
    row_id: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO msg_ids (msg_id, purpose, row_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![msg_id, purpose, row_id, now_ms()])?;
    Ok(())
}

/// Next value of a named counter kept in `meta` (used for query msgIds).
pub fn next_counter(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    advance_counter_from(conn, name, 1, 1)
}

/// Adds `n` to a named counter and returns its new value (the reserved range is
/// `new - n .. new`). Block ids start at 1 so they never collide with `next_counter` names.
pub fn advance_counter(conn: &Connection, name: &str, n: i64) -> Result<i64, StoreError> {
    advance_counter_from(conn, name, n, n + 1)
}

/// One atomic statement (update and read together): two processes sharing the database can
/// never be handed the same value (two autocommit statements could interleave).
fn advance_counter_from(
    conn: &Connection,
    name: &str,
    n: i64,
    first: i64,
) -> Result<i64, StoreError> {
    let key = format!("counter:{name}");
    let v: String = conn
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, CAST(?3 AS TEXT))
             ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ?2 AS TEXT)
             RETURNING value",
        )?
        .query_row(params![key, n, first], |r| r.get(0))?;
    v.parse::<i64>()
        .map_err(|_| StoreError::BadState(format!("counter {name} = {v:?}")))
}

/// What `allocate_attempt` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    Allocated(AttemptRecord),
    /// Another row with the same reference may have moved money (or is about to): this row
    /// was set REJECTED instead, with the reason in its message.
    Blocked {
        message: String,
    },
}

/// One earlier use of a reference: a row of this database that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceUse {
    pub run_id: i64,
    pub row_id: i64,
    pub line: i64,
    pub state: RowState,
    /// The row has had at least one attempt (a msgId that may have been sent).
    pub has_attempt: bool,
    /// The row's run is still open (a NEW row there is paid when that run resumes).
    pub run_open: bool,
}

/// What earlier uses of a reference allow (the re-pay rule; README "Paying a reference again").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceCheck {
    /// Never sent before: pay it.
    Free,
    /// Every earlier attempt ended verified FAILED, REVERSED or REJECTED: only an explicit
    /// re-payment (`run --repay`, `retry`) may pay it, after a live query of each earlier msgId.
    Repayable(ReferenceUse),
    /// Money may have moved or may still move: never paid again.
    Blocked(ReferenceUse),
}

impl ReferenceCheck {
    /// Pure: the rule over the earlier uses (most recent first).
    pub fn of(uses: &[ReferenceUse]) -> ReferenceCheck {
        let mut repayable = None;
        for u in uses {
            match (u.state, u.has_attempt) {
                // Not sent yet: blocks while its run can still pay it.
                (RowState::New, false) if u.run_open => return ReferenceCheck::Blocked(u.clone()),
                // Never sent: invalid input, or refused because of another row.
                (RowState::New | RowState::Rejected, false) => {}
                (RowState::Failed | RowState::Reversed | RowState::Rejected, true) => {
                    repayable.get_or_insert_with(|| u.clone());
                }
                _ => return ReferenceCheck::Blocked(u.clone()),
            }
        }
        match repayable {
            Some(u) => ReferenceCheck::Repayable(u),
            None => ReferenceCheck::Free,
        }
    }

    /// Why a row with this reference is not paid (None: it may be), for messages.
    pub fn refusal(&self, reference: &str, repay: bool) -> Option<String> {
        match self {
            ReferenceCheck::Free => None,
            ReferenceCheck::Repayable(_) if repay => None,
            ReferenceCheck::Repayable(u) => Some(format!(
                "reference {reference:?} was paid before and ended {} in run {} (line {}); to pay it again on purpose pass --repay (each earlier msgId is queried first)",
                u.state, u.run_id, u.line
            )),
            ReferenceCheck::Blocked(u) => Some(format!(
                "reference {reference:?} is {} in run {} (line {}); a reference is paid once{}",
                u.state,
                u.run_id,
                u.line,
                match u.state {
                    RowState::Success => ": it was paid",
                    RowState::New => ": that run has not sent it yet; resume it (`run`) instead",
                    RowState::Unsent => ": that run holds its msgId and sends it (again) when resumed; resume it (`run`) instead",
                    RowState::NeedsAttention => ": resolve it with Starpay first (`reconcile`)",
                    _ => ": its outcome is not final yet; run that job again (it resumes and queries) or `reconcile` it",
                }
            )),
        }
    }
}

/// Every row carrying `reference` (except `except_row`), most recent first.
pub fn reference_uses(
    conn: &Connection,
    reference: &str,
    except_row: Option<i64>,
) -> Result<Vec<ReferenceUse>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.run_id, r.id, r.line, r.state, r.attempt_id IS NOT NULL, u.status = 'OPEN'
         FROM rows r JOIN runs u ON u.id = r.run_id
         WHERE r.reference = ?1 AND (?2 IS NULL OR r.id != ?2) ORDER BY r.id DESC",
    )?;
    let rows = stmt.query_map(
        params![reference, except_row],
        columns_into!(ReferenceUse {
            run_id,
            row_id,
            line,
            state,
            has_attempt,
            run_open
        }),
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One attempt ever made for a reference (any run), for the live check before a re-payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierAttempt {
    pub attempt_id: i64,
    pub msg_id: String,
    pub run_id: i64,
    pub line: i64,
    /// The state of the row the attempt belongs to.
    pub row_state: RowState,
    /// The attempt is that row's current one (its state is this attempt's).
    pub current: bool,
    pub send_count: i64,
}

/// Every attempt of every row carrying `reference`, oldest first.
pub fn attempts_of_reference(
    conn: &Connection,
    reference: &str,
) -> Result<Vec<EarlierAttempt>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.msg_id, r.run_id, r.line, r.state, r.attempt_id = a.id, a.send_count
         FROM attempts a JOIN rows r ON r.id = a.row_id
         WHERE r.reference = ?1 ORDER BY a.id",
    )?;
    let rows = stmt.query_map(
        [reference],
        columns_into!(EarlierAttempt {
            attempt_id,
            msg_id,
            run_id,
            line,
            row_state,
            current,
            send_count
        }),
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Stores a new attempt (msgId + exact request bytes) and points the row at it, state UNSENT,
/// in one transaction — before anything is sent (non-negotiable 1). Refuses (and rejects the
/// row) when another row with the same reference may have moved money (or is about to), or
/// when it only ended FAILED/REVERSED/REJECTED but this is not a checked re-payment
/// (`repay_of` is set only after the live query of every earlier msgId): checked in the same
/// transaction, so no two runs or jobs can both pay one reference.
///
/// Longer than ~100 lines on purpose: everything that must be atomic with the msgId's birth
/// (the reference check, the attempt, the msgId record, the row update and the event) is one
/// transaction, and splitting it would invite a caller to run the pieces apart.
pub fn allocate_attempt(
    conn: &mut Connection,
    row: &RowRecord,
    msg_id: &str,
    operation: &str,
    request_bytes: &[u8],
    repay_of: Option<&str>,
) -> Result<Allocation, StoreError> {
    let tx = conn.savepoint()?;
    // NEW rows of other runs have not moved money: the first to allocate wins.
    let uses: Vec<ReferenceUse> = reference_uses(&tx, &row.reference, Some(row.id))?
        .into_iter()
        .filter(|u| u.state != RowState::New || u.has_attempt)
        .collect();
    let refusal = ReferenceCheck::of(&uses).refusal(&row.reference, repay_of.is_some());
    if let Some(reason) = refusal {
        let message = format!("not sent: {reason}");
        let changed = tx.execute(
            "UPDATE rows SET state = 'REJECTED', message = ?2, updated_at = ?3 WHERE id = ?1 AND state = ?4",
            params![row.id, message, now_ms(), row.state.as_str()],
        )?;
        one_row_changed(changed, row.id, row.state)?;
        append_event(
            &tx,
            &Event {
                run_id: Some(row.run_id),
                row_id: Some(row.id),
                kind: EventKind::ReferenceBlocked,
                old_state: Some(row.state),
                new_state: Some(RowState::Rejected),
                detail: Some(message.clone()),
                ..Event::default()
            },
        )?;
        tx.commit()?;
        return Ok(Allocation::Blocked { message });
    }
    // Cached statements: this runs once per payout row.
    let seq: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts WHERE row_id = ?1")?
        .query_row([row.id], |r| r.get(0))?;
    // The attempt this one supersedes: the row's own, or (a re-payment from a new file) the
    // latest attempt of the reference.
    let supersedes: Option<i64> = match row.attempt.as_ref() {
        Some(a) => Some(a.id),
        None if repay_of.is_some() => tx
            .query_row(
                "SELECT MAX(a.id) FROM attempts a JOIN rows r ON r.id = a.row_id WHERE r.reference = ?1",
                [&row.reference],
                |r| r.get(0),
            )
            .optional()?
            .flatten(),
        None => None,
    };
    record_msg_id(&tx, msg_id, "payout", Some(row.id))?;
    tx.prepare_cached(
        "INSERT INTO attempts (row_id, msg_id, seq, supersedes, operation, request_bytes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![row.id, msg_id, seq, supersedes, operation, request_bytes, now_ms()])?;
    let attempt_id = tx.last_insert_rowid();
    // first_sent_at / last_sent_at are kept: they describe the row's sends over all attempts.
    let changed = tx
        .prepare_cached(
            "UPDATE rows SET attempt_id = ?2, state = 'UNSENT', verified_reject = 0, not_found_count = 0,
             hold_since = NULL, trx_state = NULL, code = NULL, message = NULL, error_code = NULL,
             error_message = NULL, order_no = NULL, ref_no = NULL, updated_at = ?3,
             last_checked_at = NULL, query_count = 0, resent_after_not_found = 0,
             repay_of = COALESCE(?5, repay_of)
         WHERE id = ?1 AND state = ?4",
        )?
        .execute(params![row.id, attempt_id, now_ms(), row.state.as_str(), repay_of])?;
    one_row_changed(changed, row.id, row.state)?;
    let detail = match (supersedes, repay_of) {
        (_, Some(r)) => Some(format!("re-payment: {r}")),
        (Some(s), None) => Some(format!("supersedes attempt {s}")),
        (None, None) => None,
    };
    append_event(
        &tx,
        &Event {
            run_id: Some(row.run_id),
            row_id: Some(row.id),
            msg_id: Some(msg_id.to_string()),
            kind: EventKind::AttemptAllocated,
            old_state: Some(row.state),
            new_state: Some(RowState::Unsent),
            detail,
            raw: Some(request_bytes.to_vec()),
        },
    )?;
    tx.commit()?;
    Ok(Allocation::Allocated(AttemptRecord {
        id: attempt_id,
        msg_id: msg_id.to_string(),
        seq,
        supersedes,
        operation: operation.to_string(),
        request_bytes: request_bytes.to_vec(),
        send_count: 0,
        first_sent_at: None,
    }))
}

/// Saves every mutable column of `row` if its stored state is still `expected`; appends `event`.
/// Marks a send when `sent` (send_count + 1, first/last sent times).
pub fn save_row(
    conn: &mut Connection,
    row: &RowRecord,
    expected: RowState,
    sent: bool,
    event: &Event,
) -> Result<(), StoreError> {
    let tx = conn.savepoint()?;
    save_row_tx(&tx, row, expected, sent, event)?;
    tx.commit()?;
    Ok(())
}

/// `save_row` inside the caller's savepoint.
pub(crate) fn save_row_tx(
    tx: &Connection,
    row: &RowRecord,
    expected: RowState,
    sent: bool,
    event: &Event,
) -> Result<(), StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE rows SET state = ?3, trx_state = ?4, code = ?5, message = ?6, error_code = ?7,
             error_message = ?8, order_no = ?9, ref_no = ?10, verified_reject = ?11,
             not_found_count = ?12, hold_since = ?13, first_sent_at = ?14, last_sent_at = ?15,
             last_checked_at = ?16, query_count = ?17, updated_at = ?18,
             resent_after_not_found = ?19
         WHERE id = ?1 AND state = ?2",
        )?
        .execute(params![
            row.id,
            expected.as_str(),
            row.state.as_str(),
            row.trx_state,
            row.code,
            row.message,
            row.error_code,
            row.error_message,
            row.order_no,
            row.ref_no,
            row.verified_reject as i64,
            row.not_found_count,
            row.hold_since,
            row.first_sent_at,
            row.last_sent_at,
            row.last_checked_at,
            row.query_count,
            now_ms(),
            row.resent_after_not_found as i64
        ])?;
    one_row_changed(changed, row.id, expected)?;
    if let Some(a) = &row.attempt {
        tx.prepare_cached(
            "UPDATE attempts SET send_count = send_count + ?2, first_sent_at = ?3 WHERE id = ?1",
        )?
        .execute(params![a.id, sent as i64, a.first_sent_at])?;
    }
    if event.kind == EventKind::QueryAnswer {
        if let Some(id) = &event.msg_id {
            // A status query's msgId from a reserved block (`MsgIds::block`) is recorded with
            // its answer; one recorded before use (`new_msg_id`) is already there.
            tx.prepare_cached(
                "INSERT OR IGNORE INTO msg_ids (msg_id, purpose, row_id, created_at)
                 VALUES (?1, 'query', ?2, ?3)",
            )?
            .execute(params![id, row.id, now_ms()])?;
        }
    }
    append_event(tx, event)?;
    Ok(())
}

/// Count and total per report state for a run.
pub fn summary(
    conn: &Connection,
    run_id: i64,
) -> Result<Vec<(RowState, i64, Centavos)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT state, COUNT(*), COALESCE(SUM(amount), 0) FROM rows WHERE run_id = ?1 GROUP BY state",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (s, n, t) = r?;
        out.push((
            RowState::parse(&s).ok_or(StoreError::BadState(s))?,
            n,
            Centavos::new(t),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group commit: jobs of one group share one transaction, a failing job rolls back only its
    /// own savepoint, and results are delivered after the commit.
    #[test]
    fn a_failing_job_rolls_back_only_itself_in_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("g.db")).unwrap();
        let delivered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let job = |key: &'static str, fail: bool| -> Job {
            let delivered = std::sync::Arc::clone(&delivered);
            Box::new(move |c: &mut Connection| {
                let result: Result<(), StoreError> = (|| {
                    let sp = c.savepoint()?;
                    sp.execute("INSERT INTO meta (key, value) VALUES (?1, 'x')", [key])?;
                    if fail {
                        return Err(StoreError::BadState("job fails after its write".into()));
                    }
                    sp.commit()?;
                    Ok(())
                })();
                // Not yet committed: the group transaction is still open.
                assert!(!c.is_autocommit());
                Box::new(move |commit_error: Option<&str>| {
                    delivered
                        .lock()
                        .unwrap()
                        .push((key, result.is_ok(), commit_error.is_none()));
                }) as Deliver
            })
        };
        run_group(
            &mut conn,
            vec![job("g:a", false), job("g:b", true), job("g:c", false)],
            true,
        );
        assert!(conn.is_autocommit(), "the group transaction is closed");
        let keys: Vec<String> = conn
            .prepare("SELECT key FROM meta WHERE key LIKE 'g:%' ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            keys,
            ["g:a", "g:c"],
            "the failed job's write is rolled back"
        );
        assert_eq!(
            *delivered.lock().unwrap(),
            [
                ("g:a", true, true),
                ("g:b", false, true),
                ("g:c", true, true)
            ]
        );
    }
}
