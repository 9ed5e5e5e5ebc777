//! Domain layer: one-time tokens (CONTRACT 10.2, 11.1, 11.3). Password reset, email
//! verification and email change tokens, mfaTokens and WebAuthn ceremonies are one mechanism:
//! a random secret of 256 bits (`crypto::one_time`), stored only as its hex SHA-256, with a
//! purpose, an owner, an expiry, and used once. Each flow is a `Purpose`; the store issues,
//! uses (an atomic delete) and kills them the same way for all.

use uuid::Uuid;

use super::time::Millis;

/// What a one-time token is for. Stored as `as_str()` in `one_time_tokens.purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// `POST /api/auth/password-reset/confirm` (10.3).
    PasswordReset,
    /// `POST /api/auth/verify-email` (10.4).
    VerifyEmail,
    /// Email change, the link mailed to the new address (10.5).
    EmailChangeNew,
    /// Email change, the link mailed to the current address (10.5).
    EmailChangeOld,
    /// The `mfaToken` of a login answered `MFA_REQUIRED` (11.1).
    Mfa,
    /// A TOTP enrolment waiting for its first code (11.2).
    TotpEnrollment,
    /// A passkey registration ceremony (11.3).
    PasskeyRegistration,
    /// A passkey authentication ceremony, discoverable or as a second factor (11.3).
    PasskeyAuthentication,
}

impl Purpose {
    /// Every purpose, in a stable order.
    pub const ALL: [Purpose; 8] = [
        Purpose::PasswordReset,
        Purpose::VerifyEmail,
        Purpose::EmailChangeNew,
        Purpose::EmailChangeOld,
        Purpose::Mfa,
        Purpose::TotpEnrollment,
        Purpose::PasskeyRegistration,
        Purpose::PasskeyAuthentication,
    ];

    /// The purposes of tokens mailed to an address: what a credential change kills
    /// (CONTRACT 10.2).
    pub const MAILED: [Purpose; 4] = [
        Purpose::PasswordReset,
        Purpose::VerifyEmail,
        Purpose::EmailChangeNew,
        Purpose::EmailChangeOld,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "password_reset",
            Purpose::VerifyEmail => "verify_email",
            Purpose::EmailChangeNew => "email_change_new",
            Purpose::EmailChangeOld => "email_change_old",
            Purpose::Mfa => "mfa",
            Purpose::TotpEnrollment => "totp_enrollment",
            Purpose::PasskeyRegistration => "passkey_registration",
            Purpose::PasskeyAuthentication => "passkey_authentication",
        }
    }

    /// The purpose stored as `s`, if any.
    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::parse(s).ok_or_else(|| format!("unknown one-time token purpose '{s}'"))
    }
}

/// A one-time token about to be stored: its hash, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOneTimeToken {
    /// Hex SHA-256 of the token (`crypto::one_time::hash`).
    pub token_hash: String,
    pub purpose: Purpose,
    /// The owner; `None` only for a ceremony that names no account yet.
    pub user_id: Option<Uuid>,
    /// The address a mailed token goes to: the token proves that address and nothing else.
    pub address: Option<String>,
    /// What the purpose carries (JSON), never a secret that works on its own.
    pub payload: Option<String>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl NewOneTimeToken {
    /// A token of `purpose` for `user_id`, bound to `address`, made at `now` and living
    /// `ttl_ms` milliseconds.
    pub fn for_address(
        token_hash: String,
        purpose: Purpose,
        user_id: Uuid,
        address: &str,
        payload: Option<String>,
        now: Millis,
        ttl_ms: Millis,
    ) -> Self {
        NewOneTimeToken {
            token_hash,
            purpose,
            user_id: Some(user_id),
            address: Some(address.to_string()),
            payload,
            created_at: now,
            expires_at: now + ttl_ms,
        }
    }
}

/// A stored one-time token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeToken {
    pub token_hash: String,
    pub purpose: Purpose,
    pub user_id: Option<Uuid>,
    pub address: Option<String>,
    pub payload: Option<String>,
    /// Wrong answers given with it so far (mfaTokens).
    pub attempts: u32,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl OneTimeToken {
    /// Whether it is past its lifetime at `now` (milliseconds).
    pub fn expired(&self, now: Millis) -> bool {
        now >= self.expires_at
    }
}

/// What using a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// It was live: it is used up now, and this is what it carried.
    Used(OneTimeToken),
    /// It existed but its lifetime had passed (it is deleted now): 400/401 `TOKEN_EXPIRED`.
    Expired,
    /// Unknown, already used, superseded or killed: 400/401 `TOKEN_INVALID`.
    Unknown,
}

impl Consumed {
    /// The answer for a row an atomic delete returned (or `None`) at `now`.
    pub fn of(row: Option<OneTimeToken>, now: Millis) -> Consumed {
        match row {
            Some(t) if t.expired(now) => Consumed::Expired,
            Some(t) => Consumed::Used(t),
            None => Consumed::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip_and_are_distinct() {
        let names: std::collections::HashSet<_> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), Purpose::ALL.len());
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(Purpose::parse("nope"), None);
    }

    #[test]
    fn consumed_tells_expired_from_live() {
        let t = OneTimeToken {
            token_hash: "h".into(),
            purpose: Purpose::PasswordReset,
            user_id: None,
            address: None,
            payload: None,
            attempts: 0,
            created_at: 0,
            expires_at: 100,
        };
        assert_eq!(Consumed::of(Some(t.clone()), 99), Consumed::Used(t.clone()));
        assert_eq!(Consumed::of(Some(t), 100), Consumed::Expired);
        assert_eq!(Consumed::of(None, 0), Consumed::Unknown);
    }
}
