//! Several runners on one payout run (issue 14 part B), PostgreSQL only: row claims with
//! leases, the one report writer of a finished run, and the GCRA rate-limit row per mchId that
//! every runner paces its requests by. Times are the server's clock (`clock_timestamp()`), so
//! runners on hosts whose clocks differ agree on when a lease expired.
//!
//! Invariants: a row is claimed by one runner at a time (`FOR UPDATE SKIP LOCKED`; a lease is
//! taken over only after it expired); a claim never changes a row's state (the row's state
//! changes only by compare-and-set in `save_row`, so a runner whose lease was taken over while
//! it still worked cannot move the row past what the other runner stored); one statement per
//! GCRA take, so the runners together never pass the row's rate and burst.

use super::PgStore;
use crate::store::{RowRecord, StoreError};

/// The server's clock in UTC milliseconds.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::BIGINT";

/// Rows whose work is not over (the same list as `ops::OPEN_FILTER`).
const OPEN: &str = "state NOT IN ('SUCCESS','FAILED','REVERSED','REJECTED','NEEDS_ATTENTION')";

/// Who writes a finished run's report (see `PgStore::claim_report`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportClaim {
    /// This runner: write the report, finish the run, record the exit code.
    Mine,
    /// Another runner holds the claim (its lease not expired) or the run is finished already.
    Taken,
}

