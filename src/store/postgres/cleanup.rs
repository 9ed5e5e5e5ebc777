//! Store layer (PostgreSQL): the cleanup of expired and revoked sessions, rotated-away refresh
//! tokens and stale failed-login counters, in small batches, one instance at a time.

use postgres::GenericClient;

use super::db::Db;
use super::{PgResult, PostgresStore};
use crate::domain::time::Millis;
use crate::domain::CleanupCounts;
use crate::store::StoreResult;

/// Rows deleted per transaction: short transactions, short row locks, no long pause for the
/// requests that touch the same tables.
const BATCH: u64 = 1000;

/// The advisory lock key every authd instance's cleanup takes (a transaction-level lock).
pub(super) const PURGE_LOCK: i64 = 0x6175_7468_645f_7031; // "authd_p1"

// Tokens go with their session, and only with a dead one: a rotated-away token of a live
// session is what reuse detection finds. $1 is the cutoff.
const DEAD_TOKENS: &str = "FROM refresh_tokens WHERE session_id IN
     (SELECT id FROM sessions WHERE revoked_at < $1 OR expires_at < $1)";
const DEAD_SESSIONS: &str = "FROM sessions WHERE revoked_at < $1 OR expires_at < $1";
// A counter (or held-slot row) goes once its window and its lock are over: deleting it earlier
// would reset a running failed-login budget or lift a lockout. $1 is when a window that ended
// by now started at the latest, $2 now.
const STALE_FAILURES: &str = "FROM login_failures WHERE window_start <= $1
     AND (locked_until IS NULL OR locked_until <= $2)";

// A one-time token goes once its lifetime is over (any purpose). $1 is now.
const EXPIRED_ONE_TIME: &str = "FROM one_time_tokens WHERE expires_at <= $1";
// A mail goes once it is over (sent or failed) and older than the retention; a queued or
// sending one is never touched. $1 is the cutoff.
const FINISHED_MAILS: &str = "FROM mail_outbox WHERE status IN ('sent', 'failed')
     AND finished_at < $1";

/// What a kind's filter binds.
#[derive(Debug, Clone, Copy)]
enum Bind {
    /// `$1` = the cutoff.
    Cutoff,
    /// `$1` = when a window that ended by now started at the latest, `$2` = now.
    Failures,
    /// `$1` = now.
    Now,
}

/// The kinds of dead rows: table, key columns, `FROM ... WHERE ...`, and what it binds.
const KINDS: [(&str, &str, &str, Bind); 5] = [
    (
        "refresh_tokens",
        "session_id, token_hash",
        DEAD_TOKENS,
        Bind::Cutoff,
    ),
    ("sessions", "id", DEAD_SESSIONS, Bind::Cutoff),
    ("login_failures", "key", STALE_FAILURES, Bind::Failures),
    ("one_time_tokens", "token_hash", EXPIRED_ONE_TIME, Bind::Now),
    ("mail_outbox", "id", FINISHED_MAILS, Bind::Cutoff),
];

/// When the purge runs and what it keeps.
#[derive(Debug, Clone, Copy)]
pub(super) struct Horizon {
    pub cutoff: Millis,
    pub now: Millis,
    pub failure_window: Millis,
}

impl Horizon {
    fn params(&self, bind: Bind) -> Vec<i64> {
        match bind {
            Bind::Failures => vec![self.now - self.failure_window, self.now],
            Bind::Cutoff => vec![self.cutoff],
            Bind::Now => vec![self.now],
        }
    }
}

fn refs(p: &[i64]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// What a purge would delete now (a dry run).
pub(super) fn count(c: &mut Db<'_, impl GenericClient>, h: Horizon) -> PgResult<CleanupCounts> {
    let mut n = [0u64; 5];
    for (i, (_, _, what, failures)) in KINDS.into_iter().enumerate() {
        let sql = format!("SELECT COUNT(*) {what}");
        let p = h.params(failures);
        n[i] = c.query_one(&sql, &refs(&p))?.try_get::<_, i64>(0)? as u64;
    }
    Ok(CleanupCounts {
        refresh_tokens: n[0],
        sessions: n[1],
        login_failures: n[2],
        one_time_tokens: n[3],
        mails: n[4],
        stopped_early: false,
        revocation_feed: 0,
        unverified_accounts: 0,
    })
}

/// Deletes what `count` counts, `BATCH` rows per transaction. Each batch first takes
/// `PURGE_LOCK` without waiting; when another instance holds it, that instance is cleaning up
/// and this one stops, returning what it deleted so far (often nothing).
pub(super) fn purge(store: &PostgresStore, h: Horizon) -> StoreResult<CleanupCounts> {
    let mut n = [0u64; 5];
    let mut stopped_early = false;
    'kinds: for (i, (table, key, what, failures)) in KINDS.into_iter().enumerate() {
        // SKIP LOCKED: a row a request holds right now (a rotation's token and session, a
        // failure being counted) is left for the next run instead of blocking both.
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN (
                 SELECT {key} {what} LIMIT {BATCH} FOR UPDATE SKIP LOCKED)"
        );
        loop {
            let deleted = store.write(|tx| {
                // Advisory lock: N instances purging at once would scan the same rows and
                // queue on each other's row locks; one at a time, the others skip the run.
                let mine: bool = tx
                    .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK])?
                    .try_get(0)?;
                if !mine {
                    return Ok(None);
                }
                let p = h.params(failures);
                Ok(Some(tx.execute(&sql, &refs(&p))?))
            })?;
            let Some(deleted) = deleted else {
                stopped_early = true;
                break 'kinds;
            };
            n[i] += deleted;
            if deleted < BATCH {
                break;
            }
        }
    }
    Ok(CleanupCounts {
        refresh_tokens: n[0],
        sessions: n[1],
        login_failures: n[2],
        one_time_tokens: n[3],
        mails: n[4],
        stopped_early,
        revocation_feed: 0,
        unverified_accounts: 0,
    })
}
