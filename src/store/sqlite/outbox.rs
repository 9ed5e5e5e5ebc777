//! Store layer (SQLite): the mail outbox (`domain::mail`). `enqueue` runs inside the write
//! transaction of the request that decided to send the mail.

use rusqlite::{params, Connection};

use crate::domain::mail::NewMail;

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
