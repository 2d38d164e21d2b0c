//! The async client: one attempt per call. Signs the canonical bytes (off the async workers),
//! sends them, verifies the answer. No retry, no sleep, no state: the engine decides what an
//! error means for a row (reference §12), this module only says which kind of error it was.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::domain::MchId;
use crate::starpay::codes::Code;
use crate::starpay::model::*;
use crate::starpay::sign::{
    self, CanonicalError, Member, PrivateKey, PublicKey, SignError, SignedRequest, VerifyError,
};
use crate::starpay::signing_pool::SigningPool;
use crate::starpay::stats::RequestStats;

pub const UAT_BASE_URL: &str = "https://financeapi-uat.wallyt.net/finance-payment-service";
pub const PROD_BASE_URL: &str = "https://financeapi.wallytglobal.com/finance-payment-service";
/// Reference §1 decisions.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer body accepted (a bank list is the biggest legitimate answer).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    Uat,
    Prod,
    /// Any other base URL (a simulator, a proxy). Plain HTTP is allowed only on loopback.
    Url(String),
}

impl Environment {
    /// Parses `uat`, `prod` or a URL.
    pub fn parse(s: &str) -> Result<Environment, ClientError> {
        match s {
            "uat" => Ok(Environment::Uat),
            "prod" => Ok(Environment::Prod),
            url => {
                check_base_url(url)?;
                Ok(Environment::Url(url.trim_end_matches('/').to_string()))
            }
        }
    }

    pub fn base_url(&self) -> &str {
        match self {
            Environment::Uat => UAT_BASE_URL,
            Environment::Prod => PROD_BASE_URL,
            Environment::Url(u) => u,
        }
    }
}

fn check_base_url(url: &str) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Config(format!("base URL {url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(ClientError::Config(format!(
                    "base URL {url:?}: plain http is allowed only on loopback (127.0.0.1, ::1, localhost); use https"
                )))
            }
        }
        other => Err(ClientError::Config(format!(
            "base URL {url:?}: scheme {other:?} is not supported; use https"
        ))),
    }
}

/// Errors, grouped by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // ---- not sent: nothing reached Starpay; safe to try again with the same bytes.
    #[error("request could not be built: {0}")]
    Build(#[from] CanonicalError),
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The message names the URL once and the innermost cause (`Connection refused (os error
    /// 111)`); reqwest's own chain repeats the URL, so it is not a `#[source]`.
    #[error("could not connect to {url}: {}", root_cause(.error))]
    Connect { url: String, error: reqwest::Error },
    #[error("configuration: {0}")]
    Config(String),

    // ---- outcome unknown: the request may have been processed; resolve by query.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("transport failed after sending: {}", root_cause(.0))]
    Transport(reqwest::Error),
    #[error("answer is not a Starpay envelope (HTTP {status}): {detail}")]
    NotEnvelope { status: u16, detail: String },
    /// A signature problem with the answer. Its `code`, if readable, may only drive the safe
    /// control actions (stop, back off, query); it never changes a transaction's state.
    #[error("answer signature not verified ({error}); code in the unverified answer: {code:?}")]
    Unverified {
        code: Option<Code>,
        error: VerifyError,
        raw: Bytes,
    },
    #[error("verified answer does not match the {section} response layout: {detail}")]
    BadPayload {
        section: &'static str,
        detail: String,
        raw: Bytes,
    },
}

/// The innermost cause of a transport error, e.g. `Connection refused (os error 111)`, or the
/// error itself when it has none (one line, no repeated URL).
pub fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Whether the request may have been processed by Starpay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    NotSent,
    Unknown,
}

impl ClientError {
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::Build(_)
            | ClientError::Sign(_)
            | ClientError::Connect { .. }
            | ClientError::Config(_) => Outcome::NotSent,
            ClientError::Timeout(_)
            | ClientError::Transport(_)
            | ClientError::NotEnvelope { .. }
            | ClientError::Unverified { .. }
            | ClientError::BadPayload { .. } => Outcome::Unknown,
        }
    }

    /// The raw answer body, when there was one (kept as evidence).
    pub fn raw_body(&self) -> Option<&Bytes> {
        match self {
            ClientError::Unverified { raw, .. } | ClientError::BadPayload { raw, .. } => Some(raw),
            _ => None,
        }
    }
}

