//! The background service that keeps the key set fresh.
//!
//! It runs the key source's refresh loop on Pingora's background runtime, so
//! the first fetch starts at boot and later refreshes happen before the keys'
//! `max-age` runs out, without a request waiting.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::runtime::SharedRuntime;

/// Runs the refresh loop of the current runtime's key source.
pub struct KeyRefresher {
    runtime: SharedRuntime,
}

impl KeyRefresher {
    /// Creates the refresher over the shared runtime.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self { runtime }
    }
}

#[async_trait]
impl BackgroundService for KeyRefresher {
    async fn start(&self, shutdown: ShutdownWatch) {
        // NOTE: the loop keeps the key source it started with. A runtime
        // swapped in later must reuse that source (same key set URL) or start
        // its own loop.
        let keys = self.runtime.load().authenticator.keys().clone();
        keys.run_refresh_loop(shutdown).await;
    }
}
