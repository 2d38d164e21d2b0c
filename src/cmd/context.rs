//! `JobContext`: everything a job command needs, built once from its flags — the job file
//! (with overrides), the async runtime, the per-(database, job) lock, the store, the input's
//! hash, and the client (or the embedded simulator) with the engines on top. Commands ask it
//! for what they need and keep no set-up code of their own.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::cmd::{exit, CommandError};
use crate::config::{self, Endpoint, JobConfig, JobKind, Overrides};
use crate::engine::clock::Timing;
use crate::engine::payout::{EngineSettings, PayoutEngine};
use crate::engine::recon::{ReconEngine, ReconSettings};
use crate::engine::throttle::Throttle;
use crate::input::recon::ReconKind;
use crate::server::sim::{SimConfig, SimHandle, Simulator};
use crate::starpay::client::{Client, ClientConfig, Environment};
use crate::starpay::sign::{PrivateKey, PublicKey};
use crate::starpay::stats::RequestStats;
use crate::store::Store;

/// How a command uses the job's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Takes the job lock and opens (creating and migrating if needed) the store: commands
    /// that send or change rows.
    Exclusive,
    /// The same, for a command that reads the job's input: the input must exist before
    /// anything (lock, database) is created.
    ExclusiveWithInput,
    /// `run`: as `ExclusiveWithInput`, except that a payout job on PostgreSQL shares the job
    /// lock with the job's other runners (several runners on one run, issue 14 part B); every
    /// other command still holds it alone. On SQLite it is `ExclusiveWithInput`.
    Runner,
    /// No lock; the store must exist already (SQLite WAL readers never block the writer).
    ReadOnly,
    /// No lock; opens (creating and migrating if needed) the store: the notification
    /// receiver, which shares the database with running jobs (WAL, busy timeout).
    Shared,
}

pub struct JobContext {
    pub cfg: JobConfig,
    runtime: tokio::runtime::Runtime,
    store: Store,
    /// Counts of every signed request this command's clients send (the metrics file).
    stats: Arc<RequestStats>,
    /// Held for the life of the command; the OS (or the PostgreSQL server) releases it if the
    /// process dies, so a crash never leaves a stale lock.
    _lock: Option<JobLock>,
    /// The first stop signal's name once one arrived (commands that change rows listen from
    /// the moment they open: a signal during validation or pre-flight stops the command before
    /// anything is sent, one during the drive stops it gracefully; a second quits at once).
    stop: tokio::sync::watch::Receiver<Option<&'static str>>,
    /// This process is one of possibly several runners of a payout run (PostgreSQL, `run`).
    runner: Option<crate::engine::runners::RunnerSettings>,
}

/// A client on the job's endpoint, and the embedded simulator that must outlive its use.
pub struct Connected {
    pub client: Client,
    pub sim: Option<SimHandle>,
}

