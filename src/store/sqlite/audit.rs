//! Store layer (SQLite): the audit log: appending an event, and reading events back newest
//! first.

use rusqlite::{params, Connection};

use super::opt_uuid_col;
use crate::domain::audit_chain::AuditEntry;
use crate::domain::{AuditEvent, AuditQuery};

pub(super) fn insert(tx: &Connection, e: &AuditEvent) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit_events (at, event, user_id, email, ip, user_agent, outcome, reason,
                                   actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.at,
        e.event,
        e.user_id.map(|u| u.to_string()),
        e.email,
        e.ip,
        e.user_agent,
        e.outcome,
        e.reason,
        e.actor
    ])
    .map(|_| ())
}

/// Newest first, each with its place in the chain once sealed.
pub(super) fn events(c: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditEntry>> {
    c.prepare_cached(
        "SELECT at, event, user_id, email, ip, user_agent, outcome, reason, actor, seq, hash
         FROM audit_events
         WHERE (?1 IS NULL OR email = ?1 OR user_id = ?5)
           AND (?2 IS NULL OR event = ?2)
           AND (?3 IS NULL OR at >= ?3)
         ORDER BY id DESC
         LIMIT ?4",
    )?
    .query_map(
        params![
            q.email,
            q.event,
            q.since,
            q.limit,
            q.user_id.map(|u| u.to_string())
        ],
        |r| {
            Ok(AuditEntry {
                event: event_of(r)?,
                seq: r.get(9)?,
                hash: r.get(10)?,
            })
        },
    )?
    .collect()
}

/// The event in columns 0 to 8 (`at, event, user_id, email, ip, user_agent, outcome, reason,
/// actor`).
pub(super) fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        at: r.get(0)?,
        event: r.get(1)?,
        user_id: opt_uuid_col(r, 2)?,
        email: r.get(3)?,
        ip: r.get(4)?,
        user_agent: r.get(5)?,
        outcome: r.get(6)?,
        reason: r.get(7)?,
        actor: r.get(8)?,
    })
}
