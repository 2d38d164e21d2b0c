//! The stateful Starpay simulator (issue 3; contract in reference §11, guide in
//! `docs/SIMULATOR.md`).
//!
//! Owns: the simulator's configuration, its public in-process API (`Simulator`, `SimHandle`)
//! and the simulated clock. Submodules: `state` (ledger and state machines; pure), `faults`
//! (seeded decisions, token bucket), `http` (hyper server, validation order, faults), `ops`
//! (one type per operation: its fields and its handler), `notify` (signed notifications with
//! retries), `admin` (test-only `/_sim/…` routes).
//!
//! Must not: share anything with the client beyond `starpay::{model, sign, codes}` and
//! `domain`; contact any host but loopback (notifications to other hosts are refused).
//!
//! Time: simulated time = real time elapsed since start + the offset added by `advance`.
//! Transitions are applied lazily on every request and by the notifier's ticker.

pub mod admin;
pub mod faults;
pub mod http;
pub mod notify;
pub mod ops;
pub mod state;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::domain::Centavos;
use crate::starpay::model::Bank;
use crate::starpay::sign::{self, KeyError, PrivateKey, PublicKey};

pub use faults::{FaultConfig, FaultScope};

/// Arrival figures of a request log: the provider's view of a client's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateFigures {
    /// Signed API requests (`/v1/`; the unsigned health check is outside any limit).
    pub signed: usize,
    /// The most signed requests that arrived within any one second.
    pub busiest_second: usize,
    /// Payout requests (5.2/5.3 sends and 5.4 queries): a run's drive, without its pre-flight.
    pub payout: usize,
    /// From the first payout request's arrival to the last (ms).
    pub payout_span_ms: u64,
    /// Payout requests per second over that span (0 with fewer than two).
    pub payout_rate: f64,
}

impl RateFigures {
    pub fn of(log: &[RequestRecord]) -> RateFigures {
        let arrivals = |keep: &dyn Fn(&str) -> bool| {
            let mut t: Vec<u64> = log
                .iter()
                .filter(|r| keep(&r.path))
                .map(|r| r.arrival_ms)
                .collect();
            t.sort_unstable();
            t
        };
        let signed = arrivals(&|p| p.contains("/v1/"));
        let mut busiest_second = 0;
        let mut j = 0;
        for i in 0..signed.len() {
            while signed[j] + 1000 <= signed[i] {
                j += 1;
            }
            busiest_second = busiest_second.max(i - j + 1);
        }
        let payout =
            arrivals(&|p| p.ends_with("/v1/disburse") || p.ends_with("/v1/disburse/query"));
        let span = match (payout.first(), payout.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        };
        let payout_rate = if payout.len() < 2 || span == 0 {
            0.0
        } else {
            (payout.len() - 1) as f64 * 1000.0 / span as f64
        };
        RateFigures {
            signed: signed.len(),
            busiest_second,
            payout: payout.len(),
            payout_span_ms: span,
            payout_rate,
        }
    }
}
pub use state::{BalanceSnapshot, MerchantStatus, NotificationAttempt, StateChange, StaticQr};

use state::{Delays, MerchantState, State};

