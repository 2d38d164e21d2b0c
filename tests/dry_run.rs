//! `run --dry-run` (issue 10, defect 7): checks what a real run checks before its first
//! request — keys, bank names, earlier runs — offline, and writes nothing. The real binary,
//! the real simulator over 127.0.0.1 (for the real run it is compared with), real SQLite.

mod payout_common;

use std::collections::BTreeSet;
use std::path::Path;

use payout_common::*;

const LIMITS: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

/// Every file and directory below `dir`, with its size (a new file or a grown one shows).
fn tree(dir: &Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.insert((e.path().display().to_string(), meta.len()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_checks_keys_and_banks_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(11)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 4, |_| "1234");
    let job = write_job(dir.path(), "nightly", &sim, &input, LIMITS, FAST_RESOLVE);

    // A valid file on a job that never ran: exit 0, banks from the shipped list, no file.
    let before = tree(dir.path());
    let out = run(vec!["run".into(), s(&job), "--dry-run".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(show(&out).contains("samples/banks.csv"), "{}", show(&out));
    assert_eq!(tree(dir.path()), before, "a dry run creates nothing");
    assert!(sim.requests().is_empty(), "a dry run sends nothing");

    // A bank name the real run rejects (the list says "GCash").
    let bad_bank = dir.path().join("bad-bank.csv");
    std::fs::write(
        &bad_bank,
        format!("{CSV_HEADER}B-1,instapay,0000011234,Juan,Santos,Dela Cruz,gcash,100.00,PHP,x\n"),
    )
    .unwrap();
    let before = tree(dir.path());
    let out = run(vec![
        "run".into(),
        s(&job),
        "--dry-run".into(),
        "--input".into(),
        s(&bad_bank),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("line 2") && show(&out).contains("gcash"),
        "the error names the line and the bank:\n{}",
        show(&out)
    );
    assert_eq!(tree(dir.path()), before);

    // A missing private key: the dry run loads the keys as the real run does.
    let text = std::fs::read_to_string(&job).unwrap();
    let no_key = dir.path().join("nokey.toml");
    let private = root().join("samples/keys/TEST-ONLY-demo-merchant-private.pem");
    std::fs::write(
        &no_key,
        text.replace(
            &private.display().to_string(),
            &dir.path().join("missing.pem").display().to_string(),
        ),
    )
    .unwrap();
    let before = tree(dir.path());
    let out = run(vec!["run".into(), s(&no_key), "--dry-run".into()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("missing.pem"), "{}", show(&out));
    assert_eq!(tree(dir.path()), before);

    // After a real run: the dry run of the same (paid) file still works, reads the bank
    // list that run saw and the earlier runs, and writes nothing.
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let sent = sim.requests().len();
    let before = tree(dir.path());
    let out = run(vec!["run".into(), s(&job), "--dry-run".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = show(&out);
    assert!(text.contains("already paid by run 1"), "{text}");
    assert!(text.contains("the bank list Starpay gave"), "{text}");
    assert_eq!(tree(dir.path()), before, "a dry run creates nothing");
    assert_eq!(sim.requests().len(), sent, "a dry run sends nothing");

    // A new file reusing a paid reference: the dry run refuses it, as the real run would.
    let reuse = dir.path().join("reuse.csv");
    std::fs::write(
        &reuse,
        format!(
            "{CSV_HEADER}REF-000001,instapay,0000099234,Juan,Santos,Dela Cruz,GCash,100.00,PHP,x\n"
        ),
    )
    .unwrap();
    let before = tree(dir.path());
    let out = run(vec![
        "run".into(),
        s(&job),
        "--dry-run".into(),
        "--input".into(),
        s(&reuse),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("REF-000001"), "{}", show(&out));
    assert_eq!(tree(dir.path()), before);
}

/// Issue 10, defect 5: a real run of a file that fails validation creates nothing either (no
/// database, no lock, no reports), and says why, naming line and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_of_an_invalid_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(12)).await;
    let input = dir.path().join("bad.csv");
    std::fs::write(
        &input,
        format!("{CSV_HEADER}B-1,instapay,0000011234,Juan,Santos,Dela Cruz,GCash,-5.00,PHP,x\n"),
    )
    .unwrap();
    let job = write_job(dir.path(), "nightly", &sim, &input, LIMITS, FAST_RESOLVE);
    let before = tree(dir.path());
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("line 2") && show(&out).contains("amount"),
        "{}",
        show(&out)
    );
    assert_eq!(
        tree(dir.path()),
        before,
        "nothing created for an invalid file"
    );
    assert!(sim.requests().is_empty(), "nothing sent");
}
