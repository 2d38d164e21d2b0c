//! Counts of the requests one client made, by operation (reference section) and answer code,
//! for the metrics file (`ops::metrics`). The client records every signed request it sends in
//! one place (`Client::send`); nothing else writes here.
//!
//! Bounded: keys are (section, code); sections are the fixed route table and codes the
//! provider's catalogue plus four of ours ([`NOT_SENT`], [`NO_ANSWER`], [`UNVERIFIED`],
//! [`BAD_PAYLOAD`]). A provider that invented a new code per answer is capped at
//! [`MAX_KEYS`] distinct keys; further new ones count under [`OTHER`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::starpay::client::{ClientError, Outcome};

/// The request never left (connection refused, signing failed).
pub const NOT_SENT: &str = "not_sent";
/// The request left and no Starpay envelope came back (timeout, reset, HTML page).
pub const NO_ANSWER: &str = "no_answer";
/// An answer whose signature did not verify.
pub const UNVERIFIED: &str = "unverified";
/// A verified answer that did not match its section's layout.
pub const BAD_PAYLOAD: &str = "bad_payload";
/// New codes past [`MAX_KEYS`].
pub const OTHER: &str = "other";
pub const MAX_KEYS: usize = 256;

/// What kind of request a section is, for the `class` label.
pub fn class_of(section: &str) -> &'static str {
    match section {
        "5.2" | "5.3" | "5.8" | "5.9" | "6.1" => "send",
        "5.4" | "6.2" | "6.8" => "query",
        _ => "other",
    }
}

/// Shared by every clone of one client (and read by the metrics writer).
#[derive(Debug, Default)]
pub struct RequestStats {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl RequestStats {
    /// Records one request of `section` that ended with this answer code or error.
    pub fn record(&self, section: &'static str, result: Result<&str, &ClientError>) {
        let code = match result {
            Ok(code) => code,
            Err(ClientError::Unverified { .. }) => UNVERIFIED,
            Err(ClientError::BadPayload { .. }) => BAD_PAYLOAD,
            Err(e) if e.outcome() == Outcome::NotSent => NOT_SENT,
            Err(_) => NO_ANSWER,
        };
        // A poisoned lock only means another thread panicked mid-increment: keep counting.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let key = if counts.len() >= MAX_KEYS && !counts.contains_key(&(section, code.to_string()))
        {
            (section, OTHER.to_string())
        } else {
            (section, code.to_string())
        };
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Every (section, code, count), sorted.
    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .map(|((s, c), n)| (*s, c.clone(), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_section_and_code() {
        let s = RequestStats::default();
        s.record("5.2", Ok("200"));
        s.record("5.2", Ok("200"));
        s.record("5.4", Ok("404"));
        s.record(
            "5.4",
            Err(&ClientError::Timeout(std::time::Duration::from_secs(1))),
        );
        s.record("5.2", Err(&ClientError::Config("x".into())));
        assert_eq!(
            s.snapshot(),
            vec![
                ("5.2", "200".to_string(), 2),
                ("5.2", NOT_SENT.to_string(), 1),
                ("5.4", "404".to_string(), 1),
                ("5.4", NO_ANSWER.to_string(), 1),
            ]
        );
        assert_eq!(class_of("5.2"), "send");
        assert_eq!(class_of("5.4"), "query");
        assert_eq!(class_of("5.6"), "other");
    }

    #[test]
    fn distinct_keys_are_capped() {
        let s = RequestStats::default();
        for i in 0..(MAX_KEYS + 10) {
            s.record("5.2", Ok(&format!("C{i}")));
        }
        let snap = s.snapshot();
        assert_eq!(snap.len(), MAX_KEYS + 1);
        assert!(snap.iter().any(|(_, c, n)| c == OTHER && *n == 10));
    }
}
