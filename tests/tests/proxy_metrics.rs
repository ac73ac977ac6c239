//! edge-proxy's `/metrics` and access log against the real binary: each
//! counter moves with the requests it counts, and one request's id shows up
//! in the JSON access lines of both edge-proxy and item-api.
//!
//! Every test starts its own proxy, so the counters start at zero.

use std::time::Duration;

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::edge_proxy::{
    EdgeProxy, ProxyConfig, ProxyStack, hanko_claims, metric_value, poll_until, test_client,
    unix_now,
};
use hanko_edge_tests::item_api::{ItemApi, ItemApiOptions};
use hanko_edge_tests::jwks::JwksServer;
use hanko_edge_tests::pg::TestDatabase;
use serde_json::Value;

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const POLL_TIMEOUT: Duration = Duration::from_secs(15);

fn requests(route: &str, method: &str, status_class: &str) -> String {
    format!(
        "edge_proxy_requests_total{{method=\"{method}\",route=\"{route}\",status_class=\"{status_class}\"}}"
    )
}

fn refusals(reason: &str) -> String {
    format!("edge_proxy_refusals_total{{reason=\"{reason}\"}}")
}

async fn get(stack: &ProxyStack, path: &str, token: Option<&str>) -> u16 {
    let mut request = stack.client.get(stack.proxy.url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
        .send()
        .await
        .expect("the proxy answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn request_and_refusal_counters_move() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let mut expired = hanko_claims(USER);
    expired["exp"] = (unix_now() - 3600).into();
    expired["iat"] = (unix_now() - 7200).into();
    let expired = stack.token(&expired);
    let mut other_audience = hanko_claims(USER);
    other_audience["aud"] = serde_json::json!(["somewhere-else"]);
    let other_audience = stack.token(&other_audience);

    for _ in 0..3 {
        assert_eq!(get(&stack, "/public/x", None).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(stack.post("/public/x").await.status(), 200);
    }
    assert_eq!(get(&stack, "/api/x", Some(&token)).await, 200);
    assert_eq!(get(&stack, "/nowhere", None).await, 404);
    assert_eq!(get(&stack, "/api/x", None).await, 401);
    assert_eq!(get(&stack, "/api/x", None).await, 401);
    assert_eq!(get(&stack, "/api/x", Some(&expired)).await, 401);
    assert_eq!(get(&stack, "/api/x", Some(&other_audience)).await, 401);

    // Pingora counts a request after its response is written, so the last
    // ones may still be on their way into the metrics.
    let counted = poll_until(Duration::from_secs(5), || async {
        let metrics = stack.proxy.metrics().await;
        metric_value(&metrics, &requests("/api", "GET", "4xx")) == Some(4.0)
            && metric_value(&metrics, "edge_proxy_requests_in_flight") == Some(0.0)
    })
    .await;
    let metrics = stack.proxy.metrics().await;
    assert!(counted, "the last requests were never counted:\n{metrics}");
    let value = |series: &str| metric_value(&metrics, series);
    assert_eq!(value(&requests("/public", "GET", "2xx")), Some(3.0));
    assert_eq!(value(&requests("/public", "POST", "2xx")), Some(2.0));
    assert_eq!(value(&requests("/api", "GET", "2xx")), Some(1.0));
    assert_eq!(value(&requests("/api", "GET", "4xx")), Some(4.0));
    assert_eq!(value(&requests("unmatched", "GET", "4xx")), Some(1.0));
    assert_eq!(value(&refusals("missing_token")), Some(2.0));
    assert_eq!(value(&refusals("expired")), Some(1.0));
    assert_eq!(value(&refusals("bad_audience")), Some(1.0));
    assert_eq!(value(&refusals("no_route")), Some(1.0));
    assert_eq!(
        value("edge_proxy_upstream_latency_seconds_count{route=\"/public\"}"),
        Some(5.0),
        "one latency sample per proxied request"
    );
    let latency_sum = value("edge_proxy_upstream_latency_seconds_sum{route=\"/public\"}")
        .expect("the /public latency histogram exists");
    assert!(latency_sum > 0.0, "latency sum {latency_sum}");
    assert_eq!(
        value("edge_proxy_upstream_latency_seconds_count{route=\"/api\"}"),
        Some(1.0),
        "refused requests reach no upstream and add no latency sample"
    );
    assert_eq!(value("edge_proxy_requests_in_flight"), Some(0.0));
}

#[tokio::test]
async fn text_access_log_is_the_default() {
    let stack = ProxyStack::start().await;
    let response = stack
        .get_with_headers("/public/x", &[("x-request-id", "text-log-check-1")])
        .await;
    assert_eq!(response.status(), 200);

    let logged = poll_until(POLL_TIMEOUT, || async {
        stack.proxy.log().contains("text-log-check-1")
    })
    .await;
    assert!(logged, "no access line:\n{}", stack.proxy.log());
    let log = stack.proxy.log();
    let line = log
        .lines()
        .find(|line| line.contains("text-log-check-1"))
        .expect("the access line is there");
    assert!(
        serde_json::from_str::<Value>(line).is_err(),
        "not a text line: {line}"
    );
    assert!(line.contains("edge_proxy::access"), "{line}");
    assert!(line.contains("client=127.0.0.1 peer=127.0.0.1 "), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("route=\"/public\""), "{line}");
}

#[tokio::test]
async fn token_cache_counters_follow_lookups() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let hits = "edge_proxy_token_cache_lookups_total{result=\"hit\"}";
    let misses = "edge_proxy_token_cache_lookups_total{result=\"miss\"}";
    assert_eq!(stack.proxy.metric(hits).await, 0.0);
    assert_eq!(stack.proxy.metric(misses).await, 0.0);

    assert_eq!(get(&stack, "/api/x", Some(&token)).await, 200);
    assert_eq!(stack.proxy.metric(misses).await, 1.0);
    assert_eq!(stack.proxy.metric(hits).await, 0.0);

    assert_eq!(get(&stack, "/api/x", Some(&token)).await, 200);
    assert_eq!(get(&stack, "/api/x", Some(&token)).await, 200);
    assert_eq!(stack.proxy.metric(hits).await, 2.0);
    assert_eq!(stack.proxy.metric(misses).await, 1.0);
    assert_eq!(
        stack.proxy.metric("edge_proxy_token_cache_entries").await,
        1.0
    );

    // A forged token misses and is never cached.
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(get(&stack, "/api/x", Some(&forged)).await, 401);
    assert_eq!(get(&stack, "/api/x", Some(&forged)).await, 401);
    assert_eq!(stack.proxy.metric(misses).await, 3.0);
    assert_eq!(stack.proxy.metric(hits).await, 2.0);
}

#[tokio::test]
async fn key_set_counters_follow_fetches() {
    let stack =
        ProxyStack::start_with(|config| config.jwks("unknown_kid_cooldown_seconds = 1")).await;
    let fetches = "edge_proxy_key_set_fetches_total";
    let failures = "edge_proxy_key_set_fetch_failures_total";

    let metrics = stack.proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, fetches),
        Some(stack.jwks.fetch_count() as f64),
        "every fetch the JWKS server saw is counted"
    );
    assert_eq!(metric_value(&metrics, failures), Some(0.0));
    let age = metric_value(&metrics, "edge_proxy_key_set_age_seconds")
        .expect("the key set age is exported");
    assert!((0.0..60.0).contains(&age), "key set age {age}");

    // A token from a key the set lacks costs one refetch, which succeeds.
    let stranger = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let stranger_token = stranger.sign(&hanko_claims(USER)).expect("signs");
    let before = stack.proxy.metric(fetches).await;
    assert_eq!(get(&stack, "/api/x", Some(&stranger_token)).await, 401);
    assert_eq!(stack.proxy.metric(fetches).await, before + 1.0);
    assert_eq!(stack.proxy.metric(failures).await, 0.0);
    assert_eq!(stack.proxy.metric(&refusals("unknown_kid")).await, 1.0);
    // The successful refetch made the keys younger, so the comparison
    // below starts from here, not from the first reading.
    let age_before_failure = stack.proxy.metric("edge_proxy_key_set_age_seconds").await;

    // With the key set returning 503 the next refetch, once the cooldown
    // has passed, fails and is counted as both a fetch and a failure. The
    // proxy cannot tell a new key from a forged kid then, so it responds with 503.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    stack.jwks.set_unavailable(true);
    assert_eq!(get(&stack, "/api/x", Some(&stranger_token)).await, 503);
    assert_eq!(stack.proxy.metric(fetches).await, before + 2.0);
    assert_eq!(stack.proxy.metric(failures).await, 1.0);
    let age_after_failure = stack.proxy.metric("edge_proxy_key_set_age_seconds").await;
    assert!(
        age_after_failure >= age_before_failure,
        "a failed fetch does not make the keys younger: \
         {age_after_failure} < {age_before_failure}"
    );
}

