//! Store layer: the SQLite writer with group commit.
//!
//! SQLite admits one writer at a time and most of a small write's cost is its commit (one WAL
//! frame per dirty page, written and checksummed). Writers of this process queue here; whoever
//! holds the writer connection next (the leader) runs every queued write in one `BEGIN
//! IMMEDIATE` transaction, each inside its own savepoint (a write that fails is rolled back
//! alone, exactly as if it had run by itself), commits once, and hands each writer its result.
//! Nothing is answered before the commit that makes it durable has succeeded; a failed commit
//! fails every write of the batch, none of which is then in the database.
//!
//! Waiting for the queue and then for other processes' writers counts against one
//! `busy_timeout`; past it the answer is `Unavailable` (503) and the write never runs.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use super::checkpoint::Checkpointer;
use super::map_err;
use crate::store::{StoreError, StoreResult};

/// The most writes committed together; a longer queue is drained in batches of this size.
const MAX_BATCH: usize = 256;

/// A queued write, type-erased so that writes of any result type share one queue.
trait Pending: Send {
    /// Runs the write (inside the batch's transaction, in its own savepoint); `true` when it
    /// succeeded and its changes are to be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Delivers the result once the batch's outcome is known: `commit_error` is the error
    /// that undid the whole batch, if any (then nothing of it is in the database).
    fn finish(self: Box<Self>, commit_error: Option<&StoreError>);
    /// Wakes the writer that queued this write to lead the next batch.
    fn lead(&self);
}

enum State<T> {
    Waiting,
    /// This writer's turn to lead: its write is at the head of the queue.
    Lead,
    Done(StoreResult<T>),
}

/// Where a writer waits for its write's result (or its turn to lead).
struct Slot<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

impl<T> Slot<T> {
    fn set(&self, state: State<T>) {
        *self.state.lock() = state;
        self.wake.notify_one();
    }
}

struct Op<T, F> {
    f: Option<F>,
    result: Option<StoreResult<T>>,
    slot: Arc<Slot<T>>,
}

impl<T, F> Pending for Op<T, F>
where
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A panicking write fails alone (its savepoint is rolled back); it must not unwind
        // through the leader, which holds every other writer's result.
        let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(result) => result.map_err(map_err),
            Err(_) => Err(StoreError::Other("the write panicked".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit_error: Option<&StoreError>) {
        self.slot
            .set(State::Done(match (self.result, commit_error) {
                (Some(Err(e)), _) => Err(e),
                (_, Some(e)) => Err(e.clone()),
                (Some(Ok(v)), None) => Ok(v),
                (None, None) => Err(StoreError::Other("the write did not run".into())),
            }));
    }

    fn lead(&self) {
        let mut state = self.slot.state.lock();
        if matches!(*state, State::Waiting) {
            *state = State::Lead;
            self.slot.wake.notify_one();
        }
    }
}

struct Queue {
    writes: VecDeque<(u64, Box<dyn Pending>)>,
    /// Whether some writer is leading (running batches, or about to).
    leading: bool,
}

pub(super) struct Writer {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    next_id: AtomicU64,
    busy_timeout: Duration,
    /// Checkpoints the WAL off the commit path (the writer connection never does).
    checkpointer: Option<Checkpointer>,
}

