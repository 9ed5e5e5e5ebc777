//! Configuration section `[pages]`: the landing pages for the links authd mails.

use super::reader::Reader;

/// The keys of `[pages]`.
pub(super) const KEYS: &[&str] = &["enabled"];

#[derive(Debug, Clone)]
pub struct PagesSettings {
    /// `pages.enabled` (`AUTHD_PAGES__ENABLED`), default `false`. When `true`, authd serves
    /// the landing pages of the mailed links at the default link paths (`/reset-password`,
    /// `/verify-email`, `/confirm-email-change`) and their script and style sheet under
    /// `/_authd/`; turn it on when `email.link_base` is authd's own public address. When
    /// `false`, those paths answer 404 `NOT_FOUND`.
    pub enabled: bool,
}

impl PagesSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        PagesSettings {
            enabled: r.boolean("pages.enabled"),
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!("[pages]\nenabled = {}\n", self.enabled)
    }
}
