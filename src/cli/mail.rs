//! CLI: `authd mail test|status|list|retry` (CONTRACT 10.1): the outbox from a shell, through
//! `service::mail`. Never prints a token (the outbox holds none).

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::CliError;
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::mail::{MailStatus, OutboxMail};
use crate::domain::terminal::{or_dash, Shown};
use crate::domain::time::{now_ms, rfc3339};
use crate::service::Mail;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: MailCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MailCommand {
    /// Send one message now through the configured transport (not through the outbox); prints
    /// `sent to ADDR` and the relay's answer, or the error (exit 1; also with transport none)
    Test {
        /// The address to send the test message to
        #[arg(long, value_name = "ADDR")]
        to: String,
    },
    /// Count the outbox by status (queued, sending, sent, failed) and give the oldest queued
    /// mail's age
    Status {
        /// Print `{"queued", "sending", "sent", "failed", "oldestQueuedSeconds"}` as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the outbox, oldest first: id, created, kind, to, status, attempts, last error
    List {
        /// Only mails with this status: queued, sending, sent or failed
        #[arg(long, value_name = "S")]
        status: Option<String>,
        /// Print an array of `{"id", "createdAt", "kind", "to", "status", "attempts",
        /// "lastError"}` as JSON
        #[arg(long)]
        json: bool,
    },
    /// Queue a failed mail again (its attempts counted afresh)
    Retry {
        /// The failed mail's id
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<String>,
        /// Queue every failed mail again
        #[arg(long)]
        failed: bool,
    },
}

/// A mail as `mail list --json` prints it.
fn mail_json(m: &OutboxMail) -> serde_json::Value {
    json!({
        "id": m.id.to_string(),
        "createdAt": rfc3339(m.created_at),
        "kind": m.kind.as_str(),
        "to": m.to,
        "status": m.status.as_str(),
        "attempts": m.attempts,
        "lastError": m.last_error,
    })
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    // Check what the command line says before opening the database.
    let status = match &args.command {
        MailCommand::List {
            status: Some(s), ..
        } => Some(s.parse::<MailStatus>().map_err(CliError)?),
        _ => None,
    };
    let retry_id = match &args.command {
        MailCommand::Retry { id: Some(id), .. } => Some(
            Uuid::parse_str(id.trim())
                .map_err(|_| CliError(format!("not a mail id: {}", Shown(id))))?,
        ),
        _ => None,
    };
    let core = app::open_core(settings, Schema::Ready).await?;
    let mail = Mail::new(core).map_err(CliError::from)?;
    match args.command {
        MailCommand::Test { to } => match mail.send_test(&to).await? {
            Ok(answer) => println!("sent to {}: {}", Shown(&to), Shown(&answer)),
            Err(e) => {
                return Err(CliError(format!(
                    "cannot send to {}: {}",
                    Shown(&to),
                    Shown(&e)
                )))
            }
        },
        MailCommand::Status { json } => {
            let c = mail.status().await?;
            let age = c.oldest_queued_at.map(|at| ((now_ms() - at).max(0)) / 1000);
            if json {
                println!(
                    "{}",
                    json!({
                        "queued": c.queued,
                        "sending": c.sending,
                        "sent": c.sent,
                        "failed": c.failed,
                        "oldestQueuedSeconds": age,
                    })
                );
            } else {
                println!("queued   {}", c.queued);
                println!("sending  {}", c.sending);
                println!("sent     {}", c.sent);
                println!("failed   {}", c.failed);
                match age {
                    Some(s) => println!("oldest queued mail: {s}s old"),
                    None => println!("oldest queued mail: -"),
                }
            }
        }
        MailCommand::List { json, .. } => {
            let mails = mail.list(status).await?;
            if json {
                let all: Vec<_> = mails.iter().map(mail_json).collect();
                println!("{}", serde_json::Value::Array(all));
                return Ok(());
            }
            for m in &mails {
                // A sent mail's error is that of an earlier try: say so, so that it does not
                // read as the reason the mail was not delivered.
                let last_error = match (m.status, m.last_error.as_deref()) {
                    (MailStatus::Sent, Some(e)) => format!("earlier try: {}", Shown(e)),
                    (_, e) => or_dash(e).to_string(),
                };
                println!(
                    "{}  {}  {:<21}  {:<30}  {:<7}  {}  {}",
                    m.id,
                    rfc3339(m.created_at),
                    m.kind.as_str(),
                    Shown(&m.to),
                    m.status.as_str(),
                    m.attempts,
                    last_error,
                );
            }
        }
        MailCommand::Retry { failed, .. } => {
            let n = mail.retry(if failed { None } else { retry_id }).await?;
            if !failed && n == 0 {
                return Err(CliError("no such failed mail".into()));
            }
            println!("queued {n} mail(s) again");
        }
    }
    Ok(())
}
