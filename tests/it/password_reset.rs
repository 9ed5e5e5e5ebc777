//! Password reset (CONTRACT 10.3, with the one-time token rules of 10.2): the request that
//! answers alike for every address, the mailed link (the `file` transport), the confirmation
//! that revokes every session, clears the lockout and verifies the address, the token rules
//! (single use, superseded, killed, expired), the per-IP budget of failed confirms, and the
//! admin's `authd users reset-link` and `POST /api/admin/users/{id}/reset-link`. Every test
//! runs on SQLite and, with `AUTHD_TEST_DATABASE=postgres`, on PostgreSQL (but the one that
//! scans the SQLite file for the raw token).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit, json_out, users};
use crate::cli::{authd_on, create_user, run, Run};
use crate::mail::{file_settings, refs, store_of, LINK_BASE};
use crate::support::*;

pub const RESET_MAIL: &str = "Subject: Reset your password";
pub const CHANGED_MAIL: &str = "Subject: Your password was changed";
pub const RESET_PATH: &str = "/reset-password";
pub const NEW_PASSWORD: &str = "Battery-staple-7";
pub const WRONG: &str = "Wrong-horse-1!";

/// The `file` transport into `dir`, the per-address throttle off (each test sends several
/// mails to one address in a row), then `extra` (which wins over a key set here).
pub fn mail_settings(dir: &Path, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut settings = file_settings(dir);
    settings.push(("AUTHD_EMAIL__SEND_COOLDOWN", "0s".into()));
    settings.push(("AUTHD_EMAIL__MAX_MAILS_PER_DAY", "1000".into()));
    settings.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    settings
}

