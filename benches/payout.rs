//! Payout throughput next to the RSA-signing bound (issue 11; issue 4's missing benchmark).
//! Prints figures; never fails on a slow machine, but exits 1 with no rate when the run did
//! not do the work (non-zero exit, or a report row that is not SUCCESS).
//!
//! The real binary (release) runs as a child process against a simulator inside this process
//! with no latency, no settle delay, no faults and no rate limit; the job allows 1,000,000
//! requests/s, 32 in flight, and queries at once after a send (`poll_schedule_secs = [0]`).
//! Every row is a plain InstaPay payout that the simulator settles SUCCESS.
//!
//! Printed per size: rows/s; the signing rate measured in this process on all cores; the
//! signing bound (that rate ÷ signatures per row, runner and simulator together: the runner
//! signs every request, the simulator every answer, so 2 × requests per row, counted from the
//! simulator's request log); the ratio; the runner's CPU per row (user, system; reaped-child
//! times, so the runner alone) beside the cost of its own signatures; the simulator's CPU per
//! row; requests per row; SQLite commits per row (a second, untimed pass under `strace`, see
//! `bench_common`); the runner's peak RSS (VmHWM).
//!
//! `cargo bench --bench payout` (10,000 rows, about a minute on 2 cores);
//! `PAYOUT_BENCH_ROWS=10000,100000 cargo bench --bench payout` for the two sizes
//! (several minutes); `PAYOUT_BENCH_COMMITS=0` skips the strace pass;
//! `PAYOUT_BENCH_COMMIT_ROWS=N` sets its size (default: the smaller of the size and 10,000).

mod bench_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use bench_common::{CpuTimes, SignRates, Syncs};
use starpay_batch::server::sim::{SimConfig, SimHandle, Simulator};
use starpay_batch::starpay::sign::{known, PrivateKey};

const CONCURRENCY: usize = 32;

fn write_input(dir: &Path, n: usize) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let input = dir.join(format!("payouts-{n}.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
    writeln!(
        f,
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note"
    )?;
    for i in 0..n {
        // Account numbers end in 1234: no scenario of the simulator's suffix table. Amounts
        // 1.00–9.99 PHP keep 100,000 rows far inside the default balance.
        let cents = 100 + i % 900;
        writeln!(
            f,
            "BENCH-{i:07},instapay,9{i:07}1234,Juan,Santos,Dela Cruz,GCash,{}.{:02},PHP,row {i}",
            cents / 100,
            cents % 100
        )?;
    }
    f.flush()?;
    Ok(input)
}

fn sim_config() -> SimConfig {
    SimConfig {
        settle_delay_ms: 0,
        settle_jitter_ms: 0,
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    }
}

fn write_job(dir: &Path, name: &str, input: &Path, sim: &SimHandle) -> Result<PathBuf, String> {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/keys");
    let text = format!(
        "kind = \"payout\"\ninput = \"{}\"\ndatabase = \"{}\"\nreports_dir = \"{}\"\n\n\
         [starpay]\nendpoint = \"{}\"\nmch_id = \"101510000001\"\nprivate_key = \"{}\"\n\
         platform_public_key = \"{}\"\n\n\
         [limits]\nrequests_per_second = 1000000\nburst = 1000000\nconcurrency = {CONCURRENCY}\n\
         request_timeout_secs = 30\n\n\
         [resolve]\npoll_schedule_secs = [0]\npoll_interval_secs = 1\ndeadline_secs = 36000\n",
        input.display(),
        dir.join(format!("{name}.db")).display(),
        dir.join("reports").display(),
        sim.base_url(),
        keys.join("TEST-ONLY-demo-merchant-private.pem").display(),
        keys.join("TEST-ONLY-sim-platform-public.pem").display(),
    );
    let job = dir.join(format!("{name}.toml"));
    std::fs::write(&job, text).map_err(|e| format!("job file: {e}"))?;
    Ok(job)
}

/// Every one of `n` report rows must be SUCCESS, or no rate counts.
fn check_report(path: &Path, n: usize) -> Result<(), String> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let state = reader
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .iter()
        .position(|h| h == "state")
        .ok_or_else(|| format!("{}: no state column", path.display()))?;
    let (mut rows, mut success) = (0usize, 0usize);
    for rec in reader.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        rows += 1;
        if rec.get(state) == Some("SUCCESS") {
            success += 1;
        }
    }
    if rows != n || success != n {
        return Err(format!(
            "{success} of {rows} report rows SUCCESS, {n} expected ({})",
            path.display()
        ));
    }
    Ok(())
}

