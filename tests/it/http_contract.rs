//! CONTRACT sections 2 and 3 over HTTP: the envelopes, 404/405/413/415, strict JSON bodies,
//! field validation, duplicate and wrong credentials, health, readiness, JWKS and metrics.

use std::collections::BTreeSet;
use std::io::Cursor;

use reqwest::blocking::Body;
use serde_json::{json, Value};

use crate::support::*;

/// POSTs `body` to `path` with `content_type` (none when `None`).
fn post_raw(s: &TestServer, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
    let mut req = s.post(path).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    send(req)
}

/// POSTs `body` as `application/json` with a chunked body (no `Content-Length`).
fn post_chunked(s: &TestServer, path: &str, body: Vec<u8>) -> Resp {
    send(
        s.post(path)
            .header("content-type", "application/json")
            .body(Body::new(Cursor::new(body))),
    )
}

/// A valid register body for `email`, padded with trailing whitespace to exactly `len` bytes.
fn register_body_of_len(email: &str, len: usize) -> Vec<u8> {
    let mut body = json!({"email": email, "password": PASSWORD})
        .to_string()
        .into_bytes();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

/// Registers with `password` (and an optional name); returns the raw response.
fn register_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": password}),
    )
}

/// Asserts a 400 `VALIDATION_ERROR` whose `details` name exactly `fields` (as a set),
/// each entry carrying a message.
fn assert_fields(r: &Resp, fields: &[&str]) {
    r.assert_error(400, "VALIDATION_ERROR");
    let details = r.body["details"].as_array().expect("details array");
    assert!(!details.is_empty(), "{}", r.text);
    for d in details {
        assert!(
            d["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            r.text
        );
    }
    let got: BTreeSet<String> = detail_fields(r).into_iter().collect();
    let want: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
    assert_eq!(got, want, "{}", r.text);
}

/// Asserts the success envelope with `status`: `success: true`, a `data` object, no `error`.
fn assert_success(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["success"], true, "{}", r.text);
    assert!(r.body["data"].is_object(), "{}", r.text);
    assert!(r.body.get("error").is_none(), "{}", r.text);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
}

#[test]
fn success_envelopes_carry_data() {
    let s = TestServer::start();
    let email = unique_email("envelope");
    let body = json!({"email": email, "password": PASSWORD});
    let reg = s.post_json("/api/auth/register", body.clone());
    assert_success(&reg, 201);
    let user = &reg.body["data"]["user"];
    let keys = keys_of(user);
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "email",
            "name",
            "role",
            "createdAt",
            "lastLoginAt",
            "emailVerified"
        ])
    );
    for key in ["accessToken", "refreshToken", "tokenType", "expiresIn"] {
        assert!(reg.body["data"].get(key).is_some(), "{key}: {}", reg.text);
    }
    let login = s.post_json("/api/auth/login", body);
    assert_success(&login, 200);
    let access = login.body["data"]["accessToken"].as_str().unwrap();
    let profile = s.get_auth("/api/auth/profile", access);
    assert_success(&profile, 200);
    assert_eq!(profile.body["data"]["user"]["email"], email.as_str());
    let sessions = s.get_auth("/api/auth/sessions", access);
    assert_success(&sessions, 200);
    assert!(sessions.body["data"]["sessions"].is_array());
    let refreshed = s.refresh(login.body["data"]["refreshToken"].as_str().unwrap());
    assert_success(&refreshed, 200);
}

#[test]
fn unknown_paths_are_json_404() {
    let s = TestServer::start();
    for path in [
        "/nope",
        "/api/auth/nope",
        "/api/auth",
        "/api/auth/",
        "/api/auth/login/extra",
        "/api/auth/sessions/a/b",
        "/.well-known/nope",
    ] {
        for r in [send(s.get(path)), send(s.post(path))] {
            r.assert_error(404, "NOT_FOUND");
        }
    }
}

