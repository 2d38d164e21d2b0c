//! Seeded fault injection (reference §11 "Seeded fault injection") and the per-merchant token
//! bucket behind `406`.
//!
//! Owns: every random decision the simulator makes. Determinism rule: a decision is a pure
//! function of `(seed, fault name, key)`, where the key is `mchId/msgId#n` (the n-th request
//! carrying that msgId, counted from 0) or, for requests without a readable msgId,
//! `seq#<arrival sequence>`; notification decisions use `originalMsgId/trxState`. Each decision
//! seeds its own `ChaCha8Rng` from an FNV-1a hash of those parts, so the same seed and the same
//! requests give the same outcomes whatever the timing or interleaving. The token bucket is the
//! one timing-dependent rule (it models a rate, which is about time).
//!
//! Must not: touch the ledger or the network.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Every fault is off by default. Probabilities are per request (or per notification) in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fixed latency added before every API answer, in real milliseconds.
    pub latency_ms: u64,
    /// Log-normal latency: median in real milliseconds (0 = off) and sigma of the underlying normal.
    pub latency_lognormal_median_ms: u64,
    pub latency_lognormal_sigma: f64,
    /// Connection reset before processing (nothing happens).
    pub reset_before: f64,
    /// HTTP 502 with an HTML body, before processing (nothing happens).
    pub http_502: f64,
    /// Random `406` (a burst of "too frequent"), before the msgId check.
    pub rate_406: f64,
    /// Create requests: the order is committed, then the connection is closed with no answer.
    pub commit_then_drop: f64,
    /// The request is processed, then the answer is held for `hang_secs` real seconds (past the
    /// client's timeout) before being sent.
    pub hang: f64,
    pub hang_secs: u64,
    /// The answer's signature is corrupted (one Base64 character changed).
    pub bad_signature: f64,
    /// The answer has no `signature` member.
    pub unsigned: f64,
    /// `response` is sent as a JSON string holding the object.
    pub response_as_string: f64,
    /// The answer is validly signed but echoes a different `msgId` (and `originalMsgId` on a
    /// query answer) than the request carried: an answer about another payout.
    pub echo_wrong_msg_id: f64,
    /// The answer is validly signed but echoes a `trxAmount` one centavo above the real one.
    pub echo_wrong_amount: f64,
    /// Which requests the per-request faults (`reset_before`, `http_502`, `rate_406`,
    /// `commit_then_drop`, `hang`, `bad_signature`, `unsigned`, `response_as_string`,
    /// `echo_wrong_msg_id`, `echo_wrong_amount`) may hit: every request (default), payout
    /// sends and queries only, or payout sends only, so a runner's pre-flight (5.1, 5.6) or its
    /// queries still get through.
    pub faults_on: FaultScope,
    /// A committed payout answers `404` to queries for `query_lag_secs` simulated seconds.
    pub query_lag: f64,
    pub query_lag_secs: u64,
    /// A payout that would succeed fails instead, with a random beneficiary/rail reason.
    pub payout_fail: f64,
    /// A payout that succeeds is `REVERSED` after `reversal_delay` (late reversal).
    pub late_reversal: f64,
    /// Notifications: delivered twice.
    pub notify_duplicate: f64,
    /// Notifications: held back `notify_delay_secs` simulated seconds.
    pub notify_delay: f64,
    pub notify_delay_secs: u64,
    /// Notifications: held until the next notification has been sent (so they arrive swapped).
    pub notify_reorder: f64,
    /// Notifications: never sent.
    pub notify_lost: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_ms: 0,
            latency_lognormal_median_ms: 0,
            latency_lognormal_sigma: 0.5,
            reset_before: 0.0,
            http_502: 0.0,
            rate_406: 0.0,
            commit_then_drop: 0.0,
            hang: 0.0,
            hang_secs: 30,
            bad_signature: 0.0,
            unsigned: 0.0,
            response_as_string: 0.0,
            echo_wrong_msg_id: 0.0,
            echo_wrong_amount: 0.0,
            faults_on: FaultScope::All,
            query_lag: 0.0,
            query_lag_secs: 10,
            payout_fail: 0.0,
            late_reversal: 0.0,
            notify_duplicate: 0.0,
            notify_delay: 0.0,
            notify_delay_secs: 30,
            notify_reorder: 0.0,
            notify_lost: 0.0,
        }
    }
}

