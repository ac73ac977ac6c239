//! The Pingora `ProxyHttp` implementation: the request path from arrival to
//! the access log, with the methods in the order Pingora calls them.
//!
//! 1. `new_ctx`: load the runtime once, start the clock, count the request
//!    as in flight until its context is dropped.
//! 2. `request_filter`: request id, keep-alive timeout, client address,
//!    path normalisation, CORS preflight, route, token (and session check),
//!    then the route's rate limit, which comes after authentication so it
//!    can count per verified user. Every refusal gets its response here
//!    and never reaches an upstream.
//! 3. `upstream_peer` / `fail_to_connect`: round-robin peer, skipping peers
//!    that refused a connection.
//! 4. `upstream_request_filter`: strip spoofed identity and forwarding
//!    headers and, unless `forward_token` is set, the token; set the
//!    forwarding headers, the identity and the normalised path.
//! 5. `response_filter`: request id and CORS headers on the response.
//! 6. `fail_to_proxy`: upstream failures as problem+json 502/504.
//! 7. `logging`: one access event and the request metrics per request.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header::{ALLOW, AUTHORIZATION, COOKIE, HOST, ORIGIN};
use http::{HeaderName, HeaderValue, Method, Version};
use pingora::http::authority::{RawTargetAuthority, is_http_family_scheme, raw_target_authority};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::auth::AuthError;
use crate::auth::extract::{Extracted, TokenSource, extract, without_cookie};
use crate::auth::token::Refusal;
use crate::config::AuthMode;
use crate::cors::{self, CorsRejection, preflight_parts};
use crate::error::{Rejection, respond};
use crate::forwarding::{
    Client, FORWARDED, X_FORWARDED_FOR, X_FORWARDED_HOST, X_REAL_IP, trusted_scheme,
};
use crate::identity::Identity;
use crate::logging;
use crate::metrics::{self, InFlight};
use crate::ratelimit::{RateDecision, RateKey};
use crate::routing::{PathError, host_without_port, normalize_path, without_parameters};
use crate::runtime::{Runtime, SharedRuntime};

/// Header carrying the request id to the upstream and back to the client.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

// The names the proxy inserts on every request, as they go on the wire.
// Pingora stores each inserted name to keep its case. It stores a
// `&'static str` as is, but copies a `HeaderName` outside the standard set.
const REQUEST_ID_NAME: &str = "X-Request-Id";
const X_FORWARDED_FOR_NAME: &str = "X-Forwarded-For";
const X_FORWARDED_PROTO_NAME: &str = "X-Forwarded-Proto";
const X_FORWARDED_HOST_NAME: &str = "X-Forwarded-Host";
const X_REAL_IP_NAME: &str = "X-Real-IP";
/// `Cookie`, for the headers rebuilt without the session cookie.
const COOKIE_NAME: &str = "Cookie";

/// Maximum length of a client-sent request id that is kept, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 128;
/// Buffer for a generated request id: a 12-digit hex prefix, a dash and
/// a `u64` counter in at most 16 hex digits.
const REQUEST_ID_BUFFER_BYTES: usize = 32;
/// Buffer for an IP address in text. The longest IPv6 text form, with an
/// embedded IPv4 address, has 45 bytes.
const IP_TEXT_BUFFER_BYTES: usize = 48;
/// How long an idle upstream connection stays in the pool.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy logic shared by all worker threads.
pub struct EdgeProxy {
    runtime: SharedRuntime,
    request_ids: RequestIds,
}

/// Per-request state, kept until the access log is written.
pub struct RequestContext {
    runtime: Arc<Runtime>,
    started: Instant,
    request_id: HeaderValue,
    /// The client, from the TCP peer and a trusted proxy's headers.
    client: Option<Client>,
    route: Option<usize>,
    /// The path sent upstream, when it differs from the request's raw target.
    upstream_target: Option<String>,
    peer: Option<usize>,
    /// Peers this request could not connect to. A peer whose pooled
    /// connection broke stays eligible for the one retry that allows.
    failed_peers: Vec<usize>,
    /// Whether the request was already sent again after a pooled
    /// connection broke.
    retried_broken_connection: bool,
    identity: Option<Arc<Identity>>,
    token_source: Option<TokenSource>,
    token_from_cache: bool,
    rejection: Option<Rejection>,
    cors_headers: Vec<(HeaderName, HeaderValue)>,
    /// The `Allow` value of a 405: the methods the path's routes accept.
    allow: Option<HeaderValue>,
    /// When the first upstream peer was picked.
    upstream_started: Option<Instant>,
    /// Time from `upstream_started` to the upstream's response header.
    upstream_latency: Option<Duration>,
    _in_flight: InFlight,
}

