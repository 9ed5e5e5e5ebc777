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

fn user_id(server: &TestServer, email: &str) -> Uuid {
    let data = server.register(email);
    data["user"]["id"].as_str().unwrap().parse().unwrap()
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
