//! Job files (`jobs/*.toml`) plus the overrides the CLI passes in → one validated [`JobConfig`].
//!
//! Owns: the job-file format, its defaults (the reference's values) and its validation.
//! Must not: open keys, databases or CSVs, or talk to the network. The environment is read in
//! one place only, [`Overrides::from_env`], called by the CLI: `--input` and the `STARPAY_*`
//! variables reach [`load_job`] as [`Overrides`], so parsing and validation stay pure and
//! testable.
//!
//! Invariants of a [`JobConfig`]: every table rejected unknown keys (a typo never silently falls
//! back to a default); rates, bursts and timeouts are non-zero; concurrency is 1..=256; the
//! `mchId` is a valid [`MchId`]; the endpoint parsed; at least one platform key is configured.
//!
//! **Relative paths** written in a job file (`input`, `database`, `reports_dir`, key files,
//! `[sim] config`, and the demo-key defaults of `embedded-sim`) resolve against the **job
//! file's directory**, as docker compose and cargo do, so a job runs the same from any working
//! directory (cron, systemd). Paths from the command line (`--input`) and from the environment
//! (`STARPAY_PRIVATE_KEY_FILE`, `STARPAY_PLATFORM_PUBLIC_KEY_FILE`) resolve against the working
//! directory, like any other command-line path. `.` and `..` are removed lexically
//! (`jobs/../samples/x.csv` → `samples/x.csv`).
//!
//! Every waiting period of the resolve policy is a setting whose default is the reference's value
//! (`../shared/starpay-api.md` §12 rules 3, 4 and 10, §9.2), so tests and demos can run in seconds.
//!
//! Example (all keys; the defaults shown):
//! ```toml
//! kind = "payout"                     # or "repayment-recon", "disbursement-recon"
//! input = "../samples/payouts.csv"    # relative to this file's directory; --input overrides
//! database = "../reports/demo-payouts.db"
//! reports_dir = "../reports"
//!
//! [starpay]
//! endpoint = "embedded-sim"           # "uat", "prod" or a base URL; STARPAY_ENDPOINT overrides
//! mch_id = "101510000001"             # STARPAY_MCH_ID overrides
//! private_key = "keys/merchant-private.pem"        # STARPAY_PRIVATE_KEY_FILE overrides
//! platform_public_key = ["keys/platform-a.pem"]    # one path or a list; STARPAY_PLATFORM_PUBLIC_KEY_FILE overrides
//! notify_url = "https://merchant.example/starpay/notify"   # optional
//! strict_key_permissions = false      # true: refuse a private key readable by group/others
//!
//! [limits]
//! requests_per_second = 5
//! burst = 5                           # default: requests_per_second
//! concurrency = 4
//! request_timeout_secs = 20
//! connect_timeout_secs = 5
//! connect_retry_secs = 60             # start-up check (2.1) retried this long; then exit 75
//! lease_secs = 30                     # PostgreSQL: a runner's claim on rows (another runner
//!                                     # takes them over this long after it died)
//!
//! [resolve]
//! poll_schedule_secs = [30, 120, 300]
//! poll_interval_secs = 600
//! not_found_window_secs = 600
//! not_found_queries = 3
//! ab_hold_secs = 86400
//! stale_after_secs = 1800
//! deadline_secs = 600
//! max_resolve_secs = 259200
//!
//! [report]
//! timezone = "+08:00"                 # every report time: ISO 8601 with this UTC offset
//!
//! [approval]                          # issue 13; README "Approvals and limits"
//! required = false                    # true: `run` needs `approve JOB --by NAME` for the file's bytes
//! four_eyes = false                   # true: the approver must not be who prepared (staged) it
//! max_age_hours = 24                  # an older approval no longer lets a run start
//!
//! [spending]                          # caps per file (not [limits], which are rate limits)
//! max_total = "500000.00"             # PHP as decimal strings, never floats; every key optional
//! max_rows = 1000
//! max_row_amount = "50000.00"
//! confirm_above = "100000.00"         # `run` on a terminal above this total asks to type it
//! per_bank = { "GCash" = "200000.00" }
//!
//! [hooks]                             # optional; argv arrays, no shell (README "Hooks")
//! on_success = ["/usr/local/bin/notify", "ok"]     # exit 0
//! on_failure = ["hooks/post-to-chat.sh"]           # exit 1 or 2; relative to this file
//! on_attention = ["hooks/post-to-chat.sh"]         # exit 3
//! timeout_secs = 60                   # 1..=3600; then the hook's process group is killed
//!
//! [sim]                               # only with endpoint = "embedded-sim"
//! seed = 42
//! config = "samples/sim.toml"
//! ```

use std::fmt;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::domain::MchId;
use crate::engine::policy::ResolveSettings;
use crate::starpay::client::{ClientError, Environment};

/// `endpoint` value that selects the in-process simulator.
pub const EMBEDDED_SIM: &str = "embedded-sim";
/// Defaults used with `endpoint = "embedded-sim"` when the `[starpay]` keys are omitted
/// (`samples/keys/README.md`: public test material, never for real money).
pub const DEMO_MCH_ID: &str = "101510000001";
pub const DEMO_PRIVATE_KEY: &str = "samples/keys/TEST-ONLY-demo-merchant-private.pem";
pub const DEMO_PLATFORM_PUBLIC_KEY: &str = "samples/keys/TEST-ONLY-sim-platform-public.pem";

/// A job file is a few hundred bytes; refuse to read anything absurd (bounded everything).
const MAX_JOB_FILE_BYTES: u64 = 1024 * 1024;
/// Reference §4: `notifyUrl` ≤ 256 characters.
const MAX_NOTIFY_URL_LEN: usize = 256;
/// Upper bound on any waiting period in `[resolve]` (ten years).
pub const MAX_WAIT_SECS: u64 = 10 * 365 * 86_400;

/// Upper bound on in-flight requests; far above anything Starpay tolerates (§12 rule 8: 4).
pub const MAX_CONCURRENCY: u32 = 256;

/// What the CLI passes in on top of the file: `--input` and the `STARPAY_*` environment
/// variables (what differs between hosts; secrets never on the command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--input`: replaces the file's `input`.
    pub input: Option<PathBuf>,
    /// The value of `STARPAY_PRIVATE_KEY_FILE`: replaces `[starpay] private_key`.
    pub private_key_env: Option<PathBuf>,
    /// `STARPAY_ENDPOINT`: replaces `[starpay] endpoint`.
    pub endpoint_env: Option<String>,
    /// `STARPAY_MCH_ID`: replaces `[starpay] mch_id`.
    pub mch_id_env: Option<String>,
    /// `STARPAY_PLATFORM_PUBLIC_KEY_FILE` (one path, or several separated by `:`): replaces
    /// `[starpay] platform_public_key`.
    pub platform_public_key_env: Option<Vec<PathBuf>>,
    /// `STARPAY_DATABASE_URL`: replaces `database` (a `postgres://` URL selects PostgreSQL;
    /// a URL may carry a password, so it belongs in the environment rather than the file).
    pub database_url_env: Option<String>,
}

