//! CLI: `authd migrate-data --from sqlite://PATH --to postgres://...`: moves an installation
//! from SQLite to PostgreSQL once (docs/MIGRATING-TO-POSTGRES.md).

use std::sync::Arc;

use super::CliError;
use crate::blocking::blocking;
use crate::config::Settings;
use crate::store::{transfer, StoreError, StoreOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQLite database to copy, `sqlite://PATH` (read only; stop the servers using it
    /// first, writes made after the copy starts are not carried over)
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The PostgreSQL database to fill, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`: migrated
    /// here if needed, and refused unless it holds no data [default: database.url, so that a
    /// password can stay in the configuration instead of the command line]
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let options = StoreOptions {
        pool_size: 2,
        busy_timeout: settings.database.busy_timeout,
        health: crate::store::health::DbHealth::uncounted(),
    };
    let to = args.to.unwrap_or_else(|| settings.database.url.clone());
    let report = blocking(move || transfer::sqlite_to_postgres(&args.from, &to, &options))
        .await?
        .map_err(|e| {
            CliError(match e {
                StoreError::Unavailable(m) => format!("database unavailable: {m}"),
                StoreError::Other(m) | StoreError::Migration(m) | StoreError::Conflict(m) => m,
            })
        })?;
    if report.migrations_applied > 0 {
        println!(
            "applied {} migration(s) to the target",
            report.migrations_applied
        );
    }
    let mut total = 0;
    for (table, rows) in &report.tables {
        println!("copied {rows} row(s) into {table}");
        total += rows;
    }
    println!(
        "done: {total} row(s) in {} table(s), row counts verified, committed",
        report.tables.len()
    );
    Ok(())
}
