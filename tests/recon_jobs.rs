//! Reconciliation jobs end to end (issue 5): the real binary against the real simulator over
//! 127.0.0.1, its ledger as the oracle, a real SQLite file.

mod payout_common;

use std::collections::HashMap;
use std::time::Duration;

use payout_common::*;
use starpay_batch::server::sim::{FixtureKind, OrderFixture, SimConfig};

const LIMITS: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
const RESOLVE: &str = "[resolve]\nstale_after_secs = 1800\ndeadline_secs = 60\n";

fn fixture(
    kind: FixtureKind,
    msg_id: &str,
    ref_no: Option<&str>,
    amount: i64,
    state: &str,
    age_secs: u64,
) -> OrderFixture {
    OrderFixture {
        kind,
        mch_id: "101510000001".into(),
        msg_id: msg_id.into(),
        ref_no: ref_no.map(str::to_string),
        acct_no: None,
        device_info: Some("DEV1".into()),
        trx_amount: amount,
        state: state.into(),
        error_code: None,
        age_secs,
        fail_queries: false,
    }
}

both_backends! {
/// Acceptance 1: every category, and the report agrees with the simulator's ledger.
async fn every_category_agrees_with_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    // The demo's simulator settings are the fixture set that covers every category.
    let cfg = SimConfig::from_toml_file(&root().join("samples/sim-recon-demo.toml")).unwrap();
    let sim = start_sim(SimConfig {
        rate_limit_per_sec: 0.0,
        ..cfg
    })
    .await;
    let job = write_job_kind(
        dir.path(),
        "eod",
        "repayment-recon",
        &sim,
        &root().join("samples/repayments.csv"),
        LIMITS,
        RESOLVE,
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "pending and unknown rows remain\n{}",
        show(&out)
    );
    let report = read_report(&dir.path().join("reports/eod-1.csv"));
    let input = std::fs::read_to_string(root().join("samples/repayments.csv")).unwrap();
    assert_eq!(
        report.len(),
        input.lines().count() - 1,
        "one line per input row"
    );
    // The category of each line of samples/repayments.csv (fixtures in
    // samples/sim-recon-demo.toml); every category appears.
    let expected: [(&str, &str); 12] = [
        ("2", "MATCHED"),                // paid static QR
        ("3", "AMOUNT_MISMATCH"),        // 999.00 paid, 1,000.00 expected
        ("4", "STATE_MISMATCH"),         // QR expired unpaid, expected paid
        ("5", "NOT_FOUND"),              // refNo Starpay does not know
        ("6", "PENDING"),                // QR shown a minute ago
        ("7", "STALE_PENDING"),          // pending two hours
        ("8", "REVERSED_AFTER_SUCCESS"), // paid, then reversed
        ("9", "DUPLICATE_IN_INPUT"),     // line 2 again
        ("10", "UNKNOWN"),               // every query answers 502
        ("11", "MATCHED"),               // paid dynamic QR, no expectations
        ("12", "STATE_MISMATCH"),        // cancelled, no expectations
        ("13", "DUPLICATE_MATCH"),       // by msgId, the same order line 2 claimed by refNo
    ];
    assert_eq!(report.len(), expected.len());
    for (r, (line, category)) in report.iter().zip(expected) {
        assert_eq!(r["line"], line);
        assert_eq!(r["category"], category, "line {line}: {r:?}");
    }
    let ledger = sim.ledger();
    let by_ref: HashMap<&str, _> = ledger
        .orders
        .iter()
        .filter_map(|o| o.ref_no.as_deref().map(|r| (r, o)))
        .collect();
    let by_msg: HashMap<&str, _> = ledger
        .orders
        .iter()
        .map(|o| (o.msg_id.as_str(), o))
        .collect();
    let money = |c: i64| starpay_batch::domain::Centavos::new(c).to_string();
    for r in &report {
        let order = if !r["ref_no"].is_empty() {
            by_ref.get(r["ref_no"].as_str())
        } else {
            by_msg.get(r["original_msg_id"].as_str())
        };
        match r["category"].as_str() {
            "NOT_FOUND" => {
                assert!(order.is_none(), "{r:?}");
                assert_eq!(r["provider_amount"], "", "{r:?}");
                assert_eq!(r["difference"], "", "{r:?}");
            }
            "DUPLICATE_IN_INPUT" => {
                let first = report
                    .iter()
                    .find(|o| o["reference"] == r["reference"])
                    .unwrap();
                assert_ne!(first["line"], r["line"], "an earlier line has {r:?}");
                assert_ne!(first["category"], "DUPLICATE_IN_INPUT");
            }
            "UNKNOWN" => {
                // The order exists, but no verified answer about it came back.
                assert!(order.is_some(), "{r:?}");
                assert_eq!(r["trx_state"], "", "{r:?}");
                assert_eq!(r["provider_amount"], "", "{r:?}");
                assert_eq!(r["difference"], "", "{r:?}");
            }
            _ => {
                let o = order.unwrap_or_else(|| panic!("no ledger order for {r:?}"));
                assert_eq!(r["trx_state"], o.state, "{r:?}");
                assert_eq!(r["order_no"], o.order_no, "{r:?}");
                assert_eq!(r["provider_amount"], money(o.trx_amount));
                assert_eq!(r["trx_date"], o.trx_date);
                // difference = what Starpay has − what was expected, from the ledger.
                if r["expected_amount"].is_empty() {
                    assert_eq!(r["difference"], "", "{r:?}");
                } else {
                    let expected = centavos(&r["expected_amount"]);
                    assert_eq!(r["difference"], money(o.trx_amount - expected), "{r:?}");
                }
            }
        }
    }
    assert_eq!(report[1]["difference"], "-1.00", "999.00 − 1,000.00");
    assert_eq!(report[0]["difference"], "0.00");
    // Balances are on their own lines in the run details, apart from the category table.
    let details = std::fs::read_to_string(dir.path().join("reports/eod-1-run.csv")).unwrap();
    assert!(
        details.contains("balance_start") && details.contains("balance_end"),
        "{details}"
    );

    // Running it again resumes the open run and re-checks only PENDING/STALE_PENDING/UNKNOWN.
    let before = sim.requests().len();
    let again = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(again.status.code(), Some(3), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming run 1"));
    let queries = sim.requests()[before..]
        .iter()
        .filter(|q| q.path.contains("/v1/repayment/query"))
        .count();
    // 3 open rows: PENDING and STALE_PENDING once each, UNKNOWN up to 4 tries.
    assert!((3..=6).contains(&queries), "re-checked {queries} queries");
}
}

