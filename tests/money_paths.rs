//! The money paths end to end (issue 15): every safety rule of the README exercised with the
//! real binary, the real simulator over 127.0.0.1, a real SQLite file, and the simulator's
//! ledger and request log as the oracle.
//!
//! Kept small for CI (a few rows, deadlines of seconds). Run: `cargo test --test money_paths`.

mod payout_common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use payout_common::*;
use starpay_batch::domain::{Centavos, TrxState};
use starpay_batch::server::sim::{
    FaultConfig, FaultScope, LedgerSnapshot, MerchantStatus, SimHandle,
};
use starpay_batch::starpay::sign::PublicKey;

const MCH: &str = "101510000001";
const LIMITS: &str = "requests_per_second = 200\nburst = 50\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
/// Slow enough that a test can act while the run is still sending.
const LIMITS_SLOW: &str = "requests_per_second = 4\nburst = 1\nconcurrency = 2\nrequest_timeout_secs = 10\nconnect_timeout_secs = 2";
/// Generous bound for waits on observable conditions (never reached by a working engine).
const BOUND: Duration = Duration::from_secs(60);
const FINAL: [&str; 4] = ["SUCCESS", "FAILED", "REVERSED", "REJECTED"];

fn report_of(dir: &Path, job: &str, run: u32) -> Vec<HashMap<String, String>> {
    read_report(&dir.join(format!("reports/{job}-{run}.csv")))
}

/// Every row of `report` has an order in the ledger, sent once (`createRequests == 1`), and the
/// row's state, order number and amount agree with it.
fn assert_rows_match_ledger(report: &[HashMap<String, String>], ledger: &LedgerSnapshot) {
    for r in report {
        let o = ledger
            .order(&r["msg_id"])
            .unwrap_or_else(|| panic!("row without an order {r:?}"));
        assert_eq!(r["state"], expected_state(&o.state), "{r:?} vs {o:?}");
        assert_eq!(r["order_no"], o.order_no, "{r:?}");
        assert_eq!(centavos(&r["amount"]), o.trx_amount, "{r:?}");
        assert_eq!(o.create_requests, 1, "sent once: {o:?}");
    }
}

/// Orders per account number (the generated files give every row its own account).
fn orders_per_account(ledger: &LedgerSnapshot) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for o in &ledger.orders {
        *m.entry(o.acct_no.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    m
}

// ------------------------------------------------------------------ 1. unverified answers

/// One job per fault: with the fault on every payout answer (sends and queries), no row
/// becomes final and nothing is sent twice; with the fault on some answers, the resumed run
/// resolves every row by verified queries, in agreement with the ledger.
async fn no_row_final_from(
    sim: &SimHandle,
    dir: &Path,
    idx: usize,
    name: &str,
    all: FaultConfig,
    some: FaultConfig,
) {
    let input = dir.join(format!("{name}.csv"));
    write_csv_with(&input, 6, &format!("F{idx}-"), &format!("{idx}"), |i| {
        if i == 2 {
            "0401"
        } else {
            "2468"
        }
    });
    sim.set_faults(all).unwrap();
    let before = sim.requests().len();
    let job = write_job(dir, name, sim, &input, LIMITS, &resolve_with(3, 2));
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{name}: nothing resolved\n{}",
        show(&out)
    );
    let report = report_of(dir, name, 1);
    assert_eq!(report.len(), 6);
    let ledger = sim.ledger();
    let hit: Vec<_> = sim.requests()[before..]
        .iter()
        .filter(|q| q.fault.as_deref() == Some(name))
        .cloned()
        .collect();
    assert!(
        hit.iter().any(|q| q.path.ends_with("/v1/disburse")),
        "{name}: the fault hit the sends"
    );
    assert!(
        hit.iter().any(|q| q.path.ends_with("/v1/disburse/query")),
        "{name}: the fault hit the queries"
    );
    for r in &report {
        assert!(
            !FINAL.contains(&r["state"].as_str()),
            "{name}: a row took its state from an answer it cannot trust: {r:?}"
        );
        let o = ledger
            .order(&r["msg_id"])
            .unwrap_or_else(|| panic!("{name}: {r:?} was sent"));
        assert_eq!(o.create_requests, 1, "{name}: never re-sent: {o:?}");
        // The truth was there to be (mis)read: the ledger is final.
        assert!(matches!(o.state.as_str(), "SUCCESS" | "FAIL"), "{o:?}");
    }

    if name == "echo_wrong_amount" {
        // A verified answer about our payout with another amount is a stop sign (issue 8):
        // every row went to NEEDS_ATTENTION at once, naming both amounts, and none took the
        // answer's state. A human settles them; nothing is left for a resumed run.
        for r in &report {
            assert_eq!(r["state"], "NEEDS_ATTENTION", "{r:?}");
            assert!(r["message"].contains("AMOUNT_MISMATCH"), "{r:?}");
        }
        return;
    }
    sim.set_faults(some).unwrap();
    let before = sim.requests().len();
    let job = write_job(dir, name, sim, &input, LIMITS, &resolve_with(40, 2));
    let out = run(vec!["run".into(), s(&job)]).await;
    let report = report_of(dir, name, 1);
    assert_eq!(report.len(), 6);
    let ledger = sim.ledger();
    assert_eq!(out.status.code(), Some(2), "0401 fails\n{}", show(&out));
    assert_rows_match_ledger(&report, &ledger);
    // Seeded per request: how many answers of this resolving run were hit (not asserted: a
    // handful of draws at 0.5 can all miss).
    let hits = sim.requests()[before..]
        .iter()
        .filter(|q| q.fault.as_deref() == Some(name))
        .count();
    eprintln!("{name}: {hits} faulted answers while the run resolved");
}

