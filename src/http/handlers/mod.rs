//! HTTP layer: handlers turn a validated request into one service call and shape the reply.

pub mod admin;
pub mod auth;
pub mod email_change;
pub mod meta;
pub mod mfa;
pub mod pages;
pub mod passkeys;
pub mod passwords;
pub mod revocation_feed;
pub mod self_service;
pub mod sessions;

use http::header::{HeaderValue, CONTENT_TYPE, SET_COOKIE};
use http::StatusCode;
use serde_json::{json, Map, Value};
use warp::reply::Response;
use warp::Reply;

/// `{"success": true, "data": ...}` with `status`.
pub fn envelope(status: StatusCode, data: Value) -> Response {
    warp::reply::with_status(
        warp::reply::json(&json!({"success": true, "data": data})),
        status,
    )
    .into_response()
}

/// `{"success": true, "message": ..., "data": ...}`.
pub fn envelope_with_message(message: &str, data: Map<String, Value>) -> Response {
    warp::reply::json(&json!({"success": true, "message": message, "data": data})).into_response()
}

/// A bare JSON object (health, JWKS).
pub fn bare(status: StatusCode, body: Value) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

pub fn with_cookie(mut resp: Response, cookie: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

pub fn text(body: String, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
