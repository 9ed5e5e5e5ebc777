//! The built `authd` binary driven as an operator would: help and exit codes, create-user,
//! revoke-sessions, cleanup-tokens and migrate, each in a fresh working directory.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// How long a one-shot command may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process that is killed if the test ends (or panics) while it still runs.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A finished `authd` run.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0; returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.status.code(), Some(0), "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts a runtime error (exit 1) reported as exactly one line on stderr, with no
    /// panic or backtrace; returns that line.
    pub fn error_line(&self) -> String {
        assert_eq!(self.status.code(), Some(1), "expected exit 1: {self:#?}");
        assert_one_line(&self.stderr);
        self.stderr.trim().to_string()
    }

    /// Asserts a usage error (clap's exit 2).
    pub fn usage_error(&self) {
        assert_eq!(self.status.code(), Some(2), "expected exit 2: {self:#?}");
        assert!(
            !self.stderr.trim().is_empty(),
            "usage error says why: {self:#?}"
        );
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
    }
}

/// Asserts `stderr` is exactly one non-empty line, without a panic or backtrace.
pub fn assert_one_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got: {stderr:?}"
    );
    let lower = stderr.to_lowercase();
    for bad in ["panicked", "backtrace", "stack backtrace"] {
        assert!(!lower.contains(bad), "stderr has {bad:?}: {stderr:?}");
    }
}

