//! Test support: `TestServer` runs the real server in-process on 127.0.0.1:0 with a SQLite
//! file in a temp dir (or, with `AUTHD_TEST_DATABASE=postgres`, a fresh PostgreSQL database
//! dropped with the server); `Resp` and the request helpers drive it over real HTTP.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use authd::config::{self, Settings, Sources};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::services::{self, PgDatabase};

/// A strong password that satisfies the default policy.
pub const PASSWORD: &str = "Correct-horse-9";

/// Settings every test server starts from (fast bcrypt, limits off), then `extra`.
pub fn test_settings(dir: &Path, extra: &[(&str, &str)]) -> Settings {
    settings_on(dir, None, extra)
}

/// `test_settings` with `database_url` (when given) in place of the SQLite file in `dir`;
/// `extra` still wins.
fn settings_on(dir: &Path, database_url: Option<&str>, extra: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![
        (
            "AUTHD_DATABASE__URL".into(),
            format!("sqlite://{}", dir.join("authd.db").display()),
        ),
        (
            "AUTHD_JWT__KEY_DIR".into(),
            dir.join("keys").display().to_string(),
        ),
        ("AUTHD_PASSWORD__BCRYPT_COST".into(), "10".into()),
        ("AUTHD_RATE_LIMIT__ENABLED".into(), "false".into()),
        ("AUTHD_SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("AUTHD_SERVER__SHUTDOWN_GRACE".into(), "5s".into()),
    ];
    if let Some(url) = database_url {
        vars.push(("AUTHD_DATABASE__URL".into(), url.into()));
    }
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    config::load(&Sources {
        base_dir: dir.to_path_buf(),
        env_vars: vars,
        ..Default::default()
    })
    .expect("test settings are valid")
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub settings: Arc<Settings>,
    pub client: Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// With `AUTHD_TEST_DATABASE=postgres`: this server's database (dropped after the server
    /// stops; parked over `stop()` for the `in_dir` that restarts on the same data).
    postgres: Option<PgDatabase>,
}

/// The PostgreSQL URL of each directory whose server runs (or ran) on PostgreSQL, for the CLI
/// commands a test runs "on the server's database" (`database_url_in`).
static POSTGRES_URLS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// The `database.url` of the server whose directory is `dir`: its PostgreSQL database under
/// `AUTHD_TEST_DATABASE=postgres`, else the SQLite file in `dir`.
pub fn database_url_in(dir: &Path) -> String {
    let urls = POSTGRES_URLS.lock().unwrap_or_else(|e| e.into_inner());
    match urls.iter().find(|(d, _)| d == dir) {
        Some((_, url)) => url.clone(),
        None => format!("sqlite://{}", dir.join("authd.db").display()),
    }
}

/// `?1` placeholders as PostgreSQL's `$1`.
fn dollar_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '?' && chars.peek().is_some_and(|c| c.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(ch);
        }
    }
    out
}

/// PostgreSQL databases of stopped servers, by their directory, until a server restarts there.
static PARKED: std::sync::Mutex<Vec<(PathBuf, PgDatabase)>> = std::sync::Mutex::new(Vec::new());

/// The PostgreSQL database for a server in `dir` when `AUTHD_TEST_DATABASE=postgres`: the one
/// a stopped server there left, or a fresh one; none when `dir` already holds a SQLite
/// database (a SQLite-only server restarting, or data the CLI prepared there).
fn postgres_for(dir: &Path) -> Option<PgDatabase> {
    if !services::servers_on_postgres() {
        return None;
    }
    let mut parked = PARKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = parked.iter().position(|(d, _)| d == dir) {
        return Some(parked.swap_remove(i).1);
    }
    drop(parked);
    if dir.join("authd.db").exists() {
        return None;
    }
    Some(PgDatabase::create().expect(
        "AUTHD_TEST_DATABASE=postgres, but PostgreSQL does not answer (AUTHD_TEST_POSTGRES_URL)",
    ))
}

impl TestServer {
    pub fn start() -> Self {
        Self::with(&[])
    }

    /// Starts a server with extra `AUTHD_*` settings on top of `test_settings`.
    pub fn with(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::in_dir(dir, extra)
    }

