//! `authd serve` as a real process: the ready line, first-start files (database, private
//! keys), restarts, graceful SIGTERM/SIGINT with requests in flight, and the one-shot
//! commands working against a running server.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{authd, count, numbers, run, KillOnDrop};
use crate::support::*;

/// How long `serve` may take to log its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `authd serve`, killed on drop unless it already exited.
pub struct ServeChild {
    child: KillOnDrop,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    pub client: reqwest::blocking::Client,
}

impl ServeChild {
    /// `authd serve` in `dir` on 127.0.0.1:0 with fast bcrypt, plus `env`.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = authd(dir);
        cmd.env("AUTHD_SERVER__BIND", "127.0.0.1:0");
        cmd.envs(env.iter().copied()).arg("serve");
        Self::spawn(cmd)
    }

    /// Spawns `cmd` (an `authd ... serve` command) and waits until it logs the address it
    /// listens on.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = KillOnDrop(cmd.spawn().expect("spawn authd serve"));
        let out = child.0.stdout.take().expect("piped stdout");
        let err = child.0.stderr.take().expect("piped stderr");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let stdout = stdout.clone();
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    stdout.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        {
            let stderr = stderr.clone();
            thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening") => match address_in(&line) {
                    Some(addr) => break addr,
                    None => panic!("the ready line names no address: {line}"),
                },
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("authd serve not ready within {READY_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.0.wait().ok();
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "authd serve exited before it was ready ({status:?}); stdout: {:?}; stderr: {}",
                        stdout.lock().unwrap(),
                        stderr.lock().unwrap()
                    );
                }
            }
        };
        ServeChild {
            child,
            addr,
            stdout,
            stderr,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str) -> Resp {
        send(self.client.get(self.url(path)))
    }

    pub fn get_auth(&self, path: &str, access: &str) -> Resp {
        send(self.client.get(self.url(path)).bearer_auth(access))
    }

    pub fn post_json(&self, path: &str, body: Value) -> Resp {
        send(self.client.post(self.url(path)).json(&body))
    }

    /// Registers `email` with `PASSWORD`; returns the `data` object.
    pub fn register(&self, email: &str) -> Value {
        let r = self.post_json(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 201, "register {email}: {}", r.text);
        r.body["data"].clone()
    }

    /// Sends a signal (`TERM`, `INT`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("wait for authd") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "authd serve did not exit within {timeout:?}; stdout: {:?}",
                self.stdout_lines()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// The first `IP:PORT` in a log line (`addr=127.0.0.1:4321`, `http://127.0.0.1:4321`, ...).
fn address_in(line: &str) -> Option<SocketAddr> {
    line.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '=')
        .map(|t| t.trim_start_matches("http://").trim_end_matches('/'))
        .find_map(|t| t.parse().ok())
}

