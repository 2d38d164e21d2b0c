//! The PostgreSQL backend (issue 14): the same named operations as the SQLite writer thread
//! (`ops.rs`), on a `deadpool-postgres` pool of `tokio-postgres` connections, TLS-capable
//! (rustls, the platform's roots; `sslmode=require` in the URL insists on TLS, `prefer` — the
//! default — uses it when the server offers it).
//!
//! Invariants, the same as SQLite's: every operation that writes more than one statement is
//! one transaction, committed before the operation returns (a msgId is durable before its
//! request leaves); a row's state changes only by compare-and-set; `events` and `approvals`
//! are append-only (triggers); migrations are versioned files under `migrations/postgres/`,
//! applied in one transaction under an advisory lock (`migrate.rs`). Where SQLite's single
//! writer serialises everything, PostgreSQL serialises what must be: allocations of one
//! reference and notifications of one msgId take a transaction-scoped advisory lock on it.
//! Advisory lock keys include `current_schema()`, so two schemas of one database (tests, or
//! two tenants) never block each other.
//!
//! Must not: know about HTTP or CSV parsing.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

pub use claims::ReportClaim;
pub use copy::Copied;

mod claims;
mod copy;
pub(crate) mod migrate;
mod ops;
pub mod testing;

/// Connections in the pool at most: far above the engine's in-flight limit plus the reporting
/// and receiver tasks, far below a server's default `max_connections` (100).
const POOL_SIZE: usize = 16;
/// How long an operation waits for a connection (the pool full, or the server unreachable).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Handle to a PostgreSQL database. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// For the job lock's own connection.
    config: Arc<tokio_postgres::Config>,
    /// The URL without its password, for messages.
    shown: Arc<str>,
}

/// The rustls connector for `tokio-postgres`: the platform's root certificates.
pub(crate) fn make_tls() -> Result<MakeRustlsConnect, String> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    Ok(MakeRustlsConnect::new(config))
}

/// `url` without its password (messages and logs never show it).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparsable URL)".to_string(),
    }
}

/// The connection settings of `url`. Without an explicit `sslmode`: no TLS to a server on
/// this machine (loopback or a Unix socket), TLS required (and its certificate verified) to
/// any other host — a money ledger does not cross a network in clear text by default.
/// `sslmode=require` always insists on TLS; unlike libpq's `require`, the certificate is
/// always verified against the platform's roots (rustls has no "encrypt but trust anyone").
fn parse(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    use tokio_postgres::config::{Host, SslMode};
    let mut config = url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::PgOpen {
            url: redact(url),
            why: format!("not a valid PostgreSQL URL: {e}"),
        })?;
    if !url.contains("sslmode=") {
        let local = config.get_hosts().iter().all(|h| match h {
            Host::Tcp(name) => matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]"),
            #[cfg(unix)]
            Host::Unix(_) => true,
        });
        config.ssl_mode(if local {
            SslMode::Disable
        } else {
            SslMode::Require
        });
    }
    Ok(config)
}

/// Runs `f` to completion on a thread of its own with its own runtime: opening (connect,
/// migrate) is called from synchronous code that may itself run inside a runtime (tests),
/// where blocking on a future is not allowed.
fn on_own_runtime<T: Send + 'static>(
    url: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>>>>
        + Send
        + 'static,
) -> Result<T, StoreError> {
    let shown = redact(url);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::PgOpen {
                url: shown,
                why: format!("cannot start a runtime: {e}"),
            })?;
        rt.block_on(f())
    })
    .join()
    .unwrap_or_else(|_| Err(StoreError::WriterGone))
}

