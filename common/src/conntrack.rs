//! The conntrack entry an skb carries (`skb->_nfct`), shown with `--detail`.
//!
//! The kernel side reads it after a packet matched, when the running
//! kernel's BTF describes `struct nf_conn` (conntrack built in), and appends
//! it to the event record as `struct nt_ct` (`ebpf/include/nt_abi.h`,
//! [`CT_SIZE`] bytes, flagged by [`crate::event::F_CT`]). An skb that
//! conntrack has not seen (yet), or found invalid, has no entry and gets
//! none.
//!
//! Text (one line under the event line, [`write_ct_line`]):
//!
//! ```text
//!                 ct: established, dnat confirmed seen-reply assured dnat-done snat-done, orig tcp 10.250.56.2:40123 -> 10.250.58.100:80, reply 10.250.57.2:8080 -> 10.250.56.2:40123
//! ```
//!
//! JSON (the `ct` member of an event object, [`write_ct_json`]):
//!
//! ```json
//! {"state":"established","status":["dnat","confirmed","seen_reply"],
//!  "orig":{"proto":"tcp","src":"10.250.56.2:40123","dst":"10.250.58.100:80"},
//!  "reply":{"proto":"tcp","src":"10.250.57.2:8080","dst":"10.250.56.2:40123"}}
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize};

use crate::nat::Endpoint;

/// Size in bytes of the conntrack block after an event record (`struct nt_ct`).
pub const CT_SIZE: usize = 88;

/// Where each field of `struct nt_ct` is, from the start of the block. The
/// test `abi` of node-agent checks them against the compiled object's BTF.
pub mod offsets {
    use crate::event::At;

    /// `status`: the entry's `IPS_*` bits.
    pub const STATUS: At<u32> = At::new(0);
    /// `ctinfo`: `skb->_nfct & 7` (`enum nt_ct_info`).
    pub const CTINFO: At<u8> = At::new(4);
    /// `orig`: the tuple of the original direction.
    pub const ORIG: usize = 8;
    /// `reply`: the tuple of the reply direction.
    pub const REPLY: usize = 48;
    /// Size of a tuple (`struct nt_ct_tuple`).
    pub const TUPLE_SIZE: usize = 40;
    /// Tuple `saddr` (IPv4 in the first 4 bytes).
    pub const T_SADDR: At<[u8; 16]> = At::new(0);
    /// Tuple `daddr`.
    pub const T_DADDR: At<[u8; 16]> = At::new(16);
    /// Tuple `sport`: a port, or the ICMP echo id.
    pub const T_SPORT: At<u16> = At::new(32);
    /// Tuple `dport`: a port, or ICMP `type << 8 | code`.
    pub const T_DPORT: At<u16> = At::new(34);
    /// Tuple `l3num`: `AF_INET` or `AF_INET6`.
    pub const T_L3NUM: At<u16> = At::new(36);
    /// Tuple `protonum`: the IP protocol.
    pub const T_PROTONUM: At<u8> = At::new(38);
}

/// `AF_INET`, as `nf_conntrack_tuple.src.l3num` holds it.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// What conntrack says of this packet (`enum ip_conntrack_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// Part of a connection that saw packets both ways.
    Established,
    /// Related to another connection (an ICMP error, an FTP data channel).
    Related,
    /// The first packets of a connection.
    New,
    /// [`CtState::Established`], in the reply direction.
    EstablishedReply,
    /// [`CtState::Related`], in the reply direction.
    RelatedReply,
    /// Exempted from tracking (`-j NOTRACK`, `-j CT --notrack`).
    Untracked,
    /// Another value of the kernel's three bits.
    Other(u8),
}

impl CtState {
    /// The state of `ctinfo` (`skb->_nfct & 7`).
    pub fn from_code(code: u8) -> CtState {
        match code {
            0 => CtState::Established,
            1 => CtState::Related,
            2 => CtState::New,
            3 => CtState::EstablishedReply,
            4 => CtState::RelatedReply,
            7 => CtState::Untracked,
            n => CtState::Other(n),
        }
    }

    /// Its `ctinfo` value.
    pub fn code(self) -> u8 {
        match self {
            CtState::Established => 0,
            CtState::Related => 1,
            CtState::New => 2,
            CtState::EstablishedReply => 3,
            CtState::RelatedReply => 4,
            CtState::Untracked => 7,
            CtState::Other(n) => n,
        }
    }

