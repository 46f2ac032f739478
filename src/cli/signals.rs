//! Signals: Ctrl-C, SIGTERM or SIGHUP stop a run cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Ctrl-C, SIGTERM or SIGHUP (a closed terminal or SSH session): finish the
/// transactions in flight, then stop with the usual summary.
pub fn spawn_signal_watch(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(mut t), Ok(mut h)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = h.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        errln!(
            "\nStopping once the transactions in flight finish. What is written stays written; rerun the same command to resume."
        );
        stop.store(true, Ordering::SeqCst);
    })
}