/// A server with `mail_settings(dir, extra)`.
pub fn mail_server(dir: &Path, extra: &[(&'static str, &str)]) -> TestServer {
    let settings = mail_settings(dir, extra);
    let vars: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestServer::with(&vars)
}

/// `authd <args>` on the server's database with the settings `env` (e.g. `mail_settings`).
pub fn cli(s: &TestServer, env: &[(&'static str, String)], args: &[&str]) -> Run {
    let mut cmd = authd_on(s.dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd.args(args), None)
}

/// The mails in `dir` to `to` whose text holds `marker`, oldest first.
pub fn mails(dir: &Path, to: &str, marker: &str) -> Vec<String> {
    let mut found: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let at = e.metadata().ok()?.modified().ok()?;
            (text.contains(&format!("To: {to}\r\n")) && text.contains(marker)).then_some((at, text))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, t)| t).collect()
}

/// Waits (up to 30 s) for the `n`th (1-based) mail to `to` holding `marker`.
pub fn wait_mail(dir: &Path, to: &str, marker: &str, n: usize) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let found = mails(dir, to, marker);
        if found.len() >= n {
            return found[n - 1].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("mail {n} to {to} ({marker}) never came");
}

/// The token of a mail's link, asserting the link is `LINK_BASE + path + #token=<token>`.
pub fn token_in(eml: &str, path: &str) -> String {
    let link = eml
        .lines()
        .find(|l| l.contains("#token="))
        .unwrap_or_else(|| panic!("no link in {eml}"))
        .trim();
    let prefix = format!("{LINK_BASE}{path}#token=");
    assert!(link.starts_with(&prefix), "{link} in {eml}");
    let token = &link[prefix.len()..];
    assert!(
        token.len() >= 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a base64url token of 256 bits or more: {token:?}"
    );
    token.to_string()
}

/// The kinds of the outbox rows addressed to `to`.
pub fn outbox_kinds(s: &TestServer, to: &str) -> Vec<String> {
    s.query_column(
        "SELECT kind FROM mail_outbox WHERE to_address = ?1 ORDER BY created_at",
        &[to],
    )
}

/// Makes the stored one-time token `token` one second past its lifetime.
pub fn expire(s: &TestServer, token: &str) {
    let past = authd::domain::time::now_ms() - 1000;
    let changed = s.execute_sql(
        &format!("UPDATE one_time_tokens SET expires_at = {past} WHERE token_hash = ?1"),
        &[&authd::crypto::one_time::hash(token)],
    );
    assert_eq!(changed, 1, "the token is stored by its hash");
}

/// A well-formed token that nobody issued.
pub fn random_token() -> String {
    authd::crypto::one_time::new_token().0
}

fn request(s: &TestServer, email: &str) -> Resp {
    s.post_json(
        "/api/auth/password-reset/request",
        json!({ "email": email }),
    )
}

fn confirm(s: &TestServer, token: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/password-reset/confirm",
        json!({"token": token, "newPassword": password}),
    )
}

fn login_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

fn access(data: &Value) -> String {
    data["accessToken"].as_str().unwrap().to_string()
}

fn refresh(data: &Value) -> String {
    data["refreshToken"].as_str().unwrap().to_string()
}

/// Asks for a reset of `email` and returns the token of the `n`th reset mail to it.
fn reset_token(s: &TestServer, dir: &Path, email: &str, n: usize) -> String {
    let r = request(s, email);
    assert_eq!(r.status, 202, "{}", r.text);
    token_in(&wait_mail(dir, email, RESET_MAIL, n), RESET_PATH)
}

/// Seconds from now to the RFC 3339 time `at`.
fn seconds_until(at: &str) -> i64 {
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{at:?} is not RFC 3339: {e}"));
    (t - time::OffsetDateTime::now_utc()).whole_seconds()
}

/// The password-reset audit events that succeeded for `user_id`.
fn resets_of(s: &TestServer, user_id: &str) -> usize {
    audit(s, &["--event", "password_reset"])
        .iter()
        .filter(|e| e["userId"] == user_id && e["success"] == true)
        .count()
}

#[test]
fn the_request_answers_alike_for_known_unknown_disabled_and_throttled_addresses() {
    let mail = tempfile::tempdir().unwrap();
    // The default throttle: one mail per address per 60 s.
    let s = mail_server(mail.path(), &[("AUTHD_EMAIL__SEND_COOLDOWN", "60s")]);
    let known = unique_email("known");
    let disabled = unique_email("disabled");
    let unknown = unique_email("unknown");
    // Made by the CLI: no verification mail is queued that the throttle would count.
    create_user(s.dir.path(), &known, PASSWORD);
    create_user(s.dir.path(), &disabled, PASSWORD);
    users(&s, &["users", "disable", &disabled]).ok();

    let answers = [
        request(&s, &known),
        request(&s, &unknown),
        request(&s, &disabled),
        request(&s, &known.to_uppercase()),
    ];
    let first = &answers[0];
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.body["success"], true, "{}", first.text);
    assert_eq!(first.body["data"], json!({}), "{}", first.text);
    assert!(first.body["message"].is_string(), "{}", first.text);
    assert!(first.header("set-cookie").is_none());
    assert_eq!(first.header("cache-control"), Some("no-store"));
    for r in &answers[1..] {
        assert_eq!(r.status, first.status, "{}", r.text);
        assert_eq!(r.body, first.body);
        assert_eq!(r.header_names(), first.header_names());
    }

    // One mail queued, to the live account, once; its link works.
    assert_eq!(outbox_kinds(&s, &known), ["password_reset"]);
    assert!(outbox_kinds(&s, &disabled).is_empty());
    assert!(outbox_kinds(&s, &unknown).is_empty());
    let eml = wait_mail(mail.path(), &known, RESET_MAIL, 1);
    assert!(eml.contains("30 minutes"), "the expiry is told: {eml}");
    let token = token_in(&eml, RESET_PATH);
    assert_eq!(confirm(&s, &token, NEW_PASSWORD).status, 200);

    // The audit trail says what really happened.
    let mut reasons: Vec<String> = audit(&s, &["--event", "password_reset_request"])
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["disabled", "queued", "throttled", "unknown_email"],
        "password_reset_request reasons"
    );
}

