//! Configuration section `[audit]`: how long the audit trail is kept.

use std::time::Duration;

use super::reader::Reader;
use super::render::{d, q};

/// The keys of `[audit]`.
pub(super) const KEYS: &[&str] = &["retention"];

#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `audit.retention` (`AUTHD_AUDIT__RETENTION`), default empty: every audit event is kept.
    /// A duration (e.g. `365d`): `cleanup-tokens` (and the background cleanup of `serve`)
    /// deletes sealed events older than that, oldest first, and records the hash of the last
    /// one deleted so the chain stays verifiable from the first remaining event.
    pub retention: Option<Duration>,
}

impl AuditSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let raw = r.string("audit.retention");
        let retention = if raw.trim().is_empty() {
            None
        } else {
            Some(r.duration("audit.retention", false))
        };
        AuditSettings { retention }
    }

    pub(super) fn to_toml(&self) -> String {
        let retention = self.retention.map_or_else(|| q(""), d);
        format!("[audit]\nretention = {retention}\n")
    }
}
