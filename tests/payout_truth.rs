//! Issue 8, payout engine and store: regression tests for what a resumed or re-paid run records.
//! The real binary, the real simulator over 127.0.0.1, a real SQLite file in a temp dir; the
//! simulator's ledger and request log are the oracle.

mod payout_common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use payout_common::*;
use starpay_batch::server::sim::{FaultConfig, RequestRecord, SimHandle};

const LIMITS_FAST: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";
/// One request a second: leaves the test time to change the simulator between two requests.
const LIMITS_SLOW: &str = "requests_per_second = 1\nburst = 1\nconcurrency = 1\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

fn resolve(deadline_secs: u64, max_resolve_secs: u64) -> String {
    format!(
        "[resolve]\npoll_schedule_secs = [1]\npoll_interval_secs = 1\nnot_found_window_secs = 1\nnot_found_queries = 3\nab_hold_secs = 2\nstale_after_secs = 600\ndeadline_secs = {deadline_secs}\nmax_resolve_secs = {max_resolve_secs}\n"
    )
}

fn db(dir: &Path, name: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(format!("{name}.db"))).unwrap()
}

/// (state, message) of the row on `line` of run 1.
fn row_state(conn: &rusqlite::Connection, run: i64, line: i64) -> (String, String) {
    conn.query_row(
        "SELECT state, COALESCE(message, '') FROM rows WHERE run_id = ?1 AND line = ?2",
        [run, line],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// (state, message) of the row on `line` of run `run`, on either backend.
fn row_state_any(dir: &Path, job: &str, run: i64, line: i64) -> (String, String) {
    let rows = db_rows(
        dir,
        job,
        &format!(
            "SELECT state, COALESCE(message, '') FROM rows WHERE run_id = {run} AND line = {line}"
        ),
    );
    let r = &rows[0];
    (
        r[0].clone().unwrap_or_default(),
        r[1].clone().unwrap_or_default(),
    )
}

fn max_event_id(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
        .unwrap()
}

/// Waits (bounded) until the simulator's request log satisfies `pred`.
async fn wait_for_log(sim: &SimHandle, what: &str, pred: impl Fn(&[RequestRecord]) -> bool) {
    let start = Instant::now();
    loop {
        if pred(&sim.requests()) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for: {what}\n{:#?}",
            sim.requests()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const BALANCE: &str = "unified.disburse.balance"; // 5.6
const SEND: &str = "pay.starpay.instapay.disburse"; // 5.2
const QUERY: &str = "unified.disburse.query"; // 5.4

fn is(r: &RequestRecord, service: &str) -> bool {
    r.service.as_deref() == Some(service)
}

/// Defect 1: rows unresolved past `max_resolve_secs` are queried in the resumed run before they
/// can be given up; a verified final answer wins whatever the row's age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_run_asks_before_giving_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(81);
    // Settles after one simulated hour: the first run leaves every row PENDING.
    cfg.settle_delay_ms = 3_600_000;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 5, |i| if i == 4 { "0999" } else { "1234" });
    let job = write_job(
        dir.path(),
        "resume",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(3, 3600),
    );
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(3), "{}", show(&first));
    let conn = db(dir.path(), "resume");
    for line in 2..=6 {
        assert_eq!(row_state(&conn, 1, line).0, "PENDING");
    }

    // Starpay settles the four; the fifth (0999) stays PROCESSING forever. The rows are now
    // older than the (new, 1 s) maximum resolve time.
    sim.advance(7_200);
    let job = write_job(
        dir.path(),
        "resume",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(30, 1),
    );
    let mark = max_event_id(&conn);
    let queries_before = sim.requests().iter().filter(|r| is(r, QUERY)).count();
    let second = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(
        second.status.code(),
        Some(3),
        "the PROCESSING row needs attention\n{}",
        show(&second)
    );
    let ledger = sim.ledger();
    for line in 2..=5 {
        assert_eq!(
            row_state(&conn, 1, line).0,
            "SUCCESS",
            "a verified SUCCESS wins over the row's age (line {line})"
        );
    }
    let (state, message) = row_state(&conn, 1, 6);
    assert_eq!(state, "NEEDS_ATTENTION");
    assert!(message.contains("PROCESSING"), "{message}");
    // It was asked in this run before it was given up.
    let (asked, gave_up): (i64, i64) = conn
        .query_row(
            "SELECT MIN(CASE WHEN e.kind = 'query_answer' THEN e.id END),
                    MIN(CASE WHEN e.kind = 'gave_up' THEN e.id END)
             FROM events e JOIN rows r ON r.id = e.row_id
             WHERE r.run_id = 1 AND r.line = 6 AND e.id > ?1",
            [mark],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        asked < gave_up,
        "query {asked} must come before giving up {gave_up}"
    );
    let queries = sim.requests().iter().filter(|r| is(r, QUERY)).count() - queries_before;
    assert!(queries >= 5, "every unresolved row was queried: {queries}");
    assert_eq!(ledger.orders.len(), 5, "nothing re-sent");
    let report = read_report(&dir.path().join("reports/resume-1.csv"));
    assert_eq!(report[4]["state"], "NEEDS_ATTENTION");
    assert!(report[..4].iter().all(|r| r["state"] == "SUCCESS"));
}

both_backends! {
/// Defect 9: a verified query answer about our payout with another amount goes to
/// NEEDS_ATTENTION at once, with both amounts in its message (not waited out silently).
async fn query_answer_with_another_amount_needs_attention_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(82);
    cfg.settle_delay_ms = 3_600_000;
    let sim = start_sim(cfg).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 2, |_| "1234");
    let job = write_job(
        dir.path(),
        "amt",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(3, 3600),
    );
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(3), "{}", show(&first));
    // Our record of line 2 now disagrees with what was sent (as a corrupted or edited store
    // would); Starpay's answers carry the amount it holds.
    db_execute(
        dir.path(),
        "amt",
        "UPDATE rows SET amount = amount + 100 WHERE run_id = 1 AND line = 2",
    );
    sim.advance(7_200);
    let job = write_job(
        dir.path(),
        "amt",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(8, 3600),
    );
    let second = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(second.status.code(), Some(3), "{}", show(&second));
    let (state, message) = row_state_any(dir.path(), "amt", 1, 2);
    assert_eq!(state, "NEEDS_ATTENTION", "{message}");
    // write_csv: line 2 is row 0, PHP 100.00; the store now says 101.00.
    assert!(
        message.contains("PHP 100.00") && message.contains("PHP 101.00"),
        "{message}"
    );
    assert_eq!(row_state_any(dir.path(), "amt", 1, 3).0, "SUCCESS");
}
}

