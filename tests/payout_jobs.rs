//! Payout jobs end to end (issue 4): the real binary, the real simulator over 127.0.0.1, a real
//! SQLite file in a temp dir.

mod payout_common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use payout_common::*;

const LIMITS_FAST: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 16\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

both_backends! {
/// Acceptance 1: 500 rows, no faults: 500 report lines, states and order numbers agree with the
/// ledger.
async fn five_hundred_rows_match_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 500, |i| if i % 50 == 7 { "0401" } else { "1234" });
    let job = write_job(
        dir.path(),
        "nightly",
        &sim,
        &input,
        LIMITS_FAST,
        FAST_RESOLVE,
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "FAILED rows (0401) give exit 2\n{}",
        show(&out)
    );

    let report = read_report(&dir.path().join("reports/nightly-1.csv"));
    assert_eq!(report.len(), 500);
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), 500, "one order per row");
    let mut failed = 0;
    // Per report state: (count, total centavos), from the CSV amounts.
    let mut totals: HashMap<String, (u64, i64)> = HashMap::new();
    for (i, row) in report.iter().enumerate() {
        // CSV amount → signed request (the simulator verified it and recorded its trxAmount)
        // → ledger → report amount.
        let (_, want) = amount_of(i);
        let order = ledger.order(&row["msg_id"]).unwrap();
        assert_eq!(order.trx_amount, want, "line {}: ledger amount", i + 2);
        assert_eq!(
            centavos(&row["amount"]),
            want,
            "line {}: report amount",
            i + 2
        );
        let t = totals.entry(row["state"].clone()).or_default();
        t.0 += 1;
        t.1 += want;
        assert_eq!(row["line"], (i + 2).to_string(), "input order");
        assert_eq!(row["reference"], format!("REF-{i:06}"));
        let order = ledger
            .order(&row["msg_id"])
            .unwrap_or_else(|| panic!("no order for {:?}", row));
        assert_eq!(row["order_no"], order.order_no);
        assert_eq!(row["state"], expected_state(&order.state), "{row:?}");
        assert_eq!(order.create_requests, 1);
        assert_eq!(row["attempts"], "1");
        assert!(
            row["account_no"].starts_with("******")
                && !row["account_no"].contains(&format!("{i:06}"))
        );
        if row["state"] == "FAILED" {
            failed += 1;
            assert_eq!(row["error_code"], "AC01");
        }
    }
    assert_eq!(failed, 10);
    // The generator covers every amount form, and the InstaPay maximum.
    let amounts: Vec<i64> = (0..500).map(|i| amount_of(i).1).collect();
    assert!(amounts.contains(&5_000_000), "50,000.00");
    assert!(
        (0..500).any(|i| amount_of(i).0.contains(',')),
        "thousands with commas"
    );
    assert!(
        (0..500).any(|i| amount_of(i)
            .0
            .split('.')
            .nth(1)
            .is_some_and(|d| d.len() == 1)),
        "one decimal"
    );
    assert_eq!(
        report
            .iter()
            .filter(|r| centavos(&r["amount"]) == 5_000_000)
            .count(),
        1
    );
    let summary = read_summary(&dir.path().join("reports/nightly-1-summary.csv"));
    assert_eq!(
        summary.get("SUCCESS").map(|t| t.0),
        Some(490),
        "{summary:?}"
    );
    assert_eq!(summary.get("FAILED").map(|t| t.0), Some(10), "{summary:?}");
    for (state, (count, total)) in &summary {
        let want = match state.as_str() {
            // The TOTAL line adds up every row of the file.
            "TOTAL" => totals
                .values()
                .fold((0, 0), |(n, t), (c, a)| (n + c, t + a)),
            _ => totals.get(state).copied().unwrap_or_default(),
        };
        assert_eq!((*count, *total), want, "summary line {state}");
    }
    for (state, t) in &totals {
        assert_eq!(summary.get(state), Some(t), "summary has {state}");
    }
    // The ledger's debits agree: 100,000,000.00 start, successes debited, failures refunded.
    let success_total: i64 = totals.get("SUCCESS").map_or(0, |t| t.1);
    assert_eq!(
        ledger.balances["101510000001"].disbursement,
        10_000_000_000 - success_total
    );
}
}

