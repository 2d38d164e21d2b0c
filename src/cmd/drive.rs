//! The one way a command drives a run and reports it, for payout runs and reconciliation runs
//! alike: progress and signal handling around the engine's drive, then the engine settles the
//! run, the report is written, the run is finished (only after its report is in place), the
//! summary is printed, and the outcome becomes the exit code.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use crate::cmd::context::JobContext;
use crate::cmd::exit;
use crate::cmd::report as report_cmd;
use crate::engine::payout::PayoutEngine;
use crate::engine::recon::ReconEngine;
use crate::engine::stop::StopReason;
use crate::engine::DriveResult;
use crate::report::RunEnd;

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
}

/// Drives `run_id` and writes its report; returns the exit code.
pub async fn drive_and_report(ctx: &JobContext, work: Work, run_id: i64) -> anyhow::Result<i32> {
    let store = ctx.store();
    let total = match &work {
        Work::Payout(_) => Some(store.rows_of_run(run_id, true).await?.len() as u64),
        Work::Recon { .. } => None,
    };
    let progress = spawn_progress(work.clone(), total);
    let signals = {
        let w = work.clone();
        stop_on_signal(work.what_resumes(), move |r| w.stop(r))
    };
    let drive = match &work {
        Work::Payout(engine) => engine.drive(run_id).await,
        Work::Recon { engine, .. } => Ok(engine.drive(run_id).await),
    };
    signals.abort();
    progress.abort();
    // A payout drive fails as a whole only before any row was driven (its rows could not be
    // loaded); every later failure is in `DriveResult` and the report still comes.
    let drive: DriveResult = drive?;
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
    let (paths, text, outcome, warnings) = match &work {
        Work::Payout(_) => {
            let (paths, summary) = report_cmd::payout(&ctx.cfg, store, run_id, end).await?;
            (paths, summary.to_text(), summary.outcome(), Vec::new())
        }
        Work::Recon { .. } => {
            let (paths, summary) = report_cmd::recon(&ctx.cfg, store, run_id, end).await?;
            (
                paths,
                summary.to_text(),
                summary.outcome(),
                summary.warnings(),
            )
        }
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
    report_cmd::print(run_id, &text, &paths);
    for w in warnings {
        crate::say_warn!("{w}");
    }
    if let Some(reason) = &drive.stopped {
        crate::say_warn!("run {run_id} stopped: {reason}");
    } else if let Some(error) = &drive.error {
        crate::say_warn!(
            "run {run_id}: some rows could not be driven and stay unresolved: {error}"
        );
    }
    Ok(cut_short.unwrap_or(outcome).code())
}

/// The first Ctrl-C stops taking work: in-flight requests finish and what is left resumes on
/// the next run. A second one quits at once (safe: every msgId is stored before its send; rows
/// caught in flight are resolved by query on the next run). Abort the returned task once the
/// drive is over.
pub fn stop_on_signal(
    what_resumes: &'static str,
    stop: impl FnOnce(StopReason) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            crate::say_warn!(
                "interrupted: finishing in-flight requests; {what_resumes} (Ctrl-C again to quit now)"
            );
            stop(StopReason::Interrupted);
            if tokio::signal::ctrl_c().await.is_ok() {
                crate::say_warn!(
                    "quitting now; rows in flight are resolved by query on the next run"
                );
                std::process::exit(exit::UNRESOLVED);
            }
        }
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
