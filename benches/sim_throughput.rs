//! Simulator throughput with no faults, next to the RSA signing rate measured in the same
//! process. Signing every response is the simulator's cost floor, so its requests/s is
//! compared with the signing rate on the same number of threads as the runtime's workers.
//!
//! Requests are signed before the clock starts (the load generator must not compete with the
//! server for the signing CPU) and sent over keep-alive connections by a minimal HTTP/1.1 load generator.
//! Prints figures; never fails on a slow machine.
//!
//! Run: `cargo bench --bench sim_throughput` (env: SIM_BENCH_REQUESTS, default 8000).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use starpay_batch::domain::{Centavos, MchId, MsgId, TrxState};
use starpay_batch::server::sim::{SimConfig, Simulator};
use starpay_batch::starpay::codes::Code;
use starpay_batch::starpay::model::*;
use starpay_batch::starpay::sign::{self, known, PrivateKey, SignedRequest};

const CONCURRENCY: usize = 32;

fn signing_rate(key: &PrivateKey, threads: usize, for_how_long: Duration) -> f64 {
    // A typical 5.2 answer, as the simulator signs it.
    let payload = serde_json::to_vec(&DisburseResponse {
        code: Code::new("200"),
        message: "success".into(),
        msg_id: Some("BENCH000001".into()),
        mch_id: Some(known::DEMO_MCH_ID.into()),
        trx_date: Some("2025-01-15T10:02:11+08:00".into()),
        trx_amount: Some(Centavos::new(150_000)),
        trx_state: Some(TrxState::Processing),
        order_no: Some("202501150000000017".into()),
        error_code: None,
        error_message: None,
    })
    .unwrap_or_default();
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0usize;
                    while start.elapsed() < for_how_long {
                        if key.sign_b64(&payload).is_ok() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn presign(key: &PrivateKey, n: usize, threads: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<Vec<usize>> = (0..threads)
        .map(|t| (0..n).filter(|i| i % threads == t).collect())
        .collect();
    let mut out: Vec<(usize, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|&i| {
                            let req = InstapayDisburseRequest {
                                msg_id: MsgId::new(format!("BENCH{i:08}")).ok()?,
                                mch_id: MchId::new(known::DEMO_MCH_ID).ok()?,
                                acct_no: format!("9{i:06}77"), // never an acctNo magic suffix
                                acct_name: "Juan".into(),
                                acct_middle_name: String::new(),
                                acct_last_name: "Dela Cruz".into(),
                                receiving_bank: "GCash".into(),
                                trx_amount: Centavos::new(100),
                                currency: Currency::Php,
                                attach: None,
                                notify_url: None,
                            };
                            let bytes = sign::canonical_bytes(
                                &req,
                                &[("service", InstapayDisburseRequest::SERVICE)],
                            )
                            .ok()?;
                            let signed = SignedRequest::sign(key, bytes).ok()?;
                            Some((i, signed.envelope()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, b)| b).collect()
}

/// A minimal HTTP/1.1 keep-alive load generator: pre-built request bytes, responses read by
/// `Content-Length`. Kept this small so it takes as little CPU from the simulator as possible.
async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    next: &AtomicUsize,
    bodies: &[Vec<u8>],
) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let mut ok = 0;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(body) = bodies.get(i) else { break };
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        if stream.write_all(&req).await.is_err() {
            break;
        }
        buf.clear();
        let mut chunk = [0u8; 4096];
        let response = loop {
            let Ok(n) = stream.read(&mut chunk).await else {
                return ok;
            };
            if n == 0 {
                return ok;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                break buf[head_end + 4..head_end + 4 + len].to_vec();
            }
        };
        if response.windows(12).any(|w| w == br#""code":"200""#) {
            ok += 1;
        } else {
            eprintln!("request {i}: {}", String::from_utf8_lossy(&response));
        }
    }
    ok
}

fn main() {
    let n: usize = std::env::var("SIM_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_000);
    let workers = std::thread::available_parallelism().map_or(2, |p| p.get());
    let merchant_key = match PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo") {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cannot load the demo key: {e}");
            return;
        }
    };
    let platform_key = match PrivateKey::from_text(known::SIM_PLATFORM_PRIVATE_PEM, "sim") {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cannot load the simulator key: {e}");
            return;
        }
    };
    eprintln!("pre-signing {n} requests on {workers} threads ...");
    let bodies = Arc::new(presign(&merchant_key, n, workers));

    let sign_1 = signing_rate(&platform_key, 1, Duration::from_secs(2));
    let sign_all = signing_rate(&platform_key, workers, Duration::from_secs(2));

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    let (rps, ok, elapsed) = runtime.block_on(async {
        let config = SimConfig {
            rate_limit_per_sec: 0.0,
            ..SimConfig::default()
        };
        let Ok(handle) = Simulator::start(config).await else {
            eprintln!("cannot start the simulator");
            return (0.0, 0, Duration::ZERO);
        };
        let url = format!("{}{}", handle.base_url(), PATH_DISBURSE);
        let addr = handle.addr();
        let path = url
            .strip_prefix(&format!("http://{addr}"))
            .unwrap_or(&url)
            .to_string();
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (path, next, bodies) = (path.clone(), Arc::clone(&next), Arc::clone(&bodies));
            tasks.spawn(async move { load(addr, &path, &next, &bodies).await });
        }
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            ok += r.unwrap_or(0);
        }
        let elapsed = start.elapsed();
        handle.shutdown().await;
        (n as f64 / elapsed.as_secs_f64(), ok, elapsed)
    });

    println!("sim_throughput: {n} signed 5.2 payouts, {CONCURRENCY} concurrent keep-alive connections, {workers} runtime workers, no faults");
    println!(
        "  accepted (code 200):        {ok}/{n} in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!("  simulator:                  {rps:.0} requests/s");
    println!("  signing (aws-lc-rs), 1 thread:   {sign_1:.0} signatures/s");
    println!("  signing (aws-lc-rs), {workers} threads:  {sign_all:.0} signatures/s  (cost floor of the simulator)");
    if ok != n {
        // Rejected or failed requests are cheaper than accepted ones: no rate is honest then.
        eprintln!("sim_throughput: FAILED: only {ok} of {n} requests were accepted; the rate above does not count");
        std::process::exit(1);
    }
    if sign_all > 0.0 {
        println!(
            "  simulator / signing bound:  {:.0}%  (target >= 80%)",
            100.0 * rps / sign_all
        );
    }
}