    /// The name in JSON: `established`, `related`, `new`,
    /// `established_reply`, `related_reply`, `untracked`, `ctinfo_N`.
    pub fn json_name(self) -> String {
        match self {
            CtState::Established => "established".into(),
            CtState::Related => "related".into(),
            CtState::New => "new".into(),
            CtState::EstablishedReply => "established_reply".into(),
            CtState::RelatedReply => "related_reply".into(),
            CtState::Untracked => "untracked".into(),
            CtState::Other(n) => format!("ctinfo_{n}"),
        }
    }

    /// The state named `name` in JSON.
    pub fn from_json_name(name: &str) -> Option<CtState> {
        if let Some(n) = name.strip_prefix("ctinfo_") {
            return n.parse().ok().map(CtState::from_code);
        }
        [0, 1, 2, 3, 4, 7]
            .into_iter()
            .map(CtState::from_code)
            .find(|s| s.json_name() == name)
    }
}

/// Names of the kernel's `IPS_*` status bits (`enum ip_conntrack_status`,
/// a UAPI), by bit number, as JSON writes them.
const STATUS_NAMES: [&str; 16] = [
    "expected",
    "seen_reply",
    "assured",
    "confirmed",
    "snat",
    "dnat",
    "seq_adjust",
    "snat_done",
    "dnat_done",
    "dying",
    "fixed_timeout",
    "template",
    "untracked",
    "helper",
    "offload",
    "hw_offload",
];

/// The order status bits are listed in: the translations first, then how
/// far the connection got, then the others by number.
const STATUS_ORDER: [u32; 16] = [4, 5, 3, 1, 2, 0, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The status bit `IPS_DST_NAT`: the connection's destination is translated.
pub const IPS_DST_NAT: u32 = 1 << 5;
/// `IPS_SRC_NAT`: the connection's source is translated.
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// `IPS_CONFIRMED`: the entry is in the conntrack table.
pub const IPS_CONFIRMED: u32 = 1 << 3;
/// `IPS_SEEN_REPLY`: packets went both ways.
pub const IPS_SEEN_REPLY: u32 = 1 << 1;

/// The JSON names of the bits set in `status`, in display order (unknown
/// bits as `bitN`, last).
pub fn status_names(status: u32) -> impl Iterator<Item = std::borrow::Cow<'static, str>> {
    let known = STATUS_ORDER
        .into_iter()
        .filter(move |&b| status & (1 << b) != 0)
        .map(|b| std::borrow::Cow::Borrowed(STATUS_NAMES[b as usize]));
    let unknown = (16..32)
        .filter(move |&b| status & (1u32 << b) != 0)
        .map(|b| std::borrow::Cow::Owned(format!("bit{b}")));
    known.chain(unknown)
}

/// The status bit a JSON name stands for.
fn status_bit(name: &str) -> Option<u32> {
    if let Some(n) = name.strip_prefix("bit") {
        return n.parse::<u32>().ok().filter(|&b| b < 32).map(|b| 1 << b);
    }
    STATUS_NAMES.iter().position(|&s| s == name).map(|b| 1 << b)
}

/// One direction of a connection, as conntrack keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtTuple {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (protocols with ports, see [`has_ports`]) or ICMP echo
    /// id; 0 for other protocols.
    pub sport: u16,
    /// Destination port, or ICMP `type << 8 | code`; 0 for other protocols.
    pub dport: u16,
}

/// Whether conntrack keys protocol `proto` by ports (TCP, UDP, DCCP, SCTP,
/// UDP-Lite).
pub fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

fn is_icmp(proto: u8) -> bool {
    matches!(proto, 1 | 58)
}

/// The name of IP protocol `proto` in a tuple, when it has one.
fn proto_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

fn proto_by_name(name: &str) -> Option<u8> {
    (0..=u8::MAX).find(|&p| proto_name(p) == Some(name))
}

impl CtTuple {
    /// The source as text: `10.0.0.1:80`, `[fd00::1]:80`, or the address alone.
    fn src_endpoint(&self) -> Endpoint {
        Endpoint((self.src, has_ports(self.proto).then_some(self.sport)))
    }

    fn dst_endpoint(&self) -> Endpoint {
        Endpoint((self.dst, has_ports(self.proto).then_some(self.dport)))
    }

    /// `SRC -> DST`, with ` id N` for ICMP.
    fn write_flow(&self, out: &mut String) {
        let _ = write!(out, "{} -> {}", self.src_endpoint(), self.dst_endpoint());
        if is_icmp(self.proto) {
            let _ = write!(out, " id {}", self.sport);
        }
    }
}

