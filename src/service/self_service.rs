//! Service layer: password reset and email verification (CONTRACT 10.3, 10.4), the flows of a
//! user who is not signed in, and the admin's side of them (`users reset-link`,
//! `users verify-email`). The public routes that send mail answer the same whatever the
//! address is (an account or not, disabled, throttled): one store transaction decides and
//! queues (`Store::request_mail`), and what really happened goes only to the audit trail.

use std::time::Duration;

use uuid::Uuid;

use super::accounts::{Accounts, Acting};
use super::audit::{Event, Record};
use super::sessions::{AuthOutcome, Sessions};
use super::users::NewUserInput;
use crate::config::RESET_TTL_RANGE;
use crate::crypto::one_time::{hash as token_hash, new_token};
use crate::domain::mail::{MailKind, MailThrottle, NewMail};
use crate::domain::one_time::{NewOneTimeToken, Purpose};
use crate::domain::self_service::{ResetOutcome, VerifyOutcome};
use crate::domain::time::{duration_ms, now_ms, Millis};
use crate::domain::{validate, Account, ClientInfo, NewUser, User};
use crate::error::{AppError, AppResult, FieldError};

/// What `POST /api/auth/register` did.
#[derive(Debug)]
pub enum Registered {
    /// The account exists and is signed in (201): `email.require_verification` is off.
    SignedIn(AuthOutcome),
    /// 202 with nothing said: `email.require_verification` is on, and a link (or a notice to
    /// an existing account) is on its way.
    Accepted,
}

/// A reset token an admin made (`authd users reset-link`, `POST .../reset-link`).
#[derive(Debug, Clone)]
pub struct ResetLink {
    /// The account's address.
    pub email: String,
    /// `email.link_base` + `password_reset.link_path` with the token, or `None` without a
    /// `link_base` (no mail transport).
    pub link: Option<String>,
    /// The token itself (base64url, 256 bits): shown once, stored only as its hash.
    pub token: String,
    /// When it expires (milliseconds since the epoch).
    pub expires_at: Millis,
}

/// Parses an admin's `ttl` (`30m`, `2h`; a bare number is seconds) and checks it is within
/// `password_reset.ttl`'s range (5m to 24h): 400 `VALIDATION_ERROR` on `ttl` otherwise.
pub fn parse_reset_ttl(raw: &str) -> AppResult<Duration> {
    let raw = raw.trim();
    let parsed = if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit()) {
        raw.parse::<u64>().map(Duration::from_secs).ok()
    } else {
        humantime::parse_duration(raw).ok()
    };
    match parsed {
        Some(d) if (RESET_TTL_RANGE.0..=RESET_TTL_RANGE.1).contains(&d) => Ok(d),
        _ => Err(AppError::validation(
            "ttl",
            "must be a duration from 5m to 24h (e.g. 30m, 2h)",
        )),
    }
}

impl Sessions {
    /// The per-address throttle of the public routes (`email.send_cooldown`,
    /// `email.max_mails_per_day`).
    fn throttle(&self) -> MailThrottle {
        let e = &self.core.settings.email;
        MailThrottle {
            cooldown_ms: duration_ms(e.send_cooldown),
            max_per_day: e.max_mails_per_day,
        }
    }

    /// `POST /api/auth/register`: with `email.require_verification` off, creates and signs in
    /// the account (unverified; with a mail transport its link is queued with it); with it on,
    /// see `register_unverified`.
    ///
    /// Errors: `RegistrationClosed` when `registration.enabled` is false (nothing is created),
    /// `Validation`, `EmailTaken` (only with verification off).
    pub async fn register(
        &self,
        input: NewUserInput,
        client: &ClientInfo,
    ) -> AppResult<Registered> {
        if !self.core.settings.registration.enabled {
            return Err(AppError::RegistrationClosed);
        }
        if self.core.settings.email.require_verification {
            self.register_unverified(input, client).await?;
            return Ok(Registered::Accepted);
        }
        Ok(Registered::SignedIn(
            self.register_signed_in(input, client).await?,
        ))
    }

