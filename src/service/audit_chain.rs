//! Service layer: the tamper-evident audit trail (CONTRACT 12.2). Sealing runs off the
//! request path (a task of `serve`, see `app::serve`); verifying and reading the head only
//! read; retention deletes the oldest sealed events when `audit.retention` is set.

use std::sync::Arc;
use std::time::Duration;

use super::{Admin, Core};
use crate::domain::audit_chain::{Anchor, ChainState, SEAL_BATCH};
use crate::domain::time::{duration_ms, now_ms};
use crate::error::{AppError, AppResult};
use crate::store::ChainReport;

/// How often each `serve` seals what was written since (the contract's bound is 10 s).
pub const SEAL_EVERY: Duration = Duration::from_secs(1);

impl Core {
    /// Seals every event that awaits sealing, a batch per transaction; returns how many.
    pub async fn seal_audit(&self) -> AppResult<usize> {
        let mut total = 0;
        loop {
            let n = self.db(|s| s.seal_audit()).await?;
            total += n;
            if n < SEAL_BATCH {
                return Ok(total);
            }
        }
    }
}

/// Seals every `SEAL_EVERY` until the task is aborted; requests never wait for it. A
/// failure is retried at the next tick and logged once until sealing works again (not once a
/// second); a database outage not at all here (`Core::db` logs the outage once).
pub async fn seal_forever(core: Arc<Core>) {
    let mut ticker = tokio::time::interval(SEAL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        ticker.tick().await;
        match core.seal_audit().await {
            Ok(n) => {
                if warned {
                    tracing::info!("audit events are sealed again");
                    warned = false;
                }
                if n > 0 {
                    tracing::debug!(sealed = n, "audit events sealed");
                }
            }
            Err(AppError::Unavailable(_)) => {}
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot seal audit events; retrying every second");
                }
                warned = true;
            }
        }
    }
}

impl Admin {
    /// Walks the chain (read only) and says whether it holds, also against `anchor`.
    pub async fn verify_audit_chain(&self, anchor: Option<Anchor>) -> AppResult<ChainReport> {
        self.core().db(move |s| s.verify_audit_chain(anchor)).await
    }

    /// The chain head, and how many events await sealing.
    pub async fn audit_head(&self) -> AppResult<(ChainState, u64)> {
        self.core().db(|s| s.audit_chain_head()).await
    }

    /// With `audit.retention` set: deletes (or with `dry_run` counts) the sealed events older
    /// than that (`Store::prune_audit`). `None` when it is not set: nothing is deleted.
    pub async fn prune_audit(&self, dry_run: bool) -> AppResult<Option<u64>> {
        let Some(retention) = self.core().settings.audit.retention else {
            return Ok(None);
        };
        let cutoff = now_ms() - duration_ms(retention);
        self.core()
            .db(move |s| s.prune_audit(cutoff, dry_run))
            .await
            .map(Some)
    }
}
