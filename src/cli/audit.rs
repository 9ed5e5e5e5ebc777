//! CLI: `authd audit`: who logged in as whom, from where, and what failed.

use std::sync::Arc;

use serde_json::json;

use super::CliError;
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::terminal::{json_line, table};
use crate::domain::time::{duration_ms, now_ms, parse_rfc3339, rfc3339, Millis};
use crate::domain::AuditQuery;
use crate::service::Admin;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events about this email
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Only this event (login, register, refresh, refresh_reuse, logout, logout_all,
    /// session_revoke, admin_revoke, user_create, admin_list, admin_show, admin_sessions,
    /// admin_disable, admin_enable, admin_delete, admin_set_role, admin_set_password,
    /// admin_unlock, admin_key_rotate, admin_key_revoke, password_change, user_import)
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// Only events newer than this: a duration back from now (24h, 7d) or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many events, newest first
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// A JSON array of events (`time`, `event`, `userId`, `actor`, `ip`, `userAgent`,
    /// `success`, `reason`, `email`) instead of a table
    #[arg(long)]
    pub json: bool,
}

fn parse_since(s: &str) -> Result<Millis, CliError> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    humantime::parse_duration(s)
        .map(|d| now_ms() - duration_ms(d))
        .map_err(|_| {
            CliError(format!(
                "--since: '{s}' is neither a duration (24h) nor an RFC 3339 time"
            ))
        })
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let core = app::open_core(settings, Schema::Ready).await?;
    let events = Admin::new(core)
        .audit_log(AuditQuery {
            email: args.email,
            user_id: None,
            event: args.event,
            since,
            limit: args.limit,
        })
        .await?;
    if args.json {
        let events: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "time": rfc3339(e.at),
                    "event": e.event,
                    "userId": e.user_id.map(|u| u.to_string()),
                    "actor": e.actor,
                    "ip": e.ip,
                    "userAgent": e.user_agent,
                    "success": e.outcome == "success",
                    "reason": e.reason,
                    "email": e.email,
                })
            })
            .collect();
        println!("{}", json_line(&events));
        return Ok(());
    }
    // Every column may hold what a client sent (an email, a User-Agent): `table` escapes.
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
            vec![
                rfc3339(e.at),
                e.event.clone(),
                e.outcome.clone(),
                dash(e.reason.as_deref()),
                e.user_id
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "-".into()),
                dash(e.actor.as_deref()),
                dash(e.email.as_deref()),
                dash(e.ip.as_deref()),
                dash(e.user_agent.as_deref()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "TIME",
                "EVENT",
                "OUTCOME",
                "REASON",
                "USER ID",
                "ACTOR",
                "EMAIL",
                "IP",
                "USER AGENT"
            ],
            &rows
        )
    );
    Ok(())
}