both_backends! {
/// Acceptance 5: the same file again is refused; `--new-run` is accepted (already-paid
/// references are then rejected by validation); `retry` sends only FAILED rows, with new msgIds.
async fn same_file_refused_new_run_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(2)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 20, |i| if i % 5 == 0 { "0401" } else { "5555" });
    let job = write_job(dir.path(), "job", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(2), "{}", show(&first));
    let creates_after_first = sim.ledger().orders.len();
    assert_eq!(creates_after_first, 20);

    // A cron job firing twice: refused, nothing sent.
    let before = sim.requests().len();
    let again = run(vec!["run".into(), s(&job)]).await;
    // 4: nothing to do, the file was already completed (issue 10).
    assert_eq!(again.status.code(), Some(4), "{}", show(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--new-run"),
        "{}",
        show(&again)
    );
    assert_eq!(sim.requests().len(), before, "a refused run sends nothing");

    // --new-run: a new run is accepted, but references already paid are validation errors.
    let new_run = run(vec!["run".into(), s(&job), "--new-run".into()]).await;
    assert_eq!(new_run.status.code(), Some(1), "{}", show(&new_run));
    let err = String::from_utf8_lossy(&new_run.stderr);
    assert!(
        err.contains("line 3") && err.contains("reference"),
        "{}",
        show(&new_run)
    );
    assert_eq!(sim.requests().len(), before);

    // retry: only the 4 FAILED rows get new msgIds.
    let report1 = read_report(&dir.path().join("reports/job-1.csv"));
    let failed: HashMap<String, String> = report1
        .iter()
        .filter(|r| r["state"] == "FAILED")
        .map(|r| (r["reference"].clone(), r["msg_id"].clone()))
        .collect();
    assert_eq!(failed.len(), 4);
    // AC01 is a beneficiary-data failure: not re-sent without the explicit flag (§9.2).
    let retry = run(vec!["retry".into(), s(&job), "--run".into(), "1".into()]).await;
    assert_eq!(retry.status.code(), Some(2), "{}", show(&retry));
    assert!(
        String::from_utf8_lossy(&retry.stderr).contains("--include-beneficiary-errors"),
        "{}",
        show(&retry)
    );
    assert_eq!(sim.ledger().orders.len(), 20, "nothing re-sent");
    let retry = run(vec![
        "retry".into(),
        s(&job),
        "--run".into(),
        "1".into(),
        "--include-beneficiary-errors".into(),
    ])
    .await;
    assert_eq!(
        retry.status.code(),
        Some(2),
        "they fail again (0401)\n{}",
        show(&retry)
    );
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), 24, "4 new orders, nothing else");
    let report = read_report(&dir.path().join("reports/job-1.csv"));
    for r in &report {
        match failed.get(&r["reference"]) {
            Some(old) => {
                assert_ne!(&r["msg_id"], old, "new msgId for a FAILED row");
                assert!(r["msg_id"].ends_with("A2"), "{}", r["msg_id"]);
                assert!(ledger.order(&r["msg_id"]).is_some());
            }
            None => assert!(r["msg_id"].ends_with("A1")),
        }
    }

    // --new-run --skip-invalid: every reference was sent by run 1, so none is paid again
    // (the FAILED ones need --repay): nothing to send.
    let before = sim.requests().len();
    let new_run = run(vec![
        "run".into(),
        s(&job),
        "--new-run".into(),
        "--skip-invalid".into(),
    ])
    .await;
    assert_eq!(new_run.status.code(), Some(1), "{}", show(&new_run));
    assert!(
        String::from_utf8_lossy(&new_run.stderr).contains("--repay"),
        "{}",
        show(&new_run)
    );
    assert!(
        sim.requests()[before..]
            .iter()
            .all(|r| r.service.as_deref() != Some("pay.starpay.instapay.disburse")),
        "no payout sent"
    );
    // … with --repay: the paid rows are REJECTED, the failed ones are checked live and sent again.
    let new_run = run(vec![
        "run".into(),
        s(&job),
        "--new-run".into(),
        "--skip-invalid".into(),
        "--repay".into(),
    ])
    .await;
    assert_eq!(new_run.status.code(), Some(2), "{}", show(&new_run));
    let report2 = read_report(&dir.path().join("reports/job-2.csv"));
    assert_eq!(report2.len(), 20);
    assert_eq!(
        report2.iter().filter(|r| r["state"] == "REJECTED").count(),
        16
    );
    assert_eq!(sim.ledger().orders.len(), 28);

    let status = run(vec!["status".into(), s(&job)]).await;
    assert_eq!(status.status.code(), Some(0), "{}", show(&status));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("run 1 (payout, finished)") && text.contains("run 2 (payout, finished)"),
        "{text}"
    );
}
}

