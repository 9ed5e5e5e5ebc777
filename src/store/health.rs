//! Store layer: the database's trouble as the log tells it, for both backends (docs/SECURITY.md,
//! "Log floods"). While the database is down, every request and every connection attempt
//! fails, several a second: the log gets one warning when the trouble starts, one info line
//! when a connection works again, and the failed connection attempts are counted (the owner
//! passes the counter in, so the store knows nothing of `/metrics`).

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::episode::Episode;

/// Shared by the store (connection attempts, through its pool's handlers) and the services
/// (operations answered `Unavailable`, through `service::Core::db`).
pub struct DbHealth {
    /// Called once per failed connection attempt (`authd_database_connection_errors_total`).
    on_connection_error: Box<dyn Fn() + Send + Sync>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// One warning per episode, whichever of the two kinds of trouble came first.
    trouble: Episode,
    /// Connection attempts fail (set by the first failure, cleared by the next success).
    connections_failing: bool,
}

impl fmt::Debug for DbHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbHealth")
    }
}

impl DbHealth {
    /// `on_connection_error` runs once per failed connection attempt.
    pub fn new(on_connection_error: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(DbHealth {
            on_connection_error: Box::new(on_connection_error),
            state: Mutex::new(State::default()),
        })
    }

    /// Logs like `new`, counts nothing (commands and tools without `/metrics`).
    pub fn uncounted() -> Arc<Self> {
        Self::new(|| {})
    }

    /// A connection could not be opened, or a pooled one was found dead. Warns when this
    /// starts an episode of trouble.
    pub fn connection_failed(&self, error: &dyn fmt::Display) {
        (self.on_connection_error)();
        let mut state = self.state.lock();
        state.connections_failing = true;
        if state.trouble.occurred() {
            tracing::warn!(
                error = %error,
                "cannot connect to the database; requests answer 503 until it is back (one \
                 line when it is); failed attempts are counted in \
                 authd_database_connection_errors_total, not logged"
            );
        }
    }

    /// A new connection works. Ends the episode (with one info line) when connections had
    /// been failing.
    pub fn connected(&self) {
        let mut state = self.state.lock();
        if std::mem::take(&mut state.connections_failing) {
            state.trouble.end();
            tracing::info!("database connection works again");
        }
    }

    /// An operation was answered `Unavailable` (busy, locked, full, read-only or unreachable:
    /// the request gets 503). Warns when this starts an episode of trouble; the episode ends
    /// after 10 s without trouble (`episode::EPISODE_QUIET`).
    pub fn unavailable(&self, cause: &str) {
        if self.state.lock().trouble.occurred() {
            tracing::warn!(
                cause,
                "database unavailable; requests answer 503 with Retry-After; logged again only \
                 after 10 s without such an error"
            );
        }
    }
}

/// Reports a pool's connection attempts to a `DbHealth` (r2d2's own handler would log every
/// failed attempt, several a second while the database is down).
#[derive(Debug, Clone)]
pub(crate) struct PoolReporter(pub(crate) Arc<DbHealth>);

impl<E: fmt::Display> r2d2::HandleError<E> for PoolReporter {
    fn handle_error(&self, error: E) {
        self.0.connection_failed(&error);
    }
}

impl r2d2::HandleEvent for PoolReporter {
    fn handle_acquire(&self, _: r2d2::event::AcquireEvent) {
        self.0.connected();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn every_failed_attempt_is_counted_and_one_episode_is_one_warning() {
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let health = DbHealth::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        health.connection_failed(&"refused");
        health.connection_failed(&"refused");
        health.unavailable("no connection");
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert!(health.state.lock().connections_failing);
        health.connected();
        assert!(!health.state.lock().connections_failing);
        // The next trouble is a new episode at once.
        assert!(health.state.lock().trouble.occurred());
    }
}
