//! Terminal injection: what a client sent (a login email, a name, a User-Agent, deviceInfo),
//! what the database or a config holds, or what an operator typed never reaches the operator's
//! terminal as a raw control, C1 or bidi character. Every human-readable output shows it
//! escaped (`\x1b`, `\r`, `\u{202e}`, a backslash as `\\`); `--json` keeps the exact value.
//! Also: messages name what they are about once (`no such user: X`, not `user user X`).

use reqwest::header::{HeaderValue, USER_AGENT};
use serde_json::{json, Value};

use crate::admin_cli::{admin_token, audit, json_out, users};
use crate::cli::{authd, run};
use crate::support::*;

/// ESC (clear the screen), BEL, CR LF with a forged audit row after it, the 8-bit CSI
/// (U+009B) and a right-to-left override; lower case and untrimmed-safe, so a login
/// normalises it to itself.
const HOSTILE: &str = "\x1b[2j\x07a\r\n2026-01-01t00:00:00z  login  success  \u{9b}31m\u{202e}";
/// `HOSTILE` as a terminal must show it.
const HOSTILE_SHOWN: &str =
    "\\x1b[2j\\x07a\\r\\n2026-01-01t00:00:00z  login  success  \\u{9b}31m\\u{202e}";
/// `HOSTILE` as a login stores it (`validate::login_email`: every control character, C1
/// included, becomes U+FFFD; the bidi override is not a control and stays).
const HOSTILE_STORED: &str =
    "\u{fffd}[2j\u{fffd}a\u{fffd}\u{fffd}2026-01-01t00:00:00z  login  success  \u{fffd}31m\u{202e}";
/// `HOSTILE_STORED` as a terminal must show it.
const HOSTILE_STORED_SHOWN: &str =
    "\u{fffd}[2j\u{fffd}a\u{fffd}\u{fffd}2026-01-01t00:00:00z  login  success  \u{fffd}31m\\u{202e}";
/// What a name may hold (register refuses controls): a bidi override, an isolate, a
/// zero-width space, and a backslash that must not pass for an escape.
const NAME: &str = "mallory\u{202e}gpj.exe\u{2066}\u{200b}\\x1b";
const NAME_SHOWN: &str = "mallory\\u{202e}gpj.exe\\u{2066}\\u{200b}\\\\x1b";

/// Asserts `out` holds no byte or character a terminal acts on: no C0 control but the
/// newline ending each line, no DEL, no C1 control (U+0080..U+009F, UTF-8 `C2 80`..`C2 9F`),
/// no bidi override or isolate.
#[track_caller]
fn assert_terminal_safe(what: &str, out: &str) {
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        assert!(
            b == b'\n' || (b >= 0x20 && b != 0x7f),
            "{what}: raw byte {b:#04x} at {i}: {out:?}"
        );
        if b == 0xc2 {
            let next = bytes.get(i + 1).copied().unwrap_or(0);
            assert!(
                !(0x80..=0x9f).contains(&next),
                "{what}: raw C1 control at {i}: {out:?}"
            );
        }
    }
    for c in ['\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}'] {
        assert!(!out.contains(c), "{what}: raw {c:?}: {out:?}");
    }
}

fn post_with_agent(s: &TestServer, path: &str, agent: &[u8], body: Value) -> Resp {
    send(
        s.post(path)
            .header(USER_AGENT, HeaderValue::from_bytes(agent).unwrap())
            .json(&body),
    )
}

