//! Domain layer: pure validation and normalisation of emails, names and passwords.

use unicode_normalization::UnicodeNormalization;

use crate::error::FieldError;

pub const EMAIL_MAX: usize = 254;
pub const NAME_MAX: usize = 100;
/// A request's `User-Agent` is kept (on its session and audit events) to this many characters.
pub const USER_AGENT_MAX: usize = 256;
/// A login's `deviceInfo` (a string, or an object's compact JSON) is at most this many bytes.
pub const DEVICE_INFO_MAX_BYTES: usize = 512;
/// How many characters of an over-long login email its bounded form shows (`login_email`).
const BOUNDED_EMAIL_SHOWN: usize = 64;
/// bcrypt only reads the first 72 bytes; longer passwords are refused, never truncated.
pub const PASSWORD_MAX_BYTES: usize = 72;

/// NFKC-normalises, trims and lower-cases an email. Used before storage and before lookup.
pub fn normalize_email(raw: &str) -> String {
    raw.nfkc().collect::<String>().trim().to_lowercase()
}

/// Normalises and validates an email; returns the stored form.
pub fn email(raw: &str) -> Result<String, FieldError> {
    let email = normalize_email(raw);
    let err = |m: &str| Err(FieldError::new("email", m));
    if email.is_empty() {
        return err("is required");
    }
    if email.chars().count() > EMAIL_MAX {
        return err("must be at most 254 characters");
    }
    if !is_valid_email(&email) {
        return err("must be a valid email address");
    }
    Ok(email)
}

