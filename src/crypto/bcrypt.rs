//! bcrypt itself: the system's libxcrypt (`crypt_rn(3)`, whose bcrypt is Solar Designer's
//! crypt_blowfish), called through two small functions. One verification at cost 12 takes
//! about 14 % less CPU there than in the pure-Rust `bcrypt` crate on the same machine (201
//! against 235 ms, docs/PERFORMANCE.md, "bcrypt"), and a login is nothing but that work.
//!
//! The hashes are the same strings either way: `$2b$` (made here), `$2a$` and `$2y$`
//! (verified), 60 characters, the key being the password's bytes and one NUL, repeated and
//! cut to 72 bytes. The one case where libxcrypt's `$2a$` differs from OpenBSD's (its
//! countermeasure for passwords holding a `0xFF` byte before a byte with the high bit set,
//! the sign-extension bug of `$2x$`) cannot occur for a password that is UTF-8, which never
//! holds `0xFF`; the tests check the two implementations agree on UTF-8 passwords.
//!
//! The length and NUL rules (`domain::validate`) are enforced by the caller
//! (`crypto::password`); here a password is only bytes.

use std::ffi::{c_char, c_int, c_void, CStr};

use base64::Engine;

use super::password::bcrypt_cost;

#[link(name = "crypt")]
extern "C" {
    /// `char *crypt_rn(const char *phrase, const char *setting, void *data, int size)`:
    /// the hash of `phrase` under `setting` (a hash or a `$2b$NN$salt` prefix), written into
    /// `data` (at least `sizeof(struct crypt_data)` bytes), or NULL on an invalid setting.
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
}

/// `sizeof(struct crypt_data)` in `<crypt.h>` (libxcrypt 4): 32,768 bytes.
const CRYPT_DATA_SIZE: usize = 32768;

/// bcrypt's base64 (`./A-Za-z0-9`, no padding) of salts and checksums.
pub(crate) const BASE_64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::BCRYPT,
    base64::engine::general_purpose::NO_PAD,
);

/// Runs `crypt_rn(password, setting)`; the result, or `None` when libxcrypt refused the
/// setting. The password ends at its first NUL, as C strings do (the caller refuses such
/// passwords before it calls; a verification still spends its work on what precedes it).
fn crypt(password: &[u8], setting: &str) -> Option<String> {
    let end = password
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(password.len());
    let mut phrase = Vec::with_capacity(end + 1);
    phrase.extend_from_slice(&password[..end]);
    phrase.push(0);
    let mut setting_c = Vec::with_capacity(setting.len() + 1);
    setting_c.extend_from_slice(setting.as_bytes());
    setting_c.push(0);
    // Zeroed, as crypt(3) asks of a fresh `struct crypt_data`.
    let mut data = vec![0u8; CRYPT_DATA_SIZE];
    // SAFETY: both strings are NUL-terminated and live across the call; `data` is a
    // writable buffer of the size given; the result is NULL or points into `data`, read
    // before `data` is dropped.
    let out = unsafe {
        let p = crypt_rn(
            phrase.as_ptr().cast(),
            setting_c.as_ptr().cast(),
            data.as_mut_ptr().cast(),
            CRYPT_DATA_SIZE as c_int,
        );
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    wipe(&mut phrase);
    wipe(&mut data);
    out
}

/// Overwrites a buffer that held a password or a key schedule.
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// The `$2b$` hash of `password` at `cost` (4 to 31) with `salt`.
pub fn hash_with_salt(password: &[u8], cost: u32, salt: [u8; 16]) -> Result<String, String> {
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4 to 31"));
    }
    let setting = format!("$2b${cost:02}${}", BASE_64.encode(salt));
    crypt(password, &setting)
        .filter(|h| bcrypt_cost(h) == Some(cost))
        .ok_or_else(|| "crypt_rn refused a $2b$ setting".to_string())
}

/// The `$2b$` hash of `password` at `cost` with a random salt from the OS.
pub fn hash(password: &[u8], cost: u32) -> Result<String, String> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    hash_with_salt(password, cost, salt)
}

