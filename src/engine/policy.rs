//! Pure decisions of the payout engine (reference §8, §9, §12): given a row and what Starpay
//! said, what is the row's next state and what should happen next. No I/O, no clock: `now` is
//! passed in. Table-tested below.

use std::time::Duration;

use crate::domain::{RowState, TrxState};
use crate::starpay::codes::{reason_class, Code, CodeClass, ReasonClass};

/// Waiting periods (reference §12 rules 3, 4, 10), all configurable so tests run in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveSettings {
    /// Delays of the first polls after a send, then `poll_interval` (rule 4: 30 s, 2 min, 5 min).
    pub poll_schedule: Vec<Duration>,
    pub poll_interval: Duration,
    /// Rule 3: consecutive 404s needed, and the time since the last send they must span.
    pub not_found_queries: u32,
    pub not_found_window: Duration,
    /// §9.2: how long a FAIL with an AB0x reason is held before it counts.
    pub ab_hold: Duration,
    /// How long one `run` keeps resolving before leaving rows for a later run.
    pub deadline: Duration,
    /// Rule 4: still unresolved this long after the first send → NEEDS_ATTENTION.
    pub max_resolve: Duration,
    /// Rows PROCESSING this long are reported STALE_PENDING (rule 4).
    pub stale_after: Duration,
    /// First delay of the backoff on 406 / transport errors (doubles to `backoff_max`).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for ResolveSettings {
    /// Reference §12 rule 4 (polls at +30 s, +2 min, +5 min, then every 10 min; stale after
    /// 30 min; give up after 72 h), rule 3 (three 404s over ≥ 10 min), §9.2 (AB0x hold 24 h).
    /// The job file's `[resolve]` defaults are these (config.rs reads them from here).
    fn default() -> Self {
        ResolveSettings {
            poll_schedule: vec![
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(300),
            ],
            poll_interval: Duration::from_secs(600),
            not_found_queries: 3,
            not_found_window: Duration::from_secs(600),
            ab_hold: Duration::from_secs(86_400),
            deadline: Duration::from_secs(600),
            max_resolve: Duration::from_secs(72 * 3600),
            stale_after: Duration::from_secs(1_800),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl ResolveSettings {
    /// Delay before poll number `n` (0-based) counted from the last send.
    pub fn poll_delay(&self, n: usize) -> Duration {
        self.poll_schedule
            .get(n)
            .copied()
            .unwrap_or(self.poll_interval)
    }

    /// Exponential backoff for try `n` (0-based), before jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The row state a verified `trxState` leads to (§8, §9.2). `hold_since_ms` is when the first
/// AB0x FAIL was seen, `now_ms` the current time.
pub fn state_from_trx(
    trx: &TrxState,
    error_code: Option<&str>,
    hold_since_ms: Option<i64>,
    now_ms: i64,
    ab_hold: Duration,
) -> RowState {
    match trx {
        TrxState::Success => RowState::Success,
        TrxState::Reversed => RowState::Reversed,
        TrxState::Fail => {
            let timeout = error_code.is_some_and(|c| reason_class(c) == ReasonClass::Timeout);
            if !timeout {
                return RowState::Failed;
            }
            let since = hold_since_ms.unwrap_or(now_ms);
            if now_ms.saturating_sub(since) >= ab_hold.as_millis() as i64 {
                RowState::Failed
            } else {
                RowState::FailHeld
            }
        }
        // No money moved on a payout (reference §8: handled like FAIL).
        TrxState::Close | TrxState::Cancel => RowState::Failed,
        TrxState::Init | TrxState::Processing | TrxState::Unknown(_) => RowState::Pending,
    }
}

/// What to do after the payout request's own answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendVerdict {
    /// Verified 200 with a `trxState`: apply it.
    Apply,
    /// Outcome unknown or to be confirmed: query. `verified_reject` when the payout itself got a
    /// verified 400/404/412/unlisted code (a later 404 then means REJECTED).
    Query { verified_reject: bool },
    /// Not processed: back off, send the same bytes again (406).
    BackOffResend,
    /// Stop the whole run; the row keeps its msgId and is sent again after the fix.
    StopRun,
}

/// Classifies the payout answer's code (§9.1, §12). `verified`: the answer's signature checked.
pub fn on_send_code(code: &Code, verified: bool, has_trx_state: bool) -> SendVerdict {
    match code.class() {
        CodeClass::StopRun => SendVerdict::StopRun,
        CodeClass::BackOff => SendVerdict::BackOffResend,
        CodeClass::Success if verified && has_trx_state => SendVerdict::Apply,
        CodeClass::Success => SendVerdict::Query {
            verified_reject: false,
        },
        CodeClass::ResolveByQuery | CodeClass::FinalFailure => {
            let rejection = verified && !matches!(code.as_str(), "403" | "413");
            SendVerdict::Query {
                verified_reject: rejection,
            }
        }
    }
}

/// What to do after a query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryVerdict {
    Apply,
    NotFound,
    /// 403 on a query or another non-answer: ask again later with a new query msgId.
    AskAgain,
    BackOff,
    StopRun,
}

pub fn on_query_code(code: &Code, verified: bool, has_trx_state: bool) -> QueryVerdict {
    match code.class() {
        CodeClass::StopRun => QueryVerdict::StopRun,
        CodeClass::BackOff => QueryVerdict::BackOff,
        CodeClass::Success if verified && has_trx_state => QueryVerdict::Apply,
        _ if verified && code.as_str() == "404" => QueryVerdict::NotFound,
        _ => QueryVerdict::AskAgain,
    }
}

/// The not-found rule (§12 rule 3) after a 404 on a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFoundAction {
    /// The payout's own answer was a verified rejection: no money moved.
    Reject,
    /// Keep querying.
    Wait,
    /// Three 404s spanning the window since the last send: resend the same msgId and bytes.
    Resend,
}

