//! `POST /api/auth/password`: the password changes, every other session of the user is
//! revoked and the presented one stays live; a wrong current password counts as a failed
//! login (lockout and per-IP budget); the new password meets the registration policy.

use serde_json::{json, Value};

use crate::support::*;
use crate::tokens::text;

const NEW_PASSWORD: &str = "Battery-staple-7";
const WRONG: &str = "Wrong-horse-1!";

fn change(s: &TestServer, access: &str, current: &str, new: &str) -> Resp {
    send(
        s.post("/api/auth/password")
            .bearer_auth(access)
            .json(&json!({"currentPassword": current, "newPassword": new})),
    )
}

fn login_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

fn access(data: &Value) -> String {
    text(data, "accessToken")
}

fn refresh(data: &Value) -> String {
    text(data, "refreshToken")
}

#[test]
fn a_change_keeps_exactly_the_presented_session_and_revokes_the_others() {
    let s = TestServer::start();
    let email = unique_email("change");
    let current = s.register(&email);
    let others = [s.login(&email), s.login(&email)];
    // Another user's session is not touched.
    let bystander = s.register(&unique_email("change-bystander"));

    let r = change(&s, &access(&current), PASSWORD, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["data"]["revokedSessions"], 2, "{}", r.text);
    assert!(r.cookie("authd_refresh").is_none(), "{:?}", r.headers);

    for other in &others {
        s.get_auth("/api/auth/profile", &access(other))
            .assert_error(401, "TOKEN_REVOKED");
        s.refresh(&refresh(other))
            .assert_error(401, "TOKEN_REVOKED");
    }
    // The presented session: its access token works, its refresh token keeps rotating.
    assert_eq!(
        s.get_auth("/api/auth/profile", &access(&current)).status,
        200
    );
    let rotated = s.refresh(&refresh(&current));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let again = s.refresh(&refresh(&rotated.body["data"]));
    assert_eq!(again.status, 200, "{}", again.text);
    let sessions = s.get_auth("/api/auth/sessions", &access(&again.body["data"]));
    assert_eq!(
        sessions.body["data"]["sessions"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        s.get_auth("/api/auth/profile", &access(&bystander)).status,
        200
    );

    login_with(&s, &email, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);

    // Changed back (the old one is not "the current one" any more): one session to revoke,
    // the login just made.
    let r = change(&s, &access(&current), NEW_PASSWORD, PASSWORD);
    assert_eq!(r.body["data"]["revokedSessions"], 1, "{}", r.text);
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
}

#[test]
fn a_wrong_current_password_is_401_and_changes_nothing() {
    let s = TestServer::start();
    let email = unique_email("change-wrong");
    let data = s.register(&email);
    let other = s.login(&email);
    let r = change(&s, &access(&data), WRONG, NEW_PASSWORD);
    r.assert_error(401, "INVALID_CREDENTIALS");
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer"));
    assert_eq!(s.get_auth("/api/auth/profile", &access(&other)).status, 200);
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
    login_with(&s, &email, NEW_PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
}

const ON: (&str, &str) = ("AUTHD_RATE_LIMIT__ENABLED", "true");
const MANY_REQUESTS: (&str, &str) = ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "10000");

#[test]
fn wrong_current_passwords_count_toward_the_lockout_of_the_email() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let email = unique_email("change-lock");
    let data = s.register(&email);
    // One failed login and two wrong current passwords make three failures for the email.
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    for _ in 0..2 {
        change(&s, &access(&data), WRONG, NEW_PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    }
    let r = change(&s, &access(&data), PASSWORD, NEW_PASSWORD);
    r.assert_error(423, "ACCOUNT_LOCKED");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    login_with(&s, &email, PASSWORD).assert_error(423, "ACCOUNT_LOCKED");
    // Nothing changed while locked; the session still works.
    assert_eq!(s.get_auth("/api/auth/profile", &access(&data)).status, 200);
}

#[test]
fn wrong_current_passwords_spend_the_failed_login_budget_of_the_ip() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "2"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
    ]);
    let email = unique_email("change-budget");
    let other = unique_email("change-budget-other");
    let data = s.register(&email);
    s.register(&other);
    for _ in 0..2 {
        change(&s, &access(&data), WRONG, NEW_PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    }
    let r = change(&s, &access(&data), PASSWORD, NEW_PASSWORD);
    r.assert_error(429, "RATE_LIMITED");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // The budget is the client's: a login to another account from it is refused too.
    login_with(&s, &other, PASSWORD).assert_error(429, "RATE_LIMITED");
}

