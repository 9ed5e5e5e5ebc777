//! Test support for external services (Redis): where to find them, a private `redis-server`
//! a test may stop and restart, and cleanup of the keys a test wrote. A service that is not
//! there is a LOUD skip (`SKIPPED` on stderr) on a developer machine and a failure when the
//! `CI` environment variable is set.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
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
