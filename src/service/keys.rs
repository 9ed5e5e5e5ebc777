//! Service layer: signing keys over their whole life. The key set lives in the store, where
//! every instance sharing the database finds it: created (or imported from the key files an
//! older authd wrote into `jwt.key_dir`) on the first start, rotated and revoked by
//! `authd keys`, and reloaded by every running server within seconds of a change
//! (`app::watch_keys` polls `Store::key_set_version`). A use whose secret is configured
//! (`jwt.access_secret`, `jwt.refresh_secret`) takes its keys from the secrets instead: the
//! current one signs, `*_previous` only verifies.

use std::sync::Arc;

use serde::Serialize;

use super::audit::{Event, Record};
use super::Core;
use crate::config::{JwtAlgorithm, JwtSettings, Secret};
use crate::crypto::keys::{
    self, AccessKey, AccessKeyMaterial, KeyError, KeySet, RefreshKey, Sealer,
};
use crate::domain::keys::{KeyRevokeOutcome, KeyUse, StoredKey, StoredKeyState};
use crate::domain::time::{duration_ms, now_ms, Millis};
use crate::domain::ClientInfo;
use crate::error::{AppError, AppResult};
use crate::store::Store;

/// One line of `authd keys list`: never any key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub kid: String,
    /// `EdDSA` or `HS256`.
    pub algorithm: String,
    /// `access` or `refresh`.
    #[serde(rename = "use")]
    pub key_use: &'static str,
    /// `active` (signs), `retiring` (verifies until `retires_at`), `retired` (verifies
    /// nothing: its time is up, or it was revoked).
    pub state: &'static str,
    /// RFC 3339; `null` for a configured secret.
    pub created_at: Option<String>,
    /// RFC 3339: when a retiring key stops verifying and leaves the JWKS (for a revoked key,
    /// when it was revoked); `null` for the active key and for configured secrets.
    pub retires_at: Option<String>,
}

/// What `Keys::revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now; the new active key when the revoked one was active.
    Now { replaced_by: Option<String> },
    /// It was revoked before.
    Already,
}

/// The message for rotating or revoking a key that comes from a configured secret.
fn secrets_rotate_elsewhere(key_use: KeyUse) -> AppError {
    let name = match key_use {
        KeyUse::Access => "jwt.access_secret",
        KeyUse::Refresh => "jwt.refresh_secret",
    };
    AppError::Validation(vec![crate::error::FieldError::new(
        name,
        format!(
            "is configured: secrets rotate through {name}_previous (move the old value there, \
             set a new {name}, restart), not with authd keys"
        ),
    )])
}

fn secret_of(jwt: &JwtSettings, key_use: KeyUse) -> (Option<&Secret>, Option<&Secret>) {
    match key_use {
        KeyUse::Access => (
            jwt.access_secret.as_ref(),
            jwt.access_secret_previous.as_ref(),
        ),
        KeyUse::Refresh => (
            jwt.refresh_secret.as_ref(),
            jwt.refresh_secret_previous.as_ref(),
        ),
    }
}

fn algorithm_name(a: JwtAlgorithm) -> &'static str {
    match a {
        JwtAlgorithm::EdDsa => "EdDSA",
        JwtAlgorithm::Hs256 => "HS256",
    }
}

fn internal(e: KeyError) -> AppError {
    AppError::Internal(e.0)
}

/// A new key of `key_use` as the store keeps it (private part sealed when `sealer`).
fn new_stored_key(
    key_use: KeyUse,
    algorithm: JwtAlgorithm,
    sealer: Option<&Sealer>,
    now: Millis,
) -> StoredKey {
    match (key_use, algorithm) {
        (KeyUse::Access, JwtAlgorithm::EdDsa) => ed25519_stored(&keys::new_ed25519(), sealer, now),
        (KeyUse::Access, JwtAlgorithm::Hs256) => {
            hmac_stored(KeyUse::Access, keys::new_hmac_secret(), sealer, now)
        }
        (KeyUse::Refresh, _) => hmac_stored(KeyUse::Refresh, keys::new_hmac_secret(), sealer, now),
    }
}

fn ed25519_stored(
    key: &ed25519_dalek::SigningKey,
    sealer: Option<&Sealer>,
    now: Millis,
) -> StoredKey {
    let kid = keys::ed25519_kid(&key.verifying_key());
    stored(
        kid,
        KeyUse::Access,
        "EdDSA",
        Some(key.verifying_key().as_bytes().to_vec()),
        key.to_bytes().to_vec(),
        sealer,
        now,
    )
}

