//! `run JOB --dry-run`: everything a real run checks before its first request, offline, and
//! nothing written — no database, no lock, no report (issue 10, defect 7). Loads and checks
//! the keys; validates the file against earlier runs (read from a snapshot of the database, if
//! it exists) and the bank names against the last bank list Starpay gave (or the shipped
//! `samples/banks.csv` when none was seen yet). Works on a file already paid: it only reads.

use std::collections::HashSet;

use anyhow::Context;

use crate::cli::RunArgs;
use crate::cmd::context::{load_job, load_keys};
use crate::cmd::exit;
use crate::config::JobKind;
use crate::engine::prepare::{self, EarlierRuns};
use crate::input::recon::{scan_recon, ReconKind};
use crate::store::Store;

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let cfg = load_job(&args.job, args.input.clone())?;
    std::fs::File::open(&cfg.input)
        .with_context(|| format!("cannot read input {}", cfg.input.display()))?;
    load_keys(&cfg)?;
    let kind = match cfg.kind {
        JobKind::Payout => None,
        JobKind::RepaymentRecon => Some(ReconKind::Repayment),
        JobKind::DisbursementRecon => Some(ReconKind::Disbursement),
    };
    if let Some(kind) = kind {
        return recon(&cfg.input, kind);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = Store::open_snapshot(&cfg.database)?;
        let sha = crate::cmd::context::sha256_file(&cfg.input)?;
        let mut ignore = HashSet::new();
        let mut notes = Vec::new();
        if let Some(store) = &store {
            for r in store.runs_for(&cfg.job_name, Some(&sha)).await? {
                if r.finished {
                    notes.push(format!(
                        "this file was already paid by run {}: a real run refuses it (exit 4) unless --new-run",
                        r.id
                    ));
                } else {
                    notes.push(format!(
                        "run {} of this file is open: a real run resumes it",
                        r.id
                    ));
                }
                ignore.insert(r.id);
            }
        }
        let (banks, banks_from) = match &store {
            Some(s) => match s.last_bank_list().await? {
                Some((names, at)) => (
                    names,
                    format!(
                        "the bank list Starpay gave on {}",
                        crate::report::ts(Some(at), cfg.report.timezone)
                    ),
                ),
                None => shipped_banks()?,
            },
            None => shipped_banks()?,
        };
        let earlier = EarlierRuns {
            store: store.as_ref(),
            ignore,
        };
        let v = prepare::validate_payouts(
            earlier,
            &cfg.input,
            Some(banks.into_iter().collect()),
            args.repay,
            &cfg.spending,
        )
        .await?;
        for n in &notes {
            crate::say!("dry run: {n}");
        }
        let errors = v.file.errors.count();
        println!(
            "dry run: {} valid rows, total PHP {}, {errors} error(s); keys load; bank names checked against {banks_from}; nothing sent, nothing written",
            v.file.valid_rows,
            v.file.total,
        );
        if !prepare::may_proceed(&v.file, args.skip_invalid).unwrap_or(false) {
            crate::cmd::run::report_invalid(&cfg.input, &v);
            return Ok(exit::COULD_NOT_RUN);
        }
        if !v.file.is_valid() {
            // --skip-invalid: the real run would send the valid rows and report these.
            crate::logging::input_errors(&v.file.errors, &v.file.errors.describe());
        }
        // Approval and spending caps (issue 13), as the real run checks them for a new run.
        if notes.is_empty() {
            if let Err(e) =
                crate::cmd::approve::check(&cfg, store.as_ref(), &v, "in this dry run").await
            {
                println!("dry run: {e}");
                return Ok(exit::COULD_NOT_RUN);
            }
        }
        Ok(exit::OK)
    })
}

/// The bank list shipped with the program (`samples/banks.csv`), for a database that never
/// saw Starpay's.
pub(crate) fn shipped_banks() -> anyhow::Result<(Vec<String>, String)> {
    let banks = crate::server::sim::parse_banks(
        crate::server::sim::DEFAULT_BANKS_CSV,
        "samples/banks.csv",
    )?;
    Ok((
        banks.into_iter().map(|b| b.bank_name).collect(),
        "the shipped samples/banks.csv (no bank list from Starpay seen yet)".to_string(),
    ))
}

