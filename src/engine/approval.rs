//! Approval (maker-checker) and spending caps: the pure rules a payout file must pass before
//! any money moves (issue 13). Is this file approved, by someone other than who prepared it,
//! recently enough, for these exact bytes; is it within the job's caps, or did the approval
//! explicitly cover the larger amount.
//!
//! Owns: the `[approval]` and `[spending]` job-file tables (parsed here, validated into
//! [`ApprovalSettings`] and [`Spending`]; `config` only places them in the `JobConfig`), the
//! file's figures shown to an approver ([`Figures`]), which caps a file breaks ([`breaches`]),
//! and whether a run may start ([`check_run`]). Must not: read files, the store or the clock
//! (the approval log and `now` are passed in), so every rule is table-tested.
//!
//! Invariants: amounts are integer centavos parsed from decimal strings
//! ([`Centavos::parse_php`]), never floats; an approval is bound to the file's SHA-256 and is
//! never deleted (a revocation is a new log entry); a cap is overridden only by an approval
//! that recorded that cap's name.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Centavos;
use crate::input::payout::PayoutRow;
use crate::store::approvals::{ApprovalAction, ApprovalEntry};

/// Default of `[approval] max_age_hours`: an approval is good for one working day.
pub const DEFAULT_MAX_AGE_HOURS: u64 = 24;
/// Upper bound of `max_age_hours` (a year): an approval is a decision about today's file.
pub const MAX_AGE_HOURS_LIMIT: u64 = 24 * 366;
/// Longest `--by` name kept (it is shown in reports and logs).
pub const MAX_NAME_LEN: usize = 64;
/// Bank label of a `starpay` channel row (it has no bank) in the figures and caps.
pub const STARPAY_ACCOUNT: &str = "(Starpay account)";

/// `[approval]`: whether a person must approve each payout file before `run` sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSettings {
    pub required: bool,
    /// The approver must not be the person who prepared (staged) the file.
    pub four_eyes: bool,
    /// An approval older than this no longer lets a run start.
    pub max_age: Duration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            required: false,
            four_eyes: false,
            max_age: Duration::from_secs(DEFAULT_MAX_AGE_HOURS * 3600),
        }
    }
}

/// `[spending]`: caps on what one payout file may send (not the `[limits]` rate limits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spending {
    pub max_total: Option<Centavos>,
    pub max_rows: Option<u64>,
    pub max_row_amount: Option<Centavos>,
    /// Per bank name as written in the file (InstaPay rows); `(Starpay account)` for the
    /// starpay channel.
    pub per_bank: BTreeMap<String, Centavos>,
    /// A `run` on a terminal of a file above this total asks for a typed confirmation.
    pub confirm_above: Option<Centavos>,
}

/// One unusable value of these tables: the dotted key, the value as written, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// `[approval]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApproval {
    required: bool,
    four_eyes: bool,
    max_age_hours: Option<u64>,
}

/// `[spending]` as written: amounts are PHP decimal strings (`"250000.00"`, `"1,000"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpending {
    max_total: Option<String>,
    max_rows: Option<u64>,
    max_row_amount: Option<String>,
    confirm_above: Option<String>,
    per_bank: BTreeMap<String, String>,
}

impl RawApproval {
    pub fn validate(self, problems: &mut Vec<SettingProblem>) -> ApprovalSettings {
        let hours = self.max_age_hours.unwrap_or(DEFAULT_MAX_AGE_HOURS);
        if !(1..=MAX_AGE_HOURS_LIMIT).contains(&hours) {
            problems.push(SettingProblem {
                key: "approval.max_age_hours".into(),
                value: hours.to_string(),
                reason: format!("must be 1..={MAX_AGE_HOURS_LIMIT}"),
            });
        }
        if self.four_eyes && !self.required {
            problems.push(SettingProblem {
                key: "approval.four_eyes".into(),
                value: "true".into(),
                reason: "needs `required = true` (four eyes is a rule about the approval)".into(),
            });
        }
        ApprovalSettings {
            required: self.required,
            four_eyes: self.four_eyes,
            max_age: Duration::from_secs(hours.clamp(1, MAX_AGE_HOURS_LIMIT) * 3600),
        }
    }
}

