//! `report JOB --run ID`, and the one way every command writes a run's report files.
//!
//! No command marks a run FINISHED before its report is in place (issue 8, defect 5), and
//! every command that changes a run's rows rewrites its report (defect 6). This command
//! rewrites one from the store at any time, for payout and reconciliation runs alike.

use std::path::Path;

use anyhow::{bail, Context};

use crate::cli::ReportArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::exit;
use crate::config::JobConfig;
use crate::domain::RunKind;
use crate::report::{self, ReconSummary, ReportPaths, RunEnd, Summary};
use crate::store::{self, Store};

/// A run's summary, as its report gave it.
pub(crate) enum RunSummary {
    Payout(Summary),
    Recon(ReconSummary),
}

impl RunSummary {
    /// The summary as the terminal shows it.
    pub(crate) fn to_text(&self) -> String {
        match self {
            RunSummary::Payout(s) => s.to_text(),
            RunSummary::Recon(s) => s.to_text(),
        }
    }
}

/// Writes a run's report from the store: the payout report for a payout run, the
/// reconciliation report for any other kind.
pub(crate) async fn write(
    cfg: &JobConfig,
    store: &Store,
    run_id: i64,
    kind: RunKind,
    end: RunEnd,
) -> anyhow::Result<(ReportPaths, RunSummary)> {
    let (st, dir, tz) = (store.clone(), cfg.reports_dir.clone(), cfg.report.timezone);
    let stale_ms = cfg.resolve.stale_after.as_millis() as i64;
    off_thread(move || {
        if kind.is_payout() {
            let (paths, s) = report::write_payout_run(&st, &dir, tz, stale_ms, run_id, end)?;
            Ok((paths, RunSummary::Payout(s)))
        } else {
            let (paths, s) = report::write_recon_run(&st, &dir, tz, run_id, end)?;
            Ok((paths, RunSummary::Recon(s)))
        }
    })
    .await
}

/// Report files are written on a blocking thread (file I/O, fsync), never on the async ones.
async fn off_thread<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, report::ReportError> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(write)
        .await
        .context("report task failed")??)
}

/// The terminal summary after a command: the table, then where the files are.
pub(crate) fn print(run_id: i64, table: &str, paths: &ReportPaths) {
    println!("run {run_id}");
    print!("{table}");
    print_paths(paths);
}

fn print_paths(paths: &ReportPaths) {
    println!("report:  {}", paths.report.display());
    println!("summary: {}", paths.summary.display());
    println!("details: {}", paths.details.display());
    println!("page:    {}", paths.html.display());
}

/// `report JOB --run ID`.
///
/// Takes no job lock: it only reads the store (SQLite WAL readers never block the writer) and
/// writes report files, so it is safe while the job runs. Writers of one run's report are
/// serialised by a lock on that report alone (held for the moment one report is read and
/// written), so this never replaces a newer report with an older snapshot.
pub fn run(args: ReportArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::ReadOnly)?;
    let cfg = &ctx.cfg;
    let run_id = args.run;
    ctx.block_on(async {
        let run = find_run(&ctx, run_id).await?;
        let (paths, summary) = write(cfg, ctx.store(), run_id, run.kind, RunEnd::default()).await?;
        print(run_id, &summary.to_text(), &paths);
        if !run.finished {
            crate::say_warn!("run {run_id} is still open: the report shows it as it stands now");
        }
        Ok(exit::OK)
    })
}

/// Run `run_id` of this job, or a clear error.
pub(crate) async fn find_run(ctx: &JobContext, run_id: i64) -> anyhow::Result<store::RunRecord> {
    let Some(run) = ctx.store().run_by_id(run_id).await? else {
        bail!(
            "run {run_id} does not exist in {}",
            ctx.cfg.database_shown()
        );
    };
    if run.job != ctx.cfg.job_name {
        bail!(
            "run {run_id} belongs to job {:?}, not {:?}",
            run.job,
            ctx.cfg.job_name
        );
    }
    Ok(run)
}

/// Whether the main report file of a run exists (a finished run without one gets it rewritten).
pub(crate) fn report_exists(cfg: &JobConfig, run: &store::RunRecord) -> bool {
    let stem = report::report_stem(run);
    report::paths(Path::new(&cfg.reports_dir), &stem)
        .report
        .exists()
}
