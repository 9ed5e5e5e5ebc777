//! Test support: a TCP proxy on 127.0.0.1 that a test can cut and restore, the honest way to
//! make a database unreachable mid-run (the server's open connections are closed under it and
//! new ones are closed as soon as they are accepted) without touching the database itself.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The proxy's shared state. `cut` is read and the connection list written under the one
/// mutex, so a connection being set up while `cut()` runs is either closed by `cut()` or
/// never forwarded (the race that would let one connection survive a cut).
struct State {
    cut: bool,
    /// Both ends of every forwarded connection, with the id of the pair.
    live: Vec<(u64, TcpStream)>,
    next_id: u64,
}

/// Forwards a free loopback port to an upstream address until cut; stops on drop.
pub struct CuttableProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl CuttableProxy {
    /// Forwards a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        // Non-blocking so the accept loop can notice `stop`.
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(State {
            cut: false,
            live: Vec::new(),
            next_id: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, s) = (state.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, upstream, &st),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CuttableProxy {
            addr,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every forwarded connection (both ends) and closes new ones as soon as they are
    /// accepted, until `restore`.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for (_, s) in state.live.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Connects `client` to `upstream` and copies both ways, unless the proxy is cut.
fn forward(client: TcpStream, upstream: SocketAddr, state: &Arc<Mutex<State>>) {
    // Accepted sockets may inherit the listener's non-blocking mode on some platforms.
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    if state.lock().unwrap().cut {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(3)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let id = {
        let mut st = state.lock().unwrap();
        // Cut while this connection was being set up: close it rather than forward it.
        if st.cut {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.live.push((id, c3));
        st.live.push((id, s3));
        id
    };
    let done = Arc::new(AtomicBool::new(false));
    for (from, to) in [(client, s2), (server, c2)] {
        let (state, done) = (state.clone(), done.clone());
        thread::spawn(move || {
            pipe(from, to);
            // The second direction to finish forgets the pair (so a long test does not
            // keep a descriptor per connection it ever made).
            if done.swap(true, Ordering::SeqCst) {
                state.lock().unwrap().live.retain(|(i, _)| *i != id);
            }
        });
    }
}

/// Copies `from` into `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
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
    let _ = from.shutdown(Shutdown::Both);
}
