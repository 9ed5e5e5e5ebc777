//! Email verification (CONTRACT 10.4, with the one-time token rules of 10.2): the mailed link
//! (the `file` transport) with and without `email.require_verification`, the 202 of register
//! and resend that answers alike for every address, the unverified login, a registration that
//! takes over an unverified address, links that die, the admin's `authd users verify-email`
//! and `POST /api/admin/users/{id}/verify-email`, and cleanup of accounts never verified.
//! Every test runs on SQLite and, with `AUTHD_TEST_DATABASE=postgres`, on PostgreSQL.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit, json_out, users};
use crate::cli::create_user;
use crate::mail::LINK_BASE;
use crate::password_reset::{
    cli, expire, mail_server, mail_settings, mails, outbox_kinds, random_token, token_in,
    wait_mail, NEW_PASSWORD, RESET_MAIL, RESET_PATH, WRONG,
};
use crate::support::*;

const VERIFY_MAIL: &str = "Subject: Confirm your email address";
const ALREADY_MAIL: &str = "Subject: You already have an account";
const VERIFY_PATH: &str = "/verify-email";
const REQUIRED: (&str, &str) = ("AUTHD_EMAIL__REQUIRE_VERIFICATION", "true");

fn register_with(s: &TestServer, email: &str, password: &str, name: Option<&str>) -> Resp {
    let mut body = json!({"email": email, "password": password});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    s.post_json("/api/auth/register", body)
}

fn verify(s: &TestServer, token: &str) -> Resp {
    s.post_json("/api/auth/verify-email", json!({ "token": token }))
}

fn resend(s: &TestServer, email: &str) -> Resp {
    s.post_json("/api/auth/verify-email/resend", json!({ "email": email }))
}

fn login_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

/// The token of the `n`th verification mail to `email`.
fn verify_token(dir: &Path, email: &str, n: usize) -> String {
    token_in(&wait_mail(dir, email, VERIFY_MAIL, n), VERIFY_PATH)
}

/// Asserts the 202 that register and resend give under verification: `data {}`, no cookie.
fn assert_accepted(r: &Resp) {
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["success"], true, "{}", r.text);
    assert_eq!(r.body["data"], json!({}), "{}", r.text);
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
}

/// Asserts `others` answer exactly as `first`: status, body and header names.
fn assert_alike(first: &Resp, others: &[&Resp]) {
    for r in others {
        assert_eq!(r.status, first.status, "{}", r.text);
        assert_eq!(r.body, first.body);
        assert_eq!(r.header_names(), first.header_names());
    }
}

/// The `users show --json` account object of `email`.
fn account(s: &TestServer, email: &str) -> Value {
    json_out(&users(s, &["users", "show", email, "--json"]))["user"].clone()
}

/// Whether `email`'s account is marked verified in the database (`yes` / `no`).
fn verified(s: &TestServer, email: &str) -> String {
    s.query_column(
        "SELECT CASE WHEN email_verified THEN 'yes' ELSE 'no' END FROM users WHERE email = ?1",
        &[email],
    )
    .pop()
    .unwrap_or_default()
}

/// The state column of `email`'s line in `users list`.
fn listed_state(s: &TestServer, email: &str) -> String {
    let out = users(s, &["users", "list"]);
    let line = out
        .ok()
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(email))
        .unwrap_or_else(|| panic!("{email} not listed: {out:#?}"))
        .to_string();
    line.split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn without_the_requirement_register_is_201_unverified_and_the_mailed_link_verifies() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("optional");
    let reg = s.register(&email);
    assert_eq!(reg["user"]["emailVerified"], false, "{reg}");
    assert!(reg["accessToken"].is_string());
    let id = reg["user"]["id"].as_str().unwrap().to_string();
    let access = reg["accessToken"].as_str().unwrap().to_string();
    assert_eq!(
        s.get_auth("/api/auth/profile", &access).body["data"]["user"]["emailVerified"],
        false
    );
    let eml = wait_mail(mail.path(), &email, VERIFY_MAIL, 1);
    assert!(eml.contains("1 day"), "the expiry is told: {eml}");
    let token = token_in(&eml, VERIFY_PATH);

    let r = verify(&s, &token);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["user"].into(), "{}", r.text);
    let user = &r.body["data"]["user"];
    assert_eq!(user["emailVerified"], true, "{}", r.text);
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["id"], id.as_str());
    assert!(r.header("set-cookie").is_none());
    assert_eq!(
        s.get_auth("/api/auth/profile", &access).body["data"]["user"]["emailVerified"],
        true
    );
    verify(&s, &token).assert_error(400, "TOKEN_INVALID");

    let events = audit(&s, &["--event", "email_verified"]);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["userId"] == id.as_str() && e["success"] == true)
            .count(),
        1,
        "{events:?}"
    );
}

