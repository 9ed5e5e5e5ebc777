//! HTTP layer: filters that extract and validate (client, body, tokens, origin). No
//! business decisions, no store access.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures_util::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, ORIGIN, USER_AGENT};
use http::HeaderMap;
use warp::{Filter, Rejection};

use super::dto::{FromJson, JsonObject};
use super::HttpState;
use crate::config::ServerSettings;
use crate::domain::{validate, ClientInfo};
use crate::error::AppError;
use crate::service::{Acting, Presented, Principal};

/// Set on every request by the server before routing (as an `Arc`, so each filter that reads
/// the headers shares one copy of them).
#[derive(Debug)]
pub struct RequestMeta {
    pub client_ip: IpAddr,
    pub headers: HeaderMap,
    /// The request came over plain HTTP (`server::plain_http`).
    pub plain_http: bool,
}

/// The request's metadata; every route runs behind `server::serve`, which sets it.
fn request() -> impl Filter<Extract = (Arc<RequestMeta>,), Error = Rejection> + Clone {
    warp::ext::get::<Arc<RequestMeta>>()
}

/// The client's IP (proxy-aware, see `server::client_ip`) and User-Agent (bounded and
/// cleaned by `validate::user_agent`).
pub fn client() -> impl Filter<Extract = (ClientInfo,), Error = Rejection> + Clone {
    request().map(|req: Arc<RequestMeta>| ClientInfo {
        ip: Some(req.client_ip.to_string()),
        user_agent: req
            .headers
            .get(USER_AGENT)
            .map(|ua| validate::user_agent(ua.as_bytes())),
    })
}

/// The single value of header `name`, `None` without one, and `Err` when the request carries
/// it more than once: a header that decides who the caller is (`Authorization`), where a
/// request may go (`Origin`, `Host`) or how its body is read (`Content-Type`) is never taken
/// "first one wins".
fn single<'a>(
    headers: &'a HeaderMap,
    name: &http::header::HeaderName,
) -> Result<Option<&'a http::HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        None => Ok(first),
        Some(_) => Err(()),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any; `TokenInvalid` when the
/// request carries two `Authorization` headers (which one names the caller is not for a proxy
/// or a client library's ordering to decide).
fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = single(headers, &AUTHORIZATION).map_err(|()| AppError::TokenInvalid)? else {
        return Ok(None);
    };
    let Ok(value) = value.to_str() else {
        return Ok(None);
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    Ok(scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string()))
}

/// A verified access token whose session is live.
pub fn authenticated(
    state: HttpState,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    request().and_then(move |req: Arc<RequestMeta>| {
        let state = state.clone();
        async move {
            let token = bearer_token(&req.headers)?;
            state
                .sessions
                .authenticate(token.as_deref())
                .await
                .map_err(Rejection::from)
        }
    })
}

/// An admin's verified access token (any other role, or with `mfa.required_for_admins` a
/// session opened without a second factor: 403 `FORBIDDEN`), with the client it acts from.
pub fn acting_admin(
    state: HttpState,
) -> impl Filter<Extract = (Acting,), Error = Rejection> + Clone {
    authenticated(state.clone()).and(client()).and_then(
        move |who: Principal, client: ClientInfo| {
            let acting = state.accounts.acting_admin(&who, client);
            async move { acting.map_err(Rejection::from) }
        },
    )
}

/// Whether the request came over plain HTTP (`server::plain_http`).
pub fn plain_http() -> impl Filter<Extract = (bool,), Error = Rejection> + Clone {
    request().map(|req: Arc<RequestMeta>| req.plain_http)
}

/// The refresh cookie as the request carries it: see `refresh_cookie_of`.
pub fn refresh_cookie(
    name: Arc<str>,
) -> impl Filter<Extract = (Presented,), Error = Rejection> + Clone {
    request().map(move |req: Arc<RequestMeta>| refresh_cookie_of(&req.headers, &name))
}

/// The cookie `name` across every `Cookie` header and every pair in each: `Missing` when no
/// pair has that name (or its one value is empty), `One` for exactly one, `Ambiguous` for two
/// or more, whatever their values (a browser sends two when a sibling subdomain planted one
/// with `Domain=` next to ours, and neither order nor value tells which is ours).
///
/// Names are compared as RFC 6265 section 5.2 has browsers store them: white space around
/// the name is trimmed, and otherwise byte for byte. A name differing in case or written with
/// percent-escapes is another cookie to the browser and so to authd: it is never read, so it
/// cannot stand in for ours. Pairs are split as bytes, so a value that is not visible ASCII
/// still counts (and, alone, is simply an invalid token).
pub fn refresh_cookie_of(headers: &HeaderMap, name: &str) -> Presented {
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| &pair[eq + 1..])
        })
        .map(|v| {
            String::from_utf8_lossy(v.trim_ascii())
                .trim_matches('"')
                .to_string()
        });
    match (values.next(), values.next()) {
        (None, _) => Presented::Missing,
        (Some(_), Some(_)) => Presented::Ambiguous,
        (Some(v), None) if v.is_empty() => Presented::Missing,
        (Some(v), None) => Presented::One(v),
    }
}

fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("");
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        p.is_empty()
            || p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
    })
}

/// Oversized bodies up to this size are read and discarded before the 413 is sent, so that a
/// client still uploading gets the 413 rather than a reset connection. Larger ones are refused
/// at once.
const DRAIN_CAP: u64 = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain<B: Buf>(
    body: &mut (impl futures_util::Stream<Item = Result<B, warp::Error>> + Unpin),
    mut seen: u64,
) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while seen <= DRAIN_CAP {
            match body.next().await {
                Some(Ok(chunk)) => seen += chunk.remaining() as u64,
                _ => break,
            }
        }
    })
    .await;
}

