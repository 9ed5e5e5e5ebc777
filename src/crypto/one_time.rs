//! Crypto layer: one-time tokens (see `domain::one_time`). A token is 32 bytes from the OS's
//! CSPRNG (256 bits, CONTRACT 10.2), base64url without padding (43 characters); the store
//! keeps only its hex SHA-256.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

/// Length of a token: 32 bytes in base64url, 43 characters.
pub const TOKEN_LEN: usize = 43;

/// A new token and the hash to store: `(token, hash)`.
pub fn new_token() -> (String, String) {
    let token = B64.encode(rand::random::<[u8; 32]>());
    let hash = hash(&token);
    (token, hash)
}

/// Hex SHA-256 of a token as a client sent it: what to look it up by. Anything may be passed
/// (a malformed token simply matches nothing); `well_formed` tells whether it could be one.
pub fn hash(token: &str) -> String {
    super::refresh::hash(token)
}

/// Whether `token` has the shape of a token this module makes (43 base64url characters).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_well_formed_and_hashed() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert!(well_formed(&a) && well_formed(&b));
        assert_eq!(ha, hash(&a));
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), 64);
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &a[..42])));
    }
}
