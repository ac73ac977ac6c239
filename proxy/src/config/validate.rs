//! Validation of the parsed file into the typed [`Config`].
//!
//! Every problem names the key (`proxy.routes[0].upstream[1]`), the value and
//! what is wrong, and all problems are reported together so one `check` run
//! shows them all. Validation never panics. Its only I/O is resolving
//! upstream host names that are not literal addresses, through the system
//! resolver.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, Method};
use jsonwebtoken::Algorithm;
use url::Url;

use super::file::{AuthFile, CorsFile, ProxyFile, RateLimitFile, RouteFile};
use super::listen;
use super::{
    AuthConfig, AuthMode, ClaimHeader, Config, JwksSettings, RouteConfig, TokenCacheSettings,
    UpgradeSocket,
};
use crate::auth::session::{SessionCheckSettings, UnreachablePolicy};
use crate::auth::token::TokenPolicy;
use crate::cors::{AllowedOrigins, CorsPolicy};
use crate::forwarding::{self, TrustedProxies, parse_network};
use crate::ratelimit::RateLimitSettings;
use crate::routing::{method_matches, normalize_path};

/// Largest leeway accepted, in seconds; more would make `exp` meaningless.
const MAX_LEEWAY_SECONDS: u64 = 300;
/// Token size limits accepted for `max_token_bytes`, in bytes.
const TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 256..=65_536;
/// Largest worker thread count accepted.
const MAX_WORKER_THREADS: usize = 1024;
/// Longest CORS preflight cache time accepted, in seconds (one day).
const MAX_CORS_MAX_AGE_SECONDS: u64 = 86_400;
/// Session response cache times accepted, in seconds. Longer would let a
/// revoked session through for too long.
const SESSION_CACHE_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Times a token may be accepted after Hanko's last response, in seconds.
const SESSION_ACCEPT_UNREACHABLE_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Session check call timeouts accepted, in milliseconds.
const SESSION_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=60_000;
/// Rate limits accepted, in requests per second; the bounds keep the
/// bucket arithmetic in nanoseconds far from overflow.
const REQUESTS_PER_SECOND_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;
/// Burst sizes accepted, in requests.
const BURST_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000;
/// Grace periods accepted, in seconds: longer would let one open
/// WebSocket hold a stop or an upgrade for hours.
const GRACE_PERIOD_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 0..=3600;
/// Times Pingora may wait for its runtimes to stop, in seconds.
const SHUTDOWN_TIMEOUT_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 0..=300;
/// Client keep-alive idle times accepted, in seconds.
const KEEPALIVE_TIMEOUT_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Key set refresh periods accepted, in seconds: at most a day, the limit
/// a `max-age` is clamped to.
const JWKS_REFRESH_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;
/// Pauses between refetches for unknown `kid`s accepted, in seconds. Zero
/// would let every token with a made-up `kid` cause a fetch.
const JWKS_COOLDOWN_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Stale windows accepted, in seconds. A key removed from the set stays
/// trusted for this long while fetches fail, so at most a day.
const JWKS_STALE_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 0..=86_400;
/// Waits after a failed key set fetch accepted, in seconds.
const JWKS_RETRY_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Key set fetch timeouts accepted, in milliseconds.
const JWKS_FETCH_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=60_000;
/// Headers the proxy itself manages, which a claim mapping may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "authorization",
    "cookie",
    "x-request-id",
    // Headers that change how an upstream reads the request itself.
    "content-type",
    "content-encoding",
    "expect",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// The `X-Forwarded-*` names a claim may use: the identity headers
/// oauth2-proxy sets, for upstreams written for it.
const FORWARDED_IDENTITY_HEADERS: [&str; 4] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
];

/// Everything wrong with a config file.
#[derive(Debug)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// Wraps a TOML parse error of `text` with its line and column but
    /// not the line itself: the file may hold `[backend]`'s database
    /// password, and a reload logs this message.
    pub(super) fn parse(error: &toml::de::Error, text: &str) -> Self {
        let message = error.message().trim_end();
        let problem = match error.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
                let line = before.matches('\n').count() + 1;
                let column = before[line_start..].chars().count() + 1;
                format!("TOML parse error at line {line}, column {column}: {message}")
            }
            None => format!("TOML parse error: {message}"),
        };
        Self {
            problems: vec![problem],
        }
    }

    /// Returns each problem as one sentence.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while the conversion goes on.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, value: impl fmt::Debug, problem: impl fmt::Display) {
        self.0.push(format!("{key} = {value:?}: {problem}"));
    }

    fn missing(&mut self, key: &str, problem: impl fmt::Display) {
        self.0.push(format!("{key} is missing: {problem}"));
    }

    /// Adds a problem for each `(key, value, range)` whose value lies
    /// outside its range.
    fn check_ranges<const N: usize>(&mut self, checks: [(&str, u64, RangeInclusive<u64>); N]) {
        for (key, value, range) in checks {
            if !range.contains(&value) {
                self.add(
                    key,
                    value,
                    format!("must be between {} and {}", range.start(), range.end()),
                );
            }
        }
    }

    /// Parses every entry of the list at `key`, adding `problem` for each
    /// entry `parse` rejects, and returns the entries it accepted.
    fn parse_each<T>(
        &mut self,
        key: &str,
        values: &[String],
        parse: impl Fn(&str) -> Option<T>,
        problem: &str,
    ) -> Vec<T> {
        let mut parsed = Vec::with_capacity(values.len());
        for (index, value) in values.iter().enumerate() {
            match parse(value) {
                Some(item) => parsed.push(item),
                None => self.add(&format!("{key}[{index}]"), value, problem),
            }
        }
        parsed
    }
}

/// The problem of a list entry that is not a method.
const NOT_A_METHOD: &str = "is not an upper-case HTTP method such as GET";

/// The problem of a list entry that is not a header name.
const NOT_A_HEADER_NAME: &str = "is not a valid HTTP header name";

