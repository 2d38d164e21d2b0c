//! The rules before money moves: validating a payout file against the bank list and the
//! references earlier runs used, turning it into the run's rows (valid and REJECTED), the
//! balance check, and which FAILED rows a `retry` may send again. Commands call these; they
//! decide nothing themselves.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::domain::{Centavos, RowState};
use crate::engine::approval::{Figures, Spending};
use crate::input::payout::{
    scan_payouts, Channel, Duplicates, PayoutRow, PayoutScan, ValidationOptions,
};
use crate::input::InputError;
use crate::starpay::codes::{reason_class, ReasonClass};
use crate::store::{self, NewRow, PayoutRowSink, RowRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("validation task failed: {0}")]
    Task(String),
    #[error("{}: the file changed while it was being read; run again", .0.display())]
    Changed(PathBuf),
    #[error("pre-flight: the bank list (5.1) is empty, so no InstaPay bank name can be checked; nothing was sent")]
    EmptyBankList,
    #[error("{}: no valid rows to send", .0.display())]
    NoValidRows(PathBuf),
    #[error("--skip-invalid needs every rejected row in the report, but the file has more errors than are kept ({0} more); fix the file")]
    TooManyErrors(usize),
    #[error("pre-flight: the {what} total PHP {total} exceeds the available balance PHP {balance}; nothing was sent")]
    OverBalance {
        what: &'static str,
        total: Centavos,
        balance: Centavos,
    },
    #[error("the retry total overflows")]
    Overflow,
}

/// A validated payout file: what validation found (not the valid rows themselves: a file of
/// any size is validated in bounded memory, and its rows are read again, streaming, into the
/// run), its figures for approval and caps, and the references in it that are deliberate
/// re-payments.
pub struct Validated {
    pub file: PayoutScan,
    pub figures: Figures,
    pub repays: HashSet<String>,
}

/// Where the references of a file are checked against earlier runs.
pub struct EarlierRuns<'a> {
    /// The job's store (`None`: it does not exist yet, so there are no earlier runs).
    pub store: Option<&'a Store>,
    /// Runs whose uses do not count (a dry run of a file already paid ignores that file's own
    /// runs, to show what the file itself holds).
    pub ignore: HashSet<i64>,
}

impl<'a> EarlierRuns<'a> {
    /// Every earlier run of the store counts.
    pub fn all(store: &'a Store) -> EarlierRuns<'a> {
        EarlierRuns {
            store: Some(store),
            ignore: HashSet::new(),
        }
    }
}

/// Reads and validates the input; `banks` adds the 5.1 bank-name check. References already
/// used by earlier runs of this database are errors (README "Paying a reference again"),
/// except, with `repay`, those whose every earlier attempt ended verified FAILED, REVERSED or
/// REJECTED: they are returned as re-payments (checked live before their msgId exists).
/// `spending` gives the figures' row cap.
pub async fn validate_payouts(
    earlier: EarlierRuns<'_>,
    input: &Path,
    banks: Option<HashSet<String>>,
    repay: bool,
    spending: &Spending,
) -> Result<Validated, PrepareError> {
    let input = input.to_path_buf();
    let spending = spending.clone();
    let st = earlier.store.cloned();
    let ignore = earlier.ignore;
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let repays = std::cell::RefCell::new(HashSet::new());
        let already_paid = |reference: &str| -> Option<String> {
            let Some(st) = &st else {
                return None;
            };
            let uses = match handle.block_on(st.reference_uses(reference, None)) {
                Ok(uses) => uses
                    .into_iter()
                    .filter(|u| !ignore.contains(&u.run_id))
                    .collect::<Vec<_>>(),
                // A database error counts as "paid": never risk paying twice.
                Err(e) => return Some(format!("cannot check earlier runs of this reference: {e}")),
            };
            let check = store::ReferenceCheck::of(&uses);
            if repay && matches!(check, store::ReferenceCheck::Repayable(_)) {
                repays.borrow_mut().insert(reference.to_string());
            }
            check.refusal(reference, repay)
        };
        let banks = banks.filter(|b| !b.is_empty());
        let opts = ValidationOptions {
            banks: banks.as_ref(),
            already_paid: Some(&already_paid),
        };
        let mut figures = Figures::empty(String::new());
        let scanned =
            scan_payouts::<std::convert::Infallible>(&input, &opts, Duplicates::Check, |row| {
                figures.add(&row, &spending);
                Ok(())
            })?;
        let Ok(file) = scanned;
        figures.sha256.clone_from(&file.sha256);
        Ok(Validated {
            file,
            figures,
            repays: repays.take(),
        })
    })
    .await
    .map_err(|e| PrepareError::Task(e.to_string()))?
}

