//! HTTP layer: the signed-in user changes their password.

use warp::reply::Response;
use warp::Rejection;

use super::envelope_with_message;
use crate::domain::ClientInfo;
use crate::http::HttpState;
use crate::service::{PasswordChange, Principal};

/// `POST /api/auth/password`: 200 with `{"revokedSessions": n}` (the other sessions revoked;
/// the presented one stays live, so its refresh cookie is left alone).
pub async fn change(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: PasswordChange,
) -> Result<Response, Rejection> {
    let n = state.sessions.change_password(who, body, &client).await?;
    let mut data = serde_json::Map::new();
    data.insert("revokedSessions".into(), n.into());
    Ok(envelope_with_message("password changed", data))
}
