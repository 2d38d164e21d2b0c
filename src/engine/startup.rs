//! The start-up connection check (reference 2.1), retried: one network blip at 02:00 must not
//! fail the night (issue 10, defect 6).
//!
//! A refused connection, a timeout, a dropped connection, an HTTP 5xx or an answer whose code
//! is not success is retried with exponential backoff (0.5 s, 1 s, 2 s, … at most
//! [`MAX_BACKOFF`]) until `budget` has passed since the first try; then the check fails with
//! [`StartupError::Unreachable`], which the CLI maps to exit 75 (`EX_TEMPFAIL`: the scheduler
//! tries again later). Anything else (an HTTP 4xx, an answer that is not JSON: a wrong URL, a
//! proxy page) fails at once with [`StartupError::Refused`] (exit 1): waiting will not fix it.
//! Nothing is signed or sent but the unsigned GET, so retrying it can never pay anything.

use std::time::{Duration, Instant};

use crate::starpay::client::{root_cause, Client, ClientError};
use crate::starpay::model::HealthResponse;

/// First wait between tries; doubled after every failed try.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Still unreachable (or unhealthy) when the retry budget ran out: try again later.
    #[error("Starpay at {url} is unreachable: the connection check (2.1) failed {attempts} time(s) over {secs:.1} s; last: {last}")]
    Unreachable {
        url: String,
        attempts: u32,
        secs: f64,
        last: String,
    },
    /// An answer that waiting will not change (HTTP 4xx, not JSON): the configuration is wrong.
    #[error("connection check (2.1) to {url} failed: {last}")]
    Refused { url: String, last: String },
}

/// What one failed try means.
enum Verdict {
    Retry(String),
    GiveUp(String),
}

fn verdict(e: &ClientError) -> Verdict {
    match e {
        // The URL is already in the message; say only why.
        ClientError::Connect { error, .. } => Verdict::Retry(root_cause(error)),
        ClientError::Timeout(_) | ClientError::Transport(_) => Verdict::Retry(e.to_string()),
        ClientError::NotEnvelope { status, .. } if *status >= 500 => Verdict::Retry(e.to_string()),
        _ => Verdict::GiveUp(e.to_string()),
    }
}

/// Runs the 2.1 check until it answers success, retrying temporary failures for at most
/// `budget` (zero: one try). Logs every failed try at WARN with the wait before the next.
pub async fn check_connection(
    client: &Client,
    budget: Duration,
) -> Result<HealthResponse, StartupError> {
    let url = client.base_url().to_string();
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match client.check_connection().await {
            Ok(h) if h.code.is_success() => return Ok(h),
            Ok(h) => format!("answered code {} {}", h.code, h.message),
            Err(e) => match verdict(&e) {
                Verdict::Retry(why) => why,
                Verdict::GiveUp(why) => return Err(StartupError::Refused { url, last: why }),
            },
        };
        let elapsed = start.elapsed();
        let Some(remaining) = budget.checked_sub(elapsed).filter(|r| !r.is_zero()) else {
            return Err(StartupError::Unreachable {
                url,
                attempts,
                secs: elapsed.as_secs_f64(),
                last,
            });
        };
        let wait = backoff.min(remaining);
        tracing::warn!(
            attempt = attempts,
            retry_in_ms = wait.as_millis() as u64,
            budget_left_secs = remaining.as_secs(),
            "connection check (2.1) failed, retrying: {last}"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
