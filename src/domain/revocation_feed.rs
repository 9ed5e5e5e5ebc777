//! Domain layer: the revoked-session feed (`GET /.well-known/revoked-sessions`, contract
//! 12.1): what the store reads for it, its opaque cursor, and how long an entry matters.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use super::time::Millis;

/// One session that ended while it was live (a row of `revoked_sessions`, written by the
/// triggers of migration V11 in the transaction that ended it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSession {
    /// The feed's position of this row: increases in commit order, never reused.
    pub seq: i64,
    /// The session's id (the `sid` claim of its access tokens).
    pub sid: Uuid,
    /// When its newest access token was issued (Unix ms, the instant whose whole seconds are
    /// that token's `iat`).
    pub issued_at: Millis,
}

impl RevokedSession {
    /// The latest `exp` (Unix seconds) an access token of this session can carry: its newest
    /// token's, `iat` + `access_ttl_secs`, computed as `crypto::jwt` signs it.
    pub fn exp(&self, access_ttl_secs: i64) -> i64 {
        self.issued_at.div_euclid(1000) + access_ttl_secs
    }
}

/// What one read of the feed found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedRead {
    /// The greatest `seq` in the feed when it was read (0 when it is empty): the cursor to
    /// hand out. Every entry at or below it is in this read or was before `since`.
    pub head: i64,
    /// The rows after `since` up to `head` that can still matter, in `seq` order.
    pub entries: Vec<RevokedSession>,
}

/// Where a feed client is: the `head` it was last given and when (Unix ms). Handed out as an
/// opaque string (`FeedCursor::encode`); clients only echo it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedCursor {
    pub seq: i64,
    pub issued_at: Millis,
}

/// The version tag inside every cursor (a cursor of another shape is malformed).
const CURSOR_TAG: &str = "f1";

impl FeedCursor {
    /// The cursor as clients see it: base64url (no padding) of `f1.<seq>.<issued_at>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}.{}.{}", self.seq, self.issued_at))
    }

    /// Reads a cursor that `encode` made; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let raw = std::str::from_utf8(&raw).ok()?;
        let mut parts = raw.split('.');
        let (tag, seq, at) = (parts.next()?, parts.next()?, parts.next()?);
        if tag != CURSOR_TAG || parts.next().is_some() {
            return None;
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(seq) || !digits(at) {
            return None;
        }
        Some(FeedCursor {
            seq: seq.parse().ok()?,
            issued_at: at.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_nothing_else_decodes() {
        let c = FeedCursor {
            seq: 42,
            issued_at: 1_765_000_000_123,
        };
        assert_eq!(FeedCursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "garbage!",
            "42",
            &URL_SAFE_NO_PAD.encode("f2.1.2"),
            &URL_SAFE_NO_PAD.encode("f1.-1.2"),
            &URL_SAFE_NO_PAD.encode("f1.1"),
            &URL_SAFE_NO_PAD.encode("f1.1.2.3"),
            &URL_SAFE_NO_PAD.encode("f1.99999999999999999999.2"),
        ] {
            assert_eq!(FeedCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn exp_is_the_newest_tokens_exp() {
        let r = RevokedSession {
            seq: 1,
            sid: Uuid::nil(),
            issued_at: 1_000_999,
        };
        assert_eq!(r.exp(900), 1_000 + 900);
    }
}
