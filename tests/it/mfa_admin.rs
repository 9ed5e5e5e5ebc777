//! Second factors for admins (CONTRACT 11.4, 11.2's `mfa.required_for_admins`, 11.1's passkey
//! answer): `authd users mfa-reset` and `POST /api/admin/users/{id}/mfa/reset` (each factor
//! gone, every session dead, the next login asks only for the password, `--yes` without a
//! terminal, not its own factors over HTTP), the `mfa` object of `users show` and the admin
//! account objects, admin routes refused to sessions without a second factor, and a passkey
//! answering `MFA_REQUIRED` through `mfa/webauthn/options` and `mfa/verify`.

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit, json_out, users, users_with_input};
use crate::mfa::{code, enroll_and_confirm, login, mfa_token, now_step, verify, SKEW};
use crate::passkeys::{access, register_key, webauthn_on, SoftKey, Twist};
use crate::support::*;
use crate::tokens::text;

/// Rows of `table` whose `user_id` is `id`.
fn rows_of(s: &TestServer, table: &str, id: &str) -> usize {
    s.query_column(
        &format!("SELECT COUNT(*) FROM {table} WHERE CAST(user_id AS TEXT) = ?1"),
        &[id],
    )[0]
    .parse()
    .unwrap()
}

/// The `authMethods` of the session of `access_token`, as `GET /api/auth/sessions` shows it.
fn auth_methods(s: &TestServer, access_token: &str) -> Value {
    let r = s.get_auth("/api/auth/sessions", access_token);
    assert_eq!(r.status, 200, "{}", r.text);
    let sessions = r.body["data"]["sessions"].as_array().unwrap();
    let current = sessions
        .iter()
        .find(|x| x["current"] == true)
        .unwrap_or_else(|| panic!("a current session: {}", r.text));
    current["authMethods"].clone()
}

/// `users show <user> --json`'s `user.mfa`.
fn shown_mfa(s: &TestServer, user: &str) -> Value {
    json_out(&users(s, &["users", "show", user, "--json"]))["user"]["mfa"].clone()
}

