//! CLI: `authd backup <FILE> [--force]` and `authd restore <FILE> [--verify]` (CONTRACT
//! 12.4); the work is `store::backup`.

use std::path::PathBuf;
use std::sync::Arc;

use super::CliError;
use crate::blocking::blocking;
use crate::config::Settings;
use crate::domain::terminal::Shown;
use crate::store::backup::{self, AuditChain};
use crate::store::{StoreError, StoreOptions};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (a SQLite file, mode 0600); written under a temporary name in
    /// the same directory, then renamed
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace FILE if it exists (it stays as it was if the backup fails)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup to restore (a file written by `authd backup`)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Only check FILE (integrity, schema version, row counts, audit chain); change nothing
    #[arg(long)]
    pub verify: bool,
}

fn options(settings: &Settings) -> StoreOptions {
    StoreOptions {
        pool_size: 2,
        busy_timeout: settings.database.busy_timeout,
        health: crate::store::health::DbHealth::uncounted(),
    }
}

fn cli_error(e: StoreError) -> CliError {
    CliError(match e {
        StoreError::Unavailable(m) => format!("database unavailable: {m}"),
        StoreError::Other(m) | StoreError::Migration(m) | StoreError::Conflict(m) => m,
    })
}

fn print_counts(tables: &[(String, u64)]) -> u64 {
    let mut total = 0;
    for (table, rows) in tables {
        println!("{}: {rows} row(s)", Shown(table));
        total += rows;
    }
    total
}

pub async fn backup(settings: Arc<Settings>, args: BackupArgs) -> Result<(), CliError> {
    let options = options(&settings);
    let url = settings.database.url.clone();
    let file = args.file.clone();
    let report = blocking(move || backup::backup(&url, &options, &file, args.force))
        .await?
        .map_err(cli_error)?;
    let total = print_counts(&report.tables);
    println!("sha256: {}", report.sha256);
    println!(
        "backup written to {} ({total} row(s) in {} table(s))",
        Shown(&args.file.display().to_string()),
        report.tables.len()
    );
    Ok(())
}

pub async fn restore(settings: Arc<Settings>, args: RestoreArgs) -> Result<(), CliError> {
    let shown = args.file.display().to_string();
    if args.verify {
        let file = args.file.clone();
        let verified = blocking(move || backup::verify(&file))
            .await?
            .map_err(cli_error)?;
        let total = print_counts(&verified.tables);
        println!(
            "audit chain: {}",
            match &verified.audit_chain {
                AuditChain::Absent => "none in this schema".to_string(),
                AuditChain::Verified(what) => format!("ok, {}", Shown(what)),
            }
        );
        println!(
            "ok: {} passes integrity_check, schema version {} (this authd's), {total} row(s) \
             in {} table(s)",
            Shown(&shown),
            verified.schema_version,
            verified.tables.len()
        );
        return Ok(());
    }
    let options = options(&settings);
    let url = settings.database.url.clone();
    let file = args.file.clone();
    let report = blocking(move || backup::restore(&file, &url, &options))
        .await?
        .map_err(cli_error)?;
    if report.migrations_applied > 0 {
        println!(
            "applied {} migration(s) to the target",
            report.migrations_applied
        );
    }
    let total = print_counts(&report.tables);
    println!(
        "restored {} into {}: {total} row(s) in {} table(s), row counts verified, committed",
        Shown(&shown),
        Shown(&crate::config::redact_url(&settings.database.url)),
        report.tables.len()
    );
    Ok(())
}
