//! Health endpoints: `/healthz` reports that the process serves HTTP, and
//! `/readyz` reports that the database is reachable too.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// Returns 200 while the process is serving.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is serving"))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Returns 200 when a query on a pooled connection succeeds, else 503.
///
/// # Errors
///
/// Returns [`ApiError::DatabaseUnavailable`] (503) whatever the database
/// error, because readiness is about reachability, not about the cause.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The database is reachable"),
        (status = 503, description = "The database is unreachable", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state
        .database()
        .ping()
        .await
        .map_err(ApiError::DatabaseUnavailable)?;
    Ok(Json(json!({"status": "ready"})))
}
