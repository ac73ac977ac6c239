//! The key source: fetches the key set over HTTP(S), keeps it in a moka
//! cache and refreshes it.
//!
//! - The current set sits in a single-entry moka cache whose entry expires
//!   when the set's `max-age` plus the stale window has passed. A cold cache
//!   is filled through `try_get_with`, so concurrent requests share one fetch.
//! - A background loop refreshes the set before its `max-age` runs out, so in
//!   steady state no request waits on a fetch. When a refresh fails the old
//!   keys keep serving until the entry expires.
//! - A token with an unseen `kid` triggers at most one refetch per cooldown;
//!   requests waiting for the same `kid` share it.
//! - After a failed fetch, requests on a cold cache get [`KeysUnavailable`]
//!   for the retry period instead of triggering fetches of their own.
//!
//! Verification itself lives in `token`; this module never judges a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use moka::Expiry;
use moka::future::Cache;
use pingora::server::ShutdownWatch;
use tokio::sync::{Mutex, Notify};
use url::Url;

use super::keyset::{KeySet, KeySetError};
use crate::config::JwksSettings;

/// Largest key set document read, in bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Minimum refresh period, whatever `max-age` is set to, so that
/// `max-age=0` cannot turn into a fetch loop.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Maximum refresh period, whatever `max-age` is set to.
const MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
/// Share of `max-age` after which the background loop refreshes.
const REFRESH_AT_PERCENT: u32 = 80;

/// A key set with the facts needed to decide when to refresh it.
#[derive(Debug)]
pub struct FetchedKeys {
    /// The usable keys.
    pub set: KeySet,
    /// When the fetch completed.
    pub fetched_at: Instant,
    /// How long the set counts as fresh.
    pub max_age: Duration,
}

impl FetchedKeys {
    /// Returns when the background loop should refresh this set.
    fn refresh_due(&self) -> Instant {
        self.fetched_at + self.max_age * REFRESH_AT_PERCENT / 100
    }
}

/// No usable key set is available: the proxy answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no usable key set is available")]
pub struct KeysUnavailable {
    /// Seconds after which a new attempt may succeed.
    pub retry_after_seconds: u64,
}

/// The reason one fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or timed out.
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    /// The server answered with another status than 200.
    #[error("unexpected status {0}")]
    Status(u16),
    /// The body exceeded the size limit.
    #[error("the key set is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body is not a usable key set.
    #[error(transparent)]
    KeySet(#[from] KeySetError),
}

/// The last refetch caused by a token with an unknown `kid`.
#[derive(Debug, Clone, Copy)]
struct KidRefetch {
    /// When the fetch ended, so that a slow fetch still leaves a cooldown.
    ended_at: Instant,
    failed: bool,
}

/// Locks `mutex`, also after a panic elsewhere: the value is a plain copy.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Expires the cached set once its max-age and the stale window have passed.
struct StaleWindow(Duration);

impl Expiry<(), Arc<FetchedKeys>> for StaleWindow {
    fn expire_after_create(
        &self,
        _key: &(),
        value: &Arc<FetchedKeys>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.max_age + self.0)
    }

    fn expire_after_update(
        &self,
        _key: &(),
        value: &Arc<FetchedKeys>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.max_age + self.0)
    }
}

