//! CLI: `authd serve`.

use std::sync::Arc;

use super::CliError;
use crate::app::{self, Schema, StartError};
use crate::config::Settings;

pub async fn run(settings: Arc<Settings>) -> Result<(), CliError> {
    // Bind first: a busy port is reported before anything is created on disk (the data
    // directory, the database, its migrations, the signing keys).
    let addr = settings.server.bind;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let core = app::open_core(settings.clone(), Schema::Ready).await?;
    let state = app::http_state(core).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    // Before anything says authd is up: a SIGTERM right after the line below (or after
    // systemd's READY) must find its handler, not the signal's default action.
    let shutdown = shutdown_signal();
    tracing::info!(addr = %bound, "authd listening on http://{bound}");
    let (stop_metrics, metrics) = serve_metrics(&settings, &state).await?;
    // Readiness for systemd's Type=notify (a no-op without NOTIFY_SOCKET).
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    app::serve(state, listener, async {
        shutdown.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_metrics.send(true);
    })
    .await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    Ok(())
}

/// Binds `metrics.bind` when it is set and serves `/metrics` there until the returned sender
/// says stop (the main listener's shutdown). A busy or unusable address is a start error.
async fn serve_metrics(
    settings: &Settings,
    state: &crate::http::HttpState,
) -> Result<
    (
        tokio::sync::watch::Sender<bool>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    CliError,
> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let Some(addr) = settings.metrics.bind else {
        return Ok((stop, None));
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "metrics served on http://{bound}/metrics");
    let task = tokio::spawn(crate::http::metrics_listener::serve(
        listener,
        state.clone(),
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    Ok((stop, Some(task)))
}

/// A future that resolves on SIGTERM or SIGINT. The handlers are registered here, when it
/// is made, not when it is first polled; a handler that cannot be registered never fires.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = received(interrupt.as_mut()) => tracing::info!("SIGINT received"),
            () = received(terminate.as_mut()) => tracing::info!("SIGTERM received"),
        }
    }
}

/// Resolves when `signal` arrives; never, if its handler could not be registered.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => drop(s.recv().await),
        None => std::future::pending().await,
    }
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("SIGINT received");
    }
}
