//! The command tree (clap derive). Validates values; opens nothing.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--version`: the package version, the commit it was built from (`-dirty` when the work tree
/// had changes) and the build date, from `build.rs` (`unknown` when built without git).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("STARPAY_BUILD_INFO"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "starpay-batch",
    version = LONG_VERSION,
    after_help = crate::exit::EXIT_CODES_HELP,
    about = "Batch payouts and reconciliation for the Starpay Merchant Disbursement API",
    long_about = "Batch payouts and reconciliation for the Starpay Merchant Disbursement API.\n\n\
Every request is RSA-SHA256 signed; every answer is verified against the platform key. \
Results go to stdout, logs to stderr."
)]
pub struct Cli {
    /// Log format on stderr: human-readable, or one JSON object per line for schedulers.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// More log output from starpay-batch (-v debug, -vv trace); the HTTP and TLS libraries stay
    /// at warn. RUST_LOG overrides (e.g. RUST_LOG=debug for everything).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What run, retry and reconcile print on stdout: the table, or the run's result as one
    /// JSON document (the same object as `<reports_dir>/<job>-<run>-result.json`).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// The metrics file of a run, retry or reconcile (node-exporter textfile collector).
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Write Prometheus text-format metrics to this file (temporary file + rename) every
    /// --metrics-interval-secs during the run and once at its end, e.g.
    /// /var/lib/node_exporter/textfile/starpay-payouts.prom.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Seconds between metrics writes during a run.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub metrics_interval_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate and check merchant key pairs.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the stateful Starpay simulator on a loopback address until Ctrl-C.
    ///
    /// Serves every operation of the reference under /finance-payment-service/v1/..., plus
    /// GET /finance-payment-service/checkconnections and the test-only control routes under
    /// /_sim/ (see docs/SIMULATOR.md). Prints the base URL on stdout. Keeps everything in
    /// memory: restarting it forgets every order. Only loopback addresses are accepted.
    ///
    /// Example: starpay-batch sim --listen 127.0.0.1:8080 --seed 7 --fault http_502=0.05
    Sim(SimArgs),
    /// Run a payout job: validate the CSV, pre-flight, send signed payouts, resolve, report.
    ///
    /// The whole file is validated before anything is sent (errors name file, line and column;
    /// exit 1). Pre-flight checks the connection, the bank list and the balance. Each row gets a
    /// msgId stored in the job's SQLite database before its request leaves; unknown outcomes
    /// are resolved by query, never by a new msgId.
    ///
    /// Safe to re-run: running the same job on the same file resumes its open run; a finished
    /// run is refused unless --new-run. A lock stops a second process on the same job and
    /// database. Exit 0 all SUCCESS, 2 some FAILED/REVERSED/REJECTED, 3 some still
    /// PENDING/UNKNOWN/NOT_SENT/NEEDS_ATTENTION or interrupted (run again later), 1 the job
    /// could not run, 4 this file was already completed, 75 locked or Starpay unreachable (try
    /// again later). SIGTERM and SIGHUP stop like Ctrl-C. The run is marked finished only after
    /// its report is in place.
    ///
    /// Example: starpay-batch run jobs/demo-payouts.toml
    Run(RunArgs),
    /// Receive Starpay's signed notifications (5.5, 6.3, 6.5) for a job until a stop signal.
    ///
    /// A long-running service for the merchant's public notifyUrl (behind a reverse proxy that
    /// forwards to --listen). Every POST is verified with the job's platform public key(s) over
    /// the raw bytes, stored in the job's database, and, when it echoes a payout (msgId, mchId,
    /// amount), applied to the row; polling by `run` stays the fallback. Answers 200
    /// {"code":"200","message":"success"} once stored, 400 for a bad signature or mchId, 500 if
    /// it could not be stored. Takes no job lock: it shares the database with running jobs.
    /// Prints the listen address on stdout. SIGINT, SIGTERM, SIGHUP stop it (exit 0).
    ///
    /// Example: starpay-batch serve jobs/payouts.toml --listen 127.0.0.1:9011
    Serve(ServeArgs),
    /// Re-send the FAILED rows of a run with new msgIds; only query PENDING/UNKNOWN rows.
    ///
    /// Each FAILED row gets a new attempt (new msgId) that records which attempt it supersedes.
    /// Rows held under the AB0x rule, pending or unknown are only queried, never re-sent.
    ///
    /// Example: starpay-batch retry jobs/demo-payouts.toml --run 1
    Retry(RetryArgs),
    /// Re-check every row of one of our payout runs against Starpay and report drift.
    ///
    /// Queries each sent row (5.4, fresh msgId each time), puts it in a reconciliation category
    /// (MATCHED, REVERSED_AFTER_SUCCESS, STATE_MISMATCH, …) and applies verified drift to the
    /// store with an event (a SUCCESS that became REVERSED; a PENDING that settled). Safe to
    /// re-run: an interrupted reconcile resumes; a finished one starts a fresh check. Writes
    /// `<job>-reconcile-<payout run>-<pass run>.csv` and rewrites the payout run's report.
    ///
    /// Example: starpay-batch reconcile jobs/demo-payouts.toml --run 1
    Reconcile(ReconcileArgs),
    /// Rewrite one run's report, summary and details from the database, at any time.
    ///
    /// Works for payout runs and reconciliation runs (including `reconcile` passes). Reads the
    /// database only and sends nothing; safe while the job runs (it takes no job lock; writers
    /// of one report take turns). A changed file keeps its previous version beside it as
    /// `<name>.<time>.csv`. Use it when a report is missing or was deleted, or after changing
    /// `[report] timezone`.
    ///
    /// Example: starpay-batch report jobs/demo-payouts.toml --run 1
    Report(ReportArgs),
    /// Counts and totals per state for the runs of a job (reads the database only).
    ///
    /// Example: starpay-batch status jobs/demo-payouts.toml --run 1
    Status(StatusArgs),
    /// Lists the runs of a job: id, kind, input, started, finished, counts, last exit code
    /// (reads the database only).
    ///
    /// Example: starpay-batch runs jobs/demo-payouts.toml
    Runs(RunsArgs),
    /// Copy a SQLite database's whole history into an empty PostgreSQL store.
    ///
    /// Every run, row, attempt, msgId, event, reconciliation row, approval and notification,
    /// with their ids, and the database id and msgId counters (so msgIds never repeat), in one
    /// PostgreSQL transaction. The SQLite file is only read; it must be at this build's schema
    /// (run any command on it first). The target must hold no history. Stop every job on the
    /// SQLite database first, then point the job files at the URL (`database` or
    /// STARPAY_DATABASE_URL). Exit 0 copied, 1 refused (nothing copied).
    ///
    /// Example: starpay-batch migrate-store --from reports/payouts.db --to postgres://starpay@db/payouts
    MigrateStore(MigrateStoreArgs),
    /// One reference's whole history across runs: rows, attempts and msgIds, every event with
    /// its time, and the verified answers (reads the database only).
    ///
    /// Example: starpay-batch show jobs/demo-payouts.toml PAY-0001
    Show(ShowArgs),
    /// Record who prepared a payout file (the maker of maker-checker); sends nothing.
    ///
    /// Validates the file offline exactly as `run` does (earlier runs, bank names against the
    /// last list Starpay gave), prints its count, total, largest row, totals per bank and
    /// channel and SHA-256, and records the file's hash as prepared by NAME in the job's
    /// database. Under `[approval] four_eyes = true` someone else must then approve it.
    ///
    /// Example: starpay-batch stage jobs/payroll.toml --input march.csv --by "Ana Reyes"
    Stage(StageArgs),
    /// Approve a payout file's exact bytes (the checker), or revoke an approval; sends nothing.
    ///
    /// Validates the file offline exactly as `run` does, shows its figures (count, total,
    /// largest row, per bank and channel, SHA-256) and the spending caps it exceeds, then asks
    /// on a terminal to type the total to confirm (--yes skips this; without a terminal --yes
    /// is required). Records who, when, the hash, count and total, with an event; approvals are
    /// never deleted, and --revoke records a revocation. `run` refuses a file under
    /// `[approval] required = true` that is unapproved, changed since, older than
    /// max_age_hours, or (four_eyes) approved by who prepared it.
    ///
    /// Example: starpay-batch approve jobs/payroll.toml --input march.csv --by "Ben Cruz"
    Approve(ApproveArgs),
}

