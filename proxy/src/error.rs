//! Responses the proxy writes itself: one enum of rejections, each with its
//! status, stable reason name, RFC 9457 problem body and extra headers.
//!
//! Every refusal and upstream failure goes through [`Rejection`], so clients
//! see one body shape (`application/problem+json` with `title`, `status` and
//! `detail`) whether the request was refused before the upstream or the
//! upstream failed. Bodies never carry internal error text. The access log
//! records the reason.
//!
//! NOTE: Pingora 0.9 responds before any hook of the proxy runs when it
//! cannot parse a request head (a malformed request line, too many
//! headers, two different `Content-Length` values). The client gets
//! Pingora's own `400` with an empty body, and no access event is written.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::auth::token::Refusal;
use crate::cors::CorsRejection;
use crate::routing::PathError;

/// The realm named in every `WWW-Authenticate` challenge.
const REALM: &str = "hanko-edge";

/// A request the proxy responds to itself instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The path cannot be interpreted safely.
    BadPath(PathError),
    /// The request is malformed in a way Pingora detected.
    BadRequest,
    /// The client stopped sending: a request body stalled, or an upgraded
    /// connection was quiet, for longer than Pingora's read timeout.
    ClientTimeout,
    /// More than one `Authorization` header.
    DuplicateAuthorization,
    /// An HTTP/1.1 request without `Host`, or one without any host where a
    /// route limited to a host takes the path.
    MissingHost,
    /// A protected route and no token.
    MissingToken,
    /// The token failed a check.
    InvalidToken(Refusal),
    /// A CORS preflight from a disallowed origin or for a disallowed method.
    CorsRefused(CorsRejection),
    /// No route matches.
    NoRoute,
    /// Routes match the path, but none accepts the method.
    MethodNotAllowed,
    /// The upstream refused the connection or broke the exchange.
    UpstreamUnavailable,
    /// No key set is available to check tokens.
    KeysUnavailable {
        /// Seconds the client should wait before retrying.
        retry_after_seconds: u64,
    },
    /// The session check is on and Hanko cannot confirm the session.
    SessionCheckUnavailable {
        /// Seconds the client should wait before retrying.
        retry_after_seconds: u64,
    },
    /// The user (or client address) is over the route's rate limit.
    RateLimited {
        /// Seconds until a request would be allowed, at least 1.
        retry_after_seconds: u64,
    },
    /// The upstream did not respond within the configured timeout.
    UpstreamTimeout,
    /// A bug in the proxy.
    Internal,
}

