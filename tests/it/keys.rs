//! Signing keys over their whole life (contract section 7): `authd keys list|rotate|revoke`
//! through the built binary against a running server's database, rotation under load,
//! revocation taking effect on running servers, HS256 previous secrets, private parts sealed
//! at rest, and two servers on one database agreeing on the key set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;

use crate::cli::{authd_on, run, Run};
use crate::support::*;

/// The contract's bound for a rotation or revocation to reach every running server.
const PROPAGATION: Duration = Duration::from_secs(10);

pub fn kid_of(token: &str) -> String {
    let head = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&B64.decode(head).unwrap()).unwrap();
    header["kid"].as_str().unwrap_or_default().to_string()
}

/// `authd keys <args>` on the server's database, with `env` added.
pub fn keys_cmd(s: &TestServer, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = authd_on(s.dir.path());
    cmd.arg("keys").args(args).envs(env.iter().copied());
    run(&mut cmd, None)
}

pub fn key_list(s: &TestServer, env: &[(&str, &str)]) -> Vec<Value> {
    let out = keys_cmd(s, &["list", "--json"], env);
    serde_json::from_str::<Value>(out.ok())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn active_kid(list: &[Value], key_use: &str) -> String {
    let active: Vec<&Value> = list
        .iter()
        .filter(|k| k["use"] == key_use && k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "one active {key_use} key: {list:?}");
    active[0]["kid"].as_str().unwrap().to_string()
}

fn jwks_kids(s: &TestServer) -> Vec<String> {
    let r = send(s.get("/.well-known/jwks.json"));
    assert_eq!(r.status, 200);
    let mut kids: Vec<String> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

/// Polls `done` every 100 ms until it holds; panics if it does not within `limit`.
pub fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new login's access token carries `kid` (the server signs with it).
fn signs_with(s: &TestServer, email: &str, kid: &str) -> bool {
    kid_of(s.login(email)["accessToken"].as_str().unwrap()) == kid
}

#[test]
fn list_rotate_and_revoke_through_the_binary() {
    let s = TestServer::start();
    let email = unique_email("keys-cli");
    let first = s.register(&email);
    let old_access = first["accessToken"].as_str().unwrap().to_string();
    let old_refresh = first["refreshToken"].as_str().unwrap().to_string();
    // Nothing is written to key_dir any more.
    assert!(!s.dir.path().join("keys").exists());

    let list = key_list(&s, &[]);
    assert_eq!(list.len(), 2, "{list:?}");
    for k in &list {
        assert_eq!(
            keys_of(k),
            ["algorithm", "createdAt", "kid", "retiresAt", "state", "use"].into()
        );
        assert_eq!(k["state"], "active");
        assert_eq!(k["retiresAt"], Value::Null);
    }
    let k1 = active_kid(&list, "access");
    assert_eq!(kid_of(&old_access), k1);
    assert_eq!(jwks_kids(&s), vec![k1.clone()]);
    let text = keys_cmd(&s, &["list"], &[]);
    assert!(text.ok().contains(&k1), "{text:?}");

    // Rotate the access key: the new one signs everywhere within 10 s; the old one stays in
    // the JWKS and keeps verifying.
    let before = std::time::SystemTime::now();
    let out = keys_cmd(&s, &["rotate"], &[]);
    let list = key_list(&s, &[]);
    let k2 = active_kid(&list, "access");
    assert_ne!(k1, k2);
    assert!(out.ok().contains(&k2), "{out:?}");
    let old = list.iter().find(|k| k["kid"] == k1.as_str()).unwrap();
    assert_eq!(old["state"], "retiring");
    // The table: a header, one row per key, columns aligned although kids differ in length
    // (Ed25519 thumbprints, short HMAC kids).
    let table = keys_cmd(&s, &["list"], &[]).ok().to_owned();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("KID "), "{table}");
    let state_at = header.find("STATE").unwrap();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), list.len(), "{table}");
    for row in rows {
        let state = &row[state_at..];
        assert!(
            ["active", "retiring", "revoked"]
                .iter()
                .any(|st| state.starts_with(st)),
            "STATE column moved: {table}"
        );
    }
    let retires = time::OffsetDateTime::parse(
        old["retiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let keep = retires.unix_timestamp()
        - before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    // access_ttl (15m) + leeway (30s) after the rotation.
    assert!(
        (929..=931).contains(&keep),
        "retires {keep}s after the rotation"
    );
    within(PROPAGATION, "the server signs with the new key", || {
        signs_with(&s, &email, &k2)
    });
    let mut both = vec![k1.clone(), k2.clone()];
    both.sort();
    assert_eq!(jwks_kids(&s), both);
    assert_eq!(s.get_auth("/api/auth/profile", &old_access).status, 200);

    // Rotate the refresh key: the outstanding refresh token still rotates.
    keys_cmd(&s, &["rotate", "--use", "refresh"], &[]).ok();
    std::thread::sleep(Duration::from_secs(3));
    let r = s.refresh(&old_refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let list = key_list(&s, &[]);
    assert_eq!(list.len(), 4, "{list:?}");

    // Revoke the retiring access key: its tokens are refused within 10 s; the JWKS drops it.
    let out = keys_cmd(&s, &["revoke", &k1], &[]);
    assert!(out.error_line().contains("--yes"), "{out:?}");
    keys_cmd(&s, &["revoke", &k1, "--yes"], &[]).ok();
    within(PROPAGATION, "the revoked key's token is refused", || {
        let r = s.get_auth("/api/auth/profile", &old_access);
        r.status == 401 && r.body["error"] == "TOKEN_INVALID"
    });
    assert_eq!(jwks_kids(&s), vec![k2.clone()]);
    let list = key_list(&s, &[]);
    let revoked = list.iter().find(|k| k["kid"] == k1.as_str()).unwrap();
    assert_eq!(revoked["state"], "retired");
    let again = keys_cmd(&s, &["revoke", &k1, "--yes"], &[]);
    again.ok();

    // An unknown kid is exit 1 (base64url kids may begin with '-': still a kid, not a flag).
    for kid in ["no-such-kid", "-no-such-kid"] {
        let unknown = keys_cmd(&s, &["revoke", kid, "--yes"], &[]);
        assert!(unknown.error_line().contains("no such key"), "{unknown:?}");
    }
    // A bad --use is a usage error.
    keys_cmd(&s, &["rotate", "--use", "other"], &[]).usage_error();

    // Audit events for the operator's actions.
    let mut cmd = authd_on(s.dir.path());
    cmd.args(["audit", "--json"]);
    let audit = run(&mut cmd, None);
    // A JSON array, or one JSON object per line.
    let text = audit.ok();
    let events: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(events)) => events,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    };
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names.iter().filter(|e| **e == "admin_key_rotate").count(),
        2,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|e| **e == "admin_key_revoke").count(),
        1,
        "{names:?}"
    );
}

