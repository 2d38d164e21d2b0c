//! The one worker pool both engines drive their rows through (the shape of mini-redis's
//! `server.rs` listener): a producer feeds jobs into a **bounded queue**, **`width` workers** in a
//! `JoinSet` each take one job at a time, and **one shutdown signal** (the throttle's stop)
//! ends the producer and every worker. Memory is bounded by the queue, the workers, and the
//! jobs that wait.
//!
//! **Jobs that must wait do not hold a worker.** A payout row spends most of its life waiting:
//! 30 s, 2 min, 5 min, then 10 min between polls, or a backoff. A worker drives a row through
//! everything it can do now (allocate, send, query, save) and, when the row must wait, hands it
//! back with [`Next::At`]; the row is parked in a timer heap shared by the workers and taken
//! again, by whichever worker is free, once it is due (due rows before new ones). So `width`
//! equal to the request concurrency keeps every request slot busy, as one task per row did,
//! while the queue and the heap replace 100,000 parked tasks with 100,000 parked row records
//! (no future state, no task per row). Choices measured against the alternatives:
//! - one task per row (before): a task and its whole future per row for the run's length;
//! - N workers that sleep with their row: a row waiting 10 min would block a worker for 10 min,
//!   so N would have to be about the number of rows for the same throughput;
//! - requeue with a due time (this): the same request concurrency, one small heap entry per
//!   waiting row.
//!
//! On shutdown, queued and waiting jobs are dropped: they are rows in the store, which keeps
//! their state, and the next run resumes them. A job already taken runs to its own next check
//! of the stop signal. Errors are the job's business (`work` logs and records them); the pool
//! only counts what it ran.
//!
//! Must not: know what a job is, talk to Starpay or the store.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::engine::stop::StopReason;
use crate::engine::throttle::Throttle;

type StopSignal = tokio::sync::watch::Receiver<Option<StopReason>>;

/// What a job asks for after a turn on a worker.
pub enum Next<J> {
    /// Finished for this drive (final, left for a later run, or stopped).
    Done,
    /// Run it again at this time (a poll due, a backoff over).
    At(Instant, J),
}

/// Where a producer puts jobs; `put` waits while the queue is full and returns `false` once
/// the pool is shutting down (the producer should then return).
pub struct Feed<J> {
    tx: mpsc::Sender<J>,
    stop: StopSignal,
}

impl<J> Feed<J> {
    pub async fn put(&mut self, job: J) -> bool {
        if self.stop.borrow().is_some() {
            return false;
        }
        tokio::select! {
            sent = self.tx.send(job) => sent.is_ok(),
            _ = self.stop.wait_for(|s| s.is_some()) => false,
        }
    }
}

struct Waiting<J> {
    due: Instant,
    seq: u64,
    job: J,
}

