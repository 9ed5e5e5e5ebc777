//! Browser safety over HTTP: security headers on every response, `Cache-Control: no-store`,
//! HSTS, request ids, CORS for listed origins only, and the CSRF origin check.

use reqwest::blocking::RequestBuilder;
use reqwest::Method;
use serde_json::json;

use crate::support::*;

const APP: &str = "https://app.example.org";

/// Origins that are not `APP`: other sites, the opaque origin and look-alikes.
const OTHER_ORIGINS: [&str; 7] = [
    "https://evil.example.org",
    "null",
    "https://app.example.org.evil.com",
    "http://app.example.org",
    "https://APP.example.org",
    "https://xapp.example.org",
    "https://app.example.or",
];

fn cors_server() -> TestServer {
    TestServer::with(&[("AUTHD_SERVER__CORS_ORIGINS", APP)])
}

/// Every header value of `name`, comma-split and trimmed.
fn header_tokens(r: &Resp, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .collect()
}

fn assert_security_headers(r: &Resp, what: &str) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        let values: Vec<_> = r.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "one {name} on {what}: {values:?}");
        assert_eq!(r.header(name), Some(value), "{name} on {what}");
    }
    let server = r
        .header("server")
        .unwrap_or_else(|| panic!("Server on {what}"));
    assert!(
        !server.is_empty() && !server.chars().any(|c| c.is_ascii_digit()),
        "Server header with a version on {what}: {server}"
    );
    let id = r.header("x-request-id").unwrap_or("");
    assert!(!id.is_empty(), "X-Request-Id on {what}");
}

fn assert_no_store(r: &Resp, what: &str) {
    assert!(
        header_tokens(r, "cache-control")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("no-store")),
        "Cache-Control: no-store on {what}: {:?}",
        r.header("cache-control")
    );
}

fn assert_no_cors(r: &Resp, what: &str) {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
    ] {
        assert!(
            r.headers.get(name).is_none(),
            "{name} on {what}: {:?}",
            r.headers.get(name)
        );
    }
}

fn assert_cors_for_app(r: &Resp, what: &str) {
    let acao: Vec<_> = r
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(acao.len(), 1, "one Access-Control-Allow-Origin on {what}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(APP),
        "echo on {what}"
    );
    assert_eq!(
        r.header("access-control-allow-credentials"),
        Some("true"),
        "credentials on {what}"
    );
    assert!(
        header_tokens(r, "vary")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("origin")),
        "Vary: Origin on {what}: {:?}",
        r.header("vary")
    );
}

fn preflight(s: &TestServer, path: &str, origin: &str, method: &str) -> RequestBuilder {
    s.client
        .request(Method::OPTIONS, s.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
}

/// One response of each kind the contract names, labelled, with the status it must have.
fn one_of_each(s: &TestServer) -> Vec<(String, u16, Resp)> {
    let email = unique_email("headers");
    let mut out = Vec::new();
    let mut push = |what: &str, status: u16, r: Resp| out.push((what.to_string(), status, r));
    push("healthz", 200, send(s.get("/healthz")));
    push("readyz", 200, send(s.get("/readyz")));
    push("jwks", 200, send(s.get("/.well-known/jwks.json")));
    let reg = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    );
    let refresh = reg.body["data"]["refreshToken"]
        .as_str()
        .unwrap_or("")
        .to_string();
    push("register", 201, reg);
    let login = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    let access = login.body["data"]["accessToken"]
        .as_str()
        .unwrap_or("")
        .to_string();
    push("login", 200, login);
    push("profile", 200, s.get_auth("/api/auth/profile", &access));
    push("sessions", 200, s.get_auth("/api/auth/sessions", &access));
    let rotated = s.refresh(&refresh);
    let newer = rotated.body["data"]["refreshToken"]
        .as_str()
        .unwrap_or("")
        .to_string();
    push("refresh", 200, rotated);
    push(
        "duplicate register",
        409,
        s.post_json(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD}),
        ),
    );
    push(
        "malformed json",
        400,
        send(
            s.post("/api/auth/login")
                .header("content-type", "application/json")
                .body("{"),
        ),
    );
    push(
        "validation",
        400,
        s.post_json("/api/auth/register", json!({"email": "nope"})),
    );
    push(
        "wrong password",
        401,
        s.post_json(
            "/api/auth/login",
            json!({"email": email, "password": "Wrong-horse-9"}),
        ),
    );
    push("no token", 401, send(s.get("/api/auth/profile")));
    push(
        "foreign origin",
        403,
        send(
            s.post("/api/auth/refresh")
                .header("origin", "https://evil.example.org"),
        ),
    );
    push("unknown path", 404, send(s.get("/nope")));
    push("unknown auth path", 404, send(s.get("/api/auth/nope")));
    push(
        "unknown session",
        404,
        send(
            s.delete(&format!("/api/auth/sessions/{}", uuid::Uuid::new_v4()))
                .bearer_auth(&access),
        ),
    );
    push("wrong method", 405, send(s.get("/api/auth/login")));
    push("wrong method healthz", 405, send(s.post("/healthz")));
    push(
        "too large",
        413,
        send(
            s.post("/api/auth/register")
                .header("content-type", "application/json")
                .body(vec![b' '; 20_000]),
        ),
    );
    push(
        "wrong media type",
        415,
        send(
            s.post("/api/auth/login")
                .header("content-type", "text/plain")
                .body("{}"),
        ),
    );
    push(
        "logout",
        200,
        s.post_json("/api/auth/logout", json!({ "refreshToken": newer })),
    );
    push("metrics", 200, send(s.get("/metrics")));
    out
}

