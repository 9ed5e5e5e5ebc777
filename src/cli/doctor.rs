//! CLI: `authd doctor`: checks an installation, reading only, and says what to fix (CONTRACT
//! 12.3). One line a check (`ok|warn|fail <name>: <detail>`), then `N ok, N warn, N fail`;
//! exit 1 when any check fails. The checks themselves are `service::doctor`'s.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::{CliError, Failure};
use crate::app::{self, Schema};
use crate::config::{self, Sources};
use crate::domain::terminal::Shown;
use crate::service::doctor::{self, Check, Status};
use crate::store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object instead of lines: `{"checks": [{"name", "status", "detail"}], "ok",
    /// "warn", "fail"}`
    #[arg(long)]
    pub json: bool,
}

/// Runs every check (on its own runtime: it starts before the configuration is known, which
/// is its first check) and prints them.
pub fn run(config_file: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start the async runtime: {e}")))?;
    let checks = runtime.block_on(checks(config_file));
    print(&checks, args.json);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Err(CliError(format!("doctor: {failed} check(s) failed")).into());
    }
    Ok(())
}

async fn checks(config_file: Option<PathBuf>) -> Vec<Check> {
    // The configuration, as every command loads it (`check-config`'s checks).
    let loaded = Sources::from_process(config_file).and_then(|(sources, warnings)| {
        let mut settings = config::load(&sources)?;
        store::check_url(&settings.database.url)
            .map_err(|why| config::ConfigError(vec![format!("database.url: {why}")]))?;
        settings.warnings.splice(0..0, warnings);
        Ok(settings)
    });
    let settings = match loaded {
        Ok(s) => Arc::new(s),
        Err(e) => return vec![doctor::configuration_failed(&e.to_string())],
    };
    let mut checks = vec![doctor::configuration_ok(&settings)];
    match app::open_core(settings.clone(), Schema::Existing).await {
        Ok(core) => {
            checks.extend(doctor::store_checks(&core).await);
            let store = core.store.clone();
            let _ = crate::blocking::blocking(move || store.close()).await;
        }
        Err(e) => checks.push(doctor::database_unreachable(&settings, &e.to_string())),
    }
    checks.push(doctor::cookie_hsts_proxies(&settings));
    checks.push(doctor::redis(&settings).await);
    checks.push(doctor::check_mail(&settings).await);
    checks
}

fn print(checks: &[Check], as_json: bool) {
    let n = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (ok, warn, fail) = (n(Status::Ok), n(Status::Warn), n(Status::Fail));
    if as_json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| json!({"name": c.name, "status": c.status.as_str(), "detail": c.detail}))
            .collect();
        println!(
            "{}",
            json!({"checks": list, "ok": ok, "warn": warn, "fail": fail})
        );
        return;
    }
    for c in checks {
        // A detail may quote the configuration or the database: escaped.
        println!("{} {}: {}", c.status.as_str(), c.name, Shown(&c.detail));
    }
    println!("{ok} ok, {warn} warn, {fail} fail");
}
