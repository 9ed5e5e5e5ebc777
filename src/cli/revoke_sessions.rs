//! CLI: `authd revoke-sessions`: revoke one user's sessions, or everyone's.

use std::sync::Arc;

use super::{stdin_is_terminal, CliError};
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::terminal::Shown;
use crate::error::AppError;
use crate::service::{Admin, RevokeTarget};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["email", "user_id", "all"])))]
pub struct Args {
    /// Revoke the sessions of the user with this email
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Revoke the sessions of the user with this id
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,
    /// Revoke every session of every user
    #[arg(long)]
    pub all: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    // `named`: the user as the operator named it (email or id), for the messages below.
    let (target, named) = match (args.email, args.user_id, args.all) {
        (Some(e), _, _) => (RevokeTarget::Email(e.clone()), Some(e)),
        (_, Some(id), _) => (RevokeTarget::UserId(id.clone()), Some(id)),
        _ => (RevokeTarget::All, None),
    };
    if !args.yes {
        if !stdin_is_terminal() {
            return Err(CliError(
                "refusing to revoke without confirmation: stdin is not a terminal; pass --yes"
                    .into(),
            ));
        }
        let confirmed = dialoguer::Confirm::new()
            .with_prompt(match &named {
                Some(user) => format!("Revoke all sessions of user {}?", Shown(user)),
                None => "Revoke all sessions of EVERY user?".to_string(),
            })
            .default(false)
            .interact()
            .map_err(|e| CliError(format!("prompt failed: {e}")))?;
        if !confirmed {
            return Err(CliError("aborted: nothing was revoked".into()));
        }
    }
    let core = app::open_core(settings, Schema::Ready).await?;
    match Admin::new(core).revoke_sessions(target).await {
        Ok(n) => {
            println!("revoked {n} session(s)");
            Ok(())
        }
        Err(AppError::NotFound) => Err(CliError(match named {
            Some(user) => format!("no such user: {user}"),
            None => "no such user".into(),
        })),
        Err(e) => Err(e.into()),
    }
}
