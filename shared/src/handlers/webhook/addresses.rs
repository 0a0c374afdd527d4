//! Which addresses a webhook may reach: one table, from IANA's IPv4 and IPv6 Special-Purpose
//! Address Registries (every block that is not globally reachable, whole where only a part of
//! it is), with multicast, broadcast and the deprecated site-local block beside them. Prefixes
//! that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

/// Blocks a webhook may not reach, with what each is.
const REFUSED: [(&str, &str); 31] = [
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private use"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link local (cloud metadata)"),
    ("172.16.0.0/12", "private use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private use"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link local"),
    ("fec0::/10", "site local (deprecated)"),
    ("ff00::/8", "multicast"),
];

/// The table, parsed once.
static BLOCKS: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    REFUSED
        .iter()
        .filter_map(|(block, what)| Some((block.parse().ok()?, *what)))
        .collect()
});

/// Why `ip` may not be reached (the block it is in), or `None` when it is public.
pub fn refused_block(ip: IpAddr) -> Option<&'static str> {
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = embedded_v4(v6) {
            return refused_block(IpAddr::V4(v4));
        }
    }
    BLOCKS
        .iter()
        .find(|(block, _)| block.contains(&ip))
        .map(|(_, what)| *what)
}

/// The IPv4 address an IPv6 address carries, for the prefixes that reach it: IPv4-mapped,
/// NAT64's well-known prefix and 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    // Checked on every resolved address: by segments, nothing parsed per call.
    let octets = ip.octets();
    let at = |i: usize| Ipv4Addr::new(octets[i], octets[i + 1], octets[i + 2], octets[i + 3]);
    let segments = ip.segments();
    if let Some(mapped) = ip.to_ipv4_mapped() {
        Some(mapped)
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(at(12))
    } else if segments[0] == 0x2002 {
        Some(at(2))
    } else {
        None
    }
}

/// True when `ip` is outside every refused block.
pub fn is_public(ip: IpAddr) -> bool {
    refused_block(ip).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_of_the_table_parses() {
        assert_eq!(BLOCKS.len(), REFUSED.len());
    }

    #[test]
    fn addresses_are_judged_one_by_one() {
        let refused = [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.0.9",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:0:0",
            "::ffff:0:1.2.3.4",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "2002:a00:1::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
        ];
        for address in refused {
            let ip: IpAddr = address.parse().expect(address);
            assert!(!is_public(ip), "{address} must be refused");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ];
        for address in public {
            let ip: IpAddr = address.parse().expect(address);
            assert!(
                is_public(ip),
                "{address} is public ({:?})",
                refused_block(ip)
            );
        }
    }
}
