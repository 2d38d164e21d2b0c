//! Unattended operation (issue 10, phase 1): exit codes, stop signals, clean logs, paths
//! against the job file, the start-up retry, environment overrides, key permissions, the
//! version string and the systemd samples. Real binary, real simulator over HTTP on
//! 127.0.0.1, real SQLite files in temp dirs.

mod payout_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use payout_common::*;
use starpay_batch::server::sim::{SimHandle, Simulator};

const LIMITS: &str = "requests_per_second = 200\nburst = 50\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2\nconnect_retry_secs = 0";
/// Slow enough that a test can act while the run is still sending.
const LIMITS_SLOW: &str = "requests_per_second = 4\nburst = 1\nconcurrency = 2\nrequest_timeout_secs = 10\nconnect_timeout_secs = 2";
const BOUND: Duration = Duration::from_secs(60);

fn keys() -> PathBuf {
    root().join("samples/keys")
}

/// A payout job file at `path` with every value given (paths as written, relative or not).
fn job_file(path: &Path, url: &str, input: &str, db: &str, reports: &str, extra: &str) {
    let text = format!(
        r#"kind = "payout"
input = "{input}"
database = "{db}"
reports_dir = "{reports}"

[starpay]
endpoint = "{url}"
mch_id = "101510000001"
private_key = "{private}"
platform_public_key = "{platform}"
{extra}
[limits]
{LIMITS}
{FAST_RESOLVE}
"#,
        private = keys().join("TEST-ONLY-demo-merchant-private.pem").display(),
        platform = keys().join("TEST-ONLY-sim-platform-public.pem").display(),
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Runs the binary with extra environment variables, off the async threads.
async fn run_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut c = bin();
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(&args).stdin(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {}", child.id());
}

// ------------------------------------------------------------------ exit codes

/// 64 for usage errors (unknown flag, missing argument), in human and JSON mode; 0 for
/// --help (which lists every exit code) and --version (which names the commit).
#[test]
fn usage_errors_exit_64_and_help_and_version_exit_0() {
    let o = bin().args(["run", "x.toml", "--bogus"]).output().unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", show(&o));
    assert!(stderr(&o).contains("--bogus"), "{}", show(&o));
    let o = bin().args(["run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", show(&o));
    let o = bin()
        .args(["status", "x.toml", "--run", "abc"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", show(&o));

    let o = bin().arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "64 ", "75 "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(code)),
            "exit code {code} missing from --help:\n{help}"
        );
    }

    let o = bin().arg("--version").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(
        v.starts_with("starpay-batch 0.1.0 (commit ") && v.contains(", built "),
        "{v}"
    );
}

/// 75 while another process holds the job's lock; nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_by_another_process_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1001)).await;
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let job = write_job(dir.path(), "locked", &sim, &input, LIMITS, FAST_RESOLVE);
    let lock_path = dir.path().join("locked.db.locked.lock");
    let held = std::fs::File::create(&lock_path).unwrap();
    held.try_lock().unwrap();
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    assert!(
        stderr(&out).contains("another starpay-batch process"),
        "{}",
        show(&out)
    );
    assert!(sends(&sim).is_empty());
    drop(held);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// 75 when Starpay stays unreachable through the start-up retries, after at least the
/// configured budget; the error names the URL once and the cause once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starpay_unreachable_after_the_retry_budget_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/finance-payment-service");
    let job = dir.path().join("down.toml");
    job_file(
        &job,
        &url,
        &s(&input),
        &s(&dir.path().join("down.db")),
        &s(&dir.path().join("reports")),
        "",
    );
    std::fs::write(
        &job,
        std::fs::read_to_string(&job)
            .unwrap()
            .replace("connect_retry_secs = 0", "connect_retry_secs = 2"),
    )
    .unwrap();
    let started = Instant::now();
    let out = run(vec!["run".into(), s(&job)]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", show(&out));
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains("unreachable"),
        "{err}"
    );
    assert_eq!(
        last.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "{last}"
    );
    assert_eq!(
        last.to_lowercase().matches("connection refused").count(),
        1,
        "{last}"
    );
    assert!(err.contains("retrying"), "each failed try is logged: {err}");
}

/// A stop signal before the drive (here: during the start-up retries, before anything is sent)
/// ends the command at once with exit 3, not 143 and not after the retry budget; nothing was
/// sent and no run was created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_before_the_drive_exits_3_with_nothing_sent() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/finance-payment-service");
    let job = dir.path().join("early.toml");
    job_file(
        &job,
        &url,
        &s(&input),
        &s(&dir.path().join("early.db")),
        &s(&dir.path().join("reports")),
        "",
    );
    std::fs::write(
        &job,
        std::fs::read_to_string(&job)
            .unwrap()
            .replace("connect_retry_secs = 0", "connect_retry_secs = 60"),
    )
    .unwrap();
    let started = Instant::now();
    let child = spawn_piped(vec!["run".into(), s(&job)]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "TERM");
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped at once, not after the retry budget"
    );
    assert!(stderr(&out).contains("SIGTERM"), "{}", show(&out));
    assert!(stderr(&out).contains("nothing was sent"), "{}", show(&out));
    let conn = rusqlite::Connection::open(dir.path().join("early.db")).unwrap();
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 0, "no run was created");
}

