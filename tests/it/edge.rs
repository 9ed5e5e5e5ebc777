//! Edges of the outside world: request data that must not grow metrics or logs, framing that
//! hyper refuses before any handler runs, and a working directory the service user cannot read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::json;

use crate::cli::{assert_one_line, count, run, Run};
use crate::support::*;

/// Writes `request` on a fresh connection and reads what comes back. Returns the bytes and
/// whether the server closed the connection (EOF) before 10 seconds passed; our write side
/// stays open, so EOF means the server chose to close.
fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer is a close too; a timeout is not.
            Err(e) => {
                break e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status codes of every HTTP/1.x response in a raw exchange.
fn statuses(raw: &str) -> Vec<u16> {
    raw.split("HTTP/1.")
        .skip(1)
        .filter_map(|rest| rest.get(2..5)?.parse().ok())
        .collect()
}

/// The `authd_http_requests_total` series of a `/metrics` text, one line each.
fn request_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("authd_http_requests_total{"))
        .collect()
}

/// Made-up methods and paths (the request log and `/metrics` are then inspected).
fn send_made_up_requests(addr: SocketAddr) {
    for i in 0..100 {
        let req =
            format!("XM{i:05} /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let (raw, _) = exchange(addr, req.as_bytes());
        assert_eq!(statuses(&raw), vec![405], "{raw}");
    }
    for i in 0..50 {
        let req =
            format!("GET /made-up/{i:05} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let (raw, _) = exchange(addr, req.as_bytes());
        assert_eq!(statuses(&raw), vec![404], "{raw}");
    }
    let long = "L".repeat(60_000);
    let req = format!("{long} /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (raw, _) = exchange(addr, req.as_bytes());
    assert_eq!(statuses(&raw), vec![405], "{}", &raw[..raw.len().min(500)]);
}

#[test]
fn made_up_methods_and_paths_never_grow_metrics_or_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::spawn(dir.path(), &[("AUTHD_LOG__FORMAT", "json")]);
    let client = Client::new();
    let before = send(client.get(serve.url("/metrics"))).text;

    send_made_up_requests(serve.addr);

    let after = send(client.get(serve.url("/metrics"))).text;
    assert!(!after.contains("XM000"), "a made-up method became a label");
    assert!(!after.contains("LLLL"), "the 60k method became a label");
    assert!(
        !after.contains("/made-up/"),
        "a made-up path became a label"
    );
    let series = request_series(&after);
    let expected = [
        ["/healthz", "other", "405"],
        ["unmatched", "GET", "404"],
        ["/metrics", "GET", "200"],
    ];
    assert_eq!(series.len(), expected.len(), "{series:#?}");
    let find = |[route, method, status]: [&str; 3]| {
        let labels = [
            format!(r#"route="{route}""#),
            format!(r#"method="{method}""#),
            format!(r#"status="{status}""#),
        ];
        series
            .iter()
            .find(|s| labels.iter().all(|l| s.contains(l.as_str())))
            .unwrap_or_else(|| panic!("{route} {method} {status} missing from {series:#?}"))
    };
    for labels in expected {
        find(labels);
    }
    let other_405 = find(expected[0]);
    assert!(
        other_405.ends_with(" 101"),
        "every made-up method counted once: {other_405}"
    );
    // Bounded: a few series more than at start, not one per request (it was 175 KB after the
    // 100 methods and over 1 MB after the long one).
    assert!(
        after.len() < before.len() + 16 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );

    // The request log line names the method by the same bounded label.
    let log = serve.output();
    assert!(!log.contains("XM000"), "a made-up method reached the log");
    assert!(!log.contains("LLLL"), "the 60k method reached the log");
    let completed: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("request completed"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        completed.len() >= 151,
        "one line per request: {}",
        completed.len()
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
}

/// Requests whose head hyper cannot parse: hyper answers them itself.
fn malformed_heads(addr: SocketAddr, email: &str) -> Vec<(&'static str, Vec<u8>)> {
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    let post = |headers: &str| {
        format!(
            "POST /api/auth/register HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{headers}\r\n{body}"
        )
        .into_bytes()
    };
    // Each is followed by a well-formed request on the same connection, which must go
    // unanswered: the connection is closed after the refusal.
    let next = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut cases = vec![
        (
            "two different Content-Length headers",
            post(&format!(
                "Content-Length: 5\r\nContent-Length: {}\r\n",
                body.len()
            )),
        ),
        (
            "Content-Length: +N",
            post(&format!("Content-Length: +{}\r\n", body.len())),
        ),
        ("Content-Length: -1", post("Content-Length: -1\r\n")),
        (
            "a request line without a target",
            b"GARBAGE\r\n\r\n".to_vec(),
        ),
        (
            "an unknown HTTP version",
            format!("POST /api/auth/register HTTP/9.9\r\nHost: {addr}\r\n\r\n").into_bytes(),
        ),
        (
            "a header name with a space",
            post(&format!(
                "Bad Header: x\r\nContent-Length: {}\r\n",
                body.len()
            )),
        ),
    ];
    for (_, req) in cases.iter_mut() {
        req.extend_from_slice(next.as_bytes());
    }
    cases
}

#[test]
fn malformed_framing_is_refused_before_any_handler_and_closes_the_connection() {
    let s = TestServer::start();
    let email = unique_email("framing");
    for (what, req) in malformed_heads(s.addr, &email) {
        let (raw, closed) = exchange(s.addr, &req);
        assert_eq!(
            statuses(&raw),
            vec![400],
            "{what}: one 400 and nothing else:\n{raw}"
        );
        assert!(closed, "{what}: the connection is closed after the 400");
    }
    // No handler ran: nothing counted, nothing audited, nobody registered.
    let metrics = send(s.get("/metrics")).text;
    let series = request_series(&metrics);
    assert_eq!(
        series,
        Vec::<&str>::new(),
        "no request was counted before this /metrics one"
    );
    assert_eq!(count(&s.db_path(), "SELECT COUNT(*) FROM audit_events"), 0);
    assert_eq!(count(&s.db_path(), "SELECT COUNT(*) FROM users"), 0);
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(r.status, 201, "the email was never registered: {}", r.text);
}

/// The effective user id of this process: the owner of a file it just created.
fn euid() -> u32 {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A world-readable temp dir holding a copy of the binary and a config file: usable by any
/// user, wherever the build's target dir lives.
struct Readable {
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
}

fn readable_dir() -> Readable {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let bin = dir.path().join("authd");
    std::fs::copy(authd_bin(), &bin).unwrap();
    chmod(&bin, 0o755);
    let config = dir.path().join("authd.toml");
    std::fs::write(&config, "[log]\nlevel = \"warn\"\n").unwrap();
    chmod(&config, 0o644);
    Readable { dir, bin, config }
}

/// `authd ARGS` from `cwd`, with no inherited `AUTHD_*`; as root, through `setpriv` as
/// nobody (root reads everything, so permissions would prove nothing). With `shut_cwd`, the
/// command cannot search its working directory: as root, `cwd` is a root-owned 0700 dir;
/// otherwise a shell enters `cwd`, then takes every permission off it and runs authd there
/// (nobody can enter a directory that is already mode 000).
fn authd_as_unprivileged(
    bin: &Path,
    cwd: &Path,
    shut_cwd: bool,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mut cmd = if euid() == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else if shut_cwd {
        let mut c = Command::new("sh");
        c.args(["-c", r#"chmod 000 . && exec "$0" "$@""#]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AUTHD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd).args(args).envs(env.iter().copied());
    run(&mut cmd, None)
}

/// A 0700 working directory holding a `.env` and config files that would break the run if
/// they were read.
fn private_dir() -> tempfile::TempDir {
    let cwd = tempfile::tempdir().unwrap();
    chmod(cwd.path(), 0o700);
    std::fs::write(cwd.path().join(".env"), "AUTHD_LOG__LEVEL=not-a-level\n").unwrap();
    std::fs::create_dir(cwd.path().join("config")).unwrap();
    for name in ["default.toml", "prod.toml", "authd.toml"] {
        std::fs::write(cwd.path().join("config").join(name), "[log]\nlevel = 7\n").unwrap();
    }
    cwd
}

#[test]
fn an_unsearchable_working_directory_only_warns_when_the_config_is_elsewhere() {
    let r = readable_dir();
    let cwd = private_dir();
    let config = r.config.to_str().unwrap();
    let out = authd_as_unprivileged(
        &r.bin,
        cwd.path(),
        true,
        &["--config", config, "check-config"],
        &[("AUTHD_ENV", "prod")],
    );
    chmod(cwd.path(), 0o700);
    let stdout = out.ok();
    assert!(
        stdout.contains("level = \"warn\""),
        "the --config file applies: {stdout}"
    );
    for skipped in [".env", "config/default.toml", "config/prod.toml"] {
        let warned: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("warning: not reading") && l.contains(skipped))
            .collect();
        assert_eq!(warned.len(), 1, "one warning for {skipped}: {}", out.stderr);
    }
}

#[test]
fn a_config_file_in_an_unsearchable_directory_says_permission_denied() {
    let r = readable_dir();
    let cwd = private_dir();
    // As root, 0700 already shuts nobody out; otherwise shut ourselves out.
    if euid() != 0 {
        chmod(cwd.path(), 0o000);
    }
    let inside = cwd.path().join("config/authd.toml");
    let out = authd_as_unprivileged(
        &r.bin,
        r.dir.path(),
        false,
        &["--config", inside.to_str().unwrap(), "check-config"],
        &[],
    );
    chmod(cwd.path(), 0o700);
    let line = out.error_line();
    assert!(line.contains("cannot read config file"), "{line}");
    assert!(line.to_lowercase().contains("permission denied"), "{line}");
}

#[test]
fn an_existing_unreadable_env_file_is_still_an_error() {
    let r = readable_dir();
    let env_file = r.dir.path().join(".env");
    std::fs::write(&env_file, "AUTHD_LOG__LEVEL=debug\n").unwrap();
    chmod(&env_file, 0o000);
    let config = r.config.to_str().unwrap();
    let out = authd_as_unprivileged(
        &r.bin,
        r.dir.path(),
        false,
        &["--config", config, "check-config"],
        &[],
    );
    let line = out.error_line();
    assert!(line.contains(".env"), "{line}");
    assert!(line.to_lowercase().contains("permission denied"), "{line}");
    assert_one_line(&out.stderr);
}

/// The target of every relative Markdown link (`](target)`) in `text`.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        .filter(|t| !t.is_empty() && !t.starts_with('#') && !t.contains("://"))
        .filter(|t| !t.starts_with("mailto:"))
        .collect()
}

#[test]
fn docs_link_only_to_files_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "yaml")
        ) {
            files.push(path);
        }
    }
    assert!(files.iter().any(|f| f.ends_with("docs/API.md")));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("../shared") && !text.contains("CONTRACT.md"),
            "{} points outside the repository",
            file.display()
        );
        for link in relative_links(&text) {
            let path = link.split('#').next().unwrap();
            let target = file.parent().unwrap().join(path);
            let resolved = target
                .canonicalize()
                .unwrap_or_else(|_| panic!("{}: link {link} leads nowhere", file.display()));
            assert!(
                resolved.starts_with(&root),
                "{}: link {link} leaves the repository",
                file.display()
            );
        }
    }
}