    /// Starts a server whose database and keys live in `dir` (to restart on the same data).
    pub fn in_dir(dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Self {
        Self::listening_on("127.0.0.1:0", dir, extra)
    }

    /// Starts a server listening on `bind` (e.g. `[::]:0` for a dual-stack socket); `addr`
    /// is the bound address as the listener reports it.
    pub fn listening_on(bind: &str, dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Self {
        let postgres = postgres_for(dir.path());
        Self::launch(bind, dir, postgres, extra)
    }

    /// A second server on `other`'s database (its SQLite file or its PostgreSQL database), in
    /// a directory of its own: two instances sharing one database. Drop it before `other`
    /// (declare it after), whose drop removes a PostgreSQL database.
    pub fn beside(other: &TestServer, extra: &[(&str, &str)]) -> Self {
        let url = other.database_url();
        let mut vars = vec![("AUTHD_DATABASE__URL", url.as_str())];
        vars.extend_from_slice(extra);
        Self::launch("127.0.0.1:0", tempfile::tempdir().unwrap(), None, &vars)
    }

    /// A server on a SQLite file whatever `AUTHD_TEST_DATABASE` says: for the tests that read
    /// the SQLite file itself (SQLite-only by nature).
    pub fn sqlite_only(extra: &[(&str, &str)]) -> Self {
        Self::sqlite_only_in(tempfile::tempdir().unwrap(), extra)
    }

    /// `sqlite_only` in `dir` (`in_dir` restarts there on SQLite too: the file exists).
    pub fn sqlite_only_in(dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Self {
        Self::launch("127.0.0.1:0", dir, None, extra)
    }

    /// A server on a database prepared beforehand (an older schema with its rows, for upgrade
    /// tests): `postgres`, or when `None` the SQLite file already in `dir`.
    pub fn on_prepared(
        dir: tempfile::TempDir,
        postgres: Option<PgDatabase>,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::launch("127.0.0.1:0", dir, postgres, extra)
    }

    fn launch(
        bind: &str,
        dir: tempfile::TempDir,
        postgres: Option<PgDatabase>,
        extra: &[(&str, &str)],
    ) -> Self {
        let url = postgres.as_ref().map(|db| db.url.as_str());
        if let Some(url) = url {
            let mut urls = POSTGRES_URLS.lock().unwrap_or_else(|e| e.into_inner());
            urls.retain(|(d, _)| d != dir.path());
            urls.push((dir.path().to_path_buf(), url.to_string()));
        }
        let settings = Arc::new(settings_on(dir.path(), url, extra));
        let listener = std::net::TcpListener::bind(bind).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let s = settings.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let started = async {
                    let core = authd::app::open_core(s, authd::app::Schema::Ready).await?;
                    authd::app::http_state(core).await
                };
                let state = match started.await {
                    Ok(state) => state,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = ready_tx.send(Ok(()));
                authd::app::serve(state, listener, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        ready_rx.recv().unwrap().expect("server starts");
        TestServer {
            addr,
            dir,
            settings,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            shutdown: Some(tx),
            thread: Some(thread),
            postgres,
        }
    }

    /// True when this server runs on PostgreSQL (`AUTHD_TEST_DATABASE=postgres`).
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs `sql` on the server's database, SQLite or PostgreSQL, with text parameters written
    /// `?1`, `?2`, ...; returns the first column of every row as text (numbers formatted).
    pub fn query_column(&self, sql: &str, params: &[&str]) -> Vec<String> {
        match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open(self.db_path()).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        Ok(match r.get::<_, rusqlite::types::Value>(0)? {
                            rusqlite::types::Value::Text(t) => t,
                            rusqlite::types::Value::Integer(n) => n.to_string(),
                            rusqlite::types::Value::Null => "NULL".into(),
                            other => format!("{other:?}"),
                        })
                    })
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                rows
            }
            Some(db) => {
                let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                c.query(&dollar_params(sql), &p)
                    .unwrap()
                    .iter()
                    .map(|r| {
                        r.try_get::<_, Option<String>>(0)
                            .map(|v| v.unwrap_or_else(|| "NULL".into()))
                            .or_else(|_| r.try_get::<_, i64>(0).map(|n| n.to_string()))
                            .unwrap()
                    })
                    .collect()
            }
        }
    }

    /// Runs a statement on the server's database (see `query_column`); returns the rows changed.
    pub fn execute_sql(&self, sql: &str, params: &[&str]) -> u64 {
        match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open(self.db_path()).unwrap();
                conn.execute(sql, rusqlite::params_from_iter(params.iter()))
                    .unwrap() as u64
            }
            Some(db) => {
                let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
                let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                c.execute(&dollar_params(sql), &p).unwrap()
            }
        }
    }

    /// The server's `/metrics` text.
    pub fn metrics(&self) -> String {
        send(self.client.get(self.url("/metrics"))).text
    }

    /// The value of one series in `/metrics`, named as exposed (`name{label="value"}`, or
    /// `name` alone when unlabelled); panics if there is none.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    /// The server's `database.url`.
    pub fn database_url(&self) -> String {
        self.settings.database.url.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("authd.db")
    }

    /// Stops the server (finishing in-flight requests) and hands back its directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown_now();
        if let Some(db) = self.postgres.take() {
            let mut parked = PARKED.lock().unwrap_or_else(|e| e.into_inner());
            parked.push((self.dir.path().to_path_buf(), db));
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }

    pub fn post_json(&self, path: &str, body: Value) -> Resp {
        send(self.post(path).json(&body))
    }

    pub fn get_auth(&self, path: &str, access: &str) -> Resp {
        send(self.get(path).bearer_auth(access))
    }

    /// Registers `email` with `PASSWORD`; returns the `data` object.
    pub fn register(&self, email: &str) -> Value {
        let r = self.post_json(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 201, "register {email}: {}", r.body);
        r.body["data"].clone()
    }

    /// Logs `email` in with `PASSWORD`; returns the `data` object.
    pub fn login(&self, email: &str) -> Value {
        let r = self.post_json(
            "/api/auth/login",
            json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 200, "login {email}: {}", r.body);
        r.body["data"].clone()
    }

    pub fn refresh(&self, refresh_token: &str) -> Resp {
        self.post_json(
            "/api/auth/refresh",
            json!({ "refreshToken": refresh_token }),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown_now();
        if self.postgres.is_some() {
            let mut urls = POSTGRES_URLS.lock().unwrap_or_else(|e| e.into_inner());
            urls.retain(|(d, _)| d != self.dir.path());
        }
    }
}

