//! Finding the token in a request: the `Authorization: Bearer` header, else
//! the session cookie.
//!
//! When an `Authorization` header is present it alone decides, as Hanko's own
//! middleware does: a non-Bearer scheme means "no token" even if a cookie is
//! sent. Two `Authorization` headers are ambiguous and rejected, since a
//! front server and the proxy could each read a different one. Nothing here
//! verifies or logs the token.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// The place a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// The session cookie.
    Cookie,
}

impl TokenSource {
    /// Returns the name used in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Cookie => "cookie",
        }
    }
}

/// The outcome of looking for a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Extracted<'a> {
    /// No token: no `Authorization` header and no session cookie, or an
    /// `Authorization` header with another scheme than Bearer.
    None,
    /// A token candidate, not yet verified.
    Token(&'a str, TokenSource),
    /// A Bearer header or session cookie whose value cannot be a token
    /// (empty, or not valid UTF-8).
    Malformed(TokenSource),
    /// More than one `Authorization` header.
    Ambiguous,
}

/// Finds the token in `headers`, reading the cookie named `cookie_name` only
/// when no `Authorization` header is present.
pub fn extract<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Extracted<'a> {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Extracted::Ambiguous;
        }
        return from_authorization(value.as_bytes());
    }

    for header in headers.get_all(COOKIE) {
        if let Some(value) = find_cookie(header.as_bytes(), cookie_name.as_bytes()) {
            return match std::str::from_utf8(value) {
                Ok(token) if !token.is_empty() => Extracted::Token(token, TokenSource::Cookie),
                _ => Extracted::Malformed(TokenSource::Cookie),
            };
        }
    }
    Extracted::None
}

/// Reads `Bearer <token>`: the scheme is case-insensitive (RFC 9110 section
/// 11.1) and any run of spaces or tabs may surround the parts.
fn from_authorization(value: &[u8]) -> Extracted<'_> {
    let value = value.trim_ascii();
    let scheme_end = value
        .iter()
        .position(|byte| *byte == b' ' || *byte == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Extracted::None;
    }
    let token = rest.trim_ascii();
    match std::str::from_utf8(token) {
        Ok(token) if !token.is_empty() => Extracted::Token(token, TokenSource::Header),
        _ => Extracted::Malformed(TokenSource::Header),
    }
}

/// Returns the value of the first cookie called `name` in one `Cookie`
/// header, without surrounding double quotes (RFC 6265 section 4.2.1).
fn find_cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|byte| *byte == b';').find_map(|pair| {
        let (cookie_name, value) = split_cookie(pair)?;
        if cookie_name != name {
            return None;
        }
        let value = value
            .strip_prefix(b"\"")
            .and_then(|inner| inner.strip_suffix(b"\""))
            .unwrap_or(value);
        Some(value)
    })
}

/// Returns one `Cookie` header without the cookies called `name` in any
/// ASCII case, or `None` when it has none to remove. While `keep_first` is
/// set, the first cookie called exactly `name`, the one [`extract`] reads,
/// stays and clears it, so one flag serves all `Cookie` headers of a
/// request in order. Other spellings always go: cookie names are
/// case-sensitive, but some frameworks look them up without case. The other
/// cookies keep their order and bytes, joined by `; `; the result is empty
/// when no other cookie was sent.
pub fn without_cookie(header: &[u8], name: &[u8], keep_first: &mut bool) -> Option<Vec<u8>> {
    // A first pass without allocating, since most headers lose nothing. When
    // it finds nothing to remove it has read every pair, so its `keep` is
    // the final one.
    let mut keep = *keep_first;
    let any_removed = header
        .split(|byte| *byte == b';')
        .any(|pair| is_removed(pair, name, &mut keep));
    if !any_removed {
        *keep_first = keep;
        return None;
    }

    let mut remaining = Vec::with_capacity(header.len());
    for pair in header.split(|byte| *byte == b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() || is_removed(pair, name, keep_first) {
            continue;
        }
        if !remaining.is_empty() {
            remaining.extend_from_slice(b"; ");
        }
        remaining.extend_from_slice(pair);
    }
    Some(remaining)
}

