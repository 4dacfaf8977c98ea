//! The one-line packet summary, e.g.
//! `ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1`.

use std::fmt::{self, Display, Write};

use crate::event::{Packet, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4};

/// Writes the summary of `p` into `out`.
pub fn write_summary<W: Write + ?Sized>(out: &mut W, p: &Packet) -> fmt::Result {
    match *p {
        Packet::Ipv4 { src, dst, l4 } => write_ip(out, &src, &dst, &l4, false),
        Packet::Ipv6 { src, dst, l4 } => write_ip(out, &src, &dst, &l4, true),
        Packet::Arp { op, sender, target } => {
            write!(out, "ARP: {sender} -> {target}, ")?;
            match op {
                1 => out.write_str("request"),
                2 => out.write_str("reply"),
                n => write!(out, "op: {n}"),
            }
        }
        Packet::Other { ethertype } => write!(out, "ether protocol: 0x{ethertype:04x}"),
        Packet::Unknown => out.write_str("unknown"),
    }
}

/// The summary of `p` as a new string.
pub fn summary(p: &Packet) -> String {
    let mut s = String::with_capacity(64);
    // Writing into a String cannot fail.
    let _ = write_summary(&mut s, p);
    s
}

impl Display for Packet {
    /// Formats the one-line summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_summary(f, self)
    }
}

/// Writes the TCP flag letters (`S F R P A U E C`, `-` for none).
pub fn write_tcp_flags<W: Write + ?Sized>(out: &mut W, flags: u8) -> fmt::Result {
    const LETTERS: [(u8, char); 8] = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'C'),
    ];
    if flags == 0 {
        return out.write_char('-');
    }
    for (bit, c) in LETTERS {
        if flags & bit != 0 {
            out.write_char(c)?;
        }
    }
    Ok(())
}

/// The TCP flag letters as a string, e.g. `SA`.
pub fn tcp_flags(flags: u8) -> String {
    let mut s = String::with_capacity(8);
    let _ = write_tcp_flags(&mut s, flags);
    s
}

/// `addr:port`, with IPv6 addresses in brackets.
struct Endpoint<'a, A>(&'a A, u16, bool);

impl<A: Display> Display for Endpoint<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.2 {
            write!(f, "[{}]:{}", self.0, self.1)
        } else {
            write!(f, "{}:{}", self.0, self.1)
        }
    }
}

/// Name of an ICMP (or ICMPv6 when `v6`) type, and whether it is an echo.
pub fn icmp_type_name(ty: u8, v6: bool) -> Option<(&'static str, bool)> {
    let r = if v6 {
        match ty {
            128 => ("ping request", true),
            129 => ("ping reply", true),
            1 => ("unreachable", false),
            2 => ("too big", false),
            3 => ("time exceeded", false),
            4 => ("param problem", false),
            133 => ("router solicit", false),
            134 => ("router advert", false),
            135 => ("neigh solicit", false),
            136 => ("neigh advert", false),
            _ => return None,
        }
    } else {
        match ty {
            8 => ("ping request", true),
            0 => ("ping reply", true),
            3 => ("unreachable", false),
            4 => ("source quench", false),
            5 => ("redirect", false),
            11 => ("time exceeded", false),
            12 => ("param problem", false),
            13 => ("timestamp", false),
            14 => ("timestamp reply", false),
            _ => return None,
        }
    };
    Some(r)
}

