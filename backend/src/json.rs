//! The JSON body extractor used by every handler that takes a body.
//!
//! Unlike `axum::Json` it keeps the object's keys in order with duplicates,
//! so a body like `{"title": "a", "title": "b"}` is reported instead of
//! silently keeping one value, and its rejections use the problem+json
//! shape. It reads a top-level object only; handlers check the fields.
//!
//! Status codes: a Content-Encoding other than `identity` is 415, because
//! the body is not decoded. An empty body is 422 (a required field is
//! missing). A Content-Type other than `application/json`, or with a
//! charset that is not UTF-8 or US-ASCII (see [`UTF8_CHARSETS`]), is 415.
//! Invalid UTF-8 or malformed JSON is 400, and JSON that is not an object
//! is 422.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// A JSON object's members in body order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObject(pub Vec<(String, Value)>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Checked before the body is read, which would be wasted otherwise.
        check_content_encoding(request.headers())?;
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedBody("The request body could not be read.".into())
                }
            })?;
        parse_object(content_type.as_ref(), &body)
    }
}

/// Checks the media type and parses `body` as one JSON object. The
/// content coding is checked before the body is read.
///
/// # Errors
///
/// Returns the 422, 415 or 400 [`ApiError`] described in the module docs.
pub fn parse_object(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<JsonObject, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            "The request body is empty; send a JSON object.",
        )]));
    }

    if !content_type.is_some_and(is_json_media_type) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if !content_type.is_some_and(has_utf8_charset) {
        return Err(ApiError::UnsupportedCharset);
    }

    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::MalformedBody("The request body is not valid UTF-8.".into()))?;

    serde_json::from_str::<JsonObject>(text).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::validation(vec![FieldError::new(
            "body",
            "The request body must be a JSON object.",
        )]),
        _ => ApiError::MalformedBody(format!("The request body is not valid JSON: {error}.")),
    })
}

/// Rejects a body sent with any content coding but `identity`, in any
/// number of Content-Encoding lines and list entries.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(ApiError::UnsupportedContentEncoding);
        };
        let only_identity = text
            .split(',')
            .map(str::trim)
            .filter(|coding| !coding.is_empty())
            .all(|coding| coding.eq_ignore_ascii_case("identity"));
        if !only_identity {
            return Err(ApiError::UnsupportedContentEncoding);
        }
    }
    Ok(())
}

/// Charsets a JSON body may be labelled with: UTF-8 under every label
/// WHATWG's Encoding Standard gives it, and US-ASCII, a subset of UTF-8.
const UTF8_CHARSETS: [&str; 7] = [
    "utf-8",
    "utf8",
    "unicode-1-1-utf-8",
    "unicode11utf8",
    "unicode20utf8",
    "x-unicode20utf8",
    "us-ascii",
];

/// Returns whether a Content-Type value has no charset parameter or one of
/// [`UTF8_CHARSETS`], in any letter case and optionally quoted.
fn has_utf8_charset(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    text.split(';').skip(1).all(|parameter| {
        let Some((name, charset)) = parameter.split_once('=') else {
            return true;
        };
        let charset = charset.trim().trim_matches('"');
        !name.trim().eq_ignore_ascii_case("charset")
            || UTF8_CHARSETS
                .iter()
                .any(|utf8| charset.eq_ignore_ascii_case(utf8))
    })
}

/// Returns whether a Content-Type value is `application/json`, ignoring
/// case and any parameters such as `charset=utf-8`.
fn is_json_media_type(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = JsonObject;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            members.push((key, value));
        }
        Ok(JsonObject(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: HeaderValue = HeaderValue::from_static("application/json");

    fn status(result: Result<JsonObject, ApiError>) -> StatusCode {
        result.expect_err("must be rejected").status()
    }

    #[test]
    fn object_members_keep_order_and_duplicates() {
        let object = parse_object(Some(&JSON), br#"{"a": 1, "b": 2, "a": 3}"#).expect("valid");
        let keys: Vec<&str> = object.0.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "a"]);
    }

    #[test]
    fn charset_parameter_is_accepted() {
        let content_type = HeaderValue::from_static("Application/JSON; charset=utf-8");
        assert!(parse_object(Some(&content_type), b"{}").is_ok());
    }

    #[test]
    fn other_media_types_are_415() {
        for value in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            let content_type = HeaderValue::from_static(value);
            assert_eq!(
                status(parse_object(Some(&content_type), b"{}")),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{value}"
            );
        }
    }

    #[test]
    fn missing_content_type_is_415() {
        assert_eq!(
            status(parse_object(None, b"{}")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn empty_body_is_422_even_without_content_type() {
        assert_eq!(
            status(parse_object(None, b"")),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(parse_object(Some(&JSON), b"  \n")),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn malformed_json_is_400() {
        for body in [&b"{"[..], b"{\"a\": }", b"{} {}", b"nul"] {
            assert_eq!(
                status(parse_object(Some(&JSON), body)),
                StatusCode::BAD_REQUEST,
                "{body:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_400() {
        assert_eq!(
            status(parse_object(Some(&JSON), b"{\"title\": \"\xff\xfe\"}")),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn json_that_is_not_an_object_is_422() {
        for body in [&b"[]"[..], b"\"title\"", b"42", b"null"] {
            assert_eq!(
                status(parse_object(Some(&JSON), body)),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{body:?}"
            );
        }
    }

    #[test]
    fn other_charsets_are_415() {
        for value in [
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-16",
            "application/json;charset=\"latin1\"",
        ] {
            let content_type = HeaderValue::from_static(value);
            let rejection = parse_object(Some(&content_type), b"{}").expect_err(value);
            assert!(
                matches!(rejection, ApiError::UnsupportedCharset),
                "{value}: {rejection:?}"
            );
            assert_eq!(rejection.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    #[test]
    fn utf8_charset_in_any_case_is_accepted() {
        for value in [
            "application/json;charset=UTF-8",
            "application/json; CHARSET=\"utf-8\"",
            "application/json; charset=utf8",
            "application/json; charset=US-ASCII",
        ] {
            let content_type = HeaderValue::from_static(value);
            assert!(parse_object(Some(&content_type), b"{}").is_ok(), "{value}");
        }
    }

    #[test]
    fn content_encoding_other_than_identity_is_415() {
        for codings in [&["gzip"][..], &["identity, br"], &["identity", "deflate"]] {
            let mut headers = HeaderMap::new();
            for coding in codings {
                headers.append(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            }
            let rejection = check_content_encoding(&headers).expect_err("a coded body");
            assert!(
                matches!(rejection, ApiError::UnsupportedContentEncoding),
                "{codings:?}: {rejection:?}"
            );
            assert_eq!(rejection.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    #[test]
    fn identity_content_encoding_is_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("Identity"),
        );
        assert!(check_content_encoding(&headers).is_ok());
    }
}
