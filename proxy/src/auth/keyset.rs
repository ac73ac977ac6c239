//! A parsed key set: the JWKS document turned into keys ready to verify
//! signatures, indexed by `kid`.
//!
//! Parsing is pure (bytes in, keys out) and lenient per key: a key the proxy
//! cannot use (unknown type, RSA under 2048 bits, no `kid`, not for
//! signatures, an algorithm off the allow-list) is skipped with a reason
//! instead of failing the whole set, because key sets may legitimately carry
//! keys for other consumers. Fetching and caching live in `jwks`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{self as aws_signature, ParsedPublicKey, RsaParameters};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// One public key and the algorithms it may verify.
pub struct VerifyingKey {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
    /// An RSA key parsed once per allowed algorithm. Verifying with it skips
    /// rebuilding the RSA key from `n` and `e` and its Montgomery context,
    /// which jsonwebtoken 12 does on every call. Empty for EC and OKP keys.
    parsed_rsa: Vec<(Algorithm, ParsedPublicKey)>,
}

impl VerifyingKey {
    /// Returns the key in the form the crypto library takes.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Returns the pre-parsed RSA key for `algorithm`, or `None` for a key
    /// of another type or an algorithm the key may not verify.
    pub fn parsed_rsa(&self, algorithm: Algorithm) -> Option<&ParsedPublicKey> {
        self.parsed_rsa
            .iter()
            .find(|(candidate, _)| *candidate == algorithm)
            .map(|(_, parsed)| parsed)
    }

    /// Reports whether this key may verify a signature made with `algorithm`.
    pub fn supports(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("VerifyingKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one key set document, by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

/// A key that was left out of a set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The key's `kid`, or `None` when it had none.
    pub kid: Option<String>,
    /// The reason the key cannot be used.
    pub reason: String,
}

/// The reason a key set document yields no keys.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// The body is not a JSON object with a `keys` array.
    #[error("the key set is not a JSON object with a \"keys\" array: {0}")]
    NotAKeySet(String),
    /// The document parsed but none of its keys is usable.
    #[error("the key set holds no usable key ({skipped} skipped)")]
    NoUsableKey {
        /// How many keys were skipped.
        skipped: usize,
    },
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys usable with `allowed`.
    ///
    /// # Errors
    ///
    /// Fails when the document is not a key set or contains no usable key; the
    /// skipped keys come back alongside a successful set.
    pub fn from_jwks(
        body: &[u8],
        allowed: &[Algorithm],
    ) -> Result<(Self, Vec<SkippedKey>), KeySetError> {
        let document: Value = serde_json::from_slice(body)
            .map_err(|error| KeySetError::NotAKeySet(error.to_string()))?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(KeySetError::NotAKeySet("no \"keys\" array".to_owned()));
        };

        let mut keys = HashMap::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for entry in entries {
            let kid = entry
                .get("kid")
                .and_then(Value::as_str)
                .filter(|kid| !kid.is_empty())
                .map(str::to_owned);
            let result = match &kid {
                None => Err("the key has no kid".to_owned()),
                Some(kid) if keys.contains_key(kid) => {
                    Err("another key in the set has the same kid".to_owned())
                }
                Some(_) => parse_key(entry, allowed),
            };
            match (kid, result) {
                (Some(kid), Ok(key)) => {
                    keys.insert(kid, key);
                }
                (kid, Err(reason)) => skipped.push(SkippedKey { kid, reason }),
                (None, Ok(_)) => unreachable!("a key without kid is never parsed"),
            }
        }

        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey {
                skipped: skipped.len(),
            });
        }
        Ok((Self { keys }, skipped))
    }

    /// Returns the key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// Reports whether the set contains a key with this `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Returns the number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Reports whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_key(entry: &Value, allowed: &[Algorithm]) -> Result<VerifyingKey, String> {
    if let Some(key_use) = entry.get("use")
        && key_use.as_str() != Some("sig")
    {
        return Err(format!("the key is for {key_use}, not for signatures"));
    }
    if let Some(operations) = entry.get("key_ops") {
        let verifies = operations
            .as_array()
            .is_some_and(|list| list.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include \"verify\"".to_owned());
        }
    }

    let mut rsa_components = None;
    let (decoding, family) = match entry.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let (modulus, exponent) = parse_rsa(entry)?;
            let decoding = DecodingKey::from_rsa_raw_components(&modulus, &exponent);
            rsa_components = Some((modulus, exponent));
            (decoding, rsa_algorithms())
        }
        Some("EC") => parse_ec(entry)?,
        Some("OKP") => parse_okp(entry)?,
        Some(other) => return Err(format!("key type {other:?} is not supported")),
        None => return Err("the key has no kty".to_owned()),
    };

    let candidates: Vec<Algorithm> = match entry.get("alg") {
        None => family,
        Some(alg) => {
            let parsed = alg
                .as_str()
                .and_then(|name| Algorithm::from_str(name).ok())
                .filter(|algorithm| family.contains(algorithm));
            match parsed {
                Some(algorithm) => vec![algorithm],
                None => return Err(format!("alg {alg} does not fit the key type")),
            }
        }
    };
    let algorithms: Vec<Algorithm> = candidates
        .into_iter()
        .filter(|algorithm| allowed.contains(algorithm))
        .collect();
    if algorithms.is_empty() {
        return Err("the key fits none of the allowed algorithms".to_owned());
    }

    let parsed_rsa = match rsa_components {
        Some((modulus, exponent)) => parse_rsa_per_algorithm(&modulus, &exponent, &algorithms)?,
        None => Vec::new(),
    };

    Ok(VerifyingKey {
        decoding,
        algorithms,
        parsed_rsa,
    })
}

