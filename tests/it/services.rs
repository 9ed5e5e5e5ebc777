//! Test support for external services (Redis, PostgreSQL): where to find them, a private
//! `redis-server` a test may stop and restart, cleanup of the keys a test wrote, and a fresh,
//! self-dropping PostgreSQL database per test (`AUTHD_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a role allowed to create databases). A service that is not
//! there is a LOUD skip (`SKIPPED` on stderr) on a developer machine and a failure when the
//! `CI` environment variable is set.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The shared Redis the tests use: `AUTHD_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_test_url() -> String {
    std::env::var("AUTHD_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// The shared Redis URL when it answers `PING`; otherwise `None` after a loud skip message
/// (or a panic when `CI` is set, so that CI never passes by skipping).
pub fn redis_url_or_skip() -> Option<String> {
    let url = redis_test_url();
    match ping(&url) {
        Ok(()) => Some(url),
        Err(e) => {
            skip_or_fail(&format!(
                "Redis at {url} is unreachable ({e}); start one or set AUTHD_TEST_REDIS_URL"
            ));
            None
        }
    }
}

/// Without `CI`: prints `SKIPPED <test>: <why>` to stderr. With `CI`: fails the test.
pub fn skip_or_fail(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
}

/// A synchronous connection to the Redis at `url` (short timeouts).
pub fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    con.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(con)
}

pub fn ping(url: &str) -> redis::RedisResult<()> {
    let mut con = connect(url)?;
    redis::cmd("PING").query::<String>(&mut con).map(|_| ())
}

/// Keys a test writes to a Redis; every one is deleted on drop (even when the test fails).
pub struct RedisKeys {
    url: String,
    keys: Vec<String>,
}

impl RedisKeys {
    pub fn new(url: &str) -> Self {
        RedisKeys {
            url: url.to_string(),
            keys: Vec::new(),
        }
    }

    /// Registers `key` for deletion and returns it.
    pub fn track(&mut self, key: String) -> String {
        self.keys.push(key.clone());
        key
    }

    /// Whether `key` exists, and its time to live in milliseconds (`PTTL`).
    pub fn pttl(&self, key: &str) -> i64 {
        let mut con = connect(&self.url).expect("Redis answers");
        redis::cmd("PTTL").arg(key).query(&mut con).expect("PTTL")
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        if let Ok(mut con) = connect(&self.url) {
            let _ = redis::cmd("DEL").arg(&self.keys).query::<i64>(&mut con);
        }
    }
}

/// A `redis-server` of the test's own on a free loopback port (no persistence), which the
/// test may stop and start again on the same port. Killed on drop.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one; `None` (after a loud skip, or a panic under `CI`) when `redis-server`
    /// cannot run here.
    pub fn start_or_skip() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(e) => {
                skip_or_fail(&format!("cannot run a private redis-server: {e}"));
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts `redis-server` on `self.port` and waits until it answers.
    pub fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ping(&self.url()).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("redis-server exited at start ({status})"));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("redis-server did not answer within 20s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL: clients see the connection drop) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- PostgreSQL ----

/// The default administrative URL of the test PostgreSQL.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `url` without its password (for messages).
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
    std::env::var("AUTHD_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.into())
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
                skip_or_fail(&format!(
                    "PostgreSQL at {} is unreachable ({}); start one or set \
                     AUTHD_TEST_POSTGRES_URL",
                    redact(&admin_url),
                    describe(&e)
                ));
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
