//! Hostile input over HTTP: lying framing, look-alike and normalised emails, NFKC passwords,
//! injection strings, control characters, and tokens smuggled in the URL.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Writes `request` on a fresh connection (optionally closing our write side) and reads
/// until the server closes the connection, an error, or 5 seconds pass.
fn raw_exchange(addr: SocketAddr, request: &[u8], close_write: bool) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = stream.write_all(request);
    if close_write {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of every HTTP/1.x response in a raw exchange.
fn statuses(raw: &str) -> Vec<u16> {
    raw.split("HTTP/1.")
        .skip(1)
        .filter_map(|rest| rest.get(2..5)?.parse().ok())
        .collect()
}

/// A raw POST with the given headers and body bytes.
fn raw_post(addr: SocketAddr, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The server still answers and still registers users.
fn assert_healthy(s: &TestServer) {
    let h = send(s.get("/healthz"));
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.body, json!({"status": "ok"}));
    s.register(&unique_email("still-healthy"));
}

/// Sane, not 5xx: each response in the exchange (if any) is a 4xx or a 2xx.
fn assert_no_server_error(raw: &str, what: &str) {
    for status in statuses(raw) {
        assert!(
            (200..500).contains(&status),
            "{what}: status {status} in\n{raw}"
        );
    }
}

fn register_json(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

#[test]
fn a_content_length_smaller_than_the_body_is_harmless() {
    let s = TestServer::start();
    let email = unique_email("lying");
    let body = json!({"email": email, "password": PASSWORD, "name": "x".repeat(20_000)})
        .to_string()
        .into_bytes();
    for declared in [1, 20, 200] {
        let req = raw_post(
            s.addr,
            "/api/auth/register",
            &[
                "Content-Type: application/json",
                &format!("Content-Length: {declared}"),
            ],
            &body,
        );
        let raw = raw_exchange(s.addr, &req, false);
        assert_no_server_error(&raw, &format!("Content-Length {declared}"));
        if let Some(first) = statuses(&raw).first() {
            // The declared bytes are a truncated JSON document.
            assert_eq!(*first, 400, "{raw}");
            assert!(raw.contains("MALFORMED_JSON"), "{raw}");
        }
    }
    // Nothing was registered from the unread tail.
    s.post_json("/api/auth/login", register_json(&email, PASSWORD))
        .assert_error(401, "INVALID_CREDENTIALS");
    assert_healthy(&s);
}

#[test]
fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    let s = TestServer::with(&[("AUTHD_SERVER__BODY_LIMIT", "256")]);
    let started = Instant::now();
    let req = raw_post(
        s.addr,
        "/api/auth/register",
        &[
            "Content-Type: application/json",
            "Content-Length: 1000000000",
        ],
        br#"{"email":"#,
    );
    let raw = raw_exchange(s.addr, &req, false);
    assert_eq!(statuses(&raw).first(), Some(&413), "{raw}");
    assert!(raw.contains("PAYLOAD_TOO_LARGE"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{raw}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "did not wait");
    assert_healthy(&s);
}

#[test]
fn a_body_shorter_than_its_content_length_is_harmless() {
    let s = TestServer::start();
    let body = br#"{"email":"short@example.com","password":"Correct-horse-9"}"#;
    let req = raw_post(
        s.addr,
        "/api/auth/register",
        &["Content-Type: application/json", "Content-Length: 500"],
        body,
    );
    let raw = raw_exchange(s.addr, &req, true);
    assert_no_server_error(&raw, "short body");
    s.post_json(
        "/api/auth/login",
        register_json("short@example.com", PASSWORD),
    )
    .assert_error(401, "INVALID_CREDENTIALS");
    assert_healthy(&s);
}

#[test]
fn broken_and_ambiguous_framing_never_gives_a_5xx() {
    let s = TestServer::start();
    let body = br#"{"email":"frame@example.com","password":"Correct-horse-9"}"#;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad chunk size",
            raw_post(
                s.addr,
                "/api/auth/register",
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                ],
                b"zz\r\n{}\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunk longer than declared",
            raw_post(
                s.addr,
                "/api/auth/login",
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: chunked",
                ],
                b"2\r\n{\"email\":1}\r\n0\r\n\r\n",
            ),
        ),
        (
            "two content lengths",
            raw_post(
                s.addr,
                "/api/auth/register",
                &[
                    "Content-Type: application/json",
                    "Content-Length: 5",
                    &format!("Content-Length: {}", body.len()),
                ],
                body,
            ),
        ),
        (
            "negative content length",
            raw_post(
                s.addr,
                "/api/auth/register",
                &["Content-Type: application/json", "Content-Length: -1"],
                body,
            ),
        ),
    ];
    let mut smuggle = raw_post(
        s.addr,
        "/api/auth/register",
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", body.len()),
            "Transfer-Encoding: chunked",
        ],
        b"",
    );
    smuggle.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    smuggle.extend_from_slice(body);
    smuggle.extend_from_slice(b"\r\n0\r\n\r\n");
    cases.push(("content-length and chunked", smuggle));
    for (what, req) in cases {
        let raw = raw_exchange(s.addr, &req, true);
        assert_no_server_error(&raw, what);
    }
    assert_healthy(&s);
}

