//! Store layer (SQLite): sessions and their refresh tokens: creation, rotation (the decision
//! in `store::rotation`), lookups, revocation.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::users::{self, user_at};
use super::{parsed_col, uuid_col};
use crate::domain::time::Millis;
use crate::domain::{
    AuthMethod, NewRefreshToken, Refusal, RotateOutcome, Rotation, Session, SessionOpening, User,
};
use crate::store::opening;
use crate::store::rotation::{self, Presented, Step};
use crate::store::NewSession;

const SESSION_COLS: &str =
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip, device_info,
     auth_methods";

fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: uuid_col(row, 0)?,
        user_id: uuid_col(row, 1)?,
        created_at: row.get(2)?,
        last_used_at: row.get(3)?,
        expires_at: row.get(4)?,
        revoked_at: row.get(5)?,
        user_agent: row.get(6)?,
        ip: row.get(7)?,
        device_info: row.get(8)?,
        auth_methods: AuthMethod::decode_list(row.get::<_, Option<String>>(9)?.as_deref()),
    })
}

/// `Store::open_session` inside the caller's write transaction: the user's row read, the
/// decision (`store::opening`), then the login recorded and the session stored.
pub(super) fn open(
    tx: &Connection,
    new: &NewSession,
    verified_hash: &str,
) -> rusqlite::Result<SessionOpening> {
    let user_id = new.session.user_id;
    // `BEGIN IMMEDIATE` (the writer's): no other write runs between this read and the insert,
    // so an admin change or password change racing the login's check either committed before
    // (and is read here) or comes after (and revokes this session).
    let found = users::credentials_for_session(tx, user_id)?;
    let decided = opening::decide(user_id, found.as_ref(), verified_hash);
    if !matches!(decided, SessionOpening::Opened(_)) {
        return Ok(decided);
    }
    let Some(user) = users::record_login(tx, user_id, new.session.created_at)? else {
        return Ok(SessionOpening::Refused {
            user_id,
            why: Refusal::Gone,
        });
    };
    create(tx, new)?;
    Ok(SessionOpening::Opened(user))
}

/// A session and its first token, inside the caller's write transaction (the user's row
/// checked by `open`, or inserted by `insert_user`).
pub(super) fn create(tx: &Connection, new: &NewSession) -> rusqlite::Result<()> {
    let (s, t) = (&new.session, &new.token);
    tx.prepare_cached(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at,
                               user_agent, ip, device_info, auth_methods)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.id.to_string(),
        s.user_id.to_string(),
        s.created_at,
        s.last_used_at,
        s.expires_at,
        s.user_agent,
        s.ip,
        s.device_info,
        AuthMethod::encode_list(&s.auth_methods)
    ])?;
    insert_token(tx, t, false)
}

fn insert_token(tx: &Connection, t: &NewRefreshToken, legacy: bool) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at, legacy)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        t.session_id.to_string(),
        t.hash,
        t.created_at,
        t.expires_at,
        legacy.then_some(1)
    ])?;
    Ok(())
}

/// One way to find a presented refresh token: by the session it names and its hash, or,
/// failing that, by hash alone among legacy tokens (see migration V4). Both statements
/// select the same columns, joined with whatever the caller needs.
struct TokenLookup {
    keyed: &'static str,
    legacy: &'static str,
}

/// A `TokenLookup` from one `SELECT ... FROM refresh_tokens t ...` (parameters: ?1 the
/// session hint, ?2 the hash).
macro_rules! token_lookup {
    ($select:literal) => {
        TokenLookup {
            keyed: concat!($select, " WHERE t.session_id = ?1 AND t.token_hash = ?2"),
            legacy: concat!($select, " WHERE t.token_hash = ?2 AND t.legacy = 1"),
        }
    };
}

/// The session a token belongs to (logout).
const SESSION_OF_TOKEN: TokenLookup = token_lookup!(
    "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
            s.user_agent, s.ip, s.device_info, s.auth_methods
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
);

/// Everything a rotation decides on, in one statement.
const TOKEN_TO_ROTATE: TokenLookup = token_lookup!(
    "SELECT t.session_id, t.expires_at, t.rotated_at, t.legacy,
            s.user_id, s.revoked_at, u.role, u.disabled
     FROM refresh_tokens t
     JOIN sessions s ON s.id = t.session_id
     JOIN users u ON u.id = s.user_id"
);

fn find_token<T>(
    c: &Connection,
    lookup: &TokenLookup,
    session_hint: Uuid,
    hash: &str,
    row: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let hint = session_hint.to_string();
    let keyed = c
        .prepare_cached(lookup.keyed)?
        .query_row(params![hint, hash], &row)
        .optional()?;
    if keyed.is_some() {
        return Ok(keyed);
    }
    c.prepare_cached(lookup.legacy)?
        .query_row(params![hint, hash], row)
        .optional()
}

