//! An in-process JWKS server the test controls: which keys it publishes,
//! the `Cache-Control: max-age` it sends, a response delay, answering 503,
//! or refusing connections altogether. It counts every fetch.
//!
//! It stands in for Hanko's `/.well-known/jwks.json` only; tokens are signed
//! with `hanko_dev::keys::SigningKey` directly. It listens on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hanko_dev::keys::SigningKey;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::process::bind_loopback;

/// The path Hanko serves its key set at.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

#[derive(Default)]
struct JwksState {
    keys: Mutex<Vec<Value>>,
    max_age_seconds: Mutex<Option<u64>>,
    delay: Mutex<Duration>,
    unavailable: AtomicBool,
    fetches: AtomicUsize,
    answered: AtomicUsize,
}

/// A running JWKS server; stopped when dropped.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<JwksState>,
    running: Option<Running>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl JwksServer {
    /// Starts a server publishing the public keys of `keys`, with
    /// `Cache-Control: max-age=600` as Hanko sends it.
    ///
    /// # Panics
    ///
    /// Panics when no loopback port can be bound.
    pub async fn start(keys: &[&SigningKey]) -> JwksServer {
        let state = Arc::new(JwksState::default());
        *state.max_age_seconds.lock().expect("lock") = Some(600);
        *state.keys.lock().expect("lock") = keys.iter().map(|key| key.public_jwk()).collect();
        let (listener, addr) = bind_loopback().await;
        JwksServer {
            addr,
            running: Some(serve(listener, state.clone())),
            state,
        }
    }

    /// Returns the base URL, usable as `hanko_api_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the full key set URL, usable as `jwks_url`.
    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// Returns how many key set requests arrived, failed ones included.
    pub fn fetch_count(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Returns how many key set requests got their response (after any
    /// [`JwksServer::set_delay`]), failed ones included.
    pub fn answered_count(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// Replaces the published keys with the public keys of `keys`.
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        self.set_jwks(keys.iter().map(|key| key.public_jwk()).collect());
    }

    /// Replaces the published keys with raw JWK objects, for keys a real
    /// signer would not produce.
    pub fn set_jwks(&self, jwks: Vec<Value>) {
        *self.state.keys.lock().expect("lock") = jwks;
    }

    /// Adds the public key of `key` in front of the others, as Hanko does on
    /// rotation.
    pub fn add_key(&self, key: &SigningKey) {
        self.state
            .keys
            .lock()
            .expect("lock")
            .insert(0, key.public_jwk());
    }

    /// Removes the key with `kid`.
    pub fn remove_key(&self, kid: &str) {
        self.state
            .keys
            .lock()
            .expect("lock")
            .retain(|jwk| jwk["kid"] != kid);
    }

    /// Sets the `max-age` sent with the key set; `None` sends no
    /// `Cache-Control` header.
    pub fn set_max_age(&self, seconds: Option<u64>) {
        *self.state.max_age_seconds.lock().expect("lock") = seconds;
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("lock") = delay;
    }

    /// Makes every key set request answer 503 (`true`) or the keys again.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Stops listening and closes idle connections, so fetches get
    /// "connection refused".
    pub async fn go_down(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), running.task).await;
        }
    }

    /// Listens again on the same address after [`JwksServer::go_down`].
    ///
    /// # Panics
    ///
    /// Panics when the address was taken in the meantime.
    pub async fn come_up(&mut self) {
        if self.running.is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebinding the JWKS address must work");
        self.running = Some(serve(listener, self.state.clone()));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            running.task.abort();
        }
    }
}

fn serve(listener: TcpListener, state: Arc<JwksState>) -> Running {
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let app = Router::new().route(JWKS_PATH, get(jwks)).with_state(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = shutdown_rx.await;
            })
            .await;
    });
    Running { shutdown, task }
}

async fn jwks(State(state): State<Arc<JwksState>>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.answered.fetch_add(1, Ordering::SeqCst);
    if state.unavailable.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "key set unavailable").into_response();
    }

    let keys = state.keys.lock().expect("lock").clone();
    let mut response = axum::Json(json!({ "keys": keys })).into_response();
    if let Some(seconds) = *state.max_age_seconds.lock().expect("lock") {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("max-age={seconds}")).expect("valid header"),
        );
    }
    response
}