both_backends! {
/// Acceptance 3: malformed files → exit 1, a message naming line and field, zero requests.
async fn bad_input_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(3)).await;
    let header = "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n";
    let good = "R1,instapay,09171234567,Juan,,Cruz,GCash,100,PHP,ok\n";
    let huge = format!(
        "{header}{good}R2,instapay,09171234568,{},,Cruz,GCash,100,PHP,x\n",
        "A".repeat(10 * 1024 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "missing field",
            format!("{header}{good}R2,instapay,,Juan,,Cruz,GCash,100,PHP,x\n").into_bytes(),
            &["line 3", "account_no"],
        ),
        (
            "amount zero",
            format!("{header}{good}R2,instapay,0917,Juan,,Cruz,GCash,0,PHP,x\n").into_bytes(),
            &["line 3", "amount"],
        ),
        (
            "negative amount",
            format!("{header}{good}R2,instapay,0917,Juan,,Cruz,GCash,-5,PHP,x\n").into_bytes(),
            &["line 3", "amount"],
        ),
        (
            "three decimals",
            format!("{header}{good}R2,instapay,0917,Juan,,Cruz,GCash,1.234,PHP,x\n").into_bytes(),
            &["line 3", "amount"],
        ),
        (
            "over instapay cap",
            format!("{header}{good}R2,instapay,0917,Juan,,Cruz,GCash,50000.01,PHP,x\n")
                .into_bytes(),
            &["line 3", "amount"],
        ),
        (
            "unknown channel",
            format!("{header}{good}R2,paypal,0917,Juan,,Cruz,GCash,1,PHP,x\n").into_bytes(),
            &["line 3", "channel"],
        ),
        (
            "unknown currency",
            format!("{header}{good}R2,instapay,0917,Juan,,Cruz,GCash,1,USD,x\n").into_bytes(),
            &["line 3", "currency"],
        ),
        (
            "note too long",
            format!(
                "{header}{good}R2,instapay,0917,Juan,,Cruz,GCash,1,PHP,{}\n",
                "n".repeat(93)
            )
            .into_bytes(),
            &["line 3", "note"],
        ),
        (
            "duplicate reference",
            format!("{header}{good}{good}").into_bytes(),
            &["line 3", "reference"],
        ),
        (
            "wrong header",
            b"ref,chan\nR1,instapay\n".to_vec(),
            &["line 1"],
        ),
        ("empty file", Vec::new(), &["empty"]),
        ("header only", header.as_bytes().to_vec(), &["no rows"]),
        (
            "non-UTF-8",
            [
                header.as_bytes(),
                good.as_bytes(),
                b"R2,instapay,0917,Ju\xffan,,Cruz,GCash,1,PHP,x\n",
            ]
            .concat(),
            &["line 3"],
        ),
        (
            "binary file",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00".to_vec(),
            &["line 1"],
        ),
        (
            "10 MB field",
            huge.into_bytes(),
            &["line 3", "account_name"],
        ),
    ];
    for (i, (name, bytes, must)) in cases.iter().enumerate() {
        let input = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&input, bytes).unwrap();
        let job = write_job(
            dir.path(),
            &format!("bad{i}"),
            &sim,
            &input,
            LIMITS_FAST,
            FAST_RESOLVE,
        );
        let out = run(vec!["run".into(), s(&job)]).await;
        assert_eq!(out.status.code(), Some(1), "{name}\n{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains(&s(&input).to_lowercase()),
            "{name}: names the file\n{}",
            show(&out)
        );
        for m in must.iter() {
            assert!(
                err.contains(&m.to_lowercase()),
                "{name}: expected {m:?}\n{}",
                show(&out)
            );
        }
        assert!(
            out.stderr.len() < 64 * 1024,
            "{name}: the message stays short"
        );
    }
    assert_eq!(
        sim.requests().len(),
        0,
        "no request of any kind reached the simulator"
    );
}
}

/// Acceptance 2, CI version: SIGKILL the runner at several points of a run against a simulator
/// with 10% commit-then-drop and 5% 5xx, then run again until it finishes: one order per
/// reference, every reference in the report once, states agree with the ledger. Each kill
/// lands mid-work: it waits until the ledger holds a given number of orders (not a time), and
/// the killed process had not exited by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_safety_short() {
    crash_safety(300, &[60, 140, 220], 11).await;
}

/// The long version: `cargo test --test payout_jobs -- --ignored crash_safety_long`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn crash_safety_long() {
    crash_safety(1000, &[100, 250, 400, 550, 700, 850], 12).await;
}

