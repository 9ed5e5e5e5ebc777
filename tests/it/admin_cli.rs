//! `authd users ...` driven as an operator would, against the database of a running
//! `TestServer`: every command bites on the server's next request, exit codes and one-line
//! errors, `--json` shapes, and the audit events they leave (with `actor`).

use serde_json::{json, Value};

use crate::cli::{authd_on, run, Run};
use crate::support::*;

/// `authd <args>` on the server's database, stdin closed.
pub fn users(s: &TestServer, args: &[&str]) -> Run {
    run(authd_on(s.dir.path()).args(args), None)
}

/// `authd <args>` on the server's database with `input` on stdin.
pub fn users_with_input(s: &TestServer, args: &[&str], input: &str) -> Run {
    run(authd_on(s.dir.path()).args(args), Some(input.as_bytes()))
}

/// Parses a command's stdout as JSON (asserting exit 0).
pub fn json_out(r: &Run) -> Value {
    serde_json::from_str(r.ok()).unwrap_or_else(|e| panic!("{e}: {r:#?}"))
}

/// Creates an admin through the CLI and logs it in; returns (id, access token).
pub fn admin_token(s: &TestServer) -> (String, String) {
    let email = unique_email("admin");
    let id = users_with_input(
        s,
        &[
            "create-user",
            "--email",
            &email,
            "--role",
            "admin",
            "--password-stdin",
        ],
        PASSWORD,
    )
    .ok()
    .trim()
    .to_string();
    let login = s.login(&email);
    (id, login["accessToken"].as_str().unwrap().to_string())
}

/// The whole audit trail (newest first) as `authd audit --json` prints it.
pub fn audit(s: &TestServer, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "--json", "--limit", "1000"];
    args.extend_from_slice(extra);
    let v = json_out(&users(s, &args));
    v.as_array()
        .unwrap_or_else(|| panic!("audit --json is an array: {v}"))
        .clone()
}

fn access(data: &Value) -> String {
    data["accessToken"].as_str().unwrap().to_string()
}

fn refresh(data: &Value) -> String {
    data["refreshToken"].as_str().unwrap().to_string()
}

fn login_with(s: &TestServer, email: &str, password: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

#[test]
fn disable_bites_on_the_running_server_and_enable_restores_login() {
    let s = TestServer::start();
    let email = unique_email("disable");
    let reg = s.register(&email);
    let id = reg["user"]["id"].as_str().unwrap().to_string();
    let (token, rt) = (access(&reg), refresh(&reg));
    assert_eq!(s.get_auth("/api/auth/profile", &token).status, 200);

    let out = users(&s, &["users", "disable", &email]);
    assert!(out.ok().contains("revoked 1 session"), "{out:#?}");
    let r = s.get_auth("/api/auth/profile", &token);
    r.assert_error(401, "TOKEN_REVOKED");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    s.refresh(&rt).assert_error(401, "TOKEN_REVOKED");
    // The right password first: a wrong one says nothing about the account.
    login_with(&s, &email, "Wrong-horse-9").assert_error(401, "INVALID_CREDENTIALS");
    login_with(&s, &email, PASSWORD).assert_error(403, "ACCOUNT_DISABLED");

    // By id too; enabling changes nothing else (no session comes back).
    users(&s, &["users", "enable", &id]).ok();
    s.get_auth("/api/auth/profile", &token)
        .assert_error(401, "TOKEN_REVOKED");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);

    let show = json_out(&users(&s, &["users", "show", &email, "--json"]));
    assert_eq!(show["user"]["disabled"], false, "{show}");
    assert_eq!(show["liveSessions"], 1, "{show}");
}

