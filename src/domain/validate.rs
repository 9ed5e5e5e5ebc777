//! Domain layer: pure validation and normalisation of emails, names and passwords.

use unicode_normalization::UnicodeNormalization;

use crate::error::FieldError;

pub const EMAIL_MAX: usize = 254;
pub const NAME_MAX: usize = 100;
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

/// Checks a (normalised) password against the policy; one `FieldError` per failed rule.
pub fn password_policy(password: &str, min_length: usize) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut push = |m: String| errors.push(FieldError::new("password", m));
    if password.chars().count() < min_length {
        push(format!("must be at least {min_length} characters"));
    }
    if password.len() > PASSWORD_MAX_BYTES {
        push(format!(
            "must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8"
        ));
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
    if password.chars().any(char::is_control) {
        push("must not contain control characters".into());
    }
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
}