/// `kill_at_orders`: SIGKILL the n-th run once the ledger holds that many orders.
async fn crash_safety(rows: usize, kill_at_orders: &[usize], seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (sim, input) = chaos_sim_and_input(dir.path(), rows, seed).await;
    let limits = "requests_per_second = 200\nburst = 50\nconcurrency = 8\nrequest_timeout_secs = 3\nconnect_timeout_secs = 1";
    let job = write_job(dir.path(), "crash", &sim, &input, limits, FAST_RESOLVE);
    let mut kills = Vec::new();
    for &at in kill_at_orders {
        let mut child = spawn(vec!["run".into(), s(&job)]).await;
        // Wait (bounded) until the ledger shows the run is that far, or the child exits.
        let end = std::time::Instant::now() + Duration::from_secs(120);
        while sim.ledger().orders.len() < at && std::time::Instant::now() < end {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = kill_after(child, Duration::ZERO).await;
        let orders = sim.ledger().orders.len();
        kills.push((at, status, orders));
    }
    for &(at, status, orders) in &kills {
        // `None`: ended by the signal, so it was still working when killed.
        assert_eq!(
            status, None,
            "kill at {at} orders: the run had already exited; {kills:?}"
        );
        assert!(
            orders >= at && orders < rows,
            "kill at {at} orders landed mid-work (ledger partly filled); {kills:?}"
        );
    }
    let mut last = None;
    for _ in 0..10 {
        let out = run(vec!["run".into(), s(&job)]).await;
        match out.status.code() {
            Some(0) | Some(2) => {
                last = Some(out);
                break;
            }
            Some(3) => last = Some(out),
            _ => panic!("unexpected exit\n{}", show(&out)),
        }
    }
    let out = last.expect("a run finished");
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)),
        "rows left unresolved after retries\n{}",
        show(&out)
    );

    let ledger = sim.ledger();
    assert_each_account_paid_once(&ledger);
    let report = read_report(&dir.path().join("reports/crash-1.csv"));
    assert_eq!(report.len(), rows);
    let refs: HashSet<&String> = report.iter().map(|r| &r["reference"]).collect();
    assert_eq!(refs.len(), rows, "every reference once");
    assert_eq!(ledger.orders.len(), rows, "every row paid exactly once");
    for r in &report {
        let order = ledger
            .order(&r["msg_id"])
            .unwrap_or_else(|| panic!("row without order {r:?}"));
        assert_eq!(r["state"], expected_state(&order.state), "{r:?}");
        assert_eq!(r["order_no"], order.order_no);
    }
    // Faults did happen, and the runs survived them.
    let mut faults: HashMap<String, usize> = HashMap::new();
    for q in sim.requests() {
        if let Some(f) = q.fault {
            *faults.entry(f).or_default() += 1;
        }
    }
    assert!(
        faults.get("commit_then_drop").copied().unwrap_or(0) > 0,
        "{faults:?}"
    );
    assert!(
        faults.get("http_502").copied().unwrap_or(0) > 0,
        "{faults:?}"
    );
    // Killed mid-request rows were recovered by query, never re-sent under a new msgId.
    let c = rusqlite::Connection::open(dir.path().join("crash.db")).unwrap();
    let recovered: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'recovered_in_flight'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("kills {kills:?}; faults {faults:?}; recovered in flight {recovered}");
    assert!(report.iter().all(|r| r["msg_id"].ends_with("A1")));
}

