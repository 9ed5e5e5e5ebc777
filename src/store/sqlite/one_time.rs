//! Store layer (SQLite): one-time tokens (`domain::one_time`). Free functions on a connection
//! or a write transaction, so a flow's own write (a password reset, an email change) can use
//! or kill tokens in the same transaction as the rest of its work.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::{opt_uuid_col, parse_text};
use crate::domain::one_time::{Consumed, NewOneTimeToken, OneTimeToken, Purpose};
use crate::domain::time::Millis;

const COLS: &str =
    "token_hash, purpose, user_id, address, payload, attempts, created_at, expires_at";

fn token_at(r: &Row<'_>) -> rusqlite::Result<OneTimeToken> {
    let purpose: String = r.get(1)?;
    Ok(OneTimeToken {
        token_hash: r.get(0)?,
        purpose: parse_text(1, &purpose)?,
        user_id: opt_uuid_col(r, 2)?,
        address: r.get(3)?,
        payload: r.get(4)?,
        attempts: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
    })
}

/// `Store::issue_one_time_token`: stores `t`; with `supersede`, first deletes every other
/// token of its owner and purpose (the newest wins, CONTRACT 10.2). Run in a write
/// transaction: no one sees the old ones gone without the new one.
pub(super) fn issue(c: &Connection, t: &NewOneTimeToken, supersede: bool) -> rusqlite::Result<()> {
    if supersede {
        if let Some(user) = t.user_id {
            kill(c, user, &[t.purpose])?;
        }
    }
    c.prepare_cached(
        "INSERT INTO one_time_tokens
           (token_hash, purpose, user_id, address, payload, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        t.token_hash,
        t.purpose.as_str(),
        t.user_id.map(|u| u.to_string()),
        t.address,
        t.payload,
        t.created_at,
        t.expires_at
    ])?;
    Ok(())
}

/// `Store::one_time_token`: the token of `purpose` with that hash, live or expired, without
/// using it.
pub(super) fn find(
    c: &Connection,
    purpose: Purpose,
    token_hash: &str,
) -> rusqlite::Result<Option<OneTimeToken>> {
    c.prepare_cached(&format!(
        "SELECT {COLS} FROM one_time_tokens WHERE token_hash = ?1 AND purpose = ?2"
    ))?
    .query_row(params![token_hash, purpose.as_str()], token_at)
    .optional()
}

/// `Store::consume_one_time_token`: uses the token up. One `DELETE ... RETURNING`: of two
/// concurrent uses of one token exactly one gets the row (the race a read-then-delete loses).
pub(super) fn consume(
    c: &Connection,
    purpose: Purpose,
    token_hash: &str,
    now: Millis,
) -> rusqlite::Result<Consumed> {
    let row = c
        .prepare_cached(&format!(
            "DELETE FROM one_time_tokens WHERE token_hash = ?1 AND purpose = ?2 RETURNING {COLS}"
        ))?
        .query_row(params![token_hash, purpose.as_str()], token_at)
        .optional()?;
    Ok(Consumed::of(row, now))
}

/// `Store::kill_one_time_tokens`: deletes the user's tokens of `purposes` (every purpose when
/// empty); returns how many.
pub(super) fn kill(c: &Connection, user_id: Uuid, purposes: &[Purpose]) -> rusqlite::Result<usize> {
    let user = user_id.to_string();
    if purposes.is_empty() {
        return c
            .prepare_cached("DELETE FROM one_time_tokens WHERE user_id = ?1")?
            .execute(params![user]);
    }
    let mut n = 0;
    let mut delete =
        c.prepare_cached("DELETE FROM one_time_tokens WHERE user_id = ?1 AND purpose = ?2")?;
    for p in purposes {
        n += delete.execute(params![user, p.as_str()])?;
    }
    Ok(n)
}
