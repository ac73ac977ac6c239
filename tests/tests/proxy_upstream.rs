//! edge-proxy upstream handling against the real binary: refused and silent
//! upstreams, a broken pooled connection, round-robin with a failed peer
//! skipped, prefix stripping and host and method matching.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hanko_edge_tests::echo::{EchoServer, Echoed};
use hanko_edge_tests::edge_proxy::{ProxyStack, test_client};
use hanko_edge_tests::process::{bind_loopback, free_loopback_addr};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn problem(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let body = response.json().await.expect("problem body is JSON");
    (status, content_type, body)
}

#[tokio::test]
async fn refusing_upstream_gives_502_and_proxy_keeps_serving() {
    let closed = free_loopback_addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/down\"\nupstream = \"{closed}\"\nauth = \"none\""
        ))
    })
    .await;

    let (status, content_type, body) = problem(stack.get("/down/x").await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], 502);
    assert_eq!(body["title"], "Bad Gateway");

    let after = stack.get("/public/x").await;
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn silent_upstream_gives_504_within_timeout() {
    let silent = EchoServer::start_silent().await;
    let silent_addr = silent.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/slow\"\nupstream = \"{silent_addr}\"\nauth = \"none\"\nread_timeout_ms = 500"
        ))
    })
    .await;

    let started = Instant::now();
    let (status, content_type, body) = problem(stack.get("/slow/x").await).await;
    let elapsed = started.elapsed();

    assert_eq!(status, 504, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["title"], "Gateway Timeout");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    assert_eq!(
        silent.request_count(),
        1,
        "a timed-out request is not retried"
    );

    for _ in 0..3 {
        let after = stack.get("/public/x").await;
        assert_eq!(after.status(), 200);
    }
}

#[tokio::test]
async fn peers_rotate_and_a_refusing_peer_is_skipped() {
    let first = EchoServer::start_named("first").await;
    let second = EchoServer::start_named("second").await;
    let closed = free_loopback_addr();
    let (first_addr, second_addr) = (first.addr(), second.addr());
    let stack = ProxyStack::start_with(|config| {
        config
            .route(&format!(
                "path_prefix = \"/pool\"\nupstream = [\"{first_addr}\", \"{second_addr}\"]\nauth = \"none\""
            ))
            .route(&format!(
                "path_prefix = \"/half\"\nupstream = [\"{closed}\", \"{first_addr}\"]\nauth = \"none\""
            ))
    })
    .await;

    let mut servers = BTreeSet::new();
    for _ in 0..4 {
        let response = stack.get("/pool/x").await;
        assert_eq!(response.status(), 200);
        let echoed = Echoed::from_body(&response.bytes().await.expect("body"));
        servers.insert(echoed.server().to_owned());
    }
    assert_eq!(
        servers.into_iter().collect::<Vec<_>>(),
        ["first", "second"],
        "round-robin reaches both peers"
    );

    for _ in 0..6 {
        let response = stack.get("/half/x").await;
        assert_eq!(response.status(), 200, "the refusing peer is skipped");
    }
}

/// An upstream that serves one request per connection with keep-alive,
/// then drops the connection when a second request arrives on it, the way
/// a server that timed the connection out at that moment would. A request
/// for a path ending in `/slow` gets its response once two such requests
/// have arrived (or after 10 s), so two of them always overlap, and one
/// ending in `/drop` gets none.
struct OneRequestUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

/// The counters each connection of [`OneRequestUpstream`] updates.
#[derive(Clone)]
struct UpstreamCounts {
    dropped: Arc<AtomicUsize>,
    slow_arrived: Arc<AtomicUsize>,
}

impl OneRequestUpstream {
    /// Starts the upstream and a proxy with an open `/once` route to it.
    async fn start_behind_proxy() -> (OneRequestUpstream, ProxyStack) {
        let upstream = Self::start().await;
        let addr = upstream.addr;
        let stack = ProxyStack::start_with(|config| {
            config.route(&format!(
                "path_prefix = \"/once\"\nupstream = \"{addr}\"\nauth = \"none\""
            ))
        })
        .await;
        (upstream, stack)
    }

    async fn start() -> OneRequestUpstream {
        let (listener, addr) = bind_loopback().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let accept_count = accepted.clone();
        let counts = UpstreamCounts {
            dropped: dropped.clone(),
            slow_arrived: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_one_request(stream, counts.clone()));
            }
        });
        OneRequestUpstream {
            addr,
            accepted,
            dropped,
        }
    }
}

