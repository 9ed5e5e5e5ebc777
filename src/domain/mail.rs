//! Domain layer: outgoing mail (CONTRACT 10.1). A request that sends mail writes a `NewMail`
//! into the outbox in its own transaction; the mail worker (`service::mail`) delivers it. A
//! mail row holds no usable secret: the token of a mail with a link is made by the worker when
//! it hands the mail over (`MailKind::purpose`).

use uuid::Uuid;

use super::one_time::Purpose;
use super::time::Millis;

/// What a mail is. Stored as `as_str()` in `mail_outbox.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKind {
    /// A password reset link (10.3).
    PasswordReset,
    /// "Your password was reset" (10.3): no link.
    PasswordResetNotice,
    /// An email verification link (10.4).
    VerifyEmail,
    /// A registration of an address that already has a verified account (10.4): no link.
    AlreadyRegistered,
    /// Email change: the link to the new address (10.5).
    EmailChangeNew,
    /// Email change: the link to the current address (10.5).
    EmailChangeOld,
    /// Email change without confirmation by the old address: a notice to it (10.5).
    EmailChangeNotice,
    /// `authd mail test`.
    Test,
}

impl MailKind {
    /// Every kind, in a stable order.
    pub const ALL: [MailKind; 8] = [
        MailKind::PasswordReset,
        MailKind::PasswordResetNotice,
        MailKind::VerifyEmail,
        MailKind::AlreadyRegistered,
        MailKind::EmailChangeNew,
        MailKind::EmailChangeOld,
        MailKind::EmailChangeNotice,
        MailKind::Test,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::PasswordReset => "password_reset",
            MailKind::PasswordResetNotice => "password_reset_notice",
            MailKind::VerifyEmail => "verify_email",
            MailKind::AlreadyRegistered => "already_registered",
            MailKind::EmailChangeNew => "email_change_new",
            MailKind::EmailChangeOld => "email_change_old",
            MailKind::EmailChangeNotice => "email_change_notice",
            MailKind::Test => "test",
        }
    }

    /// The kind stored as `s`, if any.
    pub fn parse(s: &str) -> Option<MailKind> {
        MailKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The purpose of the one-time token the mail's link carries, if it has a link.
    pub fn purpose(self) -> Option<Purpose> {
        match self {
            MailKind::PasswordReset => Some(Purpose::PasswordReset),
            MailKind::VerifyEmail => Some(Purpose::VerifyEmail),
            MailKind::EmailChangeNew => Some(Purpose::EmailChangeNew),
            MailKind::EmailChangeOld => Some(Purpose::EmailChangeOld),
            MailKind::PasswordResetNotice
            | MailKind::AlreadyRegistered
            | MailKind::EmailChangeNotice
            | MailKind::Test => None,
        }
    }
}

impl std::str::FromStr for MailKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MailKind::parse(s).ok_or_else(|| format!("unknown mail kind '{s}'"))
    }
}

/// A mail to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub id: Uuid,
    pub kind: MailKind,
    /// The account it is about, if any.
    pub user_id: Option<Uuid>,
    /// The address stored on the account (never the string a client sent).
    pub to: String,
    /// What the mail's text (and its token's payload) needs, as JSON; never a secret.
    pub payload: Option<String>,
    pub created_at: Millis,
}

impl NewMail {
    /// A mail of `kind` about account `user_id`, to its stored `address`, without payload,
    /// queued at `now`.
    pub fn to_account(kind: MailKind, id: Uuid, user_id: Uuid, address: &str, now: Millis) -> Self {
        NewMail {
            id,
            kind,
            user_id: Some(user_id),
            to: address.to_string(),
            payload: None,
            created_at: now,
        }
    }
}

/// The per-address throttle of the public routes that send mail (CONTRACT 10.2): a mail to an
/// address is dropped, silently, when another mail of its kind went to it less than `cooldown`
/// ago or `max_per_day` mails of its kind went to it in the last 24 hours (so a reset link
/// asked for just after registering is not dropped for the verification mail). Decided when the mail is queued, in the
/// queueing transaction, so concurrent requests for one address cannot both slip through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailThrottle {
    /// `email.send_cooldown` in milliseconds; 0 turns the cooldown off.
    pub cooldown_ms: Millis,
    /// `email.max_mails_per_day`; 0 turns the daily cap off.
    pub max_per_day: u32,
}

