//! Session token claims in exactly the shape Hanko issues them, and the
//! `claims` object that Hanko's `/sessions/validate` returns.
//!
//! This module only builds and converts claim sets; signing lives in
//! [`crate::keys`] and verification in [`crate::verify`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// Hanko's default session lifespan: 12 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// The audience Hanko uses when neither `session.audience` nor a WebAuthn
/// relying party id is configured.
pub const DEFAULT_AUDIENCE: &str = "localhost";

/// The `email` claim: Hanko's primary email address of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailClaim {
    /// The email address.
    pub address: String,
    /// Whether this is the user's primary address.
    pub is_primary: bool,
    /// Whether the user has verified the address.
    pub is_verified: bool,
}

/// The payload of a Hanko session token.
///
/// Field order and optional fields follow Hanko: `email`, `username` and
/// `iss` are absent from the JSON when unset, never `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, a UUID string.
    pub sub: String,
    /// Issued-at time in seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry time in seconds since the Unix epoch: `iat` plus the lifespan.
    pub exp: i64,
    /// The audience; Hanko always sends a JSON array.
    pub aud: Vec<String>,
    /// The server-side session this token belongs to, a UUID string.
    pub session_id: String,
    /// The user's primary email address, when the user has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailClaim>,
    /// The username, when the user has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The issuer, present only when Hanko's `session.issuer` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The choices a caller makes about a new token. Everything else follows
/// Hanko's defaults.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The user id.
    pub subject: Uuid,
    /// The primary email address, marked primary and verified in the claim.
    pub email: Option<String>,
    /// The username claim.
    pub username: Option<String>,
    /// The `iss` claim.
    pub issuer: Option<String>,
    /// The audience list; empty means `["localhost"]`.
    pub audience: Vec<String>,
    /// The lifespan; `exp = iat + ttl`.
    pub ttl: Duration,
    /// The session id; `None` creates a new random one.
    pub session_id: Option<Uuid>,
    /// The issued-at time; `None` means now.
    pub issued_at: Option<SystemTime>,
}

impl TokenRequest {
    /// Starts a request for `subject` with Hanko's defaults: 12 hours,
    /// audience `["localhost"]`, a new session, no email.
    pub fn new(subject: Uuid) -> Self {
        Self {
            subject,
            email: None,
            username: None,
            issuer: None,
            audience: Vec::new(),
            ttl: DEFAULT_TTL,
            session_id: None,
            issued_at: None,
        }
    }

    /// Builds the claim set: `iat` from the clock (or `issued_at`), `exp`
    /// from the lifespan.
    pub fn claims(&self) -> Claims {
        let issued_at = self.issued_at.unwrap_or_else(SystemTime::now);
        let iat = unix_seconds(issued_at);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let audience = if self.audience.is_empty() {
            vec![DEFAULT_AUDIENCE.to_owned()]
        } else {
            self.audience.clone()
        };

        Claims {
            sub: self.subject.to_string(),
            iat,
            exp: iat.saturating_add(ttl),
            aud: audience,
            session_id: self.session_id.unwrap_or_else(Uuid::new_v4).to_string(),
            email: self.email.as_ref().map(|address| EmailClaim {
                address: address.clone(),
                is_primary: true,
                is_verified: true,
            }),
            username: self.username.clone(),
            iss: self.issuer.clone(),
        }
    }
}

/// The `claims` object of a `/sessions/validate` response, with Hanko's
/// field names and RFC 3339 timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedClaims {
    /// The user id.
    pub subject: String,
    /// When the token was issued, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// When the token expires, RFC 3339.
    pub expiration: String,
    /// The token's audience list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// The issuer, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The email claim, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailClaim>,
    /// The username, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The session id.
    pub session_id: String,
}

impl ValidatedClaims {
    /// Converts token claims into the response form, or returns `None` when
    /// `iat` or `exp` is outside the years 0000 to 9999, which RFC 3339
    /// cannot express.
    pub fn from_claims(claims: &Claims) -> Option<Self> {
        Some(Self {
            subject: claims.sub.clone(),
            issued_at: Some(rfc3339(claims.iat)?),
            expiration: rfc3339(claims.exp)?,
            audience: claims.aud.clone(),
            issuer: claims.iss.clone(),
            email: claims.email.clone(),
            username: claims.username.clone(),
            session_id: claims.session_id.clone(),
        })
    }
}

