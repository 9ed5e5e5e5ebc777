//! `authd doctor` (CONTRACT 12.3), driving the built binary: one line a check and a summary
//! (or one JSON object), exit 1 exactly when a check fails, every warn or fail with a fix,
//! nothing changed (no database created, no migration applied) and no secret printed. Every
//! test runs on SQLite, and on PostgreSQL with `AUTHD_TEST_DATABASE=postgres`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::services::{redis_test_url, servers_on_postgres, PgDatabase};
use crate::support::*;

/// The checks the contract names, as doctor names them.
const CHECKS: [&str; 11] = [
    "configuration",
    "database",
    "integrity",
    "permissions",
    "signing-keys",
    "audit-chain",
    "disk-space",
    "clock",
    "cookie-hsts-proxies",
    "redis",
    "mail",
];

fn doctor_at(dir: &Path, database_url: &str, env: &[(&str, &str)], json: bool) -> Output {
    let mut cmd = Command::new(authd_bin());
    cmd.arg("doctor").current_dir(dir);
    if json {
        cmd.arg("--json");
    }
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.env("AUTHD_DATABASE__URL", database_url)
        .envs(env.iter().copied())
        .output()
        .expect("authd runs")
}

fn doctor(s: &TestServer, env: &[(&str, &str)]) -> Output {
    doctor_at(s.dir.path(), &s.database_url(), env, false)
}

/// The report, checked for its shape: `(status, name, detail)` per line, and the summary
/// line's counts matching them; the exit code is 1 exactly when a check failed.
fn report(o: &Output) -> Vec<(String, String, String)> {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines: Vec<&str> = out.lines().collect();
    let summary = lines.pop().unwrap_or_else(|| panic!("no output: {o:?}"));
    let checks: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let (status, rest) = l.split_once(' ').expect(l);
            assert!(["ok", "warn", "fail"].contains(&status), "{l}");
            let (name, detail) = rest.split_once(": ").expect(l);
            assert!(!detail.trim().is_empty(), "{l}");
            (status.to_string(), name.to_string(), detail.to_string())
        })
        .collect();
    let n = |s: &str| checks.iter().filter(|c| c.0 == s).count();
    assert_eq!(
        summary,
        format!("{} ok, {} warn, {} fail", n("ok"), n("warn"), n("fail"))
    );
    let expected = if n("fail") > 0 { 1 } else { 0 };
    assert_eq!(o.status.code(), Some(expected), "{out}");
    checks
}

fn find<'a>(checks: &'a [(String, String, String)], name: &str) -> &'a (String, String, String) {
    checks
        .iter()
        .find(|c| c.1 == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

#[test]
fn a_healthy_installation_passes_every_check() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start();
    // As an installation keeps it (the test's temporary directory may be open to others).
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    s.register(&unique_email("doctor"));
    let checks = report(&doctor(&s, &[]));
    let names: Vec<&str> = checks.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, CHECKS);
    for c in &checks {
        // disk-space may warn on a full test machine; nothing else may.
        assert!(c.0 == "ok" || c.1 == "disk-space", "{c:?}");
    }
    assert!(find(&checks, "audit-chain").2.contains("events sealed"));
    assert_eq!(
        find(&checks, "mail").2,
        "email.transport is none: no mail is sent"
    );
    // The JSON form holds the same checks and counts.
    let o = doctor_at(s.dir.path(), &s.database_url(), &[], true);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = v["checks"].as_array().unwrap();
    assert_eq!(list.len(), CHECKS.len());
    for (c, name) in list.iter().zip(CHECKS) {
        assert_eq!(c["name"], name);
        assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let ok = list.iter().filter(|c| c["status"] == "ok").count();
    assert_eq!(v["ok"], ok);
    assert_eq!(v["fail"], 0);
    assert_eq!(v["ok"].as_u64().unwrap() + v["warn"].as_u64().unwrap(), 11);
}

#[test]
fn a_bad_configuration_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("authd.db").display());
    let o = doctor_at(
        dir.path(),
        &url,
        &[("AUTHD_JWT__ACCESS_TTL", "banana")],
        false,
    );
    let checks = report(&o);
    let c = find(&checks, "configuration");
    assert_eq!(c.0, "fail");
    assert!(c.2.contains("jwt.access_ttl"), "{c:?}");
    assert!(c.2.contains("check-config"), "a fix: {c:?}");
}

