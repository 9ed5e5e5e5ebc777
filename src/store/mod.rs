//! Store layer: the `Store` trait (whole operations, synchronous, each backend owning its
//! transactions), the backend-neutral `StoreError`, and `open(url)`.

pub mod backup;
pub mod health;
pub(crate) mod migrations;
pub(crate) mod opening;
pub mod postgres;
pub(crate) mod rotation;
pub mod sqlite;
pub mod transfer;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::domain::admins::{ChangeOutcome, LastAdmin};
use crate::domain::audit_chain::{Anchor, AuditEntry, ChainState, Verdict};
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
use crate::domain::passkeys::{PasskeyInsert, StoredPasskey};
use crate::domain::revocation_feed::FeedRead;
use crate::domain::self_service::{MailRequested, Registration, ResetOutcome, VerifyOutcome};
use crate::domain::time::Millis;
use crate::domain::{
    Account, AuditEvent, AuditQuery, CleanupCounts, FailureCounter, MigrationEntry,
    NewRefreshToken, NewUser, Role, RotateOutcome, Rotation, Session, SessionOpening, User,
    UserCredentials, UserFilter,
};

/// Errors every backend converts its driver's errors into, at its own boundary.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Busy, locked, full, read-only or unreachable: the caller should retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The schema cannot be brought to (or is not at) this binary's version.
    #[error("{0}")]
    Migration(String),
    /// Anything else.
    #[error("database error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Makes the audit row of a rotation from its outcome (run inside the rotation's transaction;
/// a backend that retries the transaction calls it again for the new outcome).
pub type AuditOf = Box<dyn Fn(&RotateOutcome) -> AuditEvent + Send>;

/// Makes the audit row of a login from what opening its session did, or none (run inside that
/// transaction; a backend that retries it calls it again).
pub type OpeningAuditOf = Box<dyn Fn(&SessionOpening) -> Option<AuditEvent> + Send>;

/// What `Store::verify_audit_chain` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub verdict: Verdict,
    /// Events awaiting sealing (not part of the verdict).
    pub unsealed: u64,
}

/// What a backend tells `authd doctor` about itself (`Store::diagnose`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// SQLite: the lines `PRAGMA integrity_check` answered (`["ok"]` for a sound file);
    /// `None` where the database server checks itself (PostgreSQL).
    pub integrity: Option<Vec<String>>,
    /// SQLite: the database file and those next to it (`-wal`, `-shm`) that exist; empty for
    /// PostgreSQL.
    pub files: Vec<std::path::PathBuf>,
    /// SQLite: the directory holding the database file.
    pub dir: Option<std::path::PathBuf>,
    /// PostgreSQL: the database server's clock (`now()`), in Unix milliseconds.
    pub server_time: Option<Millis>,
}

/// A session to create together with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: Session,
    pub token: NewRefreshToken,
}

/// What `Store::import_users` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Every user was inserted (with a dry run: would be), except `skipped` existing emails.
    Imported { imported: usize, skipped: usize },
    /// These emails belong to existing users and skipping was not asked for: nothing was
    /// inserted.
    Existing(Vec<String>),
}

impl ImportOutcome {
    /// The answer for `users` when those at the indexes in `existing` already have accounts:
    /// `Existing` with their emails (in input order) unless `skip_existing`, else `Imported`.
    pub fn of(
        users: &[NewUser],
        existing: &std::collections::HashSet<usize>,
        skip_existing: bool,
    ) -> Self {
        if !existing.is_empty() && !skip_existing {
            let mut emails: Vec<(usize, String)> = existing
                .iter()
                .map(|&i| (i, users[i].email.clone()))
                .collect();
            emails.sort();
            return ImportOutcome::Existing(emails.into_iter().map(|(_, e)| e).collect());
        }
        ImportOutcome::Imported {
            imported: users.len() - existing.len(),
            skipped: existing.len(),
        }
    }
}

