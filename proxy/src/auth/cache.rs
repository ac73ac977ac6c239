//! Cache of tokens that passed every check, so that a repeated token skips
//! the signature check.
//!
//! An entry lives until the earlier of the token's `exp` and the configured
//! TTL. It counts only while the key that verified it is still in the
//! current key set, so a key removed at the next refresh takes its tokens
//! with it. Failed tokens are never cached, so a forged token pays the full check
//! every time. The cache is bounded in entries (moka evicts by TinyLFU).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::Expiry;
use moka::sync::Cache;

use super::keyset::KeySet;
use crate::config::TokenCacheSettings;
use crate::identity::Identity;

/// Verified tokens and the identity each one grants. A clone shares the
/// entries of the original.
#[derive(Clone)]
pub struct TokenCache {
    cache: Cache<Box<str>, Arc<Identity>>,
}

/// Expires an entry at `min(exp, ttl)`.
struct UntilExpiry {
    ttl: Duration,
}

impl Expiry<Box<str>, Arc<Identity>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _token: &Box<str>,
        identity: &Arc<Identity>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let until_exp = Duration::from_secs(identity.expires_at.saturating_sub(now));
        Some(until_exp.min(self.ttl))
    }
}

impl TokenCache {
    /// Creates an empty cache.
    pub fn new(settings: TokenCacheSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(UntilExpiry { ttl: settings.ttl })
            .build();
        Self { cache }
    }

    /// Returns the identity of a cached token whose key is still in `keys`
    /// and whose `exp` is after `now`.
    pub fn get(&self, token: &str, keys: &KeySet, now: u64) -> Option<Arc<Identity>> {
        let identity = self.cache.get(token)?;
        if identity.expires_at <= now || !keys.contains(&identity.kid) {
            self.cache.invalidate(token);
            return None;
        }
        Some(identity)
    }

    /// Stores a token that passed every check.
    pub fn insert(&self, token: &str, identity: Arc<Identity>) {
        self.cache.insert(token.into(), identity);
    }

    /// Returns the number of cached tokens, for metrics.
    ///
    /// moka applies inserts and removals to its count lazily, so the
    /// pending ones are applied first. The count is still approximate
    /// while other threads use the cache.
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::{rsa_key, second_rsa_key};
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }

    fn key_set(jwks: &[serde_json::Value]) -> KeySet {
        let document = json!({ "keys": jwks });
        KeySet::from_jwks(document.to_string().as_bytes(), &[Algorithm::RS256])
            .expect("usable")
            .0
    }

    fn identity(kid: &str, expires_at: u64) -> Arc<Identity> {
        Arc::new(Identity {
            subject: "user".to_owned(),
            kid: kid.to_owned(),
            expires_at,
            session_id: None,
            headers: Vec::new(),
        })
    }

    fn cache() -> TokenCache {
        TokenCache::new(TokenCacheSettings {
            max_entries: 100,
            ttl: Duration::from_secs(60),
        })
    }

    #[test]
    fn cached_token_is_returned() {
        let cache = cache();
        let keys = key_set(&[rsa_key().jwk.clone()]);
        cache.insert("token", identity(&rsa_key().kid, now() + 600));

        assert!(cache.get("token", &keys, now()).is_some());
        assert!(cache.get("other", &keys, now()).is_none());
    }

    #[test]
    fn token_of_removed_key_is_dropped() {
        let cache = cache();
        cache.insert("token", identity(&rsa_key().kid, now() + 600));
        let rotated = key_set(&[second_rsa_key().jwk.clone()]);

        assert!(cache.get("token", &rotated, now()).is_none());
        let original = key_set(&[rsa_key().jwk.clone()]);
        assert!(
            cache.get("token", &original, now()).is_none(),
            "the entry was invalidated"
        );
    }

    #[test]
    fn expired_token_is_dropped() {
        let cache = cache();
        let keys = key_set(&[rsa_key().jwk.clone()]);
        let expires_at = now() + 600;
        cache.insert("token", identity(&rsa_key().kid, expires_at));

        assert!(cache.get("token", &keys, expires_at).is_none());
    }

    #[test]
    fn ttl_is_capped_by_expiry() {
        let expiry = UntilExpiry {
            ttl: Duration::from_secs(300),
        };
        let soon = identity("k", now() + 10);
        let late = identity("k", now() + 10_000);

        let soon_ttl = expiry
            .expire_after_create(&"t".into(), &soon, Instant::now())
            .expect("always set");
        let late_ttl = expiry
            .expire_after_create(&"t".into(), &late, Instant::now())
            .expect("always set");
        assert!(soon_ttl <= Duration::from_secs(10));
        assert_eq!(late_ttl, Duration::from_secs(300));
    }
}
