//! The client of a request, and the `X-Forwarded-*` headers that name it
//! to the upstream.
//!
//! By default the TCP peer is the client: every forwarding header a client
//! sends describes hops the proxy cannot vouch for, so the upstream gets
//! `X-Forwarded-For` with the peer's address only. Behind a load balancer
//! that peer is the same machine for every request, so
//! `proxy.trusted_proxies` lists the addresses whose forwarding headers are
//! believed. For a request from such a peer, the client is the rightmost
//! `X-Forwarded-For` entry that is not itself a trusted proxy, as with
//! nginx's realip module and `real_ip_recursive on`. Entries left of the
//! client were written by the client and are dropped. The trusted peer's
//! `X-Forwarded-Proto` is kept, and so are its other `X-Forwarded-*`
//! headers, which the proxy removes when any other peer sends them.
//! `X-Forwarded-Host` is never kept, nor are client address headers such
//! as `True-Client-IP`: many load balancers pass a client's value through
//! unchanged.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use http::header::HeaderMap;
use http::{HeaderName, HeaderValue};
use ipnet::{IpNet, Ipv4Net};

/// `X-Forwarded-For`: the client, then each hop.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`: the client alone.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `Forwarded` (RFC 7239), which the proxy removes without reading it.
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Every forwarding header the proxy sets or removes on the upstream
/// request.
pub static FORWARDING_HEADERS: [&HeaderName; 5] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_REAL_IP,
    &FORWARDED,
];

/// Headers, besides `X-Real-IP` and `X-Forwarded-For`, that frameworks
/// and client-address libraries read as the client's address. The list
/// cannot be complete. Load balancers commonly pass a client's value on
/// unchanged, so the proxy removes these from every peer's requests,
/// trusted or not.
pub static CLIENT_ADDRESS_HEADERS: [&str; 12] = [
    "true-client-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "cf-pseudo-ipv4",
    "fastly-client-ip",
    "x-appengine-user-ip",
    "x-envoy-external-address",
    "x-original-forwarded-for",
    "x-forwarded",
    "forwarded-for",
];

/// Every header starting with this was set by a proxy in front, or claims
/// to be. Besides the ones the proxy sets itself, only those in
/// [`TRUSTED_REQUEST_HEADERS`] pass, and only from a trusted proxy. The
/// rest, such as oauth2-proxy's `X-Forwarded-User` or Envoy's
/// `X-Forwarded-Client-Cert`, can carry an identity and never pass.
pub const FORWARDED_PREFIX: &str = "x-forwarded-";

/// Headers outside `X-Forwarded-*` that frameworks read as the scheme the
/// client used.
pub static SCHEME_HEADERS: [&str; 3] = ["front-end-https", "x-url-scheme", "x-scheme"];

/// The headers describing the client's request (port, path prefix,
/// scheme) that a trusted proxy's requests keep. From any other peer they
/// are removed.
pub static TRUSTED_REQUEST_HEADERS: [&str; 9] = [
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-server",
    "front-end-https",
    "x-url-scheme",
    "x-scheme",
];

/// Maximum number of `X-Forwarded-For` addresses read for one request.
/// Real chains have a few hops. On a longer one, the last trusted hop read
/// is taken as the client.
const MAX_HOPS: usize = 32;

/// The widest networks accepted. Every address in a listed network can
/// name any client, so wider ones are refused as likely mistakes.
const MIN_IPV4_PREFIX: u8 = 8;
const MIN_IPV6_PREFIX: u8 = 32;

/// The networks whose forwarding headers the proxy believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

/// The client of one request, as far as the proxy can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address, which rate limits count (an IPv6 one by its
    /// /64 network).
    pub address: IpAddr,
    /// The `X-Forwarded-For` value for the upstream when the TCP peer is a
    /// trusted proxy: the client, then each trusted hop up to the peer.
    pub chain: Option<HeaderValue>,
}

impl Client {
    /// Reports whether the TCP peer is a trusted proxy, whose
    /// `X-Forwarded-Proto` is then passed on.
    pub fn via_trusted_proxy(&self) -> bool {
        self.chain.is_some()
    }
}