/// A Starpay that starts listening during the retry budget is waited for: the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starpay_coming_up_during_the_retries_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/finance-payment-service");
    let job = dir.path().join("late.toml");
    job_file(
        &job,
        &url,
        &s(&input),
        &s(&dir.path().join("late.db")),
        &s(&dir.path().join("reports")),
        "",
    );
    std::fs::write(
        &job,
        std::fs::read_to_string(&job)
            .unwrap()
            .replace("connect_retry_secs = 0", "connect_retry_secs = 30"),
    )
    .unwrap();
    let child = spawn_piped(vec!["run".into(), s(&job)]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let sim: SimHandle = Simulator::start_on(listener, fast_sim_config(1002))
        .await
        .unwrap();
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stderr(&out).contains("retrying"), "{}", show(&out));
    assert_eq!(sends(&sim).len(), 2);
}

/// 4 when the file was already completed by a finished run (a timer that fires twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_completed_file_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1003)).await;
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let job = write_job(dir.path(), "twice", &sim, &input, LIMITS, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(stderr(&out).contains("--new-run"), "{}", show(&out));
    assert_eq!(sends(&sim).len(), 2, "nothing sent the second time");
}

// ------------------------------------------------------------------ signals

/// SIGTERM mid-run acts like Ctrl-C: exit 3 with the report written; the resumed run
/// finishes and no reference is paid twice (simulator ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_3_with_a_report_and_resume_pays_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1004)).await;
    let input = dir.path().join("term.csv");
    let n = 12;
    write_csv(&input, n, |_| "5791");
    let job = write_job(
        dir.path(),
        "term",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve_with(40, 2),
    );
    let child = spawn_piped(vec!["run".into(), s(&job)]).await;
    eventually("sending", BOUND, || sends(&sim).len() >= 2).await;
    signal(&child, "TERM");
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(stderr(&out).contains("SIGTERM"), "{}", show(&out));
    let report_path = dir.path().join("reports/term-1.csv");
    let report = read_report(&report_path);
    assert_eq!(report.len(), n, "every row once");
    let result: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("reports/term-1-result.json")).expect("result file"),
    )
    .unwrap();
    assert_eq!(result["exit_code"], 3, "{result}");
    assert!(sim.ledger().orders.len() < n, "stopped before the end");

    let job = write_job(
        dir.path(),
        "term",
        &sim,
        &input,
        LIMITS,
        &resolve_with(40, 2),
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), n, "one order per reference");
    let mut accts: Vec<_> = ledger.orders.iter().map(|o| o.acct_no.clone()).collect();
    accts.sort();
    accts.dedup();
    assert_eq!(accts.len(), n, "no account paid twice");
    for o in &ledger.orders {
        assert_eq!(o.create_requests, 1, "{o:?}");
    }
    let report = read_report(&report_path);
    assert!(report.iter().all(|r| r["state"] == "SUCCESS"), "{report:?}");
}

/// SIGHUP is a stop signal too (exit 3, report written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_mid_run_exits_3_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1005)).await;
    let input = dir.path().join("hup.csv");
    write_csv(&input, 10, |_| "5791");
    let job = write_job(
        dir.path(),
        "hup",
        &sim,
        &input,
        LIMITS_SLOW,
        &resolve_with(40, 2),
    );
    let child = spawn_piped(vec!["run".into(), s(&job)]).await;
    eventually("sending", BOUND, || !sends(&sim).is_empty()).await;
    signal(&child, "HUP");
    let out = wait_output(child).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(read_report(&dir.path().join("reports/hup-1.csv")).len(), 10);
}

