//! The client of a request, and the `X-Forwarded-*` headers that name it
//! to the upstream.
//!
//! By default the TCP peer is the client: every forwarding header a client
//! sends describes hops the proxy cannot vouch for, so the upstream gets
//! `X-Forwarded-For` with the peer's address only. Behind a load balancer or
//! TLS terminator that peer is the same machine for every request, so
//! `proxy.trusted_proxies` lists the addresses whose forwarding headers are
//! believed. For a request from such a peer, the client is the rightmost
//! `X-Forwarded-For` entry that is not itself a trusted proxy, as with
//! nginx's realip module and `real_ip_recursive on`.
//! Entries left of the client were written by the client and are dropped.
//! The trusted peer's `X-Forwarded-Proto` and `X-Forwarded-Host` are kept.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;
use http::header::HeaderMap;
use ipnet::IpNet;

/// The `X-Forwarded-For` header, as a lower-case name for lookups.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose forwarding headers the proxy believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

/// The client of one request, as far as the proxy can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address: rate limits count per this address.
    pub address: IpAddr,
    /// The `X-Forwarded-For` value for the upstream when the TCP peer is a
    /// trusted proxy: the client, then each trusted hop up to the peer.
    pub chain: Option<HeaderValue>,
}

impl Client {
    /// Reports whether the TCP peer is a trusted proxy, whose
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are then passed on.
    pub fn via_trusted_proxy(&self) -> bool {
        self.chain.is_some()
    }
}

impl TrustedProxies {
    /// Trusts the peers in `networks`.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    /// Reports whether `address` is in one of the trusted networks.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// Works out the client of a request from TCP peer `peer` with request
    /// headers `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return Client {
                address: peer,
                chain: None,
            };
        }

        // Walks the chain from the nearest hop outwards. `hops` collects the
        // verified addresses, nearest first, ending with the client.
        let mut hops = vec![peer];
        'walk: for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(text) = value.to_str() else {
                break;
            };
            for entry in text.rsplit(',') {
                // An entry that is no address ends the walk: nothing left of
                // it can be placed, so the nearest trusted hop is the client.
                let Some(address) = parse_entry(entry) else {
                    break 'walk;
                };
                hops.push(address);
                if !self.contains(address) {
                    break 'walk;
                }
            }
        }

        let address = *hops.last().expect("hops starts with the peer");
        Client {
            address,
            chain: Some(chain_value(&hops)),
        }
    }
}

/// Reads a trusted proxy as written in the config: a network in CIDR form,
/// or a single address.
pub fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// Reads one `X-Forwarded-For` entry: an IP address, optionally with a
/// port (`192.0.2.1:80`, `[2001:db8::1]:80`), as some load balancers write.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// Formats `hops`, nearest first, as an `X-Forwarded-For` value, client
/// first.
fn chain_value(hops: &[IpAddr]) -> HeaderValue {
    let mut text = String::with_capacity(hops.len() * 17);
    for (index, hop) in hops.iter().rev().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        write!(text, "{hop}").expect("writing to a String cannot fail");
    }
    HeaderValue::try_from(text).expect("IP addresses in text are valid header characters")
}

/// The scheme a trusted proxy reports in `X-Forwarded-Proto`: `https` when
/// its last entry is `https`, `http` otherwise.
pub fn trusted_scheme(headers: &HeaderMap) -> &'static str {
    let last = headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.rsplit(',').next())
        .map(str::trim);
    match last {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            networks
                .iter()
                .map(|network| parse_network(network).expect("network"))
                .collect(),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn chain(client: &Client) -> Option<&str> {
        client
            .chain
            .as_ref()
            .map(|value| value.to_str().expect("text"))
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let client = proxies.client(
            ip("203.0.113.9"),
            &headers(&[("x-forwarded-for", "198.51.100.1")]),
        );
        assert_eq!(client.address, ip("203.0.113.9"));
        assert!(!client.via_trusted_proxy());
        assert_eq!(chain(&client), None);
    }

    #[test]
    fn empty_list_trusts_nobody() {
        let client = TrustedProxies::default().client(
            ip("127.0.0.1"),
            &headers(&[("x-forwarded-for", "198.51.100.1")]),
        );
        assert_eq!(client.address, ip("127.0.0.1"));
        assert!(!client.via_trusted_proxy());
    }

    #[test]
    fn trusted_peer_names_the_client() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let client = proxies.client(
            ip("10.0.0.5"),
            &headers(&[("x-forwarded-for", "192.0.2.66, 198.51.100.1")]),
        );
        assert_eq!(client.address, ip("198.51.100.1"));
        assert!(client.via_trusted_proxy());
        // The client's own claim, 192.0.2.66, is dropped.
        assert_eq!(chain(&client), Some("198.51.100.1, 10.0.0.5"));
    }

    #[test]
    fn trusted_hops_are_skipped() {
        let proxies = trusted(&["10.0.0.0/8", "192.0.2.7"]);
        let client = proxies.client(
            ip("10.0.0.5"),
            &headers(&[
                ("x-forwarded-for", "192.0.2.66, 198.51.100.1"),
                ("x-forwarded-for", "192.0.2.7,10.1.1.1"),
            ]),
        );
        assert_eq!(client.address, ip("198.51.100.1"));
        assert_eq!(
            chain(&client),
            Some("198.51.100.1, 192.0.2.7, 10.1.1.1, 10.0.0.5")
        );
    }

    #[test]
    fn missing_header_leaves_the_peer() {
        let proxies = trusted(&["10.0.0.5/32"]);
        let client = proxies.client(ip("10.0.0.5"), &HeaderMap::new());
        assert_eq!(client.address, ip("10.0.0.5"));
        assert!(client.via_trusted_proxy());
        assert_eq!(chain(&client), Some("10.0.0.5"));
    }

    #[test]
    fn all_trusted_hops_give_the_farthest() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let client = proxies.client(
            ip("10.0.0.5"),
            &headers(&[("x-forwarded-for", "10.2.2.2, 10.1.1.1")]),
        );
        assert_eq!(client.address, ip("10.2.2.2"));
    }

    #[test]
    fn garbage_entry_stops_the_walk() {
        let proxies = trusted(&["10.0.0.0/8"]);
        for value in ["198.51.100.1, unknown, 10.1.1.1", "198.51.100.1,,10.1.1.1"] {
            let client = proxies.client(ip("10.0.0.5"), &headers(&[("x-forwarded-for", value)]));
            assert_eq!(client.address, ip("10.1.1.1"), "{value}");
            assert_eq!(chain(&client), Some("10.1.1.1, 10.0.0.5"), "{value}");
        }
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses() {
        let proxies = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let client = proxies.client(
            ip("::ffff:10.0.0.5"),
            &headers(&[(
                "x-forwarded-for",
                "[2001:db9::1]:443, 2001:db8::9, 10.1.1.1:8080",
            )]),
        );
        assert_eq!(client.address, ip("2001:db9::1"));
        assert_eq!(
            chain(&client),
            Some("2001:db9::1, 2001:db8::9, 10.1.1.1, 10.0.0.5")
        );
    }

    #[test]
    fn scheme_from_trusted_proxy() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[], "http"),
            (&[("x-forwarded-proto", "https")], "https"),
            (&[("x-forwarded-proto", "HTTPS")], "https"),
            (&[("x-forwarded-proto", "https, http")], "http"),
            (&[("x-forwarded-proto", "ftp")], "http"),
        ];
        for (pairs, expected) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_str(value).expect("value"));
            }
            assert_eq!(trusted_scheme(&map), expected, "{pairs:?}");
        }
    }
}
