//! Email change (CONTRACT 10.5): the request with the current password, the mailed links (the
//! `file` transport), confirmations recorded until the last one moves the address in one
//! transaction, sessions, races, cancel, and the admin's `users set-email` and
//! `POST /api/admin/users/{id}/email`. Every test runs on SQLite and, with
//! `AUTHD_TEST_DATABASE=postgres`, on PostgreSQL.

use std::path::Path;

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, users};
use crate::mail::{file_settings, refs, store_of, LINK_BASE};
use crate::password_reset::{mails, wait_mail};
use crate::support::*;

const NEW_LINK: &str = "Subject: Confirm your new email address";
const OLD_LINK: &str = "Subject: Confirm the change of your email address";
const NOTICE: &str = "Subject: Your email address is being changed";
const WRONG: &str = "Wrong-horse-1!";

/// A server with the `file` transport into `dir` and `extra`.
fn server(dir: &Path, extra: &[(&'static str, &'static str)]) -> TestServer {
    let mut settings = file_settings(dir);
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    TestServer::with(&refs(&settings))
}

fn access(data: &Value) -> String {
    data["accessToken"].as_str().unwrap().to_string()
}

fn request(s: &TestServer, access: &str, new_email: &str, password: &str) -> Resp {
    send(
        s.post("/api/auth/email")
            .bearer_auth(access)
            .json(&json!({"newEmail": new_email, "currentPassword": password})),
    )
}

fn confirm(s: &TestServer, token: &str) -> Resp {
    s.post_json("/api/auth/email/confirm", json!({ "token": token }))
}

fn login(s: &TestServer, email: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
}

/// The token of a mail's link (`...#token=<token>`).
fn token_of(eml: &str) -> String {
    let link = eml
        .lines()
        .find(|l| l.starts_with(LINK_BASE))
        .unwrap_or_else(|| panic!("no link in {eml}"));
    assert!(link.starts_with(&format!("{LINK_BASE}/confirm-email-change#token=")));
    link.trim().rsplit("#token=").next().unwrap().to_string()
}

fn pending_rows(s: &TestServer, user_id: &str) -> usize {
    s.query_column(
        "SELECT CAST(new_email AS TEXT) FROM email_changes WHERE CAST(user_id AS TEXT) = ?1",
        &[user_id],
    )
    .len()
}

/// Whether the user's address is marked verified (`yes` / `no`).
fn verified(s: &TestServer, user_id: &str) -> String {
    s.query_column(
        "SELECT CASE WHEN email_verified THEN 'yes' ELSE 'no' END FROM users
         WHERE CAST(id AS TEXT) = ?1",
        &[user_id],
    )
    .pop()
    .unwrap_or_default()
}

/// Marks the user's address unverified (as a self-registration with verification would).
fn unverify(s: &TestServer, user_id: &str) {
    s.execute_sql(
        "UPDATE users SET email_verified = FALSE WHERE CAST(id AS TEXT) = ?1",
        &[user_id],
    );
    assert_eq!(verified(s, user_id), "no");
}

