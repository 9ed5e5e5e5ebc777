//! HTTP layer: second factors (CONTRACT 11.1, 11.2): the login's second step, the user's
//! TOTP enrolment, confirmation and removal, recovery codes.

use http::StatusCode;
use serde_json::{json, Value};
use warp::reply::Response;
use warp::Rejection;

use super::{envelope, envelope_with_message, with_cookie};
use crate::domain::views::user_json;
use crate::domain::ClientInfo;
use crate::http::dto::{tokens_json, CodeBody, CurrentPasswordBody};
use crate::http::HttpState;
use crate::service::{MfaVerifyInput, PasswordAndCode, Principal};

/// `POST /api/auth/mfa/verify`: 200 with the login answer (`user`, tokens, the refresh
/// cookie), and `recoveryCodesRemaining` after a recovery code.
pub async fn verify(
    state: HttpState,
    client: ClientInfo,
    body: MfaVerifyInput,
) -> Result<Response, Rejection> {
    let verified = state.sessions.verify_mfa(body, &client).await?;
    let out = verified.outcome;
    let mut data = tokens_json(&out.tokens);
    data.insert("user".into(), user_json(&out.user));
    if let Some(n) = verified.recovery_codes_remaining {
        data.insert("recoveryCodesRemaining".into(), n.into());
    }
    Ok(with_cookie(
        envelope(StatusCode::OK, Value::Object(data)),
        state.refresh_cookie(&out.tokens.refresh_token),
    ))
}

/// `GET /api/auth/mfa`: `{"totp", "recoveryCodesRemaining", "passkeys"}`.
pub async fn state(state: HttpState, who: Principal) -> Result<Response, Rejection> {
    let s = state.sessions.mfa_state(&who).await?;
    Ok(envelope(
        StatusCode::OK,
        json!({"totp": s.totp, "recoveryCodesRemaining": s.recovery_codes, "passkeys": s.passkeys}),
    ))
}

/// `POST /api/auth/mfa/totp/enroll`: `{"secret", "otpauthUri", "expiresIn"}`.
pub async fn enroll(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: CurrentPasswordBody,
) -> Result<Response, Rejection> {
    let offer = state
        .sessions
        .enroll_totp(who, &body.current_password, &client)
        .await?;
    Ok(envelope(
        StatusCode::OK,
        json!({"secret": offer.secret, "otpauthUri": offer.otpauth_uri, "expiresIn": offer.expires_in}),
    ))
}

/// `POST /api/auth/mfa/totp/confirm`: `{"recoveryCodes", "revokedSessions"}`.
pub async fn confirm(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: CodeBody,
) -> Result<Response, Rejection> {
    let done = state
        .sessions
        .confirm_totp(who, &body.code, &client)
        .await?;
    Ok(envelope(
        StatusCode::OK,
        json!({"recoveryCodes": done.recovery_codes, "revokedSessions": done.revoked_sessions}),
    ))
}

/// `POST /api/auth/mfa/totp/disable`: 200, TOTP and the recovery codes gone.
pub async fn disable(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: PasswordAndCode,
) -> Result<Response, Rejection> {
    state.sessions.disable_totp(who, body, &client).await?;
    Ok(envelope_with_message("TOTP disabled", Default::default()))
}

/// `POST /api/auth/mfa/recovery-codes`: `{"recoveryCodes"}`, the old set void.
pub async fn regenerate(
    state: HttpState,
    who: Principal,
    client: ClientInfo,
    body: PasswordAndCode,
) -> Result<Response, Rejection> {
    let codes = state
        .sessions
        .regenerate_recovery_codes(who, body, &client)
        .await?;
    Ok(envelope(StatusCode::OK, json!({"recoveryCodes": codes})))
}
