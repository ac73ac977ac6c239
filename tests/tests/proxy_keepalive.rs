//! Client keep-alive connections against the real binary: one stays usable
//! while requests come, and the proxy closes it after
//! `keepalive_timeout_seconds` without one. Connections the client asked
//! to close are not kept open by that setting.

use std::time::Duration;

use hanko_edge_tests::connection::RawConnection;
use hanko_edge_tests::edge_proxy::ProxyStack;

/// Sends `GET /public/x` in HTTP `version` and returns the status, after
/// reading the whole response.
async fn get(connection: &mut RawConnection, stack: &ProxyStack, version: &str) -> u16 {
    let request = format!(
        "GET /public/x HTTP/{version}\r\nHost: {}\r\n\r\n",
        stack.proxy.addr()
    );
    connection.send(request.as_bytes()).await;
    let head = connection.read_head().await;
    connection.read_body(&head).await;
    head.status
}

#[tokio::test]
async fn idle_connection_closes_after_timeout() {
    let stack =
        ProxyStack::start_with(|config| config.proxy("keepalive_timeout_seconds = 1")).await;
    let mut connection = RawConnection::open(stack.proxy.addr()).await;

    assert_eq!(get(&mut connection, &stack, "1.1").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&mut connection, &stack, "1.1").await, 200);

    // The second request reused the connection after 300 ms of idling.
    // With a 1 s keep-alive timeout the proxy then closes it well within
    // the helper's 5 s read limit; without one it would stay open.
    connection.wait_until_closed().await;
    assert_eq!(stack.upstream.request_count(), 2);
}

#[tokio::test]
async fn http10_connection_closes_after_response() {
    let stack =
        ProxyStack::start_with(|config| config.proxy("keepalive_timeout_seconds = 30")).await;
    let mut connection = RawConnection::open(stack.proxy.addr()).await;

    assert_eq!(get(&mut connection, &stack, "1.0").await, 200);

    // HTTP/1.0 without `Connection: keep-alive` means a close after the
    // response, which the keep-alive timeout must not override: kept open,
    // the connection would outlast the helper's 5 s read limit.
    connection.wait_until_closed().await;
}
