//! The real `item-api serve` binary as a test fixture: a temp config with
//! a free loopback port and a [`TestDatabase`]'s `authenticator` URL, the
//! process started with its log captured, and a wait on `/healthz`.
//!
//! It does not build the binary: run `cargo build --workspace --bins`
//! first (scripts/test does).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::pg::TestDatabase;
use crate::process::{ChildProcess, binary_path, free_loopback_addr};

/// Settings for [`ItemApi::spawn_with`]; `None` keeps item-api's default.
#[derive(Debug, Clone, Default)]
pub struct ItemApiOptions {
    /// `backend.max_connections`.
    pub max_connections: Option<u32>,
    /// `backend.acquire_timeout_ms`.
    pub acquire_timeout_ms: Option<u64>,
    /// `backend.statement_timeout_ms`.
    pub statement_timeout_ms: Option<u64>,
    /// `backend.user_id_header`.
    pub user_id_header: Option<String>,
    /// `backend.email_header`.
    pub email_header: Option<String>,
    /// `backend.max_body_bytes`.
    pub max_body_bytes: Option<usize>,
    /// Global arguments placed before `serve`, such as
    /// `["--log-format", "json"]`.
    pub global_args: Vec<String>,
    /// Extra environment variables, such as `RUST_LOG`.
    pub env: Vec<(String, String)>,
}

/// A running `item-api serve`, killed by PID when dropped.
pub struct ItemApi {
    addr: SocketAddr,
    process: ChildProcess,
    config_path: std::path::PathBuf,
    _config_dir: tempfile::TempDir,
}

impl ItemApi {
    /// Starts item-api with default settings against `database`.
    ///
    /// # Panics
    ///
    /// Panics as [`ItemApi::spawn_with`] does.
    pub async fn spawn(database: &TestDatabase) -> ItemApi {
        Self::spawn_with(database, ItemApiOptions::default()).await
    }

    /// Starts item-api against `database` and waits until `/healthz`
    /// returns 200.
    ///
    /// # Panics
    ///
    /// Panics when the binary is missing, or with the command, exit status
    /// and log tail when it does not become healthy in time.
    pub async fn spawn_with(database: &TestDatabase, options: ItemApiOptions) -> ItemApi {
        let addr = free_loopback_addr();
        let config_dir = tempfile::Builder::new()
            .prefix("hanko-edge-item-api-")
            .tempdir()
            .expect("creating a temp dir for the config must work");
        let config_path = config_dir.path().join("config.toml");
        std::fs::write(&config_path, config_toml(addr, database, &options))
            .expect("writing the item-api config must work");

        let mut command = Command::new(binary_path("item-api"));
        command
            .args(&options.global_args)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("DATABASE_URL")
            // Tests read info lines from the log, whatever the caller's
            // environment sets; `options.env` may override it.
            .env("RUST_LOG", "info");
        for (key, value) in &options.env {
            command.env(key, value);
        }

        let mut process = ChildProcess::spawn("item-api", command);
        process
            .wait_healthy(&format!("http://{addr}/healthz"))
            .await;
        ItemApi {
            addr,
            process,
            config_path,
            _config_dir: config_dir,
        }
    }

    /// Returns the address item-api listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the full URL of `path`, for example `url("/api/v1/item/")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Returns the path of the config file item-api was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Returns the child process, for its log, signals or exit status.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Returns everything item-api has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Builds an HTTP client for loopback tests: no proxy from the
/// environment, a 10 s timeout and no redirects followed, so a redirect
/// shows up as its own status.
///
/// # Panics
///
/// Panics when the client cannot be built.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building an HTTP client must work")
}

fn config_toml(addr: SocketAddr, database: &TestDatabase, options: &ItemApiOptions) -> String {
    let mut lines = vec![
        "[backend]".to_owned(),
        format!("listen = \"{addr}\""),
        format!("database_url = \"{}\"", database.authenticator_url),
    ];
    if let Some(value) = options.max_connections {
        lines.push(format!("max_connections = {value}"));
    }
    if let Some(value) = options.acquire_timeout_ms {
        lines.push(format!("acquire_timeout_ms = {value}"));
    }
    if let Some(value) = options.statement_timeout_ms {
        lines.push(format!("statement_timeout_ms = {value}"));
    }
    if let Some(value) = &options.user_id_header {
        lines.push(format!("user_id_header = \"{value}\""));
    }
    if let Some(value) = &options.email_header {
        lines.push(format!("email_header = \"{value}\""));
    }
    if let Some(value) = options.max_body_bytes {
        lines.push(format!("max_body_bytes = {value}"));
    }
    lines.join("\n") + "\n"
}
