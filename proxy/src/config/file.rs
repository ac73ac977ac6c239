//! The shape of `config.toml` as serde reads it: every key, its default and
//! nothing else.
//!
//! These structs accept anything of the right type; the checks that need
//! judgement (addresses, URLs, header names, ranges) live in `validate`, which
//! turns them into the typed [`super::Config`]. Unknown keys are rejected here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file: edge-proxy reads `[proxy]` and accepts `[backend]`, which
/// belongs to item-api, without looking inside it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The edge-proxy table.
    pub proxy: ProxyFile,
    /// item-api's table, read by item-api only; accepted unread so that
    /// unknown top-level tables are still rejected.
    #[serde(rename = "backend")]
    pub _backend: Option<serde::de::IgnoredAny>,
}

/// `[proxy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// Addresses the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Address of the admin listener (`/healthz`, `/readyz`).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Proxy worker threads; 0 means one per available CPU core.
    #[serde(default)]
    pub worker_threads: usize,
    /// Seconds requests in flight may still run after SIGTERM, or after
    /// SIGQUIT has handed the listeners over; the process exits as soon as
    /// none is left.
    #[serde(default = "default_grace_period_seconds")]
    pub grace_period_seconds: u64,
    /// Seconds Pingora waits for its runtimes to stop after the grace
    /// period; requests still running then are cancelled, so this only
    /// bounds blocking work.
    #[serde(default = "default_shutdown_timeout_seconds")]
    pub shutdown_timeout_seconds: u64,
    /// Seconds a client's keep-alive connection may stay idle between two
    /// requests.
    #[serde(default = "default_keepalive_timeout_seconds")]
    pub keepalive_timeout_seconds: u64,
    /// Unix socket for handing listeners to a new process on upgrade.
    pub upgrade_socket: Option<String>,
    /// Idle upstream connections kept for reuse, over all upstreams.
    #[serde(default = "default_upstream_keepalive_pool_size")]
    pub upstream_keepalive_pool_size: usize,
    /// Addresses or networks of proxies in front whose `X-Forwarded-*`
    /// headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Token verification settings.
    pub auth: AuthFile,
    /// Routes, matched by longest path prefix.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// `[proxy.auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Base URL of the Hanko API; the key set is at `/.well-known/jwks.json`.
    pub hanko_api_url: Option<String>,
    /// Explicit key set URL; overrides the one derived from `hanko_api_url`.
    pub jwks_url: Option<String>,
    /// Accepted `aud` values: a string or a list. Required.
    pub audience: Option<StringOrList>,
    /// Required `iss` value; unchecked when absent.
    pub issuer: Option<String>,
    /// Accepted signature algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Cookie read when no `Authorization` header is sent.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Whether the upstream gets the token: the Bearer `Authorization`
    /// header and the session cookie.
    #[serde(default)]
    pub forward_token: bool,
    /// Largest token accepted, in bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Header that carries the verified `sub` to the upstream.
    #[serde(default = "default_user_id_header")]
    pub user_id_header: String,
    /// Claim path (dot-separated) to upstream header name.
    #[serde(default)]
    pub claim_headers: BTreeMap<String, String>,
    /// Key set fetching and caching.
    #[serde(default)]
    pub jwks: JwksFile,
    /// Cache of tokens that already passed every check.
    #[serde(default)]
    pub token_cache: TokenCacheFile,
    /// `"jwks"` (signature and claims only) or `"validate"` (also ask Hanko
    /// whether the session still exists).
    #[serde(default = "default_session_check")]
    pub session_check: String,
    /// Explicit URL of Hanko's `POST /sessions/validate`; overrides the one
    /// derived from `hanko_api_url`.
    pub session_validate_url: Option<String>,
    /// How long Hanko's response is cached per session, in seconds.
    #[serde(default = "default_session_cache_seconds")]
    pub session_cache_seconds: u64,
    /// Maximum number of sessions whose response is cached.
    #[serde(default = "default_session_cache_max_entries")]
    pub session_cache_max_entries: u64,
    /// Timeout of one session check call, in milliseconds.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// `"reject"` (503) or `"accept"` when Hanko cannot be reached.
    #[serde(default = "default_session_unreachable")]
    pub session_unreachable: String,
    /// Under `"accept"`: how long after Hanko's last response locally valid
    /// tokens are still accepted, in seconds.
    #[serde(default = "default_session_accept_unreachable_seconds")]
    pub session_accept_unreachable_seconds: u64,
}

/// `[proxy.auth.jwks]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksFile {
    /// Refresh period when the response has no `Cache-Control: max-age`.
    #[serde(default = "default_refresh_seconds")]
    pub refresh_seconds: u64,
    /// Minimum time between two refetches caused by unknown `kid`s.
    #[serde(default = "default_unknown_kid_cooldown_seconds")]
    pub unknown_kid_cooldown_seconds: u64,
    /// How long keys keep serving past their max-age while the key set
    /// cannot be fetched.
    #[serde(default = "default_stale_seconds")]
    pub stale_seconds: u64,
    /// Wait before trying again after a failed fetch; also the `Retry-After`.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// Timeout of one key set fetch, in milliseconds.
    #[serde(default = "default_fetch_timeout_ms")]
    pub fetch_timeout_ms: u64,
}

