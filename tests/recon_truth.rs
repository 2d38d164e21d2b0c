//! Issue 8, reconciliation side: the reconcile report and the store tell the truth. The real
//! binary against the real simulator over 127.0.0.1 (the simulator lives in this test process,
//! so it keeps its ledger between commands), a real SQLite file. Where a test needs a store that
//! recorded something Starpay contradicts, it edits the SQLite file between commands, as a
//! crash or an old bug would have left it.

mod payout_common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use payout_common::*;
use rusqlite::{params, Connection};
use starpay_batch::domain::TrxState;
use starpay_batch::server::sim::{FixtureKind, OrderFixture, SimConfig, SimHandle};

const LIMITS: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

/// The report path the command printed (`report:  <path>`).
fn report_of(out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report:"))
        .unwrap_or_else(|| panic!("no report path printed\n{}", show(out)));
    PathBuf::from(line.trim())
}

fn db(dir: &Path, name: &str) -> Connection {
    Connection::open(dir.join(format!("{name}.db"))).unwrap()
}

/// Runs a payout job of `n` rows (account suffix per row) to its end; returns its exit code.
async fn pay(dir: &Path, sim: &SimHandle, n: usize, suffix: fn(usize) -> &'static str) -> PathBuf {
    let input = dir.join("payouts.csv");
    write_csv(&input, n, suffix);
    let job = write_job(dir, "pay", sim, &input, LIMITS, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "the payout run ends\n{}",
        show(&out)
    );
    job
}

async fn reconcile(job: &Path, run_id: i64) -> Output {
    run(vec![
        "reconcile".into(),
        s(job),
        "--run".into(),
        run_id.to_string(),
    ])
    .await
}

