//! The item API through the real `item-api` binary over HTTP: every route
//! with its success and failure statuses, the problem+json error bodies,
//! and inputs that broke similar APIs elsewhere.

use hanko_edge_tests::item_api::{ItemApi, http_client};
use hanko_edge_tests::pg::TestDatabase;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

const ALICE: &str = "c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718";
const BOB: &str = "8d2f4b1c-5e6a-4f7b-9c3d-1a2b3c4d5e6f";

/// A migrated database with item-api running against it.
struct Fixture {
    api: ItemApi,
    client: reqwest::Client,
    database: TestDatabase,
}

impl Fixture {
    async fn start() -> Fixture {
        let database = TestDatabase::new().await;
        let api = ItemApi::spawn(&database).await;
        Fixture {
            api,
            client: http_client(),
            database,
        }
    }

    /// Builds a request as `user`, or without the user-id header when `None`.
    fn request(&self, method: Method, path: &str, user: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.api.url(path));
        match user {
            Some(user) => builder.header("X-User-Id", user),
            None => builder,
        }
    }

    async fn send(&self, builder: RequestBuilder) -> Response {
        builder.send().await.expect("item-api must answer")
    }

    async fn create(&self, user: &str, body: Value) -> Value {
        let response = self
            .send(
                self.request(Method::POST, "/api/v1/item/", Some(user))
                    .json(&body),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "creating {body}");
        response.json().await.expect("item JSON")
    }

    async fn list(&self, user: &str, query: &str) -> Vec<Value> {
        let response = self
            .send(self.request(Method::GET, &format!("/api/v1/item/{query}"), Some(user)))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("list JSON")
    }

    /// Fetches the item at `path` as `user`, which must succeed.
    async fn fetch(&self, user: &str, path: &str) -> Value {
        let response = self.send(self.request(Method::GET, path, Some(user))).await;
        assert_eq!(response.status(), StatusCode::OK, "fetching {path}");
        response.json().await.expect("item JSON")
    }

    async fn get_status(&self, user: &str, id: &Value) -> StatusCode {
        self.send(self.request(Method::GET, &format!("/api/v1/item/{id}"), Some(user)))
            .await
            .status()
    }
}

/// Checks a problem+json error and returns its body.
async fn assert_problem(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    let text = response.text().await.expect("body text");
    assert_eq!(actual, status, "body: {text}");
    assert_eq!(
        content_type,
        Some(HeaderValue::from_static("application/problem+json")),
        "body: {text}"
    );

    let body: Value = serde_json::from_str(&text).expect("problem JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["title"]
            .as_str()
            .is_some_and(|title| !title.is_empty()),
        "{body}"
    );
    let detail = body["detail"].as_str().expect("detail is a string");
    assert!(detail.ends_with('.'), "detail is a sentence: {detail}");
    assert!(
        !detail.contains("violates")
            && !detail.contains("SQLSTATE")
            && !detail.contains("relation"),
        "database text in detail: {detail}"
    );
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        assert!(body["errors"].is_array(), "422 needs errors: {body}");
    }
    body
}

/// Collects the `field` of every entry in a 422 body's `errors`.
fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|error| {
            assert!(error["detail"].is_string(), "{error}");
            error["field"].as_str().expect("field").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn list_returns_own_items_by_id() {
    let fixture = Fixture::start().await;
    let first = fixture.create(ALICE, json!({"title": "one"})).await;
    fixture.create(BOB, json!({"title": "bob's"})).await;
    let second = fixture.create(ALICE, json!({"title": "two"})).await;
    let third = fixture.create(ALICE, json!({"title": "three"})).await;

    let items = fixture.list(ALICE, "").await;
    let ids: Vec<&Value> = items.iter().map(|item| &item["id"]).collect();
    assert_eq!(ids, [&first["id"], &second["id"], &third["id"]]);
    assert!(items.iter().all(|item| item["owner_id"] == ALICE));

    let page = fixture.list(ALICE, "?skip=1&limit=1").await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0], second);

    let bob_items = fixture.list(BOB, "?skip=0&limit=100").await;
    assert_eq!(bob_items.len(), 1);
    assert_eq!(bob_items[0]["title"], "bob's");
}