fn hmac_stored(
    key_use: KeyUse,
    secret: Vec<u8>,
    sealer: Option<&Sealer>,
    now: Millis,
) -> StoredKey {
    let kid = match key_use {
        KeyUse::Access => AccessKeyMaterial::Hmac(secret.clone()).kid(),
        KeyUse::Refresh => keys::refresh_kid(&secret),
    };
    stored(kid, key_use, "HS256", None, secret, sealer, now)
}

fn stored(
    kid: String,
    key_use: KeyUse,
    algorithm: &str,
    public_key: Option<Vec<u8>>,
    private: Vec<u8>,
    sealer: Option<&Sealer>,
    now: Millis,
) -> StoredKey {
    let (private_key, sealed) = match sealer {
        Some(s) => (s.seal(&kid, key_use.as_str(), &private), true),
        None => (private, false),
    };
    StoredKey {
        kid,
        key_use,
        algorithm: algorithm.to_string(),
        state: StoredKeyState::Active,
        created_at: now,
        retires_at: None,
        revoked_at: None,
        public_key,
        private_key: Some(private_key),
        sealed,
    }
}

/// The key an older authd kept in `jwt.key_dir` for `key_use`, as the store keeps it (same
/// key id as that authd gave it), if the file exists.
fn legacy_key(
    jwt: &JwtSettings,
    key_use: KeyUse,
    sealer: Option<&Sealer>,
    now: Millis,
) -> Result<Option<StoredKey>, KeyError> {
    Ok(match (key_use, jwt.algorithm) {
        (KeyUse::Access, JwtAlgorithm::EdDsa) => {
            keys::legacy_ed25519(&jwt.key_dir)?.map(|k| ed25519_stored(&k, sealer, now))
        }
        (KeyUse::Access, JwtAlgorithm::Hs256) => keys::legacy_hmac(&jwt.key_dir, keys::HS256_FILE)?
            .map(|s| hmac_stored(KeyUse::Access, s, sealer, now)),
        (KeyUse::Refresh, _) => keys::legacy_hmac(&jwt.key_dir, keys::REFRESH_FILE)?
            .map(|s| hmac_stored(KeyUse::Refresh, s, sealer, now)),
    })
}

/// The uses whose keys live in the store (no secret configured for them).
fn stored_uses(jwt: &JwtSettings) -> Vec<KeyUse> {
    [KeyUse::Access, KeyUse::Refresh]
        .into_iter()
        .filter(|u| secret_of(jwt, *u).0.is_none())
        .collect()
}

/// Refuses to write a new key unsealed next to sealed ones (a command run without
/// `jwt.key_encryption_secret` would otherwise store a private part in the clear).
fn check_sealing(stored: &[StoredKey], jwt: &JwtSettings) -> AppResult<()> {
    if jwt.key_encryption_secret.is_none() && stored.iter().any(|k| k.sealed) {
        return Err(AppError::Validation(vec![crate::error::FieldError::new(
            "jwt.key_encryption_secret",
            "is required: the signing keys in the database are encrypted",
        )]));
    }
    Ok(())
}

fn sealer_of(jwt: &JwtSettings) -> Option<Sealer> {
    jwt.key_encryption_secret
        .as_ref()
        .map(|s| Sealer::new(s.expose()))
}

/// First start (and every start): makes sure each use whose keys live in the store has an
/// active key of the configured algorithm. A use with no key at all imports the key file an
/// older authd wrote into `jwt.key_dir`, if there is one, else gets a new key. Atomic
/// against other processes starting at the same time (`insert_signing_key_if_none_active`).
pub fn ensure_keys(store: &dyn Store, jwt: &JwtSettings) -> AppResult<()> {
    let sealer = sealer_of(jwt);
    for key_use in stored_uses(jwt) {
        let all = store.signing_keys()?;
        let now = now_ms();
        let mut of_use = all.iter().filter(|k| k.key_use == key_use);
        let active = all
            .iter()
            .find(|k| k.key_use == key_use && k.state == StoredKeyState::Active);
        let wanted = match key_use {
            KeyUse::Access => algorithm_name(jwt.algorithm),
            KeyUse::Refresh => "HS256",
        };
        match active {
            Some(k) if k.algorithm == wanted => {}
            Some(_) => {
                // jwt.algorithm changed: a key of the new algorithm takes over; tokens of the
                // old algorithm no longer verify in any case (the algorithm is pinned).
                let key = new_stored_key(key_use, jwt.algorithm, sealer.as_ref(), now);
                store.rotate_signing_key(&key, now)?;
                tracing::info!(kid = %key.kid, key_use = key_use.as_str(), "new signing key for the configured algorithm");
            }
            None => {
                let first = of_use.next().is_none();
                let imported = if first {
                    legacy_key(jwt, key_use, sealer.as_ref(), now).map_err(internal)?
                } else {
                    None
                };
                let was_imported = imported.is_some();
                let key = imported.unwrap_or_else(|| {
                    new_stored_key(key_use, jwt.algorithm, sealer.as_ref(), now)
                });
                if store.insert_signing_key_if_none_active(&key)? {
                    if was_imported {
                        tracing::info!(kid = %key.kid, key_use = key_use.as_str(), "imported the signing key from the key directory");
                    } else {
                        tracing::info!(kid = %key.kid, key_use = key_use.as_str(), "generated a new signing key");
                    }
                }
            }
        }
    }
    Ok(())
}

