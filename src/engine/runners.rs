//! Several runners on one payout run (issue 14 part B, PostgreSQL): who this runner is, how
//! long its claims on rows last, and the task that renews them while it lives. The claims
//! themselves are store operations (`store::pg::claims`); the engine's `drive` feeds what it
//! claims to the same row driver as a single runner's (`PayoutEngine::drive_claimed`).
//!
//! Must not: decide anything about a row (a claimed row is driven by `transition` like any
//! other; a lease never changes a row's state).

use std::time::Duration;

use crate::store::Store;

/// This runner's identity and lease.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Unique per process: host, process id and a random part (a restarted runner is a new
    /// runner; its predecessor's leases expire).
    pub id: String,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
}

impl RunnerSettings {
    pub fn new(lease: Duration) -> RunnerSettings {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        RunnerSettings {
            id: format!(
                "{host}/{}/{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            lease: lease.max(Duration::from_secs(1)),
        }
    }

    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// How often leases are renewed: three times per lease (two renewals may fail or be late
    /// before another runner can take the rows over).
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// How often a runner with nothing to claim looks again (for rows freed by a dead runner's
    /// expired lease, or by a runner that left).
    pub fn claim_poll(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// Renews `runner`'s leases on `run_id` every third of the lease until aborted. A failed renewal
/// is logged; the row's compare-and-set still keeps two runners from moving one row twice.
pub fn keep_leases(
    store: Store,
    run_id: i64,
    runner: &RunnerSettings,
) -> tokio::task::JoinHandle<()> {
    let runner = runner.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(runner.renew_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = store
                .renew_leases(run_id, &runner.id, runner.lease_ms())
                .await
            {
                tracing::warn!(error = %e, runner = %runner.id, "cannot renew this runner's leases");
            }
        }
    })
}
