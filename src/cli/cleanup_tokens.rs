//! CLI: `authd cleanup-tokens [--dry-run]`: safe to run from cron while `serve` runs.

use std::sync::Arc;

use super::CliError;
use crate::app::{self, Schema};
use crate::config::Settings;
use crate::service::Admin;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only count what would be deleted
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(settings: Arc<Settings>, args: Args) -> Result<(), CliError> {
    let core = app::open_core(settings, Schema::Ready).await?;
    let admin = Admin::new(core);
    let c = admin.cleanup(args.dry_run).await?;
    // Only with audit.retention set; the chain stays verifiable from the first kept event.
    let audit = admin.prune_audit(args.dry_run).await?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{verb} {} refresh token(s), {} session(s), {} login-failure counter(s), {} one-time \
         token(s), {} mail(s), {} revoked-session feed row(s)",
        c.refresh_tokens,
        c.sessions,
        c.login_failures,
        c.one_time_tokens,
        c.mails,
        c.revocation_feed
    );
    if c.unverified_accounts > 0 || admin.core().settings.email.require_verification {
        println!(
            "{verb} {} unverified account(s) older than email.unverified_ttl",
            c.unverified_accounts
        );
    }
    if let Some(n) = audit {
        println!("{verb} {n} audit event(s) older than audit.retention");
    }
    if c.stopped_early {
        eprintln!(
            "note: another authd was cleaning up the same database; this run stopped early \
             and the rest is left to that one (run again later to be sure)"
        );
    }
    Ok(())
}
