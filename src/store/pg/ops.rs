//! The store's named operations on PostgreSQL: the same list, signatures and atomic rules as
//! the SQLite backend (`store/api.rs` over `store/mod.rs`, `recon.rs`, `notifications.rs`,
//! `approvals.rs`), one transaction per operation that writes more than one statement,
//! committed before it returns. The SQL is the SQLite SQL in PostgreSQL's dialect (`$n`
//! parameters, `RETURNING id`, BOOLEAN flags, `::BIGINT` on sums).

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::PgStore;
use crate::domain::{Centavos, EventKind, ReconCategory, RowState, RunKind};
use crate::store::approvals::{ApprovalAction, ApprovalEntry, NewApprovalEntry};
use crate::store::notifications::{
    self as notes, Decision, NotifiedPayment, NotifyOutcome, Received, StoredNotification,
};
use crate::store::recon::{
    MoveWhy, NewReconRow, ReconRecord, ReconResult, ReconTodo, ReconTotals, RowMove,
    DUPLICATE_MATCH_ACTION,
};
use crate::store::{
    now_ms, Allocation, AttemptRecord, EarlierAttempt, Event, HistoryAttempt, HistoryEvent, NewRow,
    NewRun, PayoutCounts, PayoutRowSink, RawFields, ReconRowSink, ReferenceCheck, ReferenceHistory,
    ReferenceUse, RowRecord, RowSink, RunRecord, SinkRow, StateCount, StoreError,
};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn state(s: String) -> Result<RowState, StoreError> {
    RowState::parse(&s).ok_or(StoreError::BadState(s))
}

fn category(s: String) -> Result<ReconCategory, StoreError> {
    ReconCategory::parse(&s).ok_or(StoreError::BadState(s))
}

fn one_row_changed(changed: u64, row_id: i64, expected: RowState) -> Result<(), StoreError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::StateConflict { row_id, expected })
    }
}

/// Serialises this transaction against every other one holding the same key (released at
/// COMMIT or ROLLBACK): what SQLite's single writer gives for free.
async fn xact_lock(c: &impl GenericClient, what: &str, key: &str) -> Result<(), StoreError> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || $1::TEXT, 0))",
        &[&format!("/{what}/{key}")],
    )
    .await?;
    Ok(())
}

async fn append_event(c: &impl GenericClient, e: &Event) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO events (at, run_id, row_id, msg_id, kind, old_state, new_state, detail, raw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &now_ms(),
            &e.run_id,
            &e.row_id,
            &e.msg_id,
            &e.kind.as_str(),
            &e.old_state.map(RowState::as_str),
            &e.new_state.map(RowState::as_str),
            &e.detail,
            &e.raw,
        ],
    )
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ row mappers

const RUN_COLS: &str =
    "id, job, kind, input_path, input_sha256, status = 'FINISHED', created_at, finished_at,
     row_count, total, last_exit_code, last_exit_at";

fn run_from(r: &Row) -> Result<RunRecord, StoreError> {
    let kind: String = r.try_get(2)?;
    Ok(RunRecord {
        id: r.try_get(0)?,
        job: r.try_get(1)?,
        kind: RunKind::parse(&kind).ok_or(StoreError::BadState(kind))?,
        input_path: r.try_get(3)?,
        input_sha256: r.try_get(4)?,
        finished: r.try_get(5)?,
        created_at: r.try_get(6)?,
        finished_at: r.try_get(7)?,
        row_count: r.try_get(8)?,
        total: Centavos::new(r.try_get(9)?),
        last_exit_code: r.try_get(10)?,
        last_exit_at: r.try_get(11)?,
    })
}

const ROW_SELECT: &str =
    "SELECT r.id, r.run_id, r.line, r.reference, r.channel, r.account_no, r.account_name,
    r.middle_name, r.last_name, r.bank, r.amount, r.note, r.state, r.trx_state, r.code, r.message,
    r.error_code, r.error_message, r.order_no, r.ref_no, r.verified_reject, r.not_found_count,
    r.hold_since, r.first_sent_at, r.last_sent_at, r.last_checked_at, r.query_count,
    r.resent_after_not_found, a.id, a.msg_id, a.seq, a.supersedes, a.operation, a.request_bytes, a.send_count,
    (SELECT COALESCE(SUM(send_count), 0)::BIGINT FROM attempts x WHERE x.row_id = r.id),
    a.first_sent_at, r.repay, r.repay_of, r.raw_channel, r.raw_amount, r.raw_currency,
    (r.state = 'REVERSED' AND EXISTS (SELECT 1 FROM events e WHERE e.row_id = r.id
        AND e.old_state = 'SUCCESS' AND e.new_state = 'REVERSED'))
    FROM rows r LEFT JOIN attempts a ON a.id = r.attempt_id";

/// The columns of `ROW_SELECT`, in order (the SQLite side's `row_from`).
fn row_from(r: &Row) -> Result<RowRecord, StoreError> {
    let attempt_id: Option<i64> = r.try_get(28)?;
    let attempt = match attempt_id {
        None => None,
        Some(id) => Some(AttemptRecord {
            id,
            msg_id: r.try_get(29)?,
            seq: r.try_get(30)?,
            supersedes: r.try_get(31)?,
            operation: r.try_get(32)?,
            request_bytes: r.try_get(33)?,
            send_count: r.try_get(34)?,
            first_sent_at: r.try_get(36)?,
        }),
    };
    Ok(RowRecord {
        id: r.try_get(0)?,
        run_id: r.try_get(1)?,
        line: r.try_get(2)?,
        reference: r.try_get(3)?,
        channel: r.try_get(4)?,
        account_no: r.try_get(5)?,
        account_name: r.try_get(6)?,
        middle_name: r.try_get(7)?,
        last_name: r.try_get(8)?,
        bank: r.try_get(9)?,
        amount: Centavos::new(r.try_get(10)?),
        note: r.try_get(11)?,
        state: state(r.try_get(12)?)?,
        trx_state: r.try_get(13)?,
        code: r.try_get(14)?,
        message: r.try_get(15)?,
        error_code: r.try_get(16)?,
        error_message: r.try_get(17)?,
        order_no: r.try_get(18)?,
        ref_no: r.try_get(19)?,
        attempt,
        verified_reject: r.try_get(20)?,
        not_found_count: r.try_get(21)?,
        hold_since: r.try_get(22)?,
        first_sent_at: r.try_get(23)?,
        last_sent_at: r.try_get(24)?,
        last_checked_at: r.try_get(25)?,
        query_count: r.try_get(26)?,
        resent_after_not_found: r.try_get(27)?,
        sends: r.try_get(35)?,
        repay: r.try_get(37)?,
        repay_of: r.try_get(38)?,
        raw: RawFields {
            channel: r.try_get(39)?,
            amount: r.try_get(40)?,
            currency: r.try_get(41)?,
        },
        reversed_after_success: r.try_get(42)?,
    })
}

