//! The notification receiver (issue 12; reference §3.4, §10): an HTTP/1.1 server (hyper, as the
//! simulator) for the notifications Starpay `POST`s to the merchant's `notifyUrl` (5.5, 6.3,
//! 6.5). Every body read in full is stored before it is answered; a verified notification that
//! echoes a payout's current attempt changes its row through `engine::transition`
//! (`RowEvent::Notified`) inside the store's one transaction for it.
//!
//! Owns: the listener, its connection tasks and their limits (declared below, with why).
//! Answers (reference §10): stored → 200 `{"code":"200","message":"success"}` (also for a
//! duplicate, an unmatched msgId or a conflict: all are stored, and a redelivery would change
//! nothing); unverified → 400 `{"code":"402","message":"Verify signature failed"}`; wrong
//! `mchId` or a verified body of the wrong shape → 400; store failure → 500 (Starpay redelivers).
//! Must not: do slow work before answering beyond the store write; query Starpay (the engine's
//! polling resolves conflicts); log private keys (it holds none).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::policy::ResolveSettings;
use crate::engine::transition::{self, Patch, RowEvent, RowView};
use crate::server::accept::{serve_connections, ConnectionLimits};
use crate::starpay::model::{Notification, NotificationPayload};
use crate::starpay::sign::{self, Member, PublicKey, VerifiedForm};
use crate::store::notifications::{
    Decision, NotificationFields, NotifyOutcome, Received, RowUpdate,
};
use crate::store::{RowRecord, Store};

/// The receiver's limits. Each bounds what one client (or many) can make it hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A notification is well under 1 KiB; 64 KiB leaves room for an array of them. A larger
    /// body is refused (413) without being read further.
    pub max_body: usize,
    /// The whole request head must arrive within this (slow-loris headers close the connection).
    pub header_timeout: Duration,
    /// The whole body must arrive within this after the head (408 otherwise).
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 128,
        }
    }
}

/// What the receiver needs: the store, the merchant id notifications must carry, the platform
/// public keys that may sign them, and the resolve settings (the AB0x hold).
pub struct Receiver {
    pub store: Store,
    pub mch_id: String,
    pub platform_keys: Vec<PublicKey>,
    pub resolve: ResolveSettings,
    pub limits: Limits,
    /// `run --listen`: the payout engine's wake channel. The id of every row a notification
    /// changed is offered to it (never waited for: when it is full the row simply waits for
    /// its next poll), so a parked row is taken at once and finishes from the stored state.
    pub applied: Option<tokio::sync::mpsc::Sender<i64>>,
}

/// The answer to one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Answer {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Answer {
        Answer {
            status,
            code,
            message: message.into(),
        }
    }

    fn success() -> Answer {
        Answer::new(200, "200", "success")
    }

    fn body(&self) -> Vec<u8> {
        serde_json::json!({"code": self.code, "message": self.message})
            .to_string()
            .into_bytes()
    }
}

fn form_name(f: VerifiedForm) -> &'static str {
    match f {
        VerifiedForm::RawBytes => "raw_bytes",
        VerifiedForm::StringValue => "string_value",
        VerifiedForm::CompactedWhitespace => "compacted_whitespace",
    }
}

fn fields_of(n: &Notification) -> NotificationFields {
    NotificationFields {
        original_msg_id: n.original_msg_id.clone(),
        trx_state: n.trx_state.as_str().to_string(),
        amount: n.trx_amount,
        mch_id: n.mch_id.clone(),
        order_no: n.order_no.clone(),
        ref_no: n.ref_no.clone(),
        device_info: n.device_info.clone(),
        error_code: n.error_code.clone(),
        error_message: n.error_message.clone(),
        trx_date: n.trx_date.clone(),
    }
}

/// The transition of the matched row, as the store's `decide`: `RowEvent::Notified`.
pub fn decide(
    n: &Notification,
    resolve: &ResolveSettings,
    now_ms: i64,
) -> impl FnOnce(&RowRecord) -> Decision + Send + 'static {
    let n = n.clone();
    let resolve = resolve.clone();
    move |row: &RowRecord| {
        let answer = transition::Verified {
            code: &n.code,
            message: &n.message,
            trx_state: Some(&n.trx_state),
            order_no: Some(&n.order_no),
            ref_no: n.ref_no.as_deref(),
            error_code: n.error_code.as_deref(),
            error_message: n.error_message.as_deref(),
        };
        match transition::transition(
            &RowView::of(row),
            RowEvent::Notified(answer),
            now_ms,
            &resolve,
        ) {
            Err(e) => Decision::Conflict(e.to_string()),
            Ok(c) if c.next == row.state && c.patch == Patch::default() => Decision::NoChange,
            Ok(c) => {
                let mut next = row.clone();
                c.apply_to(&mut next);
                Decision::Change(Box::new(RowUpdate {
                    row: next,
                    sent: c.sent,
                    detail: c.detail,
                }))
            }
        }
    }
}

