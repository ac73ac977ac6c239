//! The background service that keeps the key set fresh.
//!
//! It runs the refresh loop of the current runtime's key source on Pingora's
//! background runtime, so the first fetch starts at boot and later refreshes
//! happen before the keys' `max-age` runs out, without a request waiting.
//! When a config reload swaps in a runtime with another key source, the
//! reloader wakes this service, which drops the old loop and runs the new
//! source's loop instead.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use crate::runtime::SharedRuntime;

/// Runs the refresh loop of the current runtime's key source.
pub struct KeyRefresher {
    runtime: SharedRuntime,
    source_changed: Arc<Notify>,
}

impl KeyRefresher {
    /// Creates the refresher over the shared runtime.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self {
            runtime,
            source_changed: Arc::new(Notify::new()),
        }
    }

    /// Returns the signal to raise (`notify_one`) after storing a runtime
    /// whose key source differs from the one before.
    pub fn source_changed(&self) -> Arc<Notify> {
        self.source_changed.clone()
    }
}

#[async_trait]
impl BackgroundService for KeyRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        loop {
            // A notification raised between this load and the `select!`
            // leaves a permit, so a swap in that gap is not missed.
            let keys = self.runtime.load().authenticator.keys().clone();
            tokio::select! {
                () = keys.run_refresh_loop(shutdown.clone()) => return,
                () = self.source_changed.notified() => {
                    tracing::info!(url = %self.runtime.load().authenticator.keys().url(), "key refresh follows the reloaded key source");
                }
            }
        }
    }
}
