//! The server's logs at `trace` level, in JSON: no password, token, `Authorization` or
//! `Cookie` value ever appears, every line is JSON, and a request's lines carry its id.

use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::support::*;

const CANARY: &str = "Canary-Pw-7781!";
const OTHER_CANARY: &str = "Other-Canary-5523?";
const REJECTED_CANARY: &str = "Canary-Rejected-9090#";
const REQUEST_ID: &str = "test-req-42";

fn data(r: &Resp, what: &str, key: &str) -> String {
    r.body["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no {key} in {}", r.text))
        .to_string()
}

/// A token and the pieces of it that must not leak either.
fn token_parts(token: &str) -> Vec<String> {
    let mut parts = vec![token.to_string()];
    let pieces: Vec<&str> = token.split('.').collect();
    if pieces.len() == 3 {
        // A JWT: its header is the same for every token, so only its claims and signature.
        parts.extend(pieces[1..].iter().map(|p| p.to_string()));
    } else {
        parts.extend(pieces.iter().map(|p| p.to_string()));
    }
    parts
}

fn request_id_of(line: &Value) -> Option<&str> {
    line.get("request_id")
        .or_else(|| line.get("span").and_then(|s| s.get("request_id")))
        .and_then(Value::as_str)
}

#[test]
fn logs_never_contain_secrets_and_carry_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::spawn(
        dir.path(),
        &[("AUTHD_LOG__LEVEL", "trace"), ("AUTHD_LOG__FORMAT", "json")],
    );
    let client = Client::new();
    let email = unique_email("logs");
    let mut secrets: Vec<String> = vec![CANARY.into(), OTHER_CANARY.into(), REJECTED_CANARY.into()];
    let mut headers_sent: Vec<String> = Vec::new();

    let reg = send(
        client
            .post(serve.url("/api/auth/register"))
            .json(&json!({"email": email, "password": CANARY, "name": "Log Test"})),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let login = send(
        client
            .post(serve.url("/api/auth/login"))
            .header("x-request-id", REQUEST_ID)
            .json(&json!({"email": email, "password": CANARY})),
    );
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.header("x-request-id"), Some(REQUEST_ID));
    let access = data(&login, "login", "accessToken");
    let refresh = data(&login, "login", "refreshToken");

    let bearer = format!("Bearer {access}");
    let profile = send(
        client
            .get(serve.url("/api/auth/profile"))
            .header("authorization", &bearer),
    );
    assert_eq!(profile.status, 200, "{}", profile.text);
    let cookie = format!("authd_refresh={refresh}");
    let rotated = send(
        client
            .post(serve.url("/api/auth/refresh"))
            .header("cookie", &cookie),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_refresh = data(&rotated, "refresh", "refreshToken");
    let new_access = data(&rotated, "refresh", "accessToken");
    let new_cookie = format!("authd_refresh={new_refresh}");
    let out = send(
        client
            .post(serve.url("/api/auth/logout"))
            .header("cookie", &new_cookie),
    );
    assert_eq!(out.status, 200, "{}", out.text);
    let reg_bearer = format!("Bearer {}", data(&reg, "register", "accessToken"));
    let all = send(
        client
            .post(serve.url("/api/auth/logout-all"))
            .header("authorization", &reg_bearer),
    );
    assert_eq!(all.status, 200, "{}", all.text);

    let failed = send(
        client
            .post(serve.url("/api/auth/login"))
            .json(&json!({"email": email, "password": OTHER_CANARY})),
    );
    failed.assert_error(401, "INVALID_CREDENTIALS");
    let rejected = send(
        client
            .post(serve.url("/api/auth/register"))
            .json(&json!({"email": "not-an-email", "password": REJECTED_CANARY})),
    );
    rejected.assert_error(400, "VALIDATION_ERROR");
    let malformed = send(
        client
            .post(serve.url("/api/auth/login"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"email":"{email}","password":"{REJECTED_CANARY}""#
            )),
    );
    malformed.assert_error(400, "MALFORMED_JSON");

    for r in [&reg, &login, &rotated] {
        for key in ["accessToken", "refreshToken"] {
            secrets.extend(token_parts(&data(r, "tokens", key)));
        }
    }
    secrets.extend(token_parts(&new_access));
    headers_sent.extend([bearer, reg_bearer, cookie, new_cookie]);

    let (status, logs) = serve.terminate();
    assert!(status.success(), "serve exit {status:?}: {logs}");
    assert!(logs.contains("request completed"), "{logs}");
    for secret in secrets.iter().chain(&headers_sent) {
        assert!(
            !logs.contains(secret.as_str()),
            "the logs hold {secret:?}:\n{logs}"
        );
    }

    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(Value::is_object));
    let completed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert!(completed.len() >= 9, "{completed:#?}");
    for l in &completed {
        assert!(request_id_of(l).is_some(), "no request_id: {l}");
    }
    let tagged: Vec<&Value> = lines
        .iter()
        .filter(|l| request_id_of(l) == Some(REQUEST_ID))
        .collect();
    assert!(
        tagged.iter().any(|l| l["message"] == "request completed"),
        "{tagged:#?}"
    );
    assert!(
        tagged
            .iter()
            .any(|l| l["target"] == "authd::audit" && l["event"] == "login"),
        "the login's audit line lacks its request id: {tagged:#?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| request_id_of(l) != Some(REQUEST_ID))
            .all(|l| !l.to_string().contains(REQUEST_ID)),
        "test-req-42 leaked onto another request's lines"
    );
}