/// The base path every API operation lives under.
pub const BASE_PATH: &str = "/finance-payment-service";
/// Largest request body read (bytes); larger bodies get `400`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most simultaneous connections; further accepts wait.
pub const MAX_CONNECTIONS: usize = 512;
/// Most request records kept for `GET /_sim/requests` (oldest dropped first).
pub const MAX_REQUEST_RECORDS: usize = 200_000;
/// Bank list shipped with the simulator (5.1).
pub const DEFAULT_BANKS_CSV: &str = include_str!("../../../samples/banks.csv");

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read simulator config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator config {path}: {source}")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("simulator config: {0}")]
    Invalid(String),
    #[error(transparent)]
    Faults(#[from] faults::FaultConfigError),
    #[error("merchant {mch_id}: {source}")]
    MerchantKey {
        mch_id: String,
        #[source]
        source: KeyError,
    },
    #[error("simulator platform key: {0}")]
    PlatformKey(#[source] KeyError),
    #[error("bank list {path}: {detail}")]
    Banks { path: String, detail: String },
    #[error("cannot listen: {0}")]
    Bind(#[source] std::io::Error),
    #[error("notification HTTP client: {0}")]
    HttpClient(String),
}

/// One simulated merchant (reference §11 last paragraph).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    pub mch_id: String,
    /// Public key as PEM text or one-line Base64 DER; or `public_key_file`.
    pub public_key: Option<String>,
    pub public_key_file: Option<PathBuf>,
    #[serde(default = "active")]
    pub status: MerchantStatus,
    /// Enabled `service` values; empty = all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Default notification URL when a request carries none.
    pub notify_url: Option<String>,
    /// Opening balances in centavos.
    #[serde(default = "default_disbursement")]
    pub disbursement_balance: i64,
    #[serde(default)]
    pub repayment_balance: i64,
}

fn active() -> MerchantStatus {
    MerchantStatus::Active
}

fn default_disbursement() -> i64 {
    // PHP 100,000,000.00
    10_000_000_000
}

impl MerchantConfig {
    /// A merchant using the sandbox demo key (`samples/keys/TEST-ONLY-demo-merchant-public.pem`).
    pub fn demo(mch_id: &str) -> MerchantConfig {
        MerchantConfig {
            mch_id: mch_id.to_string(),
            public_key: Some(sign::known::DEMO_PUBLIC_PEM.to_string()),
            public_key_file: None,
            status: MerchantStatus::Active,
            services: Vec::new(),
            notify_url: None,
            disbursement_balance: default_disbursement(),
            repayment_balance: 0,
        }
    }

    fn load_key(&self) -> Result<PublicKey, SimError> {
        let wrap = |source| SimError::MerchantKey {
            mch_id: self.mch_id.clone(),
            source,
        };
        match (&self.public_key, &self.public_key_file) {
            (Some(text), None) => {
                PublicKey::from_text(text, &format!("merchant {}", self.mch_id)).map_err(wrap)
            }
            (None, Some(path)) => PublicKey::from_file(path).map_err(wrap),
            _ => Err(SimError::Invalid(format!(
                "merchant {}: set exactly one of public_key and public_key_file",
                self.mch_id
            ))),
        }
    }
}

/// A fixture of 5.7 Scan QR (the simulator decodes nothing; reference §6 5.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrFixture {
    pub qr_code: String,
    /// `P2M` or `P2P`.
    pub qr_type: String,
    pub acct_name: String,
    pub acct_no: String,
    pub receiving_bank: String,
    #[serde(default)]
    pub trx_amount: Option<i64>,
}

/// Which kind of transaction a fixture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixtureKind {
    Payout,
    DynamicQr,
    StaticQrPayment,
}

/// A transaction that exists when the simulator starts (`[[fixtures]]` in the config): the
/// history an end-of-day reconciliation checks against. Its `trxDate` is `age_secs` before
/// the simulator's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFixture {
    pub kind: FixtureKind,
    #[serde(default = "default_fixture_mch")]
    pub mch_id: String,
    pub msg_id: String,
    #[serde(default)]
    pub ref_no: Option<String>,
    #[serde(default)]
    pub acct_no: Option<String>,
    #[serde(default)]
    pub device_info: Option<String>,
    /// Centavos.
    pub trx_amount: i64,
    pub state: String,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub age_secs: u64,
    /// Every query about it answers HTTP 502 (to exercise "queries kept failing").
    #[serde(default)]
    pub fail_queries: bool,
}

fn default_fixture_mch() -> String {
    sign::known::DEMO_MCH_ID.to_string()
}

