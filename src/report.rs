//! CSV reports: reads rows through the store, computes no states (row states come from the
//! engine). Account numbers are masked to their last 4 digits; no key material ever appears.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::domain::{Centavos, RowState};
use crate::logging::mask_account;
use crate::store::{RowRecord, StoreError};

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
}

pub const PAYOUT_COLUMNS: [&str; 17] = [
    "line",
    "reference",
    "msg_id",
    "order_no",
    "channel",
    "bank",
    "account_no",
    "amount",
    "state",
    "trx_state",
    "code",
    "message",
    "error_code",
    "error_message",
    "attempts",
    "first_sent_at",
    "last_checked_at",
];

/// The report states in a stable order.
pub const REPORT_STATES: [&str; 7] = [
    "SUCCESS",
    "FAILED",
    "REVERSED",
    "PENDING",
    "UNKNOWN",
    "REJECTED",
    "NEEDS_ATTENTION",
];

fn ts(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Count and total per report state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows: Vec<(&'static str, u64, Centavos)>,
}

impl Summary {
    pub fn from_rows(rows: &[RowRecord]) -> Summary {
        let mut out: Vec<(&'static str, u64, Centavos)> = REPORT_STATES
            .iter()
            .map(|s| (*s, 0, Centavos::ZERO))
            .collect();
        for r in rows {
            let label = r.state.report_label();
            if let Some(e) = out.iter_mut().find(|e| e.0 == label) {
                e.1 += 1;
                e.2 = e.2.checked_add(r.amount).unwrap_or(e.2);
            }
        }
        Summary { rows: out }
    }

    pub fn count(&self, state: &str) -> u64 {
        self.rows.iter().find(|e| e.0 == state).map_or(0, |e| e.1)
    }

    /// Exit code per issue 4: 3 unresolved rows remain; 2 failed/reversed/rejected; 0 all SUCCESS.
    pub fn exit_code(&self) -> i32 {
        if ["PENDING", "UNKNOWN", "NEEDS_ATTENTION"]
            .iter()
            .any(|s| self.count(s) > 0)
        {
            crate::cmd::exit::UNRESOLVED
        } else if ["FAILED", "REVERSED", "REJECTED"]
            .iter()
            .any(|s| self.count(s) > 0)
        {
            crate::cmd::exit::FINISHED_WITH_FAILURES
        } else {
            crate::cmd::exit::OK
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("{:<16} {:>8} {:>18}\n", "state", "rows", "amount (PHP)");
        let mut n = 0;
        let mut total = Centavos::ZERO;
        for (state, count, amount) in &self.rows {
            s.push_str(&format!("{state:<16} {count:>8} {amount:>18}\n"));
            n += count;
            total = total.checked_add(*amount).unwrap_or(total);
        }
        s.push_str(&format!("{:<16} {n:>8} {total:>18}\n", "TOTAL"));
        s
    }
}

/// Extra text for a row's message column (reference §12 rule 4: STALE_PENDING).
fn message_of(r: &RowRecord, stale_after_ms: i64, now_ms: i64) -> String {
    let base = r.message.clone().unwrap_or_default();
    let stale = r.state == RowState::Pending
        && r.first_sent_at
            .is_some_and(|t| now_ms - t >= stale_after_ms);
    if stale {
        format!("STALE_PENDING: {base}")
    } else {
        base
    }
}

fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut csv::Writer<fs::File>) -> Result<(), csv::Error>,
) -> Result<(), ReportError> {
    let tmp = path.with_extension("csv.tmp");
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
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
    fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Writes `<dir>/<job>-<run>.csv` (one line per input row, input order) and
/// `<dir>/<job>-<run>-summary.csv`. Returns both paths.
pub fn write_payout_report(
    dir: &Path,
    job: &str,
    run_id: i64,
    rows: &[RowRecord],
    stale_after_ms: i64,
) -> Result<(PathBuf, PathBuf, Summary), ReportError> {
    fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let report = dir.join(format!("{job}-{run_id}.csv"));
    let now = crate::store::now_ms();
    write_atomically(&report, |w| {
        w.write_record(PAYOUT_COLUMNS)?;
        for r in rows {
            let msg_id = r
                .attempt
                .as_ref()
                .map(|a| a.msg_id.clone())
                .unwrap_or_default();
            w.write_record([
                r.line.to_string(),
                r.reference.clone(),
                msg_id,
                r.order_no.clone().unwrap_or_default(),
                r.channel.clone(),
                r.bank.clone().unwrap_or_default(),
                mask_account(&r.account_no),
                r.amount.to_string(),
                r.state.report_label().to_string(),
                r.trx_state.clone().unwrap_or_default(),
                r.code.clone().unwrap_or_default(),
                message_of(r, stale_after_ms, now),
                r.error_code.clone().unwrap_or_default(),
                r.error_message.clone().unwrap_or_default(),
                r.sends.to_string(),
                ts(r.first_sent_at),
                ts(r.last_checked_at),
            ])?;
        }
        Ok(())
    })?;
    let summary = Summary::from_rows(rows);
    let summary_path = dir.join(format!("{job}-{run_id}-summary.csv"));
    write_atomically(&summary_path, |w| {
        w.write_record(["state", "count", "total"])?;
        for (state, count, total) in &summary.rows {
            w.write_record([state.to_string(), count.to_string(), total.to_string()])?;
        }
        Ok(())
    })?;
    Ok((report, summary_path, summary))
}

// ------------------------------------------------------------------ reconciliation

pub const RECON_COLUMNS: [&str; 18] = [
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
];

/// Categories in report order.
pub const RECON_CATEGORIES: [&str; 12] = [
    "MATCHED",
    "AMOUNT_MISMATCH",
    "STATE_MISMATCH",
    "PAID_BUT_RECORDED_UNPAID",
    "DUPLICATE_MATCH",
    "NOT_FOUND",
    "PENDING",
    "HELD_TIMEOUT",
    "STALE_PENDING",
    "REVERSED_AFTER_SUCCESS",
    "DUPLICATE_IN_INPUT",
    "UNKNOWN",
];

/// Count and amount per category, and the balance at the start and end of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconSummary {
    pub rows: Vec<(String, i64, Centavos)>,
    pub balance_start: Option<Centavos>,
    pub balance_end: Option<Centavos>,
}

impl ReconSummary {
    pub fn count(&self, category: &str) -> i64 {
        self.rows
            .iter()
            .filter(|r| r.0 == category)
            .map(|r| r.1)
            .sum()
    }

    /// Issue 5: 0 all MATCHED; 3 pending, held or unknown rows remain; 2 mismatches, not-found,
    /// a payment recorded as unpaid (`PAID_BUT_RECORDED_UNPAID`) or claimed twice
    /// (`DUPLICATE_MATCH`).
    pub fn exit_code(&self) -> i32 {
        if [
            "PENDING",
            "HELD_TIMEOUT",
            "STALE_PENDING",
            "UNKNOWN",
            "UNCHECKED",
        ]
        .iter()
        .any(|c| self.count(c) > 0)
        {
            crate::cmd::exit::UNRESOLVED
        } else if self.rows.iter().any(|r| r.0 != "MATCHED" && r.1 > 0) {
            crate::cmd::exit::FINISHED_WITH_FAILURES
        } else {
            crate::cmd::exit::OK
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("{:<24} {:>10} {:>18}\n", "category", "rows", "amount (PHP)");
        for (c, n, a) in &self.rows {
            s.push_str(&format!("{c:<24} {n:>10} {a:>18}\n"));
        }
        let fmt =
            |b: Option<Centavos>| b.map(|b| b.to_string()).unwrap_or_else(|| "unknown".into());
        s.push_str(&format!(
            "balance at start: PHP {}\n",
            fmt(self.balance_start)
        ));
        s.push_str(&format!(
            "balance at end:   PHP {}\n",
            fmt(self.balance_end)
        ));
        s
    }
}

/// Writes `<dir>/<job>-<run>.csv` (streamed from the store in input order) and the summary.
pub fn write_recon_report(
    store: &crate::store::Store,
    dir: &Path,
    job: &str,
    run_id: i64,
) -> Result<(PathBuf, PathBuf, ReconSummary), ReportError> {
    use crate::store::recon as sql;
    fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let report = dir.join(format!("{job}-{run_id}.csv"));
    let path = report.clone();
    // Runs on the store's thread, streaming rows straight into the file.
    store.call_blocking(move |c| {
        let result = write_atomically(&path, |w| {
            w.write_record(RECON_COLUMNS)?;
            let mut csv_error = None;
            let walked = sql::for_each_recon_row(c, run_id, |r| {
                let money = |a: Option<Centavos>| a.map(|a| a.to_string()).unwrap_or_default();
                let difference = match (r.provider_amount, r.expected_amount) {
                    (Some(p), Some(e)) => {
                        p.checked_sub(e).map(|d| d.to_string()).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                let (category, message) = match &r.category {
                    Some(c) => (c.clone(), r.message.clone().unwrap_or_default()),
                    None => (
                        "UNKNOWN".to_string(),
                        "not checked yet: run the job again".to_string(),
                    ),
                };
                let rec = [
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
                    ts(r.checked_at),
                    r.action
                        .clone()
                        .unwrap_or_else(|| "run the job again".into()),
                ];
                if let Err(e) = w.write_record(rec) {
                    csv_error = Some(e);
                    return Err(StoreError::BadState("report write failed".into()));
                }
                Ok(())
            });
            match (csv_error, walked) {
                (Some(e), _) => Err(e),
                (None, Err(e)) => Err(csv::Error::from(std::io::Error::other(e.to_string()))),
                (None, Ok(())) => Ok(()),
            }
        });
        Ok(result)
    })??;
    let (mut rows, (balance_start, balance_end)) = store
        .call_blocking(move |c| Ok((sql::recon_summary(c, run_id)?, sql::balances(c, run_id)?)))?;
    rows.sort_by_key(|r| {
        RECON_CATEGORIES
            .iter()
            .position(|c| *c == r.0)
            .unwrap_or(RECON_CATEGORIES.len())
    });
    let summary = ReconSummary {
        rows,
        balance_start,
        balance_end,
    };
    let summary_path = dir.join(format!("{job}-{run_id}-summary.csv"));
    write_atomically(&summary_path, |w| {
        w.write_record(["category", "count", "amount"])?;
        for (c, n, a) in &summary.rows {
            w.write_record([c.clone(), n.to_string(), a.to_string()])?;
        }
        let b = |x: Option<Centavos>| x.map(|x| x.to_string()).unwrap_or_default();
        w.write_record([
            "balance_start".to_string(),
            String::new(),
            b(summary.balance_start),
        ])?;
        w.write_record([
            "balance_end".to_string(),
            String::new(),
            b(summary.balance_end),
        ])?;
        Ok(())
    })?;
    Ok((report, summary_path, summary))
}