#[test]
fn two_confirmations_move_the_address_and_keep_only_the_requesting_session() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[]);
    let (old, new) = (unique_email("change-old"), unique_email("change-new"));
    let me = s.register(&old);
    let other = s.login(&old);
    unverify(&s, me["user"]["id"].as_str().unwrap());

    let r = request(&s, &access(&me), &new.to_uppercase(), PASSWORD);
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["data"]["pendingEmail"], new.as_str());
    let new_token = token_of(&wait_mail(mail.path(), &new, NEW_LINK, 1));
    let old_mail = wait_mail(mail.path(), &old, OLD_LINK, 1);
    assert!(
        old_mail.contains(&new),
        "the old address is told the new one"
    );
    let old_token = token_of(&old_mail);

    // Pending: the old address logs in, the new one does not.
    assert_eq!(login(&s, &old).status, 200);
    login(&s, &new).assert_error(401, "INVALID_CREDENTIALS");

    let first = confirm(&s, &new_token);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["data"]["complete"], false);
    assert_eq!(first.body["data"]["user"]["email"], old.as_str());
    assert_eq!(login(&s, &old).status, 200);
    login(&s, &new).assert_error(401, "INVALID_CREDENTIALS");
    confirm(&s, &new_token).assert_error(400, "TOKEN_INVALID");

    let last = confirm(&s, &old_token);
    assert_eq!(last.status, 200, "{}", last.text);
    assert_eq!(last.body["data"]["complete"], true);
    assert_eq!(last.body["data"]["user"]["email"], new.as_str());
    assert_eq!(verified(&s, me["user"]["id"].as_str().unwrap()), "yes");
    assert!(last.body["data"].get("accessToken").is_none());

    login(&s, &old).assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(login(&s, &new).status, 200);
    // The requester's session stays; every other one (logins included) is revoked.
    let profile = s.get_auth("/api/auth/profile", &access(&me));
    assert_eq!(profile.status, 200, "{}", profile.text);
    assert_eq!(profile.body["data"]["user"]["email"], new.as_str());
    s.get_auth("/api/auth/profile", &access(&other))
        .assert_error(401, "TOKEN_REVOKED");
    confirm(&s, &old_token).assert_error(400, "TOKEN_INVALID");
    let id = me["user"]["id"].as_str().unwrap();
    assert_eq!(pending_rows(&s, id), 0);
    let events = s.query_column(
        "SELECT event FROM audit_events WHERE CAST(user_id AS TEXT) = ?1",
        &[id],
    );
    for e in ["email_change_request", "email_change"] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }
}

#[test]
fn without_the_old_confirmation_one_link_completes_and_the_old_address_gets_a_notice() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[("AUTHD_EMAIL__CHANGE_CONFIRM_OLD", "false")]);
    let (old, new) = (unique_email("one-old"), unique_email("one-new"));
    let me = s.register(&old);
    assert_eq!(request(&s, &access(&me), &new, PASSWORD).status, 202);
    let token = token_of(&wait_mail(mail.path(), &new, NEW_LINK, 1));
    let notice = wait_mail(mail.path(), &old, NOTICE, 1);
    assert!(
        !notice.contains(LINK_BASE),
        "a notice has no link: {notice}"
    );
    assert!(mails(mail.path(), &old, OLD_LINK).is_empty());

    let r = confirm(&s, &token);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["complete"], true);
    assert_eq!(r.body["data"]["user"]["email"], new.as_str());
    assert_eq!(login(&s, &new).status, 200);
}

#[test]
fn a_wrong_password_is_401_and_counts_toward_the_lockout() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(
        mail.path(),
        &[
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "10000"),
            ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
            ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "2"),
        ],
    );
    let old = unique_email("lock-old");
    let me = s.register(&old);
    for _ in 0..2 {
        let r = request(&s, &access(&me), &unique_email("lock-new"), WRONG);
        r.assert_error(401, "INVALID_CREDENTIALS");
        assert!(r
            .header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Bearer"));
    }
    request(&s, &access(&me), &unique_email("lock-new"), PASSWORD)
        .assert_error(423, "ACCOUNT_LOCKED");
    login(&s, &old).assert_error(423, "ACCOUNT_LOCKED");
    assert_eq!(pending_rows(&s, me["user"]["id"].as_str().unwrap()), 0);
}

#[test]
fn a_taken_or_invalid_address_is_refused() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[]);
    let (mine, theirs) = (unique_email("taken-me"), unique_email("taken-them"));
    let me = s.register(&mine);
    s.register(&theirs);
    request(&s, &access(&me), &theirs.to_uppercase(), PASSWORD).assert_error(409, "EMAIL_TAKEN");
    for bad in ["not-an-address", "", &mine] {
        let r = request(&s, &access(&me), bad, PASSWORD);
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["newEmail"], "{}", r.text);
    }
    let r =
        send(s.post("/api/auth/email").bearer_auth(access(&me)).json(
            &json!({"newEmail": unique_email("x"), "currentPassword": PASSWORD, "extra": 1}),
        ));
    r.assert_error(400, "VALIDATION_ERROR");
    send(
        s.post("/api/auth/email")
            .json(&json!({"newEmail": "a@b.io", "currentPassword": "x"})),
    )
    .assert_error(401, "TOKEN_MISSING");
    assert_eq!(pending_rows(&s, me["user"]["id"].as_str().unwrap()), 0);
}

