//! The simulator's HTTP server (hyper 1, HTTP/1.1): routing, the validation order of
//! reference §11, the endpoints of §5–§7, and the response-side faults.
//!
//! Owns: the listener and its connection tasks. A service that returns `Err` makes hyper close
//! the connection without writing a response — that is how commit-then-drop and connection
//! resets are produced. Every envelope answer is HTTP 200, signed with the platform key over
//! the compact JSON of the model struct (documented field order, reference §3.4).
//!
//! Must not: hold the state lock across `.await`; sleep in simulated time (only latency and
//! hang faults sleep, in real time, and both give way to shutdown).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::faults::{self, FaultConfig};
use super::state::{MerchantStatus, NewDynamicQr, NewPayout, Order, OrderKind, Plan, State};
use super::{admin, RequestRecord, Shared, Tunables, BASE_PATH, MAX_BODY_BYTES, MAX_CONNECTIONS};
use crate::domain::{Centavos, MsgId, TrxState};
use crate::starpay::codes::Code;
use crate::starpay::model::{self, *};
use crate::starpay::sign::{self, Member};

/// Returned by the service to make hyper drop the connection with no response.
#[derive(Debug)]
pub struct DropConnection(pub &'static str);

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection dropped on purpose ({})", self.0)
    }
}

impl std::error::Error for DropConnection {}

pub type HttpResponse = Response<Full<Bytes>>;

/// Accept loop (mini-redis style): bounded connections, tracked tasks, graceful stop.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut shutdown = shared.shutdown.clone();
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut conn_shutdown = shared.shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let svc_shared = Arc::clone(&shared);
            let service = service_fn(move |req| handle(Arc::clone(&svc_shared), req));
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                _ = conn_shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        connections.shutdown().await;
    }
}

pub fn plain(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<HttpResponse, DropConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Some(route) = path.strip_prefix("/_sim/") {
        let route = route.to_string();
        let body = read_body(req.into_body()).await.unwrap_or_default();
        return Ok(admin::handle(&shared, &method, &route, &query, &body));
    }
    let Some(rel) = path.strip_prefix(BASE_PATH) else {
        return Ok(plain(StatusCode::NOT_FOUND, "text/plain", "Not Found"));
    };
    if rel == model::PATH_HEALTH && method == Method::GET {
        let seq = shared.request_seq.fetch_add(1, Ordering::Relaxed);
        record_simple(&shared, seq, "GET", &path, "200", 200);
        let body = serde_json::to_vec(&HealthResponse {
            code: Code::new("200"),
            message: "success".into(),
        })
        .unwrap_or_default();
        return Ok(plain(StatusCode::OK, "application/json", body));
    }
    if method != Method::POST || !model::is_known_path(rel) {
        return Ok(plain(StatusCode::NOT_FOUND, "text/plain", "Not Found"));
    }
    let rel = rel.to_string();
    let body = match read_body(req.into_body()).await {
        Some(b) => b,
        // Too large or broken body: answered as a malformed request below.
        None => Bytes::new(),
    };
    api(shared, &path, &rel, body).await
}

fn record_simple(shared: &Shared, seq: u64, method: &str, path: &str, code: &str, status: u16) {
    let now = shared.clock.now_ms();
    let arrival = shared.trx_date(now);
    shared.record(RequestRecord {
        seq,
        arrival_ms: now,
        arrival,
        method: method.into(),
        path: path.into(),
        service: None,
        mch_id: None,
        msg_id: None,
        code: Some(code.into()),
        http_status: Some(status),
        fault: None,
        request_sha256: None,
    });
}

/// What processing decided; the async part (faults, signing, sleeping) happens after.
enum Outcome {
    /// Sign and send this `response` payload (compact JSON in documented order).
    Answer {
        payload: Vec<u8>,
        code: String,
        /// Close the connection after committing instead of answering.
        drop_after_commit: Option<&'static str>,
    },
    Reset,
    BadGateway,
}

/// Facts gathered about a request, for the record and the fault keys.
#[derive(Default)]
struct Ctx {
    mch_id: Option<String>,
    msg_id: Option<String>,
    service: Option<String>,
    /// `mchId/msgId#n` or `seq#N` (see `faults`).
    key: String,
    /// How many requests carried this msgId before this one.
    occurrence: u32,
    /// The operation (reference numbering), once the (path, service) pair is known.
    section: Option<&'static str>,
    /// Hex SHA-256 of the `request` bytes as received.
    request_sha256: Option<String>,
}

