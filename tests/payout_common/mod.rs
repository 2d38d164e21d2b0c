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

thread_local! {
    /// The PostgreSQL URL job files of this test point at (`None`: a SQLite file per job). Set
    /// by `postgres_backend` on the test's own thread, where `both_backends!` bodies run.
    static DATABASE_URL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// While alive, job files written on this thread use a fresh PostgreSQL schema (dropped with
/// the guard). `None` (after a loud SKIPPED line) without a reachable server, unless
/// `STARPAY_REQUIRE_POSTGRES=1`, where that fails the test.
pub struct PostgresBackend {
    db: starpay_batch::store::pg::testing::TestDb,
}

impl PostgresBackend {
    pub fn url(&self) -> &str {
        self.db.url()
    }

    pub fn db(&self) -> &starpay_batch::store::pg::testing::TestDb {
        &self.db
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        DATABASE_URL.with(|d| *d.borrow_mut() = None);
    }
}

pub fn postgres_backend(test: &str) -> Option<PostgresBackend> {
    let db = starpay_batch::store::pg::testing::TestDb::new(test)?;
    DATABASE_URL.with(|d| *d.borrow_mut() = Some(db.url().to_string()));
    Some(PostgresBackend { db })
}

/// The `database` of a job named `name` in `dir`: the test's PostgreSQL schema when one is
/// set (`both_backends!`), else `dir/<name>.db`.
pub fn database_of(dir: &Path, name: &str) -> String {
    DATABASE_URL
        .with(|d| d.borrow().clone())
        .unwrap_or_else(|| dir.join(format!("{name}.db")).display().to_string())
}

/// The rows of `sql` in job `name`'s database (whichever backend the test runs on), every
/// column as text (`NULL` as None). Write portable SQL: no `?` parameters, no booleans.
pub fn db_rows(dir: &Path, name: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    if let Some(url) = DATABASE_URL.with(|d| d.borrow().clone()) {
        return starpay_batch::store::pg::testing::query_text_at(&url, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open(dir.join(format!("{name}.db"))).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(v) => Some(v.to_string()),
                        ValueRef::Real(v) => Some(v.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

/// Runs `sql` (portable, no parameters) in job `name`'s database, whichever the backend.
pub fn db_execute(dir: &Path, name: &str, sql: &str) {
    if let Some(url) = DATABASE_URL.with(|d| d.borrow().clone()) {
        starpay_batch::store::pg::testing::execute_at(&url, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        return;
    }
    rusqlite::Connection::open(dir.join(format!("{name}.db")))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// One test body, run twice: `<name>::sqlite` (a SQLite file per job, as always) and
/// `<name>::postgres` (every job file written by the body points at one fresh PostgreSQL
/// schema; skipped loudly without a server, failed when `STARPAY_REQUIRE_POSTGRES=1`).
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body() $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(_pg) = $crate::payout_common::postgres_backend(stringify!($name)) else {
                    return;
                };
                body().await
            }
        }
    };
}

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
        db = database_of(dir, name),
        reports = dir.join("reports").display(),
        url = sim.base_url(),
        private = keys.join("TEST-ONLY-demo-merchant-private.pem").display(),
        platform = keys.join("TEST-ONLY-sim-platform-public.pem").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub const CSV_HEADER: &str =
    "reference,channel,account_no,account_name,middle_name,last_name,bank,amount,currency,note\n";

/// The amount of generated row `i`: the CSV field as written (quoted when it holds a comma)
/// and the centavos it means. Covers two decimals, one decimal, whole pesos, thousands with
/// commas, and the InstaPay maximum 50,000.00 (rows 5, 505, …).
pub fn amount_of(i: usize) -> (String, i64) {
    let pesos = (100 + i % 900) as i64;
    let cents = (i % 100) as i64;
    match i % 10 {
        5 if i % 500 == 5 => ("\"50,000.00\"".into(), 5_000_000),
        1 => (
            format!("{pesos}.{}", cents % 10),
            pesos * 100 + (cents % 10) * 10,
        ),
        3 => (format!("{pesos}"), pesos * 100),
        7 => {
            let thousands = 1 + (i % 49) as i64;
            (
                format!("\"{thousands},{:03}.{cents:02}\"", pesos),
                (thousands * 1000 + pesos) * 100 + cents,
            )
        }
        _ => (format!("{pesos}.{cents:02}"), pesos * 100 + cents),
    }
}

/// `n` valid rows; account numbers are unique per row (so the ledger can be matched to rows)
/// and end in `suffix(i)` (the simulator's scenario table); amounts from `amount_of`.
pub fn write_csv(path: &Path, n: usize, suffix: impl Fn(usize) -> &'static str) {
    write_csv_with(path, n, "REF-", "", suffix)
}

/// Same, with a reference prefix and an account prefix (for several files on one simulator).
pub fn write_csv_with(
    path: &Path,
    n: usize,
    ref_prefix: &str,
    acct_prefix: &str,
    suffix: impl Fn(usize) -> &'static str,
) {
    let mut s = String::from(CSV_HEADER);
    for i in 0..n {
        let acct = format!("{acct_prefix}{:06}{}", i, suffix(i));
        let (amount, _) = amount_of(i);
        s.push_str(&format!(
            "{ref_prefix}{i:06},instapay,{acct},Juan,Santos,Dela Cruz,GCash,{amount},PHP,row {i}\n"
        ));
    }
    std::fs::write(path, s).unwrap();
}

/// Centavos of a report or summary amount (`1234.50`; commas tolerated).
pub fn centavos(text: &str) -> i64 {
    starpay_batch::domain::Centavos::parse_php(&text.replace(',', ""))
        .unwrap_or_else(|e| panic!("amount {text:?}: {e:?}"))
        .get()
}

/// The summary CSV as state → (count, total centavos), read by header name.
pub fn read_summary(path: &Path) -> HashMap<String, (u64, i64)> {
    read_report(path)
        .into_iter()
        .map(|r| {
            let total = r
                .get("total")
                .or_else(|| r.get("amount"))
                .cloned()
                .unwrap_or_default();
            (
                r["state"].clone(),
                (r["count"].parse().unwrap(), centavos(&total)),
            )
        })
        .collect()
}

/// Waits (real time, polling every 50 ms, at most `bound`) until `f` holds; panics naming
/// `what` otherwise. The bound is generous: it only stops a broken test from hanging.
pub async fn eventually(what: &str, bound: Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + bound;
    while std::time::Instant::now() < end {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f(), "timed out after {bound:?} waiting for: {what}");
}

/// Resolve settings like `FAST_RESOLVE` with another deadline and AB0x hold.
pub fn resolve_with(deadline_secs: u64, ab_hold_secs: u64) -> String {
    FAST_RESOLVE
        .replace(
            "deadline_secs = 60",
            &format!("deadline_secs = {deadline_secs}"),
        )
        .replace(
            "ab_hold_secs = 2",
            &format!("ab_hold_secs = {ab_hold_secs}"),
        )
}

/// Create requests (5.2) in the simulator's log, in arrival order.
pub fn sends(sim: &SimHandle) -> Vec<starpay_batch::server::sim::RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|q| q.path.ends_with("/v1/disburse"))
        .collect()
}

/// Queries (5.4) in the simulator's log, in arrival order.
pub fn queries(sim: &SimHandle) -> Vec<starpay_batch::server::sim::RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|q| q.path.ends_with("/v1/disburse/query"))
        .collect()
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

