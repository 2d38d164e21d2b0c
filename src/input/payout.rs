//! The payout CSV: one row per transfer, validated in full before anything is sent.
//!
//! Owns: the payout file's columns and the value rules of reference §6 (5.2, 5.3) and §12
//! rules 5, 6 and 13 (amounts as integer centavos, the InstaPay cap, bank names from the 5.1
//! list, duplicates in the file and against earlier runs). Must not: split rows, round
//! amounts, or decide how a row is sent.
//!
//! Columns (any order, names case-insensitive; an unknown column is an error so a typo such as
//! `ammount` is never silently ignored):
//!
//! | column | required | rule |
//! |---|---|---|
//! | `reference` | yes | the merchant's id for the row; 1–64 characters, no control characters; unique in the file and not paid in an earlier run |
//! | `channel` | yes | `instapay` or `starpay` (case-insensitive) |
//! | `account_no` | yes | 1–34 `[A-Za-z0-9]` |
//! | `account_name` | yes | recipient first name, ≤ 64 characters |
//! | `middle_name` | column optional | ≤ 64 characters, may be empty |
//! | `last_name` | yes | ≤ 64 characters |
//! | `bank` | for instapay | ≤ 128 characters; one of the receiving banks when a list is given; ignored for starpay |
//! | `amount` | yes | PHP, at most 2 decimals: `1500`, `1500.5`, `"1,500.50"`; > 0; ≤ 50,000 on instapay |
//! | `currency` | column optional | empty or `PHP` |
//! | `note` | column optional | sent as `attach`; ≤ 92 characters |
//!
//! Every value is trimmed of surrounding whitespace before it is checked.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::{
    file_error, open_csv, positive_amount, text, Cell, Columns, ErrorList, InputError, RawRecord,
    Rule,
};
use crate::domain::money::INSTAPAY_CAP;
use crate::domain::Centavos;

/// Reference §6 5.2 and §4 decisions; `bank` and `reference` are the project's own limits.
pub const REFERENCE_MAX_CHARS: usize = 64;
pub const ACCOUNT_NO_MAX_CHARS: usize = 34;
pub const NAME_MAX_CHARS: usize = 64;
pub const BANK_MAX_CHARS: usize = 128;
pub const NOTE_MAX_CHARS: usize = 92;

/// How a row is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// 5.2, to a bank or e-wallet through InstaPay; capped at PHP 50,000 per transfer.
    Instapay,
    /// 5.3, to a Starpay account; no per-transfer cap.
    Starpay,
}

