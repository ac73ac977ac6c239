//! edge-proxy path handling and CORS against the real binary: tricky paths
//! never reach a protected route unauthenticated and never cause a 5xx;
//! CORS preflights are answered without a token, plain OPTIONS is not.

use std::net::SocketAddr;

use hanko_edge_tests::echo::{EchoServer, Echoed};
use hanko_edge_tests::edge_proxy::{ProxyConfig, ProxyStack, RawResponse};

const USER: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const ORIGIN: &str = "https://app.example.com";

/// Returns the text of the response header `name`.
fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("ASCII"))
}

/// Path cases, the status without a token, and the target the upstream
/// sees with a valid token (`None`: the request never reaches it).
const PATH_CASES: &[(&str, u16, Option<&str>)] = &[
    ("//api/v1/item", 401, Some("/api/v1/item")),
    ("/api/./v1/item", 401, Some("/api/v1/item")),
    ("/api/v1/../v1/item", 401, Some("/api/v1/item")),
    (
        "/api//v1//item?q=a/../b",
        401,
        Some("/api/v1/item?q=a/../b"),
    ),
    ("/%2e%2e/admin", 400, None),
    ("/api/v1/item/..%2f..%2fadmin", 400, None),
    ("/api%2Fv1/item", 400, None),
    ("/API/v1/item", 404, None),
    ("/apix", 404, None),
    ("/public/../api/v1/item", 401, Some("/api/v1/item")),
    ("/public/%2e%2e/api/v1/item", 401, Some("/api/v1/item")),
    ("/public/%2E%2E/api/v1/item", 401, Some("/api/v1/item")),
    ("/%61pi/v1/item", 401, Some("/api/v1/item")),
    ("/public/..\\api/v1/item", 400, None),
    ("/public/%5c../api", 400, None),
    ("/public/%00", 400, None),
    ("/public/%zz", 400, None),
    ("/public/../../api", 400, None),
    ("/public/..;/api/v1/item", 400, None),
    ("/public/%2e%2e;x/api/v1/item", 400, None),
    ("/api;x/v1/item", 400, None),
];

fn describe(response: &RawResponse) -> String {
    format!(
        "{} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    )
}

#[tokio::test]
async fn tricky_paths_never_reach_protected_routes_unauthenticated() {
    let stack = ProxyStack::start().await;
    let bearer = format!("Bearer {}", stack.valid_token(USER));

    for (path, anonymous_status, _) in PATH_CASES {
        let before = stack.upstream.request_count();
        let response = stack.proxy.raw_get(path, &[]).await;

        assert_eq!(
            response.status,
            *anonymous_status,
            "{path}: {}",
            describe(&response)
        );
        assert!(response.status < 500, "{path}: {}", describe(&response));
        assert_eq!(
            stack.upstream.request_count(),
            before,
            "{path}: nothing is forwarded without a token"
        );
    }

    for (path, _, forwarded) in PATH_CASES {
        let response = stack
            .proxy
            .raw_get(path, &[("Authorization", bearer.as_bytes())])
            .await;
        assert!(response.status < 500, "{path}: {}", describe(&response));
        match forwarded {
            Some(target) => {
                assert_eq!(response.status, 200, "{path}: {}", describe(&response));
                let echoed = Echoed::from_body(&response.body);
                assert_eq!(echoed.target(), *target, "{path}");
                assert_eq!(echoed.header("x-user-id").as_deref(), Some(USER), "{path}");
            }
            None => assert_ne!(response.status, 200, "{path}"),
        }
    }
}

#[tokio::test]
async fn public_paths_are_forwarded_normalised_with_query_untouched() {
    let stack = ProxyStack::start().await;

    for (path, target) in [
        ("/public/a//b/./c", "/public/a/b/c"),
        (
            "/public/x?redirect=/api/../admin&q=%2F",
            "/public/x?redirect=/api/../admin&q=%2F",
        ),
        ("/public/caf%c3%a9", "/public/caf%C3%A9"),
        ("/public/", "/public/"),
    ] {
        let response = stack.proxy.raw_get(path, &[]).await;
        assert_eq!(response.status, 200, "{path}: {}", describe(&response));
        assert_eq!(Echoed::from_body(&response.body).target(), target, "{path}");
    }
}

fn with_cors_route(config: ProxyConfig, upstream: SocketAddr) -> ProxyConfig {
    config.route(&format!(
        "path_prefix = \"/cors\"\nupstream = \"{upstream}\"\nauth = \"required\"\n\
         [proxy.routes.cors]\nallowed_origins = [\"{ORIGIN}\"]\nallowed_methods = [\"GET\", \"POST\"]\n\
         allowed_headers = [\"authorization\", \"content-type\"]\nexpose_headers = [\"x-request-id\"]\n\
         allow_credentials = true\nmax_age_seconds = 600"
    ))
}

/// Starts a stack with a `/cors` route; the returned upstream serves it and
/// must live as long as the stack.
async fn start_with_cors() -> (ProxyStack, EchoServer) {
    let upstream = EchoServer::start_named("cors").await;
    let addr = upstream.addr();
    let stack = ProxyStack::start_with(|config| with_cors_route(config, addr)).await;
    (stack, upstream)
}

#[tokio::test]
async fn cors_preflight_is_answered_without_token() {
    let (stack, _cors_upstream) = start_with_cors().await;

    let response = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.proxy.url("/cors/items"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("the proxy answers");

    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&response, "access-control-max-age"), Some("600"));
    assert_eq!(header(&response, "vary"), Some("Origin"));
}

