//! `run`, `retry` and `status` for payout jobs. Builds the real objects (config → keys →
//! client → store → engine) and maps outcomes to exit codes; the work itself is the engine's.

use std::collections::HashSet;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::cli::{RetryArgs, RunArgs, StatusArgs};
use crate::cmd::exit;
use crate::cmd::report as report_cmd;
use crate::config::{self, Endpoint, JobConfig, JobKind, Overrides};
use crate::domain::{Centavos, RowState};
use crate::engine::payout::{Allocated, EngineSettings, PayoutEngine};
use crate::engine::policy::ResolveSettings;
use crate::engine::stop::StopReason;
use crate::input::payout::{read_payouts, ValidationOptions};
use crate::report::{self, ReconSummary, RunEnd, Summary};
use crate::server::sim::{SimConfig, SimHandle, Simulator};
use crate::starpay::client::{Client, ClientConfig, Environment};
use crate::starpay::codes::{reason_class, ReasonClass};
use crate::starpay::sign::{PrivateKey, PublicKey};
use crate::store::{self, NewRow, Store};

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn load_any(job: &Path, input: Option<PathBuf>) -> anyhow::Result<JobConfig> {
    Ok(config::load_job(job, &Overrides::from_env(input))?)
}

/// Loads a job that must be a payout job.
fn load(job: &Path, input: Option<PathBuf>) -> anyhow::Result<JobConfig> {
    let cfg = load_any(job, input)?;
    if cfg.kind != JobKind::Payout {
        bail!(
            "{}: kind = {:?}; this command works on kind = \"payout\" jobs",
            job.display(),
            cfg.kind.as_str()
        );
    }
    Ok(cfg)
}

