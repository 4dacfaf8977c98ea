//! NAT made explicit in timelines: where the addresses or ports of one
//! packet change between two of its events, the change is a translation
//! (DNAT when the destination changed, SNAT when the source did), shown as
//! a line of its own between the two events:
//!
//! ```text
//!                 NAT  10.96.0.20:80 -> 10.244.1.5:8080 (DNAT)
//! ```
//!
//! Events without IP addresses (not parsed, ARP) and events whose addresses
//! came from the socket are passed over: the change is measured between the
//! packets' own headers. An skb context may also hold several packets (an
//! skb freed where no tracer sees it and reused): two events are taken for
//! one packet only when what NAT leaves alone agrees — the IPv4
//! identification, the TCP sequence and acknowledgment numbers, the ICMP
//! sequence.

use std::fmt::{self, Write};
use std::net::IpAddr;

use crate::event::{Event, Packet, L4};
use crate::remote::{PacketId, Proto};

/// What NAT may rewrite in a packet: protocol, addresses, and the ports of
/// TCP and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// IP protocol number.
    pub proto: u8,
    /// Source address and port.
    pub src: (IpAddr, Option<u16>),
    /// Destination address and port.
    pub dst: (IpAddr, Option<u16>),
    /// What NAT does not rewrite, to tell one packet from the next.
    pub unchanged: Unchanged,
}

/// The fields NAT leaves alone (`None`: the packet has no such field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unchanged {
    /// IPv4 identification.
    pub ip_id: Option<u16>,
    /// TCP sequence number.
    pub seq: Option<u32>,
    /// TCP acknowledgment number.
    pub ack: Option<u32>,
    /// ICMP echo sequence.
    pub icmp_seq: Option<u16>,
}

impl Endpoints {
    /// The endpoints of an event's packet, unless its addresses came from
    /// the socket.
    pub fn of_event(ev: &Event) -> Option<Endpoints> {
        if ev.from_sk {
            return None;
        }
        let mut e = Endpoints::of_packet(&ev.packet)?;
        e.unchanged.ip_id = ev.ip_id;
        Some(e)
    }

    /// The endpoints of a decoded packet (IPv4 or IPv6).
    pub fn of_packet(p: &Packet) -> Option<Endpoints> {
        let (src, dst, l4, v6) = match *p {
            Packet::Ipv4 { src, dst, ref l4 } => (IpAddr::V4(src), IpAddr::V4(dst), l4, false),
            Packet::Ipv6 { src, dst, ref l4 } => (IpAddr::V6(src), IpAddr::V6(dst), l4, true),
            _ => return None,
        };
        let ports = match *l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            _ => None,
        };
        let unchanged = match *l4 {
            L4::Tcp { seq, ack, .. } => Unchanged {
                seq: Some(seq),
                ack: Some(ack),
                ..Unchanged::default()
            },
            L4::Icmp { seq, .. } => Unchanged {
                icmp_seq: Some(seq),
                ..Unchanged::default()
            },
            _ => Unchanged::default(),
        };
        Some(Endpoints {
            proto: l4.proto(v6),
            src: (src, ports.map(|p| p.0)),
            dst: (dst, ports.map(|p| p.1)),
            unchanged,
        })
    }

    /// The endpoints of an event object's `pkt` (what an agent sent).
    pub fn of_remote(p: &PacketId) -> Option<Endpoints> {
        let proto = match p.proto.as_ref()? {
            Proto::Number(n) => *n,
            Proto::Name(n) => match n.as_str() {
                "tcp" => 6,
                "udp" => 17,
                "icmp" => 1,
                "icmpv6" => 58,
                _ => return None,
            },
        };
        let ports = matches!(proto, 6 | 17).then_some((p.sport, p.dport));
        Some(Endpoints {
            proto,
            src: (p.saddr?, ports.and_then(|p| p.0)),
            dst: (p.daddr?, ports.and_then(|p| p.1)),
            unchanged: Unchanged {
                ip_id: p.ip_id,
                seq: p.seq,
                ack: p.ack,
                icmp_seq: p.icmp_seq,
            },
        })
    }
}

/// Which side a translation rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// The destination.
    Dnat,
    /// The source.
    Snat,
}

impl NatKind {
    /// `DNAT` or `SNAT`.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Dnat => "DNAT",
            NatKind::Snat => "SNAT",
        }
    }

    /// `dnat` or `snat` (JSON).
    pub fn json_name(self) -> &'static str {
        match self {
            NatKind::Dnat => "dnat",
            NatKind::Snat => "snat",
        }
    }
}

/// One address (and port) rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nat {
    /// Source or destination.
    pub kind: NatKind,
    /// Before.
    pub from: (IpAddr, Option<u16>),
    /// After.
    pub to: (IpAddr, Option<u16>),
}

/// `10.96.0.20:80`, `[fd00::1]:80`, or the address alone without a port.
pub struct Endpoint(pub (IpAddr, Option<u16>));

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
            (a, Some(p)) => write!(f, "{a}:{p}"),
            (a, None) => write!(f, "{a}"),
        }
    }
}

