//! Prometheus metrics of edge-proxy, served in the text format at
//! `GET /metrics` on the admin listener.
//!
//! One process-wide [`Metrics`] struct contains every metric, registered in its
//! own `prometheus::Registry`. Code elsewhere changes them only through the
//! `record_*` functions here, so adding a metric means one field, one line
//! in [`Metrics::new`] and one function. Label values are bounded: the route
//! label (path prefix, with the host when the route has one), a method
//! class, a status class and the stable reason names. A raw path or a user
//! id is never a label.
//!
//! The request path takes no lock: [`RouteMetrics`], built with each
//! runtime, resolves a route's counters on first use and keeps them in a
//! `OnceLock`, and counting is an atomic add. Refusal counters are looked up
//! by reason under prometheus' read lock, which only refused requests pay.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus::core::Collector;
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::runtime::Runtime;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Method classes. Every other method counts as `other`.
const METHOD_CLASSES: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// Status classes. `none` is a request that got no response, for example
/// because the client went away first.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upstream latency buckets in seconds, from 1 ms to 30 s.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    requests_in_flight: IntGauge,
    refusals: IntCounterVec,
    upstream_latency: HistogramVec,
    key_set_fetches: IntCounter,
    key_set_fetch_failures: IntCounter,
    key_set_age: Gauge,
    token_cache_hits: IntCounter,
    token_cache_misses: IntCounter,
    token_cache_entries: IntGauge,
    session_check_calls: IntCounter,
    session_check_failures: IntCounter,
    session_cache_hits: IntCounter,
    session_cache_misses: IntCounter,
    session_accepted_unreachable: IntCounter,
    reloads_succeeded: IntCounter,
    reloads_failed: IntCounter,
    last_reload_successful: IntGauge,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "edge_proxy_requests_total",
                    "Requests answered, by route, method class and status class",
                ),
                &["route", "method", "status_class"],
            ),
        );
        let requests_in_flight = register(
            &registry,
            IntGauge::new(
                "edge_proxy_requests_in_flight",
                "Requests whose headers were read and whose access log is not written yet",
            ),
        );
        let refusals = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "edge_proxy_refusals_total",
                    "Requests the proxy answered itself instead of the upstream, by reason",
                ),
                &["reason"],
            ),
        );
        let upstream_latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "edge_proxy_upstream_latency_seconds",
                    "Time from picking an upstream peer to receiving its response header, by route",
                )
                .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
                &["route"],
            ),
        );
        let key_set_fetches = register(
            &registry,
            IntCounter::new(
                "edge_proxy_key_set_fetches_total",
                "Key set fetches started",
            ),
        );
        let key_set_fetch_failures = register(
            &registry,
            IntCounter::new(
                "edge_proxy_key_set_fetch_failures_total",
                "Key set fetches that failed",
            ),
        );
        let key_set_age = register(
            &registry,
            Gauge::new(
                "edge_proxy_key_set_age_seconds",
                "Seconds since the key set in use was last fetched successfully; NaN before the first success",
            ),
        );
        let token_cache_lookups = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "edge_proxy_token_cache_lookups_total",
                    "Verified-token cache lookups, by result (hit or miss)",
                ),
                &["result"],
            ),
        );
        let token_cache_entries = register(
            &registry,
            IntGauge::new(
                "edge_proxy_token_cache_entries",
                "Tokens in the verified-token cache (approximate)",
            ),
        );
        let session_check_calls = register(
            &registry,
            IntCounter::new(
                "edge_proxy_session_check_calls_total",
                "Calls to Hanko's POST /sessions/validate",
            ),
        );
        let session_check_failures = register(
            &registry,
            IntCounter::new(
                "edge_proxy_session_check_failures_total",
                "Session check calls that failed (connect error, timeout, status other than 200, malformed response)",
            ),
        );
        let session_cache_lookups = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "edge_proxy_session_cache_lookups_total",
                    "Session response cache lookups, by result (hit or miss); concurrent misses for one session share one call",
                ),
                &["result"],
            ),
        );
        let session_accepted_unreachable = register(
            &registry,
            IntCounter::new(
                "edge_proxy_session_accepted_unreachable_total",
                "Locally valid tokens accepted without a session check because Hanko was unreachable",
            ),
        );
        let reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "edge_proxy_config_reloads_total",
                    "Config reloads after SIGHUP, by result (succeeded or failed)",
                ),
                &["result"],
            ),
        );
        let last_reload_successful = register(
            &registry,
            IntGauge::new(
                "edge_proxy_config_last_reload_successful",
                "1 when the last config reload succeeded or none was tried, 0 when it failed",
            ),
        );
        last_reload_successful.set(1);

        Self {
            registry,
            requests,
            requests_in_flight,
            refusals,
            upstream_latency,
            key_set_fetches,
            key_set_fetch_failures,
            key_set_age,
            token_cache_hits: token_cache_lookups.with_label_values(&["hit"]),
            token_cache_misses: token_cache_lookups.with_label_values(&["miss"]),
            token_cache_entries,
            session_check_calls,
            session_check_failures,
            session_cache_hits: session_cache_lookups.with_label_values(&["hit"]),
            session_cache_misses: session_cache_lookups.with_label_values(&["miss"]),
            session_accepted_unreachable,
            reloads_succeeded: reloads.with_label_values(&["succeeded"]),
            reloads_failed: reloads.with_label_values(&["failed"]),
            last_reload_successful,
        }
    }
}

