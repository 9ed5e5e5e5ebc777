//! Store layer (SQLite): password hashes (change, upgrade after login) and the bulk import of
//! users with their existing hashes. Free functions that `impl Store for SqliteStore` calls.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::SqliteStore;
use crate::domain::time::Millis;
use crate::domain::NewUser;
use crate::store::{ImportOutcome, StoreResult};

/// See `Store::set_password_hash`.
pub(super) fn set_password_hash(
    store: &SqliteStore,
    user_id: Uuid,
    password_hash: &str,
    keep_session: Option<Uuid>,
    now: Millis,
) -> StoreResult<usize> {
    let hash = password_hash.to_owned();
    store.write(move |tx| {
        let id = user_id.to_string();
        let changed = tx
            .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
            .execute(params![id, hash])?;
        if changed == 0 {
            return Ok(0);
        }
        // In the same transaction as the new hash: no session opened with the old password
        // outlives the change, and none opened with the new one is revoked.
        tx.prepare_cached(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'password_change'
             WHERE user_id = ?1 AND id IS NOT ?3 AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .execute(params![id, now, keep_session.map(|s| s.to_string())])
    })
}

/// See `Store::upgrade_password_hash`.
pub(super) fn upgrade_password_hash(
    store: &SqliteStore,
    user_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> StoreResult<bool> {
    let (old, new) = (old_hash.to_owned(), new_hash.to_owned());
    store.write(move |tx| {
        // Conditional on the verified hash: a password change (or set-password) that landed
        // between the login's verification and this re-hash must not be undone by the old
        // password's new hash.
        let n = tx
            .prepare_cached(
                "UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
            )?
            .execute(params![user_id.to_string(), old, new])?;
        Ok(n > 0)
    })
}

/// See `Store::import_users`. The whole import is one write (one savepoint in one
/// transaction of the group-commit writer): its existence checks and inserts see no other
/// writer in between, and a failure leaves nothing of it behind.
pub(super) fn import_users(
    store: &SqliteStore,
    users: Vec<NewUser>,
    skip_existing: bool,
    dry_run: bool,
) -> StoreResult<ImportOutcome> {
    if dry_run {
        return store.read(|c| {
            let existing = existing(c, &users)?;
            Ok(outcome(&users, &existing, skip_existing))
        });
    }
    store.write(move |tx| {
        let existing = existing(tx, &users)?;
        let outcome = outcome(&users, &existing, skip_existing);
        if matches!(outcome, ImportOutcome::Imported { .. }) {
            let mut insert = tx.prepare_cached(
                "INSERT INTO users (id, email, name, role, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (i, u) in users.iter().enumerate() {
                if existing.contains(&i) {
                    continue;
                }
                insert.execute(params![
                    u.id.to_string(),
                    u.email,
                    u.name,
                    u.role.as_str(),
                    u.password_hash,
                    u.created_at
                ])?;
            }
        }
        Ok(outcome)
    })
}

/// The positions in `users` of emails that already belong to a user.
fn existing(c: &Connection, users: &[NewUser]) -> rusqlite::Result<HashSet<usize>> {
    let mut lookup = c.prepare_cached("SELECT 1 FROM users WHERE email = ?1")?;
    let mut found = HashSet::new();
    for (i, u) in users.iter().enumerate() {
        if lookup
            .query_row([&u.email], |_| Ok(()))
            .optional()?
            .is_some()
        {
            found.insert(i);
        }
    }
    Ok(found)
}

fn outcome(users: &[NewUser], existing: &HashSet<usize>, skip_existing: bool) -> ImportOutcome {
    if !existing.is_empty() && !skip_existing {
        let mut emails: Vec<(usize, String)> = existing
            .iter()
            .map(|&i| (i, users[i].email.clone()))
            .collect();
        emails.sort();
        return ImportOutcome::Existing(emails.into_iter().map(|(_, e)| e).collect());
    }
    ImportOutcome::Imported {
        imported: users.len() - existing.len(),
        skipped: existing.len(),
    }
}
