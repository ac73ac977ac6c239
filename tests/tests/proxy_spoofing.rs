//! edge-proxy identity spoofing against the real binary: whatever identity
//! headers a client sends, in whatever spelling, the upstream sees only the
//! values the proxy set from a verified token.

use hanko_edge_tests::echo::Echoed;
use hanko_edge_tests::edge_proxy::ProxyStack;

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const SPOOFED: &str = "00000000-0000-0000-0000-00000000dead";

/// Header spellings an upstream framework could read as an identity header.
const VARIANTS: &[&str] = &[
    "X-User-Id",
    "x-user-id",
    "X-USER-ID",
    "x_user_id",
    "X_USER_ID",
    "x-user_id",
    "X-User-Email",
    "x_user_email",
    "X-USER_EMAIL",
];

/// Returns every header the upstream saw whose name reads as `identity`
/// with `_` taken as `-`.
fn identity_values(echoed: &Echoed, identity: &str) -> Vec<String> {
    echoed
        .header_names()
        .into_iter()
        .filter(|name| name.replace('_', "-") == identity)
        .flat_map(|name| echoed.header_values(&name))
        .collect()
}

#[tokio::test]
async fn spoofed_headers_never_reach_a_required_route() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let bearer = format!("Bearer {token}");

    for variant in VARIANTS {
        let before = stack.upstream.request_count();
        let anonymous = stack
            .proxy
            .raw_get("/api/x", &[(variant, SPOOFED.as_bytes())])
            .await;
        assert_eq!(anonymous.status, 401, "{variant} without token");
        assert_eq!(
            stack.upstream.request_count(),
            before,
            "{variant}: nothing is forwarded without a token"
        );

        let signed_in = stack
            .proxy
            .raw_get(
                "/api/x",
                &[
                    (variant, SPOOFED.as_bytes()),
                    ("Authorization", bearer.as_bytes()),
                    (variant, SPOOFED.as_bytes()),
                ],
            )
            .await;
        let echoed = signed_in.echoed();
        assert_eq!(identity_values(&echoed, "x-user-id"), [USER], "{variant}");
        assert_eq!(
            identity_values(&echoed, "x-user-email"),
            ["ada@example.com"],
            "{variant}"
        );
    }
}

#[tokio::test]
async fn spoofed_headers_never_reach_a_none_route() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let bearer = format!("Bearer {token}");

    for variant in VARIANTS {
        let anonymous = stack
            .proxy
            .raw_get("/public/x", &[(variant, SPOOFED.as_bytes())])
            .await;
        let echoed_anonymous = anonymous.echoed();
        assert!(
            identity_values(&echoed_anonymous, "x-user-id").is_empty(),
            "{variant} without token"
        );
        assert!(identity_values(&echoed_anonymous, "x-user-email").is_empty());

        let with_token = stack
            .proxy
            .raw_get(
                "/public/x",
                &[
                    (variant, SPOOFED.as_bytes()),
                    ("Authorization", bearer.as_bytes()),
                ],
            )
            .await;
        let echoed_with_token = with_token.echoed();
        assert!(
            identity_values(&echoed_with_token, "x-user-id").is_empty(),
            "{variant} with token: a none route sets no identity"
        );
        assert!(identity_values(&echoed_with_token, "x-user-email").is_empty());
    }
}

#[tokio::test]
async fn spoofed_headers_never_reach_an_optional_route() {
    let stack = ProxyStack::start().await;

    for variant in VARIANTS {
        let response = stack
            .proxy
            .raw_get("/optional/x", &[(variant, SPOOFED.as_bytes())])
            .await;
        let echoed = response.echoed();
        assert!(
            identity_values(&echoed, "x-user-id").is_empty(),
            "{variant}"
        );
        assert!(
            identity_values(&echoed, "x-user-email").is_empty(),
            "{variant}"
        );
    }
}

#[tokio::test]
async fn connection_header_cannot_strip_the_identity() {
    let stack = ProxyStack::start().await;
    let token = stack.valid_token(USER);
    let bearer = format!("Bearer {token}");

    let response = stack
        .proxy
        .raw_get(
            "/api/x",
            &[
                ("Connection", b"x-user-id, x-user-email, close"),
                ("X-User-Id", SPOOFED.as_bytes()),
                ("Authorization", bearer.as_bytes()),
                ("Keep-Alive", b"timeout=5"),
                ("TE", b"trailers"),
            ],
        )
        .await;

    let echoed = response.echoed();
    assert_eq!(identity_values(&echoed, "x-user-id"), [USER]);
    assert_eq!(
        identity_values(&echoed, "x-user-email"),
        ["ada@example.com"]
    );
    let connection = echoed.header_values("connection");
    assert!(
        connection
            .iter()
            .all(|value| !value.to_ascii_lowercase().contains("x-user")),
        "no Connection header names the identity: {connection:?}"
    );
    assert!(echoed.header_values("keep-alive").is_empty());
    assert!(echoed.header_values("te").is_empty());
}

#[tokio::test]
async fn forwarding_headers_are_set_by_the_proxy() {
    let stack = ProxyStack::start().await;

    let response = stack
        .proxy
        .raw_get(
            "/public/x",
            &[
                ("X-Forwarded-For", b"203.0.113.7"),
                ("X-Forwarded-Proto", b"https"),
                ("X-Forwarded-Host", b"evil.example.com"),
                ("X-Real-IP", b"203.0.113.7"),
                ("X_Forwarded_For", b"203.0.113.7"),
                ("Forwarded", b"for=203.0.113.7;proto=https"),
                ("X-Forwarded-Port", b"443"),
                ("X-Forwarded-Prefix", b"/evil"),
                ("X-Forwarded-Ssl", b"on"),
                ("Front-End-Https", b"on"),
                ("True-Client-IP", b"203.0.113.7"),
                ("CF-Connecting-IP", b"203.0.113.7"),
                ("x-forwarded-other", b"anything"),
            ],
        )
        .await;

    let echoed = response.echoed();
    assert_eq!(
        echoed.forwarding_headers(),
        [
            vec!["127.0.0.1".to_owned()],
            vec!["http".to_owned()],
            vec![stack.proxy.addr().to_string()],
            vec!["127.0.0.1".to_owned()],
            vec![],
        ]
    );
    for name in [
        "x_forwarded_for",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "front-end-https",
        "true-client-ip",
        "cf-connecting-ip",
        "x-forwarded-other",
    ] {
        assert!(
            echoed.header_values(name).is_empty(),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn request_id_is_generated_or_kept_and_returned() {
    let stack = ProxyStack::start().await;

    let generated = stack.proxy.raw_get("/public/x", &[]).await;
    let echoed_generated = generated.echoed();
    let id = echoed_generated
        .header("x-request-id")
        .expect("the proxy generates a request id");
    assert!(!id.is_empty());
    assert_eq!(generated.header("x-request-id"), Some(id.as_str()));

    let kept = stack
        .proxy
        .raw_get("/public/x", &[("X-Request-Id", b"client-id-42")])
        .await;
    assert_eq!(
        kept.echoed().header("x-request-id").as_deref(),
        Some("client-id-42")
    );
    assert_eq!(kept.header("x-request-id"), Some("client-id-42"));

    let refused = stack
        .proxy
        .raw_get("/api/x", &[("X-Request-Id", b"client-id-43")])
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-request-id"), Some("client-id-43"));
}