/// Item 1: `bad_signature` and `unsigned` answers on sends and queries never make a row final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_answers_never_make_a_row_final() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(101)).await;
    let scoped = |bad: f64, unsigned: f64| FaultConfig {
        bad_signature: bad,
        unsigned,
        faults_on: FaultScope::Payouts,
        ..FaultConfig::default()
    };
    no_row_final_from(
        &sim,
        dir.path(),
        1,
        "bad_signature",
        scoped(1.0, 0.0),
        scoped(0.5, 0.0),
    )
    .await;
    no_row_final_from(
        &sim,
        dir.path(),
        2,
        "unsigned",
        scoped(0.0, 1.0),
        scoped(0.0, 0.5),
    )
    .await;
}

/// Item 1: a validly signed answer that echoes another msgId or another amount is not about
/// this payout: no row takes its state from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_about_another_payout_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(102)).await;
    let scoped = |id: f64, amount: f64| FaultConfig {
        echo_wrong_msg_id: id,
        echo_wrong_amount: amount,
        faults_on: FaultScope::Payouts,
        ..FaultConfig::default()
    };
    no_row_final_from(
        &sim,
        dir.path(),
        1,
        "echo_wrong_msg_id",
        scoped(1.0, 0.0),
        scoped(0.5, 0.0),
    )
    .await;
    no_row_final_from(
        &sim,
        dir.path(),
        2,
        "echo_wrong_amount",
        scoped(0.0, 1.0),
        scoped(0.0, 0.5),
    )
    .await;
}

// ------------------------------------------------------------------ 3. the AB0x hold

