//! Path normalisation, route matching and upstream peer choice.
//!
//! Routes match the normalised path: `//` merged, `.` and `..` resolved,
//! percent-encoded unreserved characters decoded (RFC 3986 sections 6.2.2 and
//! 5.2.4). Paths that would mean different things to the proxy and to the
//! upstream are rejected instead of guessed at: climbing above the root, an
//! encoded `/` or `\`, a raw backslash, a NUL or another control character,
//! and a `.` or `..` segment with parameters (`/..;x/`), which servlet
//! containers resolve as a dot segment and other servers do not.
//! Prefixes match whole segments, the longest prefix wins, and the query
//! string never takes part. Peers are chosen round-robin; a peer that
//! refused a connection is skipped for a short hold-down time.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::Method;

use crate::config::RouteConfig;
use crate::cors::CorsPolicy;
use crate::ratelimit::RateLimiter;

/// How long a peer that failed to connect is skipped while others remain.
const PEER_HOLD_DOWN: Duration = Duration::from_secs(5);

/// The reason a request path was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("The request path must start with /")]
    NotAbsolute,
    /// `..` would climb above the root.
    #[error("The request path climbs above the root")]
    AboveRoot,
    /// An encoded `/` or `\`, which proxy and upstream could split differently.
    #[error("The request path contains an encoded / or \\")]
    EncodedSeparator,
    /// A raw backslash, NUL or other control character.
    #[error("The request path contains a backslash or a control character")]
    ForbiddenByte,
    /// A `%` not followed by two hex digits, or an encoded NUL or control
    /// character.
    #[error("The request path has an invalid percent-encoding")]
    BadEncoding,
    /// A `.` or `..` segment followed by `;` parameters.
    #[error("The request path has a . or .. segment with ; parameters")]
    DotSegmentParameters,
    /// `;` parameters that decide the route: without them, as servlet
    /// containers read the path, another route would take it.
    #[error("The request path has ; parameters that change which route takes it")]
    RouteParameters,
}

/// Normalises a request path (without the query string).
///
/// Returns the input unchanged, without allocating, when it is already in
/// normal form.
///
/// # Errors
///
/// Returns the [`PathError`] for a path the proxy refuses to interpret.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path
        .bytes()
        .any(|byte| byte == b'\\' || byte.is_ascii_control())
    {
        return Err(PathError::ForbiddenByte);
    }
    if path.contains(';') && has_dot_segment_parameters(path) {
        return Err(PathError::DotSegmentParameters);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }

    let decoded = decode_unreserved(path)?;
    if has_dot_segment_parameters(&decoded) {
        return Err(PathError::DotSegmentParameters);
    }
    let ends_with_slash = decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    let mut last_was_dot = false;
    for segment in decoded.split('/').skip(1) {
        last_was_dot = false;
        match segment {
            "" => {}
            "." => last_was_dot = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                last_was_dot = true;
            }
            other => segments.push(other),
        }
    }

    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || ends_with_slash || last_was_dot {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Reports whether a segment of `path` is `.` or `..` followed by `;`
/// parameters, like `..;jsessionid=1`.
fn has_dot_segment_parameters(path: &str) -> bool {
    path.split('/')
        .any(|segment| matches!(segment.split_once(';'), Some(("." | "..", _))))
}

/// Returns `path` with the `;` parameters of every segment removed, the way
/// servlet containers read it: `/api;v=1/x` becomes `/api/x`.
pub fn without_parameters(path: &str) -> String {
    let mut plain = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            plain.push('/');
        }
        plain.push_str(segment.split_once(';').map_or(segment, |(name, _)| name));
    }
    plain
}

/// Reports whether `path` needs no change: no `%`, no empty segment except
/// a trailing one, and no `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    if path.contains('%') {
        return false;
    }
    let inner = path.strip_suffix('/').unwrap_or(path);
    inner
        .split('/')
        .skip(1)
        .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Decodes percent-encoded unreserved characters and upper-cases the hex of
/// the others, rejecting encoded separators and control characters.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte != b'%' {
            let char_len = utf8_len(byte);
            out.push_str(&path[index..index + char_len]);
            index += char_len;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(index + 1).and_then(|b| hex_value(*b)),
            bytes.get(index + 2).and_then(|b| hex_value(*b)),
        ) else {
            return Err(PathError::BadEncoding);
        };
        let decoded = high * 16 + low;
        match decoded {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            byte if byte.is_ascii_control() => return Err(PathError::BadEncoding),
            byte if is_unreserved(byte) => out.push(char::from(byte)),
            byte => {
                out.push('%');
                out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
                out.push(char::from(HEX_DIGITS[usize::from(byte & 0x0F)]));
            }
        }
        index += 3;
    }
    Ok(out)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Reports whether `byte` is an RFC 3986 unreserved character.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Returns the length of the UTF-8 sequence that starts with `byte`.
