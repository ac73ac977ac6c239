//! The identity the proxy passes to the upstream, and the removal of every
//! client-sent header that could pass for it or for a forwarding header the
//! client may not send.
//!
//! Identity headers are matched case-insensitively with `_` read as `-`,
//! because many upstream frameworks (CGI, WSGI, some Node and PHP stacks)
//! fold `x_user_id` into the same variable as `X-User-Id`. Hop-by-hop headers
//! and the fields a client's `Connection` header nominates are removed by
//! Pingora before the proxy adds its own headers, so a client cannot use
//! `Connection: x-user-id` to strip the identity the proxy sets.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::Value;

use crate::auth::token::VerifiedToken;
use crate::config::ClaimHeader;
use crate::forwarding::{
    CLIENT_ADDRESS_HEADERS, FORWARDED_PREFIX, FORWARDING_HEADERS, SCHEME_HEADERS,
    TRUSTED_REQUEST_HEADERS,
};

/// The verified user, as passed to the upstream.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `sub` claim.
    pub subject: String,
    /// The `kid` that verified the token.
    pub kid: String,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The `session_id` claim, when it is a string.
    pub session_id: Option<String>,
    /// Headers to set on the upstream request, user id first. The names
    /// are `Bytes` because Pingora stores each inserted name. A clone of
    /// shared `Bytes` copies nothing, unlike a non-standard `HeaderName`.
    pub headers: Vec<(Bytes, HeaderValue)>,
}

impl Identity {
    /// Builds the identity for a verified token: the user id header and
    /// every configured claim header whose claim is present.
    pub fn from_verified(
        token: VerifiedToken,
        user_id_header: &HeaderName,
        claim_headers: &[ClaimHeader],
    ) -> Self {
        let mut headers = Vec::with_capacity(1 + claim_headers.len());
        let subject_value = HeaderValue::from_str(&token.subject)
            .expect("the verifier only accepts header-safe subjects");
        headers.push((wire_name(user_id_header), subject_value));

        let email_verified = token
            .claims
            .get("email")
            .and_then(|email| email.get("is_verified"))
            .and_then(Value::as_bool)
            == Some(true);
        for mapping in claim_headers {
            // Hanko puts unverified addresses in `email` too when its config
            // does not require verification. An upstream would trust the
            // address as the user's, as oauth2-proxy users expect by default.
            if !email_verified && is_unverified_email_claim(&mapping.path) {
                tracing::debug!(
                    claim = %mapping.claim,
                    "email.is_verified is not true; header left out"
                );
                continue;
            }
            let Some(value) = lookup(&token.claims, &mapping.path) else {
                continue;
            };
            match claim_header_value(value) {
                Some(header_value) => headers.push((wire_name(&mapping.header), header_value)),
                None => tracing::debug!(
                    claim = %mapping.claim,
                    "claim value cannot be sent as a header; header left out"
                ),
            }
        }

        let session_id = token
            .claims
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned);

        Self {
            subject: token.subject,
            kid: token.kid,
            expires_at: token.expires_at,
            session_id,
            headers,
        }
    }
}

/// Reports whether `path` names a field of Hanko's `email` claim other
/// than `is_verified`, which is sent only for a verified address.
fn is_unverified_email_claim(path: &[String]) -> bool {
    path.first().is_some_and(|first| first == "email")
        && path.get(1).is_none_or(|field| field != "is_verified")
}

fn wire_name(name: &HeaderName) -> Bytes {
    Bytes::copy_from_slice(name.as_str().as_bytes())
}

/// The header names that only the proxy may set.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    names: Vec<HeaderName>,
}

impl IdentityHeaders {
    /// Collects the user id header and every claim header.
    pub fn new(user_id_header: &HeaderName, claim_headers: &[ClaimHeader]) -> Self {
        let mut names = vec![user_id_header.clone()];
        names.extend(claim_headers.iter().map(|mapping| mapping.header.clone()));
        Self { names }
    }

    /// Reports whether a client header `name` could be read as one of the
    /// identity headers.
    pub fn matches(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|identity| same_ignoring_underscore(name, identity.as_str()))
    }

    /// Removes every header of `request` that matches an identity header,
    /// and every forwarding header the peer may not send (see
    /// [`is_spoofable_forwarding`]).
    pub fn strip(&self, request: &mut RequestHeader, via_trusted_proxy: bool) {
        // Header maps cannot be changed while iterating over them; spoofing
        // attempts are rare, so the list is usually empty and never allocates.
        let spoofed: Vec<HeaderName> = request
            .headers
            .keys()
            .filter(|name| {
                self.matches(name.as_str())
                    || is_spoofable_forwarding(name.as_str(), via_trusted_proxy)
            })
            .cloned()
            .collect();
        for name in spoofed {
            request.remove_header(&name);
        }
    }
}

