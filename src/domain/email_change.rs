//! Domain layer: email change (CONTRACT 10.5). An account has at most one pending change
//! (`email_changes`, migration V14); its mails carry links whose one-time tokens
//! (`Purpose::EmailChangeNew`, `EmailChangeOld`) name the change (`changeId` in their payload)
//! and are bound to the address they were mailed to. Each confirmation is recorded; the
//! address moves only at the last required one. `step` decides what a confirmation does; the
//! backends only fetch, lock and write.

use uuid::Uuid;

use super::one_time::{OneTimeToken, Purpose};
use super::time::Millis;
use super::User;

/// The pending email change of an account (a row of `email_changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEmailChange {
    pub user_id: Uuid,
    /// Names this request; the tokens of its mails carry it (see `token_payload`).
    pub change_id: Uuid,
    /// The address asked for, normalised.
    pub new_email: String,
    /// The account's address when the change was asked for.
    pub old_email: String,
    /// The session that asked: kept live when the change completes (if it still is).
    pub session_id: Option<Uuid>,
    /// The new address's link was used.
    pub new_confirmed: bool,
    /// The current address's link was used (true from the start with
    /// `email.change_confirm_old = false`).
    pub old_confirmed: bool,
    /// Unix milliseconds.
    pub created_at: Millis,
    /// Unix milliseconds; past it, a confirmation answers `TOKEN_EXPIRED`.
    pub expires_at: Millis,
}

impl PendingEmailChange {
    /// The payload of the change's mails, copied into their tokens when the mail worker
    /// mints them: `{"changeId", "newEmail"}` (the mail text names the new address).
    pub fn token_payload(&self) -> String {
        serde_json::json!({
            "changeId": self.change_id.to_string(),
            "newEmail": self.new_email,
        })
        .to_string()
    }
}

/// The change a token's payload names, if any.
pub fn change_id_of(payload: Option<&str>) -> Option<Uuid> {
    let v: serde_json::Value = serde_json::from_str(payload?).ok()?;
    Uuid::parse_str(v.get("changeId")?.as_str()?).ok()
}

/// What storing a change request did (`Store::request_email_change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Stored (replacing an older pending change and killing its tokens), its mails queued.
    Pending,
    /// Another account has the new address: nothing written.
    EmailTaken,
}

/// What a confirmation did (`Store::confirm_email_change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// Unknown, used, superseded or killed token, or one of a change that is no longer
    /// pending, or bound to an address the change no longer concerns: 400 `TOKEN_INVALID`.
    Invalid,
    /// The token or the change is past its lifetime: 400 `TOKEN_EXPIRED`.
    Expired,
    /// Recorded; another confirmation is still needed. The user as it is (old address).
    Recorded { user: User },
    /// The last confirmation: the address changed (verified), every other session of the user
    /// revoked (`revoked`), its other one-time tokens killed, the pending change gone.
    /// `old_email` is the address before.
    Complete {
        user: User,
        old_email: String,
        revoked: usize,
    },
    /// The last confirmation, but another account took the address meanwhile: the pending
    /// change (and its tokens) dropped, nothing else changed. 409 `EMAIL_TAKEN`.
    EmailTaken { user_id: Uuid },
}

/// What one confirmation with a live token does to the pending change (`Step::Complete`:
/// the backend re-checks the address is free, then moves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Invalid,
    Expired,
    /// Record this confirmation (the change as updated); another one is still needed.
    Record(PendingEmailChange),
    /// This was the last confirmation needed (the change as updated).
    Complete(PendingEmailChange),
}

