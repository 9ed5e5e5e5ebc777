//! Store layer (SQLite): second factors (CONTRACT 11.1, 11.2, 11.4): TOTP secrets with the
//! last accepted step, recovery-code hashes, the session opened on a second factor (the
//! proof spent in the same transaction), admin reset. Every write runs in the writer's
//! `BEGIN IMMEDIATE` transaction.

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{one_time, sessions};
use crate::domain::mfa::{
    EnableOutcome, MfaOpening, MfaProof, MfaRemoved, MfaState, StoredTotp, TotpEnrollment,
};
use crate::domain::one_time::{Consumed, Purpose};
use crate::domain::time::Millis;
use crate::domain::AuthMethod;
use crate::store::NewSession;

/// `Store::mfa_state`.
pub(super) fn state(c: &Connection, user_id: Uuid) -> rusqlite::Result<MfaState> {
    let id = user_id.to_string();
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = ?1),
                (SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = ?1),
                (SELECT COUNT(*) FROM passkeys WHERE user_id = ?1)",
    )?
    .query_row([id], |r| {
        Ok(MfaState {
            totp: r.get(0)?,
            recovery_codes: r.get(1)?,
            passkeys: r.get(2)?,
        })
    })
}

/// `Store::totp_secret`.
pub(super) fn totp(c: &Connection, user_id: Uuid) -> rusqlite::Result<Option<StoredTotp>> {
    c.prepare_cached(
        "SELECT secret, sealed, last_step, created_at FROM mfa_totp WHERE user_id = ?1",
    )?
    .query_row([user_id.to_string()], |r| {
        Ok(StoredTotp {
            user_id,
            secret: r.get(0)?,
            sealed: r.get(1)?,
            last_step: r.get(2)?,
            created_at: r.get(3)?,
        })
    })
    .optional()
}

fn recovery_left(c: &Connection, user_id: Uuid) -> rusqlite::Result<u32> {
    c.prepare_cached("SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = ?1")?
        .query_row([user_id.to_string()], |r| r.get(0))
}

/// Spends `proof` for `user_id`; false when it was spent already.
pub(super) fn spend(c: &Connection, user_id: Uuid, proof: &MfaProof) -> rusqlite::Result<bool> {
    let id = user_id.to_string();
    let n = match proof {
        // Conditional update: of two answers with one step (this process or another), the
        // second finds `last_step` already at it and changes nothing (replay, CONTRACT 11.1).
        MfaProof::Totp { step } => c
            .prepare_cached(
                "UPDATE mfa_totp SET last_step = ?2
                 WHERE user_id = ?1 AND (last_step IS NULL OR last_step < ?2)",
            )?
            .execute(params![id, step])?,
        // One delete: of two uses of one code exactly one finds the row.
        MfaProof::RecoveryCode { code_hash } => c
            .prepare_cached("DELETE FROM mfa_recovery_codes WHERE user_id = ?1 AND code_hash = ?2")?
            .execute(params![id, code_hash])?,
        MfaProof::Webauthn => 1,
    };
    Ok(n > 0)
}

/// `Store::open_mfa_session`: the mfaToken read, the proof spent, the token used up and the
/// session opened (`sessions::open`), all in the caller's write transaction.
pub(super) fn open_session(
    tx: &Connection,
    mfa_token_hash: &str,
    proof: &MfaProof,
    new: &NewSession,
    verified_hash: &str,
) -> rusqlite::Result<MfaOpening> {
    let now = new.session.created_at;
    // `BEGIN IMMEDIATE`: no other write runs between this read and the token's delete below.
    let Some(token) = one_time::find(tx, Purpose::Mfa, mfa_token_hash)? else {
        return Ok(MfaOpening::TokenUnknown);
    };
    if token.expired(now) || token.user_id != Some(new.session.user_id) {
        one_time::consume(tx, Purpose::Mfa, mfa_token_hash, now)?;
        return Ok(if token.expired(now) {
            MfaOpening::TokenExpired
        } else {
            MfaOpening::TokenUnknown
        });
    }
    if !spend(tx, new.session.user_id, proof)? {
        return Ok(MfaOpening::Spent);
    }
    if !matches!(
        one_time::consume(tx, Purpose::Mfa, mfa_token_hash, now)?,
        Consumed::Used(_)
    ) {
        return Ok(MfaOpening::TokenUnknown);
    }
    let opening = sessions::open(tx, new, verified_hash)?;
    let recovery_codes_left = recovery_left(tx, new.session.user_id)?;
    Ok(MfaOpening::Decided {
        opening,
        recovery_codes_left,
    })
}

/// `Store::reserve_mfa_attempt`: one more answer taken on the mfaToken, if it has one left.
pub(super) fn reserve_attempt(
    tx: &Connection,
    mfa_token_hash: &str,
    max_attempts: u32,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE one_time_tokens SET attempts = attempts + 1
             WHERE token_hash = ?1 AND purpose = ?2 AND attempts < ?3",
        )?
        .execute(params![mfa_token_hash, Purpose::Mfa.as_str(), max_attempts])?;
    Ok(n == 1)
}

