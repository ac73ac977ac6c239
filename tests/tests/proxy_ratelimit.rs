//! edge-proxy per-route rate limits against the real binary: a user over
//! the limit gets 429 with `Retry-After` and a problem body while other
//! users carry on, the upstream never sees the refused requests, and
//! requests without a verified user are counted per client address.

use std::time::Duration;

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::echo::EchoServer;
use hanko_edge_tests::edge_proxy::{EdgeProxy, ProxyConfig, hanko_claims, poll_until, test_client};
use hanko_edge_tests::jwks::JwksServer;

const ADA: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const GRACE: &str = "0b5e7c1d-2f3a-4b6c-8d9e-0f1a2b3c4d5e";

/// One token every 5 s with a burst of 3, so a test sends its burst and the
/// next request long before a token refills.
const SLOW_LIMIT: &str = "{ requests_per_second = 0.2, burst = 3 }";

/// A key, its key set server, an echo upstream and a proxy with rate
/// limited routes in front of it.
struct Stack {
    key: SigningKey,
    _jwks: JwksServer,
    upstream: EchoServer,
    proxy: EdgeProxy,
    client: reqwest::Client,
}

impl Stack {
    /// Starts the proxy with one `[[proxy.routes]]` table per
    /// `(path_prefix, auth, rate_limit)`, all to the echo upstream.
    async fn start(routes: &[(&str, &str, Option<&str>)]) -> Stack {
        let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("RSA key generation works");
        let jwks = JwksServer::start(&[&key]).await;
        let upstream = EchoServer::start().await;
        let mut config = ProxyConfig::new(&jwks.base_url());
        for (prefix, auth, limit) in routes {
            let mut body = format!(
                "path_prefix = \"{prefix}\"\nupstream = \"{}\"\nauth = \"{auth}\"",
                upstream.addr()
            );
            if let Some(limit) = limit {
                body.push_str(&format!("\nrate_limit = {limit}"));
            }
            config = config.route(&body);
        }
        let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
        Stack {
            key,
            _jwks: jwks,
            upstream,
            proxy,
            client: test_client(),
        }
    }

    fn token(&self, subject: &str) -> String {
        self.key
            .sign(&hanko_claims(subject))
            .expect("signing works")
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.proxy.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send().await.expect("the proxy answers")
    }

    async fn status(&self, path: &str, token: Option<&str>) -> u16 {
        self.get(path, token).await.status().as_u16()
    }

    /// Reads one sample from the admin `/metrics`; 0 when the series is
    /// not exported yet.
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(self.proxy.admin_url("/metrics"))
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
}

/// Asserts a 429 with a whole-second `Retry-After` between 1 and
/// `max_seconds` and a problem body.
async fn assert_rate_limited(response: reqwest::Response, max_seconds: u64) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(
        (1..=max_seconds).contains(&retry_after),
        "Retry-After {retry_after} is outside 1..={max_seconds}"
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .expect("content type"),
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["status"], 429);
    assert_eq!(body["title"], "Too Many Requests");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| !detail.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn user_over_limit_gets_429_while_other_user_passes() {
    let stack = Stack::start(&[("/limited", "required", Some(SLOW_LIMIT))]).await;
    let ada = stack.token(ADA);
    let grace = stack.token(GRACE);

    for attempt in 0..3 {
        assert_eq!(
            stack.status("/limited/x", Some(&ada)).await,
            200,
            "request {attempt} is within the burst"
        );
    }
    assert_eq!(stack.upstream.request_count(), 3);

    for _ in 0..2 {
        assert_rate_limited(stack.get("/limited/x", Some(&ada)).await, 5).await;
    }
    assert_eq!(
        stack.upstream.request_count(),
        3,
        "refused requests never reach the upstream"
    );

    for attempt in 0..3 {
        assert_eq!(
            stack.status("/limited/x", Some(&grace)).await,
            200,
            "another user's request {attempt} is unaffected"
        );
    }
    assert_eq!(stack.upstream.request_count(), 6);
    assert_eq!(stack.status("/limited/x", Some(&ada)).await, 429);

    let logged = poll_until(Duration::from_secs(5), || {
        let log = stack.proxy.log();
        async move { log.contains("rate_limited") }
    })
    .await;
    assert!(
        logged,
        "the access log names the reason:\n{}",
        stack.proxy.log()
    );
    // The counter moves after the response is written.
    let counted = poll_until(Duration::from_secs(5), || async {
        stack
            .metric("edge_proxy_refusals_total{reason=\"rate_limited\"}")
            .await
            == 3.0
    })
    .await;
    assert!(counted, "{}", stack.proxy.metrics().await);
}

