//! `status JOB [--run ID]`: the runs of a job and their state tables, read from the store
//! (no lock: safe while the job runs).

use anyhow::bail;

use crate::cli::StatusArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::exit;
use crate::report::{ReconSummary, Summary};

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::ReadOnly)?;
    let cfg = &ctx.cfg;
    let store = ctx.store();
    ctx.block_on(async {
        let runs = store.runs_for(&cfg.job_name, None).await?;
        let log = store.approval_log(&cfg.job_name).await?;
        let mut shown = 0;
        for run in runs.iter().filter(|r| args.run.is_none_or(|id| id == r.id)) {
            println!(
                "run {} ({}, {}) input {} sha256 {}…",
                run.id,
                run.kind,
                if run.finished { "finished" } else { "open" },
                run.input_path,
                &run.input_sha256[..12.min(run.input_sha256.len())]
            );
            if run.kind.is_payout() {
                if let Some(d) = crate::engine::approval::describe(
                    &log,
                    &run.input_sha256,
                    run.created_at,
                    cfg.report.timezone,
                ) {
                    println!("{d}");
                }
                let rows = store.rows_of_run(run.id, false).await?;
                print!("{}", Summary::from_rows(&rows).to_text());
            } else {
                let t = store.recon_totals(run.id).await?;
                print!(
                    "{}",
                    ReconSummary::from_counts(t.counts, t.balance_start, t.balance_end).to_text()
                );
            }
            shown += 1;
        }
        // Notifications received for this database (the receiver, issue 12): counts per
        // outcome, and the ones a human should look at (MISSING_LOCALLY = unmatched).
        let counts = store.notification_counts().await?;
        if !counts.is_empty() {
            let text: Vec<String> = counts.iter().map(|(o, n)| format!("{o} {n}")).collect();
            println!("notifications: {}", text.join(", "));
            for n in store.notifications_to_look_at(20).await? {
                let label = match n.outcome.as_str() {
                    "unmatched" => "MISSING_LOCALLY",
                    "conflict" => "CONFLICT",
                    _ => "REFUSED",
                };
                println!(
                    "  {label} notification {} at {}: msgId {} {} PHP {} order {}{}",
                    n.id,
                    crate::report::ts(Some(n.received_at), cfg.report.timezone),
                    n.original_msg_id.as_deref().unwrap_or("-"),
                    n.trx_state.as_deref().unwrap_or("-"),
                    n.amount
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into()),
                    n.order_no.as_deref().unwrap_or("-"),
                    n.detail.map(|d| format!(" ({d})")).unwrap_or_default()
                );
            }
        }
        if shown == 0 {
            bail!(
                "no run found for job {:?}{}",
                cfg.job_name,
                args.run
                    .map(|r| format!(" with id {r}"))
                    .unwrap_or_default()
            );
        }
        Ok(exit::OK)
    })
}
