//! Domain layer: the JSON views of a user that every interface shows the same way: the
//! contract's `User` object (HTTP responses) and an admin's view of an account (the admin API
//! and `authd users --json`).

use serde_json::{json, Value};

use super::time::rfc3339;
use super::{Account, User};

/// The `User` object: `{"id", "email", "name" (string or null), "role", "createdAt",
/// "lastLoginAt" (RFC 3339 or null)}`; never a password hash.
pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id.to_string(),
        "email": u.email,
        "name": u.name,
        "role": u.role.as_str(),
        "createdAt": rfc3339(u.created_at),
        "lastLoginAt": u.last_login_at.map(rfc3339),
        "emailVerified": u.email_verified,
    })
}

/// The admin's view of a user: the `User` object with `disabled`, `lockedUntil` (RFC 3339,
/// or null when the email is not locked out) and `mfa`: `{"totp": bool, "passkeys": n}`
/// (CONTRACT 11.4).
pub fn account_json(a: &Account) -> Value {
    let mut v = user_json(&a.user);
    v["disabled"] = a.user.disabled.into();
    v["lockedUntil"] = a.locked_until.map(rfc3339).into();
    v["mfa"] = json!({"totp": a.mfa.totp, "passkeys": a.mfa.passkeys});
    v
}
