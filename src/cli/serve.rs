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
    tracing::info!(addr = %bound, "authd listening on http://{bound}");
    let (stop_metrics, metrics) = serve_metrics(&settings, &state).await?;
    // Readiness for systemd's Type=notify (a no-op without NOTIFY_SOCKET).
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    app::serve(state, listener, async {
        shutdown_signal().await;
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

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