/// Defect 12: a query that gets no verified answer (here an HTTP 502) between two 404s neither
/// counts nor breaks the streak: the same msgId is resent after exactly three 404s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_do_not_break_the_not_found_streak() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(83)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 1, |_| "1234");
    let job = write_job(
        dir.path(),
        "nf",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve(60, 3600),
    );
    let child = spawn(vec!["run".into(), s(&job)]).await;
    // One request a second: each step below is made between two requests of the runner.
    wait_for_log(&sim, "the pre-flight balance check", |l| {
        l.iter().any(|r| is(r, BALANCE))
    })
    .await;
    sim.set_faults(FaultConfig {
        reset_before: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    wait_for_log(&sim, "the payout (dropped)", |l| {
        l.iter().any(|r| is(r, SEND))
    })
    .await;
    sim.set_faults(FaultConfig::default()).unwrap();
    wait_for_log(&sim, "a first 404", |l| {
        l.iter()
            .any(|r| is(r, QUERY) && r.code.as_deref() == Some("404"))
    })
    .await;
    sim.set_faults(FaultConfig {
        http_502: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    wait_for_log(&sim, "a 502 on a query", |l| {
        l.iter().any(|r| is(r, QUERY) && r.http_status == Some(502))
    })
    .await;
    sim.set_faults(FaultConfig::default()).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));

    let log = sim.requests();
    let sends: Vec<&RequestRecord> = log.iter().filter(|r| is(r, SEND)).collect();
    assert_eq!(sends.len(), 2, "one dropped send, one resend: {sends:#?}");
    assert_eq!(
        sends[0].msg_id, sends[1].msg_id,
        "the resend reuses the msgId"
    );
    let between: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| is(r, QUERY) && r.seq > sends[0].seq && r.seq < sends[1].seq)
        .collect();
    let not_found = between
        .iter()
        .filter(|r| r.code.as_deref() == Some("404"))
        .count();
    let failed = between
        .iter()
        .filter(|r| r.http_status == Some(502))
        .count();
    assert_eq!(failed, 1, "{between:#?}");
    assert_eq!(
        not_found, 3,
        "resent after three 404s, the 502 between them ignored: {between:#?}"
    );
    let order = sim.ledger();
    let order = order
        .order(sends[0].msg_id.as_deref().unwrap())
        .expect("paid by the resend");
    assert_eq!(order.create_requests, 1);
    assert_eq!(order.state, "SUCCESS");
}