/// Whether a file with errors may go ahead: only with `skip_invalid`, and only when every
/// rejected line was kept (so each gets its REJECTED line in the report).
pub fn may_proceed(file: &PayoutScan, skip_invalid: bool) -> Result<bool, PrepareError> {
    if skip_invalid && file.errors.omitted() > 0 {
        return Err(PrepareError::TooManyErrors(file.errors.omitted()));
    }
    Ok(file.is_valid() || skip_invalid)
}

/// The pre-flight checks of the file against what Starpay said: an InstaPay row needs a bank
/// list to be checked against; the file must be the one whose hash keys the run.
pub fn check_file(
    file: &PayoutScan,
    input: &Path,
    sha256: &str,
    bank_list_empty: bool,
) -> Result<(), PrepareError> {
    if bank_list_empty && file.instapay_rows > 0 {
        return Err(PrepareError::EmptyBankList);
    }
    if file.sha256 != sha256 {
        return Err(PrepareError::Changed(input.to_path_buf()));
    }
    Ok(())
}

/// The total to be sent must not exceed the balance Starpay reported.
pub fn check_balance(
    what: &'static str,
    total: Centavos,
    balance: Centavos,
) -> Result<(), PrepareError> {
    if total > balance {
        return Err(PrepareError::OverBalance {
            what,
            total,
            balance,
        });
    }
    Ok(())
}

/// The run's rows, in input order, and how to read them: every valid row NEW (re-payments
/// marked), and every invalid line REJECTED with every field it had (raw text where it did not
/// parse) and all its reasons, so the report shows it and its total adds up to the file (issue
/// 8, defect 7). Never loses a row: an error line without its fields still gets a REJECTED
/// row. Only the REJECTED rows (at most `MAX_ERRORS`) are kept; the valid rows are read again
/// from the file, streaming, by [`RunRows::fill`] inside the run's transaction.
pub struct RunRows {
    input: PathBuf,
    banks: Option<HashSet<String>>,
    repays: HashSet<String>,
    /// The REJECTED rows, by line.
    rejected: Vec<NewRow>,
    /// What validation found, which the second read must find again.
    valid_rows: u64,
    total: Centavos,
    sha256: String,
}

