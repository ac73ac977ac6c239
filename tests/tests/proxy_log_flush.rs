//! edge-proxy buffers its access events for up to 100 ms. These tests
//! check that no access event is lost when the process stops right after
//! the requests, on SIGTERM (graceful stop) and on SIGINT (fast stop), and
//! that the log file carries no ANSI colour codes.

use std::time::Duration;

use hanko_edge_tests::edge_proxy::ProxyStack;

/// Requests sent right before the signal. Their access events take less
/// than one 32 KiB batch, so without a flush at exit they would wait for
/// the next flush interval.
const REQUESTS: usize = 60;
/// How long the proxy may take to exit after the signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts a proxy with `RUST_LOG` set to `log_filter`, sends `REQUESTS`
/// requests with distinct paths, stops the proxy with `signal`, and checks
/// that every request has its access event in the log and that
/// `last_message`, when given, is there too.
async fn assert_log_survives_stop(signal: &str, log_filter: &str, last_message: Option<&str>) {
    let mut stack = ProxyStack::start_with_log_filter(|config| config, log_filter).await;
    for index in 0..REQUESTS {
        let response = stack.get(&format!("/public/flush-{index}")).await;
        assert_eq!(response.status(), 200, "request {index}");
    }

    stack.proxy.process().signal(signal);
    let status = stack
        .proxy
        .process()
        .wait_exit(EXIT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("the proxy did not exit within {EXIT_TIMEOUT:?} of SIG{signal}"));
    let log = stack.proxy.log();
    assert!(status.success(), "exit status {status}:\n{log}");

    let logged = (0..REQUESTS)
        .filter(|index| {
            // The closing quote keeps `flush-1` from matching `flush-10`.
            let field = format!("path=\"/public/flush-{index}\"");
            log.lines()
                .any(|line| line.contains("edge_proxy::access") && line.contains(&field))
        })
        .count();
    assert_eq!(logged, REQUESTS, "access events after SIG{signal}:\n{log}");
    if let Some(last_message) = last_message {
        assert!(
            log.contains(last_message),
            "the last line before exit is missing after SIG{signal}:\n{log}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "the log file contains ANSI escape codes:\n{log}"
    );
}

#[tokio::test]
async fn sigterm_keeps_every_log_line() {
    assert_log_survives_stop(
        "TERM",
        "info",
        Some("graceful stop: no request in flight; exiting"),
    )
    .await;
}

#[tokio::test]
async fn sigint_keeps_every_log_line() {
    // Pingora 0.9.1 logs this line when its fast stop has ended.
    assert_log_survives_stop("INT", "info", Some("All runtimes exited, exiting now")).await;
}

/// Any other line written after the access events also writes them out,
/// so the two cases above would pass without the flush at exit. With only
/// access events logged, nothing else does, and this case fails without
/// it. (A graceful stop waits at least 100 ms, long enough for the flush
/// thread, so the SIGTERM case below passes either way.)
#[tokio::test]
async fn sigint_flushes_lone_access_events() {
    assert_log_survives_stop("INT", "warn,edge_proxy::access=info", None).await;
}

#[tokio::test]
async fn sigterm_flushes_lone_access_events() {
    assert_log_survives_stop("TERM", "warn,edge_proxy::access=info", None).await;
}