/// Fetches, caches and refreshes one key set.
pub struct KeySource {
    url: Url,
    client: reqwest::Client,
    allowed: Vec<Algorithm>,
    settings: JwksSettings,
    cache: Cache<(), Arc<FetchedKeys>>,
    /// Held by every fetch outside the cold start, so refreshes never
    /// overlap.
    refresh: Mutex<()>,
    /// Read without the refresh lock, so that requests within the
    /// cooldown do not wait behind a slow fetch.
    last_kid_refetch: std::sync::Mutex<Option<KidRefetch>>,
    /// Wakes the refresh loop when a fetch outside it loaded a new set,
    /// whose max-age may call for an earlier refresh.
    loaded: Notify,
    started: Instant,
    /// Milliseconds after `started` of the last failed fetch, plus one; 0
    /// when no fetch has failed since the last success.
    last_failure_ms: AtomicU64,
    /// Milliseconds after `started` of the last successful fetch, plus one;
    /// 0 before the first success.
    last_success_ms: AtomicU64,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl KeySource {
    /// Creates a key source for `url` that keeps keys usable with `allowed`.
    ///
    /// # Errors
    ///
    /// Fails when the HTTP client cannot be built (for example when no TLS
    /// root certificates can be loaded).
    pub fn new(url: Url, allowed: Vec<Algorithm>, settings: JwksSettings) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("edge-proxy/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "http" {
            // Validation allows plain http only to loopback; a proxy from the
            // environment must not see that traffic.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|error| anyhow::anyhow!("building the key set HTTP client failed: {error}"))?;
        let cache = Cache::builder()
            .expire_after(StaleWindow(settings.stale))
            .build();

        Ok(Self {
            url,
            client,
            allowed,
            settings,
            cache,
            refresh: Mutex::new(()),
            last_kid_refetch: std::sync::Mutex::new(None),
            loaded: Notify::new(),
            started: Instant::now(),
            last_failure_ms: AtomicU64::new(0),
            last_success_ms: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Returns the key set URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Returns how many fetches were started.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Returns how many fetches failed.
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Returns the time since the last successful fetch, `None` before the
    /// first one.
    pub fn last_success_age(&self) -> Option<Duration> {
        let fetched_at = self
            .last_success_ms
            .load(Ordering::Relaxed)
            .checked_sub(1)?;
        Some(
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(fetched_at)),
        )
    }

    /// Reports whether a usable key set is loaded.
    pub fn is_ready(&self) -> bool {
        self.cache.contains_key(&())
    }

    /// Returns the current key set, fetching it when none is cached.
    ///
    /// # Errors
    ///
    /// Returns [`KeysUnavailable`] when no set is cached and fetching failed
    /// now or within the retry period.
    pub async fn current(&self) -> Result<Arc<FetchedKeys>, KeysUnavailable> {
        if let Some(keys) = self.cache.get(&()).await {
            return Ok(keys);
        }
        if let Some(remaining) = self.retry_remaining() {
            return Err(KeysUnavailable {
                retry_after_seconds: remaining.as_secs().max(1),
            });
        }
        let keys = self
            .cache
            .try_get_with((), self.fetch())
            .await
            .map_err(|_| KeysUnavailable {
                retry_after_seconds: self.settings.retry.as_secs().max(1),
            })?;
        self.forget_failed_kid_refetch();
        self.loaded.notify_one();
        Ok(keys)
    }

    /// Refetches the set because a token named `kid`, which the set lacks.
    ///
    /// Returns the new set when it now contains `kid`, and `None` when it
    /// does not. Within the cooldown since the last unknown-`kid` refetch
    /// there is no fetch, and the outcome of that refetch is returned again.
    ///
    /// # Errors
    ///
    /// Returns [`KeysUnavailable`] when the refetch failed, or failed
    /// within the cooldown and no fetch has succeeded since, because while
    /// the key set cannot be fetched a token signed with a new key looks
    /// the same as a forged `kid`.
    pub async fn refetch_for_kid(
        &self,
        kid: &str,
    ) -> Result<Option<Arc<FetchedKeys>>, KeysUnavailable> {
        if let Some(settled) = self.settled_for_kid(kid).await {
            return settled;
        }
        let _refresh = self.refresh.lock().await;
        // A request ahead of this one may have refetched meanwhile.
        if let Some(settled) = self.settled_for_kid(kid).await {
            return settled;
        }

        tracing::info!(url = %self.url, "refetching the key set for an unknown kid");
        let fetched = self.fetch().await;
        // The new set goes into the cache before the outcome is recorded,
        // because `settled_for_kid` reads them in the other order.
        if let Ok(keys) = &fetched {
            self.cache.insert((), keys.clone()).await;
            self.loaded.notify_one();
        }
        *lock(&self.last_kid_refetch) = Some(KidRefetch {
            ended_at: Instant::now(),
            failed: fetched.is_err(),
        });
        match fetched {
            Ok(keys) => Ok(keys.set.contains(kid).then_some(keys)),
            Err(_) => Err(KeysUnavailable {
                retry_after_seconds: self.settings.unknown_kid_cooldown.as_secs().max(1),
            }),
        }
    }

    /// Returns the outcome for `kid` when no refetch is due: the cached set
    /// once it contains `kid`, or within the cooldown what the last refetch
    /// gave.
    async fn settled_for_kid(
        &self,
        kid: &str,
    ) -> Option<Result<Option<Arc<FetchedKeys>>, KeysUnavailable>> {
        // Read before the cache: a refetch that is recorded here has
        // already put its set into the cache.
        let last = *lock(&self.last_kid_refetch);
        if let Some(keys) = self.cache.get(&()).await
            && keys.set.contains(kid)
        {
            return Some(Ok(Some(keys)));
        }
        let last = last?;
        let remaining = self
            .settings
            .unknown_kid_cooldown
            .checked_sub(last.ended_at.elapsed())
            .filter(|remaining| !remaining.is_zero())?;
        if last.failed {
            Some(Err(KeysUnavailable {
                retry_after_seconds: remaining.as_secs().max(1),
            }))
        } else {
            Some(Ok(None))
        }
    }

    /// Runs the refresh loop until `shutdown` fires: loads the set at start,
    /// then refreshes it before its `max-age` runs out.
    pub async fn run_refresh_loop(&self, mut shutdown: ShutdownWatch) {
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.loaded.notified() => {}
                _ = shutdown.changed() => return,
            }

            let loaded = match self.cache.get(&()).await {
                None => self.current().await.ok(),
                Some(keys) if Instant::now() >= keys.refresh_due() => self.refresh_now().await,
                Some(keys) => Some(keys),
            };
            wait = match loaded {
                Some(keys) => keys
                    .refresh_due()
                    .saturating_duration_since(Instant::now())
                    .max(MIN_REFRESH),
                None => self.settings.retry,
            };
        }
    }

    /// Fetches the set now and replaces the cached one on success.
    async fn refresh_now(&self) -> Option<Arc<FetchedKeys>> {
        let _refresh = self.refresh.lock().await;
        let keys = self.fetch().await.ok()?;
        self.cache.insert((), keys.clone()).await;
        self.forget_failed_kid_refetch();
        Some(keys)
    }

    /// Marks a failed unknown-`kid` refetch as outdated once a later fetch
    /// has put its set into the cache, so that the rest of the cooldown
    /// returns 401 for kids that set lacks, not 503.
    fn forget_failed_kid_refetch(&self) {
        if let Some(last) = lock(&self.last_kid_refetch).as_mut() {
            last.failed = false;
        }
    }

    /// Returns how long requests on a cold cache must still wait after the
    /// last failed fetch.
    fn retry_remaining(&self) -> Option<Duration> {
        let failed_at = self.last_failure_ms.load(Ordering::Relaxed);
        if failed_at == 0 {
            return None;
        }
        let failed_at = Duration::from_millis(failed_at - 1);
        let since = self.started.elapsed().saturating_sub(failed_at);
        self.settings
            .retry
            .checked_sub(since)
            .filter(|left| !left.is_zero())
    }

    /// Fetches and parses the set once, logging the outcome.
    async fn fetch(&self) -> Result<Arc<FetchedKeys>, FetchError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_inner().await;
        crate::metrics::record_key_fetch(result.is_ok());
        match result {
            Ok(keys) => {
                self.last_failure_ms.store(0, Ordering::Relaxed);
                self.last_success_ms
                    .store(self.elapsed_ms().saturating_add(1), Ordering::Relaxed);
                tracing::info!(
                    url = %self.url,
                    keys = keys.set.len(),
                    max_age_seconds = keys.max_age.as_secs(),
                    "key set loaded"
                );
                Ok(Arc::new(keys))
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.last_failure_ms
                    .store(self.elapsed_ms().saturating_add(1), Ordering::Relaxed);
                tracing::warn!(url = %self.url, %error, "fetching the key set failed");
                Err(error)
            }
        }
    }

