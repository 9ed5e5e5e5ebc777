//! Store layer: what a refresh-token rotation does, given the rows it found. Shared by both
//! backends: each one only finds and locks the presented token (with its session and user),
//! asks `decide`, and writes what the answer says, in the same transaction.

use uuid::Uuid;

use crate::domain::time::Millis;
use crate::domain::{Role, RotateOutcome, Rotation};

/// A presented token about to be rotated, with its session and user, as read (and, where the
/// backend needs it, locked) in the rotation's transaction.
#[derive(Debug, Clone)]
pub(crate) struct Presented {
    pub session_id: Uuid,
    pub expires_at: Millis,
    pub rotated_at: Option<Millis>,
    /// Issued before migration V4 (or rotated from such a token): found by hash alone.
    pub legacy: bool,
    pub user_id: Uuid,
    pub revoked_at: Option<Millis>,
    pub role: Role,
    pub disabled: bool,
}

/// What the backend writes for a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to write: the token is unknown, expired, or its session revoked.
    Refuse(RotateOutcome),
    /// Reuse of a rotated-away token outside the grace period: revoke the whole session
    /// (reason "reuse") and answer `outcome` (`Reused`).
    RevokeSession {
        session_id: Uuid,
        outcome: RotateOutcome,
    },
    /// Store the replacement (with `legacy` as the presented token's mark), set the presented
    /// token's `rotated_at` to now when `mark_rotated` (not within the grace, which keeps the
    /// first rotation time), extend the session, and answer `outcome` (`Rotated`).
    Rotate {
        session_id: Uuid,
        mark_rotated: bool,
        legacy: bool,
        outcome: RotateOutcome,
    },
}

/// The rotation's decision (see `Store::rotate_refresh_token`).
pub(crate) fn decide(found: Option<&Presented>, r: &Rotation) -> Step {
    let Some(p) = found else {
        return Step::Refuse(RotateOutcome::Unknown);
    };
    let (user_id, session_id) = (p.user_id, p.session_id);
    if p.revoked_at.is_some() {
        return Step::Refuse(RotateOutcome::Revoked {
            user_id,
            session_id,
        });
    }
    if p.expires_at <= r.now {
        return Step::Refuse(RotateOutcome::Expired {
            user_id,
            session_id,
        });
    }
    let mark_rotated = match p.rotated_at {
        Some(at) if r.now - at > r.reuse_grace || r.reuse_grace == 0 => {
            return Step::RevokeSession {
                session_id,
                outcome: RotateOutcome::Reused {
                    user_id,
                    session_id,
                },
            };
        }
        Some(_) => false, // within the grace: issue another token, keep the first rotation time
        None => true,
    };
    Step::Rotate {
        session_id,
        mark_rotated,
        legacy: p.legacy,
        outcome: RotateOutcome::Rotated {
            user_id,
            session_id,
            role: p.role,
            disabled: p.disabled,
        },
    }
}