both_backends! {
/// Item 3: a FAIL AB05 is held (not FAILED, so not retryable) until the hold ends; `retry`
/// leaves it alone; when it later turns SUCCESS the row ends SUCCESS.
async fn ab05_hold_then_success() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(103)).await;
    let input = dir.path().join("hold.csv");
    // Row 0 stays PROCESSING until forced; row 1 succeeds; row 2 fails AC01 (retryable with
    // the flag, so `retry` has work and is seen to act).
    let suffixes = ["0999", "1111", "0401"];
    write_csv(&input, 3, |i| suffixes[i]);
    let job = write_job(
        dir.path(),
        "hold",
        &sim,
        &input,
        LIMITS,
        &resolve_with(3, 600),
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let held_msg = report_of(dir.path(), "hold", 1)[0]["msg_id"].clone();
    let order_no = sim.ledger().order(&held_msg).unwrap().order_no.clone();
    sim.force_state(&order_no, TrxState::Fail, Some("AB05"))
        .unwrap();

    // The resumed run sees FAIL AB05: held, not FAILED.
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report = report_of(dir.path(), "hold", 1);
    let held = &report[0];
    assert_eq!(held["trx_state"], "FAIL", "{held:?}");
    assert_eq!(held["error_code"], "AB05", "{held:?}");
    assert!(
        !FINAL.contains(&held["state"].as_str()),
        "a held AB05 is not final: {held:?}"
    );
    assert_eq!(report[2]["state"], "FAILED");

    // retry re-sends the FAILED AC01 row (with the flag) and leaves the held row alone.
    let creates_before = sends(&sim).len();
    let retry = run(vec![
        "retry".into(),
        s(&job),
        "--run".into(),
        "1".into(),
        "--include-beneficiary-errors".into(),
    ])
    .await;
    assert!(
        matches!(retry.status.code(), Some(2) | Some(3)),
        "{}",
        show(&retry)
    );
    let after_retry = sends(&sim);
    assert_eq!(
        after_retry.len(),
        creates_before + 1,
        "only the AC01 row is re-sent"
    );
    let report = report_of(dir.path(), "hold", 1);
    assert_eq!(
        report[0]["msg_id"], held_msg,
        "the held row keeps its msgId"
    );
    assert!(
        !FINAL.contains(&report[0]["state"].as_str()),
        "{:?}",
        report[0]
    );
    assert!(report[2]["msg_id"].ends_with("A2"), "{:?}", report[2]);
    assert_eq!(
        orders_per_account(&sim.ledger())
            .get(&format!("{:06}0999", 0))
            .copied(),
        Some(1),
        "no second order for the held row"
    );

    // The late credit lands: the row ends SUCCESS.
    sim.force_state(&order_no, TrxState::Success, None).unwrap();
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "AC01 fails again\n{}",
        show(&out)
    );
    let report = report_of(dir.path(), "hold", 1);
    assert_eq!(report[0]["state"], "SUCCESS", "{:?}", report[0]);
    assert_eq!(report[0]["msg_id"], held_msg);
    assert_eq!(sim.ledger().order(&held_msg).unwrap().create_requests, 1);
}
}

// ------------------------------------------------------------------ 4. the not-found rule

both_backends! {
/// Item 4a: the first send never reaches Starpay (connection reset before processing); three
/// verified 404s over the window → a resend of the same msgId with the same bytes, which pays
/// the row once.
async fn not_found_resends_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(104)).await;
    let input = dir.path().join("nf.csv");
    write_csv(&input, 2, |_| "3579");
    sim.set_faults(FaultConfig {
        reset_before: 1.0,
        faults_on: FaultScope::Sends,
        ..FaultConfig::default()
    })
    .unwrap();
    let job = write_job(dir.path(), "nf", &sim, &input, LIMITS, &resolve_with(40, 2));
    let child = spawn(vec!["run".into(), s(&job)]).await;
    // Both first sends were reset (nothing committed): let the resends through.
    eventually("both first sends reset", BOUND, || {
        sends(&sim)
            .iter()
            .filter(|q| q.fault.as_deref() == Some("reset_before"))
            .count()
            >= 2
    })
    .await;
    sim.set_faults(FaultConfig::default()).unwrap();
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = report_of(dir.path(), "nf", 1);
    let ledger = sim.ledger();
    assert_rows_match_ledger(&report, &ledger);
    let all_sends = sends(&sim);
    let all_queries = queries(&sim);
    for r in &report {
        assert!(r["msg_id"].ends_with("A1"), "same msgId: {r:?}");
        let mine: Vec<_> = all_sends
            .iter()
            .filter(|q| q.msg_id.as_deref() == Some(r["msg_id"].as_str()))
            .collect();
        assert!(mine.len() >= 2, "a resend happened: {mine:?}");
        assert_eq!(mine[0].fault.as_deref(), Some("reset_before"));
        let bytes: HashSet<_> = mine.iter().map(|q| q.request_sha256.clone()).collect();
        assert_eq!(bytes.len(), 1, "the same bytes every time: {mine:?}");
        assert!(mine[0].request_sha256.is_some());
        // The resend came after three 404s.
        let last = mine.last().unwrap().seq;
        let not_found = all_queries
            .iter()
            .filter(|q| q.seq < last && q.code.as_deref() == Some("404"))
            .count();
        assert!(not_found >= 3, "{not_found} 404s before the resend");
    }
}
}