#[test]
fn emails_are_normalised_to_one_account() {
    let s = TestServer::start();
    let reg = s.post_json("/api/auth/register", register_json("Alice@X.io", PASSWORD));
    assert_eq!(reg.status, 201, "{}", reg.text);
    assert_eq!(reg.body["data"]["user"]["email"], "alice@x.io");
    let id = reg.body["data"]["user"]["id"].clone();
    for dup in [
        "ａｌｉｃｅ@x.io",
        "alice@x.io",
        "ALICE@X.IO",
        "  alice@x.io  ",
        "ａｌｉｃｅ＠ｘ．ｉｏ",
    ] {
        s.post_json("/api/auth/register", register_json(dup, PASSWORD))
            .assert_error(409, "EMAIL_TAKEN");
    }
    for spelling in [
        "alice@x.io",
        "Alice@X.io",
        "ALICE@X.IO",
        "ａｌｉｃｅ@x.io",
        "ＡＬＩＣＥ@Ｘ.io",
        " alice@x.io ",
    ] {
        let r = s.post_json("/api/auth/login", register_json(spelling, PASSWORD));
        assert_eq!(r.status, 200, "{spelling}: {}", r.text);
        assert_eq!(r.body["data"]["user"]["id"], id, "{spelling}");
        assert_eq!(r.body["data"]["user"]["email"], "alice@x.io");
    }
}

#[test]
fn a_cyrillic_look_alike_is_refused_and_never_logs_in_as_alice() {
    let s = TestServer::start();
    let alice = s.register("alice@x.io");
    let alice_id = alice["user"]["id"].as_str().unwrap();
    for look_alike in ["\u{430}lice@x.io", "alic\u{435}@x.io", "alice@\u{445}.io"] {
        let r = s.post_json("/api/auth/register", register_json(look_alike, PASSWORD));
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["email"], "{}", r.text);

        let login = s.post_json("/api/auth/login", register_json(look_alike, PASSWORD));
        assert!(
            login.status == 400 || login.status == 401,
            "{look_alike}: {} {}",
            login.status,
            login.text
        );
        assert_eq!(login.body["success"], false);
        assert!(login.body.get("data").is_none(), "{}", login.text);
        assert!(login.cookie("authd_refresh").is_none());
        assert!(!login.text.contains(alice_id), "{}", login.text);
    }
    // Alice herself is unaffected.
    assert_eq!(s.login("alice@x.io")["user"]["id"], alice_id);
}

