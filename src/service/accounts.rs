//! Service layer: accounts over their whole life, for admins. The CLI (`authd users ...`)
//! and the admin HTTP API (`/api/admin/users...`) call these same methods: listing with an
//! opaque cursor, showing, disabling and enabling, deleting, changing the role or the
//! password, clearing the failed-login lockout, listing or revoking a user's sessions, and
//! resetting its second factors.
//! Every method records an `admin_<action>` audit event naming the acting admin (`actor`).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use uuid::Uuid;

use super::audit::{Event, Record};
use super::{Core, Principal};
use crate::domain::admins::{ChangeOutcome, LastAdmin};
use crate::domain::email_change::SetEmailOutcome;
use crate::domain::mfa::MfaRemoved;
use crate::domain::time::{now_ms, Millis};
use crate::domain::{validate, Account, ClientInfo, Role, Session, User, UserFilter};
use crate::error::{AppError, AppResult};

/// The default page size of the admin user listing.
pub const DEFAULT_PAGE: u32 = 50;
/// The largest page size of the admin user listing.
pub const MAX_PAGE: u32 = 200;

/// Who performs an admin action: recorded as the audit event's `actor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A command run on the server (`authd users ...`): actor `cli`.
    Cli,
    /// An admin over HTTP: actor is its user id.
    Admin(Uuid),
}

impl Actor {
    /// The audit trail's `actor` value.
    pub fn label(&self) -> String {
        match self {
            Actor::Cli => "cli".into(),
            Actor::Admin(id) => id.to_string(),
        }
    }
}

/// Who acts and from where (recorded on the audit event).
#[derive(Debug, Clone)]
pub struct Acting {
    pub actor: Actor,
    pub client: ClientInfo,
}

impl Acting {
    /// An operator at the server's shell.
    pub fn cli() -> Self {
        Acting {
            actor: Actor::Cli,
            client: ClientInfo {
                ip: None,
                user_agent: Some("authd-cli".into()),
            },
        }
    }
}

/// What to list: filters, and the page (`cursor` as returned in `next_cursor`; `limit`
/// `None` lists every match at once, for the CLI).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub email: Option<String>,
    pub role: Option<Role>,
    pub disabled: bool,
    pub locked: bool,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// One page of users, in creation order; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<Account>,
    pub next_cursor: Option<String>,
}

/// A user with its lockout and its number of live sessions (`users show`).
#[derive(Debug, Clone)]
pub struct AccountDetails {
    pub account: Account,
    pub live_sessions: usize,
}

/// What disabling, deleting or changing the role of an account did.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The account as changed (a deleted one: as it was).
    pub account: Account,
    /// How many live sessions the change revoked (a deletion: deleted).
    pub sessions: usize,
    /// The change took away the last enabled admin: only ever from the CLI (over HTTP such a
    /// change is refused), which warns the operator.
    pub leaves_no_admin: bool,
}

/// What an admin's reset of second factors did (`Accounts::mfa_reset`).
#[derive(Debug, Clone)]
pub struct MfaResetDone {
    /// The account after the reset (its `mfa` all off).
    pub account: Account,
    /// What was removed, and how many live sessions were revoked.
    pub removed: MfaRemoved,
}

/// The admin's account operations (see the module comment).
#[derive(Clone)]
pub struct Accounts {
    pub(super) core: Arc<Core>,
}

/// The failure-counter key of an email's lockout (as counted by login).
fn lockout_key(email: &str) -> String {
    format!("email:{email}")
}

/// A page's cursor: the position `(created_at, id)` of its last user, written as base64url
/// (no padding) of `<created_at ms>:<id, hyphenated lower-case>`. Not authenticated: it is
/// only a position, which any admin may ask for (every user is listed to it anyway) and which
/// stays valid across restarts, instances and the deletion of that user (docs/API.md).
fn encode_cursor(user: &User) -> String {
    cursor_at(user.created_at, user.id)
}

