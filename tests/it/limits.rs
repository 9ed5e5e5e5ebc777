//! Abuse limits over HTTP: the per-IP failed-login budget and request budget (429), the
//! per-email lockout (423) kept in the store, the client IP behind trusted proxies, and
//! login failures that do not reveal whether an account exists.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const WRONG: &str = "Wrong-horse-1!";

fn login_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

/// A login sent with an `X-Forwarded-For` header.
fn login_via(s: &TestServer, xff: &str, email: &str, password: &str) -> Resp {
    send(
        s.post("/api/auth/login")
            .header("x-forwarded-for", xff)
            .json(&json!({"email": email, "password": password})),
    )
}

/// `Retry-After` as whole seconds; fails the test when it is missing or not a number.
fn retry_after(r: &Resp) -> u64 {
    let raw = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {} {}", r.status, r.text));
    raw.parse()
        .unwrap_or_else(|_| panic!("Retry-After {raw:?} is not a number of seconds"))
}

fn assert_rate_limited(r: &Resp) {
    r.assert_error(429, "RATE_LIMITED");
    let secs = retry_after(r);
    assert!(secs > 0 && secs <= 15 * 60, "Retry-After {secs}");
}

fn assert_locked(r: &Resp, max_secs: u64) {
    r.assert_error(423, "ACCOUNT_LOCKED");
    let secs = retry_after(r);
    assert!(secs > 0 && secs <= max_secs, "Retry-After {secs}");
}

const ON: (&str, &str) = ("AUTHD_RATE_LIMIT__ENABLED", "true");
const MANY_REQUESTS: (&str, &str) = ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "10000");

#[test]
fn failed_login_budget_per_ip_answers_429_even_for_the_right_password() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
    ]);
    let email = unique_email("budget");
    s.register(&email);
    for i in 0..3 {
        let r = login_with(&s, &email, WRONG);
        r.assert_error(401, "INVALID_CREDENTIALS");
        assert!(
            r.header("retry-after").is_none(),
            "attempt {i}: {:?}",
            r.headers
        );
    }
    assert_rate_limited(&login_with(&s, &email, PASSWORD));
    // The budget is the client's, not the account's: another account from the same IP too.
    let other = unique_email("budget-other");
    s.register(&other);
    assert_rate_limited(&login_with(&s, &other, PASSWORD));
}

#[test]
fn successful_logins_do_not_count_as_failures() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "2"),
    ]);
    let email = unique_email("ok-logins");
    s.register(&email);
    for i in 0..12 {
        let r = login_with(&s, &email, PASSWORD);
        assert_eq!(r.status, 200, "login {i}: {}", r.text);
    }
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    for i in 0..5 {
        let r = login_with(&s, &email, PASSWORD);
        assert_eq!(r.status, 200, "login after one failure {i}: {}", r.text);
    }
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    assert_rate_limited(&login_with(&s, &email, PASSWORD));
}

#[test]
fn request_budget_limits_auth_routes_but_not_healthz() {
    let s = TestServer::with(&[ON, ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "5")]);
    let email = unique_email("requests");
    let data = s.register(&email);
    let access = data["accessToken"].as_str().unwrap();
    assert_eq!(s.get_auth("/api/auth/profile", access).status, 200);
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
    assert_eq!(s.get("/api/auth/profile").send().unwrap().status(), 401);
    assert_eq!(s.get_auth("/api/auth/sessions", access).status, 200);

    let sixth = s.get_auth("/api/auth/profile", access);
    assert_rate_limited(&sixth);
    assert_eq!(sixth.header("cache-control"), Some("no-store"));
    assert_rate_limited(&login_with(&s, &email, PASSWORD));
    assert_rate_limited(&s.refresh(data["refreshToken"].as_str().unwrap()));

    for i in 0..20 {
        let h = send(s.get("/healthz"));
        assert_eq!(h.status, 200, "healthz {i}: {}", h.text);
        assert_eq!(h.body, json!({"status": "ok"}));
    }
}