#[test]
fn passwords_are_nfkc_normalised_before_hashing() {
    let s = TestServer::start();
    let email = unique_email("nfkc");
    // A full-width letter and a full-width digit: NFKC gives PASSWORD.
    let wide = "Ｃorrect-horse-９";
    assert_ne!(wide, PASSWORD);
    let r = s.post_json("/api/auth/register", register_json(&email, wide));
    assert_eq!(r.status, 201, "{}", r.text);
    for p in [
        PASSWORD,
        wide,
        "Correct-horse-９",
        "Ｃｏｒｒｅｃｔ－ｈｏｒｓｅ－９",
    ] {
        let r = s.post_json("/api/auth/login", register_json(&email, p));
        assert_eq!(r.status, 200, "{p}: {}", r.text);
    }
    s.post_json("/api/auth/login", register_json(&email, "Correct-horse-8"))
        .assert_error(401, "INVALID_CREDENTIALS");
    // Rules apply to the normalised form: full-width digits count as digits.
    let r = s.post_json(
        "/api/auth/register",
        register_json(&unique_email("wide"), "ｐａｓｓｗｏｒｄ１！"),
    );
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn injection_strings_in_name_are_stored_verbatim() {
    let s = TestServer::start();
    let first_email = unique_email("bobby");
    let names = [
        "Robert'); DROP TABLE users;--",
        "<script>alert(1)</script>",
        "' OR '1'='1",
        "\"; DELETE FROM sessions; --",
        "${jndi:ldap://x.example/a}",
        "{{7*7}} %s%n%x",
        "<img src=x onerror=alert(1)>",
    ];
    for (i, name) in names.iter().enumerate() {
        let email = if i == 0 {
            first_email.clone()
        } else {
            unique_email("inj")
        };
        let r = s.post_json(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD, "name": name}),
        );
        assert_eq!(r.status, 201, "{name}: {}", r.text);
        assert_eq!(r.body["data"]["user"]["name"], *name);
        let access = s.login(&email)["accessToken"].as_str().unwrap().to_string();
        let p = s.get_auth("/api/auth/profile", &access);
        assert_eq!(p.status, 200);
        assert_eq!(p.body["data"]["user"]["name"], *name);
        assert!(p
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(p.header("x-content-type-options"), Some("nosniff"));
    }
    // The tables are all still there and the first user is intact.
    assert_eq!(s.login(&first_email)["user"]["name"], names[0]);
    let quoted = "o'brien+test@x.io";
    assert_eq!(
        s.post_json("/api/auth/register", register_json(quoted, PASSWORD))
            .status,
        201
    );
    s.login(quoted);
    for (email, password) in [
        ("o'brien+test@x.io", "' OR '1'='1"),
        ("o'brien+test@x.io' --", PASSWORD),
        ("' OR 1=1 --", PASSWORD),
        ("*", PASSWORD),
        ("%", PASSWORD),
        ("o_brien+test@x.io", PASSWORD),
    ] {
        let r = s.post_json("/api/auth/login", register_json(email, password));
        assert!(
            r.status == 400 || r.status == 401,
            "{email} / {password}: {} {}",
            r.status,
            r.text
        );
        assert!(r.body.get("data").is_none());
    }
}

#[test]
fn cr_lf_in_email_or_name_is_refused() {
    let s = TestServer::start();
    for email in [
        "alice@x.io\r\nBcc: evil@y.io",
        "ali\rce@x.io",
        "ali\nce@x.io",
        "alice@x.io\nX-Injected: 1",
    ] {
        let r = s.post_json("/api/auth/register", register_json(email, PASSWORD));
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["email"], "{email:?}: {}", r.text);
    }
    for name in ["a\r\nb", "line1\nline2", "Evil\r\nSet-Cookie: x=y", "a\rb"] {
        let r = s.post_json(
            "/api/auth/register",
            json!({"email": unique_email("crlf"), "password": PASSWORD, "name": name}),
        );
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["name"], "{name:?}: {}", r.text);
    }
}