/// The environment variables that override a job file (README "Configuration by environment").
pub const ENV_ENDPOINT: &str = "STARPAY_ENDPOINT";
pub const ENV_MCH_ID: &str = "STARPAY_MCH_ID";
pub const ENV_PRIVATE_KEY_FILE: &str = "STARPAY_PRIVATE_KEY_FILE";
pub const ENV_PLATFORM_PUBLIC_KEY_FILE: &str = "STARPAY_PLATFORM_PUBLIC_KEY_FILE";
pub const ENV_DATABASE_URL: &str = "STARPAY_DATABASE_URL";

impl Overrides {
    /// `--input` plus the `STARPAY_*` variables of this process (an empty variable counts as
    /// unset). The only place that reads the environment for a job.
    pub fn from_env(input: Option<PathBuf>) -> Overrides {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let text = |name: &str| var(name).map(|v| v.to_string_lossy().trim().to_string());
        Overrides {
            input,
            private_key_env: var(ENV_PRIVATE_KEY_FILE).map(PathBuf::from),
            endpoint_env: text(ENV_ENDPOINT),
            mch_id_env: text(ENV_MCH_ID),
            platform_public_key_env: var(ENV_PLATFORM_PUBLIC_KEY_FILE)
                .map(|v| std::env::split_paths(&v).collect()),
            database_url_env: text(ENV_DATABASE_URL),
        }
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// The job file's stem (`jobs/demo-payouts.toml` → `demo-payouts`).
    pub job_name: String,
    pub kind: JobKind,
    pub input: PathBuf,
    /// A SQLite file, or a `postgres://` URL (PostgreSQL; `STARPAY_DATABASE_URL` overrides).
    /// Show it with [`JobConfig::database_shown`]: a URL may carry a password.
    pub database: PathBuf,
    pub reports_dir: PathBuf,
    pub starpay: StarpayConfig,
    pub limits: Limits,
    /// `[resolve]`: how unknown and non-final rows are chased (reference §12 rules 3, 4, 10);
    /// the type and its defaults are the engine's, written once.
    pub resolve: ResolveSettings,
    pub report: ReportSettings,
    pub sim: SimSettings,
    /// `[approval]` (issue 13): the rules are `engine::approval`'s.
    pub approval: crate::engine::approval::ApprovalSettings,
    /// `[spending]`: caps per payout file.
    pub spending: crate::engine::approval::Spending,
    pub hooks: HookSettings,
}

/// `[hooks]`: commands run after a run's report and result file are written (`ops::hooks`).
/// Each is an argv array run without a shell; a relative program path with a `/` resolves
/// against the job file's directory, a bare name is looked up on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// Exit 0.
    pub on_success: Option<Vec<String>>,
    /// Exit 1 (could not run to the end) and 2 (finished with failures).
    pub on_failure: Option<Vec<String>>,
    /// Exit 3 (rows unresolved or NEEDS_ATTENTION, or interrupted).
    pub on_attention: Option<Vec<String>>,
    /// A hook still running after this long is killed (its whole process group).
    pub timeout: Duration,
}

/// Default `[hooks] timeout_secs`.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 60;
/// Upper bound on `[hooks] timeout_secs` (an hour: a hook must not hold the job's lock forever).
pub const MAX_HOOK_TIMEOUT_SECS: u64 = 3600;

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            on_success: None,
            on_failure: None,
            on_attention: None,
            timeout: Duration::from_secs(DEFAULT_HOOK_TIMEOUT_SECS),
        }
    }
}

/// `[report]`: how reports are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportSettings {
    /// Offset of every time in a report (ISO 8601 with offset). Default Philippine time.
    pub timezone: chrono::FixedOffset,
}

/// Philippine time, UTC+08:00 (no daylight saving).
pub const DEFAULT_REPORT_TIMEZONE: &str = "+08:00";

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            // A constant within ±14:00: always valid.
            timezone: chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
        }
    }
}

/// `"+08:00"`, `"-05:30"`, `"+00:00"` or `"Z"` → a fixed offset (at most ±14:00).
pub fn parse_utc_offset(s: &str) -> Option<chrono::FixedOffset> {
    if s == "Z" {
        return chrono::FixedOffset::east_opt(0);
    }
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' || !matches!(b[0], b'+' | b'-') {
        return None;
    }
    let num = |t: &[u8]| -> Option<i32> {
        if t.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(t).ok()?.parse().ok()
        } else {
            None
        }
    };
    let (h, m) = (num(&b[1..3])?, num(&b[4..6])?);
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return None;
    }
    let secs = (h * 3600 + m * 60) * if b[0] == b'-' { -1 } else { 1 };
    chrono::FixedOffset::east_opt(secs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Payout,
    RepaymentRecon,
    DisbursementRecon,
}

impl JobKind {
    /// The kind of the runs this job creates.
    pub fn run_kind(self) -> crate::domain::RunKind {
        match self {
            JobKind::Payout => crate::domain::RunKind::Payout,
            JobKind::RepaymentRecon => crate::domain::RunKind::RepaymentRecon,
            JobKind::DisbursementRecon => crate::domain::RunKind::DisbursementRecon,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Payout => "payout",
            JobKind::RepaymentRecon => "repayment-recon",
            JobKind::DisbursementRecon => "disbursement-recon",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The simulator, started inside this process.
    EmbeddedSim,
    /// UAT, PROD or another base URL.
    Env(Environment),
}

impl Endpoint {
    /// Parses `embedded-sim`, `uat`, `prod` or a URL.
    pub fn parse(s: &str) -> Result<Endpoint, ClientError> {
        if s == EMBEDDED_SIM {
            Ok(Endpoint::EmbeddedSim)
        } else {
            Environment::parse(s).map(Endpoint::Env)
        }
    }
}

/// `[starpay]`. Holds key *paths* only; keys are loaded by `starpay::sign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarpayConfig {
    pub endpoint: Endpoint,
    pub mch_id: MchId,
    pub private_key: PathBuf,
    /// The accepted platform keys of the environment (at least one).
    pub platform_public_keys: Vec<PathBuf>,
    pub notify_url: Option<String>,
    /// Refuse (instead of warn about) a private key file readable by group or others.
    pub strict_key_permissions: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_second: NonZeroU32,
    pub burst: NonZeroU32,
    /// 1..=[`MAX_CONCURRENCY`].
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long the start-up connection check (2.1) keeps retrying a refused connection, a
    /// timeout or a 5xx before the command exits 75 (zero: one try).
    pub connect_retry: Duration,
    /// PostgreSQL, several runners on one job: how long a runner's claim on rows lasts
    /// without renewal (renewed every third of it while the runner lives).
    pub lease: Duration,
}

/// A dead runner's rows are taken over within half a minute.
const DEFAULT_LEASE_SECS: u64 = 30;
/// Longest lease (an hour).
const MAX_LEASE_SECS: u64 = 3600;

/// Reference §12 rule 8: 5 requests/s, 4 in flight.
const DEFAULT_RPS: NonZeroU32 = match NonZeroU32::new(5) {
    Some(v) => v,
    None => panic!("non-zero"),
};
const DEFAULT_CONCURRENCY: u32 = 4;
/// Reference §1: whole-request timeout 20 s, connect timeout 5 s.
const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 20;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
/// A night's job survives a minute of network trouble at start-up (issue 10, defect 6).
const DEFAULT_CONNECT_RETRY_SECS: u64 = 60;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: DEFAULT_RPS,
            burst: DEFAULT_RPS,
            concurrency: DEFAULT_CONCURRENCY as usize,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            connect_retry: Duration::from_secs(DEFAULT_CONNECT_RETRY_SECS),
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
        }
    }
}

