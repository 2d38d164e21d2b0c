//! Typed request and response models for every operation of the reference (§5–§7, §10).
//!
//! Owns: field names, wire types and field *order*. Requests are serialized through
//! `sign::canonical_bytes`, which sorts keys, so their declaration order does not matter.
//! Responses and notifications are emitted by the simulator in declaration order, which is the
//! documented order (reference §3.4: Starpay signs in its own order) — keep it so.
//!
//! Must not: know about HTTP, CSV or SQLite.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::{Centavos, MchId, MsgId, TrxState};
use crate::starpay::codes::Code;

/// Currency: only `PHP` exists on this API (reference §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "PHP")]
    Php,
}

/// Static QR status for 6.7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QrStatus {
    Enable,
    Disable,
}

/// One operation: where it goes, its `service` value, and what it answers.
pub trait Operation: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Path relative to the base URL.
    const PATH: &'static str;
    const SERVICE: &'static str;
    /// Section of the docs, for messages and logs.
    const SECTION: &'static str;
    type Response: ApiResponse;
    fn msg_id(&self) -> &MsgId;
}

/// Every response carries `code` and `message` (reference §4).
pub trait ApiResponse: Serialize + DeserializeOwned + Send + Sync + 'static {
    fn code(&self) -> &Code;
    fn message(&self) -> &str;
}

/// (section, path, service, provenance) for every signed operation: the one table of
/// undocumented decisions (reference §5), to be replaced when the real specification arrives.
pub struct Route {
    pub section: &'static str,
    pub path: &'static str,
    pub service: &'static str,
    pub provenance: &'static str,
}

pub const PATH_DISBURSE: &str = "/v1/disburse";
pub const PATH_DISBURSE_QUERY: &str = "/v1/disburse/query";
pub const PATH_BANK_LIST: &str = "/v1/disburse/query/receivers";
pub const PATH_DISBURSE_BALANCE: &str = "/v1/disburse/inquireBalance";
pub const PATH_REPAYMENT: &str = "/v1/repayment";
pub const PATH_REPAYMENT_QUERY: &str = "/v1/repayment/query";
pub const PATH_REPAYMENT_BALANCE: &str = "/v1/repayment/inquireBalance";
pub const PATH_HEALTH: &str = "/checkconnections";

/// The route for a section; panics only on a typo in this file (checked by a unit test).
const fn route(i: usize) -> &'static Route {
    &ROUTES_ARRAY[i]
}

// A const array so `route()` can be used in associated consts.
const ROUTES_ARRAY: [Route; 15] = [
    Route {
        section: "5.1",
        path: PATH_BANK_LIST,
        service: "pay.starpay.instapay.bank.list",
        provenance: "path Doc, service Observed",
    },
    Route {
        section: "5.2",
        path: PATH_DISBURSE,
        service: "pay.starpay.instapay.disburse",
        provenance: "Doc",
    },
    Route {
        section: "5.3",
        path: PATH_DISBURSE,
        service: "pay.starpay.wallet.disburse",
        provenance: "path Doc, service Decision (undocumented)",
    },
    Route {
        section: "5.4",
        path: PATH_DISBURSE_QUERY,
        service: "unified.disburse.query",
        provenance: "path Doc, service Decision",
    },
    Route {
        section: "5.6",
        path: PATH_DISBURSE_BALANCE,
        service: "unified.disburse.balance",
        provenance: "path Doc, service Decision (undocumented)",
    },
    Route {
        section: "5.7",
        path: PATH_DISBURSE,
        service: "pay.starpay.qrph.scan",
        provenance: "Decision (undocumented)",
    },
    Route {
        section: "5.8",
        path: PATH_DISBURSE,
        service: "pay.starpay.qrph.p2m.disburse",
        provenance: "Decision (undocumented)",
    },
    Route {
        section: "5.9",
        path: PATH_DISBURSE,
        service: "pay.starpay.qrph.p2p.disburse",
        provenance: "Decision (undocumented)",
    },
    Route {
        section: "6.1",
        path: PATH_REPAYMENT,
        service: "pay.starpay.repayment",
        provenance: "Observed",
    },
    Route {
        section: "6.2",
        path: PATH_REPAYMENT_QUERY,
        service: "unified.repayment.query",
        provenance: "Doc",
    },
    Route {
        section: "6.4",
        path: PATH_REPAYMENT,
        service: "pay.starpay.repayment.static",
        provenance: "path Doc, service Decision (undocumented)",
    },
    Route {
        section: "6.6",
        path: PATH_REPAYMENT_BALANCE,
        service: "unified.repayment.balance",
        provenance: "Decision (undocumented)",
    },
    Route {
        section: "6.7",
        path: PATH_REPAYMENT,
        service: "unified.repayment.static.status",
        provenance: "Decision (undocumented)",
    },
    Route {
        section: "6.8",
        path: PATH_REPAYMENT_QUERY,
        service: "unified.repayment.query.refno",
        provenance: "Decision (undocumented)",
    },
    Route {
        section: "6.9",
        path: PATH_REPAYMENT,
        service: "unified.repayment.cancel",
        provenance: "Decision (undocumented)",
    },
];