/// Holds the per-(database, job) lock for the life of the process; the OS releases it if the
/// process dies, so a crash never leaves a stale lock.
pub(crate) fn lock(cfg: &JobConfig) -> anyhow::Result<File> {
    let path = PathBuf::from(format!("{}.{}.lock", cfg.database.display(), cfg.job_name));
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(crate::cmd::CommandError::new(
            exit::TEMPFAIL,
            format!(
                "another starpay-batch process is running job {:?} on database {} (lock {}); nothing was sent",
                cfg.job_name,
                cfg.database.display(),
                path.display()
            ),
        )
        .into()),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

struct Ready {
    engine: Arc<PayoutEngine>,
    /// Keeps the embedded simulator alive for the run.
    _sim: Option<SimHandle>,
}

/// A client for the job's endpoint (starting the embedded simulator when asked), and the
/// simulator handle that must live as long as the client is used.
pub(crate) async fn connect_client(cfg: &JobConfig) -> anyhow::Result<(Client, Option<SimHandle>)> {
    // The embedded simulator moves no money: its TEST-ONLY key is not worth a warning.
    if cfg.starpay.strict_key_permissions || cfg.starpay.endpoint != Endpoint::EmbeddedSim {
        crate::starpay::sign::check_private_key_permissions(
            &cfg.starpay.private_key,
            cfg.starpay.strict_key_permissions,
        )?;
    }
    let signer = Arc::new(PrivateKey::from_file(&cfg.starpay.private_key)?);
    let mut platform_keys = Vec::new();
    for p in &cfg.starpay.platform_public_keys {
        platform_keys.push(PublicKey::from_file(p)?);
    }
    let (environment, sim) = match &cfg.starpay.endpoint {
        Endpoint::Env(env) => (env.clone(), None),
        Endpoint::EmbeddedSim => {
            let mut sim_cfg = match &cfg.sim.config {
                Some(path) => SimConfig::from_toml_file(path)?,
                None => SimConfig::default(),
            };
            if let Some(seed) = cfg.sim.seed {
                sim_cfg.seed = seed;
            }
            let handle = Simulator::start(sim_cfg).await?;
            if !platform_keys.contains(&handle.platform_public_key()) {
                bail!("the configured platform public key does not verify the embedded simulator's answers; use samples/keys/TEST-ONLY-sim-platform-public.pem");
            }
            tracing::info!(base_url = %handle.base_url(), "embedded simulator started");
            (Environment::parse(&handle.base_url())?, Some(handle))
        }
    };
    let mut client_cfg = ClientConfig::new(environment, cfg.starpay.mch_id.clone());
    client_cfg.request_timeout = cfg.limits.request_timeout;
    client_cfg.connect_timeout = cfg.limits.connect_timeout;
    let client = Client::new(client_cfg, signer, platform_keys)?;
    crate::engine::startup::check_connection(&client, cfg.limits.connect_retry).await?;
    Ok((client, sim))
}

async fn connect(cfg: &JobConfig, store: Store) -> anyhow::Result<Ready> {
    let (client, sim) = connect_client(cfg).await?;
    let settings = EngineSettings {
        concurrency: cfg.limits.concurrency,
        requests_per_second: cfg.limits.requests_per_second.get(),
        burst: cfg.limits.burst.get(),
        resolve: ResolveSettings {
            poll_schedule: cfg.resolve.poll_schedule.clone(),
            poll_interval: cfg.resolve.poll_interval,
            not_found_queries: cfg.resolve.not_found_queries,
            not_found_window: cfg.resolve.not_found_window,
            ab_hold: cfg.resolve.ab_hold,
            deadline: cfg.resolve.deadline,
            max_resolve: cfg.resolve.max_resolve,
            ..ResolveSettings::default()
        },
        notify_url: cfg.starpay.notify_url.clone(),
    };
    let engine = PayoutEngine::new(client, store, settings).await?;
    Ok(Ready { engine, _sim: sim })
}

pub(crate) fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f =
        File::open(path).with_context(|| format!("cannot read input {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read input {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let cfg = load_any(&args.job, args.input.clone())?;
    if cfg.kind != JobKind::Payout {
        return crate::cmd::recon::run(cfg, args);
    }
    // Nothing is created (lock, database, reports) before the input has been found.
    File::open(&cfg.input).with_context(|| format!("cannot read input {}", cfg.input.display()))?;
    let _lock = lock(&cfg)?;
    runtime()?.block_on(run_job(cfg, args))
}

async fn run_job(cfg: JobConfig, args: RunArgs) -> anyhow::Result<i32> {
    let store = Store::open(&cfg.database)?;
    let sha = sha256_file(&cfg.input)?;
    let job = cfg.job_name.clone();
    let open_run = open_run_of_file(&cfg, &store, &sha, args.new_run, "paid").await?;
    if open_run.is_none() {
        // Validate the whole file offline first: bad input sends nothing, not even a health check.
        let file = validate(&cfg, &store, None, args.repay).await?.0;
        if args.skip_invalid && file.errors_omitted > 0 {
            report_invalid(&cfg, &file);
            bail!("--skip-invalid needs every rejected row in the report, but the file has more errors than are kept ({} more); fix the file", file.errors_omitted);
        }
        if !file.is_valid() && !args.skip_invalid {
            report_invalid(&cfg, &file);
            return Ok(exit::COULD_NOT_RUN);
        }
        if args.dry_run {
            println!(
                "dry run: {} valid rows, total PHP {}, {} error(s); nothing sent (bank names are checked against the 5.1 list only on a real run)",
                file.rows.len(),
                file.total,
                file.errors.len() + file.errors_omitted
            );
            if !file.is_valid() {
                crate::logging::input_errors(&file.errors, &file.describe_errors());
                return Ok(exit::COULD_NOT_RUN);
            }
            return Ok(exit::OK);
        }
    } else if args.dry_run {
        println!(
            "dry run: run {} of this file is open and would be resumed; nothing sent",
            open_run.unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    let ready = connect(&cfg, store.clone()).await?;
    let engine = Arc::clone(&ready.engine);

    let run_id = match open_run {
        Some(id) => {
            crate::say!("resuming run {id} of job {job:?}");
            id
        }
        None => {
            let Some(run_id) =
                create_run(&cfg, &engine, &store, &sha, args.skip_invalid, args.repay).await?
            else {
                return Ok(exit::COULD_NOT_RUN);
            };
            run_id
        }
    };
    drive_and_report(&cfg, &engine, run_id).await
}

/// The open run of this job for this file (to resume), if any. A finished run of the same
/// file refuses the job unless `new_run` (a scheduler that fires twice must not pay twice).
pub(crate) async fn open_run_of_file(
    cfg: &JobConfig,
    store: &Store,
    sha: &str,
    new_run: bool,
    done_verb: &str,
) -> anyhow::Result<Option<i64>> {
    let (j, s) = (cfg.job_name.clone(), sha.to_string());
    let runs = store
        .call(move |c| store::runs_for(c, &j, Some(&s)))
        .await?;
    let open_run = runs.iter().find(|r| !r.finished).map(|r| r.id);
    if let (None, Some(done)) = (open_run, runs.iter().rev().find(|r| r.finished)) {
        if !new_run {
            // A finished run always has its report; if it went missing, write it again.
            if !report_cmd::report_exists(cfg, done) {
                let paths = if done.kind == "payout" {
                    report_cmd::payout(cfg, store, done.id, RunEnd::default())
                        .await?
                        .0
                } else {
                    report_cmd::recon(cfg, store, done.id, RunEnd::default())
                        .await?
                        .0
                };
                crate::say!(
                    "the report of finished run {} was missing; written again: {}",
                    done.id,
                    paths.report.display()
                );
            }
            return Err(crate::cmd::CommandError::new(exit::ALREADY_DONE, format!(
                "{}: this file (sha256 {}) was already {done_verb} by run {} of job {:?}, finished {}; refusing to do it twice. Pass --new-run to run the same file again on purpose",
                cfg.input.display(),
                &sha[..12.min(sha.len())],
                done.id,
                cfg.job_name,
                report::ts(done.finished_at, cfg.report.timezone)
            )).into());
        }
    }
    Ok(open_run)
}

/// Validates the file against the bank list and earlier runs, checks the balance, and stores
/// the run. `None` when validation failed (errors already printed).
async fn create_run(
    cfg: &JobConfig,
    engine: &Arc<PayoutEngine>,
    store: &Store,
    sha: &str,
    skip_invalid: bool,
    repay: bool,
) -> anyhow::Result<Option<i64>> {
    let banks = engine.bank_names().await?;
    let no_banks = banks.is_empty();
    let (file, repays) = validate(cfg, store, Some(banks), repay).await?;
    if no_banks
        && file
            .rows
            .iter()
            .any(|r| r.channel == crate::input::payout::Channel::Instapay)
    {
        bail!("pre-flight: the bank list (5.1) is empty, so no InstaPay bank name can be checked; nothing was sent");
    }
    if file.sha256 != sha {
        bail!(
            "{}: the file changed while it was being read; run again",
            cfg.input.display()
        );
    }
    if skip_invalid && file.errors_omitted > 0 {
        report_invalid(cfg, &file);
        bail!("--skip-invalid needs every rejected row in the report, but the file has more errors than are kept ({} more); fix the file", file.errors_omitted);
    }
    if !file.is_valid() && !skip_invalid {
        report_invalid(cfg, &file);
        return Ok(None);
    }
    let mut rows: Vec<NewRow> = file
        .rows
        .iter()
        .map(|r| NewRow {
            line: r.line,
            reference: r.reference.clone(),
            channel: r.channel.as_str(),
            account_no: r.account_no.clone(),
            account_name: r.account_name.clone(),
            middle_name: r.middle_name.clone(),
            last_name: r.last_name.clone(),
            bank: r.bank.clone(),
            amount: r.amount,
            note: r.note.clone(),
            state: RowState::New,
            message: None,
            repay: repays.contains(&r.reference),
            raw: store::RawFields::default(),
        })
        .collect();
    // Rejected lines keep every field they had (raw text where it did not parse) and the
    // reasons, so the report shows them and its total adds up to the file (issue 8, defect 7).
    let reasons = |line: u64| -> String {
        let all: Vec<String> = file
            .errors
            .iter()
            .filter(|x| x.line == line)
            .map(|x| x.to_string())
            .collect();
        format!("invalid input: {}", all.join("; "))
    };
    let mut rejected_lines = HashSet::new();
    for r in &file.rejected {
        if !rejected_lines.insert(r.line) {
            continue;
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        rows.push(NewRow {
            line: r.line,
            reference: r.reference.clone(),
            channel: crate::input::payout::Channel::parse(&r.channel).map_or("", |c| c.as_str()),
            account_no: r.account_no.clone(),
            account_name: r.account_name.clone(),
            middle_name: r.middle_name.clone(),
            last_name: r.last_name.clone(),
            bank: non_empty(&r.bank),
            amount: r.amount.unwrap_or(Centavos::ZERO),
            note: non_empty(&r.note),
            state: RowState::Rejected,
            message: Some(reasons(r.line)),
            repay: false,
            raw: store::RawFields {
                channel: Some(r.channel.clone()),
                amount: r.amount.is_none().then(|| r.amount_text.clone()),
                currency: Some(r.currency.clone()),
            },
        });
    }
    // Never lose a row: an error line without its fields still gets a REJECTED line.
    for e in &file.errors {
        if e.line == 0 || !rejected_lines.insert(e.line) {
            continue;
        }
        rows.push(NewRow {
            line: e.line,
            reference: String::new(),
            channel: "",
            account_no: String::new(),
            account_name: String::new(),
            middle_name: String::new(),
            last_name: String::new(),
            bank: None,
            amount: Centavos::ZERO,
            note: None,
            state: RowState::Rejected,
            message: Some(reasons(e.line)),
            repay: false,
            raw: store::RawFields::default(),
        });
    }
    rows.sort_by_key(|r| r.line);
    if rows.iter().all(|r| r.state != RowState::New) {
        report_invalid(cfg, &file);
        bail!("{}: no valid rows to send", cfg.input.display());
    }
    let balance = engine.balance().await?;
    if file.total > balance {
        bail!(
            "pre-flight: the batch total PHP {} exceeds the available disbursement balance PHP {}; nothing was sent",
            file.total,
            balance
        );
    }
    crate::say!(
        "validated {} rows, total PHP {} (available balance PHP {}); {} rejected",
        file.rows.len(),
        file.total,
        balance,
        rejected_lines.len()
    );
    let (job, input, sha) = (
        cfg.job_name.clone(),
        cfg.input.display().to_string(),
        sha.to_string(),
    );
    let run_id = store
        .call(move |c| store::create_run(c, &job, "payout", &input, &sha, &rows))
        .await?;
    crate::say!("created run {run_id} of job {:?}", cfg.job_name);
    Ok(Some(run_id))
}

/// Reads and validates the input; `banks` adds the 5.1 bank-name check. References already
/// used by earlier runs of this database are errors (README "Paying a reference again"),
/// except, with `repay`, those whose every earlier attempt ended verified FAILED, REVERSED or
/// REJECTED: they are returned as re-payments (checked live before their msgId exists).
async fn validate(
    cfg: &JobConfig,
    store: &Store,
    banks: Option<HashSet<String>>,
    repay: bool,
) -> anyhow::Result<(crate::input::payout::PayoutFile, HashSet<String>)> {
    let input = cfg.input.clone();
    let st = store.clone();
    let (file, repays) = tokio::task::spawn_blocking(move || {
        let repays = std::cell::RefCell::new(HashSet::new());
        let already_paid = |reference: &str| -> Option<String> {
            let r = reference.to_string();
            let uses = match st.call_blocking(move |c| store::reference_uses(c, &r, None)) {
                Ok(uses) => uses,
                // A database error counts as "paid": never risk paying twice.
                Err(e) => return Some(format!("cannot check earlier runs of this reference: {e}")),
            };
            let check = store::ReferenceCheck::of(&uses);
            if repay && matches!(check, store::ReferenceCheck::Repayable(_)) {
                repays.borrow_mut().insert(reference.to_string());
            }
            check.refusal(reference, repay)
        };
        let banks = banks.filter(|b| !b.is_empty());
        let opts = ValidationOptions {
            banks: banks.as_ref(),
            already_paid: Some(&already_paid),
        };
        let file = read_payouts(&input, &opts);
        file.map(|f| (f, repays.take()))
    })
    .await
    .context("validation task failed")??;
    Ok((file, repays))
}

fn report_invalid(cfg: &JobConfig, file: &crate::input::payout::PayoutFile) {
    crate::logging::input_errors(&file.errors, &file.describe_errors());
    crate::say_warn!(
        "{} error(s) in {}; nothing was sent (use --skip-invalid to send the valid rows and report the rest as REJECTED)",
        file.errors.len() + file.errors_omitted,
        cfg.input.display()
    );
}

/// Ctrl-C, SIGTERM or SIGHUP stops taking work: in-flight requests finish and what is left
/// resumes on the next run; a second one quits at once (`crate::signals`). Abort the returned
/// task once the drive is over.
pub(crate) fn stop_on_ctrl_c(
    what_resumes: &'static str,
    stop: impl FnOnce(StopReason) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    // Registered before the drive starts (not inside the task), so no signal is missed.
    let signals = crate::signals::StopSignals::listen();
    tokio::spawn(async move {
        let Ok(mut signals) = signals else {
            tracing::warn!(
                "cannot listen for stop signals; Ctrl-C and SIGTERM end the run at once"
            );
            return;
        };
        let name = signals.recv().await;
        crate::say_warn!("interrupted ({name}): finishing in-flight requests; {what_resumes} (Ctrl-C or SIGTERM again to quit now)");
        stop(StopReason::Interrupted);
        signals.recv().await;
        // Safe: every msgId is stored before its send; rows caught in flight are resolved by
        // query on the next run.
        crate::say_warn!("quitting now; rows in flight are resolved by query on the next run");
        std::process::exit(exit::UNRESOLVED);
    })
}

/// Drives the run with progress output and Ctrl-C handling, then writes the report.
async fn drive_and_report(
    cfg: &JobConfig,
    engine: &Arc<PayoutEngine>,
    run_id: i64,
) -> anyhow::Result<i32> {
    let store = engine.store().clone();
    let open = store
        .call(move |c| store::rows_of_run(c, run_id, true))
        .await?
        .len() as u64;
    let progress = spawn_progress(Arc::clone(engine), open);
    let ctrl_c = {
        let engine = Arc::clone(engine);
        stop_on_ctrl_c("unresolved rows resume on the next run", move |r| {
            engine.stop(r)
        })
    };
    let result = engine.drive(run_id).await;
    ctrl_c.abort();
    progress.abort();
    // Whatever happened, every row goes into the report.
    let result = result?;
    let rows = store
        .call(move |c| store::rows_of_run(c, run_id, false))
        .await?;
    let all_final = rows.iter().all(|r| r.state.is_terminal());
    let stopped_code = match (&result.stopped, &result.error) {
        // Ctrl-C leaves rows to resume (3); a stop code means the job could not run (1).
        (Some(reason), _) if reason.is_interrupted() => Some(exit::UNRESOLVED),
        (Some(_), _) | (None, Some(_)) => Some(exit::COULD_NOT_RUN),
        (None, None) => None,
    };
    let end = RunEnd {
        finishing: all_final,
        exit_code: stopped_code,
    };
    // Report first (temporary files renamed into place), then finish the run: a crash or a
    // failed write in between leaves the run open, and the next `run` writes the report again.
    let (paths, summary) = report_cmd::payout(cfg, &store, run_id, end).await?;
    if all_final {
        store.call(move |c| store::finish_run(c, run_id)).await?;
    }
    report_cmd::print(run_id, &summary.to_text(), &paths);
    if let Some(reason) = result.stopped {
        crate::say_warn!("run {run_id} stopped: {reason}");
        return Ok(stopped_code.unwrap_or(exit::COULD_NOT_RUN));
    }
    if let Some(error) = result.error {
        crate::say_warn!(
            "run {run_id}: some rows could not be driven and stay unresolved: {error}"
        );
        return Ok(exit::COULD_NOT_RUN);
    }
    Ok(summary.exit_code())
}

fn spawn_progress(engine: Arc<PayoutEngine>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} rows resolved  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            loop {
                bar.set_position(engine.rows_done());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            let start = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = engine.rows_done();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                tracing::info!(done, total, rows_per_sec = format!("{rate:.1}"), "progress");
            }
        }
    })
}

pub fn retry(args: RetryArgs) -> anyhow::Result<i32> {
    let cfg = load(&args.job, None)?;
    let _lock = lock(&cfg)?;
    runtime()?.block_on(async move {
        let store = Store::open(&cfg.database)?;
        let run_id = args.run;
        let Some(run) = store.call(move |c| store::run_by_id(c, run_id)).await? else {
            bail!("run {run_id} does not exist in {}", cfg.database.display());
        };
        if run.job != cfg.job_name {
            bail!("run {run_id} belongs to job {:?}, not {:?}", run.job, cfg.job_name);
        }
        let ready = connect(&cfg, store.clone()).await?;
        let engine = Arc::clone(&ready.engine);
        let rows = store.call(move |c| store::rows_of_run(c, run_id, false)).await?;
        // §9.2: a beneficiary-data failure (AC*, BE01, RC01) fails again unless the data is
        // fixed; re-sending it needs an explicit flag.
        let (retryable, skipped): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .filter(|r| r.state == RowState::Failed)
            .partition(|r| {
                args.include_beneficiary_errors
                    || !r.error_code.as_deref().is_some_and(|c| {
                        reason_class(c) == ReasonClass::BeneficiaryData
                    })
            });
        for r in &skipped {
            crate::say_warn!(
                "line {}: FAILED with {} ({}): not re-sent; fix the beneficiary data and pay it in a new file, or pass --include-beneficiary-errors",
                r.line,
                r.error_code.as_deref().unwrap_or(""),
                r.error_message.as_deref().unwrap_or("")
            );
        }
        let total = retryable
            .iter()
            .try_fold(Centavos::ZERO, |acc, r| acc.checked_add(r.amount))
            .context("retry total overflows")?;
        if total.is_positive() {
            let balance = engine.balance().await?;
            if total > balance {
                bail!("pre-flight: the retry total PHP {total} exceeds the available balance PHP {balance}; nothing was sent");
            }
        }
        // Reopen before allocating: a crash in between leaves an open run that resumes.
        let why = format!("retry of {} FAILED row(s)", retryable.len());
        store.call(move |c| store::reopen_run(c, run_id, &why)).await?;
        let mut resent = 0;
        for mut row in retryable {
            let (reference, row_id) = (row.reference.clone(), row.id);
            let uses = store
                .call(move |c| store::reference_uses(c, &reference, Some(row_id)))
                .await?;
            let check = store::ReferenceCheck::of(&uses);
            if let Some(reason) = check.refusal(&row.reference, true) {
                crate::say_warn!("line {}: not re-sent: {reason}", row.line);
                continue;
            }
            match engine.allocate(&mut row).await {
                Ok(Allocated::Yes) => resent += 1,
                Ok(Allocated::Refused) | Ok(Allocated::TryLater) => crate::say_warn!(
                    "line {}: not re-sent: {}",
                    row.line,
                    row.message.as_deref().unwrap_or("")
                ),
                // The row stays FAILED (nothing was sent for it); the report still comes.
                Err(e) => crate::say_warn!("line {}: not re-sent: {e}", row.line),
            }
        }
        crate::say!("retry of run {run_id}: {resent} FAILED row(s) get a new msgId; pending and unknown rows are queried");
        drive_and_report(&cfg, &engine, run_id).await
    })
}

/// The job's store for a read-only command: an error (not a new empty database) when the job
/// has never run.
pub(crate) fn open_existing_store(cfg: &JobConfig) -> anyhow::Result<Store> {
    if !cfg.database.exists() {
        bail!(
            "database {} does not exist yet: job {:?} has never run",
            cfg.database.display(),
            cfg.job_name
        );
    }
    Ok(Store::open(&cfg.database)?)
}

pub fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let cfg = load_any(&args.job, None)?;
    let store = open_existing_store(&cfg)?;
    let job = cfg.job_name.clone();
    let runs = store.call_blocking(move |c| store::runs_for(c, &job, None))?;
    let mut shown = 0;
    for run in runs.iter().filter(|r| args.run.is_none_or(|id| id == r.id)) {
        let id = run.id;
        println!(
            "run {} ({}, {}) input {} sha256 {}…",
            run.id,
            run.kind,
            if run.finished { "finished" } else { "open" },
            run.input_path,
            &run.input_sha256[..12.min(run.input_sha256.len())]
        );
        if run.kind == "payout" {
            let rows = store.call_blocking(move |c| store::rows_of_run(c, id, false))?;
            print!("{}", Summary::from_rows(&rows).to_text());
        } else {
            let (counts, (start, end)) = store.call_blocking(move |c| {
                Ok((
                    store::recon::recon_summary(c, id)?,
                    store::recon::balances(c, id)?,
                ))
            })?;
            print!(
                "{}",
                ReconSummary::from_counts(counts, start, end).to_text()
            );
        }
        shown += 1;
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
}