/// `authd` in `dir` (its working directory): fast bcrypt, no inherited `AUTHD_*`, stdin closed.
pub fn authd(dir: &Path) -> Command {
    let mut cmd = Command::new(authd_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AUTHD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .env("AUTHD_PASSWORD__BCRYPT_COST", "10")
        .stdin(Stdio::null());
    cmd
}

/// `authd` on `<dir>/authd.db` and `<dir>/keys`, the files `TestServer::in_dir(dir)` uses.
pub fn authd_on(dir: &Path) -> Command {
    let mut cmd = authd(dir);
    cmd.env("AUTHD_DATABASE__URL", crate::support::database_url_in(dir))
        .env("AUTHD_JWT__KEY_DIR", dir.join("keys"));
    cmd
}

/// Runs `cmd` to the end with `input` piped on stdin (`None`: stdin is /dev/null).
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Run {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn authd"));
    if let Some(bytes) = input {
        let mut stdin = child.0.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let stdout = read_all(child.0.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.0.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for authd") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "authd {:?} did not exit within {RUN_TIMEOUT:?}",
            cmd.get_args().collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `authd create-user --email E --password-stdin` with `password` and a newline piped in;
/// returns the printed id.
pub fn create_user(dir: &Path, email: &str, password: &str) -> String {
    let r = run(
        authd_on(dir).args(["create-user", "--email", email, "--password-stdin"]),
        Some(format!("{password}\n").as_bytes()),
    );
    r.ok().trim().to_string()
}

/// Every whole number in `text`, in order.
pub fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a number"))
        .collect()
}

/// The single number in `text` (e.g. the revoked-session count).
fn the_number(text: &str) -> u64 {
    let n = numbers(text);
    assert_eq!(n.len(), 1, "expected one number in {text:?}");
    n[0]
}

/// `SELECT COUNT(*) ...` on the SQLite file at `db` (0 when it does not exist).
pub fn count(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(db).expect("open the database");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn refresh_token(data: &serde_json::Value) -> String {
    data["refreshToken"]
        .as_str()
        .expect("refreshToken")
        .to_string()
}

fn access_token(data: &serde_json::Value) -> String {
    data["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string()
}

// --- help, version, usage errors -------------------------------------------------------

#[test]
fn help_describes_every_command_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let top = run(authd(dir.path()).arg("--help"), None);
    let text = top.ok();
    for word in [
        "serve",
        "migrate",
        "create-user",
        "revoke-sessions",
        "cleanup-tokens",
        "--config",
        "--help",
        "--version",
    ] {
        assert!(text.contains(word), "authd --help lacks {word}: {text}");
    }
    let per_command: &[(&str, &[&str])] = &[
        ("serve", &["--config"]),
        ("migrate", &["--status", "--config"]),
        (
            "create-user",
            &[
                "--email",
                "--name",
                "--role",
                "user",
                "admin",
                "--password-stdin",
                "--config",
            ],
        ),
        (
            "revoke-sessions",
            &["--email", "--user-id", "--all", "--yes", "--config"],
        ),
        ("cleanup-tokens", &["--dry-run", "--config"]),
    ];
    for (command, flags) in per_command {
        let r = run(authd(dir.path()).args([command, "--help"]), None);
        let text = r.ok();
        for flag in *flags {
            assert!(
                text.contains(flag),
                "authd {command} --help lacks {flag}: {text}"
            );
        }
        let via_help = run(authd(dir.path()).args(["help", command]), None);
        assert_eq!(via_help.ok(), text, "`authd help {command}`");
    }
    assert!(
        !dir.path().join("data").exists(),
        "help must not create a database"
    );
}

#[test]
fn version_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(authd(dir.path()).arg("--version"), None);
    assert!(
        r.ok().contains(env!("CARGO_PKG_VERSION")),
        "version in {:?}",
        r.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["--bogus", "serve"],
        &["serve", "--bogus"],
        &["migrate", "--bogus"],
        &["create-user", "--role", "root"],
        &["create-user", "--email"],
        &["revoke-sessions"],
        &["revoke-sessions", "--yes"],
        &["revoke-sessions", "--email", "a@example.com", "--all"],
        &["cleanup-tokens", "--dry-run=maybe"],
    ];
    for args in cases {
        let r = run(authd(dir.path()).args(*args), None);
        assert_eq!(r.status.code(), Some(2), "authd {args:?}: {r:#?}");
        r.usage_error();
    }
    assert!(
        !dir.path().join("data").exists(),
        "usage errors touch nothing"
    );
}

// --- create-user ------------------------------------------------------------------------

#[test]
fn create_user_reads_the_password_from_stdin_and_prints_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-create");
    let r = run(
        authd_on(dir.path()).args(["create-user", "--email", &email, "--password-stdin"]),
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    let out = r.ok();
    assert_eq!(out.lines().count(), 1, "stdout is just the id: {out:?}");
    let id = out.trim();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?} is a UUID");

    let s = TestServer::in_dir(dir, &[]);
    let data = s.login(&email);
    assert_eq!(data["user"]["id"], id);
    assert_eq!(data["user"]["email"], email);
    assert_eq!(data["user"]["role"], "user");
    assert!(data["user"]["name"].is_null());
    // Exactly the one trailing newline was stripped: it is not part of the password.
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": format!("{PASSWORD}\n")}),
    )
    .assert_error(401, "INVALID_CREDENTIALS");
}

#[test]
fn create_user_admin_with_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-admin");
    let r = run(
        authd_on(dir.path()).args([
            "create-user",
            "--email",
            &email.to_uppercase(),
            "--name",
            "  Ops Person ",
            "--role",
            "admin",
            "--password-stdin",
        ]),
        Some(PASSWORD.as_bytes()),
    );
    let id = r.ok().trim().to_string();
    let s = TestServer::in_dir(dir, &[]);
    let data = s.login(&email);
    assert_eq!(data["user"]["id"], id.as_str());
    assert_eq!(data["user"]["role"], "admin");
    assert_eq!(data["user"]["email"], email, "stored normalised");
    assert_eq!(data["user"]["name"], "Ops Person", "trimmed like the API");
}

