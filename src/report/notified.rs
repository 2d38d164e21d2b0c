//! A reconciliation report's comparison with what the notification receiver saw (issue 12):
//! the repayment records (6.5 static-QR payments and 6.3 dynamic-QR results, outcome
//! `repayment`) and the unmatched notifications (a msgId this database never issued) of the
//! run's day, against the file's lines.
//!
//! **The day.** Notifications count by their `trxDate` (Starpay's time of the payment, not when
//! it arrived), in whole calendar days of `[report] timezone`: from the day of the earliest
//! `trxDate` Starpay gave for a line of the file to the day of the later of the latest such
//! `trxDate` and the run's creation. A file with no line found at Starpay covers the day the run
//! was created. A nightly end-of-day job therefore compares the day it runs for; a file of
//! yesterday's collections checked this morning covers yesterday and today.
//!
//! Matching: a line and a notification are about one payment when the line's `original_msg_id`,
//! `ref_no` or Starpay's `order_no` for it equals the notification's. Only the latest state of
//! each notified msgId counts (a REVERSED after its SUCCESS is one payment).
//!
//! Reads through the store; computes no row state and changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Days, FixedOffset, NaiveTime, TimeZone};

use crate::domain::{Centavos, RunKind};
use crate::store::notifications::NotifiedPayment;
use crate::store::recon::ReconRecord;
use crate::store::RunRecord;

/// Category of a line of the report that is not a line of the file: a repayment notified to
/// the receiver that no line of the file names.
pub const NOTIFIED_NOT_IN_FILE: &str = "NOTIFIED_NOT_IN_FILE";
/// The `notification` column of a line Starpay has paid (SUCCESS or REVERSED) for which no
/// notification was received.
pub const IN_FILE_NEVER_NOTIFIED: &str = "IN_FILE_NEVER_NOTIFIED";
/// The `notification` column of a line a notification was received for.
pub const NOTIFIED: &str = "NOTIFIED";
/// Category of a line of the report for a notification about a msgId this database never
/// issued and no line of the file names (`status`: MISSING_LOCALLY).
pub const UNMATCHED_NOTIFICATION: &str = "UNMATCHED_NOTIFICATION";

/// What the comparison found: count and amount of each kind of line, and the day(s) compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationCheck {
    /// The comparison of repayment records with the file was made (repayment-recon runs).
    pub repayments: bool,
    pub from_day: String,
    pub to_day: String,
    pub notified_not_in_file: (i64, Centavos),
    pub in_file_never_notified: (i64, Centavos),
    pub unmatched: (i64, Centavos),
    /// Lines of the file a notification was received for.
    pub notified_in_file: i64,
}

impl NotificationCheck {
    /// The summary lines (label, count, amount), after the category table.
    pub fn lines(&self) -> Vec<(String, i64, Centavos)> {
        let mut out = Vec::new();
        if self.repayments {
            out.push((
                NOTIFIED_NOT_IN_FILE.to_string(),
                self.notified_not_in_file.0,
                self.notified_not_in_file.1,
            ));
            out.push((
                IN_FILE_NEVER_NOTIFIED.to_string(),
                self.in_file_never_notified.0,
                self.in_file_never_notified.1,
            ));
        }
        out.push((
            UNMATCHED_NOTIFICATION.to_string(),
            self.unmatched.0,
            self.unmatched.1,
        ));
        out
    }

    /// `2026-12-07` or `2026-12-06 to 2026-12-07`.
    pub fn days(&self) -> String {
        if self.from_day == self.to_day {
            self.from_day.clone()
        } else {
            format!("{} to {}", self.from_day, self.to_day)
        }
    }
}

/// The compared window: `[start, end)` in UTC milliseconds, whole days of `tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
    tz: FixedOffset,
}

