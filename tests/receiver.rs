//! The notification receiver (issue 12) against the simulator's real signed notifications: the
//! real binary runs payout jobs with and without `--listen`; the receiver is then run in this
//! process on the same SQLite file to replay, forge and garble notifications.

mod payout_common;
mod receiver_common;

use std::path::Path;
use std::time::Duration;

use payout_common::*;
use rusqlite::Connection;
use starpay_batch::receiver::{Limits, Receiver, Running};
use starpay_batch::starpay::sign::{envelope_bytes, known, PrivateKey, PublicKey};
use starpay_batch::store::Store;

/// The account suffix of generated row `i` (the simulator's scenario table): every fifth
/// fails (`0401`), the others succeed.
fn one_in_five_fails(i: usize) -> &'static str {
    if i.is_multiple_of(5) {
        "0401"
    } else {
        "5555"
    }
}

/// A payout job on `sim` whose `notify_url` is `notify` (if any); one row in five fails.
fn job(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    n: usize,
    notify: Option<&str>,
) -> std::path::PathBuf {
    job_with(dir, name, sim, n, notify, one_in_five_fails, FAST_RESOLVE)
}

/// The same, with row `i`'s account suffix from `suffix` and the `[resolve]` table `resolve`.
fn job_with(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    n: usize,
    notify: Option<&str>,
    suffix: fn(usize) -> &'static str,
    resolve: &str,
) -> std::path::PathBuf {
    let input = dir.join(format!("{name}.csv"));
    write_csv_with(
        &input,
        n,
        &format!("{name}-"),
        &format!("{}", name.len()),
        suffix,
    );
    let path = write_job(dir, name, sim, &input, "concurrency = 8", resolve);
    if let Some(url) = notify {
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "mch_id = \"101510000001\"",
            &format!("mch_id = \"101510000001\"\nnotify_url = \"{url}\""),
        );
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// A payout job of `n` rows named `name` run with `--listen` on a free port (the job's
/// notify_url pointing at it); returns the job file and the database. The run must end with
/// exit 2 (the job's `0401` rows fail).
async fn listen_run(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    n: usize,
) -> (std::path::PathBuf, std::path::PathBuf) {
    listen_run_with(dir, name, sim, n, one_in_five_fails, FAST_RESOLVE).await
}

/// The same, with row `i`'s account suffix from `suffix` and the `[resolve]` table `resolve`
/// (the run must still exit 2).
async fn listen_run_with(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    n: usize,
    suffix: fn(usize) -> &'static str,
    resolve: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let port = receiver_common::free_port();
    let url = format!("http://127.0.0.1:{port}/notify");
    let path = job_with(dir, name, sim, n, Some(&url), suffix, resolve);
    let o = run(vec![
        "run".into(),
        s(&path),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{name}: {}", show(&o));
    (path, dir.join(format!("{name}.db")))
}

/// `serve JOB` on `port` in its own process, listening once this returns (stderr piped).
async fn start_serve(job: &Path, port: u16) -> std::process::Child {
    let job = job.to_path_buf();
    tokio::task::spawn_blocking(move || {
        receiver_common::spawn_serve(&job, port, std::process::Stdio::piped())
    })
    .await
    .unwrap()
    .unwrap()
}

/// A clean payout job of `n` rows named `name` without notifications (one row in five fails;
/// `[resolve]` table `resolve`); returns its database.
async fn plain_run(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    n: usize,
    resolve: &str,
) -> std::path::PathBuf {
    let path = job_with(dir, name, sim, n, None, one_in_five_fails, resolve);
    let o = run(vec!["run".into(), s(&path)]).await;
    assert_eq!(o.status.code(), Some(2), "{name}: {}", show(&o));
    dir.join(format!("{name}.db"))
}

/// (originalMsgId, trxState) pairs applied more than once (stored as `applied` or `stale`
/// twice); must be 0.
fn applied_twice(db: &Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM (SELECT original_msg_id, trx_state FROM notifications
             WHERE outcome IN ('applied', 'stale', 'repayment') GROUP BY 1, 2 HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn states(db: &Path) -> Vec<(i64, String)> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare("SELECT line, state FROM rows ORDER BY line")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Each result row of `sql` (one `?1` parameter, or none) as the `Debug` text of its columns.
fn rows_as_text(db: &Path, sql: &str, params: &[&str]) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    let mut s = c.prepare(sql).unwrap();
    let n = s.column_count();
    s.query_map(rusqlite::params_from_iter(params), |r| {
        (0..n)
            .map(|i| r.get_ref(i).map(|v| format!("{v:?}")))
            .collect::<Result<Vec<_>, _>>()
            .map(|cols| cols.join(", "))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Everything a notification could change: every row's mutable columns and the applied events.
fn snapshot(db: &Path) -> (Vec<String>, i64) {
    let rows = rows_as_text(
        db,
        "SELECT id, state, trx_state, message, query_count, updated_at FROM rows ORDER BY id",
        &[],
    );
    let applied = Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'notification_applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (rows, applied)
}

fn outcomes(db: &Path, outcome: &str) -> i64 {
    let c = Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM notifications WHERE outcome = ?1",
        [outcome],
        |r| r.get(0),
    )
    .unwrap()
}

/// 1. A payout run with `--listen` (the job's notify_url pointing at the listener) reaches the
///    same final states as one without it, with fewer queries. The first poll is 4 s after the
///    send, so a row waits for it without `--listen`; with it, the receiver wakes the row's
///    parked job when its notification is applied and the row ends at once (the durations are
///    printed and recorded in docs/STATUS.md; the wake itself is asserted without timing by
///    `engine::workers::tests::a_woken_job_runs_before_its_due_time`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reaches_the_same_states_with_fewer_queries() {
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var("RECEIVER_TEST_KEEP").is_ok();
    let sim = start_sim(fast_sim_config(12)).await;
    let n = 20;
    let resolve = FAST_RESOLVE.replace("poll_schedule_secs = [1]", "poll_schedule_secs = [4]");
    let started = std::time::Instant::now();
    plain_run(dir.path(), "plain", &sim, n, &resolve).await;
    let plain_secs = started.elapsed().as_secs_f64();
    let plain_queries = queries(&sim).len();

    let started = std::time::Instant::now();
    let (listened, listened_db) =
        listen_run_with(dir.path(), "listened", &sim, n, one_in_five_fails, &resolve).await;
    let listen_secs = started.elapsed().as_secs_f64();
    let listen_queries = queries(&sim).len() - plain_queries;
    println!(
        "{n} rows: without --listen {plain_queries} queries in {plain_secs:.1} s; with --listen {listen_queries} queries in {listen_secs:.1} s"
    );
    let a = states(&dir.path().join("plain.db"));
    let b = states(&dir.path().join("listened.db"));
    assert_eq!(a.len(), n);
    assert_eq!(a, b, "same final states");
    assert!(a.iter().any(|(_, s)| s == "SUCCESS") && a.iter().any(|(_, s)| s == "FAILED"));
    let applied = outcomes(&dir.path().join("listened.db"), "applied");
    assert!(applied > 0, "some rows settled by notification");
    assert!(
        listen_queries < plain_queries,
        "fewer queries with --listen: {listen_queries} vs {plain_queries}"
    );
    // A final state that only a notification gave (the row was never queried) is treated like
    // any other final by `reconcile`: queried, compared and MATCHED with Starpay's ledger.
    let notified_only: Vec<i64> = rows_as_text(
        &listened_db,
        "SELECT line FROM rows WHERE query_count = 0 AND state IN ('SUCCESS', 'FAILED')",
        &[],
    )
    .iter()
    .map(|l| {
        l.trim_start_matches("Integer(")
            .trim_end_matches(')')
            .parse()
            .unwrap()
    })
    .collect();
    assert!(
        !notified_only.is_empty(),
        "some rows were final by notification alone"
    );
    let o = run(vec![
        "reconcile".into(),
        s(&listened),
        "--run".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let report = read_report(&dir.path().join("reports/listened-reconcile-1-2.csv"));
    assert_eq!(report.len(), n, "one line per row, no notification lines");
    for line in &notified_only {
        let r = report
            .iter()
            .find(|r| r["line"] == line.to_string())
            .unwrap();
        assert_eq!(r["category"], "MATCHED", "notification-only final: {r:?}");
        let ledger = sim.ledger();
        let o = ledger.order(&r["original_msg_id"]).unwrap();
        assert_eq!(r["trx_state"], o.state, "{r:?}");
    }
    assert_eq!(states(&listened_db), b, "reconcile moved no row");
    sim.shutdown().await;
    if keep {
        println!("kept {}", dir.keep().display());
    }
}

/// "A final state from a notification is confirmed by one query before a re-payment could ever
/// depend on it" (issue 12): a row made FAILED by its notification alone (never queried by the
/// run) is re-sent by `retry` only after a live query of its first msgId reached Starpay, and
/// the re-payment goes out under a new msgId linked to the attempt it supersedes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_queries_a_notification_final_live_before_it_repays() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(15)).await;
    // Polls 4 s after the send: the notification (about 0.4 s) settles every row first.
    let resolve = FAST_RESOLVE.replace("poll_schedule_secs = [1]", "poll_schedule_secs = [4]");
    let (job, db) =
        listen_run_with(dir.path(), "repaid", &sim, 5, one_in_five_fails, &resolve).await;
    let conn = Connection::open(&db).unwrap();
    let failed: Vec<(i64, String)> = conn
        .prepare(
            "SELECT r.id, a.msg_id FROM rows r JOIN attempts a ON a.row_id = r.id AND a.seq = 1
              WHERE r.state = 'FAILED' AND r.query_count = 0",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        failed.len(),
        1,
        "the AC01 row is FAILED by its notification alone"
    );
    let (row_id, first) = failed[0].clone();
    let before = sim.requests().len();
    let o = run(vec![
        "retry".into(),
        s(&job),
        "--run".into(),
        "1".into(),
        "--include-beneficiary-errors".into(),
    ])
    .await;
    // The re-payment fails again (the same AC01 account): a finding, exit 2.
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let second: String = conn
        .query_row(
            "SELECT msg_id FROM attempts WHERE row_id = ?1 AND seq = 2",
            [row_id],
            |r| r.get(0),
        )
        .expect("a second attempt");
    assert_ne!(second, first, "a new msgId for the re-payment");
    let checks: Vec<String> = conn
        .prepare("SELECT msg_id FROM msg_ids WHERE purpose = 'repay_check' AND row_id = ?1")
        .unwrap()
        .query_map([row_id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(checks.len(), 1, "one live query of the one earlier msgId");
    let log = sim.requests();
    let at = |m: &str| {
        log[before..]
            .iter()
            .position(|r| r.msg_id.as_deref() == Some(m))
            .unwrap_or_else(|| panic!("{m} reached Starpay"))
    };
    assert!(
        at(&checks[0]) < at(&second),
        "the live query came before the re-payment left"
    );
    sim.shutdown().await;
}

/// Signs `payload` as the simulator's platform does (TEST-ONLY key) into an envelope.
fn platform_signed(payload: &str) -> Vec<u8> {
    let key = PrivateKey::from_text(known::SIM_PLATFORM_PRIVATE_PEM, "sim").unwrap();
    let sig = key.sign_b64(payload.as_bytes()).unwrap();
    envelope_bytes("request", payload.as_bytes(), &sig)
}

async fn post(url: &str, content_type: &str, body: Vec<u8>) -> Result<(u16, String), String> {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}

/// 2. Forged, truncated, unsigned, wrong-mchId and replayed-with-changed-amount notifications
///    are refused and change nothing; the same notification twice changes nothing and answers
///    200; a signed one that does not echo the row's amount is a recorded conflict; garbage
///    bodies get an error answer or a closed connection and the receiver keeps serving; a
///    REVERSED after SUCCESS applies; an unknown msgId is stored and shown by `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_duplicate_garbage_and_the_receiver_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(21)).await;
    let (path, db) = listen_run(dir.path(), "notified", &sim, 3).await;
    // A real notification of the simulator, as received: a SUCCESS one (line 3 or 4).
    let raw: Vec<u8> = {
        let c = Connection::open(&db).unwrap();
        c.query_row(
            "SELECT raw FROM notifications WHERE verified = 1 AND trx_state = 'SUCCESS' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("the run stored a SUCCESS notification")
    };
    let text = String::from_utf8(raw.clone()).unwrap();
    let payload = text
        .strip_prefix("{\"request\":")
        .and_then(|t| t.split(",\"signature\":").next())
        .unwrap()
        .to_string();
    let amount = serde_json::from_str::<serde_json::Value>(&payload).unwrap()["trxAmount"]
        .as_i64()
        .unwrap();

    // The receiver in this process on the same database, with short limits.
    let store = Store::open(&db).unwrap();
    let receiver = Receiver {
        store,
        mch_id: known::DEMO_MCH_ID.into(),
        platform_keys: vec![PublicKey::from_text(known::SIM_PLATFORM_PUBLIC_PEM, "sim").unwrap()],
        resolve: Default::default(),
        limits: Limits {
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        applied: None,
    };
    let running = Running::start("127.0.0.1:0".parse().unwrap(), receiver)
        .await
        .unwrap();
    let url = format!("http://{}/notify", running.addr);
    let json = "application/json";
    let before = snapshot(&db);

    // The same notification again: 200, stored as a duplicate, nothing changes.
    let dup = outcomes(&db, "duplicate");
    let (status, body) = post(&url, json, raw.clone()).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"code":"200","message":"success"}"#)
    );
    assert_eq!(outcomes(&db, "duplicate"), dup + 1);
    assert_eq!(snapshot(&db), before);

    // Refused: each answered 400 (402 for a signature), stored as refused, nothing changes.
    let forger = PrivateKey::generate().unwrap();
    let forged_sig = forger.sign_b64(payload.as_bytes()).unwrap();
    let wrong_mch = payload.replace("\"mchId\":\"101510000001\"", "\"mchId\":\"101510000002\"");
    assert_ne!(wrong_mch, payload);
    let changed_amount = payload.replace(
        &format!("\"trxAmount\":{amount}"),
        &format!("\"trxAmount\":{}", amount + 100),
    );
    assert_ne!(changed_amount, payload);
    let sig_of_raw = text
        .split(",\"signature\":\"")
        .nth(1)
        .unwrap()
        .trim_end_matches("\"}");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "forged",
            envelope_bytes("request", payload.as_bytes(), &forged_sig),
            "402",
        ),
        ("truncated", raw[..raw.len() / 2].to_vec(), "402"),
        (
            "unsigned",
            format!("{{\"request\":{payload}}}").into_bytes(),
            "402",
        ),
        ("wrong mchId", platform_signed(&wrong_mch), "400"),
        (
            "replayed with a changed amount",
            envelope_bytes("request", changed_amount.as_bytes(), sig_of_raw),
            "402",
        ),
    ];
    for (what, body, code) in cases {
        let refused = outcomes(&db, "refused");
        let (status, answer) = post(&url, json, body).await.unwrap();
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer.contains(&format!("\"code\":\"{code}\"")),
            "{what}: {answer}"
        );
        assert_eq!(
            outcomes(&db, "refused"),
            refused + 1,
            "{what} is stored as refused"
        );
        assert_eq!(snapshot(&db), before, "{what} changed nothing");
    }

    // Signed by the platform but not echoing the row's amount: a conflict, stored, row kept.
    let conflict = changed_amount.replace("\"trxState\":\"SUCCESS\"", "\"trxState\":\"REVERSED\"");
    let (status, _) = post(&url, json, platform_signed(&conflict)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(outcomes(&db, "conflict"), 1);
    assert_eq!(snapshot(&db), before, "a conflict changes no row");

    // Garbage (acceptance 5): each gets an error answer (or a closed connection), changes no
    // row, and the receiver still answers the next real notification (a duplicate: 200).
    let still_serving = |what: String| {
        let (url, raw, db, before) = (url.clone(), raw.clone(), db.clone(), before.clone());
        async move {
            assert_eq!(snapshot(&db), before, "{what} changed nothing");
            let (status, body) = post(&url, json, raw).await.unwrap();
            assert_eq!(
                (status, body.as_str()),
                (200, r#"{"code":"200","message":"success"}"#),
                "after {what}: the receiver still serves"
            );
        }
    };
    let big = vec![b'{'; 12 * 1024 * 1024];
    match post(&url, json, big).await {
        Ok((status, _)) => assert_eq!(status, 413),
        Err(e) => println!("12 MB body: connection closed ({e})"),
    }
    still_serving("a 12 MB body".into()).await;
    // Verified by the platform key, but the fields have the wrong types.
    let wrong_field_types = payload
        .replace(&format!("\"trxAmount\":{amount}"), "\"trxAmount\":\"lots\"")
        .replace("\"trxState\":\"SUCCESS\"", "\"trxState\":7");
    assert_ne!(wrong_field_types, payload);
    for (what, ctype, body, want) in [
        ("empty", json, Vec::new(), 400),
        ("invalid JSON", json, b"{\"request\":".to_vec(), 400),
        ("not even JSON", json, b"\x00\xff garbage".to_vec(), 400),
        (
            "wrong types",
            json,
            br#"{"request":5,"signature":7}"#.to_vec(),
            400,
        ),
        (
            "wrong types inside a request the platform signed",
            json,
            platform_signed(&wrong_field_types),
            400,
        ),
        ("a JSON array", json, b"[1,2,3]".to_vec(), 400),
        ("not JSON", "text/plain", raw.clone(), 415),
    ] {
        let (status, _) = post(&url, ctype, body).await.unwrap();
        assert_eq!(status, want, "{what}");
        still_serving(what.to_string()).await;
    }
    // Slow-loris headers: while three connections dribble a request head, a real notification
    // is still answered; each slow connection is closed after the header timeout.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut s = tokio::net::TcpStream::connect(running.addr).await.unwrap();
            s.write_all(b"POST /notify HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(s);
        }
        still_serving("slow-loris headers (while held)".into()).await;
        for mut s in slow {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            assert!(read.is_ok(), "slow headers: the connection must be closed");
        }
        still_serving("slow-loris headers".into()).await;
    }
    // Still serving: a verified REVERSED after SUCCESS applies and is flagged.
    let reversed = payload.replace("\"trxState\":\"SUCCESS\"", "\"trxState\":\"REVERSED\"");
    let (status, _) = post(&url, json, platform_signed(&reversed)).await.unwrap();
    assert_eq!(status, 200);
    let after = snapshot(&db);
    assert_eq!(after.1, before.1 + 1, "one more applied notification");
    let msg_id = serde_json::from_str::<serde_json::Value>(&payload).unwrap()["originalMsgId"]
        .as_str()
        .unwrap()
        .to_string();
    let (state, message): (String, String) = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT r.state, r.message FROM rows r JOIN attempts a ON a.row_id = r.id WHERE a.msg_id = ?1",
            [&msg_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "REVERSED");
    assert!(message.starts_with("REVERSED_AFTER_SUCCESS"), "{message}");

    // An unknown msgId: stored as unmatched, 200, shown by `status`.
    // (Its orderNo is not the row's either: a line and a notification with one orderNo are
    // one payment to the reconciliation report.)
    let order_no = serde_json::from_str::<serde_json::Value>(&payload).unwrap()["orderNo"]
        .as_str()
        .unwrap()
        .to_string();
    let unknown = payload
        .replace(&msg_id, "ZZUNKNOWN0001")
        .replace(&order_no, "20991231ZZ00000001");
    let (status, _) = post(&url, json, platform_signed(&unknown)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(outcomes(&db, "unmatched"), 1);
    running.stop().await;
    let o = run(vec!["status".into(), s(&path)]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("MISSING_LOCALLY") && out.contains("ZZUNKNOWN0001"),
        "{}",
        show(&o)
    );
    // … and by `show` of its msgId.
    let o = run(vec!["show".into(), s(&path), "ZZUNKNOWN0001".into()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("msgId ZZUNKNOWN0001 (no payout row")
            && out.contains("ZZUNKNOWN0001 SUCCESS PHP")
            && out.contains("verified; unmatched"),
        "{out}"
    );
    // … and by the reconciliation report of its day (a `reconcile` pass over the run).
    let o = run(vec![
        "reconcile".into(),
        s(&path),
        "--run".into(),
        "1".into(),
    ])
    .await;
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", show(&o));
    let report = read_report(&path.with_file_name("reports/notified-reconcile-1-2.csv"));
    let listed: Vec<_> = report
        .iter()
        .filter(|r| r["category"] == "UNMATCHED_NOTIFICATION")
        .collect();
    assert_eq!(listed.len(), 1, "{report:#?}");
    assert_eq!(listed[0]["original_msg_id"], "ZZUNKNOWN0001");
    assert_eq!(listed[0]["line"], "");
    assert_eq!(
        listed[0]["provider_amount"],
        starpay_batch::domain::Centavos::new(amount).to_string()
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("UNMATCHED_NOTIFICATION"),
        "a warning names it: {}",
        show(&o)
    );
    sim.shutdown().await;
}

/// 3. `serve` in its own process beside a `run` in another, both writing to one database, with
///    the simulator duplicating, reordering, delaying and losing notifications: the same final
///    states as a clean run without notifications; duplicates are stored as such; `serve` stops
///    on SIGINT with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_beside_run_with_notification_faults() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_sim_config(33);
    config.faults = starpay_batch::server::sim::FaultConfig {
        notify_duplicate: 0.5,
        notify_reorder: 0.3,
        notify_delay: 0.3,
        notify_delay_secs: 2,
        notify_lost: 0.2,
        ..Default::default()
    };
    let sim = start_sim(config).await;
    let n = 15;
    plain_run(dir.path(), "clean", &sim, n, FAST_RESOLVE).await;

    let port = receiver_common::free_port();
    let url = format!("http://127.0.0.1:{port}/notify");
    let faulty = job(dir.path(), "faulty", &sim, n, Some(&url));
    let serve = start_serve(&faulty, port).await;
    let o = run(vec!["run".into(), s(&faulty)]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let db = dir.path().join("faulty.db");
    // Late (delayed) notifications may still come in after the run: they change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sigint(&serve);
    let o = wait_output(serve).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        states(&dir.path().join("clean.db")),
        states(&db),
        "same final states as a clean run"
    );
    let applied = outcomes(&db, "applied");
    let counted = applied + outcomes(&db, "stale") + outcomes(&db, "duplicate");
    println!(
        "notifications: applied {applied}, stale {}, duplicate {}, refused {}",
        outcomes(&db, "stale"),
        outcomes(&db, "duplicate"),
        outcomes(&db, "refused")
    );
    assert!(counted > 0, "the receiver stored notifications");
    // notify_duplicate = 0.5 over about 15 notifications (seeded by msgId, which holds the
    // database's random id): no duplicate at all has a chance of about 3e-5.
    assert!(
        outcomes(&db, "duplicate") > 0,
        "duplicates were delivered and stored as such"
    );
    assert_eq!(outcomes(&db, "refused"), 0);
    assert_eq!(outcomes(&db, "conflict"), 0);
    // Each (msgId, state) counted once: never applied twice.
    assert_eq!(applied_twice(&db), 0, "no notification applied twice");
    sim.shutdown().await;
}

/// Each row's current msgId → its query count (the store's `rows.query_count`).
fn queries_by_msg_id(db: &Path) -> std::collections::HashMap<String, i64> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare(
            "SELECT a.msg_id, r.query_count FROM rows r JOIN attempts a ON a.id = r.attempt_id",
        )
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The events of the row whose current msgId is `msg_id`, one per line (for failure messages).
fn row_events(db: &Path, msg_id: &str) -> String {
    rows_as_text(
        db,
        "SELECT e.at, e.kind, e.old_state, e.new_state, e.detail FROM events e
         JOIN attempts a ON a.row_id = e.row_id WHERE a.msg_id = ?1 ORDER BY e.id",
        &[msg_id],
    )
    .join("\n")
}

/// When the simulator made order `o` final (simulated ms).
fn settled_at(o: &starpay_batch::server::sim::LedgerOrder) -> u64 {
    o.history
        .iter()
        .rev()
        .find(|h| h.state != "PROCESSING")
        .map(|h| h.at_ms)
        .unwrap_or_else(|| panic!("{} is not final in the simulator", o.msg_id))
}

/// 3b. One run per notification fault (acceptance 3): with only `notify_duplicate`, only
///     `notify_reorder`, only `notify_delay` or only `notify_lost` on, a payout run with
///     `--listen` reaches the final states of a clean run without notifications, never applies
///     a notification twice, and the fault is shown to have happened: duplicates stored as
///     such; notifications received in another order than the simulator settled them; some
///     delivered 2 s late (the row settled by whichever came first, query or notification);
///     a lost one never stored and its row resolved by polling (queries > 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_fault_alone_gives_a_clean_runs_states() {
    use starpay_batch::server::sim::FaultConfig;
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(34)).await;
    let n = 15;
    let want = states(&plain_run(dir.path(), "clean", &sim, n, FAST_RESOLVE).await);
    let only = |set: fn(&mut FaultConfig)| {
        let mut f = FaultConfig {
            notify_delay_secs: 2,
            ..FaultConfig::default()
        };
        set(&mut f);
        f
    };
    let cases = [
        ("duplicate", only(|f| f.notify_duplicate = 0.5)),
        ("reorder", only(|f| f.notify_reorder = 0.5)),
        ("delay", only(|f| f.notify_delay = 0.5)),
        ("lost", only(|f| f.notify_lost = 0.5)),
    ];
    for (fault, faults) in cases {
        sim.set_faults(faults).unwrap();
        let (_, db) = listen_run(dir.path(), fault, &sim, n).await;
        let what = format!("notify_{fault}");
        assert_eq!(states(&db), want, "{what}: the clean run's final states");
        assert_eq!(applied_twice(&db), 0, "{what}: nothing applied twice");
        assert_eq!(
            outcomes(&db, "refused") + outcomes(&db, "conflict"),
            0,
            "{what}"
        );
        let rows = queries_by_msg_id(&db);
        assert_eq!(rows.len(), n, "{what}: every row has its attempt");
        if fault == "delay" {
            // Wait until the late notifications were attempted (the run may be over by then).
            eventually(
                &format!("{what}: every notification attempted"),
                Duration::from_secs(20),
                || {
                    sim.ledger()
                        .orders
                        .iter()
                        .filter(|o| rows.contains_key(&o.msg_id))
                        .all(|o| o.notifications.iter().any(|a| a.attempt >= 1))
                },
            )
            .await;
        }
        let ledger = sim.ledger();
        let ours: Vec<_> = ledger
            .orders
            .iter()
            .filter(|o| rows.contains_key(&o.msg_id))
            .collect();
        assert_eq!(
            ours.len(),
            n,
            "{what}: every row is in the simulator's ledger"
        );
        let stored = |msg_id: &str| -> i64 {
            Connection::open(&db)
                .unwrap()
                .query_row(
                    "SELECT COUNT(*) FROM notifications WHERE original_msg_id = ?1",
                    [msg_id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        // The rows the fault hit, and the queries each needed.
        let hit: Vec<(String, i64)> = match fault {
            "duplicate" => {
                assert!(outcomes(&db, "duplicate") > 0, "{what}: duplicates stored");
                Vec::new()
            }
            "reorder" => {
                // First receipt of each msgId, in the order the receiver stored them.
                let received: Vec<String> = {
                    let c = Connection::open(&db).unwrap();
                    let mut s = c
                        .prepare(
                            "SELECT original_msg_id FROM notifications GROUP BY 1 ORDER BY MIN(id)",
                        )
                        .unwrap();
                    s.query_map([], |r| r.get(0))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect()
                };
                let at = |m: &str| settled_at(ours.iter().find(|o| o.msg_id == m).unwrap());
                let swapped: Vec<(String, i64)> = received
                    .windows(2)
                    .filter(|w| at(&w[0]) > at(&w[1]))
                    .map(|w| (w[0].clone(), rows[&w[0]]))
                    .collect();
                assert!(
                    !swapped.is_empty(),
                    "{what}: some notification arrived after one the simulator settled later"
                );
                swapped
            }
            "delay" => {
                let late: Vec<(String, i64)> = ours
                    .iter()
                    .filter(|o| {
                        o.notifications
                            .iter()
                            .find(|a| a.attempt == 1)
                            .is_some_and(|a| a.at_ms >= settled_at(o) + 2_000)
                    })
                    .map(|o| (o.msg_id.clone(), rows[&o.msg_id]))
                    .collect();
                assert!(!late.is_empty(), "{what}: some notification was late");
                late
            }
            _ => {
                let lost: Vec<(String, i64)> = ours
                    .iter()
                    .filter(|o| o.notifications.iter().any(|a| a.result.starts_with("lost")))
                    .map(|o| (o.msg_id.clone(), rows[&o.msg_id]))
                    .collect();
                assert!(!lost.is_empty(), "{what}: some notification was lost");
                for (m, q) in &lost {
                    assert!(
                        *q > 0,
                        "{what}: {m}'s notification was lost: polling covered it; events:\n{}",
                        row_events(&db, m)
                    );
                    assert_eq!(stored(m), 0, "{what}: {m}: nothing received");
                }
                lost
            }
        };
        println!(
            "{what}: applied {}, stale {}, duplicate {}; rows hit (msgId, queries): {hit:?}",
            outcomes(&db, "applied"),
            outcomes(&db, "stale"),
            outcomes(&db, "duplicate"),
        );
    }
    sim.shutdown().await;
}

/// 4. A burst of 10,000 signed static-QR notifications (6.5) from 50 concurrent clients to
///    the real `serve` process, every tenth sent a second time on purpose: every POST is
///    answered success, each notification is stored exactly once as a repayment record, every
///    copy sent again is stored as a duplicate and nothing else, every POST is in the event
///    log, and `serve` stops cleanly (exit 0) after it. About 10 s in a debug build. Rate, CPU
///    and peak RSS: `benches/receiver.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_10000_notifications_from_50_clients_each_stored_once() {
    let n = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(55)).await;
    let path = job(dir.path(), "burst", &sim, 1, None);
    let port = receiver_common::free_port();
    let serve = start_serve(&path, port).await;
    let notifications: Vec<_> = (0..n)
        .map(receiver_common::static_qr_notification)
        .collect();
    let mut bodies =
        tokio::task::spawn_blocking(move || receiver_common::sign_all(&notifications, 2))
            .await
            .unwrap();
    let again: Vec<Vec<u8>> = bodies.iter().step_by(10).cloned().collect();
    let d = again.len();
    bodies.extend(again);
    let started = std::time::Instant::now();
    let got = receiver_common::burst(
        &format!("http://127.0.0.1:{port}/notify"),
        std::sync::Arc::new(bodies),
        50,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    sigint(&serve);
    let o = wait_output(serve).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(got.failures, 0, "failed answers: {:?}", got.failed);
    assert_eq!(got.ok, n + d, "every POST answered success");
    let db = dir.path().join("burst.db");
    assert_eq!(outcomes(&db, "repayment"), n as i64, "each stored once");
    assert_eq!(outcomes(&db, "duplicate"), d as i64, "copies sent again");
    assert_eq!(applied_twice(&db), 0, "no notification recorded twice");
    let c = Connection::open(&db).unwrap();
    let (distinct, events): (i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(DISTINCT original_msg_id) FROM notifications WHERE outcome = 'repayment'),
                    (SELECT COUNT(*) FROM events WHERE kind LIKE 'notification_%')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(distinct, n as i64, "every notification's msgId stored");
    assert_eq!(events, (n + d) as i64, "every POST in the event log");
    println!(
        "{} POSTs ({n} notifications, {d} sent again) from 50 clients in {secs:.1} s (debug build)",
        n + d
    );
    sim.shutdown().await;
}

both_backends! {
/// 5. A payout the simulator reverses after its SUCCESS (account suffix `0700`), with the
///    reversal notified while the run still waits for a slow row (`0504`, PROCESSING for
///    4 s): the row ends REVERSED, flagged `yes` in the report's own `reversed_after_success`
///    column (the other rows empty) and `reversed_after_success: true` in the result file;
///    the simulator's ledger agrees. 4: `show` of its reference lists both notifications.
async fn reversed_after_success_is_flagged_in_report_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fast_sim_config(61);
    config.reversal_delay_ms = 1_000;
    config.timeout_hold_ms = 4_000;
    let sim = start_sim(config).await;
    let scenario = |i: usize| ["5555", "0700", "0504"][i % 3];
    let (path, _) = listen_run_with(dir.path(), "reversal", &sim, 3, scenario, FAST_RESOLVE).await;
    let states: Vec<(i64, String)> = db_rows(
        dir.path(),
        "reversal",
        "SELECT line, state FROM rows ORDER BY line",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap_or("0").parse().unwrap(),
            r[1].clone().unwrap_or_default(),
        )
    })
    .collect();
    assert_eq!(
        states,
        vec![
            (2, "SUCCESS".to_string()),
            (3, "REVERSED".to_string()),
            (4, "SUCCESS".to_string())
        ]
    );
    let report = read_report(&dir.path().join("reports/reversal-1.csv"));
    let flags: Vec<(&str, &str)> = report
        .iter()
        .map(|r| (r["state"].as_str(), r["reversed_after_success"].as_str()))
        .collect();
    assert_eq!(
        flags,
        vec![("SUCCESS", ""), ("REVERSED", "yes"), ("SUCCESS", "")]
    );
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("reports/reversal-1-result.json")).unwrap(),
    )
    .unwrap();
    let human = result["needs_human"].as_array().unwrap();
    assert_eq!(human.len(), 1, "{result}");
    assert_eq!(human[0]["line"], 3);
    assert_eq!(human[0]["reversed_after_success"], true, "{result}");
    let msg_id = report[1]["msg_id"].clone();
    assert_eq!(sim.ledger().order(&msg_id).unwrap().state, "REVERSED");
    // 4. `show` of the reference lists its notifications: the REVERSED one applied, and the
    //    SUCCESS one before it (applied, or stale when a query got there first).
    let o = run(vec![
        "show".into(),
        s(&path),
        report[1]["reference"].clone(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let listed: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("notification ") && l.contains(msg_id.as_str()))
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(
        listed[0].contains(" SUCCESS PHP ") && listed[0].contains("verified; "),
        "{out}"
    );
    assert!(
        listed[1].contains(" REVERSED PHP ") && listed[1].contains("verified; applied"),
        "{out}"
    );
    sim.shutdown().await;
}
}

/// A client of the simulator signing with the demo merchant's TEST-ONLY key.
fn sim_client(
    sim: &starpay_batch::server::sim::SimHandle,
) -> starpay_batch::starpay::client::Client {
    use starpay_batch::starpay::client::{Client, ClientConfig, Environment};
    let key = PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo").unwrap();
    let cfg = ClientConfig::new(
        Environment::parse(&sim.base_url()).unwrap(),
        starpay_batch::domain::MchId::new(known::DEMO_MCH_ID).unwrap(),
    );
    Client::new(
        cfg,
        std::sync::Arc::new(key),
        vec![sim.platform_public_key()],
    )
    .unwrap()
}

/// Verified notifications stored with `outcome` (waits for `serve`, at most 20 s).
async fn wait_outcomes(db: &Path, outcome: &str, n: i64) {
    eventually(
        &format!("{n} notifications stored as {outcome}"),
        Duration::from_secs(20),
        || db.exists() && outcomes(db, outcome) >= n,
    )
    .await;
}

/// Issue 12, "repayment-recon against what the receiver saw": `serve` receives the simulator's
/// real 6.5 (static QR paid three times) and 6.3 (a dynamic QR paid) notifications; a second
/// dynamic QR is paid with its notifyUrl pointing at a port nobody listens on (never
/// notified); an unknown msgId is notified too. A repayment-recon job over a file naming two
/// static payments (one by refNo, one by msgId) and both dynamic QRs then reports each file
/// line as MATCHED with its `notification` column NOTIFIED, or IN_FILE_NEVER_NOTIFIED for the
/// one never notified; the third static payment as an extra NOTIFIED_NOT_IN_FILE line and the
/// unknown msgId as an UNMATCHED_NOTIFICATION line (both with the simulator's amounts); the
/// summary CSV counts them after the category table; the run exits 2 with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repayment_recon_compares_the_file_with_the_notifications() {
    use starpay_batch::domain::{Centavos, MsgId};
    use starpay_batch::starpay::model::{Currency, RepaymentRequest, StaticQrRequest};
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(71)).await;
    let input = dir.path().join("collections.csv");
    std::fs::write(
        &input,
        "ref_no,original_msg_id,expected_amount,expected_state\n",
    )
    .unwrap();
    let job = write_job_kind(
        dir.path(),
        "eod",
        "repayment-recon",
        &sim,
        &input,
        "requests_per_second = 400\nburst = 100\nconcurrency = 4",
        "[resolve]\ndeadline_secs = 60\n",
    );
    let db = dir.path().join("eod.db");
    let port = receiver_common::free_port();
    let url = format!("http://127.0.0.1:{port}/notify");
    let serve = start_serve(&job, port).await;

    let client = sim_client(&sim);
    let mch = starpay_batch::domain::MchId::new(known::DEMO_MCH_ID).unwrap();
    client
        .generate_static_qr(&StaticQrRequest {
            msg_id: MsgId::new("EODSQ1").unwrap(),
            mch_id: mch.clone(),
            device_info: "SHOP1".into(),
            display_name: "Shop".into(),
            notify_url: url.clone(),
        })
        .await
        .unwrap();
    let statics: Vec<String> = [10_000, 25_000, 7_500]
        .into_iter()
        .map(|a| {
            sim.pay_static_qr(known::DEMO_MCH_ID, "SHOP1", Centavos::new(a))
                .unwrap()
        })
        .collect();
    let nobody = format!("http://127.0.0.1:{}/notify", receiver_common::free_port());
    for (msg_id, notify_url) in [("EODDQ1", &url), ("EODDQ2", &nobody)] {
        let r = client
            .create_repayment(&RepaymentRequest {
                msg_id: MsgId::new(msg_id).unwrap(),
                mch_id: mch.clone(),
                notify_url: notify_url.clone(),
                device_info: "POS7".into(),
                trx_amount: Centavos::new(50_000),
                currency: Currency::Php,
                attach: None,
                time_start: None,
                time_expire: None,
                display_name: None,
            })
            .await
            .unwrap();
        sim.pay_dynamic_qr(r.response.order_no.as_deref().unwrap())
            .unwrap();
    }
    // Three static payments and one dynamic QR, each stored once as a repayment record.
    wait_outcomes(&db, "repayment", 4).await;
    // An unknown msgId (no deviceInfo), dated like the payments.
    let ledger = sim.ledger();
    let trx_date = ledger.order(&statics[0]).unwrap().trx_date.clone();
    let unknown = format!(
        r#"{{"code":"200","message":"success","trxDate":"{trx_date}","trxAmount":4200,"trxState":"SUCCESS","originalMsgId":"ZZEODUNKNOWN1","orderNo":"999","mchId":"{}"}}"#,
        known::DEMO_MCH_ID
    );
    let (status, _) = post(&url, "application/json", platform_signed(&unknown))
        .await
        .unwrap();
    assert_eq!(status, 200);
    wait_outcomes(&db, "unmatched", 1).await;
    sigint(&serve);
    let o = wait_output(serve).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    let ref_no = ledger.order(&statics[0]).unwrap().ref_no.clone().unwrap();
    std::fs::write(
        &input,
        format!(
            "ref_no,original_msg_id,expected_amount,expected_state\n\
             {ref_no},,100.00,SUCCESS\n\
             ,{},250.00,SUCCESS\n\
             ,EODDQ1,500.00,SUCCESS\n\
             ,EODDQ2,500.00,SUCCESS\n",
            statics[1]
        ),
    )
    .unwrap();
    let o = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        stdout.contains("NOTIFIED_NOT_IN_FILE") && stderr.contains("WARNING: 1 repayment(s)"),
        "{}",
        show(&o)
    );
    let report = read_report(&dir.path().join("reports/eod-1.csv"));
    let got: Vec<(&str, &str, &str, &str, &str)> = report
        .iter()
        .map(|r| {
            (
                r["line"].as_str(),
                r["original_msg_id"].as_str(),
                r["category"].as_str(),
                r["notification"].as_str(),
                r["provider_amount"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("2", "", "MATCHED", "NOTIFIED", "100.00"),
            ("3", statics[1].as_str(), "MATCHED", "NOTIFIED", "250.00"),
            ("4", "EODDQ1", "MATCHED", "NOTIFIED", "500.00"),
            ("5", "EODDQ2", "MATCHED", "IN_FILE_NEVER_NOTIFIED", "500.00"),
            (
                "",
                statics[2].as_str(),
                "NOTIFIED_NOT_IN_FILE",
                "NOTIFIED",
                "75.00"
            ),
            (
                "",
                "ZZEODUNKNOWN1",
                "UNMATCHED_NOTIFICATION",
                "NOTIFIED",
                "42.00"
            ),
        ],
        "{report:#?}"
    );
    // The extra lines carry what the simulator's ledger says about the payment.
    let third = ledger.order(&statics[2]).unwrap();
    assert_eq!(report[4]["order_no"], third.order_no);
    assert_eq!(report[4]["trx_state"], "SUCCESS");
    assert_eq!(report[4]["trx_date"], third.trx_date);
    let summary = read_report(&dir.path().join("reports/eod-1-summary.csv"));
    let count = |label: &str| -> (String, String) {
        let r = summary
            .iter()
            .find(|r| r["category"] == label)
            .unwrap_or_else(|| panic!("{label} in {summary:?}"));
        (r["count"].clone(), r["amount"].clone())
    };
    assert_eq!(count("MATCHED"), ("4".into(), "1350.00".into()));
    assert_eq!(count("TOTAL"), ("4".into(), "1350.00".into()));
    assert_eq!(count("NOTIFIED_NOT_IN_FILE"), ("1".into(), "75.00".into()));
    assert_eq!(
        count("IN_FILE_NEVER_NOTIFIED"),
        ("1".into(), "500.00".into())
    );
    assert_eq!(
        count("UNMATCHED_NOTIFICATION"),
        ("1".into(), "42.00".into())
    );
    // The HTML page shows the same lines.
    let page = std::fs::read_to_string(dir.path().join("reports/eod-1-summary.html")).unwrap();
    for label in [
        "NOTIFIED_NOT_IN_FILE",
        "IN_FILE_NEVER_NOTIFIED",
        "UNMATCHED_NOTIFICATION",
    ] {
        assert!(
            page.contains(&format!("data-check=\"{label}\"")),
            "{label} in the page"
        );
    }
    sim.shutdown().await;
}
