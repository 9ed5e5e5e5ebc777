//! HTTP layer: health, readiness, JWKS and metrics.

use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::Rejection;

use super::{bare, text};
use crate::http::HttpState;

pub async fn healthz() -> Result<Response, Rejection> {
    Ok(bare(StatusCode::OK, json!({"status": "ok"})))
}

pub async fn readyz(state: HttpState) -> Result<Response, Rejection> {
    Ok(match state.admin.ready().await {
        Ok(()) => bare(StatusCode::OK, json!({"status": "ready"})),
        Err(e) => {
            // A probe every second or so: the outage is logged once (`service::Core::db`).
            tracing::debug!(error = %e, "not ready");
            let mut resp = bare(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable"}),
            );
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            resp
        }
    })
}

pub async fn jwks(state: HttpState) -> Result<Response, Rejection> {
    Ok(bare(StatusCode::OK, state.sessions.jwks()))
}

pub async fn metrics(state: HttpState) -> Result<Response, Rejection> {
    let body = state.admin.metrics().await;
    Ok(text(body, "text/plain; version=0.0.4; charset=utf-8"))
}