/// The conntrack entry of an skb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "CtJson", try_from = "CtJson")]
pub struct Conntrack {
    /// What the entry says of this packet.
    pub state: CtState,
    /// The entry's `IPS_*` status bits (0 when untracked).
    pub status: u32,
    /// The original direction (`None` when untracked).
    pub orig: Option<CtTuple>,
    /// The reply direction, as NAT rewrote it.
    pub reply: Option<CtTuple>,
}

fn decode_tuple(b: &[u8]) -> Option<CtTuple> {
    use offsets::*;
    let (s, d) = (T_SADDR.get(b), T_DADDR.get(b));
    let (src, dst) = match T_L3NUM.get(b) {
        AF_INET => (
            IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])),
            IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
        ),
        AF_INET6 => (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d))),
        _ => return None,
    };
    let proto = T_PROTONUM.get(b);
    let keyed = has_ports(proto) || is_icmp(proto);
    Some(CtTuple {
        proto,
        src,
        dst,
        sport: if keyed { T_SPORT.get(b) } else { 0 },
        dport: if keyed { T_DPORT.get(b) } else { 0 },
    })
}

fn encode_tuple(b: &mut [u8], t: &CtTuple) {
    use offsets::*;
    let bytes = |a: &IpAddr| -> [u8; 16] {
        match a {
            IpAddr::V4(v4) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&v4.octets());
                o
            }
            IpAddr::V6(v6) => v6.octets(),
        }
    };
    T_SADDR.put(b, bytes(&t.src));
    T_DADDR.put(b, bytes(&t.dst));
    T_SPORT.put(b, t.sport);
    T_DPORT.put(b, t.dport);
    T_L3NUM.put(b, if t.src.is_ipv6() { AF_INET6 } else { AF_INET });
    T_PROTONUM.put(b, t.proto);
}

impl Conntrack {
    /// Decodes a `struct nt_ct` block; `None` when `b` is shorter than [`CT_SIZE`].
    pub fn decode(b: &[u8]) -> Option<Conntrack> {
        use offsets::*;
        let b = b.get(..CT_SIZE)?;
        let tuple = |base: usize| decode_tuple(&b[base..base + TUPLE_SIZE]);
        Some(Conntrack {
            state: CtState::from_code(CTINFO.get(b)),
            status: STATUS.get(b),
            orig: tuple(ORIG),
            reply: tuple(REPLY),
        })
    }

    /// The block the kernel writes for this entry (the inverse of [`Conntrack::decode`]).
    pub fn encode(&self) -> [u8; CT_SIZE] {
        use offsets::*;
        let mut b = [0u8; CT_SIZE];
        STATUS.put(&mut b, self.status);
        CTINFO.put(&mut b, self.state.code());
        for (base, t) in [(ORIG, &self.orig), (REPLY, &self.reply)] {
            if let Some(t) = t {
                encode_tuple(&mut b[base..base + TUPLE_SIZE], t);
            }
        }
        b
    }
}

/// Appends the text line of a conntrack entry (indented like the
/// `return value:` lines, newline included):
/// `ct: STATE[, STATUS BITS][, orig PROTO SRC -> DST, reply SRC -> DST]`,
/// where the status bits are the JSON names with `-` for `_`, space
/// separated, and an endpoint is `ADDR:PORT` for protocols with ports
/// (`[ADDR]:PORT` for IPv6), the address alone otherwise, followed by
/// ` id N` for ICMP.
pub fn write_ct_line(out: &mut String, ct: &Conntrack) {
    out.push_str("                ct: ");
    out.push_str(&ct.state.json_name().replace('_', "-"));
    let mut first = true;
    for name in status_names(ct.status) {
        out.push_str(if first { ", " } else { " " });
        first = false;
        out.push_str(&name.replace('_', "-"));
    }
    if let Some(o) = &ct.orig {
        out.push_str(", orig ");
        match proto_name(o.proto) {
            Some(n) => out.push_str(n),
            None => {
                let _ = write!(out, "proto {}", o.proto);
            }
        }
        out.push(' ');
        o.write_flow(out);
    }
    if let Some(r) = &ct.reply {
        out.push_str(", reply ");
        r.write_flow(out);
    }
    out.push('\n');
}

