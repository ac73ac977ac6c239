//! A raw HTTP/1.1 client connection, for tests that need more control than
//! reqwest gives: several requests on one connection, an upgrade to another
//! protocol, or watching the server close the connection. Every read is
//! bounded by [`READ_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Maximum wait for one read, or for the server to close the connection.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// An open connection to a server under test.
pub struct RawConnection {
    stream: BufReader<TcpStream>,
}

/// The status line and header lines of one response.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The head as received, status line first, without the blank line.
    pub text: String,
    /// Headers in order, names lower case, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Returns the value of the first header called `name`
    /// (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Splits a response head (lines ending in CRLF or LF, no blank line) into
/// its status code and headers, names lower case and values trimmed.
///
/// # Panics
///
/// Panics when the first line is not a status line.
pub fn parse_head(text: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers)
}

impl RawConnection {
    /// Connects to `addr`.
    ///
    /// # Panics
    ///
    /// Panics when the connection is refused.
    pub async fn open(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|error| panic!("connecting to {addr} failed: {error}"));
        RawConnection {
            stream: BufReader::new(stream),
        }
    }

    /// Writes `bytes` to the connection.
    ///
    /// # Panics
    ///
    /// Panics when writing fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("writing to the connection works");
    }

    /// Reads one line with its line end, or an empty string at the end of
    /// the stream.
    ///
    /// # Panics
    ///
    /// Panics when nothing arrives within [`READ_TIMEOUT`].
    pub async fn read_line(&mut self) -> String {
        let mut line = String::new();
        timeout(READ_TIMEOUT, self.stream.read_line(&mut line))
            .await
            .expect("the server answers in time")
            .expect("reading from the connection works");
        line
    }

    /// Reads a response head.
    ///
    /// # Panics
    ///
    /// Panics when the server closes the connection or sends no status
    /// line.
    pub async fn read_head(&mut self) -> ResponseHead {
        let mut text = String::new();
        loop {
            let line = self.read_line().await;
            assert!(
                !line.is_empty(),
                "the server closed the connection: {text:?}"
            );
            if line == "\r\n" {
                break;
            }
            text.push_str(&line);
        }
        let (status, headers) = parse_head(&text);
        ResponseHead {
            status,
            text,
            headers,
        }
    }

    /// Reads the body that `head`'s `Content-Length` announces (none
    /// without one).
    ///
    /// # Panics
    ///
    /// Panics when the body does not arrive in time.
    pub async fn read_body(&mut self, head: &ResponseHead) -> Vec<u8> {
        let length = head
            .header("content-length")
            .map_or(0, |value| value.parse().expect("a numeric Content-Length"));
        let mut body = vec![0; length];
        timeout(READ_TIMEOUT, self.stream.read_exact(&mut body))
            .await
            .expect("the body arrives in time")
            .expect("reading the body works");
        body
    }

    /// Waits until the server closes the connection.
    ///
    /// # Panics
    ///
    /// Panics when the server sends bytes or keeps the connection open
    /// longer than [`READ_TIMEOUT`].
    pub async fn wait_until_closed(&mut self) {
        let mut rest = Vec::new();
        timeout(READ_TIMEOUT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection in time")
            .expect("reading until the end works");
        assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    }
}