#[test]
fn revoking_the_active_keys_replaces_them_and_refuses_their_tokens() {
    let s = TestServer::start();
    let email = unique_email("keys-revoke");
    let first = s.register(&email);
    let access = first["accessToken"].as_str().unwrap().to_string();
    let refresh = first["refreshToken"].as_str().unwrap().to_string();
    let list = key_list(&s, &[]);
    let (k_access, k_refresh) = (active_kid(&list, "access"), active_kid(&list, "refresh"));

    // The refresh key first: once the access key's revocation is seen, so is this one.
    keys_cmd(&s, &["revoke", &k_refresh, "--yes"], &[]).ok();
    keys_cmd(&s, &["revoke", &k_access, "--yes"], &[]).ok();
    let list = key_list(&s, &[]);
    let (n_access, n_refresh) = (active_kid(&list, "access"), active_kid(&list, "refresh"));
    assert_ne!(n_access, k_access);
    assert_ne!(n_refresh, k_refresh);

    within(
        PROPAGATION,
        "the revoked access key's token is refused",
        || {
            let r = s.get_auth("/api/auth/profile", &access);
            r.status == 401 && r.body["error"] == "TOKEN_INVALID"
        },
    );
    s.refresh(&refresh).assert_error(401, "TOKEN_INVALID");
    // New tokens carry the new key and work end to end.
    let again = s.login(&email);
    assert_eq!(kid_of(again["accessToken"].as_str().unwrap()), n_access);
    let r = s.refresh(again["refreshToken"].as_str().unwrap());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(jwks_kids(&s), vec![n_access]);
}

