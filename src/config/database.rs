//! Configuration section `[database]`: where state lives and how the pool behaves.

use std::time::Duration;

use super::reader::Reader;
use super::redact::redact_url;
use super::render::{d, q};

/// The keys of `[database]`.
pub(super) const KEYS: &[&str] = &["url", "pool_size", "auto_migrate", "busy_timeout"];

/// The keys of `[database]` that may also be given as a file (`AUTHD_..._FILE`):
/// the file holds the whole URL.
pub(super) const FILE_KEYS: &[&str] = &["database.url"];

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `database.url`, default `sqlite://data/authd.db`. Checked by the store, not here
    /// (configuration knows no backend): `store::check_url`, which the CLI runs before any
    /// command.
    pub url: String,
    /// `database.pool_size`, default 8.
    pub pool_size: u32,
    /// `database.auto_migrate`, default true.
    pub auto_migrate: bool,
    /// `database.busy_timeout`, default 5s: how long a write waits for a lock before 503.
    pub busy_timeout: Duration,
}

impl DatabaseSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        DatabaseSettings {
            url: r.string("database.url"),
            pool_size: r.uint("database.pool_size", 1, 256) as u32,
            auto_migrate: r.boolean("database.auto_migrate"),
            busy_timeout: r.duration("database.busy_timeout", true),
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[database]\nurl = {}\npool_size = {}\nauto_migrate = {}\nbusy_timeout = {}\n",
            q(&redact_url(&self.url)),
            self.pool_size,
            self.auto_migrate,
            d(self.busy_timeout),
        )
    }
}
