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
}
