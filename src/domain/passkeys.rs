//! Domain layer: passkeys (CONTRACT 11.3): a WebAuthn credential registered to an account.

use uuid::Uuid;

use super::time::Millis;

/// A stored passkey (table `passkeys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// authd's id of the passkey (what `DELETE /api/auth/passkeys/{id}` names).
    pub id: Uuid,
    pub user_id: Uuid,
    /// The credential id the authenticator chose, base64url without padding; unique across
    /// every account.
    pub credential_id: String,
    /// The name the user gave it, if any.
    pub name: Option<String>,
    /// The WebAuthn library's serialized credential (public key, algorithm, counter), JSON.
    pub credential: String,
    /// The last signature counter seen (WebAuthn Level 3, section 6.1.1).
    pub sign_count: u32,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
}

/// What `Store::insert_passkey` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyInsert {
    /// Stored; `revoked` other sessions of the user were revoked with it (it was the
    /// account's first second factor).
    Inserted { revoked: usize },
    /// The credential id is already registered, to this account or another: nothing stored.
    Duplicate,
    /// The account already has `webauthn.max_passkeys` passkeys: nothing stored.
    TooMany,
}