#[tokio::test]
async fn collection_works_with_and_without_slash() {
    let fixture = Fixture::start().await;
    for path in ["/api/v1/item", "/api/v1/item/"] {
        let response = fixture
            .send(
                fixture
                    .request(Method::POST, path, Some(ALICE))
                    .json(&json!({"title": path})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "POST {path}");

        let response = fixture
            .send(fixture.request(Method::GET, path, Some(ALICE)))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
    assert_eq!(fixture.list(ALICE, "").await.len(), 2);
}

#[tokio::test]
async fn list_rejects_bad_paging_with_422() {
    let fixture = Fixture::start().await;
    for (query, field) in [
        ("skip=-1", "skip"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit"),
        ("limit=1000000", "limit"),
        ("limit=abc", "limit"),
        ("limit=1e3", "limit"),
        ("skip=1.5", "skip"),
        ("skip=99999999999999999999", "skip"),
    ] {
        let response = fixture
            .send(fixture.request(Method::GET, &format!("/api/v1/item/?{query}"), Some(ALICE)))
            .await;
        let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&body), [field], "{query}");
    }

    let response = fixture
        .send(fixture.request(Method::GET, "/api/v1/item/?skip=-1&limit=0", Some(ALICE)))
        .await;
    let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&body), ["skip", "limit"]);

    assert!(fixture.list(ALICE, "?limit=1000").await.is_empty());
}

