//! An in-process echo upstream: answers every request with a JSON report of
//! the method, the request target (path and query exactly as received) and
//! every header, so tests can see what the proxy forwarded.
//!
//! A request with `Upgrade` gets `101 Switching Protocols`. The upgraded
//! connection carries the same report as one JSON line, then echoes every
//! byte it receives, which is enough to see a WebSocket tunnel work.
//!
//! A silent mode accepts requests and never answers, for timeout tests; a
//! delay holds every answer back for a set time, for slow requests. It
//! listens on 127.0.0.1 and stops when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, UPGRADE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::process::bind_loopback;

#[derive(Default)]
struct EchoState {
    silent: AtomicBool,
    delay_ms: AtomicU64,
    requests: AtomicUsize,
    name: String,
}

/// A running echo upstream.
pub struct EchoServer {
    addr: SocketAddr,
    state: Arc<EchoState>,
    task: Option<JoinHandle<()>>,
}

/// What the echo upstream received, parsed from its JSON answer.
#[derive(Debug, Clone)]
pub struct Echoed {
    /// The whole report.
    pub json: Value,
}

impl Echoed {
    /// Parses the body of an echo answer.
    ///
    /// # Panics
    ///
    /// Panics when the body is not an echo report.
    pub fn from_body(body: &[u8]) -> Echoed {
        let json: Value = serde_json::from_slice(body).unwrap_or_else(|error| {
            panic!(
                "not an echo report ({error}): {}",
                String::from_utf8_lossy(body)
            )
        });
        assert!(json.get("headers").is_some(), "not an echo report: {json}");
        Echoed { json }
    }

    /// Returns the method the upstream saw.
    pub fn method(&self) -> &str {
        self.json["method"].as_str().unwrap_or_default()
    }

    /// Returns the request target (path and query) the upstream saw.
    pub fn target(&self) -> &str {
        self.json["target"].as_str().unwrap_or_default()
    }

    /// Returns the name of the echo server that answered.
    pub fn server(&self) -> &str {
        self.json["server"].as_str().unwrap_or_default()
    }

    /// Returns every value of header `name` (case-insensitive) in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.json["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pair| {
                pair[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .filter_map(|pair| pair[1].as_str().map(str::to_owned))
            .collect()
    }

    /// Returns every value of `X-Forwarded-For`, `X-Forwarded-Proto`,
    /// `X-Forwarded-Host`, `X-Real-IP` and `Forwarded`, in that order.
    pub fn forwarding_headers(&self) -> [Vec<String>; 5] {
        [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "forwarded",
        ]
        .map(|name| self.header_values(name))
    }

    /// Returns the single value of header `name`.
    ///
    /// # Panics
    ///
    /// Panics when the header was received more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        assert!(
            values.len() <= 1,
            "header {name} arrived {} times: {values:?}",
            values.len()
        );
        values.into_iter().next()
    }

    /// Returns every header name the upstream saw, lower case.
    pub fn header_names(&self) -> Vec<String> {
        self.json["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| pair[0].as_str().map(str::to_ascii_lowercase))
            .collect()
    }
}

impl EchoServer {
    /// Starts an echo upstream on a free loopback port.
    pub async fn start() -> EchoServer {
        Self::start_named("echo").await
    }

    /// Starts an echo upstream that reports `name` in every answer, to tell
    /// several upstreams apart.
    ///
    /// # Panics
    ///
    /// Panics when no loopback port can be bound.
    pub async fn start_named(name: &str) -> EchoServer {
        let (listener, addr) = bind_loopback().await;
        let state = Arc::new(EchoState {
            name: name.to_owned(),
            ..EchoState::default()
        });
        let app = Router::new().fallback(echo).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        EchoServer {
            addr,
            state,
            task: Some(task),
        }
    }

    /// Starts an upstream that accepts requests and never answers.
    pub async fn start_silent() -> EchoServer {
        let server = Self::start_named("silent").await;
        server.set_silent(true);
        server
    }

    /// Returns the listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches between answering and never answering.
    pub fn set_silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::SeqCst);
    }

    /// Delays every answer by `delay` (zero answers at once).
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Returns how many requests arrived.
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting connections.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn echo(State(state): State<Arc<EchoState>>, request: Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.silent.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let delay_ms = state.delay_ms.load(Ordering::SeqCst);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }

    let headers: Vec<Value> = request
        .headers()
        .iter()
        .map(|(name, value)| json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())]))
        .collect();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let report = json!({
        "server": state.name,
        "method": request.method().as_str(),
        "target": target,
        "headers": headers,
    });
    match request.headers().get(UPGRADE).cloned() {
        Some(protocol) => switch_protocols(request, protocol, report),
        None => axum::Json(report).into_response(),
    }
}

/// Responds to an upgrade request with 101, then writes `report` as one JSON
/// line on the upgraded connection and echoes what follows.
fn switch_protocols(mut request: Request, protocol: HeaderValue, report: Value) -> Response {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut stream = TokioIo::new(upgraded);
        let mut line = report.to_string().into_bytes();
        line.push(b'\n');
        if stream.write_all(&line).await.is_err() {
            return;
        }
        let (mut reader, mut writer) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, protocol)
        .header(CONNECTION, "upgrade")
        .body(Body::empty())
        .expect("a valid 101 response")
}