both_backends! {
/// Item 4b: the payout exists but queries answer 404 (`query_lag`): after three 404s the same
/// bytes are resent, Starpay answers 403 (repeated msgId), and the row goes to NEEDS_ATTENTION
/// — never a new msgId, never a second order.
async fn not_found_resend_refused_needs_attention() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(105)).await;
    sim.set_faults(FaultConfig {
        query_lag: 1.0,
        query_lag_secs: 100_000,
        ..FaultConfig::default()
    })
    .unwrap();
    let input = dir.path().join("lag.csv");
    write_csv(&input, 2, |_| "8642");
    let job = write_job(
        dir.path(),
        "lag",
        &sim,
        &input,
        LIMITS,
        &resolve_with(30, 2),
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report = report_of(dir.path(), "lag", 1);
    let ledger = sim.ledger();
    let all_sends = sends(&sim);
    for r in &report {
        assert_eq!(r["state"], "NEEDS_ATTENTION", "{r:?}");
        assert!(r["msg_id"].ends_with("A1"));
        let o = ledger.order(&r["msg_id"]).unwrap();
        assert_eq!(
            o.create_requests, 2,
            "the first send and the refused resend"
        );
        let mine: Vec<_> = all_sends
            .iter()
            .filter(|q| q.msg_id.as_deref() == Some(r["msg_id"].as_str()))
            .collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert_eq!(mine[1].code.as_deref(), Some("403"));
        assert_eq!(mine[0].request_sha256, mine[1].request_sha256, "same bytes");
    }
    assert_eq!(ledger.orders.len(), 2, "one order per row");
}
}

// ------------------------------------------------------------------ 5. stop codes

/// A run against a merchant that is suspended (414) or whose key Starpay no longer accepts
/// (402) during the run: exit 1, every msgId kept, and after the fix the resumed run re-sends
/// the same bytes for the rows that never reached Starpay; one order per row.
async fn stop_code_mid_run(code: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(seed)).await;
    let input = dir.path().join("stop.csv");
    let n = 12;
    write_csv(&input, n, |_| "1470");
    let job = write_job(
        dir.path(),
        "stop",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve_with(40, 2),
    );
    let child = spawn_piped(vec!["run".into(), s(&job)]).await;
    eventually("a few payouts sent", BOUND, || sends(&sim).len() >= 3).await;
    let demo_key = || {
        PublicKey::from_file(&root().join("samples/keys/TEST-ONLY-demo-merchant-public.pem"))
            .unwrap()
    };
    match code {
        "414" => sim
            .set_merchant_status(MCH, MerchantStatus::Suspended)
            .unwrap(),
        "402" => sim
            .set_merchant_key(MCH, sim.platform_public_key())
            .unwrap(),
        _ => unreachable!(),
    }
    let out = wait_output(child).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "stop code {code}\n{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(code),
        "{}",
        show(&out)
    );
    let stopped = sends(&sim);
    assert!(
        stopped.iter().any(|q| q.code.as_deref() == Some(code)),
        "{stopped:?}"
    );
    assert!(sim.ledger().orders.len() < n, "stopped mid-run");
    let report = report_of(dir.path(), "stop", 1);
    assert_eq!(report.len(), n, "every row in the report");
    let ids_before: HashMap<String, String> = report
        .iter()
        .filter(|r| !r["msg_id"].is_empty())
        .map(|r| (r["reference"].clone(), r["msg_id"].clone()))
        .collect();

    // The operator fixes it; the run resumes.
    match code {
        "414" => sim
            .set_merchant_status(MCH, MerchantStatus::Active)
            .unwrap(),
        _ => sim.set_merchant_key(MCH, demo_key()).unwrap(),
    }
    let job = write_job(
        dir.path(),
        "stop",
        &sim,
        &input,
        LIMITS,
        &resolve_with(40, 2),
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = report_of(dir.path(), "stop", 1);
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), n, "one order per row");
    assert_rows_match_ledger(&report, &ledger);
    for r in &report {
        if let Some(old) = ids_before.get(&r["reference"]) {
            assert_eq!(old, &r["msg_id"], "msgId kept across the stop");
        }
        assert!(r["msg_id"].ends_with("A1"), "{r:?}");
    }
    let all = sends(&sim);
    let mut resent_same = 0;
    for r in &report {
        let mine: Vec<_> = all
            .iter()
            .filter(|q| q.msg_id.as_deref() == Some(r["msg_id"].as_str()))
            .collect();
        let bytes: HashSet<_> = mine.iter().map(|q| q.request_sha256.clone()).collect();
        assert_eq!(
            bytes.len(),
            1,
            "same bytes for every send of a msgId: {mine:?}"
        );
        if mine.len() >= 2 && mine[0].code.as_deref() == Some(code) {
            resent_same += 1;
        }
    }
    assert!(
        resent_same >= 1,
        "a row refused with {code} was re-sent with the same msgId and bytes"
    );
}

