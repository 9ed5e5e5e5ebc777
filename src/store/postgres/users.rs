//! Store layer (PostgreSQL): users.

use postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::{role, PgResult};
use crate::domain::time::Millis;
use crate::domain::{NewUser, User, UserCredentials};

pub(super) const USER_COLS: &str =
    "id, email, name, role, disabled, created_at, last_login_at, email_verified";

/// A user from the `USER_COLS` columns starting at column `at`.
pub(super) fn user_at(row: &Row, at: usize) -> PgResult<User> {
    Ok(User {
        id: row.try_get(at)?,
        email: row.try_get(at + 1)?,
        name: row.try_get(at + 2)?,
        role: role(row, at + 3)?,
        disabled: row.try_get(at + 4)?,
        created_at: row.try_get(at + 5)?,
        last_login_at: row.try_get(at + 6)?,
        email_verified: row.try_get(at + 7)?,
    })
}

/// Inserts a user; a taken email is a unique violation (`Conflict`).
pub(super) fn insert(c: &mut Db<'_, impl GenericClient>, u: &NewUser) -> PgResult<User> {
    c.execute(
        "INSERT INTO users (id, email, name, role, password_hash, created_at, email_verified)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &u.id,
            &u.email,
            &u.name,
            &u.role.as_str(),
            &u.password_hash,
            &u.created_at,
            &u.email_verified,
        ],
    )?;
    Ok(User {
        id: u.id,
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role,
        disabled: false,
        created_at: u.created_at,
        last_login_at: None,
        email_verified: u.email_verified,
    })
}

/// The user's row with its password hash, locked until the caller's transaction ends (see
/// `sessions::open`).
pub(super) fn credentials_for_session(
    tx: &mut Db<'_, Transaction<'_>>,
    id: Uuid,
) -> PgResult<Option<UserCredentials>> {
    // FOR NO KEY UPDATE: a login's check racing an admin change (`set_disabled`, `set_role`,
    // `delete_user`) or a password change (`set_password_hash`): those UPDATE or DELETE this
    // row, so they either committed before and are read here, or wait for this transaction
    // and then revoke the session it opened. Not FOR SHARE: two logins of one user would both
    // hold it and deadlock on the `last_login_at` UPDATE that follows.
    tx.query_opt(
        &format!("SELECT {USER_COLS}, password_hash FROM users WHERE id = $1 FOR NO KEY UPDATE"),
        &[&id],
    )?
    .map(|r| credentials(&r))
    .transpose()
}

fn credentials(r: &Row) -> PgResult<UserCredentials> {
    Ok(UserCredentials {
        user: user_at(r, 0)?,
        password_hash: r.try_get(8)?,
    })
}

pub(super) fn by_email(
    c: &mut Db<'_, impl GenericClient>,
    email: &str,
) -> PgResult<Option<UserCredentials>> {
    if email.contains('\0') {
        return Ok(None); // no stored email holds a NUL (nor could it, see `super::text`)
    }
    c.query_opt(
        &format!("SELECT {USER_COLS}, password_hash FROM users WHERE email = $1"),
        &[&email],
    )?
    .map(|r| credentials(&r))
    .transpose()
}

pub(super) fn by_id(c: &mut Db<'_, impl GenericClient>, id: Uuid) -> PgResult<Option<User>> {
    c.query_opt(
        &format!("SELECT {USER_COLS} FROM users WHERE id = $1"),
        &[&id],
    )?
    .map(|r| user_at(&r, 0))
    .transpose()
}

pub(super) fn record_login(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    at: Millis,
) -> PgResult<Option<User>> {
    c.query_opt(
        &format!("UPDATE users SET last_login_at = $2 WHERE id = $1 RETURNING {USER_COLS}"),
        &[&user_id, &at],
    )?
    .map(|r| user_at(&r, 0))
    .transpose()
}
