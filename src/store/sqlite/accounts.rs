//! Store layer (SQLite): accounts over their whole life, for admins: listing users in
//! creation order with their lockout, disabling, role and password changes (each revoking
//! sessions in the same transaction), deletion; the last enabled admin kept (`last_admin_verdict`).

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::email_change;
use super::sessions::revoke_where;
use super::users::{user_at, user_row, USER_COLS};
use super::uuid_col;
use super::{one_time, outbox};
use crate::domain::admins::{self, AccountChange, ChangeOutcome, LastAdmin, Verdict};
use crate::domain::mfa::MfaSummary;
use crate::domain::one_time::Purpose;
use crate::domain::time::Millis;
use crate::domain::{Account, Role, UserFilter};

/// `Store::list_users`: one statement, the lockout joined from the email's failure counter,
/// the second factors counted by indexed subqueries (`mfa_totp`'s key, `passkeys_user`).
pub(super) fn list_users(
    c: &Connection,
    f: &UserFilter,
    now: Millis,
) -> rusqlite::Result<Vec<Account>> {
    let (after_created, after_id) = match f.after {
        Some((at, id)) => (Some(at), Some(id.to_string())),
        None => (None, None),
    };
    // SQLite reads a negative LIMIT as "no limit".
    let limit = f.limit.map_or(-1, i64::from);
    c.prepare_cached(
        "SELECT u.id, u.email, u.name, u.role, u.disabled, u.created_at, u.last_login_at, u.email_verified,
                f.locked_until,
                EXISTS (SELECT 1 FROM mfa_totp t WHERE t.user_id = u.id),
                (SELECT COUNT(*) FROM passkeys p WHERE p.user_id = u.id)
         FROM users u
         LEFT JOIN login_failures f ON f.key = 'email:' || u.email AND f.locked_until > ?7
         WHERE (?1 IS NULL OR (u.created_at, u.id) > (?1, ?2))
           AND (?3 IS NULL OR u.email = ?3)
           AND (?4 IS NULL OR u.role = ?4)
           AND (?5 = 0 OR u.disabled = 1)
           AND (?6 = 0 OR f.locked_until IS NOT NULL)
         ORDER BY u.created_at, u.id
         LIMIT ?8",
    )?
    .query_map(
        params![
            after_created,
            after_id,
            f.email,
            f.role.map(Role::as_str),
            f.disabled,
            f.locked,
            now,
            limit
        ],
        |r| {
            Ok(Account {
                user: user_at(r, 0)?,
                locked_until: r.get(8)?,
                mfa: MfaSummary {
                    totp: r.get(9)?,
                    passkeys: r.get(10)?,
                },
            })
        },
    )?
    .collect()
}

/// The last-admin rule for `change` to `user_id` (`domain::admins::decide`), read inside the
/// caller's `BEGIN IMMEDIATE` transaction: that transaction holds SQLite's write lock, so no
/// other change (from this process or another) can take an admin away between this read and
/// the commit; two admins demoting each other at once run one after the other.
fn last_admin_verdict(
    tx: &Connection,
    user_id: Uuid,
    change: AccountChange,
    policy: LastAdmin,
) -> rusqlite::Result<Verdict> {
    if !change.can_remove_admin() {
        return Ok(Verdict::Proceed {
            leaves_no_admin: false,
        });
    }
    let admins = tx
        .prepare_cached("SELECT id FROM users WHERE role = 'admin' AND disabled = 0")?
        .query_map([], |r| uuid_col(r, 0))?
        .collect::<rusqlite::Result<Vec<Uuid>>>()?;
    Ok(admins::decide(change, user_id, &admins, policy))
}

