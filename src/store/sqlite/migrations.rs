//! Store layer: SQLite schema migrations, embedded from `migrations/sqlite/` by refinery.
//! Each is applied in its own transaction and recorded with its checksum; an edited applied
//! migration, or an applied one this binary does not know (a newer database), is refused
//! (the decisions are shared with PostgreSQL in `store::migrations`).

use refinery::Runner;
use rusqlite::Connection;

use crate::domain::MigrationEntry;
use crate::store::migrations::{self as shared, TABLE};
use crate::store::{StoreError, StoreResult};

refinery::embed_migrations!("migrations/sqlite");

fn runner() -> Runner {
    shared::configure(migrations::runner())
}

fn map_err(e: refinery::Error) -> StoreError {
    shared::map_err(e, |text| {
        text.contains("locked") || text.contains("busy") || text.contains("readonly")
    })
}

pub(super) fn apply(conn: &mut Connection) -> StoreResult<Vec<MigrationEntry>> {
    let report = runner().run(conn).map_err(map_err)?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(shared::entry)
        .collect())
}

fn applied(runner: &Runner, conn: &mut Connection) -> StoreResult<Vec<refinery::Migration>> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [TABLE],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    if !exists {
        return Ok(Vec::new());
    }
    runner.get_applied_migrations(conn).map_err(map_err)
}

pub(super) fn status(conn: &mut Connection) -> StoreResult<Vec<MigrationEntry>> {
    let runner = runner();
    let applied = applied(&runner, conn)?;
    Ok(shared::status(&runner, &applied))
}

pub(super) fn check(conn: &mut Connection) -> StoreResult<()> {
    let runner = runner();
    let applied = applied(&runner, conn)?;
    shared::check(&runner, &applied)
}

/// For backups (`store::backup`), on a connection of their own: applies every migration.
pub(crate) fn apply_all(conn: &mut Connection) -> StoreResult<()> {
    apply(conn).map(|_| ())
}

/// For backups: this binary's migrations as `(version, name, checksum)`, in order.
pub(crate) fn known() -> Vec<(i64, String, u64)> {
    let mut known: Vec<_> = runner()
        .get_migrations()
        .iter()
        .map(|m| (i64::from(m.version()), m.name().to_string(), m.checksum()))
        .collect();
    // By version: the embedded list is in file-name order, where V11 sorts before V2.
    known.sort_by_key(|k| k.0);
    known
}

/// For backups: the migrations recorded in the database on `conn` as `(version, name,
/// checksum)`, in order (none when it has no history table).
pub(crate) fn recorded(conn: &mut Connection) -> StoreResult<Vec<(i64, String, u64)>> {
    let runner = runner();
    let mut recorded: Vec<_> = applied(&runner, conn)?
        .iter()
        .map(|m| (i64::from(m.version()), m.name().to_string(), m.checksum()))
        .collect();
    recorded.sort_by_key(|k| k.0);
    Ok(recorded)
}

/// Applies the migrations up to `version` only: a database as an older authd left it.
#[cfg(test)]
pub(super) fn apply_up_to(conn: &mut Connection, version: i32) -> StoreResult<()> {
    runner()
        .set_target(refinery::Target::Version(version))
        .run(conn)
        .map(|_| ())
        .map_err(map_err)
}