/// Returns `time` as whole seconds since the Unix epoch (negative before it).
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp, as Go's JSON encoder
/// writes `time.Time`, or returns `None` outside the years 0000 to 9999.
fn rfc3339(seconds: i64) -> Option<String> {
    // `from_unix_timestamp` accepts negative years, which `format` then
    // rejects, so both steps can fail.
    let time = OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    time.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Uuid {
        Uuid::parse_str("c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718").expect("valid UUID")
    }

    #[test]
    fn default_claims_have_hanko_shape() {
        let claims = TokenRequest::new(subject()).claims();
        let json = serde_json::to_value(&claims).expect("claims serialize");
        let object = json.as_object().expect("claims are an object");

        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["aud", "exp", "iat", "session_id", "sub"]);
        assert_eq!(json["sub"], "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718");
        assert_eq!(json["aud"], serde_json::json!(["localhost"]));
        assert!(json["iat"].is_i64());
        assert_eq!(claims.exp - claims.iat, 12 * 60 * 60);
        assert!(Uuid::parse_str(&claims.session_id).is_ok());
    }

    #[test]
    fn email_claim_is_an_object() {
        let mut request = TokenRequest::new(subject());
        request.email = Some("ada@example.com".to_owned());
        let json = serde_json::to_value(request.claims()).expect("claims serialize");

        assert_eq!(
            json["email"],
            serde_json::json!({"address": "ada@example.com", "is_primary": true, "is_verified": true})
        );
    }

    #[test]
    fn chosen_audience_ttl_and_issuer_are_used() {
        let mut request = TokenRequest::new(subject());
        request.audience = vec!["app.example.com".to_owned(), "api".to_owned()];
        request.ttl = Duration::from_secs(60);
        request.issuer = Some("https://auth.example.com".to_owned());
        request.issued_at = Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600));
        let claims = request.claims();

        assert_eq!(claims.aud, ["app.example.com", "api"]);
        assert_eq!(claims.iat, 1_767_225_600);
        assert_eq!(claims.exp, 1_767_225_660);
        assert_eq!(claims.iss.as_deref(), Some("https://auth.example.com"));
    }

    #[test]
    fn each_token_gets_a_new_session_id() {
        let request = TokenRequest::new(subject());

        assert_ne!(request.claims().session_id, request.claims().session_id);
    }

    #[test]
    fn validated_claims_use_rfc3339_times() {
        let mut request = TokenRequest::new(subject());
        request.issued_at = Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600));
        request.email = Some("ada@example.com".to_owned());
        let validated = ValidatedClaims::from_claims(&request.claims()).expect("times in range");
        let json = serde_json::to_value(&validated).expect("claims serialize");

        assert_eq!(json["subject"], "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718");
        assert_eq!(json["issued_at"], "2026-01-01T00:00:00Z");
        assert_eq!(json["expiration"], "2026-01-01T12:00:00Z");
        assert_eq!(json["audience"], serde_json::json!(["localhost"]));
        assert_eq!(json["email"]["address"], "ada@example.com");
        assert!(json.get("issuer").is_none());
        assert!(json.get("username").is_none());
    }

    #[test]
    fn rfc3339_covers_years_0000_to_9999() {
        // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
        let first = -62_167_219_200;
        let last = 253_402_300_799;

        assert_eq!(rfc3339(first).as_deref(), Some("0000-01-01T00:00:00Z"));
        assert_eq!(rfc3339(last).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert_eq!(rfc3339(first - 1), None);
        assert_eq!(rfc3339(last + 1), None);
        assert_eq!(rfc3339(-100_000_000_000), None);
        assert_eq!(rfc3339(i64::MIN), None);
        assert_eq!(rfc3339(i64::MAX), None);
    }

    #[test]
    fn out_of_range_times_give_no_validated_claims() {
        let in_range = TokenRequest::new(subject()).claims();
        let mut early_iat = in_range.clone();
        early_iat.iat = -100_000_000_000;
        let mut late_exp = in_range.clone();
        late_exp.exp = 253_402_300_800;

        assert!(ValidatedClaims::from_claims(&in_range).is_some());
        assert_eq!(ValidatedClaims::from_claims(&early_iat), None);
        assert_eq!(ValidatedClaims::from_claims(&late_exp), None);
    }
}
