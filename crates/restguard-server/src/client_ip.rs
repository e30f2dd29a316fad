//! Who the client is: the socket's peer, or — behind reverse proxies the configuration
//! trusts — the address the proxies report in `X-Forwarded-For`. Throttles (anonymous rates,
//! the login throttle) and sessions' recorded IPs use it, so a client must not be able to
//! choose it.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request},
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;
use serde::{de, Deserialize, Deserializer, Serialize};

/// A list of networks (`10.0.0.0/8`, `fd00::/8`; a bare address is a one-address network),
/// given as a TOML list or, from the environment, a comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Networks(pub(crate) Vec<IpNet>);

impl Networks {
    /// Whether `ip` is inside one of the networks.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Loopback only (`127.0.0.0/8`, `::1`).
    pub(crate) fn loopback() -> Self {
        Self(vec![
            IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(127, 0, 0, 0),
                8,
            )),
            IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ])
    }
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    IpNet::from_str(text)
        .map(|net| net.trunc())
        .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a network (use 10.0.0.0/8, fd00::/8 or 127.0.0.1)"))
}

impl FromStr for Networks {
    type Err = String;

    /// A comma-separated list (the environment's form); empty means none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().trim_start_matches('[').trim_end_matches(']');
        s.split(',')
            .map(|part| part.trim().trim_matches('"'))
            .filter(|part| !part.is_empty())
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Networks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of networks such as [\"10.0.0.0/8\", \"127.0.0.1\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Networks, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Networks, A::Error> {
                let mut networks = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    networks.push(parse_network(&item).map_err(de::Error::custom)?);
                }
                Ok(Networks(networks))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Networks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// How the client IP is decided (`server.trusted_proxies` or `throttle.num_proxies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientIpRule {
    /// The socket's peer; `X-Forwarded-For` is ignored.
    Peer,
    /// DRF's `NUM_PROXIES`: that many entries from the right of `X-Forwarded-For`.
    NumProxies(usize),
    /// `X-Forwarded-For` is honoured only from a peer inside these networks; the client is
    /// its right-most address that is not itself a trusted proxy.
    Trusted(Networks),
}

impl ClientIpRule {
    /// The rule the configuration asks for; both settings at once is an error naming them.
    pub(crate) fn from_config(
        trusted_proxies: &Networks,
        num_proxies: usize,
    ) -> Result<Self, String> {
        match (trusted_proxies.0.is_empty(), num_proxies) {
            (true, 0) => Ok(Self::Peer),
            (true, n) => Ok(Self::NumProxies(n)),
            (false, 0) => Ok(Self::Trusted(trusted_proxies.clone())),
            (false, _) => Err(
                "server.trusted_proxies: cannot be combined with throttle.num_proxies (set one)"
                    .into(),
            ),
        }
    }