impl Default for JwksFile {
    fn default() -> Self {
        Self {
            refresh_seconds: default_refresh_seconds(),
            unknown_kid_cooldown_seconds: default_unknown_kid_cooldown_seconds(),
            stale_seconds: default_stale_seconds(),
            retry_seconds: default_retry_seconds(),
            fetch_timeout_ms: default_fetch_timeout_ms(),
        }
    }
}

/// `[proxy.auth.token_cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheFile {
    /// Whether verified tokens are cached at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Maximum number of cached tokens.
    #[serde(default = "default_token_cache_max_entries")]
    pub max_entries: u64,
    /// Maximum time a token stays cached, in seconds (never past its `exp`).
    #[serde(default = "default_token_cache_ttl_seconds")]
    pub ttl_seconds: u64,
}

impl Default for TokenCacheFile {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: default_token_cache_max_entries(),
            ttl_seconds: default_token_cache_ttl_seconds(),
        }
    }
}

/// `[[proxy.routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Path prefix, matched segment by segment.
    pub path_prefix: String,
    /// Host the route is limited to; any host when absent.
    pub host: Option<String>,
    /// Methods the route is limited to; any method when absent.
    pub methods: Option<Vec<String>>,
    /// One `host:port` or a list, used round-robin.
    pub upstream: StringOrList,
    /// `"required"`, `"optional"` or `"none"`.
    pub auth: String,
    /// Overrides `[proxy.auth] forward_token` for this route.
    pub forward_token: Option<bool>,
    /// Remove `path_prefix` from the path sent upstream.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Upstream connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Upstream read timeout in milliseconds (time between reads).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// CORS settings; without them the proxy answers no preflight.
    pub cors: Option<CorsFile>,
    /// Per-user rate limit; no limit when absent.
    pub rate_limit: Option<RateLimitFile>,
}

/// `rate_limit = { requests_per_second = N, burst = M }` of a route.
///
/// Both are read as plain numbers so that validation can name a negative or
/// zero value instead of failing with a type error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Sustained rate per user (or client address), in requests per second.
    pub requests_per_second: f64,
    /// Requests a user may send at once after being idle.
    pub burst: i64,
}

/// `[proxy.routes.cors]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    /// Exact origins allowed, or `["*"]`.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for.
    #[serde(default = "default_cors_headers")]
    pub allowed_headers: Vec<String>,
    /// Response headers exposed to the page.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether the page may send cookies and read the response.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache the preflight answer, in seconds.
    #[serde(default = "default_cors_max_age_seconds")]
    pub max_age_seconds: u64,
}

/// A value written either as one string or as a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// `key = "a"`.
    One(String),
    /// `key = ["a", "b"]`.
    Many(Vec<String>),
}

impl StringOrList {
    /// Returns the values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(value) => vec![value],
            Self::Many(values) => values,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".to_owned()]
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_owned()
}

fn default_grace_period_seconds() -> u64 {
    10
}

fn default_shutdown_timeout_seconds() -> u64 {
    5
}

fn default_keepalive_timeout_seconds() -> u64 {
    75
}

fn default_upstream_keepalive_pool_size() -> usize {
    128
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}

fn default_leeway_seconds() -> u64 {
    30
}

fn default_cookie_name() -> String {
    "hanko".to_owned()
}

fn default_max_token_bytes() -> usize {
    8 * 1024
}

fn default_user_id_header() -> String {
    "X-User-Id".to_owned()
}

fn default_refresh_seconds() -> u64 {
    600
}

fn default_unknown_kid_cooldown_seconds() -> u64 {
    30
}

fn default_stale_seconds() -> u64 {
    3600
}

fn default_retry_seconds() -> u64 {
    5
}

fn default_fetch_timeout_ms() -> u64 {
    5000
}

fn default_true() -> bool {
    true
}

fn default_token_cache_max_entries() -> u64 {
    10_000
}

fn default_token_cache_ttl_seconds() -> u64 {
    300
}

fn default_session_check() -> String {
    "jwks".to_owned()
}

fn default_session_cache_seconds() -> u64 {
    30
}

fn default_session_cache_max_entries() -> u64 {
    100_000
}

fn default_session_timeout_ms() -> u64 {
    2000
}

fn default_session_unreachable() -> String {
    "reject".to_owned()
}

fn default_session_accept_unreachable_seconds() -> u64 {
    60
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

fn default_read_timeout_ms() -> u64 {
    30_000
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn default_cors_headers() -> Vec<String> {
    ["authorization", "content-type"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn default_cors_max_age_seconds() -> u64 {
    600
}
