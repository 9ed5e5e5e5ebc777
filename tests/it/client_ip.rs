//! The client IP over real sockets (contract sections 2 and 9): an IPv4-mapped IPv6 address
//! is the IPv4 address everywhere (a dual-stack `[::]` listener reports IPv4 peers that way),
//! and IPv6 clients are counted per `/rate_limit.ipv6_prefix` network by every per-IP limit
//! while sessions and audit keep the full address.

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::*;

const WRONG: &str = "Wrong-horse-1!";
const ON: (&str, &str) = ("AUTHD_RATE_LIMIT__ENABLED", "true");
const MANY_REQUESTS: (&str, &str) = ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "100000");
const NO_LOCKOUT: (&str, &str) = ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "100000");
const THREE_FAILURES: (&str, &str) = ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "3");

/// A login sent to `base` (`http://host:port`) as if forwarded for `xff` (none: no header).
fn login(s: &TestServer, base: &str, xff: Option<&str>, email: &str, password: &str) -> Resp {
    let mut req = s
        .client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    send(req)
}

/// The `ip` of every live session of the user whose login answered `r`.
fn session_ips(s: &TestServer, base: &str, r: &Resp) -> BTreeSet<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    let access = r.body["data"]["accessToken"].as_str().unwrap();
    let list = send(
        s.client
            .get(format!("{base}/api/auth/sessions"))
            .bearer_auth(access),
    );
    assert_eq!(list.status, 200, "{}", list.text);
    list.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["ip"].as_str().map(String::from))
        .collect()
}

/// Every IP recorded in the audit trail.
fn audit_ips(s: &TestServer) -> BTreeSet<String> {
    s.query_column(
        "SELECT DISTINCT ip FROM audit_events WHERE ip IS NOT NULL",
        &[],
    )
    .into_iter()
    .collect()
}

fn dual_stack(extra: &[(&str, &str)]) -> (TestServer, String) {
    let s = TestServer::listening_on("[::]:0", tempfile::tempdir().unwrap(), extra);
    assert!(s.addr.is_ipv6(), "{}", s.addr);
    // The proxy connects over IPv4: the dual-stack socket sees ::ffff:127.0.0.1.
    let base = format!("http://127.0.0.1:{}", s.addr.port());
    (s, base)
}