impl EdgeProxy {
    /// Creates the proxy over a shared runtime.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self {
            runtime,
            request_ids: RequestIds::new(),
        }
    }

    /// Writes `rejection` with the request id and CORS headers and records
    /// it for the access log. Returns `Ok(true)`: the response is written.
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        rejection: Rejection,
    ) -> pingora::Result<bool> {
        ctx.rejection = Some(rejection);
        let mut extra = Vec::with_capacity(2 + ctx.cors_headers.len());
        extra.push((REQUEST_ID.clone(), ctx.request_id.clone()));
        if let Some(allow) = &ctx.allow {
            extra.push((ALLOW, allow.clone()));
        }
        extra.extend(ctx.cors_headers.iter().cloned());
        respond(session, rejection, &extra).await?;
        Ok(true)
    }

    /// Normalises the path, handles a CORS preflight and finds the route,
    /// storing what later phases need in `ctx`. Returns the headers of a
    /// preflight response when the request is an allowed preflight.
    fn route_request(
        request: &RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Option<Vec<(HeaderName, HeaderValue)>>, Rejection> {
        if !request.raw_path_is_utf8() {
            return Err(Rejection::BadPath(PathError::ForbiddenByte));
        }
        // RFC 9112 section 3.2 requires Host in HTTP/1.1.
        if request.version == Version::HTTP_11 && !request.headers.contains_key(HOST) {
            return Err(Rejection::MissingHost);
        }
        let path = normalize_path(request.uri.path()).map_err(Rejection::BadPath)?;
        let host = request_host(request);
        let router = &ctx.runtime.router;
        // Without a host, routes limited to one could be skipped for ones
        // meant for any host.
        if host.is_none() && router.host_limited_route_takes(&path) {
            return Err(Rejection::MissingHost);
        }
        if path.contains(';')
            && router.find_index(host, &request.method, &path)
                != router.find_index(host, &request.method, &without_parameters(&path))
        {
            return Err(Rejection::BadPath(PathError::RouteParameters));
        }

        let preflight = preflight_parts(request);
        if let Some((origin, requested)) = preflight {
            let cors_route = Method::from_bytes(requested.as_bytes())
                .ok()
                .and_then(|method| router.find_index(host, &method, &path))
                .and_then(|index| {
                    let cors = router.get(index).config.cors.as_ref()?;
                    Some((index, cors))
                });
            if let Some((index, cors)) = cors_route {
                ctx.route = Some(index);
                return cors
                    .preflight_headers(origin, requested.as_bytes())
                    .map(Some)
                    .map_err(Rejection::CorsRefused);
            }
        }

        let Some(index) = router.find_index(host, &request.method, &path) else {
            let allowed = router.allowed_methods(host, &path);
            if allowed.is_empty() {
                return Err(Rejection::NoRoute);
            }
            if let Some(cors) = router.cors_for_path(host, &path) {
                // A preflight for a method that no route takes is refused
                // like one for a method the CORS policy leaves out.
                if preflight.is_some() {
                    return Err(Rejection::CorsRefused(CorsRejection::Method));
                }
                // Lets a page read the 405 and its Allow header.
                if let Some(origin) = request.headers.get(ORIGIN) {
                    ctx.cors_headers = cors.response_headers(origin);
                }
            }
            // Method names are tokens, which are valid header characters.
            ctx.allow = HeaderValue::from_str(&allowed.join(", ")).ok();
            return Err(Rejection::MethodNotAllowed);
        };
        let route = router.get(index);
        ctx.route = Some(index);
        if let (Some(cors), Some(origin)) = (&route.config.cors, request.headers.get(ORIGIN)) {
            ctx.cors_headers = cors.response_headers(origin);
        }
        ctx.upstream_target = upstream_target(request, route.upstream_path(&path));
        Ok(None)
    }

    /// Runs the route's authentication and stores the identity in `ctx`.
    async fn authenticate(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
        mode: AuthMode,
    ) -> Result<(), Rejection> {
        if mode == AuthMode::None {
            return Ok(());
        }
        let runtime = ctx.runtime.clone();
        let (token, source) = match extract(&session.req_header().headers, &runtime.cookie_name) {
            Extracted::Ambiguous => return Err(Rejection::DuplicateAuthorization),
            Extracted::None if mode == AuthMode::Required => return Err(Rejection::MissingToken),
            Extracted::None => return Ok(()),
            Extracted::Malformed(source) => {
                ctx.token_source = Some(source);
                return Err(Rejection::InvalidToken(Refusal::Malformed));
            }
            Extracted::Token(token, source) => (token, source),
        };
        ctx.token_source = Some(source);

        match runtime.authenticator.authenticate(token).await {
            Ok(authenticated) => {
                ctx.identity = Some(authenticated.identity);
                ctx.token_from_cache = authenticated.from_cache;
                Ok(())
            }
            Err(AuthError::Invalid(refusal)) => Err(Rejection::InvalidToken(refusal)),
            Err(AuthError::Unavailable(unavailable)) => Err(Rejection::KeysUnavailable {
                retry_after_seconds: unavailable.retry_after_seconds,
            }),
            Err(AuthError::SessionUnavailable(unavailable)) => {
                Err(Rejection::SessionCheckUnavailable {
                    retry_after_seconds: unavailable.retry_after_seconds,
                })
            }
        }
    }

    /// Counts the request against the route's rate limit, keyed by the
    /// verified user, else by the client address. Routes without a limit
    /// cost one branch.
    fn check_rate_limit(ctx: &RequestContext) -> Result<(), Rejection> {
        let Some(route) = ctx.route else {
            return Ok(());
        };
        let Some(limiter) = &ctx.runtime.router.get(route).rate_limiter else {
            return Ok(());
        };
        let key = match (&ctx.identity, &ctx.client) {
            (Some(identity), _) => RateKey::User(identity.subject.as_str().into()),
            (None, Some(client)) => RateKey::address(client.address),
            // Listeners are TCP only, so every client has an address; were
            // one missing, such requests would share one bucket.
            (None, None) => RateKey::address(std::net::Ipv4Addr::UNSPECIFIED.into()),
        };
        match limiter.check(key) {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited {
                retry_after_seconds,
            } => Err(Rejection::RateLimited {
                retry_after_seconds,
            }),
        }
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestContext;

    /// Registers no downstream module. Pingora's default registers a
    /// response compression module at level 0: it compresses nothing, but
    /// its context is allocated and its hooks run for every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            runtime: self.runtime.load_full(),
            started: Instant::now(),
            request_id: HeaderValue::from_static("-"),
            client: None,
            route: None,
            upstream_target: None,
            peer: None,
            failed_peers: Vec::new(),
            retried_broken_connection: false,
            identity: None,
            token_source: None,
            token_from_cache: false,
            rejection: None,
            cors_headers: Vec::new(),
            allow: None,
            upstream_started: None,
            upstream_latency: None,
            _in_flight: InFlight::start(),
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora::Result<bool> {
        ctx.request_id = self.request_ids.keep_or_create(session.req_header());
        // Once it has read a request, Pingora keeps an HTTP/1.1 connection
        // open without a time limit, so an idle client would hold memory
        // and a file descriptor forever. Connections it will close stay
        // closed.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(ctx.runtime.keepalive_timeout_seconds));
        }
        ctx.client = peer_ip(session).map(|peer| {
            ctx.runtime
                .trusted_proxies
                .client(peer, &session.req_header().headers)
        });

        match Self::route_request(session.req_header(), ctx) {
            Ok(None) => {}
            Ok(Some(preflight)) => {
                return write_preflight(session, &ctx.request_id, preflight).await;
            }
            Err(rejection) => return self.reject(session, ctx, rejection).await,
        }

        let route = ctx.route.expect("route_request stores the route it found");
        let mode = ctx.runtime.router.get(route).config.auth;
        if let Err(rejection) = self.authenticate(session, ctx, mode).await {
            return self.reject(session, ctx, rejection).await;
        }
        match Self::check_rate_limit(ctx) {
            Ok(()) => Ok(false),
            Err(rejection) => self.reject(session, ctx, rejection).await,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora::Result<Box<HttpPeer>> {
        let index = ctx
            .route
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let route = ctx.runtime.router.get(index);
        let Some(peer_index) = route.pick_peer(&ctx.failed_peers) else {
            let mut error = Error::explain(ErrorType::ConnectError, "every upstream peer failed");
            error.esource = ErrorSource::Upstream;
            return Err(error);
        };
        ctx.peer = Some(peer_index);
        ctx.upstream_started.get_or_insert_with(Instant::now);

        let mut peer = HttpPeer::new(route.peer_address(peer_index), false, String::new());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.total_connection_timeout = Some(route.config.connect_timeout);
        peer.options.read_timeout = Some(route.config.read_timeout);
        peer.options.write_timeout = Some(route.config.read_timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut error: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(peer)) = (ctx.route, ctx.peer) {
            let route = ctx.runtime.router.get(route);
            route.mark_peer_failed(peer);
            ctx.failed_peers.push(peer);
            let untried = route.peer_count() > ctx.failed_peers.len();
            error.set_retry(untried);
        }
        error
    }

    /// Decides, as Pingora's default does, whether a request whose
    /// exchange failed may be sent again: only an idempotent one, with its
    /// body still buffered, after a pooled connection broke. Unlike the
    /// default, which allows as many tries as the retry limit, it allows
    /// one, so a request that makes the upstream drop the connection is
    /// not replayed on every pooled connection.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut RequestContext,
        client_reused: bool,
    ) -> Box<Error> {
        let mut error = error.more_context(format!("Peer: {peer}"));
        let resendable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && !ctx.retried_broken_connection;
        if resendable {
            error.retry.decide_reuse(client_reused);
        } else {
            error.set_retry(false);
        }
        ctx.retried_broken_connection |= error.retry();
        error
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        let via_trusted_proxy = ctx.client.as_ref().is_some_and(Client::via_trusted_proxy);
        ctx.runtime
            .identity_headers
            .strip(upstream_request, via_trusted_proxy);
        // Routes with `auth = "none"` read no token, so they remove none.
        let route = ctx.route.map(|index| &ctx.runtime.router.get(index).config);
        if let Some(route) = route.filter(|route| route.auth != AuthMode::None) {
            let forward = route.forward_token.unwrap_or(ctx.runtime.forward_token);
            remove_token(
                upstream_request,
                ctx.token_source,
                &ctx.runtime.cookie_name,
                forward,
            )?;
        }

        set_forwarding_headers(
            upstream_request,
            ctx.client.as_ref(),
            &session.req_header().headers,
        )?;
        upstream_request.insert_header(REQUEST_ID_NAME, ctx.request_id.clone())?;

        if let Some(identity) = &ctx.identity {
            for (name, value) in &identity.headers {
                upstream_request.insert_header(name.clone(), value.clone())?;
            }
        }
        if let Some(target) = &ctx.upstream_target {
            upstream_request.set_raw_path(target.as_bytes())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> pingora::Result<()> {
        ctx.upstream_latency = ctx.upstream_started.map(|started| started.elapsed());
        upstream_response.insert_header(REQUEST_ID_NAME, ctx.request_id.clone())?;
        let policy = ctx
            .route
            .and_then(|index| ctx.runtime.router.get(index).config.cors.as_ref());
        if let Some(policy) = policy {
            cors::apply_to_response(upstream_response, policy, &ctx.cors_headers)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let Some(rejection) = Rejection::from_proxy_error(error) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            // The connection is not reused after a proxy failure; saying so
            // keeps clients from sending the next request into a closed socket.
            session.set_keepalive(None);
            if let Err(write_error) = self.reject(session, ctx, rejection).await {
                tracing::debug!(error = %write_error, "writing the error response failed");
            }
        } else {
            ctx.rejection = Some(rejection);
        }
        FailToProxy {
            error_code: rejection.status(),
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &RequestContext,
        _error: &Error,
    ) -> bool {
        // The access event in `logging` carries the error, so Pingora's own
        // error line would log the same failure twice.
        true
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
        let request = session.req_header();
        let status = session
            .response_written()
            .map_or(0, |response| response.status.as_u16());
        let route = ctx.route.map(|index| ctx.runtime.router.get(index));
        let upstream = match (route, ctx.peer) {
            (Some(route), Some(peer)) => Some(route.peer_address(peer)),
            _ => None,
        };
        let duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0;
        // Requests Pingora refuses before `request_filter` have no client
        // worked out yet.
        let peer = peer_ip(session);
        let client = ctx.client.as_ref().map(|client| client.address).or(peer);

        ctx.runtime.route_metrics.record_request(
            ctx.route,
            &request.method,
            status,
            ctx.upstream_latency,
        );
        if let Some(rejection) = ctx.rejection {
            metrics::record_refusal(rejection.reason());
        }

        tracing::info!(
            target: logging::ACCESS_TARGET,
            request_id = ctx.request_id.to_str().unwrap_or("-"),
            client = %OrDash(client),
            peer = %OrDash(peer),
            method = request.method.as_str(),
            path = request.uri.path(),
            status,
            route = route.map_or("-", |route| route.label.as_str()),
            upstream = %OrDash(upstream),
            user = ctx.identity.as_ref().map_or("-", |identity| identity.subject.as_str()),
            token_source = ctx.token_source.map_or("-", TokenSource::as_str),
            token_cache_hit = ctx.token_from_cache,
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            reason = ctx.rejection.map_or("-", Rejection::reason),
            error = %OrDash(error),
            "request"
        );
    }
}

/// Displays the value, or `-` when there is none, so the access event
/// formats optional fields without building a `String` first.
struct OrDash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(formatter),
            None => formatter.write_str("-"),
        }
    }
}

/// Writes the 204 response to an allowed preflight.
async fn write_preflight(
    session: &mut Session,
    request_id: &HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> pingora::Result<bool> {
    let mut response = ResponseHeader::build(204, Some(headers.len() + 1))?;
    for (name, value) in headers {
        response.append_header(name, value)?;
    }
    response.insert_header(REQUEST_ID.clone(), request_id.clone())?;
    session
        .write_response_header(Box::new(response), true)
        .await?;
    Ok(true)
}

/// Returns the request's host without port and trailing dot, from `Host`
/// or, for an HTTP/1.0 request without it, an absolute-form target.
/// Pingora has already refused a `Host` that differs from the target's.
fn request_host(request: &RequestHeader) -> Option<&str> {
    let host = match request.headers.get(HOST) {
        Some(value) => value.to_str().ok()?,
        None => absolute_form_authority(request.raw_path())?,
    };
    let host = host_without_port(host);
    // An empty Host names no host either.
    Some(host.strip_suffix('.').unwrap_or(host)).filter(|host| !host.is_empty())
}

/// Returns the authority of an absolute-form target with a scheme of the
/// HTTP family (http, https, ws, wss).
fn absolute_form_authority(target: &[u8]) -> Option<&str> {
    match raw_target_authority(target) {
        RawTargetAuthority::Absolute {
            scheme, authority, ..
        } if is_http_family_scheme(scheme) => std::str::from_utf8(authority).ok(),
        _ => None,
    }
}

/// Returns the target to send upstream when it differs from the raw one:
/// after normalisation or `strip_prefix`, or for an absolute-form target.
fn upstream_target(request: &RequestHeader, path: &str) -> Option<String> {
    let query = request.uri.query();
    let raw = request.raw_path();
    let same = match query {
        None => raw == path.as_bytes(),
        Some(query) => {
            raw.len() == path.len() + 1 + query.len()
                && raw.starts_with(path.as_bytes())
                && raw[path.len()] == b'?'
                && raw.ends_with(query.as_bytes())
        }
    };
    if same {
        return None;
    }
    Some(match query {
        None => path.to_owned(),
        Some(query) => format!("{path}?{query}"),
    })
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` for `client`
/// and removes `Forwarded`. They replace what the request carried: only a
/// trusted proxy's `X-Forwarded-For` and `-Proto` are believed, and
/// `client` is the result of reading the first. `X-Forwarded-Host` is
/// always the request's `Host`, and `Forwarded` is not parsed, so a client
/// can set neither.
fn set_forwarding_headers(
    upstream_request: &mut RequestHeader,
    client: Option<&Client>,
    request_headers: &http::HeaderMap,
) -> pingora::Result<()> {
    upstream_request.remove_header(&FORWARDED);
    match client {
        Some(client) => {
            let address = ip_header_value(client.address);
            let forwarded_for = client.chain.clone().unwrap_or_else(|| address.clone());
            upstream_request.insert_header(X_FORWARDED_FOR_NAME, forwarded_for)?;
            upstream_request.insert_header(X_REAL_IP_NAME, address)?;
        }
        None => {
            upstream_request.remove_header(&X_FORWARDED_FOR);
            upstream_request.remove_header(&X_REAL_IP);
        }
    }

    let scheme = if client.is_some_and(Client::via_trusted_proxy) {
        trusted_scheme(request_headers)
    } else {
        "http"
    };
    upstream_request.insert_header(X_FORWARDED_PROTO_NAME, scheme)?;

    match request_headers.get(HOST) {
        Some(host) => upstream_request.insert_header(X_FORWARDED_HOST_NAME, host.clone())?,
        None => {
            upstream_request.remove_header(&X_FORWARDED_HOST);
        }
    }
    Ok(())
}

/// Removes the credentials a token-reading route takes from the upstream
/// request. Without `forward`, that is the `Authorization` header when the
/// token came from it, and every session cookie, read or not. With
/// `forward`, only the verified token passes: the first session cookie
/// when the token came from it, and no session cookie otherwise, so the
/// upstream never receives a token the proxy did not check. An
/// `Authorization` header with another scheme than Bearer belongs to the
/// upstream and stays.
fn remove_token(
    upstream_request: &mut RequestHeader,
    token_source: Option<TokenSource>,
    cookie_name: &str,
    forward: bool,
) -> pingora::Result<()> {
    if !forward && token_source == Some(TokenSource::Header) {
        upstream_request.remove_header(&AUTHORIZATION);
    }
    if !upstream_request.headers.contains_key(COOKIE) {
        return Ok(());
    }

    // The token read from a cookie is the first one called `cookie_name`
    // in the first `Cookie` header that has one.
    let mut keep_first = forward && token_source == Some(TokenSource::Cookie);
    let mut changed = false;
    let remaining: Vec<HeaderValue> = upstream_request
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| {
            let Some(rest) =
                without_cookie(value.as_bytes(), cookie_name.as_bytes(), &mut keep_first)
            else {
                return Some(value.clone());
            };
            changed = true;
            // The rest is the header's own bytes joined by "; ", so it is
            // a valid value whenever it is not empty.
            HeaderValue::from_bytes(&rest)
                .ok()
                .filter(|_| !rest.is_empty())
        })
        .collect();
    if changed {
        upstream_request.remove_header(&COOKIE);
        for value in remaining {
            upstream_request.append_header(COOKIE_NAME, value)?;
        }
    }
    Ok(())
}

/// Returns the TCP peer's address, an IPv4-mapped IPv6 one as IPv4, as
/// the client address is.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|address| address.as_inet())
        .map(|address| address.ip().to_canonical())
}

/// Formats `ip` as a header value without an intermediate `String`.
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let mut text = StackText::<IP_TEXT_BUFFER_BYTES>::new();
    write!(text, "{ip}").expect("the longest IPv6 text, 45 bytes, fits the buffer");
    HeaderValue::from_bytes(text.as_bytes()).expect("an IP address in text is a valid header value")
}

/// Text formatted into a fixed-size buffer on the stack, for short values
/// built on every request.
struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    /// Appends `text`, or fails without writing when it does not fit.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let target = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        target.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Request ids: the client's when it is short and plain, otherwise a
/// per-process random prefix and a counter, unique without a syscall per
/// request.
struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: random[..12].to_owned(),
            counter: AtomicU64::new(0),
        }
    }

    fn keep_or_create(&self, request: &RequestHeader) -> HeaderValue {
        if let Some(value) = request.headers.get(&REQUEST_ID)
            && is_plain_request_id(value.as_bytes())
        {
            return value.clone();
        }
        let number = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = StackText::<REQUEST_ID_BUFFER_BYTES>::new();
        write!(id, "{}-{number:x}", self.prefix)
            .expect("12 hex digits, a dash and at most 16 more fit the buffer");
        HeaderValue::from_bytes(id.as_bytes())
            .expect("hex digits and a dash form a valid header value")
    }
}

/// Accepts ids of letters, digits and `-_.:` up to the length limit, so a
/// client cannot smuggle odd bytes into logs through the id.
fn is_plain_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_BYTES
        && value
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(byte))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn request(target: &[u8]) -> RequestHeader {
        RequestHeader::build("GET", target, None).expect("request")
    }

    #[test]
    fn unchanged_target_is_not_rewritten() {
        assert_eq!(upstream_target(&request(b"/api/x?a=1"), "/api/x"), None);
        assert_eq!(upstream_target(&request(b"/api/x"), "/api/x"), None);
    }

    #[test]
    fn normalised_target_keeps_the_query() {
        assert_eq!(
            upstream_target(&request(b"//api/./x?a=1&b"), "/api/x"),
            Some("/api/x?a=1&b".to_owned())
        );
    }

    #[test]
    fn absolute_form_target_becomes_origin_form() {
        assert_eq!(
            upstream_target(&request(b"http://example.com/api/x?q"), "/api/x"),
            Some("/api/x?q".to_owned())
        );
    }

    #[test]
    fn client_request_id_is_kept_when_plain() {
        let ids = RequestIds::new();
        let mut with_id = request(b"/");
        with_id
            .insert_header("x-request-id", "abc-123")
            .expect("header");
        assert_eq!(ids.keep_or_create(&with_id), "abc-123");

        let mut odd = request(b"/");
        odd.insert_header("x-request-id", "a b").expect("header");
        assert_ne!(ids.keep_or_create(&odd), "a b");
    }

    #[test]
    fn ip_header_value_is_address_text() {
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("address");
        for text in ["127.0.0.1", "::1", "2001:db8::7"] {
            let ip: IpAddr = text.parse().expect("address");
            assert_eq!(ip_header_value(ip), text);
        }
        assert_eq!(ip_header_value(longest), longest.to_string());
    }

    #[test]
    fn stack_text_rejects_text_that_does_not_fit() {
        let mut text = StackText::<4>::new();
        assert!(text.write_str("abc").is_ok());
        assert!(text.write_str("de").is_err());
        assert_eq!(text.as_bytes(), b"abc");
    }

    #[test]
    fn generated_request_id_has_prefix_and_hex_counter() {
        let ids = RequestIds::new();
        ids.counter.store(u64::MAX - 1, Ordering::Relaxed);
        let id = ids.keep_or_create(&request(b"/"));
        assert_eq!(
            id.to_str().expect("ASCII"),
            format!("{}-fffffffffffffffe", ids.prefix)
        );
    }

    #[test]
    fn missing_log_field_displays_as_dash() {
        let address: SocketAddr = "127.0.0.1:8081".parse().expect("address");
        assert_eq!(OrDash(Some(address)).to_string(), "127.0.0.1:8081");
        assert_eq!(OrDash(None::<SocketAddr>).to_string(), "-");
    }

    #[test]
    fn generated_request_ids_differ() {
        let ids = RequestIds::new();
        let first = ids.keep_or_create(&request(b"/"));
        let second = ids.keep_or_create(&request(b"/"));
        assert_ne!(first, second);
    }
}
