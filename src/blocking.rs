//! Runs blocking work (SQLite, bcrypt) on tokio's blocking pool, never on the reactor.

use crate::error::{AppError, AppResult};

/// Runs `f` on the blocking pool; a panic inside is re-raised in the caller.
pub async fn blocking<T, F>(f: F) -> AppResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(AppError::Internal(format!("blocking task cancelled: {e}"))),
    }
}
