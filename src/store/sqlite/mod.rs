//! Store layer: the SQLite implementation of `Store` (rusqlite + r2d2), WAL mode,
//! `BEGIN IMMEDIATE` for every read-then-write, migrations embedded with refinery.

mod accounts;
mod checkpoint;
mod keys;
mod limits;
mod migrations;
mod passwords;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};
use uuid::Uuid;

use super::health::PoolReporter;
use super::rotation::{self, Presented, Step};
use super::{AuditOf, ImportOutcome, NewSession, Store, StoreError, StoreOptions, StoreResult};
use crate::domain::keys::{KeyRevokeOutcome, StoredKey};
use crate::domain::limits::{Admission, SlotGrant, SlotRequest};
use crate::domain::time::Millis;
use crate::domain::{
    Account, AuditEvent, AuditQuery, CleanupCounts, FailureCounter, MigrationEntry,
    NewRefreshToken, NewUser, Role, RotateOutcome, Rotation, Session, User, UserCredentials,
    UserFilter,
};

type Conn = PooledConnection<SqliteConnectionManager>;

/// SQLite behind an r2d2 pool for reads, and one dedicated connection for writes. Every
/// connection is set up the same way (see `setup`).
///
/// SQLite admits one writer at a time, and a connection that finds the write lock taken
/// polls for it, sleeping between tries (its busy handler). Writers of this process therefore
/// queue in `writer` instead, which commits them in groups (see `writer.rs`); only the group's
/// leader meets other processes' writers, through `busy_timeout`.
pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
    writer: writer::Writer,
    /// The database file's directory: `migrate` locks it (see `migration_lock`).
    dir: PathBuf,
}

/// Prepared statements kept per connection (rusqlite's default, 16, is fewer than the
/// statements authd uses, and an evicted statement is compiled again on its next use).
const STATEMENT_CACHE: usize = 64;

/// The writer connection's page cache (SQLite's default is 2 MiB per connection).
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// Connection setup in one place: WAL, foreign keys, busy timeout on every pooled connection.
fn setup(conn: &mut Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA foreign_keys = ON;
         PRAGMA synchronous = NORMAL;",
    )
}

impl SqliteStore {
    pub fn open(path: &str, options: &StoreOptions) -> StoreResult<Self> {
        if path.is_empty() {
            return Err(StoreError::Other("sqlite URL has no path".into()));
        }
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            if !dir.exists() {
                create_private_dir(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        create_private_file(Path::new(path))
            .map_err(|e| StoreError::Unavailable(format!("cannot create {path}: {e}")))?;
        let busy = options.busy_timeout;
        // One direct connection first, so a bad path or file fails at once with its cause
        // instead of after the pool's connection timeout.
        let mut probe = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
        setup(&mut probe, busy)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
        probe.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // The writer touches every table and index; its pages stay cached between writes.
        probe
            .execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB};"))
            .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
        let checkpointer = Connection::open(path)
            .and_then(|mut c| setup(&mut c, busy).map(|()| c))
            .ok()
            .and_then(|c| checkpoint::Checkpointer::start(c).ok());
        let manager = SqliteConnectionManager::file(path).with_init(move |c| setup(c, busy));
        let pool = Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .connection_timeout(busy + Duration::from_secs(5))
            .error_handler(Box::new(PoolReporter(options.health.clone())))
            .event_handler(Box::new(PoolReporter(options.health.clone())))
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
        let dir = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(SqliteStore {
            pool,
            writer: writer::Writer::new(probe, busy, checkpointer),
            dir,
        })
    }

    fn conn(&self) -> StoreResult<Conn> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer connection (shared with
    /// other writes that queued meanwhile, each in its own savepoint): the write lock is taken
    /// up front, so a read-then-write can never be interleaved with another writer.
    fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(f)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.conn()?;
        f(&conn).map_err(map_err)
    }
}

#[cfg(unix)]
/// Serialises `migrate` between processes (and stores) on one database: refinery takes no
/// lock, so two instances starting together on a new database would both apply V1 and one
/// would fail. An exclusive `flock` on the database's directory, held while migrating,
/// makes the second wait and then find nothing pending (the SQLite twin of PostgreSQL's
/// advisory lock). Not a lock on the database file itself: closing any descriptor of that
/// file drops every POSIX lock SQLite holds on it in this process. Best effort: without the
/// lock (an unreadable directory), migrating goes on as before.
fn migration_lock(dir: &Path) -> Option<std::fs::File> {
    let handle = std::fs::File::open(dir).ok()?;
    handle.lock().ok()?;
    Some(handle)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the database file readable by its owner only (it holds password hashes); SQLite
/// gives its -wal and -shm files the same mode.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Converts rusqlite's errors into the backend-neutral `StoreError`.
fn map_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        return match f.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase => StoreError::Unavailable(e.to_string()),
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        };
    }
    StoreError::Other(e.to_string())
}