impl Rejection {
    /// Returns the HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::BadPath(_)
            | Self::BadRequest
            | Self::DuplicateAuthorization
            | Self::MissingHost => 400,
            Self::MissingToken | Self::InvalidToken(_) => 401,
            Self::CorsRefused(_) => 403,
            Self::NoRoute => 404,
            Self::MethodNotAllowed => 405,
            Self::ClientTimeout => 408,
            Self::RateLimited { .. } => 429,
            Self::Internal => 500,
            Self::UpstreamUnavailable => 502,
            Self::KeysUnavailable { .. } | Self::SessionCheckUnavailable { .. } => 503,
            Self::UpstreamTimeout => 504,
        }
    }

    /// Returns the stable snake_case name used in logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadPath(_) => "bad_path",
            Self::BadRequest => "bad_request",
            Self::ClientTimeout => "client_timeout",
            Self::DuplicateAuthorization => "duplicate_authorization",
            Self::MissingHost => "missing_host",
            Self::MissingToken => "missing_token",
            Self::InvalidToken(refusal) => refusal.as_str(),
            Self::CorsRefused(CorsRejection::Origin) => "cors_origin_not_allowed",
            Self::CorsRefused(CorsRejection::Method) => "cors_method_not_allowed",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::SessionCheckUnavailable { .. } => "session_check_unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Internal => "internal_error",
        }
    }

    fn title(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            429 => "Too Many Requests",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Internal Server Error",
        }
    }

    fn detail(self) -> String {
        match self {
            Self::BadPath(error) => format!("{error}."),
            Self::BadRequest => "The request is malformed.".to_owned(),
            Self::ClientTimeout => {
                "The client stopped sending the request before it was complete.".to_owned()
            }
            Self::DuplicateAuthorization => {
                "The request has more than one Authorization header; send one.".to_owned()
            }
            Self::MissingHost => "The request must have a Host header.".to_owned(),
            Self::MissingToken => {
                "This resource needs a Hanko session token in the Authorization header or the session cookie.".to_owned()
            }
            Self::InvalidToken(refusal) => {
                format!("The session token was rejected because {refusal}; sign in again.")
            }
            Self::CorsRefused(error) => format!("The CORS preflight was refused: {error}."),
            Self::NoRoute => "No route matches this request.".to_owned(),
            Self::MethodNotAllowed => {
                "This path does not accept the request's method. The Allow header lists the methods it accepts.".to_owned()
            }
            Self::UpstreamUnavailable => {
                "The upstream service could not be reached or failed to answer.".to_owned()
            }
            Self::KeysUnavailable { .. } => {
                "Session tokens cannot be checked right now because the signing keys are unavailable; retry later.".to_owned()
            }
            Self::SessionCheckUnavailable { .. } => {
                "The session cannot be checked right now because Hanko is unreachable; retry later.".to_owned()
            }
            Self::RateLimited {
                retry_after_seconds,
            } => format!(
                "Too many requests; retry after {retry_after_seconds} seconds."
            ),
            Self::UpstreamTimeout => "The upstream service did not answer in time.".to_owned(),
            Self::Internal => "The proxy failed to handle the request.".to_owned(),
        }
    }

    /// Returns the `WWW-Authenticate` value (RFC 6750 section 3) for 401
    /// and the Bearer-related 400.
    fn challenge(self) -> Option<String> {
        match self {
            Self::MissingToken => Some(format!("Bearer realm=\"{REALM}\"")),
            Self::InvalidToken(refusal) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{refusal}\""
            )),
            Self::DuplicateAuthorization => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_request\", error_description=\"more than one Authorization header\""
            )),
            _ => None,
        }
    }

    /// Returns the problem body.
    pub fn body(self) -> Bytes {
        let body = serde_json::json!({
            "title": self.title(),
            "status": self.status(),
            "detail": self.detail(),
        });
        Bytes::from(serde_json::to_vec(&body).expect("a JSON value always serializes"))
    }

    /// Builds the full response header, adding `extra` (request id, CORS).
    ///
    /// # Errors
    ///
    /// Fails only when a header cannot be built, which validated values
    /// cannot cause.
    pub fn response_header(
        self,
        body_length: usize,
        extra: &[(HeaderName, HeaderValue)],
    ) -> pingora::Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status(), Some(6 + extra.len()))?;
        header.insert_header(CONTENT_TYPE, "application/problem+json")?;
        header.insert_header(CONTENT_LENGTH, body_length.to_string())?;
        header.insert_header(CACHE_CONTROL, "no-store")?;
        if let Some(challenge) = self.challenge() {
            header.insert_header(WWW_AUTHENTICATE, challenge)?;
        }
        if let Some(seconds) = self.retry_after_seconds() {
            header.insert_header(RETRY_AFTER, seconds.to_string())?;
        }
        for (name, value) in extra {
            header.append_header(name.clone(), value.clone())?;
        }
        Ok(header)
    }

    /// Returns the `Retry-After` value in seconds, for the rejections that
    /// end once time passes.
    pub fn retry_after_seconds(self) -> Option<u64> {
        match self {
            Self::KeysUnavailable {
                retry_after_seconds,
            }
            | Self::SessionCheckUnavailable {
                retry_after_seconds,
            }
            | Self::RateLimited {
                retry_after_seconds,
            } => Some(retry_after_seconds),
            _ => None,
        }
    }

    /// Maps an error Pingora reports while proxying to the response the client
    /// gets; `None` when the client connection is already gone.
    pub fn from_proxy_error(error: &Error) -> Option<Self> {
        match (error.esource(), error.etype()) {
            (_, ErrorType::HTTPStatus(400)) => Some(Self::BadRequest),
            (_, ErrorType::HTTPStatus(504)) => Some(Self::UpstreamTimeout),
            (_, ErrorType::HTTPStatus(code)) if (500..600).contains(code) => {
                Some(Self::UpstreamUnavailable)
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Self::UpstreamTimeout),
            (ErrorSource::Upstream, _) => Some(Self::UpstreamUnavailable),
            (
                ErrorSource::Downstream,
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => Some(Self::ClientTimeout),
            (ErrorSource::Downstream, _) => Some(Self::BadRequest),
            (ErrorSource::Internal | ErrorSource::Unset, _) => Some(Self::Internal),
        }
    }
}

