//! The real `hanko-dev` binary over HTTP: the key set, tokens from the
//! command line, validation, rotation and revocation without a restart,
//! and keys that survive a restart.

use std::process::Command;
use std::time::Duration;

use hanko_edge_tests::hanko::{HankoDev, decode_header, decode_payload};
use hanko_edge_tests::item_api::http_client;
use hanko_edge_tests::process::{ChildProcess, binary_path};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn user() -> Uuid {
    Uuid::parse_str("c1a7e9d2-4b3f-4e8a-a1b2-c3d4e5f60718").expect("valid UUID")
}

async fn jwks_kids(hanko: &HankoDev) -> Vec<String> {
    let body: Value = http_client()
        .get(hanko.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("JWKS request works")
        .json()
        .await
        .expect("JWKS is JSON");
    body["keys"]
        .as_array()
        .expect("keys is an array")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid is a string").to_owned())
        .collect()
}

async fn validate(hanko: &HankoDev, token: &str) -> Value {
    let response = http_client()
        .post(hanko.url("/sessions/validate"))
        .json(&json!({ "session_token": token }))
        .send()
        .await
        .expect("validate request works");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("validate returns JSON")
}

#[tokio::test]
async fn jwks_is_served_with_max_age() {
    let hanko = HankoDev::spawn().await;

    let response = http_client()
        .get(hanko.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("JWKS request works");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "max-age=600");
    assert!(response.headers().get("etag").is_none());
    let body: Value = response.json().await.expect("JWKS is JSON");
    let keys = body["keys"].as_array().expect("keys is an array");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], hanko.signing_key().kid());
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["e"], "AQAB");
    assert!(hanko.signing_key().bits() >= 2048);
}

#[tokio::test]
async fn cli_token_has_hanko_shape() {
    let hanko = HankoDev::spawn().await;

    let token =
        hanko.token_with_args(&["--sub", &user().to_string(), "--email", "ada@example.com"]);
    let header = decode_header(&token);
    let payload = decode_payload(&token);

    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], hanko.signing_key().kid());
    let mut claim_names: Vec<&str> = payload
        .as_object()
        .expect("payload is an object")
        .keys()
        .map(String::as_str)
        .collect();
    claim_names.sort_unstable();
    assert_eq!(
        claim_names,
        ["aud", "email", "exp", "iat", "session_id", "sub"]
    );
    assert_eq!(payload["sub"], user().to_string());
    assert_eq!(payload["aud"], json!(["localhost"]));
    assert_eq!(
        payload["exp"].as_i64().expect("exp is an integer")
            - payload["iat"].as_i64().expect("iat is an integer"),
        12 * 60 * 60
    );
    assert!(Uuid::parse_str(payload["session_id"].as_str().expect("string")).is_ok());
    assert_eq!(
        payload["email"],
        json!({"address": "ada@example.com", "is_primary": true, "is_verified": true})
    );
}

#[tokio::test]
async fn cli_token_options_set_claims() {
    let hanko = HankoDev::spawn().await;
    let session = Uuid::new_v4();

    let token = hanko.token_with_args(&[
        "--sub",
        &user().to_string(),
        "--ttl",
        "60",
        "--aud",
        "app.example.com",
        "--aud",
        "api",
        "--iss",
        "https://auth.example.com",
        "--username",
        "ada",
        "--session-id",
        &session.to_string(),
    ]);
    let payload = decode_payload(&token);

    assert_eq!(payload["aud"], json!(["app.example.com", "api"]));
    assert_eq!(
        payload["exp"].as_i64().expect("exp is an integer")
            - payload["iat"].as_i64().expect("iat is an integer"),
        60
    );
    assert_eq!(payload["iss"], "https://auth.example.com");
    assert_eq!(payload["username"], "ada");
    assert_eq!(payload["session_id"], session.to_string());
    assert!(payload.get("email").is_none());
}

#[tokio::test]
async fn cli_token_rejects_non_uuid_subject() {
    let hanko = HankoDev::spawn().await;

    let output = Command::new(binary_path("hanko-dev"))
        .args(["token", "--sub", "not-a-uuid", "--data-dir"])
        .arg(hanko.data_dir())
        .output()
        .expect("running hanko-dev works");

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--sub"));
}

