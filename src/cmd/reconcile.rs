//! `reconcile JOB --run ID`: re-checks every row of payout run ID against Starpay, reports
//! drift and applies it to the store (a SUCCESS that became REVERSED, a PENDING that settled),
//! then rewrites the payout run's report. The checking is `engine::recon`'s.

use anyhow::bail;

use crate::cli::ReconcileArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::drive::{drive_and_report, Work};
use crate::cmd::report::{self as report_cmd, find_run};
use crate::config::Endpoint;
use crate::domain::RunKind;
use crate::input::recon::ReconKind;
use crate::report::RunEnd;
use crate::store::NewRun;

pub fn run(args: ReconcileArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::Exclusive)?;
    ctx.require_payout(&args.job, "reconcile")?;
    if ctx.cfg.starpay.endpoint == Endpoint::EmbeddedSim {
        bail!(
            "{}: endpoint = \"embedded-sim\" starts an empty simulator in each command, so there is nothing to reconcile against; point the job at Starpay or at a running `starpay-batch sim` (endpoint = its base URL)",
            args.job.display()
        );
    }
    ctx.block_on(async {
        let cfg = &ctx.cfg;
        let store = ctx.store();
        let payout_run = args.run;
        let run = find_run(&ctx, payout_run).await?;
        if !run.kind.is_payout() {
            bail!(
                "run {payout_run} is not a payout run of job {:?}",
                cfg.job_name
            );
        }
        let key = format!("reconcile-of-run-{payout_run}");
        let open = store
            .runs_for(&cfg.job_name, Some(&key))
            .await?
            .into_iter()
            .find(|r| !r.finished)
            .map(|r| r.id);
        let (engine, _sim) = ctx.recon_engine(ReconKind::Disbursement).await?;
        let run_id = match open {
            Some(id) => {
                crate::say!("resuming reconcile run {id} of payout run {payout_run}");
                id
            }
            None => {
                let balance = engine.balance().await?;
                let pass = NewRun {
                    job: cfg.job_name.clone(),
                    kind: RunKind::Reconcile,
                    input: format!("payout run {payout_run}"),
                    sha256: key,
                };
                let id = store
                    .create_reconcile_pass(pass, payout_run, balance)
                    .await?;
                crate::say!("created reconcile run {id} for payout run {payout_run}");
                id
            }
        };
        let code = drive_and_report(&ctx, Work::Recon { engine, pass: true }, run_id).await?;
        // The pass may have moved payout rows (drift applied to the store): the payout run's
        // report says so too (its previous version is kept beside it).
        let end = RunEnd::default();
        let (paths, _) = report_cmd::write(cfg, store, payout_run, RunKind::Payout, end).await?;
        let line = format!(
            "payout run {payout_run} report rewritten: {}",
            paths.report.display()
        );
        // With --output json, stdout carries the pass's result alone.
        if crate::ops::json_stdout() {
            crate::say!("{line}");
        } else {
            println!("{line}");
        }
        Ok(code)
    })
}
