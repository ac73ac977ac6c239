//! The HTTP side of the stand-in: the endpoints of Hanko's public API that
//! a relying party calls, with the responses Hanko sends.
//!
//! - `GET /.well-known/jwks.json`: every stored key, newest first, with
//!   `Cache-Control: max-age=600` and no ETag, like Hanko.
//! - `POST /sessions/validate` with `{"session_token": "..."}` and
//!   `GET /sessions/validate` with the token in `Authorization: Bearer` or
//!   the session cookie: `200 {"is_valid": bool, "claims": {...}}`.
//! - `POST /logout`: revokes the caller's session (204), as Hanko's logout
//!   deletes the server-side session.
//! - `GET /healthz`.
//!
//! Errors use Hanko's body shape `{"code": 400, "message": "..."}`, not
//! problem+json, because this server imitates Hanko. There is no login,
//! user store or admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::claims::ValidatedClaims;
use crate::store::DataDir;
use crate::verify::{Verdict, verify};

/// The session cookie name Hanko uses unless configured otherwise.
pub const DEFAULT_COOKIE_NAME: &str = "hanko";

/// How long clients may cache the key set, in seconds; Hanko sends 600.
pub const JWKS_MAX_AGE_SECONDS: u32 = 600;

/// The state shared by every request handler.
pub struct ServerState {
    store: DataDir,
    cookie_name: String,
}

impl ServerState {
    /// Serves the keys and revocations in `store`; `cookie_name` is the
    /// cookie `GET /sessions/validate` and `/logout` read the token from.
    pub fn new(store: DataDir, cookie_name: impl Into<String>) -> Self {
        Self {
            store,
            cookie_name: cookie_name.into(),
        }
    }
}

/// Errors a request can end in, rendered in Hanko's `{code, message}` shape.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("the session token is missing, invalid, expired or revoked")]
    Unauthorized,
    #[error("reading the data directory failed")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody {
    code: u16,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = ErrorBody {
            code: status.as_u16(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
struct ValidateRequest {
    session_token: Option<String>,
}

/// The `/sessions/validate` response body. Hanko also sends the deprecated
/// `expiration_time` and `user_id` next to `claims`, so this does too.
#[derive(Serialize)]
struct ValidateResponse {
    is_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<ValidatedClaims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

impl ValidateResponse {
    fn from_verdict(verdict: Verdict) -> Self {
        let claims = match verdict {
            Verdict::Valid(claims) => ValidatedClaims::from_claims(&claims),
            Verdict::Invalid(reason) => {
                tracing::debug!(reason, "session token rejected");
                return Self::invalid();
            }
        };
        // `verify` already rejects times that RFC 3339 cannot express.
        let Some(claims) = claims else {
            tracing::debug!("session token rejected: iat or exp is outside the years 0000 to 9999");
            return Self::invalid();
        };
        Self {
            is_valid: true,
            expiration_time: Some(claims.expiration.clone()),
            user_id: Some(claims.subject.clone()),
            claims: Some(claims),
        }
    }

    fn invalid() -> Self {
        Self {
            is_valid: false,
            claims: None,
            expiration_time: None,
            user_id: None,
        }
    }
}

/// Builds the router; tests can drive it without a socket.
pub fn app(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/sessions/validate",
            post(validate_from_body).get(validate_from_request),
        )
        .route("/logout", post(logout))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// Serves [`app`] on `listen` until SIGINT or SIGTERM.
///
/// # Errors
///
/// Fails when `listen` is not a loopback address or cannot be bound.
pub async fn serve(listen: SocketAddr, state: Arc<ServerState>) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "--listen {listen} is not a loopback address; hanko-dev is a development \
             stand-in and serves on 127.0.0.1 or [::1] only"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("binding {listen} failed; choose a free port with --listen 127.0.0.1:PORT")
        })?;
    tracing::info!(%listen, data_dir = %state.store.path().display(), "hanko-dev serving");

    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP failed")?;
    tracing::info!("hanko-dev stopped");
    Ok(())
}

async fn jwks(State(state): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    let keys = state.store.keys().map_err(ApiError::Internal)?;
    let jwks: Vec<serde_json::Value> = keys.iter().map(|key| key.public_jwk()).collect();
    let cache_control = HeaderValue::from_str(&format!("max-age={JWKS_MAX_AGE_SECONDS}"))
        .expect("a number makes a valid header value");

    Ok((
        [(header::CACHE_CONTROL, cache_control)],
        Json(serde_json::json!({ "keys": jwks })),
    )
        .into_response())
}

