//! One module per command. Each takes its parsed arguments and returns an exit code.

pub mod keys;
pub mod recon;
pub mod report;
pub mod run;
pub mod sim;

use crate::cli::{Cli, Command};

/// Exit codes (STYLE.md convention 8), one per meaning. `--help`, the README ("Running it every
/// night") and `samples/systemd/` list the same table; `EXIT_CODES_HELP` is its text.
pub mod exit {
    /// Every row ended SUCCESS (or the command did what it was asked).
    pub const OK: i32 = 0;
    /// The job could not run: config, input, keys, balance, a stop code from Starpay. A human
    /// must fix something; retrying unchanged fails again.
    pub const COULD_NOT_RUN: i32 = 1;
    /// Finished; some rows ended FAILED, REVERSED or REJECTED (see the report).
    pub const FINISHED_WITH_FAILURES: i32 = 2;
    /// Rows still PENDING, UNKNOWN, NOT_SENT or NEEDS_ATTENTION, or the run was interrupted
    /// (Ctrl-C, SIGTERM, SIGHUP): run the job again later, it resumes.
    pub const UNRESOLVED: i32 = 3;
    /// Nothing to do: this input file was already completed by a finished run (pass
    /// `--new-run` to run it again on purpose). Not an error for a scheduler that fired twice.
    pub const ALREADY_DONE: i32 = 4;
    /// Usage error: unknown flag, missing argument (sysexits.h `EX_USAGE`).
    pub const USAGE: i32 = 64;
    /// Temporary failure, try again later: the job's lock is held by another process, or
    /// Starpay stayed unreachable through the start-up retries (sysexits.h `EX_TEMPFAIL`).
    pub const TEMPFAIL: i32 = 75;

    /// The exit-code table as shown at the end of `--help`.
    pub const EXIT_CODES_HELP: &str = "Exit codes:
  0   OK: every row SUCCESS
  1   could not run (config, input, keys, balance, a stop code from Starpay): fix, then run again
  2   finished with FAILED, REVERSED or REJECTED rows: see the report
  3   unresolved rows (PENDING, UNKNOWN, NOT_SENT, NEEDS_ATTENTION) or interrupted: run again later
  4   nothing to do: this input file was already completed (--new-run to run it again)
  64  usage error (unknown flag, missing argument)
  75  temporary failure (job locked by another process, Starpay unreachable): retry later";
}

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
        Command::Retry(a) => run::retry(a),
        Command::Report(a) => report::run(a),
        Command::Status(a) => run::status(a),
        Command::Reconcile(a) => recon::reconcile(a),
        Command::Sim(a) => sim::run(a),
    }
}