/// The reason a `trusted_proxies` entry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkProblem {
    /// Neither an IP address nor a network in CIDR form.
    NotAnAddress,
    /// A network written with host bits, such as `10.1.2.3/8`.
    HostBitsSet {
        /// The network the prefix describes.
        network: IpNet,
        /// The single address written.
        address: IpAddr,
    },
    /// A prefix shorter than the minimum for its address family.
    TooBroad {
        /// The network the entry covers.
        network: IpNet,
        /// The shortest prefix accepted.
        minimum: u8,
    },
}

impl fmt::Display for NetworkProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnAddress => {
                formatter.write_str("is not an IP address or a network such as 10.0.3.0/24")
            }
            Self::HostBitsSet { network, address } => write!(
                formatter,
                "has host bits set; write {network} for the network or {address} for one address"
            ),
            Self::TooBroad { network, minimum } => write!(
                formatter,
                "covers {network}, wider than /{minimum}, and any address in a listed network \
                 can set any client address; list only the proxies in front"
            ),
        }
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
        // verified addresses, nearest first, ending with the client. Each
        // entry is decoded on its own: proxies append to the client's line,
        // and a byte the client put there must spoil only its own entry.
        let mut hops = vec![peer];
        'walk: for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            for entry in value.as_bytes().rsplit(|byte| *byte == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                // An entry that is no address ends the walk: nothing left of
                // it can be placed, so the nearest trusted hop is the client.
                let Some(address) = parse_entry(entry) else {
                    break 'walk;
                };
                hops.push(address);
                if !self.contains(address) || hops.len() > MAX_HOPS {
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
/// or a single address. IPv4-mapped IPv6 networks become IPv4 networks,
/// because peers are compared in their IPv4 form.
pub fn parse_network(text: &str) -> Result<IpNet, NetworkProblem> {
    let written = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| NetworkProblem::NotAnAddress)?;
    let network = unmap(written);
    // Width first, so the host-bits message never suggests a network that
    // is refused next.
    let minimum = match network {
        IpNet::V4(_) => MIN_IPV4_PREFIX,
        IpNet::V6(_) => MIN_IPV6_PREFIX,
    };
    if network.prefix_len() < minimum {
        return Err(NetworkProblem::TooBroad {
            network: network.trunc(),
            minimum,
        });
    }
    if network.trunc() != network {
        return Err(NetworkProblem::HostBitsSet {
            network: network.trunc(),
            address: network.addr(),
        });
    }
    Ok(network)
}

/// Turns `::ffff:10.0.0.0/104` into `10.0.0.0/8`.
fn unmap(network: IpNet) -> IpNet {
    if let IpNet::V6(v6) = network
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        let prefix = v6.prefix_len() - 96;
        return Ipv4Net::new(v4, prefix)
            .expect("a mapped prefix of 96 to 128 leaves 0 to 32")
            .into();
    }
    network
}

/// Reads one `X-Forwarded-For` entry: an IP address, optionally in
/// brackets or with a port (`192.0.2.1:80`, `[2001:db8::1]:80`), as some
/// load balancers write.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?;
    let unbracketed = entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(entry);
    unbracketed
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

