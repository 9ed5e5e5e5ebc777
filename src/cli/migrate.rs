//! CLI: `authd migrate [--status]`.

use std::sync::Arc;

use super::CliError;
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::terminal::Shown;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// List applied and pending migrations instead of applying them
    #[arg(long)]
    pub status: bool,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let core = app::open_core(settings, Schema::AsIs).await?;
    if args.status {
        let rows = core.db(|s| s.migration_status()).await?;
        let mut refused = None;
        for m in &rows {
            match (&m.applied_on, &m.problem) {
                // Names and times come from the database's history table: escaped.
                (Some(at), None) => {
                    println!("applied  V{}__{}  {}", m.version, Shown(&m.name), Shown(at))
                }
                (Some(at), Some(problem)) => {
                    println!(
                        "applied  V{}__{}  {}  ({})",
                        m.version,
                        Shown(&m.name),
                        Shown(at),
                        Shown(problem)
                    );
                    refused.get_or_insert(format!("V{}__{}: {problem}", m.version, m.name));
                }
                (None, _) => println!("pending  V{}__{}", m.version, Shown(&m.name)),
            }
        }
        // Listed, but the other commands would refuse this database: say so, and exit 1.
        return match refused {
            Some(why) => Err(CliError(format!(
                "this authd refuses the database: migration {why}"
            ))),
            None => Ok(()),
        };
    }
    let applied = core.db(|s| s.migrate()).await?;
    if applied.is_empty() {
        println!("nothing to apply: the database is up to date");
    }
    for m in applied {
        println!("applied V{}__{}", m.version, Shown(&m.name));
    }
    Ok(())
}
