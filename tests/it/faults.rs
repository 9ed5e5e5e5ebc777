//! Faults: a database held locked by another process, a read-only database file, and
//! `kill -9` in the middle of a write load. Each answers by the contract and loses nothing
//! that was acknowledged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::support::*;

/// 503 `SERVICE_UNAVAILABLE` with `Retry-After`, and nothing about the cause in the body.
fn assert_unavailable(r: &Resp, dir: &Path) {
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("numeric Retry-After: {:?}", r.headers));
    assert!(secs > 0, "Retry-After {secs}");
    let text = r.text.to_lowercase();
    for leak in [
        "sql",
        "locked",
        "busy",
        "readonly",
        "read-only",
        ".db",
        "/tmp",
        "insert",
        "update",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {}", r.text);
    }
    assert!(!r.text.contains(&dir.display().to_string()), "{}", r.text);
}

fn register_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

fn login_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

#[test]
fn locked_database_answers_503_and_recovers_by_itself() {
    // SQLite-only: locks the SQLite file (PostgreSQL's faults: store_conformance, pg_faults).
    let s = TestServer::sqlite_only(&[("AUTHD_DATABASE__BUSY_TIMEOUT", "500ms")]);
    let known = unique_email("lock-known");
    let data = s.register(&known);
    let refresh = data["refreshToken"].as_str().unwrap().to_string();
    let fresh = unique_email("lock-fresh");

    let locker = rusqlite::Connection::open(s.db_path()).unwrap();
    locker
        .execute_batch(
            "BEGIN EXCLUSIVE;
             INSERT INTO login_failures (key, count, window_start) VALUES ('test:lock', 1, 0);",
        )
        .unwrap();
    let mut timings = Vec::new();
    for (path, body) in [
        ("/api/auth/register", register_body(&fresh)),
        ("/api/auth/login", login_body(&known)),
        ("/api/auth/refresh", json!({ "refreshToken": refresh })),
    ] {
        let t = Instant::now();
        let r = s.post_json(path, body);
        let took = t.elapsed();
        assert_unavailable(&r, s.dir.path());
        assert!(took < Duration::from_secs(5), "{path} took {took:?}");
        timings.push((path, took));
    }
    eprintln!("locked database: 503 after {timings:?}");
    locker.execute_batch("ROLLBACK").unwrap();

    // Nothing was half-written: the refused registration is not taken, the refresh token
    // was not spent; the same requests now succeed without a restart.
    let r = s.post_json("/api/auth/register", register_body(&fresh));
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s.post_json("/api/auth/login", login_body(&known));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.refresh(&refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(send(s.get("/readyz")).status, 200);
}

/// An authenticated request does not wait for another process's write: while that process
/// holds the write lock (longer than `busy_timeout`), profile answers at once from the last
/// commit, and the revocation it commits is refused by the very next request.
#[test]
fn an_authenticated_read_waits_for_no_writer_and_sees_a_revocation_at_once() {
    let s = TestServer::sqlite_only(&[("AUTHD_DATABASE__BUSY_TIMEOUT", "2s")]);
    let data = s.register(&unique_email("nowait"));
    let access = data["accessToken"].as_str().unwrap().to_string();
    assert_eq!(s.get_auth("/api/auth/profile", &access).status, 200);
    let writer = rusqlite::Connection::open(s.db_path()).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; UPDATE sessions SET revoked_at = 1;")
        .unwrap();
    let on_the_worker = || s.metric(r#"authd_session_reads_total{path="worker"}"#);
    let before = on_the_worker();
    for _ in 0..8 {
        let t = Instant::now();
        let r = s.get_auth("/api/auth/profile", &access);
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            took < Duration::from_secs(1),
            "waited {took:?} for a writer"
        );
    }
    assert_eq!(on_the_worker() - before, 8.0, "read on the worker thread");
    writer.execute_batch("COMMIT").unwrap();
    for _ in 0..8 {
        s.get_auth("/api/auth/profile", &access)
            .assert_error(401, "TOKEN_REVOKED");
    }
}

/// Marks files immutable (`chattr +i`), which even root cannot write; on drop makes them
/// writable again and removes `dir` (its `TempDir` cannot delete immutable files).
struct Immutable {
    files: Vec<PathBuf>,
    dir: PathBuf,
}

impl Immutable {
    fn set(dir: &Path, files: Vec<PathBuf>) -> Self {
        let guard = Immutable {
            files,
            dir: dir.to_path_buf(),
        };
        for f in &guard.files {
            let st = Command::new("chattr").arg("+i").arg(f).status();
            assert!(
                matches!(st, Ok(s) if s.success()),
                "chattr +i {} failed: {st:?}",
                f.display()
            );
        }
        guard
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in self.files.iter().filter(|f| f.exists()) {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn read_only_database_answers_503_and_writes_nothing() {
    // SQLite-only: makes the SQLite file read-only.
    let s = TestServer::sqlite_only(&[]);
    let email = unique_email("ro");
    let data = s.register(&email);
    let refresh = data["refreshToken"].as_str().unwrap().to_string();
    let access = data["accessToken"].as_str().unwrap().to_string();
    let dir = s.stop();
    let dir_path = dir.path().to_path_buf();
    let files: Vec<PathBuf> = ["authd.db", "authd.db-wal", "authd.db-shm"]
        .iter()
        .map(|f| dir_path.join(f))
        .filter(|f| f.exists())
        .collect();
    let guard = Immutable::set(&dir_path, files);
    // Root ignores permission bits, so prove the file really cannot be written.
    assert!(std::fs::OpenOptions::new()
        .append(true)
        .open(dir_path.join("authd.db"))
        .is_err());

    let s = TestServer::in_dir(dir, &[("AUTHD_DATABASE__BUSY_TIMEOUT", "500ms")]);
    let fresh = unique_email("ro-fresh");
    for (path, body) in [
        ("/api/auth/register", register_body(&fresh)),
        ("/api/auth/login", login_body(&email)),
        ("/api/auth/refresh", json!({ "refreshToken": refresh })),
    ] {
        let t = Instant::now();
        let r = s.post_json(path, body);
        assert_unavailable(&r, &dir_path);
        eprintln!(
            "read-only database: {path} -> {} in {:?}",
            r.status,
            t.elapsed()
        );
    }
    // Reads still work.
    assert_eq!(s.get_auth("/api/auth/profile", &access).status, 200);

    let dir = s.stop();
    for f in &guard.files {
        assert!(Command::new("chattr")
            .arg("-i")
            .arg(f)
            .status()
            .unwrap()
            .success());
    }
    let s = TestServer::in_dir(dir, &[]);
    let r = s.post_json("/api/auth/register", register_body(&fresh));
    assert_eq!(
        r.status, 201,
        "the refused registration left a row: {}",
        r.text
    );
    let r = s.refresh(&refresh);
    assert_eq!(
        r.status, 200,
        "the refused refresh spent the token: {}",
        r.text
    );
    drop(s);
    drop(guard);
}

/// What one load thread saw acknowledged before the kill.
#[derive(Default)]
struct Acked {
    registered: Vec<String>,
    logged_out: Vec<String>,
}

fn load(base: String, stop: Arc<AtomicBool>, logouts: Arc<AtomicUsize>, tag: usize) -> Acked {
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acked = Acked::default();
    // A transport error means the server is gone: stop there.
    while !stop.load(Ordering::Relaxed) {
        let email = unique_email(&format!("k9-{tag}"));
        let reg = client
            .post(format!("{base}/api/auth/register"))
            .json(&register_body(&email))
            .send();
        match reg {
            Ok(r) if r.status() == 201 => acked.registered.push(email.clone()),
            Ok(_) => continue,
            Err(_) => break,
        }
        let login = client
            .post(format!("{base}/api/auth/login"))
            .json(&login_body(&email))
            .send()
            .and_then(|r| r.json::<Value>());
        let Ok(login) = login else { break };
        let Some(refresh) = login["data"]["refreshToken"].as_str() else {
            continue;
        };
        let out = client
            .post(format!("{base}/api/auth/logout"))
            .json(&json!({ "refreshToken": refresh }))
            .send();
        match out {
            Ok(r) if r.status() == 200 => {
                acked.logged_out.push(refresh.to_string());
                logouts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    acked
}

#[test]
fn kill_9_under_load_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::spawn(dir.path(), &[]);
    let base = format!("http://{}", serve.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let logouts = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|tag| {
            let (base, stop, logouts) = (base.clone(), stop.clone(), logouts.clone());
            std::thread::spawn(move || load(base, stop, logouts, tag))
        })
        .collect();
    // About two seconds of load, longer on a busy machine until there is enough to check.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2)
        || (logouts.load(Ordering::Relaxed) < 4 && started.elapsed() < Duration::from_secs(20))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    serve.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Acked::default();
    for w in workers {
        let a = w.join().expect("load thread");
        acked.registered.extend(a.registered);
        acked.logged_out.extend(a.logged_out);
    }
    assert!(
        acked.registered.len() >= 4 && !acked.logged_out.is_empty(),
        "too little load: {} registrations, {} logouts",
        acked.registered.len(),
        acked.logged_out.len()
    );

    let serve = ServeProcess::spawn(dir.path(), &[]);
    let db = dir.path().join("data/authd.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let orphans: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(orphans, 0, "foreign keys broken after the kill");
    drop(conn);

    let client = Client::new();
    let post = |path: &str, body: Value| send(client.post(serve.url(path)).json(&body));
    for email in &acked.registered {
        let r = post("/api/auth/login", login_body(email));
        assert_eq!(
            r.status, 200,
            "acknowledged {email} cannot log in: {}",
            r.text
        );
    }
    for token in &acked.logged_out {
        post("/api/auth/refresh", json!({ "refreshToken": token }))
            .assert_error(401, "TOKEN_REVOKED");
    }
    eprintln!(
        "kill -9: {} acknowledged registrations and {} acknowledged logouts survived",
        acked.registered.len(),
        acked.logged_out.len()
    );
}
