//! `runs JOB`: one line per run of the job (reads the store; no lock).

use crate::cli::RunsArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::exit;
use crate::report::{self, ReconSummary, Summary};

pub fn run(args: RunsArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::ReadOnly)?;
    let (cfg, store) = (&ctx.cfg, ctx.store());
    let tz = cfg.report.timezone;
    ctx.block_on(async {
        let runs = store.runs_for(&cfg.job_name, None).await?;
        let log = store.approval_log(&cfg.job_name).await?;
        println!("run\tkind\tstarted\tfinished\tlast_exit\tcounts\tinput\tapproval");
        for run in &runs {
            let counts: Vec<String> = if run.kind.is_payout() {
                let rows = store.rows_of_run(run.id, false).await?;
                Summary::from_rows(&rows)
                    .rows
                    .iter()
                    .filter(|(_, n, _)| *n > 0)
                    .map(|(s, n, _)| format!("{s} {n}"))
                    .collect()
            } else {
                let t = store.recon_totals(run.id).await?;
                ReconSummary::from_counts(t.counts, t.balance_start, t.balance_end)
                    .rows
                    .iter()
                    .filter(|(_, n, _)| *n > 0)
                    .map(|(c, n, _)| format!("{c} {n}"))
                    .collect()
            };
            let approval =
                crate::engine::approval::describe(&log, &run.input_sha256, run.created_at, tz)
                    .filter(|_| run.kind.is_payout())
                    .unwrap_or_else(|| "-".into());
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                run.id,
                run.kind,
                report::ts(Some(run.created_at), tz),
                if run.finished {
                    report::ts(run.finished_at, tz)
                } else {
                    "open".to_string()
                },
                run.last_exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                if counts.is_empty() {
                    "no rows".to_string()
                } else {
                    counts.join(", ")
                },
                run.input_path,
                approval
            );
        }
        if runs.is_empty() {
            crate::say_warn!("job {:?} has no runs yet", cfg.job_name);
        }
        Ok(exit::OK)
    })
}
