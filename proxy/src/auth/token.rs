//! Token verification as a pure function: a token, a key set, the current
//! time and the policy go in; a verified token or the reason for refusal
//! comes out.
//!
//! Checks run in a fixed order so the reason is stable: size, shape, header,
//! algorithm allow-list, `kid`, key, signature, then the claims (`exp`, `nbf`,
//! `iat`, `aud`, `iss`, `sub`). Claims are only read after the signature
//! verified. This module does no I/O, no caching and no logging.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keyset::KeySet;

/// The checks every token must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audiences: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_seconds: u64,
    /// Largest token accepted, in bytes.
    pub max_token_bytes: usize,
}

/// The reason a token was rejected. The names are stable because logs and
/// metrics use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// The token is longer than the configured limit.
    #[error("the token is too large")]
    TooLarge,
    /// Not three base64url parts, or the header or payload is not JSON.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is `none`, unknown, off the allow-list or does not fit the key.
    #[error("the token's signature algorithm is not allowed")]
    DisallowedAlgorithm,
    /// The header has no `kid`.
    #[error("the token has no key id")]
    MissingKid,
    /// No key in the set has this `kid`.
    #[error("the token's key id is unknown")]
    UnknownKid,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `exp` is missing.
    #[error("the token has no expiry")]
    MissingExp,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// `aud` is missing or contains none of the accepted audiences.
    #[error("the token is not meant for this audience")]
    BadAudience,
    /// `iss` is missing or differs from the configured issuer.
    #[error("the token's issuer is not accepted")]
    BadIssuer,
    /// `sub` is missing, empty or not usable as a header value.
    #[error("the token has no usable subject")]
    BadSubject,
    /// A registered claim has the wrong type.
    #[error("the token's claims are invalid")]
    InvalidClaims,
    /// The session check is on and the token has no `session_id`.
    #[error("the token has no session id")]
    MissingSessionId,
    /// Hanko reports that the token's session no longer exists.
    #[error("the session has been revoked")]
    SessionRevoked,
}

impl Refusal {
    /// Returns the stable snake_case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "token_too_large",
            Self::Malformed => "malformed_token",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::MissingKid => "missing_kid",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::MissingExp => "missing_exp",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::BadAudience => "bad_audience",
            Self::BadIssuer => "bad_issuer",
            Self::BadSubject => "bad_subject",
            Self::InvalidClaims => "invalid_claims",
            Self::MissingSessionId => "missing_session_id",
            Self::SessionRevoked => "session_revoked",
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The `kid` of the key that verified it.
    pub kid: String,
    /// The `sub` claim.
    pub subject: String,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

/// The protected header fields the verifier reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A token whose size, shape and header passed the checks that need no key.
struct Unverified<'a> {
    header_part: &'a str,
    payload_part: &'a str,
    signature_part: &'a str,
    algorithm: Algorithm,
    kid: String,
}

/// Verifies `token` against `keys` at `now` (seconds since the Unix epoch).
///
/// # Errors
///
/// Returns the first check the token fails. [`Refusal::UnknownKid`] is the
/// only refusal a fresher key set could change.
pub fn verify(
    token: &str,
    keys: &KeySet,
    now: u64,
    policy: &TokenPolicy,
) -> Result<VerifiedToken, Refusal> {
    let Unverified {
        header_part,
        payload_part,
        signature_part,
        algorithm,
        kid,
    } = check_header(token, policy)?;
    let key = keys.get(&kid).ok_or(Refusal::UnknownKid)?;
    if !key.supports(algorithm) {
        return Err(Refusal::DisallowedAlgorithm);
    }

    let signed_length = header_part.len() + 1 + payload_part.len();
    let signed = &token.as_bytes()[..signed_length];
    let verified = match key.parsed_rsa(algorithm) {
        // A signature that is not base64url cannot verify, so it is a bad
        // signature, as jsonwebtoken reports it below.
        Some(parsed) => URL_SAFE_NO_PAD
            .decode(signature_part)
            .is_ok_and(|signature| parsed.verify_sig(signed, &signature).is_ok()),
        None => jsonwebtoken::crypto::verify(signature_part, signed, key.decoding_key(), algorithm)
            .unwrap_or(false),
    };
    if !verified {
        return Err(Refusal::BadSignature);
    }

    let claims: Map<String, Value> =
        serde_json::from_slice(&decode_part(payload_part)?).map_err(|_| Refusal::Malformed)?;
    let expires_at = check_times(&claims, now, policy.leeway_seconds)?;
    check_audience(&claims, &policy.audiences)?;
    if let Some(issuer) = &policy.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(Refusal::BadIssuer);
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| is_header_safe(sub))
        .ok_or(Refusal::BadSubject)?
        .to_owned();

    Ok(VerifiedToken {
        kid,
        subject,
        expires_at,
        claims,
    })
}

