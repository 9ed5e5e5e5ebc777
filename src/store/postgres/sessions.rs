//! Store layer (PostgreSQL): sessions and their refresh tokens: creation, rotation, lookups,
//! revocation. Rotation and revocation lock what they decide on (see docs/DESIGN.md,
//! "Locking on PostgreSQL").

use postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::users::{self, user_at};
use super::{opt_text, role, PgResult};
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

/// A session from the `SESSION_COLS` columns (also `s.`-qualified) starting at column 0.
fn session_row(row: &Row) -> PgResult<Session> {
    Ok(Session {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        created_at: row.try_get(2)?,
        last_used_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        user_agent: row.try_get(6)?,
        ip: row.try_get(7)?,
        device_info: row.try_get(8)?,
        auth_methods: AuthMethod::decode_list(row.try_get::<_, Option<String>>(9)?.as_deref()),
    })
}

/// `Store::open_session` in the caller's transaction: the user's row read and locked, the
/// decision (`store::opening`), then the login recorded and the session stored.
pub(super) fn open(
    tx: &mut Db<'_, Transaction<'_>>,
    new: &NewSession,
    verified_hash: &str,
) -> PgResult<SessionOpening> {
    let user_id = new.session.user_id;
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

/// Creates a session and its first token in the caller's transaction (the user's row checked
/// and locked by the caller: `open`, or `insert_user` inserting it).
pub(super) fn create(tx: &mut Db<'_, Transaction<'_>>, new: &NewSession) -> PgResult<()> {
    let (s, t) = (&new.session, &new.token);
    tx.execute(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at,
                               user_agent, ip, device_info, auth_methods)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &s.id,
            &s.user_id,
            &s.created_at,
            &s.last_used_at,
            &s.expires_at,
            &opt_text(&s.user_agent),
            &opt_text(&s.ip),
            &opt_text(&s.device_info),
            &AuthMethod::encode_list(&s.auth_methods),
        ],
    )?;
    insert_token(tx, t, false)
}

fn insert_token(
    tx: &mut Db<'_, Transaction<'_>>,
    t: &NewRefreshToken,
    legacy: bool,
) -> PgResult<()> {
    tx.execute(
        "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at, legacy)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &t.session_id,
            &t.hash,
            &t.created_at,
            &t.expires_at,
            &legacy.then_some(true),
        ],
    )
    .map(|_| ())
}

/// One way to find a presented refresh token: by the session it names and its hash ($1, $2),
/// or, failing that, by hash alone among legacy tokens ($1; see migration V4).
struct TokenLookup {
    keyed: &'static str,
    legacy: &'static str,
}

macro_rules! token_lookup {
    ($select:literal, $suffix:literal) => {
        TokenLookup {
            keyed: concat!(
                $select,
                " WHERE t.session_id = $1 AND t.token_hash = $2",
                $suffix
            ),
            legacy: concat!($select, " WHERE t.token_hash = $1 AND t.legacy", $suffix),
        }
    };
}

/// The session a token belongs to (logout): a plain read.
const SESSION_OF_TOKEN: TokenLookup = token_lookup!(
    "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
            s.user_agent, s.ip, s.device_info, s.auth_methods
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id",
    ""
);

/// Everything a rotation decides on, in one statement, locking the token and its session.
/// Lock: two rotations of one token (or a rotation and a revocation of its session) would
/// otherwise both read `rotated_at IS NULL` / `revoked_at IS NULL` at READ COMMITTED and both
/// succeed; the second now waits, then reads the first one's committed row.
const TOKEN_TO_ROTATE: TokenLookup = token_lookup!(
    "SELECT t.session_id, t.expires_at, t.rotated_at, t.legacy,
            s.user_id, s.revoked_at, u.role, u.disabled
     FROM refresh_tokens t
     JOIN sessions s ON s.id = t.session_id
     JOIN users u ON u.id = s.user_id",
    " FOR NO KEY UPDATE OF t, s"
);

fn find_token(
    c: &mut Db<'_, impl GenericClient>,
    lookup: &TokenLookup,
    session_hint: Uuid,
    hash: &str,
) -> PgResult<Option<Row>> {
    if let Some(row) = c.query_opt(lookup.keyed, &[&session_hint, &hash])? {
        return Ok(Some(row));
    }
    c.query_opt(lookup.legacy, &[&hash])
}

