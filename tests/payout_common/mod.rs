//! Helpers for the payout job tests: a real simulator on 127.0.0.1:0 (in this process), job
//! files pointing at it, generated CSVs, and the real binary.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use starpay_batch::server::sim::{SimConfig, SimHandle, Simulator};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A simulator with no rate limit and fast settlement, unless the caller changes it.
pub fn fast_sim_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        settle_delay_ms: 300,
        settle_jitter_ms: 100,
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    }
}

pub async fn start_sim(config: SimConfig) -> SimHandle {
    Simulator::start(config).await.expect("simulator starts")
}

/// Resolve settings for tests: quick polls, short not-found window.
pub const FAST_RESOLVE: &str = r#"
[resolve]
poll_schedule_secs = [1]
poll_interval_secs = 1
not_found_window_secs = 1
not_found_queries = 3
ab_hold_secs = 2
stale_after_secs = 600
deadline_secs = 60
max_resolve_secs = 3600
"#;

/// Writes `dir/<name>.toml` for a payout job against `sim`; `limits` is the `[limits]` body.
pub fn write_job(
    dir: &Path,
    name: &str,
    sim: &SimHandle,
    input: &Path,
    limits: &str,
    resolve: &str,
) -> PathBuf {
    write_job_kind(dir, name, "payout", sim, input, limits, resolve)
}

/// Same, for any job kind.
pub fn write_job_kind(
    dir: &Path,
    name: &str,
    kind: &str,
    sim: &SimHandle,
    input: &Path,
    limits: &str,
    resolve: &str,
) -> PathBuf {
    let keys = root().join("samples/keys");
    let text = format!(
        r#"kind = "{kind}"
input = "{input}"
database = "{db}"
reports_dir = "{reports}"

[starpay]
endpoint = "{url}"
mch_id = "101510000001"
private_key = "{private}"
platform_public_key = "{platform}"

[limits]
{limits}
{resolve}
"#,
        input = input.display(),
        db = dir.join(format!("{name}.db")).display(),
        reports = dir.join("reports").display(),
        url = sim.base_url(),
        private = keys.join("TEST-ONLY-demo-merchant-private.pem").display(),
        platform = keys.join("TEST-ONLY-sim-platform-public.pem").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` valid rows; account numbers are unique per row (so the ledger can be matched to rows)
/// and end in `suffix(i)` (the simulator's scenario table).
pub fn write_csv(path: &Path, n: usize, suffix: impl Fn(usize) -> &'static str) {
    let mut s = String::from("reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n");
    for i in 0..n {
        let acct = format!("{:06}{}", i, suffix(i));
        let amount = format!("{}.{:02}", 100 + i % 900, i % 100);
        s.push_str(&format!(
            "REF-{i:06},instapay,{acct},Juan,Santos,Dela Cruz,GCash,{amount},PHP,row {i}\n"
        ));
    }
    std::fs::write(path, s).unwrap();
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_starpay-batch"));
    c.env_remove("STARPAY_PRIVATE_KEY_FILE")
        .env("RUST_LOG", "warn");
    c
}

pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the binary to completion off the async threads (the simulator shares this runtime).
pub async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || bin().args(&args).stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap()
}

pub async fn spawn(args: Vec<String>) -> Child {
    tokio::task::spawn_blocking(move || {
        bin()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    })
    .await
    .unwrap()
}

/// SIGKILL after `after`.
pub async fn kill_after(mut child: Child, after: Duration) -> Option<i32> {
    tokio::time::sleep(after).await;
    let _ = child.kill();
    tokio::task::spawn_blocking(move || child.wait().ok().and_then(|s| s.code()))
        .await
        .unwrap()
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The report as a list of maps (header → value).
pub fn read_report(path: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The report state that corresponds to a final ledger state.
pub fn expected_state(ledger_state: &str) -> &'static str {
    match ledger_state {
        "SUCCESS" => "SUCCESS",
        "FAIL" | "CLOSE" | "CANCEL" => "FAILED",
        "REVERSED" => "REVERSED",
        _ => "PENDING",
    }
}