/// A TEXT column parsed into `T` (a UUID, a role); a bad value is a conversion error.
fn parsed_col<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let s: String = row.get(idx)?;
    parse_text(idx, &s)
}

fn parse_text<T>(idx: usize, s: &str) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    s.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

fn uuid_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Uuid> {
    parsed_col(row, idx)
}

fn opt_uuid_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Uuid>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| parse_text(idx, &s)).transpose()
}

const USER_COLS: &str = "id, email, name, role, disabled, created_at, last_login_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    user_at(row, 0)
}

/// A user from the `USER_COLS` columns starting at column `at`.
fn user_at(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: uuid_col(row, at)?,
        email: row.get(at + 1)?,
        name: row.get(at + 2)?,
        role: parsed_col(row, at + 3)?,
        disabled: row.get::<_, i64>(at + 4)? != 0,
        created_at: row.get(at + 5)?,
        last_login_at: row.get(at + 6)?,
    })
}

const SESSION_COLS: &str =
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip, device_info";

fn session_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: uuid_col(row, 0)?,
        user_id: uuid_col(row, 1)?,
        created_at: row.get(2)?,
        last_used_at: row.get(3)?,
        expires_at: row.get(4)?,
        revoked_at: row.get(5)?,
        user_agent: row.get(6)?,
        ip: row.get(7)?,
        device_info: row.get(8)?,
    })
}

fn failure_row(row: &Row<'_>) -> rusqlite::Result<FailureCounter> {
    Ok(FailureCounter {
        count: row.get(0)?,
        window_start: row.get(1)?,
        locked_until: row.get(2)?,
    })
}

impl Store for SqliteStore {
    fn migrate(&self) -> StoreResult<Vec<MigrationEntry>> {
        let _lock = migration_lock(&self.dir);
        let mut conn = self.conn()?;
        migrations::apply(&mut conn)
    }

    fn migration_status(&self) -> StoreResult<Vec<MigrationEntry>> {
        let mut conn = self.conn()?;
        migrations::status(&mut conn)
    }

    fn check_schema(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        migrations::check(&mut conn)
    }

    fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .map(|_| ())
    }

    fn close(&self) {
        self.writer.close();
    }

    fn insert_user(&self, u: &NewUser) -> StoreResult<User> {
        let row = u.clone();
        self.write(move |tx| {
            let u = &row;
            tx.execute(
                "INSERT INTO users (id, email, name, role, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    u.id.to_string(),
                    u.email,
                    u.name,
                    u.role.as_str(),
                    u.password_hash,
                    u.created_at
                ],
            )
        })?;
        Ok(User {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            disabled: false,
            created_at: u.created_at,
            last_login_at: None,
        })
    }

    fn user_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1"
            ))?
            .query_row([email], |r| {
                Ok(UserCredentials {
                    user: user_row(r)?,
                    password_hash: r.get(7)?,
                })
            })
            .optional()
        })
    }

    fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
                .query_row([id.to_string()], user_row)
                .optional()
        })
    }

    fn record_login(&self, user_id: Uuid, at: Millis) -> StoreResult<Option<User>> {
        self.write(move |tx| {
            tx.prepare_cached(&format!(
                "UPDATE users SET last_login_at = ?2 WHERE id = ?1 RETURNING {USER_COLS}"
            ))?
            .query_row(params![user_id.to_string(), at], user_row)
            .optional()
        })
    }

    fn upgrade_password_hash(
        &self,
        user_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool> {
        passwords::upgrade_password_hash(self, user_id, old_hash, new_hash)
    }

    fn import_users(
        &self,
        users: Vec<NewUser>,
        skip_existing: bool,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome> {
        passwords::import_users(self, users, skip_existing, dry_run)
    }

    fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        let new = new.clone();
        self.write(move |tx| {
            let (s, t) = (&new.session, &new.token);
            tx.prepare_cached(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at,
                                       user_agent, ip, device_info)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                s.id.to_string(),
                s.user_id.to_string(),
                s.created_at,
                s.last_used_at,
                s.expires_at,
                s.user_agent,
                s.ip,
                s.device_info
            ])?;
            insert_token(tx, t, false)
        })
    }

    fn rotate_refresh_token(&self, r: Rotation, audit: AuditOf) -> StoreResult<RotateOutcome> {
        self.write(move |tx| {
            let outcome = rotate(tx, &r)?;
            insert_audit(tx, &audit(&outcome))?;
            Ok(outcome)
        })
    }

    fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
            ))?
            .query_row([id.to_string()], session_row)
            .optional()
        })
    }

    fn session_with_user(&self, id: Uuid) -> StoreResult<Option<(Session, User)>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
                        s.user_agent, s.ip, s.device_info,
                        u.id, u.email, u.name, u.role, u.disabled, u.created_at, u.last_login_at
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id = ?1",
            )?
            .query_row([id.to_string()], |r| {
                let session = session_row(r)?;
                let user = user_at(r, 9)?;
                Ok((session, user))
            })
            .optional()
        })
    }

    fn session_by_token(
        &self,
        session_hint: Uuid,
        token_hash: &str,
    ) -> StoreResult<Option<Session>> {
        self.read(|c| find_token(c, &SESSION_OF_TOKEN, session_hint, token_hash, session_row))
    }

    fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                 ORDER BY created_at DESC"
            ))?
            .query_map(params![user_id.to_string(), now], session_row)?
            .collect()
        })
    }

    fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: Millis,
        reason: &str,
    ) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?4
                     WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
                )?
                .execute(params![
                    session_id.to_string(),
                    user_id.to_string(),
                    now,
                    reason
                ])?;
            Ok(n > 0)
        })
    }

    fn revoke_user_sessions(&self, user_id: Uuid, now: Millis, reason: &str) -> StoreResult<usize> {
        let reason = reason.to_owned();
        self.write(move |tx| revoke_where(tx, "user_id = ?1", &user_id.to_string(), now, &reason))
    }

    fn revoke_all_sessions(&self, now: Millis, reason: &str) -> StoreResult<usize> {
        let reason = reason.to_owned();
        self.write(move |tx| revoke_where(tx, "?1 = ?1", "", now, &reason))
    }

    fn count_live_sessions(&self, now: Millis) -> StoreResult<u64> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > ?1",
            )?
            .query_row([now], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
        })
    }

    fn purge(
        &self,
        cutoff: Millis,
        now: Millis,
        failure_window: Millis,
        dry_run: bool,
    ) -> StoreResult<CleanupCounts> {
        // Tokens go with their session, and only with a dead one: a rotated-away token of a
        // live session is what reuse detection finds (deleting it would turn a replayed stolen
        // token from TOKEN_REVOKED, session revoked, into a harmless TOKEN_INVALID).
        const DEAD_SESSIONS: &str = "FROM sessions WHERE revoked_at < ?1 OR expires_at < ?1";
        const DEAD_TOKENS: &str = "FROM refresh_tokens WHERE session_id IN
             (SELECT id FROM sessions WHERE revoked_at < ?1 OR expires_at < ?1)";
        // A counter goes once its window and its lock are over: deleting it earlier would
        // reset a running failed-login budget or lift a lockout (held-slot rows alike).
        const STALE_FAILURES: &str = "FROM login_failures WHERE window_start <= ?1
             AND (locked_until IS NULL OR locked_until <= ?2)";
        let window_ended_before = now - failure_window;
        self.write(move |tx| {
            let count = |what: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
                tx.query_row(&format!("SELECT COUNT(*) {what}"), p, |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
            };
            let counts = CleanupCounts {
                refresh_tokens: count(DEAD_TOKENS, &[&cutoff])?,
                sessions: count(DEAD_SESSIONS, &[&cutoff])?,
                login_failures: count(STALE_FAILURES, &[&window_ended_before, &now])?,
                stopped_early: false,
            };
            if !dry_run {
                tx.execute(&format!("DELETE {DEAD_TOKENS}"), [cutoff])?;
                tx.execute(&format!("DELETE {DEAD_SESSIONS}"), [cutoff])?;
                tx.execute(
                    &format!("DELETE {STALE_FAILURES}"),
                    [window_ended_before, now],
                )?;
            }
            Ok(counts)
        })
    }

    fn record_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let e = e.clone();
        self.write(move |tx| insert_audit(tx, &e))
    }

    fn audit_events(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT at, event, user_id, email, ip, user_agent, outcome, reason, actor
                 FROM audit_events
                 WHERE (?1 IS NULL OR email = ?1 OR user_id = ?5)
                   AND (?2 IS NULL OR event = ?2)
                   AND (?3 IS NULL OR at >= ?3)
                 ORDER BY id DESC
                 LIMIT ?4",
            )?
            .query_map(
                params![
                    q.email,
                    q.event,
                    q.since,
                    q.limit,
                    q.user_id.map(|u| u.to_string())
                ],
                |r| {
                    Ok(AuditEvent {
                        at: r.get(0)?,
                        event: r.get(1)?,
                        user_id: opt_uuid_col(r, 2)?,
                        email: r.get(3)?,
                        ip: r.get(4)?,
                        user_agent: r.get(5)?,
                        outcome: r.get(6)?,
                        reason: r.get(7)?,
                        actor: r.get(8)?,
                    })
                },
            )?
            .collect()
        })
    }

    fn failure_counter(&self, key: &str) -> StoreResult<Option<FailureCounter>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT count, window_start, locked_until FROM login_failures WHERE key = ?1",
            )?
            .query_row([key], failure_row)
            .optional()
        })
    }

    fn record_failure(
        &self,
        key: &str,
        now: Millis,
        window_start_after: Millis,
        lock: Option<(u32, Millis)>,
    ) -> StoreResult<FailureCounter> {
        let (threshold, lock_until) = match lock {
            Some((t, until)) => (Some(t), Some(until)),
            None => (None, None),
        };
        let key = key.to_owned();
        self.write(move |tx| {
            let key = key.as_str();
            tx.prepare_cached(
                "INSERT INTO login_failures (key, count, window_start, locked_until)
                 VALUES (?1, 1, ?2, NULL)
                 ON CONFLICT (key) DO UPDATE SET
                   count = CASE WHEN window_start < ?3 THEN 1 ELSE count + 1 END,
                   window_start = CASE WHEN window_start < ?3 THEN ?2 ELSE window_start END,
                   locked_until = CASE WHEN locked_until < ?2 THEN NULL ELSE locked_until END",
            )?
            .execute(params![key, now, window_start_after])?;
            tx.prepare_cached(
                "UPDATE login_failures SET locked_until = ?3, count = 0, window_start = ?4
                 WHERE key = ?1 AND ?2 IS NOT NULL AND count >= ?2",
            )?
            .execute(params![key, threshold, lock_until, now])?;
            tx.prepare_cached(
                "SELECT count, window_start, locked_until FROM login_failures WHERE key = ?1",
            )?
            .query_row([key], failure_row)
        })
    }

    fn clear_failures(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM login_failures WHERE key = ?1")?
                .execute([key])
                .map(|_| ())
        })
    }

    fn reserve_login_slots(&self, request: &SlotRequest) -> StoreResult<Admission> {
        let request = request.clone();
        self.write(move |tx| limits::reserve(tx, &request))
    }

    fn settle_login_slots(&self, grant: &SlotGrant, failed: bool, now: Millis) -> StoreResult<()> {
        let grant = grant.clone();
        self.write(move |tx| limits::settle(tx, &grant, failed, now))
    }

    fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read(keys::all)
    }

    fn key_set_version(&self) -> StoreResult<i64> {
        self.read(keys::generation)
    }

    fn insert_signing_key_if_none_active(&self, key: &StoredKey) -> StoreResult<bool> {
        let key = key.clone();
        self.write(move |tx| keys::insert_if_none_active(tx, &key))
    }

    fn rotate_signing_key(
        &self,
        key: &StoredKey,
        previous_retires_at: Millis,
    ) -> StoreResult<Option<String>> {
        let key = key.clone();
        self.write(move |tx| keys::rotate(tx, &key, previous_retires_at))
    }

    fn revoke_signing_key(
        &self,
        kid: &str,
        now: Millis,
        replacement: Option<&StoredKey>,
    ) -> StoreResult<KeyRevokeOutcome> {
        let (kid, replacement) = (kid.to_owned(), replacement.cloned());
        self.write(move |tx| keys::revoke(tx, &kid, now, replacement.as_ref()))
    }

    fn list_users(&self, filter: &UserFilter, now: Millis) -> StoreResult<Vec<Account>> {
        self.read(|c| accounts::list_users(c, filter, now))
    }

    fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
    ) -> StoreResult<Option<(User, usize)>> {
        self.write(move |tx| accounts::set_disabled(tx, user_id, disabled, now))
    }

    fn set_role(
        &self,
        user_id: Uuid,
        role: Role,
        now: Millis,
    ) -> StoreResult<Option<(User, usize)>> {
        self.write(move |tx| accounts::set_role(tx, user_id, role, now))
    }

    fn delete_user(&self, user_id: Uuid, now: Millis) -> StoreResult<Option<(User, usize)>> {
        self.write(move |tx| accounts::delete_user(tx, user_id, now))
    }

    fn set_password_hash(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep_session: Option<Uuid>,
        now: Millis,
    ) -> StoreResult<usize> {
        let hash = password_hash.to_owned();
        self.write(move |tx| accounts::set_password_hash(tx, user_id, &hash, keep_session, now))
    }
}