async fn validate_from_body(
    State(state): State<Arc<ServerState>>,
    body: Bytes,
) -> Result<Json<ValidateResponse>, ApiError> {
    let request: ValidateRequest = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the request body is not a JSON object"))?;
    let token = match request.session_token {
        Some(token) if !token.is_empty() => token,
        _ => return Err(ApiError::BadRequest("session_token is required")),
    };

    let verdict = verify(&state.store, &token).map_err(ApiError::Internal)?;
    Ok(Json(ValidateResponse::from_verdict(verdict)))
}

async fn validate_from_request(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
) -> Result<Json<ValidateResponse>, ApiError> {
    let Some(token) = token_from_headers(&headers, &state.cookie_name) else {
        return Ok(Json(ValidateResponse::from_verdict(Verdict::Invalid(
            "no token in request",
        ))));
    };

    let verdict = verify(&state.store, &token).map_err(ApiError::Internal)?;
    Ok(Json(ValidateResponse::from_verdict(verdict)))
}

async fn logout(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = token_from_headers(&headers, &state.cookie_name).ok_or(ApiError::Unauthorized)?;
    let Verdict::Valid(claims) = verify(&state.store, &token).map_err(ApiError::Internal)? else {
        return Err(ApiError::Unauthorized);
    };
    let session_id = claims
        .session_id
        .parse()
        .map_err(|_| ApiError::BadRequest("the token's session_id is not a UUID"))?;
    state.store.revoke(session_id).map_err(ApiError::Internal)?;
    tracing::info!(%session_id, "session revoked by logout");

    let clear_cookie = HeaderValue::from_str(&format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
        state.cookie_name
    ))
    .map_err(|_| ApiError::BadRequest("the cookie name is not a valid header value"))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear_cookie)]).into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Takes the token from `Authorization: Bearer` first, then from the
/// session cookie, the order Hanko's own middleware uses.
fn token_from_headers(headers: &HeaderMap, cookie_name: &str) -> Option<String> {
    bearer_token(headers).or_else(|| cookie_token(headers, cookie_name))
}

/// Returns the token of an `Authorization: Bearer` header, or `None` when
/// the header is missing, has another scheme or is malformed (not ASCII,
/// no token), so that the cookie is read next.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    // RFC 9110 section 11.1: the scheme is case-insensitive.
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Some(token.to_owned())
    } else {
        None
    }
}

