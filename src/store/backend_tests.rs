//! The store's unit tests, through the public `Store` API, run against both backends:
//! `<name>::sqlite` on a temporary file and `<name>::postgres` on a fresh schema of the server
//! in `STARPAY_TEST_POSTGRES_URL` (see `pg::testing`; skipped loudly without one, failed when
//! `STARPAY_REQUIRE_POSTGRES=1`).

use std::path::PathBuf;

use super::approvals::{ApprovalAction, NewApprovalEntry};
use super::notifications::{Decision, NotificationFields, NotifyOutcome, Received, RowUpdate};
use super::pg::testing::TestDb;
use super::*;
use crate::domain::{Centavos, EventKind, RowState, RunKind};

/// Where a test's database is; opens it as often as the test likes (re-open = restart).
struct Db {
    location: PathBuf,
    /// The SQLite file's folder, or the PostgreSQL schema (dropped at the end).
    _keep: Keep,
}

#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Pg(TestDb),
}

impl Db {
    fn open(&self) -> Store {
        Store::open(&self.location).expect("store opens")
    }

    /// Runs raw SQL below the API (only to check what the API must refuse).
    fn raw_execute(&self, sql: &str) -> Result<(), String> {
        match &self._keep {
            Keep::Dir(_) => rusqlite::Connection::open(&self.location)
                .and_then(|c| c.execute_batch(sql))
                .map_err(|e| e.to_string()),
            Keep::Pg(db) => db.execute(sql),
        }
    }
}

macro_rules! both_backends {
    ($(async fn $name:ident($db:ident: Db) $body:block)*) => {
        $(
            mod $name {
                use super::*;

                async fn body($db: Db) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let dir = tempfile::tempdir().unwrap();
                    let location = dir.path().join("t.db");
                    body(Db { location, _keep: Keep::Dir(dir) }).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(pg) = TestDb::new(stringify!($name)) else { return };
                    let location = PathBuf::from(pg.url());
                    body(Db { location, _keep: Keep::Pg(pg) }).await
                }
            }
        )*
    };
}

fn new_row(line: u64, reference: &str) -> NewRow {
    NewRow {
        line,
        reference: reference.into(),
        channel: "instapay",
        account_no: "09170000001".into(),
        account_name: "A".into(),
        middle_name: String::new(),
        last_name: "B".into(),
        bank: Some("GCash".into()),
        amount: Centavos::new(100),
        note: None,
        state: RowState::New,
        message: None,
        repay: false,
        raw: RawFields::default(),
    }
}

fn new_run(input: &str, sha: &str) -> NewRun {
    NewRun {
        job: "job".into(),
        kind: RunKind::Payout,
        input: input.into(),
        sha256: sha.into(),
    }
}

/// A run's row count and total as the store holds them.
async fn count_and_total(store: &Store, run_id: i64) -> (i64, Centavos) {
    let run = store.run_by_id(run_id).await.unwrap().unwrap();
    (run.row_count, run.total)
}

fn event(kind: EventKind) -> Event {
    Event {
        kind,
        ..Event::default()
    }
}