#[test]
fn wrong_method_on_known_path_is_json_405_with_allow() {
    let s = TestServer::start();
    let cases = [
        (send(s.get("/api/auth/login")), "POST"),
        (send(s.get("/api/auth/register")), "POST"),
        (send(s.get("/api/auth/refresh")), "POST"),
        (send(s.delete("/api/auth/profile")), "GET"),
        (send(s.post("/api/auth/profile")), "GET"),
        (send(s.post("/api/auth/sessions")), "GET"),
        (send(s.get("/api/auth/sessions/abc")), "DELETE"),
        (send(s.post("/healthz")), "GET"),
        (send(s.delete("/healthz")), "GET"),
        (send(s.post("/metrics")), "GET"),
        (send(s.post("/.well-known/jwks.json")), "GET"),
        (send(s.client.put(s.url("/api/auth/login"))), "POST"),
    ];
    for (r, allow) in cases {
        r.assert_error(405, "METHOD_NOT_ALLOWED");
        // RFC 9110: a 405 names the methods the resource does answer.
        assert_eq!(r.header("allow"), Some(allow), "Allow of {}", r.text);
    }
}

#[test]
fn register_and_login_require_a_json_content_type() {
    let s = TestServer::start();
    let email = unique_email("ctype");
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    for path in ["/api/auth/register", "/api/auth/login"] {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("application/json; charset=latin1"),
        ] {
            let r = post_raw(&s, path, ct, body.clone().into_bytes());
            r.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
        }
    }
    // None of those created the account.
    let login = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    login.assert_error(401, "INVALID_CREDENTIALS");

    let reg = post_raw(
        &s,
        "/api/auth/register",
        Some("application/json; charset=utf-8"),
        body.clone().into_bytes(),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let login = post_raw(
        &s,
        "/api/auth/login",
        Some("application/json; charset=utf-8"),
        body.into_bytes(),
    );
    assert_eq!(login.status, 200, "{}", login.text);
}

#[test]
fn token_endpoints_accept_an_empty_body_without_content_type() {
    let s = TestServer::start();
    // No token anywhere: the empty body was accepted and the token is what is missing.
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        send(s.post(path)).assert_error(401, "TOKEN_MISSING");
        post_raw(&s, path, None, Vec::new()).assert_error(401, "TOKEN_MISSING");
    }
    send(s.post("/api/auth/logout-all")).assert_error(401, "TOKEN_MISSING");

    // With the cookie (refresh, logout) or the bearer (logout-all), an empty body succeeds.
    let email = unique_email("empty");
    let data = s.register(&email);
    let refresh = data["refreshToken"].as_str().unwrap();
    let cookie = format!("authd_refresh={refresh}");
    let rotated = send(s.post("/api/auth/refresh").header("cookie", &cookie));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let newer = rotated.body["data"]["refreshToken"].as_str().unwrap();
    let out = send(
        s.post("/api/auth/logout")
            .header("cookie", format!("authd_refresh={newer}")),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    s.refresh(newer).assert_error(401, "TOKEN_REVOKED");

    let again = s.login(&email);
    let all = send(
        s.post("/api/auth/logout-all")
            .bearer_auth(again["accessToken"].as_str().unwrap()),
    );
    assert_eq!(all.status, 200, "{}", all.text);
    assert!(all.body["data"]["revokedSessions"].as_u64().unwrap() >= 1);

    // A non-empty body on those routes still needs application/json.
    let other = s.login(&email);
    let token = other["refreshToken"].as_str().unwrap();
    let plain = post_raw(
        &s,
        "/api/auth/refresh",
        Some("text/plain"),
        json!({ "refreshToken": token }).to_string().into_bytes(),
    );
    plain.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let form = post_raw(
        &s,
        "/api/auth/logout",
        Some("application/x-www-form-urlencoded"),
        format!("refreshToken={token}").into_bytes(),
    );
    form.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    // Neither consumed the token.
    assert_eq!(s.refresh(token).status, 200);
}

