//! The real `edge-proxy` binary as a test fixture: a temp config with free
//! loopback ports for `listen` and `admin_listen` and its own upgrade
//! socket, the process started with its log captured, and a wait on the
//! admin `/healthz`.
//!
//! Also here: [`ProxyConfig`] to write the usual test config, a raw HTTP/1.1
//! client for requests an HTTP library would normalise (odd paths, repeated
//! headers, bytes outside ASCII), and [`run_check`] for `edge-proxy check`.
//! It does not build the binary: run `cargo build --workspace --bins` first.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::connection::parse_head;
use crate::echo::{EchoServer, Echoed};
use crate::jwks::JwksServer;
use crate::process::{ChildProcess, STARTUP_DEADLINE, binary_path, free_loopback_addr};

/// How long a raw request may take before the test fails.
const RAW_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The text of a test config, built up table by table.
///
/// `listen`, `admin_listen`, `upgrade_socket` and `worker_threads = 2` are
/// added by [`EdgeProxy::spawn`]; everything else is what the test sets.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    proxy_lines: Vec<String>,
    hanko_api_url: String,
    audience: String,
    auth_lines: Vec<String>,
    jwks_lines: Vec<String>,
    claim_header_lines: Vec<String>,
    routes: Vec<String>,
}

impl ProxyConfig {
    /// Starts a config whose key set is `{hanko_api_url}/.well-known/jwks.json`
    /// with `audience = "localhost"`, the `email.address` claim mapped to
    /// `X-User-Email`, and no routes.
    pub fn new(hanko_api_url: &str) -> ProxyConfig {
        ProxyConfig {
            proxy_lines: Vec::new(),
            hanko_api_url: hanko_api_url.to_owned(),
            audience: "\"localhost\"".to_owned(),
            auth_lines: Vec::new(),
            jwks_lines: Vec::new(),
            claim_header_lines: vec!["\"email.address\" = \"X-User-Email\"".to_owned()],
            routes: Vec::new(),
        }
    }

    /// Adds the usual routes to `upstream`: `/api` required, `/public`
    /// none, `/optional` optional.
    pub fn standard_routes(self, upstream: SocketAddr) -> ProxyConfig {
        self.route(&format!(
            "path_prefix = \"/api\"\nupstream = \"{upstream}\"\nauth = \"required\""
        ))
        .route(&format!(
            "path_prefix = \"/public\"\nupstream = \"{upstream}\"\nauth = \"none\""
        ))
        .route(&format!(
            "path_prefix = \"/optional\"\nupstream = \"{upstream}\"\nauth = \"optional\""
        ))
    }

    /// Sets `audience` to a TOML value, such as `"\"app\""` or `"[\"a\", \"b\"]"`.
    pub fn audience(mut self, toml_value: &str) -> ProxyConfig {
        self.audience = toml_value.to_owned();
        self
    }

    /// Adds a `key = value` line to `[proxy]`.
    pub fn proxy(mut self, line: &str) -> ProxyConfig {
        self.proxy_lines.push(line.to_owned());
        self
    }

    /// Adds a `key = value` line to `[proxy.auth]`.
    pub fn auth(mut self, line: &str) -> ProxyConfig {
        self.auth_lines.push(line.to_owned());
        self
    }

    /// Adds a `key = value` line to `[proxy.auth.jwks]`.
    pub fn jwks(mut self, line: &str) -> ProxyConfig {
        self.jwks_lines.push(line.to_owned());
        self
    }

    /// Adds a `[[proxy.routes]]` table with `body` inside; a
    /// `[proxy.routes.cors]` sub-table may follow in the same text.
    pub fn route(mut self, body: &str) -> ProxyConfig {
        self.routes.push(body.to_owned());
        self
    }

