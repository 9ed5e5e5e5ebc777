//! Outgoing mail (CONTRACT 10.1): the outbox worker of `serve`, the `file` and `smtp`
//! transports (against a real SMTP server on loopback, `smtp.rs`), retries, failures, token
//! minting at hand-over, `authd mail`, metrics and housekeeping. Every test runs on SQLite and,
//! with `AUTHD_TEST_DATABASE=postgres`, on PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use authd::domain::mail::{MailKind, NewMail};
use authd::domain::time::now_ms;
use authd::store::{self, DynStore, StoreOptions};
use uuid::Uuid;

use crate::support::{database_url_in, unique_email, TestServer};

/// The link base every mail test uses.
pub const LINK_BASE: &str = "https://app.example.com";

/// Settings for the `file` transport writing into `dir`.
pub fn file_settings(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("AUTHD_EMAIL__TRANSPORT", "file".into()),
        ("AUTHD_EMAIL__FROM", "authd <noreply@example.com>".into()),
        ("AUTHD_EMAIL__LINK_BASE", LINK_BASE.into()),
        ("AUTHD_EMAIL__FILE_DIR", dir.display().to_string()),
    ]
}

pub fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A store on the server's database (SQLite file or PostgreSQL), opened next to the server.
pub fn store_of(server: &TestServer) -> DynStore {
    let url = database_url_in(server.dir.path());
    store::open(
        &url,
        &StoreOptions {
            pool_size: 2,
            busy_timeout: Duration::from_secs(10),
            health: authd::store::health::DbHealth::uncounted(),
        },
    )
    .expect("store opens")
}

/// Queues a mail of `kind` to `to` about `user`.
pub fn enqueue(store: &DynStore, kind: MailKind, user: Option<Uuid>, to: &str) -> Uuid {
    let id = Uuid::new_v4();
    store
        .enqueue_mail(&NewMail {
            id,
            kind,
            user_id: user,
            to: to.into(),
            payload: None,
            created_at: now_ms(),
        })
        .unwrap();
    id
}

/// Waits (up to 30 s, polling) for `path` to exist.
pub fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} never appeared", path.display());
}

/// The status of mail `id` as the database has it.
pub fn status_of(server: &TestServer, id: Uuid) -> String {
    server
        .query_column(
            "SELECT status FROM mail_outbox WHERE CAST(id AS TEXT) = ?1",
            &[&id.to_string()],
        )
        .pop()
        .unwrap_or_default()
}

/// A user made by the operator (`authd create-user`): verified, so no verification mail of
/// its own joins the outbox the test watches.
pub fn user_id(server: &TestServer, email: &str) -> Uuid {
    crate::admin_cli::users_with_input(
        server,
        &["create-user", "--email", email, "--password-stdin"],
        crate::support::PASSWORD,
    )
    .ok()
    .trim()
    .parse()
    .unwrap()
}

fn link_of(eml: &str) -> String {
    eml.lines()
        .find(|l| l.starts_with(LINK_BASE))
        .unwrap_or_else(|| panic!("no link in {eml}"))
        .trim()
        .to_string()
}

#[test]
fn file_transport_writes_one_private_rfc5322_file_per_mail_with_a_working_link() {
    let mail_dir = tempfile::tempdir().unwrap();
    let dir: PathBuf = mail_dir.path().join("out");
    let server = TestServer::with(&refs(&file_settings(&dir)));
    let email = unique_email("file");
    let user = user_id(&server, &email);
    let store = store_of(&server);
    let id = enqueue(&store, MailKind::PasswordReset, Some(user), &email);
    let eml = wait_for_file(&dir.join(format!("{id}.eml")));

    for header in [
        "From: authd <noreply@example.com>",
        &format!("To: {email}"),
        "Subject: Reset your password",
        "Auto-Submitted: auto-generated",
        "Content-Type: text/plain; charset=utf-8",
    ] {
        assert!(eml.contains(header), "{header} missing in {eml}");
    }
    assert!(eml.contains("\r\nDate: "), "{eml}");
    assert!(
        eml.contains(&format!("Message-ID: <{id}@example.com>")),
        "{eml}"
    );
    let link = link_of(&eml);
    assert!(
        link.starts_with(&format!("{LINK_BASE}/reset-password#token=")),
        "{link}"
    );
    assert!(eml.contains("30 minutes"), "{eml}");
    let token = link.rsplit("token=").next().unwrap();
    assert_eq!(token.len(), 43);
    // Only its hash is stored, bound to the user and the address it went to.
    let hash = authd::crypto::one_time::hash(token);
    let found = store
        .one_time_token(authd::domain::one_time::Purpose::PasswordReset, &hash)
        .unwrap()
        .expect("the minted token is stored by its hash");
    assert_eq!(found.user_id, Some(user));
    assert_eq!(found.address.as_deref(), Some(email.as_str()));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{id}.eml"))), 0o600);
    }
    // Nothing half-written is left behind under another name.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{id}.eml")]);
    wait_until(|| status_of(&server, id) == "sent");
}