impl RawSpending {
    pub fn validate(self, problems: &mut Vec<SettingProblem>) -> Spending {
        let mut amount = |key: String, text: Option<String>| -> Option<Centavos> {
            let text = text?;
            match Centavos::parse_php(&text) {
                Ok(a) if a.is_positive() => Some(a),
                Ok(_) => {
                    problems.push(SettingProblem {
                        key,
                        value: text,
                        reason: "must be more than 0".into(),
                    });
                    None
                }
                Err(e) => {
                    problems.push(SettingProblem {
                        key,
                        value: text,
                        reason: format!(
                            "write PHP as a decimal string such as \"250000.00\" ({e})"
                        ),
                    });
                    None
                }
            }
        };
        let max_total = amount("spending.max_total".into(), self.max_total);
        let max_row_amount = amount("spending.max_row_amount".into(), self.max_row_amount);
        let confirm_above = amount("spending.confirm_above".into(), self.confirm_above);
        let mut per_bank = BTreeMap::new();
        for (bank, text) in self.per_bank {
            if let Some(a) = amount(format!("spending.per_bank.{bank:?}"), Some(text)) {
                per_bank.insert(bank, a);
            }
        }
        if self.max_rows == Some(0) {
            problems.push(SettingProblem {
                key: "spending.max_rows".into(),
                value: "0".into(),
                reason: "must be more than 0".into(),
            });
        }
        Spending {
            max_total,
            max_rows: self.max_rows.filter(|n| *n > 0),
            max_row_amount,
            per_bank,
            confirm_above,
        }
    }
}

// ------------------------------------------------------------------ figures

/// The largest row of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Largest {
    pub line: u64,
    pub reference: String,
    pub amount: Centavos,
}

/// What an approver is shown and what the caps are checked against: the valid rows of a
/// validated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    pub rows: u64,
    pub total: Centavos,
    pub largest: Option<Largest>,
    /// Per bank (or [`STARPAY_ACCOUNT`]): rows and amount, by name.
    pub per_bank: BTreeMap<String, (u64, Centavos)>,
    /// Per channel (`instapay`, `starpay`): rows and amount.
    pub per_channel: BTreeMap<String, (u64, Centavos)>,
    /// How many rows are above `[spending] max_row_amount` (0 without that cap).
    pub rows_above_row_cap: u64,
    pub sha256: String,
}

/// A sum that cannot overflow silently: past `i64::MAX` centavos it stays there (above any cap).
fn add(a: Centavos, b: Centavos) -> Centavos {
    a.checked_add(b).unwrap_or(Centavos::new(i64::MAX))
}

impl Figures {
    pub fn of(sha256: &str, rows: &[PayoutRow], spending: &Spending) -> Figures {
        let mut f = Figures::empty(sha256.to_string());
        for r in rows {
            f.add(r, spending);
        }
        f
    }

    /// The figures of no rows yet, of the file whose SHA-256 is `sha256` (set it when known).
    pub fn empty(sha256: String) -> Figures {
        Figures {
            rows: 0,
            total: Centavos::ZERO,
            largest: None,
            per_bank: BTreeMap::new(),
            per_channel: BTreeMap::new(),
            rows_above_row_cap: 0,
            sha256,
        }
    }

    /// Counts one more valid row (a file's rows are streamed through this, never all kept).
    pub fn add(&mut self, r: &PayoutRow, spending: &Spending) {
        let bank = r
            .bank
            .clone()
            .unwrap_or_else(|| STARPAY_ACCOUNT.to_string());
        let e = self.per_bank.entry(bank).or_insert((0, Centavos::ZERO));
        *e = (e.0 + 1, add(e.1, r.amount));
        let e = self
            .per_channel
            .entry(r.channel.as_str().to_string())
            .or_insert((0, Centavos::ZERO));
        *e = (e.0 + 1, add(e.1, r.amount));
        self.total = add(self.total, r.amount);
        if self.largest.as_ref().is_none_or(|l| r.amount > l.amount) {
            self.largest = Some(Largest {
                line: r.line,
                reference: r.reference.clone(),
                amount: r.amount,
            });
        }
        if spending.max_row_amount.is_some_and(|cap| r.amount > cap) {
            self.rows_above_row_cap += 1;
        }
        self.rows += 1;
    }

