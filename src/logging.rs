//! Logging set-up: tracing to stderr, human-readable or JSON lines. Called once from `main`.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, verbose: u8) {
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