#[tokio::test]
async fn json_logs_share_request_id() {
    let database = TestDatabase::new().await;
    let item_api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            global_args: vec!["--log-format".to_owned(), "json".to_owned()],
            ..ItemApiOptions::default()
        },
    )
    .await;
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let config = ProxyConfig::new(&jwks.base_url()).route(&format!(
        "path_prefix = \"/api\"\nupstream = \"{}\"\nauth = \"required\"",
        item_api.addr()
    ));
    let mut proxy = EdgeProxy::spawn_with_args(&config.to_toml(), &["--log-format", "json"]).await;
    proxy.wait_ready().await;
    let token = key.sign(&hanko_claims(USER)).expect("signs");
    let client = test_client();

    // One request with a client id, one with an id the proxy makes up.
    let sent = client
        .get(proxy.url("/api/v1/item/"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "json-log-check-7")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(sent.status(), 200, "{}", proxy.log());
    let generated = client
        .get(proxy.url("/api/v1/item/"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(generated.status(), 200);
    let generated_id = generated
        .headers()
        .get("x-request-id")
        .expect("the proxy returns the request id")
        .to_str()
        .expect("ASCII")
        .to_owned();

    for request_id in ["json-log-check-7", generated_id.as_str()] {
        let both_logged = poll_until(POLL_TIMEOUT, || async {
            access_line(&proxy.log(), request_id).is_some()
                && access_line(&item_api.log(), request_id).is_some()
        })
        .await;
        assert!(
            both_logged,
            "request id {request_id} missing\n--- edge-proxy ---\n{}\n--- item-api ---\n{}",
            proxy.log(),
            item_api.log()
        );
        let proxy_line = access_line(&proxy.log(), request_id).expect("checked above");
        assert_eq!(proxy_line["client"], "127.0.0.1");
        assert_eq!(proxy_line["peer"], "127.0.0.1");
        assert_eq!(proxy_line["status"], 200);
        assert_eq!(proxy_line["route"], "/api");
        assert_eq!(proxy_line["user"], USER);
        let item_line = access_line(&item_api.log(), request_id).expect("checked above");
        assert_eq!(item_line["status"], 200);
    }
    for line in proxy.log().lines().filter(|line| !line.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "edge-proxy wrote a line that is not JSON: {line}"
        );
    }
    assert!(
        !proxy.log().contains(&token),
        "the token must never be logged"
    );
}

/// Returns the JSON access line of `log` whose `request_id` field is
/// `request_id`.
fn access_line(log: &str, request_id: &str) -> Option<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["request_id"] == request_id
                && line["message"] == "request"
                && line["status"].is_number()
        })
}
