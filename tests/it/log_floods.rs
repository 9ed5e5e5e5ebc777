//! Trouble that repeats must not flood the log: a database that stays locked answers every
//! request 503, and the log says so once per episode, not once a request. (PostgreSQL going
//! away is in `postgres_backend`; running out of file descriptors in `slow_clients`.)

use serde_json::json;

use crate::support::*;

/// SQLite held locked by another process (a long write, a backup tool): every write waits
/// `database.busy_timeout` and answers 503; one warning says why, not one per request.
#[test]
fn a_locked_sqlite_database_is_one_warning_not_one_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = ServeProcess::spawn(dir.path(), &[("AUTHD_DATABASE__BUSY_TIMEOUT", "300ms")]);
    let client = reqwest::blocking::Client::new();
    let register = || {
        send(client.post(p.url("/api/auth/register")).json(&json!({
            "email": unique_email("locked"),
            "password": PASSWORD,
        })))
    };
    assert_eq!(register().status, 201);

    let before = p.output().len();
    let other = rusqlite::Connection::open(dir.path().join("data/authd.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    for _ in 0..10 {
        register().assert_error(503, "SERVICE_UNAVAILABLE");
    }
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(register().status, 201);

    let output = p.output()[before..].to_string();
    let warnings = output.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "one warning for ten refused writes:\n{output}");
    assert!(output.contains("database is locked"), "{output}");
}
