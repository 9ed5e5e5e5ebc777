//! The revoked-session feed, `GET /.well-known/revoked-sessions` (contract 12.1), over HTTP:
//! every way a session ends shows up (with the `exp` of its newest access token), the cursor
//! returns only what is new, malformed and old cursors are 400, the cache header follows
//! `revocation_feed.poll_after`, entries leave once `exp + leeway` has passed and
//! `cleanup-tokens` deletes their rows, and a revocation at one instance is in the feed of
//! another on the same database at once.

use std::collections::BTreeSet;

use base64::Engine;
use serde_json::{json, Value};

use crate::admin_cli::{admin_token, users};
use crate::cli::{authd_on, run};
use crate::support::*;

const FEED: &str = "/.well-known/revoked-sessions";

fn feed(s: &TestServer, since: Option<&str>) -> Resp {
    let mut req = s.get(FEED);
    if let Some(c) = since {
        req = req.query(&[("since", c)]);
    }
    send(req)
}

/// The feed's answer (asserting 200 and its shape): the entries and the cursor.
fn entries(r: &Resp) -> (Vec<(String, i64)>, String) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body), ["cursor", "pollAfter", "revoked"].into());
    let revoked = r.body["revoked"]
        .as_array()
        .unwrap_or_else(|| panic!("revoked is an array: {}", r.text))
        .iter()
        .map(|e| {
            // Nothing but the session id and exp: no email, user id or IP.
            assert_eq!(keys_of(e), ["exp", "sid"].into(), "{e}");
            (
                e["sid"].as_str().unwrap().to_string(),
                e["exp"].as_i64().unwrap(),
            )
        })
        .collect();
    let cursor = r.body["cursor"].as_str().expect("cursor").to_string();
    (revoked, cursor)
}

/// The sids of the whole feed (no cursor).
fn feed_sids(s: &TestServer) -> BTreeSet<String> {
    entries(&feed(s, None)).0.into_iter().map(|e| e.0).collect()
}

/// The claims of an access token (not verified: the server made it).
fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn access(data: &Value) -> String {
    data["accessToken"].as_str().unwrap().to_string()
}

fn refresh(data: &Value) -> String {
    data["refreshToken"].as_str().unwrap().to_string()
}

fn sid(data: &Value) -> String {
    claims(&access(data))["sid"].as_str().unwrap().to_string()
}

fn exp(data: &Value) -> i64 {
    claims(&access(data))["exp"].as_i64().unwrap()
}

fn user_id(data: &Value) -> String {
    data["user"]["id"].as_str().unwrap().to_string()
}

fn post_auth(s: &TestServer, path: &str, token: &str, body: Option<Value>) -> Resp {
    let req = s.post(path).bearer_auth(token);
    send(match body {
        Some(b) => req.json(&b),
        None => req,
    })
}

/// Asserts that the feed lists `data`'s session with the `exp` of `data`'s access token (the
/// session's newest), and that the entry says nothing else about it.
#[track_caller]
fn assert_listed(s: &TestServer, data: &Value, how: &str) {
    let r = feed(s, None);
    let (revoked, _) = entries(&r);
    let sid = sid(data);
    let found: Vec<_> = revoked.iter().filter(|(s, _)| *s == sid).collect();
    assert_eq!(found.len(), 1, "{how}: {sid} once in {}", r.text);
    assert_eq!(found[0].1, exp(data), "{how}: exp of the newest token");
    for private in [&data["user"]["email"], &data["user"]["id"]] {
        if let Some(p) = private.as_str() {
            assert!(!r.text.contains(p), "{how}: {p} in {}", r.text);
        }
    }
}

