//! Store layer (PostgreSQL): the session read of every authenticated request, on connections
//! the async runtime drives itself (`tokio-postgres`, the engine under the `postgres` crate).
//!
//! Through the pool, that read is a hand-off to the blocking pool, a thread parked on the
//! round trip and a hand-off back: three context switches and a thread per request in flight.
//! Here the request's task sends the query and yields; the connection's task (one per
//! connection, on the runtime) writes every query queued on it in one go and wakes each
//! request with its row. Queries from concurrent requests are pipelined on one connection.
//!
//! - **Connections.** `QUICK_READ_SHARE` of `database.pool_size` (8 -> 2; below 4, none: the
//!   pool alone), taken from the pool's connections, so authd never holds more than
//!   `pool_size`. Each is set up as a pooled one (`super::SESSION_SETTINGS`) and prepares the
//!   one statement it runs.
//! - **Never a wait on a connection.** A request whose connection is not open yet (at start,
//!   after an error) reads through the pool, and a task on the runtime opens that connection
//!   meanwhile; after a failed attempt, none is made for `RETRY_AFTER`.
//! - **Any error steps aside.** A failed query or a row that does not parse drops that
//!   connection (a stale statement after a migration is prepared afresh by its successor) and
//!   the request reads through the pool, which reports the trouble (`DbHealth`, 503) as for
//!   every other read. A committed revocation is seen at once: each query runs on its own,
//!   outside any transaction, at READ COMMITTED.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::sessions::{with_user_row, WITH_USER};
use crate::domain::{Session, User};
use crate::store::health::DbHealth;
use crate::store::QuickRead;

/// One quick-read connection for every this many connections of `database.pool_size`.
pub(super) const QUICK_READ_SHARE: u32 = 4;

/// After a failed connection attempt, the next one waits this long (requests read through
/// the pool meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The quick-read connections of one store.
pub(super) struct QuickReads {
    config: tokio_postgres::Config,
    settings: String,
    health: Arc<DbHealth>,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// One connection: open (`reader`), being opened (`opening`), or closed.
#[derive(Default)]
struct Slot {
    reader: Mutex<Option<Arc<Reader>>>,
    opening: AtomicBool,
    failed_at: Mutex<Option<Instant>>,
}

/// An open connection's client and its prepared `WITH_USER`.
struct Reader {
    client: Client,
    with_user: Statement,
}

impl QuickReads {
    /// `count` connections (none opened yet) with `config`; `settings` is the SQL each runs
    /// once open.
    pub(super) fn new(
        config: tokio_postgres::Config,
        settings: String,
        health: Arc<DbHealth>,
        count: u32,
    ) -> Arc<Self> {
        Arc::new(QuickReads {
            config,
            settings,
            health,
            slots: (0..count).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// `Store::session_with_user_async`: the next connection in turn reads, or `None` if it
    /// is not open (it is opened in the background) or there is no runtime to drive it.
    pub(super) fn session_with_user(
        self: &Arc<Self>,
        id: Uuid,
    ) -> Option<QuickRead<Option<(Session, User)>>> {
        if self.slots.is_empty() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let Some(reader) = lock(&self.slots[index].reader).clone() else {
            self.open_in_background(index, &runtime);
            return None;
        };
        let this = self.clone();
        Some(Box::pin(async move {
            let answer = match reader.client.query_opt(&reader.with_user, &[&id]).await {
                Ok(row) => row.map(|r| with_user_row(&r)).transpose(),
                Err(e) => Err(e),
            };
            match answer {
                Ok(found) => Some(found),
                Err(e) => {
                    tracing::debug!(error = %super::cause(&e), "quick read failed; reading through the pool");
                    this.close(index, &reader);
                    None
                }
            }
        }))
    }

    /// Drops slot `index`'s connection if it is still `reader` (another request may have
    /// replaced it already); the next request through it opens a new one.
    fn close(&self, index: usize, reader: &Arc<Reader>) {
        let mut current = lock(&self.slots[index].reader);
        if current.as_ref().is_some_and(|r| Arc::ptr_eq(r, reader)) {
            *current = None;
        }
    }

    /// Opens slot `index`'s connection on the runtime, unless it is being opened or the last
    /// attempt failed less than `RETRY_AFTER` ago.
    fn open_in_background(self: &Arc<Self>, index: usize, runtime: &tokio::runtime::Handle) {
        let slot = &self.slots[index];
        if lock(&slot.failed_at).is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return;
        }
        if slot.opening.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let slot = &this.slots[index];
            match this.open().await {
                Ok(reader) => {
                    *lock(&slot.failed_at) = None;
                    *lock(&slot.reader) = Some(Arc::new(reader));
                    this.health.connected();
                }
                Err(e) => {
                    *lock(&slot.failed_at) = Some(Instant::now());
                    this.health.connection_failed(&super::cause(&e));
                }
            }
            slot.opening.store(false, Ordering::Release);
        });
    }

    /// Connects, drives the connection on the runtime until it closes, sets the session up
    /// and prepares `WITH_USER`.
    async fn open(&self) -> Result<Reader, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %super::cause(&e), "quick-read connection closed");
            }
        });
        client.batch_execute(&self.settings).await?;
        let with_user = client.prepare(WITH_USER).await?;
        Ok(Reader { client, with_user })
    }
}

/// The quick-read connections for a pool of `pool_size`: one per `QUICK_READ_SHARE`.
pub(super) fn count_for(pool_size: u32) -> u32 {
    pool_size / QUICK_READ_SHARE
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_of_eight_gives_two_connections_and_a_small_pool_none() {
        assert_eq!(count_for(8), 2);
        assert_eq!(count_for(4), 1);
        assert_eq!(count_for(3), 0);
        assert_eq!(count_for(1), 0);
    }
}