/// Registers `collector` in `registry` and returns it.
fn register<C>(registry: &Registry, collector: prometheus::Result<C>) -> C
where
    C: Collector + Clone + 'static,
{
    let collector = collector.expect("metric names, help texts and labels are valid constants");
    registry
        .register(Box::new(collector.clone()))
        .expect("each metric name is registered once");
    collector
}

/// Renders every metric in the text format, after reading the key set age
/// and the token cache size from `runtime`.
pub fn render(runtime: &Runtime) -> String {
    let metrics = &*METRICS;
    let keys_age = runtime
        .authenticator
        .keys()
        .last_success_age()
        .map_or(f64::NAN, |age| age.as_secs_f64());
    metrics.key_set_age.set(keys_age);
    let cache_entries = runtime
        .authenticator
        .token_cache()
        .map_or(0, |cache| cache.entry_count());
    metrics
        .token_cache_entries
        .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));

    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&metrics.registry.gather(), &mut buffer)
        .expect("encoding registered metrics into a Vec cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// Counts one request that the proxy responded to itself instead of the
/// upstream, under its stable reason name such as `missing_token`.
pub fn record_refusal(reason: &str) {
    METRICS.refusals.with_label_values(&[reason]).inc();
}

/// Counts one key set fetch and, when it failed, one failure.
pub fn record_key_fetch(succeeded: bool) {
    METRICS.key_set_fetches.inc();
    if !succeeded {
        METRICS.key_set_fetch_failures.inc();
    }
}

/// Counts one verified-token cache lookup.
pub fn record_token_cache_lookup(hit: bool) {
    if hit {
        METRICS.token_cache_hits.inc();
    } else {
        METRICS.token_cache_misses.inc();
    }
}

/// Counts one call to Hanko's session validation and, when it failed, one
/// failure.
pub fn record_session_call(succeeded: bool) {
    METRICS.session_check_calls.inc();
    if !succeeded {
        METRICS.session_check_failures.inc();
    }
}

/// Counts one session response cache lookup.
pub fn record_session_cache_lookup(hit: bool) {
    if hit {
        METRICS.session_cache_hits.inc();
    } else {
        METRICS.session_cache_misses.inc();
    }
}

/// Counts one token accepted without a session check because Hanko was
/// unreachable.
pub fn record_session_accepted_unreachable() {
    METRICS.session_accepted_unreachable.inc();
}

/// Counts one config reload.
pub fn record_reload(succeeded: bool) {
    if succeeded {
        METRICS.reloads_succeeded.inc();
    } else {
        METRICS.reloads_failed.inc();
    }
    METRICS.last_reload_successful.set(i64::from(succeeded));
}

/// Returns how many requests are in flight.
pub fn requests_in_flight() -> i64 {
    METRICS.requests_in_flight.get()
}

/// One request in flight: counted while the value lives.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Counts a request as in flight until the returned value is dropped.
    pub fn start() -> Self {
        METRICS.requests_in_flight.inc();
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.requests_in_flight.dec();
    }
}

