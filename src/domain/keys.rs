//! Domain layer: signing keys as the store keeps them (the key set every instance sharing
//! the database uses), and the states a key goes through.

use super::time::Millis;

/// What a signing key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyUse {
    /// Access tokens (JWTs; the public part of an Ed25519 key is in the JWKS).
    Access,
    /// Refresh tokens (HMAC-SHA256 tags; never published).
    Refresh,
}

impl KeyUse {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Access => "access",
            KeyUse::Refresh => "refresh",
        }
    }
}

impl std::str::FromStr for KeyUse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "access" => Ok(KeyUse::Access),
            "refresh" => Ok(KeyUse::Refresh),
            other => Err(format!("unknown key use '{other}'")),
        }
    }
}

/// A key's stored state. (`keys list` shows a retiring key whose `retires_at` passed, and a
/// revoked key, as `retired`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKeyState {
    /// Signs new tokens (one per use) and verifies.
    Active,
    /// Verifies until `retires_at`, signs nothing.
    Retiring,
    /// Verifies nothing since `revoked_at` (a leaked key).
    Revoked,
}

impl StoredKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredKeyState::Active => "active",
            StoredKeyState::Retiring => "retiring",
            StoredKeyState::Revoked => "revoked",
        }
    }
}

impl std::str::FromStr for StoredKeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(StoredKeyState::Active),
            "retiring" => Ok(StoredKeyState::Retiring),
            "revoked" => Ok(StoredKeyState::Revoked),
            other => Err(format!("unknown key state '{other}'")),
        }
    }
}

/// A signing key as stored (table `signing_keys`).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id: for Ed25519 the RFC 7638 JWK thumbprint, for HMAC keys a truncated SHA-256 of
    /// the secret (see `crypto::keys`).
    pub kid: String,
    pub key_use: KeyUse,
    /// `EdDSA` (Ed25519) or `HS256` (HMAC-SHA256; every refresh key).
    pub algorithm: String,
    pub state: StoredKeyState,
    pub created_at: Millis,
    /// Retiring: when it stops verifying (and leaves the JWKS).
    pub retires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
    /// Ed25519: the 32-byte public key. `None` for HMAC keys.
    pub public_key: Option<Vec<u8>>,
    /// Ed25519: the 32-byte seed; HMAC: the secret; sealed when `sealed`. `None` once not
    /// needed (a retiring Ed25519 key verifies with its public part; a revoked key keeps
    /// nothing).
    pub private_key: Option<Vec<u8>>,
    /// Whether `private_key` is sealed with `jwt.key_encryption_secret`
    /// (`crypto::keys::Sealer`).
    pub sealed: bool,
}

/// Never prints key material.
impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("key_use", &self.key_use)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("retires_at", &self.retires_at)
            .field("revoked_at", &self.revoked_at)
            .field("sealed", &self.sealed)
            .finish_non_exhaustive()
    }
}

/// What `Store::revoke_signing_key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRevokeOutcome {
    /// No key has that kid.
    Unknown,
    /// The key was revoked before; nothing changed.
    AlreadyRevoked,
    /// Revoked now; `replaced_by` names the new active key when the revoked one was active.
    Revoked { replaced_by: Option<String> },
}
