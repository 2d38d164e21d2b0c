//! One type per Starpay operation (reference §5–§7), each with its field checks (step 9 of the
//! §11 validation order) and its handler (step 10), in the style of mini-redis's
//! `Command::from_frame` / `Command::apply`: `Op::parse` picks the operation from the route's
//! section, `Op::apply` hands it to that operation's own `apply`.
//!
//! Owns: the per-operation field rules (which fields, in which order, with which limits — the
//! first one broken is the one named in `412 Illegal parameter: <field>`) and what each
//! operation does to the ledger and answers.
//!
//! Must not: look at the envelope, signatures, merchant status, rate limit or msgId reuse
//! (steps 1–8 stay in `http::process`, which holds the state lock across steps 5–10 and calls
//! into this module under it); apply response-side faults (`http::frame`); read the wall clock
//! (`Apply::now` is the simulated time taken before the lock).
//!
//! Invariant (determinism): seeded decisions keep their keys — the payout plan, settle jitter
//! and query lag are keyed by `mchId/msgId`; `commit_then_drop` by the request's fault key
//! (`Ctx::key`, which counts repeats of the msgId).

use serde_json::{Map, Value};

use super::faults::{self, FaultConfig};
use super::http::{error_outcome, ok_outcome, Ctx, Outcome};
use super::state::{NewDynamicQr, NewPayout, Order, OrderKind, OrderOrigin, Plan, State};
use super::{QrFixture, Shared, Tunables};
use crate::domain::{Centavos, MsgId, TrxState};
use crate::starpay::codes::Code;
use crate::starpay::model::{
    BalanceResponse, BankListResponse, CancelResponse, DisburseQueryRequest, DisburseResponse,
    Operation as _, QrStatus, QueryResponse, RepaymentResponse, ScanQrResponse, StaticQrResponse,
    StaticQrStatusResponse,
};

/// A success answer to the request in `ctx` (`code` 200, `message` "success", its msgId and
/// mchId echoed) with the operation's own fields.
macro_rules! success {
    ($ty:ident, $ctx:expr => { $($field:ident $(: $value:expr)?),* $(,)? }) => {
        $ty {
            code: Code::new("200"),
            message: "success".into(),
            msg_id: $ctx.msg_id.clone(),
            mch_id: $ctx.mch_id.clone(),
            $($field $(: $value)?),*
        }
    };
}

/// A request that passed steps 1–9: one variant per operation, carrying its checked fields.
pub(super) enum Op {
    /// 5.1
    BankList(BankList),
    /// 5.2, 5.3 (to an account) and 5.8, 5.9 (to a QR code).
    Disburse(Disburse),
    /// 5.4, 6.2
    QueryOrder(QueryOrder),
    /// 5.6, 6.6
    Balance(Balance),
    /// 5.7
    ScanQr(ScanQr),
    /// 6.1
    DynamicQr(DynamicQr),
    /// 6.4
    StaticQr(StaticQr),
    /// 6.7
    StaticQrStatus(StaticQrStatus),
    /// 6.8
    QueryRefNo(QueryRefNo),
    /// 6.9
    CancelQr(CancelQr),
}

/// What an operation's handler may use: everything `http::process` holds at step 10.
pub(super) struct Apply<'a> {
    pub shared: &'a Shared,
    pub t: &'a Tunables,
    /// The ledger, locked since step 5.
    pub state: &'a mut State,
    pub ctx: &'a Ctx,
    /// The route's `service` (what the order records).
    pub service: &'a str,
    pub mch_id: &'a str,
    /// The consumed msgId.
    pub msg_id: &'a str,
    /// Simulated ms, taken once before the state lock.
    pub now: u64,
}

impl Apply<'_> {
    /// The new order's origin: this request's merchant, msgId and service.
    fn origin(&self) -> OrderOrigin {
        OrderOrigin {
            mch_id: self.mch_id.to_string(),
            msg_id: self.msg_id.to_string(),
            service: self.service.to_string(),
        }
    }
}