    /// The totals table an approver reads before confirming.
    pub fn to_text(&self) -> String {
        let money = crate::report::with_thousands;
        let mut s = format!(
            "rows:        {}\ntotal:       PHP {}\n",
            self.rows,
            money(self.total)
        );
        if let Some(l) = &self.largest {
            s.push_str(&format!(
                "largest row: PHP {} (line {}, reference {})\n",
                money(l.amount),
                l.line,
                l.reference
            ));
        }
        s.push_str(&format!("sha256:      {}\n", self.sha256));
        let table = |title: &str, m: &BTreeMap<String, (u64, Centavos)>| {
            let rows: Vec<(String, i64, Centavos)> = m
                .iter()
                .map(|(k, (n, a))| (k.clone(), *n as i64, *a))
                .collect();
            crate::report::table_text(title, &rows)
        };
        s.push('\n');
        s.push_str(&table("bank", &self.per_bank));
        s.push('\n');
        s.push_str(&table("channel", &self.per_channel));
        s
    }
}

// ------------------------------------------------------------------ caps

/// One cap a file exceeds, with the figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    /// `max_total`, `max_rows`, `max_row_amount` or `per_bank.<bank>`: what an approval
    /// records when it overrides the cap.
    pub limit: String,
    pub allowed: String,
    pub actual: String,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spending.{}: allowed {}, the file has {}",
            self.limit, self.allowed, self.actual
        )
    }
}

/// Every cap of `spending` the file exceeds.
pub fn breaches(f: &Figures, spending: &Spending) -> Vec<Breach> {
    let php = |a: Centavos| format!("PHP {}", crate::report::with_thousands(a));
    let mut out = Vec::new();
    if let Some(cap) = spending.max_total {
        if f.total > cap {
            out.push(Breach {
                limit: "max_total".into(),
                allowed: php(cap),
                actual: php(f.total),
            });
        }
    }
    if let Some(cap) = spending.max_rows {
        if f.rows > cap {
            out.push(Breach {
                limit: "max_rows".into(),
                allowed: format!("{cap} rows"),
                actual: format!("{} rows", f.rows),
            });
        }
    }
    if let (Some(cap), Some(l)) = (spending.max_row_amount, &f.largest) {
        if l.amount > cap {
            out.push(Breach {
                limit: "max_row_amount".into(),
                allowed: php(cap),
                actual: format!(
                    "{} row(s) above it, the largest {} (line {}, reference {})",
                    f.rows_above_row_cap,
                    php(l.amount),
                    l.line,
                    l.reference
                ),
            });
        }
    }
    for (bank, cap) in &spending.per_bank {
        if let Some((n, amount)) = f.per_bank.get(bank) {
            if amount > cap {
                out.push(Breach {
                    limit: format!("per_bank.{bank}"),
                    allowed: php(*cap),
                    actual: format!("{} in {n} row(s)", php(*amount)),
                });
            }
        }
    }
    out
}

// ------------------------------------------------------------------ approvals

/// Names are compared trimmed and case-insensitively (`Ana` approving `ana `'s file is the same
/// person).
pub fn same_person(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// A usable `--by` name: not empty, at most [`MAX_NAME_LEN`] characters, no control
/// characters.
pub fn check_name(flag: &str, name: &str) -> Result<String, String> {
    let t = name.trim();
    if t.is_empty() {
        return Err(format!("{flag} is empty: name the person"));
    }
    if t.chars().count() > MAX_NAME_LEN {
        return Err(format!("{flag} is longer than {MAX_NAME_LEN} characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(format!("{flag} holds a control character"));
    }
    Ok(t.to_string())
}

/// The approval of file `sha256` in force at `at` (UTC ms): the latest approval of that file
/// made at or before `at` that no revocation at or before `at` names.
pub fn in_force<'a>(log: &'a [ApprovalEntry], sha256: &str, at: i64) -> Option<&'a ApprovalEntry> {
    let revoked = |id: i64| {
        log.iter()
            .any(|e| e.action == ApprovalAction::Revoked && e.revokes == Some(id) && e.at <= at)
    };
    log.iter()
        .filter(|e| e.action == ApprovalAction::Approved && e.input_sha256 == sha256 && e.at <= at)
        .filter(|e| !revoked(e.id))
        .max_by_key(|e| (e.at, e.id))
}

/// Who staged file `sha256` last, if anyone.
pub fn stager<'a>(log: &'a [ApprovalEntry], sha256: &str) -> Option<&'a ApprovalEntry> {
    log.iter()
        .filter(|e| e.action == ApprovalAction::Staged && e.input_sha256 == sha256)
        .max_by_key(|e| (e.at, e.id))
}