/// Error answer: the first four members shared by every response layout.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mch_id: Option<&'a str>,
}

fn error_outcome(ctx: &Ctx, code: &str, message: impl Into<String>) -> Outcome {
    let body = ErrorBody {
        code,
        message: message.into(),
        msg_id: ctx.msg_id.as_deref(),
        mch_id: ctx.mch_id.as_deref(),
    };
    Outcome::Answer {
        payload: serde_json::to_vec(&body).unwrap_or_default(),
        code: code.to_string(),
        drop_after_commit: None,
    }
}

fn ok_outcome<T: Serialize>(value: &T) -> Outcome {
    Outcome::Answer {
        payload: serde_json::to_vec(value).unwrap_or_default(),
        code: "200".into(),
        drop_after_commit: None,
    }
}

fn std_message(code: &str) -> &'static str {
    Code::new(code).entry().map_or("error", |e| e.message)
}

async fn api(
    shared: Arc<Shared>,
    path: &str,
    rel: &str,
    body: Bytes,
) -> Result<HttpResponse, DropConnection> {
    let seq = shared.request_seq.fetch_add(1, Ordering::Relaxed);
    let arrival_ms = shared.clock.now_ms();
    let tunables = shared.tunables();
    let mut ctx = Ctx {
        key: format!("seq#{seq}"),
        ..Ctx::default()
    };
    let outcome = process(&shared, &tunables, rel, &body, &mut ctx);
    let seed = tunables.seed;
    let f = &tunables.faults;
    let mut record = RequestRecord {
        seq,
        arrival_ms,
        arrival: shared.trx_date(arrival_ms),
        method: "POST".into(),
        path: path.to_string(),
        service: ctx.service.clone(),
        mch_id: ctx.mch_id.clone(),
        msg_id: ctx.msg_id.clone(),
        code: None,
        http_status: None,
        fault: None,
        request_sha256: ctx.request_sha256.clone(),
    };
    let latency = faults::latency_ms(seed, f, &ctx.key);
    let mut shutdown = shared.shutdown.clone();
    match outcome {
        Outcome::Reset => {
            record.fault = Some("reset_before".into());
            shared.record(record);
            Err(DropConnection("reset_before"))
        }
        Outcome::BadGateway => {
            record.fault = Some("http_502".into());
            record.http_status = Some(502);
            shared.record(record);
            sleep_ms(latency, &mut shutdown).await;
            Ok(plain(
                StatusCode::BAD_GATEWAY,
                "text/html",
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
            ))
        }
        Outcome::Answer {
            payload,
            code,
            drop_after_commit,
        } => {
            record.code = Some(code);
            if let Some(reason) = drop_after_commit {
                record.fault = Some(reason.into());
                shared.record(record);
                sleep_ms(latency, &mut shutdown).await;
                return Err(DropConnection(reason));
            }
            let hang =
                f.faults_on.covers(ctx.section) && faults::roll(seed, "hang", &ctx.key, f.hang);
            let (wire, fault) = frame(&shared, &tunables, &ctx, &payload);
            record.fault = if hang { Some("hang".into()) } else { fault };
            record.http_status = Some(200);
            shared.record(record);
            let wait = if hang {
                latency.saturating_add(f.hang_secs.saturating_mul(1_000))
            } else {
                latency
            };
            if !sleep_ms(wait, &mut shutdown).await {
                return Err(DropConnection("shutdown"));
            }
            Ok(plain(StatusCode::OK, "application/json", wire))
        }
    }
}

/// Sleeps real milliseconds; `false` if shutdown came first.
async fn sleep_ms(ms: u64, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if ms == 0 {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
        _ = shutdown.changed() => false,
    }
}

