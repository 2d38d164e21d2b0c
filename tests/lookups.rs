//! Looking things up without sqlite3 (issue 10): `runs` lists a job's runs with their counts
//! and the exit code of the last command that drove them; `show` prints one reference's whole
//! history. The real binary, the real simulator over 127.0.0.1, a real SQLite file.

mod payout_common;

use payout_common::*;

const LIMITS: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_show_tell_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(7)).await;
    let input = dir.path().join("payouts.csv");
    // Row 3 fails (account suffix 0401): the run exits 2.
    write_csv(&input, 5, |i| if i == 3 { "0401" } else { "1234" });
    let job = write_job(dir.path(), "nightly", &sim, &input, LIMITS, FAST_RESOLVE);

    // Before any run: no database, a clear error, nothing created.
    let out = run(vec!["runs".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(!dir.path().join("nightly.db").exists());

    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let report = read_report(&dir.path().join("reports/nightly-1.csv"));

    let out = run(vec!["runs".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "header and one run:\n{stdout}");
    let cols: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(cols[0], "1");
    assert_eq!(cols[1], "payout");
    assert_ne!(cols[3], "open", "the run finished");
    assert_eq!(cols[4], "2", "the last command exited 2");
    assert_eq!(
        cols[5], "SUCCESS 4, FAILED 1",
        "counts agree with the report"
    );
    assert_eq!(report.iter().filter(|r| r["state"] == "SUCCESS").count(), 4);

    // `show` of the failed reference: its row, its one msgId, the events in order, and the
    // verified answer as stored.
    let failed = report.iter().find(|r| r["state"] == "FAILED").unwrap();
    let out = run(vec!["show".into(), s(&job), failed["reference"].clone()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("msgId {}", failed["msg_id"])),
        "{text}"
    );
    assert!(text.contains("state FAILED"), "{text}");
    let order: Vec<usize> = ["attempt_allocated", "sending", "send_answer"]
        .iter()
        .map(|k| {
            text.find(k)
                .unwrap_or_else(|| panic!("{k} missing:\n{text}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "events in order:\n{text}"
    );
    assert!(
        text.contains("\"trxState\"") || text.contains("\"code\""),
        "a stored answer is shown:\n{text}"
    );

    // An unknown reference is an error, not an empty page.
    let out = run(vec!["show".into(), s(&job), "NO-SUCH-REF".into()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("NO-SUCH-REF"), "{}", show(&out));
}
