//! Refresh rotation, reuse detection and grace, expiry, logout, sessions, access-token claims,
//! the JWKS, storage of refresh tokens, and revocation from another process.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;

/// Part `index` (0 = header, 1 = claims) of a JWT, decoded as JSON.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT has three parts");
    let bytes = B64
        .decode(part)
        .expect("JWT parts are base64url without padding");
    serde_json::from_slice(&bytes).expect("JWT parts are JSON")
}

/// The `sid` claim of an access token.
pub fn sid_of(access: &str) -> String {
    jwt_part(access, 1)["sid"].as_str().unwrap().to_string()
}

/// A string field of a JSON object.
pub fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
        .to_string()
}

/// POST /api/auth/refresh with the token in the cookie only (empty body, no content type).
fn refresh_by_cookie(s: &TestServer, token: &str) -> Resp {
    send(
        s.post("/api/auth/refresh")
            .header("Cookie", format!("authd_refresh={token}")),
    )
}

/// Asserts that `access` is refused on /profile with `code` and an `invalid_token` challenge.
pub fn assert_access_refused(s: &TestServer, access: &str, code: &str) {
    let r = s.get_auth("/api/auth/profile", access);
    r.assert_error(401, code);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
        "challenge: {challenge:?}"
    );
}

fn assert_access_ok(s: &TestServer, access: &str) {
    let r = s.get_auth("/api/auth/profile", access);
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Refreshes `token` and expects success; returns the new `data` object.
fn rotate(s: &TestServer, token: &str) -> Value {
    let r = s.refresh(token);
    assert_eq!(r.status, 200, "refresh: {}", r.text);
    r.body["data"].clone()
}

fn sessions_of(s: &TestServer, access: &str) -> Vec<Value> {
    let r = s.get_auth("/api/auth/sessions", access);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["sessions"].as_array().unwrap().clone()
}

fn is_cleared(set_cookie: &str) -> bool {
    cookie_value(set_cookie).is_empty() && set_cookie.contains("Max-Age=0")
}

#[test]
fn refresh_rotates_the_token_in_the_same_session() {
    let s = TestServer::start();
    let login = s.register(&unique_email("rotate"));
    let r1 = text(&login, "refreshToken");
    let sid = sid_of(&text(&login, "accessToken"));

    let resp = s.refresh(&r1);
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.body["data"];
    let r2 = text(data, "refreshToken");
    let a2 = text(data, "accessToken");
    assert_ne!(r2, r1);
    assert_eq!(data["tokenType"], "Bearer");
    assert_eq!(data["expiresIn"], 900);
    assert_eq!(sid_of(&a2), sid, "the new pair belongs to the same session");
    let cookie = resp
        .cookie("authd_refresh")
        .expect("refresh re-sets the cookie");
    assert_eq!(cookie_value(&cookie), r2);
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=604800",
    ] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }

    // Opaque: no user id, email or session id inside, in the clear or base64-decoded.
    let user_id = text(&login["user"], "id");
    let email = text(&login["user"], "email");
    for token in [&r1, &r2] {
        let mut views = vec![token.to_string()];
        views.extend(
            token
                .split('.')
                .filter_map(|p| B64.decode(p).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        );
        for view in &views {
            for personal in [&user_id, &email, &sid] {
                assert!(
                    !view.contains(personal.as_str()),
                    "{personal} in a refresh token"
                );
            }
        }
    }

    assert_access_ok(&s, &a2);
    let r3 = text(&rotate(&s, &r2), "refreshToken");
    assert_ne!(r3, r2);
    let listed = sessions_of(&s, &a2);
    assert_eq!(listed.len(), 1, "rotation opens no new session: {listed:?}");
    assert_eq!(listed[0]["id"], sid);
}

