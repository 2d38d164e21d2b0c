//! CSV reports: reads rows through the store, computes no row states (they come from the
//! engine; [`ReportState`] only says what a stored state means to a reader). Account numbers
//! are masked to their last 4 digits; no key material ever appears.
//!
//! Each run has three files in `reports_dir`: `<stem>.csv` (one line per input row),
//! `<stem>-summary.csv` (per state or category, and a TOTAL line) and `<stem>-run.csv` (run
//! details, and the balances of a reconciliation), and `<stem>-summary.html` for a person
//! ([`html`], issue 13). Every file is written to a temporary file
//! and renamed into place; a changed file keeps its previous version beside it
//! (`<stem>.<time>.csv`). Every time is ISO 8601 with the job's `[report] timezone` offset.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::FixedOffset;

use crate::domain::{Centavos, ReconCategory, RowState};
use crate::exit::Outcome;
use crate::logging::mask_account;
use crate::store::{RowRecord, RunRecord, Store, StoreError};

pub mod html;
pub mod notified;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write report {path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {0} does not exist in this database")]
    NoRun(i64),
    #[error("a report is written from a blocking thread of the async runtime")]
    NotOnARuntime,
}

pub const PAYOUT_COLUMNS: [&str; 24] = [
    "line",
    "reference",
    "beneficiary",
    "msg_id",
    "order_no",
    "ref_no",
    "channel",
    "bank",
    "account_no",
    "amount",
    "currency",
    "state",
    "action",
    // `yes` when the row was SUCCESS and is now REVERSED (reference §12 rule 11: the money
    // came back after it was paid); empty otherwise.
    "reversed_after_success",
    "trx_state",
    "code",
    "message",
    "error_code",
    "error_message",
    "attempts",
    "repayment_of",
    "first_sent_at",
    "last_sent_at",
    "last_checked_at",
];

/// What a payout report says about a row (issue 8, defect 8). Computed from the stored row
/// only; the engine decides row states, this only says what they mean to a reader.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReportState {
    Success,
    Failed,
    Reversed,
    /// Accepted by Starpay, not final yet (or a FAIL held under the AB0x rule).
    Pending,
    /// Sent, outcome not known yet: resolved by query, never by paying again.
    Unknown,
    /// Nothing of the current attempt has left yet (Ctrl-C, or a crash before the send).
    NotSent,
    /// Never processed: invalid input, a reference paid elsewhere, or a verified rejection.
    Rejected,
    NeedsAttention,
}

impl ReportState {
    /// Report order (summaries, `status`, the terminal table).
    pub const ALL: [ReportState; 8] = [
        ReportState::Success,
        ReportState::Failed,
        ReportState::Reversed,
        ReportState::Pending,
        ReportState::Unknown,
        ReportState::NotSent,
        ReportState::Rejected,
        ReportState::NeedsAttention,
    ];

    pub fn of(row: &RowRecord) -> ReportState {
        ReportState::from_parts(
            row.state,
            row.resent_after_not_found,
            row.attempt.as_ref().is_some_and(|a| a.send_count > 0),
        )
    }

    /// [`ReportState::of`] from the three facts it reads (`attempt_sent`: the current attempt
    /// was sent at least once), for aggregates that do not load rows.
    pub fn from_parts(
        state: RowState,
        resent_after_not_found: bool,
        attempt_sent: bool,
    ) -> ReportState {
        match state {
            RowState::New => ReportState::NotSent,
            // Waiting to resend under the not-found rule: the first send may have landed.
            RowState::Unsent if resent_after_not_found => ReportState::Unknown,
            // The current attempt never left (a retry's new attempt, or Ctrl-C before the send).
            RowState::Unsent if !attempt_sent => ReportState::NotSent,
            // Sent, answered "not processed", to be sent again: unsure until it is.
            RowState::Unsent => ReportState::Unknown,
            RowState::InFlight | RowState::Unknown => ReportState::Unknown,
            RowState::Pending | RowState::FailHeld => ReportState::Pending,
            RowState::Success => ReportState::Success,
            RowState::Failed => ReportState::Failed,
            RowState::Reversed => ReportState::Reversed,
            RowState::Rejected => ReportState::Rejected,
            RowState::NeedsAttention => ReportState::NeedsAttention,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Success => "SUCCESS",
            ReportState::Failed => "FAILED",
            ReportState::Reversed => "REVERSED",
            ReportState::Pending => "PENDING",
            ReportState::Unknown => "UNKNOWN",
            ReportState::NotSent => "NOT_SENT",
            ReportState::Rejected => "REJECTED",
            ReportState::NeedsAttention => "NEEDS_ATTENTION",
        }
    }