#[test]
fn audit_and_users_show_client_text_escaped_and_json_exact() {
    let s = TestServer::start();
    let (_, admin) = admin_token(&s);
    // A User-Agent of obs-text bytes: U+009B and U+202E in UTF-8 (HTTP refuses ESC, CR, LF).
    let agent = "agent\u{9b}\u{202e}".as_bytes();
    let email = unique_email("term");
    let reg = post_with_agent(
        &s,
        "/api/auth/register",
        agent,
        json!({"email": email, "password": PASSWORD, "name": NAME}),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let id = reg.body["data"]["user"]["id"].as_str().unwrap().to_string();
    let login = post_with_agent(
        &s,
        "/api/auth/login",
        agent,
        json!({"email": email, "password": PASSWORD, "deviceInfo": HOSTILE}),
    );
    assert_eq!(login.status, 200, "{}", login.text);
    // An unauthenticated client: a login as an email that is a forged table row.
    let forged = format!("{HOSTILE}@x.io");
    let stored = format!("{HOSTILE_STORED}@x.io");
    let r = post_with_agent(
        &s,
        "/api/auth/login",
        agent,
        json!({"email": forged, "password": PASSWORD, "deviceInfo": {"d": HOSTILE}}),
    );
    r.assert_error(401, "INVALID_CREDENTIALS");
    // What HTTP cannot carry may still be in the database (an older version, another
    // writer): the CLI trusts none of its text.
    let agent_in_db = format!("curl/8 {HOSTILE}");
    s.execute_sql(
        "UPDATE audit_events SET user_agent = ?1 WHERE email = ?2",
        &[&agent_in_db, &stored],
    );
    let email_in_db = format!("{HOSTILE}@y.io");
    s.execute_sql(
        "UPDATE users SET email = ?1 WHERE email = ?2",
        &[&email_in_db, &email],
    );

    // audit: one line per event (a CR LF forges no row), every column escaped.
    let events = audit(&s, &[]);
    let table = users(&s, &["audit", "--limit", "1000"]);
    let out = table.ok();
    assert_terminal_safe("audit", out);
    assert_eq!(out.lines().count(), events.len() + 1, "{out}");
    assert!(
        out.contains(&format!("{HOSTILE_STORED_SHOWN}@x.io")),
        "{out}"
    );
    assert!(out.contains(&format!("curl/8 {HOSTILE_SHOWN}")), "{out}");
    // --json: the exact strings.
    let login_event = events
        .iter()
        .find(|e| e["email"] == stored.as_str())
        .unwrap_or_else(|| panic!("the forged login is audited as stored: {events:#?}"));
    assert_eq!(login_event["userAgent"], agent_in_db.as_str());
    assert_eq!(login_event["success"], false);

    // users list and users show: the email and the name escaped.
    let list = users(&s, &["users", "list"]);
    assert_terminal_safe("users list", list.ok());
    assert!(
        list.ok().contains(&format!("{HOSTILE_SHOWN}@y.io")),
        "{}",
        list.stdout
    );
    let show = users(&s, &["users", "show", &id]);
    assert_terminal_safe("users show", show.ok());
    assert!(show
        .ok()
        .contains(&format!("email          {HOSTILE_SHOWN}@y.io\n")));
    assert!(show
        .ok()
        .contains(&format!("name           {NAME_SHOWN}\n")));
    // ... and, as text, safe for a terminal too: what serde_json leaves raw inside strings
    // (C1 controls, bidi overrides) is written as \u escapes of the same value.
    for args in [
        &["users", "show", &id, "--json"][..],
        &["users", "list", "--json"][..],
        &["audit", "--json"][..],
    ] {
        let run = users(&s, args);
        assert_terminal_safe(&args.join(" "), run.ok());
    }
    let shown = json_out(&users(&s, &["users", "show", &id, "--json"]));
    assert_eq!(shown["user"]["name"], NAME);
    assert_eq!(shown["user"]["email"], email_in_db.as_str());
    let listed = json_out(&users(&s, &["users", "list", "--json"]));
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["email"] == email_in_db.as_str() && u["name"] == NAME));

    // Other commands that print the email: escaped too.
    let disabled = users(&s, &["users", "disable", &id]);
    assert_terminal_safe("users disable", disabled.ok());
    assert!(disabled
        .ok()
        .starts_with(&format!("disabled {HOSTILE_SHOWN}@y.io;")));
    let unlock = users(&s, &["users", "unlock", &forged]);
    assert_terminal_safe("users unlock", unlock.ok());
    assert!(
        unlock.ok().contains(HOSTILE_STORED_SHOWN),
        "{}",
        unlock.stdout
    );

    // The admin API's session list: JSON, and the exact deviceInfo-free view.
    let sessions = s.get_auth(&format!("/api/admin/users/{id}/sessions"), &admin);
    assert_eq!(sessions.status, 200, "{}", sessions.text);

    // Error lines that echo what the operator typed: one line, escaped.
    let r = users(&s, &["revoke-sessions", "--email", &forged, "--yes"]);
    assert_eq!(
        r.error_line(),
        format!("error: no such user: {HOSTILE_SHOWN}@x.io")
    );
    assert_terminal_safe("revoke-sessions", &r.stderr);
    for args in [
        &["users", "show", &forged][..],
        &["keys", "revoke", &forged, "--yes"],
        &["audit", "--event", HOSTILE],
        &["audit", "--since", HOSTILE],
    ] {
        let r = users(&s, args);
        r.error_line();
        assert_terminal_safe(&format!("{args:?}"), &r.stderr);
    }
}