#[test]
fn bodies_over_the_default_limit_are_413() {
    let s = TestServer::start();
    assert_eq!(s.settings.server.body_limit, 16384);
    let at_limit = register_body_of_len(&unique_email("limit"), 16384);
    let r = post_raw(&s, "/api/auth/register", Some("application/json"), at_limit);
    assert_eq!(
        r.status, 201,
        "a body of exactly the limit is fine: {}",
        r.text
    );

    let email = unique_email("over");
    for path in ["/api/auth/register", "/api/auth/login", "/api/auth/refresh"] {
        let over = register_body_of_len(&email, 16385);
        post_raw(&s, path, Some("application/json"), over).assert_error(413, "PAYLOAD_TOO_LARGE");
        let chunked = register_body_of_len(&email, 20_000);
        post_chunked(&s, path, chunked).assert_error(413, "PAYLOAD_TOO_LARGE");
    }
    let big_name = json!({"email": email, "password": PASSWORD, "name": "x".repeat(17_000)});
    s.post_json("/api/auth/register", big_name)
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    // Nothing was registered by the refused bodies.
    let login = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    login.assert_error(401, "INVALID_CREDENTIALS");
}

#[test]
fn a_configured_small_body_limit_is_enforced() {
    let s = TestServer::with(&[("AUTHD_SERVER__BODY_LIMIT", "256")]);
    let ok = register_body_of_len(&unique_email("small"), 256);
    let r = post_raw(&s, "/api/auth/register", Some("application/json"), ok);
    assert_eq!(r.status, 201, "{}", r.text);

    let email = unique_email("small");
    let over = register_body_of_len(&email, 257);
    post_raw(&s, "/api/auth/register", Some("application/json"), over)
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    let chunked = register_body_of_len(&email, 1000);
    post_chunked(&s, "/api/auth/register", chunked).assert_error(413, "PAYLOAD_TOO_LARGE");
    let login = register_body_of_len(&email, 300);
    post_raw(&s, "/api/auth/login", Some("application/json"), login)
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    let refresh = json!({"refreshToken": "x".repeat(300)});
    s.post_json("/api/auth/refresh", refresh)
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    let chunked_refresh = json!({"refreshToken": "x".repeat(300)}).to_string();
    post_chunked(&s, "/api/auth/logout", chunked_refresh.into_bytes())
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .assert_error(401, "INVALID_CREDENTIALS");
}

