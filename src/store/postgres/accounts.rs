//! Store layer (PostgreSQL): accounts over their whole life, for admins: listing users in
//! creation order with their lockout, disabling, role and password changes (each revoking
//! sessions in the same transaction), deletion; the last enabled admin kept (`last_admin_verdict`).

use postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::sessions::revoke_of_user;
use super::users::{user_at, USER_COLS};
use super::{email_change, one_time, outbox, text, PgResult};
use crate::domain::admins::{self, AccountChange, ChangeOutcome, LastAdmin, Verdict};
use crate::domain::mfa::MfaSummary;
use crate::domain::time::Millis;
use crate::domain::{Account, Role, UserFilter};

/// `Store::list_users`: one statement, the lockout joined from the email's failure counter,
/// the second factors counted by indexed subqueries (`mfa_totp`'s key, `passkeys_user`).
pub(super) fn list_users(
    c: &mut Db<'_, impl GenericClient>,
    f: &UserFilter,
    now: Millis,
) -> PgResult<Vec<Account>> {
    let (after_created, after_id) = match f.after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let limit = f.limit.map(i64::from);
    c.query(
        "SELECT u.id, u.email, u.name, u.role, u.disabled, u.created_at, u.last_login_at, u.email_verified,
                f.locked_until,
                EXISTS (SELECT 1 FROM mfa_totp t WHERE t.user_id = u.id),
                (SELECT COUNT(*) FROM passkeys p WHERE p.user_id = u.id)
         FROM users u
         LEFT JOIN login_failures f ON f.key = 'email:' || u.email AND f.locked_until > $7
         WHERE ($1::BIGINT IS NULL OR (u.created_at, u.id) > ($1, $2::UUID))
           AND ($3::TEXT IS NULL OR u.email = $3)
           AND ($4::TEXT IS NULL OR u.role = $4)
           AND (NOT $5 OR u.disabled)
           AND (NOT $6 OR f.locked_until IS NOT NULL)
         ORDER BY u.created_at, u.id
         LIMIT $8",
        &[
            &after_created,
            &after_id,
            // No stored email holds a NUL (`super::text`): such a filter finds nothing.
            &f.email.as_deref().map(text),
            &f.role.map(Role::as_str),
            &f.disabled,
            &f.locked,
            &now,
            &limit,
        ],
    )?
    .iter()
    .map(|r| {
        Ok(Account {
            user: user_at(r, 0)?,
            locked_until: r.try_get(8)?,
            mfa: MfaSummary {
                totp: r.try_get(9)?,
                passkeys: r.try_get::<_, i64>(10)?.max(0) as u32,
            },
        })
    })
    .collect()
}

/// The last-admin rule for `change` to `user_id` (`domain::admins::decide`), read inside the
/// caller's transaction with every enabled admin's row locked until it commits.
fn last_admin_verdict(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    change: AccountChange,
    policy: LastAdmin,
) -> PgResult<Verdict> {
    if !change.can_remove_admin() {
        return Ok(Verdict::Proceed {
            leaves_no_admin: false,
        });
    }
    // Lock: two admins demoting, disabling or deleting each other at once would each read the
    // other as an enabled admin and both commit, leaving none. With every enabled admin's row
    // locked (in id order: two such changes cannot deadlock), the second waits, then re-reads
    // the rows the first changed and counts one admin left. `NO KEY UPDATE`: logins inserting
    // sessions (a foreign-key check) are not blocked.
    tx.query(
        "SELECT id FROM users WHERE role = 'admin' AND NOT disabled
         ORDER BY id FOR NO KEY UPDATE",
        &[],
    )?
    .iter()
    .map(|r| r.try_get::<_, Uuid>(0))
    .collect::<PgResult<Vec<Uuid>>>()
    .map(|admins| admins::decide(change, user_id, &admins, policy))
}

/// `Store::set_disabled`, inside the caller's transaction.
pub(super) fn set_disabled(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    disabled: bool,
    now: Millis,
    policy: LastAdmin,
) -> PgResult<ChangeOutcome> {
    let change = AccountChange::SetDisabled(disabled);
    let Verdict::Proceed { leaves_no_admin } = last_admin_verdict(tx, user_id, change, policy)?
    else {
        return Ok(ChangeOutcome::LastAdmin);
    };
    // The UPDATE's row lock on the user is held to commit; the revocation below is in the
    // same transaction, so no refresh can rotate in between and leave a live session to a
    // disabled account (a rotation that got its session lock first commits before it, and
    // its session is then revoked here).
    let Some(row) = tx.query_opt(
        &format!("UPDATE users SET disabled = $2 WHERE id = $1 RETURNING {USER_COLS}"),
        &[&user_id, &disabled],
    )?
    else {
        return Ok(ChangeOutcome::NotFound);
    };
    let user = user_at(&row, 0)?;
    let sessions = if disabled {
        // A disabled account's links die with its sessions (CONTRACT 10.2).
        one_time::kill(tx, user_id, &[])?;
        email_change::drop_pending(tx, user_id)?;
        outbox::cancel_links(tx, user_id, now)?;
        revoke_of_user(tx, user_id, now, "disabled")?
    } else {
        0
    };
    Ok(ChangeOutcome::Done {
        user,
        sessions,
        leaves_no_admin,
    })
}

/// `Store::set_role`, inside the caller's transaction.
pub(super) fn set_role(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    role: Role,
    now: Millis,
    policy: LastAdmin,
) -> PgResult<ChangeOutcome> {
    let change = AccountChange::SetRole(role);
    let Verdict::Proceed { leaves_no_admin } = last_admin_verdict(tx, user_id, change, policy)?
    else {
        return Ok(ChangeOutcome::LastAdmin);
    };
    let Some(row) = tx.query_opt(
        &format!("UPDATE users SET role = $2 WHERE id = $1 RETURNING {USER_COLS}"),
        &[&user_id, &role.as_str()],
    )?
    else {
        return Ok(ChangeOutcome::NotFound);
    };
    let user = user_at(&row, 0)?;
    // Same transaction: no session outlives the role its access tokens carry.
    let sessions = revoke_of_user(tx, user_id, now, "role_change")?;
    Ok(ChangeOutcome::Done {
        user,
        sessions,
        leaves_no_admin,
    })
}

/// `Store::delete_user`, inside the caller's transaction: the sessions cascade from the
/// user and the refresh tokens from the sessions; audit events have no foreign key and stay.
pub(super) fn delete_user(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    now: Millis,
    policy: LastAdmin,
) -> PgResult<ChangeOutcome> {
    let change = AccountChange::Delete;
    let Verdict::Proceed { leaves_no_admin } = last_admin_verdict(tx, user_id, change, policy)?
    else {
        return Ok(ChangeOutcome::LastAdmin);
    };
    // Lock: a login creating a session between the count and the delete would make the count
    // wrong; with the user row locked FOR UPDATE, its session insert (whose foreign-key check
    // takes KEY SHARE on the user) waits, then fails on the deleted user.
    if tx
        .query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user_id])?
        .is_none()
    {
        return Ok(ChangeOutcome::NotFound);
    }
    let live: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
            &[&user_id, &now],
        )?
        .try_get(0)?;
    let Some(row) = tx.query_opt(
        &format!("DELETE FROM users WHERE id = $1 RETURNING {USER_COLS}"),
        &[&user_id],
    )?
    else {
        return Ok(ChangeOutcome::NotFound);
    };
    Ok(ChangeOutcome::Done {
        user: user_at(&row, 0)?,
        sessions: live as usize,
        leaves_no_admin,
    })
}
