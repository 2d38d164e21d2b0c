//! Reconciliation CSVs (issue 5): the references a day's close checks against Starpay, read as
//! a stream so memory stays flat whatever the file's size.
//!
//! Columns (any order, names case-insensitive; an unknown column is an error):
//!
//! | column | repayment-recon | disbursement-recon | rule |
//! |---|---|---|---|
//! | `reference` | optional | optional | the merchant's own id, ≤ 64 characters |
//! | `ref_no` | one of the two per row | not allowed | queried by 6.8; ≤ 32 `[A-Za-z0-9]` |
//! | `original_msg_id` | one of the two per row | required | queried by 6.2 / 5.4; a msgId (1–32 `[A-Za-z0-9]`) |
//! | `expected_amount` | optional | optional | PHP, at most 2 decimals, > 0 |
//! | `expected_state` | optional | optional | SUCCESS, FAIL, REVERSED, PROCESSING, CLOSE or CANCEL |
//!
//! Duplicates are not errors: they are reported as DUPLICATE_IN_INPUT by the job.

use std::path::Path;

use super::{
    file_error, open_csv, positive_amount, text, Cell, Columns, ErrorList, InputError, RawRecord,
    Rule,
};
use crate::domain::{Centavos, MsgId, TrxState};

/// Which recon file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconKind {
    Repayment,
    Disbursement,
}

/// One valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconRow {
    pub line: u64,
    pub reference: Option<String>,
    pub ref_no: Option<String>,
    pub original_msg_id: Option<String>,
    pub expected_amount: Option<Centavos>,
    pub expected_state: Option<TrxState>,
}

/// What a pass over the file found.
#[derive(Debug)]
pub struct ReconScan {
    pub rows: u64,
    pub errors: ErrorList,
    pub sha256: String,
}

impl ReconScan {
    pub fn is_valid(&self) -> bool {
        self.errors.count() == 0
    }
}

const NAMES: [&str; 5] = [
    "reference",
    "ref_no",
    "original_msg_id",
    "expected_amount",
    "expected_state",
];
const REFERENCE: usize = 0;
const REF_NO: usize = 1;
const ORIGINAL: usize = 2;
const AMOUNT: usize = 3;
const STATE: usize = 4;

/// States a row may expect (final ones and PROCESSING).
fn expected_state(s: &str) -> Result<TrxState, Rule> {
    let upper = s.to_ascii_uppercase();
    match TrxState::parse(&upper) {
        TrxState::Unknown(_) | TrxState::Init => Err(Rule::UnknownState(s.to_string())),
        st => Ok(st),
    }
}

fn id_like(cell: Cell<'_>, max: usize) -> Result<Option<String>, Rule> {
    let Some(v) = text(cell, false, max)? else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    if let Some(bad) = v.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(Rule::BadCharacter {
            bad,
            allowed: "letters A-Z, a-z and digits 0-9",
        });
    }
    Ok(Some(v))
}

/// Reads `path`, calling `on_row` for every valid row in file order, and collects every error.
/// `Err` only when the file as a whole is unusable.
pub fn scan_recon<E>(
    path: &Path,
    kind: ReconKind,
    mut on_row: impl FnMut(ReconRow) -> Result<(), E>,
) -> Result<Result<ReconScan, E>, InputError> {
    let file_err = |line: u64, rule: Rule| file_error(path, line, rule);
    let io_err = |e| file_err(0, Rule::Io(e));
    let required = |i: usize| kind == ReconKind::Disbursement && i == ORIGINAL;
    let (mut reader, header_line, header) = open_csv(path, &NAMES, required)?;
    if kind == ReconKind::Disbursement && header.index[REF_NO].is_some() {
        let mut problems = super::HeaderProblems::default();
        problems.unknown.push(("ref_no".into(), None));
        return Err(file_err(header_line, Rule::BadHeader(Box::new(problems))));
    }
    let mut errors = ErrorList::default();
    let mut rows = 0u64;
    while let Some(rec) = reader.next_record(header.width).map_err(io_err)? {
        if rec.is_blank() {
            continue;
        }
        rows += 1;
        match check_row(&header, &rec, kind) {
            Ok(row) => {
                if let Err(e) = on_row(row) {
                    return Ok(Err(e));
                }
            }
            Err(errs) => {
                for (col, rule) in errs {
                    errors.push(InputError {
                        file: path.to_path_buf(),
                        line: rec.line,
                        column: col.map(|c| NAMES[c].to_string()),
                        rule,
                    });
                }
            }
        }
    }
    if rows == 0 {
        return Err(file_err(header_line, Rule::NoRows));
    }
    Ok(Ok(ReconScan {
        rows,
        errors,
        sha256: reader.into_inner().hex_digest(),
    }))
}

type RowErrors = Vec<(Option<usize>, Rule)>;

/// The value of a checked optional cell; its error, if any, goes to `errs` under column `c`.
fn keep<T>(errs: &mut RowErrors, c: usize, r: Result<Option<T>, Rule>) -> Option<T> {
    r.unwrap_or_else(|rule| {
        errs.push((Some(c), rule));
        None
    })
}