#[tokio::test]
async fn create_returns_201_with_location() {
    let fixture = Fixture::start().await;
    let response = fixture
        .send(
            fixture
                .request(Method::POST, "/api/v1/item/", Some(ALICE))
                .json(&json!({"title": "Buy milk", "description": "Two litres"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[LOCATION]
        .to_str()
        .expect("ASCII location")
        .to_owned();
    let item: Value = response.json().await.expect("item JSON");

    assert!(item["id"].as_i64().is_some_and(|id| id > 0), "{item}");
    assert_eq!(item["title"], "Buy milk");
    assert_eq!(item["description"], "Two litres");
    assert_eq!(item["owner_id"], ALICE);
    let keys: Vec<&String> = item.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 4, "{item}");
    assert_eq!(location, format!("/api/v1/item/{}", item["id"]));

    let fetched = fixture.fetch(ALICE, &location).await;
    assert_eq!(fetched, item);
}

#[tokio::test]
async fn create_without_description_stores_null() {
    let fixture = Fixture::start().await;
    let absent = fixture.create(ALICE, json!({"title": "a"})).await;
    assert_eq!(absent["description"], Value::Null);
    let null = fixture
        .create(ALICE, json!({"title": "b", "description": null}))
        .await;
    assert_eq!(null["description"], Value::Null);
}

#[tokio::test]
async fn create_accepts_maximum_lengths() {
    let fixture = Fixture::start().await;
    // Multi-byte characters: the limits count characters, not bytes.
    let title = "ü".repeat(255);
    let description = "€".repeat(10_000);
    let item = fixture
        .create(ALICE, json!({"title": title, "description": description}))
        .await;
    assert_eq!(item["title"], title);
    assert_eq!(item["description"], description);
}

#[tokio::test]
async fn create_rejects_invalid_fields_with_422() {
    let fixture = Fixture::start().await;
    let long_title = "x".repeat(256);
    let long_description = "x".repeat(10_001);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (r#"{}"#.into(), vec!["title"]),
        (r#"{"description": "no title"}"#.into(), vec!["title"]),
        (r#"{"title": 42}"#.into(), vec!["title"]),
        (r#"{"title": null}"#.into(), vec!["title"]),
        (r#"{"title": ["a"]}"#.into(), vec!["title"]),
        (r#"{"title": ""}"#.into(), vec!["title"]),
        (format!(r#"{{"title": "{long_title}"}}"#), vec!["title"]),
        (
            format!(r#"{{"title": "a", "description": "{long_description}"}}"#),
            vec!["description"],
        ),
        (
            r#"{"title": "a", "description": 5}"#.into(),
            vec!["description"],
        ),
        (r#"{"title": "a\u0000b"}"#.into(), vec!["title"]),
        (
            r#"{"title": "a", "description": "b\u0000"}"#.into(),
            vec!["description"],
        ),
        (
            r#"{"title": "a", "owner_id": "someone"}"#.into(),
            vec!["owner_id"],
        ),
        (r#"{"title": "a", "id": 7}"#.into(), vec!["id"]),
        (r#"{"title": "a", "title": "b"}"#.into(), vec!["title"]),
        (
            r#"{"title": 1, "extra": true}"#.into(),
            vec!["title", "extra"],
        ),
        (r#"[]"#.into(), vec!["body"]),
        (r#""title""#.into(), vec!["body"]),
        (r#"null"#.into(), vec!["body"]),
        (String::new(), vec!["body"]),
    ];

    for (body, fields) in cases {
        let response = fixture
            .send(
                fixture
                    .request(Method::POST, "/api/v1/item/", Some(ALICE))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone()),
            )
            .await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), fields, "body {body:.80}");
    }

    assert!(
        fixture.list(ALICE, "").await.is_empty(),
        "no rejected body may create an item"
    );
}

#[tokio::test]
async fn create_rejects_malformed_body_with_400() {
    let fixture = Fixture::start().await;
    let bodies: [&[u8]; 5] = [
        b"{\"title\": ",
        b"{\"title\": \"a\",}",
        b"{title: \"a\"}",
        b"{\"title\": \"a\"} trailing",
        b"{\"title\": \"\xff\xfe invalid UTF-8\"}",
    ];
    for body in bodies {
        let response = fixture
            .send(
                fixture
                    .request(Method::POST, "/api/v1/item/", Some(ALICE))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec()),
            )
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    assert!(fixture.list(ALICE, "").await.is_empty());
}

#[tokio::test]
async fn create_rejects_non_json_with_415() {
    let fixture = Fixture::start().await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
        None,
    ] {
        let mut builder = fixture
            .request(Method::POST, "/api/v1/item/", Some(ALICE))
            .body(r#"{"title": "a"}"#);
        if let Some(content_type) = content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        let response = fixture.send(builder).await;
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    assert!(fixture.list(ALICE, "").await.is_empty());
}

#[tokio::test]
async fn coded_or_non_utf8_body_is_415() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "kept"})).await;
    let item_path = format!("/api/v1/item/{}", item["id"]);
    let cases = [
        ("gzip", "application/json", Some("gzip"), "identity"),
        (
            "br after identity",
            "application/json",
            Some("identity, br"),
            "identity",
        ),
        (
            "latin-1",
            "application/json; charset=iso-8859-1",
            None,
            "utf-8",
        ),
        ("utf-16", "application/json; charset=UTF-16", None, "utf-8"),
    ];
    for (case, content_type, coding, named) in cases {
        for (method, path) in [
            (Method::POST, "/api/v1/item/"),
            (Method::PUT, item_path.as_str()),
        ] {
            let mut builder = fixture
                .request(method.clone(), path, Some(ALICE))
                .header(CONTENT_TYPE, content_type)
                .body(r#"{"title": "changed"}"#);
            if let Some(coding) = coding {
                builder = builder.header("Content-Encoding", coding);
            }
            let response = fixture.send(builder).await;
            let accept_encoding = response.headers().get("accept-encoding").cloned();
            let body = assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
            let detail = body["detail"].as_str().expect("detail");
            assert!(detail.contains(named), "{case} {method}: {detail}");
            if coding.is_some() {
                assert_eq!(
                    accept_encoding.as_ref().map(HeaderValue::as_bytes),
                    Some(&b"identity"[..]),
                    "{case} {method}"
                );
            }
        }
    }
    let items = fixture.list(ALICE, "").await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["title"], "kept");
}

#[tokio::test]
async fn create_accepts_charset_parameter() {
    let fixture = Fixture::start().await;
    let response = fixture
        .send(
            fixture
                .request(Method::POST, "/api/v1/item/", Some(ALICE))
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(r#"{"title": "with charset"}"#),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let fixture = Fixture::start().await;
    let body = json!({"title": "a", "description": "x".repeat(300 * 1024)});
    let response = fixture
        .send(
            fixture
                .request(Method::POST, "/api/v1/item/", Some(ALICE))
                .json(&body),
        )
        .await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn get_returns_own_item() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "mine"})).await;
    let response = fixture
        .send(fixture.request(
            Method::GET,
            &format!("/api/v1/item/{}", item["id"]),
            Some(ALICE),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let fetched: Value = response.json().await.expect("item JSON");
    assert_eq!(fetched, item);
}

#[tokio::test]
async fn get_absent_or_foreign_item_is_404() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "alice's"})).await;

    let response = fixture
        .send(fixture.request(
            Method::GET,
            &format!("/api/v1/item/{}", item["id"]),
            Some(BOB),
        ))
        .await;
    let foreign = assert_problem(response, StatusCode::NOT_FOUND).await;

    let response = fixture
        .send(fixture.request(Method::GET, "/api/v1/item/987654", Some(ALICE)))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;

    // Another user's item must be indistinguishable from a missing one.
    assert!(
        !foreign.to_string().contains("alice"),
        "404 leaks the owner: {foreign}"
    );
}

#[tokio::test]
async fn bad_item_ids_are_422() {
    let fixture = Fixture::start().await;
    let ids = [
        "0",
        "-1",
        "abc",
        "1e3",
        "1.5",
        "9223372036854775808",
        "99999999999999999999",
    ];
    for id in ids {
        let path = format!("/api/v1/item/{id}");
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let mut builder = fixture.request(method.clone(), &path, Some(ALICE));
            if method == Method::PUT {
                builder = builder.json(&json!({"title": "x"}));
            }
            let response = fixture.send(builder).await;
            let body = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(error_fields(&body), ["id"], "{method} {path}");
        }
    }

    // The largest i64 is a valid id that simply does not exist.
    let response = fixture
        .send(fixture.request(Method::GET, "/api/v1/item/9223372036854775807", Some(ALICE)))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn update_changes_given_fields_only() {
    let fixture = Fixture::start().await;
    let item = fixture
        .create(ALICE, json!({"title": "old", "description": "keep"}))
        .await;
    let path = format!("/api/v1/item/{}", item["id"]);

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(ALICE))
                .json(&json!({"title": "new"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.expect("item JSON");
    assert_eq!(updated["title"], "new");
    assert_eq!(updated["description"], "keep");
    assert_eq!(updated["id"], item["id"]);
    assert_eq!(updated["owner_id"], ALICE);

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(ALICE))
                .json(&json!({"description": "changed"})),
        )
        .await;
    let updated: Value = response.json().await.expect("item JSON");
    assert_eq!(updated["title"], "new");
    assert_eq!(updated["description"], "changed");

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(ALICE))
                .json(&json!({"description": null})),
        )
        .await;
    let updated: Value = response.json().await.expect("item JSON");
    assert_eq!(updated["description"], Value::Null);

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(ALICE))
                .json(&json!({"title": "both", "description": "set"})),
        )
        .await;
    let updated: Value = response.json().await.expect("item JSON");
    assert_eq!(updated["title"], "both");
    assert_eq!(updated["description"], "set");
}

#[tokio::test]
async fn update_of_foreign_item_is_404_and_unchanged() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "alice's"})).await;
    let path = format!("/api/v1/item/{}", item["id"]);

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(BOB))
                .json(&json!({"title": "bob was here"})),
        )
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, "/api/v1/item/987654", Some(ALICE))
                .json(&json!({"title": "nothing"})),
        )
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;

    let unchanged = fixture.fetch(ALICE, &path).await;
    assert_eq!(unchanged, item);
}

