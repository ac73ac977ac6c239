//! edge-proxy writes its log through a writer thread. These tests check
//! that no access event is lost when the process stops right after the
//! requests, on SIGTERM (graceful stop) and on SIGINT (fast stop), and that
//! the log file carries no ANSI colour codes.

use std::time::Duration;

use hanko_edge_tests::edge_proxy::ProxyStack;

/// Requests sent right before the signal.
const REQUESTS: usize = 200;
/// How long the proxy may take to exit after the signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `REQUESTS` requests with distinct paths, stops the proxy with
/// `signal`, and checks that every request has its access event in the log
/// and that `last_message`, logged right before the process exits, is
/// there too.
async fn assert_log_survives_stop(signal: &str, last_message: &str) {
    let mut stack = ProxyStack::start().await;
    for index in 0..REQUESTS {
        let response = stack
            .client
            .get(stack.proxy.url(&format!("/public/flush-{index}")))
            .send()
            .await
            .expect("the proxy answers");
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
    assert!(
        log.contains(last_message),
        "the last line before exit is missing after SIG{signal}:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "the log file contains ANSI escape codes:\n{log}"
    );
}

#[tokio::test]
async fn sigterm_keeps_every_log_line() {
    assert_log_survives_stop("TERM", "graceful stop: no request in flight; exiting").await;
}

#[tokio::test]
async fn sigint_keeps_every_log_line() {
    // Pingora 0.9.1 logs this line when its fast stop has ended.
    assert_log_survives_stop("INT", "All runtimes exited, exiting now").await;
}
