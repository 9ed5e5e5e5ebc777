//! Domain layer: second factors (CONTRACT 11.1, 11.2, 11.4): what an account has, what a
//! second-factor answer proves, and what opening a session on it did.

use uuid::Uuid;

use super::time::Millis;
use super::SessionOpening;

/// The second factors an account has (`GET /api/auth/mfa`, the admin's `mfa` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MfaState {
    /// TOTP is confirmed.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes: u32,
    /// Registered passkeys (rows of `passkeys`).
    pub passkeys: u32,
}

impl MfaState {
    /// Whether a login must show a second factor.
    pub fn required(&self) -> bool {
        self.totp || self.passkeys > 0
    }

    /// The contract's `methods` of an `MFA_REQUIRED` answer: `totp`, `recovery_code`,
    /// `webauthn`, in that order, those the account can use.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.totp {
            m.push("totp");
        }
        if self.recovery_codes > 0 {
            m.push("recovery_code");
        }
        if self.passkeys > 0 {
            m.push("webauthn");
        }
        m
    }
}

/// An account's second factors as an admin sees them (CONTRACT 11.4: the `mfa` object of
/// `authd users show` and the admin account object, `{"totp": bool, "passkeys": n}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MfaSummary {
    /// TOTP is confirmed.
    pub totp: bool,
    /// Registered passkeys.
    pub passkeys: u32,
}

impl MfaState {
    /// What an admin sees of it (no recovery-code count).
    pub fn summary(&self) -> MfaSummary {
        MfaSummary {
            totp: self.totp,
            passkeys: self.passkeys,
        }
    }
}

/// An account's TOTP secret as stored: sealed under `mfa.secret_key` when `sealed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTotp {
    pub user_id: Uuid,
    pub secret: Vec<u8>,
    pub sealed: bool,
    /// The last 30-second step accepted (enrolment or login), if any.
    pub last_step: Option<i64>,
    pub created_at: Millis,
}

/// A checked second-factor answer, to be spent in the transaction that opens the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaProof {
    /// A TOTP code matched this step: the session opens only if the account's `last_step`
    /// is below it (set to it in the same transaction).
    Totp { step: i64 },
    /// A recovery code with this hash: the session opens only if deleting the row finds it.
    RecoveryCode { code_hash: String },
    /// A passkey assertion checked against the ceremony bound to this mfaToken: the ceremony
    /// was used up by that check (a replay finds nothing), so nothing is left to spend.
    Webauthn,
}

/// What `Store::open_mfa_session` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaOpening {
    /// The mfaToken was used up and the session opening decided (opened or refused).
    Decided {
        opening: SessionOpening,
        /// Recovery codes left after this one (for a recovery-code proof).
        recovery_codes_left: u32,
    },
    /// The mfaToken is unknown, used or dead: 401 `TOKEN_INVALID`.
    TokenUnknown,
    /// The mfaToken's lifetime passed (it is deleted now): 401 `TOKEN_EXPIRED`.
    TokenExpired,
    /// The proof was spent already (a replayed TOTP step, a used recovery code): nothing
    /// opened; the answer counts as a wrong one.
    Spent,
}

/// A confirmed TOTP enrolment to store (`Store::enable_totp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrollment {
    pub user_id: Uuid,
    /// The pending enrolment's one-time token hash (Purpose::TotpEnrollment): used up here.
    pub enrollment_hash: String,
    pub secret: Vec<u8>,
    pub sealed: bool,
    /// The step of the code that confirmed it: recorded as `last_step`, so that code cannot
    /// log in (CONTRACT 11.1).
    pub step: i64,
    /// Hashes of the new recovery codes.
    pub recovery_hashes: Vec<String>,
    /// The confirming session: stays live and gains `otp`.
    pub session_id: Uuid,
    pub now: Millis,
}

/// What `Store::enable_totp` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableOutcome {
    /// TOTP is on; this many other sessions were revoked.
    Enabled { revoked_sessions: usize },
    /// The pending enrolment was gone (used, superseded or expired).
    NoEnrollment,
    /// TOTP was already on.
    AlreadyEnabled,
}

/// What `Store::disable_mfa` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MfaRemoved {
    /// TOTP was on (its secret and the recovery codes are gone).
    pub totp: bool,
    /// Passkeys deleted (admin reset only).
    pub passkeys: usize,
    /// Live sessions revoked (admin reset only).
    pub revoked_sessions: usize,
}
