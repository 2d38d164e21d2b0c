//! Notification receiver throughput, CPU and memory (issue 12 acceptance 4). Prints figures;
//! never fails on a slow machine, but exits 1 with no rate when the burst did not do the work
//! (an answer other than success, or a store that does not hold each notification once).
//!
//! The real `serve` (release) runs as a child process on a fresh database; this process signs
//! `n` static-QR notifications (6.5) with the simulator's TEST-ONLY platform key beforehand (on
//! all cores, untimed), adds every tenth again as a deliberate duplicate, and POSTs them all
//! from 50 concurrent clients (one keep-alive connection each). Each POST is verified (RSA
//! over the raw bytes), stored with its event in the store's group commit (`synchronous=FULL`)
//! and answered. The simulator is only there to give the job file an endpoint.
//!
//! Printed per size: notifications (POSTs) per second; `serve`'s CPU per POST (user, system;
//! from `/proc/PID/stat` around the burst); its RSS before the burst and its peak (`VmHWM`)
//! after it.
//!
//! `cargo bench --bench receiver` (10,000 notifications); `RECEIVER_BENCH_SIZES=10000,50000
//! cargo bench --bench receiver` to see the peak RSS stay flat as the burst grows.

mod bench_common;
#[path = "../tests/payout_common/mod.rs"]
mod payout_common;
#[path = "../tests/receiver_common/mod.rs"]
mod receiver_common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

const CLIENTS: usize = 50;

struct Figures {
    posts: usize,
    secs: f64,
    user: f64,
    sys: f64,
    rss_before_kib: u64,
    peak_kib: u64,
}

/// Counts of the stored notifications per outcome must be exactly `n` repayments and `d`
/// duplicates, and nothing else.
fn check_store(db: &Path, n: usize, d: usize) -> Result<(), String> {
    let c = rusqlite::Connection::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
    let count = |outcome: &str| -> Result<usize, String> {
        c.query_row(
            "SELECT COUNT(*) FROM notifications WHERE outcome = ?1",
            [outcome],
            |r| r.get::<_, i64>(0),
        )
        .map(|v| v as usize)
        .map_err(|e| e.to_string())
    };
    let total: i64 = c
        .query_row("SELECT COUNT(*) FROM notifications", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let (rep, dup) = (count("repayment")?, count("duplicate")?);
    if rep != n || dup != d || total as usize != n + d {
        return Err(format!(
            "the store holds {rep} repayments and {dup} duplicates of {total} notifications; expected {n} and {d}"
        ));
    }
    Ok(())
}

async fn one(n: usize, cores: usize) -> Result<Figures, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let sim = payout_common::start_sim(payout_common::fast_sim_config(1)).await;
    let input = dir.path().join("none.csv");
    std::fs::write(&input, payout_common::CSV_HEADER).map_err(|e| format!("input: {e}"))?;
    let job = payout_common::write_job(
        dir.path(),
        "bench",
        &sim,
        &input,
        "concurrency = 8",
        payout_common::FAST_RESOLVE,
    );
    let notifications: Vec<_> = (0..n)
        .map(receiver_common::static_qr_notification)
        .collect();
    let mut bodies = receiver_common::sign_all(&notifications, cores);
    let again: Vec<Vec<u8>> = bodies.iter().step_by(10).cloned().collect();
    let d = again.len();
    bodies.extend(again);
    let posts = bodies.len();
    let port = receiver_common::free_port();
    let mut child = receiver_common::spawn_serve(&job, port, Stdio::inherit())?;
    let pid = child.id();
    let rss_before_kib = bench_common::status_kib(pid, "VmRSS:").unwrap_or(0);
    let (u0, s0) = bench_common::process_cpu_secs(pid).ok_or("cannot read serve's CPU")?;
    let start = Instant::now();
    let got = receiver_common::burst(
        &format!("http://127.0.0.1:{port}/notify"),
        Arc::new(bodies),
        CLIENTS,
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    let (u1, s1) = bench_common::process_cpu_secs(pid).ok_or("cannot read serve's CPU")?;
    let peak_kib = bench_common::peak_rss_kib(pid).unwrap_or(0);
    payout_common::sigint(&child);
    let (status, _) = bench_common::wait_with_peak(&mut child, || None).await?;
    sim.shutdown().await;
    if !status.success() {
        return Err(format!("serve exited with {status}"));
    }
    if got.failures > 0 || got.ok != posts {
        return Err(format!(
            "{} of {posts} POSTs answered success; first failures: {:?}",
            got.ok, got.failed
        ));
    }
    check_store(&dir.path().join("bench.db"), n, d)?;
    Ok(Figures {
        posts,
        secs,
        user: u1 - u0,
        sys: s1 - s0,
        rss_before_kib,
        peak_kib,
    })
}

fn main() {
    let sizes = bench_common::sizes_from_env("RECEIVER_BENCH_SIZES", &[10_000]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = bench_common::runtime();
    println!(
        "receiver: the release `serve` on a fresh database; signed 6.5 notifications (every \
         tenth sent twice) from {CLIENTS} concurrent keep-alive clients; {cores} cores shared \
         with the clients"
    );
    for n in sizes {
        let f = match runtime.block_on(one(n, cores)) {
            Ok(f) => f,
            Err(why) => {
                eprintln!("{n} notifications: FAILED: {why}");
                std::process::exit(1);
            }
        };
        let posts = f.posts as f64;
        println!("--- {n} notifications, {} POSTs", f.posts);
        println!("  wall                   {:.2} s", f.secs);
        println!(
            "  notifications/s        {:.0}  (POSTs answered per second)",
            posts / f.secs
        );
        println!(
            "  serve CPU/notification {:.3} ms  (user {:.3}, sys {:.3})",
            1000.0 * (f.user + f.sys) / posts,
            1000.0 * f.user / posts,
            1000.0 * f.sys / posts
        );
        println!(
            "  serve RSS              {:.1} MiB before the burst, peak (VmHWM) {:.1} MiB",
            f.rss_before_kib as f64 / 1024.0,
            f.peak_kib as f64 / 1024.0
        );
    }
}
