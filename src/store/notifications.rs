//! SQL of the notifications Starpay pushes (5.5, 6.3, 6.5; reference §10): every one received is
//! kept with its raw bytes and what was done with it, and applying one to a payout row is one
//! savepoint (dedupe, match, echo check, the row's compare-and-set save, the event).
//!
//! Must not: decide a row's next state (the caller's `decide`, built on `engine::transition`).

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    append_event, columns_into, now_ms, row_by_id, save_row_tx, Event, RowRecord, StoreError,
};
use crate::domain::{Centavos, EventKind};

/// What was done with a notification (the `outcome` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Verified, echoed the payout, changed its row.
    Applied,
    /// Verified, echoed the payout, nothing to change (old news, or non-final after final).
    Stale,
    /// The same (originalMsgId, trxState) was already stored: nothing changed.
    Duplicate,
    /// Verified but not echoing the row (amount, an earlier attempt) or contradicting it in a
    /// way the transition refuses: recorded, row unchanged; polling resolves it.
    Conflict,
    /// Verified, for a msgId this database never issued (reported as MISSING_LOCALLY).
    Unmatched,
    /// Verified repayment notification (6.5 static QR, carries `deviceInfo`): a repayment record.
    Repayment,
    /// Not verified, wrong mchId or bad layout: stored for audit, nothing applied.
    Refused,
}

impl NotifyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Applied => "applied",
            NotifyOutcome::Stale => "stale",
            NotifyOutcome::Duplicate => "duplicate",
            NotifyOutcome::Conflict => "conflict",
            NotifyOutcome::Unmatched => "unmatched",
            NotifyOutcome::Repayment => "repayment",
            NotifyOutcome::Refused => "refused",
        }
    }
}

/// The fields of one notification `request`, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFields {
    pub original_msg_id: String,
    pub trx_state: String,
    pub amount: Centavos,
    pub mch_id: String,
    pub order_no: String,
    pub ref_no: Option<String>,
    pub device_info: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub trx_date: String,
}

/// One notification to store: the whole body received and how it verified.
#[derive(Debug, Clone)]
pub struct Received {
    pub raw: Vec<u8>,
    pub verified: bool,
    /// How it verified (`raw_bytes`, …) or why it was refused.
    pub verify_form: String,
    pub fields: Option<NotificationFields>,
}

/// The row change a notification makes (from `engine::transition`).
#[derive(Debug, Clone)]
pub struct RowUpdate {
    pub row: RowRecord,
    pub sent: bool,
    pub detail: Option<String>,
}

/// What the caller's `decide` says about the matched row.
#[derive(Debug, Clone)]
pub enum Decision {
    Change(Box<RowUpdate>),
    NoChange,
    Conflict(String),
}

fn insert(
    tx: &Connection,
    n: &Received,
    outcome: NotifyOutcome,
    detail: Option<&str>,
    run_id: Option<i64>,
    row_id: Option<i64>,
) -> Result<(), StoreError> {
    let f = n.fields.clone().unwrap_or_default();
    let has = n.fields.is_some();
    tx.prepare_cached(
        "INSERT INTO notifications (received_at, raw, verified, verify_form, original_msg_id,
             trx_state, amount, mch_id, order_no, ref_no, device_info, error_code, error_message,
             trx_date, outcome, detail, run_id, row_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        now_ms(),
        n.raw,
        n.verified as i64,
        n.verify_form,
        has.then_some(f.original_msg_id),
        has.then_some(f.trx_state),
        has.then_some(f.amount.get()),
        has.then_some(f.mch_id),
        has.then_some(f.order_no),
        f.ref_no,
        f.device_info,
        f.error_code,
        f.error_message,
        has.then_some(f.trx_date),
        outcome.as_str(),
        detail,
        run_id,
        row_id
    ])?;
    Ok(())
}

pub(crate) fn describe(n: &Received, outcome: NotifyOutcome, why: Option<&str>) -> String {
    let what = match &n.fields {
        Some(f) => format!(
            "notification {} {} PHP {}",
            f.original_msg_id, f.trx_state, f.amount
        ),
        None => "notification".to_string(),
    };
    let verified = if n.verified {
        format!("verified ({})", n.verify_form)
    } else {
        format!("not verified ({})", n.verify_form)
    };
    match why {
        Some(w) => format!("{what}: {} ({w}); {verified}", outcome.as_str()),
        None => format!("{what}: {}; {verified}", outcome.as_str()),
    }
}

