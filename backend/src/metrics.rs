//! Prometheus metrics of item-api, served as text at `GET /metrics`:
//! requests by method, route and status, request latency, and the database
//! pool (connections in use, idle, and requests waiting for one).
//!
//! Labels use the route template (`/api/v1/item/{id}`), never the raw path,
//! so the number of series stays bounded whatever clients send.

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::AppState;
use crate::db::Database;
use crate::error::ApiError;

/// Route label for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The metrics of one item-api instance, in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pool_in_use: IntGauge,
    pool_idle: IntGauge,
    pool_waiting: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "item_api_http_requests_total",
                "HTTP requests answered, by method, route template and status code",
            ),
            &["method", "route", "status"],
        )
        .expect("the counter options are valid");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "item_api_http_request_duration_seconds",
                "Time from receiving a request to having its response, by method and route template",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["method", "route"],
        )
        .expect("the histogram options are valid");
        let pool_in_use = IntGauge::new(
            "item_api_db_pool_connections_in_use",
            "Pooled database connections lent out to requests",
        )
        .expect("the gauge options are valid");
        let pool_idle = IntGauge::new(
            "item_api_db_pool_connections_idle",
            "Open pooled database connections not in use",
        )
        .expect("the gauge options are valid");
        let pool_waiting = IntGauge::new(
            "item_api_db_pool_waiting",
            "Requests waiting for a pooled database connection",
        )
        .expect("the gauge options are valid");

        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(pool_in_use.clone()),
            Box::new(pool_idle.clone()),
            Box::new(pool_waiting.clone()),
        ] {
            registry
                .register(collector)
                .expect("each metric name is registered once");
        }

        Self {
            registry,
            requests,
            latency,
            pool_in_use,
            pool_idle,
            pool_waiting,
        }
    }

    /// Counts one completed request and records its latency.
    pub fn observe_request(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        seconds: f64,
    ) {
        let method = method_label(method);
        let route = route.unwrap_or(UNMATCHED_ROUTE);
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// Renders every metric in the Prometheus text format, reading the pool
    /// gauges from `database` first.
    ///
    /// # Errors
    ///
    /// Returns the encoder's error, which only happens for invalid metrics.
    pub fn render(&self, database: &Database) -> Result<String, prometheus::Error> {
        self.pool_in_use.set(saturating_i64(database.in_use()));
        self.pool_idle
            .set(saturating_i64(database.pool().num_idle() as u64));
        self.pool_waiting.set(saturating_i64(database.waiting()));

        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer).expect("the text format is UTF-8"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves the metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Metrics in the Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics().render(state.database()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering metrics failed");
            ApiError::Internal.into_response()
        }
    }
}

/// Maps a method to a fixed label, so arbitrary methods cannot create
/// new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        let method = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&method), "other");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }

    #[test]
    fn observed_request_appears_in_output() {
        let metrics = Metrics::new();
        metrics.observe_request(
            &Method::GET,
            Some("/api/v1/item/{id}"),
            StatusCode::NOT_FOUND,
            0.003,
        );
        let families = metrics.registry.gather();
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buffer)
            .expect("encodable");
        let text = String::from_utf8(buffer).expect("UTF-8");
        assert!(
            text.contains(
                r#"item_api_http_requests_total{method="GET",route="/api/v1/item/{id}",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("item_api_http_request_duration_seconds_count"),
            "{text}"
        );
    }
}