/// `[sim]`: opaque settings handed to the embedded simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimSettings {
    pub seed: Option<u64>,
    pub config: Option<PathBuf>,
}

/// Loading a job failed. Every message names the job file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The message carries the cause's text, so the cause is not also a `#[source]` (an
    /// `{:#}` chain would print it twice).
    #[error("{}: cannot read job file: {cause}", file.display())]
    Read {
        file: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: job file is larger than {MAX_JOB_FILE_BYTES} bytes", file.display())]
    TooLarge { file: PathBuf },
    /// TOML syntax, an unknown key, a wrong type or a missing mandatory key. toml's message
    /// names the key and shows the line; it is in the message, so not also a `#[source]`.
    #[error("{}: {}", file.display(), one_line(&cause.to_string()))]
    Parse {
        file: PathBuf,
        cause: toml::de::Error,
    },
    /// The file parsed but some values are unusable; all of them are listed.
    #[error("{}: invalid job file:{}", file.display(), list_problems(problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

/// toml's multi-line message (position, the line, a caret, the reason) as one line:
/// `TOML parse error at line 1, column 1: inptu = "x.csv": unknown field `inptu`, expected …`.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '|' || c == '^' || c.is_whitespace()))
        .map(|l| {
            // "12 | text" → "text"
            match l.split_once(" | ") {
                Some((n, rest)) if n.trim().chars().all(|c| c.is_ascii_digit()) => rest.trim(),
                _ => l.trim_start_matches('|').trim(),
            }
        })
        .collect::<Vec<_>>()
        .join(": ")
}

