//! Store layer (PostgreSQL): failed-login counters and the lockout they lead to, shared by
//! every instance on the database.

use postgres::{GenericClient, Row, Transaction};

use super::{text, PgResult};
use crate::domain::time::Millis;
use crate::domain::FailureCounter;

fn counter_row(row: &Row) -> PgResult<FailureCounter> {
    Ok(FailureCounter {
        count: row.try_get::<_, i32>(0)?.max(0) as u32,
        window_start: row.try_get(1)?,
        locked_until: row.try_get(2)?,
    })
}

pub(super) fn counter(c: &mut impl GenericClient, key: &str) -> PgResult<Option<FailureCounter>> {
    c.query_opt(
        "SELECT count, window_start, locked_until FROM login_failures WHERE key = $1",
        &[&text(key)],
    )?
    .map(|r| counter_row(&r))
    .transpose()
}

/// See `Store::record_failure`.
pub(super) fn record_failure(
    tx: &mut Transaction<'_>,
    key: &str,
    now: Millis,
    window_start_after: Millis,
    lock: Option<(u32, Millis)>,
) -> PgResult<FailureCounter> {
    // Row lock (the upsert's, held to commit): two failures for one key at once would
    // otherwise both read count n and both write n + 1, and a lockout threshold would be
    // crossed late or twice; the second upsert waits and counts on the first one's row.
    let row = tx.query_one(
        "INSERT INTO login_failures AS f (key, count, window_start, locked_until)
         VALUES ($1, 1, $2, NULL)
         ON CONFLICT (key) DO UPDATE SET
           count = CASE WHEN f.window_start < $3 THEN 1 ELSE f.count + 1 END,
           window_start = CASE WHEN f.window_start < $3 THEN $2 ELSE f.window_start END,
           locked_until = CASE WHEN f.locked_until < $2 THEN NULL ELSE f.locked_until END
         RETURNING count, window_start, locked_until",
        &[&text(key), &now, &window_start_after],
    )?;
    let counted = counter_row(&row)?;
    match lock {
        Some((threshold, until)) if counted.count >= threshold => {
            // Same transaction, same row lock: the count that crossed the threshold is the one
            // this transaction wrote.
            let row = tx.query_one(
                "UPDATE login_failures SET locked_until = $2, count = 0, window_start = $3
                 WHERE key = $1
                 RETURNING count, window_start, locked_until",
                &[&text(key), &until, &now],
            )?;
            counter_row(&row)
        }
        _ => Ok(counted),
    }
}

pub(super) fn clear(c: &mut impl GenericClient, key: &str) -> PgResult<()> {
    c.execute("DELETE FROM login_failures WHERE key = $1", &[&text(key)])
        .map(|_| ())
}
