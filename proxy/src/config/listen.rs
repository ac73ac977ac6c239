//! Checks of the listener addresses and the upgrade socket path. Wrong
//! values fail at start-up inside Pingora, which retries a taken address
//! for about 30 s and then panics in its service thread. The process then
//! keeps running, and its admin listener still responds.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Longest Unix socket path, in bytes: Linux's `sun_path` has room for 108 bytes
/// with the terminating NUL, and Pingora 0.9.1 panics on a longer path.
pub(super) const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Returns why `address` cannot be a listen address, if it cannot.
pub(super) fn address_problem(address: SocketAddr) -> Option<&'static str> {
    (address.port() == 0)
        .then_some("has port 0, which would listen on a random port no client knows; give a port")
}

/// Reports whether two listeners on `a` and `b` cannot both bind: they
/// share a port and an address, or one of them is the wildcard address
/// that takes the other's. Pingora leaves `IPV6_V6ONLY` unset, so with
/// Linux's default `net.ipv6.bindv6only = 0` the IPv6 wildcard `[::]`
/// takes the IPv4 addresses too.
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (a, b) = (a.ip().to_canonical(), b.ip().to_canonical());
    a == b || takes(a, b) || takes(b, a)
}

/// Reports whether listening on `wildcard` takes the address `other`.
fn takes(wildcard: IpAddr, other: IpAddr) -> bool {
    match wildcard {
        IpAddr::V4(v4) => v4.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// Returns why `path` cannot be the upgrade socket, if it cannot.
pub(super) fn socket_path_problem(path: &Path) -> Option<String> {
    let length = path.as_os_str().len();
    if length == 0 {
        return Some("must not be empty".to_owned());
    }
    if length > MAX_SOCKET_PATH_BYTES {
        return Some(format!(
            "is {length} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH_BYTES}"
        ));
    }
    if !path.is_absolute() || path.parent().is_none() {
        return Some(
            "must be an absolute file path, such as /run/edge-proxy/upgrade.sock".to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn same_address_and_port_overlap() {
        assert!(overlaps(
            address("127.0.0.1:8080"),
            address("127.0.0.1:8080")
        ));
    }

    #[test]
    fn other_port_never_overlaps() {
        assert!(!overlaps(
            address("0.0.0.0:8080"),
            address("127.0.0.1:8081")
        ));
        assert!(!overlaps(address("[::]:8080"), address("[::]:8081")));
    }

    #[test]
    fn ipv4_wildcard_takes_ipv4_addresses() {
        assert!(overlaps(address("0.0.0.0:8080"), address("127.0.0.1:8080")));
        assert!(overlaps(address("127.0.0.1:8080"), address("0.0.0.0:8080")));
        assert!(!overlaps(address("0.0.0.0:8080"), address("[::1]:8080")));
    }

    #[test]
    fn ipv6_wildcard_takes_both_families() {
        assert!(overlaps(address("[::]:8080"), address("[::1]:8080")));
        assert!(overlaps(address("[::]:8080"), address("0.0.0.0:8080")));
        assert!(overlaps(address("127.0.0.1:8080"), address("[::]:8080")));
    }

    #[test]
    fn ipv4_mapped_address_is_the_ipv4_address() {
        assert!(overlaps(
            address("[::ffff:127.0.0.1]:8080"),
            address("127.0.0.1:8080")
        ));
    }

    #[test]
    fn distinct_addresses_do_not_overlap() {
        assert!(!overlaps(
            address("127.0.0.1:8080"),
            address("127.0.0.2:8080")
        ));
        assert!(!overlaps(address("[::1]:8080"), address("127.0.0.1:8080")));
    }

    #[test]
    fn port_zero_is_rejected() {
        assert!(address_problem(address("127.0.0.1:0")).is_some());
        assert!(address_problem(address("127.0.0.1:8080")).is_none());
    }

    #[test]
    fn socket_path_length_is_limited() {
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH_BYTES - 1));
        assert_eq!(socket_path_problem(Path::new(&longest)), None);
        let too_long = format!("{longest}a");
        let problem = socket_path_problem(Path::new(&too_long)).expect("too long");
        assert!(problem.contains("108 bytes long"), "{problem}");
    }

    #[test]
    fn socket_path_must_be_absolute() {
        assert!(socket_path_problem(Path::new("")).is_some());
        assert!(socket_path_problem(Path::new("upgrade.sock")).is_some());
        assert!(socket_path_problem(Path::new("./upgrade.sock")).is_some());
        assert!(socket_path_problem(Path::new("/")).is_some());
        assert_eq!(socket_path_problem(Path::new("/run/upgrade.sock")), None);
    }
}
