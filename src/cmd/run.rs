//! `run JOB`: a payout job (validate, pre-flight, create the run, drive, report) or a
//! reconciliation job (validate, load, drive, report). Resumes the open run of the same file;
//! refuses a file already done. The rules are the engine's (`engine::prepare`); this file
//! only puts the steps in order.

use anyhow::{bail, Context};

use crate::cli::RunArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::drive::{drive_and_report, Work};
use crate::cmd::report as report_cmd;
use crate::cmd::{exit, CommandError};
use crate::config::JobKind;
use crate::engine::prepare::{self, EarlierRuns, Validated};
use crate::input::recon::{scan_recon, ReconKind, ReconScan};
use crate::report::{self, RunEnd};
use crate::store::recon::NewReconRow;
use crate::store::{NewRun, StoreError};

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.dry_run {
        return crate::cmd::dry_run::run(&args);
    }
    // Nothing (lock, database, reports) is created for a file that fails offline validation.
    if let Some(code) = crate::cmd::dry_run::refuse_invalid_before_creating(&args)? {
        return Ok(code);
    }
    let ctx = JobContext::open(&args.job, args.input.clone(), Access::Runner)?;
    match ctx.cfg.kind {
        JobKind::Payout => ctx.block_on(run_payout(&ctx, &args)),
        JobKind::RepaymentRecon => run_recon(&ctx, ReconKind::Repayment, &args),
        JobKind::DisbursementRecon => run_recon(&ctx, ReconKind::Disbursement, &args),
    }
}

/// A payout job's `run`, in the order money rules require: the file validated offline,
/// approval and caps, pre-flight (2.1, 5.1, validation against the bank list, 5.6), the run
/// created, then the drive. Longer than ~100 lines on purpose: each step's refusal returns
/// here, before the next step can send anything, and reads in that order.
async fn run_payout(ctx: &JobContext, args: &RunArgs) -> anyhow::Result<i32> {
    let cfg = &ctx.cfg;
    let sha = ctx.input_sha256()?;
    // Several runners (PostgreSQL): the first creates the run, the others wait here and join it.
    let _creating = match ctx.runner() {
        Some(_) => Some(ctx.store().lock_run_creation(&cfg.job_name, &sha).await?),
        None => None,
    };
    let open_run = open_run_of_file(ctx, &sha, args.new_run, "paid").await?;
    if let Some(runner) = ctx.runner() {
        refuse_another_file_in_progress(ctx, &sha, &runner.id).await?;
    }
    if open_run.is_none() {
        // Validate the whole file offline first: bad input sends nothing, not even a health check.
        let v = prepare::validate_payouts(
            EarlierRuns::all(ctx.store()),
            &cfg.input,
            None,
            args.repay,
            &cfg.spending,
        )
        .await?;
        if !prepare::may_proceed(&v.file, args.skip_invalid)
            .inspect_err(|_| report_invalid(&ctx.cfg.input, &v))?
        {
            report_invalid(&ctx.cfg.input, &v);
            return Ok(exit::COULD_NOT_RUN);
        }
        // Approval and spending caps (issue 13), offline: a refusal sends nothing at all.
        crate::cmd::approve::gate(ctx, &v, "before anything is sent").await?;
    }
    if let Some(code) = ctx.stopped_before_sending() {
        return Ok(code);
    }
    let (engine, _sim) = ctx.payout_engine().await?;
    let run_id = match open_run {
        Some(id) => {
            match ctx.runner() {
                Some(r) => crate::say!(
                    "resuming run {id} of job {:?} (joining any other runner of it, as runner {})",
                    cfg.job_name,
                    r.id
                ),
                None => crate::say!("resuming run {id} of job {:?}", cfg.job_name),
            }
            id
        }
        None => {
            // Pre-flight: the bank list (5.1), validation against it, the balance (5.6).
            let banks = engine.bank_names().await?;
            let bank_list_empty = banks.is_empty();
            // Remembered for dry runs, which check bank names offline.
            ctx.store()
                .save_bank_list(banks.iter().cloned().collect())
                .await?;
            let v = prepare::validate_payouts(
                EarlierRuns::all(ctx.store()),
                &cfg.input,
                Some(banks.clone()),
                args.repay,
                &cfg.spending,
            )
            .await?;
            prepare::check_file(&v.file, &cfg.input, &sha, bank_list_empty)?;
            if !prepare::may_proceed(&v.file, args.skip_invalid)
                .inspect_err(|_| report_invalid(&ctx.cfg.input, &v))?
            {
                report_invalid(&ctx.cfg.input, &v);
                return Ok(exit::COULD_NOT_RUN);
            }
            let rows = prepare::payout_rows(&v, &cfg.input, Some(banks))
                .inspect_err(|_| report_invalid(&ctx.cfg.input, &v))?;
            let rejected = rows.rejected();
            let figures = crate::cmd::approve::gate(ctx, &v, "at pre-flight").await?;
            let balance = engine.balance().await?;
            prepare::check_balance("batch", v.file.total, balance)?;
            crate::cmd::approve::confirm_run(ctx, &figures, args.yes)?;
            crate::say!(
                "validated {} rows, total PHP {} (available balance PHP {}); {} rejected",
                v.file.valid_rows,
                v.file.total,
                balance,
                rejected
            );
            let run = NewRun {
                job: cfg.job_name.clone(),
                kind: crate::domain::RunKind::Payout,
                input: cfg.input.display().to_string(),
                sha256: sha.clone(),
            };
            if let Some(code) = ctx.stopped_before_sending() {
                return Ok(code);
            }
            // One transaction, the file read again into it: no run exists half-created.
            let run_id = ctx
                .store()
                .create_payout_run_streamed(run, move |sink| rows.fill(sink))
                .await??;
            ctx.store()
                .record_preflight_balance(run_id, balance)
                .await?;
            crate::say!("created run {run_id} of job {:?}", cfg.job_name);
            run_id
        }
    };
    // The run exists: the other runners may join it now.
    drop(_creating);
    let receiver = match args.listen {
        Some(addr) => {
            let running = ctx
                .start_receiver(addr, Some(engine.wake_on_notifications()))
                .await?;
            match &cfg.starpay.notify_url {
                Some(url) => crate::say!(
                    "receiving notifications on {} (Starpay is told to send them to {url})",
                    running.addr
                ),
                None => crate::say_warn!(
                    "receiving notifications on {}, but the job has no starpay.notify_url: Starpay will not send any",
                    running.addr
                ),
            }
            Some(running)
        }
        None => None,
    };
    let code = drive_and_report(ctx, Work::Payout(engine), run_id).await;
    if let Some(r) = receiver {
        r.stop().await;
    }
    code
}

