//! edge-proxy token handling against the real binary: every place a token
//! may arrive, every check it must pass, and what the upstream then sees.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hanko_edge_tests::echo::{EchoServer, Echoed};
use hanko_edge_tests::edge_proxy::{ProxyStack, hanko_claims, unix_now};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";

fn with_claim(name: &str, value: Value) -> Value {
    let mut claims = hanko_claims(USER);
    claims[name] = value;
    claims
}

fn without_claim(name: &str) -> Value {
    let mut claims = hanko_claims(USER);
    claims
        .as_object_mut()
        .expect("claims are an object")
        .remove(name);
    claims
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn echoed(response: reqwest::Response) -> Echoed {
    let status = response.status();
    let body = response.bytes().await.expect("body");
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&body));
    Echoed::from_body(&body)
}

/// Asserts a 401 with `error="invalid_token"`, a problem body, and no
/// upstream call.
async fn assert_invalid_token(stack: &ProxyStack, case: &str, header_value: &[u8]) {
    let before = stack.upstream.request_count();
    let response = stack
        .client
        .get(stack.proxy.url("/api/v1/item"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(header_value).expect("valid header bytes"),
        )
        .send()
        .await
        .expect("the proxy answers");

    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII").to_owned());
    let body: Value = response.json().await.expect("problem body is JSON");

    assert_eq!(status, 401, "{case}: {body}");
    let challenge = challenge.unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with(
            "Bearer realm=\"hanko-edge\", error=\"invalid_token\", error_description=\""
        ),
        "{case}: {challenge}"
    );
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{case}"
    );
    assert_eq!(body["status"], 401, "{case}");
    assert_eq!(body["title"], "Unauthorized", "{case}");
    assert_eq!(
        stack.upstream.request_count(),
        before,
        "{case}: the upstream must not be called"
    );
}

async fn assert_token_rejected(stack: &ProxyStack, case: &str, token: &str) {
    assert_invalid_token(stack, case, format!("Bearer {token}").as_bytes()).await;
}

#[tokio::test]
async fn bearer_token_passes_with_identity() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);

    let echoed = echoed(stack.get_with_token("/api/v1/item?x=1", &token).await).await;

    assert_eq!(echoed.target(), "/api/v1/item?x=1");
    assert_eq!(echoed.header("x-user-id").as_deref(), Some(USER));
    assert_eq!(
        echoed.header("x-user-email").as_deref(),
        Some("ada@example.com")
    );
    // The upstream gets the identity, not the credential.
    assert_eq!(echoed.header("authorization"), None);
}

#[tokio::test]
async fn bare_string_audience_passes() {
    let stack = ProxyStack::start().await;
    let token = stack.token(&with_claim("aud", json!("localhost")));

    let echoed = echoed(stack.get_with_token("/api/x", &token).await).await;
    assert_eq!(echoed.header("x-user-id").as_deref(), Some(USER));
}

#[tokio::test]
async fn audience_list_in_config_accepts_any_member() {
    let stack =
        ProxyStack::start_with(|config| config.audience("[\"app.example.com\", \"localhost\"]"))
            .await;
    let token = stack.token(&with_claim("aud", json!(["app.example.com"])));

    let response = stack.get_with_token("/api/x", &token).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn lowercase_and_spaced_bearer_passes() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);

    for value in [
        format!("bearer {token}"),
        format!("BEARER   {token}"),
        format!("Bearer\t{token}  "),
    ] {
        let response = stack
            .get_with_headers("/api/x", &[("authorization", value.as_str())])
            .await;
        let echoed = echoed(response).await;
        assert_eq!(echoed.header("x-user-id").as_deref(), Some(USER));
    }
}

#[tokio::test]
async fn cookie_only_passes() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);

    let response = stack
        .get_with_headers(
            "/api/x",
            &[("cookie", format!("theme=dark; hanko={token}").as_str())],
        )
        .await;

    let echoed = echoed(response).await;
    assert_eq!(echoed.header("x-user-id").as_deref(), Some(USER));
    assert_eq!(echoed.header_values("cookie"), ["theme=dark"]);
}

