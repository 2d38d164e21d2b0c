//! Reconciliation SQL: recon runs and their rows, batched result writes, streaming reads for
//! the report. Part of the store: callers run these on the writer thread via `Store::call`.

use rusqlite::{params, Connection, OptionalExtension};

use super::{append_event, columns_into, now_ms, record_msg_id, Event, StoreError};
use crate::domain::{Centavos, EventKind, ReconCategory, RowState};

/// Categories that are not re-checked when a run resumes.
pub const FINAL_CATEGORIES: [&str; 8] = [
    "MATCHED",
    "AMOUNT_MISMATCH",
    "STATE_MISMATCH",
    "PAID_BUT_RECORDED_UNPAID",
    "DUPLICATE_MATCH",
    "NOT_FOUND",
    "REVERSED_AFTER_SUCCESS",
    "DUPLICATE_IN_INPUT",
];

/// Categories re-checked when a run resumes (a recon job's run stays open while any remain).
pub const OPEN_CATEGORIES: [&str; 4] = ["PENDING", "HELD_TIMEOUT", "STALE_PENDING", "UNKNOWN"];

/// The action of a `DUPLICATE_MATCH` row.
pub const DUPLICATE_MATCH_ACTION: &str = "one Starpay payment is claimed by two lines: check which line it belongs to; the other one is not paid by it";

/// A row to insert.
#[derive(Debug, Clone)]
pub struct NewReconRow {
    pub line: u64,
    pub reference: Option<String>,
    pub ref_no: Option<String>,
    pub original_msg_id: Option<String>,
    pub expected_amount: Option<Centavos>,
    pub expected_state: Option<String>,
}

/// A row still to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconTodo {
    pub id: i64,
    pub line: i64,
    pub ref_no: Option<String>,
    pub original_msg_id: Option<String>,
    pub expected_amount: Option<Centavos>,
    pub expected_state: Option<String>,
    pub expect_not_found: bool,
    pub source_row_id: Option<i64>,
    /// The payout row's state now (reconcile of a payout run).
    pub source_state: Option<RowState>,
    pub source_amount: Option<Centavos>,
    /// The payout row is held as unpaid: REJECTED or UNSENT (an attempt never sent is UNSENT).
    pub recorded_unpaid: bool,
    pub queries: i64,
}

/// Why a reconcile moves a payout row (the event kind and message say it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveWhy {
    /// Starpay moved on (SUCCESS → REVERSED, PENDING → final, ...).
    Drift,
    /// A NEEDS_ATTENTION row got a verified final answer.
    ResolvedAttention,
    /// A row held as unpaid that Starpay has SUCCESS or PROCESSING/INIT.
    PaidRecordedUnpaid {
        ours: Option<Centavos>,
        theirs: Option<Centavos>,
    },
}

/// A payout row to move (compare-and-set on its state and current attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMove {
    pub row_id: i64,
    pub old: RowState,
    pub new: RowState,
    pub why: MoveWhy,
}

/// The outcome of checking one row.
#[derive(Debug, Clone, Default)]
pub struct ReconResult {
    pub id: i64,
    pub category: ReconCategory,
    pub action: String,
    pub order_no: Option<String>,
    pub provider_amount: Option<Centavos>,
    pub trx_state: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub trx_date: Option<String>,
    pub checked_at: i64,
    pub queries: i64,
    /// Query msgIds used (recorded as issued).
    pub query_ids: Vec<String>,
    /// The last verified answer (evidence for the event log).
    pub raw: Option<Vec<u8>>,
    /// A payout row that moves with this result (drift, a resolved NEEDS_ATTENTION, a row held
    /// as unpaid that Starpay paid).
    pub moved: Option<RowMove>,
}

/// A row as reported.
#[derive(Debug, Clone, Default)]
pub struct ReconRecord {
    pub line: i64,
    pub reference: Option<String>,
    pub ref_no: Option<String>,
    pub original_msg_id: Option<String>,
    pub order_no: Option<String>,
    pub expected_amount: Option<Centavos>,
    pub provider_amount: Option<Centavos>,
    pub expected_state: Option<String>,
    pub trx_state: Option<String>,
    pub category: Option<ReconCategory>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub trx_date: Option<String>,
    pub checked_at: Option<i64>,
    pub action: Option<String>,
}