pub static ROUTES: &[Route] = &ROUTES_ARRAY;

/// Finds the route for a (path, service) pair, as the simulator dispatches (reference §5).
pub fn find_route(path: &str, service: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.path == path && r.service == service)
}

pub fn is_known_path(path: &str) -> bool {
    ROUTES.iter().any(|r| r.path == path)
}

macro_rules! operation {
    ($req:ty, $idx:expr, $resp:ty) => {
        impl Operation for $req {
            const PATH: &'static str = route($idx).path;
            const SERVICE: &'static str = route($idx).service;
            const SECTION: &'static str = route($idx).section;
            type Response = $resp;
            fn msg_id(&self) -> &MsgId {
                &self.msg_id
            }
        }
    };
}

macro_rules! api_response {
    ($($t:ty),*) => {$(
        impl ApiResponse for $t {
            fn code(&self) -> &Code { &self.code }
            fn message(&self) -> &str { &self.message }
        }
    )*};
}

// ---------------------------------------------------------------- requests

/// 5.1 Fund Disbursement List.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankListRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
}

/// 5.2 Fund Disbursement (InstaPay).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstapayDisburseRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub acct_no: String,
    pub acct_name: String,
    /// Always sent, `""` when none (reference §6 5.2).
    #[serde(default)]
    pub acct_middle_name: String,
    pub acct_last_name: String,
    pub receiving_bank: String,
    pub trx_amount: Centavos,
    pub currency: Currency,
    pub attach: Option<String>,
    pub notify_url: Option<String>,
}

/// 5.3 Fund Disbursement (Starpay to Starpay). Decision (undocumented): 5.2 without `receivingBank`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletDisburseRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub acct_no: String,
    pub acct_name: String,
    #[serde(default)]
    pub acct_middle_name: String,
    pub acct_last_name: String,
    pub trx_amount: Centavos,
    pub currency: Currency,
    pub attach: Option<String>,
    pub notify_url: Option<String>,
}

impl WalletDisburseRequest {
    /// The same payout to an account at `receiving_bank` over InstaPay (5.2 takes 5.3's
    /// fields plus the bank).
    pub fn into_bank(self, receiving_bank: String) -> InstapayDisburseRequest {
        let WalletDisburseRequest {
            msg_id,
            mch_id,
            acct_no,
            acct_name,
            acct_middle_name,
            acct_last_name,
            trx_amount,
            currency,
            attach,
            notify_url,
        } = self;
        InstapayDisburseRequest {
            receiving_bank,
            msg_id,
            mch_id,
            acct_no,
            acct_name,
            acct_middle_name,
            acct_last_name,
            trx_amount,
            currency,
            attach,
            notify_url,
        }
    }
}

/// 5.4 Fund Disbursement Query. `msg_id` is a fresh id for this query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisburseQueryRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub original_msg_id: MsgId,
}

impl DisburseQueryRequest {
    /// A query (fresh `msg_id`) of the payout sent as `original_msg_id`.
    pub fn of(msg_id: MsgId, mch_id: MchId, original_msg_id: MsgId) -> DisburseQueryRequest {
        DisburseQueryRequest {
            msg_id,
            mch_id,
            original_msg_id,
        }
    }
}

/// 5.6 Disbursement Balance Query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisburseBalanceRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
}

/// 5.7 Scan QR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanQrRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub qr_code: String,
}

/// 5.8 and 5.9 take the same fields: one declaration for both request types.
macro_rules! qr_disburse_request {
    ($(#[$doc:meta] $name:ident),+) => {$(
        #[$doc]
        #[serde_with::skip_serializing_none]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub msg_id: MsgId,
            pub mch_id: MchId,
            pub qr_code: String,
            pub trx_amount: Centavos,
            pub currency: Currency,
            pub attach: Option<String>,
            pub notify_url: Option<String>,
        }
    )+};
}