fn open_private(key: &StoredKey, sealer: Option<&Sealer>) -> Result<Option<Vec<u8>>, KeyError> {
    let Some(private) = &key.private_key else {
        return Ok(None);
    };
    if !key.sealed {
        return Ok(Some(private.clone()));
    }
    let sealer = sealer.ok_or_else(|| {
        KeyError(format!(
            "signing key {} in the database is encrypted: set jwt.key_encryption_secret",
            key.kid
        ))
    })?;
    sealer
        .open(&key.kid, key.key_use.as_str(), private)
        .map(Some)
}

fn secs(ms: Option<Millis>) -> Option<i64> {
    ms.map(|ms| ms.div_euclid(1000))
}

/// The key set to sign and verify with: its generation (read first, so a change made while
/// loading shows as a newer generation at the next poll) and the keys. For each use the
/// active key comes first, then the retiring keys (newest first); revoked keys and keys of
/// another algorithm are left out.
pub fn load_keys(store: &dyn Store, jwt: &JwtSettings) -> AppResult<(i64, KeySet)> {
    let generation = store.key_set_version()?;
    let mut stored = store.signing_keys()?;
    stored.reverse();
    let sealer = sealer_of(jwt);
    let live = |key_use: KeyUse| {
        let mut keys: Vec<&StoredKey> = stored
            .iter()
            .filter(|k| k.key_use == key_use && k.state != StoredKeyState::Revoked)
            .collect();
        keys.sort_by_key(|k| k.state != StoredKeyState::Active);
        keys
    };
    let mut access = Vec::new();
    match secret_of(jwt, KeyUse::Access) {
        (Some(current), previous) => {
            for (secret, _) in [(Some(current), ()), (previous, ())] {
                let Some(secret) = secret else { continue };
                let material = match jwt.algorithm {
                    JwtAlgorithm::EdDsa => {
                        AccessKeyMaterial::Ed25519(keys::ed25519_from_secret(secret.expose()))
                    }
                    JwtAlgorithm::Hs256 => {
                        AccessKeyMaterial::Hmac(secret.expose().as_bytes().to_vec())
                    }
                };
                access.push(AccessKey {
                    kid: material.kid(),
                    material,
                    verify_until: None,
                });
            }
        }
        (None, _) => {
            for k in live(KeyUse::Access) {
                if k.algorithm != algorithm_name(jwt.algorithm) {
                    continue;
                }
                let private = open_private(k, sealer.as_ref()).map_err(internal)?;
                let material = match (jwt.algorithm, private) {
                    (JwtAlgorithm::EdDsa, Some(seed)) => AccessKeyMaterial::Ed25519(
                        keys::ed25519_from_seed(&seed).map_err(internal)?,
                    ),
                    (JwtAlgorithm::EdDsa, None) => {
                        let public = k.public_key.as_deref().unwrap_or_default();
                        AccessKeyMaterial::Ed25519Public(
                            keys::ed25519_public(public).map_err(internal)?,
                        )
                    }
                    (JwtAlgorithm::Hs256, Some(secret)) => AccessKeyMaterial::Hmac(secret),
                    (JwtAlgorithm::Hs256, None) => continue,
                };
                access.push(AccessKey {
                    kid: k.kid.clone(),
                    material,
                    verify_until: secs(k.retires_at),
                });
            }
        }
    }
    let mut refresh = Vec::new();
    match secret_of(jwt, KeyUse::Refresh) {
        (Some(current), previous) => {
            for secret in [Some(current), previous].into_iter().flatten() {
                let bytes = secret.expose().as_bytes().to_vec();
                refresh.push(RefreshKey {
                    kid: keys::refresh_kid(&bytes),
                    secret: bytes,
                    verify_until: None,
                });
            }
        }
        (None, _) => {
            for k in live(KeyUse::Refresh) {
                let Some(secret) = open_private(k, sealer.as_ref()).map_err(internal)? else {
                    continue;
                };
                refresh.push(RefreshKey {
                    kid: k.kid.clone(),
                    secret,
                    verify_until: secs(k.retires_at),
                });
            }
        }
    }
    let signs = |first: Option<bool>| first == Some(true);
    let access_signs = signs(access.first().map(|k| {
        !matches!(k.material, AccessKeyMaterial::Ed25519Public(_)) && k.verify_until.is_none()
    }));
    let refresh_signs = signs(refresh.first().map(|k| k.verify_until.is_none()));
    if !access_signs || !refresh_signs {
        return Err(AppError::Internal(
            "the signing key set has no active key; run authd serve (or authd keys rotate) to make one"
                .into(),
        ));
    }
    Ok((generation, KeySet { access, refresh }))
}