    /// Rows the job still has work for: `run` again (exit 3).
    pub fn is_unresolved(self) -> bool {
        matches!(
            self,
            ReportState::Pending
                | ReportState::Unknown
                | ReportState::NotSent
                | ReportState::NeedsAttention
        )
    }

    /// What finance does about a row in this state (the `action` column).
    pub fn action(self) -> &'static str {
        match self {
            ReportState::Success => "none: paid",
            ReportState::Failed => {
                "not paid: see error_code; `retry` re-sends it (beneficiary-data errors need corrected data in a new file)"
            }
            ReportState::Reversed => {
                "money returned to us: confirm with the beneficiary; pay again from a new file if still due"
            }
            ReportState::Pending => "wait: run the job again later, it queries Starpay; do not pay again",
            ReportState::Unknown => {
                "outcome not known yet: run the job again, it queries Starpay; never pay this row by hand"
            }
            ReportState::NotSent => "not sent yet: run the job again, it resumes",
            ReportState::Rejected => {
                "not sent: see message; fix the line and pay it in a new file if still due"
            }
            ReportState::NeedsAttention => {
                "ask Starpay about msg_id before doing anything; do not pay again"
            }
        }
    }
}

impl std::fmt::Display for ReportState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `2026-12-07T02:15:00.123+08:00`: ISO 8601 with the report's offset.
pub fn ts(ms: Option<i64>, tz: FixedOffset) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&tz)
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// [`ts`] to the second (run details: a rewrite from the store gives the same text).
fn ts_secs(ms: Option<i64>, tz: FixedOffset) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&tz)
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// `1234567.89` → `1,234,567.89` (terminal tables; CSV files keep plain `1234567.89`).
pub fn with_thousands(a: Centavos) -> String {
    let plain = a.to_string();
    let (sign, rest) = match plain.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", plain.as_str()),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// One table for the terminal and `status`: a header, one line per category in a fixed
/// order, a TOTAL line; counts and amounts right-aligned under their headings.
pub fn table_text(first: &str, rows: &[(String, i64, Centavos)]) -> String {
    let width = rows
        .iter()
        .map(|r| r.0.len())
        .chain([first.len(), "TOTAL".len()])
        .max()
        .unwrap_or(5)
        + 2;
    let mut s = format!("{first:<width$}{:>8}{:>20}\n", "rows", "amount (PHP)");
    let mut n = 0i64;
    let mut total = Centavos::ZERO;
    for (c, count, amount) in rows {
        s.push_str(&format!(
            "{c:<width$}{count:>8}{:>20}\n",
            with_thousands(*amount)
        ));
        n += count;
        total = total.checked_add(*amount).unwrap_or(total);
    }
    s.push_str(&format!(
        "{:<width$}{n:>8}{:>20}\n",
        "TOTAL",
        with_thousands(total)
    ));
    s
}

/// Count and total per report state, every state in [`ReportState::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rows: Vec<(ReportState, u64, Centavos)>,
}

impl Default for Summary {
    /// Every report state, with no rows.
    fn default() -> Summary {
        Summary {
            rows: ReportState::ALL
                .iter()
                .map(|s| (*s, 0, Centavos::ZERO))
                .collect(),
        }
    }
}

impl Summary {
    pub fn from_rows(rows: &[RowRecord]) -> Summary {
        let mut out = Summary::default();
        for r in rows {
            out.add(r);
        }
        out
    }

    /// Counts one more row.
    pub fn add(&mut self, r: &RowRecord) {
        let state = ReportState::of(r);
        if let Some(e) = self.rows.iter_mut().find(|e| e.0 == state) {
            e.1 += 1;
            e.2 = e.2.checked_add(r.amount).unwrap_or(e.2);
        }
    }

    /// The same table from the store's aggregates (no rows loaded).
    pub fn from_counts(counts: &crate::store::PayoutCounts) -> Summary {
        let mut out: Vec<(ReportState, u64, Centavos)> = ReportState::ALL
            .iter()
            .map(|s| (*s, 0, Centavos::ZERO))
            .collect();
        for g in &counts.groups {
            let state = ReportState::from_parts(g.state, g.resent_after_not_found, g.attempt_sent);
            if let Some(e) = out.iter_mut().find(|e| e.0 == state) {
                e.1 += g.rows.max(0) as u64;
                e.2 = e.2.checked_add(g.amount).unwrap_or(e.2);
            }
        }
        Summary { rows: out }
    }

    pub fn count(&self, state: ReportState) -> u64 {
        self.rows.iter().find(|e| e.0 == state).map_or(0, |e| e.1)
    }