/// Everything authd keeps. Implementations must be safe to share between threads and between
/// processes using the same database.
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations; returns those applied now.
    fn migrate(&self) -> StoreResult<Vec<MigrationEntry>>;
    /// Applied and pending migrations, in order.
    fn migration_status(&self) -> StoreResult<Vec<MigrationEntry>>;
    /// Errors unless the schema is exactly this binary's (nothing pending, edited or unknown).
    fn check_schema(&self) -> StoreResult<()>;
    /// Answers when the database does.
    fn ping(&self) -> StoreResult<()>;
    /// What `authd doctor` asks of the backend, reading only (see `Diagnosis`).
    fn diagnose(&self) -> StoreResult<Diagnosis>;
    /// Flushes and releases resources (for SQLite, checkpoints the WAL).
    fn close(&self);

    /// Inserts a user with the audit event of its creation and, for a registration, its first
    /// session (whose `user_id` is the user's) and its verification mail, in one transaction:
    /// all of them or none. `Conflict` if the email is taken.
    fn insert_user(
        &self,
        user: &NewUser,
        audit: &AuditEvent,
        session: Option<&NewSession>,
        mail: Option<&NewMail>,
    ) -> StoreResult<User>;
    fn user_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>>;
    fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;
    /// Replaces the user's bcrypt hash, revokes every live session of the user except
    /// `keep_session`, kills its mailed one-time tokens and drops its pending email change
    /// (CONTRACT 10.2), in one transaction; returns how many sessions it revoked (0, and
    /// nothing changed, for an unknown user).
    fn set_password_hash(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep_session: Option<Uuid>,
        now: Millis,
    ) -> StoreResult<usize>;
    /// Replaces the user's hash by `new_hash` only if it is still `old_hash` (the one a login
    /// just verified); false when it changed meanwhile (or the user is gone).
    fn upgrade_password_hash(
        &self,
        user_id: Uuid,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool>;
    /// Inserts `users` (validated, with distinct emails) in one transaction. Emails that
    /// already exist are skipped with `skip_existing`, else nothing is inserted and they are
    /// answered as `Existing`. With `dry_run`, only counts: nothing is written.
    fn import_users(
        &self,
        users: Vec<NewUser>,
        skip_existing: bool,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome>;

    /// Opens a session on a credential checked before (a login's password, whose stored hash
    /// was `verified_hash`): in one transaction, reads the user row (on PostgreSQL, locking it
    /// against a concurrent admin or password change), lets `opening::decide` refuse it if the
    /// user is gone, disabled or no longer has `verified_hash`, and otherwise sets
    /// `last_login_at` to the session's `created_at` and stores the session with its first
    /// refresh token. The audit row `audit` makes of the outcome, if any, is stored in that
    /// transaction too.
    fn open_session(
        &self,
        new: &NewSession,
        verified_hash: &str,
        audit: OpeningAuditOf,
    ) -> StoreResult<SessionOpening>;
    /// Rotates a refresh token atomically (see `RotateOutcome`); on reuse outside the grace
    /// period, revokes the whole session in the same transaction. The audit row `audit`
    /// makes of the outcome is stored in that transaction too.
    fn rotate_refresh_token(
        &self,
        rotation: Rotation,
        audit: AuditOf,
    ) -> StoreResult<RotateOutcome>;
    fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    /// A session together with its user, in one lookup (authenticating an access token).
    fn session_with_user(&self, id: Uuid) -> StoreResult<Option<(Session, User)>>;
    /// `session_with_user` answered on the calling thread, only where the store can do so
    /// without waiting: no lock to wait for, no network round trip. `None` means "ask
    /// `session_with_user` on the blocking pool" (this store cannot answer at once, or this
    /// try met a lock or any error; the pool's read reports it). Called from the async
    /// runtime's worker threads, it saves the hand-off to the blocking pool and back (two
    /// context switches) on every authenticated request. The default never answers.
    fn session_with_user_now(&self, id: Uuid) -> Option<Option<(Session, User)>> {
        let _ = id;
        None
    }
    /// `session_with_user` as a future that holds no thread while it waits, where the store
    /// has such a read (PostgreSQL: a query on a connection driven by the async runtime
    /// itself, see `postgres::quick_read`). The future's `Some` is the answer (an error
    /// included: the database refused or did not answer in time); `None`, or a future
    /// answering `None`, means "ask `session_with_user` on the blocking pool" (no such read
    /// here, none ready now, or its connection failed; the pool's read reports the trouble).
    /// Called only from the async runtime. The default has none.
    fn session_with_user_async(&self, id: Uuid) -> Option<QuickRead<Option<(Session, User)>>> {
        let _ = id;
        None
    }
    /// The session a refresh token belongs to, in any state: looked up by the session the
    /// token names and its hash (by hash alone for tokens issued before migration V4).
    fn session_by_token(
        &self,
        session_hint: Uuid,
        token_hash: &str,
    ) -> StoreResult<Option<Session>>;
    /// Live (unrevoked, unexpired) sessions of a user, newest first.
    fn live_sessions(&self, user_id: Uuid, now: Millis) -> StoreResult<Vec<Session>>;
    /// Revokes one live session of a user; false if there was none.
    fn revoke_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: Millis,
        reason: &str,
    ) -> StoreResult<bool>;
    /// Revokes every live session of a user; returns how many.
    fn revoke_user_sessions(&self, user_id: Uuid, now: Millis, reason: &str) -> StoreResult<usize>;
    /// Revokes every live session of every user; returns how many.
    fn revoke_all_sessions(&self, now: Millis, reason: &str) -> StoreResult<usize>;
    /// Live sessions in the whole database.
    fn count_live_sessions(&self, now: Millis) -> StoreResult<u64>;
    /// Deletes, in one transaction (PostgreSQL: in batches of short transactions, one instance
    /// at a time; see docs/DESIGN.md) (with `dry_run` only counts):
    /// - sessions that expired or were revoked before `cutoff`, with all their refresh tokens;
    ///   a live, unexpired session keeps every token, rotated-away ones included (reuse
    ///   detection needs them, whatever the retention);
    /// - failure counters (and held-slot rows) whose window of `failure_window` milliseconds
    ///   ended and whose lock, if any, ended: never one that still limits an attempt.
    fn purge(
        &self,
        cutoff: Millis,
        now: Millis,
        failure_window: Millis,
        dry_run: bool,
    ) -> StoreResult<CleanupCounts>;

    // The revoked-session feed (table `revoked_sessions`, written only by the triggers of
    // migration V11 on `sessions`; see `domain::revocation_feed` and docs/DESIGN.md).

    /// Reads the feed: first its head (the greatest `seq`, 0 when empty), then the rows with
    /// `since < seq <= head` whose `issued_at` is after `issued_after`, in `seq` order. Rows
    /// become visible in `seq` order on both backends, so a reader that was given `head`
    /// never finds a row below it later.
    fn revoked_sessions_since(&self, since: i64, issued_after: Millis) -> StoreResult<FeedRead>;
    /// Deletes (with `dry_run` only counts) the feed's rows issued before `issued_before`,
    /// except the newest row, which keeps the head (and so every cursor handed out) valid.
    fn purge_revocation_feed(&self, issued_before: Millis, dry_run: bool) -> StoreResult<u64>;

    fn record_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Events matching `query`, newest first, without their place in the chain.
    fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        Ok(self
            .audit_entries(query)?
            .into_iter()
            .map(|e| e.event)
            .collect())
    }
    /// Events matching `query`, newest first, each with its `seq` and `hash` once sealed.
    fn audit_entries(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    // The audit chain (table `audit_chain`, see `domain::audit_chain` and docs/SECURITY.md).

    /// Seals at most `domain::audit_chain::SEAL_BATCH` unsealed events, in insertion order,
    /// after the chain head, in one transaction that holds the chain head against every other
    /// sealer (of this process or another sharing the database): exactly one chain. Returns how
    /// many it sealed (0: nothing awaited sealing).
    fn seal_audit(&self) -> StoreResult<usize>;
    /// Walks the whole chain in one consistent snapshot (reading only) and says whether it
    /// holds (`domain::audit_chain::Walk`), with `anchor` if given.
    fn verify_audit_chain(&self, anchor: Option<Anchor>) -> StoreResult<ChainReport>;
    /// The chain-head row, and how many events await sealing.
    fn audit_chain_head(&self) -> StoreResult<(ChainState, u64)>;
    /// Deletes (with `dry_run` only counts) the oldest sealed events: every one before the first
    /// sealed event recorded at or after `cutoff` (never an unsealed one), recording the
    /// last deleted event's seq and hash as the chain's base in the same transaction, so the
    /// chain stays verifiable from the first remaining event. Returns how many.
    fn prune_audit(&self, cutoff: Millis, dry_run: bool) -> StoreResult<u64>;

    /// The failed-login counter for a key, if any.
    fn failure_counter(&self, key: &str) -> StoreResult<Option<FailureCounter>>;
    fn clear_failures(&self, key: &str) -> StoreResult<()>;

    /// Reserves one slot on every counter of `request` (for a login: the client's per-IP
    /// failed-login budget and the email's lockout counter), atomically: in one write
    /// transaction it reads each counter's failures, lock and held slots and, only when every
    /// counter has room, takes one slot on each (`domain::limits::reserve` decides). A refused
    /// request writes nothing. No other reservation or settlement of the same keys, from this
    /// process or another sharing the database, interleaves with it.
    fn reserve_login_slots(&self, request: &SlotRequest) -> StoreResult<Admission>;
    /// Settles an admitted attempt's slots, atomically (`domain::limits::settle`): gives each
    /// back and, when `failed`, counts one failure on each counter in the same transaction,
    /// locking those that reach their limit.
    fn settle_login_slots(&self, grant: &SlotGrant, failed: bool, now: Millis) -> StoreResult<()>;
    // Signing keys (table `signing_keys`, see `domain::keys` and docs/DESIGN.md). Every change
    // bumps the key set's generation in the same transaction.

    /// Every signing key, in any state, oldest first (private parts as stored: sealed or not).
    fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// The key set's generation: a counter that every change to the signing keys bumps. A
    /// cheap read (one row): running servers poll it and reload the key set when it moves.
    fn key_set_version(&self) -> StoreResult<i64>;
    /// First start: inserts `key` (state active) unless its use already has an active key.
    /// True when inserted. Atomic: of processes starting together, exactly one inserts.
    fn insert_signing_key_if_none_active(&self, key: &StoredKey) -> StoreResult<bool>;
    /// Rotation, in one transaction: the active key of `key.key_use` (if any) becomes
    /// retiring until `previous_retires_at` (its private part is dropped when it has a public
    /// part, which alone verifies), and `key` becomes the active key. Returns the previous
    /// active key's kid.
    fn rotate_signing_key(
        &self,
        key: &StoredKey,
        previous_retires_at: Millis,
    ) -> StoreResult<Option<String>>;
    /// Revocation, in one transaction: marks `kid` revoked at `now` and drops its private
    /// part. If it is (still) the active key of its use, `replacement` (same use, state
    /// active) is inserted as the new active key; without a replacement the use is left with
    /// no active key (the next start or rotation makes one).
    fn revoke_signing_key(
        &self,
        kid: &str,
        now: Millis,
        replacement: Option<&StoredKey>,
    ) -> StoreResult<KeyRevokeOutcome>;
    // One-time tokens (`domain::one_time`): reset, verification and email-change tokens,
    // mfaTokens, WebAuthn ceremonies. A flow that uses or kills tokens as part of a larger
    // write does so inside that write's transaction, through the backends' `one_time` module.

    /// Stores `token`; with `supersede`, first deletes (in the same transaction) every other
    /// token of its owner and purpose: the newest wins (CONTRACT 10.2).
    fn issue_one_time_token(&self, token: &NewOneTimeToken, supersede: bool) -> StoreResult<()>;
    /// The token of `purpose` whose hash is `token_hash`, live or expired, without using it
    /// (a flow checks its other input before the token is used up).
    fn one_time_token(
        &self,
        purpose: Purpose,
        token_hash: &str,
    ) -> StoreResult<Option<OneTimeToken>>;
    /// Uses the token up, atomically: of concurrent uses of one token (from any process
    /// sharing the database) exactly one gets `Consumed::Used`; an expired one is deleted and
    /// answered `Expired`.
    fn consume_one_time_token(
        &self,
        purpose: Purpose,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Consumed>;
    /// Deletes the user's tokens of `purposes` (of every purpose when empty); returns how many.
    fn kill_one_time_tokens(&self, user_id: Uuid, purposes: &[Purpose]) -> StoreResult<usize>;
    // Email change (`domain::email_change`, CONTRACT 10.5; table `email_changes`, V14).

    /// The user's pending email change, if any.
    fn pending_email_change(&self, user_id: Uuid) -> StoreResult<Option<PendingEmailChange>>;
    /// Stores `change` as the user's pending email change and queues `mails`, in one
    /// transaction that first checks that no other account has `change.new_email`
    /// (`EmailTaken`, nothing written). An older pending change of the user is replaced and
    /// its tokens killed.
    fn request_email_change(
        &self,
        change: &PendingEmailChange,
        mails: &[NewMail],
    ) -> StoreResult<RequestOutcome>;
    /// Confirms with the email-change token whose hash is `token_hash` (either purpose), in
    /// one transaction: uses the token up (of concurrent confirmations of one token exactly
    /// one finds it), reads the owner's pending change (locked) and lets
    /// `domain::email_change::step` decide. At the last required confirmation, re-checks that
    /// the address is free (taken: the change and its tokens dropped, `EmailTaken`), sets it
    /// (verified), revokes every live session of the user except the one that asked, kills
    /// the user's mailed one-time tokens and deletes the pending change.
    fn confirm_email_change(&self, token_hash: &str, now: Millis) -> StoreResult<ConfirmOutcome>;
    /// Deletes the user's pending email change and its tokens; whether there was one.
    fn cancel_email_change(&self, user_id: Uuid) -> StoreResult<bool>;
    /// An admin sets the user's address, in one transaction: unless another account has it
    /// (`EmailTaken`, nothing written), sets it (verified), revokes every live session of the
    /// user, kills its mailed one-time tokens and drops a pending change.
    fn set_email(&self, user_id: Uuid, email: &str, now: Millis) -> StoreResult<SetEmailOutcome>;
    // Password reset and email verification (`domain::self_service`, CONTRACT 10.3, 10.4).

    /// A public route that sends mail (reset request, verification resend): in one
    /// transaction, finds the account of `email`, lets `self_service::mail_decision` decide,
    /// and queues mail `mail_id` of `kind` to the account's stored address unless `throttle`
    /// drops it. The same work whatever it finds, so the route's time says nothing; the
    /// returned reason goes only to the audit trail.
    fn request_mail(
        &self,
        email: &str,
        kind: MailKind,
        mail_id: Uuid,
        throttle: &MailThrottle,
        now: Millis,
    ) -> StoreResult<MailRequested>;
    /// A password reset, in one transaction: uses the reset token `token_hash` up (of
    /// concurrent confirmations exactly one finds it; one mailed to an address the account no
    /// longer has is `Invalid`), sets `password_hash`, revokes every live session of the user,
    /// kills every other one-time token (and a pending email change), clears the lockout of its
    /// email (`login_failures` key `email:<email>`), marks the email verified, and queues the
    /// notice mail `notice_id` (no link) to it.
    fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        notice_id: Uuid,
        now: Millis,
    ) -> StoreResult<ResetOutcome>;
    /// Verifies an address with the verification token `token_hash`, in one transaction: uses
    /// it up and marks the account verified, if the account still has the address the token
    /// was mailed to (else `Invalid`).
    fn verify_email(&self, token_hash: &str, now: Millis) -> StoreResult<VerifyOutcome>;
    /// Marks the user's address verified (an admin's decision) and kills its verification
    /// tokens; the user as it is now, `None` for an unknown user.
    fn mark_email_verified(&self, user_id: Uuid) -> StoreResult<Option<User>>;
    /// A registration with `email.require_verification` (CONTRACT 10.4), in one transaction:
    /// finds the account of `user.email` and does what `Registration::of` says: inserts
    /// `user` (unverified), or replaces the unverified account's password hash, name and
    /// creation time (killing its one-time tokens and revoking its sessions), or changes
    /// nothing; then queues mail `mail_id` (`Registration::mail`) to the address unless
    /// `throttle` drops it. Returns what it did, the account's id, and whether it queued.
    fn register_unverified(
        &self,
        user: &NewUser,
        mail_id: Uuid,
        throttle: &MailThrottle,
    ) -> StoreResult<(Registration, Uuid, bool)>;
    /// Deletes (with `dry_run` only counts) the accounts with role `user` whose address is
    /// still unverified and that were created before `created_before` (cleanup with
    /// `email.require_verification`).
    fn purge_unverified(&self, created_before: Millis, dry_run: bool) -> StoreResult<u64>;
    // Passkeys (`domain::passkeys`, CONTRACT 11.3).

    /// The user's passkeys, oldest first.
    fn passkeys(&self, user_id: Uuid) -> StoreResult<Vec<StoredPasskey>>;
    /// The passkey whose credential id (base64url) is `credential_id`, whoever owns it.
    fn passkey_by_credential_id(&self, credential_id: &str) -> StoreResult<Option<StoredPasskey>>;
    /// Stores `passkey` in one transaction that also checks (against concurrent registrations
    /// from any process) that its credential id is registered to no account (`Duplicate`) and
    /// that its owner has fewer than `max` passkeys (`TooMany`). When it is the owner's first
    /// second factor (no other passkey, no TOTP), every live session of the owner except
    /// `keep_session` is revoked in the same transaction.
    fn insert_passkey(
        &self,
        passkey: &StoredPasskey,
        max: u64,
        keep_session: Option<Uuid>,
        now: Millis,
    ) -> StoreResult<PasskeyInsert>;
    /// Deletes the user's passkey `id`; false if the user has no such passkey.
    fn delete_passkey(&self, user_id: Uuid, id: Uuid) -> StoreResult<bool>;
    /// Records a use of passkey `id`: its credential as updated by the assertion, the
    /// signature counter seen, and `now` as `last_used_at`.
    fn record_passkey_use(
        &self,
        id: Uuid,
        credential: &str,
        sign_count: u32,
        now: Millis,
    ) -> StoreResult<()>;
    // Mail outbox (`domain::mail`).

    /// Queues a mail on its own. A flow whose mail goes with other writes queues it inside
    /// that write's transaction, through the backends' `outbox` module.
    fn enqueue_mail(&self, mail: &NewMail) -> StoreResult<()>;
    /// Leases up to `limit` due mails until `lease_until`: queued ones whose `next_attempt_at`
    /// is at or before `now`, and `sending` ones whose lease ran out by `now` (a worker that
    /// died). Each comes back `sending` with its attempt counted. Of workers in any number of
    /// processes on one database, exactly one leases a given mail at a time.
    fn lease_mails(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMail>>;
    /// Ends the lease `lease_until` of mail `id` as `outcome` says, recording `audit` in the
    /// same transaction when given; `false` (and nothing written) when the lease is no longer
    /// this one (it ran out and another worker took the mail).
    fn settle_mail(
        &self,
        id: Uuid,
        lease_until: Millis,
        outcome: &Settle,
        now: Millis,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<bool>;
    /// The outbox by status.
    fn outbox_counts(&self) -> StoreResult<OutboxCounts>;
    /// The outbox (of one status, or all), oldest first.
    fn list_mails(&self, status: Option<MailStatus>) -> StoreResult<Vec<OutboxMail>>;
    /// Queues failed mails again, due at `now` with their attempts counted afresh: mail `id`,
    /// or every failed one. Returns how many.
    fn requeue_mails(&self, id: Option<Uuid>, now: Millis) -> StoreResult<usize>;
    // Second factors (`domain::mfa`, CONTRACT 11). mfaTokens and pending enrolments are
    // one-time tokens (purposes `Mfa`, `TotpEnrollment`).

    /// The account's second factors.
    fn mfa_state(&self, user_id: Uuid) -> StoreResult<MfaState>;
    /// The account's confirmed TOTP secret (as stored), if TOTP is on.
    fn totp_secret(&self, user_id: Uuid) -> StoreResult<Option<StoredTotp>>;
    /// Opens a session on a second factor, in one transaction: reads the live mfaToken
    /// `mfa_token_hash` of `new.session.user_id` (locking it), spends `proof` (a TOTP step
    /// by conditional update of `last_step`, a recovery code by deleting its row; already
    /// spent: `Spent`, nothing else written), uses the token up and opens the session as
    /// `open_session` does (with `verified_hash`). The audit row `audit` makes of a decided
    /// opening is stored in that transaction too.
    fn open_mfa_session(
        &self,
        mfa_token_hash: &str,
        proof: &MfaProof,
        new: &NewSession,
        verified_hash: &str,
        audit: OpeningAuditOf,
    ) -> StoreResult<MfaOpening>;
    /// Takes one of the mfaToken's `max_attempts` answers before the answer is checked (one
    /// conditional update: concurrent answers on one token never get more than
    /// `max_attempts` checks between them). False when the token is unknown, used or has no
    /// answer left.
    fn reserve_mfa_attempt(&self, mfa_token_hash: &str, max_attempts: u32) -> StoreResult<bool>;
    /// After a wrong answer (its attempt reserved by `reserve_mfa_attempt`): deletes the
    /// mfaToken once its attempts reach `max_attempts`. True when it died now.
    fn mfa_wrong_answer(&self, mfa_token_hash: &str, max_attempts: u32) -> StoreResult<bool>;
    /// Confirms a TOTP enrolment in one transaction: uses up its pending one-time token,
    /// stores the secret with `last_step` = the confirming step, replaces the recovery
    /// codes, revokes every other session of the user, and adds `otp` to the confirming
    /// session's auth methods.
    fn enable_totp(&self, enrollment: &TotpEnrollment) -> StoreResult<EnableOutcome>;
    /// Spends `proof` outside a login (disable, regenerate): false when already spent.
    fn spend_mfa_proof(&self, user_id: Uuid, proof: &MfaProof) -> StoreResult<bool>;
    /// Replaces the account's recovery codes by `hashes`, in one transaction.
    fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()>;
    /// Deletes TOTP and the recovery codes (and the pending mfaTokens and enrolments), in one
    /// transaction; with `reset_all` (the admin's reset, CONTRACT 11.4) in that same
    /// transaction also the passkeys and the user's pending passkey ceremonies, and revokes
    /// every live session of the user. An unknown user changes nothing.
    fn disable_mfa(&self, user_id: Uuid, reset_all: bool, now: Millis) -> StoreResult<MfaRemoved>;
    // Accounts (admin).

    /// Users matching `filter`, in creation order (`created_at`, then `id`), each with the
    /// lockout of its email (`login_failures` key `email:<email>`) as of `now`.
    fn list_users(&self, filter: &UserFilter, now: Millis) -> StoreResult<Vec<Account>>;
    /// Sets the user's `disabled` flag; disabling also revokes every live session of the
    /// user in the same transaction (`sessions`: how many). Disabling the only enabled admin
    /// is `ChangeOutcome::LastAdmin` under `LastAdmin::Keep`: the enabled admins are read
    /// (and, where needed, locked) in the same transaction and `domain::admins::decide`
    /// rules, so two concurrent changes cannot both take one of the last two admins away.
    fn set_disabled(
        &self,
        user_id: Uuid,
        disabled: bool,
        now: Millis,
        last_admin: LastAdmin,
    ) -> StoreResult<ChangeOutcome>;
    /// Changes the user's role and revokes every live session of the user (access tokens
    /// carry the role) in one transaction. The last-admin rule as for `set_disabled`.
    fn set_role(
        &self,
        user_id: Uuid,
        role: Role,
        now: Millis,
        last_admin: LastAdmin,
    ) -> StoreResult<ChangeOutcome>;
    /// Deletes the user with its sessions and refresh tokens (audit events stay); `user` is
    /// the deleted user, `sessions` how many of its sessions were live. The last-admin rule
    /// as for `set_disabled`.
    fn delete_user(
        &self,
        user_id: Uuid,
        now: Millis,
        last_admin: LastAdmin,
    ) -> StoreResult<ChangeOutcome>;
}

pub type DynStore = Arc<dyn Store>;

/// A read answered on the async runtime without holding a thread (see
/// `Store::session_with_user_async`): `Some` with the store's answer, or `None` when the
/// caller should ask the blocking pool instead.
pub type QuickRead<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<StoreResult<T>>> + Send>>;

/// Connection options that do not come from the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub pool_size: u32,
    pub busy_timeout: Duration,
    /// Where the pool reports its connection attempts (see `health`).
    pub health: Arc<health::DbHealth>,
}

/// Checks a `database.url` as `open` will, without opening anything (for `check-config` and
/// every command before it touches the database): a known scheme (`sqlite://PATH`, or
/// `postgres://` / `postgresql://` in libpq's URL form), a SQLite path, and a PostgreSQL URL
/// this build can serve.
///
/// # Errors
/// Why the URL is refused, one line that never repeats a password; callers prefix the key.
pub fn check_url(url: &str) -> Result<(), String> {
    match url.split_once(':') {
        Some(("sqlite", rest)) if !rest.trim_start_matches("//").is_empty() => Ok(()),
        Some(("sqlite", _)) => Err("sqlite URL has no path (e.g. sqlite://data/authd.db)".into()),
        Some(("postgres" | "postgresql", _)) => postgres::check_url(url),
        Some((scheme, _)) => Err(format!(
            "unsupported database scheme '{scheme}' (this build supports sqlite:// and postgres://)"
        )),
        None => Err(format!(
            "'{url}' is not a URL such as sqlite://data/authd.db"
        )),
    }
}

/// `open`, for a database that must exist already: a SQLite file that is not there is an
/// error instead of being created (`authd doctor` changes nothing). Migrates nothing.
pub fn open_existing(url: &str, options: &StoreOptions) -> StoreResult<DynStore> {
    if let Some(("sqlite", rest)) = url.split_once(':') {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if !std::path::Path::new(path).is_file() {
            return Err(StoreError::Unavailable(format!(
                "the SQLite database {path} does not exist"
            )));
        }
    }
    open(url, options)
}

/// Opens the backend named by the URL's scheme: `sqlite://PATH`, or `postgres://` /
/// `postgresql://` (libpq's URL form, with its query parameters). Refuses what `check_url`
/// refuses.
pub fn open(url: &str, options: &StoreOptions) -> StoreResult<DynStore> {
    match url.split_once(':') {
        Some(("sqlite", rest)) => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            Ok(Arc::new(sqlite::SqliteStore::open(path, options)?))
        }
        Some(("postgres" | "postgresql", _)) => {
            Ok(Arc::new(postgres::PostgresStore::open(url, options)?))
        }
        Some((scheme, _)) => Err(StoreError::Other(format!(
            "unsupported database scheme '{scheme}' (this build supports sqlite:// and postgres://)"
        ))),
        None => Err(StoreError::Other(format!("'{url}' is not a database URL"))),
    }
}
