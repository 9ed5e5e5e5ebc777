//! CLI: `authd check-config`: validate the configuration and print the effective values,
//! every secret redacted. Exit 1 names each bad key.

use std::sync::Arc;

use super::CliError;
use crate::config::Settings;

pub async fn run(settings: Arc<Settings>) -> Result<(), CliError> {
    for w in &settings.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", settings.to_redacted_toml());
    Ok(())
}
