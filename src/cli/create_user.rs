//! CLI: `authd create-user`: the same validation and storage as registration.

use std::io::Read;
use std::sync::Arc;

use super::{stdin_is_terminal, CliError};
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::{ClientInfo, Role};
use crate::error::AppError;
use crate::service::audit::Event;
use crate::service::{NewUserInput, Users};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    User,
    Admin,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Email address (normalised: NFKC, trimmed, lower-cased); prompted for on a terminal
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Display name (optional, 1 to 100 characters)
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Role of the new user
    #[arg(long, value_enum, default_value = "user")]
    pub role: RoleArg,
    /// Read the password from standard input (one trailing newline stripped), for scripts
    #[arg(long)]
    pub password_stdin: bool,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let input = gather(args)?;
    let core = app::open_core(settings, Schema::Ready).await?;
    let client = ClientInfo {
        ip: None,
        user_agent: Some("authd-cli".into()),
    };
    let email = input.email.clone();
    match Users::new(core)
        .create(input, &client, Event::UserCreate)
        .await
    {
        Ok(user) => {
            println!("{}", user.id);
            Ok(())
        }
        Err(AppError::EmailTaken) => Err(CliError(format!(
            "a user with email {} already exists",
            crate::domain::validate::normalize_email(&email)
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Collects email, name and password from flags, standard input or prompts.
fn gather(args: Args) -> Result<NewUserInput, CliError> {
    let role = match args.role {
        RoleArg::User => Role::User,
        RoleArg::Admin => Role::Admin,
    };
    let interactive = !args.password_stdin && stdin_is_terminal();
    let email = match args.email {
        Some(e) => e,
        None if interactive => prompt_email()?,
        None => {
            return Err(CliError(
                "--email is required when not prompting on a terminal".into(),
            ))
        }
    };
    let name = match args.name {
        Some(n) => Some(n),
        None if interactive => prompt_name()?,
        None => None,
    };
    let password = if args.password_stdin {
        read_password_stdin()?
    } else if interactive {
        prompt_password()?
    } else {
        return Err(CliError(
            "no password: standard input is not a terminal; pass --password-stdin".into(),
        ));
    };
    Ok(NewUserInput {
        email,
        password,
        name,
        role,
    })
}

pub(super) fn read_password_stdin() -> Result<String, CliError> {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| CliError(format!("cannot read the password from stdin: {e}")))?;
    let mut text = String::from_utf8(raw)
        .map_err(|_| CliError("the password on stdin is not valid UTF-8".into()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(CliError("the password on stdin is empty".into()));
    }
    Ok(text)
}

fn prompt_err(e: dialoguer::Error) -> CliError {
    CliError(format!("prompt failed: {e}"))
}

fn prompt_email() -> Result<String, CliError> {
    dialoguer::Input::<String>::new()
        .with_prompt("Email")
        .interact_text()
        .map_err(prompt_err)
}

fn prompt_name() -> Result<Option<String>, CliError> {
    let name: String = dialoguer::Input::new()
        .with_prompt("Name (optional)")
        .allow_empty(true)
        .interact_text()
        .map_err(prompt_err)?;
    Ok(Some(name).filter(|n| !n.trim().is_empty()))
}

pub(super) fn prompt_password() -> Result<String, CliError> {
    dialoguer::Password::new()
        .with_prompt("Password")
        .with_confirmation("Repeat password", "the passwords do not match")
        .interact()
        .map_err(prompt_err)
}