/// `ensure_keys`, then `load_keys`.
pub fn ensure_and_load(store: &dyn Store, jwt: &JwtSettings) -> AppResult<(i64, KeySet)> {
    ensure_keys(store, jwt)?;
    load_keys(store, jwt)
}

/// The operator's key commands (`authd keys`), the same for the CLI and any future API.
#[derive(Clone)]
pub struct Keys {
    core: Arc<Core>,
}

/// The client recorded for actions taken from the command line.
fn cli_client() -> ClientInfo {
    ClientInfo {
        ip: None,
        user_agent: Some("authd-cli".into()),
    }
}

impl Keys {
    pub fn new(core: Arc<Core>) -> Self {
        Keys { core }
    }

    /// Every signing key (stored keys, and the configured secrets by their key id), active
    /// first within each use. Never any key material.
    pub async fn list(&self) -> AppResult<Vec<KeyInfo>> {
        let jwt = self.core.settings.jwt.clone();
        let stored = self.core.db(|s| s.signing_keys()).await?;
        let now = now_ms();
        let rfc = crate::domain::time::rfc3339;
        let mut out = Vec::new();
        for key_use in [KeyUse::Access, KeyUse::Refresh] {
            if let (Some(current), previous) = secret_of(&jwt, key_use) {
                let algorithm = match key_use {
                    KeyUse::Access => algorithm_name(jwt.algorithm),
                    KeyUse::Refresh => "HS256",
                };
                for (secret, state) in [(Some(current), "active"), (previous, "retiring")] {
                    let Some(secret) = secret else { continue };
                    let kid = match (key_use, jwt.algorithm) {
                        (KeyUse::Access, JwtAlgorithm::EdDsa) => keys::ed25519_kid(
                            &keys::ed25519_from_secret(secret.expose()).verifying_key(),
                        ),
                        (KeyUse::Access, JwtAlgorithm::Hs256) => {
                            AccessKeyMaterial::Hmac(secret.expose().as_bytes().to_vec()).kid()
                        }
                        (KeyUse::Refresh, _) => keys::refresh_kid(secret.expose().as_bytes()),
                    };
                    out.push(KeyInfo {
                        kid,
                        algorithm: algorithm.to_string(),
                        key_use: key_use.as_str(),
                        state,
                        created_at: None,
                        retires_at: None,
                    });
                }
                continue;
            }
            let mut of_use: Vec<&StoredKey> =
                stored.iter().filter(|k| k.key_use == key_use).collect();
            of_use.sort_by_key(|k| (k.state != StoredKeyState::Active, -k.created_at));
            for k in of_use {
                let (state, retires_at) = match k.state {
                    StoredKeyState::Active => ("active", None),
                    StoredKeyState::Retiring => match k.retires_at {
                        Some(at) if at > now => ("retiring", Some(at)),
                        at => ("retired", at),
                    },
                    StoredKeyState::Revoked => ("retired", k.revoked_at),
                };
                out.push(KeyInfo {
                    kid: k.kid.clone(),
                    algorithm: k.algorithm.clone(),
                    key_use: key_use.as_str(),
                    state,
                    created_at: Some(rfc(k.created_at)),
                    retires_at: retires_at.map(rfc),
                });
            }
        }
        Ok(out)
    }

