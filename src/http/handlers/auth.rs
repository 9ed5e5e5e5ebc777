//! HTTP layer: register, login, refresh, logout, logout-all.

use http::StatusCode;
use serde_json::Value;
use warp::reply::Response;
use warp::Rejection;

use super::{envelope, envelope_with_message, with_cookie};
use crate::domain::views::user_json;
use crate::domain::ClientInfo;
use crate::error::AppError;
use crate::http::dto::{tokens_json, EmptyBody, RefreshBody};
use crate::http::HttpState;
use crate::service::{AuthOutcome, LoginInput, NewUserInput, Presented, Principal, Registered};

pub(super) fn auth_reply(state: &HttpState, status: StatusCode, out: AuthOutcome) -> Response {
    let mut data = tokens_json(&out.tokens);
    data.insert("user".into(), user_json(&out.user));
    with_cookie(
        envelope(status, Value::Object(data)),
        state.refresh_cookie(&out.tokens.refresh_token),
    )
}

pub async fn register(
    state: HttpState,
    client: ClientInfo,
    body: NewUserInput,
) -> Result<Response, Rejection> {
    match state.sessions.register(body, &client).await? {
        Registered::SignedIn(out) => Ok(auth_reply(&state, StatusCode::CREATED, out)),
        Registered::Accepted => Ok(super::self_service::accepted(
            "check your mailbox: the link in it confirms the address",
        )),
    }
}

pub async fn login(
    state: HttpState,
    client: ClientInfo,
    body: LoginInput,
) -> Result<Response, Rejection> {
    let out = state.sessions.login(body, &client).await?;
    Ok(auth_reply(&state, StatusCode::OK, out))
}

pub async fn refresh(
    state: HttpState,
    client: ClientInfo,
    cookie: Presented,
    body: RefreshBody,
    plain_http: bool,
) -> Result<Response, Rejection> {
    let token = Presented::body_over_cookie(body.refresh_token, cookie);
    let tokens = state
        .sessions
        .refresh(token, &client)
        .await
        .map_err(|e| why_missing(e, &state, plain_http))?;
    let cookie = state.refresh_cookie(&tokens.refresh_token);
    Ok(with_cookie(
        envelope(StatusCode::OK, Value::Object(tokens_json(&tokens))),
        cookie,
    ))
}

pub async fn logout(
    state: HttpState,
    client: ClientInfo,
    cookie: Presented,
    body: RefreshBody,
    plain_http: bool,
) -> Result<Response, Rejection> {
    let token = Presented::body_over_cookie(body.refresh_token, cookie);
    state
        .sessions
        .logout(token, &client)
        .await
        .map_err(|e| why_missing(e, &state, plain_http))?;
    Ok(with_cookie(
        envelope_with_message("logged out", Default::default()),
        state.clear_cookie(),
    ))
}

pub async fn logout_all(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    _body: EmptyBody,
) -> Result<Response, Rejection> {
    let n = state.sessions.logout_all(who, &client).await?;
    let mut data = serde_json::Map::new();
    data.insert("revokedSessions".into(), n.into());
    Ok(with_cookie(
        envelope_with_message("all sessions revoked", data),
        state.clear_cookie(),
    ))
}

/// A missing refresh token on a plain-HTTP request while the cookie is `Secure` is most
/// likely the browser withholding the cookie: same status and code, a message that says so.
fn why_missing(e: AppError, state: &HttpState, plain_http: bool) -> AppError {
    match e {
        AppError::TokenMissing if plain_http && state.settings.cookie.secure => {
            AppError::TokenMissingOverHttp
        }
        e => e,
    }
}
