//! Store layer (SQLite): the audit chain: sealing unsealed events, walking the chain in one
//! snapshot, and pruning its oldest events (`audit.retention`). The decisions (hashes, the
//! verdict) are `domain::audit_chain`'s; this file fetches, locks and writes.

use rusqlite::{params, Connection, OptionalExtension};

use super::audit::event_of;
use crate::domain::audit_chain::{self, Anchor, ChainState, ChainedEvent, Walk, SEAL_BATCH};
use crate::domain::time::Millis;
use crate::store::ChainReport;

/// Rows read per query while walking the chain.
const PAGE: i64 = 5000;

const EVENT_COLUMNS: &str = "at, event, user_id, email, ip, user_agent, outcome, reason, actor";

pub(super) fn state(c: &Connection) -> rusqlite::Result<ChainState> {
    c.query_row(
        "SELECT base_seq, base_hash, head_seq, head_hash FROM audit_chain WHERE id = 1",
        [],
        |r| {
            Ok(ChainState {
                base_seq: r.get(0)?,
                base_hash: r.get(1)?,
                head_seq: r.get(2)?,
                head_hash: r.get(3)?,
            })
        },
    )
}

pub(super) fn unsealed(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row(
        "SELECT COUNT(*) FROM audit_events WHERE seq IS NULL",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Whether any event awaits sealing (a read through the partial index: an idle server's
/// sealer takes no write lock).
pub(super) fn any_unsealed(c: &Connection) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq IS NULL)")?
        .query_row([], |r| r.get(0))
}

/// `Store::seal_audit` inside the caller's `BEGIN IMMEDIATE` transaction (`SqliteStore::write`):
/// the write lock, taken before the chain head is read, is what keeps two sealers (two
/// processes on one file) from handing out the same seq or forking the chain.
pub(super) fn seal(tx: &Connection) -> rusqlite::Result<usize> {
    let head = state(tx)?;
    let rows = tx
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, id FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT ?1"
        ))?
        .query_map([SEAL_BATCH as i64], |r| {
            Ok((r.get::<_, i64>(9)?, event_of(r)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Ok(0);
    }
    let Some(sealed) = audit_chain::seal(head.head_seq, &head.head_hash, &rows) else {
        tracing::error!("audit chain head row holds a malformed hash: nothing sealed");
        return Ok(0);
    };
    let mut update =
        tx.prepare_cached("UPDATE audit_events SET seq = ?2, hash = ?3 WHERE id = ?1")?;
    for (id, seq, hash) in &sealed {
        update.execute(params![id, seq, hash])?;
    }
    if let Some((_, seq, hash)) = sealed.last() {
        tx.execute(
            "UPDATE audit_chain SET head_seq = ?1, head_hash = ?2 WHERE id = 1",
            params![seq, hash],
        )?;
    }
    Ok(sealed.len())
}

/// `Store::verify_audit_chain` on a read connection, in one read transaction: WAL gives it a
/// snapshot, so a sealer committing meanwhile cannot make a sound chain look broken.
pub(crate) fn verify(c: &Connection, anchor: Option<Anchor>) -> rusqlite::Result<ChainReport> {
    c.execute_batch("BEGIN DEFERRED")?;
    let report = walk(c, anchor);
    let _ = c.execute_batch("ROLLBACK");
    report
}

fn walk(c: &Connection, anchor: Option<Anchor>) -> rusqlite::Result<ChainReport> {
    let state = state(c)?;
    let unsealed = unsealed(c)?;
    let mut walk = Walk::new(state, anchor);
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS}, seq, hash FROM audit_events
         WHERE seq IS NOT NULL AND seq > ?1 ORDER BY seq LIMIT ?2"
    ))?;
    let mut after = i64::MIN;
    'pages: loop {
        let rows = stmt
            .query_map(params![after, PAGE], |r| {
                Ok(ChainedEvent {
                    event: event_of(r)?,
                    seq: r.get(9)?,
                    hash: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let last_page = (rows.len() as i64) < PAGE;
        for row in &rows {
            after = row.seq;
            if !walk.visit(row) {
                break 'pages;
            }
        }
        if last_page {
            break;
        }
    }
    Ok(ChainReport {
        verdict: walk.finish(),
        unsealed,
    })
}

/// `Store::audit_chain_head`, in one read transaction.
pub(super) fn head(c: &Connection) -> rusqlite::Result<(ChainState, u64)> {
    c.execute_batch("BEGIN DEFERRED")?;
    let head = state(c).and_then(|s| Ok((s, unsealed(c)?)));
    let _ = c.execute_batch("ROLLBACK");
    head
}

/// `Store::prune_audit` inside the caller's `BEGIN IMMEDIATE` transaction (no sealer moves the
/// head or seals meanwhile).
pub(super) fn prune(tx: &Connection, cutoff: Millis, dry_run: bool) -> rusqlite::Result<u64> {
    let chain = state(tx)?;
    // The newest event to delete: the one before the first sealed event to keep (or the head).
    let keep_from: Option<i64> = tx
        .query_row(
            "SELECT MIN(seq) FROM audit_events WHERE seq IS NOT NULL AND at >= ?1",
            [cutoff],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let last = keep_from.map_or(chain.head_seq, |s| s - 1);
    if last <= chain.base_seq {
        return Ok(0);
    }
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM audit_events WHERE seq IS NOT NULL AND seq <= ?1",
        [last],
        |r| r.get(0),
    )?;
    if dry_run || n == 0 {
        return Ok(n as u64);
    }
    let hash: Option<String> = tx
        .query_row(
            "SELECT hash FROM audit_events WHERE seq = ?1",
            [last],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(hash) = hash else {
        // The chain is already broken there: deleting would hide it.
        tracing::error!(seq = last, "audit chain broken: retention deletes nothing");
        return Ok(0);
    };
    tx.execute(
        "UPDATE audit_chain SET base_seq = ?1, base_hash = ?2 WHERE id = 1",
        params![last, hash],
    )?;
    tx.execute(
        "DELETE FROM audit_events WHERE seq IS NOT NULL AND seq <= ?1",
        [last],
    )
    .map(|n| n as u64)
}
