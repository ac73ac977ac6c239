//! The response to a handler that panics: the same problem+json 500 as
//! any other internal failure, with the panic message in the log only.
//!
//! Without this layer hyper drops the connection, so the client sees no
//! response at all, and the access log and metrics miss the request.

use std::any::Any;

use axum::response::{IntoResponse as _, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;

/// Type of the layer that [`layer`] returns.
pub type PanicLayer = CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response>;

/// Returns a layer that turns a panic in the wrapped service into a 500.
pub fn layer() -> PanicLayer {
    CatchPanicLayer::custom(panic_to_response)
}

fn panic_to_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    async fn panicking_handler() -> &'static str {
        panic!("secret internal state")
    }

    #[tokio::test]
    async fn panic_becomes_problem_json_500() {
        let app = Router::new()
            .route("/panic", get(panicking_handler))
            .layer(layer());

        let response = app
            .oneshot(
                Request::get("/panic")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("the router is infallible");

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            crate::error::PROBLEM_JSON
        );
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .expect("a readable body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(problem["status"], 500);
        assert_eq!(
            problem["detail"],
            "The server failed to process the request."
        );
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("secret"), "{text}");
    }
}
