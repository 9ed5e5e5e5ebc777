//! Store layer (PostgreSQL): the mail outbox (`domain::mail`). `enqueue` runs inside the
//! transaction of the request that decided to send the mail.

use postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::{parsed, PgResult};
use crate::domain::mail::{MailStatus, MailThrottle, NewMail, OutboxCounts, OutboxMail, Settle};
use crate::domain::time::Millis;
use crate::domain::AuditEvent;

/// `Store::enqueue_mail`: queues `m`, due at once.
pub(super) fn enqueue(c: &mut Db<'_, impl GenericClient>, m: &NewMail) -> PgResult<()> {
    c.execute(
        "INSERT INTO mail_outbox
           (id, kind, user_id, to_address, payload, status, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $6)",
        &[
            &m.id,
            &m.kind.as_str(),
            &m.user_id,
            &m.to,
            &m.payload,
            &m.created_at,
        ],
    )?;
    Ok(())
}

/// Whether `throttle` drops `m` (`MailThrottle::drops`, counting the mails of `m.kind` queued
/// to `m.to`). Runs in the caller's transaction; a transaction-scoped advisory lock on the
/// address makes two requests for one address, at any instance, decide one after the other.
pub(super) fn dropped(
    c: &mut Db<'_, Transaction<'_>>,
    m: &NewMail,
    throttle: &MailThrottle,
) -> PgResult<bool> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('authd-mail:' || $1, 0))",
        &[&m.to],
    )?;
    let row = c.query_one(
        "SELECT MAX(created_at), COUNT(*) FROM mail_outbox
         WHERE to_address = $1 AND kind = $3 AND created_at > $2",
        &[
            &m.to,
            &(m.created_at - MailThrottle::DAY_MS),
            &m.kind.as_str(),
        ],
    )?;
    let last: Option<Millis> = row.try_get(0)?;
    let in_last_day: i64 = row.try_get(1)?;
    Ok(throttle.drops(m.created_at, last, in_last_day.max(0) as u64))
}

/// Queues `m` unless `throttle` drops it (see `dropped`); whether it was queued.
pub(super) fn enqueue_throttled(
    c: &mut Db<'_, Transaction<'_>>,
    m: &NewMail,
    throttle: &MailThrottle,
) -> PgResult<bool> {
    if dropped(c, m, throttle)? {
        return Ok(false);
    }
    enqueue(c, m)?;
    Ok(true)
}

const COLS: &str = "id, kind, user_id, to_address, payload, status, attempts, next_attempt_at,
                    lease_until, last_error, created_at, finished_at";

fn mail_at(r: &Row) -> PgResult<OutboxMail> {
    let attempts: i32 = r.try_get(6)?;
    Ok(OutboxMail {
        id: r.try_get(0)?,
        kind: parsed(r, 1)?,
        user_id: r.try_get(2)?,
        to: r.try_get(3)?,
        payload: r.try_get(4)?,
        status: parsed(r, 5)?,
        attempts: attempts.max(0) as u32,
        next_attempt_at: r.try_get(7)?,
        lease_until: r.try_get(8)?,
        last_error: r.try_get(9)?,
        created_at: r.try_get(10)?,
        finished_at: r.try_get(11)?,
    })
}

/// `Store::lease_mails`: one `UPDATE` over the due rows picked `FOR UPDATE SKIP LOCKED`.
/// The row locks keep two instances (or two workers) from leasing one mail: a row another
/// transaction is leasing right now is skipped, not waited for and then leased again; once
/// that transaction commits, the row is `sending` with a lease in the future and no longer due.
pub(super) fn lease(
    c: &mut Db<'_, impl GenericClient>,
    now: Millis,
    lease_until: Millis,
    limit: u32,
) -> PgResult<Vec<OutboxMail>> {
    let limit = i64::from(limit);
    c.query(
        &format!(
            "UPDATE mail_outbox
                SET status = 'sending', attempts = attempts + 1, lease_until = $2
              WHERE id IN (SELECT id FROM mail_outbox
                            WHERE (status = 'queued' AND next_attempt_at <= $1)
                               OR (status = 'sending' AND lease_until <= $1)
                            ORDER BY next_attempt_at, created_at
                            LIMIT $3
                              FOR UPDATE SKIP LOCKED)
          RETURNING {COLS}"
        ),
        &[&now, &lease_until, &limit],
    )?
    .iter()
    .map(mail_at)
    .collect()
}