#[tokio::test]
async fn session_cookie_removed_from_every_header() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let second = format!("hanko={token}; b=2; hanko=other; Hanko=other");

    let response = stack
        .proxy
        .raw_get(
            "/api/x",
            &[("Cookie", b"a=1"), ("Cookie", second.as_bytes())],
        )
        .await;
    let only_session = stack
        .get_with_headers("/api/x", &[("cookie", format!("hanko={token}").as_str())])
        .await;

    let echoed_both = response.echoed();
    assert_eq!(echoed_both.header("x-user-id").as_deref(), Some(USER));
    assert_eq!(echoed_both.header_values("cookie"), ["a=1", "b=2"]);
    assert!(
        echoed(only_session)
            .await
            .header_values("cookie")
            .is_empty()
    );
}

#[tokio::test]
async fn basic_header_stays_cookie_goes() {
    let stack = ProxyStack::start().await;
    let cookie = format!("hanko={}; a=1", stack.valid_token(USER));

    // A Basic header hides the cookie, so the request is anonymous; the
    // session cookie is still a credential the upstream has no use for.
    let response = stack
        .get_with_headers(
            "/optional/x",
            &[("authorization", "Basic dXNlcjpwYXNz"), ("cookie", &cookie)],
        )
        .await;

    let echoed = echoed(response).await;
    assert_eq!(echoed.header("x-user-id"), None);
    assert_eq!(
        echoed.header("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );
    assert_eq!(echoed.header_values("cookie"), ["a=1"]);
}

#[tokio::test]
async fn route_forward_token_overrides_default() {
    let verifying = EchoServer::start().await;
    let verifying_addr = verifying.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/verifying\"\nupstream = \"{verifying_addr}\"\n\
             auth = \"required\"\nforward_token = true"
        ))
    })
    .await;
    let token = stack.valid_token(USER);

    let forwarded = echoed(stack.get_with_token("/verifying/x", &token).await).await;
    let default = echoed(stack.get_with_token("/api/x", &token).await).await;

    assert_eq!(
        forwarded.header("authorization"),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(forwarded.header("x-user-id").as_deref(), Some(USER));
    assert_eq!(default.header("authorization"), None);
}

#[tokio::test]
async fn forward_token_passes_credentials_on() {
    let stack = ProxyStack::start_with(|config| config.auth("forward_token = true")).await;
    let token = stack.valid_token(USER);
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; hanko={token}");

    let by_header = echoed(stack.get_with_token("/api/x", &token).await).await;
    let by_cookie = echoed(
        stack
            .get_with_headers("/api/x", &[("cookie", cookie.as_str())])
            .await,
    )
    .await;

    assert_eq!(by_header.header("authorization"), Some(bearer));
    assert_eq!(by_cookie.header_values("cookie"), [cookie]);
    assert_eq!(by_cookie.header("x-user-id").as_deref(), Some(USER));
}

