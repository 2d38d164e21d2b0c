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
use super::Shared;
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

pub(crate) async fn run(shared: Arc<Shared>, http: reqwest::Client) {
    let mut shutdown = shared.shutdown.clone();
    let mut ticker = tokio::time::interval(Duration::from_millis(shared.config.tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<Pending> = Vec::new();
    let mut held: Option<Pending> = None;
    let mut counter: u64 = 0;
    let mut generation = 0;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = ticker.tick() => {}
            _ = shared.wake.notified() => {}
        }
        let now = shared.clock.now_ms();
        let (jobs, current_generation) = {
            let mut state = shared.state();
            (state.take_outbox(), state.generation)
        };
        if current_generation != generation {
            generation = current_generation;
            pending.clear();
            held = None;
        }
        let t = shared.tunables();
        let f = t.faults;
        for job in jobs {
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
                continue;
            }
            if faults::roll(t.seed, "notify_lost", &key, f.notify_lost) {
                record("lost (fault notify_lost)");
                continue;
            }
            let mut due = job.due_ms;
            if faults::roll(t.seed, "notify_delay", &key, f.notify_delay) {
                due = due.saturating_add(f.notify_delay_secs.saturating_mul(1_000));
            }
            let duplicate = faults::roll(t.seed, "notify_duplicate", &key, f.notify_duplicate);
            let reorder = faults::roll(t.seed, "notify_reorder", &key, f.notify_reorder);
            counter += 1;
            let p = Pending {
                job: job.clone(),
                due_ms: due,
                attempt: 0,
                order: counter,
                retries: true,
            };
            let mut batch = vec![p];
            if duplicate {
                counter += 1;
                batch.push(Pending {
                    job,
                    due_ms: due,
                    attempt: 0,
                    order: counter,
                    retries: false,
                });
            }
            // Reordering: hold this one until the next notification is queued, then queue it
            // right behind that one.
            if reorder && held.is_none() {
                held = batch.drain(..1).next();
                pending.extend(batch);
                continue;
            }
            pending.extend(batch);
            if let Some(mut h) = held.take() {
                counter += 1;
                h.order = counter;
                h.due_ms = h.due_ms.max(due);
                pending.push(h);
            }
        }
        // A held notification does not wait forever: released after 5 simulated seconds.
        if let Some(h) = &held {
            if now >= h.due_ms.saturating_add(5_000) {
                if let Some(mut h) = held.take() {
                    counter += 1;
                    h.order = counter;
                    pending.push(h);
                }
            }
        }
        pending.sort_by_key(|p| (p.due_ms, p.order));
        let split = pending.partition_point(|p| p.due_ms <= now);
        let ready: Vec<Pending> = pending.drain(..split).collect();
        for p in ready {
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
                let next = p.attempt as usize + 1;
                if p.retries {
                    if let Some(&delay) = shared.config.notify_retry_secs.get(next) {
                        counter += 1;
                        pending.push(Pending {
                            due_ms: at.saturating_add(delay.saturating_mul(1_000)),
                            attempt: p.attempt + 1,
                            order: counter,
                            ..p
                        });
                    }
                }
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
