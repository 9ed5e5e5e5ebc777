//! Domain layer: password reset and email verification (CONTRACT 10.3, 10.4), the flows a
//! user runs without being signed in: what a public route that sends mail does for the
//! account it finds, and what a confirmation found. The routes answer the same whatever they
//! found; the reasons here go only to the audit trail (CONTRACT 10.2).

use uuid::Uuid;

use super::mail::MailKind;
use super::User;

/// Whether a public route mails `kind` to the account found for the address it was given
/// (`None`: no account has it): `Ok` to queue it (the per-address throttle still decides),
/// else the audit reason for not mailing: `unknown_email`, `disabled`, or `verified` (a
/// verification link for an address already verified).
pub fn mail_decision(kind: MailKind, found: Option<&User>) -> Result<(), &'static str> {
    match found {
        None => Err("unknown_email"),
        Some(u) if u.disabled => Err("disabled"),
        Some(u) if kind == MailKind::VerifyEmail && u.email_verified => Err("verified"),
        Some(_) => Ok(()),
    }
}

/// What a public mail request did: the account found (if any) and the audit reason
/// (`queued`, `throttled`, or a reason of `mail_decision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRequested {
    pub user_id: Option<Uuid>,
    pub reason: &'static str,
}

impl MailRequested {
    /// The outcome of queueing a mail the decision allowed: `queued` or `throttled`.
    pub fn queued(user_id: Uuid, queued: bool) -> Self {
        MailRequested {
            user_id: Some(user_id),
            reason: if queued { "queued" } else { "throttled" },
        }
    }
}

/// What `POST /api/auth/password-reset/confirm` found, decided in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetOutcome {
    /// Unknown, used, superseded or killed, or its account's address changed since it was
    /// mailed: 400 `TOKEN_INVALID`.
    Invalid,
    /// Past its lifetime: 400 `TOKEN_EXPIRED`.
    Expired,
    /// The password is reset; `revoked` sessions were revoked.
    Done { user: User, revoked: usize },
}

/// What `POST /api/auth/verify-email` found, decided in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Unknown, used, superseded or killed, or made for another address or account: 400
    /// `TOKEN_INVALID`.
    Invalid,
    /// Past its lifetime: 400 `TOKEN_EXPIRED`.
    Expired,
    /// The account's address is verified now.
    Verified(User),
}

/// What a registration did with `email.require_verification = true` (CONTRACT 10.4); the
/// route answers 202 whatever it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new, unverified account.
    Created,
    /// The address's account was still unverified: its password and name are replaced (the
    /// first registrant never proved the address) and its older links are dead.
    Replaced,
    /// The address has a verified account: a notice goes to it, nothing changes.
    Existing,
    /// The address's account is disabled: nothing changes, nothing is mailed.
    Disabled,
}

impl Registration {
    /// The audit reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Registration::Created => "created",
            Registration::Replaced => "replaced_unverified",
            Registration::Existing => "email_taken",
            Registration::Disabled => "disabled",
        }
    }

    /// Whether the registration made or replaced an account (the audit's outcome).
    pub fn succeeded(self) -> bool {
        matches!(self, Registration::Created | Registration::Replaced)
    }

    /// The mail it sends: a verification link, a notice to a verified account, or none.
    pub fn mail(self) -> Option<MailKind> {
        match self {
            Registration::Created | Registration::Replaced => Some(MailKind::VerifyEmail),
            Registration::Existing => Some(MailKind::AlreadyRegistered),
            Registration::Disabled => None,
        }
    }

    /// What a registration of an address whose account is `found` (`None`: none) does.
    pub fn of(found: Option<&User>) -> Registration {
        match found {
            None => Registration::Created,
            Some(u) if u.disabled => Registration::Disabled,
            Some(u) if u.email_verified => Registration::Existing,
            Some(_) => Registration::Replaced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn user(disabled: bool, verified: bool) -> User {
        User {
            id: Uuid::nil(),
            email: "a@x.io".into(),
            name: None,
            role: Role::User,
            disabled,
            created_at: 0,
            last_login_at: None,
            email_verified: verified,
        }
    }

    #[test]
    fn only_a_live_account_gets_mail_and_a_verified_one_no_second_link() {
        let live = user(false, false);
        let verified = user(false, true);
        let off = user(true, false);
        assert_eq!(
            mail_decision(MailKind::PasswordReset, None),
            Err("unknown_email")
        );
        assert_eq!(
            mail_decision(MailKind::PasswordReset, Some(&off)),
            Err("disabled")
        );
        assert_eq!(
            mail_decision(MailKind::PasswordReset, Some(&verified)),
            Ok(())
        );
        assert_eq!(mail_decision(MailKind::VerifyEmail, Some(&live)), Ok(()));
        assert_eq!(
            mail_decision(MailKind::VerifyEmail, Some(&verified)),
            Err("verified")
        );
    }

    #[test]
    fn a_registration_replaces_only_an_unverified_live_account() {
        assert_eq!(Registration::of(None), Registration::Created);
        assert_eq!(
            Registration::of(Some(&user(false, false))),
            Registration::Replaced
        );
        assert_eq!(
            Registration::of(Some(&user(false, true))),
            Registration::Existing
        );
        assert_eq!(
            Registration::of(Some(&user(true, false))),
            Registration::Disabled
        );
        assert_eq!(
            Registration::Existing.mail(),
            Some(MailKind::AlreadyRegistered)
        );
        assert_eq!(Registration::Disabled.mail(), None);
    }
}
