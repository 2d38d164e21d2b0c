//! Time and randomness, passed in (STYLE.md convention 10): the engines read the clock and the
//! backoff jitter's random numbers only through a [`Timing`] they get at construction, never
//! `SystemTime`, `Instant::now()` or `rand::rng()` themselves.
//!
//! Two kinds of time, on purpose:
//! - **wall-clock UTC milliseconds** ([`Clock::now_ms`]): what the rules compare (poll schedule
//!   from `last_sent_at`, the 72 h `max_resolve`, the AB0x hold) and what goes into the store;
//! - **monotonic time** ([`Clock::now`], a `tokio::time::Instant`): deadlines and sleeps. It is
//!   tokio's, so a test runtime under `tokio::time::pause()` controls it and a poll schedule of
//!   minutes passes instantly.
//!
//! Production uses [`SystemClock`] (the real wall clock; tokio's `Instant`, which is the OS
//! monotonic clock when time is not paused) and a jitter RNG seeded from the OS. Tests use
//! [`TokioClock`], whose wall clock is a fixed start plus tokio's elapsed time, so both kinds of
//! time advance together when paused time jumps, and a fixed seed.
//!
//! Must not: be used for the simulator (it has its own `SimClock`) or for the rate limiter
//! (governor keeps its own clock; tests that pause time set a rate that never waits).

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

/// Where the engine reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock UTC milliseconds since the epoch.
    fn now_ms(&self) -> i64;

    /// Monotonic time for deadlines and sleeps (tokio's, so paused time applies).
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
}

/// A wall clock that follows tokio time: `wall_at_start` plus the tokio time elapsed since the
/// clock was made. Under `tokio::time::pause()` it is fully deterministic.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_at_start: i64,
    start: Instant,
}

impl TokioClock {
    pub fn starting_at(wall_at_start_ms: i64) -> TokioClock {
        TokioClock {
            wall_at_start: wall_at_start_ms,
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall_at_start.saturating_add(elapsed)
    }
}

/// The clock and the seed of the jitter RNG an engine is built with.
#[derive(Clone)]
pub struct Timing {
    pub clock: Arc<dyn Clock>,
    /// Seed of the backoff jitter; `None`: seeded from the OS.
    pub seed: Option<u64>,
}

impl Timing {
    /// The real clock and an OS-seeded RNG (production).
    pub fn system() -> Timing {
        Timing {
            clock: Arc::new(SystemClock),
            seed: None,
        }
    }

    /// A clock that follows tokio time from `wall_at_start_ms`, and a fixed seed (tests).
    pub fn tokio(wall_at_start_ms: i64, seed: u64) -> Timing {
        Timing {
            clock: Arc::new(TokioClock::starting_at(wall_at_start_ms)),
            seed: Some(seed),
        }
    }

    /// The jitter RNG this timing asks for.
    pub fn rng(&self) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        match self.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        }
    }
}

impl fmt::Debug for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timing")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// `now + d`, saturating far in the future instead of overflowing.
pub fn deadline_after(clock: &dyn Clock, d: std::time::Duration) -> Instant {
    let now = clock.now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms(), 1_000_000 + 3_600_000);
        let d = deadline_after(&clock, Duration::MAX);
        assert!(d > clock.now() + Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn a_fixed_seed_gives_the_same_jitter() {
        use rand::Rng;
        let t = Timing::tokio(0, 7);
        let (mut r1, mut r2) = (t.rng(), t.rng());
        let x: Vec<f64> = (0..4).map(|_| r1.random_range(0.5..=1.0)).collect();
        let y: Vec<f64> = (0..4).map(|_| r2.random_range(0.5..=1.0)).collect();
        assert_eq!(x, y);
        assert!(x.iter().all(|j| (0.5..=1.0).contains(j)));
    }
}
