//! `trusted_proxies` against the real binary: a request from a listed
//! address is taken to come from the client its `X-Forwarded-For` names,
//! for the upstream's forwarding headers and for rate limits, while the
//! same headers from any other address are replaced. The test clients
//! connect from different loopback addresses (127.0.0.2, 127.0.0.3), which
//! Linux routes to the loopback interface like 127.0.0.1.

use std::net::IpAddr;
use std::time::Duration;

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::echo::EchoServer;
use hanko_edge_tests::edge_proxy::{EdgeProxy, ProxyConfig, RawResponse, poll_until};
use hanko_edge_tests::jwks::JwksServer;

/// The load balancer in front of the proxy.
const BALANCER: &str = "127.0.0.2";
/// A client that reaches the proxy directly.
const DIRECT: &str = "127.0.0.3";
/// How long an access event may take to reach the log; the proxy writes
/// them out within 100 ms.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// A proxy that trusts `BALANCER`, with a `/public` route and a `/limited`
/// route allowing a burst of two requests per client address.
struct Stack {
    _jwks: JwksServer,
    _upstream: EchoServer,
    proxy: EdgeProxy,
}

impl Stack {
    async fn start() -> Stack {
        let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("RSA key generation works");
        let jwks = JwksServer::start(&[&key]).await;
        let upstream = EchoServer::start().await;
        let config = ProxyConfig::new(&jwks.base_url())
            .proxy(&format!("trusted_proxies = [\"{BALANCER}/32\"]"))
            .route(&format!(
                "path_prefix = \"/public\"\nupstream = \"{}\"\nauth = \"none\"",
                upstream.addr()
            ))
            .route(&format!(
                "path_prefix = \"/limited\"\nupstream = \"{}\"\nauth = \"none\"\n\
                 rate_limit = {{ requests_per_second = 0.1, burst = 2 }}",
                upstream.addr()
            ));
        let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
        Stack {
            _jwks: jwks,
            _upstream: upstream,
            proxy,
        }
    }

    async fn get(&self, source: &str, path: &str, forwarded_for: Option<&str>) -> RawResponse {
        let source: IpAddr = source.parse().expect("address");
        let headers: Vec<(&str, &[u8])> = forwarded_for
            .map(|value| ("X-Forwarded-For", value.as_bytes()))
            .into_iter()
            .collect();
        self.proxy.raw_get_from(source, path, &headers).await
    }
}

/// Headers a load balancer would pass on, plus a client's own claim.
fn balancer_headers() -> [(&'static str, &'static [u8]); 4] {
    [
        ("X-Forwarded-For", b"192.0.2.66, 198.51.100.1"),
        ("X-Forwarded-Proto", b"https"),
        ("X-Forwarded-Host", b"app.example.com"),
        ("Forwarded", b"for=192.0.2.66;proto=https"),
    ]
}

#[tokio::test]
async fn balancer_headers_name_the_client() {
    let stack = Stack::start().await;

    let response = stack
        .proxy
        .raw_get_from(
            BALANCER.parse().expect("address"),
            "/public/x",
            &balancer_headers(),
        )
        .await;

    assert_eq!(
        response.echoed().forwarding_headers(),
        [
            vec![format!("198.51.100.1, {BALANCER}")],
            vec!["https".to_owned()],
            vec!["app.example.com".to_owned()],
            vec![],
        ]
    );
    // The access event names the client too, not the balancer.
    let logged = poll_until(LOG_TIMEOUT, || async {
        stack.proxy.log().contains("client=198.51.100.1 ")
    })
    .await;
    assert!(
        logged,
        "no access event for the client:\n{}",
        stack.proxy.log()
    );
}

#[tokio::test]
async fn untrusted_peer_headers_are_replaced() {
    let stack = Stack::start().await;

    let response = stack
        .proxy
        .raw_get_from(
            DIRECT.parse().expect("address"),
            "/public/x",
            &balancer_headers(),
        )
        .await;

    assert_eq!(
        response.echoed().forwarding_headers(),
        [
            vec![DIRECT.to_owned()],
            vec!["http".to_owned()],
            vec![stack.proxy.addr().to_string()],
            vec![],
        ]
    );
}

#[tokio::test]
async fn rate_limit_counts_forwarded_clients() {
    let stack = Stack::start().await;
    let first = Some("198.51.100.1");

    // The burst of two, then a refusal, for the first client behind the
    // balancer.
    for attempt in 0..2 {
        let response = stack.get(BALANCER, "/limited/x", first).await;
        assert_eq!(response.status, 200, "attempt {attempt}");
    }
    assert_eq!(stack.get(BALANCER, "/limited/x", first).await.status, 429);

    // Another client behind the same balancer has its own bucket.
    let second = Some("198.51.100.2");
    assert_eq!(stack.get(BALANCER, "/limited/x", second).await.status, 200);

    // A direct client that names the limited one is counted as itself, so
    // it neither borrows nor spends the first client's bucket.
    assert_eq!(stack.get(DIRECT, "/limited/x", first).await.status, 200);
    assert_eq!(stack.get(DIRECT, "/limited/x", first).await.status, 200);
    assert_eq!(stack.get(DIRECT, "/limited/x", first).await.status, 429);
}
