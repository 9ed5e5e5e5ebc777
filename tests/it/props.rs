//! Property tests: validation and token checks never panic on arbitrary input, valid
//! inputs round-trip through normalisation, and signed access tokens verify to their claims.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authd::crypto::jwt::AccessTokens;
use authd::crypto::keys::AccessKeyMaterial;
use authd::crypto::refresh::RefreshTokens;
use authd::domain::validate;
use proptest::prelude::*;

fn access_tokens() -> AccessTokens {
    AccessTokens::new(
        &AccessKeyMaterial::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[7; 32])),
        "authd",
        "authd",
        Duration::from_secs(900),
        Duration::from_secs(30),
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Arbitrary strings, plus ones made of the characters these parsers care about.
fn input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9@._+\\- \t\r\n\u{0}\u{ff20}\u{ff0e}\u{212a}\u{0430}]{0,300}",
        "[A-Za-z0-9_\\-]{0,60}\\.[A-Za-z0-9_\\-]{0,300}\\.[A-Za-z0-9_\\-]{0,100}",
    ]
}

/// The fullwidth form of printable ASCII (which NFKC maps back).
fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap(),
            other => other,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validators_never_panic(s in input(), min in 0usize..100) {
        let _ = validate::email(&s);
        let _ = validate::name(Some(&s));
        let _ = validate::password_policy(&s, min);
        let normalised = validate::normalize_password(&s);
        let _ = validate::password_policy(&normalised, 8);
    }

    #[test]
    fn valid_emails_round_trip(
        local in "[a-z]{1,10}",
        domain in "[a-z]{1,10}",
        tld in "[a-z]{2,5}",
    ) {
        let email = format!("{local}@{domain}.{tld}");
        let stored = validate::email(&email).unwrap();
        prop_assert_eq!(&stored, &email);
        prop_assert_eq!(validate::email(&stored).unwrap(), stored.clone());
        prop_assert_eq!(validate::email(&email.to_uppercase()).unwrap(), stored.clone());
        prop_assert_eq!(validate::email(&format!("  {email}\t")).unwrap(), stored.clone());
        prop_assert_eq!(validate::email(&fullwidth(&email)).unwrap(), stored.clone());
        prop_assert_eq!(validate::normalize_email(&email.to_uppercase()), stored);
    }

    #[test]
    fn accepted_emails_are_stable(s in input()) {
        if let Ok(stored) = validate::email(&s) {
            prop_assert_eq!(validate::email(&stored).unwrap(), stored.clone());
            prop_assert!(stored.chars().count() <= validate::EMAIL_MAX);
            prop_assert!(stored.is_ascii() && stored.contains('@'));
        }
    }

    #[test]
    fn valid_names_round_trip(name in "[A-Za-z][A-Za-z0-9 .'\\-]{0,98}[A-Za-z]") {
        let stored = validate::name(Some(&format!(" {name} "))).unwrap();
        prop_assert_eq!(stored.as_deref(), Some(name.as_str()));
        prop_assert_eq!(validate::name(Some(&name)).unwrap(), Some(name.clone()));
    }

    #[test]
    fn valid_passwords_pass_the_policy(p in "[a-zA-Z]{6,40}[0-9]{1,10}[!#%&*+\\-?]{1,10}") {
        prop_assert!(validate::password_policy(&p, 8).is_empty());
        prop_assert_eq!(validate::normalize_password(&p), p);
    }

    #[test]
    fn refresh_check_refuses_anything_not_issued(s in input()) {
        prop_assert_eq!(RefreshTokens::new(vec![1; 32]).check(&s), None);
    }

    #[test]
    fn refresh_check_refuses_token_shaped_forgeries(
        body in "[A-Za-z0-9_\\-]{42}[AQgw]",
        tag in "[A-Za-z0-9_\\-]{42}[AQgw]",
    ) {
        prop_assert_eq!(RefreshTokens::new(vec![1; 32]).check(&format!("{body}.{tag}")), None);
    }

    #[test]
    fn access_verify_refuses_arbitrary_strings(s in input()) {
        prop_assert!(access_tokens().verify(&s, now_secs()).is_err());
    }

    #[test]
    fn sign_then_verify_round_trips(
        sub in any::<String>(),
        sid in any::<String>(),
        role in any::<String>(),
    ) {
        let tokens = access_tokens();
        let now = now_secs();
        let (token, claims) = tokens.sign(&sub, &sid, &role, now);
        let verified = tokens.verify(&token, now).unwrap();
        prop_assert_eq!(&*verified, &claims);
        prop_assert_eq!(&verified.sub, &sub);
        prop_assert_eq!(&verified.sid, &sid);
        prop_assert_eq!(&verified.role, &role);
        // Any other key refuses it.
        let other = AccessTokens::new(
            &AccessKeyMaterial::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[8; 32])),
            "authd",
            "authd",
            Duration::from_secs(900),
            Duration::from_secs(30),
        );
        prop_assert!(other.verify(&token, now).is_err());
    }
}