/// Spawns the binary with stdout and stderr piped (read them with `wait_output`).
pub async fn spawn_piped(args: Vec<String>) -> Child {
    tokio::task::spawn_blocking(move || {
        bin()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Waits for a spawned child off the async threads.
pub async fn wait_output(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

/// Sends SIGINT (Ctrl-C) to a child process by its id.
pub fn sigint(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT {}", child.id());
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

/// Nobody paid twice: at most one order per account (= per reference: every test file gives
/// each row its own account) in the simulator's ledger.
pub fn assert_each_account_paid_once(ledger: &starpay_batch::server::sim::LedgerSnapshot) {
    let mut per_acct: HashMap<String, Vec<&str>> = HashMap::new();
    for o in &ledger.orders {
        per_acct
            .entry(o.acct_no.clone().unwrap_or_default())
            .or_default()
            .push(&o.msg_id);
    }
    for (acct, ids) in &per_acct {
        assert_eq!(ids.len(), 1, "account {acct} paid more than once: {ids:?}");
    }
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

/// The crash and chaos tests' simulator — 10% commit-then-drop and 5% 502, on payout requests
/// only (a 502 on the pre-flight checks would end a run before it starts, and the kills must
/// land on a run that is working) — and `dir/payouts.csv` of `rows` rows: every 40th row from
/// the 4th fails (AC01), every 40th from the 10th gets commit-then-drop, the rest succeed.
pub async fn chaos_sim_and_input(dir: &Path, rows: usize, seed: u64) -> (SimHandle, PathBuf) {
    let mut cfg = fast_sim_config(seed);
    cfg.faults.commit_then_drop = 0.10;
    cfg.faults.http_502 = 0.05;
    cfg.faults.faults_on = starpay_batch::server::sim::FaultScope::Payouts;
    let sim = start_sim(cfg).await;
    let input = dir.join("payouts.csv");
    write_csv(&input, rows, |i| match i % 40 {
        3 => "0401",
        9 => "0800",
        _ => "7777",
    });
    (sim, input)
}