/// Item 5: merchant suspended mid-run (414).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_suspended_mid_run() {
    stop_code_mid_run("414", 106).await;
}

/// Item 5: the merchant key no longer accepted mid-run (402).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_swapped_mid_run() {
    stop_code_mid_run("402", 107).await;
}

// ------------------------------------------------------------------ 6. balance pre-flight

both_backends! {
/// Item 6: `--dry-run` sends nothing; `run` and `retry` refuse a total above the available
/// balance (nothing sent) and go ahead when it fits exactly.
async fn balance_preflight_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(108)).await;
    let input = dir.path().join("bal.csv");
    let n = 8;
    write_csv(&input, n, |i| if i % 3 == 0 { "0401" } else { "2580" });
    let total: i64 = (0..n).map(|i| amount_of(i).1).sum();
    let failed_total: i64 = (0..n).filter(|i| i % 3 == 0).map(|i| amount_of(i).1).sum();
    let job = write_job(
        dir.path(),
        "bal",
        &sim,
        &input,
        LIMITS,
        &resolve_with(30, 2),
    );

    let dry = run(vec!["run".into(), s(&job), "--dry-run".into()]).await;
    assert_eq!(dry.status.code(), Some(0), "{}", show(&dry));
    assert!(sim.requests().is_empty(), "a dry run sends nothing at all");

    let set = |c: i64| {
        sim.set_balances(MCH, Some(Centavos::new(c)), None).unwrap();
    };
    set(total - 1);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("balance"),
        "{}",
        show(&out)
    );
    assert!(sends(&sim).is_empty(), "no payout sent over the balance");
    assert!(sim.ledger().orders.is_empty());

    set(total);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(sim.ledger().orders.len(), n);
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("reports"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let run_no = if runs.iter().any(|f| f == "bal-2.csv") {
        2
    } else {
        1
    };
    let report = report_of(dir.path(), "bal", run_no);
    assert_rows_match_ledger(&report, &sim.ledger());

    // retry: the FAILED rows' total must fit the balance.
    set(failed_total - 1);
    let before = sends(&sim).len();
    let args = || {
        vec![
            "retry".into(),
            s(&job),
            "--run".into(),
            run_no.to_string(),
            "--include-beneficiary-errors".into(),
        ]
    };
    let out = run(args()).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("balance"),
        "{}",
        show(&out)
    );
    assert_eq!(
        sends(&sim).len(),
        before,
        "retry over the balance sends nothing"
    );
    set(failed_total);
    let out = run(args()).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        sends(&sim).len(),
        before + (0..n).filter(|i| i % 3 == 0).count(),
        "each FAILED row re-sent once"
    );
}
}

