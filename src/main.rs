//! Binary entry: parse the CLI, set up logging, run the command, map errors to exit codes
//! (`cmd::exit`: usage errors 64, a `cmd::CommandError`'s own code, otherwise 1).

use clap::Parser;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match starpay_batch::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => std::process::exit(starpay_batch::logging::usage_error(&e, &args)),
    };
    starpay_batch::logging::init(cli.log_format, cli.verbose);
    let code = match starpay_batch::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            starpay_batch::logging::fatal(&e);
            starpay_batch::cmd::exit_code_of(&e)
        }
    };
    std::process::exit(code);
}