pub(crate) fn report_invalid(input: &std::path::Path, v: &Validated) {
    crate::logging::input_errors(&v.file.errors, &v.file.errors.describe());
    crate::say_warn!(
        "{} error(s) in {}; nothing was sent (use --skip-invalid to send the valid rows and report the rest as REJECTED)",
        v.file.errors.count(),
        input.display()
    );
}

fn run_recon(ctx: &JobContext, kind: ReconKind, args: &RunArgs) -> anyhow::Result<i32> {
    if args.skip_invalid {
        bail!("--skip-invalid applies to payout jobs only; fix the reconciliation file");
    }
    ctx.block_on(async {
        let cfg = &ctx.cfg;
        let sha = ctx.input_sha256()?;
        let open_run = open_run_of_file(ctx, &sha, args.new_run, "reconciled").await?;
        if open_run.is_none() {
            // Validate the whole file before anything is sent (streaming: nothing is kept).
            let input = cfg.input.clone();
            let scan =
                tokio::task::spawn_blocking(move || scan_recon::<()>(&input, kind, |_| Ok(())))
                    .await
                    .context("validation task failed")??
                    .map_err(|()| anyhow::anyhow!("validation stopped"))?;
            if !scan.is_valid() {
                report_invalid_recon(ctx, &scan);
                return Ok(exit::COULD_NOT_RUN);
            }
        }
        if let Some(code) = ctx.stopped_before_sending() {
            return Ok(code);
        }
        let (engine, _sim) = ctx.recon_engine(kind).await?;
        let run_id = match open_run {
            Some(id) => {
                crate::say!("resuming run {id} of job {:?}", cfg.job_name);
                id
            }
            None => {
                let balance = engine.balance().await?;
                let id = load_recon_rows(ctx, kind, &sha, balance).await?;
                crate::say!("created run {id} of job {:?}", cfg.job_name);
                id
            }
        };
        drive_and_report(
            ctx,
            Work::Recon {
                engine,
                pass: false,
            },
            run_id,
        )
        .await
    })
}

