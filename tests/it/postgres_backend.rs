//! authd on PostgreSQL over HTTP: several instances on one database behave as one server, and
//! a database that goes away gives 503 with `Retry-After` (never 500) until it returns, when
//! authd recovers by itself. Needs PostgreSQL (see `services.rs`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::services::{self, PgDatabase};
use crate::support::{unique_email, Resp, TestServer, PASSWORD};

/// A TCP forwarder in front of PostgreSQL that can be cut (every connection closed, new ones
/// refused) and restored: PostgreSQL going away and coming back, for one test only.
struct Cable {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// When set, the next `COMMIT` a client sends reaches PostgreSQL and then its connection
    /// is cut before the answer comes back (see `lose_the_next_commit_answer`).
    lose_commit_answer: Arc<AtomicBool>,
    /// While set, nothing is passed either way and every connection stays open: a database
    /// server that froze (its host still acknowledges packets).
    frozen: Arc<AtomicBool>,
}

impl Cable {
    fn to(target: String) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let lose_commit_answer = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let (up2, open2, lose2) = (up.clone(), open.clone(), lose_commit_answer.clone());
        let frozen2 = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                drop(open);
                let answers = Arc::new(AtomicBool::new(true));
                let to_server = Direction {
                    lose_commit_answer: Some(lose2.clone()),
                    answers: answers.clone(),
                    frozen: frozen2.clone(),
                };
                pipe_both(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    to_server,
                );
                let to_client = Direction {
                    lose_commit_answer: None,
                    answers,
                    frozen: frozen2.clone(),
                };
                pipe_both(server, client, to_client);
            }
        });
        Cable {
            port,
            up,
            open,
            lose_commit_answer,
            frozen,
        }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    /// The next `COMMIT` reaches PostgreSQL (which commits), but the connection it came on is
    /// cut before PostgreSQL's answer is passed back: a commit whose answer was lost.
    fn lose_the_next_commit_answer(&self) {
        self.lose_commit_answer.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// One direction of a forwarded connection: whether it watches for a `COMMIT` to cut after
/// (client to server), and whether answers still pass (shared by both directions).
struct Direction {
    lose_commit_answer: Option<Arc<AtomicBool>>,
    answers: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
}

/// A simple-protocol query message holding `COMMIT` (how the driver commits).
const COMMIT_MESSAGE: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

fn pipe_both(mut from: TcpStream, mut to: TcpStream, d: Direction) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !d.answers.load(Ordering::SeqCst) {
                break; // this connection's commit answer is being lost
            }
            while d.frozen.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let commit = buf[..n]
                .windows(COMMIT_MESSAGE.len())
                .any(|w| w == COMMIT_MESSAGE);
            let lose = commit
                && d.lose_commit_answer
                    .as_ref()
                    .is_some_and(|l| l.swap(false, Ordering::SeqCst));
            if lose {
                d.answers.store(false, Ordering::SeqCst);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if lose {
                // PostgreSQL reads the COMMIT before the end of the stream and commits; the
                // client sees its connection closed without an answer.
                let _ = to.shutdown(Shutdown::Write);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// host:port of the test PostgreSQL.
fn postgres_addr() -> String {
    let config: postgres::Config = services::postgres_admin_url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// A server on `db` reached through a new `Cable`, with `database.busy_timeout = busy`.
fn behind_a_cable(db: &PgDatabase, busy: &str) -> (Cable, TestServer) {
    let cable = Cable::to(postgres_addr());
    let url = services::with_database(
        &db.url
            .replacen(&postgres_addr(), &format!("127.0.0.1:{}", cable.port), 1),
        &db.name,
    );
    assert!(url.contains(&cable.port.to_string()), "{url}");
    let s = TestServer::with(&[
        ("AUTHD_DATABASE__URL", &url),
        ("AUTHD_DATABASE__BUSY_TIMEOUT", busy),
    ]);
    (cable, s)
}

fn login(s: &TestServer, email: &str) -> Resp {
    s.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
}

fn assert_unavailable(r: &Resp) {
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
}

#[test]
fn postgres_going_away_is_503_with_retry_after_and_authd_recovers_by_itself() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let (cable, s) = behind_a_cable(&db, "1s");
    let email = unique_email("pg-away");
    let data = s.register(&email);
    let refresh = data["refreshToken"].as_str().unwrap().to_string();
    assert_eq!(s.get("/readyz").send().unwrap().status(), 200);

    cable.cut();
    let ready = crate::support::send(s.get("/readyz"));
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_unavailable(&login(&s, &email));
    assert_unavailable(&s.refresh(&refresh));
    assert_unavailable(&s.post_json(
        "/api/auth/register",
        json!({"email": unique_email("pg-away-new"), "password": PASSWORD}),
    ));

    // Back: the very next requests succeed (dead pooled connections are replaced at once).
    cable.restore();
    assert_eq!(login(&s, &email).status, 200);
    let r = s.refresh(&refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.get("/readyz").send().unwrap().status(), 200);
}

/// A rotation whose COMMIT reached PostgreSQL but whose answer was lost with the connection
/// is the success it was (its replacement token is stored), not a 503: the client's retry of
/// the old token would be reuse and revoke the session.
#[test]
fn a_rotation_whose_commit_answer_was_lost_still_succeeds() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let (cable, s) = behind_a_cable(&db, "5s");
    let data = s.register(&unique_email("pg-lost-commit"));
    let first = data["refreshToken"].as_str().unwrap().to_string();
    let r = s.refresh(&first);
    assert_eq!(r.status, 200, "{}", r.text);
    let second = r.body["data"]["refreshToken"].as_str().unwrap().to_string();

    cable.lose_the_next_commit_answer();
    let r = s.refresh(&second);
    assert_eq!(r.status, 200, "the rotation committed: {}", r.text);
    assert!(
        !cable.lose_commit_answer.load(Ordering::SeqCst),
        "the rotation's COMMIT went through the cable"
    );
    let third = r.body["data"]["refreshToken"].as_str().unwrap().to_string();
    let r = s.refresh(&third);
    assert_eq!(
        r.status, 200,
        "the token it answered with works: {}",
        r.text
    );
}

/// The server closing every connection (a restart, `pg_terminate_backend`, a failover) costs
/// no request, whether the next request comes at once (a pooled connection used less than a
/// second ago is handed out untested: the read is run again, the write's `BEGIN` finds the
/// connection closed and takes another) or after the connections idled (checked when taken).
#[test]
fn connections_the_server_closed_are_replaced_without_an_error() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let s = TestServer::with(&[("AUTHD_DATABASE__URL", &db.url)]);
    let email = unique_email("pg-terminated");
    s.register(&email);
    let mut admin =
        postgres::Client::connect(&services::postgres_admin_url(), postgres::NoTls).unwrap();
    let mut terminate = || {
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .unwrap()
            .len()
    };
    for idle in [Duration::ZERO, Duration::from_millis(1500)] {
        // Several connections in the pool, all used just now.
        let mut access = String::new();
        std::thread::scope(|scope| {
            let logins: Vec<_> = (0..4).map(|_| scope.spawn(|| login(&s, &email))).collect();
            for l in logins {
                let r = l.join().unwrap();
                assert_eq!(r.status, 200, "{}", r.text);
                access = r.body["data"]["accessToken"].as_str().unwrap().to_string();
            }
        });
        assert!(terminate() > 0);
        std::thread::sleep(idle);
        for _ in 0..3 {
            let r = s.get_auth("/api/auth/profile", &access);
            assert_eq!(r.status, 200, "after {idle:?}: {}", r.text);
            let r = login(&s, &email);
            assert_eq!(r.status, 200, "after {idle:?}: {}", r.text);
        }
    }
}

/// `authd_session_reads_total{path}`.
fn session_reads(s: &TestServer, path: &str) -> f64 {
    s.metric(&format!("authd_session_reads_total{{path=\"{path}\"}}"))
}

/// authd's connections to `db` open now (the admin connection asking is not authd's).
fn connections_of(admin: &mut postgres::Client, db: &PgDatabase) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'authd'",
            &[&db.name],
        )
        .unwrap()
        .get(0)
}