fn parse_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl Window {
    /// The run's day(s) (module doc): from the earliest `trxDate` of its lines (or its creation)
    /// to the later of the latest `trxDate` and its creation, whole days of `tz`.
    pub fn of_run(
        created_ms: i64,
        first_trx: Option<&str>,
        last_trx: Option<&str>,
        tz: FixedOffset,
    ) -> Window {
        let first = first_trx.and_then(parse_ms).unwrap_or(created_ms);
        let last = last_trx
            .and_then(parse_ms)
            .map_or(created_ms, |l| l.max(created_ms));
        let day_start = |ms: i64| -> i64 {
            let local = tz.timestamp_millis_opt(ms).single().map(|t| t.date_naive());
            local
                .and_then(|d| tz.from_local_datetime(&d.and_time(NaiveTime::MIN)).single())
                .map_or(ms, |t| t.timestamp_millis())
        };
        let next_day = |ms: i64| -> i64 {
            let start = day_start(ms);
            tz.timestamp_millis_opt(start)
                .single()
                .and_then(|t| t.checked_add_days(Days::new(1)))
                .map_or(start + 86_400_000, |t| t.timestamp_millis())
        };
        Window {
            start_ms: day_start(first.min(last)),
            end_ms: next_day(last),
            tz,
        }
    }

    fn day_text(&self, ms: i64) -> String {
        self.tz
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    /// Whether a notification belongs to the window: by its `trxDate`, or, without a readable
    /// one, by when it was received.
    pub fn holds(&self, n: &NotifiedPayment) -> bool {
        let at = n
            .trx_date
            .as_deref()
            .and_then(parse_ms)
            .unwrap_or(n.received_at);
        (self.start_ms..self.end_ms).contains(&at)
    }

    /// Notifications are read from this time of receipt on: a payment of the window's first day
    /// notified up to two days late (Starpay's redelivery ends after about an hour) is still
    /// read; earlier ones cannot belong to the window.
    pub fn read_since_ms(&self) -> i64 {
        self.start_ms - 2 * 86_400_000
    }
}

/// The comparison, built while the report's lines stream past (memory: the day's
/// notifications, never the file's lines).
pub struct Matcher {
    kind: RunKind,
    /// The latest notification of each msgId, and whether a line named it.
    payments: Vec<(NotifiedPayment, bool)>,
    by_key: HashMap<String, usize>,
    check: NotificationCheck,
}

impl Matcher {
    /// `notifications`: what `Store::notifications_not_about_payouts` returned, oldest first.
    pub fn new(run: &RunRecord, window: Window, notifications: Vec<NotifiedPayment>) -> Matcher {
        let mut latest: HashMap<String, usize> = HashMap::new();
        let mut payments: Vec<(NotifiedPayment, bool)> = Vec::new();
        for n in notifications.into_iter().filter(|n| window.holds(n)) {
            match latest.get(&n.original_msg_id) {
                Some(&i) => payments[i].0 = n,
                None => {
                    latest.insert(n.original_msg_id.clone(), payments.len());
                    payments.push((n, false));
                }
            }
        }
        let mut by_key = HashMap::new();
        for (i, (n, _)) in payments.iter().enumerate() {
            by_key.insert(format!("msg:{}", n.original_msg_id), i);
            if let Some(o) = n.order_no.as_deref().filter(|o| !o.is_empty()) {
                by_key.insert(format!("order:{o}"), i);
            }
            if let Some(r) = n.ref_no.as_deref().filter(|r| !r.is_empty()) {
                by_key.insert(format!("ref:{r}"), i);
            }
        }
        let check = NotificationCheck {
            repayments: run.kind == RunKind::RepaymentRecon,
            from_day: window.day_text(window.start_ms),
            to_day: window.day_text(window.end_ms - 1),
            ..NotificationCheck::default()
        };
        Matcher {
            kind: run.kind,
            payments,
            by_key,
            check,
        }
    }

    /// The `notification` column of one line of the file.
    pub fn line(&mut self, r: &ReconRecord) -> String {
        if r.category == Some(crate::domain::ReconCategory::DuplicateInInput) {
            // The first copy of the line carries the comparison.
            return String::new();
        }
        let keys = [
            r.original_msg_id.as_deref().map(|m| format!("msg:{m}")),
            r.ref_no.as_deref().map(|f| format!("ref:{f}")),
            r.order_no.as_deref().map(|o| format!("order:{o}")),
        ];
        let found = keys
            .iter()
            .flatten()
            .find_map(|k| self.by_key.get(k).copied());
        if let Some(i) = found {
            self.payments[i].1 = true;
            self.check.notified_in_file += 1;
            return NOTIFIED.to_string();
        }
        let paid = matches!(r.trx_state.as_deref(), Some("SUCCESS" | "REVERSED"));
        if self.kind == RunKind::RepaymentRecon && paid {
            self.check.in_file_never_notified.0 += 1;
            let amount = r.provider_amount.or(r.expected_amount).unwrap_or_default();
            let c = &mut self.check.in_file_never_notified.1;
            *c = c.checked_add(amount).unwrap_or(*c);
            return IN_FILE_NEVER_NOTIFIED.to_string();
        }
        String::new()
    }

    /// After the file's lines: the notifications no line named, as report lines (the report's
    /// columns, `line` empty), counted; and the counts.
    pub fn finish(
        mut self,
        tz: FixedOffset,
        columns: usize,
    ) -> (Vec<Vec<String>>, NotificationCheck) {
        let mut out = Vec::new();
        for (n, named) in &self.payments {
            if *named {
                continue;
            }
            let (category, action, what) = match n.outcome.as_str() {
                "repayment" if self.kind == RunKind::RepaymentRecon => (
                    NOTIFIED_NOT_IN_FILE,
                    "a payment Starpay notified that the file does not list: add it to the collections or find out who paid",
                    format!(
                        "repayment notified (deviceInfo {}); no line of the file names it",
                        n.device_info.as_deref().unwrap_or("none")
                    ),
                ),
                "unmatched" => (
                    UNMATCHED_NOTIFICATION,
                    "a notification about a msgId this database never issued (MISSING_LOCALLY): find out which system sent it",
                    "notification for a msgId this database never issued; no line of the file names it".to_string(),
                ),
                // A repayment record in a disbursement reconciliation is not about its file.
                _ => continue,
            };
            let counter = if category == NOTIFIED_NOT_IN_FILE {
                &mut self.check.notified_not_in_file
            } else {
                &mut self.check.unmatched
            };
            counter.0 += 1;
            counter.1 = counter.1.checked_add(n.amount).unwrap_or(counter.1);
            // The report's columns (`RECON_COLUMNS`), in their order.
            let mut line = vec![
                String::new(),
                String::new(),
                n.ref_no.clone().unwrap_or_default(),
                n.original_msg_id.clone(),
                n.order_no.clone().unwrap_or_default(),
                String::new(),
                n.amount.to_string(),
                String::new(),
                String::new(),
                n.trx_state.clone(),
                category.to_string(),
                String::new(),
                format!("{what} (notification {})", n.id),
                String::new(),
                String::new(),
                n.trx_date.clone().unwrap_or_default(),
                super::ts(Some(n.received_at), tz),
                action.to_string(),
                NOTIFIED.to_string(),
            ];
            line.resize(columns, String::new());
            out.push(line);
        }
        (out, self.check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manila() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    fn ms(text: &str) -> i64 {
        parse_ms(text).unwrap()
    }

    #[test]
    fn the_day_is_whole_days_of_the_report_time_zone() {
        let tz = manila();
        // No line found at Starpay: the day the run was created (23:30 Manila).
        let w = Window::of_run(ms("2026-12-07T23:30:00+08:00"), None, None, tz);
        assert_eq!(w.start_ms, ms("2026-12-07T00:00:00+08:00"));
        assert_eq!(w.end_ms, ms("2026-12-08T00:00:00+08:00"));
        // Yesterday's payments checked this morning: yesterday and today.
        let w = Window::of_run(
            ms("2026-12-08T08:00:00+08:00"),
            Some("2026-12-07T09:15:00+08:00"),
            Some("2026-12-07T21:00:00+08:00"),
            tz,
        );
        assert_eq!(w.start_ms, ms("2026-12-07T00:00:00+08:00"));
        assert_eq!(w.end_ms, ms("2026-12-09T00:00:00+08:00"));
        let n = |trx: Option<&str>, received: &str| NotifiedPayment {
            id: 1,
            received_at: ms(received),
            outcome: "repayment".into(),
            original_msg_id: "X".into(),
            trx_state: "SUCCESS".into(),
            amount: Centavos::new(100),
            order_no: None,
            ref_no: None,
            device_info: None,
            trx_date: trx.map(str::to_string),
        };
        // By trxDate, not by arrival.
        assert!(w.holds(&n(
            Some("2026-12-07T00:00:00+08:00"),
            "2026-12-10T00:00:00+08:00"
        )));
        assert!(!w.holds(&n(
            Some("2026-12-06T23:59:59+08:00"),
            "2026-12-07T00:00:01+08:00"
        )));
        // An unreadable trxDate: by arrival.
        assert!(w.holds(&n(Some("yesterday"), "2026-12-08T12:00:00+08:00")));
    }
}