impl JobContext {
    /// Loads the job file (`input` overrides its input) and opens what `access` asks for.
    pub fn open(job: &Path, input: Option<PathBuf>, access: Access) -> anyhow::Result<JobContext> {
        let cfg = load_job(job, input)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let postgres = crate::store::is_postgres_url(&cfg.database);
        let runner = (access == Access::Runner && postgres && cfg.kind == JobKind::Payout)
            .then(|| crate::engine::runners::RunnerSettings::new(cfg.limits.lease));
        let access = match access {
            Access::Runner if runner.is_none() => Access::ExclusiveWithInput,
            a => a,
        };
        if matches!(access, Access::ExclusiveWithInput | Access::Runner) {
            File::open(&cfg.input)
                .with_context(|| format!("cannot read input {}", cfg.input.display()))?;
        }
        let (lock, store) = match access {
            Access::Runner => {
                let store = Store::open(&cfg.database)?;
                let lock = runtime.block_on(lock_postgres(&cfg, &store, true))?;
                (Some(JobLock::Postgres(lock)), store)
            }
            Access::Exclusive | Access::ExclusiveWithInput if postgres => {
                let store = Store::open(&cfg.database)?;
                let lock = runtime.block_on(lock_postgres(&cfg, &store, false))?;
                (Some(JobLock::Postgres(lock)), store)
            }
            Access::Exclusive | Access::ExclusiveWithInput => {
                let lock = lock(&cfg)?;
                (Some(JobLock::File(lock)), Store::open(&cfg.database)?)
            }
            Access::Shared => (None, Store::open(&cfg.database)?),
            Access::ReadOnly if postgres => match Store::open_snapshot(&cfg.database)? {
                Some(store) => (None, store),
                None => bail!(
                    "database {} has no starpay-batch tables yet: job {:?} has never run",
                    cfg.database_shown(),
                    cfg.job_name
                ),
            },
            Access::ReadOnly => {
                if !cfg.database.exists() {
                    bail!(
                        "database {} does not exist yet: job {:?} has never run",
                        cfg.database_shown(),
                        cfg.job_name
                    );
                }
                (None, Store::open(&cfg.database)?)
            }
        };
        let stop = match access {
            // `serve` (Shared) handles its own stop signals: it only stops receiving.
            Access::ReadOnly | Access::Shared => tokio::sync::watch::channel(None).1,
            Access::Exclusive | Access::ExclusiveWithInput | Access::Runner => {
                listen_for_stop(&runtime)
            }
        };
        Ok(JobContext {
            cfg,
            runtime,
            store,
            stats: Arc::default(),
            _lock: lock,
            stop,
            runner,
        })
    }

