//! Store layer (SQLite): password reset and email verification (`domain::self_service`,
//! CONTRACT 10.3, 10.4). Every function runs in the write transaction that SQLite serialises
//! (`BEGIN IMMEDIATE` of the writer): the account a decision rests on is not changed by
//! another writer before commit.

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::accounts::set_password_hash;
use super::users::{self, user_row, USER_COLS};
use super::{limits, one_time, outbox};
use crate::domain::mail::{MailKind, MailThrottle, NewMail};
use crate::domain::one_time::{Consumed, Purpose};
use crate::domain::self_service::{
    mail_decision, MailRequested, Registration, ResetOutcome, VerifyOutcome,
};
use crate::domain::time::Millis;
use crate::domain::{NewUser, User};

/// The user a token was made for, if it still has the address the token was mailed to.
fn owner(
    tx: &Connection,
    user_id: Option<Uuid>,
    address: Option<&str>,
) -> rusqlite::Result<Option<User>> {
    let Some(id) = user_id else {
        return Ok(None);
    };
    Ok(users::by_id(tx, id)?.filter(|u| address == Some(u.email.as_str())))
}

/// `Store::request_mail`, inside the caller's write transaction.
pub(super) fn request_mail(
    tx: &Connection,
    email: &str,
    kind: MailKind,
    mail_id: Uuid,
    throttle: &MailThrottle,
    now: Millis,
) -> rusqlite::Result<MailRequested> {
    let found = users::by_email(tx, email)?.map(|c| c.user);
    // The throttle is read on every branch (for the address asked about, which is the
    // account's stored one when there is an account): the same work whatever is found.
    let mail = NewMail {
        id: mail_id,
        kind,
        user_id: found.as_ref().map(|u| u.id),
        to: email.to_string(),
        payload: None,
        created_at: now,
    };
    let dropped = outbox::dropped(tx, &mail, throttle)?;
    if let Err(reason) = mail_decision(kind, found.as_ref()) {
        return Ok(MailRequested {
            user_id: mail.user_id,
            reason,
        });
    }
    let user_id = mail.user_id.expect("decided on an account");
    if !dropped {
        outbox::enqueue(tx, &mail)?;
    }
    Ok(MailRequested::queued(user_id, !dropped))
}

/// `Store::reset_password`, inside the caller's write transaction.
pub(super) fn reset_password(
    tx: &Connection,
    token_hash: &str,
    password_hash: &str,
    notice_id: Uuid,
    now: Millis,
) -> rusqlite::Result<ResetOutcome> {
    let token = match one_time::consume(tx, Purpose::PasswordReset, token_hash, now)? {
        Consumed::Used(t) => t,
        Consumed::Expired => return Ok(ResetOutcome::Expired),
        Consumed::Unknown => return Ok(ResetOutcome::Invalid),
    };
    let Some(user) = owner(tx, token.user_id, token.address.as_deref())? else {
        return Ok(ResetOutcome::Invalid);
    };
    let revoked = set_password_hash(tx, user.id, password_hash, None, now)?;
    one_time::kill(tx, user.id, &[])?;
    limits::clear(tx, &format!("email:{}", user.email))?;
    let user = tx
        .prepare_cached(&format!(
            "UPDATE users SET email_verified = 1 WHERE id = ?1 RETURNING {USER_COLS}"
        ))?
        .query_row([user.id.to_string()], user_row)?;
    outbox::enqueue(
        tx,
        &NewMail::to_account(
            MailKind::PasswordResetNotice,
            notice_id,
            user.id,
            &user.email,
            now,
        ),
    )?;
    Ok(ResetOutcome::Done { user, revoked })
}

/// `Store::verify_email`, inside the caller's write transaction.
pub(super) fn verify_email(
    tx: &Connection,
    token_hash: &str,
    now: Millis,
) -> rusqlite::Result<VerifyOutcome> {
    let token = match one_time::consume(tx, Purpose::VerifyEmail, token_hash, now)? {
        Consumed::Used(t) => t,
        Consumed::Expired => return Ok(VerifyOutcome::Expired),
        Consumed::Unknown => return Ok(VerifyOutcome::Invalid),
    };
    let Some(user) = owner(tx, token.user_id, token.address.as_deref())? else {
        return Ok(VerifyOutcome::Invalid);
    };
    Ok(match mark_verified(tx, user.id)? {
        Some(user) => VerifyOutcome::Verified(user),
        None => VerifyOutcome::Invalid,
    })
}

/// `Store::mark_email_verified`, inside the caller's write transaction.
pub(super) fn mark_verified(tx: &Connection, user_id: Uuid) -> rusqlite::Result<Option<User>> {
    let user = tx
        .prepare_cached(&format!(
            "UPDATE users SET email_verified = 1 WHERE id = ?1 RETURNING {USER_COLS}"
        ))?
        .query_row([user_id.to_string()], user_row)
        .optional()?;
    if user.is_some() {
        one_time::kill(tx, user_id, &[Purpose::VerifyEmail])?;
    }
    Ok(user)
}

/// `Store::register_unverified`, inside the caller's write transaction.
pub(super) fn register_unverified(
    tx: &Connection,
    new: &NewUser,
    mail_id: Uuid,
    throttle: &MailThrottle,
) -> rusqlite::Result<(Registration, Uuid, bool)> {
    let found = users::by_email(tx, &new.email)?.map(|c| c.user);
    let what = Registration::of(found.as_ref());
    let user = match (what, found) {
        (Registration::Created, _) => users::insert(tx, new)?,
        (Registration::Replaced, Some(old)) => {
            // Its age restarts: `email.unverified_ttl` counts from this registration.
            tx.prepare_cached("UPDATE users SET name = ?2, created_at = ?3 WHERE id = ?1")?
                .execute(params![old.id.to_string(), new.name, new.created_at])?;
            // The first registrant's sessions and links die with its password.
            set_password_hash(tx, old.id, &new.password_hash, None, new.created_at)?;
            one_time::kill(tx, old.id, &[])?;
            old
        }
        (_, Some(existing)) => existing,
        (_, None) => unreachable!("only a registration of a free address creates"),
    };
    let queued = match what.mail() {
        Some(kind) => outbox::enqueue_throttled(
            tx,
            &NewMail::to_account(kind, mail_id, user.id, &user.email, new.created_at),
            throttle,
        )?,
        None => false,
    };
    Ok((what, user.id, queued))
}

/// `Store::purge_unverified`, inside the caller's transaction.
pub(super) fn purge_unverified(
    c: &Connection,
    created_before: Millis,
    dry_run: bool,
) -> rusqlite::Result<u64> {
    let filter = "role = 'user' AND email_verified = 0 AND created_at < ?1";
    let n = if dry_run {
        c.prepare_cached(&format!("SELECT COUNT(*) FROM users WHERE {filter}"))?
            .query_row([created_before], |r| r.get::<_, i64>(0))?
    } else {
        c.prepare_cached(&format!("DELETE FROM users WHERE {filter}"))?
            .execute([created_before])? as i64
    };
    Ok(n.max(0) as u64)
}
