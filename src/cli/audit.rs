//! CLI: `authd audit`: who logged in as whom, from where, and what failed; `audit verify` and
//! `audit head`: the hash chain that makes the trail tamper-evident (CONTRACT 12.2).

use std::sync::Arc;

use serde_json::json;

use super::CliError;
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::domain::audit_chain::{Anchor, Verdict};
use crate::domain::terminal::{json_line, table};
use crate::domain::time::{duration_ms, now_ms, parse_rfc3339, rfc3339, Millis};
use crate::domain::AuditQuery;
use crate::service::Admin;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<ChainCommand>,
    /// Only events about this email
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Only this event, e.g. login, refresh, refresh_reuse, logout_all, admin_disable,
    /// password_change, mail_failed (an unknown name is refused, and the error lists every name)
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// Only events newer than this: a duration back from now (24h, 7d) or an RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// At most this many events (1 to 100000), newest first
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// A JSON array of events (`time`, `event`, `userId`, `actor`, `ip`, `userAgent`,
    /// `success`, `reason`, `email`, `seq`, `hash`; `seq` and `hash` are null until the event
    /// is sealed) instead of a table
    #[arg(long)]
    pub json: bool,
}

/// The audit chain's commands.
#[derive(Debug, clap::Subcommand)]
pub enum ChainCommand {
    /// Walk the hash chain: `ok: N events sealed, head SEQ:HASH` (exit 0), or the first event
    /// whose content, order or presence does not match, `broken at seq N: <why>` (exit 1).
    /// Reads only: events awaiting sealing are counted, not sealed
    Verify(VerifyArgs),
    /// Print the chain head `SEQ:HASH`, to keep off this machine (cron, a ticket, another
    /// system) and give to `audit verify --anchor` later
    Head(HeadArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// An earlier head (`SEQ:HASH`, as `authd audit head` printed it) the chain must still
    /// hold: a history rewritten or truncated after it fails even when it is consistent in
    /// itself
    #[arg(long, value_name = "SEQ:HASH")]
    pub anchor: Option<String>,
    /// One JSON object: `{"ok", "sealed", "unsealed", "firstSeq", "head"}` when the chain
    /// holds, `{"ok": false, "brokenAt", "reason", "unsealed"}` when it does not
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HeadArgs {
    /// One JSON object: `{"seq", "hash", "head", "unsealed"}`
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
    match args.command {
        Some(ChainCommand::Verify(v)) => return verify(settings, v).await,
        Some(ChainCommand::Head(h)) => return head(settings, h).await,
        None => {}
    }
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
            .map(|entry| {
                let e = &entry.event;
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
                    "seq": entry.seq,
                    "hash": entry.hash,
                })
            })
            .collect();
        println!("{}", json_line(&events));
        return Ok(());
    }
    // Every column may hold what a client sent (an email, a User-Agent): `table` escapes.
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|entry| {
            let e = &entry.event;
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

/// `audit verify`: read only (never seals).
async fn verify(settings: Arc<Settings>, args: VerifyArgs) -> Result<(), CliError> {
    let anchor = args
        .anchor
        .as_deref()
        .map(|a| {
            a.parse::<Anchor>()
                .map_err(|e| CliError(format!("--anchor: {e}")))
        })
        .transpose()?;
    let report = read_only(settings)
        .await?
        .verify_audit_chain(anchor)
        .await?;
    let unsealed = report.unsealed;
    match report.verdict {
        Verdict::Ok {
            sealed,
            first_seq,
            head_seq,
            head_hash,
        } => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "ok": true,
                        "sealed": sealed,
                        "unsealed": unsealed,
                        "firstSeq": first_seq,
                        "head": format!("{head_seq}:{head_hash}"),
                    })
                );
            } else {
                println!("{}", ok_line(sealed, head_seq, &head_hash));
                println!("{unsealed} event(s) await sealing; oldest seq kept {first_seq}");
            }
            Ok(())
        }
        Verdict::Broken { seq, why } => {
            let line = format!("broken at seq {seq}: {why}");
            if args.json {
                println!(
                    "{}",
                    json!({"ok": false, "brokenAt": seq, "reason": why, "unsealed": unsealed})
                );
            } else {
                println!("{line}");
            }
            Err(CliError(format!("audit chain {line}")))
        }
    }
}

/// The first line of a sound `audit verify`, exactly as the contract words it.
pub(crate) fn ok_line(sealed: u64, head_seq: i64, head_hash: &str) -> String {
    format!("ok: {sealed} events sealed, head {head_seq}:{head_hash}")
}

/// `audit head`: the chain head as recorded (verify checks that the events match it).
async fn head(settings: Arc<Settings>, args: HeadArgs) -> Result<(), CliError> {
    let (state, unsealed) = read_only(settings).await?.audit_head().await?;
    let head = format!("{}:{}", state.head_seq, state.head_hash);
    if args.json {
        println!(
            "{}",
            json!({"seq": state.head_seq, "hash": state.head_hash, "head": head, "unsealed": unsealed})
        );
    } else {
        println!("{head}");
    }
    Ok(())
}

/// The store for `verify` and `head`, which change nothing: an existing database at this
/// binary's schema, neither created nor migrated.
async fn read_only(settings: Arc<Settings>) -> Result<Admin, CliError> {
    let core = app::open_core(settings, Schema::Existing).await?;
    core.db(|s| s.check_schema()).await?;
    Ok(Admin::new(core))
}