    /// The first stop signal's name, if one arrived.
    pub fn interrupted(&self) -> Option<&'static str> {
        *self.stop.borrow()
    }

    /// Before the drive: a stop signal that already arrived ends the command here, nothing
    /// sent (exit 3: run again, it resumes or starts afresh).
    pub fn stopped_before_sending(&self) -> Option<i32> {
        let name = self.interrupted()?;
        crate::say_warn!("interrupted ({name}) before anything was sent");
        Some(exit::UNRESOLVED)
    }

    /// Watches for the first stop signal (the drive stops its engine on it).
    pub fn stop_requests(&self) -> tokio::sync::watch::Receiver<Option<&'static str>> {
        self.stop.clone()
    }

    /// Refuses a job of another kind than the command works on.
    pub fn require_payout(&self, job: &Path, command: &str) -> anyhow::Result<()> {
        if self.cfg.kind != JobKind::Payout {
            bail!(
                "{}: {command} works on kind = \"payout\" jobs (this one is {:?})",
                job.display(),
                self.cfg.kind.as_str()
            );
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This process as one of several runners of a payout run (PostgreSQL `run`), if it is.
    pub fn runner(&self) -> Option<&crate::engine::runners::RunnerSettings> {
        self.runner.as_ref()
    }

    /// This command's requests by section and answer code, for the metrics file.
    pub fn request_stats(&self) -> &Arc<RequestStats> {
        &self.stats
    }

    /// Runs the command's async part to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Lower-case hex SHA-256 of the input file (runs are keyed by job + input hash).
    pub fn input_sha256(&self) -> anyhow::Result<String> {
        sha256_file(&self.cfg.input)
    }

    /// A client for the job's endpoint (starting the embedded simulator when asked), after a
    /// successful connection check (2.1).
    pub async fn connect(&self) -> anyhow::Result<Connected> {
        let cfg = &self.cfg;
        let (signer, platform_keys) = load_keys(cfg)?;
        let signer = Arc::new(signer);
        let (environment, sim) = match &cfg.starpay.endpoint {
            Endpoint::Env(env) => (env.clone(), None),
            Endpoint::EmbeddedSim => {
                let mut sim_cfg = match &cfg.sim.config {
                    Some(path) => SimConfig::from_toml_file(path)?,
                    None => SimConfig::default(),
                };
                if let Some(seed) = cfg.sim.seed {
                    sim_cfg.seed = seed;
                }
                let handle = Simulator::start(sim_cfg).await?;
                if !platform_keys.contains(&handle.platform_public_key()) {
                    bail!("the configured platform public key does not verify the embedded simulator's answers; use samples/keys/TEST-ONLY-sim-platform-public.pem");
                }
                tracing::info!(base_url = %handle.base_url(), "embedded simulator started");
                (Environment::parse(&handle.base_url())?, Some(handle))
            }
        };
        let mut client_cfg = ClientConfig::new(environment, cfg.starpay.mch_id.clone());
        client_cfg.request_timeout = cfg.limits.request_timeout;
        client_cfg.connect_timeout = cfg.limits.connect_timeout;
        let client = Client::new(client_cfg, signer, platform_keys)?.with_stats(self.stats.clone());
        // The start-up check may retry for a while; a stop signal ends it, nothing sent.
        let mut stop = self.stop_requests();
        tokio::select! {
            checked = crate::engine::startup::check_connection(&client, cfg.limits.connect_retry) => {
                checked?;
            }
            // A closed channel (no listener) never stops anything: the pattern skips it.
            Ok(_) = stop.wait_for(Option::is_some) => {
                return Err(CommandError::new(
                    exit::UNRESOLVED,
                    "interrupted during the connection check (2.1); nothing was sent",
                )
                .into());
            }
        }
        Ok(Connected { client, sim })
    }

    /// Starts the notification receiver on `addr` for this job (its store, mchId, platform
    /// public keys and AB0x hold); `applied` hears the ids of the rows it changes.
    pub async fn start_receiver(
        &self,
        addr: std::net::SocketAddr,
        applied: Option<tokio::sync::mpsc::Sender<i64>>,
    ) -> anyhow::Result<crate::receiver::Running> {
        let cfg = &self.cfg;
        let mut platform_keys = Vec::new();
        for p in &cfg.starpay.platform_public_keys {
            platform_keys.push(PublicKey::from_file(p)?);
        }
        let receiver = crate::receiver::Receiver {
            store: self.store.clone(),
            mch_id: cfg.starpay.mch_id.as_str().to_string(),
            platform_keys,
            resolve: cfg.resolve.clone(),
            limits: crate::receiver::Limits::default(),
            applied,
        };
        crate::receiver::Running::start(addr, receiver)
            .await
            .with_context(|| format!("cannot listen on {addr} for notifications"))
    }

    /// The payout engine on a connected client.
    pub async fn payout_engine(&self) -> anyhow::Result<(Arc<PayoutEngine>, Option<SimHandle>)> {
        let Connected { client, sim } = self.connect().await?;
        let cfg = &self.cfg;
        let settings = EngineSettings {
            concurrency: cfg.limits.concurrency,
            requests_per_second: cfg.limits.requests_per_second.get(),
            burst: cfg.limits.burst.get(),
            resolve: cfg.resolve.clone(),
            notify_url: cfg.starpay.notify_url.clone(),
            runners: self.runner.clone(),
        };
        let engine =
            PayoutEngine::new(client, self.store.clone(), settings, Timing::system()).await?;
        Ok((engine, sim))
    }

    /// A reconciliation engine on a connected client, with its own request throttle.
    pub async fn recon_engine(
        &self,
        kind: ReconKind,
    ) -> anyhow::Result<(Arc<ReconEngine>, Option<SimHandle>)> {
        let Connected { client, sim } = self.connect().await?;
        let cfg = &self.cfg;
        let throttle = Throttle::new(
            cfg.limits.concurrency,
            cfg.limits.requests_per_second.get(),
            cfg.limits.burst.get(),
            &Timing::system(),
        );
        let settings = ReconSettings::new(kind, &cfg.resolve);
        let engine = ReconEngine::new(client, self.store.clone(), throttle, settings).await?;
        Ok((engine, sim))
    }
}

/// Listens for SIGINT, SIGTERM and SIGHUP for the rest of the command: the first is published
/// to the returned receiver; a second quits at once with exit 3 (safe: every msgId is durable
/// before its request leaves, and rows caught in flight are resolved by query on the next run).
fn listen_for_stop(
    runtime: &tokio::runtime::Runtime,
) -> tokio::sync::watch::Receiver<Option<&'static str>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let _enter = runtime.enter();
    match crate::signals::StopSignals::listen() {
        Ok(mut signals) => {
            runtime.spawn(async move {
                let name = signals.recv().await;
                crate::say_warn!("{name}: stopping (Ctrl-C or SIGTERM again to quit now)");
                let _ = tx.send(Some(name));
                signals.recv().await;
                crate::say_warn!(
                    "quitting now; rows in flight are resolved by query on the next run"
                );
                std::process::exit(exit::UNRESOLVED);
            });
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot listen for stop signals; Ctrl-C and SIGTERM end the command at once"
        ),
    }
    rx
}