impl Op {
    /// Step 9: the msgId's form, then the operation's fields in its documented order.
    /// `Err` names the first offending field.
    pub(super) fn parse(
        shared: &Shared,
        section: &str,
        map: &Map<String, Value>,
    ) -> Result<Op, &'static str> {
        let f = Fields(map);
        let msg_id = map.get("msgId").and_then(Value::as_str).unwrap_or("");
        if MsgId::new(msg_id).is_err() {
            return Err("msgId");
        }
        Ok(match section {
            "5.1" => Op::BankList(BankList),
            "5.2" | "5.3" => Op::Disburse(Disburse::parse_account(shared, section, &f)?),
            "5.8" | "5.9" => Op::Disburse(Disburse::parse_qr(shared, section, &f)?),
            "5.4" | "6.2" => Op::QueryOrder(QueryOrder(f.alnum("originalMsgId", 32)?)),
            "6.9" => Op::CancelQr(CancelQr(f.alnum("originalMsgId", 32)?)),
            "5.6" => Op::Balance(Balance { repayment: false }),
            "6.6" => Op::Balance(Balance { repayment: true }),
            "5.7" => Op::ScanQr(ScanQr(qr_fixture(shared, &f, "")?)),
            "6.1" => Op::DynamicQr(DynamicQr::parse(&f)?),
            "6.4" => Op::StaticQr(StaticQr::parse(&f)?),
            "6.7" => Op::StaticQrStatus(StaticQrStatus::parse(&f)?),
            "6.8" => Op::QueryRefNo(QueryRefNo(f.req("refNo", 32)?)),
            _ => return Err("service"),
        })
    }

    /// Step 10: the operation's handler. The msgId is already consumed.
    pub(super) fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        match self {
            Op::BankList(op) => op.apply(cx),
            Op::Disburse(op) => op.apply(cx),
            Op::QueryOrder(op) => op.apply(cx),
            Op::Balance(op) => op.apply(cx),
            Op::ScanQr(op) => op.apply(cx),
            Op::DynamicQr(op) => op.apply(cx),
            Op::StaticQr(op) => op.apply(cx),
            Op::StaticQrStatus(op) => op.apply(cx),
            Op::QueryRefNo(op) => op.apply(cx),
            Op::CancelQr(op) => op.apply(cx),
        }
    }
}

/// 5.1: the configured bank list.
pub(super) struct BankList;

impl BankList {
    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        ok_outcome(&success!(BankListResponse, cx.ctx => {
            banks: Some(cx.shared.banks.clone()),
        }))
    }
}

/// 5.2, 5.3, 5.8, 5.9: a payout, created with its planned outcome.
pub(super) struct Disburse {
    acct_no: String,
    amount: Centavos,
    notify_url: Option<String>,
}

impl Disburse {
    /// 5.2 (InstaPay: a known bank, the InstaPay cap) and 5.3 (wallet).
    fn parse_account(shared: &Shared, section: &str, f: &Fields<'_>) -> Result<Self, &'static str> {
        let acct_no = f.alnum("acctNo", 34)?;
        f.names()?;
        if section == "5.2" {
            let bank = f.req("receivingBank", 128)?;
            if !shared.banks.iter().any(|b| b.bank_name == bank) {
                return Err("receivingBank");
            }
        }
        let amount = f.amount(if section == "5.2" {
            instapay_cap()
        } else {
            None
        })?;
        f.currency()?;
        f.opt("attach", 92)?;
        let notify_url = f.url("notifyUrl")?;
        Ok(Disburse {
            acct_no,
            amount,
            notify_url,
        })
    }

    /// 5.8 (P2M) and 5.9 (P2P): the account comes from the QR fixture.
    fn parse_qr(shared: &Shared, section: &str, f: &Fields<'_>) -> Result<Self, &'static str> {
        let fixture = qr_fixture(shared, f, if section == "5.8" { "P2M" } else { "P2P" })?;
        let amount = f.amount(instapay_cap())?;
        f.currency()?;
        f.opt("attach", 92)?;
        let notify_url = f.url("notifyUrl")?;
        Ok(Disburse {
            acct_no: fixture.acct_no,
            amount,
            notify_url,
        })
    }

    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let Disburse {
            acct_no,
            amount,
            notify_url,
        } = self;
        let (shared, t, ctx) = (cx.shared, cx.t, cx.ctx);
        let f = &t.faults;
        let order_key = format!("{}/{}", cx.mch_id, cx.msg_id);
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
        let index = cx.state.create_payout(
            NewPayout {
                origin: cx.origin(),
                acct_no,
                trx_amount: amount,
                notify_url,
                plan,
                settle_after: shared.config.settle_delay_ms + jitter,
                late_reversal,
                query_lag,
            },
            cx.now,
        );
        let o = &cx.state.orders[index];
        let response = success!(DisburseResponse, ctx => {
            trx_date: Some(o.trx_date.clone()),
            trx_amount: Some(o.trx_amount),
            trx_state: Some(o.state.clone()),
            order_no: Some(o.order_no.clone()),
            error_code: o.error_code.clone().filter(|_| o.state == TrxState::Fail),
            error_message: o
                .error_message
                .clone()
                .filter(|_| o.state == TrxState::Fail),
        });
        shared.wake.notify_one();
        ok_then_drop(&response, drop)
    }
}

/// 5.4 (a payout) and 6.2 (a repayment order) by `originalMsgId`.
pub(super) struct QueryOrder(String);

impl QueryOrder {
    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let payout_query = cx.service == DisburseQueryRequest::SERVICE;
        match cx.state.find(cx.mch_id, &self.0) {
            // A payout is not visible to its query before its (seeded) query lag has passed.
            Some(o)
                if payout_query
                    && o.kind == OrderKind::Payout
                    && o.query_visible_at_ms <= cx.now =>
            {
                answer_query(o, cx.ctx)
            }
            Some(o) if !payout_query && o.kind != OrderKind::Payout => answer_query(o, cx.ctx),
            _ => not_found(cx.ctx),
        }
    }
}