#[test]
fn refresh_reads_the_cookie_and_the_body_wins_over_it() {
    let s = TestServer::start();
    let email = unique_email("cookie");
    let first = s.register(&email);
    let second = s.login(&email);

    let by_cookie = refresh_by_cookie(&s, &text(&first, "refreshToken"));
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.text);
    let from_cookie = by_cookie.body["data"].clone();
    assert_eq!(
        sid_of(&text(&from_cookie, "accessToken")),
        sid_of(&text(&first, "accessToken"))
    );
    let set = by_cookie.cookie("authd_refresh").expect("cookie re-set");
    assert_eq!(cookie_value(&set), text(&from_cookie, "refreshToken"));

    // Cookie holds session 1's live token, the body session 2's: the body is used.
    let cookie_token = text(&from_cookie, "refreshToken");
    let both = send(
        s.post("/api/auth/refresh")
            .header("Cookie", format!("authd_refresh={cookie_token}"))
            .json(&json!({ "refreshToken": text(&second, "refreshToken") })),
    );
    assert_eq!(both.status, 200, "{}", both.text);
    assert_eq!(
        sid_of(&text(&both.body["data"], "accessToken")),
        sid_of(&text(&second, "accessToken")),
        "the body's token was rotated"
    );
    // The cookie's token was not touched, so it still rotates normally.
    rotate(&s, &cookie_token);

    // A garbage cookie does not matter when the body holds a good token, and vice versa.
    let good = text(&both.body["data"], "refreshToken");
    let bad_body = send(
        s.post("/api/auth/refresh")
            .header("Cookie", format!("authd_refresh={good}"))
            .json(&json!({ "refreshToken": "garbage" })),
    );
    bad_body.assert_error(401, "TOKEN_INVALID");
    let bad_cookie = send(
        s.post("/api/auth/refresh")
            .header("Cookie", "authd_refresh=garbage")
            .json(&json!({ "refreshToken": good })),
    );
    assert_eq!(bad_cookie.status, 200, "{}", bad_cookie.text);
}

#[test]
fn reusing_a_rotated_token_revokes_the_whole_session() {
    let s = TestServer::start();
    let email = unique_email("reuse");
    let login = s.register(&email);
    let other = s.login(&email);
    let r1 = text(&login, "refreshToken");
    let a1 = text(&login, "accessToken");
    let rotated = rotate(&s, &r1);
    let r2 = text(&rotated, "refreshToken");
    let a2 = text(&rotated, "accessToken");
    assert_access_ok(&s, &a2);

    let reuse = s.refresh(&r1);
    reuse.assert_error(401, "TOKEN_REVOKED");
    assert!(reuse.cookie("authd_refresh").is_none_or(|c| is_cleared(&c)));

    s.refresh(&r2).assert_error(401, "TOKEN_REVOKED");
    assert_access_refused(&s, &a2, "TOKEN_REVOKED");
    assert_access_refused(&s, &a1, "TOKEN_REVOKED");
    refresh_by_cookie(&s, &r2).assert_error(401, "TOKEN_REVOKED");

    // The user's other session is untouched.
    assert_access_ok(&s, &text(&other, "accessToken"));
    rotate(&s, &text(&other, "refreshToken"));
}

#[test]
fn a_rotated_token_within_the_grace_gets_a_new_pair_then_reuse_after_it() {
    let s = TestServer::with(&[("AUTHD_JWT__REFRESH_REUSE_GRACE", "3s")]);
    let login = s.register(&unique_email("grace"));
    let sid = sid_of(&text(&login, "accessToken"));
    let r1 = text(&login, "refreshToken");
    let first = rotate(&s, &r1);
    let rotated_at = Instant::now();

    // The lost response's token, presented again within the grace: a new pair, same session.
    let again = rotate(&s, &r1);
    let r2 = text(&first, "refreshToken");
    let r3 = text(&again, "refreshToken");
    assert_ne!(r2, r3);
    assert_eq!(sid_of(&text(&again, "accessToken")), sid);
    assert_access_ok(&s, &text(&first, "accessToken"));
    assert_access_ok(&s, &text(&again, "accessToken"));

    // Every token so issued stays valid: both replacements rotate normally.
    let from_r2 = rotate(&s, &r2);
    let from_r3 = rotate(&s, &r3);
    assert_eq!(sid_of(&text(&from_r2, "accessToken")), sid);
    assert_eq!(sid_of(&text(&from_r3, "accessToken")), sid);
    assert_eq!(sessions_of(&s, &text(&from_r3, "accessToken")).len(), 1);

    // After the grace, presenting r1 again is reuse: the whole session goes.
    let wait = Duration::from_millis(3300).saturating_sub(rotated_at.elapsed());
    std::thread::sleep(wait);
    s.refresh(&r1).assert_error(401, "TOKEN_REVOKED");
    s.refresh(&text(&from_r2, "refreshToken"))
        .assert_error(401, "TOKEN_REVOKED");
    s.refresh(&text(&from_r3, "refreshToken"))
        .assert_error(401, "TOKEN_REVOKED");
    assert_access_refused(&s, &text(&from_r3, "accessToken"), "TOKEN_REVOKED");
}