fn utf8_len(byte: u8) -> usize {
    match byte {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Reports whether `prefix` covers `path` segment by segment: `/api`
/// covers `/api` and `/api/x`, not `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Returns the host part of a `Host` value or authority: without the port,
/// keeping IPv6 brackets.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split_once(':').map_or(host, |(name, _)| name)
}

/// An upstream address and when it may be tried again after a failure.
#[derive(Debug)]
struct Peer {
    address: SocketAddr,
    /// Value of [`clock_ms`] until which the peer is skipped.
    down_until_ms: AtomicU64,
}

/// One route ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The validated settings.
    pub config: RouteConfig,
    /// Name used in logs: the prefix, with the host when set.
    pub label: String,
    /// The route's token buckets, when it has a rate limit.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    peers: Vec<Peer>,
    next_peer: AtomicUsize,
}

impl Route {
    fn new(config: RouteConfig) -> Self {
        let label = match &config.host {
            Some(host) => format!("{host}{}", config.path_prefix),
            None => config.path_prefix.clone(),
        };
        let peers = config
            .upstreams
            .iter()
            .map(|address| Peer {
                address: *address,
                down_until_ms: AtomicU64::new(0),
            })
            .collect();
        let rate_limiter = config
            .rate_limit
            .map(|settings| Arc::new(RateLimiter::new(settings)));
        Self {
            config,
            label,
            rate_limiter,
            peers,
            next_peer: AtomicUsize::new(0),
        }
    }

    /// Returns the path to send upstream for the normalised `path`.
    pub fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.config.strip_prefix || self.config.path_prefix == "/" {
            return path;
        }
        match path.get(self.config.path_prefix.len()..) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }

    /// Picks the next peer round-robin, skipping the `tried` ones and, while
    /// any other is left, those that failed recently. Returns `None` once
    /// every peer was tried.
    pub fn pick_peer(&self, tried: &[usize]) -> Option<usize> {
        let count = self.peers.len();
        let start = self.next_peer.fetch_add(1, Ordering::Relaxed) % count;
        let now = clock_ms();
        let untried = (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|index| !tried.contains(index));

        let mut fallback = None;
        for index in untried {
            if self.peers[index].down_until_ms.load(Ordering::Relaxed) <= now {
                return Some(index);
            }
            fallback.get_or_insert(index);
        }
        fallback
    }

    /// Returns the address of peer `index`.
    pub fn peer_address(&self, index: usize) -> SocketAddr {
        self.peers[index].address
    }

    /// Returns how many peers the route has.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Skips peer `index` for the hold-down time.
    pub fn mark_peer_failed(&self, index: usize) {
        let until = clock_ms() + u64::try_from(PEER_HOLD_DOWN.as_millis()).unwrap_or(u64::MAX);
        self.peers[index]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    fn matches(&self, host: Option<&str>, method: &Method, path: &str) -> bool {
        let method_allowed = self.config.methods.as_ref().is_none_or(|methods| {
            methods
                .iter()
                .any(|allowed| method_matches(allowed, method))
        });
        method_allowed && self.matches_host_and_path(host, path)
    }

    fn matches_host_and_path(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(route_host) = &self.config.host
            && !host.is_some_and(|host| host.eq_ignore_ascii_case(route_host))
        {
            return false;
        }
        prefix_matches(&self.config.path_prefix, path)
    }
}

/// Reports whether a route that lists `allowed` takes `method`.
///
/// Method names are case-sensitive, but some frameworks upper-case them and
/// most run their GET handler for HEAD. Matching the way those upstreams
/// read the request keeps `delete` or `HEAD` from landing on a route with
/// weaker authentication than the one for `DELETE` or `GET`.
pub fn method_matches(allowed: &Method, method: &Method) -> bool {
    allowed.as_str().eq_ignore_ascii_case(method.as_str())
        || (*allowed == Method::GET && method.as_str().eq_ignore_ascii_case("HEAD"))
}

