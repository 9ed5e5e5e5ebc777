//! HTTP layer: the separate `/metrics` listener (`metrics.bind`). When it is configured,
//! `/metrics` is served only here and the main listener answers it 404 (`routes`), so the
//! metrics can stay on a private interface while `server.bind` faces clients.

use std::convert::Infallible;
use std::future::Future;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use super::handlers::meta;
use super::{reject, server, HttpState};

/// The routes of the metrics listener: `GET /metrics`, anything else 404 `NOT_FOUND`.
fn metrics_routes(state: HttpState) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::any().map(move || state.clone()))
        .and_then(meta::metrics)
        .recover(reject::recover)
        .unify()
        .boxed()
}

/// Serves `/metrics` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (up to `server.shutdown_grace`). Each request goes through the same wrapper as the
/// main listener (request id, security headers, request log), and each connection's head
/// is bounded by `server.header_read_timeout`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()>,
) {
    let service = warp::service(metrics_routes(state.clone()));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let limits = state.settings.server.limits;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(server::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let state = state.clone();
        let service = service.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let service = service.clone();
            async move { Ok::<_, Infallible>(server::handle(&state, service, req, peer).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(state.settings.server.shutdown_grace, graceful.shutdown()).await;
}
