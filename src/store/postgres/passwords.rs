//! Store layer (PostgreSQL): password hashes (change, upgrade after login) and the bulk import
//! of users with their existing hashes.

use std::collections::HashSet;

use postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::PgResult;
use super::{email_change, one_time, outbox};
use crate::domain::one_time::Purpose;
use crate::domain::time::Millis;
use crate::domain::NewUser;
use crate::store::ImportOutcome;

/// See `Store::set_password_hash`.
pub(super) fn set_password_hash(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    password_hash: &str,
    keep_session: Option<Uuid>,
    now: Millis,
) -> PgResult<usize> {
    let changed = tx.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&user_id, &password_hash],
    )?;
    if changed == 0 {
        return Ok(0);
    }
    // In the same transaction as the new hash (whose row lock is held to commit): no session
    // opened with the old password outlives the change, and none opened with the new one is
    // revoked. Conditional update: a session revoked meanwhile is not counted again.
    let revoked = tx.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = 'password_change'
         WHERE user_id = $1 AND id IS DISTINCT FROM $3
           AND revoked_at IS NULL AND expires_at > $2",
        &[&user_id, &now, &keep_session],
    )? as usize;
    // A credential change kills every mailed link of the user (CONTRACT 10.2), and with the
    // email-change links their pending change.
    one_time::kill(tx, user_id, &Purpose::MAILED)?;
    outbox::cancel_links(tx, user_id, now)?;
    email_change::drop_pending(tx, user_id)?;
    Ok(revoked)
}

/// See `Store::upgrade_password_hash`.
pub(super) fn upgrade_password_hash(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> PgResult<bool> {
    // Conditional update on the verified hash (re-checked on the row's newest version): a
    // password change that landed between the login's verification and this re-hash must not
    // be undone by the old password's new hash.
    let n = c.execute(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        &[&user_id, &old_hash, &new_hash],
    )?;
    Ok(n > 0)
}

/// The positions in `users` of emails that already belong to a user.
fn existing(c: &mut Db<'_, impl GenericClient>, users: &[NewUser]) -> PgResult<HashSet<usize>> {
    let emails: Vec<&str> = users.iter().map(|u| u.email.as_str()).collect();
    let found: HashSet<String> = c
        .query("SELECT email FROM users WHERE email = ANY($1)", &[&emails])?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<PgResult<_>>()?;
    Ok(users
        .iter()
        .enumerate()
        .filter(|(_, u)| found.contains(&u.email))
        .map(|(i, _)| i)
        .collect())
}

/// A dry run: what `import` would answer now.
pub(super) fn import_dry_run(
    c: &mut Db<'_, impl GenericClient>,
    users: &[NewUser],
    skip_existing: bool,
) -> PgResult<ImportOutcome> {
    let existing = existing(c, users)?;
    Ok(ImportOutcome::of(users, &existing, skip_existing))
}

/// See `Store::import_users`: one transaction, one INSERT for all the rows.
pub(super) fn import(
    tx: &mut Db<'_, Transaction<'_>>,
    users: &[NewUser],
    skip_existing: bool,
) -> PgResult<ImportOutcome> {
    let mut existing = existing(tx, users)?;
    let first = ImportOutcome::of(users, &existing, skip_existing);
    if !matches!(first, ImportOutcome::Imported { .. }) {
        return Ok(first);
    }
    let rows: Vec<&NewUser> = users
        .iter()
        .enumerate()
        .filter(|(i, _)| !existing.contains(i))
        .map(|(_, u)| u)
        .collect();
    tx.batch_execute("SAVEPOINT import_users")?;
    // ON CONFLICT DO NOTHING: an email registered by someone else after the check above is
    // not an error; the rows the INSERT returns decide what was imported.
    let inserted: HashSet<String> = tx
        .query(
            "INSERT INTO users (id, email, name, role, password_hash, created_at)
             SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                  $6::BIGINT[])
             ON CONFLICT (email) DO NOTHING
             RETURNING email",
            &[
                &rows.iter().map(|u| u.id).collect::<Vec<_>>(),
                &rows.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
                &rows.iter().map(|u| u.name.as_deref()).collect::<Vec<_>>(),
                &rows.iter().map(|u| u.role.as_str()).collect::<Vec<_>>(),
                &rows
                    .iter()
                    .map(|u| u.password_hash.as_str())
                    .collect::<Vec<_>>(),
                &rows.iter().map(|u| u.created_at).collect::<Vec<_>>(),
            ],
        )?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<PgResult<_>>()?;
    for (i, u) in users.iter().enumerate() {
        if !existing.contains(&i) && !inserted.contains(&u.email) {
            existing.insert(i);
        }
    }
    let answer = ImportOutcome::of(users, &existing, skip_existing);
    if !matches!(answer, ImportOutcome::Imported { .. }) {
        // Raced: an email appeared meanwhile and skipping was not asked for. Nothing stays.
        tx.batch_execute("ROLLBACK TO SAVEPOINT import_users")?;
    }
    Ok(answer)
}