/// Issue 11 acceptance: SIGKILL while a group commit is being written. The store's writer
/// runs the changes waiting in its queue in one transaction and answers their callers only
/// after COMMIT; `STARPAY_TEST_SLOW_COMMIT_MS` makes it wait inside that open transaction
/// before each COMMIT, so the writer spends nearly all its time there and a kill at a random
/// moment (seeded) lands in it. After each kill, before anything runs again: every msgId the
/// simulator ever saw (payout sends, queries, pre-flight) is durable in the store (`msg_ids`;
/// a payout's also in `attempts` with its request's bytes, same SHA-256 as the simulator
/// received; a status query's id, taken from a reserved block and recorded with its answer,
/// at least as part of a committed block), so none left the machine before its commit. Then resumed runs (no hook) pay
/// each reference exactly once, every row ends in the report once, and no row needed a
/// second msgId. The kills are shown to land inside a group: some payouts the simulator
/// answered have no answer in the store (their answers sat in the group the kill discarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_group_commit() {
    use rand::{Rng, SeedableRng};
    use rusqlite::OptionalExtension as _;
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let rows = 200;
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(31)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, rows, |_| "7777");
    // Queries as soon as a send is answered, and slots to spare: a request leaves as soon as
    // the store call before it returns (allocation, then "sending"; no wait for a slot that
    // would let the group commit meanwhile), so a writer that answered before its COMMIT would
    // be caught. (Seen, when queries still took a recorded msgId each: with the delivery moved
    // before the COMMIT this test fails; with 16 slots it could pass.)
    let resolve = FAST_RESOLVE.replace("poll_schedule_secs = [1]", "poll_schedule_secs = [0]");
    let limits = "requests_per_second = 2000\nburst = 500\nconcurrency = 64\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
    let job = write_job(dir.path(), "group", &sim, &input, limits, &resolve);
    let db = dir.path().join("group.db");
    let mut answers_lost = Vec::new();
    // Each run is killed just after a request left (its answer likely not committed yet):
    // once the log holds this many queries, then a random moment (seeded) up to 60 ms.
    let mut queries_seen = 0;
    for more_queries in [1, 30, 30, 30, 30] {
        let kill_at = queries_seen + more_queries;
        let job_s = s(&job);
        let mut child = tokio::task::spawn_blocking(move || {
            bin()
                .env("STARPAY_TEST_SLOW_COMMIT_MS", "100")
                .args(["run", &job_s])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .await
        .unwrap();
        eventually(
            &format!("{kill_at} queries"),
            Duration::from_secs(120),
            || queries(&sim).len() >= kill_at || child.try_wait().unwrap().is_some(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        let status = kill_after(child, Duration::ZERO).await;
        assert_eq!(status, None, "killed at {kill_at} queries while working");

        // The store as the kill left it (only committed transactions count).
        let c = rusqlite::Connection::open(&db).unwrap();
        let stored: HashSet<String> = c
            .prepare("SELECT msg_id FROM msg_ids")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let attempts: HashMap<String, (Vec<u8>, String)> = c
            .prepare(
                "SELECT a.msg_id, a.request_bytes, r.state FROM attempts a JOIN rows r ON r.id = a.row_id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // Status queries take msgIds from a reserved block (`MsgIds::block`, prefix `K`),
        // recorded with their answer: such an id is durable once its block is committed, i.e.
        // its number is below the block counter's committed value.
        let db_id: String = c
            .query_row("SELECT value FROM meta WHERE key = 'db_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let block_end: i64 = c
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'counter:query_block'",
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
            .unwrap_or(0);
        let in_committed_block = |id: &str| {
            id.strip_prefix('K')
                .and_then(|rest| rest.strip_prefix(db_id.as_str()))
                .and_then(|n| n.parse::<i64>().ok())
                .is_some_and(|n| n >= 1 && n < block_end)
        };
        let log = sim.requests();
        let mut lost = 0;
        let mut queries_unrecorded = 0;
        for q in log.iter().filter(|q| q.path.contains("/v1/")) {
            let id = q.msg_id.clone().unwrap_or_default();
            let query = q.path.ends_with("/v1/disburse/query");
            if query && !stored.contains(&id) {
                queries_unrecorded += 1;
            }
            assert!(
                stored.contains(&id) || (query && in_committed_block(&id)),
                "{} {id} reached the simulator but is not durable in the store",
                q.path
            );
        }
        for q in log.iter().filter(|q| q.path.ends_with("/v1/disburse")) {
            let id = q.msg_id.clone().unwrap_or_default();
            let (bytes, state) = attempts
                .get(&id)
                .unwrap_or_else(|| panic!("payout {id} sent without a stored attempt"));
            assert_eq!(
                Some(sha256_hex(bytes)),
                q.request_sha256,
                "{id}: the simulator received other bytes than the stored ones"
            );
            if matches!(state.as_str(), "UNSENT" | "IN_FLIGHT") {
                lost += 1;
            }
        }
        eprintln!(
            "kill at {kill_at} queries: {} sends and {} queries in the log, {} msgIds stored ({queries_unrecorded} query ids durable only as their committed block); answered by the simulator, answer not stored: {lost}",
            sends(&sim).len(),
            queries(&sim).len(),
            stored.len()
        );

        answers_lost.push(lost);
        queries_seen = queries(&sim).len();
    }
    assert!(
        answers_lost.iter().any(|n| *n > 0),
        "no kill landed while answers waited for their group's commit: {answers_lost:?}"
    );
    let mut last = None;
    for _ in 0..10 {
        let out = run(vec!["run".into(), s(&job)]).await;
        let code = out.status.code();
        last = Some(out);
        if code == Some(0) {
            break;
        }
        assert_eq!(code, Some(3), "{}", show(last.as_ref().unwrap()));
    }
    let out = last.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let ledger = sim.ledger();
    let mut per_acct: HashMap<String, usize> = HashMap::new();
    for o in &ledger.orders {
        *per_acct
            .entry(o.acct_no.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(per_acct.len(), rows, "every reference paid");
    assert!(
        per_acct.values().all(|n| *n == 1),
        "one order per reference"
    );
    let report = read_report(&dir.path().join("reports/group-1.csv"));
    assert_eq!(report.len(), rows);
    assert!(report.iter().all(|r| r["state"] == "SUCCESS"));
    assert!(
        report.iter().all(|r| r["msg_id"].ends_with("A1")),
        "one msgId per row"
    );
}

/// Issue 11's rate rule, CI version: 1,000 rows (2,000 signed requests: a send and a query
/// each) against `requests_per_second = 200`, `burst = 20`. No one-second window of the
/// simulator's request log holds more than rate + burst (the hard rule, asserted in
/// `rate_limit`). The achieved rate is printed; the ≥ 0.95 target is a speed figure, measured
/// by `cargo bench --bench rate_limit` (docs/STATUS.md), because a loaded CI machine cannot be
/// held to it (seen: 0.87 at load 12 while the same build reached 1.00 idle). Asserted here:
/// at least half the rate, which a throttle that under-grants (a lost permit, a stuck gate)
/// would miss. Queries go out as soon as the send is answered (`poll_schedule_secs = [0]`),
/// so no poll delay leaves a slow tail. About 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_short() {
    let (achieved, busiest) = rate_limit(1000, 200, 20, 21).await;
    eprintln!(
        "achieved {achieved:.1} req/s of 200 ({:.3}), busiest second {busiest}",
        achieved / 200.0
    );
    assert!(
        achieved >= 0.5 * 200.0,
        "achieved {achieved:.1} req/s < 0.5 × 200: the throttle under-grants"
    );
}

/// The same at `requests_per_second = 20`, `burst = 20` (issue 4's figure):
/// `cargo test --test payout_jobs -- --ignored rate_limit_1000_rows --nocapture` (about 100 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn rate_limit_1000_rows() {
    let (achieved, _) = rate_limit(1000, 20, 20, 22).await;
    assert!(
        achieved >= 0.95 * 20.0,
        "achieved {achieved:.1} req/s < 0.95 × 20"
    );
}

/// Runs `rows` rows at `rate` requests/s with bursts of `burst`; asserts no one-second window
/// of signed requests above rate + burst; returns the payout requests' achieved rate (sends
/// and queries, first to last arrival) and the busiest window.
async fn rate_limit(rows: usize, rate: u64, burst: u64, seed: u64) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(seed);
    cfg.settle_delay_ms = 0;
    cfg.settle_jitter_ms = 0;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, rows, |_| "4321");
    let limits = format!("requests_per_second = {rate}\nburst = {burst}\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2");
    let resolve = FAST_RESOLVE
        .replace("deadline_secs = 60", "deadline_secs = 300")
        .replace("poll_schedule_secs = [1]", "poll_schedule_secs = [0]");
    let job = write_job(dir.path(), "rate", &sim, &input, &limits, &resolve);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let f = sim.rate_figures();
    assert!(f.payout >= 2 * rows, "sends and queries: {f:?}");
    eprintln!(
        "signed requests {}; payout requests {} over {:.2} s = {:.1} req/s ({:.3} of {rate}); busiest 1-s window {} (limit {})",
        f.signed,
        f.payout,
        f.payout_span_ms as f64 / 1000.0,
        f.payout_rate,
        f.payout_rate / rate as f64,
        f.busiest_second,
        rate + burst
    );
    assert!(
        f.busiest_second as u64 <= rate + burst,
        "window of {} > rate + burst",
        f.busiest_second
    );
    (f.payout_rate, f.busiest_second)
}

/// The simulator's scenario table through the real binary: AB05 timeouts (held, then final),
/// a lost answer resolved by query, a 406 resent under the same msgId, a payout that never
/// settles left PENDING at the deadline (exit 3), and a resume that finishes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_resolve_as_the_reference_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(4);
    cfg.timeout_hold_ms = 1500;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    let suffixes = ["1111", "0504", "0505", "0800", "0900", "0999", "0404"];
    write_csv(&input, suffixes.len(), |i| suffixes[i]);
    let resolve = FAST_RESOLVE.replace("deadline_secs = 60", "deadline_secs = 8");
    let job = write_job(dir.path(), "scen", &sim, &input, LIMITS_FAST, &resolve);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "0999 never settles\n{}",
        show(&out)
    );
    let report = read_report(&dir.path().join("reports/scen-1.csv"));
    let by_suffix = |sfx: &str| {
        report
            .iter()
            .find(|r| r["account_no"].ends_with(sfx))
            .unwrap()
            .clone()
    };
    assert_eq!(by_suffix("1111")["state"], "SUCCESS");
    assert_eq!(
        by_suffix("0504")["state"],
        "SUCCESS",
        "late credit after AB05"
    );
    let r0505 = by_suffix("0505");
    assert_eq!(r0505["state"], "FAILED", "{r0505:?}");
    assert_eq!(r0505["error_code"], "AB05");
    assert_eq!(
        by_suffix("0800")["state"],
        "SUCCESS",
        "lost answer resolved by query"
    );
    assert_eq!(by_suffix("0900")["state"], "SUCCESS");
    let r0404 = by_suffix("0404");
    assert_eq!(r0404["state"], "FAILED", "closed account: {r0404:?}");
    assert_eq!(r0404["error_code"], "AC04");
    assert_eq!(r0404["trx_state"], "FAIL");
    assert_eq!(by_suffix("0999")["state"], "PENDING");
    let ledger = sim.ledger();
    assert_eq!(
        ledger.orders.len(),
        suffixes.len(),
        "one order per row, whatever happened"
    );
    // The path, not only the end state.
    // 0505: the FAIL AB05 was held (FAIL_HELD) before it counted as FAILED.
    let c = rusqlite::Connection::open(dir.path().join("scen.db")).unwrap();
    let states: Vec<String> = c
        .prepare(
            "SELECT e.new_state FROM events e JOIN rows r ON e.row_id = r.id \
             WHERE r.line = ?1 AND e.new_state IS NOT NULL ORDER BY e.id",
        )
        .unwrap()
        .query_map([r0505["line"].parse::<i64>().unwrap()], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let held = states.iter().position(|s| s == "FAIL_HELD");
    let failed = states.iter().position(|s| s == "FAILED");
    assert!(
        matches!((held, failed), (Some(h), Some(f)) if h < f),
        "0505 held before FAILED: {states:?}"
    );
    // 0800: the answer to the send was really dropped, and the row was never re-sent.
    let r0800 = by_suffix("0800");
    let o0800 = ledger.order(&r0800["msg_id"]).unwrap();
    assert_eq!(o0800.create_requests, 1, "{o0800:?}");
    let sends0800: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|q| {
            q.msg_id.as_deref() == Some(r0800["msg_id"].as_str())
                && q.path.ends_with("/v1/disburse")
        })
        .collect();
    assert_eq!(sends0800.len(), 1, "{sends0800:?}");
    assert_eq!(sends0800[0].http_status, None, "no answer was sent");
    assert!(
        sends0800[0]
            .fault
            .as_deref()
            .is_some_and(|f| f.starts_with("commit_then_drop")),
        "{sends0800:?}"
    );
    assert_eq!(r0800["order_no"], o0800.order_no, "the query found it");
    // The 406 was answered to the first send; the resend used the same msgId.
    let r0900 = by_suffix("0900");
    let sends: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|q| q.msg_id.as_deref() == Some(r0900["msg_id"].as_str()))
        .collect();
    assert!(sends.len() >= 2, "{sends:?}");
    assert_eq!(sends[0].code.as_deref(), Some("406"));
    // The run is still open: running it again resumes and only queries.
    let creates = |sim: &starpay_batch::server::sim::SimHandle| {
        sim.requests()
            .iter()
            .filter(|q| q.path.ends_with("/v1/disburse"))
            .count()
    };
    let before = creates(&sim);
    let again = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(again.status.code(), Some(3), "{}", show(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("resuming run 1"),
        "{}",
        show(&again)
    );
    assert_eq!(before, creates(&sim), "a resume sends no payout again");
}

/// `--log-format json` gives one JSON object per log line for schedulers, and no full account
/// number appears in logs or on stdout (STYLE.md §9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_masked_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(5)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 3, |_| "1357");
    let job = write_job(dir.path(), "logs", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let job_s = s(&job);
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .env("RUST_LOG", "debug")
            .args(["--log-format", "json", "run", &job_s])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json_lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(json_lines.len() >= 3, "{stderr}");
    assert!(json_lines
        .iter()
        .all(|v| v.get("level").is_some() && v.get("timestamp").is_some()));
    for i in 0..3 {
        let full = format!("{i:06}1357");
        assert!(
            !stderr.contains(&full),
            "full account number {full} in logs"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(&full));
    }
    // The private key never appears: look for its body (any line of the Base64, and the
    // whole body without line breaks), not only the PEM header.
    let pem =
        std::fs::read_to_string(root().join("samples/keys/TEST-ONLY-demo-merchant-private.pem"))
            .unwrap();
    let body_lines: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(body_lines.len() >= 10, "a 2048-bit key has a long body");
    let body: String = body_lines.concat();
    let mut texts = vec![
        ("stderr", stderr.to_string()),
        ("stdout", String::from_utf8_lossy(&out.stdout).to_string()),
    ];
    for entry in std::fs::read_dir(dir.path().join("reports")).unwrap() {
        let p = entry.unwrap().path();
        texts.push((
            "report",
            String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_string(),
        ));
    }
    for (what, text) in &texts {
        assert!(!text.contains("PRIVATE KEY"), "{what}");
        for l in &body_lines {
            assert!(!text.contains(l), "{what} holds a line of the private key");
        }
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for chunk in body.as_bytes().chunks(48) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(
                !squeezed.contains(chunk),
                "{what} holds part of the private key"
            );
        }
    }
}