#[derive(Debug, Args)]
pub struct StageArgs {
    /// The payout job file (jobs/*.toml).
    pub job: PathBuf,
    /// Input CSV; overrides the job file's `input`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Who prepared the file.
    #[arg(long)]
    pub by: String,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The payout job file (jobs/*.toml).
    pub job: PathBuf,
    /// Input CSV; overrides the job file's `input`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Who approves (or revokes).
    #[arg(long)]
    pub by: String,
    /// Who prepared the file, when it was not staged with `stage`.
    #[arg(long)]
    pub prepared_by: Option<String>,
    /// Approve a file above the job's [spending] caps; the approval records which caps it
    /// covers.
    #[arg(long)]
    pub over_limits: bool,
    /// Do not ask for the typed confirmation (schedulers, scripts).
    #[arg(long)]
    pub yes: bool,
    /// Revoke the approval of this file instead (an event; the approval stays on record).
    #[arg(long)]
    pub revoke: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (jobs/*.toml).
    pub job: PathBuf,
    /// Input CSV; overrides the job file's `input`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Pay this file again even though an earlier run of it finished.
    #[arg(long)]
    pub new_run: bool,
    /// Report invalid rows as REJECTED and send the valid ones (default: any error stops).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Validate only: print the row count and total, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Pay again, on purpose, references whose every earlier attempt ended verified FAILED,
    /// REVERSED or REJECTED; each earlier msgId is queried live first and must still say so.
    #[arg(long)]
    pub repay: bool,
    /// Do not ask for the typed confirmation of a total above [spending] confirm_above on a
    /// terminal (schedulers rely on the approval instead).
    #[arg(long)]
    pub yes: bool,
    /// Also receive Starpay's notifications on this address while the job runs (see `serve`);
    /// the job's `starpay.notify_url` must lead here. Rows settle as notifications arrive;
    /// polling stays the fallback.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The job file (jobs/*.toml): its database, mchId and platform public key(s).
    pub job: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:9011 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The job file (jobs/*.toml).
    pub job: PathBuf,
    /// The run whose FAILED rows to re-send.
    #[arg(long)]
    pub run: i64,
    /// Also re-send rows that failed for beneficiary data (AC*, BE01, RC01), which normally
    /// fail again until the data is fixed (reference §9.2).
    #[arg(long)]
    pub include_beneficiary_errors: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The payout job file (jobs/*.toml).
    pub job: PathBuf,
    /// The payout run to re-check.
    #[arg(long)]
    pub run: i64,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The job file (jobs/*.toml).
    pub job: PathBuf,
    /// The run whose report to write.
    #[arg(long)]
    pub run: i64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job file (jobs/*.toml).
    pub job: PathBuf,
    /// One run (default: every run of the job).
    #[arg(long)]
    pub run: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The job file (jobs/*.toml).
    pub job: PathBuf,
}

#[derive(Debug, Args)]
pub struct MigrateStoreArgs {
    /// The SQLite database to copy (a job file's `database`).
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL store to copy into (`postgres://…`; created and migrated if needed).
    #[arg(long, env = "STARPAY_DATABASE_URL", hide_env_values = true)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The job file (jobs/*.toml).
    pub job: PathBuf,
    /// The reference (the input file's `reference` column).
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on (loopback only), e.g. 127.0.0.1:8080; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Simulator config file (TOML; unknown keys are errors). Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed of every random decision (overrides the config file).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Payout settlement delay in simulated milliseconds (overrides the config file).
    #[arg(long)]
    pub settle_delay_ms: Option<u64>,
    /// A fault setting KEY=VALUE, as in the config file's [faults] table (repeatable),
    /// e.g. --fault commit_then_drop=0.1 --fault latency_ms=50.
    #[arg(long = "fault", value_name = "KEY=VALUE")]
    pub faults: Vec<String>,
    /// Accept re-serialized requests too (compact order-preserving or key-sorted).
    #[arg(long)]
    pub lenient_signatures: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new 2048-bit merchant key pair and print the public key to hand to Starpay.
    ///
    /// Writes DIR/merchant-private.pem (PKCS#8 PEM, mode 0600) and DIR/merchant-public.pem
    /// (SubjectPublicKeyInfo PEM), then prints the public key as the single-line Base64 form
    /// Starpay's Java tooling expects. Refuses to overwrite existing files unless --force.
    ///
    /// Example: starpay-batch keys generate --out ./keys
    Generate(KeysGenerateArgs),
    /// Load a private and a public key, sign a probe and verify it; say what is wrong.
    ///
    /// Checks that each file loads (PKCS#8/PKCS#1 PEM or one-line Base64 DER), that the keys
    /// are RSA of at least 2048 bits, and that the public key belongs to the private key.
    /// Exit 0 when the pair works, 1 otherwise. Nothing is sent anywhere.
    ///
    /// Example: starpay-batch keys check --private-key samples/keys/TEST-ONLY-demo-merchant-private.pem
    ///          --public-key samples/keys/TEST-ONLY-demo-merchant-public.pem
    Check(KeysCheckArgs),
}

#[derive(Debug, Args)]
pub struct KeysGenerateArgs {
    /// Directory to write the two key files into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct KeysCheckArgs {
    /// Merchant private key file.
    #[arg(long, env = "STARPAY_PRIVATE_KEY_FILE")]
    pub private_key: PathBuf,
    /// The public key that should match it (what Starpay has registered).
    #[arg(long)]
    pub public_key: PathBuf,
}
