//! Service layer: email change (CONTRACT 10.5). A signed-in user asks for a new address with
//! its current password (checked as `POST /api/auth/password` checks it); the request stores
//! the pending change and queues a link to the new address and, with
//! `email.change_confirm_old = true`, one to the current address (else a notice to it). Each
//! link's confirmation is recorded; the address moves only at the last one, in one store
//! transaction that re-checks the address is free, revokes every other session and kills the
//! user's other one-time tokens. Admins set an address directly (`Accounts::set_email`).

use uuid::Uuid;

use super::audit::{Event, Record};
use super::sessions::{Principal, Sessions};
use crate::config::MailTransport;
use crate::crypto::one_time::hash as token_hash;
use crate::domain::email_change::{ConfirmOutcome, PendingEmailChange, RequestOutcome};
use crate::domain::mail::{MailKind, NewMail};
use crate::domain::time::{duration_ms, now_ms};
use crate::domain::{validate, ClientInfo, User};
use crate::error::{AppError, AppResult, FieldError};

/// `POST /api/auth/email` as sent (not yet normalised).
#[derive(Debug, Clone)]
pub struct EmailChangeInput {
    pub new_email: String,
    pub current_password: String,
}

/// What a confirmation did: the user as it is now, and whether the address changed.
#[derive(Debug, Clone)]
pub struct EmailChangeConfirmed {
    pub user: User,
    /// True when this was the last required confirmation and the address changed.
    pub complete: bool,
}

impl Sessions {
    /// `POST /api/auth/email`: validates `newEmail` (400 `VALIDATION_ERROR`; the current
    /// address is refused too), checks `currentPassword` like a password change (a wrong one
    /// counts as a failed login; 401, or 429 / 423 past the limits), then stores the pending
    /// change (replacing an older one) and queues its mails, unless another account has the
    /// address (409 `EMAIL_TAKEN`). Returns the pending address. `NotFound` with
    /// `email.transport = "none"`: the route only sends mail.
    pub async fn request_email_change(
        &self,
        who: Principal,
        input: EmailChangeInput,
        client: &ClientInfo,
    ) -> AppResult<String> {
        let settings = &self.core.settings.email;
        if settings.transport == MailTransport::None {
            return Err(AppError::NotFound);
        }
        let mut errors = Vec::new();
        let new_email = match validate::email(&input.new_email) {
            Ok(e) if e == who.user.email => {
                errors.push(FieldError::new(
                    "newEmail",
                    "must differ from the current address",
                ));
                None
            }
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(FieldError::new("newEmail", e.message));
                None
            }
        };
        if input.current_password.is_empty() {
            errors.push(FieldError::new("currentPassword", "is required"));
        }
        let Some(new_email) = new_email.filter(|_| errors.is_empty()) else {
            return Err(AppError::Validation(errors));
        };
        let user_id = who.user_id;
        // As `POST /api/auth/password`: within the login limits, a wrong password counted as a
        // failed login; failures audited as `email_change_request`.
        self.check_current_password(
            &who,
            &input.current_password,
            client,
            Event::EmailChangeRequest,
        )
        .await?;
        let now = now_ms();
        let change = PendingEmailChange {
            user_id,
            change_id: Uuid::new_v4(),
            new_email: new_email.clone(),
            old_email: who.user.email.clone(),
            session_id: Some(who.session_id),
            new_confirmed: false,
            old_confirmed: !settings.change_confirm_old,
            created_at: now,
            expires_at: now + duration_ms(settings.verification_ttl),
        };
        let payload = Some(change.token_payload());
        let mail = |kind: MailKind, to: &str| NewMail {
            id: Uuid::new_v4(),
            kind,
            user_id: Some(user_id),
            to: to.to_string(),
            payload: payload.clone(),
            created_at: now,
        };
        let to_old = if settings.change_confirm_old {
            MailKind::EmailChangeOld
        } else {
            MailKind::EmailChangeNotice
        };
        let mails = vec![
            mail(MailKind::EmailChangeNew, &new_email),
            mail(to_old, &who.user.email),
        ];
        let outcome = self
            .core
            .db(move |s| s.request_email_change(&change, &mails))
            .await?;
        match outcome {
            RequestOutcome::Pending => {
                self.audit_email(
                    Event::EmailChangeRequest,
                    user_id,
                    Some(&new_email),
                    client,
                    Ok("queued"),
                )
                .await;
                Ok(new_email)
            }
            RequestOutcome::EmailTaken => {
                self.audit_email(
                    Event::EmailChangeRequest,
                    user_id,
                    Some(&new_email),
                    client,
                    Err("email_taken"),
                )
                .await;
                Err(AppError::EmailTaken)
            }
        }
    }

    /// `POST /api/auth/email/confirm`: uses an email-change token (400 `TOKEN_INVALID` /
    /// `TOKEN_EXPIRED`) and records its confirmation; at the last required one the address
    /// changes (see `Store::confirm_email_change`), or, if another account took it
    /// meanwhile, 409 `EMAIL_TAKEN` and the pending change is dropped.
    pub async fn confirm_email_change(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> AppResult<EmailChangeConfirmed> {
        if token.is_empty() {
            return Err(AppError::validation("token", "is required"));
        }
        let hash = token_hash(token);
        let now = now_ms();
        let outcome = self
            .core
            .db(move |s| s.confirm_email_change(&hash, now))
            .await;
        // A registration that took the address between the re-check and the update (on
        // PostgreSQL) fails the address's unique index: the address is taken all the same.
        let outcome = match outcome {
            Err(AppError::Conflict(_)) => return Err(AppError::EmailTaken),
            other => other?,
        };
        match outcome {
            ConfirmOutcome::Invalid => Err(AppError::OneTimeTokenInvalid),
            ConfirmOutcome::Expired => Err(AppError::OneTimeTokenExpired),
            ConfirmOutcome::Recorded { user } => Ok(EmailChangeConfirmed {
                user,
                complete: false,
            }),
            ConfirmOutcome::Complete {
                user,
                old_email,
                revoked,
            } => {
                let reason = format!(
                    "{old_email} -> {}; revoked {revoked} session(s)",
                    user.email
                );
                self.audit_email(
                    Event::EmailChange,
                    user.id,
                    Some(&user.email),
                    client,
                    Ok(&reason),
                )
                .await;
                Ok(EmailChangeConfirmed {
                    user,
                    complete: true,
                })
            }
            ConfirmOutcome::EmailTaken { user_id } => {
                self.audit_email(
                    Event::EmailChange,
                    user_id,
                    None,
                    client,
                    Err("email_taken"),
                )
                .await;
                Err(AppError::EmailTaken)
            }
        }
    }

    /// `POST /api/auth/email/cancel`: drops the principal's pending change and its tokens
    /// (nothing to cancel is fine too).
    pub async fn cancel_email_change(&self, who: Principal) -> AppResult<bool> {
        let user_id = who.user_id;
        self.core.db(move |s| s.cancel_email_change(user_id)).await
    }

    async fn audit_email(
        &self,
        event: Event,
        user_id: Uuid,
        email: Option<&str>,
        client: &ClientInfo,
        outcome: Result<&str, &str>,
    ) {
        let (success, reason) = match outcome {
            Ok(r) => (true, r),
            Err(r) => (false, r),
        };
        self.core
            .audit(Record {
                event,
                user_id: Some(user_id),
                email,
                client,
                success,
                reason: Some(reason),
            })
            .await;
    }
}
