//! Service layer: operator actions (revoke sessions, clean up, read the audit trail) and
//! the readiness check.

use std::sync::Arc;

use uuid::Uuid;

use super::audit::{Event, Record};
use super::Core;
use crate::domain::audit_chain::AuditEntry;
use crate::domain::time::{duration_ms, now_ms};
use crate::domain::{validate, AuditQuery, CleanupCounts, ClientInfo};
use crate::error::{AppError, AppResult};

/// Whose sessions an admin revokes.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    Email(String),
    UserId(String),
    All,
}

#[derive(Clone)]
pub struct Admin {
    core: Arc<Core>,
}

/// The client recorded for actions taken from the command line.
fn cli_client() -> ClientInfo {
    ClientInfo {
        ip: None,
        user_agent: Some("authd-cli".into()),
    }
}

impl Admin {
    pub fn new(core: Arc<Core>) -> Self {
        Admin { core }
    }

    /// Revokes the target's live sessions; returns how many.
    pub async fn revoke_sessions(&self, target: RevokeTarget) -> AppResult<usize> {
        let now = now_ms();
        let (user_id, label) = match &target {
            RevokeTarget::All => (None, "all users".to_string()),
            RevokeTarget::UserId(raw) => {
                let id = Uuid::parse_str(raw.trim())
                    .map_err(|_| AppError::validation("user-id", "must be a user id (a UUID)"))?;
                let user = self.core.db(move |s| s.user_by_id(id)).await?;
                let user = user.ok_or(AppError::NotFound)?;
                (Some(user.id), user.email)
            }
            RevokeTarget::Email(raw) => {
                let email = validate::normalize_email(raw);
                let lookup = email.clone();
                let found = self.core.db(move |s| s.user_by_email(&lookup)).await?;
                let user = found.ok_or(AppError::NotFound)?.user;
                (Some(user.id), email)
            }
        };
        let n = match user_id {
            Some(id) => {
                self.core
                    .db(move |s| s.revoke_user_sessions(id, now, "admin"))
                    .await?
            }
            None => {
                self.core
                    .db(move |s| s.revoke_all_sessions(now, "admin"))
                    .await?
            }
        };
        let reason = format!("{n} session(s) of {label}");
        self.core
            .audit_by(
                "cli",
                Record {
                    event: Event::AdminRevoke,
                    user_id,
                    email: None,
                    client: &cli_client(),
                    success: true,
                    reason: Some(&reason),
                },
            )
            .await;
        Ok(n)
    }

    /// Deletes (or with `dry_run` counts) what expired or was revoked more than
    /// `cleanup.retention` ago, and failed-login counters that no longer limit anything. Never
    /// what a security check still reads (see `Store::purge`).
    pub async fn cleanup(&self, dry_run: bool) -> AppResult<CleanupCounts> {
        let now = now_ms();
        let cutoff = now - duration_ms(self.core.settings.cleanup.retention);
        let window = duration_ms(self.core.settings.rate_limit.window);
        let feed_before = super::RevocationFeed::new(self.core.clone()).purge_before(now);
        // Unverified accounts are deleted only where verification is required (CONTRACT
        // 10.4): elsewhere an unverified account is a working one.
        let email = &self.core.settings.email;
        let unverified_before = email
            .require_verification
            .then(|| now - duration_ms(email.unverified_ttl));
        self.core
            .db(move |s| {
                let mut counts = s.purge(cutoff, now, window, dry_run)?;
                counts.revocation_feed = s.purge_revocation_feed(feed_before, dry_run)?;
                if let Some(before) = unverified_before {
                    counts.unverified_accounts = s.purge_unverified(before, dry_run)?;
                }
                Ok(counts)
            })
            .await
    }

    /// Reads the audit trail, newest first, each event with its place in the chain once sealed.
    pub async fn audit_log(&self, mut query: AuditQuery) -> AppResult<Vec<AuditEntry>> {
        if let Some(email) = query.email.take() {
            // As login records it: an over-long email finds its bounded stand-in's events.
            let email = validate::login_email(&email);
            let lookup = email.clone();
            query.user_id = self
                .core
                .db(move |s| s.user_by_email(&lookup))
                .await?
                .map(|c| c.user.id);
            query.email = Some(email);
        }
        if let Some(event) = &query.event {
            if !Event::ALL.iter().any(|e| e.as_str() == event) {
                let known: Vec<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
                return Err(AppError::validation(
                    "event",
                    &format!("must be one of {} (not '{event}')", known.join(", ")),
                ));
            }
        }
        self.core.db(move |s| s.audit_entries(&query)).await
    }

    /// Ok when the database answers within `database.busy_timeout` (at least 1 s);
    /// `Unavailable` otherwise,
    /// also when it does not answer at all (a frozen database server that still accepts
    /// packets: a load balancer's health check must get its 503 in time).
    pub async fn ready(&self) -> AppResult<()> {
        // At least a second: a ping may need a new connection (and `busy_timeout` may be 0).
        let wait = self
            .core
            .settings
            .database
            .busy_timeout
            .max(std::time::Duration::from_secs(1));
        tokio::time::timeout(wait, self.core.db(|s| s.ping()))
            .await
            .unwrap_or_else(|_| {
                Err(AppError::Unavailable(format!(
                    "the database did not answer within {} ms",
                    wait.as_millis()
                )))
            })
    }

    /// Updates the active-sessions gauge (keeping its last value if the database does not
    /// answer) and renders every metric.
    pub async fn metrics(&self) -> String {
        match self.core.db(|s| s.count_live_sessions(now_ms())).await {
            Ok(live) => self.core.metrics.active_sessions.set(live as i64),
            Err(e) => tracing::warn!(error = %e, "cannot count active sessions"),
        }
        self.core.metrics.render()
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}