#[test]
fn bad_and_expired_tokens_are_refused_and_a_reset_token_verifies_nothing() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[]);
    let email = unique_email("bad");
    s.register(&email);
    verify(&s, &random_token()).assert_error(400, "TOKEN_INVALID");
    verify(&s, "garbage").assert_error(400, "TOKEN_INVALID");
    s.post_json("/api/auth/verify-email", json!({}))
        .assert_error(400, "VALIDATION_ERROR");

    let token = verify_token(mail.path(), &email, 1);
    expire(&s, &token);
    verify(&s, &token).assert_error(400, "TOKEN_EXPIRED");
    assert_eq!(verified(&s, &email), "no");

    // A reset token is not a verification token, and trying it does not use it up.
    let r = s.post_json(
        "/api/auth/password-reset/request",
        json!({ "email": email }),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let reset = token_in(&wait_mail(mail.path(), &email, RESET_MAIL, 1), RESET_PATH);
    verify(&s, &reset).assert_error(400, "TOKEN_INVALID");
    assert_eq!(verified(&s, &email), "no");
    let r = s.post_json(
        "/api/auth/password-reset/confirm",
        json!({"token": reset, "newPassword": NEW_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn accounts_made_by_create_user_are_verified_and_get_no_link() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let email = unique_email("cli-made");
    create_user(s.dir.path(), &email, PASSWORD);
    let r = login_with(&s, &email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["emailVerified"], true, "{}", r.text);
    assert_eq!(verified(&s, &email), "yes");
    assert!(outbox_kinds(&s, &email).is_empty());
    assert_eq!(listed_state(&s, &email), "active");
}

#[test]
fn required_register_answers_202_alike_and_a_verified_address_gets_a_notice_and_keeps_its_password()
{
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let fresh = unique_email("fresh");
    let taken = unique_email("taken");
    create_user(s.dir.path(), &taken, PASSWORD);

    let first = register_with(&s, &fresh, PASSWORD, None);
    assert_accepted(&first);
    let again = register_with(&s, &fresh, PASSWORD, None);
    let other = register_with(&s, &taken.to_uppercase(), NEW_PASSWORD, Some("Mallory"));
    assert_alike(&first, &[&again, &other]);

    let notice = wait_mail(mail.path(), &taken, ALREADY_MAIL, 1);
    assert!(
        !notice.contains(LINK_BASE),
        "a notice has no link: {notice}"
    );
    assert!(!outbox_kinds(&s, &taken).iter().any(|k| k == "verify_email"));
    assert!(mails(mail.path(), &taken, VERIFY_MAIL).is_empty());
    // Nothing about the verified account changed.
    let r = login_with(&s, &taken, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["data"]["user"]["name"].is_null(), "{}", r.text);
    login_with(&s, &taken, NEW_PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    // The new address got a link.
    verify_token(mail.path(), &fresh, 1);
}

#[test]
fn an_unverified_account_logs_in_only_after_its_link_is_used() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let email = unique_email("gate");
    assert_accepted(&register_with(&s, &email, PASSWORD, None));
    // The right password first: a wrong one says nothing about the account.
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    let r = login_with(&s, &email, PASSWORD);
    r.assert_error(403, "EMAIL_NOT_VERIFIED");
    assert!(r.header("set-cookie").is_none());
    assert_eq!(verified(&s, &email), "no");

    let token = verify_token(mail.path(), &email, 1);
    let r = verify(&s, &token);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["emailVerified"], true);
    assert!(r.body["data"].get("accessToken").is_none(), "{}", r.text);
    let r = login_with(&s, &email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["emailVerified"], true);
}

#[test]
fn registering_an_unverified_address_again_replaces_password_and_name_and_kills_the_first_link() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let email = unique_email("takeover");
    assert_accepted(&register_with(&s, &email, PASSWORD, Some("First")));
    let first = verify_token(mail.path(), &email, 1);
    assert_accepted(&register_with(&s, &email, NEW_PASSWORD, Some("Second")));
    let second = verify_token(mail.path(), &email, 2);
    assert_ne!(first, second);

    verify(&s, &first).assert_error(400, "TOKEN_INVALID");
    assert_eq!(verified(&s, &email), "no");
    let r = verify(&s, &second);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["name"], "Second", "{}", r.text);

    login_with(&s, &email, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    let r = login_with(&s, &email, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["name"], "Second");
    // Still one account.
    let rows = s.query_column(
        "SELECT CAST(id AS TEXT) FROM users WHERE email = ?1",
        &[&email],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn resend_answers_202_alike_for_every_address_and_kills_the_previous_link() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let pending = unique_email("pending");
    let verified = unique_email("verified");
    let unknown = unique_email("unknown");
    create_user(s.dir.path(), &verified, PASSWORD);
    assert_accepted(&register_with(&s, &pending, PASSWORD, None));
    let older = verify_token(mail.path(), &pending, 1);

    let first = resend(&s, &pending);
    assert_accepted(&first);
    let (to_verified, to_unknown) = (resend(&s, &verified), resend(&s, &unknown));
    assert_alike(&first, &[&to_verified, &to_unknown]);
    let newer = verify_token(mail.path(), &pending, 2);
    assert!(outbox_kinds(&s, &verified).is_empty());
    assert!(outbox_kinds(&s, &unknown).is_empty());

    verify(&s, &older).assert_error(400, "TOKEN_INVALID");
    let r = verify(&s, &newer);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(login_with(&s, &pending, PASSWORD).status, 200);

    let reasons: Vec<String> = audit(&s, &["--event", "verify_email_request"])
        .iter()
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect();
    assert!(reasons.iter().any(|r| r == "unknown_email"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "queued"), "{reasons:?}");

    let r = resend(&s, "not-an-address");
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(detail_fields(&r), ["email"], "{}", r.text);
    // Without a mail transport there is nothing to resend.
    let none = TestServer::start();
    resend(&none, &unique_email("none")).assert_error(404, "NOT_FOUND");
}

#[test]
fn a_link_verifies_only_the_account_and_address_it_was_made_for() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    // The address changed since the link was mailed.
    let (old, new) = (unique_email("moved-old"), unique_email("moved-new"));
    assert_accepted(&register_with(&s, &old, PASSWORD, None));
    let token = verify_token(mail.path(), &old, 1);
    users(&s, &["users", "set-email", &old, &new]).ok();
    verify(&s, &token).assert_error(400, "TOKEN_INVALID");

    // Another account that registered the same address later.
    let email = unique_email("again");
    assert_accepted(&register_with(&s, &email, PASSWORD, None));
    let first = verify_token(mail.path(), &email, 1);
    users(&s, &["users", "delete", &email, "--yes"]).ok();
    assert_accepted(&register_with(&s, &email, NEW_PASSWORD, None));
    let second = verify_token(mail.path(), &email, 2);
    verify(&s, &first).assert_error(400, "TOKEN_INVALID");
    assert_eq!(verified(&s, &email), "no");
    assert_eq!(verify(&s, &second).status, 200);
    assert_eq!(login_with(&s, &email, NEW_PASSWORD).status, 200);
}

#[test]
fn users_verify_email_verifies_and_users_list_shows_unverified() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let email = unique_email("cli-verify");
    assert_accepted(&register_with(&s, &email, PASSWORD, None));
    assert_eq!(listed_state(&s, &email), "unverified");
    login_with(&s, &email, PASSWORD).assert_error(403, "EMAIL_NOT_VERIFIED");

    let out = users(&s, &["users", "verify-email", &email.to_uppercase()]);
    assert!(out.ok().contains(&email), "{out:#?}");
    assert_eq!(listed_state(&s, &email), "active");
    assert_eq!(account(&s, &email)["emailVerified"], true);
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);

    let line = users(&s, &["users", "verify-email", &unique_email("nobody")]).error_line();
    assert!(line.contains("no such user"), "{line}");
    let events = audit(&s, &["--event", "email_verified"]);
    assert!(events.iter().any(|e| e["actor"] == "cli"), "{events:?}");
}