/// line → (state, message, amount) of payout run `run_id`.
fn payout_rows(c: &Connection, run_id: i64) -> HashMap<i64, (String, String, i64)> {
    let mut stmt = c
        .prepare("SELECT line, state, COALESCE(message, ''), amount FROM rows WHERE run_id = ?1")
        .unwrap();
    stmt.query_map([run_id], |r| {
        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// line → (category, action, message) of recon run `run_id` (category "" when unchecked).
fn recon_rows(c: &Connection, run_id: i64) -> HashMap<i64, (String, String, String)> {
    let mut stmt = c
        .prepare(
            "SELECT line, COALESCE(category, ''), COALESCE(action, ''), COALESCE(message, '')
             FROM recon_rows WHERE run_id = ?1",
        )
        .unwrap();
    stmt.query_map([run_id], |r| {
        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn order_no(c: &Connection, run_id: i64, line: i64) -> String {
    c.query_row(
        "SELECT order_no FROM rows WHERE run_id = ?1 AND line = ?2",
        params![run_id, line],
        |r| r.get(0),
    )
    .unwrap()
}

fn run_status(c: &Connection, run_id: i64) -> String {
    c.query_row("SELECT status FROM runs WHERE id = ?1", [run_id], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Defect 2: NEEDS_ATTENTION is not a dead end. A verified final answer (amount agreeing, the
/// row's current attempt) moves the row to that state with an event naming the reconcile run
/// and the old reason; a non-final answer or a differing amount leaves it for the human.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_resolves_needs_attention_with_a_verified_final_answer() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(81)).await;
    let job = pay(
        dir.path(),
        &sim,
        5,
        |i| if i == 1 { "0401" } else { "2468" },
    )
    .await;
    let c = db(dir.path(), "pay");
    let before = payout_rows(&c, 1);
    assert_eq!(before[&2].0, "SUCCESS");
    assert_eq!(before[&3].0, "FAILED");
    // The store holds every row as NEEDS_ATTENTION, each with a human-readable reason.
    c.execute(
        "UPDATE rows SET state = 'NEEDS_ATTENTION', message = 'reason of line ' || line WHERE run_id = 1",
        [],
    )
    .unwrap();
    // Line 5: our amount differs from Starpay's (a conflict, not a resolution).
    c.execute(
        "UPDATE rows SET amount = amount + 100 WHERE run_id = 1 AND line = 5",
        [],
    )
    .unwrap();
    // Line 4: Starpay's answer is not final.
    sim.force_state(&order_no(&c, 1, 4), TrxState::Processing, None)
        .unwrap();
    // Line 6: Starpay has it reversed.
    sim.force_state(&order_no(&c, 1, 6), TrxState::Reversed, Some("MS03"))
        .unwrap();

    let out = reconcile(&job, 1).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "line 4 is pending\n{}",
        show(&out)
    );
    let after = payout_rows(&c, 1);
    for (line, state, says) in [
        (2, "SUCCESS", "SUCCESS"),
        (3, "FAILED", "FAIL"),
        (6, "REVERSED", "REVERSED"),
    ] {
        let (got, message, _) = &after[&line];
        assert_eq!(got, state, "line {line}: {message}");
        assert_eq!(
            message,
            &format!(
                "reconcile run 2: Starpay says {says}; was NEEDS_ATTENTION: reason of line {line}"
            ),
            "line {line}: the reason stays readable"
        );
    }
    for line in [4, 5] {
        assert_eq!(after[&line].0, "NEEDS_ATTENTION", "line {line}: {after:?}");
        assert_eq!(after[&line].1, format!("reason of line {line}"));
    }
    let mut stmt = c
        .prepare(
            "SELECT r.line, e.old_state, e.new_state, e.detail, e.raw IS NOT NULL, e.run_id
             FROM events e JOIN rows r ON r.id = e.row_id
             WHERE e.kind = 'reconcile_resolved_attention' ORDER BY r.line",
        )
        .unwrap();
    let events: Vec<(i64, String, String, String, bool, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![2, 3, 6],
        "{events:?}"
    );
    for (line, old, new, detail, has_raw, run_id) in &events {
        assert_eq!(old, "NEEDS_ATTENTION");
        assert_eq!(new, &after[line].0);
        assert_eq!(detail, &after[line].1);
        assert!(has_raw, "line {line}: the raw answer is kept");
        assert_eq!(*run_id, 2, "the reconcile run that moved it");
    }
}

/// Defect 3: rows recorded as unpaid (REJECTED, UNSENT, an attempt never sent) that Starpay
/// has SUCCESS or PROCESSING are PAID_BUT_RECORDED_UNPAID (exit 2), move in the store to the
/// state the answer implies (NEEDS_ATTENTION when the amounts differ), and their reference is
/// blocked again; an UNSENT row resent under the not-found rule is never "known not processed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_flags_and_reblocks_a_payment_recorded_as_unpaid() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(82)).await;
    let job = pay(dir.path(), &sim, 8, |_| "2468").await;
    let c = db(dir.path(), "pay");
    assert!(payout_rows(&c, 1).values().all(|r| r.0 == "SUCCESS"));
    let set = |line: i64, sql: &str| {
        c.execute(
            &format!("UPDATE rows SET {sql} WHERE run_id = 1 AND line = ?1"),
            [line],
        )
        .unwrap();
    };
    // Line 2: REJECTED (Starpay has it SUCCESS).
    set(2, "state = 'REJECTED', message = 'rejected by Starpay (412 x) and not found by query: no money moved'");
    // Line 3: UNSENT, its attempt never sent.
    set(3, "state = 'UNSENT', message = NULL");
    c.execute(
        "UPDATE attempts SET send_count = 0 WHERE id = (SELECT attempt_id FROM rows WHERE run_id = 1 AND line = 3)",
        [],
    )
    .unwrap();
    // Line 4: REJECTED, Starpay has it PROCESSING.
    set(4, "state = 'REJECTED'");
    sim.force_state(&order_no(&c, 1, 4), TrxState::Processing, None)
        .unwrap();
    // Line 5: REJECTED, and Starpay's amount differs from ours.
    set(5, "state = 'REJECTED', amount = amount + 100");
    // Line 6: UNSENT waiting to resend after the not-found rule (the first send may have landed).
    set(6, "state = 'UNSENT', resent_after_not_found = 1");
    // Line 7: the same, but Starpay does not know its msgId: NOT_FOUND, never "as expected".
    set(7, "state = 'UNSENT', resent_after_not_found = 1");
    // Line 8: REJECTED and unknown to Starpay: nothing there, as expected (the control).
    set(8, "state = 'REJECTED'");
    for (line, msg) in [(7, "NEVERSEENBYSTARPAY7"), (8, "NEVERSEENBYSTARPAY8")] {
        c.execute(
            "UPDATE attempts SET msg_id = ?2 WHERE id = (SELECT attempt_id FROM rows WHERE run_id = 1 AND line = ?1)",
            params![line, msg],
        )
        .unwrap();
    }
    let amount_5 = payout_rows(&c, 1)[&5].2;

    let out = reconcile(&job, 1).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let recon = recon_rows(&c, 2);
    let action = "Starpay paid this row although it was recorded as unpaid: do not pay this reference again; check whether it was paid a second time elsewhere";
    for line in [2, 3, 4, 5, 6] {
        assert_eq!(
            recon[&line].0, "PAID_BUT_RECORDED_UNPAID",
            "line {line}: {:?}",
            recon[&line]
        );
        assert_eq!(recon[&line].1, action);
    }
    assert_eq!(recon[&7].0, "NOT_FOUND", "{:?}", recon[&7]);
    assert_eq!(recon[&8].0, "MATCHED", "{:?}", recon[&8]);
    assert_eq!(recon[&9].0, "MATCHED", "{:?}", recon[&9]);
    // The report says the same as the store.
    let report = read_report(&report_of(&out));
    let paid = report
        .iter()
        .filter(|r| r["category"] == "PAID_BUT_RECORDED_UNPAID")
        .count();
    assert_eq!(paid, 5, "{report:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PAID_BUT_RECORDED_UNPAID"),
        "{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WARNING: 5 row(s) PAID_BUT_RECORDED_UNPAID"),
        "{}",
        show(&out)
    );

    // The store: moved to the state Starpay implies, with an event carrying the raw answer.
    let rows = payout_rows(&c, 1);
    for (line, state) in [
        (2, "SUCCESS"),
        (3, "SUCCESS"),
        (4, "PENDING"),
        (5, "NEEDS_ATTENTION"),
        (6, "SUCCESS"),
        (7, "UNSENT"),
        (8, "REJECTED"),
    ] {
        assert_eq!(rows[&line].0, state, "line {line}: {:?}", rows[&line]);
    }
    let ours = starpay_batch::domain::Centavos::new(amount_5).to_string();
    let theirs = starpay_batch::domain::Centavos::new(amount_5 - 100).to_string();
    assert!(
        rows[&5].1.contains(&ours) && rows[&5].1.contains(&theirs),
        "both amounts in the message: {:?}",
        rows[&5]
    );
    let moved: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'reconcile_paid_recorded_unpaid' AND raw IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(moved, 5);

    // The references are blocked again: a new file paying them is refused, line by line; the
    // control reference (still REJECTED, nothing at Starpay) is not.
    let again = dir.path().join("again.csv");
    write_csv(&again, 9, |_| "2468");
    let job2 = write_job(dir.path(), "pay", &sim, &again, LIMITS, FAST_RESOLVE);
    let creates_before = sim
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/v1/disburse"))
        .count();
    let out = run(vec!["run".into(), s(&job2), "--dry-run".into()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for i in 0..5 {
        assert!(
            err.contains(&format!("REF-{i:06}")),
            "REF-{i:06} is blocked\n{err}"
        );
    }
    // The control reference (REJECTED: nothing at Starpay) is not blocked for good: it may be
    // paid again on purpose, with --repay and a live check.
    let control = err
        .lines()
        .find(|l| l.contains("REF-000006"))
        .unwrap_or_default();
    assert!(
        control.contains("ended REJECTED") && control.contains("--repay"),
        "the control reference needs only --repay\n{err}"
    );
    let creates_after = sim
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/v1/disburse"))
        .count();
    assert_eq!(creates_before, creates_after, "nothing was sent");
}

/// Defect 4: a reconcile pass cut by its deadline stays open and the next `reconcile` resumes
/// it: every row is checked exactly once across the two passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_pass_cut_by_its_deadline_is_resumed_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(83)).await;
    let n = 300;
    let job = pay(dir.path(), &sim, n, |_| "2468").await;
    let input = dir.path().join("payouts.csv");
    let before = sim.requests().len();
    // Slow and short: it cannot check 300 rows (about 40 in 2 s at 20 req/s).
    let slow = "requests_per_second = 20\nburst = 1\nconcurrency = 2\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    let short = FAST_RESOLVE.replace("deadline_secs = 60", "deadline_secs = 2");
    write_job(dir.path(), "pay", &sim, &input, slow, &short);
    let first = reconcile(&job, 1).await;
    assert_eq!(first.status.code(), Some(3), "{}", show(&first));
    let c = db(dir.path(), "pay");
    assert_eq!(run_status(&c, 2), "OPEN", "a cut pass is not finished");
    let checked_first: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM recon_rows WHERE run_id = 2 AND category IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        checked_first > 0 && checked_first < n as i64,
        "the first pass checked {checked_first} of {n}"
    );

    write_job(dir.path(), "pay", &sim, &input, LIMITS, FAST_RESOLVE);
    let second = reconcile(&job, 1).await;
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("resuming reconcile run 2"),
        "{}",
        show(&second)
    );
    assert_eq!(run_status(&c, 2), "FINISHED");
    let runs: i64 = c
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 2, "no new pass was started");
    let recon = recon_rows(&c, 2);
    assert_eq!(recon.len(), n);
    assert!(recon.values().all(|r| r.0 == "MATCHED"), "{recon:?}");
    // Exactly one query per row over both passes: in our store and at Starpay.
    let per_row: Vec<i64> = c
        .prepare(
            "SELECT (SELECT COUNT(*) FROM msg_ids m WHERE m.purpose = 'recon_query' AND m.row_id = x.id)
             FROM recon_rows x WHERE x.run_id = 2",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(per_row.iter().all(|&q| q == 1), "{per_row:?}");
    let queries = sim.requests()[before..]
        .iter()
        .filter(|q| q.path.ends_with("/v1/disburse/query"))
        .count();
    assert_eq!(queries, n, "each row queried once at Starpay");
    assert_eq!(read_report(&report_of(&second)).len(), n);
}

fn payout_fixture(
    msg_id: &str,
    amount: i64,
    state: &str,
    code: Option<&str>,
    age: u64,
) -> OrderFixture {
    OrderFixture {
        kind: FixtureKind::Payout,
        mch_id: "101510000001".into(),
        msg_id: msg_id.into(),
        ref_no: None,
        acct_no: Some("09170000001".into()),
        device_info: None,
        trx_amount: amount,
        state: state.into(),
        error_code: code.map(str::to_string),
        age_secs: age,
        fail_queries: false,
    }
}

/// Defect 13: a FAIL with an AB0x timeout reason still inside the hold is HELD_TIMEOUT with an
/// action saying when it becomes final, not STALE_PENDING; after the hold it is a final FAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_timeout_fail_is_held_timeout_not_stale_pending() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(SimConfig {
        fixtures: vec![
            payout_fixture("HELD0001", 10_000, "FAIL", Some("AB05"), 3_600),
            payout_fixture("HELD0002", 20_000, "FAIL", Some("AB05"), 90_000),
            payout_fixture("HELD0003", 30_000, "PROCESSING", None, 3_600),
        ],
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    })
    .await;
    let input = dir.path().join("recon.csv");
    std::fs::write(
        &input,
        "original_msg_id,reference,expected_amount,expected_state\nHELD0001,A,100.00,FAIL\nHELD0002,B,200.00,FAIL\nHELD0003,C,300.00,SUCCESS\n",
    )
    .unwrap();
    let resolve = "[resolve]\nstale_after_secs = 1800\nab_hold_secs = 86400\ndeadline_secs = 60\n";
    let job = write_job_kind(
        dir.path(),
        "held",
        "disbursement-recon",
        &sim,
        &input,
        LIMITS,
        resolve,
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "held rows are unresolved\n{}",
        show(&out)
    );
    let report = read_report(&report_of(&out));
    let by_ref: HashMap<&str, &HashMap<String, String>> = report
        .iter()
        .map(|r| (r["reference"].as_str(), r))
        .collect();
    let held = by_ref["A"];
    assert_eq!(held["category"], "HELD_TIMEOUT", "{held:?}");
    let trx_date = &held["trx_date"];
    let final_at = chrono::DateTime::parse_from_rfc3339(trx_date).unwrap()
        + chrono::TimeDelta::try_seconds(86_400).unwrap();
    assert_eq!(
        held["action"],
        format!(
            "a FAIL with timeout reason AB05 at {trx_date}, held for 1d because a late credit can still land; final after {}; re-check then",
            final_at.format("%Y-%m-%dT%H:%M:%S%:z")
        )
    );
    assert_eq!(
        by_ref["B"]["category"], "MATCHED",
        "hold over: a final FAIL"
    );
    assert_eq!(by_ref["C"]["category"], "STALE_PENDING");
    // Held rows are re-checked when the job runs again (the run stays open).
    let again = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(again.status.code(), Some(3), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming run 1"));
}

/// "One provider payment claimed twice": two lines resolving to one Starpay order (one by
/// `ref_no`, one by `original_msg_id`) are not both MATCHED, whatever the batches and a kill in
/// between; the later line is DUPLICATE_MATCH naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_starpay_order_claimed_by_two_lines_is_a_duplicate_match() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1200usize;
    let fixtures: Vec<OrderFixture> = (0..n)
        .map(|i| OrderFixture {
            kind: FixtureKind::StaticQrPayment,
            mch_id: "101510000001".into(),
            msg_id: format!("Q{i:08}"),
            ref_no: Some(format!("72{i:014}")),
            acct_no: None,
            device_info: Some("DEV1".into()),
            trx_amount: 1000 + i as i64,
            state: "SUCCESS".into(),
            error_code: None,
            age_secs: 600,
            fail_queries: false,
        })
        .collect();
    let sim = start_sim(SimConfig {
        fixtures,
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    })
    .await;
    // Line L (2-based) is order L-2 by ref_no, except the claims below, which name an earlier
    // line's order by its original msgId (lines far apart: different batches).
    let claims: HashMap<usize, usize> = [(1000, 2), (700, 7), (1150, 600), (1151, 3), (9, 8)]
        .into_iter()
        .collect();
    let mut csv = String::from("reference,ref_no,original_msg_id,expected_amount\n");
    for line in 2..n + 2 {
        let (key, order) = match claims.get(&line) {
            Some(first) => (format!(",Q{:08}", first - 2), first - 2),
            None => (format!("72{:014},", line - 2), line - 2),
        };
        let amount = 1000 + order;
        csv.push_str(&format!(
            "R{line},{key},{}.{:02}\n",
            amount / 100,
            amount % 100
        ));
    }
    let input = dir.path().join("recon.csv");
    std::fs::write(&input, csv).unwrap();
    let limits = "requests_per_second = 300\nburst = 50\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    let resolve = "[resolve]\nstale_after_secs = 1800\ndeadline_secs = 60\n";
    let job = write_job_kind(
        dir.path(),
        "dup",
        "repayment-recon",
        &sim,
        &input,
        limits,
        resolve,
    );
    // Killed once about 300 rows are checked: the first claims of lines 2, 3, 7 (and line 9's
    // pair) before the kill, the later claims (lines 700, 1000, 1150, 1151) after it.
    let mut child = spawn(vec!["run".into(), s(&job)]).await;
    wait_until_checked(
        &dir.path().join("dup.db"),
        300,
        Duration::from_secs(120),
        &mut child,
    )
    .await;
    kill_after(child, Duration::from_millis(0)).await;
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let c = db(dir.path(), "dup");
    let recon = recon_rows(&c, 1);
    let dups: HashSet<i64> = recon
        .iter()
        .filter(|(_, r)| r.0 == "DUPLICATE_MATCH")
        .map(|(l, _)| *l)
        .collect();
    let want: HashSet<i64> = claims.keys().map(|&l| l as i64).collect();
    assert_eq!(dups, want, "exactly the later claims");
    for (&line, &first) in &claims {
        let (_, action, message) = &recon[&(line as i64)];
        assert!(
            message.ends_with(&format!(
                " as line {first}, which claimed the payment first"
            )),
            "line {line}: {message}"
        );
        assert!(!action.is_empty());
        assert_eq!(recon[&(first as i64)].0, "MATCHED", "line {first} keeps it");
    }
    assert_eq!(
        recon.values().filter(|r| r.0 == "MATCHED").count(),
        n - claims.len()
    );
    let report = read_report(&report_of(&out));
    assert_eq!(
        report
            .iter()
            .filter(|r| r["category"] == "DUPLICATE_MATCH")
            .count(),
        claims.len()
    );
    // Idempotent: running it again changes nothing.
    let again = run(vec!["run".into(), s(&job)]).await;
    assert_ne!(again.status.code(), Some(0), "{}", show(&again));
    assert_eq!(recon_rows(&c, 1), recon);
}

