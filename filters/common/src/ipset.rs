//! Sets of IP addresses and CIDR blocks with O(log n) lookup: every entry
//! becomes an address range, overlapping and adjacent ranges are merged, and a
//! lookup is one binary search, whatever the number of entries.
//!
//! IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is treated as the IPv4 address it
//! carries, in entries and in looked-up addresses alike.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use std::net::{IpAddr, Ipv6Addr};

/// One configured entry: an address (`10.1.2.3`, `2001:db8::1`) or a CIDR
/// block (`10.0.0.0/8`, `2001:db8::/32`). Host bits after the prefix are
/// ignored (`10.1.2.3/8` means `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CidrEntry(pub IpNet);

impl TryFrom<String> for CidrEntry {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        parse_cidr(&text).map(CidrEntry)
    }
}

/// Parses an address or CIDR block, with the reason in the error.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let trimmed = text.trim();
    if trimmed.contains('/') {
        trimmed
            .parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| format!("`{text}` is not a valid CIDR block (address/prefix-length)"))
    } else {
        trimmed
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{text}` is not a valid IP address or CIDR block"))
    }
}

/// Returns the IPv4 address inside an IPv4-mapped IPv6 address, else the address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

const MAPPED_PREFIX: u128 = 0xffff_0000_0000;

/// An immutable set of address ranges, built once when the config loads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new<I: IntoIterator<Item = IpNet>>(nets: I) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(net) => v4.push(v4_range(net)),
                IpNet::V6(net) => {
                    if let Some(range) = mapped_v4_part(net) {
                        v4.push(range);
                    }
                    v6.push((u128::from(net.network()), u128::from(net.broadcast())));
                }
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn from_entries(entries: &[CidrEntry]) -> Self {
        Self::new(entries.iter().map(|entry| entry.0))
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Number of disjoint ranges after merging.
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(ip) => in_ranges(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => in_ranges(&self.v6, u128::from(ip)),
        }
    }
}

fn v4_range(net: Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// The part of an IPv6 block that lies in `::ffff:0:0/96`, as an IPv4 range,
/// so that `::ffff:10.0.0.0/104` and `::/0` match IPv4 clients as they should.
fn mapped_v4_part(net: Ipv6Net) -> Option<(u32, u32)> {
    let mapped_block = Ipv6Net::new(Ipv6Addr::from(MAPPED_PREFIX), 96).ok()?;
    if net.contains(&mapped_block) {
        return Some((0, u32::MAX));
    }
    if mapped_block.contains(&net) {
        let start = u128::from(net.network()) as u32;
        let end = u128::from(net.broadcast()) as u32;
        return Some((start, end));
    }
    None
}

fn merge<T: Ord + Copy + Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = merged.last_mut() {
            if last.1.successor().is_none_or(|next| start <= next) {
                last.1 = last.1.max(end);
                continue;
            }
        }
        merged.push((start, end));
    }
    merged.shrink_to_fit();
    merged
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], value: T) -> bool {
    // Index of the first range starting after `value`; the one before it is
    // the only range that can contain it.
    let after = ranges.partition_point(|(start, _)| *start <= value);
    after > 0 && value <= ranges[after - 1].1
}

trait Successor: Sized {
    fn successor(self) -> Option<Self>;
}

impl Successor for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Successor for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(entries: &[&str]) -> IpSet {
        IpSet::new(entries.iter().map(|e| parse_cidr(e).unwrap()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_v4_zero_prefix_contains_every_v4_address() {
        let all = set(&["0.0.0.0/0"]);
        for addr in ["0.0.0.0", "255.255.255.255", "10.1.2.3", "::ffff:8.8.8.8"] {
            assert!(all.contains(ip(addr)), "{addr}");
        }
        assert!(!all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn a_v6_zero_prefix_contains_every_address_including_mapped_v4() {
        let all = set(&["::/0"]);
        for addr in [
            "::",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "10.0.0.1",
        ] {
            assert!(all.contains(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn a_slash_32_contains_only_that_address() {
        let one = set(&["192.0.2.10/32"]);
        assert!(one.contains(ip("192.0.2.10")));
        assert!(!one.contains(ip("192.0.2.9")));
        assert!(!one.contains(ip("192.0.2.11")));
    }

    #[test]
    fn a_bare_address_means_a_single_host() {
        assert_eq!(set(&["192.0.2.10"]), set(&["192.0.2.10/32"]));
        assert_eq!(set(&["2001:db8::1"]), set(&["2001:db8::1/128"]));
    }

    #[test]
    fn a_slash_128_contains_only_that_address() {
        let one = set(&["2001:db8::1/128"]);
        assert!(one.contains(ip("2001:db8::1")));
        assert!(!one.contains(ip("2001:db8::2")));
        assert!(!one.contains(ip("2001:db8::")));
    }

    #[test]
    fn block_edges_are_inclusive() {
        let block = set(&["10.0.0.0/8"]);
        assert!(block.contains(ip("10.0.0.0")));
        assert!(block.contains(ip("10.255.255.255")));
        assert!(!block.contains(ip("9.255.255.255")));
        assert!(!block.contains(ip("11.0.0.0")));
    }

    #[test]
    fn a_v4_mapped_address_matches_v4_entries() {
        let block = set(&["10.0.0.0/8"]);
        assert!(block.contains(ip("::ffff:10.9.8.7")));
        assert!(!block.contains(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn a_v4_mapped_entry_matches_v4_addresses() {
        let block = set(&["::ffff:10.0.0.0/104"]);
        assert!(block.contains(ip("10.200.0.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        let host = set(&["::ffff:192.0.2.1"]);
        assert!(host.contains(ip("192.0.2.1")));
    }

    #[test]
    fn v4_and_v6_never_match_each_other_outside_the_mapped_block() {
        let v6 = set(&["2001:db8::/32"]);
        assert!(!v6.contains(ip("32.1.13.184")));
        let v4 = set(&["32.0.0.0/8"]);
        assert!(!v4.contains(ip("2001:db8::1")));
    }

    #[test]
    fn host_bits_after_the_prefix_are_ignored() {
        assert_eq!(set(&["10.1.2.3/8"]), set(&["10.0.0.0/8"]));
    }

    #[test]
    fn overlapping_and_adjacent_blocks_merge() {
        let merged = set(&["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "192.0.2.0/24"]);
        assert_eq!(merged.range_count(), 2);
        assert!(merged.contains(ip("10.200.0.1")));
    }

    #[test]
    fn the_top_of_the_address_space_does_not_overflow() {
        let top = set(&["255.255.255.255", "255.255.255.254/31", "ffff::/16"]);
        assert!(top.contains(ip("255.255.255.255")));
        assert!(top.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        for bad in [
            "10.0.0.300",
            "10.0.0.0/33",
            "2001:db8::/129",
            "",
            "10.0.0.0/",
            "abc",
            "10.0.0.0/-1",
        ] {
            let err = parse_cidr(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn an_empty_set_contains_nothing() {
        let empty = IpSet::default();
        assert!(empty.is_empty());
        assert!(!empty.contains(ip("127.0.0.1")));
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_a_linear_scan(
            nets in prop::collection::vec((any::<u32>(), 0u8..=32), 0..64),
            probes in prop::collection::vec(any::<u32>(), 1..64),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(addr, len)| IpNet::V4(Ipv4Net::new(addr.into(), len).unwrap().trunc()))
                .collect();
            let set = IpSet::new(nets.clone());
            for probe in probes {
                let probe = IpAddr::V4(probe.into());
                let expected = nets.iter().any(|net| net.contains(&probe));
                prop_assert_eq!(set.contains(probe), expected);
            }
        }

        #[test]
        fn v6_lookup_agrees_with_a_linear_scan(
            nets in prop::collection::vec((any::<u128>(), 0u8..=128), 0..32),
            probes in prop::collection::vec(any::<u128>(), 1..32),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(addr, len)| IpNet::V6(Ipv6Net::new(addr.into(), len).unwrap().trunc()))
                .collect();
            let set = IpSet::new(nets.clone());
            for probe in probes {
                let addr = IpAddr::V6(probe.into());
                if canonical(addr) != addr {
                    continue; // mapped addresses are checked against v4 ranges
                }
                let expected = nets.iter().any(|net| net.contains(&addr));
                prop_assert_eq!(set.contains(addr), expected);
            }
        }
    }
}
