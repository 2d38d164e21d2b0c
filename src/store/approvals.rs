//! The approval log's SQL (migration 0008): staged, approved and revoked payout files, append-
//! only (triggers refuse UPDATE and DELETE), each entry written with its event in one
//! transaction; and the balance read at a payout run's pre-flight, for its HTML summary. The
//! rules that read the log are `engine::approval`'s.

use rusqlite::{params, Connection};

use crate::domain::{Centavos, EventKind};

use super::{append_event, now_ms, Event, StoreError};

/// What an entry of the approval log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalAction {
    /// `stage`: who prepared the file.
    Staged,
    /// `approve`: who approved the file's exact bytes.
    Approved,
    /// `approve --revoke`: names the approval it revokes.
    Revoked,
}

impl ApprovalAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalAction::Staged => "STAGED",
            ApprovalAction::Approved => "APPROVED",
            ApprovalAction::Revoked => "REVOKED",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<ApprovalAction, StoreError> {
        match s {
            "STAGED" => Ok(ApprovalAction::Staged),
            "APPROVED" => Ok(ApprovalAction::Approved),
            "REVOKED" => Ok(ApprovalAction::Revoked),
            other => Err(StoreError::BadState(other.to_string())),
        }
    }

    fn event(self) -> EventKind {
        match self {
            ApprovalAction::Staged => EventKind::FileStaged,
            ApprovalAction::Approved => EventKind::FileApproved,
            ApprovalAction::Revoked => EventKind::ApprovalRevoked,
        }
    }
}

/// One entry of the approval log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalEntry {
    pub id: i64,
    pub job: String,
    pub action: ApprovalAction,
    pub by: String,
    /// UTC ms.
    pub at: i64,
    pub input_path: String,
    pub input_sha256: String,
    pub rows: i64,
    pub total: Centavos,
    pub prepared_by: Option<String>,
    /// Spending caps this approval covers (`max_total`, `per_bank.GCash`).
    pub overrides: Vec<String>,
    pub revokes: Option<i64>,
}

/// An entry to append (`id` and `at` are the store's).
#[derive(Debug, Clone)]
pub struct NewApprovalEntry {
    pub job: String,
    pub action: ApprovalAction,
    pub by: String,
    pub input_path: String,
    pub input_sha256: String,
    pub rows: i64,
    pub total: Centavos,
    pub prepared_by: Option<String>,
    pub overrides: Vec<String>,
    pub revokes: Option<i64>,
}

/// The event kind of an entry (both backends).
pub(crate) fn event_of(action: ApprovalAction) -> EventKind {
    action.event()
}

/// The event detail of an entry (both backends).
pub(crate) fn describe(e: &NewApprovalEntry) -> String {
    let mut detail = format!(
        "job {:?} file {} sha256 {} by {:?}: {} rows, PHP {}",
        e.job, e.input_path, e.input_sha256, e.by, e.rows, e.total
    );
    if let Some(p) = &e.prepared_by {
        detail.push_str(&format!("; prepared by {p:?}"));
    }
    if !e.overrides.is_empty() {
        detail.push_str(&format!("; overrides {}", e.overrides.join(", ")));
    }
    if let Some(r) = e.revokes {
        detail.push_str(&format!("; revokes approval {r}"));
    }
    detail
}

/// Appends `e` and its event in one transaction; returns the entry as stored.
pub fn append(conn: &mut Connection, e: &NewApprovalEntry) -> Result<ApprovalEntry, StoreError> {
    let tx = conn.savepoint()?;
    let at = now_ms();
    tx.execute(
        "INSERT INTO approvals (job, action, by_name, at, input_path, input_sha256, row_count,
                                total, prepared_by, overrides, revokes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            e.job,
            e.action.as_str(),
            e.by,
            at,
            e.input_path,
            e.input_sha256,
            e.rows,
            e.total.get(),
            e.prepared_by,
            e.overrides.join("\n"),
            e.revokes
        ],
    )?;
    let id = tx.last_insert_rowid();
    append_event(
        &tx,
        &Event {
            kind: event_of(e.action),
            detail: Some(describe(e)),
            ..Event::default()
        },
    )?;
    tx.commit()?;
    Ok(ApprovalEntry {
        id,
        job: e.job.clone(),
        action: e.action,
        by: e.by.clone(),
        at,
        input_path: e.input_path.clone(),
        input_sha256: e.input_sha256.clone(),
        rows: e.rows,
        total: e.total,
        prepared_by: e.prepared_by.clone(),
        overrides: e.overrides.clone(),
        revokes: e.revokes,
    })
}

/// Every entry of `job`'s approval log, oldest first.
pub fn log_of_job(conn: &Connection, job: &str) -> Result<Vec<ApprovalEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, job, action, by_name, at, input_path, input_sha256, row_count, total,
                prepared_by, overrides, revokes
         FROM approvals WHERE job = ?1 ORDER BY at, id",
    )?;
    let rows = stmt
        .query_map([job], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, String>(10)?,
                r.get::<_, Option<i64>>(11)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(
            |(id, job, action, by, at, path, sha, n, total, prepared, overrides, revokes)| {
                Ok(ApprovalEntry {
                    id,
                    job,
                    action: ApprovalAction::parse(&action)?,
                    by,
                    at,
                    input_path: path,
                    input_sha256: sha,
                    rows: n,
                    total: Centavos::new(total),
                    prepared_by: prepared,
                    overrides: overrides
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                    revokes,
                })
            },
        )
        .collect()
}

/// Records the balance of a payout run's pre-flight (5.6); the first one stays.
pub fn record_preflight_balance(
    conn: &Connection,
    run_id: i64,
    balance: Centavos,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO payout_balances (run_id, at, balance) VALUES (?1, ?2, ?3)",
        params![run_id, now_ms(), balance.get()],
    )?;
    Ok(())
}

/// The pre-flight balance of a payout run and when it was read, if recorded.
pub fn preflight_balance(
    conn: &Connection,
    run_id: i64,
) -> Result<Option<(Centavos, i64)>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT balance, at FROM payout_balances WHERE run_id = ?1",
            [run_id],
            |r| Ok((Centavos::new(r.get(0)?), r.get(1)?)),
        )
        .optional()?)
}
