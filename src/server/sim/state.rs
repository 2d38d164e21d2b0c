//! The simulator's ground truth: orders, balances, consumed msgIds, static QR codes and the
//! timers that move orders through their lifecycle (reference §11).
//!
//! Owns: every state transition and every balance movement. Pure: no I/O, no clock, no
//! randomness — the caller passes `now` (simulated milliseconds since start) and the already
//! decided outcome of each payout, so every rule here is unit-tested without a server.
//!
//! Invariants:
//! - a payout's amount is debited from the available disbursement balance exactly once on
//!   acceptance and refunded exactly once on `FAIL`/`REVERSED` (`debited` tracks it);
//! - a final state is only left for `SUCCESS → REVERSED` (or by an explicit `force`);
//! - each final state queues exactly one notification job in `outbox`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, Offset, Utc};
use serde::{Deserialize, Serialize};

use super::{FixtureKind, OrderFixture};
use crate::domain::{Centavos, TrxState};
use crate::starpay::codes::Code;
use crate::starpay::model::Notification;

/// Simulated time in milliseconds since the simulator started.
pub type SimMillis = u64;

/// Manila offset (reference §1: date-times on the wire are UTC+08:00).
pub fn manila() -> FixedOffset {
    // 8 h is always a valid offset; the fallback is unreachable but keeps this total.
    match FixedOffset::east_opt(8 * 3600) {
        Some(offset) => offset,
        None => Utc.fix(),
    }
}

/// What kind of order this is; decides which queries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OrderKind {
    Payout,
    DynamicQr,
    StaticQrPayment,
}

/// The planned result of a payout, decided on acceptance (acctNo suffix, then seeded faults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Success,
    /// `SUCCESS`, then `REVERSED` after `reversal_delay`.
    SuccessThenReverse,
    Fail(String),
    /// `PROCESSING` + `AB05` for `timeout_hold`, then `SUCCESS` (late credit).
    TimeoutThenSuccess,
    /// `PROCESSING` + `AB05` for `timeout_hold`, then `FAIL AB05`.
    TimeoutThenFail,
    /// Stays `PROCESSING` forever.
    Forever,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Settle,
    TimeoutResolve,
    Reverse,
    Expire,
}

/// Lifecycle delays, in simulated milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    pub timeout_hold: SimMillis,
    pub reversal_delay: SimMillis,
}

/// One state change, for the ledger's history.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    pub at_ms: SimMillis,
    pub state: String,
    pub error_code: Option<String>,
    pub cause: String,
}

impl StateChange {
    fn new(at_ms: SimMillis, state: &str, error_code: Option<String>, cause: &str) -> StateChange {
        StateChange {
            at_ms,
            state: state.to_string(),
            error_code,
            cause: cause.to_string(),
        }
    }
}

/// One notification delivery attempt (or a decision not to deliver).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationAttempt {
    pub at_ms: SimMillis,
    pub trx_state: String,
    pub attempt: u32,
    pub url: Option<String>,
    pub delivered: bool,
    pub result: String,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub seq: u64,
    pub kind: OrderKind,
    pub msg_id: String,
    pub order_no: String,
    pub service: String,
    pub mch_id: String,
    pub acct_no: Option<String>,
    pub device_info: Option<String>,
    pub trx_amount: Centavos,
    pub state: TrxState,
    pub trx_date: String,
    pub created_ms: SimMillis,
    pub ref_no: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub notify_url: Option<String>,
    pub plan: Plan,
    pub late_reversal: bool,
    /// Queries answer 404 until then (query-lag fault).
    pub query_visible_at_ms: SimMillis,
    pub debited: bool,
    /// Fixture flag: every query about this order gets a 502 (the "queries keep failing" case).
    pub unanswerable: bool,
    pub create_requests: u32,
    pub history: Vec<StateChange>,
    pub notifications: Vec<NotificationAttempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MerchantStatus {
    Active,
    Suspended,
}

#[derive(Debug, Clone)]
pub struct MerchantState {
    pub status: MerchantStatus,
    /// Empty = every service enabled.
    pub services: Vec<String>,
    pub notify_url: Option<String>,
    /// Available disbursement balance (after holds of payouts in progress).
    pub disbursement: Centavos,
    pub repayment: Centavos,
}

