//! The command tree (clap derive). Validates values; opens nothing.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "starpay-batch",
    version,
    about = "Batch payouts and reconciliation for the Starpay Merchant Disbursement API",
    long_about = "Batch payouts and reconciliation for the Starpay Merchant Disbursement API.\n\n\
Every request is RSA-SHA256 signed; every answer is verified against the platform key. \
Results go to stdout, logs to stderr."
)]
pub struct Cli {
    /// Log format on stderr: human-readable, or one JSON object per line for schedulers.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
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