/// A verified answer.
#[derive(Debug, Clone)]
pub struct Answer<R> {
    pub response: R,
    /// The whole HTTP body as received (evidence for the event log).
    pub raw_body: Bytes,
    pub http_status: u16,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub environment: Environment,
    pub mch_id: MchId,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(environment: Environment, mch_id: MchId) -> ClientConfig {
        ClientConfig {
            environment,
            mch_id,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Cheap to clone; share one per run.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Arc<str>,
    mch_id: MchId,
    request_timeout: Duration,
    signer: SigningPool,
    platform_keys: Arc<[PublicKey]>,
    /// Every signed request's section and answer code (metrics); shared by all clones.
    stats: Arc<RequestStats>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("mch_id", &self.mch_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct CodeOnly {
    code: Option<Code>,
}

impl Client {
    /// `platform_keys`: the accepted platform keys of the environment; at least one (reference
    /// §3.3: there is no switch to skip verification).
    pub fn new(
        config: ClientConfig,
        signer: Arc<PrivateKey>,
        platform_keys: Vec<PublicKey>,
    ) -> Result<Client, ClientError> {
        if platform_keys.is_empty() {
            return Err(ClientError::Config(
                "no platform public key configured; responses cannot be verified".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .no_proxy()
            // Never follow a redirect: a 307/308 would re-POST a signed payout elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base_url: Arc::from(config.environment.base_url()),
            mch_id: config.mch_id,
            request_timeout: config.request_timeout,
            signer: SigningPool::start(signer),
            platform_keys: platform_keys.into(),
            stats: Arc::default(),
        })
    }

    /// Counts this client's requests into `stats` (shared with whoever reads them).
    pub fn with_stats(mut self, stats: Arc<RequestStats>) -> Client {
        self.stats = stats;
        self
    }

    /// The counts of this client's requests by section and answer code.
    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.stats
    }

    pub fn mch_id(&self) -> &MchId {
        &self.mch_id
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn platform_keys(&self) -> &[PublicKey] {
        &self.platform_keys
    }

    /// Canonical bytes + signature, computed on the signing threads so every core can sign.
    pub async fn sign<O: Operation>(&self, request: &O) -> Result<SignedRequest, ClientError> {
        let bytes = sign::canonical_bytes(request, &[("service", O::SERVICE)])?;
        self.sign_bytes(bytes).await
    }

    /// Signs stored request bytes (a resend signs the same bytes again; PKCS#1 v1.5 is
    /// deterministic, so the signature is the same too unless the key was replaced).
    pub async fn sign_bytes(&self, bytes: Vec<u8>) -> Result<SignedRequest, ClientError> {
        self.signer.sign(bytes).await.map_err(ClientError::from)
    }

    /// Sends already-signed bytes for operation `O` (a resend reuses them unchanged).
    pub async fn send<O: Operation>(
        &self,
        signed: &SignedRequest,
    ) -> Result<Answer<O::Response>, ClientError> {
        let result = self.send_once::<O>(signed).await;
        self.stats.record(
            O::SECTION,
            result.as_ref().map(|a| a.response.code().as_str()),
        );
        result
    }

    async fn send_once<O: Operation>(
        &self,
        signed: &SignedRequest,
    ) -> Result<Answer<O::Response>, ClientError> {
        let url = format!("{}{}", self.base_url, O::PATH);
        let result = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.request_timeout)
            .body(signed.envelope())
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => return Err(self.classify(e, &url)),
        };
        let status = response.status().as_u16();
        let body = self.read_body(response, &url).await?;
        self.verify_answer::<O::Response>(O::SECTION, status, body)
    }

    /// Verifies and parses an answer body (reference §3.4).
    pub fn verify_answer<R: ApiResponse>(
        &self,
        section: &'static str,
        status: u16,
        body: Bytes,
    ) -> Result<Answer<R>, ClientError> {
        match sign::verify_envelope(&body, Member::Response, &self.platform_keys) {
            Ok(verified) => match serde_json::from_slice::<R>(&verified.payload) {
                Ok(response) => Ok(Answer {
                    response,
                    raw_body: body,
                    http_status: status,
                }),
                Err(e) => Err(ClientError::BadPayload {
                    section,
                    detail: e.to_string(),
                    raw: body,
                }),
            },
            Err(unverified) => match unverified.payload {
                None => Err(ClientError::NotEnvelope {
                    status,
                    detail: unverified.error.to_string(),
                }),
                Some(payload) => {
                    let code = serde_json::from_slice::<CodeOnly>(&payload)
                        .ok()
                        .and_then(|c| c.code);
                    Err(ClientError::Unverified {
                        code,
                        error: unverified.error,
                        raw: body,
                    })
                }
            },
        }
    }

    /// Reads an answer body of at most [`MAX_BODY_BYTES`]; a longer one is not a Starpay
    /// envelope (outcome unknown).
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        url: &str,
    ) -> Result<Bytes, ClientError> {
        let status = response.status().as_u16();
        let mut body = bytes::BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(ClientError::NotEnvelope {
                            status,
                            detail: format!("answer longer than {MAX_BODY_BYTES} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => return Err(self.classify(e, url)),
            }
        }
    }

    fn classify(&self, e: reqwest::Error, url: &str) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout(self.request_timeout)
        } else if e.is_connect() {
            // The TCP/TLS connection was never established: nothing was sent.
            ClientError::Connect {
                url: url.to_string(),
                error: e,
            }
        } else {
            ClientError::Transport(e)
        }
    }

    /// Sign and send once.
    pub async fn call<O: Operation>(
        &self,
        request: &O,
    ) -> Result<Answer<O::Response>, ClientError> {
        let signed = self.sign(request).await?;
        self.send::<O>(&signed).await
    }

    /// 2.1 connection check (unsigned GET).
    pub async fn check_connection(&self) -> Result<HealthResponse, ClientError> {
        let url = format!("{}{}", self.base_url, PATH_HEALTH);
        let response = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| self.classify(e, &url))?;
        let status = response.status().as_u16();
        let body = self.read_body(response, &url).await?;
        serde_json::from_slice::<HealthResponse>(&body).map_err(|e| ClientError::NotEnvelope {
            status,
            detail: e.to_string(),
        })
    }

