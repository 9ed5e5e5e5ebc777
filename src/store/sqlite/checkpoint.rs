//! Store layer: WAL checkpoints in the background.
//!
//! By default SQLite checkpoints inside the commit that crosses 1000 WAL pages: that commit
//! copies the pages back into the database file and syncs both files while every other writer
//! waits behind it. The writer connection has automatic checkpoints switched off; this thread
//! runs `PASSIVE` checkpoints (which never block writers or readers) on its own connection once
//! enough writes have been committed, or at least every `IDLE_PERIOD` after any write.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

/// Committed writes that trigger a checkpoint (a few thousand WAL pages).
const WRITES_PER_CHECKPOINT: u64 = 256;
/// The longest a committed write waits to be checkpointed.
const IDLE_PERIOD: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    written: u64,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread on `conn` (a connection of its own).
    pub(super) fn start(conn: Connection) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("authd-checkpoint".into())
                .spawn(move || run(&shared, &conn))?
        };
        Ok(Checkpointer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Counts `n` committed writes.
    pub(super) fn committed(&self, n: usize) {
        let mut state = self.shared.state.lock();
        state.written += n as u64;
        if state.written >= WRITES_PER_CHECKPOINT {
            self.shared.wake.notify_one();
        }
    }

    /// Stops the thread after its current checkpoint, if any.
    pub(super) fn stop(&self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, conn: &Connection) {
    loop {
        {
            let mut state = shared.state.lock();
            while !state.stop && state.written < WRITES_PER_CHECKPOINT {
                if shared.wake.wait_for(&mut state, IDLE_PERIOD).timed_out() && state.written > 0 {
                    break;
                }
            }
            if state.stop {
                return;
            }
            state.written = 0;
        }
        // Busy (another process checkpointing) or read-only: the next round tries again.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint failed");
        }
    }
}
