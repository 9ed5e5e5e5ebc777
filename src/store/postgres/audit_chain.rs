//! Store layer (PostgreSQL): the audit chain: sealing unsealed events, walking the chain in one
//! snapshot, and pruning its oldest events (`audit.retention`). The decisions (hashes, the
//! verdict) are `domain::audit_chain`'s; this file fetches, locks and writes.

use postgres::GenericClient;

use super::audit::event_of;
use super::db::Db;
use super::PgResult;
use crate::domain::audit_chain::{self, Anchor, ChainState, ChainedEvent, Walk, SEAL_BATCH};
use crate::domain::time::Millis;
use crate::store::ChainReport;

/// Rows read per query while walking the chain.
const PAGE: i64 = 5000;

const EVENT_COLUMNS: &str = "at, event, user_id, email, ip, user_agent, outcome, reason, actor";

const STATE: &str = "SELECT base_seq, base_hash, head_seq, head_hash FROM audit_chain WHERE id = 1";

fn state_of(r: &postgres::Row) -> PgResult<ChainState> {
    Ok(ChainState {
        base_seq: r.try_get(0)?,
        base_hash: r.try_get(1)?,
        head_seq: r.try_get(2)?,
        head_hash: r.try_get(3)?,
    })
}

/// The chain head, locked until the transaction ends. `FOR UPDATE` on the chain-head row:
/// two instances sealing (or one sealing while another prunes) at once would both read the
/// same head and hand out the same seqs, forking the chain; the second waits here and then
/// reads the head the first one committed.
fn locked_state(tx: &mut Db<'_, impl GenericClient>) -> PgResult<ChainState> {
    let row = tx.query_one(&format!("{STATE} FOR UPDATE"), &[])?;
    state_of(&row)
}

fn unsealed(c: &mut Db<'_, impl GenericClient>) -> PgResult<u64> {
    let n: i64 = c
        .query_one("SELECT COUNT(*) FROM audit_events WHERE seq IS NULL", &[])?
        .try_get(0)?;
    Ok(n as u64)
}

/// Whether any event awaits sealing (a read through the partial index: an idle server's
/// sealer takes no lock).
pub(super) fn any_unsealed(c: &mut Db<'_, postgres::Client>) -> PgResult<bool> {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq IS NULL)",
        &[],
    )?
    .try_get(0)
}

/// `Store::seal_audit` inside the caller's transaction.
pub(super) fn seal(tx: &mut Db<'_, postgres::Transaction<'_>>) -> PgResult<usize> {
    let head = locked_state(tx)?;
    // Read after the lock (READ COMMITTED: a fresh snapshot per statement): an event another
    // sealer sealed while this one waited is not sealed twice.
    let rows = tx
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS}, id FROM audit_events
                 WHERE seq IS NULL ORDER BY id LIMIT $1"
            ),
            &[&(SEAL_BATCH as i64)],
        )?
        .iter()
        .map(|r| Ok((r.try_get::<_, i64>(9)?, event_of(r)?)))
        .collect::<PgResult<Vec<_>>>()?;
    if rows.is_empty() {
        return Ok(0);
    }
    let Some(sealed) = audit_chain::seal(head.head_seq, &head.head_hash, &rows) else {
        tracing::error!("audit chain head row holds a malformed hash: nothing sealed");
        return Ok(0);
    };
    let ids: Vec<i64> = sealed.iter().map(|s| s.0).collect();
    let seqs: Vec<i64> = sealed.iter().map(|s| s.1).collect();
    let hashes: Vec<String> = sealed.iter().map(|s| s.2.clone()).collect();
    tx.execute(
        "UPDATE audit_events AS a SET seq = v.seq, hash = v.hash
         FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[]) AS v(id, seq, hash)
         WHERE a.id = v.id",
        &[&ids, &seqs, &hashes],
    )?;
    if let Some((_, seq, hash)) = sealed.last() {
        tx.execute(
            "UPDATE audit_chain SET head_seq = $1, head_hash = $2 WHERE id = 1",
            &[seq, hash],
        )?;
    }
    Ok(sealed.len())
}

/// `Store::verify_audit_chain` in one REPEATABLE READ, READ ONLY transaction: one snapshot
/// for the head row and every event, so a sealer committing meanwhile cannot make a sound
/// chain look broken.
pub(super) fn verify(
    c: &mut Db<'_, impl GenericClient>,
    anchor: Option<Anchor>,
) -> PgResult<ChainReport> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    let report = walk(c, anchor);
    let _ = c.batch_execute("ROLLBACK");
    report
}

fn walk(c: &mut Db<'_, impl GenericClient>, anchor: Option<Anchor>) -> PgResult<ChainReport> {
    let state = state_of(&c.query_one(STATE, &[])?)?;
    let unsealed = unsealed(c)?;
    let mut walk = Walk::new(state, anchor);
    let mut after = i64::MIN;
    'pages: loop {
        let rows = c.query(
            &format!(
                "SELECT {EVENT_COLUMNS}, seq, hash FROM audit_events
                 WHERE seq IS NOT NULL AND seq > $1 ORDER BY seq LIMIT $2"
            ),
            &[&after, &PAGE],
        )?;
        let last_page = (rows.len() as i64) < PAGE;
        for r in &rows {
            let row = ChainedEvent {
                event: event_of(r)?,
                seq: r.try_get(9)?,
                hash: r.try_get(10)?,
            };
            after = row.seq;
            if !walk.visit(&row) {
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

/// `Store::audit_chain_head`, in one snapshot.
pub(super) fn head(c: &mut Db<'_, impl GenericClient>) -> PgResult<(ChainState, u64)> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    let head = c
        .query_one(STATE, &[])
        .and_then(|r| state_of(&r))
        .and_then(|s| Ok((s, unsealed(c)?)));
    let _ = c.batch_execute("ROLLBACK");
    head
}

/// `Store::prune_audit` inside the caller's transaction, holding the chain head (see
/// `locked_state`) so no sealer moves it meanwhile.
pub(super) fn prune(
    tx: &mut Db<'_, impl GenericClient>,
    cutoff: Millis,
    dry_run: bool,
) -> PgResult<u64> {
    let chain = locked_state(tx)?;
    let keep_from: Option<i64> = tx
        .query_one(
            "SELECT MIN(seq) FROM audit_events WHERE seq IS NOT NULL AND at >= $1",
            &[&cutoff],
        )?
        .try_get(0)?;
    let last = keep_from.map_or(chain.head_seq, |s| s - 1);
    if last <= chain.base_seq {
        return Ok(0);
    }
    let n: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM audit_events WHERE seq IS NOT NULL AND seq <= $1",
            &[&last],
        )?
        .try_get(0)?;
    if dry_run || n == 0 {
        return Ok(n as u64);
    }
    let hash: Option<String> =
        match tx.query_opt("SELECT hash FROM audit_events WHERE seq = $1", &[&last])? {
            Some(r) => r.try_get(0)?,
            None => None,
        };
    let Some(hash) = hash else {
        // The chain is already broken there: deleting would hide it.
        tracing::error!(seq = last, "audit chain broken: retention deletes nothing");
        return Ok(0);
    };
    tx.execute(
        "UPDATE audit_chain SET base_seq = $1, base_hash = $2 WHERE id = 1",
        &[&last, &hash],
    )?;
    tx.execute(
        "DELETE FROM audit_events WHERE seq IS NOT NULL AND seq <= $1",
        &[&last],
    )
}