struct Timed {
    secs: f64,
    cpu: CpuTimes,
    peak_kib: u64,
    sends: usize,
    queries: usize,
    other: usize,
}

/// One timed run of `n` rows.
async fn timed(n: usize) -> Result<Timed, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let input = write_input(dir.path(), n).map_err(|e| format!("input: {e}"))?;
    let sim = Simulator::start(sim_config())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let name = format!("bench{n}");
    let job = write_job(dir.path(), &name, &input, &sim)?;
    let before = CpuTimes::now().ok_or("cannot read /proc/self/stat")?;
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
        .args(["run", &job.display().to_string()])
        .env_remove("STARPAY_PRIVATE_KEY_FILE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the runner: {e}"))?;
    let pid = child.id();
    let (status, peak_kib) = bench_common::wait_with_peak(&mut child, || Some(pid)).await?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = CpuTimes::now()
        .ok_or("cannot read /proc/self/stat")?
        .since(before);
    let log = sim.requests();
    let seen = sim.requests_seen() as usize;
    sim.shutdown().await;
    if !status.success() {
        return Err(format!("the run exited with {status}"));
    }
    check_report(&dir.path().join(format!("reports/{name}-1.csv")), n)?;
    let sends = log
        .iter()
        .filter(|r| r.path.ends_with("/v1/disburse"))
        .count();
    let queries = log
        .iter()
        .filter(|r| r.path.ends_with("/v1/disburse/query"))
        .count();
    // The simulator's log keeps the last MAX_REQUEST_RECORDS requests (100,000 rows make
    // 200,003): what it dropped is counted with the other requests, from the total it saw.
    let other = seen.max(log.len()) - sends - queries;
    Ok(Timed {
        secs,
        cpu,
        peak_kib,
        sends,
        queries,
        other,
    })
}

/// One untimed run of `n` rows under strace, counting the database's syncs.
async fn counted(n: usize) -> Result<Syncs, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let input = write_input(dir.path(), n).map_err(|e| format!("input: {e}"))?;
    let sim = Simulator::start(sim_config())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let name = format!("count{n}");
    let job = write_job(dir.path(), &name, &input, &sim)?;
    let log = dir.path().join("strace.log");
    let mut child = Command::new("strace")
        .args(bench_common::strace_args(&log))
        .arg(env!("CARGO_BIN_EXE_starpay-batch"))
        .args(["run", &job.display().to_string()])
        .env_remove("STARPAY_PRIVATE_KEY_FILE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start strace: {e}"))?;
    let (status, _) = bench_common::wait_with_peak(&mut child, || None).await?;
    sim.shutdown().await;
    if !status.success() {
        return Err(format!("the traced run exited with {status}"));
    }
    check_report(&dir.path().join(format!("reports/{name}-1.csv")), n)?;
    bench_common::count_syncs(&log, &dir.path().join(format!("{name}.db")))
}

