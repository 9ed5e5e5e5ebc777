//! Store layer (SQLite): email change (`domain::email_change`, CONTRACT 10.5): the pending
//! change of an account (`email_changes`, migration V14), its confirmation (the address moves
//! at the last one, in one transaction) and an admin's `set_email`. Every function runs in the
//! write transaction that SQLite serialises (`BEGIN IMMEDIATE` of the writer): the reads a
//! decision rests on (the address free, the pending row) see no other writer until commit.

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::sessions::revoke_where;
use super::users::{user_row, USER_COLS};
use super::{one_time, opt_uuid_col, outbox, uuid_col};
use crate::domain::email_change::{
    self, ConfirmOutcome, PendingEmailChange, RequestOutcome, SetEmailOutcome, Step,
};
use crate::domain::mail::NewMail;
use crate::domain::one_time::{Consumed, Purpose};
use crate::domain::time::Millis;
use crate::domain::User;

const COLS: &str = "user_id, change_id, new_email, old_email, session_id, new_confirmed,
     old_confirmed, created_at, expires_at";

/// The purposes of an email change's tokens.
const CHANGE_PURPOSES: [Purpose; 2] = [Purpose::EmailChangeNew, Purpose::EmailChangeOld];

fn pending_row(r: &Row<'_>) -> rusqlite::Result<PendingEmailChange> {
    Ok(PendingEmailChange {
        user_id: uuid_col(r, 0)?,
        change_id: uuid_col(r, 1)?,
        new_email: r.get(2)?,
        old_email: r.get(3)?,
        session_id: opt_uuid_col(r, 4)?,
        new_confirmed: r.get::<_, i64>(5)? != 0,
        old_confirmed: r.get::<_, i64>(6)? != 0,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
    })
}

