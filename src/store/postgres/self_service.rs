//! Store layer (PostgreSQL): password reset and email verification (`domain::self_service`,
//! CONTRACT 10.3, 10.4). Each function runs in the caller's transaction and locks what its
//! decision rests on: the user row (`FOR UPDATE`), or, for an address that may have no account
//! yet, the address's transaction-scoped advisory lock (the one the mail throttle takes), so
//! two requests for one address, at any instance, decide one after the other.

use postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::email_change::lock_user;
use super::passwords::set_password_hash;
use super::users::{self, user_at, USER_COLS};
use super::{limits, one_time, outbox, PgResult};
use crate::domain::mail::{MailKind, MailThrottle, NewMail};
use crate::domain::one_time::{Consumed, Purpose};
use crate::domain::self_service::{
    mail_decision, MailRequested, Registration, ResetOutcome, VerifyOutcome,
};
use crate::domain::time::Millis;
use crate::domain::{NewUser, User};

/// Locks `email` for this transaction: the advisory lock `outbox::enqueue_throttled` takes.
fn lock_address(tx: &mut Db<'_, Transaction<'_>>, email: &str) -> PgResult<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('authd-mail:' || $1, 0))",
        &[&email],
    )?;
    Ok(())
}

/// The account of `email`, its row locked.
fn lock_by_email(tx: &mut Db<'_, Transaction<'_>>, email: &str) -> PgResult<Option<User>> {
    tx.query_opt(
        &format!("SELECT {USER_COLS} FROM users WHERE email = $1 FOR UPDATE"),
        &[&email],
    )?
    .map(|r| user_at(&r, 0))
    .transpose()
}

/// The user a token was made for (its row locked), if it still has the address the token
/// was mailed to.
fn owner(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Option<Uuid>,
    address: Option<&str>,
) -> PgResult<Option<User>> {
    let Some(id) = user_id else {
        return Ok(None);
    };
    Ok(lock_user(tx, id)?.filter(|u| address == Some(u.email.as_str())))
}

/// `Store::request_mail`, inside the caller's transaction.
pub(super) fn request_mail(
    tx: &mut Db<'_, Transaction<'_>>,
    email: &str,
    kind: MailKind,
    mail_id: Uuid,
    throttle: &MailThrottle,
    now: Millis,
) -> PgResult<MailRequested> {
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

/// `Store::reset_password`, inside the caller's transaction.
pub(super) fn reset_password(
    tx: &mut Db<'_, Transaction<'_>>,
    token_hash: &str,
    password_hash: &str,
    notice_id: Uuid,
    now: Millis,
) -> PgResult<ResetOutcome> {
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
    let row = tx.query_one(
        &format!("UPDATE users SET email_verified = TRUE WHERE id = $1 RETURNING {USER_COLS}"),
        &[&user.id],
    )?;
    let user = user_at(&row, 0)?;
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

/// `Store::verify_email`, inside the caller's transaction.
pub(super) fn verify_email(
    tx: &mut Db<'_, Transaction<'_>>,
    token_hash: &str,
    now: Millis,
) -> PgResult<VerifyOutcome> {
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

/// `Store::mark_email_verified`, inside the caller's transaction.
pub(super) fn mark_verified(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
) -> PgResult<Option<User>> {
    let Some(row) = tx.query_opt(
        &format!("UPDATE users SET email_verified = TRUE WHERE id = $1 RETURNING {USER_COLS}"),
        &[&user_id],
    )?
    else {
        return Ok(None);
    };
    one_time::kill(tx, user_id, &[Purpose::VerifyEmail])?;
    Ok(Some(user_at(&row, 0)?))
}

/// `Store::register_unverified`, inside the caller's transaction.
pub(super) fn register_unverified(
    tx: &mut Db<'_, Transaction<'_>>,
    new: &NewUser,
    mail_id: Uuid,
    throttle: &MailThrottle,
) -> PgResult<(Registration, Uuid, bool)> {
    // Registrations of one address, at any instance, run one after the other.
    lock_address(tx, &new.email)?;
    let found = lock_by_email(tx, &new.email)?;
    let what = Registration::of(found.as_ref());
    let user = match (what, found) {
        (Registration::Created, _) => users::insert(tx, new)?,
        (Registration::Replaced, Some(old)) => {
            // Its age restarts: `email.unverified_ttl` counts from this registration.
            tx.execute(
                "UPDATE users SET name = $2, created_at = $3 WHERE id = $1",
                &[&old.id, &new.name, &new.created_at],
            )?;
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

/// `Store::purge_unverified`, inside the caller's transaction (or, for `dry_run`, on any
/// connection).
pub(super) fn purge_unverified(
    c: &mut Db<'_, impl GenericClient>,
    created_before: Millis,
    dry_run: bool,
) -> PgResult<u64> {
    let filter = "role = 'user' AND NOT email_verified AND created_at < $1";
    if dry_run {
        let n: i64 = c
            .query_one(
                &format!("SELECT COUNT(*) FROM users WHERE {filter}"),
                &[&created_before],
            )?
            .try_get(0)?;
        return Ok(n.max(0) as u64);
    }
    c.execute(
        &format!("DELETE FROM users WHERE {filter}"),
        &[&created_before],
    )
}
