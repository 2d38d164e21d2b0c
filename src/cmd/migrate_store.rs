//! `migrate-store --from DB --to URL`: copies a SQLite database's history into an empty
//! PostgreSQL store (`store::pg::copy`). Thin: opens both, copies, prints what was copied.

use std::path::Path;

use anyhow::{bail, Context};

use crate::cli::MigrateStoreArgs;
use crate::cmd::exit;
use crate::store::{self, Store};

pub fn run(args: MigrateStoreArgs) -> anyhow::Result<i32> {
    let to = Path::new(&args.to);
    let shown = store::pg::redact(&args.to);
    if !store::is_postgres_url(to) {
        bail!("--to {shown}: not a postgres:// URL");
    }
    if !args.from.is_file() {
        bail!("--from {}: no such SQLite database", args.from.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let target = Store::open(to)?;
    let copied = runtime
        .block_on(target.copy_from_sqlite(&args.from))
        .with_context(|| {
            format!(
                "nothing was copied from {} into {shown}",
                args.from.display()
            )
        })?;
    for (table, n) in &copied {
        println!("{table}\t{n}");
    }
    eprintln!(
        "copied {} into {shown}; point the job files at it (`database` or STARPAY_DATABASE_URL)",
        args.from.display()
    );
    Ok(exit::OK)
}