/// Defect 5 (recon side) + defect 4, chaos: a reconcile pass SIGKILLed at several points is
/// never FINISHED with unchecked rows, rows final before a kill are not checked again, and the
/// resumed pass completes with its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_pass_killed_at_several_points_never_finishes_with_unchecked_rows() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(85)).await;
    let n = 400;
    let job = pay(dir.path(), &sim, n, |_| "2468").await;
    let input = dir.path().join("payouts.csv");
    let limits = "requests_per_second = 100\nburst = 10\nconcurrency = 4\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    write_job(dir.path(), "pay", &sim, &input, limits, FAST_RESOLVE);
    let path = dir.path().join("pay.db");
    let finished_with_unchecked = |c: &Connection| -> i64 {
        c.query_row(
            "SELECT COUNT(*) FROM runs u WHERE u.kind = 'reconcile' AND u.status = 'FINISHED'
               AND EXISTS (SELECT 1 FROM recon_rows x WHERE x.run_id = u.id AND x.category IS NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut snapshots: Vec<HashMap<i64, (i64, i64)>> = Vec::new();
    // Kill points: while starting (before or while the pass is created), then three times
    // once the pass has checked 50 more rows (an observable condition, not a fixed time).
    for (i, more) in [0usize, 50, 50, 50].into_iter().enumerate() {
        let child = spawn(vec![
            "reconcile".into(),
            s(&job),
            "--run".into(),
            "1".into(),
        ])
        .await;
        if more == 0 {
            kill_after(child, Duration::from_millis(150)).await;
        } else {
            let before = snapshots.last().map_or(0, HashMap::len);
            let mut child = child;
            wait_until_checked(&path, before + more, Duration::from_secs(120), &mut child).await;
            kill_after(child, Duration::from_millis(0)).await;
        }
        let c = Connection::open(&path).unwrap();
        assert_eq!(finished_with_unchecked(&c), 0, "after kill {i}");
        snapshots.push(checked_rows(&c));
        if i == 2 {
            // Between two kills, a pass cut by its deadline (it ends on its own, not killed).
            let short = FAST_RESOLVE.replace("deadline_secs = 60", "deadline_secs = 1");
            write_job(dir.path(), "pay", &sim, &input, limits, &short);
            let cut = reconcile(&job, 1).await;
            assert_eq!(cut.status.code(), Some(3), "{}", show(&cut));
            assert_eq!(
                finished_with_unchecked(&c),
                0,
                "after a pass cut by its deadline"
            );
            snapshots.push(checked_rows(&c));
            write_job(dir.path(), "pay", &sim, &input, limits, FAST_RESOLVE);
        }
    }
    let out = reconcile(&job, 1).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let c = Connection::open(&path).unwrap();
    assert_eq!(finished_with_unchecked(&c), 0);
    let passes: Vec<(i64, String)> = c
        .prepare("SELECT id, status FROM runs WHERE kind = 'reconcile'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        passes,
        vec![(2, "FINISHED".to_string())],
        "one pass, resumed after each kill, and finished"
    );
    let recon = recon_rows(&c, 2);
    assert_eq!(recon.len(), n);
    assert!(recon.values().all(|r| r.0 == "MATCHED"));
    assert_eq!(read_report(&report_of(&out)).len(), n);
    let end = checked_rows(&c);
    for snap in &snapshots {
        for (id, checked) in snap {
            assert_eq!(end.get(id), Some(checked), "row {id} was checked again");
        }
    }
}

/// Waits until at least `n` recon rows are checked (the pass may not exist yet), the child has
/// exited, or `bound`.
async fn wait_until_checked(db: &Path, n: usize, bound: Duration, child: &mut std::process::Child) {
    let start = std::time::Instant::now();
    while start.elapsed() < bound {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        let count = Connection::open(db).ok().and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM recon_rows WHERE category IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ok()
        });
        if count.is_some_and(|c| c as usize >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// recon row id → (checked_at, queries) for checked rows of reconcile passes.
fn checked_rows(c: &Connection) -> HashMap<i64, (i64, i64)> {
    c.prepare("SELECT id, checked_at, queries FROM recon_rows WHERE category = 'MATCHED'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Defect 5 (recon side): the report is written before the pass is finished, so a pass whose
/// report cannot be written stays open, and the next `reconcile` resumes it and writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_pass_whose_report_cannot_be_written_is_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(86)).await;
    let job = pay(dir.path(), &sim, 5, |_| "2468").await;
    // The reports directory cannot be created: a file is in its place.
    let reports = dir.path().join("reports");
    std::fs::rename(&reports, dir.path().join("reports-of-the-payout-run")).unwrap();
    std::fs::write(&reports, "not a directory").unwrap();
    let out = reconcile(&job, 1).await;
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let c = db(dir.path(), "pay");
    let checked: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM recon_rows WHERE run_id = 2 AND category IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(checked, 5, "every row was checked");
    assert_eq!(run_status(&c, 2), "OPEN", "no report, so not finished");
    std::fs::remove_file(&reports).unwrap();
    let again = reconcile(&job, 1).await;
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("resuming reconcile run 2"),
        "{}",
        show(&again)
    );
    assert_eq!(run_status(&c, 2), "FINISHED");
    assert_eq!(read_report(&report_of(&again)).len(), 5);
}

/// Migration 0003 rebuilds `recon_rows` (SQLite cannot alter a CHECK): a database made by the
/// earlier schema keeps its rows and indexes and accepts the new categories, and only them.
#[test]
fn migration_0003_keeps_recon_rows_and_accepts_the_new_categories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = Connection::open(&path).unwrap();
        for m in ["0001_init.sql", "0002_recon.sql"] {
            let sql = std::fs::read_to_string(root().join("migrations").join(m)).unwrap();
            c.execute_batch(&sql).unwrap();
        }
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute(
            "INSERT INTO runs (job, kind, input_path, input_sha256, status, created_at, row_count, total)
             VALUES ('old', 'repayment-recon', 'x.csv', 'abc', 'OPEN', 1, 2, 300)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO recon_rows (run_id, line, ref_no, lookup_key, expected_amount, category,
                 action, order_no, queries)
             VALUES (1, 2, '7100000000000001', 'ref:7100000000000001', 100, 'MATCHED', 'none',
                 '202611260000000001', 1),
                    (1, 3, '7100000000000002', 'ref:7100000000000002', 200, NULL, NULL, NULL, 0)",
            [],
        )
        .unwrap();
    }
    drop(starpay_batch::store::Store::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 3, "migrated to {version}");
    let rows: Vec<(i64, Option<String>, Option<String>, i64)> = c
        .prepare("SELECT line, category, order_no, queries FROM recon_rows ORDER BY line")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                2,
                Some("MATCHED".into()),
                Some("202611260000000001".into()),
                1
            ),
            (3, None, None, 0)
        ]
    );
    let indexes: HashSet<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recon_rows'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for i in ["recon_rows_key", "recon_rows_todo", "recon_rows_order"] {
        assert!(indexes.contains(i), "{i} missing: {indexes:?}");
    }
    for category in [
        "PAID_BUT_RECORDED_UNPAID",
        "DUPLICATE_MATCH",
        "HELD_TIMEOUT",
    ] {
        c.execute(
            "UPDATE recon_rows SET category = ?1 WHERE line = 3",
            [category],
        )
        .unwrap_or_else(|e| panic!("{category}: {e}"));
    }
    assert!(
        c.execute(
            "UPDATE recon_rows SET category = 'BOGUS' WHERE line = 3",
            []
        )
        .is_err(),
        "the CHECK constraint is still there"
    );
}

