//! Crypto layer: refresh tokens. A token is 256 random bits plus an HMAC-SHA256 tag made
//! with the refresh key (never the access key); only its SHA-256 hash is stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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

    /// A new token and the hash to store for it.
    pub fn issue(&self) -> (String, String) {
        let body = B64.encode(rand::random::<[u8; 32]>());
        let tag = B64.encode(self.tag(&body).finalize().into_bytes());
        let token = format!("{body}.{tag}");
        let hash = hash(&token);
        (token, hash)
    }

    /// The stored hash of `token` if its tag is ours; `None` for anything else.
    pub fn check(&self, token: &str) -> Option<String> {
        let (body, tag) = token.split_once('.')?;
        if body.len() != PART_LEN || tag.len() != PART_LEN {
            return None;
        }
        let tag = B64.decode(tag).ok()?;
        B64.decode(body).ok()?;
        self.tag(body).verify_slice(&tag).ok()?;
        Some(hash(token))
    }
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
        let (t, h) = tokens.issue();
        assert_eq!(tokens.check(&t), Some(h.clone()));
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