/// A refused body is kept up to this many bytes (with its length and SHA-256): anyone who can
/// reach the public URL can send garbage, and each refusal must not grow the database by the
/// whole body-size limit (twice: row and event). A real notification is far smaller.
const REFUSED_KEEP: usize = 2048;

/// A refused notification as kept: cut to `REFUSED_KEEP` bytes, the reason extended with the
/// whole body's length and SHA-256 (both backends).
pub(crate) fn cut_refused(n: &Received, why: &str) -> (Received, String) {
    use sha2::{Digest, Sha256};
    if n.raw.len() > REFUSED_KEEP {
        let sha: String = Sha256::digest(&n.raw)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (
            Received {
                raw: n.raw[..REFUSED_KEEP].to_vec(),
                ..n.clone()
            },
            format!(
                "{why} (body {} bytes, sha256 {sha}; the first {REFUSED_KEEP} kept)",
                n.raw.len()
            ),
        )
    } else {
        (n.clone(), why.to_string())
    }
}

/// Stores a refused notification with its event; changes nothing else. The body is kept once
/// (in the notifications row), cut to `REFUSED_KEEP` bytes.
pub fn record_refused(conn: &mut Connection, n: &Received, why: &str) -> Result<(), StoreError> {
    let (kept, why) = cut_refused(n, why);
    let tx = conn.savepoint()?;
    insert(&tx, &kept, NotifyOutcome::Refused, Some(&why), None, None)?;
    append_event(
        &tx,
        &Event {
            msg_id: n.fields.as_ref().map(|f| f.original_msg_id.clone()),
            kind: EventKind::NotificationRefused,
            detail: Some(describe(n, NotifyOutcome::Refused, Some(&why))),
            raw: None,
            ..Event::default()
        },
    )?;
    tx.commit()?;
    Ok(())
}

