//! The state every request reads: routes and authentication, built from one
//! validated config.
//!
//! The proxy keeps it behind an `ArcSwap` and loads it once per request, so
//! a new config can replace it atomically while requests in flight finish
//! with the one they started with. Listener addresses and thread counts are
//! not part of it: they cannot change without a restart.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::auth::jwks::KeySource;
use crate::config::Config;
use crate::forwarding::TrustedProxies;
use crate::identity::IdentityHeaders;
use crate::metrics::RouteMetrics;
use crate::routing::Router;

/// Routes and authentication settings of one config generation.
pub struct Runtime {
    /// Route table.
    pub router: Router,
    /// Request counters and latency histograms, indexed like `router`.
    pub route_metrics: RouteMetrics,
    /// Token checking.
    pub authenticator: Authenticator,
    /// Header names only the proxy may set.
    pub identity_headers: IdentityHeaders,
    /// Cookie read when no `Authorization` header is sent.
    pub cookie_name: String,
    /// Whether the upstream gets the token on routes that read it.
    pub forward_token: bool,
    /// Peers whose forwarding headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// Idle time allowed on a client's keep-alive connection, in seconds.
    pub keepalive_timeout_seconds: u64,
}

/// The runtime as shared between the proxy, the admin listener and the key
/// refresher.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

impl Runtime {
    /// Builds the runtime for `config`, reading keys from `keys`.
    pub fn new(config: &Config, keys: Arc<KeySource>) -> Self {
        let router = Router::new(config.routes.clone());
        // The router holds one route per configured route, in its own order.
        let route_metrics = RouteMetrics::new(
            (0..config.routes.len()).map(|index| router.get(index).label.as_str()),
        );
        Self {
            router,
            route_metrics,
            authenticator: Authenticator::new(&config.auth, keys),
            identity_headers: IdentityHeaders::new(
                &config.auth.user_id_header,
                &config.auth.claim_headers,
            ),
            cookie_name: config.auth.cookie_name.clone(),
            forward_token: config.auth.forward_token,
            trusted_proxies: config.trusted_proxies.clone(),
            keepalive_timeout_seconds: config.keepalive_timeout.as_secs(),
        }
    }
}