/// Runs the checks that need no key: size, shape, header, algorithm
/// allow-list and `kid`. A token that fails them is refused whatever key
/// set could be fetched.
///
/// # Errors
///
/// Returns the first check the token fails.
pub fn check_without_keys(token: &str, policy: &TokenPolicy) -> Result<(), Refusal> {
    check_header(token, policy).map(drop)
}

fn check_header<'a>(token: &'a str, policy: &TokenPolicy) -> Result<Unverified<'a>, Refusal> {
    if token.len() > policy.max_token_bytes {
        return Err(Refusal::TooLarge);
    }
    let (header_part, payload_part, signature_part) = split_parts(token)?;

    let header: Header =
        serde_json::from_slice(&decode_part(header_part)?).map_err(|_| Refusal::Malformed)?;
    // RFC 7515 section 4.1.11: a token naming critical extensions the
    // verifier does not implement must be rejected; this verifier implements
    // none.
    if header.crit.is_some() {
        return Err(Refusal::Malformed);
    }
    // Hanko's session tokens carry `typ: JWT`. Another type, such as `at+jwt`
    // (RFC 9068), marks a token meant for other checks, even when signed
    // with the same keys.
    if header.typ.as_deref().is_some_and(|typ| !is_jwt_type(typ)) {
        return Err(Refusal::Malformed);
    }
    let algorithm = Algorithm::from_str(&header.alg)
        .ok()
        .filter(|algorithm| policy.algorithms.contains(algorithm))
        .ok_or(Refusal::DisallowedAlgorithm)?;
    let kid = header
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or(Refusal::MissingKid)?;
    Ok(Unverified {
        header_part,
        payload_part,
        signature_part,
        algorithm,
        kid,
    })
}

/// Reports whether a `typ` header names a plain JWT: `JWT`, or the media
/// type `application/jwt`, both without regard to case (RFC 7515 section
/// 4.1.9 lets the `application/` prefix be left out).
fn is_jwt_type(typ: &str) -> bool {
    let media_type = typ
        .get(.."application/".len())
        .filter(|prefix| prefix.eq_ignore_ascii_case("application/"))
        .map_or(typ, |prefix| &typ[prefix.len()..]);
    media_type.eq_ignore_ascii_case("JWT")
}

/// Returns the `kid` of a token that passes the checks needing no key,
/// without verifying its signature, for deciding which key to refetch.
pub fn unverified_kid(token: &str, policy: &TokenPolicy) -> Option<String> {
    check_header(token, policy)
        .ok()
        .map(|unverified| unverified.kid)
}

/// Splits a compact JWS into its three parts, checking the alphabet.
fn split_parts(token: &str) -> Result<(&str, &str, &str), Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    for part in [header, payload, signature] {
        if part.is_empty() || !part.bytes().all(is_base64url_byte) {
            return Err(Refusal::Malformed);
        }
    }
    Ok((header, payload, signature))
}

fn is_base64url_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

fn decode_part(part: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Refusal::Malformed)
}

