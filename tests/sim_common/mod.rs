//! Helpers shared by the simulator tests: start a simulator on port 0, build the real client,
//! craft requests, and a tiny notification receiver.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use starpay_batch::domain::{Centavos, MchId, MsgId};
use starpay_batch::server::sim::{SimConfig, SimHandle, Simulator};
use starpay_batch::starpay::client::{Client, ClientConfig, Environment};
use starpay_batch::starpay::model::*;
use starpay_batch::starpay::sign::{self, known, PrivateKey, SignedRequest};

pub const DEMO: &str = known::DEMO_MCH_ID;

/// Default config with settle jitter off and no rate limit (tests that need them set them).
pub fn config() -> SimConfig {
    SimConfig {
        settle_jitter_ms: 0,
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    }
}

pub fn demo_key() -> Arc<PrivateKey> {
    Arc::new(PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo").unwrap())
}

pub fn client_with(h: &SimHandle, mch: &str, key: Arc<PrivateKey>, timeout: Duration) -> Client {
    let mut cfg = ClientConfig::new(
        Environment::parse(&h.base_url()).unwrap(),
        MchId::new(mch).unwrap(),
    );
    cfg.request_timeout = timeout;
    Client::new(cfg, key, vec![h.platform_public_key()]).unwrap()
}

pub fn client(h: &SimHandle) -> Client {
    client_with(h, DEMO, demo_key(), Duration::from_secs(10))
}

pub async fn start(config: SimConfig) -> (SimHandle, Client) {
    let h = Simulator::start(config).await.unwrap();
    let c = client(&h);
    (h, c)
}

pub fn msg(s: &str) -> MsgId {
    MsgId::new(s).unwrap()
}

pub fn payout(mch: &str, msg_id: &str, acct_no: &str, amount: i64) -> InstapayDisburseRequest {
    InstapayDisburseRequest {
        msg_id: msg(msg_id),
        mch_id: MchId::new(mch).unwrap(),
        acct_no: acct_no.into(),
        acct_name: "Juan".into(),
        acct_middle_name: "".into(),
        acct_last_name: "Dela Cruz".into(),
        receiving_bank: "GCash".into(),
        trx_amount: Centavos::new(amount),
        currency: Currency::Php,
        attach: None,
        notify_url: None,
    }
}

pub fn query(msg_id: &str, original: &str) -> DisburseQueryRequest {
    DisburseQueryRequest {
        msg_id: msg(msg_id),
        mch_id: MchId::new(DEMO).unwrap(),
        original_msg_id: msg(original),
    }
}

pub fn balance_req(msg_id: &str) -> DisburseBalanceRequest {
    DisburseBalanceRequest {
        msg_id: msg(msg_id),
        mch_id: MchId::new(DEMO).unwrap(),
    }
}

/// Canonical (sorted, compact) bytes of an arbitrary JSON object, signed with `key`.
pub fn signed_map(key: &PrivateKey, map: &Map<String, Value>) -> SignedRequest {
    let bytes = sign::canonical_bytes(map, &[]).unwrap();
    SignedRequest::sign(key, bytes).unwrap()
}

/// A 5.2 request as a JSON map (for crafting invalid variants).
pub fn payout_map(msg_id: &str, acct_no: &str, amount: Value) -> Map<String, Value> {
    let v = serde_json::json!({
        "msgId": msg_id, "mchId": DEMO, "service": "pay.starpay.instapay.disburse",
        "acctNo": acct_no, "acctName": "Juan", "acctMiddleName": "", "acctLastName": "Dela Cruz",
        "receivingBank": "GCash", "trxAmount": amount, "currency": "PHP"
    });
    v.as_object().unwrap().clone()
}

/// Waits (real time, bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A notification receiver on 127.0.0.1:0. Answers `{"code":"200","message":"success"}`, or
/// HTTP 500 for the first `fail_first` deliveries.
pub struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let seen = Arc::clone(&bodies);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let n = {
                                let mut v = seen.lock().unwrap();
                                v.push(body);
                                v.len()
                            };
                            let (status, text) = if n <= fail_first {
                                (500, r#"{"code":"500","message":"busy"}"#)
                            } else {
                                (200, r#"{"code":"200","message":"success"}"#)
                            };
                            let mut r = Response::new(Full::new(Bytes::from(text)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { url, bodies, task }
    }

    pub fn count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Bytes> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Raw POST (for bodies the client cannot produce).
pub async fn raw_post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Bytes) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.bytes().await.unwrap())
}
