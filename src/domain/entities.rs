//! Domain layer: the entities services and stores exchange.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::time::Millis;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role '{other}' (expected user or admin)")),
        }
    }
}

/// A user as clients may see it (never with a password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub disabled: bool,
    pub created_at: Millis,
    pub last_login_at: Option<Millis>,
    /// Whether the account proved it owns `email` (CONTRACT 10.4). Accounts from before
    /// migration V13, and those made by `create-user`, `import-users` and the admin routes, are
    /// verified; a self-registered account is not until its verification link is used.
    pub email_verified: bool,
}

/// A user with the bcrypt hash needed to check a login.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

/// A user about to be inserted; email and name already validated, password already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: Millis,
    /// `User::email_verified` of the new account.
    pub email_verified: bool,
}

/// A refresh session: one login on one device, carried by a chain of rotating refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: Millis,
    pub last_used_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub device_info: Option<String>,
    /// How the session was opened (CONTRACT 11.1), in the order the factors were shown:
    /// `[Pwd]`, `[Pwd, Otp]`, `[Pwd, RecoveryCode]`, `[Pwd, Webauthn]`, `[Webauthn]`. Stored as
    /// a JSON array of `AuthMethod::as_str` names; a session from before migration V8 reads
    /// as `[Pwd]`. A confirmed TOTP enrolment adds `Otp` to the confirming session.
    pub auth_methods: Vec<AuthMethod>,
}

/// One way a session's user proved who it is (CONTRACT 11.1 `authMethods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// The account's password.
    Pwd,
    /// A TOTP code (RFC 6238).
    Otp,
    /// One of the account's recovery codes.
    RecoveryCode,
    /// A passkey (WebAuthn assertion with user verification).
    Webauthn,
}

impl AuthMethod {
    /// Every method, in a stable order.
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::Pwd,
        AuthMethod::Otp,
        AuthMethod::RecoveryCode,
        AuthMethod::Webauthn,
    ];

    /// The contract's name: `pwd`, `otp`, `recovery_code`, `webauthn`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Pwd => "pwd",
            AuthMethod::Otp => "otp",
            AuthMethod::RecoveryCode => "recovery_code",
            AuthMethod::Webauthn => "webauthn",
        }
    }

    /// Whether it is a second factor (`mfa.required_for_admins`): anything but the password.
    pub fn is_second_factor(self) -> bool {
        self != AuthMethod::Pwd
    }

    /// The stored form of a list: a JSON array of names.
    pub fn encode_list(methods: &[AuthMethod]) -> String {
        let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        serde_json::to_string(&names).unwrap_or_else(|_| "[\"pwd\"]".into())
    }

    /// A stored list: NULL (a session from before migration V8) is `[Pwd]`; unknown names
    /// are skipped.
    pub fn decode_list(stored: Option<&str>) -> Vec<AuthMethod> {
        let Some(text) = stored else {
            return vec![AuthMethod::Pwd];
        };
        serde_json::from_str::<Vec<String>>(text)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| AuthMethod::ALL.into_iter().find(|m| m.as_str() == n))
            .collect()
    }
}

impl Session {
    pub fn is_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// A refresh token as stored: only its SHA-256 hash.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: String,
    pub session_id: Uuid,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A rotation request: present `presented_hash`, get `replacement` stored if allowed.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The session the presented token names (a hint: tokens issued before migration V4
    /// name none and are found by hash).
    pub presented_session: Uuid,
    pub presented_hash: String,
    pub replacement_hash: String,
    pub now: Millis,
    pub expires_at: Millis,
    /// Milliseconds after its rotation during which a rotated-away token still rotates.
    pub reuse_grace: Millis,
}

/// What a rotation did. Only `Rotated` stored a new token; `Reused` revoked the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// A new token was stored; `role` and `disabled` are the user's, read in the same
    /// transaction.
    Rotated {
        user_id: Uuid,
        session_id: Uuid,
        role: Role,
        disabled: bool,
    },
    Unknown,
    Expired {
        user_id: Uuid,
        session_id: Uuid,
    },
    Revoked {
        user_id: Uuid,
        session_id: Uuid,
    },
    Reused {
        user_id: Uuid,
        session_id: Uuid,
    },
}

/// What opening a session on a checked credential did (see `Store::open_session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOpening {
    /// The session and its first refresh token were stored; the user as stored (role and
    /// `last_login_at` from the row read in the same transaction).
    Opened(User),
    /// Nothing was stored: the account changed since its credential was checked.
    Refused { user_id: Uuid, why: Refusal },
}

/// Why a session was not opened: what the account's row says in the session's own
/// transaction, against what the caller checked before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The account was deleted.
    Gone,
    /// The password hash is no longer the one that was verified (a password change).
    CredentialChanged,
    /// The account is disabled.
    Disabled,
}

impl Refusal {
    /// The audit reason of a login refused for this.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Gone => "gone",
            Refusal::CredentialChanged => "credential_changed",
            Refusal::Disabled => "disabled",
        }
    }
}

/// Counts of what a cleanup deleted (or would delete, on a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupCounts {
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub login_failures: u64,
    /// Rows of the revoked-session feed whose tokens have all expired (see
    /// `Store::purge_revocation_feed`).
    pub revocation_feed: u64,
    /// One-time tokens past their lifetime (every purpose).
    pub one_time_tokens: u64,
    /// Sent or failed mails finished before the cutoff (never a queued or sending one).
    pub mails: u64,
    /// Accounts still unverified after `email.unverified_ttl` (only with
    /// `email.require_verification`; see `Store::purge_unverified`).
    pub unverified_accounts: u64,
    /// The run stopped early because another process was cleaning up the same database
    /// (PostgreSQL's purge lock, see docs/DESIGN.md); the counts are what it did until then.
    pub stopped_early: bool,
}

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Millis,
    pub event: String,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    /// Who acted, for admin events: the acting admin's user id, or `cli`.
    pub actor: Option<String>,
}

/// Filters for reading the audit trail; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Events recorded with this email, or for the user who has it.
    pub email: Option<String>,
    /// Set by the service from `email`: that user's id, when the account exists.
    pub user_id: Option<Uuid>,
    pub event: Option<String>,
    pub since: Option<Millis>,
    pub limit: u32,
}

/// A user as an admin sees it: with the lockout of its email and its second factors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: User,
    /// When the failed-login lockout of the user's email ends, if it is locked now.
    pub locked_until: Option<Millis>,
    /// Its TOTP and passkeys (CONTRACT 11.4).
    pub mfa: super::mfa::MfaSummary,
}

/// Which users an admin lists, in creation order (`created_at`, then `id`).
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only users created after this position (a page's cursor): `(created_at, id)`.
    pub after: Option<(Millis, Uuid)>,
    /// Only the user with this (normalised) email.
    pub email: Option<String>,
    pub role: Option<Role>,
    /// Only disabled users.
    pub disabled: bool,
    /// Only users whose email is locked out at `now`.
    pub locked: bool,
    /// At most this many users; `None`: all of them.
    pub limit: Option<u32>,
}

/// A failed-login counter for one key (a client IP or an email).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCounter {
    pub count: u32,
    pub window_start: Millis,
    pub locked_until: Option<Millis>,
}

/// One row of `migrate --status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationEntry {
    pub version: i64,
    pub name: String,
    /// When it was applied (RFC 3339), or `None` if pending.
    pub applied_on: Option<String>,
    /// Why the database would be refused because of this applied migration: unknown to this
    /// binary (the database is newer), or edited since it was applied.
    pub problem: Option<String>,
}

/// Who a request comes from, as recorded on sessions and audit events.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}