/// Lower-case hex SHA-256 of a file's bytes.
pub(crate) fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f =
        File::open(path).with_context(|| format!("cannot read input {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read input {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The merchant's private key (its file's permissions checked) and the platform public keys:
/// what a real run loads before its first request, and what a dry run checks.
pub(crate) fn load_keys(cfg: &JobConfig) -> anyhow::Result<(PrivateKey, Vec<PublicKey>)> {
    // The embedded simulator moves no money: its TEST-ONLY key is not worth a warning.
    if cfg.starpay.strict_key_permissions || cfg.starpay.endpoint != Endpoint::EmbeddedSim {
        crate::starpay::sign::check_private_key_permissions(
            &cfg.starpay.private_key,
            cfg.starpay.strict_key_permissions,
        )?;
    }
    let signer = PrivateKey::from_file(&cfg.starpay.private_key)?;
    let mut platform_keys = Vec::new();
    for p in &cfg.starpay.platform_public_keys {
        platform_keys.push(PublicKey::from_file(p)?);
    }
    Ok((signer, platform_keys))
}

/// Loads a job file with the overrides of the command line and the environment.
pub(crate) fn load_job(job: &Path, input: Option<PathBuf>) -> anyhow::Result<JobConfig> {
    Ok(config::load_job(job, &Overrides::from_env(input))?)
}

/// The per-(database, job) lock: a lock file beside a SQLite database, a session advisory
/// lock on PostgreSQL.
enum JobLock {
    File(#[allow(dead_code)] File),
    Postgres(#[allow(dead_code)] crate::store::pg::JobLock),
}

/// Takes the job's advisory lock on PostgreSQL, or refuses as the lock file does. `shared`:
/// `run` of a payout job, which shares it with the job's other runners (they join one run);
/// any other command holds it alone and is refused while a runner works, and the other way
/// round.
async fn lock_postgres(
    cfg: &JobConfig,
    store: &Store,
    shared: bool,
) -> anyhow::Result<crate::store::pg::JobLock> {
    let lock = if shared {
        store.try_lock_job_shared(&cfg.job_name).await?
    } else {
        store.try_lock_job(&cfg.job_name).await?
    };
    match lock {
        Some(lock) => Ok(lock),
        None => Err(CommandError::new(
            exit::TEMPFAIL,
            format!(
                "another starpay-batch process is running job {:?} on database {} (PostgreSQL advisory lock); nothing was sent",
                cfg.job_name,
                cfg.database_shown()
            ),
        )
        .into()),
    }
}

/// Takes the per-(database, job) lock, or says who holds it.
fn lock(cfg: &JobConfig) -> anyhow::Result<File> {
    let path = PathBuf::from(format!("{}.{}.lock", cfg.database_shown(), cfg.job_name));
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(CommandError::new(
            exit::TEMPFAIL,
            format!(
                "another starpay-batch process is running job {:?} on database {} (lock {}); nothing was sent",
                cfg.job_name,
                cfg.database_shown(),
                path.display()
            ),
        )
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