    /// Makes a new active key for `key_use`. The previous one keeps verifying (and, for
    /// access, stays in the JWKS) until `jwt.access_ttl + jwt.leeway` (access) or
    /// `jwt.refresh_ttl` (refresh) from now, so no outstanding token is invalidated. Returns
    /// the new key. A use whose secret is configured rotates through `*_previous` instead.
    pub async fn rotate(&self, key_use: KeyUse) -> AppResult<KeyInfo> {
        let jwt = self.core.settings.jwt.clone();
        if secret_of(&jwt, key_use).0.is_some() {
            return Err(secrets_rotate_elsewhere(key_use));
        }
        let stored = self.core.db(|s| s.signing_keys()).await?;
        check_sealing(&stored, &jwt)?;
        let now = now_ms();
        let keep = match key_use {
            KeyUse::Access => jwt.access_ttl + jwt.leeway,
            KeyUse::Refresh => jwt.refresh_ttl,
        };
        let key = new_stored_key(key_use, jwt.algorithm, sealer_of(&jwt).as_ref(), now);
        let info = KeyInfo {
            kid: key.kid.clone(),
            algorithm: key.algorithm.clone(),
            key_use: key_use.as_str(),
            state: "active",
            created_at: Some(crate::domain::time::rfc3339(now)),
            retires_at: None,
        };
        let previous = self
            .core
            .db(move |s| s.rotate_signing_key(&key, now + duration_ms(keep)))
            .await?;
        let reason = format!(
            "{} key {} replaces {}",
            key_use.as_str(),
            info.kid,
            previous.as_deref().unwrap_or("none")
        );
        self.audit(Event::AdminKeyRotate, &reason).await;
        Ok(info)
    }

    /// Revokes `kid` now (a leaked key): it verifies nothing once the servers reload the key
    /// set (within seconds); revoking the active key makes a new one first. `NotFound` for an
    /// unknown kid; a configured secret rotates through `*_previous` instead.
    pub async fn revoke(&self, kid: &str) -> AppResult<Revoked> {
        let jwt = self.core.settings.jwt.clone();
        let infos = self.list().await?;
        if let Some(secret) = infos
            .iter()
            .find(|k| k.kid == kid && k.created_at.is_none())
        {
            let key_use = secret.key_use.parse().unwrap_or(KeyUse::Access);
            return Err(secrets_rotate_elsewhere(key_use));
        }
        let stored = self.core.db(|s| s.signing_keys()).await?;
        check_sealing(&stored, &jwt)?;
        let Some(found) = stored.into_iter().find(|k| k.kid == kid) else {
            if stored_uses(&jwt).is_empty() {
                return Err(secrets_rotate_elsewhere(KeyUse::Access));
            }
            return Err(AppError::NotFound);
        };
        let now = now_ms();
        let replacement = (found.state == StoredKeyState::Active).then(|| {
            let algorithm = match found.key_use {
                KeyUse::Access => jwt.algorithm,
                KeyUse::Refresh => JwtAlgorithm::Hs256,
            };
            new_stored_key(found.key_use, algorithm, sealer_of(&jwt).as_ref(), now)
        });
        let kid_owned = kid.to_string();
        let outcome = self
            .core
            .db(move |s| s.revoke_signing_key(&kid_owned, now, replacement.as_ref()))
            .await?;
        match outcome {
            KeyRevokeOutcome::Unknown => Err(AppError::NotFound),
            KeyRevokeOutcome::AlreadyRevoked => Ok(Revoked::Already),
            KeyRevokeOutcome::Revoked { replaced_by } => {
                let reason = format!(
                    "{} key {kid} revoked{}",
                    found.key_use.as_str(),
                    replaced_by
                        .as_deref()
                        .map(|n| format!(", replaced by {n}"))
                        .unwrap_or_default()
                );
                self.audit(Event::AdminKeyRevoke, &reason).await;
                Ok(Revoked::Now { replaced_by })
            }
        }
    }

    async fn audit(&self, event: Event, reason: &str) {
        let client = cli_client();
        // Keys are managed from the command line only: the actor is `cli`.
        self.core
            .audit_by(
                "cli",
                Record {
                    event,
                    user_id: None,
                    email: None,
                    client: &client,
                    success: true,
                    reason: Some(reason),
                },
            )
            .await;
    }
}

/// Key errors as the service reports them.
impl From<KeyError> for AppError {
    fn from(e: KeyError) -> Self {
        internal(e)
    }
}