/// Validates `[proxy]` into a [`Config`].
pub(super) fn validate(file: ProxyFile) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();

    let listen = validate_listen(&file.listen, &mut problems);
    let admin_listen = parse_listen_addr("proxy.admin_listen", &file.admin_listen, &mut problems);
    if let Some(admin) = admin_listen
        && let Some(taken) = listen
            .iter()
            .find(|address| listen::overlaps(**address, admin))
    {
        problems.add(
            "proxy.admin_listen",
            &file.admin_listen,
            format!(
                "overlaps proxy.listen's \"{taken}\"; give the admin listener its own address or port"
            ),
        );
    }

    let worker_threads = match file.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n if n > MAX_WORKER_THREADS => {
            problems.add(
                "proxy.worker_threads",
                n,
                format!("must be between 0 and {MAX_WORKER_THREADS}"),
            );
            1
        }
        n => n,
    };

    let upgrade_socket = match &file.upgrade_socket {
        Some(path) => UpgradeSocket::Configured(PathBuf::from(path)),
        None => UpgradeSocket::Default(default_upgrade_socket(admin_listen)),
    };
    if let Some(problem) = listen::socket_path_problem(upgrade_socket.path()) {
        let hint = match upgrade_socket {
            UpgradeSocket::Configured(_) => "",
            UpgradeSocket::Default(_) => " (the default path; set proxy.upgrade_socket)",
        };
        problems.add(
            "proxy.upgrade_socket",
            upgrade_socket.path().display(),
            format!("{problem}{hint}"),
        );
    }

    problems.check_ranges([
        (
            "proxy.grace_period_seconds",
            file.grace_period_seconds,
            GRACE_PERIOD_SECONDS_RANGE,
        ),
        (
            "proxy.shutdown_timeout_seconds",
            file.shutdown_timeout_seconds,
            SHUTDOWN_TIMEOUT_SECONDS_RANGE,
        ),
        (
            "proxy.keepalive_timeout_seconds",
            file.keepalive_timeout_seconds,
            KEEPALIVE_TIMEOUT_SECONDS_RANGE,
        ),
    ]);

    if file.upstream_keepalive_pool_size == 0 {
        problems.add(
            "proxy.upstream_keepalive_pool_size",
            0,
            "must be at least 1",
        );
    }

    let trusted_proxies = validate_trusted_proxies(&file.trusted_proxies, &mut problems);
    let auth = validate_auth(file.auth, &mut problems);

    if file.routes.is_empty() {
        problems.missing(
            "proxy.routes",
            "add at least one [[proxy.routes]] table; without routes every request is 404",
        );
    }
    let mut routes = Vec::with_capacity(file.routes.len());
    let mut route_indexes = Vec::with_capacity(file.routes.len());
    for (index, route) in file.routes.into_iter().enumerate() {
        let key = format!("proxy.routes[{index}]");
        if let Some(route) = validate_route(&key, route, &mut problems) {
            if let Some(other) = routes.iter().position(|seen| routes_overlap(seen, &route)) {
                problems.add(
                    &format!("{key}.path_prefix"),
                    &route.path_prefix,
                    format!(
                        "proxy.routes[{}] has the same path_prefix and host and takes some of the same methods; \
                         which one applies would depend on their order",
                        route_indexes[other]
                    ),
                );
            }
            routes.push(route);
            route_indexes.push(index);
        }
    }

    if !problems.0.is_empty() {
        return Err(ConfigError {
            problems: problems.0,
        });
    }
    Ok(Config {
        listen,
        admin_listen: admin_listen.expect("an invalid admin_listen was reported above"),
        worker_threads,
        grace_period: Duration::from_secs(file.grace_period_seconds),
        shutdown_timeout: Duration::from_secs(file.shutdown_timeout_seconds),
        keepalive_timeout: Duration::from_secs(file.keepalive_timeout_seconds),
        upgrade_socket,
        upstream_keepalive_pool_size: file.upstream_keepalive_pool_size,
        trusted_proxies,
        auth: auth.expect("an invalid [proxy.auth] was reported above"),
        routes,
    })
}

fn validate_listen(values: &[String], problems: &mut Problems) -> Vec<SocketAddr> {
    if values.is_empty() {
        problems.add("proxy.listen", values, "must hold at least one address");
    }
    let mut addresses = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let key = format!("proxy.listen[{index}]");
        if let Some(address) = parse_listen_addr(&key, value, problems) {
            if let Some(taken) = addresses
                .iter()
                .find(|seen| listen::overlaps(**seen, address))
            {
                problems.add(
                    &key,
                    value,
                    format!("overlaps \"{taken}\" listed before it; list the address once"),
                );
            }
            addresses.push(address);
        }
    }
    addresses
}

/// Parses a listen address, which needs a port other than 0.
fn parse_listen_addr(key: &str, value: &str, problems: &mut Problems) -> Option<SocketAddr> {
    let address = parse_socket_addr(key, value, problems)?;
    if let Some(problem) = listen::address_problem(address) {
        problems.add(key, value, problem);
    }
    Some(address)
}

fn parse_socket_addr(key: &str, value: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.add(
                key,
                value,
                "is not an IP address with a port, such as 127.0.0.1:8080",
            );
            None
        }
    }
}

/// Reads `proxy.trusted_proxies`: IP addresses or networks in CIDR form.
fn validate_trusted_proxies(values: &[String], problems: &mut Problems) -> TrustedProxies {
    let mut networks = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        match parse_network(value) {
            Ok(network) => networks.push(network),
            Err(problem) => {
                problems.add(&format!("proxy.trusted_proxies[{index}]"), value, problem)
            }
        }
    }
    TrustedProxies::new(networks)
}

/// Derives an upgrade socket path that differs between instances on one
/// host, because no two instances can share an admin address. It lies in
/// a directory of the user's own, `<temp dir>/edge-proxy-<uid>`, so that
/// no other local user can put a socket there to receive the listeners.
fn default_upgrade_socket(admin_listen: Option<SocketAddr>) -> PathBuf {
    let uid = nix::unistd::geteuid();
    let name = admin_listen.map_or_else(
        || "upgrade.sock".to_owned(),
        |address| format!("upgrade-{address}.sock"),
    );
    std::env::temp_dir()
        .join(format!("edge-proxy-{uid}"))
        .join(name)
}

fn validate_auth(file: AuthFile, problems: &mut Problems) -> Option<AuthConfig> {
    let before = problems.0.len();

    let hanko_api_url = file
        .hanko_api_url
        .as_deref()
        .and_then(|value| parse_fetch_url("proxy.auth.hanko_api_url", value, problems));
    let jwks_url = match (&file.jwks_url, &hanko_api_url) {
        (Some(value), _) => parse_fetch_url("proxy.auth.jwks_url", value, problems),
        (None, Some(base)) => Some(jwks_url_from_api(base)),
        (None, None) => {
            if file.hanko_api_url.is_none() {
                problems.missing(
                    "proxy.auth.hanko_api_url",
                    "set hanko_api_url (or jwks_url) so the proxy can fetch the signing keys",
                );
            }
            None
        }
    };
    let session_check = validate_session_check(&file, hanko_api_url.as_ref(), problems);

    let audiences = match file.audience {
        None => {
            problems.missing(
                "proxy.auth.audience",
                "set the audience your Hanko tenant puts in `aud`; the proxy will not start without one",
            );
            Vec::new()
        }
        Some(value) => {
            let values = value.into_vec();
            if values.is_empty() {
                problems.add(
                    "proxy.auth.audience",
                    &values,
                    "must hold at least one value",
                );
            }
            for (index, audience) in values.iter().enumerate() {
                if audience.trim().is_empty() {
                    problems.add(
                        &format!("proxy.auth.audience[{index}]"),
                        audience,
                        "must not be empty",
                    );
                }
            }
            values
        }
    };

    if let Some(issuer) = &file.issuer
        && issuer.trim().is_empty()
    {
        problems.add(
            "proxy.auth.issuer",
            issuer,
            "must not be empty; remove the key to skip the issuer check",
        );
    }

    let algorithms = validate_algorithms(&file.algorithms, problems);

    if file.leeway_seconds > MAX_LEEWAY_SECONDS {
        problems.add(
            "proxy.auth.leeway_seconds",
            file.leeway_seconds,
            format!("must be between 0 and {MAX_LEEWAY_SECONDS}"),
        );
    }
    if !TOKEN_BYTES_RANGE.contains(&file.max_token_bytes) {
        problems.add(
            "proxy.auth.max_token_bytes",
            file.max_token_bytes,
            format!(
                "must be between {} and {}",
                TOKEN_BYTES_RANGE.start(),
                TOKEN_BYTES_RANGE.end()
            ),
        );
    }
    if file.cookie_name.is_empty() || !file.cookie_name.bytes().all(is_token_byte) {
        problems.add(
            "proxy.auth.cookie_name",
            &file.cookie_name,
            "is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)",
        );
    }

    let mut seen_headers = HashSet::new();
    let user_id_header =
        parse_identity_header("proxy.auth.user_id_header", &file.user_id_header, problems);
    if let Some(header) = &user_id_header {
        seen_headers.insert(header.clone());
    }
    let mut claim_headers = Vec::with_capacity(file.claim_headers.len());
    for (claim, header) in &file.claim_headers {
        let key = format!("proxy.auth.claim_headers.\"{claim}\"");
        let path: Vec<String> = claim.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            problems.add(
                &key,
                header,
                "the claim path must be dot-separated names, such as email.address",
            );
            continue;
        }
        let Some(header_name) = parse_identity_header(&key, header, problems) else {
            continue;
        };
        if !seen_headers.insert(header_name.clone()) {
            problems.add(
                &key,
                header,
                "this header is already used for another value",
            );
            continue;
        }
        claim_headers.push(ClaimHeader {
            claim: claim.clone(),
            path,
            header: header_name,
        });
    }

    let jwks = &file.jwks;
    problems.check_ranges([
        (
            "proxy.auth.jwks.refresh_seconds",
            jwks.refresh_seconds,
            JWKS_REFRESH_SECONDS_RANGE,
        ),
        (
            "proxy.auth.jwks.unknown_kid_cooldown_seconds",
            jwks.unknown_kid_cooldown_seconds,
            JWKS_COOLDOWN_SECONDS_RANGE,
        ),
        (
            "proxy.auth.jwks.stale_seconds",
            jwks.stale_seconds,
            JWKS_STALE_SECONDS_RANGE,
        ),
        (
            "proxy.auth.jwks.retry_seconds",
            jwks.retry_seconds,
            JWKS_RETRY_SECONDS_RANGE,
        ),
        (
            "proxy.auth.jwks.fetch_timeout_ms",
            jwks.fetch_timeout_ms,
            JWKS_FETCH_TIMEOUT_MS_RANGE,
        ),
    ]);

    let token_cache = if file.token_cache.enabled {
        if file.token_cache.max_entries == 0 {
            problems.add(
                "proxy.auth.token_cache.max_entries",
                0,
                "must be at least 1; set enabled = false to turn the cache off",
            );
        }
        if file.token_cache.ttl_seconds == 0 {
            problems.add(
                "proxy.auth.token_cache.ttl_seconds",
                0,
                "must be at least 1; set enabled = false to turn the cache off",
            );
        }
        Some(TokenCacheSettings {
            max_entries: file.token_cache.max_entries,
            ttl: Duration::from_secs(file.token_cache.ttl_seconds),
        })
    } else {
        None
    };

    if problems.0.len() > before {
        return None;
    }
    Some(AuthConfig {
        hanko_api_url,
        jwks_url: jwks_url?,
        policy: TokenPolicy {
            audiences,
            issuer: file.issuer,
            algorithms,
            leeway_seconds: file.leeway_seconds,
            max_token_bytes: file.max_token_bytes,
        },
        cookie_name: file.cookie_name,
        forward_token: file.forward_token,
        user_id_header: user_id_header?,
        claim_headers,
        jwks: JwksSettings {
            refresh: Duration::from_secs(jwks.refresh_seconds),
            unknown_kid_cooldown: Duration::from_secs(jwks.unknown_kid_cooldown_seconds),
            stale: Duration::from_secs(jwks.stale_seconds),
            retry: Duration::from_secs(jwks.retry_seconds),
            fetch_timeout: Duration::from_millis(jwks.fetch_timeout_ms),
        },
        token_cache,
        session_check,
    })
}