/// Reads at most `limit` bytes of body; 413 past that, whatever `Content-Length` claims.
async fn read_body<B: Buf>(
    headers: &HeaderMap,
    mut body: impl futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    limit: u64,
) -> Result<Vec<u8>, AppError> {
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            if len <= DRAIN_CAP {
                drain(&mut body, 0).await;
            }
            return Err(AppError::PayloadTooLarge);
        }
    }
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| AppError::MalformedJson)?;
        let seen = buf.len() as u64 + chunk.remaining() as u64;
        if seen > limit {
            drain(&mut body, seen).await;
            return Err(AppError::PayloadTooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf)
}

/// What a request body may cost: `server.body_limit` bytes, arriving within
/// `server.body_read_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub read_timeout: Duration,
}

impl BodyLimits {
    pub fn of(server: &ServerSettings) -> Self {
        BodyLimits {
            max_bytes: server.body_limit,
            read_timeout: server.limits.body_read_timeout,
        }
    }
}

/// A JSON object body of type `T`: `Content-Type: application/json` (415), at most the body
/// limit (413), arrived whole within the body read timeout (408 `REQUEST_TIMEOUT`, counted
/// from the first poll of the body, so a client trickling a byte at a time cannot hold the
/// connection), one object with unique keys (400 `MALFORMED_JSON`), documented fields only.
/// With `allow_empty`, an empty body (any or no content type) reads as `{}`.
pub fn json_body<T: FromJson + Send + 'static>(
    limits: BodyLimits,
    allow_empty: bool,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    request()
        .and(warp::body::stream())
        .and_then(move |req: Arc<RequestMeta>, body| async move {
            let headers = &req.headers;
            // Two `Content-Type`s: which one describes the body is not ours to guess.
            let content_type = single(headers, &CONTENT_TYPE)
                .map_err(|()| Rejection::from(AppError::UnsupportedMediaType))?
                .and_then(|v| v.to_str().ok());
            let declared_empty = headers
                .get(CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
            if !content_type.is_some_and(is_json)
                && !(allow_empty && (declared_empty || content_type.is_none()))
            {
                return Err(Rejection::from(AppError::UnsupportedMediaType));
            }
            let bytes = tokio::time::timeout(
                limits.read_timeout,
                read_body(headers, Box::pin(body), limits.max_bytes),
            )
            .await
            .map_err(|_| AppError::RequestTimeout)??;
            if allow_empty && bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::from_json(&JsonObject::empty())?);
            }
            if !content_type.is_some_and(is_json) {
                return Err(Rejection::from(AppError::UnsupportedMediaType));
            }
            let obj = JsonObject::parse(&bytes)?;
            Ok(T::from_json(&obj)?)
        })
}

/// Refuses a request whose `Origin` is neither the server's own nor an allowed CORS origin,
/// and one with two `Origin` headers (a browser sends one; which of two to trust is no one's
/// to decide). Two `Host` headers never make an origin the server's own.
pub fn same_origin_or_allowed(
    state: HttpState,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    request()
        .and_then(move |req: Arc<RequestMeta>| {
            let state = state.clone();
            async move {
                let headers = &req.headers;
                let Some(origin) =
                    single(headers, &ORIGIN).map_err(|()| Rejection::from(AppError::Forbidden))?
                else {
                    return Ok(());
                };
                let origin = origin.to_str().unwrap_or("");
                let own = single(headers, &HOST)
                    .ok()
                    .flatten()
                    .and_then(|h| h.to_str().ok())
                    .is_some_and(|host| {
                        origin == format!("http://{host}") || origin == format!("https://{host}")
                    });
                if own || state.origin_allowed(origin) {
                    Ok(())
                } else {
                    Err(Rejection::from(AppError::Forbidden))
                }
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/json; charset=latin1",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn bearer() {
        let token = |h: &HeaderMap| bearer_token(h).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(token(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(token(&h).as_deref(), Some("abc"));
        h.insert(AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(token(&h).as_deref(), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(token(&h), None);
        h.append(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(matches!(bearer_token(&h), Err(AppError::TokenInvalid)));
    }

    #[test]
    fn refresh_cookies() {
        let of = |headers: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in headers {
                h.append(COOKIE, http::HeaderValue::from_bytes(v).unwrap());
            }
            refresh_cookie_of(&h, "authd_refresh")
        };
        let one = |v: &str| Presented::One(v.to_string());
        assert_eq!(of(&[]), Presented::Missing);
        assert_eq!(of(&[b"other=1"]), Presented::Missing);
        assert_eq!(of(&[b"authd_refresh="]), Presented::Missing);
        assert_eq!(of(&[b"a=1; authd_refresh=t; b=2"]), one("t"));
        assert_eq!(of(&[b"authd_refresh=\"t\""]), one("t"));
        assert_eq!(of(&[b" authd_refresh = t "]), one("t"));
        // Other cookies to a browser, so never ours.
        assert_eq!(
            of(&[b"AUTHD_REFRESH=x; authd%5Frefresh=y; authd_refresh=t"]),
            one("t")
        );
        for ambiguous in [
            &[&b"authd_refresh=a; authd_refresh=b"[..]][..],
            &[b"authd_refresh=a", b"authd_refresh=b"],
            &[b"authd_refresh=a; authd_refresh="],
            &[b"authd_refresh=", b"authd_refresh=a"],
            &[b"authd_refresh=a", b"x=1; authd_refresh =a"],
            &[b"authd_refresh=a", b"authd_refresh=\xff"],
        ] {
            assert_eq!(of(ambiguous), Presented::Ambiguous, "{ambiguous:?}");
        }
    }
}
