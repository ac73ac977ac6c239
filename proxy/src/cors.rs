//! CORS for routes that configure it: answering preflights and adding the
//! CORS headers to responses for allowed origins.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! is answered by the proxy without a token, because browsers never attach
//! credentials to it. Header values are built once at config load. The proxy
//! does not filter requested headers one by one: it lists the allowed ones
//! and the browser enforces the list. On such routes the route's policy is
//! the only one: the upstream's own `Access-Control-*` headers are removed.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};

/// Origins a route accepts.
#[derive(Debug, Clone)]
pub enum AllowedOrigins {
    /// Any origin (`"*"`), only without credentials.
    Any,
    /// Exactly these origins, such as `https://app.example.com`.
    List(Vec<String>),
}

/// The CORS settings of one route, with header values prepared.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: AllowedOrigins,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: HeaderValue,
}

/// The reason a preflight was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorsRejection {
    /// The origin is not on the route's list.
    #[error("the origin is not allowed")]
    Origin,
    /// The requested method is not on the route's list.
    #[error("the requested method is not allowed")]
    Method,
}

impl CorsPolicy {
    /// Prepares a policy from validated parts.
    pub fn new(
        origins: AllowedOrigins,
        methods: Vec<Method>,
        headers: Vec<HeaderName>,
        expose: Vec<HeaderName>,
        allow_credentials: bool,
        max_age_seconds: u64,
    ) -> Self {
        let join = |names: Vec<&str>| {
            HeaderValue::from_str(&names.join(", "))
                .expect("validated methods and header names form a valid header value")
        };
        let allow_methods = join(methods.iter().map(Method::as_str).collect());
        let allow_headers = join(headers.iter().map(HeaderName::as_str).collect());
        let expose_headers =
            (!expose.is_empty()).then(|| join(expose.iter().map(HeaderName::as_str).collect()));
        Self {
            origins,
            methods,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age: HeaderValue::from(max_age_seconds),
        }
    }

    /// Reports whether `origin` may read responses of this route.
    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list
                .iter()
                .any(|allowed| allowed.as_bytes() == origin.as_bytes()),
        }
    }

    /// Returns the headers of a 204 answer to a preflight from `origin`
    /// asking for `method`.
    ///
    /// # Errors
    ///
    /// Fails when the origin or the method is not allowed.
    pub fn preflight_headers(
        &self,
        origin: &HeaderValue,
        method: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, CorsRejection> {
        if !self.allows_origin(origin) {
            return Err(CorsRejection::Origin);
        }
        if !self
            .methods
            .iter()
            .any(|allowed| allowed.as_str().as_bytes() == method)
        {
            return Err(CorsRejection::Method);
        }
        let mut headers = Vec::with_capacity(6);
        self.origin_headers(origin, &mut headers);
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone()));
        headers.push((ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone()));
        headers.push((ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        Ok(headers)
    }

    /// Returns the headers to add to an actual response for `origin`, or
    /// nothing when the origin is not allowed.
    pub fn response_headers(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        if self.allows_origin(origin) {
            self.origin_headers(origin, &mut headers);
            if let Some(expose) = &self.expose_headers {
                headers.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
            }
        }
        headers
    }

    /// Reports whether responses differ by origin: all but `"*"` without
    /// credentials, which sends every origin the same headers.
    fn varies_by_origin(&self) -> bool {
        !matches!(
            (&self.origins, self.allow_credentials),
            (AllowedOrigins::Any, false)
        )
    }

    fn origin_headers(&self, origin: &HeaderValue, headers: &mut Vec<(HeaderName, HeaderValue)>) {
        if self.varies_by_origin() {
            headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            headers.push((VARY, HeaderValue::from_static("Origin")));
        } else {
            headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")));
        }
        if self.allow_credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
    }
}

/// Puts a CORS route's `headers` on an upstream response in place of the
/// upstream's own CORS headers, which could allow more than the policy.
/// When the headers depend on the origin, `Origin` joins the upstream's
/// `Vary`, for refused and missing origins too, so a shared cache keys on
/// it and on what the upstream named.
///
/// # Errors
///
/// Fails only when Pingora cannot store a header.
pub fn apply_to_response(
    response: &mut ResponseHeader,
    policy: &CorsPolicy,
    headers: &[(HeaderName, HeaderValue)],
) -> pingora::Result<()> {
    let upstream_cors: Vec<HeaderName> = response
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in &upstream_cors {
        response.remove_header(name);
    }
    for (name, value) in headers.iter().filter(|(name, _)| *name != VARY) {
        response.insert_header(name.clone(), value.clone())?;
    }
    let origin = HeaderValue::from_static("Origin");
    if policy.varies_by_origin() && !varies_on(response, &origin) {
        response.append_header(VARY, origin)?;
    }
    Ok(())
}

/// Reports whether `response` already varies on `field`, or on everything.
fn varies_on(response: &ResponseHeader, field: &HeaderValue) -> bool {
    let field = field.as_bytes();
    response
        .headers
        .get_all(VARY)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .any(|token| token == b"*" || token.eq_ignore_ascii_case(field))
}

