//! Configuration: reading `config.toml` and validating it into the typed
//! [`Config`] the proxy runs with.
//!
//! `file` mirrors the TOML, `validate` checks every value and names the key
//! and the value in each problem. Serving and `edge-proxy check` both go
//! through [`Config::load`], so a file that passes `check` starts. Nothing here
//! touches the network.

mod file;
mod listen;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderName, Method};
use url::Url;

use crate::auth::session::SessionCheckSettings;
use crate::auth::token::TokenPolicy;
use crate::cors::CorsPolicy;
use crate::forwarding::TrustedProxies;
use crate::ratelimit::RateLimitSettings;

pub use validate::ConfigError;

/// The validated configuration of one edge-proxy process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses the proxy listens on.
    pub listen: Vec<SocketAddr>,
    /// Address of the admin listener.
    pub admin_listen: SocketAddr,
    /// Proxy worker threads (already resolved from 0 to the core count).
    pub worker_threads: usize,
    /// How long requests in flight may still run after SIGTERM or a
    /// graceful upgrade.
    pub grace_period: Duration,
    /// How long Pingora waits for its runtimes to stop after the grace
    /// period.
    pub shutdown_timeout: Duration,
    /// How long a client's keep-alive connection may stay idle between two
    /// requests.
    pub keepalive_timeout: Duration,
    /// Unix socket used to hand listeners to a new process on upgrade.
    pub upgrade_socket: UpgradeSocket,
    /// Idle upstream connections kept for reuse.
    pub upstream_keepalive_pool_size: usize,
    /// Peers whose forwarding headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// Token verification settings.
    pub auth: AuthConfig,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
}

/// Path of the Unix socket that hands the listening sockets to a new
/// process on a graceful upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeSocket {
    /// `proxy.upgrade_socket` as configured; its directory must exist.
    Configured(PathBuf),
    /// The default, in a directory of the user's own that start-up creates.
    Default(PathBuf),
}

impl UpgradeSocket {
    /// Returns the socket's path.
    pub fn path(&self) -> &Path {
        match self {
            UpgradeSocket::Configured(path) | UpgradeSocket::Default(path) => path,
        }
    }
}

/// Validated `[proxy.auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Base URL of the Hanko API, when given.
    pub hanko_api_url: Option<Url>,
    /// URL the key set is fetched from.
    pub jwks_url: Url,
    /// The checks every token must pass.
    pub policy: TokenPolicy,
    /// Cookie read when no `Authorization` header is sent.
    pub cookie_name: String,
    /// Whether the upstream gets the token on routes that read it.
    pub forward_token: bool,
    /// Header that carries the verified `sub`.
    pub user_id_header: HeaderName,
    /// Extra headers filled from claims.
    pub claim_headers: Vec<ClaimHeader>,
    /// Key set timings.
    pub jwks: JwksSettings,
    /// Verified-token cache settings; `None` turns the cache off.
    pub token_cache: Option<TokenCacheSettings>,
    /// Session check with Hanko (`session_check = "validate"`); `None`
    /// checks signature and claims only.
    pub session_check: Option<SessionCheckSettings>,
}

/// One claim copied into an upstream header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// The claim path as written, such as `email.address`.
    pub claim: String,
    /// The path split into object keys.
    pub path: Vec<String>,
    /// The header the value is sent in.
    pub header: HeaderName,
}

/// Timings of key set fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    /// Refresh period when the response has no `max-age`.
    pub refresh: Duration,
    /// Minimum time between two unknown-`kid` refetches.
    pub unknown_kid_cooldown: Duration,
    /// How long keys serve past their max-age while fetching fails.
    pub stale: Duration,
    /// Wait after a failed fetch before the next attempt.
    pub retry: Duration,
    /// Timeout of one fetch.
    pub fetch_timeout: Duration,
}

/// Verified-token cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheSettings {
    /// Maximum number of cached tokens.
    pub max_entries: u64,
    /// Maximum time a token stays cached.
    pub ttl: Duration,
}

/// The authentication a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is needed.
    Required,
    /// No token passes without identity; an invalid token is still rejected.
    Optional,
    /// No token check; identity headers are still stripped.
    None,
}

impl AuthMode {
    /// Returns the name used in the config file and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
            Self::None => "none",
        }
    }
}

/// One validated `[[proxy.routes]]` table.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Normalised path prefix without a trailing slash (`/` for the root).
    pub path_prefix: String,
    /// Lower-case host the route is limited to.
    pub host: Option<String>,
    /// Methods the route is limited to.
    pub methods: Option<Vec<Method>>,
    /// Upstream addresses, used round-robin.
    pub upstreams: Vec<SocketAddr>,
    /// The authentication the route demands.
    pub auth: AuthMode,
    /// Whether the upstream gets the token, when the route overrides
    /// `[proxy.auth] forward_token`.
    pub forward_token: Option<bool>,
    /// Remove `path_prefix` from the forwarded path.
    pub strip_prefix: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream read timeout.
    pub read_timeout: Duration,
    /// CORS policy, when configured.
    pub cors: Option<CorsPolicy>,
    /// Per-user rate limit, when configured.
    pub rate_limit: Option<RateLimitSettings>,
}

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read, is not valid TOML of the expected
    /// shape, or contains a value that does not validate; the message names the
    /// file, the key and the value.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {} failed", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    ///
    /// Fails like [`Config::load`], without the file name.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: file::FileConfig =
            toml::from_str(text).map_err(|error| ConfigError::parse(&error, text))?;
        validate::validate(file.proxy)
    }
}
