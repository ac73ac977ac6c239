//! edge-proxy config reload on SIGHUP against the real binary. No request
//! fails while valid and invalid files are loaded under load, and an invalid
//! file leaves the running config in place. The key source and token cache
//! carry over only when their settings are unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::echo::{EchoServer, Echoed};
use hanko_edge_tests::edge_proxy::{
    EdgeProxy, ProxyConfig, hanko_claims, metric_value, poll_until, test_client,
};
use hanko_edge_tests::jwks::JwksServer;
use hanko_edge_tests::process::free_loopback_addr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const POLL_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound on the requests each load task sends.
const MAX_REQUESTS_PER_TASK: usize = 5_000;
/// Upper bound on how long the load runs.
const MAX_LOAD_TIME: Duration = Duration::from_secs(60);

const RELOADS_SUCCEEDED: &str = "edge_proxy_config_reloads_total{result=\"succeeded\"}";
const RELOADS_FAILED: &str = "edge_proxy_config_reloads_total{result=\"failed\"}";
const CACHE_HITS: &str = "edge_proxy_token_cache_lookups_total{result=\"hit\"}";
const CACHE_MISSES: &str = "edge_proxy_token_cache_lookups_total{result=\"miss\"}";

/// Config generation `generation`: `/api` (token required) and `/public`
/// on `upstream`, plus a route `/gen<generation>` that only this
/// generation has.
fn generation_config(jwks: &JwksServer, upstream: SocketAddr, generation: u32) -> ProxyConfig {
    ProxyConfig::new(&jwks.base_url())
        .route(&format!(
            "path_prefix = \"/api\"\nupstream = \"{upstream}\"\nauth = \"required\""
        ))
        .route(&format!(
            "path_prefix = \"/public\"\nupstream = \"{upstream}\"\nauth = \"none\""
        ))
        .route(&format!(
            "path_prefix = \"/gen{generation}\"\nupstream = \"{upstream}\"\nauth = \"none\""
        ))
}

/// An invalid variant of `valid` and a piece of the error it must log.
fn invalid_config(valid: &str, variant: u32) -> (String, &'static str) {
    match variant {
        0 => (
            valid.replace("audience = \"localhost\"\n", ""),
            "proxy.auth.audience is missing",
        ),
        1 => (
            valid.replacen("auth = \"none\"", "auth = \"none\"\ncolour = \"red\"", 1),
            "colour",
        ),
        2 => (
            valid.replacen("auth = \"required\"", "auth = \"sometimes\"", 1),
            "sometimes",
        ),
        3 => (
            valid.replace("[proxy.auth.jwks]\n", "[proxy.auth.jwks\n"),
            "TOML parse error",
        ),
        _ => (
            valid.replace("[proxy.auth]\n", "[proxy.auth]\nleeway_seconds = 100000\n"),
            "leeway_seconds = 100000",
        ),
    }
}

/// Sends SIGHUP and waits until the reload counters add up to `reloads`.
async fn reload(proxy: &mut EdgeProxy, reloads: f64) {
    proxy.process().signal("HUP");
    let done = poll_until(POLL_TIMEOUT, || async {
        proxy.metric(RELOADS_SUCCEEDED).await + proxy.metric(RELOADS_FAILED).await >= reloads
    })
    .await;
    assert!(done, "reload {reloads} was not counted:\n{}", proxy.log());
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("the proxy answers")
        .status()
        .as_u16()
}

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

/// Outcomes of the load tasks' requests.
#[derive(Default)]
struct LoadResults {
    succeeded: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

impl LoadResults {
    fn fail(&self, what: String) {
        self.failures.lock().expect("lock").push(what);
    }
}

/// Sends requests through a pooled keep-alive client until `stop` is set
/// or a bound is reached, alternating a public and a protected route.
async fn pooled_load(
    proxy: SocketAddr,
    token: String,
    stop: Arc<AtomicBool>,
    results: Arc<LoadResults>,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let started = Instant::now();
    for index in 0..MAX_REQUESTS_PER_TASK {
        if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
            return;
        }
        let path = if index % 2 == 0 {
            "/public/load"
        } else {
            "/api/load"
        };
        let response = client
            .get(format!("http://{proxy}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 200 => {
                results.succeeded.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response) => results.fail(format!("GET {path}: status {}", response.status())),
            Err(error) => results.fail(format!("GET {path}: {error}")),
        }
    }
}

