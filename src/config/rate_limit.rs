//! Configuration section `[rate_limit]`: per-IP budgets, failed-login limits, lockout, and the
//! Redis that shares the budget between instances.

use std::time::Duration;

use super::reader::Reader;
use super::redact::redact_url;
use super::render::{d, q};

/// The keys of `[rate_limit]`.
pub(super) const KEYS: &[&str] = &[
    "enabled",
    "window",
    "max_requests",
    "max_failed_logins",
    "lockout_threshold",
    "lockout_duration",
    "redis_url",
    "ipv6_prefix",
];

/// The keys of `[rate_limit]` that may also be given as a file (`AUTHD_..._FILE`):
/// the file holds the whole URL.
pub(super) const FILE_KEYS: &[&str] = &["rate_limit.redis_url"];

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub window: Duration,
    pub max_requests: u32,
    pub max_failed_logins: u32,
    pub lockout_threshold: u32,
    pub lockout_duration: Duration,
    /// `rate_limit.redis_url` (`AUTHD_RATE_LIMIT__REDIS_URL`), default empty (`None`): each
    /// process counts the per-IP request budget itself. `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
    /// shares that budget between instances through Redis (see `http::budget`). May hold a
    /// password: shown only through `redact_url`.
    pub redis_url: Option<String>,
    /// `rate_limit.ipv6_prefix` (`AUTHD_RATE_LIMIT__IPV6_PREFIX`), default 64, 1 to 128: IPv6
    /// clients are counted per network of this prefix length by every per-IP limit (128:
    /// each address on its own). See `domain::ip::rate_key`.
    pub ipv6_prefix: u8,
}

impl RateLimitSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        RateLimitSettings {
            enabled: r.boolean("rate_limit.enabled"),
            window: r.duration("rate_limit.window", false),
            max_requests: r.uint("rate_limit.max_requests", 1, u32::MAX as u64) as u32,
            max_failed_logins: r.uint("rate_limit.max_failed_logins", 1, u32::MAX as u64) as u32,
            lockout_threshold: r.uint("rate_limit.lockout_threshold", 1, u32::MAX as u64) as u32,
            lockout_duration: r.duration("rate_limit.lockout_duration", false),
            redis_url: redis_url(r, "rate_limit.redis_url"),
            ipv6_prefix: r.uint("rate_limit.ipv6_prefix", 1, 128) as u8,
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[rate_limit]\nenabled = {}\nwindow = {}\nmax_requests = {}\nmax_failed_logins = {}\n\
             lockout_threshold = {}\nlockout_duration = {}\nredis_url = {}\nipv6_prefix = {}\n",
            self.enabled,
            d(self.window),
            self.max_requests,
            self.max_failed_logins,
            self.lockout_threshold,
            d(self.lockout_duration),
            q(&self
                .redis_url
                .as_deref()
                .map(redact_url)
                .unwrap_or_default()),
            self.ipv6_prefix,
        )
    }
}

/// An optional Redis URL: empty is `None`; anything else must be a `redis://` URL that the
/// Redis client accepts. The message never repeats a password.
fn redis_url(r: &mut Reader, key: &str) -> Option<String> {
    let raw = r.string(key);
    let url = raw.trim();
    if url.is_empty() {
        return None;
    }
    if let Err(why) = check_redis_url(url) {
        return r.fail(key, why);
    }
    Some(url.to_string())
}

fn check_redis_url(url: &str) -> Result<(), String> {
    const FORM: &str = "redis://[:PASSWORD@]HOST[:PORT][/DB]";
    if !url.starts_with("redis://") {
        return Err(format!(
            "'{}' is not a Redis URL such as {FORM} (only redis:// is supported)",
            redact_url(url)
        ));
    }
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(info) if info.redis_settings().db() >= 0 => Ok(()),
        Ok(_) => Err(format!(
            "'{}': the database number must not be negative",
            redact_url(url)
        )),
        Err(e) => Err(format!(
            "'{}' is not a Redis URL such as {FORM} ({})",
            redact_url(url),
            e
        )),
    }
}