/// Simulator configuration. TOML file keys = field names; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random decision (see `faults`).
    pub seed: u64,
    /// Payout settlement delay (simulated ms) and the seeded jitter added to it (0..=jitter).
    pub settle_delay_ms: u64,
    pub settle_jitter_ms: u64,
    /// How long `0504`/`0505` payouts stay `PROCESSING` with `AB05` (simulated ms).
    pub timeout_hold_ms: u64,
    /// Delay from `SUCCESS` to `REVERSED` for `0700` and late reversals (simulated ms).
    pub reversal_delay_ms: u64,
    /// Default dynamic QR lifetime when `timeExpire` is absent (simulated seconds).
    pub qr_expiry_secs: u64,
    /// Token bucket per mchId: rate (requests/s; 0 = no limit) and burst.
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: u32,
    /// Also accept the compact order-preserving and key-sorted re-serializations of `request`
    /// (imitates a re-serializing server; reference §3.4). Default: strict raw bytes.
    pub lenient_signatures: bool,
    /// Always send `response` as a JSON string (reference §2).
    pub response_as_string: bool,
    /// Notification redelivery: delay before each attempt, counted from the previous failure
    /// (simulated seconds; reference §10: 0 s, 15 s, 1 min, 5 min, 15 min, 1 h).
    pub notify_retry_secs: Vec<u64>,
    /// Real-time timeout of one notification POST (ms).
    pub notify_timeout_ms: u64,
    /// Background ticker period (real ms): applies due transitions, sends notifications.
    pub tick_ms: u64,
    /// Bank list CSV (`bankCode,bankName`); default: the bundled `samples/banks.csv`.
    pub banks_file: Option<PathBuf>,
    pub qr_fixtures: Vec<QrFixture>,
    pub merchants: Vec<MerchantConfig>,
    pub faults: FaultConfig,
    /// Transactions that exist at start (see [`OrderFixture`]).
    pub fixtures: Vec<OrderFixture>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            settle_delay_ms: 2_000,
            settle_jitter_ms: 500,
            timeout_hold_ms: 60_000,
            reversal_delay_ms: 60_000,
            qr_expiry_secs: 900,
            rate_limit_per_sec: 20.0,
            rate_limit_burst: 20,
            lenient_signatures: false,
            response_as_string: false,
            notify_retry_secs: vec![0, 15, 60, 300, 900, 3600],
            notify_timeout_ms: 2_000,
            tick_ms: 50,
            banks_file: None,
            qr_fixtures: vec![
                QrFixture {
                    qr_code: "SIM-P2M-0001".into(),
                    qr_type: "P2M".into(),
                    acct_name: "Sari-Sari Store".into(),
                    acct_no: "100000001234".into(),
                    receiving_bank: "GCash".into(),
                    trx_amount: None,
                },
                QrFixture {
                    qr_code: "SIM-P2P-0001".into(),
                    qr_type: "P2P".into(),
                    acct_name: "Juan Dela Cruz".into(),
                    acct_no: "09170000001".into(),
                    receiving_bank: "Maya".into(),
                    trx_amount: None,
                },
                QrFixture {
                    qr_code: "SIM-P2M-AMOUNT".into(),
                    qr_type: "P2M".into(),
                    acct_name: "Canteen".into(),
                    acct_no: "100000005678".into(),
                    receiving_bank: "BDO Unibank, Inc.".into(),
                    trx_amount: Some(15_000),
                },
            ],
            merchants: vec![
                MerchantConfig::demo(sign::known::DEMO_MCH_ID),
                MerchantConfig::demo("105510000001"),
            ],
            faults: FaultConfig::default(),
            fixtures: Vec::new(),
        }
    }
}

