//! Store layer: what both backends' schema migrations share. Each backend embeds its own
//! `migrations/<backend>/` folder (same numbering) and fetches what is applied; this module
//! decides what that means: the runner's settings, the refusals (an edited applied migration,
//! a database newer than this binary), the `migrate --status` rows and the error messages.

use refinery::error::Kind;
use refinery::{Migration, Runner};

use crate::domain::MigrationEntry;
use crate::store::{StoreError, StoreResult};

/// The table refinery records applied migrations in, with their checksums.
pub(crate) const TABLE: &str = "authd_schema_migrations";

/// A backend's embedded runner with authd's settings: its own table, each migration in its own
/// transaction, and edited or unknown applied migrations refused.
pub(crate) fn configure(runner: Runner) -> Runner {
    let mut r = runner;
    r.set_migration_table_name(TABLE);
    r.set_abort_divergent(true).set_abort_missing(true)
}

/// Converts a refinery error; `unavailable` tells whether a driver error's text means the
/// database is (temporarily) out of reach rather than the migration being wrong.
pub(crate) fn map_err(e: refinery::Error, unavailable: fn(&str) -> bool) -> StoreError {
    match e.kind() {
        Kind::DivergentVersion(applied, _) => StoreError::Migration(edited_message(applied)),
        Kind::MissingVersion(applied) => StoreError::Migration(newer_message(applied)),
        Kind::Connection(msg, source) => {
            let text = format!("{msg}: {source}");
            if unavailable(&text) {
                StoreError::Unavailable(text)
            } else {
                StoreError::Migration(format!("migration failed: {text}"))
            }
        }
        other => StoreError::Migration(format!("migration failed: {other}")),
    }
}

fn edited_message(applied: &Migration) -> String {
    format!(
        "migration {applied} was edited after it was applied (checksum mismatch); \
         restore the original file and add a new migration instead"
    )
}

fn newer_message(applied: &Migration) -> String {
    format!(
        "the database has migration {applied}, which this authd does not know: \
         the database is newer than this binary; upgrade authd"
    )
}

/// One `migrate --status` row for a migration (applied or not), without a problem.
pub(crate) fn entry(m: &Migration) -> MigrationEntry {
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

/// Applied and pending migrations in order, each applied one with the problem that would make
/// authd refuse the database, if any.
pub(crate) fn status(runner: &Runner, applied: &[Migration]) -> Vec<MigrationEntry> {
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
    rows
}

/// Errors unless `applied` is exactly the runner's migrations (nothing pending, edited or
/// unknown).
pub(crate) fn check(runner: &Runner, applied: &[Migration]) -> StoreResult<()> {
    let known = runner.get_migrations();
    for a in applied {
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
