//! The audit trail: every security event lands in `audit_events` with its outcome, reason,
//! client IP and user agent, never a secret; `authd audit` reads it back.

use std::path::Path;
use std::process::{Command, Output};

use rusqlite::types::Value as SqlValue;
use serde_json::{json, Value};

use crate::support::*;

const UA: &str = "authd-audit-test/1.0 (+https://example.com/probe)";
const WRONG: &str = "Wrong-horse-1!";

fn post_ua(s: &TestServer, path: &str, body: Value) -> Resp {
    send(s.post(path).header("user-agent", UA).json(&body))
}

fn login_ua(s: &TestServer, email: &str, password: &str) -> Resp {
    post_ua(
        s,
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

fn str_at(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .to_string()
}

/// Runs the built binary against the server's database, from the server's directory.
fn authd(s: &TestServer, args: &[&str]) -> Output {
    let mut cmd = Command::new(authd_bin());
    cmd.args(args).current_dir(s.dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.env("AUTHD_DATABASE__URL", s.database_url())
        .env("AUTHD_JWT__KEY_DIR", s.dir.path().join("keys"))
        .output()
        .expect("authd runs")
}

#[derive(Debug, Clone)]
struct Row {
    event: String,
    user_id: Option<String>,
    email: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
    reason: Option<String>,
}

fn rows(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT event, user_id, email, ip, user_agent, outcome, reason
             FROM audit_events ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            event: r.get(0)?,
            user_id: r.get(1)?,
            email: r.get(2)?,
            ip: r.get(3)?,
            user_agent: r.get(4)?,
            outcome: r.get(5)?,
            reason: r.get(6)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every cell of every row of `table`, as text.
fn cells(conn: &rusqlite::Connection, table: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get::<_, SqlValue>(i)? {
                    SqlValue::Null => String::new(),
                    SqlValue::Integer(x) => x.to_string(),
                    SqlValue::Real(x) => x.to_string(),
                    SqlValue::Text(t) => t,
                    SqlValue::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
    .concat()
}

#[test]
fn audit_events_record_every_security_event_without_secrets() {
    // SQLite-only: reads the audit rows and scans every table of the SQLite file.
    let s = TestServer::sqlite_only(&[]);
    let email = unique_email("audit");
    let ghost = unique_email("audit-ghost");
    let mut secrets = vec![PASSWORD.to_string(), WRONG.to_string()];
    let mut keep = |r: &Resp| {
        for key in ["accessToken", "refreshToken"] {
            if let Some(t) = r.body["data"][key].as_str() {
                secrets.push(t.to_string());
            }
        }
    };

    let reg = post_ua(
        &s,
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    keep(&reg);
    let user_id = str_at(&reg.body["data"]["user"], "id");
    let login = login_ua(&s, &email, PASSWORD);
    assert_eq!(login.status, 200, "{}", login.text);
    keep(&login);
    login_ua(&s, &email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    login_ua(&s, &ghost, WRONG).assert_error(401, "INVALID_CREDENTIALS");

    let first = str_at(&login.body["data"], "refreshToken");
    let rotated = post_ua(&s, "/api/auth/refresh", json!({ "refreshToken": first }));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    keep(&rotated);
    post_ua(&s, "/api/auth/refresh", json!({ "refreshToken": first }))
        .assert_error(401, "TOKEN_REVOKED");

    let l2 = login_ua(&s, &email, PASSWORD);
    keep(&l2);
    let out = post_ua(
        &s,
        "/api/auth/logout",
        json!({ "refreshToken": str_at(&l2.body["data"], "refreshToken") }),
    );
    assert_eq!(out.status, 200, "{}", out.text);

    let l3 = login_ua(&s, &email, PASSWORD);
    let l4 = login_ua(&s, &email, PASSWORD);
    keep(&l3);
    keep(&l4);
    let access3 = str_at(&l3.body["data"], "accessToken");
    let list = s.get_auth("/api/auth/sessions", &access3);
    let victim = list.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["current"] == false)
        .map(|x| str_at(x, "id"))
        .expect("another live session");
    let del = send(
        s.delete(&format!("/api/auth/sessions/{victim}"))
            .header("user-agent", UA)
            .bearer_auth(&access3),
    );
    assert_eq!(del.status, 200, "{}", del.text);
    let all = send(
        s.post("/api/auth/logout-all")
            .header("user-agent", UA)
            .bearer_auth(&access3),
    );
    assert_eq!(all.status, 200, "{}", all.text);

    let l5 = login_ua(&s, &email, PASSWORD);
    keep(&l5);
    let cli = authd(&s, &["revoke-sessions", "--email", &email, "--yes"]);
    assert!(cli.status.success(), "{cli:?}");
    post_ua(
        &s,
        "/api/auth/refresh",
        json!({ "refreshToken": str_at(&l5.body["data"], "refreshToken") }),
    )
    .assert_error(401, "TOKEN_REVOKED");

    let rows = rows(&s.db_path());
    let find = |event: &str, outcome: &str, reason: Option<&str>| -> Row {
        rows.iter()
            .find(|r| r.event == event && r.outcome == outcome && r.reason.as_deref() == reason)
            .unwrap_or_else(|| panic!("no {event}/{outcome}/{reason:?} in {rows:#?}"))
            .clone()
    };
    let mine = Some(user_id.clone());
    let reg_row = find("register", "success", None);
    assert_eq!(
        (reg_row.user_id, reg_row.email),
        (mine.clone(), Some(email.clone()))
    );
    let ok = find("login", "success", None);
    assert_eq!((ok.user_id, ok.email), (mine.clone(), Some(email.clone())));
    let wrong = find("login", "failure", Some("wrong_password"));
    assert_eq!(
        (wrong.user_id, wrong.email),
        (mine.clone(), Some(email.clone()))
    );
    let unknown = find("login", "failure", Some("unknown_email"));
    assert_eq!(
        (unknown.user_id, unknown.email),
        (None, Some(ghost.clone()))
    );
    for (event, outcome, reason) in [
        ("refresh", "success", None),
        ("refresh_reuse", "failure", Some("reuse")),
        ("logout", "success", None),
        ("session_revoke", "success", None),
        ("logout_all", "success", None),
    ] {
        let r = find(event, outcome, reason);
        assert_eq!(r.user_id, mine, "{r:?}");
    }
    let admin = rows
        .iter()
        .find(|r| r.event == "admin_revoke")
        .unwrap_or_else(|| panic!("no admin_revoke in {rows:#?}"));
    assert_eq!((&admin.user_id, admin.outcome.as_str()), (&mine, "success"));
    assert_eq!(admin.user_agent.as_deref(), Some("authd-cli"));

    for r in rows.iter().filter(|r| r.event != "admin_revoke") {
        assert_eq!(r.ip.as_deref(), Some("127.0.0.1"), "{r:?}");
        assert_eq!(r.user_agent.as_deref(), Some(UA), "{r:?}");
    }

    // No password or token anywhere in the database, audit trail first.
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.iter().any(|t| t == "audit_events"), "{tables:?}");
    for table in &tables {
        for cell in cells(&conn, table) {
            for secret in &secrets {
                assert!(
                    !cell.contains(secret.as_str()),
                    "{table} holds a secret: {cell}"
                );
            }
        }
    }
}

/// Register, a success, a wrong password, a refresh, a logout: five events about `email`.
fn scenario(s: &TestServer, email: &str) {
    let reg = post_ua(
        s,
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let login = login_ua(s, email, PASSWORD);
    assert_eq!(login.status, 200, "{}", login.text);
    login_ua(s, email, WRONG).assert_error(401, "INVALID_CREDENTIALS");
    let rotated = post_ua(
        s,
        "/api/auth/refresh",
        json!({ "refreshToken": str_at(&login.body["data"], "refreshToken") }),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let out = post_ua(
        s,
        "/api/auth/logout",
        json!({ "refreshToken": str_at(&rotated.body["data"], "refreshToken") }),
    );
    assert_eq!(out.status, 200, "{}", out.text);
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `audit --json`: one JSON array of events.
fn json_lines(o: &Output) -> Vec<Value> {
    let text = stdout(o);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {text}"))
        .clone()
}

#[test]
fn audit_cli_prints_filters_and_limits() {
    let s = TestServer::start();
    let email = unique_email("audit-cli");
    let other = unique_email("audit-cli-other");
    scenario(&s, &email);
    scenario(&s, &other);

    let table = stdout(&authd(&s, &["audit", "--email", &email]));
    let mut lines = table.lines();
    let header = lines.next().expect("a header line");
    for col in ["TIME", "EVENT", "OUTCOME", "REASON", "EMAIL", "IP"] {
        assert!(header.contains(col), "{header}");
    }
    let body: Vec<&str> = lines.collect();
    assert!(body.len() >= 3, "{table}");
    // Aligned: every column starts at the same character on every line, whatever the
    // length of the reasons and emails (wrong_password or a dash) before it.
    let ip_at = header.find("  IP  ").unwrap() + 2;
    for line in &body {
        let cells: String = line.chars().skip(ip_at).collect();
        assert!(cells.starts_with("127.0.0.1  "), "IP column moved: {table}");
    }
    for needle in [
        "register",
        "login",
        "success",
        "failure",
        "wrong_password",
        "127.0.0.1",
        UA,
    ] {
        assert!(
            body.iter().any(|l| l.contains(needle)),
            "{needle} in {table}"
        );
    }
    assert!(!table.contains(&other), "{table}");

    let events = json_lines(&authd(&s, &["audit", "--email", &email, "--json"]));
    assert!(events.len() >= 3, "{events:?}");
    let user_id = events
        .iter()
        .find(|e| e["event"] == "register")
        .map(|e| e["userId"].clone())
        .expect("the registration");
    for e in &events {
        // Events about the account: recorded with its email, or (refresh, logout, ...) with
        // its user id only.
        assert!(
            e["email"] == json!(email) || (e["email"].is_null() && e["userId"] == user_id),
            "{e}"
        );
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        assert_eq!(e["userAgent"], UA, "{e}");
        assert!(e["time"].is_string() && e["success"].is_boolean(), "{e}");
    }
    let failure = events
        .iter()
        .find(|e| e["success"] == false)
        .expect("the failed login");
    assert_eq!(
        (&failure["event"], &failure["reason"]),
        (&json!("login"), &json!("wrong_password"))
    );

    let logins = json_lines(&authd(&s, &["audit", "--event", "login", "--json"]));
    assert_eq!(logins.len(), 4, "{logins:?}");
    assert!(logins.iter().all(|e| e["event"] == "login"), "{logins:?}");

    let recent = json_lines(&authd(&s, &["audit", "--since", "1h", "--json"]));
    assert!(recent.len() >= 10, "{recent:?}");
    let future = json_lines(&authd(
        &s,
        &["audit", "--since", "2999-01-01T00:00:00Z", "--json"],
    ));
    assert!(future.is_empty(), "{future:?}");

    let two = json_lines(&authd(&s, &["audit", "--limit", "2", "--json"]));
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[0]["event"], "logout", "newest first: {two:?}");
    assert_eq!(two[1]["event"], "refresh", "newest first: {two:?}");

    let bogus = authd(&s, &["audit", "--event", "bogus"]);
    assert_eq!(bogus.status.code(), Some(1), "{bogus:?}");
    let err = String::from_utf8_lossy(&bogus.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains("bogus"), "{err:?}");
    assert!(bogus.stdout.is_empty(), "{bogus:?}");
}

#[test]
fn audit_cli_email_filter_shows_every_event_of_that_user() {
    let s = TestServer::start();
    let email = unique_email("audit-mine");
    scenario(&s, &email);
    let events = json_lines(&authd(&s, &["audit", "--email", &email, "--json"]));
    let mut names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        ["login", "logout", "refresh", "register"],
        "{events:#?}"
    );
}
