//! edge-proxy stopping and handing over against the real binary. SIGTERM
//! lets a request in flight finish within the grace period and exits 0, and
//! a request longer than the grace period is cut off. A graceful upgrade (a
//! new process started with `--upgrade`, then SIGQUIT to the old one) moves
//! the listening sockets without a failed request.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hanko_dev::keys::{DEFAULT_KEY_BITS, SigningKey};
use hanko_edge_tests::echo::{EchoServer, Echoed};
use hanko_edge_tests::edge_proxy::{EdgeProxy, ProxyConfig, poll_until, test_client};
use hanko_edge_tests::jwks::JwksServer;
use hanko_edge_tests::process::{ChildProcess, binary_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLL_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound on the requests sent across an upgrade.
const MAX_UPGRADE_REQUESTS: usize = 5_000;

/// Starts a proxy with a `/public` route to `upstream` and the given
/// `[proxy]` lines, such as `grace_period_seconds = 10`.
async fn start_proxy(jwks: &JwksServer, upstream: &EchoServer, proxy_lines: &str) -> EdgeProxy {
    let config = ProxyConfig::new(&jwks.base_url())
        .route(&format!(
            "path_prefix = \"/public\"\nupstream = \"{}\"\nauth = \"none\"",
            upstream.addr()
        ))
        .to_toml()
        .replacen("[proxy]\n", &format!("[proxy]\n{proxy_lines}\n"), 1);
    EdgeProxy::spawn_ready(&config).await
}

#[tokio::test]
async fn slow_request_survives_sigterm() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let mut proxy = start_proxy(&jwks, &upstream, "grace_period_seconds = 10").await;
    let client = test_client();

    // An idle keep-alive connection that already served one request.
    let mut idle = TcpStream::connect(proxy.addr()).await.expect("connects");
    idle.write_all(
        format!(
            "GET /public/idle HTTP/1.1\r\nHost: {}\r\n\r\n",
            proxy.addr()
        )
        .as_bytes(),
    )
    .await
    .expect("writes");
    let mut first = [0_u8; 12];
    idle.read_exact(&mut first)
        .await
        .expect("reads the status line");
    assert_eq!(&first, b"HTTP/1.1 200");

    upstream.set_delay(Duration::from_secs(5));
    let slow_url = proxy.url("/public/slow");
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get(slow_url).send().await }
    });
    let arrived = poll_until(POLL_TIMEOUT, || async { upstream.request_count() >= 2 }).await;
    assert!(arrived, "the slow request did not reach the upstream");

    proxy.process().signal("TERM");
    let signalled = Instant::now();

    // New connections are refused while the slow request is still running.
    let refused = poll_until(Duration::from_secs(3), || async {
        TcpStream::connect(proxy.addr()).await.is_err()
    })
    .await;
    assert!(refused, "the proxy still accepts connections after SIGTERM");
    assert!(
        !slow.is_finished(),
        "the listener closed only after the slow request had finished"
    );

    // The idle connection is closed at once, not left open until the exit.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(500), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the idle keep-alive connection stayed open: {read:?}"
    );
    assert!(
        !slow.is_finished(),
        "the idle connection must close while a request is still running"
    );

    let response = slow
        .await
        .expect("the request task ends")
        .expect("the slow request gets its response");
    assert_eq!(response.status(), 200);
    let echoed = Echoed::from_body(&response.bytes().await.expect("body"));
    assert_eq!(echoed.target(), "/public/slow");

    let status = proxy
        .process()
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the proxy exits within the grace period");
    assert!(status.success(), "exit status {status}:\n{}", proxy.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the proxy waited for the whole grace period although nothing was left: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn request_past_grace_period_is_cut() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let mut proxy = start_proxy(
        &jwks,
        &upstream,
        "grace_period_seconds = 1\nshutdown_timeout_seconds = 1",
    )
    .await;
    upstream.set_delay(Duration::from_secs(30));
    let client = test_client();
    let slow_url = proxy.url("/public/too-slow");
    let slow = tokio::spawn(async move { client.get(slow_url).send().await });
    let arrived = poll_until(POLL_TIMEOUT, || async { upstream.request_count() >= 1 }).await;
    assert!(arrived, "the slow request did not reach the upstream");

    proxy.process().signal("TERM");
    let signalled = Instant::now();
    let status = proxy
        .process()
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the proxy exits after the grace period");
    assert!(status.success(), "exit status {status}:\n{}", proxy.log());
    let stopped_after = signalled.elapsed();
    assert!(
        stopped_after >= Duration::from_millis(900),
        "the proxy exited before the grace period ended: {stopped_after:?}"
    );
    assert!(
        stopped_after < Duration::from_secs(8),
        "grace period 1 s plus shutdown timeout 1 s took {stopped_after:?}"
    );

    let outcome = slow.await.expect("the request task ends");
    assert!(
        outcome.is_err(),
        "a request past the grace period cannot complete: {outcome:?}"
    );
}

