//! item-api's `/metrics` through the real binary: request counters move
//! with the requests they count, and the pool gauges show connections in
//! use and requests waiting while the database holds a lock.

use std::time::{Duration, Instant};

use hanko_edge_tests::item_api::{ItemApi, ItemApiOptions, http_client};
use hanko_edge_tests::pg::TestDatabase;
use reqwest::StatusCode;
use sqlx::Connection as _;

const ALICE: &str = "alice-0001";

async fn scrape(client: &reqwest::Client, api: &ItemApi) -> String {
    let response = client
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("metrics text")
}

/// Returns the value of the sample whose line starts with `series`, or 0
/// when the series has not been created yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("numeric sample"))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn request_counters_follow_requests() {
    let database = TestDatabase::new().await;
    let api = ItemApi::spawn(&database).await;
    let client = http_client();
    let list_ok =
        r#"item_api_http_requests_total{method="GET",route="/api/v1/item/",status="200"}"#;
    let get_404 =
        r#"item_api_http_requests_total{method="GET",route="/api/v1/item/{id}",status="404"}"#;
    let unmatched = r#"item_api_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    let latency_count =
        r#"item_api_http_request_duration_seconds_count{method="GET",route="/api/v1/item/"}"#;

    let before = scrape(&client, &api).await;
    for _ in 0..3 {
        let response = client
            .get(api.url("/api/v1/item/"))
            .header("X-User-Id", ALICE)
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), StatusCode::OK);
    }
    for path in ["/api/v1/item/42", "/api/v1/item/43"] {
        let response = client
            .get(api.url(path))
            .header("X-User-Id", ALICE)
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let response = client
        .get(api.url("/no/such/path"))
        .send()
        .await
        .expect("unknown path");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let after = scrape(&client, &api).await;
    assert_eq!(sample(&after, list_ok) - sample(&before, list_ok), 3.0);
    assert_eq!(sample(&after, get_404) - sample(&before, get_404), 2.0);
    assert_eq!(sample(&after, unmatched) - sample(&before, unmatched), 1.0);
    assert_eq!(
        sample(&after, latency_count) - sample(&before, latency_count),
        3.0
    );
    assert!(
        !after.contains("/api/v1/item/42"),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn pool_gauges_show_in_use_and_waiting() {
    let database = TestDatabase::new().await;
    let api = ItemApi::spawn_with(
        &database,
        ItemApiOptions {
            max_connections: Some(1),
            acquire_timeout_ms: Some(30_000),
            ..ItemApiOptions::default()
        },
    )
    .await;
    let client = http_client();
    let in_use = "item_api_db_pool_connections_in_use";
    let waiting = "item_api_db_pool_waiting";

    // Hold a lock so the first list request keeps the only connection busy
    // and the second waits for it.
    let mut admin = database.admin().await;
    let mut lock = admin.begin().await.expect("begin");
    sqlx::query("lock table api.items in access exclusive mode")
        .execute(&mut *lock)
        .await
        .expect("lock");

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let client = client.clone();
        let url = api.url("/api/v1/item/");
        requests.spawn(async move {
            client
                .get(url)
                .header("X-User-Id", ALICE)
                .send()
                .await
                .expect("list")
                .status()
        });
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&client, &api).await;
        if sample(&text, in_use) == 1.0 && sample(&text, waiting) == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected 1 in use and 1 waiting:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    lock.commit().await.expect("release the lock");
    for status in requests.join_all().await {
        assert_eq!(status, StatusCode::OK);
    }

    // sqlx returns a connection to the pool in a background task after the
    // response is sent, so the gauges settle shortly after.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&client, &api).await;
        if sample(&text, in_use) == 0.0 && sample(&text, waiting) == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected 0 in use and 0 waiting:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