pub fn create_recon_run(
    conn: &Connection,
    job: &str,
    kind: &str,
    input_path: &str,
    sha: &str,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO runs (job, kind, input_path, input_sha256, status, created_at, row_count, total)
         VALUES (?1, ?2, ?3, ?4, 'OPEN', ?5, 0, 0)",
        params![job, kind, input_path, sha, now_ms()],
    )?;
    let run_id = conn.last_insert_rowid();
    append_event(
        conn,
        &Event {
            run_id: Some(run_id),
            kind: EventKind::RunCreated,
            detail: Some(format!("{kind} of {input_path} (sha256 {sha})")),
            ..Event::default()
        },
    )?;
    Ok(run_id)
}

/// Inserts rows inside the caller's transaction.
pub fn insert_recon_rows_tx(
    tx: &Connection,
    run_id: i64,
    rows: &[NewReconRow],
) -> Result<(), StoreError> {
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO recon_rows (run_id, line, reference, ref_no, original_msg_id, lookup_key,
                 expected_amount, expected_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in rows {
            let key = match (&r.ref_no, &r.original_msg_id) {
                (Some(rf), _) => format!("ref:{rf}"),
                (None, Some(m)) => format!("msg:{m}"),
                (None, None) => format!("line:{}", r.line),
            };
            stmt.execute(params![
                run_id,
                r.line as i64,
                r.reference,
                r.ref_no,
                r.original_msg_id,
                key,
                r.expected_amount.map(Centavos::get),
                r.expected_state
            ])?;
        }
    }
    Ok(())
}

/// After the last insert: counts and totals, and every later copy of a transaction marked
/// DUPLICATE_IN_INPUT (the first one is checked).
pub fn seal_recon_run_tx(tx: &Connection, run_id: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE runs SET row_count = (SELECT COUNT(*) FROM recon_rows WHERE run_id = ?1),
             total = (SELECT COALESCE(SUM(expected_amount), 0) FROM recon_rows WHERE run_id = ?1)
         WHERE id = ?1",
        [run_id],
    )?;
    tx.execute(
        "UPDATE recon_rows SET category = 'DUPLICATE_IN_INPUT',
             action = 'remove the duplicate line; the first one was checked',
             message = 'same transaction as line ' || (SELECT MIN(f.line) FROM recon_rows f
                 WHERE f.run_id = recon_rows.run_id AND f.lookup_key = recon_rows.lookup_key)
         WHERE run_id = ?1 AND category IS NULL AND id NOT IN (
             SELECT MIN(id) FROM recon_rows WHERE run_id = ?1 GROUP BY lookup_key)",
        [run_id],
    )?;
    Ok(())
}

/// Builds the recon rows of a reconcile of payout run `payout_run` (one per payout row), inside
/// the caller's transaction, so the run and its rows appear together or not at all.
pub fn fill_from_payout_run_tx(
    tx: &Connection,
    run_id: i64,
    payout_run: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO recon_rows (run_id, line, reference, original_msg_id, lookup_key, expected_amount,
             expected_state, expect_not_found, source_row_id)
         SELECT ?1, r.line, NULLIF(r.reference, ''), a.msg_id,
                COALESCE('msg:' || a.msg_id, 'line:' || r.line),
                NULLIF(r.amount, 0),
                CASE r.state WHEN 'SUCCESS' THEN 'SUCCESS'
                             WHEN 'FAILED' THEN COALESCE(r.trx_state, 'FAIL')
                             WHEN 'REVERSED' THEN 'REVERSED' ELSE NULL END,
                -- Never sent, known not processed (UNSENT) or rejected: expected to be absent. An
                -- UNSENT row waiting to resend under the not-found rule may have been paid (the
                -- first send may have landed): not expected absent.
                CASE WHEN r.state = 'REJECTED' OR a.id IS NULL
                          OR (r.state = 'UNSENT' AND r.resent_after_not_found = 0) THEN 1 ELSE 0 END,
                r.id
         FROM rows r LEFT JOIN attempts a ON a.id = r.attempt_id
         WHERE r.run_id = ?2 ORDER BY r.line",
        params![run_id, payout_run],
    )?;
    // Rows that were never sent have nothing to query.
    tx.execute(
        "UPDATE recon_rows SET category = 'MATCHED', action = 'none: never sent, nothing at Starpay',
             message = 'not sent (no msgId)', checked_at = ?2
         WHERE run_id = ?1 AND original_msg_id IS NULL",
        params![run_id, now_ms()],
    )?;
    seal_recon_run_tx(tx, run_id)
}

