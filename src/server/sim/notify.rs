//! Notification delivery (reference §10) and the background ticker.
//!
//! Owns: the pending deliveries. Every `tick_ms` (or when woken) it applies due transitions,
//! takes the new notification jobs from the ledger's outbox, applies the notification faults
//! (lost, duplicated, delayed, reordered — seeded by `originalMsgId/trxState`), and POSTs the
//! due ones **one at a time, in due order**, so a configured reordering is what the receiver
//! sees. A delivery succeeds on HTTP 2xx with JSON `code` "200" (string or number); otherwise it
//! is retried after `notify_retry_secs[attempt]` simulated seconds until the schedule runs out.
//!
//! Must not: POST anywhere but loopback (other URLs are refused and recorded as such); hold
//! the state lock across `.await`.

use std::sync::Arc;
use std::time::Duration;

use super::faults;
use super::state::{NotificationAttempt, NotifyJob};
use super::{Shared, Tunables};
use crate::starpay::sign;

/// A delivery waiting for its due time.
struct Pending {
    job: NotifyJob,
    due_ms: u64,
    /// 0-based attempt number.
    attempt: u32,
    /// Sent order among equal due times.
    order: u64,
    /// A duplicate copy is delivered once, without retries.
    retries: bool,
}

/// Whether `url` points at this machine (the simulator never contacts other hosts).
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return false;
    }
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// The deliveries waiting for their due time. Owned by the ticker task alone; emptied when the
/// ledger is reset (a new generation), so nothing from before a reset is delivered after it.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A notification held back by the `notify_reorder` fault until the next one is queued.
    held: Option<Pending>,
    /// Last `Pending::order` given out: orders deliveries that fall due together.
    counter: u64,
    /// The ledger generation the queued deliveries belong to.
    generation: u64,
}