/// Reports whether a forwarding header `name`, in lower case, must not
/// reach the upstream:
///
/// - any spelling with `_` (`X_Forwarded_For`), which CGI-style upstreams
///   read as the real header and a load balancer has no reason to send;
/// - the client address headers other than the two the proxy sets, from
///   any peer;
/// - every other `X-Forwarded-*` and scheme header, except, from a trusted
///   proxy, the ones describing the request. The ones the proxy sets
///   itself are replaced later anyway.
fn is_spoofable_forwarding(name: &str, via_trusted_proxy: bool) -> bool {
    if name.contains('_') {
        return starts_ignoring_underscore(name, FORWARDED_PREFIX)
            || FORWARDING_HEADERS
                .iter()
                .any(|header| same_ignoring_underscore(name, header.as_str()))
            || CLIENT_ADDRESS_HEADERS
                .iter()
                .chain(&SCHEME_HEADERS)
                .any(|header| same_ignoring_underscore(name, header));
    }
    if CLIENT_ADDRESS_HEADERS.contains(&name) {
        return true;
    }
    if !name.starts_with(FORWARDED_PREFIX) && !SCHEME_HEADERS.contains(&name) {
        return false;
    }
    let set_by_proxy = FORWARDING_HEADERS
        .iter()
        .any(|header| header.as_str() == name);
    let passes_from_trusted = via_trusted_proxy && TRUSTED_REQUEST_HEADERS.contains(&name);
    !set_by_proxy && !passes_from_trusted
}

/// Reports whether `name` starts with `prefix`, compared like
/// [`same_ignoring_underscore`].
fn starts_ignoring_underscore(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| same_ignoring_underscore(start, prefix))
}

/// Compares two header names case-insensitively with `_` equal to `-`.
fn same_ignoring_underscore(left: &str, right: &str) -> bool {
    let fold = |byte: u8| {
        if byte == b'_' {
            b'-'
        } else {
            byte.to_ascii_lowercase()
        }
    };
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .all(|(a, b)| fold(a) == fold(b))
}

fn lookup<'a>(claims: &'a serde_json::Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.get(key)?;
    }
    Some(value)
}