/// Returns the origin and requested method when `request` is a CORS
/// preflight.
pub fn preflight_parts(request: &RequestHeader) -> Option<(&HeaderValue, &HeaderValue)> {
    if request.method != Method::OPTIONS {
        return None;
    }
    let origin = request.headers.get(ORIGIN)?;
    let method = request.headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
    Some((origin, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: AllowedOrigins, credentials: bool) -> CorsPolicy {
        CorsPolicy::new(
            origins,
            vec![Method::GET, Method::POST],
            vec![
                HeaderName::from_static("authorization"),
                HeaderName::from_static("content-type"),
            ],
            vec![HeaderName::from_static("x-request-id")],
            credentials,
            600,
        )
    }

    fn find<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a [u8]> {
        headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_bytes())
    }

    #[test]
    fn listed_origin_gets_preflight_headers() {
        let policy = policy(
            AllowedOrigins::List(vec!["https://app.example.com".to_owned()]),
            true,
        );
        let origin = HeaderValue::from_static("https://app.example.com");
        let headers = policy.preflight_headers(&origin, b"POST").expect("allowed");

        assert_eq!(
            find(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(b"https://app.example.com".as_slice())
        );
        assert_eq!(
            find(&headers, &ACCESS_CONTROL_ALLOW_METHODS),
            Some(b"GET, POST".as_slice())
        );
        assert_eq!(
            find(&headers, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some(b"authorization, content-type".as_slice())
        );
        assert_eq!(
            find(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some(b"true".as_slice())
        );
        assert_eq!(
            find(&headers, &ACCESS_CONTROL_MAX_AGE),
            Some(b"600".as_slice())
        );
        assert_eq!(find(&headers, &VARY), Some(b"Origin".as_slice()));
    }

    #[test]
    fn other_origin_is_refused() {
        let policy = policy(
            AllowedOrigins::List(vec!["https://app.example.com".to_owned()]),
            false,
        );
        let origin = HeaderValue::from_static("https://evil.example.com");

        assert_eq!(
            policy.preflight_headers(&origin, b"GET"),
            Err(CorsRejection::Origin)
        );
        assert!(policy.response_headers(&origin).is_empty());
    }

    #[test]
    fn unlisted_method_is_refused() {
        let policy = policy(AllowedOrigins::Any, false);
        let origin = HeaderValue::from_static("https://any.example.com");
        assert_eq!(
            policy.preflight_headers(&origin, b"DELETE"),
            Err(CorsRejection::Method)
        );
    }

    #[test]
    fn any_origin_without_credentials_uses_star() {
        let policy = policy(AllowedOrigins::Any, false);
        let origin = HeaderValue::from_static("https://any.example.com");
        let headers = policy.response_headers(&origin);

        assert_eq!(
            find(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(b"*".as_slice())
        );
        assert_eq!(
            find(&headers, &ACCESS_CONTROL_EXPOSE_HEADERS),
            Some(b"x-request-id".as_slice())
        );
        assert_eq!(find(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }

    #[test]
    fn preflight_needs_origin_and_method() {
        let mut request = RequestHeader::build("OPTIONS", b"/api", None).expect("request");
        assert!(preflight_parts(&request).is_none());
        request
            .insert_header("origin", "https://app.example.com")
            .expect("header");
        assert!(preflight_parts(&request).is_none());
        request
            .insert_header("access-control-request-method", "GET")
            .expect("header");
        assert!(preflight_parts(&request).is_some());
    }

    fn upstream_response(headers: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(200, None).expect("response");
        for (name, value) in headers {
            response.append_header(*name, *value).expect("header");
        }
        response
    }

    fn values(response: &ResponseHeader, name: &str) -> Vec<String> {
        response
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().expect("ASCII").to_owned())
            .collect()
    }

    #[test]
    fn upstream_cors_headers_are_replaced() {
        let policy = policy(
            AllowedOrigins::List(vec!["https://app.example.com".to_owned()]),
            false,
        );
        let origin = HeaderValue::from_static("https://app.example.com");
        let mut response = upstream_response(&[
            ("vary", "Cookie, Accept-Encoding"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-headers", "x-secret"),
        ]);

        apply_to_response(&mut response, &policy, &policy.response_headers(&origin))
            .expect("applied");

        assert_eq!(
            values(&response, "access-control-allow-origin"),
            ["https://app.example.com"]
        );
        assert!(values(&response, "access-control-allow-credentials").is_empty());
        assert!(values(&response, "access-control-allow-headers").is_empty());
        assert_eq!(
            values(&response, "access-control-expose-headers"),
            ["x-request-id"]
        );
        assert_eq!(
            values(&response, "vary"),
            ["Cookie, Accept-Encoding", "Origin"]
        );
    }

    #[test]
    fn refused_origin_gets_no_cors_headers() {
        let policy = policy(
            AllowedOrigins::List(vec!["https://app.example.com".to_owned()]),
            true,
        );
        let other = HeaderValue::from_static("https://evil.example.com");
        let mut response = upstream_response(&[
            ("access-control-allow-origin", "https://evil.example.com"),
            ("access-control-allow-credentials", "true"),
            ("content-type", "application/json"),
        ]);

        apply_to_response(&mut response, &policy, &policy.response_headers(&other))
            .expect("applied");

        let names: Vec<&str> = response.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "vary"]);
        assert_eq!(values(&response, "vary"), ["Origin"]);
    }

    #[test]
    fn vary_is_not_repeated() {
        let policy = policy(
            AllowedOrigins::List(vec!["https://app.example.com".to_owned()]),
            false,
        );
        let origin = HeaderValue::from_static("https://app.example.com");
        for existing in ["origin", "Accept, ORIGIN", "*"] {
            let mut response = upstream_response(&[("vary", existing)]);
            apply_to_response(&mut response, &policy, &policy.response_headers(&origin))
                .expect("applied");
            assert_eq!(values(&response, "vary"), [existing], "{existing}");
        }
    }

    #[test]
    fn any_origin_adds_no_vary() {
        let policy = policy(AllowedOrigins::Any, false);
        let origin = HeaderValue::from_static("https://app.example.com");
        let mut response = upstream_response(&[("vary", "Cookie")]);

        apply_to_response(&mut response, &policy, &policy.response_headers(&origin))
            .expect("applied");

        assert_eq!(values(&response, "vary"), ["Cookie"]);
        assert_eq!(values(&response, "access-control-allow-origin"), ["*"]);
    }
}