/// The rotation itself (see `Store::rotate_refresh_token`), inside the caller's transaction:
/// find and lock the token and its session, let `rotation::decide`, write what it says.
pub(super) fn rotate(tx: &mut Db<'_, Transaction<'_>>, r: &Rotation) -> PgResult<RotateOutcome> {
    let found = find_token(tx, &TOKEN_TO_ROTATE, r.presented_session, &r.presented_hash)?
        .map(|row| {
            Ok::<_, postgres::Error>(Presented {
                session_id: row.try_get(0)?,
                expires_at: row.try_get(1)?,
                rotated_at: row.try_get(2)?,
                legacy: row.try_get::<_, Option<bool>>(3)?.unwrap_or(false),
                user_id: row.try_get(4)?,
                revoked_at: row.try_get(5)?,
                role: role(&row, 6)?,
                disabled: row.try_get(7)?,
            })
        })
        .transpose()?;
    let (session_id, mark_rotated, legacy, outcome) = match rotation::decide(found.as_ref(), r) {
        Step::Refuse(outcome) => return Ok(outcome),
        Step::RevokeSession {
            session_id,
            outcome,
        } => {
            revoke_where(tx, "id = $1", &session_id, r.now, "reuse")?;
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
        tx.execute(
            "UPDATE refresh_tokens SET rotated_at = $3 WHERE session_id = $1 AND token_hash = $2",
            &[&session_id, &r.presented_hash, &r.now],
        )?;
    }
    let new = NewRefreshToken {
        hash: r.replacement_hash.clone(),
        session_id,
        created_at: r.now,
        expires_at: r.expires_at,
    };
    insert_token(tx, &new, legacy)?;
    tx.execute(
        "UPDATE sessions SET last_used_at = $2, expires_at = GREATEST(expires_at, $3) WHERE id = $1",
        &[&session_id, &r.now, &r.expires_at],
    )?;
    Ok(outcome)
}

/// Whether the session holds a refresh token with this hash (a rotation's replacement: a
/// fresh random token's hash, so finding it means that rotation committed). First waits for
/// any transaction still holding the session's row (a rotation whose `COMMIT` may still be on
/// its way in): `FOR SHARE` conflicts with the rotation's `FOR NO KEY UPDATE`, so the look-up
/// runs once that transaction has committed or rolled back (or after `lock_timeout`: 503).
pub(super) fn token_stored(
    tx: &mut Db<'_, Transaction<'_>>,
    session_id: Uuid,
    hash: &str,
) -> PgResult<bool> {
    tx.query_opt(
        "SELECT 1 FROM sessions WHERE id = $1 FOR SHARE",
        &[&session_id],
    )?;
    Ok(tx
        .query_opt(
            "SELECT 1 FROM refresh_tokens WHERE session_id = $1 AND token_hash = $2",
            &[&session_id, &hash],
        )?
        .is_some())
}

pub(super) fn by_id(c: &mut Db<'_, impl GenericClient>, id: Uuid) -> PgResult<Option<Session>> {
    c.query_opt(
        &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1"),
        &[&id],
    )?
    .map(|r| session_row(&r))
    .transpose()
}

/// A session and its user by the session's id (`$1`), one row or none: read through the pool
/// (`with_user`) and by the quick reads (`super::quick_read`); `with_user_row` parses it.
pub(super) const WITH_USER: &str =
    "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
            s.user_agent, s.ip, s.device_info, s.auth_methods,
            u.id, u.email, u.name, u.role, u.disabled, u.created_at, u.last_login_at, u.email_verified
     FROM sessions s JOIN users u ON u.id = s.user_id
     WHERE s.id = $1";

/// Parses a row of `WITH_USER`.
pub(super) fn with_user_row(r: &Row) -> PgResult<(Session, User)> {
    Ok((session_row(r)?, user_at(r, 10)?))
}

pub(super) fn with_user(
    c: &mut Db<'_, impl GenericClient>,
    id: Uuid,
) -> PgResult<Option<(Session, User)>> {
    c.query_opt(WITH_USER, &[&id])?
        .map(|r| with_user_row(&r))
        .transpose()
}

pub(super) fn by_token(
    c: &mut Db<'_, impl GenericClient>,
    session_hint: Uuid,
    token_hash: &str,
) -> PgResult<Option<Session>> {
    find_token(c, &SESSION_OF_TOKEN, session_hint, token_hash)?
        .map(|r| session_row(&r))
        .transpose()
}

pub(super) fn live(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    now: Millis,
) -> PgResult<Vec<Session>> {
    c.query(
        &format!(
            "SELECT {SESSION_COLS} FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC"
        ),
        &[&user_id, &now],
    )?
    .iter()
    .map(session_row)
    .collect()
}

/// Revokes the live sessions matching `filter` (which binds `$1`); returns how many.
/// Conditional update: `revoked_at IS NULL` is re-checked on the row's latest version after
/// any concurrent writer commits, so two revocations (or a revocation racing a reuse
/// detection) count each session once and never overwrite the first reason and time.
fn revoke_where(
    c: &mut Db<'_, impl GenericClient>,
    filter: &str,
    arg: &(dyn postgres::types::ToSql + Sync),
    now: Millis,
    reason: &str,
) -> PgResult<usize> {
    c.execute(
        &format!(
            "UPDATE sessions SET revoked_at = $2, revoke_reason = $3
             WHERE {filter} AND revoked_at IS NULL AND expires_at > $2"
        ),
        &[arg, &now, &reason],
    )
    .map(|n| n as usize)
}

pub(super) fn revoke_one(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    session_id: Uuid,
    now: Millis,
    reason: &str,
) -> PgResult<bool> {
    // Conditional update (see `revoke_where`): its row count decides the answer.
    c.execute(
        "UPDATE sessions SET revoked_at = $3, revoke_reason = $4
         WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
        &[&session_id, &user_id, &now, &reason],
    )
    .map(|n| n > 0)
}

pub(super) fn revoke_of_user(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    now: Millis,
    reason: &str,
) -> PgResult<usize> {
    revoke_where(c, "user_id = $1", &user_id, now, reason)
}

pub(super) fn revoke_all(
    c: &mut Db<'_, impl GenericClient>,
    now: Millis,
    reason: &str,
) -> PgResult<usize> {
    revoke_where(c, "$1::BOOLEAN", &true, now, reason)
}

pub(super) fn count_live(c: &mut Db<'_, impl GenericClient>, now: Millis) -> PgResult<u64> {
    c.query_one(
        "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
        &[&now],
    )?
    .try_get::<_, i64>(0)
    .map(|n| n as u64)
}
