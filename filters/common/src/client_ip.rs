//! The client's address, resolved the same way by every filter (ip-acl,
//! throttling, log-push, request-mapping's system parameters).
//!
//! By default it is the downstream peer Envoy accepted the connection from;
//! `X-Forwarded-For` is ignored. With `trusted_proxies`, the header is walked
//! from the right: while the current hop is a trusted proxy, the address that
//! proxy reported (the next entry to the left) becomes the current hop. The
//! first untrusted hop is the client. `trusted_hops` caps how many entries may
//! be taken, for deployments where proxies are known by count, not address.

use crate::host::Host;
use crate::ipset::{canonical, CidrEntry, IpSet};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAddressConfig {
    /// Peers whose `X-Forwarded-For` entries are believed (addresses or CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<CidrEntry>,
    /// At most this many `X-Forwarded-For` entries are taken (default: no cap).
    #[serde(default)]
    pub trusted_hops: Option<u32>,
    /// True when Envoy's HTTP connection manager has `use_remote_address:
    /// true` (and appends to `X-Forwarded-For`): the rightmost entry is then
    /// Envoy's own record of the peer and is skipped, not taken as a hop.
    #[serde(default)]
    pub envoy_appended_xff: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAddressError {
    /// Envoy gave no usable peer address (for example a Unix socket listener).
    UnknownPeer,
    /// A trusted proxy passed on an `X-Forwarded-For` entry that is not an address.
    MalformedForwardedFor(String),
}

#[derive(Debug, Clone, Default)]
pub struct ClientAddressResolver {
    trusted: IpSet,
    max_hops: u32,
    envoy_appended_xff: bool,
}

impl ClientAddressResolver {
    pub fn new(config: &ClientAddressConfig) -> Self {
        Self {
            trusted: IpSet::from_entries(&config.trusted_proxies),
            max_hops: config.trusted_hops.unwrap_or(u32::MAX),
            envoy_appended_xff: config.envoy_appended_xff,
        }
    }

    /// True when `X-Forwarded-For` can matter for a request from `peer`, so
    /// the adapter reads the header only then.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.max_hops > 0 && self.trusted.contains(peer)
    }

    /// The current request's client address: the peer Envoy reports and,
    /// only when that peer is trusted, its `X-Forwarded-For` headers.
    pub fn client_of(&self, host: &dyn Host) -> Result<IpAddr, ClientAddressError> {
        let peer = crate::host::peer_address(host).ok_or(ClientAddressError::UnknownPeer)?;
        let peer = parse_peer_address(&peer)?;
        let forwarded_for = if self.trusts(peer) {
            host.request_header_values("x-forwarded-for")
        } else {
            Vec::new()
        };
        self.resolve(peer, &forwarded_for)
    }

    /// Resolves the client address. `forwarded_for` is every
    /// `X-Forwarded-For` header value in the order received.
    pub fn resolve<S: AsRef<str>>(
        &self,
        peer: IpAddr,
        forwarded_for: &[S],
    ) -> Result<IpAddr, ClientAddressError> {
        let mut current = canonical(peer);
        if !self.trusts(current) {
            return Ok(current);
        }
        let mut entries = forwarded_for
            .iter()
            .rev()
            .flat_map(|value| value.as_ref().rsplit(','));
        if self.envoy_appended_xff {
            // Envoy's own entry stands for the peer already in `current`
            // (or for Envoy itself when the peer is loopback).
            entries.next();
        }
        let max_hops = usize::try_from(self.max_hops).unwrap_or(usize::MAX);
        for entry in entries.take(max_hops) {
            if !self.trusted.contains(current) {
                break;
            }
            current = parse_forwarded_address(entry)
                .ok_or_else(|| ClientAddressError::MalformedForwardedFor(entry.trim().into()))?;
        }
        Ok(current)
    }
}

/// Parses one `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`, surrounded by optional spaces.
pub fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok().map(canonical)
}