/// Parses the RSA key once for each of `algorithms`, with the same
/// aws-lc-rs parameters jsonwebtoken 12 verifies with (moduli of 2048 to
/// 8192 bits).
fn parse_rsa_per_algorithm(
    modulus: &[u8],
    exponent: &[u8],
    algorithms: &[Algorithm],
) -> Result<Vec<(Algorithm, ParsedPublicKey)>, String> {
    let components = aws_signature::RsaPublicKeyComponents {
        n: modulus,
        e: exponent,
    };
    algorithms
        .iter()
        .map(|&algorithm| {
            let parameters = rsa_parameters(algorithm)
                .ok_or_else(|| format!("{algorithm:?} is not an RSA algorithm"))?;
            let parsed = components
                .to_parsed_public_key(parameters)
                .map_err(|error| format!("the RSA key is invalid: {error}"))?;
            Ok((algorithm, parsed))
        })
        .collect()
}

fn rsa_parameters(algorithm: Algorithm) -> Option<&'static RsaParameters> {
    match algorithm {
        Algorithm::RS256 => Some(&aws_signature::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&aws_signature::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&aws_signature::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&aws_signature::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&aws_signature::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&aws_signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

fn rsa_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ]
}

/// Returns the modulus and exponent without leading zero bytes, after the
/// size checks.
fn parse_rsa(entry: &Value) -> Result<(Vec<u8>, Vec<u8>), String> {
    let modulus = decode_member(entry, "n")?;
    let exponent = decode_member(entry, "e")?;
    let modulus = strip_leading_zeros(&modulus);
    let exponent = strip_leading_zeros(&exponent);
    let bits = bit_length(modulus);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA modulus has {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    if exponent.is_empty() {
        return Err("the RSA exponent is zero".to_owned());
    }
    Ok((modulus.to_vec(), exponent.to_vec()))
}

fn parse_ec(entry: &Value) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let (algorithm, coordinate_bytes) = match entry.get("crv").and_then(Value::as_str) {
        Some("P-256") => (Algorithm::ES256, 32),
        Some("P-384") => (Algorithm::ES384, 48),
        other => return Err(format!("EC curve {other:?} is not supported")),
    };
    let x = member_str(entry, "x")?;
    let y = member_str(entry, "y")?;
    for (name, value) in [("x", x), ("y", y)] {
        let decoded = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("{name} is not base64url"))?;
        if decoded.len() != coordinate_bytes {
            return Err(format!("{name} has the wrong length for the curve"));
        }
    }
    let key = DecodingKey::from_ec_components(x, y).map_err(|error| error.to_string())?;
    Ok((key, vec![algorithm]))
}

fn parse_okp(entry: &Value) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if entry.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("only the Ed25519 curve is supported for OKP keys".to_owned());
    }
    let x = member_str(entry, "x")?;
    let decoded = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|_| "x is not base64url".to_owned())?;
    if decoded.len() != 32 {
        return Err("x has the wrong length for Ed25519".to_owned());
    }
    let key = DecodingKey::from_ed_components(x).map_err(|error| error.to_string())?;
    Ok((key, vec![Algorithm::EdDSA]))
}

fn member_str<'a>(entry: &'a Value, name: &str) -> Result<&'a str, String> {
    entry
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the key has no {name}"))
}

