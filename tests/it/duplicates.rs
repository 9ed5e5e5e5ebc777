//! Headers and cookies that appear twice: two refresh cookies (one header or several, one
//! planted from a sibling subdomain) are refused on refresh and logout, nothing spent and the
//! refusal audited; two `Authorization`, `Origin` or `Content-Type` headers are refused; a
//! `__Host-` cookie name is set the way browsers accept it.

use serde_json::json;

use crate::support::*;

const APP: &str = "https://app.example.org";

/// A user's refresh and access tokens.
struct Account {
    email: String,
    refresh: String,
}

fn account(s: &TestServer, tag: &str) -> Account {
    let data = s.register(&unique_email(tag));
    Account {
        email: data["user"]["email"].as_str().unwrap().to_string(),
        refresh: data["refreshToken"].as_str().unwrap().to_string(),
    }
}

/// POSTs an empty body to `path` with each of `cookies` as its own `Cookie` header.
fn post_cookies(s: &TestServer, path: &str, cookies: &[String]) -> Resp {
    let mut req = s.post(path);
    for c in cookies {
        req = req.header("cookie", c);
    }
    send(req)
}

fn ambiguous_refusals(s: &TestServer) -> usize {
    s.query_column(
        "SELECT COUNT(*) FROM audit_events WHERE reason = 'ambiguous_cookie' AND outcome = 'failure'",
        &[],
    )[0]
    .parse()
    .unwrap()
}