#[test]
fn bodies_that_are_not_one_json_object_are_malformed() {
    let s = TestServer::start();
    let email = unique_email("malformed");
    let dup = format!(r#"{{"email":"{email}","email":"c@d.io","password":"{PASSWORD}"}}"#);
    let mut bad_utf8 = format!(r#"{{"email":"{email}","password":"Correct-horse-"#).into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe9\"}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated",
            format!(r#"{{"email":"{email}","password""#).into_bytes(),
        ),
        ("array", b"[]".to_vec()),
        (
            "array of object",
            format!(r#"[{{"email":"{email}","password":"{PASSWORD}"}}]"#).into_bytes(),
        ),
        ("string", br#""hello""#.to_vec()),
        ("null", b"null".to_vec()),
        ("number", b"42".to_vec()),
        ("true", b"true".to_vec()),
        ("duplicate keys", dup.into_bytes()),
        ("invalid utf-8", bad_utf8),
        ("empty", Vec::new()),
        ("whitespace", b"   ".to_vec()),
        (
            "trailing garbage",
            format!(r#"{{"email":"{email}","password":"{PASSWORD}"}} x"#).into_bytes(),
        ),
        ("two objects", b"{}{}".to_vec()),
        ("single quotes", b"{'email':'a@b.io'}".to_vec()),
        ("comment", b"{/* hi */}".to_vec()),
        ("trailing comma", br#"{"email":"a@b.io",}"#.to_vec()),
    ];
    for (what, body) in cases {
        for path in ["/api/auth/register", "/api/auth/login"] {
            let r = post_raw(&s, path, Some("application/json"), body.clone());
            assert_eq!(r.status, 400, "{what} on {path}: {}", r.text);
            r.assert_error(400, "MALFORMED_JSON");
        }
    }
    for body in [&b"[]"[..], b"null", b"\"tok\"", b"{\"refreshToken\":"] {
        post_raw(
            &s,
            "/api/auth/refresh",
            Some("application/json"),
            body.to_vec(),
        )
        .assert_error(400, "MALFORMED_JSON");
    }
    // The duplicate-key body created nothing under either address.
    for e in [email.as_str(), "c@d.io"] {
        s.post_json("/api/auth/login", json!({"email": e, "password": PASSWORD}))
            .assert_error(401, "INVALID_CREDENTIALS");
    }
}

#[test]
fn a_nesting_bomb_is_malformed_json_and_the_server_survives() {
    let s = TestServer::with(&[("AUTHD_SERVER__BODY_LIMIT", "65536")]);
    let arrays = format!(
        r#"{{"email":{}{},"password":"{PASSWORD}"}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let objects = format!(
        r#"{{"email":"a@b.io","password":"{PASSWORD}","name":{}1{}}}"#,
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    for body in [arrays, objects] {
        assert!(body.len() < 65536);
        for path in ["/api/auth/register", "/api/auth/login"] {
            post_raw(
                &s,
                path,
                Some("application/json"),
                body.clone().into_bytes(),
            )
            .assert_error(400, "MALFORMED_JSON");
        }
    }
    assert_eq!(send(s.get("/healthz")).status, 200);
    s.register(&unique_email("after-bomb"));
}

#[test]
fn unknown_fields_are_validation_errors_naming_them() {
    let s = TestServer::start();
    let email = unique_email("unknown");
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD, "role": "admin"}),
    );
    assert_fields(&r, &["role"]);
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD, "isAdmin": true}),
    );
    assert_fields(&r, &["isAdmin"]);
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD, "role": "admin", "isAdmin": true}),
    );
    assert_fields(&r, &["role", "isAdmin"]);
    // Neither attempt created an account (let alone an admin).
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .assert_error(401, "INVALID_CREDENTIALS");

    s.register(&email);
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD, "role": "admin"}),
    );
    assert_fields(&r, &["role"]);
    let data = s.login(&email);
    assert_eq!(data["user"]["role"], "user");
    let token = data["refreshToken"].as_str().unwrap();
    let r = s.post_json(
        "/api/auth/refresh",
        json!({"refreshToken": token, "extra": 1}),
    );
    assert_fields(&r, &["extra"]);
    let r = s.post_json(
        "/api/auth/logout",
        json!({"refreshToken": token, "all": true}),
    );
    assert_fields(&r, &["all"]);
    let r = send(
        s.post("/api/auth/logout-all")
            .bearer_auth(data["accessToken"].as_str().unwrap())
            .json(&json!({"userId": "someone-else"})),
    );
    assert_fields(&r, &["userId"]);
    // The refused refresh and logout left the token working.
    assert_eq!(s.refresh(token).status, 200);
}