/// The dry run of a reconciliation file: the whole file validated, streaming.
fn recon(input: &std::path::Path, kind: ReconKind) -> anyhow::Result<i32> {
    let scan = scan_recon::<()>(input, kind, |_| Ok(()))?
        .map_err(|()| anyhow::anyhow!("validation stopped"))?;
    if !scan.is_valid() {
        crate::logging::input_errors(&scan.errors, &scan.errors.describe());
        println!(
            "dry run: {} error(s) in {}; nothing sent, nothing written",
            scan.errors.count(),
            input.display()
        );
        return Ok(exit::COULD_NOT_RUN);
    }
    println!(
        "dry run: {} rows valid, keys load; nothing sent, nothing written",
        scan.rows
    );
    Ok(exit::OK)
}

/// Before a real `run` creates its lock and database (issue 10, defect 5: nothing is created
/// before the input has been found and validated): the same offline validation, against a
/// read-only snapshot of the database when there is one. `Some(exit code)` when the run must
/// stop here; `None` to go on (the real run validates again, under its lock). A file that
/// already has a run is left to the real path (it resumes or refuses it).
pub fn refuse_invalid_before_creating(args: &RunArgs) -> anyhow::Result<Option<i32>> {
    let cfg = load_job(&args.job, args.input.clone())?;
    std::fs::File::open(&cfg.input)
        .with_context(|| format!("cannot read input {}", cfg.input.display()))?;
    let kind = match cfg.kind {
        JobKind::Payout => None,
        JobKind::RepaymentRecon => Some(ReconKind::Repayment),
        JobKind::DisbursementRecon => Some(ReconKind::Disbursement),
    };
    if let Some(kind) = kind {
        let scan = scan_recon::<()>(&cfg.input, kind, |_| Ok(()))?
            .map_err(|()| anyhow::anyhow!("validation stopped"))?;
        if scan.is_valid() {
            return Ok(None);
        }
        crate::logging::input_errors(&scan.errors, &scan.errors.describe());
        crate::say_warn!(
            "{} error(s) in {}; nothing was sent",
            scan.errors.count(),
            cfg.input.display()
        );
        return Ok(Some(exit::COULD_NOT_RUN));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // An older schema is upgraded by the real run, which then validates: nothing to add.
        let Ok(store) = Store::open_snapshot(&cfg.database) else {
            return Ok(None);
        };
        if let Some(store) = &store {
            let sha = crate::cmd::context::sha256_file(&cfg.input)?;
            if !store.runs_for(&cfg.job_name, Some(&sha)).await?.is_empty() {
                return Ok(None);
            }
        }
        let earlier = EarlierRuns {
            store: store.as_ref(),
            ignore: HashSet::new(),
        };
        let v =
            prepare::validate_payouts(earlier, &cfg.input, None, args.repay, &cfg.spending).await?;
        if !v.file.is_valid() {
            // A run of this file may have been created meanwhile (another runner of the job on
            // PostgreSQL): its rows then hold the file's references. The real run decides (join,
            // resume or refuse) under the job's lock and validates again there.
            if let Some(store) = &store {
                let sha = crate::cmd::context::sha256_file(&cfg.input)?;
                if !store.runs_for(&cfg.job_name, Some(&sha)).await?.is_empty() {
                    return Ok(None);
                }
            }
        }
        match prepare::may_proceed(&v.file, args.skip_invalid) {
            Ok(true) => Ok(None),
            Ok(false) => {
                crate::cmd::run::report_invalid(&cfg.input, &v);
                Ok(Some(exit::COULD_NOT_RUN))
            }
            Err(e) => {
                crate::cmd::run::report_invalid(&cfg.input, &v);
                Err(e.into())
            }
        }
    })
}
