//! edge-proxy key set handling against the real binary: rotation without a
//! restart, bounded refetching, one shared cold fetch, and what happens
//! while the key set cannot be fetched.

use std::time::Duration;

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::echo::EchoServer;
use hanko_edge_tests::edge_proxy::{
    EdgeProxy, ProxyConfig, ProxyStack, hanko_claims, metric_value, poll_until, test_client,
};
use hanko_edge_tests::jwks::JwksServer;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const POLL_TIMEOUT: Duration = Duration::from_secs(15);

async fn status_with_token(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    client
        .get(url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("the proxy answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn added_key_passes_after_one_refetch_and_removed_key_fails_after_refresh() {
    let stack = ProxyStack::start().await;
    let url = stack.proxy.url("/api/x");
    let old_token = stack.valid_token(USER);
    assert_eq!(
        status_with_token(&stack.client, &url, &old_token).await,
        200
    );
    let fetches_before = stack.jwks.fetch_count();

    // Rotation as Hanko does it: a new key in front, the old one still
    // published, with a short max-age so the removal below shows soon.
    let new_key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    stack.jwks.set_max_age(Some(1));
    stack.jwks.add_key(&new_key);
    let new_token = new_key.sign(&hanko_claims(USER)).expect("signs");

    assert_eq!(
        status_with_token(&stack.client, &url, &new_token).await,
        200
    );
    assert_eq!(
        stack.jwks.fetch_count(),
        fetches_before + 1,
        "an unseen kid costs exactly one refetch"
    );
    assert_eq!(
        status_with_token(&stack.client, &url, &old_token).await,
        200
    );

    stack.jwks.remove_key(stack.key.kid());
    let old_rejected = poll_until(POLL_TIMEOUT, || async {
        status_with_token(&stack.client, &url, &old_token).await == 401
    })
    .await;
    assert!(
        old_rejected,
        "a token of a removed key must fail after the next refresh:\n{}",
        stack.proxy.log()
    );
    assert_eq!(
        status_with_token(&stack.client, &url, &new_token).await,
        200
    );
}

#[tokio::test]
async fn random_kids_cost_at_most_one_refetch() {
    let stack = ProxyStack::start().await;
    let url = stack.proxy.url("/api/x");
    let claims = hanko_claims(USER);

    for _ in 0..100 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(uuid::Uuid::new_v4().to_string());
        let token =
            jsonwebtoken::encode(&header, &claims, stack.key.encoding_key()).expect("signs");
        assert_eq!(status_with_token(&stack.client, &url, &token).await, 401);
    }

    assert!(
        stack.jwks.fetch_count() <= 2,
        "100 random kids caused {} key set fetches",
        stack.jwks.fetch_count()
    );
}

#[tokio::test]
async fn failed_refetch_for_new_kid_gives_503() {
    let stack =
        ProxyStack::start_with(|config| config.jwks("unknown_kid_cooldown_seconds = 2")).await;
    let url = stack.proxy.url("/api/x");
    let old_token = stack.valid_token(USER);
    assert_eq!(
        status_with_token(&stack.client, &url, &old_token).await,
        200
    );

    // Hanko rotated to a key the proxy has not seen, and its key set
    // endpoint fails.
    let new_key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    stack.jwks.add_key(&new_key);
    stack.jwks.set_unavailable(true);
    let new_token = new_key.sign(&hanko_claims(USER)).expect("signs");

    let response = stack.get_with_token("/api/x", &new_token).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let fetches = stack.jwks.fetch_count();
    assert_eq!(
        status_with_token(&stack.client, &url, &new_token).await,
        503,
        "within the cooldown the failed refetch stands"
    );
    assert_eq!(
        stack.jwks.fetch_count(),
        fetches,
        "no fetch within the cooldown"
    );
    assert_eq!(
        status_with_token(&stack.client, &url, &old_token).await,
        200,
        "known keys keep working"
    );

    stack.jwks.set_unavailable(false);
    let recovered = poll_until(POLL_TIMEOUT, || async {
        status_with_token(&stack.client, &url, &new_token).await == 200
    })
    .await;
    assert!(recovered, "the new key passes once the key set is back");
}

#[tokio::test]
async fn good_fetch_ends_503_for_unknown_kids() {
    // A long cooldown, and a set that expires every second so the
    // background refresh keeps fetching.
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_max_age(Some(1));
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url())
        .standard_routes(upstream.addr())
        .jwks("unknown_kid_cooldown_seconds = 60");
    let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
    let client = test_client();
    let url = proxy.url("/api/x");
    let token = key.sign(&hanko_claims(USER)).expect("signs");
    assert_eq!(status_with_token(&client, &url, &token).await, 200);

    let new_key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    jwks.add_key(&new_key);
    jwks.set_unavailable(true);
    let new_token = new_key.sign(&hanko_claims(USER)).expect("signs");
    assert_eq!(status_with_token(&client, &url, &new_token).await, 503);

    // The background refresh loads the new key once the set is back.
    jwks.set_unavailable(false);
    let loaded = poll_until(POLL_TIMEOUT, || async {
        status_with_token(&client, &url, &new_token).await == 200
    })
    .await;
    assert!(loaded, "the background refresh did not load the new key");

    // Still within the cooldown, a kid the good set lacks is refused as
    // invalid: the failed refetch no longer speaks for the key set.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(uuid::Uuid::new_v4().to_string());
    let forged =
        jsonwebtoken::encode(&header, &hanko_claims(USER), key.encoding_key()).expect("signs");
    assert_eq!(status_with_token(&client, &url, &forged).await, 401);
}