#[tokio::test]
async fn forward_token_drops_unchecked_copies() {
    let stack = ProxyStack::start_with(|config| config.auth("forward_token = true")).await;
    let token = stack.valid_token(USER);
    let forged = "hanko=forged";

    // The header's token is the one checked, so no session cookie passes.
    let header_and_cookie = stack
        .get_with_headers(
            "/api/x",
            &[
                ("authorization", format!("Bearer {token}").as_str()),
                ("cookie", &format!("theme=dark; {forged}; Hanko=forged")),
            ],
        )
        .await;
    let header_and_cookie = echoed(header_and_cookie).await;
    assert_eq!(
        header_and_cookie.header("authorization"),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(header_and_cookie.header_values("cookie"), ["theme=dark"]);

    // Only the first session cookie was read, so the later ones go, and so
    // do other spellings, which some frameworks read as the same name.
    let second = format!("HANKO=forged; hanko={token}; b=2; {forged}");
    let two_cookies = stack
        .proxy
        .raw_get(
            "/api/x",
            &[("Cookie", b"a=1"), ("Cookie", second.as_bytes())],
        )
        .await
        .echoed();
    assert_eq!(two_cookies.header("x-user-id").as_deref(), Some(USER));
    assert_eq!(
        two_cookies.header_values("cookie"),
        ["a=1".to_owned(), format!("hanko={token}; b=2")]
    );

    // Parsers that split on commas or percent-decode names would read
    // another session cookie in these.
    let disguised = format!("hanko={token}; theme=dark, hanko=forged; hank%6F=forged; b=2");
    let disguised = stack
        .proxy
        .raw_get("/api/x", &[("Cookie", disguised.as_bytes())])
        .await
        .echoed();
    assert_eq!(disguised.header("x-user-id").as_deref(), Some(USER));
    assert_eq!(
        disguised.header_values("cookie"),
        [format!("hanko={token}; b=2")]
    );

    // A Basic header hides the cookie, which then was never checked.
    let basic = stack
        .get_with_headers(
            "/optional/x",
            &[("authorization", "Basic dXNlcjpwYXNz"), ("cookie", forged)],
        )
        .await;
    let basic = echoed(basic).await;
    assert_eq!(basic.header("x-user-id"), None);
    assert_eq!(
        basic.header("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );
    assert!(basic.header_values("cookie").is_empty());
}

#[tokio::test]
async fn configured_cookie_name_is_read() {
    let stack = ProxyStack::start_with(|config| config.auth("cookie_name = \"session\"")).await;
    let token = stack.valid_token(USER);

    let with_session = stack
        .get_with_headers("/api/x", &[("cookie", format!("session={token}").as_str())])
        .await;
    let with_hanko = stack
        .get_with_headers("/api/x", &[("cookie", format!("hanko={token}").as_str())])
        .await;

    assert_eq!(with_session.status(), 200);
    assert_eq!(with_hanko.status(), 401);
}

#[tokio::test]
async fn header_decides_when_cookie_also_sent() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);

    let bearer = format!("Bearer {token}");
    let cookie = format!("hanko={token}");
    let cases = [
        (
            bearer.as_str(),
            "hanko=garbage",
            200,
            "a valid header wins over a bad cookie",
        ),
        (
            "Bearer garbage",
            cookie.as_str(),
            401,
            "a bad header wins over a valid cookie",
        ),
        (
            "Basic dXNlcjpwYXNz",
            cookie.as_str(),
            401,
            "a Basic header hides the cookie",
        ),
    ];
    for (authorization, cookie, expected, case) in cases {
        let response = stack
            .get_with_headers(
                "/api/x",
                &[("authorization", authorization), ("cookie", cookie)],
            )
            .await;
        assert_eq!(response.status(), expected, "{case}");
    }
}

#[tokio::test]
async fn missing_token_gets_bare_challenge() {
    let stack = ProxyStack::start().await;

    let response = stack.get("/api/x").await;

    assert_eq!(response.status(), 401);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|value| value.to_str().expect("ASCII")),
        Some("Bearer realm=\"hanko-edge\"")
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], 401);
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| !detail.is_empty())
    );
    assert_eq!(stack.upstream.request_count(), 0);
}

#[tokio::test]
async fn two_authorization_headers_get_400() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let header = format!("Bearer {token}");

    let response = stack
        .proxy
        .raw_get(
            "/api/x",
            &[
                ("Authorization", header.as_bytes()),
                ("Authorization", header.as_bytes()),
            ],
        )
        .await;

    assert_eq!(response.status, 400);
    assert_eq!(response.json()["status"], 400);
    assert_eq!(stack.upstream.request_count(), 0);
}

