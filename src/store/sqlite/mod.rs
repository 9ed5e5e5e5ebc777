//! Store layer: the SQLite implementation of `Store` (rusqlite + r2d2), WAL mode,
//! `BEGIN IMMEDIATE` for every read-then-write, migrations embedded with refinery.
//! The files mirror the PostgreSQL backend's concerns: users, sessions, audit, limits,
//! cleanup, migrations.

mod accounts;
mod audit;
pub(crate) mod audit_chain;
mod checkpoint;
mod cleanup;
mod email_change;
mod keys;
mod limits;
mod mfa;
pub(crate) mod migrations;
mod one_time;
mod outbox;
mod passkeys;
mod passwords;
mod revocation_feed;
mod self_service;
mod sessions;
mod users;
mod writer;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, Row};
use thread_local::ThreadLocal;
use uuid::Uuid;

use super::health::PoolReporter;
use super::{
    AuditOf, ChainReport, ImportOutcome, NewSession, OpeningAuditOf, Store, StoreError,
    StoreOptions, StoreResult,
};
use crate::domain::audit_chain::{Anchor, AuditEntry, ChainState};
use crate::domain::email_change::{
    ConfirmOutcome, PendingEmailChange, RequestOutcome, SetEmailOutcome,
};
use crate::domain::keys::{KeyRevokeOutcome, StoredKey};
use crate::domain::limits::{Admission, SlotGrant, SlotRequest};
use crate::domain::mail::{
    MailKind, MailStatus, MailThrottle, NewMail, OutboxCounts, OutboxMail, Settle,
};
use crate::domain::mfa::{
    EnableOutcome, MfaOpening, MfaProof, MfaRemoved, MfaState, StoredTotp, TotpEnrollment,
};
use crate::domain::one_time::{Consumed, NewOneTimeToken, OneTimeToken, Purpose};
use crate::domain::revocation_feed::FeedRead;
use crate::domain::self_service::{MailRequested, Registration, ResetOutcome, VerifyOutcome};
use crate::domain::time::Millis;
use crate::domain::{
    Account, AuditEvent, AuditQuery, CleanupCounts, FailureCounter, MigrationEntry, NewUser, Role,
    RotateOutcome, Rotation, Session, SessionOpening, User, UserCredentials, UserFilter,
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
    /// The database file.
    path: PathBuf,
    /// One connection per thread that calls `session_with_user_now` (the async runtime's
    /// workers), opened on its first call there; `None` where it could not be opened.
    nowait: ThreadLocal<Option<RefCell<Connection>>>,
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
            path: PathBuf::from(path),
            nowait: ThreadLocal::new(),
        })
    }

    /// A connection that never waits for a lock: a busy database is an error at once
    /// (`busy_timeout` 0), and it only reads (`query_only`).
    fn open_nowait(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch("PRAGMA query_only = ON;")?;
        Ok(conn)
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

    fn diagnose(&self) -> StoreResult<super::Diagnosis> {
        let integrity = self.read(|c| {
            c.prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut files = vec![self.path.clone()];
        for suffix in ["-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let p = PathBuf::from(name);
            if p.exists() {
                files.push(p);
            }
        }
        Ok(super::Diagnosis {
            integrity: Some(integrity),
            files,
            dir: Some(self.dir.clone()),
            server_time: None,
        })
    }

    fn insert_user(
        &self,
        u: &NewUser,
        audit: &AuditEvent,
        session: Option<&NewSession>,
        mail: Option<&NewMail>,
    ) -> StoreResult<User> {
        let (u, audit, session) = (u.clone(), audit.clone(), session.cloned());
        let mail = mail.cloned();
        self.write(move |tx| {
            let user = users::insert(tx, &u)?;
            audit::insert(tx, &audit)?;
            if let Some(session) = &session {
                sessions::create(tx, session)?;
            }
            if let Some(mail) = &mail {
                outbox::enqueue(tx, mail)?;
            }
            Ok(user)
        })
    }

    fn user_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
        self.read(|c| users::by_email(c, email))
    }

    fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        self.read(|c| users::by_id(c, id))
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

    fn open_session(
        &self,
        new: &NewSession,
        verified_hash: &str,
        audit: OpeningAuditOf,
    ) -> StoreResult<SessionOpening> {
        let (new, verified_hash) = (new.clone(), verified_hash.to_owned());
        self.write(move |tx| {
            let outcome = sessions::open(tx, &new, &verified_hash)?;
            if let Some(event) = audit(&outcome) {
                audit::insert(tx, &event)?;
            }
            Ok(outcome)
        })
    }

    fn rotate_refresh_token(&self, r: Rotation, audit: AuditOf) -> StoreResult<RotateOutcome> {
        self.write(move |tx| {
            let outcome = sessions::rotate(tx, &r)?;
            audit::insert(tx, &audit(&outcome))?;
            Ok(outcome)
        })
    }

    fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.read(|c| sessions::by_id(c, id))
    }

    fn session_with_user(&self, id: Uuid) -> StoreResult<Option<(Session, User)>> {
        self.read(|c| sessions::with_user(c, id))
    }

    /// On the calling thread's own connection. In WAL mode a read waits for no writer and
    /// no checkpoint; what could make it wait (rebuilding the WAL index after another
    /// process died in the middle of a write) is `SQLITE_BUSY` at once here, and any error
    /// hands the read to the pool, whose connection waits up to `busy_timeout` and reports trouble.
    /// The read itself is two rows found by primary key: page-cache hits, or `pread`s of
    /// the file the operating system caches.
    fn session_with_user_now(&self, id: Uuid) -> Option<Option<(Session, User)>> {
        let conn = self
            .nowait
            .get_or(|| Self::open_nowait(&self.path).ok().map(RefCell::new))
            .as_ref()?;
        // A thread is in this function at most once at a time (nothing in it calls back).
        let conn = conn.try_borrow().ok()?;
        sessions::with_user(&conn, id).ok()
    }

    fn session_by_token(
        &self,
        session_hint: Uuid,
        token_hash: &str,
    ) -> StoreResult<Option<Session>> {
        self.read(|c| sessions::by_token(c, session_hint, token_hash))
    }

    fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>> {
        self.read(|c| sessions::live(c, user_id, now))
    }

    fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: Millis,
        reason: &str,
    ) -> StoreResult<bool> {
        let reason = reason.to_owned();
        self.write(move |tx| sessions::revoke_one(tx, user_id, session_id, now, &reason))
    }

    fn revoke_user_sessions(&self, user_id: Uuid, now: Millis, reason: &str) -> StoreResult<usize> {
        let reason = reason.to_owned();
        self.write(move |tx| sessions::revoke_of_user(tx, user_id, now, &reason))
    }

    fn revoke_all_sessions(&self, now: Millis, reason: &str) -> StoreResult<usize> {
        let reason = reason.to_owned();
        self.write(move |tx| sessions::revoke_all(tx, now, &reason))
    }

    fn count_live_sessions(&self, now: Millis) -> StoreResult<u64> {
        self.read(|c| sessions::count_live(c, now))
    }

    fn purge(
        &self,
        cutoff: Millis,
        now: Millis,
        failure_window: Millis,
        dry_run: bool,
    ) -> StoreResult<CleanupCounts> {
        self.write(move |tx| cleanup::purge(tx, cutoff, now, failure_window, dry_run))
    }

    fn revoked_sessions_since(&self, since: i64, issued_after: Millis) -> StoreResult<FeedRead> {
        self.read(|c| revocation_feed::since(c, since, issued_after))
    }

    fn purge_revocation_feed(&self, issued_before: Millis, dry_run: bool) -> StoreResult<u64> {
        if dry_run {
            return self.read(|c| revocation_feed::purge(c, issued_before, true));
        }
        self.write(move |tx| revocation_feed::purge(tx, issued_before, false))
    }

    fn record_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let e = e.clone();
        self.write(move |tx| audit::insert(tx, &e))
    }

    fn audit_entries(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        self.read(|c| audit::events(c, q))
    }

    fn seal_audit(&self) -> StoreResult<usize> {
        if !self.read(audit_chain::any_unsealed)? {
            return Ok(0);
        }
        self.write(audit_chain::seal)
    }

    fn verify_audit_chain(&self, anchor: Option<Anchor>) -> StoreResult<ChainReport> {
        self.read(|c| audit_chain::verify(c, anchor))
    }

    fn audit_chain_head(&self) -> StoreResult<(ChainState, u64)> {
        self.read(audit_chain::head)
    }

    fn prune_audit(&self, cutoff: Millis, dry_run: bool) -> StoreResult<u64> {
        self.write(move |tx| audit_chain::prune(tx, cutoff, dry_run))
    }

    fn failure_counter(&self, key: &str) -> StoreResult<Option<FailureCounter>> {
        self.read(|c| limits::counter(c, key))
    }

    fn clear_failures(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |tx| limits::clear(tx, &key))
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
        last_admin: crate::domain::admins::LastAdmin,
    ) -> StoreResult<crate::domain::admins::ChangeOutcome> {
        self.write(move |tx| accounts::set_disabled(tx, user_id, disabled, now, last_admin))
    }

    fn set_role(
        &self,
        user_id: Uuid,
        role: Role,
        now: Millis,
        last_admin: crate::domain::admins::LastAdmin,
    ) -> StoreResult<crate::domain::admins::ChangeOutcome> {
        self.write(move |tx| accounts::set_role(tx, user_id, role, now, last_admin))
    }

    fn delete_user(
        &self,
        user_id: Uuid,
        now: Millis,
        last_admin: crate::domain::admins::LastAdmin,
    ) -> StoreResult<crate::domain::admins::ChangeOutcome> {
        self.write(move |tx| accounts::delete_user(tx, user_id, now, last_admin))
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

    fn issue_one_time_token(&self, token: &NewOneTimeToken, supersede: bool) -> StoreResult<()> {
        let token = token.clone();
        self.write(move |tx| one_time::issue(tx, &token, supersede))
    }

    fn one_time_token(
        &self,
        purpose: Purpose,
        token_hash: &str,
    ) -> StoreResult<Option<OneTimeToken>> {
        self.read(|c| one_time::find(c, purpose, token_hash))
    }

    fn consume_one_time_token(
        &self,
        purpose: Purpose,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Consumed> {
        let hash = token_hash.to_owned();
        self.write(move |tx| one_time::consume(tx, purpose, &hash, now))
    }

    fn kill_one_time_tokens(&self, user_id: Uuid, purposes: &[Purpose]) -> StoreResult<usize> {
        let purposes = purposes.to_vec();
        self.write(move |tx| one_time::kill(tx, user_id, &purposes))
    }

    fn pending_email_change(&self, user_id: Uuid) -> StoreResult<Option<PendingEmailChange>> {
        self.read(|c| email_change::pending(c, user_id))
    }

    fn request_email_change(
        &self,
        change: &PendingEmailChange,
        mails: &[NewMail],
    ) -> StoreResult<RequestOutcome> {
        let (change, mails) = (change.clone(), mails.to_vec());
        self.write(move |tx| email_change::request(tx, &change, &mails))
    }

    fn confirm_email_change(&self, token_hash: &str, now: Millis) -> StoreResult<ConfirmOutcome> {
        let hash = token_hash.to_owned();
        self.write(move |tx| email_change::confirm(tx, &hash, now))
    }

    fn cancel_email_change(&self, user_id: Uuid) -> StoreResult<bool> {
        self.write(move |tx| email_change::cancel(tx, user_id))
    }

    fn set_email(&self, user_id: Uuid, email: &str, now: Millis) -> StoreResult<SetEmailOutcome> {
        let email = email.to_owned();
        self.write(move |tx| email_change::set_email(tx, user_id, &email, now))
    }

    fn request_mail(
        &self,
        email: &str,
        kind: MailKind,
        mail_id: Uuid,
        throttle: &MailThrottle,
        now: Millis,
    ) -> StoreResult<MailRequested> {
        let (email, throttle) = (email.to_owned(), *throttle);
        self.write(move |tx| self_service::request_mail(tx, &email, kind, mail_id, &throttle, now))
    }

    fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        notice_id: Uuid,
        now: Millis,
    ) -> StoreResult<ResetOutcome> {
        let (token, hash) = (token_hash.to_owned(), password_hash.to_owned());
        self.write(move |tx| self_service::reset_password(tx, &token, &hash, notice_id, now))
    }

    fn verify_email(&self, token_hash: &str, now: Millis) -> StoreResult<VerifyOutcome> {
        let token = token_hash.to_owned();
        self.write(move |tx| self_service::verify_email(tx, &token, now))
    }

    fn mark_email_verified(&self, user_id: Uuid) -> StoreResult<Option<User>> {
        self.write(move |tx| self_service::mark_verified(tx, user_id))
    }

    fn register_unverified(
        &self,
        user: &NewUser,
        mail_id: Uuid,
        throttle: &MailThrottle,
    ) -> StoreResult<(Registration, Uuid, bool)> {
        let (user, throttle) = (user.clone(), *throttle);
        self.write(move |tx| self_service::register_unverified(tx, &user, mail_id, &throttle))
    }

    fn purge_unverified(&self, created_before: Millis, dry_run: bool) -> StoreResult<u64> {
        if dry_run {
            return self.read(|c| self_service::purge_unverified(c, created_before, true));
        }
        self.write(move |tx| self_service::purge_unverified(tx, created_before, false))
    }

    fn mfa_state(&self, user_id: Uuid) -> StoreResult<MfaState> {
        self.read(|c| mfa::state(c, user_id))
    }

    fn totp_secret(&self, user_id: Uuid) -> StoreResult<Option<StoredTotp>> {
        self.read(|c| mfa::totp(c, user_id))
    }

    fn open_mfa_session(
        &self,
        mfa_token_hash: &str,
        proof: &MfaProof,
        new: &NewSession,
        verified_hash: &str,
        audit: OpeningAuditOf,
    ) -> StoreResult<MfaOpening> {
        let (hash, proof, new, verified) = (
            mfa_token_hash.to_owned(),
            proof.clone(),
            new.clone(),
            verified_hash.to_owned(),
        );
        self.write(move |tx| {
            let outcome = mfa::open_session(tx, &hash, &proof, &new, &verified)?;
            if let MfaOpening::Decided { opening, .. } = &outcome {
                if let Some(event) = audit(opening) {
                    audit::insert(tx, &event)?;
                }
            }
            Ok(outcome)
        })
    }

    fn reserve_mfa_attempt(&self, mfa_token_hash: &str, max_attempts: u32) -> StoreResult<bool> {
        let hash = mfa_token_hash.to_owned();
        self.write(move |tx| mfa::reserve_attempt(tx, &hash, max_attempts))
    }

    fn mfa_wrong_answer(&self, mfa_token_hash: &str, max_attempts: u32) -> StoreResult<bool> {
        let hash = mfa_token_hash.to_owned();
        self.write(move |tx| mfa::wrong_answer(tx, &hash, max_attempts))
    }

    fn enable_totp(&self, enrollment: &TotpEnrollment) -> StoreResult<EnableOutcome> {
        let e = enrollment.clone();
        self.write(move |tx| mfa::enable(tx, &e))
    }

    fn spend_mfa_proof(&self, user_id: Uuid, proof: &MfaProof) -> StoreResult<bool> {
        let proof = proof.clone();
        self.write(move |tx| mfa::spend(tx, user_id, &proof))
    }

    fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()> {
        let hashes = hashes.to_vec();
        self.write(move |tx| mfa::replace_codes(tx, user_id, &hashes, now))
    }

    fn disable_mfa(&self, user_id: Uuid, reset_all: bool, now: Millis) -> StoreResult<MfaRemoved> {
        self.write(move |tx| mfa::disable(tx, user_id, reset_all, now))
    }

    fn enqueue_mail(&self, mail: &NewMail) -> StoreResult<()> {
        let mail = mail.clone();
        self.write(move |tx| outbox::enqueue(tx, &mail))
    }

    fn lease_mails(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMail>> {
        self.write(move |tx| outbox::lease(tx, now, lease_until, limit))
    }

    fn settle_mail(
        &self,
        id: Uuid,
        lease_until: Millis,
        outcome: &Settle,
        now: Millis,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<bool> {
        let outcome = outcome.clone();
        let audit = audit.cloned();
        self.write(move |tx| outbox::settle(tx, id, lease_until, &outcome, now, audit.as_ref()))
    }

    fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        self.read(outbox::counts)
    }

    fn list_mails(&self, status: Option<MailStatus>) -> StoreResult<Vec<OutboxMail>> {
        self.read(|c| outbox::list(c, status))
    }

    fn requeue_mails(&self, id: Option<Uuid>, now: Millis) -> StoreResult<usize> {
        self.write(move |tx| outbox::requeue(tx, id, now))
    }

    fn passkeys(&self, user_id: Uuid) -> StoreResult<Vec<crate::domain::passkeys::StoredPasskey>> {
        self.read(|c| passkeys::of_user(c, user_id))
    }

    fn passkey_by_credential_id(
        &self,
        credential_id: &str,
    ) -> StoreResult<Option<crate::domain::passkeys::StoredPasskey>> {
        self.read(|c| passkeys::by_credential_id(c, credential_id))
    }

    fn insert_passkey(
        &self,
        passkey: &crate::domain::passkeys::StoredPasskey,
        max: u64,
        keep_session: Option<Uuid>,
        now: Millis,
    ) -> StoreResult<crate::domain::passkeys::PasskeyInsert> {
        let passkey = passkey.clone();
        self.write(move |tx| passkeys::insert(tx, &passkey, max, keep_session, now))
    }

    fn delete_passkey(&self, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.write(move |tx| passkeys::delete(tx, user_id, id))
    }

    fn record_passkey_use(
        &self,
        id: Uuid,
        credential: &str,
        sign_count: u32,
        now: Millis,
    ) -> StoreResult<()> {
        let credential = credential.to_owned();
        self.write(move |tx| passkeys::record_use(tx, id, &credential, sign_count, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::refresh::{self, RefreshTokens};
    use crate::domain::{NewRefreshToken, Role};

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

    /// One user with one live session and its first refresh token; answers (keys, user id,
    /// session id, the raw refresh token).
    fn seed_session(store: &SqliteStore) -> (RefreshTokens, Uuid, Uuid, String) {
        let keys = RefreshTokens::new(vec![9; 32]);
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let (token, hash) = keys.issue(session);
        let first = NewSession {
            session: Session {
                id: session,
                user_id: user,
                created_at: 0,
                last_used_at: 0,
                expires_at: 9_999_999_999_999,
                revoked_at: None,
                user_agent: None,
                ip: None,
                device_info: None,
                auth_methods: vec![crate::domain::AuthMethod::Pwd],
            },
            token: NewRefreshToken {
                hash,
                session_id: session,
                created_at: 0,
                expires_at: 9_999_999_999_999,
            },
        };
        let new = NewUser {
            id: user,
            email: "new@example.com".into(),
            name: None,
            role: Role::User,
            password_hash: "x".into(),
            created_at: 0,
            email_verified: true,
        };
        store
            .insert_user(&new, &audit()(&RotateOutcome::Unknown), Some(&first), None)
            .unwrap();
        (keys, user, session, token)
    }

    /// A token of one session never rotates as another session's, whatever its hint says.
    #[test]
    fn a_hint_naming_another_session_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authd.db");
        let store = open(&path);
        store.migrate().unwrap();
        let (keys, _user, session, token) = seed_session(&store);
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

    /// The no-wait read answers on the calling thread's own connection, also while another
    /// connection holds the write lock (without waiting, and without seeing the uncommitted
    /// write), sees a commit at once, and hands the read back (`None`) on any error.
    #[test]
    fn the_no_wait_read_answers_at_once_and_steps_aside_on_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authd.db");
        let store = open(&path);
        store.migrate().unwrap();
        let (_keys, user, session, _token) = seed_session(&store);
        let (found, owner) = store
            .session_with_user_now(session)
            .expect("answered without the pool")
            .expect("the session exists");
        assert_eq!((found.id, owner.id), (session, user));
        assert!(found.revoked_at.is_none());
        assert!(matches!(
            store.session_with_user_now(Uuid::new_v4()),
            Some(None)
        ));

        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("BEGIN IMMEDIATE; UPDATE sessions SET revoked_at = 1;")
            .unwrap();
        let t = std::time::Instant::now();
        let (during, _) = store.session_with_user_now(session).unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(during.revoked_at.is_none(), "saw an uncommitted write");
        writer.execute_batch("COMMIT").unwrap();
        let (after, _) = store.session_with_user_now(session).unwrap().unwrap();
        assert_eq!(after.revoked_at, Some(1), "a commit not seen at once");

        // A thread whose connection fails (here: a database without the tables) answers
        // `None`, and the caller reads on the pool instead.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    store
                        .nowait
                        .get_or(|| Some(RefCell::new(Connection::open_in_memory().unwrap())));
                    assert!(store.session_with_user_now(session).is_none());
                })
                .join()
                .unwrap();
        });
    }
}
