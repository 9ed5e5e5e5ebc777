//! Configuration: configured secrets. `Secret` hides its value from `Debug` and `Display`;
//! `check_secret_strength` is the one rule every configured secret passes.

use std::collections::BTreeSet;
use std::fmt;

use super::secret_strength;

/// A secret value whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Words that mark a secret copied from an example rather than generated.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "changethis",
    "placeholder",
    "replace-me",
    "replaceme",
    "example",
    "your-secret",
    "your_secret",
    "yoursecret",
    "secret-key",
    "secretkey",
    "insecure",
    "default",
];

/// How a configured secret is judged, and how to make a good one.
const GENERATE: &str = "generate one, e.g. `openssl rand -base64 48`";

/// The rating (`secret_strength::rated_bits`) a configured secret must reach, in bits.
pub const SECRET_MIN_BITS: f64 = 128.0;

/// The one check of every configured secret (`jwt.access_secret`, `jwt.refresh_secret` and
/// every other secret key): at least 32 bytes with at least 8 distinct bytes, no placeholder
/// word, not a published example secret (documentation defaults, tutorial values; any case,
/// separators or suffix), and rated at least 128 bits: zxcvbn's estimate when zxcvbn finds
/// words, dates, keyboard walks, sequences or repeats in it, else the bits of its characters as
/// random output of their alphabet (4 per hex character, 6 per base64 character; runs that
/// repeat earlier ones count nothing). Random output of 128 bits or more passes:
/// `openssl rand -hex 16`, `openssl rand -base64 32`, Python's `secrets.token_urlsafe(24)`,
/// `pwgen -s 32`.
///
/// # Errors
/// Why the secret is refused, one line that never contains the secret; callers prefix the key.
pub fn check_secret_strength(secret: &str) -> Result<(), String> {
    if secret.len() < 32 {
        return Err(format!(
            "too short ({} bytes; at least 32 required)",
            secret.len()
        ));
    }
    let distinct: BTreeSet<u8> = secret.bytes().collect();
    if distinct.len() < 8 {
        return Err(format!(
            "too weak ({} distinct bytes; at least 8 required)",
            distinct.len()
        ));
    }
    if secret_strength::is_published(secret) {
        return Err(format!(
            "is a published example secret (documentation or tutorial value); {GENERATE}"
        ));
    }
    let lower = secret.to_ascii_lowercase();
    if let Some(marker) = PLACEHOLDER_MARKERS.iter().find(|m| lower.contains(*m)) {
        return Err(format!(
            "looks like a placeholder (contains '{marker}'); {GENERATE}"
        ));
    }
    let bits = secret_strength::rated_bits(secret);
    if bits < SECRET_MIN_BITS {
        return Err(format!(
            "too guessable (rated {bits:.0} bits from zxcvbn's patterns and its alphabet; at \
             least 128 required); {GENERATE}"
        ));
    }
    Ok(())
}