/// 5.6 (disbursement) and 6.6 (repayment) balance.
pub(super) struct Balance {
    repayment: bool,
}

impl Balance {
    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let m = cx.state.merchants.get(cx.mch_id);
        let balance = m.map(|m| {
            if self.repayment {
                m.repayment
            } else {
                m.disbursement
            }
        });
        ok_outcome(&success!(BalanceResponse, cx.ctx => {
            balance,
            currency: Some("PHP".into()),
        }))
    }
}

/// 5.7: what a configured QR code pays to.
pub(super) struct ScanQr(QrFixture);

impl ScanQr {
    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let q = self.0;
        ok_outcome(&success!(ScanQrResponse, cx.ctx => {
            qr_type: Some(q.qr_type),
            acct_name: Some(q.acct_name),
            acct_no: Some(q.acct_no),
            receiving_bank: Some(q.receiving_bank),
            trx_amount: q.trx_amount.map(Centavos::new),
        }))
    }
}

/// 6.1: a dynamic QR (a repayment order waiting for its payer).
pub(super) struct DynamicQr {
    device_info: String,
    amount: Centavos,
    notify_url: String,
    /// Manila `yyyyMMddHHmmss`, already checked.
    expire_at: Option<String>,
}

impl DynamicQr {
    fn parse(f: &Fields<'_>) -> Result<Self, &'static str> {
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
        Ok(DynamicQr {
            device_info,
            amount,
            notify_url,
            expire_at,
        })
    }

    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let (shared, t, ctx) = (cx.shared, cx.t, cx.ctx);
        let f = &t.faults;
        let default_expiry = cx.now + shared.config.qr_expiry_secs.saturating_mul(1_000);
        let expire_at = self
            .expire_at
            .and_then(|s| expire_ms(cx.state, &s))
            .unwrap_or(default_expiry);
        let index = cx.state.create_dynamic_qr(
            NewDynamicQr {
                origin: cx.origin(),
                device_info: self.device_info,
                trx_amount: self.amount,
                notify_url: self.notify_url,
                expire_at,
            },
            cx.now,
        );
        let o = &cx.state.orders[index];
        let response = success!(RepaymentResponse, ctx => {
            order_no: Some(o.order_no.clone()),
            code_url: Some(State::dynamic_code_url(o)),
            trx_amount: Some(o.trx_amount),
            trx_state: Some(o.state.clone()),
        });
        let drop = (f.faults_on.covers(ctx.section)
            && faults::roll(t.seed, "commit_then_drop", &ctx.key, f.commit_then_drop))
        .then_some("commit_then_drop");
        ok_then_drop(&response, drop)
    }
}

/// 6.4: a static QR for a device (created, or the existing one returned).
pub(super) struct StaticQr {
    device_info: String,
    display_name: String,
    notify_url: String,
}

impl StaticQr {
    fn parse(f: &Fields<'_>) -> Result<Self, &'static str> {
        let device_info = f.req("deviceInfo", 32)?;
        let display_name = f.req("displayName", 64)?;
        let notify_url = f.url("notifyUrl")?.ok_or("notifyUrl")?;
        Ok(StaticQr {
            device_info,
            display_name,
            notify_url,
        })
    }

    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let qr = cx.state.generate_static_qr(
            cx.mch_id,
            &self.device_info,
            &self.display_name,
            &self.notify_url,
        );
        ok_outcome(&success!(StaticQrResponse, cx.ctx => {
            device_info: Some(qr.device_info),
            code_url: Some(qr.code_url),
        }))
    }
}

