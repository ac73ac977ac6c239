//! `trusted_proxies` against the real binary. A request from a listed
//! address is taken to come from the client its `X-Forwarded-For` names:
//! in the upstream's forwarding headers, the access log and rate limits.
//! The same headers from any other address are replaced. The test clients
//! connect from different loopback addresses (127.0.0.2, 127.0.0.3), which
//! Linux routes to the loopback interface like 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::echo::EchoServer;
use hanko_edge_tests::edge_proxy::{EdgeProxy, ProxyConfig, RawResponse, poll_until};
use hanko_edge_tests::jwks::JwksServer;

/// The load balancer in front of the proxy.
const BALANCER: &str = "127.0.0.2";
/// A client that reaches the proxy directly.
const DIRECT: &str = "127.0.0.3";
/// How long an access event or a reload may take to show; the proxy
/// writes access events out within 100 ms.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
const RELOADS_SUCCEEDED: &str = "edge_proxy_config_reloads_total{result=\"succeeded\"}";

/// A proxy that trusts `BALANCER`, with a `/public` route and a `/limited`
/// route allowing a burst of two requests per client address.
struct Stack {
    jwks: JwksServer,
    upstream: EchoServer,
    proxy: EdgeProxy,
}

impl Stack {
    async fn start() -> Stack {
        let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("RSA key generation works");
        let jwks = JwksServer::start(&[&key]).await;
        let upstream = EchoServer::start().await;
        let config = config(&jwks.base_url(), upstream.addr(), Some(BALANCER));
        let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
        Stack {
            jwks,
            upstream,
            proxy,
        }
    }

    async fn get(&self, source: &str, path: &str, forwarded_for: Option<&[u8]>) -> RawResponse {
        let source: IpAddr = source.parse().expect("address");
        let headers: Vec<(&str, &[u8])> = forwarded_for
            .map(|value| ("X-Forwarded-For", value))
            .into_iter()
            .collect();
        self.proxy.raw_get_from(source, path, &headers).await
    }

    /// Waits until the access log has a line containing `text`.
    async fn assert_logged(&self, text: &str) {
        let logged = poll_until(POLL_TIMEOUT, || async { self.proxy.log().contains(text) }).await;
        assert!(logged, "no access event with {text}:\n{}", self.proxy.log());
    }
}

/// Builds the test routes to `upstream`, trusting `trusted` when given.
fn config(jwks_url: &str, upstream: SocketAddr, trusted: Option<&str>) -> ProxyConfig {
    let mut config = ProxyConfig::new(jwks_url);
    if let Some(trusted) = trusted {
        config = config.proxy(&format!("trusted_proxies = [\"{trusted}\"]"));
    }
    config
        .route(&format!(
            "path_prefix = \"/public\"\nupstream = \"{upstream}\"\nauth = \"none\""
        ))
        .route(&format!(
            "path_prefix = \"/limited\"\nupstream = \"{upstream}\"\nauth = \"none\"\n\
             rate_limit = {{ requests_per_second = 0.1, burst = 2 }}"
        ))
}

/// Headers a load balancer would pass on, plus a client's own claims.
fn balancer_headers() -> [(&'static str, &'static [u8]); 10] {
    [
        ("X-Forwarded-For", b"192.0.2.66, 198.51.100.1"),
        ("X-Forwarded-Proto", b"https"),
        ("X-Forwarded-Host", b"evil.example.com"),
        ("X-Real-IP", b"192.0.2.66"),
        ("Forwarded", b"for=192.0.2.66;proto=https"),
        ("X-Forwarded-Port", b"443"),
        ("X-Forwarded-Prefix", b"/app"),
        ("True-Client-IP", b"192.0.2.66"),
        ("X_Forwarded_Port", b"8443"),
        ("X-Forwarded-User", b"admin"),
    ]
}