#[test]
fn nul_bytes_are_400_never_500() {
    let s = TestServer::start();
    let email = unique_email("nul");
    let cases: Vec<(Value, &str)> = vec![
        (register_json("alice\0@x.io", PASSWORD), "email"),
        (register_json("\0", PASSWORD), "email"),
        (register_json(&format!("{email}\0"), PASSWORD), "email"),
        (register_json(&email, "Correct-horse-9\0"), "password"),
        (register_json(&email, "\0Correct-horse-9"), "password"),
        (
            json!({"email": email, "password": PASSWORD, "name": "a\0b"}),
            "name",
        ),
        (
            json!({"email": email, "password": PASSWORD, "name": "\0"}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let r = s.post_json("/api/auth/register", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        r.assert_error(400, "VALIDATION_ERROR");
        assert!(
            detail_fields(&r).iter().any(|f| f == field),
            "{body}: {}",
            r.text
        );
    }
    // None of them created the account.
    s.post_json("/api/auth/login", register_json(&email, PASSWORD))
        .assert_error(401, "INVALID_CREDENTIALS");

    // At login a NUL is never a way in (no C-string truncation) nor a crash.
    s.register(&email);
    for (e, p) in [
        (format!("{email}\0"), PASSWORD.to_string()),
        (format!("{email}\0junk"), PASSWORD.to_string()),
        (email.clone(), format!("{PASSWORD}\0")),
        (email.clone(), format!("{PASSWORD}\0junk")),
        (email.clone(), "\0".to_string()),
    ] {
        let r = s.post_json("/api/auth/login", register_json(&e, &p));
        assert!(
            r.status == 400 || r.status == 401,
            "{e:?} / {p:?}: {} {}",
            r.status,
            r.text
        );
        assert!(r.body.get("data").is_none());
    }
    // Escaped lone surrogates are not valid JSON strings.
    let raw = br#"{"email":"\ud800@x.io","password":"Correct-horse-9"}"#;
    let r = send(
        s.post("/api/auth/register")
            .header("content-type", "application/json")
            .body(raw.to_vec()),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["success"], false);
    // Oversized field values within the body limit are validation errors too.
    let r = s.post_json(
        "/api/auth/register",
        register_json(&format!("{}@x.io", "a".repeat(10_000)), PASSWORD),
    );
    r.assert_error(400, "VALIDATION_ERROR");
    let long = format!("Aa1!{}", "x".repeat(10_000));
    let r = s.post_json("/api/auth/register", register_json(&email, &long));
    r.assert_error(400, "VALIDATION_ERROR");
    s.post_json("/api/auth/login", register_json(&email, &long))
        .assert_error(401, "INVALID_CREDENTIALS");
}

#[test]
fn tokens_are_never_read_from_the_url() {
    let s = TestServer::start();
    let data = s.register(&unique_email("url"));
    let access = data["accessToken"].as_str().unwrap();
    let refresh = data["refreshToken"].as_str().unwrap();

    for query in [
        format!("access_token={access}"),
        format!("token={access}"),
        format!("accessToken={access}"),
        format!("authorization=Bearer%20{access}"),
    ] {
        let r = send(s.get(&format!("/api/auth/profile?{query}")));
        r.assert_error(401, "TOKEN_MISSING");
        let r = send(s.get(&format!("/api/auth/sessions?{query}")));
        r.assert_error(401, "TOKEN_MISSING");
        let r = send(s.post(&format!("/api/auth/logout-all?{query}")));
        r.assert_error(401, "TOKEN_MISSING");
    }
    // Nor from a cookie other than the refresh cookie.
    let r = send(
        s.get("/api/auth/profile")
            .header("cookie", format!("access_token={access}")),
    );
    r.assert_error(401, "TOKEN_MISSING");
    // The token itself is fine in the header.
    assert_eq!(s.get_auth("/api/auth/profile", access).status, 200);

    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        for key in ["refreshToken", "refresh_token", "token"] {
            let r = send(s.post(&format!("{path}?{key}={refresh}")));
            r.assert_error(401, "TOKEN_MISSING");
        }
    }
    // None of those rotated or revoked the refresh token.
    let r = s.refresh(refresh);
    assert_eq!(r.status, 200, "{}", r.text);
}