#[test]
fn an_address_taken_before_the_last_confirmation_is_409_and_drops_the_change() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[]);
    let (old, new) = (unique_email("race-old"), unique_email("race-new"));
    let me = s.register(&old);
    let id = me["user"]["id"].as_str().unwrap();
    assert_eq!(request(&s, &access(&me), &new, PASSWORD).status, 202);
    let new_token = token_of(&wait_mail(mail.path(), &new, NEW_LINK, 1));
    let old_token = token_of(&wait_mail(mail.path(), &old, OLD_LINK, 1));
    assert_eq!(confirm(&s, &new_token).body["data"]["complete"], false);
    // Someone registers the address before the last confirmation.
    s.register(&new);
    confirm(&s, &old_token).assert_error(409, "EMAIL_TAKEN");
    assert_eq!(pending_rows(&s, id), 0);
    assert_eq!(login(&s, &old).status, 200);
    let profile = s.get_auth("/api/auth/profile", &access(&me));
    assert_eq!(profile.body["data"]["user"]["email"], old.as_str());
}

#[test]
fn concurrent_confirmations_of_one_token_give_one_success() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[("AUTHD_EMAIL__CHANGE_CONFIRM_OLD", "false")]);
    let (old, new) = (unique_email("conc-old"), unique_email("conc-new"));
    let me = s.register(&old);
    assert_eq!(request(&s, &access(&me), &new, PASSWORD).status, 202);
    let token = token_of(&wait_mail(mail.path(), &new, NEW_LINK, 1));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| confirm(&s, &token).status))
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
    assert_eq!(login(&s, &new).status, 200);
}

#[test]
fn cancel_and_a_newer_request_kill_the_pending_links() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[("AUTHD_EMAIL__CHANGE_CONFIRM_OLD", "false")]);
    let old = unique_email("cancel-old");
    let (first, second) = (unique_email("cancel-a"), unique_email("cancel-b"));
    let me = s.register(&old);
    let id = me["user"]["id"].as_str().unwrap();

    assert_eq!(request(&s, &access(&me), &first, PASSWORD).status, 202);
    let stale = token_of(&wait_mail(mail.path(), &first, NEW_LINK, 1));
    // A newer request replaces the older one: its link is dead.
    assert_eq!(request(&s, &access(&me), &second, PASSWORD).status, 202);
    let live = token_of(&wait_mail(mail.path(), &second, NEW_LINK, 1));
    confirm(&s, &stale).assert_error(400, "TOKEN_INVALID");
    assert_eq!(pending_rows(&s, id), 1);

    let r = send(s.post("/api/auth/email/cancel").bearer_auth(access(&me)));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(pending_rows(&s, id), 0);
    confirm(&s, &live).assert_error(400, "TOKEN_INVALID");
    assert_eq!(login(&s, &old).status, 200);
    send(s.post("/api/auth/email/cancel")).assert_error(401, "TOKEN_MISSING");
}