const OPEN_FILTER: &str =
    " AND r.state NOT IN ('SUCCESS','FAILED','REVERSED','REJECTED','NEEDS_ATTENTION')";

pub(super) async fn rows_where(
    c: &impl GenericClient,
    filter: &str,
    params: Params<'_>,
) -> Result<Vec<RowRecord>, StoreError> {
    c.query(&format!("{ROW_SELECT} {filter}"), params)
        .await?
        .iter()
        .map(row_from)
        .collect()
}

async fn row_by_id(c: &impl GenericClient, row_id: i64) -> Result<RowRecord, StoreError> {
    let rows = rows_where(c, "WHERE r.id = $1", &[&row_id]).await?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::BadState(format!("row {row_id} does not exist")))
}

async fn reference_uses(
    c: &impl GenericClient,
    reference: &str,
    except_row: Option<i64>,
) -> Result<Vec<ReferenceUse>, StoreError> {
    c.query(
        "SELECT r.run_id, r.id, r.line, r.state, r.attempt_id IS NOT NULL, u.status = 'OPEN'
         FROM rows r JOIN runs u ON u.id = r.run_id
         WHERE r.reference = $1 AND ($2::BIGINT IS NULL OR r.id <> $2) ORDER BY r.id DESC",
        &[&reference, &except_row],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ReferenceUse {
            run_id: r.try_get(0)?,
            row_id: r.try_get(1)?,
            line: r.try_get(2)?,
            state: state(r.try_get(3)?)?,
            has_attempt: r.try_get(4)?,
            run_open: r.try_get(5)?,
        })
    })
    .collect()
}

async fn record_msg_id(
    c: &impl GenericClient,
    msg_id: &str,
    purpose: &str,
    row_id: Option<i64>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO msg_ids (msg_id, purpose, row_id, created_at) VALUES ($1, $2, $3, $4)",
        &[&msg_id, &purpose, &row_id, &now_ms()],
    )
    .await?;
    Ok(())
}

/// One atomic statement (`INSERT … ON CONFLICT DO UPDATE … RETURNING`): two runners can never
/// be handed the same value.
async fn advance_counter_from(
    c: &impl GenericClient,
    name: &str,
    n: i64,
    first: i64,
) -> Result<i64, StoreError> {
    let key = format!("counter:{name}");
    let v: String = c
        .query_one(
            "INSERT INTO meta (key, value) VALUES ($1, ($3::BIGINT)::TEXT)
             ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + $2::BIGINT)::TEXT
             RETURNING value",
            &[&key, &n, &first],
        )
        .await?
        .try_get(0)?;
    v.parse::<i64>()
        .map_err(|_| StoreError::BadState(format!("counter {name} = {v:?}")))
}

async fn save_row_tx(
    c: &impl GenericClient,
    row: &RowRecord,
    expected: RowState,
    sent: bool,
    event: &Event,
) -> Result<(), StoreError> {
    let changed = c
        .execute(
            "UPDATE rows SET state = $3, trx_state = $4, code = $5, message = $6, error_code = $7,
                 error_message = $8, order_no = $9, ref_no = $10, verified_reject = $11,
                 not_found_count = $12, hold_since = $13, first_sent_at = $14, last_sent_at = $15,
                 last_checked_at = $16, query_count = $17, updated_at = $18,
                 resent_after_not_found = $19
             WHERE id = $1 AND state = $2",
            &[
                &row.id,
                &expected.as_str(),
                &row.state.as_str(),
                &row.trx_state,
                &row.code,
                &row.message,
                &row.error_code,
                &row.error_message,
                &row.order_no,
                &row.ref_no,
                &row.verified_reject,
                &row.not_found_count,
                &row.hold_since,
                &row.first_sent_at,
                &row.last_sent_at,
                &row.last_checked_at,
                &row.query_count,
                &now_ms(),
                &row.resent_after_not_found,
            ],
        )
        .await?;
    one_row_changed(changed, row.id, expected)?;
    if let Some(a) = &row.attempt {
        c.execute(
            "UPDATE attempts SET send_count = send_count + $2, first_sent_at = $3 WHERE id = $1",
            &[&a.id, &(sent as i64), &a.first_sent_at],
        )
        .await?;
    }
    if event.kind == EventKind::QueryAnswer {
        if let Some(id) = &event.msg_id {
            // A status query's msgId from a reserved block (`MsgIds::block`) is recorded with
            // its answer; one recorded before use (`new_msg_id`) is already there.
            c.execute(
                "INSERT INTO msg_ids (msg_id, purpose, row_id, created_at)
                 VALUES ($1, 'query', $2, $3) ON CONFLICT (msg_id) DO NOTHING",
                &[id, &row.id, &now_ms()],
            )
            .await?;
        }
    }
    append_event(c, event).await
}

impl PgStore {
    // ------------------------------------------------------------------ runs