fn cookie_token(headers: &HeaderMap, cookie_name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == cookie_name && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// Logs one event per request; never a header value, so no token leaks.
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;
    use crate::claims::TokenRequest;
    use crate::keys::DEFAULT_KEY_BITS;

    struct Fixture {
        _temp: tempfile::TempDir,
        state: Arc<ServerState>,
    }

    impl Fixture {
        fn new() -> Self {
            let temp = tempfile::tempdir().expect("temp dir");
            let store = DataDir::open(temp.path()).expect("open");
            store.signing_key(DEFAULT_KEY_BITS).expect("first key");
            Self {
                _temp: temp,
                state: Arc::new(ServerState::new(store, DEFAULT_COOKIE_NAME)),
            }
        }

        fn token(&self, request: &TokenRequest) -> (String, crate::claims::Claims) {
            let claims = request.claims();
            (self.sign(&claims), claims)
        }

        fn sign(&self, claims: &crate::claims::Claims) -> String {
            let key = self
                .state
                .store
                .signing_key(DEFAULT_KEY_BITS)
                .expect("signing key");
            key.sign(claims).expect("sign")
        }

        async fn send(
            &self,
            request: axum::http::Request<Body>,
        ) -> (StatusCode, HeaderMap, serde_json::Value) {
            let response = app(Arc::clone(&self.state))
                .oneshot(request)
                .await
                .expect("the router never fails");
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body reads");
            let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            (status, headers, json)
        }

        async fn validate_body(&self, body: &str) -> (StatusCode, serde_json::Value) {
            let request = axum::http::Request::post("/sessions/validate")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request builds");
            let (status, _, json) = self.send(request).await;
            (status, json)
        }
    }

    fn user() -> uuid::Uuid {
        uuid::Uuid::parse_str("c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718").expect("valid UUID")
    }

    #[tokio::test]
    async fn jwks_lists_keys_newest_first_with_max_age() {
        let fixture = Fixture::new();
        let old = fixture.state.store.keys().expect("keys")[0]
            .kid()
            .to_owned();
        let new = fixture
            .state
            .store
            .rotate(DEFAULT_KEY_BITS)
            .expect("rotate");

        let request = axum::http::Request::get("/.well-known/jwks.json")
            .body(Body::empty())
            .expect("request builds");
        let (status, headers, json) = fixture.send(request).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=600");
        assert!(headers.get(header::ETAG).is_none());
        let kids: Vec<&str> = json["keys"]
            .as_array()
            .expect("keys is an array")
            .iter()
            .map(|key| key["kid"].as_str().expect("kid is a string"))
            .collect();
        assert_eq!(kids, [new.kid(), old.as_str()]);
        assert_eq!(json["keys"][0]["kty"], "RSA");
        assert_eq!(json["keys"][0]["alg"], "RS256");
        assert_eq!(json["keys"][0]["use"], "sig");
    }

    #[tokio::test]
    async fn validate_returns_hanko_claims_for_valid_token() {
        let fixture = Fixture::new();
        let mut request = TokenRequest::new(user());
        request.email = Some("ada@example.com".to_owned());
        request.issued_at = Some(SystemTime::now() - Duration::from_secs(5));
        let (token, claims) = fixture.token(&request);

        let (status, json) = fixture
            .validate_body(&serde_json::json!({ "session_token": token }).to_string())
            .await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["is_valid"], true);
        let returned = &json["claims"];
        assert_eq!(returned["subject"], user().to_string());
        assert_eq!(returned["session_id"], claims.session_id);
        assert_eq!(returned["audience"], serde_json::json!(["localhost"]));
        assert_eq!(
            returned["email"],
            serde_json::json!({"address": "ada@example.com", "is_primary": true, "is_verified": true})
        );
        assert!(
            returned["issued_at"]
                .as_str()
                .expect("RFC 3339")
                .ends_with('Z')
        );
        assert!(
            returned["expiration"]
                .as_str()
                .expect("RFC 3339")
                .ends_with('Z')
        );
        assert_eq!(json["user_id"], user().to_string());
    }

    #[tokio::test]
    async fn validate_without_email_omits_email() {
        let fixture = Fixture::new();
        let (token, _) = fixture.token(&TokenRequest::new(user()));

        let (_, json) = fixture
            .validate_body(&serde_json::json!({ "session_token": token }).to_string())
            .await;

        assert_eq!(json["is_valid"], true);
        assert!(json["claims"].get("email").is_none());
    }

    #[tokio::test]
    async fn expired_token_is_not_valid_and_has_no_claims() {
        let fixture = Fixture::new();
        let mut request = TokenRequest::new(user());
        request.issued_at = Some(SystemTime::now() - Duration::from_secs(3600));
        request.ttl = Duration::from_secs(60);
        let (token, _) = fixture.token(&request);

        let (status, json) = fixture
            .validate_body(&serde_json::json!({ "session_token": token }).to_string())
            .await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(json, serde_json::json!({ "is_valid": false }));
    }

    #[tokio::test]
    async fn out_of_range_times_are_not_valid() {
        let fixture = Fixture::new();
        let mut early_iat = TokenRequest::new(user()).claims();
        early_iat.iat = -100_000_000_000;
        let mut late_exp = TokenRequest::new(user()).claims();
        late_exp.exp = 253_402_300_800;

        for claims in [early_iat, late_exp] {
            let token = fixture.sign(&claims);
            let (status, json) = fixture
                .validate_body(&serde_json::json!({ "session_token": token }).to_string())
                .await;

            assert_eq!(
                status,
                StatusCode::OK,
                "iat {} exp {}",
                claims.iat,
                claims.exp
            );
            assert_eq!(
                json,
                serde_json::json!({ "is_valid": false }),
                "iat {} exp {}",
                claims.iat,
                claims.exp
            );
        }
    }

    #[tokio::test]
    async fn validate_rejects_malformed_bodies_with_400() {
        let fixture = Fixture::new();

        for body in ["", "not json", "{}", r#"{"session_token": ""}"#, "[]"] {
            let (status, json) = fixture.validate_body(body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "body {body:?}");
            assert_eq!(json["code"], 400, "body {body:?}");
        }
    }

    #[tokio::test]
    async fn get_validate_reads_bearer_then_cookie() {
        let fixture = Fixture::new();
        let (token, _) = fixture.token(&TokenRequest::new(user()));

        let bearer = axum::http::Request::get("/sessions/validate")
            .header(header::AUTHORIZATION, format!("bearer {token}"))
            .body(Body::empty())
            .expect("request builds");
        let cookie = axum::http::Request::get("/sessions/validate")
            .header(header::COOKIE, format!("theme=dark; hanko={token}"))
            .body(Body::empty())
            .expect("request builds");
        let neither = axum::http::Request::get("/sessions/validate")
            .body(Body::empty())
            .expect("request builds");

        assert_eq!(fixture.send(bearer).await.2["is_valid"], true);
        assert_eq!(fixture.send(cookie).await.2["is_valid"], true);
        assert_eq!(fixture.send(neither).await.2["is_valid"], false);
    }

    #[tokio::test]
    async fn malformed_bearer_falls_back_to_cookie() {
        let fixture = Fixture::new();
        let (token, _) = fixture.token(&TokenRequest::new(user()));
        let malformed = [
            HeaderValue::from_static("Bearer"),
            HeaderValue::from_static("Bearer "),
            HeaderValue::from_static("Bearer\tsecret"),
            HeaderValue::from_bytes(b"Bearer caf\xc3\xa9").expect("obs-text is allowed"),
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        ];

        for authorization in malformed {
            let request = axum::http::Request::get("/sessions/validate")
                .header(header::AUTHORIZATION, authorization.clone())
                .header(header::COOKIE, format!("hanko={token}"))
                .body(Body::empty())
                .expect("request builds");

            let (_, _, json) = fixture.send(request).await;

            assert_eq!(json["is_valid"], true, "Authorization: {authorization:?}");
        }
    }

    #[tokio::test]
    async fn bearer_header_wins_over_cookie() {
        let fixture = Fixture::new();
        let cookie_user =
            uuid::Uuid::parse_str("0b9d5c4e-8f21-4a3b-9c6d-1e2f3a4b5c6d").expect("valid UUID");
        let (header_token, _) = fixture.token(&TokenRequest::new(user()));
        let (cookie_token, _) = fixture.token(&TokenRequest::new(cookie_user));
        let request = axum::http::Request::get("/sessions/validate")
            .header(header::AUTHORIZATION, format!("Bearer {header_token}"))
            .header(header::COOKIE, format!("hanko={cookie_token}"))
            .body(Body::empty())
            .expect("request builds");

        let (_, _, json) = fixture.send(request).await;

        assert_eq!(json["is_valid"], true);
        assert_eq!(json["user_id"], user().to_string());
    }

    #[tokio::test]
    async fn logout_revokes_the_session() {
        let fixture = Fixture::new();
        let (token, _) = fixture.token(&TokenRequest::new(user()));
        let body = serde_json::json!({ "session_token": token }).to_string();
        let logout = || {
            axum::http::Request::post("/logout")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request builds")
        };

        let (first, headers, _) = fixture.send(logout()).await;
        let (second, _, _) = fixture.send(logout()).await;
        let (_, after) = fixture.validate_body(&body).await;

        assert_eq!(first, StatusCode::NO_CONTENT);
        assert!(
            headers[header::SET_COOKIE]
                .to_str()
                .expect("ASCII")
                .starts_with("hanko=;")
        );
        assert_eq!(second, StatusCode::UNAUTHORIZED);
        assert_eq!(after["is_valid"], false);
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let fixture = Fixture::new();
        let request = axum::http::Request::get("/healthz")
            .body(Body::empty())
            .expect("request builds");

        let response = app(Arc::clone(&fixture.state))
            .oneshot(request)
            .await
            .expect("the router never fails");

        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn serve_rejects_non_loopback_address() {
        let fixture = Fixture::new();
        let error = serve(
            "0.0.0.0:0".parse().expect("address"),
            Arc::clone(&fixture.state),
        )
        .await
        .expect_err("must refuse");

        assert!(error.to_string().contains("loopback"));
    }
}