/// Turns a claim into a header value: strings as they are (UTF-8 bytes),
/// numbers and booleans in JSON form, arrays and objects as compact JSON.
/// `null` and values with control characters, tab and the C1 range
/// included, are left out: the HTTP header rules would let some of them
/// through, but an upstream could read them as separators.
fn claim_header_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::Null => return None,
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.chars().any(char::is_control) {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim_header(claim: &str, header: &str) -> ClaimHeader {
        ClaimHeader {
            claim: claim.to_owned(),
            path: claim.split('.').map(str::to_owned).collect(),
            header: HeaderName::from_bytes(header.as_bytes()).expect("valid name"),
        }
    }

    fn verified(claims: Value) -> VerifiedToken {
        VerifiedToken {
            kid: "k1".to_owned(),
            subject: "user-1".to_owned(),
            expires_at: 100,
            claims: claims.as_object().expect("object").clone(),
        }
    }

    #[test]
    fn identity_carries_user_id_and_claims() {
        let user = HeaderName::from_static("x-user-id");
        let mappings = [
            claim_header("email.address", "x-user-email"),
            claim_header("amr", "x-user-amr"),
            claim_header("email.is_verified", "x-email-verified"),
        ];
        let identity = Identity::from_verified(
            verified(
                json!({"email": {"address": "ada@example.com", "is_verified": true}, "amr": ["passkey"]}),
            ),
            &user,
            &mappings,
        );

        let headers: Vec<(&[u8], &[u8])> = identity
            .headers
            .iter()
            .map(|(name, value)| (name.as_ref(), value.as_bytes()))
            .collect();
        assert_eq!(
            headers,
            [
                (b"x-user-id".as_slice(), b"user-1".as_slice()),
                (b"x-user-email", b"ada@example.com"),
                (b"x-user-amr", br#"["passkey"]"#),
                (b"x-email-verified", b"true"),
            ]
        );
    }

    #[test]
    fn unverified_email_is_left_out() {
        let user = HeaderName::from_static("x-user-id");
        let mappings = [
            claim_header("email.address", "x-user-email"),
            claim_header("email", "x-user-email-object"),
            claim_header("email.is_verified", "x-email-verified"),
        ];
        for email in [
            json!({"address": "ada@example.com", "is_verified": false}),
            json!({"address": "ada@example.com"}),
            json!({"address": "ada@example.com", "is_verified": "true"}),
        ] {
            let identity =
                Identity::from_verified(verified(json!({ "email": email })), &user, &mappings);

            let names: Vec<&[u8]> = identity
                .headers
                .iter()
                .map(|(name, _)| name.as_ref())
                .collect();
            let expected_names: &[&[u8]] = if email["is_verified"].is_null() {
                &[b"x-user-id"]
            } else {
                &[b"x-user-id", b"x-email-verified"]
            };
            assert_eq!(names, expected_names, "{email}");
        }
    }

    #[test]
    fn missing_claim_leaves_header_out() {
        let user = HeaderName::from_static("x-user-id");
        let identity = Identity::from_verified(
            verified(json!({})),
            &user,
            &[claim_header("email.address", "x-user-email")],
        );
        assert_eq!(identity.headers.len(), 1);
    }

    #[test]
    fn claim_with_control_character_is_left_out() {
        let user = HeaderName::from_static("x-user-id");
        for address in [
            "a@b\r\nx-admin: 1",
            "a\tb@example.com",
            "a\u{85}b@example.com",
        ] {
            let identity = Identity::from_verified(
                verified(json!({"email": {"address": address, "is_verified": true}})),
                &user,
                &[claim_header("email.address", "x-user-email")],
            );
            assert_eq!(identity.headers.len(), 1, "{address:?}");
        }
    }

    #[test]
    fn utf8_claim_is_sent_as_is() {
        let user = HeaderName::from_static("x-user-id");
        let identity = Identity::from_verified(
            verified(json!({"email": {"address": "jürgen@bücher.example", "is_verified": true}})),
            &user,
            &[claim_header("email.address", "x-user-email")],
        );
        assert_eq!(identity.headers.len(), 2);
        assert_eq!(
            identity.headers[1].1.as_bytes(),
            "jürgen@bücher.example".as_bytes()
        );
    }

    #[test]
    fn spoofing_variants_match() {
        let identity = IdentityHeaders::new(&HeaderName::from_static("x-user-id"), &[]);
        for name in ["x-user-id", "x_user_id", "x-user_id", "X-USER-ID"] {
            assert!(identity.matches(name), "{name}");
        }
        for name in ["x-user-ids", "x-user", "xx-user-id", "x.user.id"] {
            assert!(!identity.matches(name), "{name}");
        }
    }

    /// Sends `names` through `strip` and returns the names left, sorted.
    fn left_after_strip(names: &[&str], via_trusted_proxy: bool) -> Vec<String> {
        let identity = IdentityHeaders::new(
            &HeaderName::from_static("x-user-id"),
            &[claim_header("email.address", "x-user-email")],
        );
        let mut request = RequestHeader::build("GET", b"/", None).expect("request");
        for name in names {
            request
                .append_header(name.to_string(), "v")
                .expect("valid header");
        }

        identity.strip(&mut request, via_trusted_proxy);

        let mut left: Vec<String> = request
            .headers
            .keys()
            .map(|name| name.to_string())
            .collect();
        left.sort_unstable();
        left
    }

    #[test]
    fn strip_removes_spellings_from_any_peer() {
        let names = [
            "X-User-Id",
            "x_user_id",
            "X-USER_EMAIL",
            "X_Forwarded_For",
            "x_real_ip",
            "X_Forwarded_Port",
            "True_Client_IP",
            "front_end_https",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-Forwarded",
            "Client-IP",
            "X-Forwarded-User",
            "X-Forwarded-Client-Cert",
            "x-other",
            "x-forwarded-for",
            "x-forwarded-port",
        ];

        // X-Forwarded-For stays for the proxy to replace.
        assert_eq!(
            left_after_strip(&names, true),
            ["x-forwarded-for", "x-forwarded-port", "x-other"]
        );
        assert_eq!(
            left_after_strip(&names, false),
            ["x-forwarded-for", "x-other"]
        );
    }

    #[test]
    fn only_a_trusted_proxy_describes_the_request() {
        let names = [
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Forwarded-Ssl",
            "X-Forwarded-Scheme",
            "X-Forwarded-Protocol",
            "X-Forwarded-Server",
            "Front-End-Https",
            "X-Url-Scheme",
            "X-Scheme",
        ];
        let mut expected: Vec<String> = names.iter().map(|name| name.to_lowercase()).collect();
        expected.sort_unstable();

        assert_eq!(left_after_strip(&names, true), expected);
        assert!(left_after_strip(&names, false).is_empty());
        // Names that only look alike stay.
        let lookalikes = [
            "x-forwardedx",
            "x-forwarded-",
            "x-forwarder-for",
            "x-url-schemes",
        ];
        assert_eq!(left_after_strip(&lookalikes, false).len(), 3);
    }
}