#[test]
fn an_ipv4_proxy_on_a_dual_stack_listener_is_a_trusted_ipv4_peer() {
    let (s, base) = dual_stack(&[
        ON,
        MANY_REQUESTS,
        NO_LOCKOUT,
        THREE_FAILURES,
        ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
    ]);
    let email = unique_email("dual-stack");
    let reg = send(
        s.client
            .post(format!("{base}/api/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);

    // X-Forwarded-For is believed: the session records the client, not the proxy.
    let r = login(&s, &base, Some("203.0.113.5"), &email, PASSWORD);
    assert!(session_ips(&s, &base, &r).contains("203.0.113.5"));
    // Without the header the client is the proxy, as IPv4.
    let r = login(&s, &base, None, &email, PASSWORD);
    let ips = session_ips(&s, &base, &r);
    assert!(ips.contains("127.0.0.1"), "{ips:?}");
    assert!(ips.iter().all(|ip| !ip.contains("::ffff:")), "{ips:?}");

    // Clients behind the proxy have budgets of their own.
    for _ in 0..3 {
        login(&s, &base, Some("203.0.113.5"), &email, WRONG)
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    login(&s, &base, Some("203.0.113.5"), &email, PASSWORD).assert_error(429, "RATE_LIMITED");
    let r = login(&s, &base, Some("203.0.113.6"), &email, PASSWORD);
    assert_eq!(r.status, 200, "another client is not limited: {}", r.text);

    // A hop written IPv4-mapped is that IPv4 address: recorded so, and one budget with it.
    let r = login(&s, &base, Some("::ffff:198.51.100.7"), &email, PASSWORD);
    assert!(session_ips(&s, &base, &r).contains("198.51.100.7"));
    for _ in 0..3 {
        login(&s, &base, Some("::ffff:198.51.100.7"), &email, WRONG)
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    login(&s, &base, Some("198.51.100.7"), &email, PASSWORD).assert_error(429, "RATE_LIMITED");
    // A mapped trusted hop is skipped like the proxy it is.
    let r = login(
        &s,
        &base,
        Some("192.0.2.44, ::ffff:127.0.0.1"),
        &email,
        PASSWORD,
    );
    assert!(session_ips(&s, &base, &r).contains("192.0.2.44"));

    let audited = audit_ips(&s);
    assert!(audited.contains("203.0.113.5"), "{audited:?}");
    assert!(audited.contains("198.51.100.7"), "{audited:?}");
    assert!(
        audited.iter().all(|ip| !ip.contains("::ffff:")),
        "{audited:?}"
    );
}

#[test]
fn a_trusted_proxy_configured_ipv4_mapped_matches_its_ipv4_peer() {
    for listen in ["127.0.0.1:0", "[::]:0"] {
        let s = TestServer::listening_on(
            listen,
            tempfile::tempdir().unwrap(),
            &[("AUTHD_SERVER__TRUSTED_PROXIES", "::ffff:127.0.0.1")],
        );
        let base = format!("http://127.0.0.1:{}", s.addr.port());
        let email = unique_email("mapped-entry");
        s.register(&email);
        let r = login(&s, &base, Some("203.0.113.77"), &email, PASSWORD);
        let ips = session_ips(&s, &base, &r);
        assert!(ips.contains("203.0.113.77"), "{listen}: {ips:?}");
    }
}

/// A server behind a proxy on loopback, counting IPv6 clients per `/prefix`.
fn behind_proxy(prefix: Option<&str>, extra: &[(&str, &str)]) -> TestServer {
    let mut settings = vec![ON, ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1")];
    if let Some(p) = prefix {
        settings.push(("AUTHD_RATE_LIMIT__IPV6_PREFIX", p));
    }
    settings.extend_from_slice(extra);
    TestServer::with(&settings)
}

fn login_from(s: &TestServer, ip: &str, email: &str, password: &str) -> Resp {
    login(s, &s.url(""), Some(ip), email, password)
}

#[test]
fn ipv6_clients_share_the_failed_login_budget_of_their_network() {
    // The default prefix, 64: two addresses of one /64 are one client.
    let s = behind_proxy(None, &[MANY_REQUESTS, NO_LOCKOUT, THREE_FAILURES]);
    let email = unique_email("v6-64");
    s.register(&email);
    for i in 1..=3 {
        login_from(&s, &format!("2001:db8:1:2::{i}"), &email, WRONG)
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    login_from(&s, "2001:db8:1:2:ffff::99", &email, PASSWORD).assert_error(429, "RATE_LIMITED");
    // The next /64 is another client; its session records the full address.
    let r = login_from(&s, "2001:db8:1:3::abcd", &email, PASSWORD);
    let ips = session_ips(&s, &s.url(""), &r);
    assert!(ips.contains("2001:db8:1:3::abcd"), "{ips:?}");
    let audited = audit_ips(&s);
    assert!(audited.contains("2001:db8:1:2::1"), "{audited:?}");
    assert!(audited.contains("2001:db8:1:2:ffff::99"), "{audited:?}");

    // 128: every address counts on its own.
    let s = behind_proxy(Some("128"), &[MANY_REQUESTS, NO_LOCKOUT, THREE_FAILURES]);
    let email = unique_email("v6-128");
    s.register(&email);
    for _ in 0..3 {
        login_from(&s, "2001:db8:1:2::1", &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    }
    login_from(&s, "2001:db8:1:2::1", &email, PASSWORD).assert_error(429, "RATE_LIMITED");
    let r = login_from(&s, "2001:db8:1:2::2", &email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);

    // 48: the whole /48 is one client.
    let s = behind_proxy(Some("48"), &[MANY_REQUESTS, NO_LOCKOUT, THREE_FAILURES]);
    let email = unique_email("v6-48");
    s.register(&email);
    for i in 1..=3 {
        login_from(&s, &format!("2001:db8:1:{i}::1"), &email, WRONG)
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    login_from(&s, "2001:db8:1:ff::1", &email, PASSWORD).assert_error(429, "RATE_LIMITED");
    let r = login_from(&s, "2001:db8:2::1", &email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The request budget on `/api/auth/*`, spent by anonymous profile reads (401).
fn profile_from(s: &TestServer, ip: &str) -> Resp {
    send(s.get("/api/auth/profile").header("x-forwarded-for", ip))
}

#[test]
fn ipv6_clients_share_the_request_budget_of_their_network() {
    let budget = ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "3");
    let s = behind_proxy(None, &[budget]);
    for i in 1..=3 {
        profile_from(&s, &format!("2001:db8:7:7::{i}")).assert_error(401, "TOKEN_MISSING");
    }
    profile_from(&s, "2001:db8:7:7:1:2:3:4").assert_error(429, "RATE_LIMITED");
    profile_from(&s, "2001:db8:7:8::1").assert_error(401, "TOKEN_MISSING");

    let s = behind_proxy(Some("128"), &[budget]);
    for _ in 0..3 {
        profile_from(&s, "2001:db8:7:7::1").assert_error(401, "TOKEN_MISSING");
    }
    profile_from(&s, "2001:db8:7:7::1").assert_error(429, "RATE_LIMITED");
    profile_from(&s, "2001:db8:7:7::2").assert_error(401, "TOKEN_MISSING");

    // IPv4 clients are counted per address whatever the prefix.
    let s = behind_proxy(Some("1"), &[budget]);
    for _ in 0..3 {
        profile_from(&s, "198.51.100.1").assert_error(401, "TOKEN_MISSING");
    }
    profile_from(&s, "198.51.100.1").assert_error(429, "RATE_LIMITED");
    profile_from(&s, "198.51.100.2").assert_error(401, "TOKEN_MISSING");
}

#[test]
fn ipv6_prefix_out_of_range_is_refused_naming_the_key() {
    for bad in ["0", "129", "64x", "-1"] {
        let dir = tempfile::tempdir().unwrap();
        let err = authd::config::load(&authd::config::Sources {
            base_dir: dir.path().to_path_buf(),
            env_vars: vec![("AUTHD_RATE_LIMIT__IPV6_PREFIX".into(), bad.into())],
            ..Default::default()
        })
        .expect_err(bad)
        .to_string();
        assert!(err.contains("rate_limit.ipv6_prefix"), "{bad}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &[]);
    assert_eq!(settings.rate_limit.ipv6_prefix, 64);
    let settings = test_settings(dir.path(), &[("AUTHD_RATE_LIMIT__IPV6_PREFIX", "128")]);
    assert_eq!(settings.rate_limit.ipv6_prefix, 128);
}
