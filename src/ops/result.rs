//! The result file of a run: `<reports_dir>/<stem>-result.json` (`<job>-<run>-result.json`;
//! a `reconcile` pass uses its report stem, `<job>-reconcile-<payout run>-<pass>`), written
//! after the report by every command that drives a run, and printed on stdout by
//! `--output json`. One JSON object for a machine: who ran what on which file, when, how it
//! ended (exit code and its meaning), counts and amounts per state (payout runs) or category
//! (reconciliation runs), and the rows a human must look at.
//!
//! Amounts are integer centavos (`amount_centavos`) and the same value as a decimal string
//! (`amount`, PHP with two decimals); never a float. Every time is RFC 3339 with the job's
//! `[report] timezone` offset. The counts are the summary CSV's, from the same summary.
//! `schema` changes only when a field changes meaning or goes away; fields may be added.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::Centavos;
use crate::report::{self, ReconSummary, ReportPaths, ReportState, Summary};
use crate::store::recon::ReconRecord;
use crate::store::{RowRecord, RunRecord};

/// Version of this layout.
pub const SCHEMA: u32 = 1;
/// Rows listed in `needs_human` at most (the report CSV has every row); the rest are counted
/// in `needs_human_omitted`, so the file stays small enough for a chat message or a hook.
pub const MAX_HUMAN_ROWS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunResult {
    pub schema: u32,
    pub job: String,
    pub run_id: i64,
    /// `payout`, `reconcile` (a pass over a payout run), `repayment-recon`, `disbursement-recon`.
    pub kind: String,
    /// The command that drove the run this time: `run`, `retry` or `reconcile`.
    pub command: String,
    pub input: InputFile,
    /// This command's start and end.
    pub started_at: String,
    pub ended_at: String,
    /// When the run was created (a resumed run started earlier than this command).
    pub run_created_at: String,
    /// The run is finished (every row final, report in place); false: run the job again.
    pub run_finished: bool,
    pub exit_code: i32,
    pub exit_meaning: String,
    /// `state` (payout runs) or `category` (reconciliation runs): what `counts` are by.
    pub counts_by: String,
    /// Every state or category in report order, zero rows too.
    pub counts: Vec<Count>,
    pub total: Count,
    /// Reconciliation runs: the balance at the start and end of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_start: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_end: Option<Amount>,
    /// Rows a human must act on (FAILED, REVERSED, REJECTED, NEEDS_ATTENTION, and rows left
    /// PENDING/UNKNOWN/NOT_SENT; reconciliation findings and unchecked rows), input order.
    pub needs_human: Vec<HumanRow>,
    pub needs_human_omitted: u64,
    /// Why the run stopped early (interrupted, a stop code), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub warnings: Vec<String>,
    pub report: ReportFiles,
    pub result_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFile {
    pub path: String,
    /// SHA-256 of the input file; absent for a `reconcile` pass (its input is a payout run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Count {
    /// The state or category (`TOTAL` for the total).
    pub name: String,
    pub rows: i64,
    pub amount_centavos: i64,
    /// PHP with two decimals, e.g. `"1500.50"`.
    pub amount: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Amount {
    pub amount_centavos: i64,
    pub amount: String,
}

impl Amount {
    fn of(a: Centavos) -> Amount {
        Amount {
            amount_centavos: a.get(),
            amount: a.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HumanRow {
    pub reference: String,
    /// Line in the input file (1 = the header).
    pub line: i64,
    /// The report's state (payout) or category (reconciliation).
    pub state: String,
    pub reason: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_centavos: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// A payout row that was SUCCESS and is now REVERSED (the money came back after it was
    /// paid); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reversed_after_success: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportFiles {
    pub report: String,
    pub summary: String,
    pub details: String,
}

/// What the counts come from.
pub enum Counts<'a> {
    Payout(&'a Summary),
    Recon(&'a ReconSummary),
}

/// Everything a result is made of, gathered by `cmd::drive`.
pub struct ResultParts<'a> {
    pub run: &'a RunRecord,
    pub command: &'static str,
    pub tz: chrono::FixedOffset,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub exit_code: i32,
    pub counts: Counts<'a>,
    pub needs_human: Vec<HumanRow>,
    pub needs_human_omitted: u64,
    pub stopped: Option<String>,
    pub warnings: Vec<String>,
    pub paths: &'a ReportPaths,
    pub result_file: &'a Path,
}

/// `<reports_dir>/<stem>-result.json`.
pub fn result_path(reports_dir: &Path, run: &RunRecord) -> PathBuf {
    reports_dir.join(format!("{}-result.json", report::report_stem(run)))
}

impl RunResult {
    pub fn new(p: ResultParts<'_>) -> RunResult {
        let count = |name: String, rows: i64, a: Centavos| Count {
            name,
            rows,
            amount_centavos: a.get(),
            amount: a.to_string(),
        };
        let (counts_by, lines, balances): (_, Vec<(String, i64, Centavos)>, _) = match p.counts {
            Counts::Payout(s) => (
                "state",
                s.rows
                    .iter()
                    .map(|(st, n, a)| (st.to_string(), *n as i64, *a))
                    .collect(),
                (None, None),
            ),
            Counts::Recon(s) => (
                "category",
                s.rows
                    .iter()
                    .map(|(c, n, a)| (c.to_string(), *n, *a))
                    .collect(),
                (s.balance_start, s.balance_end),
            ),
        };
        let (mut n, mut total) = (0i64, Centavos::ZERO);
        for (_, rows, a) in &lines {
            n += rows;
            total = total.checked_add(*a).unwrap_or(total);
        }
        let reconcile_pass = p.run.input_sha256.starts_with("reconcile-of-run-");
        let path = |x: &Path| x.display().to_string();
        RunResult {
            schema: SCHEMA,
            job: p.run.job.clone(),
            run_id: p.run.id,
            kind: p.run.kind.to_string(),
            command: p.command.to_string(),
            input: InputFile {
                path: p.run.input_path.clone(),
                sha256: (!reconcile_pass).then(|| p.run.input_sha256.clone()),
            },
            started_at: report::ts(Some(p.started_ms), p.tz),
            ended_at: report::ts(Some(p.ended_ms), p.tz),
            run_created_at: report::ts(Some(p.run.created_at), p.tz),
            run_finished: p.run.finished,
            exit_code: p.exit_code,
            exit_meaning: crate::exit::meaning(p.exit_code).to_string(),
            counts_by: counts_by.to_string(),
            counts: lines
                .into_iter()
                .map(|(name, rows, a)| count(name, rows, a))
                .collect(),
            total: count("TOTAL".into(), n, total),
            balance_start: balances.0.map(Amount::of),
            balance_end: balances.1.map(Amount::of),
            needs_human: p.needs_human,
            needs_human_omitted: p.needs_human_omitted,
            stopped: p.stopped,
            warnings: p.warnings,
            report: ReportFiles {
                report: path(&p.paths.report),
                summary: path(&p.paths.summary),
                details: path(&p.paths.details),
            },
            result_file: path(p.result_file),
        }
    }

    /// Pretty JSON (the file and stdout carry the same text), newline-terminated.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Only plain strings and integers: serialisation cannot fail; say so if it did.
            format!("{{\"schema\":{SCHEMA},\"error\":\"cannot serialise the result: {e}\"}}")
        });
        s.push('\n');
        s
    }
}

/// A payout row a human must look at, or `None` when it is paid.
pub fn human_payout_row(r: &RowRecord) -> Option<HumanRow> {
    let state = ReportState::of(r);
    if state == ReportState::Success {
        return None;
    }
    let reason = match state {
        ReportState::Failed | ReportState::Reversed => {
            match (r.error_code.as_deref(), r.error_message.as_deref()) {
                (Some(c), Some(m)) => format!("{c} {m}"),
                (Some(c), None) => c.to_string(),
                _ => r.message.clone().unwrap_or_default(),
            }
        }
        _ => r.message.clone().unwrap_or_default(),
    };
    Some(HumanRow {
        reference: r.reference.clone(),
        line: r.line,
        state: state.to_string(),
        reason,
        action: state.action().to_string(),
        msg_id: r.attempt.as_ref().map(|a| a.msg_id.clone()),
        amount_centavos: Some(r.amount.get()),
        amount: Some(r.amount.to_string()),
        reversed_after_success: r.reversed_after_success,
    })
}

/// A reconciliation row a human must look at (a finding, or not settled/checked yet), or
/// `None` when it matched.
pub fn human_recon_row(r: &ReconRecord) -> Option<HumanRow> {
    let (state, needs) = match r.category {
        Some(c) => (c.to_string(), c.is_finding() || c.is_open()),
        None => ("UNKNOWN".to_string(), true),
    };
    if !needs {
        return None;
    }
    Some(HumanRow {
        reference: r.reference.clone().unwrap_or_default(),
        line: r.line,
        state,
        reason: r
            .message
            .clone()
            .unwrap_or_else(|| "not checked yet".to_string()),
        action: r
            .action
            .clone()
            .unwrap_or_else(|| "run the job again".to_string()),
        msg_id: r.original_msg_id.clone(),
        amount_centavos: r.expected_amount.map(Centavos::get),
        amount: r.expected_amount.map(|a| a.to_string()),
        reversed_after_success: false,
    })
}
