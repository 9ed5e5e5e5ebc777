//! Service layer: registration and login, refresh-token rotation with reuse detection,
//! logout, session listing and revocation, access-token authentication. Every login's
//! password check goes through the login limits (`service::limits`).

use std::sync::Arc;

use uuid::Uuid;

use super::audit::{log_event, Event, Record};
use super::limits::LoginLimits;
use super::users::{NewUserInput, Users};
use super::Core;
use crate::crypto::jwt::{AccessTokens, VerifyError};
use crate::crypto::keys::KeySet;
use crate::crypto::refresh::RefreshTokens;
use crate::domain::time::{duration_ms, now_ms, Millis};
use crate::domain::{
    validate, AuthMethod, ClientInfo, Refusal, RotateOutcome, Rotation, Session, SessionOpening,
    User,
};
use crate::error::{AppError, AppResult, FieldError};
use crate::store::NewSession;

/// The audit record of a rotation's outcome (stored in the rotation's own transaction).
fn refresh_record<'a>(outcome: &RotateOutcome, client: &'a ClientInfo) -> Record<'a> {
    let (event, user_id, reason) = match outcome {
        RotateOutcome::Rotated {
            user_id, disabled, ..
        } => (
            Event::Refresh,
            Some(*user_id),
            disabled.then_some("disabled"),
        ),
        RotateOutcome::Unknown => (Event::Refresh, None, Some("unknown")),
        RotateOutcome::Expired { user_id, .. } => (Event::Refresh, Some(*user_id), Some("expired")),
        RotateOutcome::Revoked { user_id, .. } => (Event::Refresh, Some(*user_id), Some("revoked")),
        RotateOutcome::Reused { user_id, .. } => {
            (Event::RefreshReuse, Some(*user_id), Some("reuse"))
        }
    };
    Record {
        event,
        user_id,
        email: None,
        client,
        success: reason.is_none(),
        reason,
    }
}

/// A refresh token as a request presented it (refresh, logout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No token at all: 401 `TOKEN_MISSING`.
    Missing,
    /// Exactly one token.
    One(String),
    /// More than one refresh cookie of the configured name, in one `Cookie` header or
    /// several. A cookie planted from a sibling subdomain (`Domain=.example.com`) is sent next
    /// to the real one, and "the first one wins" would then log the victim into the
    /// planter's session; such a request is refused (401 `TOKEN_INVALID`), audited, and
    /// neither token is spent.
    Ambiguous,
}

impl Presented {
    /// The body's `refreshToken` wins over the cookie (contract, section 3). An ambiguous
    /// cookie next to a body token does not matter: the cookie is not read, and the body is
    /// not something a planted cookie can change.
    pub fn body_over_cookie(body: Option<String>, cookie: Presented) -> Presented {
        match body {
            Some(token) => Presented::One(token),
            None => cookie,
        }
    }
}

/// The audit record of a login whose password matched, from what opening its session did
/// (stored in that transaction).
pub(super) fn login_record<'a>(
    outcome: &SessionOpening,
    email: &'a str,
    client: &'a ClientInfo,
) -> Record<'a> {
    let (user_id, reason) = match outcome {
        SessionOpening::Opened(user) => (user.id, None),
        SessionOpening::Refused { user_id, why } => (*user_id, Some(why.as_str())),
    };
    Record {
        event: Event::Login,
        user_id: Some(user_id),
        email: Some(email),
        client,
        success: reason.is_none(),
        reason,
    }
}

/// A freshly issued token pair.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// A user with a new session's tokens (register, login).
#[derive(Debug, Clone)]
pub struct AuthOutcome {
    pub user: User,
    pub tokens: IssuedTokens,
}

/// Who presented a valid access token: the user and its session as stored when the token
/// was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub user: User,
    /// How the token's session was opened (CONTRACT 11.1 `authMethods`), read with the
    /// session (no second lookup): `mfa.required_for_admins` is judged on it.
    pub auth_methods: Vec<AuthMethod>,
}

