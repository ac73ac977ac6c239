//! item-api: a JSON API for items that does no ownership checks of its own.
//! Every query runs in a transaction as the `authenticated` role with the
//! caller's id in `request.jwt.claims`, and PostgreSQL row-level security
//! decides which rows the caller may see or change.
//!
//! The caller's identity is taken from a header set by edge-proxy; this
//! crate does not verify tokens and must only be reachable through the proxy.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod cache_control;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod identity;
pub mod item_input;
pub mod items;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod migrate_preflight;
pub mod openapi;
pub mod panic_response;
pub mod server;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::routing::get;

use crate::db::Database;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    database: Database,
    metrics: Metrics,
    user_id_header: HeaderName,
    email_header: HeaderName,
}

impl AppState {
    /// Creates the state from a database handle and the names of the
    /// headers that carry the caller's user id and email.
    pub fn new(database: Database, user_id_header: HeaderName, email_header: HeaderName) -> Self {
        Self {
            inner: Arc::new(StateInner {
                database,
                metrics: Metrics::new(),
                user_id_header,
                email_header,
            }),
        }
    }

    /// Returns the database handle.
    pub fn database(&self) -> &Database {
        &self.inner.database
    }

    /// Returns the Prometheus metrics of this instance.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Name of the header with the caller's user id.
    pub fn user_id_header(&self) -> &HeaderName {
        &self.inner.user_id_header
    }

    /// Name of the header with the caller's email address.
    pub fn email_header(&self) -> &HeaderName {
        &self.inner.email_header
    }
}

/// Builds the router with every route, the access log, `no-store` on item
/// responses and the JSON error bodies for unknown paths and methods.
/// Request bodies larger than `max_body_bytes` get 413.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    // Both `/api/v1/item` and `/api/v1/item/` are served directly because
    // existing clients call either, and a redirect would turn a POST into
    // a GET in some clients.
    let collection = get(items::list_items).post(items::create_item);
    let member = get(items::get_item)
        .put(items::update_item)
        .delete(items::delete_item);

    Router::new()
        .route("/api/v1/item", collection.clone())
        .route("/api/v1/item/", collection)
        .route("/api/v1/item/{id}", member)
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Inside the access log, so a panic is logged and counted as a 500.
        .layer(panic_response::layer())
        .layer(axum::middleware::from_fn(cache_control::no_store_for_items))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access_log::log_request,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use sqlx::postgres::PgPoolOptions;
    use tower::ServiceExt as _;

    use super::*;

    /// Builds an app whose database is unreachable, enough for routing and
    /// rejections that happen before any query.
    fn offline_app() -> Router {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://authenticator@127.0.0.1:1/none")
            .expect("a valid URL");
        let state = AppState::new(
            Database::from_pool(pool),
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static("x-user-email"),
        );
        app(state, config::DEFAULT_MAX_BODY_BYTES)
    }

    async fn status_of(method: Method, path: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("a valid request");
        offline_app()
            .oneshot(request)
            .await
            .expect("the router is infallible")
            .status()
    }

    fn documented_operations() -> BTreeSet<(String, Method)> {
        let mut operations = BTreeSet::new();
        for (path, item) in &openapi::document().paths.paths {
            let methods = [
                (Method::GET, item.get.is_some()),
                (Method::POST, item.post.is_some()),
                (Method::PUT, item.put.is_some()),
                (Method::DELETE, item.delete.is_some()),
                (Method::PATCH, item.patch.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    operations.insert((path.clone(), method));
                }
            }
        }
        operations
    }

    #[test]
    fn openapi_lists_every_served_path() {
        let documented: BTreeSet<String> =
            openapi::document().paths.paths.keys().cloned().collect();
        let served: BTreeSet<String> = [
            "/api/v1/item",
            "/api/v1/item/",
            "/api/v1/item/{id}",
            "/api/v1/openapi.json",
            "/healthz",
            "/metrics",
            "/readyz",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn openapi_document_is_version_3_1() {
        let json = serde_json::to_value(openapi::document()).expect("serializable");
        assert_eq!(json["openapi"], "3.1.0");
    }

    #[tokio::test]
    async fn router_serves_exactly_the_documented_methods() {
        let documented = documented_operations();
        let paths: BTreeSet<&String> = documented.iter().map(|(path, _)| path).collect();
        for path in paths {
            let concrete = path.replace("{id}", "1");
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
            ] {
                let status = status_of(method.clone(), &concrete).await;
                if documented.contains(&(path.clone(), method.clone())) {
                    assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
                    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                } else {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                }
            }
        }
    }

    #[tokio::test]
    async fn unknown_path_is_404_problem_json() {
        let response = offline_app()
            .oneshot(
                Request::get("/api/v2/item")
                    .body(Body::empty())
                    .expect("a valid request"),
            )
            .await
            .expect("the router is infallible");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            error::PROBLEM_JSON
        );
    }

    #[tokio::test]
    async fn request_id_is_echoed() {
        let response = offline_app()
            .oneshot(
                Request::get("/healthz")
                    .header("x-request-id", "abc-123")
                    .body(Body::empty())
                    .expect("a valid request"),
            )
            .await
            .expect("the router is infallible");
        assert_eq!(response.headers()["x-request-id"], "abc-123");
    }

    #[tokio::test]
    async fn readyz_is_503_when_database_is_unreachable() {
        assert_eq!(
            status_of(Method::GET, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
