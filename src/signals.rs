//! Stop signals: SIGINT (Ctrl-C), SIGTERM (systemd stop, `TimeoutStopSec`, container runtimes,
//! `kill`) and SIGHUP (a closed terminal, some cron wrappers) all mean "stop starting new work".
//!
//! The first one asks a run to stop gracefully (in-flight requests finish, everything is
//! persisted, the report is written, exit 3); a second one, of any of the three, quits at once
//! (exit 3). Quitting at once is safe because every msgId is durable before its request leaves:
//! the next run resolves rows caught in flight by query.
//!
//! Once [`StopSignals::listen`] has run, these signals no longer kill the process by default
//! (tokio replaces the handler for the life of the process), so listen only while a command can
//! act on them, and keep listening until it ends.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The three stop signals, registered once so that a second signal is never lost.
pub struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    /// Registers the handlers. Needs a running tokio runtime.
    pub fn listen() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next stop signal and returns its name (`SIGINT`, `SIGTERM`, `SIGHUP`).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