fn list_problems(problems: &[ConfigProblem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

/// One unusable value; `key` is the dotted TOML key (`limits.concurrency`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("missing `{key}`: {why}")]
    Missing {
        key: &'static str,
        why: &'static str,
    },
    #[error("`{key}` must be greater than 0")]
    Zero { key: &'static str },
    #[error("`{key}` = {value} is out of range {min}..={max}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("`{key}` must be strictly ascending, got {values:?}")]
    NotAscending { key: &'static str, values: Vec<u64> },
    #[error("`starpay.endpoint` = {value:?}: {source}")]
    Endpoint {
        value: String,
        #[source]
        source: ClientError,
    },
    #[error("`starpay.notify_url` = {value:?}: {reason}")]
    NotifyUrl { value: String, reason: &'static str },
    #[error("`starpay.platform_public_key` is an empty list; name at least one key file")]
    NoPlatformKey,
    #[error("a [sim] table is only used with endpoint = \"embedded-sim\"; remove it (endpoint is {endpoint:?})")]
    SimWithoutSim { endpoint: String },
    #[error("the job file name has no usable stem (it names the job)")]
    NoJobName,
    #[error("`report.timezone` = {value:?}: write a UTC offset such as \"+08:00\" (Philippine time) or \"Z\"")]
    Timezone { value: String },
    #[error("`{}` = {}: {}", .0.key, .0.value, .0.reason)]
    Setting(crate::engine::approval::SettingProblem),
    #[error("`{key}` must be a non-empty list whose first element names the program, e.g. [\"/usr/local/bin/notify\", \"--channel\", \"payouts\"]")]
    HookCommand { key: &'static str },
    #[error("environment variable {var} = {value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
}

// ---- the file as written ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    kind: JobKind,
    input: Option<PathBuf>,
    database: PathBuf,
    reports_dir: PathBuf,
    starpay: RawStarpay,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    resolve: RawResolve,
    #[serde(default)]
    report: RawReport,
    sim: Option<RawSim>,
    #[serde(default)]
    approval: crate::engine::approval::RawApproval,
    #[serde(default)]
    spending: crate::engine::approval::RawSpending,
    #[serde(default)]
    hooks: RawHooks,
}

/// Adds an `OutOfRange` problem when `value` is not within `min..=max`.
fn check_range(
    problems: &mut Vec<ConfigProblem>,
    key: &'static str,
    value: u64,
    min: u64,
    max: u64,
) {
    if !(min..=max).contains(&value) {
        problems.push(ConfigProblem::OutOfRange {
            key,
            value,
            min,
            max,
        });
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHooks {
    on_success: Option<Vec<String>>,
    on_failure: Option<Vec<String>>,
    on_attention: Option<Vec<String>>,
    timeout_secs: u64,
}

impl Default for RawHooks {
    fn default() -> Self {
        RawHooks {
            on_success: None,
            on_failure: None,
            on_attention: None,
            timeout_secs: DEFAULT_HOOK_TIMEOUT_SECS,
        }
    }
}

impl RawHooks {
    fn into_settings(self, base: &Path, problems: &mut Vec<ConfigProblem>) -> HookSettings {
        let mut argv = |key: &'static str, v: Option<Vec<String>>| {
            let mut v = v?;
            if v.first().is_none_or(|p| p.trim().is_empty()) {
                problems.push(ConfigProblem::HookCommand { key });
                return None;
            }
            // `./notify.sh` or `hooks/notify.sh`: the job file's directory, like every other
            // path in it; `notify` alone: PATH.
            if v[0].contains('/') {
                v[0] = resolve_path(base, PathBuf::from(&v[0]))
                    .to_string_lossy()
                    .into_owned();
            }
            Some(v)
        };
        let on_success = argv("hooks.on_success", self.on_success);
        let on_failure = argv("hooks.on_failure", self.on_failure);
        let on_attention = argv("hooks.on_attention", self.on_attention);
        let timeout = self.timeout_secs;
        check_range(
            problems,
            "hooks.timeout_secs",
            timeout,
            1,
            MAX_HOOK_TIMEOUT_SECS,
        );
        HookSettings {
            on_success,
            on_failure,
            on_attention,
            timeout: Duration::from_secs(self.timeout_secs),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReport {
    timezone: String,
}

impl Default for RawReport {
    fn default() -> Self {
        RawReport {
            timezone: DEFAULT_REPORT_TIMEZONE.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStarpay {
    endpoint: String,
    mch_id: Option<MchId>,
    private_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "one_or_many")]
    platform_public_key: Option<Vec<PathBuf>>,
    notify_url: Option<String>,
    #[serde(default)]
    strict_key_permissions: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    requests_per_second: u32,
    burst: Option<u32>,
    concurrency: u32,
    request_timeout_secs: u64,
    connect_timeout_secs: u64,
    connect_retry_secs: u64,
    lease_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            requests_per_second: DEFAULT_RPS.get(),
            burst: None,
            concurrency: DEFAULT_CONCURRENCY,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            connect_retry_secs: DEFAULT_CONNECT_RETRY_SECS,
            lease_secs: DEFAULT_LEASE_SECS,
        }
    }
}

impl RawLimits {
    fn to_limits(&self) -> Result<Limits, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let rps = NonZeroU32::new(self.requests_per_second);
        if rps.is_none() {
            problems.push(ConfigProblem::Zero {
                key: "limits.requests_per_second",
            });
        }
        let burst = match self.burst {
            None => rps,
            Some(b) => {
                let b = NonZeroU32::new(b);
                if b.is_none() {
                    problems.push(ConfigProblem::Zero {
                        key: "limits.burst",
                    });
                }
                b
            }
        };
        for (key, v) in [
            ("limits.request_timeout_secs", self.request_timeout_secs),
            ("limits.connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if v == 0 {
                problems.push(ConfigProblem::Zero { key });
            }
        }
        let concurrency = u64::from(self.concurrency);
        for (key, value, min, max) in [
            (
                "limits.concurrency",
                concurrency,
                1,
                u64::from(MAX_CONCURRENCY),
            ),
            (
                "limits.connect_retry_secs",
                self.connect_retry_secs,
                0,
                MAX_WAIT_SECS,
            ),
            ("limits.lease_secs", self.lease_secs, 1, MAX_LEASE_SECS),
        ] {
            check_range(&mut problems, key, value, min, max);
        }
        match (rps, burst, problems.is_empty()) {
            (Some(requests_per_second), Some(burst), true) => Ok(Limits {
                requests_per_second,
                burst,
                // Range-checked above; u32 → usize is lossless on every supported target.
                concurrency: self.concurrency as usize,
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                connect_timeout: Duration::from_secs(self.connect_timeout_secs),
                connect_retry: Duration::from_secs(self.connect_retry_secs),
                lease: Duration::from_secs(self.lease_secs),
            }),
            _ => Err(problems),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawResolve {
    poll_schedule_secs: Vec<u64>,
    poll_interval_secs: u64,
    not_found_window_secs: u64,
    not_found_queries: u32,
    ab_hold_secs: u64,
    stale_after_secs: u64,
    deadline_secs: u64,
    max_resolve_secs: u64,
}

impl Default for RawResolve {
    /// The engine's defaults (`ResolveSettings::default()`), in the job file's units.
    fn default() -> Self {
        let d = ResolveSettings::default();
        RawResolve {
            poll_schedule_secs: d.poll_schedule.iter().map(Duration::as_secs).collect(),
            poll_interval_secs: d.poll_interval.as_secs(),
            not_found_window_secs: d.not_found_window.as_secs(),
            not_found_queries: d.not_found_queries,
            ab_hold_secs: d.ab_hold.as_secs(),
            stale_after_secs: d.stale_after.as_secs(),
            deadline_secs: d.deadline.as_secs(),
            max_resolve_secs: d.max_resolve.as_secs(),
        }
    }
}

impl RawResolve {
    /// Pushes problems; the returned policy is meaningful only when none were pushed.
    fn to_policy(&self, problems: &mut Vec<ConfigProblem>) -> ResolveSettings {
        if !self.poll_schedule_secs.windows(2).all(|w| w[0] < w[1]) {
            problems.push(ConfigProblem::NotAscending {
                key: "resolve.poll_schedule_secs",
                values: self.poll_schedule_secs.clone(),
            });
        }
        // Zero is allowed for the holds and windows (tests: "immediately"), never for
        // intervals that would make the poller spin or a run end before it starts.
        for (key, v) in [
            ("resolve.poll_interval_secs", self.poll_interval_secs),
            ("resolve.deadline_secs", self.deadline_secs),
            ("resolve.max_resolve_secs", self.max_resolve_secs),
            (
                "resolve.not_found_queries",
                u64::from(self.not_found_queries),
            ),
        ] {
            if v == 0 {
                problems.push(ConfigProblem::Zero { key });
            }
        }
        // Upper bound on every waiting period: ten years. Larger values would overflow time
        // arithmetic downstream and are always a typo.
        let mut all: Vec<(&'static str, u64)> = vec![
            ("resolve.poll_interval_secs", self.poll_interval_secs),
            ("resolve.not_found_window_secs", self.not_found_window_secs),
            ("resolve.ab_hold_secs", self.ab_hold_secs),
            ("resolve.stale_after_secs", self.stale_after_secs),
            ("resolve.deadline_secs", self.deadline_secs),
            ("resolve.max_resolve_secs", self.max_resolve_secs),
        ];
        all.extend(
            self.poll_schedule_secs
                .iter()
                .map(|v| ("resolve.poll_schedule_secs", *v)),
        );
        for (key, value) in all {
            check_range(problems, key, value, 0, MAX_WAIT_SECS);
        }
        ResolveSettings {
            poll_schedule: self
                .poll_schedule_secs
                .iter()
                .copied()
                .map(Duration::from_secs)
                .collect(),
            poll_interval: Duration::from_secs(self.poll_interval_secs),
            not_found_window: Duration::from_secs(self.not_found_window_secs),
            not_found_queries: self.not_found_queries,
            ab_hold: Duration::from_secs(self.ab_hold_secs),
            stale_after: Duration::from_secs(self.stale_after_secs),
            deadline: Duration::from_secs(self.deadline_secs),
            max_resolve: Duration::from_secs(self.max_resolve_secs),
            ..ResolveSettings::default()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    seed: Option<u64>,
    config: Option<PathBuf>,
}

/// `platform_public_key = "a.pem"` or `platform_public_key = ["a.pem", "b.pem"]` (reference
/// §1: the accepted platform keys of an environment; a list allows a key rotation).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<PathBuf>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key file path or a list of key file paths")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![PathBuf::from(v)])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(p) = seq.next_element::<PathBuf>()? {
                out.push(p);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V).map(Some)
}

// ---- loading ------------------------------------------------------------------------------

impl JobConfig {
    /// The database for messages: the path, or the URL with its password hidden.
    pub fn database_shown(&self) -> String {
        if crate::store::is_postgres_url(&self.database) {
            crate::store::pg::redact(&self.database.to_string_lossy())
        } else {
            self.database.display().to_string()
        }
    }
}

/// Reads and validates a job file. `overrides` carry `--input` and `STARPAY_PRIVATE_KEY_FILE`.
pub fn load_job(path: &Path, overrides: &Overrides) -> Result<JobConfig, ConfigError> {
    let file = path.to_path_buf();
    let read_err = |cause| ConfigError::Read {
        file: file.clone(),
        cause,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    f.take(MAX_JOB_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_JOB_FILE_BYTES {
        return Err(ConfigError::TooLarge { file });
    }
    parse_job(path, &text, overrides)
}

/// [`load_job`] on text already read; `path` names the file in errors and gives the job name.
pub fn parse_job(path: &Path, text: &str, overrides: &Overrides) -> Result<JobConfig, ConfigError> {
    let file = path.to_path_buf();
    let raw: RawJob = toml::from_str(text).map_err(|cause| ConfigError::Parse {
        file: file.clone(),
        cause,
    })?;
    validate(raw, path, overrides).map_err(|problems| ConfigError::Invalid { file, problems })
}

fn validate(
    raw: RawJob,
    path: &Path,
    overrides: &Overrides,
) -> Result<JobConfig, Vec<ConfigProblem>> {
    let mut problems = Vec::new();

    let job_name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if job_name.is_none() {
        problems.push(ConfigProblem::NoJobName);
    }

    // Relative paths written in the file resolve against the file's directory; `--input` and
    // the environment's paths against the working directory (module docs).
    let base = path.parent().unwrap_or(Path::new(""));
    let in_file = |p: PathBuf| resolve_path(base, p);
    let input = overrides.input.clone().or(raw.input.map(in_file));
    if input.is_none() {
        problems.push(ConfigProblem::Missing {
            key: "input",
            why: "name the CSV file in the job file or pass --input",
        });
    }

    let starpay = validate_starpay(raw.starpay, base, overrides, &mut problems);

    if let (Some(sp), Some(_)) = (&starpay, &raw.sim) {
        if let Endpoint::Env(env) = &sp.endpoint {
            problems.push(ConfigProblem::SimWithoutSim {
                endpoint: env.base_url().to_string(),
            });
        }
    }

    let limits = match raw.limits.to_limits() {
        Ok(l) => Some(l),
        Err(p) => {
            problems.extend(p);
            None
        }
    };
    let resolve = raw.resolve.to_policy(&mut problems);
    let report = match parse_utc_offset(&raw.report.timezone) {
        Some(timezone) => ReportSettings { timezone },
        None => {
            problems.push(ConfigProblem::Timezone {
                value: raw.report.timezone.clone(),
            });
            ReportSettings::default()
        }
    };
    let mut setting_problems = Vec::new();
    let approval = raw.approval.validate(&mut setting_problems);
    let spending = raw.spending.validate(&mut setting_problems);
    problems.extend(setting_problems.into_iter().map(ConfigProblem::Setting));
    let hooks = raw.hooks.into_settings(base, &mut problems);
    let sim = raw
        .sim
        .map(|s| SimSettings {
            seed: s.seed,
            config: s.config.map(in_file),
        })
        .unwrap_or_default();

    match (job_name, input, starpay, limits, problems.is_empty()) {
        (Some(job_name), Some(input), Some(starpay), Some(limits), true) => Ok(JobConfig {
            job_name,
            kind: raw.kind,
            input,
            // A `postgres://` URL is not a path: never joined to the job file's folder.
            database: match overrides.database_url_env.clone() {
                Some(url) => PathBuf::from(url),
                None if crate::store::is_postgres_url(&raw.database) => raw.database,
                None => in_file(raw.database),
            },
            reports_dir: in_file(raw.reports_dir),
            starpay,
            limits,
            resolve,
            report,
            sim,
            approval,
            spending,
            hooks,
        }),
        _ => Err(problems),
    }
}

/// `base` joined with `p` unless `p` is absolute, with `.` and `..` removed lexically (a `..`
/// after a normal component cancels it; as cargo does, symlinks are not followed).
pub fn resolve_path(base: &Path, p: PathBuf) -> PathBuf {
    use std::path::Component;
    if p.is_absolute() {
        return p;
    }
    let joined = base.join(p);
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// The `[starpay]` table (with the environment's overrides) → `StarpayConfig`, every problem
/// pushed, none returned early.
///
/// Longer than ~100 lines on purpose: one block per key of the table (endpoint, mchId, the
/// private key, the platform keys, notify URL, key permissions), each resolving its override,
/// its path against the job file's directory and its checks, so all of one key is in one place.
fn validate_starpay(
    raw: RawStarpay,
    base: &Path,
    overrides: &Overrides,
    problems: &mut Vec<ConfigProblem>,
) -> Option<StarpayConfig> {
    let endpoint_text = overrides
        .endpoint_env
        .clone()
        .unwrap_or_else(|| raw.endpoint.clone());
    let endpoint = match Endpoint::parse(endpoint_text.trim()) {
        Ok(e) => Some(e),
        Err(source) if overrides.endpoint_env.is_some() => {
            problems.push(ConfigProblem::Env {
                var: ENV_ENDPOINT,
                value: endpoint_text.clone(),
                reason: source.to_string(),
            });
            None
        }
        Err(source) => {
            problems.push(ConfigProblem::Endpoint {
                value: raw.endpoint.clone(),
                source,
            });
            None
        }
    };
    let env_mch_id = match &overrides.mch_id_env {
        None => None,
        Some(v) => match MchId::new(v.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(ConfigProblem::Env {
                    var: ENV_MCH_ID,
                    value: v.clone(),
                    reason: e.to_string(),
                });
                return None;
            }
        },
    };
    let in_file = |p: PathBuf| resolve_path(base, p);
    let sim = matches!(endpoint, Some(Endpoint::EmbeddedSim));
    let required = "required unless endpoint = \"embedded-sim\"";

    let mch_id = match (env_mch_id.or(raw.mch_id), sim) {
        (Some(m), _) => Some(m),
        (None, true) => MchId::new(DEMO_MCH_ID).ok(),
        (None, false) => {
            problems.push(ConfigProblem::Missing {
                key: "starpay.mch_id",
                why: required,
            });
            None
        }
    };
    let private_key = match (
        overrides
            .private_key_env
            .clone()
            .or(raw.private_key.map(in_file)),
        sim,
    ) {
        (Some(p), _) => Some(p),
        (None, true) => Some(in_file(PathBuf::from(DEMO_PRIVATE_KEY))),
        (None, false) => {
            problems.push(ConfigProblem::Missing {
                key: "starpay.private_key",
                why:
                    "required unless endpoint = \"embedded-sim\" (or set STARPAY_PRIVATE_KEY_FILE)",
            });
            None
        }
    };
    let file_keys = raw
        .platform_public_key
        .map(|keys| keys.into_iter().map(in_file).collect::<Vec<_>>());
    let platform_public_keys = match (overrides.platform_public_key_env.clone().or(file_keys), sim)
    {
        (Some(keys), _) if keys.is_empty() => {
            problems.push(ConfigProblem::NoPlatformKey);
            None
        }
        (Some(keys), _) => Some(keys),
        (None, true) => Some(vec![in_file(PathBuf::from(DEMO_PLATFORM_PUBLIC_KEY))]),
        (None, false) => {
            problems.push(ConfigProblem::Missing {
                key: "starpay.platform_public_key",
                why: required,
            });
            None
        }
    };
    if let Some(u) = &raw.notify_url {
        if let Err(reason) = check_notify_url(u) {
            problems.push(ConfigProblem::NotifyUrl {
                value: u.clone(),
                reason,
            });
        }
    }
    Some(StarpayConfig {
        endpoint: endpoint?,
        mch_id: mch_id?,
        private_key: private_key?,
        platform_public_keys: platform_public_keys?,
        notify_url: raw.notify_url,
        strict_key_permissions: raw.strict_key_permissions,
    })
}

/// Reference §4: `notifyUrl` is `http(s)://…`, ≤ 256 characters.
fn check_notify_url(u: &str) -> Result<(), &'static str> {
    if u.len() > MAX_NOTIFY_URL_LEN {
        return Err("longer than 256 characters");
    }
    match url::Url::parse(u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err("must be an http:// or https:// URL with a host"),
        Err(_) => Err("not a URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of the minimal simulator job with `extra` appended.
    fn error_with(extra: &str) -> String {
        parse(&format!("{MINIMAL_SIM}{extra}"))
            .unwrap_err()
            .to_string()
    }

    const MINIMAL_SIM: &str = r#"
kind = "payout"
input = "samples/payouts.csv"
database = "reports/x.db"
reports_dir = "reports"
[starpay]
endpoint = "embedded-sim"
"#;

    /// A PROD job's text up to and including its `[starpay]` line's `endpoint`.
    fn prod_head() -> String {
        let paths = "input = \"in.csv\"\ndatabase = \"x.db\"\nreports_dir = \"out\"\n";
        format!("kind = \"payout\"\n{paths}[starpay]\nendpoint = \"prod\"\n")
    }

    /// A complete PROD job.
    fn prod() -> String {
        prod_head()
            + "mch_id = \"105510000001\"\nprivate_key = \"keys/merchant.pem\"\n"
            + "platform_public_key = \"keys/prod-platform.pem\"\n"
    }

    fn parse(text: &str) -> Result<JobConfig, ConfigError> {
        parse_job(Path::new("jobs/test-job.toml"), text, &Overrides::default())
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_reference() {
        let job = parse(MINIMAL_SIM).unwrap();
        assert_eq!(job.job_name, "test-job");
        assert_eq!(job.kind, JobKind::Payout);
        // Relative paths resolve against the job file's directory (`jobs/`), defaults too.
        assert_eq!(job.input, PathBuf::from("jobs/samples/payouts.csv"));
        assert_eq!(job.database, PathBuf::from("jobs/reports/x.db"));
        assert_eq!(job.reports_dir, PathBuf::from("jobs/reports"));
        assert_eq!(job.starpay.endpoint, Endpoint::EmbeddedSim);
        assert_eq!(job.starpay.mch_id.as_str(), DEMO_MCH_ID);
        assert_eq!(
            job.starpay.private_key,
            Path::new("jobs").join(DEMO_PRIVATE_KEY)
        );
        assert_eq!(
            job.starpay.platform_public_keys,
            vec![Path::new("jobs").join(DEMO_PLATFORM_PUBLIC_KEY)]
        );
        assert!(!job.starpay.strict_key_permissions);
        assert_eq!(job.limits.connect_retry, Duration::from_secs(60));
        assert_eq!(job.starpay.notify_url, None);
        let l = &job.limits;
        assert_eq!(l.requests_per_second.get(), 5);
        assert_eq!(l.burst.get(), 5);
        assert_eq!(l.concurrency, 4);
        assert_eq!(l.request_timeout, Duration::from_secs(20));
        assert_eq!(l.connect_timeout, Duration::from_secs(5));
        assert_eq!(*l, Limits::default());
        let r = &job.resolve;
        assert_eq!(
            r.poll_schedule,
            [30, 120, 300].map(Duration::from_secs).to_vec()
        );
        assert_eq!(r.poll_interval, Duration::from_secs(600));
        assert_eq!(r.not_found_window, Duration::from_secs(600));
        assert_eq!(r.not_found_queries, 3);
        assert_eq!(r.ab_hold, Duration::from_secs(86_400));
        assert_eq!(r.stale_after, Duration::from_secs(1_800));
        assert_eq!(r.deadline, Duration::from_secs(600));
        assert_eq!(r.max_resolve, Duration::from_secs(259_200));
        assert_eq!(*r, ResolveSettings::default());
        assert_eq!(job.sim, SimSettings::default());
    }

    #[test]
    fn burst_defaults_to_rate_and_values_are_read() {
        let text = format!(
            "{MINIMAL_SIM}notify_url = \"http://127.0.0.1:9000/n\"\n\
             [limits]\nrequests_per_second = 12\nconcurrency = 256\n\
             [resolve]\npoll_schedule_secs = [0, 1]\npoll_interval_secs = 2\nab_hold_secs = 0\n\
             [sim]\nseed = 7\nconfig = \"samples/sim.toml\"\n"
        );
        let job = parse(&text).unwrap();
        assert_eq!(job.limits.requests_per_second.get(), 12);
        assert_eq!(job.limits.burst.get(), 12);
        assert_eq!(job.limits.concurrency, 256);
        assert_eq!(
            job.resolve.poll_schedule,
            vec![Duration::ZERO, Duration::from_secs(1)]
        );
        assert_eq!(job.resolve.ab_hold, Duration::ZERO);
        assert_eq!(job.sim.seed, Some(7));
        assert_eq!(job.sim.config, Some(PathBuf::from("jobs/samples/sim.toml")));
        assert_eq!(
            job.starpay.notify_url.as_deref(),
            Some("http://127.0.0.1:9000/n")
        );
    }

    #[test]
    fn hooks_are_argv_arrays_relative_to_the_job_file() {
        let job = parse(MINIMAL_SIM).unwrap();
        assert_eq!(job.hooks, HookSettings::default());
        let text = format!(
            "{MINIMAL_SIM}[hooks]\non_success = [\"notify\", \"ok\"]\n\
             on_failure = [\"hooks/chat.sh\"]\ntimeout_secs = 5\n"
        );
        let job = parse(&text).unwrap();
        assert_eq!(
            job.hooks.on_success,
            Some(vec!["notify".into(), "ok".into()])
        );
        assert_eq!(
            job.hooks.on_failure,
            Some(vec!["jobs/hooks/chat.sh".into()])
        );
        assert_eq!(job.hooks.on_attention, None);
        assert_eq!(job.hooks.timeout, Duration::from_secs(5));
        let p = problems(&format!(
            "{MINIMAL_SIM}[hooks]\non_attention = []\ntimeout_secs = 0\n"
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p
            .iter()
            .any(|p| p.to_string().contains("hooks.on_attention")));
        assert!(p
            .iter()
            .any(|p| p.to_string().contains("hooks.timeout_secs")));
        let err = parse(&format!("{MINIMAL_SIM}[hooks]\non_sucess = [\"x\"]\n")).unwrap_err();
        assert!(err.to_string().contains("on_sucess"), "{err}");
    }

    #[test]
    fn other_kinds_parse() {
        for (k, want) in [
            ("repayment-recon", JobKind::RepaymentRecon),
            ("disbursement-recon", JobKind::DisbursementRecon),
        ] {
            let text = MINIMAL_SIM.replace("\"payout\"", &format!("\"{k}\""));
            assert_eq!(parse(&text).unwrap().kind, want);
        }
        let err = parse(&MINIMAL_SIM.replace("\"payout\"", "\"payouts\"")).unwrap_err();
        assert!(err.to_string().contains("payouts"), "{err}");
    }

    #[test]
    fn unknown_key_at_top_level_names_key_and_file() {
        let err = parse(&format!("inptu = \"x.csv\"\n{MINIMAL_SIM}")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("jobs/test-job.toml"), "{msg}");
        assert!(msg.contains("inptu"), "{msg}");
    }

    #[test]
    fn unknown_key_in_every_table_is_an_error() {
        for (table, key) in [
            ("starpay", "mchid"),
            ("limits", "request_per_second"),
            ("resolve", "poll_interval"),
            ("report", "time_zone"),
            ("sim", "sed"),
        ] {
            let text = if table == "starpay" {
                format!("{MINIMAL_SIM}{key} = 1\n")
            } else {
                format!("{MINIMAL_SIM}[{table}]\n{key} = 1\n")
            };
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains(key), "{table}: {msg}");
            assert!(msg.contains("jobs/test-job.toml"), "{table}: {msg}");
            assert!(msg.contains("unknown field"), "{table}: {msg}");
        }
    }

    #[test]
    fn report_timezone_defaults_to_philippine_time_and_is_checked() {
        let cfg = parse(MINIMAL_SIM).unwrap();
        assert_eq!(cfg.report.timezone.local_minus_utc(), 8 * 3600);
        let cfg = parse(&format!("{MINIMAL_SIM}[report]\ntimezone = \"-05:30\"\n")).unwrap();
        assert_eq!(cfg.report.timezone.local_minus_utc(), -(5 * 3600 + 1800));
        let cfg = parse(&format!("{MINIMAL_SIM}[report]\ntimezone = \"Z\"\n")).unwrap();
        assert_eq!(cfg.report.timezone.local_minus_utc(), 0);
        for bad in ["Asia/Manila", "+8", "+08:60", "+15:00", "08:00", ""] {
            let msg = error_with(&format!("[report]\ntimezone = \"{bad}\"\n"));
            assert!(msg.contains("report.timezone"), "{bad}: {msg}");
        }
    }

    #[test]
    fn bad_values_are_all_listed() {
        let text = r#"
kind = "payout"
input = "in.csv"
database = "x.db"
reports_dir = "out"
[starpay]
endpoint = "http://example.com"
notify_url = "ftp://x"
platform_public_key = []
[limits]
requests_per_second = 0
burst = 0
concurrency = 257
request_timeout_secs = 0
connect_timeout_secs = 0
[resolve]
poll_schedule_secs = [30, 30]
poll_interval_secs = 0
not_found_queries = 0
deadline_secs = 0
max_resolve_secs = 0
"#;
        let p = problems(text);
        let msgs: Vec<String> = p.iter().map(ToString::to_string).collect();
        let all = msgs.join("\n");
        for needle in [
            "starpay.endpoint",
            "plain http",
            "starpay.notify_url",
            "platform_public_key",
            "limits.requests_per_second",
            "limits.burst",
            "limits.concurrency` = 257",
            "limits.request_timeout_secs",
            "limits.connect_timeout_secs",
            "resolve.poll_schedule_secs",
            "resolve.poll_interval_secs",
            "resolve.not_found_queries",
            "resolve.deadline_secs",
            "resolve.max_resolve_secs",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let whole = parse(text).unwrap_err().to_string();
        assert!(
            whole.starts_with("jobs/test-job.toml: invalid job file:"),
            "{whole}"
        );
    }

    #[test]
    fn waiting_periods_have_an_upper_bound() {
        let text = format!("{MINIMAL_SIM}[resolve]\ndeadline_secs = 18446744073709551615\nab_hold_secs = 400000000\n");
        let all: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
        let all = all.join("\n");
        assert!(all.contains("resolve.deadline_secs"), "{all}");
        assert!(all.contains("resolve.ab_hold_secs"), "{all}");
    }

    #[test]
    fn bad_mch_id_and_wrong_types_are_parse_errors() {
        let msg = error_with("mch_id = \"1015-1\"\n");
        assert!(msg.contains("mchId") && msg.contains("1015-1"), "{msg}");
        let msg = error_with("[limits]\nconcurrency = -1\n");
        assert!(msg.contains("concurrency"), "{msg}");
        let msg = error_with("platform_public_key = 5\n");
        assert!(msg.contains("key file path"), "{msg}");
    }

    #[test]
    fn prod_needs_its_keys_and_merchant() {
        let job = parse(&prod()).unwrap();
        assert_eq!(job.starpay.endpoint, Endpoint::Env(Environment::Prod));
        assert_eq!(
            job.starpay.private_key,
            PathBuf::from("jobs/keys/merchant.pem")
        );

        let text = prod_head();
        let all: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
        for key in [
            "starpay.mch_id",
            "starpay.private_key",
            "starpay.platform_public_key",
        ] {
            assert!(
                all.iter()
                    .any(|m| m.starts_with(&format!("missing `{key}`"))),
                "{key}: {all:?}"
            );
        }
    }

    #[test]
    fn env_private_key_overrides_file_and_satisfies_requirement() {
        let ov = Overrides {
            input: None,
            private_key_env: Some(PathBuf::from("/secure/key.pem")),
            ..Overrides::default()
        };
        let job = parse_job(Path::new("jobs/p.toml"), &prod(), &ov).unwrap();
        assert_eq!(job.starpay.private_key, PathBuf::from("/secure/key.pem"));

        let without_key = prod().replace("private_key = \"keys/merchant.pem\"\n", "");
        assert!(parse(&without_key).is_err());
        let job = parse_job(Path::new("jobs/p.toml"), &without_key, &ov).unwrap();
        assert_eq!(job.starpay.private_key, PathBuf::from("/secure/key.pem"));
    }

    #[test]
    fn input_flag_overrides_and_input_is_required_somewhere() {
        let ov = Overrides {
            input: Some(PathBuf::from("other.csv")),
            ..Overrides::default()
        };
        let job = parse_job(Path::new("jobs/p.toml"), MINIMAL_SIM, &ov).unwrap();
        assert_eq!(job.input, PathBuf::from("other.csv"));

        let no_input = MINIMAL_SIM.replace("input = \"samples/payouts.csv\"\n", "");
        let p = problems(&no_input);
        assert!(p[0].to_string().contains("--input"), "{p:?}");
        let job = parse_job(Path::new("jobs/p.toml"), &no_input, &ov).unwrap();
        assert_eq!(job.input, PathBuf::from("other.csv"));
    }

    #[test]
    fn platform_key_list_and_url_endpoint() {
        let text = prod()
            .replace(
                "\"prod\"",
                "\"https://proxy.example/finance-payment-service/\"",
            )
            .replace(
                "platform_public_key = \"keys/prod-platform.pem\"",
                "platform_public_key = [\"a.pem\", \"b.pem\"]",
            );
        let job = parse(&text).unwrap();
        assert_eq!(
            job.starpay.platform_public_keys,
            vec![PathBuf::from("jobs/a.pem"), PathBuf::from("jobs/b.pem")]
        );
        assert_eq!(
            job.starpay.endpoint,
            Endpoint::Env(Environment::Url(
                "https://proxy.example/finance-payment-service".into()
            ))
        );
    }

    #[test]
    fn sim_table_with_a_real_endpoint_is_refused() {
        let p = problems(&format!("{}[sim]\nseed = 1\n", prod()));
        assert!(
            matches!(p[..], [ConfigProblem::SimWithoutSim { .. }]),
            "{p:?}"
        );
    }

    #[test]
    fn missing_mandatory_top_level_key_names_it() {
        let msg = parse(&MINIMAL_SIM.replace("database = \"reports/x.db\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("database") && msg.contains("jobs/test-job.toml"),
            "{msg}"
        );
    }

    #[test]
    fn load_job_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nightly.toml");
        std::fs::write(&path, MINIMAL_SIM).unwrap();
        let job = load_job(&path, &Overrides::default()).unwrap();
        assert_eq!(job.job_name, "nightly");
        let missing = dir.path().join("nope.toml");
        let err = load_job(&missing, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn paths_resolve_against_the_job_file_and_overrides_against_the_cwd() {
        let text = prod()
            .replace("input = \"in.csv\"", "input = \"../data/in.csv\"")
            .replace("database = \"x.db\"", "database = \"/var/lib/sp/x.db\"");
        let job = parse_job(
            Path::new("/etc/sp/jobs/n.toml"),
            &text,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(job.input, PathBuf::from("/etc/sp/data/in.csv"));
        assert_eq!(job.database, PathBuf::from("/var/lib/sp/x.db"));
        assert_eq!(job.reports_dir, PathBuf::from("/etc/sp/jobs/out"));
        assert_eq!(
            job.starpay.private_key,
            PathBuf::from("/etc/sp/jobs/keys/merchant.pem")
        );
        // A job file named without a directory: paths stay relative to the working directory.
        let job = parse_job(Path::new("n.toml"), &text, &Overrides::default()).unwrap();
        assert_eq!(job.input, PathBuf::from("../data/in.csv"));
        let ov = Overrides {
            input: Some(PathBuf::from("mine.csv")),
            private_key_env: Some(PathBuf::from("k.pem")),
            platform_public_key_env: Some(vec![PathBuf::from("p1.pem"), PathBuf::from("p2.pem")]),
            ..Overrides::default()
        };
        let job = parse_job(Path::new("/etc/sp/jobs/n.toml"), &text, &ov).unwrap();
        assert_eq!(job.input, PathBuf::from("mine.csv"));
        assert_eq!(job.starpay.private_key, PathBuf::from("k.pem"));
        assert_eq!(
            job.starpay.platform_public_keys,
            vec![PathBuf::from("p1.pem"), PathBuf::from("p2.pem")]
        );
    }

    #[test]
    fn environment_overrides_endpoint_and_merchant() {
        let ov = Overrides {
            endpoint_env: Some("http://127.0.0.1:9/finance-payment-service".into()),
            mch_id_env: Some("105510000009".into()),
            ..Overrides::default()
        };
        let job = parse_job(Path::new("jobs/p.toml"), &prod(), &ov).unwrap();
        assert_eq!(job.starpay.mch_id.as_str(), "105510000009");
        assert_eq!(
            job.starpay.endpoint,
            Endpoint::Env(Environment::Url(
                "http://127.0.0.1:9/finance-payment-service".into()
            ))
        );
        let bad = Overrides {
            mch_id_env: Some("10-55".into()),
            endpoint_env: Some("ftp://x".into()),
            ..Overrides::default()
        };
        let msg = parse_job(Path::new("jobs/p.toml"), &prod(), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("STARPAY_MCH_ID") && msg.contains("10-55"),
            "{msg}"
        );
        assert!(msg.contains("STARPAY_ENDPOINT"), "{msg}");
    }

    #[test]
    fn toml_errors_are_one_line_without_repetition() {
        let err = parse(&format!("inptu = \"x.csv\"\n{MINIMAL_SIM}")).unwrap_err();
        let chained = format!("{:#}", anyhow::Error::from(err));
        assert!(!chained.contains('\n'), "{chained}");
        assert_eq!(chained.matches("unknown field").count(), 1, "{chained}");
        let dir = tempfile::tempdir().unwrap();
        let err = load_job(&dir.path().join("nope.toml"), &Overrides::default()).unwrap_err();
        let chained = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(chained.matches("os error 2").count(), 1, "{chained}");
    }

    #[test]
    fn demo_job_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/demo-payouts.toml");
        let job = load_job(&path, &Overrides::default()).unwrap();
        assert_eq!(job.job_name, "demo-payouts");
        assert_eq!(job.starpay.endpoint, Endpoint::EmbeddedSim);
        assert!(
            job.resolve.deadline <= Duration::from_secs(120),
            "the demo stays quick"
        );
    }
}
