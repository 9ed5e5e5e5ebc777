//! HTTP layer: passkeys (CONTRACT 11.3) and the passkey ceremony of the MFA login step
//! (11.1). Every route answers 404 while `[webauthn]` is not configured (the service says so).

use http::StatusCode;
use serde_json::{json, Value};
use warp::reply::Response;
use warp::Rejection;

use super::auth::auth_reply;
use super::envelope;
use crate::domain::passkeys::StoredPasskey;
use crate::domain::time::rfc3339;
use crate::domain::ClientInfo;
use crate::http::dto::{CurrentPasswordBody, EmptyBody, MfaTokenBody};
use crate::http::HttpState;
use crate::service::{PasskeyCeremony, PasskeyLogin, PasskeyRegistrationInput, Principal};

/// `{"id", "name", "createdAt", "lastUsedAt"}` (times RFC 3339, `lastUsedAt` null until used).
fn passkey_json(p: &StoredPasskey) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "createdAt": rfc3339(p.created_at),
        "lastUsedAt": p.last_used_at.map(rfc3339),
    })
}

fn ceremony_reply(c: PasskeyCeremony) -> Response {
    envelope(
        StatusCode::OK,
        json!({"ceremonyId": c.ceremony_id, "publicKey": c.public_key}),
    )
}

/// `POST /api/auth/passkeys/register/options`: 200 `{"ceremonyId", "publicKey"}`.
pub async fn register_options(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: CurrentPasswordBody,
) -> Result<Response, Rejection> {
    let c = state
        .sessions
        .passkey_register_options(who, body.current_password, &client)
        .await?;
    Ok(ceremony_reply(c))
}

/// `POST /api/auth/passkeys/register/verify`: 201 `{"passkey": {...}}`.
pub async fn register_verify(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: PasskeyRegistrationInput,
) -> Result<Response, Rejection> {
    let p = state
        .sessions
        .passkey_register_verify(who, body, &client)
        .await?;
    Ok(envelope(
        StatusCode::CREATED,
        json!({"passkey": passkey_json(&p)}),
    ))
}

/// `GET /api/auth/passkeys`: 200 `{"passkeys": [...]}`.
pub async fn list(state: HttpState, who: Principal) -> Result<Response, Rejection> {
    let all = state.sessions.passkeys(who).await?;
    let items: Vec<Value> = all.iter().map(passkey_json).collect();
    Ok(envelope(StatusCode::OK, json!({"passkeys": items})))
}

/// `DELETE /api/auth/passkeys/{id}`: 200 `{}`; 404 if not the user's.
pub async fn delete(
    id: String,
    state: HttpState,
    who: Principal,
    client: ClientInfo,
) -> Result<Response, Rejection> {
    state.sessions.delete_passkey(who, &id, &client).await?;
    Ok(envelope(StatusCode::OK, json!({})))
}

/// `POST /api/auth/passkeys/login/options`: 200 `{"ceremonyId", "publicKey"}`.
pub async fn login_options(state: HttpState, _body: EmptyBody) -> Result<Response, Rejection> {
    Ok(ceremony_reply(
        state.sessions.passkey_login_options().await?,
    ))
}

/// `POST /api/auth/passkeys/login/verify`: 200, the login answer.
pub async fn login_verify(
    state: HttpState,
    client: ClientInfo,
    body: PasskeyLogin,
) -> Result<Response, Rejection> {
    let out = state.sessions.passkey_login(body, &client).await?;
    Ok(auth_reply(&state, StatusCode::OK, out))
}

/// `POST /api/auth/mfa/webauthn/options`: 200 `{"ceremonyId", "publicKey"}` naming the
/// account's passkeys.
pub async fn mfa_options(state: HttpState, body: MfaTokenBody) -> Result<Response, Rejection> {
    Ok(ceremony_reply(
        state.sessions.mfa_webauthn_options(&body.mfa_token).await?,
    ))
}