/// Stores a verified notification and applies it, all in one savepoint (see the module doc);
/// returns the outcome and the payout row it matched, if any.
///
/// Longer than ~100 lines on purpose: storing, deduplicating, matching the attempt, the echo
/// check, the transition and the row's save must be one savepoint, and reading them in one
/// function shows that no path stores half of it.
pub fn apply(
    conn: &mut Connection,
    n: &Received,
    decide: impl FnOnce(&RowRecord) -> Decision,
) -> Result<(NotifyOutcome, Option<i64>), StoreError> {
    let Some(f) = n.fields.as_ref() else {
        return Err(StoreError::BadState("notification without fields".into()));
    };
    let tx = conn.savepoint()?;
    let seen: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM notifications WHERE original_msg_id = ?1 AND trx_state = ?2
             AND outcome IN ('applied', 'stale', 'unmatched', 'repayment') LIMIT 1",
        )?
        .query_row(params![f.original_msg_id, f.trx_state], |r| r.get(0))
        .optional()?;
    let found: Option<(i64, i64)> = tx
        .prepare_cached("SELECT row_id, id FROM attempts WHERE msg_id = ?1")?
        .query_row([&f.original_msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let row = match found {
        Some((row_id, attempt_id)) => Some((row_by_id(&tx, row_id)?, attempt_id)),
        None => None,
    };
    let (outcome, why, matched) = classify(f, seen, row, decide);
    let (run_id, row_id) = matched.ids();
    let detail = describe(n, outcome, why.as_deref());
    insert(&tx, n, outcome, why.as_deref(), run_id, row_id)?;
    match matched.write(n, f, detail) {
        Write::Save {
            update,
            from,
            event,
        } => save_row_tx(&tx, &update.row, from, update.sent, &event)?,
        Write::Event(event) => append_event(&tx, &event)?,
    }
    tx.commit()?;
    Ok((outcome, row_id))
}

/// What a payout row matched by a notification gets: its run and id, and the change to save
/// (the state it is saved from, compare-and-set, and the update).
pub(crate) enum Matched {
    None,
    Row {
        run_id: i64,
        row_id: i64,
        change: Option<(crate::domain::RowState, Box<RowUpdate>)>,
    },
}

/// What storing a notification writes besides the notification itself (both backends): the
/// row's change (saved by compare-and-set from `from`) with its `notification_applied` event,
/// or only a `notification_ignored` event.
pub(crate) enum Write {
    Save {
        update: Box<RowUpdate>,
        from: crate::domain::RowState,
        event: Event,
    },
    Event(Event),
}

impl Matched {
    /// The run and row this notification matched, if any.
    pub(crate) fn ids(&self) -> (Option<i64>, Option<i64>) {
        match self {
            Matched::Row { run_id, row_id, .. } => (Some(*run_id), Some(*row_id)),
            Matched::None => (None, None),
        }
    }

    /// The write for notification `n` (fields `f`), its event saying `detail`.
    pub(crate) fn write(self, n: &Received, f: &NotificationFields, detail: String) -> Write {
        let (run_id, row_id) = self.ids();
        let event = Event {
            run_id,
            row_id,
            msg_id: Some(f.original_msg_id.clone()),
            kind: EventKind::NotificationIgnored,
            detail: Some(detail),
            raw: Some(n.raw.clone()),
            ..Event::default()
        };
        match self {
            Matched::Row {
                change: Some((from, u)),
                ..
            } => Write::Save {
                event: Event {
                    kind: EventKind::NotificationApplied,
                    old_state: Some(from),
                    new_state: Some(u.row.state),
                    ..event
                },
                update: u,
                from,
            },
            _ => Write::Event(event),
        }
    }
}

/// The pure part of applying a notification (both backends): the outcome, why, and the row
/// change, from whether it was seen before (`seen`), the row its msgId matched with that
/// attempt's id, and the transition (`decide`).
pub(crate) fn classify(
    f: &NotificationFields,
    seen: Option<i64>,
    row: Option<(RowRecord, i64)>,
    decide: impl FnOnce(&RowRecord) -> Decision,
) -> (NotifyOutcome, Option<String>, Matched) {
    let ids = row.as_ref().map(|(r, _)| (r.run_id, r.id));
    let (outcome, why, update) = if let Some(first) = seen {
        (
            NotifyOutcome::Duplicate,
            Some(format!("same as notification {first}")),
            None,
        )
    } else {
        match row {
            None if f.device_info.is_some() => (NotifyOutcome::Repayment, None, None),
            None => (
                NotifyOutcome::Unmatched,
                Some("no payout of this database has this msgId".to_string()),
                None,
            ),
            Some((r, attempt_id)) if r.attempt.as_ref().map(|a| a.id) != Some(attempt_id) => (
                NotifyOutcome::Conflict,
                Some(format!(
                    "about an earlier attempt of line {} (its current msgId is {}); reconcile checks it",
                    r.line,
                    r.attempt.as_ref().map_or("none", |a| a.msg_id.as_str())
                )),
                None,
            ),
            Some((r, _)) if r.amount != f.amount => (
                NotifyOutcome::Conflict,
                Some(format!(
                    "amount PHP {} but line {} is PHP {}; resolved by query",
                    f.amount, r.line, r.amount
                )),
                None,
            ),
            Some((r, _)) => match decide(&r) {
                Decision::Change(u) => (NotifyOutcome::Applied, u.detail.clone(), Some((r, u))),
                Decision::NoChange => (NotifyOutcome::Stale, None, None),
                Decision::Conflict(why) => (NotifyOutcome::Conflict, Some(why), None),
            },
        }
    };
    let matched = match ids {
        None => Matched::None,
        Some((run_id, row_id)) => Matched::Row {
            run_id,
            row_id,
            change: update.map(|(old, u): (RowRecord, Box<RowUpdate>)| (old.state, u)),
        },
    };
    (outcome, why, matched)
}

/// Notifications per outcome (for `status`).
pub fn counts(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT outcome, COUNT(*) FROM notifications GROUP BY outcome ORDER BY outcome")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A stored notification, as `status` lists the ones needing a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotification {
    pub id: i64,
    pub received_at: i64,
    pub outcome: String,
    pub verified: bool,
    pub original_msg_id: Option<String>,
    pub trx_state: Option<String>,
    pub amount: Option<Centavos>,
    pub order_no: Option<String>,
    pub detail: Option<String>,
    /// The payout row it was matched to (any outcome but unmatched, repayment and refused).
    pub row_id: Option<i64>,
}

const STORED_SELECT: &str = "SELECT id, received_at, outcome, verified, original_msg_id,
    trx_state, amount, order_no, detail, row_id FROM notifications";

fn stored_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredNotification> {
    columns_into!(StoredNotification {
        id,
        received_at,
        outcome,
        verified,
        original_msg_id,
        trx_state,
        amount,
        order_no,
        detail,
        row_id
    })(r)
}

/// Every notification naming a msgId of `reference`'s attempts, or naming `reference` itself
/// as its msgId (an unmatched one: `show` of the msgId `status` lists), oldest first.
pub fn about(conn: &Connection, reference: &str) -> Result<Vec<StoredNotification>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{STORED_SELECT} WHERE original_msg_id = ?1 OR original_msg_id IN (
             SELECT a.msg_id FROM attempts a JOIN rows r ON r.id = a.row_id WHERE r.reference = ?1)
         ORDER BY id"
    ))?;
    let rows = stmt.query_map([reference], stored_from)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last `limit` notifications with one of `outcomes`, newest first.