impl MerchantState {
    pub fn service_enabled(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == service)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticQr {
    pub mch_id: String,
    pub device_info: String,
    pub display_name: String,
    pub notify_url: String,
    pub code_url: String,
    pub enabled: bool,
}

/// A notification to deliver: produced here, delivered by `notify`.
#[derive(Debug, Clone)]
pub struct NotifyJob {
    pub generation: u64,
    pub order_index: usize,
    pub url: Option<String>,
    pub notification: Notification,
    pub due_ms: SimMillis,
}

/// Errors of the control API (payer actions, forced states).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no order with orderNo {0}")]
    UnknownOrder(String),
    #[error("order {order_no} is {state}, not a payable PROCESSING dynamic QR")]
    NotPayable { order_no: String, state: String },
    #[error("no static QR {device_info} for merchant {mch_id}")]
    UnknownStaticQr { mch_id: String, device_info: String },
    #[error("static QR {0} is disabled; the payer's payment fails")]
    StaticQrDisabled(String),
    #[error("unknown merchant {0}")]
    UnknownMerchant(String),
    #[error("amount must be at least 1 centavo")]
    BadAmount,
}

/// Input for a new payout, already validated.
#[derive(Debug, Clone)]
pub struct NewPayout {
    pub origin: OrderOrigin,
    pub acct_no: String,
    pub trx_amount: Centavos,
    pub notify_url: Option<String>,
    pub plan: Plan,
    pub settle_after: SimMillis,
    pub late_reversal: bool,
    pub query_lag: SimMillis,
}

/// Who created an order: the merchant, the msgId of the request and its route's service.
#[derive(Debug, Clone)]
pub struct OrderOrigin {
    pub mch_id: String,
    pub msg_id: String,
    pub service: String,
}

/// Input for a new dynamic QR (6.1), already validated.
#[derive(Debug, Clone)]
pub struct NewDynamicQr {
    pub origin: OrderOrigin,
    pub device_info: String,
    pub trx_amount: Centavos,
    pub notify_url: String,
    pub expire_at: SimMillis,
}

/// Balances as shown in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceSnapshot {
    pub disbursement: i64,
    pub repayment: i64,
}

#[derive(Debug)]
pub struct State {
    pub generation: u64,
    base_utc: DateTime<Utc>,
    delays: Delays,
    next_seq: u64,
    pub orders: Vec<Order>,
    by_msg_id: HashMap<(String, String), usize>,
    by_order_no: HashMap<String, usize>,
    by_ref_no: HashMap<String, usize>,
    consumed: HashSet<(String, String)>,
    /// How many requests carried each (mchId, msgId), whatever became of them.
    seen: HashMap<(String, String), u32>,
    pub merchants: BTreeMap<String, MerchantState>,
    pub static_qrs: BTreeMap<(String, String), StaticQr>,
    timers: BinaryHeap<Reverse<(SimMillis, u64, usize, TimerKind)>>,
    outbox: Vec<NotifyJob>,
}

impl State {
    pub fn new(
        base_utc: DateTime<Utc>,
        delays: Delays,
        merchants: BTreeMap<String, MerchantState>,
    ) -> State {
        State {
            generation: 0,
            base_utc,
            delays,
            next_seq: 1,
            orders: Vec::new(),
            by_msg_id: HashMap::new(),
            by_order_no: HashMap::new(),
            by_ref_no: HashMap::new(),
            consumed: HashSet::new(),
            seen: HashMap::new(),
            merchants,
            static_qrs: BTreeMap::new(),
            timers: BinaryHeap::new(),
            outbox: Vec::new(),
        }
    }

    /// Forgets every order and msgId; merchants and balances are replaced by `merchants`.
    pub fn reset(&mut self, merchants: BTreeMap<String, MerchantState>) {
        let generation = self.generation + 1;
        *self = State::new(self.base_utc, self.delays, merchants);
        self.generation = generation;
    }

    pub fn set_delays(&mut self, delays: Delays) {
        self.delays = delays;
    }

    /// Wall-clock instant shown on the wire for a simulated time.
    pub fn manila_time(&self, at: SimMillis) -> DateTime<FixedOffset> {
        let ms = i64::try_from(at).unwrap_or(i64::MAX);
        (self.base_utc + ChronoDuration::milliseconds(ms)).with_timezone(&manila())
    }

