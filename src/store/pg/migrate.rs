//! PostgreSQL migrations: the files of `migrations/postgres/` in order, append-only, applied in
//! one transaction under a transaction-scoped advisory lock (two processes starting together
//! do not both migrate), each recorded in `schema_migrations` (SQLite keeps the same count in
//! `PRAGMA user_version`). A database migrated by a newer build (more rows than this build
//! knows) is refused.

use tokio_postgres::GenericClient;

use super::super::StoreError;

/// (version, name, SQL), in order. Append-only: never edit or reorder a shipped file.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "0002_runners",
        include_str!("../../../migrations/postgres/0002_runners.sql"),
    ),
];

const TRACKING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     BIGINT PRIMARY KEY,
    name        TEXT   NOT NULL,
    applied_at  BIGINT NOT NULL
)";

/// Applies the migrations `client`'s database lacks; `shown` names it in errors.
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    shown: &str,
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Scoped by schema: each schema of a database is its own store.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/migrate', 0))",
        &[],
    )
    .await?;
    tx.batch_execute(TRACKING).await?;
    let found = recorded(&tx).await?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew {
            path: shown.into(),
            found,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &super::super::now_ms()],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('db_id', $1) ON CONFLICT (key) DO NOTHING",
        &[&super::super::new_db_id()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The highest version `schema_migrations` records (0 when none).
async fn recorded(client: &impl GenericClient) -> Result<i64, StoreError> {
    let sql = "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations";
    Ok(client.query_one(sql, &[]).await?.try_get(0)?)
}

/// The schema version of `client`'s database, `None` when it was never migrated.
pub(crate) async fn applied_version(
    client: &tokio_postgres::Client,
) -> Result<Option<i64>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(recorded(client).await?))
}