/// Sends requests one after the other on a single raw keep-alive
/// connection, so a closed connection shows up as a failure.
async fn single_connection_load(
    proxy: SocketAddr,
    token: String,
    stop: Arc<AtomicBool>,
    results: Arc<LoadResults>,
) {
    let stream = match TcpStream::connect(proxy).await {
        Ok(stream) => stream,
        Err(error) => return results.fail(format!("connect: {error}")),
    };
    let mut stream = BufReader::new(stream);
    let started = Instant::now();
    for index in 0..MAX_REQUESTS_PER_TASK {
        if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
            return;
        }
        let path = if index % 2 == 0 {
            "/api/keepalive"
        } else {
            "/public/keepalive"
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {proxy}\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let exchange = async {
            stream.get_mut().write_all(request.as_bytes()).await?;
            read_response(&mut stream).await
        };
        match tokio::time::timeout(Duration::from_secs(20), exchange).await {
            Ok(Ok(200)) => {
                results.succeeded.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(status)) => {
                return results.fail(format!("keep-alive GET {path}: status {status}"));
            }
            Ok(Err(error)) => return results.fail(format!("keep-alive GET {path}: {error}")),
            Err(_) => return results.fail(format!("keep-alive GET {path}: timed out")),
        }
    }
}

/// Reads one response with a `Content-Length` body and returns its status.
async fn read_response(stream: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut status_line = String::new();
    if stream.read_line(&mut status_line).await? == 0 {
        return Err(std::io::Error::other("the proxy closed the connection"));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("the proxy closed the connection"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad header {line:?}")))?;
        }
        if line.to_ascii_lowercase().starts_with("connection: close") {
            return Err(std::io::Error::other(
                "the proxy asked to close the connection",
            ));
        }
    }
    let mut body = vec![0; content_length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}

#[tokio::test]
async fn ten_reloads_under_load_fail_no_request() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let first = EchoServer::start_named("first").await;
    let second = EchoServer::start_named("second").await;
    let upstream_of = |generation: u32| {
        if generation.is_multiple_of(2) {
            (first.addr(), "first")
        } else {
            (second.addr(), "second")
        }
    };
    let mut proxy =
        EdgeProxy::spawn_ready(&generation_config(&jwks, first.addr(), 0).to_toml()).await;
    let token = key.sign(&hanko_claims(USER)).expect("signs");
    let client = test_client();

    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(LoadResults::default());
    let mut tasks = Vec::new();
    for task in 0..4 {
        let (addr, token, stop, results) =
            (proxy.addr(), token.clone(), stop.clone(), results.clone());
        tasks.push(if task < 2 {
            tokio::spawn(pooled_load(addr, token, stop, results))
        } else {
            tokio::spawn(single_connection_load(addr, token, stop, results))
        });
    }

    let mut generation = 0;
    for reload_number in 1..=10_u32 {
        // Let the load run into each reload.
        let before = results.succeeded.load(Ordering::SeqCst);
        let progressed = poll_until(POLL_TIMEOUT, || async {
            results.succeeded.load(Ordering::SeqCst) >= before + 20
        })
        .await;
        assert!(progressed, "the load stalled before reload {reload_number}");

        if reload_number % 2 == 1 {
            generation += 1;
            let (upstream, name) = upstream_of(generation);
            let mut text = generation_config(&jwks, upstream, generation).to_toml();
            if generation == 3 {
                text = text.replacen("[proxy]\n", "[proxy]\ngrace_period_seconds = 3\n", 1);
            }
            proxy.write_config(&text);
            reload(&mut proxy, f64::from(reload_number)).await;

            assert_eq!(
                status(&client, &proxy.url(&format!("/gen{generation}/x"))).await,
                200,
                "the route added by generation {generation} answers"
            );
            assert_eq!(
                status(&client, &proxy.url(&format!("/gen{}/x", generation - 1))).await,
                404,
                "the route removed by generation {generation} is gone"
            );
            let response = client
                .get(proxy.url("/public/which"))
                .send()
                .await
                .expect("the proxy answers");
            let echoed = Echoed::from_body(&response.bytes().await.expect("body"));
            assert_eq!(echoed.server(), name, "generation {generation} upstream");
        } else {
            let (upstream, _) = upstream_of(generation);
            let valid = generation_config(&jwks, upstream, generation).to_toml();
            let (text, expected_error) = invalid_config(&valid, reload_number / 2 - 1);
            proxy.write_config(&text);
            reload(&mut proxy, f64::from(reload_number)).await;

            assert_eq!(
                status(&client, &proxy.url(&format!("/gen{generation}/x"))).await,
                200,
                "an invalid file leaves generation {generation} in place"
            );
            let log = proxy.log();
            let logged = log
                .lines()
                .any(|line| line.contains("config reload failed") && line.contains(expected_error));
            assert!(logged, "no reload error naming {expected_error:?}:\n{log}");
        }
    }

    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("the load task ends");
    }
    let failures = results.failures.lock().expect("lock").clone();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "failed requests under reload"
    );
    assert!(
        results.succeeded.load(Ordering::SeqCst) >= 200,
        "the load ran alongside every reload"
    );

    let metrics = proxy.metrics().await;
    let value = |series: &str| hanko_edge_tests::edge_proxy::metric_value(&metrics, series);
    assert_eq!(value(RELOADS_SUCCEEDED), Some(5.0));
    assert_eq!(value(RELOADS_FAILED), Some(5.0));
    assert_eq!(
        value("edge_proxy_config_last_reload_successful"),
        Some(0.0),
        "the last file was invalid"
    );
    assert!(
        proxy
            .log()
            .lines()
            .any(|line| line.contains("needs a restart")
                && line.contains("proxy.grace_period_seconds")),
        "no restart warning for grace_period_seconds:\n{}",
        proxy.log()
    );
}

