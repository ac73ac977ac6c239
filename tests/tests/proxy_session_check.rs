//! edge-proxy's session check (`session_check = "validate"`) against the
//! real binary and the real `hanko-dev serve`: a revoked session is
//! rejected within the cache period, a burst for one session costs one
//! validate call, and an unreachable Hanko is handled by the configured
//! policy.
//!
//! Validate calls are counted by a small forwarder in this file that sits
//! between the proxy and hanko-dev (`session_validate_url` points at it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hanko_dev::claims::TokenRequest;
use hanko_edge_tests::echo::EchoServer;
use hanko_edge_tests::edge_proxy::{EdgeProxy, ProxyConfig, poll_until, test_client};
use hanko_edge_tests::hanko::{HankoDev, decode_payload};
use hanko_edge_tests::process::bind_loopback;
use tokio::task::JoinSet;
use uuid::Uuid;

const ADA: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";

/// Forwards `POST /sessions/validate` to hanko-dev and counts the calls.
struct CountingForwarder {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct ForwarderState {
    target: String,
    client: reqwest::Client,
    calls: Arc<AtomicUsize>,
}

impl CountingForwarder {
    async fn start(hanko: &HankoDev) -> CountingForwarder {
        let (listener, addr) = bind_loopback().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(ForwarderState {
            target: hanko.url("/sessions/validate"),
            client: test_client(),
            calls: calls.clone(),
        });
        let app = Router::new()
            .route("/sessions/validate", post(forward))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingForwarder { addr, calls, task }
    }

