//! Domain layer: `AppError`, every failure a service can report. No HTTP types here;
//! `http::reject` maps each variant to the contract's status and error code.

use crate::store::StoreError;

/// One failed validation rule: the field it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The domain's errors. Each variant has one stable error code (see `code`).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400 `VALIDATION_ERROR`: one `FieldError` per failed rule.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 400 `MALFORMED_JSON`: the body is not a JSON object.
    #[error("request body is not a valid JSON object")]
    MalformedJson,
    /// 401 `INVALID_CREDENTIALS`: unknown email or wrong password (never says which).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 401 `TOKEN_MISSING`: no token was presented.
    #[error("authentication token is missing")]
    TokenMissing,
    /// 401 `TOKEN_MISSING`, said with the likely cause: no refresh token came, the refresh
    /// cookie is `Secure` (`cookie.secure`), and the request came over plain HTTP, where a
    /// browser never sends a `Secure` cookie.
    #[error("authentication token is missing: the refresh cookie is Secure (cookie.secure = true), so a browser sends it only over HTTPS, and this request came over plain HTTP")]
    TokenMissingOverHttp,
    /// 401 `TOKEN_INVALID`: malformed, wrongly signed, wrong type or wrong claims.
    #[error("token is invalid")]
    TokenInvalid,
    /// 401 `TOKEN_EXPIRED`.
    #[error("token has expired")]
    TokenExpired,
    /// 400 `TOKEN_INVALID`: a one-time token or ceremony id in a request body is unknown,
    /// used up or superseded (CONTRACT 10.2, 11.3).
    #[error("token is invalid or has been used")]
    OneTimeTokenInvalid,
    /// 400 `TOKEN_EXPIRED`: a one-time token or ceremony id in a request body has expired.
    #[error("token has expired")]
    OneTimeTokenExpired,
    /// 401 `TOKEN_REVOKED`: the token's session was revoked, or a refresh token was reused.
    #[error("token has been revoked")]
    TokenRevoked,
    /// 401 `MFA_REQUIRED` (CONTRACT 11.1): the password was right and the account has a
    /// second factor. The answer adds `mfaToken` (the token for `POST /api/auth/mfa/verify`),
    /// `methods` (`totp`, `recovery_code`, `webauthn`: what the account can use) and
    /// `expiresIn` (seconds the token lives).
    #[error("a second factor is required")]
    MfaRequired {
        mfa_token: String,
        methods: Vec<&'static str>,
        expires_in: u64,
    },
    /// 401 `MFA_INVALID`: a wrong, replayed or malformed second-factor code or assertion.
    #[error("the second-factor code is invalid")]
    MfaInvalid,
    /// 403 `ACCOUNT_DISABLED` (only said after the right password).
    #[error("account is disabled")]
    AccountDisabled,
    /// 403 `EMAIL_NOT_VERIFIED` (CONTRACT 10.4): with `email.require_verification`, a login of
    /// an account whose address is not verified yet (only said after the right password).
    #[error(
        "the email address is not verified yet: open the link mailed to it, or ask for a new one"
    )]
    EmailNotVerified,
    /// 403 `FORBIDDEN`: e.g. a cross-site request from an origin that is not allowed.
    #[error("forbidden")]
    Forbidden,
    /// 403 `FORBIDDEN` at `POST /api/auth/register` with `registration.enabled = false`: the
    /// message says why (accounts come from an administrator).
    #[error("registration is closed: accounts are made by an administrator")]
    RegistrationClosed,
    /// 404 `NOT_FOUND`.
    #[error("not found")]
    NotFound,
    /// 405 `METHOD_NOT_ALLOWED`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408 `REQUEST_TIMEOUT`: the request body did not arrive within
    /// `server.body_read_timeout` (RFC 9110 section 15.5.9); the connection is closed.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 409 `EMAIL_TAKEN`.
    #[error("email is already registered")]
    EmailTaken,
    /// 409 `MFA_ALREADY_ENABLED`: TOTP enrolment while TOTP is on.
    #[error("TOTP is already enabled")]
    MfaAlreadyEnabled,
    /// 413 `PAYLOAD_TOO_LARGE`.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 423 `ACCOUNT_LOCKED`, with the seconds until the lock ends.
    #[error("account is temporarily locked")]
    AccountLocked { retry_after_secs: u64 },
    /// 429 `RATE_LIMITED`, with the seconds until a new attempt may succeed.
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    /// 503 `SERVICE_UNAVAILABLE`: the database is busy, locked, full, read-only or unreachable.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500 `INTERNAL_ERROR`: the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// 500 `INTERNAL_ERROR` unless the service expected it: a write the database refused
    /// under a unique constraint (`StoreError::Conflict`), e.g. an address taken by another
    /// transaction between a service's check and its update. Services that can race so turn
    /// it into their own answer (`EMAIL_TAKEN`, a retry); anywhere else it is a bug, logged.
    #[error("unexpected conflict: {0}")]
    Conflict(String),
}

impl AppError {
    pub fn validation(field: &str, message: &str) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    /// The contract's stable error code for this variant.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Validation(_) => "VALIDATION_ERROR",
            AppError::MalformedJson => "MALFORMED_JSON",
            AppError::InvalidCredentials => "INVALID_CREDENTIALS",
            AppError::TokenMissing | AppError::TokenMissingOverHttp => "TOKEN_MISSING",
            AppError::TokenInvalid | AppError::OneTimeTokenInvalid => "TOKEN_INVALID",
            AppError::TokenExpired | AppError::OneTimeTokenExpired => "TOKEN_EXPIRED",
            AppError::TokenRevoked => "TOKEN_REVOKED",
            AppError::MfaRequired { .. } => "MFA_REQUIRED",
            AppError::MfaInvalid => "MFA_INVALID",
            AppError::MfaAlreadyEnabled => "MFA_ALREADY_ENABLED",
            AppError::AccountDisabled => "ACCOUNT_DISABLED",
            AppError::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            AppError::Forbidden | AppError::RegistrationClosed => "FORBIDDEN",
            AppError::NotFound => "NOT_FOUND",
            AppError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            AppError::RequestTimeout => "REQUEST_TIMEOUT",
            AppError::EmailTaken => "EMAIL_TAKEN",
            AppError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            AppError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            AppError::AccountLocked { .. } => "ACCOUNT_LOCKED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            AppError::Internal(_) | AppError::Conflict(_) => "INTERNAL_ERROR",
        }
    }

    /// The message a client may see. Internal causes are never included.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Validation(details) => format!(
                "validation failed: {}",
                details
                    .iter()
                    .map(|d| format!("{} {}", d.field, d.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            AppError::Unavailable(_) => "service temporarily unavailable, retry later".into(),
            AppError::Internal(_) | AppError::Conflict(_) => "internal server error".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => AppError::Unavailable(m),
            StoreError::Conflict(m) => AppError::Conflict(m),
            StoreError::Migration(m) => AppError::Internal(m),
            StoreError::Other(m) => AppError::Internal(m),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
