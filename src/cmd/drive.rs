//! The one way a command drives a run and reports it, for payout runs and reconciliation runs
//! alike: progress and signal handling around the engine's drive, then the engine settles the
//! run, the report is written, the run is finished (only after its report is in place), the
//! summary is printed, and the outcome becomes the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::cmd::context::JobContext;

use crate::cmd::report::{self as report_cmd, RunSummary};
use crate::domain::{Centavos, RunKind};
use crate::engine::payout::PayoutEngine;
use crate::engine::recon::ReconEngine;
use crate::engine::stop::StopReason;
use crate::engine::DriveResult;
use crate::ops::result::{self, RunResult};
use crate::ops::{self, metrics};
use crate::report::{self, RunEnd};
use crate::starpay::stats::RequestStats;
use crate::store::Store;

/// What is being driven.
#[derive(Clone)]
pub enum Work {
    Payout(Arc<PayoutEngine>),
    /// `pass`: a reconcile pass over a payout run (finished once every row was checked).
    Recon {
        engine: Arc<ReconEngine>,
        pass: bool,
    },
}

impl Work {
    fn stop(&self, reason: StopReason) {
        match self {
            Work::Payout(e) => e.stop(reason),
            Work::Recon { engine, .. } => engine.throttle().stop(reason),
        }
    }

    fn rows_done(&self) -> u64 {
        match self {
            Work::Payout(e) => e.rows_done(),
            Work::Recon { engine, .. } => engine.rows_done(),
        }
    }

    fn what_resumes(&self) -> &'static str {
        match self {
            Work::Payout(_) => "unresolved rows resume on the next run",
            Work::Recon { .. } => "unchecked rows resume on the next run",
        }
    }

    /// The rate the shared limiter stands at (metrics).
    fn current_rate(&self) -> u32 {
        match self {
            Work::Payout(e) => e.throttle().current_rate(),
            Work::Recon { engine, .. } => engine.throttle().current_rate(),
        }
    }
}

/// How a drive ended once its report was written and the run finished (or left open).
struct Reported {
    code: i32,
    summary: RunSummary,
    paths: report::ReportPaths,
    text: String,
    warnings: Vec<String>,
    stopped: Option<String>,
}

/// Drives `run_id` and writes its report; returns the exit code. Three steps: drive (with
/// progress, metrics and signal handling), report (the engine settles the run, the report is
/// written, the run finished only after it), publish (result file, stdout, metrics, hook).
pub async fn drive_and_report(ctx: &JobContext, work: Work, run_id: i64) -> anyhow::Result<i32> {
    let started = Instant::now();
    let kind = match ctx.store().run_by_id(run_id).await? {
        Some(r) => r.kind.to_string(),
        None => bail!("run {run_id} does not exist"),
    };
    let drive = drive(ctx, &work, run_id, &kind, started).await?;
    if let (Work::Payout(_), Some(runner)) = (&work, ctx.runner()) {
        if let Some(code) = another_runner_reports(ctx, runner, run_id, &drive).await? {
            return Ok(code);
        }
    }
    let reported = report(ctx, &work, run_id, drive).await?;
    publish(ctx, &work, run_id, &kind, started, reported).await
}