    /// Unresolved: rows remain to resolve (PENDING, UNKNOWN, NOT_SENT — run again, it resumes
    /// — or NEEDS_ATTENTION); with failures: FAILED/REVERSED/REJECTED; all good: all SUCCESS.
    pub fn outcome(&self) -> Outcome {
        if self.rows.iter().any(|e| e.0.is_unresolved() && e.1 > 0) {
            Outcome::Unresolved
        } else if [
            ReportState::Failed,
            ReportState::Reversed,
            ReportState::Rejected,
        ]
        .iter()
        .any(|s| self.count(*s) > 0)
        {
            Outcome::WithFailures
        } else {
            Outcome::AllGood
        }
    }

    /// The exit code of `outcome()`.
    pub fn exit_code(&self) -> i32 {
        self.outcome().code()
    }

    pub fn to_text(&self) -> String {
        let rows: Vec<(String, i64, Centavos)> = self
            .rows
            .iter()
            .map(|(s, n, a)| (s.to_string(), *n as i64, *a))
            .collect();
        table_text("state", &rows)
    }
}

/// Extra text for a row's message column (reference §12 rule 4: STALE_PENDING).
fn message_of(r: &RowRecord, state: ReportState, stale_after_ms: i64, now_ms: i64) -> String {
    // A FAILED row's message is the failure, not the transport's "success" of the call.
    let base = match state {
        ReportState::Failed => r.error_message.clone().or_else(|| r.message.clone()),
        _ => r.message.clone(),
    }
    .unwrap_or_default();
    let stale = r.state == RowState::Pending
        && r.first_sent_at
            .is_some_and(|t| now_ms - t >= stale_after_ms);
    if stale {
        format!("STALE_PENDING: {base}")
    } else {
        base
    }
}

fn beneficiary(r: &RowRecord) -> String {
    [&r.account_name, &r.middle_name, &r.last_name]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

// ------------------------------------------------------------------ files

/// The three files of one run's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// One line per input row, input order.
    pub report: PathBuf,
    /// Count and amount per state/category, and a TOTAL line.
    pub summary: PathBuf,
    /// Run details: job, run id, input file and SHA-256, started, finished, exit code, balances.
    pub details: PathBuf,
    /// The page a person reads (issue 13): `<stem>-summary.html` ([`html`]).
    pub html: PathBuf,
}

/// The file name stem of a run's report: `<job>-<run>` for payout runs and reconciliation
/// jobs; `<job>-reconcile-<payout run>-<pass run>` for a `reconcile` pass over a payout run, so
/// nobody mistakes it for a second payout run.
pub fn report_stem(run: &RunRecord) -> String {
    match run.input_sha256.strip_prefix("reconcile-of-run-") {
        Some(payout_run) if run.kind == crate::domain::RunKind::Reconcile => {
            format!("{}-reconcile-{payout_run}-{}", run.job, run.id)
        }
        _ => format!("{}-{}", run.job, run.id),
    }
}

pub fn paths(dir: &Path, stem: &str) -> ReportPaths {
    ReportPaths {
        report: dir.join(format!("{stem}.csv")),
        summary: dir.join(format!("{stem}-summary.csv")),
        details: dir.join(format!("{stem}-run.csv")),
        html: dir.join(format!("{stem}-summary.html")),
    }
}