/// The JSON form of a [`Conntrack`] (what serde writes and reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CtJson {
    state: String,
    status: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    orig: Option<CtTupleJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply: Option<CtTupleJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum ProtoJson {
    Name(String),
    Number(u8),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CtTupleJson {
    proto: ProtoJson,
    src: String,
    dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
}

impl From<&CtTuple> for CtTupleJson {
    fn from(t: &CtTuple) -> CtTupleJson {
        let icmp = is_icmp(t.proto);
        CtTupleJson {
            proto: match proto_name(t.proto) {
                Some(n) => ProtoJson::Name(n.into()),
                None => ProtoJson::Number(t.proto),
            },
            src: t.src_endpoint().to_string(),
            dst: t.dst_endpoint().to_string(),
            icmp_id: icmp.then_some(t.sport),
            icmp_type: icmp.then_some((t.dport >> 8) as u8),
            icmp_code: icmp.then_some(t.dport as u8),
        }
    }
}

/// An endpoint of a tuple in JSON: `ADDR:PORT`, `[V6]:PORT` or `ADDR`.
fn parse_endpoint(s: &str) -> Result<(IpAddr, u16), String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), a.port()));
    }
    s.parse::<IpAddr>()
        .map(|a| (a, 0))
        .map_err(|_| format!("'{s}' is no conntrack endpoint"))
}

impl TryFrom<CtTupleJson> for CtTuple {
    type Error = String;

    fn try_from(j: CtTupleJson) -> Result<CtTuple, String> {
        let proto = match &j.proto {
            ProtoJson::Number(n) => *n,
            ProtoJson::Name(n) => {
                proto_by_name(n).ok_or_else(|| format!("unknown conntrack protocol '{n}'"))?
            }
        };
        let (src, sport) = parse_endpoint(&j.src)?;
        let (dst, dport) = parse_endpoint(&j.dst)?;
        let (sport, dport) = if is_icmp(proto) {
            (
                j.icmp_id.unwrap_or(0),
                u16::from(j.icmp_type.unwrap_or(0)) << 8 | u16::from(j.icmp_code.unwrap_or(0)),
            )
        } else {
            (sport, dport)
        };
        Ok(CtTuple {
            proto,
            src,
            dst,
            sport,
            dport,
        })
    }
}

impl From<Conntrack> for CtJson {
    fn from(ct: Conntrack) -> CtJson {
        CtJson {
            state: ct.state.json_name(),
            status: status_names(ct.status).map(|s| s.into_owned()).collect(),
            orig: ct.orig.as_ref().map(CtTupleJson::from),
            reply: ct.reply.as_ref().map(CtTupleJson::from),
        }
    }
}

impl TryFrom<CtJson> for Conntrack {
    type Error = String;

    fn try_from(j: CtJson) -> Result<Conntrack, String> {
        let state = CtState::from_json_name(&j.state)
            .ok_or_else(|| format!("unknown conntrack state '{}'", j.state))?;
        // Names a newer agent may add are left out rather than refused.
        let status = j
            .status
            .iter()
            .filter_map(|s| status_bit(s))
            .fold(0, |a, b| a | b);
        Ok(Conntrack {
            state,
            status,
            orig: j.orig.map(CtTuple::try_from).transpose()?,
            reply: j.reply.map(CtTuple::try_from).transpose()?,
        })
    }
}

/// Reads an event's optional `ct` member, leaving out (as `None`) one that
/// does not parse: the rest of the event is still good.
pub fn deserialize_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Conntrack>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

fn push_tuple_json(out: &mut String, t: &CtTuple) {
    out.push_str("{\"proto\":");
    match proto_name(t.proto) {
        Some(n) => {
            out.push('"');
            out.push_str(n);
            out.push('"');
        }
        None => {
            let _ = write!(out, "{}", t.proto);
        }
    }
    // addresses and numbers: nothing to escape
    let _ = write!(
        out,
        ",\"src\":\"{}\",\"dst\":\"{}\"",
        t.src_endpoint(),
        t.dst_endpoint()
    );
    if is_icmp(t.proto) {
        let _ = write!(
            out,
            ",\"icmp_id\":{},\"icmp_type\":{},\"icmp_code\":{}",
            t.sport,
            t.dport >> 8,
            t.dport & 0xff
        );
    }
    out.push('}');
}