/// 6.7: enable or disable a device's static QR.
pub(super) struct StaticQrStatus {
    device_info: String,
    status: QrStatus,
}

impl StaticQrStatus {
    fn parse(f: &Fields<'_>) -> Result<Self, &'static str> {
        let device_info = f.req("deviceInfo", 32)?;
        let status = match f.0.get("qrStatus").and_then(Value::as_str) {
            Some("ENABLE") => QrStatus::Enable,
            Some("DISABLE") => QrStatus::Disable,
            _ => return Err("qrStatus"),
        };
        Ok(StaticQrStatus {
            device_info,
            status,
        })
    }

    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        let enable = self.status == QrStatus::Enable;
        match cx
            .state
            .set_static_qr_enabled(cx.mch_id, &self.device_info, enable)
        {
            Some(()) => ok_outcome(&success!(StaticQrStatusResponse, cx.ctx => {
                device_info: Some(self.device_info),
                qr_status: Some(self.status),
            })),
            None => not_found(cx.ctx),
        }
    }
}

/// 6.8: a repayment order by its `refNo`.
pub(super) struct QueryRefNo(String);

impl QueryRefNo {
    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        match cx.state.find_by_ref_no(cx.mch_id, &self.0) {
            Some(o) if o.kind != OrderKind::Payout => answer_query(o, cx.ctx),
            _ => not_found(cx.ctx),
        }
    }
}

/// 6.9: cancel a dynamic QR by `originalMsgId`.
pub(super) struct CancelQr(String);

impl CancelQr {
    fn apply(self, cx: &mut Apply<'_>) -> Outcome {
        match cx.state.cancel_dynamic_qr(cx.mch_id, &self.0, cx.now) {
            Some(index) => {
                let o = &cx.state.orders[index];
                ok_outcome(&success!(CancelResponse, cx.ctx => {
                    original_msg_id: Some(o.msg_id.clone()),
                    order_no: Some(o.order_no.clone()),
                    trx_state: Some(o.state.clone()),
                }))
            }
            None => not_found(cx.ctx),
        }
    }
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

/// A 200 answer that, when `drop` is set, is committed and then not sent (the connection closes).
fn ok_then_drop<T: serde::Serialize>(value: &T, drop: Option<&'static str>) -> Outcome {
    match ok_outcome(value) {
        Outcome::Answer { payload, code, .. } => Outcome::Answer {
            payload,
            code,
            drop_after_commit: drop,
        },
        other => other,
    }
}

fn query_response(o: &Order, ctx: &Ctx) -> QueryResponse {
    success!(QueryResponse, ctx => {
        trx_date: Some(o.trx_date.clone()),
        trx_amount: Some(o.trx_amount),
        trx_state: Some(o.state.clone()),
        original_msg_id: Some(o.msg_id.clone()),
        order_no: Some(o.order_no.clone()),
        ref_no: o.ref_no.clone(),
        error_code: o.error_code.clone(),
        error_message: o.error_message.clone(),
    })
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

fn std_message(code: &str) -> &'static str {
    Code::new(code).entry().map_or("error", |e| e.message)
}

/// Manila `yyyyMMddHHmmss` → simulated ms (clamped at 0).
fn expire_ms(state: &State, stamp: &str) -> Option<u64> {
    let naive = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").ok()?;
    let at = naive.and_local_timezone(super::state::manila()).single()?;
    let zero = state.manila_time(0);
    let ms = (at - zero).num_milliseconds();
    Some(u64::try_from(ms).unwrap_or(0))
}

fn instapay_cap() -> Option<i64> {
    Some(crate::domain::money::INSTAPAY_CAP.get())
}

/// The configured QR fixture for `qrCode`, of type `want` (`""`: any type).
fn qr_fixture(shared: &Shared, f: &Fields<'_>, want: &str) -> Result<QrFixture, &'static str> {
    let code = f.req("qrCode", 512)?;
    shared
        .config
        .qr_fixtures
        .iter()
        .find(|q| q.qr_code == code && (want.is_empty() || q.qr_type == want))
        .cloned()
        .ok_or("qrCode")
}

fn manila_stamp_ok(s: &str) -> bool {
    s.len() == 14
        && s.bytes().all(|b| b.is_ascii_digit())
        && chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").is_ok()
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
}
