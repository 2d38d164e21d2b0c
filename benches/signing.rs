//! Signing and verification throughput (issue 2 acceptance 5). Prints figures; never fails on
//! a slow machine. Run: `cargo bench --bench signing`.
//!
//! Compares the hot path (aws-lc-rs) with the reference implementation (`rsa` crate) in the
//! same process, on one core and on all cores.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use starpay_batch::starpay::sign::{known, PrivateKey};

const B_TBS: &[u8] = br#"{"acctLastName":"Recipient last name","acctMiddleName":"Recipient first name","acctName":"Recipient account name xx","acctNo":"Recipient acctNo","attach":"Disbursement","currency":"PHP","mchId":"105510000001","msgId":"161415460871","receivingBank":"Sun Savings Bank, Inc.","service":"pay.starpay.instapay.disburse","trxAmount":"1000"}"#;

type Op = Arc<dyn Fn() + Send + Sync>;

/// Runs `op` on `threads` threads for about `secs` and returns operations per second.
fn rate(threads: usize, secs: f64, op: Op) -> f64 {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = Arc::clone(&op);
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut n = 0u64;
                while t.elapsed() < deadline {
                    op();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let key = match PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo key") {
        Ok(k) => Arc::new(k),
        Err(e) => {
            eprintln!("cannot load the demo key: {e}");
            return;
        }
    };
    let sig = key.sign_b64(B_TBS).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    println!(
        "RSA-2048 PKCS#1 v1.5 / SHA-256 over a {}-byte request; {cores} cores; {secs} s per figure",
        B_TBS.len()
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "operation",
        "1 core /s",
        format!("{cores} cores /s")
    );

    let cases: Vec<(&str, Op)> = vec![
        ("sign   aws-lc-rs (hot path)", {
            let k = Arc::clone(&key);
            Arc::new(move || {
                black_box(k.sign_b64(black_box(B_TBS)).ok());
            })
        }),
        ("sign   rsa crate (reference)", {
            let k = Arc::clone(&key);
            Arc::new(move || {
                black_box(k.sign_b64_reference(black_box(B_TBS)).ok());
            })
        }),
        ("verify aws-lc-rs (hot path)", {
            let k = Arc::clone(&key);
            let s = sig.clone();
            Arc::new(move || {
                black_box(k.public_key().verify_b64(black_box(B_TBS), &s).is_ok());
            })
        }),
        ("verify rsa crate (reference)", {
            let k = Arc::clone(&key);
            let s = sig.clone();
            Arc::new(move || {
                black_box(
                    k.public_key()
                        .verify_b64_reference(black_box(B_TBS), &s)
                        .is_ok(),
                );
            })
        }),
    ];
    let mut one_core = Vec::new();
    for (name, op) in cases {
        let single = rate(1, secs, Arc::clone(&op));
        let all = rate(cores, secs, op);
        one_core.push(single);
        println!("{name:<34} {single:>12.0} {all:>12.0}");
    }
    if one_core[1] > 0.0 && one_core[3] > 0.0 {
        println!(
            "ratio aws-lc-rs / rsa crate: sign {:.2}x, verify {:.2}x (one core)",
            one_core[0] / one_core[1],
            one_core[2] / one_core[3]
        );
    }
}