/// Defect 11: a connection that was refused is not a send: the attempt's send count and the
/// row's send times stay empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_not_counted_as_a_send() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(84)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 1, |_| "1234");
    let job = write_job(
        dir.path(),
        "refused",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve(4, 3600),
    );
    let child = spawn(vec!["run".into(), s(&job)]).await;
    wait_for_log(&sim, "the pre-flight balance check", |l| {
        l.iter().any(|r| is(r, BALANCE))
    })
    .await;
    // Starpay goes away before the payout leaves: every send is refused.
    sim.shutdown().await;
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(3), "left for the next run");
    let conn = db(dir.path(), "refused");
    let (sends, attempt_first, first, last): (i64, Option<i64>, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT a.send_count, a.first_sent_at, r.first_sent_at, r.last_sent_at
             FROM rows r JOIN attempts a ON a.id = r.attempt_id WHERE r.run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (sends, attempt_first, first, last),
        (0, None, None, None),
        "nothing left"
    );
    let (state, _) = row_state(&conn, 1, 2);
    assert_eq!(state, "UNSENT");
    let not_sent: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'not_sent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(not_sent >= 1);
}

both_backends! {
/// Defect 11: finishing and reopening a run are recorded as events (retry reopens).
async fn finish_and_reopen_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(85)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 3, |i| if i == 0 { "0401" } else { "1234" });
    let job = write_job(
        dir.path(),
        "ev",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(30, 3600),
    );
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(2), "{}", show(&first));
    let retry = run(vec![
        "retry".into(),
        s(&job),
        "--run".into(),
        "1".into(),
        "--include-beneficiary-errors".into(),
    ])
    .await;
    assert_eq!(retry.status.code(), Some(2), "{}", show(&retry));
    let kinds: Vec<String> = db_rows(
        dir.path(),
        "ev",
        "SELECT kind FROM events WHERE row_id IS NULL AND run_id = 1 ORDER BY id",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect();
    assert_eq!(
        kinds,
        [
            "run_created",
            "run_finished",
            // Each command that drove the run records how it ended (migration 0006).
            "command_ended",
            "run_reopened",
            "run_finished",
            "command_ended"
        ],
        "{kinds:?}"
    );
}
}

/// Defect 11 (retry) and 6: `first_sent_at` is the first send ever; the new attempt's own first
/// send is kept on the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_keeps_the_first_send_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(86)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 1, |_| "0401");
    let job = write_job(
        dir.path(),
        "fs",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(30, 3600),
    );
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(2), "{}", show(&first));
    let conn = db(dir.path(), "fs");
    let first_sent: i64 = conn
        .query_row("SELECT first_sent_at FROM rows", [], |r| r.get(0))
        .unwrap();
    let retry = run(vec![
        "retry".into(),
        s(&job),
        "--run".into(),
        "1".into(),
        "--include-beneficiary-errors".into(),
    ])
    .await;
    assert_eq!(retry.status.code(), Some(2), "{}", show(&retry));
    let (row_first, row_last, attempt_first): (i64, i64, i64) = conn
        .query_row(
            "SELECT r.first_sent_at, r.last_sent_at, a.first_sent_at
             FROM rows r JOIN attempts a ON a.id = r.attempt_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row_first, first_sent, "first send ever is kept");
    assert!(row_last > first_sent && attempt_first > first_sent);
}

