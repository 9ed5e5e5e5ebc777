//! HTTP layer: the one place where errors become responses. Every `AppError` maps to the
//! contract's status and code here; warp's own rejections map to the same JSON; 5xx causes
//! are logged, never sent.

use std::convert::Infallible;

use http::header::{HeaderValue, CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;
use serde_json::json;
use warp::reject::Reject;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::error::AppError;

/// An `AppError` carried through warp's rejection machinery.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl Reject for ApiError {}

impl From<AppError> for Rejection {
    fn from(e: AppError) -> Self {
        warp::reject::custom(ApiError(e))
    }
}

/// The contract's status for each error.
pub fn status(e: &AppError) -> StatusCode {
    match e {
        AppError::Validation(_)
        | AppError::MalformedJson
        | AppError::OneTimeTokenInvalid
        | AppError::OneTimeTokenExpired => StatusCode::BAD_REQUEST,
        AppError::InvalidCredentials
        | AppError::TokenMissing
        | AppError::TokenMissingOverHttp
        | AppError::TokenInvalid
        | AppError::TokenExpired
        | AppError::TokenRevoked
        | AppError::MfaRequired { .. }
        | AppError::MfaInvalid => StatusCode::UNAUTHORIZED,
        AppError::AccountDisabled
        | AppError::EmailNotVerified
        | AppError::Forbidden
        | AppError::RegistrationClosed => StatusCode::FORBIDDEN,
        AppError::NotFound => StatusCode::NOT_FOUND,
        AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        AppError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        AppError::EmailTaken | AppError::MfaAlreadyEnabled => StatusCode::CONFLICT,
        AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        AppError::AccountLocked { .. } => StatusCode::LOCKED,
        AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        AppError::Internal(_) | AppError::Conflict(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON error envelope for `e`, with `Retry-After` and `WWW-Authenticate` where due.
pub fn error_response(e: &AppError) -> Response {
    match e {
        AppError::Internal(cause) => tracing::error!(cause = %cause, "internal error"),
        AppError::Conflict(cause) => tracing::error!(cause = %cause, "unexpected conflict"),
        // Logged once per episode where it arose (`service::Core::db`), not once a request.
        AppError::Unavailable(cause) => tracing::debug!(cause = %cause, "database unavailable"),
        _ => {}
    }
    let mut body = json!({
        "success": false,
        "message": e.public_message(),
        "error": e.code(),
    });
    if let AppError::Validation(details) = e {
        body["details"] = json!(details);
    }
    if let AppError::MfaRequired {
        mfa_token,
        methods,
        expires_in,
    } = e
    {
        body["mfaToken"] = json!(mfa_token);
        body["methods"] = json!(methods);
        body["expiresIn"] = json!(expires_in);
    }
    let mut resp = warp::reply::with_status(warp::reply::json(&body), status(e)).into_response();
    let headers = resp.headers_mut();
    let retry_after = match e {
        AppError::AccountLocked { retry_after_secs }
        | AppError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
        AppError::Unavailable(_) => Some(1),
        _ => None,
    };
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    let challenge = match e {
        AppError::TokenInvalid => Some(
            r#"Bearer realm="authd", error="invalid_token", error_description="the token is invalid""#,
        ),
        AppError::TokenExpired => Some(
            r#"Bearer realm="authd", error="invalid_token", error_description="the token has expired""#,
        ),
        AppError::TokenRevoked => Some(
            r#"Bearer realm="authd", error="invalid_token", error_description="the token has been revoked""#,
        ),
        AppError::TokenMissing | AppError::TokenMissingOverHttp | AppError::InvalidCredentials => {
            Some(r#"Bearer realm="authd""#)
        }
        _ => None,
    };
    if let Some(c) = challenge {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    // The rest of a body that did not arrive in time is never read: the connection ends here.
    if matches!(e, AppError::RequestTimeout) {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The single `recover`: turns any rejection into the contract's JSON.
pub async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let e = if let Some(ApiError(e)) = r.find::<ApiError>() {
        return Ok(error_response(e));
    } else if r.is_not_found() {
        AppError::NotFound
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        AppError::MethodNotAllowed
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        AppError::PayloadTooLarge
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        AppError::UnsupportedMediaType
    } else if r.find::<warp::reject::InvalidHeader>().is_some()
        || r.find::<warp::reject::MissingHeader>().is_some()
        || r.find::<warp::reject::InvalidQuery>().is_some()
    {
        AppError::validation("request", "has a malformed header or query")
    } else {
        AppError::Internal(format!("unhandled rejection: {r:?}"))
    };
    Ok(error_response(&e))
}
