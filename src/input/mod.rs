//! CSV input files, one reader per job kind (`payout`).
//!
//! Owns: reading CSV bytes into records with their physical line numbers, bounded in memory, and
//! the error type every input rule reports through ([`InputError`] = file + line + column +
//! [`Rule`]). Must not: know about HTTP, SQLite or Starpay's wire format; it yields validated
//! domain values (`Centavos`, trimmed strings) and leaves sending to the engine.
//!
//! Invariants:
//! - Line numbers are physical lines of the file, the header being line 1; a record that spans
//!   several lines (a quoted field with a newline) is reported at the line it starts on.
//! - Memory is bounded per record: a field longer than [`MAX_FIELD_BYTES`] is reported as
//!   [`Rule::FieldTooLarge`] and skipped without being buffered, and a record keeps at most as
//!   many fields as its header (extra fields are only counted). A 10 GB single-line file costs
//!   64 KiB, not 10 GB.
//! - Every row error is collected (up to [`MAX_ERRORS`], then only counted); a reader fails as
//!   a whole (`Err`) only for file-level problems: unreadable, empty, binary, bad header, no rows.
//! - The file's SHA-256 is computed while reading, in the same single pass.
//!
//! Accepted text: UTF-8 with or without a byte-order mark, LF or CRLF line ends, `"` quoting
//! with `""` escapes (RFC 4180). Blank lines and rows whose every field is empty (spreadsheet
//! left-overs such as `,,,,`) are skipped: they carry no payment.

pub mod payout;
pub mod recon;

pub use payout::{
    read_payouts, scan_payouts, Channel, Duplicates, PayoutFile, PayoutRow, PayoutScan,
    ValidationOptions,
};

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::domain::money::MoneyError;
use crate::domain::Centavos;

/// Longest accepted field, in bytes. Far above any legitimate value (the longest Starpay field is
/// 256 characters); it only exists so a corrupt file cannot make us buffer gigabytes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Error list cap: after this many, further errors are only counted (see [`ErrorList`]).
pub const MAX_ERRORS: usize = 1000;
/// Most columns a header may have; a wider "header" is not one of our files.
pub const MAX_COLUMNS: usize = 64;
/// Read buffer size.
const CHUNK: usize = 64 * 1024;

/// One broken rule, with where it was broken.
///
/// Displays as `payouts.csv: line 7, column amount: more than 2 decimal places ("12.345")`.
/// `line` is 0 only when no line applies (the file could not be opened).
#[derive(Debug)]
pub struct InputError {
    pub file: PathBuf,
    pub line: u64,
    pub column: Option<String>,
    pub rule: Rule,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        match (self.line, &self.column) {
            (0, None) => {}
            (0, Some(c)) => write!(f, " column {c}:")?,
            (l, None) => write!(f, " line {l}:")?,
            (l, Some(c)) => write!(f, " line {l}, column {c}:")?,
        }
        write!(f, " {}", self.rule)
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.rule)
    }
}