/// The email a login attempt is judged, counted and audited under: `normalize_email`, with
/// every control character (NUL included: PostgreSQL's text cannot hold it) replaced by
/// U+FFFD, so both backends store one readable form. Over `EMAIL_MAX` characters (no account
/// can have such an address, and no index entry could hold a kilobyte-long one) it becomes a
/// bounded stand-in of at most about 130 characters:
/// `<first 64 characters, non-ASCII as ?>...[<n> characters, sha256 <32 hex digits>]`, the
/// digest over the whole normalised email, so each over-long email keeps a lockout counter and
/// an audit trail of its own, and no stand-in is a valid address. Idempotent: a stand-in (or any
/// result) maps to itself, so an operator can paste either the original text or the stand-in
/// into `authd users unlock` and `authd audit --email`.
pub fn login_email(raw: &str) -> String {
    let email: String = normalize_email(raw)
        .chars()
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    let len = email.chars().count();
    if len <= EMAIL_MAX {
        return email;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(email.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let shown: String = email
        .chars()
        .take(BOUNDED_EMAIL_SHOWN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    format!("{shown}...[{len} characters, sha256 {hex}]")
}

/// The admin listing's `email` filter (an exact match on the normalised email): `None` when
/// absent or blank (no filter). A filter no stored email could equal because of its
/// characters or its length is a `FieldError` on `email`, so neither a NUL nor kilobytes reach
/// a query: control characters, or more than `EMAIL_MAX` characters.
pub fn email_filter(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(email) = raw.map(normalize_email).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    if email.chars().any(char::is_control) {
        return Err(FieldError::new(
            "email",
            "must not contain control characters",
        ));
    }
    if email.chars().count() > EMAIL_MAX {
        return Err(FieldError::new("email", "must be at most 254 characters"));
    }
    Ok(Some(email))
}

/// A request's `User-Agent` header value as authd keeps it: bytes that are not UTF-8 (header
/// values may carry obs-text) decoded as U+FFFD, control characters dropped, at most
/// `USER_AGENT_MAX` characters.
pub fn user_agent(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_MAX)
        .collect()
}

/// An ASCII address `local@domain.tld` (HTML5 rules, plus a dot in the domain).
/// Non-ASCII addresses are refused so that look-alike letters cannot shadow an account.
fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// Trims and validates an optional display name. `None` and absent are the same.
pub fn name(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(raw) = raw else { return Ok(None) };
    let name: String = raw.nfkc().collect::<String>().trim().to_string();
    let len = name.chars().count();
    if len == 0 {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if len > NAME_MAX {
        return Err(FieldError::new("name", "must be at most 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(Some(name))
}

/// NFKC-normalises a password. Used before every rule, before hashing and before verifying.
pub fn normalize_password(raw: &str) -> String {
    raw.nfkc().collect()
}

/// The character rules of a password, wherever one is presented: register, `create-user`,
/// login, and every later check of a current or new password. `password` is NFKC-normalised
/// (`normalize_password`); it must be at most 72 bytes in UTF-8 and hold no control character
/// (Unicode `Cc`: NUL, C0, DEL, C1). One `FieldError` (field `password`) per failed rule.
///
/// These rules make bcrypt's input injective: bcrypt reads a password's bytes followed by one
/// NUL and keeps the first 72 bytes, so `P` and `P + "\0"` (for a 71-byte `P`), or two
/// passwords that share their first 72 bytes, would be the same key. With no NUL inside and at
/// most 72 bytes, two different normalised passwords are always two different bcrypt inputs.
/// Composition rules (length, letter, digit, symbol) are not character rules: they apply only
/// when a password is chosen (`password_policy`), never when one is presented, so a policy
/// change cannot lock out existing or imported accounts.
pub fn password_characters(password: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if password.len() > PASSWORD_MAX_BYTES {
        errors.push(FieldError::new(
            "password",
            format!("must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8"),
        ));
    }
    if password.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "password",
            "must not contain control characters",
        ));
    }
    errors
}

/// True when `password` (NFKC-normalised) could have been registered as far as its characters
/// go. A presented password (login, current password) for which this is false is a wrong
/// password: the caller still spends the bcrypt verification and counts the failure.
pub fn password_presentable(password: &str) -> bool {
    password_characters(password).is_empty()
}

/// Checks a (normalised) password chosen by its owner or an admin against the whole policy:
/// the composition rules and `password_characters`; one `FieldError` per failed rule.
pub fn password_policy(password: &str, min_length: usize) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut push = |m: String| errors.push(FieldError::new("password", m));
    if password.chars().count() < min_length {
        push(format!("must be at least {min_length} characters"));
    }
    if !password.chars().any(char::is_alphabetic) {
        push("must contain at least one letter".into());
    }
    if !password.chars().any(char::is_numeric) {
        push("must contain at least one digit".into());
    }
    if !password.chars().any(is_symbol) {
        push("must contain at least one symbol".into());
    }
    errors.extend(password_characters(password));
    errors
}

fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_control() && !c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(email("  Alice@X.io ").unwrap(), "alice@x.io");
        assert_eq!(email("ａｌｉｃｅ@x.io").unwrap(), "alice@x.io");
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "alice",
            "alice@",
            "@x.io",
            "a b@x.io",
            "alice@x",
            "alice@@x.io",
            "alice@x..io",
            ".alice@x.io",
            "alice@-x.io",
            "аlice@x.io", // Cyrillic a
            "alice@x.io\r\nBcc: evil@y.io",
            "alice\0@x.io",
        ] {
            assert!(email(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@{}.io", "a".repeat(64), "b".repeat(200));
        assert!(email(&long).is_err());
    }

    #[test]
    fn login_emails_are_bounded_readable_and_idempotent() {
        assert_eq!(login_email(" Alice@X.io "), "alice@x.io");
        assert_eq!(login_email("a\0b@x.io"), "a\u{fffd}b@x.io");
        let at_limit = format!("{}@x.io", "a".repeat(EMAIL_MAX - 5));
        assert_eq!(login_email(&at_limit), at_limit);
        let mut seen = std::collections::HashSet::new();
        for raw in [
            format!("{at_limit}a"),
            format!("{}@x.io", "b".repeat(3000)),
            format!("{}@x.io", "b".repeat(3001)),
            format!("{}\0@x.io", "é".repeat(100_000)),
            "\u{fdfa}".repeat(5000),
        ] {
            let bounded = login_email(&raw);
            assert!(bounded.chars().count() <= 140, "{bounded}");
            assert!(bounded.is_ascii(), "{bounded}");
            assert!(email(&bounded).is_err(), "{bounded}");
            assert_eq!(login_email(&bounded), bounded);
            assert_eq!(normalize_email(&bounded), bounded);
            assert_eq!(login_email(&raw.to_uppercase()), bounded);
            assert!(seen.insert(bounded));
        }
    }

    #[test]
    fn email_filters() {
        assert_eq!(email_filter(None).unwrap(), None);
        assert_eq!(email_filter(Some("  ")).unwrap(), None);
        assert_eq!(
            email_filter(Some("Alice@X.io")).unwrap().as_deref(),
            Some("alice@x.io")
        );
        assert_eq!(
            email_filter(Some("nobody")).unwrap().as_deref(),
            Some("nobody")
        );
        for bad in ["a\0b@x.io", "\0", "a\nb@x.io", &"a".repeat(EMAIL_MAX + 1)] {
            assert_eq!(
                email_filter(Some(bad)).unwrap_err().field,
                "email",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn user_agents() {
        assert_eq!(user_agent(b"curl/8.0"), "curl/8.0");
        assert_eq!(user_agent(b"a\x00b\tc\x7f"), "abc");
        assert_eq!(user_agent(b"x\xff/1"), "x\u{fffd}/1");
        assert_eq!(user_agent(&[b'u'; 10_000]).len(), USER_AGENT_MAX);
    }

    #[test]
    fn names() {
        assert_eq!(name(None).unwrap(), None);
        assert_eq!(name(Some(" Ann ")).unwrap().as_deref(), Some("Ann"));
        assert!(name(Some("   ")).is_err());
        assert!(name(Some(&"x".repeat(101))).is_err());
        assert!(name(Some("a\nb")).is_err());
        assert!(name(Some(&"x".repeat(100))).is_ok());
    }

    #[test]
    fn password_rules_each_reported() {
        assert!(password_policy("Secret-123", 8).is_empty());
        let errs = password_policy("abc", 8);
        let msgs: Vec<_> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "must be at least 8 characters",
                "must contain at least one digit",
                "must contain at least one symbol"
            ]
        );
        let p72 = format!("Aa1!{}", "x".repeat(68));
        assert!(password_policy(&p72, 8).is_empty());
        let p73 = format!("Aa1!{}", "x".repeat(69));
        assert_eq!(password_policy(&p73, 8).len(), 1);
        assert_eq!(password_policy("Secret-12\0", 8).len(), 1);
    }

    #[test]
    fn character_rules_are_part_of_the_policy_and_nothing_else() {
        let p71 = format!("Aa1!{}", "x".repeat(67));
        assert!(password_presentable(&p71));
        for bad in [
            format!("{p71}\0"),
            format!("{p71}\u{1}"),
            format!("{p71}\u{7f}"),
            format!("{p71}\u{85}"),
            "a\tb".into(),
            "a\r\nb".into(),
            format!("{p71}xy"),
            format!("{}é", "x".repeat(71)),
        ] {
            assert!(!password_presentable(&bad), "{bad:?}");
            let policy: Vec<_> = password_policy(&bad, 1)
                .into_iter()
                .filter(|e| !e.message.contains("one "))
                .collect();
            assert_eq!(policy, password_characters(&bad), "{bad:?}");
        }
        // Composition is not a character rule: short or letters-only passwords are presentable.
        for ok in ["a", "password", "12345678", "ünïcödé", "correct horse", ""] {
            assert!(password_presentable(ok), "{ok:?}");
        }
        assert!(password_presentable(&format!("{}é", "x".repeat(70))));
    }

    /// bcrypt at cost 4 with one fixed salt: equal outputs mean equal bcrypt inputs.
    fn bcrypt_key(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, [7; 16])
            .unwrap()
            .to_string()
    }

    #[test]
    fn bcrypt_confuses_exactly_what_the_rules_refuse() {
        // Without the rules these pairs would be one password.
        let p71 = "k".repeat(71);
        assert_eq!(bcrypt_key(&p71), bcrypt_key(&format!("{p71}\0")));
        assert_eq!(bcrypt_key("abc"), bcrypt_key("abc\0abc"));
        let p72 = "k".repeat(72);
        assert_eq!(bcrypt_key(&p72), bcrypt_key(&format!("{p72}é")));
        assert_ne!(bcrypt_key(&p71), bcrypt_key(&p72));
    }

    /// Characters that stress the rules: NUL and other controls, multi-byte UTF-8 of every
    /// width, and characters that NFKC changes (ligature, full-width, Angstrom sign, combining
    /// mark, an Arabic ligature that expands to 18 characters).
    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-zA-Z0-9!-]{1,4}",
            Just("\0".to_string()),
            Just("\u{1}".to_string()),
            Just("\u{7f}".to_string()),
            Just("\u{85}".to_string()),
            Just("é".to_string()),
            Just("e\u{301}".to_string()),
            Just("€".to_string()),
            Just("😀".to_string()),
            Just("ﬁ".to_string()),
            Just("ｆ".to_string()),
            Just("\u{212b}".to_string()),
            Just("\u{fdfa}".to_string()),
            Just(" ".to_string()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Two different accepted passwords never reach bcrypt as the same input: pairs share
        /// a prefix near bcrypt's 72-byte edge and differ after it.
        #[test]
        fn no_two_accepted_passwords_are_one_bcrypt_input(
            prefix in "[a-zA-Z0-9]{0,72}",
            a in proptest::collection::vec(piece(), 0..6),
            b in proptest::collection::vec(piece(), 0..6),
        ) {
            let a = normalize_password(&format!("{prefix}{}", a.concat()));
            let b = normalize_password(&format!("{prefix}{}", b.concat()));
            if a != b && password_presentable(&a) && password_presentable(&b) {
                proptest::prop_assert_ne!(bcrypt_key(&a), bcrypt_key(&b), "{:?} {:?}", a, b);
            }
        }

        /// What is presentable is exactly what NFKC keeps within 72 bytes and free of controls.
        #[test]
        fn presentable_is_the_character_rules(
            raw in proptest::collection::vec(piece(), 0..30),
        ) {
            let p = normalize_password(&raw.concat());
            let expected = p.len() <= PASSWORD_MAX_BYTES && !p.chars().any(char::is_control);
            proptest::prop_assert_eq!(password_presentable(&p), expected);
            proptest::prop_assert_eq!(normalize_password(&p), p.clone());
        }
    }
}
