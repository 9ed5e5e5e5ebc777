//! CLI: `authd keys list|rotate|revoke`: the signing keys kept in the database (the same
//! service the server uses; running servers pick a change up within seconds).

use std::sync::Arc;

use super::{stdin_is_terminal, CliError};
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::keys::KeyUse;
use crate::domain::terminal::{json_line, table, Shown};
use crate::error::AppError;
use crate::service::keys::{KeyInfo, Revoked};
use crate::service::Keys;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// What a key is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UseArg {
    /// Access tokens (JWTs; public keys in the JWKS)
    Access,
    /// Refresh tokens (HMAC)
    Refresh,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// List every signing key: kid, algorithm, use, state (active, retiring, retired),
    /// created, and when a retiring key leaves the JWKS (never any key material)
    List {
        /// Print a JSON array of {"kid", "algorithm", "use", "state", "createdAt", "retiresAt"}
        #[arg(long)]
        json: bool,
    },
    /// Make a new active key; the previous one keeps verifying until every token it signed
    /// has expired (access: jwt.access_ttl + jwt.leeway; refresh: jwt.refresh_ttl)
    Rotate {
        /// Which key to rotate
        #[arg(long = "use", value_enum, default_value = "access", value_name = "USE")]
        key_use: UseArg,
    },
    /// Revoke a key now (a leaked key): tokens it signed are refused within seconds;
    /// revoking the active key makes a new one first
    Revoke {
        /// The key id (see `authd keys list`; a kid may begin with `-`)
        #[arg(value_name = "KID", allow_hyphen_values = true)]
        kid: String,
        /// Do not ask for confirmation (required when stdin is not a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

fn service_error(e: AppError) -> CliError {
    match e {
        AppError::Validation(details) => CliError(
            details
                .iter()
                .map(|d| format!("{} {}", d.field, d.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => other.into(),
    }
}

/// The `keys list` table: one row per key, columns aligned.
fn key_table(list: &[KeyInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.algorithm.clone(),
                k.key_use.to_string(),
                k.state.to_string(),
                k.created_at.clone().unwrap_or_else(|| "-".into()),
                k.retires_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["KID", "ALGORITHM", "USE", "STATE", "CREATED", "RETIRES"],
        &rows,
    )
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    if let KeysCommand::Revoke { kid, yes: false } = &args.command {
        if !stdin_is_terminal() {
            return Err(CliError(
                "refusing to revoke without confirmation: stdin is not a terminal; pass --yes"
                    .into(),
            ));
        }
        let confirmed = dialoguer::Confirm::new()
            .with_prompt(format!(
                "Revoke signing key {}? Every token it signed will be refused.",
                Shown(kid)
            ))
            .default(false)
            .interact()
            .map_err(|e| CliError(format!("prompt failed: {e}")))?;
        if !confirmed {
            return Err(CliError("aborted: nothing was revoked".into()));
        }
    }
    let core = app::open_core(settings, Schema::Ready).await?;
    let keys = Keys::new(core);
    match args.command {
        KeysCommand::List { json } => {
            let list = keys.list().await.map_err(service_error)?;
            if json {
                println!("{}", json_line(&list));
            } else {
                print!("{}", key_table(&list));
            }
        }
        KeysCommand::Rotate { key_use } => {
            let key_use = match key_use {
                UseArg::Access => KeyUse::Access,
                UseArg::Refresh => KeyUse::Refresh,
            };
            let new = keys.rotate(key_use).await.map_err(service_error)?;
            println!(
                "new active {} key {}; running servers use it within 10 seconds",
                new.key_use,
                Shown(&new.kid)
            );
        }
        KeysCommand::Revoke { kid, .. } => match keys.revoke(&kid).await {
            Ok(Revoked::Now { replaced_by }) => {
                println!(
                    "revoked key {}; running servers refuse its tokens within 10 seconds",
                    Shown(&kid)
                );
                if let Some(new) = replaced_by {
                    println!("new active key {}", Shown(&new));
                }
            }
            Ok(Revoked::Already) => println!("key {} was already revoked", Shown(&kid)),
            Err(AppError::NotFound) => return Err(CliError(format!("no such key: {kid}"))),
            Err(e) => return Err(service_error(e)),
        },
    }
    Ok(())
}
