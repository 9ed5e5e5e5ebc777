//! Several instances behave as one server (contract section 8): two `authd serve` processes
//! (the built binary, each in a working directory of its own, so nothing but the database is
//! shared between them) on one fresh PostgreSQL database, with no secrets configured (the key
//! set must come from the database) and with HS256 secrets. A refresh token from one rotates
//! at the other, a token signed by one verifies at the other, simultaneous presentations of one
//! refresh token give at most one success, revocations and the lockout hold on both, the
//! per-IP budget is shared through Redis (and a Redis that dies costs no request), and a
//! PostgreSQL cut off mid-run gives 503 (never 500) until it returns, then both recover
//! without a restart.
//!
//! PostgreSQL comes from `AUTHD_TEST_POSTGRES_URL` and Redis from `AUTHD_TEST_REDIS_URL` (see
//! `services.rs`): without `CI` an unreachable one is a loud skip, with `CI` a failure.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::proxy::CuttableProxy;
use authd::http::budget::KEY_PREFIX;

use crate::services::{redis_url_or_skip, with_database, PgDatabase, PrivateRedis, RedisKeys};
use crate::support::{authd_bin, send, unique_email, Resp, ServeProcess, PASSWORD};

/// How the instances get their signing keys.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Keys {
    /// No secrets: EdDSA, the key set kept in the database and found there by every instance.
    Generated,
    /// HS256 with the same strong random secrets configured on every instance.
    Secrets,
}

/// 48 random bytes, base64: a secret the configuration accepts (long, varied, unpublished).
fn strong_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One instance: its own working directory (its `data/keys` is its own) and the process.
struct Instance {
    name: &'static str,
    proc: ServeProcess,
    _dir: TempDir,
}

impl Instance {
    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }
}

/// Two instances on one fresh database, and the environment they were started with (for the
/// CLI commands a test runs against the same database). Fields drop in order: the processes
/// stop before the database is dropped.
struct Pair {
    a: Instance,
    b: Instance,
    env: Vec<(String, String)>,
    cli_dir: TempDir,
    client: Client,
    _db: PgDatabase,
}

