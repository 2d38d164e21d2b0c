//! `show JOB REFERENCE`: one reference's whole history across runs, from the store (no lock):
//! its rows, every attempt (msgId) with its sends, every notification received about them
//! (issue 12), and every event with its time and the request or verified answer it recorded.
//! Given the msgId of a notification no row matches (MISSING_LOCALLY in `status`, or a 6.3/6.5
//! repayment record), it lists what was received under it.

use anyhow::bail;

use crate::cli::ShowArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::exit;
use crate::logging::mask_account;
use crate::report::{self, ReportState};
use crate::store::notifications::StoredNotification;
use crate::store::{ReferenceHistory, RowRecord};

pub fn run(args: ShowArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::ReadOnly)?;
    let tz = ctx.cfg.report.timezone;
    ctx.block_on(async {
        let h = ctx.store().reference_history(&args.reference).await?;
        let notifications = ctx.store().notifications_about(&args.reference).await?;
        if h.rows.is_empty() {
            if notifications.is_empty() {
                bail!(
                    "reference {:?} is in no run of database {}, and no notification names it as its msgId",
                    args.reference,
                    ctx.cfg.database_shown()
                );
            }
            // A msgId this database never issued (MISSING_LOCALLY in `status`), or a
            // repayment record (6.3/6.5): what was received under it.
            println!("msgId {} (no payout row of this database)", args.reference);
            for n in &notifications {
                println!("  {}", notification_line(n, tz));
            }
            return Ok(exit::OK);
        }
        println!("reference {}", args.reference);
        let mut approvals = std::collections::BTreeMap::new();
        for row in &h.rows {
            if let std::collections::btree_map::Entry::Vacant(e) = approvals.entry(row.run_id) {
                e.insert(approved_text(&ctx, row.run_id).await?);
            }
        }
        for row in &h.rows {
            let approval = approvals.get(&row.run_id).and_then(Option::as_deref);
            print_row(row, &h, &notifications, approval, tz);
        }
        Ok(exit::OK)
    })
}

/// One row of the history: the row, its run's approval, its attempts, the notifications
/// about any of its msgIds, and its events.
fn print_row(
    row: &RowRecord,
    h: &ReferenceHistory,
    notifications: &[StoredNotification],
    approval: Option<&str>,
    tz: chrono::FixedOffset,
) {
    println!(
        "\nrun {} line {}: {} PHP {} to {} {} ({}), state {} ({}){}",
        row.run_id,
        row.line,
        row.channel,
        row.amount,
        row.bank.as_deref().unwrap_or(&row.channel),
        mask_account(&row.account_no),
        row.account_name,
        ReportState::of(row),
        row.state.as_str(),
        row.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    if let Some(d) = approval {
        println!("  run {}: {d}", row.run_id);
    }
    for a in h.attempts.iter().filter(|a| a.row_id == row.id) {
        println!(
            "  attempt {} msgId {} ({}), created {}, first sent {}, sends {}{}",
            a.seq,
            a.msg_id,
            a.operation,
            report::ts(Some(a.created_at), tz),
            report::ts(a.first_sent_at, tz),
            a.send_count,
            a.supersedes
                .as_deref()
                .map(|s| format!(", re-pays {s}"))
                .unwrap_or_default()
        );
    }
    let msg_ids: Vec<&str> = h
        .attempts
        .iter()
        .filter(|a| a.row_id == row.id)
        .map(|a| a.msg_id.as_str())
        .collect();
    for n in notifications.iter().filter(|n| {
        n.original_msg_id
            .as_deref()
            .is_some_and(|m| msg_ids.contains(&m))
    }) {
        println!("  {}", notification_line(n, tz));
    }
    for e in h.events.iter().filter(|e| e.row_id == Some(row.id)) {
        let states = match (&e.old_state, &e.new_state) {
            (Some(o), Some(n)) if o != n => format!(" {o} -> {n}"),
            (_, Some(n)) => format!(" {n}"),
            _ => String::new(),
        };
        println!(
            "  {} {}{}{}{}",
            report::ts(Some(e.at), tz),
            e.kind,
            states,
            e.msg_id
                .as_deref()
                .map(|m| format!(" [{m}]"))
                .unwrap_or_default(),
            e.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        if let Some(raw) = &e.raw {
            println!("      {}", String::from_utf8_lossy(raw));
        }
    }
}

/// One received notification: when, what it said, whether it verified, and what was done
/// with it and why (applied, stale, duplicate, conflict, refused, unmatched, repayment).
fn notification_line(n: &StoredNotification, tz: chrono::FixedOffset) -> String {
    format!(
        "notification {} received {}: {} {} PHP {}, {}; {}{}",
        n.id,
        report::ts(Some(n.received_at), tz),
        n.original_msg_id.as_deref().unwrap_or("-"),
        n.trx_state.as_deref().unwrap_or("-"),
        n.amount
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
        if n.verified {
            "verified"
        } else {
            "not verified"
        },
        n.outcome,
        n.detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    )
}

/// Who prepared and approved the file of run `run_id` (issue 13), if anyone.
async fn approved_text(ctx: &JobContext, run_id: i64) -> anyhow::Result<Option<String>> {
    let Some(run) = ctx.store().run_by_id(run_id).await? else {
        return Ok(None);
    };
    let log = ctx.store().approval_log(&run.job).await?;
    Ok(crate::engine::approval::describe(
        &log,
        &run.input_sha256,
        run.created_at,
        ctx.cfg.report.timezone,
    ))
}