/// Decides for one cookie pair of [`without_cookie`]: a name equal to
/// `name` in any ASCII case or once percent-decoded is removed, except the
/// first exact one while `keep` is set, which clears `keep`. A pair that
/// hides such a name after a comma goes as a whole, because parsers that
/// also split on commas (RFC 2965 style) would read a second cookie there.
fn is_removed(pair: &[u8], name: &[u8], keep: &mut bool) -> bool {
    let Some((cookie_name, _)) = split_cookie(pair) else {
        return false;
    };
    let hides_name_after_comma = pair
        .split(|byte| *byte == b',')
        .skip(1)
        .filter_map(split_cookie)
        .any(|(hidden, _)| names_match(hidden, name));
    if hides_name_after_comma {
        return true;
    }
    if *keep && cookie_name == name {
        *keep = false;
        return false;
    }
    names_match(cookie_name, name)
}

/// Reports whether a cookie called `cookie_name` may be read as `name` by
/// some upstream: frameworks differ in letter case, and some (PHP's
/// `$_COOKIE`) percent-decode names.
fn names_match(cookie_name: &[u8], name: &[u8]) -> bool {
    if cookie_name.eq_ignore_ascii_case(name) {
        return true;
    }
    cookie_name.contains(&b'%')
        && percent_encoding::percent_decode(cookie_name)
            .collect::<Vec<u8>>()
            .eq_ignore_ascii_case(name)
}

