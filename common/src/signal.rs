//! Signals for every daemon: graceful shutdown on SIGINT or SIGTERM (`run(.., shutdown)`), and
//! SIGHUP to reload what can be reloaded without a restart (the dispatcher's certificate).

/// Completes when the process receives SIGINT or SIGTERM.
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
        _ = terminate.recv() => tracing::info!("received SIGTERM"),
    }
}

/// The SIGHUPs this process receives, one `recv` each (`systemctl reload` sends one).
///
/// # Errors
/// When the signal cannot be watched (no runtime with signal support).
pub fn reloads() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}