/// Acceptance 2: a 2,000-row recon killed twice finishes with each row once, and no row that
/// was final before a kill is queried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twice_resumes_without_requerying_final_rows() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2000;
    let fixtures: Vec<OrderFixture> = (0..n)
        .map(|i| {
            fixture(
                FixtureKind::StaticQrPayment,
                &format!("S{i:08}"),
                Some(&format!("71{i:014}")),
                1000 + i as i64,
                "SUCCESS",
                600,
            )
        })
        .collect();
    let sim = start_sim(SimConfig {
        fixtures,
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    })
    .await;
    let input = dir.path().join("recon.csv");
    let mut csv = String::from("reference,ref_no,expected_amount\n");
    for i in 0..n {
        csv.push_str(&format!(
            "R{i},71{i:014},{}.{:02}\n",
            (1000 + i) / 100,
            (1000 + i) % 100
        ));
    }
    std::fs::write(&input, csv).unwrap();
    let limits = "requests_per_second = 300\nburst = 50\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    let job = write_job_kind(
        dir.path(),
        "big",
        "repayment-recon",
        &sim,
        &input,
        limits,
        RESOLVE,
    );
    let db = dir.path().join("big.db");
    let mut snapshots = Vec::new();
    // Each kill lands mid-work: it waits (bounded) until the store holds that many final rows,
    // not for a fixed time, and the killed process had not exited by itself.
    for at in [300usize, 900] {
        let mut child = spawn(vec!["run".into(), s(&job)]).await;
        let end = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < end
            && final_rows_if_any(&db) < at
            && child.try_wait().unwrap().is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = kill_after(child, Duration::ZERO).await;
        assert_eq!(
            status, None,
            "killed while still running (kill at {at} rows)"
        );
        snapshots.push(final_rows(&db));
        assert!(snapshots.last().unwrap().len() < n, "killed before the end");
    }
    assert!(
        !snapshots[0].is_empty(),
        "the first run got some rows done before the kill"
    );
    assert!(
        snapshots[1].len() > snapshots[0].len(),
        "the second run made progress"
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = read_report(&dir.path().join("reports/big-1.csv"));
    assert_eq!(report.len(), n);
    assert!(
        report.iter().all(|r| r["category"] == "MATCHED"),
        "all match"
    );
    let lines: std::collections::HashSet<&String> = report.iter().map(|r| &r["line"]).collect();
    assert_eq!(lines.len(), n, "each row once");
    let end = final_rows(&db);
    for snap in &snapshots {
        for (id, checked) in snap {
            assert_eq!(
                end.get(id),
                Some(checked),
                "row {id} was final before a kill and was checked again"
            );
        }
    }
}