/// Under four eyes: the approver must differ from a known preparer.
pub fn four_eyes_problem(prepared_by: Option<&str>, approver: &str) -> Option<Refusal> {
    match prepared_by {
        None => Some(Refusal::NoPreparer),
        Some(p) if same_person(p, approver) => Some(Refusal::SelfApproved {
            name: approver.to_string(),
        }),
        Some(_) => None,
    }
}

/// Why a run may not start. Every message ends with "nothing was sent" where it is shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this file (sha256 {}) has no approval: `starpay-batch approve JOB --by NAME` first ([approval] required = true)", short(.sha256))]
    Unapproved { sha256: String },
    #[error("the approval of this file (sha256 {}) was revoked by {by}; approve it again to run it", short(.sha256))]
    Revoked { sha256: String, by: String },
    #[error("the file changed since it was approved: {approved_by} approved sha256 {}, the file now has sha256 {}; approve the new file", short(.approved_sha256), short(.sha256))]
    Changed {
        sha256: String,
        approved_sha256: String,
        approved_by: String,
    },
    #[error("the approval by {by} is {age_hours} h old, older than [approval] max_age_hours = {max_hours}; approve the file again")]
    Stale {
        by: String,
        age_hours: u64,
        max_hours: u64,
    },
    #[error("four eyes: {name} prepared this file and may not approve it; another person must approve it")]
    SelfApproved { name: String },
    #[error("four eyes: nobody is recorded as having prepared this file: `starpay-batch stage JOB --by NAME` first, or pass --prepared-by to approve")]
    NoPreparer,
    #[error("the file is over the job's spending caps: {}; an approval given with --over-limits can cover them", list(.0))]
    OverLimits(Vec<Breach>),
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

fn list(b: &[Breach]) -> String {
    b.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a run may start under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared<'a> {
    /// The approval in force, if any (also without `required`, when one exists).
    pub approval: Option<&'a ApprovalEntry>,
    /// Caps the file exceeds that the approval covers.
    pub overridden: Vec<Breach>,
}

/// Whether a run of the file with `figures` (from `input_path`) may start at `now` (UTC ms),
/// given the job's approval log `log`: the approval rules first (when required), then the
/// caps, which only an approval that recorded them as overridden lifts.
pub fn check_run<'a>(
    settings: &ApprovalSettings,
    spending: &Spending,
    log: &'a [ApprovalEntry],
    input_path: &str,
    figures: &Figures,
    now: i64,
) -> Result<Cleared<'a>, Refusal> {
    let sha = &figures.sha256;
    let approval = in_force(log, sha, now);
    if settings.required {
        let Some(a) = approval else {
            let revoked = log
                .iter()
                .filter(|e| e.action == ApprovalAction::Revoked && e.input_sha256 == *sha)
                .max_by_key(|e| (e.at, e.id));
            if let Some(r) = revoked {
                return Err(Refusal::Revoked {
                    sha256: sha.clone(),
                    by: r.by.clone(),
                });
            }
            let earlier = log
                .iter()
                .filter(|e| {
                    e.action == ApprovalAction::Approved
                        && e.input_path == input_path
                        && e.input_sha256 != *sha
                })
                .max_by_key(|e| (e.at, e.id));
            return Err(match earlier {
                Some(e) => Refusal::Changed {
                    sha256: sha.clone(),
                    approved_sha256: e.input_sha256.clone(),
                    approved_by: e.by.clone(),
                },
                None => Refusal::Unapproved {
                    sha256: sha.clone(),
                },
            });
        };
        let age_ms = now.saturating_sub(a.at).max(0) as u128;
        if age_ms > settings.max_age.as_millis() {
            return Err(Refusal::Stale {
                by: a.by.clone(),
                age_hours: (age_ms / 3_600_000) as u64,
                max_hours: settings.max_age.as_secs() / 3600,
            });
        }
        if settings.four_eyes {
            if let Some(r) = four_eyes_problem(a.prepared_by.as_deref(), &a.by) {
                return Err(r);
            }
        }
    }
    // Caps: an approval lifts a cap only when it recorded that cap as overridden (and it is
    // not stale: an old approval of a big file is no cover).
    let fresh = approval
        .filter(|a| (now.saturating_sub(a.at).max(0) as u128) <= settings.max_age.as_millis());
    let (overridden, over): (Vec<Breach>, Vec<Breach>) = breaches(figures, spending)
        .into_iter()
        .partition(|b| fresh.is_some_and(|a| a.overrides.contains(&b.limit)));
    if !over.is_empty() {
        return Err(Refusal::OverLimits(over));
    }
    Ok(Cleared {
        approval,
        overridden,
    })
}

