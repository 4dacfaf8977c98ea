//! The one-line packet summary, e.g.
//! `ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1`.

use std::fmt::{self, Display, Write};
use std::net::Ipv4Addr;

use crate::event::{
    Event, Packet, Tunnel, TunnelKind, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4,
};

/// Writes the summary of an event: its packet's, after the tunnel's for an
/// encapsulated one, e.g.
/// `VXLAN vni 1 192.168.77.1 -> 192.168.77.2 | ICMP: 10.244.1.2 -> ...`.
pub fn write_event_summary<W: Write + ?Sized>(out: &mut W, ev: &Event) -> fmt::Result {
    if let Some(t) = &ev.tunnel {
        write_tunnel(out, t)?;
    }
    write_summary(out, &ev.packet)
}

/// `KIND [vni N ]OUTER_SRC -> OUTER_DST | `.
fn write_tunnel<W: Write + ?Sized>(out: &mut W, t: &Tunnel) -> fmt::Result {
    out.write_str(t.kind.name())?;
    out.write_char(' ')?;
    if matches!(t.kind, TunnelKind::Vxlan | TunnelKind::Geneve) {
        out.write_str("vni ")?;
        write_dec(out, u64::from(t.vni))?;
        out.write_char(' ')?;
    }
    match t.outer {
        Packet::Ipv4 { src, dst, .. } => {
            let (mut a, mut b) = ([0u8; 15], [0u8; 15]);
            out.write_str(v4_str(&src, &mut a))?;
            out.write_str(" -> ")?;
            out.write_str(v4_str(&dst, &mut b))?;
        }
        Packet::Ipv6 { src, dst, .. } => write!(out, "{src} -> {dst}")?,
        _ => {}
    }
    out.write_str(" | ")
}

/// Writes the summary of `p` into `out`.
pub fn write_summary<W: Write + ?Sized>(out: &mut W, p: &Packet) -> fmt::Result {
    match *p {
        Packet::Ipv4 { src, dst, l4 } => {
            // IPv4 addresses through a stack buffer: much cheaper than
            // `Ipv4Addr`'s Display on the per-event path.
            let (mut a, mut b) = ([0u8; 15], [0u8; 15]);
            write_ip(out, v4_str(&src, &mut a), v4_str(&dst, &mut b), &l4, false)
        }
        Packet::Ipv6 { src, dst, l4 } => {
            let (mut a, mut b) = (StackStr::new(), StackStr::new());
            let _ = write!(a, "{src}");
            let _ = write!(b, "{dst}");
            write_ip(out, a.as_str(), b.as_str(), &l4, true)
        }
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

/// Writes the decimal digits of `n`.
pub(crate) fn write_dec<W: Write + ?Sized>(out: &mut W, n: u64) -> fmt::Result {
    if n < 10 {
        return out.write_char(char::from(b'0' + n as u8));
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // char by char: cheaper than validating the digits as a `str`
    buf[i..]
        .iter()
        .try_for_each(|&d| out.write_char(char::from(d)))
}

/// Writes `s` left-aligned in `width` characters, like `{:<width}`.
pub(crate) fn write_padded<W: Write + ?Sized>(out: &mut W, s: &str, width: usize) -> fmt::Result {
    out.write_str(s)?;
    const SPACES: &str = "                                ";
    let mut missing = width.saturating_sub(s.chars().count());
    while missing > 0 {
        let n = missing.min(SPACES.len());
        out.write_str(&SPACES[..n])?;
        missing -= n;
    }
    Ok(())
}

/// Dotted-quad text of an IPv4 address in `buf`.
pub(crate) fn v4_str<'b>(a: &Ipv4Addr, buf: &'b mut [u8; 15]) -> &'b str {
    let mut len = 0;
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if o >= 100 {
            buf[len] = b'0' + o / 100;
            len += 1;
        }
        if o >= 10 {
            buf[len] = b'0' + (o / 10) % 10;
            len += 1;
        }
        buf[len] = b'0' + o % 10;
        len += 1;
    }
    // only ASCII digits and dots were written
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Text of an IPv6 address (at most 39 bytes) on the stack.
struct StackStr {
    buf: [u8; 48],
    len: usize,
}

impl StackStr {
    fn new() -> Self {
        StackStr {
            buf: [0; 48],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // only whole `&str`s are appended
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `addr:port`, with IPv6 addresses in brackets.
fn write_endpoint<W: Write + ?Sized>(out: &mut W, addr: &str, port: u16, v6: bool) -> fmt::Result {
    if v6 {
        out.write_char('[')?;
        out.write_str(addr)?;
        out.write_char(']')?;
    } else {
        out.write_str(addr)?;
    }
    out.write_char(':')?;
    write_dec(out, u64::from(port))
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

fn write_ip<W: Write + ?Sized>(
    out: &mut W,
    src: &str,
    dst: &str,
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
            out.write_str("TCP: ")?;
            write_endpoint(out, src, sport, v6)?;
            out.write_str(" -> ")?;
            write_endpoint(out, dst, dport, v6)?;
            out.write_str(", seq: ")?;
            write_dec(out, u64::from(seq))?;
            out.write_str(", ack: ")?;
            write_dec(out, u64::from(ack))?;
            out.write_str(", flags: ")?;
            write_tcp_flags(out, flags)
        }
        L4::Udp { sport, dport } => {
            out.write_str("UDP: ")?;
            write_endpoint(out, src, sport, v6)?;
            out.write_str(" -> ")?;
            write_endpoint(out, dst, dport, v6)
        }
        L4::Icmp { ty, code, seq, .. } => match icmp_type_name(ty, v6) {
            Some((kind, true)) => {
                for part in [icmp, ": ", src, " -> ", dst, ", "] {
                    out.write_str(part)?;
                }
                write_padded(out, kind, 15)?;
                out.write_str(", seq: ")?;
                write_dec(out, u64::from(seq))
            }
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

    #[test]
    fn fast_writers_match_std_formatting() {
        for n in [0u64, 7, 10, 99, 100, 65535, 4_026_531_840, u64::MAX] {
            let mut out = String::new();
            write_dec(&mut out, n).expect("string write");
            assert_eq!(out, n.to_string());
        }
        for a in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(10, 0, 100, 9),
            Ipv4Addr::new(1, 20, 199, 250),
        ] {
            assert_eq!(v4_str(&a, &mut [0; 15]), a.to_string());
        }
        for (s, w) in [
            ("life", 12),
            ("exactly-twelve", 12),
            ("", 3),
            ("näive", 8),
            ("x", 40),
        ] {
            let mut out = String::new();
            write_padded(&mut out, s, w).expect("string write");
            assert_eq!(out, format!("{s:<w$}"));
        }
        let longest: Ipv6Addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            .parse()
            .expect("addr");
        let mut buf = StackStr::new();
        write!(buf, "{longest}").expect("fits");
        assert_eq!(buf.as_str(), longest.to_string());
    }

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