#[tokio::test]
async fn validate_accepts_cli_token_by_body_bearer_and_cookie() {
    let hanko = HankoDev::spawn().await;
    let token = hanko.token(user());
    let client = http_client();

    let by_body = validate(&hanko, &token).await;
    let by_bearer: Value = client
        .get(hanko.url("/sessions/validate"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request works")
        .json()
        .await
        .expect("JSON");
    let by_cookie: Value = client
        .get(hanko.url("/sessions/validate"))
        .header("cookie", format!("hanko={token}"))
        .send()
        .await
        .expect("request works")
        .json()
        .await
        .expect("JSON");

    assert_eq!(by_body["is_valid"], true);
    assert_eq!(by_body["claims"]["subject"], user().to_string());
    assert_eq!(
        by_body["claims"]["session_id"],
        decode_payload(&token)["session_id"]
    );
    assert_eq!(by_body["claims"]["audience"], json!(["localhost"]));
    assert_eq!(by_bearer["is_valid"], true);
    assert_eq!(by_cookie["is_valid"], true);
}

#[tokio::test]
async fn validate_rejects_garbage_and_foreign_tokens() {
    let hanko = HankoDev::spawn().await;
    let stranger = hanko_dev::keys::SigningKey::generate(hanko_dev::keys::DEFAULT_KEY_BITS)
        .expect("key generation works");
    let foreign = stranger
        .sign(&hanko_dev::claims::TokenRequest::new(user()).claims())
        .expect("signing works");

    for token in ["x", "a.b.c", foreign.as_str()] {
        let body = validate(&hanko, token).await;
        assert_eq!(body, json!({ "is_valid": false }), "token {token:?}");
    }
}

#[tokio::test]
async fn rotation_is_served_without_restart() {
    let hanko = HankoDev::spawn().await;
    let old_kid = hanko.signing_key().kid().to_owned();
    let old_token = hanko.token(user());

    let new_kid = hanko.rotate();
    let new_token = hanko.token(user());

    assert_ne!(new_kid, old_kid);
    assert_eq!(jwks_kids(&hanko).await, [new_kid.clone(), old_kid]);
    assert_eq!(decode_header(&new_token)["kid"], new_kid);
    assert_eq!(validate(&hanko, &new_token).await["is_valid"], true);
    assert_eq!(validate(&hanko, &old_token).await["is_valid"], true);
}

#[tokio::test]
async fn revoked_session_is_no_longer_valid() {
    let hanko = HankoDev::spawn().await;
    let revoked = hanko.token(user());
    let other = hanko.token(user());
    let session_id = decode_payload(&revoked)["session_id"]
        .as_str()
        .expect("session_id is a string")
        .to_owned();

    hanko.revoke(&session_id);

    assert_eq!(
        validate(&hanko, &revoked).await,
        json!({ "is_valid": false })
    );
    assert_eq!(validate(&hanko, &other).await["is_valid"], true);
}

#[tokio::test]
async fn logout_revokes_the_callers_session() {
    let hanko = HankoDev::spawn().await;
    let token = hanko.token(user());

    let response = http_client()
        .post(hanko.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logout request works");

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(validate(&hanko, &token).await["is_valid"], false);
}

#[tokio::test]
async fn keys_survive_restart() {
    let hanko = HankoDev::spawn().await;
    let kid = hanko.signing_key().kid().to_owned();
    let token = hanko.token(user());

    let restarted = HankoDev::spawn_in(hanko.stop()).await;

    assert_eq!(jwks_kids(&restarted).await, [kid]);
    assert_eq!(validate(&restarted, &token).await["is_valid"], true);
}

#[tokio::test]
async fn serve_rejects_non_loopback_address() {
    let data_dir = tempfile::tempdir().expect("temp dir");

    let mut command = Command::new(binary_path("hanko-dev"));
    command
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data_dir.path());
    // A child the test owns, so a regression that makes it serve is
    // killed after the timeout instead of hanging the run.
    let mut process = ChildProcess::spawn("hanko-dev", command);
    let status = process.wait_exit(Duration::from_secs(10)).await;

    let status = status.unwrap_or_else(|| process.fail("served on a non-loopback address"));
    assert!(!status.success());
    let log = process.log();
    assert!(log.contains("loopback"), "{log}");
}