/// Profile requests until every session read takes the async path (its connections are
/// opened in the background, so the first reads go through the pool).
fn until_reads_are_async(s: &TestServer, access: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = session_reads(s, "async");
        for _ in 0..4 {
            let r = s.get_auth("/api/auth/profile", access);
            assert_eq!(r.status, 200, "{}", r.text);
        }
        if session_reads(s, "async") - before == 4.0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session reads never went async:\n{}",
            s.metrics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// On PostgreSQL an authenticated request reads its session on a connection the async
/// runtime drives (no thread of the blocking pool waits on the round trip): every read takes
/// that path once its connections are open; a revocation committed elsewhere is seen by the
/// next read; the server closing those connections costs no request and they are reopened;
/// and however busy, authd holds no more than `database.pool_size` connections.
#[test]
fn session_reads_go_async_see_revocations_at_once_and_stay_within_the_pool_size() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let s = TestServer::with(&[
        ("AUTHD_DATABASE__URL", &db.url),
        ("AUTHD_DATABASE__POOL_SIZE", "8"),
    ]);
    let email = unique_email("pg-async-read");
    let data = s.register(&email);
    let access = data["accessToken"].as_str().unwrap().to_string();
    until_reads_are_async(&s, &access);
    let (async_before, pool_before) = (session_reads(&s, "async"), session_reads(&s, "pool"));
    for _ in 0..40 {
        assert_eq!(s.get_auth("/api/auth/profile", &access).status, 200);
    }
    assert_eq!(session_reads(&s, "async") - async_before, 40.0);
    assert_eq!(session_reads(&s, "pool") - pool_before, 0.0);

    // Busy: rotations and reads from 16 clients; authd's connections never exceed 8.
    let mut admin =
        postgres::Client::connect(&services::postgres_admin_url(), postgres::NoTls).unwrap();
    let done = AtomicBool::new(false);
    let most = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..16)
            .map(|i| {
                let (s, email, done) = (&s, &email, &done);
                scope.spawn(move || {
                    let data = s.login(email);
                    let mut refresh = data["refreshToken"].as_str().unwrap().to_string();
                    let access = data["accessToken"].as_str().unwrap().to_string();
                    while !done.load(Ordering::SeqCst) {
                        if i % 4 != 0 {
                            let r = s.refresh(&refresh);
                            assert_eq!(r.status, 200, "{}", r.text);
                            refresh = r.body["data"]["refreshToken"].as_str().unwrap().into();
                        } else {
                            let r = s.get_auth("/api/auth/profile", &access);
                            assert_eq!(r.status, 200, "{}", r.text);
                        }
                    }
                })
            })
            .collect();
        let mut most = 0;
        for _ in 0..100 {
            most = most.max(connections_of(&mut admin, &db));
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        most
    });
    assert!((3..=8).contains(&most), "{most} connections at most");

    // A revocation committed on another connection: the next read sees it.
    let async_before = session_reads(&s, "async");
    postgres::Client::connect(&db.url, postgres::NoTls)
        .unwrap()
        .execute(
            "UPDATE sessions SET revoked_at = 1 WHERE revoked_at IS NULL",
            &[],
        )
        .unwrap();
    s.get_auth("/api/auth/profile", &access)
        .assert_error(401, "TOKEN_REVOKED");
    assert_eq!(session_reads(&s, "async") - async_before, 1.0);

    // The server closes every connection: no request fails, the async reads come back.
    let access = s.login(&email)["accessToken"].as_str().unwrap().to_string();
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'authd'",
            &[&db.name],
        )
        .unwrap()
        .len();
    assert!(terminated >= 3, "{terminated}");
    for _ in 0..10 {
        let r = s.get_auth("/api/auth/profile", &access);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    until_reads_are_async(&s, &access);
}