impl<J> PartialEq for Waiting<J> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<J> Eq for Waiting<J> {}
impl<J> PartialOrd for Waiting<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Waiting<J> {
    /// Reversed: the heap's top is the earliest due (first requeued first on a tie).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Parked jobs to take before their due time: the receiver of `run --listen` applied a
/// notification to their row (issue 12), so the stored row may be final already. `key` names
/// a job's row; ids arrive on `ids` (bounded by its sender; a lost wake only means the row
/// waits for its due time, as without `--listen`).
pub struct Wakes<J> {
    pub ids: mpsc::Receiver<i64>,
    pub key: fn(&J) -> i64,
}

struct State<J> {
    waiting: BinaryHeap<Waiting<J>>,
    /// Rows woken since the heap was last looked at (see `Wakes`).
    woken: std::collections::HashSet<i64>,
    seq: u64,
    /// Workers holding a job.
    busy: usize,
    /// The producer is finished and its queue drained.
    source_done: bool,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    /// Wakes idle workers: a job was parked or finished, or the source ran dry.
    changed: Notify,
    rx: tokio::sync::Mutex<mpsc::Receiver<J>>,
}

impl<J> Shared<J> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<J>> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl<J> State<J> {
    /// Makes the parked jobs of the woken rows due now (one pass over the heap for all the
    /// wakes gathered since the last one). A woken row that is not parked (running, or not
    /// taken yet) is forgotten: its turn reads the stored row anyway.
    fn take_wakes(&mut self, key: fn(&J) -> i64, now: Instant) {
        if self.woken.is_empty() {
            return;
        }
        let woken = std::mem::take(&mut self.woken);
        let mut all = std::mem::take(&mut self.waiting).into_vec();
        for w in &mut all {
            if w.due > now && woken.contains(&key(&w.job)) {
                w.due = now;
            }
        }
        self.waiting = BinaryHeap::from(all);
    }
}

/// What a worker does next.
enum Take<J> {
    Run(J),
    /// Nothing due: wait for a new job, the earliest due time, or a change.
    Idle(Option<Instant>),
    Exit,
}

/// Runs `produce` and `width` workers applying `work` until every job is done, or the throttle
/// stops. `work` runs one job's turn; `Next::At` parks it until due, or until `wakes` names
/// its row. Returns when the producer and every worker have ended. A panicking worker is
/// replaced by none: the others go on and the panic is logged (its job's row stays as stored).
pub async fn run<J, P, PF, W, WF>(
    width: usize,
    throttle: &Throttle,
    wakes: Option<Wakes<J>>,
    produce: P,
    work: W,
) where
    J: Send + 'static,
    P: FnOnce(Feed<J>) -> PF,
    PF: Future<Output = ()>,
    W: Fn(J) -> WF + Clone + Send + 'static,
    WF: Future<Output = Next<J>> + Send + 'static,
{
    let width = width.max(1);
    let (tx, rx) = mpsc::channel::<J>(width * 4);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            waiting: BinaryHeap::new(),
            woken: Default::default(),
            seq: 0,
            busy: 0,
            source_done: false,
        }),
        changed: Notify::new(),
        rx: tokio::sync::Mutex::new(rx),
    });
    let mut workers = JoinSet::new();
    let key = wakes.as_ref().map(|w| w.key);
    for _ in 0..width {
        let shared = Arc::clone(&shared);
        let work = work.clone();
        let stop = throttle.stop_signal();
        workers.spawn(worker(shared, stop, work, key));
    }
    // Wakes are gathered here and applied by the next worker that looks at the heap; this
    // task ends with the pool (aborted below) or when the sender goes.
    // It holds the pool weakly: only the workers keep the queue's receiver alive (below).
    let waker = wakes.map(|mut w| {
        let shared = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while let Some(id) = w.ids.recv().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.lock().woken.insert(id);
                shared.changed.notify_waiters();
            }
        })
    });
    // Only the workers hold the queue's receiver now: if they all end, `put` fails at once.
    drop(shared);
    // The producer runs here, beside the workers; dropping the sender closes the queue.
    produce(Feed {
        tx,
        stop: throttle.stop_signal(),
    })
    .await;
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a worker failed; its row stays as stored");
        }
    }
    if let Some(w) = waker {
        w.abort();
    }
}