/// Signs the payload and frames the envelope, applying the response-side faults.
fn frame(shared: &Shared, t: &Tunables, ctx: &Ctx, payload: &[u8]) -> (Vec<u8>, Option<String>) {
    let f = &t.faults;
    let key = ctx.key.as_str();
    let in_scope = f.faults_on.covers(ctx.section);
    let as_string = shared.config.response_as_string
        || (in_scope && faults::roll(t.seed, "response_as_string", key, f.response_as_string));
    let unsigned = in_scope && faults::roll(t.seed, "unsigned", key, f.unsigned);
    let bad = in_scope && !unsigned && faults::roll(t.seed, "bad_signature", key, f.bad_signature);
    // A validly signed answer about another payout: the echo fields are changed before signing.
    let wrong_id = in_scope
        && !unsigned
        && !bad
        && faults::roll(t.seed, "echo_wrong_msg_id", key, f.echo_wrong_msg_id);
    let wrong_amount = in_scope
        && !unsigned
        && !bad
        && !wrong_id
        && faults::roll(t.seed, "echo_wrong_amount", key, f.echo_wrong_amount);
    let mut echo_fault = None;
    let changed;
    let payload: &[u8] = if wrong_id || wrong_amount {
        match change_echo(payload, wrong_id) {
            Some(p) => {
                echo_fault = Some(if wrong_id {
                    "echo_wrong_msg_id"
                } else {
                    "echo_wrong_amount"
                });
                changed = p;
                &changed
            }
            // Nothing to change (no msgId / no trxAmount in this answer): sent as it is.
            None => payload,
        }
    } else {
        payload
    };
    let value: Vec<u8> = if as_string {
        let text = String::from_utf8_lossy(payload);
        serde_json::to_vec(&text).unwrap_or_default()
    } else {
        payload.to_vec()
    };
    if unsigned {
        let mut out = b"{\"response\":".to_vec();
        out.extend_from_slice(&value);
        out.push(b'}');
        return (out, Some("unsigned".into()));
    }
    let mut signature = match shared.platform_key.sign_b64(payload) {
        Ok(s) => s,
        Err(_) => {
            tracing::error!("simulator could not sign a response");
            String::new()
        }
    };
    if bad {
        signature = corrupt(&signature);
    }
    let fault = if bad {
        Some("bad_signature".into())
    } else if let Some(name) = echo_fault {
        Some(name.into())
    } else if as_string && !shared.config.response_as_string {
        Some("response_as_string".into())
    } else {
        None
    };
    (sign::envelope_bytes("response", &value, &signature), fault)
}

