//! Store layer (PostgreSQL): one-time tokens (`domain::one_time`). Free functions on a
//! client or a transaction, so a flow's own write (a password reset, an email change) can use
//! or kill tokens in the same transaction as the rest of its work.

use postgres::{GenericClient, Row};
use uuid::Uuid;

use super::db::Db;
use super::{parsed, PgResult};
use crate::domain::one_time::{Consumed, NewOneTimeToken, OneTimeToken, Purpose};
use crate::domain::time::Millis;

const COLS: &str =
    "token_hash, purpose, user_id, address, payload, attempts, created_at, expires_at";

fn token_at(r: &Row) -> PgResult<OneTimeToken> {
    let attempts: i32 = r.try_get(5)?;
    Ok(OneTimeToken {
        token_hash: r.try_get(0)?,
        purpose: parsed(r, 1)?,
        user_id: r.try_get(2)?,
        address: r.try_get(3)?,
        payload: r.try_get(4)?,
        attempts: attempts.max(0) as u32,
        created_at: r.try_get(6)?,
        expires_at: r.try_get(7)?,
    })
}

/// `Store::issue_one_time_token`: stores `t`; with `supersede`, first deletes every other
/// token of its owner and purpose (the newest wins, CONTRACT 10.2), in the caller's
/// transaction: no one sees the old ones gone without the new one.
pub(super) fn issue(
    c: &mut Db<'_, impl GenericClient>,
    t: &NewOneTimeToken,
    supersede: bool,
) -> PgResult<()> {
    if supersede {
        if let Some(user) = t.user_id {
            kill(c, user, &[t.purpose])?;
        }
    }
    c.execute(
        "INSERT INTO one_time_tokens
           (token_hash, purpose, user_id, address, payload, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &t.token_hash,
            &t.purpose.as_str(),
            &t.user_id,
            &t.address,
            &t.payload,
            &t.created_at,
            &t.expires_at,
        ],
    )?;
    Ok(())
}

/// `Store::one_time_token`: the token of `purpose` with that hash, live or expired, without
/// using it.
pub(super) fn find(
    c: &mut Db<'_, impl GenericClient>,
    purpose: Purpose,
    token_hash: &str,
) -> PgResult<Option<OneTimeToken>> {
    c.query_opt(
        &format!("SELECT {COLS} FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2"),
        &[&token_hash, &purpose.as_str()],
    )?
    .map(|r| token_at(&r))
    .transpose()
}

/// `Store::consume_one_time_token`: uses the token up. One `DELETE ... RETURNING`: of two
/// concurrent uses of one token, at one instance or two, exactly one gets the row (the
/// other's delete waits on the row lock, then finds it gone).
pub(super) fn consume(
    c: &mut Db<'_, impl GenericClient>,
    purpose: Purpose,
    token_hash: &str,
    now: Millis,
) -> PgResult<Consumed> {
    let row = c
        .query_opt(
            &format!(
                "DELETE FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2
                 RETURNING {COLS}"
            ),
            &[&token_hash, &purpose.as_str()],
        )?
        .map(|r| token_at(&r))
        .transpose()?;
    Ok(Consumed::of(row, now))
}

/// `Store::kill_one_time_tokens`: deletes the user's tokens of `purposes` (every purpose when
/// empty); returns how many.
pub(super) fn kill(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    purposes: &[Purpose],
) -> PgResult<usize> {
    let names: Vec<&str> = purposes.iter().map(|p| p.as_str()).collect();
    let n = c.execute(
        "DELETE FROM one_time_tokens
         WHERE user_id = $1 AND (cardinality($2::text[]) = 0 OR purpose = ANY($2))",
        &[&user_id, &names],
    )?;
    Ok(n as usize)
}