impl Channel {
    /// `instapay` or `starpay`, case-insensitive.
    pub fn parse(s: &str) -> Option<Channel> {
        if s.eq_ignore_ascii_case("instapay") {
            Some(Channel::Instapay)
        } else if s.eq_ignore_ascii_case("starpay") {
            Some(Channel::Starpay)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Instapay => "instapay",
            Channel::Starpay => "starpay",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One valid row. Strings are trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct PayoutRow {
    /// Physical line in the file (the header is line 1).
    pub line: u64,
    pub reference: String,
    pub channel: Channel,
    pub account_no: String,
    pub account_name: String,
    /// `""` when none (always sent, reference §4).
    pub middle_name: String,
    pub last_name: String,
    /// `Some` for instapay rows; `None` for starpay rows (the column is ignored for them).
    pub bank: Option<String>,
    pub amount: Centavos,
    /// Sent as `attach`; `None` when empty.
    pub note: Option<String>,
}

/// Hand-written so a full account number never reaches a log (STYLE.md §9).
impl fmt::Debug for PayoutRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, channel) = (self, &self.channel as &dyn fmt::Debug);
        line_debug(f, "PayoutRow", r.line, &r.reference, channel, &r.account_no)
            .field("bank", &self.bank)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

pub use crate::logging::mask_account;

/// The fields a payout line shows in a log, whichever type holds it: the account number
/// masked, never whole.
fn line_debug<'a, 'b>(
    f: &'a mut fmt::Formatter<'b>,
    name: &str,
    line: u64,
    reference: &str,
    channel: &dyn fmt::Debug,
    account_no: &str,
) -> fmt::DebugStruct<'a, 'b> {
    let mut d = f.debug_struct(name);
    d.field("line", &line)
        .field("reference", &reference)
        .field("channel", channel)
        .field("account_no", &mask_account(account_no));
    d
}

/// Why a reference may not be paid (an earlier run sent it), or `None` when it may.
pub type AlreadyPaid<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Longest text kept of one field of a rejected line (the report shows it; the error message
/// already names the rule).
pub const REJECTED_FIELD_MAX_CHARS: usize = 256;

/// A line that failed validation, with every field as it was written (decoded lossily,
/// trimmed, cut at [`REJECTED_FIELD_MAX_CHARS`]), so `--skip-invalid` can keep it in the
/// report (issue 8, defect 7). `amount` is set only when the amount text parses as a
/// non-negative PHP amount (`"12.345"` does not; `"60000"` over the InstaPay cap does).
#[derive(Clone, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: u64,
    pub reference: String,
    pub channel: String,
    pub account_no: String,
    pub account_name: String,
    pub middle_name: String,
    pub last_name: String,
    pub bank: String,
    pub amount_text: String,
    pub amount: Option<Centavos>,
    pub currency: String,
    pub note: String,
}

/// Hand-written so a full account number never reaches a log (STYLE.md §9).
impl fmt::Debug for RejectedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, channel) = (self, &self.channel as &dyn fmt::Debug);
        line_debug(
            f,
            "RejectedLine",
            r.line,
            &r.reference,
            channel,
            &r.account_no,
        )
        .field("amount_text", &self.amount_text)
        .finish_non_exhaustive()
    }
}

impl RejectedLine {
    fn from_record(header: &Columns, rec: &RawRecord) -> RejectedLine {
        let raw = |c: Col| -> String {
            let Some(Some(i)) = header.index.get(c as usize) else {
                return String::new();
            };
            match rec.fields.get(*i) {
                Some(super::RawField::Bytes(b)) => {
                    let t = String::from_utf8_lossy(b);
                    let t = t.trim();
                    if t.chars().count() > REJECTED_FIELD_MAX_CHARS {
                        let mut cut: String = t.chars().take(REJECTED_FIELD_MAX_CHARS).collect();
                        cut.push('…');
                        cut
                    } else {
                        t.to_string()
                    }
                }
                Some(super::RawField::TooLarge) => {
                    format!("[field over {} bytes]", super::MAX_FIELD_BYTES)
                }
                None => String::new(),
            }
        };
        let amount_text = raw(Col::Amount);
        let amount = Centavos::parse_php(&amount_text)
            .ok()
            .filter(|a| a.get() >= 0);
        RejectedLine {
            line: rec.line,
            reference: raw(Col::Reference),
            channel: raw(Col::Channel),
            account_no: raw(Col::AccountNo),
            account_name: raw(Col::AccountName),
            middle_name: raw(Col::MiddleName),
            last_name: raw(Col::LastName),
            bank: raw(Col::Bank),
            amount_text,
            amount,
            currency: raw(Col::Currency),
            note: raw(Col::Note),
        }
    }
}

/// What the caller knows that the file does not.
#[derive(Default, Clone, Copy)]
pub struct ValidationOptions<'a> {
    /// Receiving bank names (5.1 `bankName`s); instapay rows must name one exactly.
    pub banks: Option<&'a HashSet<String>>,
    /// Why a reference may not be paid (an earlier run sent it), or `None` when it may.
    pub already_paid: Option<AlreadyPaid<'a>>,
}

impl fmt::Debug for ValidationOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationOptions")
            .field("banks", &self.banks.map(HashSet::len))
            .field("already_paid", &self.already_paid.is_some())
            .finish()
    }
}

/// The result of reading a payout file whose header was fine: its scan (counts, total, errors,
/// rejected lines, SHA-256; also reached through `Deref`) with the valid rows kept.
#[derive(Debug)]
pub struct PayoutFile {
    /// Valid rows, in file order.
    pub rows: Vec<PayoutRow>,
    pub scan: PayoutScan,
}

