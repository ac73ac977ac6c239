//! Per-route rate limits: a token bucket per user (or per client address),
//! checked after authentication and before anything goes upstream.
//!
//! Each key gets a GCRA cell (the "generic cell rate algorithm", a token
//! bucket stored as one timestamp): the theoretical arrival time of the
//! next request, in nanoseconds on the limiter's monotonic clock. A request
//! is allowed when moving that time one emission interval (`1 /
//! requests_per_second`) ahead keeps it within `burst` intervals of now.
//! The cells live in a bounded moka cache whose entries expire once they
//! have been idle long enough for the bucket to be full again, so an
//! expired entry and a fresh one mean the same thing.
//!
//! Why not `pingora-limits`: its `Rate` counts events per fixed interval in
//! a count-min sketch. It has no burst, its window edges let twice the rate
//! through, and hash collisions over-count, so one busy user could push an
//! unrelated user over the limit. A per-key bucket keeps users apart and
//! gives an exact `Retry-After`.
//!
//! This module does not decide which key a request gets (the proxy passes
//! the verified user id, else the client address) and writes no response.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Keys tracked per route before moka evicts the least useful ones.
// NOTE: an evicted key starts again with a full bucket. Only a flood of
// distinct keys (users or addresses) causes eviction, and it errs towards
// letting requests through, never towards rejecting a user who kept to the
// limit.
const MAX_KEYS_PER_ROUTE: u64 = 100_000;
/// Shortest idle time before a key's entry expires.
const MIN_IDLE: Duration = Duration::from_secs(1);
const NANOS_PER_SECOND: f64 = 1_000_000_000.0;

/// Validated `rate_limit` of one route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSettings {
    /// Sustained rate allowed per key, in requests per second.
    pub requests_per_second: f64,
    /// Requests a key may send at once after being idle.
    pub burst: u32,
}

/// Whom a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The verified user id (`sub`).
    User(Arc<str>),
    /// The client's IP address, for requests without a verified user;
    /// build it with [`RateKey::address`].
    Address(IpAddr),
}

impl RateKey {
    /// Keys a request by the client's `address`: an IPv4 address alone, an
    /// IPv6 address by its /64 network. One IPv6 host is usually given a
    /// whole /64, and counting each address alone would let it draw on
    /// billions of buckets.
    pub fn address(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !u128::from(u64::MAX);
                Self::Address(IpAddr::V6(network.into()))
            }
            v4 => Self::Address(v4),
        }
    }
}

/// The decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// The request is within the limit.
    Allowed,
    /// The request is over the limit.
    Limited {
        /// Whole seconds until a request would be allowed, at least 1.
        retry_after_seconds: u64,
    },
}

/// The token buckets of one route.
pub struct RateLimiter {
    /// Nanoseconds between two requests at the sustained rate.
    interval_ns: u64,
    /// Nanoseconds the next arrival time may run ahead of now: `burst`
    /// intervals.
    tolerance_ns: u64,
    origin: Instant,
    cells: Cache<RateKey, Arc<AtomicU64>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RateLimiter")
            .field("interval_ns", &self.interval_ns)
            .field("tolerance_ns", &self.tolerance_ns)
            .field("keys", &self.cells.entry_count())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Creates the buckets for `settings`, which validation keeps within
    /// 0.001 to 1,000,000 requests per second and a burst of 1 to 1,000,000.
    pub fn new(settings: RateLimitSettings) -> Self {
        // Float to integer casts saturate, and validation keeps the rate
        // positive, so the interval is at least 1 ns and fits in u64.
        let interval_ns = ((NANOS_PER_SECOND / settings.requests_per_second).round() as u64).max(1);
        let tolerance_ns = interval_ns.saturating_mul(u64::from(settings.burst.max(1)));
        let cells = Cache::builder()
            .max_capacity(MAX_KEYS_PER_ROUTE)
            .time_to_idle(Duration::from_nanos(tolerance_ns).max(MIN_IDLE))
            .build();
        Self {
            interval_ns,
            tolerance_ns,
            origin: Instant::now(),
            cells,
        }
    }

    /// Counts one request against `key` and decides whether it may pass.
    pub fn check(&self, key: RateKey) -> RateDecision {
        let cell = self.cells.get_with(key, || Arc::new(AtomicU64::new(0)));
        let now = self.now_ns();

        let mut arrival = cell.load(Ordering::Acquire);
        loop {
            let next = match gcra_step(arrival, now, self.interval_ns, self.tolerance_ns) {
                Ok(next) => next,
                Err(wait_ns) => {
                    return RateDecision::Limited {
                        retry_after_seconds: retry_after_seconds(wait_ns),
                    };
                }
            };
            match cell.compare_exchange_weak(arrival, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return RateDecision::Allowed,
                Err(current) => arrival = current,
            }
        }
    }