impl Writer {
    /// `conn` becomes the writer connection; with a `checkpointer`, its automatic checkpoints
    /// are switched off and left to the checkpointer's thread.
    pub(super) fn new(
        conn: Connection,
        busy_timeout: Duration,
        checkpointer: Option<Checkpointer>,
    ) -> Self {
        if checkpointer.is_some() {
            let _ = conn.execute_batch("PRAGMA wal_autocheckpoint = 0;");
        }
        Writer {
            checkpointer,
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue {
                writes: VecDeque::new(),
                leading: false,
            }),
            next_id: AtomicU64::new(0),
            busy_timeout,
        }
    }

    /// Runs `f` in a write transaction (possibly shared with other writes, each in its own
    /// savepoint) and returns its result once committed.
    ///
    /// The first writer to find no leader leads: it runs batches from the head of the queue
    /// until its own write is done, then hands the lead to the writer at the head of the
    /// queue, if any. Every other writer sleeps until its result (or the lead) is handed to it.
    pub(super) fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = Instant::now() + self.busy_timeout;
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Waiting),
            wake: Condvar::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let op = Op {
            f: Some(f),
            result: None,
            slot: Arc::clone(&slot),
        };
        let lead_now = {
            let mut queue = self.queue.lock();
            queue.writes.push_back((id, Box::new(op)));
            !std::mem::replace(&mut queue.leading, true)
        };
        if !lead_now {
            if let Some(result) = self.wait(id, &slot, deadline) {
                return result;
            }
        }
        self.lead(&slot);
        let state = std::mem::replace(&mut *slot.state.lock(), State::Waiting);
        match state {
            State::Done(result) => result,
            _ => Err(StoreError::Other("the write was not run".into())),
        }
    }

    /// Sleeps until the write is done (`Some(result)`) or it is this writer's turn to lead
    /// (`None`). Past `deadline`, a write still queued is withdrawn and fails as busy.
    fn wait<T>(&self, id: u64, slot: &Slot<T>, deadline: Instant) -> Option<StoreResult<T>> {
        let mut state = slot.state.lock();
        let mut timed_out = false;
        loop {
            match std::mem::replace(&mut *state, State::Waiting) {
                State::Done(result) => return Some(result),
                State::Lead => return None,
                State::Waiting => {}
            }
            if timed_out {
                // Taken by a leader and running now: its outcome comes within that leader's
                // own busy timeout.
                slot.wake.wait(&mut state);
                continue;
            }
            if !slot.wake.wait_until(&mut state, deadline).timed_out() {
                continue;
            }
            timed_out = true;
            // Lock order is queue, then slot (as the leader's hand-over takes them).
            drop(state);
            let mut queue = self.queue.lock();
            state = slot.state.lock();
            if matches!(*state, State::Waiting) {
                if let Some(pos) = queue.writes.iter().position(|(queued, _)| *queued == id) {
                    queue.writes.remove(pos);
                    return Some(Err(StoreError::Unavailable(
                        "database busy: timed out waiting for the write lock".into(),
                    )));
                }
            }
        }
    }

    /// Runs batches from the head of the queue until `mine` is done, then hands the lead on.
    fn lead<T>(&self, mine: &Slot<T>) {
        let conn = self.conn.lock();
        loop {
            let batch: Vec<Box<dyn Pending>> = {
                let mut queue = self.queue.lock();
                let n = queue.writes.len().min(MAX_BATCH);
                queue.writes.drain(..n).map(|(_, op)| op).collect()
            };
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            if run_batch(&conn, Instant::now() + self.busy_timeout, batch) {
                if let Some(checkpointer) = &self.checkpointer {
                    checkpointer.committed(n);
                }
            }
            if matches!(*mine.state.lock(), State::Done(_)) {
                break;
            }
        }
        drop(conn);
        let mut queue = self.queue.lock();
        match queue.writes.front() {
            Some((_, next)) => next.lead(),
            None => queue.leading = false,
        }
    }

    /// Runs `f` with the writer connection to itself, outside any transaction.
    /// `None` when the writers did not let go of it within the busy timeout.
    pub(super) fn exclusive<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> Option<T> {
        let mut conn = self.conn.try_lock_for(self.busy_timeout)?;
        Some(f(&mut conn))
    }

    /// After the last write: stops background checkpoints and folds the WAL back into the
    /// main file, so that the database is one file at rest.
    pub(super) fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop();
        }
        self.exclusive(|conn| {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        });
    }
}

/// One transaction for `batch`: each write in a savepoint, one commit, every result delivered.
/// `true` when the batch was committed.
fn run_batch(conn: &Connection, deadline: Instant, batch: Vec<Box<dyn Pending>>) -> bool {
    let begin = || -> rusqlite::Result<()> {
        if !conn.is_autocommit() {
            // Never expected (every batch ends in COMMIT or ROLLBACK); defensive.
            conn.execute_batch("ROLLBACK")?;
        }
        conn.busy_timeout(deadline.saturating_duration_since(Instant::now()))?;
        conn.execute_batch("BEGIN IMMEDIATE")
    };
    let mut broken = begin().err().map(map_err);
    let mut done: Vec<Box<dyn Pending>> = Vec::with_capacity(batch.len());
    for mut op in batch {
        if broken.is_none() {
            broken = run_one(conn, op.as_mut()).err();
        }
        done.push(op);
    }
    let commit_error = match broken {
        Some(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Some(e)
        }
        None => conn.execute_batch("COMMIT").err().map(|e| {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            map_err(e)
        }),
    };
    let committed = commit_error.is_none();
    for op in done {
        op.finish(commit_error.as_ref());
    }
    committed
}

