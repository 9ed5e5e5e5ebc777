//! Store layer (PostgreSQL): passkeys (`domain::passkeys`, table `passkeys`, CONTRACT 11.3).
//! Free functions that `impl Store for PostgresStore` calls.

use postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::PgResult;
use crate::domain::passkeys::{PasskeyInsert, StoredPasskey};
use crate::domain::time::Millis;

const COLS: &str =
    "id, user_id, credential_id, name, credential, sign_count, created_at, last_used_at";

fn passkey_at(r: &Row) -> PgResult<StoredPasskey> {
    let count: i64 = r.try_get(5)?;
    Ok(StoredPasskey {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        credential_id: r.try_get(2)?,
        name: r.try_get(3)?,
        credential: r.try_get(4)?,
        sign_count: count.clamp(0, i64::from(u32::MAX)) as u32,
        created_at: r.try_get(6)?,
        last_used_at: r.try_get(7)?,
    })
}

/// `Store::passkeys`: the user's passkeys, oldest first.
pub(super) fn of_user(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
) -> PgResult<Vec<StoredPasskey>> {
    c.query(
        &format!("SELECT {COLS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"),
        &[&user_id],
    )?
    .iter()
    .map(passkey_at)
    .collect()
}

/// `Store::passkey_by_credential_id`.
pub(super) fn by_credential_id(
    c: &mut Db<'_, impl GenericClient>,
    credential_id: &str,
) -> PgResult<Option<StoredPasskey>> {
    c.query_opt(
        &format!("SELECT {COLS} FROM passkeys WHERE credential_id = $1"),
        &[&credential_id],
    )?
    .map(|r| passkey_at(&r))
    .transpose()
}

/// `Store::insert_passkey`, in one transaction. The user's row is locked first (`FOR
/// UPDATE`): two registrations of one account, at one instance or two, count its passkeys
/// one after the other, so `max` holds and exactly one of them is the "first second factor".
/// A duplicate credential id racing in from another account is caught by the unique index
/// (`ON CONFLICT DO NOTHING`).
pub(super) fn insert(
    tx: &mut Db<'_, Transaction<'_>>,
    p: &StoredPasskey,
    max: u64,
    keep_session: Option<Uuid>,
    now: Millis,
) -> PgResult<PasskeyInsert> {
    tx.query_opt(
        "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
        &[&p.user_id],
    )?;
    let count: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM passkeys WHERE user_id = $1",
            &[&p.user_id],
        )?
        .try_get(0)?;
    let taken: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM passkeys WHERE credential_id = $1)",
            &[&p.credential_id],
        )?
        .try_get(0)?;
    if taken {
        return Ok(PasskeyInsert::Duplicate);
    }
    if count as u64 >= max {
        return Ok(PasskeyInsert::TooMany);
    }
    let has_totp: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1)",
            &[&p.user_id],
        )?
        .try_get(0)?;
    let inserted = tx.execute(
        "INSERT INTO passkeys
           (id, user_id, credential_id, name, credential, sign_count, created_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (credential_id) DO NOTHING",
        &[
            &p.id,
            &p.user_id,
            &p.credential_id,
            &p.name,
            &p.credential,
            &i64::from(p.sign_count),
            &p.created_at,
            &p.last_used_at,
        ],
    )?;
    if inserted == 0 {
        return Ok(PasskeyInsert::Duplicate);
    }
    let revoked = if count == 0 && !has_totp {
        // The account's first second factor: a session opened with the password alone (by
        // whoever knew it) does not outlive it (CONTRACT 11.3).
        tx.execute(
            "UPDATE sessions SET revoked_at = $2, revoke_reason = 'second_factor_added'
             WHERE user_id = $1 AND id IS DISTINCT FROM $3
               AND revoked_at IS NULL AND expires_at > $2",
            &[&p.user_id, &now, &keep_session],
        )? as usize
    } else {
        0
    };
    Ok(PasskeyInsert::Inserted { revoked })
}

/// `Store::delete_passkey`: true when the user had it.
pub(super) fn delete(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    id: Uuid,
) -> PgResult<bool> {
    let n = c.execute(
        "DELETE FROM passkeys WHERE id = $1 AND user_id = $2",
        &[&id, &user_id],
    )?;
    Ok(n > 0)
}

/// `Store::record_passkey_use`.
pub(super) fn record_use(
    c: &mut Db<'_, impl GenericClient>,
    id: Uuid,
    credential: &str,
    sign_count: u32,
    now: Millis,
) -> PgResult<()> {
    c.execute(
        "UPDATE passkeys SET credential = $2, sign_count = $3, last_used_at = $4 WHERE id = $1",
        &[&id, &credential, &i64::from(sign_count), &now],
    )?;
    Ok(())
}