async fn worker<J, W, WF>(
    shared: Arc<Shared<J>>,
    mut stop: StopSignal,
    work: W,
    key: Option<fn(&J) -> i64>,
) where
    W: Fn(J) -> WF,
    WF: Future<Output = Next<J>>,
{
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if stop.borrow().is_some() {
            return;
        }
        let take = {
            let mut st = shared.lock();
            let now = Instant::now();
            if let Some(key) = key {
                st.take_wakes(key, now);
            }
            if st.waiting.peek().is_some_and(|w| w.due <= now) {
                st.busy += 1;
                st.waiting.pop().map_or(Take::Exit, |w| Take::Run(w.job))
            } else if st.source_done && st.waiting.is_empty() && st.busy == 0 {
                Take::Exit
            } else {
                Take::Idle(st.waiting.peek().map(|w| w.due))
            }
        };
        let job = match take {
            Take::Run(job) => job,
            Take::Exit => {
                shared.changed.notify_waiters();
                return;
            }
            Take::Idle(due) => {
                let source_done = shared.lock().source_done;
                let until_due = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                let new_job = async {
                    if source_done {
                        return std::future::pending().await;
                    }
                    shared.rx.lock().await.recv().await
                };
                tokio::select! {
                    received = new_job => match received {
                        Some(job) => {
                            shared.lock().busy += 1;
                            job
                        }
                        None => {
                            shared.lock().source_done = true;
                            shared.changed.notify_waiters();
                            continue;
                        }
                    },
                    () = until_due => continue,
                    () = &mut changed => continue,
                    _ = stop.wait_for(|s| s.is_some()) => return,
                }
            }
        };
        let next = work(job).await;
        {
            let mut st = shared.lock();
            st.busy -= 1;
            if let Next::At(due, job) = next {
                let seq = st.seq;
                st.seq += 1;
                st.waiting.push(Waiting { due, seq, job });
            }
        }
        shared.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::clock::Timing;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::time::Duration;

    /// 1,000 jobs through 4 workers, each parked three times for a minute (paused time): all
    /// turns run, never more than 4 at once, and the minute waits overlap (the whole run takes
    /// about 3 minutes of paused time, not 3,000).
    #[tokio::test(start_paused = true)]
    async fn parked_jobs_hold_no_worker() {
        let throttle = Throttle::new(4, 1000, 1000, &Timing::tokio(0, 1));
        let turns = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let (t, r, m) = (Arc::clone(&turns), Arc::clone(&running), Arc::clone(&most));
        run(
            4,
            &throttle,
            None,
            |mut feed| async move {
                for i in 0..1000u32 {
                    assert!(feed.put((i, 0u32)).await);
                }
            },
            move |(i, n): (u32, u32)| {
                let (t, r, m) = (Arc::clone(&t), Arc::clone(&r), Arc::clone(&m));
                async move {
                    let now = r.fetch_add(1, AtomicOrdering::SeqCst) + 1;
                    m.fetch_max(now, AtomicOrdering::SeqCst);
                    tokio::task::yield_now().await;
                    t.fetch_add(1, AtomicOrdering::SeqCst);
                    r.fetch_sub(1, AtomicOrdering::SeqCst);
                    if n < 3 {
                        Next::At(Instant::now() + Duration::from_secs(60), (i, n + 1))
                    } else {
                        Next::Done
                    }
                }
            },
        )
        .await;
        assert_eq!(turns.load(AtomicOrdering::SeqCst), 4000);
        assert!(most.load(AtomicOrdering::SeqCst) <= 4);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(180) && took < Duration::from_secs(200),
            "{took:?}"
        );
    }

    /// A job parked for an hour runs again at once when its key is woken (a notification
    /// applied to its row under `run --listen`); the others wait out their hour.
    #[tokio::test(start_paused = true)]
    async fn a_woken_job_runs_before_its_due_time() {
        let throttle = Throttle::new(2, 1000, 1000, &Timing::tokio(0, 1));
        let (tx, rx) = mpsc::channel(8);
        let start = Instant::now();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&ran);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tx.send(3).await.unwrap();
        });
        run(
            2,
            &throttle,
            Some(Wakes {
                ids: rx,
                key: |j: &(i64, u32)| j.0,
            }),
            |mut feed| async move {
                for i in 0..5i64 {
                    assert!(feed.put((i, 0u32)).await);
                }
            },
            move |(i, n): (i64, u32)| {
                let r = Arc::clone(&r);
                async move {
                    if n == 1 {
                        r.lock().unwrap().push((i, start.elapsed().as_secs()));
                        return Next::Done;
                    }
                    Next::At(Instant::now() + Duration::from_secs(3600), (i, 1))
                }
            },
        )
        .await;
        let ran = ran.lock().unwrap().clone();
        assert_eq!(ran[0], (3, 10), "woken after 10 s: {ran:?}");
        assert!(ran[1..].iter().all(|&(_, at)| at == 3600), "{ran:?}");
        assert_eq!(ran.len(), 5);
    }

    /// A stop ends the drive although jobs are still parked for an hour; the producer's `put`
    /// says so.
    #[tokio::test(start_paused = true)]
    async fn stop_drops_parked_jobs() {
        let throttle = Arc::new(Throttle::new(2, 1000, 1000, &Timing::tokio(0, 1)));
        let turns = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&turns);
        let stopper = Arc::clone(&throttle);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stopper.stop(crate::engine::stop::StopReason::Interrupted);
        });
        let start = Instant::now();
        run(
            2,
            &throttle,
            None,
            |mut feed| async move {
                for i in 0..10u32 {
                    assert!(feed.put(i).await);
                }
                tokio::time::sleep(Duration::from_secs(20)).await;
                assert!(!feed.put(99).await, "refused after the stop");
            },
            move |i: u32| {
                let t = Arc::clone(&t);
                async move {
                    t.fetch_add(1, AtomicOrdering::SeqCst);
                    Next::At(Instant::now() + Duration::from_secs(3600), i)
                }
            },
        )
        .await;
        assert_eq!(turns.load(AtomicOrdering::SeqCst), 10);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }
}
