//! Service layer: every business decision. Services speak `AppError`, call the store through
//! `Core::db` (on the blocking pool) and never see HTTP types. The CLI and the HTTP handlers
//! call the same methods.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod audit_chain;
pub mod doctor;
pub mod email_change;
pub mod import;
pub mod keys;
pub mod limits;
pub mod mail;
pub mod mfa;
pub mod passkeys;
pub mod passwords;
pub mod revocation_feed;
pub mod self_service;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use uuid::Uuid;

use crate::blocking::blocking;
use crate::config::Settings;
use crate::crypto::password::Passwords;
use crate::domain::{Session, User};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::store::health::DbHealth;
use crate::store::{DynStore, Store, StoreResult};

pub use accounts::{Accounts, Acting, Actor};
pub use admin::{Admin, RevokeTarget};
pub use email_change::{EmailChangeConfirmed, EmailChangeInput};
pub use import::{Import, ImportError, ImportOptions, ImportReport};
pub use keys::Keys;
pub use limits::{Attempt, LoginLimits};
pub use mail::Mail;
pub use mfa::{MfaVerified, MfaVerifyInput, PasswordAndCode, TotpConfirmed, TotpEnrollmentOffer};
pub use passkeys::{PasskeyCeremony, PasskeyLogin, PasskeyRegistrationInput};
pub use passwords::PasswordChange;
pub use revocation_feed::{FeedAnswer, FeedEntry, RevocationFeed};
pub use self_service::{parse_reset_ttl, Registered, ResetLink};
pub use sessions::{AuthOutcome, IssuedTokens, LoginInput, Presented, Principal, Sessions};
pub use users::{NewUserInput, Users};

/// What every service shares.
pub struct Core {
    pub store: DynStore,
    pub settings: Arc<Settings>,
    pub passwords: Passwords,
    pub metrics: Arc<Metrics>,
    /// The database's trouble, logged once per episode (see `db`).
    pub health: Arc<DbHealth>,
}

impl Core {
    pub fn new(
        store: DynStore,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        health: Arc<DbHealth>,
    ) -> Arc<Self> {
        Arc::new(Core {
            passwords: Passwords::new(settings.password.bcrypt_cost, &metrics),
            store,
            settings,
            metrics,
            health,
        })
    }

    /// A session and its user (authenticating an access token): answered on this thread
    /// when the store can do so without waiting (`Store::session_with_user_now`, SQLite), or
    /// by a read that holds no thread while it waits (`Store::session_with_user_async`,
    /// PostgreSQL), otherwise on the blocking pool like every other read.
    pub async fn session_with_user(&self, id: Uuid) -> AppResult<Option<(Session, User)>> {
        let reads = &self.metrics.session_reads;
        if let Some(found) = self.store.session_with_user_now(id) {
            reads.worker.inc();
            return Ok(found);
        }
        if let Some(read) = self.store.session_with_user_async(id) {
            if let Some(answer) = read.await {
                reads.r#async.inc();
                return self.reported(answer);
            }
        }
        reads.pool.inc();
        self.db(move |s| s.session_with_user(id)).await
    }

    /// Runs one store operation on the blocking pool. An `Unavailable` answer (503) is logged
    /// here, once per episode (`DbHealth::unavailable`), not by each caller or request.
    pub async fn db<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let store = self.store.clone();
        self.reported(blocking(move || f(&*store)).await?)
    }

    /// A store answer as the services see it; `Unavailable` is logged here, once per episode
    /// (`DbHealth::unavailable`).
    fn reported<T>(&self, answer: StoreResult<T>) -> AppResult<T> {
        let result = answer.map_err(AppError::from);
        if let Err(AppError::Unavailable(cause)) = &result {
            self.health.unavailable(cause);
        }
        result
    }
}