impl SimConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml_file(path: &Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        let config: SimConfig = toml::from_str(&text).map_err(|source| SimError::ParseConfig {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), SimError> {
        self.faults.validate()?;
        if self.merchants.is_empty() {
            return Err(SimError::Invalid("no merchants configured".into()));
        }
        if self.tick_ms == 0 {
            return Err(SimError::Invalid("tick_ms must be at least 1".into()));
        }
        let mut msg_ids = std::collections::HashSet::new();
        let mut ref_nos = std::collections::HashSet::new();
        for f in &self.fixtures {
            if f.age_secs > 100 * 365 * 86_400 {
                return Err(SimError::Invalid(format!(
                    "fixture {}: age_secs above 100 years",
                    f.msg_id
                )));
            }
            if !msg_ids.insert((f.mch_id.as_str(), f.msg_id.as_str())) {
                return Err(SimError::Invalid(format!(
                    "fixture msg_id {} appears twice",
                    f.msg_id
                )));
            }
            if let Some(r) = &f.ref_no {
                if !ref_nos.insert(r.as_str()) {
                    return Err(SimError::Invalid(format!(
                        "fixture ref_no {r} appears twice"
                    )));
                }
            }
        }
        if self.rate_limit_per_sec.is_nan() || self.rate_limit_per_sec < 0.0 {
            return Err(SimError::Invalid("rate_limit_per_sec must be >= 0".into()));
        }
        Ok(())
    }

    fn delays(&self) -> Delays {
        Delays {
            timeout_hold: self.timeout_hold_ms,
            reversal_delay: self.reversal_delay_ms,
        }
    }

    fn merchant_states(&self) -> BTreeMap<String, MerchantState> {
        self.merchants
            .iter()
            .map(|m| {
                (
                    m.mch_id.clone(),
                    MerchantState {
                        status: m.status,
                        services: m.services.clone(),
                        notify_url: m.notify_url.clone(),
                        disbursement: Centavos::new(m.disbursement_balance),
                        repayment: Centavos::new(m.repayment_balance),
                    },
                )
            })
            .collect()
    }
}

/// Parses `bankCode,bankName` CSV (with header).
pub fn parse_banks(text: &str, origin: &str) -> Result<Vec<Bank>, SimError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let mut banks = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| SimError::Banks {
            path: origin.to_string(),
            detail: e.to_string(),
        })?;
        match (record.get(0), record.get(1)) {
            (Some(code), Some(name)) if !code.is_empty() && !name.is_empty() => banks.push(Bank {
                bank_code: code.to_string(),
                bank_name: name.to_string(),
            }),
            _ => {
                return Err(SimError::Banks {
                    path: origin.to_string(),
                    detail: format!("line {}: expected bankCode,bankName", i + 2),
                })
            }
        }
    }
    Ok(banks)
}

/// Simulated clock: real elapsed time plus the advanced offset.
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
    offset_ms: AtomicU64,
}

impl SimClock {
    fn new() -> SimClock {
        SimClock {
            start: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let real = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        real.saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }

    pub fn advance(&self, secs: u64) {
        self.offset_ms
            .fetch_add(secs.saturating_mul(1_000), Ordering::SeqCst);
    }
}

/// Settings that the control API may change at run time.
#[derive(Debug, Clone)]
pub struct Tunables {
    pub seed: u64,
    pub faults: FaultConfig,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: u32,
}

/// One request as received, for `GET /_sim/requests`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub seq: u64,
    /// Simulated ms since start, and the same instant in Manila time.
    pub arrival_ms: u64,
    pub arrival: String,
    pub method: String,
    pub path: String,
    pub service: Option<String>,
    pub mch_id: Option<String>,
    pub msg_id: Option<String>,
    /// The envelope's `code`; `None` when no envelope was sent (dropped, 502, health, 404 path).
    pub code: Option<String>,
    /// HTTP status sent; `None` when the connection was dropped.
    pub http_status: Option<u16>,
    /// Fault applied, if any (`commit_then_drop`, `http_502`, `hang`, …).
    pub fault: Option<String>,
    /// Lower-case hex SHA-256 of the `request` bytes exactly as received (the signed text),
    /// so a test can tell a resend of the same bytes from a rebuilt request.
    pub request_sha256: Option<String>,
}

