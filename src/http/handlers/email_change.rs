//! HTTP layer: the signed-in user changes its email address (CONTRACT 10.5): the request, the
//! confirmation of a mailed link, and the cancellation. Each handler is one call of
//! `service::email_change`.

use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::Rejection;

use super::{envelope, envelope_with_message};
use crate::domain::views::user_json;
use crate::domain::ClientInfo;
use crate::http::dto::{EmptyBody, TokenBody};
use crate::http::HttpState;
use crate::service::{EmailChangeInput, Principal};

/// `POST /api/auth/email`: 202 with `{"pendingEmail"}`; the links are mailed.
pub async fn request(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: EmailChangeInput,
) -> Result<Response, Rejection> {
    let pending = state
        .sessions
        .request_email_change(who, body, &client)
        .await?;
    Ok(envelope(
        StatusCode::ACCEPTED,
        json!({ "pendingEmail": pending }),
    ))
}

/// `POST /api/auth/email/confirm`: 200 with `{"user", "complete"}`.
pub async fn confirm(
    state: HttpState,
    client: ClientInfo,
    body: TokenBody,
) -> Result<Response, Rejection> {
    let done = state
        .sessions
        .confirm_email_change(&body.token, &client)
        .await?;
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": user_json(&done.user), "complete": done.complete }),
    ))
}

/// `POST /api/auth/email/cancel`: 200; the pending change and its links are gone.
pub async fn cancel(
    state: HttpState,
    who: Principal,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let cancelled = state.sessions.cancel_email_change(who).await?;
    let mut data = serde_json::Map::new();
    data.insert("cancelled".into(), cancelled.into());
    Ok(envelope_with_message("email change cancelled", data))
}
