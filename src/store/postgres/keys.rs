//! Store layer (PostgreSQL): signing keys (table `signing_keys`, migration V6). Every write
//! first locks the key set's generation row: key-set changes from any instance or the CLI
//! run one at a time, and each bumps the generation once.

use postgres::{GenericClient, Row, Transaction};

use super::db::Db;
use super::{parsed, PgResult};
use crate::domain::keys::{KeyRevokeOutcome, StoredKey, StoredKeyState};
use crate::domain::time::Millis;

const KEY_COLS: &str = "kid, key_use, algorithm, state, created_at, retires_at, revoked_at,
                        public_key, private_key, sealed";

fn key_row(row: &Row) -> PgResult<StoredKey> {
    Ok(StoredKey {
        kid: row.try_get(0)?,
        key_use: parsed(row, 1)?,
        algorithm: row.try_get(2)?,
        state: parsed(row, 3)?,
        created_at: row.try_get(4)?,
        retires_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        public_key: row.try_get(7)?,
        private_key: row.try_get(8)?,
        sealed: row.try_get(9)?,
    })
}

/// Every key, oldest first.
pub(super) fn all(c: &mut Db<'_, impl GenericClient>) -> PgResult<Vec<StoredKey>> {
    c.query(
        &format!("SELECT {KEY_COLS} FROM signing_keys ORDER BY created_at, kid"),
        &[],
    )?
    .iter()
    .map(key_row)
    .collect()
}

/// The key set's generation.
pub(super) fn generation(c: &mut Db<'_, impl GenericClient>) -> PgResult<i64> {
    c.query_one(
        "SELECT generation FROM signing_key_generation WHERE id = 1",
        &[],
    )?
    .try_get(0)
}

/// Locks the key set for the rest of the transaction.
/// Lock: two instances (or an instance and the CLI) changing keys at once would both see the
/// same active key and both act on it: a first start inserting two active keys, two rotations
/// retiring one key twice, a revocation replacing a key another rotation just replaced.
fn lock(tx: &mut Db<'_, Transaction<'_>>) -> PgResult<()> {
    tx.query_one(
        "SELECT generation FROM signing_key_generation WHERE id = 1 FOR UPDATE",
        &[],
    )
    .map(|_| ())
}

/// Bumps the generation, committed with the change it announces.
fn bump(tx: &mut Db<'_, Transaction<'_>>) -> PgResult<()> {
    tx.execute(
        "UPDATE signing_key_generation SET generation = generation + 1 WHERE id = 1",
        &[],
    )
    .map(|_| ())
}

fn insert_row(tx: &mut Db<'_, Transaction<'_>>, k: &StoredKey) -> PgResult<()> {
    tx.execute(
        &format!(
            "INSERT INTO signing_keys ({KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ),
        &[
            &k.kid,
            &k.key_use.as_str(),
            &k.algorithm,
            &StoredKeyState::Active.as_str(),
            &k.created_at,
            &k.retires_at,
            &k.revoked_at,
            &k.public_key,
            &k.private_key,
            &k.sealed,
        ],
    )
    .map(|_| ())
}

fn active_of(tx: &mut Db<'_, Transaction<'_>>, k: &StoredKey) -> PgResult<Option<String>> {
    tx.query_opt(
        "SELECT kid FROM signing_keys WHERE key_use = $1 AND state = 'active'",
        &[&k.key_use.as_str()],
    )?
    .map(|r| r.try_get(0))
    .transpose()
}

/// Inserts `k` as active unless its use has an active key.
pub(super) fn insert_if_none_active(
    tx: &mut Db<'_, Transaction<'_>>,
    k: &StoredKey,
) -> PgResult<bool> {
    lock(tx)?;
    if active_of(tx, k)?.is_some() {
        return Ok(false);
    }
    insert_row(tx, k)?;
    bump(tx)?;
    Ok(true)
}

/// Retires the active key of `k`'s use until `retires_at` and inserts `k` as active.
pub(super) fn rotate(
    tx: &mut Db<'_, Transaction<'_>>,
    k: &StoredKey,
    retires_at: Millis,
) -> PgResult<Option<String>> {
    lock(tx)?;
    let previous: Option<String> = tx
        .query_opt(
            "UPDATE signing_keys
             SET state = 'retiring', retires_at = $2,
                 private_key = CASE WHEN public_key IS NULL THEN private_key ELSE NULL END
             WHERE key_use = $1 AND state = 'active'
             RETURNING kid",
            &[&k.key_use.as_str(), &retires_at],
        )?
        .map(|r| r.try_get(0))
        .transpose()?;
    insert_row(tx, k)?;
    bump(tx)?;
    Ok(previous)
}

/// Revokes `kid`; replaces it with `replacement` when it was the active key.
pub(super) fn revoke(
    tx: &mut Db<'_, Transaction<'_>>,
    kid: &str,
    now: Millis,
    replacement: Option<&StoredKey>,
) -> PgResult<KeyRevokeOutcome> {
    lock(tx)?;
    let state: Option<StoredKeyState> = tx
        .query_opt("SELECT state FROM signing_keys WHERE kid = $1", &[&kid])?
        .map(|r| parsed(&r, 0))
        .transpose()?;
    let unchanged = match state {
        None => Some(KeyRevokeOutcome::Unknown),
        Some(StoredKeyState::Revoked) => Some(KeyRevokeOutcome::AlreadyRevoked),
        Some(_) => None,
    };
    if let Some(outcome) = unchanged {
        return Ok(outcome);
    }
    tx.execute(
        "UPDATE signing_keys SET state = 'revoked', revoked_at = $2, private_key = NULL,
                                 sealed = FALSE
         WHERE kid = $1",
        &[&kid, &now],
    )?;
    let mut replaced_by = None;
    if state == Some(StoredKeyState::Active) {
        if let Some(new) = replacement {
            insert_row(tx, new)?;
            replaced_by = Some(new.kid.clone());
        }
    }
    bump(tx)?;
    Ok(KeyRevokeOutcome::Revoked { replaced_by })
}
