//! Issue 8, "the report is the truth in every case": what the payout and reconciliation reports
//! say and when they are written. The real binary, the real simulator over 127.0.0.1, a real
//! SQLite file in a temp dir; the simulator's ledger and the database are the oracles.

mod payout_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use payout_common::*;
use starpay_batch::domain::Centavos;

const LIMITS_FAST: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 16\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

/// Generous bound on every wait for an observable condition.
const WAIT: Duration = Duration::from_secs(120);

fn db(dir: &Path, job: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(
        dir.join(format!("{job}.db")),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// (run id, row count) of every run of `job` marked FINISHED in the database, if it exists.
fn finished_runs(dir: &Path, job: &str) -> Vec<(i64, i64)> {
    if !dir.join(format!("{job}.db")).exists() {
        return Vec::new();
    }
    let c = db(dir, job);
    let mut stmt = match c.prepare(
        "SELECT id, (SELECT COUNT(*) FROM rows r WHERE r.run_id = runs.id) FROM runs WHERE status = 'FINISHED'",
    ) {
        Ok(s) => s,
        // Killed before the schema was created.
        Err(_) => return Vec::new(),
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every run marked FINISHED has its report (one line per row), summary and details.
fn assert_finished_runs_have_reports(dir: &Path, job: &str, context: &str) {
    for (run, rows) in finished_runs(dir, job) {
        let report = dir.join(format!("reports/{job}-{run}.csv"));
        assert!(
            report.exists(),
            "{context}: run {run} is FINISHED in SQLite but {} is missing",
            report.display()
        );
        assert_eq!(
            read_report(&report).len() as i64,
            rows,
            "{context}: run {run}: one report line per row"
        );
        for suffix in ["summary", "run"] {
            let p = dir.join(format!("reports/{job}-{run}-{suffix}.csv"));
            assert!(p.exists(), "{context}: {} is missing", p.display());
        }
    }
}

/// Polls `cond` (off the async threads) until it holds; panics after [`WAIT`].
async fn wait_for(what: &str, cond: impl Fn() -> bool + Send + 'static) {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .await
    .unwrap();
}

/// `SELECT COUNT…` on the job's database, polled: one read-only connection, opened once the
/// database exists; -1 until then (or while the schema is not there yet).
fn counter(dir: &Path, job: &str, sql: &'static str) -> impl Fn() -> i64 + Send + 'static {
    let path = dir.join(format!("{job}.db"));
    let conn: std::sync::Mutex<Option<rusqlite::Connection>> = std::sync::Mutex::new(None);
    move || {
        let mut c = conn.lock().unwrap();
        if c.is_none() && path.exists() {
            *c = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok();
            if let Some(c) = c.as_ref() {
                let _ = c.busy_timeout(Duration::from_secs(10));
            }
        }
        match c.as_ref() {
            Some(c) => c.query_row(sql, [], |r| r.get(0)).unwrap_or(-1),
            None => -1,
        }
    }
}

/// The files beside `<stem>.csv` that keep its previous versions (`<stem>.<time>.csv`).
fn previous_versions(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with(&format!("{stem}.")) && n.ends_with(".csv") && n != format!("{stem}.csv")
        })
        .collect();
    v.sort();
    v
}

fn details(path: &Path) -> HashMap<String, String> {
    read_report(path)
        .into_iter()
        .map(|r| (r["field"].clone(), r["value"].clone()))
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs the binary with stdout/stderr captured, and returns its pid so a signal can be sent.
fn spawn_captured(args: Vec<String>) -> std::process::Child {
    bin()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_output(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

// ------------------------------------------------------------------ defect 5

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// SIGKILL this long after the start.
    AfterMs(u64),
    /// SIGKILL this long after every row of run 1 is final in SQLite (report being written).
    RowsFinalPlusMs(u64),
    /// SIGKILL as soon as the run is marked FINISHED in SQLite.
    Finished,
    /// SIGKILL as soon as anything appears in the reports directory (the write has begun).
    ReportDirAppears,
}

/// Defect 5 chaos: SIGKILL the runner at many points of a run, most of them around its end
/// (while the report is being written). After each kill, every run marked FINISHED in SQLite
/// has a complete report; the next `run` resumes an open run and writes the missing report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_always_has_its_report_whatever_the_kill_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(81);
    cfg.settle_delay_ms = 0;
    cfg.settle_jitter_ms = 0;
    let sim = start_sim(cfg).await;
    let rows = 500;
    let limits = "requests_per_second = 5000\nburst = 1000\nconcurrency = 32\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    let points = [
        KillPoint::AfterMs(400),
        KillPoint::RowsFinalPlusMs(0),
        KillPoint::RowsFinalPlusMs(3),
        KillPoint::RowsFinalPlusMs(10),
        KillPoint::RowsFinalPlusMs(30),
        KillPoint::ReportDirAppears,
        KillPoint::Finished,
        KillPoint::Finished,
    ];
    for (i, point) in points.iter().enumerate() {
        let sub = dir.path().join(format!("k{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let input = sub.join("payouts.csv");
        // Unique accounts per sub-run so the ledger can tell them apart.
        write_csv(&input, rows, |_| "2468");
        let text = std::fs::read_to_string(&input)
            .unwrap()
            .replace("REF-", &format!("K{i}-"))
            .replace(",instapay,", &format!(",instapay,{i}"));
        std::fs::write(&input, text).unwrap();
        let job = write_job(&sub, "chaos", &sim, &input, limits, FAST_RESOLVE);
        let child = spawn(vec!["run".into(), s(&job)]).await;
        let started = Instant::now();
        let open_rows =
            "SELECT CASE WHEN (SELECT COUNT(*) FROM rows WHERE run_id = 1) = 0 THEN -1 ELSE
            (SELECT COUNT(*) FROM rows WHERE run_id = 1 AND state NOT IN
            ('SUCCESS','FAILED','REVERSED','REJECTED','NEEDS_ATTENTION')) END";
        match *point {
            KillPoint::AfterMs(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            KillPoint::RowsFinalPlusMs(ms) => {
                let open = counter(&sub, "chaos", open_rows);
                wait_for("every row final", move || open() == 0).await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            KillPoint::Finished => {
                let finished = counter(
                    &sub,
                    "chaos",
                    "SELECT COUNT(*) FROM runs WHERE id = 1 AND status = 'FINISHED'",
                );
                wait_for("run 1 FINISHED", move || finished() == 1).await;
            }
            KillPoint::ReportDirAppears => {
                let d = sub.join("reports");
                wait_for("the report write to begin", move || {
                    std::fs::read_dir(&d).is_ok_and(|mut e| e.next().is_some())
                })
                .await;
            }
        }
        let code = kill_after(child, Duration::ZERO).await;
        let context = format!(
            "kill point {point:?} after {:?} (exit {code:?})",
            started.elapsed()
        );
        assert_finished_runs_have_reports(&sub, "chaos", &context);

        // The next `run` resumes an open run (and writes its report) or, for a finished
        // one, refuses to pay again; either way the report is there and complete.
        let out = run(vec!["run".into(), s(&job)]).await;
        let finished = !finished_runs(&sub, "chaos").is_empty();
        match out.status.code() {
            Some(0) => {}
            // 4: nothing to do, the file was already completed (issue 10).
            Some(4) => assert!(
                String::from_utf8_lossy(&out.stderr).contains("--new-run"),
                "{context}: refused for another reason\n{}",
                show(&out)
            ),
            _ => panic!("{context}: unexpected exit\n{}", show(&out)),
        }
        assert!(finished, "{context}: the run finished\n{}", show(&out));
        assert_finished_runs_have_reports(&sub, "chaos", &context);
        let report = read_report(&sub.join("reports/chaos-1.csv"));
        assert_eq!(report.len(), rows, "{context}");
        assert!(
            report.iter().all(|r| r["state"] == "SUCCESS"),
            "{context}: every row paid"
        );
    }
    // Nobody was paid twice by all those kills.
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), rows * points.len());
    assert!(ledger.orders.iter().all(|o| o.create_requests == 1));
}

/// Defect 5: `report JOB --run ID` rewrites a run's report from the store at any time; a
/// `run` refused because its file was already paid puts a missing report back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_command_rewrites_a_missing_report_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(82)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 30, |i| if i % 10 == 3 { "0401" } else { "1357" });
    let job = write_job(dir.path(), "rep", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let reports = dir.path().join("reports");
    let original = std::fs::read(reports.join("rep-1.csv")).unwrap();
    let original_summary = std::fs::read(reports.join("rep-1-summary.csv")).unwrap();
    let requests = sim.requests().len();

    std::fs::remove_dir_all(&reports).unwrap();
    let out = run(vec!["report".into(), s(&job), "--run".into(), "1".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(std::fs::read(reports.join("rep-1.csv")).unwrap(), original);
    assert_eq!(
        std::fs::read(reports.join("rep-1-summary.csv")).unwrap(),
        original_summary
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rep-1.csv"));
    // Same content again: nothing to keep, no earlier version appears.
    let out = run(vec!["report".into(), s(&job), "--run".into(), "1".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(previous_versions(dir.path(), "rep-1").is_empty());
    assert_eq!(sim.requests().len(), requests, "`report` sends nothing");

    // A run refused ("already paid") writes the missing report of the finished run.
    std::fs::remove_dir_all(&reports).unwrap();
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--new-run"));
    assert_eq!(std::fs::read(reports.join("rep-1.csv")).unwrap(), original);
    assert_eq!(
        sim.requests().len(),
        requests,
        "a refused run sends nothing"
    );

    // A run that does not exist is a clear error.
    let out = run(vec!["report".into(), s(&job), "--run".into(), "9".into()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run 9"),
        "{}",
        show(&out)
    );
}

// ------------------------------------------------------------------ defect 6

/// Defect 6: `retry` and `reconcile` rewrite the payout run's report, keeping the previous
/// version beside it; a reconcile pass has a name of its own; `first_sent_at` and
/// `last_sent_at` are separate columns; `status` shows both run kinds as one table each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_reconcile_rewrite_the_run_report_and_keep_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(83);
    cfg.reversal_delay_ms = 3_600_000;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 6, |i| match i {
        1 => "0700",
        2 => "0401",
        _ => "2468",
    });
    let job = write_job(dir.path(), "pay", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let path = dir.path().join("reports/pay-1.csv");
    let v1 = std::fs::read(&path).unwrap();
    let r1 = read_report(&path);
    assert_eq!(r1[1]["state"], "SUCCESS");
    assert_eq!(r1[2]["state"], "FAILED");
    for r in &r1 {
        assert!(
            !r["first_sent_at"].is_empty() && !r["last_sent_at"].is_empty(),
            "{r:?}"
        );
    }

    // retry re-sends the FAILED row: the report shows its new attempt, the old one is kept.
    let out = run(vec![
        "retry".into(),
        s(&job),
        "--run".into(),
        "1".into(),
        "--include-beneficiary-errors".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let r2 = read_report(&path);
    assert_ne!(r2[2]["msg_id"], r1[2]["msg_id"], "the new attempt is shown");
    assert_eq!(r2[2]["attempts"], "2");
    assert!(
        r2[2]["first_sent_at"] <= r2[2]["last_sent_at"],
        "{:?}",
        r2[2]
    );
    let kept = previous_versions(dir.path(), "pay-1");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(&kept[0]).unwrap(),
        v1,
        "previous version kept as it was"
    );

    // An hour later (simulated) the 0700 payout is reversed; reconcile finds it.
    sim.advance(3700);
    let out = run(vec![
        "reconcile".into(),
        s(&job),
        "--run".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "drift found\n{}", show(&out));
    let pass = dir.path().join("reports/pay-reconcile-1-2.csv");
    assert!(pass.exists(), "{}", show(&out));
    assert!(
        !dir.path().join("reports/pay-2.csv").exists(),
        "a reconcile pass does not look like payout run 2"
    );
    assert_eq!(read_report(&pass)[1]["category"], "REVERSED_AFTER_SUCCESS");
    let r3 = read_report(&path);
    assert_eq!(
        r3[1]["state"], "REVERSED",
        "the payout report follows: {:?}",
        r3[1]
    );
    assert_eq!(previous_versions(dir.path(), "pay-1").len(), 2);
    let pass_details = details(&dir.path().join("reports/pay-reconcile-1-2-run.csv"));
    assert_eq!(pass_details["payout_run"], "1");
    assert!(
        !pass_details["balance_start"].is_empty(),
        "{pass_details:?}"
    );

    // `report` rewrites a reconcile pass's report under the same name.
    std::fs::remove_file(&pass).unwrap();
    let out = run(vec!["report".into(), s(&job), "--run".into(), "2".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(read_report(&pass).len(), 6);

    // status: one table per run, each with its header and a TOTAL line.
    let out = run(vec!["status".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run 2 (reconcile"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("TOTAL")).count(),
        2,
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("state ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("category ")), "{text}");
    let total = text.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert_eq!(total.split_whitespace().nth(1), Some("6"), "{text}");
}

// ------------------------------------------------------------------ defect 7

/// Defect 7: with `--skip-invalid`, a rejected line keeps every field it had (raw text where
/// it did not parse) and its reason; the summary total adds up to the file where amounts parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_lines_keep_their_fields_and_the_total_adds_up_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(84)).await;
    let lines = [
        "R1,instapay,09170000001,Juan,,Cruz,GCash,100.00,PHP,ok",
        "R2,instapay,09170000002,Maria,,Santos,GCash,12.345,PHP,three decimals",
        "R3,paypal,09170000003,Jose,P,Rizal,GCash,250.50,PHP,bad channel",
        "R1,instapay,09170000004,Ana,,Reyes,GCash,75.25,PHP,duplicate",
        "R5,instapay,09170000005,Leo,,Luna,GCash,60000.00,PHP,over the cap",
        "R6,instapay,09170000006,Eva,,Cruz,GCash,10.00,USD,currency",
        "R7,starpay,09170000007,Ben,,Tan,,2500.00,PHP,ok",
    ];
    let input = dir.path().join("payouts.csv");
    std::fs::write(
        &input,
        format!(
            "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n{}\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    let job = write_job(dir.path(), "rej", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job), "--skip-invalid".into()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let report = read_report(&dir.path().join("reports/rej-1.csv"));
    assert_eq!(report.len(), lines.len(), "every line once");
    let by_line = |l: usize| report.iter().find(|r| r["line"] == l.to_string()).unwrap();

    let r = by_line(3);
    assert_eq!(r["state"], "REJECTED");
    assert_eq!(r["reference"], "R2");
    assert_eq!(r["amount"], "12.345", "raw text where it did not parse");
    assert_eq!(r["beneficiary"], "Maria Santos");
    assert_eq!(r["account_no"], "*******0002");
    assert_eq!(r["bank"], "GCash");
    assert!(r["message"].contains("amount"), "{r:?}");
    let r = by_line(4);
    assert_eq!(
        (r["reference"].as_str(), r["channel"].as_str()),
        ("R3", "paypal")
    );
    assert_eq!(r["amount"], "250.50");
    assert_eq!(r["beneficiary"], "Jose P Rizal");
    assert!(r["message"].contains("channel"), "{r:?}");
    let r = by_line(5);
    assert_eq!(
        (r["reference"].as_str(), r["amount"].as_str()),
        ("R1", "75.25")
    );
    assert!(
        r["message"].contains("line 2"),
        "names the first line: {r:?}"
    );
    assert_eq!(by_line(6)["amount"], "60000.00");
    assert_eq!(by_line(7)["currency"], "USD");
    assert!(!by_line(7)["action"].is_empty());
    for l in [2, 8] {
        assert_eq!(by_line(l)["state"], "SUCCESS");
    }
    assert_eq!(
        sim.ledger().orders.len(),
        2,
        "only the valid rows were sent"
    );

    // The summary adds up to the file wherever the amount parses.
    let file_total = lines
        .iter()
        .filter_map(|l| Centavos::parse_php(l.split(',').nth(7).unwrap()).ok())
        .fold(Centavos::ZERO, |a, b| a.checked_add(b).unwrap());
    let summary = read_report(&dir.path().join("reports/rej-1-summary.csv"));
    let total = summary.iter().find(|r| r["state"] == "TOTAL").unwrap();
    assert_eq!(total["count"], lines.len().to_string());
    assert_eq!(total["total"], file_total.to_string(), "{summary:?}");
    let rejected = summary.iter().find(|r| r["state"] == "REJECTED").unwrap();
    assert_eq!(rejected["count"], "5");
    assert_eq!(rejected["total"], "60335.75");
}

// ------------------------------------------------------------------ defect 8

/// Defect 8: rows never sent (Ctrl-C early, slow rate limit) read NOT_SENT, not PENDING, and
/// the simulator has no order for them; the exit code says "run again" (3), and the next run
/// resumes and pays them. `report` works while the job runs (it takes no job lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_never_sent_read_not_sent_after_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(85);
    cfg.settle_delay_ms = 0;
    cfg.settle_jitter_ms = 0;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    let rows = 12;
    write_csv(&input, rows, |_| "1111");
    let limits = "requests_per_second = 3\nburst = 1\nconcurrency = 1\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    let job = write_job(dir.path(), "slow", &sim, &input, limits, FAST_RESOLVE);
    let child = spawn_captured(vec!["run".into(), s(&job)]);
    let pid = child.id();
    let start = Instant::now();
    while sim.ledger().orders.is_empty() {
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for the first order"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // `report` while the job runs: no job lock, so it works, and it says NOT_SENT for rows
    // whose attempt has not left yet.
    let out = run(vec!["report".into(), s(&job), "--run".into(), "1".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        read_report(&dir.path().join("reports/slow-1.csv"))
            .iter()
            .any(|r| r["state"] == "NOT_SENT"),
        "{}",
        show(&out)
    );

    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait_output(child).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "run again, it resumes\n{}",
        show(&out)
    );

    let report = read_report(&dir.path().join("reports/slow-1.csv"));
    assert_eq!(report.len(), rows);
    let ledger = sim.ledger();
    let mut not_sent = 0;
    for r in &report {
        // Row i (line i + 2) pays account {i:06}1111 (write_csv).
        let i: usize = r["line"].parse::<usize>().unwrap() - 2;
        let acct = format!("{i:06}1111");
        let sent = ledger.order(&r["msg_id"]).is_some()
            || ledger
                .orders
                .iter()
                .any(|o| o.acct_no.as_deref() == Some(acct.as_str()));
        if r["state"] == "NOT_SENT" {
            not_sent += 1;
            assert!(!sent, "a NOT_SENT row has an order at Starpay: {r:?}");
            assert!(r["first_sent_at"].is_empty(), "{r:?}");
            assert!(r["action"].contains("run the job again"), "{r:?}");
        } else {
            assert!(
                sent,
                "a row with no order at Starpay must read NOT_SENT: {r:?}"
            );
        }
    }
    assert!(not_sent > 0, "the interrupt came early: {report:?}");
    let summary = read_report(&dir.path().join("reports/slow-1-summary.csv"));
    let line = summary.iter().find(|r| r["state"] == "NOT_SENT").unwrap();
    assert_eq!(line["count"], not_sent.to_string());
    let run_details = details(&dir.path().join("reports/slow-1-run.csv"));
    assert_eq!(run_details["exit_code"], "3");
    assert_eq!(run_details["status"], "OPEN");

    // The next run resumes and pays them; one order per row.
    let limits_fast = write_job(dir.path(), "slow", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&limits_fast)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = read_report(&dir.path().join("reports/slow-1.csv"));
    assert!(report.iter().all(|r| r["state"] == "SUCCESS"));
    assert_eq!(sim.ledger().orders.len(), rows);
}

// ------------------------------------------------------------------ report content

/// "Report content a finance person needs": beneficiary, bank refNo, an action per row, the
/// failure in code/message of FAILED rows, one time zone (+08:00 by default, configurable),
/// a TOTAL line, run details with the input's SHA-256, and an aligned terminal table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_report_shows_what_finance_needs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(86)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 20, |i| if i % 10 == 4 { "0401" } else { "8642" });
    let job = write_job(dir.path(), "fin", &sim, &input, LIMITS_FAST, FAST_RESOLVE);

    // An unknown key in [report] is an error naming it; nothing is sent.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{}\n[report]\ntime_zone = \"+08:00\"\n",
            std::fs::read_to_string(&job).unwrap()
        ),
    )
    .unwrap();
    let out = run(vec!["run".into(), s(&bad)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("time_zone"),
        "{}",
        show(&out)
    );
    assert_eq!(sim.requests().len(), 0);

    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let report = read_report(&dir.path().join("reports/fin-1.csv"));
    let ledger = sim.ledger();
    for r in &report {
        let order = ledger.order(&r["msg_id"]).unwrap();
        assert_eq!(r["beneficiary"], "Juan Santos Dela Cruz");
        assert_eq!(
            r["ref_no"],
            order.ref_no.clone().unwrap_or_default(),
            "{r:?}"
        );
        assert!(!r["action"].is_empty());
        for t in ["first_sent_at", "last_sent_at", "last_checked_at"] {
            assert!(r[t].ends_with("+08:00"), "{t}: {r:?}");
            chrono::DateTime::parse_from_rfc3339(&r[t]).unwrap();
        }
        if r["state"] == "FAILED" {
            assert_eq!(r["code"], "AC01", "the failure, not the transport: {r:?}");
            assert_eq!(r["message"], r["error_message"]);
            assert!(!r["message"].is_empty() && !r["message"].contains("success"));
            assert!(r["action"].contains("retry"), "{r:?}");
        } else {
            assert_eq!(r["state"], "SUCCESS");
            assert!(!r["ref_no"].is_empty(), "{r:?}");
        }
    }
    assert_eq!(report.iter().filter(|r| r["state"] == "FAILED").count(), 2);

    let summary = read_report(&dir.path().join("reports/fin-1-summary.csv"));
    let total: Centavos = report
        .iter()
        .map(|r| Centavos::parse_php(&r["amount"]).unwrap())
        .fold(Centavos::ZERO, |a, b| a.checked_add(b).unwrap());
    let last = summary.last().unwrap();
    assert_eq!(
        (last["state"].as_str(), last["count"].as_str()),
        ("TOTAL", "20")
    );
    assert_eq!(last["total"], total.to_string());

    let d = details(&dir.path().join("reports/fin-1-run.csv"));
    assert_eq!(d["job"], "fin");
    assert_eq!(d["run_id"], "1");
    assert_eq!(d["input_file"], s(&input));
    assert_eq!(d["input_sha256"], sha256_hex(&input));
    assert_eq!(d["exit_code"], "2");
    assert_eq!(d["status"], "FINISHED");
    assert!(
        d["started"].ends_with("+08:00") && d["finished"].ends_with("+08:00"),
        "{d:?}"
    );
    assert!(d["started"] <= d["finished"]);

    // The terminal table: a header, every state, TOTAL; amounts right-aligned with
    // thousands separators.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("state"))
        .take_while(|l| !l.starts_with("report:"))
        .collect();
    assert_eq!(table.len(), 10, "header, 8 states, TOTAL\n{stdout}");
    assert!(table.iter().all(|l| l.len() == table[0].len()), "{stdout}");
    let total_line = table.last().unwrap();
    assert!(total_line.starts_with("TOTAL"), "{stdout}");
    let shown = total_line.split_whitespace().last().unwrap();
    assert!(shown.contains(','), "thousands separators: {stdout}");
    assert_eq!(Centavos::parse_php(shown).unwrap(), total);

    // Another time zone for the same job: `report` rewrites, the previous version is kept.
    std::fs::write(
        &job,
        format!(
            "{}\n[report]\ntimezone = \"-05:00\"\n",
            std::fs::read_to_string(&job).unwrap()
        ),
    )
    .unwrap();
    let out = run(vec!["report".into(), s(&job), "--run".into(), "1".into()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let again = read_report(&dir.path().join("reports/fin-1.csv"));
    assert!(again.iter().all(|r| r["first_sent_at"].ends_with("-05:00")));
    let kept = previous_versions(dir.path(), "fin-1");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(read_report(&kept[0])
        .iter()
        .all(|r| r["first_sent_at"].ends_with("+08:00")));
}
