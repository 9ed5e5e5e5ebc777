//! Store layer: the PostgreSQL implementation of `Store` (the synchronous `postgres` crate
//! behind r2d2), for any number of authd instances on one database.
//!
//! PostgreSQL has no single writer to lean on: transactions run at READ COMMITTED, and every
//! read-then-write locks the rows it decides on (`SELECT ... FOR NO KEY UPDATE`) or is one
//! conditional statement whose row count decides; deadlocks and serialization failures are
//! retried here a few times. docs/DESIGN.md ("Locking on PostgreSQL") lists every write.
//! The files mirror the SQLite backend's concerns: users, sessions, audit, limits, cleanup,
//! migrations.

mod accounts;
mod audit;
mod audit_chain;
mod cleanup;
mod db;
mod email_change;
mod keys;
mod limits;
mod mfa;
mod migrations;
mod one_time;
mod outbox;
mod passkeys;
mod passwords;
mod quick_read;
mod revocation_feed;
mod self_service;
mod sessions;
mod users;

use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{FromSql, Type};
use postgres::{Client, Config, NoTls, Row, Transaction};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres::config::SslMode;

use db::{Db, Manager, PgConn};
use quick_read::QuickReads;
use uuid::Uuid;

use super::health::PoolReporter;
use super::{
    AuditOf, ChainReport, ImportOutcome, NewSession, OpeningAuditOf, QuickRead, Store, StoreError,
    StoreOptions, StoreResult,
};
use crate::domain::admins::{ChangeOutcome, LastAdmin};
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

type Conn = PooledConnection<Manager>;
type PgResult<T> = Result<T, postgres::Error>;

/// How many times a transaction that failed on a deadlock or a serialization failure is run
/// again before the caller gets `Unavailable` (503).
const MAX_ATTEMPTS: u32 = 4;

/// The longest one statement may run before PostgreSQL cancels it (then 503).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection attempt may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// When the URL sets none: how long sent data may stay unacknowledged before the connection
/// is dropped (`tcp_user_timeout`, Linux only), and when an idle connection starts sending
/// TCP keepalives (`keepalives_idle`, then every `KEEPALIVE_INTERVAL`). Together they find a
/// database host that died or a network that dropped the connection within about 30 to 60
/// seconds, where the driver's default (keepalives after two hours) would leave requests
/// waiting on it.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// PostgreSQL behind `database.pool_size` connections, each set up the same way (see
/// `session_settings`): an r2d2 pool, and a share of them (`quick_read`) for the session read
/// of authenticated requests. Migrations run on a connection of their own (see
/// `migrations.rs`).
pub struct PostgresStore {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool<Manager>>,
    quick_reads: Arc<QuickReads>,
    config: Config,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // A `postgres::Client` closes by blocking on its own runtime, which panics on a tokio
        // worker thread: when the last handle goes away inside the server's runtime, the pool
        // (and its idle connections) is dropped on a plain thread instead.
        let Some(pool) = self.pool.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// Connection setup in one place: every connection waits at most `database.busy_timeout`
/// (`lock_timeout`) for a lock (then 503 instead of queueing forever behind a stuck
/// transaction), runs no statement longer than `STATEMENT_TIMEOUT`, and is cut if it idles
/// inside a transaction.
fn session_settings(lock_timeout: Duration) -> String {
    format!(
        "SET lock_timeout = {}; SET statement_timeout = {};
         SET idle_in_transaction_session_timeout = {};",
        lock_timeout.as_millis().max(1),
        STATEMENT_TIMEOUT.as_millis(),
        STATEMENT_TIMEOUT.as_millis() * 2,
    )
}

/// Runs `session_settings` on every new pooled connection.
#[derive(Debug)]
struct Setup {
    settings: String,
}

impl r2d2::CustomizeConnection<PgConn, postgres::Error> for Setup {
    fn on_acquire(&self, conn: &mut PgConn) -> PgResult<()> {
        conn.client.batch_execute(&self.settings)
    }
}

/// Checks a `postgres://` URL as `open` will (for configuration validation): libpq's URL
/// syntax and parameters, and no `sslmode=require` (this build has no TLS client).
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ()).map_err(|e| e.to_string())
}