#[derive(Debug, Clone)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
    pub device_info: Option<String>,
}

#[derive(Clone)]
pub struct Sessions {
    pub(super) core: Arc<Core>,
    pub(super) users: Users,
    pub(super) limits: LoginLimits,
    access: Arc<AccessTokens>,
    refresh: Arc<RefreshTokens>,
}

impl Sessions {
    /// Sessions signing and verifying with `keys` (see `service::keys::load_keys`).
    pub fn new(core: Arc<Core>, keys: KeySet) -> Self {
        let jwt = &core.settings.jwt;
        let algorithm = match jwt.algorithm {
            crate::config::JwtAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            crate::config::JwtAlgorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
        };
        let access = AccessTokens::with_keys(
            algorithm,
            &keys.access,
            &jwt.issuer,
            &jwt.audience,
            jwt.access_ttl,
            jwt.leeway,
        );
        Sessions {
            users: Users::new(core.clone()),
            limits: LoginLimits::new(core.clone()),
            access: Arc::new(access),
            refresh: Arc::new(RefreshTokens::with_keys(&keys.refresh)),
            core,
        }
    }

    /// Swaps in a new key set (after a rotation or revocation, possibly by another process):
    /// every clone of these sessions signs and verifies with it from now on.
    pub fn replace_keys(&self, keys: &KeySet) {
        self.access.replace_keys(&keys.access);
        self.refresh.replace_keys(&keys.refresh);
    }

    /// The key id new access tokens carry.
    pub fn signing_kid(&self) -> Option<String> {
        self.access.signing_kid()
    }

