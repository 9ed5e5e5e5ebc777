//! Configuration section `[jwt]`: token issuance, lifetimes and the configured secrets.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::Reader;
use super::render::{d, q, secret};
use super::secret::Secret;

/// The keys of `[jwt]`.
pub(super) const KEYS: &[&str] = &[
    "issuer",
    "audience",
    "algorithm",
    "access_ttl",
    "refresh_ttl",
    "refresh_reuse_grace",
    "leeway",
    "access_secret",
    "refresh_secret",
    "access_secret_previous",
    "refresh_secret_previous",
    "key_encryption_secret",
    "key_dir",
];

/// The keys of `[jwt]` that may also be given as a file (`AUTHD_..._FILE`).
pub(super) const FILE_KEYS: &[&str] = &[
    "jwt.access_secret",
    "jwt.refresh_secret",
    "jwt.access_secret_previous",
    "jwt.refresh_secret_previous",
    "jwt.key_encryption_secret",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    EdDsa,
    Hs256,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::EdDsa => "EdDSA",
            JwtAlgorithm::Hs256 => "HS256",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub algorithm: JwtAlgorithm,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub leeway: Duration,
    pub access_secret: Option<Secret>,
    pub refresh_secret: Option<Secret>,
    /// `jwt.access_secret_previous` (`AUTHD_JWT__ACCESS_SECRET_PREVIOUS`), default empty:
    /// the access secret before the last change; verifies access tokens, never signs.
    pub access_secret_previous: Option<Secret>,
    /// `jwt.refresh_secret_previous` (`AUTHD_JWT__REFRESH_SECRET_PREVIOUS`), default empty:
    /// the refresh secret before the last change; verifies refresh tokens, never signs.
    pub refresh_secret_previous: Option<Secret>,
    /// `jwt.key_encryption_secret` (`AUTHD_JWT__KEY_ENCRYPTION_SECRET`), default empty:
    /// encrypts the private parts of the signing keys kept in the database (docs/SECURITY.md).
    pub key_encryption_secret: Option<Secret>,
    pub key_dir: PathBuf,
}

impl JwtSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let algorithm_raw = r.string("jwt.algorithm");
        let algorithm = match algorithm_raw.to_ascii_uppercase().as_str() {
            "EDDSA" => JwtAlgorithm::EdDsa,
            "HS256" => JwtAlgorithm::Hs256,
            _ => {
                r.fail::<()>(
                    "jwt.algorithm",
                    format!("expected EdDSA or HS256, got '{algorithm_raw}'"),
                );
                JwtAlgorithm::EdDsa
            }
        };
        let access_secret = r.secret("jwt.access_secret");
        let refresh_secret = r.secret("jwt.refresh_secret");
        if let (Some(access), Some(refresh)) = (&access_secret, &refresh_secret) {
            if access == refresh {
                r.fail::<()>(
                    "jwt.refresh_secret",
                    "must differ from jwt.access_secret (refresh tokens use a separate key)",
                );
            }
        }
        let access_secret_previous = r.secret("jwt.access_secret_previous");
        let refresh_secret_previous = r.secret("jwt.refresh_secret_previous");
        let key_encryption_secret = r.secret("jwt.key_encryption_secret");
        for (key, value, current, current_key) in [
            (
                "jwt.access_secret_previous",
                &access_secret_previous,
                &access_secret,
                "jwt.access_secret",
            ),
            (
                "jwt.refresh_secret_previous",
                &refresh_secret_previous,
                &refresh_secret,
                "jwt.refresh_secret",
            ),
        ] {
            if value.is_some() && value == current {
                r.fail::<()>(key, format!("must differ from {current_key}"));
            }
        }
        if let Some(k) = &key_encryption_secret {
            if [&access_secret, &refresh_secret]
                .iter()
                .any(|s| s.as_ref() == Some(k))
            {
                r.fail::<()>(
                    "jwt.key_encryption_secret",
                    "must differ from jwt.access_secret and jwt.refresh_secret",
                );
            }
        }
        let issuer = r.string("jwt.issuer");
        let audience = r.string("jwt.audience");
        for (key, value) in [("jwt.issuer", &issuer), ("jwt.audience", &audience)] {
            if value.trim().is_empty() {
                r.fail::<()>(key, "must not be empty");
            }
        }
        let key_dir = PathBuf::from(r.string("jwt.key_dir"));
        JwtSettings {
            issuer,
            audience,
            algorithm,
            access_ttl: r.duration("jwt.access_ttl", false),
            refresh_ttl: r.duration("jwt.refresh_ttl", false),
            refresh_reuse_grace: r.duration("jwt.refresh_reuse_grace", true),
            leeway: r.duration("jwt.leeway", true),
            access_secret,
            refresh_secret,
            access_secret_previous,
            refresh_secret_previous,
            key_encryption_secret,
            key_dir,
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[jwt]\nissuer = {}\naudience = {}\nalgorithm = {}\naccess_ttl = {}\nrefresh_ttl = {}\n\
             refresh_reuse_grace = {}\nleeway = {}\naccess_secret = {}\nrefresh_secret = {}\n\
             access_secret_previous = {}\nrefresh_secret_previous = {}\nkey_encryption_secret = {}\nkey_dir = {}\n",
            q(&self.issuer),
            q(&self.audience),
            q(self.algorithm.as_str()),
            d(self.access_ttl),
            d(self.refresh_ttl),
            d(self.refresh_reuse_grace),
            d(self.leeway),
            secret(&self.access_secret),
            secret(&self.refresh_secret),
            secret(&self.access_secret_previous),
            secret(&self.refresh_secret_previous),
            secret(&self.key_encryption_secret),
            q(&self.key_dir.display().to_string()),
        )
    }
}