    /// Returns the config text without listener addresses.
    pub fn to_toml(&self) -> String {
        let mut text = String::from("[proxy]\n");
        for line in &self.proxy_lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[proxy.auth]\n");
        text.push_str(&format!("hanko_api_url = \"{}\"\n", self.hanko_api_url));
        text.push_str(&format!("audience = {}\n", self.audience));
        for line in &self.auth_lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[proxy.auth.claim_headers]\n");
        for line in &self.claim_header_lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[proxy.auth.jwks]\n");
        for line in &self.jwks_lines {
            text.push_str(line);
            text.push('\n');
        }
        for route in &self.routes {
            text.push_str("\n[[proxy.routes]]\n");
            text.push_str(route);
            text.push('\n');
        }
        text
    }
}

/// A running `edge-proxy`, killed by PID when dropped.
pub struct EdgeProxy {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    process: ChildProcess,
    config_path: std::path::PathBuf,
    listener_lines: String,
    _dir: tempfile::TempDir,
}

impl EdgeProxy {
    /// Writes `config` (TOML with a `[proxy]` table but without `listen`,
    /// `admin_listen`, `upgrade_socket` and `worker_threads`) with free
    /// loopback ports, starts
    /// the binary and waits until the admin `/healthz` returns 200.
    ///
    /// # Panics
    ///
    /// Panics when the config has no `[proxy]` line, the binary is missing,
    /// or with the command and log tail when it does not become healthy.
    pub async fn spawn(config: &str) -> EdgeProxy {
        Self::spawn_with_args(config, &[]).await
    }

    /// Starts the proxy like [`EdgeProxy::spawn`] with extra command-line
    /// arguments, such as `["--log-format", "json"]`.
    pub async fn spawn_with_args(config: &str, args: &[&str]) -> EdgeProxy {
        Self::spawn_with_log_filter(config, args, "info").await
    }

    /// Starts the proxy like [`EdgeProxy::spawn_with_args`] with `RUST_LOG`
    /// set to `log_filter` instead of `info`.
    pub async fn spawn_with_log_filter(config: &str, args: &[&str], log_filter: &str) -> EdgeProxy {
        let dir = tempfile::Builder::new()
            .prefix("hanko-edge-proxy-")
            .tempdir()
            .expect("creating a temp dir must work");
        let addr = free_loopback_addr();
        let admin_addr = free_loopback_addr();
        let listener_lines = format!(
            "[proxy]\nlisten = [\"{addr}\"]\nadmin_listen = \"{admin_addr}\"\nupgrade_socket = \"{}\"\nworker_threads = 2\n",
            dir.path().join("upgrade.sock").display()
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, with_listeners(config, &listener_lines))
            .expect("writing the config must work");

        let mut command = Command::new(binary_path("edge-proxy"));
        command
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", log_filter);
        let mut process = ChildProcess::spawn("edge-proxy", command);
        process
            .wait_healthy(&format!("http://{admin_addr}/healthz"))
            .await;
        EdgeProxy {
            addr,
            admin_addr,
            process,
            config_path,
            listener_lines,
            _dir: dir,
        }
    }

    /// Replaces the config file with `config` (written as for
    /// [`EdgeProxy::spawn`]), keeping the listener addresses, upgrade
    /// socket and thread count. The running proxy reads it on SIGHUP.
    ///
    /// # Panics
    ///
    /// Panics when `config` has no `[proxy]` line or the file cannot be
    /// written.
    pub fn write_config(&self, config: &str) {
        // Write and rename, so the proxy never reads a half-written file.
        let partial = self.config_path.with_extension("toml.partial");
        std::fs::write(&partial, with_listeners(config, &self.listener_lines))
            .expect("writing the config must work");
        std::fs::rename(&partial, &self.config_path).expect("replacing the config must work");
    }

    /// Starts the proxy like [`EdgeProxy::spawn`] and also waits until
    /// `/readyz` returns 200 (a key set is loaded).
    pub async fn spawn_ready(config: &str) -> EdgeProxy {
        let mut proxy = Self::spawn(config).await;
        proxy.wait_ready().await;
        proxy
    }

    /// Waits until `/readyz` returns 200.
    ///
    /// # Panics
    ///
    /// Panics with the log tail when it does not within the start-up
    /// deadline.
    pub async fn wait_ready(&mut self) {
        let url = self.admin_url("/readyz");
        self.process.wait_healthy(&url).await;
    }

