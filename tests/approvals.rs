//! Approvals (maker-checker) and spending caps (issue 13, acceptance 1): an unapproved file, a
//! file changed after its approval, a stale approval and a self-approved file (four eyes) are
//! refused with zero requests in the simulator's log; an approved file runs; each cap stops an
//! over-limit file offline; revocation works. The real binary, the real simulator over
//! 127.0.0.1, real SQLite files in a temp dir.

mod payout_common;

use std::path::{Path, PathBuf};

use payout_common::*;

const LIMITS: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

/// A payout job on `sim` with extra tables (`[approval]`, `[spending]`) after `[resolve]`.
fn job_with(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    input: &Path,
    tables: &str,
) -> PathBuf {
    write_job(
        dir,
        name,
        sim,
        input,
        LIMITS,
        &format!("{FAST_RESOLVE}\n{tables}\n"),
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// Runs `run JOB` and asserts it was refused (exit 1) with `why` on stderr and nothing sent.
async fn refused(sim: &starpay_batch::server::sim::SimHandle, job: &Path, why: &str) {
    let before = sim.requests().len();
    let out = run(args(&["run", &s(job)])).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "expected {why:?}:\n{}", show(&out));
    assert!(err.contains("nothing was sent"), "{}", show(&out));
    assert_eq!(
        sim.requests().len(),
        before,
        "a refused run sends nothing, not even a health check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_changed_stale_and_self_approved_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(13)).await;
    let input = dir.path().join("march.csv");
    write_csv(&input, 4, |_| "1234");
    let four_eyes = "[approval]\nrequired = true\nfour_eyes = true\nmax_age_hours = 2\n";
    let job = job_with(dir.path(), "payroll", &sim, &input, four_eyes);

    // Unapproved: nothing sent (the store is created for the check, the simulator sees nothing).
    refused(&sim, &job, "has no approval").await;

    // The maker stages; the same person cannot approve (four eyes), the checker can.
    let out = run(args(&["stage", &s(&job), "--by", "Ana Reyes"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rows:        4"), "{stdout}");
    assert!(stdout.contains("GCash"), "totals per bank:\n{stdout}");
    let out = run(args(&["approve", &s(&job), "--by", "ana reyes", "--yes"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("may not approve it"), "{}", show(&out));
    refused(&sim, &job, "has no approval").await;

    // Without a terminal and without --yes, nobody confirmed: refused.
    let out = run(args(&["approve", &s(&job), "--by", "Ben Cruz"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("not a terminal"), "{}", show(&out));
    refused(&sim, &job, "has no approval").await;

    // Approved by another person: the figures and the SHA-256 are shown, and it is recorded.
    let out = run(args(&["approve", &s(&job), "--by", "Ben Cruz", "--yes"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let sha = starpay_batch_sha(&input);
    assert!(stdout.contains(&sha), "the SHA-256 is shown:\n{stdout}");
    assert!(stdout.contains("largest row"), "{stdout}");
    assert!(stdout.contains("prepared by Ana Reyes"), "{stdout}");

    // Changed after approval: one more byte and the approval no longer applies.
    let original = std::fs::read(&input).unwrap();
    let mut changed = original.clone();
    changed.extend_from_slice(
        b"REF-000099,instapay,0000999234,Juan,Santos,Dela Cruz,GCash,1.00,PHP,x\n",
    );
    std::fs::write(&input, &changed).unwrap();
    refused(&sim, &job, "changed since it was approved").await;
    std::fs::write(&input, &original).unwrap();

    // Stale: an approval older than max_age_hours (2 h) no longer lets a run start. The log
    // is append-only, so the old approval is a new entry dated 3 h ago (as it would be if
    // it had been made then), in a second job on the same database.
    let stale_job = job_with(dir.path(), "stale", &sim, &input, four_eyes);
    refused(&sim, &stale_job, "has no approval").await;
    insert_old_approval(&dir.path().join("stale.db"), "stale", &input, &sha, 3);
    refused(&sim, &stale_job, "older than [approval] max_age_hours = 2").await;

    // Self-approved: approved without four eyes by the preparer, then four eyes switched on:
    // the run refuses it.
    let own = job_with(
        dir.path(),
        "own",
        &sim,
        &input,
        "[approval]\nrequired = true\n",
    );
    let out = run(args(&[
        "approve",
        &s(&own),
        "--by",
        "Ana Reyes",
        "--prepared-by",
        "Ana Reyes",
        "--yes",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let own = job_with(dir.path(), "own", &sim, &input, four_eyes);
    refused(&sim, &own, "Ana Reyes prepared this file").await;

    // The approved file runs: every row is sent once.
    let out = run(args(&["run", &s(&job)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(sends(&sim).len(), 4, "{}", show(&out));

    // `runs`, `status` and `show` say who prepared and who approved.
    let out = run(args(&["runs", &s(&job)])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("prepared by Ana Reyes; approved by Ben Cruz"),
        "{stdout}"
    );
    let out = run(args(&["status", &s(&job)])).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("approved by Ben Cruz"),
        "{}",
        show(&out)
    );
    let out = run(args(&["show", &s(&job), "REF-000001"])).await;
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("prepared by Ana Reyes; approved by Ben Cruz"),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_refuses_until_approved_again() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(14)).await;
    let input = dir.path().join("april.csv");
    write_csv(&input, 3, |_| "1234");
    let job = job_with(
        dir.path(),
        "payroll",
        &sim,
        &input,
        "[approval]\nrequired = true\n",
    );
    // Nothing to revoke yet.
    let out = run(args(&["approve", &s(&job), "--by", "Ben", "--revoke"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = run(args(&["approve", &s(&job), "--by", "Ben", "--yes"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(args(&["approve", &s(&job), "--by", "Carla", "--revoke"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    refused(&sim, &job, "was revoked by Carla").await;
    // The approval and its revocation stay on record (append-only): three entries, two events.
    let db = dir.path().join("payroll.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let entries: i64 = conn
        .query_row("SELECT count(*) FROM approvals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(entries, 2, "the approval and its revocation");
    assert!(
        conn.execute("DELETE FROM approvals", []).is_err(),
        "approvals are never deleted"
    );
    let events: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE kind IN ('file_approved', 'approval_revoked')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(events, 2);
    drop(conn);
    // Approved again: it runs.
    let out = run(args(&["approve", &s(&job), "--by", "Ben", "--yes"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(args(&["run", &s(&job)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(sends(&sim).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cap_stops_an_over_limit_file_offline() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(15)).await;
    let input = dir.path().join("may.csv");
    // Three rows to GCash: 100.00, 101.10 and 102.02 (amount_of), total 303.12.
    write_csv(&input, 3, |_| "1234");
    let cases = [
        (
            "max_total = \"300.00\"",
            "spending.max_total: allowed PHP 300.00, the file has PHP 303.12",
        ),
        (
            "max_rows = 2",
            "spending.max_rows: allowed 2 rows, the file has 3 rows",
        ),
        (
            "max_row_amount = \"101.50\"",
            "spending.max_row_amount: allowed PHP 101.50",
        ),
        (
            "per_bank = { \"GCash\" = \"200\" }",
            "spending.per_bank.GCash: allowed PHP 200.00",
        ),
    ];
    for (cap, why) in cases {
        let job = job_with(
            dir.path(),
            "capped",
            &sim,
            &input,
            &format!("[spending]\n{cap}\n"),
        );
        refused(&sim, &job, why).await;
        // The dry run says the same, offline.
        let out = run(args(&["run", &s(&job), "--dry-run"])).await;
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(show(&out).contains(why), "{}", show(&out));
    }
    // Within every cap (equal is allowed): it runs.
    let job = job_with(
        dir.path(),
        "capped",
        &sim,
        &input,
        "[spending]\nmax_total = \"303.12\"\nmax_rows = 3\nmax_row_amount = \"102.02\"\n",
    );
    let out = run(args(&["run", &s(&job), "--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // An approval covers a cap only when given explicitly with --over-limits.
    let input2 = dir.path().join("june.csv");
    write_csv_with(&input2, 2, "JUN-", "7", |_| "1234");
    let job = job_with(
        dir.path(),
        "capped",
        &sim,
        &input2,
        "[spending]\nmax_total = \"150.00\"\n",
    );
    let out = run(args(&["approve", &s(&job), "--by", "Ben", "--yes"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("--over-limits"), "{}", show(&out));
    refused(&sim, &job, "spending.max_total").await;
    let out = run(args(&[
        "approve",
        &s(&job),
        "--by",
        "Ben",
        "--yes",
        "--over-limits",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("covers caps max_total"),
        "{}",
        show(&out)
    );
    let out = run(args(&["run", &s(&job)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("covered by the approval of Ben"),
        "{}",
        show(&out)
    );
    assert_eq!(sends(&sim).len(), 2);
}

/// Lower-case hex SHA-256 of a file, computed here independently of the binary.
fn starpay_batch_sha(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An approval of `sha` for `job` dated `hours_ago` hours ago, prepared by someone else.
fn insert_old_approval(db: &Path, job: &str, input: &Path, sha: &str, hours_ago: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let at = chrono::Utc::now().timestamp_millis() - hours_ago * 3_600_000;
    conn.execute(
        "INSERT INTO approvals (job, action, by_name, at, input_path, input_sha256, row_count,
                                total, prepared_by)
         VALUES (?1, 'APPROVED', 'Ben Cruz', ?2, ?3, ?4, 4, 0, 'Ana Reyes')",
        rusqlite::params![job, at, input.display().to_string(), sha],
    )
    .unwrap();
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), typing `typed` at it; returns
/// the exit code and everything the terminal showed.
async fn on_terminal(list: &[&str], typed: &str) -> (Option<i32>, String) {
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_starpay-batch").to_string())
        .chain(list.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let typed = typed.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("util-linux `script` runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(typed.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), show(&out))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_confirmation_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(16)).await;
    let input = dir.path().join("july.csv");
    write_csv(&input, 3, |_| "1234"); // total PHP 303.12
    let job = job_with(
        dir.path(),
        "payroll",
        &sim,
        &input,
        "[approval]\nrequired = true\n[spending]\nconfirm_above = \"300\"\n",
    );
    // A wrong total typed back approves nothing.
    let (code, text) = on_terminal(&["approve", &s(&job), "--by", "Ben"], "303\n").await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Type the total (PHP 303.12)"), "{text}");
    assert!(
        text.contains("not confirmed; nothing was approved"),
        "{text}"
    );
    refused(&sim, &job, "has no approval").await;
    // The total typed back (with or without separators) approves.
    let (code, text) = on_terminal(&["approve", &s(&job), "--by", "Ben"], "303.12\n").await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("approved (approval 1) by Ben"), "{text}");
    // `run` on a terminal above confirm_above asks too; a wrong answer sends no payout.
    let (code, text) = on_terminal(&["run", &s(&job)], "no\n").await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("above confirm_above PHP 300.00"), "{text}");
    assert!(text.contains("not confirmed; nothing was sent"), "{text}");
    assert!(sends(&sim).is_empty(), "no payout was sent");
    // Without a terminal (a scheduler) the approval is the check: it runs.
    let out = run(args(&["run", &s(&job)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(sends(&sim).len(), 3);
}