#[test]
fn set_role_and_set_password_revoke_sessions_at_once() {
    let s = TestServer::start();
    let email = unique_email("role");
    let reg = s.register(&email);
    let token = access(&reg);
    s.get_auth("/api/admin/users", &token)
        .assert_error(403, "FORBIDDEN");

    let out = users(&s, &["users", "set-role", &email, "admin"]);
    assert!(out.ok().contains("admin"), "{out:#?}");
    s.get_auth("/api/auth/profile", &token)
        .assert_error(401, "TOKEN_REVOKED");
    let admin = access(&s.login(&email));
    assert_eq!(s.get_auth("/api/admin/users", &admin).status, 200);

    // Another role is a usage error.
    users(&s, &["users", "set-role", &email, "superuser"]).usage_error();

    // A password that register would refuse: exit 1, one line, nothing changed.
    let weak = users_with_input(
        &s,
        &["users", "set-password", &email, "--password-stdin"],
        "short\n",
    );
    let line = weak.error_line();
    assert!(line.contains("password"), "{line}");
    assert_eq!(s.get_auth("/api/auth/profile", &admin).status, 200);

    let new_password = "Another-horse-7";
    let out = users_with_input(
        &s,
        &["users", "set-password", &email, "--password-stdin"],
        &format!("{new_password}\n"),
    );
    assert!(out.ok().contains("revoked 1 session"), "{out:#?}");
    s.get_auth("/api/auth/profile", &admin)
        .assert_error(401, "TOKEN_REVOKED");
    login_with(&s, &email, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");
    assert_eq!(login_with(&s, &email, new_password).status, 200);

    // Without --password-stdin and without a terminal: exit 1.
    users(&s, &["users", "set-password", &email]).error_line();
}

#[test]
fn delete_needs_yes_without_a_terminal_and_frees_the_email() {
    let s = TestServer::start();
    let email = unique_email("delete");
    let reg = s.register(&email);
    let id = reg["user"]["id"].as_str().unwrap().to_string();
    let (token, rt) = (access(&reg), refresh(&reg));

    let refused = users(&s, &["users", "delete", &email]);
    assert!(refused.error_line().contains("--yes"), "{refused:#?}");
    assert_eq!(s.get_auth("/api/auth/profile", &token).status, 200);

    users(&s, &["users", "delete", &email, "--yes"]).ok();
    let r = s.get_auth("/api/auth/profile", &token);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.body["error"] == "TOKEN_REVOKED" || r.body["error"] == "TOKEN_INVALID",
        "{}",
        r.text
    );
    let r = s.refresh(&rt);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.body["error"] == "TOKEN_REVOKED" || r.body["error"] == "TOKEN_INVALID",
        "{}",
        r.text
    );
    assert!(users(&s, &["users", "show", &id])
        .error_line()
        .ends_with("no such user"));

    // The email is free again; the old events stay, with the old id.
    let again = s.register(&email);
    assert_ne!(again["user"]["id"], json!(id));
    let events = audit(&s, &[]);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "register" && e["userId"] == json!(id)),
        "{events:#?}"
    );
    let deleted = events
        .iter()
        .find(|e| e["event"] == "admin_delete")
        .expect("an admin_delete event");
    assert_eq!(deleted["userId"], json!(id));
    assert_eq!(deleted["actor"], "cli");
}

#[test]
fn unknown_users_are_exit_1_no_such_user() {
    let s = TestServer::start();
    let ghost = "nobody@example.com";
    let ghost_id = uuid::Uuid::new_v4().to_string();
    for args in [
        vec!["users", "show", ghost],
        vec!["users", "show", &ghost_id],
        vec!["users", "disable", ghost],
        vec!["users", "enable", &ghost_id],
        vec!["users", "delete", ghost, "--yes"],
        vec!["users", "delete", ghost],
        vec!["users", "set-role", ghost, "admin"],
    ] {
        let r = users(&s, &args);
        assert!(r.error_line().ends_with("no such user"), "{args:?}: {r:#?}");
        assert!(r.stdout.is_empty(), "{r:#?}");
    }
    let r = users_with_input(
        &s,
        &["users", "set-password", ghost, "--password-stdin"],
        PASSWORD,
    );
    assert!(r.error_line().ends_with("no such user"), "{r:#?}");
    // Usage errors are clap's.
    users(&s, &["users", "list", "--role", "root"]).usage_error();
    users(&s, &["users", "disable"]).usage_error();
    users(&s, &["users", "frobnicate"]).usage_error();
}

