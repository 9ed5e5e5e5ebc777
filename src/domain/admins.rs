//! Domain layer: the last enabled admin, decided once for every store backend. Over HTTP no
//! change may leave the database without an enabled admin (nobody could then manage accounts
//! but an operator at the server's shell); the CLI may, and is told so. A backend only reads
//! (and, where it needs to, locks) the enabled admins inside the change's own transaction,
//! asks `decide`, and writes what the answer says.

use uuid::Uuid;

use super::{Role, User};

/// A change to an account that the last-admin rule looks at (`Store::set_disabled`,
/// `Store::set_role`, `Store::delete_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    /// Sets the `disabled` flag to this value.
    SetDisabled(bool),
    /// Sets the role.
    SetRole(Role),
    /// Deletes the account.
    Delete,
}

impl AccountChange {
    /// Whether the change, applied to an enabled admin, leaves it no longer one. Only such a
    /// change needs the enabled admins read (and locked) first.
    pub fn can_remove_admin(self) -> bool {
        match self {
            AccountChange::SetDisabled(disabled) => disabled,
            AccountChange::SetRole(role) => role != Role::Admin,
            AccountChange::Delete => true,
        }
    }
}

/// What a change may do to the last enabled admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAdmin {
    /// Refuse a change that would leave no enabled admin (the admin API).
    Keep,
    /// Allow it and report it (`authd users ...`: the operator at the server's shell can
    /// always make an admin again).
    Allow,
}

/// The answer of `decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the change. `leaves_no_admin`: it takes away the last enabled admin.
    Proceed { leaves_no_admin: bool },
    /// Write nothing: the change would leave no enabled admin and `LastAdmin::Keep` holds.
    Refuse,
}

/// Decides `change` to the account `target`, given the ids of every enabled admin as read in
/// the change's transaction (where none of them can change before it commits). A change
/// leaves no enabled admin when it removes one (`can_remove_admin`) from the target and the
/// target is the only enabled admin. An unknown target is not an admin: `Proceed`, and the
/// backend finds no row to change.
pub fn decide(
    change: AccountChange,
    target: Uuid,
    enabled_admins: &[Uuid],
    policy: LastAdmin,
) -> Verdict {
    let leaves_no_admin = change.can_remove_admin() && enabled_admins == [target];
    match (leaves_no_admin, policy) {
        (true, LastAdmin::Keep) => Verdict::Refuse,
        _ => Verdict::Proceed { leaves_no_admin },
    }
}

/// What `Store::set_disabled`, `Store::set_role` and `Store::delete_user` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// No such user: nothing was written.
    NotFound,
    /// Refused under `LastAdmin::Keep`: it would have left no enabled admin; nothing was
    /// written.
    LastAdmin,
    /// Written. `user`: as changed (a deleted one: as it was); `sessions`: how many live
    /// sessions the change revoked (a deletion: deleted); `leaves_no_admin`: it took away the
    /// last enabled admin (only ever under `LastAdmin::Allow`).
    Done {
        user: User,
        sessions: usize,
        leaves_no_admin: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_removing_the_only_enabled_admin_is_refused() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let removing = [
            AccountChange::SetDisabled(true),
            AccountChange::SetRole(Role::User),
            AccountChange::Delete,
        ];
        for change in removing {
            assert_eq!(
                decide(change, a, &[a], LastAdmin::Keep),
                Verdict::Refuse,
                "{change:?}"
            );
            assert_eq!(
                decide(change, a, &[a], LastAdmin::Allow),
                Verdict::Proceed {
                    leaves_no_admin: true
                }
            );
            // Another enabled admin stays; the target is not an enabled admin (a user, a
            // disabled admin, or nobody); there is no enabled admin to lose.
            for (target, admins) in [(a, &[a, b][..]), (c, &[a][..]), (c, &[][..])] {
                assert_eq!(
                    decide(change, target, admins, LastAdmin::Keep),
                    Verdict::Proceed {
                        leaves_no_admin: false
                    },
                    "{change:?} {admins:?}"
                );
            }
        }
        for keeping in [
            AccountChange::SetDisabled(false),
            AccountChange::SetRole(Role::Admin),
        ] {
            assert!(!keeping.can_remove_admin());
            assert_eq!(
                decide(keeping, a, &[a], LastAdmin::Keep),
                Verdict::Proceed {
                    leaves_no_admin: false
                }
            );
        }
    }
}