both_backends! {
    async fn payout_run_streamed_all_or_nothing(db: Db) {
        let store = db.open();
        // More rows than one insert batch; one REJECTED row between them does not count in
        // the total.
        let run_id = store
            .create_payout_run_streamed::<String, _>(new_run("big.csv", "big"), |sink| {
                for i in 0..12_001u64 {
                    let mut row = new_row(i + 2, &format!("S{i}"));
                    if i == 7_000 {
                        row.state = RowState::Rejected;
                        row.message = Some("invalid input: amount".into());
                    }
                    sink.push(row)?;
                }
                Ok(Ok(()))
            })
            .await
            .unwrap()
            .unwrap();
        let stored = count_and_total(&store, run_id).await;
        assert_eq!(stored, (12_001, Centavos::new(1_200_000)));
        let rows = store.rows_of_run(run_id, false).await.unwrap();
        assert_eq!(rows.len(), 12_001);
        assert_eq!(rows.iter().filter(|r| r.state == RowState::Rejected).count(), 1);
        assert_eq!(store.open_rows(run_id).await.unwrap(), 12_000);
        // A fill that fails after a whole batch was inserted leaves no run and no row behind.
        let failed = store
            .create_payout_run_streamed::<String, _>(new_run("changed.csv", "chg"), |sink| {
                for i in 0..6_000u64 {
                    sink.push(new_row(i + 2, &format!("C{i}")))?;
                }
                Ok(Err("the file changed".to_string()))
            })
            .await
            .unwrap();
        assert_eq!(failed, Err("the file changed".to_string()));
        let runs = store.runs_for("job", None).await.unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [run_id]);
        assert!(store.reference_uses("C1", None).await.unwrap().is_empty());
    }

    async fn migrations_attempts_and_compare_and_set(db: Db) {
        let store = db.open();
        let id1 = store.db_id().await.unwrap();
        assert_eq!(id1.len(), 8);
        let run = store
            .create_payout_run(new_run("in.csv", "abc"), vec![new_row(2, "R1"), new_row(3, "R2")])
            .await
            .unwrap();
        let rows = store.rows_of_run(run, true).await.unwrap();
        assert_eq!(rows.len(), 2);
        let row = rows[0].clone();
        let Allocation::Allocated(attempt) = store
            .allocate_attempt(row.clone(), "MSG1".into(), "5.2", b"{}".to_vec(), None)
            .await
            .unwrap()
        else {
            panic!("blocked")
        };
        assert_eq!(attempt.seq, 1);
        // The msgId is unique forever: the second row cannot be given it.
        let r2 = rows[1].clone();
        assert!(store
            .allocate_attempt(r2.clone(), "MSG1".into(), "5.2", b"{}".to_vec(), None)
            .await
            .is_err());
        assert_eq!(store.row(r2.id).await.unwrap().state, RowState::New, "nothing half-done");
        // Compare-and-set: saving from a stale state fails.
        let mut stale = row.clone();
        stale.state = RowState::Success;
        let err = store
            .save_row(stale, RowState::New, false, event(EventKind::Sending))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::StateConflict { .. }), "{err}");
        let row = store.row(row.id).await.unwrap();
        assert_eq!(row.state, RowState::Unsent);
        assert_eq!(row.attempt.as_ref().map(|a| a.msg_id.as_str()), Some("MSG1"));
        // A save from the stored state works and counts the send.
        let mut sent = row.clone();
        sent.state = RowState::InFlight;
        store
            .save_row(sent, RowState::Unsent, true, event(EventKind::Sending))
            .await
            .unwrap();
        let row = store.row(row.id).await.unwrap();
        assert_eq!((row.state, row.sends), (RowState::InFlight, 1));
        // Another run may not pay the same reference once this one has an attempt.
        let run2 = store
            .create_payout_run(new_run("in2.csv", "def"), vec![new_row(2, "R1")])
            .await
            .unwrap();
        let other = store.rows_of_run(run2, true).await.unwrap()[0].clone();
        let blocked = store
            .allocate_attempt(other.clone(), "MSG2".into(), "5.2", b"{}".to_vec(), None)
            .await
            .unwrap();
        assert!(matches!(blocked, Allocation::Blocked { .. }), "{blocked:?}");
        assert_eq!(store.row(other.id).await.unwrap().state, RowState::Rejected);
        let uses = store.reference_uses("R1", None).await.unwrap();
        assert!(matches!(
            ReferenceCheck::of(&uses),
            ReferenceCheck::Blocked(ReferenceUse { state: RowState::InFlight, .. })
        ));
        let history = store.reference_history("R1").await.unwrap();
        assert_eq!((history.rows.len(), history.attempts.len()), (2, 1));
        assert!(history.events.iter().any(|e| e.kind == "reference_blocked"));
        assert_eq!(store.attempts_of_reference("R1").await.unwrap().len(), 1);
        let counts = store.payout_counts(run).await.unwrap();
        assert_eq!(counts.groups.iter().map(|g| g.rows).sum::<i64>(), 2);
        assert_eq!(store.open_rows(run).await.unwrap(), 2);
        // Events cannot be changed or deleted.
        assert!(db.raw_execute("DELETE FROM events").is_err());
        assert!(db.raw_execute("UPDATE events SET detail = 'x'").is_err());
        // Runs: finish, reopen, exit code, heartbeat.
        store.finish_run(run).await.unwrap();
        assert!(store.run_by_id(run).await.unwrap().unwrap().finished);
        store.reopen_run(run, "retry".into()).await.unwrap();
        assert!(!store.run_by_id(run).await.unwrap().unwrap().finished);
        store.record_exit(run, 0).await.unwrap();
        assert!(store.last_success_at("job").await.unwrap().is_some());
        assert_eq!(store.runs_for("job", Some("abc")).await.unwrap().len(), 1);
        assert_eq!(store.runs_for("job", None).await.unwrap().len(), 2);
        drop(store);
        // Re-open: same db id, migrations not re-applied, counters go on.
        let store = db.open();
        assert_eq!(store.db_id().await.unwrap(), id1);
        let q1 = store.new_msg_id('Q', &id1, "query", None).await.unwrap();
        let q2 = store.new_msg_id('Q', &id1, "query", None).await.unwrap();
        assert_eq!((q1, q2), (format!("Q{id1}1"), format!("Q{id1}2")));
        assert_eq!(store.reserve_counter_block("blk", 100).await.unwrap(), 101);
        assert_eq!(store.reserve_counter_block("blk", 100).await.unwrap(), 201);
    }

    async fn approvals_banks_and_balances(db: Db) {
        let store = db.open();
        let entry = store
            .record_approval(NewApprovalEntry {
                job: "job".into(),
                action: ApprovalAction::Approved,
                by: "alice".into(),
                input_path: "in.csv".into(),
                input_sha256: "abc".into(),
                rows: 2,
                total: Centavos::new(12_345),
                prepared_by: Some("bob".into()),
                overrides: vec!["max_total".into()],
                revokes: None,
            })
            .await
            .unwrap();
        let log = store.approval_log("job").await.unwrap();
        assert_eq!(log, vec![entry]);
        assert!(db.raw_execute("DELETE FROM approvals").is_err(), "append-only");
        assert_eq!(store.last_bank_list().await.unwrap(), None);
        store
            .save_bank_list(vec!["GCash".into(), "BDO".into(), "GCash".into()])
            .await
            .unwrap();
        let (names, _) = store.last_bank_list().await.unwrap().unwrap();
        assert_eq!(names, ["BDO", "GCash"]);
        let run = store
            .create_payout_run(new_run("in.csv", "abc"), vec![new_row(2, "R1")])
            .await
            .unwrap();
        store.record_preflight_balance(run, Centavos::new(500)).await.unwrap();
        store.record_preflight_balance(run, Centavos::new(900)).await.unwrap();
        assert_eq!(
            store.preflight_balance(run).await.unwrap().map(|b| b.0),
            Some(Centavos::new(500)),
            "the first balance stays"
        );
    }

    async fn notifications_apply_once(db: Db) {
        let store = db.open();
        let run = store
            .create_payout_run(new_run("in.csv", "abc"), vec![new_row(2, "R1")])
            .await
            .unwrap();
        let row = store.rows_of_run(run, false).await.unwrap()[0].clone();
        store
            .allocate_attempt(row.clone(), "MSGN".into(), "5.2", b"{}".to_vec(), None)
            .await
            .unwrap();
        let note = |msg: &str| Received {
            raw: b"{\"n\":1}".to_vec(),
            verified: true,
            verify_form: "raw_bytes".into(),
            fields: Some(NotificationFields {
                original_msg_id: msg.into(),
                trx_state: "SUCCESS".into(),
                amount: Centavos::new(100),
                mch_id: "m".into(),
                order_no: "O1".into(),
                ..NotificationFields::default()
            }),
        };
        let decide = |r: &RowRecord| {
            let mut next = r.clone();
            next.state = RowState::Success;
            next.trx_state = Some("SUCCESS".into());
            Decision::Change(Box::new(RowUpdate {
                row: next,
                sent: false,
                detail: None,
            }))
        };
        let (outcome, row_id) = store.apply_notification(note("MSGN"), decide).await.unwrap();
        assert_eq!((outcome, row_id), (NotifyOutcome::Applied, Some(row.id)));
        assert_eq!(store.row(row.id).await.unwrap().state, RowState::Success);
        let (again, _) = store.apply_notification(note("MSGN"), decide).await.unwrap();
        assert_eq!(again, NotifyOutcome::Duplicate);
        let (unknown, _) = store.apply_notification(note("NOPE"), decide).await.unwrap();
        assert_eq!(unknown, NotifyOutcome::Unmatched);
        store
            .record_refused_notification(
                Received {
                    raw: vec![b'x'; 5000],
                    verified: false,
                    verify_form: "garbage".into(),
                    fields: None,
                },
                "bad signature".into(),
            )
            .await
            .unwrap();
        let mut counts = store.notification_counts().await.unwrap();
        counts.sort();
        assert_eq!(
            counts,
            [
                ("applied".to_string(), 1),
                ("duplicate".to_string(), 1),
                ("refused".to_string(), 1),
                ("unmatched".to_string(), 1)
            ]
        );
        let look = store.notifications_to_look_at(10).await.unwrap();
        assert_eq!(look.len(), 2);
        assert!(look[0].detail.as_deref().unwrap_or("").contains("body 5000 bytes"));
        assert_eq!(store.notifications_about("R1").await.unwrap().len(), 2);
        // What a reconciliation report compares its file with: verified repayment and
        // unmatched notifications (here the unknown msgId), not applied or refused ones.
        let others = store.notifications_not_about_payouts(0).await.unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(
            (others[0].outcome.as_str(), others[0].original_msg_id.as_str()),
            ("unmatched", "NOPE")
        );
        assert_eq!(others[0].amount, Centavos::new(100));
        let later = crate::store::now_ms() + 60_000;
        assert!(store.notifications_not_about_payouts(later).await.unwrap().is_empty());
        assert_eq!(store.recon_trx_dates(run).await.unwrap(), (None, None));
    }

    async fn reconcile_pass_and_recon_file(db: Db) {
        use super::recon::{NewReconRow, ReconResult};
        use crate::domain::ReconCategory;
        let store = db.open();
        let run = store
            .create_payout_run(new_run("in.csv", "abc"), vec![new_row(2, "R1"), new_row(3, "R2")])
            .await
            .unwrap();
        let row = store.rows_of_run(run, false).await.unwrap()[0].clone();
        store
            .allocate_attempt(row, "MSGR".into(), "5.2", b"{}".to_vec(), None)
            .await
            .unwrap();
        let pass = store
            .create_reconcile_pass(
                NewRun { kind: RunKind::Reconcile, ..new_run("run 1", "k") },
                run,
                Centavos::new(1_000),
            )
            .await
            .unwrap();
        // Line 3 was never sent: MATCHED at once; line 2 is to check.
        assert_eq!(store.unchecked_recon_rows(pass).await.unwrap(), 1);
        let todo = store.recon_todo_page(pass, 0, 10).await.unwrap();
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].original_msg_id.as_deref(), Some("MSGR"));
        assert!(todo[0].recorded_unpaid, "UNSENT is held as unpaid");
        store
            .save_recon_results(
                pass,
                vec![ReconResult {
                    id: todo[0].id,
                    category: ReconCategory::Matched,
                    action: "none".into(),
                    order_no: Some("O9".into()),
                    checked_at: 1,
                    queries: 1,
                    query_ids: vec!["QR1".into()],
                    ..ReconResult::default()
                }],
            )
            .await
            .unwrap();
        assert_eq!(store.open_recon_rows(pass).await.unwrap(), 0);
        assert_eq!(store.mark_duplicate_matches(pass).await.unwrap(), 0);
        store.set_recon_balance(pass, false, Centavos::new(900)).await.unwrap();
        let totals = store.recon_totals(pass).await.unwrap();
        assert_eq!(totals.balance_start, Some(Centavos::new(1_000)));
        assert_eq!(totals.balance_end, Some(Centavos::new(900)));
        assert_eq!(totals.counts, vec![(ReconCategory::Matched, 2, Centavos::new(200))]);
        let page = store.recon_report_page(pass, 0, 10).await.unwrap();
        assert_eq!(page.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);

        // A reconciliation file, streamed in batches larger than one insert batch; a second
        // copy of a transaction is DUPLICATE_IN_INPUT.
        let loaded = store
            .load_recon_run::<String, _>(
                NewRun { kind: RunKind::DisbursementRecon, ..new_run("r.csv", "rsha") },
                Centavos::new(7),
                |sink| {
                    for i in 0..12_000u64 {
                        sink.push(NewReconRow {
                            line: i + 2,
                            reference: Some(format!("X{i}")),
                            ref_no: Some(format!("REF{}", i.min(11_998))),
                            original_msg_id: None,
                            expected_amount: Some(Centavos::new(1)),
                            expected_state: None,
                        })?;
                    }
                    Ok(Ok(()))
                },
            )
            .await
            .expect("the store answers")
            .expect("the file fills the run");
        let stored = count_and_total(&store, loaded).await;
        assert_eq!(stored, (12_000, Centavos::new(12_000)));
        assert_eq!(store.unchecked_recon_rows(loaded).await.unwrap(), 11_999);
        // A failing file leaves no run behind.
        let runs_before = store.runs_for("job", None).await.unwrap().len();
        let failed = store
            .load_recon_run::<String, _>(
                NewRun { kind: RunKind::DisbursementRecon, ..new_run("bad.csv", "bad") },
                Centavos::new(7),
                |sink| {
                    sink.push(NewReconRow {
                        line: 2,
                        reference: None,
                        ref_no: Some("A".into()),
                        original_msg_id: None,
                        expected_amount: None,
                        expected_state: None,
                    })?;
                    Ok(Err("line 3: bad amount".to_string()))
                },
            )
            .await
            .unwrap();
        assert_eq!(failed, Err("line 3: bad amount".to_string()));
        assert_eq!(store.runs_for("job", None).await.unwrap().len(), runs_before);
    }

    async fn concurrent_allocations_of_one_reference_pay_it_once(db: Db) {
        // Two handles (two runners, or two jobs) race to allocate the same reference from two
        // open runs, many times: exactly one allocation per reference wins.
        let a = db.open();
        let b = db.open();
        let refs: Vec<String> = (0..20).map(|i| format!("C{i}")).collect();
        let rows_a: Vec<NewRow> = refs.iter().enumerate().map(|(i, r)| new_row(i as u64 + 2, r)).collect();
        let run_a = a.create_payout_run(new_run("a.csv", "a"), rows_a.clone()).await.unwrap();
        let run_b = b.create_payout_run(new_run("b.csv", "b"), rows_a).await.unwrap();
        let ra = a.rows_of_run(run_a, false).await.unwrap();
        let rb = b.rows_of_run(run_b, false).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (x, y)) in ra.into_iter().zip(rb).enumerate() {
            let (a, b) = (a.clone(), b.clone());
            tasks.spawn(async move {
                a.allocate_attempt(x, format!("A{i}"), "5.2", vec![], None).await
            });
            tasks.spawn(async move {
                b.allocate_attempt(y, format!("B{i}"), "5.2", vec![], None).await
            });
        }
        let mut allocated = 0;
        while let Some(r) = tasks.join_next().await {
            if let Allocation::Allocated(_) = r.unwrap().unwrap() {
                allocated += 1;
            }
        }
        assert_eq!(allocated, refs.len(), "one allocation per reference");
        for r in &refs {
            assert_eq!(a.attempts_of_reference(r).await.unwrap().len(), 1, "{r}");
        }
    }
}