async fn serve_one_request(mut stream: tokio::net::TcpStream, counts: UpstreamCounts) {
    let mut served = false;
    loop {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        if path.ends_with("/drop") {
            counts.dropped.fetch_add(1, Ordering::SeqCst);
        }
        if served || path.ends_with("/drop") {
            return;
        }
        if path.ends_with("/slow") {
            counts.slow_arrived.fetch_add(1, Ordering::SeqCst);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while counts.slow_arrived.load(Ordering::SeqCst) < 2
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        if stream.write_all(response).await.is_err() {
            return;
        }
        served = true;
    }
}

/// Reads one request head (requests here have no body).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(byte[0]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn broken_pooled_connection_is_retried() {
    let (upstream, stack) = OneRequestUpstream::start_behind_proxy().await;

    for attempt in 0..3 {
        let response = stack.get("/once/x").await;
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert_eq!(status, 200, "GET {attempt}: {body}");
        assert_eq!(body, "{\"ok\":true}", "GET {attempt}");
    }
    assert_eq!(
        upstream.accepted.load(Ordering::SeqCst),
        3,
        "each GET after the first found its pooled connection broken and took a fresh one"
    );

    // A POST is not repeated: the upstream may have acted on it. The first
    // one gets the connection the last GET left in the pool, the second a
    // fresh one.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(stack.post("/once/x").await.status().as_u16());
    }
    assert_eq!(statuses, [502, 200]);
}

#[tokio::test]
async fn broken_connection_is_retried_once() {
    let (upstream, stack) = OneRequestUpstream::start_behind_proxy().await;

    // Two slow requests at once leave two connections in the pool.
    let (first, second) = tokio::join!(stack.get("/once/slow"), stack.get("/once/slow"));
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);

    // Both pooled connections are broken. The first try and the one retry
    // take them; a third try would open a fresh connection.
    let response = stack.get("/once/drop").await;
    assert_eq!(response.status(), 502);
    assert_eq!(upstream.dropped.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn strip_prefix_sends_the_rest_of_the_path() {
    let upstream = EchoServer::start().await;
    let upstream_addr = upstream.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/svc\"\nupstream = \"{upstream_addr}\"\nauth = \"none\"\nstrip_prefix = true"
        ))
    })
    .await;

    for (path, expected) in [("/svc/v1/item?q=1", "/v1/item?q=1"), ("/svc", "/")] {
        let response = stack.get(path).await;
        let echoed = Echoed::from_body(&response.bytes().await.expect("body"));
        assert_eq!(echoed.target(), expected, "{path}");
    }
}

#[tokio::test]
async fn host_and_method_select_the_route() {
    let admin = EchoServer::start_named("admin").await;
    let writer = EchoServer::start_named("writer").await;
    let (admin_addr, writer_addr) = (admin.addr(), writer.addr());
    let stack = ProxyStack::start_with(|config| {
        config
            .route(&format!(
                "path_prefix = \"/public\"\nhost = \"admin.example.com\"\nupstream = \"{admin_addr}\"\nauth = \"none\""
            ))
            .route(&format!(
                "path_prefix = \"/public\"\nmethods = [\"POST\"]\nupstream = \"{writer_addr}\"\nauth = \"none\""
            ))
    })
    .await;
    let client = test_client();

    let by_host = stack
        .proxy
        .raw_request(
            b"GET /public/x HTTP/1.1\r\nHost: Admin.Example.com:8080\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(Echoed::from_body(&by_host.body).server(), "admin");

    let by_method = stack.post("/public/x").await;
    let echoed = Echoed::from_body(&by_method.bytes().await.expect("body"));
    assert_eq!(echoed.server(), "writer");
    assert_eq!(echoed.method(), "POST");

    let default = client
        .get(stack.proxy.url("/public/x"))
        .send()
        .await
        .expect("the proxy answers");
    let echoed = Echoed::from_body(&default.bytes().await.expect("body"));
    assert_eq!(echoed.server(), "echo");
}

#[tokio::test]
async fn unaccepted_method_gets_405_with_allow() {
    let writes = EchoServer::start_named("writes").await;
    let upstream = writes.addr();
    let stack = ProxyStack::start_with(|config| {
        config
            .route(&format!(
                "path_prefix = \"/writes\"\nmethods = [\"PUT\", \"POST\"]\nupstream = \"{upstream}\"\nauth = \"required\""
            ))
            .route(&format!(
                "path_prefix = \"/writes\"\nmethods = [\"PATCH\"]\nupstream = \"{upstream}\"\nauth = \"required\""
            ))
    })
    .await;

    let delete = |path: &str| stack.client.delete(stack.proxy.url(path)).send();

    // No token: the method is checked before authentication, like the path.
    let response = delete("/writes/x").await.expect("the proxy responds");
    let allow = response
        .headers()
        .get("allow")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let (status, content_type, body) = problem(response).await;

    assert_eq!(status, 405);
    assert_eq!(allow.as_deref(), Some("PATCH, POST, PUT"));
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], 405);
    assert_eq!(
        stack
            .proxy
            .metric("edge_proxy_refusals_total{reason=\"method_not_allowed\"}")
            .await,
        1.0
    );

    // A path no route takes stays a 404, whatever the method.
    let elsewhere = delete("/nowhere").await.expect("the proxy responds");
    assert_eq!(elsewhere.status(), 404);
    assert!(elsewhere.headers().get("allow").is_none());
    assert_eq!(writes.request_count(), 0);
    assert_eq!(stack.upstream.request_count(), 0);
}

