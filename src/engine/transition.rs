//! The one transition function of a payout row (issue 9): given what the row is (`RowView`) and
//! what happened (`RowEvent`), the next state, the fields to change (`Patch`), the event to
//! append and the control action for the run (`Change`). Pure: no I/O, no clock (`now_ms` is
//! passed in), no logging. Built on the decisions of `engine::policy`.
//!
//! Owns: every change of a payout row's state (`Change::apply_to` is the only place in the
//! engine that assigns `RowRecord::state`). Must not: persist, send or sleep; the engine does
//! that with the `Change` it gets back.
//!
//! Invariants (reference §8, §9, §12):
//! - a final state (SUCCESS, FAILED, REVERSED) comes only from a verified `trxState`;
//! - REJECTED only from a verified rejection followed by a verified 404, or a blocked reference;
//! - an unverified answer or a transport failure never makes a row final;
//! - an event that makes no sense in the row's state is an `IllegalTransition`, and the engine
//!   leaves the row untouched (never a silent change).
//!
//! Model: async-stripe's `request_strategy.rs` (a pure decision with table tests).

use std::time::Duration;

use crate::domain::{Centavos, EventKind, RowState, TrxState};
use crate::engine::policy::{self, NotFoundAction, QueryVerdict, ResolveSettings, SendVerdict};
use crate::engine::stop::{StopReason, StopSite};
use crate::starpay::client::{ClientError, Outcome};
use crate::starpay::codes::{reason_class, Code, ReasonClass};
use crate::store::{AttemptRecord, RowRecord};

/// The send times of a row and of its current attempt: (row first, row last, attempt first).
pub type SendTimes = (Option<i64>, Option<i64>, Option<i64>);

/// What the transition function reads of a row.
#[derive(Debug, Clone)]
pub struct RowView<'a> {
    pub state: RowState,
    pub line: i64,
    pub amount: Centavos,
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
    pub trx_state: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub verified_reject: bool,
    pub not_found_count: i64,
    pub resent_after_not_found: bool,
    pub hold_since: Option<i64>,
    pub send_times: SendTimes,
    pub query_count: i64,
}

impl<'a> RowView<'a> {
    pub fn of(row: &'a RowRecord) -> RowView<'a> {
        RowView {
            state: row.state,
            line: row.line,
            amount: row.amount,
            code: row.code.as_deref(),
            message: row.message.as_deref(),
            trx_state: row.trx_state.as_deref(),
            error_code: row.error_code.as_deref(),
            error_message: row.error_message.as_deref(),
            verified_reject: row.verified_reject,
            not_found_count: row.not_found_count,
            resent_after_not_found: row.resent_after_not_found,
            hold_since: row.hold_since,
            send_times: send_times(row),
            query_count: row.query_count,
        }
    }
}

/// The send times of `row` (to take back when a send did not happen).
pub fn send_times(row: &RowRecord) -> SendTimes {
    (
        row.first_sent_at,
        row.last_sent_at,
        row.attempt.as_ref().and_then(|a| a.first_sent_at),
    )
}

/// A verified answer, as the transition function needs it (the payout's or a query's).
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    pub code: &'a Code,
    pub message: &'a str,
    pub trx_state: Option<&'a TrxState>,
    pub order_no: Option<&'a str>,
    pub ref_no: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// What happened to a row.
#[derive(Debug)]
pub enum RowEvent<'a> {
    /// The row was found IN_FLIGHT when a drive started (crash or kill mid-request).
    RecoveredInFlight,
    /// Unresolved past the maximum resolve time, after a query in this run (rule 4).
    GaveUp { max_resolve: Duration },
    /// The live check before a re-payment found an earlier attempt paid or in progress.
    RepayRefused { why: String },
    /// The store refused a new attempt: the reference is blocked (already written by the store).
    Blocked { message: String },
    /// A new attempt (msgId + bytes) is committed (already written by the store).
    AttemptAllocated {
        attempt: AttemptRecord,
        repay_of: Option<String>,
    },
    /// The request is about to leave: mark the row in flight.
    SendStarted,
    /// The run stopped between marking in flight and sending: nothing left.
    SendNotMade { before: SendTimes },
    /// A verified payout answer that does not echo this payout (msgId, mchId or amount).
    SendMismatch { code: &'a Code, message: &'a str },
    /// A verified payout answer that echoes this payout.
    SendAnswer(Verified<'a>),
    /// The payout request failed (no verified answer); `before`: the send times to restore
    /// when the request provably never left.
    SendFailed {
        error: &'a ClientError,
        before: SendTimes,
    },
    /// A verified query answer that is not about this query or payout: no evidence.
    QueryMismatch,
    /// A verified query answer about this payout with another amount.
    QueryAmountMismatch {
        answer: Verified<'a>,
        theirs: Centavos,
    },
    /// A verified query answer about this payout.
    QueryAnswer(Verified<'a>),
    /// The query failed (no verified answer): no evidence either way.
    QueryFailed { error: &'a ClientError },
    /// A verified notification (5.5) about this payout's current attempt that echoes it
    /// (msgId, mchId, amount: the receiver checks, reference §10). A hint applied like a query
    /// answer: never final → non-final, AB0x FAIL held; REVERSED after SUCCESS applies and is
    /// flagged; a final state that contradicts a final row goes to NEEDS_ATTENTION.
    Notified(Verified<'a>),
}

impl RowEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            RowEvent::RecoveredInFlight => "recovered in flight",
            RowEvent::GaveUp { .. } => "max resolve time",
            RowEvent::RepayRefused { .. } => "re-payment refused",
            RowEvent::Blocked { .. } => "reference blocked",
            RowEvent::AttemptAllocated { .. } => "attempt allocated",
            RowEvent::SendStarted => "send started",
            RowEvent::SendNotMade { .. } => "send not made",
            RowEvent::SendMismatch { .. } => "send answer mismatch",
            RowEvent::SendAnswer(_) => "send answer",
            RowEvent::SendFailed { .. } => "send failed",
            RowEvent::QueryMismatch => "query answer mismatch",
            RowEvent::QueryAmountMismatch { .. } => "another amount",
            RowEvent::QueryAnswer(_) => "query answer",
            RowEvent::QueryFailed { .. } => "query failed",
            RowEvent::Notified(_) => "notified",
        }
    }
}

/// The fields to change; `None` leaves a field as it is (`Some(None)` clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch {
    pub trx_state: Option<Option<String>>,
    pub code: Option<Option<String>>,
    pub message: Option<Option<String>>,
    pub error_code: Option<Option<String>>,
    pub error_message: Option<Option<String>>,
    pub order_no: Option<Option<String>>,
    pub ref_no: Option<Option<String>>,
    pub verified_reject: Option<bool>,
    pub not_found_count: Option<i64>,
    pub resent_after_not_found: Option<bool>,
    pub hold_since: Option<Option<i64>>,
    pub send_times: Option<SendTimes>,
    pub query_count: Option<i64>,
    pub last_checked_at: Option<Option<i64>>,
    pub repay_of: Option<String>,
    pub attempt: Option<AttemptRecord>,
}

