//! The SMTP transport against a relay that speaks TLS and requires AUTH (CONTRACT 10.1):
//! STARTTLS required and never opportunistic, implicit TLS, AUTH PLAIN/LOGIN, a relay
//! certificate vouched for by `email.smtp_ca_file` (and refused without it), and that file's
//! configuration errors. The relay is `smtp.rs` with a CA made for each test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use authd::domain::mail::MailKind;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use crate::cli::{authd, authd_on, run};
use crate::mail::{
    column, enqueue, refs, smtp_settings, status_of, store_of, user_id, wait_until, LINK_BASE,
};
use crate::smtp::{Options, Pki, Relay};
use crate::support::{database_url_in, unique_email, ServeProcess, TestServer};

const USER: &str = "authd@relay.test";
const RELAY_PASSWORD: &str = "relay-Pass-7Qx9-never-shown";

/// `smtp_settings` for `relay` with `email.smtp_tls = tls`, AUTH as `USER` with `password`,
/// and `email.smtp_ca_file = ca_file` when given.
fn tls_settings(
    relay: SocketAddr,
    tls: &str,
    password: &str,
    ca_file: Option<&Path>,
) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = smtp_settings(relay)
        .into_iter()
        .filter(|(k, _)| *k != "AUTHD_EMAIL__SMTP_TLS")
        .collect();
    env.push(("AUTHD_EMAIL__SMTP_TLS", tls.into()));
    env.push(("AUTHD_EMAIL__SMTP_USERNAME", USER.into()));
    env.push(("AUTHD_EMAIL__SMTP_PASSWORD", password.into()));
    if let Some(path) = ca_file {
        env.push(("AUTHD_EMAIL__SMTP_CA_FILE", path.display().to_string()));
    }
    env
}

/// A password-reset mail queued for a new account of `server`: (mail id, user id).
fn queue_reset(server: &TestServer, tag: &str) -> (Uuid, Uuid) {
    let email = unique_email(tag);
    let user = user_id(server, &email);
    let id = enqueue(
        &store_of(server),
        MailKind::PasswordReset,
        Some(user),
        &email,
    );
    (id, user)
}

/// Writes `pki`'s CA certificate to `dir/ca.pem`.
fn ca_file(pki: &Pki, dir: &Path) -> PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

fn auth() -> Option<(String, String)> {
    Some((USER.into(), RELAY_PASSWORD.into()))
}

/// Commands that carry a credential or a message.
fn sends_anything(commands: &[String]) -> bool {
    commands
        .iter()
        .any(|c| c.starts_with("AUTH") || ["MAIL", "RCPT", "DATA"].contains(&c.as_str()))
}

#[test]
fn starttls_and_auth_deliver_and_the_relay_sees_tls_before_auth_and_mail() {
    let pki = Pki::new();
    let relay = Relay::with(Options {
        starttls: Some(pki.server.clone()),
        auth: auth(),
        ..Options::default()
    });
    let certs = tempfile::tempdir().unwrap();
    let ca = ca_file(&pki, certs.path());
    let env = tls_settings(relay.addr, "starttls", RELAY_PASSWORD, Some(&ca));
    let server = TestServer::with(&refs(&env));
    let (id, _) = queue_reset(&server, "starttls");
    wait_until(|| status_of(&server, id) == "sent");

    let msgs = relay.messages();
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].contains(&format!("{LINK_BASE}/reset-password#token=")),
        "{}",
        msgs[0]
    );
    // A fresh EHLO after the handshake, AUTH only then, and the mail after AUTH.
    assert_eq!(
        relay.commands(),
        [
            "EHLO",
            "STARTTLS",
            "TLS",
            "EHLO",
            "AUTH PLAIN",
            "MAIL",
            "RCPT",
            "DATA",
            "QUIT"
        ]
    );
}

#[test]
fn implicit_tls_and_auth_deliver_through_authd_mail_test() {
    let pki = Pki::new();
    let relay = Relay::with(Options {
        implicit_tls: Some(pki.server.clone()),
        auth: auth(),
        ..Options::default()
    });
    let certs = tempfile::tempdir().unwrap();
    let ca = ca_file(&pki, certs.path());
    // The server's database; `mail test` sends from the CLI with the relay's settings.
    let server = TestServer::start();
    let mut cmd = authd_on(server.dir.path());
    cmd.envs(tls_settings(relay.addr, "tls", RELAY_PASSWORD, Some(&ca)));
    let out = run(cmd.args(["mail", "test", "--to", "ops@example.com"]), None);
    let out = out.ok();
    assert!(out.starts_with("sent to ops@example.com"), "{out}");
    assert!(out.contains("250"), "the relay's answer: {out}");
    assert_eq!(relay.messages().len(), 1);
    let commands = relay.commands();
    assert_eq!(commands[..3], ["TLS", "EHLO", "AUTH PLAIN"], "{commands:?}");
    assert!(!commands.contains(&"STARTTLS".to_string()), "{commands:?}");
}

