//! Store layer: SQLite signing keys (table `signing_keys`, migration V6). Free functions on a
//! connection; `SqliteStore` runs the writes on its writer (`BEGIN IMMEDIATE`).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::parsed_col;
use crate::domain::keys::{KeyRevokeOutcome, StoredKey, StoredKeyState};
use crate::domain::time::Millis;

const KEY_COLS: &str = "kid, key_use, algorithm, state, created_at, retires_at, revoked_at,
                        public_key, private_key, sealed";

fn key_row(row: &Row<'_>) -> rusqlite::Result<StoredKey> {
    Ok(StoredKey {
        kid: row.get(0)?,
        key_use: parsed_col(row, 1)?,
        algorithm: row.get(2)?,
        state: parsed_col(row, 3)?,
        created_at: row.get(4)?,
        retires_at: row.get(5)?,
        revoked_at: row.get(6)?,
        public_key: row.get(7)?,
        private_key: row.get(8)?,
        sealed: row.get::<_, i64>(9)? != 0,
    })
}

/// Every key, oldest first.
pub(super) fn all(c: &Connection) -> rusqlite::Result<Vec<StoredKey>> {
    c.prepare_cached(&format!(
        "SELECT {KEY_COLS} FROM signing_keys ORDER BY created_at, kid"
    ))?
    .query_map([], key_row)?
    .collect()
}

/// The key set's generation.
pub(super) fn generation(c: &Connection) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT generation FROM signing_key_generation WHERE id = 1")?
        .query_row([], |r| r.get(0))
}

fn bump(c: &Connection) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE signing_key_generation SET generation = generation + 1 WHERE id = 1")?
        .execute([])
        .map(|_| ())
}

fn insert(c: &Connection, k: &StoredKey) -> rusqlite::Result<()> {
    insert_row(c, k)?;
    bump(c)
}

fn insert_row(c: &Connection, k: &StoredKey) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO signing_keys ({KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        k.kid,
        k.key_use.as_str(),
        k.algorithm,
        StoredKeyState::Active.as_str(),
        k.created_at,
        k.retires_at,
        k.revoked_at,
        k.public_key,
        k.private_key,
        k.sealed as i64,
    ])?;
    Ok(())
}

/// Inserts `k` as active unless its use has an active key (in the writer's `BEGIN IMMEDIATE`
/// transaction, so two starting processes cannot both see "none" and both insert; the
/// partial unique index `signing_keys_one_active` backs it up).
pub(super) fn insert_if_none_active(c: &Connection, k: &StoredKey) -> rusqlite::Result<bool> {
    let existing: Option<String> = c
        .prepare_cached("SELECT kid FROM signing_keys WHERE key_use = ?1 AND state = 'active'")?
        .query_row([k.key_use.as_str()], |r| r.get(0))
        .optional()?;
    if existing.is_some() {
        return Ok(false);
    }
    insert(c, k)?;
    Ok(true)
}

/// Retires the active key of `k`'s use until `retires_at` and inserts `k` as active.
pub(super) fn rotate(
    c: &Connection,
    k: &StoredKey,
    retires_at: Millis,
) -> rusqlite::Result<Option<String>> {
    // Conditional on state = 'active' inside the write transaction: two concurrent rotations
    // each retire exactly the key that was active when they ran, never a second time.
    let previous: Option<String> = c
        .prepare_cached(
            "UPDATE signing_keys
             SET state = 'retiring', retires_at = ?2,
                 private_key = CASE WHEN public_key IS NULL THEN private_key ELSE NULL END
             WHERE key_use = ?1 AND state = 'active'
             RETURNING kid",
        )?
        .query_row(params![k.key_use.as_str(), retires_at], |r| r.get(0))
        .optional()?;
    insert(c, k)?;
    Ok(previous)
}