/// Checks `exp`, `nbf` and `iat` and returns `exp`.
fn check_times(claims: &Map<String, Value>, now: u64, leeway: u64) -> Result<u64, Refusal> {
    let expires_at = match claims.get("exp") {
        None => return Err(Refusal::MissingExp),
        Some(value) => numeric_date(value)?,
    };
    // RFC 7519 section 4.1.4: the current time must be before `exp`.
    if now >= expires_at.saturating_add(leeway) {
        return Err(Refusal::Expired);
    }
    if let Some(value) = claims.get("nbf")
        && numeric_date(value)? > now.saturating_add(leeway)
    {
        return Err(Refusal::NotYetValid);
    }
    if let Some(value) = claims.get("iat")
        && numeric_date(value)? > now.saturating_add(leeway)
    {
        return Err(Refusal::IssuedInFuture);
    }
    Ok(expires_at)
}

/// Reads a NumericDate; fractions are cut off, negative values become 0.
fn numeric_date(value: &Value) -> Result<u64, Refusal> {
    if let Some(seconds) = value.as_u64() {
        return Ok(seconds);
    }
    if value.as_i64().is_some() {
        return Ok(0);
    }
    match value.as_f64() {
        Some(seconds) if seconds.is_finite() => Ok(seconds.max(0.0) as u64),
        _ => Err(Refusal::InvalidClaims),
    }
}

/// Accepts `aud` as a string or an array holding one of `accepted`.
fn check_audience(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), Refusal> {
    let matches = |value: &Value| {
        value
            .as_str()
            .is_some_and(|audience| accepted.iter().any(|want| want == audience))
    };
    let found = match claims.get("aud") {
        Some(Value::Array(values)) => values.iter().any(matches),
        Some(value @ Value::String(_)) => matches(value),
        _ => false,
    };
    if found {
        Ok(())
    } else {
        Err(Refusal::BadAudience)
    }
}