    /// A registration with `email.require_verification` (CONTRACT 10.4): validates, hashes the
    /// password (always: the answer takes the same time whatever the address), then lets
    /// `Store::register_unverified` create the account, replace an unverified one, or send a
    /// verified one a notice. The caller answers 202 in every case.
    async fn register_unverified(&self, input: NewUserInput, client: &ClientInfo) -> AppResult<()> {
        let (email, password, name) = self.users.validated(&input)?;
        let password_hash = self.core.passwords.hash(password).await?;
        let new = NewUser {
            id: Uuid::new_v4(),
            email: email.clone(),
            name,
            role: input.role,
            password_hash,
            created_at: now_ms(),
            email_verified: false,
        };
        let throttle = self.throttle();
        let mut tries = 0;
        let (what, user_id, queued) = loop {
            let new = new.clone();
            let done = self
                .core
                .db(move |s| s.register_unverified(&new, Uuid::new_v4(), &throttle))
                .await;
            match done {
                // A plain registration (or an admin) took the address in between: once more,
                // and the account it finds decides.
                Err(AppError::Conflict(_)) if tries == 0 => tries += 1,
                other => break other?,
            }
        };
        let reason = match (what.mail(), queued) {
            (Some(_), false) => format!("{}; mail throttled", what.as_str()),
            _ => what.as_str().to_string(),
        };
        self.users.count(
            Event::Register,
            if what.succeeded() {
                "success"
            } else {
                "email_taken"
            },
        );
        self.core
            .audit(Record {
                event: Event::Register,
                user_id: Some(user_id),
                email: Some(&email),
                client,
                success: what.succeeded(),
                reason: Some(&reason),
            })
            .await;
        Ok(())
    }

    /// A public route that sends mail of `kind` to the account of `email`, if it should have
    /// one (`self_service::mail_decision`, the throttle): validates the address (400), then
    /// decides and queues in one transaction, audited as `event` with what really happened.
    /// `NotFound` without a mail transport (the route only sends mail).
    async fn request_mail(
        &self,
        email: &str,
        kind: MailKind,
        event: Event,
        client: &ClientInfo,
    ) -> AppResult<()> {
        if !self.core.settings.email.enabled() {
            return Err(AppError::NotFound);
        }
        let email = validate::email(email).map_err(|e| AppError::Validation(vec![e]))?;
        let throttle = self.throttle();
        let lookup = email.clone();
        let done = self
            .core
            .db(move |s| s.request_mail(&lookup, kind, Uuid::new_v4(), &throttle, now_ms()))
            .await?;
        self.core
            .audit(Record {
                event,
                user_id: done.user_id,
                email: Some(&email),
                client,
                success: done.reason == "queued",
                reason: Some(done.reason),
            })
            .await;
        Ok(())
    }

    /// `POST /api/auth/password-reset/request` (CONTRACT 10.3): the same answer for every
    /// well-formed address; a live account gets a reset link. `NotFound` with
    /// `password_reset.enabled = false` or without a mail transport.
    pub async fn request_password_reset(&self, email: &str, client: &ClientInfo) -> AppResult<()> {
        if !self.core.settings.password_reset.enabled {
            return Err(AppError::NotFound);
        }
        self.request_mail(
            email,
            MailKind::PasswordReset,
            Event::PasswordResetRequest,
            client,
        )
        .await
    }

    /// `POST /api/auth/password-reset/confirm`: checks the token exists (a failure counts
    /// against the client IP's failed-login budget: 429 past it), then the password policy of
    /// register (400 on `newPassword`, the token left unused), then resets in one transaction
    /// (`Store::reset_password`). Returns how many sessions were revoked. Second factors
    /// stay. `NotFound` with `password_reset.enabled = false`.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new_password: &str,
        client: &ClientInfo,
    ) -> AppResult<usize> {
        if !self.core.settings.password_reset.enabled {
            return Err(AppError::NotFound);
        }
        let mut errors = Vec::new();
        if token.is_empty() {
            errors.push(FieldError::new("token", "is required"));
        }
        if new_password.is_empty() {
            errors.push(FieldError::new("newPassword", "is required"));
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let refused = |reason: &'static str| Record {
            event: Event::PasswordReset,
            user_id: None,
            email: None,
            client,
            success: false,
            reason: Some(reason),
        };
        let attempt = match self.limits.reserve_ip(client).await {
            Ok(a) => a,
            Err(e) => {
                self.core.audit(refused("rate_limited")).await;
                return Err(e);
            }
        };
        let hash = token_hash(token);
        let now = now_ms();
        let peek = hash.clone();
        let found = self
            .core
            .db(move |s| s.one_time_token(Purpose::PasswordReset, &peek))
            .await?;
        let failed = match &found {
            None => Some(("token_invalid", AppError::OneTimeTokenInvalid)),
            Some(t) if t.expired(now) => Some(("token_expired", AppError::OneTimeTokenExpired)),
            Some(_) => None,
        };
        if let Some((reason, error)) = failed {
            attempt.failed().await;
            self.core.audit(refused(reason)).await;
            return Err(error);
        }
        // A policy failure leaves the token unused: the user tries another password.
        let password = validate::normalize_password(new_password);
        let policy = validate::password_policy(&password, self.core.settings.password.min_length);
        if !policy.is_empty() {
            attempt.succeeded().await;
            return Err(AppError::Validation(
                policy
                    .into_iter()
                    .map(|e| FieldError::new("newPassword", e.message))
                    .collect(),
            ));
        }
        let password_hash = self.core.passwords.hash(password).await?;
        let outcome = self
            .core
            .db(move |s| s.reset_password(&hash, &password_hash, Uuid::new_v4(), now_ms()))
            .await?;
        match outcome {
            ResetOutcome::Done { user, revoked } => {
                attempt.succeeded().await;
                let reason = format!("revoked {revoked} session(s)");
                self.core
                    .audit(Record {
                        event: Event::PasswordReset,
                        user_id: Some(user.id),
                        email: Some(&user.email),
                        client,
                        success: true,
                        reason: Some(&reason),
                    })
                    .await;
                Ok(revoked)
            }
            // Used by a concurrent confirmation, or its account's address changed.
            ResetOutcome::Invalid => {
                attempt.failed().await;
                self.core.audit(refused("token_invalid")).await;
                Err(AppError::OneTimeTokenInvalid)
            }
            ResetOutcome::Expired => {
                attempt.failed().await;
                self.core.audit(refused("token_expired")).await;
                Err(AppError::OneTimeTokenExpired)
            }
        }
    }

    /// `POST /api/auth/verify-email` (CONTRACT 10.4): uses a verification token; the account
    /// it was made for is verified if it still has the address the link went to (400
    /// `TOKEN_INVALID` / `TOKEN_EXPIRED` otherwise).
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> AppResult<User> {
        if token.is_empty() {
            return Err(AppError::validation("token", "is required"));
        }
        let hash = token_hash(token);
        let outcome = self
            .core
            .db(move |s| s.verify_email(&hash, now_ms()))
            .await?;
        let user = match outcome {
            VerifyOutcome::Verified(user) => user,
            VerifyOutcome::Invalid => return Err(AppError::OneTimeTokenInvalid),
            VerifyOutcome::Expired => return Err(AppError::OneTimeTokenExpired),
        };
        self.core
            .audit(Record {
                event: Event::EmailVerified,
                user_id: Some(user.id),
                email: Some(&user.email),
                client,
                success: true,
                reason: Some("link"),
            })
            .await;
        Ok(user)
    }

    /// `POST /api/auth/verify-email/resend`: the same answer for every well-formed address;
    /// an unverified live account gets a new link (the older one dies when it is minted).
    /// `NotFound` without a mail transport.
    pub async fn resend_verification(&self, email: &str, client: &ClientInfo) -> AppResult<()> {
        self.request_mail(
            email,
            MailKind::VerifyEmail,
            Event::VerifyEmailRequest,
            client,
        )
        .await
    }
}

