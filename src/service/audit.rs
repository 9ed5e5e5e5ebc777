//! Service layer: the audit trail. Every security event is stored and logged; an event the
//! database does not store is never dropped silently: it is logged whole at error level and
//! counted in `authd_audit_write_failures_total`, without undoing the operation it describes.
//! (A refresh's event is written in the rotation's own transaction instead: it is stored, or
//! the rotation does not happen.) Every field of an event is bounded before it gets here
//! (`domain::validate`), so a client's input cannot make a row the database refuses.

use std::sync::Arc;

use uuid::Uuid;

use super::Core;
use crate::domain::time::now_ms;
use crate::domain::{AuditEvent, ClientInfo};

/// The events authd records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Login,
    Register,
    Refresh,
    RefreshReuse,
    Logout,
    LogoutAll,
    SessionRevoke,
    AdminRevoke,
    UserCreate,
    /// `authd keys rotate`.
    AdminKeyRotate,
    /// `authd keys revoke`.
    AdminKeyRevoke,
    AdminList,
    AdminShow,
    AdminSessions,
    AdminDisable,
    AdminEnable,
    AdminDelete,
    AdminSetRole,
    AdminSetPassword,
    AdminUnlock,
    PasswordChange,
    UserImport,
    /// The mail worker gave a mail up (CONTRACT 10.1): `reason` is the relay's reply code,
    /// `connection`, or `user_gone`; `actor` is `mail:<kind>`.
    MailFailed,
    /// A TOTP enrolment confirmed (CONTRACT 11.4).
    MfaEnroll,
    /// A second-factor answer at `POST /api/auth/mfa/verify`, right or wrong.
    MfaVerify,
    /// TOTP turned off by its user.
    MfaDisable,
    /// Recovery codes regenerated.
    MfaRecoveryCodesRegenerate,
    /// An admin removed an account's second factors.
    AdminMfaReset,
    /// A passkey registered (CONTRACT 11.3).
    PasskeyRegister,
    /// A passkey deleted by its owner.
    PasskeyDelete,
    /// A passwordless login with a passkey (success or failure).
    PasskeyLogin,
    /// An assertion whose signature counter did not go up (allowed; a cloned authenticator
    /// shows this way).
    PasskeyCounterRegression,
    /// `POST /api/auth/email` (CONTRACT 10.5): reason `queued`, `email_taken`,
    /// `wrong_password`, `locked` or `rate_limited`; `email` is the address asked for.
    EmailChangeRequest,
    /// The last confirmation of an email change: reason `<old> -> <new>; revoked n
    /// session(s)`, or `email_taken` (the change dropped).
    EmailChange,
    /// An admin set an account's address (`authd users set-email`,
    /// `POST /api/admin/users/{id}/email`).
    AdminSetEmail,
    /// `POST /api/auth/password-reset/request` (CONTRACT 10.3): reason `queued`,
    /// `unknown_email`, `disabled` or `throttled`: what really happened behind the one answer.
    PasswordResetRequest,
    /// `POST /api/auth/password-reset/confirm`: success (reason `revoked n session(s)`), or
    /// the refusal (`token_invalid`, `token_expired`, `rate_limited`).
    PasswordReset,
    /// An admin made a reset token (`authd users reset-link`,
    /// `POST /api/admin/users/{id}/reset-link`): reason `link` or `mailed`.
    AdminResetLink,
    /// A verification mail asked for by `POST /api/auth/verify-email/resend` (CONTRACT 10.4):
    /// reason `queued`, `unknown_email`, `disabled`, `verified` or `throttled`. (A
    /// registration's link is part of its `register` event.)
    VerifyEmailRequest,
    /// An address verified: by its mailed link, or by an admin (`authd users verify-email`,
    /// `POST /api/admin/users/{id}/verify-email`, the actor recorded).
    EmailVerified,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::Register => "register",
            Event::Refresh => "refresh",
            Event::RefreshReuse => "refresh_reuse",
            Event::Logout => "logout",
            Event::LogoutAll => "logout_all",
            Event::SessionRevoke => "session_revoke",
            Event::AdminRevoke => "admin_revoke",
            Event::UserCreate => "user_create",
            Event::PasswordChange => "password_change",
            Event::UserImport => "user_import",
            Event::AdminKeyRotate => "admin_key_rotate",
            Event::AdminKeyRevoke => "admin_key_revoke",
            Event::AdminList => "admin_list",
            Event::AdminShow => "admin_show",
            Event::AdminSessions => "admin_sessions",
            Event::AdminDisable => "admin_disable",
            Event::AdminEnable => "admin_enable",
            Event::AdminDelete => "admin_delete",
            Event::AdminSetRole => "admin_set_role",
            Event::AdminSetPassword => "admin_set_password",
            Event::AdminUnlock => "admin_unlock",
            Event::MailFailed => "mail_failed",
            Event::MfaEnroll => "mfa_enroll",
            Event::MfaVerify => "mfa_verify",
            Event::MfaDisable => "mfa_disable",
            Event::MfaRecoveryCodesRegenerate => "mfa_recovery_codes_regenerate",
            Event::AdminMfaReset => "admin_mfa_reset",
            Event::PasskeyRegister => "passkey_register",
            Event::PasskeyDelete => "passkey_delete",
            Event::PasskeyLogin => "passkey_login",
            Event::PasskeyCounterRegression => "passkey_counter_regression",
            Event::EmailChangeRequest => "email_change_request",
            Event::EmailChange => "email_change",
            Event::AdminSetEmail => "admin_set_email",
            Event::PasswordResetRequest => "password_reset_request",
            Event::PasswordReset => "password_reset",
            Event::AdminResetLink => "admin_reset_link",
            Event::VerifyEmailRequest => "verify_email_request",
            Event::EmailVerified => "email_verified",
        }
    }

    pub const ALL: [Event; 40] = [
        Event::Login,
        Event::Register,
        Event::Refresh,
        Event::RefreshReuse,
        Event::Logout,
        Event::LogoutAll,
        Event::SessionRevoke,
        Event::AdminRevoke,
        Event::UserCreate,
        Event::AdminKeyRotate,
        Event::AdminKeyRevoke,
        Event::AdminList,
        Event::AdminShow,
        Event::AdminSessions,
        Event::AdminDisable,
        Event::AdminEnable,
        Event::AdminDelete,
        Event::AdminSetRole,
        Event::AdminSetPassword,
        Event::AdminUnlock,
        Event::PasswordChange,
        Event::UserImport,
        Event::MailFailed,
        Event::MfaEnroll,
        Event::MfaVerify,
        Event::MfaDisable,
        Event::MfaRecoveryCodesRegenerate,
        Event::AdminMfaReset,
        Event::PasskeyRegister,
        Event::PasskeyDelete,
        Event::PasskeyLogin,
        Event::PasskeyCounterRegression,
        Event::EmailChangeRequest,
        Event::EmailChange,
        Event::AdminSetEmail,
        Event::PasswordResetRequest,
        Event::PasswordReset,
        Event::AdminResetLink,
        Event::VerifyEmailRequest,
        Event::EmailVerified,
    ];
}

