//! HTTP layer: the accept loop and the per-request wrapper around the routes. The wrapper
//! assigns the request id, works out the client IP, answers CORS preflights, adds the
//! security headers to every response, records metrics and logs one line per request.

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ALLOW, CACHE_CONTROL, ORIGIN, SERVER,
    STRICT_TRANSPORT_SECURITY, VARY,
};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use tower_service::Service;
use tracing::Instrument;
use warp::reply::Response;

use super::connections::{PerIpConnections, WriteDeadline};
use super::filters::RequestMeta;
use super::{reject, routes, HttpState, ROUTES};
use crate::config::Settings;
use crate::domain::ip;
use crate::episode::Episode;
use crate::error::AppError;
use crate::metrics;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long the accept loop pauses after accepting failed for want of a resource (most
/// often: no file descriptor left), so it does not spin while connections close.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests up to
/// `server.shutdown_grace` to finish.
///
/// Each connection is bounded (`config::ConnectionLimits`): its client's open connections
/// (`server.max_connections_per_ip`: one more is closed at once), the time its request heads
/// and idle gaps may take (`server.header_read_timeout`: closed), the time a body may take
/// (`server.body_read_timeout`: 408, see `filters::json_body`) and the time a write may wait
/// for the client to read (`server.write_timeout`: closed). A refused connection and a failed
/// accept are counted in `/metrics` and logged once per episode (`episode::Episode`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()>,
) {
    let service = warp::service(routes(state.clone()));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let limits = state.settings.server.limits;
    let per_ip = PerIpConnections::new(limits.max_connections_per_ip);
    let (mut accept_failing, mut refusing) = (Episode::default(), Episode::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // The client gave up before we took its connection: nothing is wrong here.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
                ) => continue,
                Err(e) => {
                    state.metrics.accept_errors.inc();
                    if accept_failing.occurred() {
                        tracing::warn!(
                            error = %e,
                            "cannot accept connections (out of file descriptors?); retrying \
                             every 100 ms, counted in authd_accept_errors_total, logged again \
                             only after 10 s without such an error"
                        );
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let key = connection_key(peer.ip(), &state.settings);
        let exempt = state
            .settings
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip::canonical(peer.ip())));
        let Some(slot) = per_ip.admit(key, exempt) else {
            state.metrics.connections_refused.inc();
            if refusing.occurred() {
                tracing::warn!(
                    client_ip = %key,
                    max = limits.max_connections_per_ip,
                    "closing new connections from a client over server.max_connections_per_ip; \
                     counted in authd_connections_refused_total, logged again only after 10 s \
                     without a refusal"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let service = service.clone();
            async move { Ok::<_, Infallible>(handle(&state, service, req, peer).await) }
        });
        // hyper's header timer also runs while a kept-alive connection waits for its next
        // request, so it bounds idle connections too.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(
                TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
                handler,
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let grace = state.settings.server.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed; dropping the remaining connections");
    }
}

/// The address a connection counts against for `server.max_connections_per_ip`: the socket
/// peer, keyed like the per-IP limits (`domain::ip::rate_key`: IPv4-mapped as IPv4, IPv6 by
/// its `rate_limit.ipv6_prefix` network, so one host cannot spread over its /64).
fn connection_key(peer: IpAddr, settings: &Settings) -> IpAddr {
    ip::rate_key(peer, settings.rate_limit.ipv6_prefix)
}

/// A sane incoming request id is echoed; anything else is replaced.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Whether the request came over plain HTTP. authd has no TLS listener, so a direct
/// connection (the peer is not in `trusted`) is plain HTTP; from a trusted proxy, its
/// `X-Forwarded-Proto` is believed (the first value; anything but `https` is plain).
pub fn plain_http(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> bool {
    let peer = ip::canonical(peer);
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return true;
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    !proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The peer, or when the peer is a trusted proxy, the right-most untrusted address of
/// `X-Forwarded-For`. Every address (the peer, each hop) is taken in its canonical form, so an
/// IPv4-mapped `::ffff:a.b.c.d` is `a.b.c.d` when matched against `trusted` (whose mapped
/// entries config made IPv4) and in the result, which sessions, audit, logs and the limits
/// all use.
pub fn client_ip(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = ip::canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        // A value that is not visible ASCII is one unparsable hop (the walk stops there), not
        // a header skipped so that the hops left of it move right.
        .map(|v| v.to_str().unwrap_or("?"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(ip::canonical) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The route template used as a metrics label (never the raw path).
fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .map(|(_, template)| *template)
        .find(|template| matches_template(template, path))
        .unwrap_or("unmatched")
}

/// The methods `path` answers, for the `Allow` header of a 405 (RFC 9110 section 15.5.6).
fn allowed_methods(path: &str) -> Option<String> {
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, template)| matches_template(template, path))
        .map(|(method, _)| *method)
        .collect();
    (!methods.is_empty()).then(|| methods.join(", "))
}

/// Whether `path` fits `template`, where a `{param}` segment matches one non-empty segment.
fn matches_template(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return false;
                }
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return false,
        }
    }
}

