//! The report: each scenario's checks (figure, target, PASS/MISS) as a table on stdout, and
//! every number plus the machine's description in a JSON file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::scenarios::{cores, Config};
use crate::Scenario;

/// How a figure is shown.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Percent,
    Ms,
    PerSec,
    /// Megabytes (10^6 bytes).
    Mb,
    /// A number of things (requests).
    Count,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Percent => format!("{v:.1} %"),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::PerSec => format!("{} /s", thousands(v)),
            Unit::Mb => format!("{v:.1} MB"),
            Unit::Count => format!("{v:.0}"),
        }
    }

    /// The unit a JSON `unit` names.
    fn named(name: &str) -> Option<Unit> {
        [Unit::Percent, Unit::Ms, Unit::PerSec, Unit::Mb, Unit::Count]
            .into_iter()
            .find(|u| u.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Ms => "ms",
            Unit::PerSec => "per_s",
            Unit::Mb => "MB",
            Unit::Count => "count",
        }
    }
}

/// One figure against its target.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub figure: f64,
    pub unit: Unit,
    /// True: the figure must be at least the target; false: strictly below it.
    pub at_least: bool,
    pub target: f64,
    pub detail: String,
}

impl Check {
    pub fn at_least(name: &str, figure: f64, unit: Unit, target: f64, detail: String) -> Self {
        Check {
            name: name.into(),
            figure,
            unit,
            at_least: true,
            target,
            detail,
        }
    }

    pub fn below(name: &str, figure: f64, unit: Unit, target: f64, detail: String) -> Self {
        Check {
            at_least: false,
            ..Check::at_least(name, figure, unit, target, detail)
        }
    }

    /// NaN (nothing measured) never passes.
    pub fn pass(&self) -> bool {
        if self.at_least {
            self.figure >= self.target
        } else {
            self.figure < self.target
        }
    }

    fn target_text(&self) -> String {
        let op = if self.at_least { ">=" } else { "<" };
        format!("{op} {}", self.unit.show(self.target))
    }

    fn to_json(&self) -> Value {
        json!({
            "check": self.name,
            "figure": self.figure,
            "unit": self.unit.name(),
            "target": self.target_text(),
            "pass": self.pass(),
            "detail": self.detail,
        })
    }
}

/// What a scenario measured: its numbers, its checks, and how many requests failed.
pub struct Outcome {
    pub json: Value,
    pub checks: Vec<Check>,
    pub errors: u64,
}

pub struct Report {
    config: Value,
    entries: Vec<(Scenario, Outcome)>,
}

