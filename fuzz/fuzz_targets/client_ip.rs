//! The client-address walk (peer, then X-Forwarded-For through trusted
//! proxies) and the CIDR set. The set answers exactly as checking every
//! block one by one does; the walk never panics, ends on an address or an
//! error naming the bad entry, and takes at most `trusted_hops` entries.
#![no_main]

use arbitrary::Arbitrary;
use gateway_common::client_ip::{
    parse_forwarded_address, ClientAddressConfig, ClientAddressResolver,
};
use gateway_common::ipset::{parse_cidr, CidrEntry, IpSet};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Arbitrary)]
enum Address {
    V4([u8; 4]),
    V6([u8; 16]),
    /// An IPv4-mapped IPv6 address.
    Mapped([u8; 4]),
}

impl Address {
    fn ip(&self) -> IpAddr {
        match self {
            Address::V4(octets) => IpAddr::V4(Ipv4Addr::from(*octets)),
            Address::V6(octets) => IpAddr::V6(Ipv6Addr::from(*octets)),
            Address::Mapped(octets) => IpAddr::V6(Ipv4Addr::from(*octets).to_ipv6_mapped()),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    blocks: Vec<(Address, u8)>,
    lookups: Vec<Address>,
    cidr_texts: Vec<String>,
    peer: Address,
    forwarded_for: Vec<String>,
    trusted_hops: Option<u8>,
    envoy_appended_xff: bool,
}

fn net(address: &Address, prefix: u8) -> IpNet {
    match address.ip() {
        IpAddr::V4(ip) => IpNet::V4(Ipv4Net::new(ip, prefix % 33).unwrap_or_default().trunc()),
        IpAddr::V6(ip) => IpNet::V6(Ipv6Net::new(ip, prefix % 129).unwrap_or_default().trunc()),
    }
}

/// Block by block: an IPv4 client is also in a v6 block holding its
/// IPv4-mapped form, as the set documents.
fn naive_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|net| match (net, ip) {
        (IpNet::V4(net), IpAddr::V4(ip)) => net.contains(&ip),
        (IpNet::V6(net), IpAddr::V4(ip)) => net.contains(&ip.to_ipv6_mapped()),
        (IpNet::V6(net), IpAddr::V6(ip)) => net.contains(&ip),
        (IpNet::V4(_), IpAddr::V6(_)) => false,
    })
}

fuzz_target!(|input: Input| {
    let nets: Vec<IpNet> = input
        .blocks
        .iter()
        .map(|(address, prefix)| net(address, *prefix))
        .collect();
    let set = IpSet::new(nets.iter().copied());
    for address in input.lookups.iter().chain([&input.peer]) {
        let ip = address.ip();
        assert_eq!(
            set.contains(ip),
            naive_contains(&nets, ip),
            "{ip} in {nets:?}"
        );
    }
    for net in &nets {
        assert!(set.contains(net.network()) && set.contains(net.broadcast()));
    }

    let trusted: Vec<CidrEntry> = input
        .cidr_texts
        .iter()
        .filter_map(|text| parse_cidr(text).ok().map(CidrEntry))
        .chain(nets.iter().copied().map(CidrEntry))
        .collect();
    let resolver = ClientAddressResolver::new(&ClientAddressConfig {
        trusted_proxies: trusted,
        trusted_hops: input.trusted_hops.map(u32::from),
        envoy_appended_xff: input.envoy_appended_xff,
    });
    let peer = input.peer.ip();
    match resolver.resolve(peer, &input.forwarded_for) {
        Ok(client) => {
            let entries: Vec<&str> = input
                .forwarded_for
                .iter()
                .flat_map(|value| value.split(','))
                .collect();
            // The client is the peer or one of the entries.
            assert!(
                client == peer.to_canonical()
                    || entries
                        .iter()
                        .any(|entry| parse_forwarded_address(entry) == Some(client)),
                "{client} is neither the peer nor an entry"
            );
            if input.trusted_hops == Some(0) {
                assert_eq!(client, peer.to_canonical());
            }
        }
        Err(_) => assert!(resolver.trusts(peer.to_canonical())),
    }
});
