//! The mails authd writes: per `MailKind` a subject and a short text/plain UTF-8 body holding
//! only what it must (CONTRACT 10.1): the link, its expiry, and a line on what to do if the
//! reader did not ask for it. Notices carry no link. Headers are built by `lettre` from
//! validated addresses, so no value can inject a header.

use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox};
use lettre::Message;
use uuid::Uuid;

use crate::config::EmailSettings;
use crate::domain::mail::MailKind;
use crate::domain::time::{rfc3339, Millis};

/// The link a mail carries, made at hand-over.
#[derive(Debug, Clone)]
pub struct Link {
    /// `email.link_base` + the purpose's link path with the token in place of `{token}`.
    pub url: String,
    /// When the token stops working (milliseconds).
    pub expires_at: Millis,
    /// Its lifetime, for "in 30 minutes".
    pub ttl: Duration,
}

/// A mail's subject and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// `Auto-Submitted: auto-generated` (RFC 3834 §5): no vacation replies to authd's mail.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// "30 minutes", "24 hours", "7 days": a lifetime in words, rounded down to its largest unit.
pub fn in_words(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3_600 && s.is_multiple_of(3_600) {
        (s / 3_600, "hour")
    } else if s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The new address an email-change mail is about (`payload.newEmail`), if any.
fn new_email(payload: Option<&str>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload?).ok()?;
    v.get("newEmail")?.as_str().map(str::to_string)
}

/// The subject and body of a mail of `kind` (a `link` for the kinds that carry one).
pub fn render(kind: MailKind, link: Option<&Link>, payload: Option<&str>) -> Rendered {
    let expiry = |l: &Link| {
        format!(
            "The link works once and expires in {} (at {}).",
            in_words(l.ttl),
            rfc3339(l.expires_at)
        )
    };
    let not_you = "If you did not ask for this, ignore this message: nothing changes.";
    let (subject, body) = match (kind, link) {
        (MailKind::PasswordReset, Some(l)) => (
            "Reset your password".to_string(),
            format!(
                "To choose a new password, open this link:\n\n{}\n\n{}\n\n{not_you}\n",
                l.url,
                expiry(l)
            ),
        ),
        (MailKind::VerifyEmail, Some(l)) => (
            "Confirm your email address".to_string(),
            format!(
                "To confirm this address, open this link:\n\n{}\n\n{}\n\n{not_you}\n",
                l.url,
                expiry(l)
            ),
        ),
        (MailKind::EmailChangeNew, Some(l)) => (
            "Confirm your new email address".to_string(),
            format!(
                "To make this your account's address, open this link:\n\n{}\n\n{}\n\n{not_you}\n",
                l.url,
                expiry(l)
            ),
        ),
        (MailKind::EmailChangeOld, Some(l)) => {
            let to = new_email(payload)
                .map(|e| format!(" to {e}"))
                .unwrap_or_default();
            (
                "Confirm the change of your email address".to_string(),
                format!(
                    "To change your account's address{to}, open this link:\n\n{}\n\n{}\n\n\
                     If you did not ask for this, ignore this message and change your password.\n",
                    l.url,
                    expiry(l)
                ),
            )
        }
        (MailKind::PasswordResetNotice, _) => (
            "Your password was changed".to_string(),
            "The password of your account was reset and every session was signed out.\n\n\
             If you did not do this, reset your password now and contact your administrator.\n"
                .to_string(),
        ),
        (MailKind::AlreadyRegistered, _) => (
            "You already have an account".to_string(),
            "Someone tried to register an account with this address, which already has one.\n\n\
             If that was you, log in or reset your password. If not, ignore this message.\n"
                .to_string(),
        ),
        (MailKind::EmailChangeNotice, _) => {
            let to = new_email(payload)
                .map(|e| format!(" to {e}"))
                .unwrap_or_default();
            (
                "Your email address is being changed".to_string(),
                format!(
                    "A change of your account's address{to} was requested.\n\n\
                     If you did not ask for this, change your password and contact your \
                     administrator.\n"
                ),
            )
        }
        (MailKind::Test, _) => (
            "authd test message".to_string(),
            "This message was sent by `authd mail test`: the mail transport works.\n".to_string(),
        ),
        // A kind with a link but none given: never built (service::mail mints first).
        (MailKind::PasswordReset, None)
        | (MailKind::VerifyEmail, None)
        | (MailKind::EmailChangeNew, None)
        | (MailKind::EmailChangeOld, None) => (
            "authd".to_string(),
            "This message has no content.\n".to_string(),
        ),
    };
    Rendered { subject, body }
}