qr_disburse_request!(
    /// 5.8 Pay P2M QR.
    QrP2mDisburseRequest,
    /// 5.9 Pay P2P QR.
    QrP2pDisburseRequest
);

/// 6.1 Repayment (dynamic QR).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepaymentRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub notify_url: String,
    pub device_info: String,
    pub trx_amount: Centavos,
    pub currency: Currency,
    pub attach: Option<String>,
    pub time_start: Option<String>,
    pub time_expire: Option<String>,
    pub display_name: Option<String>,
}

/// 6.2 Repayment State Query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepaymentQueryRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub original_msg_id: MsgId,
}

impl RepaymentQueryRequest {
    /// A query (fresh `msg_id`) of the repayment created as `original_msg_id`.
    pub fn of(msg_id: MsgId, mch_id: MchId, original_msg_id: MsgId) -> RepaymentQueryRequest {
        RepaymentQueryRequest {
            msg_id,
            mch_id,
            original_msg_id,
        }
    }
}

/// 6.4 Repayment Static QR Generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticQrRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub device_info: String,
    pub display_name: String,
    pub notify_url: String,
}

/// 6.6 Repayment Balance Query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepaymentBalanceRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
}

/// 6.7 Edit Repayment Static QR Status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticQrStatusRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub device_info: String,
    pub qr_status: QrStatus,
}

/// 6.8 Repayment Query through RefNo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefNoQueryRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub ref_no: String,
}

/// 6.9 Repayment Cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepaymentCancelRequest {
    pub msg_id: MsgId,
    pub mch_id: MchId,
    pub original_msg_id: MsgId,
}

// --------------------------------------------------------------- responses
// Field order = documented emission order. Everything after code/message is optional because
// error responses carry only what could be parsed.

/// Bank entry of 5.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bank {
    pub bank_code: String,
    pub bank_name: String,
}

/// 5.1 response: `code, message, msgId, mchId, banks`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankListResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub banks: Option<Vec<Bank>>,
}

/// 5.2 / 5.3 / 5.8 / 5.9 response: `code, message, msgId, mchId, trxDate, trxAmount, trxState,
/// orderNo[, errorCode, errorMessage]`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisburseResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub trx_date: Option<String>,
    pub trx_amount: Option<Centavos>,
    pub trx_state: Option<TrxState>,
    pub order_no: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// 5.4 / 6.2 / 6.8 response: `code, message, msgId, mchId, trxDate, trxAmount, trxState,
/// originalMsgId, orderNo[, refNo][, errorCode, errorMessage]`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub trx_date: Option<String>,
    pub trx_amount: Option<Centavos>,
    pub trx_state: Option<TrxState>,
    pub original_msg_id: Option<String>,
    pub order_no: Option<String>,
    pub ref_no: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// 5.6 / 6.6 response: `code, message, msgId, mchId, balance, currency`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    /// Available balance in centavos (after holds of payouts in progress).
    pub balance: Option<Centavos>,
    pub currency: Option<String>,
}

/// 5.7 response: `code, message, msgId, mchId, qrType, acctName, acctNo, receivingBank[, trxAmount]`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanQrResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub qr_type: Option<String>,
    pub acct_name: Option<String>,
    pub acct_no: Option<String>,
    pub receiving_bank: Option<String>,
    pub trx_amount: Option<Centavos>,
}

/// 6.1 response: `code, message, msgId, mchId, orderNo, codeUrl, trxAmount, trxState`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepaymentResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub order_no: Option<String>,
    pub code_url: Option<String>,
    pub trx_amount: Option<Centavos>,
    pub trx_state: Option<TrxState>,
}

/// 6.4 response: `code, message, msgId, mchId, deviceInfo, codeUrl`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticQrResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub device_info: Option<String>,
    pub code_url: Option<String>,
}

/// 6.7 response: `code, message, msgId, mchId, deviceInfo, qrStatus`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticQrStatusResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub device_info: Option<String>,
    pub qr_status: Option<QrStatus>,
}

/// 6.9 response: `code, message, msgId, mchId, originalMsgId, orderNo, trxState`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    pub code: Code,
    pub message: String,
    pub msg_id: Option<String>,
    pub mch_id: Option<String>,
    pub original_msg_id: Option<String>,
    pub order_no: Option<String>,
    pub trx_state: Option<TrxState>,
}

