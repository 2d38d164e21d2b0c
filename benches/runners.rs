//! Several runners on one payout run over PostgreSQL (issue 14 part B): rows/s with 1, 2 and 3
//! runner processes on one job and file against the simulator, with a shared rate limit set
//! (`requests_per_second = 40`, burst 10: the runners together may not pass it) and without
//! one (`requests_per_second = 10000`). Every row must end SUCCESS (exit 0 from every runner);
//! prints rows/s over the wall time (first runner started to last exited, start-up included)
//! and over the simulator's payout span (first to last payout request), and the busiest
//! one-second window. On a 2-core machine the runners, the simulator and PostgreSQL share the
//! CPU: the unlimited case is capped by the machine, not the design.
//!
//! `STARPAY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench runners`
//! (`RUNNERS_BENCH_ROWS=N` rows per case, default 300).

mod bench_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use starpay_batch::store::pg::testing::TestDb;

struct Figures {
    wall_rows_per_sec: f64,
    span_rows_per_sec: f64,
    busiest: usize,
}

async fn one(rows: usize, runners: usize, rate: u64, burst: u64) -> Result<Figures, String> {
    let db = TestDb::new(&format!("bench_runners_{runners}_{rate}"))
        .ok_or("no PostgreSQL server (set STARPAY_TEST_POSTGRES_URL)")?;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = dir.path().join("runners.csv");
    bench_common::write_payout_csv(&input, "RUN", rows)?;
    let sim = bench_common::instant_sim(31).await?;
    let keys = root.join("samples/keys");
    let job = dir.path().join("runners.toml");
    let text = format!(
        "kind = \"payout\"\ninput = \"{}\"\ndatabase = \"{}\"\nreports_dir = \"{}\"\n\n[starpay]\nendpoint = \"{}\"\nmch_id = \"101510000001\"\nprivate_key = \"{}\"\nplatform_public_key = \"{}\"\n\n[limits]\nrequests_per_second = {rate}\nburst = {burst}\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2\nlease_secs = 5\n\n[resolve]\npoll_schedule_secs = [0]\npoll_interval_secs = 1\nnot_found_window_secs = 1\nnot_found_queries = 3\ndeadline_secs = 600\n",
        input.display(),
        db.url(),
        dir.path().join("reports").display(),
        sim.base_url(),
        keys.join("TEST-ONLY-demo-merchant-private.pem").display(),
        keys.join("TEST-ONLY-sim-platform-public.pem").display(),
    );
    std::fs::write(&job, text).map_err(|e| format!("job file: {e}"))?;
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..runners {
        children.push(
            Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
                .args(["run", &job.display().to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a runner: {e}"))?,
        );
    }
    let statuses = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|mut c| c.wait().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| format!("join: {e}"))??;
    let wall = start.elapsed().as_secs_f64();
    let f = sim.rate_figures();
    sim.shutdown().await;
    if let Some(s) = statuses.iter().find(|s| !s.success()) {
        return Err(format!(
            "a runner exited with {s} (every row should be SUCCESS)"
        ));
    }
    Ok(Figures {
        wall_rows_per_sec: rows as f64 / wall,
        span_rows_per_sec: rows as f64 / (f.payout_span_ms.max(1) as f64 / 1000.0),
        busiest: f.busiest_second,
    })
}

fn main() {
    let rows: usize = std::env::var("RUNNERS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = bench_common::runtime();
    println!("runners: {rows} payout rows per case, PostgreSQL store, concurrency 8 per runner");
    for (rate, burst, what) in [
        (40u64, 10u64, "rate limit 40 req/s, burst 10 (shared)"),
        (
            10_000,
            100,
            "no effective limit (10,000 req/s; CPU-bound on this machine)",
        ),
    ] {
        println!("  {what}:");
        for runners in 1..=3 {
            match runtime.block_on(one(rows, runners, rate, burst)) {
                Ok(f) => println!(
                    "    {runners} runner(s): {:.1} rows/s wall (start-up included), {:.1} rows/s over the payout span; busiest second {} (limit {})",
                    f.wall_rows_per_sec,
                    f.span_rows_per_sec,
                    f.busiest,
                    rate + burst
                ),
                Err(why) => {
                    eprintln!("runners: FAILED: {why}");
                    std::process::exit(1);
                }
            }
        }
    }
}
