//! The whole request path with real processes on loopback: a client,
//! edge-proxy, item-api and PostgreSQL, with tokens from hanko-dev. Every
//! request goes through the proxy; the database is read directly only to
//! check what a request did or did not change.

use std::process::Command;
use std::time::{Duration, SystemTime};

use hanko_dev::claims::TokenRequest;
use hanko_edge_tests::edge_proxy::{EdgeProxy, ProxyConfig, poll_until};
use hanko_edge_tests::hanko::HankoDev;
use hanko_edge_tests::item_api::{ItemApi, http_client};
use hanko_edge_tests::pg::TestDatabase;
use hanko_edge_tests::process::{ChildProcess, binary_path};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const ITEMS: &str = "/api/v1/item/";

/// How long the proxy may take to reach item-api again after it restarts.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

/// PostgreSQL, hanko-dev, item-api and edge-proxy for one test.
struct Stack {
    database: TestDatabase,
    hanko: HankoDev,
    item_api: ItemApi,
    proxy: EdgeProxy,
}

/// A demo user and a token for them.
struct User {
    id: Uuid,
    token: String,
}

/// How a request carries its token.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
    None,
}

impl Stack {
    async fn start() -> Stack {
        let database = TestDatabase::new().await;
        let hanko = HankoDev::spawn().await;
        let item_api = ItemApi::spawn(&database).await;
        let config = ProxyConfig::new(&hanko.api_url()).route(&format!(
            "path_prefix = \"/api\"\nupstream = \"{}\"\nauth = \"required\"",
            item_api.addr()
        ));
        let proxy = EdgeProxy::spawn_ready(&config.to_toml()).await;
        Stack {
            database,
            hanko,
            item_api,
            proxy,
        }
    }

    fn user(&self) -> User {
        let id = Uuid::new_v4();
        User {
            id,
            token: self.hanko.token(id),
        }
    }

    fn items_url(&self) -> String {
        self.proxy.url(ITEMS)
    }