#[test]
fn wrong_types_nulls_and_missing_fields_are_named() {
    let s = TestServer::start();
    let email = unique_email("types");
    let reg = "/api/auth/register";
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"email": 123, "password": PASSWORD}), &["email"]),
        (json!({"email": email, "password": []}), &["password"]),
        (
            json!({"email": email, "password": PASSWORD, "name": {}}),
            &["name"],
        ),
        (
            json!({"email": true, "password": 12345678, "name": ["x"]}),
            &["email", "password", "name"],
        ),
        (json!({"email": null, "password": PASSWORD}), &["email"]),
        (json!({"email": email, "password": null}), &["password"]),
        (
            json!({"email": null, "password": null}),
            &["email", "password"],
        ),
        (json!({}), &["email", "password"]),
        (json!({"email": email}), &["password"]),
        (json!({"password": PASSWORD}), &["email"]),
        (json!({"email": "", "password": PASSWORD}), &["email"]),
    ];
    for (body, fields) in cases {
        let r = s.post_json(reg, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_fields(&r, fields);
    }
    let login_cases: Vec<(Value, &[&str])> = vec![
        (json!({}), &["email", "password"]),
        (json!({"email": email}), &["password"]),
        (json!({"email": 1, "password": PASSWORD}), &["email"]),
        (json!({"email": email, "password": {}}), &["password"]),
        (json!({"email": null, "password": PASSWORD}), &["email"]),
    ];
    for (body, fields) in login_cases {
        let r = s.post_json("/api/auth/login", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_fields(&r, fields);
    }
    let r = s.post_json("/api/auth/refresh", json!({"refreshToken": 42}));
    assert_fields(&r, &["refreshToken"]);

    // An explicit null name is no name.
    let r = s.post_json(
        reg,
        json!({"email": email, "password": PASSWORD, "name": null}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["data"]["user"]["name"].is_null());
}

#[test]
fn every_failed_password_rule_is_one_detail() {
    let s = TestServer::start();
    let cases: [(&str, usize); 7] = [
        ("abc", 3),      // length, digit, symbol
        ("abcdefgh", 2), // digit, symbol
        ("12345678", 2), // letter, symbol
        ("!!!!!!!!", 2), // letter, digit
        ("abcdefg1", 1), // symbol
        ("Ab1!", 1),     // length
        ("", 4),         // length, letter, digit, symbol (or "required")
    ];
    let mut all_messages = BTreeSet::new();
    for (password, n) in cases {
        let r = register_with(&s, &unique_email("rules"), password);
        r.assert_error(400, "VALIDATION_ERROR");
        let details = r.body["details"].as_array().unwrap();
        if password.is_empty() {
            assert!(!details.is_empty(), "{}", r.text);
            continue;
        }
        assert_eq!(details.len(), n, "{password:?}: {}", r.text);
        let msgs: BTreeSet<&str> = details
            .iter()
            .map(|d| {
                assert_eq!(d["field"], "password", "{}", r.text);
                d["message"].as_str().unwrap()
            })
            .collect();
        assert_eq!(msgs.len(), n, "one distinct message per rule: {}", r.text);
        all_messages.extend(msgs.into_iter().map(String::from));
    }
    // length, letter, digit, symbol: four distinct rules in all.
    assert_eq!(all_messages.len(), 4, "{all_messages:?}");
    // A failed rule on another field is reported next to the password's.
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": "plainaddress", "password": "abc"}),
    );
    r.assert_error(400, "VALIDATION_ERROR");
    let fields = detail_fields(&r);
    assert!(fields.contains(&"email".to_string()), "{}", r.text);
    assert_eq!(fields.iter().filter(|f| *f == "password").count(), 3);
}

#[test]
fn passwords_are_limited_to_72_bytes_after_nfkc() {
    let s = TestServer::start();
    let ascii72 = format!("Aa1!{}", "x".repeat(68));
    let ascii73 = format!("Aa1!{}", "x".repeat(69));
    let euro72 = format!("a1!{}", "€".repeat(23));
    let euro73 = format!("a1!!{}", "€".repeat(23));
    let euro75 = format!("a1!{}", "€".repeat(24));
    assert_eq!(
        [
            ascii72.len(),
            ascii73.len(),
            euro72.len(),
            euro73.len(),
            euro75.len()
        ],
        [72, 73, 72, 73, 75]
    );
    for long in [&ascii73, &euro73, &euro75] {
        let r = register_with(&s, &unique_email("long"), long);
        assert_fields(&r, &["password"]);
        assert_eq!(r.body["details"].as_array().unwrap().len(), 1, "{}", r.text);
    }
    // Bytes are counted after NFKC: 13 bytes that expand to 103 are too long...
    let expands = format!("Aa1!{}", "\u{FDFA}".repeat(3));
    assert_eq!(expands.len(), 13);
    assert_fields(
        &register_with(&s, &unique_email("nfkc"), &expands),
        &["password"],
    );
    // ...and 73 bytes that shrink to 50 are fine, and log in in either form.
    let shrinks = format!("Aa1!{}", "\u{338F}".repeat(23));
    assert_eq!(shrinks.len(), 73);
    let email = unique_email("shrink");
    assert_eq!(register_with(&s, &email, &shrinks).status, 201);
    for p in [shrinks.clone(), format!("Aa1!{}", "kg".repeat(23))] {
        let r = s.post_json("/api/auth/login", json!({"email": email, "password": p}));
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Up to exactly 72 bytes is within the limit (ASCII, and 3-byte characters).
    let ascii71 = format!("Aa1!{}", "x".repeat(67));
    let at_limit: Vec<(&str, String, Resp)> = [
        ("ascii71", &ascii71),
        ("ascii", &ascii72),
        ("euro", &euro72),
    ]
    .into_iter()
    .map(|(tag, ok)| {
        let email = unique_email(tag);
        let r = register_with(&s, &email, ok);
        (ok.as_str(), email, r)
    })
    .collect();
    let outcomes: Vec<String> = at_limit
        .iter()
        .map(|(ok, _, r)| {
            let code = r.body["error"].as_str().unwrap_or("-");
            format!("{ok:?} ({} bytes) -> {} {code}", ok.len(), r.status)
        })
        .collect();
    assert!(
        at_limit.iter().all(|(_, _, r)| r.status == 201),
        "passwords of up to 72 bytes must be accepted: {outcomes:#?}"
    );
    for (ok, email, _) in at_limit {
        let login = s.post_json("/api/auth/login", json!({"email": email, "password": ok}));
        assert_eq!(login.status, 200, "{}", login.text);
        // Not truncated: one more byte is a different password.
        for extra in ["x", "€"] {
            let longer = format!("{ok}{extra}");
            let r = s.post_json(
                "/api/auth/login",
                json!({"email": email, "password": longer}),
            );
            r.assert_error(401, "INVALID_CREDENTIALS");
        }
    }
}

#[test]
fn names_are_trimmed_bounded_and_printable() {
    let s = TestServer::start();
    for (name, want) in [
        ("x".repeat(100), "x".repeat(100)),
        ("é".repeat(100), "é".repeat(100)),
        (format!("  {}  ", "y".repeat(100)), "y".repeat(100)),
        ("Ann".to_string(), "Ann".to_string()),
    ] {
        let r = s.post_json(
            "/api/auth/register",
            json!({"email": unique_email("name"), "password": PASSWORD, "name": name}),
        );
        assert_eq!(r.status, 201, "{name:?}: {}", r.text);
        assert_eq!(r.body["data"]["user"]["name"], want.as_str());
    }
    for name in [
        "x".repeat(101),
        "é".repeat(101),
        String::new(),
        "   ".to_string(),
        "\t \u{3000}".to_string(),
        "a\u{7}b".to_string(),
        "a\u{1b}[31mred".to_string(),
        "a\tb".to_string(),
        "a\u{7f}b".to_string(),
        "a\u{85}b".to_string(),
    ] {
        let email = unique_email("badname");
        let r = s.post_json(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD, "name": name}),
        );
        assert_eq!(r.status, 400, "{name:?}: {}", r.text);
        assert_fields(&r, &["name"]);
        s.post_json(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD}),
        )
        .assert_error(401, "INVALID_CREDENTIALS");
    }
}

