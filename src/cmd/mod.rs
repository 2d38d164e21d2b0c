//! One module per command. Each takes its parsed arguments and returns an exit code.

pub mod keys;
pub mod recon;
pub mod report;
pub mod run;
pub mod sim;

use crate::cli::{Cli, Command};

/// Exit codes (STYLE.md convention 8).
pub mod exit {
    pub const OK: i32 = 0;
    pub const COULD_NOT_RUN: i32 = 1;
    pub const FINISHED_WITH_FAILURES: i32 = 2;
    pub const UNRESOLVED: i32 = 3;
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
