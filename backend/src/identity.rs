//! The caller's identity, read from the headers edge-proxy sets after it
//! has verified the session token.
//!
//! Nothing here checks a token: item-api trusts these headers, so it must
//! only be reachable through edge-proxy. A header that is missing, repeated,
//! empty, longer than [`MAX_HEADER_BYTES`] or not printable ASCII is 401.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

/// Maximum length of the user-id and email headers, in bytes.
pub const MAX_HEADER_BYTES: usize = 255;

/// The caller's identity: the user id (Hanko's `sub`) and, when edge-proxy
/// forwards it, the email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's user id.
    pub user_id: String,
    /// The caller's email address, if forwarded.
    pub email: Option<String>,
}

/// Reason a header cannot identify the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// The header is absent.
    #[error("missing")]
    Missing,
    /// The header appears more than once.
    #[error("repeated")]
    Repeated,
    /// The header is present but empty.
    #[error("empty")]
    Empty,
    /// The header is longer than [`MAX_HEADER_BYTES`].
    #[error("too long")]
    TooLong,
    /// The header contains bytes other than visible ASCII.
    #[error("not printable")]
    NotPrintable,
}

impl Identity {
    /// Reads the identity from request headers.
    ///
    /// # Errors
    ///
    /// Returns [`ApiError::Unauthenticated`] when the user-id header is
    /// unusable, or when an email header is present but unusable.
    pub fn from_headers(
        headers: &HeaderMap,
        user_id_header: &axum::http::HeaderName,
        email_header: &axum::http::HeaderName,
    ) -> Result<Self, ApiError> {
        let user_id = read_header(headers, user_id_header).map_err(|problem| {
            ApiError::Unauthenticated(match problem {
                HeaderProblem::Missing => "The request has no user id; send it through edge-proxy.",
                _ => "The request's user id header is invalid.",
            })
        })?;

        let email = match read_header(headers, email_header) {
            Ok(email) => Some(email),
            Err(HeaderProblem::Missing | HeaderProblem::Empty) => None,
            Err(_) => {
                return Err(ApiError::Unauthenticated(
                    "The request's email header is invalid.",
                ));
            }
        };

        Ok(Self { user_id, email })
    }
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Self::from_headers(&parts.headers, state.user_id_header(), state.email_header())
    }
}

/// Reads one header that must appear exactly once and hold 1 to
/// [`MAX_HEADER_BYTES`] bytes of visible ASCII (0x21 to 0x7E).
///
/// # Errors
///
/// Returns the [`HeaderProblem`] that makes the value unusable.
pub fn read_header(
    headers: &HeaderMap,
    name: &axum::http::HeaderName,
) -> Result<String, HeaderProblem> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(HeaderProblem::Missing)?;
    if values.next().is_some() {
        return Err(HeaderProblem::Repeated);
    }

    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(HeaderProblem::Empty);
    }
    if bytes.len() > MAX_HEADER_BYTES {
        return Err(HeaderProblem::TooLong);
    }
    if !bytes.iter().all(|byte| (0x21..=0x7e).contains(byte)) {
        return Err(HeaderProblem::NotPrintable);
    }

    let text = std::str::from_utf8(bytes).expect("visible ASCII is valid UTF-8");
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    const USER: HeaderName = HeaderName::from_static("x-user-id");
    const EMAIL: HeaderName = HeaderName::from_static("x-user-email");

    fn headers_with(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER,
            HeaderValue::from_bytes(value).expect("valid header bytes"),
        );
        headers
    }

    #[test]
    fn valid_user_id_is_read() {
        let headers = headers_with(b"c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718");
        let identity = Identity::from_headers(&headers, &USER, &EMAIL).expect("valid");
        assert_eq!(identity.user_id, "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718");
        assert_eq!(identity.email, None);
    }

    #[test]
    fn missing_user_id_is_missing() {
        assert_eq!(
            read_header(&HeaderMap::new(), &USER),
            Err(HeaderProblem::Missing)
        );
    }

    #[test]
    fn empty_user_id_is_empty() {
        assert_eq!(
            read_header(&headers_with(b""), &USER),
            Err(HeaderProblem::Empty)
        );
    }

    #[test]
    fn user_id_of_255_bytes_is_accepted() {
        let value = vec![b'a'; MAX_HEADER_BYTES];
        assert!(read_header(&headers_with(&value), &USER).is_ok());
    }

    #[test]
    fn user_id_of_256_bytes_is_too_long() {
        let value = vec![b'a'; MAX_HEADER_BYTES + 1];
        assert_eq!(
            read_header(&headers_with(&value), &USER),
            Err(HeaderProblem::TooLong)
        );
    }

    #[test]
    fn user_id_with_space_tab_or_high_bytes_is_not_printable() {
        for value in [&b"a b"[..], b"a\tb", b"caf\xc3\xa9", b"\x80"] {
            assert_eq!(
                read_header(&headers_with(value), &USER),
                Err(HeaderProblem::NotPrintable),
                "{value:?}"
            );
        }
    }

    #[test]
    fn repeated_user_id_is_rejected() {
        let mut headers = headers_with(b"a");
        headers.append(USER, HeaderValue::from_static("b"));
        assert_eq!(read_header(&headers, &USER), Err(HeaderProblem::Repeated));
    }

    #[test]
    fn invalid_email_is_unauthenticated() {
        let mut headers = headers_with(b"user");
        headers.insert(EMAIL, HeaderValue::from_static("a b@example.com"));
        assert!(matches!(
            Identity::from_headers(&headers, &USER, &EMAIL),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn email_is_read_when_present() {
        let mut headers = headers_with(b"user");
        headers.insert(EMAIL, HeaderValue::from_static("ada@example.com"));
        let identity = Identity::from_headers(&headers, &USER, &EMAIL).expect("valid");
        assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    }
}