#[test]
fn emails_must_be_valid_and_at_most_254_characters() {
    let s = TestServer::start();
    let local = "a".repeat(64);
    let at_254 = format!(
        "{local}@{}.{}.{}.io",
        "b".repeat(61),
        "c".repeat(61),
        "d".repeat(62)
    );
    assert_eq!(at_254.len(), 254);
    let r = register_with(&s, &at_254, PASSWORD);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["email"], at_254.as_str());

    let over = format!(
        "{local}@{}.{}.{}.{}.io",
        "b".repeat(47),
        "c".repeat(47),
        "d".repeat(47),
        "e".repeat(47)
    );
    assert_eq!(over.len(), 259);
    let too_long = format!("{}@x.io", "a".repeat(300));
    for bad in [
        over.as_str(),
        too_long.as_str(),
        "plainaddress",
        "@x.io",
        "a@",
        "a b@x.io",
        "a@b@x.io",
        "a@x",
        "a@x..io",
        ".a@x.io",
        "a@-x.io",
        "a@x.io.",
        "<a@x.io>",
        "a@[127.0.0.1]",
        "   ",
    ] {
        let r = register_with(&s, bad, PASSWORD);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text);
        assert_fields(&r, &["email"]);
    }
}

#[test]
fn registering_an_existing_email_is_409() {
    let s = TestServer::start();
    let email = unique_email("dup");
    let first = s.register(&email);
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": "Another-pass-1", "name": "Other"}),
    );
    r.assert_error(409, "EMAIL_TAKEN");
    assert!(r.body.get("data").is_none());
    // The original account is untouched: its password still works, the new one does not.
    let login = s.login(&email);
    assert_eq!(login["user"]["id"], first["user"]["id"]);
    assert!(login["user"]["name"].is_null());
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": "Another-pass-1"}),
    )
    .assert_error(401, "INVALID_CREDENTIALS");
}

