//! Crypto layer: refresh tokens. A token is `<body>.<tag>`: the body is 32 bytes, the
//! session's id (16 bytes, itself random) followed by 128 random bits; the tag is the body's
//! HMAC-SHA256 with the refresh key (never the access key). Only its SHA-256 hash is stored.
//! The session id lets the store find the token beside its session's other tokens; it is a
//! hint, not trusted: the store matches the hash too. Several refresh keys may verify at once
//! (after a rotation, the previous key until `jwt.refresh_ttl` has passed).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::keys::RefreshKey;

type HmacSha256 = Hmac<Sha256>;

/// Length of each base64url half: 32 bytes -> 43 characters.
const PART_LEN: usize = 43;

/// One refresh key: its secret and when it stops verifying (unix seconds; `None`: never).
struct Key {
    secret: Vec<u8>,
    verify_until: Option<i64>,
}

/// Refresh tokens: issued with the active refresh key, checked against every refresh key
/// that still verifies (tokens carry no key id; a tag check costs one HMAC per live key,
/// usually one or two). The key set can be swapped at run time (`replace_keys`).
pub struct RefreshTokens {
    keys: RwLock<Arc<Vec<Key>>>,
}

fn tag(key: &[u8], body: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    mac
}

impl RefreshTokens {
    /// Refresh tokens with the one key `key` (no rotation).
    pub fn new(key: Vec<u8>) -> Self {
        Self::with_keys(&[RefreshKey {
            kid: String::new(),
            secret: key,
            verify_until: None,
        }])
    }

    /// Refresh tokens with a key set: `keys[0]` issues, every key checks until its
    /// `verify_until`.
    pub fn with_keys(keys: &[RefreshKey]) -> Self {
        let tokens = RefreshTokens {
            keys: RwLock::new(Arc::new(Vec::new())),
        };
        tokens.replace_keys(keys);
        tokens
    }

    /// Swaps in a new key set atomically (see `with_keys`).
    pub fn replace_keys(&self, keys: &[RefreshKey]) {
        let keys = keys
            .iter()
            .map(|k| Key {
                secret: k.secret.clone(),
                verify_until: k.verify_until,
            })
            .collect();
        *self.keys.write() = Arc::new(keys);
    }

    fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.read().clone()
    }

    /// A new token for `session` and the hash to store for it.
    pub fn issue(&self, session: Uuid) -> (String, String) {
        let keys = self.keys();
        let key = keys.first().expect("the key set has a refresh key");
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(session.as_bytes());
        raw[16..].copy_from_slice(&rand::random::<[u8; 16]>());
        let body = B64.encode(raw);
        let tag = B64.encode(tag(&key.secret, &body).finalize().into_bytes());
        let token = format!("{body}.{tag}");
        let hash = hash(&token);
        (token, hash)
    }

    /// The session `token` names and its stored hash, if its tag is one of our live keys';
    /// `None` for anything else. (Tokens issued before migration V4 name no session: their
    /// first 16 bytes are random, and the store finds them by hash.)
    pub fn check(&self, token: &str) -> Option<Checked> {
        self.check_at(token, now_secs())
    }

    /// `check` at `now_secs` (unix seconds).
    pub fn check_at(&self, token: &str, now_secs: i64) -> Option<Checked> {
        let (body, tag_text) = token.split_once('.')?;
        if body.len() != PART_LEN || tag_text.len() != PART_LEN {
            return None;
        }
        let presented = B64.decode(tag_text).ok()?;
        let raw = B64.decode(body).ok()?;
        let keys = self.keys();
        let ours = keys.iter().any(|k| {
            k.verify_until.is_none_or(|until| now_secs <= until)
                && tag(&k.secret, body).verify_slice(&presented).is_ok()
        });
        if !ours {
            return None;
        }
        Some(Checked {
            session: Uuid::from_slice(raw.get(..16)?).ok()?,
            hash: hash(token),
        })
    }
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A refresh token whose tag verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The session the token names (a lookup hint; see `check`).
    pub session: Uuid,
    /// What the store keeps for it.
    pub hash: String,
}

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_check_and_others_do_not() {
        let tokens = RefreshTokens::new(vec![7; 32]);
        let session = Uuid::new_v4();
        let (t, h) = tokens.issue(session);
        assert_eq!(
            tokens.check(&t),
            Some(Checked {
                session,
                hash: h.clone()
            })
        );
        let (again, other_hash) = tokens.issue(session);
        assert_ne!(again, t, "128 random bits per token");
        assert_ne!(other_hash, h);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&t));
        let other = RefreshTokens::new(vec![8; 32]);
        assert_eq!(other.check(&t), None);
        let mut tampered = t.clone();
        tampered.replace_range(0..1, if t.starts_with('A') { "B" } else { "A" });
        assert_eq!(tokens.check(&tampered), None);
        // After a rotation the previous key still checks, until its time is up.
        let later = now_secs() + 100;
        let rotated = RefreshTokens::with_keys(&[
            RefreshKey {
                kid: "new".into(),
                secret: vec![8; 32],
                verify_until: None,
            },
            RefreshKey {
                kid: "old".into(),
                secret: vec![7; 32],
                verify_until: Some(later),
            },
        ]);
        assert!(rotated.check(&t).is_some());
        assert!(rotated.check_at(&t, later + 1).is_none());
        let (fresh, _) = rotated.issue(session);
        assert!(tokens.check(&fresh).is_none(), "issued with the new key");
        for junk in ["", ".", "abc", "a.b", "eyJhbGciOiJIUzI1NiJ9.e30.sig"] {
            assert_eq!(tokens.check(junk), None);
        }
    }
}