impl std::ops::Deref for PayoutFile {
    type Target = PayoutScan;
    fn deref(&self) -> &PayoutScan {
        &self.scan
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Reference,
    Channel,
    AccountNo,
    AccountName,
    MiddleName,
    LastName,
    Bank,
    Amount,
    Currency,
    Note,
}

impl Col {
    const ALL: [Col; 10] = [
        Col::Reference,
        Col::Channel,
        Col::AccountNo,
        Col::AccountName,
        Col::MiddleName,
        Col::LastName,
        Col::Bank,
        Col::Amount,
        Col::Currency,
        Col::Note,
    ];

    fn name(self) -> &'static str {
        COL_NAMES[self as usize]
    }

    /// Columns the header must have. `bank` is required per row (instapay), not per file: a
    /// starpay-only file may leave it out.
    fn required(self) -> bool {
        !matches!(
            self,
            Col::MiddleName | Col::Bank | Col::Currency | Col::Note
        )
    }
}

/// Column names in `Col` order, for the generic header parser.
const COL_NAMES: [&str; Col::ALL.len()] = [
    "reference",
    "channel",
    "account_no",
    "account_name",
    "middle_name",
    "last_name",
    "bank",
    "amount",
    "currency",
    "note",
];

/// What a streaming read of a payout file keeps: everything but the valid rows themselves,
/// which go to the caller one by one (so a file of any size is validated in bounded memory:
/// the references seen, for the duplicate check, and at most [`super::MAX_ERRORS`] errors).
#[derive(Debug)]
pub struct PayoutScan {
    /// How many rows are valid.
    pub valid_rows: u64,
    /// How many of them are InstaPay rows (which need Starpay's bank list).
    pub instapay_rows: u64,
    /// Row errors, in file order (a row may have several), capped.
    pub errors: ErrorList,
    /// The invalid lines with their fields, in file order, at most [`super::MAX_ERRORS`].
    pub rejected: Vec<RejectedLine>,
    /// Sum of the valid rows' amounts.
    pub total: Centavos,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

impl PayoutScan {
    pub fn is_valid(&self) -> bool {
        self.errors.count() == 0
    }
}

/// Reads and validates a payout file, keeping every valid row.
///
/// `Err` only when the file as a whole is unusable (cannot be read, empty, binary, wrong header,
/// no rows, total overflow). Otherwise every row is either in `rows` or has its errors in
/// `errors`, so `--skip-invalid` can report the rejected rows and send the rest.
pub fn read_payouts(path: &Path, opts: &ValidationOptions) -> Result<PayoutFile, InputError> {
    let mut rows = Vec::new();
    let scan = scan_payouts::<std::convert::Infallible>(path, opts, Duplicates::Check, |row| {
        rows.push(row);
        Ok(())
    })?;
    let Ok(scan) = scan;
    Ok(PayoutFile { rows, scan })
}

/// Whether a read of a payout file checks its references for duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    Check,
    /// Skip the only check whose memory grows with the file (every reference seen). Only for
    /// reading again a file already validated with `Check`: the caller must compare the
    /// SHA-256 with the validated one and refuse on any difference (the same bytes have the
    /// same duplicates, which validation found; `engine::prepare::RunRows::fill`).
    SkipRevalidated,
}