/// All routes, ordered so the first match is the best one.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Orders the routes: longest prefix first, then routes limited to a
    /// host, then routes limited to methods.
    pub fn new(configs: Vec<RouteConfig>) -> Self {
        let mut routes: Vec<Route> = configs.into_iter().map(Route::new).collect();
        routes.sort_by_key(|route| {
            (
                std::cmp::Reverse(route.config.path_prefix.len()),
                route.config.host.is_none(),
                route.config.methods.is_none(),
            )
        });
        Self { routes }
    }

    /// Takes over the rate limit buckets of `previous` for every route with
    /// the same path prefix, host, methods and rate limit, so that a config
    /// reload does not give every user a full burst again.
    pub fn share_rate_limiters(&mut self, previous: &Router) {
        for route in &mut self.routes {
            let Some(settings) = route.config.rate_limit else {
                continue;
            };
            let kept = previous.routes.iter().find(|old| {
                old.config.path_prefix == route.config.path_prefix
                    && old.config.host == route.config.host
                    && old.config.methods == route.config.methods
                    && old.config.rate_limit == Some(settings)
            });
            if let Some(limiter) = kept.and_then(|old| old.rate_limiter.clone()) {
                route.rate_limiter = Some(limiter);
            }
        }
    }

    /// Finds the route for a request; `host` is without the port.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<&Route> {
        self.find_index(host, method, path)
            .map(|index| self.get(index))
    }

    /// Finds the index of the route for a request, for keeping in a request
    /// context; `host` is without the port.
    pub fn find_index(&self, host: Option<&str>, method: &Method, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|route| route.matches(host, method, path))
    }

    /// Returns the sorted methods of the routes that take this host and
    /// path, for the `Allow` header of a 405. After [`Router::find_index`]
    /// found no route, an empty list means no route takes the path at all.
    pub fn allowed_methods(&self, host: Option<&str>, path: &str) -> Vec<&str> {
        let mut allowed: Vec<&str> = self
            .routes
            .iter()
            .filter(|route| route.matches_host_and_path(host, path))
            .filter_map(|route| route.config.methods.as_ref())
            .flatten()
            .map(Method::as_str)
            .collect();
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        allowed.sort_unstable();
        allowed.dedup();
        allowed
    }

    /// Reports whether a route limited to a host takes `path`, for a
    /// request that names no host.
    pub fn host_limited_route_takes(&self, path: &str) -> bool {
        self.routes.iter().any(|route| {
            route.config.host.is_some() && prefix_matches(&route.config.path_prefix, path)
        })
    }

    /// Returns the CORS policy of the best route that takes this host and
    /// path whatever the method, for the headers of a 405.
    pub fn cors_for_path(&self, host: Option<&str>, path: &str) -> Option<&CorsPolicy> {
        self.routes
            .iter()
            .filter(|route| route.matches_host_and_path(host, path))
            .find_map(|route| route.config.cors.as_ref())
    }

    /// Returns the route at `index`, as returned by [`Router::find_index`].
    ///
    /// # Panics
    ///
    /// Panics when `index` did not come from this router.
    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }
}

