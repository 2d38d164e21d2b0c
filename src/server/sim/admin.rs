//! Test-only control and ground-truth routes under `/_sim/` on the simulator's (loopback)
//! listener: unsigned, unauthenticated, never part of the Starpay API (reference §11
//! "Control API"). The same operations are on `SimHandle` for in-process tests.
//!
//! | Route | Effect |
//! |---|---|
//! | `GET /_sim/ledger` | every order, balances, static QRs (`LedgerSnapshot`) |
//! | `GET /_sim/requests` | every request received (`RequestRecord`) |
//! | `POST /_sim/reset` | forget everything; configured merchants, seed and faults again |
//! | `POST /_sim/advance?secs=N` | move simulated time forward |
//! | `POST /_sim/pay-dynamic?orderNo=…` | a payer pays a dynamic QR |
//! | `POST /_sim/pay-static?mchId=…&deviceInfo=…&amount=…` | a payer pays a static QR |
//! | `POST /_sim/force?orderNo=…&state=…[&errorCode=…]` | force a state |
//! | `POST /_sim/balance?mchId=…[&disbursement=…][&repayment=…]` | set balances (centavos) |
//! | `POST /_sim/merchant-status?mchId=…&status=ACTIVE\|SUSPENDED` | set merchant status |
//! | `POST /_sim/faults` (JSON `FaultConfig`, missing keys = off) | replace the faults |
//! | `POST /_sim/seed?seed=N` | change the seed |
//! | `POST /_sim/rate-limit?perSec=…&burst=…` | change the token bucket |
//!
//! Must not: be reachable from anything but loopback (the CLI refuses other listen addresses).

use std::collections::HashMap;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::http::{plain, HttpResponse};
use super::state::{ControlError, MerchantStatus, SimMillis, State};
use super::{FaultConfig, Shared};
use crate::domain::{Centavos, TrxState};

/// Runs one state change at the simulator's now, then wakes the notifier (the change may have
/// queued a notification).
fn change_then_wake<T>(shared: &Shared, change: impl FnOnce(&mut State, SimMillis) -> T) -> T {
    let now = shared.clock.now_ms();
    let result = change(&mut shared.state(), now);
    shared.wake.notify_one();
    result
}

pub(crate) fn pay_dynamic_qr(shared: &Shared, order_no: &str) -> Result<String, ControlError> {
    change_then_wake(shared, |s, now| {
        s.pay_dynamic_qr(order_no, now)
            .map(|i| s.orders[i].order_no.clone())
    })
}

pub(crate) fn pay_static_qr(
    shared: &Shared,
    mch_id: &str,
    device_info: &str,
    amount: Centavos,
) -> Result<String, ControlError> {
    change_then_wake(shared, |s, now| {
        s.pay_static_qr(mch_id, device_info, amount, now)
            .map(|i| s.orders[i].msg_id.clone())
    })
}

pub(crate) fn force_state(
    shared: &Shared,
    order_no: &str,
    state: TrxState,
    error_code: Option<&str>,
) -> Result<(), ControlError> {
    change_then_wake(shared, |s, now| {
        s.force_state(order_no, state, error_code, now).map(|_| ())
    })
}

