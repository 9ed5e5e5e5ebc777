//! Configuration section `[log]`: log format and level.

use super::reader::Reader;
use super::render::q;

/// The keys of `[log]`.
pub(super) const KEYS: &[&str] = &["format", "level"];

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
        if tracing_subscriber::EnvFilter::builder()
            .parse(&level)
            .is_err()
        {
            r.fail::<()>(
                "log.level",
                format!("'{level}' is not a valid level or filter"),
            );
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
