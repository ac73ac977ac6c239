//! RSA signing keys in the shape Hanko uses: RS256, a random UUID as `kid`,
//! published as a JWK with `n` and `e`.
//!
//! Key generation and PEM storage live here so that `hanko-dev` and the
//! integration tests mint tokens the same way. This module does no file I/O.

use anyhow::{Context, Result, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Default RSA key size for new keys, in bits; Hanko's own keys are 4096
/// bits, but 2048 keeps test and development start-up fast.
pub const DEFAULT_KEY_BITS: usize = 2048;

const PEM_LABEL: &str = "PRIVATE KEY";

/// An RSA private key with its key id, able to sign RS256 tokens.
pub struct SigningKey {
    kid: String,
    pkcs8_der: Vec<u8>,
    encoding_key: EncodingKey,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

impl SigningKey {
    /// Generates a new RSA key of `bits` bits (2048, 3072 or 4096) with a
    /// random UUID as `kid`.
    ///
    /// # Errors
    ///
    /// Fails for an unsupported size or when the crypto library fails.
    pub fn generate(bits: usize) -> Result<Self> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            other => bail!("unsupported RSA key size {other}; use 2048, 3072 or 4096"),
        };
        let key_pair = KeyPair::generate(size).context("generating an RSA key failed")?;
        let pkcs8 = key_pair
            .as_der()
            .context("encoding the RSA key as PKCS#8 failed")?;
        Self::from_pkcs8_der(uuid::Uuid::new_v4().to_string(), pkcs8.as_ref())
    }

    /// Builds a key from its `kid` and an unencrypted PKCS#8 PEM document.
    ///
    /// # Errors
    ///
    /// Fails when the PEM is malformed or holds no RSA private key.
    pub fn from_pem(kid: impl Into<String>, pem: &str) -> Result<Self> {
        let der = decode_pem(pem)?;
        Self::from_pkcs8_der(kid.into(), &der)
    }

    fn from_pkcs8_der(kid: String, der: &[u8]) -> Result<Self> {
        let key_pair = KeyPair::from_pkcs8(der)
            .map_err(|error| anyhow::anyhow!("not an RSA PKCS#8 private key: {error}"))?;
        let public_key = key_pair.public_key();
        let modulus = public_key
            .modulus()
            .big_endian_without_leading_zero()
            .to_vec();
        let exponent = public_key
            .exponent()
            .big_endian_without_leading_zero()
            .to_vec();
        let pem = encode_pem(der);
        let encoding_key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .context("loading the RSA key for signing failed")?;

        Ok(Self {
            kid,
            pkcs8_der: der.to_vec(),
            encoding_key,
            modulus,
            exponent,
        })
    }

    /// Returns the key id that tokens carry in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Returns the modulus size in bits.
    pub fn bits(&self) -> usize {
        self.modulus.len() * 8
    }

    /// Returns the private key as a PKCS#8 PEM document.
    pub fn to_pem(&self) -> String {
        encode_pem(&self.pkcs8_der)
    }

    /// Returns the key for signing with other algorithms or headers.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }

    /// Returns the public key as a JWK, the way Hanko publishes it:
    /// `kty`, `alg`, `use`, `kid`, `n` and `e`.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.modulus),
            "e": URL_SAFE_NO_PAD.encode(&self.exponent),
        })
    }

    /// Returns the public key in PEM form (`BEGIN PUBLIC KEY`, X.509
    /// SubjectPublicKeyInfo), as tools such as HAProxy expect it.
    ///
    /// # Errors
    ///
    /// Fails when the crypto library cannot encode the key.
    pub fn public_pem(&self) -> Result<String> {
        let key_pair = KeyPair::from_pkcs8(&self.pkcs8_der)
            .map_err(|error| anyhow::anyhow!("not an RSA PKCS#8 private key: {error}"))?;
        let der = key_pair
            .public_key()
            .as_der()
            .context("encoding the public key failed")?;
        Ok(encode_pem_with_label(der.as_ref(), "PUBLIC KEY"))
    }

    /// Signs `claims` as an RS256 JWT with the header Hanko sends:
    /// `{"alg":"RS256","kid":<kid>,"typ":"JWT"}`.
    ///
    /// # Errors
    ///
    /// Fails when the claims cannot be serialized or signing fails.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding_key).context("signing a token failed")
    }
}

fn encode_pem(der: &[u8]) -> String {
    encode_pem_with_label(der, PEM_LABEL)
}

fn encode_pem_with_label(der: &[u8], label: &str) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn decode_pem(pem: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = pem
        .find(&begin)
        .with_context(|| format!("PEM document has no `{begin}` line"))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .with_context(|| format!("PEM document has no `{end}` line"))?
        + start;
    let body: String = pem[start..stop].split_whitespace().collect();
    STANDARD
        .decode(body)
        .context("PEM body is not valid base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_key() {
        let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key generation works");
        let again = SigningKey::from_pem(key.kid(), &key.to_pem()).expect("PEM parses");

        assert_eq!(key.public_jwk(), again.public_jwk());
        assert_eq!(again.bits(), 2048);
    }

    #[test]
    fn signed_token_verifies_with_published_jwk() {
        let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key generation works");
        let claims =
            serde_json::json!({"sub": "user", "exp": 4_102_444_800_u64, "aud": ["localhost"]});
        let token = key.sign(&claims).expect("signing works");

        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(key.public_jwk()).expect("the JWK parses");
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("the JWK is usable");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&["localhost"]);
        let header = jsonwebtoken::decode_header(&token).expect("header parses");
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
            .expect("token verifies");

        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(data.claims["sub"], "user");
    }
}