/// The requests the per-request faults apply to (`faults_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultScope {
    /// Every request.
    #[default]
    All,
    /// Payout sends (5.2, 5.3, 5.8, 5.9) and payout queries (5.4).
    Payouts,
    /// Payout sends only (5.2, 5.3, 5.8, 5.9).
    Sends,
}

impl FaultScope {
    /// Whether a request for the operation `section` (reference numbering; `None` when the
    /// (path, service) pair is unknown) is in scope.
    pub fn covers(self, section: Option<&str>) -> bool {
        let send = matches!(section, Some("5.2" | "5.3" | "5.8" | "5.9"));
        match self {
            FaultScope::All => true,
            FaultScope::Payouts => send || section == Some("5.4"),
            FaultScope::Sends => send,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultConfigError {
    #[error("fault setting {0:?} is not KEY=VALUE")]
    Syntax(String),
    #[error("fault setting {setting:?}: {source}")]
    Invalid {
        setting: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("fault probability {name} = {value} is outside 0..=1")]
    Probability { name: &'static str, value: f64 },
}

impl FaultConfig {
    /// Applies one `KEY=VALUE` setting (the `--fault` flag), with the same names as the config
    /// file's `[faults]` table; unknown keys are errors.
    pub fn set(&mut self, setting: &str) -> Result<(), FaultConfigError> {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| FaultConfigError::Syntax(setting.to_string()))?;
        let current =
            toml::to_string(self).map_err(|_| FaultConfigError::Syntax(setting.into()))?;
        let mut table: toml::Table =
            toml::from_str(&current).map_err(|source| FaultConfigError::Invalid {
                setting: setting.to_string(),
                source,
            })?;
        let word = value.trim();
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {word}")) {
            Ok(mut t) => t
                .remove("v")
                .ok_or_else(|| FaultConfigError::Syntax(setting.to_string()))?,
            // A bare word is a string (`answer_faults_on=payouts`).
            Err(_)
                if !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
            {
                toml::Value::String(word.to_string())
            }
            Err(source) => {
                return Err(FaultConfigError::Invalid {
                    setting: setting.to_string(),
                    source,
                })
            }
        };
        // Integers are fine where floats are expected (`hang=1`).
        let value = match (table.get(key.trim()), value) {
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (_, v) => v,
        };
        table.insert(key.trim().to_string(), value);
        let next: FaultConfig = table
            .try_into()
            .map_err(|source| FaultConfigError::Invalid {
                setting: setting.to_string(),
                source,
            })?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), FaultConfigError> {
        let probabilities = [
            ("reset_before", self.reset_before),
            ("http_502", self.http_502),
            ("rate_406", self.rate_406),
            ("commit_then_drop", self.commit_then_drop),
            ("hang", self.hang),
            ("bad_signature", self.bad_signature),
            ("unsigned", self.unsigned),
            ("response_as_string", self.response_as_string),
            ("echo_wrong_msg_id", self.echo_wrong_msg_id),
            ("echo_wrong_amount", self.echo_wrong_amount),
            ("query_lag", self.query_lag),
            ("payout_fail", self.payout_fail),
            ("late_reversal", self.late_reversal),
            ("notify_duplicate", self.notify_duplicate),
            ("notify_delay", self.notify_delay),
            ("notify_reorder", self.notify_reorder),
            ("notify_lost", self.notify_lost),
        ];
        for (name, value) in probabilities {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultConfigError::Probability { name, value });
            }
        }
        Ok(())
    }
}

/// FNV-1a over the parts, separated, so ("ab","c") and ("a","bc") differ.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The random stream for one decision.
pub fn rng_for(seed: u64, fault: &str, key: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(fnv1a(&[
        &seed.to_le_bytes(),
        fault.as_bytes(),
        key.as_bytes(),
    ]))
}

/// Whether a fault of probability `p` fires for this key.
pub fn roll(seed: u64, fault: &str, key: &str, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    rng_for(seed, fault, key).random::<f64>() < p
}

/// A uniform value in `0..n` for this key.
pub fn pick(seed: u64, fault: &str, key: &str, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    rng_for(seed, fault, key).random_range(0..n)
}

