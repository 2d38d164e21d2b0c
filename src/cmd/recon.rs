//! Reconciliation jobs (`kind = "repayment-recon"` / `"disbursement-recon"`) and `reconcile`
//! of one of our payout runs. Same store, client and request pool as payouts; the work is
//! `engine::recon`'s.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::{ReconcileArgs, RunArgs};
use crate::cmd::exit;
use crate::cmd::run::{
    connect_client, load_any, lock, open_run_of_file, runtime, sha256_file, stop_on_ctrl_c,
};
use crate::config::{JobConfig, JobKind};
use crate::engine::pool::Pool;
use crate::engine::recon::{ReconEngine, ReconSettings};
use crate::input::recon::{scan_recon, ReconKind, ReconScan};
use crate::report;
use crate::store::recon::{self as sql, NewReconRow};
use crate::store::{self, Store, StoreError};

/// Rows inserted per statement batch while loading the file.
const INSERT_BATCH: usize = 5_000;

fn recon_kind(kind: JobKind) -> Option<ReconKind> {
    match kind {
        JobKind::RepaymentRecon => Some(ReconKind::Repayment),
        JobKind::DisbursementRecon => Some(ReconKind::Disbursement),
        JobKind::Payout => None,
    }
}

fn settings(cfg: &JobConfig, kind: ReconKind) -> ReconSettings {
    ReconSettings {
        kind,
        stale_after: cfg.resolve.stale_after,
        max_tries: 4,
        backoff_base: Duration::from_millis(500),
        backoff_max: Duration::from_secs(60),
        deadline: cfg.resolve.deadline,
    }
}

/// A reconciliation engine on the job's endpoint, with its own request pool (the simulator
/// handle, if any, must outlive the engine's use).
async fn recon_engine(
    cfg: &JobConfig,
    store: &Store,
    kind: ReconKind,
) -> anyhow::Result<(Arc<ReconEngine>, Option<crate::server::sim::SimHandle>)> {
    let (client, sim) = connect_client(cfg).await?;
    let pool = Pool::new(
        store.clone(),
        cfg.limits.concurrency,
        cfg.limits.requests_per_second.get(),
        cfg.limits.burst.get(),
    )
    .await?;
    let engine = ReconEngine::new(
        client,
        store.clone(),
        pool,
        settings(cfg, kind),
        cfg.resolve.ab_hold,
    );
    Ok((engine, sim))
}

/// `run JOB` for a recon job.
pub fn run(cfg: JobConfig, args: RunArgs) -> anyhow::Result<i32> {
    let Some(kind) = recon_kind(cfg.kind) else {
        bail!("not a reconciliation job");
    };
    if args.skip_invalid {
        bail!("--skip-invalid applies to payout jobs only; fix the reconciliation file");
    }
    // Nothing is created (lock, database, reports) before the input has been found.
    std::fs::File::open(&cfg.input)
        .with_context(|| format!("cannot read input {}", cfg.input.display()))?;
    let _lock = lock(&cfg)?;
    runtime()?.block_on(run_recon(cfg, kind, args))
}