/// A server on `db` with `database.pool_size = 4` (one async-read connection) and `extra`,
/// and the access token of a user it registered, once its reads take the async path.
fn one_async_connection(db: &PgDatabase, extra: &[(&str, &str)]) -> (TestServer, String) {
    let mut settings = vec![
        ("AUTHD_DATABASE__URL", db.url.as_str()),
        ("AUTHD_DATABASE__POOL_SIZE", "4"),
    ];
    settings.extend_from_slice(extra);
    let s = TestServer::with(&settings);
    let access = s.register(&unique_email("pg-one-async"))["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    until_reads_are_async(&s, &access);
    (s, access)
}

/// What a migration does to the sessions table: holds it (`ACCESS EXCLUSIVE`) until the
/// transaction ends.
fn lock_sessions(client: &mut postgres::Client) -> postgres::Transaction<'_> {
    let mut lock = client.transaction().unwrap();
    lock.batch_execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    lock
}

/// A migration holding the sessions table (`LOCK ... ACCESS EXCLUSIVE`) longer than
/// `database.busy_timeout`: an authenticated request is 503 after one `busy_timeout` (the
/// server's lock timeout answers the async read; the pool is not asked to wait a second
/// time), the wait is no connection error, authd stays within `pool_size` connections, and
/// once the lock is gone every read answers, on the async path again.
#[test]
fn a_locked_sessions_table_is_503_after_one_busy_timeout_and_no_connection_error() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let (s, access) = one_async_connection(&db, &[("AUTHD_DATABASE__BUSY_TIMEOUT", "1s")]);
    let errors = || s.metric("authd_database_connection_errors_total");
    let errors_before = errors();
    let mut admin =
        postgres::Client::connect(&services::postgres_admin_url(), postgres::NoTls).unwrap();
    let mut migration = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let lock = lock_sessions(&mut migration);
    let mut most = 0;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let r = s.get_auth("/api/auth/profile", &access);
        let took = started.elapsed();
        assert_unavailable(&r);
        assert!(
            took < Duration::from_millis(1900),
            "503 after {took:?}: one busy_timeout (1 s), not two"
        );
        most = most.max(connections_of(&mut admin, &db));
    }
    lock.rollback().unwrap();

    for _ in 0..5 {
        let r = s.get_auth("/api/auth/profile", &access);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    until_reads_are_async(&s, &access);
    assert_eq!(
        errors() - errors_before,
        0.0,
        "a lock wait is no connection error"
    );
    assert!(most <= 4, "{most} connections with pool_size 4");
}