    fn item_url(&self, id: i64) -> String {
        self.proxy.url(&format!("{ITEMS}{id}"))
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        credential: Credential<'_>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = http_client().request(method, url);
        request = match credential {
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::Cookie(token) => request.header("cookie", format!("hanko={token}")),
            Credential::None => request,
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the proxy answers");
        let status = response.status();
        let bytes = response.bytes().await.expect("the body reads");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    /// Sends `method` to `item`'s URL with `user`'s bearer token.
    async fn send_for_item(
        &self,
        method: Method,
        user: &User,
        item: &Value,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = self.item_url(id_of(item));
        self.send(method, &url, Credential::Bearer(&user.token), body)
            .await
    }

    async fn create(&self, user: &User, title: &str) -> Value {
        let (status, item) = self
            .send(
                Method::POST,
                &self.items_url(),
                Credential::Bearer(&user.token),
                Some(json!({ "title": title, "description": format!("{title} in detail") })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "creating {title:?}: {item}");
        item
    }

    async fn list(&self, credential: Credential<'_>) -> Vec<Value> {
        let (status, items) = self
            .send(Method::GET, &self.items_url(), credential, None)
            .await;
        assert_eq!(status, StatusCode::OK, "listing: {items}");
        items.as_array().expect("the list is an array").clone()
    }

    /// Lists `user`'s items through the proxy and returns their titles.
    async fn titles_of(&self, user: &User) -> Vec<String> {
        titles(&self.list(Credential::Bearer(&user.token)).await)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Reads a user's rows straight from the database as the superuser.
    async fn rows_of(&self, user: &User) -> Vec<(i64, String, Option<String>, String)> {
        let mut admin = self.database.admin().await;
        sqlx::query_as(
            "SELECT id, title, description, owner_id FROM api.items WHERE owner_id = $1 ORDER BY id",
        )
        .bind(user.id.to_string())
        .fetch_all(&mut admin)
        .await
        .expect("reading items as the superuser works")
    }
}

fn id_of(item: &Value) -> i64 {
    item["id"].as_i64().expect("an item has an integer id")
}

fn titles(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|item| item["title"].as_str().expect("an item has a title"))
        .collect()
}

#[tokio::test]
async fn users_create_list_get_update_and_delete_their_items() {
    let stack = Stack::start().await;
    let alice = stack.user();
    let bob = stack.user();

    let first = stack.create(&alice, "Water the plants").await;
    let second = stack.create(&alice, "Book tickets").await;
    let bobs = stack.create(&bob, "Renew passport").await;

    assert_eq!(first["owner_id"], alice.id.to_string());
    assert_eq!(bobs["owner_id"], bob.id.to_string());
    assert_eq!(
        stack.titles_of(&alice).await,
        ["Water the plants", "Book tickets"]
    );
    assert_eq!(stack.titles_of(&bob).await, ["Renew passport"]);

    let (status, fetched) = stack.send_for_item(Method::GET, &alice, &first, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, first);

    let (status, updated) = stack
        .send_for_item(
            Method::PUT,
            &alice,
            &second,
            Some(json!({ "title": "Book train tickets" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["title"], "Book train tickets");
    assert_eq!(updated["description"], "Book tickets in detail");

    let (status, deleted) = stack
        .send_for_item(Method::DELETE, &alice, &first, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], first["id"]);

    let (status, _) = stack.send_for_item(Method::GET, &alice, &first, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(stack.titles_of(&alice).await, ["Book train tickets"]);
    assert_eq!(stack.titles_of(&bob).await, ["Renew passport"]);
}

#[tokio::test]
async fn other_users_items_are_404_and_stay_unchanged() {
    let stack = Stack::start().await;
    let alice = stack.user();
    let bob = stack.user();
    let items = [
        stack.create(&alice, "First").await,
        stack.create(&alice, "Second").await,
    ];
    let before = stack.rows_of(&alice).await;

    for item in &items {
        let url = stack.item_url(id_of(item));
        let bearer = Credential::Bearer(&bob.token);

        let (get, get_body) = stack.send(Method::GET, &url, bearer, None).await;
        let (put, _) = stack
            .send(
                Method::PUT,
                &url,
                bearer,
                Some(json!({ "title": "Taken over" })),
            )
            .await;
        let (delete, _) = stack.send(Method::DELETE, &url, bearer, None).await;

        assert_eq!(get, StatusCode::NOT_FOUND, "GET {url}");
        assert_eq!(get_body["status"], 404, "GET {url} body");
        assert_eq!(put, StatusCode::NOT_FOUND, "PUT {url}");
        assert_eq!(delete, StatusCode::NOT_FOUND, "DELETE {url}");
    }

    assert!(stack.list(Credential::Bearer(&bob.token)).await.is_empty());
    assert_eq!(stack.rows_of(&alice).await, before);
    assert_eq!(stack.list(Credential::Bearer(&alice.token)).await, items);
}

#[tokio::test]
async fn superuser_lists_everyones_items() {
    let stack = Stack::start().await;
    let alice = stack.user();
    let bob = stack.user();
    let admin = stack.user();
    let alices = stack.create(&alice, "Alice's item").await;
    stack.create(&bob, "Bob's item").await;

    let mut connection = stack.database.admin().await;
    sqlx::query("INSERT INTO api.superusers (user_id) VALUES ($1)")
        .bind(admin.id.to_string())
        .execute(&mut connection)
        .await
        .expect("inserting a superuser works");

    let everything = stack.list(Credential::Bearer(&admin.token)).await;
    let (status, fetched) = stack
        .send_for_item(Method::GET, &admin, &alices, None)
        .await;

    assert_eq!(titles(&everything), ["Alice's item", "Bob's item"]);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, alices);
    assert_eq!(stack.titles_of(&alice).await, ["Alice's item"]);
}

#[tokio::test]
async fn hanko_cookie_works_like_bearer() {
    let stack = Stack::start().await;
    let alice = stack.user();

    let (status, created) = stack
        .send(
            Method::POST,
            &stack.items_url(),
            Credential::Cookie(&alice.token),
            Some(json!({ "title": "Sent with a cookie" })),
        )
        .await;
    let by_cookie = stack.list(Credential::Cookie(&alice.token)).await;
    let by_bearer = stack.list(Credential::Bearer(&alice.token)).await;

    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["owner_id"], alice.id.to_string());
    assert_eq!(titles(&by_cookie), ["Sent with a cookie"]);
    assert_eq!(by_cookie, by_bearer);
}

#[tokio::test]
async fn client_user_id_header_cannot_impersonate() {
    let stack = Stack::start().await;
    let alice = stack.user();
    let bob = stack.user();
    stack.create(&alice, "Alice's secret").await;
    stack.create(&bob, "Bob's own").await;
    let client = http_client();

    let spoofed_list: Value = client
        .get(stack.items_url())
        .bearer_auth(&bob.token)
        .header("X-User-Id", alice.id.to_string())
        .header("x_user_id", alice.id.to_string())
        .send()
        .await
        .expect("the proxy answers")
        .json()
        .await
        .expect("JSON");
    let spoofed_create = client
        .post(stack.items_url())
        .bearer_auth(&bob.token)
        .header("X-User-Id", alice.id.to_string())
        .json(&json!({ "title": "Planted" }))
        .send()
        .await
        .expect("the proxy answers");
    let created_status = spoofed_create.status();
    let created: Value = spoofed_create.json().await.expect("JSON");
    let without_token = client
        .get(stack.items_url())
        .header("X-User-Id", alice.id.to_string())
        .send()
        .await
        .expect("the proxy answers");

    assert_eq!(
        titles(spoofed_list.as_array().expect("array")),
        ["Bob's own"]
    );
    assert_eq!(created_status, StatusCode::CREATED);
    assert_eq!(created["owner_id"], bob.id.to_string());
    assert_eq!(without_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(stack.titles_of(&alice).await, ["Alice's secret"]);
}

#[tokio::test]
async fn missing_expired_and_wrong_audience_tokens_get_401() {
    let stack = Stack::start().await;
    let user = Uuid::new_v4();
    let mut expired = TokenRequest::new(user);
    expired.issued_at = Some(SystemTime::now() - Duration::from_secs(2 * 60 * 60));
    expired.ttl = Duration::from_secs(60 * 60);
    let mut wrong_audience = TokenRequest::new(user);
    wrong_audience.audience = vec!["app.example.com".to_owned()];
    let valid = stack.hanko.sign(&TokenRequest::new(user));

    let cases = [
        ("no token", Credential::None),
        ("expired", Credential::Bearer(&stack.hanko.sign(&expired))),
        (
            "wrong audience",
            Credential::Bearer(&stack.hanko.sign(&wrong_audience)),
        ),
        (
            "expired cookie",
            Credential::Cookie(&stack.hanko.sign(&expired)),
        ),
    ];
    for (case, credential) in cases {
        let (status, body) = stack
            .send(Method::GET, &stack.items_url(), credential, None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        assert_eq!(body["status"], 401, "{case}: {body}");
    }

    let (status, body) = stack
        .send(
            Method::GET,
            &stack.items_url(),
            Credential::Bearer(&valid),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same user with a valid token: {body}"
    );
}

#[tokio::test]
async fn rotated_in_key_works_without_proxy_restart() {
    let mut stack = Stack::start().await;
    let alice = stack.user();
    stack.create(&alice, "Made before rotation").await;

    let new_kid = stack.hanko.rotate();
    let new_token = stack.hanko.token(alice.id);

    assert_eq!(
        hanko_edge_tests::hanko::decode_header(&new_token)["kid"],
        new_kid
    );
    assert_eq!(
        titles(&stack.list(Credential::Bearer(&new_token)).await),
        ["Made before rotation"]
    );
    assert_eq!(
        stack.titles_of(&alice).await,
        ["Made before rotation"],
        "the old key stays published"
    );
    assert!(
        stack.proxy.process().try_status().is_none(),
        "the proxy process kept running throughout"
    );
}

#[tokio::test]
async fn proxy_returns_502_while_item_api_is_down_and_recovers() {
    let mut stack = Stack::start().await;
    let alice = stack.user();
    stack.create(&alice, "Survives the outage").await;

    stack.item_api.process().stop();
    let (status, body) = stack
        .send(
            Method::GET,
            &stack.items_url(),
            Credential::Bearer(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["status"], 502, "{body}");

    let mut command = Command::new(binary_path("item-api"));
    command
        .arg("serve")
        .arg("--config")
        .arg(stack.item_api.config_path())
        .env_remove("DATABASE_URL");
    let mut restarted = ChildProcess::spawn("item-api (restarted)", command);
    restarted
        .wait_healthy(&format!("http://{}/healthz", stack.item_api.addr()))
        .await;

    let recovered = poll_until(RECOVERY_DEADLINE, || async {
        let (status, _) = stack
            .send(
                Method::GET,
                &stack.items_url(),
                Credential::Bearer(&alice.token),
                None,
            )
            .await;
        status == StatusCode::OK
    })
    .await;
    assert!(recovered, "the proxy still fails after item-api came back");
    assert_eq!(stack.titles_of(&alice).await, ["Survives the outage"]);
}

/// Runs `curl` with `args` and returns the HTTP status and the body.
async fn curl(args: &[&str]) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .await
        .expect("running curl works; install the Debian package curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("curl prints UTF-8 here");
    let (body, status) = text
        .rsplit_once('\n')
        .expect("curl printed the status line");
    (status.parse().expect("a numeric status"), body.to_owned())
}

#[tokio::test]
async fn curl_reaches_items_through_the_proxy() {
    let stack = Stack::start().await;
    let alice = stack.user();
    let bearer = format!("Authorization: Bearer {}", alice.token);
    let cookie = format!("hanko={}", alice.token);
    let url = stack.items_url();

    let (created_status, created) = curl(&[
        "-X",
        "POST",
        &url,
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"title": "Sent by curl"}"#,
    ])
    .await;
    let (list_status, listed) = curl(&[&url, "-H", &bearer]).await;
    let (cookie_status, by_cookie) = curl(&[&url, "-b", &cookie]).await;
    let (anonymous_status, anonymous) = curl(&[&url]).await;

    assert_eq!(created_status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).expect("JSON");
    assert_eq!(created["owner_id"], alice.id.to_string());
    assert_eq!(list_status, 200, "{listed}");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed, json!([created]));
    assert_eq!(cookie_status, 200, "{by_cookie}");
    assert_eq!(
        serde_json::from_str::<Value>(&by_cookie).expect("JSON"),
        listed
    );
    assert_eq!(anonymous_status, 401, "{anonymous}");
}
