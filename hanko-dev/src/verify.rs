//! Session token verification the way Hanko's `/sessions/validate` does it:
//! RS256 signature by a stored key, `exp` in the future, session not
//! revoked. `iat` and `exp` must also be in the years 0000 to 9999, because
//! the response writes them in RFC 3339.
//!
//! Like Hanko, this does not check `aud` or `iss`: that is the relying
//! party's job (edge-proxy checks both). It is not a hardened verifier and
//! must not be used as one.

use anyhow::Result;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::claims::{Claims, ValidatedClaims};
use crate::store::DataDir;

/// The outcome of checking one session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a stored key, unexpired, session not revoked, and `iat`
    /// and `exp` in the years 0000 to 9999.
    Valid(Claims),
    /// Anything else; the reason is for logs only, never for clients.
    Invalid(&'static str),
}

/// Checks `token` against the keys and revocations in `store`.
///
/// # Errors
///
/// Fails only when the data directory cannot be read; a bad token is an
/// [`Verdict::Invalid`], not an error.
pub fn verify(store: &DataDir, token: &str) -> Result<Verdict> {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return Ok(Verdict::Invalid("malformed token"));
    };
    if header.alg != Algorithm::RS256 {
        return Ok(Verdict::Invalid("algorithm is not RS256"));
    }
    let Some(kid) = header.kid else {
        return Ok(Verdict::Invalid("no kid in header"));
    };
    let keys = store.keys()?;
    let Some(key) = keys.iter().find(|key| key.kid() == kid) else {
        return Ok(Verdict::Invalid("unknown kid"));
    };
    let Ok(decoding_key) = DecodingKey::from_rsa_pem(key.public_pem()?.as_bytes()) else {
        return Ok(Verdict::Invalid("stored key unusable"));
    };

    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let claims = match jsonwebtoken::decode::<Claims>(token, &decoding_key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return Ok(Verdict::Invalid("signature, expiry or claims invalid")),
    };

    if uuid::Uuid::parse_str(&claims.sub).is_err() {
        return Ok(Verdict::Invalid("sub is not a UUID"));
    }
    // The validate response writes `iat` and `exp` in RFC 3339, which has no
    // years before 0000 or after 9999.
    if ValidatedClaims::from_claims(&claims).is_none() {
        return Ok(Verdict::Invalid(
            "iat or exp is outside the years 0000 to 9999",
        ));
    }
    if store.is_revoked(&claims.session_id)? {
        return Ok(Verdict::Invalid("session revoked"));
    }
    Ok(Verdict::Valid(claims))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::claims::TokenRequest;
    use crate::keys::{DEFAULT_KEY_BITS, SigningKey};

    fn store() -> (tempfile::TempDir, DataDir) {
        let temp = tempfile::tempdir().expect("temp dir");
        let store = DataDir::open(temp.path()).expect("open");
        (temp, store)
    }

    fn request() -> TokenRequest {
        TokenRequest::new(uuid::Uuid::new_v4())
    }

    #[test]
    fn fresh_token_is_valid() {
        let (_temp, store) = store();
        let key = store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let claims = request().claims();
        let token = key.sign(&claims).expect("sign");

        assert_eq!(
            verify(&store, &token).expect("verify"),
            Verdict::Valid(claims)
        );
    }

    #[test]
    fn expired_token_is_invalid() {
        let (_temp, store) = store();
        let key = store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let mut expired = request();
        expired.issued_at = Some(SystemTime::now() - Duration::from_secs(120));
        expired.ttl = Duration::from_secs(60);
        let token = key.sign(&expired.claims()).expect("sign");

        assert!(matches!(
            verify(&store, &token).expect("verify"),
            Verdict::Invalid(_)
        ));
    }

    #[test]
    fn revoked_session_is_invalid() {
        let (_temp, store) = store();
        let key = store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let claims = request().claims();
        let token = key.sign(&claims).expect("sign");

        store
            .revoke(claims.session_id.parse().expect("session id is a UUID"))
            .expect("revoke");

        assert_eq!(
            verify(&store, &token).expect("verify"),
            Verdict::Invalid("session revoked")
        );
    }

    #[test]
    fn foreign_key_is_invalid() {
        let (_temp, store) = store();
        store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let stranger = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
        let token = stranger.sign(&request().claims()).expect("sign");

        assert_eq!(
            verify(&store, &token).expect("verify"),
            Verdict::Invalid("unknown kid")
        );
    }

    #[test]
    fn old_key_still_verifies_after_rotation() {
        let (_temp, store) = store();
        let old = store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let token = old.sign(&request().claims()).expect("sign");

        store.rotate(DEFAULT_KEY_BITS).expect("rotate");

        assert!(matches!(
            verify(&store, &token).expect("verify"),
            Verdict::Valid(_)
        ));
    }

    #[test]
    fn garbage_and_tampered_tokens_are_invalid() {
        let (_temp, store) = store();
        let key = store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let token = key.sign(&request().claims()).expect("sign");
        // Change one character in the middle of the signature.
        let middle = token.rfind('.').expect("three parts") + 100;
        let replacement = if &token[middle..=middle] == "A" {
            "B"
        } else {
            "A"
        };
        let mut tampered = token.clone();
        tampered.replace_range(middle..=middle, replacement);

        for bad in ["", "a.b", "a.b.c", tampered.as_str()] {
            assert!(
                matches!(verify(&store, bad).expect("verify"), Verdict::Invalid(_)),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn out_of_range_times_are_invalid() {
        let (_temp, store) = store();
        let key = store.signing_key(DEFAULT_KEY_BITS).expect("key");
        let mut early_iat = request().claims();
        early_iat.iat = -100_000_000_000;
        let mut late_exp = request().claims();
        late_exp.exp = 253_402_300_800;

        for claims in [early_iat, late_exp] {
            let token = key.sign(&claims).expect("sign");
            assert_eq!(
                verify(&store, &token).expect("verify"),
                Verdict::Invalid("iat or exp is outside the years 0000 to 9999"),
                "iat {} exp {}",
                claims.iat,
                claims.exp
            );
        }
    }
}