/// Health check (2.1) answer: `{"code":"200","message":"success"}`, unsigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub code: Code,
    pub message: String,
}

/// Notification `request` for 5.5, 6.3 and 6.5 (reference §10), in emission order:
/// `code, message, trxDate, trxAmount, trxState, originalMsgId, orderNo, mchId[, deviceInfo]
/// [, refNo][, errorCode, errorMessage]`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub code: Code,
    pub message: String,
    pub trx_date: String,
    pub trx_amount: Centavos,
    pub trx_state: TrxState,
    pub original_msg_id: String,
    pub order_no: String,
    pub mch_id: String,
    /// 6.5 only: the static QR's terminal id.
    pub device_info: Option<String>,
    pub ref_no: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// The merchant's (unsigned) answer to a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationAck {
    pub code: Code,
    pub message: String,
}

/// A notification's payload may be one object or an array of them (reference §10).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NotificationPayload {
    One(Box<Notification>),
    Many(Vec<Notification>),
}

impl NotificationPayload {
    pub fn into_vec(self) -> Vec<Notification> {
        match self {
            NotificationPayload::One(n) => vec![*n],
            NotificationPayload::Many(v) => v,
        }
    }
}

operation!(BankListRequest, 0, BankListResponse);
operation!(InstapayDisburseRequest, 1, DisburseResponse);
operation!(WalletDisburseRequest, 2, DisburseResponse);
operation!(DisburseQueryRequest, 3, QueryResponse);
operation!(DisburseBalanceRequest, 4, BalanceResponse);
operation!(ScanQrRequest, 5, ScanQrResponse);
operation!(QrP2mDisburseRequest, 6, DisburseResponse);
operation!(QrP2pDisburseRequest, 7, DisburseResponse);
operation!(RepaymentRequest, 8, RepaymentResponse);
operation!(RepaymentQueryRequest, 9, QueryResponse);
operation!(StaticQrRequest, 10, StaticQrResponse);
operation!(RepaymentBalanceRequest, 11, BalanceResponse);
operation!(StaticQrStatusRequest, 12, StaticQrStatusResponse);
operation!(RefNoQueryRequest, 13, QueryResponse);
operation!(RepaymentCancelRequest, 14, CancelResponse);

api_response!(
    BankListResponse,
    DisburseResponse,
    QueryResponse,
    BalanceResponse,
    ScanQrResponse,
    RepaymentResponse,
    StaticQrResponse,
    StaticQrStatusResponse,
    CancelResponse,
    HealthResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_use_their_table_rows() {
        assert_eq!(
            InstapayDisburseRequest::SERVICE,
            "pay.starpay.instapay.disburse"
        );
        assert_eq!(RepaymentQueryRequest::PATH, "/v1/repayment/query");
        assert_eq!(DisburseQueryRequest::SECTION, "5.4");
    }

    #[test]
    fn routing_pairs_are_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.path == b.path && a.service == b.service),
                    "{} {}",
                    a.path,
                    a.service
                );
            }
        }
    }

    #[test]
    fn response_field_order_is_the_documented_one() {
        let r = QueryResponse {
            code: Code::new("200"),
            message: "success".into(),
            msg_id: Some("1861611528197906432".into()),
            mch_id: Some("101510000001".into()),
            trx_date: Some("2024-11-27T11:18:41+08:00".into()),
            trx_amount: Some(Centavos::new(10000)),
            trx_state: Some(TrxState::Processing),
            original_msg_id: Some("S110202411271861610566972481536".into()),
            order_no: Some("202411271108369119".into()),
            ref_no: None,
            error_code: None,
            error_message: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"code":"200","message":"success","msgId":"1861611528197906432","mchId":"101510000001","trxDate":"2024-11-27T11:18:41+08:00","trxAmount":10000,"trxState":"PROCESSING","originalMsgId":"S110202411271861610566972481536","orderNo":"202411271108369119"}"#
        );
    }

    #[test]
    fn notification_accepts_object_or_array() {
        let one = r#"{"code":"200","message":"success","trxDate":"d","trxAmount":"100","trxState":"SUCCESS","originalMsgId":"A1","orderNo":"O1","mchId":"M"}"#;
        let p: NotificationPayload = serde_json::from_str(one).unwrap();
        assert_eq!(p.into_vec().len(), 1);
        let many = format!("[{one},{one}]");
        let p: NotificationPayload = serde_json::from_str(&many).unwrap();
        assert_eq!(p.into_vec().len(), 2);
    }
}
