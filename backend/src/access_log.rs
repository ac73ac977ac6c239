//! Request span and access log: one `info` event per request, emitted when
//! the response is ready, inside a span that carries the request id.
//!
//! The request id comes from the `X-Request-Id` header that edge-proxy sets,
//! so both binaries log the same id for one request. Without a usable header
//! a new UUID is generated. The id is echoed in the response.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::AppState;
use crate::identity::read_header;

/// Header carrying the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps one request in a `request` span and logs its outcome.
pub async fn log_request(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = read_header(request.headers(), &REQUEST_ID_HEADER)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    // The user id is logged as sent; a request without a usable one is
    // rejected by the handler and logged with `user` empty.
    let user = read_header(request.headers(), state.user_id_header()).ok();

    let header_value =
        HeaderValue::from_str(&request_id).expect("a visible-ASCII request id is a header value");
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value.clone());

    let span = tracing::info_span!("request", request_id = %request_id);
    let mut response = next.run(request).instrument(span.clone()).await;
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value);

    let elapsed = started.elapsed().as_secs_f64();
    state
        .metrics()
        .observe_request(&method, route.as_deref(), response.status(), elapsed);

    let status = response.status().as_u16();
    let duration_ms = elapsed * 1_000.0;
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            request_id = %request_id,
            method = %method,
            path = %path,
            route = route.as_deref().unwrap_or("-"),
            status,
            user = user.as_deref().unwrap_or(""),
            duration_ms,
            "request"
        );
    });
    response
}
