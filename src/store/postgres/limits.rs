//! Store layer (PostgreSQL): failed-login counters and the lockout they lead to, shared by
//! every instance on the database.

use postgres::{GenericClient, Row, Transaction};

use super::db::Db;
use super::{text, PgResult};
use crate::domain::limits::{self, Admission, Counters, SlotGrant, SlotRequest};
use crate::domain::time::Millis;
use crate::domain::FailureCounter;

/// The first key of the two-part advisory locks taken per counter key (the second is the
/// key's hash); distinct from the single-key locks of migrations and cleanup.
const KEY_LOCK_SPACE: i32 = 0x6175_7468; // "auth"

fn counter_row(row: &Row) -> PgResult<FailureCounter> {
    Ok(FailureCounter {
        count: row.try_get::<_, i32>(0)?.max(0) as u32,
        window_start: row.try_get(1)?,
        locked_until: row.try_get(2)?,
    })
}

pub(super) fn counter(
    c: &mut Db<'_, impl GenericClient>,
    key: &str,
) -> PgResult<Option<FailureCounter>> {
    c.query_opt(
        "SELECT count, window_start, locked_until FROM login_failures WHERE key = $1",
        &[&text(key)],
    )?
    .map(|r| counter_row(&r))
    .transpose()
}

/// `Store::clear_failures` (an admin lifting a lockout), under the key's lock: a settlement
/// running meanwhile would otherwise write back the count it read before the delete.
pub(super) fn clear(tx: &mut Db<'_, Transaction<'_>>, key: &str) -> PgResult<()> {
    lock_keys(tx, [key])?;
    delete_row(tx, key)
}

fn delete_row(c: &mut Db<'_, impl GenericClient>, key: &str) -> PgResult<()> {
    c.execute("DELETE FROM login_failures WHERE key = $1", &[&text(key)])
        .map(|_| ())
}

/// `login_failures` rows seen through one open transaction that holds the keys' locks.
struct Rows<'a, 'b, 'c>(&'a mut Db<'b, Transaction<'c>>);

impl Counters for Rows<'_, '_, '_> {
    type Error = postgres::Error;

    fn get(&mut self, key: &str) -> PgResult<Option<FailureCounter>> {
        counter(self.0, key)
    }

    fn put(&mut self, key: &str, c: FailureCounter) -> PgResult<()> {
        if c.count == 0 && c.locked_until.is_none() {
            return delete_row(self.0, key);
        }
        self.0
            .execute(
                "INSERT INTO login_failures (key, count, window_start, locked_until)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET count = EXCLUDED.count,
                   window_start = EXCLUDED.window_start, locked_until = EXCLUDED.locked_until",
                &[
                    &text(key),
                    &(c.count.min(i32::MAX as u32) as i32),
                    &c.window_start,
                    &c.locked_until,
                ],
            )
            .map(|_| ())
    }
}

/// Takes the transaction-level advisory lock of every key, in one order (no deadlock between
/// two attempts naming the same keys in another order).
/// Lock: a row that does not exist yet cannot be locked with FOR UPDATE, so two attempts on a
/// fresh key would both read "no failures" and both pass the check (the check-then-act race
/// of issue 10); every writer of these rows takes the key's advisory lock first.
fn lock_keys<'k>(
    tx: &mut Db<'_, Transaction<'_>>,
    keys: impl IntoIterator<Item = &'k str>,
) -> PgResult<()> {
    let mut keys: Vec<&str> = keys.into_iter().collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&KEY_LOCK_SPACE, &text(key)],
        )?;
    }
    Ok(())
}

/// `Store::reserve_login_slots`: the check and the increment in one transaction holding every
/// key's lock, so concurrent attempts cannot all pass the check before any of them counts.
pub(super) fn reserve(
    tx: &mut Db<'_, Transaction<'_>>,
    request: &SlotRequest,
) -> PgResult<Admission> {
    let keys: Vec<String> = request
        .counters
        .iter()
        .flat_map(|c| [c.key.clone(), c.held_key()])
        .collect();
    lock_keys(tx, keys.iter().map(String::as_str))?;
    limits::reserve(&mut Rows(tx), request)
}

/// `Store::settle_login_slots`, under the same locks.
pub(super) fn settle(
    tx: &mut Db<'_, Transaction<'_>>,
    grant: &SlotGrant,
    failed: bool,
    now: Millis,
) -> PgResult<()> {
    let keys: Vec<String> = grant
        .slots
        .iter()
        .flat_map(|s| [s.counter.key.clone(), s.counter.held_key()])
        .collect();
    lock_keys(tx, keys.iter().map(String::as_str))?;
    limits::settle(&mut Rows(tx), grant, failed, now)
}
