//! Store layer (PostgreSQL): second factors (CONTRACT 11.1, 11.2, 11.4), the twin of
//! `store/sqlite/mfa.rs`: TOTP secrets with the last accepted step, recovery-code hashes,
//! the session opened on a second factor (the proof spent in the same transaction), admin
//! reset.

use postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::db::Db;
use super::{one_time, sessions, PgResult};
use crate::domain::mfa::{
    EnableOutcome, MfaOpening, MfaProof, MfaRemoved, MfaState, StoredTotp, TotpEnrollment,
};
use crate::domain::one_time::{Consumed, Purpose};
use crate::domain::time::Millis;
use crate::domain::AuthMethod;
use crate::store::NewSession;

/// `Store::mfa_state`.
pub(super) fn state(c: &mut Db<'_, impl GenericClient>, user_id: Uuid) -> PgResult<MfaState> {
    let r = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1),
                (SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1),
                (SELECT COUNT(*) FROM passkeys WHERE user_id = $1)",
        &[&user_id],
    )?;
    Ok(MfaState {
        totp: r.try_get(0)?,
        recovery_codes: r.try_get::<_, i64>(1)?.max(0) as u32,
        passkeys: r.try_get::<_, i64>(2)?.max(0) as u32,
    })
}

/// `Store::totp_secret`.
pub(super) fn totp(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
) -> PgResult<Option<StoredTotp>> {
    c.query_opt(
        "SELECT secret, sealed, last_step, created_at FROM mfa_totp WHERE user_id = $1",
        &[&user_id],
    )?
    .map(|r| {
        Ok(StoredTotp {
            user_id,
            secret: r.try_get(0)?,
            sealed: r.try_get(1)?,
            last_step: r.try_get(2)?,
            created_at: r.try_get(3)?,
        })
    })
    .transpose()
}

fn recovery_left(c: &mut Db<'_, impl GenericClient>, user_id: Uuid) -> PgResult<u32> {
    let n: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1",
            &[&user_id],
        )?
        .try_get(0)?;
    Ok(n.max(0) as u32)
}

/// Spends `proof` for `user_id`; false when it was spent already.
pub(super) fn spend(
    c: &mut Db<'_, impl GenericClient>,
    user_id: Uuid,
    proof: &MfaProof,
) -> PgResult<bool> {
    let n = match proof {
        // Conditional update: of two answers with one step (from any instance), the second
        // waits for the first's row lock, re-reads `last_step` and changes nothing (replay,
        // CONTRACT 11.1).
        MfaProof::Totp { step } => c.execute(
            "UPDATE mfa_totp SET last_step = $2
             WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)",
            &[&user_id, step],
        )?,
        // One delete: of two uses of one code exactly one finds the row.
        MfaProof::RecoveryCode { code_hash } => c.execute(
            "DELETE FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash = $2",
            &[&user_id, code_hash],
        )?,
        MfaProof::Webauthn => 1,
    };
    Ok(n > 0)
}

