//! Configuration section `[mfa]`: second factors (CONTRACT 11.1, 11.2).

use std::time::Duration;

use super::reader::Reader;
use super::render::{d, q, secret};
use super::secret::Secret;

/// The keys of `[mfa]`.
pub(super) const KEYS: &[&str] = &[
    "enabled",
    "issuer",
    "totp_skew",
    "challenge_ttl",
    "max_attempts",
    "recovery_codes",
    "secret_key",
    "required_for_admins",
];

/// Secret keys of `[mfa]` that can also be given as a file (`AUTHD_MFA__SECRET_KEY_FILE`).
pub(super) const FILE_KEYS: &[&str] = &["mfa.secret_key"];

#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// `mfa.enabled` (`AUTHD_MFA__ENABLED`), default `true`: users may enrol TOTP. When
    /// false the enrolment routes answer 404 `NOT_FOUND`; factors already confirmed are
    /// still asked for at login.
    pub enabled: bool,
    /// `mfa.issuer` (`AUTHD_MFA__ISSUER`), default `authd`: the issuer in `otpauthUri`.
    pub issuer: String,
    /// `mfa.totp_skew` (`AUTHD_MFA__TOTP_SKEW`), default `1`, at most 2: steps of 30 s
    /// accepted either side of now.
    pub totp_skew: u8,
    /// `mfa.challenge_ttl` (`AUTHD_MFA__CHALLENGE_TTL`), default `5m` (1s or more): how
    /// long an `mfaToken` (and a pending TOTP enrolment) lives.
    pub challenge_ttl: Duration,
    /// `mfa.max_attempts` (`AUTHD_MFA__MAX_ATTEMPTS`), default `5` (1 to 100): wrong
    /// answers after which an `mfaToken` dies.
    pub max_attempts: u32,
    /// `mfa.recovery_codes` (`AUTHD_MFA__RECOVERY_CODES`), default `10` (1 to 50): recovery
    /// codes made at TOTP confirmation and on regeneration.
    pub recovery_codes: u32,
    /// `mfa.secret_key` (`AUTHD_MFA__SECRET_KEY`, or `AUTHD_MFA__SECRET_KEY_FILE`), default
    /// empty: seals TOTP secrets at rest (ChaCha20-Poly1305 under a key derived with HKDF).
    /// The secret rules of CONTRACT 5 and 9 apply; `check-config` warns while it is empty.
    pub secret_key: Option<Secret>,
    /// `mfa.required_for_admins` (`AUTHD_MFA__REQUIRED_FOR_ADMINS`), default `false`: when
    /// true, an admin token whose session was opened without a second factor gets 403
    /// `FORBIDDEN` on `/api/admin/*`.
    pub required_for_admins: bool,
}

impl MfaSettings {
    pub(super) fn read(r: &mut Reader, warnings: &mut Vec<String>) -> Self {
        let enabled = r.boolean("mfa.enabled");
        let issuer = r.string("mfa.issuer");
        if issuer.trim().is_empty() {
            r.fail::<()>("mfa.issuer", "must not be empty");
        } else if issuer.contains(':') || issuer.chars().any(char::is_control) {
            r.fail::<()>("mfa.issuer", "must not contain ':' or control characters");
        }
        let totp_skew = r.uint("mfa.totp_skew", 0, 2) as u8;
        let challenge_ttl = r.duration("mfa.challenge_ttl", false);
        if !challenge_ttl.is_zero() && challenge_ttl < Duration::from_secs(1) {
            r.fail::<()>("mfa.challenge_ttl", "must be 1s or more");
        }
        let max_attempts = r.uint("mfa.max_attempts", 1, 100) as u32;
        let recovery_codes = r.uint("mfa.recovery_codes", 1, 50) as u32;
        let secret_key = r.secret("mfa.secret_key");
        if secret_key.is_none() {
            warnings.push(
                "mfa.secret_key is empty: TOTP secrets are stored unencrypted; set it (or \
                 AUTHD_MFA__SECRET_KEY_FILE) to seal them at rest"
                    .into(),
            );
        }
        let required_for_admins = r.boolean("mfa.required_for_admins");
        MfaSettings {
            enabled,
            issuer,
            totp_skew,
            challenge_ttl,
            max_attempts,
            recovery_codes,
            secret_key,
            required_for_admins,
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[mfa]\nenabled = {}\nissuer = {}\ntotp_skew = {}\nchallenge_ttl = {}\nmax_attempts = {}\nrecovery_codes = {}\nsecret_key = {}\nrequired_for_admins = {}\n",
            self.enabled,
            q(&self.issuer),
            self.totp_skew,
            d(self.challenge_ttl),
            self.max_attempts,
            self.recovery_codes,
            secret(&self.secret_key),
            self.required_for_admins
        )
    }
}
