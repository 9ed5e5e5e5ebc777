//! authd-bench: the benchmark harness (see docs/PERFORMANCE.md). It starts authd as a child
//! process (this binary re-executed as `__authd ...`, which is exactly authd's `main`), seeds
//! its SQLite database directly, drives it over loopback HTTP with a concurrent keep-alive load
//! generator, and prints a table of figures against their targets plus a JSON file.
//!
//! `cargo run --release --bin authd-bench [-- --smoke] [-- --out PATH] [-- --scenario NAME]`

mod child;
mod fixture;
mod load;
mod pgdb;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Benchmarks authd over real loopback HTTP and reports each figure against its target.
#[derive(Debug, Parser)]
#[command(name = "authd-bench")]
struct Args {
    /// A tiny configuration that only checks every scenario runs (seconds, not minutes; the
    /// figures mean nothing)
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON results [default: bench/results/latest.json in the repository]
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Run only this scenario (repeatable); default: all of them but `soak`, which runs only
    /// when named (and in --smoke)
    #[arg(long, value_enum, value_name = "NAME")]
    scenario: Vec<Scenario>,
    /// Seconds of the soak's mixed load (after its warm-up); default 600, or 1.5 with --smoke
    #[arg(long, value_name = "SECS")]
    soak_duration: Option<f64>,
    /// Seconds measured per run (after the warm-up); default 10, or 0.3 with --smoke
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Run on PostgreSQL: each scenario creates a scratch database `authd_bench_*` on the
    /// server this URL names (connecting with it to create and drop it) and drops it after.
    /// Default scenarios then: login, profile, refresh, scale (scale at 10k, 50k, 100k users)
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// An extra setting for every authd server the bench starts (repeatable), to measure what
    /// a setting changes, e.g. `--server-env AUTHD_DATABASE__POOL_SIZE=16`; the results name
    /// it under `server_env`
    #[arg(long, value_name = "AUTHD_KEY=VALUE", value_parser = parse_server_env)]
    server_env: Vec<(String, String)>,
    /// Print the Markdown table of these published results (`bench/results/<version>.json`,
    /// one column each, in this order) for docs/PERFORMANCE.md, and run nothing
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["smoke", "scenario", "database"])]
    table: Vec<PathBuf>,
}

/// `AUTHD_KEY=VALUE` into its two halves.
fn parse_server_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if key.starts_with("AUTHD_") && key.len() > "AUTHD_".len() => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("expected AUTHD_KEY=VALUE, got '{s}'")),
    }
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Login,
    Profile,
    Refresh,
    Isolation,
    Scale,
    Memory,
    Enumeration,
    Mfa,
    Soak,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Login,
        Scenario::Profile,
        Scenario::Refresh,
        Scenario::Isolation,
        Scenario::Scale,
        Scenario::Memory,
        Scenario::Enumeration,
        Scenario::Mfa,
    ];

    /// Every scenario, `soak` (ten minutes) last.
    pub const EVERY: [Scenario; 9] = [
        Scenario::Login,
        Scenario::Profile,
        Scenario::Refresh,
        Scenario::Isolation,
        Scenario::Scale,
        Scenario::Memory,
        Scenario::Enumeration,
        Scenario::Mfa,
        Scenario::Soak,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Profile => "profile",
            Scenario::Refresh => "refresh",
            Scenario::Isolation => "isolation",
            Scenario::Scale => "scale",
            Scenario::Memory => "memory",
            Scenario::Enumeration => "enumeration",
            Scenario::Mfa => "mfa",
            Scenario::Soak => "soak",
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = child::child_main(&argv) {
        return code;
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authd-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if !args.table.is_empty() {
        print!("{}", report::published_table(&args.table)?);
        return Ok(());
    }
    let mut config = if args.smoke {
        scenarios::Config::smoke()
    } else {
        scenarios::Config::full()
    };
    if let Some(secs) = args.duration {
        anyhow::ensure!(
            secs.is_finite() && (0.05..=600.0).contains(&secs),
            "--duration must be between 0.05 and 600 seconds"
        );
        config.duration = Duration::from_secs_f64(secs);
    }
    if let Some(secs) = args.soak_duration {
        anyhow::ensure!(
            secs.is_finite() && (0.5..=86_400.0).contains(&secs),
            "--soak-duration must be between 0.5 and 86400 seconds"
        );
        config.soak_duration = Duration::from_secs_f64(secs);
    }
    fixture::set_extra_server_env(args.server_env.clone());
    if let Some(url) = &args.database {
        pgdb::with_database(url, "check")?;
        if !args.smoke {
            // Seeding goes through the Store trait (a transaction per session): 1M sessions
            // would take many minutes on PostgreSQL.
            config.scale_users = [10_000, 50_000, 100_000];
        }
    }
    let selected: Vec<Scenario> = if args.scenario.is_empty() && args.database.is_some() {
        vec![
            Scenario::Login,
            Scenario::Profile,
            Scenario::Refresh,
            Scenario::Scale,
        ]
    } else if args.scenario.is_empty() && args.smoke {
        Scenario::EVERY.to_vec()
    } else if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::EVERY
            .into_iter()
            .filter(|s| args.scenario.contains(s))
            .collect()
    };
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/results/latest.json")
    });
    if cfg!(debug_assertions) && !args.smoke {
        eprintln!(
            "authd-bench: warning: this is a debug build; figures are meaningless \
             (use cargo run --release --bin authd-bench)"
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut bench = scenarios::Bench::new(config, runtime, args.database);
    let mut report = report::Report::new(&bench.config);
    for scenario in selected {
        eprintln!("authd-bench: running {} ...", scenario.name());
        let outcome = bench.run(scenario)?;
        report.add(scenario, outcome);
    }
    print!("{}", report.table());
    report.write_json(&out)?;
    eprintln!("authd-bench: results written to {}", out.display());
    Ok(())
}
