//! Service layer: creating users (registration and `create-user` share this) and reading them.

use std::sync::Arc;

use uuid::Uuid;

use super::audit::{log_event, Event, Record};
use super::Core;
use crate::blocking::blocking;
use crate::domain::mail::{MailKind, NewMail};
use crate::domain::time::now_ms;
use crate::domain::{validate, ClientInfo, NewUser, Role, User};
use crate::error::{AppError, AppResult, FieldError};
use crate::store::{NewSession, StoreError};

/// Input for a new user, as typed by a person or sent by a client (not yet normalised).
#[derive(Debug, Clone)]
pub struct NewUserInput {
    pub email: String,
    pub password: String,
    pub name: Option<String>,
    pub role: Role,
}

#[derive(Clone)]
pub struct Users {
    core: Arc<Core>,
}

impl Users {
    pub fn new(core: Arc<Core>) -> Self {
        Users { core }
    }

    /// Validates every rule (all failures reported together), hashes, and stores the user
    /// with the audit event of its creation.
    pub async fn create(
        &self,
        input: NewUserInput,
        client: &ClientInfo,
        via: Event,
    ) -> AppResult<User> {
        self.insert(input, client, via, None).await
    }

    /// `create`, and the new user's first session stored in the same transaction (a
    /// registration: the account and its session both exist, or neither). The user's id is
    /// the session's `user_id`.
    pub(super) async fn create_signed_in(
        &self,
        input: NewUserInput,
        client: &ClientInfo,
        via: Event,
        session: NewSession,
    ) -> AppResult<User> {
        self.insert(input, client, via, Some(session)).await
    }

    async fn insert(
        &self,
        input: NewUserInput,
        client: &ClientInfo,
        via: Event,
        session: Option<NewSession>,
    ) -> AppResult<User> {
        let (email, password, name) = self.validated(&input)?;
        let taken = {
            let email = email.clone();
            self.core
                .db(move |s| s.user_by_email(&email))
                .await?
                .is_some()
        };
        if taken {
            self.record(via, None, &email, client, Some("email_taken"))
                .await;
            return Err(AppError::EmailTaken);
        }
        let password_hash = self.core.passwords.hash(password).await?;
        // A self-registered address is unproven (CONTRACT 10.4): unverified, and with a mail
        // transport its verification link is queued with the account.
        let registered = via == Event::Register;
        let new = NewUser {
            id: session
                .as_ref()
                .map_or_else(Uuid::new_v4, |s| s.session.user_id),
            email: email.clone(),
            name,
            role: input.role,
            password_hash,
            created_at: now_ms(),
            email_verified: !registered,
        };
        let mail = (registered && self.core.settings.email.enabled()).then(|| {
            NewMail::to_account(
                MailKind::VerifyEmail,
                Uuid::new_v4(),
                new.id,
                &new.email,
                new.created_at,
            )
        });
        let event = Record {
            event: via,
            user_id: Some(new.id),
            email: Some(&email),
            client,
            success: true,
            reason: None,
        }
        .to_event();
        let store = self.core.store.clone();
        let stored = event.clone();
        let insert = move || store.insert_user(&new, &stored, session.as_ref(), mail.as_ref());
        match blocking(insert).await? {
            Ok(user) => {
                log_event(&event);
                self.count(via, "success");
                Ok(user)
            }
            // Lost a race with another registration of the same email.
            Err(StoreError::Conflict(_)) => {
                self.record(via, None, &email, client, Some("email_taken"))
                    .await;
                Err(AppError::EmailTaken)
            }
            Err(StoreError::Unavailable(cause)) => {
                self.core.health.unavailable(&cause);
                Err(AppError::Unavailable(cause))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The input checked against every rule (all failures reported together): the
    /// normalised email, password (NFKC) and name.
    pub(super) fn validated(
        &self,
        input: &NewUserInput,
    ) -> AppResult<(String, String, Option<String>)> {
        let mut errors: Vec<FieldError> = Vec::new();
        let email = validate::email(&input.email)
            .map_err(|e| errors.push(e))
            .ok();
        let password = validate::normalize_password(&input.password);
        errors.extend(validate::password_policy(
            &password,
            self.core.settings.password.min_length,
        ));
        let name = validate::name(input.name.as_deref())
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        match email.filter(|_| errors.is_empty()) {
            Some(email) => Ok((email, password, name)),
            None => Err(AppError::Validation(errors)),
        }
    }

    pub(super) async fn record(
        &self,
        via: Event,
        user_id: Option<Uuid>,
        email: &str,
        client: &ClientInfo,
        failure: Option<&str>,
    ) {
        self.count(via, failure.unwrap_or("success"));
        self.core
            .audit(Record {
                event: via,
                user_id,
                email: Some(email),
                client,
                success: failure.is_none(),
                reason: failure,
            })
            .await;
    }

    /// Counts a registration's outcome (other ways of creating users are not counted).
    pub(super) fn count(&self, via: Event, outcome: &str) {
        if via == Event::Register {
            self.core
                .metrics
                .registrations
                .with_label_values(&[outcome])
                .inc();
        }
    }

    pub async fn get(&self, id: Uuid) -> AppResult<Option<User>> {
        self.core.db(move |s| s.user_by_id(id)).await
    }
}