/// Reads and validates a payout file as [`read_payouts`] does, handing each valid row to
/// `sink` instead of keeping it. The outer `Err` is the file's (as [`read_payouts`]); the
/// inner one is the sink's, which stops the read.
pub fn scan_payouts<E>(
    path: &Path,
    opts: &ValidationOptions,
    duplicates: Duplicates,
    mut sink: impl FnMut(PayoutRow) -> Result<(), E>,
) -> Result<Result<PayoutScan, E>, InputError> {
    let required = |i: usize| Col::ALL[i].required();
    let (mut reader, header_line, header) = open_csv(path, &COL_NAMES, required)?;
    let io_err = |e| file_error(path, 0, Rule::Io(e));

    let mut v = Validator {
        file: path.to_path_buf(),
        opts,
        seen: HashMap::new(),
        check_duplicates: duplicates == Duplicates::Check,
        errors: ErrorList::default(),
        rejected: Vec::new(),
    };
    let (mut valid_rows, mut instapay_rows) = (0u64, 0u64);
    let mut total = Centavos::ZERO;
    let mut data_rows = 0u64;
    while let Some(rec) = reader.next_record(header.width).map_err(io_err)? {
        if rec.is_blank() {
            continue;
        }
        data_rows += 1;
        if let Some(row) = v.row(&header, &rec) {
            total = total
                .checked_add(row.amount)
                .ok_or_else(|| file_error(path, row.line, Rule::TotalOverflow))?;
            valid_rows += 1;
            instapay_rows += u64::from(row.channel == Channel::Instapay);
            if let Err(e) = sink(row) {
                return Ok(Err(e));
            }
        }
    }
    if data_rows == 0 {
        return Err(file_error(path, header_line, Rule::NoRows));
    }
    Ok(Ok(PayoutScan {
        valid_rows,
        instapay_rows,
        errors: v.errors,
        rejected: v.rejected,
        total,
        sha256: reader.into_inner().hex_digest(),
    }))
}

struct Validator<'o, 'a> {
    file: PathBuf,
    opts: &'o ValidationOptions<'a>,
    /// reference → first line it appeared on.
    seen: HashMap<Box<str>, u64>,
    check_duplicates: bool,
    errors: ErrorList,
    rejected: Vec<RejectedLine>,
}

impl Validator<'_, '_> {
    /// Validates one record; pushes its errors and returns the row only when it has none.
    ///
    /// Longer than ~100 lines on purpose: one check per column in the column order of the
    /// file format (README "Payout file"), so every rule of a line is in one place and every
    /// error of a line is found in one pass.
    fn row(&mut self, header: &Columns, rec: &RawRecord) -> Option<PayoutRow> {
        let line = rec.line;
        let mut errs: Vec<(Option<Col>, Rule)> = Vec::new();
        if let Err(rule) = header.field_count(rec) {
            errs.push((None, rule));
            self.flush(line, errs);
            self.reject(header, rec);
            return None;
        }

        let cells = header.cells(rec, |i, rule| errs.push((Some(Col::ALL[i]), rule)));
        let cell = |c: Col| cells[c as usize];
        let mut check = |c: Col, r: Result<Option<String>, Rule>| match r {
            Ok(v) => v,
            Err(rule) => {
                errs.push((Some(c), rule));
                None
            }
        };

        let reference = check(
            Col::Reference,
            text(cell(Col::Reference), true, REFERENCE_MAX_CHARS),
        );
        let channel = match cell(Col::Channel) {
            Cell::Value("") | Cell::Absent => {
                check(Col::Channel, Err(Rule::Missing));
                None
            }
            Cell::Value(s) => {
                let ch = Channel::parse(s);
                if ch.is_none() {
                    check(Col::Channel, Err(Rule::UnknownChannel(s.to_string())));
                }
                ch
            }
            Cell::Bad => None,
        };
        let account_no = check(Col::AccountNo, account_no(cell(Col::AccountNo)));
        let account_name = check(
            Col::AccountName,
            text(cell(Col::AccountName), true, NAME_MAX_CHARS),
        );
        let middle_name = check(
            Col::MiddleName,
            text(cell(Col::MiddleName), false, NAME_MAX_CHARS),
        );
        let last_name = check(
            Col::LastName,
            text(cell(Col::LastName), true, NAME_MAX_CHARS),
        );
        // Bank: required and checked for InstaPay only; for Starpay-to-Starpay it is ignored,
        // and for an unknown channel nothing sensible can be said about it.
        let bank = match channel {
            Some(Channel::Instapay) => {
                let b = check(Col::Bank, text(cell(Col::Bank), true, BANK_MAX_CHARS));
                match (b, self.opts.banks) {
                    (Some(b), Some(list)) if !list.contains(&b) => {
                        let suggestion = list.iter().find(|k| k.eq_ignore_ascii_case(&b)).cloned();
                        check(
                            Col::Bank,
                            Err(Rule::UnknownBank {
                                name: b,
                                suggestion,
                            }),
                        );
                        None
                    }
                    (b, _) => b,
                }
            }
            _ => None,
        };
        let amount = match cell(Col::Amount) {
            Cell::Value(s) => match amount(s, channel) {
                Ok(a) => Some(a),
                Err(rule) => {
                    check(Col::Amount, Err(rule));
                    None
                }
            },
            Cell::Absent => {
                check(Col::Amount, Err(Rule::Missing));
                None
            }
            Cell::Bad => None,
        };
        if let Cell::Value(c) = cell(Col::Currency) {
            if !c.is_empty() && !c.eq_ignore_ascii_case("PHP") {
                check(Col::Currency, Err(Rule::UnknownCurrency(c.to_string())));
            }
        }
        let note = check(Col::Note, text(cell(Col::Note), false, NOTE_MAX_CHARS));

        if let Some(r) = &reference {
            let first = if self.check_duplicates {
                self.seen.get(r.as_str()).copied()
            } else {
                None
            };
            match first {
                Some(first_line) => errs.push((
                    Some(Col::Reference),
                    Rule::DuplicateReference {
                        reference: r.clone(),
                        first_line,
                    },
                )),
                None if self.check_duplicates => {
                    self.seen.insert(r.as_str().into(), line);
                }
                None => {}
            }
            if let Some(reason) = self.opts.already_paid.and_then(|paid| paid(r)) {
                errs.push((
                    Some(Col::Reference),
                    Rule::AlreadyPaid {
                        reference: r.clone(),
                        reason,
                    },
                ));
            }
        }

        if !errs.is_empty() {
            self.flush(line, errs);
            self.reject(header, rec);
            return None;
        }
        Some(PayoutRow {
            line,
            reference: reference?,
            channel: channel?,
            account_no: account_no?,
            account_name: account_name?,
            middle_name: middle_name.unwrap_or_default(),
            last_name: last_name?,
            bank,
            amount: amount?,
            note: note.filter(|n| !n.is_empty()),
        })
    }

