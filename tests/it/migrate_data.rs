//! `authd migrate-data`: an installation made by a real SQLite-backed server is copied into a
//! fresh PostgreSQL database, and a server on that database (in another working directory:
//! nothing but the database carries over) accepts the old access tokens, rotates the old
//! refresh tokens, still detects reuse of the ones rotated before the move, keeps the old
//! revocations, lets users log in, and `authd audit` shows the old events. A target that
//! holds data is refused.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::services::PgDatabase;
use crate::support::{authd_bin, send, unique_email, Resp, ServeProcess, PASSWORD};

fn authd(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(authd_bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("authd runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn post(s: &ServeProcess, path: &str, body: Value) -> Resp {
    send(
        reqwest::blocking::Client::new()
            .post(s.url(path))
            .json(&body),
    )
}

fn profile(s: &ServeProcess, access: &str) -> Resp {
    send(
        reqwest::blocking::Client::new()
            .get(s.url("/api/auth/profile"))
            .bearer_auth(access),
    )
}

fn data_str(r: &Resp, field: &str) -> String {
    assert_eq!(r.body["success"], true, "{}", r.text);
    r.body["data"][field].as_str().unwrap().to_string()
}

fn login(s: &ServeProcess, email: &str, password: &str) -> Resp {
    post(
        s,
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
}

fn refresh(s: &ServeProcess, token: &str) -> Resp {
    post(s, "/api/auth/refresh", json!({ "refreshToken": token }))
}

/// The events `authd audit --json` prints (a JSON array, or one object a line).
fn audit_events(out: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(out) {
        Ok(Value::Array(events)) => events,
        _ => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
    }
}

#[test]
fn migrate_data_moves_a_sqlite_installation_to_postgres_and_tokens_keep_working() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let old_dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!(
        "sqlite://{}",
        old_dir.path().join("data/authd.db").display()
    );
    let old_env = [
        ("AUTHD_DATABASE__URL", sqlite_url.as_str()),
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ];

    // Data made the ordinary way, by a server on SQLite.
    let old = ServeProcess::spawn(old_dir.path(), &old_env);
    let alice = unique_email("moved-alice");
    let r = post(
        &old,
        "/api/auth/register",
        json!({"email": alice, "password": PASSWORD, "name": "Alice"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let alice_id = r.body["data"]["user"]["id"].as_str().unwrap().to_string();
    let access = data_str(&r, "accessToken");
    let first = data_str(&r, "refreshToken");
    let rotated = refresh(&old, &first);
    let live_refresh = data_str(&rotated, "refreshToken");
    let live_access = data_str(&rotated, "accessToken");
    // A second session, logged out: its refresh token must stay revoked.
    let logged_out = data_str(&login(&old, &alice, PASSWORD), "refreshToken");
    assert_eq!(
        post(
            &old,
            "/api/auth/logout",
            json!({ "refreshToken": logged_out })
        )
        .status,
        200
    );
    // A third session whose first refresh token is rotated away before the move.
    let third = data_str(&login(&old, &alice, PASSWORD), "refreshToken");
    let third_next = data_str(&refresh(&old, &third), "refreshToken");
    // A locked-out email (the lockout lives in the database).
    let mallory = unique_email("moved-mallory");
    for _ in 0..3 {
        login(&old, &mallory, "Wrong-password-1").assert_error(401, "INVALID_CREDENTIALS");
    }
    login(&old, &mallory, "Wrong-password-1").assert_error(423, "ACCOUNT_LOCKED");
    let (status, _) = old.terminate();
    assert!(status.success());

    // The move.
    let work = tempfile::tempdir().unwrap();
    let out = authd(
        work.path(),
        &[],
        &["migrate-data", "--from", &sqlite_url, "--to", &db.url],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "migrate-data: {}\n{}",
        stdout,
        text(&out.stderr)
    );
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "audit_events",
        "login_failures",
        "signing_keys",
    ] {
        assert!(
            stdout.contains(&format!("into {table}")),
            "{table} copied: {stdout}"
        );
    }
    assert!(stdout.contains("copied 1 row(s) into users"), "{stdout}");
    assert!(stdout.contains("copied 3 row(s) into sessions"), "{stdout}");

    // Twice is refused: the target holds data now, and nothing changes (without --to, the
    // target is database.url).
    let again = authd(
        work.path(),
        &[("AUTHD_DATABASE__URL", db.url.as_str())],
        &["migrate-data", "--from", &sqlite_url],
    );
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stdout));
    let err = text(&again.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A server on PostgreSQL, in a fresh working directory (no key files of its own).
    let new_dir = tempfile::tempdir().unwrap();
    let new_env = [
        ("AUTHD_DATABASE__URL", db.url.as_str()),
        ("AUTHD_RATE_LIMIT__ENABLED", "true"),
        ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
    ];
    let new = ServeProcess::spawn(new_dir.path(), &new_env);
    // Access tokens issued before the move.
    for token in [&access, &live_access] {
        let r = profile(&new, token);
        assert_eq!(r.status, 200, "pre-migration access token: {}", r.text);
        assert_eq!(r.body["data"]["user"]["id"], alice_id.as_str());
    }
    // A refresh token issued before the move rotates; the one rotated away before the move
    // is reuse; the logged-out session stays revoked.
    let r = refresh(&new, &live_refresh);
    assert_eq!(r.status, 200, "pre-migration refresh token: {}", r.text);
    let after = data_str(&r, "refreshToken");
    assert_eq!(refresh(&new, &after).status, 200);
    refresh(&new, &logged_out).assert_error(401, "TOKEN_REVOKED");
    refresh(&new, &third).assert_error(401, "TOKEN_REVOKED");
    refresh(&new, &third_next).assert_error(401, "TOKEN_REVOKED");
    // Logins, the lockout, and new rows (audit ids continue after the copied ones).
    assert_eq!(login(&new, &alice, PASSWORD).status, 200);
    login(&new, &mallory, "Wrong-password-1").assert_error(423, "ACCOUNT_LOCKED");
    let r = post(
        &new,
        "/api/auth/register",
        json!({"email": unique_email("moved-new"), "password": PASSWORD}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    drop(new);

    // The old audit trail is there.
    let out = authd(
        new_dir.path(),
        &new_env,
        &["audit", "--email", &alice, "--limit", "1000", "--json"],
    );
    assert!(out.status.success(), "audit: {}", text(&out.stderr));
    let events = audit_events(&text(&out.stdout));
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for event in ["register", "refresh", "logout", "refresh_reuse"] {
        assert!(names.contains(&event), "{event} in {names:?}");
    }
    let registers = names.iter().filter(|n| **n == "register").count();
    assert_eq!(registers, 1, "{names:?}");
    // The audit chain came along (its head row included): it verifies on PostgreSQL.
    let out = authd(new_dir.path(), &new_env, &["audit", "verify"]);
    assert!(
        out.status.success() && text(&out.stdout).starts_with("ok: "),
        "audit verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn migrate_data_refuses_wrong_urls_and_a_missing_source() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let cases: [(&[&str], &str); 3] = [
        (
            &["--from", &missing, "--to", "postgres://u@127.0.0.1:1/x"],
            "no SQLite database",
        ),
        (
            &[
                "--from",
                "postgres://u:SeCrEt@h/x",
                "--to",
                "postgres://u@h/y",
            ],
            "sqlite://",
        ),
        (&["--from", &missing, "--to", "mysql://h/x"], "postgres://"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["migrate-data"];
        all.extend_from_slice(args);
        let out = authd(dir.path(), &[], &all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{all:?}: {err}");
        assert!(!err.contains("SeCrEt"), "a password is never echoed: {err}");
        assert!(
            !dir.path().join("nope.db").exists(),
            "the source is never created"
        );
    }
}

/// One transaction: a value that cannot be converted (here a user id that is not a UUID,
/// which SQLite accepts) fails the copy after other tables were already copied, and the
/// target is left without a single copied row, so the same command succeeds once the source
/// is fixed. A table the target lacks is refused by name.
#[test]
fn migrate_data_is_all_or_nothing() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authd.db");
    let sqlite_url = format!("sqlite://{}", path.display());
    let env = [
        ("AUTHD_DATABASE__URL", sqlite_url.as_str()),
        ("AUTHD_PASSWORD__BCRYPT_COST", "10"),
    ];
    let mut create = Command::new(authd_bin());
    create
        .args([
            "create-user",
            "--email",
            "ok@example.com",
            "--password-stdin",
        ])
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = create.spawn().unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
    let sqlite = rusqlite::Connection::open(&path).unwrap();
    sqlite
        .execute_batch(
            "INSERT INTO users (id, email, role, password_hash, disabled, created_at)
             VALUES ('not-a-uuid', 'bad@example.com', 'user', '$2b$10$x', 0, 1);",
        )
        .unwrap();
    let copy = || {
        authd(
            dir.path(),
            &[],
            &["migrate-data", "--from", &sqlite_url, "--to", &db.url],
        )
    };
    let pg_rows = |table: &str| -> i64 {
        let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };

    let out = copy();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("users") && err.contains("not a uuid"), "{err}");
    // audit_events is copied before users, and rolled back with it.
    assert_eq!(pg_rows("audit_events"), 0);
    assert_eq!(pg_rows("users"), 0);

    sqlite
        .execute_batch("CREATE TABLE extra (x INTEGER); DELETE FROM users WHERE id = 'not-a-uuid';")
        .unwrap();
    let out = copy();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("extra"), "the unknown table is named: {err}");

    sqlite.execute_batch("DROP TABLE extra;").unwrap();
    let out = copy();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pg_rows("users"), 1);
    assert_eq!(pg_rows("audit_events"), 1);
}