#[test]
fn a_malformed_email_is_400_and_the_routes_are_404_without_mail_or_when_disabled() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    for bad in ["not-an-address", "", "a@", "@example.com"] {
        let r = request(&s, bad);
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["email"], "{bad:?}: {}", r.text);
    }
    s.post_json("/api/auth/password-reset/request", json!({}))
        .assert_error(400, "VALIDATION_ERROR");
    s.post_json(
        "/api/auth/password-reset/request",
        json!({"email": unique_email("x"), "extra": 1}),
    )
    .assert_error(400, "VALIDATION_ERROR");
    s.post_json(
        "/api/auth/password-reset/confirm",
        json!({ "newPassword": NEW_PASSWORD }),
    )
    .assert_error(400, "VALIDATION_ERROR");

    // No mail transport: nothing can be mailed (an admin's token still confirms, see below).
    let none = TestServer::start();
    let email = unique_email("none");
    none.register(&email);
    request(&none, &email).assert_error(404, "NOT_FOUND");
    confirm(&none, &random_token(), NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");

    // Reset turned off: both routes are gone.
    let off_mail = tempfile::tempdir().unwrap();
    let off = mail_server(
        off_mail.path(),
        &[("AUTHD_PASSWORD_RESET__ENABLED", "false")],
    );
    let email = unique_email("off");
    off.register(&email);
    request(&off, &email).assert_error(404, "NOT_FOUND");
    confirm(&off, &random_token(), NEW_PASSWORD).assert_error(404, "NOT_FOUND");
    assert!(!outbox_kinds(&off, &email)
        .iter()
        .any(|k| k == "password_reset"));
}

#[test]
fn a_reset_revokes_every_session_changes_the_password_verifies_the_address_and_sends_a_notice() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("reset");
    let first = s.register(&email);
    assert_eq!(first["user"]["emailVerified"], false, "{first}");
    let id = first["user"]["id"].as_str().unwrap().to_string();
    let second = s.login(&email);
    let bystander = s.register(&unique_email("bystander"));

    // The link is built from email.link_base whatever host the request named.
    let r = send(
        s.post("/api/auth/password-reset/request")
            .header("Host", "evil.example")
            .header("X-Forwarded-Host", "evil.example")
            .json(&json!({ "email": email })),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let eml = wait_mail(mail.path(), &email, RESET_MAIL, 1);
    assert!(!eml.contains("evil.example"), "{eml}");
    let token = token_in(&eml, RESET_PATH);

    let r = confirm(&s, &token, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["data"], json!({"revokedSessions": 2}), "{}", r.text);
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);

    for session in [&first, &second] {
        s.refresh(&refresh(session))
            .assert_error(401, "TOKEN_REVOKED");
        s.get_auth("/api/auth/profile", &access(session))
            .assert_error(401, "TOKEN_REVOKED");
    }
    assert_eq!(
        s.get_auth("/api/auth/profile", &access(&bystander)).status,
        200
    );
    login_with(&s, &email, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    let after = login_with(&s, &email, NEW_PASSWORD);
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(
        after.body["data"]["user"]["emailVerified"], true,
        "{}",
        after.text
    );

    // Single use.
    confirm(&s, &token, "Another-horse-8").assert_error(400, "TOKEN_INVALID");
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);

    let notice = wait_mail(mail.path(), &email, CHANGED_MAIL, 1);
    assert!(
        !notice.contains(LINK_BASE),
        "a notice has no link: {notice}"
    );
    assert!(!notice.contains("token="), "{notice}");
    assert_eq!(resets_of(&s, &id), 1);
}

#[test]
fn a_password_the_policy_refuses_is_400_on_new_password_and_leaves_the_token_usable() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("policy");
    let me = s.register(&email);
    let token = reset_token(&s, mail.path(), &email, 1);
    for weak in ["short", "", "alllettersnodigits", &"Aa1!".repeat(20)] {
        let r = confirm(&s, &token, weak);
        r.assert_error(400, "VALIDATION_ERROR");
        let fields = detail_fields(&r);
        assert!(!fields.is_empty(), "{}", r.text);
        assert!(fields.iter().all(|f| f == "newPassword"), "{}", r.text);
    }
    // Nothing changed meanwhile.
    assert_eq!(s.get_auth("/api/auth/profile", &access(&me)).status, 200);
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);

    let r = confirm(&s, &token, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
}