    /// Keeps the invalid line's fields (bounded like the error list).
    fn reject(&mut self, header: &Columns, rec: &RawRecord) {
        if self.rejected.len() < super::MAX_ERRORS {
            self.rejected.push(RejectedLine::from_record(header, rec));
        }
    }

    fn flush(&mut self, line: u64, errs: Vec<(Option<Col>, Rule)>) {
        for (col, rule) in errs {
            self.errors.push(InputError {
                file: self.file.clone(),
                line,
                column: col.map(|c| c.name().to_string()),
                rule,
            });
        }
    }
}

/// Reference §6 5.2 decision: 1–34 characters `[A-Za-z0-9]`. Never echoed in full.
fn account_no(cell: Cell<'_>) -> Result<Option<String>, Rule> {
    let v = match cell {
        Cell::Bad => return Ok(None),
        Cell::Absent | Cell::Value("") => return Err(Rule::Missing),
        Cell::Value(v) => v,
    };
    let len = v.chars().count();
    if len > ACCOUNT_NO_MAX_CHARS {
        return Err(Rule::TooLong {
            max: ACCOUNT_NO_MAX_CHARS,
            len,
        });
    }
    if let Some(bad) = v.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(Rule::BadCharacter {
            bad,
            allowed: "letters A-Z, a-z and digits 0-9",
        });
    }
    Ok(Some(v.to_string()))
}

