//! A small SMTP server on loopback for the mail tests: plain SMTP (RFC 5321) as a relay speaks
//! it, answering RCPT with what the test asks for (250, a 4xx or a 5xx), keeping every message
//! it accepted. It can be stopped and started again on the same port (a relay that is down).
//! With `Options` it offers STARTTLS (RFC 3207), speaks TLS from the first byte (implicit TLS)
//! and requires AUTH PLAIN or LOGIN (RFC 4954), offered only over TLS as real relays do; `Pki`
//! makes the CA and the certificate it presents.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// What the relay answers to `RCPT TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// `451 4.3.0 try again later`
    Transient,
    /// `550 5.1.1 no such mailbox`
    Permanent,
}

/// How the relay protects and guards a session (the default: plain text, no AUTH).
#[derive(Clone, Default)]
pub struct Options {
    /// Offers STARTTLS and, after it, presents this configuration's certificate.
    pub starttls: Option<Arc<ServerConfig>>,
    /// Speaks TLS from the first byte with this configuration (implicit TLS, port 465).
    pub implicit_tls: Option<Arc<ServerConfig>>,
    /// Requires AUTH with this user and password before MAIL (530 without it, 535 for a
    /// wrong one).
    pub auth: Option<(String, String)>,
}

/// A CA made for one test and a certificate it signed for `localhost` and 127.0.0.1.
pub struct Pki {
    /// The CA's certificate (what `email.smtp_ca_file` holds).
    pub ca_pem: String,
    /// The relay's side: the certificate (with the CA's) and its key.
    pub server: Arc<ServerConfig>,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "authd test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        // The process's provider: ring, the only one the features enable (as for lettre).
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }
}

#[derive(Default)]
struct Shared {
    options: Options,
    messages: Mutex<Vec<String>>,
    /// The commands seen, in order (verb and AUTH mechanism only, never an argument), and
    /// `TLS` where a handshake completed.
    commands: Mutex<Vec<String>>,
    answer: Mutex<Option<Answer>>,
    connections: AtomicUsize,
    stop: AtomicBool,
}

pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay on a free loopback port, accepting everything.
    pub fn start() -> Relay {
        Self::with(Options::default())
    }

    /// A relay on a free loopback port, speaking as `options` say.
    pub fn with(options: Options) -> Relay {
        Self::listen("127.0.0.1:0".parse().unwrap(), options)
    }

    /// A relay on `addr` (to start one again where it was).
    pub fn on(addr: SocketAddr) -> Relay {
        Self::listen(addr, Options::default())
    }

    fn listen(addr: SocketAddr, options: Options) -> Relay {
        let listener = TcpListener::bind(addr).expect("relay binds");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            options,
            ..Shared::default()
        });
        *shared.answer.lock().unwrap() = Some(Answer::Accept);
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        s.connections.fetch_add(1, Ordering::SeqCst);
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = session(stream, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Relay {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn answer(&self, a: Answer) {
        *self.shared.answer.lock().unwrap() = Some(a);
    }

    /// Every message accepted so far (the DATA, dot-unstuffed, CRLF lines).
    pub fn messages(&self) -> Vec<String> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// The commands seen so far on every connection, in order: `EHLO`, `STARTTLS`, `TLS` (a
    /// completed handshake), `AUTH PLAIN`, `MAIL`, ...
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops listening (the port is free again); returns the address it had.
    pub fn stop(mut self) -> SocketAddr {
        self.shutdown();
        self.addr
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One side of a session: plain text, or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The TLS handshake on `tcp`, done before anything else is read or written; records `TLS`.
fn handshake(mut tcp: TcpStream, config: &Arc<ServerConfig>, s: &Shared) -> std::io::Result<Conn> {
    let mut tls = ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)?;
    }
    s.commands.lock().unwrap().push("TLS".into());
    Ok(Conn::Tls(Box::new(StreamOwned::new(tls, tcp))))
}

/// Writes `bytes` to the client now.
fn reply(lines: &mut BufReader<Conn>, bytes: &[u8]) -> std::io::Result<()> {
    let out = lines.get_mut();
    out.write_all(bytes)?;
    out.flush()
}

/// One line from the client without its CRLF; `None` at the end of the connection.
fn next_line(lines: &mut BufReader<Conn>) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if lines.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// An AUTH exchange (`AUTH PLAIN [initial]` or `AUTH LOGIN [user]`): whether the user and
/// password are `expected`; `None` if the client left.
fn auth(
    lines: &mut BufReader<Conn>,
    command: &str,
    expected: &(String, String),
) -> std::io::Result<Option<bool>> {
    let decode = |b64: &str| {
        String::from_utf8_lossy(&B64.decode(b64.trim()).unwrap_or_default()).into_owned()
    };
    let mut words = command.split_whitespace().skip(1);
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_string);
    let ask = |lines: &mut BufReader<Conn>, prompt: &[u8]| -> std::io::Result<Option<String>> {
        reply(lines, prompt)?;
        next_line(lines)
    };
    let (user, password) = if mechanism == "PLAIN" {
        let Some(b64) = initial.map_or_else(|| ask(lines, b"334 \r\n"), |i| Ok(Some(i)))? else {
            return Ok(None);
        };
        let plain = decode(&b64);
        let mut parts = plain.split('\0').skip(1);
        let user = parts.next().unwrap_or("").to_string();
        (user, parts.next().unwrap_or("").to_string())
    } else if mechanism == "LOGIN" {
        let Some(user) =
            initial.map_or_else(|| ask(lines, b"334 VXNlcm5hbWU6\r\n"), |i| Ok(Some(i)))?
        else {
            return Ok(None);
        };
        let Some(password) = ask(lines, b"334 UGFzc3dvcmQ6\r\n")? else {
            return Ok(None);
        };
        (decode(&user), decode(&password))
    } else {
        return Ok(Some(false));
    };
    Ok(Some((user, password) == *expected))
}

