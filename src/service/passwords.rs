//! Service layer: passwords over an account's life: a signed-in user changes theirs
//! (`POST /api/auth/password`), and a stored hash whose bcrypt cost is not the configured one
//! is replaced after the next successful login, off the response's path.

use std::sync::Arc;

use uuid::Uuid;

use super::audit::{Event, Record};
use super::sessions::{Principal, Sessions};
use super::Core;
use crate::domain::time::now_ms;
use crate::domain::{validate, ClientInfo};
use crate::error::{AppError, AppResult, FieldError};

/// A password change as sent by the signed-in user (not yet normalised).
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// After a successful login that verified `password` against `verified_hash`: when that hash
/// is not at the configured bcrypt cost, re-hashes the password in the background (the login
/// has already answered: it never pays for a second bcrypt) and stores the new hash only if
/// the user's hash is still `verified_hash`. The re-hash takes a permit of the same bcrypt
/// semaphore as every other hash and verification.
pub fn upgrade_after_login(
    core: &Arc<Core>,
    user_id: Uuid,
    password: String,
    verified_hash: String,
) {
    if !core.passwords.needs_rehash(&verified_hash) {
        return;
    }
    let core = core.clone();
    tokio::spawn(async move {
        let upgraded = async {
            let new_hash = core.passwords.hash(password).await?;
            core.db(move |s| s.upgrade_password_hash(user_id, &verified_hash, &new_hash))
                .await
        };
        match upgraded.await {
            Ok(true) => {
                tracing::info!(%user_id, "password hash upgraded to the configured bcrypt cost")
            }
            Ok(false) => {
                tracing::info!(%user_id, "password changed meanwhile; hash upgrade skipped")
            }
            Err(e) => tracing::warn!(%user_id, error = %e, "could not upgrade a password hash"),
        }
    });
}

impl Sessions {
    /// Changes the principal's password: `new_password` must pass the registration policy and
    /// differ from the current one (after NFKC), `current_password` must be right (a wrong one
    /// counts as a failed login for the client IP and the user's email, and past those limits
    /// the change is refused like a login: 429 / 423). The new hash is stored and every other
    /// session of the user revoked in one transaction; the presented session stays live.
    /// Returns how many sessions were revoked.
    pub async fn change_password(
        &self,
        who: Principal,
        input: PasswordChange,
        client: &ClientInfo,
    ) -> AppResult<usize> {
        let current = validate::normalize_password(&input.current_password);
        let new = validate::normalize_password(&input.new_password);
        let mut errors = Vec::new();
        if input.current_password.is_empty() {
            errors.push(FieldError::new("currentPassword", "is required"));
        }
        errors.extend(
            validate::password_policy(&new, self.core.settings.password.min_length)
                .into_iter()
                .map(|e| FieldError::new("newPassword", e.message)),
        );
        if !input.current_password.is_empty() && new == current {
            errors.push(FieldError::new(
                "newPassword",
                "must differ from the current password",
            ));
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let user_id = who.user_id;
        // The same limits as a login, reserved before the password check (contract 9); a wrong
        // current password counts as a failed login.
        self.check_current_password(&who, &input.current_password, client, Event::PasswordChange)
            .await?;
        let hash = self.core.passwords.hash(new).await?;
        let keep = who.session_id;
        let revoked = self
            .core
            .db(move |s| s.set_password_hash(user_id, &hash, Some(keep), now_ms()))
            .await?;
        self.audit_change(user_id, client, Ok(revoked)).await;
        Ok(revoked)
    }

    async fn audit_change(&self, user_id: Uuid, client: &ClientInfo, outcome: Result<usize, &str>) {
        let revoked;
        let reason = match outcome {
            Ok(n) => {
                revoked = format!("{n} other session(s) revoked");
                Some(revoked.as_str())
            }
            Err(reason) => Some(reason),
        };
        self.core
            .audit(Record {
                event: Event::PasswordChange,
                user_id: Some(user_id),
                email: None,
                client,
                success: outcome.is_ok(),
                reason,
            })
            .await;
    }
}
