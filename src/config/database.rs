//! Configuration section `[database]`: where state lives and how the pool behaves.

use std::time::Duration;

use super::reader::Reader;
use super::redact::redact_url;
use super::render::{d, q};

/// The keys of `[database]`.
pub(super) const KEYS: &[&str] = &["url", "pool_size", "auto_migrate", "busy_timeout"];

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `database.url`, default `sqlite://data/authd.db`.
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
        let url = r.string("database.url");
        if let Err(why) = check_database_url(&url) {
            r.fail::<()>("database.url", why);
        }
        DatabaseSettings {
            url,
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

fn check_database_url(url: &str) -> Result<(), String> {
    match url.split_once(':') {
        Some(("sqlite", rest)) if !rest.trim_start_matches("//").is_empty() => Ok(()),
        Some(("sqlite", _)) => Err("sqlite URL has no path (e.g. sqlite://data/authd.db)".into()),
        Some(("postgres" | "postgresql", _)) => crate::store::postgres::check_url(url),
        Some((scheme, _)) => Err(format!(
            "unsupported database scheme '{scheme}' (this build supports sqlite:// and postgres://)"
        )),
        None => Err(format!(
            "'{url}' is not a URL such as sqlite://data/authd.db"
        )),
    }
}