#[tokio::test]
async fn limit_is_per_user_across_tokens() {
    let stack = Stack::start(&[(
        "/limited",
        "required",
        Some("{ requests_per_second = 0.2, burst = 2 }"),
    )])
    .await;

    // Two sessions of one user share the user's bucket.
    let first = stack.token(ADA);
    let second = stack.token(ADA);
    assert_ne!(first, second);

    assert_eq!(stack.status("/limited", Some(&first)).await, 200);
    assert_eq!(stack.status("/limited", Some(&second)).await, 200);
    assert_eq!(stack.status("/limited", Some(&first)).await, 429);
    assert_eq!(stack.status("/limited", Some(&second)).await, 429);
}

#[tokio::test]
async fn anonymous_requests_are_limited_by_address() {
    let limit = "{ requests_per_second = 0.2, burst = 2 }";
    let stack = Stack::start(&[
        ("/open", "none", Some(limit)),
        ("/maybe", "optional", Some(limit)),
    ])
    .await;

    assert_eq!(stack.status("/open", None).await, 200);
    assert_eq!(stack.status("/open", None).await, 200);
    assert_rate_limited(stack.get("/open", None).await, 10).await;

    // The optional route has its own buckets: anonymous requests count
    // against the address, a verified user against the user.
    assert_eq!(stack.status("/maybe", None).await, 200);
    assert_eq!(stack.status("/maybe", None).await, 200);
    assert_rate_limited(stack.get("/maybe", None).await, 10).await;
    let ada = stack.token(ADA);
    assert_eq!(stack.status("/maybe", Some(&ada)).await, 200);

    assert_eq!(stack.upstream.request_count(), 5);
}

#[tokio::test]
async fn route_without_limit_is_not_limited() {
    let stack = Stack::start(&[
        ("/limited", "required", Some(SLOW_LIMIT)),
        ("/api", "required", None),
    ])
    .await;
    let ada = stack.token(ADA);

    for attempt in 0..30 {
        assert_eq!(
            stack.status("/api/items", Some(&ada)).await,
            200,
            "request {attempt}"
        );
    }
    assert_eq!(stack.upstream.request_count(), 30);
}

#[tokio::test]
async fn limited_user_passes_again_after_refill() {
    let stack = Stack::start(&[(
        "/limited",
        "required",
        Some("{ requests_per_second = 1, burst = 1 }"),
    )])
    .await;
    let ada = stack.token(ADA);

    assert_eq!(stack.status("/limited", Some(&ada)).await, 200);
    let refused = stack.get("/limited", Some(&ada)).await;
    assert_rate_limited(refused, 1).await;

    let passed = poll_until(Duration::from_secs(3), || async {
        stack.status("/limited", Some(&ada)).await == 200
    })
    .await;
    assert!(passed, "one token refills within a second");
}

#[tokio::test]
async fn reload_keeps_rate_limit_state() {
    let mut stack = Stack::start(&[("/limited", "required", Some(SLOW_LIMIT))]).await;
    let ada = stack.token(ADA);
    for _ in 0..3 {
        assert_eq!(stack.status("/limited/x", Some(&ada)).await, 200);
    }
    assert_eq!(stack.status("/limited/x", Some(&ada)).await, 429);

    // The same file again: the route and its limit are unchanged, so the
    // bucket must carry over instead of granting a fresh burst.
    stack.proxy.process().signal("HUP");
    let reloaded = poll_until(Duration::from_secs(15), || async {
        stack
            .metric("edge_proxy_config_reloads_total{result=\"succeeded\"}")
            .await
            >= 1.0
    })
    .await;
    assert!(
        reloaded,
        "the reload was not counted:\n{}",
        stack.proxy.log()
    );

    assert_eq!(
        stack.status("/limited/x", Some(&ada)).await,
        429,
        "the bucket survives the reload"
    );
    assert_eq!(stack.upstream.request_count(), 3);
}