#[test]
fn create_user_accepts_a_72_byte_password() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-72");
    let password = format!("Aa1!{}", "x".repeat(68));
    assert_eq!(password.len(), 72);
    create_user(dir.path(), &email, &password);
    let s = TestServer::in_dir(dir, &[]);
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn create_user_with_a_taken_email_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-dup");
    let first = create_user(dir.path(), &email, PASSWORD);
    for again in [email.clone(), format!("  {}  ", email.to_uppercase())] {
        let r = run(
            authd_on(dir.path()).args(["create-user", "--email", &again, "--password-stdin"]),
            Some(format!("{PASSWORD}\n").as_bytes()),
        );
        let line = r.error_line().to_lowercase();
        assert!(
            line.contains(&email) && line.contains("exist"),
            "message names the email and says it exists: {line}"
        );
        assert!(r.stdout.trim().is_empty(), "no id printed: {:?}", r.stdout);
    }
    let db = dir.path().join("authd.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users"), 1);
    let s = TestServer::in_dir(dir, &[]);
    assert_eq!(s.login(&email)["user"]["id"], first.as_str());
}

#[test]
fn create_user_refuses_invalid_input_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ok_email = unique_email("cli-bad");
    let long_name = "n".repeat(101);
    let too_long = format!("Aa1!{}", "x".repeat(69));
    assert_eq!(too_long.len(), 73);
    // (what, email, name, stdin, a word the message must contain)
    let cases: Vec<(&str, &str, Option<&str>, String, &str)> = vec![
        (
            "bad email",
            "not-an-email",
            None,
            format!("{PASSWORD}\n"),
            "email",
        ),
        ("too short", &ok_email, None, "Ab1!x\n".into(), "password"),
        (
            "no letter",
            &ok_email,
            None,
            "12345678!\n".into(),
            "password",
        ),
        (
            "no digit",
            &ok_email,
            None,
            "Abcdefgh!\n".into(),
            "password",
        ),
        (
            "no symbol",
            &ok_email,
            None,
            "Abcdefgh1\n".into(),
            "password",
        ),
        (
            "73 bytes",
            &ok_email,
            None,
            format!("{too_long}\n"),
            "password",
        ),
        ("empty password", &ok_email, None, "\n".into(), "password"),
        ("no input", &ok_email, None, String::new(), "password"),
        (
            "name too long",
            &ok_email,
            Some(long_name.as_str()),
            format!("{PASSWORD}\n"),
            "name",
        ),
    ];
    for (what, email, name, stdin, word) in cases {
        let mut cmd = authd_on(dir.path());
        cmd.args(["create-user", "--email", email, "--password-stdin"]);
        if let Some(name) = name {
            cmd.args(["--name", name]);
        }
        let r = run(&mut cmd, Some(stdin.as_bytes()));
        assert_eq!(r.status.code(), Some(1), "{what}: {r:#?}");
        let line = r.error_line();
        assert!(
            line.to_lowercase().contains(word),
            "{what}: message mentions {word}: {line}"
        );
        assert!(r.stdout.trim().is_empty(), "{what}: no id printed");
    }
    let db = dir.path().join("authd.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users"), 0);
}