#[test]
fn unknown_garbage_and_expired_tokens_are_refused_and_change_nothing() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("expired");
    s.register(&email);
    confirm(&s, &random_token(), NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");
    confirm(&s, "garbage", NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");

    let token = reset_token(&s, mail.path(), &email, 1);
    expire(&s, &token);
    confirm(&s, &token, NEW_PASSWORD).assert_error(400, "TOKEN_EXPIRED");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
    login_with(&s, &email, NEW_PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    // A token of another purpose is no reset token.
    let verify = token_in(
        &wait_mail(
            mail.path(),
            &email,
            "Subject: Confirm your email address",
            1,
        ),
        "/verify-email",
    );
    confirm(&s, &verify, NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
}

#[test]
fn a_reset_clears_the_lockout_of_the_email() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(
        mail.path(),
        &[
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "10000"),
            ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
            ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
        ],
    );
    let email = unique_email("locked");
    s.register(&email);
    for _ in 0..3 {
        login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    login_with(&s, &email, PASSWORD).assert_error(423, "ACCOUNT_LOCKED");

    let token = reset_token(&s, mail.path(), &email, 1);
    assert_eq!(confirm(&s, &token, NEW_PASSWORD).status, 200);
    let r = login_with(&s, &email, NEW_PASSWORD);
    assert_eq!(r.status, 200, "the lockout is cleared: {}", r.text);
}

#[test]
fn failed_confirms_count_against_the_failed_login_budget_of_the_ip() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(
        mail.path(),
        &[
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "10000"),
            ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
            ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
        ],
    );
    for _ in 0..3 {
        confirm(&s, &random_token(), NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");
    }
    let r = confirm(&s, &random_token(), NEW_PASSWORD);
    r.assert_error(429, "RATE_LIMITED");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // The same budget as failed logins.
    login_with(&s, &unique_email("nobody"), WRONG).assert_error(429, "RATE_LIMITED");
}

#[test]
fn concurrent_confirmations_of_one_token_give_one_success() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("race");
    s.register(&email);
    let token = reset_token(&s, mail.path(), &email, 1);
    let passwords: Vec<String> = (0..8).map(|i| format!("Battery-staple-{i}")).collect();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = passwords
            .iter()
            .map(|p| {
                let (s, token) = (&s, &token);
                scope.spawn(move || confirm(s, token, p).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&c| c == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&c| c == 200 || c == 400),
        "{statuses:?}"
    );
    // Exactly one of the passwords took.
    let working = passwords
        .iter()
        .filter(|p| login_with(&s, &email, p).status == 200)
        .count();
    assert_eq!(working, 1);
    login_with(&s, &email, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
}

#[test]
fn a_newer_request_supersedes_the_older_link() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("newer");
    s.register(&email);
    let older = reset_token(&s, mail.path(), &email, 1);
    let newer = reset_token(&s, mail.path(), &email, 2);
    assert_ne!(older, newer);
    confirm(&s, &older, NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
    let r = confirm(&s, &newer, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
}

#[test]
fn a_password_change_or_a_disable_kills_an_outstanding_link() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("killed");
    let me = s.register(&email);
    let token = reset_token(&s, mail.path(), &email, 1);
    let r = send(
        s.post("/api/auth/password")
            .bearer_auth(access(&me))
            .json(&json!({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    confirm(&s, &token, "Another-horse-8").assert_error(400, "TOKEN_INVALID");
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);

    // `users disable` kills it too (the account enabled again before the confirm).
    let token = reset_token(&s, mail.path(), &email, 2);
    users(&s, &["users", "disable", &email]).ok();
    users(&s, &["users", "enable", &email]).ok();
    confirm(&s, &token, "Another-horse-8").assert_error(400, "TOKEN_INVALID");
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
}

#[test]
fn the_raw_token_is_never_in_the_sqlite_files() {
    let mail = tempfile::tempdir().unwrap();
    let settings = mail_settings(mail.path(), &[]);
    let vars: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = TestServer::sqlite_only(&vars);
    let email = unique_email("raw");
    s.register(&email);
    let token = reset_token(&s, mail.path(), &email, 1);
    let dir = s.stop();
    assert!(crate::mail::assert_not_in_files(dir.path(), &token) >= 1);
    // It is the real token: the restarted server takes it.
    let s = TestServer::sqlite_only_in(dir, &vars);
    let r = confirm(&s, &token, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn users_reset_link_prints_a_link_or_json_or_mails_it_and_kills_older_tokens() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let env = mail_settings(mail.path(), &[]);
    let email = unique_email("cli-link");
    create_user(s.dir.path(), &email, PASSWORD);
    let mailed = reset_token(&s, mail.path(), &email, 1);

    let out = cli(&s, &env, &["users", "reset-link", &email.to_uppercase()]);
    let lines: Vec<&str> = out.ok().lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{out:#?}");
    let prefix = format!("reset link for {email}: ");
    assert!(lines[0].starts_with(&prefix), "{out:#?}");
    let link = &lines[0][prefix.len()..];
    let printed = token_in(link, RESET_PATH);
    let expires = lines[1].strip_prefix("expires ").expect("an expires line");
    let left = seconds_until(expires.trim());
    assert!(
        (25 * 60..=30 * 60 + 5).contains(&left),
        "{left} s: {out:#?}"
    );
    // The admin's token killed the mailed one.
    confirm(&s, &mailed, NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");

    let out = cli(
        &s,
        &env,
        &["users", "reset-link", &email, "--ttl", "10m", "--json"],
    );
    let v = json_out(&out);
    assert_eq!(
        keys_of(&v),
        ["email", "expiresAt", "link", "token"].into(),
        "{v}"
    );
    assert_eq!(v["email"], email.as_str());
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        v["link"],
        format!("{LINK_BASE}{RESET_PATH}#token={token}").as_str()
    );
    let left = seconds_until(v["expiresAt"].as_str().unwrap());
    assert!((9 * 60..=10 * 60 + 5).contains(&left), "{left} s: {v}");
    confirm(&s, &printed, NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");

    for ttl in ["1m", "25h"] {
        cli(&s, &env, &["users", "reset-link", &email, "--ttl", ttl]).error_line();
    }
    let r = confirm(&s, &token, NEW_PASSWORD);
    assert_eq!(
        r.status, 200,
        "the --json token (not killed by refused runs): {}",
        r.text
    );
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);

    let out = cli(&s, &env, &["users", "reset-link", &email, "--send"]);
    assert_eq!(out.ok().trim(), format!("reset mail queued for {email}"));
    assert!(!out.stdout.contains("token"), "{out:#?}");
    let sent = token_in(&wait_mail(mail.path(), &email, RESET_MAIL, 2), RESET_PATH);
    let r = confirm(&s, &sent, "Another-horse-8");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(login_with(&s, &email, "Another-horse-8").status, 200);

    let line = cli(&s, &env, &["users", "reset-link", &unique_email("nobody")]).error_line();
    assert!(line.contains("no such user"), "{line}");
    let events = audit(&s, &["--event", "admin_reset_link"]);
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["actor"] == "cli")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    // Newest first: the mailed one, then the two printed ones.
    assert_eq!(reasons, ["mailed", "link", "link"], "{events:?}");
}

#[test]
fn without_a_mail_transport_users_reset_link_prints_a_token_that_confirms() {
    let s = TestServer::start();
    let email = unique_email("cli-none");
    let me = s.register(&email);

    let out = users(&s, &["users", "reset-link", &email]);
    let text = out.ok().to_string();
    assert!(text.contains(&email), "{text}");
    assert!(
        !text.contains("http"),
        "no link without email.link_base: {text}"
    );
    let printed: Vec<&str> = text
        .split_whitespace()
        .filter(|w| {
            w.len() >= 43
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .collect();
    assert_eq!(printed.len(), 1, "one token printed: {text}");
    let printed = printed[0].to_string();

    let v = json_out(&users(&s, &["users", "reset-link", &email, "--json"]));
    assert_eq!(
        keys_of(&v),
        ["email", "expiresAt", "link", "token"].into(),
        "{v}"
    );
    assert!(v["link"].is_null(), "{v}");
    assert_eq!(v["email"], email.as_str());
    let token = v["token"].as_str().unwrap().to_string();
    confirm(&s, &printed, NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");

    let line = users(&s, &["users", "reset-link", &email, "--send"]).error_line();
    assert!(!line.is_empty());
    let r = confirm(&s, &token, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["revokedSessions"], 1);
    s.refresh(&refresh(&me)).assert_error(401, "TOKEN_REVOKED");
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
}

#[test]
fn the_admin_route_makes_a_reset_link() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let (_, admin) = admin_token(&s);
    let email = unique_email("api-link");
    let me = s.register(&email);
    let id = me["user"]["id"].as_str().unwrap().to_string();
    let make = |target: &str, token: &str, body: Value| {
        send(
            s.post(&format!("/api/admin/users/{target}/reset-link"))
                .bearer_auth(token)
                .json(&body),
        )
    };

    let r = make(&id, &admin, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    let data = &r.body["data"];
    assert_eq!(
        keys_of(data),
        ["expiresAt", "link", "token"].into(),
        "{data}"
    );
    let first = data["token"].as_str().unwrap().to_string();
    assert_eq!(
        data["link"],
        format!("{LINK_BASE}{RESET_PATH}#token={first}").as_str()
    );
    let left = seconds_until(data["expiresAt"].as_str().unwrap());
    assert!((25 * 60..=30 * 60 + 5).contains(&left), "{left} s");

    let r = make(&id, &admin, json!({"ttl": "10m"}));
    assert_eq!(r.status, 200, "{}", r.text);
    let second = r.body["data"]["token"].as_str().unwrap().to_string();
    let left = seconds_until(r.body["data"]["expiresAt"].as_str().unwrap());
    assert!((9 * 60..=10 * 60 + 5).contains(&left), "{left} s");

    for ttl in ["1m", "25h", "soon"] {
        make(&id, &admin, json!({ "ttl": ttl })).assert_error(400, "VALIDATION_ERROR");
    }
    make(&id, &access(&me), json!({})).assert_error(403, "FORBIDDEN");
    make(&uuid::Uuid::new_v4().to_string(), &admin, json!({})).assert_error(404, "NOT_FOUND");

    confirm(&s, &first, NEW_PASSWORD).assert_error(400, "TOKEN_INVALID");
    let r = confirm(&s, &second, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["revokedSessions"], 1);
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
    let events = audit(&s, &["--event", "admin_reset_link"]);
    let made = events
        .iter()
        .filter(|e| e["userId"] == id.as_str() && e["reason"] == "link")
        .count();
    assert_eq!(made, 2, "{events:?}");
}

/// A reset mail still waiting for the relay when the password changes, or the account is
/// disabled, never goes out: its link would be minted after the change (CONTRACT 10.2).
#[test]
fn a_mail_still_queued_when_the_credential_changes_is_failed_not_sent() {
    let relay = crate::smtp::Relay::start();
    let down = relay.stop();
    let settings = crate::mail::smtp_settings(down);
    let s = TestServer::with(&refs(&settings));
    let store = store_of(&s);
    for (n, change) in [["users", "disable"], ["users", "set-password"]]
        .iter()
        .enumerate()
    {
        let email = unique_email(&format!("queued{n}"));
        s.register(&email);
        assert_eq!(request(&s, &email).status, 202);
        let mail = || {
            store
                .list_mails(None)
                .unwrap()
                .into_iter()
                .find(|m| m.to == email && m.kind.as_str() == "password_reset")
                .expect("the reset mail is in the outbox")
        };
        // The relay is down: the first attempt failed and the mail waits for its retry.
        crate::mail::wait_until(|| mail().attempts == 1 && mail().status.as_str() == "queued");
        let mut args = change.to_vec();
        args.push(&email);
        if change[1] == "set-password" {
            args.push("--password-stdin");
            crate::admin_cli::users_with_input(&s, &args, NEW_PASSWORD).ok();
        } else {
            users(&s, &args).ok();
        }
        let m = mail();
        assert_eq!(m.status.as_str(), "failed", "{m:?}");
        assert!(
            m.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("credential_changed")),
            "{m:?}"
        );
    }
}
