//! Several runners on one payout run over PostgreSQL (issue 14 part B): real runner processes
//! (the binary), the real simulator over 127.0.0.1, one PostgreSQL schema per test. Skipped
//! loudly without a server; failed when `STARPAY_REQUIRE_POSTGRES=1`.

mod payout_common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use payout_common::*;
use rand::{Rng, SeedableRng};
use starpay_batch::server::sim::SimHandle;

/// After the run: exactly one order per reference (account) in the ledger, every row once in
/// the report, states and order numbers as in the ledger, the run finished once.
fn check_ledger_and_report(dir: &Path, sim: &SimHandle, name: &str, rows: usize) {
    let ledger = sim.ledger();
    assert_each_account_paid_once(&ledger);
    assert_eq!(ledger.orders.len(), rows, "every row paid exactly once");
    let report = read_report(&dir.join(format!("reports/{name}-1.csv")));
    assert_eq!(report.len(), rows, "every row once in the report");
    let refs: HashSet<&String> = report.iter().map(|r| &r["reference"]).collect();
    assert_eq!(refs.len(), rows, "every reference once");
    for r in &report {
        let order = ledger
            .order(&r["msg_id"])
            .unwrap_or_else(|| panic!("row without order {r:?}"));
        assert_eq!(r["state"], expected_state(&order.state), "{r:?}");
        assert_eq!(r["order_no"], order.order_no);
    }
    let finished = db_rows(
        dir,
        name,
        "SELECT COUNT(*) FROM events WHERE kind = 'run_finished'",
    );
    assert_eq!(
        finished[0][0].as_deref(),
        Some("1"),
        "the run finished once"
    );
    let runs = db_rows(dir, name, "SELECT COUNT(*) FROM runs");
    assert_eq!(
        runs[0][0].as_deref(),
        Some("1"),
        "one run, joined by every runner"
    );
}

/// No one-second window of the simulator's log holds more than rate + burst signed requests.
fn check_rate(sim: &SimHandle, rate: u64, burst: u64) -> usize {
    let f = sim.rate_figures();
    assert!(
        f.busiest_second as u64 <= rate + burst,
        "runners together sent {} requests in one second (limit {rate} + burst {burst})",
        f.busiest_second
    );
    f.busiest_second
}

/// Three runner processes started together on one job and file: they join one run (created
/// once), claim its rows between them (at least two of them drive rows), share one rate limit
/// (no one-second window above rate + burst although each runner alone may send at the full
/// rate), and exactly one writes the report; the others say so and exit with its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_share_one_run() {
    let Some(_pg) = postgres_backend("three_runners_share_one_run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_sim_config(41);
    cfg.settle_delay_ms = 200;
    let sim = start_sim(cfg).await;
    let rows = 150;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, rows, |i| if i % 25 == 3 { "0401" } else { "7777" });
    let (rate, burst) = (40, 10);
    let limits = format!("requests_per_second = {rate}\nburst = {burst}\nconcurrency = 4\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2\nlease_secs = 3");
    let job = write_job(dir.path(), "multi", &sim, &input, &limits, FAST_RESOLVE);
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(spawn_piped(vec!["run".into(), s(&job)]).await);
    }
    let mut outs = Vec::new();
    for c in children {
        outs.push(wait_output(c).await);
    }
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    let all = outs.iter().map(show).collect::<Vec<_>>().join("\n=====\n");
    assert!(
        codes.iter().all(|c| *c == Some(2)),
        "every runner exits with the run's code (2: finished with failures): {codes:?}\n{all}"
    );
    let writers = outs
        .iter()
        .filter(|o| !String::from_utf8_lossy(&o.stderr).contains("another runner wrote its report"))
        .count();
    assert_eq!(writers, 1, "exactly one runner writes the report\n{all}");
    check_ledger_and_report(dir.path(), &sim, "multi", rows);
    let owners = db_rows(
        dir.path(),
        "multi",
        "SELECT COUNT(DISTINCT lease_owner) FROM rows",
    );
    let owners: usize = owners[0][0].as_deref().unwrap_or("0").parse().unwrap();
    assert!(owners >= 2, "rows were driven by {owners} runner(s)");
    let busiest = check_rate(&sim, rate, burst);
    eprintln!(
        "runners {owners}; busiest second {busiest} (limit {})",
        rate + burst
    );
}

/// Issue 14's chaos test, CI version: three runners on one job over PostgreSQL against a
/// simulator with 10% commit-then-drop and 5% 502 on payouts; runners are SIGKILLed at seeded
/// random times and restarted until the run is finished: one order per reference, every row
/// once in the report, states as in the ledger, the run finished once, and no one-second window
/// above rate + burst. Taken-over rows are resolved by query first (the engine's resume path):
/// every report row's msgId is its first attempt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_runners_short() {
    chaos(150, 4, 51).await;
}

/// The long version: `STARPAY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
/// cargo test --test runners -- --ignored chaos_three_runners_long --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn chaos_three_runners_long() {
    chaos(1000, 15, 52).await;
}