/// Appends the JSON object of a conntrack entry, the same bytes as
/// serializing it with serde_json.
pub fn write_ct_json(out: &mut String, ct: &Conntrack) {
    out.push_str("{\"state\":\"");
    out.push_str(&ct.state.json_name());
    out.push_str("\",\"status\":[");
    for (i, name) in status_names(ct.status).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(&name);
        out.push('"');
    }
    out.push(']');
    if let Some(t) = &ct.orig {
        out.push_str(",\"orig\":");
        push_tuple_json(out, t);
    }
    if let Some(t) = &ct.reply {
        out.push_str(",\"reply\":");
        push_tuple_json(out, t);
    }
    out.push('}');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// The entry of a TCP connection to 10.250.58.100:80 DNATed to
    /// 10.250.57.2:8080, established, as the router sees the client's packets.
    pub(crate) fn dnat_sample() -> Conntrack {
        Conntrack {
            state: CtState::Established,
            status: IPS_DST_NAT | IPS_CONFIRMED | IPS_SEEN_REPLY,
            orig: Some(CtTuple {
                proto: 6,
                src: v4("10.250.56.2"),
                dst: v4("10.250.58.100"),
                sport: 40123,
                dport: 80,
            }),
            reply: Some(CtTuple {
                proto: 6,
                src: v4("10.250.57.2"),
                dst: v4("10.250.56.2"),
                sport: 8080,
                dport: 40123,
            }),
        }
    }

    fn icmp6_sample() -> Conntrack {
        Conntrack {
            state: CtState::New,
            status: 0,
            orig: Some(CtTuple {
                proto: 58,
                src: "fd00::1".parse().expect("addr"),
                dst: "fd00::2".parse().expect("addr"),
                sport: 77,
                dport: 128 << 8,
            }),
            reply: Some(CtTuple {
                proto: 58,
                src: "fd00::2".parse().expect("addr"),
                dst: "fd00::1".parse().expect("addr"),
                sport: 77,
                dport: 129 << 8,
            }),
        }
    }

    fn samples() -> Vec<Conntrack> {
        let untracked = Conntrack {
            state: CtState::Untracked,
            status: 0,
            orig: None,
            reply: None,
        };
        let gre = Conntrack {
            state: CtState::RelatedReply,
            status: (1 << 16) | (1 << 31) | 0xffff,
            orig: Some(CtTuple {
                proto: 47,
                src: v4("1.2.3.4"),
                dst: v4("5.6.7.8"),
                sport: 0,
                dport: 0,
            }),
            reply: Some(CtTuple {
                proto: 99,
                src: v4("5.6.7.8"),
                dst: v4("1.2.3.4"),
                sport: 0,
                dport: 0,
            }),
        };
        let mut odd = dnat_sample();
        odd.state = CtState::Other(5);
        vec![dnat_sample(), icmp6_sample(), untracked, gre, odd]
    }

    #[test]
    fn states_round_trip_by_code_and_name() {
        for code in 0..8 {
            let s = CtState::from_code(code);
            assert_eq!(s.code(), code);
            assert_eq!(CtState::from_json_name(&s.json_name()), Some(s));
        }
        assert_eq!(CtState::from_code(2), CtState::New);
        assert_eq!(CtState::from_code(7), CtState::Untracked);
        assert_eq!(CtState::from_json_name("bogus"), None);
    }

    #[test]
    fn status_bits_in_display_order() {
        let names: Vec<_> = status_names(dnat_sample().status).collect();
        assert_eq!(names, ["dnat", "confirmed", "seen_reply"]);
        let all: Vec<_> = status_names(u32::MAX).collect();
        assert_eq!(all.len(), 32);
        assert_eq!(all[..3], ["snat", "dnat", "confirmed"]);
        assert_eq!(all[31], "bit31");
        for (i, n) in all.iter().enumerate() {
            let bit = status_bit(n).unwrap_or_else(|| panic!("{n}"));
            assert_eq!(status_names(bit).next().as_deref(), Some(&**n), "{i}");
        }
        assert_eq!(status_bit("bit32"), None);
    }

    #[test]
    fn blocks_round_trip() {
        for ct in samples() {
            let b = ct.encode();
            assert_eq!(Conntrack::decode(&b), Some(ct));
        }
        assert_eq!(Conntrack::decode(&[0u8; CT_SIZE - 1]), None);
    }

    #[test]
    fn decodes_fields_at_their_offsets() {
        let mut b = [0u8; CT_SIZE];
        b[0..4].copy_from_slice(&(IPS_SRC_NAT | IPS_CONFIRMED).to_le_bytes());
        b[4] = 3;
        // orig: UDP 10.0.0.1:5353 -> 10.0.0.2:53
        b[8..12].copy_from_slice(&[10, 0, 0, 1]);
        b[24..28].copy_from_slice(&[10, 0, 0, 2]);
        b[40..42].copy_from_slice(&5353u16.to_le_bytes());
        b[42..44].copy_from_slice(&53u16.to_le_bytes());
        b[44..46].copy_from_slice(&AF_INET.to_le_bytes());
        b[46] = 17;
        // reply: no address family, no tuple
        b[48 + 38] = 17;
        let ct = Conntrack::decode(&b).expect("decodes");
        assert_eq!(ct.state, CtState::EstablishedReply);
        assert_eq!(ct.status, IPS_SRC_NAT | IPS_CONFIRMED);
        assert_eq!(
            ct.orig,
            Some(CtTuple {
                proto: 17,
                src: v4("10.0.0.1"),
                dst: v4("10.0.0.2"),
                sport: 5353,
                dport: 53,
            })
        );
        assert_eq!(ct.reply, None);
        // a protocol without ports keeps none
        b[46] = 47;
        let ct = Conntrack::decode(&b).expect("decodes");
        assert_eq!(ct.orig.map(|t| (t.sport, t.dport)), Some((0, 0)));
    }

    #[test]
    fn text_lines() {
        let line = |ct: &Conntrack| {
            let mut s = String::new();
            write_ct_line(&mut s, ct);
            s
        };
        assert_eq!(
            line(&dnat_sample()),
            "                ct: established, dnat confirmed seen-reply, orig tcp 10.250.56.2:40123 -> 10.250.58.100:80, reply 10.250.57.2:8080 -> 10.250.56.2:40123\n"
        );
        assert_eq!(
            line(&icmp6_sample()),
            "                ct: new, orig icmpv6 fd00::1 -> fd00::2 id 77, reply fd00::2 -> fd00::1 id 77\n"
        );
        let s = samples();
        assert_eq!(line(&s[2]), "                ct: untracked\n");
        assert!(
            line(&s[3]).starts_with("                ct: related-reply, snat dnat confirmed seen-reply assured expected seq-adjust snat-done dnat-done dying fixed-timeout template untracked helper offload hw-offload bit16 bit31, orig gre 1.2.3.4 -> 5.6.7.8, reply 5.6.7.8 -> 1.2.3.4"),
            "{}",
            line(&s[3])
        );
        assert!(line(&s[4]).starts_with("                ct: ctinfo-5, "));
        let mut v6 = dnat_sample();
        if let Some(t) = v6.orig.as_mut() {
            t.src = "fd00::1".parse().expect("addr");
            t.proto = 132;
        }
        assert!(line(&v6).contains("orig sctp [fd00::1]:40123 -> 10.250.58.100:80,"));
    }

    #[test]
    fn json_object_and_its_serde_form_agree_and_read_back() {
        let mut s = String::new();
        write_ct_json(&mut s, &dnat_sample());
        assert_eq!(
            s,
            r#"{"state":"established","status":["dnat","confirmed","seen_reply"],"orig":{"proto":"tcp","src":"10.250.56.2:40123","dst":"10.250.58.100:80"},"reply":{"proto":"tcp","src":"10.250.57.2:8080","dst":"10.250.56.2:40123"}}"#
        );
        for ct in samples() {
            let mut direct = String::new();
            write_ct_json(&mut direct, &ct);
            let serde = serde_json::to_string(&ct).expect("serializes");
            assert_eq!(direct, serde);
            let back: Conntrack = serde_json::from_str(&direct).expect("reads back");
            assert_eq!(back, ct, "{direct}");
        }
    }

    #[test]
    fn bad_json_is_refused_or_left_out() {
        for bad in [
            r#"{"state":"bogus","status":[]}"#,
            r#"{"state":"new","status":[],"orig":{"proto":"xyz","src":"1.2.3.4","dst":"1.2.3.4"}}"#,
            r#"{"state":"new","status":[],"orig":{"proto":6,"src":"nope","dst":"1.2.3.4"}}"#,
        ] {
            assert!(serde_json::from_str::<Conntrack>(bad).is_err(), "{bad}");
        }
        let ct: Conntrack = serde_json::from_str(r#"{"state":"new","status":["new_bit","dnat"]}"#)
            .expect("unknown status names are left out");
        assert_eq!(ct.status, IPS_DST_NAT);
        #[derive(Deserialize)]
        struct Ev {
            #[serde(default, deserialize_with = "deserialize_lenient")]
            ct: Option<Conntrack>,
        }
        let ev: Ev = serde_json::from_str(r#"{"ct":{"state":"bogus"}}"#).expect("event parses");
        assert_eq!(ev.ct, None);
        let ev: Ev = serde_json::from_str(r#"{}"#).expect("event parses");
        assert_eq!(ev.ct, None);
    }
}