#[test]
fn every_response_carries_the_security_headers() {
    let s = TestServer::start();
    for (what, status, r) in one_of_each(&s) {
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert_security_headers(&r, &what);
        assert!(
            r.header("strict-transport-security").is_none(),
            "no HSTS by default on {what}"
        );
        let ct = r.header("content-type").unwrap_or("");
        if what == "metrics" {
            assert!(ct.starts_with("text/plain"), "{what}: {ct}");
        } else {
            assert!(ct.starts_with("application/json"), "{what}: {ct}");
            assert!(r.body.is_object(), "{what}: {}", r.text);
        }
    }
    // A preflight is a response too.
    let r = send(preflight(&s, "/api/auth/login", APP, "POST"));
    assert_security_headers(&r, "preflight");
}

#[test]
fn every_api_auth_response_is_no_store() {
    let s = TestServer::start();
    let mut checked = 0;
    for (what, _, r) in one_of_each(&s) {
        let api = !matches!(
            what.as_str(),
            "healthz" | "readyz" | "jwks" | "metrics" | "unknown path" | "wrong method healthz"
        );
        if api {
            assert_no_store(&r, &what);
            checked += 1;
        }
    }
    assert!(checked >= 15);
    for path in [
        "/api/auth/nope",
        "/api/auth/login/x",
        "/api/auth/sessions/a/b",
    ] {
        let r = send(s.get(path));
        r.assert_error(404, "NOT_FOUND");
        assert_no_store(&r, path);
    }
    let r = send(s.delete("/api/auth/profile"));
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_no_store(&r, "405 on profile");
}