pub(super) async fn handle<S>(
    state: &HttpState,
    mut service: S,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    let start = Instant::now();
    let method = req.method().clone();
    // Bounded: the raw method is any token the client likes (metrics.rs).
    let method_label = metrics::method_label(&method);
    let path = req.uri().path().to_string();
    let route = route_label(&path);
    let request_id = request_id(&req);
    let client_ip = client_ip(
        peer.ip(),
        req.headers(),
        &state.settings.server.trusted_proxies,
    );
    let origin = req
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let span =
        tracing::info_span!("request", request_id = %request_id, method = method_label, route);

    let mut resp =
        if method == Method::OPTIONS && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            preflight(state, origin.as_deref())
        } else if let Err(e) = spend_budget(state, &path, client_ip).await {
            span.in_scope(|| reject::error_response(&e))
        } else {
            let meta = RequestMeta {
                client_ip,
                headers: req.headers().clone(),
                plain_http: plain_http(
                    peer.ip(),
                    req.headers(),
                    &state.settings.server.trusted_proxies,
                ),
            };
            req.extensions_mut().insert(Arc::new(meta));
            match service.call(req).instrument(span.clone()).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        };
    decorate(&mut resp, state, &path, &request_id, origin.as_deref());

    let status = resp.status();
    let elapsed = start.elapsed();
    let labels = [route, method_label, status.as_str()];
    state.metrics.http_requests.with_label_values(&labels).inc();
    state
        .metrics
        .http_duration
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            client_ip = %client_ip,
            "request completed"
        )
    });
    resp
}

/// The per-IP request budget covers every request under `/api/auth/` (matched or not).
async fn spend_budget(state: &HttpState, path: &str, ip: IpAddr) -> Result<(), AppError> {
    if path.starts_with("/api/auth/") || path == "/api/auth" {
        state.spend_request_budget(ip).await
    } else {
        Ok(())
    }
}

/// Answers a CORS preflight: allowed origins get the CORS headers, others a 403 without them.
fn preflight(state: &HttpState, origin: Option<&str>) -> Response {
    match origin {
        Some(o) if state.origin_allowed(o) => {
            let mut resp = Response::new(Default::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            let h = resp.headers_mut();
            h.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
            h.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type, X-Request-Id"),
            );
            h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            resp
        }
        _ => reject::error_response(&AppError::Forbidden),
    }
}

/// Headers every response carries, errors and 404s included.
fn decorate(
    resp: &mut Response,
    state: &HttpState,
    path: &str,
    request_id: &str,
    origin: Option<&str>,
) {
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(v) = allowed_methods(path).and_then(|m| HeaderValue::from_str(&m).ok()) {
            resp.headers_mut().insert(ALLOW, v);
        }
    }
    let h = resp.headers_mut();
    // The landing pages (`handlers::pages`) set a policy of their own that lets them load
    // their script and style sheet from this origin; every other response gets the API's.
    h.entry(HeaderName::from_static("content-security-policy"))
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    let fixed: [(HeaderName, &'static str); 5] = [
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("x-frame-options"), "DENY"),
        (HeaderName::from_static("referrer-policy"), "no-referrer"),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (SERVER, "authd"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    // Admin responses carry accounts: never cached either.
    if path.starts_with("/api/auth/") || path == "/api/auth" || path.starts_with("/api/admin/") {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            HeaderName::from_static("pragma"),
            HeaderValue::from_static("no-cache"),
        );
    }
    if state.settings.server.hsts {
        h.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    h.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(o) = origin.filter(|o| state.origin_allowed(o)) {
        if let Ok(v) = HeaderValue::from_str(o) {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("X-Request-Id, Retry-After, WWW-Authenticate"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.1.1".parse().unwrap(),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "198.51.100.7");
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(untrusted, &h, &trusted), untrusted);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        // Several headers are one list, in order; a header that is not visible ASCII is an
        // unparsable hop where the walk stops, not a header skipped.
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.7".parse().unwrap());
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "198.51.100.7");
        let mut h = http::HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "10.1.1.1");
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4_everywhere() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = vec!["127.0.0.1/32".parse::<IpNet>().unwrap()];
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "::ffff:203.0.113.9".parse().unwrap());
        // A dual-stack listener's IPv4 peer matches an IPv4 entry; the hop is IPv4 too.
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &h, &trusted),
            ip("203.0.113.9")
        );
        // An untrusted mapped peer is reported as IPv4.
        assert_eq!(
            client_ip(ip("::ffff:192.0.2.1"), &h, &trusted),
            ip("192.0.2.1")
        );
        // A mapped trusted hop is skipped like its IPv4 form.
        h.insert(
            "x-forwarded-for",
            "198.51.100.7, ::ffff:127.0.0.1".parse().unwrap(),
        );
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn route_labels_never_carry_ids() {
        assert_eq!(
            route_label("/api/auth/sessions/abc"),
            "/api/auth/sessions/{id}"
        );
        assert_eq!(route_label("/api/auth/login"), "/api/auth/login");
        assert_eq!(route_label("/wp-admin"), "unmatched");
    }
}
