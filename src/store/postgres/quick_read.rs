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
//!   pool alone), taken from the pool's connections. A slot holds at most one connection at
//!   a time, from the start of its opening to the end of its connection's task (a connection
//!   dropped after an error stays counted until every query sent on it is answered and it has
//!   closed), so authd never holds more than `pool_size`. Each is set up as a pooled one
//!   (`super::session_settings`) and prepares the one statement it runs.
//! - **Never a wait on a connection.** A request whose slot has no open connection (at
//!   start, while one is opened or closes, after an error) reads through the pool, and a task
//!   on the runtime opens one meanwhile; after a failed attempt, none is made for
//!   `RETRY_AFTER`. Only a failure to connect counts as a connection error (`DbHealth`); one
//!   in setting the session up (a lock held on the table, say) is only logged at debug.
//! - **Answers and errors.** A row, or none, is the answer. So is an error from the server on
//!   a live connection (a lock timeout: 503 as through the pool, after one `busy_timeout`,
//!   not two). No answer within `patience` (`database.busy_timeout`, at least a second, plus
//!   a second: a database that froze or is far behind) is 503 and drops the connection (the
//!   query is not cancelled; the slot is free once the server has answered it or the
//!   connection died). A connection that is closed or closing (a FATAL error such as 57P01
//!   from `pg_terminate_backend`, class 08), a statement gone stale after a migration
//!   (SQLSTATE classes 0A, 26, 42) or a row that does not parse drops the connection and
//!   reads through the pool, which retries, prepares afresh and reports as for every other
//!   read. A committed revocation is seen at once: each query runs on its own, outside any
//!   transaction, at READ COMMITTED.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::sessions::{with_user_row, WITH_USER};
use crate::domain::{Session, User};
use crate::store::health::DbHealth;
use crate::store::{QuickRead, StoreError};

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
    patience: Duration,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// One connection's place: `occupied` from the start of an opening until that connection's
/// task ends (or the attempt to connect failed); `reader` while it takes queries.
#[derive(Default)]
struct Slot {
    reader: Mutex<Option<Arc<Reader>>>,
    occupied: AtomicBool,
    failed_at: Mutex<Option<Instant>>,
}

/// An open connection's client and its prepared `WITH_USER`.
struct Reader {
    client: Client,
    with_user: Statement,
}

/// Why an opening failed: connecting (a connection error), or setting up a connection that
/// was made (logged only).
enum OpenError {
    Connect(tokio_postgres::Error),
    Setup(tokio_postgres::Error),
}

