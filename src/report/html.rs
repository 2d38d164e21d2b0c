//! The HTML summary a person reads (issue 13): `<stem>-summary.html` beside a run's CSV report,
//! written by the same report writer under the same report lock, through a temporary file
//! renamed into place.
//!
//! One self-contained page: the run's details (who prepared and approved the file), the totals
//! per state (or reconciliation category) with a small inline SVG chart, totals per bank and
//! per channel, the balance before and after, and the rows that need action with masked
//! account numbers. Rendered with `maud`, which escapes every interpolated value (a
//! beneficiary name is input); nothing else is written raw except the page's own constant CSS.
//! Must not: refer to anything outside the page (no URL, script, font or image), compute row
//! states (they are the store's, read through [`ReportState`]), or show a full account number.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::FixedOffset;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{
    beneficiary, message_of, ts_secs, wait, with_thousands, ReconSummary, ReportError, ReportState,
    RunEnd, Summary,
};
use crate::domain::{Centavos, ReconCategory};
use crate::exit::Outcome;
use crate::logging::mask_account;
use crate::store::{RowRecord, RunRecord, Store};

/// Rows listed under "needs action" at most; the CSV report has them all.
pub const MAX_ACTION_ROWS: usize = 1_000;

/// Width in pixels of the longest bar of the chart.
const BAR_MAX: u64 = 240;