/// The payload with `msgId` (and `originalMsgId`, if present) changed to another valid msgId,
/// or `trxAmount` one centavo higher; field order kept. `None` if the field is absent.
fn change_echo(payload: &[u8], msg_id: bool) -> Option<Vec<u8>> {
    let mut map: Map<String, Value> = serde_json::from_slice(payload).ok()?;
    let mut changed = false;
    if msg_id {
        for k in ["msgId", "originalMsgId"] {
            if let Some(Value::String(s)) = map.get_mut(k) {
                // Same length and alphabet, different last character.
                let last = if s.ends_with('X') { 'Y' } else { 'X' };
                s.pop();
                s.push(last);
                changed = true;
            }
        }
    } else {
        match map.get_mut("trxAmount") {
            Some(Value::Number(n)) => {
                *n = (n.as_i64()? + 1).into();
                changed = true;
            }
            Some(Value::String(s)) => {
                *s = (s.parse::<i64>().ok()? + 1).to_string();
                changed = true;
            }
            _ => {}
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&map).ok()
}

/// Changes one Base64 character so the signature stays well-formed but does not verify.
fn corrupt(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    if let Some(c) = chars.get_mut(10) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

fn is_create(section: &str) -> bool {
    matches!(section, "5.2" | "5.3" | "5.8" | "5.9" | "6.1" | "6.4")
}

#[derive(serde::Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow, default)]
    signature: Option<&'a RawValue>,
}

/// Reference §11 validation order, then business processing. Synchronous: takes the state
/// lock once for steps 5–10 so two requests with one msgId cannot both pass step 8.
fn process(shared: &Shared, t: &Tunables, rel: &str, body: &[u8], ctx: &mut Ctx) -> Outcome {
    // Step 1: an envelope whose `request` is an object (or a string holding one) and which
    // has a `signature` member.
    let split = sign::split_envelope(body, Member::Request);
    let parsed = split.ok().and_then(|split| {
        let map: Map<String, Value> = serde_json::from_str(&split.signed_text).ok()?;
        Some((split, map))
    });
    if let Some((split, map)) = &parsed {
        use sha2::Digest as _;
        ctx.request_sha256 = Some(
            sha2::Sha256::digest(split.signed_text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
        ctx.mch_id = map.get("mchId").and_then(Value::as_str).map(str::to_string);
        ctx.msg_id = map.get("msgId").and_then(Value::as_str).map(str::to_string);
        ctx.service = map
            .get("service")
            .and_then(Value::as_str)
            .map(str::to_string);
        ctx.section = ctx
            .service
            .as_deref()
            .and_then(|s| model::find_route(rel, s))
            .map(|r| r.section);
    }
    if let (Some(m), Some(id)) = (&ctx.mch_id, &ctx.msg_id) {
        ctx.occurrence = shared.state().note_seen(m, id);
        ctx.key = format!("{m}/{id}#{}", ctx.occurrence);
    }
    let f: &FaultConfig = &t.faults;
    let in_scope = f.faults_on.covers(ctx.section);
    if in_scope && faults::roll(t.seed, "reset_before", &ctx.key, f.reset_before) {
        return Outcome::Reset;
    }
    if in_scope && faults::roll(t.seed, "http_502", &ctx.key, f.http_502) {
        return Outcome::BadGateway;
    }
    // `split_envelope` reports a non-string signature as absent; only then tell "missing"
    // (400) from "present but unusable" (401) with a second look at the body.
    let signature_present = parsed.as_ref().is_some_and(|(s, _)| s.signature.is_some())
        || serde_json::from_slice::<TopLevel>(body)
            .ok()
            .is_some_and(|t| t.signature.is_some());
    let Some((split, map)) = parsed.filter(|_| signature_present) else {
        return error_outcome(ctx, "400", "Bad request");
    };

    // Step 2: known merchant.
    let Some(key) = ctx.mch_id.as_ref().and_then(|m| shared.merchant_key(m)) else {
        return error_outcome(ctx, "410", "Configuration error");
    };
    // Step 3: a signature of the key's length.
    let sig = split
        .signature
        .as_deref()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .filter(|s| s.len() * 8 == key.bits());
    let Some(sig) = sig else {
        return error_outcome(ctx, "401", "Invalid signature");
    };
    // Step 4: strict raw bytes (lenient: also the compact and sorted re-serializations).
    let mut verified = key.verify_raw(split.signed_text.as_bytes(), &sig).is_ok();
    if !verified && shared.config.lenient_signatures {
        let compact = serde_json::to_vec(&map).unwrap_or_default();
        let sorted: std::collections::BTreeMap<&String, &Value> = map.iter().collect();
        let sorted = serde_json::to_vec(&sorted).unwrap_or_default();
        verified = key.verify_raw(&compact, &sig).is_ok() || key.verify_raw(&sorted, &sig).is_ok();
    }
    if !verified {
        return error_outcome(ctx, "402", "Verify signature failed");
    }
    let mch_id = ctx.mch_id.clone().unwrap_or_default();
    let now = shared.clock.now_ms();
    let mut state = shared.state();
    // Step 5: merchant status.
    let Some(merchant) = state.merchants.get(&mch_id) else {
        return error_outcome(ctx, "410", "Configuration error");
    };
    if merchant.status == MerchantStatus::Suspended {
        return error_outcome(ctx, "414", "Invalid merchant status");
    }
    // Step 6: (path, service) pair, then whether the merchant has it.
    let Some(route) = ctx
        .service
        .as_deref()
        .and_then(|s| model::find_route(rel, s))
    else {
        return error_outcome(ctx, "412", "Illegal parameter: service");
    };
    if !merchant.service_enabled(route.service) {
        return error_outcome(ctx, "411", "Lack of configuration");
    }
    // Step 7: rate limit, the 406 fault, and the `0900` scenario.
    let acct_no = map.get("acctNo").and_then(Value::as_str).unwrap_or("");
    let first_0900 = acct_no.ends_with("0900") && ctx.occurrence == 0 && is_create(route.section);
    if !shared.take_token(&mch_id, t.rate_limit_per_sec, t.rate_limit_burst)
        || (in_scope && faults::roll(t.seed, "rate_406", &ctx.key, f.rate_406))
        || first_0900
    {
        return error_outcome(ctx, "406", "Requests are too frequent");
    }
    // Step 8: repeated msgId — no side effect besides counting it for its order.
    if let Some(id) = ctx.msg_id.as_deref() {
        if state.is_consumed(&mch_id, id) {
            if is_create(route.section) {
                state.count_repeated_create(&mch_id, id);
            }
            return error_outcome(ctx, "403", "Repeated msgId");
        }
    }
    // Step 9: field validation.
    let fields = Fields(&map);
    let checked = match validate(shared, route.section, &fields) {
        Ok(c) => c,
        Err(field) => return error_outcome(ctx, "412", format!("Illegal parameter: {field}")),
    };
    // Step 10: business processing; the msgId is consumed from here on.
    let msg_id = ctx.msg_id.clone().unwrap_or_default();
    state.consume(&mch_id, &msg_id);
    business(
        shared,
        t,
        &mut state,
        ctx,
        route.service,
        &mch_id,
        &msg_id,
        checked,
        now,
    )
}

/// Validated request content per operation.
enum Checked {
    BankList,
    Payout {
        acct_no: String,
        amount: Centavos,
        notify_url: Option<String>,
    },
    Query {
        original: String,
    },
    Balance {
        repayment: bool,
    },
    Scan(super::QrFixture),
    DynamicQr {
        device_info: String,
        amount: Centavos,
        notify_url: String,
        expire_at: Option<String>,
    },
    StaticQr {
        device_info: String,
        display_name: String,
        notify_url: String,
    },
    StaticStatus {
        device_info: String,
        status: QrStatus,
    },
    RefNo(String),
    Cancel {
        original: String,
    },
}

/// Field access returning the offending field's name on failure.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn req(&self, k: &'static str, max: usize) -> Result<String, &'static str> {
        match self.0.get(k) {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(s.clone()),
            _ => Err(k),
        }
    }

    fn opt(&self, k: &'static str, max: usize) -> Result<Option<String>, &'static str> {
        match self.0.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
            _ => Err(k),
        }
    }

    fn alnum(&self, k: &'static str, max: usize) -> Result<String, &'static str> {
        let s = self.req(k, max)?;
        if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(s)
        } else {
            Err(k)
        }
    }

    fn url(&self, k: &'static str) -> Result<Option<String>, &'static str> {
        let u = self.opt(k, 256)?;
        match &u {
            Some(s) if !(s.starts_with("http://") || s.starts_with("https://")) => Err(k),
            _ => Ok(u),
        }
    }

    /// Integer, or a string of digits; at least 1, at most `cap`.
    fn amount(&self, cap: Option<i64>) -> Result<Centavos, &'static str> {
        let k = "trxAmount";
        let v = match self.0.get(k) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<i64>().ok()
            }
            _ => None,
        };
        match v {
            Some(a) if a >= 1 && cap.is_none_or(|c| a <= c) => Ok(Centavos::new(a)),
            _ => Err(k),
        }
    }

    fn currency(&self) -> Result<(), &'static str> {
        match self.0.get("currency") {
            Some(Value::String(s)) if s == "PHP" => Ok(()),
            _ => Err("currency"),
        }
    }

    fn names(&self) -> Result<(), &'static str> {
        self.req("acctName", 64)?;
        match self.0.get("acctMiddleName") {
            Some(Value::String(s)) if s.chars().count() <= 64 => {}
            _ => return Err("acctMiddleName"),
        }
        self.req("acctLastName", 64)?;
        Ok(())
    }
}