#[test]
fn the_right_current_password_counts_nothing_and_clears_no_failure() {
    // As a login: a success gives its reserved slot back and counts nothing, but it does not
    // wipe the email's earlier failures (docs/DESIGN.md), so the lockout threshold bounds the
    // wrong guesses per window however they are interleaved with successes.
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let email = unique_email("change-reset");
    let data = s.register(&email);
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(
        change(&s, &access(&data), PASSWORD, NEW_PASSWORD).status,
        200
    );
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
    // The third failure reaches the threshold: the two before it still count.
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    login_with(&s, &email, NEW_PASSWORD).assert_error(423, "ACCOUNT_LOCKED");
}

#[test]
fn a_new_password_that_fails_the_policy_or_equals_the_current_one_is_400() {
    let s = TestServer::start();
    let email = unique_email("change-policy");
    let data = s.register(&email);
    let token = access(&data);

    let weak = change(&s, &token, PASSWORD, "abc");
    weak.assert_error(400, "VALIDATION_ERROR");
    let fields = detail_fields(&weak);
    assert_eq!(fields.len(), 3, "one entry per failed rule: {}", weak.text);
    assert!(fields.iter().all(|f| f == "newPassword"), "{fields:?}");

    let long = format!("Aa1!{}", "x".repeat(69));
    let r = change(&s, &token, PASSWORD, &long);
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(detail_fields(&r), ["newPassword"]);

    // The same password, and one equal to it after NFKC (a full-width C).
    for same in [PASSWORD.to_string(), PASSWORD.replacen('C', "\u{FF23}", 1)] {
        let r = change(&s, &token, PASSWORD, &same);
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["newPassword"], "{}", r.text);
    }

    // Strict bodies: unknown fields are named, both fields are required, JSON only.
    let r = send(s.post("/api/auth/password").bearer_auth(&token).json(
        &json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD, "email": "x@y.io"}),
    ));
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(detail_fields(&r), ["email"]);
    let r = send(
        s.post("/api/auth/password")
            .bearer_auth(&token)
            .json(&json!({})),
    );
    r.assert_error(400, "VALIDATION_ERROR");
    let mut fields = detail_fields(&r);
    fields.sort();
    assert_eq!(fields, ["currentPassword", "newPassword"]);
    let r = send(
        s.post("/api/auth/password")
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body(format!(
                r#"{{"currentPassword":"{PASSWORD}","newPassword":"{NEW_PASSWORD}"}}"#
            )),
    );
    r.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let r = send(
        s.post("/api/auth/password")
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("[1]"),
    );
    r.assert_error(400, "MALFORMED_JSON");

    // None of it changed the password.
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
}

#[test]
fn changing_the_password_needs_a_live_access_token() {
    let s = TestServer::start();
    let email = unique_email("change-token");
    let data = s.register(&email);
    let body = json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD});
    send(s.post("/api/auth/password").json(&body)).assert_error(401, "TOKEN_MISSING");
    send(
        s.post("/api/auth/password")
            .bearer_auth(refresh(&data))
            .json(&body),
    )
    .assert_error(401, "TOKEN_INVALID");
    let r = send(s.post("/api/auth/logout-all").bearer_auth(access(&data)));
    assert_eq!(r.status, 200);
    send(
        s.post("/api/auth/password")
            .bearer_auth(access(&data))
            .json(&body),
    )
    .assert_error(401, "TOKEN_REVOKED");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
}

#[test]
fn a_change_is_audited() {
    let s = TestServer::start();
    let email = unique_email("change-audit");
    let data = s.register(&email);
    assert_eq!(
        change(&s, &access(&data), PASSWORD, NEW_PASSWORD).status,
        200
    );
    change(&s, &access(&data), WRONG, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    let outcomes = s.query_column(
        "SELECT outcome FROM audit_events WHERE event = 'password_change' ORDER BY id",
        &[],
    );
    assert_eq!(outcomes, ["success", "failure"]);
}