/// Re-paying a reference on purpose: refused without `--repay` (the message names the earlier
/// run, line and state); with it, every earlier msgId is queried live before the new one is
/// allocated, the new attempt links to the one it supersedes, and a SUCCESS reference is never
/// re-paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repay_needs_the_flag_and_a_live_check() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(87)).await;
    let input = dir.path().join("payouts.csv");
    // Line 2 fails (AC01), line 3 succeeds.
    write_csv(&input, 2, |i| if i == 0 { "0401" } else { "1234" });
    let job = write_job(
        dir.path(),
        "repay",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(30, 3600),
    );
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(2), "{}", show(&first));
    let old_msg_id = read_report(&dir.path().join("reports/repay-1.csv"))[0]["msg_id"].clone();

    // A corrected file pays REF-000000 again (the beneficiary's account fixed).
    let fixed = dir.path().join("fixed.csv");
    std::fs::write(
        &fixed,
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n\
         REF-000000,instapay,0000001234,Juan,Santos,Dela Cruz,GCash,100.00,PHP,fixed\n",
    )
    .unwrap();
    let before = sim.requests().len();
    let refused = run(vec!["run".into(), s(&job), "--input".into(), s(&fixed)]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("FAILED in run 1 (line 2)") && err.contains("--repay"),
        "{err}"
    );
    assert_eq!(sim.requests().len(), before, "nothing sent");

    let repaid = run(vec![
        "run".into(),
        s(&job),
        "--input".into(),
        s(&fixed),
        "--repay".into(),
    ])
    .await;
    assert_eq!(repaid.status.code(), Some(0), "{}", show(&repaid));
    let log = sim.requests();
    let new_send = log[before..]
        .iter()
        .find(|r| is(r, SEND))
        .expect("the re-payment was sent");
    // The live check (a 5.4 query) came before the new payout left. Queries carry their own
    // msgId; which original they asked about is in our event log.
    let conn = db(dir.path(), "repay");
    let checks: Vec<String> = conn
        .prepare("SELECT msg_id FROM msg_ids WHERE purpose = 'repay_check'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(checks.len(), 1, "one earlier msgId, one live query");
    let check = log
        .iter()
        .find(|r| r.msg_id.as_deref() == Some(checks[0].as_str()))
        .expect("the live query reached Starpay");
    assert!(check.seq < new_send.seq, "checked before sending");
    assert_ne!(new_send.msg_id.as_deref(), Some(old_msg_id.as_str()));
    let (supersedes_msg, repay_of): (String, String) = conn
        .query_row(
            "SELECT s.msg_id, r.repay_of FROM rows r JOIN attempts a ON a.id = r.attempt_id
             JOIN attempts s ON s.id = a.supersedes WHERE r.run_id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(supersedes_msg, old_msg_id);
    assert!(
        repay_of.contains("re-payment of run 1 line 2"),
        "{repay_of}"
    );
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), 3);

    // A SUCCESS reference is never re-paid, even with --repay.
    let paid = dir.path().join("paid.csv");
    std::fs::write(
        &paid,
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n\
         REF-000001,instapay,0000011234,Juan,Santos,Dela Cruz,GCash,101.01,PHP,again\n",
    )
    .unwrap();
    let again = run(vec![
        "run".into(),
        s(&job),
        "--input".into(),
        s(&paid),
        "--repay".into(),
    ])
    .await;
    assert_eq!(again.status.code(), Some(1), "{}", show(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("SUCCESS in run 1 (line 3)"),
        "{}",
        show(&again)
    );
    assert_eq!(sim.ledger().orders.len(), 3);
}

