//! Operator configuration (contract section 13): closing self-registration, deviceInfo in
//! session lists, secrets from files (`AUTHD_<SECTION>__<KEY>_FILE`), a strict `log.level`,
//! a warning for an `AUTHD_ENV` without its file, and `/metrics` on its own listener.

use std::net::TcpListener;

use serde_json::json;

use crate::admin_cli::admin_token;
use crate::cli::{authd, run};
use crate::support::*;

#[test]
fn closed_registration_refuses_register_and_creates_nothing() {
    let s = TestServer::with(&[("AUTHD_REGISTRATION__ENABLED", "false")]);
    let email = unique_email("closed");
    let r = s.post_json(
        "/api/auth/register",
        json!({"email": email, "password": PASSWORD}),
    );
    r.assert_error(403, "FORBIDDEN");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("registration is closed"),
        "the message says why: {}",
        r.text
    );
    assert!(r.cookie("refresh_token").is_none() && r.header("set-cookie").is_none());
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    );
    assert_eq!(r.status, 401, "no account was created: {}", r.text);
    // `create-user` still creates accounts (admin_token creates one with it and logs in).
    let (id, admin) = admin_token(&s);
    assert!(!id.is_empty() && !admin.is_empty());
}

#[test]
fn sessions_carry_the_device_info_the_login_sent() {
    let s = TestServer::start();
    let email = unique_email("device");
    let registered = s.register(&email);
    let device = json!({"name": "Pixel 9", "os": "Android 16"});
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD, "deviceInfo": device}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD, "deviceInfo": "laptop"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let access = r.body["data"]["accessToken"].as_str().unwrap().to_string();

    let r = s.get_auth("/api/auth/sessions", &access);
    assert_eq!(r.status, 200, "{}", r.text);
    let seen: Vec<serde_json::Value> = r.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sess| {
            assert!(sess.get("deviceInfo").is_some(), "deviceInfo in {sess}");
            sess["deviceInfo"].clone()
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for want in [device.clone(), json!("laptop"), json!(null)] {
        assert!(seen.contains(&want), "{want} in {seen:?}");
    }

    let (_, admin) = admin_token(&s);
    let id = registered["user"]["id"].as_str().unwrap();
    let r = send(
        s.get(&format!("/api/admin/users/{id}/sessions"))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let seen: Vec<serde_json::Value> = r.body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sess| sess["deviceInfo"].clone())
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for want in [device, json!("laptop"), json!(null)] {
        assert!(seen.contains(&want), "{want} in {seen:?}");
    }
}

