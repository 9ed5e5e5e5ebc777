//! Store layer (PostgreSQL): the revoked-session feed. Its rows are written only by the
//! triggers of migration V11 on `sessions` (in the transaction that ends a session, under an
//! advisory lock that makes `seq` order commit order); this file reads and prunes them.

use postgres::GenericClient;

use super::db::Db;
use super::PgResult;
use crate::domain::revocation_feed::{FeedRead, RevokedSession};
use crate::domain::time::Millis;

/// See `Store::revoked_sessions_since`. Two statements, each with its own snapshot: the head
/// first, then the rows up to it. Every row at or below the head committed before the head's
/// row did (the triggers' lock), so the second statement sees them all.
pub(super) fn since(
    c: &mut Db<'_, impl GenericClient>,
    since: i64,
    issued_after: Millis,
) -> PgResult<FeedRead> {
    let head: i64 = c
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM revoked_sessions", &[])?
        .try_get(0)?;
    let entries = c
        .query(
            "SELECT seq, sid, issued_at FROM revoked_sessions
             WHERE seq > $1 AND seq <= $2 AND issued_at > $3
             ORDER BY seq",
            &[&since, &head, &issued_after],
        )?
        .iter()
        .map(|r| {
            Ok(RevokedSession {
                seq: r.try_get(0)?,
                sid: r.try_get(1)?,
                issued_at: r.try_get(2)?,
            })
        })
        .collect::<PgResult<Vec<_>>>()?;
    Ok(FeedRead { head, entries })
}

/// See `Store::purge_revocation_feed`: one statement (the table holds only the revocations of
/// the last access-token lifetime or retention, whichever is longer). Instances purging at
/// once delete the same rows; the loser finds them gone.
pub(super) fn purge(
    c: &mut Db<'_, impl GenericClient>,
    issued_before: Millis,
    dry_run: bool,
) -> PgResult<u64> {
    let what = "FROM revoked_sessions WHERE issued_at < $1
                AND seq < (SELECT COALESCE(MAX(seq), 0) FROM revoked_sessions)";
    if dry_run {
        return c
            .query_one(&format!("SELECT COUNT(*) {what}"), &[&issued_before])?
            .try_get::<_, i64>(0)
            .map(|n| n as u64);
    }
    c.execute(&format!("DELETE {what}"), &[&issued_before])
}
