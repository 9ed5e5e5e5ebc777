//! Configuration section `[password_reset]`: self-service password reset (CONTRACT 10.3).

use std::time::Duration;

use super::email::link_path;
use super::reader::Reader;
use super::render::{d, q};

/// The keys of `[password_reset]`.
pub(super) const KEYS: &[&str] = &["enabled", "ttl", "link_path"];

#[derive(Debug, Clone)]
pub struct PasswordResetSettings {
    /// `password_reset.enabled` (`AUTHD_PASSWORD_RESET__ENABLED`), default `true` (the routes
    /// still answer 404 while `email.transport = "none"`).
    pub enabled: bool,
    /// `password_reset.ttl` (`AUTHD_PASSWORD_RESET__TTL`), default `30m`, 5m to 24h: how long
    /// a reset link works.
    pub ttl: Duration,
    /// `password_reset.link_path` (`AUTHD_PASSWORD_RESET__LINK_PATH`), default
    /// `/reset-password#token={token}`; must contain `{token}`.
    pub link_path: String,
}

/// The range `password_reset.ttl` must fall in.
pub const TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(5 * 60), Duration::from_secs(24 * 3600));

impl PasswordResetSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let enabled = r.boolean("password_reset.enabled");
        let mut ttl = r.duration("password_reset.ttl", false);
        if !ttl.is_zero() && !(TTL_RANGE.0..=TTL_RANGE.1).contains(&ttl) {
            ttl = r.fail(
                "password_reset.ttl",
                format!(
                    "{} is out of range 5m..=24h",
                    humantime::format_duration(ttl)
                ),
            );
        }
        let link_path = link_path(r, "password_reset.link_path");
        PasswordResetSettings {
            enabled,
            ttl,
            link_path,
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[password_reset]\nenabled = {}\nttl = {}\nlink_path = {}\n",
            self.enabled,
            d(self.ttl),
            q(&self.link_path)
        )
    }
}
