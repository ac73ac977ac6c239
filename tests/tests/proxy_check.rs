//! `edge-proxy check` on the shipped config and on broken ones, and the
//! start-up failures when a listen address is taken or the upgrade socket's
//! directory is open to other users.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hanko_edge_tests::edge_proxy::{run_check, run_check_file};
use hanko_edge_tests::process::{ChildProcess, binary_path, free_loopback_addr};

const VALID: &str = r#"
[proxy]
listen = ["127.0.0.1:18080"]
admin_listen = "127.0.0.1:19090"

[proxy.auth]
hanko_api_url = "http://127.0.0.1:8000"
audience = "localhost"

[[proxy.routes]]
path_prefix = "/api"
upstream = "127.0.0.1:8081"
auth = "required"
"#;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_check_fails(config: &str, expected: &[&str]) {
    let output = run_check(config);
    let message = stderr(&output);
    assert!(
        !output.status.success(),
        "check must fail for:\n{config}\nstdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in:\n{message}");
    }
}

#[test]
fn check_accepts_the_shipped_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let output = run_check_file(&path);

    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("is valid"));
}

#[test]
fn check_accepts_a_minimal_config() {
    let output = run_check(VALID);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
}

#[test]
fn check_rejects_missing_audience() {
    let config = VALID.replace("audience = \"localhost\"\n", "");
    assert_check_fails(&config, &["proxy.auth.audience is missing"]);
}

#[test]
fn check_rejects_unknown_key() {
    let config = VALID.replace("[proxy.auth]\n", "[proxy.auth]\naudiences = [\"x\"]\n");
    assert_check_fails(&config, &["audiences"]);
}

#[test]
fn check_rejects_bad_address() {
    let config = VALID.replace("127.0.0.1:18080", "127.0.0.1:99999");
    assert_check_fails(&config, &["proxy.listen[0]", "127.0.0.1:99999"]);
}

#[test]
fn check_rejects_bad_upstream_and_auth_together() {
    let config = VALID
        .replace("upstream = \"127.0.0.1:8081\"", "upstream = \"nowhere\"")
        .replace("auth = \"required\"", "auth = \"sometimes\"");
    assert_check_fails(
        &config,
        &[
            "proxy.routes[0].upstream[0] = \"nowhere\"",
            "proxy.routes[0].auth = \"sometimes\"",
        ],
    );
}

#[test]
fn check_rejects_plain_http_key_set_off_loopback() {
    let config = VALID.replace("http://127.0.0.1:8000", "http://auth.example.com");
    assert_check_fails(&config, &["proxy.auth.hanko_api_url", "loopback"]);
}

#[test]
fn check_rejects_unreadable_file() {
    let output = run_check_file(Path::new("/nonexistent/edge-proxy.toml"));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("/nonexistent/edge-proxy.toml"));
}

#[test]
fn check_rejects_overlapping_listen_addresses() {
    let config = VALID.replace(
        "listen = [\"127.0.0.1:18080\"]",
        "listen = [\"0.0.0.0:18080\", \"127.0.0.1:18080\"]",
    );
    assert_check_fails(&config, &["proxy.listen[1]", "overlaps \"0.0.0.0:18080\""]);
}

/// Serves `config` from a file in `dir`, expects the process to exit with
/// a failure within 10 s, and returns its output.
async fn serve_expecting_failure(dir: &Path, config: &str, failure: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");

    let mut command = Command::new(binary_path("edge-proxy"));
    command.arg("--config").arg(&path);
    let mut process = ChildProcess::spawn("edge-proxy", command);
    let status = process.wait_exit(Duration::from_secs(10)).await;

    let status = status.unwrap_or_else(|| process.fail(failure));
    assert!(!status.success());
    process.log()
}

#[tokio::test]
async fn serving_on_a_taken_port_exits_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("address");
    let admin = free_loopback_addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = VALID
        .replace("127.0.0.1:18080", &taken_addr.to_string())
        .replace("127.0.0.1:19090", &admin.to_string());

    let log = serve_expecting_failure(dir.path(), &config, "kept running on a taken port").await;

    assert!(log.contains("cannot listen on proxy.listen"), "{log}");
    assert!(log.contains(&taken_addr.to_string()), "{log}");
    drop(taken);
}

#[tokio::test]
async fn shared_upgrade_directory_stops_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let socket = shared.join("upgrade.sock");
    let config = VALID
        .replace("127.0.0.1:18080", &free_loopback_addr().to_string())
        .replace("127.0.0.1:19090", &free_loopback_addr().to_string())
        .replace(
            "[proxy.auth]",
            &format!("upgrade_socket = \"{}\"\n\n[proxy.auth]", socket.display()),
        );

    let log = serve_expecting_failure(
        dir.path(),
        &config,
        "kept running with an upgrade socket others can replace",
    )
    .await;

    assert!(
        log.contains("can be written by other users (mode 1777)"),
        "{log}"
    );
    assert!(log.contains(&shared.display().to_string()), "{log}");
}
