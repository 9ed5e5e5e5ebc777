//! `/api/admin/users...` over HTTP: admins only (403 for others, the stored role decides),
//! cursor pagination, the response shapes, self-protection, and each action biting on the
//! target's next request.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit};
use crate::support::*;

fn get(s: &TestServer, path: &str, token: &str) -> Resp {
    send(s.get(path).bearer_auth(token))
}

/// A POST with no body and no Content-Type.
fn post_empty(s: &TestServer, path: &str, token: &str) -> Resp {
    send(s.post(path).bearer_auth(token))
}

fn post(s: &TestServer, path: &str, token: &str, body: Value) -> Resp {
    send(s.post(path).bearer_auth(token).json(&body))
}

fn delete(s: &TestServer, path: &str, token: &str) -> Resp {
    send(s.delete(path).bearer_auth(token))
}

fn user_id(data: &Value) -> String {
    data["user"]["id"].as_str().unwrap().to_string()
}

fn access(data: &Value) -> String {
    data["accessToken"].as_str().unwrap().to_string()
}

const ACCOUNT_KEYS: [&str; 10] = [
    "createdAt",
    "disabled",
    "email",
    "emailVerified",
    "id",
    "lastLoginAt",
    "lockedUntil",
    "mfa",
    "name",
    "role",
];

/// Every admin route, with a concrete id.
fn admin_routes(id: &str) -> Vec<(&'static str, String)> {
    let u = format!("/api/admin/users/{id}");
    vec![
        ("GET", "/api/admin/users".to_string()),
        ("GET", u.clone()),
        ("DELETE", u.clone()),
        ("POST", format!("{u}/disable")),
        ("POST", format!("{u}/enable")),
        ("POST", format!("{u}/unlock")),
        ("POST", format!("{u}/role")),
        ("POST", format!("{u}/mfa/reset")),
        ("GET", format!("{u}/sessions")),
        ("DELETE", format!("{u}/sessions")),
    ]
}

#[test]
fn only_admins_get_in() {
    let s = TestServer::start();
    let user = s.register(&unique_email("plain"));
    let (token, id) = (access(&user), user_id(&user));
    for (method, path) in admin_routes(&id) {
        let req = |t: Option<&str>| {
            let mut r = s.client.request(method.parse().unwrap(), s.url(&path));
            if let Some(t) = t {
                r = r.bearer_auth(t);
            }
            if method == "POST" {
                r = r.json(&json!({"role": "admin"}));
            }
            send(r)
        };
        let r = req(None);
        r.assert_error(401, "TOKEN_MISSING");
        assert!(r.header("www-authenticate").is_some(), "{method} {path}");
        let r = req(Some("garbage"));
        r.assert_error(401, "TOKEN_INVALID");
        req(Some(&token)).assert_error(403, "FORBIDDEN");
    }
    // The user's role did not change through any of it.
    assert_eq!(
        s.get_auth("/api/auth/profile", &token).body["data"]["user"]["role"],
        "user"
    );
}

#[test]
fn pagination_walks_every_user_exactly_once() {
    let s = TestServer::start();
    let (admin_id, admin) = admin_token(&s);
    let mut expected = vec![admin_id];
    for i in 0..6 {
        expected.push(user_id(&s.register(&unique_email(&format!("page{i}")))));
    }
    for limit in [1, 2, 4, 7, 200] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/admin/users?limit={limit}&cursor={c}"),
                None => format!("/api/admin/users?limit={limit}"),
            };
            let r = get(&s, &path, &admin);
            assert_eq!(r.status, 200, "{}", r.text);
            let data = &r.body["data"];
            assert_eq!(keys_of(data), ["nextCursor", "users"].into());
            let page = data["users"].as_array().unwrap();
            assert!(page.len() <= limit, "{limit}: {}", r.text);
            for u in page {
                assert_eq!(keys_of(u), ACCOUNT_KEYS.into(), "{u}");
                seen.push(u["id"].as_str().unwrap().to_string());
            }
            pages += 1;
            match data["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(pages <= 10, "runaway pagination");
        }
        assert_eq!(seen, expected, "limit {limit}: creation order, each once");
    }
    // Default page size, and the last page says so.
    let r = get(&s, "/api/admin/users", &admin);
    assert_eq!(r.body["data"]["users"].as_array().unwrap().len(), 7);
    assert!(r.body["data"]["nextCursor"].is_null());

    for bad in [
        "limit=0",
        "limit=201",
        "limit=abc",
        "limit=-1",
        "cursor=garbage",
        "cursor=%00%01",
    ] {
        let r = get(&s, &format!("/api/admin/users?{bad}"), &admin);
        r.assert_error(400, "VALIDATION_ERROR");
    }

    // email: an exact match of the normalised address.
    let email = unique_email("Findme");
    let id = user_id(&s.register(&email));
    let r = get(
        &s,
        &format!("/api/admin/users?email={}", email.to_uppercase()),
        &admin,
    );
    let found = r.body["data"]["users"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{}", r.text);
    assert_eq!(found[0]["id"], json!(id));
    let r = get(&s, "/api/admin/users?email=nobody%40example.com", &admin);
    assert_eq!(r.body["data"]["users"], json!([]));
}