fn cursor_at(created_at: Millis, id: Uuid) -> String {
    B64.encode(format!("{created_at}:{}", id.hyphenated()))
}

/// The position of a cursor. Well-formed means exactly what `encode_cursor` writes for some
/// position with `created_at` 0 or more: anything else (not base64url, padding, whitespace,
/// another form of the same number or id) is a validation error on `cursor`.
fn decode_cursor(raw: &str) -> AppResult<(Millis, Uuid)> {
    let bad = || {
        AppError::validation(
            "cursor",
            "is not a well-formed cursor (pass a nextCursor back unchanged)",
        )
    };
    let bytes = B64.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    let at: Millis = at.parse().ok().filter(|at| *at >= 0).ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    if cursor_at(at, id) != raw {
        return Err(bad());
    }
    Ok((at, id))
}

impl Accounts {
    pub fn new(core: Arc<Core>) -> Self {
        Accounts { core }
    }

    /// The admin acting through an access token (every `/api/admin/*` request): its stored
    /// role (read with the session when the token was checked, so a demotion bites at once)
    /// must be `admin`, else `Forbidden`. With `mfa.required_for_admins` (CONTRACT 11.2), the
    /// token's session must also have been opened with a second factor (`authMethods`
    /// holding `otp`, `recovery_code` or `webauthn`, also read with the session, so a reset
    /// or a newly confirmed TOTP counts on the next request), else `Forbidden`.
    pub fn acting_admin(&self, who: &Principal, client: ClientInfo) -> AppResult<Acting> {
        if who.user.role != Role::Admin {
            return Err(AppError::Forbidden);
        }
        if self.core.settings.mfa.required_for_admins
            && !who.auth_methods.iter().any(|m| m.is_second_factor())
        {
            return Err(AppError::Forbidden);
        }
        Ok(Acting {
            actor: Actor::Admin(who.user_id),
            client,
        })
    }