#[test]
fn create_user_needs_a_password_source_and_an_email_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-noterm");
    // No --password-stdin, stdin not a terminal: no prompt, one line, exit 1.
    let no_flag = run(
        authd_on(dir.path()).args(["create-user", "--email", &email]),
        None,
    );
    no_flag.error_line();
    let piped = run(
        authd_on(dir.path()).args(["create-user", "--email", &email]),
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    piped.error_line();
    // No --email and nothing to prompt on.
    let no_email = run(
        authd_on(dir.path()).args(["create-user", "--password-stdin"]),
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    assert!(no_email.error_line().contains("email"), "{no_email:#?}");
    let neither = run(authd_on(dir.path()).arg("create-user"), None);
    neither.error_line();
    let db = dir.path().join("authd.db");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users"), 0);
}

// --- revoke-sessions --------------------------------------------------------------------

#[test]
fn revoke_sessions_by_email_prints_the_count_and_revokes_them() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-revoke");
    create_user(dir.path(), &email, PASSWORD);
    let s = TestServer::in_dir(dir, &[]);
    let one = s.login(&email);
    let two = s.login(&email);

    let r = run(
        authd_on(s.dir.path()).args(["revoke-sessions", "--email", &email.to_uppercase(), "--yes"]),
        None,
    );
    assert_eq!(the_number(r.ok()), 2, "{r:#?}");
    for data in [&one, &two] {
        s.refresh(&refresh_token(data))
            .assert_error(401, "TOKEN_REVOKED");
        s.get_auth("/api/auth/profile", &access_token(data))
            .assert_error(401, "TOKEN_REVOKED");
    }
    // A new login still works, and a second run only counts live sessions.
    let three = s.login(&email);
    let again = run(
        authd_on(s.dir.path()).args(["revoke-sessions", "--email", &email, "-y"]),
        None,
    );
    assert_eq!(the_number(again.ok()), 1);
    s.refresh(&refresh_token(&three))
        .assert_error(401, "TOKEN_REVOKED");
    let none = run(
        authd_on(s.dir.path()).args(["revoke-sessions", "--email", &email, "--yes"]),
        None,
    );
    assert_eq!(the_number(none.ok()), 0);
}

#[test]
fn revoke_sessions_by_user_id_touches_only_that_user() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (unique_email("cli-ida"), unique_email("cli-idb"));
    let a_id = create_user(dir.path(), &a, PASSWORD);
    create_user(dir.path(), &b, PASSWORD);
    let s = TestServer::in_dir(dir, &[]);
    let a1 = s.login(&a);
    let b1 = s.login(&b);
    let r = run(
        authd_on(s.dir.path()).args(["revoke-sessions", "--user-id", &a_id, "--yes"]),
        None,
    );
    assert_eq!(the_number(r.ok()), 1);
    s.refresh(&refresh_token(&a1))
        .assert_error(401, "TOKEN_REVOKED");
    let kept = s.refresh(&refresh_token(&b1));
    assert_eq!(
        kept.status, 200,
        "the other user's session lives: {}",
        kept.text
    );
    let profile = s.get_auth("/api/auth/profile", &access_token(&b1));
    assert_eq!(profile.status, 200, "{}", profile.text);
}

#[test]
fn revoke_sessions_all_revokes_every_users_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (unique_email("cli-alla"), unique_email("cli-allb"));
    create_user(dir.path(), &a, PASSWORD);
    create_user(dir.path(), &b, PASSWORD);
    let s = TestServer::in_dir(dir, &[]);
    let sessions = [s.login(&a), s.login(&a), s.login(&b)];
    let r = run(
        authd_on(s.dir.path()).args(["revoke-sessions", "--all", "--yes"]),
        None,
    );
    assert_eq!(the_number(r.ok()), 3);
    for data in &sessions {
        s.refresh(&refresh_token(data))
            .assert_error(401, "TOKEN_REVOKED");
    }
}

#[test]
fn revoke_sessions_without_yes_off_a_terminal_revokes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-noyes");
    create_user(dir.path(), &email, PASSWORD);
    let s = TestServer::in_dir(dir, &[]);
    let data = s.login(&email);
    let by_email: &[&str] = &["revoke-sessions", "--email", &email];
    let all: &[&str] = &["revoke-sessions", "--all"];
    for (args, input) in [
        (by_email, None),
        (all, None),
        // A "y" on a pipe is not a confirmation.
        (all, Some(&b"y\n"[..])),
    ] {
        let r = run(authd_on(s.dir.path()).args(args), input);
        r.error_line();
        assert!(r.stdout.trim().is_empty(), "{r:#?}");
    }
    let db = s.db_path();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NOT NULL"
        ),
        0
    );
    let r = s.refresh(&refresh_token(&data));
    assert_eq!(r.status, 200, "nothing was revoked: {}", r.text);
}