async fn chaos(rows: usize, kills: usize, seed: u64) {
    let Some(_pg) = postgres_backend("chaos_three_runners") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (sim, input) = chaos_sim_and_input(dir.path(), rows, seed).await;
    let (rate, burst) = (60, 15);
    let limits = format!("requests_per_second = {rate}\nburst = {burst}\nconcurrency = 4\nrequest_timeout_secs = 3\nconnect_timeout_secs = 1\nlease_secs = 2");
    let job = write_job(dir.path(), "chaos", &sim, &input, &limits, FAST_RESOLVE);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut runners: Vec<Child> = Vec::new();
    for _ in 0..3 {
        runners.push(spawn(vec!["run".into(), s(&job)]).await);
    }
    let mut killed = 0;
    let finished = |dir: &Path| {
        let r = db_rows(
            dir,
            "chaos",
            "SELECT COUNT(*) FROM runs WHERE status = 'FINISHED'",
        );
        r.first().and_then(|r| r[0].as_deref()) == Some("1")
    };
    let end = std::time::Instant::now() + Duration::from_secs(300);
    let mut exits = Vec::new();
    while std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        // Runners that exited by themselves: keep three running until the run is finished.
        for c in runners.iter_mut() {
            if let Some(st) = c.try_wait().unwrap() {
                exits.push(st.code());
                *c = spawn(vec!["run".into(), s(&job)]).await;
            }
        }
        if killed < kills && sim.ledger().orders.len() < rows {
            let i = rng.random_range(0..runners.len());
            let _ = runners[i].kill();
            let _ = runners[i].wait();
            killed += 1;
            runners[i] = spawn(vec!["run".into(), s(&job)]).await;
        }
        if finished(dir.path()) {
            break;
        }
    }
    for mut c in runners {
        let st = tokio::task::spawn_blocking(move || c.wait().unwrap())
            .await
            .unwrap();
        exits.push(st.code());
    }
    assert!(finished(dir.path()), "the run finished; exits {exits:?}");
    // A runner (re)started while another creates or drives the run joins it or, once the run is
    // finished, refuses the file as done (4); it never calls the file invalid (1) because the
    // run's rows hold its references.
    assert!(
        !exits.contains(&Some(1)),
        "no runner exits 1 (could not run): {exits:?}"
    );
    assert!(killed >= 1, "at least one runner was killed mid-run");
    check_ledger_and_report(dir.path(), &sim, "chaos", rows);
    let report = read_report(&dir.path().join("reports/chaos-1.csv"));
    assert!(report.iter().all(|r| r["msg_id"].ends_with("A1")));
    let mut faults: HashMap<String, usize> = HashMap::new();
    for q in sim.requests() {
        if let Some(f) = q.fault {
            *faults.entry(f).or_default() += 1;
        }
    }
    assert!(
        faults.get("commit_then_drop").copied().unwrap_or(0) > 0,
        "{faults:?}"
    );
    let busiest = check_rate(&sim, rate, burst);
    let recovered = db_rows(
        dir.path(),
        "chaos",
        "SELECT COUNT(*) FROM events WHERE kind = 'recovered_in_flight'",
    );
    eprintln!(
        "killed {killed}; exits {exits:?}; faults {faults:?}; recovered in flight {:?}; busiest second {busiest} (limit {})",
        recovered[0][0],
        rate + burst
    );
}

/// One job pays one file at a time on PostgreSQL too: while the job's runners hold rows of an
/// open run, a runner of another file is refused with exit 75 (as the job's lock refuses a
/// second process on SQLite) and sends nothing; the first run goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_of_another_file_is_refused_while_the_job_works() {
    let Some(_pg) = postgres_backend("a_runner_of_another_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(43)).await;
    let input = dir.path().join("payouts.csv");
    write_csv(&input, 40, |_| "7777");
    let limits = "requests_per_second = 10\nburst = 2\nconcurrency = 2\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2\nlease_secs = 3";
    let job = write_job(dir.path(), "onefile", &sim, &input, limits, FAST_RESOLVE);
    let first = spawn_piped(vec!["run".into(), s(&job)]).await;
    let held = "SELECT COUNT(*) FROM rows WHERE lease_owner IS NOT NULL AND lease_until > 0";
    let url = database_of(dir.path(), "onefile");
    let mut waited = 0;
    loop {
        // (an error: the first runner has not made the schema's tables yet)
        let rows = starpay_batch::store::pg::testing::query_text_at(&url, held);
        let count = rows.ok().and_then(|r| r.first().and_then(|r| r[0].clone()));
        if count.is_some_and(|n| n != "0") {
            break;
        }
        waited += 1;
        assert!(waited < 300, "the first runner never held rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = dir.path().join("other.csv");
    write_csv_with(&other, 3, "OTHER-", "9", |_| "7777");
    let second = spawn_piped(vec!["run".into(), s(&job), "--input".into(), s(&other)]).await;
    let second = wait_output(second).await;
    assert_eq!(second.status.code(), Some(75), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is working on another file"),
        "{}",
        show(&second)
    );
    let first = wait_output(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let ledger = sim.ledger();
    assert_eq!(ledger.orders.len(), 40, "only the first file was paid");
    assert!(ledger
        .orders
        .iter()
        .all(|o| !o.acct_no.as_deref().unwrap_or("").starts_with('9')));
}
