//! The optional session check: after a token passed the local checks, ask
//! Hanko whether its session still exists, because Hanko revokes sessions
//! server-side (logout, session limit, admin deletion) before `exp`.
//!
//! - `POST {validate_url}` with `{"session_token": "<token>"}`; Hanko
//!   returns `200 {"is_valid": bool, ...}`.
//! - Responses are cached per `session_id` for a short time. A cold entry is
//!   filled through moka's `try_get_with`, so concurrent requests for one
//!   session share one call: a burst costs one call per session per period.
//! - When Hanko cannot be reached (connect error, timeout, a status other
//!   than 200, a malformed response), the configured policy decides: reject
//!   with 503, or accept locally valid tokens for a bounded time after
//!   Hanko last responded. After a failed call, requests make no new call for
//!   [`FAILURE_BACKOFF`], so a Hanko outage does not turn into a call per
//!   request.
//!
//! This module never sees a token that failed a local check, and never logs
//! or stores a token: only session ids are cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde::Deserialize;
use url::Url;

use super::AuthError;
use super::token::Refusal;
use crate::metrics;

/// How long after a failed call requests skip calling Hanko and apply the
/// unreachable policy directly; also the `Retry-After` of the 503.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// Largest validate response body read, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Shortest time between two warnings about the same kind of event.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Validated session check settings (`session_check = "validate"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCheckSettings {
    /// The URL of Hanko's `POST /sessions/validate`.
    pub validate_url: Url,
    /// How long a response is cached per session.
    pub cache_ttl: Duration,
    /// Maximum number of cached sessions.
    pub cache_max_entries: u64,
    /// Timeout of one call, connecting included.
    pub timeout: Duration,
    /// The policy while Hanko cannot be reached.
    pub unreachable: UnreachablePolicy,
}

/// The treatment of a locally valid token while Hanko cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreachablePolicy {
    /// Reject with 503 and `Retry-After`.
    Reject,
    /// Accept the token while Hanko responded no longer ago than this. 503
    /// after that, and while Hanko has not responded once since start.
    Accept {
        /// How long after Hanko's last response tokens are still accepted.
        max_since_reachable: Duration,
    },
}

/// The path by which a request passed the session check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// A cached response marked the session valid.
    Cached,
    /// Hanko was called (by this request or one it waited for) and
    /// reported the session valid.
    Checked,
    /// Hanko could not be reached and the accept policy let the token pass.
    AcceptedUnreachable,
}

/// Hanko cannot confirm the session and the policy rejects: 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session cannot be checked because Hanko is unreachable")]
pub struct SessionUnavailable {
    /// Seconds after which a new attempt may succeed.
    pub retry_after_seconds: u64,
}

/// The reason a locally valid token fails the session check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Hanko reports the session as not valid: 401.
    #[error("the session has been revoked")]
    Revoked,
    /// The token has no `session_id` claim to check: 401.
    #[error("the token has no session id")]
    MissingSessionId,
    /// Hanko cannot be reached and the policy rejects: 503.
    #[error(transparent)]
    Unavailable(#[from] SessionUnavailable),
}

impl From<SessionError> for AuthError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Revoked => AuthError::Invalid(Refusal::SessionRevoked),
            SessionError::MissingSessionId => AuthError::Invalid(Refusal::MissingSessionId),
            SessionError::Unavailable(unavailable) => AuthError::SessionUnavailable(unavailable),
        }
    }
}

/// The cached response for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionStatus {
    Valid,
    Revoked,
}

/// The reason one call to Hanko failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no HTTP client could be built")]
    NoClient,
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("unexpected status {0}")]
    Status(u16),
    #[error("the response is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the response is not a validate response: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The part of Hanko's validate response the proxy reads.
#[derive(Deserialize)]
struct ValidateResponse {
    is_valid: bool,
}

/// Asks Hanko whether sessions are still valid and caches the responses.
pub struct SessionChecker {
    settings: SessionCheckSettings,
    /// `None` when the client could not be built; every check then fails
    /// as if Hanko were unreachable.
    client: Option<reqwest::Client>,
    cache: Cache<Arc<str>, SessionStatus>,
    started: Instant,
    /// Milliseconds after `started` of Hanko's last valid response, plus
    /// one; 0 before the first.
    last_response_ms: AtomicU64,
    /// Milliseconds after `started` of the last failed call, plus one; 0
    /// when no call has failed since the last valid response.
    last_failure_ms: AtomicU64,
    failure_warnings: WarnLimiter,
    acceptance_warnings: WarnLimiter,
}