/// Polls `f` (up to 30 s) until it holds.
pub fn wait_until(f: impl Fn() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("condition never held");
}

#[test]
fn a_notice_has_no_link_and_a_mail_about_a_deleted_user_is_dropped() {
    let mail_dir = tempfile::tempdir().unwrap();
    let dir = mail_dir.path().to_path_buf();
    let server = TestServer::with(&refs(&file_settings(&dir)));
    let email = unique_email("notice");
    let user = user_id(&server, &email);
    let store = store_of(&server);
    let notice = enqueue(&store, MailKind::PasswordResetNotice, Some(user), &email);
    let eml = wait_for_file(&dir.join(format!("{notice}.eml")));
    assert!(!eml.contains("http"), "{eml}");
    assert!(eml.contains("Subject: Your password was changed"), "{eml}");

    let gone = enqueue(&store, MailKind::VerifyEmail, Some(Uuid::new_v4()), &email);
    wait_until(|| status_of(&server, gone) == "failed");
    assert!(!dir.join(format!("{gone}.eml")).exists());
    let reason = server.query_column(
        "SELECT reason FROM audit_events WHERE event = 'mail_failed'",
        &[],
    );
    assert_eq!(reason, vec!["user_gone".to_string()]);
}

use crate::smtp::{Answer, Relay};

/// Settings for the `smtp` transport to a plain-text relay on loopback.
pub fn smtp_settings(relay: std::net::SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("AUTHD_EMAIL__TRANSPORT", "smtp".into()),
        ("AUTHD_EMAIL__FROM", "noreply@example.com".into()),
        ("AUTHD_EMAIL__LINK_BASE", LINK_BASE.into()),
        ("AUTHD_EMAIL__SMTP_HOST", relay.ip().to_string()),
        ("AUTHD_EMAIL__SMTP_PORT", relay.port().to_string()),
        ("AUTHD_EMAIL__SMTP_TLS", "none".into()),
        ("AUTHD_EMAIL__SMTP_TIMEOUT", "5s".into()),
    ]
}

/// Makes a mail waiting for a retry due now (instead of waiting the 30 s back-off).
fn due_now(server: &TestServer, id: Uuid) {
    server.execute_sql(
        "UPDATE mail_outbox SET next_attempt_at = 0 WHERE CAST(id AS TEXT) = ?1 AND status = 'queued'",
        &[&id.to_string()],
    );
}

/// Column `col` of mail `id`, as text.
pub fn column(server: &TestServer, col: &str, id: Uuid) -> String {
    server
        .query_column(
            &format!("SELECT CAST({col} AS TEXT) FROM mail_outbox WHERE CAST(id AS TEXT) = ?1"),
            &[&id.to_string()],
        )
        .pop()
        .unwrap_or_default()
}