/// `--log-format json`: **every** stderr line is one JSON object with a level and a timestamp,
/// so a scheduler can parse all of them: progress messages, validation errors (with file, line,
/// column and rule as fields) and the error that ends the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stderr_line_is_json_in_json_mode() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(6)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 3, |_| "1358");
    let job = write_job(dir.path(), "json", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let job_s = s(&job);
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .env("RUST_LOG", "debug")
            .args(["--log-format", "json", "run", &job_s])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut n = 0;
    for l in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
        assert!(
            v.is_object() && v.get("level").is_some() && v.get("timestamp").is_some(),
            "not a log object: {l:?}"
        );
        n += 1;
    }
    assert!(n >= 3, "{stderr}");

    // A file with errors: one JSON object per error, with its position as fields.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n\
         R1,instapay,09171234567,Juan,,Cruz,GCash,12.345,PHP,x\n",
    )
    .unwrap();
    let (job_s, bad_s) = (s(&job), s(&bad));
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .args(["--log-format", "json", "run", &job_s, "--input", &bad_s])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["line"] == 2 && v["column"] == "amount" && v["rule"].is_string()),
        "{stderr}"
    );

    // A usage error (clap) and a config error: JSON too, with their exit codes.
    let bad_job = dir.path().join("bad-job.toml");
    std::fs::write(&bad_job, "inptu = \"x.csv\"\nkind = \"payout\"\n").unwrap();
    for (args, code, needle) in [
        (
            vec!["--log-format", "json", "run", "x.toml", "--bogus"],
            64,
            "--bogus",
        ),
        (vec!["--log-format=json", "run"], 64, "JOB"),
        (
            vec!["--log-format", "json", "run", bad_job.to_str().unwrap()],
            1,
            "inptu",
        ),
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let out = tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{}", show(&out));
        for l in stderr.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
            assert!(v.is_object() && v.get("level").is_some(), "{l}");
        }
        assert!(stderr.contains(needle), "{stderr}");
    }
}

