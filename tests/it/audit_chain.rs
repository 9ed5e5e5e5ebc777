//! The tamper-evident audit trail (CONTRACT 12.2): every event is sealed into one hash chain
//! within 10 seconds by the running server(s), `authd audit verify` finds an edited, deleted,
//! reordered or truncated event (and, with `--anchor`, a history rewritten consistently),
//! `audit.retention` keeps the chain verifiable, and the upgrade seals events written before
//! it. The tampering is done in the database directly, as an attacker with its file or
//! credentials would. Every test runs on SQLite, and on PostgreSQL with
//! `AUTHD_TEST_DATABASE=postgres`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::services::{servers_on_postgres, PgDatabase};
use crate::support::*;

/// The contract's bound on sealing.
const SEAL_WITHIN: Duration = Duration::from_secs(10);

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Runs the built binary on `database_url`, from `dir`.
fn authd_at(dir: &Path, database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(authd_bin());
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    cmd.env("AUTHD_DATABASE__URL", database_url)
        .env("AUTHD_JWT__KEY_DIR", dir.join("keys"))
        .envs(env.iter().copied())
        .output()
        .expect("authd runs")
}

/// Runs the built binary against the server's database.
fn authd(s: &TestServer, args: &[&str]) -> Output {
    authd_at(s.dir.path(), &s.database_url(), args, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok_stdout(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

/// `audit verify` failed: exit 1, and its stdout's first line `broken at seq N: <why>`.
fn broken(o: &Output) -> (i64, String) {
    let out = stdout(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a broken chain; stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out.lines().next().unwrap_or_default();
    let rest = line
        .strip_prefix("broken at seq ")
        .unwrap_or_else(|| panic!("not a broken line: {line:?}"));
    let (seq, why) = rest.split_once(": ").expect("broken at seq N: why");
    assert!(!why.trim().is_empty());
    (seq.parse().unwrap(), why.to_string())
}

/// `audit verify` succeeded: the number sealed and the head from its first line, checked
/// against the contract's words.
fn sound(o: &Output) -> (u64, String) {
    let out = ok_stdout(o);
    let line = out.lines().next().unwrap_or_default().to_string();
    let rest = line
        .strip_prefix("ok: ")
        .unwrap_or_else(|| panic!("not an ok line: {line:?}"));
    let (n, head) = rest.split_once(" events sealed, head ").expect("{line}");
    let (seq, hash) = head.split_once(':').expect("SEQ:HASH");
    seq.parse::<i64>().unwrap();
    assert_eq!(hash.len(), 64, "{line}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    (n.parse().unwrap(), head.to_string())
}

fn count(s: &TestServer, sql: &str) -> i64 {
    s.query_column(sql, &[])[0].parse().unwrap()
}

/// Waits until nothing awaits sealing; fails when that takes longer than the contract allows
/// after `written` (when the last event was written).
fn wait_sealed(s: &TestServer, written: Instant) {
    loop {
        if count(s, "SELECT COUNT(*) FROM audit_events WHERE seq IS NULL") == 0 {
            return;
        }
        assert!(
            written.elapsed() < SEAL_WITHIN,
            "events still unsealed {SEAL_WITHIN:?} after they were written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server with a few sealed events (registrations and a failed login); returns it with the
/// number of events and the head.
fn sealed_server(extra: &[(&str, &str)]) -> (TestServer, i64, String) {
    let s = TestServer::with(extra);
    let email = unique_email("chain");
    s.register(&email);
    s.register(&unique_email("chain"));
    let r = s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": "Wrong-horse-1!"}),
    );
    assert_eq!(r.status, 401);
    s.login(&email);
    wait_sealed(&s, Instant::now());
    let n = count(&s, "SELECT COUNT(*) FROM audit_events");
    assert!(n >= 4, "{n} events");
    let (sealed, head) = sound(&authd(&s, &["audit", "verify"]));
    assert_eq!(sealed as i64, n);
    (s, n, head)
}

fn hash_at(s: &TestServer, seq: i64) -> String {
    s.query_column(
        &format!("SELECT hash FROM audit_events WHERE seq = {seq}"),
        &[],
    )[0]
    .clone()
}

#[test]
fn events_are_sealed_within_10_seconds_into_one_numbered_chain() {
    let (s, n, head) = sealed_server(&[]);
    // `audit head` prints what verify names.
    let printed = ok_stdout(&authd(&s, &["audit", "head"]));
    assert_eq!(printed.trim(), head);
    assert_eq!(head, format!("{n}:{}", hash_at(&s, n)));
    let out = ok_stdout(&authd(&s, &["audit", "verify"]));
    assert_eq!(
        out.lines().next().unwrap(),
        format!("ok: {n} events sealed, head {head}")
    );
    assert!(out.contains("0 event(s) await sealing"), "{out}");
    // `audit --json`: every event with its seq and hash, newest first, seqs 1..=n.
    let events: Vec<Value> =
        serde_json::from_str(&ok_stdout(&authd(&s, &["audit", "--json"]))).unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=n).rev().collect::<Vec<_>>());
    for e in &events {
        let hash = e["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
    }
    assert_eq!(
        events[0]["hash"].as_str().unwrap(),
        head.split_once(':').unwrap().1
    );
    // JSON forms.
    let v: Value =
        serde_json::from_str(&ok_stdout(&authd(&s, &["audit", "verify", "--json"]))).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["sealed"], n);
    assert_eq!(v["unsealed"], 0);
    assert_eq!(v["firstSeq"], 1);
    assert_eq!(v["head"], head.as_str());
    let v: Value =
        serde_json::from_str(&ok_stdout(&authd(&s, &["audit", "head", "--json"]))).unwrap();
    assert_eq!(v["head"], head.as_str());
    assert_eq!(v["seq"], n);
    // Later events extend the same chain: the old head still holds as an anchor.
    s.register(&unique_email("later"));
    wait_sealed(&s, Instant::now());
    let (sealed, new_head) = sound(&authd(&s, &["audit", "verify", "--anchor", &head]));
    assert_eq!(sealed as i64, n + 1);
    assert_ne!(new_head, head);
}

#[test]
fn an_edited_column_breaks_the_chain_at_that_event() {
    let (s, n, _) = sealed_server(&[]);
    s.execute_sql(
        "UPDATE audit_events SET ip = '203.0.113.66' WHERE seq = 2",
        &[],
    );
    let (seq, why) = broken(&authd(&s, &["audit", "verify"]));
    assert_eq!(seq, 2, "{why}");
    // Stdout and stderr both say it; the JSON form too.
    let o = authd(&s, &["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["brokenAt"], 2);
    // Every column counts: the user agent of the last event, and its time.
    let (s, n2, _) = sealed_server(&[]);
    s.execute_sql(
        &format!("UPDATE audit_events SET at = at + 1 WHERE seq = {n2}"),
        &[],
    );
    assert_eq!(broken(&authd(&s, &["audit", "verify"])).0, n2);
    assert!(n >= 4);
}

#[test]
fn a_deleted_event_breaks_the_chain_where_it_was() {
    let (s, _, _) = sealed_server(&[]);
    assert_eq!(
        s.execute_sql("DELETE FROM audit_events WHERE seq = 3", &[]),
        1
    );
    let (seq, why) = broken(&authd(&s, &["audit", "verify"]));
    assert_eq!(seq, 3);
    assert!(why.contains("missing"), "{why}");
}

#[test]
fn two_events_swapped_break_the_chain() {
    let (s, _, _) = sealed_server(&[]);
    s.execute_sql("UPDATE audit_events SET seq = -1 WHERE seq = 2", &[]);
    s.execute_sql("UPDATE audit_events SET seq = 2 WHERE seq = 3", &[]);
    s.execute_sql("UPDATE audit_events SET seq = 3 WHERE seq = -1", &[]);
    assert_eq!(broken(&authd(&s, &["audit", "verify"])).0, 2);
}

#[test]
fn a_truncated_tail_is_found_and_a_consistent_truncation_fails_the_anchor() {
    let (s, n, head) = sealed_server(&[]);
    s.execute_sql(
        &format!("DELETE FROM audit_events WHERE seq >= {}", n - 1),
        &[],
    );
    let (seq, why) = broken(&authd(&s, &["audit", "verify"]));
    assert_eq!(seq, n - 1, "{why}");
    // The attacker also moves the head row back: consistent in itself...
    let last = hash_at(&s, n - 2);
    s.execute_sql(
        &format!(
            "UPDATE audit_chain SET head_seq = {}, head_hash = ?1",
            n - 2
        ),
        &[&last],
    );
    let (sealed, _) = sound(&authd(&s, &["audit", "verify"]));
    assert_eq!(sealed as i64, n - 2);
    // ...but not with the head kept elsewhere.
    let (seq, why) = broken(&authd(&s, &["audit", "verify", "--anchor", &head]));
    assert_eq!(seq, n - 1);
    assert!(why.contains("truncated"), "{why}");
}

#[test]
fn a_history_rewritten_consistently_fails_only_against_the_anchor() {
    let (s, n, head) = sealed_server(&[]);
    let anchor3 = format!("3:{}", hash_at(&s, 3));
    // Remove event 2 and have the running server re-seal everything after it: the chain is
    // consistent in itself again.
    let first = hash_at(&s, 1);
    s.execute_sql(
        "UPDATE audit_chain SET head_seq = 1, head_hash = ?1",
        &[&first],
    );
    s.execute_sql("DELETE FROM audit_events WHERE seq = 2", &[]);
    s.execute_sql(
        "UPDATE audit_events SET seq = NULL, hash = NULL WHERE seq > 2",
        &[],
    );
    wait_sealed(&s, Instant::now());
    let (sealed, rewritten) = sound(&authd(&s, &["audit", "verify"]));
    assert_eq!(sealed as i64, n - 1);
    assert_ne!(rewritten, head);
    let (seq, why) = broken(&authd(&s, &["audit", "verify", "--anchor", &anchor3]));
    assert_eq!(seq, 3);
    assert!(why.contains("rewritten"), "{why}");
    let (seq, _) = broken(&authd(&s, &["audit", "verify", "--anchor", &head]));
    assert_eq!(seq, n);
    // A malformed anchor is a clear error.
    let o = authd(&s, &["audit", "verify", "--anchor", "yesterday"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("SEQ:HASH"));
}

#[test]
fn two_instances_write_one_chain() {
    let s = TestServer::start();
    let other_dir = tempfile::tempdir().unwrap();
    let url = s.database_url();
    let other = ServeProcess::spawn(other_dir.path(), &[("AUTHD_DATABASE__URL", &url)]);
    let client = reqwest::blocking::Client::new();
    let urls = [s.url("/api/auth/register"), other.url("/api/auth/register")];
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (client, urls) = (&client, &urls);
            scope.spawn(move || {
                for i in 0..10 {
                    let r = send(
                        client
                            .post(&urls[(t + i) % 2])
                            .json(&json!({"email": unique_email("two"), "password": PASSWORD})),
                    );
                    assert_eq!(r.status, 201, "{}", r.text);
                }
            });
        }
    });
    wait_sealed(&s, Instant::now());
    let n = count(&s, "SELECT COUNT(*) FROM audit_events");
    assert!(n >= 40);
    let seqs: Vec<i64> = s
        .query_column("SELECT seq FROM audit_events ORDER BY seq", &[])
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "one gapless chain");
    let (sealed, _) = sound(&authd(&s, &["audit", "verify"]));
    assert_eq!(sealed as i64, n);
    drop(other);
}

#[test]
fn retention_deletes_old_events_only_when_set_and_verify_still_holds() {
    let s = TestServer::start();
    // Three events from long ago (as a server three hours back wrote them), then new ones.
    let old = authd::domain::time::now_ms() - 3 * 3_600_000;
    for _ in 0..3 {
        s.execute_sql(
            &format!(
                "INSERT INTO audit_events (at, event, outcome, reason) \
                 VALUES ({old}, 'login', 'failure', 'invalid_credentials')"
            ),
            &[],
        );
    }
    wait_sealed(&s, Instant::now());
    s.register(&unique_email("kept"));
    s.register(&unique_email("kept"));
    wait_sealed(&s, Instant::now());
    let n = count(&s, "SELECT COUNT(*) FROM audit_events");
    let (_, head) = sound(&authd(&s, &["audit", "verify"]));
    let old_first: Vec<String> = s.query_column(
        &format!("SELECT seq FROM audit_events WHERE at = {old} ORDER BY seq"),
        &[],
    );
    assert_eq!(old_first, ["1", "2", "3"]);

    // Without audit.retention: nothing leaves the trail.
    let out = ok_stdout(&authd(&s, &["cleanup-tokens"]));
    assert!(!out.contains("audit"), "{out}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM audit_events"), n);

    let keep_1h = [("AUTHD_AUDIT__RETENTION", "1h")];
    let run = |args: &[&str]| authd_at(s.dir.path(), &s.database_url(), args, &keep_1h);
    let out = ok_stdout(&run(&["cleanup-tokens", "--dry-run"]));
    assert!(out.contains("would delete 3 audit event(s)"), "{out}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM audit_events"), n);
    let out = ok_stdout(&run(&["cleanup-tokens"]));
    assert!(out.contains("deleted 3 audit event(s)"), "{out}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM audit_events"), n - 3);
    let out = ok_stdout(&authd(&s, &["audit", "verify", "--anchor", &head]));
    assert!(
        out.starts_with(&format!("ok: {} events sealed, head {head}", n - 3)),
        "{out}"
    );
    assert!(out.contains("oldest seq kept 4"), "{out}");
    // Again: nothing more is old enough.
    let out = ok_stdout(&run(&["cleanup-tokens"]));
    assert!(out.contains("deleted 0 audit event(s)"), "{out}");
    // Deleting the first kept event now is still found.
    s.execute_sql("DELETE FROM audit_events WHERE seq = 4", &[]);
    assert_eq!(broken(&authd(&s, &["audit", "verify"])).0, 4);
}

mod sqlite_v6 {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres_v6 {
    refinery::embed_migrations!("migrations/postgres");
}

/// The rows an authd at schema V6 wrote, in the columns V6 has.
const V6_EVENTS: [&str; 3] = [
    "INSERT INTO audit_events (at, event, email, ip, outcome) \
     VALUES (1700000000000, 'login', 'a@example.com', '192.0.2.1', 'success')",
    "INSERT INTO audit_events (at, event, email, ip, outcome, reason) \
     VALUES (1700000001000, 'login', 'a@example.com', '192.0.2.1', 'failure', 'invalid_credentials')",
    "INSERT INTO audit_events (at, event, outcome, actor) \
     VALUES (1700000002000, 'admin_list', 'success', 'cli')",
];

#[test]
fn the_upgrade_seals_the_events_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let pg = if servers_on_postgres() {
        Some(PgDatabase::create().expect("PostgreSQL answers"))
    } else {
        None
    };
    let url = match &pg {
        Some(db) => {
            let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
            let mut runner = postgres_v6::migrations::runner();
            runner.set_migration_table_name("authd_schema_migrations");
            runner
                .set_target(refinery::Target::Version(6))
                .run(&mut c)
                .unwrap();
            for sql in V6_EVENTS {
                c.execute(sql, &[]).unwrap();
            }
            db.url.clone()
        }
        None => {
            let path = dir.path().join("authd.db");
            let mut c = rusqlite::Connection::open(&path).unwrap();
            let mut runner = sqlite_v6::migrations::runner();
            runner.set_migration_table_name("authd_schema_migrations");
            runner
                .set_target(refinery::Target::Version(6))
                .run(&mut c)
                .unwrap();
            for sql in V6_EVENTS {
                c.execute(sql, []).unwrap();
            }
            format!("sqlite://{}", path.display())
        }
    };
    // A command migrates (auto_migrate) but never seals: the events wait, and verify says so.
    let events: Vec<Value> = serde_json::from_str(&ok_stdout(&authd_at(
        dir.path(),
        &url,
        &["audit", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e["seq"].is_null() && e["hash"].is_null()));
    let out = ok_stdout(&authd_at(dir.path(), &url, &["audit", "verify"], &[]));
    assert!(
        out.starts_with(&format!("ok: 0 events sealed, head 0:{GENESIS}")),
        "{out}"
    );
    assert!(out.contains("3 event(s) await sealing"), "{out}");

    // The first server after the upgrade seals them, oldest first.
    let serve_dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::spawn(serve_dir.path(), &[("AUTHD_DATABASE__URL", &url)]);
    let started = Instant::now();
    loop {
        let v: Value = serde_json::from_str(&ok_stdout(&authd_at(
            dir.path(),
            &url,
            &["audit", "verify", "--json"],
            &[],
        )))
        .unwrap();
        if v["unsealed"] == 0 {
            assert_eq!(v["ok"], true);
            assert_eq!(v["sealed"], 3);
            break;
        }
        assert!(started.elapsed() < SEAL_WITHIN, "not sealed: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let events: Vec<Value> = serde_json::from_str(&ok_stdout(&authd_at(
        dir.path(),
        &url,
        &["audit", "--json"],
        &[],
    )))
    .unwrap();
    let order: Vec<(i64, String)> = events
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["time"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(order[2].0, 1);
    assert_eq!(order[0].0, 3);
    assert!(order[0].1 > order[2].1, "{order:?}");
    drop(server);
}