#[tokio::test]
async fn unchanged_auth_keeps_keys_and_cache() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let mut proxy =
        EdgeProxy::spawn_ready(&generation_config(&jwks, upstream.addr(), 0).to_toml()).await;
    let token = key.sign(&hanko_claims(USER)).expect("signs");
    let client = test_client();
    let url = proxy.url("/api/x");

    assert_eq!(status_with_token(&client, &url, &token).await, 200);
    assert_eq!(proxy.metric(CACHE_MISSES).await, 1.0);
    let fetches = jwks.fetch_count();

    // Routes change, [proxy.auth] does not.
    proxy.write_config(&generation_config(&jwks, upstream.addr(), 1).to_toml());
    reload(&mut proxy, 1.0).await;
    assert_eq!(proxy.metric(RELOADS_SUCCEEDED).await, 1.0);
    assert_eq!(status_with_token(&client, &url, &token).await, 200);
    assert_eq!(
        proxy.metric(CACHE_HITS).await,
        1.0,
        "the verified token is still cached"
    );
    assert_eq!(
        jwks.fetch_count(),
        fetches,
        "the key set is not fetched again"
    );
    assert!(
        proxy.log().contains("key_source=\"kept\""),
        "{}",
        proxy.log()
    );

    // A second accepted audience changes what a cached token means.
    let widened =
        generation_config(&jwks, upstream.addr(), 2).audience("[\"localhost\", \"other\"]");
    proxy.write_config(&widened.to_toml());
    reload(&mut proxy, 2.0).await;
    assert_eq!(proxy.metric(RELOADS_SUCCEEDED).await, 2.0);
    assert_eq!(status_with_token(&client, &url, &token).await, 200);
    assert_eq!(
        proxy.metric(CACHE_MISSES).await,
        2.0,
        "a changed audience starts an empty token cache"
    );
    assert_eq!(
        jwks.fetch_count(),
        fetches,
        "the key set settings did not change"
    );
}

