//! Table-driven black-box tests of the payout CSV reader over malformed files on disk.
//!
//! Each case writes one file to a fresh temp dir and states where the error must point: the
//! physical line and, for value rules, the column. Guards STYLE.md §2 (errors name file, line
//! and column) and the memory bound on huge fields.

use std::collections::HashSet;
use std::path::Path;

use starpay_batch::domain::Centavos;
use starpay_batch::input::{read_payouts, PayoutFile, ValidationOptions};

const HEADER: &str =
    "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n";
const GOOD: &str = "OK-1,instapay,0012345678,Juan,Santos,Dela Cruz,GCash,1500,PHP,ok\n";

/// Where the error must be.
enum Want {
    /// `read_payouts` fails as a whole, at this line, with this text in the message.
    File { line: u64, text: &'static str },
    /// The file reads; among its row errors is one at (line, column) with this text.
    Row {
        line: u64,
        column: Option<&'static str>,
        text: &'static str,
    },
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

fn row(line: &str) -> Vec<u8> {
    format!("{HEADER}{GOOD}{line}\n").into_bytes()
}

fn row_err(name: &'static str, line: &str, column: &'static str, text: &'static str) -> Case {
    Case {
        name,
        bytes: row(line),
        want: Want::Row {
            line: 3,
            column: Some(column),
            text,
        },
    }
}

fn cases() -> Vec<Case> {
    let long = |n: usize| "x".repeat(n);
    let mut cases = vec![
        // ---- one per value rule; the bad row is always on line 3.
        row_err(
            "missing reference",
            ",instapay,1,A,,B,GCash,1,,",
            "reference",
            "required value is empty",
        ),
        row_err(
            "missing amount",
            "R,instapay,1,A,,B,GCash,,,",
            "amount",
            "required value is empty",
        ),
        row_err(
            "zero amount",
            "R,instapay,1,A,,B,GCash,0.00,,",
            "amount",
            "greater than zero",
        ),
        row_err(
            "negative amount",
            "R,instapay,1,A,,B,GCash,-10,,",
            "amount",
            "greater than zero",
        ),
        row_err(
            "three decimals",
            "R,instapay,1,A,,B,GCash,12.345,,",
            "amount",
            "more than 2 decimal places (\"12.345\")",
        ),
        row_err(
            "not a number",
            "R,instapay,1,A,,B,GCash,PHP 100,,",
            "amount",
            "not a number",
        ),
        row_err(
            "float notation",
            "R,instapay,1,A,,B,GCash,1.5e3,,",
            "amount",
            "not a number",
        ),
        row_err(
            "bad thousands",
            "R,instapay,1,A,,B,GCash,\"15,00\",,",
            "amount",
            "not a number",
        ),
        row_err(
            "overflowing amount",
            "R,starpay,1,A,,B,,999999999999999999999,,",
            "amount",
            "too large",
        ),
        row_err(
            "above instapay cap",
            "R,instapay,1,A,,B,GCash,\"50,000.01\",,",
            "amount",
            "above the InstaPay limit",
        ),
        row_err(
            "unknown channel",
            "R,pesonet,1,A,,B,GCash,1,,",
            "channel",
            "unknown channel \"pesonet\"",
        ),
        row_err(
            "unknown currency",
            "R,instapay,1,A,,B,GCash,1,USD,",
            "currency",
            "unknown currency \"USD\"",
        ),
        row_err(
            "missing bank on instapay",
            "R,instapay,1,A,,B,,1,,",
            "bank",
            "required value is empty",
        ),
        row_err(
            "unknown bank",
            "R,instapay,1,A,,B,Bank of Nowhere,1,,",
            "bank",
            "not in the list of receiving banks",
        ),
        row_err(
            "bad account characters",
            "R,instapay,0917 123 4567,A,,B,GCash,1,,",
            "account_no",
            "contains ' '",
        ),
        row_err(
            "control character",
            "R,instapay,1,\"A\tB\",,B,GCash,1,,",
            "account_name",
            "control character",
        ),
        row_err(
            "already paid",
            "PAID-1,instapay,1,A,,B,GCash,1,,",
            "reference",
            "is SUCCESS in run 1 (line 2); a reference is paid once",
        ),
        row_err(
            "duplicate reference",
            "OK-1,instapay,1,A,,B,GCash,1,,",
            "reference",
            "\"OK-1\" is also on line 2",
        ),
        Case {
            name: "wrong number of fields",
            bytes: row("R,instapay,1,A,,B,GCash,1"),
            want: Want::Row {
                line: 3,
                column: None,
                text: "8 fields but the header has 10",
            },
        },
    ];
    for (column, line, text) in [
        (
            "reference",
            format!("{},instapay,1,A,,B,GCash,1,,", long(65)),
            "longer than 64 characters (65)",
        ),
        (
            "account_no",
            format!("R,instapay,{},A,,B,GCash,1,,", "1".repeat(35)),
            "longer than 34 characters (35)",
        ),
        (
            "account_name",
            format!("R,instapay,1,{},,B,GCash,1,,", long(65)),
            "longer than 64",
        ),
        (
            "middle_name",
            format!("R,instapay,1,A,{},B,GCash,1,,", long(65)),
            "longer than 64",
        ),
        (
            "last_name",
            format!("R,instapay,1,A,,{},GCash,1,,", long(65)),
            "longer than 64",
        ),
        (
            "bank",
            format!("R,instapay,1,A,,B,{},1,,", long(129)),
            "longer than 128",
        ),
        (
            "note",
            format!("R,instapay,1,A,,B,GCash,1,,{}", long(93)),
            "longer than 92 characters (93)",
        ),
    ] {
        cases.push(Case {
            name: "over-long field",
            bytes: row(&line),
            want: Want::Row {
                line: 3,
                column: Some(column),
                text,
            },
        });
    }

    // ---- encoding and size.
    let mut latin1 = row("R,instapay,1,A,,Pe\u{F1}a,GCash,1,,");
    let n = latin1.len();
    // Replace the UTF-8 "ñ" (C3 B1) by Latin-1 F1 in last_name.
    let pos = latin1.windows(2).rposition(|w| w == [0xC3, 0xB1]).unwrap();
    latin1.splice(pos..pos + 2, [0xF1]);
    assert_eq!(latin1.len(), n - 1);
    cases.push(Case {
        name: "non-UTF-8 bytes in a row",
        bytes: latin1,
        want: Want::Row {
            line: 3,
            column: Some("last_name"),
            text: "not valid UTF-8",
        },
    });

    let mut huge = format!("{HEADER}{GOOD}R,instapay,1,A,,B,GCash,1,,").into_bytes();
    huge.extend(std::iter::repeat_n(b'n', 10 * 1024 * 1024));
    huge.extend(format!("\n{}", GOOD.replace("OK-1", "OK-2")).bytes());
    cases.push(Case {
        name: "10 MB single field in a row",
        bytes: huge,
        want: Want::Row {
            line: 3,
            column: Some("note"),
            text: "longer than 65536 bytes",
        },
    });

    let mut quoted_huge = format!("{HEADER}R,instapay,1,\"").into_bytes();
    quoted_huge.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    quoted_huge.extend(b"\nstill inside the quotes\",,B,GCash,1,,\n");
    cases.push(Case {
        name: "10 MB quoted multi-line field",
        bytes: quoted_huge,
        want: Want::Row {
            line: 2,
            column: Some("account_name"),
            text: "longer than 65536 bytes",
        },
    });

    cases.push(Case {
        name: "10 MB single field, no header",
        bytes: vec![b'z'; 10 * 1024 * 1024],
        want: Want::File {
            line: 1,
            text: "longer than 65536 bytes",
        },
    });

    // ---- the file as a whole.
    cases.push(Case {
        name: "empty file",
        bytes: Vec::new(),
        want: Want::File {
            line: 1,
            text: "the file is empty",
        },
    });
    cases.push(Case {
        name: "only a BOM and blank lines",
        bytes: b"\xEF\xBB\xBF\r\n\r\n".to_vec(),
        want: Want::File {
            line: 1,
            text: "the file is empty",
        },
    });
    cases.push(Case {
        name: "header only",
        bytes: HEADER.as_bytes().to_vec(),
        want: Want::File {
            line: 1,
            text: "header but no rows",
        },
    });
    cases.push(Case {
        name: "header and blank rows only",
        bytes: format!("{HEADER},,,,,,,,,\n\n").into_bytes(),
        want: Want::File {
            line: 1,
            text: "header but no rows",
        },
    });
    cases.push(Case {
        name: "typo in a column name",
        bytes: HEADER.replace("amount", "ammount").into_bytes(),
        want: Want::File {
            line: 1,
            text: "\"ammount\" (did you mean \"amount\"?)",
        },
    });
    cases.push(Case {
        name: "missing required column",
        bytes: format!(
            "{}\nR,instapay,1,A,B,GCash,1\n",
            "reference,channel,account_no,account_name,bank,amount"
        )
        .into_bytes(),
        want: Want::File {
            line: 1,
            text: "missing required column(s): last_name",
        },
    });
    cases.push(Case {
        name: "header after blank lines",
        bytes: b"\n\nreference,amount\n".to_vec(),
        want: Want::File {
            line: 3,
            text: "wrong header",
        },
    });
    cases.push(Case {
        name: "non-UTF-8 header",
        bytes: b"refer\xE9nce,amount\n1,2\n".to_vec(),
        want: Want::File {
            line: 1,
            text: "not valid UTF-8",
        },
    });
    cases.push(Case {
        name: "PNG file",
        bytes: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x01\0\0\0\x01\0\x08\x06\0\0\0".to_vec(),
        want: Want::File {
            line: 1,
            text: "not a CSV text file",
        },
    });
    cases.push(Case {
        name: "UTF-16 export",
        bytes: "\u{FEFF}reference,amount\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect(),
        want: Want::File {
            line: 1,
            text: "UTF-16",
        },
    });
    cases.push(Case {
        name: "random bytes",
        bytes: random_bytes(4096),
        want: Want::File { line: 1, text: "" },
    });
    cases.push(Case {
        name: "total overflows",
        bytes: format!(
            "{HEADER}A,starpay,1,A,,B,,\"90,000,000,000,000,000\",,\nB,starpay,1,A,,B,,\"90,000,000,000,000,000\",,\n"
        )
        .into_bytes(),
        want: Want::File { line: 3, text: "does not fit" },
    });
    cases
}

/// Deterministic noise (xorshift), so a failure reproduces.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn read(path: &Path) -> Result<PayoutFile, starpay_batch::input::InputError> {
    let banks: HashSet<String> = ["GCash", "Maya", "BDO Unibank, Inc."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let paid = |r: &str| {
        (r == "PAID-1").then(|| {
            format!("reference {r:?} is SUCCESS in run 1 (line 2); a reference is paid once")
        })
    };
    let opts = ValidationOptions {
        banks: Some(&banks),
        already_paid: Some(&paid),
    };
    read_payouts(path, &opts)
}

#[test]
fn malformed_files_are_reported_where_they_break() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let path = dir.path().join(format!("case{i:02}.csv"));
        std::fs::write(&path, &case.bytes).unwrap();
        let file_name = path.display().to_string();
        let result = read(&path);
        let problem = match (&case.want, &result) {
            (Want::File { line, text }, Err(e)) => {
                let msg = e.to_string();
                let ok = e.line == *line
                    && msg.starts_with(&format!("{file_name}: line {line}:"))
                    && msg.contains(text);
                (!ok).then(|| format!("got {msg:?}"))
            }
            (Want::Row { line, column, text }, Ok(f)) => {
                let hit = f.errors.iter().any(|e| {
                    let msg = e.to_string();
                    let place = match column {
                        Some(c) => format!("{file_name}: line {line}, column {c}: "),
                        None => format!("{file_name}: line {line}: "),
                    };
                    e.line == *line
                        && e.column.as_deref() == *column
                        && msg.starts_with(&place)
                        && msg.contains(text)
                });
                // The good row on line 2 must survive every row-level case except a duplicate
                // (where it is the survivor too).
                let good_kept = f.rows.iter().any(|r| r.reference == "OK-1")
                    || !String::from_utf8_lossy(&case.bytes).contains("OK-1");
                match (hit, good_kept) {
                    (true, true) => None,
                    (false, _) => Some(format!("errors were:\n{}", f.errors.describe())),
                    (true, false) => Some("the valid row was dropped".to_string()),
                }
            }
            (Want::File { .. }, Ok(f)) => Some(format!(
                "expected a file error, got {} rows and errors:\n{}",
                f.rows.len(),
                f.errors.describe()
            )),
            (Want::Row { .. }, Err(e)) => Some(format!("expected row errors, got file error {e}")),
        };
        if let Some(p) = problem {
            failures.push(format!("case {i} ({}): {p}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The huge-field case must also keep reading after the bad row (the row after it is valid).
#[test]
fn reading_continues_after_a_huge_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.csv");
    let mut bytes = format!("{HEADER}R,instapay,1,A,,B,GCash,1,,").into_bytes();
    bytes.extend(std::iter::repeat_n(b'n', 10 * 1024 * 1024));
    bytes.extend(format!("\n{GOOD}").bytes());
    std::fs::write(&path, bytes).unwrap();
    let f = read(&path).unwrap();
    assert_eq!(f.errors.len(), 1, "{}", f.errors.describe());
    assert_eq!(f.rows.len(), 1);
    assert_eq!(f.rows[0].line, 3);
}

#[test]
fn sample_files_behave_as_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The simulator's bank list (5.1) is the one the demo validates against.
    let text = std::fs::read_to_string(root.join("samples/banks.csv")).unwrap();
    let banks: HashSet<String> =
        starpay_batch::server::sim::parse_banks(&text, "samples/banks.csv")
            .unwrap()
            .into_iter()
            .map(|b| b.bank_name)
            .collect();
    let opts = ValidationOptions {
        banks: Some(&banks),
        already_paid: None,
    };
    let good = read_payouts(&root.join("samples/payouts.csv"), &opts).unwrap();
    assert!(good.is_valid(), "{}", good.errors.describe());
    assert_eq!(good.rows.len(), 50);
    assert!(good.total > Centavos::ZERO);
    // The simulator's scenarios (reference §11) are all represented.
    for suffix in ["0401", "0404", "0504", "0505", "0700", "0800", "0900"] {
        assert!(
            good.rows.iter().any(|r| r.account_no.ends_with(suffix)),
            "no row ends in {suffix}"
        );
    }

    let bad = read_payouts(&root.join("samples/payouts-invalid.csv"), &opts).unwrap();
    assert_eq!(bad.rows.len(), 1);
    assert_eq!(bad.errors.len(), 9, "{}", bad.errors.describe());
}