/// The server ending a reading connection while a read waits on it (`pg_terminate_backend`
/// during a lock wait: PostgreSQL answers the pending query with a FATAL error, 57P01, before
/// the connection closes) sends that read to the pool, which answers: no 503.
#[test]
fn a_read_pending_on_a_connection_the_server_ends_is_answered_through_the_pool() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let (s, access) = one_async_connection(&db, &[]);
    let mut admin =
        postgres::Client::connect(&services::postgres_admin_url(), postgres::NoTls).unwrap();
    let mut migration = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let lock = lock_sessions(&mut migration);
    std::thread::scope(|scope| {
        let read = scope.spawn(|| s.get_auth("/api/auth/profile", &access));
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        let waiting = loop {
            let pids: Vec<i32> = admin
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1
                     AND application_name = 'authd' AND wait_event_type = 'Lock'",
                    &[&db.name],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            if let [pid] = pids[..] {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no read waiting");
            std::thread::sleep(Duration::from_millis(20));
        };
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&waiting])
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        lock.rollback().unwrap();
        let r = read.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    });
    until_reads_are_async(&s, &access);
}

/// Two instances on one database: a refresh token from one rotates at the other, and the same
/// token presented to both at once succeeds once (the rest are reuse: 401 TOKEN_REVOKED, and
/// the session is revoked).
#[test]
fn two_instances_on_one_database_behave_as_one_server() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let a = TestServer::with(&[("AUTHD_DATABASE__URL", &db.url)]);
    let keys = a.dir.path().join("keys").display().to_string();
    let b = TestServer::with(&[
        ("AUTHD_DATABASE__URL", &db.url),
        ("AUTHD_JWT__KEY_DIR", &keys),
    ]);
    let email = unique_email("pg-two");
    let data = a.register(&email);
    let r = b.refresh(data["refreshToken"].as_str().unwrap());
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["data"]["refreshToken"].as_str().unwrap().to_string();

    let barrier = Barrier::new(8);
    let statuses: Vec<Resp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (server, token, barrier) = (if i % 2 == 0 { &a } else { &b }, &token, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    server.refresh(token)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Resp> = statuses.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "{statuses:?}");
    for r in statuses.iter().filter(|r| r.status != 200) {
        r.assert_error(401, "TOKEN_REVOKED");
    }
    // The winner's token died with the session.
    let winner = ok[0].body["data"]["refreshToken"].as_str().unwrap();
    a.refresh(winner).assert_error(401, "TOKEN_REVOKED");
}

/// A PostgreSQL URL this build cannot serve is a configuration error naming the key, before
/// anything connects (and without echoing the password).
#[test]
fn sslmode_require_is_a_configuration_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (url, says) in [
        (
            "postgres://authd:s3cret-pw@db.internal/authd?sslmode=require",
            "no TLS client",
        ),
        (
            "postgresql://authd:s3cret-pw@db.internal/authd?sslmode=nope",
            "sslmode",
        ),
    ] {
        let out = std::process::Command::new(crate::support::authd_bin())
            .arg("check-config")
            .current_dir(dir.path())
            .env("AUTHD_DATABASE__URL", url)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("database.url") && stderr.contains(says),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    }
    // Plain TCP (`disable`, `prefer`) is valid.
    let out = std::process::Command::new(crate::support::authd_bin())
        .arg("check-config")
        .current_dir(dir.path())
        .env(
            "AUTHD_DATABASE__URL",
            "postgresql://authd@db.internal/authd?sslmode=prefer",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A migration that changes a column's type under a running server (here `users.email`)
/// makes PostgreSQL refuse the plans each connection cached ("cached plan must not change
/// result type"): authd prepares afresh and answers, never 500.
#[test]
fn a_column_type_change_under_a_running_server_costs_no_request() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let s = TestServer::with(&[("AUTHD_DATABASE__URL", &db.url)]);
    let email = unique_email("pg-alter");
    s.register(&email);
    let burst = |what: &str| {
        std::thread::scope(|scope| {
            let all: Vec<_> = (0..6).map(|_| scope.spawn(|| login(&s, &email))).collect();
            for r in all {
                let r = r.join().unwrap();
                assert_eq!(r.status, 200, "{what}: {}", r.text);
                let access = r.body["data"]["accessToken"].as_str().unwrap();
                let p = s.get_auth("/api/auth/profile", access);
                assert_eq!(p.status, 200, "{what}: {}", p.text);
            }
        })
    };
    burst("before");
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    admin
        .batch_execute("ALTER TABLE users ALTER COLUMN email TYPE varchar(320)")
        .unwrap();
    burst("after ALTER TABLE");
}