const CSS: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color: #1d2330; margin: 24px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #d7dbe3; padding-bottom: 4px; }
.sub { color: #5a6273; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e9ef; text-align: left; vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 700; border-top: 2px solid #1d2330; }
dl.details { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0; }
dl.details dt { color: #5a6273; }
dl.details dd { margin: 0; word-break: break-all; }
.cols { display: flex; flex-wrap: wrap; gap: 32px; }
.state { display: inline-block; padding: 1px 6px; border-radius: 3px; color: #fff; font-size: 12px; font-weight: 600; }
.outcome { font-weight: 700; }
.note { color: #5a6273; font-size: 13px; }
svg text { font-size: 12px; fill: #1d2330; }
@page { size: A4; margin: 14mm; }
@media print {
  body { margin: 0; font-size: 10pt; max-width: none; }
  h2 { break-after: avoid; }
  tr, svg { break-inside: avoid; }
  th { background: none; }
  .state { color: #000; border: 1px solid #000; background: none !important; }
}
"#;

/// A bar of the chart and a line of the totals table.
struct Line {
    name: String,
    count: i64,
    amount: Centavos,
    color: &'static str,
}

/// A row that needs a person.
struct ActionRow {
    line: i64,
    reference: String,
    name: String,
    account: String,
    amount: String,
    state: String,
    color: &'static str,
    reason: String,
    action: String,
}

/// A line of a per-bank or per-channel table: name, rows, amount, paid (SUCCESS) amount.
type GroupRow = (String, i64, Centavos, Centavos);

/// Everything one page shows, gathered before it is rendered.
#[derive(Default)]
struct Page {
    title: String,
    outcome: String,
    details: Vec<(&'static str, String)>,
    lines_heading: &'static str,
    lines: Vec<Line>,
    /// (heading, rows: name, count, amount, paid amount).
    groups: Vec<(&'static str, Vec<GroupRow>)>,
    balances: Vec<(&'static str, String)>,
    action_rows: Vec<ActionRow>,
    action_more: usize,
    generated: String,
    /// A reconciliation's comparison with the receiver's notifications: the day(s) compared and
    /// (label, rows, amount) lines (the summary CSV's lines after its TOTAL).
    notifications: Option<(String, Vec<CheckLine>)>,
}

/// A line of the notification comparison: label, count, amount.
type CheckLine = (String, i64, Centavos);

pub fn state_color(s: ReportState) -> &'static str {
    match s {
        ReportState::Success => "#1f8a4c",
        ReportState::Failed => "#c0392b",
        ReportState::Reversed => "#d35400",
        ReportState::Pending => "#2f6fb3",
        ReportState::Unknown => "#7d3cb5",
        ReportState::NotSent => "#7f8c8d",
        ReportState::Rejected => "#8e5b3b",
        ReportState::NeedsAttention => "#8b0000",
    }
}

fn category_color(c: ReconCategory) -> &'static str {
    if c == ReconCategory::Matched {
        "#1f8a4c"
    } else if c.is_finding() {
        "#c0392b"
    } else if c.is_open() {
        "#2f6fb3"
    } else {
        "#7f8c8d"
    }
}

/// Rows of a payout run a person must act on: failed, rejected, reversed, needs attention.
fn needs_action(s: ReportState) -> bool {
    matches!(
        s,
        ReportState::Failed
            | ReportState::Rejected
            | ReportState::Reversed
            | ReportState::NeedsAttention
    )
}

/// The outcome in words, with the exit code it gives.
/// (The exit code, not only the rows: a stopped run's code says so.)
fn outcome_text(code: i32) -> String {
    let words = if code == Outcome::AllGood.code() {
        "every row final and good"
    } else if code == Outcome::WithFailures.code() {
        "finished; some rows failed, were rejected, reversed or mismatched"
    } else if code == Outcome::Unresolved.code() {
        "rows still unresolved or the run was interrupted: run the job again later, it resumes"
    } else {
        "could not run to the end"
    };
    format!("{words} (exit code {code})")
}

fn php(a: Centavos) -> String {
    with_thousands(a)
}

/// The whole page as one maud template.
///
/// Longer than ~100 lines on purpose: the markup reads top to bottom as the page does (head
/// and print CSS, run details, totals with the SVG chart, per bank, per channel, balances, rows
/// that need action), and maud escapes every value inside it; splitting it would scatter one
/// document over many functions.
fn render(p: &Page) -> String {
    let shown: Vec<&Line> = p.lines.iter().filter(|l| l.count > 0).collect();
    let max = shown.iter().map(|l| l.count).max().unwrap_or(0).max(1) as u64;
    let bar_h = 24u64;
    let chart_h = (shown.len() as u64 * bar_h).max(bar_h);
    let (total_n, total_a) = p.lines.iter().fold((0i64, Centavos::ZERO), |(n, a), l| {
        (n + l.count, a.checked_add(l.amount).unwrap_or(a))
    });
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (p.title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (p.title) }
                p.sub { "Outcome: " span.outcome { (p.outcome) } " · written " (p.generated) }
                h2 { "Run" }
                dl.details {
                    @for (k, v) in &p.details {
                        dt { (k) }
                        dd { (v) }
                    }
                }
                h2 { "Totals per " (p.lines_heading) }
                div.cols {
                    table #totals {
                        thead { tr { th { (p.lines_heading) } th.n { "rows" } th.n { "amount (PHP)" } } }
                        tbody {
                            @for l in &p.lines {
                                tr data-state=(l.name) {
                                    td { span.state style={ "background:" (l.color) } { (l.name) } }
                                    td.n.count { (l.count) }
                                    td.n.amount { (php(l.amount)) }
                                }
                            }
                            tr.total { td { "TOTAL" } td.n.count { (total_n) } td.n.amount { (php(total_a)) } }
                        }
                    }
                    svg width="600" height=(chart_h) viewBox={ "0 0 600 " (chart_h) } role="img" aria-label={ "rows per " (p.lines_heading) } {
                        @if shown.is_empty() {
                            text x="0" y="16" { "no rows" }
                        }
                        @for (i, l) in shown.iter().enumerate() {
                            @let y = i as u64 * bar_h;
                            @let w = (l.count as u64 * BAR_MAX / max).max(2);
                            text x="0" y=(y + 16) { (l.name) }
                            rect x="150" y=(y + 3) width=(w) height=(bar_h - 6) rx="2" fill=(l.color) {}
                            text x=(156 + w) y=(y + 16) { (l.count) " · PHP " (php(l.amount)) }
                        }
                    }
                }
                @if !p.groups.is_empty() {
                    div.cols {
                        @for (heading, rows) in &p.groups {
                            div {
                                h2 { "Per " (heading) }
                                table {
                                    thead { tr { th { (heading) } th.n { "rows" } th.n { "amount (PHP)" } th.n { "paid (PHP)" } } }
                                    tbody {
                                        @for (name, n, amount, paid) in rows {
                                            tr { td { (name) } td.n { (n) } td.n { (php(*amount)) } td.n { (php(*paid)) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h2 { "Balance" }
                dl.details {
                    @for (k, v) in &p.balances {
                        dt { (k) }
                        dd { (v) }
                    }
                }
                @if let Some((days, lines)) = &p.notifications {
                    h2 { "Notifications received for " (days) " (by trxDate)" }
                    table #notifications {
                        thead { tr { th { "comparison with the file" } th.n { "count" } th.n { "amount (PHP)" } } }
                        tbody {
                            @for (label, n, amount) in lines {
                                tr data-check=(label) { td { (label) } td.n { (n) } td.n { (php(*amount)) } }
                            }
                        }
                    }
                }
                h2 { "Rows that need action (" (p.action_rows.len() + p.action_more) ")" }
                @if p.action_rows.is_empty() {
                    p.note { "None." }
                } @else {
                    table #action {
                        thead { tr {
                            th.n { "line" } th { "reference" } th { "name" } th { "account" }
                            th.n { "amount (PHP)" } th { "state" } th { "reason" } th { "action" }
                        } }
                        tbody {
                            @for r in &p.action_rows {
                                tr {
                                    td.n { (r.line) }
                                    td { (r.reference) }
                                    td.name { (r.name) }
                                    td { (r.account) }
                                    td.n { (r.amount) }
                                    td { span.state style={ "background:" (r.color) } { (r.state) } }
                                    td { (r.reason) }
                                    td { (r.action) }
                                }
                            }
                        }
                    }
                    @if p.action_more > 0 {
                        p.note { "… and " (p.action_more) " more: see the CSV report." }
                    }
                }
                p.note { "Generated by starpay-batch from its database; the CSV report beside this page has every row. Account numbers show their last 4 digits only." }
            }
        }
    };
    page.into_string()
}

/// The run details shared by both kinds of run (the CSV details file says the same).
fn details(
    run: &RunRecord,
    end: &RunEnd,
    code: i32,
    tz: FixedOffset,
    approval: Option<String>,
) -> Vec<(&'static str, String)> {
    let finished_at = run.finished_at.or(end.finishing.then(crate::store::now_ms));
    let mut d: Vec<(&'static str, String)> = super::run_details(run, tz)
        .into_iter()
        .map(|(_, label, value)| (label, value))
        .collect();
    d.extend([
        (
            "finished",
            finished_at
                .map(|t| ts_secs(Some(t), tz))
                .unwrap_or_else(|| "open".into()),
        ),
        ("exit code", code.to_string()),
    ]);
    if let Some(a) = approval {
        d.push(("approval", a));
    }
    d
}

/// What a payout run's page shows of its rows, gathered one row at a time in the same pass
/// that writes the CSV report (so each figure is computed from the same rows as the CSV, and
/// no reader holds the whole run): per bank and channel, the paid total, the rows that need
/// action (the first [`MAX_ACTION_ROWS`], and how many more).
pub(super) struct PayoutTally {
    stale_after_ms: i64,
    now: i64,
    per_bank: BTreeMap<String, (i64, Centavos, Centavos)>,
    per_channel: BTreeMap<String, (i64, Centavos, Centavos)>,
    paid_total: Centavos,
    action_rows: Vec<ActionRow>,
    action_more: usize,
}

impl PayoutTally {
    pub(super) fn new(stale_after_ms: i64, now: i64) -> PayoutTally {
        PayoutTally {
            stale_after_ms,
            now,
            per_bank: BTreeMap::new(),
            per_channel: BTreeMap::new(),
            paid_total: Centavos::ZERO,
            action_rows: Vec::new(),
            action_more: 0,
        }
    }

    /// Counts one row of the run (input order).
    pub(super) fn add(&mut self, r: &RowRecord) {
        let state = ReportState::of(r);
        let paid = if state == ReportState::Success {
            r.amount
        } else {
            Centavos::ZERO
        };
        self.paid_total = self.paid_total.checked_add(paid).unwrap_or(self.paid_total);
        let channel = if r.channel.is_empty() {
            "(invalid)".to_string()
        } else {
            r.channel.clone()
        };
        let bank = r.bank.clone().unwrap_or_else(|| match r.channel.as_str() {
            "starpay" => crate::engine::approval::STARPAY_ACCOUNT.to_string(),
            _ => "(none)".to_string(),
        });
        for (m, k) in [(&mut self.per_bank, bank), (&mut self.per_channel, channel)] {
            let e = m.entry(k).or_insert((0, Centavos::ZERO, Centavos::ZERO));
            e.0 += 1;
            e.1 = e.1.checked_add(r.amount).unwrap_or(e.1);
            e.2 = e.2.checked_add(paid).unwrap_or(e.2);
        }
        if !needs_action(state) {
            return;
        }
        if self.action_rows.len() >= MAX_ACTION_ROWS {
            self.action_more += 1;
            return;
        }
        let code = r.error_code.clone().or_else(|| r.code.clone());
        let message = message_of(r, state, self.stale_after_ms, self.now);
        let reason = match code {
            Some(c) if !message.contains(&c) => format!("{c}: {message}"),
            _ => message,
        };
        self.action_rows.push(ActionRow {
            line: r.line,
            reference: r.reference.clone(),
            name: beneficiary(r),
            account: mask_account(&r.account_no),
            amount: match &r.raw.amount {
                Some(raw) => raw.clone(),
                None => php(r.amount),
            },
            state: state.to_string(),
            color: state_color(state),
            reason,
            action: state.action().to_string(),
        });
    }
}

/// The table of states or categories, each line in its colour.
fn to_lines<K: Copy + std::fmt::Display, N: Copy + TryInto<i64>>(
    rows: &[(K, N, Centavos)],
    color: fn(K) -> &'static str,
) -> Vec<Line> {
    rows.iter()
        .map(|&(k, n, amount)| Line {
            name: k.to_string(),
            count: n.try_into().unwrap_or(i64::MAX),
            amount,
            color: color(k),
        })
        .collect()
}

/// What every page has: the outcome line with the exit code (the command's when it is not the
/// rows'), the run's details and the table of `lines`.
fn head(
    (run, end, tz): (&RunRecord, &RunEnd, FixedOffset),
    outcome: Outcome,
    lines: Vec<Line>,
    approval: Option<String>,
) -> Page {
    let code = end.exit_code.unwrap_or_else(|| outcome.code());
    Page {
        outcome: outcome_text(code),
        details: details(run, end, code, tz, approval),
        lines,
        ..Page::default()
    }
}

/// Writes a payout run's page from its `summary` and `tally` (both from the CSV report's pass
/// over the rows), with the approval and the pre-flight balance from the store.
pub(super) fn write_payout(
    store: &Store,
    path: &Path,
    tz: FixedOffset,
    run: &RunRecord,
    end: &RunEnd,
    summary: &Summary,
    tally: PayoutTally,
) -> Result<(), ReportError> {
    let log = wait(store.approval_log(&run.job))?;
    let approval = crate::engine::approval::describe(&log, &run.input_sha256, run.created_at, tz);
    let balance = wait(store.preflight_balance(run.id))?;
    let lines = to_lines(&summary.rows, state_color);
    let head = head((run, end, tz), summary.outcome(), lines, approval);
    let group = |m: BTreeMap<String, (i64, Centavos, Centavos)>| {
        m.into_iter()
            .map(|(k, (n, a, p))| (k, n, a, p))
            .collect::<Vec<_>>()
    };
    let paid_total = tally.paid_total;
    let balances = match balance {
        Some((b, at)) => vec![
            (
                "before (pre-flight, 5.6)",
                format!("PHP {} at {}", php(b), ts_secs(Some(at), tz)),
            ),
            (
                "after (expected)",
                match b.checked_sub(paid_total) {
                    Some(after) => format!(
                        "PHP {} = before − PHP {} paid (SUCCESS); not queried: `reconcile` checks it with Starpay",
                        php(after),
                        php(paid_total)
                    ),
                    None => "unknown".into(),
                },
            ),
        ],
        None => vec![(
            "before and after",
            "not recorded for this run (older than this version, or a retry)".into(),
        )],
    };
    let page = Page {
        title: format!("{} · payout run {}", run.job, run.id),
        lines_heading: "state",
        groups: vec![
            ("bank", group(tally.per_bank)),
            ("channel", group(tally.per_channel)),
        ],
        balances,
        action_rows: tally.action_rows,
        action_more: tally.action_more,
        generated: ts_secs(Some(tally.now), tz),
        ..head
    };
    write_atomic(path, render(&page).as_bytes())
}

/// Writes a reconciliation run's page (a reconciliation job or a `reconcile` pass), paging
/// through its rows for those that need action.
pub(super) fn write_recon(
    store: &Store,
    path: &Path,
    tz: FixedOffset,
    run: &RunRecord,
    end: &RunEnd,
    summary: &ReconSummary,
) -> Result<(), ReportError> {
    let lines = to_lines(&summary.rows, category_color);
    let head = head((run, end, tz), summary.outcome(), lines, None);
    let mut action_rows = Vec::new();
    let mut action_more = 0;
    let mut after = 0i64;
    loop {
        let page = wait(store.recon_report_page(run.id, after, super::REPORT_PAGE))?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.line;
        for r in &page {
            let open_or_finding = r.category.is_none_or(|c| c.is_finding() || c.is_open());
            if !open_or_finding {
                continue;
            }
            if action_rows.len() >= MAX_ACTION_ROWS {
                action_more += 1;
                continue;
            }
            let category = r
                .category
                .map(|c| c.to_string())
                .unwrap_or_else(|| "UNKNOWN".into());
            let amount = match (r.expected_amount, r.provider_amount) {
                (Some(e), Some(p)) if e != p => format!("{} (Starpay: {})", php(e), php(p)),
                (Some(e), _) => php(e),
                (None, Some(p)) => php(p),
                (None, None) => String::new(),
            };
            action_rows.push(ActionRow {
                line: r.line,
                reference: r
                    .reference
                    .clone()
                    .or_else(|| r.ref_no.clone())
                    .unwrap_or_default(),
                name: String::new(),
                account: String::new(),
                amount,
                color: r.category.map(category_color).unwrap_or("#7f8c8d"),
                state: category,
                reason: r.message.clone().unwrap_or_default(),
                action: r
                    .action
                    .clone()
                    .unwrap_or_else(|| "run the job again".into()),
            });
        }
    }
    let b = |x: Option<Centavos>| {
        x.map(|x| format!("PHP {}", php(x)))
            .unwrap_or_else(|| "unknown".into())
    };
    let what = match run.input_sha256.strip_prefix("reconcile-of-run-") {
        Some(payout_run) => format!("reconcile of payout run {payout_run}"),
        None => format!("{} run", run.kind),
    };
    let page = Page {
        title: format!("{} · {what} {}", run.job, run.id),
        lines_heading: "category",
        groups: Vec::new(),
        balances: vec![
            ("at start", b(summary.balance_start)),
            ("at end", b(summary.balance_end)),
        ],
        action_rows,
        action_more,
        generated: ts_secs(Some(crate::store::now_ms()), tz),
        notifications: summary
            .notifications
            .as_ref()
            .map(|n| (n.days(), n.lines())),
        ..head
    };
    write_atomic(path, render(&page).as_bytes())
}

/// Writes `bytes` to `path` through a temporary file renamed into place (a reader sees the old
/// page or the new one, never half of one).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::ops::write_atomic(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(name: &str) -> Page {
        Page {
            title: "job · payout run 1".into(),
            outcome: "WithFailures".into(),
            details: vec![("job", "job".into())],
            lines_heading: "state",
            lines: vec![
                Line {
                    name: "SUCCESS".into(),
                    count: 3,
                    amount: Centavos::new(30_000),
                    color: "#1f8a4c",
                },
                Line {
                    name: "FAILED".into(),
                    count: 1,
                    amount: Centavos::new(1_000),
                    color: "#c0392b",
                },
            ],
            groups: vec![(
                "bank",
                vec![(name.into(), 1, Centavos::new(1), Centavos::ZERO)],
            )],
            balances: vec![("at start", "PHP 1.00".into())],
            action_rows: vec![ActionRow {
                line: 2,
                reference: "R\"1".into(),
                name: name.into(),
                account: "******1234".into(),
                amount: "10.00".into(),
                state: "FAILED".into(),
                color: "#c0392b",
                reason: "AC01: <b>".into(),
                action: "fix".into(),
            }],
            action_more: 0,
            generated: "now".into(),
            notifications: None,
        }
    }

    #[test]
    fn every_value_is_escaped_and_nothing_is_external() {
        let name = r#"<script>alert("x")</script> O'Neil & Co"#;
        let html = render(&page(name));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(html.contains("&amp; Co"));
        assert!(html.contains("R&quot;1"));
        assert!(html.contains("AC01: &lt;b&gt;"));
        for external in [
            "http:", "https:", "//", "src=", "url(", "@import", "<link", "<img",
        ] {
            // `//` would start a protocol-relative URL; the page has none (not even a comment).
            assert!(!html.contains(external), "{external} in the page");
        }
        assert!(html.contains("<svg"), "the chart is inline SVG");
        assert!(html.contains("@media print"));
    }

    #[test]
    fn bars_are_proportional() {
        let html = render(&page("x"));
        assert!(
            html.contains(r#"width="240""#),
            "the largest count gets the full bar"
        );
        assert!(html.contains(r#"width="80""#), "a third of it: {html}");
    }
}
