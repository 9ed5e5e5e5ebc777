//! Configuration section `[registration]`: whether anyone may sign themselves up.

use super::reader::Reader;

/// The keys of `[registration]`.
pub(super) const KEYS: &[&str] = &["enabled"];

#[derive(Debug, Clone)]
pub struct RegistrationSettings {
    /// `registration.enabled` (`AUTHD_REGISTRATION__ENABLED`), default `true`. When `false`,
    /// `POST /api/auth/register` answers 403 `FORBIDDEN` and creates nothing; accounts then
    /// come only from `create-user`, `import-users` and the admin API.
    pub enabled: bool,
}

impl RegistrationSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        RegistrationSettings {
            enabled: r.boolean("registration.enabled"),
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!("[registration]\nenabled = {}\n", self.enabled)
    }
}