/// Latency to add before answering, in real milliseconds: fixed plus log-normal.
pub fn latency_ms(seed: u64, faults: &FaultConfig, key: &str) -> u64 {
    let mut total = faults.latency_ms;
    if faults.latency_lognormal_median_ms > 0 {
        let mut rng = rng_for(seed, "latency", key);
        // Box–Muller: a standard normal from two uniforms in (0, 1].
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let median = faults.latency_lognormal_median_ms as f64;
        let ms = median * (faults.latency_lognormal_sigma * z).exp();
        // Bounded: a pathological draw never holds a connection for more than a minute.
        total = total.saturating_add(ms.clamp(0.0, 60_000.0) as u64);
    }
    total
}

/// Rail reasons used by the `payout_fail` fault (reference §9.2, beneficiary and other classes).
pub const RANDOM_FAIL_CODES: &[&str] = &[
    "AC01", "AC03", "AC04", "AC06", "AM02", "BE01", "RC01", "AG01", "MS03",
];

/// Token bucket: `rate` tokens per second, at most `burst`. Real time (a rate is about time).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token; `false` means "too frequent" (406). `rate <= 0` disables the limit.
    pub fn try_take(&mut self, rate: f64, burst: u32, now: Instant) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rolls_are_pure_functions_of_seed_and_key() {
        let rolls = |seed: u64, salt: &str| -> Vec<bool> {
            (0..64)
                .map(|i| roll(seed, salt, &format!("k{i}"), 0.5))
                .collect()
        };
        let (a, b, c, d) = (rolls(1, "x"), rolls(1, "x"), rolls(2, "x"), rolls(1, "y"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(!roll(1, "x", "k", 0.0));
        assert!(roll(1, "x", "k", 1.0));
    }

    #[test]
    fn latency_fixed_and_lognormal() {
        let mut f = FaultConfig {
            latency_ms: 5,
            ..FaultConfig::default()
        };
        assert_eq!(latency_ms(1, &f, "k"), 5);
        f.latency_lognormal_median_ms = 100;
        let draws: Vec<u64> = (0..200)
            .map(|i| latency_ms(1, &f, &i.to_string()))
            .collect();
        assert!(draws.iter().all(|&d| d >= 5));
        let mut sorted = draws.clone();
        sorted.sort_unstable();
        let median = sorted[100];
        assert!((60..170).contains(&median), "median {median}");
    }

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, t0);
        assert!(b.try_take(1.0, 2, t0));
        assert!(b.try_take(1.0, 2, t0));
        assert!(!b.try_take(1.0, 2, t0));
        assert!(b.try_take(1.0, 2, t0 + Duration::from_millis(1_000)));
        assert!(b.try_take(0.0, 2, t0));
    }

    #[test]
    fn scopes() {
        for (scope, sections) in [
            (
                FaultScope::All,
                ["5.1", "5.2", "5.4", "5.6", "6.1"].as_slice(),
            ),
            (
                FaultScope::Payouts,
                ["5.2", "5.3", "5.4", "5.8", "5.9"].as_slice(),
            ),
            (FaultScope::Sends, ["5.2", "5.3", "5.8", "5.9"].as_slice()),
        ] {
            for s in sections {
                assert!(scope.covers(Some(s)), "{scope:?} {s}");
            }
        }
        assert!(!FaultScope::Payouts.covers(Some("5.6")));
        assert!(!FaultScope::Payouts.covers(None));
        assert!(!FaultScope::Sends.covers(Some("5.4")));
        assert!(FaultScope::All.covers(None));
    }

    #[test]
    fn set_parses_key_value() {
        let mut f = FaultConfig::default();
        f.set("hang=1").unwrap();
        assert_eq!(f.hang, 1.0);
        f.set("hang_secs = 3").unwrap();
        assert_eq!(f.hang_secs, 3);
        f.set("notify_lost=0.25").unwrap();
        assert_eq!(f.notify_lost, 0.25);
        f.set("faults_on=payouts").unwrap();
        assert_eq!(f.faults_on, FaultScope::Payouts);
        f.set("faults_on=sends").unwrap();
        assert_eq!(f.faults_on, FaultScope::Sends);
        f.set("faults_on=\"all\"").unwrap();
        assert_eq!(f.faults_on, FaultScope::All);
        assert!(f.set("faults_on=some").is_err());
        f.set("echo_wrong_amount=0.5").unwrap();
        assert_eq!(f.echo_wrong_amount, 0.5);
        assert!(f.set("nope=1").is_err());
        assert!(f.set("hang=2").is_err());
        assert!(f.set("hang").is_err());
    }
}
