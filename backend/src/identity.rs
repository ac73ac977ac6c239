//! The caller's identity, read from the headers edge-proxy sets after it
//! has verified the session token.
//!
//! Nothing here checks a token: item-api trusts these headers, so it must
//! only be reachable through edge-proxy. A user id that is missing,
//! repeated, empty, longer than [`MAX_HEADER_BYTES`] or not visible ASCII
//! is 401. The email may be absent, but when present it must appear once,
//! within the same length, as UTF-8 without control characters, because
//! edge-proxy passes an internationalised address on as UTF-8 bytes.

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
    /// The header contains bytes its value may not contain.
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

        let email = match read_text_header(headers, email_header) {
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
    let bytes = read_single(headers, name)?;
    if !bytes.iter().all(|byte| (0x21..=0x7e).contains(byte)) {
        return Err(HeaderProblem::NotPrintable);
    }

    let text = std::str::from_utf8(bytes).expect("visible ASCII is valid UTF-8");
    Ok(text.to_owned())
}

/// Reads one header that must appear exactly once and hold 1 to
/// [`MAX_HEADER_BYTES`] bytes of UTF-8 text without control characters.
/// Spaces are allowed, since an email address may quote them.
///
/// # Errors
///
/// Returns the [`HeaderProblem`] that makes the value unusable.
pub fn read_text_header(
    headers: &HeaderMap,
    name: &axum::http::HeaderName,
) -> Result<String, HeaderProblem> {
    let bytes = read_single(headers, name)?;
    let text = std::str::from_utf8(bytes).map_err(|_| HeaderProblem::NotPrintable)?;
    if text.chars().any(char::is_control) {
        return Err(HeaderProblem::NotPrintable);
    }
    Ok(text.to_owned())
}

/// Returns the bytes of a header that appears exactly once and contains 1 to
/// [`MAX_HEADER_BYTES`] bytes.
fn read_single<'a>(
    headers: &'a HeaderMap,
    name: &axum::http::HeaderName,
) -> Result<&'a [u8], HeaderProblem> {
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
    Ok(bytes)
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

    fn email_with(value: &[u8]) -> Result<Identity, ApiError> {
        let mut headers = headers_with(b"user");
        headers.insert(
            EMAIL,
            HeaderValue::from_bytes(value).expect("valid header bytes"),
        );
        Identity::from_headers(&headers, &USER, &EMAIL)
    }

    #[test]
    fn internationalised_email_is_read() {
        for value in [
            "jürgen@bücher.example",
            "\"a b\"@example.com",
            "用户@例子.example",
        ] {
            let identity = email_with(value.as_bytes()).expect(value);
            assert_eq!(identity.email.as_deref(), Some(value));
        }
    }

    #[test]
    fn email_with_control_or_invalid_utf8_is_unauthenticated() {
        for value in [
            &b"a\tb@example.com"[..],
            b"a\xc2\x85b@example.com",
            b"caf\xc3@example.com",
            b"\xff",
        ] {
            assert!(
                matches!(email_with(value), Err(ApiError::Unauthenticated(_))),
                "{value:?}"
            );
        }
    }

    #[test]
    fn email_is_read_when_present() {
        let mut headers = headers_with(b"user");
        headers.insert(EMAIL, HeaderValue::from_static("ada@example.com"));
        let identity = Identity::from_headers(&headers, &USER, &EMAIL).expect("valid");
        assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    }
}
