//! Configuration section `[cleanup]`: pruning expired sessions and tokens.

use std::time::Duration;

use super::reader::Reader;
use super::render::d;

/// The keys of `[cleanup]`.
pub(super) const KEYS: &[&str] = &["interval", "retention"];

#[derive(Debug, Clone)]
pub struct CleanupSettings {
    pub interval: Duration,
    pub retention: Duration,
}

impl CleanupSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        CleanupSettings {
            interval: r.duration("cleanup.interval", false),
            retention: r.duration("cleanup.retention", true),
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[cleanup]\ninterval = {}\nretention = {}\n",
            d(self.interval),
            d(self.retention),
        )
    }
}
