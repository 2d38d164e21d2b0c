//! One file per command (`run`, `retry`, `status`, `reconcile`, `report`, `keys`, `sim`); each
//! takes its parsed arguments and returns an exit code. Job commands share one `JobContext`
//! (`context.rs`) and one `drive_and_report` (`drive.rs`); the rules they apply live in
//! `engine`, the exit codes in `crate::exit`.

pub mod context;
pub mod drive;
pub mod keys;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod run;
pub mod runs;
pub mod show;
pub mod sim;
pub mod status;

pub use crate::exit;

use crate::cli::{Cli, Command};

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
    }
}