fn json<T: serde::Serialize>(value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => plain(StatusCode::OK, "application/json", body),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

fn ok(detail: impl Into<String>) -> HttpResponse {
    json(&serde_json::json!({"ok": true, "detail": detail.into()}))
}

fn bad(detail: impl Into<String>) -> HttpResponse {
    let body = serde_json::json!({"ok": false, "error": detail.into()}).to_string();
    plain(StatusCode::BAD_REQUEST, "application/json", body)
}

fn control(r: Result<String, ControlError>) -> HttpResponse {
    match r {
        Ok(d) => ok(d),
        Err(e) => bad(e.to_string()),
    }
}

/// Dispatches one `/_sim/<route>` request.
///
/// Longer than ~100 lines on purpose: it is the route table of the module doc above, one short
/// arm per route (parse the query, call one `Shared`/`State` control operation, answer). Kept as
/// one flat `match` so each route and its parameter checks read side by side with that table;
/// splitting the arms into functions would only add a name per route.
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    route: &str,
    query: &str,
    body: &Bytes,
) -> HttpResponse {
    let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.get(k).map(String::as_str);
    let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    match (method, route) {
        (&Method::GET, "ledger") => json(&shared.ledger()),
        (&Method::GET, "requests") => json(&shared.requests()),
        (&Method::POST, "reset") => {
            shared.reset();
            ok("reset")
        }
        (&Method::POST, "advance") => match get("secs").and_then(|v| v.parse::<u64>().ok()) {
            Some(secs) => {
                shared.advance(secs);
                ok(format!("now {} ms", shared.clock.now_ms()))
            }
            None => bad("advance needs ?secs=N"),
        },
        (&Method::POST, "pay-dynamic") => match get("orderNo") {
            Some(order_no) => control(pay_dynamic_qr(shared, order_no)),
            None => bad("pay-dynamic needs ?orderNo="),
        },
        (&Method::POST, "pay-static") => match (get("mchId"), get("deviceInfo"), num("amount")) {
            (Some(m), Some(d), Some(a)) => control(pay_static_qr(shared, m, d, Centavos::new(a))),
            _ => bad("pay-static needs ?mchId=&deviceInfo=&amount=<centavos>"),
        },
        (&Method::POST, "force") => match (get("orderNo"), get("state")) {
            (Some(o), Some(s)) => control(
                force_state(shared, o, TrxState::parse(s), get("errorCode")).map(|_| s.to_string()),
            ),
            _ => bad("force needs ?orderNo=&state=[&errorCode=]"),
        },
        (&Method::POST, "balance") => match get("mchId") {
            Some(m) => control(
                shared
                    .state()
                    .set_balances(
                        m,
                        num("disbursement").map(Centavos::new),
                        num("repayment").map(Centavos::new),
                    )
                    .map(|_| "balances set".to_string()),
            ),
            None => bad("balance needs ?mchId=[&disbursement=][&repayment=]"),
        },
        (&Method::POST, "merchant-status") => {
            let status = match get("status") {
                Some("ACTIVE") => Some(MerchantStatus::Active),
                Some("SUSPENDED") => Some(MerchantStatus::Suspended),
                _ => None,
            };
            match (get("mchId"), status) {
                (Some(m), Some(s)) => control(
                    shared
                        .state()
                        .set_merchant_status(m, s)
                        .map(|_| "status set".to_string()),
                ),
                _ => bad("merchant-status needs ?mchId=&status=ACTIVE|SUSPENDED"),
            }
        }
        (&Method::POST, "faults") => match serde_json::from_slice::<FaultConfig>(body) {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    shared.set_tunables(|t| t.faults = f);
                    ok("faults set")
                }
                Err(e) => bad(e.to_string()),
            },
            Err(e) => bad(format!("faults: {e}")),
        },
        (&Method::GET, "faults") => json(&shared.tunables().faults),
        (&Method::POST, "seed") => match get("seed").and_then(|v| v.parse::<u64>().ok()) {
            Some(seed) => {
                shared.set_tunables(|t| t.seed = seed);
                ok(format!("seed {seed}"))
            }
            None => bad("seed needs ?seed=N"),
        },
        (&Method::POST, "rate-limit") => {
            let per_sec = get("perSec").and_then(|v| v.parse::<f64>().ok());
            let burst = get("burst").and_then(|v| v.parse::<u32>().ok());
            match (per_sec, burst) {
                (Some(r), Some(b)) if r >= 0.0 => {
                    shared.set_tunables(|t| {
                        t.rate_limit_per_sec = r;
                        t.rate_limit_burst = b;
                    });
                    ok("rate limit set")
                }
                _ => bad("rate-limit needs ?perSec=&burst="),
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "text/plain", "unknown /_sim/ route"),
    }
}