impl PgStore {
    /// Claims up to `limit` open rows of `run_id` for `runner` until `lease_ms` from now (server
    /// clock): rows nobody holds, or whose lease expired (their runner died or stalled), in
    /// input order, skipping rows another transaction is claiming. Returns the claimed rows as
    /// stored now (an expired row comes back in whatever state its last runner left it:
    /// IN_FLIGHT or UNKNOWN rows are then resolved by query first, by the engine's resume path).
    pub(crate) async fn claim_rows(
        &self,
        run_id: i64,
        runner: &str,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<RowRecord>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let ids: Vec<i64> = tx
            .query(
                &format!(
                    "WITH c AS (
                         SELECT id FROM rows
                         WHERE run_id = $1 AND {OPEN}
                           AND (lease_owner IS NULL OR lease_until < {NOW_MS})
                         ORDER BY line LIMIT $4
                         FOR UPDATE SKIP LOCKED)
                     UPDATE rows r SET lease_owner = $2, lease_until = {NOW_MS} + $3
                     FROM c WHERE r.id = c.id RETURNING r.id"
                ),
                &[&run_id, &runner, &lease_ms, &limit],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            super::ops::rows_where(&tx, "WHERE r.id = ANY($1) ORDER BY r.line", &[&ids]).await?
        };
        tx.commit().await?;
        Ok(rows)
    }

    /// Extends every lease `runner` holds on open rows of `run_id` to `lease_ms` from now;
    /// returns how many rows it holds.
    pub(crate) async fn renew_leases(
        &self,
        run_id: i64,
        runner: &str,
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        self.set_leases(run_id, runner, Some(lease_ms)).await
    }

    /// Gives back every lease `runner` holds on `run_id`'s open rows (it is leaving): other
    /// runners may claim those rows at once. The owner stays recorded (expired) as the row's
    /// last runner.
    pub(crate) async fn release_leases(
        &self,
        run_id: i64,
        runner: &str,
    ) -> Result<u64, StoreError> {
        self.set_leases(run_id, runner, None).await
    }

    /// `runner`'s leases on `run_id`'s open rows until `lease_ms` from now, or expired (`None`).
    async fn set_leases(
        &self,
        run_id: i64,
        runner: &str,
        lease_ms: Option<i64>,
    ) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "UPDATE rows SET lease_until = COALESCE({NOW_MS} + $3::BIGINT, 0)
             WHERE run_id = $1 AND lease_owner = $2 AND {OPEN}"
        );
        Ok(c.execute(&sql, &[&run_id, &runner, &lease_ms]).await?)
    }

    /// Open rows of `run_id` held under a live lease by a runner other than `runner`.
    pub(crate) async fn rows_held_by_others(
        &self,
        run_id: i64,
        runner: &str,
    ) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(c.query_one(
            &format!(
                "SELECT COUNT(*) FROM rows WHERE run_id = $1 AND {OPEN}
                 AND lease_owner IS NOT NULL AND lease_owner <> $2 AND lease_until >= {NOW_MS}"
            ),
            &[&run_id, &runner],
        )
        .await?
        .try_get(0)?)
    }

    /// Claims the writing of `run_id`'s report for `runner`, atomically: granted when the run
    /// is open, has no open row, and nobody else holds an unexpired claim. The claim lasts
    /// `lease_ms` (a runner that dies before finishing the run loses it; the next runner of the
    /// job writes the report instead).
    pub(crate) async fn claim_report(
        &self,
        run_id: i64,
        runner: &str,
        lease_ms: i64,
    ) -> Result<ReportClaim, StoreError> {
        let c = self.client().await?;
        let changed = c
            .execute(
                &format!(
                    "UPDATE runs SET report_owner = $2, report_until = {NOW_MS} + $3
                     WHERE id = $1 AND status = 'OPEN'
                       AND (report_owner IS NULL OR report_owner = $2 OR report_until < {NOW_MS})
                       AND NOT EXISTS (SELECT 1 FROM rows WHERE run_id = $1 AND {OPEN})"
                ),
                &[&run_id, &runner, &lease_ms],
            )
            .await?;
        Ok(if changed == 1 {
            ReportClaim::Mine
        } else {
            ReportClaim::Taken
        })
    }

    /// Makes sure the GCRA row of `mch_id` exists with the configured `max_rate` and `burst`
    /// (the last runner to start sets them; a rate cut below `max_rate` stays).
    pub(crate) async fn rate_limit_init(
        &self,
        mch_id: &str,
        max_rate: i32,
        burst: i32,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO rate_limits (mch_id, max_rate, rate, burst, tat_us)
             VALUES ($1, $2, $2, $3, 0)
             ON CONFLICT (mch_id) DO UPDATE SET max_rate = EXCLUDED.max_rate,
                 burst = EXCLUDED.burst, rate = LEAST(rate_limits.rate, EXCLUDED.max_rate)",
            &[&mch_id, &max_rate, &burst],
        )
        .await?;
        Ok(())
    }

    /// One GCRA take on `mch_id`'s row, in one statement: `0` when the request may leave now
    /// (the row's theoretical arrival time advanced by one interval of the current rate), else
    /// how many microseconds to wait before asking again. Conformant when the new arrival time
    /// is at most `burst` intervals ahead of now: at most `burst` at once, `rate` per second.
    pub(crate) async fn rate_limit_take(&self, mch_id: &str) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "WITH s AS (SELECT (extract(epoch from clock_timestamp()) * 1000000)::BIGINT AS now),
                 u AS (UPDATE rate_limits r SET tat_us = GREATEST(r.tat_us, s.now) + 1000000 / r.rate
                       FROM s
                       WHERE r.mch_id = $1
                         AND GREATEST(r.tat_us, s.now) + 1000000 / r.rate - s.now
                             <= (1000000 / r.rate) * r.burst
                       RETURNING 0::BIGINT AS wait)
                 SELECT wait FROM u
                 UNION ALL
                 SELECT GREATEST(GREATEST(r.tat_us, s.now) + 1000000 / r.rate - s.now
                                 - (1000000 / r.rate) * r.burst, 1)::BIGINT
                 FROM rate_limits r, s WHERE r.mch_id = $1 AND NOT EXISTS (SELECT 1 FROM u)",
                &[&mch_id],
            )
            .await?;
        match row {
            Some(r) => Ok(r.try_get(0)?),
            None => Err(StoreError::BadState(format!(
                "no rate-limit row for mchId {mch_id}"
            ))),
        }
    }

    /// A 406 seen by one runner: halves the shared rate (not below 1/s) for every runner;
    /// returns the new rate.
    pub(crate) async fn rate_limit_cut(&self, mch_id: &str) -> Result<i32, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                &format!(
                    "UPDATE rate_limits SET rate = GREATEST(rate / 2, 1), cut_at = {NOW_MS}
                     WHERE mch_id = $1 RETURNING rate"
                ),
                &[&mch_id],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Additive increase after a runner's run of successes: one step up, to `max_rate` at most.
    pub(crate) async fn rate_limit_raise(&self, mch_id: &str) -> Result<i32, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "UPDATE rate_limits SET rate = LEAST(rate + 1, max_rate)
                 WHERE mch_id = $1 RETURNING rate",
                &[&mch_id],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The shared rate (requests per second) of `mch_id` now, if its row exists.
    pub(crate) async fn rate_limit_rate(&self, mch_id: &str) -> Result<Option<i32>, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_opt("SELECT rate FROM rate_limits WHERE mch_id = $1", &[&mch_id])
                .await?
                .map(|r| r.try_get(0))
                .transpose()?,
        )
    }
}
