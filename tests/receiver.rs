//! The notification receiver (issue 12) against the simulator's real signed notifications: the
//! real binary runs payout jobs with and without `--listen`; the receiver is then run in this
//! process on the same SQLite file to replay, forge and garble notifications.

mod payout_common;

use std::path::Path;
use std::time::Duration;

use payout_common::*;
use rusqlite::Connection;
use starpay_batch::receiver::{Limits, Receiver, Running};
use starpay_batch::starpay::sign::{envelope_bytes, known, PrivateKey, PublicKey};
use starpay_batch::store::Store;

/// A payout job on `sim` whose `notify_url` is `notify` (if any).
fn job(
    dir: &Path,
    name: &str,
    sim: &starpay_batch::server::sim::SimHandle,
    n: usize,
    notify: Option<&str>,
) -> std::path::PathBuf {
    let input = dir.join(format!("{name}.csv"));
    write_csv_with(
        &input,
        n,
        &format!("{name}-"),
        &format!("{}", name.len()),
        |i| {
            if i % 5 == 0 {
                "0401"
            } else {
                "5555"
            }
        },
    );
    let path = write_job(dir, name, sim, &input, "concurrency = 8", FAST_RESOLVE);
    if let Some(url) = notify {
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "mch_id = \"101510000001\"",
            &format!("mch_id = \"101510000001\"\nnotify_url = \"{url}\""),
        );
        std::fs::write(&path, text).unwrap();
    }
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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

/// Everything a notification could change: every row's mutable columns and the applied events.
fn snapshot(db: &Path) -> (Vec<String>, i64) {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare(
            "SELECT id, state, trx_state, message, query_count, updated_at FROM rows ORDER BY id",
        )
        .unwrap();
    let rows = s
        .query_map([], |r| {
            Ok(format!(
                "{:?}",
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?
                )
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let applied = c
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
///    same final states as one without it, with fewer queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reaches_the_same_states_with_fewer_queries() {
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var("RECEIVER_TEST_KEEP").is_ok();
    let sim = start_sim(fast_sim_config(12)).await;
    let n = 20;
    let plain = job(dir.path(), "plain", &sim, n, None);
    let started = std::time::Instant::now();
    let o = run(vec!["run".into(), s(&plain)]).await;
    let plain_secs = started.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let plain_queries = queries(&sim).len();

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/notify");
    let listened = job(dir.path(), "listened", &sim, n, Some(&url));
    let started = std::time::Instant::now();
    let o = run(vec![
        "run".into(),
        s(&listened),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    let listen_secs = started.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
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
    sim.shutdown().await;
    if keep {
        println!("kept {}", dir.keep().display());
    }
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
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/notify");
    let path = job(dir.path(), "notified", &sim, 3, Some(&url));
    let o = run(vec![
        "run".into(),
        s(&path),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let db = dir.path().join("notified.db");
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

    // Garbage: an error answer (or a closed connection), never a crash.
    let big = vec![b'{'; 12 * 1024 * 1024];
    match post(&url, json, big).await {
        Ok((status, _)) => assert_eq!(status, 413),
        Err(e) => println!("12 MB body: connection closed ({e})"),
    }
    for (what, ctype, body, want) in [
        ("empty", json, Vec::new(), 400),
        ("invalid JSON", json, b"{\"request\":".to_vec(), 400),
        (
            "wrong types",
            json,
            br#"{"request":5,"signature":7}"#.to_vec(),
            400,
        ),
        ("not JSON", "text/plain", raw.clone(), 415),
    ] {
        let (status, _) = post(&url, ctype, body).await.unwrap();
        assert_eq!(status, want, "{what}");
    }
    // Slow-loris headers: the connection is closed after the header timeout.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        s.write_all(b"POST /notify HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "slow headers: the connection must be closed");
    }
    assert_eq!(snapshot(&db), before, "garbage changed nothing");

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
    let unknown = payload.replace(&msg_id, "ZZUNKNOWN0001");
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
    sim.shutdown().await;
}

/// 3. `serve` in its own process beside a `run` in another, both writing to one database, with
///    the simulator duplicating, reordering, delaying and losing notifications: the same final
///    states as a clean run without notifications; duplicates are stored as such; `serve` stops
///    on SIGINT with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_beside_run_with_notification_faults() {
    use std::io::BufRead;
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
    let clean = job(dir.path(), "clean", &sim, n, None);
    let o = run(vec!["run".into(), s(&clean)]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/notify");
    let faulty = job(dir.path(), "faulty", &sim, n, Some(&url));
    let mut serve = spawn_piped(vec![
        "serve".into(),
        s(&faulty),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ])
    .await;
    let stdout = serve.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(first.trim(), format!("http://127.0.0.1:{port}/"));
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
    let c = Connection::open(&db).unwrap();
    let twice: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM (SELECT original_msg_id, trx_state FROM notifications
             WHERE outcome IN ('applied', 'stale') GROUP BY 1, 2 HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "no notification applied twice");
    sim.shutdown().await;
}
