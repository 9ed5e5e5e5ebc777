//! HTTP layer: `/api/admin/users...`, account management for admins. Each handler is one
//! call of `service::accounts` (the same methods as `authd users ...`).

use std::collections::HashMap;

use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::Rejection;

use super::{envelope, envelope_with_message};
use crate::domain::time::rfc3339;
use crate::domain::views::account_json;
use crate::error::AppError;
use crate::http::dto::{admin_session_json, EmailBody, EmptyBody, ResetLinkBody, RoleBody};
use crate::http::HttpState;
use crate::service::accounts::ListQuery;
use crate::service::{parse_reset_ttl, Accounts, Acting};

/// `GET /api/admin/users?limit=&cursor=&email=`: one page of users in creation order.
pub async fn list(
    state: HttpState,
    by: Acting,
    query: HashMap<String, String>,
) -> Result<Response, Rejection> {
    let limit = Accounts::page_limit(query.get("limit").map(String::as_str))?;
    let page = state
        .accounts
        .list(
            &by,
            ListQuery {
                email: query.get("email").cloned(),
                cursor: query.get("cursor").cloned().filter(|c| !c.is_empty()),
                limit: Some(limit),
                ..Default::default()
            },
        )
        .await?;
    let users: Vec<_> = page.users.iter().map(account_json).collect();
    Ok(envelope(
        StatusCode::OK,
        json!({ "users": users, "nextCursor": page.next_cursor }),
    ))
}

/// `GET /api/admin/users/{id}`: the user and its number of live sessions.
pub async fn show(id: String, state: HttpState, by: Acting) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let d = state.accounts.show(&by, id).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&d.account), "liveSessions": d.live_sessions }),
    ))
}

/// `DELETE /api/admin/users/{id}`: deletes the user, its sessions and tokens (not itself, not
/// the last enabled admin: 400).
pub async fn delete(id: String, state: HttpState, by: Acting) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let done = state.accounts.delete(&by, id).await?;
    let mut data = serde_json::Map::new();
    data.insert("user".into(), account_json(&done.account));
    data.insert("deletedSessions".into(), done.sessions.into());
    Ok(envelope_with_message("user deleted", data))
}

/// `POST /api/admin/users/{id}/disable`: disables and revokes every session (not itself, not
/// the last enabled admin: 400).
pub async fn disable(
    id: String,
    state: HttpState,
    by: Acting,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let done = state.accounts.disable(&by, id).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&done.account), "revokedSessions": done.sessions }),
    ))
}

/// `POST /api/admin/users/{id}/enable`.
pub async fn enable(
    id: String,
    state: HttpState,
    by: Acting,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let account = state.accounts.enable(&by, id).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&account) }),
    ))
}

/// `POST /api/admin/users/{id}/unlock`: clears the lockout of the user's email.
pub async fn unlock(
    id: String,
    state: HttpState,
    by: Acting,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let account = state.accounts.unlock(&by, id).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&account) }),
    ))
}

/// `POST /api/admin/users/{id}/role` with `{"role"}`: changes the role, revokes sessions
/// (demoting the last enabled admin: 400).
pub async fn set_role(
    id: String,
    state: HttpState,
    by: Acting,
    body: RoleBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let done = state.accounts.set_role(&by, id, body.role).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&done.account), "revokedSessions": done.sessions }),
    ))
}

/// `POST /api/admin/users/{id}/mfa/reset` (CONTRACT 11.4): removes the user's TOTP, recovery
/// codes and passkeys and revokes every session of it (not the acting admin's own: 400).
/// 200, `data` `{"user", "revokedSessions"}`.
pub async fn mfa_reset(
    id: String,
    state: HttpState,
    by: Acting,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let done = state.accounts.mfa_reset(&by, id).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({
            "user": account_json(&done.account),
            "revokedSessions": done.removed.revoked_sessions,
        }),
    ))
}

/// `GET /api/admin/users/{id}/sessions`: the user's live sessions, newest first.
pub async fn sessions(id: String, state: HttpState, by: Acting) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let sessions = state.accounts.sessions(&by, id).await?;
    let items: Vec<_> = sessions.iter().map(admin_session_json).collect();
    Ok(envelope(StatusCode::OK, json!({ "sessions": items })))
}

/// `DELETE /api/admin/users/{id}/sessions`: revokes every live session of the user.
pub async fn revoke_sessions(
    id: String,
    state: HttpState,
    by: Acting,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let n = state.accounts.revoke_sessions(&by, id).await?;
    Ok(envelope(StatusCode::OK, json!({ "revokedSessions": n })))
}

/// `POST /api/admin/users/{id}/email` with `{"email"}`: sets the address (verified), revokes
/// every session of the user, kills its one-time tokens and a pending email change (CONTRACT
/// 10.5); 409 `EMAIL_TAKEN` when another account has it.
pub async fn set_email(
    id: String,
    state: HttpState,
    by: Acting,
    body: EmailBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let (_, account, n) = state.accounts.set_email(&by, id, &body.email).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&account), "revokedSessions": n }),
    ))
}

/// `POST /api/admin/users/{id}/reset-link` (`{}` or `{"ttl"}`): 200 with `{"link" (null
/// without a mail transport), "token", "expiresAt"}`.
pub async fn reset_link(
    id: String,
    state: HttpState,
    by: Acting,
    body: ResetLinkBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let ttl = body.ttl.as_deref().map(parse_reset_ttl).transpose()?;
    let (_, made) = state.accounts.reset_link(&by, id, ttl, false).await?;
    let link = made.ok_or(AppError::Internal("no reset link made".into()))?;
    Ok(envelope(
        StatusCode::OK,
        json!({
            "link": link.link,
            "token": link.token,
            "expiresAt": rfc3339(link.expires_at),
        }),
    ))
}

/// `POST /api/admin/users/{id}/verify-email`: 200 with `{"user"}`, its address verified.
pub async fn verify_email(
    id: String,
    state: HttpState,
    by: Acting,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let id = Accounts::parse_id(&id)?;
    let account = state.accounts.verify_email(&by, id).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": account_json(&account) }),
    ))
}