#[tokio::test]
async fn claim_failures_get_401() {
    let stack = ProxyStack::start().await;
    let now = unix_now();

    let cases = [
        ("expired", with_claim("exp", json!(now - 120))),
        ("nbf in the future", with_claim("nbf", json!(now + 600))),
        ("iat in the future", with_claim("iat", json!(now + 600))),
        ("wrong aud", with_claim("aud", json!(["other.example.com"]))),
        (
            "wrong bare aud",
            with_claim("aud", json!("other.example.com")),
        ),
        ("missing aud", without_claim("aud")),
        ("missing exp", without_claim("exp")),
        ("empty sub", with_claim("sub", json!(""))),
        ("missing sub", without_claim("sub")),
    ];
    for (case, claims) in cases {
        assert_token_rejected(&stack, case, &stack.token(&claims)).await;
    }
}

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let stack =
        ProxyStack::start_with(|config| config.auth("issuer = \"https://auth.example.com\"")).await;

    let right = stack.token(&with_claim("iss", json!("https://auth.example.com")));
    let response = stack.get_with_token("/api/x", &right).await;
    assert_eq!(response.status(), 200);

    let wrong = stack.token(&with_claim("iss", json!("https://evil.example.com")));
    assert_token_rejected(&stack, "wrong iss", &wrong).await;
    let missing = stack.token(&hanko_claims(USER));
    assert_token_rejected(&stack, "missing iss", &missing).await;
}

#[tokio::test]
async fn forged_and_misshapen_tokens_get_401() {
    let stack = ProxyStack::start().await;
    let claims = hanko_claims(USER);
    let valid = stack.valid_token(USER);
    let payload = b64(claims.to_string().as_bytes());

    let none_header = json!({"alg": "none", "kid": stack.key.kid(), "typ": "JWT"});
    let alg_none = format!("{}.{payload}.", b64(none_header.to_string().as_bytes()));
    let alg_none_signed = format!(
        "{}.{payload}.{}",
        b64(none_header.to_string().as_bytes()),
        b64(b"sig")
    );

    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(stack.key.kid().to_owned());
    let public_pem = stack.key.public_pem().expect("public PEM");
    let hmac_key = EncodingKey::from_secret(public_pem.as_bytes()).expect("HMAC key");
    let hs256 = jsonwebtoken::encode(&hs_header, &claims, &hmac_key).expect("signs");

    let mut rs512_header = Header::new(Algorithm::RS512);
    rs512_header.kid = Some(stack.key.kid().to_owned());
    let rs512 =
        jsonwebtoken::encode(&rs512_header, &claims, stack.key.encoding_key()).expect("signs");

    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        stack.key.encoding_key(),
    )
    .expect("signs");

    let other_key = hanko_dev::keys::SigningKey::generate(2048).expect("key");
    let unknown_kid = other_key.sign(&claims).expect("signs");

    let mut foreign_header = Header::new(Algorithm::RS256);
    foreign_header.kid = Some(stack.key.kid().to_owned());
    let bad_signature =
        jsonwebtoken::encode(&foreign_header, &claims, other_key.encoding_key()).expect("signs");

    let parts: Vec<&str> = valid.split('.').collect();
    let forged_payload = b64(with_claim("sub", json!("admin")).to_string().as_bytes());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let two_parts = format!("{}.{}", parts[0], parts[1]);
    let four_parts = format!("{valid}.{}", parts[2]);
    let huge = stack.token(&with_claim("pad", json!("a".repeat(16 * 1024))));

    let cases: [(&str, String); 11] = [
        ("alg none without signature", alg_none),
        ("alg none with signature", alg_none_signed),
        ("HS256 keyed with the public key", hs256),
        ("RS512 not allowed", rs512),
        ("no kid", no_kid),
        ("unknown kid", unknown_kid),
        ("bad signature", bad_signature),
        ("tampered payload", tampered),
        ("two parts", two_parts),
        ("four parts", four_parts),
        ("16 KiB token", huge),
    ];
    for (case, token) in cases {
        assert_token_rejected(&stack, case, &token).await;
    }

    let mut non_ascii = b"Bearer ".to_vec();
    non_ascii.extend_from_slice(&valid.as_bytes()[..4]);
    non_ascii.extend_from_slice("é".as_bytes());
    non_ascii.extend_from_slice(&valid.as_bytes()[4..]);
    assert_invalid_token(&stack, "non-ASCII byte in the header part", &non_ascii).await;

    let mut latin1 = b"Bearer ".to_vec();
    latin1.extend_from_slice(&valid.as_bytes()[..4]);
    latin1.push(0xE9);
    latin1.extend_from_slice(&valid.as_bytes()[4..]);
    assert_invalid_token(&stack, "non-UTF-8 byte in the header part", &latin1).await;

    assert_invalid_token(&stack, "empty bearer", b"Bearer ").await;
}

