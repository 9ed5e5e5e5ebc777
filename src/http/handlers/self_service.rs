//! HTTP layer: password reset and email verification (CONTRACT 10.3, 10.4). Each handler is
//! one call of `service::self_service`; the routes that send mail answer 202 with the same
//! body whatever the address.

use http::StatusCode;
use serde_json::{json, Map};
use warp::reply::Response;
use warp::Rejection;

use super::{envelope, envelope_with_message};
use crate::domain::views::user_json;
use crate::domain::ClientInfo;
use crate::http::dto::{EmailBody, ResetConfirmBody, TokenBody};
use crate::http::HttpState;

/// 202 with `data` `{}` and `message`: the one answer of a route that may send mail.
pub(super) fn accepted(message: &str) -> Response {
    let mut resp = envelope_with_message(message, Map::new());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// `POST /api/auth/password-reset/request`: 202 for every well-formed address.
pub async fn request_reset(
    state: HttpState,
    client: ClientInfo,
    body: EmailBody,
) -> Result<Response, Rejection> {
    state
        .sessions
        .request_password_reset(&body.email, &client)
        .await?;
    Ok(accepted(
        "if an account has this address, a link to reset its password is on its way",
    ))
}

/// `POST /api/auth/password-reset/confirm`: 200 with `{"revokedSessions"}`; no tokens.
pub async fn confirm_reset(
    state: HttpState,
    client: ClientInfo,
    body: ResetConfirmBody,
) -> Result<Response, Rejection> {
    let revoked = state
        .sessions
        .confirm_password_reset(&body.token, &body.new_password, &client)
        .await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "revokedSessions": revoked }),
    ))
}

/// `POST /api/auth/verify-email`: 200 with `{"user"}`; no tokens.
pub async fn verify(
    state: HttpState,
    client: ClientInfo,
    body: TokenBody,
) -> Result<Response, Rejection> {
    let user = state.sessions.verify_email(&body.token, &client).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": user_json(&user) }),
    ))
}

/// `POST /api/auth/verify-email/resend`: 202 for every well-formed address.
pub async fn resend(
    state: HttpState,
    client: ClientInfo,
    body: EmailBody,
) -> Result<Response, Rejection> {
    state
        .sessions
        .resend_verification(&body.email, &client)
        .await?;
    Ok(accepted(
        "if this address has an account waiting for verification, a new link is on its way",
    ))
}