#[test]
fn a_4xx_is_retried_later_with_a_back_off_and_then_delivered() {
    let relay = Relay::start();
    relay.answer(Answer::Transient);
    let server = TestServer::with(&refs(&smtp_settings(relay.addr)));
    let store = store_of(&server);
    let email = unique_email("smtp4xx");
    let user = user_id(&server, &email);
    let id = enqueue(&store, MailKind::VerifyEmail, Some(user), &email);
    wait_until(|| column(&server, "attempts", id) == "1" && status_of(&server, id) == "queued");
    assert!(column(&server, "last_error", id).starts_with("451"));
    // The next attempt waits about 30 s.
    let next: i64 = column(&server, "next_attempt_at", id).parse().unwrap();
    assert!(next - now_ms() > 20_000, "retry too soon: {next}");
    relay.answer(Answer::Accept);
    due_now(&server, id);
    wait_until(|| status_of(&server, id) == "sent");
    assert_eq!(column(&server, "attempts", id), "2");
    // `mail list` shows the 451 as an earlier try's, not as why the mail is stuck.
    let list = mail_cli(&server, &["list", "--status", "sent"])
        .ok()
        .to_string();
    let line = list
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("  sent  ") && line.contains("earlier try: 451"),
        "{line}"
    );
    let msgs = relay.messages();
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].contains(&format!("{LINK_BASE}/verify-email#token=")),
        "{}",
        msgs[0]
    );
    assert!(msgs[0].contains("Auto-Submitted: auto-generated"));
}

#[test]
fn a_5xx_fails_the_mail_at_once_with_no_retry_and_audits_mail_failed() {
    let relay = Relay::start();
    relay.answer(Answer::Permanent);
    let server = TestServer::with(&refs(&smtp_settings(relay.addr)));
    let store = store_of(&server);
    let email = unique_email("smtp5xx");
    let user = user_id(&server, &email);
    let id = enqueue(&store, MailKind::PasswordReset, Some(user), &email);
    wait_until(|| status_of(&server, id) == "failed");
    assert_eq!(column(&server, "attempts", id), "1");
    let audit = server.query_column(
        "SELECT reason FROM audit_events WHERE event = 'mail_failed' AND CAST(user_id AS TEXT) = ?1",
        &[&user.to_string()],
    );
    assert_eq!(audit, vec!["550".to_string()]);
    // A second mail goes through the worker; the failed one is never tried again.
    relay.answer(Answer::Accept);
    let later = enqueue(&store, MailKind::PasswordResetNotice, Some(user), &email);
    wait_until(|| status_of(&server, later) == "sent");
    assert_eq!(relay.connections(), 2, "the failed mail was retried");
    assert_eq!(status_of(&server, id), "failed");
    let metrics = server.metrics();
    assert!(
        metrics.contains("authd_mail_deliveries_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authd_mail_deliveries_total{outcome=\"sent\"} 1"),
        "{metrics}"
    );
    // The outbox gauge, refreshed by the worker's rounds: one sent, one failed, none waiting.
    let gauge = |status: &str, n: u32| format!("authd_mail_outbox{{status=\"{status}\"}} {n}\n");
    wait_until(|| {
        let metrics = server.metrics();
        [("queued", 0), ("sending", 0), ("sent", 1), ("failed", 1)]
            .iter()
            .all(|(s, n)| metrics.contains(&gauge(s, *n)))
    });
}

#[test]
fn with_the_relay_down_requests_answer_and_the_mail_arrives_once_it_is_back() {
    let relay = Relay::start();
    let addr = relay.stop();
    let server = TestServer::with(&refs(&smtp_settings(addr)));
    let store = store_of(&server);
    let email = unique_email("down");
    let user = user_id(&server, &email);
    let id = enqueue(&store, MailKind::PasswordReset, Some(user), &email);
    wait_until(|| column(&server, "attempts", id) == "1" && status_of(&server, id) == "queued");
    assert!(column(&server, "last_error", id).starts_with("connection"));
    // Requests do not wait for mail.
    assert_eq!(server.get("/healthz").send().unwrap().status(), 200);
    let relay = Relay::on(addr);
    due_now(&server, id);
    wait_until(|| status_of(&server, id) == "sent");
    assert_eq!(relay.messages().len(), 1);
}