#[test]
fn rotation_under_load_fails_no_request() {
    let s = Arc::new(TestServer::start());
    let email = unique_email("keys-load");
    let first = s.register(&email);
    let k1 = kid_of(first["accessToken"].as_str().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (s, stop) = (s.clone(), stop.clone());
        let mut refresh = first["refreshToken"].as_str().unwrap().to_string();
        std::thread::spawn(move || {
            let mut kids = Vec::new();
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) || rounds < 3 {
                let r = s.refresh(&refresh);
                assert_eq!(r.status, 200, "refresh during rotation: {}", r.text);
                refresh = r.body["data"]["refreshToken"].as_str().unwrap().to_string();
                let access = r.body["data"]["accessToken"].as_str().unwrap().to_string();
                let p = s.get_auth("/api/auth/profile", &access);
                assert_eq!(p.status, 200, "profile during rotation: {}", p.text);
                kids.push(kid_of(&access));
                rounds += 1;
            }
            kids
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    keys_cmd(&s, &["rotate"], &[]).ok();
    keys_cmd(&s, &["rotate", "--use", "refresh"], &[]).ok();
    let k2 = active_kid(&key_list(&s, &[]), "access");
    within(PROPAGATION, "the server signs with the new key", || {
        signs_with(&s, &email, &k2)
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let kids = client
        .join()
        .expect("no request failed during the rotation");
    assert_eq!(kids.first(), Some(&k1), "{kids:?}");
    assert_eq!(kids.last(), Some(&k2), "new tokens carry the new kid");
}

#[test]
fn two_servers_on_one_database_agree_on_the_key_set() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // Two servers starting together on an empty key table: one key set, not two. (The schema
    // is migrated first: this is about the keys.)
    let mut migrate = crate::cli::authd(dir.path());
    migrate.env("AUTHD_DATABASE__URL", &url).arg("migrate");
    run(&mut migrate, None).ok();
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || TestServer::with(&[("AUTHD_DATABASE__URL", &url)]))
        })
        .collect();
    let servers: Vec<TestServer> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    let (a, b) = (&servers[0], &servers[1]);
    let env = [("AUTHD_DATABASE__URL", url.as_str())];
    let list = key_list(a, &env);
    assert_eq!(list.len(), 2, "one access and one refresh key: {list:?}");
    assert_eq!(jwks_kids(a), jwks_kids(b));

    let email = unique_email("keys-two");
    let data = a.register(&email);
    let access = data["accessToken"].as_str().unwrap();
    assert_eq!(b.get_auth("/api/auth/profile", access).status, 200);
    let r = b.refresh(data["refreshToken"].as_str().unwrap());
    assert_eq!(r.status, 200, "{}", r.text);

    keys_cmd(a, &["rotate"], &env).ok();
    let k2 = active_kid(&key_list(a, &env), "access");
    within(PROPAGATION, "both servers sign with the new key", || {
        signs_with(a, &email, &k2) && signs_with(b, &email, &k2)
    });
    assert_eq!(jwks_kids(a), jwks_kids(b));
    assert_eq!(jwks_kids(a).len(), 2);
}

