//! Configuration: rendering values back as TOML for `Settings::to_redacted_toml`.

use std::time::Duration;

use super::secret::Secret;

/// A TOML string.
pub(super) fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A duration as a TOML string such as `"15m"`.
pub(super) fn d(d: Duration) -> String {
    q(&humantime::format_duration(d).to_string())
}

/// A TOML list of strings.
pub(super) fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// A secret: `"***"` when set, `""` when not.
pub(super) fn secret(s: &Option<Secret>) -> String {
    q(if s.is_some() { "***" } else { "" })
}
