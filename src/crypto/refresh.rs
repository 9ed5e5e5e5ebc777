//! Crypto layer: refresh tokens. A token is `<body>.<tag>`: the body is 32 bytes, the
//! session's id (16 bytes, itself random) followed by 128 random bits; the tag is the body's
//! HMAC-SHA256 with the refresh key (never the access key). Only its SHA-256 hash is stored.
//! The session id lets the store find the token beside its session's other tokens; it is a
//! hint, not trusted: the store matches the hash too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Length of each base64url half: 32 bytes -> 43 characters.
const PART_LEN: usize = 43;

pub struct RefreshTokens {
    key: Vec<u8>,
}

impl RefreshTokens {
    pub fn new(key: Vec<u8>) -> Self {
        RefreshTokens { key }
    }

    fn tag(&self, body: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    /// A new token for `session` and the hash to store for it.
    pub fn issue(&self, session: Uuid) -> (String, String) {
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(session.as_bytes());
        raw[16..].copy_from_slice(&rand::random::<[u8; 16]>());
        let body = B64.encode(raw);
        let tag = B64.encode(self.tag(&body).finalize().into_bytes());
        let token = format!("{body}.{tag}");
        let hash = hash(&token);
        (token, hash)
    }

    /// The session `token` names and its stored hash, if its tag is ours; `None` for
    /// anything else. (Tokens issued before migration V4 name no session: their first 16
    /// bytes are random, and the store finds them by hash.)
    pub fn check(&self, token: &str) -> Option<Checked> {
        let (body, tag) = token.split_once('.')?;
        if body.len() != PART_LEN || tag.len() != PART_LEN {
            return None;
        }
        let tag = B64.decode(tag).ok()?;
        let raw = B64.decode(body).ok()?;
        self.tag(body).verify_slice(&tag).ok()?;
        Some(Checked {
            session: Uuid::from_slice(raw.get(..16)?).ok()?,
            hash: hash(token),
        })
    }
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
        for junk in ["", ".", "abc", "a.b", "eyJhbGciOiJIUzI1NiJ9.e30.sig"] {
            assert_eq!(tokens.check(junk), None);
        }
    }
}