impl Nat {
    /// The text line (indented like `return value:` lines, newline
    /// included).
    pub fn write_line(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "                NAT  {} -> {} ({})",
            Endpoint(self.from),
            Endpoint(self.to),
            self.kind.name()
        );
    }

    /// `{"kind":"dnat","from":"10.96.0.20:80","to":"10.244.1.5:8080"}`
    /// plus `"at":N` first when given.
    pub fn write_json(&self, out: &mut String, at: Option<usize>) {
        out.push('{');
        if let Some(at) = at {
            let _ = write!(out, "\"at\":{at},");
        }
        let _ = write!(
            out,
            "\"kind\":\"{}\",\"from\":\"{}\",\"to\":\"{}\"}}",
            self.kind.json_name(),
            Endpoint(self.from),
            Endpoint(self.to)
        );
    }
}

/// The translations between two states of one packet (none when the
/// protocol or what NAT leaves alone differs: then they are two packets).
pub fn between(before: &Endpoints, after: &Endpoints) -> Vec<Nat> {
    let mut out = Vec::new();
    if before.proto != after.proto || before.unchanged != after.unchanged {
        return out;
    }
    if before.dst != after.dst {
        out.push(Nat {
            kind: NatKind::Dnat,
            from: before.dst,
            to: after.dst,
        });
    }
    if before.src != after.src {
        out.push(Nat {
            kind: NatKind::Snat,
            from: before.src,
            to: after.src,
        });
    }
    out
}

/// Follows one packet's events in order and tells, for each, the
/// translations since the previous event that had endpoints.
#[derive(Debug, Default)]
pub struct Tracker {
    last: Option<Endpoints>,
}

impl Tracker {
    /// The translations that happened before an event with these
    /// endpoints (`None`: the event has none to compare, nothing changes).
    pub fn next(&mut self, now: Option<Endpoints>) -> Vec<Nat> {
        let Some(now) = now else {
            return Vec::new();
        };
        let out = match &self.last {
            Some(before) => between(before, &now),
            None => Vec::new(),
        };
        self.last = Some(now);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Packet {
        Packet::Ipv4 {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            l4: L4::Tcp {
                sport,
                dport,
                seq: 1,
                ack: 0,
                flags: 2,
            },
        }
    }

    #[test]
    fn a_dnat_then_an_snat_are_told_apart_and_printed() {
        let to_vip = tcp([10, 244, 1, 2], 40000, [10, 96, 0, 20], 80);
        // the reply in the same skb context (a reused skb): another packet
        let mut reply = tcp([10, 96, 0, 20], 80, [10, 244, 1, 2], 40000);
        if let Packet::Ipv4 {
            l4: L4::Tcp { seq, .. },
            ..
        } = &mut reply
        {
            *seq = 99;
        }
        let mut r = Tracker::default();
        r.next(Endpoints::of_packet(&to_vip));
        assert!(r.next(Endpoints::of_packet(&reply)).is_empty());
        let to_pod = tcp([10, 244, 1, 2], 40000, [10, 244, 2, 5], 8080);
        let masq = tcp([10, 240, 0, 11], 61000, [10, 244, 2, 5], 8080);
        let mut t = Tracker::default();
        assert!(t.next(Endpoints::of_packet(&to_vip)).is_empty());
        assert!(t.next(Endpoints::of_packet(&to_vip)).is_empty());
        assert!(t.next(None).is_empty(), "an event without headers");
        let dnat = t.next(Endpoints::of_packet(&to_pod));
        let mut s = String::new();
        for n in &dnat {
            n.write_line(&mut s);
        }
        assert_eq!(
            s,
            "                NAT  10.96.0.20:80 -> 10.244.2.5:8080 (DNAT)\n"
        );
        let snat = t.next(Endpoints::of_packet(&masq));
        assert_eq!(snat.len(), 1);
        let mut j = String::new();
        snat[0].write_json(&mut j, Some(4));
        assert_eq!(
            j,
            r#"{"at":4,"kind":"snat","from":"10.244.1.2:40000","to":"10.240.0.11:61000"}"#
        );
    }

    #[test]
    fn remote_packets_and_other_protocols() {
        let id: PacketId = serde_json::from_str(
            r#"{"saddr":"fd00::1","daddr":"fd00::2","proto":"udp","sport":53,"dport":5353}"#,
        )
        .unwrap_or_default();
        let e = Endpoints::of_remote(&id);
        assert_eq!(
            e.map(|e| Endpoint(e.dst).to_string()).as_deref(),
            Some("[fd00::2]:5353")
        );
        let icmp: PacketId = serde_json::from_str(
            r#"{"saddr":"10.0.0.1","daddr":"10.0.0.2","ip_id":7,"proto":"icmp","icmp_seq":1}"#,
        )
        .unwrap_or_default();
        let a = Endpoints::of_remote(&icmp);
        let mut moved = icmp.clone();
        moved.daddr = "10.0.0.9".parse().ok();
        let b = Endpoints::of_remote(&moved);
        let n = match (a, b) {
            (Some(a), Some(b)) => between(&a, &b),
            _ => Vec::new(),
        };
        assert_eq!(n.len(), 1);
        assert_eq!(Endpoint(n[0].to).to_string(), "10.0.0.9");
        // another IPv4 identification: another packet
        let mut next = moved.clone();
        next.ip_id = Some(8);
        let c = Endpoints::of_remote(&next);
        assert!(matches!((b, c), (Some(x), Some(y)) if between(&x, &y).is_empty()));
        // another protocol is another packet
        let udp = tcp([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        let tcp_e = Endpoints::of_packet(&udp);
        assert!(matches!((tcp_e, a), (Some(x), Some(y)) if between(&x, &y).is_empty()));
        assert!(Endpoints::of_remote(&PacketId::default()).is_none());
    }
}