/// A database migrated by a newer build is refused, on both backends.
mod newer_schema_refused {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(Store::open(&path).unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }

    #[tokio::test]
    async fn postgres() {
        let Some(pg) = TestDb::new("newer_schema_refused") else {
            return;
        };
        let url = PathBuf::from(pg.url());
        drop(Store::open(&url).unwrap());
        pg.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
            .unwrap();
        let err = Store::open(&url).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(matches!(
            Store::open_snapshot(&url),
            Err(StoreError::Outdated { .. })
        ));
    }
}

/// Takes `job`'s lock alone, waiting up to a second for the server to release it (a dropped
/// lock's connection closes asynchronously).
async fn lock_when_free(store: &Store, job: &str) -> Option<crate::store::pg::JobLock> {
    for _ in 0..50 {
        if let Some(lock) = store.try_lock_job(job).await.unwrap() {
            return Some(lock);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

/// PostgreSQL only: the job lock is a session advisory lock, scoped to the schema; a second
/// taker is refused until the first lets go. A dry run of a database never migrated finds none.
#[tokio::test]
async fn postgres_job_lock_and_snapshot() {
    let Some(pg) = TestDb::new("postgres_job_lock") else {
        return;
    };
    let url = PathBuf::from(pg.url());
    assert!(
        Store::open_snapshot(&url).unwrap().is_none(),
        "never migrated"
    );
    let store = Store::open(&url).unwrap();
    assert!(store.is_postgres());
    let first = store.try_lock_job("nightly").await.unwrap();
    assert!(first.is_some());
    assert!(store.try_lock_job("nightly").await.unwrap().is_none());
    assert!(store.try_lock_job("other").await.unwrap().is_some());
    drop(first);
    // The server releases the lock once the connection is gone.
    let alone = lock_when_free(&store, "nightly").await;
    assert!(alone.is_some());
    assert!(Store::open_snapshot(&url).unwrap().is_some());
}

/// `sslmode=require` insists on TLS with a certificate the platform trusts: against the test
/// server (whose certificate, if it offers TLS at all, is not signed by a public root) the
/// store refuses to open rather than talk in clear text or trust an unknown certificate.
#[tokio::test]
async fn postgres_sslmode_require_verifies_the_certificate() {
    let Some(pg) = TestDb::new("postgres_sslmode_require") else {
        return;
    };
    let url = format!("{}&sslmode=require", pg.url());
    match Store::open(&PathBuf::from(&url)) {
        Ok(_) => panic!("opened over TLS with an untrusted certificate"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("TLS") || text.contains("ssl") || text.contains("SSL"),
                "{text}"
            );
            assert!(!text.contains("sslmode=require&"), "{text}");
        }
    }
}

/// `migrate-store`: a SQLite database's history, copied into an empty PostgreSQL store, reads
/// the same through the API; the database id and counters carry over (msgIds never repeat),
/// a reference paid on SQLite stays blocked, new ids follow the copied ones, and a store that
/// already holds history is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_copies_into_postgres() {
    let Some(pg) = TestDb::new("sqlite_history_copies") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = Store::open(&path).unwrap();
    let db_id = old.db_id().await.unwrap();
    let run = old
        .create_payout_run(
            new_run("in.csv", "abc"),
            vec![new_row(2, "P1"), new_row(3, "P2"), new_row(4, "P3")],
        )
        .await
        .unwrap();
    let rows = old.rows_of_run(run, false).await.unwrap();
    old.allocate_attempt(
        rows[0].clone(),
        format!("P{db_id}1"),
        "5.2",
        b"{\"a\":1}".to_vec(),
        None,
    )
    .await
    .unwrap();
    let mut paid = old.row(rows[0].id).await.unwrap();
    paid.state = RowState::Success;
    paid.trx_state = Some("SUCCESS".into());
    old.save_row(paid, RowState::Unsent, true, event(EventKind::Sending))
        .await
        .unwrap();
    let q = old.new_msg_id('Q', &db_id, "query", None).await.unwrap();
    old.finish_run(run).await.unwrap();
    old.record_exit(run, 2).await.unwrap();
    old.save_bank_list(vec!["GCash".into()]).await.unwrap();
    old.record_preflight_balance(run, Centavos::new(10_000))
        .await
        .unwrap();
    old.record_approval(NewApprovalEntry {
        job: "job".into(),
        action: ApprovalAction::Staged,
        by: "bob".into(),
        input_path: "in.csv".into(),
        input_sha256: "abc".into(),
        rows: 3,
        total: Centavos::new(300),
        prepared_by: None,
        overrides: vec![],
        revokes: None,
    })
    .await
    .unwrap();
    let pass = old
        .create_reconcile_pass(
            NewRun {
                kind: RunKind::Reconcile,
                ..new_run("run 1", "k")
            },
            run,
            Centavos::new(5),
        )
        .await
        .unwrap();
    let before_runs = old.runs_for("job", None).await.unwrap();
    let before_rows = old.rows_of_run(run, false).await.unwrap();
    let before_history = old.reference_history("P1").await.unwrap();
    let before_recon = old.recon_report_page(pass, 0, 100).await.unwrap();
    drop(old);

    let url = PathBuf::from(pg.url());
    let new = Store::open(&url).unwrap();
    let copied = new.copy_from_sqlite(&path).await.unwrap();
    assert!(copied.contains(&("rows", 3)), "{copied:?}");
    assert!(copied.contains(&("attempts", 1)), "{copied:?}");
    assert_eq!(
        new.db_id().await.unwrap(),
        db_id,
        "the database id carries over"
    );
    assert_eq!(new.runs_for("job", None).await.unwrap(), before_runs);
    assert_eq!(new.rows_of_run(run, false).await.unwrap(), before_rows);
    let history = new.reference_history("P1").await.unwrap();
    assert_eq!(history.rows, before_history.rows);
    assert_eq!(history.events.len(), before_history.events.len());
    assert_eq!(history.attempts.len(), 1);
    let recon = new.recon_report_page(pass, 0, 100).await.unwrap();
    assert_eq!(
        recon
            .iter()
            .map(|r| (r.line, r.category))
            .collect::<Vec<_>>(),
        before_recon
            .iter()
            .map(|r| (r.line, r.category))
            .collect::<Vec<_>>()
    );
    assert_eq!(new.approval_log("job").await.unwrap().len(), 1);
    assert!(new.last_bank_list().await.unwrap().is_some());
    assert_eq!(
        new.preflight_balance(run).await.unwrap().map(|b| b.0),
        Some(Centavos::new(10_000))
    );
    // Counters go on: the next query msgId follows the copied one.
    let q2 = new.new_msg_id('Q', &db_id, "query", None).await.unwrap();
    assert_eq!(
        (q.as_str(), q2.as_str()),
        (&*format!("Q{db_id}1"), &*format!("Q{db_id}2"))
    );
    // The reference paid on SQLite stays paid; new runs get ids after the copied ones.
    let run2 = new
        .create_payout_run(new_run("again.csv", "zzz"), vec![new_row(2, "P1")])
        .await
        .unwrap();
    assert!(run2 > pass);
    let again = new.rows_of_run(run2, false).await.unwrap()[0].clone();
    let blocked = new
        .allocate_attempt(again, "NEW1".into(), "5.2", vec![], None)
        .await
        .unwrap();
    assert!(matches!(blocked, Allocation::Blocked { .. }), "{blocked:?}");
    // Copying again into a store with history is refused.
    assert!(new.copy_from_sqlite(&path).await.is_err());
}

/// PostgreSQL only (several runners on one run, issue 14 part B): rows are claimed in batches,
/// each by one runner; a live lease keeps others off; renewal keeps it live; an expired lease
/// (a runner that died) is taken over with the row exactly as stored (IN_FLIGHT stays
/// IN_FLIGHT for the engine's query-first resume); released leases free the rows at once; a
/// finished run's report is claimed by exactly one runner, only once no row is open; the job
/// lock is shared by runners and exclusive for other commands; one open run per input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_leases_and_takeover() {
    let Some(pg) = TestDb::new("postgres_claims") else {
        return;
    };
    let store = Store::open(&PathBuf::from(pg.url())).unwrap();
    let rows: Vec<NewRow> = (2..12).map(|l| new_row(l, &format!("C{l}"))).collect();
    let run = store
        .create_payout_run(new_run("c.csv", "claims"), rows)
        .await
        .unwrap();
    // One open payout run per job + input, refused with a message that says so.
    let second = store
        .create_payout_run(new_run("c.csv", "claims"), vec![new_row(2, "X")])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        second.contains("already has an open payout run of this file"),
        "{second}"
    );

    // Two runners claim in batches: disjoint, in input order.
    let a = store.claim_rows(run, "A", 60_000, 4).await.unwrap();
    let b = store.claim_rows(run, "B", 60_000, 4).await.unwrap();
    let lines = |rs: &[RowRecord]| rs.iter().map(|r| r.line).collect::<Vec<_>>();
    assert_eq!(lines(&a), vec![2, 3, 4, 5]);
    assert_eq!(lines(&b), vec![6, 7, 8, 9]);
    assert_eq!(store.rows_held_by_others(run, "A").await.unwrap(), 4);
    // A renews its leases (4 rows held); B's stay live too: nothing left but lines 10, 11.
    assert_eq!(store.renew_leases(run, "A", 60_000).await.unwrap(), 4);
    let c = store.claim_rows(run, "C", 60_000, 10).await.unwrap();
    assert_eq!(lines(&c), vec![10, 11]);
    assert!(store
        .claim_rows(run, "C", 60_000, 10)
        .await
        .unwrap()
        .is_empty());

    // B "dies" with line 6 in flight: its leases expire (renewed to 1 ms ago's future: 1 ms).
    let mut r6 = b[0].clone();
    r6.state = RowState::InFlight;
    store
        .save_row(r6.clone(), RowState::New, false, event(EventKind::Sending))
        .await
        .unwrap();
    assert_eq!(store.renew_leases(run, "B", 1).await.unwrap(), 4);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        store.rows_held_by_others(run, "A").await.unwrap(),
        2,
        "C's two only"
    );
    let taken = store.claim_rows(run, "C", 60_000, 10).await.unwrap();
    assert_eq!(
        lines(&taken),
        vec![6, 7, 8, 9],
        "C takes over B's expired rows"
    );
    assert_eq!(taken[0].state, RowState::InFlight, "taken over as stored");
    // B, back from a stall, cannot move the row C now drives from where B left it.
    let mut stale = r6.clone();
    stale.state = RowState::Pending;
    assert!(matches!(
        store
            .save_row(stale, RowState::New, false, event(EventKind::SendAnswer))
            .await,
        Err(StoreError::StateConflict { .. })
    ));

    // A leaves: its rows are free at once for C.
    assert_eq!(store.release_leases(run, "A").await.unwrap(), 4);
    assert_eq!(
        lines(&store.claim_rows(run, "C", 60_000, 10).await.unwrap()),
        vec![2, 3, 4, 5]
    );

    // The report: nobody may claim it while rows are open.
    assert_eq!(
        store.claim_report(run, "C", 60_000).await.unwrap(),
        pg::ReportClaim::Taken
    );
    for mut r in store.rows_of_run(run, true).await.unwrap() {
        let old = r.state;
        r.state = RowState::Rejected;
        store
            .save_row(r, old, false, event(EventKind::ReferenceBlocked))
            .await
            .unwrap();
    }
    assert_eq!(store.open_rows(run).await.unwrap(), 0);
    // Exactly one of two runners racing for it wins; the winner may claim again (idempotent).
    let (x, y) = tokio::join!(
        store.claim_report(run, "A", 60_000),
        store.claim_report(run, "C", 60_000)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x, y, "exactly one report writer");
    let winner = if x == pg::ReportClaim::Mine { "A" } else { "C" };
    assert_eq!(
        store.claim_report(run, winner, 60_000).await.unwrap(),
        pg::ReportClaim::Mine
    );
    store.finish_run(run).await.unwrap();
    assert_eq!(
        store.claim_report(run, "Z", 60_000).await.unwrap(),
        pg::ReportClaim::Taken,
        "a finished run has no report left to claim"
    );
    // A finished run frees its input for a new run (--new-run).
    store
        .create_payout_run(new_run("c.csv", "claims"), vec![new_row(2, "Y")])
        .await
        .unwrap();

    // The job lock: runners share it; a command that needs it alone is refused meanwhile.
    let r1 = store.try_lock_job_shared("nightly").await.unwrap();
    let r2 = store.try_lock_job_shared("nightly").await.unwrap();
    assert!(r1.is_some() && r2.is_some());
    assert!(store.try_lock_job("nightly").await.unwrap().is_none());
    drop((r1, r2));
    let alone = lock_when_free(&store, "nightly").await;
    assert!(alone.is_some());
    assert!(store
        .try_lock_job_shared("nightly")
        .await
        .unwrap()
        .is_none());
}