/// Validates the `session_*` keys of `[proxy.auth]`; returns the settings
/// when `session_check = "validate"` and every key is valid.
fn validate_session_check(
    file: &AuthFile,
    hanko_api_url: Option<&Url>,
    problems: &mut Problems,
) -> Option<SessionCheckSettings> {
    let before = problems.0.len();

    problems.check_ranges([
        (
            "proxy.auth.session_cache_seconds",
            file.session_cache_seconds,
            SESSION_CACHE_SECONDS_RANGE,
        ),
        (
            "proxy.auth.session_accept_unreachable_seconds",
            file.session_accept_unreachable_seconds,
            SESSION_ACCEPT_UNREACHABLE_SECONDS_RANGE,
        ),
        (
            "proxy.auth.session_timeout_ms",
            file.session_timeout_ms,
            SESSION_TIMEOUT_MS_RANGE,
        ),
    ]);
    if file.session_cache_max_entries == 0 {
        problems.add(
            "proxy.auth.session_cache_max_entries",
            0,
            "must be at least 1",
        );
    }

    let unreachable = match file.session_unreachable.as_str() {
        "reject" => UnreachablePolicy::Reject,
        "accept" => UnreachablePolicy::Accept {
            max_since_reachable: Duration::from_secs(file.session_accept_unreachable_seconds),
        },
        other => {
            problems.add(
                "proxy.auth.session_unreachable",
                other,
                "must be \"reject\" or \"accept\"",
            );
            UnreachablePolicy::Reject
        }
    };

    let explicit_url = file
        .session_validate_url
        .as_deref()
        .and_then(|value| parse_fetch_url("proxy.auth.session_validate_url", value, problems));
    let enabled = match file.session_check.as_str() {
        "jwks" => false,
        "validate" => true,
        other => {
            problems.add(
                "proxy.auth.session_check",
                other,
                "must be \"jwks\" (signature and claims only) or \"validate\" (also ask Hanko)",
            );
            false
        }
    };
    if !enabled {
        return None;
    }
    let validate_url = match (explicit_url, hanko_api_url) {
        (Some(url), _) => url,
        (None, Some(base)) => session_validate_url_from_api(base),
        (None, None) => {
            if file.session_validate_url.is_none() && file.hanko_api_url.is_none() {
                problems.missing(
                    "proxy.auth.hanko_api_url",
                    "session_check = \"validate\" needs hanko_api_url (or session_validate_url) to reach POST /sessions/validate",
                );
            }
            return None;
        }
    };

    if problems.0.len() > before {
        return None;
    }
    Some(SessionCheckSettings {
        validate_url,
        cache_ttl: Duration::from_secs(file.session_cache_seconds),
        cache_max_entries: file.session_cache_max_entries,
        timeout: Duration::from_millis(file.session_timeout_ms),
        unreachable,
    })
}