/// Reference §12 rules 5 and 6: decimal text → centavos, > 0, ≤ the cap on InstaPay.
fn amount(s: &str, channel: Option<Channel>) -> Result<Centavos, Rule> {
    let a = positive_amount(s)?;
    if channel == Some(Channel::Instapay) && a > INSTAPAY_CAP {
        return Err(Rule::AboveInstapayCap(a));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    const HEADER: &str =
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n";

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    fn read(body: &str) -> PayoutFile {
        read_with(body, &ValidationOptions::default())
    }

    fn read_with(body: &str, opts: &ValidationOptions) -> PayoutFile {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "payouts.csv", body.as_bytes());
        read_payouts(&p, opts).unwrap()
    }

    /// The single error of a file with one bad row: (line, column, message).
    fn one_error(body: &str) -> (u64, Option<String>, String) {
        let f = read(body);
        assert_eq!(f.errors.len(), 1, "{}", f.errors.describe());
        let e = &f.errors[0];
        (e.line, e.column.clone(), e.rule.to_string())
    }

    fn ok_row(reference: &str, amount: &str) -> String {
        format!("{reference},instapay,001234567890,Juan,Santos,Dela Cruz,BDO Unibank Inc.,{amount},PHP,salary\n")
    }

    #[test]
    fn reads_a_good_file() {
        let body = format!(
            "{HEADER}{}{}R3,STARPAY,09171234567,Maria,,Reyes,,\"1,500.50\",,\n",
            ok_row("R1", "1500"),
            ok_row("R2", "2500.5"),
        );
        let f = read(&body);
        assert!(f.is_valid(), "{}", f.errors.describe());
        assert_eq!(f.rows.len(), 3);
        assert_eq!(f.total, Centavos::new(150_000 + 250_050 + 150_050));
        let r3 = &f.rows[2];
        assert_eq!(r3.line, 4);
        assert_eq!(r3.channel, Channel::Starpay);
        assert_eq!(r3.bank, None);
        assert_eq!(r3.middle_name, "");
        assert_eq!(r3.note, None);
        assert_eq!(r3.amount, Centavos::new(150_050));
        let r1 = &f.rows[0];
        assert_eq!(r1.bank.as_deref(), Some("BDO Unibank Inc."));
        assert_eq!(r1.note.as_deref(), Some("salary"));
        assert_eq!(f.sha256.len(), 64);
        assert!(!format!("{r1:?}").contains("001234567890"));
    }

    #[test]
    fn bom_crlf_and_column_order() {
        let body = "\u{FEFF}Amount,Reference,CHANNEL,account_no,account_name,last_name,bank\r\n\
                    \"12,000.00\",A-1,instapay,123,Ana,Cruz,GCash\r\n\r\n\
                    7,A-2,instapay,456,Ben,Lim,Maya\r\n";
        let f = read(body);
        assert!(f.is_valid(), "{}", f.errors.describe());
        assert_eq!(
            f.rows
                .iter()
                .map(|r| (r.line, r.amount.get()))
                .collect::<Vec<_>>(),
            vec![(2, 1_200_000), (4, 700)]
        );
        assert_eq!(f.rows[0].reference, "A-1");
    }

    #[test]
    fn sha256_is_of_the_file_bytes() {
        let body = format!("{HEADER}{}", ok_row("R1", "1"));
        let f = read(&body);
        use sha2::Digest;
        let want: String = sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(f.sha256, want);
    }

    #[test]
    fn rejected_lines_keep_their_fields() {
        let f = read(&format!(
            "{HEADER}R1,instapay,0917,Juan,,Cruz,GCash,12.345,PHP,x\n\
             R2,paypal,0918,Ana,M,Reyes,GCash,\"1,250.50\",usd,y\n\
             R3,instapay,0919,Leo,,Luna,GCash,100,PHP,ok\n\
             R4,instapay\n"
        ));
        assert_eq!(f.rows.len(), 1);
        let lines: Vec<u64> = f.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 5]);
        let r = &f.rejected[0];
        assert_eq!(
            (r.reference.as_str(), r.amount_text.as_str()),
            ("R1", "12.345")
        );
        assert_eq!(r.amount, None, "does not parse");
        let r = &f.rejected[1];
        assert_eq!((r.channel.as_str(), r.currency.as_str()), ("paypal", "usd"));
        assert_eq!(r.amount, Some(Centavos::new(125_050)));
        assert_eq!(r.middle_name, "M");
        // A short line keeps what it had.
        let r = &f.rejected[2];
        assert_eq!(
            (r.reference.as_str(), r.channel.as_str()),
            ("R4", "instapay")
        );
        assert_eq!(r.account_no, "");
    }

    #[test]
    fn each_value_rule() {
        // A valid line with one column replaced: (column, value, what the error must say).
        let columns: Vec<&str> = HEADER.trim_end().split(',').collect();
        let with = |column: &str, value: &str| {
            let mut fields = ["R", "instapay", "1", "A", "", "B", "GCash", "1", "", ""];
            let at = columns.iter().position(|c| *c == column).unwrap();
            fields[at] = value;
            format!("{HEADER}{}\n", fields.join(","))
        };
        let (long65, long35, long129, long93) = (
            "x".repeat(65),
            "1".repeat(35),
            "b".repeat(129),
            "n".repeat(93),
        );
        let table: Vec<(&str, &str, &str)> = vec![
            ("reference", "", "required value is empty"),
            ("reference", &long65, "longer than 64 characters (65)"),
            ("reference", "R\u{7}", "control character"),
            ("channel", "", "required value is empty"),
            ("channel", "pesonet", "unknown channel \"pesonet\""),
            ("account_no", "", "required value is empty"),
            ("account_no", &long35, "longer than 34 characters (35)"),
            ("account_no", "0012-3456", "contains '-'"),
            ("account_name", "", "required value is empty"),
            ("account_name", &long65, "longer than 64"),
            ("middle_name", &long65, "longer than 64"),
            ("last_name", "", "required value is empty"),
            ("bank", "", "required value is empty"),
            ("bank", &long129, "longer than 128"),
            ("currency", "USD", "unknown currency \"USD\""),
            ("note", &long93, "longer than 92 characters (93)"),
        ];
        let amounts = [
            ("", "required value is empty"),
            ("0", "greater than zero (\"0\")"),
            ("-5", "greater than zero (\"-5\")"),
            ("12.345", "more than 2 decimal places (\"12.345\")"),
            ("12abc", "not a number"),
            ("1e3", "not a number"),
            ("99999999999999999999", "too large"),
            ("50000.01", "PHP 50000.01 is above the InstaPay limit"),
        ];
        let amounts = amounts.into_iter().map(|(v, m)| ("amount", v, m));
        let cases = table
            .into_iter()
            .chain(amounts)
            .map(|(col, value, msg)| (with(col, value), col, msg));
        for (body, col, msg) in cases {
            let (line, column, text) = one_error(&body);
            assert_eq!(line, 2, "{body}");
            assert_eq!(column.as_deref(), Some(col), "{body}: {text}");
            assert!(
                text.contains(msg),
                "{col}: {text:?} does not contain {msg:?}"
            );
        }
    }

    #[test]
    fn cap_is_inclusive_and_starpay_has_none() {
        let body = format!(
            "{HEADER}{}R2,starpay,0917,A,,B,,\"75,000\",,\n",
            ok_row("R1", "\"50,000.00\"")
        );
        let f = read(&body);
        assert!(f.is_valid(), "{}", f.errors.describe());
        assert_eq!(f.total, Centavos::new(12_500_000));
    }

    #[test]
    fn php_currency_any_case_and_names_with_enye() {
        let body = format!("{HEADER}R1,instapay,1,José,Ñino,Peñafiel,GCash,1,php,\n");
        let f = read(&body);
        assert!(f.is_valid(), "{}", f.errors.describe());
        assert_eq!(f.rows[0].middle_name, "Ñino");
    }

    #[test]
    fn bank_list_is_checked_for_instapay_only() {
        let banks: HashSet<String> = ["GCash".to_string(), "Maya".to_string()].into();
        let opts = ValidationOptions {
            banks: Some(&banks),
            already_paid: None,
        };
        let body = format!(
            "{HEADER}R1,instapay,1,A,,B,gcash,1,,\nR2,starpay,1,A,,B,Nowhere Bank,1,,\nR3,instapay,1,A,,B,Maya,1,,\n"
        );
        let f = read_with(&body, &opts);
        assert_eq!(f.rows.len(), 2);
        assert_eq!(f.errors.len(), 1);
        assert_eq!(
            f.errors[0].to_string().rsplit_once(".csv: ").unwrap().1,
            "line 2, column bank: bank \"gcash\" is not in the list of receiving banks (did you mean \"GCash\"?)"
        );
    }

    #[test]
    fn duplicates_name_both_lines_and_already_paid_is_asked() {
        let paid = |r: &str| {
            (r == "OLD-1").then(|| format!("reference {r:?} is SUCCESS in run 1 (line 2)"))
        };
        let opts = ValidationOptions {
            banks: None,
            already_paid: Some(&paid),
        };
        let body = format!(
            "{HEADER}{}{}{}",
            ok_row("R1", "1"),
            ok_row("OLD-1", "1"),
            ok_row("R1", "2")
        );
        let f = read_with(&body, &opts);
        assert_eq!(f.rows.len(), 1);
        let msgs: Vec<String> = f.errors.iter().map(ToString::to_string).collect();
        assert!(msgs[0].ends_with(
            "line 3, column reference: reference \"OLD-1\" is SUCCESS in run 1 (line 2)"
        ));
        assert!(msgs[1].ends_with("line 4, column reference: reference \"R1\" is also on line 2"));
    }

    #[test]
    fn all_row_errors_are_collected_and_capped() {
        let mut body = String::from(HEADER);
        for i in 0..1200 {
            body.push_str(&format!("R{i},instapay,1,A,,B,GCash,1.001,EUR,\n"));
        }
        body.push_str(&ok_row("GOOD", "5"));
        let f = read(&body);
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.errors.len(), super::super::MAX_ERRORS);
        assert_eq!(f.errors.omitted(), 2400 - super::super::MAX_ERRORS);
        assert!(f.errors.describe().ends_with("… and 1400 more errors"));
        // Two errors on the first row, in column order.
        assert_eq!(f.errors[0].column.as_deref(), Some("amount"));
        assert_eq!(f.errors[1].column.as_deref(), Some("currency"));
    }

    #[test]
    fn wrong_field_count_is_one_error_without_column() {
        let body = format!("{HEADER}R1,instapay,1,A,,B,GCash,1,PHP\n");
        let (line, column, msg) = one_error(&body);
        assert_eq!((line, column), (2, None));
        assert!(msg.contains("9 fields but the header has 10"), "{msg}");
    }

    #[test]
    fn blank_rows_are_skipped_and_lines_stay_physical() {
        let body = format!("{HEADER},,,,,,,,,\n\n   \n{}", ok_row("R1", "x"));
        let (line, column, _) = one_error(&body);
        assert_eq!((line, column.as_deref()), (5, Some("amount")));
    }

    #[test]
    fn header_errors_name_missing_unknown_and_duplicate_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "h.csv",
            b"reference,channel,account_no,account_name,last_name,ammount,note,note,\nx\n",
        );
        let e = read_payouts(&p, &ValidationOptions::default()).unwrap_err();
        assert_eq!(e.line, 1);
        let msg = e.to_string();
        assert!(msg.contains("missing required column(s): amount"), "{msg}");
        assert!(
            msg.contains("\"ammount\" (did you mean \"amount\"?)"),
            "{msg}"
        );
        assert!(msg.contains("a column with no name"), "{msg}");
        assert!(msg.contains("named twice: note"), "{msg}");
    }

    #[test]
    fn starpay_only_file_may_omit_bank_but_instapay_rows_then_fail() {
        let body = "reference,channel,account_no,account_name,last_name,amount\n\
                    R1,starpay,1,A,B,10\nR2,instapay,2,A,B,10\n";
        let (line, column, msg) = one_error(body);
        assert_eq!((line, column.as_deref()), (3, Some("bank")));
        assert_eq!(msg, "required value is empty");
    }

    #[test]
    fn non_utf8_value_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = HEADER.as_bytes().to_vec();
        bytes.extend(b"R1,instapay,1,Jos\xe9,,B,GCash,1,,\n");
        let p = write(&dir, "latin1.csv", &bytes);
        let f = read_payouts(&p, &ValidationOptions::default()).unwrap();
        assert_eq!(f.errors.len(), 1);
        let e = &f.errors[0];
        assert_eq!((e.line, e.column.as_deref()), (2, Some("account_name")));
        assert!(matches!(e.rule, Rule::NotUtf8));
    }
}
