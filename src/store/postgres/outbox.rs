//! Store layer (PostgreSQL): the mail outbox (`domain::mail`). `enqueue` runs inside the
//! transaction of the request that decided to send the mail.

use postgres::GenericClient;

use super::db::Db;
use super::PgResult;
use crate::domain::mail::NewMail;

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
