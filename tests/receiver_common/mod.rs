//! Shared by `tests/receiver.rs` and `benches/receiver.rs` (included there by `#[path]`): the
//! real `serve` process, static-QR notifications (6.5) signed as the simulator's platform signs
//! them (TEST-ONLY key), and a burst of them from many concurrent clients.

#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use starpay_batch::domain::{Centavos, TrxState};
use starpay_batch::starpay::codes::Code;
use starpay_batch::starpay::model::Notification;
use starpay_batch::starpay::sign::{envelope_bytes, known, PrivateKey};

/// A port free on 127.0.0.1 a moment ago (for a child process to listen on).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binds port 0");
    l.local_addr().expect("has an address").port()
}

/// Starts `serve JOB --listen 127.0.0.1:port` and waits until it prints its URL (it is then
/// listening); its stdout is then used up, its stderr goes to `stderr`.
pub fn spawn_serve(job: &Path, port: u16, stderr: Stdio) -> Result<Child, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
        .arg("serve")
        .arg(job)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("STARPAY_PRIVATE_KEY_FILE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start serve: {e}"))?;
    let stdout = child.stdout.take().ok_or("serve has no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading serve's first line: {e}"))?;
    if line.trim() != format!("http://127.0.0.1:{port}/") {
        let _ = child.kill();
        return Err(format!("serve printed {line:?}, not its URL"));
    }
    Ok(child)
}

/// A static-QR payment notification (6.5) number `i`: its own `originalMsgId`, a terminal id
/// of ten, PHP 1.00–9.99, SUCCESS (the simulator's field order and values).
pub fn static_qr_notification(i: usize) -> Notification {
    Notification {
        code: Code::new("200"),
        message: "success".into(),
        trx_date: "2026-12-07T10:00:00+08:00".into(),
        trx_amount: Centavos::new(100 + (i % 900) as i64),
        trx_state: TrxState::Success,
        original_msg_id: format!("SQ{i:010}"),
        order_no: format!("9{i:017}"),
        mch_id: known::DEMO_MCH_ID.into(),
        device_info: Some(format!("TERM{:04}", i % 10)),
        ref_no: Some(format!("R{i:011}")),
        error_code: None,
        error_message: None,
    }
}

/// `{"request":…,"signature":…}` bodies of `notifications`, signed with the simulator's
/// platform key on `threads` threads (order kept).
pub fn sign_all(notifications: &[Notification], threads: usize) -> Vec<Vec<u8>> {
    let key = PrivateKey::from_text(known::SIM_PLATFORM_PRIVATE_PEM, "sim platform")
        .expect("the TEST-ONLY platform key loads");
    let chunk = notifications.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = notifications
            .chunks(chunk)
            .map(|part| {
                let key = &key;
                s.spawn(move || {
                    part.iter()
                        .map(|n| {
                            let payload = serde_json::to_vec(n).expect("serializes");
                            let sig = key.sign_b64(&payload).expect("signs");
                            envelope_bytes("request", &payload, &sig)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("a signing thread panicked"))
            .collect()
    })
}

/// What a burst got back.
#[derive(Debug, Default)]
pub struct Burst {
    /// Answered HTTP 200 `{"code":"200","message":"success"}`.
    pub ok: usize,
    /// Anything else, as `status body` or the transport error (the first 20 kept).
    pub failed: Vec<String>,
    pub failures: usize,
}

/// POSTs every body once to `url` from `clients` concurrent clients (each its own keep-alive
/// connection), each taking the next body not yet sent.
pub async fn burst(url: &str, bodies: Arc<Vec<Vec<u8>>>, clients: usize) -> Burst {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, bodies, next) = (url.to_string(), Arc::clone(&bodies), Arc::clone(&next));
        tasks.spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(1)
                .build()
                .expect("a client");
            let mut got = Burst::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return got;
                };
                let answer = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let text = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let text = r.text().await.unwrap_or_default();
                        if status == 200 && text == r#"{"code":"200","message":"success"}"# {
                            got.ok += 1;
                            continue;
                        }
                        format!("{status} {text}")
                    }
                    Err(e) => e.to_string(),
                };
                got.failures += 1;
                if got.failed.len() < 20 {
                    got.failed.push(text);
                }
            }
        });
    }
    let mut all = Burst::default();
    while let Some(done) = tasks.join_next().await {
        let got = done.expect("a client task panicked");
        all.ok += got.ok;
        all.failures += got.failures;
        all.failed.extend(got.failed);
    }
    all
}
