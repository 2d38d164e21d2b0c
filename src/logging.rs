//! Logging set-up: tracing to stderr, human-readable or JSON lines. Called once from `main`.

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
    if is_json() {
        tracing::error!(error = %format!("{e:#}"), "the command failed");
    } else {
        eprintln!("error: {e:#}");
    }
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

pub fn init(format: LogFormat, verbose: u8) {
    JSON.store(matches!(format, LogFormat::Json), Ordering::Relaxed);
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
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