/// Starts two instances on a fresh database (through `database_url` when given, e.g. a proxy,
/// else the database's own URL), with `keys` and `extra` settings; `None` after a loud skip
/// when PostgreSQL does not answer outside CI.
fn pair_with(
    keys: Keys,
    extra: &[(&str, &str)],
    database_url: impl FnOnce(&PgDatabase) -> String,
) -> Option<Pair> {
    let db = PgDatabase::create()?;
    let mut env: Vec<(String, String)> = vec![
        ("AUTHD_DATABASE__URL".into(), database_url(&db)),
        ("AUTHD_DATABASE__POOL_SIZE".into(), "4".into()),
        ("AUTHD_LOG__LEVEL".into(), "warn,authd=info".into()),
    ];
    if keys == Keys::Secrets {
        env.push(("AUTHD_JWT__ALGORITHM".into(), "HS256".into()));
        env.push(("AUTHD_JWT__ACCESS_SECRET".into(), strong_secret()));
        env.push(("AUTHD_JWT__REFRESH_SECRET".into(), strong_secret()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let start = |name| {
        let dir = tempfile::tempdir().unwrap();
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Instance {
            name,
            proc: ServeProcess::spawn(dir.path(), &vars),
            _dir: dir,
        }
    };
    // Both apply migrations at start (database.auto_migrate): the second waits for the first.
    let (a, b) = (start("A"), start("B"));
    Some(Pair {
        a,
        b,
        env,
        cli_dir: tempfile::tempdir().unwrap(),
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _db: db,
    })
}

fn pair(keys: Keys, extra: &[(&str, &str)]) -> Option<Pair> {
    pair_with(keys, extra, |db| db.url.clone())
}

impl Pair {
    fn both(&self) -> [&Instance; 2] {
        [&self.a, &self.b]
    }

    fn post(&self, at: &Instance, path: &str, body: Value) -> Resp {
        send(self.client.post(at.url(path)).json(&body))
    }

    fn get_auth(&self, at: &Instance, path: &str, access: &str) -> Resp {
        send(self.client.get(at.url(path)).bearer_auth(access))
    }

    fn register(&self, at: &Instance, email: &str) -> Value {
        let r = self.post(
            at,
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD}),
        );
        assert_eq!(r.status, 201, "register at {}: {}", at.name, r.text);
        r.body["data"].clone()
    }

    fn login(&self, at: &Instance, email: &str, password: &str) -> Resp {
        self.post(
            at,
            "/api/auth/login",
            json!({"email": email, "password": password}),
        )
    }

    fn refresh(&self, at: &Instance, refresh_token: &str) -> Resp {
        self.post(
            at,
            "/api/auth/refresh",
            json!({ "refreshToken": refresh_token }),
        )
    }

    /// Runs the built `authd` with the instances' settings (same database, same secrets).
    fn cli(&self, args: &[&str]) -> std::process::Output {
        run_cli(self.cli_dir.path(), &self.env, args)
    }
}

/// Runs the built `authd` in `dir` with exactly the `AUTHD_*` variables in `env`.
fn run_cli(dir: &Path, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(authd_bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("authd runs")
}

fn assert_cli_ok(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn token(data: &Value, field: &str) -> String {
    data[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {data}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Rotation across instances, and tokens signed by one verifying at the other.

#[test]
fn a_refresh_token_from_one_instance_rotates_at_the_other_no_secrets() {
    refresh_token_rotates_across_instances(Keys::Generated);
}

#[test]
fn a_refresh_token_from_one_instance_rotates_at_the_other_hs256() {
    refresh_token_rotates_across_instances(Keys::Secrets);
}

fn refresh_token_rotates_across_instances(keys: Keys) {
    let Some(p) = pair(keys, &[]) else { return };
    let (a, b) = (&p.a, &p.b);
    let data = p.register(a, &unique_email("multi-rotate"));
    let (access_a, refresh_a) = (token(&data, "accessToken"), token(&data, "refreshToken"));

    // A's access token at B, and B's rotation of A's refresh token.
    p.get_auth(b, "/api/auth/profile", &access_a)
        .assert_ok(200, "A's access token at B");
    let r = p.refresh(b, &refresh_a);
    assert_eq!(r.status, 200, "A's refresh token at B: {}", r.text);
    let (access_b, refresh_b) = (
        token(&r.body["data"], "accessToken"),
        token(&r.body["data"], "refreshToken"),
    );
    p.get_auth(a, "/api/auth/profile", &access_b)
        .assert_ok(200, "B's access token at A");

    // B's refresh token rotates at A; the one B rotated away is reuse at A.
    let r = p.refresh(a, &refresh_b);
    assert_eq!(r.status, 200, "B's refresh token at A: {}", r.text);
    p.refresh(a, &refresh_a).assert_error(401, "TOKEN_REVOKED");

    // One key set: both publish the same JWKS (empty with HS256, the shared Ed25519 keys
    // otherwise).
    let jwks: Vec<Value> = p
        .both()
        .iter()
        .map(|i| send(p.client.get(i.url("/.well-known/jwks.json"))).body)
        .collect();
    assert_eq!(jwks[0], jwks[1], "A and B publish the same JWKS");
    let n = jwks[0]["keys"].as_array().map_or(0, Vec::len);
    match keys {
        Keys::Secrets => assert_eq!(n, 0, "HS256: empty JWKS: {}", jwks[0]),
        Keys::Generated => assert!(n >= 1, "EdDSA: the shared key in the JWKS: {}", jwks[0]),
    }
}

// ---------------------------------------------------------------------------------------------
// One refresh token at both instances at once.

#[test]
fn one_refresh_token_at_both_instances_at_once_wins_at_most_once_no_secrets() {
    simultaneous_refreshes(Keys::Generated);
}

#[test]
fn one_refresh_token_at_both_instances_at_once_wins_at_most_once_hs256() {
    simultaneous_refreshes(Keys::Secrets);
}

fn simultaneous_refreshes(keys: Keys) {
    let Some(p) = pair(keys, &[]) else { return };
    let p = Arc::new(p);
    let email = unique_email("multi-race");
    p.register(&p.a, &email);
    for round in 0..20 {
        let r = p.login(&p.a, &email, PASSWORD);
        assert_eq!(r.status, 200, "login: {}", r.text);
        let refresh = token(&r.body["data"], "refreshToken");
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [false, true]
            .into_iter()
            .map(|at_b| {
                let (p, barrier, refresh) = (p.clone(), barrier.clone(), refresh.clone());
                std::thread::spawn(move || {
                    let at = if at_b { &p.b } else { &p.a };
                    let req = p
                        .client
                        .post(at.url("/api/auth/refresh"))
                        .json(&json!({ "refreshToken": refresh }));
                    barrier.wait();
                    send(req)
                })
            })
            .collect();
        let answers: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one success: {:?}",
            answers.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        let loser = answers.iter().find(|r| r.status != 200).unwrap();
        loser.assert_error(401, "TOKEN_REVOKED");
        // Reuse revoked the session: the winner's new refresh token fails too, at both.
        let newest = token(&winners[0].body["data"], "refreshToken");
        for at in p.both() {
            p.refresh(at, &newest).assert_error(401, "TOKEN_REVOKED");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Revocations from the CLI bite on both instances at once.

#[test]
fn revoke_sessions_bites_on_both_instances_at_once_no_secrets() {
    revocation_bites_on_both(Keys::Generated);
}

#[test]
fn revoke_sessions_bites_on_both_instances_at_once_hs256() {
    revocation_bites_on_both(Keys::Secrets);
}

/// A user logged in at both instances, with its access and refresh tokens from each.
fn logged_in_at_both(p: &Pair, email: &str) -> Vec<(String, String)> {
    p.register(&p.a, email);
    p.both()
        .iter()
        .map(|at| {
            let r = p.login(at, email, PASSWORD);
            assert_eq!(r.status, 200, "login at {}: {}", at.name, r.text);
            let d = &r.body["data"];
            (token(d, "accessToken"), token(d, "refreshToken"))
        })
        .collect()
}

/// Every access token is refused (401 TOKEN_REVOKED) at both instances, and so is every
/// refresh token.
fn assert_all_revoked(p: &Pair, tokens: &[(String, String)], after: &str) {
    for (access, _) in tokens {
        for at in p.both() {
            let r = p.get_auth(at, "/api/auth/profile", access);
            r.assert_error(401, "TOKEN_REVOKED");
            assert!(
                r.header("www-authenticate").is_some(),
                "{after}: WWW-Authenticate at {}",
                at.name
            );
        }
    }
    for (_, refresh) in tokens {
        // One instance only: a second presentation would be judged against what the first did.
        p.refresh(&p.b, refresh).assert_error(401, "TOKEN_REVOKED");
    }
}

fn revocation_bites_on_both(keys: Keys) {
    let Some(p) = pair(keys, &[]) else { return };
    let email = unique_email("multi-revoke");
    let tokens = logged_in_at_both(&p, &email);
    for (access, _) in &tokens {
        for at in p.both() {
            p.get_auth(at, "/api/auth/profile", access)
                .assert_ok(200, "before the revocation");
        }
    }
    let out = p.cli(&["revoke-sessions", "--email", &email, "--yes"]);
    let stdout = assert_cli_ok(&out, "revoke-sessions");
    assert!(stdout.contains('3'), "three sessions revoked: {stdout}");
    assert_all_revoked(&p, &tokens, "revoke-sessions");
}

#[test]
fn users_disable_bites_on_both_instances_at_once() {
    let Some(p) = pair(Keys::Generated, &[]) else {
        return;
    };
    let email = unique_email("multi-disable");
    let tokens = logged_in_at_both(&p, &email);
    assert_cli_ok(&p.cli(&["users", "disable", &email]), "users disable");
    assert_all_revoked(&p, &tokens, "users disable");
    for at in p.both() {
        p.login(at, &email, PASSWORD)
            .assert_error(403, "ACCOUNT_DISABLED");
    }
    assert_cli_ok(&p.cli(&["users", "enable", &email]), "users enable");
    for at in p.both() {
        p.login(at, &email, PASSWORD).assert_ok(200, "after enable");
    }
}

/// One cleanup at a time: while another process holds the purge lock, `cleanup-tokens` stops
/// at once and says so on stderr (exit 0); once the lock is free it deletes.
#[test]
fn cleanup_tokens_says_when_another_instance_is_cleaning_up() {
    let Some(p) = pair(Keys::Generated, &[]) else {
        return;
    };
    let email = unique_email("multi-cleanup");
    logged_in_at_both(&p, &email);
    assert_cli_ok(&p.cli(&["users", "disable", &email]), "users disable");
    let mut env = p.env.clone();
    env.push(("AUTHD_CLEANUP__RETENTION".into(), "0s".into()));
    let cleanup = || run_cli(p.cli_dir.path(), &env, &["cleanup-tokens"]);

    // The key of the purge lock (store/postgres/cleanup.rs), held the way an instance would.
    const PURGE_LOCK: i64 = 0x6175_7468_645f_7031;
    let mut other = postgres::Client::connect(&p._db.url, postgres::NoTls).unwrap();
    other
        .execute("SELECT pg_advisory_lock($1)", &[&PURGE_LOCK])
        .unwrap();
    let out = cleanup();
    let stdout = assert_cli_ok(&out, "cleanup-tokens while another cleans up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with("deleted 0 refresh token(s), 0 session(s)"),
        "{stdout}"
    );
    assert!(stderr.contains("stopped early"), "{stderr}");

    other
        .execute("SELECT pg_advisory_unlock($1)", &[&PURGE_LOCK])
        .unwrap();
    let out = cleanup();
    let stdout = assert_cli_ok(&out, "cleanup-tokens");
    assert!(
        !stdout.starts_with("deleted 0 refresh token(s), 0 session(s)"),
        "{stdout}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("stopped early"));
}

// ---------------------------------------------------------------------------------------------
// The lockout of an email is counted across instances.

#[test]
fn lockout_is_counted_across_instances() {
    let Some(p) = pair(
        Keys::Generated,
        &[
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "4"),
            ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
            ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "100000"),
        ],
    ) else {
        return;
    };
    let email = unique_email("multi-lockout");
    p.register(&p.a, &email);
    // Four failures, two at each instance: neither saw the threshold alone.
    for at in [&p.a, &p.b, &p.a, &p.b] {
        p.login(at, &email, "Wrong-password-1")
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    for at in p.both() {
        let r = p.login(at, &email, PASSWORD);
        r.assert_error(423, "ACCOUNT_LOCKED");
        let secs: u64 = r
            .header("retry-after")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("423 without Retry-After at {}: {:?}", at.name, r.headers));
        assert!((1..=15 * 60).contains(&secs), "Retry-After {secs}");
    }
}

// ---------------------------------------------------------------------------------------------
// The per-IP request budget shared through Redis, and a Redis that dies mid-run.

/// A client address no other test uses, so tests sharing one Redis never meet.
fn unique_ip() -> String {
    let b = *uuid::Uuid::new_v4().as_bytes();
    format!("10.{}.{}.{}", b[0], b[1], b[2].max(1))
}

/// The sum of `authd_rate_limit_backend_errors_total` over `instances`.
fn backend_errors(p: &Pair, instances: &[&Instance]) -> u64 {
    instances
        .iter()
        .map(|i| {
            let text = p
                .client
                .get(i.url("/metrics"))
                .send()
                .unwrap()
                .text()
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("authd_rate_limit_backend_errors_total "))
                .unwrap_or_else(|| panic!("no authd_rate_limit_backend_errors_total at {}", i.name))
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// One request to `/api/auth/*` as client `ip` (no token: 401 while the budget lasts).
fn spend(p: &Pair, at: &Instance, ip: &str) -> Resp {
    send(
        p.client
            .get(at.url("/api/auth/profile"))
            .header("x-forwarded-for", ip),
    )
}

#[test]
fn the_request_budget_is_shared_through_redis() {
    let Some(redis_url) = redis_url_or_skip() else {
        return;
    };
    let Some(p) = pair(
        Keys::Generated,
        &[
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "6"),
            ("AUTHD_RATE_LIMIT__REDIS_URL", &redis_url),
            ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
        ],
    ) else {
        return;
    };
    let mut keys = RedisKeys::new(&redis_url);
    // A Redis call slower than authd's timeout on a loaded machine falls back to counting in
    // the process (by design): such a run proves nothing either way, so run it again.
    for _ in 0..3 {
        let before = backend_errors(&p, &p.both());
        let ip = unique_ip();
        keys.track(format!("{KEY_PREFIX}{ip}"));
        let within: Vec<Resp> = (0..6)
            .map(|i| spend(&p, if i % 2 == 0 { &p.a } else { &p.b }, &ip))
            .collect();
        let past: Vec<Resp> = p.both().iter().map(|at| spend(&p, at, &ip)).collect();
        if backend_errors(&p, &p.both()) != before {
            eprintln!("a Redis call fell back during the scenario; running it again");
            continue;
        }
        for r in &within {
            r.assert_error(401, "TOKEN_MISSING");
        }
        // Three requests at each instance spent the budget of six: both refuse the seventh.
        for r in &past {
            r.assert_error(429, "RATE_LIMITED");
            assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        }
        // Another client still has its own budget.
        let other = unique_ip();
        keys.track(format!("{KEY_PREFIX}{other}"));
        spend(&p, &p.a, &other).assert_error(401, "TOKEN_MISSING");
        return;
    }
    panic!("Redis calls fell back in three runs of the scenario");
}

#[test]
fn redis_dying_mid_run_fails_no_request() {
    let Some(mut redis) = PrivateRedis::start_or_skip() else {
        return;
    };
    let Some(p) = pair(
        Keys::Generated,
        &[
            ("AUTHD_RATE_LIMIT__ENABLED", "true"),
            ("AUTHD_RATE_LIMIT__MAX_REQUESTS", "1000"),
            ("AUTHD_RATE_LIMIT__LOCKOUT_THRESHOLD", "3"),
            ("AUTHD_RATE_LIMIT__MAX_FAILED_LOGINS", "1000"),
            ("AUTHD_RATE_LIMIT__REDIS_URL", &redis.url()),
            ("AUTHD_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
        ],
    ) else {
        return;
    };
    let email = unique_email("multi-redis-down");
    let data = p.register(&p.a, &email);
    let mut refresh = token(&data, "refreshToken");
    let ip = unique_ip();
    for at in p.both() {
        spend(&p, at, &ip).assert_error(401, "TOKEN_MISSING");
    }
    let before = backend_errors(&p, &p.both());

    redis.stop();
    // Every request answers as it would with Redis up.
    for round in 0..5 {
        for at in p.both() {
            spend(&p, at, &ip).assert_error(401, "TOKEN_MISSING");
            let r = send(
                p.client
                    .post(at.url("/api/auth/refresh"))
                    .header("x-forwarded-for", &ip)
                    .json(&json!({ "refreshToken": refresh })),
            );
            assert_eq!(
                r.status, 200,
                "round {round} refresh at {}: {}",
                at.name, r.text
            );
            refresh = token(&r.body["data"], "refreshToken");
        }
    }
    let after = backend_errors(&p, &p.both());
    assert!(
        after > before,
        "backend errors counted: {before} -> {after}"
    );
    // The lockout lives in the database and still holds across instances.
    for at in [&p.a, &p.b, &p.a] {
        p.login(at, &email, "Wrong-password-1")
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    for at in p.both() {
        p.login(at, &email, PASSWORD)
            .assert_error(423, "ACCOUNT_LOCKED");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL cut off mid-run.

/// The socket address of the test PostgreSQL (host and port of its admin URL).
fn postgres_addr() -> SocketAddr {
    let config: postgres::Config = crate::services::postgres_admin_url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the test PostgreSQL must be reached over TCP, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").unwrap() + 3;
    let rest = &url[scheme_end..];
    let host_start = rest.rfind('@').map_or(0, |i| i + 1);
    let host_end = rest[host_start..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| host_start + i);
    format!(
        "{}{}{addr}{}",
        &url[..scheme_end],
        &rest[..host_start],
        &rest[host_end..]
    )
}

/// 503 SERVICE_UNAVAILABLE with a `Retry-After` in seconds.
fn assert_unavailable(r: &Resp, what: &str) {
    assert_ne!(r.status, 500, "{what}: never 500: {}", r.text);
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    let secs = r.header("retry-after").and_then(|s| s.parse::<u64>().ok());
    assert!(
        secs.is_some_and(|s| s >= 1),
        "{what}: Retry-After {:?}",
        r.headers
    );
}

#[test]
fn postgres_cut_off_mid_run_gives_503_and_both_recover_no_secrets() {
    postgres_cut_off_mid_run(Keys::Generated);
}

#[test]
fn postgres_cut_off_mid_run_gives_503_and_both_recover_hs256() {
    postgres_cut_off_mid_run(Keys::Secrets);
}

fn postgres_cut_off_mid_run(keys: Keys) {
    let proxy = CuttableProxy::start(postgres_addr());
    let Some(p) = pair_with(keys, &[], |db| {
        // The instances reach the database through the proxy (connect quickly, fail quickly).
        let url = through(&db.url, proxy.addr());
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}connect_timeout=2")
    }) else {
        return;
    };
    let email = unique_email("multi-pg-down");
    let data = p.register(&p.a, &email);
    let access = token(&data, "accessToken");
    let refresh = token(&data, "refreshToken");
    for at in p.both() {
        assert_eq!(send(p.client.get(at.url("/readyz"))).status, 200);
    }

    proxy.cut();
    for at in p.both() {
        let what = |w: &str| format!("{w} at {}", at.name);
        let r = send(p.client.get(at.url("/readyz")));
        assert_eq!(r.status, 503, "{}: {}", what("/readyz"), r.text);
        assert_eq!(send(p.client.get(at.url("/healthz"))).status, 200);
        assert_unavailable(&p.login(at, &email, PASSWORD), &what("login"));
        assert_unavailable(&p.refresh(at, &refresh), &what("refresh"));
        assert_unavailable(
            &p.get_auth(at, "/api/auth/profile", &access),
            &what("profile"),
        );
        assert_unavailable(
            &p.post(
                at,
                "/api/auth/register",
                json!({"email": unique_email("multi-pg-down-new"), "password": PASSWORD}),
            ),
            &what("register"),
        );
    }

    proxy.restore();
    // Recovery without a restart: each instance answers ready again by itself (the deadline
    // only bounds a hang; nothing is asserted about how fast).
    for at in p.both() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = send(p.client.get(at.url("/readyz")));
            if r.status == 200 {
                break;
            }
            assert_ne!(r.status, 500, "/readyz at {}: {}", at.name, r.text);
            assert!(
                Instant::now() < deadline,
                "{} not ready a minute after PostgreSQL returned",
                at.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Nothing was half-written while it was away: the refresh token still rotates (once).
    let r = p.refresh(&p.b, &refresh);
    assert_eq!(r.status, 200, "refresh after recovery: {}", r.text);
    let newest = token(&r.body["data"], "refreshToken");
    p.get_auth(&p.a, "/api/auth/profile", &access)
        .assert_ok(200, "profile after recovery");
    for at in p.both() {
        p.login(at, &email, PASSWORD)
            .assert_ok(200, "login after recovery");
    }
    assert_eq!(p.refresh(&p.a, &newest).status, 200);
}

/// `Resp::assert_ok`: the status, with the body in the failure message.
trait AssertOk {
    fn assert_ok(&self, status: u16, what: &str);
}

impl AssertOk for Resp {
    fn assert_ok(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        assert_eq!(self.body["success"], true, "{what}: {}", self.text);
    }
}

#[test]
fn the_proxy_url_rewrite_keeps_user_database_and_query() {
    let addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
    assert_eq!(
        through(
            "postgres://postgres@127.0.0.1:5432/db?sslmode=disable",
            addr
        ),
        "postgres://postgres@127.0.0.1:6000/db?sslmode=disable"
    );
    assert_eq!(
        through("postgresql://u:p@db.example:5432/x", addr),
        "postgresql://u:p@127.0.0.1:6000/x"
    );
    assert_eq!(
        with_database("postgres://h/a?x=1", "b"),
        "postgres://h/b?x=1"
    );
}
