//! starpay-batch: a batch job runner for the Starpay Merchant Disbursement API.
//!
//! # Layout
//! - `domain`: money (`Centavos`), identifiers (`MsgId`, `MchId`), `TrxState`, our `RowState`
//!   and the stored event kinds (`EventKind`); pure.
//! - `engine`: `policy` (pure decisions: code → retry / query / stop), `transition` (the one
//!   pure transition function of a payout row, table-tested), `stop` (`StopReason`), `pool`
//!   (shared limiter, in-flight bound, stop signal), `payout` and `recon` (the I/O around them).
//! - `starpay`: the protocol: `model` (typed requests/responses), `sign` (canonical bytes, keys,
//!   signatures: the only module that sees private keys), `codes` (code catalogue as data),
//!   `client` (one signed attempt, verified answer; no retry).
//! - `config`: job files (`jobs/*.toml`) + overrides → one validated `JobConfig`; unknown keys
//!   are errors.
//! - `input`: CSV readers per job kind (`input::payout`); every row error with file, line and
//!   column.
//! - `server`: `sim`, the stateful Starpay simulator (state machines, faults, notifications,
//!   `/_sim/` control routes; guide in `docs/SIMULATOR.md`).
//! - `report`: the CSV reports (report, summary, run details) and what a row's state means to
//!   a reader (`ReportState`); `cmd::report` writes them for every command.
//! - `cli`: the clap command tree; `cmd`: one module per command.
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
pub mod input;
pub mod logging;
pub mod report;
pub mod server;
pub mod signals;
pub mod starpay;
pub mod store;
