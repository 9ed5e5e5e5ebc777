//! Slow and greedy clients over real sockets: a request head or body that trickles in, a
//! kept-alive connection left idle and a client that never reads its answers are each cut off
//! after their `server.*_timeout`; one client address holds at most
//! `server.max_connections_per_ip` connections while other clients are still served; and a
//! server out of file descriptors says so once, not once per accept, and recovers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A connection to `addr` from the loopback address `from` (every 127.0.0.0/8 address reaches
/// a server on 127.0.0.1, each as a client address of its own).
fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{from}:0").parse().unwrap())
            .expect("bind a loopback client address");
        let stream = socket.connect(addr).await.expect("connect");
        stream.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Reads until the server closes the connection or `wait` passes without a byte. Returns what
/// came and whether the server closed (EOF or reset; a timeout is not a close).
fn read_to_close(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Sends `request` from `from` and reads the answer (10 s at most).
fn exchange_from(from: &str, addr: SocketAddr, request: &str) -> (String, bool) {
    let mut stream = connect_from(from, addr);
    let _ = stream.write_all(request.as_bytes());
    read_to_close(&mut stream, Duration::from_secs(10))
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: authd\r\nConnection: close\r\n\r\n";

/// The head of a login whose 64-byte JSON body has not arrived yet, and its first byte.
const LOGIN_HEAD: &str = "POST /api/auth/login HTTP/1.1\r\nHost: authd\r\n\
                          Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{";

/// A whole login of an unknown account (401), on a connection closed after the answer.
fn login() -> String {
    let body = format!(r#"{{"email":"nobody@example.com","password":"{PASSWORD}"}}"#);
    format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: authd\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `bytes` one at a time, one every `every`, until they run out or the server closes.
fn trickle(mut stream: TcpStream, bytes: &'static [u8], every: Duration) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for b in bytes {
            std::thread::sleep(every);
            if stream.write_all(&[*b]).is_err() {
                return;
            }
        }
    })
}

fn status_of(raw: &str) -> Option<u16> {
    raw.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn json_of(raw: &str) -> Value {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

#[test]
fn a_body_trickling_a_byte_every_two_seconds_gets_408_and_the_connection_closes() {
    let s = TestServer::with(&[("AUTHD_SERVER__BODY_READ_TIMEOUT", "2s")]);
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.write_all(LOGIN_HEAD.as_bytes()).unwrap();
    let writer = trickle(
        stream.try_clone().unwrap(),
        br#""email":"trickle@example.com","password":"Correct-horse-9"}"#,
        Duration::from_secs(2),
    );
    // The whole body would take two minutes; the answer comes long before.
    let (raw, closed) = read_to_close(&mut stream, Duration::from_secs(20));
    assert_eq!(status_of(&raw), Some(408), "{raw}");
    let body = json_of(&raw);
    assert_eq!(body["success"], false, "{raw}");
    assert_eq!(body["error"], "REQUEST_TIMEOUT", "{raw}");
    assert!(body["message"].is_string(), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
    assert!(closed, "the connection is closed after the 408: {raw}");
    drop(stream);
    writer.join().unwrap();
}

#[test]
fn a_trickling_head_and_an_idle_kept_alive_connection_are_closed() {
    let s = TestServer::with(&[("AUTHD_SERVER__HEADER_READ_TIMEOUT", "2s")]);

    // A head arriving a byte a second never ends; the connection does, without an answer.
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: authd\r\n")
        .unwrap();
    let writer = trickle(
        stream.try_clone().unwrap(),
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Duration::from_secs(1),
    );
    let (raw, closed) = read_to_close(&mut stream, Duration::from_secs(8));
    assert!(closed, "a trickling head is cut off: {raw:?}");
    assert_eq!(raw, "", "no answer to a head that never ended");
    drop(stream);
    writer.join().unwrap();

    // A kept-alive connection that goes quiet after its answer is closed as well.
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: authd\r\n\r\n")
        .unwrap();
    let (raw, closed) = read_to_close(&mut stream, Duration::from_secs(8));
    assert_eq!(status_of(&raw), Some(200), "{raw}");
    assert!(closed, "an idle kept-alive connection is closed: {raw}");
}

#[test]
fn a_client_that_never_reads_its_answers_is_disconnected() {
    let s = TestServer::with(&[
        ("AUTHD_SERVER__WRITE_TIMEOUT", "2s"),
        ("AUTHD_SERVER__HEADER_READ_TIMEOUT", "60s"),
    ]);
    let mut stream = TcpStream::connect(s.addr).unwrap();
    // Far more answer than the socket buffers of both ends hold (each is the whole OpenAPI
    // document), asked for at once and not read.
    let asked = 1000;
    let request = "GET /openapi.yaml HTTP/1.1\r\nHost: authd\r\n\r\n".repeat(asked);
    stream.write_all(request.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let (raw, closed) = read_to_close(&mut stream, Duration::from_secs(30));
    let answered = raw.matches("HTTP/1.1 200").count();
    assert!(
        answered < asked,
        "the server gave up on the client: {answered} of {asked} answers"
    );
    assert!(closed);
}

/// Opens `n` connections from `from`, each with a login head whose body never comes.
fn hold(from: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = connect_from(from, addr);
            let _ = c.write_all(LOGIN_HEAD.as_bytes());
            c
        })
        .collect()
}

/// The value of an unlabelled counter in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// `GET path` from `from`, retried while the server is still giving back connections.
fn eventually_ok(from: &str, addr: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: authd\r\nConnection: close\r\n\r\n");
    let mut last = String::new();
    for _ in 0..100 {
        let (raw, _) = exchange_from(from, addr, &request);
        if status_of(&raw) == Some(200) {
            return raw;
        }
        last = raw;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {path} from {from} never answered 200: {last:?}");
}

#[test]
fn a_client_over_its_connection_cap_is_closed_while_other_clients_are_served() {
    let s = TestServer::with(&[
        ("AUTHD_SERVER__MAX_CONNECTIONS_PER_IP", "5"),
        ("AUTHD_SERVER__BODY_READ_TIMEOUT", "60s"),
    ]);
    let held = hold("127.0.0.1", s.addr, 5);

    // A sixth connection from the same address is closed at once, unanswered.
    let (raw, closed) = exchange_from("127.0.0.1", s.addr, HEALTHZ);
    assert_eq!(raw, "", "over the cap: no answer");
    assert!(closed, "over the cap: closed at once");

    // Another client is served meanwhile.
    let (raw, _) = exchange_from("127.0.0.2", s.addr, HEALTHZ);
    assert_eq!(status_of(&raw), Some(200), "{raw}");
    let (raw, _) = exchange_from("127.0.0.2", s.addr, &login());
    assert_eq!(status_of(&raw), Some(401), "{raw}");

    // Connections given back make room again.
    drop(held);
    eventually_ok("127.0.0.1", s.addr, "/healthz");
    let metrics = eventually_ok("127.0.0.2", s.addr, "/metrics");
    assert!(counter(&metrics, "authd_connections_refused_total") >= 1.0);
}

/// Lowers the open-files limit of the running process `pid` to `n`.
fn limit_descriptors(pid: u32, n: u32) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:{n}")])
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "prlimit --nofile={n}");
}

/// The warning lines of a server's output that mention `word`.
fn warnings_about(output: &str, word: &str) -> usize {
    output
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(word))
        .count()
}

#[test]
fn with_few_descriptors_trickling_clients_leave_health_checks_and_logins_answering() {
    let dir = tempfile::tempdir().unwrap();
    let p = ServeProcess::spawn(
        dir.path(),
        &[
            ("AUTHD_SERVER__MAX_CONNECTIONS_PER_IP", "16"),
            ("AUTHD_SERVER__BODY_READ_TIMEOUT", "60s"),
        ],
    );
    limit_descriptors(p.pid(), 64);
    // 80 trickling clients on one address: more than the process has descriptors for.
    let held = hold("127.0.0.1", p.addr, 80);

    let (raw, _) = exchange_from("127.0.0.2", p.addr, HEALTHZ);
    assert_eq!(status_of(&raw), Some(200), "{raw}\n{}", p.output());
    let (raw, _) = exchange_from("127.0.0.3", p.addr, &login());
    assert_eq!(status_of(&raw), Some(401), "{raw}\n{}", p.output());
    let output = p.output();
    assert_eq!(
        warnings_about(&output, "max_connections_per_ip"),
        1,
        "one warning for the whole episode:\n{output}"
    );
    drop(held);
}

#[test]
fn out_of_descriptors_is_one_warning_and_a_counter_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let p = ServeProcess::spawn(
        dir.path(),
        &[
            ("AUTHD_SERVER__MAX_CONNECTIONS_PER_IP", "0"),
            ("AUTHD_SERVER__BODY_READ_TIMEOUT", "60s"),
        ],
    );
    limit_descriptors(p.pid(), 64);
    let held = hold("127.0.0.1", p.addr, 100);
    // Accepting fails for as long as the connections are held.
    std::thread::sleep(Duration::from_secs(3));
    let output = p.output();
    assert_eq!(
        warnings_about(&output, "accept"),
        1,
        "one warning while accepting fails, not one per attempt:\n{output}"
    );

    drop(held);
    eventually_ok("127.0.0.2", p.addr, "/healthz");
    let metrics = eventually_ok("127.0.0.2", p.addr, "/metrics");
    assert!(counter(&metrics, "authd_accept_errors_total") >= 1.0);
}