#[test]
fn concurrent_refreshes_of_one_token_rotate_it_once() {
    let s = TestServer::start();
    let login = s.register(&unique_email("race"));
    let r1 = text(&login, "refreshToken");
    let results: Vec<Resp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| s.refresh(&r1))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "one token, one rotation: {results:?}");
    for r in results.iter().filter(|r| r.status != 200) {
        r.assert_error(401, "TOKEN_REVOKED");
    }
    // The others were reuse, so the session is gone, the winner's new token included.
    let winner = results.iter().find(|r| r.status == 200).unwrap();
    s.refresh(&text(&winner.body["data"], "refreshToken"))
        .assert_error(401, "TOKEN_REVOKED");
}

#[test]
fn strict_mode_has_no_grace() {
    let s = TestServer::start();
    let login = s.register(&unique_email("strict"));
    let r1 = text(&login, "refreshToken");
    let r2 = text(&rotate(&s, &r1), "refreshToken");
    // Immediately after the rotation: with the default 0s grace this is already reuse.
    s.refresh(&r1).assert_error(401, "TOKEN_REVOKED");
    s.refresh(&r2).assert_error(401, "TOKEN_REVOKED");
}

#[test]
fn an_expired_refresh_token_is_token_expired() {
    let s = TestServer::with(&[("AUTHD_JWT__REFRESH_TTL", "1s")]);
    let login = s.post_json(
        "/api/auth/register",
        json!({"email": unique_email("rexp"), "password": PASSWORD}),
    );
    assert_eq!(login.status, 201, "{}", login.text);
    let cookie = login.cookie("authd_refresh").unwrap();
    assert!(cookie.contains("Max-Age=1"), "{cookie}");
    let r1 = text(&login.body["data"], "refreshToken");
    std::thread::sleep(Duration::from_millis(1300));
    s.refresh(&r1).assert_error(401, "TOKEN_EXPIRED");
    refresh_by_cookie(&s, &r1).assert_error(401, "TOKEN_EXPIRED");
    // Distinct from an invalid token on the same server.
    s.refresh("garbage").assert_error(401, "TOKEN_INVALID");
}

#[test]
fn an_expired_access_token_is_token_expired() {
    let s = TestServer::with(&[("AUTHD_JWT__ACCESS_TTL", "1s"), ("AUTHD_JWT__LEEWAY", "0s")]);
    let login = s.register(&unique_email("aexp"));
    assert_eq!(login["expiresIn"], 1);
    let access = text(&login, "accessToken");
    let claims = jwt_part(&access, 1);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1
    );
    assert_access_ok(&s, &access);
    std::thread::sleep(Duration::from_millis(2200));
    assert_access_refused(&s, &access, "TOKEN_EXPIRED");
    let list = s.get_auth("/api/auth/sessions", &access);
    list.assert_error(401, "TOKEN_EXPIRED");
    // The refresh token still works and gives a fresh, accepted access token.
    let fresh = rotate(&s, &text(&login, "refreshToken"));
    assert_access_ok(&s, &text(&fresh, "accessToken"));
}