/// "prepared by A; approved by B at T" for `status`, `runs`, `show` and the HTML summary: the
/// approval in force when the run was created (or the file's last staging when none).
pub fn describe(
    log: &[ApprovalEntry],
    sha256: &str,
    run_created_at: i64,
    tz: chrono::FixedOffset,
) -> Option<String> {
    let approval = in_force(log, sha256, run_created_at);
    let prepared = approval
        .and_then(|a| a.prepared_by.clone())
        .or_else(|| stager(log, sha256).map(|s| s.by.clone()));
    let mut parts = Vec::new();
    if let Some(p) = prepared {
        parts.push(format!("prepared by {p}"));
    }
    if let Some(a) = approval {
        let mut s = format!(
            "approved by {} at {}",
            a.by,
            crate::report::ts(Some(a.at), tz)
        );
        if !a.overrides.is_empty() {
            s.push_str(&format!(" (over caps: {})", a.overrides.join(", ")));
        }
        parts.push(s);
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::payout::{Channel, PayoutRow};

    const HOUR: i64 = 3_600_000;

    fn row(line: u64, bank: Option<&str>, amount: i64) -> PayoutRow {
        PayoutRow {
            line,
            reference: format!("R{line}"),
            channel: if bank.is_some() {
                Channel::Instapay
            } else {
                Channel::Starpay
            },
            account_no: "0000001234".into(),
            account_name: "Juan".into(),
            middle_name: String::new(),
            last_name: "Cruz".into(),
            bank: bank.map(str::to_string),
            amount: Centavos::new(amount),
            note: None,
        }
    }

    /// The figures of a file of `rows` (its SHA-256 `aa…`).
    fn figures(rows: &[PayoutRow], spending: &Spending) -> Figures {
        Figures::of(&"aa".repeat(32), rows, spending)
    }

    fn entry(id: i64, action: ApprovalAction, by: &str, at: i64, sha: &str) -> ApprovalEntry {
        ApprovalEntry {
            id,
            job: "job".into(),
            action,
            by: by.into(),
            at,
            input_path: "in.csv".into(),
            input_sha256: sha.into(),
            rows: 3,
            total: Centavos::new(600),
            prepared_by: None,
            overrides: Vec::new(),
            revokes: None,
        }
    }

    fn approved(id: i64, by: &str, at: i64, prepared: Option<&str>) -> ApprovalEntry {
        ApprovalEntry {
            prepared_by: prepared.map(str::to_string),
            ..entry(id, ApprovalAction::Approved, by, at, &"aa".repeat(32))
        }
    }

    fn spending(text: &str) -> Result<Spending, Vec<SettingProblem>> {
        let raw: RawSpending = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let s = raw.validate(&mut problems);
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(problems)
        }
    }

    fn required(four_eyes: bool) -> ApprovalSettings {
        ApprovalSettings {
            required: true,
            four_eyes,
            max_age: Duration::from_secs(24 * 3600),
        }
    }

    #[test]
    fn spending_amounts_are_decimal_strings() {
        let s = spending(
            "max_total = \"1,000.50\"\nmax_rows = 2\nmax_row_amount = \"300\"\n[per_bank]\nGCash = \"250.00\"\n",
        )
        .unwrap();
        assert_eq!(s.max_total, Some(Centavos::new(100_050)));
        assert_eq!(s.max_rows, Some(2));
        assert_eq!(s.max_row_amount, Some(Centavos::new(30_000)));
        assert_eq!(s.per_bank["GCash"], Centavos::new(25_000));
        for (bad, key) in [
            ("max_total = \"0\"", "spending.max_total"),
            ("max_total = \"-5\"", "spending.max_total"),
            ("max_row_amount = \"1.005\"", "spending.max_row_amount"),
            ("max_rows = 0", "spending.max_rows"),
            ("[per_bank]\nGCash = \"abc\"", "spending.per_bank.\"GCash\""),
        ] {
            let p = spending(bad).unwrap_err();
            assert_eq!(p[0].key, key, "{bad}");
        }
        // A float is a type error, never read as money.
        assert!(toml::from_str::<RawSpending>("max_total = 1000.5").is_err());
    }

    #[test]
    fn approval_table_rules() {
        let mut p = Vec::new();
        let raw: RawApproval = toml::from_str("four_eyes = true").unwrap();
        raw.validate(&mut p);
        assert_eq!(p[0].key, "approval.four_eyes");
        let mut p = Vec::new();
        let raw: RawApproval = toml::from_str("required = true\nmax_age_hours = 0").unwrap();
        raw.validate(&mut p);
        assert_eq!(p[0].key, "approval.max_age_hours");
        assert!(toml::from_str::<RawApproval>("requierd = true").is_err());
    }

    #[test]
    fn figures_per_bank_channel_and_largest() {
        let f = figures(
            &[
                row(2, Some("GCash"), 100),
                row(3, Some("GCash"), 300),
                row(4, None, 200),
            ],
            &Spending {
                max_row_amount: Some(Centavos::new(150)),
                ..Spending::default()
            },
        );
        assert_eq!((f.rows, f.total), (3, Centavos::new(600)));
        assert_eq!(f.largest.as_ref().map(|l| l.line), Some(3));
        assert_eq!(f.per_bank["GCash"], (2, Centavos::new(400)));
        assert_eq!(f.per_bank[STARPAY_ACCOUNT], (1, Centavos::new(200)));
        assert_eq!(f.per_channel["instapay"], (2, Centavos::new(400)));
        assert_eq!(f.rows_above_row_cap, 2);
        assert!(f.to_text().contains("largest row: PHP 3.00 (line 3"));
    }

    #[test]
    fn each_cap_is_a_breach_and_equal_is_allowed() {
        let f = figures(
            &[row(2, Some("GCash"), 100), row(3, Some("BDO"), 300)],
            &Spending::default(),
        );
        let cases: [(&str, Option<&str>); 9] = [
            ("max_total = \"4.00\"", None),
            ("max_total = \"3.99\"", Some("max_total")),
            ("max_rows = 2", None),
            ("max_rows = 1", Some("max_rows")),
            ("max_row_amount = \"3\"", None),
            ("max_row_amount = \"2.99\"", Some("max_row_amount")),
            ("[per_bank]\nBDO = \"3\"", None),
            ("[per_bank]\nBDO = \"2.99\"", Some("per_bank.BDO")),
            ("[per_bank]\nUnionBank = \"0.01\"", None),
        ];
        for (text, want) in cases {
            let b = breaches(&f, &spending(text).unwrap());
            assert_eq!(b.first().map(|b| b.limit.as_str()), want, "{text}");
            assert!(b.len() <= 1, "{text}: {b:?}");
        }
    }

    #[test]
    fn run_refusals_table() {
        let f = figures(&[row(2, Some("GCash"), 600)], &Spending::default());
        let sha = f.sha256.clone();
        let none = Spending::default();
        let now = 100 * HOUR;
        let check = |settings: &ApprovalSettings, log: &[ApprovalEntry], spending: &Spending| {
            check_run(settings, spending, log, "in.csv", &f, now).map(|c| c.overridden.len())
        };
        // Not required: no approval needed.
        assert_eq!(check(&ApprovalSettings::default(), &[], &none), Ok(0));
        // Required, none.
        assert!(matches!(
            check(&required(false), &[], &none),
            Err(Refusal::Unapproved { .. })
        ));
        // Approved: runs.
        let ok = [approved(1, "ana", now - HOUR, Some("ben"))];
        assert_eq!(check(&required(true), &ok, &none), Ok(0));
        // An approval made after `now` does not count.
        let later = [approved(1, "ana", now + 1, Some("ben"))];
        assert!(check(&required(false), &later, &none).is_err());
        // Changed: the same input path was approved with other bytes.
        let other = [ApprovalEntry {
            prepared_by: Some("ben".into()),
            ..entry(
                1,
                ApprovalAction::Approved,
                "ana",
                now - HOUR,
                &"bb".repeat(32),
            )
        }];
        assert!(matches!(
            check(&required(false), &other, &none),
            Err(Refusal::Changed { .. })
        ));
        // Stale: 25 h old under 24 h.
        let old = [approved(1, "ana", now - 25 * HOUR, Some("ben"))];
        assert!(matches!(
            check(&required(false), &old, &none),
            Err(Refusal::Stale { age_hours: 25, .. })
        ));
        // Four eyes: same person (case and spaces ignored), or no preparer.
        let own = [approved(1, "Ana ", now - HOUR, Some("ana"))];
        assert!(matches!(
            check(&required(true), &own, &none),
            Err(Refusal::SelfApproved { .. })
        ));
        assert_eq!(check(&required(false), &own, &none), Ok(0));
        let nobody = [approved(1, "ana", now - HOUR, None)];
        assert_eq!(
            check(&required(true), &nobody, &none),
            Err(Refusal::NoPreparer)
        );
        // Revoked: refused, and a later approval counts again.
        let mut log = vec![
            approved(1, "ana", now - 2 * HOUR, Some("ben")),
            ApprovalEntry {
                revokes: Some(1),
                ..entry(2, ApprovalAction::Revoked, "ana", now - HOUR, &sha)
            },
        ];
        assert!(matches!(
            check(&required(false), &log, &none),
            Err(Refusal::Revoked { .. })
        ));
        log.push(approved(3, "carl", now - 1, Some("ben")));
        assert_eq!(check(&required(true), &log, &none), Ok(0));
        // Caps: refused without an approval that records the cap, also when not required.
        let cap = spending("max_total = \"5\"").unwrap();
        assert!(matches!(
            check(&ApprovalSettings::default(), &[], &cap),
            Err(Refusal::OverLimits(b)) if b[0].limit == "max_total"
        ));
        assert!(matches!(
            check(&required(false), &ok, &cap),
            Err(Refusal::OverLimits(_))
        ));
        let covering = [ApprovalEntry {
            prepared_by: Some("ben".into()),
            overrides: vec!["max_total".into()],
            ..entry(1, ApprovalAction::Approved, "ana", now - HOUR, &sha)
        }];
        assert_eq!(check(&ApprovalSettings::default(), &covering, &cap), Ok(1));
        // A cover for another cap does not lift this one.
        let rows_cap = spending("max_total = \"5\"\nmax_rows = 5").unwrap();
        assert_eq!(check(&required(false), &covering, &rows_cap), Ok(1));
        let bank_cap = spending("[per_bank]\nGCash = \"1\"").unwrap();
        assert!(check(&required(false), &covering, &bank_cap).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(check_name("--by", "  Ana Reyes "), Ok("Ana Reyes".into()));
        assert!(check_name("--by", " ").is_err());
        assert!(check_name("--by", "a\u{7}").is_err());
        assert!(check_name("--by", &"x".repeat(65)).is_err());
        assert!(same_person("ANA", " ana"));
        assert!(four_eyes_problem(Some("ben"), "ana").is_none());
    }
}