    // One method per operation (reference §5). Each is `call` with the type spelled out.

    /// 5.1 Fund Disbursement List.
    pub async fn bank_list(
        &self,
        r: &BankListRequest,
    ) -> Result<Answer<BankListResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.2 Fund Disbursement (InstaPay).
    pub async fn disburse_instapay(
        &self,
        r: &InstapayDisburseRequest,
    ) -> Result<Answer<DisburseResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.3 Fund Disbursement (Starpay to Starpay).
    pub async fn disburse_wallet(
        &self,
        r: &WalletDisburseRequest,
    ) -> Result<Answer<DisburseResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.4 Fund Disbursement Query.
    pub async fn query_disbursement(
        &self,
        r: &DisburseQueryRequest,
    ) -> Result<Answer<QueryResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.6 Disbursement Balance Query.
    pub async fn disbursement_balance(
        &self,
        r: &DisburseBalanceRequest,
    ) -> Result<Answer<BalanceResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.7 Scan QR.
    pub async fn scan_qr(&self, r: &ScanQrRequest) -> Result<Answer<ScanQrResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.8 Fund Disbursement (Pay P2M QR).
    pub async fn disburse_qr_p2m(
        &self,
        r: &QrP2mDisburseRequest,
    ) -> Result<Answer<DisburseResponse>, ClientError> {
        self.call(r).await
    }
    /// 5.9 Fund Disbursement (Pay P2P QR).
    pub async fn disburse_qr_p2p(
        &self,
        r: &QrP2pDisburseRequest,
    ) -> Result<Answer<DisburseResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.1 Repayment (dynamic QR).
    pub async fn create_repayment(
        &self,
        r: &RepaymentRequest,
    ) -> Result<Answer<RepaymentResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.2 Repayment State Query.
    pub async fn query_repayment(
        &self,
        r: &RepaymentQueryRequest,
    ) -> Result<Answer<QueryResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.4 Repayment Static QR Generate.
    pub async fn generate_static_qr(
        &self,
        r: &StaticQrRequest,
    ) -> Result<Answer<StaticQrResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.6 Repayment Balance Query.
    pub async fn repayment_balance(
        &self,
        r: &RepaymentBalanceRequest,
    ) -> Result<Answer<BalanceResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.7 Edit Repayment Static QR Status.
    pub async fn set_static_qr_status(
        &self,
        r: &StaticQrStatusRequest,
    ) -> Result<Answer<StaticQrStatusResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.8 Repayment Query through RefNo.
    pub async fn query_repayment_by_ref_no(
        &self,
        r: &RefNoQueryRequest,
    ) -> Result<Answer<QueryResponse>, ClientError> {
        self.call(r).await
    }
    /// 6.9 Repayment Cancel.
    pub async fn cancel_repayment(
        &self,
        r: &RepaymentCancelRequest,
    ) -> Result<Answer<CancelResponse>, ClientError> {
        self.call(r).await
    }
}

/// Verifies a notification body (5.5, 6.3, 6.5) and returns its transactions (reference §10).
pub fn verify_notification(
    body: &[u8],
    platform_keys: &[PublicKey],
) -> Result<Vec<Notification>, NotificationError> {
    let verified = sign::verify_envelope(body, Member::Request, platform_keys)
        .map_err(|u| NotificationError::Unverified(u.error))?;
    let payload: NotificationPayload = serde_json::from_slice(&verified.payload)
        .map_err(|e| NotificationError::BadPayload(e.to_string()))?;
    Ok(payload.into_vec())
}

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("notification signature not verified: {0}")]
    Unverified(VerifyError),
    #[error("verified notification has an unexpected layout: {0}")]
    BadPayload(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments() {
        assert_eq!(Environment::parse("uat").unwrap().base_url(), UAT_BASE_URL);
        assert_eq!(
            Environment::parse("prod").unwrap().base_url(),
            PROD_BASE_URL
        );
        assert_eq!(
            Environment::parse("http://127.0.0.1:8080/finance-payment-service/")
                .unwrap()
                .base_url(),
            "http://127.0.0.1:8080/finance-payment-service"
        );
        assert!(Environment::parse("http://example.com/x").is_err());
        assert!(Environment::parse("ftp://127.0.0.1/").is_err());
        assert!(Environment::parse("not a url").is_err());
        assert!(Environment::parse("https://proxy.internal/fps").is_ok());
    }
}