    /// Returns the proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Returns `http://<proxy>{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Returns `http://<admin>{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Returns the path of the written config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Returns the child process, for its log, PID and signals.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Returns the captured log.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Returns the text of the admin `/metrics`.
    ///
    /// # Panics
    ///
    /// Panics when the admin listener does not return 200.
    pub async fn metrics(&self) -> String {
        let response = test_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("the admin listener answers");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("the metrics are text")
    }

    /// Returns the value of one series of the admin `/metrics`, such as
    /// `edge_proxy_refusals_total{reason="expired"}`. An absent series
    /// reads as 0, because a labelled counter appears on first use.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// Sends `request` (a complete HTTP/1.1 request head, CRLF line ends,
    /// and optional body) over a new connection and reads the response
    /// until the server closes it.
    ///
    /// # Panics
    ///
    /// Panics when the connection fails, times out, or the response cannot
    /// be parsed.
    pub async fn raw_request(&self, request: &[u8]) -> RawResponse {
        raw_request(self.addr, request).await
    }

    /// Sends `GET {target}` with `headers` (name, value bytes) and
    /// `Connection: close` over a raw connection.
    pub async fn raw_get(&self, target: &str, headers: &[(&str, &[u8])]) -> RawResponse {
        self.raw_request(&self.get_request(target, headers)).await
    }

    /// Sends `GET {target}` like [`EdgeProxy::raw_get`] from the loopback
    /// address `source`, such as 127.0.0.2.
    pub async fn raw_get_from(
        &self,
        source: IpAddr,
        target: &str,
        headers: &[(&str, &[u8])],
    ) -> RawResponse {
        raw_request_from(Some(source), self.addr, &self.get_request(target, headers)).await
    }

    fn get_request(&self, target: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", self.addr).into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        request
    }
}

/// Puts `listener_lines` (which start with `[proxy]`) in place of the
/// `[proxy]` line of `config`.
fn with_listeners(config: &str, listener_lines: &str) -> String {
    assert!(
        config.contains("[proxy]\n"),
        "the test config needs a [proxy] line: {config}"
    );
    config.replacen("[proxy]\n", listener_lines, 1)
}

/// A signing key, a JWKS server publishing it, an echo upstream and a
/// proxy in front of it: the usual set-up of a proxy test.
pub struct ProxyStack {
    /// The key tokens are signed with; the JWKS server publishes it.
    pub key: SigningKey,
    /// The key set server.
    pub jwks: JwksServer,
    /// The upstream behind every standard route.
    pub upstream: EchoServer,
    /// The proxy, ready (key set loaded).
    pub proxy: EdgeProxy,
    /// An HTTP client that ignores proxy environment variables.
    pub client: reqwest::Client,
}

impl ProxyStack {
    /// Starts the stack with [`ProxyConfig::standard_routes`].
    pub async fn start() -> ProxyStack {
        Self::start_with(|config| config).await
    }

    /// Starts the stack with the standard routes and whatever `configure`
    /// adds, and waits until the proxy is ready.
    pub async fn start_with(configure: impl FnOnce(ProxyConfig) -> ProxyConfig) -> ProxyStack {
        Self::start_with_log_filter(configure, "info").await
    }

    /// Starts the stack like [`ProxyStack::start_with`] with the proxy's
    /// `RUST_LOG` set to `log_filter`.
    pub async fn start_with_log_filter(
        configure: impl FnOnce(ProxyConfig) -> ProxyConfig,
        log_filter: &str,
    ) -> ProxyStack {
        let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("RSA key generation works");
        let jwks = JwksServer::start(&[&key]).await;
        let upstream = EchoServer::start().await;
        let config = configure(ProxyConfig::new(&jwks.base_url()).standard_routes(upstream.addr()));
        let mut proxy = EdgeProxy::spawn_with_log_filter(&config.to_toml(), &[], log_filter).await;
        proxy.wait_ready().await;
        ProxyStack {
            key,
            jwks,
            upstream,
            proxy,
            client: test_client(),
        }
    }

