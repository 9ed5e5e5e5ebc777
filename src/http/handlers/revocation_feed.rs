//! HTTP layer: `GET /.well-known/revoked-sessions[?since=<cursor>]`, the revoked-session feed
//! (contract 12.1): a bare object, cacheable for `pollAfter` seconds.

use std::collections::HashMap;

use http::header::{HeaderValue, CACHE_CONTROL};
use http::StatusCode;
use serde_json::json;
use warp::reply::Response;
use warp::Rejection;

use super::bare;
use crate::http::HttpState;

/// 200 `{"revoked": [{"sid", "exp"}], "cursor", "pollAfter"}` with
/// `Cache-Control: public, max-age=<pollAfter>`; 400 `VALIDATION_ERROR` (field `since`) for a
/// malformed, too old or unknown cursor; 404 `NOT_FOUND` when the feed is off.
pub async fn feed(state: HttpState, query: HashMap<String, String>) -> Result<Response, Rejection> {
    let answer = state
        .feed
        .read(query.get("since").map(String::as_str))
        .await?;
    let revoked: Vec<_> = answer
        .revoked
        .iter()
        .map(|e| json!({"sid": e.sid.to_string(), "exp": e.exp}))
        .collect();
    let mut resp = bare(
        StatusCode::OK,
        json!({"revoked": revoked, "cursor": answer.cursor, "pollAfter": answer.poll_after}),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", answer.poll_after)) {
        resp.headers_mut().insert(CACHE_CONTROL, v);
    }
    Ok(resp)
}
