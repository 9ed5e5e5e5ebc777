//! authd on PostgreSQL over HTTP: several instances on one database behave as one server, and
//! a database that goes away gives 503 with `Retry-After` (never 500) until it returns, when
//! authd recovers by itself. Needs PostgreSQL (see `services.rs`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use serde_json::json;

use crate::services::{self, PgDatabase};
use crate::support::{unique_email, Resp, TestServer, PASSWORD};

/// A TCP forwarder in front of PostgreSQL that can be cut (every connection closed, new ones
/// refused) and restored: PostgreSQL going away and coming back, for one test only.
struct Cable {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cable {
    fn to(target: String) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (up2, open2) = (up.clone(), open.clone());
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
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Cable { port, up, open }
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

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
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
    let cable = Cable::to(postgres_addr());
    let url = services::with_database(
        &db.url
            .replacen(&postgres_addr(), &format!("127.0.0.1:{}", cable.port), 1),
        &db.name,
    );
    assert!(url.contains(&cable.port.to_string()), "{url}");
    let s = TestServer::with(&[
        ("AUTHD_DATABASE__URL", &url),
        ("AUTHD_DATABASE__BUSY_TIMEOUT", "1s"),
    ]);
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

/// The server closing every connection (a restart, `pg_terminate_backend`, a failover) costs
/// no request: pooled connections are checked when taken.
#[test]
fn connections_the_server_closed_are_replaced_without_an_error() {
    let Some(db) = PgDatabase::create() else {
        return;
    };
    let s = TestServer::with(&[("AUTHD_DATABASE__URL", &db.url)]);
    let email = unique_email("pg-terminated");
    s.register(&email);
    for _ in 0..3 {
        assert_eq!(login(&s, &email).status, 200);
    }
    let mut admin =
        postgres::Client::connect(&services::postgres_admin_url(), postgres::NoTls).unwrap();
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .unwrap()
        .len();
    assert!(killed > 0);
    for _ in 0..3 {
        let r = login(&s, &email);
        assert_eq!(r.status, 200, "{}", r.text);
    }
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
