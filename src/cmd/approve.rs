//! `approve JOB [--input F] --by NAME [--yes] [--revoke]` (issue 13), and the two checks `run`
//! makes with the same rules: [`gate`] (approval and spending caps, offline before anything is
//! sent and again at pre-flight) and [`confirm_run`] (a typed confirmation on a terminal above
//! `[spending] confirm_above`). The rules are `engine::approval`'s; this file reads the file,
//! the log and the terminal, and records.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::cli::ApproveArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::{exit, CommandError};
use crate::config::JobConfig;
use crate::domain::Centavos;
use crate::engine::approval::{self, Figures};
use crate::engine::prepare::{self, EarlierRuns, Validated};
use crate::report::with_thousands;
use crate::store::approvals::{ApprovalAction, NewApprovalEntry};
use crate::store::Store;

/// `stage` and `approve` work on a payout job over its input file, alone (the job's lock).
pub(crate) fn open_payout_file(
    job: &Path,
    input: Option<PathBuf>,
    command: &str,
) -> anyhow::Result<JobContext> {
    let ctx = JobContext::open(job, input, Access::ExclusiveWithInput)?;
    ctx.require_payout(job, command)?;
    Ok(ctx)
}

/// `approve` (and `--revoke`).
///
/// Longer than ~100 lines on purpose: it is one operator dialogue read in order — check the
/// names, validate the file offline, show its figures and the caps it breaks, ask for the typed
/// confirmation, record the approval (or revocation) — and every refusal is on that path.
pub fn run(args: ApproveArgs) -> anyhow::Result<i32> {
    let by = approval::check_name("--by", &args.by).map_err(anyhow::Error::msg)?;
    let prepared_by = args
        .prepared_by
        .as_deref()
        .map(|p| approval::check_name("--prepared-by", p))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let ctx = open_payout_file(&args.job, args.input.clone(), "approve")?;
    ctx.block_on(async {
        let cfg = &ctx.cfg;
        let Some((_, figures)) = validate_offline(&ctx).await? else {
            return Ok(exit::COULD_NOT_RUN);
        };
        let input_path = cfg.input.display().to_string();
        let log = ctx.store().approval_log(&cfg.job_name).await?;
        let now = crate::store::now_ms();
        if args.revoke {
            let Some(current) = approval::in_force(&log, &figures.sha256, now) else {
                bail!(
                    "{}: no approval of this file (sha256 {}) is in force; nothing to revoke",
                    cfg.input.display(),
                    &figures.sha256[..12]
                );
            };
            let e = ctx
                .store()
                .record_approval(NewApprovalEntry {
                    job: cfg.job_name.clone(),
                    action: ApprovalAction::Revoked,
                    by: by.clone(),
                    input_path,
                    input_sha256: figures.sha256.clone(),
                    rows: figures.rows as i64,
                    total: figures.total,
                    prepared_by: None,
                    overrides: Vec::new(),
                    revokes: Some(current.id),
                })
                .await?;
            println!(
                "revoked approval {} (by {}) of {}: {by} at {}; `run` refuses this file until it is approved again",
                current.id,
                current.by,
                cfg.input.display(),
                crate::report::ts(Some(e.at), cfg.report.timezone)
            );
            return Ok(exit::OK);
        }
        print!("{}", figures.to_text());
        let breaches = approval::breaches(&figures, &cfg.spending);
        if !breaches.is_empty() {
            println!();
            for b in &breaches {
                println!("over cap: {b}");
            }
            if !args.over_limits {
                bail!(
                    "{}: the file is over {} spending cap(s) of the job; nothing was approved (pass --over-limits to approve it above them on purpose)",
                    cfg.input.display(),
                    breaches.len()
                );
            }
        }
        let prepared_by =
            prepared_by.or_else(|| approval::stager(&log, &figures.sha256).map(|s| s.by.clone()));
        if cfg.approval.four_eyes {
            if let Some(r) = approval::four_eyes_problem(prepared_by.as_deref(), &by) {
                bail!("{}: {r}; nothing was approved", cfg.input.display());
            }
        }
        let question = format!(
            "approve {} rows, PHP {} of {} as {by}",
            figures.rows,
            with_thousands(figures.total),
            cfg.input.display()
        );
        if !confirmed(&question, figures.total, args.yes)? {
            bail!("not confirmed; nothing was approved");
        }
        let e = ctx
            .store()
            .record_approval(NewApprovalEntry {
                job: cfg.job_name.clone(),
                action: ApprovalAction::Approved,
                by: by.clone(),
                input_path,
                input_sha256: figures.sha256.clone(),
                rows: figures.rows as i64,
                total: figures.total,
                prepared_by: prepared_by.clone(),
                overrides: breaches.iter().map(|b| b.limit.clone()).collect(),
                revokes: None,
            })
            .await?;
        let tz = cfg.report.timezone;
        let until = e.at + cfg.approval.max_age.as_millis() as i64;
        println!(
            "\napproved (approval {}) by {by} at {}{}; a run may start until {}{}",
            e.id,
            crate::report::ts(Some(e.at), tz),
            prepared_by
                .map(|p| format!(", prepared by {p}"))
                .unwrap_or_default(),
            crate::report::ts(Some(until), tz),
            if e.overrides.is_empty() {
                String::new()
            } else {
                format!("; covers caps {}", e.overrides.join(", "))
            }
        );
        Ok(exit::OK)
    })
}