#[test]
fn every_way_a_session_ends_is_in_the_feed() {
    let s = TestServer::start();
    let (_, admin) = admin_token(&s);
    assert!(feed_sids(&s).is_empty(), "nothing revoked yet");

    // Logout.
    let email = unique_email("logout");
    let data = s.register(&email);
    let r = s.post_json("/api/auth/logout", json!({"refreshToken": refresh(&data)}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &data, "logout");

    // Logout-all: both sessions.
    let email = unique_email("logout-all");
    let (first, second) = (s.register(&email), s.login(&email));
    let r = post_auth(&s, "/api/auth/logout-all", &access(&second), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &first, "logout-all (other session)");
    assert_listed(&s, &second, "logout-all (own session)");

    // Session delete.
    let email = unique_email("session-delete");
    let (keep, gone) = (s.register(&email), s.login(&email));
    let r = send(
        s.delete(&format!("/api/auth/sessions/{}", sid(&gone)))
            .bearer_auth(access(&keep)),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &gone, "session delete");
    assert!(!feed_sids(&s).contains(&sid(&keep)), "the live one is not");

    // Reuse detection: the entry carries the exp of the token the rotation issued.
    let email = unique_email("reuse");
    let first = s.register(&email);
    let rotated = s.refresh(&refresh(&first));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let rotated = rotated.body["data"].clone();
    assert!(
        !feed_sids(&s).contains(&sid(&first)),
        "a rotation revokes nothing"
    );
    s.refresh(&refresh(&first))
        .assert_error(401, "TOKEN_REVOKED");
    assert_listed(&s, &rotated, "reuse detection");

    // Password change: the other session.
    let email = unique_email("password");
    let (other, current) = (s.register(&email), s.login(&email));
    let r = post_auth(
        &s,
        "/api/auth/password",
        &access(&current),
        Some(json!({"currentPassword": PASSWORD, "newPassword": "Another-horse-10"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &other, "password change");
    assert!(!feed_sids(&s).contains(&sid(&current)));

    // Admin revocation over HTTP, and `revoke-sessions` from the CLI.
    let data = s.register(&unique_email("admin-revoke"));
    let r = send(
        s.delete(&format!("/api/admin/users/{}/sessions", user_id(&data)))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &data, "admin revocation");
    let data = s.register(&unique_email("cli-revoke"));
    users(
        &s,
        &["revoke-sessions", "--user-id", &user_id(&data), "--yes"],
    )
    .ok();
    assert_listed(&s, &data, "revoke-sessions");

    // Disable, role change, delete (the sessions cascade with the user).
    let data = s.register(&unique_email("disable"));
    let r = post_auth(
        &s,
        &format!("/api/admin/users/{}/disable", user_id(&data)),
        &admin,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &data, "disable");
    let data = s.register(&unique_email("role"));
    let r = post_auth(
        &s,
        &format!("/api/admin/users/{}/role", user_id(&data)),
        &admin,
        Some(json!({"role": "admin"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &data, "role change");
    let data = s.register(&unique_email("delete"));
    let r = send(
        s.delete(&format!("/api/admin/users/{}", user_id(&data)))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_listed(&s, &data, "delete user");
    let data = s.register(&unique_email("cli-delete"));
    users(&s, &["users", "delete", &user_id(&data), "--yes"]).ok();
    assert_listed(&s, &data, "users delete");

    // Paths other code adds (password reset, second factors, email change) end sessions the
    // same two ways, in SQL: setting revoked_at, or deleting the row.
    let data = s.register(&unique_email("sql-revoke"));
    let now = authd::domain::time::now_ms();
    s.execute_sql(
        &format!(
            "UPDATE sessions SET revoked_at = {now}, revoke_reason = 'other'
             WHERE CAST(id AS TEXT) = ?1"
        ),
        &[&sid(&data)],
    );
    assert_listed(&s, &data, "revoked_at set by any statement");
    let data = s.register(&unique_email("sql-delete"));
    s.execute_sql(
        "DELETE FROM sessions WHERE CAST(id AS TEXT) = ?1",
        &[&sid(&data)],
    );
    assert_listed(&s, &data, "a live session deleted");

    // Each ended session is listed once; the admin's own session is not.
    let sids = entries(&feed(&s, None)).0;
    let distinct: BTreeSet<_> = sids.iter().map(|e| e.0.clone()).collect();
    assert_eq!(distinct.len(), sids.len(), "{sids:?}");
    assert!(!distinct.contains(claims(&admin)["sid"].as_str().unwrap()));
}

#[test]
fn the_cursor_returns_only_what_was_revoked_since() {
    let s = TestServer::start();
    let (empty, c0) = entries(&feed(&s, None));
    assert!(empty.is_empty());

    let a = s.register(&unique_email("cursor-a"));
    s.post_json("/api/auth/logout", json!({"refreshToken": refresh(&a)}));
    let (new, c1) = entries(&feed(&s, Some(&c0)));
    assert_eq!(new, vec![(sid(&a), exp(&a))]);
    assert_ne!(c1, c0);
    let (none, c2) = entries(&feed(&s, Some(&c1)));
    assert!(none.is_empty(), "{none:?}");

    let b = s.register(&unique_email("cursor-b"));
    let c = s.register(&unique_email("cursor-c"));
    for d in [&b, &c] {
        s.post_json("/api/auth/logout", json!({"refreshToken": refresh(d)}));
    }
    // From the empty answer's cursor: both, in the order they were revoked.
    let (new, c3) = entries(&feed(&s, Some(&c2)));
    assert_eq!(new, vec![(sid(&b), exp(&b)), (sid(&c), exp(&c))]);
    assert!(entries(&feed(&s, Some(&c3))).0.is_empty());
    // An earlier cursor still answers everything after it; no cursor, everything.
    let (since_c1, _) = entries(&feed(&s, Some(&c1)));
    assert_eq!(since_c1.len(), 2);
    assert_eq!(entries(&feed(&s, None)).0.len(), 3);
}

#[test]
fn malformed_and_old_cursors_are_400() {
    let s = TestServer::with(&[("AUTHD_JWT__ACCESS_TTL", "1s"), ("AUTHD_JWT__LEEWAY", "0s")]);
    // Another cursor than this feed's is refused with the field named.
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("f1.1");
    for bad in ["", "garbage", "not base64!", "1", other.as_str()] {
        let r = feed(&s, Some(bad));
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["since"], "{bad}: {}", r.text);
    }
    // A cursor from ahead of this feed (another database's) too.
    let elsewhere = TestServer::start();
    let data = elsewhere.register(&unique_email("elsewhere"));
    elsewhere.post_json("/api/auth/logout", json!({"refreshToken": refresh(&data)}));
    let (_, ahead) = entries(&feed(&elsewhere, None));
    feed(&s, Some(&ahead)).assert_error(400, "VALIDATION_ERROR");
    // Older than access_ttl + leeway (1 s) once that has passed.
    let (_, cursor) = entries(&feed(&s, None));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = feed(&s, Some(&cursor));
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(detail_fields(&r), ["since"]);
    // Starting again without since works.
    entries(&feed(&s, None));
}

#[test]
fn the_feed_is_cacheable_for_poll_after_and_can_be_turned_off() {
    let s = TestServer::start();
    let r = feed(&s, None);
    entries(&r);
    assert_eq!(r.body["pollAfter"], 5);
    assert_eq!(r.header("cache-control"), Some("public, max-age=5"));
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));

    let s = TestServer::with(&[("AUTHD_REVOCATION_FEED__POLL_AFTER", "2s")]);
    let r = feed(&s, None);
    assert_eq!(r.body["pollAfter"], 2, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("public, max-age=2"));

    let s = TestServer::with(&[("AUTHD_REVOCATION_FEED__ENABLED", "false")]);
    feed(&s, None).assert_error(404, "NOT_FOUND");
    feed(&s, Some("anything")).assert_error(404, "NOT_FOUND");
}

#[test]
fn entries_leave_after_exp_and_leeway_and_cleanup_deletes_their_rows() {
    let ttl = [
        ("AUTHD_JWT__ACCESS_TTL", "5s"),
        ("AUTHD_JWT__LEEWAY", "1s"),
        ("AUTHD_CLEANUP__RETENTION", "0s"),
    ];
    let s = TestServer::with(&ttl);
    let (a, b) = (
        s.register(&unique_email("leave-a")),
        s.register(&unique_email("leave-b")),
    );
    for d in [&a, &b] {
        s.post_json("/api/auth/logout", json!({"refreshToken": refresh(d)}));
    }
    let (listed, _) = entries(&feed(&s, None));
    assert_eq!(listed, vec![(sid(&a), exp(&a)), (sid(&b), exp(&b))]);
    let rows = || s.query_column("SELECT COUNT(*) FROM revoked_sessions", &[]);
    assert_eq!(rows(), ["2"]);

    // Until exp + leeway has passed, nothing to clean up.
    let cleanup = |dry: bool| {
        let mut cmd = authd_on(s.dir.path());
        cmd.arg("cleanup-tokens");
        if dry {
            cmd.arg("--dry-run");
        }
        for (k, v) in ttl {
            cmd.env(k, v);
        }
        run(&mut cmd, None).ok().to_string()
    };
    assert!(
        cleanup(true).contains(", 0 revoked-session feed row(s)"),
        "{}",
        cleanup(true)
    );

    // Past the later exp + leeway (+ one second of rounding): gone from the feed. Cleanup
    // deletes a row once it was issued more than access_ttl + leeway + 1 s ago, measured in
    // milliseconds while exp is in whole seconds: one more second so that holds whatever the
    // millisecond the tokens were issued at.
    let last = exp(&a).max(exp(&b)) + 1;
    let wait_ms = (last + 2) * 1000 - authd::domain::time::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(wait_ms.max(0) as u64));
    let (listed, _) = entries(&feed(&s, None));
    assert!(listed.is_empty(), "{listed:?}");

    // cleanup-tokens deletes the rows, but keeps the newest (the cursor's high-water mark).
    let out = cleanup(true);
    assert!(out.starts_with("would delete"), "{out}");
    assert!(out.contains(", 1 revoked-session feed row(s)"), "{out}");
    assert_eq!(rows(), ["2"], "a dry run deletes nothing");
    let out = cleanup(false);
    assert!(out.contains(", 1 revoked-session feed row(s)"), "{out}");
    assert_eq!(rows(), ["1"]);
    assert!(cleanup(false).contains(", 0 revoked-session feed row(s)"));
}

#[test]
fn a_revocation_at_one_instance_is_in_the_feed_of_the_other() {
    let a = TestServer::start();
    let b = TestServer::beside(&a, &[]);
    let (_, cursor_b) = entries(&feed(&b, None));

    let email = unique_email("two-instances");
    let (one, two) = (a.register(&email), b.login(&email));
    let r = post_auth(&a, "/api/auth/logout-all", &access(&one), None);
    assert_eq!(r.status, 200, "{}", r.text);
    // Read from the database on every request: no wait.
    let (new, cursor) = entries(&feed(&b, Some(&cursor_b)));
    let sids: BTreeSet<_> = new.iter().map(|e| e.0.clone()).collect();
    assert_eq!(sids, [sid(&one), sid(&two)].into());
    // A cursor of one instance is good at the other.
    assert!(entries(&feed(&a, Some(&cursor))).0.is_empty());
    b.get_auth("/api/auth/profile", &access(&two))
        .assert_error(401, "TOKEN_REVOKED");
}
