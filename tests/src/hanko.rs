//! The real `hanko-dev serve` as a test fixture: a free loopback port, a
//! temp data directory with its keys, and helpers that mint tokens through
//! the `hanko-dev token` command or through the library directly.
//!
//! Tokens from [`HankoDev::sign`] use the key the server publishes, so a
//! test can shape any claim set (expired, wrong audience) and still have a
//! signature the proxy accepts. This module does not build the binary: run
//! `cargo build --workspace --bins` first (scripts/test does).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hanko_dev::claims::TokenRequest;
use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_dev::store::DataDir;
use uuid::Uuid;

use crate::process::{ChildProcess, binary_path, free_loopback_addr};

/// A running `hanko-dev serve`, killed by PID when dropped; the data
/// directory goes away with it.
pub struct HankoDev {
    addr: SocketAddr,
    process: ChildProcess,
    data_dir: tempfile::TempDir,
}

impl HankoDev {
    /// Starts `hanko-dev serve` with a new data directory and waits until
    /// `/healthz` returns 200.
    ///
    /// # Panics
    ///
    /// Panics when the binary is missing, or with the command and log tail
    /// when it does not become healthy in time.
    pub async fn spawn() -> HankoDev {
        let data_dir = tempfile::Builder::new()
            .prefix("hanko-edge-hanko-dev-")
            .tempdir()
            .expect("creating a temp dir for hanko-dev must work");
        Self::spawn_in(data_dir).await
    }

    /// Starts `hanko-dev serve` on the keys of `data_dir`, for tests that
    /// restart it on the same keys.
    ///
    /// # Panics
    ///
    /// Panics as [`HankoDev::spawn`] does.
    pub async fn spawn_in(data_dir: tempfile::TempDir) -> HankoDev {
        let addr = free_loopback_addr();
        let mut command = Command::new(binary_path("hanko-dev"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir.path());

        let mut process = ChildProcess::spawn("hanko-dev", command);
        process
            .wait_healthy(&format!("http://{addr}/healthz"))
            .await;
        HankoDev {
            addr,
            process,
            data_dir,
        }
    }

    /// Stops the server and returns its data directory, keys included.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.process.stop();
        self.data_dir
    }

    /// Returns the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the value for edge-proxy's `hanko_api_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the full URL of `path`, such as `/.well-known/jwks.json`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Returns the data directory with the keys and revocations.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Returns the child process, for its log or signals.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }

    /// Mints a token for `subject` with `hanko-dev token`, with Hanko's
    /// defaults (12 hours, audience `localhost`) and an email address.
    ///
    /// # Panics
    ///
    /// Panics as [`HankoDev::token_with_args`] does.
    pub fn token(&self, subject: Uuid) -> String {
        self.token_with_args(&[
            "--sub",
            &subject.to_string(),
            "--email",
            &format!("{}@example.com", &subject.simple().to_string()[..8]),
        ])
    }

    /// Runs `hanko-dev token --data-dir <dir> <args>` and returns the
    /// printed token.
    ///
    /// # Panics
    ///
    /// Panics with the command's stderr when it fails.
    pub fn token_with_args(&self, args: &[&str]) -> String {
        let stdout = self.run_cli("token", args);
        stdout.trim().to_owned()
    }

    /// Signs `request`'s claims with the current signing key, in process.
    ///
    /// # Panics
    ///
    /// Panics when the keys cannot be read or signing fails.
    pub fn sign(&self, request: &TokenRequest) -> String {
        self.signing_key()
            .sign(&request.claims())
            .expect("signing with a stored key must work")
    }

    /// Signs any JSON payload with the current signing key, for claim sets
    /// that [`TokenRequest`] cannot express.
    ///
    /// # Panics
    ///
    /// Panics when the keys cannot be read or signing fails.
    pub fn sign_json(&self, claims: &serde_json::Value) -> String {
        self.signing_key()
            .sign(claims)
            .expect("signing with a stored key must work")
    }

    /// Returns the key that signs new tokens.
    ///
    /// # Panics
    ///
    /// Panics when the data directory cannot be read.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        DataDir::open(self.data_dir.path())
            .and_then(|store| store.signing_key(DEFAULT_KEY_BITS))
            .expect("reading hanko-dev's keys must work")
    }

    /// Adds a new signing key with `hanko-dev rotate` and returns its `kid`.
    ///
    /// # Panics
    ///
    /// Panics with the command's stderr when it fails.
    pub fn rotate(&self) -> String {
        self.run_cli("rotate", &[]).trim().to_owned()
    }

    /// Revokes a session with `hanko-dev revoke`.
    ///
    /// # Panics
    ///
    /// Panics with the command's stderr when it fails.
    pub fn revoke(&self, session_id: &str) {
        self.run_cli("revoke", &["--session-id", session_id]);
    }

    fn run_cli(&self, subcommand: &str, args: &[&str]) -> String {
        let output = Command::new(binary_path("hanko-dev"))
            .arg(subcommand)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(args)
            .output()
            .expect("running hanko-dev must work");
        assert!(
            output.status.success(),
            "hanko-dev {subcommand} {args:?} failed with {}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("hanko-dev prints UTF-8")
    }
}

/// Decodes a token's payload without verifying it, for reading claims such
/// as `session_id` in tests.
///
/// # Panics
///
/// Panics when the token is not three base64url parts with a JSON payload.
pub fn decode_payload(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload part");
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}

/// Decodes a token's header without verifying it.
///
/// # Panics
///
/// Panics when the token has no JSON header.
pub fn decode_header(token: &str) -> serde_json::Value {
    let header = token.split('.').next().expect("a JWT has a header part");
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .expect("the header is base64url");
    serde_json::from_slice(&bytes).expect("the header is JSON")
}