    /// `yyyy-MM-dd'T'HH:mm:ss+08:00` (reference §4 `trxDate`).
    pub fn trx_date(&self, at: SimMillis) -> String {
        self.manila_time(at)
            .format("%Y-%m-%dT%H:%M:%S+08:00")
            .to_string()
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// `yyyyMMdd` + 10 digits (reference §4 `orderNo`).
    fn order_no(&self, at: SimMillis, seq: u64) -> String {
        format!(
            "{}{:010}",
            self.manila_time(at).format("%Y%m%d"),
            seq % 10_000_000_000
        )
    }

    /// 16 digits (reference §4 `refNo`), unique per order.
    fn ref_no(seq: u64) -> String {
        format!("7{:015}", seq % 1_000_000_000_000_000)
    }

    /// Counts a request carrying (mchId, msgId) and returns how many came before it.
    pub fn note_seen(&mut self, mch_id: &str, msg_id: &str) -> u32 {
        let n = self
            .seen
            .entry((mch_id.to_string(), msg_id.to_string()))
            .or_insert(0);
        let before = *n;
        *n += 1;
        before
    }

    pub fn is_consumed(&self, mch_id: &str, msg_id: &str) -> bool {
        self.consumed
            .contains(&(mch_id.to_string(), msg_id.to_string()))
    }

    /// Step 10 consumes the msgId (reference §11).
    pub fn consume(&mut self, mch_id: &str, msg_id: &str) {
        self.consumed
            .insert((mch_id.to_string(), msg_id.to_string()));
    }

    /// A create request rejected as repeated still counts for its order (`createRequests`).
    pub fn count_repeated_create(&mut self, mch_id: &str, msg_id: &str) {
        if let Some(&i) = self
            .by_msg_id
            .get(&(mch_id.to_string(), msg_id.to_string()))
        {
            self.orders[i].create_requests += 1;
        }
    }

    pub fn find(&self, mch_id: &str, msg_id: &str) -> Option<&Order> {
        self.by_msg_id
            .get(&(mch_id.to_string(), msg_id.to_string()))
            .map(|&i| &self.orders[i])
    }

    pub fn find_by_ref_no(&self, mch_id: &str, ref_no: &str) -> Option<&Order> {
        self.by_ref_no
            .get(ref_no)
            .map(|&i| &self.orders[i])
            .filter(|o| o.mch_id == mch_id)
    }

    fn push_timer(&mut self, due: SimMillis, index: usize, kind: TimerKind) {
        let seq = self.orders[index].seq;
        self.timers.push(Reverse((due, seq, index, kind)));
    }

    fn insert(&mut self, order: Order) -> usize {
        let index = self.orders.len();
        self.by_msg_id
            .insert((order.mch_id.clone(), order.msg_id.clone()), index);
        self.by_order_no.insert(order.order_no.clone(), index);
        if let Some(r) = &order.ref_no {
            self.by_ref_no.insert(r.clone(), index);
        }
        self.orders.push(order);
        index
    }

    fn set_state(
        &mut self,
        index: usize,
        at: SimMillis,
        state: TrxState,
        error: Option<&str>,
        cause: &str,
    ) {
        let o = &mut self.orders[index];
        o.state = state.clone();
        o.error_code = error.map(str::to_string);
        o.error_message = error.map(|c| {
            crate::starpay::codes::reason_message(c)
                .unwrap_or("Unspecified reason")
                .to_string()
        });
        let error_code = o.error_code.clone();
        o.history
            .push(StateChange::new(at, state.as_str(), error_code, cause));
        // Money: refund a held payout amount on FAIL/REVERSED (reference §11).
        if o.kind == OrderKind::Payout
            && o.debited
            && matches!(
                state,
                TrxState::Fail | TrxState::Reversed | TrxState::Close | TrxState::Cancel
            )
        {
            o.debited = false;
            let (mch, amount) = (o.mch_id.clone(), o.trx_amount);
            if let Some(m) = self.merchants.get_mut(&mch) {
                m.disbursement = m.disbursement.checked_add(amount).unwrap_or(m.disbursement);
            }
        }
        if state.is_final() && !(o.kind == OrderKind::DynamicQr && state == TrxState::Cancel) {
            self.queue_notification(index, at);
        }
    }

    fn assign_ref_no(&mut self, index: usize) {
        if self.orders[index].ref_no.is_none() {
            let r = Self::ref_no(self.orders[index].seq);
            self.by_ref_no.insert(r.clone(), index);
            self.orders[index].ref_no = Some(r);
        }
    }

    fn queue_notification(&mut self, index: usize, at: SimMillis) {
        let o = &self.orders[index];
        let url = o.notify_url.clone().or_else(|| {
            self.merchants
                .get(&o.mch_id)
                .and_then(|m| m.notify_url.clone())
        });
        let notification = Notification {
            code: Code::new("200"),
            message: "success".into(),
            trx_date: o.trx_date.clone(),
            trx_amount: o.trx_amount,
            trx_state: o.state.clone(),
            original_msg_id: o.msg_id.clone(),
            order_no: o.order_no.clone(),
            mch_id: o.mch_id.clone(),
            // 6.3 is "as 6.5" (reference §7): a dynamic QR's result carries the terminal id
            // it was created with, as a static QR payment does; a payout's does not.
            device_info: if matches!(o.kind, OrderKind::StaticQrPayment | OrderKind::DynamicQr) {
                o.device_info.clone()
            } else {
                None
            },
            ref_no: o.ref_no.clone(),
            error_code: o.error_code.clone(),
            error_message: o.error_message.clone(),
        };
        self.outbox.push(NotifyJob {
            generation: self.generation,
            order_index: index,
            url,
            notification,
            due_ms: at,
        });
    }

    /// Notifications queued since the last call.
    pub fn take_outbox(&mut self) -> Vec<NotifyJob> {
        std::mem::take(&mut self.outbox)
    }

    pub fn record_notification(&mut self, generation: u64, index: usize, a: NotificationAttempt) {
        if generation == self.generation {
            if let Some(o) = self.orders.get_mut(index) {
                o.notifications.push(a);
            }
        }
    }

    /// Applies every timer due at or before `now`, in (due, creation) order.
    pub fn advance_to(&mut self, now: SimMillis) {
        while let Some(Reverse((due, _, index, kind))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            self.fire(index, kind, due);
        }
    }

    fn fire(&mut self, index: usize, kind: TimerKind, at: SimMillis) {
        let Some(o) = self.orders.get(index) else {
            return;
        };
        let state = o.state.clone();
        let plan = o.plan.clone();
        match (kind, state) {
            (TimerKind::Settle, TrxState::Processing) => match plan {
                Plan::Success | Plan::SuccessThenReverse => {
                    self.assign_ref_no(index);
                    self.set_state(index, at, TrxState::Success, None, "settled");
                    let reverse =
                        plan == Plan::SuccessThenReverse || self.orders[index].late_reversal;
                    if reverse {
                        self.push_timer(at + self.delays.reversal_delay, index, TimerKind::Reverse);
                    }
                }
                Plan::Fail(code) => {
                    self.set_state(index, at, TrxState::Fail, Some(&code), "rail rejected")
                }
                Plan::TimeoutThenSuccess | Plan::TimeoutThenFail => {
                    self.assign_ref_no(index);
                    self.set_state(
                        index,
                        at,
                        TrxState::Processing,
                        Some("AB05"),
                        "creditor agent timeout",
                    );
                    self.push_timer(
                        at + self.delays.timeout_hold,
                        index,
                        TimerKind::TimeoutResolve,
                    );
                }
                Plan::Forever => {}
            },
            (TimerKind::TimeoutResolve, TrxState::Processing) => match plan {
                Plan::TimeoutThenSuccess => {
                    self.set_state(index, at, TrxState::Success, None, "late credit")
                }
                _ => self.set_state(index, at, TrxState::Fail, Some("AB05"), "timeout final"),
            },
            (TimerKind::Reverse, TrxState::Success) => {
                self.set_state(index, at, TrxState::Reversed, Some("MS03"), "reversed")
            }
            (TimerKind::Expire, TrxState::Processing) => {
                self.set_state(index, at, TrxState::Close, None, "expired unpaid")
            }
            _ => {}
        }
    }

    fn new_order(&mut self, kind: OrderKind, at: SimMillis, origin: &OrderOrigin) -> Order {
        let seq = self.take_seq();
        Order {
            seq,
            kind,
            msg_id: origin.msg_id.clone(),
            order_no: self.order_no(at, seq),
            service: origin.service.clone(),
            mch_id: origin.mch_id.clone(),
            acct_no: None,
            device_info: None,
            trx_amount: Centavos::ZERO,
            state: TrxState::Processing,
            trx_date: self.trx_date(at),
            created_ms: at,
            ref_no: None,
            error_code: None,
            error_message: None,
            notify_url: None,
            plan: Plan::Success,
            late_reversal: false,
            query_visible_at_ms: at,
            debited: false,
            unanswerable: false,
            create_requests: 1,
            history: Vec::new(),
            notifications: Vec::new(),
        }
    }

    /// Loads a pre-existing transaction (a fixture: the history a reconciliation checks
    /// against). No notification is queued and no balance moves: the fixture is the past.
    pub fn load_fixture(&mut self, f: &OrderFixture, now: SimMillis) -> usize {
        let (kind, service) = match f.kind {
            FixtureKind::Payout => (OrderKind::Payout, "pay.starpay.instapay.disburse"),
            FixtureKind::DynamicQr => (OrderKind::DynamicQr, "pay.starpay.repayment"),
            FixtureKind::StaticQrPayment => {
                (OrderKind::StaticQrPayment, "pay.starpay.repayment.static")
            }
        };
        let origin = OrderOrigin {
            mch_id: f.mch_id.clone(),
            msg_id: f.msg_id.clone(),
            service: service.to_string(),
        };
        let mut o = self.new_order(kind, now, &origin);
        o.acct_no = f.acct_no.clone();
        o.device_info = f.device_info.clone();
        o.trx_amount = Centavos::new(f.trx_amount);
        o.state = TrxState::parse(&f.state);
        o.plan = Plan::Forever;
        o.unanswerable = f.fail_queries;
        o.error_code = f.error_code.clone();
        o.error_message = f.error_code.as_deref().map(|c| {
            crate::starpay::codes::reason_message(c)
                .unwrap_or("Unspecified reason")
                .to_string()
        });
        // `SimConfig::validate` bounds `age_secs`; saturate anyway rather than panic.
        let age = i64::try_from(f.age_secs)
            .ok()
            .and_then(ChronoDuration::try_seconds)
            .unwrap_or_else(ChronoDuration::zero);
        let at = self.manila_time(now);
        o.trx_date = at
            .checked_sub_signed(age)
            .unwrap_or(at)
            .format("%Y-%m-%dT%H:%M:%S+08:00")
            .to_string();
        let error_code = f.error_code.clone();
        o.history
            .push(StateChange::new(now, &f.state, error_code, "fixture"));
        let index = self.insert(o);
        match &f.ref_no {
            Some(r) => {
                self.by_ref_no.insert(r.clone(), index);
                self.orders[index].ref_no = Some(r.clone());
            }
            None if matches!(
                self.orders[index].state,
                TrxState::Success | TrxState::Reversed
            ) =>
            {
                self.assign_ref_no(index)
            }
            None => {}
        }
        self.consume(&f.mch_id, &f.msg_id);
        index
    }

    /// Accepts a payout (5.2/5.3/5.8/5.9): debits the balance, or fails it at once with `AM04`
    /// when the available balance is too low (reference §11). Returns the order index.
    pub fn create_payout(&mut self, p: NewPayout, now: SimMillis) -> usize {
        let mut o = self.new_order(OrderKind::Payout, now, &p.origin);
        o.acct_no = Some(p.acct_no);
        o.trx_amount = p.trx_amount;
        o.notify_url = p.notify_url;
        o.plan = p.plan;
        o.late_reversal = p.late_reversal;
        o.query_visible_at_ms = now + p.query_lag;
        o.history
            .push(StateChange::new(now, "PROCESSING", None, "accepted"));
        let index = self.insert(o);
        let funded = match self.merchants.get_mut(&p.origin.mch_id) {
            Some(m) if m.disbursement >= p.trx_amount => {
                m.disbursement = m
                    .disbursement
                    .checked_sub(p.trx_amount)
                    .unwrap_or(m.disbursement);
                true
            }
            _ => false,
        };
        if funded {
            self.orders[index].debited = true;
            self.push_timer(now + p.settle_after, index, TimerKind::Settle);
        } else {
            self.set_state(
                index,
                now,
                TrxState::Fail,
                Some("AM04"),
                "insufficient funds",
            );
        }
        index
    }

    /// Creates a dynamic QR (6.1) in `PROCESSING`, expiring to `CLOSE` at `expire_at`.
    pub fn create_dynamic_qr(&mut self, q: NewDynamicQr, now: SimMillis) -> usize {
        let mut o = self.new_order(OrderKind::DynamicQr, now, &q.origin);
        o.device_info = Some(q.device_info);
        o.trx_amount = q.trx_amount;
        o.notify_url = Some(q.notify_url);
        o.plan = Plan::Forever;
        o.history
            .push(StateChange::new(now, "PROCESSING", None, "QR created"));
        let index = self.insert(o);
        self.push_timer(q.expire_at.max(now), index, TimerKind::Expire);
        index
    }

    /// The QR Ph payload the simulator hands out (opaque; the simulator decodes nothing).
    pub fn dynamic_code_url(order: &Order) -> String {
        format!(
            "00020101021228SIMQRPH{}5303608540{}6304SIM",
            order.order_no,
            order.trx_amount.get()
        )
    }

    /// 6.4: same `deviceInfo` gives the same `codeUrl`.
    pub fn generate_static_qr(
        &mut self,
        mch_id: &str,
        device_info: &str,
        display_name: &str,
        notify_url: &str,
    ) -> StaticQr {
        let key = (mch_id.to_string(), device_info.to_string());
        let qr = self.static_qrs.entry(key).or_insert_with(|| StaticQr {
            mch_id: mch_id.to_string(),
            device_info: device_info.to_string(),
            display_name: display_name.to_string(),
            notify_url: notify_url.to_string(),
            code_url: format!("00020101021128SIMSTATIC{mch_id}{device_info}6304SIM"),
            enabled: true,
        });
        qr.display_name = display_name.to_string();
        qr.notify_url = notify_url.to_string();
        qr.clone()
    }

    /// 6.7; `None` when the static QR is unknown (404).
    pub fn set_static_qr_enabled(
        &mut self,
        mch_id: &str,
        device_info: &str,
        enabled: bool,
    ) -> Option<()> {
        let qr = self
            .static_qrs
            .get_mut(&(mch_id.to_string(), device_info.to_string()))?;
        qr.enabled = enabled;
        Some(())
    }

    /// 6.9: cancels an unpaid dynamic QR; a final order keeps its state. `None` = unknown.
    pub fn cancel_dynamic_qr(
        &mut self,
        mch_id: &str,
        msg_id: &str,
        now: SimMillis,
    ) -> Option<usize> {
        let &index = self
            .by_msg_id
            .get(&(mch_id.to_string(), msg_id.to_string()))?;
        if self.orders[index].kind != OrderKind::DynamicQr {
            return None;
        }
        if self.orders[index].state == TrxState::Processing {
            self.set_state(
                index,
                now,
                TrxState::Cancel,
                None,
                "cancelled by merchant (6.9)",
            );
        }
        Some(index)
    }

    /// Control API: brings the simulated time to `now`, then finds the order it names.
    fn control_order(&mut self, order_no: &str, now: SimMillis) -> Result<usize, ControlError> {
        self.advance_to(now);
        self.by_order_no
            .get(order_no)
            .copied()
            .ok_or_else(|| ControlError::UnknownOrder(order_no.to_string()))
    }

    /// Control API: a simulated payer pays a dynamic QR.
    pub fn pay_dynamic_qr(
        &mut self,
        order_no: &str,
        now: SimMillis,
    ) -> Result<usize, ControlError> {
        let index = self.control_order(order_no, now)?;
        let o = &self.orders[index];
        if o.kind != OrderKind::DynamicQr || o.state != TrxState::Processing {
            return Err(ControlError::NotPayable {
                order_no: order_no.to_string(),
                state: o.state.as_str().to_string(),
            });
        }
        let (mch, amount) = (o.mch_id.clone(), o.trx_amount);
        self.credit_repayment(&mch, amount);
        self.assign_ref_no(index);
        self.set_state(index, now, TrxState::Success, None, "paid by payer");
        Ok(index)
    }

    /// Control API: a simulated payer pays a static QR; creates a `SUCCESS` order whose
    /// `originalMsgId` the simulator generates (reference §7 6.5).
    pub fn pay_static_qr(
        &mut self,
        mch_id: &str,
        device_info: &str,
        amount: Centavos,
        now: SimMillis,
    ) -> Result<usize, ControlError> {
        if !amount.is_positive() {
            return Err(ControlError::BadAmount);
        }
        let qr = self
            .static_qrs
            .get(&(mch_id.to_string(), device_info.to_string()))
            .cloned()
            .ok_or_else(|| ControlError::UnknownStaticQr {
                mch_id: mch_id.to_string(),
                device_info: device_info.to_string(),
            })?;
        if !qr.enabled {
            return Err(ControlError::StaticQrDisabled(device_info.to_string()));
        }
        let seq = self.next_seq;
        let msg_id = format!("{}{:010}", self.manila_time(now).format("%Y%m%d"), seq);
        let mut o = self.new_order(
            OrderKind::StaticQrPayment,
            now,
            &OrderOrigin {
                mch_id: mch_id.to_string(),
                msg_id,
                service: "pay.starpay.repayment.static".to_string(),
            },
        );
        o.device_info = Some(device_info.to_string());
        o.trx_amount = amount;
        o.notify_url = Some(qr.notify_url.clone());
        o.plan = Plan::Forever;
        let index = self.insert(o);
        self.credit_repayment(mch_id, amount);
        self.assign_ref_no(index);
        self.set_state(
            index,
            now,
            TrxState::Success,
            None,
            "static QR paid by payer",
        );
        Ok(index)
    }

    fn credit_repayment(&mut self, mch_id: &str, amount: Centavos) {
        if let Some(m) = self.merchants.get_mut(mch_id) {
            m.repayment = m.repayment.checked_add(amount).unwrap_or(m.repayment);
        }
    }

    /// Control API: force an order's state (balances follow the payout rules; a final state
    /// queues its notification).
    pub fn force_state(
        &mut self,
        order_no: &str,
        state: TrxState,
        error_code: Option<&str>,
        now: SimMillis,
    ) -> Result<usize, ControlError> {
        let index = self.control_order(order_no, now)?;
        if state == TrxState::Success {
            self.assign_ref_no(index);
        }
        self.set_state(index, now, state, error_code, "forced (control API)");
        // A forced final state must not be overtaken by a pending timer.
        self.orders[index].plan = Plan::Forever;
        Ok(index)
    }

    pub fn set_balances(
        &mut self,
        mch_id: &str,
        disbursement: Option<Centavos>,
        repayment: Option<Centavos>,
    ) -> Result<(), ControlError> {
        let m = self
            .merchants
            .get_mut(mch_id)
            .ok_or_else(|| ControlError::UnknownMerchant(mch_id.to_string()))?;
        if let Some(d) = disbursement {
            m.disbursement = d;
        }
        if let Some(r) = repayment {
            m.repayment = r;
        }
        Ok(())
    }

    pub fn set_merchant_status(
        &mut self,
        mch_id: &str,
        status: MerchantStatus,
    ) -> Result<(), ControlError> {
        let m = self
            .merchants
            .get_mut(mch_id)
            .ok_or_else(|| ControlError::UnknownMerchant(mch_id.to_string()))?;
        m.status = status;
        Ok(())
    }

    pub fn balances(&self) -> BTreeMap<String, BalanceSnapshot> {
        self.merchants
            .iter()
            .map(|(k, m)| {
                (
                    k.clone(),
                    BalanceSnapshot {
                        disbursement: m.disbursement.get(),
                        repayment: m.repayment.get(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(balance: i64) -> State {
        let mut merchants = BTreeMap::new();
        merchants.insert(
            "M1".to_string(),
            MerchantState {
                status: MerchantStatus::Active,
                services: vec![],
                notify_url: Some("http://127.0.0.1:1/n".into()),
                disbursement: Centavos::new(balance),
                repayment: Centavos::ZERO,
            },
        );
        State::new(
            DateTime::<Utc>::from_timestamp(1_736_900_000, 0).unwrap_or_default(),
            Delays {
                timeout_hold: 60_000,
                reversal_delay: 30_000,
            },
            merchants,
        )
    }

    fn payout(msg: &str, amount: i64, plan: Plan) -> NewPayout {
        NewPayout {
            origin: OrderOrigin {
                mch_id: "M1".into(),
                msg_id: msg.into(),
                service: "pay.starpay.instapay.disburse".into(),
            },
            acct_no: "123".into(),
            trx_amount: Centavos::new(amount),
            notify_url: None,
            plan,
            settle_after: 2_000,
            late_reversal: false,
            query_lag: 0,
        }
    }

    fn bal(s: &State) -> i64 {
        s.merchants["M1"].disbursement.get()
    }

    #[test]
    fn payout_success_debits_once() {
        let mut s = state(10_000);
        let i = s.create_payout(payout("A", 4_000, Plan::Success), 0);
        assert_eq!(bal(&s), 6_000);
        s.advance_to(1_999);
        assert_eq!(s.orders[i].state, TrxState::Processing);
        s.advance_to(2_000);
        assert_eq!(s.orders[i].state, TrxState::Success);
        assert!(s.orders[i].ref_no.as_deref().is_some_and(|r| r.len() == 16));
        assert_eq!(bal(&s), 6_000);
        let out = s.take_outbox();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notification.trx_state, TrxState::Success);
    }

    #[test]
    fn fail_and_reversal_refund() {
        let mut s = state(10_000);
        let f = s.create_payout(payout("F", 1_000, Plan::Fail("AC01".into())), 0);
        let r = s.create_payout(payout("R", 2_000, Plan::SuccessThenReverse), 0);
        assert_eq!(bal(&s), 7_000);
        s.advance_to(2_000);
        assert_eq!(s.orders[f].state, TrxState::Fail);
        assert_eq!(s.orders[f].error_code.as_deref(), Some("AC01"));
        assert_eq!(s.orders[r].state, TrxState::Success);
        assert_eq!(bal(&s), 8_000);
        s.advance_to(32_000);
        assert_eq!(s.orders[r].state, TrxState::Reversed);
        assert_eq!(bal(&s), 10_000);
        assert_eq!(s.take_outbox().len(), 3);
    }

    #[test]
    fn insufficient_funds_fail_at_once_without_debit() {
        let mut s = state(1_000);
        let i = s.create_payout(payout("A", 1_001, Plan::Success), 0);
        assert_eq!(s.orders[i].state, TrxState::Fail);
        assert_eq!(s.orders[i].error_code.as_deref(), Some("AM04"));
        assert_eq!(bal(&s), 1_000);
        s.advance_to(100_000);
        assert_eq!(bal(&s), 1_000);
    }

    #[test]
    fn timeout_plans() {
        let mut s = state(10_000);
        let ok = s.create_payout(payout("A", 1, Plan::TimeoutThenSuccess), 0);
        let ko = s.create_payout(payout("B", 1, Plan::TimeoutThenFail), 0);
        s.advance_to(2_000);
        for i in [ok, ko] {
            assert_eq!(s.orders[i].state, TrxState::Processing);
            assert_eq!(s.orders[i].error_code.as_deref(), Some("AB05"));
        }
        s.advance_to(62_000);
        assert_eq!(s.orders[ok].state, TrxState::Success);
        assert_eq!(s.orders[ok].error_code, None);
        assert_eq!(s.orders[ko].state, TrxState::Fail);
        assert_eq!(bal(&s), 9_999);
    }

    #[test]
    fn dynamic_qr_paid_expired_cancelled() {
        let mut s = state(0);
        let q = |m: &str| NewDynamicQr {
            origin: OrderOrigin {
                mch_id: "M1".into(),
                msg_id: m.into(),
                service: "pay.starpay.repayment".into(),
            },
            device_info: "D1".into(),
            trx_amount: Centavos::new(500),
            notify_url: "http://127.0.0.1:1/n".into(),
            expire_at: 10_000,
        };
        let a = s.create_dynamic_qr(q("A"), 0);
        let b = s.create_dynamic_qr(q("B"), 0);
        let c = s.create_dynamic_qr(q("C"), 0);
        let no = s.orders[a].order_no.clone();
        s.pay_dynamic_qr(&no, 5_000).unwrap();
        assert_eq!(s.merchants["M1"].repayment.get(), 500);
        assert!(s.pay_dynamic_qr(&no, 5_000).is_err());
        s.cancel_dynamic_qr("M1", "C", 6_000).unwrap();
        s.advance_to(10_000);
        assert_eq!(s.orders[a].state, TrxState::Success);
        assert_eq!(s.orders[b].state, TrxState::Close);
        assert_eq!(s.orders[c].state, TrxState::Cancel);
        let r = s.orders[a].ref_no.clone().unwrap();
        assert!(s.find_by_ref_no("M1", &r).is_some());
    }

    #[test]
    fn static_qr_payments_create_orders() {
        let mut s = state(0);
        s.generate_static_qr("M1", "DEV1", "Shop", "http://127.0.0.1:1/n");
        let again = s.generate_static_qr("M1", "DEV1", "Shop", "http://127.0.0.1:1/n");
        let i = s
            .pay_static_qr("M1", "DEV1", Centavos::new(700), 1_000)
            .unwrap();
        assert_eq!(s.orders[i].state, TrxState::Success);
        assert_eq!(s.orders[i].kind, OrderKind::StaticQrPayment);
        assert!(again.code_url.contains("DEV1"));
        s.set_static_qr_enabled("M1", "DEV1", false).unwrap();
        assert!(s
            .pay_static_qr("M1", "DEV1", Centavos::new(1), 2_000)
            .is_err());
        assert_eq!(
            s.take_outbox()[0].notification.device_info.as_deref(),
            Some("DEV1")
        );
    }

    #[test]
    fn formats() {
        let s = state(0);
        assert_eq!(s.trx_date(0), "2025-01-15T08:13:20+08:00");
        let no = s.order_no(0, 17);
        assert_eq!(no, "202501150000000017");
        assert_eq!(State::ref_no(17).len(), 16);
    }
}