/// The rotation itself (see `Store::rotate_refresh_token`), inside the caller's transaction:
/// find the token, let `rotation::decide`, write what it says.
pub(super) fn rotate(tx: &Connection, r: &Rotation) -> rusqlite::Result<RotateOutcome> {
    let found = find_token(
        tx,
        &TOKEN_TO_ROTATE,
        r.presented_session,
        &r.presented_hash,
        |row| {
            Ok(Presented {
                session_id: uuid_col(row, 0)?,
                expires_at: row.get(1)?,
                rotated_at: row.get(2)?,
                legacy: row.get::<_, Option<i64>>(3)?.is_some_and(|l| l != 0),
                user_id: uuid_col(row, 4)?,
                revoked_at: row.get(5)?,
                role: parsed_col(row, 6)?,
                disabled: row.get::<_, i64>(7)? != 0,
            })
        },
    )?;
    let (session_id, mark_rotated, legacy, outcome) = match rotation::decide(found.as_ref(), r) {
        Step::Refuse(outcome) => return Ok(outcome),
        Step::RevokeSession {
            session_id,
            outcome,
        } => {
            revoke_where(tx, "id = ?1", &session_id.to_string(), r.now, "reuse")?;
            return Ok(outcome);
        }
        Step::Rotate {
            session_id,
            mark_rotated,
            legacy,
            outcome,
        } => (session_id, mark_rotated, legacy, outcome),
    };
    if mark_rotated {
        tx.prepare_cached(
            "UPDATE refresh_tokens SET rotated_at = ?3 WHERE session_id = ?1 AND token_hash = ?2",
        )?
        .execute(params![session_id.to_string(), r.presented_hash, r.now])?;
    }
    // The replacement names the same session as the presented token: a legacy chain stays
    // findable by hash.
    let new = NewRefreshToken {
        hash: r.replacement_hash.clone(),
        session_id,
        created_at: r.now,
        expires_at: r.expires_at,
    };
    insert_token(tx, &new, legacy)?;
    tx.prepare_cached(
        "UPDATE sessions SET last_used_at = ?2, expires_at = MAX(expires_at, ?3) WHERE id = ?1",
    )?
    .execute(params![session_id.to_string(), r.now, r.expires_at])?;
    Ok(outcome)
}

pub(super) fn by_id(c: &Connection, id: Uuid) -> rusqlite::Result<Option<Session>> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
    ))?
    .query_row([id.to_string()], session_row)
    .optional()
}

pub(super) fn with_user(c: &Connection, id: Uuid) -> rusqlite::Result<Option<(Session, User)>> {
    c.prepare_cached(
        "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
                s.user_agent, s.ip, s.device_info, s.auth_methods,
                u.id, u.email, u.name, u.role, u.disabled, u.created_at, u.last_login_at, u.email_verified
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = ?1",
    )?
    .query_row([id.to_string()], |r| {
        let session = session_row(r)?;
        let user = user_at(r, 10)?;
        Ok((session, user))
    })
    .optional()
}

pub(super) fn by_token(
    c: &Connection,
    session_hint: Uuid,
    token_hash: &str,
) -> rusqlite::Result<Option<Session>> {
    find_token(c, &SESSION_OF_TOKEN, session_hint, token_hash, session_row)
}

pub(super) fn live(c: &Connection, user_id: Uuid, now: Millis) -> rusqlite::Result<Vec<Session>> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM sessions
         WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
         ORDER BY created_at DESC"
    ))?
    .query_map(params![user_id.to_string(), now], session_row)?
    .collect()
}

/// Revokes the live sessions matching `filter` (which binds `?1`); returns how many.
pub(super) fn revoke_where(
    tx: &Connection,
    filter: &str,
    arg: &str,
    now: Millis,
    reason: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        &format!(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3
             WHERE {filter} AND revoked_at IS NULL AND expires_at > ?2"
        ),
        params![arg, now, reason],
    )
}

pub(super) fn revoke_one(
    tx: &Connection,
    user_id: Uuid,
    session_id: Uuid,
    now: Millis,
    reason: &str,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?4
             WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
        )?
        .execute(params![
            session_id.to_string(),
            user_id.to_string(),
            now,
            reason
        ])?;
    Ok(n > 0)
}

pub(super) fn revoke_of_user(
    tx: &Connection,
    user_id: Uuid,
    now: Millis,
    reason: &str,
) -> rusqlite::Result<usize> {
    revoke_where(tx, "user_id = ?1", &user_id.to_string(), now, reason)
}

pub(super) fn revoke_all(tx: &Connection, now: Millis, reason: &str) -> rusqlite::Result<usize> {
    revoke_where(tx, "?1 = ?1", "", now, reason)
}

pub(super) fn count_live(c: &Connection, now: Millis) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > ?1")?
        .query_row([now], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}