/// Turns TOTP on for the session of `access_token` (its password is `PASSWORD`); returns
/// the secret (base32) and the step whose code confirmed it.
fn enroll_totp(s: &TestServer, access_token: &str) -> (String, u64, Vec<String>) {
    let r = send(
        s.post("/api/auth/mfa/totp/enroll")
            .bearer_auth(access_token)
            .json(&json!({"currentPassword": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = text(&r.body["data"], "secret");
    let step = now_step();
    let r = send(
        s.post("/api/auth/mfa/totp/confirm")
            .bearer_auth(access_token)
            .json(&json!({"code": code(&secret, step)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let recovery = r.body["data"]["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, step, recovery)
}

#[test]
fn cli_mfa_reset_needs_yes_without_a_terminal_and_removes_every_factor_and_session() {
    let s = webauthn_on(&[SKEW]);
    let e = enroll_and_confirm(&s, "reset-cli");
    let id = e.data["user"]["id"].as_str().unwrap().to_string();
    let token = access(&e.data);
    let rt = text(&e.data, "refreshToken");
    let (_, r) = register_key(&s, &token, &SoftKey::new());
    assert_eq!(r.status, 201, "{}", r.text);

    // `users show`: the factors, in JSON and in text.
    assert_eq!(
        shown_mfa(&s, &e.email),
        json!({"totp": true, "passkeys": 1})
    );
    let shown = users(&s, &["users", "show", &id]);
    assert!(
        shown
            .ok()
            .lines()
            .any(|l| l == "mfa            totp on, 1 passkey(s)"),
        "{shown:#?}"
    );

    // No terminal, no --yes: exit 1, nothing changed.
    let refused = users(&s, &["users", "mfa-reset", &e.email]);
    assert!(refused.error_line().contains("--yes"), "{refused:#?}");
    assert!(refused.stdout.is_empty(), "{refused:#?}");
    assert_eq!(s.get_auth("/api/auth/profile", &token).status, 200);
    login(&s, &e.email).assert_error(401, "MFA_REQUIRED");
    assert_eq!(
        shown_mfa(&s, &e.email),
        json!({"totp": true, "passkeys": 1})
    );

    let out = users(&s, &["users", "mfa-reset", &e.email, "--yes"]);
    assert_eq!(
        out.ok().trim(),
        format!(
            "reset second factors of {}: TOTP removed, 1 passkey(s) removed; revoked 1 session(s)",
            e.email
        ),
        "{out:#?}"
    );
    // The running server refuses the old session at once, access and refresh.
    s.get_auth("/api/auth/profile", &token)
        .assert_error(401, "TOKEN_REVOKED");
    s.refresh(&rt).assert_error(401, "TOKEN_REVOKED");
    // Every factor is gone (recovery codes too); the next login asks only for the password.
    for table in ["mfa_totp", "mfa_recovery_codes", "passkeys"] {
        assert_eq!(rows_of(&s, table, &id), 0, "{table}");
    }
    assert_eq!(shown_mfa(&s, &id), json!({"totp": false, "passkeys": 0}));
    let r = login(&s, &e.email);
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = text(&r.body["data"], "accessToken");
    assert_eq!(auth_methods(&s, &fresh), json!(["pwd"]));

    // Audited, actor `cli`.
    let events = audit(&s, &["--event", "admin_mfa_reset"]);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["userId"], json!(id));
    assert_eq!(events[0]["actor"], "cli");
    assert_eq!(events[0]["success"], true);

    // Again on an account without factors: fine, nothing removed; unknown users: exit 1.
    let again = users(&s, &["users", "mfa-reset", &id, "-y"]);
    assert!(
        again
            .ok()
            .contains("TOTP was off, 0 passkey(s) removed; revoked 1 session(s)"),
        "{again:#?}"
    );
    for args in [
        vec!["users", "mfa-reset", "nobody@example.com", "--yes"],
        vec!["users", "mfa-reset", "nobody@example.com"],
    ] {
        let r = users(&s, &args);
        assert!(r.error_line().ends_with("no such user"), "{args:?}: {r:#?}");
    }
}

#[test]
fn http_mfa_reset_by_another_admin_and_the_mfa_object_of_admin_accounts() {
    let s = TestServer::with(&[SKEW]);
    // `mfa.required_for_admins` is off by default: a password-only admin session acts.
    let (admin_id, admin) = admin_token(&s);
    let e = enroll_and_confirm(&s, "reset-http");
    let id = e.data["user"]["id"].as_str().unwrap().to_string();
    let token = access(&e.data);
    let other = login_mfa(&s, &e);
    let user_path = format!("/api/admin/users/{id}");

    // The admin's account objects carry `mfa`: show and list (an admin without factors too).
    let r = s.get_auth(&user_path, &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["data"]["user"]["mfa"],
        json!({"totp": true, "passkeys": 0})
    );
    let r = s.get_auth("/api/admin/users?limit=200", &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = r.body["data"]["users"].as_array().unwrap();
    let mfa_of = |uid: &str| {
        listed
            .iter()
            .find(|u| u["id"] == uid)
            .map(|u| u["mfa"].clone())
            .unwrap()
    };
    assert_eq!(mfa_of(&id), json!({"totp": true, "passkeys": 0}));
    assert_eq!(mfa_of(&admin_id), json!({"totp": false, "passkeys": 0}));

    // Not its own factors (400), not an unknown user (404), not as a plain user (403).
    let reset = |path: &str, bearer: &str| send(s.post(path).bearer_auth(bearer));
    reset(&format!("/api/admin/users/{admin_id}/mfa/reset"), &admin)
        .assert_error(400, "VALIDATION_ERROR");
    reset(
        &format!("/api/admin/users/{}/mfa/reset", uuid::Uuid::new_v4()),
        &admin,
    )
    .assert_error(404, "NOT_FOUND");
    reset(&format!("{user_path}/mfa/reset"), &token).assert_error(403, "FORBIDDEN");
    login(&s, &e.email).assert_error(401, "MFA_REQUIRED");

    // Empty body (no Content-Type) or `{}`: both accepted.
    let r = reset(&format!("{user_path}/mfa/reset"), &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["revokedSessions", "user"].into());
    assert_eq!(r.body["data"]["revokedSessions"], 2, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["id"], json!(id));
    assert_eq!(
        r.body["data"]["user"]["mfa"],
        json!({"totp": false, "passkeys": 0})
    );
    for t in [&token, &other] {
        s.get_auth("/api/auth/profile", t)
            .assert_error(401, "TOKEN_REVOKED");
    }
    let r = login(&s, &e.email);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        auth_methods(&s, &text(&r.body["data"], "accessToken")),
        json!(["pwd"])
    );
    let r = send(
        s.post(&format!("{user_path}/mfa/reset"))
            .bearer_auth(&admin)
            .json(&json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["revokedSessions"], 1, "{}", r.text);

    let events = audit(&s, &["--event", "admin_mfa_reset"]);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events
        .iter()
        .all(|ev| ev["userId"] == json!(id) && ev["actor"] == json!(admin_id)));
}

/// Logs `e` in with its password and a fresh TOTP code; returns the access token.
fn login_mfa(s: &TestServer, e: &crate::mfa::Enrolled) -> String {
    let token = mfa_token(s, &e.email);
    let r = verify(
        s,
        json!({"mfaToken": token, "code": code(&e.secret, e.step + 1)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    text(&r.body["data"], "accessToken")
}

#[test]
fn required_for_admins_refuses_admin_sessions_without_a_second_factor() {
    let s = TestServer::with(&[SKEW, ("AUTHD_MFA__REQUIRED_FOR_ADMINS", "true")]);
    let email = unique_email("mfa-admin");
    let id = users_with_input(
        &s,
        &[
            "create-user",
            "--email",
            &email,
            "--role",
            "admin",
            "--password-stdin",
        ],
        PASSWORD,
    )
    .ok()
    .trim()
    .to_string();
    let pwd_only = text(&s.login(&email), "accessToken");
    let target = s.register(&unique_email("mfa-admin-target"));
    let target_path = format!(
        "/api/admin/users/{}",
        target["user"]["id"].as_str().unwrap()
    );

    // A password-only session of an admin: 403 on every admin route, other routes as usual.
    s.get_auth("/api/admin/users", &pwd_only)
        .assert_error(403, "FORBIDDEN");
    s.get_auth(&target_path, &pwd_only)
        .assert_error(403, "FORBIDDEN");
    send(
        s.post(&format!("{target_path}/disable"))
            .bearer_auth(&pwd_only),
    )
    .assert_error(403, "FORBIDDEN");
    assert_eq!(s.get_auth("/api/auth/profile", &pwd_only).status, 200);
    // A plain user stays 403, with or without the rule.
    s.get_auth("/api/admin/users", &access(&target))
        .assert_error(403, "FORBIDDEN");

    // The session that confirms TOTP gains `otp`: admitted on its next request.
    let (secret, step, recovery) = enroll_totp(&s, &pwd_only);
    assert_eq!(auth_methods(&s, &pwd_only), json!(["pwd", "otp"]));
    let r = s.get_auth("/api/admin/users", &pwd_only);
    assert_eq!(r.status, 200, "{}", r.text);

    // A login with a TOTP code, and one with a recovery code: both second factors.
    let t = mfa_token(&s, &email);
    let r = verify(&s, json!({"mfaToken": t, "code": code(&secret, step + 1)}));
    assert_eq!(r.status, 200, "{}", r.text);
    let with_otp = text(&r.body["data"], "accessToken");
    assert_eq!(s.get_auth(&target_path, &with_otp).status, 200);
    let t = mfa_token(&s, &email);
    let r = verify(&s, json!({"mfaToken": t, "recoveryCode": recovery[0]}));
    assert_eq!(r.status, 200, "{}", r.text);
    let with_code = text(&r.body["data"], "accessToken");
    assert_eq!(
        auth_methods(&s, &with_code),
        json!(["pwd", "recovery_code"])
    );
    assert_eq!(s.get_auth(&target_path, &with_code).status, 200);

    // After an operator's reset the admin logs in with its password alone: refused again.
    users(&s, &["users", "mfa-reset", &id, "--yes"]).ok();
    s.get_auth("/api/admin/users", &with_otp)
        .assert_error(401, "TOKEN_REVOKED");
    let again = text(&s.login(&email), "accessToken");
    s.get_auth("/api/admin/users", &again)
        .assert_error(403, "FORBIDDEN");
}

#[test]
fn a_passkey_answers_mfa_required_and_wrong_or_replayed_assertions_count() {
    // Two failed logins per IP: the third answer is refused before it is checked.
    let s = webauthn_on(&[
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "2"),
    ]);
    let email = unique_email("pk-2fa");
    let data = s.register(&email);
    let mut key = SoftKey::new();
    let (handle, r) = register_key(&s, &access(&data), &key);
    assert_eq!(r.status, 201, "{}", r.text);

    // Password, then MFA_REQUIRED naming `webauthn` (no TOTP: nothing else).
    let r = login(&s, &email);
    r.assert_error(401, "MFA_REQUIRED");
    assert_eq!(r.body["methods"], json!(["webauthn"]), "{}", r.text);
    let token = text(&r.body, "mfaToken");
    let options = |mfa: &str| {
        let r = s.post_json("/api/auth/mfa/webauthn/options", json!({"mfaToken": mfa}));
        assert_eq!(r.status, 200, "{}", r.text);
        (
            text(&r.body["data"], "ceremonyId"),
            r.body["data"]["publicKey"].clone(),
        )
    };
    let (ceremony, public_key) = options(&token);
    // The request options name the account's passkey.
    let allowed = public_key["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1, "{public_key}");
    let first = key.assert(&public_key, &handle, &Twist::default());
    let r = verify(
        &s,
        json!({"mfaToken": token, "ceremonyId": ceremony, "credential": first}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.cookie("authd_refresh").is_some(), "{r:#?}");
    let opened = text(&r.body["data"], "accessToken");
    assert_eq!(r.body["data"]["user"]["email"], json!(email));
    assert_eq!(auth_methods(&s, &opened), json!(["pwd", "webauthn"]));

    // A new login: the first assertion replayed on a new ceremony, then a bad signature:
    // 401 MFA_INVALID each, each counted as a failed login of the client IP.
    let token = mfa_token(&s, &email);
    let (ceremony, _) = options(&token);
    verify(
        &s,
        json!({"mfaToken": token, "ceremonyId": ceremony, "credential": first}),
    )
    .assert_error(401, "MFA_INVALID");
    let (ceremony, public_key) = options(&token);
    let bad = key.assert(
        &public_key,
        &handle,
        &Twist {
            bad_signature: true,
            ..Twist::default()
        },
    );
    verify(
        &s,
        json!({"mfaToken": token, "ceremonyId": ceremony, "credential": bad}),
    )
    .assert_error(401, "MFA_INVALID");
    let failures = s.query_column(
        "SELECT COUNT(*) FROM audit_events WHERE event = 'mfa_verify' AND reason = 'invalid_code'",
        &[],
    );
    assert_eq!(failures, ["2"]);
    // The budget is spent: a good assertion now is refused before any check.
    let (ceremony, public_key) = options(&token);
    let good = key.assert(&public_key, &handle, &Twist::default());
    let r = verify(
        &s,
        json!({"mfaToken": token, "ceremonyId": ceremony, "credential": good}),
    );
    r.assert_error(429, "RATE_LIMITED");
}

#[test]
fn a_used_unknown_or_expired_ceremony_at_mfa_verify_is_a_wrong_answer() {
    // CONTRACT 11.1: a replayed assertion is MFA_INVALID; the ceremonyId is part of the
    // answer, so a used, unknown, malformed or expired one is a wrong answer too: counted as a
    // failed login and as one of the mfaToken's `mfa.max_attempts`.
    let s = webauthn_on(&[
        ("AUTHD_MFA__MAX_ATTEMPTS", "6"),
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "6"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "100"),
    ]);
    let email = unique_email("pk-replay");
    let data = s.register(&email);
    let mut key = SoftKey::new();
    let (handle, r) = register_key(&s, &access(&data), &key);
    assert_eq!(r.status, 201, "{}", r.text);
    let options = |mfa: &str| {
        let r = s.post_json("/api/auth/mfa/webauthn/options", json!({"mfaToken": mfa}));
        assert_eq!(r.status, 200, "{}", r.text);
        (
            text(&r.body["data"], "ceremonyId"),
            r.body["data"]["publicKey"].clone(),
        )
    };
    let answer = |mfa: &str, ceremony: &str, credential: &Value| {
        verify(
            &s,
            json!({"mfaToken": mfa, "ceremonyId": ceremony, "credential": credential}),
        )
    };

    // A first login spends its ceremony; the same ceremonyId at a second login's mfaToken
    // (used, and begun for another mfaToken) is MFA_INVALID.
    let first_token = mfa_token(&s, &email);
    let (used, public_key) = options(&first_token);
    let good = key.assert(&public_key, &handle, &Twist::default());
    assert_eq!(answer(&first_token, &used, &good).status, 200);
    let token = mfa_token(&s, &email);
    answer(&token, &used, &good).assert_error(401, "MFA_INVALID");

    // A ceremony of this mfaToken refused once, then replayed with an assertion that would
    // have been good for it: MFA_INVALID.
    let (ceremony, public_key) = options(&token);
    let bad = key.assert(
        &public_key,
        &handle,
        &Twist {
            bad_signature: true,
            ..Twist::default()
        },
    );
    answer(&token, &ceremony, &bad).assert_error(401, "MFA_INVALID");
    let would_be_good = key.assert(&public_key, &handle, &Twist::default());
    answer(&token, &ceremony, &would_be_good).assert_error(401, "MFA_INVALID");

    // An unknown (well-formed) and a malformed ceremonyId: MFA_INVALID.
    answer(&token, &"A".repeat(43), &would_be_good).assert_error(401, "MFA_INVALID");
    answer(&token, "x", &would_be_good).assert_error(401, "MFA_INVALID");
    // An expired ceremony: MFA_INVALID (TOKEN_EXPIRED speaks of the mfaToken alone).
    let (expired, public_key) = options(&token);
    s.execute_sql(
        "UPDATE one_time_tokens SET expires_at = 1 WHERE purpose = 'passkey_authentication'",
        &[],
    );
    let late = key.assert(&public_key, &handle, &Twist::default());
    answer(&token, &expired, &late).assert_error(401, "MFA_INVALID");

    // Six wrong answers: the mfaToken is dead, even for a fresh ceremony.
    let failures = s.query_column(
        "SELECT COUNT(*) FROM audit_events WHERE event = 'mfa_verify' AND reason = 'invalid_code'",
        &[],
    );
    assert_eq!(failures, ["6"]);
    s.post_json("/api/auth/mfa/webauthn/options", json!({"mfaToken": token}))
        .assert_error(401, "TOKEN_INVALID");
    answer(&token, "x", &late).assert_error(401, "TOKEN_INVALID");
    // Each was a failed login of the client IP: its budget of six is spent.
    login(&s, &email).assert_error(429, "RATE_LIMITED");
}
