//! Packet filter: parsing the command-line values, checking that they make
//! sense together, encoding `struct nt_filter` for the kernel, and the same
//! matching rules in Rust.

use std::net::IpAddr;

use thiserror::Error;

use crate::event::{At, Event, Packet, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, L4};

/// Size of the encoded filter (`struct nt_filter`).
pub const FILTER_SIZE: usize = 80;

/// Filter flag: `saddr` is set.
pub const FL_SADDR: u32 = 0x1;
/// Filter flag: `daddr` is set.
pub const FL_DADDR: u32 = 0x2;
/// Filter flag: `addr` is set.
pub const FL_ADDR: u32 = 0x4;
/// Filter flag: `--skb-mode`.
pub const FL_SKB_MODE: u32 = 0x8;
/// Filter flag: the address filters are IPv6.
pub const FL_V6: u32 = 0x10;
/// Filter flag: only the (netns, interface) pairs of the scope map match.
pub const FL_SCOPE: u32 = 0x20;
/// Filter flag: an skb that matched is followed out of the scope.
pub const FL_FOLLOW: u32 = 0x40;
/// Filter flag: read the conntrack entry of matched skbs (`--detail`).
pub const FL_CT: u32 = 0x80;
/// Filter flag: copy the first `snaplen` bytes of matched packets (`--pcap`).
pub const FL_BYTES: u32 = 0x100;
/// Filter flag: a port filter (`sport`, `dport` or `port`) is set.
pub const FL_PORTS: u32 = 0x200;

const PROTO_NAMES: &str = "ip, ipv4, ip6, ipv6, arp, tcp, udp, icmp, icmp6, icmpv6, sctp";

/// A filter value or combination that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// Not an IP address.
    #[error(
        "'{0}' is not an IP address; give an IPv4 or IPv6 address such as 10.0.0.1 or fd00::1"
    )]
    BadAddr(String),
    /// Not a port number.
    #[error("'{0}' is not a port; give a number from 1 to 65535")]
    BadPort(String),
    /// Unknown protocol name.
    #[error("unknown protocol '{0}'; use one of: {PROTO_NAMES}")]
    BadProto(String),
    /// IPv4 and IPv6 address filters together.
    #[error("the address filters mix IPv4 and IPv6; give addresses of one family")]
    MixedFamilies,
    /// Port filters with a protocol that has no ports.
    #[error("port filters only apply to tcp and udp, not to '-p {0}'; drop --sport/--dport/--port or use -p tcp/udp")]
    PortsWithoutPorts(&'static str),
    /// A `--netns` value that cannot name a network namespace.
    #[error("'{0}' names no network namespace; give its inode number (above 0, as `stat -L -c %i /proc/PID/ns/net` prints it) or a path such as /proc/PID/ns/net or /run/netns/NAME")]
    BadNetns(String),
    /// An address of the other family than `-p`.
    #[error("address {addr} cannot match '-p {proto}'; give an address of the protocol's family or change -p")]
    FamilyMismatch {
        /// The offending address.
        addr: IpAddr,
        /// The protocol given with `-p`.
        proto: &'static str,
    },
}

/// A protocol given with `-p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto {
    /// Canonical name.
    pub name: &'static str,
    /// Required ethertype, if any.
    pub l3: Option<u16>,
    /// Required IP protocol number, if any.
    pub l4: Option<u8>,
}

/// Parses an IPv4 or IPv6 address.
pub fn parse_addr(s: &str) -> Result<IpAddr, FilterError> {
    s.trim()
        .parse()
        .map_err(|_| FilterError::BadAddr(s.to_string()))
}

/// Parses a port number (1 to 65535).
pub fn parse_port(s: &str) -> Result<u16, FilterError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(FilterError::BadPort(s.to_string())),
    }
}

/// Parses a `-p` protocol name.
pub fn parse_proto(s: &str) -> Result<Proto, FilterError> {
    let p = |name, l3, l4| Ok(Proto { name, l3, l4 });
    match s.trim().to_ascii_lowercase().as_str() {
        "ip" | "ipv4" => p("ip", Some(ETH_P_IP), None),
        "ip6" | "ipv6" => p("ip6", Some(ETH_P_IPV6), None),
        "arp" => p("arp", Some(ETH_P_ARP), None),
        "tcp" => p("tcp", None, Some(6)),
        "udp" => p("udp", None, Some(17)),
        "icmp" => p("icmp", Some(ETH_P_IP), Some(1)),
        "icmp6" | "icmpv6" => p("icmp6", Some(ETH_P_IPV6), Some(58)),
        "sctp" => p("sctp", None, Some(132)),
        _ => Err(FilterError::BadProto(s.to_string())),
    }
}