/// The email of the user whose access token `r` (a refresh answer) carries.
fn owner(s: &TestServer, r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    let access = r.body["data"]["accessToken"].as_str().unwrap();
    s.get_auth("/api/auth/profile", access).body["data"]["user"]["email"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn two_refresh_cookies_are_refused_and_nothing_is_spent() {
    let s = TestServer::start();
    let victim = account(&s, "victim");
    let planter = account(&s, "planter");
    let (v, p) = (&victim.refresh, &planter.refresh);
    let pair = |a: &str, b: &str| vec![format!("authd_refresh={a}; authd_refresh={b}")];
    let split = |a: &str, b: &str| vec![format!("authd_refresh={a}"), format!("authd_refresh={b}")];
    let requests = [
        pair(v, p),
        pair(p, v),
        split(v, p),
        split(p, v),
        pair(v, "garbage"),
        split("garbage", v),
        split(v, ""),
        vec![
            format!("theme=dark; authd_refresh={v}"),
            format!("authd_refresh ={p}"),
        ],
    ];
    let mut refused = 0;
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        for cookies in &requests {
            let r = post_cookies(&s, path, cookies);
            r.assert_error(401, "TOKEN_INVALID");
            refused += 1;
        }
    }
    assert_eq!(ambiguous_refusals(&s), refused, "every refusal audited");
    // Neither session was rotated nor revoked: each token still refreshes, as its own user.
    assert_eq!(owner(&s, &s.refresh(v)), victim.email);
    assert_eq!(owner(&s, &s.refresh(p)), planter.email);
}

#[test]
fn look_alike_cookie_names_are_never_read() {
    let s = TestServer::start();
    let victim = account(&s, "victim");
    let planter = account(&s, "planter");
    let p = &planter.refresh;
    // Names that differ in case or are percent-encoded are other cookies to a browser.
    let cookies = vec![format!(
        "AUTHD_REFRESH={p}; authd%5Frefresh={p}; authd_refresh={}; Authd_Refresh={p}",
        victim.refresh
    )];
    let r = post_cookies(&s, "/api/auth/refresh", &cookies);
    assert_eq!(owner(&s, &r), victim.email);
    // White space around the name is not part of it (RFC 6265 section 5.2): the same cookie.
    let r = post_cookies(
        &s,
        "/api/auth/refresh",
        &[format!(
            "theme=dark;  authd_refresh = {}",
            r.body["data"]["refreshToken"].as_str().unwrap()
        )],
    );
    assert_eq!(owner(&s, &r), victim.email);
    // Alone, a look-alike is no refresh cookie at all.
    post_cookies(&s, "/api/auth/refresh", &[format!("AUTHD_REFRESH={p}")])
        .assert_error(401, "TOKEN_MISSING");
    assert_eq!(owner(&s, &s.refresh(p)), planter.email);
}

#[test]
fn a_body_token_wins_over_two_cookies() {
    let s = TestServer::start();
    let victim = account(&s, "victim");
    let planter = account(&s, "planter");
    let cookies = format!(
        "authd_refresh={}; authd_refresh={}",
        planter.refresh, victim.refresh
    );
    let r = send(
        s.post("/api/auth/refresh")
            .header("cookie", &cookies)
            .json(&json!({"refreshToken": victim.refresh})),
    );
    let rotated = r.body["data"]["refreshToken"].as_str().unwrap().to_string();
    assert_eq!(owner(&s, &r), victim.email);
    let r = send(
        s.post("/api/auth/logout")
            .header("cookie", &cookies)
            .json(&json!({"refreshToken": rotated})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    s.refresh(&rotated).assert_error(401, "TOKEN_REVOKED");
    assert_eq!(ambiguous_refusals(&s), 0);
    // Without a body token, the same two cookies are refused.
    let r = send(s.post("/api/auth/refresh").header("cookie", &cookies));
    r.assert_error(401, "TOKEN_INVALID");
    assert_eq!(ambiguous_refusals(&s), 1);
    assert_eq!(owner(&s, &s.refresh(&planter.refresh)), planter.email);
}

#[test]
fn two_authorization_origin_or_content_type_headers_are_refused() {
    let s = TestServer::with(&[("AUTHD_SERVER__CORS_ORIGINS", APP)]);
    let a = s.register(&unique_email("a"));
    let b = s.register(&unique_email("b"));
    let (ta, tb) = (
        a["accessToken"].as_str().unwrap(),
        b["accessToken"].as_str().unwrap(),
    );
    for (first, second) in [(ta, tb), (tb, ta), (ta, ta)] {
        let r = send(
            s.get("/api/auth/profile")
                .header("authorization", format!("Bearer {first}"))
                .header("authorization", format!("Bearer {second}")),
        );
        r.assert_error(401, "TOKEN_INVALID");
        assert!(r.header("www-authenticate").is_some(), "{:?}", r.headers);
    }
    let refresh = a["refreshToken"].as_str().unwrap();
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        for origins in [
            [APP, "https://evil.example.org"],
            ["https://evil.example.org", APP],
            [APP, APP],
        ] {
            send(
                s.post(path)
                    .header("origin", origins[0])
                    .header("origin", origins[1])
                    .json(&json!({"refreshToken": refresh})),
            )
            .assert_error(403, "FORBIDDEN");
        }
    }
    let body = json!({"email": unique_email("c"), "password": PASSWORD}).to_string();
    for types in [
        ["application/json", "text/plain"],
        ["text/plain", "application/json"],
    ] {
        send(
            s.post("/api/auth/login")
                .header("content-type", types[0])
                .header("content-type", types[1])
                .body(body.clone()),
        )
        .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    }
    assert_eq!(
        owner(&s, &s.refresh(refresh)),
        a["user"]["email"].as_str().unwrap()
    );
}

#[test]
fn a_host_prefixed_cookie_name_is_set_with_path_slash_and_secure() {
    let name = "__Host-authd_refresh";
    let s = TestServer::with(&[("AUTHD_COOKIE__NAME", name)]);
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": unique_email("host"), "password": PASSWORD}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let set = r.cookie(name).expect("a __Host- refresh cookie");
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    for needed in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(attrs.contains(&needed), "{needed} in {set}");
    }
    assert!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "no Domain in {set}"
    );
    let r = post_cookies(
        &s,
        "/api/auth/refresh",
        &[format!("{name}={}", cookie_value(&set))],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let set = r.cookie(name).unwrap();
    // Two of them are refused like two of any name.
    let cookies = vec![
        format!("{name}={}", cookie_value(&set)),
        format!("{name}=x"),
    ];
    post_cookies(&s, "/api/auth/refresh", &cookies).assert_error(401, "TOKEN_INVALID");
    let r = post_cookies(
        &s,
        "/api/auth/logout",
        &[format!("{name}={}", cookie_value(&set))],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let cleared = r.cookie(name).unwrap();
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Path=/;"),
        "{cleared}"
    );
}
