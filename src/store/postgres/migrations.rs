//! Store layer (PostgreSQL): schema migrations, embedded from `migrations/postgres/` (numbered
//! as `migrations/sqlite/`, each the twin of its SQLite file) and applied by refinery, each in
//! its own transaction, recorded with its checksum. The refusals and `migrate --status` rows
//! are the SQLite backend's (`store::migrations`).

use postgres::{Client, Config, NoTls};
use refinery::Runner;

use super::map_err as store_err;
use crate::domain::MigrationEntry;
use crate::store::migrations::{self as shared, TABLE};
use crate::store::{StoreError, StoreResult};

refinery::embed_migrations!("migrations/postgres");

/// The advisory lock key every authd instance takes (session-level) around migrating.
const MIGRATE_LOCK: i64 = 0x6175_7468_645f_6d31; // "authd_m1"

/// How long an instance waits for another one's migration before giving up (503).
const MIGRATE_WAIT: &str = "120s";

fn runner() -> Runner {
    shared::configure(migrations::runner())
}

fn map_err(e: refinery::Error) -> StoreError {
    shared::map_err(e, |text| {
        [
            "connect",
            "communicating",
            "closed",
            "timeout",
            "shutting down",
            "terminating connection",
            "canceling statement",
        ]
        .iter()
        .any(|m| text.contains(m))
    })
}

/// A connection of its own (not from the pool): no statement timeout (a migration may copy a
/// table), and a longer wait for the migration lock.
fn connect(config: &Config) -> StoreResult<Client> {
    let mut client = config.connect(NoTls).map_err(store_err)?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET lock_timeout = '{MIGRATE_WAIT}';"
        ))
        .map_err(store_err)?;
    Ok(client)
}

pub(super) fn apply(config: &Config) -> StoreResult<Vec<MigrationEntry>> {
    let mut client = connect(config)?;
    // Advisory lock: instances starting together would each see the same pending migrations
    // and apply them twice (or race creating the migrations table); the others wait here, then
    // find nothing left to do.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .map_err(store_err)?;
    let report = runner().run(&mut client).map_err(map_err);
    // Closing the connection would release it too; unlock explicitly all the same.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    Ok(report?
        .applied_migrations()
        .iter()
        .map(shared::entry)
        .collect())
}

fn applied(runner: &Runner, client: &mut Client) -> StoreResult<Vec<refinery::Migration>> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&TABLE])
        .and_then(|r| r.try_get(0))
        .map_err(store_err)?;
    if !exists {
        return Ok(Vec::new());
    }
    runner.get_applied_migrations(client).map_err(map_err)
}

pub(super) fn status(config: &Config) -> StoreResult<Vec<MigrationEntry>> {
    let mut client = connect(config)?;
    let runner = runner();
    let applied = applied(&runner, &mut client)?;
    Ok(shared::status(&runner, &applied))
}

pub(super) fn check(config: &Config) -> StoreResult<()> {
    let mut client = connect(config)?;
    let runner = runner();
    let applied = applied(&runner, &mut client)?;
    shared::check(&runner, &applied)
}