#[test]
fn revoke_sessions_for_an_unknown_or_malformed_target_fails() {
    let dir = tempfile::tempdir().unwrap();
    let email = unique_email("cli-unknown");
    create_user(dir.path(), &email, PASSWORD);
    let s = TestServer::in_dir(dir, &[]);
    let data = s.login(&email);
    let nobody = unique_email("nobody");
    let random_id = uuid::Uuid::new_v4().to_string();
    let cases: [&[&str]; 4] = [
        &["--email", &nobody],
        &["--email", "not an email"],
        &["--user-id", "not-a-uuid"],
        &["--user-id", &random_id],
    ];
    for target in cases {
        let r = run(
            authd_on(s.dir.path())
                .arg("revoke-sessions")
                .args(target)
                .arg("--yes"),
            None,
        );
        assert_eq!(r.status.code(), Some(1), "{target:?}: {r:#?}");
        r.error_line();
    }
    let r = s.refresh(&refresh_token(&data));
    assert_eq!(r.status, 200, "nothing was revoked: {}", r.text);
}

// --- cleanup-tokens ---------------------------------------------------------------------

#[test]
fn cleanup_tokens_dry_run_counts_then_cleanup_deletes_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (unique_email("cli-clean-a"), unique_email("cli-clean-b"));
    // Two sessions of A that expire after a second. SQLite-only: counts rows in the file.
    let short = TestServer::sqlite_only_in(dir, &[("AUTHD_JWT__REFRESH_TTL", "1s")]);
    short.register(&a);
    short.login(&a);
    let dir = short.stop();
    // One live session of B, and one revoked by logout.
    let s = TestServer::in_dir(dir, &[]);
    let live = s.register(&b);
    let gone = s.login(&b);
    let out = s.post_json(
        "/api/auth/logout",
        json!({"refreshToken": refresh_token(&gone)}),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    thread::sleep(Duration::from_millis(1500));

    let db = s.db_path();
    let rows = || {
        (
            count(&db, "SELECT COUNT(*) FROM sessions"),
            count(&db, "SELECT COUNT(*) FROM refresh_tokens"),
        )
    };
    assert_eq!(rows(), (4, 4));
    let cleanup = |args: &[&str], retention: Option<&str>| {
        let mut cmd = authd_on(s.dir.path());
        cmd.arg("cleanup-tokens").args(args);
        if let Some(r) = retention {
            cmd.env("AUTHD_CLEANUP__RETENTION", r);
        }
        let r = run(&mut cmd, None);
        numbers(r.ok())
    };

    // The default retention (7d) keeps everything.
    let kept = cleanup(&[], None);
    assert!(kept.iter().all(|&n| n == 0), "{kept:?}");
    assert_eq!(rows(), (4, 4));

    let dry = cleanup(&["--dry-run"], Some("0s"));
    assert_eq!(
        dry.iter().filter(|&&n| n == 3).count(),
        2,
        "3 dead sessions and 3 dead refresh tokens counted: {dry:?}"
    );
    assert_eq!(rows(), (4, 4), "a dry run deletes nothing");
    assert_eq!(
        cleanup(&["--dry-run"], Some("0s")),
        dry,
        "same counts again"
    );

    let deleted = cleanup(&[], Some("0s"));
    assert_eq!(deleted, dry, "deletes what the dry run counted");
    assert_eq!(rows(), (1, 1), "only the live session and its token remain");
    let after = cleanup(&["--dry-run"], Some("0s"));
    assert!(after.iter().all(|&n| n == 0), "{after:?}");

    let r = s.refresh(&refresh_token(&live));
    assert_eq!(r.status, 200, "the live session survives: {}", r.text);
}

