//! Domain layer: client addresses as authd compares, stores and counts them.
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 section 2.5.5.2) is the IPv4
//! address `a.b.c.d` everywhere (contract section 9): a dual-stack listener reports IPv4
//! peers that way, and a proxy may write them so in `X-Forwarded-For`. IPv6 clients are
//! counted per network (`rate_limit.ipv6_prefix`), because one subscriber usually holds a
//! whole /64 and can pick a fresh address for every request.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// `ip` with an IPv4-mapped IPv6 address turned into its IPv4 address; anything else as is.
/// (IPv4-compatible addresses, `::a.b.c.d`, are deprecated and stay IPv6.)
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// `net` with a range that lies wholly inside `::ffff:0:0/96` (IPv4-mapped addresses) turned
/// into the IPv4 range it maps, so that it matches `canonical` addresses:
/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`. Other ranges are kept as written.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// The key a client's per-IP limits are counted under (the request budget and the
/// failed-login budget): an IPv4 address itself; for an IPv6 address, the network address of
/// its `/ipv6_prefix` network (`2001:db8:1:2:aa::1` with 64 is `2001:db8:1:2::`), so that every
/// address of one network shares one budget. 128 counts each IPv6 address on its own.
/// The address is made `canonical` first. `ipv6_prefix` above 128 is taken as 128.
pub fn rate_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.min(128);
            let network = Ipv6Net::new(v6, prefix).map(|n| n.network()).unwrap_or(v6);
            IpAddr::V6(network)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::ffff:7f00:1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("::127.0.0.1")), ip("::127.0.0.1"));
    }

    #[test]
    fn mapped_ranges_are_ipv4_ranges() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            canonical_net(net("::ffff:127.0.0.1/128")),
            net("127.0.0.1/32")
        );
        assert_eq!(canonical_net(net("::ffff:10.0.0.0/104")), net("10.0.0.0/8"));
        assert_eq!(canonical_net(net("::ffff:0:0/96")), net("0.0.0.0/0"));
        assert_eq!(canonical_net(net("::/0")), net("::/0"));
        assert_eq!(canonical_net(net("2001:db8::/32")), net("2001:db8::/32"));
        assert_eq!(canonical_net(net("10.0.0.0/8")), net("10.0.0.0/8"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_network() {
        assert_eq!(rate_key(ip("2001:db8:1:2:aa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(
            rate_key(ip("2001:db8:1:2:aa::1"), 64),
            rate_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64)
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:2::1"), 64),
            rate_key(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(
            rate_key(ip("2001:db8:1:2:aa::1"), 128),
            ip("2001:db8:1:2:aa::1")
        );
        assert_eq!(rate_key(ip("2001:db8:1:2:aa::1"), 48), ip("2001:db8:1::"));
        assert_eq!(rate_key(ip("203.0.113.9"), 64), ip("203.0.113.9"));
        assert_eq!(rate_key(ip("::ffff:203.0.113.9"), 64), ip("203.0.113.9"));
        assert_eq!(rate_key(ip("::ffff:203.0.113.9"), 128), ip("203.0.113.9"));
    }
}