impl Report {
    pub fn new(config: &Config) -> Self {
        Report {
            config: serde_json::to_value(config).unwrap_or(Value::Null),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, scenario: Scenario, outcome: Outcome) {
        self.entries.push((scenario, outcome));
    }

    /// The table: one row per check, then any failed requests.
    pub fn table(&self) -> String {
        let header = ["scenario", "check", "figure", "target", "result", "detail"];
        let mut rows: Vec<[String; 6]> = vec![header.map(String::from)];
        for (scenario, outcome) in &self.entries {
            for c in &outcome.checks {
                rows.push([
                    scenario.name().into(),
                    c.name.clone(),
                    c.unit.show(c.figure),
                    c.target_text(),
                    if c.pass() { "PASS" } else { "MISS" }.into(),
                    c.detail.clone(),
                ]);
            }
        }
        let mut widths = [0usize; 6];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (j, (cell, w)) in row.iter().zip(widths).enumerate() {
                let _ = match j {
                    2 | 3 => write!(line, "{cell:>w$}  "),
                    5 => write!(line, "{cell}"),
                    _ => write!(line, "{cell:<w$}  "),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * 5;
                out.push_str(&"-".repeat(total.min(160)));
                out.push('\n');
            }
        }
        for (scenario, outcome) in &self.entries {
            if outcome.errors > 0 {
                let _ = writeln!(
                    out,
                    "warning: {}: {} requests failed (see stderr); its figures are suspect",
                    scenario.name(),
                    outcome.errors
                );
            }
        }
        if self.config["smoke"] == true {
            out.push_str("note: --smoke run: a functional check only, the figures mean nothing\n");
        }
        out
    }

    /// Writes the JSON (creating the directory): machine, build, config, and one object per
    /// scenario with its numbers, errors and checks.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut scenarios = Map::new();
        for (scenario, outcome) in &self.entries {
            let mut obj = match &outcome.json {
                Value::Object(m) => m.clone(),
                other => Map::from_iter([("value".to_string(), other.clone())]),
            };
            obj.insert("errors".into(), json!(outcome.errors));
            obj.insert(
                "checks".into(),
                Value::Array(outcome.checks.iter().map(Check::to_json).collect()),
            );
            scenarios.insert(scenario.name().into(), Value::Object(obj));
        }
        let doc = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "machine": machine(),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "config": self.config,
            "server_env": crate::fixture::extra_server_env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            "scenarios": scenarios,
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&doc)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// The published results (`bench/results/<version>.json`, written by `--out`) as one Markdown
/// table for docs/PERFORMANCE.md: a row per check (scenario, check, target), a column per
/// file in the order given (headed by its version and the date of its run), each cell the
/// figure and PASS or MISS; a check a file lacks is "-". Then a line per file describing its
/// machine. Errors: a file that cannot be read or is not such JSON.
pub fn published_table(files: &[std::path::PathBuf]) -> anyhow::Result<String> {
    let mut runs = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        anyhow::ensure!(
            doc["scenarios"].is_object() && doc["machine"].is_object(),
            "{} is not an authd-bench result (no scenarios or machine)",
            file.display()
        );
        runs.push(doc);
    }
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let day = |doc: &Value| {
        text(&doc["machine"]["date"])
            .chars()
            .take(10)
            .collect::<String>()
    };
    // Rows in the order the checks first appear.
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for doc in &runs {
        for (scenario, obj) in doc["scenarios"].as_object().into_iter().flatten() {
            for check in obj["checks"].as_array().into_iter().flatten() {
                let row = (
                    scenario.clone(),
                    text(&check["check"]),
                    text(&check["target"]),
                );
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
    }
    let mut out = String::from("| scenario | check | target |");
    for doc in &runs {
        let _ = write!(out, " {} ({}) |", text(&doc["version"]), day(doc));
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    for (scenario, name, target) in &rows {
        let _ = write!(out, "| {scenario} | {name} | {target} |");
        for doc in &runs {
            let found = doc["scenarios"][scenario.as_str()]["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| text(&c["check"]) == *name);
            let cell = match found {
                Some(c) => {
                    let unit = Unit::named(&text(&c["unit"]));
                    let figure = c["figure"].as_f64().unwrap_or(f64::NAN);
                    let verdict = if c["pass"] == true { "PASS" } else { "MISS" };
                    format!(
                        "{} {verdict}",
                        unit.map_or(figure.to_string(), |u| u.show(figure))
                    )
                }
                None => "-".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push('\n');
    for doc in &runs {
        let m = &doc["machine"];
        let _ = writeln!(
            out,
            "- {} ({}, {} build): {} cores, {}, {:.0} GiB, Linux {}.",
            text(&doc["version"]),
            day(doc),
            text(&doc["build"]),
            m["cores"],
            text(&m["cpu_model"]),
            m["total_memory_bytes"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 30),
            text(&m["kernel"]),
        );
    }
    Ok(out)
}

/// Cores, CPU model, total memory, kernel and date of this run.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_memory_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let kernel = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    json!({
        "cores": cores(),
        "cpu_model": cpu_model,
        "total_memory_bytes": total_memory_bytes,
        "kernel": kernel,
        "date": date,
    })
}

/// 12345.6 -> "12,346".
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }

    #[test]
    fn nan_never_passes() {
        let c = Check::at_least("x", f64::NAN, Unit::Percent, 1.0, String::new());
        assert!(!c.pass());
        let c = Check::below("x", f64::NAN, Unit::Ms, 1.0, String::new());
        assert!(!c.pass());
    }
}
