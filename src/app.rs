//! Wiring: builds the store, services and HTTP state from `Settings`, and runs the server
//! (with its background cleanup and mail worker) on a listener. The CLI and the integration tests use this.

use std::future::Future;
use std::sync::Arc;

use crate::blocking::blocking;
use crate::config::{ConfigError, Settings};
use crate::crypto::keys::KeyError;
use crate::error::AppError;
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::service::{self, Admin, Core, Sessions};
use crate::store::health::DbHealth;
use crate::store::{self, StoreError, StoreOptions};

/// Why authd could not start or finish a command.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{0}")]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What to do about the schema when opening the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Migrate if `database.auto_migrate`, else require an up-to-date schema.
    Ready,
    /// Leave it alone (the `migrate` command handles it).
    AsIs,
    /// Leave it alone, and open only a database that exists (a missing SQLite file is an
    /// error, not created): `authd doctor` changes nothing.
    Existing,
}

/// Opens the store and builds the shared service core.
pub async fn open_core(settings: Arc<Settings>, schema: Schema) -> Result<Arc<Core>, StartError> {
    let db = settings.database.clone();
    let metrics = Arc::new(Metrics::new());
    let connection_errors = metrics.database_connection_errors.clone();
    let health = DbHealth::new(move || connection_errors.inc());
    let options = StoreOptions {
        pool_size: db.pool_size,
        busy_timeout: db.busy_timeout,
        health: health.clone(),
    };
    let store = blocking(move || -> Result<_, StoreError> {
        let store = if schema == Schema::Existing {
            store::open_existing(&db.url, &options)?
        } else {
            store::open(&db.url, &options)?
        };
        match schema {
            Schema::AsIs | Schema::Existing => {}
            Schema::Ready if db.auto_migrate => {
                for m in store.migrate()? {
                    tracing::info!(version = m.version, name = %m.name, "applied migration");
                }
            }
            Schema::Ready => store.check_schema()?,
        }
        Ok(store)
    })
    .await??;
    Ok(Core::new(store, settings, metrics, health))
}

/// Loads the signing keys from the store (creating or importing them on the first start)
/// and builds the HTTP state.
pub async fn http_state(core: Arc<Core>) -> Result<HttpState, StartError> {
    let jwt = core.settings.jwt.clone();
    let store = core.store.clone();
    let (_, keys) = blocking(move || service::keys::ensure_and_load(&*store, &jwt)).await??;
    let sessions = Sessions::new(core.clone(), keys);
    let admin = Admin::new(core.clone());
    let state = HttpState::new(sessions, admin, core.settings.clone(), core.metrics.clone());
    state.budget.probe().await;
    Ok(state)
}

/// Runs the server on `listener` until `shutdown` resolves; then finishes in-flight requests
/// (up to `server.shutdown_grace`) and closes the database cleanly.
pub async fn serve(
    state: HttpState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let core = state.admin.core().clone();
    let warm = core.clone();
    tokio::spawn(async move { warm.passwords.warm_up().await });
    let cleanup = tokio::spawn(background_cleanup(state.clone()));
    let watch = tokio::spawn(watch_keys(state.clone()));
    let seal = tokio::spawn(service::audit_chain::seal_forever(core.clone()));
    let (stop_mail, mail_stopped) = tokio::sync::watch::channel(false);
    let mail = match service::Mail::new(core.clone()) {
        Ok(mail) => Some(tokio::spawn(mail.run(mail_stopped))),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the mail transport; no mail is sent");
            None
        }
    };
    let grace = state.settings.server.shutdown_grace;
    crate::http::server::serve(listener, state, shutdown).await;
    cleanup.abort();
    watch.abort();
    seal.abort();
    // The mail worker finishes the mails it holds (up to the shutdown grace); a mail cut off
    // keeps its lease, which runs out, and the next `serve` sends it.
    let _ = stop_mail.send(true);
    if let Some(mut mail) = mail {
        if tokio::time::timeout(grace, &mut mail).await.is_err() {
            mail.abort();
        }
    }
    // What the last requests (and the mail worker) wrote is sealed now rather than by the next
    // start (briefly: a database that does not answer leaves it to the next start, and says so
    // only when it is not an outage `Core::db` has already reported).
    match tokio::time::timeout(FINAL_SEAL, core.seal_audit()).await {
        Ok(Ok(_)) | Ok(Err(AppError::Unavailable(_))) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot seal the last audit events"),
        Err(_) => tracing::info!("the last audit events are left for the next start to seal"),
    }
    let store = core.store.clone();
    let _ = blocking(move || store.close()).await;
    tracing::info!("stopped; database closed");
}

/// How long a stopping server spends sealing the last audit events.
const FINAL_SEAL: std::time::Duration = std::time::Duration::from_secs(3);

/// Prunes expired and revoked tokens every `cleanup.interval`.
async fn background_cleanup(state: HttpState) {
    let period = state.settings.cleanup.interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticker.tick().await;
        state.prune_limiter();
        match state.admin.cleanup(false).await {
            Ok(c) if c.stopped_early => tracing::info!(
                refresh_tokens = c.refresh_tokens,
                sessions = c.sessions,
                login_failures = c.login_failures,
                "background cleanup stopped early: another instance is cleaning up"
            ),
            Ok(c) => tracing::info!(
                refresh_tokens = c.refresh_tokens,
                sessions = c.sessions,
                login_failures = c.login_failures,
                "background cleanup"
            ),
            Err(e) => tracing::warn!(error = %e, "background cleanup failed"),
        }
        match state.admin.prune_audit(false).await {
            Ok(Some(n)) if n > 0 => tracing::info!(audit_events = n, "audit retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit retention failed"),
        }
    }
}

/// How often a running server reads the key set's generation (a rotation or revocation by
/// any process is in effect here within this long, plus one load).
pub const KEY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls the store's key-set generation every `KEY_POLL` and swaps in the new key set when it
/// moved (signing, verification and the JWKS then use it). Verification itself never reads
/// the store. A failed load is logged and retried at the next poll; the current keys stay.
async fn watch_keys(state: HttpState) {
    let core = state.admin.core().clone();
    let mut seen: Option<i64> = None;
    let mut ticker = tokio::time::interval(KEY_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let version = core.db(|s| s.key_set_version()).await;
        let version = match version {
            Ok(v) => v,
            // Unavailable: `Core::db` has logged the outage once; the next poll tries again.
            Err(AppError::Unavailable(_)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the signing key set's generation");
                continue;
            }
        };
        if seen == Some(version) {
            continue;
        }
        let jwt = core.settings.jwt.clone();
        let store = core.store.clone();
        match blocking(move || service::keys::load_keys(&*store, &jwt)).await {
            Ok(Ok((generation, keys))) => {
                state.sessions.replace_keys(&keys);
                if seen.is_some() {
                    tracing::info!(
                        generation,
                        kid = state.sessions.signing_kid().unwrap_or_default(),
                        "signing key set reloaded"
                    );
                }
                seen = Some(generation);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload the signing key set"),
            Err(e) => tracing::warn!(error = %e, "cannot reload the signing key set"),
        }
    }
}
