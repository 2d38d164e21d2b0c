//! One file per command (`run`, `retry`, `status`, `reconcile`, `report`, `keys`, `sim`); each
//! takes its parsed arguments and returns an exit code. Job commands share one `JobContext`
//! (`context.rs`) and one `drive_and_report` (`drive.rs`); the rules they apply live in
//! `engine`, the exit codes in `crate::exit`.

pub mod approve;
pub mod context;
pub mod drive;
pub mod dry_run;
pub mod keys;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod run;
pub mod runs;
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
    match cli.command {
        Command::Keys(k) => keys::run(k),
        Command::Run(a) => run::run(a),
        Command::Retry(a) => retry::run(a),
        Command::Report(a) => report::run(a),
        Command::Status(a) => status::run(a),
        Command::Reconcile(a) => reconcile::run(a),
        Command::Sim(a) => sim::run(a),
        Command::Runs(a) => runs::run(a),
        Command::Show(a) => show::run(a),
        Command::Stage(a) => stage::run(a),
        Command::Approve(a) => approve::run(a),
    }
}