#[test]
fn show_disable_enable_unlock_and_their_shapes() {
    let s = TestServer::start();
    let (_, admin) = admin_token(&s);
    let target = s.register(&unique_email("target"));
    let (id, token) = (user_id(&target), access(&target));
    let base = format!("/api/admin/users/{id}");

    let r = get(&s, &base, &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["liveSessions", "user"].into());
    assert_eq!(keys_of(&r.body["data"]["user"]), ACCOUNT_KEYS.into());
    assert_eq!(r.body["data"]["liveSessions"], 1);
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Unknown and non-UUID ids.
    let ghost = uuid::Uuid::new_v4();
    for path in [
        format!("/api/admin/users/{ghost}"),
        "/api/admin/users/not-a-uuid".to_string(),
    ] {
        get(&s, &path, &admin).assert_error(404, "NOT_FOUND");
        post_empty(&s, &format!("{path}/disable"), &admin).assert_error(404, "NOT_FOUND");
        delete(&s, &path, &admin).assert_error(404, "NOT_FOUND");
        get(&s, &format!("{path}/sessions"), &admin).assert_error(404, "NOT_FOUND");
    }

    // Disable: empty body without Content-Type.
    let r = post_empty(&s, &format!("{base}/disable"), &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["revokedSessions", "user"].into());
    assert_eq!(r.body["data"]["revokedSessions"], 1);
    assert_eq!(r.body["data"]["user"]["disabled"], true);
    s.get_auth("/api/auth/profile", &token)
        .assert_error(401, "TOKEN_REVOKED");

    // Enable with `{}`; an unknown field or a non-JSON body is refused.
    let r = post(&s, &format!("{base}/enable"), &admin, json!({"x": 1}));
    r.assert_error(400, "VALIDATION_ERROR");
    let r = send(
        s.post(&format!("{base}/enable"))
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body("hello"),
    );
    r.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let r = post(&s, &format!("{base}/enable"), &admin, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["user"].into());
    assert_eq!(r.body["data"]["user"]["disabled"], false);

    let r = post_empty(&s, &format!("{base}/unlock"), &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["user"].into());
    assert!(r.body["data"]["user"]["lockedUntil"].is_null());
}

