//! Second factors (CONTRACT 11.1, 11.2): the login's MFA_REQUIRED step, `mfa/verify` with
//! TOTP codes computed here (RFC 6238 through `totp-rs`, not authd's own code) and recovery
//! codes, replay refusal (also for two verifies at once), the mfaToken's attempts, the login
//! limits over many mfaTokens, enrolment, disable and regeneration, `authMethods`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::support::*;
use crate::tokens::text;

/// Skew 2: the tests use codes of the next steps without waiting for them.
pub(crate) const SKEW: (&str, &str) = ("AUTHD_MFA__TOTP_SKEW", "2");

pub(crate) fn now_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// The code of `secret` (base32, as enroll answered it) for step `step`.
pub(crate) fn code(secret: &str, step: u64) -> String {
    let bytes = Secret::Encoded(secret.to_string()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 0, 30, bytes).generate(step * 30)
}

pub(crate) struct Enrolled {
    pub email: String,
    pub secret: String,
    /// The step whose code confirmed the enrolment.
    pub step: u64,
    pub recovery: Vec<String>,
    pub data: Value,
}

/// Turns TOTP on for the account signed in with `access` (password `PASSWORD`): enrols, then
/// confirms with the current step's code. Returns the secret, the step spent and the
/// confirmation's `data` (`recoveryCodes`, `revokedSessions`).
pub(crate) fn turn_totp_on(s: &TestServer, access: &str) -> (String, u64, Value) {
    let r = send(
        s.post("/api/auth/mfa/totp/enroll")
            .bearer_auth(access)
            .json(&json!({"currentPassword": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = text(&r.body["data"], "secret");
    let step = now_step();
    let r = send(
        s.post("/api/auth/mfa/totp/confirm")
            .bearer_auth(access)
            .json(&json!({"code": code(&secret, step)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    (secret, step, r.body["data"].clone())
}

pub(crate) fn enroll_and_confirm(s: &TestServer, tag: &str) -> Enrolled {
    let email = unique_email(tag);
    let data = s.register(&email);
    let (secret, step, confirmed) = turn_totp_on(s, &text(&data, "accessToken"));
    let recovery = confirmed["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    Enrolled {
        email,
        secret,
        step,
        recovery,
        data,
    }
}

pub(crate) fn login(s: &TestServer, email: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
}

pub(crate) fn mfa_token(s: &TestServer, email: &str) -> String {
    let r = login(s, email);
    r.assert_error(401, "MFA_REQUIRED");
    text(&r.body, "mfaToken")
}

pub(crate) fn verify(s: &TestServer, body: Value) -> Resp {
    s.post_json("/api/auth/mfa/verify", body)
}

#[test]
fn enrolment_then_login_asks_for_the_second_factor_and_spends_each_code_once() {
    let s = TestServer::with(&[SKEW]);
    let email = unique_email("mfa-enrol");
    let data = s.register(&email);
    let access = text(&data, "accessToken");
    let other = s.login(&email);

    // Wrong password: 401 like a failed login; nothing pending.
    send(
        s.post("/api/auth/mfa/totp/enroll")
            .bearer_auth(&access)
            .json(&json!({"currentPassword": "Wrong-horse-1!"})),
    )
    .assert_error(401, "INVALID_CREDENTIALS");
    let r = send(
        s.post("/api/auth/mfa/totp/enroll")
            .bearer_auth(&access)
            .json(&json!({"currentPassword": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = text(&r.body["data"], "secret");
    assert_eq!(secret.len(), 32, "160 bits in base32: {secret}");
    assert_eq!(
        text(&r.body["data"], "otpauthUri"),
        format!(
            "otpauth://totp/authd:{}?secret={secret}&issuer=authd&algorithm=SHA1&digits=6&period=30",
            email
        )
    );
    // Nothing active yet: login still opens a session.
    assert_eq!(login(&s, &email).status, 200);

    let step = now_step();
    send(
        s.post("/api/auth/mfa/totp/confirm")
            .bearer_auth(&access)
            .json(&json!({"code": "000000x"})),
    )
    .assert_error(401, "MFA_INVALID");
    let r = send(
        s.post("/api/auth/mfa/totp/confirm")
            .bearer_auth(&access)
            .json(&json!({"code": code(&secret, step)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let codes = r.body["data"]["recoveryCodes"].as_array().unwrap().clone();
    assert_eq!(codes.len(), 10);
    assert_eq!(r.body["data"]["revokedSessions"], 2, "{}", r.text);
    s.get_auth("/api/auth/profile", &text(&other, "accessToken"))
        .assert_error(401, "TOKEN_REVOKED");
    // The confirming session gained otp.
    let sessions = s.get_auth("/api/auth/sessions", &access);
    assert_eq!(
        sessions.body["data"]["sessions"][0]["authMethods"],
        json!(["pwd", "otp"]),
        "{}",
        sessions.text
    );
    let state = s.get_auth("/api/auth/mfa", &access);
    assert_eq!(
        state.body["data"],
        json!({"totp": true, "recoveryCodesRemaining": 10, "passkeys": 0})
    );
    // Enrolling again: 409.
    send(
        s.post("/api/auth/mfa/totp/enroll")
            .bearer_auth(&access)
            .json(&json!({"currentPassword": PASSWORD})),
    )
    .assert_error(409, "MFA_ALREADY_ENABLED");

    // Login: MFA_REQUIRED, no tokens, no cookie.
    let r = login(&s, &email);
    r.assert_error(401, "MFA_REQUIRED");
    assert!(r.cookie("authd_refresh").is_none());
    assert!(r.body.get("data").is_none());
    assert_eq!(r.body["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(r.body["expiresIn"], 300);
    let token = text(&r.body, "mfaToken");

    // The enrolment's code cannot log in; a malformed one is MFA_INVALID too.
    verify(&s, json!({"mfaToken": token, "code": code(&secret, step)}))
        .assert_error(401, "MFA_INVALID");
    verify(&s, json!({"mfaToken": token, "code": "12345"})).assert_error(401, "MFA_INVALID");
    let r = verify(
        &s,
        json!({"mfaToken": token, "code": code(&secret, step + 1)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.cookie("authd_refresh").is_some());
    assert_eq!(r.body["data"]["user"]["email"], email.as_str());
    let session = r.body["data"].clone();
    // The used mfaToken is gone; the same code on a new one is a replay.
    verify(
        &s,
        json!({"mfaToken": token, "code": code(&secret, step + 2)}),
    )
    .assert_error(401, "TOKEN_INVALID");
    let token2 = mfa_token(&s, &email);
    verify(
        &s,
        json!({"mfaToken": token2, "code": code(&secret, step + 1)}),
    )
    .assert_error(401, "MFA_INVALID");

    // The session says how it was opened; refresh does not ask again.
    let listed = s.get_auth("/api/auth/sessions", &text(&session, "accessToken"));
    let current: Vec<&Value> = listed.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["current"] == true)
        .collect();
    assert_eq!(current[0]["authMethods"], json!(["pwd", "otp"]));
    let refreshed = s.refresh(&text(&session, "refreshToken"));
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);

    // A recovery code, typed in upper case with spaces: good once.
    let rc = codes[0].as_str().unwrap();
    let typed = rc.to_uppercase().replace('-', " ");
    let r = verify(&s, json!({"mfaToken": token2, "recoveryCode": typed}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["recoveryCodesRemaining"], 9);
    let listed = s.get_auth("/api/auth/sessions", &text(&r.body["data"], "accessToken"));
    let mine: Vec<&Value> = listed.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["current"] == true)
        .collect();
    assert_eq!(mine[0]["authMethods"], json!(["pwd", "recovery_code"]));
    let token3 = mfa_token(&s, &email);
    verify(&s, json!({"mfaToken": token3, "recoveryCode": rc})).assert_error(401, "MFA_INVALID");

    // Unknown token; no answer at all.
    verify(&s, json!({"mfaToken": "nope", "code": "123456"})).assert_error(401, "TOKEN_INVALID");
    verify(&s, json!({"mfaToken": token3})).assert_error(400, "VALIDATION_ERROR");
    // A passkey answer while WebAuthn is not configured: a wrong answer like any other.
    verify(
        &s,
        json!({"mfaToken": token3, "ceremonyId": "x", "credential": {}}),
    )
    .assert_error(401, "MFA_INVALID");
    // A login audited mfa_required.
    let n = s.query_column(
        "SELECT COUNT(*) FROM audit_events WHERE event = 'login' AND reason = 'mfa_required'",
        &[],
    );
    assert!(n[0].parse::<u32>().unwrap() >= 3, "{n:?}");
    // Every answer above at mfa/verify, by method and outcome (the one without an answer is
    // a 400 before any check and counts nowhere).
    let metrics = s.metrics();
    for (method, outcome, n) in [
        ("totp", "invalid", 3),
        ("totp", "success", 1),
        ("totp", "token_invalid", 2),
        ("recovery_code", "success", 1),
        ("recovery_code", "invalid", 1),
        ("webauthn", "invalid", 1),
    ] {
        let line = format!(
            "authd_mfa_verifications_total{{method=\"{method}\",outcome=\"{outcome}\"}} {n}\n"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[test]
fn an_mfa_token_dies_after_max_attempts_and_when_it_expires() {
    let s = TestServer::with(&[SKEW, ("AUTHD_MFA__MAX_ATTEMPTS", "2")]);
    let e = enroll_and_confirm(&s, "mfa-attempts");
    let token = mfa_token(&s, &e.email);
    for _ in 0..2 {
        verify(&s, json!({"mfaToken": token, "code": "000000"})).assert_error(401, "MFA_INVALID");
    }
    // Dead: even the right code is refused.
    verify(
        &s,
        json!({"mfaToken": token, "code": code(&e.secret, e.step + 1)}),
    )
    .assert_error(401, "TOKEN_INVALID");

    // Expired: the row's expiry moved into the past.
    let token = mfa_token(&s, &e.email);
    s.execute_sql(
        "UPDATE one_time_tokens SET expires_at = 1 WHERE purpose = 'mfa'",
        &[],
    );
    verify(
        &s,
        json!({"mfaToken": token, "code": code(&e.secret, e.step + 1)}),
    )
    .assert_error(401, "TOKEN_EXPIRED");
    let _ = &e.data;
    let _ = &e.recovery;
}

#[test]
fn two_verifies_with_one_code_at_once_open_one_session() {
    let s = TestServer::with(&[SKEW]);
    let e = enroll_and_confirm(&s, "mfa-race");
    for round in 1..=2u64 {
        let tokens: Vec<String> = (0..4).map(|_| mfa_token(&s, &e.email)).collect();
        let c = code(&e.secret, e.step + round);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let handles: Vec<_> = tokens
                .iter()
                .map(|t| {
                    let (client, url, c) =
                        (s.client.clone(), s.url("/api/auth/mfa/verify"), c.clone());
                    scope.spawn(move || {
                        send(client.post(url).json(&json!({"mfaToken": t, "code": c}))).status
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            statuses.iter().filter(|&&st| st == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|&st| st == 200 || st == 401),
            "{statuses:?}"
        );
    }
}

#[test]
fn many_mfa_tokens_guessing_in_parallel_get_no_more_checks_than_the_lockout() {
    let s = TestServer::with(&[
        SKEW,
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "100"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "4"),
        ("AUTHD_MFA__MAX_ATTEMPTS", "100"),
    ]);
    let e = enroll_and_confirm(&s, "mfa-guess");
    let tokens: Vec<String> = (0..3).map(|_| mfa_token(&s, &e.email)).collect();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let t = tokens[i % tokens.len()].clone();
                let (client, url) = (s.client.clone(), s.url("/api/auth/mfa/verify"));
                scope.spawn(move || {
                    send(
                        client
                            .post(url)
                            .json(&json!({"mfaToken": t, "code": format!("{:06}", i)})),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|&&st| st == 401).count();
    assert!(
        checked <= 4,
        "more code checks than the lockout allows: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&st| st == 401 || st == 423),
        "{statuses:?}"
    );
    // Locked now: the right code is refused without a check.
    let t = &tokens[0];
    verify(
        &s,
        json!({"mfaToken": t, "code": code(&e.secret, e.step + 1)}),
    )
    .assert_error(423, "ACCOUNT_LOCKED");
}

/// Wrong answers sent at once on one mfaToken get exactly `mfa.max_attempts` checks between
/// them (each takes one of the token's attempts before its check); the others find the token
/// spent (401 `TOKEN_INVALID`), and so does the right code after them.
#[test]
fn parallel_answers_on_one_mfa_token_get_max_attempts_checks() {
    let s = TestServer::with(&[
        SKEW,
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "100"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "100"),
        ("AUTHD_MFA__MAX_ATTEMPTS", "5"),
    ]);
    let e = enroll_and_confirm(&s, "mfa-one-token");
    let token = mfa_token(&s, &e.email);
    let right = code(&e.secret, e.step + 1);
    let codes: Vec<String> = (0..16)
        .map(|i| format!("{:06}", 100_000 + i))
        .filter(|c| *c != right)
        .take(15)
        .collect();
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = codes
            .iter()
            .map(|c| {
                let (client, url) = (s.client.clone(), s.url("/api/auth/mfa/verify"));
                let body = json!({"mfaToken": token, "code": c});
                scope.spawn(move || {
                    let r = send(client.post(url).json(&body));
                    assert_eq!(r.status, 401, "{}", r.text);
                    text(&r.body, "error")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = errors.iter().filter(|e| *e == "MFA_INVALID").count();
    let spent = errors.iter().filter(|e| *e == "TOKEN_INVALID").count();
    assert_eq!((checked, spent), (5, 10), "{errors:?}");
    verify(&s, json!({"mfaToken": token, "code": right})).assert_error(401, "TOKEN_INVALID");
}

#[test]
fn disable_and_regenerate_need_the_password_and_a_code() {
    let s = TestServer::with(&[SKEW]);
    let e = enroll_and_confirm(&s, "mfa-disable");
    let access = text(&e.data, "accessToken");
    let r = send(
        s.post("/api/auth/mfa/recovery-codes")
            .bearer_auth(&access)
            .json(&json!({"currentPassword": PASSWORD, "code": e.recovery[0]})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = r.body["data"]["recoveryCodes"].as_array().unwrap().clone();
    assert_eq!(fresh.len(), 10);
    // The old set no longer works.
    let token = mfa_token(&s, &e.email);
    verify(
        &s,
        json!({"mfaToken": token, "recoveryCode": e.recovery[1]}),
    )
    .assert_error(401, "MFA_INVALID");

    send(
        s.post("/api/auth/mfa/totp/disable")
            .bearer_auth(&access)
            .json(&json!({"currentPassword": PASSWORD, "code": "000000"})),
    )
    .assert_error(401, "MFA_INVALID");
    let r = send(
        s.post("/api/auth/mfa/totp/disable")
            .bearer_auth(&access)
            .json(&json!({"currentPassword": PASSWORD, "code": code(&e.secret, e.step + 1)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        s.get_auth("/api/auth/mfa", &access).body["data"],
        json!({"totp": false, "recoveryCodesRemaining": 0, "passkeys": 0})
    );
    // A plain login again.
    assert_eq!(login(&s, &e.email).status, 200);
}

#[test]
fn with_a_secret_key_the_totp_secret_is_sealed_at_rest() {
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let s = TestServer::with(&[SKEW, ("AUTHD_MFA__SECRET_KEY", key.as_str())]);
    let e = enroll_and_confirm(&s, "mfa-sealed");
    let sealed = s.query_column("SELECT CAST(sealed AS TEXT) FROM mfa_totp", &[]);
    assert!(
        sealed[0] == "1" || sealed[0] == "true",
        "sealed flag: {sealed:?}"
    );
    let token = mfa_token(&s, &e.email);
    let r = verify(
        &s,
        json!({"mfaToken": token, "code": code(&e.secret, e.step + 1)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}