    /// A page size as given in a request: absent means `DEFAULT_PAGE`; anything but an
    /// integer from 1 to `MAX_PAGE` is a validation error on `limit`.
    pub fn page_limit(raw: Option<&str>) -> AppResult<u32> {
        let Some(raw) = raw else {
            return Ok(DEFAULT_PAGE);
        };
        raw.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::validation("limit", &format!("must be an integer from 1 to {MAX_PAGE}"))
            })
    }

    /// A user id as it appears in a URL: anything but a UUID names no user (`NotFound`).
    pub fn parse_id(raw: &str) -> AppResult<Uuid> {
        Uuid::parse_str(raw).map_err(|_| AppError::NotFound)
    }

    /// A user named by id or by email (as typed by an operator); `NotFound` if none.
    pub async fn resolve(&self, user: &str) -> AppResult<Uuid> {
        if let Ok(id) = Uuid::parse_str(user.trim()) {
            if let Some(u) = self.core.db(move |s| s.user_by_id(id)).await? {
                return Ok(u.id);
            }
        }
        let email = validate::normalize_email(user);
        let found = self.core.db(move |s| s.user_by_email(&email)).await?;
        found.map(|c| c.user.id).ok_or(AppError::NotFound)
    }

    /// Users in creation order, one page (or all with `limit: None`).
    pub async fn list(&self, by: &Acting, q: ListQuery) -> AppResult<UserPage> {
        let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
        let filter = UserFilter {
            after,
            email: validate::email_filter(q.email.as_deref())
                .map_err(|e| AppError::Validation(vec![e]))?,
            role: q.role,
            disabled: q.disabled,
            locked: q.locked,
            // One more than asked: whether a next page exists.
            limit: q.limit.map(|n| n + 1),
        };
        let now = now_ms();
        let mut users = self.core.db(move |s| s.list_users(&filter, now)).await?;
        let next_cursor = match q.limit {
            Some(n) if users.len() > n as usize => {
                users.truncate(n as usize);
                users.last().map(|a| encode_cursor(&a.user))
            }
            _ => None,
        };
        self.record(by, Event::AdminList, None, None, None).await;
        Ok(UserPage { users, next_cursor })
    }

    /// The user, its lockout and its number of live sessions.
    pub async fn show(&self, by: &Acting, id: Uuid) -> AppResult<AccountDetails> {
        let user = self.user(id).await?;
        let now = now_ms();
        let live = self.core.db(move |s| s.live_sessions(id, now)).await?.len();
        let account = self.account(user).await?;
        self.record(by, Event::AdminShow, Some(&account.user), None, None)
            .await;
        Ok(AccountDetails {
            account,
            live_sessions: live,
        })
    }

    /// The user's live sessions, newest first.
    pub async fn sessions(&self, by: &Acting, id: Uuid) -> AppResult<Vec<Session>> {
        let user = self.user(id).await?;
        let now = now_ms();
        let sessions = self.core.db(move |s| s.live_sessions(id, now)).await?;
        self.record(by, Event::AdminSessions, Some(&user), None, None)
            .await;
        Ok(sessions)
    }

    /// Revokes every live session of the user; returns how many.
    pub async fn revoke_sessions(&self, by: &Acting, id: Uuid) -> AppResult<usize> {
        let user = self.user(id).await?;
        let n = self
            .core
            .db(move |s| s.revoke_user_sessions(id, now_ms(), "admin"))
            .await?;
        let reason = format!("{n} session(s)");
        self.record(by, Event::AdminRevoke, Some(&user), Some(&reason), None)
            .await;
        Ok(n)
    }

    /// Disables the account and revokes its sessions (one transaction). An admin cannot
    /// disable itself, and over HTTP not the last enabled admin (see `last_admin`).
    pub async fn disable(&self, by: &Acting, id: Uuid) -> AppResult<Changed> {
        refuse_self(
            by,
            id,
            "names the acting admin: an admin cannot disable itself",
        )?;
        let policy = last_admin(by);
        let (user, n, last) = done(
            self.core
                .db(move |s| s.set_disabled(id, true, now_ms(), policy))
                .await?,
            "id",
        )?;
        let reason = format!("revoked {n} session(s){}", left_no_admin(last));
        self.record(by, Event::AdminDisable, Some(&user), Some(&reason), None)
            .await;
        self.changed(user, n, last).await
    }

    /// Clears the disabled flag; nothing else changes.
    pub async fn enable(&self, by: &Acting, id: Uuid) -> AppResult<Account> {
        let policy = last_admin(by);
        let (user, _, _) = done(
            self.core
                .db(move |s| s.set_disabled(id, false, now_ms(), policy))
                .await?,
            "id",
        )?;
        self.record(by, Event::AdminEnable, Some(&user), None, None)
            .await;
        self.account(user).await
    }

    /// Deletes the user with its sessions and refresh tokens (its audit events stay);
    /// `sessions` is how many live sessions it had, `account` as it was. An admin cannot
    /// delete itself, and over HTTP not the last enabled admin.
    pub async fn delete(&self, by: &Acting, id: Uuid) -> AppResult<Changed> {
        refuse_self(
            by,
            id,
            "names the acting admin: an admin cannot delete itself",
        )?;
        let policy = last_admin(by);
        let (user, n, last) = done(
            self.core
                .db(move |s| s.delete_user(id, now_ms(), policy))
                .await?,
            "id",
        )?;
        let reason = format!("deleted with {n} live session(s){}", left_no_admin(last));
        self.record(by, Event::AdminDelete, Some(&user), Some(&reason), None)
            .await;
        self.changed(user, n, last).await
    }

    /// Changes the role and revokes the user's sessions (their access tokens carry the old
    /// role). Over HTTP, demoting the last enabled admin (itself included) is refused.
    pub async fn set_role(&self, by: &Acting, id: Uuid, role: Role) -> AppResult<Changed> {
        let before = self.user(id).await?;
        let policy = last_admin(by);
        let (user, n, last) = done(
            self.core
                .db(move |s| s.set_role(id, role, now_ms(), policy))
                .await?,
            "role",
        )?;
        let reason = format!(
            "{} -> {}; revoked {n} session(s){}",
            before.role,
            user.role,
            left_no_admin(last)
        );
        self.record(by, Event::AdminSetRole, Some(&user), Some(&reason), None)
            .await;
        self.changed(user, n, last).await
    }

    /// Sets a new password under register's policy (errors on the field `password`),
    /// revokes every session of the user and clears the lockout of its email; returns the
    /// account and how many sessions were revoked.
    pub async fn set_password(
        &self,
        by: &Acting,
        id: Uuid,
        password: &str,
    ) -> AppResult<(Account, usize)> {
        let user = self.user(id).await?;
        let password = validate::normalize_password(password);
        let errors = validate::password_policy(&password, self.core.settings.password.min_length);
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let hash = self.core.passwords.hash(password).await?;
        let key = lockout_key(&user.email);
        let n = self
            .core
            .db(move |s| {
                let n = s.set_password_hash(id, &hash, None, now_ms())?;
                s.clear_failures(&key)?;
                Ok(n)
            })
            .await?;
        let reason = format!("revoked {n} session(s)");
        self.record(
            by,
            Event::AdminSetPassword,
            Some(&user),
            Some(&reason),
            None,
        )
        .await;
        Ok((self.account(user).await?, n))
    }

    /// Sets the user's address (CONTRACT 10.5, `authd users set-email` and
    /// `POST /api/admin/users/{id}/email`): register's email rules (errors on the field
    /// `email`), 409 `EMAIL_TAKEN` when another account has it; in one transaction the address
    /// is set (verified), every session of the user revoked, its mailed one-time tokens and a
    /// pending email change killed. Returns the address before, the account and how many
    /// sessions were revoked.
    pub async fn set_email(
        &self,
        by: &Acting,
        id: Uuid,
        email: &str,
    ) -> AppResult<(String, Account, usize)> {
        let email = validate::email(email).map_err(|e| AppError::Validation(vec![e]))?;
        let target = email.clone();
        let outcome = self
            .core
            .db(move |s| s.set_email(id, &target, now_ms()))
            .await;
        // A registration that took the address between the check and the update (on
        // PostgreSQL) fails the address's unique index: the address is taken all the same.
        let outcome = match outcome {
            Err(AppError::Conflict(_)) => return Err(AppError::EmailTaken),
            other => other?,
        };
        let (user, old_email, n) = match outcome {
            SetEmailOutcome::Done {
                user,
                old_email,
                sessions,
            } => (user, old_email, sessions),
            SetEmailOutcome::NotFound => return Err(AppError::NotFound),
            SetEmailOutcome::EmailTaken => return Err(AppError::EmailTaken),
        };
        let reason = format!("{old_email} -> {email}; revoked {n} session(s)");
        self.record(by, Event::AdminSetEmail, Some(&user), Some(&reason), None)
            .await;
        Ok((old_email, self.account(user).await?, n))
    }

    /// The admin's reset of second factors (CONTRACT 11.4, `authd users mfa-reset` and
    /// `POST /api/admin/users/{id}/mfa/reset`): removes the account's TOTP, recovery codes
    /// and passkeys and revokes every session of it, in one transaction (`Store::disable_mfa`
    /// with `reset_all`); its next login asks for no second factor. Audited
    /// `admin_mfa_reset`. An admin over HTTP cannot reset its own factors (a validation error
    /// on `id`: it would take the second factor off the session it acts with); `NotFound`
    /// for an unknown user.
    pub async fn mfa_reset(&self, by: &Acting, id: Uuid) -> AppResult<MfaResetDone> {
        refuse_self(
            by,
            id,
            "names the acting admin: an admin cannot reset its own second factors",
        )?;
        let user = self.user(id).await?;
        let removed = self
            .core
            .db(move |s| s.disable_mfa(id, true, now_ms()))
            .await?;
        let reason = format!(
            "TOTP {}; {} passkey(s) removed; revoked {} session(s)",
            if removed.totp { "removed" } else { "was off" },
            removed.passkeys,
            removed.revoked_sessions
        );
        self.record(by, Event::AdminMfaReset, Some(&user), Some(&reason), None)
            .await;
        Ok(MfaResetDone {
            account: self.account(user).await?,
            removed,
        })
    }

    /// Clears the failed-login lockout of the user's email.
    pub async fn unlock(&self, by: &Acting, id: Uuid) -> AppResult<Account> {
        let user = self.user(id).await?;
        let key = lockout_key(&user.email);
        self.core.db(move |s| s.clear_failures(&key)).await?;
        self.record(by, Event::AdminUnlock, Some(&user), None, None)
            .await;
        self.account(user).await
    }

    /// Clears the failed-login lockout of an email, whether or not an account has it (the
    /// lockout counts attempts on unknown emails too). A user id is accepted for the user's
    /// email. Returns the email as login counts it (`validate::login_email`: normalised, or
    /// its bounded stand-in when over 254 characters) and whether it was locked.
    pub async fn unlock_email(&self, by: &Acting, email_or_id: &str) -> AppResult<(String, bool)> {
        let by_id = match Uuid::parse_str(email_or_id.trim()) {
            Ok(id) => self.core.db(move |s| s.user_by_id(id)).await?,
            Err(_) => None,
        };
        // As login counts it: an over-long email is cleared under the same bounded key.
        let email = match &by_id {
            Some(u) => u.email.clone(),
            None => validate::login_email(email_or_id),
        };
        if email.is_empty() {
            return Err(AppError::validation("email", "is required"));
        }
        let user = match by_id {
            Some(u) => Some(u),
            None => {
                let lookup = email.clone();
                self.core
                    .db(move |s| s.user_by_email(&lookup))
                    .await?
                    .map(|c| c.user)
            }
        };
        let key = lockout_key(&email);
        let now = now_ms();
        let was_locked = self
            .core
            .db(move |s| {
                let counter = s.failure_counter(&key)?;
                s.clear_failures(&key)?;
                Ok(counter
                    .and_then(|c| c.locked_until)
                    .is_some_and(|u| u > now))
            })
            .await?;
        let reason = if was_locked {
            "was locked"
        } else {
            "was not locked"
        };
        self.record(
            by,
            Event::AdminUnlock,
            user.as_ref(),
            Some(reason),
            Some(&email),
        )
        .await;
        Ok((email, was_locked))
    }

    async fn changed(
        &self,
        user: User,
        sessions: usize,
        leaves_no_admin: bool,
    ) -> AppResult<Changed> {
        Ok(Changed {
            account: self.account(user).await?,
            sessions,
            leaves_no_admin,
        })
    }

    pub(super) async fn user(&self, id: Uuid) -> AppResult<User> {
        self.core
            .db(move |s| s.user_by_id(id))
            .await?
            .ok_or(AppError::NotFound)
    }

    /// The user with the lockout of its email and its second factors, as of now.
    pub(super) async fn account(&self, user: User) -> AppResult<Account> {
        let (key, id) = (lockout_key(&user.email), user.id);
        let now = now_ms();
        let (counter, mfa) = self
            .core
            .db(move |s| Ok((s.failure_counter(&key)?, s.mfa_state(id)?)))
            .await?;
        Ok(Account {
            user,
            locked_until: counter.and_then(|c| c.locked_until).filter(|u| *u > now),
            mfa: mfa.summary(),
        })
    }

    pub(super) async fn record(
        &self,
        by: &Acting,
        event: Event,
        target: Option<&User>,
        reason: Option<&str>,
        email: Option<&str>,
    ) {
        self.core
            .audit_by(
                &by.actor.label(),
                Record {
                    event,
                    user_id: target.map(|u| u.id),
                    email: email.or(target.map(|u| u.email.as_str())),
                    client: &by.client,
                    success: true,
                    reason,
                },
            )
            .await;
    }
}

