//! Configuration section `[revocation_feed]`: the revoked-session feed
//! (`GET /.well-known/revoked-sessions`, contract 12.1).

use std::time::Duration;

use super::reader::Reader;
use super::render::d;

/// The keys of `[revocation_feed]`.
pub(super) const KEYS: &[&str] = &["enabled", "poll_after"];

#[derive(Debug, Clone)]
pub struct RevocationFeedSettings {
    /// `revocation_feed.enabled` (`AUTHD_REVOCATION_FEED__ENABLED`), default `true`. When
    /// `false`, `GET /.well-known/revoked-sessions` answers 404 `NOT_FOUND`.
    pub enabled: bool,
    /// `revocation_feed.poll_after` (`AUTHD_REVOCATION_FEED__POLL_AFTER`), default `5s`, whole
    /// seconds of at least 1: the feed's `pollAfter` and its `Cache-Control: max-age`.
    pub poll_after: Duration,
}

impl RevocationFeedSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let key = "revocation_feed.poll_after";
        let mut poll_after = r.duration(key, false);
        if poll_after.subsec_nanos() != 0 {
            r.fail::<()>(
                key,
                format!(
                    "must be whole seconds (got {})",
                    humantime::format_duration(poll_after)
                ),
            );
        }
        if poll_after.is_zero() || poll_after.subsec_nanos() != 0 {
            // An error was recorded; the value is never used.
            poll_after = Duration::from_secs(5);
        }
        RevocationFeedSettings {
            enabled: r.boolean("revocation_feed.enabled"),
            poll_after,
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[revocation_feed]\nenabled = {}\npoll_after = {}\n",
            self.enabled,
            d(self.poll_after),
        )
    }
}
