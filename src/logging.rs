//! Logging set-up: tracing to stderr, human-readable or JSON lines. Called once from `main`.
//!
//! - Colour only when stderr is a terminal and `NO_COLOR` is unset or empty (no escape bytes in
//!   a redirected log).
//! - In JSON mode every stderr line is one JSON object: log events, operator messages (`say!`),
//!   input errors (file, line, column, rule as fields), the error that ends a command, and
//!   usage errors from clap.
//! - Dependencies (hyper, reqwest, rustls, h2…) log at warn whatever `-v` says; `RUST_LOG`
//!   overrides everything.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Set once by `init`: stderr carries JSON lines only.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether stderr is in JSON mode (`--log-format json`).
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A message for the operator on stderr: the plain line, or (JSON mode) one JSON log line at
/// INFO, so that every stderr line parses in JSON mode. Use through `say!`.
pub fn note(msg: std::fmt::Arguments<'_>) {
    if is_json() {
        tracing::info!("{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// Same as `note`, at WARN (a run stopped, a row not re-sent…). Use through `say_warn!`.
pub fn warn_note(msg: std::fmt::Arguments<'_>) {
    if is_json() {
        tracing::warn!("{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// The error that ends a command (from `main`): `error: …` or one JSON line at ERROR.
pub fn fatal(e: &anyhow::Error) {
    let msg = error_chain(e);
    if is_json() {
        tracing::error!(error = %msg, "the command failed");
    } else {
        eprintln!("error: {msg}");
    }
}

/// An error and its causes on one line, outermost first, `: ` between them; a cause whose
/// text the line already holds is left out (a library error that repeats its source's text
/// would otherwise print it twice).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether the raw arguments ask for `--log-format json` (read before clap parses them, so a
/// usage error can be reported in the requested format).
fn json_requested(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    args.iter().enumerate().any(|(i, a)| {
        a == "--log-format=json"
            || (a == "--log-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// Reports a clap error and returns the exit code: `--help` and `--version` print to stdout
/// and give 0; anything else is a usage error, 64 (`exit::USAGE`). In JSON mode the error
/// is one JSON object (message, `error`, `usage` as fields).
pub fn usage_error(e: &clap::Error, args: &[std::ffi::OsString]) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return crate::exit::OK;
    }
    if json_requested(args) {
        init(LogFormat::Json, 0);
        let text = e.render().to_string();
        // Every line before "Usage:" (the error, the missing arguments, a tip) as one line.
        let error = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Usage: "))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let error = error.strip_prefix("error: ").unwrap_or(&error);
        let usage = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Usage: "))
            .unwrap_or("");
        tracing::error!(error, usage, "usage error; see --help");
    } else {
        let _ = e.print();
    }
    crate::exit::USAGE
}

/// Input errors: the plain list, or one JSON line per error with file, line, column and rule
/// as fields.
pub fn input_errors(errors: &[crate::input::InputError], plain: &str) {
    if is_json() {
        for e in errors {
            tracing::error!(
                file = %e.file.display(),
                line = e.line,
                column = e.column.as_deref().unwrap_or(""),
                rule = %e.rule,
                "invalid input"
            );
        }
    } else {
        eprintln!("{plain}");
    }
}

/// `say!("…", args)`: an operator message on stderr that respects `--log-format json`.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::logging::note(format_args!($($t)*)) };
}

/// `say_warn!("…", args)`: same, at WARN in JSON mode.
#[macro_export]
macro_rules! say_warn {
    ($($t:tt)*) => { $crate::logging::warn_note(format_args!($($t)*)) };
}

/// The filter without `RUST_LOG`: our crate at the level `-v` asks, every dependency at warn.
pub fn default_filter(verbose: u8) -> String {
    let ours = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    format!("warn,starpay_batch={ours}")
}

/// Colour on stderr: only on a terminal, and not when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn init(format: LogFormat, verbose: u8) {
    let json = matches!(format, LogFormat::Json);
    JSON.store(json, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!json && use_colour())
        // JSON lines name their module (`target`), so a reader can filter by crate.
        .with_target(json);
    // A second init (tests) is harmless: ignore the error.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Masks all but the last 4 characters of an account number for logs and reports.
pub fn mask_account(acct: &str) -> String {
    let n = acct.chars().count();
    if n <= 4 {
        return "*".repeat(n);
    }
    let tail: String = acct.chars().skip(n - 4).collect();
    format!("{}{}", "*".repeat(n - 4), tail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_account_numbers() {
        assert_eq!(super::mask_account("09171234567"), "*******4567");
        assert_eq!(super::mask_account("1234"), "****");
        assert_eq!(super::mask_account(""), "");
    }
}
