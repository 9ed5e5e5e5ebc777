//! Service layer: the revoked-session feed (`GET /.well-known/revoked-sessions`, contract
//! 12.1): which revocations a client is told about, its cursor, and the feed's cleanup.
//!
//! The feed is read from the database on every request (no cache), so a revocation made by
//! any instance or command is in every instance's next answer. Its rows are written by the
//! triggers of migration V11, in the transaction that ends a session: no code path that
//! revokes or deletes sessions has to know about the feed.

use std::sync::Arc;

use uuid::Uuid;

use super::Core;
use crate::domain::revocation_feed::FeedCursor;
use crate::domain::time::{duration_ms, now_ms, Millis};
use crate::error::{AppError, AppResult};

/// One entry of the feed: a revoked session and the latest `exp` (Unix seconds) an access
/// token of it can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub sid: Uuid,
    pub exp: i64,
}

/// One answer of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedAnswer {
    /// The sessions revoked after the presented cursor (all of them without one) whose
    /// tokens can still be valid, oldest revocation first.
    pub revoked: Vec<FeedEntry>,
    /// The opaque cursor for the next request's `since`.
    pub cursor: String,
    /// Seconds the client should wait before asking again (`revocation_feed.poll_after`).
    pub poll_after: u64,
}

#[derive(Clone)]
pub struct RevocationFeed {
    core: Arc<Core>,
}

impl RevocationFeed {
    pub fn new(core: Arc<Core>) -> Self {
        RevocationFeed { core }
    }

    /// How long an entry matters: `jwt.access_ttl + jwt.leeway` (ms). A revocation older than
    /// that has no token left that any verifier accepts; a cursor older than that is refused.
    fn window(&self) -> Millis {
        let jwt = &self.core.settings.jwt;
        duration_ms(jwt.access_ttl + jwt.leeway)
    }

    /// The feed after `since` (a cursor of an earlier answer), or the whole feed.
    ///
    /// Errors: `NotFound` when `revocation_feed.enabled` is false; `Validation` (field
    /// `since`) for a cursor this feed did not hand out, one handed out more than
    /// `jwt.access_ttl + jwt.leeway` ago, or one ahead of the feed (another database): the
    /// client starts again without `since`.
    pub async fn read(&self, since: Option<&str>) -> AppResult<FeedAnswer> {
        let settings = &self.core.settings;
        if !settings.revocation_feed.enabled {
            return Err(AppError::NotFound);
        }
        let now = now_ms();
        let window = self.window();
        let since = match since {
            None => 0,
            Some(text) => {
                let cursor = FeedCursor::decode(text).ok_or_else(|| {
                    AppError::validation(
                        "since",
                        "is not a cursor of this feed; start again without since",
                    )
                })?;
                if now - cursor.issued_at > window {
                    return Err(AppError::validation(
                        "since",
                        "is too old (older than jwt.access_ttl + jwt.leeway); start again \
                         without since",
                    ));
                }
                cursor.seq
            }
        };
        // Coarse in the database (a second of slack for the rounding to whole seconds),
        // exact below.
        let issued_after = now - window - 1000;
        let read = self
            .core
            .db(move |s| s.revoked_sessions_since(since, issued_after))
            .await?;
        if since > read.head {
            return Err(AppError::validation(
                "since",
                "is ahead of this feed (another database?); start again without since",
            ));
        }
        let ttl = settings.jwt.access_ttl.as_secs() as i64;
        let leeway = duration_ms(settings.jwt.leeway);
        let revoked = read
            .entries
            .iter()
            .map(|e| FeedEntry {
                sid: e.sid,
                exp: e.exp(ttl),
            })
            // An entry leaves once exp + leeway has passed.
            .filter(|e| e.exp * 1000 + leeway >= now)
            .collect();
        Ok(FeedAnswer {
            revoked,
            cursor: FeedCursor {
                seq: read.head,
                issued_at: now,
            }
            .encode(),
            poll_after: self.poll_after_secs(),
        })
    }

    /// `revocation_feed.poll_after` in seconds.
    pub fn poll_after_secs(&self) -> u64 {
        self.core.settings.revocation_feed.poll_after.as_secs()
    }

    /// The horizon of the feed's cleanup: rows issued before it have no token left (kept at
    /// least `cleanup.retention`, like the sessions they name, and at least the feed's
    /// window).
    pub(super) fn purge_before(&self, now: Millis) -> Millis {
        let retention = duration_ms(self.core.settings.cleanup.retention);
        now - retention.max(self.window() + 1000)
    }
}
