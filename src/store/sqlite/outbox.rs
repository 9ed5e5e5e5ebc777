//! Store layer (SQLite): the mail outbox (`domain::mail`). `enqueue` runs inside the write
//! transaction of the request that decided to send the mail.

use rusqlite::{params, Connection, Row};
use uuid::Uuid;

use super::{opt_uuid_col, parsed_col, uuid_col};
use crate::domain::mail::{MailStatus, MailThrottle, NewMail, OutboxCounts, OutboxMail, Settle};
use crate::domain::time::Millis;
use crate::domain::AuditEvent;

/// `Store::enqueue_mail`: queues `m`, due at once.
pub(super) fn enqueue(c: &Connection, m: &NewMail) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO mail_outbox
           (id, kind, user_id, to_address, payload, status, attempts, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, ?6, ?6)",
    )?
    .execute(params![
        m.id.to_string(),
        m.kind.as_str(),
        m.user_id.map(|u| u.to_string()),
        m.to,
        m.payload,
        m.created_at
    ])?;
    Ok(())
}

/// Whether `throttle` drops `m` (`MailThrottle::drops`, counting the mails of `m.kind` queued
/// to `m.to`). Runs in the caller's write transaction, which SQLite serialises, so two
/// requests for one address see each other's mail.
pub(super) fn dropped(
    c: &Connection,
    m: &NewMail,
    throttle: &MailThrottle,
) -> rusqlite::Result<bool> {
    let (last, in_last_day): (Option<Millis>, i64) = c
        .prepare_cached(
            "SELECT MAX(created_at), COUNT(*) FROM mail_outbox
             WHERE to_address = ?1 AND kind = ?3 AND created_at > ?2",
        )?
        .query_row(
            params![m.to, m.created_at - MailThrottle::DAY_MS, m.kind.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    Ok(throttle.drops(m.created_at, last, in_last_day.max(0) as u64))
}

/// Queues `m` unless `throttle` drops it (see `dropped`); whether it was queued.
pub(super) fn enqueue_throttled(
    c: &Connection,
    m: &NewMail,
    throttle: &MailThrottle,
) -> rusqlite::Result<bool> {
    if dropped(c, m, throttle)? {
        return Ok(false);
    }
    enqueue(c, m)?;
    Ok(true)
}

const COLS: &str = "id, kind, user_id, to_address, payload, status, attempts, next_attempt_at,
                    lease_until, last_error, created_at, finished_at";

fn mail_at(r: &Row<'_>) -> rusqlite::Result<OutboxMail> {
    Ok(OutboxMail {
        id: uuid_col(r, 0)?,
        kind: parsed_col(r, 1)?,
        user_id: opt_uuid_col(r, 2)?,
        to: r.get(3)?,
        payload: r.get(4)?,
        status: parsed_col(r, 5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        lease_until: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        finished_at: r.get(11)?,
    })
}

/// `Store::lease_mails`: one conditional `UPDATE ... RETURNING` in the single writer's
/// transaction. Writes to SQLite are serialized (one writer connection, `BEGIN IMMEDIATE`),
/// so two workers (of this process or another `serve` on the same file) never lease one row:
/// the second finds it `sending` with a lease in the future.
pub(super) fn lease(
    c: &Connection,
    now: Millis,
    lease_until: Millis,
    limit: u32,
) -> rusqlite::Result<Vec<OutboxMail>> {
    let mut st = c.prepare_cached(&format!(
        "UPDATE mail_outbox
            SET status = 'sending', attempts = attempts + 1, lease_until = ?2
          WHERE id IN (SELECT id FROM mail_outbox
                        WHERE (status = 'queued' AND next_attempt_at <= ?1)
                           OR (status = 'sending' AND lease_until <= ?1)
                        ORDER BY next_attempt_at, created_at
                        LIMIT ?3)
      RETURNING {COLS}"
    ))?;
    let rows = st.query_map(params![now, lease_until, limit], mail_at)?;
    rows.collect()
}

/// `Store::settle_mail`: ends the lease `lease_until` of mail `id` as `outcome` says (with
/// `audit`, when given, in the same transaction); `false` when the lease is not ours any more.
pub(super) fn settle(
    c: &Connection,
    id: Uuid,
    lease_until: Millis,
    outcome: &Settle,
    now: Millis,
    audit: Option<&AuditEvent>,
) -> rusqlite::Result<bool> {
    let (status, next, error, finished) = match outcome {
        Settle::Sent => ("sent", None, None, Some(now)),
        Settle::Retry { at, error } => ("queued", Some(*at), Some(error.as_str()), None),
        Settle::Failed { error } => ("failed", None, Some(error.as_str()), Some(now)),
    };
    let n = c
        .prepare_cached(
            "UPDATE mail_outbox
                SET status = ?3, next_attempt_at = COALESCE(?4, next_attempt_at),
                    last_error = COALESCE(?5, last_error), finished_at = ?6, lease_until = NULL
              WHERE id = ?1 AND status = 'sending' AND lease_until = ?2",
        )?
        .execute(params![
            id.to_string(),
            lease_until,
            status,
            next,
            error,
            finished
        ])?;
    if n == 1 {
        if let Some(e) = audit {
            super::audit::insert(c, e)?;
        }
    }
    Ok(n == 1)
}

/// `Store::outbox_counts`.
pub(super) fn counts(c: &Connection) -> rusqlite::Result<OutboxCounts> {
    let mut out = OutboxCounts::default();
    let mut st = c.prepare_cached(
        "SELECT status, COUNT(*), MIN(created_at) FROM mail_outbox GROUP BY status",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let status: MailStatus = parsed_col(r, 0)?;
        let n: i64 = r.get(1)?;
        let n = n.max(0) as u64;
        match status {
            MailStatus::Queued => {
                out.queued = n;
                out.oldest_queued_at = r.get(2)?;
            }
            MailStatus::Sending => out.sending = n,
            MailStatus::Sent => out.sent = n,
            MailStatus::Failed => out.failed = n,
        }
    }
    Ok(out)
}

/// `Store::list_mails`: oldest first.
pub(super) fn list(
    c: &Connection,
    status: Option<MailStatus>,
) -> rusqlite::Result<Vec<OutboxMail>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLS} FROM mail_outbox WHERE ?1 IS NULL OR status = ?1
          ORDER BY created_at, id"
    ))?;
    let rows = st.query_map(params![status.map(|s| s.as_str())], mail_at)?;
    rows.collect()
}

/// `Store::requeue_mails`: queues failed mails again (`id`, or every failed one), due at
/// `now`, their attempts counted afresh.
pub(super) fn requeue(c: &Connection, id: Option<Uuid>, now: Millis) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "UPDATE mail_outbox
            SET status = 'queued', attempts = 0, next_attempt_at = ?2, finished_at = NULL
          WHERE status = 'failed' AND (?1 IS NULL OR id = ?1)",
    )?
    .execute(params![id.map(|u| u.to_string()), now])
}

/// Fails the user's mails with a link that are not handed over yet (queued, or leased by a
/// worker that has not settled them): a credential change kills every outstanding link
/// (CONTRACT 10.2), and a link is minted only when its mail is handed over, so a mail queued
/// before the change must not go out with a fresh one. Returns how many.
pub(super) fn cancel_links(c: &Connection, user_id: Uuid, now: Millis) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "UPDATE mail_outbox
            SET status = 'failed', last_error = 'credential_changed: the link died with the change',
                finished_at = ?2, lease_until = NULL
          WHERE user_id = ?1 AND status IN ('queued', 'sending')
            AND kind IN ('password_reset', 'verify_email', 'email_change_new', 'email_change_old')",
    )?
    .execute(params![user_id.to_string(), now])
}