/// `Store::settle_mail`: ends the lease `lease_until` of mail `id` as `outcome` says (with
/// `audit`, when given, in the same transaction); `false` when the lease is not ours any more
/// (the conditional `UPDATE` locks the row, so of a late worker and the one that took the
/// lease over only the owner of the current lease settles it).
pub(super) fn settle(
    c: &mut Db<'_, impl GenericClient>,
    id: Uuid,
    lease_until: Millis,
    outcome: &Settle,
    now: Millis,
    audit: Option<&AuditEvent>,
) -> PgResult<bool> {
    let (status, next, error, finished) = match outcome {
        Settle::Sent => ("sent", None, None, Some(now)),
        Settle::Retry { at, error } => ("queued", Some(*at), Some(error.as_str()), None),
        Settle::Failed { error } => ("failed", None, Some(error.as_str()), Some(now)),
    };
    let n = c.execute(
        "UPDATE mail_outbox
            SET status = $3, next_attempt_at = COALESCE($4, next_attempt_at),
                last_error = COALESCE($5, last_error), finished_at = $6, lease_until = NULL
          WHERE id = $1 AND status = 'sending' AND lease_until = $2",
        &[&id, &lease_until, &status, &next, &error, &finished],
    )?;
    if n == 1 {
        if let Some(e) = audit {
            super::audit::insert(c, e)?;
        }
    }
    Ok(n == 1)
}

/// `Store::outbox_counts`.
pub(super) fn counts(c: &mut Db<'_, impl GenericClient>) -> PgResult<OutboxCounts> {
    let mut out = OutboxCounts::default();
    for r in c.query(
        "SELECT status, COUNT(*), MIN(created_at) FROM mail_outbox GROUP BY status",
        &[],
    )? {
        let status: MailStatus = parsed(&r, 0)?;
        let n: i64 = r.try_get(1)?;
        let n = n.max(0) as u64;
        match status {
            MailStatus::Queued => {
                out.queued = n;
                out.oldest_queued_at = r.try_get(2)?;
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
    c: &mut Db<'_, impl GenericClient>,
    status: Option<MailStatus>,
) -> PgResult<Vec<OutboxMail>> {
    let status = status.map(|s| s.as_str());
    c.query(
        &format!(
            "SELECT {COLS} FROM mail_outbox WHERE $1::TEXT IS NULL OR status = $1
              ORDER BY created_at, id"
        ),
        &[&status],
    )?
    .iter()
    .map(mail_at)
    .collect()
}

/// `Store::requeue_mails`: queues failed mails again (`id`, or every failed one), due at
/// `now`, their attempts counted afresh.
pub(super) fn requeue(
    c: &mut Db<'_, impl GenericClient>,
    id: Option<Uuid>,
    now: Millis,
) -> PgResult<usize> {
    let n = c.execute(
        "UPDATE mail_outbox
            SET status = 'queued', attempts = 0, next_attempt_at = $2, finished_at = NULL
          WHERE status = 'failed' AND ($1::UUID IS NULL OR id = $1)",
        &[&id, &now],
    )?;
    Ok(n as usize)
}

/// Fails the user's mails with a link that are not handed over yet (queued, or leased by a
/// worker that has not settled them): a credential change kills every outstanding link
/// (CONTRACT 10.2), and a link is minted only when its mail is handed over, so a mail queued
/// before the change must not go out with a fresh one. Returns how many.
pub(super) fn cancel_links(
    c: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    now: Millis,
) -> PgResult<usize> {
    let n = c.execute(
        "UPDATE mail_outbox
            SET status = 'failed', last_error = 'credential_changed: the link died with the change',
                finished_at = $2, lease_until = NULL
          WHERE user_id = $1 AND status IN ('queued', 'sending')
            AND kind IN ('password_reset', 'verify_email', 'email_change_new', 'email_change_old')",
        &[&user_id, &now],
    )?;
    Ok(n as usize)
}
