//! Purging never weakens a security check (contract section 9): neither `authd
//! cleanup-tokens` nor `serve`'s background cleanup deletes a rotated-away refresh token of
//! a live session (reuse detection outlives every `cleanup.retention`), nor a failed-login
//! counter whose window or lock still runs (a purge must not hand a guesser a fresh budget).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{authd_on, count, run};
use crate::support::*;

const WRONG: &str = "Wrong-horse-1!";

fn refresh_token(data: &Value) -> String {
    data["refreshToken"].as_str().unwrap().to_string()
}

/// `authd cleanup-tokens` on the database of `dir`, with `retention` (None: the default).
fn cleanup_tokens(dir: &Path, retention: Option<&str>) -> String {
    let mut cmd = authd_on(dir);
    cmd.arg("cleanup-tokens");
    if let Some(r) = retention {
        cmd.env("AUTHD_CLEANUP__RETENTION", r);
    }
    run(&mut cmd, None).ok().to_string()
}

/// T0 (login), rotated into T1: presenting T0 again after the purge is still reuse, and the
/// reuse still revokes the session, so T1 dies too.
fn assert_reuse_detected(refresh: impl Fn(&str) -> Resp, t0: &str, t1: &str, what: &str) {
    let reused = refresh(t0);
    reused.assert_error(401, "TOKEN_REVOKED");
    let newest = refresh(t1);
    assert_eq!(
        newest.status, 401,
        "{what}: the session was revoked: {}",
        newest.text
    );
    newest.assert_error(401, "TOKEN_REVOKED");
}

#[test]
fn cleanup_tokens_keeps_rotated_away_tokens_of_live_sessions_at_any_retention() {
    for retention in [Some("0s"), Some("1s"), None] {
        let s = TestServer::start();
        let email = unique_email("purge-reuse");
        s.register(&email);
        let t0 = refresh_token(&s.login(&email));
        let rotated = s.refresh(&t0);
        assert_eq!(rotated.status, 200, "{}", rotated.text);
        let t1 = refresh_token(&rotated.body["data"]);
        // A dead session beside it, so the purge has something to delete.
        let gone = refresh_token(&s.login(&email));
        let out = s.post_json("/api/auth/logout", json!({"refreshToken": gone}));
        assert_eq!(out.status, 200, "{}", out.text);
        // Past a retention of one second.
        thread::sleep(Duration::from_millis(1100));

        let sessions = || -> i64 {
            s.query_column("SELECT COUNT(*) FROM sessions", &[])[0]
                .parse()
                .unwrap()
        };
        let before = sessions();
        let printed = cleanup_tokens(s.dir.path(), retention);
        if retention.is_some() {
            assert_eq!(sessions(), before - 1, "the dead session went: {printed}");
        }
        assert_reuse_detected(
            |t| s.refresh(t),
            &t0,
            &t1,
            &format!("retention {retention:?}"),
        );
    }
}

#[test]
fn cleanup_tokens_never_resets_a_running_failed_login_budget_or_lockout() {
    let s = TestServer::with(&[
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "100000"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
        ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let (spent, locked, counting) = (
        unique_email("purge-ip"),
        unique_email("purge-locked"),
        unique_email("purge-counting"),
    );
    for e in [&spent, &locked, &counting] {
        s.register(e);
    }
    let login = |from: &str, email: &str, password: &str| {
        send(
            s.post("/api/auth/login")
                .header("x-forwarded-for", from)
                .json(&json!({"email": email, "password": password})),
        )
    };
    // Client A spends its budget (on accounts that do not exist, so none of them locks); B
    // locks one account; C starts counting against another.
    for _ in 0..3 {
        login("203.0.113.1", &unique_email("purge-ghost"), WRONG)
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    for from in ["203.0.113.2", "203.0.113.2", "203.0.113.3"] {
        login(from, &locked, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    for from in ["203.0.113.4", "203.0.113.5"] {
        login(from, &counting, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    thread::sleep(Duration::from_millis(1100));
    for retention in ["0s", "1s"] {
        cleanup_tokens(s.dir.path(), Some(retention));
    }
    login("203.0.113.1", &spent, PASSWORD).assert_error(429, "RATE_LIMITED");
    login("203.0.113.6", &locked, PASSWORD).assert_error(423, "ACCOUNT_LOCKED");
    // The counting account had 2 failures; one more locks it.
    login("203.0.113.7", &counting, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    login("203.0.113.8", &counting, PASSWORD).assert_error(423, "ACCOUNT_LOCKED");
}

/// Waits until `serve` has logged its background cleanup `n` more times than `seen`.
fn wait_for_cleanups(server: &ServeProcess, seen: usize, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = server.output().matches("background cleanup").count();
        if done >= seen + n {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "no background cleanup: {}",
            server.output()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_background_cleanup_keeps_reuse_detection_and_running_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::spawn(
        dir.path(),
        &[
            ("AUTHD_CLEANUP__INTERVAL", "1s"),
            ("AUTHD_CLEANUP__RETENTION", "0s"),
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
            ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
        ],
    );
    let client = reqwest::blocking::Client::new();
    let post = |path: &str, body: Value| send(client.post(server.url(path)).json(&body));
    let email = unique_email("purge-serve");
    let reg = post(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let t0 = refresh_token(&reg.body["data"]);
    let rotated = post("/api/auth/refresh", json!({"refreshToken": t0}));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let t1 = refresh_token(&rotated.body["data"]);
    let gone = post(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    let out = post(
        "/api/auth/logout",
        json!({"refreshToken": refresh_token(&gone.body["data"])}),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    for _ in 0..3 {
        post(
            "/api/auth/login",
            json!({"email": email, "password": WRONG}),
        )
        .assert_error(401, "INVALID_CREDENTIALS");
    }

    let db = dir.path().join("data/authd.db");
    let seen = wait_for_cleanups(&server, 0, 0);
    let mut done = wait_for_cleanups(&server, seen, 2);
    // The purge did run: the logged-out session is gone.
    while count(&db, "SELECT COUNT(*) FROM sessions") != 1 {
        done = wait_for_cleanups(&server, done, 1);
    }
    let r = post(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    r.assert_error(429, "RATE_LIMITED");
    assert_reuse_detected(
        |t| post("/api/auth/refresh", json!({"refreshToken": t})),
        &t0,
        &t1,
        "background cleanup",
    );
}
