//! Test support (used by the unit tests and the integration suites; not part of the product):
//! a fresh PostgreSQL schema per test on the server named by `STARPAY_TEST_POSTGRES_URL`,
//! dropped afterwards. Without the variable or a reachable server the test says loudly that
//! it was skipped — unless `STARPAY_REQUIRE_POSTGRES=1` (CI), where that is a failure.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server the PostgreSQL variants of the tests use.
pub const ENV_TEST_URL: &str = "STARPAY_TEST_POSTGRES_URL";
/// `1`: a missing or unreachable server fails the PostgreSQL tests instead of skipping them.
pub const ENV_REQUIRE: &str = "STARPAY_REQUIRE_POSTGRES";

/// One schema of its own for one test; dropped (with everything in it) when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    base: String,
    schema: String,
    url: String,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn required() -> bool {
    std::env::var(ENV_REQUIRE).is_ok_and(|v| v == "1")
}

/// Runs `f` on its own thread and runtime (callers may be inside a runtime, or in `Drop`).
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>>>>
        + Send
        + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(f())
    })
    .join()
    .unwrap_or_else(|_| Err("the helper thread panicked".into()))
}

async fn execute(url: String, sql: String) -> Result<(), String> {
    let client = super::connect_one(&url).await.map_err(|e| e.to_string())?;
    client.batch_execute(&sql).await.map_err(|e| e.to_string())
}

impl TestDb {
    /// A fresh schema named after `test`, or `None` (after a loud `SKIPPED:` line on stderr)
    /// when no server is configured or reachable. Panics instead when PostgreSQL is required.
    pub fn new(test: &str) -> Option<TestDb> {
        let skip = |why: String| -> Option<TestDb> {
            if required() {
                panic!("PostgreSQL is required ({ENV_REQUIRE}=1) but {why}");
            }
            eprintln!(
                "SKIPPED: PostgreSQL not reachable ({why}); the PostgreSQL variant of {test} did not run. \
                 Set {ENV_TEST_URL}=postgres://postgres@127.0.0.1:5432/test to run it."
            );
            None
        };
        let base = match std::env::var(ENV_TEST_URL) {
            Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
            _ => return skip(format!("{ENV_TEST_URL} is not set")),
        };
        let tag: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let schema = format!(
            "t_{tag}_{}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            super::super::now_ms() % 1_000_000
        );
        let created = blocking({
            let (base, schema) = (base.clone(), schema.clone());
            move || Box::pin(execute(base, format!("CREATE SCHEMA \"{schema}\"")))
        });
        if let Err(e) = created {
            return skip(format!("{} at {}", e, super::redact(&base)));
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        Some(TestDb { base, schema, url })
    }

    /// The URL of this test's schema (a job file's `database`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs `sql` in this test's schema (checks a test makes below the store API).
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        blocking(move || Box::pin(execute(url, sql)))
    }

    /// The rows of `sql` in this test's schema, every column read as text (`NULL` as None).
    pub fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        query_text_at(&self.url, sql)
    }
}

/// Runs `sql` on the database at `url` (a test's schema).
pub fn execute_at(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    blocking(move || Box::pin(execute(url, sql)))
}

/// The rows of `sql` on the database at `url`, every column as text (`NULL` as None).
pub fn query_text_at(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    blocking(move || {
        Box::pin(async move {
            let client = super::connect_one(&url).await.map_err(|e| e.to_string())?;
            let msgs = client.simple_query(&sql).await.map_err(|e| e.to_string())?;
            Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect())
        })
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        if let Err(e) = blocking(move || {
            Box::pin(execute(
                base,
                format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
            ))
        }) {
            eprintln!("warning: could not drop test schema {}: {e}", self.schema);
        }
    }
}