impl SessionChecker {
    /// Creates a checker with an empty cache.
    ///
    /// When the HTTP client cannot be built (no TLS roots, for example),
    /// the error is logged and every check fails closed as if Hanko were
    /// unreachable, so that building the runtime stays infallible.
    pub fn new(settings: SessionCheckSettings) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("edge-proxy/", env!("CARGO_PKG_VERSION")));
        if settings.validate_url.scheme() == "http" {
            // Validation allows plain http only to loopback; a proxy from the
            // environment must not see that traffic.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .inspect_err(|error| {
                tracing::error!(
                    %error,
                    "building the HTTP client for session checks failed; every session check will fail"
                );
            })
            .ok();
        let cache = Cache::builder()
            .max_capacity(settings.cache_max_entries)
            .time_to_live(settings.cache_ttl)
            .build();

        Self {
            settings,
            client,
            cache,
            started: Instant::now(),
            last_response_ms: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            failure_warnings: WarnLimiter::default(),
            acceptance_warnings: WarnLimiter::default(),
        }
    }

    /// Returns the settings the checker runs with.
    pub fn settings(&self) -> &SessionCheckSettings {
        &self.settings
    }

    /// Checks the session of a locally valid `token` whose `session_id`
    /// claim is `session_id`.
    ///
    /// # Errors
    ///
    /// [`SessionError::MissingSessionId`] without a session id,
    /// [`SessionError::Revoked`] when Hanko reports the session as not valid,
    /// [`SessionError::Unavailable`] when Hanko cannot be reached and the
    /// policy does not accept the token.
    pub async fn check(
        &self,
        token: &str,
        session_id: Option<&str>,
    ) -> Result<SessionOutcome, SessionError> {
        let session_id = session_id
            .filter(|id| !id.is_empty())
            .ok_or(SessionError::MissingSessionId)?;

        if let Some(status) = self.cache.get(session_id).await {
            metrics::record_session_cache_lookup(true);
            return status_outcome(status, SessionOutcome::Cached);
        }
        metrics::record_session_cache_lookup(false);

        if self.in_failure_backoff() {
            return self.when_unreachable();
        }
        match self
            .cache
            .try_get_with(Arc::from(session_id), self.call(token))
            .await
        {
            Ok(status) => status_outcome(status, SessionOutcome::Checked),
            // The failure was logged and counted by the call that made it.
            Err(_) => self.when_unreachable(),
        }
    }

    /// Applies the unreachable policy.
    fn when_unreachable(&self) -> Result<SessionOutcome, SessionError> {
        let unavailable = SessionUnavailable {
            retry_after_seconds: FAILURE_BACKOFF.as_secs().max(1),
        };
        let UnreachablePolicy::Accept {
            max_since_reachable,
        } = self.settings.unreachable
        else {
            return Err(unavailable.into());
        };

        let last_response = self.last_response_ms.load(Ordering::Relaxed);
        if last_response == 0 {
            // Without a response since start there is no time to measure
            // the bound from, so the token is rejected (fail closed).
            return Err(unavailable.into());
        }
        let since_response = self
            .elapsed()
            .saturating_sub(Duration::from_millis(last_response - 1));
        if since_response > max_since_reachable {
            return Err(unavailable.into());
        }

        metrics::record_session_accepted_unreachable();
        if let Some(suppressed) = self.acceptance_warnings.permit(self.elapsed()) {
            tracing::warn!(
                url = %self.settings.validate_url,
                seconds_since_last_response = since_response.as_secs(),
                accept_for_seconds = max_since_reachable.as_secs(),
                suppressed,
                "Hanko is unreachable; accepting a locally valid token without a session check"
            );
        }
        Ok(SessionOutcome::AcceptedUnreachable)
    }

    /// Calls Hanko once for `token`, recording the outcome.
    async fn call(&self, token: &str) -> Result<SessionStatus, CallError> {
        let result = self.call_inner(token).await;
        metrics::record_session_call(result.is_ok());
        match result {
            Ok(status) => {
                let now_ms = self.elapsed_ms();
                self.last_response_ms
                    .store(now_ms.saturating_add(1), Ordering::Relaxed);
                self.last_failure_ms.store(0, Ordering::Relaxed);
                Ok(status)
            }
            Err(error) => {
                let now_ms = self.elapsed_ms();
                self.last_failure_ms
                    .store(now_ms.saturating_add(1), Ordering::Relaxed);
                if let Some(suppressed) = self.failure_warnings.permit(self.elapsed()) {
                    tracing::warn!(
                        url = %self.settings.validate_url,
                        %error,
                        suppressed,
                        "checking a session with Hanko failed"
                    );
                }
                Err(error)
            }
        }
    }

    async fn call_inner(&self, token: &str) -> Result<SessionStatus, CallError> {
        let client = self.client.as_ref().ok_or(CallError::NoClient)?;
        let mut response = client
            .post(self.settings.validate_url.clone())
            .json(&serde_json::json!({ "session_token": token }))
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(CallError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(CallError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CallError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }

        let parsed: ValidateResponse = serde_json::from_slice(&body)?;
        Ok(if parsed.is_valid {
            SessionStatus::Valid
        } else {
            SessionStatus::Revoked
        })
    }

    fn in_failure_backoff(&self) -> bool {
        let failed_at = self.last_failure_ms.load(Ordering::Relaxed);
        failed_at != 0
            && self
                .elapsed()
                .saturating_sub(Duration::from_millis(failed_at - 1))
                < FAILURE_BACKOFF
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn status_outcome(
    status: SessionStatus,
    valid: SessionOutcome,
) -> Result<SessionOutcome, SessionError> {
    match status {
        SessionStatus::Valid => Ok(valid),
        SessionStatus::Revoked => Err(SessionError::Revoked),
    }
}

/// Lets one warning through per [`WARN_INTERVAL`] and counts the ones held
/// back in between.
#[derive(Debug, Default)]
struct WarnLimiter {
    /// Milliseconds (on the caller's clock) of the last warning, plus one.
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// Returns `Some(suppressed since the last warning)` when a warning may
    /// be logged at `now`, otherwise counts one suppressed warning.
    fn permit(&self, now: Duration) -> Option<u64> {
        let now_ms = u64::try_from(now.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now_ms.saturating_sub(last) >= interval_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A loopback server that sends `response` (a full HTTP/1.1 response)
    /// on every connection, or never responds when it is `None`.
    /// Returns its address and the number of requests it received.
    async fn server(response: Option<&'static str>) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 8192];
                    let _ = stream.read(&mut buffer).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    match response {
                        Some(response) => {
                            let _ = stream.write_all(response.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (format!("http://{address}/sessions/validate"), requests)
    }

    fn ok_response(body: &'static str) -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    }

    fn checker(url: &str, unreachable: UnreachablePolicy) -> SessionChecker {
        SessionChecker::new(SessionCheckSettings {
            validate_url: Url::parse(url).expect("URL"),
            cache_ttl: Duration::from_secs(30),
            cache_max_entries: 100,
            timeout: Duration::from_millis(300),
            unreachable,
        })
    }

    #[tokio::test]
    async fn valid_response_is_cached_per_session() {
        let (url, requests) = server(Some(ok_response(r#"{"is_valid":true}"#))).await;
        let checker = checker(&url, UnreachablePolicy::Reject);

        let first = checker.check("token", Some("session-1")).await;
        let second = checker.check("token", Some("session-1")).await;

        assert_eq!(first, Ok(SessionOutcome::Checked));
        assert_eq!(second, Ok(SessionOutcome::Cached));
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalid_response_means_revoked() {
        let (url, requests) = server(Some(ok_response(r#"{"is_valid":false}"#))).await;
        let checker = checker(&url, UnreachablePolicy::Reject);

        assert_eq!(
            checker.check("token", Some("session-1")).await,
            Err(SessionError::Revoked)
        );
        assert_eq!(
            checker.check("token", Some("session-1")).await,
            Err(SessionError::Revoked)
        );
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn missing_session_id_is_rejected_without_a_call() {
        let (url, requests) = server(Some(ok_response(r#"{"is_valid":true}"#))).await;
        let checker = checker(&url, UnreachablePolicy::Reject);

        assert_eq!(
            checker.check("token", None).await,
            Err(SessionError::MissingSessionId)
        );
        assert_eq!(
            checker.check("token", Some("")).await,
            Err(SessionError::MissingSessionId)
        );
        assert_eq!(requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn concurrent_checks_share_one_call() {
        let (url, requests) = server(Some(ok_response(r#"{"is_valid":true}"#))).await;
        let checker = Arc::new(checker(&url, UnreachablePolicy::Reject));

        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let checker = checker.clone();
                tokio::spawn(async move { checker.check("token", Some("session-1")).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.expect("task ends").is_ok());
        }

        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn malformed_response_counts_as_unreachable() {
        let (url, _) = server(Some(ok_response(r#"{"valid":true}"#))).await;
        let checker = checker(&url, UnreachablePolicy::Reject);

        assert!(matches!(
            checker.check("token", Some("session-1")).await,
            Err(SessionError::Unavailable(_))
        ));
        assert!(checker.last_failure_ms.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn server_error_counts_as_unreachable() {
        let (url, _) = server(Some(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ))
        .await;
        let checker = checker(&url, UnreachablePolicy::Reject);

        assert!(matches!(
            checker.check("token", Some("session-1")).await,
            Err(SessionError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (url, _) = server(None).await;
        let checker = checker(&url, UnreachablePolicy::Reject);
        let started = Instant::now();

        let outcome = checker.check("token", Some("session-1")).await;

        assert!(matches!(outcome, Err(SessionError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn failure_backoff_skips_new_calls() {
        let (url, requests) = server(Some(ok_response("not json"))).await;
        let checker = checker(&url, UnreachablePolicy::Reject);

        let _ = checker.check("token", Some("session-1")).await;
        let _ = checker.check("token", Some("session-2")).await;

        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn accept_policy_without_response_rejects() {
        let (url, _) = server(Some(ok_response("not json"))).await;
        let checker = checker(
            &url,
            UnreachablePolicy::Accept {
                max_since_reachable: Duration::from_secs(60),
            },
        );

        assert!(matches!(
            checker.check("token", Some("session-1")).await,
            Err(SessionError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn accept_policy_accepts_within_the_bound() {
        let (url, _) = server(Some(ok_response(r#"{"is_valid":true}"#))).await;
        let mut checker = checker(
            &url,
            UnreachablePolicy::Accept {
                max_since_reachable: Duration::from_secs(60),
            },
        );
        assert!(checker.check("token", Some("session-1")).await.is_ok());

        // Point the checker at a port that refuses connections.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused = format!(
            "http://{}/sessions/validate",
            closed.local_addr().expect("address")
        );
        drop(closed);
        checker.settings.validate_url = Url::parse(&refused).expect("URL");

        assert_eq!(
            checker.check("token", Some("session-2")).await,
            Ok(SessionOutcome::AcceptedUnreachable)
        );
    }

    #[test]
    fn accept_policy_bounded_by_last_response() {
        let mut checker = checker(
            "http://127.0.0.1:9/sessions/validate",
            UnreachablePolicy::Accept {
                max_since_reachable: Duration::from_secs(60),
            },
        );
        checker.started = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .expect("the monotonic clock has run for two minutes");

        // Hanko last responded about 119 s ago: past the bound.
        checker.last_response_ms.store(1_001, Ordering::Relaxed);
        assert!(matches!(
            checker.when_unreachable(),
            Err(SessionError::Unavailable(_))
        ));

        // Hanko last responded about 10 s ago: within the bound.
        checker.last_response_ms.store(110_001, Ordering::Relaxed);
        assert_eq!(
            checker.when_unreachable(),
            Ok(SessionOutcome::AcceptedUnreachable)
        );
    }

    #[test]
    fn warnings_are_rate_limited() {
        let limiter = WarnLimiter::default();

        assert_eq!(limiter.permit(Duration::from_secs(0)), Some(0));
        assert_eq!(limiter.permit(Duration::from_secs(1)), None);
        assert_eq!(limiter.permit(Duration::from_secs(2)), None);
        assert_eq!(limiter.permit(Duration::from_secs(11)), Some(2));
    }
}
