//! The simulator's HTTP server (hyper 1, HTTP/1.1): routing, steps 1–8 of the validation
//! order of reference §11, and the request- and response-side faults. Steps 9–10 (each
//! operation's fields and handler, §5–§7) are in `ops`, called under the same state lock.
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
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use super::faults::{self, FaultConfig};
use super::state::{MerchantStatus, State};
use super::{
    admin, ops, RequestRecord, Shared, Tunables, BASE_PATH, MAX_BODY_BYTES, MAX_CONNECTIONS,
};
use crate::server::accept::{serve_connections, ConnectionLimits};
use crate::starpay::codes::Code;
use crate::starpay::model::{self, HealthResponse};
use crate::starpay::sign::{self, Member, SplitEnvelope};

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
    let limits = ConnectionLimits {
        max_connections: MAX_CONNECTIONS,
        header_timeout: None,
        grace: Duration::from_secs(2),
        drain: Duration::from_secs(3),
    };
    let shutdown = shared.shutdown.clone();
    serve_connections(listener, limits, shutdown, move |req| {
        handle(Arc::clone(&shared), req)
    })
    .await;
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
pub(super) enum Outcome {
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
pub(super) struct Ctx {
    pub mch_id: Option<String>,
    pub msg_id: Option<String>,
    pub service: Option<String>,
    /// `mchId/msgId#n` or `seq#N` (see `faults`).
    pub key: String,
    /// How many requests carried this msgId before this one.
    pub occurrence: u32,
    /// The operation (reference numbering), once the (path, service) pair is known.
    pub section: Option<&'static str>,
    /// Hex SHA-256 of the `request` bytes as received.
    pub request_sha256: Option<String>,
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

pub(super) fn error_outcome(ctx: &Ctx, code: &str, message: impl Into<String>) -> Outcome {
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

pub(super) fn ok_outcome<T: Serialize>(value: &T) -> Outcome {
    Outcome::Answer {
        payload: serde_json::to_vec(value).unwrap_or_default(),
        code: "200".into(),
        drop_after_commit: None,
    }
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

/// Reference §11 validation order, then the operation's handler (`ops`). Synchronous: takes the
/// state lock once for steps 5–10 so two requests with one msgId cannot both pass step 8.
fn process(shared: &Shared, t: &Tunables, rel: &str, body: &[u8], ctx: &mut Ctx) -> Outcome {
    // Every step either passes or ends the request with its answer (`Err`): both are answers.
    match steps(shared, t, rel, body, ctx) {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// The steps of `process` in order; `Err` is the answer of the step that stopped the request.
fn steps(
    shared: &Shared,
    t: &Tunables,
    rel: &str,
    body: &[u8],
    ctx: &mut Ctx,
) -> Result<Outcome, Outcome> {
    let parsed = read_envelope(shared, rel, body, ctx);
    // Request-side faults, keyed by what step 1 learned (nothing is processed after them).
    let f: &FaultConfig = &t.faults;
    let in_scope = f.faults_on.covers(ctx.section);
    if in_scope && faults::roll(t.seed, "reset_before", &ctx.key, f.reset_before) {
        return Err(Outcome::Reset);
    }
    if in_scope && faults::roll(t.seed, "http_502", &ctx.key, f.http_502) {
        return Err(Outcome::BadGateway);
    }
    let (split, map) = require_signature_member(parsed, body, ctx)?;
    verify_signature(shared, ctx, &split, &map)?;
    let mch_id = ctx.mch_id.clone().unwrap_or_default();
    let now = shared.clock.now_ms();
    let mut state = shared.state();
    let route = admit(shared, t, &mut state, ctx, rel, &map)?;
    // Step 9: field validation.
    let op = ops::Op::parse(shared, route.section, &map)
        .map_err(|field| error_outcome(ctx, "412", format!("Illegal parameter: {field}")))?;
    // Step 10: business processing; the msgId is consumed from here on.
    let msg_id = ctx.msg_id.clone().unwrap_or_default();
    state.consume(&mch_id, &msg_id);
    Ok(op.apply(&mut ops::Apply {
        shared,
        t,
        state: &mut state,
        ctx,
        service: route.service,
        mch_id: &mch_id,
        msg_id: &msg_id,
        now,
    }))
}

/// Step 1, first half: an envelope whose `request` is an object (or a string holding one).
/// Records what it can learn for the request log and the fault key (`mchId/msgId#n`, which
/// counts this msgId as seen), whether or not the request goes on.
fn read_envelope<'b>(
    shared: &Shared,
    rel: &str,
    body: &'b [u8],
    ctx: &mut Ctx,
) -> Option<(SplitEnvelope<'b>, Map<String, Value>)> {
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
    parsed
}

/// Step 1, second half: the envelope must have a `signature` member (else `400`).
fn require_signature_member<'b>(
    parsed: Option<(SplitEnvelope<'b>, Map<String, Value>)>,
    body: &[u8],
    ctx: &Ctx,
) -> Result<(SplitEnvelope<'b>, Map<String, Value>), Outcome> {
    // `split_envelope` reports a non-string signature as absent; only then tell "missing"
    // (400) from "present but unusable" (401) with a second look at the body.
    let signature_present = parsed.as_ref().is_some_and(|(s, _)| s.signature.is_some())
        || serde_json::from_slice::<TopLevel>(body)
            .ok()
            .is_some_and(|t| t.signature.is_some());
    parsed
        .filter(|_| signature_present)
        .ok_or_else(|| error_outcome(ctx, "400", "Bad request"))
}

/// Steps 2–4 (no state lock): a known merchant, a signature of its key's length, and a
/// signature that verifies over the raw bytes (lenient mode: also the compact and sorted
/// re-serializations).
fn verify_signature(
    shared: &Shared,
    ctx: &Ctx,
    split: &SplitEnvelope<'_>,
    map: &Map<String, Value>,
) -> Result<(), Outcome> {
    // Step 2: known merchant.
    let Some(key) = ctx.mch_id.as_ref().and_then(|m| shared.merchant_key(m)) else {
        return Err(error_outcome(ctx, "410", "Configuration error"));
    };
    // Step 3: a signature of the key's length.
    let sig = split
        .signature
        .as_deref()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .filter(|s| s.len() * 8 == key.bits());
    let Some(sig) = sig else {
        return Err(error_outcome(ctx, "401", "Invalid signature"));
    };
    // Step 4: strict raw bytes (lenient: also the compact and sorted re-serializations).
    let mut verified = key.verify_raw(split.signed_text.as_bytes(), &sig).is_ok();
    if !verified && shared.config.lenient_signatures {
        let compact = serde_json::to_vec(map).unwrap_or_default();
        let sorted: std::collections::BTreeMap<&String, &Value> = map.iter().collect();
        let sorted = serde_json::to_vec(&sorted).unwrap_or_default();
        verified = key.verify_raw(&compact, &sig).is_ok() || key.verify_raw(&sorted, &sig).is_ok();
    }
    if !verified {
        return Err(error_outcome(ctx, "402", "Verify signature failed"));
    }
    Ok(())
}

/// Steps 5–8, under the state lock: merchant status, the (path, service) pair and the
/// merchant's access to it, the rate limit (with the `rate_406` fault and the `0900`
/// scenario), and msgId reuse. Returns the route the request is for.
fn admit(
    shared: &Shared,
    t: &Tunables,
    state: &mut State,
    ctx: &Ctx,
    rel: &str,
    map: &Map<String, Value>,
) -> Result<&'static model::Route, Outcome> {
    let f: &FaultConfig = &t.faults;
    let in_scope = f.faults_on.covers(ctx.section);
    let mch_id = ctx.mch_id.clone().unwrap_or_default();
    // Step 5: merchant status.
    let Some(merchant) = state.merchants.get(&mch_id) else {
        return Err(error_outcome(ctx, "410", "Configuration error"));
    };
    if merchant.status == MerchantStatus::Suspended {
        return Err(error_outcome(ctx, "414", "Invalid merchant status"));
    }
    // Step 6: (path, service) pair, then whether the merchant has it.
    let Some(route) = ctx
        .service
        .as_deref()
        .and_then(|s| model::find_route(rel, s))
    else {
        return Err(error_outcome(ctx, "412", "Illegal parameter: service"));
    };
    if !merchant.service_enabled(route.service) {
        return Err(error_outcome(ctx, "411", "Lack of configuration"));
    }
    // Step 7: rate limit, the 406 fault, and the `0900` scenario.
    let acct_no = map.get("acctNo").and_then(Value::as_str).unwrap_or("");
    let first_0900 = acct_no.ends_with("0900") && ctx.occurrence == 0 && is_create(route.section);
    if !shared.take_token(&mch_id, t.rate_limit_per_sec, t.rate_limit_burst)
        || (in_scope && faults::roll(t.seed, "rate_406", &ctx.key, f.rate_406))
        || first_0900
    {
        return Err(error_outcome(ctx, "406", "Requests are too frequent"));
    }
    // Step 8: repeated msgId — no side effect besides counting it for its order.
    if let Some(id) = ctx.msg_id.as_deref() {
        if state.is_consumed(&mch_id, id) {
            if is_create(route.section) {
                state.count_repeated_create(&mch_id, id);
            }
            return Err(error_outcome(ctx, "403", "Repeated msgId"));
        }
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_changes_one_char() {
        let s = "QUJDREVGR0hJSktMTU5PUA==";
        let c = corrupt(s);
        assert_ne!(s, c);
        assert_eq!(s.len(), c.len());
    }
}