impl MailThrottle {
    /// The window of the daily cap, in milliseconds.
    pub const DAY_MS: Millis = 86_400_000;

    /// Whether a mail queued at `now` is dropped, given the newest earlier mail to the address
    /// (`last`, milliseconds) and how many went to it since `now - DAY_MS` (`in_last_day`).
    pub fn drops(&self, now: Millis, last: Option<Millis>, in_last_day: u64) -> bool {
        let cooling = self.cooldown_ms > 0 && last.is_some_and(|at| now - at < self.cooldown_ms);
        let capped = self.max_per_day > 0 && in_last_day >= u64::from(self.max_per_day);
        cooling || capped
    }
}

/// Where a mail is in its life (`mail_outbox.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Queued,
    /// Leased by a worker until `lease_until`; taken back when the lease ran out.
    Sending,
    /// The transport took it (a 2xx from the relay, the file written).
    Sent,
    /// Given up: a 5xx, the attempts used up, the link expired or the user gone.
    Failed,
}

impl MailStatus {
    /// Every status, in the order of a mail's life.
    pub const ALL: [MailStatus; 4] = [
        MailStatus::Queued,
        MailStatus::Sending,
        MailStatus::Sent,
        MailStatus::Failed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Sending => "sending",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for MailStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MailStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown mail status '{s}' (queued, sending, sent or failed)"))
    }
}

/// A row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: Uuid,
    pub kind: MailKind,
    pub user_id: Option<Uuid>,
    pub to: String,
    pub payload: Option<String>,
    pub status: MailStatus,
    /// Attempts so far, the first included (a leased mail counts the one under way).
    pub attempts: u32,
    /// Not before this time (milliseconds).
    pub next_attempt_at: Millis,
    /// While `Sending`: the lease's end (milliseconds); it also names the lease, so a worker
    /// whose lease ran out and was taken over cannot settle the mail any more.
    pub lease_until: Option<Millis>,
    /// Why the last attempt did not deliver it (an SMTP reply code and text, `connection`, ...).
    pub last_error: Option<String>,
    pub created_at: Millis,
    /// When it became `Sent` or `Failed`.
    pub finished_at: Option<Millis>,
}

/// How one attempt at a leased mail ended (`Store::settle_mail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Delivered: `sent`.
    Sent,
    /// Try again at `at` (milliseconds): `queued`, with `error` kept as `last_error`.
    Retry { at: Millis, error: String },
    /// Given up: `failed`, with `error` kept as `last_error`.
    Failed { error: String },
}

/// The outbox by status, for `authd mail status` and the `authd_mail_outbox` gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub queued: u64,
    pub sending: u64,
    pub sent: u64,
    pub failed: u64,
    /// `created_at` of the oldest queued mail, if any.
    pub oldest_queued_at: Option<Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_links_name_their_purpose() {
        for k in MailKind::ALL {
            assert_eq!(MailKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            MailKind::PasswordReset.purpose(),
            Some(Purpose::PasswordReset)
        );
        assert_eq!(MailKind::PasswordResetNotice.purpose(), None);
    }

    #[test]
    fn the_throttle_drops_within_the_cooldown_and_past_the_daily_cap() {
        let t = MailThrottle {
            cooldown_ms: 60_000,
            max_per_day: 5,
        };
        assert!(!t.drops(1_000_000, None, 0));
        assert!(t.drops(1_000_000, Some(1_000_000 - 59_999), 1));
        assert!(!t.drops(1_000_000, Some(1_000_000 - 60_000), 1));
        assert!(t.drops(1_000_000, Some(0), 5));
        assert!(!t.drops(1_000_000, Some(0), 4));
        let off = MailThrottle {
            cooldown_ms: 0,
            max_per_day: 0,
        };
        assert!(!off.drops(1_000_000, Some(1_000_000), 1_000));
    }
}