    fn url(&self) -> String {
        format!("http://{}/sessions/validate", self.addr)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for CountingForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(state): State<Arc<ForwarderState>>, body: Bytes) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let forwarded = state
        .client
        .post(&state.target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match forwarded {
        Ok(forwarded) => {
            let status = StatusCode::from_u16(forwarded.status().as_u16())
                .expect("hanko-dev sends valid status codes");
            let bytes = forwarded.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Returns a config for `hanko` with `/api` (required) to `upstream` and the
/// session check on, plus `extra` lines in `[proxy.auth]`.
fn config(hanko: &HankoDev, upstream: &EchoServer, extra: &[&str]) -> String {
    let mut config = ProxyConfig::new(&hanko.api_url())
        .route(&format!(
            "path_prefix = \"/api\"\nupstream = \"{}\"\nauth = \"required\"",
            upstream.addr()
        ))
        .auth("session_check = \"validate\"");
    for line in extra {
        config = config.auth(line);
    }
    config.to_toml()
}

/// Signs a token for `subject` in a new session; returns it and the
/// session id.
fn session_token(hanko: &HankoDev, subject: &str) -> (String, String) {
    let request = TokenRequest::new(Uuid::parse_str(subject).expect("a UUID"));
    let token = hanko.sign(&request);
    let session_id = decode_payload(&token)["session_id"]
        .as_str()
        .expect("hanko-dev tokens carry a session_id")
        .to_owned();
    (token, session_id)
}

async fn get(client: &reqwest::Client, proxy: &EdgeProxy, token: &str) -> reqwest::Response {
    client
        .get(proxy.url("/api/items"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("the proxy answers")
}

async fn status(client: &reqwest::Client, proxy: &EdgeProxy, token: &str) -> u16 {
    get(client, proxy, token).await.status().as_u16()
}

/// Reads one sample, such as `edge_proxy_session_check_calls_total`, from
/// the admin `/metrics`; 0 when the series is not exported yet.
async fn metric(proxy: &EdgeProxy, series: &str) -> f64 {
    let text = test_client()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .expect("the admin listener answers")
        .text()
        .await
        .expect("a text body");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Asserts a 503 with `Retry-After` and a problem body.
async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a 503 carries Retry-After")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["status"], 503);
}

#[tokio::test]
async fn revoked_session_is_rejected_while_other_session_passes() {
    let hanko = HankoDev::spawn().await;
    let forwarder = CountingForwarder::start(&hanko).await;
    let upstream = EchoServer::start().await;
    let cache_seconds = 2;
    let proxy = EdgeProxy::spawn_ready(&config(
        &hanko,
        &upstream,
        &[
            &format!("session_validate_url = \"{}\"", forwarder.url()),
            &format!("session_cache_seconds = {cache_seconds}"),
        ],
    ))
    .await;
    let client = test_client();
    let (revoked, revoked_session) = session_token(&hanko, ADA);
    let (kept, _) = session_token(&hanko, ADA);

    assert_eq!(status(&client, &proxy, &revoked).await, 200);
    assert_eq!(status(&client, &proxy, &kept).await, 200);
    assert_eq!(forwarder.calls(), 2, "one call per session");

    hanko.revoke(&revoked_session);
    let revoked_at = Instant::now();
    // The cache period plus some slack for a loaded machine.
    let rejected = poll_until(Duration::from_secs(cache_seconds + 3), || async {
        status(&client, &proxy, &revoked).await == 401
    })
    .await;
    assert!(
        rejected,
        "the revoked session still passed {:?} after revocation",
        revoked_at.elapsed()
    );

    let response = get(&client, &proxy, &revoked).await;
    assert_eq!(response.status(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("a 401 carries a challenge")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        challenge.contains("error=\"invalid_token\"") && challenge.contains("revoked"),
        "{challenge}"
    );
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["status"], 401);

    assert_eq!(
        status(&client, &proxy, &kept).await,
        200,
        "another session of the same user still passes"
    );
    let upstream_before = upstream.request_count();
    assert_eq!(status(&client, &proxy, &revoked).await, 401);
    assert_eq!(upstream.request_count(), upstream_before);

    let logged = poll_until(Duration::from_secs(5), || {
        let log = proxy.log();
        async move { log.contains("session_revoked") }
    })
    .await;
    assert!(logged, "the access log names the reason:\n{}", proxy.log());
    let signature = revoked.rsplit('.').next().expect("three parts");
    assert!(!proxy.log().contains(signature), "a token reached the log");
}

#[tokio::test]
async fn burst_for_one_session_makes_one_validate_call() {
    let hanko = HankoDev::spawn().await;
    let forwarder = CountingForwarder::start(&hanko).await;
    let upstream = EchoServer::start().await;
    let proxy = Arc::new(
        EdgeProxy::spawn_ready(&config(
            &hanko,
            &upstream,
            &[&format!("session_validate_url = \"{}\"", forwarder.url())],
        ))
        .await,
    );
    let client = test_client();
    let (token, _) = session_token(&hanko, ADA);

    let mut requests = JoinSet::new();
    for _ in 0..200 {
        let (client, proxy, token) = (client.clone(), proxy.clone(), token.clone());
        requests.spawn(async move { status(&client, &proxy, &token).await });
    }
    let mut passed = 0;
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.expect("the request task ends"), 200);
        passed += 1;
    }

    assert_eq!(passed, 200);
    assert_eq!(forwarder.calls(), 1, "200 requests for one session");
    assert_eq!(upstream.request_count(), 200);

    assert_eq!(
        metric(&proxy, "edge_proxy_session_check_calls_total").await,
        1.0
    );
    let hits = metric(
        &proxy,
        "edge_proxy_session_cache_lookups_total{result=\"hit\"}",
    )
    .await;
    let misses = metric(
        &proxy,
        "edge_proxy_session_cache_lookups_total{result=\"miss\"}",
    )
    .await;
    assert!(misses >= 1.0, "the first request misses");
    assert_eq!(hits + misses, 200.0, "one lookup per request");
}

#[tokio::test]
async fn token_without_session_id_is_rejected() {
    let hanko = HankoDev::spawn().await;
    let upstream = EchoServer::start().await;
    let proxy = EdgeProxy::spawn_ready(&config(&hanko, &upstream, &[])).await;
    let mut claims =
        serde_json::to_value(TokenRequest::new(Uuid::parse_str(ADA).expect("a UUID")).claims())
            .expect("claims serialize");
    claims
        .as_object_mut()
        .expect("claims are an object")
        .remove("session_id");
    let token = hanko.sign_json(&claims);

    let response = get(&test_client(), &proxy, &token).await;

    assert_eq!(response.status(), 401);
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn unreachable_hanko_is_rejected_with_503_by_default() {
    let hanko = HankoDev::spawn().await;
    let upstream = EchoServer::start().await;
    let proxy =
        EdgeProxy::spawn_ready(&config(&hanko, &upstream, &["session_cache_seconds = 1"])).await;
    let client = test_client();
    let (checked, _) = session_token(&hanko, ADA);
    let (fresh, _) = session_token(&hanko, ADA);
    assert_eq!(status(&client, &proxy, &checked).await, 200);

    let _data_dir = hanko.stop();

    assert_unavailable(get(&client, &proxy, &fresh).await).await;
    let expired = poll_until(Duration::from_secs(5), || async {
        status(&client, &proxy, &checked).await == 503
    })
    .await;
    assert!(
        expired,
        "a cached response serves only for the cache period"
    );
    let upstream_before = upstream.request_count();
    assert_unavailable(get(&client, &proxy, &checked).await).await;
    assert_eq!(upstream.request_count(), upstream_before);

    let logged = poll_until(Duration::from_secs(5), || {
        let log = proxy.log();
        async move { log.contains("session_check_unavailable") }
    })
    .await;
    assert!(logged, "the access log names the reason:\n{}", proxy.log());
    assert!(
        metric(
            &proxy,
            "edge_proxy_refusals_total{reason=\"session_check_unavailable\"}"
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn accept_policy_passes_within_bound_then_fails_closed() {
    let hanko = HankoDev::spawn().await;
    let upstream = EchoServer::start().await;
    let bound = Duration::from_secs(4);
    let proxy = EdgeProxy::spawn_ready(&config(
        &hanko,
        &upstream,
        &[
            "session_cache_seconds = 1",
            "session_unreachable = \"accept\"",
            &format!("session_accept_unreachable_seconds = {}", bound.as_secs()),
        ],
    ))
    .await;
    let client = test_client();
    let (checked, _) = session_token(&hanko, ADA);
    let (fresh, _) = session_token(&hanko, ADA);

    let last_response_before = Instant::now();
    assert_eq!(status(&client, &proxy, &checked).await, 200);
    let _data_dir = hanko.stop();

    assert_eq!(
        status(&client, &proxy, &fresh).await,
        200,
        "a locally valid token passes while Hanko was reachable {:?} ago",
        last_response_before.elapsed()
    );
    let deadline = Instant::now() + bound + Duration::from_secs(3);
    let closed_after = loop {
        if status(&client, &proxy, &fresh).await == 503 {
            break Some(last_response_before.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let closed_after = closed_after.expect("the proxy fails closed after the bound");
    assert!(
        closed_after >= bound,
        "the proxy failed closed {closed_after:?} after Hanko's last response, before the {bound:?} bound"
    );
    assert_unavailable(get(&client, &proxy, &checked).await).await;

    let log = proxy.log();
    assert!(
        log.contains("accepting a locally valid token without a session check"),
        "acceptance is logged:\n{log}"
    );
    assert!(
        !log.contains(fresh.rsplit('.').next().expect("three parts")),
        "a token reached the log"
    );
    assert!(metric(&proxy, "edge_proxy_session_accepted_unreachable_total").await >= 1.0);
    assert!(metric(&proxy, "edge_proxy_session_check_failures_total").await >= 1.0);
}