/// Validates the job's input offline as `run` does (references against earlier runs of other
/// files, bank names against the last list Starpay gave or the shipped one) and returns its
/// figures; `None` (errors printed) when the file is invalid.
pub(crate) async fn validate_offline(
    ctx: &JobContext,
) -> anyhow::Result<Option<(Validated, Figures)>> {
    let cfg = &ctx.cfg;
    let store = ctx.store();
    let sha = ctx.input_sha256()?;
    let ignore = store
        .runs_for(&cfg.job_name, Some(&sha))
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let banks = match store.last_bank_list().await? {
        Some((names, _)) => names,
        None => crate::cmd::dry_run::shipped_banks()?.0,
    };
    let v = prepare::validate_payouts(
        EarlierRuns {
            store: Some(store),
            ignore,
        },
        &cfg.input,
        Some(banks.into_iter().collect()),
        false,
        &cfg.spending,
    )
    .await?;
    if !v.file.is_valid() {
        crate::logging::input_errors(&v.file.errors, &v.file.errors.describe());
        crate::say_warn!(
            "{} error(s) in {}; fix the file first (nothing was recorded)",
            v.file.errors.count(),
            cfg.input.display()
        );
        return Ok(None);
    }
    let figures = v.figures.clone();
    Ok(Some((v, figures)))
}

/// The approval rules and the spending caps for a run of the validated file `v` (`when`:
/// "before anything is sent", "at pre-flight"). Refuses with exit 1 and one line naming the
/// file, the rule and the figures; nothing is sent.
pub(crate) async fn gate(ctx: &JobContext, v: &Validated, when: &str) -> anyhow::Result<Figures> {
    check(&ctx.cfg, Some(ctx.store()), v, when).await
}

/// [`gate`] on any store (`None`: a database that does not exist yet has no approvals), for
/// the dry run's read-only snapshot.
pub(crate) async fn check(
    cfg: &JobConfig,
    store: Option<&Store>,
    v: &Validated,
    when: &str,
) -> anyhow::Result<Figures> {
    let figures = v.figures.clone();
    let log = match store {
        Some(store) => store.approval_log(&cfg.job_name).await?,
        None => Vec::new(),
    };
    let cleared = approval::check_run(
        &cfg.approval,
        &cfg.spending,
        &log,
        &cfg.input.display().to_string(),
        &figures,
        crate::store::now_ms(),
    )
    .map_err(|r| {
        CommandError::new(
            exit::COULD_NOT_RUN,
            format!(
                "{}: {r} (checked {when}); nothing was sent",
                cfg.input.display()
            ),
        )
    })?;
    if let Some(a) = cleared.approval {
        tracing::info!(
            approval = a.id,
            approved_by = %a.by,
            prepared_by = a.prepared_by.as_deref().unwrap_or(""),
            "file approved"
        );
    }
    for b in &cleared.overridden {
        crate::say_warn!(
            "over cap, covered by the approval of {}: {b}",
            cleared.approval.map(|a| a.by.as_str()).unwrap_or("?")
        );
    }
    Ok(figures)
}

/// A `run` on a terminal of a total above `[spending] confirm_above`: the figures, then the
/// total typed back. Not on a terminal (schedulers) or with `--yes`: the approval is the check.
pub(crate) fn confirm_run(ctx: &JobContext, figures: &Figures, yes: bool) -> anyhow::Result<()> {
    let Some(above) = ctx.cfg.spending.confirm_above else {
        return Ok(());
    };
    if yes || figures.total <= above || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{}", figures.to_text());
    let question = format!(
        "send {} rows, PHP {} (above confirm_above PHP {})",
        figures.rows,
        with_thousands(figures.total),
        with_thousands(above)
    );
    if confirmed(&question, figures.total, false)? {
        Ok(())
    } else {
        Err(CommandError::new(exit::COULD_NOT_RUN, "not confirmed; nothing was sent").into())
    }
}

/// `yes`, or a terminal on which the person types the total back (`12,345.00` or `12345`).
/// Without a terminal and without `yes`: refused (a script must say --yes on purpose).
fn confirmed(question: &str, total: Centavos, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::new(
            exit::COULD_NOT_RUN,
            "standard input is not a terminal, so nobody can confirm: pass --yes to confirm on purpose",
        )
        .into());
    }
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\n{question}?\nType the total (PHP {}) to confirm, anything else to stop: ",
        with_thousands(total)
    );
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Centavos::parse_php(line.trim()).is_ok_and(|typed| typed == total))
}
