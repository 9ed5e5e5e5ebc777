//! A small SMTP server on loopback for the mail tests: plain SMTP (RFC 5321) as a relay speaks
//! it, answering RCPT with what the test asks for (250, a 4xx or a 5xx), keeping every message
//! it accepted. It can be stopped and started again on the same port (a relay that is down).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the relay answers to `RCPT TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// `451 4.3.0 try again later`
    Transient,
    /// `550 5.1.1 no such mailbox`
    Permanent,
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<String>>,
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
        Self::on("127.0.0.1:0".parse().unwrap())
    }

    /// A relay on `addr` (to start one again where it was).
    pub fn on(addr: SocketAddr) -> Relay {
        let listener = TcpListener::bind(addr).expect("relay binds");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
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

fn session(stream: TcpStream, s: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 relay.test ESMTP ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
            b"250-relay.test\r\n250 8BITMIME\r\n"
        } else if verb.starts_with("MAIL FROM") || verb.starts_with("RSET") || verb == "NOOP" {
            b"250 2.0.0 OK\r\n"
        } else if verb.starts_with("RCPT TO") {
            match s.answer.lock().unwrap().unwrap_or(Answer::Accept) {
                Answer::Accept => b"250 2.1.5 OK\r\n",
                Answer::Transient => b"451 4.3.0 try again later\r\n",
                Answer::Permanent => b"550 5.1.1 no such mailbox\r\n",
            }
        } else if verb == "DATA" {
            out.write_all(b"354 go ahead\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            s.messages.lock().unwrap().push(data);
            b"250 2.0.0 queued as 1\r\n"
        } else if verb == "QUIT" {
            out.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            b"502 5.5.1 not implemented\r\n"
        };
        out.write_all(reply)?;
    }
}