/// A `--netns` value: an inode number or a path to a namespace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsArg {
    /// The namespace inode.
    Inode(u32),
    /// A path such as `/proc/1234/ns/net` or `/run/netns/NAME`.
    Path(String),
}

/// Splits a `--netns` value: all digits is an inode, anything else a path.
/// Unchecked: [`parse_netns`] is what the command line uses.
pub fn parse_netns_arg(s: &str) -> NetnsArg {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse() {
            return NetnsArg::Inode(n);
        }
    }
    NetnsArg::Path(s.to_string())
}

/// Reads a `--netns` value and refuses what cannot name a namespace: an
/// empty value, inode 0 (which the kernel filter would take as "any") and a
/// number too large for a namespace inode (they are 32-bit). Whether the
/// namespace exists is for the caller to find out.
pub fn parse_netns(s: &str) -> Result<NetnsArg, FilterError> {
    let bad = || FilterError::BadNetns(s.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(NetnsArg::Inode(n)),
            _ => Err(bad()),
        };
    }
    Ok(NetnsArg::Path(s.to_string()))
}

/// What packets to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Source address.
    pub saddr: Option<IpAddr>,
    /// Destination address.
    pub daddr: Option<IpAddr>,
    /// Source or destination address.
    pub addr: Option<IpAddr>,
    /// Protocol.
    pub proto: Option<Proto>,
    /// TCP/UDP source port.
    pub sport: Option<u16>,
    /// TCP/UDP destination port.
    pub dport: Option<u16>,
    /// TCP/UDP source or destination port.
    pub port: Option<u16>,
    /// Network namespace inode (0 = any).
    pub netns: Option<u32>,
    /// Interface index (0 = any).
    pub ifindex: Option<u32>,
    /// Process id (0 = any).
    pub pid: Option<u32>,
    /// Keep following an skb once it matched.
    pub skb_mode: bool,
    /// Match only in the scope map's network namespaces and interfaces
    /// (filled by the agent).
    pub scope_map: bool,
    /// Follow an skb that matched wherever it goes next (agent scoping).
    pub follow: bool,
    /// Read the conntrack entry of matched skbs (`--detail`; no filtering).
    pub conntrack: bool,
    /// Copy up to this many bytes of each matched packet (`--pcap`; no
    /// filtering).
    pub snaplen: Option<u16>,
}

/// Where [`Filter::encode`] writes each field of `struct nt_filter` (bytes
/// not listed stay zero). The test `abi` of node-agent checks every one of
/// them against the compiled object's BTF.
pub mod offsets {
    use crate::event::At;

    /// `saddr` (IPv4: first 4 bytes, network order).
    pub const SADDR: At<[u8; 16]> = At::new(0);
    /// `daddr`.
    pub const DADDR: At<[u8; 16]> = At::new(16);
    /// `addr`: source or destination.
    pub const ADDR: At<[u8; 16]> = At::new(32);
    /// `netns`: netns inode, 0 = any.
    pub const NETNS: At<u32> = At::new(48);
    /// `ifindex`, 0 = any.
    pub const IFINDEX: At<u32> = At::new(52);
    /// `pid`, 0 = any.
    pub const PID: At<u32> = At::new(56);
    /// `flags`: `FL_*`.
    pub const FLAGS: At<u32> = At::new(60);
    /// `l3_proto`: ethertype, 0 = any.
    pub const L3_PROTO: At<u16> = At::new(64);
    /// `sport`, 0 = any.
    pub const SPORT: At<u16> = At::new(66);
    /// `dport`.
    pub const DPORT: At<u16> = At::new(68);
    /// `port`: source or destination.
    pub const PORT: At<u16> = At::new(70);
    /// `l4_proto`, 0 = any.
    pub const L4_PROTO: At<u8> = At::new(72);
    /// `snaplen`: bytes to copy with `FL_BYTES`.
    pub const SNAPLEN: At<u16> = At::new(74);
}