/// One order in the ledger (`GET /_sim/ledger`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerOrder {
    pub msg_id: String,
    pub order_no: String,
    pub service: String,
    pub mch_id: String,
    pub acct_no: Option<String>,
    pub trx_amount: i64,
    pub state: String,
    /// Every create request that carried this msgId (accepted, or rejected as repeated).
    pub create_requests: u32,
    pub kind: state::OrderKind,
    pub trx_date: String,
    pub device_info: Option<String>,
    pub ref_no: Option<String>,
    pub error_code: Option<String>,
    pub history: Vec<StateChange>,
    pub notifications: Vec<NotificationAttempt>,
}

/// The ground-truth ledger: every order, balances per merchant, static QR codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSnapshot {
    pub now_ms: u64,
    pub orders: Vec<LedgerOrder>,
    pub balances: BTreeMap<String, BalanceSnapshot>,
    #[serde(default)]
    pub static_qrs: Vec<StaticQr>,
}

impl LedgerSnapshot {
    pub fn order(&self, msg_id: &str) -> Option<&LedgerOrder> {
        self.orders.iter().find(|o| o.msg_id == msg_id)
    }
}

/// Everything the server tasks share.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub clock: SimClock,
    /// Wall-clock instant of simulated time 0 (the state holds the same value).
    pub base_utc: chrono::DateTime<chrono::Utc>,
    pub platform_key: PrivateKey,
    /// Each merchant's public key; replaceable at run time (`SimHandle::set_merchant_key`).
    pub merchant_keys: Mutex<HashMap<String, Arc<PublicKey>>>,
    pub banks: Vec<Bank>,
    state: Mutex<State>,
    tunables: Mutex<Tunables>,
    buckets: Mutex<HashMap<String, faults::TokenBucket>>,
    requests: Mutex<VecDeque<RequestRecord>>,
    pub request_seq: AtomicU64,
    /// Wakes the notifier (new final states, clock advanced).
    pub wake: Notify,
    pub shutdown: watch::Receiver<bool>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Locks the ledger after applying every transition due now. Never held across `.await`.
    pub fn state(&self) -> MutexGuard<'_, State> {
        let now = self.clock.now_ms();
        let mut s = relock(&self.state);
        s.advance_to(now);
        s
    }

    /// Manila `trxDate` form of a simulated instant, without locking the ledger.
    pub fn trx_date(&self, at: u64) -> String {
        let ms = i64::try_from(at).unwrap_or(i64::MAX);
        (self.base_utc + chrono::Duration::milliseconds(ms))
            .with_timezone(&state::manila())
            .format("%Y-%m-%dT%H:%M:%S+08:00")
            .to_string()
    }

    pub fn tunables(&self) -> Tunables {
        relock(&self.tunables).clone()
    }

    pub fn set_tunables(&self, f: impl FnOnce(&mut Tunables)) {
        f(&mut relock(&self.tunables));
    }

    /// Takes a token for `mch_id`; `false` = 406.
    pub fn take_token(&self, mch_id: &str, rate: f64, burst: u32) -> bool {
        let now = Instant::now();
        let mut buckets = relock(&self.buckets);
        buckets
            .entry(mch_id.to_string())
            .or_insert_with(|| faults::TokenBucket::new(burst, now))
            .try_take(rate, burst, now)
    }

    /// The key that verifies `mch_id`'s requests now.
    pub fn merchant_key(&self, mch_id: &str) -> Option<Arc<PublicKey>> {
        relock(&self.merchant_keys).get(mch_id).cloned()
    }

    pub fn record(&self, r: RequestRecord) {
        let mut log = relock(&self.requests);
        if log.len() >= MAX_REQUEST_RECORDS {
            log.pop_front();
        }
        log.push_back(r);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        relock(&self.requests).iter().cloned().collect()
    }

    pub fn ledger(&self) -> LedgerSnapshot {
        let now = self.clock.now_ms();
        let s = self.state();
        LedgerSnapshot {
            now_ms: now,
            orders: s
                .orders
                .iter()
                .map(|o| LedgerOrder {
                    msg_id: o.msg_id.clone(),
                    order_no: o.order_no.clone(),
                    service: o.service.clone(),
                    mch_id: o.mch_id.clone(),
                    acct_no: o.acct_no.clone(),
                    trx_amount: o.trx_amount.get(),
                    state: o.state.as_str().to_string(),
                    create_requests: o.create_requests,
                    kind: o.kind,
                    trx_date: o.trx_date.clone(),
                    device_info: o.device_info.clone(),
                    ref_no: o.ref_no.clone(),
                    error_code: o.error_code.clone(),
                    history: o.history.clone(),
                    notifications: o.notifications.clone(),
                })
                .collect(),
            balances: s.balances(),
            static_qrs: s.static_qrs.values().cloned().collect(),
        }
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(secs);
        drop(self.state());
        self.wake.notify_one();
    }

    /// Forgets every order, msgId, request record and rate-limit bucket; restores the
    /// configured merchants, balances, seed and faults.
    pub fn reset(&self) {
        relock(&self.state).reset(self.config.merchant_states());
        relock(&self.requests).clear();
        relock(&self.buckets).clear();
        self.set_tunables(|t| *t = tunables_of(&self.config));
        self.wake.notify_one();
    }
}