/// Several runners on one payout run (PostgreSQL): whether this runner leaves the report to
/// another, and with which exit code. Exactly one runner writes a finished run's report: the
/// one whose atomic claim (`Store::claim_report`) succeeds once no row is open; the others wait
/// until that runner has finished the run and recorded its exit code, print where the report
/// is, and exit with the same code (3 if it did not finish within the wait: run again, and a
/// new runner writes the report once the claim expires). An unfinished run (rows left at the
/// deadline, or a stop) is reported by the last runner to leave: one that still sees rows under
/// another runner's live lease exits without a report (3, or its stop's code).
/// `None`: this runner writes the report, as a single runner does.
async fn another_runner_reports(
    ctx: &JobContext,
    runner: &crate::engine::runners::RunnerSettings,
    run_id: i64,
    drive: &DriveResult,
) -> anyhow::Result<Option<i32>> {
    let store = ctx.store();
    if store.open_rows(run_id).await? > 0 {
        let held = store.rows_held_by_others(run_id, &runner.id).await?;
        if held == 0 {
            return Ok(None);
        }
        let code = drive
            .cut_short()
            .unwrap_or(crate::exit::Outcome::Unresolved)
            .code();
        crate::say!(
            "run {run_id}: {held} open row(s) are held by other runners; the last runner to leave writes the report"
        );
        return Ok(Some(code));
    }
    let claim_ms = runner.lease_ms().saturating_mul(4);
    if store.claim_report(run_id, &runner.id, claim_ms).await?
        == crate::store::pg::ReportClaim::Mine
    {
        return Ok(None);
    }
    // Another runner writes the report: wait for it to finish the run and record its exit.
    let wait = runner.lease.saturating_mul(4) + Duration::from_secs(30);
    let until = Instant::now() + wait;
    loop {
        if let Some(run) = store.run_by_id(run_id).await? {
            let recorded = match (run.finished_at, run.last_exit_at, run.last_exit_code) {
                (Some(done), Some(at), Some(code)) if run.finished && at >= done => Some(code),
                _ => None,
            };
            if let Some(code) = recorded {
                let paths =
                    report::paths(Path::new(&ctx.cfg.reports_dir), &report::report_stem(&run));
                crate::say!(
                    "run {run_id} finished; another runner wrote its report: {} (exit code {code})",
                    paths.report.display()
                );
                return Ok(Some(code));
            }
        }
        if Instant::now() >= until {
            crate::say_warn!(
                "run {run_id}: another runner claimed its report but has not finished it within {}s; run again to write it",
                wait.as_secs()
            );
            return Ok(Some(crate::exit::Outcome::Unresolved.code()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The engine's drive, with progress, periodic metrics and signal handling around it.
async fn drive(
    ctx: &JobContext,
    work: &Work,
    run_id: i64,
    kind: &str,
    started: Instant,
) -> anyhow::Result<DriveResult> {
    let store = ctx.store();
    let total = match &work {
        Work::Payout(_) => Some(store.open_rows(run_id).await?.max(0) as u64),
        Work::Recon { .. } => None,
    };
    let progress = spawn_progress(work.clone(), total);
    let metrics = spawn_metrics(ctx, work.clone(), run_id, kind.to_string(), started);
    let signals = {
        let w = work.clone();
        stop_on_request(ctx.stop_requests(), work.what_resumes(), move |r| w.stop(r))
    };
    let drive = match &work {
        Work::Payout(engine) => engine.drive(run_id).await,
        Work::Recon { engine, .. } => Ok(engine.drive(run_id).await),
    };
    signals.abort();
    progress.abort();
    if let Some(m) = &metrics {
        m.abort();
    }
    // A payout drive fails as a whole only before any row was driven (its rows could not be
    // loaded); every later failure is in `DriveResult` and the report still comes.
    Ok(drive?)
}

/// The engine settles the run; the report is written; the run is finished only after its
/// report is in place; the exit code is recorded on the run.
async fn report(
    ctx: &JobContext,
    work: &Work,
    run_id: i64,
    drive: DriveResult,
) -> anyhow::Result<Reported> {
    let store = ctx.store();
    let settled = match &work {
        Work::Payout(engine) => engine.settle(run_id).await?,
        Work::Recon { engine, pass } => engine.settle(run_id, &drive, *pass).await?,
    };
    let cut_short = drive.cut_short();
    let end = RunEnd {
        finishing: settled.finish,
        exit_code: cut_short.map(|o| o.code()),
    };
    // Report first (temporary files renamed into place), then finish the run: a crash or a
    // failed write in between leaves the run open, and the next command writes it again.
    let kind = match &work {
        Work::Payout(_) => RunKind::Payout,
        // Any reconciliation kind: its report is the reconciliation report.
        Work::Recon { .. } => RunKind::Reconcile,
    };
    let (paths, summary) = report_cmd::write(&ctx.cfg, store, run_id, kind, end).await?;
    let (text, outcome, mut warnings) = match &summary {
        RunSummary::Payout(s) => (s.to_text(), s.outcome(), Vec::new()),
        RunSummary::Recon(s) => (s.to_text(), s.outcome(), s.warnings()),
    };
    if settled.finish {
        store.finish_run(run_id).await?;
    } else if matches!(work, Work::Recon { pass: true, .. })
        && drive.is_complete()
        && settled.unchecked > 0
    {
        crate::say_warn!(
            "run {run_id}: {} row(s) not checked before the deadline; the pass stays open and the next `reconcile` resumes it",
            settled.unchecked
        );
    }
    if let Some(reason) = &drive.stopped {
        warnings.push(format!("run {run_id} stopped: {reason}"));
    } else if let Some(error) = &drive.error {
        warnings.push(format!(
            "run {run_id}: some rows could not be driven and stay unresolved: {error}"
        ));
    }
    let code = cut_short.unwrap_or(outcome).code();
    store.record_exit(run_id, code).await?;
    Ok(Reported {
        code,
        summary,
        paths,
        text,
        warnings,
        stopped: drive.stopped.as_ref().map(|r| r.to_string()),
    })
}

/// After the report: the result file, stdout (the table or the result JSON), warnings, the
/// metrics file and the job's hook. None of them changes the exit code.
async fn publish(
    ctx: &JobContext,
    work: &Work,
    run_id: i64,
    kind: &str,
    started: Instant,
    r: Reported,
) -> anyhow::Result<i32> {
    let Reported {
        code,
        summary,
        paths,
        text,
        warnings,
        stopped,
    } = r;
    // The result file, after the report; its failure is logged, never changes the exit code
    // (the report and the store are in place and tell the same).
    let outputs = ops::outputs();
    let result = build_result(
        ctx,
        run_id,
        code,
        &summary,
        &paths,
        warnings.clone(),
        stopped,
    )
    .await?;
    let json = result.to_json();
    let result_path = PathBuf::from(&result.result_file);
    let written = {
        let (p, j) = (result_path.clone(), json.clone());
        tokio::task::spawn_blocking(move || ops::write_atomic(&p, j.as_bytes())).await
    };
    let result_file = match written {
        Ok(Ok(())) => Some(result_path.as_path()),
        Ok(Err(e)) => {
            crate::say_warn!(
                "cannot write the result file {}: {e}",
                result_path.display()
            );
            None
        }
        Err(e) => {
            crate::say_warn!(
                "cannot write the result file {}: {e}",
                result_path.display()
            );
            None
        }
    };
    if ops::json_stdout() {
        print!("{json}");
    } else {
        report_cmd::print(run_id, &text, &paths);
        if let Some(p) = result_file {
            println!("result:  {}", p.display());
        }
    }
    for w in &warnings {
        crate::say_warn!("{w}");
    }
    if let Some(path) = &outputs.metrics_file {
        match snapshot(
            &MetricsCtx::of(ctx),
            work,
            run_id,
            kind,
            started,
            Some(code),
        )
        .await
        {
            Ok(snap) => write_metrics(path, &snap).await,
            Err(e) => crate::say_warn!("cannot gather metrics for {}: {e:#}", path.display()),
        }
    }
    let input = ops::hooks::HookInput {
        job: &ctx.cfg.job_name,
        run_id,
        exit_code: code,
        result_file,
        json: &json,
    };
    ops::hooks::run(&ctx.cfg.hooks, &input).await;
    Ok(code)
}

/// The run's result (`ops::result`), counts from the report's own summary.
async fn build_result(
    ctx: &JobContext,
    run_id: i64,
    code: i32,
    summary: &RunSummary,
    paths: &report::ReportPaths,
    warnings: Vec<String>,
    stopped: Option<String>,
) -> anyhow::Result<RunResult> {
    let store = ctx.store();
    let run = match store.run_by_id(run_id).await? {
        Some(r) => r,
        None => bail!("run {run_id} does not exist"),
    };
    let mut needs_human = Vec::new();
    let mut omitted = 0u64;
    let mut keep = |row: Option<result::HumanRow>| {
        if let Some(row) = row {
            if needs_human.len() < result::MAX_HUMAN_ROWS {
                needs_human.push(row);
            } else {
                omitted += 1;
            }
        }
    };
    let counts = match summary {
        RunSummary::Payout(s) => {
            let mut after = 0i64;
            loop {
                let page = store.rows_page(run_id, false, after, 5_000).await?;
                let Some(last) = page.last() else { break };
                after = last.line;
                for r in &page {
                    keep(result::human_payout_row(r));
                }
            }
            result::Counts::Payout(s)
        }
        RunSummary::Recon(s) => {
            let mut after = 0i64;
            loop {
                let page = store.recon_report_page(run_id, after, 5_000).await?;
                let Some(last) = page.last() else { break };
                after = last.line;
                for r in &page {
                    keep(result::human_recon_row(r));
                }
            }
            result::Counts::Recon(s)
        }
    };
    let result_file = result::result_path(&ctx.cfg.reports_dir, &run);
    let outputs = ops::outputs();
    Ok(RunResult::new(result::ResultParts {
        run: &run,
        command: outputs.command,
        tz: ctx.cfg.report.timezone,
        started_ms: outputs.started_ms,
        ended_ms: crate::store::now_ms(),
        exit_code: code,
        counts,
        needs_human,
        needs_human_omitted: omitted,
        stopped,
        warnings,
        paths,
        result_file: &result_file,
    }))
}

/// What the metrics writer reads: the store and this command's request counters.
struct MetricsCtx {
    store: Store,
    stats: Arc<RequestStats>,
    job: String,
}

impl MetricsCtx {
    fn of(ctx: &JobContext) -> MetricsCtx {
        MetricsCtx {
            store: ctx.store().clone(),
            stats: ctx.request_stats().clone(),
            job: ctx.cfg.job_name.clone(),
        }
    }
}

/// The metrics of `run_id` now (`exit_code`: the command has ended with it).
async fn snapshot(
    ctx: &MetricsCtx,
    work: &Work,
    run_id: i64,
    kind: &str,
    started: Instant,
    exit_code: Option<i32>,
) -> anyhow::Result<metrics::Snapshot> {
    let store = &ctx.store;
    let (rows, retries): (Vec<(String, i64, Centavos)>, _) = match work {
        Work::Payout(_) => {
            let counts = store.payout_counts(run_id).await?;
            let s = report::Summary::from_counts(&counts);
            (
                s.rows
                    .iter()
                    .map(|(st, n, a)| (st.to_string(), *n as i64, *a))
                    .collect(),
                Some(counts.resends),
            )
        }
        Work::Recon { .. } => {
            let t = store.recon_totals(run_id).await?;
            let s = report::ReconSummary::from_counts(t.counts, t.balance_start, t.balance_end);
            (
                s.rows
                    .iter()
                    .map(|(c, n, a)| (c.to_string(), *n, *a))
                    .collect(),
                None,
            )
        }
    };
    let last_success_ms = store
        .runs_for(&ctx.job, None)
        .await?
        .iter()
        .filter(|r| r.kind.as_str() == kind && r.last_exit_code == Some(crate::exit::OK))
        .filter_map(|r| r.last_exit_at)
        .max();
    Ok(metrics::Snapshot {
        job: ctx.job.clone(),
        kind: kind.to_string(),
        run_id,
        rows,
        requests: ctx.stats.snapshot(),
        retries,
        duration_secs: started.elapsed().as_secs_f64(),
        limiter_rate: Some(work.current_rate()),
        in_progress: exit_code.is_none(),
        exit_code,
        last_success_ms,
        now_ms: crate::store::now_ms(),
    })
}

/// Writes the metrics file (off the async threads); a failure is logged, nothing more.
async fn write_metrics(path: &Path, snap: &metrics::Snapshot) {
    let (p, text) = (path.to_path_buf(), metrics::render(snap));
    let written = tokio::task::spawn_blocking(move || ops::write_atomic(&p, text.as_bytes())).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => crate::say_warn!("cannot write the metrics file {}: {e}", path.display()),
        Err(e) => crate::say_warn!("cannot write the metrics file {}: {e}", path.display()),
    }
}

/// With `--metrics-file`: the metrics now, then every `--metrics-interval-secs` until
/// aborted (the final write is `drive_and_report`'s).
fn spawn_metrics(
    ctx: &JobContext,
    work: Work,
    run_id: i64,
    kind: String,
    started: Instant,
) -> Option<tokio::task::JoinHandle<()>> {
    let outputs = ops::outputs();
    let path = outputs.metrics_file.clone()?;
    let interval = outputs.metrics_interval;
    // The task needs the context's store and counters, not the context itself.
    let ctx = MetricsCtx::of(ctx);
    Some(tokio::spawn(async move {
        loop {
            match snapshot(&ctx, &work, run_id, &kind, started, None).await {
                Ok(snap) => write_metrics(&path, &snap).await,
                Err(e) => tracing::debug!("metrics not gathered: {e:#}"),
            }
            tokio::time::sleep(interval).await;
        }
    }))
}

/// Ctrl-C, SIGTERM or SIGHUP (the command's stop request, `JobContext::stop_requests`) stops
/// taking work: in-flight requests finish and what is left resumes on the next run; a second
/// signal quits at once (the context's listener). A request made before the drive started
/// stops it at once. Abort the returned task once the drive is over.
pub fn stop_on_request(
    mut requests: tokio::sync::watch::Receiver<Option<&'static str>>,
    what_resumes: &'static str,
    stop: impl FnOnce(StopReason) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(name) = requests.wait_for(Option::is_some).await.map(|n| *n) else {
            return;
        };
        crate::say_warn!(
            "interrupted ({}): finishing in-flight requests; {what_resumes}",
            name.unwrap_or("signal")
        );
        stop(StopReason::Interrupted);
    })
}

/// Progress: a bar on a terminal (payout runs, whose size is known), a log line every 5 s
/// otherwise.
fn spawn_progress(work: Work, total: Option<u64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match total {
            Some(total) if std::io::stderr().is_terminal() => {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} rows resolved  {per_sec}  ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                loop {
                    bar.set_position(work.rows_done());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            _ => {
                let start = std::time::Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let done = work.rows_done();
                    let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                    match total {
                        Some(total) => tracing::info!(
                            done,
                            total,
                            rows_per_sec = format!("{rate:.1}"),
                            "progress"
                        ),
                        None => {
                            tracing::info!(done, rows_per_sec = format!("{rate:.1}"), "progress")
                        }
                    }
                }
            }
        }
    })
}
