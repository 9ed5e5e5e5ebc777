//! HTTP layer: what one client may cost the server in connections and time (docs/SECURITY.md,
//! "Slow clients"). The accept loop (`server::serve`) admits a connection only while its
//! client holds fewer than `server.max_connections_per_ip`, backs off when accepting itself
//! fails (out of file descriptors), and logs either condition once per episode; every
//! connection's writes give up on a client that reads nothing (`WriteDeadline`). The head and
//! the body have their own deadlines (hyper's `header_read_timeout`, `filters::json_body`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The open connections of each client address, against `server.max_connections_per_ip`.
pub struct PerIpConnections {
    /// 0: no cap (nothing is counted).
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection's place in its client's count; given back when dropped (when the
/// connection's task ends, whatever ended it).
pub struct ConnectionSlot {
    held: Option<(Arc<PerIpConnections>, IpAddr)>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some((owner, ip)) = self.held.take() {
            let mut open = owner.open.lock();
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

impl PerIpConnections {
    /// At most `max` open connections per client address; 0 admits every connection.
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(PerIpConnections {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `key` (see `server::connection_key`), or `None`
    /// when `key` already holds `max`. `exempt` clients (trusted proxies) are not counted.
    pub fn admit(self: &Arc<Self>, key: IpAddr, exempt: bool) -> Option<ConnectionSlot> {
        if self.max == 0 || exempt {
            return Some(ConnectionSlot { held: None });
        }
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            held: Some((self.clone(), key)),
        })
    }
}

/// A connection whose writes fail with `TimedOut` once one of them has made no progress for
/// `timeout` (a client that sends requests but never reads the answers would otherwise hold
/// its connection, and the memory of the answers, for ever). Reads pass through untouched:
/// hyper bounds them (`header_read_timeout`), and so does the body filter.
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first finds the socket full; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What a write that returned `poll` becomes: progress clears the deadline; `Pending`
    /// arms it (once) and turns into `TimedOut` when it passes.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within server.write_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_max_connections_and_gets_them_back() {
        let cap = PerIpConnections::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = cap.admit(a, false).unwrap();
        let _second = cap.admit(a, false).unwrap();
        assert!(cap.admit(a, false).is_none());
        assert!(
            cap.admit(b, false).is_some(),
            "another client has its own count"
        );
        assert!(
            cap.admit(a, true).is_some(),
            "an exempt peer is not counted"
        );
        drop(first);
        assert!(cap.admit(a, false).is_some());
        assert!(PerIpConnections::new(0).admit(a, false).is_some());
    }
}