#[test]
fn starttls_to_a_relay_without_it_sends_nothing_in_clear_and_is_retried() {
    let pki = Pki::new();
    // Plain text only, AUTH required: a client that fell back would send the password in clear.
    let relay = Relay::with(Options {
        auth: auth(),
        ..Options::default()
    });
    let certs = tempfile::tempdir().unwrap();
    let ca = ca_file(&pki, certs.path());
    let env = tls_settings(relay.addr, "starttls", RELAY_PASSWORD, Some(&ca));
    let server = TestServer::with(&refs(&env));
    let (id, _) = queue_reset(&server, "nostarttls");
    wait_until(|| column(&server, "attempts", id) == "1" && status_of(&server, id) == "queued");

    let last_error = column(&server, "last_error", id);
    assert!(last_error.starts_with("connection"), "{last_error}");
    let commands = relay.commands();
    assert!(!sends_anything(&commands), "sent in clear: {commands:?}");
    assert!(relay.messages().is_empty());
    assert!(
        server
            .query_column(
                "SELECT reason FROM audit_events WHERE event = 'mail_failed'",
                &[]
            )
            .is_empty(),
        "a refused connection is retried, not failed"
    );
}

#[test]
fn a_relay_certificate_no_trusted_ca_vouches_for_is_refused_with_no_plaintext_fallback() {
    let pki = Pki::new();
    let relay = Relay::with(Options {
        starttls: Some(pki.server.clone()),
        auth: auth(),
        ..Options::default()
    });
    // No email.smtp_ca_file: only the public roots, which never signed the test CA.
    let env = tls_settings(relay.addr, "starttls", RELAY_PASSWORD, None);
    let server = TestServer::with(&refs(&env));
    let (id, _) = queue_reset(&server, "untrusted");
    wait_until(|| column(&server, "attempts", id) == "1" && status_of(&server, id) == "queued");

    let last_error = column(&server, "last_error", id);
    assert!(last_error.starts_with("connection"), "{last_error}");
    let commands = relay.commands();
    assert_eq!(commands[..2], ["EHLO", "STARTTLS"], "{commands:?}");
    assert!(!commands.contains(&"TLS".to_string()), "{commands:?}");
    assert!(!sends_anything(&commands), "sent anyway: {commands:?}");
    assert!(relay.messages().is_empty());
}

#[test]
fn a_wrong_relay_password_fails_the_mail_at_once_and_is_never_shown() {
    let wrong = "wrong-Pass-3Zk8-never-shown";
    let pki = Pki::new();
    let relay = Relay::with(Options {
        starttls: Some(pki.server.clone()),
        auth: auth(),
        ..Options::default()
    });
    let certs = tempfile::tempdir().unwrap();
    let ca = ca_file(&pki, certs.path());
    // The database is the TestServer's (transport none: its worker does not run); `serve` runs
    // as a process so that its log can be read.
    let server = TestServer::start();
    let mut env = tls_settings(relay.addr, "starttls", wrong, Some(&ca));
    env.push(("AUTHD_DATABASE__URL", database_url_in(server.dir.path())));
    // Everything authd and its libraries log.
    env.push(("AUTHD_LOG__LEVEL", "trace".into()));
    let work = tempfile::tempdir().unwrap();
    let serve = ServeProcess::spawn(work.path(), &refs(&env));
    let (id, user) = queue_reset(&server, "wrongpass");
    wait_until(|| status_of(&server, id) == "failed");

    // A 535 is a 5xx: failed at the first attempt, audited with the code.
    assert_eq!(column(&server, "attempts", id), "1");
    assert!(column(&server, "last_error", id).starts_with("535"));
    let audit = server.query_column(
        "SELECT reason FROM audit_events WHERE event = 'mail_failed' AND CAST(user_id AS TEXT) = ?1",
        &[&user.to_string()],
    );
    assert_eq!(audit, vec!["535".to_string()]);
    let commands = relay.commands();
    assert!(commands.contains(&"AUTH PLAIN".to_string()), "{commands:?}");
    assert!(!commands.contains(&"MAIL".to_string()), "{commands:?}");
    assert!(relay.messages().is_empty());

    let mut shown = Vec::new();
    for args in [&["mail", "list"][..], &["mail", "list", "--json"]] {
        let mut cmd = authd_on(server.dir.path());
        cmd.envs(env.iter().cloned());
        let out = run(cmd.args(args), None);
        shown.push(out.ok().to_string());
        shown.push(out.stderr);
    }
    assert!(shown[0].contains("535"), "{}", shown[0]);
    // doctor: the refused login is a failure (every mail fails at once), naming the login keys.
    let mut cmd = authd_on(server.dir.path());
    cmd.envs(env.iter().cloned());
    let doctor = run(cmd.arg("doctor"), None);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains("mail") && l.contains("535"))
        .unwrap_or_else(|| panic!("{doctor:#?}"))
        .to_string();
    assert!(
        line.starts_with("fail")
            && line.contains("email.smtp_password")
            && line.contains("at once"),
        "{line}"
    );
    shown.push(doctor.stdout);
    shown.push(doctor.stderr);
    let (_, log) = serve.terminate();
    assert!(log.contains("mail failed") && log.contains("535"), "{log}");
    shown.push(log);
    let plain = B64.encode(format!("\0{USER}\0{wrong}"));
    for text in &shown {
        assert!(
            !text.contains(wrong) && !text.contains(&plain),
            "the password shows: {text}"
        );
    }
}