#[tokio::test]
async fn unknown_kids_in_cooldown_skip_slow_fetches() {
    // Fetches may take up to 10 s, so the slow ones below do not time out.
    let stack = ProxyStack::start_with(|config| config.jwks("fetch_timeout_ms = 10000")).await;
    let url = stack.proxy.url("/api/x");
    assert_eq!(
        status_with_token(&stack.client, &url, &stack.valid_token(USER)).await,
        200
    );
    let random_kid_token = || {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(uuid::Uuid::new_v4().to_string());
        jsonwebtoken::encode(&header, &hanko_claims(USER), stack.key.encoding_key()).expect("signs")
    };

    // From now on every fetch takes 5 s. The refetch for the first unknown
    // kid loads a set with a max-age of 1 s, so about a second later the
    // background refresh starts a fetch and holds the fetch lock for 5 s.
    stack.jwks.set_delay(Duration::from_secs(5));
    stack.jwks.set_max_age(Some(1));
    assert_eq!(
        status_with_token(&stack.client, &url, &random_kid_token()).await,
        401
    );
    let fetches = stack.jwks.fetch_count();
    let refreshing = poll_until(POLL_TIMEOUT, || async {
        stack.jwks.fetch_count() > fetches
    })
    .await;
    assert!(refreshing, "the background refresh did not start");
    let answered = stack.jwks.answered_count();

    // Each request is answered while the background fetch, which holds
    // the fetch lock, has not been answered yet: none waited for it.
    for _ in 0..5 {
        assert_eq!(
            status_with_token(&stack.client, &url, &random_kid_token()).await,
            401
        );
        assert_eq!(
            stack.jwks.answered_count(),
            answered,
            "an unknown kid within the cooldown waited for the background fetch"
        );
    }
    assert_eq!(
        stack.jwks.fetch_count(),
        fetches + 1,
        "one background fetch, started before the requests, was still running"
    );
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_fetch() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    // Long enough that the first fetch is still running when the burst
    // starts, even on a slow machine.
    jwks.set_delay(Duration::from_secs(3));
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url()).standard_routes(upstream.addr());
    let proxy = EdgeProxy::spawn(&config.to_toml()).await;
    let client = test_client();
    let url = proxy.url("/api/x");
    let ready = client
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(ready.status(), 503, "the keys must still be loading");

    let tokens: Vec<String> = (0..50)
        .map(|index| {
            let mut claims = hanko_claims(&format!("user-{index}"));
            claims["session_id"] = json!(index.to_string());
            key.sign(&claims).expect("signs")
        })
        .collect();
    let mut requests = tokio::task::JoinSet::new();
    for token in tokens {
        let client = client.clone();
        let url = url.clone();
        requests.spawn(async move { status_with_token(&client, &url, &token).await });
    }
    let statuses: Vec<u16> = requests.join_all().await;

    assert!(
        statuses.iter().all(|status| *status == 200),
        "statuses: {statuses:?}\n{}",
        proxy.log()
    );
    assert_eq!(jwks.fetch_count(), 1, "50 cold requests share one fetch");
}

#[tokio::test]
async fn warm_keys_serve_within_stale_window_while_key_set_is_down() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let mut jwks = JwksServer::start(&[&key]).await;
    jwks.set_max_age(Some(1));
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url())
        .standard_routes(upstream.addr())
        .auth("token_cache = { enabled = false }")
        .jwks("stale_seconds = 600")
        .jwks("retry_seconds = 1");
    let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
    let client = test_client();
    let url = proxy.url("/api/x");
    let token = key.sign(&hanko_claims(USER)).expect("signs");
    assert_eq!(status_with_token(&client, &url, &token).await, 200);

    jwks.go_down().await;
    let refresh_failed = poll_until(POLL_TIMEOUT, || async {
        proxy.log().contains("fetching the key set failed")
    })
    .await;
    assert!(
        refresh_failed,
        "the refresh should have failed:\n{}",
        proxy.log()
    );

    let fresh_token = key.sign(&hanko_claims("another-user")).expect("signs");
    assert_eq!(status_with_token(&client, &url, &token).await, 200);
    assert_eq!(status_with_token(&client, &url, &fresh_token).await, 200);

    jwks.set_unavailable(true);
    let fetches_while_down = jwks.fetch_count();
    jwks.come_up().await;
    let answered_503 = poll_until(POLL_TIMEOUT, || async {
        jwks.fetch_count() > fetches_while_down
    })
    .await;
    assert!(answered_503, "the proxy should retry the key set");
    assert_eq!(status_with_token(&client, &url, &token).await, 200);
}