/// Whether an account other than `user_id` has `email`.
fn taken_by_other(tx: &Connection, email: &str, user_id: Uuid) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM users WHERE email = ?1 AND id <> ?2")?
        .query_row(params![email, user_id.to_string()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Deletes the user's pending change and its tokens; whether there was one.
pub(super) fn drop_pending(tx: &Connection, user_id: Uuid) -> rusqlite::Result<bool> {
    one_time::kill(tx, user_id, &CHANGE_PURPOSES)?;
    let n = tx
        .prepare_cached("DELETE FROM email_changes WHERE user_id = ?1")?
        .execute([user_id.to_string()])?;
    Ok(n > 0)
}

/// `Store::pending_email_change`.
pub(super) fn pending(
    c: &Connection,
    user_id: Uuid,
) -> rusqlite::Result<Option<PendingEmailChange>> {
    c.prepare_cached(&format!(
        "SELECT {COLS} FROM email_changes WHERE user_id = ?1"
    ))?
    .query_row([user_id.to_string()], pending_row)
    .optional()
}

/// `Store::request_email_change`, inside the caller's write transaction.
pub(super) fn request(
    tx: &Connection,
    change: &PendingEmailChange,
    mails: &[NewMail],
) -> rusqlite::Result<RequestOutcome> {
    if taken_by_other(tx, &change.new_email, change.user_id)? {
        return Ok(RequestOutcome::EmailTaken);
    }
    // A newer request replaces the older one: its links die with it.
    drop_pending(tx, change.user_id)?;
    tx.prepare_cached(&format!(
        "INSERT INTO email_changes ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        change.user_id.to_string(),
        change.change_id.to_string(),
        change.new_email,
        change.old_email,
        change.session_id.map(|s| s.to_string()),
        change.new_confirmed,
        change.old_confirmed,
        change.created_at,
        change.expires_at
    ])?;
    for m in mails {
        outbox::enqueue(tx, m)?;
    }
    Ok(RequestOutcome::Pending)
}

fn user(tx: &Connection, id: Uuid) -> rusqlite::Result<Option<User>> {
    tx.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
        .query_row([id.to_string()], user_row)
        .optional()
}

/// `Store::confirm_email_change`, inside the caller's write transaction: uses the token up
/// (of either purpose), lets `email_change::step` decide, and records the confirmation or
/// completes the change.
pub(super) fn confirm(
    tx: &Connection,
    token_hash: &str,
    now: Millis,
) -> rusqlite::Result<ConfirmOutcome> {
    let mut consumed = Consumed::Unknown;
    for purpose in CHANGE_PURPOSES {
        consumed = one_time::consume(tx, purpose, token_hash, now)?;
        if !matches!(consumed, Consumed::Unknown) {
            break;
        }
    }
    let token = match consumed {
        Consumed::Used(t) => t,
        Consumed::Expired => return Ok(ConfirmOutcome::Expired),
        Consumed::Unknown => return Ok(ConfirmOutcome::Invalid),
    };
    let Some(owner) = token.user_id else {
        return Ok(ConfirmOutcome::Invalid);
    };
    let Some(current) = user(tx, owner)? else {
        return Ok(ConfirmOutcome::Invalid);
    };
    let found = pending(tx, owner)?;
    match email_change::step(&token, found.as_ref(), &current.email, now) {
        Step::Invalid => Ok(ConfirmOutcome::Invalid),
        Step::Expired => {
            drop_pending(tx, owner)?;
            Ok(ConfirmOutcome::Expired)
        }
        Step::Record(next) => {
            tx.prepare_cached(
                "UPDATE email_changes SET new_confirmed = ?2, old_confirmed = ?3
                 WHERE user_id = ?1",
            )?
            .execute(params![
                owner.to_string(),
                next.new_confirmed,
                next.old_confirmed
            ])?;
            Ok(ConfirmOutcome::Recorded { user: current })
        }
        Step::Complete(next) => {
            // Re-checked in the transaction that moves the address: taken meanwhile (a
            // registration, another change, an admin) drops the change.
            if taken_by_other(tx, &next.new_email, owner)? {
                drop_pending(tx, owner)?;
                return Ok(ConfirmOutcome::EmailTaken { user_id: owner });
            }
            let (user, revoked) = move_address(tx, owner, &next.new_email, next.session_id, now)?;
            Ok(ConfirmOutcome::Complete {
                user,
                old_email: current.email,
                revoked,
            })
        }
    }
}

/// Sets the user's address (verified), revokes every session of the user except `keep`, kills
/// its mailed one-time tokens and drops its pending change; the user as changed and how many
/// sessions were revoked.
fn move_address(
    tx: &Connection,
    user_id: Uuid,
    email: &str,
    keep: Option<Uuid>,
    now: Millis,
) -> rusqlite::Result<(User, usize)> {
    let id = user_id.to_string();
    let user = tx
        .prepare_cached(&format!(
            "UPDATE users SET email = ?2, email_verified = 1 WHERE id = ?1 RETURNING {USER_COLS}"
        ))?
        .query_row(params![id, email], user_row)?;
    let revoked = match keep {
        Some(keep) => tx
            .prepare_cached(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'email_change'
                 WHERE user_id = ?1 AND id <> ?3 AND revoked_at IS NULL AND expires_at > ?2",
            )?
            .execute(params![id, now, keep.to_string()])?,
        None => revoke_where(tx, "user_id = ?1", &id, now, "email_change")?,
    };
    one_time::kill(tx, user_id, &Purpose::MAILED)?;
    outbox::cancel_links(tx, user_id, now)?;
    drop_pending(tx, user_id)?;
    Ok((user, revoked))
}

/// `Store::cancel_email_change`, inside the caller's write transaction.
pub(super) fn cancel(tx: &Connection, user_id: Uuid) -> rusqlite::Result<bool> {
    drop_pending(tx, user_id)
}

/// `Store::set_email`, inside the caller's write transaction.
pub(super) fn set_email(
    tx: &Connection,
    user_id: Uuid,
    email: &str,
    now: Millis,
) -> rusqlite::Result<SetEmailOutcome> {
    let Some(before) = user(tx, user_id)? else {
        return Ok(SetEmailOutcome::NotFound);
    };
    if taken_by_other(tx, email, user_id)? {
        return Ok(SetEmailOutcome::EmailTaken);
    }
    let (user, sessions) = move_address(tx, user_id, email, None, now)?;
    Ok(SetEmailOutcome::Done {
        user,
        old_email: before.email,
        sessions,
    })
}