    /// Returns the number of keys tracked (approximate, for metrics).
    pub fn key_count(&self) -> u64 {
        self.cells.entry_count()
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One GCRA step: given the stored theoretical arrival time `arrival` and
/// `now`, returns the new arrival time to store when the request is
/// allowed, or the nanoseconds to wait when it is not.
fn gcra_step(arrival: u64, now: u64, interval_ns: u64, tolerance_ns: u64) -> Result<u64, u64> {
    let next = arrival.max(now).saturating_add(interval_ns);
    let ahead = next - now;
    if ahead <= tolerance_ns {
        Ok(next)
    } else {
        Err(ahead - tolerance_ns)
    }
}

/// Rounds a wait up to whole seconds, at least 1, for `Retry-After`
/// (RFC 9110 section 10.2.3 allows only whole seconds).
fn retry_after_seconds(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(1_000_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn ipv6_addresses_share_their_64() {
        let key = |text: &str| RateKey::address(text.parse().expect("address"));
        assert_eq!(key("2001:db8:0:1::1"), key("2001:db8:0:1:ffff::2"));
        assert_ne!(key("2001:db8:0:1::1"), key("2001:db8:0:2::1"));
        assert_eq!(
            key("2001:db8:0:1::1"),
            RateKey::Address("2001:db8:0:1::".parse().expect("address"))
        );
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }

    fn limiter(requests_per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            requests_per_second,
            burst,
        })
    }

    fn user(name: &str) -> RateKey {
        RateKey::User(name.into())
    }

    #[test]
    fn burst_passes_then_next_request_waits_one_interval() {
        let (interval, tolerance) = (SECOND, 3 * SECOND);
        let mut arrival = 0;
        for _ in 0..3 {
            arrival = gcra_step(arrival, 10 * SECOND, interval, tolerance).expect("within burst");
        }

        assert_eq!(
            gcra_step(arrival, 10 * SECOND, interval, tolerance),
            Err(SECOND)
        );
    }

    #[test]
    fn bucket_refills_at_the_sustained_rate() {
        let (interval, tolerance) = (SECOND, 2 * SECOND);
        let mut arrival = 0;
        for _ in 0..2 {
            arrival = gcra_step(arrival, 0, interval, tolerance).expect("within burst");
        }
        assert!(gcra_step(arrival, 0, interval, tolerance).is_err());

        let half = gcra_step(arrival, SECOND / 2, interval, tolerance);
        assert_eq!(half, Err(SECOND / 2));
        let after_one = gcra_step(arrival, SECOND, interval, tolerance);
        assert_eq!(after_one, Ok(3 * SECOND));
    }

    #[test]
    fn idle_key_gets_a_full_burst_again() {
        let (interval, tolerance) = (SECOND, 2 * SECOND);
        let arrival = gcra_step(0, 0, interval, tolerance).expect("first");
        let arrival = gcra_step(arrival, 0, interval, tolerance).expect("second");

        let later = 100 * SECOND;
        let first = gcra_step(arrival, later, interval, tolerance).expect("refilled");
        assert!(gcra_step(first, later, interval, tolerance).is_ok());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(SECOND), 1);
        assert_eq!(retry_after_seconds(SECOND + 1), 2);
        assert_eq!(retry_after_seconds(0), 1);
    }

    #[test]
    fn limiter_rejects_after_burst() {
        let limiter = limiter(0.5, 3);
        for _ in 0..3 {
            assert_eq!(limiter.check(user("ada")), RateDecision::Allowed);
        }

        match limiter.check(user("ada")) {
            RateDecision::Limited {
                retry_after_seconds,
            } => assert!(
                (1..=2).contains(&retry_after_seconds),
                "{retry_after_seconds}"
            ),
            RateDecision::Allowed => panic!("the fourth request must be limited"),
        }
    }

    #[test]
    fn keys_have_separate_buckets() {
        let limiter = limiter(0.5, 1);
        let address = RateKey::address("127.0.0.1".parse().expect("address"));

        assert_eq!(limiter.check(user("ada")), RateDecision::Allowed);
        assert!(matches!(
            limiter.check(user("ada")),
            RateDecision::Limited { .. }
        ));
        assert_eq!(limiter.check(user("grace")), RateDecision::Allowed);
        assert_eq!(limiter.check(address.clone()), RateDecision::Allowed);
        assert!(matches!(
            limiter.check(address),
            RateDecision::Limited { .. }
        ));
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let limiter = Arc::new(limiter(0.001, 50));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| limiter.check(user("ada")) == RateDecision::Allowed)
                        .count()
                })
            })
            .collect();
        let allowed: usize = threads
            .into_iter()
            .map(|thread| thread.join().expect("thread ends"))
            .sum();

        assert_eq!(allowed, 50);
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let slow = limiter(0.001, 1_000_000);
        assert_eq!(slow.check(user("ada")), RateDecision::Allowed);
        let fast = limiter(1_000_000.0, 1);
        assert_eq!(fast.check(user("ada")), RateDecision::Allowed);
    }
}