#[tokio::test]
async fn keys_past_stale_window_give_503_never_401() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let mut jwks = JwksServer::start(&[&key]).await;
    jwks.set_max_age(Some(1));
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url())
        .standard_routes(upstream.addr())
        .jwks("stale_seconds = 1")
        .jwks("retry_seconds = 1");
    let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
    let client = test_client();
    let url = proxy.url("/api/x");
    let token = key.sign(&hanko_claims(USER)).expect("signs");
    assert_eq!(status_with_token(&client, &url, &token).await, 200);

    jwks.go_down().await;
    let became_503 = poll_until(POLL_TIMEOUT, || async {
        let status = status_with_token(&client, &url, &token).await;
        assert!(status == 200 || status == 503, "unexpected status {status}");
        status == 503
    })
    .await;
    assert!(became_503, "expired keys must give 503:\n{}", proxy.log());
}

#[tokio::test]
async fn cold_proxy_with_key_set_down_gives_503_then_recovers() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let mut jwks = JwksServer::start(&[&key]).await;
    jwks.go_down().await;
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url())
        .standard_routes(upstream.addr())
        .jwks("retry_seconds = 1");
    let proxy = EdgeProxy::spawn(&config.to_toml()).await;
    let client = test_client();
    let token = key.sign(&hanko_claims(USER)).expect("signs");

    let ready = client
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(ready.status(), 503);

    let response = client
        .get(proxy.url("/api/x"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("503 carries Retry-After")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("Retry-After is seconds");
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], 503);
    let malformed = status_with_token(&client, &proxy.url("/api/x"), "abc").await;
    assert_eq!(
        malformed, 401,
        "no key set could make a malformed token valid"
    );
    assert_eq!(upstream.request_count(), 0);

    let public = client
        .get(proxy.url("/public/x"))
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(public.status(), 200, "routes without auth keep working");

    jwks.come_up().await;
    let recovered = poll_until(POLL_TIMEOUT, || async {
        status_with_token(&client, &proxy.url("/api/x"), &token).await == 200
    })
    .await;
    assert!(
        recovered,
        "the proxy should load the keys once they are back"
    );
    let ready = client
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn unusable_keys_in_the_set_are_skipped() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[]).await;
    let short_modulus = "w".repeat(171);
    jwks.set_jwks(vec![
        json!({"kty": "RSA", "kid": "short", "alg": "RS256", "n": short_modulus, "e": "AQAB"}),
        json!({"kty": "EC", "kid": "ec", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        key.public_jwk(),
    ]);
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url()).standard_routes(upstream.addr());
    let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
    let client = test_client();

    let token = key.sign(&hanko_claims(USER)).expect("signs");
    assert_eq!(
        status_with_token(&client, &proxy.url("/api/x"), &token).await,
        200
    );
    assert!(
        proxy.log().contains("skipping a key the proxy cannot use"),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn token_cache_can_be_turned_off() {
    let stack =
        ProxyStack::start_with(|config| config.auth("token_cache = { enabled = false }")).await;
    let url = stack.proxy.url("/api/x");
    let token = stack.valid_token(USER);

    for _ in 0..3 {
        assert_eq!(status_with_token(&stack.client, &url, &token).await, 200);
    }
    // With the cache on, the second and third request would be hits.
    let hits = "edge_proxy_token_cache_lookups_total{result=\"hit\"}";
    let metrics = stack.proxy.metrics().await;
    assert_eq!(metric_value(&metrics, hits), Some(0.0), "{metrics}");
    assert_eq!(
        metric_value(&metrics, "edge_proxy_token_cache_entries"),
        Some(0.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn hanko_size_key_is_accepted() {
    // Hanko signs with 4096-bit keys; the other tests use smaller ones
    // because they are faster to make.
    let key = SigningKey::generate(4096).expect("RSA key generation works");
    let other = SigningKey::generate(4096).expect("RSA key generation works");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let config = ProxyConfig::new(&jwks.base_url()).standard_routes(upstream.addr());
    let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
    let url = proxy.url("/api/x");
    let client = test_client();

    let token = key.sign(&hanko_claims(USER)).expect("signing works");
    assert_eq!(status_with_token(&client, &url, &token).await, 200);

    // Signed by another 4096-bit key under the published kid.
    let mut forged_header = Header::new(Algorithm::RS256);
    forged_header.kid = Some(key.kid().to_owned());
    let forged = jsonwebtoken::encode(&forged_header, &hanko_claims(USER), other.encoding_key())
        .expect("signing works");
    assert_eq!(status_with_token(&client, &url, &forged).await, 401);
    assert_eq!(upstream.request_count(), 1);
}