fn manila_stamp_ok(s: &str) -> bool {
    s.len() == 14
        && s.bytes().all(|b| b.is_ascii_digit())
        && chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").is_ok()
}

fn validate(shared: &Shared, section: &str, f: &Fields<'_>) -> Result<Checked, &'static str> {
    let msg_id = f.0.get("msgId").and_then(Value::as_str).unwrap_or("");
    if MsgId::new(msg_id).is_err() {
        return Err("msgId");
    }
    let cap = Some(crate::domain::money::INSTAPAY_CAP.get());
    let qr = |f: &Fields<'_>, want: &str| -> Result<super::QrFixture, &'static str> {
        let code = f.req("qrCode", 512)?;
        shared
            .config
            .qr_fixtures
            .iter()
            .find(|q| q.qr_code == code && (want.is_empty() || q.qr_type == want))
            .cloned()
            .ok_or("qrCode")
    };
    Ok(match section {
        "5.1" => Checked::BankList,
        "5.2" | "5.3" => {
            let acct_no = f.alnum("acctNo", 34)?;
            f.names()?;
            if section == "5.2" {
                let bank = f.req("receivingBank", 128)?;
                if !shared.banks.iter().any(|b| b.bank_name == bank) {
                    return Err("receivingBank");
                }
            }
            let amount = f.amount(if section == "5.2" { cap } else { None })?;
            f.currency()?;
            f.opt("attach", 92)?;
            let notify_url = f.url("notifyUrl")?;
            Checked::Payout {
                acct_no,
                amount,
                notify_url,
            }
        }
        "5.8" | "5.9" => {
            let fixture = qr(f, if section == "5.8" { "P2M" } else { "P2P" })?;
            let amount = f.amount(cap)?;
            f.currency()?;
            f.opt("attach", 92)?;
            let notify_url = f.url("notifyUrl")?;
            Checked::Payout {
                acct_no: fixture.acct_no,
                amount,
                notify_url,
            }
        }
        "5.4" | "6.2" | "6.9" => {
            let original = f.alnum("originalMsgId", 32)?;
            if section == "6.9" {
                Checked::Cancel { original }
            } else {
                Checked::Query { original }
            }
        }
        "5.6" => Checked::Balance { repayment: false },
        "6.6" => Checked::Balance { repayment: true },
        "5.7" => Checked::Scan(qr(f, "")?),
        "6.1" => {
            let notify_url = f.url("notifyUrl")?.ok_or("notifyUrl")?;
            let device_info = f.req("deviceInfo", 32)?;
            let amount = f.amount(None)?;
            f.currency()?;
            f.opt("attach", 92)?;
            if let Some(s) = f.opt("timeStart", 14)? {
                if !manila_stamp_ok(&s) {
                    return Err("timeStart");
                }
            }
            let expire_at = f.opt("timeExpire", 14)?;
            if let Some(s) = &expire_at {
                if !manila_stamp_ok(s) {
                    return Err("timeExpire");
                }
            }
            f.opt("displayName", 64)?;
            Checked::DynamicQr {
                device_info,
                amount,
                notify_url,
                expire_at,
            }
        }
        "6.4" => {
            let device_info = f.req("deviceInfo", 32)?;
            let display_name = f.req("displayName", 64)?;
            let notify_url = f.url("notifyUrl")?.ok_or("notifyUrl")?;
            Checked::StaticQr {
                device_info,
                display_name,
                notify_url,
            }
        }
        "6.7" => {
            let device_info = f.req("deviceInfo", 32)?;
            let status = match f.0.get("qrStatus").and_then(Value::as_str) {
                Some("ENABLE") => QrStatus::Enable,
                Some("DISABLE") => QrStatus::Disable,
                _ => return Err("qrStatus"),
            };
            Checked::StaticStatus {
                device_info,
                status,
            }
        }
        "6.8" => Checked::RefNo(f.req("refNo", 32)?),
        _ => return Err("service"),
    })
}

/// The planned outcome of a payout: the `acctNo` suffix table first (reference §11), then the
/// seeded `payout_fail` / `late_reversal` faults. Keyed by (mchId, msgId) so it never depends
/// on timing.
pub fn plan_for(acct_no: &str, seed: u64, f: &FaultConfig, key: &str) -> (Plan, bool) {
    let suffix = acct_no.get(acct_no.len().saturating_sub(4)..).unwrap_or("");
    let plan = match suffix {
        "0401" => Plan::Fail("AC01".into()),
        "0404" => Plan::Fail("AC04".into()),
        "0504" => Plan::TimeoutThenSuccess,
        "0505" => Plan::TimeoutThenFail,
        "0700" => Plan::SuccessThenReverse,
        "0999" => Plan::Forever,
        _ if faults::roll(seed, "payout_fail", key, f.payout_fail) => {
            let codes = faults::RANDOM_FAIL_CODES;
            let i = faults::pick(seed, "payout_fail_code", key, codes.len() as u64);
            Plan::Fail(codes[usize::try_from(i).unwrap_or(0) % codes.len()].to_string())
        }
        _ => Plan::Success,
    };
    let late = plan == Plan::Success && faults::roll(seed, "late_reversal", key, f.late_reversal);
    (plan, late)
}

fn query_response(o: &Order, ctx: &Ctx) -> QueryResponse {
    QueryResponse {
        code: Code::new("200"),
        message: "success".into(),
        msg_id: ctx.msg_id.clone(),
        mch_id: ctx.mch_id.clone(),
        trx_date: Some(o.trx_date.clone()),
        trx_amount: Some(o.trx_amount),
        trx_state: Some(o.state.clone()),
        original_msg_id: Some(o.msg_id.clone()),
        order_no: Some(o.order_no.clone()),
        ref_no: o.ref_no.clone(),
        error_code: o.error_code.clone(),
        error_message: o.error_message.clone(),
    }
}

fn answer_query(o: &Order, ctx: &Ctx) -> Outcome {
    if o.unanswerable {
        Outcome::BadGateway
    } else {
        ok_outcome(&query_response(o, ctx))
    }
}

fn not_found(ctx: &Ctx) -> Outcome {
    error_outcome(ctx, "404", std_message("404"))
}

/// Manila `yyyyMMddHHmmss` → simulated ms (clamped at 0).
fn expire_ms(state: &State, stamp: &str) -> Option<u64> {
    let naive = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").ok()?;
    let at = naive.and_local_timezone(super::state::manila()).single()?;
    let zero = state.manila_time(0);
    let ms = (at - zero).num_milliseconds();
    Some(u64::try_from(ms).unwrap_or(0))
}

#[allow(clippy::too_many_arguments)]
fn business(
    shared: &Shared,
    t: &Tunables,
    state: &mut State,
    ctx: &Ctx,
    service: &str,
    mch_id: &str,
    msg_id: &str,
    checked: Checked,
    now: u64,
) -> Outcome {
    let f = &t.faults;
    let order_key = format!("{mch_id}/{msg_id}");
    match checked {
        Checked::BankList => ok_outcome(&BankListResponse {
            code: Code::new("200"),
            message: "success".into(),
            msg_id: ctx.msg_id.clone(),
            mch_id: ctx.mch_id.clone(),
            banks: Some(shared.banks.clone()),
        }),
        Checked::Payout {
            acct_no,
            amount,
            notify_url,
        } => {
            let (plan, late_reversal) = plan_for(&acct_no, t.seed, f, &order_key);
            let jitter = if shared.config.settle_jitter_ms > 0 {
                faults::pick(
                    t.seed,
                    "settle_jitter",
                    &order_key,
                    shared.config.settle_jitter_ms + 1,
                )
            } else {
                0
            };
            let query_lag = if faults::roll(t.seed, "query_lag", &order_key, f.query_lag) {
                f.query_lag_secs.saturating_mul(1_000)
            } else {
                0
            };
            let drop = if acct_no.ends_with("0800") {
                Some("commit_then_drop (acctNo 0800)")
            } else if f.faults_on.covers(ctx.section)
                && faults::roll(t.seed, "commit_then_drop", &ctx.key, f.commit_then_drop)
            {
                Some("commit_then_drop")
            } else {
                None
            };
            let index = state.create_payout(
                NewPayout {
                    mch_id: mch_id.to_string(),
                    msg_id: msg_id.to_string(),
                    service: service.to_string(),
                    acct_no,
                    trx_amount: amount,
                    notify_url,
                    plan,
                    settle_after: shared.config.settle_delay_ms + jitter,
                    late_reversal,
                    query_lag,
                },
                now,
            );
            let o = &state.orders[index];
            let response = DisburseResponse {
                code: Code::new("200"),
                message: "success".into(),
                msg_id: ctx.msg_id.clone(),
                mch_id: ctx.mch_id.clone(),
                trx_date: Some(o.trx_date.clone()),
                trx_amount: Some(o.trx_amount),
                trx_state: Some(o.state.clone()),
                order_no: Some(o.order_no.clone()),
                error_code: o.error_code.clone().filter(|_| o.state == TrxState::Fail),
                error_message: o
                    .error_message
                    .clone()
                    .filter(|_| o.state == TrxState::Fail),
            };
            shared.wake.notify_one();
            match ok_outcome(&response) {
                Outcome::Answer { payload, code, .. } => Outcome::Answer {
                    payload,
                    code,
                    drop_after_commit: drop,
                },
                other => other,
            }
        }
        Checked::Query { original } => {
            let payout_query = service == DisburseQueryRequest::SERVICE;
            match state.find(mch_id, &original) {
                Some(o)
                    if payout_query
                        && o.kind == OrderKind::Payout
                        && o.query_visible_at_ms <= now =>
                {
                    answer_query(o, ctx)
                }
                Some(o) if !payout_query && o.kind != OrderKind::Payout => answer_query(o, ctx),
                _ => not_found(ctx),
            }
        }
        Checked::RefNo(ref_no) => match state.find_by_ref_no(mch_id, &ref_no) {
            Some(o) if o.kind != OrderKind::Payout => answer_query(o, ctx),
            _ => not_found(ctx),
        },
        Checked::Balance { repayment } => {
            let m = state.merchants.get(mch_id);
            let balance = m.map(|m| {
                if repayment {
                    m.repayment
                } else {
                    m.disbursement
                }
            });
            ok_outcome(&BalanceResponse {
                code: Code::new("200"),
                message: "success".into(),
                msg_id: ctx.msg_id.clone(),
                mch_id: ctx.mch_id.clone(),
                balance,
                currency: Some("PHP".into()),
            })
        }
        Checked::Scan(q) => ok_outcome(&ScanQrResponse {
            code: Code::new("200"),
            message: "success".into(),
            msg_id: ctx.msg_id.clone(),
            mch_id: ctx.mch_id.clone(),
            qr_type: Some(q.qr_type),
            acct_name: Some(q.acct_name),
            acct_no: Some(q.acct_no),
            receiving_bank: Some(q.receiving_bank),
            trx_amount: q.trx_amount.map(Centavos::new),
        }),
        Checked::DynamicQr {
            device_info,
            amount,
            notify_url,
            expire_at,
        } => {
            let default_expiry = now + shared.config.qr_expiry_secs.saturating_mul(1_000);
            let expire_at = expire_at
                .and_then(|s| expire_ms(state, &s))
                .unwrap_or(default_expiry);
            let index = state.create_dynamic_qr(
                NewDynamicQr {
                    mch_id: mch_id.to_string(),
                    msg_id: msg_id.to_string(),
                    service: service.to_string(),
                    device_info,
                    trx_amount: amount,
                    notify_url,
                    expire_at,
                },
                now,
            );
            let o = &state.orders[index];
            let response = RepaymentResponse {
                code: Code::new("200"),
                message: "success".into(),
                msg_id: ctx.msg_id.clone(),
                mch_id: ctx.mch_id.clone(),
                order_no: Some(o.order_no.clone()),
                code_url: Some(State::dynamic_code_url(o)),
                trx_amount: Some(o.trx_amount),
                trx_state: Some(o.state.clone()),
            };
            let drop = (f.faults_on.covers(ctx.section)
                && faults::roll(t.seed, "commit_then_drop", &ctx.key, f.commit_then_drop))
            .then_some("commit_then_drop");
            match ok_outcome(&response) {
                Outcome::Answer { payload, code, .. } => Outcome::Answer {
                    payload,
                    code,
                    drop_after_commit: drop,
                },
                other => other,
            }
        }
        Checked::StaticQr {
            device_info,
            display_name,
            notify_url,
        } => {
            let qr = state.generate_static_qr(mch_id, &device_info, &display_name, &notify_url);
            ok_outcome(&StaticQrResponse {
                code: Code::new("200"),
                message: "success".into(),
                msg_id: ctx.msg_id.clone(),
                mch_id: ctx.mch_id.clone(),
                device_info: Some(qr.device_info),
                code_url: Some(qr.code_url),
            })
        }
        Checked::StaticStatus {
            device_info,
            status,
        } => match state.set_static_qr_enabled(mch_id, &device_info, status == QrStatus::Enable) {
            Some(()) => ok_outcome(&StaticQrStatusResponse {
                code: Code::new("200"),
                message: "success".into(),
                msg_id: ctx.msg_id.clone(),
                mch_id: ctx.mch_id.clone(),
                device_info: Some(device_info),
                qr_status: Some(status),
            }),
            None => not_found(ctx),
        },
        Checked::Cancel { original } => match state.cancel_dynamic_qr(mch_id, &original, now) {
            Some(index) => {
                let o = &state.orders[index];
                ok_outcome(&CancelResponse {
                    code: Code::new("200"),
                    message: "success".into(),
                    msg_id: ctx.msg_id.clone(),
                    mch_id: ctx.mch_id.clone(),
                    original_msg_id: Some(o.msg_id.clone()),
                    order_no: Some(o.order_no.clone()),
                    trx_state: Some(o.state.clone()),
                })
            }
            None => not_found(ctx),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_table() {
        let f = FaultConfig::default();
        let p = |a: &str| plan_for(a, 1, &f, "k").0;
        assert_eq!(p("1230401"), Plan::Fail("AC01".into()));
        assert_eq!(p("0404"), Plan::Fail("AC04".into()));
        assert_eq!(p("990504"), Plan::TimeoutThenSuccess);
        assert_eq!(p("990505"), Plan::TimeoutThenFail);
        assert_eq!(p("990700"), Plan::SuccessThenReverse);
        assert_eq!(p("990999"), Plan::Forever);
        assert_eq!(p("991234"), Plan::Success);
        assert_eq!(p("1"), Plan::Success);
    }

    #[test]
    fn corrupt_changes_one_char() {
        let s = "QUJDREVGR0hJSktMTU5PUA==";
        let c = corrupt(s);
        assert_ne!(s, c);
        assert_eq!(s.len(), c.len());
    }
}