/// One way to find a presented refresh token: by the session it names and its hash, or,
/// failing that, by hash alone among legacy tokens (see migration V4). Both statements
/// select the same columns, joined with whatever the caller needs.
struct TokenLookup {
    keyed: &'static str,
    legacy: &'static str,
}

/// A `TokenLookup` from one `SELECT ... FROM refresh_tokens t ...` (parameters: ?1 the
/// session hint, ?2 the hash).
macro_rules! token_lookup {
    ($select:literal) => {
        TokenLookup {
            keyed: concat!($select, " WHERE t.session_id = ?1 AND t.token_hash = ?2"),
            legacy: concat!($select, " WHERE t.token_hash = ?2 AND t.legacy = 1"),
        }
    };
}

/// The session a token belongs to (logout).
const SESSION_OF_TOKEN: TokenLookup = token_lookup!(
    "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
            s.user_agent, s.ip, s.device_info
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
);

/// Everything a rotation decides on, in one statement.
const TOKEN_TO_ROTATE: TokenLookup = token_lookup!(
    "SELECT t.session_id, t.expires_at, t.rotated_at, t.legacy,
            s.user_id, s.revoked_at, u.role, u.disabled
     FROM refresh_tokens t
     JOIN sessions s ON s.id = t.session_id
     JOIN users u ON u.id = s.user_id"
);