/// `Store::set_disabled`, inside the caller's transaction.
pub(super) fn set_disabled(
    tx: &Connection,
    user_id: Uuid,
    disabled: bool,
    now: Millis,
    policy: LastAdmin,
) -> rusqlite::Result<ChangeOutcome> {
    let change = AccountChange::SetDisabled(disabled);
    let Verdict::Proceed { leaves_no_admin } = last_admin_verdict(tx, user_id, change, policy)?
    else {
        return Ok(ChangeOutcome::LastAdmin);
    };
    let id = user_id.to_string();
    let Some(user) = tx
        .prepare_cached(&format!(
            "UPDATE users SET disabled = ?2 WHERE id = ?1 RETURNING {USER_COLS}"
        ))?
        .query_row(params![id, disabled], user_row)
        .optional()?
    else {
        return Ok(ChangeOutcome::NotFound);
    };
    // In the same transaction as the flag: no refresh can rotate in between and leave a
    // live session to a disabled account.
    let sessions = if disabled {
        // A disabled account's links die with its sessions (CONTRACT 10.2).
        one_time::kill(tx, user_id, &[])?;
        email_change::drop_pending(tx, user_id)?;
        outbox::cancel_links(tx, user_id, now)?;
        revoke_where(tx, "user_id = ?1", &id, now, "disabled")?
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
    tx: &Connection,
    user_id: Uuid,
    role: Role,
    now: Millis,
    policy: LastAdmin,
) -> rusqlite::Result<ChangeOutcome> {
    let change = AccountChange::SetRole(role);
    let Verdict::Proceed { leaves_no_admin } = last_admin_verdict(tx, user_id, change, policy)?
    else {
        return Ok(ChangeOutcome::LastAdmin);
    };
    let id = user_id.to_string();
    let Some(user) = tx
        .prepare_cached(&format!(
            "UPDATE users SET role = ?2 WHERE id = ?1 RETURNING {USER_COLS}"
        ))?
        .query_row(params![id, role.as_str()], user_row)
        .optional()?
    else {
        return Ok(ChangeOutcome::NotFound);
    };
    // Same transaction: no session outlives the role its access tokens carry.
    let sessions = revoke_where(tx, "user_id = ?1", &id, now, "role_change")?;
    Ok(ChangeOutcome::Done {
        user,
        sessions,
        leaves_no_admin,
    })
}

/// `Store::delete_user`, inside the caller's transaction: the sessions cascade from the
/// user and the refresh tokens from the sessions; audit events have no foreign key and stay.
pub(super) fn delete_user(
    tx: &Connection,
    user_id: Uuid,
    now: Millis,
    policy: LastAdmin,
) -> rusqlite::Result<ChangeOutcome> {
    let change = AccountChange::Delete;
    let Verdict::Proceed { leaves_no_admin } = last_admin_verdict(tx, user_id, change, policy)?
    else {
        return Ok(ChangeOutcome::LastAdmin);
    };
    let id = user_id.to_string();
    let live: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM sessions
             WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .query_row(params![id, now], |r| r.get(0))?;
    let user = tx
        .prepare_cached(&format!(
            "DELETE FROM users WHERE id = ?1 RETURNING {USER_COLS}"
        ))?
        .query_row([&id], user_row)
        .optional()?;
    Ok(match user {
        Some(user) => ChangeOutcome::Done {
            user,
            sessions: live as usize,
            leaves_no_admin,
        },
        None => ChangeOutcome::NotFound,
    })
}

/// `Store::set_password_hash`, inside the caller's transaction.
pub(super) fn set_password_hash(
    tx: &Connection,
    user_id: Uuid,
    password_hash: &str,
    keep_session: Option<Uuid>,
    now: Millis,
) -> rusqlite::Result<usize> {
    let id = user_id.to_string();
    let changed = tx
        .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
        .execute(params![id, password_hash])?;
    if changed == 0 {
        return Ok(0);
    }
    // Same transaction as the new hash: a session opened with the old password cannot
    // survive the change (except the one the caller keeps).
    let revoked = tx
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'password_change'
             WHERE user_id = ?1 AND (?3 IS NULL OR id <> ?3)
               AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .execute(params![id, now, keep_session.map(|s| s.to_string())])?;
    // A credential change kills every mailed link of the user (CONTRACT 10.2), and with the
    // email-change links their pending change.
    one_time::kill(tx, user_id, &Purpose::MAILED)?;
    outbox::cancel_links(tx, user_id, now)?;
    email_change::drop_pending(tx, user_id)?;
    Ok(revoked)
}