fn decode_member(entry: &Value, name: &str) -> Result<Vec<u8>, String> {
    let value = member_str(entry, name)?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{name} is not base64url"))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_length(big_endian: &[u8]) -> usize {
    match big_endian.first() {
        None => 0,
        Some(first) => (big_endian.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::{TestKey, rsa_key};
    use serde_json::json;

    fn parse(document: Value) -> Result<(KeySet, Vec<SkippedKey>), KeySetError> {
        KeySet::from_jwks(
            document.to_string().as_bytes(),
            &[Algorithm::RS256, Algorithm::ES256],
        )
    }

    fn short_rsa_jwk(kid: &str, bits: usize) -> Value {
        let mut modulus = vec![0xFF_u8; bits / 8];
        modulus[0] = 0x80;
        json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&modulus), "e": "AQAB"})
    }

    #[test]
    fn hanko_shaped_set_parses() {
        let key: &TestKey = rsa_key();
        let (set, skipped) = parse(json!({"keys": [key.jwk.clone()]})).expect("parses");

        assert_eq!(set.len(), 1);
        assert!(skipped.is_empty());
        let verifying = set.get(&key.kid).expect("key by kid");
        assert!(verifying.supports(Algorithm::RS256));
        assert!(!verifying.supports(Algorithm::RS512));
    }

    #[test]
    fn rsa_key_parsed_per_allowed_algorithm() {
        let key = rsa_key();
        let (set, _) = parse(json!({"keys": [key.jwk.clone()]})).expect("parses");
        let verifying = set.get(&key.kid).expect("key by kid");

        assert!(verifying.parsed_rsa(Algorithm::RS256).is_some());
        assert!(verifying.parsed_rsa(Algorithm::RS512).is_none());
        assert!(verifying.parsed_rsa(Algorithm::ES256).is_none());
    }

    #[test]
    fn short_rsa_key_is_skipped() {
        let key = rsa_key();
        let (set, skipped) =
            parse(json!({"keys": [short_rsa_jwk("short", 1024), key.jwk.clone()]}))
                .expect("parses");

        assert_eq!(set.len(), 1);
        assert!(!set.contains("short"));
        assert_eq!(skipped[0].kid.as_deref(), Some("short"));
        assert!(skipped[0].reason.contains("1024 bits"), "{skipped:?}");
    }

    #[test]
    fn leading_zero_does_not_count_as_bits() {
        let mut jwk = short_rsa_jwk("padded", 2040);
        let mut modulus = URL_SAFE_NO_PAD
            .decode(jwk["n"].as_str().expect("n"))
            .expect("base64");
        modulus.insert(0, 0);
        jwk["n"] = json!(URL_SAFE_NO_PAD.encode(&modulus));

        let error = parse(json!({"keys": [jwk]})).expect_err("no usable key");
        assert!(matches!(error, KeySetError::NoUsableKey { skipped: 1 }));
    }

    #[test]
    fn exactly_2048_bits_is_accepted() {
        let (set, _) = parse(json!({"keys": [short_rsa_jwk("k", 2048)]})).expect("parses");
        assert!(set.contains("k"));
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let key = rsa_key();
        let document = json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
            "not an object",
            key.jwk.clone(),
        ]});
        let (set, skipped) = parse(document).expect("parses");

        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 6, "{skipped:?}");
    }

    #[test]
    fn key_alg_off_the_allow_list_is_skipped() {
        let key = rsa_key();
        let mut jwk = key.jwk.clone();
        jwk["alg"] = json!("RS512");

        let error = parse(json!({"keys": [jwk]})).expect_err("no usable key");
        assert!(matches!(error, KeySetError::NoUsableKey { skipped: 1 }));
    }

    #[test]
    fn key_alg_of_another_family_is_skipped() {
        let key = rsa_key();
        let mut jwk = key.jwk.clone();
        jwk["alg"] = json!("ES256");

        assert!(parse(json!({"keys": [jwk]})).is_err());
    }

    #[test]
    fn duplicate_kid_keeps_the_first() {
        let key = rsa_key();
        let mut second = short_rsa_jwk("x", 4096);
        second["kid"] = json!(key.kid.clone());
        let (set, skipped) = parse(json!({"keys": [key.jwk.clone(), second]})).expect("parses");

        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn non_key_set_document_is_an_error() {
        assert!(matches!(
            KeySet::from_jwks(b"<html>", &[Algorithm::RS256]),
            Err(KeySetError::NotAKeySet(_))
        ));
        assert!(matches!(
            parse(json!({"kids": []})),
            Err(KeySetError::NotAKeySet(_))
        ));
    }

    #[test]
    fn empty_set_is_an_error() {
        assert!(matches!(
            parse(json!({"keys": []})),
            Err(KeySetError::NoUsableKey { skipped: 0 })
        ));
    }
}