fn find_token<T>(
    c: &Connection,
    lookup: &TokenLookup,
    session_hint: Uuid,
    hash: &str,
    row: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let hint = session_hint.to_string();
    let keyed = c
        .prepare_cached(lookup.keyed)?
        .query_row(params![hint, hash], &row)
        .optional()?;
    if keyed.is_some() {
        return Ok(keyed);
    }
    c.prepare_cached(lookup.legacy)?
        .query_row(params![hint, hash], row)
        .optional()
}

/// The rotation itself (see `Store::rotate_refresh_token`), inside the caller's transaction:
/// find the token, let `rotation::decide`, write what it says.
fn rotate(tx: &Connection, r: &Rotation) -> rusqlite::Result<RotateOutcome> {
    let found = find_token(
        tx,
        &TOKEN_TO_ROTATE,
        r.presented_session,
        &r.presented_hash,
        |row| {
            Ok(Presented {
                session_id: uuid_col(row, 0)?,
                expires_at: row.get(1)?,
                rotated_at: row.get(2)?,
                legacy: row.get::<_, Option<i64>>(3)?.is_some_and(|l| l != 0),
                user_id: uuid_col(row, 4)?,
                revoked_at: row.get(5)?,
                role: parsed_col(row, 6)?,
                disabled: row.get::<_, i64>(7)? != 0,
            })
        },
    )?;
    let (session_id, mark_rotated, legacy, outcome) = match rotation::decide(found.as_ref(), r) {
        Step::Refuse(outcome) => return Ok(outcome),
        Step::RevokeSession {
            session_id,
            outcome,
        } => {
            revoke_where(tx, "id = ?1", &session_id.to_string(), r.now, "reuse")?;
            return Ok(outcome);
        }
        Step::Rotate {
            session_id,
            mark_rotated,
            legacy,
            outcome,
        } => (session_id, mark_rotated, legacy, outcome),
    };
    if mark_rotated {
        tx.prepare_cached(
            "UPDATE refresh_tokens SET rotated_at = ?3 WHERE session_id = ?1 AND token_hash = ?2",
        )?
        .execute(params![session_id.to_string(), r.presented_hash, r.now])?;
    }
    // The replacement names the same session as the presented token: a legacy chain stays
    // findable by hash.
    let new = NewRefreshToken {
        hash: r.replacement_hash.clone(),
        session_id,
        created_at: r.now,
        expires_at: r.expires_at,
    };
    insert_token(tx, &new, legacy)?;
    tx.prepare_cached(
        "UPDATE sessions SET last_used_at = ?2, expires_at = MAX(expires_at, ?3) WHERE id = ?1",
    )?
    .execute(params![session_id.to_string(), r.now, r.expires_at])?;
    Ok(outcome)
}