/// Re-paying refuses when the live check finds an earlier msgId paid at Starpay although the
/// store recorded it FAILED: the row needs attention and nothing new is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repay_refused_when_starpay_has_it_paid() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(88)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 1, |_| "1234");
    let job = write_job(
        dir.path(),
        "contra",
        &sim,
        &input,
        LIMITS_FAST,
        &resolve(30, 3600),
    );
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    // A store that lost the truth: the paid row reads FAILED.
    let conn = db(dir.path(), "contra");
    conn.execute("UPDATE rows SET state = 'FAILED' WHERE run_id = 1", [])
        .unwrap();
    let again = dir.path().join("again.csv");
    std::fs::write(
        &again,
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n\
         REF-000000,instapay,0000001234,Juan,Santos,Dela Cruz,GCash,100.00,PHP,again\n",
    )
    .unwrap();
    let out = run(vec![
        "run".into(),
        s(&job),
        "--input".into(),
        s(&again),
        "--repay".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let (state, message) = row_state(&conn, 2, 2);
    assert_eq!(state, "NEEDS_ATTENTION");
    assert!(message.contains("as SUCCESS"), "{message}");
    assert_eq!(sim.ledger().orders.len(), 1, "nothing re-paid");
    // The reference is blocked for good.
    let third = run(vec![
        "run".into(),
        s(&job),
        "--input".into(),
        s(&again),
        "--repay".into(),
        "--new-run".into(),
    ])
    .await;
    assert_eq!(third.status.code(), Some(1), "{}", show(&third));
}

/// Defect 10: query msgIds come from counters in the database; two processes allocating from
/// one database at the same moment never get the same value. The children are this test binary
/// run again (`counter_child`), each a separate process with its own connection.
#[test]
fn msg_id_counters_never_collide_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    drop(starpay_batch::store::Store::open(&path).unwrap());
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(["--exact", "counter_child", "--ignored", "--nocapture"])
                .env("COUNTER_CHILD_DB", &path)
                .env("COUNTER_CHILD_OUT", dir.path().join(format!("out{i}.txt")))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for i in 0..CHILDREN {
        let text = std::fs::read_to_string(dir.path().join(format!("out{i}.txt"))).unwrap();
        for v in text.lines() {
            total += 1;
            assert!(seen.insert(v.to_string()), "value {v} handed out twice");
        }
    }
    assert_eq!(total, CHILDREN * 2 * COUNTER_ROUNDS);
}

const COUNTER_ROUNDS: usize = 400;
/// Child processes allocating at once.
const CHILDREN: usize = 4;

/// Not a test on its own: the child process of `msg_id_counters_never_collide_across_processes`.
#[test]
#[ignore]
fn counter_child() {
    let (Some(db), Some(out)) = (
        std::env::var_os("COUNTER_CHILD_DB"),
        std::env::var_os("COUNTER_CHILD_OUT"),
    ) else {
        return;
    };
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    // No fsync: commits take microseconds, so the children's statements interleave as tightly
    // as they can (an allocation that is not one atomic statement would be caught here).
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let mut lines = String::new();
    for _ in 0..COUNTER_ROUNDS {
        let n = starpay_batch::store::next_counter(&conn, "query").unwrap();
        lines.push_str(&format!("q{n}\n"));
        // A block of 5 from the block counter: its last value identifies it.
        let end = starpay_batch::store::advance_counter(&conn, "query_block", 5).unwrap();
        lines.push_str(&format!("b{end}\n"));
    }
    std::fs::write(out, lines).unwrap();
}

/// Re-paying waits while an earlier msgId is a FAIL with a timeout reason inside its hold (a
/// late credit can still land), even when the store recorded it FAILED: nothing new is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repay_waits_out_a_held_timeout_fail() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(89)).await;
    let input = dir.path().join("payouts.csv");
    // 0505: PROCESSING + AB05, then FAIL AB05 once the simulator's timeout hold has passed.
    write_csv(&input, 1, |_| "0505");
    let hold = "[resolve]\npoll_schedule_secs = [1]\npoll_interval_secs = 1\nnot_found_window_secs = 1\nnot_found_queries = 3\nab_hold_secs = 3600\nstale_after_secs = 600\ndeadline_secs = 3\nmax_resolve_secs = 7200\n";
    let job = write_job(dir.path(), "held", &sim, &input, LIMITS_FAST, hold);
    let first = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(first.status.code(), Some(3), "{}", show(&first));
    sim.advance(600);
    let msg_id = read_report(&dir.path().join("reports/held-1.csv"))[0]["msg_id"].clone();
    assert_eq!(sim.ledger().order(&msg_id).unwrap().state, "FAIL");
    // A store that took the held FAIL for a final one.
    let conn = db(dir.path(), "held");
    conn.execute("UPDATE rows SET state = 'FAILED' WHERE run_id = 1", [])
        .unwrap();
    let again = dir.path().join("again.csv");
    std::fs::write(
        &again,
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n\
         REF-000000,instapay,0000001234,Juan,Santos,Dela Cruz,GCash,100.00,PHP,again\n",
    )
    .unwrap();
    let out = run(vec![
        "run".into(),
        s(&job),
        "--input".into(),
        s(&again),
        "--repay".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report = read_report(&dir.path().join("reports/held-2.csv"));
    assert_eq!(report[0]["state"], "NOT_SENT", "{report:?}");
    assert_eq!(
        sim.ledger().orders.len(),
        1,
        "nothing re-paid during the hold"
    );
}
