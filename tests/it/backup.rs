//! `authd backup` and `authd restore` (CONTRACT 12.4), driving the built binary against real
//! servers. The server runs on the backend `AUTHD_TEST_DATABASE` names and the backup is
//! restored into the other one (SQLite -> PostgreSQL by default, PostgreSQL -> SQLite with
//! `AUTHD_TEST_DATABASE=postgres`); a server on the restored database accepts the old access
//! tokens, rotates the old refresh tokens, detects reuse of those rotated before the backup,
//! keeps revoked sessions revoked and lets users log in. Bad input gets one line and exit 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::services::{servers_on_postgres, PgDatabase};
use crate::support::{authd_bin, send, unique_email, Resp, ServeProcess, TestServer, PASSWORD};

/// Runs the built `authd` in `dir` on the database at `url`, with `env` and no other
/// `AUTHD_*` variable.
fn authd(dir: &Path, url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(authd_bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.env("AUTHD_DATABASE__URL", url)
        .envs(env.iter().copied());
    cmd.output().expect("authd runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts exit 1 with exactly one line on stderr; returns it.
fn one_line_failure(out: &Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        text(&out.stdout)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err.trim_end().to_string()
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A database to restore into, of the given kind, holding nothing yet.
enum Target {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl Target {
    fn new(postgres: bool) -> Self {
        if postgres {
            Target::Postgres(PgDatabase::create().expect("PostgreSQL answers"))
        } else {
            Target::Sqlite(tempfile::tempdir().unwrap())
        }
    }

    /// The same kind as the test servers' (`AUTHD_TEST_DATABASE`).
    fn like_servers() -> Self {
        Self::new(servers_on_postgres())
    }

    fn url(&self) -> String {
        match self {
            Target::Sqlite(dir) => format!("sqlite://{}", dir.path().join("authd.db").display()),
            Target::Postgres(db) => db.url.clone(),
        }
    }

    /// First column of every row, as text.
    fn query(&self, sql: &str) -> Vec<String> {
        match self {
            Target::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("authd.db")).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let rows = stmt
                    .query_map([], |r| {
                        Ok(match r.get::<_, rusqlite::types::Value>(0)? {
                            rusqlite::types::Value::Integer(n) => n.to_string(),
                            rusqlite::types::Value::Text(t) => t,
                            other => format!("{other:?}"),
                        })
                    })
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                rows
            }
            Target::Postgres(db) => {
                let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
                c.query(sql, &[])
                    .unwrap()
                    .iter()
                    .map(|r| {
                        r.try_get::<_, i64>(0)
                            .map(|n| n.to_string())
                            .or_else(|_| r.try_get::<_, String>(0))
                            .unwrap()
                    })
                    .collect()
            }
        }
    }

    /// Whether nothing at all was written: no file, or no table.
    fn untouched(&self) -> bool {
        match self {
            Target::Sqlite(dir) => !dir.path().join("authd.db").exists(),
            Target::Postgres(_) => {
                self.query(
                    "SELECT count(*)::bigint FROM information_schema.tables \
                     WHERE table_schema = current_schema()",
                ) == ["0"]
            }
        }
    }
}

fn post(base: &str, path: &str, body: Value) -> Resp {
    send(
        reqwest::blocking::Client::new()
            .post(format!("{base}{path}"))
            .json(&body),
    )
}

fn data_str(r: &Resp, field: &str) -> String {
    assert_eq!(r.body["success"], true, "{}", r.text);
    r.body["data"][field].as_str().unwrap().to_string()
}

/// A key encryption secret for this test only.
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[test]
fn a_backup_under_load_fails_no_request_and_restores_into_the_other_backend() {
    let secret = secret();
    let env = [("AUTHD_JWT__KEY_ENCRYPTION_SECRET", secret.as_str())];
    let s = TestServer::with(&env);
    let base = s.url("");

    // Before the backup: a live session whose first token was rotated away, and a session
    // that was logged out.
    let alice = unique_email("backup-alice");
    let reg = s.register(&alice);
    let access = reg["accessToken"].as_str().unwrap().to_string();
    let first = reg["refreshToken"].as_str().unwrap().to_string();
    let live = data_str(&s.refresh(&first), "refreshToken");
    let out_token = s.login(&alice)["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        post(
            &base,
            "/api/auth/logout",
            json!({ "refreshToken": out_token })
        )
        .status,
        200
    );

    // Concurrent logins and refreshes through the whole backup.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (stop, done, failures, base) =
                (stop.clone(), done.clone(), failures.clone(), base.clone());
            let email = unique_email(&format!("backup-load-{i}"));
            std::thread::spawn(move || {
                let r = post(
                    &base,
                    "/api/auth/register",
                    json!({"email": email, "password": PASSWORD}),
                );
                assert_eq!(r.status, 201, "{}", r.text);
                let mut token = data_str(&r, "refreshToken");
                while !stop.load(Ordering::SeqCst) {
                    let r = post(
                        &base,
                        "/api/auth/login",
                        json!({"email": email, "password": PASSWORD}),
                    );
                    if r.status != 200 {
                        failures.lock().unwrap().push(format!("login {}", r.text));
                    }
                    for _ in 0..5 {
                        let r = post(&base, "/api/auth/refresh", json!({ "refreshToken": token }));
                        if r.status == 200 {
                            token = data_str(&r, "refreshToken");
                        } else {
                            failures.lock().unwrap().push(format!("refresh {}", r.text));
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < 30 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("authd-backup.db");
    let file_arg = file.to_str().unwrap();
    let url = s.database_url();
    let first_out = ok(&authd(work.path(), &url, &env, &["backup", file_arg]));
    // A second one over it, still under load.
    let out = ok(&authd(
        work.path(),
        &url,
        &env,
        &["backup", file_arg, "--force"],
    ));
    let during = done.load(Ordering::SeqCst);
    while done.load(Ordering::SeqCst) < during + 12 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(first_out.contains("users: "), "{first_out}");

    // What the command printed: the row counts, the file's SHA-256; the file is 0600 and
    // nothing else was left beside it.
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "signing_keys",
        "audit_events",
    ] {
        assert!(out.contains(&format!("{table}: ")), "{table}: {out}");
    }
    let sha = sha256_hex(&file);
    assert!(out.contains(&format!("sha256: {sha}")), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["authd-backup.db"]);

    // --verify changes nothing.
    let verified = ok(&authd(
        work.path(),
        &url,
        &[],
        &["restore", "--verify", file_arg],
    ));
    assert!(verified.contains("schema version"), "{verified}");
    assert_eq!(sha256_hex(&file), sha);
    drop(s);

    // Into the other backend.
    let target = Target::new(!servers_on_postgres());
    let restored = ok(&authd(
        work.path(),
        &target.url(),
        &env,
        &["restore", file_arg],
    ));
    assert!(restored.contains("committed"), "{restored}");
    // Signing keys stay sealed under the same secret.
    let sealed = target.query(
        "SELECT count(*) FROM signing_keys WHERE private_key IS NOT NULL AND NOT (sealed = TRUE)",
    );
    assert_eq!(sealed, ["0"], "every stored private key stays sealed");

    let home = tempfile::tempdir().unwrap();
    let target_url = target.url();
    let server = ServeProcess::spawn(
        home.path(),
        &[
            ("AUTHD_DATABASE__URL", target_url.as_str()),
            ("AUTHD_JWT__KEY_ENCRYPTION_SECRET", secret.as_str()),
        ],
    );
    let b = server.url("");
    let profile = send(
        reqwest::blocking::Client::new()
            .get(server.url("/api/auth/profile"))
            .bearer_auth(&access),
    );
    assert_eq!(profile.status, 200, "{}", profile.text);
    // The refresh token issued before the backup rotates.
    let rotated = post(&b, "/api/auth/refresh", json!({ "refreshToken": live }));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    // The logged-out session stays revoked.
    post(
        &b,
        "/api/auth/refresh",
        json!({ "refreshToken": out_token }),
    )
    .assert_error(401, "TOKEN_REVOKED");
    // Users log in.
    let login = post(
        &b,
        "/api/auth/login",
        json!({"email": alice, "password": PASSWORD}),
    );
    assert_eq!(login.status, 200, "{}", login.text);
    // A token rotated away before the backup is still reuse.
    post(&b, "/api/auth/refresh", json!({ "refreshToken": first }))
        .assert_error(401, "TOKEN_REVOKED");
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn a_backup_restores_into_the_same_backend_and_a_second_restore_is_refused() {
    let s = TestServer::start();
    let email = unique_email("backup-same");
    let reg = s.register(&email);
    let refresh = reg["refreshToken"].as_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.db");
    let file_arg = file.to_str().unwrap();
    ok(&authd(
        work.path(),
        &s.database_url(),
        &[],
        &["backup", file_arg],
    ));
    drop(s);
    let target = Target::like_servers();
    ok(&authd(
        work.path(),
        &target.url(),
        &[],
        &["restore", file_arg],
    ));
    let users = target.query("SELECT count(*) FROM users");
    assert_eq!(users, ["1"]);
    // The target now holds data: a second restore writes nothing.
    let line = one_line_failure(&authd(
        work.path(),
        &target.url(),
        &[],
        &["restore", file_arg],
    ));
    assert!(line.contains("not empty"), "{line}");
    assert_eq!(target.query("SELECT count(*) FROM users"), ["1"]);

    let home = tempfile::tempdir().unwrap();
    let url = target.url();
    let server = ServeProcess::spawn(home.path(), &[("AUTHD_DATABASE__URL", url.as_str())]);
    let r = post(
        &server.url(""),
        "/api/auth/refresh",
        json!({ "refreshToken": refresh }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Writes `bytes` over `file` from `offset`.
fn overwrite(file: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn bad_backups_and_a_non_empty_target_get_one_line_and_exit_1_and_nothing_is_written() {
    let s = TestServer::start();
    s.register(&unique_email("backup-bad"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let good = dir.join("good.db");
    let good_arg = good.to_str().unwrap();
    let url = s.database_url();
    ok(&authd(dir, &url, &[], &["backup", good_arg]));
    let sha = sha256_hex(&good);

    // An existing file is refused without --force, and stays as it was.
    let line = one_line_failure(&authd(dir, &url, &[], &["backup", good_arg]));
    assert!(line.contains("--force"), "{line}");
    assert_eq!(sha256_hex(&good), sha);

    let bytes = std::fs::read(&good).unwrap();
    let page = 4096usize;
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    // Not a SQLite file.
    let not_sqlite = dir.join("notes.txt");
    std::fs::write(&not_sqlite, "this is not a backup\n").unwrap();
    cases.push((not_sqlite, "not a SQLite database"));
    // Truncated.
    let truncated = dir.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    cases.push((truncated, "truncated"));
    // Corrupted: garbage over every page but the first.
    let corrupted = dir.join("corrupted.db");
    std::fs::write(&corrupted, &bytes).unwrap();
    for p in 1..bytes.len() / page {
        overwrite(&corrupted, (p * page) as u64, &[0xA5; 64]);
    }
    cases.push((corrupted, "damaged"));
    // From a newer authd.
    let newer = dir.join("newer.db");
    std::fs::write(&newer, &bytes).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute(
            "INSERT INTO authd_schema_migrations (version, name, applied_on, checksum) \
             VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            [],
        )
        .unwrap();
    cases.push((newer, "newer than this authd"));

    for (file, why) in &cases {
        let arg = file.to_str().unwrap();
        let target = Target::like_servers();
        for args in [vec!["restore", "--verify", arg], vec!["restore", arg]] {
            let line = one_line_failure(&authd(dir, &target.url(), &[], &args));
            assert!(line.contains(why), "{args:?}: expected '{why}' in: {line}");
        }
        assert!(target.untouched(), "{why}: nothing written to the target");
    }

    // A target that holds data (the server's own database): refused, nothing written.
    let before = s.query_column("SELECT count(*) FROM users", &[]);
    let line = one_line_failure(&authd(dir, &url, &[], &["restore", good_arg]));
    assert!(line.contains("not empty"), "{line}");
    assert_eq!(s.query_column("SELECT count(*) FROM users", &[]), before);
}

#[test]
fn a_full_disk_during_a_backup_is_one_line_and_leaves_nothing_under_the_name() {
    let s = TestServer::start();
    for i in 0..5 {
        s.register(&unique_email(&format!("backup-full-{i}")));
    }
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("b.db");
    // The file size limit (RLIMIT_FSIZE, 16 blocks: far below the database's size) makes
    // every write past it fail as on a full disk; SIGXFSZ ignored so the write returns an
    // error instead of killing the process.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -f 16 && trap '' XFSZ && exec \"$0\" \"$@\"",
        authd_bin().to_str().unwrap(),
        "backup",
        file.to_str().unwrap(),
    ])
    .current_dir(work.path())
    .stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.env("AUTHD_DATABASE__URL", s.database_url());
    let out = cmd.output().unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("cannot write the backup"), "{line}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

#[test]
fn a_restore_that_fails_half_way_writes_nothing() {
    let s = TestServer::start();
    s.register(&unique_email("backup-half"));
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("b.db");
    let file_arg = file.to_str().unwrap();
    ok(&authd(
        work.path(),
        &s.database_url(),
        &[],
        &["backup", file_arg],
    ));
    drop(s);
    // A refresh token of a session the backup does not hold (integrity_check does not look
    // at foreign keys): the restore fails at that table, after users and sessions were
    // copied in the same transaction.
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch(
            "PRAGMA foreign_keys = OFF; \
             INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at) \
             VALUES ('00000000-0000-4000-8000-000000000000', 'orphan', 0, 1);",
        )
        .unwrap();
    let target = Target::like_servers();
    let out = authd(work.path(), &target.url(), &[], &["restore", file_arg]);
    one_line_failure(&out);
    // Migrated, but not a row of the backup arrived.
    assert_eq!(target.query("SELECT count(*) FROM users"), ["0"]);
    assert_eq!(target.query("SELECT count(*) FROM sessions"), ["0"]);
    assert_eq!(target.query("SELECT count(*) FROM audit_events"), ["0"]);
}