fn session(stream: TcpStream, s: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = match &s.options.implicit_tls {
        Some(config) => handshake(stream, config, s)?,
        None => Conn::Plain(stream),
    };
    let mut lines = BufReader::new(conn);
    reply(&mut lines, b"220 relay.test ESMTP ready\r\n")?;
    let mut authenticated = false;
    while let Some(line) = next_line(&mut lines)? {
        let verb = line.to_ascii_uppercase();
        let tls = matches!(lines.get_ref(), Conn::Tls(_));
        let name: String = match verb.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["AUTH", mechanism, ..] => format!("AUTH {mechanism}"),
            [first, ..] => first.to_string(),
            [] => String::new(),
        };
        s.commands.lock().unwrap().push(name.clone());
        let reply_bytes: Vec<u8> = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
            let mut r = String::from("250-relay.test\r\n");
            if s.options.starttls.is_some() && !tls {
                r.push_str("250-STARTTLS\r\n");
            }
            if s.options.auth.is_some() && tls {
                r.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            r.push_str("250 8BITMIME\r\n");
            r.into_bytes()
        } else if name == "STARTTLS" && !tls && s.options.starttls.is_some() {
            reply(&mut lines, b"220 2.0.0 ready to start TLS\r\n")?;
            // Anything the client sent after STARTTLS and before the handshake is dropped
            // (RFC 3207 forbids it); the client starts again with EHLO.
            let Conn::Plain(tcp) = lines.into_inner() else {
                unreachable!("checked above")
            };
            let config = s.options.starttls.as_ref().unwrap();
            lines = BufReader::new(handshake(tcp, config, s)?);
            authenticated = false;
            continue;
        } else if name.starts_with("AUTH") {
            match &s.options.auth {
                Some(expected) if tls => match auth(&mut lines, &line, expected)? {
                    None => return Ok(()),
                    Some(true) => {
                        authenticated = true;
                        b"235 2.7.0 authentication succeeded\r\n".to_vec()
                    }
                    Some(false) => b"535 5.7.8 authentication credentials invalid\r\n".to_vec(),
                },
                _ => b"503 5.5.1 AUTH not available\r\n".to_vec(),
            }
        } else if verb.starts_with("MAIL FROM") && s.options.auth.is_some() && !authenticated {
            b"530 5.7.0 authentication required\r\n".to_vec()
        } else if verb.starts_with("MAIL FROM") || verb.starts_with("RSET") || verb == "NOOP" {
            b"250 2.0.0 OK\r\n".to_vec()
        } else if verb.starts_with("RCPT TO") {
            match s.answer.lock().unwrap().unwrap_or(Answer::Accept) {
                Answer::Accept => b"250 2.1.5 OK\r\n".to_vec(),
                Answer::Transient => b"451 4.3.0 try again later\r\n".to_vec(),
                Answer::Permanent => b"550 5.1.1 no such mailbox\r\n".to_vec(),
            }
        } else if verb == "DATA" {
            reply(&mut lines, b"354 go ahead\r\n")?;
            let mut data = String::new();
            loop {
                let mut raw = String::new();
                if lines.read_line(&mut raw)? == 0 {
                    return Ok(());
                }
                if raw == ".\r\n" {
                    break;
                }
                data.push_str(raw.strip_prefix('.').unwrap_or(&raw));
            }
            s.messages.lock().unwrap().push(data);
            b"250 2.0.0 queued as 1\r\n".to_vec()
        } else if verb == "QUIT" {
            reply(&mut lines, b"221 2.0.0 bye\r\n")?;
            if let Conn::Tls(t) = lines.get_mut() {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            return Ok(());
        } else {
            b"502 5.5.1 not implemented\r\n".to_vec()
        };
        reply(&mut lines, &reply_bytes)?;
    }
    Ok(())
}