// ------------------------------------------------------------------ logs

/// A run whose stderr is not a terminal writes no ANSI escape byte, even at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_stderr_has_no_escape_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1006)).await;
    let input = dir.path().join("in.csv");
    write_csv(&input, 3, |_| "1358");
    let job = write_job(dir.path(), "plain", &sim, &input, LIMITS, FAST_RESOLVE);
    let out = run_env(
        vec!["-v".into(), "run".into(), s(&job)],
        vec![("RUST_LOG", "debug".into())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(out.stderr.lines_count() > 3, "{}", show(&out));
    assert!(!out.stderr.contains(&0x1b), "{}", show(&out));
    assert!(!out.stdout.contains(&0x1b), "{}", show(&out));
}

trait Lines {
    fn lines_count(&self) -> usize;
}
impl Lines for Vec<u8> {
    fn lines_count(&self) -> usize {
        self.iter().filter(|b| **b == b'\n').count()
    }
}

/// `-v` raises our own logs to debug but keeps the HTTP and TLS libraries at warn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_keeps_dependency_logs_at_warn() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1007)).await;
    let input = dir.path().join("in.csv");
    write_csv(&input, 3, |_| "1358");
    let job = write_job(dir.path(), "verbose", &sim, &input, LIMITS, FAST_RESOLVE);
    let job_s = s(&job);
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .env_remove("RUST_LOG")
            .args(["-v", "--log-format", "json", "run", &job_s])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    let mut debug = 0;
    for l in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
        let target = v["target"].as_str().unwrap_or("");
        let level = v["level"].as_str().unwrap_or("");
        if !target.starts_with("starpay_batch") {
            assert!(
                level == "WARN" || level == "ERROR",
                "dependency line below warn: {l}"
            );
        }
        if level == "DEBUG" {
            debug += 1;
        }
    }
    assert!(debug > 0, "-v shows our debug lines:\n{err}");
}

// ------------------------------------------------------------------ paths

/// Relative paths in a job file resolve against the job file's directory: run from another
/// working directory, the database and reports appear next to the job's paths and nothing in
/// the working directory. A missing input creates nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_paths_resolve_against_the_job_file_not_the_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1008)).await;
    std::fs::create_dir_all(dir.path().join("samples")).unwrap();
    write_csv(&dir.path().join("samples/in.csv"), 3, |_| "1358");
    let job = dir.path().join("jobs/nightly.toml");
    job_file(
        &job,
        &sim.base_url(),
        "../samples/in.csv",
        "../state/nightly.db",
        "../reports",
        "",
    );
    let job_s = s(&job);
    let cwd_path = cwd.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .current_dir(&cwd_path)
            .args(["run", &job_s])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(dir.path().join("state/nightly.db").exists());
    assert!(dir.path().join("reports/nightly-1.csv").exists());
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the working directory stays empty: {left:?}"
    );

    // Missing input: an error naming it, and no database, lock or reports directory.
    let fresh = tempfile::tempdir().unwrap();
    let job = fresh.path().join("jobs/missing.toml");
    job_file(
        &job,
        &sim.base_url(),
        "../samples/none.csv",
        "../state/missing.db",
        "../reports",
        "",
    );
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("none.csv"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let mut entries: Vec<_> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    assert_eq!(entries, vec!["jobs"], "nothing created");
}

// ------------------------------------------------------------------ environment, keys