#[tokio::test]
async fn cors_preflight_from_other_origin_is_refused() {
    let (stack, _cors_upstream) = start_with_cors().await;

    let other_origin = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.proxy.url("/cors/items"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(other_origin.status(), 403);
    assert!(
        other_origin
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let other_method = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.proxy.url("/cors/items"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(other_method.status(), 403);
}

#[tokio::test]
async fn method_limited_cors_route_refuses_other_methods() {
    let upstream = EchoServer::start_named("limited").await;
    let addr = upstream.addr();
    let stack = ProxyStack::start_with(|config| {
        config.route(&format!(
            "path_prefix = \"/limited\"\nmethods = [\"GET\"]\nupstream = \"{addr}\"\nauth = \"required\"\n\
             [proxy.routes.cors]\nallowed_origins = [\"{ORIGIN}\"]\nallowed_methods = [\"GET\", \"DELETE\"]"
        ))
    })
    .await;

    // A page can read the 405 and its Allow header.
    let delete = stack
        .client
        .delete(stack.proxy.url("/limited/x"))
        .header("origin", ORIGIN)
        .send()
        .await
        .expect("the proxy responds");
    assert_eq!(delete.status(), 405);
    assert_eq!(header(&delete, "allow"), Some("GET, HEAD"));
    assert_eq!(header(&delete, "access-control-allow-origin"), Some(ORIGIN));

    // The CORS policy lists DELETE, but no route takes it.
    let preflight = |method: &'static str| {
        stack
            .client
            .request(reqwest::Method::OPTIONS, stack.proxy.url("/limited/x"))
            .header("origin", ORIGIN)
            .header("access-control-request-method", method)
            .send()
    };
    let rejected = preflight("DELETE").await.expect("the proxy responds");
    assert_eq!(rejected.status(), 403);
    let allowed = preflight("GET").await.expect("the proxy responds");
    assert_eq!(allowed.status(), 204);
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn plain_options_on_protected_route_is_401() {
    let (stack, _cors_upstream) = start_with_cors().await;

    let plain = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.proxy.url("/cors/items"))
        .header("origin", ORIGIN)
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(plain.status(), 401);
    assert_eq!(
        header(&plain, "access-control-allow-origin"),
        Some(ORIGIN),
        "the page can read the 401"
    );

    let no_cors_route = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.proxy.url("/api/items"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(
        no_cors_route.status(),
        401,
        "a route without CORS answers no preflight"
    );
}

#[tokio::test]
async fn cors_headers_are_added_to_proxied_responses() {
    let (stack, _cors_upstream) = start_with_cors().await;
    let token = stack.valid_token(USER);

    let response = stack
        .get_with_headers(
            "/cors/items",
            &[
                ("origin", ORIGIN),
                ("authorization", format!("Bearer {token}").as_str()),
            ],
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&response, "access-control-expose-headers"),
        Some("x-request-id")
    );
}