/// How many rows are final, read-only (0 while the database or its tables do not exist yet).
fn final_rows_if_any(db: &std::path::Path) -> usize {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    c.query_row(
        "SELECT count(*) FROM recon_rows WHERE category IN ('MATCHED','AMOUNT_MISMATCH','STATE_MISMATCH','NOT_FOUND','REVERSED_AFTER_SUCCESS')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |v| v as usize)
}

/// recon row id → (checked_at, queries) for rows in a final category.
fn final_rows(db: &std::path::Path) -> HashMap<i64, (i64, i64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT id, checked_at, queries FROM recon_rows WHERE category IN ('MATCHED','AMOUNT_MISMATCH','STATE_MISMATCH','NOT_FOUND','REVERSED_AFTER_SUCCESS')")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

both_backends! {
/// Acceptance 3: bad input → exit 1, line and field named, nothing sent.
async fn bad_recon_input_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(9)).await;
    let cases: Vec<(&str, &str, &str, &[&str])> = vec![
        (
            "repayment-recon",
            "no key",
            "reference,ref_no,original_msg_id\nA,,\n",
            &["line 2", "ref_no or original_msg_id"],
        ),
        (
            "repayment-recon",
            "bad amount",
            "ref_no,expected_amount\n123,1.234\n",
            &["line 2", "expected_amount"],
        ),
        (
            "repayment-recon",
            "bad state",
            "ref_no,expected_state\n123,PAID\n",
            &["line 2", "expected_state"],
        ),
        (
            "repayment-recon",
            "bad ref",
            "ref_no\n12-3\n",
            &["line 2", "ref_no"],
        ),
        (
            "disbursement-recon",
            "missing msg id",
            "original_msg_id,reference\n,x\n",
            &["line 2", "original_msg_id"],
        ),
        (
            "disbursement-recon",
            "ref_no column",
            "original_msg_id,ref_no\nA,1\n",
            &["line 1", "ref_no"],
        ),
        ("repayment-recon", "header only", "ref_no\n", &["no rows"]),
        ("repayment-recon", "binary", "\u{0}\u{1}PNG", &["binary"]),
    ];
    for (i, (kind, name, text, must)) in cases.iter().enumerate() {
        let input = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&input, text).unwrap();
        let job = write_job_kind(
            dir.path(),
            &format!("bad{i}"),
            kind,
            &sim,
            &input,
            LIMITS,
            RESOLVE,
        );
        let out = run(vec!["run".into(), s(&job)]).await;
        assert_eq!(out.status.code(), Some(1), "{name}\n{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for m in must.iter() {
            assert!(err.contains(m), "{name}: expected {m:?}\n{}", show(&out));
        }
    }
    assert_eq!(sim.requests().len(), 0, "nothing was sent");
}
}

both_backends! {
/// `reconcile --run`: a payout that succeeded and was later reversed is reported as
/// REVERSED_AFTER_SUCCESS and the store's row becomes REVERSED, with an event.
async fn reconcile_reports_and_applies_drift() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(10);
    cfg.reversal_delay_ms = 3_600_000;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 6, |i| match i {
        1 => "0700",
        2 => "0401",
        _ => "2468",
    });
    let job = write_job(dir.path(), "pay", &sim, &input, LIMITS, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let payout_report = read_report(&dir.path().join("reports/pay-1.csv"));
    assert_eq!(payout_report[1]["state"], "SUCCESS");
    // An hour later (simulated), the 0700 payout is reversed by the rail.
    sim.advance(3700);
    let rec = run(vec![
        "reconcile".into(),
        s(&job),
        "--run".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(rec.status.code(), Some(2), "drift found\n{}", show(&rec));
    let report = read_report(&dir.path().join("reports/pay-reconcile-1-2.csv"));
    assert_eq!(report.len(), 6);
    assert_eq!(
        report[1]["category"], "REVERSED_AFTER_SUCCESS",
        "{:?}",
        report[1]
    );
    assert_eq!(report[1]["trx_state"], "REVERSED");
    assert_eq!(
        report[2]["category"], "MATCHED",
        "FAILED expected and FAIL found: {:?}",
        report[2]
    );
    assert_eq!(report[0]["category"], "MATCHED");
    let status = run(vec!["status".into(), s(&job), "--run".into(), "1".into()]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("REVERSED") && l.split_whitespace().nth(1) == Some("1")),
        "{text}"
    );
    let drift = db_rows(
        dir.path(),
        "pay",
        "SELECT COUNT(*) FROM events WHERE kind = 'reconcile_drift' AND new_state = 'REVERSED'",
    );
    assert_eq!(drift[0][0].as_deref(), Some("1"));
    // A completed pass is not resumed: the next reconcile checks every row again (drift can
    // happen to rows that were final), and now finds the store in agreement.
    let again = run(vec![
        "reconcile".into(),
        s(&job),
        "--run".into(),
        "1".into(),
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("created reconcile run 3"),
        "{}",
        show(&again)
    );
    let report = read_report(&dir.path().join("reports/pay-reconcile-1-3.csv"));
    assert_eq!(
        report[1]["category"], "MATCHED",
        "expected REVERSED, found REVERSED: {:?}",
        report[1]
    );
}
}
