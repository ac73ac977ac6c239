//! Early exit from a graceful stop.
//!
//! On SIGTERM, and on SIGQUIT once the listening sockets went to the new
//! process, Pingora 0.9 stops accepting connections and closes idle
//! keep-alive connections. Then it sleeps for the whole
//! `grace_period_seconds` before it stops its runtimes, even when no request
//! is left. This service watches the same shutdown signal and ends the
//! process with status 0 as soon as no proxied request is in flight, so a
//! stop lasts as long as the slowest request instead of always the whole
//! grace period. Requests still running when the grace period ends are
//! cancelled by Pingora, not here.
//!
//! Requests on the admin listener are not counted.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::logging;
use crate::metrics;

/// Interval between two looks at the in-flight count.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Consecutive looks that must find no request in flight before the exit.
///
/// A request whose header was read just before the shutdown signal may not
/// be counted yet at the first look, so one more look follows 50 ms later.
const IDLE_POLLS_BEFORE_EXIT: u32 = 2;

/// Ends the process once a graceful stop has no request left to wait for.
pub struct DrainWatch {
    grace_period: Duration,
}

impl DrainWatch {
    /// Creates the watch for a stop that may last `grace_period`.
    pub fn new(grace_period: Duration) -> Self {
        Self { grace_period }
    }
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }

        let deadline = Instant::now() + self.grace_period;
        tracing::info!(
            in_flight = metrics::requests_in_flight(),
            grace_period_seconds = self.grace_period.as_secs(),
            "graceful stop: no new connections; waiting for the requests in flight"
        );
        let mut idle_polls = 0;
        while Instant::now() < deadline {
            if metrics::requests_in_flight() == 0 {
                idle_polls += 1;
            } else {
                idle_polls = 0;
            }
            if idle_polls >= IDLE_POLLS_BEFORE_EXIT {
                tracing::info!("graceful stop: no request in flight; exiting");
                logging::flush();
                std::process::exit(0);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        tracing::warn!(
            in_flight = metrics::requests_in_flight(),
            "graceful stop: the grace period is over; the requests still in flight are cancelled"
        );
    }
}
