//! Helpers shared by the benchmarks (`payout`, `recon`, `receiver`, `rate_limit`): the tokio
//! runtime, the signing rate in this process, CPU time of this process and of its reaped children (`/proc/self/stat`) or of
//! a live process (`/proc/PID/stat`), a process's peak RSS (`VmHWM`), and SQLite syncs counted
//! by `strace` when it is installed.
//!
//! CPU accounting: the simulator runs inside the bench process and the runner is its only
//! child, so `cutime`/`cstime` of `/proc/self/stat` (the CPU of reaped children) taken around one
//! run is the runner's CPU alone, and `utime`/`stime` is the simulator's (plus this process's
//! polling, negligible). Resolution: one clock tick (10 ms on Linux).
//!
//! Commits: with `journal_mode=WAL` and `synchronous=FULL`, SQLite syncs the WAL once per
//! committed write transaction, and a checkpoint syncs the WAL and then the database file. So
//! the number of syncs of `<db>-wal` minus the number of syncs of `<db>` is the number of
//! commits. The counting pass runs the runner under `strace -f --seccomp-bpf -y -e
//! trace=fsync,fdatasync` (a separate, untimed pass: tracing slows the process); without strace
//! the figure is printed as not measured.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use starpay_batch::server::sim::{SimConfig, SimHandle, Simulator};
use starpay_batch::starpay::sign::PrivateKey;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ; 100 on every Linux we run on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds of this process (`self_*`) and of its reaped children (`children_*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub self_user: f64,
    pub self_sys: f64,
    pub children_user: f64,
    pub children_sys: f64,
}

/// Fields 14–17 of a `/proc/…/stat` file (utime, stime, cutime, cstime) in seconds.
fn stat_cpu_secs(path: &str) -> Option<[f64; 4]> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at `state` (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Option<f64> {
        f.get(i - 3)?
            .parse::<u64>()
            .ok()
            .map(|t| t as f64 / TICKS_PER_SEC)
    };
    Some([tick(14)?, tick(15)?, tick(16)?, tick(17)?])
}

/// CPU seconds (user, system) of the live process `pid` so far.
pub fn process_cpu_secs(pid: u32) -> Option<(f64, f64)> {
    stat_cpu_secs(&format!("/proc/{pid}/stat")).map(|[u, s, _, _]| (u, s))
}

impl CpuTimes {
    pub fn now() -> Option<CpuTimes> {
        let [self_user, self_sys, children_user, children_sys] = stat_cpu_secs("/proc/self/stat")?;
        Some(CpuTimes {
            self_user,
            self_sys,
            children_user,
            children_sys,
        })
    }

    pub fn since(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            self_user: self.self_user - before.self_user,
            self_sys: self.self_sys - before.self_sys,
            children_user: self.children_user - before.children_user,
            children_sys: self.children_sys - before.children_sys,
        }
    }
}

/// A `kB` line of `/proc/PID/status` (`VmHWM:`, `VmRSS:`, …).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Peak RSS so far (`VmHWM`, KiB).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A multi-thread tokio runtime, or exit 1 saying why.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Polls `child` every 50 ms until it exits; returns its status and its peak RSS (KiB, the
/// largest `VmHWM` seen; `pid_for_rss` names the process whose memory counts).
pub async fn wait_with_peak(
    child: &mut Child,
    pid_for_rss: impl Fn() -> Option<u32>,
) -> Result<(std::process::ExitStatus, u64), String> {
    let mut peak = 0;
    loop {
        if let Some(kib) = pid_for_rss().and_then(peak_rss_kib) {
            peak = peak.max(kib);
        }
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, peak)),
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(format!("waiting for the runner: {e}")),
        }
    }
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_secs() -> Option<f64> {
    stat_cpu_secs("/proc/thread-self/stat").map(|[u, s, _, _]| u + s)
}

/// RSA-2048 signatures of `key` on `threads` threads for `for_how_long`, over a 5.2-sized
/// request (the payload size hardly matters: the private-key operation dominates). Returns
/// signatures per wall second (all threads together) and per CPU second of the signing
/// threads (what one core yields when it is not shared; unaffected by other processes).
pub fn signing_rate(key: &PrivateKey, threads: usize, for_how_long: Duration) -> (f64, f64) {
    let payload: &[u8] = br#"{"acctLastName":"Dela Cruz","acctMiddleName":"Santos","acctName":"Juan","acctNo":"900000011234","currency":"PHP","mchId":"101510000001","msgId":"P0123456789abcdefR1L1A1","receivingBank":"GCash","service":"pay.starpay.instapay.disburse","trxAmount":"1234"}"#;
    let start = Instant::now();
    let (total, cpu): (usize, f64) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let cpu0 = thread_cpu_secs().unwrap_or(0.0);
                    let mut n = 0usize;
                    while start.elapsed() < for_how_long {
                        if key.sign_b64(payload).is_ok() {
                            n += 1;
                        }
                    }
                    (n, thread_cpu_secs().unwrap_or(0.0) - cpu0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0.0)))
            .fold((0, 0.0), |(n, c), (m, d)| (n + m, c + d))
    });
    let per_cpu_sec = if cpu > 0.0 { total as f64 / cpu } else { 0.0 };
    (total as f64 / start.elapsed().as_secs_f64(), per_cpu_sec)
}

/// Syncs of the database files by one traced run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syncs {
    pub wal: u64,
    pub db: u64,
    pub other: u64,
}

impl Syncs {
    /// Commits: WAL syncs not explained by a checkpoint (each checkpoint syncs the WAL once
    /// before it copies pages and the database file once after).
    pub fn commits(&self) -> u64 {
        self.wal.saturating_sub(self.db)
    }
}

pub fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `strace` arguments that log every fsync/fdatasync of the traced tree, with paths, to `log`.
pub fn strace_args(log: &Path) -> Vec<String> {
    [
        "-f",
        "--seccomp-bpf",
        "-y",
        "-qq",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "signal=none",
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(log.display().to_string()))
    .collect()
}

/// Counts the syncs of `db` and `db-wal` in an strace log written with `strace_args`.
pub fn count_syncs(log: &Path, db: &Path) -> Result<Syncs, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let wal_name = format!("<{}-wal>", db.display());
    let db_name = format!("<{}>", db.display());
    let mut s = Syncs::default();
    for line in text.lines() {
        if !(line.contains("fsync(") || line.contains("fdatasync(")) {
            continue;
        }
        if line.contains(&wal_name) {
            s.wal += 1;
        } else if line.contains(&db_name) {
            s.db += 1;
        } else {
            s.other += 1;
        }
    }
    Ok(s)
}

/// The first `n` of `sizes` parsed from `var` (`"10000,100000"`), or `default`.
pub fn sizes_from_env(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// Signing rates: per wall second on 1 thread and on all cores, and per CPU second.
#[derive(Debug, Clone, Copy)]
pub struct SignRates {
    pub one: f64,
    pub all: f64,
    pub per_cpu_sec: f64,
}

impl SignRates {
    /// Measured with the simulator idle (before or after a run).
    pub fn measure(key: &PrivateKey, cores: usize) -> SignRates {
        let (one, cpu_1) = signing_rate(key, 1, Duration::from_secs(2));
        let (all, cpu_all) = signing_rate(key, cores, Duration::from_secs(2));
        SignRates {
            one,
            all,
            per_cpu_sec: cpu_1.max(cpu_all),
        }
    }

    /// The faster of two measurements: on a shared machine a slow one means the signing was
    /// starved, and a bound built on it would flatter the job.
    pub fn best(self, other: SignRates) -> SignRates {
        SignRates {
            one: self.one.max(other.one),
            all: self.all.max(other.all),
            per_cpu_sec: self.per_cpu_sec.max(other.per_cpu_sec),
        }
    }

    /// Signatures per second on all cores for the bound: the faster of the measured wall rate
    /// and `cores` × the rate per CPU second (what the cores yield when nothing else runs;
    /// on a shared machine the wall rate understates it and would flatter the job).
    pub fn bound_rate(&self, cores: usize) -> f64 {
        self.all.max(cores as f64 * self.per_cpu_sec)
    }
}

/// A payout file of `rows` InstaPay rows that all succeed on the simulator (account numbers
/// ending 4321: no scenario of its suffix table), references `{prefix}-000000`…, amounts
/// 1.00–9.99 PHP.
pub fn write_payout_csv(path: &Path, prefix: &str, rows: usize) -> Result<(), String> {
    let mut csv = String::from(
        "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n",
    );
    for i in 0..rows {
        csv.push_str(&format!(
            "{prefix}-{i:06},instapay,{i:06}4321,Juan,Santos,Dela Cruz,GCash,{}.{:02},PHP,row {i}\n",
            100 + i % 900,
            i % 100
        ));
    }
    std::fs::write(path, csv).map_err(|e| format!("input {}: {e}", path.display()))
}

/// The in-process simulator with instant settlement and no rate limit of its own.
pub async fn instant_sim(seed: u64) -> Result<SimHandle, String> {
    Simulator::start(SimConfig {
        seed,
        settle_delay_ms: 0,
        settle_jitter_ms: 0,
        rate_limit_per_sec: 0.0,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))
}