    /// The JWKS document for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        self.access.jwks(now_ms().div_euclid(1000))
    }

    /// Creates an account and signs it in on a new session (see `register`).
    pub(super) async fn register_signed_in(
        &self,
        input: NewUserInput,
        client: &ClientInfo,
    ) -> AppResult<AuthOutcome> {
        let (new, refresh_token) =
            self.new_session(Uuid::new_v4(), client, None, vec![AuthMethod::Pwd]);
        let (session_id, now) = (new.session.id, new.session.created_at);
        let user = self
            .users
            .create_signed_in(input, client, Event::Register, new)
            .await?;
        let tokens = self.tokens(user.id, session_id, user.role.as_str(), refresh_token, now);
        Ok(AuthOutcome { user, tokens })
    }

    /// Reserves a password check within the login limits, then checks the password; signs
    /// the user in on a new session.
    pub async fn login(&self, input: LoginInput, client: &ClientInfo) -> AppResult<AuthOutcome> {
        let mut errors = Vec::new();
        if input.email.trim().is_empty() {
            errors.push(FieldError::new("email", "is required"));
        }
        if input.password.is_empty() {
            errors.push(FieldError::new("password", "is required"));
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        // Over 254 characters: a bounded stand-in, judged (a wrong password), counted and
        // audited like any unknown email.
        let email = validate::login_email(&input.email);
        let attempt = match self.limits.reserve(&email, client).await {
            Ok(attempt) => attempt,
            Err(e) => {
                let reason = match e {
                    AppError::AccountLocked { .. } => "locked",
                    AppError::RateLimited { .. } => "rate_limited",
                    _ => return Err(e),
                };
                self.core.metrics.logins.with_label_values(&[reason]).inc();
                self.audit_login(None, &email, client, Some(reason)).await;
                return Err(e);
            }
        };
        let password = validate::normalize_password(&input.password);
        // One that could not have been registered is a wrong password, after the same bcrypt.
        let presentable = validate::password_presentable(&password);
        let found = {
            let email = email.clone();
            self.core.db(move |s| s.user_by_email(&email)).await?
        };
        let creds = match found {
            None => {
                self.core.passwords.verify_dummy().await?;
                attempt.failed().await;
                return self
                    .login_failed(None, &email, client, "unknown_email")
                    .await;
            }
            Some(c) => c,
        };
        let (presented, stored) = (password.clone(), creds.password_hash.clone());
        let matched = self.core.passwords.verify(password, stored).await?;
        if !(matched && presentable) {
            attempt.failed().await;
            return self
                .login_failed(Some(creds.user.id), &email, client, "wrong_password")
                .await;
        }
        attempt.succeeded().await;
        // An address that must be verified first (CONTRACT 10.4): said only after the right
        // password. A disabled account goes on to the refusal below.
        let settings = &self.core.settings.email;
        if settings.require_verification && !creds.user.email_verified && !creds.user.disabled {
            self.core
                .metrics
                .logins
                .with_label_values(&["email_not_verified"])
                .inc();
            self.audit_login(
                Some(creds.user.id),
                &email,
                client,
                Some("email_not_verified"),
            )
            .await;
            return Err(AppError::EmailNotVerified);
        }
        // A confirmed second factor: no session yet, an mfaToken instead (CONTRACT 11.1).
        // A disabled account goes on to the refusal below (403 after the right password).
        if !creds.user.disabled {
            self.require_second_factor(&creds, &email, client, input.device_info.as_deref())
                .await?;
        }
        // The session opens only if the account, in the session's own transaction, still
        // has the hash just verified and is enabled (see `store::opening`).
        let (new, refresh_token) = self.new_session(
            creds.user.id,
            client,
            input.device_info,
            vec![AuthMethod::Pwd],
        );
        let (session_id, now) = (new.session.id, new.session.created_at);
        let mut outcome = self
            .open(&new, &creds.password_hash, &email, client, false)
            .await?;
        if let SessionOpening::Refused {
            why: Refusal::CredentialChanged,
            ..
        } = outcome
        {
            // The hash changed during the check: a password change, or a concurrent login
            // re-hashing the same password at a new cost (`passwords::upgrade_after_login`).
            // The credential is the password: checked once more against the hash now stored.
            outcome = match self.rehashed(&email, &presented).await? {
                Some(hash) => self.open(&new, &hash, &email, client, true).await?,
                None => outcome,
            };
        }
        log_event(&login_record(&outcome, &email, client).to_event());
        let user = match outcome {
            SessionOpening::Opened(user) => user,
            SessionOpening::Refused { why, .. } => {
                let (label, error) = match why {
                    Refusal::Disabled => ("disabled", AppError::AccountDisabled),
                    Refusal::Gone | Refusal::CredentialChanged => {
                        ("invalid_credentials", AppError::InvalidCredentials)
                    }
                };
                self.core.metrics.logins.with_label_values(&[label]).inc();
                return Err(error);
            }
        };
        let tokens = self.tokens(user.id, session_id, user.role.as_str(), refresh_token, now);
        self.core
            .metrics
            .logins
            .with_label_values(&["success"])
            .inc();
        super::passwords::upgrade_after_login(&self.core, user.id, presented, creds.password_hash);
        Ok(AuthOutcome { user, tokens })
    }

    /// `Store::open_session` for a login of `email`, audited in its transaction (a refusal
    /// for a changed credential only when `last_try`: the caller may check again).
    async fn open(
        &self,
        new: &NewSession,
        verified: &str,
        email: &str,
        client: &ClientInfo,
        last_try: bool,
    ) -> AppResult<SessionOpening> {
        let (new, verified) = (new.clone(), verified.to_owned());
        let (email, client) = (email.to_owned(), client.clone());
        self.core
            .db(move |s| {
                s.open_session(
                    &new,
                    &verified,
                    Box::new(move |o| {
                        let retry = matches!(
                            o,
                            SessionOpening::Refused {
                                why: Refusal::CredentialChanged,
                                ..
                            }
                        ) && !last_try;
                        (!retry).then(|| login_record(o, &email, &client).to_event())
                    }),
                )
            })
            .await
    }

    /// The hash stored for `email` now, if `password` matches it.
    async fn rehashed(&self, email: &str, password: &str) -> AppResult<Option<String>> {
        let lookup = email.to_owned();
        let Some(creds) = self.core.db(move |s| s.user_by_email(&lookup)).await? else {
            return Ok(None);
        };
        let matched = self
            .core
            .passwords
            .verify(password.to_owned(), creds.password_hash.clone())
            .await?;
        Ok(matched.then_some(creds.password_hash))
    }

    async fn audit_login(
        &self,
        user_id: Option<Uuid>,
        email: &str,
        client: &ClientInfo,
        failure: Option<&str>,
    ) {
        self.core
            .audit(Record {
                event: Event::Login,
                user_id,
                email: Some(email),
                client,
                success: failure.is_none(),
                reason: failure,
            })
            .await;
    }

    /// Records a failed login (already counted by its `Attempt`) and answers 401.
    pub(super) async fn login_failed<T>(
        &self,
        user_id: Option<Uuid>,
        email: &str,
        client: &ClientInfo,
        reason: &str,
    ) -> AppResult<T> {
        self.core
            .metrics
            .logins
            .with_label_values(&["invalid_credentials"])
            .inc();
        self.audit_login(user_id, email, client, Some(reason)).await;
        Err(AppError::InvalidCredentials)
    }

    /// The principal's current password for a change to its own credentials (TOTP enrolment,
    /// disable and regeneration, passkey registration), checked within the login limits as
    /// `POST /api/auth/password` does: a slot of the client IP's failed-login budget and of the
    /// email's lockout is reserved first (past them 429 `RateLimited` / 423 `AccountLocked`,
    /// audited as `event` with reason `rate_limited` or `locked`); a wrong password counts as a
    /// failed login, is audited as `event` (reason `wrong_password`) and as a failed `login`,
    /// and answers 401 `InvalidCredentials`. An empty one is a validation error on
    /// `currentPassword`; an account deleted meanwhile is `TokenRevoked`.
    pub(super) async fn check_current_password(
        &self,
        who: &Principal,
        password: &str,
        client: &ClientInfo,
        event: Event,
    ) -> AppResult<()> {
        if password.is_empty() {
            return Err(AppError::validation("currentPassword", "is required"));
        }
        let (user_id, email) = (who.user_id, who.user.email.clone());
        let refused = |reason: &'static str| Record {
            event,
            user_id: Some(user_id),
            email: None,
            client,
            success: false,
            reason: Some(reason),
        };
        let attempt = match self.limits.reserve(&email, client).await {
            Ok(a) => a,
            Err(e) => {
                let reason = match e {
                    AppError::AccountLocked { .. } => "locked",
                    AppError::RateLimited { .. } => "rate_limited",
                    _ => return Err(e),
                };
                self.core.audit(refused(reason)).await;
                return Err(e);
            }
        };
        let lookup = email.clone();
        // The session's user, unless it was deleted (and the email reused) meanwhile (the
        // attempt is dropped unsettled: its slots are given back).
        let creds = self
            .core
            .db(move |s| s.user_by_email(&lookup))
            .await?
            .filter(|c| c.user.id == user_id)
            .ok_or(AppError::TokenRevoked)?;
        // A password that could not have been registered is a wrong one, after the same
        // bcrypt (as at login).
        let current = validate::normalize_password(password);
        let presentable = validate::password_presentable(&current);
        let matched = self
            .core
            .passwords
            .verify(current, creds.password_hash)
            .await?;
        if !(matched && presentable) {
            attempt.failed().await;
            self.core.audit(refused("wrong_password")).await;
            return self
                .login_failed(Some(user_id), &email, client, event.as_str())
                .await;
        }
        attempt.succeeded().await;
        Ok(())
    }

    /// A new session of `user_id` starting now, with its first refresh token (stored by
    /// `open_session`, or with the user by `insert_user`), and that token.
    pub(super) fn new_session(
        &self,
        user_id: Uuid,
        client: &ClientInfo,
        device_info: Option<String>,
        auth_methods: Vec<AuthMethod>,
    ) -> (NewSession, String) {
        let now = now_ms();
        let session_id = Uuid::new_v4();
        let (refresh_token, hash) = self.refresh.issue(session_id);
        let expires_at = now + duration_ms(self.core.settings.jwt.refresh_ttl);
        let new = NewSession {
            session: Session {
                id: session_id,
                user_id,
                created_at: now,
                last_used_at: now,
                expires_at,
                revoked_at: None,
                user_agent: client.user_agent.clone(),
                ip: client.ip.clone(),
                device_info,
                auth_methods,
            },
            token: crate::domain::NewRefreshToken {
                hash,
                session_id,
                created_at: now,
                expires_at,
            },
        };
        (new, refresh_token)
    }

    pub(super) fn tokens(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: &str,
        refresh_token: String,
        now: Millis,
    ) -> IssuedTokens {
        let (access_token, _) = self.access.sign(
            &user_id.to_string(),
            &session_id.to_string(),
            role,
            now.div_euclid(1000),
        );
        IssuedTokens {
            access_token,
            refresh_token,
            expires_in: self.access.ttl.as_secs(),
        }
    }

    /// Rotates a refresh token: the presented one is spent and a new pair is issued in the
    /// same session. A spent token presented again (outside the grace) revokes the session.
    pub async fn refresh(&self, token: Presented, client: &ClientInfo) -> AppResult<IssuedTokens> {
        let result = self.rotate(token, client).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(AppError::TokenExpired) => "expired",
            Err(AppError::TokenRevoked) => "revoked",
            Err(AppError::TokenMissing) => "missing",
            Err(AppError::TokenInvalid) => "invalid",
            Err(_) => "error",
        };
        self.core
            .metrics
            .refreshes
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn rotate(&self, token: Presented, client: &ClientInfo) -> AppResult<IssuedTokens> {
        let token = self.one_token(token, Event::Refresh, client).await?;
        let Some(presented) = self.refresh.check(&token) else {
            self.audit_refresh(Event::Refresh, None, client, Some("invalid"))
                .await;
            return Err(AppError::TokenInvalid);
        };
        let now = now_ms();
        // The next token names the same session as the presented one (for a token issued
        // before migration V4, the same stale prefix; the store keeps such chains by hash).
        let (new_token, replacement_hash) = self.refresh.issue(presented.session);
        let rotation = Rotation {
            presented_session: presented.session,
            presented_hash: presented.hash,
            replacement_hash,
            now,
            expires_at: now + duration_ms(self.core.settings.jwt.refresh_ttl),
            reuse_grace: duration_ms(self.core.settings.jwt.refresh_reuse_grace),
        };
        let audit_client = client.clone();
        let outcome = self
            .core
            .db(move |s| {
                s.rotate_refresh_token(
                    rotation,
                    Box::new(move |o| refresh_record(o, &audit_client).to_event()),
                )
            })
            .await?;
        log_event(&refresh_record(&outcome, client).to_event());
        match outcome {
            RotateOutcome::Rotated {
                user_id,
                session_id,
                role,
                disabled,
            } => {
                if disabled {
                    return Err(AppError::AccountDisabled);
                }
                Ok(self.tokens(user_id, session_id, role.as_str(), new_token, now))
            }
            RotateOutcome::Unknown => Err(AppError::TokenInvalid),
            RotateOutcome::Expired { .. } => Err(AppError::TokenExpired),
            RotateOutcome::Revoked { .. } => Err(AppError::TokenRevoked),
            RotateOutcome::Reused {
                user_id,
                session_id,
            } => {
                self.core.metrics.reuse_detected.inc();
                tracing::warn!(%user_id, %session_id, "refresh token reuse detected; session revoked");
                Err(AppError::TokenRevoked)
            }
        }
    }

    async fn audit_refresh(
        &self,
        event: Event,
        user_id: Option<Uuid>,
        client: &ClientInfo,
        failure: Option<&str>,
    ) {
        self.core
            .audit(Record {
                event,
                user_id,
                email: None,
                client,
                success: failure.is_none(),
                reason: failure,
            })
            .await;
    }

    /// The one token presented; `TokenMissing` without one, and `TokenInvalid` (audited as a
    /// failed `event`, reason `ambiguous_cookie`) for several refresh cookies.
    async fn one_token(
        &self,
        token: Presented,
        event: Event,
        client: &ClientInfo,
    ) -> AppResult<String> {
        match token {
            Presented::One(token) => Ok(token),
            Presented::Missing => Err(AppError::TokenMissing),
            Presented::Ambiguous => {
                tracing::warn!("several refresh cookies in one request; refused");
                self.audit_refresh(event, None, client, Some("ambiguous_cookie"))
                    .await;
                Err(AppError::TokenInvalid)
            }
        }
    }

    /// Revokes the session a refresh token belongs to. Idempotent for known tokens.
    pub async fn logout(&self, token: Presented, client: &ClientInfo) -> AppResult<()> {
        let token = self.one_token(token, Event::Logout, client).await?;
        let presented = self.refresh.check(&token).ok_or(AppError::TokenInvalid)?;
        let now = now_ms();
        let session = self
            .core
            .db(move |s| {
                let Some(session) = s.session_by_token(presented.session, &presented.hash)? else {
                    return Ok(None);
                };
                s.revoke_session(session.user_id, session.id, now, "logout")?;
                Ok(Some(session))
            })
            .await?
            .ok_or(AppError::TokenInvalid)?;
        self.audit_refresh(Event::Logout, Some(session.user_id), client, None)
            .await;
        Ok(())
    }

    /// Revokes every session of the principal's user; returns how many were live.
    pub async fn logout_all(&self, who: Principal, client: &ClientInfo) -> AppResult<usize> {
        let user_id = who.user_id;
        let n = self
            .core
            .db(move |s| s.revoke_user_sessions(user_id, now_ms(), "logout_all"))
            .await?;
        self.audit_refresh(Event::LogoutAll, Some(user_id), client, None)
            .await;
        Ok(n)
    }

    /// The user's live sessions, newest first.
    pub async fn list(&self, who: Principal) -> AppResult<Vec<Session>> {
        let user_id = who.user_id;
        self.core
            .db(move |s| s.live_sessions(user_id, now_ms()))
            .await
    }

    /// Revokes one live session of the principal's user; `NotFound` otherwise.
    pub async fn revoke(
        &self,
        who: Principal,
        session_id: &str,
        client: &ClientInfo,
    ) -> AppResult<()> {
        let session_id = Uuid::parse_str(session_id).map_err(|_| AppError::NotFound)?;
        let user_id = who.user_id;
        let revoked = self
            .core
            .db(move |s| s.revoke_session(user_id, session_id, now_ms(), "session_delete"))
            .await?;
        if !revoked {
            return Err(AppError::NotFound);
        }
        self.audit_refresh(Event::SessionRevoke, Some(user_id), client, None)
            .await;
        Ok(())
    }

    /// Verifies an access token and that its session is still live in the store (so a
    /// revocation by any process takes effect at once).
    pub async fn authenticate(&self, bearer: Option<&str>) -> AppResult<Principal> {
        let token = bearer.ok_or(AppError::TokenMissing)?;
        let claims = self
            .access
            .verify(token, now_ms().div_euclid(1000))
            .map_err(|e| match e {
                VerifyError::Expired => AppError::TokenExpired,
                VerifyError::Invalid => AppError::TokenInvalid,
            })?;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| AppError::TokenInvalid)?;
        let session_id = Uuid::parse_str(&claims.sid).map_err(|_| AppError::TokenInvalid)?;
        let (session, user) = self
            .core
            .session_with_user(session_id)
            .await?
            .ok_or(AppError::TokenInvalid)?;
        if session.user_id != user_id {
            return Err(AppError::TokenInvalid);
        }
        if session.revoked_at.is_some() {
            return Err(AppError::TokenRevoked);
        }
        if user.disabled {
            return Err(AppError::AccountDisabled);
        }
        Ok(Principal {
            user_id,
            session_id,
            user,
            auth_methods: session.auth_methods,
        })
    }

    /// The principal's user (read when the token was checked; no second lookup).
    pub fn profile(&self, who: Principal) -> User {
        who.user
    }
}