/// The exit code of a recon summary: held rows are unresolved (3); a payment recorded as unpaid
/// or claimed twice is a finding (2), never 0.
#[test]
fn recon_exit_codes_of_the_new_categories() {
    use starpay_batch::domain::{Centavos, ReconCategory};
    use starpay_batch::report::ReconSummary;
    let summary = |rows: &[(&str, i64)]| ReconSummary {
        rows: rows
            .iter()
            .map(|(c, n)| {
                let c = ReconCategory::parse(c).expect("a known category");
                (c, *n, Centavos::new(100))
            })
            .collect(),
        ..ReconSummary::default()
    };
    assert_eq!(summary(&[("MATCHED", 3)]).exit_code(), 0);
    assert_eq!(
        summary(&[("MATCHED", 3), ("PAID_BUT_RECORDED_UNPAID", 1)]).exit_code(),
        2
    );
    assert_eq!(
        summary(&[("MATCHED", 3), ("DUPLICATE_MATCH", 1)]).exit_code(),
        2
    );
    assert_eq!(
        summary(&[("MATCHED", 3), ("HELD_TIMEOUT", 1)]).exit_code(),
        3
    );
    for c in [
        "PAID_BUT_RECORDED_UNPAID",
        "DUPLICATE_MATCH",
        "HELD_TIMEOUT",
    ] {
        assert!(
            ReconCategory::ALL.iter().any(|k| k.as_str() == c),
            "{c} has its place in the report order"
        );
    }
}