/// The domain of `Message-ID`s: that of `email.from`'s address.
fn id_domain(from: &Mailbox) -> String {
    from.email.domain().to_string()
}

/// Builds the RFC 5322 message `id` to `to`: `From`, `To`, `Reply-To` (when set), `Subject`,
/// `Date` (`now`), `Message-ID` (`<id@from-domain>`), `Auto-Submitted: auto-generated`, a
/// text/plain UTF-8 body. `Err` names what is wrong (an address `lettre` refuses).
pub fn build(
    settings: &EmailSettings,
    id: Uuid,
    to: &str,
    r: &Rendered,
    now: Millis,
) -> Result<Message, String> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| format!("email.from: {e}"))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("invalid recipient address: {e}"))?;
    let date = UNIX_EPOCH + Duration::from_millis(now.max(0) as u64);
    let mut b = Message::builder()
        .message_id(Some(format!("<{id}@{}>", id_domain(&from))))
        .from(from)
        .to(to)
        .subject(r.subject.clone())
        .date(date)
        .header(AutoSubmitted)
        .header(ContentType::TEXT_PLAIN);
    if !settings.reply_to.is_empty() {
        let reply: Mailbox = settings
            .reply_to
            .parse()
            .map_err(|e| format!("email.reply_to: {e}"))?;
        b = b.reply_to(reply);
    }
    b.body(plain_body(&r.body)).map_err(|e| e.to_string())
}

/// The body as it is, in CRLF lines, labelled 7bit (ASCII) or 8bit (UTF-8): a link stays one
/// line that a reader can copy from the raw message (lettre's own choice would wrap any line
/// over 76 characters in quoted-printable). RFC 5322 allows 998 characters a line; a body
/// with a longer line (a very long `email.link_base`) is left to lettre's encoding.
fn plain_body(text: &str) -> Body {
    let fits = text
        .lines()
        .all(|l| l.len() <= 998 && !l.contains(['\r', '\0']));
    if !fits {
        return Body::new(text.to_string());
    }
    let crlf = text.lines().collect::<Vec<_>>().join("\r\n") + "\r\n";
    let encoding = if text.is_ascii() {
        ContentTransferEncoding::SevenBit
    } else {
        ContentTransferEncoding::EightBit
    };
    Body::dangerous_pre_encoded(crlf.into_bytes(), encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(in_words(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(in_words(Duration::from_secs(3600)), "1 hour");
        assert_eq!(in_words(Duration::from_secs(86_400)), "1 day");
        assert_eq!(in_words(Duration::from_secs(5400)), "90 minutes");
        assert_eq!(in_words(Duration::from_secs(45)), "45 seconds");
    }

    #[test]
    fn a_link_mail_holds_the_link_and_its_expiry() {
        let l = Link {
            url: "https://app.example.com/reset-password#token=abc".into(),
            expires_at: 0,
            ttl: Duration::from_secs(1800),
        };
        let r = render(MailKind::PasswordReset, Some(&l), None);
        assert!(r.body.contains(&l.url));
        assert!(r.body.contains("30 minutes"));
        assert!(r.body.contains("1970-01-01T00:00:00Z"));
        let n = render(MailKind::PasswordResetNotice, None, None);
        assert!(!n.body.contains("http"));
    }
}