#[test]
fn a_missing_or_unusable_ca_file_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let missing = dir.path().join("nope.pem").display().to_string();
    let garbage = write("garbage.pem", "this is not a certificate\n");
    let bad_base64 = write(
        "bad-base64.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let not_der = write(
        "not-der.pem",
        &format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            B64.encode("forty-two bytes that are no certificate..")
        ),
    );
    let check = |extra: &[(&str, &str)]| {
        let out = run(
            authd(dir.path())
                .env("AUTHD_EMAIL__TRANSPORT", "smtp")
                .env("AUTHD_EMAIL__FROM", "noreply@example.com")
                .env("AUTHD_EMAIL__LINK_BASE", LINK_BASE)
                .env("AUTHD_EMAIL__SMTP_HOST", "smtp.example.com")
                .envs(extra.iter().copied())
                .arg("check-config"),
            None,
        );
        assert!(!dir.path().join("data").exists(), "{out:#?}");
        out
    };
    for (path, why) in [
        (&missing, "cannot read"),
        (&garbage, "no PEM certificate"),
        (&bad_base64, "not valid PEM"),
        (&not_der, "not usable"),
    ] {
        let line = check(&[("AUTHD_EMAIL__SMTP_CA_FILE", path)]).error_line();
        assert!(
            line.contains("email.smtp_ca_file") && line.contains(path) && line.contains(why),
            "{line}"
        );
    }

    // Plain text to a loopback relay has no use for a CA.
    let pki = Pki::new();
    let good = write("ca.pem", &pki.ca_pem);
    let line = check(&[
        ("AUTHD_EMAIL__SMTP_HOST", "127.0.0.1"),
        ("AUTHD_EMAIL__SMTP_TLS", "none"),
        ("AUTHD_EMAIL__SMTP_CA_FILE", &good),
    ])
    .error_line();
    assert!(
        line.contains("email.smtp_ca_file") && line.contains("none"),
        "{line}"
    );

    // A good file is taken and shown.
    let out = check(&[("AUTHD_EMAIL__SMTP_CA_FILE", &good)]);
    assert!(
        out.ok().contains(&format!("smtp_ca_file = \"{good}\"")),
        "{out:#?}"
    );
}

/// A username with no password is a login with an empty password: `check-config` warns, and
/// when the relay then offers no AUTH, `doctor`'s hint names the login keys (a newcomer's
/// relay without AUTH got "check smtp_host, smtp_port and smtp_tls", the wrong place).
#[test]
fn a_username_without_a_password_is_warned_and_doctor_names_the_login_keys() {
    let relay = Relay::start();
    let server = TestServer::start();
    let mut env: Vec<(&'static str, String)> = smtp_settings(relay.addr);
    env.push(("AUTHD_EMAIL__SMTP_USERNAME", USER.into()));
    let text = |env: &[(&'static str, String)], args: &[&str]| {
        let out = run(authd_on(server.dir.path()).envs(refs(env)).args(args), None);
        format!("{}{}", out.stdout, out.stderr)
    };
    let checked = text(&env, &["check-config"]);
    assert!(
        checked.contains("email.smtp_username is set and email.smtp_password is empty"),
        "{checked}"
    );
    let doctor = text(&env, &["doctor"]);
    let line = doctor
        .lines()
        .find(|l| l.contains("mail"))
        .unwrap_or_else(|| panic!("{doctor}"));
    assert!(
        line.contains("email.smtp_username and email.smtp_password"),
        "{doctor}"
    );
    // With the password set, the warning is gone.
    env.push(("AUTHD_EMAIL__SMTP_PASSWORD", RELAY_PASSWORD.into()));
    assert!(!text(&env, &["check-config"]).contains("smtp_password is empty"));
}