/// Decides a confirmation: `token` was just used up; `pending` is the token owner's pending
/// change (read under lock in the same transaction) and `current_email` the owner's address.
/// A token confirms only the change it was minted for (`changeId`), and only the address it
/// was mailed to: the new address for `EmailChangeNew`, the current one (unchanged since the
/// request) for `EmailChangeOld`.
pub fn step(
    token: &OneTimeToken,
    pending: Option<&PendingEmailChange>,
    current_email: &str,
    now: Millis,
) -> Step {
    let Some(p) = pending else {
        return Step::Invalid;
    };
    if token.user_id != Some(p.user_id)
        || change_id_of(token.payload.as_deref()) != Some(p.change_id)
    {
        return Step::Invalid;
    }
    let address = token.address.as_deref();
    let mut next = p.clone();
    match token.purpose {
        Purpose::EmailChangeNew if address == Some(p.new_email.as_str()) => {
            next.new_confirmed = true;
        }
        Purpose::EmailChangeOld
            if address == Some(p.old_email.as_str()) && current_email == p.old_email =>
        {
            next.old_confirmed = true;
        }
        _ => return Step::Invalid,
    }
    if now >= p.expires_at {
        return Step::Expired;
    }
    if next.new_confirmed && next.old_confirmed {
        Step::Complete(next)
    } else {
        Step::Record(next)
    }
}

/// What an admin's `set_email` did (`Store::set_email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEmailOutcome {
    /// Set (verified); every session revoked (`sessions`), one-time tokens and a pending
    /// change gone. `old_email` is the address before.
    Done {
        user: User,
        old_email: String,
        sessions: usize,
    },
    NotFound,
    /// Another account has the address: nothing written.
    EmailTaken,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(confirm_old: bool) -> PendingEmailChange {
        PendingEmailChange {
            user_id: Uuid::new_v4(),
            change_id: Uuid::new_v4(),
            new_email: "new@x.io".into(),
            old_email: "old@x.io".into(),
            session_id: None,
            new_confirmed: false,
            old_confirmed: !confirm_old,
            created_at: 0,
            expires_at: 1_000,
        }
    }

    fn token(p: &PendingEmailChange, purpose: Purpose, address: &str) -> OneTimeToken {
        OneTimeToken {
            token_hash: "h".into(),
            purpose,
            user_id: Some(p.user_id),
            address: Some(address.into()),
            payload: Some(p.token_payload()),
            attempts: 0,
            created_at: 0,
            expires_at: 1_000,
        }
    }

    #[test]
    fn both_confirmations_complete_in_any_order() {
        let p = pending(true);
        let new = token(&p, Purpose::EmailChangeNew, "new@x.io");
        let old = token(&p, Purpose::EmailChangeOld, "old@x.io");
        let Step::Record(after_new) = step(&new, Some(&p), "old@x.io", 1) else {
            panic!("new first records");
        };
        assert!(matches!(
            step(&old, Some(&after_new), "old@x.io", 2),
            Step::Complete(_)
        ));
        let Step::Record(after_old) = step(&old, Some(&p), "old@x.io", 1) else {
            panic!("old first records");
        };
        assert!(matches!(
            step(&new, Some(&after_old), "old@x.io", 2),
            Step::Complete(_)
        ));
    }

    #[test]
    fn without_the_old_confirmation_the_new_one_completes() {
        let p = pending(false);
        let new = token(&p, Purpose::EmailChangeNew, "new@x.io");
        assert!(matches!(
            step(&new, Some(&p), "old@x.io", 1),
            Step::Complete(_)
        ));
    }

    #[test]
    fn a_token_confirms_only_its_change_and_address() {
        let p = pending(true);
        let mut other = token(&p, Purpose::EmailChangeNew, "new@x.io");
        other.payload = Some(pending(true).token_payload());
        assert_eq!(step(&other, Some(&p), "old@x.io", 1), Step::Invalid);
        let wrong_address = token(&p, Purpose::EmailChangeNew, "old@x.io");
        assert_eq!(step(&wrong_address, Some(&p), "old@x.io", 1), Step::Invalid);
        let old = token(&p, Purpose::EmailChangeOld, "old@x.io");
        assert_eq!(step(&old, Some(&p), "moved@x.io", 1), Step::Invalid);
        let reset = token(&p, Purpose::PasswordReset, "old@x.io");
        assert_eq!(step(&reset, Some(&p), "old@x.io", 1), Step::Invalid);
        let new = token(&p, Purpose::EmailChangeNew, "new@x.io");
        assert_eq!(step(&new, None, "old@x.io", 1), Step::Invalid);
        assert_eq!(step(&new, Some(&p), "old@x.io", 1_000), Step::Expired);
    }
}
