//! Store layer (SQLite): passkeys (`domain::passkeys`, table `passkeys`, CONTRACT 11.3).
//! Free functions that `impl Store for SqliteStore` calls.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::uuid_col;
use crate::domain::passkeys::{PasskeyInsert, StoredPasskey};
use crate::domain::time::Millis;

const COLS: &str =
    "id, user_id, credential_id, name, credential, sign_count, created_at, last_used_at";

fn passkey_at(r: &Row<'_>) -> rusqlite::Result<StoredPasskey> {
    let count: i64 = r.get(5)?;
    Ok(StoredPasskey {
        id: uuid_col(r, 0)?,
        user_id: uuid_col(r, 1)?,
        credential_id: r.get(2)?,
        name: r.get(3)?,
        credential: r.get(4)?,
        sign_count: count.clamp(0, i64::from(u32::MAX)) as u32,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
    })
}

/// `Store::passkeys`: the user's passkeys, oldest first.
pub(super) fn of_user(c: &Connection, user_id: Uuid) -> rusqlite::Result<Vec<StoredPasskey>> {
    c.prepare_cached(&format!(
        "SELECT {COLS} FROM passkeys WHERE user_id = ?1 ORDER BY created_at, id"
    ))?
    .query_map(params![user_id.to_string()], passkey_at)?
    .collect()
}

/// `Store::passkey_by_credential_id`.
pub(super) fn by_credential_id(
    c: &Connection,
    credential_id: &str,
) -> rusqlite::Result<Option<StoredPasskey>> {
    c.prepare_cached(&format!(
        "SELECT {COLS} FROM passkeys WHERE credential_id = ?1"
    ))?
    .query_row(params![credential_id], passkey_at)
    .optional()
}

/// `Store::insert_passkey`, in the caller's write transaction (`BEGIN IMMEDIATE`: no other
/// writer between the count, the duplicate check and the insert).
pub(super) fn insert(
    tx: &Connection,
    p: &StoredPasskey,
    max: u64,
    keep_session: Option<Uuid>,
    now: Millis,
) -> rusqlite::Result<PasskeyInsert> {
    let user = p.user_id.to_string();
    let taken: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM passkeys WHERE credential_id = ?1)")?
        .query_row(params![p.credential_id], |r| r.get(0))?;
    if taken {
        return Ok(PasskeyInsert::Duplicate);
    }
    let count: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM passkeys WHERE user_id = ?1")?
        .query_row(params![user], |r| r.get(0))?;
    if count as u64 >= max {
        return Ok(PasskeyInsert::TooMany);
    }
    let has_totp: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = ?1)")?
        .query_row(params![user], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO passkeys
           (id, user_id, credential_id, name, credential, sign_count, created_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        p.id.to_string(),
        user,
        p.credential_id,
        p.name,
        p.credential,
        i64::from(p.sign_count),
        p.created_at,
        p.last_used_at
    ])?;
    let revoked = if count == 0 && !has_totp {
        // The account's first second factor: a session opened with the password alone (by
        // whoever knew it) does not outlive it (CONTRACT 11.3).
        tx.prepare_cached(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'second_factor_added'
             WHERE user_id = ?1 AND (?3 IS NULL OR id <> ?3)
               AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .execute(params![user, now, keep_session.map(|s| s.to_string())])?
    } else {
        0
    };
    Ok(PasskeyInsert::Inserted { revoked })
}

/// `Store::delete_passkey`: true when the user had it.
pub(super) fn delete(tx: &Connection, user_id: Uuid, id: Uuid) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached("DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2")?
        .execute(params![id.to_string(), user_id.to_string()])?;
    Ok(n > 0)
}

/// `Store::record_passkey_use`: the credential as updated by the assertion, its counter and
/// the time of use.
pub(super) fn record_use(
    tx: &Connection,
    id: Uuid,
    credential: &str,
    sign_count: u32,
    now: Millis,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE passkeys SET credential = ?2, sign_count = ?3, last_used_at = ?4 WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        credential,
        i64::from(sign_count),
        now
    ])?;
    Ok(())
}
