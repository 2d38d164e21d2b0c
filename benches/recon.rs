//! Reconciliation throughput and memory (issue 5 acceptance 4). Prints figures; never fails on
//! a slow machine, but fails loudly (exit 1, no rate printed) when a run exits non-zero or a
//! row of its report is not MATCHED: a rate is only printed for a run that did the work.
//!
//! Runs the real binary (release) against an in-process simulator with no latency and no rate
//! limit, for 10,000 rows and then 1,000,000 rows (the default; `RECON_BENCH_ROWS=10000,200000`
//! picks other sizes), and prints rows per second and the runner's peak RSS (VmHWM of the
//! child process), then the RSS ratio of the largest run to the smallest.
//!
//! `cargo bench --bench recon` (the 1,000,000-row run takes several minutes on 2 cores).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use starpay_batch::server::sim::{FixtureKind, OrderFixture, SimConfig, Simulator};

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn write_inputs(dir: &Path, n: usize) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    let input = dir.join(format!("recon-{n}.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
    writeln!(f, "reference,ref_no,expected_amount,expected_state")?;
    for i in 0..n {
        let amount = 1000 + (i % 100_000) as i64;
        writeln!(
            f,
            "R{i},72{i:014},{}.{:02},SUCCESS",
            amount / 100,
            amount % 100
        )?;
    }
    f.flush()?;
    Ok(input)
}

fn fixtures(n: usize) -> Vec<OrderFixture> {
    (0..n)
        .map(|i| OrderFixture {
            kind: FixtureKind::StaticQrPayment,
            mch_id: "101510000001".into(),
            msg_id: format!("B{i:012}"),
            ref_no: Some(format!("72{i:014}")),
            acct_no: None,
            device_info: Some("BENCH".into()),
            trx_amount: 1000 + (i % 100_000) as i64,
            state: "SUCCESS".into(),
            error_code: None,
            age_secs: 600,
            fail_queries: false,
        })
        .collect()
}

/// Runs `n` rows; `Err` says why the run does not count.
async fn one(n: usize) -> Result<(f64, u64, f64), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = write_inputs(dir.path(), n).map_err(|e| format!("input: {e}"))?;
    let config = SimConfig {
        rate_limit_per_sec: 0.0,
        fixtures: fixtures(n),
        ..SimConfig::default()
    };
    let sim = Simulator::start(config)
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let keys = root.join("samples/keys");
    let job = dir.path().join(format!("bench{n}.toml"));
    let text = format!(
        "kind = \"repayment-recon\"\ninput = \"{}\"\ndatabase = \"{}\"\nreports_dir = \"{}\"\n\n[starpay]\nendpoint = \"{}\"\nmch_id = \"101510000001\"\nprivate_key = \"{}\"\nplatform_public_key = \"{}\"\n\n[limits]\nrequests_per_second = 1000000\nburst = 1000000\nconcurrency = 32\nrequest_timeout_secs = 30\n\n[resolve]\ndeadline_secs = 36000\n",
        input.display(),
        dir.path().join("bench.db").display(),
        dir.path().join("reports").display(),
        sim.base_url(),
        keys.join("TEST-ONLY-demo-merchant-private.pem").display(),
        keys.join("TEST-ONLY-sim-platform-public.pem").display(),
    );
    std::fs::write(&job, text).map_err(|e| format!("job file: {e}"))?;
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_starpay-batch"))
        .args(["run", &job.display().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the runner: {e}"))?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(format!("waiting for the runner: {e}")),
        }
    };
    let secs = start.elapsed().as_secs_f64();
    sim.shutdown().await;
    if !status.success() {
        return Err(format!("the run exited with {status}"));
    }
    // Every row must be MATCHED, or the rate is not a reconciliation rate.
    let report = dir.path().join(format!("reports/bench{n}-1.csv"));
    let mut reader =
        csv::Reader::from_path(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let category = reader
        .headers()
        .map_err(|e| format!("{}: {e}", report.display()))?
        .iter()
        .position(|h| h == "category")
        .ok_or_else(|| format!("{}: no category column", report.display()))?;
    let (mut rows, mut matched) = (0usize, 0usize);
    for rec in reader.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", report.display()))?;
        rows += 1;
        if rec.get(category) == Some("MATCHED") {
            matched += 1;
        }
    }
    if rows != n || matched != n {
        return Err(format!(
            "{matched} of {rows} report rows MATCHED, {n} expected ({})",
            report.display()
        ));
    }
    Ok((n as f64 / secs, peak, secs))
}

fn main() {
    let sizes: Vec<usize> = std::env::var("RECON_BENCH_ROWS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 1_000_000]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "repayment-recon against the in-process simulator, no latency, no rate limit, 32 in flight"
    );
    println!(
        "{:>10} {:>12} {:>10} {:>14}",
        "rows", "rows/s", "seconds", "peak RSS MiB"
    );
    let mut results = Vec::new();
    for n in sizes {
        match runtime.block_on(one(n)) {
            Ok((rate, peak, secs)) => {
                println!(
                    "{n:>10} {rate:>12.0} {secs:>10.1} {:>14.1}",
                    peak as f64 / 1024.0
                );
                results.push((n, peak));
            }
            Err(why) => {
                eprintln!("{n} rows: FAILED: {why}");
                std::process::exit(1);
            }
        }
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        if first.1 > 0 && results.len() > 1 {
            println!(
                "peak RSS {} rows / {} rows: {:.2}x (target <= 1.5x)",
                last.0,
                first.0,
                last.1 as f64 / first.1 as f64
            );
        }
    }
}
