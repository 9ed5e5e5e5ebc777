//! Configuration section `[metrics]`: where `/metrics` is served.

use std::net::SocketAddr;

use super::reader::Reader;
use super::render::q;

/// The keys of `[metrics]`.
pub(super) const KEYS: &[&str] = &["bind"];

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `metrics.bind` (`AUTHD_METRICS__BIND`), default empty. Empty: `/metrics` is served on
    /// `server.bind` with everything else. An `IP:PORT` (e.g. `127.0.0.1:9464`): `/metrics` is
    /// served only on a second listener there, and `server.bind` answers it 404 `NOT_FOUND`.
    pub bind: Option<SocketAddr>,
}

impl MetricsSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let raw = r.string("metrics.bind");
        let raw = raw.trim();
        let bind = if raw.is_empty() {
            None
        } else {
            match raw.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => r.fail(
                    "metrics.bind",
                    format!("expected empty or IP:PORT such as 127.0.0.1:9464, got '{raw}'"),
                ),
            }
        };
        MetricsSettings { bind }
    }

    pub(super) fn to_toml(&self) -> String {
        let bind = self.bind.map(|a| a.to_string()).unwrap_or_default();
        format!("[metrics]\nbind = {}\n", q(&bind))
    }
}