    /// Returns the milliseconds since this source was created.
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn fetch_inner(&self) -> Result<FetchedKeys, FetchError> {
        let mut response = self.client.get(self.url.clone()).send().await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max_age = response
            .headers()
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .find_map(|value| value.to_str().ok().and_then(parse_max_age))
            .unwrap_or(self.settings.refresh)
            .clamp(MIN_REFRESH, MAX_REFRESH);

        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }

        let (set, skipped) = KeySet::from_jwks(&body, &self.allowed)?;
        for key in skipped {
            tracing::warn!(
                kid = key.kid.as_deref().unwrap_or(""),
                reason = %key.reason,
                "skipping a key the proxy cannot use"
            );
        }
        Ok(FetchedKeys {
            set,
            fetched_at: Instant::now(),
            max_age,
        })
    }
}

/// Reads `max-age` from one `Cache-Control` value; `no-cache` and
/// `no-store` count as zero.
fn parse_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, seconds) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        seconds
            .trim()
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read() {
        assert_eq!(parse_max_age("max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(
            parse_max_age("public, Max-Age = 30"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_max_age("max-age=\"5\""), Some(Duration::from_secs(5)));
    }

    #[test]
    fn no_store_counts_as_zero() {
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
    }

    #[test]
    fn other_directives_give_no_max_age() {
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("s-maxage=10"), None);
        assert_eq!(parse_max_age("max-age=soon"), None);
    }
}
