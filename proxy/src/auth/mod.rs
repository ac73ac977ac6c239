//! Authentication: from a token candidate to the identity it grants.
//!
//! [`Authenticator::authenticate`] ties the parts together: the current key
//! set from `jwks`, the verified-token cache, the pure check in `token`,
//! one refetch when the token names an unseen `kid`, and, when configured,
//! the session check with Hanko in `session`. Token extraction from the
//! request is in `extract`; deciding what a route demands is the caller's job.

pub mod cache;
pub mod extract;
pub mod jwks;
pub mod keyset;
pub mod session;
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
use session::{SessionChecker, SessionUnavailable};
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
    /// The session check is on and Hanko cannot confirm the session: 503.
    #[error(transparent)]
    SessionUnavailable(SessionUnavailable),
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
    session: Option<Arc<SessionChecker>>,
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
            session: config
                .session_check
                .clone()
                .map(|settings| Arc::new(SessionChecker::new(settings))),
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

    /// Takes over the verified-token cache of `previous`, so that a config
    /// reload keeps the tokens already verified.
    ///
    /// Only sound when both use the same key source and the same token
    /// policy, user id header, claim headers and cache settings, because a
    /// cached identity was built under those.
    pub fn share_token_cache(&mut self, previous: &Authenticator) {
        self.cache = previous.cache.clone();
    }

    /// Returns the session checker, when `session_check = "validate"`.
    pub fn session_checker(&self) -> Option<&SessionChecker> {
        self.session.as_deref()
    }

    /// Takes over the session checker of `previous` when both have the same
    /// session check settings, so that a config reload keeps the cached
    /// responses and the time Hanko last responded (which bounds the
    /// `"accept"` policy).
    pub fn share_session_checker(&mut self, previous: &Authenticator) {
        if let (Some(current), Some(kept)) = (&self.session, &previous.session)
            && current.settings() == kept.settings()
        {
            self.session = Some(kept.clone());
        }
    }

    /// Checks `token` and returns the identity it grants.
    ///
    /// With the session check on, a token that passed the local checks (or
    /// came from the verified-token cache) is also checked with Hanko.
    ///
    /// # Errors
    ///
    /// [`AuthError::Invalid`] when the token fails a check (after one
    /// refetch for an unseen `kid`) or its session is revoked,
    /// [`AuthError::Unavailable`] when no key set can be had or the refetch
    /// for an unseen `kid` failed,
    /// [`AuthError::SessionUnavailable`] when Hanko cannot confirm the
    /// session and the policy rejects.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        let authenticated = self.verify_locally(token).await?;
        if let Some(session) = &self.session {
            session
                .check(token, authenticated.identity.session_id.as_deref())
                .await?;
        }
        Ok(authenticated)
    }

    /// Checks `token` against the key set and the verified-token cache.
    async fn verify_locally(&self, token: &str) -> Result<Authenticated, AuthError> {
        let keys = match self.keys.current().await {
            Ok(keys) => keys,
            Err(unavailable) => {
                // A token that fails the checks needing no key gets 401,
                // not 503, because no key set would let it through.
                token::check_without_keys(token, &self.policy)?;
                return Err(unavailable.into());
            }
        };
        let now = unix_now();

        if let Some(cache) = &self.cache {
            let cached = cache.get(token, &keys.set, now);
            crate::metrics::record_token_cache_lookup(cached.is_some());
            if let Some(identity) = cached {
                return Ok(Authenticated {
                    identity,
                    from_cache: true,
                });
            }
        }

        let verified = match token::verify(token, &keys.set, now, &self.policy) {
            Err(Refusal::UnknownKid) => {
                let kid = token::unverified_kid(token, &self.policy).ok_or(Refusal::UnknownKid)?;
                let fresh = self
                    .keys
                    .refetch_for_kid(&kid)
                    .await?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn authenticator(session_lines: &str) -> Authenticator {
        let text = format!(
            "[proxy]\n[proxy.auth]\nhanko_api_url = \"http://127.0.0.1:8000\"\naudience = \"localhost\"\n{session_lines}\n[[proxy.routes]]\npath_prefix = \"/\"\nupstream = \"127.0.0.1:8081\"\nauth = \"required\"\n"
        );
        let config = Config::from_toml(&text).expect("valid config");
        let keys = KeySource::new(
            config.auth.jwks_url.clone(),
            config.auth.policy.algorithms.clone(),
            config.auth.jwks,
        )
        .expect("key source");
        Authenticator::new(&config.auth, Arc::new(keys))
    }

    fn same_checker(left: &Authenticator, right: &Authenticator) -> bool {
        match (left.session_checker(), right.session_checker()) {
            (Some(left), Some(right)) => std::ptr::eq(left, right),
            _ => false,
        }
    }

    #[test]
    fn reload_keeps_session_checker_with_same_settings() {
        let previous = authenticator("session_check = \"validate\"");
        let mut reloaded = authenticator("session_check = \"validate\"");
        assert!(!same_checker(&previous, &reloaded));

        reloaded.share_session_checker(&previous);
        assert!(same_checker(&previous, &reloaded));
    }

    #[test]
    fn reload_with_new_settings_replaces_checker() {
        let previous = authenticator("session_check = \"validate\"");
        let mut reloaded = authenticator("session_check = \"validate\"\nsession_cache_seconds = 5");

        reloaded.share_session_checker(&previous);
        assert!(!same_checker(&previous, &reloaded));

        let mut jwks_only = authenticator("");
        jwks_only.share_session_checker(&previous);
        assert!(jwks_only.session_checker().is_none());
    }
}