/// Runs one write in its own savepoint, undoing it alone when it fails. An error here means
/// the transaction itself can no longer be trusted: the batch is abandoned.
fn run_one(conn: &Connection, op: &mut dyn Pending) -> Result<(), StoreError> {
    conn.execute_batch("SAVEPOINT authd_write")
        .map_err(map_err)?;
    let ok = op.run(conn);
    if conn.is_autocommit() {
        // SQLite rolled the whole transaction back by itself (disk full, I/O error): what ran
        // before is gone, and nothing more may run outside a transaction.
        return Err(StoreError::Unavailable(
            "the write transaction was rolled back by the database".into(),
        ));
    }
    let close = if ok {
        "RELEASE authd_write"
    } else {
        "ROLLBACK TO authd_write; RELEASE authd_write"
    };
    conn.execute_batch(close).map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn writer(dir: &tempfile::TempDir, busy: Duration) -> Arc<Writer> {
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY);")
            .unwrap();
        Arc::new(Writer::new(conn, busy, None))
    }

    fn insert(keys: &'static [&'static str]) -> impl FnOnce(&Connection) -> rusqlite::Result<()> {
        move |c| {
            for k in keys {
                c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
            }
            Ok(())
        }
    }

    fn keys(w: &Writer) -> Vec<String> {
        w.exclusive(|c| {
            c.prepare("SELECT k FROM t ORDER BY k")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<Vec<String>>>()
                .unwrap()
        })
        .unwrap()
    }

    fn queued(w: &Writer) -> usize {
        w.queue.lock().writes.len()
    }

    /// Holds the connection until every write is queued, then lets them run as one batch.
    fn queued_batch(w: &Arc<Writer>, writes: &[&'static [&'static str]]) -> Vec<StoreResult<()>> {
        let held = w.conn.lock();
        let threads: Vec<_> = writes
            .iter()
            .enumerate()
            .map(|(i, &ks)| {
                // In order: each thread starts once the previous write is queued.
                let mine = Arc::clone(w);
                let t = std::thread::spawn(move || mine.write(insert(ks)));
                while queued(w) < i + 1 {
                    std::thread::yield_now();
                }
                t
            })
            .collect();
        drop(held);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn a_failed_write_in_a_batch_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir, Duration::from_secs(5));
        // The second write inserts "b" and then fails on a duplicate "a": "b" must not stay.
        let results = queued_batch(&w, &[&["a"], &["b", "a"], &["c"]]);
        assert!(results[0].is_ok());
        assert!(
            matches!(results[1], Err(StoreError::Conflict(_))),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok());
        assert_eq!(keys(&w), ["a", "c"]);
    }

    #[test]
    fn a_write_that_times_out_in_the_queue_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir, Duration::from_millis(300));
        let held = w.conn.lock();
        // The first writer leads and waits for the connection; the second queues behind it
        // and gives up after the busy timeout.
        let first = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.write(insert(&["first"])))
        };
        while queued(&w) < 1 {
            std::thread::yield_now();
        }
        let late = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.write(insert(&["late"])))
        };
        let result = late.join().unwrap();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(queued(&w), 1, "the timed-out write was withdrawn");
        drop(held);
        first.join().unwrap().unwrap();
        w.write(insert(&["next"])).unwrap();
        assert_eq!(keys(&w), ["first", "next"]);
    }

    #[test]
    fn a_panicking_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir, Duration::from_secs(5));
        let panicked = w.write(|c| -> rusqlite::Result<()> {
            c.execute("INSERT INTO t (k) VALUES ('p')", [])?;
            panic!("boom")
        });
        assert!(panicked.is_err());
        w.write(insert(&["after"])).unwrap();
        assert_eq!(keys(&w), ["after"]);
    }

    #[test]
    fn concurrent_writers_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir, Duration::from_secs(5));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let k = format!("{t}-{i}");
                        w.write(move |c| {
                            c.execute("INSERT INTO t (k) VALUES (?1)", [k]).map(|_| ())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(keys(&w).len(), 16 * 50);
    }
}
