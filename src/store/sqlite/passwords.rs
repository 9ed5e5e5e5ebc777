//! Store layer (SQLite): password hashes (change, upgrade after login) and the bulk import of
//! users with their existing hashes. Free functions that `impl Store for SqliteStore` calls.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::SqliteStore;
use crate::domain::NewUser;
use crate::store::{ImportOutcome, StoreResult};

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
            Ok(ImportOutcome::of(&users, &existing, skip_existing))
        });
    }
    store.write(move |tx| {
        let existing = existing(tx, &users)?;
        let outcome = ImportOutcome::of(&users, &existing, skip_existing);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{AuditEvent, NewRefreshToken, Role, Session, SessionOpening};
    use crate::store::{NewSession, Store, StoreOptions};

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let options = StoreOptions {
            pool_size: 2,
            busy_timeout: Duration::from_secs(5),
            health: crate::store::health::DbHealth::uncounted(),
        };
        let path = dir.path().join("authd.db");
        let store = SqliteStore::open(path.to_str().unwrap(), &options).unwrap();
        store.migrate().unwrap();
        store
    }

    fn user(email: &str, hash: &str) -> NewUser {
        NewUser {
            id: Uuid::new_v4(),
            email: email.into(),
            name: None,
            role: Role::User,
            password_hash: hash.into(),
            created_at: 0,
            email_verified: true,
        }
    }

    fn created() -> AuditEvent {
        AuditEvent {
            at: 0,
            event: "user_create".into(),
            user_id: None,
            email: None,
            ip: None,
            user_agent: None,
            outcome: "success".into(),
            reason: None,
            actor: None,
        }
    }

    /// A session of `user_id`, opened on the user's current hash.
    fn session(store: &SqliteStore, user_id: Uuid) -> Uuid {
        let id = Uuid::new_v4();
        let hash = store
            .read(|c| super::super::users::credentials_for_session(c, user_id))
            .unwrap()
            .unwrap()
            .password_hash;
        let opened = store
            .open_session(
                &NewSession {
                    session: Session {
                        id,
                        user_id,
                        created_at: 0,
                        last_used_at: 0,
                        expires_at: 9_999_999_999_999,
                        revoked_at: None,
                        user_agent: None,
                        ip: None,
                        device_info: None,
                        auth_methods: vec![crate::domain::AuthMethod::Pwd],
                    },
                    token: NewRefreshToken {
                        hash: id.to_string(),
                        session_id: id,
                        created_at: 0,
                        expires_at: 9_999_999_999_999,
                    },
                },
                &hash,
                Box::new(|_| Some(created())),
            )
            .unwrap();
        assert!(matches!(opened, SessionOpening::Opened(_)), "{opened:?}");
        id
    }

    fn hash_of(store: &SqliteStore, email: &str) -> String {
        store.user_by_email(email).unwrap().unwrap().password_hash
    }

    #[test]
    fn set_password_hash_revokes_every_session_but_the_kept_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let u = store
            .insert_user(&user("a@x.io", "old"), &created(), None, None)
            .unwrap();
        let other = store
            .insert_user(&user("b@x.io", "old"), &created(), None, None)
            .unwrap();
        let (keep, drop1, drop2) = (
            session(&store, u.id),
            session(&store, u.id),
            session(&store, u.id),
        );
        let bystander = session(&store, other.id);
        assert_eq!(
            store.set_password_hash(u.id, "new", Some(keep), 1).unwrap(),
            2
        );
        assert_eq!(hash_of(&store, "a@x.io"), "new");
        assert!(store.session(keep).unwrap().unwrap().revoked_at.is_none());
        for s in [drop1, drop2] {
            assert!(store.session(s).unwrap().unwrap().revoked_at.is_some());
        }
        assert!(store
            .session(bystander)
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none());
        assert_eq!(store.set_password_hash(u.id, "newer", None, 2).unwrap(), 1);
        assert_eq!(
            store
                .set_password_hash(Uuid::new_v4(), "x", None, 3)
                .unwrap(),
            0
        );
    }

    #[test]
    fn an_upgrade_never_overwrites_a_hash_changed_since_the_login() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let u = store
            .insert_user(&user("a@x.io", "verified"), &created(), None, None)
            .unwrap();
        store.set_password_hash(u.id, "changed", None, 1).unwrap();
        assert!(!store
            .upgrade_password_hash(u.id, "verified", "rehashed")
            .unwrap());
        assert_eq!(hash_of(&store, "a@x.io"), "changed");
        assert!(store
            .upgrade_password_hash(u.id, "changed", "rehashed")
            .unwrap());
        assert_eq!(hash_of(&store, "a@x.io"), "rehashed");
    }

    #[test]
    fn an_import_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        store
            .insert_user(&user("old@x.io", "h"), &created(), None, None)
            .unwrap();
        let batch = || vec![user("new@x.io", "h"), user("old@x.io", "h2")];
        let existing = ImportOutcome::Existing(vec!["old@x.io".into()]);
        assert_eq!(store.import_users(batch(), false, false).unwrap(), existing);
        assert_eq!(store.import_users(batch(), false, true).unwrap(), existing);
        assert!(store.user_by_email("new@x.io").unwrap().is_none());
        let done = ImportOutcome::Imported {
            imported: 1,
            skipped: 1,
        };
        assert_eq!(store.import_users(batch(), true, true).unwrap(), done);
        assert!(store.user_by_email("new@x.io").unwrap().is_none());
        assert_eq!(store.import_users(batch(), true, false).unwrap(), done);
        assert!(store.user_by_email("new@x.io").unwrap().is_some());
        assert_eq!(hash_of(&store, "old@x.io"), "h");
    }
}