#[test]
fn hs256_previous_secrets_verify_and_never_sign() {
    let secret = || {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    };
    let (a1, r1, a2, r2) = (secret(), secret(), secret(), secret());
    let s = TestServer::with(&[
        ("AUTHD_JWT__ALGORITHM", "HS256"),
        ("AUTHD_JWT__ACCESS_SECRET", &a1),
        ("AUTHD_JWT__REFRESH_SECRET", &r1),
    ]);
    let email = unique_email("keys-hs");
    let first = s.register(&email);
    let old_access = first["accessToken"].as_str().unwrap().to_string();
    let old_refresh = first["refreshToken"].as_str().unwrap().to_string();
    let old_kid = kid_of(&old_access);
    let dir = s.stop();

    let rotated = [
        ("AUTHD_JWT__ALGORITHM", "HS256"),
        ("AUTHD_JWT__ACCESS_SECRET", a2.as_str()),
        ("AUTHD_JWT__REFRESH_SECRET", r2.as_str()),
        ("AUTHD_JWT__ACCESS_SECRET_PREVIOUS", a1.as_str()),
        ("AUTHD_JWT__REFRESH_SECRET_PREVIOUS", r1.as_str()),
    ];
    let s = TestServer::in_dir(dir, &rotated);
    assert_eq!(s.get_auth("/api/auth/profile", &old_access).status, 200);
    let r = s.refresh(&old_refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    // New tokens are signed with the current secret only.
    let fresh = s.login(&email);
    let token = fresh["accessToken"].as_str().unwrap();
    assert_ne!(kid_of(token), old_kid);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["authd"]);
    for (key, signs) in [(&a2, true), (&a1, false)] {
        let verdict = jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(key.as_bytes()),
            &validation,
        );
        assert_eq!(verdict.is_ok(), signs);
    }
    assert_eq!(jwks_kids(&s), Vec::<String>::new());

    // Secrets are listed by kid, nothing of their value; rotate and revoke refuse.
    let list = keys_cmd(&s, &["list", "--json"], &rotated);
    let text = list.ok().to_string();
    for secret in [&a1, &a2, &r1, &r2] {
        assert!(!text.contains(secret.as_str()));
    }
    let list: Vec<Value> = serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert!(list
        .iter()
        .any(|k| k["kid"] == old_kid.as_str() && k["state"] == "retiring"));
    assert_eq!(active_kid(&list, "access"), kid_of(token));
    for args in [
        vec!["rotate"],
        vec!["rotate", "--use", "refresh"],
        vec!["revoke", &old_kid, "--yes"],
    ] {
        let out = keys_cmd(&s, &args, &rotated);
        assert!(out.error_line().contains("_previous"), "{args:?}: {out:?}");
    }
    let dir = s.stop();

    // Once the previous secrets are gone, tokens they signed are invalid.
    let s = TestServer::in_dir(
        dir,
        &[
            ("AUTHD_JWT__ALGORITHM", "HS256"),
            ("AUTHD_JWT__ACCESS_SECRET", &a2),
            ("AUTHD_JWT__REFRESH_SECRET", &r2),
        ],
    );
    s.get_auth("/api/auth/profile", &old_access)
        .assert_error(401, "TOKEN_INVALID");
}

#[test]
fn private_parts_are_sealed_with_the_key_encryption_secret() {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let env = [("AUTHD_JWT__KEY_ENCRYPTION_SECRET", secret.as_str())];
    // SQLite-only: reads the key rows from the SQLite file.
    let s = TestServer::sqlite_only(&env);
    let email = unique_email("keys-sealed");
    let data = s.register(&email);
    let access = data["accessToken"].as_str().unwrap().to_string();
    // A command without the secret would store a new key in the clear: refused.
    let out = keys_cmd(&s, &["rotate"], &[]);
    assert!(
        out.error_line().contains("jwt.key_encryption_secret"),
        "{out:?}"
    );
    keys_cmd(&s, &["rotate"], &env).ok();
    let db = s.db_path();
    let dir = s.stop();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        type Row = (i64, Option<Vec<u8>>, Option<Vec<u8>>);
        let rows: Vec<Row> = conn
            .prepare("SELECT sealed, private_key, public_key FROM signing_keys")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        for (sealed, private, public) in rows {
            match private {
                // Seed or secret (32 bytes) + nonce (12) + tag (16).
                Some(p) => assert!(sealed == 1 && p.len() == 60, "sealed: {sealed}"),
                // The retiring Ed25519 key keeps only its public part.
                None => assert_eq!(public.map(|p| p.len()), Some(32)),
            }
        }
    }
    // Without the secret the server does not start, and says why.
    let settings = test_settings(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(async {
            let core = authd::app::open_core(Arc::new(settings), authd::app::Schema::Ready)
                .await
                .unwrap();
            authd::app::http_state(core).await.map(|_| ())
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("jwt.key_encryption_secret"),
        "{err}"
    );
    drop(rt);
    let s = TestServer::in_dir(dir, &env);
    assert_eq!(s.get_auth("/api/auth/profile", &access).status, 200);
}
