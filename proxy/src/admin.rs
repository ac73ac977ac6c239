//! The admin listener: liveness, readiness and metrics for orchestrators,
//! monitoring and tests.
//!
//! `GET /healthz` answers 200 while the process serves. `GET /readyz`
//! answers 200 once a key set is loaded and 503 before, so a load balancer
//! sends no traffic that could only get 503s. `GET /metrics` returns the
//! Prometheus text format. Other paths get a problem+json 404. The listener
//! is separate from the proxy listeners so that it can stay on loopback
//! while the proxy faces the network; nothing here needs a token.

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::metrics;
use crate::runtime::SharedRuntime;

/// The admin HTTP application.
pub struct AdminApp {
    runtime: SharedRuntime,
}

impl AdminApp {
    /// Creates the admin application over the shared runtime.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self { runtime }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        if request.method != Method::GET && request.method != Method::HEAD {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET and HEAD are supported here.",
            );
        }
        match request.uri.path() {
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => {
                let runtime = self.runtime.load();
                let keys = runtime.authenticator.keys();
                if keys.is_ready() {
                    json_response(StatusCode::OK, &json!({"status": "ready"}))
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({
                            "status": "not ready",
                            "detail": format!("no key set has been loaded from {} yet", keys.url()),
                        }),
                    )
                }
            }
            "/metrics" => {
                let text = metrics::render(&self.runtime.load());
                build_bytes(StatusCode::OK, metrics::CONTENT_TYPE, text.into_bytes())
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "The admin listener serves /healthz, /readyz and /metrics.",
            ),
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    build(status, "application/json", body)
}

fn problem(status: StatusCode, detail: &str) -> Response<Vec<u8>> {
    let body = json!({
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    build(status, "application/problem+json", &body)
}

fn build(status: StatusCode, content_type: &str, body: &serde_json::Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
    build_bytes(status, content_type, bytes)
}

fn build_bytes(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(bytes)
        .expect("static parts form a valid response")
}