#[test]
fn a_missing_database_fails_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _db) = if servers_on_postgres() {
        // A database that does not exist on the server.
        let db = PgDatabase::create().expect("PostgreSQL answers");
        let url = format!("{}_missing", db.url);
        (url, Some(db))
    } else {
        let path = dir.path().join("data").join("authd.db");
        (format!("sqlite://{}", path.display()), None)
    };
    let checks = report(&doctor_at(dir.path(), &url, &[], false));
    let c = find(&checks, "database");
    assert_eq!(c.0, "fail", "{c:?}");
    assert!(c.2.contains("database.url"), "a fix: {c:?}");
    assert!(!dir.path().join("data").exists(), "doctor created nothing");
}

/// A database at schema V6 (before the audit chain).
mod sqlite_v6 {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres_v6 {
    refinery::embed_migrations!("migrations/postgres");
}

#[test]
fn pending_migrations_fail_and_doctor_applies_none() {
    let dir = tempfile::tempdir().unwrap();
    let pg = servers_on_postgres().then(|| PgDatabase::create().expect("PostgreSQL answers"));
    let url = match &pg {
        Some(db) => {
            let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
            let mut runner = postgres_v6::migrations::runner();
            runner.set_migration_table_name("authd_schema_migrations");
            runner
                .set_target(refinery::Target::Version(6))
                .run(&mut c)
                .unwrap();
            db.url.clone()
        }
        None => {
            let path = dir.path().join("authd.db");
            let mut c = rusqlite::Connection::open(&path).unwrap();
            let mut runner = sqlite_v6::migrations::runner();
            runner.set_migration_table_name("authd_schema_migrations");
            runner
                .set_target(refinery::Target::Version(6))
                .run(&mut c)
                .unwrap();
            format!("sqlite://{}", path.display())
        }
    };
    let checks = report(&doctor_at(dir.path(), &url, &[], false));
    let c = find(&checks, "database");
    assert_eq!(c.0, "fail");
    assert!(
        c.2.contains("pending") && c.2.contains("V12__audit_chain"),
        "{c:?}"
    );
    assert!(c.2.contains("authd migrate"), "a fix: {c:?}");
    // Still pending: doctor migrated nothing.
    let again = report(&doctor_at(dir.path(), &url, &[], false));
    assert_eq!(find(&again, "database").0, "fail");
}

#[test]
fn a_database_readable_by_others_fails_on_sqlite() {
    let s = TestServer::start();
    if s.on_postgres() {
        let checks = report(&doctor(&s, &[]));
        let c = find(&checks, "permissions");
        assert_eq!(c.0, "ok");
        assert!(c.2.contains("PostgreSQL"), "{c:?}");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(s.db_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let checks = report(&doctor(&s, &[]));
    let c = find(&checks, "permissions");
    assert_eq!(c.0, "fail", "{c:?}");
    assert!(
        c.2.contains("readable by others") && c.2.contains("chmod 600"),
        "{c:?}"
    );
    std::fs::set_permissions(s.db_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let checks = report(&doctor(&s, &[]));
    let c = find(&checks, "permissions");
    assert_eq!(c.0, "fail", "the directory too: {c:?}");
    assert!(c.2.contains("chmod 700"), "{c:?}");
}

#[test]
fn a_database_without_signing_keys_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pg = servers_on_postgres().then(|| PgDatabase::create().expect("PostgreSQL answers"));
    let url = pg.as_ref().map_or_else(
        || format!("sqlite://{}", dir.path().join("authd.db").display()),
        |db| db.url.clone(),
    );
    // `migrate` makes the schema but no keys (serve makes them on its first start).
    let mut migrate = Command::new(authd_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        migrate.env_remove(k);
    }
    let o = migrate
        .arg("migrate")
        .current_dir(dir.path())
        .env("AUTHD_DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let checks = report(&doctor_at(dir.path(), &url, &[], false));
    let c = find(&checks, "signing-keys");
    assert_eq!(c.0, "fail", "{c:?}");
    assert!(c.2.contains("authd serve"), "a fix: {c:?}");
    assert_eq!(find(&checks, "database").0, "ok");
}

#[test]
fn a_tampered_audit_trail_fails() {
    let s = TestServer::start();
    s.register(&unique_email("doctor"));
    s.register(&unique_email("doctor"));
    // Sealed within 10 s (see audit_chain.rs); then an event is edited in place.
    let started = std::time::Instant::now();
    while s.query_column("SELECT COUNT(*) FROM audit_events WHERE seq IS NULL", &[])[0] != "0" {
        assert!(started.elapsed().as_secs() < 10, "not sealed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.execute_sql(
        "UPDATE audit_events SET outcome = 'failure' WHERE seq = 1",
        &[],
    );
    let checks = report(&doctor(&s, &[]));
    let c = find(&checks, "audit-chain");
    assert_eq!(c.0, "fail");
    assert!(c.2.starts_with("broken at seq 1: "), "{c:?}");
}

#[test]
fn inconsistent_proxy_settings_and_an_unreachable_redis_warn_without_failing() {
    let s = TestServer::start();
    let checks = report(&doctor(
        &s,
        &[
            ("AUTHD_SERVER__HSTS", "true"),
            ("AUTHD_RATE_LIMIT__REDIS_URL", "redis://127.0.0.1:1/0"),
        ],
    ));
    let c = find(&checks, "cookie-hsts-proxies");
    assert_eq!(c.0, "warn", "{c:?}");
    assert!(c.2.contains("server.trusted_proxies"), "a fix: {c:?}");
    let c = find(&checks, "redis");
    assert_eq!(c.0, "warn", "{c:?}");
    // A proxy, HSTS and a Secure cookie agree; the test Redis answers.
    let checks = report(&doctor(
        &s,
        &[
            ("AUTHD_SERVER__HSTS", "true"),
            ("AUTHD_SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
            ("AUTHD_RATE_LIMIT__REDIS_URL", &redis_test_url()),
        ],
    ));
    assert_eq!(find(&checks, "cookie-hsts-proxies").0, "ok");
    assert_eq!(find(&checks, "redis").0, "ok", "{checks:?}");
    // A cookie without Secure behind a proxy warns.
    let checks = report(&doctor(
        &s,
        &[
            ("AUTHD_COOKIE__SECURE", "false"),
            ("AUTHD_SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
        ],
    ));
    assert_eq!(find(&checks, "cookie-hsts-proxies").0, "warn");
}

#[test]
fn doctor_never_prints_a_secret() {
    let s = TestServer::start();
    let access = "k3Vq9ZxT2mWp7LrB4nYs8HdJ6fGc1QaE5uXo0iKtRvMw";
    let refresh = "Pz8Hn2Lq5Wx7Rt1Ky4Bv9Cm3Gd6Jf0Sa-Ue_Io+Xr/Tq=";
    let o = doctor(
        &s,
        &[
            ("AUTHD_JWT__ALGORITHM", "HS256"),
            ("AUTHD_JWT__ACCESS_SECRET", access),
            ("AUTHD_JWT__REFRESH_SECRET", refresh),
            (
                "AUTHD_RATE_LIMIT__REDIS_URL",
                "redis://:redis-Pa55word@127.0.0.1:1/0",
            ),
        ],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    report(&o);
    for secret in [access, refresh, "redis-Pa55word"] {
        assert!(!all.contains(secret), "{secret} printed: {all}");
    }
}

#[test]
fn a_damaged_sqlite_file_fails_the_integrity_check() {
    let s = TestServer::start();
    s.register(&unique_email("integrity"));
    s.register(&unique_email("integrity"));
    if s.on_postgres() {
        let checks = report(&doctor(&s, &[]));
        let c = find(&checks, "integrity");
        assert_eq!(c.0, "ok");
        assert!(c.2.contains("PostgreSQL"), "{c:?}");
        return;
    }
    // An index whose recorded definition no longer matches its entries: rows "missing from
    // index", as after a torn write.
    {
        let c = rusqlite::Connection::open(s.db_path()).unwrap();
        c.execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_master SET sql = 'CREATE INDEX audit_events_email ON audit_events (ip)'
              WHERE name = 'audit_events_email';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    }
    let checks = report(&doctor(&s, &[]));
    let c = find(&checks, "integrity");
    assert_eq!(c.0, "fail", "{c:?}");
    assert!(c.2.contains("missing from index"), "{c:?}");
    assert!(c.2.contains("backup"), "a fix: {c:?}");
}