#[test]
fn invalid_refresh_tokens_are_token_invalid() {
    let s = TestServer::start();
    let other = TestServer::start();
    let login = s.register(&unique_email("inv"));
    let access = text(&login, "accessToken");
    let real = text(&login, "refreshToken");
    let foreign = text(&other.register(&unique_email("foreign")), "refreshToken");

    let (body, tag) = real.split_once('.').unwrap();
    let flipped_tag = format!(
        "{body}.{}{}",
        if tag.starts_with('A') { "B" } else { "A" },
        &tag[1..]
    );
    let garbage = [
        "garbage".to_string(),
        "a.b".to_string(),
        "x".repeat(500),
        format!("{real}x"),
        flipped_tag,
        body.to_string(),
    ];
    for token in &garbage {
        s.refresh(token).assert_error(401, "TOKEN_INVALID");
    }
    let r = s.refresh(&foreign);
    r.assert_error(401, "TOKEN_INVALID");
    refresh_by_cookie(&s, &foreign).assert_error(401, "TOKEN_INVALID");
    s.refresh(&access).assert_error(401, "TOKEN_INVALID");
    refresh_by_cookie(&s, &access).assert_error(401, "TOKEN_INVALID");
    // A refresh token presented as an access token is refused too.
    assert_access_refused(&s, &real, "TOKEN_INVALID");

    // None of that harmed the real tokens: each is valid on its own server.
    rotate(&s, &real);
    rotate(&other, &foreign);
}

#[test]
fn refresh_without_a_token_is_token_missing() {
    let s = TestServer::start();
    let bare = send(s.post("/api/auth/refresh"));
    bare.assert_error(401, "TOKEN_MISSING");
    let empty_object = s.post_json("/api/auth/refresh", json!({}));
    empty_object.assert_error(401, "TOKEN_MISSING");
    let empty_cookie = send(
        s.post("/api/auth/refresh")
            .header("Cookie", "authd_refresh="),
    );
    empty_cookie.assert_error(401, "TOKEN_MISSING");
    let other_cookie = send(s.post("/api/auth/refresh").header("Cookie", "theme=dark"));
    other_cookie.assert_error(401, "TOKEN_MISSING");
}

#[test]
fn logout_revokes_only_that_session_and_clears_the_cookie() {
    let s = TestServer::start();
    let email = unique_email("logout");
    let one = s.register(&email);
    let two = s.login(&email);
    let three = s.login(&email);

    // By cookie, with an empty body and no content type.
    let out = send(s.post("/api/auth/logout").header(
        "Cookie",
        format!("authd_refresh={}", text(&one, "refreshToken")),
    ));
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(out.body["success"], true);
    let cleared = out
        .cookie("authd_refresh")
        .expect("logout clears the cookie");
    assert!(is_cleared(&cleared), "{cleared}");
    assert!(cleared.contains("Path=/api/auth"), "{cleared}");
    s.refresh(&text(&one, "refreshToken"))
        .assert_error(401, "TOKEN_REVOKED");
    assert_access_refused(&s, &text(&one, "accessToken"), "TOKEN_REVOKED");

    // By body.
    let out = s.post_json(
        "/api/auth/logout",
        json!({ "refreshToken": text(&two, "refreshToken") }),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    assert!(is_cleared(&out.cookie("authd_refresh").unwrap()));
    s.refresh(&text(&two, "refreshToken"))
        .assert_error(401, "TOKEN_REVOKED");
    assert_access_refused(&s, &text(&two, "accessToken"), "TOKEN_REVOKED");

    // The third session lives on.
    let a3 = text(&three, "accessToken");
    assert_access_ok(&s, &a3);
    let live = sessions_of(&s, &a3);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["id"], sid_of(&a3));
    rotate(&s, &text(&three, "refreshToken"));
}