/// An optional cell: absent or empty is `None`, anything else must pass `parse`.
fn non_empty<T>(
    cell: Cell<'_>,
    parse: impl FnOnce(&str) -> Result<T, Rule>,
) -> Result<Option<T>, Rule> {
    match cell {
        Cell::Value(v) if !v.is_empty() => parse(v).map(Some),
        _ => Ok(None),
    }
}

fn check_row(header: &Columns, rec: &RawRecord, kind: ReconKind) -> Result<ReconRow, RowErrors> {
    header.field_count(rec).map_err(|rule| vec![(None, rule)])?;
    let mut errs: RowErrors = Vec::new();
    let cells = header.cells(rec, |i, rule| errs.push((Some(i), rule)));
    let reference = keep(&mut errs, REFERENCE, text(cells[REFERENCE], false, 64));
    let reference = reference.filter(|s| !s.is_empty());
    let ref_no = keep(&mut errs, REF_NO, id_like(cells[REF_NO], 32));
    let original = keep(
        &mut errs,
        ORIGINAL,
        id_like(cells[ORIGINAL], MsgId::MAX_LEN),
    );
    let amount = keep(&mut errs, AMOUNT, non_empty(cells[AMOUNT], positive_amount));
    let state = keep(&mut errs, STATE, non_empty(cells[STATE], expected_state));
    let key_cells_ok = !matches!(cells[REF_NO], Cell::Bad) && !matches!(cells[ORIGINAL], Cell::Bad);
    match kind {
        ReconKind::Disbursement
            if original.is_none()
                && key_cells_ok
                && !errs.iter().any(|e| e.0 == Some(ORIGINAL)) =>
        {
            errs.push((Some(ORIGINAL), Rule::Missing));
        }
        ReconKind::Repayment
            if ref_no.is_none()
                && original.is_none()
                && key_cells_ok
                && !errs
                    .iter()
                    .any(|e| e.0 == Some(REF_NO) || e.0 == Some(ORIGINAL)) =>
        {
            errs.push((None, Rule::NoLookupKey));
        }
        _ => {}
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ReconRow {
        line: rec.line,
        reference,
        ref_no,
        original_msg_id: original,
        expected_amount: amount,
        expected_state: state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(kind: ReconKind, text: &str) -> (Vec<ReconRow>, Result<ReconScan, InputError>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, text).unwrap();
        let mut rows = Vec::new();
        let r = scan_recon::<()>(&p, kind, |row| {
            rows.push(row);
            Ok(())
        })
        .map(|r| r.unwrap());
        (rows, r)
    }

    /// A repayment file that reads (its rows may still break rules).
    fn scan_repayment(text: &str) -> (Vec<ReconRow>, ReconScan) {
        let (rows, r) = scan(ReconKind::Repayment, text);
        (rows, r.unwrap())
    }

    #[test]
    fn valid_rows_stream_in_order() {
        let (rows, r) = scan_repayment(
            "reference,ref_no,original_msg_id,expected_amount,expected_state\nA,7000000000000001,,\"1,000.50\",success\nB,,M123,,\nB,,M123,5,FAIL\n",
        );
        assert!(r.is_valid(), "{}", r.errors.describe());
        assert_eq!(r.rows, 3);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].expected_amount, Some(Centavos::new(100_050)));
        assert_eq!(rows[0].expected_state, Some(TrxState::Success));
        assert_eq!(rows[1].original_msg_id.as_deref(), Some("M123"));
        assert_eq!(rows[1].line, 3);
        assert_eq!(r.sha256.len(), 64);
    }

    #[test]
    fn every_rule_names_line_and_column() {
        // (line 8, ",,,", is a blank spreadsheet row and is skipped)
        let (_, r) = scan_repayment(
            "ref_no,original_msg_id,expected_amount,expected_state\n,,1,\nR-1,,1,\nR1,,1.234,\nR1,,0,\nR1,,1,PAID\n,M-1,,\n,,,\n",
        );
        let msgs: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        let all = msgs.join("\n");
        for needle in [
            "line 2: either ref_no or original_msg_id is required",
            "line 3, column ref_no: contains '-'",
            "line 4, column expected_amount: more than 2 decimal places",
            "line 5, column expected_amount: amount must be greater than zero",
            "line 6, column expected_state: unknown state \"PAID\"",
            "line 7, column original_msg_id: contains '-'",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn disbursement_needs_original_msg_id_and_refuses_ref_no() {
        let (_, r) = scan(ReconKind::Disbursement, "reference,expected_amount\nA,1\n");
        assert!(r.unwrap_err().to_string().contains("original_msg_id"));
        let (_, r) = scan(ReconKind::Disbursement, "original_msg_id,ref_no\nA,1\n");
        assert!(r.unwrap_err().to_string().contains("ref_no"));
        let (_, r) = scan(ReconKind::Disbursement, "original_msg_id,reference\n,x\n");
        let all = r.unwrap().errors.describe();
        assert!(
            all.contains("line 2, column original_msg_id: required value is empty"),
            "{all}"
        );
    }

    #[test]
    fn file_level_errors() {
        assert!(scan(ReconKind::Repayment, "")
            .1
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(scan(ReconKind::Repayment, "ref_no\n")
            .1
            .unwrap_err()
            .to_string()
            .contains("no rows"));
        assert!(scan(ReconKind::Repayment, "ref_no,amount\n1,2\n")
            .1
            .unwrap_err()
            .to_string()
            .contains("amount"));
    }
}
