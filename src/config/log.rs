//! Configuration section `[log]`: log format and level.

use super::reader::Reader;
use super::render::q;

/// The keys of `[log]`.
pub(super) const KEYS: &[&str] = &["format", "level"];

/// The level words `log.level` accepts, alone or after `target=` in a filter.
const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Checks `log.level`: a level word, or a comma-separated filter (`authd=debug,tower=warn`)
/// whose every directive ends in a level word. A bare word that is not a level (`verbose`)
/// would be read by the filter as a target name and silence every log line, so it is refused.
fn check_level(level: &str) -> Result<(), String> {
    let expected = "expected error, warn, info, debug, trace or a filter such as \
                    authd=debug,tower=warn";
    let directives: Vec<&str> = level.split(',').map(str::trim).collect();
    if directives.iter().all(|d| d.is_empty()) {
        return Err(format!("is empty; {expected}"));
    }
    for directive in directives.iter().filter(|d| !d.is_empty()) {
        let word = directive
            .rsplit_once('=')
            .map_or(*directive, |(_, w)| w)
            .trim();
        if !LEVELS.contains(&word.to_ascii_lowercase().as_str()) {
            return Err(format!("'{word}' in '{level}' is not a level; {expected}"));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|e| format!("'{level}' is not a valid filter ({e}); {expected}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl LogSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let format_raw = r.string("log.format");
        let format = match format_raw.to_ascii_lowercase().as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            _ => {
                r.fail::<()>(
                    "log.format",
                    format!("expected pretty or json, got '{format_raw}'"),
                );
                LogFormat::Pretty
            }
        };
        let level = r.string("log.level");
        if let Err(why) = check_level(&level) {
            r.fail::<()>("log.level", why);
        }
        LogSettings { format, level }
    }

    pub(super) fn to_toml(&self) -> String {
        let format = match self.format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        format!(
            "[log]\nformat = {}\nlevel = {}\n",
            q(format),
            q(&self.level)
        )
    }
}