/// A response read whole: status, headers, and the body as JSON (or `Value::Null`).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// The names of the response's headers.
    pub fn header_names(&self) -> BTreeSet<String> {
        self.headers
            .keys()
            .map(|k| k.as_str().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the contract's error envelope with `status` and `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.body["success"], false, "body: {}", self.text);
        assert_eq!(self.body["error"], code, "body: {}", self.text);
        assert!(self.body["message"].is_string(), "body: {}", self.text);
        assert!(
            self.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "content-type of {}",
            self.text
        );
    }

    /// The `Set-Cookie` header for `name`, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::from)
    }
}

pub fn send(req: RequestBuilder) -> Resp {
    let resp = req.send().expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

/// The value of a `Set-Cookie` header (`name=value; ...` -> `value`).
pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The path of the built `authd` binary.
pub fn authd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_authd"))
}

/// `authd serve` run from the built binary as a child process, with `dir` as its working
/// directory (so its database and keys live in `dir/data`); killed on drop.
pub struct ServeProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
    output: Arc<std::sync::Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl ServeProcess {
    /// Starts `authd serve` on 127.0.0.1:0 (limits off, bcrypt cost 10, cookies without
    /// `Secure`), then `env`; waits for the "listening" line and parses the address from it.
    pub fn spawn(dir: &Path, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(authd_bin());
        cmd.arg("serve").current_dir(dir).stdin(Stdio::null());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
            cmd.env_remove(k);
        }
        cmd.env("AUTHD_SERVER__BIND", "127.0.0.1:0")
            .env("AUTHD_RATE_LIMIT__ENABLED", "false")
            .env("AUTHD_PASSWORD__BCRYPT_COST", "10")
            .env("AUTHD_COOKIE__SECURE", "false")
            .envs(env.iter().copied());
        let mut child = cmd.spawn().expect("authd serve spawns");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let mut readers = Vec::new();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let (output, tx) = (output.clone(), tx.clone());
            readers.push(std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                let mut buf = Vec::new();
                while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if line.contains("listening") {
                        if let Some(addr) = listening_addr(&line) {
                            let _ = tx.send(addr);
                        }
                    }
                    output.lock().unwrap().push_str(&line);
                    buf.clear();
                }
            }));
        }
        let addr = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("authd serve did not start: {}", output.lock().unwrap());
            }
        };
        ServeProcess {
            addr,
            child,
            output,
            readers,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server process's id (e.g. for `prlimit --pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
    }

    /// SIGTERM, then waits (up to 30s) for a clean exit; returns the exit status and the
    /// whole captured output.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("authd serve did not stop on SIGTERM: {}", self.output());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        self.join_readers();
        (status, self.output())
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a "listening on http://ADDR" log line (pretty or JSON).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("http://")? + "http://".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// The `field` of every `details` entry of a validation error, in order.
pub fn detail_fields(r: &Resp) -> Vec<String> {
    r.body["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|e| e["field"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The keys of a JSON object (panics on anything else).
pub fn keys_of(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}