// ------------------------------------------------------------------ 7. concurrency

both_backends! {
/// Item 7a: a second process on the same job is refused by the lock while the first runs
/// (SQLite; on PostgreSQL it joins the run as a second runner); the first finishes with one
/// order per row, nothing sent twice.
async fn second_process_on_the_same_job_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(109)).await;
    let input = dir.path().join("lock.csv");
    let n = 10;
    write_csv(&input, n, |_| "3690");
    let job = write_job(
        dir.path(),
        "lock",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve_with(40, 2),
    );
    let first = spawn_piped(vec!["run".into(), s(&job)]).await;
    eventually("the first process is sending", BOUND, || {
        !sends(&sim).is_empty()
    })
    .await;
    let second = run(vec!["run".into(), s(&job)]).await;
    if database_of(dir.path(), "lock").starts_with("postgres") {
        // PostgreSQL: `run` shares the job lock; the second runner joins the same run (issue
        // 14 part B; tests/runners.rs) and exits with the run's code. Other commands are still
        // refused while it works (store test `postgres_claims_leases_and_takeover`).
        assert_eq!(second.status.code(), Some(0), "{}", show(&second));
        assert!(
            String::from_utf8_lossy(&second.stderr).contains("resuming run 1"),
            "{}",
            show(&second)
        );
    } else {
        // 75 (EX_TEMPFAIL): a scheduler tries again later (issue 10).
        assert_eq!(second.status.code(), Some(75), "{}", show(&second));
        assert!(
            String::from_utf8_lossy(&second.stderr).contains("another starpay-batch process"),
            "{}",
            show(&second)
        );
    }
    let first = wait_output(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), n);
    assert_rows_match_ledger(&report_of(dir.path(), "lock", 1), &ledger);
    assert_eq!(sends(&sim).len(), n, "nothing sent twice");
}
}

both_backends! {
/// Item 7b: two different jobs on one database pay the same references at the same moment:
/// exactly one order per reference in the ledger.
async fn two_jobs_one_database_pay_a_reference_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(110)).await;
    let n = 6;
    let a_in = dir.path().join("a.csv");
    let b_in = dir.path().join("b.csv");
    write_csv(&a_in, n, |_| "4812");
    write_csv(&b_in, n, |_| "4812");
    // A different file (another note), the same references and accounts.
    let b_text = std::fs::read_to_string(&b_in)
        .unwrap()
        .replace(",row ", ",again ");
    std::fs::write(&b_in, b_text).unwrap();
    let a = write_job(dir.path(), "a", &sim, &a_in, LIMITS, &resolve_with(30, 2));
    let b = write_job(dir.path(), "b", &sim, &b_in, LIMITS, &resolve_with(30, 2));
    let shared_db = dir.path().join("a.db").display().to_string();
    let b_text = std::fs::read_to_string(&b)
        .unwrap()
        .replace(&dir.path().join("b.db").display().to_string(), &shared_db);
    std::fs::write(&b, b_text).unwrap();
    let ca = spawn_piped(vec!["run".into(), s(&a)]).await;
    let cb = spawn_piped(vec!["run".into(), s(&b)]).await;
    let (oa, ob) = (wait_output(ca).await, wait_output(cb).await);
    // Either job may win any reference; each finishes (0: all paid, 2: some REJECTED as paid
    // by the other, 1: refused at validation because the other already paid them all).
    for o in [&oa, &ob] {
        assert!(matches!(o.status.code(), Some(0..=2)), "{}", show(o));
    }
    let ledger = sim.ledger();
    // Each reference is SUCCESS in exactly one job's report and its order is that row's.
    let mut paid: HashMap<String, Vec<String>> = HashMap::new();
    for name in ["a", "b"] {
        for run_no in 1..=2 {
            let path = dir.path().join(format!("reports/{name}-{run_no}.csv"));
            if !path.exists() {
                continue;
            }
            for r in read_report(&path) {
                if r["state"] == "SUCCESS" {
                    assert!(ledger.order(&r["msg_id"]).is_some(), "{r:?}");
                    paid.entry(r["reference"].clone())
                        .or_default()
                        .push(format!("{name}: {}", r["msg_id"]));
                } else {
                    assert!(
                        matches!(r["state"].as_str(), "REJECTED"),
                        "the other job's row is refused: {r:?}"
                    );
                }
            }
        }
    }
    assert_eq!(paid.len(), n, "{paid:?}");
    for (reference, by) in &paid {
        assert_eq!(by.len(), 1, "{reference} paid by {by:?}");
    }
    assert_eq!(ledger.orders.len(), n, "one order per reference");
    for (acct, k) in orders_per_account(&ledger) {
        assert_eq!(k, 1, "{acct} paid {k} times");
    }
    for o in &ledger.orders {
        assert_eq!(o.create_requests, 1, "{o:?}");
    }
}
}

