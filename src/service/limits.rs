//! Service layer: the login limits (contract sections 3 and 9): the per-IP failed-login
//! budget (429 `RATE_LIMITED`) and the per-email lockout (423 `ACCOUNT_LOCKED`), for every
//! password check made on a user's behalf (login, and any other endpoint that checks a
//! password the same way).
//!
//! An attempt reserves its slot before the password is checked, in one store transaction
//! that checks and counts both counters together, so no burst of concurrent attempts gets
//! more password checks than the limits allow:
//!
//! ```text
//! let attempt = limits.reserve(&email, &client).await?; // 429/423 here: check no password
//! if password_ok {
//!     attempt.succeeded().await; // the slots are given back
//! } else {
//!     attempt.failed().await; // counted: the per-IP budget and the email's lockout
//! }
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use super::Core;
use crate::domain::ip::rate_key;
use crate::domain::limits::{Admission, CounterLimit, SlotGrant, SlotRequest};
use crate::domain::time::{duration_ms, now_ms, Millis};
use crate::domain::{validate, ClientInfo};
use crate::error::{AppError, AppResult};
use crate::store::StoreError;

/// The login limits of one server. Cheap to clone.
#[derive(Clone)]
pub struct LoginLimits {
    core: Arc<Core>,
}

/// A reserved password check: one slot of the client's per-IP failed-login budget and one of
/// the email's lockout counter. Settle it with `succeeded` or `failed` once the password has
/// been checked. Dropped unsettled (the check never happened or its outcome was never
/// sent, e.g. a 503 from the database or a client that hung up), its slots are given back.
#[must_use = "settle the attempt with succeeded() or failed()"]
pub struct Attempt {
    core: Arc<Core>,
    /// `None` when the limits are off (`rate_limit.enabled = false`) or once settled.
    grant: Option<SlotGrant>,
}

/// Seconds until `at`, rounded up, at least 1 (a `Retry-After` value).
fn secs_until(at: Millis, now: Millis) -> u64 {
    ((at - now).max(0) as u64).div_ceil(1000).max(1)
}

impl LoginLimits {
    pub fn new(core: Arc<Core>) -> Self {
        LoginLimits { core }
    }

    /// Reserves one password check for `email` (normalised here, as at login; the account
    /// need not exist) from `client` (its IP counted per `domain::ip::rate_key`, so an IPv6
    /// client per `/rate_limit.ipv6_prefix` network).
    ///
    /// Errors, with nothing counted and no password to be checked: `RateLimited` (429) when
    /// the client's failed logins, with the checks in flight, reached
    /// `rate_limit.max_failed_logins` within `rate_limit.window`; `AccountLocked` (423) when
    /// the email is locked, or its failures with the checks in flight reached
    /// `rate_limit.lockout_threshold`. Both carry `Retry-After` seconds: to the end of the
    /// window or lock, or 1 when only checks still in flight fill the limit. `Unavailable`
    /// (503) when the database does not answer. Refusals are counted in
    /// `authd_rate_limited_total` (`failed_logins` or `lockout`); auditing them is the
    /// caller's (it knows the event).
    pub async fn reserve(&self, email: &str, client: &ClientInfo) -> AppResult<Attempt> {
        let limits = &self.core.settings.rate_limit;
        if !limits.enabled {
            return Ok(Attempt {
                core: self.core.clone(),
                grant: None,
            });
        }
        let mut counters = Vec::with_capacity(2);
        let ip = client
            .ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        if let Some(ip) = ip {
            counters.push(CounterLimit {
                key: format!("ip:{}", rate_key(ip, limits.ipv6_prefix)),
                max: limits.max_failed_logins,
                lock_for: None,
            });
        }
        let email_counter = counters.len();
        counters.push(CounterLimit {
            key: format!("email:{}", validate::normalize_email(email)),
            max: limits.lockout_threshold,
            lock_for: Some(duration_ms(limits.lockout_duration)),
        });
        let now = now_ms();
        let request = SlotRequest {
            now,
            window: duration_ms(limits.window),
            counters,
        };
        let admission = self
            .core
            .db(move |s| s.reserve_login_slots(&request))
            .await?;
        match admission {
            Admission::Granted(grant) => Ok(Attempt {
                core: self.core.clone(),
                grant: Some(grant),
            }),
            Admission::Refused { counter, retry_at } => {
                let retry_after_secs = secs_until(retry_at, now);
                let (label, err) = if counter == email_counter {
                    ("lockout", AppError::AccountLocked { retry_after_secs })
                } else {
                    ("failed_logins", AppError::RateLimited { retry_after_secs })
                };
                self.core
                    .metrics
                    .rate_limited
                    .with_label_values(&[label])
                    .inc();
                Err(err)
            }
        }
    }
}

impl LoginLimits {
    /// Reserves one check of a credential that names no email (a passwordless passkey
    /// login): a slot of the client IP's failed-login budget only. Errors as `reserve`
    /// (`RateLimited` only).
    pub async fn reserve_ip(&self, client: &ClientInfo) -> AppResult<Attempt> {
        let limits = &self.core.settings.rate_limit;
        let ip = client
            .ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let (true, Some(ip)) = (limits.enabled, ip) else {
            return Ok(Attempt {
                core: self.core.clone(),
                grant: None,
            });
        };
        let now = now_ms();
        let request = SlotRequest {
            now,
            window: duration_ms(limits.window),
            counters: vec![CounterLimit {
                key: format!("ip:{}", rate_key(ip, limits.ipv6_prefix)),
                max: limits.max_failed_logins,
                lock_for: None,
            }],
        };
        let admission = self
            .core
            .db(move |s| s.reserve_login_slots(&request))
            .await?;
        match admission {
            Admission::Granted(grant) => Ok(Attempt {
                core: self.core.clone(),
                grant: Some(grant),
            }),
            Admission::Refused { retry_at, .. } => {
                self.core
                    .metrics
                    .rate_limited
                    .with_label_values(&["failed_logins"])
                    .inc();
                Err(AppError::RateLimited {
                    retry_after_secs: secs_until(retry_at, now),
                })
            }
        }
    }
}

impl Attempt {
    /// The password was right: the slots are given back (a success counts nothing, and does
    /// not clear failures counted before it; see `docs/DESIGN.md`).
    pub async fn succeeded(mut self) {
        self.settle(false).await;
    }

    /// The password was wrong (or the account does not exist): the reserved slots become one
    /// failure on the client's budget and one on the email's counter, which locks the email
    /// for `rate_limit.lockout_duration` when it reaches `rate_limit.lockout_threshold`.
    pub async fn failed(mut self) {
        self.settle(true).await;
    }

    /// A settlement that cannot be written is logged and otherwise ignored: the slots stay
    /// held until their window ends, which errs on the side of the limit.
    async fn settle(&mut self, failed: bool) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        let settled = self
            .core
            .db(move |s| s.settle_login_slots(&grant, failed, now_ms()))
            .await;
        match settled {
            Ok(_) => {}
            // The outage is logged once, by `Core::db`.
            Err(AppError::Unavailable(_)) => {}
            Err(e) => tracing::warn!(error = %e, failed, "could not settle a login attempt"),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.core.store.clone();
        let health = self.core.health.clone();
        runtime.spawn_blocking(
            move || match store.settle_login_slots(&grant, false, now_ms()) {
                Ok(_) => {}
                Err(StoreError::Unavailable(cause)) => health.unavailable(&cause),
                Err(e) => tracing::warn!(error = %e, "could not give back a login attempt's slots"),
            },
        );
    }
}
