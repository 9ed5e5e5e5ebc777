//! Store layer (PostgreSQL): email change (`domain::email_change`, CONTRACT 10.5): the pending
//! change of an account (`email_changes`, migration V14), its confirmation (the address moves
//! at the last one, in one transaction) and an admin's `set_email`. Every write first locks the
//! user row (`FOR UPDATE`: the address is a unique key), so the changes, confirmations and
//! password changes of one account run one after the other, at one instance or several.

use postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::one_time;
use super::outbox;
use super::users::{user_at, USER_COLS};
use super::PgResult;
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

fn pending_at(r: &Row) -> PgResult<PendingEmailChange> {
    Ok(PendingEmailChange {
        user_id: r.try_get(0)?,
        change_id: r.try_get(1)?,
        new_email: r.try_get(2)?,
        old_email: r.try_get(3)?,
        session_id: r.try_get(4)?,
        new_confirmed: r.try_get(5)?,
        old_confirmed: r.try_get(6)?,
        created_at: r.try_get(7)?,
        expires_at: r.try_get(8)?,
    })
}

/// The user, its row locked until the transaction ends. Lock: two confirmations of one
/// change (its two links at once) must not both read "the other one is still missing", and a
/// request, a cancel or a password change must not interleave with a confirmation.
pub(super) fn lock_user(tx: &mut Db<'_, Transaction<'_>>, id: Uuid) -> PgResult<Option<User>> {
    tx.query_opt(
        &format!("SELECT {USER_COLS} FROM users WHERE id = $1 FOR UPDATE"),
        &[&id],
    )?
    .map(|r| user_at(&r, 0))
    .transpose()
}

/// Whether an account other than `user_id` has `email`. A registration racing this check
/// fails the address's unique index instead (the caller answers `EMAIL_TAKEN` then).
fn taken_by_other(tx: &mut Db<'_, Transaction<'_>>, email: &str, user_id: Uuid) -> PgResult<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM users WHERE email = $1 AND id <> $2",
            &[&email, &user_id],
        )?
        .is_some())
}

/// Deletes the user's pending change and its tokens; whether there was one.
pub(super) fn drop_pending(tx: &mut Db<'_, Transaction<'_>>, user_id: Uuid) -> PgResult<bool> {
    one_time::kill(tx, user_id, &CHANGE_PURPOSES)?;
    let n = tx.execute("DELETE FROM email_changes WHERE user_id = $1", &[&user_id])?;
    Ok(n > 0)
}

/// `Store::pending_email_change`.
pub(super) fn pending(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
) -> PgResult<Option<PendingEmailChange>> {
    c.query_opt(
        &format!("SELECT {COLS} FROM email_changes WHERE user_id = $1"),
        &[&user_id],
    )?
    .map(|r| pending_at(&r))
    .transpose()
}

/// `Store::request_email_change`, inside the caller's transaction.
pub(super) fn request(
    tx: &mut Db<'_, Transaction<'_>>,
    change: &PendingEmailChange,
    mails: &[NewMail],
) -> PgResult<RequestOutcome> {
    if lock_user(tx, change.user_id)?.is_none() {
        // Deleted since the request was authenticated: its pending change would go with it.
        return Ok(RequestOutcome::Pending);
    }
    if taken_by_other(tx, &change.new_email, change.user_id)? {
        return Ok(RequestOutcome::EmailTaken);
    }
    // A newer request replaces the older one: its links die with it.
    drop_pending(tx, change.user_id)?;
    tx.execute(
        &format!("INSERT INTO email_changes ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        &[
            &change.user_id,
            &change.change_id,
            &change.new_email,
            &change.old_email,
            &change.session_id,
            &change.new_confirmed,
            &change.old_confirmed,
            &change.created_at,
            &change.expires_at,
        ],
    )?;
    for m in mails {
        outbox::enqueue(tx, m)?;
    }
    Ok(RequestOutcome::Pending)
}

/// `Store::confirm_email_change`, inside the caller's transaction: uses the token up (of
/// either purpose; of two concurrent uses one finds it), locks the owner, lets
/// `email_change::step` decide on its pending change, and records the confirmation or
/// completes the change.
pub(super) fn confirm(
    tx: &mut Db<'_, Transaction<'_>>,
    token_hash: &str,
    now: Millis,
) -> PgResult<ConfirmOutcome> {
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
    let Some(current) = lock_user(tx, owner)? else {
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
            tx.execute(
                "UPDATE email_changes SET new_confirmed = $2, old_confirmed = $3
                 WHERE user_id = $1",
                &[&owner, &next.new_confirmed, &next.old_confirmed],
            )?;
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
/// sessions were revoked. The caller holds the user row's lock.
fn move_address(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    email: &str,
    keep: Option<Uuid>,
    now: Millis,
) -> PgResult<(User, usize)> {
    let row = tx.query_one(
        &format!(
            "UPDATE users SET email = $2, email_verified = TRUE WHERE id = $1 RETURNING {USER_COLS}"
        ),
        &[&user_id, &email],
    )?;
    let user = user_at(&row, 0)?;
    // Conditional update: a session revoked meanwhile is not counted again.
    let revoked = tx.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = 'email_change'
         WHERE user_id = $1 AND id IS DISTINCT FROM $3
           AND revoked_at IS NULL AND expires_at > $2",
        &[&user_id, &now, &keep],
    )? as usize;
    one_time::kill(tx, user_id, &Purpose::MAILED)?;
    outbox::cancel_links(tx, user_id, now)?;
    drop_pending(tx, user_id)?;
    Ok((user, revoked))
}

/// `Store::cancel_email_change`, inside the caller's transaction.
pub(super) fn cancel(tx: &mut Db<'_, Transaction<'_>>, user_id: Uuid) -> PgResult<bool> {
    lock_user(tx, user_id)?;
    drop_pending(tx, user_id)
}

/// `Store::set_email`, inside the caller's transaction.
pub(super) fn set_email(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    email: &str,
    now: Millis,
) -> PgResult<SetEmailOutcome> {
    let Some(before) = lock_user(tx, user_id)? else {
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