/// Serialises the writers of one run's report (the job itself, `retry`, `reconcile`, `report`)
/// so a snapshot read earlier never replaces one read later. Held only while one report is
/// read and written; released when dropped (or when the process dies).
fn lock_reports(dir: &Path, stem: &str) -> Result<fs::File, ReportError> {
    fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(format!(".{stem}.lock"));
    let io = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// Writes `path` through a temporary file renamed into place (a reader or a crash sees the old
/// file or the new one, never half of one). When the file already exists with other content,
/// the previous version is kept beside it first as `<name>.<its time>.csv` (a hard link, so
/// there is no moment without a report); identical content is left alone.
/// A summary table: the header, one line per state or category, then the TOTAL line.
fn write_counts(
    w: &mut csv::Writer<fs::File>,
    header: [&str; 3],
    rows: impl Iterator<Item = (String, i64, Centavos)>,
) -> Result<(), csv::Error> {
    w.write_record(header)?;
    let (mut n, mut total) = (0i64, Centavos::ZERO);
    for (label, count, amount) in rows {
        w.write_record([label, count.to_string(), amount.to_string()])?;
        n += count;
        total = total.checked_add(amount).unwrap_or(total);
    }
    w.write_record(["TOTAL".to_string(), n.to_string(), total.to_string()])
}

fn write_file(
    path: &Path,
    tz: FixedOffset,
    f: impl FnOnce(&mut csv::Writer<fs::File>) -> Result<(), csv::Error>,
) -> Result<(), ReportError> {
    let tmp = crate::ops::temp_beside(path);
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let written = (|| {
        let file = fs::File::create(&tmp).map_err(io)?;
        let mut w = csv::Writer::from_writer(file);
        f(&mut w).map_err(|source| ReportError::Csv {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file = w.into_inner().map_err(|e| ReportError::Io {
            path: path.to_path_buf(),
            source: e.into_error(),
        })?;
        file.flush().and_then(|()| file.sync_all()).map_err(io)?;
        if let Ok(old) = fs::read(path) {
            if fs::read(&tmp).map_err(io)? == old {
                fs::remove_file(&tmp).map_err(io)?;
                return Ok(());
            }
            keep_previous(path, tz)?;
        }
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            // Make the rename durable before the caller marks the run finished.
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Links the current `path` to `<stem>.<time it was written>.csv` (`job-1.20261207T021500+0800.csv`;
/// `-2`, `-3`… when that name is taken).
fn keep_previous(path: &Path, tz: FixedOffset) -> Result<PathBuf, ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let written: chrono::DateTime<chrono::Utc> = fs::metadata(path)
        .and_then(|m| m.modified())
        .map(Into::into)
        .unwrap_or_else(|_| chrono::Utc::now());
    let stamp = written.with_timezone(&tz).format("%Y%m%dT%H%M%S%z");
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 1..10_000 {
        let name = if n == 1 {
            format!("{stem}.{stamp}.csv")
        } else {
            format!("{stem}.{stamp}-{n}.csv")
        };
        let backup = path.with_file_name(name);
        if backup.exists() {
            continue;
        }
        match fs::hard_link(path, &backup) {
            Ok(()) => return Ok(backup),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                fs::copy(path, &backup).map_err(io)?;
                return Ok(backup);
            }
        }
    }
    Err(io(std::io::Error::other(
        "too many earlier versions of this report with the same time",
    )))
}

/// The details of a run that the CSV details file and the page both show, in order: (CSV
/// field, page label, value).
pub(crate) fn run_details(
    run: &RunRecord,
    tz: FixedOffset,
) -> [(&'static str, &'static str, String); 6] {
    [
        ("job", "job", run.job.clone()),
        ("run_id", "run", run.id.to_string()),
        ("kind", "kind", run.kind.to_string()),
        ("input_file", "input file", run.input_path.clone()),
        ("input_sha256", "input SHA-256", run.input_sha256.clone()),
        ("started", "started", ts_secs(Some(run.created_at), tz)),
    ]
}

/// `outcome`: what the rows give; the run's `end` may override its exit code (stopped, drive
/// error) and says whether the run is being finished now.
fn details_file(
    path: &Path,
    tz: FixedOffset,
    run: &RunRecord,
    end: &RunEnd,
    outcome: Outcome,
    extra: &[(&str, String)],
) -> Result<(), ReportError> {
    let finished_at = run.finished_at.or(end.finishing.then(crate::store::now_ms));
    let exit_code = end.exit_code.unwrap_or_else(|| outcome.code());
    write_file(path, tz, |w| {
        w.write_record(["field", "value"])?;
        let mut fields: Vec<(&str, String)> = run_details(run, tz)
            .into_iter()
            .map(|(field, _, value)| (field, value))
            .collect();
        fields.extend([
            ("finished", ts_secs(finished_at, tz)),
            (
                "status",
                if finished_at.is_some() {
                    "FINISHED"
                } else {
                    "OPEN"
                }
                .to_string(),
            ),
            ("exit_code", exit_code.to_string()),
        ]);
        fields.extend(extra.iter().cloned());
        for (k, v) in fields {
            w.write_record([k, v.as_str()])?;
        }
        Ok(())
    })
}

/// When the run is (or is about to be) finished, and which exit code the report states.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunEnd {
    /// The caller marks the run finished right after the report is in place: the details give
    /// the time of that moment (to the second; the store keeps the exact one).
    pub finishing: bool,
    /// The command's exit code when it is not the one the rows give (stopped, drive error).
    pub exit_code: Option<i32>,
}

/// A flag column: `yes` or empty.
fn yes_or_empty(flag: bool) -> String {
    if flag { "yes" } else { "" }.to_string()
}

/// Writes a payout run's report, summary and details from the store (input order, one line per
/// row). Blocking: call from a blocking thread.
pub fn write_payout_run(
    store: &Store,
    dir: &Path,
    tz: FixedOffset,
    stale_after_ms: i64,
    run_id: i64,
    end: RunEnd,
) -> Result<(ReportPaths, Summary), ReportError> {
    let (run, p, _lock) = open_report(store, dir, run_id)?;
    let now = crate::store::now_ms();
    // One pass over the rows, page by page from the store (memory stays flat): the CSV line,
    // the summary and the HTML page's figures all come from the same rows.
    let mut summary = Summary::default();
    let mut tally = html::PayoutTally::new(stale_after_ms, now);
    write_paged(
        &p.report,
        tz,
        &PAYOUT_COLUMNS,
        |after| wait(store.rows_page(run_id, false, after, REPORT_PAGE)),
        |r: &RowRecord| r.line,
        |w, r| {
            summary.add(r);
            tally.add(r);
            w.write_record(payout_record(r, tz, stale_after_ms, now))
        },
        |_| Ok(()),
    )?;
    write_file(&p.summary, tz, |w| {
        write_counts(
            w,
            ["state", "count", "total"],
            summary
                .rows
                .iter()
                .map(|(s, n, a)| (s.to_string(), *n as i64, *a)),
        )
    })?;
    details_file(&p.details, tz, &run, &end, summary.outcome(), &[])?;
    html::write_payout(store, &p.html, tz, &run, &end, &summary, tally)?;
    Ok((p, summary))
}

/// One payout row's line of the CSV report (`PAYOUT_COLUMNS`).
fn payout_record(
    r: &RowRecord,
    tz: FixedOffset,
    stale_after_ms: i64,
    now: i64,
) -> [String; PAYOUT_COLUMNS.len()] {
    let state = ReportState::of(r);
    let msg_id = r
        .attempt
        .as_ref()
        .map(|a| a.msg_id.clone())
        .unwrap_or_default();
    let amount = match &r.raw.amount {
        Some(raw) => raw.clone(),
        None => r.amount.to_string(),
    };
    let channel = r.raw.channel.clone().unwrap_or_else(|| r.channel.clone());
    // Valid rows are PHP; a rejected line shows what it said.
    let currency = r.raw.currency.clone().unwrap_or_else(|| "PHP".to_string());
    let code = match state {
        ReportState::Failed => r.error_code.clone().or_else(|| r.code.clone()),
        _ => r.code.clone(),
    };
    [
        r.line.to_string(),
        r.reference.clone(),
        beneficiary(r),
        msg_id,
        r.order_no.clone().unwrap_or_default(),
        r.ref_no.clone().unwrap_or_default(),
        channel,
        r.bank.clone().unwrap_or_default(),
        mask_account(&r.account_no),
        amount,
        currency,
        state.to_string(),
        state.action().to_string(),
        yes_or_empty(r.reversed_after_success),
        r.trx_state.clone().unwrap_or_default(),
        code.unwrap_or_default(),
        message_of(r, state, stale_after_ms, now),
        r.error_code.clone().unwrap_or_default(),
        r.error_message.clone().unwrap_or_default(),
        r.sends.to_string(),
        r.repay_of.clone().unwrap_or_default(),
        ts(r.first_sent_at, tz),
        ts(r.last_sent_at, tz),
        ts(r.last_checked_at, tz),
    ]
}

/// The run, its report's paths, and the lock on that report (held while it is read and
/// written, so two writers never replace a newer report with an older snapshot).
fn open_report(
    store: &Store,
    dir: &Path,
    run_id: i64,
) -> Result<(RunRecord, ReportPaths, fs::File), ReportError> {
    let run = wait(store.run_by_id(run_id))?.ok_or(ReportError::NoRun(run_id))?;
    let stem = report_stem(&run);
    let lock = lock_reports(dir, &stem)?;
    Ok((run, paths(dir, &stem), lock))
}

/// Waits for a store operation from the blocking thread a report is written on.
fn wait<T>(op: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, ReportError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| ReportError::NotOnARuntime)?;
    Ok(handle.block_on(op)?)
}

/// Report rows read from the store per page (memory stays flat).
const REPORT_PAGE: i64 = 5_000;

/// Writes a CSV file (`header`, then one call of `each` per row) page by page from the store,
/// in input order, so memory stays flat whatever the run's size: `page(after)` reads the rows
/// after line `after`, `line` says a row's line. A store error ends the file (it is not put in
/// place) and is returned as itself.
fn write_paged<T>(
    path: &Path,
    tz: FixedOffset,
    header: &[&str],
    mut page: impl FnMut(i64) -> Result<Vec<T>, ReportError>,
    line: impl Fn(&T) -> i64,
    mut each: impl FnMut(&mut csv::Writer<fs::File>, &T) -> Result<(), csv::Error>,
    tail: impl FnOnce(&mut csv::Writer<fs::File>) -> Result<(), csv::Error>,
) -> Result<(), ReportError> {
    let mut store_error = None;
    write_file(path, tz, |w| {
        w.write_record(header)?;
        let mut after = 0i64;
        loop {
            let rows = match page(after) {
                Ok(rows) => rows,
                Err(e) => {
                    let text = e.to_string();
                    store_error = Some(e);
                    return Err(csv::Error::from(std::io::Error::other(text)));
                }
            };
            let Some(last) = rows.last() else {
                return tail(w);
            };
            after = line(last);
            for r in &rows {
                each(w, r)?;
            }
        }
    })
    .map_err(|e| store_error.take().unwrap_or(e))
}

// ------------------------------------------------------------------ reconciliation

pub const RECON_COLUMNS: [&str; 19] = [
    "line",
    "reference",
    "ref_no",
    "original_msg_id",
    "order_no",
    "expected_amount",
    "provider_amount",
    "difference",
    "expected_state",
    "trx_state",
    "category",
    "code",
    "message",
    "error_code",
    "error_message",
    "trx_date",
    "checked_at",
    "action",
    // NOTIFIED / IN_FILE_NEVER_NOTIFIED / empty (`notified`): what the receiver saw.
    "notification",
];

/// Count and amount per category, and the balance at the start and end of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconSummary {
    /// Every category of [`ReconCategory::ALL`] in that order (zero rows too).
    pub rows: Vec<(ReconCategory, i64, Centavos)>,
    pub balance_start: Option<Centavos>,
    pub balance_end: Option<Centavos>,
    /// The comparison with the receiver's notifications (set when the report is written).
    pub notifications: Option<notified::NotificationCheck>,
}

impl ReconSummary {
    /// Puts `rows` (category, count, amount) in the fixed category order.
    pub fn from_counts(
        counts: Vec<(ReconCategory, i64, Centavos)>,
        balance_start: Option<Centavos>,
        balance_end: Option<Centavos>,
    ) -> ReconSummary {
        let mut rows: Vec<(ReconCategory, i64, Centavos)> = ReconCategory::ALL
            .iter()
            .map(|c| (*c, 0, Centavos::ZERO))
            .collect();
        for (c, n, a) in counts {
            if let Some(r) = rows.iter_mut().find(|r| r.0 == c) {
                r.1 += n;
                r.2 = r.2.checked_add(a).unwrap_or(r.2);
            }
        }
        ReconSummary {
            rows,
            balance_start,
            balance_end,
            notifications: None,
        }
    }

    pub fn count(&self, category: ReconCategory) -> i64 {
        self.rows
            .iter()
            .filter(|r| r.0 == category)
            .map(|r| r.1)
            .sum()
    }

    /// Issue 5: all good when all MATCHED; unresolved while pending, held or unknown rows
    /// remain; with failures for mismatches, not-found, a payment recorded as unpaid
    /// (`PAID_BUT_RECORDED_UNPAID`) or claimed twice (`DUPLICATE_MATCH`).
    /// A repayment notified to the receiver that no line of the file names is a finding too.
    pub fn outcome(&self) -> Outcome {
        let notified_not_in_file = self
            .notifications
            .as_ref()
            .is_some_and(|n| n.notified_not_in_file.0 > 0);
        if self.rows.iter().any(|r| r.0.is_open() && r.1 > 0) {
            Outcome::Unresolved
        } else if notified_not_in_file || self.rows.iter().any(|r| r.0.is_finding() && r.1 > 0) {
            Outcome::WithFailures
        } else {
            Outcome::AllGood
        }
    }

    /// The exit code of `outcome()`.
    pub fn exit_code(&self) -> i32 {
        self.outcome().code()
    }

    /// What the operator must hear about beyond the table: payments recorded as unpaid and
    /// payments claimed twice.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let paid = self.count(ReconCategory::PaidButRecordedUnpaid);
        if paid > 0 {
            out.push(format!(
                "WARNING: {paid} row(s) PAID_BUT_RECORDED_UNPAID: Starpay paid rows our store held as unpaid; their references are blocked again; do not pay them again and check whether they were paid a second time elsewhere (see the report)"
            ));
        }
        let claimed = self.count(ReconCategory::DuplicateMatch);
        if claimed > 0 {
            out.push(format!(
                "WARNING: {claimed} row(s) DUPLICATE_MATCH: a Starpay payment is claimed by more than one line (see the report)"
            ));
        }
        if let Some(n) = &self.notifications {
            if n.notified_not_in_file.0 > 0 {
                out.push(format!(
                    "WARNING: {} repayment(s) of PHP {} NOTIFIED_NOT_IN_FILE: Starpay notified payments of {} that no line of the file names (see the report)",
                    n.notified_not_in_file.0,
                    with_thousands(n.notified_not_in_file.1),
                    n.days()
                ));
            }
            if n.unmatched.0 > 0 {
                out.push(format!(
                    "WARNING: {} UNMATCHED_NOTIFICATION(s) of {}: notifications about msgIds this database never issued (see the report)",
                    n.unmatched.0,
                    n.days()
                ));
            }
        }
        out
    }

    /// The category table, then the balances on their own lines.
    pub fn to_text(&self) -> String {
        let rows: Vec<(String, i64, Centavos)> = self
            .rows
            .iter()
            .map(|(c, n, a)| (c.to_string(), *n, *a))
            .collect();
        let mut s = table_text("category", &rows);
        let fmt = |b: Option<Centavos>| b.map(with_thousands).unwrap_or_else(|| "unknown".into());
        s.push('\n');
        s.push_str(&format!(
            "balance at start: PHP {:>20}\n",
            fmt(self.balance_start)
        ));
        s.push_str(&format!(
            "balance at end:   PHP {:>20}\n",
            fmt(self.balance_end)
        ));
        if let Some(n) = &self.notifications {
            s.push_str(&format!(
                "\nnotifications received for {} (by trxDate, {}):\n",
                n.days(),
                if n.repayments {
                    "repayment records and unmatched"
                } else {
                    "unmatched"
                }
            ));
            for (label, count, amount) in n.lines() {
                s.push_str(&format!(
                    "  {label:<24} {count:>8}  PHP {:>20}\n",
                    with_thousands(amount)
                ));
            }
        }
        s
    }
}

/// One report line of a reconciliation row.
fn recon_record(
    r: &crate::store::recon::ReconRecord,
    tz: FixedOffset,
    notification: String,
) -> [String; 19] {
    let money = |a: Option<Centavos>| a.map(|a| a.to_string()).unwrap_or_default();
    let difference = match (r.provider_amount, r.expected_amount) {
        (Some(p), Some(e)) => p.checked_sub(e).map(|d| d.to_string()).unwrap_or_default(),
        _ => String::new(),
    };
    let (category, message) = match &r.category {
        Some(c) => (c.to_string(), r.message.clone().unwrap_or_default()),
        None => (
            "UNKNOWN".to_string(),
            "not checked yet: run the job again".to_string(),
        ),
    };
    [
        r.line.to_string(),
        r.reference.clone().unwrap_or_default(),
        r.ref_no.clone().unwrap_or_default(),
        r.original_msg_id.clone().unwrap_or_default(),
        r.order_no.clone().unwrap_or_default(),
        money(r.expected_amount),
        money(r.provider_amount),
        difference,
        r.expected_state.clone().unwrap_or_default(),
        r.trx_state.clone().unwrap_or_default(),
        category,
        r.code.clone().unwrap_or_default(),
        message,
        r.error_code.clone().unwrap_or_default(),
        r.error_message.clone().unwrap_or_default(),
        r.trx_date.clone().unwrap_or_default(),
        ts(r.checked_at, tz),
        r.action
            .clone()
            .unwrap_or_else(|| "run the job again".into()),
        notification,
    ]
}

/// Writes a reconciliation run's report (streamed from the store in input order), summary and
/// details. Blocking: call from a blocking thread.
pub fn write_recon_run(
    store: &Store,
    dir: &Path,
    tz: FixedOffset,
    run_id: i64,
    end: RunEnd,
) -> Result<(ReportPaths, ReconSummary), ReportError> {
    let (run, p, _lock) = open_report(store, dir, run_id)?;
    // The receiver's notifications of the run's day (`notified` module doc).
    let (first_trx, last_trx) = wait(store.recon_trx_dates(run_id))?;
    let window = notified::Window::of_run(
        run.created_at,
        first_trx.as_deref(),
        last_trx.as_deref(),
        tz,
    );
    let notifications = wait(store.notifications_not_about_payouts(window.read_since_ms()))?;
    // Used by each line and then by the tail: shared between the two closures.
    let matcher =
        std::cell::RefCell::new(Some(notified::Matcher::new(&run, window, notifications)));
    let mut check = None;
    write_paged(
        &p.report,
        tz,
        &RECON_COLUMNS,
        |after| wait(store.recon_report_page(run_id, after, REPORT_PAGE)),
        |r| r.line,
        |w, r| {
            let column = matcher
                .borrow_mut()
                .as_mut()
                .map(|m| m.line(r))
                .unwrap_or_default();
            w.write_record(recon_record(r, tz, column))
        },
        |w| {
            let taken = matcher.borrow_mut().take();
            if let Some(m) = taken {
                let (lines, c) = m.finish(tz, RECON_COLUMNS.len());
                check = Some(c);
                for line in lines {
                    w.write_record(line)?;
                }
            }
            Ok(())
        },
    )?;
    let totals = wait(store.recon_totals(run_id))?;
    let mut summary =
        ReconSummary::from_counts(totals.counts, totals.balance_start, totals.balance_end);
    summary.notifications = check;
    write_file(&p.summary, tz, |w| {
        write_counts(
            w,
            ["category", "count", "amount"],
            summary.rows.iter().map(|(c, n, a)| (c.to_string(), *n, *a)),
        )?;
        // The comparison with the receiver's notifications, after the category table and
        // outside its TOTAL (these lines count notifications, not lines of the file).
        for (label, n, a) in summary
            .notifications
            .iter()
            .flat_map(notified::NotificationCheck::lines)
        {
            w.write_record([label, n.to_string(), a.to_string()])?;
        }
        Ok(())
    })?;
    let b = |x: Option<Centavos>| x.map(|x| x.to_string()).unwrap_or_default();
    let mut extra = vec![
        ("balance_start", b(summary.balance_start)),
        ("balance_end", b(summary.balance_end)),
    ];
    if let Some(payout_run) = run.input_sha256.strip_prefix("reconcile-of-run-") {
        extra.insert(0, ("payout_run", payout_run.to_string()));
    }
    details_file(&p.details, tz, &run, &end, summary.outcome(), &extra)?;
    html::write_recon(store, &p.html, tz, &run, &end, &summary)?;
    Ok((p, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptRecord, RawFields};

    fn row(state: RowState, sends: Option<i64>, resent_after_not_found: bool) -> RowRecord {
        RowRecord {
            id: 1,
            run_id: 1,
            line: 2,
            reference: "R1".into(),
            channel: "instapay".into(),
            account_no: "09170000001".into(),
            account_name: "Juan".into(),
            middle_name: String::new(),
            last_name: "Cruz".into(),
            bank: Some("GCash".into()),
            amount: Centavos::new(100),
            note: None,
            state,
            trx_state: None,
            code: None,
            message: None,
            error_code: None,
            error_message: None,
            order_no: None,
            ref_no: None,
            attempt: sends.map(|n| AttemptRecord {
                id: 1,
                msg_id: "M1".into(),
                seq: 1,
                supersedes: None,
                operation: "5.2".into(),
                request_bytes: Vec::new(),
                send_count: n,
                first_sent_at: None,
            }),
            verified_reject: false,
            not_found_count: 0,
            resent_after_not_found,
            hold_since: None,
            first_sent_at: None,
            last_sent_at: None,
            last_checked_at: None,
            query_count: 0,
            sends: sends.unwrap_or(0),
            repay: false,
            repay_of: None,
            raw: RawFields::default(),
            reversed_after_success: false,
        }
    }

    #[test]
    fn report_state_of_a_row() {
        use ReportState as S;
        let table = [
            (row(RowState::New, None, false), S::NotSent),
            (row(RowState::Unsent, Some(0), false), S::NotSent),
            // Waiting to resend after the not-found rule: the first send may have landed.
            (row(RowState::Unsent, Some(1), true), S::Unknown),
            (row(RowState::Unsent, Some(0), true), S::Unknown),
            (row(RowState::Unsent, Some(1), false), S::Unknown),
            (row(RowState::InFlight, Some(1), false), S::Unknown),
            (row(RowState::Unknown, Some(1), false), S::Unknown),
            (row(RowState::Pending, Some(1), false), S::Pending),
            (row(RowState::FailHeld, Some(1), false), S::Pending),
            (row(RowState::Success, Some(1), false), S::Success),
            (row(RowState::Failed, Some(1), false), S::Failed),
            (row(RowState::Reversed, Some(1), false), S::Reversed),
            (row(RowState::Rejected, None, false), S::Rejected),
            (
                row(RowState::NeedsAttention, Some(1), false),
                S::NeedsAttention,
            ),
        ];
        for (r, want) in table {
            assert_eq!(ReportState::of(&r), want, "{:?}", r.state);
        }
        let s = Summary::from_rows(&[row(RowState::New, None, false)]);
        assert_eq!(
            s.exit_code(),
            crate::exit::UNRESOLVED,
            "NOT_SENT: run again"
        );
    }

    #[test]
    fn thousands_separators() {
        for (c, s) in [
            (0, "0.00"),
            (5, "0.05"),
            (99_999, "999.99"),
            (100_000, "1,000.00"),
            (123_456_789, "1,234,567.89"),
            (-123_456_789, "-1,234,567.89"),
        ] {
            assert_eq!(with_thousands(Centavos::new(c)), s);
        }
    }

    #[test]
    fn times_carry_the_report_offset() {
        let pht = FixedOffset::east_opt(8 * 3600).unwrap();
        // 2026-12-06T18:15:00Z
        let ms = 1_796_580_900_000;
        assert_eq!(ts(Some(ms), pht), "2026-12-07T02:15:00.000+08:00");
        assert_eq!(ts(None, pht), "");
    }

    #[test]
    fn table_is_aligned_with_a_total() {
        let t = table_text(
            "state",
            &[
                ("SUCCESS".into(), 2, Centavos::new(123_456_789)),
                ("FAILED".into(), 10, Centavos::new(5)),
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[3].starts_with("TOTAL"));
        assert!(lines[3].ends_with("1,234,567.94"), "{t}");
        // Right-aligned: every line has the same length.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
    }
}