    pub(crate) async fn db_id(&self) -> Result<String, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_one("SELECT value FROM meta WHERE key = 'db_id'", &[])
                .await?
                .try_get(0)?,
        )
    }

    pub(crate) async fn runs_for(
        &self,
        job: &str,
        sha256: Option<&str>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {RUN_COLS} FROM runs WHERE job = $1 AND ($2::TEXT IS NULL OR input_sha256 = $2)
                 ORDER BY id"
            ),
            &[&job, &sha256],
        )
        .await?
        .iter()
        .map(run_from)
        .collect()
    }

    pub(crate) async fn run_by_id(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = $1"),
            &[&run_id],
        )
        .await?
        .as_ref()
        .map(run_from)
        .transpose()
    }

    /// As on SQLite: the run, its rows streamed from `fill` (on a blocking thread, in batches
    /// over a bounded channel) and its `run_created` event in one transaction; a `fill` error
    /// rolls the whole run back.
    pub(crate) async fn create_payout_run_streamed<E, F>(
        &self,
        run: NewRun,
        fill: F,
    ) -> Result<Result<i64, E>, StoreError>
    where
        E: Send + 'static,
        F: FnOnce(&mut PayoutRowSink<'_>) -> Result<Result<(), E>, StoreError> + Send + 'static,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let run_id: i64 = tx
            .query_one(
                "INSERT INTO runs (job, kind, input_path, input_sha256, status, created_at, row_count, total)
                 VALUES ($1, $2, $3, $4, 'OPEN', $5, 0, 0) RETURNING id",
                &[&run.job, &run.kind.as_str(), &run.input, &run.sha256, &now_ms()],
            )
            .await
            .map_err(|e| one_open_run(e, &run))?
            .try_get(0)?;
        if let Err(e) = stream_rows(&tx, run_id, fill).await? {
            tx.rollback().await?;
            return Ok(Err(e));
        }
        let rows: i64 = tx
            .query_one(
                "UPDATE runs SET row_count = (SELECT COUNT(*) FROM rows WHERE run_id = $1),
                     total = (SELECT COALESCE(SUM(amount), 0)::BIGINT FROM rows
                              WHERE run_id = $1 AND state = 'NEW')
                 WHERE id = $1 RETURNING row_count",
                &[&run_id],
            )
            .await?
            .try_get(0)?;
        append_event(
            &tx,
            &Event {
                run_id: Some(run_id),
                kind: EventKind::RunCreated,
                detail: Some(format!(
                    "{rows} rows from {} (sha256 {})",
                    run.input, run.sha256
                )),
                ..Event::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(run_id))
    }

    pub(crate) async fn finish_run(&self, run_id: i64) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "UPDATE runs SET status = 'FINISHED', finished_at = $2 WHERE id = $1",
            &[&run_id, &now_ms()],
        )
        .await?;
        append_event(
            &tx,
            &Event {
                run_id: Some(run_id),
                kind: EventKind::RunFinished,
                ..Event::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn reopen_run(&self, run_id: i64, why: String) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE runs SET status = 'OPEN', finished_at = NULL WHERE id = $1 AND status = 'FINISHED'",
                &[&run_id],
            )
            .await?;
        if changed == 1 {
            append_event(
                &tx,
                &Event {
                    run_id: Some(run_id),
                    kind: EventKind::RunReopened,
                    detail: Some(why),
                    ..Event::default()
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn record_exit(&self, run_id: i64, code: i32) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "UPDATE runs SET last_exit_code = $2, last_exit_at = $3 WHERE id = $1",
            &[&run_id, &code, &now_ms()],
        )
        .await?;
        append_event(
            &tx,
            &Event {
                run_id: Some(run_id),
                kind: EventKind::CommandEnded,
                detail: Some(format!("exit code {code}")),
                ..Event::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn save_bank_list(&self, names: Vec<String>) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM bank_names", &[]).await?;
        tx.execute(
            "INSERT INTO bank_names (name, seen_at) SELECT DISTINCT n, $2::BIGINT FROM UNNEST($1::TEXT[]) AS n
             ON CONFLICT (name) DO NOTHING",
            &[&names, &now_ms()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn last_bank_list(&self) -> Result<Option<(Vec<String>, i64)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT name, seen_at FROM bank_names ORDER BY name", &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let seen_at = rows.iter().map(|r| r.1).max();
        Ok(seen_at.map(|at| (rows.into_iter().map(|r| r.0).collect(), at)))
    }

    // ------------------------------------------------------------------ approvals

    pub(crate) async fn record_approval(
        &self,
        e: NewApprovalEntry,
    ) -> Result<ApprovalEntry, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let at = now_ms();
        let id: i64 = tx
            .query_one(
                "INSERT INTO approvals (job, action, by_name, at, input_path, input_sha256, row_count,
                                        total, prepared_by, overrides, revokes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                &[
                    &e.job,
                    &e.action.as_str(),
                    &e.by,
                    &at,
                    &e.input_path,
                    &e.input_sha256,
                    &e.rows,
                    &e.total.get(),
                    &e.prepared_by,
                    &e.overrides.join("\n"),
                    &e.revokes,
                ],
            )
            .await?
            .try_get(0)?;
        append_event(
            &tx,
            &Event {
                kind: crate::store::approvals::event_of(e.action),
                detail: Some(crate::store::approvals::describe(&e)),
                ..Event::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(ApprovalEntry {
            id,
            job: e.job,
            action: e.action,
            by: e.by,
            at,
            input_path: e.input_path,
            input_sha256: e.input_sha256,
            rows: e.rows,
            total: e.total,
            prepared_by: e.prepared_by,
            overrides: e.overrides,
            revokes: e.revokes,
        })
    }

    pub(crate) async fn approval_log(&self, job: &str) -> Result<Vec<ApprovalEntry>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT id, job, action, by_name, at, input_path, input_sha256, row_count, total,
                    prepared_by, overrides, revokes
             FROM approvals WHERE job = $1 ORDER BY at, id",
            &[&job],
        )
        .await?
        .iter()
        .map(|r| {
            let action: String = r.try_get(2)?;
            let overrides: String = r.try_get(10)?;
            Ok(ApprovalEntry {
                id: r.try_get(0)?,
                job: r.try_get(1)?,
                action: ApprovalAction::parse(&action)?,
                by: r.try_get(3)?,
                at: r.try_get(4)?,
                input_path: r.try_get(5)?,
                input_sha256: r.try_get(6)?,
                rows: r.try_get(7)?,
                total: Centavos::new(r.try_get(8)?),
                prepared_by: r.try_get(9)?,
                overrides: overrides
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                revokes: r.try_get(11)?,
            })
        })
        .collect()
    }

    pub(crate) async fn record_preflight_balance(
        &self,
        run_id: i64,
        balance: Centavos,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO payout_balances (run_id, at, balance) VALUES ($1, $2, $3)
             ON CONFLICT (run_id) DO NOTHING",
            &[&run_id, &now_ms(), &balance.get()],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn preflight_balance(
        &self,
        run_id: i64,
    ) -> Result<Option<(Centavos, i64)>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT balance, at FROM payout_balances WHERE run_id = $1",
            &[&run_id],
        )
        .await?
        .map(|r| Ok((Centavos::new(r.try_get(0)?), r.try_get(1)?)))
        .transpose()
    }

    // ------------------------------------------------------------------ payout rows

    pub(crate) async fn payout_counts(&self, run_id: i64) -> Result<PayoutCounts, StoreError> {
        let c = self.client().await?;
        let groups = c
            .query(
                "SELECT r.state, r.resent_after_not_found, COALESCE(a.send_count, 0) > 0, COUNT(*),
                        COALESCE(SUM(r.amount), 0)::BIGINT
                 FROM rows r LEFT JOIN attempts a ON a.id = r.attempt_id
                 WHERE r.run_id = $1 GROUP BY 1, 2, 3",
                &[&run_id],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(StateCount {
                    state: state(r.try_get(0)?)?,
                    resent_after_not_found: r.try_get(1)?,
                    attempt_sent: r.try_get(2)?,
                    rows: r.try_get(3)?,
                    amount: Centavos::new(r.try_get(4)?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let resends: i64 = c
            .query_one(
                "SELECT COALESCE(SUM(GREATEST(a.send_count - 1, 0)), 0)::BIGINT
                 FROM attempts a JOIN rows r ON r.id = a.row_id WHERE r.run_id = $1",
                &[&run_id],
            )
            .await?
            .try_get(0)?;
        Ok(PayoutCounts { groups, resends })
    }

    pub(crate) async fn rows_of_run(
        &self,
        run_id: i64,
        only_open: bool,
    ) -> Result<Vec<RowRecord>, StoreError> {
        self.rows_page(run_id, only_open, 0, i64::MAX).await
    }

    pub(crate) async fn rows_page(
        &self,
        run_id: i64,
        only_open: bool,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<RowRecord>, StoreError> {
        let c = self.client().await?;
        let filter = if only_open { OPEN_FILTER } else { "" };
        rows_where(
            &c,
            &format!("WHERE r.run_id = $1 AND r.line > $2{filter} ORDER BY r.line LIMIT $3"),
            &[&run_id, &after_line, &limit],
        )
        .await
    }

    pub(crate) async fn open_rows(&self, run_id: i64) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(
            &format!("SELECT COUNT(*) FROM rows r WHERE r.run_id = $1{OPEN_FILTER}"),
            &[&run_id],
        )
        .await?
        .try_get(0)?)
    }

    pub(crate) async fn reference_uses(
        &self,
        reference: &str,
        except_row: Option<i64>,
    ) -> Result<Vec<ReferenceUse>, StoreError> {
        let c = self.client().await?;
        reference_uses(&c, reference, except_row).await
    }

    pub(crate) async fn reference_history(
        &self,
        reference: &str,
    ) -> Result<ReferenceHistory, StoreError> {
        let mut c = self.client().await?;
        // One snapshot for the three reads.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let rows = rows_where(&tx, "WHERE r.reference = $1 ORDER BY r.id", &[&reference]).await?;
        let attempts = tx
            .query(
                "SELECT a.row_id, a.msg_id, a.seq, a.operation, a.send_count, a.created_at, a.first_sent_at,
                        s.msg_id
                 FROM attempts a JOIN rows r ON r.id = a.row_id
                 LEFT JOIN attempts s ON s.id = a.supersedes
                 WHERE r.reference = $1 ORDER BY a.id",
                &[&reference],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(HistoryAttempt {
                    row_id: r.try_get(0)?,
                    msg_id: r.try_get(1)?,
                    seq: r.try_get(2)?,
                    operation: r.try_get(3)?,
                    send_count: r.try_get(4)?,
                    created_at: r.try_get(5)?,
                    first_sent_at: r.try_get(6)?,
                    supersedes: r.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let events = tx
            .query(
                "SELECT e.at, e.run_id, e.row_id, e.msg_id, e.kind, e.old_state, e.new_state, e.detail, e.raw
                 FROM events e JOIN rows r ON r.id = e.row_id
                 WHERE r.reference = $1 ORDER BY e.id",
                &[&reference],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(HistoryEvent {
                    at: r.try_get(0)?,
                    run_id: r.try_get(1)?,
                    row_id: r.try_get(2)?,
                    msg_id: r.try_get(3)?,
                    kind: r.try_get(4)?,
                    old_state: r.try_get(5)?,
                    new_state: r.try_get(6)?,
                    detail: r.try_get(7)?,
                    raw: r.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().await?;
        Ok(ReferenceHistory {
            rows,
            attempts,
            events,
        })
    }

    pub(crate) async fn attempts_of_reference(
        &self,
        reference: &str,
    ) -> Result<Vec<EarlierAttempt>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT a.id, a.msg_id, r.run_id, r.line, r.state, r.attempt_id = a.id, a.send_count
             FROM attempts a JOIN rows r ON r.id = a.row_id
             WHERE r.reference = $1 ORDER BY a.id",
            &[&reference],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(EarlierAttempt {
                attempt_id: r.try_get(0)?,
                msg_id: r.try_get(1)?,
                run_id: r.try_get(2)?,
                line: r.try_get(3)?,
                row_state: state(r.try_get(4)?)?,
                current: r.try_get::<_, Option<bool>>(5)?.unwrap_or(false),
                send_count: r.try_get(6)?,
            })
        })
        .collect()
    }

    /// The SQLite `allocate_attempt` (see there) on PostgreSQL. The reference check and the
    /// msgId's birth are one transaction, committed before this returns; an advisory lock on
    /// the reference makes concurrent allocations of one reference (two runners, two jobs)
    /// take turns, so the second one sees the first one's attempt and is blocked.
    ///
    /// Longer than ~100 lines for the same reason as the SQLite one: everything atomic with the
    /// msgId's birth is here, in one transaction.
    pub(crate) async fn allocate_attempt(
        &self,
        row: RowRecord,
        msg_id: String,
        operation: &'static str,
        request_bytes: Vec<u8>,
        repay_of: Option<String>,
    ) -> Result<Allocation, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        xact_lock(&tx, "reference", &row.reference).await?;
        let uses: Vec<ReferenceUse> = reference_uses(&tx, &row.reference, Some(row.id))
            .await?
            .into_iter()
            .filter(|u| u.state != RowState::New || u.has_attempt)
            .collect();
        let refusal = ReferenceCheck::of(&uses).refusal(&row.reference, repay_of.is_some());
        if let Some(reason) = refusal {
            let message = format!("not sent: {reason}");
            let changed = tx
                .execute(
                    "UPDATE rows SET state = 'REJECTED', message = $2, updated_at = $3 WHERE id = $1 AND state = $4",
                    &[&row.id, &message, &now_ms(), &row.state.as_str()],
                )
                .await?;
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
            )
            .await?;
            tx.commit().await?;
            return Ok(Allocation::Blocked { message });
        }
        let seq: i64 = tx
            .query_one(
                "SELECT (COALESCE(MAX(seq), 0) + 1)::BIGINT FROM attempts WHERE row_id = $1",
                &[&row.id],
            )
            .await?
            .try_get(0)?;
        let supersedes: Option<i64> = match row.attempt.as_ref() {
            Some(a) => Some(a.id),
            None if repay_of.is_some() => tx
                .query_one(
                    "SELECT MAX(a.id) FROM attempts a JOIN rows r ON r.id = a.row_id WHERE r.reference = $1",
                    &[&row.reference],
                )
                .await?
                .try_get(0)?,
            None => None,
        };
        record_msg_id(&tx, &msg_id, "payout", Some(row.id)).await?;
        let attempt_id: i64 = tx
            .query_one(
                "INSERT INTO attempts (row_id, msg_id, seq, supersedes, operation, request_bytes, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &row.id,
                    &msg_id,
                    &seq,
                    &supersedes,
                    &operation,
                    &request_bytes,
                    &now_ms(),
                ],
            )
            .await?
            .try_get(0)?;
        let changed = tx
            .execute(
                "UPDATE rows SET attempt_id = $2, state = 'UNSENT', verified_reject = FALSE,
                     not_found_count = 0, hold_since = NULL, trx_state = NULL, code = NULL,
                     message = NULL, error_code = NULL, error_message = NULL, order_no = NULL,
                     ref_no = NULL, updated_at = $3, last_checked_at = NULL, query_count = 0,
                     resent_after_not_found = FALSE, repay_of = COALESCE($5, repay_of)
                 WHERE id = $1 AND state = $4",
                &[
                    &row.id,
                    &attempt_id,
                    &now_ms(),
                    &row.state.as_str(),
                    &repay_of,
                ],
            )
            .await?;
        one_row_changed(changed, row.id, row.state)?;
        let detail = match (supersedes, &repay_of) {
            (_, Some(r)) => Some(format!("re-payment: {r}")),
            (Some(s), None) => Some(format!("supersedes attempt {s}")),
            (None, None) => None,
        };
        append_event(
            &tx,
            &Event {
                run_id: Some(row.run_id),
                row_id: Some(row.id),
                msg_id: Some(msg_id.clone()),
                kind: EventKind::AttemptAllocated,
                old_state: Some(row.state),
                new_state: Some(RowState::Unsent),
                detail,
                raw: Some(request_bytes.clone()),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Allocation::Allocated(AttemptRecord {
            id: attempt_id,
            msg_id,
            seq,
            supersedes,
            operation: operation.to_string(),
            request_bytes,
            send_count: 0,
            first_sent_at: None,
        }))
    }

    pub(crate) async fn save_row(
        &self,
        row: RowRecord,
        expected: RowState,
        sent: bool,
        event: Event,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        save_row_tx(&tx, &row, expected, sent, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn new_msg_id(
        &self,
        prefix: char,
        db_id: &str,
        purpose: &'static str,
        row_id: Option<i64>,
    ) -> Result<String, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = advance_counter_from(&tx, purpose, 1, 1).await?;
        let id = format!("{prefix}{db_id}{n}");
        record_msg_id(&tx, &id, purpose, row_id).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn reserve_counter_block(
        &self,
        name: &str,
        n: i64,
    ) -> Result<i64, StoreError> {
        let c = self.client().await?;
        advance_counter_from(&c, name, n, n + 1).await
    }

    pub(crate) async fn row(&self, row_id: i64) -> Result<RowRecord, StoreError> {
        let c = self.client().await?;
        row_by_id(&c, row_id).await
    }

    // ------------------------------------------------------------------ notifications

    pub(crate) async fn record_refused_notification(
        &self,
        n: Received,
        why: String,
    ) -> Result<(), StoreError> {
        let (kept, why) = notes::cut_refused(&n, &why);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        insert_notification(&tx, &kept, NotifyOutcome::Refused, Some(&why), None, None).await?;
        append_event(
            &tx,
            &Event {
                msg_id: n.fields.as_ref().map(|f| f.original_msg_id.clone()),
                kind: EventKind::NotificationRefused,
                detail: Some(notes::describe(&n, NotifyOutcome::Refused, Some(&why))),
                raw: None,
                ..Event::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The SQLite `notifications::apply` on PostgreSQL: one transaction, with an advisory lock
    /// on the msgId so two copies of one notification arriving together are deduplicated as on
    /// SQLite's single writer (the second sees the first one's row).
    pub(crate) async fn apply_notification<F>(
        &self,
        n: Received,
        decide: F,
    ) -> Result<(NotifyOutcome, Option<i64>), StoreError>
    where
        F: FnOnce(&RowRecord) -> Decision + Send + 'static,
    {
        let Some(f) = n.fields.as_ref() else {
            return Err(StoreError::BadState("notification without fields".into()));
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        xact_lock(&tx, "notification", &f.original_msg_id).await?;
        let seen: Option<i64> = tx
            .query_opt(
                "SELECT id FROM notifications WHERE original_msg_id = $1 AND trx_state = $2
                 AND outcome IN ('applied', 'stale', 'unmatched', 'repayment') LIMIT 1",
                &[&f.original_msg_id, &f.trx_state],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let found: Option<(i64, i64)> = tx
            .query_opt(
                "SELECT row_id, id FROM attempts WHERE msg_id = $1",
                &[&f.original_msg_id],
            )
            .await?
            .map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
        let row = match found {
            Some((row_id, attempt_id)) => Some((row_by_id(&tx, row_id).await?, attempt_id)),
            None => None,
        };
        let (outcome, why, matched) = notes::classify(f, seen, row, decide);
        let (run_id, row_id) = matched.ids();
        let detail = notes::describe(&n, outcome, why.as_deref());
        insert_notification(&tx, &n, outcome, why.as_deref(), run_id, row_id).await?;
        match matched.write(&n, f, detail) {
            notes::Write::Save {
                update,
                from,
                event,
            } => save_row_tx(&tx, &update.row, from, update.sent, &event).await?,
            notes::Write::Event(event) => append_event(&tx, &event).await?,
        }
        tx.commit().await?;
        Ok((outcome, row_id))
    }

    pub(crate) async fn notification_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT outcome, COUNT(*) FROM notifications GROUP BY outcome ORDER BY outcome",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    pub(crate) async fn notifications_to_look_at(
        &self,
        limit: i64,
    ) -> Result<Vec<StoredNotification>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!(
                "{STORED_SELECT} WHERE outcome IN ('unmatched', 'conflict', 'refused')
                 ORDER BY id DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await?
        .iter()
        .map(stored_from)
        .collect()
    }

    pub(crate) async fn notifications_about(
        &self,
        reference: &str,
    ) -> Result<Vec<StoredNotification>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!(
                "{STORED_SELECT} WHERE original_msg_id = $1 OR original_msg_id IN (
                     SELECT a.msg_id FROM attempts a JOIN rows r ON r.id = a.row_id WHERE r.reference = $1)
                 ORDER BY id"
            ),
            &[&reference],
        )
        .await?
        .iter()
        .map(stored_from)
        .collect()
    }

    /// Verified `repayment` and `unmatched` notifications received since `since_ms`, oldest
    /// first (as `notifications::not_about_payouts` on SQLite).
    pub(crate) async fn notifications_not_about_payouts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<NotifiedPayment>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT id, received_at, outcome, original_msg_id, trx_state, amount, order_no, ref_no,
                    device_info, trx_date
             FROM notifications
             WHERE outcome IN ('repayment', 'unmatched') AND verified AND received_at >= $1
             ORDER BY id",
            &[&since_ms],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(NotifiedPayment {
                id: r.try_get(0)?,
                received_at: r.try_get(1)?,
                outcome: r.try_get(2)?,
                original_msg_id: r.try_get(3)?,
                trx_state: r.try_get(4)?,
                amount: Centavos::new(r.try_get(5)?),
                order_no: r.try_get(6)?,
                ref_no: r.try_get(7)?,
                device_info: r.try_get(8)?,
                trx_date: r.try_get(9)?,
            })
        })
        .collect()
    }

    /// The earliest and latest `trxDate` Starpay gave for the lines of reconciliation run
    /// `run_id` (ISO 8601 text, all `+08:00`: text order is time order).
    pub(crate) async fn recon_trx_dates(
        &self,
        run_id: i64,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT MIN(trx_date), MAX(trx_date) FROM recon_rows
                 WHERE run_id = $1 AND trx_date IS NOT NULL AND trx_date <> ''",
                &[&run_id],
            )
            .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    // ------------------------------------------------------------------ reconciliation

    /// Streams the file into one transaction (`stream_rows`); a `fill` error rolls the whole
    /// run back (nothing half-loaded), as on SQLite.
    pub(crate) async fn load_recon_run<E, F>(
        &self,
        run: NewRun,
        opening_balance: Centavos,
        fill: F,
    ) -> Result<Result<i64, E>, StoreError>
    where
        E: Send + 'static,
        F: FnOnce(&mut ReconRowSink<'_>) -> Result<Result<(), E>, StoreError> + Send + 'static,
    {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let run_id = create_recon_run(&tx, &run).await?;
        if let Err(e) = stream_rows(&tx, run_id, fill).await? {
            tx.rollback().await?;
            return Ok(Err(e));
        }
        seal_recon_run(&tx, run_id).await?;
        set_balance(&tx, run_id, true, opening_balance).await?;
        tx.commit().await?;
        Ok(Ok(run_id))
    }

    pub(crate) async fn create_reconcile_pass(
        &self,
        run: NewRun,
        payout_run: i64,
        opening_balance: Centavos,
    ) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let id = create_recon_run(&tx, &run).await?;
        tx.execute(
            "INSERT INTO recon_rows (run_id, line, reference, original_msg_id, lookup_key, expected_amount,
                 expected_state, expect_not_found, source_row_id)
             SELECT $1::BIGINT, r.line, NULLIF(r.reference, ''), a.msg_id,
                    COALESCE('msg:' || a.msg_id, 'line:' || r.line),
                    NULLIF(r.amount, 0),
                    CASE r.state WHEN 'SUCCESS' THEN 'SUCCESS'
                                 WHEN 'FAILED' THEN COALESCE(r.trx_state, 'FAIL')
                                 WHEN 'REVERSED' THEN 'REVERSED' ELSE NULL END,
                    -- As on SQLite (recon.rs fill_from_payout_run_tx): never sent, known not
                    -- processed, or rejected: expected to be absent.
                    (r.state = 'REJECTED' OR a.id IS NULL
                     OR (r.state = 'UNSENT' AND NOT r.resent_after_not_found)),
                    r.id
             FROM rows r LEFT JOIN attempts a ON a.id = r.attempt_id
             WHERE r.run_id = $2 ORDER BY r.line",
            &[&id, &payout_run],
        )
        .await?;
        tx.execute(
            "UPDATE recon_rows SET category = 'MATCHED', action = 'none: never sent, nothing at Starpay',
                 message = 'not sent (no msgId)', checked_at = $2
             WHERE run_id = $1 AND original_msg_id IS NULL",
            &[&id, &now_ms()],
        )
        .await?;
        seal_recon_run(&tx, id).await?;
        set_balance(&tx, id, true, opening_balance).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn recon_todo_page(
        &self,
        run_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ReconTodo>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT x.id, x.line, x.ref_no, x.original_msg_id, x.expected_amount, x.expected_state,
                    x.expect_not_found, x.source_row_id, r.state, r.amount,
                    COALESCE(r.state IN ('REJECTED', 'UNSENT'), FALSE), x.queries
             FROM recon_rows x LEFT JOIN rows r ON r.id = x.source_row_id
             WHERE x.run_id = $1 AND x.id > $2
               AND (x.category IS NULL
                    OR x.category IN ('PENDING', 'HELD_TIMEOUT', 'STALE_PENDING', 'UNKNOWN'))
             ORDER BY x.id LIMIT $3",
            &[&run_id, &after_id, &limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ReconTodo {
                id: r.try_get(0)?,
                line: r.try_get(1)?,
                ref_no: r.try_get(2)?,
                original_msg_id: r.try_get(3)?,
                expected_amount: r.try_get::<_, Option<i64>>(4)?.map(Centavos::new),
                expected_state: r.try_get(5)?,
                expect_not_found: r.try_get(6)?,
                source_row_id: r.try_get(7)?,
                source_state: r.try_get::<_, Option<String>>(8)?.map(state).transpose()?,
                source_amount: r.try_get::<_, Option<i64>>(9)?.map(Centavos::new),
                recorded_unpaid: r.try_get(10)?,
                queries: r.try_get(11)?,
            })
        })
        .collect()
    }

    pub(crate) async fn save_recon_results(
        &self,
        run_id: i64,
        results: Vec<ReconResult>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let stmt = tx
            .prepare(
                "UPDATE recon_rows SET category = $2, action = $3, order_no = $4, provider_amount = $5,
                     trx_state = $6, code = $7, message = $8, error_code = $9, error_message = $10,
                     trx_date = $11, checked_at = $12, queries = $13
                 WHERE id = $1",
            )
            .await?;
        for r in &results {
            tx.execute(
                &stmt,
                &[
                    &r.id,
                    &r.category.as_str(),
                    &r.action,
                    &r.order_no,
                    &r.provider_amount.map(Centavos::get),
                    &r.trx_state,
                    &r.code,
                    &r.message,
                    &r.error_code,
                    &r.error_message,
                    &r.trx_date,
                    &r.checked_at,
                    &r.queries,
                ],
            )
            .await?;
            for q in &r.query_ids {
                record_msg_id(&tx, q, "recon_query", Some(r.id)).await?;
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
            )
            .await?;
            if let Some(m) = &r.moved {
                move_payout_row(&tx, run_id, r, m).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn mark_duplicate_matches(&self, run_id: i64) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE recon_rows SET category = 'DUPLICATE_MATCH', action = $2,
                     message = 'same Starpay order ' || order_no || ' as line '
                         || (SELECT MIN(f.line) FROM recon_rows f
                             WHERE f.run_id = recon_rows.run_id AND f.order_no = recon_rows.order_no
                               AND f.category IS NOT NULL)
                         || ', which claimed the payment first'
                 WHERE run_id = $1 AND category = 'MATCHED' AND order_no IS NOT NULL
                   AND EXISTS (SELECT 1 FROM recon_rows f
                               WHERE f.run_id = $1 AND f.order_no = recon_rows.order_no
                                 AND f.line < recon_rows.line AND f.category IS NOT NULL)",
                &[&run_id, &DUPLICATE_MATCH_ACTION],
            )
            .await?;
        Ok(n as usize)
    }

    pub(crate) async fn open_recon_rows(&self, run_id: i64) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(
            "SELECT COUNT(*) FROM recon_rows WHERE run_id = $1
               AND (category IS NULL OR category IN ('PENDING', 'HELD_TIMEOUT', 'STALE_PENDING', 'UNKNOWN'))",
            &[&run_id],
        )
        .await?
        .try_get(0)?)
    }

    pub(crate) async fn unchecked_recon_rows(&self, run_id: i64) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(
            "SELECT COUNT(*) FROM recon_rows WHERE run_id = $1 AND category IS NULL",
            &[&run_id],
        )
        .await?
        .try_get(0)?)
    }

    pub(crate) async fn set_recon_balance(
        &self,
        run_id: i64,
        start: bool,
        balance: Centavos,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        set_balance(&c, run_id, start, balance).await
    }

    pub(crate) async fn recon_totals(&self, run_id: i64) -> Result<ReconTotals, StoreError> {
        let c = self.client().await?;
        let (balance_start, balance_end) = match c
            .query_opt(
                "SELECT balance_start, balance_end FROM runs WHERE id = $1",
                &[&run_id],
            )
            .await?
        {
            Some(r) => (
                r.try_get::<_, Option<i64>>(0)?.map(Centavos::new),
                r.try_get::<_, Option<i64>>(1)?.map(Centavos::new),
            ),
            None => (None, None),
        };
        let counts = c
            .query(
                "SELECT COALESCE(category, 'UNKNOWN'), COUNT(*),
                        COALESCE(SUM(COALESCE(provider_amount, expected_amount, 0)), 0)::BIGINT
                 FROM recon_rows WHERE run_id = $1 GROUP BY 1",
                &[&run_id],
            )
            .await?
            .iter()
            .map(|r| {
                Ok((
                    category(r.try_get(0)?)?,
                    r.try_get(1)?,
                    Centavos::new(r.try_get(2)?),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ReconTotals {
            counts,
            balance_start,
            balance_end,
        })
    }

    pub(crate) async fn recon_report_page(
        &self,
        run_id: i64,
        after_line: i64,
        limit: i64,
    ) -> Result<Vec<ReconRecord>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT line, reference, ref_no, original_msg_id, order_no, expected_amount, provider_amount,
                    expected_state, trx_state, category, code, message, error_code, error_message,
                    trx_date, checked_at, action
             FROM recon_rows WHERE run_id = $1 AND line > $2 ORDER BY line LIMIT $3",
            &[&run_id, &after_line, &limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ReconRecord {
                line: r.try_get(0)?,
                reference: r.try_get(1)?,
                ref_no: r.try_get(2)?,
                original_msg_id: r.try_get(3)?,
                order_no: r.try_get(4)?,
                expected_amount: r.try_get::<_, Option<i64>>(5)?.map(Centavos::new),
                provider_amount: r.try_get::<_, Option<i64>>(6)?.map(Centavos::new),
                expected_state: r.try_get(7)?,
                trx_state: r.try_get(8)?,
                category: r.try_get::<_, Option<String>>(9)?.map(category).transpose()?,
                code: r.try_get(10)?,
                message: r.try_get(11)?,
                error_code: r.try_get(12)?,
                error_message: r.try_get(13)?,
                trx_date: r.try_get(14)?,
                checked_at: r.try_get(15)?,
                action: r.try_get(16)?,
            })
        })
        .collect()
    }
}

// ------------------------------------------------------------------ notification SQL

const STORED_SELECT: &str = "SELECT id, received_at, outcome, verified, original_msg_id,
    trx_state, amount, order_no, detail, row_id FROM notifications";

fn stored_from(r: &Row) -> Result<StoredNotification, StoreError> {
    Ok(StoredNotification {
        id: r.try_get(0)?,
        received_at: r.try_get(1)?,
        outcome: r.try_get(2)?,
        verified: r.try_get(3)?,
        original_msg_id: r.try_get(4)?,
        trx_state: r.try_get(5)?,
        amount: r.try_get::<_, Option<i64>>(6)?.map(Centavos::new),
        order_no: r.try_get(7)?,
        detail: r.try_get(8)?,
        row_id: r.try_get(9)?,
    })
}

async fn insert_notification(
    c: &impl GenericClient,
    n: &Received,
    outcome: NotifyOutcome,
    detail: Option<&str>,
    run_id: Option<i64>,
    row_id: Option<i64>,
) -> Result<(), StoreError> {
    let f = n.fields.clone().unwrap_or_default();
    let has = n.fields.is_some();
    c.execute(
        "INSERT INTO notifications (received_at, raw, verified, verify_form, original_msg_id,
             trx_state, amount, mch_id, order_no, ref_no, device_info, error_code, error_message,
             trx_date, outcome, detail, run_id, row_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            &now_ms(),
            &n.raw,
            &n.verified,
            &n.verify_form,
            &has.then_some(f.original_msg_id),
            &has.then_some(f.trx_state),
            &has.then_some(f.amount.get()),
            &has.then_some(f.mch_id),
            &has.then_some(f.order_no),
            &f.ref_no,
            &f.device_info,
            &f.error_code,
            &f.error_message,
            &has.then_some(f.trx_date),
            &outcome.as_str(),
            &detail,
            &run_id,
            &row_id,
        ],
    )
    .await?;
    Ok(())
}

// ------------------------------------------------------------------ reconciliation SQL

/// A row type a file streams into a run, and how one batch of it is inserted.
trait PgInsert: SinkRow {
    fn insert_pg<C: GenericClient>(
        c: &C,
        run_id: i64,
        rows: &[Self],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

impl PgInsert for NewReconRow {
    fn insert_pg<C: GenericClient>(
        c: &C,
        run_id: i64,
        rows: &[Self],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        insert_recon_rows(c, run_id, rows)
    }
}

impl PgInsert for NewRow {
    fn insert_pg<C: GenericClient>(
        c: &C,
        run_id: i64,
        rows: &[Self],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        insert_payout_rows(c, run_id, rows)
    }
}

/// Runs `fill` on a blocking thread; the batches it hands over a bounded channel are inserted
/// into `c` (the run's open transaction) as they come, so the file is streamed, never held
/// whole. `Ok(Err)`: `fill` failed and the caller rolls back.
async fn stream_rows<R, E, F>(
    c: &impl GenericClient,
    run_id: i64,
    fill: F,
) -> Result<Result<(), E>, StoreError>
where
    R: PgInsert,
    E: Send + 'static,
    F: FnOnce(&mut RowSink<'_, R>) -> Result<Result<(), E>, StoreError> + Send + 'static,
{
    let (to, mut from) = tokio::sync::mpsc::channel::<Vec<R>>(2);
    let filler = tokio::task::spawn_blocking(move || RowSink::to_channel(to).fill_with(fill));
    while let Some(batch) = from.recv().await {
        R::insert_pg(c, run_id, &batch).await?;
    }
    filler.await.map_err(|_| StoreError::WriterGone)?
}

/// One batch of a payout run's rows: one statement per row, prepared once.
async fn insert_payout_rows(
    c: &impl GenericClient,
    run_id: i64,
    rows: &[NewRow],
) -> Result<(), StoreError> {
    let now = now_ms();
    let stmt = c
        .prepare_cached(
            "INSERT INTO rows (run_id, line, reference, channel, account_no, account_name, middle_name,
                               last_name, bank, amount, note, state, message, updated_at, repay,
                               raw_channel, raw_amount, raw_currency)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .await?;
    for r in rows {
        c.execute(
            &stmt,
            &[
                &run_id,
                &(r.line as i64),
                &r.reference,
                &r.channel,
                &r.account_no,
                &r.account_name,
                &r.middle_name,
                &r.last_name,
                &r.bank,
                &r.amount.get(),
                &r.note,
                &r.state.as_str(),
                &r.message,
                &now,
                &r.repay,
                &r.raw.channel,
                &r.raw.amount,
                &r.raw.currency,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn create_recon_run(c: &impl GenericClient, run: &NewRun) -> Result<i64, StoreError> {
    let kind = run.kind.as_str();
    let run_id: i64 = c
        .query_one(
            "INSERT INTO runs (job, kind, input_path, input_sha256, status, created_at, row_count, total)
             VALUES ($1, $2, $3, $4, 'OPEN', $5, 0, 0) RETURNING id",
            &[&run.job, &kind, &run.input, &run.sha256, &now_ms()],
        )
        .await?
        .try_get(0)?;
    append_event(
        c,
        &Event {
            run_id: Some(run_id),
            kind: EventKind::RunCreated,
            detail: Some(format!("{kind} of {} (sha256 {})", run.input, run.sha256)),
            ..Event::default()
        },
    )
    .await?;
    Ok(run_id)
}

/// One multi-row statement per batch (arrays unnested), not one round trip per row.
async fn insert_recon_rows(
    c: &impl GenericClient,
    run_id: i64,
    rows: &[NewReconRow],
) -> Result<(), StoreError> {
    let lines: Vec<i64> = rows.iter().map(|r| r.line as i64).collect();
    let references: Vec<Option<String>> = rows.iter().map(|r| r.reference.clone()).collect();
    let ref_nos: Vec<Option<String>> = rows.iter().map(|r| r.ref_no.clone()).collect();
    let msg_ids: Vec<Option<String>> = rows.iter().map(|r| r.original_msg_id.clone()).collect();
    let keys: Vec<String> = rows
        .iter()
        .map(|r| match (&r.ref_no, &r.original_msg_id) {
            (Some(rf), _) => format!("ref:{rf}"),
            (None, Some(m)) => format!("msg:{m}"),
            (None, None) => format!("line:{}", r.line),
        })
        .collect();
    let amounts: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.expected_amount.map(Centavos::get))
        .collect();
    let states: Vec<Option<String>> = rows.iter().map(|r| r.expected_state.clone()).collect();
    c.execute(
        "INSERT INTO recon_rows (run_id, line, reference, ref_no, original_msg_id, lookup_key,
             expected_amount, expected_state)
         SELECT $1::BIGINT, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                          $6::TEXT[], $7::BIGINT[], $8::TEXT[])",
        &[
            &run_id,
            &lines,
            &references,
            &ref_nos,
            &msg_ids,
            &keys,
            &amounts,
            &states,
        ],
    )
    .await?;
    Ok(())
}

async fn seal_recon_run(c: &impl GenericClient, run_id: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE runs SET row_count = (SELECT COUNT(*) FROM recon_rows WHERE run_id = $1),
             total = (SELECT COALESCE(SUM(expected_amount), 0)::BIGINT FROM recon_rows WHERE run_id = $1)
         WHERE id = $1",
        &[&run_id],
    )
    .await?;
    c.execute(
        "UPDATE recon_rows SET category = 'DUPLICATE_IN_INPUT',
             action = 'remove the duplicate line; the first one was checked',
             message = 'same transaction as line ' || (SELECT MIN(f.line) FROM recon_rows f
                 WHERE f.run_id = recon_rows.run_id AND f.lookup_key = recon_rows.lookup_key)
         WHERE run_id = $1 AND category IS NULL AND id NOT IN (
             SELECT MIN(id) FROM recon_rows WHERE run_id = $1 GROUP BY lookup_key)",
        &[&run_id],
    )
    .await?;
    Ok(())
}

async fn set_balance(
    c: &impl GenericClient,
    run_id: i64,
    start: bool,
    balance: Centavos,
) -> Result<(), StoreError> {
    let sql = if start {
        "UPDATE runs SET balance_start = COALESCE(balance_start, $2) WHERE id = $1"
    } else {
        "UPDATE runs SET balance_end = $2 WHERE id = $1"
    };
    c.execute(sql, &[&run_id, &balance.get()]).await?;
    Ok(())
}

/// The SQLite `recon::move_payout_row` (see there): compare-and-set on the row's state and on
/// its current attempt being the one the recon row queried, with its event.
async fn move_payout_row(
    c: &impl GenericClient,
    run_id: i64,
    r: &ReconResult,
    m: &RowMove,
) -> Result<(), StoreError> {
    let old_message: Option<String> = c
        .query_opt("SELECT message FROM rows WHERE id = $1", &[&m.row_id])
        .await?
        .map(|x| x.try_get::<_, Option<String>>(0))
        .transpose()?
        .flatten();
    let (kind, detail, message) =
        crate::store::recon::describe_move(run_id, r, m, old_message.as_deref());
    let changed = c
        .execute(
            "UPDATE rows SET state = $3, trx_state = $4, error_code = $5, error_message = $6,
                 order_no = COALESCE($7, order_no), last_checked_at = $8, updated_at = $8,
                 hold_since = CASE WHEN $3 = 'FAIL_HELD' THEN COALESCE(hold_since, $8) ELSE NULL END,
                 message = COALESCE($10, message),
                 verified_reject = CASE WHEN $11 THEN FALSE ELSE verified_reject END,
                 not_found_count = CASE WHEN $11 THEN 0 ELSE not_found_count END
             WHERE id = $1 AND state = $2
               AND attempt_id = (SELECT a.id FROM attempts a JOIN recon_rows x
                                 ON x.original_msg_id = a.msg_id WHERE x.id = $9)",
            &[
                &m.row_id,
                &m.old.as_str(),
                &m.new.as_str(),
                &r.trx_state,
                &r.error_code,
                &r.error_message,
                &r.order_no,
                &now_ms(),
                &r.id,
                &message,
                &matches!(m.why, MoveWhy::PaidRecordedUnpaid { .. }),
            ],
        )
        .await?;
    if changed == 1 {
        append_event(
            c,
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
        )
        .await?;
    }
    Ok(())
}

/// The unique index `runs_one_open_payout_per_input` (several runners join one open run of a
/// file) refused a second open run of the same file: say so, not the database's words.
fn one_open_run(e: tokio_postgres::Error, run: &NewRun) -> StoreError {
    let constraint = e.as_db_error().and_then(|d| d.constraint());
    if constraint == Some("runs_one_open_payout_per_input") {
        return StoreError::OpenRunExists {
            job: run.job.clone(),
            sha256: run.sha256.clone(),
        };
    }
    e.into()
}