/// PostgreSQL only: the shared GCRA row. From a fresh row, `burst` takes pass at once and the
/// next must wait about one interval; takes from several tasks at once never pass more than
/// `burst` + rate × elapsed; a cut by one runner halves the rate for all (down to 1/s), a raise
/// steps it up to the configured rate at most, and a runner starting later keeps a cut rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shared_rate_limit() {
    let Some(pg) = TestDb::new("postgres_gcra") else {
        return;
    };
    let store = Store::open(&PathBuf::from(pg.url())).unwrap();
    store.rate_limit_init("M1", 20, 5).await.unwrap();
    for i in 0..5 {
        assert_eq!(store.rate_limit_take("M1").await.unwrap(), 0, "take {i}");
    }
    let wait = store.rate_limit_take("M1").await.unwrap();
    assert!(
        wait > 0 && wait <= 50_000,
        "one interval (50 ms) at most: {wait}"
    );
    assert!(store.rate_limit_take("nobody").await.is_err());

    // Four tasks (as four runners) take as fast as they can for 1.5 s.
    store.rate_limit_init("M2", 50, 10).await.unwrap();
    let start = std::time::Instant::now();
    let granted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, g) = (store.clone(), granted.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < std::time::Duration::from_millis(1500) {
                if s.rate_limit_take("M2").await.unwrap() == 0 {
                    g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = granted.load(std::sync::atomic::Ordering::Relaxed) as f64;
    assert!(n <= 10.0 + 50.0 * secs + 1.0, "{n} granted in {secs:.2} s");
    assert!(
        n >= 50.0,
        "the limit is reachable: {n} granted in {secs:.2} s"
    );

    assert_eq!(store.rate_limit_cut("M2").await.unwrap(), 25);
    assert_eq!(store.rate_limit_rate("M2").await.unwrap(), Some(25));
    store.rate_limit_init("M2", 50, 10).await.unwrap();
    assert_eq!(
        store.rate_limit_rate("M2").await.unwrap(),
        Some(25),
        "a cut stays"
    );
    assert_eq!(store.rate_limit_raise("M2").await.unwrap(), 26);
    for _ in 0..10 {
        store.rate_limit_cut("M2").await.unwrap();
    }
    assert_eq!(store.rate_limit_rate("M2").await.unwrap(), Some(1));
    for _ in 0..100 {
        store.rate_limit_raise("M2").await.unwrap();
    }
    assert_eq!(store.rate_limit_rate("M2").await.unwrap(), Some(50));
    // The configured rate lowered below the current one caps it.
    store.rate_limit_init("M2", 10, 10).await.unwrap();
    assert_eq!(store.rate_limit_rate("M2").await.unwrap(), Some(10));
}