/// The run's rows of the validated file `v` (validated against `banks`, as this read is).
pub fn payout_rows(
    v: &Validated,
    input: &Path,
    banks: Option<HashSet<String>>,
) -> Result<RunRows, PrepareError> {
    let file = &v.file;
    if file.valid_rows == 0 {
        return Err(PrepareError::NoValidRows(input.to_path_buf()));
    }
    let reasons = |line: u64| -> String {
        let all: Vec<String> = file
            .errors
            .iter()
            .filter(|x| x.line == line)
            .map(|x| x.to_string())
            .collect();
        format!("invalid input: {}", all.join("; "))
    };
    let mut rows = Vec::new();
    let mut rejected_lines = HashSet::new();
    for r in &file.rejected {
        if !rejected_lines.insert(r.line) {
            continue;
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        rows.push(NewRow {
            line: r.line,
            reference: r.reference.clone(),
            channel: Channel::parse(&r.channel).map_or("", |c| c.as_str()),
            account_no: r.account_no.clone(),
            account_name: r.account_name.clone(),
            middle_name: r.middle_name.clone(),
            last_name: r.last_name.clone(),
            bank: non_empty(&r.bank),
            amount: r.amount.unwrap_or(Centavos::ZERO),
            note: non_empty(&r.note),
            state: RowState::Rejected,
            message: Some(reasons(r.line)),
            repay: false,
            raw: store::RawFields {
                channel: Some(r.channel.clone()),
                amount: r.amount.is_none().then(|| r.amount_text.clone()),
                currency: Some(r.currency.clone()),
            },
        });
    }
    for e in &file.errors {
        if e.line == 0 || !rejected_lines.insert(e.line) {
            continue;
        }
        rows.push(NewRow {
            line: e.line,
            reference: String::new(),
            channel: "",
            account_no: String::new(),
            account_name: String::new(),
            middle_name: String::new(),
            last_name: String::new(),
            bank: None,
            amount: Centavos::ZERO,
            note: None,
            state: RowState::Rejected,
            message: Some(reasons(e.line)),
            repay: false,
            raw: store::RawFields::default(),
        });
    }
    rows.sort_by_key(|r| r.line);
    Ok(RunRows {
        input: input.to_path_buf(),
        banks: banks.filter(|b| !b.is_empty()),
        repays: v.repays.clone(),
        rejected: rows,
        valid_rows: file.valid_rows,
        total: file.total,
        sha256: file.sha256.clone(),
    })
}

impl RunRows {
    /// How many rows are REJECTED.
    pub fn rejected(&self) -> usize {
        self.rejected.len()
    }

    /// Reads the file again and pushes every row of the run into `sink`, in line order: the
    /// valid rows as they are read, the REJECTED ones kept from validation between them. The
    /// earlier-runs check is not repeated (a line it refused is one of the REJECTED lines, and
    /// the job's lock keeps other runs out meanwhile), nor the duplicate check (its memory
    /// grows with the file; the same bytes have the same duplicates, all REJECTED lines);
    /// everything else is, and a file that changed since it was validated (other bytes, other
    /// valid rows or total) is refused with [`PrepareError::Changed`]: the caller rolls the
    /// whole run back.
    pub fn fill(
        self,
        sink: &mut PayoutRowSink<'_>,
    ) -> Result<Result<(), PrepareError>, StoreError> {
        let opts = ValidationOptions {
            banks: self.banks.as_ref(),
            already_paid: None,
        };
        let rejected_lines: HashSet<u64> = self.rejected.iter().map(|r| r.line).collect();
        let mut rejected = self.rejected.into_iter().peekable();
        let (mut valid_rows, mut total) = (0u64, Centavos::ZERO);
        let repays = &self.repays;
        let scanned = scan_payouts(
            &self.input,
            &opts,
            Duplicates::SkipRevalidated,
            |r: PayoutRow| {
                if rejected_lines.contains(&r.line) {
                    return Ok(());
                }
                while let Some(x) = rejected.next_if(|x| x.line < r.line) {
                    sink.push(x)?;
                }
                valid_rows += 1;
                total = total
                    .checked_add(r.amount)
                    .unwrap_or(Centavos::new(i64::MAX));
                let repay = repays.contains(&r.reference);
                sink.push(new_row(r, repay))
            },
        );
        let scan = match scanned {
            Err(e) => return Ok(Err(e.into())),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(scan)) => scan,
        };
        for x in rejected {
            sink.push(x)?;
        }
        if scan.sha256 != self.sha256 || valid_rows != self.valid_rows || total != self.total {
            return Ok(Err(PrepareError::Changed(self.input)));
        }
        Ok(Ok(()))
    }
}

/// A valid row as the run's NEW row.
fn new_row(r: PayoutRow, repay: bool) -> NewRow {
    NewRow {
        line: r.line,
        reference: r.reference,
        channel: r.channel.as_str(),
        account_no: r.account_no,
        account_name: r.account_name,
        middle_name: r.middle_name,
        last_name: r.last_name,
        bank: r.bank,
        amount: r.amount,
        note: r.note,
        state: RowState::New,
        message: None,
        repay,
        raw: store::RawFields::default(),
    }
}

/// The FAILED rows of a run a `retry` sends again, and those it leaves alone.
pub struct RetryPlan {
    pub retryable: Vec<RowRecord>,
    /// §9.2: a beneficiary-data failure (AC*, BE01, RC01) fails again unless the data is
    /// fixed; re-sending it needs an explicit flag.
    pub skipped: Vec<RowRecord>,
    /// The amount the retryable rows send.
    pub total: Centavos,
}