/// The request counters and latency histogram of one route.
struct RouteHandles {
    label: Box<str>,
    requests: [[OnceLock<IntCounter>; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    upstream_latency: OnceLock<Histogram>,
}

impl RouteHandles {
    fn new(label: &str) -> Self {
        Self {
            label: label.into(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            upstream_latency: OnceLock::new(),
        }
    }

    fn request_counter(&self, method: usize, status: usize) -> &IntCounter {
        self.requests[method][status].get_or_init(|| {
            METRICS.requests.with_label_values(&[
                &*self.label,
                METHOD_CLASSES[method],
                STATUS_CLASSES[status],
            ])
        })
    }

    fn latency_histogram(&self) -> &Histogram {
        self.upstream_latency
            .get_or_init(|| METRICS.upstream_latency.with_label_values(&[&*self.label]))
    }
}

/// Per-route metric handles of one runtime, indexed like its router.
///
/// Routes with the same label in two runtimes share their series, so counts
/// carry on across a reload. Series of a route removed by a reload stay
/// exported, with their last values, until the process restarts.
pub struct RouteMetrics {
    routes: Box<[RouteHandles]>,
    unmatched: RouteHandles,
}

impl RouteMetrics {
    /// Creates handles for routes labelled `labels`, in router order.
    pub fn new<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            routes: labels.into_iter().map(RouteHandles::new).collect(),
            unmatched: RouteHandles::new(UNMATCHED_ROUTE),
        }
    }

    /// Counts one completed request and records how long the upstream took
    /// to send its response header, when one was contacted.
    ///
    /// `route` is the router index (`None` when no route matched) and
    /// `status` the status sent, 0 when none was.
    pub fn record_request(
        &self,
        route: Option<usize>,
        method: &Method,
        status: u16,
        upstream_latency: Option<Duration>,
    ) {
        let handles = route
            .and_then(|index| self.routes.get(index))
            .unwrap_or(&self.unmatched);
        handles
            .request_counter(method_class(method), status_class(status))
            .inc();
        if let Some(latency) = upstream_latency {
            handles.latency_histogram().observe(latency.as_secs_f64());
        }
    }
}

/// Returns the index of `method` in [`METHOD_CLASSES`].
fn method_class(method: &Method) -> usize {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .position(|known| known == method)
        .unwrap_or(KNOWN.len())
}

/// Returns the index of `status` in [`STATUS_CLASSES`].
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn method_classes_are_bounded() {
        assert_eq!(METHOD_CLASSES[method_class(&Method::GET)], "GET");
        assert_eq!(METHOD_CLASSES[method_class(&Method::OPTIONS)], "OPTIONS");
        let custom = Method::from_bytes(b"PROPFIND").expect("a valid method");
        assert_eq!(METHOD_CLASSES[method_class(&custom)], "other");
        assert_eq!(METHOD_CLASSES[method_class(&Method::CONNECT)], "other");
    }

    #[test]
    fn status_classes_are_bounded() {
        assert_eq!(STATUS_CLASSES[status_class(0)], "none");
        assert_eq!(STATUS_CLASSES[status_class(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(204)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(404)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(600)], "none");
    }

    #[test]
    fn route_requests_are_counted_by_label() {
        let routes = RouteMetrics::new(["/metrics-test-a", "/metrics-test-b"]);
        routes.record_request(Some(1), &Method::POST, 201, Some(Duration::from_millis(3)));
        routes.record_request(Some(1), &Method::POST, 201, None);
        routes.record_request(None, &Method::GET, 404, None);

        let text = {
            let mut buffer = Vec::new();
            TextEncoder::new()
                .encode(&METRICS.registry.gather(), &mut buffer)
                .expect("encoding works");
            String::from_utf8(buffer).expect("UTF-8")
        };
        let counted = sample(
            &text,
            r#"edge_proxy_requests_total{method="POST",route="/metrics-test-b",status_class="2xx"}"#,
        );
        assert_eq!(counted, Some(2.0));
        let observed = sample(
            &text,
            r#"edge_proxy_upstream_latency_seconds_count{route="/metrics-test-b"}"#,
        );
        assert_eq!(observed, Some(1.0));
        assert!(
            !text.contains(r#"route="/metrics-test-a""#),
            "an unused route exports no series"
        );
    }

    #[test]
    fn in_flight_guard_counts_until_dropped() {
        // No other unit test starts an `InFlight`, so the gauge moves only
        // here.
        let before = requests_in_flight();
        let guard = InFlight::start();
        assert_eq!(requests_in_flight(), before + 1);
        drop(guard);
        assert_eq!(requests_in_flight(), before);
    }
}