/// A database server that stops answering without closing anything (frozen, its host still
/// acknowledging packets): `/readyz` still answers 503 within `database.busy_timeout`, so a
/// load balancer takes the instance out, and 200 once the database answers again.
#[test]
fn readyz_answers_503_in_time_when_the_database_freezes() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let (cable, s) = behind_a_cable(&db, "1s");
    s.register(&unique_email("pg-frozen"));
    assert_eq!(crate::support::send(s.get("/readyz")).status, 200);

    cable.freeze(true);
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let r = crate::support::send(s.get("/readyz"));
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
    cable.freeze(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crate::support::send(s.get("/readyz")).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready after the thaw"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a server's output at `level` (`WARN`, `INFO`) that contain `text`.
fn lines_with(output: &str, level: &str, text: &str) -> usize {
    output
        .lines()
        .filter(|l| l.contains(level) && l.contains(text))
        .count()
}

/// Every request during the outage fails for a few seconds (logins, readiness probes, the
/// key watcher's polls, the pool's connection attempts), and ends.
fn an_outage(cable: &Cable, p: &crate::support::ServeProcess, email: &str) {
    let client = reqwest::blocking::Client::new();
    let login = || {
        crate::support::send(
            client
                .post(p.url("/api/auth/login"))
                .json(&json!({"email": email, "password": PASSWORD})),
        )
    };
    cable.cut();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        assert_unavailable(&login());
        assert_eq!(
            crate::support::send(client.get(p.url("/readyz"))).status,
            503
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cable.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while login().status != 200 {
        assert!(std::time::Instant::now() < deadline, "{}", p.output());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PostgreSQL outage is one warning and, once a connection works again, one info line;
/// the failed connection attempts are counted in `/metrics`, not logged one by one (r2d2
/// alone logged each, several a second, and every 503 logged its own warning).
#[test]
fn a_postgres_outage_is_one_warning_one_recovery_line_and_a_counter() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let cable = Cable::to(postgres_addr());
    let url = services::with_database(
        &db.url
            .replacen(&postgres_addr(), &format!("127.0.0.1:{}", cable.port), 1),
        &db.name,
    );
    let dir = tempfile::tempdir().unwrap();
    let p = crate::support::ServeProcess::spawn(
        dir.path(),
        &[
            ("AUTHD_DATABASE__URL", &url),
            ("AUTHD_DATABASE__BUSY_TIMEOUT", "1s"),
        ],
    );
    let email = unique_email("pg-outage-log");
    let client = reqwest::blocking::Client::new();
    let r = crate::support::send(
        client
            .post(p.url("/api/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    // Only what is logged from here on (start-up has its own warnings).
    let before = p.output().len();
    an_outage(&cable, &p, &email);
    let output = p.output()[before..].to_string();
    let warnings = lines_with(&output, "WARN", "");
    assert_eq!(warnings, 1, "one warning for the outage:\n{output}");
    assert_eq!(lines_with(&output, "ERROR", ""), 0, "{output}");
    assert_eq!(
        lines_with(&output, "INFO", "database connection works again"),
        1,
        "{output}"
    );

    // The next outage is a new one: one more warning.
    an_outage(&cable, &p, &email);
    let output = p.output()[before..].to_string();
    let warnings = lines_with(&output, "WARN", "");
    assert_eq!(warnings, 2, "one warning per outage:\n{output}");

    let metrics = crate::support::send(client.get(p.url("/metrics"))).text;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("authd_database_connection_errors_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no connection error counter:\n{metrics}"));
    assert!(errors >= 2.0, "{metrics}");
}