#[test]
fn a_password_change_kills_the_email_change_links() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[]);
    let (old, new) = (unique_email("pw-old"), unique_email("pw-new"));
    let me = s.register(&old);
    assert_eq!(request(&s, &access(&me), &new, PASSWORD).status, 202);
    let new_token = token_of(&wait_mail(mail.path(), &new, NEW_LINK, 1));
    let old_token = token_of(&wait_mail(mail.path(), &old, OLD_LINK, 1));
    let r = send(
        s.post("/api/auth/password")
            .bearer_auth(access(&me))
            .json(&json!({"currentPassword": PASSWORD, "newPassword": "Battery-staple-7"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    confirm(&s, &new_token).assert_error(400, "TOKEN_INVALID");
    confirm(&s, &old_token).assert_error(400, "TOKEN_INVALID");
    assert_eq!(pending_rows(&s, me["user"]["id"].as_str().unwrap()), 0);
}

#[test]
fn an_email_change_token_confirms_nothing_else_and_no_other_token_confirms_a_change() {
    use authd::crypto::one_time::hash;
    use authd::domain::one_time::{Consumed, NewOneTimeToken, Purpose};
    use authd::domain::time::now_ms;

    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[("AUTHD_EMAIL__CHANGE_CONFIRM_OLD", "false")]);
    let (old, new) = (unique_email("purpose-old"), unique_email("purpose-new"));
    let me = s.register(&old);
    let id: uuid::Uuid = me["user"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(request(&s, &access(&me), &new, PASSWORD).status, 202);
    let token = token_of(&wait_mail(mail.path(), &new, NEW_LINK, 1));
    let store = store_of(&s);
    // The store's other purposes do not know it (a verification or a reset would not use it).
    for purpose in [Purpose::VerifyEmail, Purpose::PasswordReset] {
        assert_eq!(
            store
                .consume_one_time_token(purpose, &hash(&token), now_ms())
                .unwrap(),
            Consumed::Unknown
        );
    }
    // A reset token of the same user, mailed to the new address, confirms no change.
    let reset = "reset-token-that-is-not-an-email-change-token-000";
    store
        .issue_one_time_token(
            &NewOneTimeToken {
                token_hash: hash(reset),
                purpose: Purpose::PasswordReset,
                user_id: Some(id),
                address: Some(new.clone()),
                payload: None,
                created_at: now_ms(),
                expires_at: now_ms() + 600_000,
            },
            false,
        )
        .unwrap();
    confirm(&s, reset).assert_error(400, "TOKEN_INVALID");
    confirm(&s, "garbage").assert_error(400, "TOKEN_INVALID");
    // The real link still works.
    assert_eq!(confirm(&s, &token).body["data"]["complete"], true);
}

#[test]
fn without_a_mail_transport_the_request_is_404() {
    let s = TestServer::start();
    let me = s.register(&unique_email("none"));
    request(&s, &access(&me), &unique_email("none-new"), PASSWORD).assert_error(404, "NOT_FOUND");
}

#[test]
fn set_email_from_the_cli_and_the_admin_api() {
    let mail = tempfile::tempdir().unwrap();
    let s = server(mail.path(), &[]);
    let (old, new) = (unique_email("set-old"), unique_email("set-new"));
    let me = s.register(&old);
    let id = me["user"]["id"].as_str().unwrap().to_string();
    unverify(&s, &id);
    // A pending change is dropped by the admin's change.
    assert_eq!(
        request(&s, &access(&me), &unique_email("set-pending"), PASSWORD).status,
        202
    );

    let out = users(&s, &["users", "set-email", &old, &new.to_uppercase()]);
    assert_eq!(
        out.ok().trim(),
        format!("email of {old} is now {new}; revoked 1 session(s)")
    );
    assert_eq!(pending_rows(&s, &id), 0);
    s.get_auth("/api/auth/profile", &access(&me))
        .assert_error(401, "TOKEN_REVOKED");
    login(&s, &old).assert_error(401, "INVALID_CREDENTIALS");
    let logged = login(&s, &new);
    assert_eq!(logged.status, 200);
    assert_eq!(verified(&s, &id), "yes");

    let taken = unique_email("set-taken");
    s.register(&taken);
    let line = users(&s, &["users", "set-email", &new, &taken]).error_line();
    assert!(line.contains("already"), "{line}");
    assert_eq!(
        users(
            &s,
            &[
                "users",
                "set-email",
                &unique_email("nobody"),
                &unique_email("n")
            ]
        )
        .error_line(),
        "error: no such user"
    );

    let (_, admin) = admin_token(&s);
    let via_api = unique_email("set-api");
    let set = |target: &str, email: &str| {
        send(
            s.post(&format!("/api/admin/users/{target}/email"))
                .bearer_auth(&admin)
                .json(&json!({ "email": email })),
        )
    };
    let r = set(&id, &via_api);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["email"], via_api.as_str());
    assert_eq!(r.body["data"]["revokedSessions"], 1);
    set(&id, &taken).assert_error(409, "EMAIL_TAKEN");
    set(&id, "nope").assert_error(400, "VALIDATION_ERROR");
    set(&uuid::Uuid::new_v4().to_string(), &unique_email("z")).assert_error(404, "NOT_FOUND");
    send(
        s.post(&format!("/api/admin/users/{id}/email"))
            .bearer_auth(access(&login(&s, &via_api).body["data"]))
            .json(&json!({ "email": unique_email("self") })),
    )
    .assert_error(403, "FORBIDDEN");
    let events = users(&s, &["audit", "--json", "--event", "admin_set_email"]);
    let events: Value = serde_json::from_str(events.ok()).unwrap();
    let actors: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["userId"] == id.as_str())
        .map(|e| e["actor"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(actors.len(), 2, "{events}");
    assert!(actors.contains(&"cli".to_string()), "{actors:?}");
}