fn main() {
    let sizes = bench_common::sizes_from_env("PAYOUT_BENCH_ROWS", &[10_000]);
    let count_commits = std::env::var("PAYOUT_BENCH_COMMITS").map_or(true, |v| v != "0");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let key = match PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo key") {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cannot load the demo key: {e}");
            std::process::exit(1);
        }
    };
    let runtime = bench_common::runtime();
    // Measured before any run, with the simulator idle: the rate the bound is built on.
    let first = SignRates::measure(&key, cores);
    println!(
        "payout: the release binary against the in-process simulator; no latency, no settle \
         delay, no faults, no rate limit; {CONCURRENCY} in flight; {cores} cores"
    );
    println!(
        "signing (aws-lc-rs, RSA-2048, this process, before the runs): {:.0}/s on 1 thread, \
         {:.0}/s on {cores} threads; {:.0} per CPU second",
        first.one, first.all, first.per_cpu_sec
    );
    let mut peaks = Vec::new();
    for &n in &sizes {
        let t = match runtime.block_on(timed(n)) {
            Ok(t) => t,
            Err(why) => {
                eprintln!("{n} rows: FAILED: {why}");
                std::process::exit(1);
            }
        };
        // Measured again after the run; the bound uses the faster of the two (see `best`).
        let after = SignRates::measure(&key, cores);
        let best = first.best(after);
        let sign_all = best.bound_rate(cores);
        // The runner's own signing cost: CPU time per signature, not wall time.
        let sign_1 = best.per_cpu_sec;
        let rows = n as f64;
        let rate = rows / t.secs;
        let requests = (t.sends + t.queries + t.other) as f64;
        let sigs_per_row = 2.0 * requests / rows;
        let bound = sign_all / sigs_per_row;
        // The runner signs one of the two signatures of every request.
        let own_sign_ms = 1000.0 * (requests / rows) / sign_1;
        let runner_ms = 1000.0 * (t.cpu.children_user + t.cpu.children_sys) / rows;
        println!("--- {n} rows");
        println!(
            "  signing after the run        {:.0}/s on 1 thread, {:.0}/s on {cores} threads; \
             {:.0} per CPU second",
            after.one, after.all, after.per_cpu_sec
        );
        println!(
            "  signing rate for the bound   {sign_all:.0}/s  (faster of: measured on {cores} threads, \
             {cores} x per CPU second)"
        );
        println!("  wall                         {:.2} s", t.secs);
        println!("  rows/s                       {rate:.0}");
        println!(
            "  requests/row                 {:.3}  (sends {}, queries {}, other {})",
            requests / rows,
            t.sends,
            t.queries,
            t.other
        );
        println!(
            "  signatures/row               {sigs_per_row:.3}  (runner signs each request, simulator each answer)"
        );
        println!("  signing bound                {bound:.0} rows/s  ({sign_all:.0} sig/s / {sigs_per_row:.3})");
        println!(
            "  rows/s / signing bound       {:.2}  (issue 11 target >= 0.60)",
            rate / bound
        );
        println!(
            "  runner CPU/row               {runner_ms:.3} ms  (user {:.3}, sys {:.3})",
            1000.0 * t.cpu.children_user / rows,
            1000.0 * t.cpu.children_sys / rows
        );
        println!(
            "  runner's own signatures/row  {own_sign_ms:.3} ms  -> runner CPU / own signing {:.1}x (target <= 2x)",
            runner_ms / own_sign_ms
        );
        println!(
            "  simulator CPU/row            {:.3} ms  (user {:.3}, sys {:.3}; this process)",
            1000.0 * (t.cpu.self_user + t.cpu.self_sys) / rows,
            1000.0 * t.cpu.self_user / rows,
            1000.0 * t.cpu.self_sys / rows
        );
        println!(
            "  CPU used / available         {:.0}%  (runner + simulator over {cores} cores x wall)",
            100.0 * (t.cpu.children_user + t.cpu.children_sys + t.cpu.self_user + t.cpu.self_sys)
                / (cores as f64 * t.secs)
        );
        let sim_ms = 1000.0 * (t.cpu.self_user + t.cpu.self_sys) / rows;
        println!(
            "  CPU-limited rate             {:.0} rows/s  ({cores} cores / (runner + simulator CPU per row)); \
             the rest of the wall time is waiting (fsync, hand-offs)",
            cores as f64 * 1000.0 / (runner_ms + sim_ms)
        );
        println!(
            "  runner peak RSS              {:.1} MiB",
            t.peak_kib as f64 / 1024.0
        );
        peaks.push((n, t.peak_kib));
    }
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        if peaks.len() > 1 && first.1 > 0 {
            println!(
                "peak RSS {} rows / {} rows: {:.2}x (target <= 1.5x)",
                last.0,
                first.0,
                last.1 as f64 / first.1 as f64
            );
        }
    }
    if !count_commits {
        println!("commits/row: not measured (PAYOUT_BENCH_COMMITS=0)");
        return;
    }
    if !bench_common::strace_available() {
        println!("commits/row: not measured (strace is not installed)");
        return;
    }
    let smallest = sizes.iter().copied().min().unwrap_or(10_000);
    let m = std::env::var("PAYOUT_BENCH_COMMIT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(smallest.min(10_000));
    match runtime.block_on(counted(m)) {
        Ok(s) => println!(
            "commits/row (strace pass, {m} rows): {:.3}  (WAL syncs {}, database syncs {} = checkpoints, other syncs {})",
            s.commits() as f64 / m as f64,
            s.wal,
            s.db,
            s.other
        ),
        Err(why) => {
            eprintln!("commit-counting pass, {m} rows: FAILED: {why}");
            std::process::exit(1);
        }
    }
}