/// Creates the run and loads every row in one transaction (all or nothing: a kill while
/// loading leaves no half-loaded run), streaming the file.
async fn load_recon_rows(
    ctx: &JobContext,
    kind: ReconKind,
    sha: &str,
    balance: crate::domain::Centavos,
) -> anyhow::Result<i64> {
    let cfg = &ctx.cfg;
    let input = cfg.input.clone();
    let run = NewRun {
        job: cfg.job_name.clone(),
        kind: cfg.kind.run_kind(),
        input: input.display().to_string(),
        sha256: sha.to_string(),
    };
    let sha = sha.to_string();
    let loaded = ctx
        .store()
        .load_recon_run(run, balance, move |sink| {
            let scanned = scan_recon::<StoreError>(&input, kind, |row| {
                sink.push(NewReconRow {
                    line: row.line,
                    reference: row.reference,
                    ref_no: row.ref_no,
                    original_msg_id: row.original_msg_id,
                    expected_amount: row.expected_amount,
                    expected_state: row.expected_state.map(|s| s.as_str().to_string()),
                })
            });
            Ok(match scanned {
                Ok(Ok(scan)) if scan.is_valid() && scan.sha256 == sha => Ok(()),
                Ok(Ok(_)) => Err("the file changed while it was being read; run again".to_string()),
                Ok(Err(e)) => return Err(e),
                Err(e) => Err(e.to_string()),
            })
        })
        .await?;
    loaded.map_err(|e| anyhow::anyhow!("{}: {e}", cfg.input.display()))
}

fn report_invalid_recon(ctx: &JobContext, scan: &ReconScan) {
    crate::logging::input_errors(&scan.errors, &scan.errors.describe());
    crate::say_warn!(
        "{} error(s) in {}; nothing was sent",
        scan.errors.count(),
        ctx.cfg.input.display()
    );
}

/// Several runners (PostgreSQL) share a payout job's lock to join one run of one file. A runner
/// of another file while the job's runners hold rows of an open run is refused, as the job's
/// lock refuses a second process on SQLite (exit 75): one job works on one file at a time. An
/// open run nobody holds rows of (its runners died or stopped) does not stand in the way.
async fn refuse_another_file_in_progress(
    ctx: &JobContext,
    sha: &str,
    runner: &str,
) -> anyhow::Result<()> {
    let cfg = &ctx.cfg;
    let runs = ctx.store().runs_for(&cfg.job_name, None).await?;
    let others = runs
        .iter()
        .filter(|r| !r.finished && r.kind.is_payout() && r.input_sha256 != sha);
    for run in others {
        if ctx.store().rows_held_by_others(run.id, runner).await? > 0 {
            return Err(CommandError::new(
                exit::TEMPFAIL,
                format!(
                    "job {:?} is working on another file (run {}, {}); one job pays one file at a time: run this one when that run has finished; nothing was sent",
                    cfg.job_name, run.id, run.input_path
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The open run of this job for this file (to resume), if any. A finished run of the same
/// file refuses the job unless `new_run` (a scheduler that fires twice must not pay twice).
async fn open_run_of_file(
    ctx: &JobContext,
    sha: &str,
    new_run: bool,
    done_verb: &str,
) -> anyhow::Result<Option<i64>> {
    let cfg = &ctx.cfg;
    let runs = ctx.store().runs_for(&cfg.job_name, Some(sha)).await?;
    let open_run = runs.iter().find(|r| !r.finished).map(|r| r.id);
    if let (None, Some(done)) = (open_run, runs.iter().rev().find(|r| r.finished)) {
        if !new_run {
            // A finished run always has its report; if it went missing, write it again.
            if !report_cmd::report_exists(cfg, done) {
                let (paths, _) =
                    report_cmd::write(cfg, ctx.store(), done.id, done.kind, RunEnd::default())
                        .await?;
                crate::say!(
                    "the report of finished run {} was missing; written again: {}",
                    done.id,
                    paths.report.display()
                );
            }
            return Err(CommandError::new(
                exit::ALREADY_DONE,
                format!(
                    "{}: this file (sha256 {}) was already {done_verb} by run {} of job {:?}, finished {}; refusing to do it twice. Pass --new-run to run the same file again on purpose",
                    cfg.input.display(),
                    &sha[..12.min(sha.len())],
                    done.id,
                    cfg.job_name,
                    report::ts(done.finished_at, cfg.report.timezone)
                ),
            )
            .into());
        }
    }
    Ok(open_run)
}
