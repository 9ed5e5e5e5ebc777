//! HTTP layer: the signed-in user's profile and sessions.

use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::Rejection;

use super::{envelope, envelope_with_message};
use crate::domain::views::user_json;
use crate::domain::ClientInfo;
use crate::http::dto::session_json;
use crate::http::HttpState;
use crate::service::Principal;

pub async fn profile(state: HttpState, who: Principal) -> Result<Response, Rejection> {
    let user = state.sessions.profile(who);
    Ok(envelope(
        StatusCode::OK,
        json!({ "user": user_json(&user) }),
    ))
}

pub async fn list(state: HttpState, who: Principal) -> Result<Response, Rejection> {
    let session_id = who.session_id;
    let sessions = state.sessions.list(who).await?;
    let items: Vec<_> = sessions
        .iter()
        .map(|s| session_json(s, s.id == session_id))
        .collect();
    Ok(envelope(StatusCode::OK, json!({ "sessions": items })))
}

pub async fn delete(
    id: String,
    state: HttpState,
    who: Principal,
    client: ClientInfo,
) -> Result<Response, Rejection> {
    state.sessions.revoke(who, &id, &client).await?;
    Ok(envelope_with_message("session revoked", Default::default()))
}