/// The rules an input file can break. File-level rules come first, then the shape of a row,
/// then the values. Messages never echo a full account number (STYLE.md §9).
#[derive(Debug, thiserror::Error)]
pub enum Rule {
    // ---- the file as a whole: nothing is read from it.
    #[error("cannot read the file: {0}")]
    Io(#[source] io::Error),
    #[error("the file is empty (expected a header line and at least one row)")]
    EmptyFile,
    #[error("not a CSV text file ({0}); save it as \"CSV UTF-8\"")]
    Binary(&'static str),
    #[error("wrong header: {0}")]
    BadHeader(Box<HeaderProblems>),
    #[error("the header has {found} columns; at most {max} are possible")]
    TooManyColumns { found: usize, max: usize },
    #[error("the file has a header but no rows")]
    NoRows,
    #[error("the total of the amounts does not fit in 64 bits")]
    TotalOverflow,

    // ---- the shape of a row.
    #[error("not valid UTF-8 text; save the file as \"CSV UTF-8\"")]
    NotUtf8,
    #[error("field is longer than {limit} bytes")]
    FieldTooLarge { limit: usize },
    #[error("the row has {found} fields but the header has {expected} (a stray comma or quote?)")]
    FieldCount { expected: usize, found: usize },

    // ---- values.
    #[error("required value is empty")]
    Missing,
    #[error("not a number like 1500, 1500.5 or \"1,500.50\" ({0:?})")]
    NotANumber(String),
    #[error("more than 2 decimal places ({0:?})")]
    TooManyDecimals(String),
    #[error("amount must be greater than zero ({0:?})")]
    AmountNotPositive(String),
    #[error("amount is too large ({0:?})")]
    AmountTooLarge(String),
    #[error("PHP {0} is above the InstaPay limit of PHP 50,000.00 per transfer (rows are never split automatically)")]
    AboveInstapayCap(Centavos),
    #[error("unknown channel {0:?} (expected instapay or starpay)")]
    UnknownChannel(String),
    #[error("unknown currency {0:?} (only PHP, or leave it empty)")]
    UnknownCurrency(String),
    #[error("longer than {max} characters ({len})")]
    TooLong { max: usize, len: usize },
    #[error("contains {bad:?}; only {allowed} are allowed")]
    BadCharacter { bad: char, allowed: &'static str },
    #[error("contains a control character ({0:?})")]
    ControlCharacter(char),
    #[error("bank {name:?} is not in the list of receiving banks{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownBank {
        name: String,
        suggestion: Option<String>,
    },
    #[error("reference {reference:?} is also on line {first_line}")]
    DuplicateReference { reference: String, first_line: u64 },
    /// A reference used by an earlier run; the text says how and what to do.
    #[error("{reason}")]
    AlreadyPaid { reference: String, reason: String },
    #[error("either ref_no or original_msg_id is required")]
    NoLookupKey,
    #[error("unknown state {0:?} (expected SUCCESS, FAIL, REVERSED, PROCESSING, CLOSE or CANCEL)")]
    UnknownState(String),
}

/// What is wrong with a header (boxed in [`Rule::BadHeader`] to keep errors small).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderProblems {
    /// Required columns that are absent.
    pub missing: Vec<String>,
    /// Columns we do not know, each with the known name it most resembles.
    pub unknown: Vec<(String, Option<&'static str>)>,
    /// Columns named twice.
    pub duplicate: Vec<String>,
}

impl fmt::Display for HeaderProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let HeaderProblems {
            missing,
            unknown,
            duplicate,
        } = self;
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!(
                "missing required column(s): {}",
                missing.join(", ")
            ));
        }
        if !unknown.is_empty() {
            let names: Vec<String> = unknown
                .iter()
                .map(|(name, hint)| match (name.is_empty(), hint) {
                    (true, _) => "a column with no name (a trailing comma?)".to_string(),
                    (false, Some(h)) => format!("{name:?} (did you mean {h:?}?)"),
                    (false, None) => format!("{name:?}"),
                })
                .collect();
            parts.push(format!("unknown column(s): {}", names.join(", ")));
        }
        if !duplicate.is_empty() {
            parts.push(format!("column(s) named twice: {}", duplicate.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// One error per line, then "… and N more errors" when the list was capped.
pub(crate) fn describe_errors(errors: &[InputError], omitted: usize) -> String {
    let mut out: Vec<String> = errors.iter().map(ToString::to_string).collect();
    if omitted > 0 {
        out.push(format!("… and {omitted} more errors"));
    }
    out.join("\n")
}

/// An error about the file as a whole (no column).
pub(crate) fn file_error(path: &std::path::Path, line: u64, rule: Rule) -> InputError {
    InputError {
        file: path.to_path_buf(),
        line,
        column: None,
        rule,
    }
}

/// Opens a CSV input: refuses binary files, skips leading blank lines, and returns the record
/// reader (hashing everything it reads) with the header's line and its columns mapped onto
/// `names`.
pub(crate) fn open_csv(
    path: &std::path::Path,
    names: &[&'static str],
    required: impl Fn(usize) -> bool,
) -> Result<(CsvRecords<HashingReader<std::fs::File>>, u64, Columns), InputError> {
    let io_err = |e| file_error(path, 0, Rule::Io(e));
    let f = std::fs::File::open(path).map_err(io_err)?;
    let mut reader = CsvRecords::new(HashingReader::new(f)).map_err(io_err)?;
    if let Some(why) = reader.binary() {
        return Err(file_error(path, 1, Rule::Binary(why)));
    }
    let header = loop {
        match reader.next_record(MAX_COLUMNS).map_err(io_err)? {
            None => return Err(file_error(path, 1, Rule::EmptyFile)),
            Some(r) if r.is_blank() => continue,
            Some(r) => break r,
        }
    };
    let columns = Columns::parse(&header, names, required)
        .map_err(|rule| file_error(path, header.line, rule))?;
    Ok((reader, header.line, columns))
}

/// Which field index holds which named column (any order, names case-insensitive).
pub(crate) struct Columns {
    pub(crate) index: Vec<Option<usize>>,
    pub(crate) width: usize,
}

impl Columns {
    /// A record whose field count is not the header's: its fields would be misaligned, so
    /// checking their values would only add noise.
    pub(crate) fn field_count(&self, rec: &RawRecord) -> Result<(), Rule> {
        if rec.count == self.width {
            return Ok(());
        }
        Err(Rule::FieldCount {
            expected: self.width,
            found: rec.count,
        })
    }

    /// Maps a header record onto `names`; unknown, duplicate and missing required columns are
    /// one `BadHeader` error (an unknown column gets a "did you mean" hint).
    pub(crate) fn parse(
        rec: &RawRecord,
        names: &[&'static str],
        required: impl Fn(usize) -> bool,
    ) -> Result<Columns, Rule> {
        if rec.count > MAX_COLUMNS {
            return Err(Rule::TooManyColumns {
                found: rec.count,
                max: MAX_COLUMNS,
            });
        }
        let mut index = vec![None; names.len()];
        let mut unknown = Vec::new();
        let mut duplicate = Vec::new();
        for (i, f) in rec.fields.iter().enumerate() {
            let RawField::Bytes(bytes) = f else {
                return Err(Rule::FieldTooLarge {
                    limit: MAX_FIELD_BYTES,
                });
            };
            let name = std::str::from_utf8(bytes)
                .map_err(|_| Rule::NotUtf8)?
                .trim()
                .to_ascii_lowercase();
            match names.iter().position(|c| *c == name) {
                Some(c) if index[c].is_some() => duplicate.push(name),
                Some(c) => index[c] = Some(i),
                None => {
                    let hint = names
                        .iter()
                        .copied()
                        .filter(|known| !name.is_empty() && edit_distance(&name, known) <= 2)
                        .min_by_key(|known| edit_distance(&name, known));
                    unknown.push((name, hint));
                }
            }
        }
        let missing: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| required(*i) && index[*i].is_none())
            .map(|(_, n)| n.to_string())
            .collect();
        if missing.is_empty() && unknown.is_empty() && duplicate.is_empty() {
            Ok(Columns {
                index,
                width: rec.count,
            })
        } else {
            Err(Rule::BadHeader(Box::new(HeaderProblems {
                missing,
                unknown,
                duplicate,
            })))
        }
    }

    /// Decodes a record's cells in column order; undecodable or oversized cells are reported
    /// through `on_error(column index, rule)` and come back as `Cell::Bad`.
    pub(crate) fn cells<'r>(
        &self,
        rec: &'r RawRecord,
        mut on_error: impl FnMut(usize, Rule),
    ) -> Vec<Cell<'r>> {
        self.index
            .iter()
            .enumerate()
            .map(|(col, idx)| {
                let Some(i) = idx else { return Cell::Absent };
                match rec.fields.get(*i) {
                    Some(RawField::Bytes(b)) => match std::str::from_utf8(b) {
                        Ok(s) => Cell::Value(s.trim()),
                        Err(_) => {
                            on_error(col, Rule::NotUtf8);
                            Cell::Bad
                        }
                    },
                    Some(RawField::TooLarge) => {
                        on_error(
                            col,
                            Rule::FieldTooLarge {
                                limit: MAX_FIELD_BYTES,
                            },
                        );
                        Cell::Bad
                    }
                    None => Cell::Absent,
                }
            })
            .collect()
    }
}

/// A cell after decoding.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cell<'a> {
    /// The column is not in the file.
    Absent,
    /// Undecodable or too large; already reported.
    Bad,
    /// Trimmed text.
    Value(&'a str),
}

/// Free text: `required` → non-empty; at most `max` characters; no control characters.
/// `Ok(None)` when the column is absent or (optional and) empty.
pub(crate) fn text(cell: Cell<'_>, required: bool, max: usize) -> Result<Option<String>, Rule> {
    let v = match cell {
        Cell::Bad => return Ok(None),
        Cell::Absent | Cell::Value("") if required => return Err(Rule::Missing),
        Cell::Absent => return Ok(None),
        Cell::Value(v) => v,
    };
    let len = v.chars().count();
    if len > max {
        return Err(Rule::TooLong { max, len });
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(Rule::ControlCharacter(c));
    }
    Ok(Some(v.to_string()))
}

/// Reference §12 rule 5: decimal PHP text → centavos, > 0, never through floating point.
pub(crate) fn positive_amount(s: &str) -> Result<Centavos, Rule> {
    let a = Centavos::parse_php(s).map_err(|e| match e {
        MoneyError::Empty => Rule::Missing,
        MoneyError::Invalid(v) => Rule::NotANumber(v),
        MoneyError::TooManyDecimals(v) => Rule::TooManyDecimals(v),
        MoneyError::Overflow(v) => Rule::AmountTooLarge(v),
    })?;
    if !a.is_positive() {
        return Err(Rule::AmountNotPositive(s.to_string()));
    }
    Ok(a)
}

/// A file's row errors: kept up to [`MAX_ERRORS`], then only counted. Reads as the slice of
/// the errors kept.
#[derive(Debug, Default)]
pub struct ErrorList {
    pub(crate) errors: Vec<InputError>,
    pub(crate) omitted: usize,
}

impl std::ops::Deref for ErrorList {
    type Target = [InputError];
    fn deref(&self) -> &[InputError] {
        &self.errors
    }
}

impl<'a> IntoIterator for &'a ErrorList {
    type Item = &'a InputError;
    type IntoIter = std::slice::Iter<'a, InputError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl ErrorList {
    /// Errors found beyond the cap (counted, not kept).
    pub fn omitted(&self) -> usize {
        self.omitted
    }

    /// Every error found, kept or not.
    pub fn count(&self) -> usize {
        self.errors.len() + self.omitted
    }

    /// One error per line, then "… and N more errors" when the list was capped.
    pub fn describe(&self) -> String {
        describe_errors(&self.errors, self.omitted)
    }

    pub(crate) fn push(&mut self, e: InputError) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else {
            self.omitted += 1;
        }
    }
}

/// Hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Lower-case hex SHA-256 of all bytes read so far.
    pub(crate) fn hex_digest(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// One field as read: its bytes (not yet decoded), or the fact that it was too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawField {
    Bytes(Vec<u8>),
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    /// Physical line the record starts on (1-based).
    pub(crate) line: u64,
    /// At most `max_fields` fields.
    pub(crate) fields: Vec<RawField>,
    /// How many fields the record really had.
    pub(crate) count: usize,
}

impl RawRecord {
    /// A record with nothing in it (`,,,`, or spaces only): spreadsheet left-overs.
    pub(crate) fn is_blank(&self) -> bool {
        self.count == self.fields.len()
            && self.fields.iter().all(|f| match f {
                RawField::Bytes(b) => b.iter().all(u8::is_ascii_whitespace),
                RawField::TooLarge => false,
            })
    }
}

/// A CSV record reader on `csv_core` with bounded buffers and physical line numbers.
///
/// Why not `csv::Reader`: it buffers a whole record however long it is, and it cannot say which
/// field of a huge record was too long. Here the output buffer is fixed ([`MAX_FIELD_BYTES`]),
/// so an oversized field is skipped chunk by chunk and named.
pub(crate) struct CsvRecords<R> {
    src: R,
    core: csv_core::Reader,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Physical line of `buf[pos]`.
    line: u64,
    /// Field output buffer; one byte more than the limit so a field of exactly the limit fits.
    out: Box<[u8]>,
    /// Why the start of the file does not look like text, if it does not.
    binary: Option<&'static str>,
}

impl<R: Read> CsvRecords<R> {
    /// Reads the first chunk, strips a UTF-8 BOM, and sniffs for binary content.
    pub(crate) fn new(src: R) -> io::Result<Self> {
        let mut r = CsvRecords {
            src,
            core: csv_core::Reader::new(),
            buf: vec![0; CHUNK].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            line: 1,
            out: vec![0; MAX_FIELD_BYTES + 1].into_boxed_slice(),
            binary: None,
        };
        // Fill the first chunk as far as the source allows, so the BOM and the sniff see
        // enough bytes even from a reader that returns them one at a time.
        while r.len < r.buf.len() {
            match r.src.read(&mut r.buf[r.len..]) {
                Ok(0) => {
                    r.eof = true;
                    break;
                }
                Ok(n) => r.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let head = &r.buf[..r.len];
        if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
            r.binary = Some("it is UTF-16 text");
        } else if head.contains(&0) {
            r.binary = Some("it contains NUL bytes, so it is binary data");
        }
        if head.starts_with(b"\xEF\xBB\xBF") {
            r.pos = 3;
        }
        Ok(r)
    }

    pub(crate) fn binary(&self) -> Option<&'static str> {
        self.binary
    }

    /// The source, e.g. to finish a hash once every record was read.
    pub(crate) fn into_inner(self) -> R {
        self.src
    }

    /// Makes `buf[pos..len]` non-empty unless the source is exhausted.
    fn fill(&mut self) -> io::Result<()> {
        while self.pos == self.len && !self.eof {
            match self.src.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next record, keeping at most `max_fields` of its fields. Blank lines are skipped.
    pub(crate) fn next_record(&mut self, max_fields: usize) -> io::Result<Option<RawRecord>> {
        // Skip line ends between records ourselves, so the record's line is the line of its
        // first byte (csv_core would skip them too, but we would not know where it started).
        // csv_core is between records here, where a skipped terminator byte changes nothing.
        loop {
            self.fill()?;
            if self.pos == self.len {
                return Ok(None);
            }
            match self.buf[self.pos] {
                b'\n' => self.line += 1,
                b'\r' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let line = self.line;
        let mut fields = Vec::new();
        let mut count = 0usize;
        let mut flen = 0usize;
        let mut too_large = false;
        loop {
            self.fill()?;
            let input = &self.buf[self.pos..self.len];
            let (res, nin, nout) = self.core.read_field(input, &mut self.out[flen..]);
            self.line += input[..nin].iter().filter(|&&b| b == b'\n').count() as u64;
            self.pos += nin;
            flen += nout;
            match res {
                csv_core::ReadFieldResult::InputEmpty => {}
                csv_core::ReadFieldResult::OutputFull => {
                    // Drop what we have and keep consuming the field into the same buffer.
                    too_large = true;
                    flen = 0;
                }
                csv_core::ReadFieldResult::Field { record_end } => {
                    if count < max_fields {
                        fields.push(if too_large {
                            RawField::TooLarge
                        } else {
                            RawField::Bytes(self.out[..flen].to_vec())
                        });
                    }
                    count += 1;
                    flen = 0;
                    too_large = false;
                    if record_end {
                        return Ok(Some(RawRecord {
                            line,
                            fields,
                            count,
                        }));
                    }
                }
                csv_core::ReadFieldResult::End => {
                    return Ok((count > 0).then_some(RawRecord {
                        line,
                        fields,
                        count,
                    }));
                }
            }
        }
    }
}

/// Edit distance, for "did you mean" hints on column names (short strings only).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(data: &[u8]) -> Vec<(u64, Vec<String>)> {
        let mut r = CsvRecords::new(data).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record(16).unwrap() {
            let fields = rec
                .fields
                .iter()
                .map(|f| match f {
                    RawField::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    RawField::TooLarge => "<too large>".into(),
                })
                .collect();
            out.push((rec.line, fields));
        }
        out
    }

    fn row(line: u64, fields: &[&str]) -> (u64, Vec<String>) {
        (line, fields.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn physical_lines_with_lf_crlf_blank_lines_and_multiline_fields() {
        let want = vec![
            row(1, &["a", "b"]),
            row(2, &["1", "2"]),
            row(4, &["x\ny", "3"]),
            row(6, &["4", "5"]),
        ];
        assert_eq!(records(b"a,b\n1,2\n\n\"x\ny\",3\n4,5"), want);
        assert_eq!(records(b"a,b\r\n1,2\r\n\r\n\"x\ny\",3\r\n4,5\r\n"), want);
        assert_eq!(
            records(b"\xEF\xBB\xBFa,b\r\n1,2\r\n\r\n\"x\ny\",3\r\n4,5\r\n\r\n"),
            want
        );
    }

    #[test]
    fn quoted_commas_and_escaped_quotes() {
        assert_eq!(
            records(b"\"1,500.50\",\"say \"\"hi\"\"\"\n"),
            vec![row(1, &["1,500.50", "say \"hi\""])]
        );
    }

    #[test]
    fn oversized_field_is_named_and_skipped_without_buffering() {
        let mut data = b"a,b\n1,".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_FIELD_BYTES + 1));
        data.extend(b"\n2,");
        data.extend(std::iter::repeat_n(b'y', MAX_FIELD_BYTES));
        data.extend(b"\n3,4\n");
        let got = records(&data);
        assert_eq!(got[1], row(2, &["1", "<too large>"]));
        assert_eq!(got[2].1[1].len(), MAX_FIELD_BYTES);
        assert_eq!(got[3], row(4, &["3", "4"]));
    }

    #[test]
    fn extra_fields_are_counted_not_kept() {
        let mut r = CsvRecords::new(&b"1,2,3,4,5\n"[..]).unwrap();
        let rec = r.next_record(2).unwrap().unwrap();
        assert_eq!((rec.fields.len(), rec.count), (2, 5));
    }

    #[test]
    fn sniffs_binary_and_utf16() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(CsvRecords::new(&png[..]).unwrap().binary().is_some());
        let utf16 = b"\xFF\xFEr\0e\0f\0";
        assert!(CsvRecords::new(&utf16[..])
            .unwrap()
            .binary()
            .unwrap()
            .contains("UTF-16"));
        assert!(CsvRecords::new(&b"a,b\n"[..]).unwrap().binary().is_none());
    }

    #[test]
    fn hashes_what_it_reads() {
        let mut h = HashingReader::new(&b"abc"[..]);
        let mut sink = Vec::new();
        h.read_to_end(&mut sink).unwrap();
        assert_eq!(
            h.hex_digest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn error_display_names_file_line_and_column() {
        let e = InputError {
            file: PathBuf::from("payouts.csv"),
            line: 7,
            column: Some("amount".into()),
            rule: Rule::TooManyDecimals("12.345".into()),
        };
        assert_eq!(
            e.to_string(),
            "payouts.csv: line 7, column amount: more than 2 decimal places (\"12.345\")"
        );
    }

    #[test]
    fn edit_distance_table() {
        assert_eq!(edit_distance("ammount", "amount"), 1);
        assert_eq!(edit_distance("acount_no", "account_no"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