#[test]
fn role_changes_revoke_sessions_and_the_stored_role_decides() {
    let s = TestServer::start();
    let (_, admin) = admin_token(&s);
    let email = unique_email("promoted");
    let target = s.register(&email);
    let (id, token) = (user_id(&target), access(&target));
    let path = format!("/api/admin/users/{id}/role");

    for bad in [
        json!({"role": "root"}),
        json!({"role": ""}),
        json!({"role": 1}),
        json!({}),
        json!({"role": "admin", "extra": true}),
    ] {
        let r = post(&s, &path, &admin, bad.clone());
        r.assert_error(400, "VALIDATION_ERROR");
        assert!(
            detail_fields(&r)
                .iter()
                .all(|f| f == "role" || f == "extra"),
            "{bad}: {}",
            r.text
        );
    }
    // The role route needs its body: an empty one without Content-Type is 415, like register.
    post_empty(&s, &path, &admin).assert_error(415, "UNSUPPORTED_MEDIA_TYPE");

    let r = post(&s, &path, &admin, json!({"role": "admin"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys_of(&r.body["data"]), ["revokedSessions", "user"].into());
    assert_eq!(r.body["data"]["user"]["role"], "admin");
    assert_eq!(r.body["data"]["revokedSessions"], 1);
    s.get_auth("/api/auth/profile", &token)
        .assert_error(401, "TOKEN_REVOKED");

    // The new admin, demoted while its token is live: refused at once, whatever the token's
    // role claim says (the demotion revoked the session anyway; a new login is a user).
    let promoted = access(&s.login(&email));
    assert_eq!(get(&s, "/api/admin/users", &promoted).status, 200);
    let r = post(&s, &path, &admin, json!({"role": "user"}));
    assert_eq!(r.status, 200, "{}", r.text);
    get(&s, "/api/admin/users", &promoted).assert_error(401, "TOKEN_REVOKED");
    let demoted = access(&s.login(&email));
    get(&s, "/api/admin/users", &demoted).assert_error(403, "FORBIDDEN");
}

#[test]
fn admins_cannot_disable_or_delete_themselves() {
    let s = TestServer::start();
    let (admin_id, admin) = admin_token(&s);
    let base = format!("/api/admin/users/{admin_id}");
    let r = post_empty(&s, &format!("{base}/disable"), &admin);
    r.assert_error(400, "VALIDATION_ERROR");
    delete(&s, &base, &admin).assert_error(400, "VALIDATION_ERROR");
    // Still there, still an admin.
    let r = get(&s, &base, &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["disabled"], false);
}

#[test]
fn sessions_are_listed_and_revoked() {
    let s = TestServer::start();
    let (_, admin) = admin_token(&s);
    let email = unique_email("sessions");
    let first = s.register(&email);
    let second = s.login(&email);
    let id = user_id(&first);
    let path = format!("/api/admin/users/{id}/sessions");

    let r = get(&s, &path, &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    let sessions = r.body["data"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    for sess in sessions {
        assert_eq!(
            keys_of(sess),
            [
                "authMethods",
                "createdAt",
                "deviceInfo",
                "expiresAt",
                "id",
                "ip",
                "lastUsedAt",
                "userAgent"
            ]
            .into()
        );
        assert_eq!(sess["authMethods"], serde_json::json!(["pwd"]));
    }

    let r = delete(&s, &path, &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"], json!({"revokedSessions": 2}));
    for t in [access(&first), access(&second)] {
        s.get_auth("/api/auth/profile", &t)
            .assert_error(401, "TOKEN_REVOKED");
    }
    assert_eq!(get(&s, &path, &admin).body["data"]["sessions"], json!([]));
    let events = audit(&s, &["--event", "admin_revoke"]);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["userId"], json!(id));
}

#[test]
fn delete_bites_at_once_and_frees_the_email() {
    let s = TestServer::start();
    let (admin_id, admin) = admin_token(&s);
    let email = unique_email("deleted");
    let target = s.register(&email);
    let (id, token) = (user_id(&target), access(&target));
    let rt = target["refreshToken"].as_str().unwrap().to_string();

    let r = delete(&s, &format!("/api/admin/users/{id}"), &admin);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["user"]["id"], json!(id));
    for r in [s.get_auth("/api/auth/profile", &token), s.refresh(&rt)] {
        assert_eq!(r.status, 401, "{}", r.text);
        let code = r.body["error"].as_str().unwrap();
        assert!(
            ["TOKEN_REVOKED", "TOKEN_INVALID"].contains(&code),
            "{}",
            r.text
        );
    }
    get(&s, &format!("/api/admin/users/{id}"), &admin).assert_error(404, "NOT_FOUND");
    delete(&s, &format!("/api/admin/users/{id}"), &admin).assert_error(404, "NOT_FOUND");
    let again = s.register(&email);
    assert_ne!(user_id(&again), id);

    let events = audit(&s, &[]);
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "admin_delete")
        .collect();
    assert_eq!(deleted.len(), 1, "{events:#?}");
    assert_eq!(deleted[0]["userId"], json!(id));
    assert_eq!(deleted[0]["actor"], json!(admin_id));
    let ids: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "register")
        .filter_map(|e| e["userId"].as_str().map(String::from))
        .collect();
    assert!(ids.contains(&id), "the deleted user's events stay");
}