/// This test used to assert that a rotated-away token past the retention was deleted while
/// its session lived, which silently ended reuse detection for that token (issue 10); see
/// `cleanup::` for the reuse checks.
#[test]
fn cleanup_tokens_keeps_refresh_tokens_rotated_away_in_a_live_session() {
    // SQLite-only: counts rows in the SQLite file.
    let s = TestServer::sqlite_only(&[]);
    let email = unique_email("cli-rotated");
    let data = s.register(&email);
    let rotated = s.refresh(&refresh_token(&data));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let newest = refresh_token(&rotated.body["data"]);
    thread::sleep(Duration::from_millis(50));
    let r = run(
        authd_on(s.dir.path())
            .arg("cleanup-tokens")
            .env("AUTHD_CLEANUP__RETENTION", "0s"),
        None,
    );
    r.ok();
    // The session is live: both its tokens stay, whatever the retention.
    assert_eq!(
        count(&s.db_path(), "SELECT COUNT(*) FROM refresh_tokens"),
        2,
        "cleanup output: {}",
        r.stdout
    );
    let next = s.refresh(&newest);
    assert_eq!(
        next.status, 200,
        "the session's newest token works: {}",
        next.text
    );
}

#[test]
fn cleanup_tokens_runs_while_the_server_serves_the_same_database() {
    let s = TestServer::start();
    let email = unique_email("cli-busy");
    s.register(&email);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop, email) = (s.url(""), stop.clone(), email.clone());
        thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let login = send(
                    client
                        .post(format!("{url}/api/auth/login"))
                        .json(&json!({"email": email, "password": PASSWORD})),
                );
                statuses.push(login.status);
                if login.status == 200 {
                    let r = send(
                        client
                            .post(format!("{url}/api/auth/refresh"))
                            .json(&json!({"refreshToken": refresh_token(&login.body["data"])})),
                    );
                    statuses.push(r.status);
                }
            }
            statuses
        })
    };
    for _ in 0..3 {
        let r = run(
            authd_on(s.dir.path())
                .arg("cleanup-tokens")
                .env("AUTHD_CLEANUP__RETENTION", "0s"),
            None,
        );
        r.ok();
        let dry = run(
            authd_on(s.dir.path()).args(["cleanup-tokens", "--dry-run"]),
            None,
        );
        dry.ok();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = load.join().unwrap();
    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|&st| st == 200),
        "every request during cleanup succeeded: {statuses:?}"
    );
}

// --- migrate ----------------------------------------------------------------------------

const MIGRATIONS_TABLE: &str = "authd_schema_migrations";

fn migration_columns(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({MIGRATIONS_TABLE})"))
        .unwrap();
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    names
}

#[test]
fn migrate_applies_pending_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(authd(dir.path()).arg("migrate"), None);
    let out = first.ok().to_string();
    assert!(
        out.contains("initial_schema"),
        "names what it applied: {out}"
    );
    let db = dir.path().join("data/authd.db");
    assert!(db.is_file(), "the default database is data/authd.db");
    let applied_rows = format!("SELECT COUNT(*) FROM {MIGRATIONS_TABLE}");
    let rows = count(&db, &applied_rows);
    assert!(rows >= 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users"), 0, "schema exists");

    let second = run(authd(dir.path()).arg("migrate"), None);
    let out2 = second.ok();
    assert!(
        !out2.contains("initial_schema"),
        "nothing applied the second time: {out2}"
    );
    assert_eq!(count(&db, &applied_rows), rows);
}

#[test]
fn migrate_status_lists_pending_then_applied() {
    let dir = tempfile::tempdir().unwrap();
    let status = || {
        let r = run(
            authd(dir.path())
                .args(["migrate", "--status"])
                .env("AUTHD_DATABASE__AUTO_MIGRATE", "false"),
            None,
        );
        r.ok().to_string()
    };
    let before = status();
    let line = before
        .lines()
        .find(|l| l.contains("initial_schema"))
        .unwrap_or_else(|| panic!("lists the migration: {before}"));
    assert!(line.to_lowercase().contains("pending"), "{before}");
    assert!(!before.to_lowercase().contains("applied"), "{before}");

    run(authd(dir.path()).arg("migrate"), None).ok();
    let after = status();
    let line = after
        .lines()
        .find(|l| l.contains("initial_schema"))
        .unwrap_or_else(|| panic!("lists the migration: {after}"));
    assert!(line.to_lowercase().contains("applied"), "{after}");
    assert!(!after.to_lowercase().contains("pending"), "{after}");
}