#[tokio::test]
async fn graceful_upgrade_drops_no_request() {
    let key = SigningKey::generate(DEFAULT_KEY_BITS).expect("key");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoServer::start().await;
    let mut old = start_proxy(&jwks, &upstream, "grace_period_seconds = 10").await;
    let old_pid = old.process().pid();

    // One new connection per request, so that every request is accepted
    // by whichever process has the listening socket at that moment.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = tokio::spawn({
        let (client, url) = (client.clone(), old.url("/public/upgrade"));
        let (stop, succeeded, failures) = (stop.clone(), succeeded.clone(), failures.clone());
        async move {
            for _ in 0..MAX_UPGRADE_REQUESTS {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(response) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("status {}", response.status())),
                    Err(error) => failures.lock().expect("lock").push(error.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // The new process waits on the upgrade socket (about 5 s at most) for
    // the old one to send its listening sockets after SIGQUIT.
    let upgrade_socket = old
        .config_path()
        .parent()
        .expect("the config sits in a temp dir")
        .join("upgrade.sock");
    let _ = std::fs::remove_file(&upgrade_socket);
    let mut command = Command::new(binary_path("edge-proxy"));
    command
        .arg("--config")
        .arg(old.config_path())
        .arg("--upgrade")
        .env("RUST_LOG", "info");
    let mut new = ChildProcess::spawn("edge-proxy --upgrade", command);
    let waiting = poll_until(POLL_TIMEOUT, || async { upgrade_socket.exists() }).await;
    assert!(
        waiting,
        "the new process never opened {}",
        upgrade_socket.display()
    );
    old.process().signal("QUIT");

    // The old process serves for 5 more seconds (Pingora's close timeout),
    // then stops accepting and exits once its requests are done.
    let status = old
        .process()
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the old process exits after handing over");
    assert!(status.success(), "old exit status {status}:\n{}", old.log());
    assert!(
        new.try_status().is_none(),
        "the new process died:\n{}",
        new.log_tail()
    );

    let served_before = succeeded.load(Ordering::SeqCst);
    let served_after = poll_until(POLL_TIMEOUT, || async {
        succeeded.load(Ordering::SeqCst) >= served_before + 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.expect("the load task ends");
    assert!(
        served_after,
        "no request succeeded after the old process exited"
    );
    let failures = failures.lock().expect("lock").clone();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "failed requests across the upgrade"
    );

    let new_pid = new.pid();
    assert_ne!(new_pid, old_pid);
    let new_access_lines = new
        .log()
        .lines()
        .filter(|line| line.contains("edge_proxy::access") && line.contains("/public/upgrade"))
        .count();
    assert!(
        new_access_lines >= 20,
        "the new process (PID {new_pid}) logged {new_access_lines} requests:\n{}",
        new.log_tail()
    );
    let health = test_client()
        .get(old.admin_url("/healthz"))
        .send()
        .await
        .expect("the admin listener moved to the new process");
    assert_eq!(health.status(), 200);
}