#[tokio::test]
async fn optional_route_passes_without_token_but_not_with_a_bad_one() {
    let stack = ProxyStack::start().await;

    let anonymous = stack
        .get_with_headers("/optional/x", &[("x-user-id", "spoofed")])
        .await;
    let echoed_anonymous = echoed(anonymous).await;
    assert_eq!(echoed_anonymous.header("x-user-id"), None);

    let signed_in = echoed(
        stack
            .get_with_token("/optional/x", &stack.valid_token(USER))
            .await,
    )
    .await;
    assert_eq!(signed_in.header("x-user-id").as_deref(), Some(USER));

    let expired = stack.token(&with_claim("exp", json!(unix_now() - 120)));
    let response = stack.get_with_token("/optional/x", &expired).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn none_route_ignores_tokens() {
    let stack = ProxyStack::start().await;

    let response = stack
        .get_with_headers(
            "/public/x",
            &[
                ("authorization", "Bearer garbage"),
                ("cookie", "hanko=garbage; a=1"),
            ],
        )
        .await;

    let echoed = echoed(response).await;
    assert_eq!(echoed.header("x-user-id"), None);
    assert_eq!(
        echoed.header("authorization").as_deref(),
        Some("Bearer garbage")
    );
    assert_eq!(echoed.header_values("cookie"), ["hanko=garbage; a=1"]);
}

#[tokio::test]
async fn access_log_names_reason_and_never_the_token() {
    let stack = ProxyStack::start().await;
    let expired = stack.token(&with_claim("exp", json!(unix_now() - 120)));
    let valid = stack.valid_token(USER);

    let rejected = stack.get_with_token("/api/x", &expired).await;
    assert_eq!(rejected.status(), 401);
    let accepted = stack.get_with_token("/api/x", &valid).await;
    assert_eq!(accepted.status(), 200);

    let found = hanko_edge_tests::edge_proxy::poll_until(std::time::Duration::from_secs(5), || {
        let log = stack.proxy.log();
        async move { log.matches("edge_proxy::access").count() >= 2 }
    })
    .await;
    let log = stack.proxy.log();
    assert!(found, "two access events expected:\n{log}");
    assert!(
        log.contains("expired"),
        "the refusal reason is logged:\n{log}"
    );
    assert!(log.contains(USER), "the user is logged:\n{log}");
    for token in [&expired, &valid] {
        let signature = token.rsplit('.').next().expect("three parts");
        assert!(!log.contains(signature), "a token reached the log:\n{log}");
    }
}

#[tokio::test]
async fn trace_log_never_contains_the_token() {
    let stack = ProxyStack::start_with_log_filter(|config| config, "trace").await;
    let bearer = stack.valid_token(USER);
    let cookie = stack.valid_token("0d9c5a41-3f7e-4c2b-9a68-1e5f7b2c4d93");

    let required = stack.get_with_token("/api/x", &bearer).await;
    assert_eq!(required.status(), 200);
    let open = stack
        .get_with_headers(
            "/public/x",
            &[("cookie", format!("hanko={cookie}").as_str())],
        )
        .await;
    assert_eq!(open.status(), 200);

    let found = hanko_edge_tests::edge_proxy::poll_until(std::time::Duration::from_secs(5), || {
        let log = stack.proxy.log();
        async move { log.matches("edge_proxy::access").count() >= 2 }
    })
    .await;
    let log = stack.proxy.log();
    assert!(found, "two access events expected:\n{log}");
    for token in [&bearer, &cookie] {
        let signature = token.rsplit('.').next().expect("three parts");
        assert!(!log.contains(signature), "a token reached the log:\n{log}");
    }
}
