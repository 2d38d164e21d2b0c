//! What every job's requests share: one adaptive rate limiter (sends and queries alike), a
//! bound on requests in flight, the stop signal (Ctrl-C or a stop-the-run code), backoff with
//! jitter, and fresh msgIds for queries. The payout and reconciliation engines both drive their
//! requests through one `Pool`; neither has a limiter of its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{watch, Semaphore, SemaphorePermit};

use crate::domain::MsgId;
use crate::engine::limiter::AdaptiveLimiter;
use crate::engine::stop::StopReason;
use crate::store::{Store, StoreError};

/// Query msgIds are reserved from the database counter in blocks of this size (one write per
/// block, committed before any id of it is used, so ids stay unique across crashes).
const ID_BLOCK: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("generated msgId is invalid: {0}")]
    BadId(String),
    #[error("the request pool is closed")]
    Closed,
}

pub struct Pool {
    store: Store,
    db_id: String,
    limiter: AdaptiveLimiter,
    in_flight: Semaphore,
    stop_tx: watch::Sender<Option<StopReason>>,
    block: Mutex<(i64, i64)>,
    capacity: usize,
}

impl Pool {
    /// `concurrency` requests in flight at most; `rate` per second with bursts of `burst`.
    pub async fn new(
        store: Store,
        concurrency: usize,
        rate: u32,
        burst: u32,
    ) -> Result<Pool, PoolError> {
        let db_id = store.db_id().await?;
        let (stop_tx, _) = watch::channel(None);
        Ok(Pool {
            store,
            db_id,
            limiter: AdaptiveLimiter::new(rate, burst),
            in_flight: Semaphore::new(concurrency.max(1)),
            stop_tx,
            block: Mutex::new((0, 0)),
            capacity: concurrency.max(1),
        })
    }

    /// Requests in flight at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This database's random id, part of every msgId it issues.
    pub fn db_id(&self) -> &str {
        &self.db_id
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

    /// Resolves when the pool is stopped.
    pub async fn until_stopped(&self) {
        let mut rx = self.stop_tx.subscribe();
        let _ = rx.wait_for(|s| s.is_some()).await;
    }

    /// A slot for one request in flight.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, PoolError> {
        self.in_flight
            .acquire()
            .await
            .map_err(|_| PoolError::Closed)
    }

    /// Waits for a rate permit; take it right before the request leaves.
    pub async fn pace(&self) {
        self.limiter.acquire().await;
    }

    /// A 406: halve the rate (reference §12 rule 8).
    pub fn cut(&self) {
        self.limiter.cut();
    }

    /// The rate (requests per second) the adaptive limiter stands at now (metrics).
    pub fn current_rate(&self) -> u32 {
        self.limiter.current_rate()
    }

    /// A request that was not rate-limited.
    pub fn success(&self) {
        self.limiter.success();
    }

    /// Sleeps `base` with jitter in [base/2, base], ending early at `deadline` or on stop.
    pub async fn sleep_backoff(&self, base: Duration, deadline: Instant) {
        let jitter = rand::rng().random_range(0.5f64..=1.0);
        let wait = base
            .mul_f64(jitter)
            .min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.until_stopped() => {}
        }
    }

    /// A fresh msgId recorded in `msg_ids` before use (balance checks, bank list, payout
    /// queries). Each purpose has its own counter, so it needs its own `prefix` (in use: `B`
    /// balance, `L` bank list, `Q` query, `C` re-payment check, `K` recon query blocks).
    pub async fn fresh_msg_id(
        &self,
        prefix: char,
        purpose: &'static str,
        row_id: Option<i64>,
    ) -> Result<MsgId, PoolError> {
        let id = self
            .store
            .new_msg_id(prefix, &self.db_id, purpose, row_id)
            .await?;
        MsgId::new(id).map_err(|e| PoolError::BadId(e.to_string()))
    }

    /// A fresh query msgId from a reserved block (for high-volume queries; the caller records
    /// it with the result). Unique forever: the block is committed before any id is handed out.
    pub async fn block_msg_id(&self, prefix: char) -> Result<MsgId, PoolError> {
        loop {
            let taken = {
                let mut b = self.block.lock().map_err(|_| PoolError::Closed)?;
                if b.0 < b.1 {
                    b.0 += 1;
                    Some(b.0 - 1)
                } else {
                    None
                }
            };
            if let Some(n) = taken {
                return MsgId::new(format!("{prefix}{}{n}", self.db_id))
                    .map_err(|e| PoolError::BadId(e.to_string()));
            }
            let end = self
                .store
                .reserve_counter_block("query_block", ID_BLOCK)
                .await?;
            let mut b = self.block.lock().map_err(|_| PoolError::Closed)?;
            if b.0 >= b.1 {
                *b = (end - ID_BLOCK, end);
            }
        }
    }
}
