//! Store layer (SQLite): the revoked-session feed. Its rows are written only by the triggers
//! of migration V11 on `sessions` (in the transaction that ends a session; SQLite's single
//! writer makes `seq` order commit order); this file reads and prunes them.

use rusqlite::{params, Connection};

use super::uuid_col;
use crate::domain::revocation_feed::{FeedRead, RevokedSession};
use crate::domain::time::Millis;

/// See `Store::revoked_sessions_since`: the head, then the rows up to it (rows committed
/// between the two statements are above the head, for the next read).
pub(super) fn since(
    c: &Connection,
    since: i64,
    issued_after: Millis,
) -> rusqlite::Result<FeedRead> {
    let head: i64 = c
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM revoked_sessions")?
        .query_row([], |r| r.get(0))?;
    let entries = c
        .prepare_cached(
            "SELECT seq, sid, issued_at FROM revoked_sessions
             WHERE seq > ?1 AND seq <= ?2 AND issued_at > ?3
             ORDER BY seq",
        )?
        .query_map(params![since, head, issued_after], |r| {
            Ok(RevokedSession {
                seq: r.get(0)?,
                sid: uuid_col(r, 1)?,
                issued_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(FeedRead { head, entries })
}

/// See `Store::purge_revocation_feed`, inside the caller's write transaction.
pub(super) fn purge(
    tx: &Connection,
    issued_before: Millis,
    dry_run: bool,
) -> rusqlite::Result<u64> {
    let what = "FROM revoked_sessions WHERE issued_at < ?1
                AND seq < (SELECT COALESCE(MAX(seq), 0) FROM revoked_sessions)";
    if dry_run {
        return tx
            .query_row(&format!("SELECT COUNT(*) {what}"), [issued_before], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64);
    }
    tx.execute(&format!("DELETE {what}"), [issued_before])
        .map(|n| n as u64)
}