#[test]
fn messages_name_their_subject_once() {
    let s = TestServer::start();
    let (admin_id, admin) = admin_token(&s);
    let r = users(&s, &["revoke-sessions", "--email", "nobody@x.io", "--yes"]);
    assert_eq!(r.error_line(), "error: no such user: nobody@x.io");
    let id = uuid::Uuid::new_v4().to_string();
    let r = users(&s, &["revoke-sessions", "--user-id", &id, "--yes"]);
    assert_eq!(r.error_line(), format!("error: no such user: {id}"));
    let r = users(&s, &["revoke-sessions", "--user-id", "nope", "--yes"]);
    assert_eq!(
        r.error_line(),
        "error: validation failed: user-id must be a user id (a UUID)"
    );
    let r = users(&s, &["audit", "--event", "bogus"]);
    let line = r.error_line();
    assert!(
        line.starts_with("error: validation failed: event must be one of login, register,")
            && line.ends_with("(not 'bogus')"),
        "{line}"
    );
    let r = send(
        s.post(&format!("/api/admin/users/{admin_id}/disable"))
            .bearer_auth(&admin),
    );
    r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        r.body["message"],
        "validation failed: id names the acting admin: an admin cannot disable itself"
    );
}

/// An environment variable name the operator's environment holds (a hostile one, here) is
/// echoed in a configuration warning: by `check-config` on stderr (and by `serve` in its
/// pretty log, below). A configured value with a C1 control or a bidi override is printed by
/// `check-config` as a TOML escape, so the output still parses to the same value.
#[test]
fn check_config_shows_config_text_escaped() {
    let var = format!("AUTHD_X{HOSTILE}");
    let issuer = "iss\u{9b}\u{202e}\u{2066}";
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        authd(dir.path())
            .arg("check-config")
            .env(&var, "1")
            .env("AUTHD_JWT__ISSUER", issuer),
        None,
    );
    assert_terminal_safe("check-config stdout", r.ok());
    assert_terminal_safe("check-config stderr", &r.stderr);
    assert!(
        r.stderr.contains(&format!("AUTHD_X{HOSTILE_SHOWN}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("issuer = \"iss\\u009B\\u202E\\u2066\"\n"),
        "{}",
        r.stdout
    );
}

/// `serve`'s pretty log: tracing escapes ESC, BEL and C1 controls in a message itself, but
/// not CR, LF or a bidi override; every line authd writes is escaped whole.
#[test]
fn the_pretty_log_shows_config_text_escaped() {
    let var = format!("AUTHD_X{HOSTILE}");
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::spawn(
        dir.path(),
        &[("AUTHD_LOG__FORMAT", "pretty"), (var.as_str(), "1")],
    );
    let (status, out) = serve.terminate();
    assert!(status.success(), "{out}");
    assert_terminal_safe("serve log", &out);
    assert!(
        out.contains("ignoring unknown environment variable AUTHD_X"),
        "{out}"
    );
    assert!(out.contains("\\r\\n2026-01-01t00:00:00z"), "{out}");
    assert!(out.contains("\\u{202e}"), "{out}");
}
