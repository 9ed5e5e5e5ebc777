//! Store layer (PostgreSQL): users.

use postgres::{GenericClient, Row};
use uuid::Uuid;

use super::db::Db;
use super::{role, PgResult};
use crate::domain::time::Millis;
use crate::domain::{NewUser, User, UserCredentials};

pub(super) const USER_COLS: &str = "id, email, name, role, disabled, created_at, last_login_at";

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
    })
}

/// Inserts a user; a taken email is a unique violation (`Conflict`).
pub(super) fn insert(c: &mut Db<'_, impl GenericClient>, u: &NewUser) -> PgResult<User> {
    c.execute(
        "INSERT INTO users (id, email, name, role, password_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &u.id,
            &u.email,
            &u.name,
            &u.role.as_str(),
            &u.password_hash,
            &u.created_at,
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
    .map(|r| {
        Ok(UserCredentials {
            user: user_at(&r, 0)?,
            password_hash: r.try_get(7)?,
        })
    })
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