/// Splits one `name=value` pair of a `Cookie` header, both parts trimmed.
fn split_cookie(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let pair = pair.trim_ascii();
    let equals = pair.iter().position(|byte| *byte == b'=')?;
    Some((pair[..equals].trim_ascii(), pair[equals + 1..].trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn bearer_header_is_read() {
        let map = headers(&[("authorization", b"Bearer abc.def.ghi")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("abc.def.ghi", TokenSource::Header)
        );
    }

    #[test]
    fn lowercase_scheme_and_extra_spaces_are_accepted() {
        let map = headers(&[("authorization", b"  bearer    abc.def.ghi  ")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("abc.def.ghi", TokenSource::Header)
        );
        let map = headers(&[("authorization", b"BEARER\tabc")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("abc", TokenSource::Header)
        );
    }

    #[test]
    fn empty_bearer_is_malformed() {
        let map = headers(&[("authorization", b"Bearer   ")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Malformed(TokenSource::Header)
        );
    }

    #[test]
    fn other_scheme_means_no_token_even_with_cookie() {
        let map = headers(&[
            ("authorization", b"Basic dXNlcjpwYXNz"),
            ("cookie", b"hanko=abc.def.ghi"),
        ]);
        assert_eq!(extract(&map, "hanko"), Extracted::None);
    }

    #[test]
    fn bearerx_scheme_is_not_bearer() {
        let map = headers(&[("authorization", b"Bearerx abc")]);
        assert_eq!(extract(&map, "hanko"), Extracted::None);
    }

    #[test]
    fn header_wins_over_cookie() {
        let map = headers(&[
            ("authorization", b"Bearer from-header"),
            ("cookie", b"hanko=from-cookie"),
        ]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("from-header", TokenSource::Header)
        );
    }

    #[test]
    fn two_authorization_headers_are_ambiguous() {
        let map = headers(&[
            ("authorization", b"Bearer a"),
            ("authorization", b"Bearer b"),
        ]);
        assert_eq!(extract(&map, "hanko"), Extracted::Ambiguous);
    }

    #[test]
    fn cookie_is_read_among_others() {
        let map = headers(&[("cookie", b"theme=dark; hanko=abc.def.ghi; lang=en")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("abc.def.ghi", TokenSource::Cookie)
        );
    }

    #[test]
    fn cookie_in_second_header_is_read() {
        let map = headers(&[("cookie", b"theme=dark"), ("cookie", b"hanko=tok")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("tok", TokenSource::Cookie)
        );
    }

    #[test]
    fn quoted_cookie_value_is_unquoted() {
        let map = headers(&[("cookie", b"hanko=\"tok\"")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Token("tok", TokenSource::Cookie)
        );
    }

    #[test]
    fn similar_cookie_name_is_ignored() {
        let map = headers(&[("cookie", b"hanko_other=tok; xhanko=tok2")]);
        assert_eq!(extract(&map, "hanko"), Extracted::None);
    }

    #[test]
    fn configured_cookie_name_is_used() {
        let map = headers(&[("cookie", b"hanko=a; session=b")]);
        assert_eq!(
            extract(&map, "session"),
            Extracted::Token("b", TokenSource::Cookie)
        );
    }

    #[test]
    fn empty_cookie_is_malformed() {
        let map = headers(&[("cookie", b"hanko=")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Malformed(TokenSource::Cookie)
        );
    }

    #[test]
    fn non_utf8_bearer_is_malformed() {
        let map = headers(&[("authorization", b"Bearer ab\xffcd")]);
        assert_eq!(
            extract(&map, "hanko"),
            Extracted::Malformed(TokenSource::Header)
        );
    }

    #[test]
    fn nothing_means_none() {
        assert_eq!(extract(&HeaderMap::new(), "hanko"), Extracted::None);
    }

    #[test]
    fn without_cookie_keeps_the_others() {
        let cases: [(&[u8], Option<&[u8]>); 7] = [
            (b"a=1; hanko=tok; b=2", Some(b"a=1; b=2")),
            (b"hanko=tok", Some(b"")),
            (b"hanko=one;hanko=two ; b=\"x y\"", Some(b"b=\"x y\"")),
            (b" hanko = tok ;a=1", Some(b"a=1")),
            (b"a=1; b=2", None),
            (
                b"hankoo=tok; xhanko=tok; Hanko=tok",
                Some(b"hankoo=tok; xhanko=tok"),
            ),
            (b"a=hanko; flag", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                without_cookie(header, b"hanko", &mut false).as_deref(),
                expected,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn without_cookie_removes_disguised_names() {
        let cases: [(&[u8], Option<&[u8]>); 5] = [
            (b"a=1, hanko=other; b=2", Some(b"b=2")),
            (b"a=1,HANKO=other", Some(b"")),
            (b"hank%6F=other; b=2", Some(b"b=2")),
            (b"%68%41nko=other", Some(b"")),
            (b"a=1,2; b=x,y", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                without_cookie(header, b"hanko", &mut false).as_deref(),
                expected,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn disguised_names_go_when_keeping_the_first() {
        assert_eq!(
            without_cookie(b"hank%6F=other; hanko=one", b"hanko", &mut true).as_deref(),
            Some(&b"hanko=one"[..])
        );
        assert_eq!(
            without_cookie(b"hanko=one; a=1, hanko=other", b"hanko", &mut true).as_deref(),
            Some(&b"hanko=one"[..])
        );
    }

    #[test]
    fn without_cookie_keeps_one_across_headers() {
        let mut keep = true;
        assert_eq!(without_cookie(b"a=1", b"hanko", &mut keep), None);
        assert!(keep, "a header without the cookie keeps nothing");
        assert_eq!(without_cookie(b"hanko=one", b"hanko", &mut keep), None);
        assert!(!keep, "the first cookie was kept");
        assert_eq!(
            without_cookie(b"hanko=two; b=2", b"hanko", &mut keep).as_deref(),
            Some(&b"b=2"[..])
        );
    }

    #[test]
    fn without_cookie_can_keep_the_first() {
        let cases: [(&[u8], Option<&[u8]>); 6] = [
            (
                b"a=1; hanko=one; b=2; hanko=two",
                Some(b"a=1; hanko=one; b=2"),
            ),
            (b"hanko=one;hanko=two;hanko=three", Some(b"hanko=one")),
            (b"HANKO=forged; hanko=one", Some(b"hanko=one")),
            (b"hanko=one; Hanko=forged", Some(b"hanko=one")),
            (b"a=1; hanko=one", None),
            (b"a=1", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                without_cookie(header, b"hanko", &mut true).as_deref(),
                expected,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }
}