/// True when `password` hashes to `hash` under `hash`'s own salt and cost. Only a
/// well-formed `$2a$`, `$2b$` or `$2y$` hash can match (`password::bcrypt_cost`); for
/// anything else nothing is computed. The comparison takes the same time wherever the two
/// strings differ.
pub fn verify(password: &[u8], hash: &str) -> bool {
    if bcrypt_cost(hash).is_none() {
        return false;
    }
    crypt(password, hash).is_some_and(|computed| {
        computed.len() == hash.len()
            && computed
                .bytes()
                .zip(hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The OpenBSD / jBCrypt test vectors (`$2a$`), and hashes from other implementations.
    const VECTORS: &[(&str, &str)] = &[
        (
            "",
            "$2a$06$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",
        ),
        (
            "",
            "$2a$08$HqWuK6/Ng6sg9gQzbLrgb.Tl.ZHfXLhvt/SgVyWhQqgqcZ7ZuUtye",
        ),
        (
            "a",
            "$2a$06$m0CrhHm10qJ3lXRY.5zDGO3rS2KdeeWLuGmsfGlMfOxih58VYVfxe",
        ),
        (
            "abc",
            "$2a$06$If6bvum7DFjUnE9p2uDeDu0YHzrHM6tf.iqN8.yx.jNN1ILEf7h0i",
        ),
        (
            "abcdefghijklmnopqrstuvwxyz",
            "$2a$06$.rCVZVOThsIa97pEDOxvGuRRgzG64bvtJ0938xuqzv18d3ZpQhstC",
        ),
        (
            "~!@#$%^&*()      ~!@#$%^&*()PNBFRD",
            "$2a$06$fPIsBO8qRqkjj273rfaOI.HtSV9jLDpTbZn782DC6/t7qT67P6FfO",
        ),
        // Python's bcrypt ($2b$), node's bcryptjs ($2a$), PHP ($2y$, from the bcrypt crate's
        // tests), and python's truncation of 100 'x' to 72 bytes.
        (
            "correctbatteryhorsestapler",
            "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
        ),
        (
            "correctbatteryhorsestapler",
            "$2a$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi",
        ),
        (
            "hunter2",
            "$2y$12$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u",
        ),
        (
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "$2a$05$......................YgIDy4hFBdVlc/6LHnD9mX488r9cLd2",
        ),
    ];

    #[test]
    fn test_vectors_verify_here_and_in_the_bcrypt_crate() {
        for (password, hash) in VECTORS {
            assert!(verify(password.as_bytes(), hash), "{password:?} {hash}");
            assert!(::bcrypt::verify(password, hash).unwrap(), "{hash}");
            let wrong = format!("!{password}");
            assert!(!verify(wrong.as_bytes(), hash), "{hash}");
        }
    }

    #[test]
    fn hashes_are_2b_at_the_cost_and_match_the_bcrypt_crate() {
        let salt = [
            38, 113, 212, 141, 108, 213, 195, 166, 201, 38, 20, 13, 47, 40, 104, 18,
        ];
        assert_eq!(
            hash_with_salt(b"My S3cre7 P@55w0rd!", 5, salt).unwrap(),
            "$2b$05$HlFShUxTu4ZHHfOLJwfmCeDj/kuKFKboanXtDJXxCC7aIPTUgxNDe"
        );
        let h = hash(b"Secret-123", 4).unwrap();
        assert_eq!(bcrypt_cost(&h), Some(4));
        assert!(h.starts_with("$2b$04$"));
        assert!(verify(b"Secret-123", &h));
        assert!(::bcrypt::verify("Secret-123", &h).unwrap());
        assert_ne!(hash(b"Secret-123", 4).unwrap(), h, "salts are random");
        assert!(hash_with_salt(b"x", 3, salt).is_err());
        assert!(hash_with_salt(b"x", 32, salt).is_err());
    }

    #[test]
    fn only_well_formed_2a_2b_2y_hashes_can_match() {
        let salt = [7u8; 16];
        let h = hash_with_salt(b"Secret-123", 4, salt).unwrap();
        let body = &h[4..];
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let h = format!("{prefix}{body}");
            assert!(verify(b"Secret-123", &h), "{h}");
        }
        // $2x$ (hashes of the buggy implementation) is refused, as are malformed ones.
        assert!(!verify(b"Secret-123", &format!("$2x${body}")));
        assert!(!verify(b"Secret-123", &h[..59]));
        assert!(!verify(b"Secret-123", ""));
        assert!(!verify(b"Secret-123", "$1$abc$def"));
    }

    #[test]
    fn the_key_is_72_bytes_of_the_password_and_its_nul() {
        let salt = [9u8; 16];
        let p72 = "k".repeat(72);
        let h72 = hash_with_salt(p72.as_bytes(), 4, salt).unwrap();
        // 73 bytes or more: bcrypt sees the first 72 (the caller refuses such passwords).
        assert!(verify(format!("{p72}zz").as_bytes(), &h72));
        let p71 = "k".repeat(71);
        let h71 = hash_with_salt(p71.as_bytes(), 4, salt).unwrap();
        assert_ne!(h71, h72);
        // A NUL ends the password for libxcrypt (the caller refuses such passwords too).
        assert!(verify(format!("{p71}\0abc").as_bytes(), &h71));
        assert_eq!(
            h72,
            ::bcrypt::hash_with_salt(&p72, 4, salt).unwrap().to_string()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// On any UTF-8 password without NUL of at most 72 bytes, under every prefix, the
        /// two implementations make the same hash and verify each other's.
        #[test]
        fn libxcrypt_and_the_bcrypt_crate_agree(
            password in "[^\u{0}]{0,24}",
            salt in any::<[u8; 16]>(),
        ) {
            let bytes = password.as_bytes();
            let bytes = &bytes[..bytes.len().min(72)];
            let ours = hash_with_salt(bytes, 4, salt).unwrap();
            let theirs = ::bcrypt::hash_with_salt(bytes, 4, salt).unwrap();
            prop_assert_eq!(&ours, &theirs.format_for_version(::bcrypt::Version::TwoB));
            for version in [::bcrypt::Version::TwoA, ::bcrypt::Version::TwoY] {
                let other = theirs.format_for_version(version);
                prop_assert!(verify(bytes, &other), "{}", other);
            }
            prop_assert!(::bcrypt::verify(bytes, &ours).unwrap());
        }
    }
}
