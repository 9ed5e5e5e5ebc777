//! Login applies registration's character rules to the presented password (NFKC first; at
//! most 72 bytes in UTF-8; no control character, NUL included): a password that could not have
//! been registered is a wrong password, 401 INVALID_CREDENTIALS, counted like one. So no two
//! different accepted passwords are one bcrypt input (bcrypt keys on the bytes, one NUL, the
//! first 72 bytes). Composition rules are not applied at login: accounts whose password a
//! stricter policy would refuse (imported, or set under an older policy) still log in.

use serde_json::{json, Value};

use crate::support::*;

fn login(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({ "email": email, "password": password }),
    )
}

/// Registers `email` with `password` (which must meet the policy).
fn register(s: &TestServer, email: &str, password: &str) {
    let r = s.post_json(
        "/api/auth/register",
        json!({ "email": email, "password": password }),
    );
    assert_eq!(r.status, 201, "register {password:?}: {}", r.text);
}

/// What a wrong password answers, apart from the request id.
fn shape(r: &Resp) -> (u16, Value, Vec<String>) {
    let headers = r
        .header_names()
        .into_iter()
        .filter(|h| h != "x-request-id" && h != "date")
        .collect();
    (r.status, r.body.clone(), headers)
}

fn assert_wrong_password(s: &TestServer, email: &str, password: &str, wrong: &Resp) {
    let r = login(s, email, password);
    r.assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(shape(&r), shape(wrong), "{password:?}");
}

/// Replaces the stored hash of `email` with bcrypt of `password`, as an import of an account
/// from another system would.
fn store_hash_of(s: &TestServer, email: &str, password: &[u8]) {
    let hash = bcrypt::hash(password, 10).unwrap();
    let n = s.execute_sql(
        "UPDATE users SET password_hash = ?1 WHERE email = ?2",
        &[&hash, email],
    );
    assert_eq!(n, 1);
}

#[test]
fn a_nul_after_71_bytes_is_a_wrong_password() {
    let s = TestServer::start();
    let email = unique_email("nul");
    let p71 = format!("Aa1!{}", "x".repeat(67));
    assert_eq!(p71.len(), 71);
    register(&s, &email, &p71);
    let wrong = login(&s, &email, "Wrong-password-1");
    wrong.assert_error(401, "INVALID_CREDENTIALS");
    // bcrypt's key for both is the same 72 bytes: P, then NUL.
    for presented in [format!("{p71}\0"), format!("{p71}\0\0")] {
        assert_wrong_password(&s, &email, &presented, &wrong);
    }
    // The same with a multi-byte character ending the 71 bytes.
    let email = unique_email("nul-euro");
    let euro71 = format!("Aa1!{}€", "x".repeat(64));
    assert_eq!(euro71.len(), 71);
    register(&s, &email, &euro71);
    assert_wrong_password(&s, &email, &format!("{euro71}\0"), &wrong);
    assert_eq!(login(&s, &email, &euro71).status, 200);
    // And the short case: a NUL anywhere.
    let email = unique_email("nul-short");
    register(&s, &email, PASSWORD);
    for presented in [
        format!("{PASSWORD}\0"),
        format!("\0{PASSWORD}"),
        format!("{PASSWORD}\0{PASSWORD}"),
    ] {
        assert_wrong_password(&s, &email, &presented, &wrong);
    }
    assert_eq!(login(&s, &email, PASSWORD).status, 200);
}

#[test]
fn control_characters_and_over_72_bytes_never_log_in_even_when_the_hash_matches() {
    let s = TestServer::start();
    let wrong = login(&s, &unique_email("nobody"), "Wrong-password-1");
    wrong.assert_error(401, "INVALID_CREDENTIALS");
    // Accounts whose stored hash was made from a password registration refuses (an import
    // from a system with other rules): bcrypt would match, authd does not.
    for (i, password) in [
        format!("{PASSWORD}\u{1}"),
        format!("{PASSWORD}\t"),
        format!("{PASSWORD}\r\n"),
        format!("{PASSWORD}\u{7f}"),
        format!("{PASSWORD}\u{85}"),
        format!("\u{1b}[0m{PASSWORD}"),
        format!("Aa1!{}", "x".repeat(69)),
        format!("Aa1!{}", "€".repeat(30)),
    ]
    .iter()
    .enumerate()
    {
        let email = unique_email(&format!("ctl{i}"));
        register(&s, &email, PASSWORD);
        store_hash_of(&s, &email, password.as_bytes());
        assert_wrong_password(&s, &email, password, &wrong);
    }
    // Over 72 bytes: the 72-byte prefix is what bcrypt saw; only it logs in.
    let email = unique_email("long");
    let p72 = format!("Aa1!{}", "y".repeat(68));
    register(&s, &email, &p72);
    for longer in [format!("{p72}z"), format!("{p72}\0"), format!("{p72}€")] {
        assert_wrong_password(&s, &email, &longer, &wrong);
    }
    assert_eq!(login(&s, &email, &p72).status, 200);
}