/// `Store::mfa_wrong_answer`: at `max_attempts` answers taken, the mfaToken dies. True when it
/// is dead now.
pub(super) fn wrong_answer(
    tx: &Connection,
    mfa_token_hash: &str,
    max_attempts: u32,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "DELETE FROM one_time_tokens WHERE token_hash = ?1 AND purpose = ?2 AND attempts >= ?3",
        )?
        .execute(params![mfa_token_hash, Purpose::Mfa.as_str(), max_attempts])?;
    Ok(n > 0)
}

/// `Store::enable_totp`.
pub(super) fn enable(tx: &Connection, e: &TotpEnrollment) -> rusqlite::Result<EnableOutcome> {
    let id = e.user_id.to_string();
    if totp(tx, e.user_id)?.is_some() {
        return Ok(EnableOutcome::AlreadyEnabled);
    }
    match one_time::consume(tx, Purpose::TotpEnrollment, &e.enrollment_hash, e.now)? {
        Consumed::Used(t) if t.user_id == Some(e.user_id) => {}
        _ => return Ok(EnableOutcome::NoEnrollment),
    }
    tx.prepare_cached(
        "INSERT INTO mfa_totp (user_id, secret, sealed, last_step, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, e.secret, e.sealed, e.step, e.now])?;
    replace_codes(tx, e.user_id, &e.recovery_hashes, e.now)?;
    let revoked = tx
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'mfa_enroll'
             WHERE user_id = ?1 AND id <> ?3 AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .execute(params![id, e.now, e.session_id.to_string()])?;
    add_method(tx, e.session_id, AuthMethod::Otp)?;
    Ok(EnableOutcome::Enabled {
        revoked_sessions: revoked,
    })
}

/// Adds `method` to a session's `auth_methods` (the confirming session gains `otp`).
fn add_method(tx: &Connection, session_id: Uuid, method: AuthMethod) -> rusqlite::Result<()> {
    let stored: Option<Option<String>> = tx
        .prepare_cached("SELECT auth_methods FROM sessions WHERE id = ?1")?
        .query_row([session_id.to_string()], |r| r.get(0))
        .optional()?;
    let Some(stored) = stored else {
        return Ok(());
    };
    let mut methods = AuthMethod::decode_list(stored.as_deref());
    if !methods.contains(&method) {
        methods.push(method);
    }
    tx.prepare_cached("UPDATE sessions SET auth_methods = ?2 WHERE id = ?1")?
        .execute(params![
            session_id.to_string(),
            AuthMethod::encode_list(&methods)
        ])?;
    Ok(())
}

/// `Store::replace_recovery_codes` (and enrolment): the old set deleted, the new one stored.
pub(super) fn replace_codes(
    tx: &Connection,
    user_id: Uuid,
    hashes: &[String],
    now: Millis,
) -> rusqlite::Result<()> {
    let id = user_id.to_string();
    tx.prepare_cached("DELETE FROM mfa_recovery_codes WHERE user_id = ?1")?
        .execute([&id])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO mfa_recovery_codes (code_hash, user_id, created_at) VALUES (?1, ?2, ?3)",
    )?;
    for h in hashes {
        insert.execute(params![h, id, now])?;
    }
    Ok(())
}

/// `Store::disable_mfa`, in the caller's write transaction: TOTP and the recovery codes
/// deleted with the pending mfaTokens and enrolments; with `reset_all` (admin reset) also the
/// passkeys and pending passkey ceremonies, and every live session of the user revoked.
pub(super) fn disable(
    tx: &Connection,
    user_id: Uuid,
    reset_all: bool,
    now: Millis,
) -> rusqlite::Result<MfaRemoved> {
    let id = user_id.to_string();
    let totp = tx
        .prepare_cached("DELETE FROM mfa_totp WHERE user_id = ?1")?
        .execute([&id])?
        > 0;
    tx.prepare_cached("DELETE FROM mfa_recovery_codes WHERE user_id = ?1")?
        .execute([&id])?;
    one_time::kill(tx, user_id, &[Purpose::Mfa, Purpose::TotpEnrollment])?;
    if !reset_all {
        return Ok(MfaRemoved {
            totp,
            ..MfaRemoved::default()
        });
    }
    let passkeys = tx
        .prepare_cached("DELETE FROM passkeys WHERE user_id = ?1")?
        .execute([&id])?;
    one_time::kill(
        tx,
        user_id,
        &[Purpose::PasskeyRegistration, Purpose::PasskeyAuthentication],
    )?;
    let revoked_sessions = sessions::revoke_where(tx, "user_id = ?1", &id, now, "mfa_reset")?;
    Ok(MfaRemoved {
        totp,
        passkeys,
        revoked_sessions,
    })
}