fn write_ip<W: Write + ?Sized, A: Display>(
    out: &mut W,
    src: &A,
    dst: &A,
    l4: &L4,
    v6: bool,
) -> fmt::Result {
    let icmp = if v6 { "ICMPv6" } else { "ICMP" };
    let ip = if v6 { "IPv6" } else { "IPv4" };
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
        } => {
            write!(
                out,
                "TCP: {} -> {}, seq: {seq}, ack: {ack}, flags: ",
                Endpoint(src, sport, v6),
                Endpoint(dst, dport, v6)
            )?;
            write_tcp_flags(out, flags)
        }
        L4::Udp { sport, dport } => write!(
            out,
            "UDP: {} -> {}",
            Endpoint(src, sport, v6),
            Endpoint(dst, dport, v6)
        ),
        L4::Icmp { ty, code, seq, .. } => match icmp_type_name(ty, v6) {
            Some((kind, true)) => write!(out, "{icmp}: {src} -> {dst}, {kind:<15}, seq: {seq}"),
            Some((name, false)) => write!(out, "{icmp}: {src} -> {dst}, {name:<15}, code: {code}"),
            // "type N" padded to the 15 columns of a name
            None => write!(out, "{icmp}: {src} -> {dst}, type {ty:<10}, code: {code}"),
        },
        L4::Unreadable(p) => match p {
            IPPROTO_TCP => write!(out, "TCP: {src} -> {dst}"),
            IPPROTO_UDP => write!(out, "UDP: {src} -> {dst}"),
            IPPROTO_ICMP if !v6 => write!(out, "ICMP: {src} -> {dst}"),
            IPPROTO_ICMPV6 if v6 => write!(out, "ICMPv6: {src} -> {dst}"),
            p => write!(out, "{ip}: {src} -> {dst}, proto: {p}"),
        },
        L4::Other(p) => write!(out, "{ip}: {src} -> {dst}, proto: {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(l4: L4) -> Packet {
        Packet::Ipv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            l4,
        }
    }

    fn v6(l4: L4) -> Packet {
        Packet::Ipv6 {
            src: "fd00::1".parse::<Ipv6Addr>().expect("addr"),
            dst: "fd00::2".parse::<Ipv6Addr>().expect("addr"),
            l4,
        }
    }

    fn icmp(ty: u8, code: u8, seq: u16) -> L4 {
        L4::Icmp {
            ty,
            code,
            id: 9,
            seq,
        }
    }

    fn tcp(flags: u8) -> L4 {
        L4::Tcp {
            sport: 34567,
            dport: 8080,
            seq: 123,
            ack: 0,
            flags,
        }
    }

    #[test]
    fn icmp_echo_matches_the_seed() {
        let p = Packet::Ipv4 {
            src: Ipv4Addr::new(10, 35, 13, 63),
            dst: Ipv4Addr::new(9, 135, 224, 89),
            l4: icmp(8, 0, 1),
        };
        assert_eq!(
            summary(&p),
            "ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1"
        );
        let p = Packet::Ipv4 {
            src: Ipv4Addr::new(9, 135, 224, 89),
            dst: Ipv4Addr::new(10, 35, 13, 63),
            l4: icmp(0, 0, 1),
        };
        assert_eq!(
            summary(&p),
            "ICMP: 9.135.224.89 -> 10.35.13.63, ping reply     , seq: 1"
        );
    }

    #[test]
    fn icmp_other_types() {
        assert_eq!(
            summary(&v4(icmp(3, 3, 0))),
            "ICMP: 10.0.0.1 -> 10.0.0.2, unreachable    , code: 3"
        );
        assert_eq!(
            summary(&v4(icmp(14, 0, 0))),
            "ICMP: 10.0.0.1 -> 10.0.0.2, timestamp reply, code: 0"
        );
        assert_eq!(
            summary(&v4(icmp(11, 1, 0))),
            "ICMP: 10.0.0.1 -> 10.0.0.2, time exceeded  , code: 1"
        );
        assert_eq!(
            summary(&v4(icmp(42, 7, 0))),
            "ICMP: 10.0.0.1 -> 10.0.0.2, type 42        , code: 7"
        );
        assert_eq!(
            summary(&v4(icmp(255, 0, 0))),
            "ICMP: 10.0.0.1 -> 10.0.0.2, type 255       , code: 0"
        );
    }

    #[test]
    fn icmpv6() {
        assert_eq!(
            summary(&v6(icmp(128, 0, 3))),
            "ICMPv6: fd00::1 -> fd00::2, ping request   , seq: 3"
        );
        assert_eq!(
            summary(&v6(icmp(129, 0, 3))),
            "ICMPv6: fd00::1 -> fd00::2, ping reply     , seq: 3"
        );
        assert_eq!(
            summary(&v6(icmp(135, 0, 0))),
            "ICMPv6: fd00::1 -> fd00::2, neigh solicit  , code: 0"
        );
        assert_eq!(
            summary(&v6(icmp(2, 0, 0))),
            "ICMPv6: fd00::1 -> fd00::2, too big        , code: 0"
        );
        // type 8 is an IPv4 echo request, not an ICMPv6 one
        assert_eq!(
            summary(&v6(icmp(8, 0, 0))),
            "ICMPv6: fd00::1 -> fd00::2, type 8         , code: 0"
        );
    }

    #[test]
    fn tcp_flags_order() {
        assert_eq!(
            summary(&v4(tcp(0x02))),
            "TCP: 10.0.0.1:34567 -> 10.0.0.2:8080, seq: 123, ack: 0, flags: S"
        );
        assert_eq!(tcp_flags(0x12), "SA");
        assert_eq!(tcp_flags(0x18), "PA");
        assert_eq!(tcp_flags(0x11), "FA");
        assert_eq!(tcp_flags(0x14), "RA");
        assert_eq!(tcp_flags(0), "-");
        assert_eq!(tcp_flags(0xff), "SFRPAUEC");
        assert_eq!(tcp_flags(0xc2), "SEC");
    }

    #[test]
    fn tcp_and_udp_v6_are_bracketed() {
        let p = v6(L4::Tcp {
            sport: 80,
            dport: 4000,
            seq: 1,
            ack: 2,
            flags: 0x10,
        });
        assert_eq!(
            summary(&p),
            "TCP: [fd00::1]:80 -> [fd00::2]:4000, seq: 1, ack: 2, flags: A"
        );
        let p = v6(L4::Udp {
            sport: 5353,
            dport: 53,
        });
        assert_eq!(summary(&p), "UDP: [fd00::1]:5353 -> [fd00::2]:53");
    }

    #[test]
    fn udp_v4() {
        let p = v4(L4::Udp {
            sport: 5353,
            dport: 53,
        });
        assert_eq!(summary(&p), "UDP: 10.0.0.1:5353 -> 10.0.0.2:53");
    }

    #[test]
    fn other_and_unreadable_l4() {
        assert_eq!(
            summary(&v4(L4::Other(47))),
            "IPv4: 10.0.0.1 -> 10.0.0.2, proto: 47"
        );
        assert_eq!(
            summary(&v6(L4::Other(47))),
            "IPv6: fd00::1 -> fd00::2, proto: 47"
        );
        assert_eq!(summary(&v4(L4::Unreadable(6))), "TCP: 10.0.0.1 -> 10.0.0.2");
        assert_eq!(summary(&v6(L4::Unreadable(17))), "UDP: fd00::1 -> fd00::2");
        assert_eq!(
            summary(&v4(L4::Unreadable(1))),
            "ICMP: 10.0.0.1 -> 10.0.0.2"
        );
        assert_eq!(
            summary(&v6(L4::Unreadable(58))),
            "ICMPv6: fd00::1 -> fd00::2"
        );
        assert_eq!(
            summary(&v6(L4::Unreadable(132))),
            "IPv6: fd00::1 -> fd00::2, proto: 132"
        );
    }

    #[test]
    fn arp_other_unknown() {
        let arp = |op| Packet::Arp {
            op,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            target: Ipv4Addr::new(10, 0, 0, 2),
        };
        assert_eq!(summary(&arp(1)), "ARP: 10.0.0.1 -> 10.0.0.2, request");
        assert_eq!(summary(&arp(2)), "ARP: 10.0.0.1 -> 10.0.0.2, reply");
        assert_eq!(summary(&arp(7)), "ARP: 10.0.0.1 -> 10.0.0.2, op: 7");
        assert_eq!(
            summary(&Packet::Other { ethertype: 0x88cc }),
            "ether protocol: 0x88cc"
        );
        assert_eq!(
            summary(&Packet::Other {
                ethertype: 0x0800 + 1
            }),
            "ether protocol: 0x0801"
        );
        assert_eq!(summary(&Packet::Unknown), "unknown");
        assert_eq!(format!("{}", Packet::Unknown), "unknown");
    }
}
