//! starpay-batch: a batch job runner for the Starpay Merchant Disbursement API.
//!
//! # Layout (docs/ARCHITECTURE.md tells the life of a payout row through it)
//! Roughly from the bottom up; only `cmd` (and `main`) use `cmd`.
//! - `domain`: money (`Centavos`), identifiers (`MsgId`, `MchId`), `TrxState`, our `RowState`
//!   and the stored event kinds (`EventKind`); pure.
//! - `exit`: the process exit codes and the `Outcome` a run's rows give.
//! - `starpay`: the protocol: `model` (typed requests/responses), `sign` (canonical bytes, keys,
//!   signatures: the only module that sees private keys), `codes` (code catalogue as data),
//!   `signing_pool` (one signer thread per core; holds the key only as `sign`'s opaque handle),
//!   `client` (one signed attempt, verified answer; no retry).
//! - `input`: CSV readers per job kind (`input::payout`, `input::recon`); every row error with
//!   file, line and column.
//! - `store`: SQLite behind one writer thread, or PostgreSQL (`store::pg`, a `postgres://`
//!   database). `Store`'s named operations (`allocate_attempt`, `save_row`, `load_recon_run`,
//!   …; listed in `store::dispatch`) are its whole interface, one transaction each, forwarded
//!   to the backend; `rusqlite` and `tokio-postgres` appear nowhere else. `store::pg::claims`:
//!   several runners on one payout run (row claims with leases, the report claim, the shared
//!   GCRA rate row per mchId), PostgreSQL only, listed in `dispatch`'s `postgres_only!`.
//! - `engine`: the rules. `policy` (pure decisions: code → retry / query / stop),
//!   `transition` (the one pure transition function of a payout row, table-tested), `prepare`
//!   (rules before money moves: validation against earlier runs, the run's rows, balance, the
//!   retry plan), `approval` (approval of a file's exact bytes, four eyes, age, spending caps;
//!   pure, table-tested), `stop` (`StopReason`), `throttle` (shared limiter, in-flight bound,
//!   stop signal, backoff), `msgid` (the one msgId allocator), `clock` (the injected clock and
//!   jitter seed), `workers` (the one bounded worker pool both engines drive rows through),
//!   `runners` (a runner's id, lease and renewal when several share a run on PostgreSQL),
//!   `payout` and `recon` (the I/O around the rules: ask, persist, send).
//! - `config`: job files (`jobs/*.toml`) + overrides → one validated `JobConfig`; unknown keys
//!   are errors; its `[resolve]` defaults are the engine's.
//! - `report`: the CSV reports (report, summary, run details) and what a row's state means to
//!   a reader (`ReportState`); returns the run's `Outcome`. `report::html`: the self-contained
//!   HTML summary page beside them (maud, every value escaped). `report::notified`: a
//!   reconciliation report's comparison with the notifications the receiver stored.
//! - `server`: `accept`, the one HTTP accept loop with its connection limits (used by the
//!   simulator and the receiver); `sim`, the stateful Starpay simulator (one handler per
//!   operation in `sim::ops`, faults, notifications, `/_sim/` control routes; guide in
//!   `docs/SIMULATOR.md`).
//! - `receiver`: the notification receiver (5.5, 6.3, 6.5): an HTTP server with explicit
//!   limits; verifies over the raw bytes, stores every notification, applies a verified one that
//!   echoes a payout through `engine::transition` (`RowEvent::Notified`) in one store transaction.
//! - `cli`: the clap command tree; `cmd`: one file per command, sharing `cmd::context::JobContext`
//!   (job file, lock, runtime, store, client) and `cmd::drive::drive_and_report`.
//! - `ops`: what an unattended run leaves after its report: the result file (JSON), the
//!   job's `[hooks]`, the Prometheus metrics file.
//! - `logging`: tracing set-up (human or JSON; colour only on a terminal).
//! - `signals`: SIGINT, SIGTERM and SIGHUP as one stop request (first: graceful; second: now).
//!
//! The money rules this crate is built around are in `README.md` ("Safety model").

#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod engine;
pub mod exit;
pub mod input;
pub mod logging;
pub mod ops;
pub mod receiver;
pub mod report;
pub mod server;
pub mod signals;
pub mod starpay;
pub mod store;