#[test]
fn unknown_email_and_wrong_password_are_indistinguishable() {
    let s = TestServer::start();
    let email = unique_email("creds");
    s.register(&email);
    let unknown = s.post_json(
        "/api/auth/login",
        json!({"email": unique_email("ghost"), "password": PASSWORD}),
    );
    let wrong = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": "Wrong-horse-9"}),
    );
    unknown.assert_error(401, "INVALID_CREDENTIALS");
    wrong.assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(unknown.text.len(), wrong.text.len());
    assert_eq!(unknown.header_names(), wrong.header_names());
    for (name, value) in unknown.headers.iter() {
        if name == "x-request-id" || name == "date" {
            continue;
        }
        let other: Vec<_> = wrong.headers.get_all(name).iter().collect();
        assert!(
            other.contains(&value),
            "header {name} differs: {value:?} vs {other:?}"
        );
    }
    assert!(unknown.cookie("authd_refresh").is_none());
    assert!(wrong.cookie("authd_refresh").is_none());
}

#[test]
fn health_readiness_and_jwks_are_bare_json() {
    let s = TestServer::start();
    let h = send(s.get("/healthz"));
    assert_eq!(h.status, 200);
    assert_eq!(h.body, json!({"status": "ok"}));
    assert!(h
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let r = send(s.get("/readyz"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.is_object(), "{}", r.text);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let j = send(s.get("/.well-known/jwks.json"));
    assert_eq!(j.status, 200);
    assert!(j
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let keys = j.body["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "EdDSA by default publishes its key");
    for k in keys {
        assert!(k.get("d").is_none(), "no private key material: {k}");
    }
}

#[test]
fn metrics_are_prometheus_text_and_count_logins() {
    let s = TestServer::start();
    let email = unique_email("metrics");
    s.register(&email);
    let data = s.login(&email);
    assert_eq!(
        s.refresh(data["refreshToken"].as_str().unwrap()).status,
        200
    );
    send(s.get("/nope-secret-path-123"));
    let m = send(s.get("/metrics"));
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        m.header("content-type")
    );
    for name in [
        "authd_http_requests_total",
        "authd_http_request_duration_seconds",
        "authd_logins_total",
        "authd_refreshes_total",
        "authd_refresh_reuse_detected_total",
        "authd_active_sessions",
    ] {
        assert!(
            m.text.contains(&format!("# TYPE {name} ")),
            "{name} missing from\n{}",
            m.text
        );
    }
    assert!(
        m.text
            .lines()
            .any(|l| l == r#"authd_logins_total{outcome="success"} 1"#),
        "{}",
        m.text
    );
    assert!(
        m.text
            .lines()
            .any(|l| l.starts_with("authd_http_request_duration_seconds_bucket{")),
        "{}",
        m.text
    );
    assert!(
        !m.text.contains("nope-secret-path-123"),
        "raw paths must not become labels"
    );
    assert!(!m.text.contains(&email), "no personal data in metrics");
}