#[test]
fn multi_byte_characters_at_the_72_byte_edge() {
    let s = TestServer::start();
    let wrong = login(&s, &unique_email("nobody"), "Wrong-password-1");
    // 72 bytes ending in a 2-byte character; NFKC makes `e` + combining acute the same `é`.
    let email = unique_email("edge");
    let e72 = format!("Aa1!{}é", "x".repeat(66));
    assert_eq!(e72.len(), 72);
    register(&s, &email, &e72);
    assert_eq!(login(&s, &email, &e72).status, 200);
    let decomposed = format!("Aa1!{}e\u{301}", "x".repeat(66));
    assert_eq!(decomposed.len(), 73);
    assert_eq!(login(&s, &email, &decomposed).status, 200, "NFKC first");
    for presented in [
        format!("{e72}\0"),
        format!("{e72}é"),
        format!("{e72}\u{301}"),
        format!("Aa1!{}", "x".repeat(66)),
        format!("Aa1!{}e", "x".repeat(66)),
    ] {
        assert_wrong_password(&s, &email, &presented, &wrong);
    }
    // 73 raw bytes whose NFKC form is 72 (a ligature): registered and presented alike.
    let email = unique_email("ligature");
    let fi = format!("Aa1!{}\u{FB01}", "x".repeat(66));
    assert_eq!((fi.len(), fi.chars().count()), (73, 71));
    register(&s, &email, &fi);
    assert_eq!(login(&s, &email, &fi).status, 200);
    assert_eq!(
        login(&s, &email, &format!("Aa1!{}fi", "x".repeat(66))).status,
        200
    );
    // NFKC that grows past 72 bytes is refused at login as at registration.
    assert_wrong_password(&s, &email, &format!("{fi}\u{FDFA}"), &wrong);
    let r = s.post_json(
        "/api/auth/register",
        json!({ "email": unique_email("grows"), "password": format!("{fi}\u{FDFA}") }),
    );
    r.assert_error(400, "VALIDATION_ERROR");
}

#[test]
fn a_refused_password_counts_as_a_failed_login() {
    let s = TestServer::with(&[
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "50"),
    ]);
    let email = unique_email("counted");
    let p71 = format!("Aa1!{}", "c".repeat(67));
    register(&s, &email, &p71);
    for _ in 0..3 {
        login(&s, &email, &format!("{p71}\0")).assert_error(401, "INVALID_CREDENTIALS");
    }
    // The per-IP failed-login budget is spent: even the right password is refused now.
    login(&s, &email, &p71).assert_error(429, "RATE_LIMITED");
}

#[test]
fn composition_rules_do_not_apply_at_login() {
    let s = TestServer::start();
    // Passwords a stricter policy refuses (imported, or set before a policy change).
    for (i, password) in ["password", "12345678", "abc", "ünïcödé pässwörd", "x"]
        .iter()
        .enumerate()
    {
        let email = unique_email(&format!("legacy{i}"));
        register(&s, &email, PASSWORD);
        store_hash_of(&s, &email, password.as_bytes());
        assert_eq!(login(&s, &email, password).status, 200, "{password:?}");
    }
    // A raised minimum length does not lock out an existing account.
    let email = unique_email("policy");
    register(&s, &email, PASSWORD);
    let dir = s.stop();
    let stricter = TestServer::in_dir(dir, &[("AUTHD_PASSWORD__MIN_LENGTH", "40")]);
    assert_eq!(login(&stricter, &email, PASSWORD).status, 200);
}