#[test]
fn logout_all_revokes_every_session_of_the_user_and_no_other() {
    let s = TestServer::start();
    let email = unique_email("all");
    let mine = [s.register(&email), s.login(&email), s.login(&email)];
    let bystander = s.register(&unique_email("bystander"));

    let out = send(
        s.post("/api/auth/logout-all")
            .bearer_auth(text(&mine[1], "accessToken")),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(out.body["data"]["revokedSessions"], 3, "{}", out.text);
    assert!(is_cleared(
        &out.cookie("authd_refresh").expect("cookie cleared")
    ));

    for data in &mine {
        s.refresh(&text(data, "refreshToken"))
            .assert_error(401, "TOKEN_REVOKED");
        assert_access_refused(&s, &text(data, "accessToken"), "TOKEN_REVOKED");
    }
    assert_access_ok(&s, &text(&bystander, "accessToken"));
    rotate(&s, &text(&bystander, "refreshToken"));

    // A fresh login counts only its own new session.
    let again = s.login(&email);
    let out = send(
        s.post("/api/auth/logout-all")
            .bearer_auth(text(&again, "accessToken"))
            .json(&json!({})),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(out.body["data"]["revokedSessions"], 1, "{}", out.text);
}

#[test]
fn sessions_lists_live_sessions_and_marks_the_current_one() {
    let s = TestServer::start();
    let email = unique_email("list");
    let reg = send(
        s.post("/api/auth/register")
            .header("User-Agent", "agent-one/1.0")
            .json(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let one = reg.body["data"].clone();
    let login = send(
        s.post("/api/auth/login")
            .header("User-Agent", "agent-two/2.0")
            .json(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(login.status, 200, "{}", login.text);
    let two = login.body["data"].clone();
    let gone = s.login(&email);
    let out = s.post_json(
        "/api/auth/logout",
        json!({ "refreshToken": text(&gone, "refreshToken") }),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    let stranger = s.register(&unique_email("stranger"));

    let sid1 = sid_of(&text(&one, "accessToken"));
    let sid2 = sid_of(&text(&two, "accessToken"));
    let listed = sessions_of(&s, &text(&two, "accessToken"));
    let ids: BTreeSet<String> = listed.iter().map(|x| text(x, "id")).collect();
    assert_eq!(
        ids,
        BTreeSet::from([sid1.clone(), sid2.clone()]),
        "only live sessions of this user: {listed:?}"
    );
    assert!(!ids.contains(&sid_of(&text(&stranger, "accessToken"))));
    let expected_keys: BTreeSet<&str> = [
        "id",
        "createdAt",
        "lastUsedAt",
        "expiresAt",
        "userAgent",
        "ip",
        "deviceInfo",
        "authMethods",
        "current",
    ]
    .into();
    for item in &listed {
        let keys = keys_of(item);
        assert_eq!(keys, expected_keys, "{item}");
        for field in ["createdAt", "lastUsedAt", "expiresAt"] {
            let t = text(item, field);
            let parsed =
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339);
            assert!(parsed.is_ok() && t.ends_with('Z'), "{field} = {t}");
        }
        assert_eq!(item["ip"], "127.0.0.1");
        let id = text(item, "id");
        assert_eq!(item["current"], id == sid2, "{item}");
        let ua = if id == sid1 {
            "agent-one/1.0"
        } else {
            "agent-two/2.0"
        };
        assert_eq!(item["userAgent"], ua);
    }

    // Seen from the other session, `current` moves with it.
    let from_one = sessions_of(&s, &text(&one, "accessToken"));
    for item in &from_one {
        assert_eq!(item["current"], text(item, "id") == sid1, "{item}");
    }
}

#[test]
fn deleting_a_session_revokes_it_at_once() {
    let s = TestServer::start();
    let email = unique_email("del");
    let one = s.register(&email);
    let two = s.login(&email);
    let stranger = s.register(&unique_email("stranger"));
    let a1 = text(&one, "accessToken");
    let a2 = text(&two, "accessToken");
    let sid1 = sid_of(&a1);
    assert_access_ok(&s, &a1);

    let del = send(
        s.delete(&format!("/api/auth/sessions/{sid1}"))
            .bearer_auth(&a2),
    );
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(del.body["success"], true);
    assert_access_refused(&s, &a1, "TOKEN_REVOKED");
    s.refresh(&text(&one, "refreshToken"))
        .assert_error(401, "TOKEN_REVOKED");
    let ids: Vec<String> = sessions_of(&s, &a2).iter().map(|x| text(x, "id")).collect();
    assert_eq!(ids, vec![sid_of(&a2)]);

    let stranger_sid = sid_of(&text(&stranger, "accessToken"));
    for id in [
        sid1.clone(),
        stranger_sid,
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".to_string(),
    ] {
        let r = send(
            s.delete(&format!("/api/auth/sessions/{id}"))
                .bearer_auth(&a2),
        );
        r.assert_error(404, "NOT_FOUND");
    }
    // The stranger's session survived the attempt.
    assert_access_ok(&s, &text(&stranger, "accessToken"));
    rotate(&s, &text(&stranger, "refreshToken"));

    // A session may delete itself; its own token then stops working.
    let own = send(
        s.delete(&format!("/api/auth/sessions/{}", sid_of(&a2)))
            .bearer_auth(&a2),
    );
    assert_eq!(own.status, 200, "{}", own.text);
    assert_access_refused(&s, &a2, "TOKEN_REVOKED");
}

#[test]
fn access_token_claims_are_exactly_the_contract_set() {
    let s = TestServer::start();
    let email = unique_email("claims");
    let reg = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD, "name": "Claire Claims"}),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let data = &reg.body["data"];
    let access = text(data, "accessToken");
    let claims = jwt_part(&access, 1);
    let keys = keys_of(&claims);
    assert_eq!(
        keys,
        BTreeSet::from(["iss", "aud", "sub", "sid", "role", "iat", "exp", "jti"]),
        "{claims}"
    );
    let payload =
        String::from_utf8(B64.decode(access.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let local = email.split('@').next().unwrap();
    for personal in [email.as_str(), local, "Claire", "Claims"] {
        assert!(!payload.contains(personal), "{personal} in {payload}");
    }
    assert_eq!(claims["sub"], data["user"]["id"]);
    assert_eq!(claims["role"], "user");
    assert_eq!(claims["iss"], "authd");
    assert_eq!(claims["aud"], "authd");
    assert!(uuid::Uuid::parse_str(&text(&claims, "sid")).is_ok());
    assert!(!text(&claims, "jti").is_empty());
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 900);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - iat).abs() < 60, "iat {iat} vs now {now}");
    let header = jwt_part(&access, 0);
    assert_eq!(header["alg"], "EdDSA");

    // A refreshed token has the same claim set and a different jti.
    let fresh = text(&rotate(&s, &text(data, "refreshToken")), "accessToken");
    let fresh_claims = jwt_part(&fresh, 1);
    assert_eq!(fresh_claims.as_object().unwrap().len(), 8);
    assert_ne!(fresh_claims["jti"], claims["jti"]);

    // Lifetime follows jwt.access_ttl.
    let custom = TestServer::with(&[("AUTHD_JWT__ACCESS_TTL", "5m")]);
    let data = custom.register(&unique_email("ttl"));
    assert_eq!(data["expiresIn"], 300);
    let c = jwt_part(&text(&data, "accessToken"), 1);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
}

#[test]
fn bearer_401s_carry_a_www_authenticate_challenge() {
    let s = TestServer::start();
    let login = s.register(&unique_email("challenge"));
    let refresh_token = text(&login, "refreshToken");
    let sid = sid_of(&text(&login, "accessToken"));
    let delete_path = format!("/api/auth/sessions/{sid}");
    let routes: Vec<(&str, String)> = vec![
        ("GET", "/api/auth/profile".into()),
        ("GET", "/api/auth/sessions".into()),
        ("DELETE", delete_path),
        ("POST", "/api/auth/logout-all".into()),
    ];
    let request = |method: &str, path: &str| match method {
        "GET" => s.get(path),
        "DELETE" => s.delete(path),
        _ => s.post(path),
    };
    for (method, path) in &routes {
        let none = send(request(method, path));
        none.assert_error(401, "TOKEN_MISSING");
        let challenge = none.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{method} {path}: {challenge:?}"
        );

        for (token, code) in [
            ("garbage", "TOKEN_INVALID"),
            (refresh_token.as_str(), "TOKEN_INVALID"),
        ] {
            let r = send(request(method, path).bearer_auth(token));
            r.assert_error(401, code);
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
                "{method} {path}: {challenge:?}"
            );
        }
        // Not from the URL.
        let by_query = send(request(
            method,
            &format!("{path}?access_token={}", text(&login, "accessToken")),
        ));
        assert_eq!(by_query.status, 401, "{method} {path}: {}", by_query.text);
    }
    // The session was not harmed by any of it.
    assert_access_ok(&s, &text(&login, "accessToken"));
}

#[test]
fn jwks_publishes_one_ed25519_key_by_default() {
    let s = TestServer::start();
    let r = send(s.get("/.well-known/jwks.json"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let root = keys_of(&r.body);
    assert_eq!(root, BTreeSet::from(["keys"]));
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", r.text);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert!(!text(key, "kid").is_empty());
    assert_eq!(B64.decode(text(key, "x")).unwrap().len(), 32);
    assert!(key.get("d").is_none(), "no private part: {key}");

    let access = text(&s.register(&unique_email("jwks")), "accessToken");
    let header = jwt_part(&access, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key["kid"]);

    // The published key really verifies the token.
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let x: [u8; 32] = B64.decode(text(key, "x")).unwrap().try_into().unwrap();
    let public = VerifyingKey::from_bytes(&x).unwrap();
    let (signed, sig) = access.rsplit_once('.').unwrap();
    let sig = Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
    assert!(public.verify(signed.as_bytes(), &sig).is_ok());
}

#[test]
fn jwks_is_empty_with_hs256_and_tokens_use_it() {
    let s = TestServer::with(&[("AUTHD_JWT__ALGORITHM", "HS256")]);
    let r = send(s.get("/.well-known/jwks.json"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({ "keys": [] }));
    let login = s.register(&unique_email("hs"));
    let access = text(&login, "accessToken");
    assert_eq!(jwt_part(&access, 0)["alg"], "HS256");
    assert_access_ok(&s, &access);
}

#[test]
fn refresh_tokens_are_never_stored_in_the_clear() {
    // SQLite-only: scans every table of the SQLite file.
    let s = TestServer::sqlite_only(&[]);
    let email = unique_email("store");
    let mut tokens = vec![text(&s.register(&email), "refreshToken")];
    let login = s.login(&email);
    tokens.push(text(&login, "refreshToken"));
    tokens.push(text(
        &rotate(&s, &text(&login, "refreshToken")),
        "refreshToken",
    ));
    let out = s.post_json("/api/auth/logout", json!({ "refreshToken": tokens[0] }));
    assert_eq!(out.status, 200, "{}", out.text);

    let db = rusqlite::Connection::open_with_flags(
        s.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let hashes: Vec<String> = db
        .prepare("SELECT token_hash FROM refresh_tokens")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(hashes.len(), 3, "{hashes:?}");
    for h in &hashes {
        assert!(
            h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()),
            "{h}"
        );
        assert!(!tokens.contains(h));
    }

    // No text anywhere in the database holds a token or either of its halves.
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.iter().any(|t| t == "sessions"));
    let mut needles: Vec<String> = Vec::new();
    for t in &tokens {
        needles.push(t.clone());
        needles.extend(t.split('.').filter(|p| p.len() >= 16).map(String::from));
    }
    let mut scanned = 0;
    for table in &tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let value = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    _ => continue,
                };
                scanned += 1;
                for n in &needles {
                    assert!(!value.contains(n.as_str()), "{table} holds a refresh token");
                }
            }
        }
    }
    assert!(scanned > 0);
}

#[test]
fn revoke_sessions_from_another_process_takes_effect_at_once() {
    let s = TestServer::start();
    let email = unique_email("cli");
    let one = s.register(&email);
    let two = s.login(&email);
    let bystander = s.register(&unique_email("bystander"));
    assert_access_ok(&s, &text(&one, "accessToken"));

    let out = Command::new(authd_bin())
        .args(["revoke-sessions", "--email", &email, "--yes"])
        .current_dir(s.dir.path())
        .env("AUTHD_DATABASE__URL", s.database_url())
        .env("AUTHD_JWT__KEY_DIR", s.dir.path().join("keys"))
        .env("AUTHD_LOG__LEVEL", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("authd runs");
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains('2'));

    for data in [&one, &two] {
        assert_access_refused(&s, &text(data, "accessToken"), "TOKEN_REVOKED");
        s.refresh(&text(data, "refreshToken"))
            .assert_error(401, "TOKEN_REVOKED");
    }
    assert_access_ok(&s, &text(&bystander, "accessToken"));
}