/// What the run does besides saving the row.
#[derive(Debug, Clone)]
pub enum Signal {
    None,
    /// A verified answer: the adaptive limiter may speed up.
    Success,
    /// 406 or alike: the limiter slows down.
    Cut,
    /// Stop taking work.
    Stop(StopReason),
}

/// Whether the row goes on at once or after a backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Backoff,
}

/// The answer of the transition function.
#[derive(Debug, Clone)]
pub struct Change {
    pub next: RowState,
    pub patch: Patch,
    pub event: EventKind,
    /// The event's detail.
    pub detail: Option<String>,
    /// The request left (counts in the attempt's `send_count`).
    pub sent: bool,
    pub signal: Signal,
    pub step: Step,
}

impl Change {
    fn to(next: RowState, event: EventKind) -> Change {
        Change {
            next,
            patch: Patch::default(),
            event,
            detail: None,
            sent: false,
            signal: Signal::None,
            step: Step::Continue,
        }
    }

    /// Writes the change into the row (in memory; the engine persists it). The only place in
    /// the engine that assigns a row's state.
    pub fn apply_to(&self, row: &mut RowRecord) {
        let p = self.patch.clone();
        row.state = self.next;
        let set = |f: &mut Option<String>, v: Option<Option<String>>| {
            if let Some(v) = v {
                *f = v;
            }
        };
        set(&mut row.trx_state, p.trx_state);
        set(&mut row.code, p.code);
        set(&mut row.message, p.message);
        set(&mut row.error_code, p.error_code);
        set(&mut row.error_message, p.error_message);
        set(&mut row.order_no, p.order_no);
        set(&mut row.ref_no, p.ref_no);
        if let Some(a) = p.attempt {
            row.attempt = Some(a);
        }
        if let Some(v) = p.verified_reject {
            row.verified_reject = v;
        }
        if let Some(v) = p.not_found_count {
            row.not_found_count = v;
        }
        if let Some(v) = p.resent_after_not_found {
            row.resent_after_not_found = v;
        }
        if let Some(v) = p.hold_since {
            row.hold_since = v;
        }
        if let Some((first, last, attempt_first)) = p.send_times {
            row.first_sent_at = first;
            row.last_sent_at = last;
            if let Some(a) = row.attempt.as_mut() {
                a.first_sent_at = attempt_first;
            }
        }
        if let Some(v) = p.query_count {
            row.query_count = v;
        }
        if let Some(v) = p.last_checked_at {
            row.last_checked_at = v;
        }
        if p.repay_of.is_some() {
            row.repay_of = p.repay_of;
        }
    }
}

/// An event that makes no sense in the row's state: the row is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: illegal transition: {event} in state {from}")]
pub struct IllegalTransition {
    pub line: i64,
    pub from: RowState,
    pub event: &'static str,
}

/// The states in which the row is being resolved by query.
fn resolving(s: RowState) -> bool {
    matches!(
        s,
        RowState::Pending | RowState::Unknown | RowState::FailHeld
    )
}

/// Whether `event` can happen to a row in state `from`.
fn legal(from: RowState, event: &RowEvent<'_>) -> bool {
    match event {
        RowEvent::RecoveredInFlight
        | RowEvent::SendNotMade { .. }
        | RowEvent::SendMismatch { .. }
        | RowEvent::SendAnswer(_)
        | RowEvent::SendFailed { .. } => from == RowState::InFlight,
        // `retry` allocates a new attempt for a FAILED row.
        RowEvent::RepayRefused { .. }
        | RowEvent::Blocked { .. }
        | RowEvent::AttemptAllocated { .. } => matches!(from, RowState::New | RowState::Failed),
        RowEvent::SendStarted => from == RowState::Unsent,
        RowEvent::GaveUp { .. }
        | RowEvent::QueryMismatch
        | RowEvent::QueryAmountMismatch { .. }
        | RowEvent::QueryAnswer(_)
        | RowEvent::QueryFailed { .. } => resolving(from),
        // A notification can only be about a msgId that exists: never a NEW row. It may
        // arrive before the send's own answer (IN_FLIGHT) or after the row is final.
        RowEvent::Notified(_) => from != RowState::New,
    }
}

/// The moment a decision is made and the resolve settings it applies.
#[derive(Clone, Copy)]
struct At<'a> {
    now_ms: i64,
    settings: &'a ResolveSettings,
}