async fn run_recon(cfg: JobConfig, kind: ReconKind, args: RunArgs) -> anyhow::Result<i32> {
    let store = Store::open(&cfg.database)?;
    let sha = sha256_file(&cfg.input)?;
    let open_run = open_run_of_file(&cfg, &store, &sha, args.new_run, "reconciled").await?;
    if open_run.is_none() {
        // Validate the whole file before anything is sent (streaming: nothing is kept).
        let input = cfg.input.clone();
        let scan = tokio::task::spawn_blocking(move || scan_recon::<()>(&input, kind, |_| Ok(())))
            .await
            .context("validation task failed")??
            .map_err(|()| anyhow::anyhow!("validation stopped"))?;
        if !scan.is_valid() {
            report_invalid(&cfg, &scan);
            return Ok(exit::COULD_NOT_RUN);
        }
        if args.dry_run {
            println!("dry run: {} rows valid; nothing sent", scan.rows);
            return Ok(exit::OK);
        }
    } else if args.dry_run {
        println!(
            "dry run: run {} of this file is open and would be resumed; nothing sent",
            open_run.unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    let (engine, _sim) = recon_engine(&cfg, &store, kind).await?;
    let run_id = match open_run {
        Some(id) => {
            crate::say!("resuming run {id} of job {:?}", cfg.job_name);
            id
        }
        None => {
            let balance = engine.balance().await?;
            let id = load_rows(&cfg, &store, kind, &sha, balance).await?;
            crate::say!("created run {id} of job {:?}", cfg.job_name);
            id
        }
    };
    drive_and_report(&cfg, &engine, &store, run_id, false).await
}

/// Creates the run and loads every row in one transaction (all or nothing: a kill while
/// loading leaves no half-loaded run), streaming the file.
async fn load_rows(
    cfg: &JobConfig,
    store: &Store,
    kind: ReconKind,
    sha: &str,
    balance: crate::domain::Centavos,
) -> anyhow::Result<i64> {
    let (job, input, sha, kind_name) = (
        cfg.job_name.clone(),
        cfg.input.clone(),
        sha.to_string(),
        cfg.kind.as_str(),
    );
    let loaded = store
        .call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let run_id =
                sql::create_recon_run(&tx, &job, kind_name, &input.display().to_string(), &sha)?;
            let mut batch: Vec<NewReconRow> = Vec::with_capacity(INSERT_BATCH);
            let flush = |tx: &rusqlite::Transaction<'_>, batch: &mut Vec<NewReconRow>| {
                sql::insert_recon_rows_tx(tx, run_id, batch).map(|()| batch.clear())
            };
            let scanned = scan_recon::<StoreError>(&input, kind, |row| {
                batch.push(NewReconRow {
                    line: row.line,
                    reference: row.reference,
                    ref_no: row.ref_no,
                    original_msg_id: row.original_msg_id,
                    expected_amount: row.expected_amount,
                    expected_state: row.expected_state.map(|s| s.as_str().to_string()),
                });
                if batch.len() >= INSERT_BATCH {
                    flush(&tx, &mut batch)?;
                }
                Ok(())
            });
            let scan = match scanned {
                Ok(Ok(scan)) => scan,
                Ok(Err(e)) => return Err(e),
                Err(e) => return Ok(Err(e.to_string())),
            };
            flush(&tx, &mut batch)?;
            if !scan.is_valid() || scan.sha256 != sha {
                return Ok(Err(
                    "the file changed while it was being read; run again".to_string()
                ));
            }
            sql::seal_recon_run_tx(&tx, run_id)?;
            sql::set_balance(&tx, run_id, true, balance)?;
            tx.commit()?;
            Ok(Ok(run_id))
        })
        .await?;
    loaded.map_err(|e| anyhow::anyhow!("{}: {e}", cfg.input.display()))
}

fn report_invalid(cfg: &JobConfig, scan: &ReconScan) {
    crate::logging::input_errors(&scan.errors, &scan.describe_errors());
    crate::say_warn!(
        "{} error(s) in {}; nothing was sent",
        scan.errors.len() + scan.errors_omitted,
        cfg.input.display()
    );
}

async fn drive_and_report(
    cfg: &JobConfig,
    engine: &Arc<ReconEngine>,
    store: &Store,
    run_id: i64,
    reconcile_pass: bool,
) -> anyhow::Result<i32> {
    let ctrl_c = {
        let engine = Arc::clone(engine);
        stop_on_ctrl_c("unchecked rows resume on the next run", move |r| {
            engine.pool().stop(r)
        })
    };
    let progress = {
        let engine = Arc::clone(engine);
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = engine.rows_done();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                tracing::info!(done, rows_per_sec = format!("{rate:.1}"), "progress");
            }
        })
    };
    let result = engine.drive(run_id).await;
    ctrl_c.abort();
    progress.abort();
    let drive_error = result.as_ref().err().map(ToString::to_string);
    let stopped = result.ok().flatten();
    if stopped.is_none() && drive_error.is_none() {
        match engine.balance().await {
            Ok(b) => {
                store
                    .call(move |c| sql::set_balance(c, run_id, false, b))
                    .await?
            }
            Err(e) => tracing::warn!(error = %e, "balance at the end of the run is unknown"),
        }
    }
    // Two lines claiming one Starpay order: over the whole run, before the report (issue 8).
    let duplicates = store
        .call(move |c| sql::mark_duplicate_matches(c, run_id))
        .await?;
    if duplicates > 0 {
        tracing::warn!(
            rows = duplicates,
            "rows claim a Starpay order another line already matched"
        );
    }
    let open = store.call(move |c| sql::open_recon_rows(c, run_id)).await?;
    let unchecked = store
        .call(move |c| sql::unchecked_recon_rows(c, run_id))
        .await?;
    // A recon job's run stays open while rows can still change (re-run to re-check them). A
    // reconcile pass ends only when every row has been checked (issue 8: one cut by its deadline
    // is resumed by the next `reconcile`); a finished pass is not resumed, the next `reconcile`
    // starts a fresh pass over every row (drift can happen to rows that were final).
    let complete = stopped.is_none() && drive_error.is_none();
    let finish = complete && (open == 0 || (reconcile_pass && unchecked == 0));
    // The report first, then the run is finished: a run is never FINISHED without its report.
    let (paths, summary) = crate::cmd::report::recon(
        cfg,
        store,
        run_id,
        report::RunEnd {
            finishing: finish,
            exit_code: match (&stopped, &drive_error) {
                (Some(reason), _) if reason.is_interrupted() => Some(exit::UNRESOLVED),
                (Some(_), _) | (None, Some(_)) => Some(exit::COULD_NOT_RUN),
                (None, None) => None,
            },
        },
    )
    .await?;
    if finish {
        store.call(move |c| store::finish_run(c, run_id)).await?;
    } else if reconcile_pass && complete && unchecked > 0 {
        crate::say_warn!(
            "run {run_id}: {unchecked} row(s) not checked before the deadline; the pass stays open and the next `reconcile` resumes it"
        );
    }
    crate::cmd::report::print(run_id, &summary.to_text(), &paths);
    let paid = summary.count("PAID_BUT_RECORDED_UNPAID");
    if paid > 0 {
        crate::say_warn!(
            "WARNING: {paid} row(s) PAID_BUT_RECORDED_UNPAID: Starpay paid rows our store held as unpaid; their references are blocked again; do not pay them again and check whether they were paid a second time elsewhere (see the report)"
        );
    }
    let claimed = summary.count("DUPLICATE_MATCH");
    if claimed > 0 {
        crate::say_warn!(
            "WARNING: {claimed} row(s) DUPLICATE_MATCH: a Starpay payment is claimed by more than one line (see the report)"
        );
    }
    if let Some(reason) = stopped {
        crate::say_warn!("run {run_id} stopped: {reason}");
        // Interrupted by the operator: rows remain to check (3). A stop code: could not run (1).
        return Ok(if reason.is_interrupted() {
            exit::UNRESOLVED
        } else {
            exit::COULD_NOT_RUN
        });
    }
    if let Some(e) = drive_error {
        crate::say_warn!("run {run_id}: {e}");
        return Ok(exit::COULD_NOT_RUN);
    }
    Ok(summary.exit_code())
}