/// STARPAY_ENDPOINT and STARPAY_MCH_ID override the job file: the job names a dead port, the
/// environment the simulator, and the run goes to the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_job_file() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1009)).await;
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let job = dir.path().join("env.toml");
    let dead = format!("http://127.0.0.1:{}/finance-payment-service", closed_port());
    job_file(
        &job,
        &dead,
        &s(&input),
        &s(&dir.path().join("env.db")),
        &s(&dir.path().join("reports")),
        "",
    );
    let bad_mch = run_env(
        vec!["run".into(), s(&job)],
        vec![
            ("STARPAY_ENDPOINT", sim.base_url()),
            ("STARPAY_MCH_ID", "10-15".into()),
        ],
    )
    .await;
    assert_eq!(bad_mch.status.code(), Some(1), "{}", show(&bad_mch));
    assert!(
        stderr(&bad_mch).contains("STARPAY_MCH_ID"),
        "{}",
        show(&bad_mch)
    );
    let out = run_env(
        vec!["run".into(), s(&job)],
        vec![
            ("STARPAY_ENDPOINT", sim.base_url()),
            ("STARPAY_MCH_ID", "101510000001".into()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(sends(&sim).len(), 2);
}

/// A private key readable by group/others: a warning naming the file and its mode; with
/// `strict_key_permissions = true`, exit 1 and nothing sent. The key never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loose_private_key_permissions_warn_or_refuse() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(1010)).await;
    let input = dir.path().join("in.csv");
    write_csv(&input, 2, |_| "1358");
    let key = dir.path().join("merchant.pem");
    let key_text =
        std::fs::read_to_string(keys().join("TEST-ONLY-demo-merchant-private.pem")).unwrap();
    std::fs::write(&key, &key_text).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let body_line = key_text.lines().nth(1).unwrap().to_string();

    let strict = dir.path().join("strict.toml");
    job_file(
        &strict,
        &sim.base_url(),
        &s(&input),
        &s(&dir.path().join("k.db")),
        &s(&dir.path().join("reports")),
        "strict_key_permissions = true\n",
    );
    let env = vec![("STARPAY_PRIVATE_KEY_FILE", s(&key))];
    let out = run_env(vec!["run".into(), s(&strict)], env.clone()).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("merchant.pem") && err.contains("0644"),
        "{err}"
    );
    assert!(!err.contains(&body_line), "key material in the log");
    assert!(sends(&sim).is_empty());

    let loose = dir.path().join("loose.toml");
    job_file(
        &loose,
        &sim.base_url(),
        &s(&input),
        &s(&dir.path().join("k.db")),
        &s(&dir.path().join("reports")),
        "",
    );
    let out = run_env(vec!["run".into(), s(&loose)], env.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && l.contains("merchant.pem") && l.contains("0644")),
        "{err}"
    );
    assert!(!err.contains(&body_line), "key material in the log");

    // 0600: no warning.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let input2 = dir.path().join("in2.csv");
    write_csv_with(&input2, 1, "OK-", "9", |_| "1358");
    let out = run_env(
        vec!["run".into(), s(&loose), "--input".into(), s(&input2)],
        env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!stderr(&out).contains("0600"), "{}", show(&out));
}

// ------------------------------------------------------------------ error messages

/// One line per error, cause last, nothing repeated.
#[test]
fn error_messages_say_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["run", &s(&dir.path().join("nope.toml"))])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    let job = dir.path().join("typo.toml");
    std::fs::write(&job, "inptu = \"x.csv\"\nkind = \"payout\"\n").unwrap();
    let o = bin().args(["run", &s(&job)]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("unknown field").count(), 1, "{err}");
    assert!(err.contains("typo.toml") && err.contains("inptu"), "{err}");
}

// ------------------------------------------------------------------ systemd samples

/// The systemd samples pass `systemd-analyze verify` (with ExecStart pointing at the real
/// binary); skipped, loudly, where systemd-analyze is missing.
#[test]
fn systemd_samples_verify() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIPPED systemd_samples_verify: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("samples/systemd");
    let mut units = Vec::new();
    for name in [
        "starpay-payout.service",
        "starpay-payout.timer",
        "starpay-recon.service",
        "starpay-recon.timer",
    ] {
        let text = std::fs::read_to_string(src.join(name)).unwrap();
        let text = text.replace(
            "/usr/local/bin/starpay-batch",
            env!("CARGO_BIN_EXE_starpay-batch"),
        );
        std::fs::write(dir.path().join(name), text).unwrap();
        units.push(dir.path().join(name));
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        !err.contains("starpay-"),
        "systemd-analyze complained about our units:\n{err}"
    );
    // The exit codes in the units match the tool's.
    let service = std::fs::read_to_string(src.join("starpay-payout.service")).unwrap();
    assert!(service.contains("SuccessExitStatus=2 4"), "{service}");
    assert!(service.contains("RestartForceExitStatus=3 75"), "{service}");
    assert!(service.contains("KillSignal=SIGTERM"), "{service}");
}
