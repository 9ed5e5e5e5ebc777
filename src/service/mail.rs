//! Service layer: outgoing mail (CONTRACT 10.1). The worker that every `serve` runs leases
//! due mails from the outbox, mints the one-time token of a mail with a link at the moment it
//! hands the mail over (so no row ever holds a usable link), renders and sends it through the
//! transport outside any database transaction, and settles the lease: sent, retried later
//! (4xx, connection trouble: about 30 s doubling up to `email.retry_max_backoff`, until
//! `email.max_attempts` or the link's lifetime), or failed (5xx, the user gone), auditing
//! `mail_failed`. Also what `authd mail` asks for.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::audit::{log_event, Event};
use super::Core;
use crate::crypto::one_time::new_token;
use crate::domain::mail::{MailKind, MailStatus, OutboxCounts, OutboxMail, Settle};
use crate::domain::one_time::{NewOneTimeToken, Purpose};
use crate::domain::time::{duration_ms, now_ms, Millis};
use crate::domain::AuditEvent;
use crate::error::{AppError, AppResult};
use crate::mail::{message, Delivery, Link, Transport};

/// How often the worker looks for due mail.
pub const POLL: Duration = Duration::from_secs(1);

/// How many mails one round leases at most.
const BATCH: u32 = 16;

/// The first gap between two attempts; it doubles with each attempt.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);

/// The outbox's worker and `authd mail`'s operations.
#[derive(Clone)]
pub struct Mail {
    core: Arc<Core>,
    transport: Transport,
}

impl Mail {
    /// The mail service for `core`'s settings; `Err` when the transport cannot be set up.
    pub fn new(core: Arc<Core>) -> AppResult<Mail> {
        let transport = Transport::new(&core.settings.email).map_err(AppError::Internal)?;
        Ok(Mail { core, transport })
    }

    /// Whether mail is sent at all (`email.transport` is not `none`).
    pub fn enabled(&self) -> bool {
        self.transport.enabled()
    }

    /// The lease a round takes on its mails: four times `email.smtp_timeout` (a connection
    /// and a few commands), at least a minute. A worker that dies leaves its mails to be
    /// taken back when it runs out.
    fn lease(&self) -> Millis {
        duration_ms((self.core.settings.email.smtp_timeout * 4).max(Duration::from_secs(60)))
    }

