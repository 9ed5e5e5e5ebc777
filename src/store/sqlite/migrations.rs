//! Store layer: SQLite schema migrations, embedded from `migrations/sqlite/` by refinery.
//! Each is applied in its own transaction and recorded with its checksum; an edited applied
//! migration, or an applied one this binary does not know (a newer database), is refused.

use refinery::error::Kind;
use refinery::Runner;
use rusqlite::Connection;

use crate::domain::MigrationEntry;
use crate::store::{StoreError, StoreResult};

refinery::embed_migrations!("migrations/sqlite");

const TABLE: &str = "authd_schema_migrations";

fn runner() -> Runner {
    let mut r = migrations::runner();
    r.set_migration_table_name(TABLE);
    r.set_abort_divergent(true).set_abort_missing(true)
}

fn map_err(e: refinery::Error) -> StoreError {
    match e.kind() {
        Kind::DivergentVersion(applied, _) => StoreError::Migration(edited_message(applied)),
        Kind::MissingVersion(applied) => StoreError::Migration(newer_message(applied)),
        Kind::Connection(msg, source) => {
            let text = format!("{msg}: {source}");
            if text.contains("locked") || text.contains("busy") || text.contains("readonly") {
                StoreError::Unavailable(text)
            } else {
                StoreError::Migration(format!("migration failed: {text}"))
            }
        }
        other => StoreError::Migration(format!("migration failed: {other}")),
    }
}

fn edited_message(applied: &refinery::Migration) -> String {
    format!(
        "migration {applied} was edited after it was applied (checksum mismatch); \
         restore the original file and add a new migration instead"
    )
}

fn newer_message(applied: &refinery::Migration) -> String {
    format!(
        "the database has migration {applied}, which this authd does not know: \
         the database is newer than this binary; upgrade authd"
    )
}

fn entry(m: &refinery::Migration) -> MigrationEntry {
    MigrationEntry {
        version: m.version() as i64,
        name: m.name().to_string(),
        applied_on: m.applied_on().map(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        }),
        problem: None,
    }
}

pub(super) fn apply(conn: &mut Connection) -> StoreResult<Vec<MigrationEntry>> {
    let report = runner().run(conn).map_err(map_err)?;
    Ok(report.applied_migrations().iter().map(entry).collect())
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
    let known = runner.get_migrations();
    let mut rows: Vec<MigrationEntry> = applied
        .iter()
        .map(|a| MigrationEntry {
            problem: match known.iter().find(|k| k.version() == a.version()) {
                None => {
                    Some("unknown to this authd: the database is newer than this binary".into())
                }
                Some(k) if k.checksum() != a.checksum() => {
                    Some("edited after it was applied (checksum mismatch)".into())
                }
                Some(_) => None,
            },
            ..entry(a)
        })
        .collect();
    for m in known {
        if !applied.iter().any(|a| a.version() == m.version()) {
            rows.push(entry(m));
        }
    }
    rows.sort_by_key(|r| r.version);
    Ok(rows)
}

pub(super) fn check(conn: &mut Connection) -> StoreResult<()> {
    let runner = runner();
    let applied = applied(&runner, conn)?;
    let known = runner.get_migrations();
    for a in &applied {
        match known.iter().find(|k| k.version() == a.version()) {
            None => return Err(StoreError::Migration(newer_message(a))),
            Some(k) if k.checksum() != a.checksum() => {
                return Err(StoreError::Migration(edited_message(a)))
            }
            Some(_) => {}
        }
    }
    let pending = known.len().saturating_sub(applied.len());
    if pending > 0 {
        return Err(StoreError::Migration(format!(
            "the database has {pending} pending migration(s) and database.auto_migrate is false; \
             run `authd migrate`"
        )));
    }
    Ok(())
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
