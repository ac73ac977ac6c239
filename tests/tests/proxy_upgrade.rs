//! WebSocket handshakes through the real binary. Browsers cannot set
//! `Authorization` on a WebSocket, so the `hanko` cookie carries the token.
//! The proxy checks it on the handshake, the upstream receives the verified
//! identity, and after `101 Switching Protocols` bytes flow both ways.

use std::net::SocketAddr;
use std::time::Duration;

use hanko_edge_tests::connection::{RawConnection, ResponseHead};
use hanko_edge_tests::echo::{EchoServer, Echoed};
use hanko_edge_tests::edge_proxy::ProxyStack;

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const SPOOFED: &str = "00000000-0000-0000-0000-00000000dead";

/// A client connection that sent a WebSocket handshake.
struct Handshake {
    connection: RawConnection,
    head: ResponseHead,
}

impl Handshake {
    /// Connects to `proxy` and sends a WebSocket handshake for `path` with
    /// the extra `headers`, then reads the response head.
    async fn send(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Handshake {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {proxy}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");

        let mut connection = RawConnection::open(proxy).await;
        connection.send(request.as_bytes()).await;
        let head = connection.read_head().await;
        Handshake { connection, head }
    }

    /// Sends `text` and a line end through the tunnel and returns the line
    /// that comes back.
    async fn echo(&mut self, text: &str) -> String {
        self.connection.send(format!("{text}\n").as_bytes()).await;
        self.connection.read_line().await.trim_end().to_owned()
    }
}

#[tokio::test]
async fn cookie_handshake_tunnels_with_identity() {
    let stack = ProxyStack::start().await;
    let cookie = format!("hanko={}", stack.valid_token(USER));

    let mut handshake = Handshake::send(
        stack.proxy.addr(),
        "/api/socket",
        &[("Cookie", &cookie), ("X-User-Id", SPOOFED)],
    )
    .await;

    assert_eq!(handshake.head.status, 101, "{}", handshake.head.text);
    assert_eq!(handshake.head.header("upgrade"), Some("websocket"));
    // The upstream's first line is its report of the handshake it got.
    let report = Echoed::from_body(handshake.connection.read_line().await.as_bytes());
    assert_eq!(report.header_values("x-user-id"), [USER]);
    assert_eq!(report.header_values("upgrade"), ["websocket"]);
    assert_eq!(report.target(), "/api/socket");
    assert_eq!(handshake.echo("first message").await, "first message");
    assert_eq!(handshake.echo("second message").await, "second message");
}

#[tokio::test]
async fn handshake_without_token_gets_401() {
    let stack = ProxyStack::start().await;

    let mut without_token =
        Handshake::send(stack.proxy.addr(), "/api/socket", &[("X-User-Id", SPOOFED)]).await;
    let malformed = Handshake::send(
        stack.proxy.addr(),
        "/api/socket",
        &[("Cookie", "hanko=not.a.token")],
    )
    .await;

    assert_eq!(
        without_token.head.status, 401,
        "{}",
        without_token.head.text
    );
    assert_eq!(malformed.head.status, 401, "{}", malformed.head.text);
    assert_eq!(stack.upstream.request_count(), 0);
    // The refusal is a problem body, not a tunnel.
    let body = without_token
        .connection
        .read_body(&without_token.head)
        .await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"status\":401"), "{body}");
}

#[tokio::test]
async fn idle_tunnel_closes_after_read_timeout() {
    let upstream = EchoServer::start().await;
    let upstream_addr = upstream.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/idle\"\nupstream = \"{upstream_addr}\"\nauth = \"none\"\n\
             read_timeout_ms = 300"
        ))
    })
    .await;

    let mut handshake = Handshake::send(stack.proxy.addr(), "/idle/socket", &[]).await;
    assert_eq!(handshake.head.status, 101, "{}", handshake.head.text);
    Echoed::from_body(handshake.connection.read_line().await.as_bytes());
    assert_eq!(handshake.echo("while busy").await, "while busy");

    // Nothing flows for longer than the timeout, so the proxy closes the
    // tunnel and the next read ends the stream.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(handshake.connection.read_line().await, "");
}