#[tokio::test]
async fn update_rejects_empty_or_invalid_body() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "original"})).await;
    let path = format!("/api/v1/item/{}", item["id"]);

    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("", vec!["body"]),
        ("{}", vec!["body"]),
        (r#"{"title": null}"#, vec!["title"]),
        (r#"{"title": ""}"#, vec!["title"]),
        (r#"{"title": 3}"#, vec!["title"]),
        (r#"{"title": "a\u0000"}"#, vec!["title"]),
        (r#"{"owner_id": "bob"}"#, vec!["owner_id"]),
        (r#"{"title": "a", "title": "b"}"#, vec!["title"]),
    ];
    for (body, fields) in cases {
        let response = fixture
            .send(
                fixture
                    .request(Method::PUT, &path, Some(ALICE))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body),
            )
            .await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), fields, "body {body}");
    }

    // An empty body is 422 even without a Content-Type.
    let response = fixture
        .send(fixture.request(Method::PUT, &path, Some(ALICE)))
        .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(ALICE))
                .header(CONTENT_TYPE, "text/plain")
                .body(r#"{"title": "a"}"#),
        )
        .await;
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let response = fixture
        .send(
            fixture
                .request(Method::PUT, &path, Some(ALICE))
                .header(CONTENT_TYPE, "application/json")
                .body(r#"{"title": "#),
        )
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST).await;

    let unchanged = fixture.fetch(ALICE, &path).await;
    assert_eq!(unchanged, item);
}

