//! Binary entry: parse the CLI, set up logging, run the command, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = starpay_batch::cli::Cli::parse();
    starpay_batch::logging::init(cli.log_format, cli.verbose);
    let code = match starpay_batch::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            starpay_batch::logging::fatal(&e);
            starpay_batch::cmd::exit::COULD_NOT_RUN
        }
    };
    std::process::exit(code);
}
