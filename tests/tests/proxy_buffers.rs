//! edge-proxy reads each downstream connection through a small read buffer.
//! These tests check that request heads and bodies far larger than that
//! buffer still pass whole: a token just under `max_token_bytes` and a
//! 1 MiB body, both ways.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use hanko_edge_tests::edge_proxy::{ProxyStack, hanko_claims};
use hanko_edge_tests::process::bind_loopback;
use serde_json::json;

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";

/// The proxy's default `max_token_bytes`.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The request and response body size.
const BODY_BYTES: usize = 1024 * 1024;

/// Returns the request body and, in a header, the user id the proxy forwarded.
async fn echo_body(headers: HeaderMap, body: Bytes) -> Response {
    let user = headers
        .get("x-user-id")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("none"));
    ([("x-seen-user-id", user)], body).into_response()
}

/// Starts the body echo upstream on a free loopback port.
async fn start_body_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let (listener, addr) = bind_loopback().await;
    let app = Router::new().fallback(echo_body);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Signs a valid token padded with an extra claim to between
/// `MAX_TOKEN_BYTES - 64` and `MAX_TOKEN_BYTES` bytes.
fn token_near_limit(stack: &ProxyStack) -> String {
    let unpadded = stack.valid_token(USER).len();
    // Base64url turns 3 claim bytes into 4 token bytes, and `"padding":"",`
    // adds 13 bytes of JSON around the padding itself.
    let padding_bytes = (MAX_TOKEN_BYTES - 32 - unpadded) * 3 / 4 - 13;
    let mut claims = hanko_claims(USER);
    claims["padding"] = json!("p".repeat(padding_bytes));
    let token = stack.token(&claims);
    assert!(
        token.len() > MAX_TOKEN_BYTES - 64 && token.len() <= MAX_TOKEN_BYTES,
        "the padded token has {} bytes",
        token.len()
    );
    token
}

#[tokio::test]
async fn large_token_and_body_pass_whole() {
    let (upstream, upstream_task) = start_body_upstream().await;
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/upload\"\nupstream = \"{upstream}\"\nauth = \"required\""
        ))
    })
    .await;
    let token = token_near_limit(&stack);
    let body: Vec<u8> = (0..BODY_BYTES).map(|index| (index % 251) as u8).collect();

    let response = stack
        .client
        .post(stack.proxy.url("/upload/blob"))
        .header("authorization", format!("Bearer {token}"))
        .body(body.clone())
        .send()
        .await
        .expect("the proxy answers");

    let status = response.status();
    let seen_user = response
        .headers()
        .get("x-seen-user-id")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let returned = response.bytes().await.expect("the body arrives");
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&returned));
    assert_eq!(seen_user.as_deref(), Some(USER));
    assert_eq!(returned.len(), BODY_BYTES);
    assert!(
        returned == body,
        "the returned body differs from the sent one"
    );

    upstream_task.abort();
}

#[tokio::test]
async fn large_token_passes_on_get() {
    let stack = ProxyStack::start().await;
    let token = token_near_limit(&stack);

    let response = stack.get_with_token("/api/v1/item", &token).await;

    assert_eq!(response.status(), 200);
}