#[test]
fn the_link_uses_link_base_whatever_host_the_request_named_and_no_raw_token_is_stored() {
    let mail_dir = tempfile::tempdir().unwrap();
    let dir = mail_dir.path().to_path_buf();
    let server = TestServer::sqlite_only(&refs(&file_settings(&dir)));
    let email = unique_email("host");
    let r = server
        .post("/api/auth/register")
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .json(&serde_json::json!({"email": email, "password": crate::support::PASSWORD}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Uuid = r.json::<serde_json::Value>().unwrap()["data"]["user"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = store_of(&server);
    let id = enqueue(&store, MailKind::PasswordReset, Some(user), &email);
    let eml = wait_for_file(&dir.join(format!("{id}.eml")));
    assert!(!eml.contains("evil.example"));
    let link = link_of(&eml);
    let token = link.rsplit("token=").next().unwrap().to_string();
    drop(store);
    let path = server.db_path();
    let dir_of_db = path.parent().unwrap().to_path_buf();
    let tmp = server.stop();
    assert_not_in_files(&dir_of_db, &token);
    drop(tmp);
}

/// Asserts that no file directly in `dir` holds `token`'s bytes; returns how many it read.
pub fn assert_not_in_files(dir: &Path, token: &str) -> usize {
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "raw token found in {}",
                p.display()
            );
            scanned += 1;
        }
    }
    scanned
}

fn mail_cli(server: &TestServer, args: &[&str]) -> crate::cli::Run {
    let mut cmd = crate::cli::authd_on(server.dir.path());
    for (k, v) in file_settings(&server.dir.path().join("mail")) {
        cmd.env(k, v);
    }
    crate::cli::run(cmd.arg("mail").args(args), None)
}

#[test]
fn authd_mail_status_list_retry_and_test() {
    let mail_dir = tempfile::tempdir().unwrap();
    let relay = Relay::start();
    relay.answer(Answer::Permanent);
    let server = TestServer::with(&refs(&smtp_settings(relay.addr)));
    let store = store_of(&server);
    let email = unique_email("cli");
    let user = user_id(&server, &email);
    let id = enqueue(&store, MailKind::PasswordResetNotice, Some(user), &email);
    wait_until(|| status_of(&server, id) == "failed");

    let status: serde_json::Value =
        serde_json::from_str(mail_cli(&server, &["status", "--json"]).ok()).unwrap();
    assert_eq!(
        status,
        serde_json::json!({"queued": 0, "sending": 0, "sent": 0, "failed": 1,
                           "oldestQueuedSeconds": null})
    );
    let list: serde_json::Value =
        serde_json::from_str(mail_cli(&server, &["list", "--status", "failed", "--json"]).ok())
            .unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        [
            "attempts",
            "createdAt",
            "id",
            "kind",
            "lastError",
            "status",
            "to"
        ]
    );
    assert_eq!(rows[0]["id"], id.to_string());
    assert_eq!(rows[0]["kind"], "password_reset_notice");
    assert!(rows[0]["lastError"].as_str().unwrap().starts_with("550"));
    let lines = mail_cli(&server, &["list"]).ok().to_string();
    assert!(
        lines.contains(&id.to_string()) && lines.contains("failed"),
        "{lines}"
    );
    assert!(mail_cli(&server, &["list", "--status", "nope"])
        .error_line()
        .contains("nope"));

    relay.answer(Answer::Accept);
    mail_cli(&server, &["retry", &id.to_string()]).ok();
    wait_until(|| status_of(&server, id) == "sent");
    assert!(mail_cli(&server, &["retry", &id.to_string()])
        .error_line()
        .contains("no such failed mail"));

    // `mail test` sends through the configured transport (here: file, from the CLI's env).
    let out = mail_cli(&server, &["test", "--to", "ops@example.com"])
        .ok()
        .to_string();
    assert!(out.starts_with("sent to ops@example.com"), "{out}");
    drop(mail_dir);
}