/// Returns milliseconds since the first call, a cheap monotonic clock for
/// peer hold-down.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;
    use crate::cors::AllowedOrigins;

    fn normal(path: &str) -> Result<String, PathError> {
        normalize_path(path).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/api", "/api/v1/item", "/api/", "/a.b/c..d/~x"] {
            assert!(
                matches!(normalize_path(path), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn double_slashes_are_merged() {
        assert_eq!(normal("//api/v1/item"), Ok("/api/v1/item".to_owned()));
        assert_eq!(normal("/api//v1///item"), Ok("/api/v1/item".to_owned()));
        assert_eq!(normal("//"), Ok("/".to_owned()));
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(normal("/api/./v1/item"), Ok("/api/v1/item".to_owned()));
        assert_eq!(normal("/api/v1/../v1/item"), Ok("/api/v1/item".to_owned()));
        assert_eq!(normal("/api/v1/.."), Ok("/api/".to_owned()));
        assert_eq!(normal("/api/."), Ok("/api/".to_owned()));
        assert_eq!(normal("/public/../api/x"), Ok("/api/x".to_owned()));
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(normal("/api//"), Ok("/api/".to_owned()));
    }

    #[test]
    fn climbing_above_root_is_rejected() {
        assert_eq!(normal("/.."), Err(PathError::AboveRoot));
        assert_eq!(normal("/api/../../admin"), Err(PathError::AboveRoot));
        assert_eq!(normal("/%2e%2e/admin"), Err(PathError::AboveRoot));
        assert_eq!(normal("/%2E./admin"), Err(PathError::AboveRoot));
    }

    #[test]
    fn encoded_dots_are_resolved_like_plain_ones() {
        assert_eq!(normal("/api/%2e/v1"), Ok("/api/v1".to_owned()));
        assert_eq!(normal("/public/%2e%2e/api/x"), Ok("/api/x".to_owned()));
    }

    #[test]
    fn encoded_separators_are_rejected() {
        assert_eq!(normal("/api%2Fv1/item"), Err(PathError::EncodedSeparator));
        assert_eq!(
            normal("/api/v1/item/..%2f..%2fadmin"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normal("/api%5cv1"), Err(PathError::EncodedSeparator));
    }

    #[test]
    fn backslash_and_control_bytes_are_rejected() {
        assert_eq!(normal("/api\\v1"), Err(PathError::ForbiddenByte));
        assert_eq!(normal("/api\0"), Err(PathError::ForbiddenByte));
        assert_eq!(normal("/api/%00"), Err(PathError::BadEncoding));
        assert_eq!(normal("/api/%0a"), Err(PathError::BadEncoding));
    }

    #[test]
    fn broken_percent_encoding_is_rejected() {
        assert_eq!(normal("/api/%"), Err(PathError::BadEncoding));
        assert_eq!(normal("/api/%4"), Err(PathError::BadEncoding));
        assert_eq!(normal("/api/%zz"), Err(PathError::BadEncoding));
    }

    #[test]
    fn unreserved_characters_are_decoded() {
        assert_eq!(normal("/%61pi/v%31"), Ok("/api/v1".to_owned()));
        assert_eq!(normal("/a%7Eb"), Ok("/a~b".to_owned()));
    }

    #[test]
    fn reserved_characters_stay_encoded_in_upper_case() {
        assert_eq!(normal("/a%3fb"), Ok("/a%3Fb".to_owned()));
        assert_eq!(normal("/a%20b"), Ok("/a%20b".to_owned()));
        assert_eq!(normal("/caf%c3%a9"), Ok("/caf%C3%A9".to_owned()));
    }

    #[test]
    fn dot_segments_with_parameters_are_rejected() {
        for path in [
            "/public/..;/api/x",
            "/public/..;jsessionid=1/api",
            "/api/.;x/v1",
            "/public/%2e%2e;/api",
            "/public/%2E;x",
            "/..;",
        ] {
            assert_eq!(normal(path), Err(PathError::DotSegmentParameters), "{path}");
        }
        // Parameters on other segments, and an encoded `;`, are plain data.
        assert_eq!(normal("/api;v=1/x"), Ok("/api;v=1/x".to_owned()));
        assert_eq!(normal("/api/x..;y"), Ok("/api/x..;y".to_owned()));
        assert_eq!(normal("/api/..%3b/x"), Ok("/api/..%3B/x".to_owned()));
    }

    #[test]
    fn parameters_are_removed_per_segment() {
        assert_eq!(without_parameters("/api;v=1/x;y/z"), "/api/x/z");
        assert_eq!(without_parameters("/api/"), "/api/");
        assert_eq!(without_parameters("/;a"), "/");
    }

    #[test]
    fn relative_path_is_rejected() {
        assert_eq!(normal("api"), Err(PathError::NotAbsolute));
        assert_eq!(normal("*"), Err(PathError::NotAbsolute));
        assert_eq!(normal(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/API"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn host_port_is_removed() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    }

    fn route(prefix: &str, host: Option<&str>, methods: Option<&[&str]>) -> RouteConfig {
        RouteConfig {
            path_prefix: prefix.to_owned(),
            host: host.map(str::to_owned),
            methods: methods.map(|list| {
                list.iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).expect("method"))
                    .collect()
            }),
            upstreams: vec!["127.0.0.1:1".parse().expect("address")],
            auth: AuthMode::Required,
            forward_token: None,
            strip_prefix: false,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            cors: None,
            rate_limit: None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let router = Router::new(vec![
            route("/", None, None),
            route("/api", None, None),
            route("/api/v1", None, None),
        ]);
        let find = |path| {
            router
                .find(None, &Method::GET, path)
                .map(|r| r.label.as_str())
        };

        assert_eq!(find("/api/v1/item"), Some("/api/v1"));
        assert_eq!(find("/api/v2"), Some("/api"));
        assert_eq!(find("/apix"), Some("/"));
    }

    #[test]
    fn host_and_methods_narrow_the_match() {
        let router = Router::new(vec![
            route("/api", None, None),
            route("/api", Some("admin.example.com"), None),
            route("/api", None, Some(&["POST"])),
        ]);

        let admin = router
            .find(Some("ADMIN.example.com"), &Method::GET, "/api/x")
            .expect("route");
        assert_eq!(admin.label, "admin.example.com/api");
        let post = router.find(None, &Method::POST, "/api/x").expect("route");
        assert_eq!(post.config.methods.as_ref().map(Vec::len), Some(1));
        let get = router.find(None, &Method::GET, "/api/x").expect("route");
        assert!(get.config.host.is_none());
        assert!(get.config.methods.is_none());
    }

    #[test]
    fn no_route_is_none() {
        let router = Router::new(vec![route("/api", None, Some(&["GET"]))]);
        assert!(router.find(None, &Method::GET, "/other").is_none());
        assert!(router.find(None, &Method::DELETE, "/api").is_none());
    }

    #[test]
    fn method_matches_any_case_and_head() {
        let router = Router::new(vec![route("/api", None, Some(&["GET", "DELETE"]))]);
        for method in [&b"get"[..], b"Delete", b"HEAD", b"head"] {
            let method = Method::from_bytes(method).expect("a method");
            assert!(router.find(None, &method, "/api").is_some(), "{method}");
        }
        for method in [&b"POST"[..], b"DELETES", b"OPTIONS"] {
            let method = Method::from_bytes(method).expect("a method");
            assert!(router.find(None, &method, "/api").is_none(), "{method}");
        }
    }

    #[test]
    fn allowed_methods_merge_matching_routes() {
        let router = Router::new(vec![
            route("/api", None, Some(&["POST", "GET"])),
            route("/api", None, Some(&["PUT"])),
            route("/api", Some("admin.example.com"), Some(&["DELETE"])),
            route("/other", None, Some(&["PATCH"])),
        ]);

        assert_eq!(
            router.allowed_methods(None, "/api/x"),
            ["GET", "HEAD", "POST", "PUT"]
        );
        assert_eq!(
            router.allowed_methods(Some("admin.example.com"), "/api/x"),
            ["DELETE", "GET", "HEAD", "POST", "PUT"]
        );
        assert!(router.allowed_methods(None, "/nowhere").is_empty());
    }

    #[test]
    fn cors_for_path_ignores_methods() {
        let mut with_cors = route("/api/v1", None, Some(&["GET"]));
        with_cors.cors = Some(CorsPolicy::new(
            AllowedOrigins::Any,
            vec![Method::GET],
            Vec::new(),
            Vec::new(),
            false,
            600,
        ));
        let router = Router::new(vec![route("/api", None, Some(&["POST"])), with_cors]);

        assert!(router.cors_for_path(None, "/api/v1/x").is_some());
        assert!(router.cors_for_path(None, "/api/x").is_none());
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let mut config = route("/api", None, None);
        config.strip_prefix = true;
        let route = Route::new(config);

        assert_eq!(route.upstream_path("/api/v1/item"), "/v1/item");
        assert_eq!(route.upstream_path("/api"), "/");
        assert_eq!(route.upstream_path("/api/"), "/");
    }

    #[test]
    fn peers_rotate_and_failed_ones_are_skipped() {
        let mut config = route("/api", None, None);
        config.upstreams = vec![
            "127.0.0.1:1".parse().expect("address"),
            "127.0.0.1:2".parse().expect("address"),
            "127.0.0.1:3".parse().expect("address"),
        ];
        let route = Route::new(config);

        let picks: Vec<usize> = (0..3)
            .map(|_| route.pick_peer(&[]).expect("peer"))
            .collect();
        assert_eq!(picks, [0, 1, 2]);

        route.mark_peer_failed(1);
        let picks: Vec<usize> = (0..4)
            .map(|_| route.pick_peer(&[]).expect("peer"))
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");

        assert_eq!(
            route.pick_peer(&[0, 2]),
            Some(1),
            "a failed peer is the last resort"
        );
        assert_eq!(route.pick_peer(&[0, 1, 2]), None);
    }

    #[test]
    fn reload_keeps_buckets_of_unchanged_limits() {
        use crate::ratelimit::{RateDecision, RateKey, RateLimitSettings};

        let limited = |requests_per_second| {
            let mut config = route("/api", None, None);
            config.rate_limit = Some(RateLimitSettings {
                requests_per_second,
                burst: 1,
            });
            config
        };
        let user = || RateKey::User("ada".into());
        let previous = Router::new(vec![limited(0.01)]);
        let limiter = previous.get(0).rate_limiter.as_ref().expect("limited");
        assert_eq!(limiter.check(user()), RateDecision::Allowed);

        let mut same = Router::new(vec![limited(0.01)]);
        same.share_rate_limiters(&previous);
        let kept = same.get(0).rate_limiter.as_ref().expect("limited");
        assert!(matches!(kept.check(user()), RateDecision::Limited { .. }));

        let mut changed = Router::new(vec![limited(0.02)]);
        changed.share_rate_limiters(&previous);
        let fresh = changed.get(0).rate_limiter.as_ref().expect("limited");
        assert_eq!(fresh.check(user()), RateDecision::Allowed);
    }
}