impl QuickReads {
    /// `count` connections (none opened yet) with `config`; `settings` is the SQL each runs
    /// once open (its `lock_timeout` is `busy_timeout`); a read unanswered after
    /// `busy_timeout` (at least a second) plus a second gives up: the server's own lock
    /// timeout answers first.
    pub(super) fn new(
        config: tokio_postgres::Config,
        settings: String,
        health: Arc<DbHealth>,
        busy_timeout: Duration,
        count: u32,
    ) -> Arc<Self> {
        Arc::new(QuickReads {
            config,
            settings,
            health,
            patience: busy_timeout
                .max(Duration::from_secs(1))
                .saturating_add(Duration::from_secs(1)),
            slots: (0..count).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// `Store::session_with_user_async`: the next connection in turn reads, or `None` if it
    /// is not open (one is opened in the background) or there is no runtime to drive it.
    pub(super) fn session_with_user(
        self: &Arc<Self>,
        id: Uuid,
    ) -> Option<QuickRead<Option<(Session, User)>>> {
        if self.slots.is_empty() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let Some(reader) = self.slots[index].reader.lock().clone() else {
            self.open_in_background(index, &runtime);
            return None;
        };
        let this = self.clone();
        Some(Box::pin(async move {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            let query = reader.client.query_opt(&reader.with_user, &params);
            let (answer, keep) = match tokio::time::timeout(this.patience, query).await {
                Ok(Ok(row)) => match row.map(|r| with_user_row(&r)).transpose() {
                    Ok(found) => (Some(Ok(found)), true),
                    Err(e) => (this.aside(&e), false),
                },
                Ok(Err(e))
                    if reader.client.is_closed()
                        || ends_connection(&e)
                        || super::is_stale_statement(&e) =>
                {
                    (this.aside(&e), false)
                }
                Ok(Err(e)) => (Some(Err(super::map_err(e))), true),
                Err(_) => {
                    let waited = format!("no answer from the database in {:?}", this.patience);
                    tracing::debug!(%waited, "quick read: dropping its connection");
                    (Some(Err(StoreError::Unavailable(waited))), false)
                }
            };
            if !keep {
                this.close(index, &reader);
            }
            answer
        }))
    }

    /// A read that should go through the pool instead (see the module documentation).
    fn aside<T>(&self, e: &tokio_postgres::Error) -> Option<T> {
        tracing::debug!(error = %super::cause(e), "quick read failed; reading through the pool");
        None
    }

    /// Takes slot `index`'s connection out of service if it is still `reader` (another
    /// request may have replaced it already). The slot stays occupied until the connection
    /// has closed (see `open`); the next request through it then opens a new one.
    fn close(&self, index: usize, reader: &Arc<Reader>) {
        let mut current = self.slots[index].reader.lock();
        if current.as_ref().is_some_and(|r| Arc::ptr_eq(r, reader)) {
            *current = None;
        }
    }

    /// Opens slot `index`'s connection on the runtime, unless the slot holds one (open,
    /// opening or closing) or the last attempt failed less than `RETRY_AFTER` ago.
    fn open_in_background(self: &Arc<Self>, index: usize, runtime: &tokio::runtime::Handle) {
        let slot = &self.slots[index];
        if slot
            .failed_at
            .lock()
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
        {
            return;
        }
        if slot.occupied.swap(true, Ordering::AcqRel) {
            return;
        }
        let held = Occupied {
            reads: Arc::downgrade(self),
            index,
        };
        let this = self.clone();
        runtime.spawn(async move {
            match this.open(held).await {
                Ok(reader) => {
                    *this.slots[index].reader.lock() = Some(Arc::new(reader));
                    this.health.connected();
                }
                Err(OpenError::Connect(e)) => this.health.connection_failed(&super::cause(&e)),
                Err(OpenError::Setup(e)) => {
                    tracing::debug!(error = %super::cause(&e), "quick read: setting up a connection failed");
                }
            }
        });
    }

    /// Connects for the slot `held` occupies, drives the connection on the runtime until it
    /// closes (the slot is free when that task ends, or here if connecting fails), sets the
    /// session up and prepares `WITH_USER`. A failure marks the slot's `failed_at` while the
    /// slot is still occupied, so no other attempt starts without waiting `RETRY_AFTER`.
    async fn open(&self, held: Occupied) -> Result<Reader, OpenError> {
        let failed_at = &self.slots[held.index].failed_at;
        let failed = |e| {
            *failed_at.lock() = Some(Instant::now());
            e
        };
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| failed(OpenError::Connect(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %super::cause(&e), "quick-read connection closed");
            }
            drop(held);
        });
        let setup = async {
            client.batch_execute(&self.settings).await?;
            client.prepare(WITH_USER).await
        };
        let with_user = setup.await.map_err(|e| failed(OpenError::Setup(e)))?;
        *failed_at.lock() = None;
        Ok(Reader { client, with_user })
    }
}

/// A slot's claim on its one connection, from the start of an opening to the end of that
/// connection's task (or of a failed attempt to connect): frees the slot when dropped, however
/// the task ends. Holds the reads weakly, so a connection's task does not keep its own store
/// (and so itself) alive.
struct Occupied {
    reads: Weak<QuickReads>,
    index: usize,
}

impl Drop for Occupied {
    fn drop(&mut self) {
        if let Some(reads) = self.reads.upgrade() {
            reads.slots[self.index]
                .occupied
                .store(false, Ordering::Release);
        }
    }
}

/// An error after which the connection is gone or going: its server process ends (FATAL or
/// PANIC, e.g. 57P01 from `pg_terminate_backend` or a shutdown, sent to the oldest pending
/// query before the connection closes) or a connection exception (class 08).
fn ends_connection(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(db.severity(), "FATAL" | "PANIC"))
        || e.code().is_some_and(|code| code.code().starts_with("08"))
}

/// The quick-read connections for a pool of `pool_size`: one per `QUICK_READ_SHARE`.
pub(super) fn count_for(pool_size: u32) -> u32 {
    pool_size / QUICK_READ_SHARE
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