/// The next state of a payout row after `event` (see the module doc for the rules).
pub fn transition(
    row: &RowView<'_>,
    event: RowEvent<'_>,
    now_ms: i64,
    settings: &ResolveSettings,
) -> Result<Change, IllegalTransition> {
    let at = At { now_ms, settings };
    let from = row.state;
    if !legal(from, &event) {
        return Err(IllegalTransition {
            line: row.line,
            from,
            event: event.name(),
        });
    }
    Ok(match event {
        RowEvent::RecoveredInFlight => {
            let mut c = Change::to(RowState::Unknown, EventKind::RecoveredInFlight);
            c.patch.message = Some(Some(
                "interrupted while in flight; resolving by query".into(),
            ));
            c
        }
        RowEvent::GaveUp { max_resolve } => {
            let message = format!(
                "still unresolved {} h after it was sent (the maximum resolve time), last Starpay state {}: check with Starpay; `reconcile` re-checks it",
                max_resolve.as_secs() / 3600,
                row.trx_state.unwrap_or("unknown")
            );
            let mut c = Change::to(RowState::NeedsAttention, EventKind::GaveUp);
            c.detail = Some(message.clone());
            c.patch.message = Some(Some(message));
            c
        }
        RowEvent::RepayRefused { why } => {
            let message = format!("not re-paid: {why}");
            let mut c = Change::to(RowState::NeedsAttention, EventKind::RepayRefused);
            c.detail = Some(message.clone());
            c.patch.message = Some(Some(message));
            c
        }
        RowEvent::Blocked { message } => {
            let mut c = Change::to(RowState::Rejected, EventKind::ReferenceBlocked);
            c.patch.message = Some(Some(message));
            c
        }
        RowEvent::AttemptAllocated { attempt, repay_of } => allocated(attempt, repay_of),
        RowEvent::SendStarted => {
            let (first, _, attempt_first) = row.send_times;
            let mut c = Change::to(RowState::InFlight, EventKind::Sending);
            c.patch.send_times = Some((
                first.or(Some(now_ms)),
                Some(now_ms),
                attempt_first.or(Some(now_ms)),
            ));
            c.patch.query_count = Some(0);
            c
        }
        RowEvent::SendNotMade { before } => {
            let mut c = Change::to(RowState::Unsent, EventKind::NotSent);
            c.detail = Some("run stopped before sending".into());
            c.patch.send_times = Some(before);
            c
        }
        RowEvent::SendMismatch { code, .. } => {
            let mut c = Change::to(RowState::Unknown, EventKind::SendAnswer);
            c.sent = true;
            c.patch.code = Some(Some(code.to_string()));
            c.patch.message = Some(Some(
                "answer did not match the request; resolving by query".into(),
            ));
            c
        }
        RowEvent::SendAnswer(answer) => on_send_answer(row, answer, at),
        RowEvent::SendFailed { error, before } => on_send_failed(row, error, before),
        RowEvent::QueryMismatch => queried(row, now_ms),
        RowEvent::QueryAmountMismatch { answer, theirs } => {
            on_amount_mismatch(row, answer, theirs, now_ms)
        }
        RowEvent::QueryAnswer(answer) => on_query_answer(row, answer, at),
        RowEvent::QueryFailed { error } => on_query_failed(row, error, now_ms),
        RowEvent::Notified(n) => on_notified(row, n, at),
    })
}

/// A verified notification that echoes this payout (reference §10: a hint; queries are the
/// truth). `Change::next == row.state` with an empty patch means "nothing to change" (stale).
fn on_notified(row: &RowView<'_>, n: Verified<'_>, at: At<'_>) -> Change {
    let At { now_ms, settings } = at;
    let mut c = Change::to(row.state, EventKind::NotificationApplied);
    let Some(trx) = n.trx_state else {
        return c;
    };
    let final_row = matches!(
        row.state,
        RowState::Success
            | RowState::Failed
            | RowState::Reversed
            | RowState::Rejected
            | RowState::NeedsAttention
    );
    if !final_row {
        // IN_FLIGHT: Starpay has the request, so it left (counts as a send).
        c.sent = row.state == RowState::InFlight;
        c.patch.code = Some(Some(n.code.to_string()));
        c.patch.message = Some(Some(n.message.to_string()));
        c.patch.not_found_count = Some(0);
        c.next = apply_trx(row, &mut c.patch, n, n.ref_no, now_ms, settings.ab_hold);
        return c;
    }
    let says = trx.as_str();
    match (row.state, trx) {
        (RowState::Success, TrxState::Reversed) => {
            c.next = RowState::Reversed;
            c.patch.trx_state = Some(Some(says.to_string()));
            let message = "REVERSED_AFTER_SUCCESS: Starpay notified a reversal of this paid payout; the money came back".to_string();
            c.detail = Some(message.clone());
            c.patch.message = Some(Some(message));
        }
        // A final state that contradicts the row's: money may have moved where we think it
        // did not (or the reverse). Never re-pay on it: a human settles it with Starpay.
        (RowState::Failed | RowState::Rejected, TrxState::Success | TrxState::Reversed)
        | (RowState::Success, TrxState::Fail | TrxState::Close | TrxState::Cancel) => {
            c.next = RowState::NeedsAttention;
            c.patch.trx_state = Some(Some(says.to_string()));
            let message = format!(
                "NOTIFIED_CONFLICT: Starpay notified {says} for a row recorded {}; check with Starpay before anything else",
                row.state
            );
            c.detail = Some(message.clone());
            c.patch.message = Some(Some(message));
        }
        // Anything else changes nothing: a non-final state never overwrites a final one, and
        // the same final state again is old news.
        _ => {}
    }
    c
}

/// A verified answer about this very payout with another amount: a human must look now.
fn on_amount_mismatch(
    row: &RowView<'_>,
    answer: Verified<'_>,
    theirs: Centavos,
    now_ms: i64,
) -> Change {
    let mut c = queried(row, now_ms);
    c.next = RowState::NeedsAttention;
    c.patch.code = Some(Some(answer.code.to_string()));
    c.patch.trx_state = Some(answer.trx_state.map(|t| t.as_str().to_string()));
    if let Some(o) = answer.order_no {
        c.patch.order_no = Some(Some(o.to_string()));
    }
    c.patch.message = Some(Some(format!(
        "AMOUNT_MISMATCH: Starpay has PHP {theirs} for this payout, we sent PHP {}; settle it with Starpay before anything else",
        row.amount
    )));
    c
}

/// The query got no verified answer.
fn on_query_failed(row: &RowView<'_>, error: &ClientError, now_ms: i64) -> Change {
    // No verified answer is no evidence either way: it neither counts towards nor
    // breaks the streak of consecutive 404s (§12 rule 3).
    let mut c = queried(row, now_ms);
    c.detail = Some(error.to_string());
    if let ClientError::Unverified {
        code: Some(code), ..
    } = error
    {
        match policy::on_query_code(code, false, false) {
            QueryVerdict::StopRun => {
                c.signal = Signal::Stop(StopReason::StopCode {
                    code: code.clone(),
                    message: None,
                    site: StopSite::Query,
                });
            }
            QueryVerdict::BackOff => {
                c.signal = Signal::Cut;
                c.step = Step::Backoff;
            }
            _ => {}
        }
    }
    c
}

/// A new attempt: the row starts afresh (UNSENT); the send times over all attempts are kept.
fn allocated(attempt: AttemptRecord, repay_of: Option<String>) -> Change {
    let mut c = Change::to(RowState::Unsent, EventKind::AttemptAllocated);
    let p = &mut c.patch;
    p.attempt = Some(attempt);
    p.verified_reject = Some(false);
    p.not_found_count = Some(0);
    p.hold_since = Some(None);
    p.trx_state = Some(None);
    p.code = Some(None);
    p.message = Some(None);
    p.error_code = Some(None);
    p.error_message = Some(None);
    p.order_no = Some(None);
    p.ref_no = Some(None);
    p.repay_of = repay_of;
    p.query_count = Some(0);
    p.last_checked_at = Some(None);
    p.resent_after_not_found = Some(false);
    c
}