#[test]
fn lockout_after_threshold_failures_for_one_email_then_expires() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_DURATION", "2s"),
    ]);
    let locked = unique_email("locked");
    let bystander = unique_email("bystander");
    let ghost = unique_email("ghost");
    s.register(&locked);
    s.register(&bystander);

    for _ in 0..3 {
        login_with(&s, &locked, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    let locked_at = Instant::now();
    assert_locked(&login_with(&s, &locked, PASSWORD), 2);
    assert_locked(&login_with(&s, &locked, WRONG), 2);
    // The lock is on the normalised email, whatever its spelling.
    assert_locked(&login_with(&s, &locked.to_uppercase(), PASSWORD), 2);
    // Another account from the same client is unaffected.
    assert_eq!(login_with(&s, &bystander, PASSWORD).status, 200);

    // Counted whether or not the account exists.
    for _ in 0..3 {
        login_with(&s, &ghost, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_locked(&login_with(&s, &ghost, PASSWORD), 2);

    // After lockout_duration the right password works again (and the slate is clean).
    let wait = Duration::from_millis(2100).saturating_sub(locked_at.elapsed());
    std::thread::sleep(wait);
    let r = login_with(&s, &locked, PASSWORD);
    assert_eq!(r.status, 200, "after the lockout: {}", r.text);
    for _ in 0..2 {
        login_with(&s, &locked, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_eq!(login_with(&s, &locked, PASSWORD).status, 200);
}

/// Successful logins count nothing, and they do not wipe the failures before them either:
/// the email locks after `lockout_threshold` failed checks within the window, however many
/// successes came between (contract section 9; `docs/DESIGN.md`). This test used to assert
/// that a success reset the counter, which let 6 failed checks of one email through a
/// threshold of 3.
#[test]
fn successes_count_nothing_and_do_not_clear_the_lockout_counter() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let email = unique_email("reset");
    s.register(&email);
    for _ in 0..2 {
        login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    for i in 0..5 {
        let r = login_with(&s, &email, PASSWORD);
        assert_eq!(r.status, 200, "success {i} within the limit: {}", r.text);
    }
    login_with(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    assert_locked(&login_with(&s, &email, PASSWORD), 15 * 60);
}

#[test]
fn lockout_lives_in_the_store_and_is_seen_by_a_second_server() {
    let limits = [
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ];
    let a = TestServer::with(&limits);
    let email = unique_email("shared");
    a.register(&email);
    for _ in 0..3 {
        login_with(&a, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_locked(&login_with(&a, &email, PASSWORD), 15 * 60);

    let url = a.database_url();
    let keys = a.dir.path().join("keys").display().to_string();
    let mut settings = limits.to_vec();
    settings.push(("AUTHD_DATABASE__URL", &url));
    settings.push(("AUTHD_JWT__KEY_DIR", &keys));
    let b = TestServer::with(&settings);
    assert_locked(&login_with(&b, &email, PASSWORD), 15 * 60);
    let other = unique_email("shared-other");
    b.register(&other);
    assert_eq!(login_with(&a, &other, PASSWORD).status, 200);
}

#[test]
fn rate_limit_disabled_turns_every_limit_off() {
    let s = TestServer::with(&[
        ("AUTHD_RATE_LIMIT__ENABLED", "false"),
        ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "3"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "2"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "2"),
    ]);
    let email = unique_email("unlimited");
    let data = s.register(&email);
    for i in 0..8 {
        let r = login_with(&s, &email, WRONG);
        assert_eq!(r.status, 401, "failure {i}: {}", r.text);
        let r = login_with(&s, "nobody@example.com", WRONG);
        assert_eq!(r.status, 401, "unknown {i}: {}", r.text);
    }
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
    let access = data["accessToken"].as_str().unwrap();
    for i in 0..10 {
        let r = s.get_auth("/api/auth/profile", access);
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
    }
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
    ]);
    let email = unique_email("spoof");
    s.register(&email);
    for i in 1..=3 {
        let r = login_via(&s, &format!("1.2.3.{i}"), &unique_email("spoof-x"), WRONG);
        r.assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_rate_limited(&login_via(&s, "1.2.3.99", &email, PASSWORD));
    assert_rate_limited(&login_via(&s, "203.0.113.7, 1.2.3.4", &email, PASSWORD));
    assert_rate_limited(&login_with(&s, &email, PASSWORD));
}

#[test]
fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let s = TestServer::with(&[
        ON,
        MANY_REQUESTS,
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "1000"),
        ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let email = unique_email("proxied");
    s.register(&email);
    // The right-most untrusted hop is the client; spoofed hops left of it do not matter.
    for i in 1..=3 {
        let xff = format!("10.9.9.{i}, 203.0.113.5");
        login_via(&s, &xff, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    assert_rate_limited(&login_via(&s, "203.0.113.5", &email, PASSWORD));
    assert_rate_limited(&login_via(
        &s,
        "198.51.100.1, 203.0.113.5, 127.0.0.1",
        &email,
        PASSWORD,
    ));

    let ok = login_via(&s, "203.0.113.6", &email, PASSWORD);
    assert_eq!(ok.status, 200, "{}", ok.text);
    let trusted_hop = login_via(&s, "203.0.113.5, 203.0.113.8, 127.0.0.1", &email, PASSWORD);
    assert_eq!(trusted_hop.status, 200, "{}", trusted_hop.text);
    // No X-Forwarded-For: the proxy itself is the client, and it has no failures.
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);

    let access = ok.body["data"]["accessToken"].as_str().unwrap();
    let list = s.get_auth("/api/auth/sessions", access);
    assert_eq!(list.status, 200, "{}", list.text);
    let sessions = list.body["data"]["sessions"].as_array().unwrap();
    let ip_of_current = sessions
        .iter()
        .find(|x| x["current"] == true)
        .map(|x| x["ip"].clone());
    assert_eq!(ip_of_current, Some(json!("203.0.113.6")), "{}", list.text);
    let ips: BTreeSet<&str> = sessions.iter().filter_map(|x| x["ip"].as_str()).collect();
    assert!(ips.contains("203.0.113.8"), "{ips:?}");
    assert!(ips.contains("127.0.0.1"), "{ips:?}");
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[test]
fn unknown_email_and_wrong_password_are_indistinguishable() {
    let s = TestServer::start();
    let email = unique_email("enum");
    s.register(&email);
    let wrong = login_with(&s, &email, WRONG);
    let unknown = login_with(&s, &unique_email("enum-nobody"), WRONG);
    wrong.assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.header_names(), unknown.header_names());
    for name in wrong.header_names() {
        if name == "x-request-id" || name == "date" {
            continue;
        }
        let values = |r: &Resp| -> Vec<Vec<u8>> {
            r.headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect()
        };
        assert_eq!(values(&wrong), values(&unknown), "header {name}");
    }
    assert!(!wrong.text.contains(&email), "{}", wrong.text);

    // About the same time: an unknown email still costs one bcrypt verification.
    let (mut known_t, mut unknown_t) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(login_with(&s, &email, WRONG).status, 401);
        known_t.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(login_with(&s, "ghost@example.com", WRONG).status, 401);
        unknown_t.push(t.elapsed());
    }
    let (k, u) = (median(known_t), median(unknown_t));
    assert!(
        u * 4 >= k && k * 4 >= u,
        "wrong password {k:?} vs unknown email {u:?}"
    );
}
