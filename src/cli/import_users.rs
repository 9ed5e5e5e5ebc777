//! CLI: `authd import-users`: bring accounts over from another system with their bcrypt
//! hashes (JSON Lines). Every line is checked first; then all are imported in one transaction.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use super::CliError;
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::ClientInfo;
use crate::service::{Import, ImportError, ImportOptions};

/// Bad lines described with their reasons; past this many, only their numbers.
const DESCRIBED_LINES: usize = 50;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON Lines file (`-` for standard input): one {"email", "passwordHash", "name"?,
    /// "role"?} object a line; passwordHash a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31);
    /// blank lines are ignored
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Validate every line and print the counts; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Skip lines whose email already has an account (without it, such a line fails the import)
    #[arg(long)]
    pub skip_existing: bool,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let bytes = read(&args.file)?;
    let core = app::open_core(settings, Schema::Ready).await?;
    let client = ClientInfo {
        ip: None,
        user_agent: Some("authd-cli".into()),
    };
    let options = ImportOptions {
        skip_existing: args.skip_existing,
        dry_run: args.dry_run,
    };
    match Import::new(core).run(bytes, options, &client).await {
        Ok(r) if args.dry_run => {
            println!(
                "dry run: {} to import, {} to skip (nothing written)",
                r.imported, r.skipped
            );
            Ok(())
        }
        Ok(r) => {
            println!("imported {}, skipped {}", r.imported, r.skipped);
            Ok(())
        }
        Err(ImportError::BadLines(bad)) => {
            let described = bad
                .iter()
                .take(DESCRIBED_LINES)
                .map(|b| format!("line {}: {}", b.line, b.problems.join("; ")));
            let mut parts: Vec<String> = described.collect();
            if bad.len() > DESCRIBED_LINES {
                let rest: Vec<String> = bad[DESCRIBED_LINES..]
                    .iter()
                    .map(|b| b.line.to_string())
                    .collect();
                parts.push(format!("and lines {}", rest.join(", ")));
            }
            let n = bad.len();
            Err(CliError(format!(
                "{n} bad line{}, nothing imported: {}",
                if n == 1 { "" } else { "s" },
                parts.join(", ")
            )))
        }
        Err(ImportError::Existing(found)) => {
            let n = found.len();
            let named: Vec<String> = found
                .iter()
                .map(|(line, email)| format!("line {line}: {email}"))
                .collect();
            Err(CliError(format!(
                "{n} email{} already taken, nothing imported (--skip-existing skips them): {}",
                if n == 1 { " is" } else { "s are" },
                named.join(", ")
            )))
        }
        Err(ImportError::App(e)) => Err(e.into()),
    }
}

fn read(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| CliError(format!("cannot read {}: {e}", file.display())))?;
    Ok(bytes)
}