fn put_addr(b: &mut [u8; FILTER_SIZE], at: At<[u8; 16]>, a: &IpAddr) {
    let mut v = [0u8; 16];
    match a {
        IpAddr::V4(v4) => v[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => v.copy_from_slice(&v6.octets()),
    }
    at.put(b, v);
}

impl Filter {
    fn addrs(&self) -> impl Iterator<Item = &IpAddr> {
        [&self.saddr, &self.daddr, &self.addr].into_iter().flatten()
    }

    fn has_ports(&self) -> bool {
        self.sport.is_some() || self.dport.is_some() || self.port.is_some()
    }

    /// True when the address filters are IPv6.
    pub fn is_v6(&self) -> bool {
        self.addrs().any(IpAddr::is_ipv6)
    }

    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<(), FilterError> {
        let mut addrs = self.addrs();
        if let Some(first) = addrs.next() {
            if addrs.any(|a| a.is_ipv6() != first.is_ipv6()) {
                return Err(FilterError::MixedFamilies);
            }
        }
        let Some(proto) = self.proto else {
            return Ok(());
        };
        // tcp, udp, or plain ip/ip6 (which may carry tcp or udp)
        let has_ports = matches!(
            (proto.l3, proto.l4),
            (_, Some(6 | 17)) | (Some(ETH_P_IP | ETH_P_IPV6), None)
        );
        if self.has_ports() && !has_ports {
            return Err(FilterError::PortsWithoutPorts(proto.name));
        }
        let family_v6 = match proto.l3 {
            Some(ETH_P_IPV6) => Some(true),
            Some(ETH_P_IP | ETH_P_ARP) => Some(false),
            _ => None,
        };
        if let Some(v6) = family_v6 {
            if let Some(a) = self.addrs().find(|a| a.is_ipv6() != v6) {
                return Err(FilterError::FamilyMismatch {
                    addr: *a,
                    proto: proto.name,
                });
            }
        }
        Ok(())
    }

    /// The `struct nt_filter` bytes for the kernel programs.
    pub fn encode(&self) -> [u8; FILTER_SIZE] {
        use offsets::*;
        let mut b = [0u8; FILTER_SIZE];
        let mut flags = 0u32;
        if let Some(a) = &self.saddr {
            put_addr(&mut b, SADDR, a);
            flags |= FL_SADDR;
        }
        if let Some(a) = &self.daddr {
            put_addr(&mut b, DADDR, a);
            flags |= FL_DADDR;
        }
        if let Some(a) = &self.addr {
            put_addr(&mut b, ADDR, a);
            flags |= FL_ADDR;
        }
        if self.is_v6() {
            flags |= FL_V6;
        }
        if self.skb_mode {
            flags |= FL_SKB_MODE;
        }
        if self.scope_map {
            flags |= FL_SCOPE;
        }
        if self.follow {
            flags |= FL_FOLLOW;
        }
        if self.conntrack {
            flags |= FL_CT;
        }
        if self.has_ports() {
            flags |= FL_PORTS;
        }
        if let Some(n) = self.snaplen {
            flags |= FL_BYTES;
            SNAPLEN.put(&mut b, n);
        }
        NETNS.put(&mut b, self.netns.unwrap_or(0));
        IFINDEX.put(&mut b, self.ifindex.unwrap_or(0));
        PID.put(&mut b, self.pid.unwrap_or(0));
        FLAGS.put(&mut b, flags);
        L3_PROTO.put(&mut b, self.proto.and_then(|p| p.l3).unwrap_or(0));
        SPORT.put(&mut b, self.sport.unwrap_or(0));
        DPORT.put(&mut b, self.dport.unwrap_or(0));
        PORT.put(&mut b, self.port.unwrap_or(0));
        L4_PROTO.put(&mut b, self.proto.and_then(|p| p.l4).unwrap_or(0));
        b
    }

    /// Whether an event passes the filter (the kernel's rules; `skb_mode`,
    /// the scope map and following are not considered). Zero netns/ifindex/pid values mean "any".
    /// An encapsulated packet passes when its inner or its outer packet does.
    pub fn matches(&self, ev: &Event) -> bool {
        let packet_ok = self.matches_packet(&ev.packet)
            || ev.tunnel.is_some_and(|t| self.matches_packet(&t.outer));
        let field = |want: Option<u32>, have: u32| want.is_none_or(|w| w == 0 || w == have);
        packet_ok
            && field(self.netns, ev.netns)
            && field(self.ifindex, ev.ifindex)
            && field(self.pid, ev.pid)
    }

    /// The protocol, address and port part of the filter, on one packet.
    pub fn matches_packet(&self, pkt: &Packet) -> bool {
        if let Some(proto) = &self.proto {
            if proto.l3.is_some_and(|l3| l3 != pkt.ethertype()) {
                return false;
            }
            if let Some(want) = proto.l4 {
                match pkt.l4() {
                    Some((have, _)) if have == want => {}
                    _ => return false,
                }
            }
        }
        let addrs = match *pkt {
            Packet::Ipv4 { src, dst, .. } => Some((IpAddr::V4(src), IpAddr::V4(dst))),
            Packet::Ipv6 { src, dst, .. } => Some((IpAddr::V6(src), IpAddr::V6(dst))),
            Packet::Arp { sender, target, .. } => Some((IpAddr::V4(sender), IpAddr::V4(target))),
            Packet::Other { .. } | Packet::Unknown => None,
        };
        let ports = match pkt.l4() {
            Some((_, L4::Tcp { sport, dport, .. })) | Some((_, L4::Udp { sport, dport })) => {
                Some((*sport, *dport))
            }
            _ => None,
        };
        self.matches_endpoints(addrs, ports)
    }

    /// Whether a packet's addresses (source, destination) and ports pass
    /// the address and port filters (`None`: the packet has none).
    pub fn matches_endpoints(
        &self,
        addrs: Option<(IpAddr, IpAddr)>,
        ports: Option<(u16, u16)>,
    ) -> bool {
        if self.addrs().next().is_some() {
            let Some((src, dst)) = addrs else {
                return false;
            };
            if self.saddr.is_some_and(|a| a != src)
                || self.daddr.is_some_and(|a| a != dst)
                || self.addr.is_some_and(|a| a != src && a != dst)
            {
                return false;
            }
        }
        if self.has_ports() {
            let Some((sport, dport)) = ports else {
                return false;
            };
            if self.sport.is_some_and(|p| p != sport)
                || self.dport.is_some_and(|p| p != dport)
                || self.port.is_some_and(|p| p != sport && p != dport)
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        parse_addr(s).expect("valid address")
    }

    fn proto(s: &str) -> Proto {
        parse_proto(s).expect("valid proto")
    }

    #[test]
    fn an_encapsulated_packet_matches_by_its_inner_or_outer_packet() {
        let mut ev = crate::event::tests::vxlan_sample();
        let f = |addr: Option<&str>, p: Option<&str>, port: Option<u16>| Filter {
            addr: addr.map(ip),
            proto: p.map(proto),
            port,
            ..Filter::default()
        };
        // inner: ICMP 10.35.13.63 -> 9.135.224.89
        assert!(f(Some("9.135.224.89"), None, None).matches(&ev));
        assert!(f(None, Some("icmp"), None).matches(&ev));
        // outer: UDP 192.168.77.1 -> 192.168.77.2:8472
        assert!(f(Some("192.168.77.2"), None, None).matches(&ev));
        assert!(f(None, Some("udp"), Some(8472)).matches(&ev));
        // neither, and no mixing of the two: ICMP of the outer addresses
        assert!(!f(Some("10.0.0.9"), None, None).matches(&ev));
        assert!(!f(Some("192.168.77.2"), Some("icmp"), None).matches(&ev));
        assert!(!f(None, Some("tcp"), None).matches(&ev));
        ev.tunnel = None;
        assert!(!f(Some("192.168.77.2"), None, None).matches(&ev));
    }

    #[test]
    fn parse_values() {
        assert_eq!(ip("10.0.0.1"), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(ip("fd00::1"), "fd00::1".parse::<IpAddr>().expect("addr"));
        assert_eq!(
            parse_addr("10.0.0.256").unwrap_err().to_string(),
            "'10.0.0.256' is not an IP address; give an IPv4 or IPv6 address such as 10.0.0.1 or fd00::1"
        );
        assert!(parse_addr("").is_err());
        assert_eq!(parse_port("80"), Ok(80));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("0"), Err(FilterError::BadPort("0".into())));
        assert_eq!(
            parse_port("65536"),
            Err(FilterError::BadPort("65536".into()))
        );
        assert_eq!(
            parse_port("http").unwrap_err().to_string(),
            "'http' is not a port; give a number from 1 to 65535"
        );
    }

    #[test]
    fn parse_protos() {
        let cases: [(&str, &str, Option<u16>, Option<u8>); 11] = [
            ("ip", "ip", Some(0x0800), None),
            ("ipv4", "ip", Some(0x0800), None),
            ("ip6", "ip6", Some(0x86dd), None),
            ("ipv6", "ip6", Some(0x86dd), None),
            ("arp", "arp", Some(0x0806), None),
            ("tcp", "tcp", None, Some(6)),
            ("udp", "udp", None, Some(17)),
            ("icmp", "icmp", Some(0x0800), Some(1)),
            ("icmp6", "icmp6", Some(0x86dd), Some(58)),
            ("icmpv6", "icmp6", Some(0x86dd), Some(58)),
            ("sctp", "sctp", None, Some(132)),
        ];
        for (input, name, l3, l4) in cases {
            assert_eq!(parse_proto(input), Ok(Proto { name, l3, l4 }), "{input}");
        }
        assert_eq!(
            parse_proto("gre").unwrap_err().to_string(),
            "unknown protocol 'gre'; use one of: ip, ipv4, ip6, ipv6, arp, tcp, udp, icmp, icmp6, icmpv6, sctp"
        );
    }

    #[test]
    fn netns_arg() {
        assert_eq!(
            parse_netns_arg("4026531840"),
            NetnsArg::Inode(4_026_531_840)
        );
        assert_eq!(
            parse_netns_arg("/run/netns/blue"),
            NetnsArg::Path("/run/netns/blue".into())
        );
        assert_eq!(
            parse_netns_arg("99999999999"),
            NetnsArg::Path("99999999999".into())
        );
        assert_eq!(parse_netns_arg(""), NetnsArg::Path(String::new()));
    }

    #[test]
    fn netns_values_that_name_nothing_are_refused() {
        assert_eq!(
            parse_netns("4026531840"),
            Ok(NetnsArg::Inode(4_026_531_840))
        );
        assert_eq!(
            parse_netns("/run/netns/blue"),
            Ok(NetnsArg::Path("/run/netns/blue".into()))
        );
        // a name that is not all digits is a (relative) path
        assert_eq!(parse_netns("12a"), Ok(NetnsArg::Path("12a".into())));
        for bad in ["0", "000", "", "4294967296", "99999999999"] {
            assert_eq!(
                parse_netns(bad),
                Err(FilterError::BadNetns(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_netns("0").unwrap_err().to_string(),
            "'0' names no network namespace; give its inode number (above 0, as `stat -L -c %i /proc/PID/ns/net` prints it) or a path such as /proc/PID/ns/net or /run/netns/NAME"
        );
    }

    #[test]
    fn validate_rules() {
        let f = Filter {
            saddr: Some(ip("10.0.0.1")),
            daddr: Some(ip("fd00::1")),
            ..Filter::default()
        };
        assert_eq!(f.validate(), Err(FilterError::MixedFamilies));
        let f = Filter {
            proto: Some(proto("icmp")),
            port: Some(80),
            ..Filter::default()
        };
        assert_eq!(
            f.validate().unwrap_err().to_string(),
            "port filters only apply to tcp and udp, not to '-p icmp'; drop --sport/--dport/--port or use -p tcp/udp"
        );
        for p in ["arp", "icmp6", "sctp"] {
            let f = Filter {
                proto: Some(proto(p)),
                dport: Some(53),
                ..Filter::default()
            };
            assert!(f.validate().is_err(), "{p}");
        }
        for p in ["tcp", "udp", "ip", "ip6"] {
            let f = Filter {
                proto: Some(proto(p)),
                sport: Some(53),
                ..Filter::default()
            };
            assert_eq!(f.validate(), Ok(()), "{p}");
        }
        let f = Filter {
            addr: Some(ip("fd00::1")),
            proto: Some(proto("icmp")),
            ..Filter::default()
        };
        assert_eq!(
            f.validate().unwrap_err().to_string(),
            "address fd00::1 cannot match '-p icmp'; give an address of the protocol's family or change -p"
        );
        let f = Filter {
            saddr: Some(ip("10.0.0.1")),
            proto: Some(proto("ip6")),
            ..Filter::default()
        };
        assert!(matches!(
            f.validate(),
            Err(FilterError::FamilyMismatch { .. })
        ));
        let f = Filter {
            saddr: Some(ip("10.0.0.1")),
            proto: Some(proto("arp")),
            ..Filter::default()
        };
        assert_eq!(f.validate(), Ok(()));
        let f = Filter {
            saddr: Some(ip("fd00::1")),
            addr: Some(ip("fd00::2")),
            proto: Some(proto("tcp")),
            port: Some(80),
            ..Filter::default()
        };
        assert_eq!(f.validate(), Ok(()));
        assert_eq!(Filter::default().validate(), Ok(()));
    }

    #[test]
    fn encode_v4() {
        let f = Filter {
            saddr: Some(ip("10.0.0.1")),
            addr: Some(ip("192.168.1.2")),
            proto: Some(proto("tcp")),
            sport: Some(0x1234),
            port: Some(8080),
            netns: Some(4_026_531_840),
            ifindex: Some(2),
            pid: Some(77),
            skb_mode: true,
            ..Filter::default()
        };
        let b = f.encode();
        let mut want = [0u8; FILTER_SIZE];
        want[0..4].copy_from_slice(&[10, 0, 0, 1]);
        want[32..36].copy_from_slice(&[192, 168, 1, 2]);
        want[48..52].copy_from_slice(&4_026_531_840u32.to_le_bytes());
        want[52..56].copy_from_slice(&2u32.to_le_bytes());
        want[56..60].copy_from_slice(&77u32.to_le_bytes());
        want[60..64].copy_from_slice(&(FL_SADDR | FL_ADDR | FL_SKB_MODE | FL_PORTS).to_le_bytes());
        want[66..68].copy_from_slice(&[0x34, 0x12]);
        want[70..72].copy_from_slice(&8080u16.to_le_bytes());
        want[72] = 6;
        assert_eq!(b, want);
    }

    #[test]
    fn encode_v6() {
        let f = Filter {
            daddr: Some(ip("fd00::2")),
            proto: Some(proto("icmp6")),
            ..Filter::default()
        };
        let b = f.encode();
        let mut want = [0u8; FILTER_SIZE];
        want[16..32].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().expect("addr").octets());
        want[60..64].copy_from_slice(&(FL_DADDR | FL_V6).to_le_bytes());
        want[64..66].copy_from_slice(&0x86ddu16.to_le_bytes());
        want[72] = 58;
        assert_eq!(b, want);
        assert_eq!(Filter::default().encode(), [0u8; FILTER_SIZE]);
    }

    #[test]
    fn encode_snaplen() {
        let f = Filter {
            snaplen: Some(300),
            ..Filter::default()
        };
        let mut want = [0u8; FILTER_SIZE];
        want[60..64].copy_from_slice(&FL_BYTES.to_le_bytes());
        want[74..76].copy_from_slice(&300u16.to_le_bytes());
        assert_eq!(f.encode(), want);
    }

    fn tcp_event(src: &str, dst: &str, sport: u16, dport: u16) -> Event {
        let mut ev = sample();
        let l4 = L4::Tcp {
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: 2,
        };
        ev.packet = match (ip(src), ip(dst)) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Packet::Ipv4 { src: s, dst: d, l4 },
            (IpAddr::V6(s), IpAddr::V6(d)) => Packet::Ipv6 { src: s, dst: d, l4 },
            _ => Packet::Unknown,
        };
        ev
    }

    #[test]
    fn matches_proto() {
        let icmp = sample();
        let tcp = tcp_event("10.0.0.1", "10.0.0.2", 1000, 80);
        let tcp6 = tcp_event("fd00::1", "fd00::2", 1000, 80);
        let with = |p: &str| Filter {
            proto: Some(proto(p)),
            ..Filter::default()
        };
        assert!(with("icmp").matches(&icmp));
        assert!(!with("icmp").matches(&tcp));
        assert!(with("tcp").matches(&tcp));
        assert!(with("tcp").matches(&tcp6));
        assert!(!with("udp").matches(&tcp));
        assert!(with("ip").matches(&tcp));
        assert!(!with("ip").matches(&tcp6));
        assert!(with("ip6").matches(&tcp6));
        assert!(!with("icmp6").matches(&icmp));
        let mut arp = sample();
        arp.packet = Packet::Arp {
            op: 1,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            target: Ipv4Addr::new(10, 0, 0, 2),
        };
        assert!(with("arp").matches(&arp));
        assert!(!with("tcp").matches(&arp));
        let mut unknown = sample();
        unknown.packet = Packet::Unknown;
        assert!(!with("ip").matches(&unknown));
        assert!(Filter::default().matches(&unknown));
        // unreadable L4 still carries its protocol
        let mut bad = sample();
        bad.packet = Packet::Ipv4 {
            src: Ipv4Addr::new(1, 1, 1, 1),
            dst: Ipv4Addr::new(2, 2, 2, 2),
            l4: L4::Unreadable(6),
        };
        assert!(with("tcp").matches(&bad));
    }

    #[test]
    fn matches_addresses() {
        let ev = tcp_event("10.0.0.1", "10.0.0.2", 1000, 80);
        let f = |s: Option<&str>, d: Option<&str>, a: Option<&str>| Filter {
            saddr: s.map(ip),
            daddr: d.map(ip),
            addr: a.map(ip),
            ..Filter::default()
        };
        assert!(f(Some("10.0.0.1"), None, None).matches(&ev));
        assert!(!f(Some("10.0.0.2"), None, None).matches(&ev));
        assert!(f(None, Some("10.0.0.2"), None).matches(&ev));
        assert!(!f(None, Some("10.0.0.1"), None).matches(&ev));
        assert!(f(None, None, Some("10.0.0.1")).matches(&ev));
        assert!(f(None, None, Some("10.0.0.2")).matches(&ev));
        assert!(!f(None, None, Some("10.0.0.3")).matches(&ev));
        assert!(f(Some("10.0.0.1"), Some("10.0.0.2"), Some("10.0.0.2")).matches(&ev));
        assert!(!f(Some("10.0.0.1"), Some("10.0.0.3"), None).matches(&ev));
        // other family never matches
        assert!(!f(None, None, Some("::ffff:10.0.0.1")).matches(&ev));
        let ev6 = tcp_event("fd00::1", "fd00::2", 1, 2);
        assert!(f(None, None, Some("fd00::2")).matches(&ev6));
        assert!(!f(None, None, Some("10.0.0.1")).matches(&ev6));
        let mut arp = sample();
        arp.packet = Packet::Arp {
            op: 2,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            target: Ipv4Addr::new(10, 0, 0, 2),
        };
        assert!(f(Some("10.0.0.1"), Some("10.0.0.2"), None).matches(&arp));
        assert!(!f(Some("10.0.0.2"), None, None).matches(&arp));
        let mut other = sample();
        other.packet = Packet::Other { ethertype: 0x88cc };
        assert!(!f(None, None, Some("10.0.0.1")).matches(&other));
    }

    #[test]
    fn matches_ports_and_fields() {
        let ev = tcp_event("10.0.0.1", "10.0.0.2", 1000, 80);
        let ports = |s, d, p| Filter {
            sport: s,
            dport: d,
            port: p,
            ..Filter::default()
        };
        assert!(ports(Some(1000), None, None).matches(&ev));
        assert!(!ports(Some(80), None, None).matches(&ev));
        assert!(ports(None, Some(80), None).matches(&ev));
        assert!(ports(None, None, Some(80)).matches(&ev));
        assert!(ports(None, None, Some(1000)).matches(&ev));
        assert!(!ports(None, None, Some(81)).matches(&ev));
        let mut udp = ev.clone();
        udp.packet = Packet::Ipv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            l4: L4::Udp {
                sport: 5353,
                dport: 53,
            },
        };
        assert!(ports(None, Some(53), None).matches(&udp));
        // ICMP has no ports
        assert!(!ports(None, None, Some(1)).matches(&sample()));
        let fields = |n, i, p| Filter {
            netns: n,
            ifindex: i,
            pid: p,
            ..Filter::default()
        };
        let s = sample();
        assert!(fields(Some(s.netns), Some(2), Some(0)).matches(&s));
        assert!(!fields(Some(1), None, None).matches(&s));
        assert!(!fields(None, Some(3), None).matches(&s));
        assert!(!fields(None, None, Some(5)).matches(&s));
        assert!(fields(Some(0), Some(0), None).matches(&s));
        let skb_mode = Filter {
            skb_mode: true,
            ..Filter::default()
        };
        assert!(skb_mode.matches(&s));
    }
}