#[tokio::test]
async fn unknown_path_gets_404_problem() {
    let stack = ProxyStack::start().await;

    let (status, content_type, body) = problem(stack.get("/nowhere").await).await;

    assert_eq!(status, 404);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], 404);
    assert_eq!(stack.upstream.request_count(), 0);
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let stack = ProxyStack::start().await;

    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/other", 404)] {
        let response = stack
            .client
            .get(stack.proxy.admin_url(path))
            .send()
            .await
            .expect("admin answers");
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
}

#[tokio::test]
async fn method_case_and_head_reach_guarded_route() {
    let guarded = EchoServer::start_named("guarded").await;
    let guarded_addr = guarded.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/public\"\nmethods = [\"GET\", \"DELETE\"]\nupstream = \"{guarded_addr}\"\nauth = \"required\""
        ))
    })
    .await;

    // Frameworks that upper-case the method, or run the GET handler for
    // HEAD, would run these as the guarded DELETE and GET.
    for method in ["delete", "Delete", "HEAD", "get"] {
        let request = format!(
            "{method} /public/x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            stack.proxy.addr()
        );
        let response = stack.proxy.raw_request(request.as_bytes()).await;
        assert_eq!(response.status, 401, "{method}");
    }
    assert_eq!(stack.upstream.request_count(), 0);
    assert_eq!(guarded.request_count(), 0);

    // Methods the guarded route leaves out still take the open route.
    assert_eq!(stack.post("/public/x").await.status(), 200);
}

#[tokio::test]
async fn host_limited_route_cannot_be_skipped() {
    let admin = EchoServer::start_named("admin").await;
    let admin_addr = admin.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/public\"\nhost = \"admin.example.com\"\nupstream = \"{admin_addr}\"\nauth = \"required\""
        ))
    })
    .await;

    let cases: [(&[u8], u16); 8] = [
        // HTTP/1.1 requires Host (RFC 9112 section 3.2).
        (b"GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        // HTTP/1.0 may leave Host out; the absolute-form target names it.
        (
            b"GET http://admin.example.com/public/x HTTP/1.0\r\n\r\n",
            401,
        ),
        (
            b"GET HTTP://Admin.Example.com:80/public/x HTTP/1.0\r\n\r\n",
            401,
        ),
        (b"GET ws://admin.example.com/public/x HTTP/1.0\r\n\r\n", 401),
        // With no host at all, the host-limited route cannot be ruled out.
        (b"GET /public/x HTTP/1.0\r\n\r\n", 400),
        (
            b"GET /public/x HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
            400,
        ),
        // A trailing dot names the same host.
        (
            b"GET /public/x HTTP/1.1\r\nHost: admin.example.com.\r\nConnection: close\r\n\r\n",
            401,
        ),
        (
            b"GET /public/x HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n",
            200,
        ),
    ];
    for (request, status) in cases {
        let response = stack.proxy.raw_request(request).await;
        assert_eq!(
            response.status,
            status,
            "{}: {}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&response.body)
        );
    }
    assert_eq!(admin.request_count(), 0);
    assert_eq!(
        stack.upstream.request_count(),
        1,
        "only the other host got through"
    );
}