#[tokio::test]
async fn delete_returns_item_then_404() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "short-lived"})).await;
    let path = format!("/api/v1/item/{}", item["id"]);

    let response = fixture
        .send(fixture.request(Method::DELETE, &path, Some(ALICE)))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let deleted: Value = response.json().await.expect("item JSON");
    assert_eq!(deleted, item);

    let response = fixture
        .send(fixture.request(Method::DELETE, &path, Some(ALICE)))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;
    assert_eq!(
        fixture.get_status(ALICE, &item["id"]).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn delete_of_foreign_item_is_404_and_kept() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "alice's"})).await;
    let path = format!("/api/v1/item/{}", item["id"]);

    let response = fixture
        .send(fixture.request(Method::DELETE, &path, Some(BOB)))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;
    assert_eq!(fixture.get_status(ALICE, &item["id"]).await, StatusCode::OK);
}

#[tokio::test]
async fn unusable_user_id_is_401_on_every_route() {
    let fixture = Fixture::start().await;
    let item = fixture.create(ALICE, json!({"title": "alice's"})).await;
    let item_path = format!("/api/v1/item/{}", item["id"]);

    let too_long = "a".repeat(256);
    let headers: Vec<Option<HeaderValue>> = vec![
        None,
        Some(HeaderValue::from_static("")),
        Some(HeaderValue::from_str(&too_long).expect("ASCII")),
        Some(HeaderValue::from_static("alice smith")),
        Some(HeaderValue::from_static("tab\there")),
        Some(HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is allowed")),
    ];
    let routes = [
        (Method::GET, "/api/v1/item/"),
        (Method::GET, "/api/v1/item"),
        (Method::POST, "/api/v1/item/"),
        (Method::GET, item_path.as_str()),
        (Method::PUT, item_path.as_str()),
        (Method::DELETE, item_path.as_str()),
    ];

    for header in &headers {
        for (method, path) in &routes {
            let mut builder = fixture.request(method.clone(), path, None);
            if let Some(value) = header {
                builder = builder.header("X-User-Id", value.clone());
            }
            if *method == Method::POST || *method == Method::PUT {
                builder = builder.json(&json!({"title": "intruder"}));
            }
            let response = fixture.send(builder).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {header:?}"
            );
            assert_problem(response, StatusCode::UNAUTHORIZED).await;
        }
    }

    // Two copies of the header are ambiguous, so rejected as well.
    let response = fixture
        .send(
            fixture
                .request(Method::GET, "/api/v1/item/", Some(ALICE))
                .header("X-User-Id", BOB),
        )
        .await;
    assert_problem(response, StatusCode::UNAUTHORIZED).await;

    // 255 bytes is the longest accepted user id.
    let longest = "a".repeat(255);
    assert!(fixture.list(&longest, "").await.is_empty());

    let unchanged = fixture.fetch(ALICE, &item_path).await;
    assert_eq!(unchanged, item);
    assert_eq!(fixture.list(ALICE, "").await.len(), 1);
}

#[tokio::test]
async fn many_unknown_fields_list_twenty() {
    let fixture = Fixture::start().await;
    let mut body = serde_json::Map::new();
    body.insert("title".into(), json!("a"));
    for index in 0..1_000 {
        body.insert(format!("k{index}"), json!(0));
    }

    let response = fixture
        .send(
            fixture
                .request(Method::POST, "/api/v1/item/", Some(ALICE))
                .json(&body),
        )
        .await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem).len(), 20, "{problem}");
    assert_eq!(
        problem["detail"],
        "1000 fields are invalid, and `errors` lists the first 20."
    );
}