/// Parses Envoy's `source.address` property (`ip:port`, `[v6]:port`).
pub fn parse_peer_address(value: &str) -> Result<IpAddr, ClientAddressError> {
    parse_forwarded_address(value).ok_or(ClientAddressError::UnknownPeer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::parse_cidr;

    fn resolver(trusted: &[&str], hops: Option<u32>) -> ClientAddressResolver {
        resolver_with(trusted, hops, false)
    }

    fn resolver_with(
        trusted: &[&str],
        hops: Option<u32>,
        envoy_appended_xff: bool,
    ) -> ClientAddressResolver {
        ClientAddressResolver::new(&ClientAddressConfig {
            trusted_proxies: trusted
                .iter()
                .map(|t| CidrEntry(parse_cidr(t).unwrap()))
                .collect(),
            trusted_hops: hops,
            envoy_appended_xff,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_xff_says() {
        let r = resolver(&[], None);
        assert_eq!(
            r.resolve(ip("198.51.100.7"), &["10.0.0.1"]),
            Ok(ip("198.51.100.7"))
        );
    }

    #[test]
    fn xff_from_an_untrusted_peer_is_ignored() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("198.51.100.7"), &["10.1.1.1"]),
            Ok(ip("198.51.100.7"))
        );
    }

    #[test]
    fn a_trusted_peer_hands_over_the_address_it_saw() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["203.0.113.9"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_spoofed_left_entry_behind_a_trusted_proxy_is_ignored() {
        // The client sent "1.1.1.1"; the trusted proxy appended the real peer.
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["1.1.1.1, 203.0.113.9"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_back() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["203.0.113.9, 10.0.0.5, 10.0.0.4"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn several_xff_headers_read_as_one_list_in_order() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["203.0.113.9", "10.0.0.5"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn trusted_hops_caps_the_walk() {
        let r = resolver(&["0.0.0.0/0"], Some(1));
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["1.1.1.1, 203.0.113.9"]),
            Ok(ip("203.0.113.9"))
        );
        let two = resolver(&["0.0.0.0/0"], Some(2));
        assert_eq!(
            two.resolve(ip("10.0.0.2"), &["1.1.1.1, 203.0.113.9"]),
            Ok(ip("1.1.1.1"))
        );
    }

    #[test]
    fn zero_trusted_hops_never_reads_xff() {
        let r = resolver(&["0.0.0.0/0"], Some(0));
        assert!(!r.trusts(ip("10.0.0.2")));
        assert_eq!(r.resolve(ip("10.0.0.2"), &["1.1.1.1"]), Ok(ip("10.0.0.2")));
    }

    #[test]
    fn the_entry_envoy_appended_is_skipped_not_counted_as_a_hop() {
        // Envoy appends its own address when the peer is loopback.
        let r = resolver_with(&["127.0.0.1"], Some(1), true);
        assert_eq!(
            r.resolve(ip("127.0.0.1"), &["1.1.1.1, 203.0.113.9, 192.0.2.2"]),
            Ok(ip("203.0.113.9"))
        );
        let none: [&str; 0] = [];
        assert_eq!(
            r.resolve(ip("127.0.0.1"), &["192.0.2.2"]),
            Ok(ip("127.0.0.1"))
        );
        assert_eq!(r.resolve(ip("127.0.0.1"), &none), Ok(ip("127.0.0.1")));
        // From an untrusted peer nothing in the header is read at all.
        let untrusted = resolver_with(&["10.0.0.0/8"], None, true);
        assert_eq!(
            untrusted.resolve(ip("203.0.113.9"), &["10.0.0.1, 203.0.113.9"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn an_all_trusted_chain_ends_at_the_leftmost_entry() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(r.resolve(ip("10.0.0.2"), &["10.0.0.9"]), Ok(ip("10.0.0.9")));
    }

    #[test]
    fn a_trusted_peer_without_xff_is_the_client() {
        let r = resolver(&["10.0.0.0/8"], None);
        let none: [&str; 0] = [];
        assert_eq!(r.resolve(ip("10.0.0.2"), &none), Ok(ip("10.0.0.2")));
    }

    #[test]
    fn garbage_reached_through_trusted_proxies_is_an_error() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["unknown"]),
            Err(ClientAddressError::MalformedForwardedFor("unknown".into()))
        );
        assert!(r.resolve(ip("10.0.0.2"), &["1.2.3.4,,10.0.0.3"]).is_err());
    }

    #[test]
    fn garbage_left_of_the_client_is_never_read() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &["not-an-ip, 203.0.113.9"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn entries_with_ports_brackets_and_spaces_parse() {
        for (entry, expected) in [
            (" 203.0.113.9 ", "203.0.113.9"),
            ("203.0.113.9:4711", "203.0.113.9"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                parse_forwarded_address(entry),
                Some(ip(expected)),
                "{entry}"
            );
        }
        for bad in [
            "",
            "unknown",
            "1.2.3",
            "[1.2.3.4",
            "1.2.3.4:port",
            "_hidden",
        ] {
            assert_eq!(parse_forwarded_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_v4_mapped_peer_is_treated_as_v4() {
        let r = resolver(&["10.0.0.0/8"], None);
        assert_eq!(
            r.resolve(ip("::ffff:10.0.0.2"), &["203.0.113.9"]),
            Ok(ip("203.0.113.9"))
        );
        assert_eq!(
            resolver(&[], None).resolve(ip("::ffff:1.2.3.4"), &[""; 0]),
            Ok(ip("1.2.3.4"))
        );
    }

    #[test]
    fn peer_addresses_from_envoy_parse() {
        assert_eq!(parse_peer_address("127.0.0.1:5555"), Ok(ip("127.0.0.1")));
        assert_eq!(parse_peer_address("[::1]:5555"), Ok(ip("::1")));
        assert_eq!(
            parse_peer_address("/var/run/envoy.sock"),
            Err(ClientAddressError::UnknownPeer)
        );
    }
}