/// Returns the scheme a trusted proxy reports in `X-Forwarded-Proto`:
/// `https` when the last non-empty entry of its last line is `https`,
/// else `http`.
pub fn trusted_scheme(headers: &HeaderMap) -> &'static str {
    let last = headers
        .get_all(&X_FORWARDED_PROTO)
        .iter()
        .next_back()
        .and_then(|value| {
            value
                .as_bytes()
                .rsplit(|byte| *byte == b',')
                .map(<[u8]>::trim_ascii)
                .find(|entry| !entry.is_empty())
        });
    match last {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"https") => "https",
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
        let client = proxies.client(
            ip("10.0.0.5"),
            &headers(&[("x-forwarded-for", "198.51.100.1, unknown, 10.1.1.1")]),
        );
        assert_eq!(client.address, ip("10.1.1.1"));
        assert_eq!(chain(&client), Some("10.1.1.1, 10.0.0.5"));
    }

    #[test]
    fn empty_entries_are_skipped() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let client = proxies.client(
            ip("10.0.0.5"),
            &headers(&[("x-forwarded-for", "198.51.100.1,, ,10.1.1.1,")]),
        );
        assert_eq!(client.address, ip("198.51.100.1"));
        assert_eq!(chain(&client), Some("198.51.100.1, 10.1.1.1, 10.0.0.5"));
    }

    #[test]
    fn non_ascii_entry_spoils_only_itself() {
        // A balancer appended the client's address to a line the client
        // started with bytes that are not ASCII.
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xc3\xa9, 198.51.100.1").expect("value"),
        );
        let client = trusted(&["10.0.0.0/8"]).client(ip("10.0.0.5"), &map);
        assert_eq!(client.address, ip("198.51.100.1"));
    }

    #[test]
    fn long_chain_stops_at_the_cap() {
        let entries: Vec<String> = (1..=40).map(|hop| format!("10.9.0.{hop}")).collect();
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_str(&entries.join(", ")).expect("value"),
        );
        let client = trusted(&["10.0.0.0/8"]).client(ip("10.0.0.5"), &map);
        // The peer and the 32 rightmost entries were read.
        assert_eq!(client.address, ip("10.9.0.9"));
        let chain = chain(&client).expect("a chain");
        assert_eq!(chain.split(", ").count(), MAX_HOPS + 1);
    }

    #[test]
    fn bracketed_address_without_port() {
        let client = trusted(&["10.0.0.0/8"]).client(
            ip("10.0.0.5"),
            &headers(&[("x-forwarded-for", "[2001:db9::1]")]),
        );
        assert_eq!(client.address, ip("2001:db9::1"));
    }

    #[test]
    fn networks_are_checked() {
        let net = |text: &str| text.parse::<IpNet>().expect("network");
        let cases = [
            ("10.0.3.0/24", Ok(net("10.0.3.0/24"))),
            ("192.0.2.7", Ok(net("192.0.2.7/32"))),
            ("::ffff:10.0.0.0/104", Ok(net("10.0.0.0/8"))),
            ("::ffff:192.0.2.7", Ok(net("192.0.2.7/32"))),
            ("2001:db8::/32", Ok(net("2001:db8::/32"))),
            ("", Err(NetworkProblem::NotAnAddress)),
            ("lb.example.com", Err(NetworkProblem::NotAnAddress)),
            (" 10.0.0.1", Err(NetworkProblem::NotAnAddress)),
            ("10.0.0.0/33", Err(NetworkProblem::NotAnAddress)),
            (
                "10.1.2.3/8",
                Err(NetworkProblem::HostBitsSet {
                    network: net("10.0.0.0/8"),
                    address: ip("10.1.2.3"),
                }),
            ),
            (
                "0.0.0.0/1",
                Err(NetworkProblem::TooBroad {
                    network: net("0.0.0.0/1"),
                    minimum: 8,
                }),
            ),
            (
                "10.1.2.3/4",
                Err(NetworkProblem::TooBroad {
                    network: net("0.0.0.0/4"),
                    minimum: 8,
                }),
            ),
            (
                "::ffff:0:0/96",
                Err(NetworkProblem::TooBroad {
                    network: net("0.0.0.0/0"),
                    minimum: 8,
                }),
            ),
            (
                "2001::/16",
                Err(NetworkProblem::TooBroad {
                    network: net("2001::/16"),
                    minimum: 32,
                }),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_network(text), expected, "{text:?}");
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
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[], "http"),
            (&[("x-forwarded-proto", "https")], "https"),
            (&[("x-forwarded-proto", "HTTPS")], "https"),
            (&[("x-forwarded-proto", "https, http")], "http"),
            (&[("x-forwarded-proto", "ftp")], "http"),
            (
                &[
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-proto", "https"),
                ],
                "https",
            ),
            (&[("x-forwarded-proto", "http, https, ")], "https"),
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