impl Receiver {
    /// Verifies, stores and applies one body (already read in full); the answer is given only
    /// after the store has committed everything it says.
    pub async fn process(&self, body: &[u8]) -> Answer {
        match self.process_inner(body).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "notification could not be stored; answering 500 so Starpay redelivers it");
                Answer::new(500, "500", "could not store the notification")
            }
        }
    }

    async fn process_inner(&self, body: &[u8]) -> Result<Answer, crate::store::StoreError> {
        let verified = match sign::verify_envelope(body, Member::Request, &self.platform_keys) {
            Ok(v) => v,
            Err(u) => {
                let why = u.error.to_string();
                tracing::warn!(reason = %why, bytes = body.len(), "notification refused: not verified");
                let fields = u
                    .payload
                    .as_deref()
                    .and_then(|p| serde_json::from_slice::<NotificationPayload>(p).ok())
                    .and_then(|p| p.into_vec().first().map(fields_of));
                let received = Received {
                    raw: body.to_vec(),
                    verified: false,
                    verify_form: why.clone(),
                    fields,
                };
                self.store
                    .record_refused_notification(received, why)
                    .await?;
                return Ok(Answer::new(400, "402", "Verify signature failed"));
            }
        };
        let form = form_name(verified.form).to_string();
        let items = match serde_json::from_slice::<NotificationPayload>(&verified.payload) {
            Ok(p) => p.into_vec(),
            Err(e) => {
                let why = format!("verified but not a notification: {e}");
                tracing::warn!(reason = %why, "notification refused");
                let received = Received {
                    raw: body.to_vec(),
                    verified: true,
                    verify_form: form,
                    fields: None,
                };
                self.store
                    .record_refused_notification(received, why)
                    .await?;
                return Ok(Answer::new(400, "400", "not a notification"));
            }
        };
        let mut refused = false;
        for n in &items {
            let received = Received {
                raw: body.to_vec(),
                verified: true,
                verify_form: form.clone(),
                fields: Some(fields_of(n)),
            };
            if n.mch_id != self.mch_id {
                let why = format!("mchId {:?} is not this merchant's", n.mch_id);
                tracing::warn!(msg_id = %n.original_msg_id, reason = %why, "notification refused");
                self.store
                    .record_refused_notification(received, why)
                    .await?;
                refused = true;
                continue;
            }
            let decide = decide(n, &self.resolve, crate::store::now_ms());
            let (outcome, row_id) = self.store.apply_notification(received, decide).await?;
            if let (NotifyOutcome::Applied, Some(id), Some(tx)) = (outcome, row_id, &self.applied) {
                let _ = tx.try_send(id);
            }
            match outcome {
                NotifyOutcome::Applied | NotifyOutcome::Duplicate | NotifyOutcome::Stale => {
                    tracing::debug!(msg_id = %n.original_msg_id, trx_state = %n.trx_state.as_str(), outcome = outcome.as_str(), "notification stored");
                }
                _ => {
                    tracing::info!(msg_id = %n.original_msg_id, trx_state = %n.trx_state.as_str(), outcome = outcome.as_str(), "notification stored, no row changed");
                }
            }
        }
        if refused {
            return Ok(Answer::new(400, "400", "mchId does not match"));
        }
        Ok(Answer::success())
    }
}

fn respond(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16, message: &str) -> Response<Full<Bytes>> {
    respond(status, Answer::new(status, "400", message).body())
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn handle(
    receiver: Arc<Receiver>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(error(405, "POST a notification"));
    }
    if !is_json(&req) {
        return Ok(error(415, "Content-Type must be application/json"));
    }
    let limit = receiver.limits.max_body;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(error(413, "body too large"));
    }
    let read = tokio::time::timeout(
        receiver.limits.body_timeout,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    let body = match read {
        Err(_) => return Ok(error(408, "body not received in time")),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Ok(error(413, "body too large"));
            }
            return Ok(error(400, "body could not be read"));
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if body.is_empty() {
        return Ok(error(400, "empty body"));
    }
    let answer = receiver.process(&body).await;
    Ok(respond(answer.status, answer.body()))
}

/// Serves notifications on `listener` until `shutdown` turns true (mini-redis style: bounded
/// connections, tracked tasks, graceful stop; in-flight requests finish their store write).
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = ConnectionLimits {
        max_connections: receiver.limits.max_connections,
        header_timeout: Some(receiver.limits.header_timeout),
        grace: Duration::from_secs(5),
        drain: Duration::from_secs(10),
    };
    serve_connections(listener, limits, shutdown, move |req| {
        handle(Arc::clone(&receiver), req)
    })
    .await;
}

/// A receiver serving in the background; `stop` ends it and waits for it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Binds `addr` and serves on it in a task.
    pub async fn start(addr: std::net::SocketAddr, receiver: Receiver) -> std::io::Result<Running> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::new(receiver), rx));
        Ok(Running { addr, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