/// A verified answer to the payout request itself (§9.1, §12).
fn on_send_answer(row: &RowView<'_>, r: Verified<'_>, at: At<'_>) -> Change {
    let At { now_ms, settings } = at;
    let mut c = Change::to(RowState::Unknown, EventKind::SendAnswer);
    c.sent = true;
    c.patch.code = Some(Some(r.code.to_string()));
    c.patch.message = Some(Some(r.message.to_string()));
    match policy::on_send_code(r.code, true, r.trx_state.is_some()) {
        SendVerdict::Apply => {
            c.signal = Signal::Success;
            c.patch.not_found_count = Some(0);
            c.next = apply_trx(row, &mut c.patch, r, None, now_ms, settings.ab_hold);
        }
        SendVerdict::Query { verified_reject } => {
            c.signal = Signal::Success;
            if r.code.as_str() == "403" && row.resent_after_not_found {
                // Rule 3: the resend is refused as repeated while queries say not found.
                c.next = RowState::NeedsAttention;
                c.patch.message = Some(Some("resend after not-found answered 403 Repeated msgId while queries answer 404; stopped touching the row".into()));
            } else if verified_reject && row.resent_after_not_found {
                // The same request was resent under the not-found rule and now rejected: the
                // first send may still have landed. Not REJECTED (that would unblock the
                // reference): a human decides.
                c.next = RowState::NeedsAttention;
                c.patch.message = Some(Some(format!(
                    "resend after not-found answered {} {}; the first send may still land: check with Starpay before paying again",
                    r.code, r.message
                )));
            } else {
                c.next = RowState::Unknown;
                c.patch.verified_reject = Some(verified_reject);
                c.patch.not_found_count = Some(0);
            }
        }
        SendVerdict::BackOffResend => {
            c.signal = Signal::Cut;
            c.next = RowState::Unsent;
            c.step = Step::Backoff;
        }
        SendVerdict::StopRun => {
            c.next = RowState::Unsent;
            c.signal = Signal::Stop(StopReason::StopCode {
                code: r.code.clone(),
                message: Some(r.message.to_string()),
                site: StopSite::Line(row.line),
            });
        }
    }
    c
}

/// The payout request got no verified answer.
fn on_send_failed(row: &RowView<'_>, e: &ClientError, before: SendTimes) -> Change {
    // A request that provably never left (connection refused, …) is not a send.
    let left = e.outcome() != Outcome::NotSent;
    let mut c = Change::to(
        RowState::Unknown,
        if left {
            EventKind::SendAnswer
        } else {
            EventKind::NotSent
        },
    );
    c.sent = left;
    c.detail = Some(e.to_string());
    if !left {
        // Nothing left: the send times of a send that never happened are taken back.
        c.patch.send_times = Some(before);
    }
    if let ClientError::Unverified {
        code: Some(code), ..
    } = e
    {
        c.patch.code = Some(Some(code.to_string()));
        // An unverified answer is an unknown outcome for the row (§3.4): the code may only
        // drive the safe control action; the row is resolved by query.
        match policy::on_send_code(code, false, false) {
            SendVerdict::StopRun => {
                c.patch.message = Some(Some(format!("unverified answer with code {code}: {e}")));
                c.signal = Signal::Stop(StopReason::StopCode {
                    code: code.clone(),
                    message: None,
                    site: StopSite::Line(row.line),
                });
                return c;
            }
            SendVerdict::BackOffResend => {
                c.signal = Signal::Cut;
                c.patch.message = Some(Some(format!("unverified answer with code {code}: {e}")));
                c.step = Step::Backoff;
                return c;
            }
            _ => {}
        }
    }
    match e.outcome() {
        Outcome::NotSent => {
            c.next = RowState::Unsent;
            c.patch.message = Some(Some(format!("not sent: {e}")));
            c.step = Step::Backoff;
        }
        Outcome::Unknown => {
            c.next = RowState::Unknown;
            c.patch.message = Some(Some(format!("outcome unknown: {e}")));
        }
    }
    c
}

/// A query went out: counted, checked now; the row stays as it is unless the answer says more.
fn queried(row: &RowView<'_>, now_ms: i64) -> Change {
    let mut c = Change::to(row.state, EventKind::QueryAnswer);
    c.patch.last_checked_at = Some(Some(now_ms));
    c.patch.query_count = Some(row.query_count + 1);
    c
}

/// A verified answer to a query that is about this payout (§12).
fn on_query_answer(row: &RowView<'_>, r: Verified<'_>, at: At<'_>) -> Change {
    let At { now_ms, settings } = at;
    let mut c = queried(row, now_ms);
    match policy::on_query_code(r.code, true, r.trx_state.is_some()) {
        QueryVerdict::Apply => {
            c.signal = Signal::Success;
            c.patch.not_found_count = Some(0);
            c.patch.code = Some(Some(r.code.to_string()));
            c.patch.message = Some(Some(r.message.to_string()));
            c.next = apply_trx(row, &mut c.patch, r, r.ref_no, now_ms, settings.ab_hold);
        }
        QueryVerdict::NotFound => {
            c.signal = Signal::Success;
            let count = row.not_found_count + 1;
            c.patch.not_found_count = Some(count);
            let since_send = row.send_times.1.map_or(Duration::MAX, |t| {
                Duration::from_millis(now_ms.saturating_sub(t).max(0) as u64)
            });
            match policy::on_not_found(row.verified_reject, count as u32, since_send, settings) {
                NotFoundAction::Reject => {
                    c.next = RowState::Rejected;
                    c.patch.message = Some(Some(format!(
                        "rejected by Starpay ({} {}) and not found by query: no money moved",
                        row.code.unwrap_or("?"),
                        row.message.unwrap_or("")
                    )));
                }
                NotFoundAction::Wait => {}
                NotFoundAction::Resend => {
                    c.next = RowState::Unsent;
                    c.patch.resent_after_not_found = Some(true);
                    c.patch.not_found_count = Some(0);
                }
            }
        }
        // A verified answer without a trxState (403 on a query, a system error): says nothing
        // about the payout, so the not-found streak is neither counted nor broken.
        QueryVerdict::AskAgain => {}
        QueryVerdict::BackOff => {
            c.signal = Signal::Cut;
            c.step = Step::Backoff;
        }
        QueryVerdict::StopRun => {
            c.signal = Signal::Stop(StopReason::StopCode {
                code: r.code.clone(),
                message: Some(r.message.to_string()),
                site: StopSite::Query,
            });
        }
    }
    c
}