pub fn retry_plan(
    rows: Vec<RowRecord>,
    include_beneficiary_errors: bool,
) -> Result<RetryPlan, PrepareError> {
    let (retryable, skipped): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .filter(|r| r.state == RowState::Failed)
        .partition(|r| {
            include_beneficiary_errors
                || !r
                    .error_code
                    .as_deref()
                    .is_some_and(|c| reason_class(c) == ReasonClass::BeneficiaryData)
        });
    let total = retryable
        .iter()
        .try_fold(Centavos::ZERO, |acc, r| acc.checked_add(r.amount))
        .ok_or(PrepareError::Overflow)?;
    Ok(RetryPlan {
        retryable,
        skipped,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(line: i64, code: Option<&str>, amount: i64) -> RowRecord {
        RowRecord {
            line,
            state: RowState::Failed,
            error_code: code.map(str::to_string),
            amount: Centavos::new(amount),
            ..RowRecord::default()
        }
    }

    #[test]
    fn retry_leaves_beneficiary_data_failures_unless_asked() {
        let rows = || {
            vec![
                failed(2, Some("AC03"), 100),
                failed(3, Some("AB05"), 200),
                failed(4, None, 300),
                RowRecord {
                    line: 5,
                    state: RowState::Success,
                    amount: Centavos::new(999),
                    ..RowRecord::default()
                },
            ]
        };
        let plan = retry_plan(rows(), false).unwrap();
        let lines: Vec<i64> = plan.retryable.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4]);
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.total, Centavos::new(500));
        let all = retry_plan(rows(), true).unwrap();
        assert_eq!(all.retryable.len(), 3, "SUCCESS is never retried");
        assert_eq!(all.total, Centavos::new(600));
    }

    const HEADER: &str =
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n";

    fn line(reference: &str, amount: &str) -> String {
        format!("{reference},instapay,09171234567,Juan,,Cruz,GCash,{amount},PHP,\n")
    }

    /// The run's rows are read a second time, streaming, in line order with the REJECTED ones
    /// between; a file changed after validation creates no run at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_rows_stream_in_line_order_and_a_changed_file_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let text = [
            HEADER.to_string(),
            line("R1", "1.00"),
            line("R2", "abc"),
            line("R3", "3.00"),
            line("R1", "4.00"),
            line("R5", "5.00"),
        ]
        .concat();
        std::fs::write(&input, &text).unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let earlier = EarlierRuns::all(&store);
        let v = validate_payouts(earlier, &input, None, false, &Spending::default())
            .await
            .unwrap();
        assert_eq!((v.file.valid_rows, v.file.total), (3, Centavos::new(900)));
        assert_eq!((v.figures.rows, v.figures.total), (3, Centavos::new(900)));
        let run = |sha: &str| crate::store::NewRun {
            job: "job".into(),
            kind: crate::domain::RunKind::Payout,
            input: input.display().to_string(),
            sha256: sha.into(),
        };

        // Changed after validation (same size, another amount): refused, nothing created.
        let rows = payout_rows(&v, &input, None).unwrap();
        assert_eq!(rows.rejected(), 2);
        std::fs::write(&input, text.replace("5.00", "6.00")).unwrap();
        let refused = store
            .create_payout_run_streamed(run("x"), move |sink| rows.fill(sink))
            .await
            .unwrap();
        assert!(
            matches!(refused, Err(PrepareError::Changed(_))),
            "{refused:?}"
        );
        assert!(store.runs_for("job", None).await.unwrap().is_empty());

        std::fs::write(&input, &text).unwrap();
        let rows = payout_rows(&v, &input, None).unwrap();
        let run_id = store
            .create_payout_run_streamed(run(&v.file.sha256), move |sink| rows.fill(sink))
            .await
            .unwrap()
            .unwrap();
        let stored = store.rows_of_run(run_id, false).await.unwrap();
        let got: Vec<(i64, RowState)> = stored.iter().map(|r| (r.line, r.state)).collect();
        use RowState::{New, Rejected};
        assert_eq!(
            got,
            [(2, New), (3, Rejected), (4, New), (5, Rejected), (6, New)]
        );
        let record = store.run_by_id(run_id).await.unwrap().unwrap();
        assert_eq!((record.row_count, record.total), (5, Centavos::new(900)));
    }

    #[test]
    fn balance_check_allows_equal_and_refuses_more() {
        assert!(check_balance("batch", Centavos::new(100), Centavos::new(100)).is_ok());
        let e = check_balance("batch", Centavos::new(101), Centavos::new(100)).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
    }
}