pub fn on_not_found(
    verified_reject: bool,
    consecutive_404s: u32,
    since_last_send: Duration,
    settings: &ResolveSettings,
) -> NotFoundAction {
    if verified_reject {
        NotFoundAction::Reject
    } else if consecutive_404s >= settings.not_found_queries
        && since_last_send >= settings.not_found_window
    {
        NotFoundAction::Resend
    } else {
        NotFoundAction::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(100);

    #[test]
    fn trx_state_table() {
        let t = |s: TrxState, e: Option<&str>, since: Option<i64>, now: i64| {
            state_from_trx(&s, e, since, now, HOLD)
        };
        assert_eq!(t(TrxState::Success, None, None, 0), RowState::Success);
        assert_eq!(t(TrxState::Reversed, None, None, 0), RowState::Reversed);
        assert_eq!(t(TrxState::Fail, Some("AC01"), None, 0), RowState::Failed);
        assert_eq!(t(TrxState::Fail, None, None, 0), RowState::Failed);
        assert_eq!(t(TrxState::Fail, Some("AB05"), None, 0), RowState::FailHeld);
        assert_eq!(
            t(TrxState::Fail, Some("AB05"), Some(0), 99_999),
            RowState::FailHeld
        );
        assert_eq!(
            t(TrxState::Fail, Some("AB05"), Some(0), 100_000),
            RowState::Failed
        );
        assert_eq!(t(TrxState::Close, None, None, 0), RowState::Failed);
        assert_eq!(t(TrxState::Cancel, None, None, 0), RowState::Failed);
        assert_eq!(
            t(TrxState::Processing, Some("AB05"), None, 0),
            RowState::Pending
        );
        assert_eq!(t(TrxState::Init, None, None, 0), RowState::Pending);
        assert_eq!(
            t(TrxState::Unknown("HELD".into()), None, None, 0),
            RowState::Pending
        );
    }

    #[test]
    fn send_code_table() {
        let c = Code::new;
        assert_eq!(on_send_code(&c("200"), true, true), SendVerdict::Apply);
        assert_eq!(
            on_send_code(&c("200"), false, true),
            SendVerdict::Query {
                verified_reject: false
            }
        );
        assert_eq!(
            on_send_code(&c("200"), true, false),
            SendVerdict::Query {
                verified_reject: false
            }
        );
        for stop in ["401", "402", "410", "411", "414"] {
            assert_eq!(
                on_send_code(&c(stop), true, false),
                SendVerdict::StopRun,
                "{stop}"
            );
            assert_eq!(
                on_send_code(&c(stop), false, false),
                SendVerdict::StopRun,
                "{stop} unverified"
            );
        }
        assert_eq!(
            on_send_code(&c("406"), false, false),
            SendVerdict::BackOffResend
        );
        assert_eq!(
            on_send_code(&c("403"), true, false),
            SendVerdict::Query {
                verified_reject: false
            }
        );
        for rej in ["400", "404", "412", "511"] {
            assert_eq!(
                on_send_code(&c(rej), true, false),
                SendVerdict::Query {
                    verified_reject: true
                },
                "{rej}"
            );
            assert_eq!(
                on_send_code(&c(rej), false, false),
                SendVerdict::Query {
                    verified_reject: false
                },
                "{rej} unverified"
            );
        }
    }

    #[test]
    fn query_code_table() {
        use QueryVerdict::*;
        // (code, the answer is verified, it carries a trxState, what the runner does)
        #[rustfmt::skip]
        let table = [
            ("200", true,  true,  Apply),
            ("200", false, true,  AskAgain),
            ("404", true,  false, NotFound),
            ("404", false, false, AskAgain),
            ("403", true,  false, AskAgain),
            ("406", true,  false, BackOff),
            ("402", false, false, StopRun),
        ];
        for (code, verified, has_state, want) in table {
            let got = on_query_code(&Code::new(code), verified, has_state);
            assert_eq!(got, want, "{code} verified={verified} trxState={has_state}");
        }
    }

    #[test]
    fn not_found_rule() {
        let s = ResolveSettings {
            not_found_queries: 3,
            not_found_window: Duration::from_secs(600),
            ..ResolveSettings::default()
        };
        // (verified reject, 404s in a row, seconds since the last send, what the runner does)
        let table = [
            (true, 1, 0, NotFoundAction::Reject),
            (false, 2, 900, NotFoundAction::Wait),
            (false, 3, 599, NotFoundAction::Wait),
            (false, 3, 600, NotFoundAction::Resend),
        ];
        for (never_sent, streak, since, want) in table {
            let got = on_not_found(never_sent, streak, Duration::from_secs(since), &s);
            assert_eq!(
                got, want,
                "never sent {never_sent}, {streak} 404s, {since} s"
            );
        }
    }

    #[test]
    fn schedule_and_backoff() {
        let s = ResolveSettings::default();
        assert_eq!(s.poll_delay(0), Duration::from_secs(30));
        assert_eq!(s.poll_delay(2), Duration::from_secs(300));
        assert_eq!(s.poll_delay(3), Duration::from_secs(600));
        assert_eq!(s.backoff(0), Duration::from_secs(1));
        assert_eq!(s.backoff(3), Duration::from_secs(8));
        assert_eq!(s.backoff(10), Duration::from_secs(60));
        assert_eq!(s.backoff(40), Duration::from_secs(60));
    }
}