/// Writes `rejection` to the client with `extra` headers.
///
/// # Errors
///
/// Fails when the client connection breaks while writing.
pub async fn respond(
    session: &mut Session,
    rejection: Rejection,
    extra: &[(HeaderName, HeaderValue)],
) -> pingora::Result<()> {
    let body = rejection.body();
    let header = rejection.response_header(body.len(), extra)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_value(header: &ResponseHeader, name: HeaderName) -> Option<String> {
        header
            .headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII").to_owned())
    }

    #[test]
    fn missing_token_has_bare_challenge() {
        let rejection = Rejection::MissingToken;
        let header = rejection.response_header(10, &[]).expect("header");

        assert_eq!(header.status.as_u16(), 401);
        assert_eq!(
            header_value(&header, WWW_AUTHENTICATE).as_deref(),
            Some("Bearer realm=\"hanko-edge\"")
        );
        assert_eq!(
            header_value(&header, CONTENT_TYPE).as_deref(),
            Some("application/problem+json")
        );
    }

    #[test]
    fn invalid_token_names_the_error() {
        let header = Rejection::InvalidToken(Refusal::Expired)
            .response_header(10, &[])
            .expect("header");
        assert_eq!(
            header_value(&header, WWW_AUTHENTICATE).as_deref(),
            Some(
                "Bearer realm=\"hanko-edge\", error=\"invalid_token\", error_description=\"the token has expired\""
            )
        );
    }

    #[test]
    fn keys_unavailable_has_retry_after() {
        let header = Rejection::KeysUnavailable {
            retry_after_seconds: 7,
        }
        .response_header(10, &[])
        .expect("header");
        assert_eq!(header.status.as_u16(), 503);
        assert_eq!(header_value(&header, RETRY_AFTER).as_deref(), Some("7"));
    }

    #[test]
    fn rate_limited_is_429_with_retry_after() {
        let rejection = Rejection::RateLimited {
            retry_after_seconds: 3,
        };
        let header = rejection.response_header(10, &[]).expect("header");
        let body: serde_json::Value = serde_json::from_slice(&rejection.body()).expect("JSON");

        assert_eq!(header.status.as_u16(), 429);
        assert_eq!(header_value(&header, RETRY_AFTER).as_deref(), Some("3"));
        assert!(header_value(&header, WWW_AUTHENTICATE).is_none());
        assert_eq!(body["title"], "Too Many Requests");
        assert_eq!(body["status"], 429);
        assert_eq!(rejection.reason(), "rate_limited");
    }

    #[test]
    fn revoked_session_is_invalid_token() {
        let rejection = Rejection::InvalidToken(Refusal::SessionRevoked);
        let header = rejection.response_header(10, &[]).expect("header");

        assert_eq!(header.status.as_u16(), 401);
        assert_eq!(
            header_value(&header, WWW_AUTHENTICATE).as_deref(),
            Some(
                "Bearer realm=\"hanko-edge\", error=\"invalid_token\", error_description=\"the session has been revoked\""
            )
        );
        assert_eq!(rejection.reason(), "session_revoked");
    }

    #[test]
    fn session_check_unavailable_is_503_with_retry_after() {
        let rejection = Rejection::SessionCheckUnavailable {
            retry_after_seconds: 1,
        };
        let header = rejection.response_header(10, &[]).expect("header");

        assert_eq!(header.status.as_u16(), 503);
        assert_eq!(header_value(&header, RETRY_AFTER).as_deref(), Some("1"));
        assert_eq!(rejection.reason(), "session_check_unavailable");
    }

    #[test]
    fn body_is_a_problem_document() {
        let body = Rejection::NoRoute.body();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["status"], 404);
        assert_eq!(json["title"], "Not Found");
        assert!(json["detail"].as_str().expect("detail").ends_with('.'));
    }

    #[test]
    fn upstream_errors_map_to_gateway_statuses() {
        let refused = Error::new(ErrorType::ConnectRefused).into_up();
        let timed_out = Error::new(ErrorType::ReadTimedout).into_up();
        let gone = Error::new(ErrorType::ConnectionClosed).into_down();
        let bad_header = Error::new(ErrorType::InvalidHTTPHeader).into_down();
        let stalled = Error::new(ErrorType::ReadTimedout).into_down();

        assert_eq!(
            Rejection::from_proxy_error(&refused),
            Some(Rejection::UpstreamUnavailable)
        );
        assert_eq!(
            Rejection::from_proxy_error(&timed_out),
            Some(Rejection::UpstreamTimeout)
        );
        assert_eq!(Rejection::from_proxy_error(&gone), None);
        assert_eq!(
            Rejection::from_proxy_error(&bad_header),
            Some(Rejection::BadRequest)
        );
        assert_eq!(
            Rejection::from_proxy_error(&stalled),
            Some(Rejection::ClientTimeout)
        );
    }

    #[test]
    fn client_timeout_is_408() {
        let rejection = Rejection::ClientTimeout;
        let body: serde_json::Value = serde_json::from_slice(&rejection.body()).expect("JSON body");

        assert_eq!(rejection.status(), 408);
        assert_eq!(body["title"], "Request Timeout");
        assert_eq!(rejection.reason(), "client_timeout");
    }
}