pub fn with_outcomes(
    conn: &Connection,
    outcomes: &[&str],
    limit: i64,
) -> Result<Vec<StoredNotification>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(&format!("{STORED_SELECT} ORDER BY id DESC"))?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let n = stored_from(r)?;
        if !outcomes.contains(&n.outcome.as_str()) {
            continue;
        }
        out.push(n);
        if out.len() as i64 >= limit {
            break;
        }
    }
    Ok(out)
}

/// A verified notification about a msgId no payout of this database has (outcome `repayment`:
/// a 6.5 static-QR payment or 6.3 dynamic-QR result, both carrying `deviceInfo`; or
/// `unmatched`), as a reconciliation report compares it with the file's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifiedPayment {
    pub id: i64,
    pub received_at: i64,
    pub outcome: String,
    pub original_msg_id: String,
    pub trx_state: String,
    pub amount: Centavos,
    pub order_no: Option<String>,
    pub ref_no: Option<String>,
    pub device_info: Option<String>,
    pub trx_date: Option<String>,
}

/// Every verified `repayment` or `unmatched` notification received at or after `since_ms`,
/// oldest first (a later state of one msgId comes after its earlier ones). The caller narrows
/// them to its day by `trxDate`; `since_ms` only bounds what is read.
pub fn not_about_payouts(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<NotifiedPayment>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, received_at, outcome, original_msg_id, trx_state, amount, order_no, ref_no,
                device_info, trx_date
         FROM notifications
         WHERE outcome IN ('repayment', 'unmatched') AND verified = 1 AND received_at >= ?1
         ORDER BY id",
    )?;
    let rows = stmt.query_map(
        [since_ms],
        columns_into!(NotifiedPayment {
            id,
            received_at,
            outcome,
            original_msg_id,
            trx_state,
            amount,
            order_no,
            ref_no,
            device_info,
            trx_date
        }),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The earliest and latest `trxDate` Starpay gave for a line of reconciliation run `run_id`
/// (as stored: ISO 8601 text; Starpay writes them all with `+08:00`, so text order is time
/// order).
pub fn recon_trx_dates(
    conn: &Connection,
    run_id: i64,
) -> Result<(Option<String>, Option<String>), StoreError> {
    Ok(conn.query_row(
        "SELECT MIN(trx_date), MAX(trx_date) FROM recon_rows
         WHERE run_id = ?1 AND trx_date IS NOT NULL AND trx_date <> ''",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused body is kept once, cut to `REFUSED_KEEP` bytes, with its length and SHA-256.
    #[test]
    fn a_large_refused_body_is_kept_cut_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open_connection(&dir.path().join("n.db")).unwrap();
        let big = Received {
            raw: vec![b'x'; 60_000],
            verified: false,
            verify_form: "not an envelope".into(),
            fields: None,
        };
        record_refused(&mut conn, &big, "bad signature").unwrap();
        let (len, detail): (i64, String) = conn
            .query_row(
                "SELECT length(raw), detail FROM notifications WHERE outcome = 'refused'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(len, REFUSED_KEEP as i64);
        assert!(detail.contains("body 60000 bytes, sha256 "), "{detail}");
        let event_raw: Option<Vec<u8>> = conn
            .query_row(
                "SELECT raw FROM events WHERE kind = 'notification_refused'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            event_raw, None,
            "the body is kept once, in the notifications row"
        );
    }
}