/// Returns the values the upstream saw of the headers in `balancer_headers`
/// that the proxy does not set: `X-Forwarded-Port`, `-Prefix`,
/// `True-Client-IP`, `X_Forwarded_Port` and `X-Forwarded-User`.
fn other_forwarding_headers(response: &RawResponse) -> [Vec<String>; 5] {
    let echoed = response.echoed();
    [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "true-client-ip",
        "x_forwarded_port",
        "x-forwarded-user",
    ]
    .map(|name| echoed.header_values(name))
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

    // X-Forwarded-Host stays the Host header even from the balancer.
    assert_eq!(
        response.echoed().forwarding_headers(),
        [
            vec![format!("198.51.100.1, {BALANCER}")],
            vec!["https".to_owned()],
            vec![stack.proxy.addr().to_string()],
            vec!["198.51.100.1".to_owned()],
            vec![],
        ]
    );
    // The balancer's description of the request passes. Client addresses
    // other than the proxy's, `_` spellings and identities never do.
    assert_eq!(
        other_forwarding_headers(&response),
        [
            vec!["443".to_owned()],
            vec!["/app".to_owned()],
            vec![],
            vec![],
            vec![]
        ]
    );
    stack
        .assert_logged(&format!("client=198.51.100.1 peer={BALANCER} "))
        .await;
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
            vec![DIRECT.to_owned()],
            vec![],
        ]
    );
    assert!(
        other_forwarding_headers(&response)
            .iter()
            .all(Vec::is_empty),
        "{:?}",
        other_forwarding_headers(&response)
    );
    stack
        .assert_logged(&format!("client={DIRECT} peer={DIRECT} "))
        .await;
}

#[tokio::test]
async fn client_bytes_spoil_only_their_entry() {
    let stack = Stack::start().await;

    // The client started the line with bytes that are not ASCII, and the
    // balancer appended the client's address to it.
    let response = stack
        .get(BALANCER, "/public/x", Some(b"\xc3\xa9, 198.51.100.9"))
        .await;

    assert_eq!(
        response.echoed().header_values("x-forwarded-for"),
        [format!("198.51.100.9, {BALANCER}")]
    );
}

#[tokio::test]
async fn rate_limit_counts_forwarded_clients() {
    let stack = Stack::start().await;
    let first = Some(b"198.51.100.1".as_slice());

    // The burst of two, then a refusal, for the first client behind the
    // balancer.
    for attempt in 0..2 {
        let response = stack.get(BALANCER, "/limited/x", first).await;
        assert_eq!(response.status, 200, "attempt {attempt}");
    }
    assert_eq!(stack.get(BALANCER, "/limited/x", first).await.status, 429);

    // Another client behind the same balancer has its own bucket.
    let second = Some(b"198.51.100.2".as_slice());
    assert_eq!(stack.get(BALANCER, "/limited/x", second).await.status, 200);

    // A direct client that names the limited one is counted as itself, so
    // it neither borrows nor spends the first client's bucket.
    assert_eq!(stack.get(DIRECT, "/limited/x", first).await.status, 200);
    assert_eq!(stack.get(DIRECT, "/limited/x", first).await.status, 200);
    assert_eq!(stack.get(DIRECT, "/limited/x", first).await.status, 429);
}

#[tokio::test]
async fn rate_limit_counts_ipv6_clients_per_64() {
    let stack = Stack::start().await;
    let get = |forwarded_for: &'static [u8]| stack.get(BALANCER, "/limited/x", Some(forwarded_for));

    // Two addresses of one /64 share a bucket of two.
    assert_eq!(get(b"2001:db8:0:1::1").await.status, 200);
    assert_eq!(get(b"2001:db8:0:1::2").await.status, 200);
    assert_eq!(get(b"2001:db8:0:1::3").await.status, 429);
    // The next /64 has its own.
    assert_eq!(get(b"2001:db8:0:2::1").await.status, 200);
}

#[tokio::test]
async fn reload_stops_trusting_a_removed_proxy() {
    let mut stack = Stack::start().await;
    let claim = Some(b"198.51.100.1".as_slice());
    let before = stack.get(BALANCER, "/public/x", claim).await;
    assert_eq!(
        before.echoed().header_values("x-forwarded-for"),
        [format!("198.51.100.1, {BALANCER}")]
    );

    let untrusting = config(&stack.jwks.base_url(), stack.upstream.addr(), None);
    stack.proxy.write_config(&untrusting.to_toml());
    stack.proxy.process().signal("HUP");
    let reloaded = poll_until(POLL_TIMEOUT, || async {
        stack.proxy.metric(RELOADS_SUCCEEDED).await >= 1.0
    })
    .await;
    assert!(
        reloaded,
        "the reload was not counted:\n{}",
        stack.proxy.log()
    );

    let after = stack.get(BALANCER, "/public/x", claim).await;
    assert_eq!(after.echoed().header_values("x-forwarded-for"), [BALANCER]);
}