/// Reports whether `value` is non-empty and can travel in an HTTP header
/// unchanged: visible ASCII, spaces and tabs inside, nothing else.
fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && value
            .bytes()
            .all(|byte| byte == b' ' || byte == b'\t' || (0x21..0x7F).contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::{TestKey, rsa_key, second_rsa_key};
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use serde_json::json;

    const NOW: u64 = 1_767_225_600;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            audiences: vec!["app.example.com".to_owned()],
            issuer: None,
            algorithms: vec![Algorithm::RS256],
            leeway_seconds: 30,
            max_token_bytes: 8192,
        }
    }

    fn keys_with(keys: &[&TestKey], allowed: &[Algorithm]) -> KeySet {
        let document = json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()});
        KeySet::from_jwks(document.to_string().as_bytes(), allowed)
            .expect("test keys are usable")
            .0
    }

    fn keys() -> KeySet {
        keys_with(&[rsa_key()], &[Algorithm::RS256])
    }

    fn claims() -> Value {
        json!({
            "sub": "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718",
            "iat": NOW - 60,
            "exp": NOW + 3600,
            "aud": ["app.example.com"],
            "session_id": "8d2f4b1c-5e6a-4f7b-9c3d-1a2b3c4d5e6f",
            "email": {"address": "ada@example.com", "is_primary": true, "is_verified": true},
        })
    }

    fn with_claim(name: &str, value: Value) -> Value {
        let mut claims = claims();
        claims[name] = value;
        claims
    }

    fn without_claim(name: &str) -> Value {
        let mut claims = claims();
        claims
            .as_object_mut()
            .expect("claims are an object")
            .remove(name);
        claims
    }

    fn check(token: &str) -> Result<VerifiedToken, Refusal> {
        verify(token, &keys(), NOW, &policy())
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Builds a token from raw header and payload JSON with a real RS256
    /// signature, for headers jsonwebtoken would not produce.
    fn hand_signed(header: &Value, payload: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &rsa_key().encoding,
            Algorithm::RS256,
        )
        .expect("signing works");
        format!("{signing_input}.{signature}")
    }

    #[test]
    fn valid_token_is_accepted() {
        let verified = check(&rsa_key().sign(&claims())).expect("valid");

        assert_eq!(verified.subject, "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718");
        assert_eq!(verified.kid, rsa_key().kid);
        assert_eq!(verified.expires_at, NOW + 3600);
        assert_eq!(verified.claims["email"]["address"], "ada@example.com");
    }

    #[test]
    fn audience_as_bare_string_is_accepted() {
        let token = rsa_key().sign(&with_claim("aud", json!("app.example.com")));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn audience_list_with_one_match_is_accepted() {
        let token = rsa_key().sign(&with_claim("aud", json!(["other", "app.example.com"])));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let token = rsa_key().sign(&with_claim("aud", json!(["other.example.com"])));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadAudience
        );
    }

    #[test]
    fn missing_audience_is_rejected() {
        let token = rsa_key().sign(&without_claim("aud"));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadAudience
        );
    }

    #[test]
    fn non_string_audience_is_rejected() {
        let token = rsa_key().sign(&with_claim("aud", json!([42])));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadAudience
        );
    }

    #[test]
    fn expired_token_is_rejected() {
        let token = rsa_key().sign(&with_claim("exp", json!(NOW - 31)));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Expired
        );
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let token = rsa_key().sign(&with_claim("exp", json!(NOW - 29)));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn expiry_exactly_at_leeway_edge_is_rejected() {
        let token = rsa_key().sign(&with_claim("exp", json!(NOW - 30)));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Expired
        );
    }

    #[test]
    fn missing_expiry_is_rejected() {
        let token = rsa_key().sign(&without_claim("exp"));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::MissingExp
        );
    }

    #[test]
    fn string_expiry_is_rejected() {
        let token = rsa_key().sign(&with_claim("exp", json!("tomorrow")));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::InvalidClaims
        );
    }

    #[test]
    fn fractional_expiry_is_accepted() {
        let token = rsa_key().sign(&with_claim("exp", json!((NOW + 100) as f64 + 0.5)));
        assert_eq!(check(&token).expect("valid").expires_at, NOW + 100);
    }

    #[test]
    fn not_before_in_future_is_rejected() {
        let token = rsa_key().sign(&with_claim("nbf", json!(NOW + 31)));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::NotYetValid
        );
    }

    #[test]
    fn not_before_within_leeway_is_accepted() {
        let token = rsa_key().sign(&with_claim("nbf", json!(NOW + 30)));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn issued_in_future_is_rejected() {
        let token = rsa_key().sign(&with_claim("iat", json!(NOW + 31)));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::IssuedInFuture
        );
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let mut policy = policy();
        policy.issuer = Some("https://auth.example.com".to_owned());
        let keys = keys();

        let right = rsa_key().sign(&with_claim("iss", json!("https://auth.example.com")));
        let wrong = rsa_key().sign(&with_claim("iss", json!("https://evil.example.com")));
        let missing = rsa_key().sign(&claims());

        assert!(verify(&right, &keys, NOW, &policy).is_ok());
        assert_eq!(
            verify(&wrong, &keys, NOW, &policy).expect_err("the token must be rejected"),
            Refusal::BadIssuer
        );
        assert_eq!(
            verify(&missing, &keys, NOW, &policy).expect_err("the token must be rejected"),
            Refusal::BadIssuer
        );
    }

    #[test]
    fn issuer_is_ignored_when_not_configured() {
        let token = rsa_key().sign(&with_claim("iss", json!("anyone")));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn empty_subject_is_rejected() {
        let token = rsa_key().sign(&with_claim("sub", json!("")));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadSubject
        );
    }

    #[test]
    fn missing_subject_is_rejected() {
        let token = rsa_key().sign(&without_claim("sub"));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadSubject
        );
    }

    #[test]
    fn numeric_subject_is_rejected() {
        let token = rsa_key().sign(&with_claim("sub", json!(42)));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadSubject
        );
    }

    #[test]
    fn subject_with_line_break_is_rejected() {
        let token = rsa_key().sign(&with_claim("sub", json!("a\r\nX-Admin: 1")));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadSubject
        );
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = json!({"alg": "none", "kid": rsa_key().kid, "typ": "JWT"});
        let token = format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes()),
            b64(b"x")
        );
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::DisallowedAlgorithm
        );
    }

    #[test]
    fn alg_none_with_empty_signature_is_rejected() {
        let header = json!({"alg": "none", "kid": rsa_key().kid});
        let token = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn hs256_keyed_with_public_key_is_rejected() {
        let mut header = JwtHeader::new(Algorithm::HS256);
        header.kid = Some(rsa_key().kid.clone());
        let secret = EncodingKey::from_secret(rsa_key().jwk["n"].as_str().expect("n").as_bytes())
            .expect("any bytes form an HMAC key");
        let token = jsonwebtoken::encode(&header, &claims(), &secret).expect("signs");

        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::DisallowedAlgorithm
        );
    }

    #[test]
    fn rs512_off_the_allow_list_is_rejected() {
        let mut header = JwtHeader::new(Algorithm::RS512);
        header.kid = Some(rsa_key().kid.clone());
        let token = jsonwebtoken::encode(&header, &claims(), &rsa_key().encoding).expect("signs");

        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::DisallowedAlgorithm
        );
    }

    #[test]
    fn rs512_is_accepted_when_allowed() {
        let mut policy = policy();
        policy.algorithms = vec![Algorithm::RS256, Algorithm::RS512];
        let keys = keys_with(&[rsa_key()], &policy.algorithms);
        let mut header = JwtHeader::new(Algorithm::RS512);
        header.kid = Some(rsa_key().kid.clone());
        let token = jsonwebtoken::encode(&header, &claims(), &rsa_key().encoding).expect("signs");

        // The test JWK carries "alg": "RS256", which pins the key.
        assert_eq!(
            verify(&token, &keys, NOW, &policy).expect_err("the token must be rejected"),
            Refusal::DisallowedAlgorithm
        );

        let mut unpinned = rsa_key().jwk.clone();
        unpinned
            .as_object_mut()
            .expect("jwk is an object")
            .remove("alg");
        let document = json!({"keys": [unpinned]});
        let keys = KeySet::from_jwks(document.to_string().as_bytes(), &policy.algorithms)
            .expect("usable")
            .0;
        assert!(verify(&token, &keys, NOW, &policy).is_ok());
    }

    #[test]
    fn missing_kid_is_rejected() {
        let header = JwtHeader::new(Algorithm::RS256);
        let token = jsonwebtoken::encode(&header, &claims(), &rsa_key().encoding).expect("signs");
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::MissingKid
        );
    }

    #[test]
    fn empty_kid_is_rejected() {
        let token = hand_signed(&json!({"alg": "RS256", "kid": ""}), &claims());
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::MissingKid
        );
    }

    #[test]
    fn other_token_type_is_rejected() {
        let kid = rsa_key().kid.clone();
        let access_token = hand_signed(
            &json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"}),
            &claims(),
        );
        assert_eq!(
            check(&access_token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );

        let lower_case = hand_signed(
            &json!({"alg": "RS256", "kid": kid, "typ": "jwt"}),
            &claims(),
        );
        assert!(check(&lower_case).is_ok());
        let media_type = hand_signed(
            &json!({"alg": "RS256", "kid": kid, "typ": "Application/JWT"}),
            &claims(),
        );
        assert!(check(&media_type).is_ok());
        let other_media_type = hand_signed(
            &json!({"alg": "RS256", "kid": kid, "typ": "application/at+jwt"}),
            &claims(),
        );
        assert_eq!(
            check(&other_media_type).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
        let untyped = hand_signed(&json!({"alg": "RS256", "kid": kid}), &claims());
        assert!(check(&untyped).is_ok());
    }

    #[test]
    fn checks_without_keys_need_no_key_set() {
        let policy = policy();
        let unknown_key = second_rsa_key().sign(&claims());
        assert_eq!(check_without_keys(&unknown_key, &policy), Ok(()));

        let none = format!(
            "{}.{}.{}",
            b64(json!({"alg": "none", "kid": "k"}).to_string().as_bytes()),
            b64(claims().to_string().as_bytes()),
            b64(b"x")
        );
        assert_eq!(
            check_without_keys(&none, &policy),
            Err(Refusal::DisallowedAlgorithm)
        );
        assert_eq!(check_without_keys("abc", &policy), Err(Refusal::Malformed));
        let untagged = hand_signed(&json!({"alg": "RS256"}), &claims());
        assert_eq!(
            check_without_keys(&untagged, &policy),
            Err(Refusal::MissingKid)
        );
    }

    #[test]
    fn unknown_kid_is_rejected() {
        let token = second_rsa_key().sign(&claims());
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::UnknownKid
        );
    }

    #[test]
    fn other_key_with_known_kid_fails_signature() {
        let mut header = JwtHeader::new(Algorithm::RS256);
        header.kid = Some(rsa_key().kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims(), &second_rsa_key().encoding).expect("signs");

        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadSignature
        );
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let token = rsa_key().sign(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(with_claim("sub", json!("admin")).to_string().as_bytes());
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);

        assert_eq!(
            check(&tampered).expect_err("the token must be rejected"),
            Refusal::BadSignature
        );
    }

    #[test]
    fn signature_is_checked_before_claims() {
        let mut header = JwtHeader::new(Algorithm::RS256);
        header.kid = Some(rsa_key().kid.clone());
        let expired = with_claim("exp", json!(1));
        let token =
            jsonwebtoken::encode(&header, &expired, &second_rsa_key().encoding).expect("signs");

        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::BadSignature
        );
    }

    #[test]
    fn two_part_token_is_rejected() {
        let token = rsa_key().sign(&claims());
        let two = token.rsplit_once('.').expect("three parts").0;
        assert_eq!(
            check(two).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn four_part_token_is_rejected() {
        let token = format!("{}.AAAA", rsa_key().sign(&claims()));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn padded_base64_is_rejected() {
        let token = rsa_key().sign(&claims());
        let (rest, signature) = token.rsplit_once('.').expect("three parts");
        assert_eq!(
            check(&format!("{rest}.{signature}=")).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn oversized_token_is_rejected() {
        let padding = "a".repeat(16 * 1024);
        let token = rsa_key().sign(&with_claim("pad", json!(padding)));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::TooLarge
        );
    }

    #[test]
    fn non_ascii_byte_in_header_is_rejected() {
        let token = rsa_key().sign(&claims());
        let mut bytes = token.into_bytes();
        bytes.insert(3, 0xC3);
        bytes.insert(4, 0xA9);
        let token = String::from_utf8(bytes).expect("valid UTF-8 with an é");
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn non_utf8_header_json_is_rejected() {
        let mut header = br#"{"alg":"RS256","kid":""#.to_vec();
        header.extend_from_slice(rsa_key().kid.as_bytes());
        header.extend_from_slice(b"\xff\"}");
        let signing_input = format!("{}.{}", b64(&header), b64(claims().to_string().as_bytes()));
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &rsa_key().encoding,
            Algorithm::RS256,
        )
        .expect("signs");
        let token = format!("{signing_input}.{signature}");
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn header_that_is_not_json_is_rejected() {
        let token = format!("{}.{}.{}", b64(b"hello"), b64(b"{}"), b64(b"sig"));
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn critical_header_is_rejected() {
        let header = json!({"alg": "RS256", "kid": rsa_key().kid, "crit": ["exp"], "exp": 1});
        let token = hand_signed(&header, &claims());
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn payload_that_is_not_an_object_is_rejected() {
        let token = hand_signed(
            &json!({"alg": "RS256", "kid": rsa_key().kid}),
            &json!([1, 2]),
        );
        assert_eq!(
            check(&token).expect_err("the token must be rejected"),
            Refusal::Malformed
        );
    }

    #[test]
    fn refusal_names_are_snake_case() {
        for refusal in [
            Refusal::TooLarge,
            Refusal::Malformed,
            Refusal::DisallowedAlgorithm,
            Refusal::MissingKid,
            Refusal::UnknownKid,
            Refusal::BadSignature,
            Refusal::Expired,
            Refusal::MissingExp,
            Refusal::NotYetValid,
            Refusal::IssuedInFuture,
            Refusal::BadAudience,
            Refusal::BadIssuer,
            Refusal::BadSubject,
            Refusal::InvalidClaims,
        ] {
            let name = refusal.as_str();
            assert!(
                name.bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte == b'_'),
                "{name}"
            );
        }
    }
}