/// `reconcile JOB --run ID`: re-checks every row of payout run ID against Starpay, reports
/// drift and applies it to the store (a SUCCESS that became REVERSED, a PENDING that settled).
pub fn reconcile(args: ReconcileArgs) -> anyhow::Result<i32> {
    let cfg = load_any(&args.job, None)?;
    if cfg.kind != JobKind::Payout {
        bail!(
            "{}: reconcile works on payout jobs (this one is {:?})",
            args.job.display(),
            cfg.kind.as_str()
        );
    }
    if cfg.starpay.endpoint == crate::config::Endpoint::EmbeddedSim {
        bail!(
            "{}: endpoint = \"embedded-sim\" starts an empty simulator in each command, so there is nothing to reconcile against; point the job at Starpay or at a running `starpay-batch sim` (endpoint = its base URL)",
            args.job.display()
        );
    }
    let _lock = lock(&cfg)?;
    runtime()?.block_on(async move {
        let store = Store::open(&cfg.database)?;
        let payout_run = args.run;
        let Some(run) = store.call(move |c| store::run_by_id(c, payout_run)).await? else {
            bail!(
                "run {payout_run} does not exist in {}",
                cfg.database.display()
            );
        };
        if run.job != cfg.job_name || run.kind != "payout" {
            bail!(
                "run {payout_run} is not a payout run of job {:?}",
                cfg.job_name
            );
        }
        let key = format!("reconcile-of-run-{payout_run}");
        let (job, k) = (cfg.job_name.clone(), key.clone());
        let open = store
            .call(move |c| store::runs_for(c, &job, Some(&k)))
            .await?
            .into_iter()
            .find(|r| !r.finished)
            .map(|r| r.id);
        let (engine, _sim) = recon_engine(&cfg, &store, ReconKind::Disbursement).await?;
        let run_id = match open {
            Some(id) => {
                crate::say!("resuming reconcile run {id} of payout run {payout_run}");
                id
            }
            None => {
                let balance = engine.balance().await?;
                let job = cfg.job_name.clone();
                let id = store
                    .call(move |c| {
                        // The run, its rows and its opening balance in one transaction.
                        let tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let id = sql::create_recon_run(
                            &tx,
                            &job,
                            "reconcile",
                            &format!("payout run {payout_run}"),
                            &key,
                        )?;
                        sql::fill_from_payout_run_tx(&tx, id, payout_run)?;
                        sql::set_balance(&tx, id, true, balance)?;
                        tx.commit()?;
                        Ok(id)
                    })
                    .await?;
                crate::say!("created reconcile run {id} for payout run {payout_run}");
                id
            }
        };
        let code = drive_and_report(&cfg, &engine, &store, run_id, true).await?;
        // The pass may have moved payout rows (drift applied to the store): the payout run's
        // report says so too (its previous version is kept beside it).
        let (paths, _) =
            crate::cmd::report::payout(&cfg, &store, payout_run, report::RunEnd::default()).await?;
        println!(
            "payout run {payout_run} report rewritten: {}",
            paths.report.display()
        );
        Ok(code)
    })
}