fn parse_url(url: &str) -> StoreResult<tokio_postgres::Config> {
    let config: tokio_postgres::Config = url.parse().map_err(|e: postgres::Error| {
        StoreError::Other(format!("not a valid PostgreSQL URL: {}", cause(&e)))
    })?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(StoreError::Other(
            "sslmode=require, but this build of authd has no TLS client for PostgreSQL; use \
             sslmode=disable or sslmode=prefer (plain TCP, e.g. on localhost or a private \
             network) or reach the server through a TLS tunnel"
                .into(),
        ));
    }
    Ok(config)
}

impl PostgresStore {
    /// Parses `url` (libpq's URL form, query parameters such as `sslmode` included) and builds
    /// the pool without connecting: a database that is down at start is found by the first
    /// operation (`migrate` or `check_schema`), and one that goes away later is reconnected to
    /// when it returns.
    pub fn open(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let mut config = parse_url(url).map_err(|e| match e {
            StoreError::Other(m) => StoreError::Other(format!("database.url: {m}")),
            other => other,
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("authd");
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // The driver's default idle time is two hours: a URL that sets another keeps it (one
        // that sets exactly 7200 s gets 30 s too).
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        let readers = quick_read::count_for(options.pool_size);
        let settings = session_settings(options.busy_timeout);
        let quick_reads = QuickReads::new(
            config.clone(),
            settings.clone(),
            options.health.clone(),
            options.busy_timeout,
            readers,
        );
        let config = Config::from(config);
        let manager = Manager(PostgresConnectionManager::new(config.clone(), NoTls));
        let pool = Pool::builder()
            .max_size(options.pool_size - readers)
            .min_idle(Some(0))
            // A connection the server closed (restart, admin shutdown, network cut) while it
            // sat idle is found at check-out and replaced, so a database that comes back
            // serves at once; see `db` for which connections are checked.
            .test_on_check_out(true)
            .connection_timeout(options.busy_timeout.max(Duration::from_secs(1)))
            .connection_customizer(Box::new(Setup { settings }))
            // One warning per outage instead of r2d2's line per failed attempt.
            .error_handler(Box::new(PoolReporter(options.health.clone())))
            .event_handler(Box::new(PoolReporter(options.health.clone())))
            .build_unchecked(manager);
        Ok(PostgresStore {
            pool: Some(pool),
            quick_reads,
            config,
        })
    }

    /// How many pooled connections in a row an operation may find closed before it gives up
    /// (503): every idle one, after a restart of PostgreSQL, then a new one.
    fn max_closed_in_a_row(&self) -> u32 {
        self.pool.as_ref().map_or(1, |p| p.max_size()) + 1
    }

    fn conn(&self) -> StoreResult<Conn> {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the store")
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }

    /// Runs `f` on a pooled connection, outside any explicit transaction. A read that finds
    /// its connection closed under it (the database restarted since the connection's last
    /// use) runs again on another one, until a live one or a new one answers (at most
    /// `pool_size + 1` times): reads can simply be repeated. A stale prepared statement
    /// (see `forget_statements_after`) runs it once more on the same connection.
    fn read<T>(&self, mut f: impl FnMut(&mut Db<'_, Client>) -> PgResult<T>) -> StoreResult<T> {
        let mut closed_found = 0;
        loop {
            let mut conn = self.conn()?;
            match run_on(&mut conn, |c| {
                f(&mut Db::new(&mut c.client, &mut c.statements))
            }) {
                Ok(value) => return Ok(value),
                Err(_) if conn.client.is_closed() && closed_found < self.max_closed_in_a_row() => {
                    closed_found += 1;
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }

    /// Runs `f` in a READ COMMITTED transaction and commits it; a deadlock or serialization
    /// failure rolls it back and runs `f` again (up to `MAX_ATTEMPTS` in all), so `f` must
    /// decide everything from what it reads inside the transaction. A failed `BEGIN` (most
    /// often: the connection died while it sat in the pool; nothing of `f` ran) is tried again
    /// on another connection, at most `pool_size + 1` times; a stale prepared statement runs
    /// the transaction once more on the same connection (the failed one rolled back). A
    /// connection lost after `BEGIN` is never retried, since the commit may have reached the
    /// database.
    fn write<T>(
        &self,
        mut f: impl FnMut(&mut Db<'_, Transaction<'_>>) -> PgResult<T>,
    ) -> StoreResult<T> {
        let mut attempt = 1;
        let mut closed_found = 0;
        loop {
            let mut conn = self.conn()?;
            let mut begun = false;
            let result = run_on(&mut conn, |c| {
                begun = false;
                let mut tx = c.client.transaction()?;
                begun = true;
                let value = f(&mut Db::new(&mut tx, &mut c.statements))?;
                tx.commit()?;
                Ok(value)
            });
            match result {
                Ok(value) => return Ok(value),
                Err(e) if !begun && closed_found < self.max_closed_in_a_row() => {
                    tracing::debug!(error = %cause(&e), "BEGIN failed; taking another connection");
                    closed_found += 1;
                }
                Err(e) if is_retryable(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %cause(&e), "retrying a transaction");
                    drop(conn);
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }
}

/// Runs `op` on `conn`, and once more if its error may come from a stale prepared statement
/// (see `forget_statements_after`); a success marks the connection as just used (see
/// `db::VALIDATE_AFTER_IDLE`). What a failure means for the caller (another connection,
/// another attempt, an error) is `read`'s and `write`'s to decide.
fn run_on<T>(conn: &mut PgConn, mut op: impl FnMut(&mut PgConn) -> PgResult<T>) -> PgResult<T> {
    let result = match op(conn) {
        Err(e) if forget_statements_after(&e, conn) => op(conn),
        other => other,
    };
    if result.is_ok() {
        conn.used_at = std::time::Instant::now();
    }
    result
}

/// Drops the connection's prepared statements after an error that may come from one of them
/// going stale (a migration changed a table under it: PostgreSQL refuses a cached plan whose
/// result type changed, 0A000, or names a column or table that is gone, class 42) or from
/// one that vanished (26000). True when it did: the operation can run once more, preparing
/// afresh (0A000 and 26000 then succeed; a real schema mismatch fails again).
fn forget_statements_after(e: &postgres::Error, conn: &mut PgConn) -> bool {
    let stale = is_stale_statement(e);
    if stale {
        conn.statements.clear();
    }
    stale
}

/// An error a prepared statement can cause once it went stale (0A, 26, 42; see
/// `forget_statements_after`).
fn is_stale_statement(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| matches!(&code.code()[..2], "0A" | "26" | "42"))
}

/// A few milliseconds, growing and jittered, so that retried transactions do not collide
/// again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(Uuid::new_v4().as_bytes()[0] % 8);
    Duration::from_millis(u64::from(attempt) * 5 + jitter)
}

/// A deadlock (40P01) or serialization failure (40001): the transaction was rolled back and
/// can simply run again.
fn is_retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// The error's own words: the server's message for a database error, else the driver's with
/// its cause. Never includes the URL (and so no password).
fn cause(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Converts the driver's errors into the backend-neutral `StoreError`: anything that goes away
/// by waiting (lost or refused connection, lock or statement timeout, shutdown, too many
/// connections, a read-only standby, retries used up) is `Unavailable`; integrity violations
/// are `Conflict`.
fn map_err(e: postgres::Error) -> StoreError {
    let text = cause(&e);
    let Some(code) = e.code() else {
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let lost = e.is_closed()
            || io
            || [
                "error communicating",
                "error connecting",
                "connection closed",
                "timeout",
            ]
            .iter()
            .any(|m| text.contains(m));
        return if lost {
            StoreError::Unavailable(text)
        } else {
            StoreError::Other(text)
        };
    };
    let class = &code.code()[..2];
    match class {
        // connection exception, transaction rollback (retries used up), insufficient
        // resources, operator intervention (shutdown, statement timeout), system error
        "08" | "40" | "53" | "57" | "58" => StoreError::Unavailable(text),
        // integrity constraint violation
        "23" => StoreError::Conflict(text),
        _ if *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT =>
        {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Other(text),
    }
}

/// PostgreSQL's text cannot hold NUL (SQLite's can, and hostile input carries it). Free text
/// authd records as it came (audit fields, a session's client info, failed-login keys) is
/// stored with each NUL replaced by U+FFFD, so such input is neither an error (500) nor
/// truncated into another value; lookups of keys that are never stored with a NUL (emails)
/// simply find nothing (see `users::by_email`).
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn opt_text(s: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
    s.as_deref().map(text)
}

/// A TEXT column holding one of a closed set of names (a role, a key's use or state), parsed
/// with `FromStr`; anything else is a conversion error naming the column.
struct Parsed<T>(T);

impl<'a, T> FromSql<'a> for Parsed<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        text.parse::<T>()
            .map(Parsed)
            .map_err(|e| format!("'{text}': {e}").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

fn parsed<T>(row: &Row, idx: usize) -> PgResult<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    row.try_get::<_, Parsed<T>>(idx).map(|p| p.0)
}

fn role(row: &Row, idx: usize) -> PgResult<Role> {
    parsed(row, idx)
}

impl Store for PostgresStore {
    fn migrate(&self) -> StoreResult<Vec<MigrationEntry>> {
        migrations::apply(&self.config)
    }

    fn migration_status(&self) -> StoreResult<Vec<MigrationEntry>> {
        migrations::status(&self.config)
    }

    fn check_schema(&self) -> StoreResult<()> {
        migrations::check(&self.config)
    }

    fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.simple_query("SELECT 1").map(|_| ()))
    }

    fn diagnose(&self) -> StoreResult<super::Diagnosis> {
        let now: i64 = self.read(|c| {
            c.query_one(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
                &[],
            )?
            .try_get(0)
        })?;
        Ok(super::Diagnosis {
            server_time: Some(now),
            ..Default::default()
        })
    }

    fn close(&self) {
        // Every commit is durable when it returns and pooled connections close with the
        // pool: nothing to flush.
    }

    fn insert_user(
        &self,
        u: &NewUser,
        audit: &AuditEvent,
        session: Option<&NewSession>,
        mail: Option<&NewMail>,
    ) -> StoreResult<User> {
        self.write(|tx| {
            let user = users::insert(tx, u)?;
            audit::insert(tx, audit)?;
            if let Some(session) = session {
                sessions::create(tx, session)?;
            }
            if let Some(mail) = mail {
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

    fn list_users(&self, filter: &UserFilter, now: Millis) -> StoreResult<Vec<Account>> {
        self.read(|c| accounts::list_users(c, filter, now))
    }

    fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
        last_admin: LastAdmin,
    ) -> StoreResult<ChangeOutcome> {
        self.write(|tx| accounts::set_disabled(tx, user_id, disabled, now, last_admin))
    }

    fn set_role(
        &self,
        user_id: Uuid,
        role: Role,
        now: Millis,
        last_admin: LastAdmin,
    ) -> StoreResult<ChangeOutcome> {
        self.write(|tx| accounts::set_role(tx, user_id, role, now, last_admin))
    }

    fn delete_user(
        &self,
        user_id: Uuid,
        now: Millis,
        last_admin: LastAdmin,
    ) -> StoreResult<ChangeOutcome> {
        self.write(|tx| accounts::delete_user(tx, user_id, now, last_admin))
    }

    fn pending_email_change(&self, user_id: Uuid) -> StoreResult<Option<PendingEmailChange>> {
        self.read(|c| email_change::pending(c, user_id))
    }

    fn request_email_change(
        &self,
        change: &PendingEmailChange,
        mails: &[NewMail],
    ) -> StoreResult<RequestOutcome> {
        self.write(|tx| email_change::request(tx, change, mails))
    }

    fn confirm_email_change(&self, token_hash: &str, now: Millis) -> StoreResult<ConfirmOutcome> {
        self.write(|tx| email_change::confirm(tx, token_hash, now))
    }

    fn cancel_email_change(&self, user_id: Uuid) -> StoreResult<bool> {
        self.write(|tx| email_change::cancel(tx, user_id))
    }

    fn set_email(&self, user_id: Uuid, email: &str, now: Millis) -> StoreResult<SetEmailOutcome> {
        self.write(|tx| email_change::set_email(tx, user_id, email, now))
    }

    fn request_mail(
        &self,
        email: &str,
        kind: MailKind,
        mail_id: Uuid,
        throttle: &MailThrottle,
        now: Millis,
    ) -> StoreResult<MailRequested> {
        self.write(|tx| self_service::request_mail(tx, email, kind, mail_id, throttle, now))
    }

    fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        notice_id: Uuid,
        now: Millis,
    ) -> StoreResult<ResetOutcome> {
        self.write(|tx| self_service::reset_password(tx, token_hash, password_hash, notice_id, now))
    }

    fn verify_email(&self, token_hash: &str, now: Millis) -> StoreResult<VerifyOutcome> {
        self.write(|tx| self_service::verify_email(tx, token_hash, now))
    }

    fn mark_email_verified(&self, user_id: Uuid) -> StoreResult<Option<User>> {
        self.write(|tx| self_service::mark_verified(tx, user_id))
    }

    fn register_unverified(
        &self,
        user: &NewUser,
        mail_id: Uuid,
        throttle: &MailThrottle,
    ) -> StoreResult<(Registration, Uuid, bool)> {
        self.write(|tx| self_service::register_unverified(tx, user, mail_id, throttle))
    }

    fn purge_unverified(&self, created_before: Millis, dry_run: bool) -> StoreResult<u64> {
        if dry_run {
            return self.read(|c| self_service::purge_unverified(c, created_before, true));
        }
        self.write(|tx| self_service::purge_unverified(tx, created_before, false))
    }

    fn set_password_hash(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep_session: Option<Uuid>,
        now: Millis,
    ) -> StoreResult<usize> {
        self.write(|tx| passwords::set_password_hash(tx, user_id, password_hash, keep_session, now))
    }

    fn upgrade_password_hash(
        &self,
        user_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool> {
        self.write(|tx| passwords::upgrade_password_hash(tx, user_id, old_hash, new_hash))
    }

    fn import_users(
        &self,
        users: Vec<NewUser>,
        skip_existing: bool,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome> {
        if dry_run {
            return self.read(|c| passwords::import_dry_run(c, &users, skip_existing));
        }
        self.write(|tx| passwords::import(tx, &users, skip_existing))
    }

    fn open_session(
        &self,
        new: &NewSession,
        verified_hash: &str,
        audit: OpeningAuditOf,
    ) -> StoreResult<SessionOpening> {
        self.write(|tx| {
            let outcome = sessions::open(tx, new, verified_hash)?;
            if let Some(event) = audit(&outcome) {
                audit::insert(tx, &event)?;
            }
            Ok(outcome)
        })
    }

    /// A rotation whose `COMMIT` got no answer (the connection was lost while committing) may
    /// have committed: the replacement token's row decides, read once the lost transaction
    /// has ended (see `sessions::token_stored`). Answering 503 for a rotation that did commit
    /// would make the client's retry a reuse and revoke its session.
    fn rotate_refresh_token(&self, r: Rotation, audit: AuditOf) -> StoreResult<RotateOutcome> {
        let mut decided = None;
        let result = self.write(|tx| {
            decided = None;
            let outcome = sessions::rotate(tx, &r)?;
            audit::insert(tx, &audit(&outcome))?;
            decided = Some(outcome.clone());
            Ok(outcome)
        });
        match (result, decided) {
            (
                Err(StoreError::Unavailable(m)),
                Some(outcome @ RotateOutcome::Rotated { session_id, .. }),
            ) => match self.write(|tx| sessions::token_stored(tx, session_id, &r.replacement_hash))
            {
                Ok(true) => Ok(outcome),
                _ => Err(StoreError::Unavailable(m)),
            },
            (result, _) => result,
        }
    }

    fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        self.read(|c| sessions::by_id(c, id))
    }

    fn session_with_user(&self, id: Uuid) -> StoreResult<Option<(Session, User)>> {
        self.read(|c| sessions::with_user(c, id))
    }

    fn session_with_user_async(&self, id: Uuid) -> Option<QuickRead<Option<(Session, User)>>> {
        self.quick_reads.session_with_user(id)
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
        self.write(|tx| sessions::revoke_one(tx, user_id, session_id, now, reason))
    }

    fn revoke_user_sessions(&self, user_id: Uuid, now: Millis, reason: &str) -> StoreResult<usize> {
        self.write(|tx| sessions::revoke_of_user(tx, user_id, now, reason))
    }

    fn revoke_all_sessions(&self, now: Millis, reason: &str) -> StoreResult<usize> {
        self.write(|tx| sessions::revoke_all(tx, now, reason))
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
        let horizon = cleanup::Horizon {
            cutoff,
            now,
            failure_window,
        };
        if dry_run {
            return self.read(|c| cleanup::count(c, horizon));
        }
        cleanup::purge(self, horizon)
    }

    fn revoked_sessions_since(&self, since: i64, issued_after: Millis) -> StoreResult<FeedRead> {
        self.read(|c| revocation_feed::since(c, since, issued_after))
    }

    fn purge_revocation_feed(&self, issued_before: Millis, dry_run: bool) -> StoreResult<u64> {
        if dry_run {
            return self.read(|c| revocation_feed::purge(c, issued_before, true));
        }
        self.write(|tx| revocation_feed::purge(tx, issued_before, false))
    }

    fn record_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        self.write(|tx| audit::insert(tx, e))
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
        self.read(|c| audit_chain::verify(c, anchor.clone()))
    }

    fn audit_chain_head(&self) -> StoreResult<(ChainState, u64)> {
        self.read(audit_chain::head)
    }

    fn prune_audit(&self, cutoff: Millis, dry_run: bool) -> StoreResult<u64> {
        self.write(|tx| audit_chain::prune(tx, cutoff, dry_run))
    }

    fn failure_counter(&self, key: &str) -> StoreResult<Option<FailureCounter>> {
        self.read(|c| limits::counter(c, key))
    }

    fn clear_failures(&self, key: &str) -> StoreResult<()> {
        self.write(|tx| limits::clear(tx, key))
    }

    fn reserve_login_slots(&self, request: &SlotRequest) -> StoreResult<Admission> {
        self.write(|tx| limits::reserve(tx, request))
    }

    fn settle_login_slots(&self, grant: &SlotGrant, failed: bool, now: Millis) -> StoreResult<()> {
        self.write(|tx| limits::settle(tx, grant, failed, now))
    }

    fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read(keys::all)
    }

    fn key_set_version(&self) -> StoreResult<i64> {
        self.read(keys::generation)
    }

    fn insert_signing_key_if_none_active(&self, key: &StoredKey) -> StoreResult<bool> {
        self.write(|tx| keys::insert_if_none_active(tx, key))
    }

    fn rotate_signing_key(
        &self,
        key: &StoredKey,
        previous_retires_at: Millis,
    ) -> StoreResult<Option<String>> {
        self.write(|tx| keys::rotate(tx, key, previous_retires_at))
    }

    fn revoke_signing_key(
        &self,
        kid: &str,
        now: Millis,
        replacement: Option<&StoredKey>,
    ) -> StoreResult<KeyRevokeOutcome> {
        self.write(|tx| keys::revoke(tx, kid, now, replacement))
    }

    fn issue_one_time_token(&self, token: &NewOneTimeToken, supersede: bool) -> StoreResult<()> {
        self.write(|tx| one_time::issue(tx, token, supersede))
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
        self.write(|tx| one_time::consume(tx, purpose, token_hash, now))
    }

    fn kill_one_time_tokens(&self, user_id: Uuid, purposes: &[Purpose]) -> StoreResult<usize> {
        self.write(|tx| one_time::kill(tx, user_id, purposes))
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
        self.write(|tx| {
            let outcome = mfa::open_session(tx, mfa_token_hash, proof, new, verified_hash)?;
            if let MfaOpening::Decided { opening, .. } = &outcome {
                if let Some(event) = audit(opening) {
                    audit::insert(tx, &event)?;
                }
            }
            Ok(outcome)
        })
    }

    fn reserve_mfa_attempt(&self, mfa_token_hash: &str, max_attempts: u32) -> StoreResult<bool> {
        self.write(|tx| mfa::reserve_attempt(tx, mfa_token_hash, max_attempts))
    }

    fn mfa_wrong_answer(&self, mfa_token_hash: &str, max_attempts: u32) -> StoreResult<bool> {
        self.write(|tx| mfa::wrong_answer(tx, mfa_token_hash, max_attempts))
    }

    fn enable_totp(&self, enrollment: &TotpEnrollment) -> StoreResult<EnableOutcome> {
        self.write(|tx| mfa::enable(tx, enrollment))
    }

    fn spend_mfa_proof(&self, user_id: Uuid, proof: &MfaProof) -> StoreResult<bool> {
        self.write(|tx| mfa::spend(tx, user_id, proof))
    }

    fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()> {
        self.write(|tx| mfa::replace_codes(tx, user_id, hashes, now))
    }

    fn disable_mfa(&self, user_id: Uuid, reset_all: bool, now: Millis) -> StoreResult<MfaRemoved> {
        self.write(|tx| mfa::disable(tx, user_id, reset_all, now))
    }

    fn enqueue_mail(&self, mail: &NewMail) -> StoreResult<()> {
        self.write(|tx| outbox::enqueue(tx, mail))
    }

    fn lease_mails(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMail>> {
        self.write(|tx| outbox::lease(tx, now, lease_until, limit))
    }

    fn settle_mail(
        &self,
        id: Uuid,
        lease_until: Millis,
        outcome: &Settle,
        now: Millis,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<bool> {
        self.write(|tx| outbox::settle(tx, id, lease_until, outcome, now, audit))
    }

    fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        self.read(outbox::counts)
    }

    fn list_mails(&self, status: Option<MailStatus>) -> StoreResult<Vec<OutboxMail>> {
        self.read(|c| outbox::list(c, status))
    }

    fn requeue_mails(&self, id: Option<Uuid>, now: Millis) -> StoreResult<usize> {
        self.write(|tx| outbox::requeue(tx, id, now))
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
        self.write(|tx| passkeys::insert(tx, passkey, max, keep_session, now))
    }

    fn delete_passkey(&self, user_id: Uuid, id: Uuid) -> StoreResult<bool> {
        self.write(|tx| passkeys::delete(tx, user_id, id))
    }

    fn record_passkey_use(
        &self,
        id: Uuid,
        credential: &str,
        sign_count: u32,
        now: Millis,
    ) -> StoreResult<()> {
        self.write(|tx| passkeys::record_use(tx, id, credential, sign_count, now))
    }
}