fn integrity_ok(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn serve_first_start_creates_the_database_with_its_keys_and_a_restart_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ServeChild::start(dir.path(), &[]);
    assert!(first.addr.ip().is_loopback() && first.addr.port() != 0);
    assert!(
        first.stdout_lines().iter().any(|l| l.contains("listening")),
        "the ready line is logged on stdout"
    );
    let health = first.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.body, json!({"status": "ok"}));
    assert_eq!(first.get("/readyz").status, 200);

    let db = dir.path().join("data/authd.db");
    assert!(db.is_file(), "database created at data/authd.db");
    // The keys are generated into the database (0600), not into files.
    let keys = dir.path().join("data/keys");
    assert!(!keys.exists(), "nothing is written to jwt.key_dir");
    #[cfg(unix)]
    assert_eq!(mode(&db), 0o600, "database mode");

    let email = unique_email("proc-restart");
    let data = first.register(&email);
    let access = data["accessToken"].as_str().unwrap().to_string();
    let jwks = first.get("/.well-known/jwks.json").body;
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(30)).code(), Some(0));
    drop(first);

    let second = ServeChild::start(dir.path(), &[]);
    assert!(!keys.exists(), "nothing is written to jwt.key_dir");
    let profile = second.get_auth("/api/auth/profile", &access);
    assert_eq!(
        profile.status, 200,
        "a token issued before the restart verifies: {}",
        profile.text
    );
    assert_eq!(profile.body["data"]["user"]["email"], email);
    assert_eq!(second.get("/.well-known/jwks.json").body, jwks);
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let slow = [
        ("AUTHD_PASSWORD__BCRYPT_COST", "14"),
        ("AUTHD_RATE_LIMIT__ENABLED", "false"),
        ("AUTHD_SERVER__SHUTDOWN_GRACE", "120s"),
    ];
    let email = unique_email("proc-term");
    let created = run(
        authd(dir.path()).envs(slow.iter().copied()).args([
            "create-user",
            "--email",
            &email,
            "--password-stdin",
        ]),
        Some(PASSWORD.as_bytes()),
    );
    created.ok();
    let mut server = ServeChild::start(dir.path(), &slow);
    let url = server.url("/api/auth/login");
    let done = Arc::new(AtomicUsize::new(0));
    let inflight: Vec<_> = (0..4)
        .map(|_| {
            let (url, email, done) = (url.clone(), email.clone(), done.clone());
            thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(180))
                    .build()
                    .unwrap();
                let r = client
                    .post(url)
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .map(|resp| {
                        let status = resp.status().as_u16();
                        let body: Value = resp.json().unwrap_or(Value::Null);
                        (status, body)
                    });
                done.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(800));
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the logins are still running when SIGTERM arrives"
    );
    server.signal("TERM");

    // The listener closes at once, while the logins are still being answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        match TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)) {
            Err(_) => break true,
            Ok(_) if Instant::now() > deadline => break false,
            Ok(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(refused, "new connections are refused after SIGTERM");
    assert!(
        done.load(Ordering::SeqCst) < 4 && server.running(),
        "refused while requests were still in flight"
    );

    for handle in inflight {
        let (status, body) = handle
            .join()
            .unwrap()
            .expect("an in-flight request gets its response");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true, "{body}");
        assert!(body["data"]["accessToken"].is_string(), "{body}");
    }
    let status = server.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr_text());
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)).is_err(),
        "nothing listens after exit"
    );
    let db = dir.path().join("data/authd.db");
    integrity_ok(&db);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM sessions"),
        4,
        "every completed login was stored"
    );
    let wal = dir.path().join("data/authd.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the database was closed cleanly (WAL checkpointed)"
    );
}

#[test]
fn sigint_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeChild::start(dir.path(), &[]);
    assert_eq!(server.get("/healthz").status, 200);
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr_text());
    integrity_ok(&dir.path().join("data/authd.db"));
}

#[test]
fn one_shot_commands_work_against_a_running_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeChild::start(dir.path(), &[("AUTHD_RATE_LIMIT__ENABLED", "false")]);
    let email = unique_email("proc-live");
    let data = server.register(&email);
    let refresh = data["refreshToken"].as_str().unwrap().to_string();
    let access = data["accessToken"].as_str().unwrap().to_string();

    // A user created by the CLI can log in to the running server at once.
    let other = unique_email("proc-cli");
    let id = run(
        authd(dir.path()).args(["create-user", "--email", &other, "--password-stdin"]),
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    let id = id.ok().trim().to_string();
    let login = server.post_json(
        "/api/auth/login",
        json!({"email": other, "password": PASSWORD}),
    );
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["data"]["user"]["id"], id.as_str());

    let cleanup = run(
        authd(dir.path())
            .arg("cleanup-tokens")
            .env("AUTHD_CLEANUP__RETENTION", "0s"),
        None,
    );
    cleanup.ok();

    let revoke = run(
        authd(dir.path()).args(["revoke-sessions", "--email", &email, "--yes"]),
        None,
    );
    assert_eq!(numbers(revoke.ok()), vec![1]);
    server
        .post_json("/api/auth/refresh", json!({"refreshToken": refresh}))
        .assert_error(401, "TOKEN_REVOKED");
    server
        .get_auth("/api/auth/profile", &access)
        .assert_error(401, "TOKEN_REVOKED");

    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
    integrity_ok(&dir.path().join("data/authd.db"));
}

/// A SIGTERM sent the moment authd logs its address (as systemd may, right after READY) is
/// handled: a graceful stop and exit 0, never the signal's default action. The handlers
/// used to be registered only when the server first polled its shutdown future, after that
/// line and after READY; a test that stopped a server at once was killed by the signal.
#[test]
fn sigterm_right_after_the_listening_line_is_a_graceful_stop() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let mut serve = ServeChild::start(dir.path(), &[]);
        serve.signal("TERM");
        let status = serve.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "{status}; stdout: {:?}",
            serve.stdout_lines()
        );
        assert!(
            serve
                .stdout_lines()
                .iter()
                .any(|l| l.contains("SIGTERM received")),
            "{:?}",
            serve.stdout_lines()
        );
    }
}