    /// Runs the worker until `stop` says so: a round every `POLL`. A round under way when
    /// the stop comes is finished first (its mails settled).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if !self.enabled() {
            return;
        }
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.round().await {
                Ok(_) => {}
                // Unavailable: `Core::db` has logged the outage once; the next round retries.
                Err(AppError::Unavailable(_)) => {}
                Err(e) => tracing::warn!(error = %e, "mail worker round failed"),
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One round: leases the due mails and hands each over; refreshes `authd_mail_outbox`.
    /// Returns how many mails it leased.
    pub async fn round(&self) -> AppResult<usize> {
        let now = now_ms();
        let until = now + self.lease();
        let mails = self
            .core
            .db(move |s| s.lease_mails(now, until, BATCH))
            .await?;
        let n = mails.len();
        for m in mails {
            self.deliver(m, until).await?;
        }
        self.refresh_gauge().await?;
        Ok(n)
    }

    /// Sets `authd_mail_outbox{status}` from the store.
    pub async fn refresh_gauge(&self) -> AppResult<OutboxCounts> {
        let c = self.core.db(|s| s.outbox_counts()).await?;
        let g = &self.core.metrics.mail_outbox;
        for (status, n) in [
            (MailStatus::Queued, c.queued),
            (MailStatus::Sending, c.sending),
            (MailStatus::Sent, c.sent),
            (MailStatus::Failed, c.failed),
        ] {
            g.with_label_values(&[status.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        Ok(c)
    }

    /// The lifetime of the token a mail of `purpose` carries.
    fn ttl(&self, purpose: Purpose) -> Duration {
        let s = &self.core.settings;
        match purpose {
            Purpose::PasswordReset => s.password_reset.ttl,
            _ => s.email.verification_ttl,
        }
    }

    /// The link path (with `{token}`) of `purpose`.
    fn link_path(&self, purpose: Purpose) -> &str {
        let s = &self.core.settings;
        match purpose {
            Purpose::PasswordReset => &s.password_reset.link_path,
            Purpose::VerifyEmail => &s.email.verification_link_path,
            _ => &s.email.change_link_path,
        }
    }

    /// Mints the token of a mail with a link and stores its hash (superseding the user's
    /// older tokens of that purpose): the link, or why none is made (`user_gone`,
    /// `user_disabled`, `address_changed`). The
    /// token itself lives only in the returned link, which goes into the message and nowhere
    /// else (never a log, never the database).
    async fn mint(
        &self,
        m: &OutboxMail,
        purpose: Purpose,
        now: Millis,
    ) -> AppResult<Result<Link, &'static str>> {
        let Some(user_id) = m.user_id else {
            return Ok(Err("user_gone"));
        };
        // A user gone or disabled, or whose address is no longer the one the mail goes to,
        // gets no link: a credential change kills links (CONTRACT 10.2), and this one would
        // be made after it. (An email change's first link goes to the address to be.)
        let user = self.core.db(move |s| s.user_by_id(user_id)).await?;
        let refused = match &user {
            None => Some("user_gone"),
            Some(u) if u.disabled => Some("user_disabled"),
            Some(u) if u.email != m.to && purpose != Purpose::EmailChangeNew => {
                Some("address_changed")
            }
            Some(_) => None,
        };
        if let Some(reason) = refused {
            return Ok(Err(reason));
        }
        let ttl = self.ttl(purpose);
        let (token, hash) = new_token();
        let record = NewOneTimeToken::for_address(
            hash,
            purpose,
            user_id,
            &m.to,
            m.payload.clone(),
            now,
            duration_ms(ttl),
        );
        let expires_at = record.expires_at;
        // A user deleted since the check above makes this insert fail (foreign key); the mail
        // is then retried, and the next attempt finds the user gone.
        self.core
            .db(move |s| s.issue_one_time_token(&record, true))
            .await?;
        let url = self
            .core
            .settings
            .email
            .link(self.link_path(purpose), &token);
        Ok(Ok(Link {
            url,
            expires_at,
            ttl,
        }))
    }

    /// Hands one leased mail over and settles its lease.
    async fn deliver(&self, m: OutboxMail, lease_until: Millis) -> AppResult<()> {
        let now = now_ms();
        let link = match m.kind.purpose() {
            Some(p) => match self.mint(&m, p, now).await? {
                Ok(l) => Some(l),
                Err(reason) => {
                    let e = reason.to_string();
                    return self
                        .settle(&m, lease_until, Outcome::Failed(e.clone(), e))
                        .await;
                }
            },
            None => None,
        };
        let rendered = message::render(m.kind, link.as_ref(), m.payload.as_deref());
        let built = message::build(&self.core.settings.email, m.id, &m.to, &rendered, now);
        drop(link);
        let delivery = match built {
            Ok(msg) => self.transport.send(m.id, &msg).await,
            Err(e) => Delivery::Failed {
                reason: "address".into(),
                detail: e,
            },
        };
        let outcome = match delivery {
            Delivery::Sent(answer) => {
                tracing::info!(mail = %m.id, kind = m.kind.as_str(), answer = %answer, "mail sent");
                Outcome::Sent
            }
            Delivery::Failed { reason, detail } => Outcome::Failed(reason, detail),
            Delivery::Retry { reason, detail } => match self.retry_at(&m, now_ms()) {
                Some(at) => Outcome::Retry(at, reason, detail),
                None => Outcome::Failed(reason, format!("{detail} (no attempts left)")),
            },
        };
        self.settle(&m, lease_until, outcome).await
    }

    /// When to try `m` again after a failed attempt at `now`, or `None` when it is over:
    /// `email.max_attempts` used up, or the retry would come after the link (counted from
    /// when the mail was queued) would have expired.
    fn retry_at(&self, m: &OutboxMail, now: Millis) -> Option<Millis> {
        let s = &self.core.settings.email;
        if m.attempts >= s.max_attempts {
            return None;
        }
        let at = now + duration_ms(backoff(m.attempts, s.retry_max_backoff));
        if let Some(p) = m.kind.purpose() {
            if at >= m.created_at + duration_ms(self.ttl(p)) {
                return None;
            }
        }
        Some(at)
    }

    /// Writes the end of one attempt (and, for a failure, the `mail_failed` audit event in the
    /// same transaction); counts it in `authd_mail_deliveries_total`.
    async fn settle(&self, m: &OutboxMail, lease_until: Millis, outcome: Outcome) -> AppResult<()> {
        let now = now_ms();
        let (settle, audit, label) = match outcome {
            Outcome::Sent => (Settle::Sent, None, "sent"),
            Outcome::Retry(at, reason, detail) => {
                tracing::info!(mail = %m.id, kind = m.kind.as_str(), reason = %reason,
                    error = %detail, attempts = m.attempts, "mail delivery will be retried");
                let error = format!("{reason}: {detail}");
                (Settle::Retry { at, error }, None, "retry")
            }
            Outcome::Failed(reason, detail) => {
                tracing::warn!(mail = %m.id, kind = m.kind.as_str(), reason = %reason,
                    error = %detail, attempts = m.attempts, "mail failed");
                let event = AuditEvent {
                    at: now,
                    event: Event::MailFailed.as_str().to_string(),
                    user_id: m.user_id,
                    email: Some(m.to.clone()),
                    ip: None,
                    user_agent: None,
                    outcome: "failure".into(),
                    reason: Some(reason.clone()),
                    actor: Some(format!("mail:{}", m.kind.as_str())),
                };
                let error = format!("{reason}: {detail}");
                (Settle::Failed { error }, Some(event), "failed")
            }
        };
        let id = m.id;
        let event = audit.clone();
        let settled = self
            .core
            .db(move |s| s.settle_mail(id, lease_until, &settle, now, event.as_ref()))
            .await?;
        if !settled {
            tracing::warn!(mail = %m.id, "mail lease ran out before the attempt ended; another worker has it");
            return Ok(());
        }
        if let Some(e) = &audit {
            log_event(e);
        }
        self.core
            .metrics
            .mail_deliveries
            .with_label_values(&[label])
            .inc();
        Ok(())
    }

    /// `authd mail test --to ADDR`: sends one test message now, outside the outbox. `Ok` is
    /// the transport's answer; `Err` the reason it failed.
    pub async fn send_test(&self, to: &str) -> AppResult<Result<String, String>> {
        if !self.enabled() {
            return Ok(Err("email.transport is none: no mail is sent".into()));
        }
        let id = Uuid::new_v4();
        let r = message::render(MailKind::Test, None, None);
        let msg = match message::build(&self.core.settings.email, id, to, &r, now_ms()) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.transport.send(id, &msg).await {
            Delivery::Sent(answer) => Ok(answer),
            Delivery::Retry { detail, .. } | Delivery::Failed { detail, .. } => Err(detail),
        })
    }

    /// `authd mail status`: the outbox by status.
    pub async fn status(&self) -> AppResult<OutboxCounts> {
        self.core.db(|s| s.outbox_counts()).await
    }

    /// `authd mail list`: the outbox (of one status), oldest first.
    pub async fn list(&self, status: Option<MailStatus>) -> AppResult<Vec<OutboxMail>> {
        self.core.db(move |s| s.list_mails(status)).await
    }

    /// `authd mail retry`: queues failed mail `id` (or every failed one) again; how many.
    pub async fn retry(&self, id: Option<Uuid>) -> AppResult<usize> {
        let now = now_ms();
        self.core.db(move |s| s.requeue_mails(id, now)).await
    }
}

/// How an attempt ended, as the worker decided.
enum Outcome {
    Sent,
    /// At, reason (reply code or `connection`), detail.
    Retry(Millis, String, String),
    /// Reason (reply code, `connection`, `user_gone`, ...), detail.
    Failed(String, String),
}

/// The gap after attempt `attempts` (1 for the first): 30 s doubling, at most `max`.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let max = Duration::from_secs(3600);
        assert_eq!(backoff(1, max), Duration::from_secs(30));
        assert_eq!(backoff(2, max), Duration::from_secs(60));
        assert_eq!(backoff(3, max), Duration::from_secs(120));
        assert_eq!(backoff(8, max), Duration::from_secs(3600));
        assert_eq!(backoff(40, max), Duration::from_secs(3600));
    }
}
