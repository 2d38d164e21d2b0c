//! The request throttle every job's requests pass through: one adaptive rate limiter (sends
//! and queries alike), a bound on requests in flight, the stop signal (Ctrl-C or a
//! stop-the-run code), and backoff with seeded jitter, all timed by the engine's `Clock`. The
//! payout and reconciliation engines both drive their requests through one `Throttle`; neither
//! has a limiter of its own. Must not: make msgIds (`engine::msgid`) or decide anything about
//! a row.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::engine::clock::{Clock, Timing};
use crate::engine::limiter::AdaptiveLimiter;
use crate::engine::stop::StopReason;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("the request throttle is closed")]
    Closed,
}

pub struct Throttle {
    limiter: AdaptiveLimiter,
    in_flight: Semaphore,
    stop_tx: watch::Sender<Option<StopReason>>,
    capacity: usize,
    clock: Arc<dyn Clock>,
    /// The backoff jitter's RNG (seeded: fixed in tests, from the OS in production).
    rng: Mutex<StdRng>,
    /// Several runners on PostgreSQL: the merchant's rate shared by all of them.
    shared: Option<SharedRate>,
}

/// The per-mchId GCRA row in PostgreSQL (`store::pg::claims`) every runner of the merchant
/// paces by, after its own limiter: the runners together never pass one rate + burst, and a
/// 406 seen by one of them halves the rate for all.
struct SharedRate {
    store: Store,
    mch_id: String,
    /// Successes since this runner last stepped the shared rate up.
    successes: std::sync::atomic::AtomicU32,
}

impl Throttle {
    /// `concurrency` requests in flight at most; `rate` per second with bursts of `burst`;
    /// `timing`: the clock and the jitter's seed.
    pub fn new(concurrency: usize, rate: u32, burst: u32, timing: &Timing) -> Throttle {
        let (stop_tx, _) = watch::channel(None);
        Throttle {
            limiter: AdaptiveLimiter::new(rate, burst),
            in_flight: Semaphore::new(concurrency.max(1)),
            stop_tx,
            capacity: concurrency.max(1),
            clock: Arc::clone(&timing.clock),
            rng: Mutex::new(timing.rng()),
            shared: None,
        }
    }

    /// Paces every request also by `mch_id`'s shared GCRA row in `store` (PostgreSQL, several
    /// runners), created or updated here with this runner's rate and burst (the burst less the
    /// same arrival-jitter margin the local limiter keeps).
    pub async fn share_rate(
        mut self,
        store: Store,
        mch_id: &str,
        rate: u32,
        burst: u32,
    ) -> Result<Throttle, crate::store::StoreError> {
        let rate = rate.max(1);
        let burst = crate::engine::limiter::effective_burst(rate, burst);
        store
            .rate_limit_init(
                mch_id,
                i32::try_from(rate).unwrap_or(i32::MAX),
                i32::try_from(burst).unwrap_or(i32::MAX),
            )
            .await?;
        self.shared = Some(SharedRate {
            store,
            mch_id: mch_id.to_string(),
            successes: Default::default(),
        });
        Ok(self)
    }

    /// The clock every request through this throttle is timed by.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Requests in flight at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops taking work; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        self.stop_tx.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn stopped(&self) -> bool {
        self.stop_tx.borrow().is_some()
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_tx.borrow().clone()
    }

    /// A receiver of the stop signal (`Some` once stopped), for tasks that wait on it.
    pub fn stop_signal(&self) -> watch::Receiver<Option<StopReason>> {
        self.stop_tx.subscribe()
    }

    /// Resolves when the throttle is stopped.
    pub async fn until_stopped(&self) {
        let mut rx = self.stop_tx.subscribe();
        let _ = rx.wait_for(|s| s.is_some()).await;
    }

    /// A slot for one request in flight.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, ThrottleError> {
        self.in_flight
            .acquire()
            .await
            .map_err(|_| ThrottleError::Closed)
    }

    /// Waits for a rate permit; take it right before the request leaves.
    pub async fn pace(&self) {
        self.limiter.acquire().await;
        let Some(shared) = &self.shared else { return };
        loop {
            match shared.store.rate_limit_take(&shared.mch_id).await {
                Ok(wait_us) if wait_us <= 0 => return,
                Ok(wait_us) => {
                    let wait = Duration::from_micros(wait_us.unsigned_abs());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.until_stopped() => return,
                    }
                }
                Err(e) => {
                    // The store is unreachable: the request's own save will fail too; only
                    // this runner's limiter paces it.
                    tracing::warn!(error = %e, "shared rate limit unreachable; pacing by this runner's limiter only");
                    return;
                }
            }
        }
    }

    /// A 406: halve the rate (reference §12 rule 8), for every runner when it is shared.
    pub fn cut(&self) {
        self.limiter.cut();
        if let Some(shared) = &self.shared {
            shared
                .successes
                .store(0, std::sync::atomic::Ordering::Relaxed);
            let (store, mch) = (shared.store.clone(), shared.mch_id.clone());
            spawn_store(async move {
                match store.rate_limit_cut(&mch).await {
                    Ok(rate) => tracing::warn!(
                        rate,
                        "406 from Starpay: shared request rate cut for every runner"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot store the rate cut"),
                }
            });
        }
    }

    /// The rate (requests per second) the adaptive limiter stands at now (metrics).
    pub fn current_rate(&self) -> u32 {
        self.limiter.current_rate()
    }

    /// A request that was not rate-limited.
    pub fn success(&self) {
        self.limiter.success();
        if let Some(shared) = &self.shared {
            let n = shared
                .successes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n % crate::engine::limiter::SUCCESSES_PER_STEP == 0 {
                let (store, mch) = (shared.store.clone(), shared.mch_id.clone());
                spawn_store(async move {
                    if let Err(e) = store.rate_limit_raise(&mch).await {
                        tracing::warn!(error = %e, "cannot step the shared rate up");
                    }
                });
            }
        }
    }

    /// How long backoff `base` waits: `base` with jitter in [base/2, base] (seeded RNG), never
    /// past `deadline`.
    pub fn backoff_wait(&self, base: Duration, deadline: Instant) -> Duration {
        let jitter = match self.rng.lock() {
            Ok(mut rng) => rng.random_range(0.5f64..=1.0),
            Err(poisoned) => poisoned.into_inner().random_range(0.5f64..=1.0),
        };
        base.mul_f64(jitter)
            .min(deadline.saturating_duration_since(self.clock.now()))
    }

    /// Sleeps `backoff_wait(base, deadline)`, ending early on stop.
    pub async fn sleep_backoff(&self, base: Duration, deadline: Instant) {
        let wait = self.backoff_wait(base, deadline);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.until_stopped() => {}
        }
    }
}

/// Runs a store update of the shared rate beside the request (a cut or a step up must not
/// hold the row's turn); outside a runtime it is skipped (nothing is shared there).
fn spawn_store(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(f);
    }
}