#[test]
fn hsts_is_sent_only_when_enabled() {
    let off = TestServer::start();
    for r in [
        send(off.get("/healthz")),
        send(off.get("/nope")),
        off.post_json(
            "/api/auth/login",
            json!({"email": "a@b.io", "password": "x"}),
        ),
    ] {
        assert!(r.header("strict-transport-security").is_none());
    }
    let on = TestServer::with(&[("AUTHD_SERVER__HSTS", "true")]);
    let email = unique_email("hsts");
    for (what, r) in [
        ("healthz", send(on.get("/healthz"))),
        ("404", send(on.get("/nope"))),
        (
            "register",
            on.post_json(
                "/api/auth/register",
                json!({"email": email, "password": PASSWORD}),
            ),
        ),
        (
            "401",
            on.post_json(
                "/api/auth/login",
                json!({"email": "a@b.io", "password": "x"}),
            ),
        ),
        ("metrics", send(on.get("/metrics"))),
    ] {
        let hsts = r
            .header("strict-transport-security")
            .unwrap_or_else(|| panic!("HSTS on {what}"));
        let max_age: u64 = hsts
            .split(';')
            .find_map(|d| d.trim().strip_prefix("max-age="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(max_age > 0, "{what}: {hsts}");
        assert_security_headers(&r, what);
    }
}

#[test]
fn sane_request_ids_are_echoed_and_others_replaced() {
    let s = TestServer::start();
    for (path, status) in [
        ("/healthz", 200),
        ("/nope", 404),
        ("/api/auth/profile", 401),
    ] {
        let r = send(s.get(path).header("x-request-id", "abc-123"));
        assert_eq!(r.status, status);
        assert_eq!(r.header("x-request-id"), Some("abc-123"), "{path}");
    }
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": unique_email("rid"), "password": PASSWORD}),
    );
    assert!(r.header("x-request-id").is_some());

    let sane = |id: &str| {
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    let long = "a".repeat(300);
    for insane in [
        long.as_str(),
        "abc 123",
        "abc\"123",
        "a'b",
        "<script>",
        "a,b",
        "a;b=c",
    ] {
        for path in ["/healthz", "/api/auth/profile"] {
            let r = send(s.get(path).header("x-request-id", insane));
            let got = r.header("x-request-id").unwrap_or("");
            assert_ne!(got, insane, "{insane:?} was echoed on {path}");
            assert!(sane(got), "replacement {got:?} for {insane:?}");
        }
    }
    let a = send(s.get("/healthz"));
    let b = send(s.get("/healthz"));
    let (a, b) = (a.header("x-request-id"), b.header("x-request-id"));
    assert!(a.is_some_and(sane) && b.is_some_and(sane));
    assert_ne!(a, b, "generated ids are unique");
}

#[test]
fn a_listed_origin_gets_exact_cors_headers() {
    let s = cors_server();
    let email = unique_email("cors");
    let reg = send(
        s.post("/api/auth/register")
            .header("origin", APP)
            .json(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let access = reg.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let responses = [
        ("register", reg),
        ("healthz", send(s.get("/healthz").header("origin", APP))),
        (
            "profile",
            send(
                s.get("/api/auth/profile")
                    .header("origin", APP)
                    .bearer_auth(&access),
            ),
        ),
        (
            "401",
            send(s.get("/api/auth/profile").header("origin", APP)),
        ),
        ("404", send(s.get("/api/auth/nope").header("origin", APP))),
        (
            "login 401",
            send(
                s.post("/api/auth/login")
                    .header("origin", APP)
                    .json(&json!({"email": email, "password": "Wrong-horse-9"})),
            ),
        ),
    ];
    for (what, r) in responses {
        assert_cors_for_app(&r, what);
        assert_ne!(r.header("access-control-allow-origin"), Some("*"));
    }
}

#[test]
fn a_preflight_from_a_listed_origin_is_answered() {
    let s = cors_server();
    for (path, method) in [
        ("/api/auth/login", "POST"),
        ("/api/auth/register", "POST"),
        ("/api/auth/refresh", "POST"),
        ("/api/auth/profile", "GET"),
        ("/api/auth/sessions/x", "DELETE"),
    ] {
        let r = send(preflight(&s, path, APP, method));
        assert!(
            (200..300).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text
        );
        assert_cors_for_app(&r, path);
        let methods = header_tokens(&r, "access-control-allow-methods");
        assert!(
            methods.iter().any(|m| m.eq_ignore_ascii_case(method)),
            "{path}: {methods:?}"
        );
        let headers = header_tokens(&r, "access-control-allow-headers");
        for h in ["content-type", "authorization"] {
            assert!(
                headers.iter().any(|x| x.eq_ignore_ascii_case(h)),
                "{path}: {h} not in {headers:?}"
            );
        }
    }
}

#[test]
fn other_origins_get_no_cors_headers() {
    let s = cors_server();
    let data = s.register(&unique_email("nocors"));
    let access = data["accessToken"].as_str().unwrap();
    for origin in OTHER_ORIGINS {
        let responses = [
            ("healthz", send(s.get("/healthz").header("origin", origin))),
            (
                "profile",
                send(
                    s.get("/api/auth/profile")
                        .header("origin", origin)
                        .bearer_auth(access),
                ),
            ),
            (
                "register",
                send(
                    s.post("/api/auth/register")
                        .header("origin", origin)
                        .json(&json!({"email": unique_email("o"), "password": PASSWORD})),
                ),
            ),
            (
                "404",
                send(s.get("/api/auth/nope").header("origin", origin)),
            ),
            (
                "preflight",
                send(preflight(&s, "/api/auth/login", origin, "POST")),
            ),
            (
                "preflight profile",
                send(preflight(&s, "/api/auth/profile", origin, "GET")),
            ),
        ];
        for (what, r) in responses {
            assert!(r.status < 500, "{origin} {what}: {}", r.text);
            assert_no_cors(&r, &format!("{what} from {origin}"));
        }
    }
    // Without configured origins nobody gets CORS headers, not even APP.
    let plain = TestServer::start();
    assert_no_cors(
        &send(plain.get("/healthz").header("origin", APP)),
        "no config",
    );
    assert_no_cors(
        &send(preflight(&plain, "/api/auth/login", APP, "POST")),
        "no config preflight",
    );
}

/// POSTs to `path` with the refresh cookie and an optional `Origin`.
fn with_cookie(s: &TestServer, path: &str, token: &str, origin: Option<&str>) -> Resp {
    let mut req = s
        .post(path)
        .header("cookie", format!("authd_refresh={token}"));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    send(req)
}

fn new_refresh(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["refreshToken"].as_str().unwrap().to_string()
}

#[test]
fn foreign_origins_cannot_refresh_or_log_out() {
    let s = cors_server();
    let own_other_port = "http://127.0.0.1:1".to_string();
    let data = s.register(&unique_email("csrf"));
    let mut token = data["refreshToken"].as_str().unwrap().to_string();
    for origin in OTHER_ORIGINS
        .iter()
        .copied()
        .chain([own_other_port.as_str()])
    {
        for path in ["/api/auth/refresh", "/api/auth/logout"] {
            with_cookie(&s, path, &token, Some(origin)).assert_error(403, "FORBIDDEN");
            let body = send(
                s.post(path)
                    .header("origin", origin)
                    .json(&json!({ "refreshToken": token })),
            );
            body.assert_error(403, "FORBIDDEN");
            let none = send(s.post(path).header("origin", origin));
            none.assert_error(403, "FORBIDDEN");
        }
    }
    // The refused requests neither rotated nor revoked the token.
    token = new_refresh(&with_cookie(&s, "/api/auth/refresh", &token, None));
    // A refused logout, then the allowed origin logs out for real.
    with_cookie(
        &s,
        "/api/auth/logout",
        &token,
        Some("https://evil.example.org"),
    )
    .assert_error(403, "FORBIDDEN");
    token = new_refresh(&with_cookie(&s, "/api/auth/refresh", &token, Some(APP)));
    let out = with_cookie(&s, "/api/auth/logout", &token, Some(APP));
    assert_eq!(out.status, 200, "{}", out.text);
    s.refresh(&token).assert_error(401, "TOKEN_REVOKED");
}

#[test]
fn own_listed_and_absent_origins_may_refresh_and_log_out() {
    let s = cors_server();
    let own = format!("http://{}", s.addr);
    let email = unique_email("origin-ok");
    let data = s.register(&email);
    let mut token = data["refreshToken"].as_str().unwrap().to_string();
    for origin in [Some(APP), Some(own.as_str()), None] {
        let r = with_cookie(&s, "/api/auth/refresh", &token, origin);
        assert_ne!(r.status, 403, "{origin:?}: {}", r.text);
        token = new_refresh(&r);
        let r = send({
            let req = s
                .post("/api/auth/refresh")
                .json(&json!({ "refreshToken": token }));
            match origin {
                Some(o) => req.header("origin", o),
                None => req,
            }
        });
        token = new_refresh(&r);
    }
    for origin in [Some(APP), Some(own.as_str()), None] {
        let t = s.login(&email)["refreshToken"]
            .as_str()
            .unwrap()
            .to_string();
        let r = with_cookie(&s, "/api/auth/logout", &t, origin);
        assert_eq!(r.status, 200, "{origin:?}: {}", r.text);
        s.refresh(&t).assert_error(401, "TOKEN_REVOKED");
    }
    // Without a token, the allowed origins reach the token check (not 403).
    for origin in [APP, own.as_str()] {
        send(s.post("/api/auth/refresh").header("origin", origin))
            .assert_error(401, "TOKEN_MISSING");
    }
}

/// POSTs `{}` to refresh and logout (no token, no cookie), with `proto` as
/// `X-Forwarded-Proto`; returns both messages after checking the 401 `TOKEN_MISSING`.
fn missing_token_messages(s: &TestServer, proto: Option<&str>) -> Vec<String> {
    ["/api/auth/refresh", "/api/auth/logout"]
        .iter()
        .map(|path| {
            let mut req = s.post(path).json(&json!({}));
            if let Some(p) = proto {
                req = req.header("X-Forwarded-Proto", p);
            }
            let r = send(req);
            r.assert_error(401, "TOKEN_MISSING");
            r.body["message"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_missing_token_over_plain_http_with_a_secure_cookie_says_why() {
    let says_https = |m: &String| m.contains("Secure") && m.contains("HTTPS");

    // A direct connection: authd has no TLS listener, so it is plain HTTP, whatever a
    // client claims in X-Forwarded-Proto.
    let direct = TestServer::start();
    for proto in [None, Some("https")] {
        for m in missing_token_messages(&direct, proto) {
            assert!(says_https(&m), "{proto:?}: {m}");
        }
    }

    // Behind a trusted proxy: its X-Forwarded-Proto is believed.
    let proxied = TestServer::with(&[("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1")]);
    for m in missing_token_messages(&proxied, Some("https")) {
        assert!(!says_https(&m), "over HTTPS: {m}");
    }
    for m in missing_token_messages(&proxied, Some("http")) {
        assert!(says_https(&m), "over HTTP: {m}");
    }

    // A cookie that is not Secure explains nothing.
    let insecure = TestServer::with(&[("AUTHD_COOKIE__SECURE", "false")]);
    for m in missing_token_messages(&insecure, None) {
        assert!(!says_https(&m), "not Secure: {m}");
    }
}
