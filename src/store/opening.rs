//! Store layer: whether a session may be opened on a credential checked before, given the
//! user's row as read in the session's own transaction. Shared by both backends: each one only
//! reads (and, where it needs to, locks) the row, asks `decide`, and writes what the answer
//! says, in the same transaction.
//!
//! The rule (issue 16, item 1): a session is created only if the account still exists, is
//! enabled, and still has the credential that was checked; its role is the row's. A login
//! whose password check overlapped an admin `users disable` / `set-role` / `delete` or a
//! password change thus either sees the change and is refused, or commits first and the
//! change then revokes its session.

use crate::domain::{Refusal, SessionOpening, UserCredentials};

/// The decision (see `Store::open_session`): `Opened` with the user as read (the backend then
/// records the login on it), or why not. `user_id` names the account the caller checked.
pub(crate) fn decide(
    user_id: uuid::Uuid,
    found: Option<&UserCredentials>,
    verified_hash: &str,
) -> SessionOpening {
    let why = match found {
        None => Refusal::Gone,
        Some(c) if c.password_hash != verified_hash => Refusal::CredentialChanged,
        Some(c) if c.user.disabled => Refusal::Disabled,
        Some(c) => return SessionOpening::Opened(c.user.clone()),
    };
    SessionOpening::Refused { user_id, why }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::{Role, User};

    fn creds(disabled: bool, hash: &str) -> UserCredentials {
        UserCredentials {
            user: User {
                id: Uuid::nil(),
                email: "a@example.com".into(),
                name: None,
                role: Role::Admin,
                disabled,
                created_at: 0,
                last_login_at: None,
                email_verified: true,
            },
            password_hash: hash.into(),
        }
    }

    #[test]
    fn a_session_opens_only_on_the_checked_credential_of_an_enabled_account() {
        let id = Uuid::nil();
        let refused = |why| SessionOpening::Refused { user_id: id, why };
        assert_eq!(decide(id, None, "h"), refused(Refusal::Gone));
        assert_eq!(
            decide(id, Some(&creds(false, "new")), "h"),
            refused(Refusal::CredentialChanged)
        );
        // A changed credential is answered as a wrong password even when also disabled:
        // nothing about the account is told to someone whose password no longer holds.
        assert_eq!(
            decide(id, Some(&creds(true, "new")), "h"),
            refused(Refusal::CredentialChanged)
        );
        assert_eq!(
            decide(id, Some(&creds(true, "h")), "h"),
            refused(Refusal::Disabled)
        );
        let c = creds(false, "h");
        assert_eq!(decide(id, Some(&c), "h"), SessionOpening::Opened(c.user));
    }
}