/// The last-admin rule for an action (`domain::admins`): an admin over HTTP may not leave the
/// database without an enabled admin; an operator at the server's shell may (and is warned),
/// since it can always make one again there.
fn last_admin(by: &Acting) -> LastAdmin {
    match by.actor {
        Actor::Admin(_) => LastAdmin::Keep,
        Actor::Cli => LastAdmin::Allow,
    }
}

/// The user, session count and last-admin flag of a written change; `NotFound`, or a
/// validation error on `field` when the last-admin rule refused it.
fn done(outcome: ChangeOutcome, field: &str) -> AppResult<(User, usize, bool)> {
    match outcome {
        ChangeOutcome::Done {
            user,
            sessions,
            leaves_no_admin,
        } => Ok((user, sessions, leaves_no_admin)),
        ChangeOutcome::NotFound => Err(AppError::NotFound),
        ChangeOutcome::LastAdmin => Err(AppError::validation(
            field,
            "would leave no enabled admin; promote or enable another admin first",
        )),
    }
}

/// The audit reason's note when a change took away the last enabled admin.
fn left_no_admin(leaves_no_admin: bool) -> &'static str {
    if leaves_no_admin {
        "; no enabled admin left"
    } else {
        ""
    }
}

/// An admin over HTTP may not lock itself out (disable or delete its own account).
fn refuse_self(by: &Acting, target: Uuid, message: &str) -> AppResult<()> {
    match by.actor {
        Actor::Admin(me) if me == target => Err(AppError::validation("id", message)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let user = User {
            id: Uuid::new_v4(),
            email: "a@example.com".into(),
            name: None,
            role: Role::User,
            disabled: false,
            created_at: 1_764_000_000_123,
            last_login_at: None,
            email_verified: true,
        };
        let cursor = encode_cursor(&user);
        assert_eq!(decode_cursor(&cursor).unwrap(), (user.created_at, user.id));
        // Any well-formed position is accepted, whoever wrote it.
        let nil = B64.encode("0:00000000-0000-0000-0000-000000000000");
        assert_eq!(decode_cursor(&nil).unwrap(), (0, Uuid::nil()));
        let (at, id) = (user.created_at, user.id);
        let other_forms = [
            format!("{at}:{}", id.simple()),
            format!("{at}:{}", id.urn()),
            format!("{at}:{}", id.braced()),
            format!("{at}:{}", id.hyphenated().to_string().to_uppercase()),
            format!("+{at}:{id}"),
            format!("0{at}:{id}"),
            format!("-1:{id}"),
            format!("{at}:{id}:"),
        ];
        // 50 bytes: the padded form ends in one `=`.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(format!("{at}:{id}"));
        assert!(padded.ends_with('='));
        for bad in ["", "x", "!!!", &B64.encode("12:nope"), &B64.encode("x:y")]
            .into_iter()
            .map(String::from)
            .chain(other_forms.iter().map(|f| B64.encode(f)))
            .chain([format!(" {cursor}"), format!("{cursor}\n"), padded])
        {
            assert!(
                matches!(decode_cursor(&bad), Err(AppError::Validation(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn page_limits() {
        assert_eq!(Accounts::page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(Accounts::page_limit(Some("1")).unwrap(), 1);
        assert_eq!(Accounts::page_limit(Some("200")).unwrap(), 200);
        for bad in ["0", "201", "-1", "abc", "", "1.5"] {
            assert!(Accounts::page_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
