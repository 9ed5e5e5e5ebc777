//! Crypto layer: TOTP (RFC 6238 with HMAC-SHA-1, 6 digits, 30-second steps, through
//! `totp-rs`), the shared secret (160 bits from the OS's CSPRNG, RFC 4648 base32), the
//! `otpauth://` URI authenticator apps read, and recovery codes (80 bits each, stored as a
//! SHA-256 bound to their account).

use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};
use uuid::Uuid;

/// Seconds per step (RFC 6238 section 4, `X`).
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Bytes of a secret: 160 bits (RFC 4226 section 4 recommends it).
pub const SECRET_BYTES: usize = 20;

/// A new shared secret.
pub fn new_secret() -> Vec<u8> {
    rand::random::<[u8; SECRET_BYTES]>().to_vec()
}

/// The secret in RFC 4648 base32, without padding (what a person types into an app).
pub fn base32(secret: &[u8]) -> String {
    match Secret::Raw(secret.to_vec()).to_encoded() {
        Secret::Encoded(s) => s.trim_end_matches('=').to_owned(),
        Secret::Raw(_) => unreachable!("to_encoded always encodes"),
    }
}

fn totp(secret: &[u8]) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP_SECS, secret.to_vec())
}

/// The step (RFC 6238 `T`) of a Unix time in seconds.
pub fn step_of(unix_secs: u64) -> i64 {
    (unix_secs / STEP_SECS) as i64
}

/// The code of `secret` for step `step`.
pub fn code_at(secret: &[u8], step: i64) -> String {
    totp(secret).generate(step.max(0) as u64 * STEP_SECS)
}

/// The step within `skew` steps of `unix_secs` whose code is `code`, if any (the latest one
/// when several match). A code that is not exactly 6 ASCII digits matches nothing. Compared
/// in constant time.
pub fn matching_step(secret: &[u8], code: &str, unix_secs: u64, skew: u8) -> Option<i64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix_secs);
    let skew = i64::from(skew);
    let mut found = None;
    for step in (now - skew)..=(now + skew) {
        let expected = code_at(secret, step);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `otpauth://totp/<issuer>:<account>?secret=...&issuer=<issuer>&algorithm=SHA1&digits=6&period=30`
/// (the Key URI format of Google Authenticator), label and issuer percent-encoded.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        encode(issuer),
        encode(account),
        base32(secret),
        encode(issuer)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `@`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The alphabet of recovery codes: RFC 4648 base32 in lower case (no 0/1/8/9 to confuse).
const CODE_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new recovery code: 16 base32 characters (80 bits), shown as `xxxx-xxxx-xxxx-xxxx`.
pub fn new_recovery_code() -> String {
    let bytes: [u8; 16] = rand::random();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A recovery code as typed, normalised: spaces and dashes dropped, lower case.
pub fn normalize_recovery_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The stored form of a recovery code of `user_id`: hex SHA-256 of the account and the
/// normalised code.
pub fn recovery_code_hash(user_id: Uuid, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(user_id.as_bytes());
    h.update(normalize_recovery_code(code).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 (the 8-digit values' last 6 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, step_of(59)), "287082");
        assert_eq!(code_at(secret, step_of(1_111_111_109)), "081804");
        assert_eq!(code_at(secret, step_of(1_234_567_890)), "005924");
        assert_eq!(matching_step(secret, "287082", 59 + 30, 1), Some(1));
        assert_eq!(matching_step(secret, "287082", 59 + 90, 1), None);
        assert_eq!(matching_step(secret, "28708", 59, 1), None);
    }

    #[test]
    fn recovery_codes_normalise() {
        let c = new_recovery_code();
        assert_eq!(c.len(), 19);
        let u = Uuid::new_v4();
        let typed = format!(" {} ", c.to_uppercase().replace('-', " "));
        assert_eq!(recovery_code_hash(u, &c), recovery_code_hash(u, &typed));
        assert_ne!(
            recovery_code_hash(u, &c),
            recovery_code_hash(Uuid::new_v4(), &c)
        );
    }

    #[test]
    fn uri_shape() {
        let uri = otpauth_uri("authd", "a@x.io", &[0u8; 20]);
        assert_eq!(
            uri,
            "otpauth://totp/authd:a@x.io?secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&issuer=authd&algorithm=SHA1&digits=6&period=30"
        );
    }
}
