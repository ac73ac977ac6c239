//! Client keep-alive connections against the real binary: one stays usable
//! while requests come, and the proxy closes it after
//! `keepalive_timeout_seconds` without one. Connections the client asked
//! to close are not kept open by that setting.

use std::time::{Duration, Instant};

use hanko_edge_tests::edge_proxy::ProxyStack;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Maximum wait for one response, or for the proxy to close.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw client connection to the proxy.
struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(stack: &ProxyStack) -> Connection {
        let stream = TcpStream::connect(stack.proxy.addr())
            .await
            .expect("the proxy accepts connections");
        Connection {
            stream: BufReader::new(stream),
        }
    }

    /// Sends `request` and returns the status of the response, after
    /// reading its body.
    async fn exchange(&mut self, request: &str) -> u16 {
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("the request is sent");
        let status_line = self.read_line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"));

        let mut length = 0;
        loop {
            let line = self.read_line().await;
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a numeric Content-Length");
            }
        }
        let mut body = vec![0; length];
        timeout(READ_TIMEOUT, self.stream.read_exact(&mut body))
            .await
            .expect("the body arrives in time")
            .expect("reading the body works");
        status
    }

    async fn read_line(&mut self) -> String {
        let mut line = String::new();
        timeout(READ_TIMEOUT, self.stream.read_line(&mut line))
            .await
            .expect("the proxy answers in time")
            .expect("reading from the proxy works");
        assert!(!line.is_empty(), "the proxy closed the connection early");
        line
    }

    /// Waits until the proxy closes the connection and returns how long
    /// that took.
    async fn time_until_closed(&mut self) -> Duration {
        let started = Instant::now();
        let mut rest = Vec::new();
        timeout(READ_TIMEOUT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the proxy closes the connection in time")
            .expect("reading until the end works");
        assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
        started.elapsed()
    }
}

fn get(stack: &ProxyStack, version: &str) -> String {
    format!(
        "GET /public/x HTTP/{version}\r\nHost: {}\r\n\r\n",
        stack.proxy.addr()
    )
}

#[tokio::test]
async fn idle_connection_closes_after_timeout() {
    let stack =
        ProxyStack::start_with(|config| config.proxy("keepalive_timeout_seconds = 1")).await;
    let mut connection = Connection::open(&stack).await;

    assert_eq!(connection.exchange(&get(&stack, "1.1")).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connection.exchange(&get(&stack, "1.1")).await, 200);

    let idle = connection.time_until_closed().await;
    assert!(idle >= Duration::from_millis(800), "closed after {idle:?}");
    assert_eq!(stack.upstream.request_count(), 2);
}

#[tokio::test]
async fn http10_connection_closes_after_response() {
    let stack =
        ProxyStack::start_with(|config| config.proxy("keepalive_timeout_seconds = 30")).await;
    let mut connection = Connection::open(&stack).await;

    assert_eq!(connection.exchange(&get(&stack, "1.0")).await, 200);

    // HTTP/1.0 without `Connection: keep-alive` means a close after the
    // response, which the keep-alive timeout must not override.
    let open_for = connection.time_until_closed().await;
    assert!(
        open_for < Duration::from_secs(2),
        "closed after {open_for:?}"
    );
}