/// The next page of rows still to check (no category yet, or one that resumes re-check).
pub fn recon_todo_page(
    conn: &Connection,
    run_id: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<ReconTodo>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT x.id, x.line, x.ref_no, x.original_msg_id, x.expected_amount, x.expected_state,
                x.expect_not_found, x.source_row_id, r.state, r.amount,
                -- Held as unpaid: REJECTED, or UNSENT (which covers an attempt never sent: a
                -- send is counted only once it has left, and an IN_FLIGHT row is unknown, not
                -- unpaid).
                CASE WHEN r.state IN ('REJECTED', 'UNSENT') THEN 1 ELSE 0 END, x.queries
         FROM recon_rows x LEFT JOIN rows r ON r.id = x.source_row_id
         WHERE x.run_id = ?1 AND x.id > ?2
           AND (x.category IS NULL
                OR x.category IN ('PENDING', 'HELD_TIMEOUT', 'STALE_PENDING', 'UNKNOWN'))
         ORDER BY x.id LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![run_id, after_id, limit],
        columns_into!(ReconTodo {
            id,
            line,
            ref_no,
            original_msg_id,
            expected_amount,
            expected_state,
            expect_not_found,
            source_row_id,
            source_state,
            source_amount,
            recorded_unpaid,
            queries
        }),
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Writes a batch of results in one transaction: the rows, the query msgIds, one event per
/// row (with the raw answer), and any drift of a payout row (compare-and-set).
pub fn save_recon_results(
    conn: &mut Connection,
    run_id: i64,
    results: &[ReconResult],
) -> Result<(), StoreError> {
    let tx = conn.savepoint()?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE recon_rows SET category = ?2, action = ?3, order_no = ?4, provider_amount = ?5,
                 trx_state = ?6, code = ?7, message = ?8, error_code = ?9, error_message = ?10,
                 trx_date = ?11, checked_at = ?12, queries = ?13
             WHERE id = ?1",
        )?;
        for r in results {
            stmt.execute(params![
                r.id,
                r.category,
                r.action,
                r.order_no,
                r.provider_amount.map(Centavos::get),
                r.trx_state,
                r.code,
                r.message,
                r.error_code,
                r.error_message,
                r.trx_date,
                r.checked_at,
                r.queries
            ])?;
            for q in &r.query_ids {
                record_msg_id(&tx, q, "recon_query", Some(r.id))?;
            }
            append_event(
                &tx,
                &Event {
                    run_id: Some(run_id),
                    msg_id: r.query_ids.last().cloned(),
                    kind: EventKind::ReconChecked,
                    detail: Some(format!("recon row {}: {}", r.id, r.category)),
                    raw: r.raw.clone(),
                    ..Event::default()
                },
            )?;
            if let Some(m) = &r.moved {
                move_payout_row(&tx, run_id, r, m)?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Applies one move of a payout row (compare-and-set on its state and on its current attempt
/// being the one the recon row queried), with an event carrying the raw answer. A row that
/// changed meanwhile is left alone.
fn move_payout_row(
    tx: &Connection,
    run_id: i64,
    r: &ReconResult,
    m: &RowMove,
) -> Result<(), StoreError> {
    let old_message: Option<String> = tx
        .query_row("SELECT message FROM rows WHERE id = ?1", [m.row_id], |x| {
            x.get(0)
        })
        .optional()?
        .flatten();
    let (kind, detail, message) = describe_move(run_id, r, m, old_message.as_deref());
    let changed = tx.execute(
        "UPDATE rows SET state = ?3, trx_state = ?4, error_code = ?5, error_message = ?6,
             order_no = COALESCE(?7, order_no), last_checked_at = ?8, updated_at = ?8,
             hold_since = CASE WHEN ?3 = 'FAIL_HELD' THEN COALESCE(hold_since, ?8) ELSE NULL END,
             message = COALESCE(?10, message),
             -- Starpay has the row: whatever rejection or not-found streak we had is void (a
             -- later 404 must not make it REJECTED again).
             verified_reject = CASE WHEN ?11 THEN 0 ELSE verified_reject END,
             not_found_count = CASE WHEN ?11 THEN 0 ELSE not_found_count END
         WHERE id = ?1 AND state = ?2
           AND attempt_id = (SELECT a.id FROM attempts a JOIN recon_rows x
                             ON x.original_msg_id = a.msg_id WHERE x.id = ?9)",
        params![
            m.row_id,
            m.old.as_str(),
            m.new.as_str(),
            r.trx_state,
            r.error_code,
            r.error_message,
            r.order_no,
            now_ms(),
            r.id,
            message,
            matches!(m.why, MoveWhy::PaidRecordedUnpaid { .. })
        ],
    )?;
    if changed == 1 {
        append_event(
            tx,
            &Event {
                run_id: Some(run_id),
                row_id: Some(m.row_id),
                msg_id: r.query_ids.last().cloned(),
                kind,
                old_state: Some(m.old),
                new_state: Some(m.new),
                detail: Some(detail),
                raw: r.raw.clone(),
            },
        )?;
    }
    Ok(())
}

/// The event kind, event detail and new row message of a payout row's move (both backends).
pub(crate) fn describe_move(
    run_id: i64,
    r: &ReconResult,
    m: &RowMove,
    old_message: Option<&str>,
) -> (EventKind, String, Option<String>) {
    let says = r.trx_state.as_deref().unwrap_or("?");
    let was = match old_message.filter(|s| !s.is_empty()) {
        Some(why) => format!("was {}: {why}", m.old),
        None => format!("was {}", m.old),
    };
    let money = |a: Option<Centavos>| {
        a.map(|a| format!("PHP {a}"))
            .unwrap_or_else(|| "an unknown amount".into())
    };
    match &m.why {
        MoveWhy::Drift => (
            EventKind::ReconcileDrift,
            format!("reconcile run {run_id}: Starpay says {says}"),
            None,
        ),
        MoveWhy::ResolvedAttention => {
            let text = format!("reconcile run {run_id}: Starpay says {says}; {was}");
            (
                EventKind::ReconcileResolvedAttention,
                text.clone(),
                Some(text),
            )
        }
        MoveWhy::PaidRecordedUnpaid { ours, theirs } => {
            let text = if m.new == RowState::NeedsAttention {
                format!(
                    "reconcile run {run_id}: Starpay says {says} for {} but this row is {}; {was}; recorded as unpaid although Starpay has it: do not pay this reference again until a human has checked it",
                    money(*theirs),
                    money(*ours)
                )
            } else {
                format!(
                    "reconcile run {run_id}: Starpay says {says} (amount {}); {was}; recorded as unpaid although Starpay has it: do not pay this reference again",
                    money(*theirs)
                )
            };
            (
                EventKind::ReconcilePaidRecordedUnpaid,
                text.clone(),
                Some(text),
            )
        }
    }
}

/// Two or more rows of a run that resolved to the same Starpay order (`orderNo`) must not all be
/// MATCHED: every MATCHED row with an earlier line on the same order becomes DUPLICATE_MATCH,
/// naming the line that claimed the payment first. Over the whole run in SQL, so it holds across
/// batches and across a killed-and-resumed run; idempotent. Returns the rows changed.
pub fn mark_duplicate_matches(conn: &Connection, run_id: i64) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE recon_rows SET category = 'DUPLICATE_MATCH', action = ?2,
             message = 'same Starpay order ' || order_no || ' as line '
                 || (SELECT MIN(f.line) FROM recon_rows f
                     WHERE f.run_id = recon_rows.run_id AND f.order_no = recon_rows.order_no
                       AND f.category IS NOT NULL)
                 || ', which claimed the payment first'
         WHERE run_id = ?1 AND category = 'MATCHED' AND order_no IS NOT NULL
           AND EXISTS (SELECT 1 FROM recon_rows f
                       WHERE f.run_id = ?1 AND f.order_no = recon_rows.order_no
                         AND f.line < recon_rows.line AND f.category IS NOT NULL)",
        params![run_id, DUPLICATE_MATCH_ACTION],
    )?)
}

/// Rows not checked at all yet (a reconcile pass is finished only when this is 0).
pub fn unchecked_recon_rows(conn: &Connection, run_id: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM recon_rows WHERE run_id = ?1 AND category IS NULL",
        [run_id],
        |r| r.get(0),
    )?)
}