#[test]
fn cleanup_deletes_finished_mails_and_expired_tokens_but_never_a_queued_mail() {
    let server = TestServer::start();
    let store = store_of(&server);
    let email = unique_email("cleanup");
    let user = user_id(&server, &email);
    // transport none: nothing is delivered; the rows stay as they are written.
    let queued = enqueue(&store, MailKind::Test, Some(user), &email);
    let sent = enqueue(&store, MailKind::Test, Some(user), &email);
    let failed = enqueue(&store, MailKind::Test, Some(user), &email);
    let old = (now_ms() - 30 * 86_400_000).to_string();
    server.execute_sql(
        &format!("UPDATE mail_outbox SET status = 'sent', finished_at = {old} WHERE CAST(id AS TEXT) = ?1"),
        &[&sent.to_string()],
    );
    server.execute_sql(
        &format!("UPDATE mail_outbox SET status = 'failed', finished_at = {old}, created_at = {old} WHERE CAST(id AS TEXT) = ?1"),
        &[&failed.to_string()],
    );
    server.execute_sql(
        &format!("UPDATE mail_outbox SET created_at = {old} WHERE CAST(id AS TEXT) = ?1"),
        &[&queued.to_string()],
    );
    // An expired and a live token of each kind that is no mailed link: mfaTokens, pending
    // TOTP enrolments and both passkey ceremonies (CONTRACT 11: cleanup deletes the expired
    // ones; nothing else about a factor expires).
    use authd::domain::one_time::Purpose;
    let purposes = [
        Purpose::Mfa,
        Purpose::TotpEnrollment,
        Purpose::PasskeyRegistration,
        Purpose::PasskeyAuthentication,
    ];
    let mut tokens = Vec::new();
    for purpose in purposes {
        let (_, expired) = authd::crypto::one_time::new_token();
        let (_, live) = authd::crypto::one_time::new_token();
        for (hash, expires) in [(&expired, now_ms() - 1000), (&live, now_ms() + 600_000)] {
            store
                .issue_one_time_token(
                    &authd::domain::one_time::NewOneTimeToken {
                        token_hash: hash.clone(),
                        purpose,
                        user_id: Some(user),
                        address: None,
                        payload: None,
                        created_at: now_ms() - 2000,
                        expires_at: expires,
                    },
                    false,
                )
                .unwrap();
        }
        tokens.push((purpose, expired, live));
    }
    let run = crate::cli::run(
        crate::cli::authd_on(server.dir.path()).arg("cleanup-tokens"),
        None,
    );
    let out = run.ok().to_string();
    assert!(out.contains("4 one-time token(s), 2 mail(s)"), "{out}");
    assert_eq!(status_of(&server, queued), "queued");
    assert_eq!(status_of(&server, sent), "");
    assert_eq!(status_of(&server, failed), "");
    for (p, expired, live) in tokens {
        assert!(
            store.one_time_token(p, &expired).unwrap().is_none(),
            "{p:?}"
        );
        assert!(store.one_time_token(p, &live).unwrap().is_some(), "{p:?}");
    }
}

#[test]
fn a_mail_survives_kill_9_and_two_serve_processes_deliver_each_mail_once() {
    // The database is the TestServer's (transport none: its own worker does not run).
    let server = TestServer::start();
    let url = database_url_in(server.dir.path());
    let store = store_of(&server);
    let email = unique_email("kill9");
    let user = user_id(&server, &email);
    let relay = Relay::start();
    let addr = relay.stop();
    let mut env = smtp_settings(addr);
    env.push(("AUTHD_DATABASE__URL", url));
    let work = tempfile::tempdir().unwrap();
    let first = crate::support::ServeProcess::spawn(work.path(), &refs(&env));
    let id = enqueue(&store, MailKind::PasswordReset, Some(user), &email);
    wait_until(|| column(&server, "attempts", id) == "1" && status_of(&server, id) == "queued");
    first.kill9();

    let relay = Relay::on(addr);
    due_now(&server, id);
    let ids: Vec<Uuid> = (0..10)
        .map(|_| enqueue(&store, MailKind::PasswordResetNotice, Some(user), &email))
        .collect();
    let a = crate::support::ServeProcess::spawn(work.path(), &refs(&env));
    let b = crate::support::ServeProcess::spawn(work.path(), &refs(&env));
    wait_until(|| status_of(&server, id) == "sent");
    for m in &ids {
        wait_until(|| status_of(&server, *m) == "sent");
    }
    assert_eq!(
        relay.messages().len(),
        11,
        "each mail delivered exactly once"
    );
    drop((a, b));
}