impl Queue {
    fn next_order(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Forgets every queued delivery if the ledger was reset since the last look.
    fn follow_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.generation = generation;
            self.pending.clear();
            self.held = None;
        }
    }

    /// Queues a new notification job with the notification faults applied (seeded by
    /// `originalMsgId/trxState`), or records why it is not sent.
    fn add(&mut self, shared: &Shared, t: &Tunables, job: NotifyJob, now: u64) {
        let f = &t.faults;
        let key = format!(
            "{}/{}",
            job.notification.original_msg_id,
            job.notification.trx_state.as_str()
        );
        let record = |result: &str| {
            shared.state().record_notification(
                job.generation,
                job.order_index,
                NotificationAttempt {
                    at_ms: now,
                    trx_state: job.notification.trx_state.as_str().to_string(),
                    attempt: 0,
                    url: job.url.clone(),
                    delivered: false,
                    result: result.to_string(),
                },
            )
        };
        if job.url.is_none() {
            record("no notifyUrl: not sent");
            return;
        }
        if faults::roll(t.seed, "notify_lost", &key, f.notify_lost) {
            record("lost (fault notify_lost)");
            return;
        }
        let mut due = job.due_ms;
        if faults::roll(t.seed, "notify_delay", &key, f.notify_delay) {
            due = due.saturating_add(f.notify_delay_secs.saturating_mul(1_000));
        }
        let duplicate = faults::roll(t.seed, "notify_duplicate", &key, f.notify_duplicate);
        let reorder = faults::roll(t.seed, "notify_reorder", &key, f.notify_reorder);
        let p = Pending {
            job: job.clone(),
            due_ms: due,
            attempt: 0,
            order: self.next_order(),
            retries: true,
        };
        let mut batch = vec![p];
        if duplicate {
            batch.push(Pending {
                job,
                due_ms: due,
                attempt: 0,
                order: self.next_order(),
                retries: false,
            });
        }
        // Reordering: hold this one until the next notification is queued, then queue it
        // right behind that one.
        if reorder && self.held.is_none() {
            self.held = batch.drain(..1).next();
            self.pending.extend(batch);
            return;
        }
        self.pending.extend(batch);
        if let Some(mut h) = self.held.take() {
            h.order = self.next_order();
            h.due_ms = h.due_ms.max(due);
            self.pending.push(h);
        }
    }

    /// A held notification does not wait forever: released after 5 simulated seconds.
    fn release_stale_hold(&mut self, now: u64) {
        if let Some(h) = &self.held {
            if now >= h.due_ms.saturating_add(5_000) {
                if let Some(mut h) = self.held.take() {
                    h.order = self.next_order();
                    self.pending.push(h);
                }
            }
        }
    }

    /// Removes and returns the deliveries due at `now`, in (due time, order) order.
    fn take_due(&mut self, now: u64) -> Vec<Pending> {
        self.pending.sort_by_key(|p| (p.due_ms, p.order));
        let split = self.pending.partition_point(|p| p.due_ms <= now);
        self.pending.drain(..split).collect()
    }

    /// Queues the next attempt of a delivery that failed at `at`, while the retry schedule
    /// (`notify_retry_secs`) lasts; a duplicate copy is never retried.
    fn retry(&mut self, shared: &Shared, p: Pending, at: u64) {
        let next = p.attempt as usize + 1;
        if p.retries {
            if let Some(&delay) = shared.config.notify_retry_secs.get(next) {
                let order = self.next_order();
                self.pending.push(Pending {
                    due_ms: at.saturating_add(delay.saturating_mul(1_000)),
                    attempt: p.attempt + 1,
                    order,
                    ..p
                });
            }
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, http: reqwest::Client) {
    let mut shutdown = shared.shutdown.clone();
    let mut ticker = tokio::time::interval(Duration::from_millis(shared.config.tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue = Queue::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = ticker.tick() => {}
            _ = shared.wake.notified() => {}
        }
        let now = shared.clock.now_ms();
        let (jobs, generation) = {
            let mut state = shared.state();
            (state.take_outbox(), state.generation)
        };
        queue.follow_generation(generation);
        let t = shared.tunables();
        for job in jobs {
            queue.add(&shared, &t, job, now);
        }
        queue.release_stale_hold(now);
        for p in queue.take_due(now) {
            if *shutdown.borrow() {
                return;
            }
            let outcome = tokio::select! {
                _ = shutdown.changed() => return,
                o = deliver(&shared, &http, &p.job) => o,
            };
            let at = shared.clock.now_ms();
            shared.state().record_notification(
                p.job.generation,
                p.job.order_index,
                NotificationAttempt {
                    at_ms: at,
                    trx_state: p.job.notification.trx_state.as_str().to_string(),
                    attempt: p.attempt + 1,
                    url: p.job.url.clone(),
                    delivered: outcome.is_ok(),
                    result: match &outcome {
                        Ok(r) | Err(Failure::Retry(r)) | Err(Failure::Refused(r)) => r.clone(),
                    },
                },
            );
            if let Err(Failure::Retry(_)) = outcome {
                queue.retry(&shared, p, at);
            }
        }
    }
}

enum Failure {
    Retry(String),
    Refused(String),
}

/// One POST of a signed notification.
async fn deliver(
    shared: &Shared,
    http: &reqwest::Client,
    job: &NotifyJob,
) -> Result<String, Failure> {
    let Some(url) = job.url.as_deref() else {
        return Err(Failure::Refused("no notifyUrl".into()));
    };
    if !is_loopback_url(url) {
        return Err(Failure::Refused(format!(
            "refused: {url} is not a loopback URL (the simulator only notifies this machine)"
        )));
    }
    let payload = serde_json::to_vec(&job.notification)
        .map_err(|e| Failure::Refused(format!("cannot serialize: {e}")))?;
    let signature = shared
        .platform_key
        .sign_b64(&payload)
        .map_err(|_| Failure::Refused("cannot sign".into()))?;
    let body = sign::envelope_bytes("request", &payload, &signature);
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::Retry(format!("transport: {e}")))?;
    let status = response.status();
    let text = response
        .bytes()
        .await
        .map_err(|e| Failure::Retry(format!("transport: {e}")))?;
    let code_ok = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| match v.get("code") {
            Some(serde_json::Value::String(s)) => Some(s == "200"),
            Some(serde_json::Value::Number(n)) => Some(n.as_u64() == Some(200)),
            _ => None,
        })
        .unwrap_or(false);
    let summary = format!(
        "HTTP {} {}",
        status.as_u16(),
        String::from_utf8_lossy(&text)
    );
    let summary: String = summary.chars().take(200).collect();
    if status.is_success() && code_ok {
        Ok(summary)
    } else {
        Err(Failure::Retry(summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:9011/notify"));
        assert!(is_loopback_url("http://localhost/n"));
        assert!(is_loopback_url("http://[::1]:80/n"));
        assert!(!is_loopback_url("http://example.com/n"));
        assert!(!is_loopback_url("http://10.0.0.1/n"));
        assert!(!is_loopback_url("ftp://127.0.0.1/n"));
        assert!(!is_loopback_url("not a url"));
    }
}