#[test]
fn the_admin_route_verifies_an_account() {
    let mail = tempfile::tempdir().unwrap();
    let s = mail_server(mail.path(), &[REQUIRED]);
    let (_, admin) = admin_token(&s);
    let email = unique_email("api-verify");
    assert_accepted(&register_with(&s, &email, PASSWORD, None));
    let before = account(&s, &email);
    assert_eq!(before["emailVerified"], false, "{before}");
    let id = before["id"].as_str().unwrap().to_string();
    let post = |target: &str, token: &str| {
        send(
            s.post(&format!("/api/admin/users/{target}/verify-email"))
                .bearer_auth(token)
                .json(&json!({})),
        )
    };
    post(&uuid::Uuid::new_v4().to_string(), &admin).assert_error(404, "NOT_FOUND");

    let r = post(&id, &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    let user = &r.body["data"]["user"];
    assert_eq!(user["emailVerified"], true, "{}", r.text);
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["id"], id.as_str());
    let logged = login_with(&s, &email, PASSWORD);
    assert_eq!(logged.status, 200, "{}", logged.text);
    let own = logged.body["data"]["accessToken"].as_str().unwrap();
    post(&id, own).assert_error(403, "FORBIDDEN");
}

#[test]
fn cleanup_deletes_accounts_still_unverified_after_their_ttl() {
    let mail = tempfile::tempdir().unwrap();
    let extra = [REQUIRED, ("AUTHD_EMAIL__UNVERIFIED_TTL", "1s")];
    let s = mail_server(mail.path(), &extra);
    let env = mail_settings(mail.path(), &extra);
    let (stale, proven, made) = (
        unique_email("stale"),
        unique_email("proven"),
        unique_email("made"),
    );
    assert_accepted(&register_with(&s, &stale, PASSWORD, None));
    assert_accepted(&register_with(&s, &proven, PASSWORD, None));
    create_user(s.dir.path(), &made, PASSWORD);
    assert_eq!(
        verify(&s, &verify_token(mail.path(), &proven, 1)).status,
        200
    );
    std::thread::sleep(Duration::from_millis(2100));

    cli(&s, &env, &["cleanup-tokens"]).ok();
    let line = users(&s, &["users", "show", &stale]).error_line();
    assert!(line.contains("no such user"), "{line}");
    assert_eq!(login_with(&s, &proven, PASSWORD).status, 200);
    assert_eq!(login_with(&s, &made, PASSWORD).status, 200);
    // The address is free again.
    assert_accepted(&register_with(&s, &stale, NEW_PASSWORD, None));
    assert_eq!(verified(&s, &stale), "no");
}

#[test]
fn without_the_requirement_cleanup_deletes_no_unverified_account() {
    let mail = tempfile::tempdir().unwrap();
    let extra = [("AUTHD_EMAIL__UNVERIFIED_TTL", "1s")];
    let s = mail_server(mail.path(), &extra);
    let env = mail_settings(mail.path(), &extra);
    let email = unique_email("kept");
    assert_eq!(s.register(&email)["user"]["emailVerified"], false);
    std::thread::sleep(Duration::from_millis(2100));
    cli(&s, &env, &["cleanup-tokens"]).ok();
    assert_eq!(verified(&s, &email), "no");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
}
