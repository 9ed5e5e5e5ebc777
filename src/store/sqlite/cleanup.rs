//! Store layer (SQLite): the cleanup of expired and revoked sessions, rotated-away refresh
//! tokens and stale failed-login counters, in one write transaction.

use rusqlite::Connection;

use crate::domain::time::Millis;
use crate::domain::CleanupCounts;

// Tokens go with their session, and only with a dead one: a rotated-away token of a live
// session is what reuse detection finds (deleting it would turn a replayed stolen token from
// TOKEN_REVOKED, session revoked, into a harmless TOKEN_INVALID).
const DEAD_SESSIONS: &str = "FROM sessions WHERE revoked_at < ?1 OR expires_at < ?1";
const DEAD_TOKENS: &str = "FROM refresh_tokens WHERE session_id IN
     (SELECT id FROM sessions WHERE revoked_at < ?1 OR expires_at < ?1)";
// A counter goes once its window and its lock are over: deleting it earlier would reset a
// running failed-login budget or lift a lockout (held-slot rows alike).
const STALE_FAILURES: &str = "FROM login_failures WHERE window_start <= ?1
     AND (locked_until IS NULL OR locked_until <= ?2)";

// A one-time token goes once its lifetime is over (any purpose): using it would answer
// TOKEN_EXPIRED, after the purge TOKEN_INVALID; both refuse it.
const EXPIRED_ONE_TIME: &str = "FROM one_time_tokens WHERE expires_at <= ?1";
// A mail goes once it is over (sent or failed) and older than the retention; a queued or
// sending one is never touched.
const FINISHED_MAILS: &str = "FROM mail_outbox WHERE status IN ('sent', 'failed')
     AND finished_at < ?1";

/// `Store::purge` inside the caller's write transaction: counts what is dead and, unless
/// `dry_run`, deletes it.
pub(super) fn purge(
    tx: &Connection,
    cutoff: Millis,
    now: Millis,
    failure_window: Millis,
    dry_run: bool,
) -> rusqlite::Result<CleanupCounts> {
    let window_ended_before = now - failure_window;
    let count = |what: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
        tx.query_row(&format!("SELECT COUNT(*) {what}"), p, |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
    };
    let counts = CleanupCounts {
        refresh_tokens: count(DEAD_TOKENS, &[&cutoff])?,
        sessions: count(DEAD_SESSIONS, &[&cutoff])?,
        login_failures: count(STALE_FAILURES, &[&window_ended_before, &now])?,
        one_time_tokens: count(EXPIRED_ONE_TIME, &[&now])?,
        mails: count(FINISHED_MAILS, &[&cutoff])?,
        stopped_early: false,
        revocation_feed: 0,
        unverified_accounts: 0,
    };
    if !dry_run {
        tx.execute(&format!("DELETE {DEAD_TOKENS}"), [cutoff])?;
        tx.execute(&format!("DELETE {DEAD_SESSIONS}"), [cutoff])?;
        tx.execute(
            &format!("DELETE {STALE_FAILURES}"),
            [window_ended_before, now],
        )?;
        tx.execute(&format!("DELETE {EXPIRED_ONE_TIME}"), [now])?;
        tx.execute(&format!("DELETE {FINISHED_MAILS}"), [cutoff])?;
    }
    Ok(counts)
}