/// Parses a URL the proxy fetches from: https always, plain http only to a
/// loopback host, because keys fetched over an open network could be swapped.
fn parse_fetch_url(key: &str, value: &str, problems: &mut Problems) -> Option<Url> {
    let url = match Url::parse(value) {
        Ok(url) => url,
        Err(error) => {
            problems.add(key, value, format!("is not a valid URL ({error})"));
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        "http" => {
            problems.add(
                key,
                value,
                "plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost); use https",
            );
            return None;
        }
        other => {
            problems.add(key, value, format!("scheme {other:?} is not http or https"));
            return None;
        }
    }
    if url.host().is_none() {
        problems.add(key, value, "has no host");
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        problems.add(
            key,
            value,
            "must not carry a query, a fragment or credentials",
        );
        return None;
    }
    Some(url)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn jwks_url_from_api(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!(
        "{}/.well-known/jwks.json",
        base.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url
}

fn session_validate_url_from_api(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/sessions/validate", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

fn validate_algorithms(values: &[String], problems: &mut Problems) -> Vec<Algorithm> {
    if values.is_empty() {
        problems.add(
            "proxy.auth.algorithms",
            values,
            "must hold at least one algorithm",
        );
    }
    let mut algorithms = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let key = format!("proxy.auth.algorithms[{index}]");
        match Algorithm::from_str(value) {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => problems.add(
                &key,
                value,
                "HMAC algorithms cannot be verified with a public key set; Hanko signs with RS256",
            ),
            Ok(algorithm) if !algorithms.contains(&algorithm) => algorithms.push(algorithm),
            Ok(_) => problems.add(&key, value, "is listed twice"),
            Err(_) => problems.add(
                &key,
                value,
                "is not a supported algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)",
            ),
        }
    }
    algorithms
}

fn parse_identity_header(key: &str, value: &str, problems: &mut Problems) -> Option<HeaderName> {
    let Ok(name) = HeaderName::from_bytes(value.as_bytes()) else {
        problems.add(key, value, "is not a valid HTTP header name");
        return None;
    };
    if name.as_str().contains('_') {
        problems.add(
            key,
            value,
            "must not contain `_`; many servers read `_` as `-`, use `-` instead",
        );
        return None;
    }
    if RESERVED_HEADERS.contains(&name.as_str()) || describes_client_connection(&name) {
        problems.add(
            key,
            value,
            "is managed by the proxy itself; choose another header",
        );
        return None;
    }
    Some(name)
}

/// Reports whether `name` is a forwarding header that describes the
/// client's connection or request, such as `X-Real-IP` or
/// `X-Forwarded-Prefix`. A claim value there would let a user choose what
/// the upstream takes for the client's address, scheme or path. Only the
/// identity names of [`FORWARDED_IDENTITY_HEADERS`] stay allowed.
fn describes_client_connection(name: &HeaderName) -> bool {
    let name = name.as_str();
    if name.starts_with(forwarding::FORWARDED_PREFIX) {
        return !FORWARDED_IDENTITY_HEADERS.contains(&name);
    }
    forwarding::FORWARDING_HEADERS
        .iter()
        .any(|header| header.as_str() == name)
        || forwarding::CLIENT_ADDRESS_HEADERS.contains(&name)
        || forwarding::SCHEME_HEADERS.contains(&name)
}

fn validate_route(key: &str, file: RouteFile, problems: &mut Problems) -> Option<RouteConfig> {
    let before = problems.0.len();

    let prefix_key = format!("{key}.path_prefix");
    let path_prefix = match normalize_path(&file.path_prefix) {
        Ok(normal) => {
            // A trailing slash makes no difference to segment-wise matching.
            let normal = normal.trim_end_matches('/');
            if normal != file.path_prefix.trim_end_matches('/') {
                problems.add(
                    &prefix_key,
                    &file.path_prefix,
                    format!(
                        "is not in normal form; write {:?}",
                        if normal.is_empty() { "/" } else { normal }
                    ),
                );
            }
            if normal.is_empty() {
                "/".to_owned()
            } else {
                normal.to_owned()
            }
        }
        Err(_) => {
            problems.add(
                &prefix_key,
                &file.path_prefix,
                "must be a path starting with `/` without `..`, encoded `/` or `\\`",
            );
            String::new()
        }
    };

    let host = file.host.map(|host| {
        let lower = host.to_ascii_lowercase();
        let ipv6 = lower.starts_with('[') && lower.ends_with(']');
        if lower.is_empty() || lower.contains(['/', ' ', '@']) {
            problems.add(&format!("{key}.host"), &host, "is not a host name");
        } else if (lower.contains(':') && !ipv6) || lower.ends_with('.') {
            // Requests are matched on their host without port and trailing
            // dot, so such a route would never match.
            problems.add(
                &format!("{key}.host"),
                &host,
                "must be a host name without port or trailing dot",
            );
        }
        lower
    });

    let methods = file.methods.map(|values| {
        if values.is_empty() {
            problems.add(
                &format!("{key}.methods"),
                &values,
                "must hold at least one method; remove the key to allow every method",
            );
        }
        problems.parse_each(
            &format!("{key}.methods"),
            &values,
            parse_method,
            NOT_A_METHOD,
        )
    });

    let upstream_values = file.upstream.into_vec();
    if upstream_values.is_empty() {
        problems.add(
            &format!("{key}.upstream"),
            &upstream_values,
            "must hold at least one host:port",
        );
    }
    let mut upstreams = Vec::with_capacity(upstream_values.len());
    for (index, value) in upstream_values.iter().enumerate() {
        let upstream_key = format!("{key}.upstream[{index}]");
        match resolve_upstream(value) {
            Ok(addresses) => upstreams.extend(addresses),
            Err(problem) => problems.add(&upstream_key, value, problem),
        }
    }

    let auth = match file.auth.as_str() {
        "required" => AuthMode::Required,
        "optional" => AuthMode::Optional,
        "none" => AuthMode::None,
        other => {
            problems.add(
                &format!("{key}.auth"),
                other,
                "must be \"required\", \"optional\" or \"none\"",
            );
            AuthMode::Required
        }
    };

    if let Some(forward_token) = file.forward_token
        && auth == AuthMode::None
    {
        problems.add(
            &format!("{key}.forward_token"),
            forward_token,
            "has no effect with auth = \"none\", which passes the token on unchanged; remove it",
        );
    }

    for (name, value) in [
        ("connect_timeout_ms", file.connect_timeout_ms),
        ("read_timeout_ms", file.read_timeout_ms),
    ] {
        if value == 0 {
            problems.add(&format!("{key}.{name}"), value, "must be at least 1");
        }
    }

    let cors = file
        .cors
        .and_then(|cors| validate_cors(&format!("{key}.cors"), cors, problems));
    let rate_limit = file
        .rate_limit
        .and_then(|limit| validate_rate_limit(&format!("{key}.rate_limit"), &limit, problems));

    if problems.0.len() > before {
        return None;
    }
    Some(RouteConfig {
        path_prefix,
        host,
        methods,
        upstreams,
        auth,
        forward_token: file.forward_token,
        strip_prefix: file.strip_prefix,
        connect_timeout: Duration::from_millis(file.connect_timeout_ms),
        read_timeout: Duration::from_millis(file.read_timeout_ms),
        cors,
        rate_limit,
    })
}

fn validate_rate_limit(
    key: &str,
    file: &RateLimitFile,
    problems: &mut Problems,
) -> Option<RateLimitSettings> {
    let rate_ok = REQUESTS_PER_SECOND_RANGE.contains(&file.requests_per_second);
    if !rate_ok {
        problems.add(
            &format!("{key}.requests_per_second"),
            file.requests_per_second,
            format!(
                "must be a number between {} and {}",
                REQUESTS_PER_SECOND_RANGE.start(),
                REQUESTS_PER_SECOND_RANGE.end()
            ),
        );
    }
    let burst = u32::try_from(file.burst)
        .ok()
        .filter(|_| BURST_RANGE.contains(&file.burst));
    if burst.is_none() {
        problems.add(
            &format!("{key}.burst"),
            file.burst,
            format!(
                "must be a whole number between {} and {}",
                BURST_RANGE.start(),
                BURST_RANGE.end()
            ),
        );
    }
    Some(RateLimitSettings {
        requests_per_second: file.requests_per_second,
        burst: burst?,
    })
    .filter(|_| rate_ok)
}

/// Reports whether two routes would compete for the same requests: the same
/// prefix and host, and either both without a method list or with lists
/// that share a method.
fn routes_overlap(first: &RouteConfig, second: &RouteConfig) -> bool {
    if first.path_prefix != second.path_prefix || first.host != second.host {
        return false;
    }
    match (&first.methods, &second.methods) {
        (None, None) => true,
        (Some(first), Some(second)) => first.iter().any(|one| {
            second
                .iter()
                .any(|other| method_matches(one, other) || method_matches(other, one))
        }),
        // A route with a method list is tried before one without.
        _ => false,
    }
}

fn parse_method(value: &str) -> Option<Method> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    Method::from_bytes(value.as_bytes()).ok()
}

/// Resolves `host:port` once at load time, so requests never wait on DNS.
/// Every address becomes a peer: `localhost` gives `::1` and `127.0.0.1`,
/// and a service may listen on only one of them.
fn resolve_upstream(value: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(address) = value.parse::<SocketAddr>() {
        return Ok(vec![address]);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("is not host:port".to_owned());
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("is not host:port".to_owned());
    }
    match value.to_socket_addrs() {
        Ok(addresses) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() {
                Err("resolves to no address".to_owned())
            } else {
                Ok(addresses)
            }
        }
        Err(error) => Err(format!("cannot be resolved ({error})")),
    }
}

fn validate_cors(key: &str, file: CorsFile, problems: &mut Problems) -> Option<CorsPolicy> {
    let before = problems.0.len();

    let origins = if file.allowed_origins == ["*"] {
        if file.allow_credentials {
            problems.add(
                &format!("{key}.allowed_origins"),
                &file.allowed_origins,
                "\"*\" cannot be combined with allow_credentials = true; list the origins",
            );
        }
        AllowedOrigins::Any
    } else {
        if file.allowed_origins.is_empty() {
            problems.add(
                &format!("{key}.allowed_origins"),
                &file.allowed_origins,
                "must hold at least one origin",
            );
        }
        for (index, origin) in file.allowed_origins.iter().enumerate() {
            let key = format!("{key}.allowed_origins[{index}]");
            match serialized_origin(origin) {
                None => problems.add(
                    &key,
                    origin,
                    "is not an origin such as https://app.example.com (scheme and host, no path), or \"*\" alone",
                ),
                // Browsers send the serialized form and the match is exact,
                // so any other spelling would never match.
                Some(serialized) if serialized != *origin => problems.add(
                    &key,
                    origin,
                    format!("is not written as browsers send it; write \"{serialized}\""),
                ),
                Some(_) => {}
            }
        }
        AllowedOrigins::List(file.allowed_origins.clone())
    };

    let methods = problems.parse_each(
        &format!("{key}.allowed_methods"),
        &file.allowed_methods,
        parse_method,
        NOT_A_METHOD,
    );
    let header_name = |value: &str| HeaderName::from_bytes(value.as_bytes()).ok();
    let headers = problems.parse_each(
        &format!("{key}.allowed_headers"),
        &file.allowed_headers,
        header_name,
        NOT_A_HEADER_NAME,
    );
    let expose = problems.parse_each(
        &format!("{key}.expose_headers"),
        &file.expose_headers,
        header_name,
        NOT_A_HEADER_NAME,
    );
    if file.max_age_seconds > MAX_CORS_MAX_AGE_SECONDS {
        problems.add(
            &format!("{key}.max_age_seconds"),
            file.max_age_seconds,
            format!("must be between 0 and {MAX_CORS_MAX_AGE_SECONDS}"),
        );
    }

    if problems.0.len() > before {
        return None;
    }
    Some(CorsPolicy::new(
        origins,
        methods,
        headers,
        expose,
        file.allow_credentials,
        file.max_age_seconds,
    ))
}

/// Returns `value` as an `Origin` header spells it (RFC 6454: lower-case
/// scheme and host, international names in ASCII, no default port), or
/// `None` when it is not an http or https origin without path or query.
fn serialized_origin(value: &str) -> Option<String> {
    let url = Url::parse(value).ok()?;
    let is_origin = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.path() == "/"
        && !value.ends_with('/')
        && url.query().is_none()
        && url.username().is_empty();
    is_origin.then(|| url.origin().ascii_serialization())
}

/// Reports whether `byte` may appear in an RFC 9110 token.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use crate::auth::session::{SessionCheckSettings, UnreachablePolicy};

    const MINIMAL: &str = r#"
        [proxy]
        [proxy.auth]
        hanko_api_url = "http://127.0.0.1:8000"
        audience = "localhost"
        [[proxy.routes]]
        path_prefix = "/api"
        upstream = "127.0.0.1:8081"
        auth = "required"
    "#;

    /// Parses `text`, which must turn the session check on, and returns
    /// its settings.
    fn session_check(text: &str) -> SessionCheckSettings {
        Config::from_toml(text)
            .expect("valid")
            .auth
            .session_check
            .expect("session check on")
    }

    fn problems(text: &str) -> Vec<String> {
        Config::from_toml(text)
            .expect_err("the config must be rejected")
            .problems()
            .to_vec()
    }

    fn assert_rejected(text: &str, expected: &str) {
        let problems = problems(text);
        assert!(
            problems.iter().any(|problem| problem.contains(expected)),
            "expected a problem containing {expected:?}, got {problems:#?}"
        );
    }

    #[test]
    fn claim_header_on_request_header_is_rejected() {
        let reserved = [
            "X-Real-IP",
            "X-Forwarded-For",
            "Forwarded",
            "True-Client-IP",
            "X-Forwarded-Prefix",
            "X-Forwarded-Uri",
            "X-Forwarded-Client-Cert",
            "X-Scheme",
            "Content-Type",
            "X-HTTP-Method-Override",
            "X-Original-URL",
        ];
        for header in reserved {
            let text = MINIMAL.replace(
                "[[proxy.routes]]",
                &format!(
                    "[proxy.auth.claim_headers]\n\"username\" = \"{header}\"\n[[proxy.routes]]"
                ),
            );
            assert_rejected(&text, "managed by the proxy");
        }
    }

    #[test]
    fn claim_header_on_forwarded_user_is_accepted() {
        let text = MINIMAL.replace(
            "[[proxy.routes]]",
            "[proxy.auth.claim_headers]\n\"username\" = \"X-Forwarded-User\"\n[[proxy.routes]]",
        );
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(config.auth.claim_headers[0].header, "x-forwarded-user");
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../../../config.toml");
        let config = Config::from_toml(text).expect("the shipped config.toml validates");

        assert_eq!(config.listen, ["127.0.0.1:8080".parse().expect("address")]);
        assert_eq!(
            config.admin_listen,
            "127.0.0.1:9090".parse().expect("address")
        );
        assert!(!config.routes.is_empty());
        assert!(
            config
                .auth
                .claim_headers
                .iter()
                .any(|mapping| mapping.claim == "email.address"
                    && mapping.header.as_str() == "x-user-email")
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml(MINIMAL).expect("valid");

        assert_eq!(config.listen, ["127.0.0.1:8080".parse().expect("address")]);
        assert_eq!(
            config.admin_listen,
            "127.0.0.1:9090".parse().expect("address")
        );
        assert_eq!(
            config.auth.jwks_url.as_str(),
            "http://127.0.0.1:8000/.well-known/jwks.json"
        );
        assert_eq!(config.auth.policy.audiences, ["localhost"]);
        assert_eq!(
            config.auth.policy.algorithms,
            [jsonwebtoken::Algorithm::RS256]
        );
        assert_eq!(config.auth.cookie_name, "hanko");
        assert!(!config.auth.forward_token);
        assert_eq!(config.keepalive_timeout, std::time::Duration::from_secs(75));
        assert_eq!(config.auth.user_id_header.as_str(), "x-user-id");
        assert!(config.auth.token_cache.is_some());
        assert_eq!(config.routes[0].path_prefix, "/api");
        assert!(config.worker_threads >= 1);
        let uid = nix::unistd::geteuid();
        assert_eq!(
            config.upgrade_socket,
            super::super::UpgradeSocket::Default(
                std::env::temp_dir()
                    .join(format!("edge-proxy-{uid}"))
                    .join("upgrade-127.0.0.1:9090.sock")
            )
        );
    }

    #[test]
    fn syntax_error_names_the_line_without_its_text() {
        let text =
            format!("{MINIMAL}\n[backend]\ndatabase_url = \"postgres://app:s3cret@db/items\n");

        let error = Config::from_toml(&text).expect_err("unterminated string");

        let message = error.to_string();
        let line = text
            .lines()
            .position(|line| line.starts_with("database_url"))
            .expect("the line is there")
            + 1;
        assert!(
            message.starts_with(&format!("TOML parse error at line {line}, column 47: ")),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let text = MINIMAL.replace(
            "[proxy]",
            "[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]",
        );
        let config = Config::from_toml(&text).expect("valid");
        let trusted = &config.trusted_proxies;

        for inside in ["10.200.0.1", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(
                trusted.contains(inside.parse().expect("address")),
                "{inside}"
            );
        }
        for outside in ["11.0.0.1", "192.0.2.8", "2001:db9::1"] {
            assert!(
                !trusted.contains(outside.parse().expect("address")),
                "{outside}"
            );
        }
    }

    #[test]
    fn trusted_proxies_default_to_none() {
        let config = Config::from_toml(MINIMAL).expect("valid");
        assert_eq!(
            config.trusted_proxies,
            crate::forwarding::TrustedProxies::default()
        );
    }

    #[test]
    fn jwks_url_keeps_tenant_path() {
        let text = MINIMAL.replace(
            "http://127.0.0.1:8000",
            "https://auth.example.com/tenant-1/",
        );
        let config = Config::from_toml(&text).expect("valid");

        assert_eq!(
            config.auth.jwks_url.as_str(),
            "https://auth.example.com/tenant-1/.well-known/jwks.json"
        );
    }

    /// Each case replaces one string of `MINIMAL` and expects a problem
    /// that contains the case's last string.
    #[test]
    fn invalid_values_are_named() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "missing audience is rejected",
                "audience = \"localhost\"",
                "",
                "proxy.auth.audience is missing",
            ),
            (
                "empty audience list is rejected",
                "audience = \"localhost\"",
                "audience = []",
                "proxy.auth.audience = []",
            ),
            (
                "unknown key is rejected",
                "[proxy.auth]",
                "[proxy.auth]\naudiance = \"x\"",
                "audiance",
            ),
            (
                "bad listen address is named",
                "[proxy]",
                "[proxy]\nlisten = [\"localhost:80x\"]",
                "proxy.listen[0] = \"localhost:80x\"",
            ),
            (
                "bad trusted proxy is named",
                "[proxy]",
                "[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
                "proxy.trusted_proxies[1] = \"10.0.0.0/33\": is not an IP address or a network",
            ),
            (
                "too wide a trusted network is rejected",
                "[proxy]",
                "[proxy]\ntrusted_proxies = [\"::/0\"]",
                "proxy.trusted_proxies[0] = \"::/0\": covers ::/0, wider than /32",
            ),
            (
                "trusted network with host bits is rejected",
                "[proxy]",
                "[proxy]\ntrusted_proxies = [\"10.1.2.3/8\"]",
                "write 10.0.0.0/8 for the network or 10.1.2.3 for one address",
            ),
            (
                "keep-alive timeout of zero is rejected",
                "[proxy]",
                "[proxy]\nkeepalive_timeout_seconds = 0",
                "proxy.keepalive_timeout_seconds = 0: must be between 1 and 3600",
            ),
            (
                "admin on proxy address is rejected",
                "[proxy]",
                "[proxy]\nlisten = [\"127.0.0.1:9000\"]\nadmin_listen = \"127.0.0.1:9000\"",
                "proxy.admin_listen",
            ),
            (
                "admin on a wildcard proxy address is rejected",
                "[proxy]",
                "[proxy]\nlisten = [\"0.0.0.0:9000\"]\nadmin_listen = \"127.0.0.1:9000\"",
                "proxy.admin_listen = \"127.0.0.1:9000\": overlaps proxy.listen's \"0.0.0.0:9000\"",
            ),
            (
                "overlapping listen addresses are rejected",
                "[proxy]",
                "[proxy]\nlisten = [\"[::]:8080\", \"127.0.0.1:8080\"]",
                "proxy.listen[1] = \"127.0.0.1:8080\": overlaps \"[::]:8080\"",
            ),
            (
                "listen port 0 is rejected",
                "[proxy]",
                "[proxy]\nlisten = [\"127.0.0.1:0\"]",
                "proxy.listen[0] = \"127.0.0.1:0\": has port 0",
            ),
            (
                "admin port 0 is rejected",
                "[proxy]",
                "[proxy]\nadmin_listen = \"127.0.0.1:0\"",
                "proxy.admin_listen = \"127.0.0.1:0\": has port 0",
            ),
            (
                "grace period over an hour is rejected",
                "[proxy]",
                "[proxy]\ngrace_period_seconds = 18446744073709551615",
                "proxy.grace_period_seconds = 18446744073709551615: must be between 0 and 3600",
            ),
            (
                "shutdown timeout over five minutes is rejected",
                "[proxy]",
                "[proxy]\nshutdown_timeout_seconds = 301",
                "proxy.shutdown_timeout_seconds = 301: must be between 0 and 300",
            ),
            (
                "cors origin in capitals is rejected",
                "auth = \"required\"",
                "auth = \"required\"\n[proxy.routes.cors]\nallowed_origins = [\"https://App.example.com\"]",
                "allowed_origins[0] = \"https://App.example.com\": is not written as browsers send it; write \"https://app.example.com\"",
            ),
            (
                "cors origin with default port is rejected",
                "auth = \"required\"",
                "auth = \"required\"\n[proxy.routes.cors]\nallowed_origins = [\"https://app.example.com:443\"]",
                "write \"https://app.example.com\"",
            ),
            (
                "cors origin with unicode host is rejected",
                "auth = \"required\"",
                "auth = \"required\"\n[proxy.routes.cors]\nallowed_origins = [\"https://bücher.example\"]",
                "write \"https://xn--bcher-kva.example\"",
            ),
            (
                "relative upgrade socket is rejected",
                "[proxy]",
                "[proxy]\nupgrade_socket = \"upgrade.sock\"",
                "proxy.upgrade_socket = \"upgrade.sock\": must be an absolute file path",
            ),
            (
                "plain http key set off loopback is rejected",
                "http://127.0.0.1:8000",
                "http://auth.example.com",
                "plain http is allowed only to a loopback host",
            ),
            (
                "missing key source is rejected",
                "hanko_api_url = \"http://127.0.0.1:8000\"",
                "",
                "proxy.auth.hanko_api_url is missing",
            ),
            (
                "hmac algorithm is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nalgorithms = [\"HS256\"]",
                "proxy.auth.algorithms[0] = \"HS256\"",
            ),
            (
                "unknown algorithm is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nalgorithms = [\"none\"]",
                "proxy.auth.algorithms[0] = \"none\"",
            ),
            (
                "large leeway is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nleeway_seconds = 3600",
                "proxy.auth.leeway_seconds = 3600",
            ),
            (
                "token size limit is bounded",
                "[proxy.auth]",
                "[proxy.auth]\nmax_token_bytes = 10",
                "proxy.auth.max_token_bytes = 10",
            ),
            (
                "bad cookie name is rejected",
                "[proxy.auth]",
                "[proxy.auth]\ncookie_name = \"a b\"",
                "proxy.auth.cookie_name = \"a b\"",
            ),
            (
                "claim header clashing with user id is rejected",
                "[[proxy.routes]]",
                "[proxy.auth.claim_headers]\n\"email.address\" = \"x-user-id\"\n[[proxy.routes]]",
                "already used",
            ),
            (
                "reserved claim header is rejected",
                "[[proxy.routes]]",
                "[proxy.auth.claim_headers]\n\"email.address\" = \"Authorization\"\n[[proxy.routes]]",
                "managed by the proxy",
            ),
            (
                "underscore identity header is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nuser_id_header = \"x_user\"",
                "proxy.auth.user_id_header = \"x_user\"",
            ),
            (
                "empty claim path segment is rejected",
                "[[proxy.routes]]",
                "[proxy.auth.claim_headers]\n\"email..address\" = \"x-email\"\n[[proxy.routes]]",
                "dot-separated",
            ),
            (
                "zero token cache size is rejected",
                "[proxy.auth]",
                "[proxy.auth]\ntoken_cache = { max_entries = 0 }",
                "proxy.auth.token_cache.max_entries = 0",
            ),
            (
                "zero jwks fetch timeout is rejected",
                "[proxy.auth]",
                "[proxy.auth]\njwks = { fetch_timeout_ms = 0 }",
                "proxy.auth.jwks.fetch_timeout_ms = 0",
            ),
            (
                "zero unknown kid cooldown is rejected",
                "[proxy.auth]",
                "[proxy.auth]\njwks = { unknown_kid_cooldown_seconds = 0 }",
                "proxy.auth.jwks.unknown_kid_cooldown_seconds = 0",
            ),
            (
                "stale window over a day is rejected",
                "[proxy.auth]",
                "[proxy.auth]\njwks = { stale_seconds = 86401 }",
                "proxy.auth.jwks.stale_seconds = 86401",
            ),
            (
                "huge stale window is rejected",
                "[proxy.auth]",
                "[proxy.auth]\njwks = { stale_seconds = 9223372036854775807 }",
                "proxy.auth.jwks.stale_seconds = 9223372036854775807",
            ),
            (
                "route prefix must be normal",
                "path_prefix = \"/api\"",
                "path_prefix = \"/api//v1\"",
                "write \"/api/v1\"",
            ),
            (
                "relative route prefix is rejected",
                "path_prefix = \"/api\"",
                "path_prefix = \"api\"",
                "proxy.routes[0].path_prefix = \"api\"",
            ),
            (
                "bad upstream is named",
                "upstream = \"127.0.0.1:8081\"",
                "upstream = [\"127.0.0.1:8081\", \"nowhere\"]",
                "proxy.routes[0].upstream[1] = \"nowhere\"",
            ),
            (
                "bad auth mode is named",
                "auth = \"required\"",
                "auth = \"maybe\"",
                "proxy.routes[0].auth = \"maybe\"",
            ),
            (
                "forward_token on a none route is rejected",
                "auth = \"required\"",
                "auth = \"none\"\nforward_token = false",
                "proxy.routes[0].forward_token = false: has no effect with auth = \"none\"",
            ),
            (
                "lower case method is rejected",
                "auth = \"required\"",
                "auth = \"required\"\nmethods = [\"get\"]",
                "proxy.routes[0].methods[0] = \"get\"",
            ),
            (
                "lower case CORS method is rejected",
                "auth = \"required\"",
                "auth = \"required\"\n[proxy.routes.cors]\nallowed_origins = [\"https://app.example.com\"]\nallowed_methods = [\"get\"]",
                "proxy.routes[0].cors.allowed_methods[0] = \"get\"",
            ),
            (
                "bad CORS request header is rejected",
                "auth = \"required\"",
                "auth = \"required\"\n[proxy.routes.cors]\nallowed_origins = [\"https://app.example.com\"]\nallowed_headers = [\"x header\"]",
                "proxy.routes[0].cors.allowed_headers[0] = \"x header\"",
            ),
            (
                "bad CORS exposed header is rejected",
                "auth = \"required\"",
                "auth = \"required\"\n[proxy.routes.cors]\nallowed_origins = [\"https://app.example.com\"]\nexpose_headers = [\"x:y\"]",
                "proxy.routes[0].cors.expose_headers[0] = \"x:y\"",
            ),
            (
                "zero timeout is rejected",
                "auth = \"required\"",
                "auth = \"required\"\nread_timeout_ms = 0",
                "proxy.routes[0].read_timeout_ms = 0",
            ),
            (
                "session check validate without url is rejected",
                "hanko_api_url = \"http://127.0.0.1:8000\"",
                "jwks_url = \"http://127.0.0.1:8000/keys\"\nsession_check = \"validate\"",
                "session_check = \"validate\" needs hanko_api_url",
            ),
            (
                "plain http session validate url off loopback is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nsession_check = \"validate\"\nsession_validate_url = \"http://auth.example.com/sessions/validate\"",
                "proxy.auth.session_validate_url",
            ),
            (
                "unknown session check is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nsession_check = \"hanko\"",
                "proxy.auth.session_check = \"hanko\"",
            ),
            (
                "unknown session unreachable is rejected",
                "[proxy.auth]",
                "[proxy.auth]\nsession_unreachable = \"ignore\"",
                "proxy.auth.session_unreachable = \"ignore\"",
            ),
        ];
        for (case, from, to, expected) in cases {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL, "{case}: the edit changes nothing");
            let problems = match Config::from_toml(&text) {
                Ok(_) => panic!("{case}: the config was accepted"),
                Err(error) => error.problems().to_vec(),
            };
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{case}: expected a problem containing {expected:?}, got {problems:#?}"
            );
        }
    }

    #[test]
    fn unknown_top_level_table_is_rejected() {
        let text = format!("{MINIMAL}\n[proxyy]\nlisten = 1\n");
        assert_rejected(&text, "proxyy");
    }

    #[test]
    fn backend_table_is_ignored() {
        let text = format!("{MINIMAL}\n[backend]\nanything = 1\n");
        assert!(Config::from_toml(&text).is_ok());
    }

    #[test]
    fn plain_http_to_localhost_is_accepted() {
        let text = MINIMAL.replace("http://127.0.0.1:8000", "http://localhost:8000");
        assert!(Config::from_toml(&text).is_ok());
    }

    #[test]
    fn explicit_jwks_url_wins() {
        let text = MINIMAL.replace(
            "[proxy.auth]",
            "[proxy.auth]\njwks_url = \"http://127.0.0.1:9999/keys\"",
        );
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(config.auth.jwks_url.as_str(), "http://127.0.0.1:9999/keys");
    }

    #[test]
    fn disabled_token_cache_is_none() {
        let text = MINIMAL.replace(
            "[proxy.auth]",
            "[proxy.auth]\ntoken_cache = { enabled = false }",
        );
        let config = Config::from_toml(&text).expect("valid");
        assert!(config.auth.token_cache.is_none());
    }

    #[test]
    fn missing_routes_are_rejected() {
        let text = MINIMAL
            .split("[[proxy.routes]]")
            .next()
            .expect("text before routes")
            .to_owned();
        assert_rejected(&text, "proxy.routes is missing");
    }

    #[test]
    fn route_prefix_trailing_slash_is_dropped() {
        let text = MINIMAL.replace("path_prefix = \"/api\"", "path_prefix = \"/api/\"");
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(config.routes[0].path_prefix, "/api");
    }

    #[test]
    fn root_prefix_is_kept() {
        let text = MINIMAL.replace("path_prefix = \"/api\"", "path_prefix = \"/\"");
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(config.routes[0].path_prefix, "/");
    }

    #[test]
    fn duplicate_routes_are_rejected() {
        let route = MINIMAL
            .split("[[proxy.routes]]")
            .nth(1)
            .expect("route text")
            .to_owned();
        let text = format!("{MINIMAL}\n[[proxy.routes]]{route}");
        assert_rejected(&text, "proxy.routes[0] has the same path_prefix and host");
    }

    #[test]
    fn upstream_name_gives_every_address() {
        let text = MINIMAL.replace("127.0.0.1:8081", "localhost:8081");
        let config = Config::from_toml(&text).expect("valid");
        let resolved: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs("localhost:8081")
                .expect("localhost resolves")
                .collect();
        assert!(!resolved.is_empty());
        assert_eq!(config.routes[0].upstreams, resolved);
    }

    #[test]
    fn host_with_port_is_rejected() {
        for host in ["app.example.com:8443", "app.example.com.", "[::1]:80"] {
            let text = format!("{MINIMAL}host = \"{host}\"\n");
            assert_rejected(&text, "without port or trailing dot");
        }
        for host in ["App.Example.com", "[::1]", "127.0.0.1"] {
            let text = format!("{MINIMAL}host = \"{host}\"\n");
            Config::from_toml(&text).unwrap_or_else(|error| panic!("{host}: {error}"));
        }
    }

    #[test]
    fn routes_sharing_a_method_are_rejected() {
        let route = MINIMAL
            .split("[[proxy.routes]]")
            .nth(1)
            .expect("route text")
            .to_owned();
        let with_methods = |methods: &str| format!("{route}methods = {methods}\n");
        for (first, second) in [
            ("[\"GET\", \"POST\"]", "[\"POST\"]"),
            ("[\"GET\"]", "[\"HEAD\"]"),
        ] {
            let text = format!(
                "{MINIMAL}methods = {first}\n[[proxy.routes]]{}",
                with_methods(second)
            );
            assert_rejected(&text, "takes some of the same methods");
        }

        // Disjoint method lists, or one route without a list, are fine.
        for (first, second) in [("[\"GET\"]", "[\"POST\"]"), ("[\"DELETE\"]", "")] {
            let second = if second.is_empty() {
                route.clone()
            } else {
                with_methods(second)
            };
            let text = format!("{MINIMAL}methods = {first}\n[[proxy.routes]]{second}");
            Config::from_toml(&text).unwrap_or_else(|error| panic!("{first}: {error}"));
        }
    }

    #[test]
    fn cors_wildcard_with_credentials_is_rejected() {
        let text = format!(
            "{MINIMAL}\ncors = {{ allowed_origins = [\"*\"], allow_credentials = true }}\n"
        );
        assert_rejected(&text, "cannot be combined with allow_credentials");
    }

    #[test]
    fn cors_origin_with_path_is_rejected() {
        let text =
            format!("{MINIMAL}\ncors = {{ allowed_origins = [\"https://app.example.com/x\"] }}\n");
        assert_rejected(&text, "allowed_origins[0]");
    }

    #[test]
    fn cors_origin_is_accepted() {
        let text = format!(
            "{MINIMAL}\ncors = {{ allowed_origins = [\"https://app.example.com\"], allow_credentials = true }}\n"
        );
        let config = Config::from_toml(&text).expect("valid");
        assert!(config.routes[0].cors.is_some());
    }

    #[test]
    fn session_check_defaults_to_jwks() {
        let config = Config::from_toml(MINIMAL).expect("valid");
        assert!(config.auth.session_check.is_none());
    }

    #[test]
    fn session_check_validate_derives_url_and_defaults() {
        let text = MINIMAL.replace("[proxy.auth]", "[proxy.auth]\nsession_check = \"validate\"");
        let session = session_check(&text);

        assert_eq!(
            session.validate_url.as_str(),
            "http://127.0.0.1:8000/sessions/validate"
        );
        assert_eq!(session.cache_ttl, std::time::Duration::from_secs(30));
        assert_eq!(session.timeout, std::time::Duration::from_millis(2000));
        assert_eq!(session.unreachable, UnreachablePolicy::Reject);
    }

    #[test]
    fn session_validate_url_keeps_tenant_path() {
        let text = MINIMAL
            .replace(
                "http://127.0.0.1:8000",
                "https://auth.example.com/tenant-1/",
            )
            .replace("[proxy.auth]", "[proxy.auth]\nsession_check = \"validate\"");
        assert_eq!(
            session_check(&text).validate_url.as_str(),
            "https://auth.example.com/tenant-1/sessions/validate"
        );
    }

    #[test]
    fn session_accept_policy_is_read() {
        let text = MINIMAL.replace(
            "[proxy.auth]",
            "[proxy.auth]\nsession_check = \"validate\"\nsession_unreachable = \"accept\"\nsession_accept_unreachable_seconds = 120",
        );
        assert_eq!(
            session_check(&text).unreachable,
            UnreachablePolicy::Accept {
                max_since_reachable: std::time::Duration::from_secs(120)
            }
        );
    }

    #[test]
    fn explicit_session_validate_url_is_enough() {
        let text = MINIMAL.replace(
            "hanko_api_url = \"http://127.0.0.1:8000\"",
            "jwks_url = \"http://127.0.0.1:8000/keys\"\nsession_check = \"validate\"\nsession_validate_url = \"http://127.0.0.1:7000/v\"",
        );
        assert_eq!(
            session_check(&text).validate_url.as_str(),
            "http://127.0.0.1:7000/v"
        );
    }

    #[test]
    fn session_times_are_bounded() {
        for (line, expected) in [
            (
                "session_cache_seconds = 0",
                "proxy.auth.session_cache_seconds = 0",
            ),
            (
                "session_cache_seconds = 86400",
                "proxy.auth.session_cache_seconds = 86400",
            ),
            (
                "session_accept_unreachable_seconds = 3601",
                "proxy.auth.session_accept_unreachable_seconds = 3601",
            ),
            (
                "session_timeout_ms = 0",
                "proxy.auth.session_timeout_ms = 0",
            ),
            (
                "session_cache_max_entries = 0",
                "proxy.auth.session_cache_max_entries = 0",
            ),
        ] {
            let text = MINIMAL.replace(
                "[proxy.auth]",
                &format!("[proxy.auth]\nsession_check = \"validate\"\n{line}"),
            );
            assert_rejected(&text, expected);
        }
    }

    #[test]
    fn rate_limit_is_read() {
        let text = format!("{MINIMAL}rate_limit = {{ requests_per_second = 5, burst = 10 }}\n");
        let config = Config::from_toml(&text).expect("valid");
        let limit = config.routes[0].rate_limit.expect("rate limit set");

        assert_eq!(limit.requests_per_second, 5.0);
        assert_eq!(limit.burst, 10);
    }

    #[test]
    fn fractional_rate_limit_is_accepted() {
        let text = format!("{MINIMAL}rate_limit = {{ requests_per_second = 0.5, burst = 1 }}\n");
        let config = Config::from_toml(&text).expect("valid");
        assert!(config.routes[0].rate_limit.is_some());
    }

    #[test]
    fn route_without_rate_limit_has_none() {
        let config = Config::from_toml(MINIMAL).expect("valid");
        assert!(config.routes[0].rate_limit.is_none());
    }

    #[test]
    fn bad_rate_limits_are_named() {
        for (value, expected) in [
            (
                "{ requests_per_second = 0, burst = 1 }",
                "proxy.routes[0].rate_limit.requests_per_second = 0.0",
            ),
            (
                "{ requests_per_second = -5, burst = 1 }",
                "proxy.routes[0].rate_limit.requests_per_second = -5.0",
            ),
            (
                "{ requests_per_second = nan, burst = 1 }",
                "proxy.routes[0].rate_limit.requests_per_second = NaN",
            ),
            (
                "{ requests_per_second = inf, burst = 1 }",
                "proxy.routes[0].rate_limit.requests_per_second = inf",
            ),
            (
                "{ requests_per_second = 5, burst = 0 }",
                "proxy.routes[0].rate_limit.burst = 0",
            ),
            (
                "{ requests_per_second = 5, burst = -3 }",
                "proxy.routes[0].rate_limit.burst = -3",
            ),
            (
                "{ requests_per_second = 5, burst = 10000000 }",
                "proxy.routes[0].rate_limit.burst = 10000000",
            ),
        ] {
            let text = format!("{MINIMAL}rate_limit = {value}\n");
            assert_rejected(&text, expected);
        }
    }

    #[test]
    fn rate_limit_needs_both_numbers_and_no_others() {
        let missing = format!("{MINIMAL}rate_limit = {{ requests_per_second = 5 }}\n");
        assert_rejected(&missing, "burst");
        let unknown = format!(
            "{MINIMAL}rate_limit = {{ requests_per_second = 5, burst = 1, per = \"user\" }}\n"
        );
        assert_rejected(&unknown, "per");
    }

    #[test]
    fn all_problems_are_reported_together() {
        let text = MINIMAL
            .replace("audience = \"localhost\"", "")
            .replace("auth = \"required\"", "auth = \"maybe\"");
        let problems = problems(&text);
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }
}