/// Lower-case hex SHA-256 of `bytes` (as the simulator's request log records a request).
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issue 14 (part C): `migrate-store` copies a SQLite job database into PostgreSQL; the same
/// job, pointed at PostgreSQL by `STARPAY_DATABASE_URL`, then lists the same runs, finds the
/// file already completed (exit 4, nothing sent), and `--new-run` refuses the references the
/// SQLite database paid. PostgreSQL only (skipped loudly without a server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_copies_a_sqlite_job_into_postgres() {
    let Some(pg) = starpay_batch::store::pg::testing::TestDb::new("migrate_store") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(14)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 8, |i| if i == 3 { "0401" } else { "5555" });
    let job = write_job(dir.path(), "mig", &sim, &input, LIMITS_FAST, FAST_RESOLVE);
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(2), "{}", show(&first));
    let runs_sqlite = run(vec!["runs".into(), s(&job)]).await;
    assert_eq!(runs_sqlite.status.code(), Some(0), "{}", show(&runs_sqlite));

    let url = pg.url().to_string();
    let db = dir.path().join("mig.db");
    let copy = run(vec![
        "migrate-store".into(),
        "--from".into(),
        s(&db),
        "--to".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(copy.status.code(), Some(0), "{}", show(&copy));
    let listed = String::from_utf8_lossy(&copy.stdout).to_string();
    assert!(
        listed.contains("rows\t8") && listed.contains("attempts\t8"),
        "{listed}"
    );

    let on_pg = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            bin()
                .args(&args)
                .env("STARPAY_DATABASE_URL", url)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        })
    };
    let runs_pg = on_pg(vec!["runs".into(), s(&job)]).await.unwrap();
    assert_eq!(runs_pg.status.code(), Some(0), "{}", show(&runs_pg));
    assert_eq!(
        String::from_utf8_lossy(&runs_pg.stdout),
        String::from_utf8_lossy(&runs_sqlite.stdout),
        "the same runs on both stores"
    );
    let before = sim.requests().len();
    let again = on_pg(vec!["run".into(), s(&job)]).await.unwrap();
    assert_eq!(again.status.code(), Some(4), "{}", show(&again));
    let new_run = on_pg(vec!["run".into(), s(&job), "--new-run".into()])
        .await
        .unwrap();
    assert_eq!(new_run.status.code(), Some(1), "{}", show(&new_run));
    assert_eq!(
        sim.requests().len(),
        before,
        "nothing sent from the copied store"
    );
    // A second copy into a store with history is refused.
    let twice = run(vec![
        "migrate-store".into(),
        "--from".into(),
        s(&db),
        "--to".into(),
        pg.url().to_string(),
    ])
    .await;
    assert_eq!(twice.status.code(), Some(1), "{}", show(&twice));
    assert!(!String::from_utf8_lossy(&twice.stderr).contains("password"));
}
