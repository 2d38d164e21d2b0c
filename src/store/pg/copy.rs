//! `migrate-store`: copies a SQLite database's whole history into an empty PostgreSQL store
//! (issue 14, part C), in one PostgreSQL transaction: every run, row, attempt, msgId, event,
//! reconciliation row, approval, balance and notification with its id, and `meta` — the
//! database id and the msgId counters — so the PostgreSQL store goes on issuing msgIds that
//! never repeat one the SQLite database issued, and every reference it paid stays blocked.
//!
//! Refuses a SQLite database not at this build's schema (run any command on it first) and a
//! PostgreSQL store that already holds history. The SQLite file is only read.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::store::StoreError;

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy)]
enum Ty {
    I64,
    I32,
    /// INTEGER 0/1 in SQLite, BOOLEAN in PostgreSQL.
    Bool,
    Text,
    Bytes,
}

enum Val {
    I64(Option<i64>),
    I32(Option<i32>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Val {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Val::I64(v) => v,
            Val::I32(v) => v,
            Val::Bool(v) => v,
            Val::Text(v) => v,
            Val::Bytes(v) => v,
        }
    }
}

use Ty::{Bool, Bytes, Text, I32, I64};

/// A table: name, whether its `id` is an identity to carry over, its columns.
type Table = (&'static str, bool, &'static [(&'static str, Ty)]);

/// The tables in an order that satisfies their references (rows' `attempt_id` is set after the
/// attempts are in).
const TABLES: &[Table] = &[
    (
        "runs",
        true,
        &[
            ("id", I64),
            ("job", Text),
            ("kind", Text),
            ("input_path", Text),
            ("input_sha256", Text),
            ("status", Text),
            ("created_at", I64),
            ("finished_at", I64),
            ("row_count", I64),
            ("total", I64),
            ("balance_start", I64),
            ("balance_end", I64),
            ("last_exit_code", I32),
            ("last_exit_at", I64),
        ],
    ),
    (
        "rows",
        true,
        &[
            ("id", I64),
            ("run_id", I64),
            ("line", I64),
            ("reference", Text),
            ("channel", Text),
            ("account_no", Text),
            ("account_name", Text),
            ("middle_name", Text),
            ("last_name", Text),
            ("bank", Text),
            ("amount", I64),
            ("note", Text),
            ("state", Text),
            ("trx_state", Text),
            ("code", Text),
            ("message", Text),
            ("error_code", Text),
            ("error_message", Text),
            ("order_no", Text),
            ("ref_no", Text),
            ("verified_reject", Bool),
            ("not_found_count", I64),
            ("resent_after_not_found", Bool),
            ("hold_since", I64),
            ("first_sent_at", I64),
            ("last_sent_at", I64),
            ("last_checked_at", I64),
            ("query_count", I64),
            ("updated_at", I64),
            ("raw_channel", Text),
            ("raw_amount", Text),
            ("raw_currency", Text),
            ("repay", Bool),
            ("repay_of", Text),
        ],
    ),
    (
        "attempts",
        true,
        &[
            ("id", I64),
            ("row_id", I64),
            ("msg_id", Text),
            ("seq", I64),
            ("supersedes", I64),
            ("operation", Text),
            ("request_bytes", Bytes),
            ("send_count", I64),
            ("created_at", I64),
            ("first_sent_at", I64),
        ],
    ),
    (
        "msg_ids",
        false,
        &[
            ("msg_id", Text),
            ("purpose", Text),
            ("row_id", I64),
            ("created_at", I64),
        ],
    ),
    (
        "events",
        true,
        &[
            ("id", I64),
            ("at", I64),
            ("run_id", I64),
            ("row_id", I64),
            ("msg_id", Text),
            ("kind", Text),
            ("old_state", Text),
            ("new_state", Text),
            ("detail", Text),
            ("raw", Bytes),
        ],
    ),
    (
        "recon_rows",
        true,
        &[
            ("id", I64),
            ("run_id", I64),
            ("line", I64),
            ("reference", Text),
            ("ref_no", Text),
            ("original_msg_id", Text),
            ("lookup_key", Text),
            ("expected_amount", I64),
            ("expected_state", Text),
            ("expect_not_found", Bool),
            ("source_row_id", I64),
            ("category", Text),
            ("action", Text),
            ("order_no", Text),
            ("provider_amount", I64),
            ("trx_state", Text),
            ("code", Text),
            ("message", Text),
            ("error_code", Text),
            ("error_message", Text),
            ("trx_date", Text),
            ("checked_at", I64),
            ("queries", I64),
        ],
    ),
    ("bank_names", false, &[("name", Text), ("seen_at", I64)]),
    (
        "approvals",
        true,
        &[
            ("id", I64),
            ("job", Text),
            ("action", Text),
            ("by_name", Text),
            ("at", I64),
            ("input_path", Text),
            ("input_sha256", Text),
            ("row_count", I64),
            ("total", I64),
            ("prepared_by", Text),
            ("overrides", Text),
            ("revokes", I64),
        ],
    ),
    (
        "payout_balances",
        false,
        &[("run_id", I64), ("at", I64), ("balance", I64)],
    ),
    (
        "notifications",
        true,
        &[
            ("id", I64),
            ("received_at", I64),
            ("raw", Bytes),
            ("verified", Bool),
            ("verify_form", Text),
            ("original_msg_id", Text),
            ("trx_state", Text),
            ("amount", I64),
            ("mch_id", Text),
            ("order_no", Text),
            ("ref_no", Text),
            ("device_info", Text),
            ("error_code", Text),
            ("error_message", Text),
            ("trx_date", Text),
            ("outcome", Text),
            ("detail", Text),
            ("run_id", I64),
            ("row_id", I64),
        ],
    ),
    ("meta", false, &[("key", Text), ("value", Text)]),
];

/// Rows read from SQLite at a time (memory stays flat for a database of any size).
const PAGE: i64 = 5_000;

/// What was copied: rows per table.
pub type Copied = Vec<(&'static str, u64)>;

fn read_page(
    src: &Connection,
    table: &str,
    cols: &[(&str, Ty)],
    after: i64,
) -> Result<Vec<(i64, Vec<Val>)>, StoreError> {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let sql = format!(
        "SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        names.join(", ")
    );
    let mut stmt = src.prepare_cached(&sql)?;
    let rows = stmt.query_map([after, PAGE], |r| {
        let rowid: i64 = r.get(0)?;
        let mut vals = Vec::with_capacity(cols.len());
        for (i, (_, ty)) in cols.iter().enumerate() {
            let at = i + 1;
            vals.push(match ty {
                Ty::I64 => Val::I64(r.get(at)?),
                Ty::I32 => Val::I32(r.get(at)?),
                Ty::Bool => Val::Bool(r.get::<_, Option<i64>>(at)?.map(|v| v != 0)),
                Ty::Text => Val::Text(r.get(at)?),
                Ty::Bytes => Val::Bytes(r.get(at)?),
            });
        }
        Ok((rowid, vals))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl PgStore {
    /// Copies the SQLite database at `sqlite` into this (empty) store. See the module doc.
    pub async fn copy_from_sqlite(&self, sqlite: &Path) -> Result<Copied, StoreError> {
        let src = Connection::open_with_flags(sqlite, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
            |source| StoreError::Open {
                path: sqlite.to_path_buf(),
                source,
            },
        )?;
        let found: i64 = src.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = crate::store::MIGRATIONS.len() as i64;
        if found != known {
            return Err(StoreError::Outdated {
                path: sqlite.to_path_buf(),
                found,
                known,
            });
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let used: i64 = tx
            .query_one(
                "SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM events)
                      + (SELECT COUNT(*) FROM notifications) + (SELECT COUNT(*) FROM approvals)",
                &[],
            )
            .await?
            .try_get(0)?;
        if used > 0 {
            return Err(StoreError::PgOpen {
                url: self.describe().to_string(),
                why: "it already holds history (runs, events, notifications or approvals): \
                      migrate-store copies into an empty store only"
                    .into(),
            });
        }
        // The SQLite database's id and counters replace the fresh store's.
        tx.execute("DELETE FROM meta", &[]).await?;
        let mut copied = Copied::new();
        for (table, identity, cols) in TABLES {
            let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            let overriding = if *identity {
                " OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO {table} ({}){overriding} VALUES ({})",
                    names.join(", "),
                    marks.join(", ")
                ))
                .await?;
            let mut n = 0u64;
            let mut after = 0i64;
            loop {
                let page = read_page(&src, table, cols, after)?;
                let Some(last) = page.last() else { break };
                after = last.0;
                for (_, vals) in &page {
                    let params: Vec<&(dyn ToSql + Sync)> = vals.iter().map(Val::sql).collect();
                    tx.execute(&insert, &params).await?;
                    n += 1;
                }
            }
            if *table == "attempts" {
                // Rows point at their current attempt once the attempts exist.
                let pairs = src
                    .prepare("SELECT id, attempt_id FROM rows WHERE attempt_id IS NOT NULL")?
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let (ids, attempts): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
                tx.execute(
                    "UPDATE rows r SET attempt_id = u.a
                     FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS u(id, a) WHERE r.id = u.id",
                    &[&ids, &attempts],
                )
                .await?;
            }
            if *identity {
                // New ids continue after the copied ones.
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                       GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table}), 1),
                                       (SELECT COUNT(*) > 0 FROM {table}))"
                    ),
                    &[],
                )
                .await?;
            }
            copied.push((*table, n));
        }
        tx.commit().await?;
        Ok(copied)
    }
}