/// One connection outside the pool (migrations, the job lock), its driver task spawned on
/// the current runtime.
pub(crate) async fn connect_one(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let config = parse(url)?;
    let tls = make_tls().map_err(|why| StoreError::PgOpen {
        url: redact(url),
        why,
    })?;
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls))
        .await
        .map_err(|_| StoreError::PgOpen {
            url: redact(url),
            why: format!("no answer within {CONNECT_TIMEOUT:?}"),
        })?
        .map_err(|e| StoreError::PgOpen {
            url: redact(url),
            why: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Connects, applies the migrations this build knows (refusing a database a newer build
    /// migrated) and builds the pool.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let owned = url.to_string();
        on_own_runtime(url, move || {
            Box::pin(async move {
                let mut client = connect_one(&owned).await?;
                migrate::migrate(&mut client, &redact(&owned)).await
            })
        })?;
        PgStore::pool(url)
    }

    /// The store if the database was migrated to this build's schema; `None` if it never was
    /// (a dry run before the first real run); an error for another schema version.
    pub fn open_existing(url: &str) -> Result<Option<PgStore>, StoreError> {
        let owned = url.to_string();
        let found = on_own_runtime(url, move || {
            Box::pin(async move {
                let client = connect_one(&owned).await?;
                migrate::applied_version(&client).await
            })
        })?;
        let known = migrate::MIGRATIONS.len() as i64;
        match found {
            None => Ok(None),
            Some(v) if v == known => PgStore::pool(url).map(Some),
            Some(found) => Err(StoreError::Outdated {
                path: redact(url).into(),
                found,
                known,
            }),
        }
    }

    fn pool(url: &str) -> Result<PgStore, StoreError> {
        let config = parse(url)?;
        let tls = make_tls().map_err(|why| StoreError::PgOpen {
            url: redact(url),
            why,
        })?;
        let manager = Manager::from_config(
            config.clone(),
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::PgOpen {
                url: redact(url),
                why: e.to_string(),
            })?;
        Ok(PgStore {
            pool,
            config: Arc::new(config),
            shown: redact(url).into(),
        })
    }

    /// The URL, password hidden.
    pub fn describe(&self) -> &str {
        &self.shown
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::PgPool(format!("{}: {e}", self.shown)))
    }

    /// See `Store::try_lock_job`.
    pub(crate) async fn try_lock_job(
        &self,
        job: &str,
        mode: LockMode,
    ) -> Result<Option<JobLock>, StoreError> {
        let sql = match mode {
            LockMode::Exclusive => "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || '/job/' || $1::TEXT, 0))",
            LockMode::Shared => "SELECT pg_try_advisory_lock_shared(hashtextextended(current_schema() || '/job/' || $1::TEXT, 0))",
        };
        let client = self.lock_connection().await?;
        let got: bool = client.query_one(sql, &[&job]).await?.try_get(0)?;
        Ok(got.then_some(JobLock { _client: client }))
    }

    /// See `Store::lock_run_creation`: waits for the lock (others hold it only for a pre-flight).
    pub(crate) async fn lock_run_creation(
        &self,
        job: &str,
        sha256: &str,
    ) -> Result<JobLock, StoreError> {
        let client = self.lock_connection().await?;
        client
            .execute(
                "SELECT pg_advisory_lock(hashtextextended(current_schema() || '/create/' || $1::TEXT || '/' || $2::TEXT, 0))",
                &[&job, &sha256],
            )
            .await?;
        Ok(JobLock { _client: client })
    }

    /// A connection of its own for a session lock, held for as long as its guard lives (a
    /// pooled one would go back to the pool with the lock still held).
    async fn lock_connection(&self) -> Result<tokio_postgres::Client, StoreError> {
        let tls = make_tls().map_err(|why| StoreError::PgOpen {
            url: self.shown.to_string(),
            why,
        })?;
        // A host that vanishes without closing its connection (power loss, network split)
        // must not hold the lock for the kernel's default two hours of TCP silence.
        let mut config = (*self.config).clone();
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        let (client, connection) = config.connect(tls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL job-lock connection ended");
            }
        });
        Ok(client)
    }
}

/// How a command holds its job's lock on PostgreSQL: `run` of a payout job shares it with the
/// other runners of the job (several runners on one job, issue 14 part B); every other command
/// that changes rows (`retry`, `reconcile`, `approve`, …) holds it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// The job lock on PostgreSQL: a session advisory lock held by a connection of its own. The
/// server releases it when this guard is dropped (the connection closes) or when the process
/// dies (the connection drops).
pub struct JobLock {
    _client: tokio_postgres::Client,
}