/// Applies a verified `trxState` (§8 precedence: never from final to non-final; §9.2 AB0x
/// hold) to `patch`; returns the next state.
fn apply_trx(
    row: &RowView<'_>,
    patch: &mut Patch,
    r: Verified<'_>,
    ref_no: Option<&str>,
    now_ms: i64,
    ab_hold: Duration,
) -> RowState {
    let Some(trx) = r.trx_state else {
        return RowState::Unknown;
    };
    // A verified trxState means the payout exists: a later 404 is lag, not a rejection.
    patch.verified_reject = Some(false);
    // AB0x hold (§9.2): while held, a PROCESSING (or other non-final) answer does not move the
    // row back, and a FAIL without a reason keeps the held reason.
    let held = row.state == RowState::FailHeld;
    if held && !trx.is_final() {
        patch.last_checked_at = Some(Some(now_ms));
        return row.state;
    }
    let error_code = match (held, trx, r.error_code) {
        (true, TrxState::Fail, None) => row.error_code,
        (_, _, e) => e,
    };
    let error_message = r
        .error_message
        .or(if held && matches!(trx, TrxState::Fail) {
            row.error_message
        } else {
            None
        });
    let timeout_fail = matches!(trx, TrxState::Fail)
        && error_code.is_some_and(|c| reason_class(c) == ReasonClass::Timeout);
    let hold_since = if !timeout_fail {
        None
    } else {
        Some(row.hold_since.unwrap_or(now_ms))
    };
    patch.hold_since = Some(hold_since);
    let next = policy::state_from_trx(trx, error_code, hold_since, now_ms, ab_hold);
    patch.trx_state = Some(Some(trx.as_str().to_string()));
    if let TrxState::Unknown(s) = trx {
        patch.message = Some(Some(format!("UNRECOGNISED_STATE {s}: still polling")));
    }
    if next == RowState::FailHeld {
        patch.message = Some(Some(format!(
            "PENDING_TIMEOUT: FAIL with timeout reason {} is held and re-queried before it counts (a late credit can still land)",
            error_code.unwrap_or("?")
        )));
    }
    if let Some(o) = r.order_no {
        patch.order_no = Some(Some(o.to_string()));
    }
    if let Some(o) = ref_no {
        patch.ref_no = Some(Some(o.to_string()));
    }
    patch.error_code = Some(error_code.map(str::to_string));
    patch.error_message = Some(error_message.map(str::to_string));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;
    const LINE: i64 = 7;

    fn view(state: RowState) -> RowView<'static> {
        RowView {
            state,
            line: LINE,
            amount: Centavos::new(10_000),
            code: None,
            message: None,
            trx_state: None,
            error_code: None,
            error_message: None,
            verified_reject: false,
            not_found_count: 0,
            resent_after_not_found: false,
            hold_since: None,
            send_times: (None, None, None),
            query_count: 0,
        }
    }

    fn attempt() -> AttemptRecord {
        AttemptRecord {
            id: 1,
            msg_id: "P1R1L7A1".into(),
            seq: 1,
            supersedes: None,
            operation: "5.2".into(),
            request_bytes: b"{}".to_vec(),
            send_count: 0,
            first_sent_at: None,
        }
    }

    fn answer<'a>(code: &'a Code, trx: Option<&'a TrxState>) -> Verified<'a> {
        Verified {
            code,
            message: "Msg",
            trx_state: trx,
            order_no: Some("O1"),
            ref_no: Some("R1"),
            error_code: None,
            error_message: None,
        }
    }

    fn unverified(code: &str) -> ClientError {
        ClientError::Unverified {
            code: Some(Code::new(code)),
            error: crate::starpay::sign::VerifyError::MissingSignature,
            raw: bytes::Bytes::new(),
        }
    }

    fn run(v: &RowView<'_>, e: RowEvent<'_>) -> Change {
        match transition(v, e, NOW, &ResolveSettings::default()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn stop_text(c: &Change) -> Option<String> {
        match &c.signal {
            Signal::Stop(r) => Some(r.to_string()),
            _ => None,
        }
    }

    /// Every state × every event: the legal ones lead where the engine has always taken the
    /// row; the others are `IllegalTransition` (the row is left untouched).
    #[test]
    fn every_state_by_every_event() {
        use RowState::*;
        let ok = Code::new("200");
        let success = TrxState::Success;
        let timeout = ClientError::Timeout(Duration::from_secs(30));
        let resolving = [Pending, Unknown, FailHeld];
        // (event, the states it is legal in, the state it leads to; None: stays where it is)
        type Make<'a> = Box<dyn Fn() -> RowEvent<'a> + 'a>;
        let table: Vec<(Make<'_>, &[RowState], Option<RowState>)> = vec![
            (
                Box::new(|| RowEvent::RecoveredInFlight),
                &[InFlight],
                Some(Unknown),
            ),
            (
                Box::new(|| RowEvent::GaveUp {
                    max_resolve: Duration::from_secs(72 * 3600),
                }),
                &resolving,
                Some(NeedsAttention),
            ),
            (
                Box::new(|| RowEvent::RepayRefused { why: "w".into() }),
                &[New, Failed],
                Some(NeedsAttention),
            ),
            (
                Box::new(|| RowEvent::Blocked {
                    message: "m".into(),
                }),
                &[New, Failed],
                Some(Rejected),
            ),
            (
                Box::new(|| RowEvent::AttemptAllocated {
                    attempt: attempt(),
                    repay_of: None,
                }),
                &[New, Failed],
                Some(Unsent),
            ),
            (
                Box::new(|| RowEvent::SendStarted),
                &[Unsent],
                Some(InFlight),
            ),
            (
                Box::new(|| RowEvent::SendNotMade {
                    before: (None, None, None),
                }),
                &[InFlight],
                Some(Unsent),
            ),
            (
                Box::new(|| RowEvent::SendMismatch {
                    code: &ok,
                    message: "OK",
                }),
                &[InFlight],
                Some(Unknown),
            ),
            (
                Box::new(|| RowEvent::SendAnswer(answer(&ok, Some(&success)))),
                &[InFlight],
                Some(Success),
            ),
            (
                Box::new(|| RowEvent::SendFailed {
                    error: &timeout,
                    before: (None, None, None),
                }),
                &[InFlight],
                Some(Unknown),
            ),
            (Box::new(|| RowEvent::QueryMismatch), &resolving, None),
            (
                Box::new(|| RowEvent::QueryAmountMismatch {
                    answer: answer(&ok, Some(&success)),
                    theirs: Centavos::new(1),
                }),
                &resolving,
                Some(NeedsAttention),
            ),
            (
                Box::new(|| RowEvent::QueryAnswer(answer(&ok, Some(&success)))),
                &resolving,
                Some(Success),
            ),
            (
                Box::new(|| RowEvent::QueryFailed { error: &timeout }),
                &resolving,
                None,
            ),
        ];
        for (make, legal, next) in &table {
            for state in RowState::ALL {
                let event = make();
                let name = event.name();
                let got = transition(&view(state), event, NOW, &ResolveSettings::default());
                if legal.contains(&state) {
                    let c = got.unwrap_or_else(|e| panic!("{name} from {state}: {e}"));
                    assert_eq!(c.next, next.unwrap_or(state), "{name} from {state}");
                    assert!(
                        c.next != InFlight || name == "send started",
                        "{name} leaves a row in flight"
                    );
                } else {
                    assert_eq!(
                        got.map(|c| c.next),
                        Err(IllegalTransition {
                            line: LINE,
                            from: state,
                            event: name
                        }),
                        "{name} from {state}"
                    );
                }
            }
        }
        // Every event is in the table (by its distinct name), but `Notified`, whose next
        // state depends on the row's: its own table is `notified_every_state`.
        let mut names: Vec<_> = table.iter().map(|(m, _, _)| m().name()).collect();
        names.dedup();
        assert_eq!(names.len(), 14);
    }

    /// A notification in every state, for each `trxState` it can carry: where the row goes
    /// (None: illegal). Non-final never overwrites final; REVERSED after SUCCESS applies;
    /// a contradicting final goes to NEEDS_ATTENTION; AB0x FAIL is held like a query answer.
    #[test]
    fn notified_every_state() {
        use RowState::*;
        let ok = Code::new("200");
        let (succ, fail, rev, proc_) = (
            TrxState::Success,
            TrxState::Fail,
            TrxState::Reversed,
            TrxState::Processing,
        );
        const NA: RowState = NeedsAttention;
        // (state, after SUCCESS, after FAIL AC01, after FAIL AB05, after REVERSED, after PROCESSING)
        #[rustfmt::skip]
        let table: [(RowState, Option<[RowState; 5]>); 11] = [
            (New,            None),
            (Unsent,         Some([Success, Failed,   FailHeld, Reversed, Pending])),
            (InFlight,       Some([Success, Failed,   FailHeld, Reversed, Pending])),
            (Pending,        Some([Success, Failed,   FailHeld, Reversed, Pending])),
            (Unknown,        Some([Success, Failed,   FailHeld, Reversed, Pending])),
            (FailHeld,       Some([Success, Failed,   FailHeld, Reversed, FailHeld])),
            (Success,        Some([Success, NA,       NA,       Reversed, Success])),
            (Failed,         Some([NA,      Failed,   Failed,   NA,       Failed])),
            (Reversed,       Some([Reversed, Reversed, Reversed, Reversed, Reversed])),
            (Rejected,       Some([NA,      Rejected, Rejected, NA,       Rejected])),
            (NeedsAttention, Some([NA,      NA,       NA,       NA,       NA])),
        ];
        assert_eq!(table.len(), RowState::ALL.len());
        for (state, expected) in table {
            let notes: [(&TrxState, Option<&str>); 5] = [
                (&succ, None),
                (&fail, Some("AC01")),
                (&fail, Some("AB05")),
                (&rev, None),
                (&proc_, None),
            ];
            for (i, (trx, reason)) in notes.into_iter().enumerate() {
                let mut n = answer(&ok, Some(trx));
                n.error_code = reason;
                let got = transition(
                    &view(state),
                    RowEvent::Notified(n),
                    NOW,
                    &ResolveSettings::default(),
                );
                match expected {
                    None => assert!(got.is_err(), "{state} + {trx:?} must be illegal"),
                    Some(next) => {
                        let c = got.unwrap_or_else(|e| panic!("{state} + {trx:?}: {e}"));
                        assert_eq!(c.next, next[i], "{state} + {trx:?} {reason:?}");
                        assert_eq!(c.sent, state == InFlight, "{state}: counts as a send");
                        if c.next == state && state.is_terminal() {
                            assert_eq!(c.patch, Patch::default(), "{state} + {trx:?}: no change");
                        }
                    }
                }
            }
        }
        // The reversal after a success is flagged in the row's message and the event.
        let c = run(&view(Success), RowEvent::Notified(answer(&ok, Some(&rev))));
        assert!(c
            .detail
            .as_deref()
            .unwrap()
            .starts_with("REVERSED_AFTER_SUCCESS"));
        assert_eq!(c.event, EventKind::NotificationApplied);
    }

    #[test]
    fn send_answer_table() {
        let fail = TrxState::Fail;
        let processing = TrxState::Processing;
        // (code, trxState, reason, resent after not-found) → (next state, verified_reject
        // patch); the step and the signal follow from the code (406: back off and cut).
        type Row<'a> = (
            &'a str,
            Option<&'a TrxState>,
            Option<&'a str>,
            bool,
            RowState,
            Option<bool>,
        );
        let table: [Row<'_>; 9] = [
            (
                "200",
                Some(&fail),
                Some("AC01"),
                false,
                RowState::Failed,
                Some(false),
            ),
            (
                "200",
                Some(&fail),
                Some("AB05"),
                false,
                RowState::FailHeld,
                Some(false),
            ),
            (
                "200",
                Some(&processing),
                None,
                false,
                RowState::Pending,
                Some(false),
            ),
            ("200", None, None, false, RowState::Unknown, Some(false)),
            ("400", None, None, false, RowState::Unknown, Some(true)),
            ("403", None, None, false, RowState::Unknown, Some(false)),
            ("403", None, None, true, RowState::NeedsAttention, None),
            ("400", None, None, true, RowState::NeedsAttention, None),
            ("406", None, None, false, RowState::Unsent, None),
        ];
        for (code, trx, reason, resent, next, reject) in table {
            let code = Code::new(code);
            let mut v = view(RowState::InFlight);
            v.resent_after_not_found = resent;
            let mut a = answer(&code, trx);
            a.error_code = reason;
            let c = run(&v, RowEvent::SendAnswer(a));
            let what = format!("{code} {trx:?} {reason:?} resent={resent}");
            assert_eq!(c.next, next, "{what}");
            assert_eq!(c.patch.verified_reject, reject, "{what}");
            assert_eq!(c.event, EventKind::SendAnswer, "{what}");
            assert!(c.sent, "{what}");
            assert_eq!(c.patch.code, Some(Some(code.to_string())), "{what}");
            let backoff = code.as_str() == "406";
            assert_eq!(c.step == Step::Backoff, backoff, "{what}");
            assert_eq!(matches!(c.signal, Signal::Cut), backoff, "{what}");
        }
        // AB0x hold starts now, with the reason in the message.
        let code = Code::new("200");
        let mut a = answer(&code, Some(&fail));
        a.error_code = Some("AB05");
        let c = run(&view(RowState::InFlight), RowEvent::SendAnswer(a));
        assert_eq!(c.patch.hold_since, Some(Some(NOW)));
        assert_eq!(
            c.patch.message,
            Some(Some("PENDING_TIMEOUT: FAIL with timeout reason AB05 is held and re-queried before it counts (a late credit can still land)".into()))
        );
        // A send answer never carries a refNo into the row.
        assert_eq!(c.patch.ref_no, None);
        // A stop code keeps the row UNSENT (same bytes after the fix) and stops the run.
        let code = Code::new("402");
        let c = run(
            &view(RowState::InFlight),
            RowEvent::SendAnswer(answer(&code, None)),
        );
        assert_eq!(c.next, RowState::Unsent);
        assert_eq!(
            stop_text(&c).as_deref(),
            Some("Starpay answered 402 Msg (line 7): stopping the run; fix the configuration or keys and run again")
        );
    }

    #[test]
    fn send_failure_table() {
        let before = (Some(1), Some(2), Some(1));
        let mut v = view(RowState::InFlight);
        v.send_times = (Some(1), Some(NOW), Some(1));
        // Provably not sent: UNSENT, send times taken back, not counted, backoff.
        let e = ClientError::Config("x".into());
        let c = run(&v, RowEvent::SendFailed { error: &e, before });
        assert_eq!(c.next, RowState::Unsent);
        assert_eq!(c.event, EventKind::NotSent);
        assert!(!c.sent);
        assert_eq!(c.patch.send_times, Some(before));
        assert_eq!(c.step, Step::Backoff);
        assert_eq!(
            c.patch.message,
            Some(Some("not sent: configuration: x".into()))
        );
        assert_eq!(c.detail.as_deref(), Some("configuration: x"));
        // May have left: UNKNOWN, resolved by query; the send counts.
        let e = ClientError::Timeout(Duration::from_secs(30));
        let c = run(&v, RowEvent::SendFailed { error: &e, before });
        assert_eq!(c.next, RowState::Unknown);
        assert_eq!(c.event, EventKind::SendAnswer);
        assert!(c.sent);
        assert_eq!(c.patch.send_times, None);
        assert_eq!(c.step, Step::Continue);
        assert_eq!(c.patch.message, Some(Some(format!("outcome unknown: {e}"))));
        // An unverified code drives only the control action; the row is UNKNOWN.
        for (code, stop, backoff) in [
            ("402", true, false),
            ("406", false, true),
            ("400", false, false),
        ] {
            let e = unverified(code);
            let c = run(&v, RowEvent::SendFailed { error: &e, before });
            assert_eq!(c.next, RowState::Unknown, "{code}");
            assert_eq!(c.patch.code, Some(Some(code.to_string())), "{code}");
            assert_eq!(c.patch.verified_reject, None, "{code}");
            assert_eq!(stop_text(&c).is_some(), stop, "{code}");
            assert_eq!(c.step == Step::Backoff, backoff, "{code}");
        }
        let e = unverified("402");
        let c = run(&v, RowEvent::SendFailed { error: &e, before });
        assert_eq!(
            stop_text(&c).as_deref(),
            Some("Starpay answered 402 (unverified) on line 7: stopping the run")
        );
        assert_eq!(
            c.patch.message,
            Some(Some(format!("unverified answer with code 402: {e}")))
        );
    }

    #[test]
    fn send_started_and_not_made() {
        let mut v = view(RowState::Unsent);
        v.send_times = (Some(5), Some(6), None);
        v.query_count = 4;
        let c = run(&v, RowEvent::SendStarted);
        assert_eq!(c.patch.send_times, Some((Some(5), Some(NOW), Some(NOW))));
        assert_eq!(c.patch.query_count, Some(0));
        assert_eq!(c.event, EventKind::Sending);
        assert!(!c.sent);
        let c = run(
            &view(RowState::InFlight),
            RowEvent::SendNotMade {
                before: (Some(5), Some(6), None),
            },
        );
        assert_eq!(c.patch.send_times, Some((Some(5), Some(6), None)));
        assert_eq!(c.detail.as_deref(), Some("run stopped before sending"));
        assert_eq!(c.event, EventKind::NotSent);
    }

    #[test]
    fn query_answer_table() {
        let settings = ResolveSettings::default();
        let window = settings.not_found_window.as_millis() as i64;
        let not_found = Code::new("404");
        // (verified_reject, 404 streak before, last send ms ago) → (next, streak after)
        let table = [
            (true, 0, 0, RowState::Rejected, 1),
            (false, 0, window, RowState::Unknown, 1),
            (false, 2, window - 1, RowState::Unknown, 3),
            (false, 2, window, RowState::Unsent, 0),
        ];
        for (reject, streak, ago, next, after) in table {
            let mut v = view(RowState::Unknown);
            v.verified_reject = reject;
            v.not_found_count = streak;
            v.send_times = (Some(NOW - ago), Some(NOW - ago), None);
            v.code = Some("400");
            v.message = Some("Bad");
            v.query_count = 2;
            let c = run(&v, RowEvent::QueryAnswer(answer(&not_found, None)));
            let what = format!("reject={reject} streak={streak} ago={ago}");
            assert_eq!(c.next, next, "{what}");
            assert_eq!(c.patch.not_found_count, Some(after), "{what}");
            assert_eq!(c.patch.query_count, Some(3), "{what}");
            assert_eq!(c.patch.last_checked_at, Some(Some(NOW)), "{what}");
            assert_eq!(c.event, EventKind::QueryAnswer, "{what}");
            assert!(!c.sent, "{what}");
            assert_eq!(
                c.patch.resent_after_not_found,
                (next == RowState::Unsent).then_some(true),
                "{what}"
            );
        }
        let mut v = view(RowState::Unknown);
        v.verified_reject = true;
        v.code = Some("400");
        v.message = Some("Bad");
        let c = run(&v, RowEvent::QueryAnswer(answer(&not_found, None)));
        assert_eq!(
            c.patch.message,
            Some(Some(
                "rejected by Starpay (400 Bad) and not found by query: no money moved".into()
            ))
        );
        // Answers that say nothing about the payout: the row and the 404 streak stay.
        let mut v = view(RowState::Pending);
        v.not_found_count = 2;
        for code in ["403", "500"] {
            let code = Code::new(code);
            let c = run(&v, RowEvent::QueryAnswer(answer(&code, None)));
            assert_eq!(c.next, RowState::Pending, "{code}");
            assert_eq!(c.patch.not_found_count, None, "{code}");
            assert!(matches!(c.signal, Signal::None), "{code}");
        }
        let c = run(&v, RowEvent::QueryMismatch);
        assert_eq!((c.next, c.patch.not_found_count), (RowState::Pending, None));
        let code = Code::new("406");
        let c = run(&v, RowEvent::QueryAnswer(answer(&code, None)));
        assert_eq!((c.next, c.step), (RowState::Pending, Step::Backoff));
        assert!(matches!(c.signal, Signal::Cut));
        let code = Code::new("411");
        let c = run(&v, RowEvent::QueryAnswer(answer(&code, None)));
        assert_eq!(c.next, RowState::Pending);
        assert_eq!(
            stop_text(&c).as_deref(),
            Some("Starpay answered 411 Msg to a query: stopping the run")
        );
        let e = unverified("402");
        let c = run(&v, RowEvent::QueryFailed { error: &e });
        assert_eq!(c.next, RowState::Pending);
        assert_eq!(
            stop_text(&c).as_deref(),
            Some("Starpay answered 402 (unverified) to a query: stopping the run")
        );
        assert_eq!(c.detail, Some(e.to_string()));
        assert_eq!(c.patch.not_found_count, None);
    }

    #[test]
    fn verified_state_and_the_ab_hold() {
        let ok = Code::new("200");
        let (fail, processing, odd) = (
            TrxState::Fail,
            TrxState::Processing,
            TrxState::Unknown("HELD".into()),
        );
        let hold = ResolveSettings::default().ab_hold.as_millis() as i64;
        // Held: a non-final answer does not move the row back.
        let mut v = view(RowState::FailHeld);
        v.hold_since = Some(NOW - 10);
        v.error_code = Some("AB05");
        let c = run(&v, RowEvent::QueryAnswer(answer(&ok, Some(&processing))));
        assert_eq!(c.next, RowState::FailHeld);
        assert_eq!(c.patch.trx_state, None);
        assert_eq!(c.patch.hold_since, None);
        // Held: a FAIL without a reason keeps the held reason, and the hold.
        let c = run(&v, RowEvent::QueryAnswer(answer(&ok, Some(&fail))));
        assert_eq!(c.next, RowState::FailHeld);
        assert_eq!(c.patch.error_code, Some(Some("AB05".into())));
        assert_eq!(c.patch.hold_since, Some(Some(NOW - 10)));
        // The hold over: FAILED.
        v.hold_since = Some(NOW - hold);
        let c = run(&v, RowEvent::QueryAnswer(answer(&ok, Some(&fail))));
        assert_eq!(c.next, RowState::Failed);
        // A verified answer voids a rejection and the 404 streak; it keeps order and ref no.
        let mut v = view(RowState::Unknown);
        v.verified_reject = true;
        v.not_found_count = 2;
        let c = run(&v, RowEvent::QueryAnswer(answer(&ok, Some(&odd))));
        assert_eq!(c.next, RowState::Pending);
        assert_eq!(c.patch.verified_reject, Some(false));
        assert_eq!(c.patch.not_found_count, Some(0));
        assert_eq!(c.patch.trx_state, Some(Some("HELD".into())));
        assert_eq!(c.patch.order_no, Some(Some("O1".into())));
        assert_eq!(c.patch.ref_no, Some(Some("R1".into())));
        assert_eq!(
            c.patch.message,
            Some(Some("UNRECOGNISED_STATE HELD: still polling".into()))
        );
        assert!(matches!(c.signal, Signal::Success));
        // Another amount: NEEDS_ATTENTION at once, whatever the state says.
        let c = run(
            &v,
            RowEvent::QueryAmountMismatch {
                answer: answer(&ok, Some(&processing)),
                theirs: Centavos::new(99),
            },
        );
        assert_eq!(c.next, RowState::NeedsAttention);
        assert_eq!(c.patch.trx_state, Some(Some("PROCESSING".into())));
        assert!(matches!(c.signal, Signal::None));
    }

    #[test]
    fn allocation_starts_afresh_and_messages_are_kept() {
        let c = run(
            &view(RowState::Failed),
            RowEvent::AttemptAllocated {
                attempt: attempt(),
                repay_of: Some("re-sent".into()),
            },
        );
        let p = &c.patch;
        assert_eq!(p.attempt, Some(attempt()));
        assert_eq!(p.repay_of.as_deref(), Some("re-sent"));
        for f in [
            &p.trx_state,
            &p.code,
            &p.message,
            &p.error_code,
            &p.error_message,
            &p.order_no,
            &p.ref_no,
        ] {
            assert_eq!(f, &Some(None));
        }
        assert_eq!(p.send_times, None, "send times over all attempts are kept");
        assert_eq!(
            (
                p.query_count,
                p.not_found_count,
                p.verified_reject,
                p.resent_after_not_found
            ),
            (Some(0), Some(0), Some(false), Some(false))
        );
        let c = run(
            &view(RowState::New),
            RowEvent::RepayRefused { why: "paid".into() },
        );
        assert_eq!(c.patch.message, Some(Some("not re-paid: paid".into())));
        assert_eq!(c.detail.as_deref(), Some("not re-paid: paid"));
        let mut v = view(RowState::Pending);
        v.trx_state = Some("PROCESSING");
        let c = run(
            &v,
            RowEvent::GaveUp {
                max_resolve: Duration::from_secs(72 * 3600),
            },
        );
        assert_eq!(c.detail.as_deref(), Some("still unresolved 72 h after it was sent (the maximum resolve time), last Starpay state PROCESSING: check with Starpay; `reconcile` re-checks it"));
        let c = run(&view(RowState::InFlight), RowEvent::RecoveredInFlight);
        assert_eq!(
            c.patch.message,
            Some(Some(
                "interrupted while in flight; resolving by query".into()
            ))
        );
        assert_eq!(c.event, EventKind::RecoveredInFlight);
    }
}