    /// Signs `claims` with the stack's key.
    pub fn token(&self, claims: &Value) -> String {
        self.key.sign(claims).expect("signing works")
    }

    /// Returns a valid token for `subject` with Hanko's claims.
    pub fn valid_token(&self, subject: &str) -> String {
        self.token(&hanko_claims(subject))
    }

    /// Sends `GET {path}` to the proxy without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with_headers(path, &[]).await
    }

    /// Sends `POST {path}` with the JSON body `{}` to the proxy without
    /// credentials.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.proxy.url(path))
            .body("{}")
            .send()
            .await
            .expect("the proxy responds")
    }

    /// Sends `GET {path}` to the proxy with `headers`.
    pub async fn get_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.get(self.proxy.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the proxy responds")
    }

    /// Sends `GET {path}` to the proxy with `Authorization: Bearer {token}`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        let authorization = format!("Bearer {token}");
        self.get_with_headers(path, &[("authorization", &authorization)])
            .await
    }
}

/// Returns an HTTP client for tests: no proxy from the environment, a
/// bounded timeout.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("building an HTTP client works")
}

/// Returns claims in Hanko's shape for `subject`, valid for an hour, with
/// `aud = ["localhost"]` and an email address.
pub fn hanko_claims(subject: &str) -> Value {
    let now = unix_now();
    json!({
        "sub": subject,
        "iat": now - 10,
        "exp": now + 3600,
        "aud": ["localhost"],
        "session_id": uuid::Uuid::new_v4().to_string(),
        "email": {"address": "ada@example.com", "is_primary": true, "is_verified": true},
    })
}

/// Returns the current time in seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(seconds).expect("seconds fit in i64")
}

/// A response read by the raw client.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Returns the first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Reads the body as the echo upstream's report of the request it got.
    ///
    /// # Panics
    ///
    /// Panics when the status is not 200.
    pub fn echoed(&self) -> Echoed {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        Echoed::from_body(&self.body)
    }

    /// Parses the body as JSON.
    ///
    /// # Panics
    ///
    /// Panics when the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends raw bytes to `addr` and reads the response until the connection
/// closes.
///
/// # Panics
///
/// Panics when the exchange fails, times out or cannot be parsed.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    raw_request_from(None, addr, request).await
}

/// Sends raw bytes like [`raw_request`], from `source` when given.
async fn raw_request_from(source: Option<IpAddr>, addr: SocketAddr, request: &[u8]) -> RawResponse {
    let exchange = async {
        let mut stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(source) => {
                let socket = if source.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(addr).await?
            }
        };
        stream.write_all(request).await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = tokio::time::timeout(RAW_REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("raw request to {addr} timed out"))
        .unwrap_or_else(|error| panic!("raw request to {addr} failed: {error}"));
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let text_end = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
    let head = String::from_utf8_lossy(&bytes[..text_end]);
    let (status, headers) = parse_head(&head);
    let raw_body = &bytes[text_end + 4..];
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|window| window == b"\r\n") else {
            return body;
        };
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return body;
        };
        bytes = &bytes[line_end + 2..];
        if size == 0 || bytes.len() < size {
            return body;
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = bytes.get(size + 2..).unwrap_or_default();
    }
}

/// Writes `config` to a temp file and runs `edge-proxy check --config` on
/// it.
pub fn run_check(config: &str) -> Output {
    let dir = tempfile::tempdir().expect("creating a temp dir must work");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("writing the config must work");
    run_check_file(&path)
}

/// Runs `edge-proxy check --config <path>`.
pub fn run_check_file(path: &Path) -> Output {
    Command::new(binary_path("edge-proxy"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("running edge-proxy check must work")
}

/// Returns the value of `series` (name and labels exactly as the text
/// format writes them, labels sorted by name) in Prometheus text `metrics`.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes;
/// returns whether it held.
pub async fn poll_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout.min(STARTUP_DEADLINE * 4);
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