// ------------------------------------------------------------------ 8. interruption

both_backends! {
/// Item 8: Ctrl-C mid-run stops taking work, writes the report with every row once, exits 3;
/// the resumed run finishes with one order per row.
async fn ctrl_c_exits_3_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(111)).await;
    let input = dir.path().join("int.csv");
    let n = 12;
    write_csv(&input, n, |_| "5791");
    let job = write_job(
        dir.path(),
        "int",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve_with(40, 2),
    );
    let child = spawn_piped(vec!["run".into(), s(&job)]).await;
    eventually("sending", BOUND, || sends(&sim).len() >= 2).await;
    sigint(&child);
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("report:"),
        "{}",
        show(&out)
    );
    let report = report_of(dir.path(), "int", 1);
    assert_eq!(report.len(), n, "every row once");
    assert!(
        report.iter().any(|r| !FINAL.contains(&r["state"].as_str())),
        "interrupted mid-work"
    );
    assert!(sim.ledger().orders.len() < n, "interrupted before the end");

    let job = write_job(
        dir.path(),
        "int",
        &sim,
        &input,
        LIMITS,
        &resolve_with(40, 2),
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), n);
    assert_rows_match_ledger(&report_of(dir.path(), "int", 1), &ledger);
}
}

/// Item 8: a second Ctrl-C quits at once (exit 3, before the report) while a send is still in
/// flight; the store stays consistent: the resumed run resolves that send by query and
/// finishes with one order per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_ctrl_c_quits_and_the_store_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(112)).await;
    // Sends are processed, then their answers held past the 10 s request timeout: the first
    // Ctrl-C waits for them, the second does not.
    sim.set_faults(FaultConfig {
        hang: 1.0,
        hang_secs: 30,
        faults_on: FaultScope::Sends,
        ..FaultConfig::default()
    })
    .unwrap();
    let input = dir.path().join("quit.csv");
    let n = 6;
    write_csv(&input, n, |_| "6802");
    let job = write_job(
        dir.path(),
        "quit",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve_with(40, 2),
    );
    let err_path = dir.path().join("quit.err");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let job_s = s(&job);
    let child = tokio::task::spawn_blocking(move || {
        bin()
            .args(["run", &job_s])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(err_file)
            .spawn()
            .unwrap()
    })
    .await
    .unwrap();
    eventually("a send in flight", BOUND, || !sends(&sim).is_empty()).await;
    sigint(&child);
    eventually("the first Ctrl-C is handled", BOUND, || {
        std::fs::read_to_string(&err_path)
            .unwrap_or_default()
            .contains("interrupted")
    })
    .await;
    sigint(&child);
    let out = wait_output(child).await;
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("report:"),
        "quit before waiting for the in-flight send and writing the report\n{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );

    sim.set_faults(FaultConfig::default()).unwrap();
    let job = write_job(
        dir.path(),
        "quit",
        &sim,
        &input,
        LIMITS,
        &resolve_with(40, 2),
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = report_of(dir.path(), "quit", 1);
    assert_eq!(report.len(), n);
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), n, "one order per row");
    assert_rows_match_ledger(&report, &ledger);
}