fn tunables_of(config: &SimConfig) -> Tunables {
    Tunables {
        seed: config.seed,
        faults: config.faults,
        rate_limit_per_sec: config.rate_limit_per_sec,
        rate_limit_burst: config.rate_limit_burst,
    }
}

/// Entry point of the in-process API.
pub struct Simulator;

impl Simulator {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(SimError::Bind)?;
        Simulator::start_on(listener, config).await
    }

    /// Serves on an already-bound listener (tests bind port 0; the CLI binds `--listen`).
    pub async fn start_on(listener: TcpListener, config: SimConfig) -> Result<SimHandle, SimError> {
        config.validate()?;
        let addr = listener.local_addr().map_err(SimError::Bind)?;
        let platform_key = PrivateKey::from_text(
            sign::known::SIM_PLATFORM_PRIVATE_PEM,
            "embedded simulator platform key",
        )
        .map_err(SimError::PlatformKey)?;
        let mut merchant_keys = HashMap::new();
        for m in &config.merchants {
            merchant_keys.insert(m.mch_id.clone(), Arc::new(m.load_key()?));
        }
        let banks = match &config.banks_file {
            None => parse_banks(DEFAULT_BANKS_CSV, "samples/banks.csv")?,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| SimError::Banks {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                parse_banks(&text, &path.display().to_string())?
            }
        };
        let http_client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(config.notify_timeout_ms))
            .build()
            .map_err(|e| SimError::HttpClient(e.to_string()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let base_utc = chrono::Utc::now();
        let mut state = State::new(base_utc, config.delays(), config.merchant_states());
        for f in &config.fixtures {
            state.load_fixture(f, 0);
        }
        let shared = Arc::new(Shared {
            tunables: Mutex::new(tunables_of(&config)),
            config,
            clock: SimClock::new(),
            base_utc,
            platform_key,
            merchant_keys: Mutex::new(merchant_keys),
            banks,
            state: Mutex::new(state),
            buckets: Mutex::new(HashMap::new()),
            requests: Mutex::new(VecDeque::new()),
            request_seq: AtomicU64::new(0),
            wake: Notify::new(),
            shutdown: shutdown_rx,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(http::serve(listener, Arc::clone(&shared)));
        tasks.spawn(notify::run(Arc::clone(&shared), http_client));
        tracing::info!(%addr, "simulator listening");
        Ok(SimHandle {
            addr,
            shared,
            shutdown_tx,
            tasks,
        })
    }
}

/// A running simulator. Dropping it without `shutdown` aborts its tasks.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT/finance-payment-service`
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, BASE_PATH)
    }

    /// `http://127.0.0.1:PORT` (the admin routes live under `/_sim/` here).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key that verifies every response and notification of this simulator.
    pub fn platform_public_key(&self) -> PublicKey {
        self.shared.platform_key.public_key().clone()
    }

    pub fn ledger(&self) -> LedgerSnapshot {
        self.shared.ledger()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// How many requests arrived since the start (the log above keeps only the last
    /// [`MAX_REQUEST_RECORDS`]; the benchmarks count requests per row with this).
    pub fn requests_seen(&self) -> u64 {
        self.shared
            .request_seq
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How fast the signed API requests of the log arrived (the rate-limit test and bench).
    pub fn rate_figures(&self) -> RateFigures {
        RateFigures::of(&self.shared.requests())
    }

    /// Moves simulated time forward (due transitions apply at once).
    pub fn advance(&self, secs: u64) {
        self.shared.advance(secs);
    }

    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    pub fn reset(&self) {
        self.shared.reset();
    }

    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), SimError> {
        faults.validate()?;
        self.shared.set_tunables(|t| t.faults = faults);
        Ok(())
    }

    pub fn set_seed(&self, seed: u64) {
        self.shared.set_tunables(|t| t.seed = seed);
    }

    pub fn set_rate_limit(&self, per_sec: f64, burst: u32) {
        self.shared.set_tunables(|t| {
            t.rate_limit_per_sec = per_sec;
            t.rate_limit_burst = burst;
        });
    }

    /// Control API: a payer pays the dynamic QR `order_no`.
    pub fn pay_dynamic_qr(&self, order_no: &str) -> Result<(), state::ControlError> {
        admin::pay_dynamic_qr(&self.shared, order_no).map(|_| ())
    }

    /// Control API: a payer pays the static QR of (`mch_id`, `device_info`); returns the
    /// generated `originalMsgId`.
    pub fn pay_static_qr(
        &self,
        mch_id: &str,
        device_info: &str,
        amount: Centavos,
    ) -> Result<String, state::ControlError> {
        admin::pay_static_qr(&self.shared, mch_id, device_info, amount)
    }

    pub fn force_state(
        &self,
        order_no: &str,
        state: crate::domain::TrxState,
        error_code: Option<&str>,
    ) -> Result<(), state::ControlError> {
        admin::force_state(&self.shared, order_no, state, error_code)
    }

    pub fn set_balances(
        &self,
        mch_id: &str,
        disbursement: Option<Centavos>,
        repayment: Option<Centavos>,
    ) -> Result<(), state::ControlError> {
        self.shared
            .state()
            .set_balances(mch_id, disbursement, repayment)
    }

    pub fn set_merchant_status(
        &self,
        mch_id: &str,
        status: MerchantStatus,
    ) -> Result<(), state::ControlError> {
        self.shared.state().set_merchant_status(mch_id, status)
    }

    /// Replaces the public key the simulator verifies a merchant's requests with (a key
    /// rotated on the Starpay side: the runner's requests then answer `402`).
    pub fn set_merchant_key(&self, mch_id: &str, key: PublicKey) -> Result<(), SimError> {
        let mut keys = relock(&self.shared.merchant_keys);
        match keys.get_mut(mch_id) {
            Some(k) => {
                *k = Arc::new(key);
                Ok(())
            }
            None => Err(SimError::Invalid(format!("unknown merchant {mch_id}"))),
        }
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops the notifier.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            self.tasks.shutdown().await;
        }
    }

    /// Resolves when the simulator stops by itself (it does not, unless a task panics).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