#[test]
fn an_edited_applied_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(authd(dir.path()).arg("migrate"), None).ok();
    let db = dir.path().join("data/authd.db");
    let columns = migration_columns(&db);
    assert!(columns.iter().any(|c| c == "checksum"), "{columns:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            &format!("UPDATE {MIGRATIONS_TABLE} SET checksum = '12345' WHERE version = 1"),
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let migrate = run(authd(dir.path()).arg("migrate"), None);
    let line = migrate.error_line().to_lowercase();
    assert!(
        line.contains("checksum") || line.contains("edited") || line.contains("modified"),
        "says the migration changed: {line}"
    );
    for auto in ["true", "false"] {
        let serve = run(
            authd(dir.path())
                .arg("serve")
                .env("AUTHD_SERVER__BIND", "127.0.0.1:0")
                .env("AUTHD_DATABASE__AUTO_MIGRATE", auto),
            None,
        );
        let line = serve.error_line().to_lowercase();
        assert!(
            line.contains("checksum") || line.contains("edited") || line.contains("modified"),
            "serve (auto_migrate={auto}) says the migration changed: {line}"
        );
    }
    let user = run(
        authd(dir.path()).args([
            "create-user",
            "--email",
            "x@example.com",
            "--password-stdin",
        ]),
        Some(PASSWORD.as_bytes()),
    );
    user.error_line();
}

#[test]
fn a_database_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(authd(dir.path()).arg("migrate"), None).ok();
    let db = dir.path().join("data/authd.db");
    let columns = migration_columns(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let list = columns.join(", ");
    let values: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "version" => "999".to_string(),
            "name" => "'from_the_future'".to_string(),
            other => other.to_string(),
        })
        .collect();
    conn.execute(
        &format!(
            "INSERT INTO {MIGRATIONS_TABLE} ({list}) SELECT {} FROM {MIGRATIONS_TABLE} WHERE version = 1",
            values.join(", ")
        ),
        [],
    )
    .unwrap();
    drop(conn);

    let migrate = run(authd(dir.path()).arg("migrate"), None);
    let line = migrate.error_line();
    assert!(line.to_lowercase().contains("newer"), "{line}");
    // --status still lists everything, marks the stranger, and exits 1.
    let status = run(authd(dir.path()).args(["migrate", "--status"]), None);
    let line = status.error_line();
    assert!(
        line.contains("from_the_future") && line.contains("newer"),
        "{line}"
    );
    let listed = &status.stdout;
    assert!(listed.contains("initial_schema"), "{listed}");
    assert!(
        listed.contains("from_the_future") && listed.contains("newer"),
        "{listed}"
    );
    let serve = run(
        authd(dir.path())
            .arg("serve")
            .env("AUTHD_SERVER__BIND", "127.0.0.1:0"),
        None,
    );
    let line = serve.error_line();
    assert!(line.to_lowercase().contains("newer"), "{line}");
}

#[test]
fn serve_on_a_busy_port_exits_1_before_creating_anything() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        authd(dir.path())
            .env("AUTHD_SERVER__BIND", &addr)
            .arg("serve"),
        None,
    );
    let line = out.error_line();
    assert!(
        line.contains("cannot listen on") && line.contains(&addr),
        "{line}"
    );
    assert!(
        !dir.path().join("data/authd.db").exists() && !dir.path().join("data").exists(),
        "a busy port leaves no database behind"
    );
    drop(busy);
}