pub fn set_balance(
    conn: &Connection,
    run_id: i64,
    start: bool,
    balance: Centavos,
) -> Result<(), StoreError> {
    let sql = if start {
        "UPDATE runs SET balance_start = COALESCE(balance_start, ?2) WHERE id = ?1"
    } else {
        "UPDATE runs SET balance_end = ?2 WHERE id = ?1"
    };
    conn.execute(sql, params![run_id, balance.get()])?;
    Ok(())
}

pub fn balances(
    conn: &Connection,
    run_id: i64,
) -> Result<(Option<Centavos>, Option<Centavos>), StoreError> {
    let pair: Option<(Option<i64>, Option<i64>)> = conn
        .query_row(
            "SELECT balance_start, balance_end FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (a, b) = pair.unwrap_or((None, None));
    Ok((a.map(Centavos::new), b.map(Centavos::new)))
}

/// Rows that still need a check (for the exit code and whether the run is finished).
pub fn open_recon_rows(conn: &Connection, run_id: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM recon_rows WHERE run_id = ?1
           AND (category IS NULL OR category IN ('PENDING', 'HELD_TIMEOUT', 'STALE_PENDING', 'UNKNOWN'))",
        [run_id],
        |r| r.get(0),
    )?)
}

/// Count and amount per category (amount: Starpay's when known, else the expected one).
pub fn recon_summary(
    conn: &Connection,
    run_id: i64,
) -> Result<Vec<(ReconCategory, i64, Centavos)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT COALESCE(category, 'UNKNOWN'), COUNT(*), COALESCE(SUM(COALESCE(provider_amount, expected_amount, 0)), 0)
         FROM recon_rows WHERE run_id = ?1 GROUP BY 1",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((r.get(0)?, r.get(1)?, Centavos::new(r.get(2)?)))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Counts and amounts per category, and the balances at start and end of a run.
#[derive(Debug, Clone, Default)]
pub struct ReconTotals {
    pub counts: Vec<(ReconCategory, i64, Centavos)>,
    pub balance_start: Option<Centavos>,
    pub balance_end: Option<Centavos>,
}

/// Up to `limit` report rows in input order after line `after_line` (keyset paging on the
/// `(run_id, line)` unique index: memory stays flat for a run of any size).
pub fn recon_report_page(
    conn: &Connection,
    run_id: i64,
    after_line: i64,
    limit: i64,
) -> Result<Vec<ReconRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT line, reference, ref_no, original_msg_id, order_no, expected_amount, provider_amount,
                expected_state, trx_state, category, code, message, error_code, error_message,
                trx_date, checked_at, action
         FROM recon_rows WHERE run_id = ?1 AND line > ?2 ORDER BY line LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![run_id, after_line, limit],
        columns_into!(ReconRecord {
            line,
            reference,
            ref_no,
            original_msg_id,
            order_no,
            expected_amount,
            provider_amount,
            expected_state,
            trx_state,
            category,
            code,
            message,
            error_code,
            error_message,
            trx_date,
            checked_at,
            action
        }),
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