    /// The client address of a request from `peer` carrying these `X-Forwarded-For` entries
    /// (all headers' entries, in order). `None`: use the socket's peer.
    pub(crate) fn client(&self, peer: Option<IpAddr>, forwarded: &[&str]) -> Option<IpAddr> {
        match self {
            Self::Peer => None,
            Self::NumProxies(n) => {
                if forwarded.is_empty() {
                    return None;
                }
                parse_entry(forwarded[forwarded.len() - (*n).min(forwarded.len())])
            }
            Self::Trusted(trusted) => {
                let mut nearest = canonical(peer?);
                if !trusted.contains(nearest) {
                    return None;
                }
                // Right to left: each trusted hop vouches for the entry before it.
                for entry in forwarded.iter().rev() {
                    let Some(ip) = parse_entry(entry) else {
                        // A trusted proxy wrote something unreadable: stop at the last
                        // address known to be real.
                        break;
                    };
                    nearest = ip;
                    if !trusted.contains(ip) {
                        break;
                    }
                }
                Some(nearest)
            }
        }
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]`, `v4:port` or `[v6]:port`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(canonical)
}

/// The client address for decisions about **access** (the `/metrics` allowlist): the socket's
/// peer, or the address a peer inside `server.trusted_proxies` reports — never
/// `throttle.num_proxies`' pick, which believes any peer's `X-Forwarded-For` (acceptable for
/// counting requests, as DRF's `NUM_PROXIES` does, but a client could write an allowed address
/// into the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VerifiedClientIp(pub(crate) IpAddr);

/// Middleware: decides the client address once and records it as a
/// [`restguard_axum::ClientIp`] for the throttles and handlers, and as a [`VerifiedClientIp`]
/// for access checks.
pub(crate) async fn client_ip(
    rule: Arc<ClientIpRule>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = if *rule == ClientIpRule::Peer {
        None
    } else {
        let entries: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        rule.client(peer, &entries)
    };
    let verified = match *rule {
        ClientIpRule::NumProxies(_) => peer,
        ClientIpRule::Peer | ClientIpRule::Trusted(_) => client.or(peer),
    };
    if let Some(ip) = client {
        request
            .extensions_mut()
            .insert(restguard_axum::ClientIp(ip));
    }
    if let Some(ip) = verified {
        request
            .extensions_mut()
            .insert(VerifiedClientIp(canonical(ip)));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &str) -> ClientIpRule {
        ClientIpRule::Trusted(list.parse().unwrap())
    }

    fn client(rule: &ClientIpRule, peer: &str, xff: &[&str]) -> Option<IpAddr> {
        rule.client(Some(ip(peer)), xff)
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let rule = trusted("10.0.0.0/8, 127.0.0.1");
        assert_eq!(client(&rule, "203.0.113.9", &["1.2.3.4"]), None);
        assert_eq!(client(&rule, "203.0.113.9", &[]), None);
        assert_eq!(client(&rule, "::ffff:203.0.113.9", &["10.0.0.1"]), None);
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let rule = trusted("10.0.0.0/8,127.0.0.1/32");
        // Client → proxy 10.0.0.5 → proxy 10.0.0.6 → us; the client forged the first entry.
        assert_eq!(
            client(&rule, "10.0.0.6", &["6.6.6.6", "198.51.100.7", "10.0.0.5"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client(&rule, "::ffff:127.0.0.1", &[" 198.51.100.7 "]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client(&rule, "127.0.0.1", &["[2001:db8::1]:443"]),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client(&rule, "127.0.0.1", &["198.51.100.7:5000"]),
            Some(ip("198.51.100.7"))
        );
        // Trusted peer without the header: the peer itself.
        assert_eq!(client(&rule, "10.0.0.6", &[]), Some(ip("10.0.0.6")));
        // Only proxies: the left-most.
        assert_eq!(
            client(&rule, "10.0.0.6", &["10.1.1.1", "10.0.0.5"]),
            Some(ip("10.1.1.1"))
        );
        // Garbage written behind a trusted hop: stop at the last real address.
        assert_eq!(
            client(&rule, "10.0.0.6", &["1.2.3.4", "garbage", "10.0.0.5"]),
            Some(ip("10.0.0.5"))
        );
    }

    #[test]
    fn num_proxies_counts_from_the_right() {
        let rule = ClientIpRule::NumProxies(1);
        assert_eq!(
            client(&rule, "203.0.113.9", &["6.6.6.6", "198.51.100.7"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client(&rule, "203.0.113.9", &[]), None);
    }

    #[test]
    fn networks_parse_and_name_bad_entries() {
        let nets: Networks = "10.0.0.0/8, 127.0.0.1, fd00::/8".parse().unwrap();
        assert_eq!(nets.0.len(), 3);
        assert!(nets.contains(ip("10.200.0.1")));
        assert!(nets.contains(ip("::ffff:127.0.0.1")));
        assert!(!nets.contains(ip("127.0.0.2")));
        assert!(nets.contains(ip("fd12::1")));
        let err = "10.0.0.0/33".parse::<Networks>().unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!("nope".parse::<Networks>().is_err());
        assert_eq!("".parse::<Networks>(), Ok(Networks::default()));
        assert_eq!(
            ClientIpRule::from_config(&nets, 1).unwrap_err(),
            "server.trusted_proxies: cannot be combined with throttle.num_proxies (set one)"
        );
        assert_eq!(
            ClientIpRule::from_config(&Networks::default(), 0),
            Ok(ClientIpRule::Peer)
        );
        assert!(Networks::loopback().contains(ip("127.0.0.1")));
        assert!(Networks::loopback().contains(ip("::1")));
        assert!(!Networks::loopback().contains(ip("10.0.0.1")));
    }
}
