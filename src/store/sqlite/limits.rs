//! Store layer: the SQLite side of the login limits (`domain::limits` decides; this module
//! reads and writes the `login_failures` rows inside the caller's `BEGIN IMMEDIATE`
//! transaction, so a reservation and a settlement never interleave with another writer).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::domain::limits::{self, Admission, Counters, SlotGrant, SlotRequest};
use crate::domain::time::Millis;
use crate::domain::FailureCounter;

fn failure_row(row: &Row<'_>) -> rusqlite::Result<FailureCounter> {
    Ok(FailureCounter {
        count: row.get(0)?,
        window_start: row.get(1)?,
        locked_until: row.get(2)?,
    })
}

pub(super) fn counter(c: &Connection, key: &str) -> rusqlite::Result<Option<FailureCounter>> {
    c.prepare_cached("SELECT count, window_start, locked_until FROM login_failures WHERE key = ?1")?
        .query_row([key], failure_row)
        .optional()
}

pub(super) fn clear(tx: &Connection, key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM login_failures WHERE key = ?1")?
        .execute([key])
        .map(|_| ())
}

/// `login_failures` rows seen through one open write transaction.
struct Rows<'a>(&'a Connection);

impl Counters for Rows<'_> {
    type Error = rusqlite::Error;

    fn get(&mut self, key: &str) -> rusqlite::Result<Option<FailureCounter>> {
        self.0
            .prepare_cached(
                "SELECT count, window_start, locked_until FROM login_failures WHERE key = ?1",
            )?
            .query_row([key], failure_row)
            .optional()
    }

    fn put(&mut self, key: &str, c: FailureCounter) -> rusqlite::Result<()> {
        if c.count == 0 && c.locked_until.is_none() {
            self.0
                .prepare_cached("DELETE FROM login_failures WHERE key = ?1")?
                .execute([key])?;
            return Ok(());
        }
        self.0
            .prepare_cached(
                "INSERT INTO login_failures (key, count, window_start, locked_until)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET count = excluded.count,
                   window_start = excluded.window_start, locked_until = excluded.locked_until",
            )?
            .execute(params![key, c.count, c.window_start, c.locked_until])?;
        Ok(())
    }
}

/// `Store::reserve_login_slots` inside the caller's write transaction: the check and the
/// increment are one transaction, so concurrent attempts cannot all pass the check before
/// any of them counts (the check-then-act race of issue 10).
pub(super) fn reserve(tx: &Connection, request: &SlotRequest) -> rusqlite::Result<Admission> {
    limits::reserve(&mut Rows(tx), request)
}

/// `Store::settle_login_slots` inside the caller's write transaction.
pub(super) fn settle(
    tx: &Connection,
    grant: &SlotGrant,
    failed: bool,
    now: Millis,
) -> rusqlite::Result<()> {
    limits::settle(&mut Rows(tx), grant, failed, now)
}