#[test]
fn list_and_show_print_lines_and_json() {
    let s = TestServer::start();
    let (admin_id, _) = admin_token(&s);
    let alice = unique_email("alice");
    let bob = unique_email("bob");
    let alice_id = s.register(&alice)["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.register(&bob);
    users(&s, &["users", "disable", &bob]).ok();

    let text = users(&s, &["users", "list"]);
    let lines: Vec<&str> = text.ok().lines().collect();
    assert_eq!(lines.len(), 3, "one line per user: {text:#?}");
    let bob_line = lines.iter().find(|l| l.contains(&bob)).unwrap();
    let cols: Vec<&str> = bob_line.split_whitespace().collect();
    assert_eq!(cols[1], bob);
    assert_eq!((cols[2], cols[3]), ("user", "disabled"), "{bob_line}");
    assert_eq!(cols[5], "-", "never logged in: {bob_line}");
    let alice_line = lines.iter().find(|l| l.contains(&alice)).unwrap();
    assert!(alice_line.starts_with(&alice_id), "{alice_line}");
    // Self-registered and not verified yet (CONTRACT 10.5: after disabled and locked).
    assert!(alice_line.contains(" unverified "), "{alice_line}");
    users(&s, &["users", "verify-email", &alice]).ok();
    let text = users(&s, &["users", "list"]);
    let alice_line = text
        .ok()
        .lines()
        .find(|l| l.contains(&alice))
        .unwrap()
        .to_string();
    assert!(alice_line.contains(" active "), "{alice_line}");

    let all = json_out(&users(&s, &["users", "list", "--json"]));
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    for u in all {
        assert_eq!(
            keys_of(u),
            [
                "createdAt",
                "disabled",
                "email",
                "emailVerified",
                "id",
                "lastLoginAt",
                "lockedUntil",
                "mfa",
                "name",
                "role"
            ]
            .into(),
            "{u}"
        );
        assert!(u["lockedUntil"].is_null());
    }
    // In creation order.
    assert_eq!(all[0]["id"], json!(admin_id));
    assert_eq!(all[1]["email"], json!(alice));

    let admins = json_out(&users(&s, &["users", "list", "--role", "admin", "--json"]));
    assert_eq!(admins.as_array().unwrap().len(), 1);
    assert_eq!(admins[0]["id"], json!(admin_id));
    let disabled = json_out(&users(&s, &["users", "list", "--disabled", "--json"]));
    assert_eq!(disabled.as_array().unwrap().len(), 1);
    assert_eq!(disabled[0]["email"], json!(bob));
    assert_eq!(disabled[0]["disabled"], true);
    let locked = json_out(&users(&s, &["users", "list", "--locked", "--json"]));
    assert_eq!(locked, json!([]));

    let show = json_out(&users(
        &s,
        &["users", "show", &alice.to_uppercase(), "--json"],
    ));
    assert_eq!(keys_of(&show), ["liveSessions", "user"].into());
    assert_eq!(show["user"]["id"], json!(alice_id));
    assert_eq!(show["liveSessions"], 1);
    let text = users(&s, &["users", "show", &alice]);
    for needle in [
        alice_id.as_str(),
        alice.as_str(),
        "active",
        "live sessions  1",
    ] {
        assert!(text.ok().contains(needle), "{needle}: {text:#?}");
    }
}

#[test]
fn locked_emails_are_listed_and_unlock_clears_them() {
    let s = TestServer::with(&[
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ]);
    let email = unique_email("locked");
    s.register(&email);
    let ghost = unique_email("ghost");
    for who in [&email, &ghost] {
        for _ in 0..3 {
            login_with(&s, who, "Wrong-horse-9").assert_error(401, "INVALID_CREDENTIALS");
        }
        login_with(&s, who, PASSWORD).assert_error(423, "ACCOUNT_LOCKED");
    }

    let locked = json_out(&users(&s, &["users", "list", "--locked", "--json"]));
    let locked = locked.as_array().unwrap();
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert_eq!(locked[0]["email"], json!(email));
    let until = locked[0]["lockedUntil"].as_str().expect("an RFC 3339 time");
    assert!(until.ends_with('Z') && until.contains('T'), "{until}");
    let text = users(&s, &["users", "list"]);
    assert!(text.ok().contains(" locked "), "{text:#?}");
    let show = json_out(&users(&s, &["users", "show", &email, "--json"]));
    assert_eq!(show["user"]["lockedUntil"], json!(until));

    let out = users(&s, &["users", "unlock", &email]);
    assert!(out.ok().contains("unlocked"), "{out:#?}");
    assert_eq!(login_with(&s, &email, PASSWORD).status, 200);
    let locked = json_out(&users(&s, &["users", "list", "--locked", "--json"]));
    assert_eq!(locked, json!([]));

    // An email without an account: its lockout is cleared all the same.
    users(&s, &["users", "unlock", &ghost.to_uppercase()]).ok();
    login_with(&s, &ghost, PASSWORD).assert_error(401, "INVALID_CREDENTIALS");

    // set-password clears the lockout too.
    for _ in 0..3 {
        login_with(&s, &email, "Wrong-horse-9").assert_error(401, "INVALID_CREDENTIALS");
    }
    login_with(&s, &email, PASSWORD).assert_error(423, "ACCOUNT_LOCKED");
    users_with_input(
        &s,
        &["users", "set-password", &email, "--password-stdin"],
        "Brand-new-pass-1",
    )
    .ok();
    assert_eq!(login_with(&s, &email, "Brand-new-pass-1").status, 200);

    let events = audit(&s, &["--event", "admin_unlock"]);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e["actor"] == "cli"), "{events:#?}");
    assert!(events
        .iter()
        .any(|e| e["userId"].is_null() && e["email"] == json!(ghost)));
}

