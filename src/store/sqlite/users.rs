//! Store layer (SQLite): the users table: the row as the service sees it, creation, lookups by
//! email and by id, and the last login.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::{parsed_col, uuid_col};
use crate::domain::time::Millis;
use crate::domain::{NewUser, User, UserCredentials};

pub(super) const USER_COLS: &str =
    "id, email, name, role, disabled, created_at, last_login_at, email_verified";

pub(super) fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    user_at(row, 0)
}

/// A user from the `USER_COLS` columns starting at column `at`.
pub(super) fn user_at(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: uuid_col(row, at)?,
        email: row.get(at + 1)?,
        name: row.get(at + 2)?,
        role: parsed_col(row, at + 3)?,
        disabled: row.get::<_, i64>(at + 4)? != 0,
        created_at: row.get(at + 5)?,
        last_login_at: row.get(at + 6)?,
        email_verified: row.get::<_, i64>(at + 7)? != 0,
    })
}

/// `Store::insert_user`, inside the caller's write transaction.
pub(super) fn insert(tx: &Connection, u: &NewUser) -> rusqlite::Result<User> {
    tx.execute(
        "INSERT INTO users (id, email, name, role, password_hash, created_at, email_verified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            u.id.to_string(),
            u.email,
            u.name,
            u.role.as_str(),
            u.password_hash,
            u.created_at,
            u.email_verified
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

fn credentials(r: &Row<'_>) -> rusqlite::Result<UserCredentials> {
    Ok(UserCredentials {
        user: user_row(r)?,
        password_hash: r.get(8)?,
    })
}

pub(super) fn by_email(c: &Connection, email: &str) -> rusqlite::Result<Option<UserCredentials>> {
    c.prepare_cached(&format!(
        "SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1"
    ))?
    .query_row([email], credentials)
    .optional()
}

/// The user's row with its password hash, read in the caller's write transaction (see
/// `sessions::open`).
pub(super) fn credentials_for_session(
    tx: &Connection,
    id: Uuid,
) -> rusqlite::Result<Option<UserCredentials>> {
    tx.prepare_cached(&format!(
        "SELECT {USER_COLS}, password_hash FROM users WHERE id = ?1"
    ))?
    .query_row([id.to_string()], credentials)
    .optional()
}

pub(super) fn by_id(c: &Connection, id: Uuid) -> rusqlite::Result<Option<User>> {
    c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
        .query_row([id.to_string()], user_row)
        .optional()
}

pub(super) fn record_login(
    tx: &Connection,
    user_id: Uuid,
    at: Millis,
) -> rusqlite::Result<Option<User>> {
    tx.prepare_cached(&format!(
        "UPDATE users SET last_login_at = ?2 WHERE id = ?1 RETURNING {USER_COLS}"
    ))?
    .query_row(params![user_id.to_string(), at], user_row)
    .optional()
}