fn insert_audit(tx: &Connection, e: &AuditEvent) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit_events (at, event, user_id, email, ip, user_agent, outcome, reason,
                                   actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.at,
        e.event,
        e.user_id.map(|u| u.to_string()),
        e.email,
        e.ip,
        e.user_agent,
        e.outcome,
        e.reason,
        e.actor
    ])
    .map(|_| ())
}

fn insert_token(tx: &Connection, t: &NewRefreshToken, legacy: bool) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO refresh_tokens (session_id, token_hash, created_at, expires_at, legacy)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        t.session_id.to_string(),
        t.hash,
        t.created_at,
        t.expires_at,
        legacy.then_some(1)
    ])?;
    Ok(())
}

/// Revokes the live sessions matching `filter` (which binds `?1`); returns how many.
fn revoke_where(
    tx: &Connection,
    filter: &str,
    arg: &str,
    now: Millis,
    reason: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        &format!(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3
             WHERE {filter} AND revoked_at IS NULL AND expires_at > ?2"
        ),
        params![arg, now, reason],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::refresh::{self, RefreshTokens};
    use crate::domain::Role;

    fn rotation(
        presented_session: Uuid,
        presented: &str,
        replacement: &str,
        now: Millis,
    ) -> Rotation {
        Rotation {
            presented_session,
            presented_hash: refresh::hash(presented),
            replacement_hash: refresh::hash(replacement),
            now,
            expires_at: now + 3_600_000,
            reuse_grace: 0,
        }
    }

    /// `.cargo/config.toml` reached the bundled SQLite's build: no shared page cache behind a
    /// global mutex, no allocation statistics.
    #[test]
    fn sqlite_is_built_with_the_projects_flags() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            options.iter().all(|o| o != "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
    }

    /// Rotates `from` into `to` as the service would, with `hint` as the presented session.
    fn rotate_as(
        store: &SqliteStore,
        hint: Uuid,
        from: &str,
        to: &str,
        now: Millis,
    ) -> RotateOutcome {
        store
            .rotate_refresh_token(rotation(hint, from, to, now), audit())
            .unwrap()
    }

    fn open(path: &Path) -> SqliteStore {
        let options = StoreOptions {
            pool_size: 2,
            busy_timeout: Duration::from_secs(5),
            health: crate::store::health::DbHealth::uncounted(),
        };
        SqliteStore::open(path.to_str().unwrap(), &options).unwrap()
    }

    #[test]
    fn stores_migrating_one_new_database_together_all_succeed() {
        // Without the migration lock, two of these apply V1 at once and one fails.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    let store = open(&path);
                    start.wait();
                    store.migrate().map(|applied| applied.len())
                })
            })
            .collect();
        let applied: Vec<usize> = racers
            .into_iter()
            .map(|r| r.join().unwrap().expect("every migrate succeeds"))
            .collect();
        // Exactly one of them applied the migrations; the others found nothing pending.
        assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
        open(&path).check_schema().unwrap();
    }

    fn audit() -> AuditOf {
        Box::new(|_| AuditEvent {
            at: 0,
            event: "refresh".into(),
            user_id: None,
            email: None,
            ip: None,
            user_agent: None,
            outcome: "success".into(),
            reason: None,
            actor: None,
        })
    }

    /// Tokens issued before migration V4 carry no session id: after the upgrade they still
    /// rotate (so do their successors), log out, and are caught when reused.
    #[test]
    fn tokens_issued_before_v4_keep_working_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authd.db");
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        // An authd before V4: the token's body is random, its row keyed by hash.
        let keys = RefreshTokens::new(vec![9; 32]);
        let legacy_token = {
            let (token, _) = keys.issue(Uuid::new_v4());
            token
        };
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations::apply_up_to(&mut conn, 3).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO users (id, email, role, password_hash, created_at)
                     VALUES ('{user}', 'old@example.com', 'user', 'x', 0);
                 INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at)
                     VALUES ('{session}', '{user}', 0, 0, 9999999999999);
                 INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
                     VALUES ('{}', '{session}', 0, 9999999999999);",
                refresh::hash(&legacy_token)
            ))
            .unwrap();
        }
        let store = open(&path);
        let applied = store.migrate().unwrap();
        assert_eq!(applied.first().map(|m| m.version), Some(4));

        // What the service does: the hint is whatever the token's first 16 bytes are.
        let hint = keys.check(&legacy_token).unwrap().session;
        assert_ne!(hint, session);
        let (second, _) = keys.issue(hint);
        let outcome = rotate_as(&store, hint, &legacy_token, &second, 1_000);
        assert!(
            matches!(outcome, RotateOutcome::Rotated { session_id, .. } if session_id == session),
            "{outcome:?}"
        );
        // Its successor carries the same stale hint, and is found all the same.
        let (third, _) = keys.issue(hint);
        let outcome = rotate_as(&store, hint, &second, &third, 2_000);
        assert!(
            matches!(outcome, RotateOutcome::Rotated { .. }),
            "{outcome:?}"
        );
        let found = store
            .session_by_token(hint, &refresh::hash(&third))
            .unwrap()
            .map(|s| s.id);
        assert_eq!(found, Some(session));
        // The first token again: reuse, and the session is revoked.
        let (fourth, _) = keys.issue(hint);
        let outcome = rotate_as(&store, hint, &legacy_token, &fourth, 3_000);
        assert!(
            matches!(outcome, RotateOutcome::Reused { .. }),
            "{outcome:?}"
        );
        assert!(store
            .session(session)
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
    }

    /// A token of one session never rotates as another session's, whatever its hint says.
    #[test]
    fn a_hint_naming_another_session_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authd.db");
        let store = open(&path);
        store.migrate().unwrap();
        let keys = RefreshTokens::new(vec![9; 32]);
        let user = store
            .insert_user(&NewUser {
                id: Uuid::new_v4(),
                email: "new@example.com".into(),
                name: None,
                role: Role::User,
                password_hash: "x".into(),
                created_at: 0,
            })
            .unwrap();
        let session = Uuid::new_v4();
        let (token, hash) = keys.issue(session);
        store
            .create_session(&NewSession {
                session: Session {
                    id: session,
                    user_id: user.id,
                    created_at: 0,
                    last_used_at: 0,
                    expires_at: 9_999_999_999_999,
                    revoked_at: None,
                    user_agent: None,
                    ip: None,
                    device_info: None,
                },
                token: NewRefreshToken {
                    hash,
                    session_id: session,
                    created_at: 0,
                    expires_at: 9_999_999_999_999,
                },
            })
            .unwrap();
        let (next, _) = keys.issue(session);
        let wrong = Uuid::new_v4();
        let outcome = rotate_as(&store, wrong, &token, &next, 1_000);
        assert_eq!(outcome, RotateOutcome::Unknown);
        let outcome = rotate_as(&store, session, &token, &next, 1_000);
        assert!(
            matches!(outcome, RotateOutcome::Rotated { .. }),
            "{outcome:?}"
        );
    }
}
