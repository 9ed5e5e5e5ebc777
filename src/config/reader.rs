//! Configuration: reading the merged layers key by key. Each read records one error per bad
//! key and returns a default, so one pass names every bad key at once.

use std::fmt;
use std::time::Duration;

use config::Config;

use super::secret::{check_secret_strength, Secret};

/// Reads each key once, recording one error per bad key.
pub(super) struct Reader<'a> {
    pub(super) cfg: &'a Config,
    pub(super) errors: Vec<String>,
}

impl Reader<'_> {
    pub(super) fn fail<T: Default>(&mut self, key: &str, why: impl fmt::Display) -> T {
        self.errors.push(format!("{key}: {why}"));
        T::default()
    }

    pub(super) fn string(&mut self, key: &str) -> String {
        match self.cfg.get_string(key) {
            Ok(s) => s,
            Err(e) => self.fail(key, format!("not a string ({e})")),
        }
    }

    pub(super) fn boolean(&mut self, key: &str) -> bool {
        let raw = self.string(key);
        match raw.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => self.fail(key, format!("expected true or false, got '{raw}'")),
        }
    }

    pub(super) fn uint(&mut self, key: &str, min: u64, max: u64) -> u64 {
        let raw = self.string(key);
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => self.fail(key, format!("{n} is out of range {min}..={max}")),
            Err(_) => self.fail(key, format!("expected a whole number, got '{raw}'")),
        }
    }

    pub(super) fn duration(&mut self, key: &str, allow_zero: bool) -> Duration {
        let raw = self.string(key);
        let parsed = match raw.trim() {
            "0" => Ok(Duration::ZERO),
            s if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => s
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|e| e.to_string()),
            s => humantime::parse_duration(s).map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(d) if d.is_zero() && !allow_zero => self.fail(key, "must be greater than zero"),
            Ok(d) => d,
            Err(e) => self.fail(
                key,
                format!("invalid duration '{raw}' ({e}); use e.g. 30s, 15m, 7d"),
            ),
        }
    }

    pub(super) fn list(&mut self, key: &str) -> Vec<String> {
        match self.cfg.get_array(key) {
            Ok(values) => values
                .into_iter()
                .filter_map(|v| match v.into_string() {
                    Ok(s) => Some(s),
                    Err(e) => self.fail(key, format!("entries must be strings ({e})")),
                })
                .collect(),
            Err(_) => self.fail(key, "expected a list of strings"),
        }
    }

    pub(super) fn secret(&mut self, key: &str) -> Option<Secret> {
        let raw = self.string(key);
        if raw.is_empty() {
            return None;
        }
        if let Err(why) = check_secret_strength(&raw) {
            return self.fail(key, why);
        }
        Some(Secret(raw))
    }
}