#[tokio::test]
async fn new_key_set_url_is_followed() {
    let old_key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let new_key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let old_jwks = JwksServer::start(&[&old_key]).await;
    let new_jwks = JwksServer::start(&[&new_key]).await;
    // A short max-age makes each source's refresh loop visible: the old
    // one would be fetched every second if it were still refreshed.
    old_jwks.set_max_age(Some(1));
    new_jwks.set_max_age(Some(1));
    let upstream = EchoServer::start().await;
    let mut proxy =
        EdgeProxy::spawn_ready(&generation_config(&old_jwks, upstream.addr(), 0).to_toml()).await;
    let client = test_client();
    let url = proxy.url("/api/x");
    let old_token = old_key.sign(&hanko_claims(USER)).expect("signs");
    let new_token = new_key.sign(&hanko_claims(USER)).expect("signs");
    assert_eq!(status_with_token(&client, &url, &old_token).await, 200);

    proxy.write_config(&generation_config(&new_jwks, upstream.addr(), 1).to_toml());
    reload(&mut proxy, 1.0).await;
    assert_eq!(
        proxy.metric(RELOADS_SUCCEEDED).await,
        1.0,
        "{}",
        proxy.log()
    );
    assert!(
        new_jwks.fetch_count() >= 1,
        "the new key set is loaded before the swap"
    );

    assert_eq!(status_with_token(&client, &url, &new_token).await, 200);
    assert_eq!(
        status_with_token(&client, &url, &old_token).await,
        401,
        "a key of the old set is not accepted any more"
    );

    let old_fetches = old_jwks.fetch_count();
    let new_fetches = new_jwks.fetch_count();
    let refreshed = poll_until(POLL_TIMEOUT, || async {
        new_jwks.fetch_count() >= new_fetches + 3
    })
    .await;
    assert!(
        refreshed,
        "the refresh loop does not follow the new key source"
    );
    assert_eq!(
        old_jwks.fetch_count(),
        old_fetches,
        "the old key source is not refreshed any more"
    );
}

#[tokio::test]
async fn unreachable_new_key_set_fails_reload() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let mut proxy =
        EdgeProxy::spawn_ready(&generation_config(&jwks, upstream.addr(), 0).to_toml()).await;
    let client = test_client();
    let token = key.sign(&hanko_claims(USER)).expect("signs");

    // Nothing listens on a port that was just free.
    let nowhere = format!("http://{}", free_loopback_addr());
    let config = generation_config(&jwks, upstream.addr(), 1)
        .to_toml()
        .replace(&jwks.base_url(), &nowhere);
    proxy.write_config(&config);
    reload(&mut proxy, 1.0).await;

    assert_eq!(proxy.metric(RELOADS_FAILED).await, 1.0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, RELOADS_SUCCEEDED),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        proxy.log().contains("loading the key set from"),
        "{}",
        proxy.log()
    );
    assert_eq!(
        status_with_token(&client, &proxy.url("/api/x"), &token).await,
        200
    );
    assert_eq!(status(&client, &proxy.url("/gen0/x")).await, 200);
    assert_eq!(status(&client, &proxy.url("/gen1/x")).await, 404);
}

#[tokio::test]
async fn in_flight_request_keeps_its_config() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let mut proxy =
        EdgeProxy::spawn_ready(&generation_config(&jwks, upstream.addr(), 0).to_toml()).await;
    let client = test_client();

    // Long enough for the reload to finish first on a loaded machine.
    upstream.set_delay(Duration::from_secs(5));
    let slow_url = proxy.url("/gen0/slow");
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get(slow_url).send().await }
    });
    let arrived = poll_until(POLL_TIMEOUT, || async { upstream.request_count() >= 1 }).await;
    assert!(arrived, "the slow request did not reach the upstream");

    // The new file has a single route, so the old route's position in the
    // old route table does not exist in the new one.
    let only_other = ProxyConfig::new(&jwks.base_url()).route(&format!(
        "path_prefix = \"/other\"\nupstream = \"{}\"\nauth = \"none\"",
        upstream.addr()
    ));
    proxy.write_config(&only_other.to_toml());
    reload(&mut proxy, 1.0).await;
    assert_eq!(
        proxy.metric(RELOADS_SUCCEEDED).await,
        1.0,
        "{}",
        proxy.log()
    );
    assert!(
        !slow.is_finished(),
        "the reload finished after the slow request, so it was not in flight"
    );
    upstream.set_delay(Duration::ZERO);
    assert_eq!(status(&client, &proxy.url("/gen0/x")).await, 404);

    let response = slow
        .await
        .expect("the request task ends")
        .expect("the slow request gets its response");
    assert_eq!(response.status(), 200);
    let echoed = Echoed::from_body(&response.bytes().await.expect("body"));
    assert_eq!(echoed.target(), "/gen0/slow");
    let counted = poll_until(POLL_TIMEOUT, || async {
        proxy
            .metric(
                "edge_proxy_requests_total{method=\"GET\",route=\"/gen0\",status_class=\"2xx\"}",
            )
            .await
            == 1.0
    })
    .await;
    assert!(
        counted,
        "the request is counted under its old route:\n{}",
        proxy.metrics().await
    );
}
