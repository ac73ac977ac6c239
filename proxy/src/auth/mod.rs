//! Authentication: from a token candidate to the identity it grants.
//!
//! [`Authenticator::authenticate`] ties the parts together: the current key
//! set from `jwks`, the verified-token cache, the pure check in `token`, and
//! one refetch when the token names an unseen `kid`. Token extraction from the
//! request is in `extract`; deciding what a route demands is the caller's job.

pub mod cache;
pub mod extract;
pub mod jwks;
pub mod keyset;
pub mod token;

#[cfg(test)]
mod test_keys;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderName;

use crate::config::{AuthConfig, ClaimHeader};
use crate::identity::Identity;
use cache::TokenCache;
use jwks::{KeySource, KeysUnavailable};
use token::{Refusal, TokenPolicy};

/// The reason a token yields no identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token failed a check: 401.
    #[error(transparent)]
    Invalid(#[from] Refusal),
    /// No key set is available to check it: 503.
    #[error(transparent)]
    Unavailable(#[from] KeysUnavailable),
}

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The identity the token grants.
    pub identity: Arc<Identity>,
    /// Whether the verified-token cache answered.
    pub from_cache: bool,
}

/// Verifies tokens against one key source under one policy.
pub struct Authenticator {
    policy: TokenPolicy,
    keys: Arc<KeySource>,
    cache: Option<TokenCache>,
    user_id_header: HeaderName,
    claim_headers: Vec<ClaimHeader>,
}

impl Authenticator {
    /// Creates an authenticator for `config` reading keys from `keys`.
    pub fn new(config: &AuthConfig, keys: Arc<KeySource>) -> Self {
        Self {
            policy: config.policy.clone(),
            keys,
            cache: config.token_cache.map(TokenCache::new),
            user_id_header: config.user_id_header.clone(),
            claim_headers: config.claim_headers.clone(),
        }
    }

    /// Returns the key source.
    pub fn keys(&self) -> &Arc<KeySource> {
        &self.keys
    }

    /// Returns the verified-token cache, when enabled.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        self.cache.as_ref()
    }

    /// Checks `token` and returns the identity it grants.
    ///
    /// # Errors
    ///
    /// [`AuthError::Invalid`] when the token fails a check (after one
    /// refetch for an unseen `kid`), [`AuthError::Unavailable`] when no key
    /// set can be had.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        let keys = self.keys.current().await?;
        let now = unix_now();

        if let Some(cache) = &self.cache
            && let Some(identity) = cache.get(token, &keys.set, now)
        {
            return Ok(Authenticated {
                identity,
                from_cache: true,
            });
        }

        let verified = match token::verify(token, &keys.set, now, &self.policy) {
            Err(Refusal::UnknownKid) => {
                let kid = token::unverified_kid(token).ok_or(Refusal::UnknownKid)?;
                let fresh = self
                    .keys
                    .refetch_for_kid(&kid)
                    .await
                    .ok_or(Refusal::UnknownKid)?;
                token::verify(token, &fresh.set, unix_now(), &self.policy)?
            }
            other => other?,
        };

        let identity = Arc::new(Identity::from_verified(
            verified,
            &self.user_id_header,
            &self.claim_headers,
        ));
        if let Some(cache) = &self.cache {
            cache.insert(token, identity.clone());
        }
        Ok(Authenticated {
            identity,
            from_cache: false,
        })
    }
}

/// Returns the current time in seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