fn strong_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[test]
fn secrets_can_be_given_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let (access, refresh) = (strong_secret(), strong_secret());
    std::fs::write(dir.path().join("access"), format!("{access}\n")).unwrap();
    std::fs::write(dir.path().join("refresh"), &refresh).unwrap();
    let mfa_key = strong_secret();
    std::fs::write(dir.path().join("mfa_key"), format!("{mfa_key}\n")).unwrap();
    let mfa_file = dir.path().join("mfa_key").display().to_string();
    let url = format!("sqlite://{}", dir.path().join("file.db").display());
    std::fs::write(dir.path().join("db_url"), format!("{url}\n")).unwrap();
    let access_file = dir.path().join("access").display().to_string();
    let refresh_file = dir.path().join("refresh").display().to_string();
    let url_file = dir.path().join("db_url").display().to_string();

    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_JWT__ACCESS_SECRET_FILE", &access_file)
        .env("AUTHD_JWT__REFRESH_SECRET_FILE", &refresh_file)
        .env("AUTHD_DATABASE__URL_FILE", &url_file)
        .env("AUTHD_MFA__SECRET_KEY_FILE", &mfa_file)
        .arg("check-config");
    let out = run(&mut cmd, None);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert!(
        !out.stdout.contains(&mfa_key) && out.stdout.contains("secret_key = \"***\""),
        "mfa.secret_key from a file, redacted: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("url = \"{url}\"")),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&access) && !out.stderr.contains(&access),
        "the secret is not shown"
    );
    assert!(
        !out.stderr.contains("_FILE"),
        "no unknown-variable warning for _FILE variables: {}",
        out.stderr
    );

    // Served with the secrets from the files: tokens are HS256 signed with them.
    let server = ServeProcess::spawn(
        dir.path(),
        &[
            ("AUTHD_JWT__ACCESS_SECRET_FILE", &access_file),
            ("AUTHD_JWT__REFRESH_SECRET_FILE", &refresh_file),
            ("AUTHD_DATABASE__URL_FILE", &url_file),
            ("AUTHD_JWT__ALGORITHM", "HS256"),
        ],
    );
    let r = send(
        reqwest::blocking::Client::new()
            .post(server.url("/api/auth/register"))
            .json(&json!({"email": unique_email("file"), "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.body["data"]["accessToken"].as_str().unwrap();
    let key = jsonwebtoken::DecodingKey::from_secret(access.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    if let Err(e) = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
        panic!("signed with the secret from the file, newline stripped: {e}");
    }
    assert!(
        dir.path().join("file.db").exists(),
        "database.url from its file"
    );
}

#[test]
fn a_secret_file_that_is_unreadable_or_doubled_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").display().to_string();
    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_JWT__KEY_ENCRYPTION_SECRET_FILE", &missing)
        .arg("check-config");
    let out = run(&mut cmd, None);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.error_line().contains(&missing), "{}", out.error_line());

    let file = dir.path().join("redis");
    std::fs::write(&file, "redis://127.0.0.1:6379\n").unwrap();
    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_RATE_LIMIT__REDIS_URL", "redis://127.0.0.1:6379")
        .env("AUTHD_RATE_LIMIT__REDIS_URL_FILE", &file)
        .arg("check-config");
    let out = run(&mut cmd, None);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(
        out.error_line().contains("rate_limit.redis_url"),
        "{}",
        out.error_line()
    );
}

#[test]
fn log_level_must_be_a_level_or_a_filter_of_levels() {
    for good in [
        "debug",
        "WARN",
        "authd=debug,tower=warn",
        "info,authd=trace",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = authd(dir.path());
        cmd.env("AUTHD_LOG__LEVEL", good).arg("check-config");
        let out = run(&mut cmd, None);
        assert_eq!(out.status.code(), Some(0), "{good}: {out:#?}");
    }
    for bad in ["verbose", "authd=loud", "info,chatty"] {
        let dir = tempfile::tempdir().unwrap();
        for command in ["check-config", "serve"] {
            let mut cmd = authd(dir.path());
            cmd.env("AUTHD_LOG__LEVEL", bad)
                .env("AUTHD_SERVER__BIND", "127.0.0.1:0")
                .arg(command);
            let out = run(&mut cmd, None);
            assert_eq!(out.status.code(), Some(1), "{bad} ({command}): {out:#?}");
            assert!(
                out.error_line().contains("log.level"),
                "{bad}: {}",
                out.error_line()
            );
        }
    }
}

#[test]
fn authd_env_without_its_file_is_a_warning_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_ENV", "prodution").arg("check-config");
    let out = run(&mut cmd, None);
    assert_eq!(out.status.code(), Some(0), "{out:#?}");
    assert!(
        out.stderr.contains("config/prodution.toml"),
        "warning names the file: {}",
        out.stderr
    );

    let server = ServeProcess::spawn(dir.path(), &[("AUTHD_ENV", "prodution")]);
    let (_, log) = server.terminate();
    assert!(log.contains("config/prodution.toml"), "{log}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_bind_serves_metrics_only_on_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let server = ServeProcess::spawn(dir.path(), &[("AUTHD_METRICS__BIND", &bind)]);
    let client = reqwest::blocking::Client::new();
    let r = send(client.get(format!("http://{bind}/metrics")));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("authd_"), "{}", r.text);
    send(client.get(format!("http://{bind}/healthz"))).assert_error(404, "NOT_FOUND");
    send(client.get(server.url("/metrics"))).assert_error(404, "NOT_FOUND");
    assert_eq!(send(client.get(server.url("/healthz"))).status, 200);
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    assert!(
        TcpListener::bind(&bind).is_ok(),
        "the metrics listener is shut down with the main one"
    );

    // The same over the in-process server: the main listener answers /metrics 404.
    let s = TestServer::with(&[("AUTHD_METRICS__BIND", "127.0.0.1:9")]);
    send(s.get("/metrics")).assert_error(404, "NOT_FOUND");
    assert_eq!(send(TestServer::start().get("/metrics")).status, 200);
}

#[test]
fn metrics_bind_that_is_bad_or_busy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_METRICS__BIND", "localhost")
        .arg("check-config");
    let out = run(&mut cmd, None);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(
        out.error_line().contains("metrics.bind"),
        "{}",
        out.error_line()
    );

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = busy.local_addr().unwrap().to_string();
    let mut cmd = authd(dir.path());
    cmd.env("AUTHD_METRICS__BIND", &bind)
        .env("AUTHD_SERVER__BIND", "127.0.0.1:0")
        .arg("serve");
    let out = run(&mut cmd, None);
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    assert!(out.error_line().contains(&bind), "{}", out.error_line());
}
