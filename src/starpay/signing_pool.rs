//! A fixed set of signing threads, one per core, fed from one queue (issue 11).
//!
//! Signing a request is pure CPU (about 0.3 ms for RSA-2048 here). On tokio's blocking pool each
//! signature woke a thread of its own (the pool grew to one thread per request in flight, 40 on
//! a 2-core machine), so every signature paid two thread switches. Here a signer that finishes
//! one signature takes the next queued one without sleeping; the caller's task is woken once,
//! when its signature is ready. The key stays inside this process's memory as before: the
//! threads hold the same `Arc<PrivateKey>` and never write it anywhere.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::sign::{PrivateKey, SignError, SignedRequest};

type Job = (Vec<u8>, oneshot::Sender<Result<SignedRequest, SignError>>);

/// Cheap to clone; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct SigningPool {
    jobs: SyncSender<Job>,
}

/// Queue length per signing thread: callers beyond it wait in `sign` (their request cannot
/// leave before its signature anyway).
const QUEUE_PER_THREAD: usize = 64;

impl SigningPool {
    /// Starts one signing thread per available core (at least one). If no thread can be
    /// started, every `sign` fails with `SignError` (the run stops before sending anything).
    pub fn start(key: Arc<PrivateKey>) -> SigningPool {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (jobs, queue) = sync_channel::<Job>(threads * QUEUE_PER_THREAD);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let (key, queue) = (Arc::clone(&key), Arc::clone(&queue));
            let started = std::thread::Builder::new()
                .name(format!("signer-{i}"))
                .spawn(move || serve(&key, &queue));
            if let Err(e) = started {
                tracing::warn!("cannot start signing thread {i}: {e}");
            }
        }
        SigningPool { jobs }
    }

    /// Signs `bytes` on a signing thread. `SignError` if the signature cannot be made (or every
    /// signing thread is gone, which only happens if none could be started).
    pub async fn sign(&self, bytes: Vec<u8>) -> Result<SignedRequest, SignError> {
        let (reply, answer) = oneshot::channel();
        let job = (bytes, reply);
        let queued = match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                // Every signer is busy and the queue is full: wait for room off the runtime.
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        };
        if !queued {
            return Err(SignError);
        }
        answer.await.unwrap_or(Err(SignError))
    }
}

fn serve(key: &PrivateKey, queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while signing.
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok((bytes, reply)) = next else {
            return; // every SigningPool clone is gone
        };
        let _ = reply.send(SignedRequest::sign(key, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::starpay::sign::known;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signs_like_the_key_itself_from_many_tasks() {
        let key = Arc::new(
            PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo").expect("demo key"),
        );
        let pool = SigningPool::start(Arc::clone(&key));
        let mut tasks = Vec::new();
        for i in 0..300u32 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let bytes = format!("{{\"n\":{i}}}").into_bytes();
                (i, pool.sign(bytes).await)
            }));
        }
        for t in tasks {
            let (i, signed) = t.await.expect("join");
            let signed = signed.expect("signed");
            let bytes = format!("{{\"n\":{i}}}").into_bytes();
            assert_eq!(signed.bytes, bytes);
            assert_eq!(signed.signature, key.sign_b64(&bytes).expect("sign"));
        }
    }
}