/// Revokes `kid`; replaces it with `replacement` when it was the active key.
pub(super) fn revoke(
    c: &Connection,
    kid: &str,
    now: Millis,
    replacement: Option<&StoredKey>,
) -> rusqlite::Result<KeyRevokeOutcome> {
    let state: Option<StoredKeyState> = c
        .prepare_cached("SELECT state FROM signing_keys WHERE kid = ?1")?
        .query_row([kid], |r| parsed_col(r, 0))
        .optional()?;
    let Some(state) = state else {
        return Ok(KeyRevokeOutcome::Unknown);
    };
    if state == StoredKeyState::Revoked {
        return Ok(KeyRevokeOutcome::AlreadyRevoked);
    }
    c.prepare_cached(
        "UPDATE signing_keys SET state = 'revoked', revoked_at = ?2, private_key = NULL, sealed = 0
         WHERE kid = ?1",
    )?
    .execute(params![kid, now])?;
    let mut replaced_by = None;
    if state == StoredKeyState::Active {
        if let Some(new) = replacement {
            insert_row(c, new)?;
            replaced_by = Some(new.kid.clone());
        }
    }
    bump(c)?;
    Ok(KeyRevokeOutcome::Revoked { replaced_by })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::domain::keys::{KeyRevokeOutcome, KeyUse, StoredKey, StoredKeyState};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Store, StoreOptions};

    fn key(kid: &str, key_use: KeyUse, public: bool) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            key_use,
            algorithm: if public { "EdDSA" } else { "HS256" }.into(),
            state: StoredKeyState::Active,
            created_at: 1,
            retires_at: None,
            revoked_at: None,
            public_key: public.then(|| vec![1; 32]),
            private_key: Some(vec![2; 32]),
            sealed: false,
        }
    }

    #[test]
    fn key_set_operations_are_whole_and_bump_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let store = SqliteStore::open(
            path.to_str().unwrap(),
            &StoreOptions {
                pool_size: 2,
                busy_timeout: Duration::from_secs(5),
                health: crate::store::health::DbHealth::uncounted(),
            },
        )
        .unwrap();
        store.migrate().unwrap();
        let g0 = store.key_set_version().unwrap();
        assert!(store
            .insert_signing_key_if_none_active(&key("a1", KeyUse::Access, true))
            .unwrap());
        assert!(!store
            .insert_signing_key_if_none_active(&key("a2", KeyUse::Access, true))
            .unwrap());
        assert!(store
            .insert_signing_key_if_none_active(&key("r1", KeyUse::Refresh, false))
            .unwrap());
        assert_eq!(store.key_set_version().unwrap(), g0 + 2);

        let previous = store
            .rotate_signing_key(&key("a2", KeyUse::Access, true), 500)
            .unwrap();
        assert_eq!(previous.as_deref(), Some("a1"));
        let previous = store
            .rotate_signing_key(&key("r2", KeyUse::Refresh, false), 600)
            .unwrap();
        assert_eq!(previous.as_deref(), Some("r1"));
        let all = store.signing_keys().unwrap();
        let find = |kid: &str| all.iter().find(|k| k.kid == kid).unwrap().clone();
        let a1 = find("a1");
        assert_eq!(
            (a1.state, a1.retires_at),
            (StoredKeyState::Retiring, Some(500))
        );
        assert_eq!(
            a1.private_key, None,
            "a retiring Ed25519 key keeps its public part only"
        );
        assert!(
            find("r1").private_key.is_some(),
            "an HMAC key needs its secret to verify"
        );

        let outcome = store
            .revoke_signing_key("a2", 700, Some(&key("a3", KeyUse::Access, true)))
            .unwrap();
        assert_eq!(
            outcome,
            KeyRevokeOutcome::Revoked {
                replaced_by: Some("a3".into())
            }
        );
        let outcome = store
            .revoke_signing_key("r1", 700, Some(&key("r9", KeyUse::Refresh, false)))
            .unwrap();
        assert_eq!(outcome, KeyRevokeOutcome::Revoked { replaced_by: None });
        assert_eq!(
            store.revoke_signing_key("a2", 800, None).unwrap(),
            KeyRevokeOutcome::AlreadyRevoked
        );
        assert_eq!(
            store.revoke_signing_key("zz", 800, None).unwrap(),
            KeyRevokeOutcome::Unknown
        );
        let all = store.signing_keys().unwrap();
        let a2 = all.iter().find(|k| k.kid == "a2").unwrap();
        assert_eq!(
            (a2.state, a2.revoked_at),
            (StoredKeyState::Revoked, Some(700))
        );
        assert_eq!(a2.private_key, None);
        assert!(all.iter().all(|k| k.kid != "r9"));
        let mut active: Vec<&str> = all
            .iter()
            .filter(|k| k.state == StoredKeyState::Active)
            .map(|k| k.kid.as_str())
            .collect();
        active.sort();
        assert_eq!(active, ["a3", "r2"]);
        assert_eq!(store.key_set_version().unwrap(), g0 + 6);
    }
}
