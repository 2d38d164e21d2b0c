//! One file per command (`run`, `retry`, `status`, `reconcile`, `report`, `keys`, `sim`); each
//! takes its parsed arguments and returns an exit code. Job commands share one `JobContext`
//! (`context.rs`) and one `drive_and_report` (`drive.rs`); the rules they apply live in
//! `engine`, the exit codes in `crate::exit`.

pub mod approve;
pub mod context;
pub mod drive;
pub mod dry_run;
pub mod keys;
pub mod migrate_store;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod run;
pub mod runs;
pub mod serve;
pub mod show;
pub mod sim;
pub mod stage;
pub mod status;

pub use crate::exit;

use crate::cli::{Cli, Command};

/// An error that ends a command with a specific exit code (not 1) and one clear message.
/// `main` finds it anywhere in an `anyhow` chain ([`exit_code_of`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub code: i32,
    pub message: String,
}

impl CommandError {
    pub fn new(code: i32, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            message: message.into(),
        }
    }
}

/// The exit code for an error that ended a command: the code of a [`CommandError`] or of a
/// start-up connection failure anywhere in the chain, otherwise [`exit::COULD_NOT_RUN`].
pub fn exit_code_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CommandError>() {
            return c.code;
        }
        if let Some(crate::engine::startup::StartupError::Unreachable { .. }) =
            cause.downcast_ref::<crate::engine::startup::StartupError>()
        {
            return exit::TEMPFAIL;
        }
    }
    exit::COULD_NOT_RUN
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    set_outputs(&cli)?;
    match cli.command {
        Command::Keys(k) => keys::run(k),
        Command::Run(a) => run::run(a),
        Command::Retry(a) => retry::run(a),
        Command::Report(a) => report::run(a),
        Command::Status(a) => status::run(a),
        Command::Reconcile(a) => reconcile::run(a),
        Command::Sim(a) => sim::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Runs(a) => runs::run(a),
        Command::MigrateStore(a) => migrate_store::run(a),
        Command::Show(a) => show::run(a),
        Command::Stage(a) => stage::run(a),
        Command::Approve(a) => approve::run(a),
    }
}

/// The outputs of a command that drives a run (`ops`): `--output`, `--metrics-file`. `--output
/// json` is for `run`, `retry` and `reconcile` only, and not with `--dry-run` (which drives no
/// run and prints no result).
fn set_outputs(cli: &Cli) -> anyhow::Result<()> {
    use crate::cli::OutputFormat;
    let (command, metrics, dry_run) = match &cli.command {
        Command::Run(a) => ("run", Some(&a.metrics), a.dry_run),
        Command::Retry(a) => ("retry", Some(&a.metrics), false),
        Command::Reconcile(a) => ("reconcile", Some(&a.metrics), false),
        _ => ("", None, false),
    };
    if cli.output == OutputFormat::Json && (metrics.is_none() || dry_run) {
        return Err(CommandError::new(
            exit::USAGE,
            "--output json applies to run, retry and reconcile (not with --dry-run): they print the run's result",
        )
        .into());
    }
    crate::ops::set_outputs(crate::ops::Outputs {
        format: cli.output,
        metrics_file: metrics.and_then(|m| m.metrics_file.clone()),
        metrics_interval: std::time::Duration::from_secs(
            metrics.map_or(15, |m| m.metrics_interval_secs),
        ),
        command: if command.is_empty() { "run" } else { command },
        started_ms: crate::store::now_ms(),
    });
    Ok(())
}