/// One event about to be recorded.
pub struct Record<'a> {
    pub event: Event,
    pub user_id: Option<Uuid>,
    pub email: Option<&'a str>,
    pub client: &'a ClientInfo,
    /// `success` or `failure`.
    pub success: bool,
    pub reason: Option<&'a str>,
}

impl Record<'_> {
    /// The row this record becomes.
    pub fn to_event(&self) -> AuditEvent {
        let r = self;
        AuditEvent {
            at: now_ms(),
            event: r.event.as_str().to_string(),
            user_id: r.user_id,
            email: r.email.map(str::to_string),
            ip: r.client.ip.clone(),
            user_agent: r.client.user_agent.clone(),
            outcome: if r.success { "success" } else { "failure" }.to_string(),
            reason: r.reason.map(str::to_string),
            actor: None,
        }
    }
}

/// Logs an audit event (never secrets: no passwords or tokens are part of one).
pub fn log_event(event: &AuditEvent) {
    tracing::info!(
            target: "authd::audit",
            event = %event.event,
            outcome = %event.outcome,
            reason = event.reason.as_deref().unwrap_or(""),
            user_id = %event.user_id.map(|u| u.to_string()).unwrap_or_default(),
            actor = event.actor.as_deref().unwrap_or(""),
            ip = event.ip.as_deref().unwrap_or(""),
            "audit"
    );
}

impl Core {
    /// Stores and logs an audit event. An event the database does not store (down, full,
    /// refusing the row) does not undo the operation it describes; it is logged whole (every
    /// field, at error level, target `authd::audit`) and counted in
    /// `authd_audit_write_failures_total`, so the trail can be completed from the log.
    pub async fn audit(&self, r: Record<'_>) {
        self.store_audit(r.to_event()).await;
    }

    /// `audit` for an admin action: records who acted (`actor`: the acting admin's user id,
    /// or `cli`).
    pub async fn audit_by(&self, actor: &str, r: Record<'_>) {
        let mut event = r.to_event();
        event.actor = Some(actor.to_string());
        self.store_audit(event).await;
    }

    async fn store_audit(&self, event: AuditEvent) {
        log_event(&event);
        let event = Arc::new(event);
        let row = Arc::clone(&event);
        match self.db(move |s| s.record_audit(&row)).await {
            Ok(_) => {}
            Err(e) => {
                self.metrics.audit_write_failures.inc();
                // Every field, as this line may be the event's only record (also during an
                // outage: nothing leaves the audit trail silently).
                tracing::error!(
                    target: "authd::audit",
                    error = %e,
                    at = event.at,
                    event = %event.event,
                    outcome = %event.outcome,
                    reason = event.reason.as_deref().unwrap_or(""),
                    user_id = %event.user_id.map(|u| u.to_string()).unwrap_or_default(),
                    actor = event.actor.as_deref().unwrap_or(""),
                    ip = event.ip.as_deref().unwrap_or(""),
                    email = event.email.as_deref().unwrap_or(""),
                    user_agent = event.user_agent.as_deref().unwrap_or(""),
                    "audit event NOT STORED; this line is its only record"
                );
            }
        }
    }
}