#[tokio::test]
async fn email_header_accepts_utf8_only() {
    let fixture = Fixture::start().await;
    let create = |email: HeaderValue| {
        fixture
            .request(Method::POST, "/api/v1/item/", Some(ALICE))
            .header("X-User-Email", email)
            .json(&json!({"title": "mail"}))
    };

    let accepted = [
        HeaderValue::from_static("ada@example.com"),
        HeaderValue::from_bytes("jürgen@bücher.example".as_bytes()).expect("obs-text"),
        HeaderValue::from_static("\"ada lovelace\"@example.com"),
    ];
    for email in accepted {
        let response = fixture.send(create(email.clone())).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{email:?}");
    }

    let rejected = [
        HeaderValue::from_static("a\tb@example.com"),
        HeaderValue::from_bytes(b"caf\xc3@example.com").expect("obs-text"),
        HeaderValue::from_str(&"a".repeat(256)).expect("ASCII"),
    ];
    for email in rejected {
        let response = fixture.send(create(email.clone())).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{email:?}");
        assert_problem(response, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(fixture.list(ALICE, "").await.len(), 3);
}

#[tokio::test]
async fn item_responses_are_not_stored() {
    let fixture = Fixture::start().await;
    let created = fixture.create(ALICE, json!({"title": "private"})).await;
    let own = format!("/api/v1/item/{}", created["id"]);
    let missing = "/api/v1/item/999999999";

    let requests = [
        ("list", Method::GET, "/api/v1/item/", None, StatusCode::OK),
        (
            "list without slash",
            Method::GET,
            "/api/v1/item",
            None,
            StatusCode::OK,
        ),
        (
            "list with bad paging",
            Method::GET,
            "/api/v1/item/?limit=0",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "create",
            Method::POST,
            "/api/v1/item/",
            Some(json!({"title": "new"})),
            StatusCode::CREATED,
        ),
        (
            "create invalid",
            Method::POST,
            "/api/v1/item/",
            Some(json!({"title": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("get", Method::GET, own.as_str(), None, StatusCode::OK),
        (
            "get missing",
            Method::GET,
            missing,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "get bad id",
            Method::GET,
            "/api/v1/item/abc",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "update",
            Method::PUT,
            own.as_str(),
            Some(json!({"title": "changed"})),
            StatusCode::OK,
        ),
        (
            "update missing",
            Method::PUT,
            missing,
            Some(json!({"title": "x"})),
            StatusCode::NOT_FOUND,
        ),
        (
            "method not allowed",
            Method::PATCH,
            own.as_str(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        ("delete", Method::DELETE, own.as_str(), None, StatusCode::OK),
        (
            "delete again",
            Method::DELETE,
            own.as_str(),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (name, method, path, body, status) in requests {
        let mut builder = fixture.request(method, path, Some(ALICE));
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = fixture.send(builder).await;
        assert_eq!(response.status(), status, "{name}");
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(HeaderValue::as_bytes),
            Some(&b"no-store"[..]),
            "{name}"
        );
    }

    let response = fixture
        .send(fixture.request(Method::GET, "/api/v1/item/", None))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn unknown_route_and_method_are_problem_json() {
    let fixture = Fixture::start().await;
    let response = fixture
        .send(fixture.request(Method::GET, "/api/v1/items", Some(ALICE)))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND).await;

    let response = fixture
        .send(fixture.request(Method::PATCH, "/api/v1/item/1", Some(ALICE)))
        .await;
    let allow = response.headers().get("allow").cloned();
    assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    let allow = allow.expect("405 carries Allow");
    let allow = allow.to_str().expect("ASCII");
    for method in ["GET", "PUT", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
}

#[tokio::test]
async fn superuser_sees_and_changes_all_items() {
    let fixture = Fixture::start().await;
    let root = "root-user";
    let mut admin = fixture.database.admin().await;
    sqlx::query("insert into api.superusers (user_id) values ($1)")
        .bind(root)
        .execute(&mut admin)
        .await
        .expect("adding a superuser");

    let alice_item = fixture.create(ALICE, json!({"title": "alice's"})).await;
    let bob_item = fixture.create(BOB, json!({"title": "bob's"})).await;

    let all = fixture.list(root, "").await;
    assert_eq!(all, [alice_item.clone(), bob_item.clone()]);

    let response = fixture
        .send(
            fixture
                .request(
                    Method::PUT,
                    &format!("/api/v1/item/{}", alice_item["id"]),
                    Some(root),
                )
                .json(&json!({"title": "moderated"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let moderated: Value = response.json().await.expect("item JSON");
    assert_eq!(moderated["owner_id"], ALICE);

    let response = fixture
        .send(fixture.request(
            Method::DELETE,
            &format!("/api/v1/item/{}", bob_item["id"]),
            Some(root),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(fixture.list(BOB, "").await.is_empty());

    assert_eq!(fixture.list(ALICE, "").await.len(), 1);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let fixture = Fixture::start().await;
    let response = fixture
        .send(fixture.request(Method::GET, "/api/v1/openapi.json", None))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("OpenAPI JSON");
    assert_eq!(document["openapi"], "3.1.0");

    let paths = document["paths"].as_object().expect("paths object");
    for (path, methods) in [
        ("/api/v1/item/", &["get", "post"][..]),
        ("/api/v1/item", &["get", "post"][..]),
        ("/api/v1/item/{id}", &["get", "put", "delete"][..]),
    ] {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        for method in methods {
            assert!(item.get(*method).is_some(), "{method} {path} missing");
        }
    }
}

#[tokio::test]
async fn health_endpoints_return_200() {
    let fixture = Fixture::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = fixture.send(fixture.request(Method::GET, path, None)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}
