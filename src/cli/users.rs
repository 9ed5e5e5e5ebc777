//! CLI: `authd users ...`: an operator manages accounts from a shell on the server, through
//! the same services as the admin HTTP API (`service::accounts`).

use std::sync::Arc;

use serde_json::json;

use super::create_user::{prompt_password, read_password_stdin, RoleArg};
use super::{stdin_is_terminal, CliError};
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::terminal::{json_line, or_dash, Shown};
use crate::domain::time::rfc3339;
use crate::domain::views::account_json;
use crate::domain::{Account, Role};
use crate::error::AppError;
use crate::service::accounts::{Changed, ListQuery};
use crate::service::{parse_reset_ttl, Accounts, Acting};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// `<USER>` everywhere below is a user's email or its id.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// List users in creation order: id, email, role, state (disabled, locked, unverified or
    /// active),
    /// created, last login
    List(ListArgs),
    /// Show a user, its number of live sessions, its lockout state and its second factors
    Show {
        /// The user's email or id
        user: String,
        /// Print `{"user": ..., "liveSessions": n}` as JSON (`user` with `disabled`,
        /// `lockedUntil` and `mfa`: `{"totp": bool, "passkeys": n}`)
        #[arg(long)]
        json: bool,
    },
    /// Disable an account and revoke all its sessions (its access tokens stop working at once).
    /// The last enabled admin too, with a warning on stderr (the admin API refuses that)
    Disable {
        /// The user's email or id
        user: String,
    },
    /// Enable a disabled account (nothing else changes)
    Enable {
        /// The user's email or id
        user: String,
    },
    /// Delete a user with its sessions and tokens (its audit events stay). The last enabled
    /// admin too, with a warning on stderr (the admin API refuses that)
    Delete {
        /// The user's email or id
        user: String,
        /// Do not ask for confirmation (required when stdin is not a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Change a user's role and revoke its sessions (access tokens carry the role). Demoting
    /// the last enabled admin too, with a warning on stderr (the admin API refuses that)
    SetRole {
        /// The user's email or id
        user: String,
        /// The new role
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Set a user's password (register's policy), revoke its sessions and clear its lockout
    SetPassword {
        /// The user's email or id
        user: String,
        /// Read the password from standard input (one trailing newline stripped), for scripts;
        /// otherwise it is asked twice, hidden, on a terminal
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's email address (register's rules; marked verified), revoke all its
    /// sessions and kill its one-time tokens and a pending email change. Prints
    /// `email of <old> is now <new>; revoked n session(s)`; an address another account has
    /// is exit 1
    SetEmail {
        /// The user's email or id
        user: String,
        /// The new address
        email: String,
    },
    /// Remove a user's second factors (TOTP, recovery codes and passkeys) and revoke all its
    /// sessions, for an account whose owner lost them; its next login asks only for the
    /// password
    MfaReset {
        /// The user's email or id
        user: String,
        /// Do not ask for confirmation (required when stdin is not a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Make a password-reset token for a user (killing its older ones), for installs that
    /// send no mail: prints `reset link for <email>: <link>` and `expires <RFC 3339>` (the
    /// token itself without `email.link_base`). Hand it over by a channel you trust
    ResetLink {
        /// The user's email or id
        user: String,
        /// How long the token lives, 5m to 24h (default `password_reset.ttl`)
        #[arg(long, value_name = "D")]
        ttl: Option<String>,
        /// Print `{"email", "link" (or null), "token", "expiresAt"}` as JSON
        #[arg(long, conflicts_with = "send")]
        json: bool,
        /// Queue the ordinary reset mail to the user's address instead of printing a link
        /// (exit 1 with `email.transport = "none"`)
        #[arg(long)]
        send: bool,
    },
    /// Mark a user's email address verified (you vouch for it); with
    /// `email.require_verification` its next login works
    VerifyEmail {
        /// The user's email or id
        user: String,
    },
    /// Clear the failed-login lockout of an email (whether or not an account has it)
    Unlock {
        /// The email (normalised like a login's), or a user's id (standing for that user's email)
        email: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only users with this role
    #[arg(long, value_enum, value_name = "R")]
    pub role: Option<RoleArg>,
    /// Only disabled users
    #[arg(long)]
    pub disabled: bool,
    /// Only users whose email is locked out after failed logins
    #[arg(long)]
    pub locked: bool,
    /// Print a JSON array of User objects with `disabled` and `lockedUntil`
    #[arg(long)]
    pub json: bool,
}

fn role_of(arg: RoleArg) -> Role {
    match arg {
        RoleArg::User => Role::User,
        RoleArg::Admin => Role::Admin,
    }
}

/// `NotFound` is the contract's `no such user`; everything else as usual.
fn cli_error(e: AppError) -> CliError {
    match e {
        AppError::NotFound => CliError("no such user".into()),
        other => other.into(),
    }
}

/// The state column: `disabled`, else `locked`, else `unverified` (CONTRACT 10.5), else
/// `active`.
fn state(a: &Account) -> &'static str {
    if a.user.disabled {
        "disabled"
    } else if a.locked_until.is_some() {
        "locked"
    } else if !a.user.email_verified {
        "unverified"
    } else {
        "active"
    }
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    // Read what only the terminal can give before opening the database.
    let password = match &args.command {
        UsersCommand::SetPassword { password_stdin, .. } => Some(if *password_stdin {
            read_password_stdin()?
        } else if stdin_is_terminal() {
            prompt_password()?
        } else {
            return Err(CliError(
                "no password: standard input is not a terminal; pass --password-stdin".into(),
            ));
        }),
        _ => None,
    };
    let core = app::open_core(settings, Schema::Ready).await?;
    let accounts = Accounts::new(core);
    let by = Acting::cli();
    match args.command {
        UsersCommand::List(list) => {
            let page = accounts
                .list(
                    &by,
                    ListQuery {
                        role: list.role.map(role_of),
                        disabled: list.disabled,
                        locked: list.locked,
                        ..Default::default()
                    },
                )
                .await
                .map_err(cli_error)?;
            if list.json {
                let users: Vec<_> = page.users.iter().map(account_json).collect();
                println!("{}", json_line(&users));
                return Ok(());
            }
            for a in &page.users {
                let u = &a.user;
                println!(
                    "{}  {:<30}  {:<5}  {:<8}  {}  {}",
                    u.id,
                    Shown(&u.email),
                    u.role,
                    state(a),
                    rfc3339(u.created_at),
                    u.last_login_at.map_or_else(|| "-".into(), rfc3339),
                );
            }
        }
        UsersCommand::Show { user, json } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let d = accounts.show(&by, id).await.map_err(cli_error)?;
            if json {
                println!(
                    "{}",
                    json_line(
                        &json!({"user": account_json(&d.account), "liveSessions": d.live_sessions})
                    )
                );
                return Ok(());
            }
            let (a, u) = (&d.account, &d.account.user);
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            println!("id             {}", u.id);
            println!("email          {}", Shown(&u.email));
            println!("name           {}", or_dash(u.name.as_deref()));
            println!("role           {}", u.role);
            println!("state          {}", state(a));
            println!("created        {}", rfc3339(u.created_at));
            println!("last login     {}", dash(u.last_login_at.map(rfc3339)));
            println!("locked until   {}", dash(a.locked_until.map(rfc3339)));
            println!("live sessions  {}", d.live_sessions);
            println!(
                "mfa            totp {}, {} passkey(s)",
                if a.mfa.totp { "on" } else { "off" },
                a.mfa.passkeys
            );
        }
        UsersCommand::Disable { user } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let done = accounts.disable(&by, id).await.map_err(cli_error)?;
            println!(
                "disabled {}; revoked {} session(s)",
                Shown(&done.account.user.email),
                done.sessions
            );
            warn_if_no_admin(&done);
        }
        UsersCommand::Enable { user } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let a = accounts.enable(&by, id).await.map_err(cli_error)?;
            println!("enabled {}", Shown(&a.user.email));
        }
        UsersCommand::Delete { user, yes } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            if !yes {
                confirm(
                    &format!(
                        "Delete user {} with its sessions and tokens? This cannot be undone",
                        Shown(&user)
                    ),
                    "delete",
                    "nothing was deleted",
                )?;
            }
            let done = accounts.delete(&by, id).await.map_err(cli_error)?;
            let u = &done.account.user;
            println!(
                "deleted {} ({}) with {} live session(s)",
                Shown(&u.email),
                u.id,
                done.sessions
            );
            warn_if_no_admin(&done);
        }
        UsersCommand::SetRole { user, role } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let done = accounts
                .set_role(&by, id, role_of(role))
                .await
                .map_err(cli_error)?;
            println!(
                "{} is now {}; revoked {} session(s)",
                Shown(&done.account.user.email),
                done.account.user.role,
                done.sessions
            );
            warn_if_no_admin(&done);
        }
        UsersCommand::SetPassword { user, .. } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let password = password.unwrap_or_default();
            let (a, n) = accounts
                .set_password(&by, id, &password)
                .await
                .map_err(cli_error)?;
            println!(
                "password of {} changed; revoked {n} session(s)",
                Shown(&a.user.email)
            );
        }
        UsersCommand::SetEmail { user, email } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let (old, a, n) = accounts
                .set_email(&by, id, &email)
                .await
                .map_err(|e| match e {
                    AppError::EmailTaken => CliError(format!(
                        "{} is already the email of another account",
                        Shown(&email)
                    )),
                    other => cli_error(other),
                })?;
            println!(
                "email of {} is now {}; revoked {n} session(s)",
                Shown(&old),
                Shown(&a.user.email)
            );
        }
        UsersCommand::ResetLink {
            user,
            ttl,
            json,
            send,
        } => {
            let ttl = ttl
                .as_deref()
                .map(parse_reset_ttl)
                .transpose()
                .map_err(|_| {
                    CliError("--ttl must be a duration from 5m to 24h (e.g. 30m, 2h)".into())
                })?;
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let (u, made) =
                accounts.reset_link(&by, id, ttl, send).await.map_err(|e| {
                    match e {
                    AppError::Validation(_) if send => CliError(
                        "email.transport is none: no mail can be sent (drop --send to print a link)"
                            .into(),
                    ),
                    other => cli_error(other),
                }
                })?;
            match made {
                None => println!("reset mail queued for {}", Shown(&u.email)),
                Some(r) if json => println!(
                    "{}",
                    json!({
                        "email": r.email,
                        "link": r.link,
                        "token": r.token,
                        "expiresAt": rfc3339(r.expires_at),
                    })
                ),
                Some(r) => {
                    match &r.link {
                        Some(link) => println!("reset link for {}: {link}", Shown(&r.email)),
                        None => println!("reset token for {}: {}", Shown(&r.email), r.token),
                    }
                    println!("expires {}", rfc3339(r.expires_at));
                }
            }
        }
        UsersCommand::VerifyEmail { user } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            let a = accounts.verify_email(&by, id).await.map_err(cli_error)?;
            println!("email {} of the account is verified", Shown(&a.user.email));
        }
        UsersCommand::MfaReset { user, yes } => {
            let id = accounts.resolve(&user).await.map_err(cli_error)?;
            if !yes {
                confirm(
                    &format!(
                        "Remove every second factor (TOTP, recovery codes, passkeys) of {} and \
                         revoke all its sessions?",
                        Shown(&user)
                    ),
                    "reset second factors",
                    "nothing was changed",
                )?;
            }
            let done = accounts.mfa_reset(&by, id).await.map_err(cli_error)?;
            let r = &done.removed;
            println!(
                "reset second factors of {}: TOTP {}, {} passkey(s) removed; revoked {} session(s)",
                Shown(&done.account.user.email),
                if r.totp { "removed" } else { "was off" },
                r.passkeys,
                r.revoked_sessions
            );
        }
        UsersCommand::Unlock { email } => {
            let (email, was_locked) = accounts
                .unlock_email(&by, &email)
                .await
                .map_err(cli_error)?;
            if was_locked {
                println!("unlocked {}", Shown(&email));
            } else {
                println!(
                    "{} was not locked; its failed-login count is cleared",
                    Shown(&email)
                );
            }
        }
    }
    Ok(())
}

/// One warning line on stderr when the change took away the last enabled admin (allowed from
/// the shell, refused over HTTP): nobody can use the admin API until an admin is made again.
fn warn_if_no_admin(done: &Changed) {
    if done.leaves_no_admin {
        eprintln!(
            "warning: no enabled admin is left, so nobody can use the admin API; make one with \
             `authd users set-role <USER> admin`, `authd users enable <USER>` or \
             `authd create-user --role admin`"
        );
    }
}

/// Asks `prompt` on a terminal; without one, `--yes` is required (`refusing to <action>
/// ...`). A "no" is an error saying `<untouched>`.
fn confirm(prompt: &str, action: &str, untouched: &str) -> Result<(), CliError> {
    if !stdin_is_terminal() {
        return Err(CliError(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes"
        )));
    }
    let confirmed = dialoguer::Confirm::new()
        .with_prompt(prompt)
        .default(false)
        .interact()
        .map_err(|e| CliError(format!("prompt failed: {e}")))?;
    if confirmed {
        Ok(())
    } else {
        Err(CliError(format!("aborted: {untouched}")))
    }
}
