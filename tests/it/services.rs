//! Test support: the external services some tests need (PostgreSQL, Redis), and a fresh,
//! self-dropping PostgreSQL database per test.
//!
//! URLs come from `AUTHD_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! a role allowed to create databases) and `AUTHD_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). A service that does not answer is a loud skip on a laptop (a
//! `SKIPPED` line on stderr; the rest of the suite still runs) and a test failure when `CI` is
//! set, where `.ci/run` has started both services first.
#![allow(dead_code)]

use std::sync::Once;
use std::time::Duration;

/// The default administrative URL of the test PostgreSQL.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The default URL of the test Redis.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// True when running under CI (`CI` set and not `false`/`0`): missing services fail tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A service is down: under CI the test fails; elsewhere it says so loudly and the caller
/// returns early.
fn unavailable(service: &str, url: &str, why: &str) {
    let url = redact(url);
    if in_ci() {
        panic!(
            "{service} at {url} is not reachable ({why}) and CI is set: start it (.ci/run does)"
        );
    }
    eprintln!(
        "SKIPPED: {service} at {url} is not reachable ({why}); \
         this test needs it (set CI=1 to make this a failure)"
    );
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// The administrative URL of the test PostgreSQL.
pub fn postgres_admin_url() -> String {
    std::env::var("AUTHD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// The URL of the test Redis, if it answers a PING (else a loud skip, or a panic under CI).
pub fn redis_url() -> Option<String> {
    let url = std::env::var("AUTHD_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
    let answered = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    match answered {
        Ok(_) => Some(url),
        Err(e) => {
            unavailable("Redis", &url, &e.to_string());
            None
        }
    }
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => format!("{}/{db}", &base[..authority_start + slash]),
        None => format!("{base}/{db}"),
    };
    match query {
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

fn admin_client(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    config.connect(postgres::NoTls)
}

/// A fresh database `authd_test_<pid>_<random>` on the test PostgreSQL, dropped (with
/// `WITH (FORCE)`, closing whatever connections are left) when this guard drops, also when
/// the test panics.
pub struct PgDatabase {
    /// The URL of the new database.
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl PgDatabase {
    /// Creates the database, or `None` (loudly) when PostgreSQL does not answer outside CI.
    pub fn create() -> Option<Self> {
        let admin_url = postgres_admin_url();
        let mut admin = match admin_client(&admin_url) {
            Ok(c) => c,
            Err(e) => {
                unavailable("PostgreSQL", &admin_url, &describe(&e));
                return None;
            }
        };
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| sweep_orphans(&mut admin));
        let name = format!(
            "authd_test_{}_{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {}", describe(&e)));
        Some(PgDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = admin_client(&self.admin_url).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = dropped {
            eprintln!(
                "could not drop test database {}: {}",
                self.name,
                describe(&e)
            );
        }
    }
}

/// Drops the test databases of test processes that no longer run (killed before their guards
/// dropped), so a crashed run leaves nothing behind for long.
fn sweep_orphans(admin: &mut postgres::Client) {
    let Ok(rows) = admin.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'authd\\_test\\_%'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name
            .strip_prefix("authd_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if pid.is_some() && !alive {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// `AUTHD_TEST_DATABASE=postgres`: every `TestServer` runs on a fresh PostgreSQL database
/// instead of a SQLite file.
pub fn servers_on_postgres() -> bool {
    std::env::var("AUTHD_TEST_DATABASE").is_ok_and(|v| v == "postgres" || v == "postgresql")
}