#[test]
fn audit_json_is_an_array_with_actor_for_admin_events() {
    let s = TestServer::start();
    let (admin_id, admin) = admin_token(&s);
    let email = unique_email("audited");
    let id = s.register(&email)["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    users(&s, &["users", "disable", &email]).ok();
    let r = send(
        s.post(&format!("/api/admin/users/{id}/enable"))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    users(&s, &["users", "set-role", &id, "admin"]).ok();

    let events = audit(&s, &[]);
    for e in &events {
        for key in [
            "time",
            "event",
            "userId",
            "actor",
            "ip",
            "userAgent",
            "success",
            "reason",
        ] {
            assert!(e.get(key).is_some(), "{key} in {e}");
        }
        assert!(e["success"].is_boolean(), "{e}");
    }
    let find = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("{name} in {events:#?}"))
    };
    let disable = find("admin_disable");
    assert_eq!(
        (&disable["userId"], &disable["actor"], &disable["success"]),
        (&json!(id), &json!("cli"), &json!(true))
    );
    let enable = find("admin_enable");
    assert_eq!(
        (&enable["userId"], &enable["actor"]),
        (&json!(id), &json!(admin_id))
    );
    assert_eq!(enable["ip"], "127.0.0.1");
    let role = find("admin_set_role");
    assert_eq!(
        (&role["userId"], &role["actor"]),
        (&json!(id), &json!("cli"))
    );
    // Events no admin caused carry no actor.
    assert!(find("register")["actor"].is_null());

    let only = audit(&s, &["--event", "admin_disable"]);
    assert_eq!(only.len(), 1, "{only:#?}");
    let table = users(&s, &["audit", "--event", "admin_enable"]);
    let header = table.ok().lines().next().unwrap().to_string();
    assert!(header.contains("ACTOR"), "{header}");
    assert!(table.ok().contains(&admin_id), "{table:#?}");
}
