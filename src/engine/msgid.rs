//! The one msgId allocator of both engines: every msgId this database issues is made here, and
//! is durable before it is used.
//!
//! Three shapes, one per need:
//! - **payout msgIds** `P<db>R<run>L<line>A<seq>` ([`MsgIds::payout`]): derived from the row
//!   and the attempt number, so the same attempt always has the same msgId; the caller commits
//!   it with its request bytes (`store::allocate_attempt`) before anything is sent;
//! - **recorded msgIds** `<prefix><db><n>` ([`MsgIds::fresh`]): one database counter per prefix,
//!   each id recorded in `msg_ids` with its purpose before use (balance checks, bank list,
//!   re-payment checks; payout status queries in databases older than issue 11's third pass);
//! - **block msgIds** ([`MsgIds::block`]): high-volume queries (reconciliation, and a payout
//!   row's status queries) take ids from a block of [`ID_BLOCK`] reserved with one committed
//!   write; the caller records each id with its result. Unique across crashes: a block is
//!   committed before any id of it is handed out. Queries only: a payout's msgId is always
//!   committed with its bytes before it is sent.
//!
//! Prefixes in use: `B` balance, `L` bank list, `Q` payout query (older databases), `C`
//! re-payment check, `K` query blocks (reconciliation and payout status queries), `P` payouts.
//! Must not: send anything or decide anything.

use std::sync::Mutex;

use crate::domain::{IdError, MsgId};
use crate::store::{Store, StoreError};

/// Query msgIds are reserved from the database counter in blocks of this size (one write per
/// block, committed before any id of it is used, so ids stay unique across crashes).
pub const ID_BLOCK: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum MsgIdError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("generated msgId is invalid: {0}")]
    BadId(String),
    #[error("the msgId allocator is unusable (a thread panicked while holding it)")]
    Poisoned,
}

pub struct MsgIds {
    store: Store,
    db_id: String,
    /// The reserved block: next id, end (exclusive).
    block: Mutex<(i64, i64)>,
    /// Held while a new block is reserved, so callers that find the block empty together
    /// wait for one reservation instead of each reserving (and mostly wasting) their own.
    refill: tokio::sync::Mutex<()>,
}

impl MsgIds {
    /// The allocator of `store`'s database (reads its random id, part of every msgId).
    pub async fn new(store: Store) -> Result<MsgIds, MsgIdError> {
        let db_id = store.db_id().await?;
        Ok(MsgIds {
            store,
            db_id,
            block: Mutex::new((0, 0)),
            refill: tokio::sync::Mutex::new(()),
        })
    }

    /// This database's random id, part of every msgId it issues.
    pub fn db_id(&self) -> &str {
        &self.db_id
    }

    /// The msgId of attempt `seq` of the payout on `line` of run `run_id`. Not recorded here:
    /// `store::allocate_attempt` commits it with the request bytes.
    pub fn payout(&self, run_id: i64, line: i64, seq: i64) -> Result<MsgId, IdError> {
        MsgId::new(format!("P{}R{run_id}L{line}A{seq}", self.db_id))
    }

    /// A fresh msgId recorded in `msg_ids` (with `purpose` and the row it is about) before
    /// use. Each purpose has its own counter, so it needs its own `prefix`.
    pub async fn fresh(
        &self,
        prefix: char,
        purpose: &'static str,
        row_id: Option<i64>,
    ) -> Result<MsgId, MsgIdError> {
        let id = self
            .store
            .new_msg_id(prefix, &self.db_id, purpose, row_id)
            .await?;
        MsgId::new(id).map_err(|e| MsgIdError::BadId(e.to_string()))
    }

    /// A fresh query msgId from a reserved block (for high-volume queries; the caller records
    /// it with the result).
    pub async fn block(&self, prefix: char) -> Result<MsgId, MsgIdError> {
        loop {
            if let Some(n) = self.take_from_block()? {
                return MsgId::new(format!("{prefix}{}{n}", self.db_id))
                    .map_err(|e| MsgIdError::BadId(e.to_string()));
            }
            let _refilling = self.refill.lock().await;
            // Another caller may have refilled the block while this one waited.
            if let Some(n) = self.take_from_block()? {
                return MsgId::new(format!("{prefix}{}{n}", self.db_id))
                    .map_err(|e| MsgIdError::BadId(e.to_string()));
            }
            let end = self
                .store
                .reserve_counter_block("query_block", ID_BLOCK)
                .await?;
            let mut b = self.block.lock().map_err(|_| MsgIdError::Poisoned)?;
            if b.0 >= b.1 {
                *b = (end - ID_BLOCK, end);
            }
        }
    }

    /// The next id of the reserved block, if any is left.
    fn take_from_block(&self) -> Result<Option<i64>, MsgIdError> {
        let mut b = self.block.lock().map_err(|_| MsgIdError::Poisoned)?;
        if b.0 < b.1 {
            b.0 += 1;
            Ok(Some(b.0 - 1))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_unique_and_shaped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ids.db")).unwrap();
        let ids = MsgIds::new(store.clone()).await.unwrap();
        let db = ids.db_id().to_string();
        assert_eq!(
            ids.payout(3, 17, 2).unwrap().as_str(),
            format!("P{db}R3L17A2")
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(ID_BLOCK + 3) {
            assert!(seen.insert(ids.block('K').await.unwrap().to_string()));
        }
        let q1 = ids.fresh('Q', "query", None).await.unwrap();
        let q2 = ids.fresh('Q', "query", None).await.unwrap();
        assert_ne!(q1, q2);
        assert!(q1.as_str().starts_with(&format!("Q{db}")), "{q1}");
        // A second allocator on the same database (a resumed run) never repeats a block id.
        let again = MsgIds::new(store).await.unwrap();
        for _ in 0..3 {
            assert!(seen.insert(again.block('K').await.unwrap().to_string()));
        }
    }

    /// Callers that find the block empty at the same moment wait for one reservation: 64
    /// concurrent first calls use one block (one committed write), and get 64 distinct ids.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ids.db")).unwrap();
        let ids = std::sync::Arc::new(MsgIds::new(store.clone()).await.unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let ids = std::sync::Arc::clone(&ids);
                tokio::spawn(async move { ids.block('K').await.unwrap().to_string() })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in tasks {
            assert!(seen.insert(t.await.unwrap()));
        }
        // The counter starts at 1: one block of ID_BLOCK ends at ID_BLOCK + 1; one more value
        // reserved now ends one further.
        let end = store.reserve_counter_block("query_block", 1).await.unwrap();
        assert_eq!(end, ID_BLOCK + 2, "one reservation for 64 callers");
    }
}
