//! Store layer (PostgreSQL): the audit trail (append-only: no locks needed).

use postgres::GenericClient;

use super::db::Db;
use super::{opt_text, text, PgResult};
use crate::domain::audit_chain::AuditEntry;
use crate::domain::{AuditEvent, AuditQuery};

pub(super) fn insert(c: &mut Db<'_, impl GenericClient>, e: &AuditEvent) -> PgResult<()> {
    c.execute(
        "INSERT INTO audit_events
             (at, event, user_id, email, ip, user_agent, outcome, reason, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &e.at,
            &text(&e.event),
            &e.user_id,
            &opt_text(&e.email),
            &opt_text(&e.ip),
            &opt_text(&e.user_agent),
            &text(&e.outcome),
            &opt_text(&e.reason),
            &opt_text(&e.actor),
        ],
    )
    .map(|_| ())
}

/// Newest first (ids are handed out in commit-ish order; ties in `at` keep insertion order),
/// each with its place in the chain once sealed.
pub(super) fn events(
    c: &mut Db<'_, impl GenericClient>,
    q: &AuditQuery,
) -> PgResult<Vec<AuditEntry>> {
    c.query(
        "SELECT at, event, user_id, email, ip, user_agent, outcome, reason, actor, seq, hash
         FROM audit_events
         WHERE ($1::TEXT IS NULL OR email = $1 OR user_id = $5)
           AND ($2::TEXT IS NULL OR event = $2)
           AND ($3::BIGINT IS NULL OR at >= $3)
         ORDER BY id DESC
         LIMIT $4",
        &[
            &opt_text(&q.email),
            &opt_text(&q.event),
            &q.since,
            &i64::from(q.limit),
            &q.user_id,
        ],
    )?
    .iter()
    .map(|r| {
        Ok(AuditEntry {
            event: event_of(r)?,
            seq: r.try_get(9)?,
            hash: r.try_get(10)?,
        })
    })
    .collect()
}

/// The event in columns 0 to 8 (`at, event, user_id, email, ip, user_agent, outcome, reason,
/// actor`).
pub(super) fn event_of(r: &postgres::Row) -> PgResult<AuditEvent> {
    Ok(AuditEvent {
        at: r.try_get(0)?,
        event: r.try_get(1)?,
        user_id: r.try_get(2)?,
        email: r.try_get(3)?,
        ip: r.try_get(4)?,
        user_agent: r.try_get(5)?,
        outcome: r.try_get(6)?,
        reason: r.try_get(7)?,
        actor: r.try_get(8)?,
    })
}