impl Accounts {
    /// `authd users reset-link` / `POST /api/admin/users/{id}/reset-link`: makes a reset token
    /// for the user (killing its older ones) living `ttl` (default `password_reset.ttl`), or,
    /// with `send`, queues the ordinary reset mail instead (`None`; `Validation` without a
    /// mail transport). Audited `admin_reset_link`.
    pub async fn reset_link(
        &self,
        by: &Acting,
        id: Uuid,
        ttl: Option<Duration>,
        send: bool,
    ) -> AppResult<(User, Option<ResetLink>)> {
        let settings = self.core.settings.clone();
        if send && !settings.email.enabled() {
            return Err(AppError::validation(
                "send",
                "email.transport is none: no mail can be sent",
            ));
        }
        let user = self.user(id).await?;
        let now = now_ms();
        if send {
            let mail = NewMail::to_account(
                MailKind::PasswordReset,
                Uuid::new_v4(),
                user.id,
                &user.email,
                now,
            );
            self.core.db(move |s| s.enqueue_mail(&mail)).await?;
            self.record(by, Event::AdminResetLink, Some(&user), Some("mailed"), None)
                .await;
            return Ok((user, None));
        }
        let ttl = ttl.unwrap_or(settings.password_reset.ttl);
        let (token, hash) = new_token();
        let record = NewOneTimeToken::for_address(
            hash,
            Purpose::PasswordReset,
            user.id,
            &user.email,
            None,
            now,
            duration_ms(ttl),
        );
        let expires_at = record.expires_at;
        self.core
            .db(move |s| s.issue_one_time_token(&record, true))
            .await?;
        self.record(by, Event::AdminResetLink, Some(&user), Some("link"), None)
            .await;
        let link = settings.email.enabled().then(|| {
            settings
                .email
                .link(&settings.password_reset.link_path, &token)
        });
        let reset = ResetLink {
            email: user.email.clone(),
            link,
            token,
            expires_at,
        };
        Ok((user, Some(reset)))
    }

    /// `authd users verify-email` / `POST /api/admin/users/{id}/verify-email`: marks the
    /// user's address verified (an admin vouches for it); audited `email_verified`.
    pub async fn verify_email(&self, by: &Acting, id: Uuid) -> AppResult<Account> {
        let user = self
            .core
            .db(move |s| s.mark_email_verified(id))
            .await?
            .ok_or(AppError::NotFound)?;
        self.record(by, Event::EmailVerified, Some(&user), Some("admin"), None)
            .await;
        self.account(user).await
    }
}