/// `Store::open_mfa_session`: the mfaToken read and locked, the proof spent, the token used
/// up and the session opened (`sessions::open`), all in the caller's transaction.
pub(super) fn open_session(
    tx: &mut Db<'_, Transaction<'_>>,
    mfa_token_hash: &str,
    proof: &MfaProof,
    new: &NewSession,
    verified_hash: &str,
) -> PgResult<MfaOpening> {
    let now = new.session.created_at;
    // Lock: two verifies of one mfaToken (wrong-answer counting, or a success) run one after
    // the other; the second re-reads the row and finds it gone once the first used it up.
    let Some(row) = tx.query_opt(
        "SELECT user_id, expires_at FROM one_time_tokens
         WHERE token_hash = $1 AND purpose = $2 FOR UPDATE",
        &[&mfa_token_hash, &Purpose::Mfa.as_str()],
    )?
    else {
        return Ok(MfaOpening::TokenUnknown);
    };
    let owner: Option<Uuid> = row.try_get(0)?;
    let expires_at: Millis = row.try_get(1)?;
    if now >= expires_at || owner != Some(new.session.user_id) {
        one_time::consume(tx, Purpose::Mfa, mfa_token_hash, now)?;
        return Ok(if now >= expires_at {
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
    tx: &mut Db<'_, Transaction<'_>>,
    mfa_token_hash: &str,
    max_attempts: u32,
) -> PgResult<bool> {
    // The UPDATE takes the row lock; a concurrent one waits and re-reads `attempts` (READ
    // COMMITTED re-checks the WHERE on the new row version), so no answer past the limit is
    // taken.
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let n = tx.execute(
        "UPDATE one_time_tokens SET attempts = attempts + 1
         WHERE token_hash = $1 AND purpose = $2 AND attempts < $3",
        &[&mfa_token_hash, &Purpose::Mfa.as_str(), &max],
    )?;
    Ok(n == 1)
}

/// `Store::mfa_wrong_answer`: at `max_attempts` answers taken, the mfaToken dies. True when it
/// is dead now.
pub(super) fn wrong_answer(
    tx: &mut Db<'_, Transaction<'_>>,
    mfa_token_hash: &str,
    max_attempts: u32,
) -> PgResult<bool> {
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    let n = tx.execute(
        "DELETE FROM one_time_tokens WHERE token_hash = $1 AND purpose = $2 AND attempts >= $3",
        &[&mfa_token_hash, &Purpose::Mfa.as_str(), &max],
    )?;
    Ok(n > 0)
}

/// `Store::enable_totp`.
pub(super) fn enable(
    tx: &mut Db<'_, Transaction<'_>>,
    e: &TotpEnrollment,
) -> PgResult<EnableOutcome> {
    // Lock: the user's row, so two confirmations of one account run one after the other and
    // the second finds TOTP on.
    tx.execute(
        "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
        &[&e.user_id],
    )?;
    if totp(tx, e.user_id)?.is_some() {
        return Ok(EnableOutcome::AlreadyEnabled);
    }
    match one_time::consume(tx, Purpose::TotpEnrollment, &e.enrollment_hash, e.now)? {
        Consumed::Used(t) if t.user_id == Some(e.user_id) => {}
        _ => return Ok(EnableOutcome::NoEnrollment),
    }
    tx.execute(
        "INSERT INTO mfa_totp (user_id, secret, sealed, last_step, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[&e.user_id, &e.secret, &e.sealed, &e.step, &e.now],
    )?;
    replace_codes(tx, e.user_id, &e.recovery_hashes, e.now)?;
    let revoked = tx.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = 'mfa_enroll'
         WHERE user_id = $1 AND id <> $3 AND revoked_at IS NULL AND expires_at > $2",
        &[&e.user_id, &e.now, &e.session_id],
    )?;
    add_method(tx, e.session_id, AuthMethod::Otp)?;
    Ok(EnableOutcome::Enabled {
        revoked_sessions: revoked as usize,
    })
}

/// Adds `method` to a session's `auth_methods` (the confirming session gains `otp`).
fn add_method(
    tx: &mut Db<'_, Transaction<'_>>,
    session_id: Uuid,
    method: AuthMethod,
) -> PgResult<()> {
    let Some(row) = tx.query_opt(
        "SELECT auth_methods FROM sessions WHERE id = $1 FOR UPDATE",
        &[&session_id],
    )?
    else {
        return Ok(());
    };
    let stored: Option<String> = row.try_get(0)?;
    let mut methods = AuthMethod::decode_list(stored.as_deref());
    if !methods.contains(&method) {
        methods.push(method);
    }
    tx.execute(
        "UPDATE sessions SET auth_methods = $2 WHERE id = $1",
        &[&session_id, &AuthMethod::encode_list(&methods)],
    )?;
    Ok(())
}

/// `Store::replace_recovery_codes` (and enrolment): the old set deleted, the new one stored.
pub(super) fn replace_codes(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    hashes: &[String],
    now: Millis,
) -> PgResult<()> {
    tx.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )?;
    for h in hashes {
        tx.execute(
            "INSERT INTO mfa_recovery_codes (code_hash, user_id, created_at) VALUES ($1, $2, $3)",
            &[h, &user_id, &now],
        )?;
    }
    Ok(())
}

/// `Store::disable_mfa`, in the caller's transaction: TOTP and the recovery codes deleted
/// with the pending mfaTokens and enrolments; with `reset_all` (admin reset) also the
/// passkeys and pending passkey ceremonies, and every live session of the user revoked.
pub(super) fn disable(
    tx: &mut Db<'_, Transaction<'_>>,
    user_id: Uuid,
    reset_all: bool,
    now: Millis,
) -> PgResult<MfaRemoved> {
    let totp = tx.execute("DELETE FROM mfa_totp WHERE user_id = $1", &[&user_id])? > 0;
    tx.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[&user_id],
    )?;
    one_time::kill(tx, user_id, &[Purpose::Mfa, Purpose::TotpEnrollment])?;
    if !reset_all {
        return Ok(MfaRemoved {
            totp,
            ..MfaRemoved::default()
        });
    }
    let passkeys = tx.execute("DELETE FROM passkeys WHERE user_id = $1", &[&user_id])? as usize;
    one_time::kill(
        tx,
        user_id,
        &[Purpose::PasskeyRegistration, Purpose::PasskeyAuthentication],
    )?;
    let revoked_sessions = sessions::revoke_of_user(tx, user_id, now, "mfa_reset")?;
    Ok(MfaRemoved {
        totp,
        passkeys,
        revoked_sessions,
    })
}
