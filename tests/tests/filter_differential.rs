//! Issue 9: a differential test of the kernel packet filter. For a generated set of raw
//! Ethernet frames (IPv4 and IPv6; TCP, UDP, ICMP, ICMPv6, other protocol numbers; IPv4
//! options and fragments; an IPv6 fragment header; ARP requests and replies; another
//! ethertype) the kernel's verdict under each of a list of filters must equal the userspace
//! verdict, `Filter::matches`.
//!
//! How:
//! - a namespace with a veth pair `v0`–`v1`; the frames are written on `v0` with an
//!   `AF_PACKET` socket ([`nettrace_tests::inject`]) and each arrives once on `v1`, where
//!   `nettrace -t netif_receive_skb` sees it (the tracepoint fires before any IP processing,
//!   so odd packets and frames for another MAC are seen too);
//! - every frame has its own length (frame `i` is [`FIRST_FRAME_LEN`]` + i` bytes), so the
//!   `len` of an event (`skb->len`, the frame without its 14-byte Ethernet header) names the
//!   frame;
//! - in each batch, one unfiltered run (`--netns` of the test namespace only) and one run per
//!   filter watch the same injection. The unfiltered run gives, per frame, what the kernel
//!   parsed; its JSON events are read back into `Event`s and `Filter::matches` (the filter
//!   built from the same option strings) gives the expected set. The kernel's set is the
//!   lengths the filtered run printed. They must be equal, for every filter;
//! - the unfiltered run must also have parsed every frame as built (addresses, protocol,
//!   ports, fragments), so that the reference itself is right;
//! - all of it three times: tracepoints attached the default way (BTF-typed `tp_btf`), with
//!   `--raw-tp`, and with `--raw-tp --probe-read`: the kernel side's code paths (where the
//!   kernel has `bpf_rdonly_cast`, the first two read headers through it, the third copies
//!   everything with `bpf_probe_read_kernel`; elsewhere all three copy).
//!
//! The model is the real `nettrace_common::Filter::matches`, on the `Event`s the unfiltered
//! run printed.
//!
//! Every disagreement is collected and reported at the end, with the frames involved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use nettrace_tests::inject::{
    arp, echo_rest, ethernet, icmp, ipv4, ipv6, ipv6_fragment, tcp, udp, Ipv4Header, PacketSocket,
    BROADCAST, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IP_DF, IP_MF, TCP_ACK, TCP_FIN, TCP_PSH,
    TCP_RST, TCP_SYN,
};
use nettrace_tests::runner::{READY_MARKER, READY_TIMEOUT, STOP_TIMEOUT};
use nettrace_tests::*;

use nettrace_common::event::{Event, Packet, F_FROM_SK, F_L4_BAD, F_SKB_MODE, L4};
use nettrace_common::filter::{parse_addr, parse_port, parse_proto, Filter};

/// Seed of the frame generator: the same frames on every run.
const SEED: u64 = 0x6e65_7474_7261_6365;
/// How many frames.
const FRAMES: usize = 200;
/// Length on the wire of frame 0; frame `i` is `FIRST_FRAME_LEN + i` bytes.
const FIRST_FRAME_LEN: usize = 200;
/// How many filtered runs watch one injection (plus the unfiltered one).
const BATCH: usize = 10;
/// How the tracepoint is attached and read: the default (BTF-typed `tp_btf` where the kernel
/// loads it, headers through `bpf_rdonly_cast` where it has it), `--raw-tp` (an untyped skb,
/// cast where the kernel can) and `--raw-tp --probe-read` (every field copied with
/// `bpf_probe_read_kernel`); the kernel side's code paths, each checked on every filter.
const ATTACH: &[(&str, &[&str])] = &[
    ("default", &[]),
    ("--raw-tp", &["--raw-tp"]),
    ("--raw-tp --probe-read", &["--raw-tp", "--probe-read"]),
];
/// How long the events of one injection may take to show up in the reference run.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the filtered runs may then take to print what Filter::matches expects of them
/// (past it they are stopped anyway: a run that disagrees waits this long).
const STRAGGLERS: Duration = Duration::from_secs(2);
/// At most this many frames are listed per disagreeing filter and direction.
const MAX_LISTED: usize = 10;

/// MAC addresses of `v0` (the sender), `v1` (the receiver), and of nobody.
const MAC_V0: [u8; 6] = [0x02, 0x4e, 0x54, 0x96, 0x00, 0x01];
const MAC_V1: [u8; 6] = [0x02, 0x4e, 0x54, 0x96, 0x00, 0x02];
const MAC_FOREIGN: [u8; 6] = [0x02, 0x4e, 0x54, 0x96, 0x00, 0x99];

/// Addresses the frames use (10.250.150.0/24 and 10.250.151.0/24 are used by no other test;
/// nothing is configured with them: the frames only need to carry them).
const V4_POOL: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 250, 150, 1),
    Ipv4Addr::new(10, 250, 150, 2),
    Ipv4Addr::new(10, 250, 150, 3),
    Ipv4Addr::new(10, 250, 151, 7),
];
const V6_POOL: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0xfd00, 0x250, 0x150, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0x250, 0x150, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0xfd00, 0x250, 0x150, 0, 0, 0, 0, 3),
    Ipv6Addr::new(0xfd00, 0x250, 0x151, 0, 0, 0, 0, 7),
];
/// An address and port talking to another.
type Flow<A> = ((A, u16), (A, u16));
/// Half of the IP frames belong to one of these (either direction), so that the filters
/// combining addresses and ports find frames.
const V4_FLOWS: [Flow<Ipv4Addr>; 3] = [
    ((V4_POOL[0], 40000), (V4_POOL[1], 80)),
    ((V4_POOL[1], 40001), (V4_POOL[2], 53)),
    ((V4_POOL[3], 443), (V4_POOL[0], 80)),
];
const V6_FLOWS: [Flow<Ipv6Addr>; 2] = [
    ((V6_POOL[0], 40000), (V6_POOL[1], 443)),
    ((V6_POOL[2], 40001), (V6_POOL[0], 53)),
];
/// Ports the frames use (and now and then a random one).
const PORTS: [u16; 6] = [53, 80, 443, 8080, 40000, 40001];

/// The filters, as on nettrace's command line (`--netns` of the test namespace is added to
/// each, and to the unfiltered reference run).
#[rustfmt::skip]
const FILTERS: &[&[&str]] = &[
    &["-p", "tcp"],
    &["-p", "udp"],
    &["-p", "icmp"],
    &["-p", "icmp6"],
    &["-p", "icmpv6"],
    &["-p", "arp"],
    &["-p", "ip"],
    &["-p", "ip6"],
    &["-p", "sctp"],
    &["-s", "10.250.150.1"],
    &["-d", "10.250.150.2"],
    &["--addr", "10.250.150.3"],
    &["--sport", "80"],
    &["--dport", "53"],
    &["--port", "443"],
    &["-p", "tcp", "--port", "80", "--addr", "10.250.150.1"],
    &["-p", "udp", "--dport", "53", "-s", "10.250.150.2"],
    &["-p", "icmp", "-s", "10.250.150.1", "-d", "10.250.150.2"],
    &["-p", "arp", "--addr", "10.250.150.2"],
    &["-s", "10.250.150.3", "--port", "8080"],
    &["-p", "ip", "--port", "80"],
    &["--addr", "fd00:250:150::1"],
    &["-p", "ip6", "-d", "fd00:250:150::2", "--sport", "40000"],
    &["-p", "icmp6", "--addr", "fd00:250:150::3"],
    &["-p", "tcp", "-s", "fd00:250:150::1", "--dport", "443"],
    &["-p", "udp", "--sport", "53", "--dport", "40001"],
    &["-p", "tcp", "-s", "10.250.151.7", "-d", "10.250.150.1", "--sport", "443", "--dport", "80"],
    MATCHES_NOTHING,
];

/// The filter of [`FILTERS`] that no frame may match: no frame carries this address.
const MATCHES_NOTHING: &[&str] = &["--addr", "10.250.159.9"];

// ---------------------------------------------------------------------------------------
// Frames

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// True with probability `n / d`.
    fn chance(&mut self, n: usize, d: usize) -> bool {
        self.below(d) < n
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    fn port(&mut self) -> u16 {
        if self.chance(1, 5) {
            1024 + self.below(65535 - 1024) as u16
        } else {
            self.pick(&PORTS)
        }
    }

    fn tcp_flags(&mut self) -> u8 {
        self.pick(&[
            TCP_SYN,
            TCP_SYN | TCP_ACK,
            TCP_ACK,
            TCP_PSH | TCP_ACK,
            TCP_FIN | TCP_ACK,
            TCP_RST,
            TCP_RST | TCP_ACK,
            0,
        ])
    }
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    V4Tcp,
    V4Udp,
    V4Icmp,
    /// IPv4 with GRE, SCTP, OSPF, or ICMPv6's number.
    V4Other,
    /// IPv4 with 4 or 8 bytes of options (IHL 6 or 7) carrying TCP or UDP.
    V4Options,
    /// First fragment: MF set, offset 0, the L4 header is there.
    V4FragFirst,
    /// Later fragment: offset > 0, no L4 header.
    V4FragLater,
    V6Tcp,
    V6Udp,
    V6Icmp,
    /// IPv6 with GRE, SCTP, ICMP's number, or "no next header".
    V6Other,
    /// IPv6 with a fragment extension header.
    V6Frag,
    ArpRequest,
    ArpReply,
    /// An ethertype nettrace does not parse.
    OtherEthertype,
}

/// The kinds with their weights: frames 0 to 29 go through the kinds in turn (each kind at
/// least twice), the others are drawn by weight.
const KINDS: [(Kind, usize); 15] = [
    (Kind::V4Tcp, 12),
    (Kind::V4Udp, 10),
    (Kind::V4Icmp, 6),
    (Kind::V4Other, 4),
    (Kind::V4Options, 3),
    (Kind::V4FragFirst, 3),
    (Kind::V4FragLater, 4),
    (Kind::V6Tcp, 10),
    (Kind::V6Udp, 8),
    (Kind::V6Icmp, 6),
    (Kind::V6Other, 3),
    (Kind::V6Frag, 2),
    (Kind::ArpRequest, 4),
    (Kind::ArpReply, 3),
    (Kind::OtherEthertype, 2),
];

/// One generated frame.
#[derive(Debug, Clone)]
struct Frame {
    index: usize,
    bytes: Vec<u8>,
    /// What the kernel should parse, as its JSON shows it.
    expect: Packet,
    /// Another acceptable parse (IPv6 extension headers walked, or not).
    also: Option<Packet>,
    /// What is special about the frame, for messages.
    note: String,
}

impl Frame {
    /// `skb->len` at netif_receive_skb: the frame without its Ethernet header.
    fn skb_len(&self) -> u32 {
        (self.bytes.len() - ETH_HLEN) as u32
    }

    fn describe(&self) -> String {
        format!(
            "frame #{} ({} bytes, len {}{}): {}",
            self.index,
            self.bytes.len(),
            self.skb_len(),
            self.note,
            describe_packet(&self.expect)
        )
    }
}

/// `n` bytes of filler that differ from frame to frame.
fn filler(index: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| (index * 7 + i) as u8).collect()
}

/// `n` bytes that start like a TCP or UDP header with these ports, for the payloads that
/// are not one (later fragments, other protocols): reading ports there would match.
fn port_bait(index: usize, (sport, dport): (u16, u16), n: usize) -> Vec<u8> {
    let mut b = filler(index, n);
    b[..2].copy_from_slice(&sport.to_be_bytes());
    b[2..4].copy_from_slice(&dport.to_be_bytes());
    b
}

/// Source and destination of an IP frame, with ports: half of the time those of one of
/// `flows` (in either direction), else addresses from `pool` and random ports.
fn endpoints<A: Copy>(rng: &mut Rng, pool: &[A], flows: &[Flow<A>]) -> (A, A, (u16, u16)) {
    if rng.chance(1, 2) {
        let (a, b) = rng.pick(flows);
        let (a, b) = if rng.chance(1, 2) { (a, b) } else { (b, a) };
        (a.0, b.0, (a.1, b.1))
    } else {
        (rng.pick(pool), rng.pick(pool), (rng.port(), rng.port()))
    }
}

/// The IPv4 or IPv6 L4 part: its bytes (`room` long, header included) and its parse.
fn l4_part(
    rng: &mut Rng,
    index: usize,
    proto: u8,
    v6: bool,
    (sport, dport): (u16, u16),
    room: usize,
) -> (Vec<u8>, L4) {
    match (proto, v6) {
        (6, _) => {
            let (seq, ack, flags) = (rng.u32(), rng.u32(), rng.tcp_flags());
            let seg = tcp(sport, dport, seq, ack, flags, &filler(index, room - 20));
            let l4 = L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            };
            (seg, l4)
        }
        (17, _) => {
            let dgram = udp(sport, dport, &filler(index, room - 8));
            (dgram, L4::Udp { sport, dport })
        }
        (1, false) | (58, true) => {
            let echo: &[u8] = if v6 { &[128, 129] } else { &[8, 0] };
            let other: &[u8] = if v6 { &[1, 3, 135, 136] } else { &[3, 11] };
            let ty = if rng.chance(2, 3) {
                rng.pick(echo)
            } else {
                rng.pick(other)
            };
            let code = if ty == 1 || ty == 3 {
                rng.below(4) as u8
            } else {
                0
            };
            let (id, seq) = (rng.u16(), rng.u16());
            let msg = icmp(ty, code, echo_rest(id, seq), &filler(index, room - 8));
            // id and seq are only reported (and parsed back) for echo requests and replies
            let (id, seq) = if echo.contains(&ty) {
                (id, seq)
            } else {
                (0, 0)
            };
            (msg, L4::Icmp { ty, code, id, seq })
        }
        (p, _) => (port_bait(index, (sport, dport), room), L4::Other(p)),
    }
}

fn generate(seed: u64, count: usize) -> Vec<Frame> {
    let mut rng = Rng(seed);
    let weights: usize = KINDS.iter().map(|(_, w)| w).sum();
    (0..count)
        .map(|index| {
            // every kind at least twice, then by weight
            let kind = if index < 2 * KINDS.len() {
                KINDS[index % KINDS.len()].0
            } else {
                let mut n = rng.below(weights);
                KINDS
                    .iter()
                    .find(|(_, w)| {
                        let hit = n < *w;
                        n = n.saturating_sub(*w);
                        hit
                    })
                    .expect("weights add up")
                    .0
            };
            build_frame(&mut rng, index, kind, FIRST_FRAME_LEN + index)
        })
        .collect()
}

/// A frame of `kind` exactly `len` bytes long.
fn build_frame(rng: &mut Rng, index: usize, kind: Kind, len: usize) -> Frame {
    let mut note = String::new();
    let mut dst_mac = if rng.chance(1, 8) {
        note.push_str(", to a foreign MAC");
        MAC_FOREIGN
    } else {
        MAC_V1
    };
    let l3_room = len - ETH_HLEN;
    let mut also = None;
    let (ethertype, l3, expect) = match kind {
        Kind::V4Tcp
        | Kind::V4Udp
        | Kind::V4Icmp
        | Kind::V4Other
        | Kind::V4Options
        | Kind::V4FragFirst
        | Kind::V4FragLater => {
            let (src, dst, ports) = endpoints(rng, &V4_POOL, &V4_FLOWS);
            let proto = match kind {
                Kind::V4Tcp => 6,
                Kind::V4Udp => 17,
                Kind::V4Icmp => 1,
                Kind::V4Other => rng.pick(&[47, 132, 89, 58]),
                Kind::V4FragLater => rng.pick(&[6, 17, 1]),
                _ => rng.pick(&[6, 17]),
            };
            let mut h = Ipv4Header::new(src, dst, proto);
            h.id = rng.u16();
            if rng.chance(1, 2) {
                h.frag = IP_DF;
            }
            match kind {
                Kind::V4Options => {
                    h.options = vec![1; 4 * (1 + rng.below(2))]; // NOPs
                    write!(note, ", IHL {}", h.len() / 4).unwrap();
                }
                Kind::V4FragFirst => {
                    h.frag = IP_MF;
                    note.push_str(", first fragment (MF, offset 0)");
                }
                Kind::V4FragLater => {
                    let offset = 1 + rng.below(0x1ffe) as u16;
                    let mf = rng.chance(1, 2);
                    h.frag = offset | if mf { IP_MF } else { 0 };
                    write!(
                        note,
                        ", fragment at offset {}{}",
                        offset as usize * 8,
                        if mf { " (MF)" } else { "" }
                    )
                    .unwrap();
                }
                _ => {}
            }
            let room = l3_room - h.len();
            let (payload, l4) = if kind == Kind::V4FragLater {
                (port_bait(index, ports, room), L4::Unreadable(proto))
            } else {
                l4_part(rng, index, proto, false, ports, room)
            };
            let expect = Packet::Ipv4 { src, dst, l4 };
            (ETH_P_IP, ipv4(&h, &payload), expect)
        }
        Kind::V6Tcp | Kind::V6Udp | Kind::V6Icmp | Kind::V6Other => {
            let (src, dst, ports) = endpoints(rng, &V6_POOL, &V6_FLOWS);
            let proto = match kind {
                Kind::V6Tcp => 6,
                Kind::V6Udp => 17,
                Kind::V6Icmp => 58,
                _ => rng.pick(&[47, 132, 1, 59]),
            };
            let (payload, l4) = l4_part(rng, index, proto, true, ports, l3_room - 40);
            let expect = Packet::Ipv6 { src, dst, l4 };
            (ETH_P_IPV6, ipv6(src, dst, proto, &payload), expect)
        }
        Kind::V6Frag => {
            let (src, dst, ports) = endpoints(rng, &V6_POOL, &V6_FLOWS);
            let proto = rng.pick(&[6, 17]);
            let id = rng.u32();
            let room = l3_room - 40 - 8;
            let (frag, inner) = if rng.chance(1, 2) {
                note.push_str(", IPv6 fragment header, first fragment");
                let (payload, l4) = l4_part(rng, index, proto, true, ports, room);
                (ipv6_fragment(proto, 0, true, id, &payload), l4)
            } else {
                let offset = 1 + rng.below(0x1ffe) as u16;
                write!(
                    note,
                    ", IPv6 fragment header, offset {}",
                    offset as usize * 8
                )
                .unwrap();
                let payload = port_bait(index, ports, room);
                (
                    ipv6_fragment(proto, offset, false, id, &payload),
                    L4::Unreadable(proto),
                )
            };
            // Whether the kernel walks extension headers is not specified: the fragment
            // header's number (44) or the inner protocol are both right.
            also = Some(Packet::Ipv6 {
                src,
                dst,
                l4: inner,
            });
            let expect = Packet::Ipv6 {
                src,
                dst,
                l4: L4::Other(44),
            };
            (ETH_P_IPV6, ipv6(src, dst, 44, &frag), expect)
        }
        Kind::ArpRequest | Kind::ArpReply => {
            let (sender, target) = (rng.pick(&V4_POOL), rng.pick(&V4_POOL));
            let op = if kind == Kind::ArpRequest { 1 } else { 2 };
            let tha = if op == 1 {
                dst_mac = BROADCAST;
                note = ", broadcast".into();
                [0; 6]
            } else {
                dst_mac
            };
            let mut body = arp(op, MAC_V0, sender, tha, target);
            body.extend(filler(index, l3_room - body.len())); // Ethernet padding
            let expect = Packet::Arp { op, sender, target };
            (ETH_P_ARP, body, expect)
        }
        Kind::OtherEthertype => {
            let ethertype = 0x88b5; // IEEE 802 local experimental
            let expect = Packet::Other { ethertype };
            (ethertype, filler(index, l3_room), expect)
        }
    };
    let bytes = ethernet(dst_mac, MAC_V0, ethertype, &l3);
    assert_eq!(
        bytes.len(),
        len,
        "frame #{index} ({kind:?}) has the wrong length"
    );
    Frame {
        index,
        bytes,
        expect,
        also,
        note,
    }
}

fn describe_l4(l4: &L4) -> String {
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
        } => format!("TCP {sport} -> {dport} seq {seq} ack {ack} flags {flags:#04x}"),
        L4::Udp { sport, dport } => format!("UDP {sport} -> {dport}"),
        L4::Icmp { ty, code, id, seq } => format!("ICMP type {ty} code {code} id {id} seq {seq}"),
        L4::Other(p) => format!("protocol {p}"),
        L4::Unreadable(p) => format!("protocol {p}, L4 header unreadable"),
    }
}

fn describe_packet(p: &Packet) -> String {
    match p {
        Packet::Ipv4 { src, dst, l4 } => format!("IPv4 {src} -> {dst} {}", describe_l4(l4)),
        Packet::Ipv6 { src, dst, l4 } => format!("IPv6 {src} -> {dst} {}", describe_l4(l4)),
        Packet::Arp { op, sender, target } => format!("ARP op {op} {sender} -> {target}"),
        Packet::Other { ethertype } => format!("ethertype {ethertype:#06x}"),
        Packet::Unknown => "headers not parsed".into(),
    }
}

// ---------------------------------------------------------------------------------------
// nettrace's JSON, read back

fn json_ip(pkt: &Value, key: &str) -> Result<IpAddr, String> {
    pkt.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {key:?}"))?
        .parse()
        .map_err(|e| format!("{key:?}: {e}"))
}

fn json_u64(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("no integer {key:?}"))
}

fn json_num<T: TryFrom<u64>>(v: &Value, key: &str) -> Result<T, String> {
    T::try_from(json_u64(v, key)?).map_err(|_| format!("{key:?} out of range"))
}

/// `"SA"` (letters in the order S F R P A U E C, `-` for none) to TCP flag bits.
fn tcp_flags_from_letters(s: &str) -> Result<u8, String> {
    if s == "-" {
        return Ok(0);
    }
    s.chars().try_fold(0u8, |acc, c| {
        let bit = match c {
            'S' => 0x02,
            'F' => 0x01,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            _ => return Err(format!("unknown TCP flag letter {c:?}")),
        };
        Ok(acc | bit)
    })
}

/// The `pkt` object of an event back into a `Packet` (the inverse of common's `pkt_json`).
fn packet_from_json(pkt: &Value) -> Result<Packet, String> {
    let l3 = pkt.get("l3").and_then(Value::as_str).ok_or("no \"l3\"")?;
    let v4 = |key| match json_ip(pkt, key)? {
        IpAddr::V4(a) => Ok(a),
        a => Err(format!("{key:?} is not IPv4: {a}")),
    };
    let v6 = |key| match json_ip(pkt, key)? {
        IpAddr::V6(a) => Ok(a),
        a => Err(format!("{key:?} is not IPv6: {a}")),
    };
    let l4 = |is_v6: bool| -> Result<L4, String> {
        let proto = match pkt.get("proto") {
            Some(Value::String(s)) => match s.as_str() {
                "tcp" => 6,
                "udp" => 17,
                "icmp" => 1,
                "icmpv6" => 58,
                other => return Err(format!("unknown proto name {other:?}")),
            },
            Some(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("bad proto {n}"))?,
            None => return Err("no \"proto\"".into()),
        };
        if pkt.get("l4_unreadable").and_then(Value::as_bool) == Some(true) {
            return Ok(L4::Unreadable(proto));
        }
        Ok(match proto {
            6 => L4::Tcp {
                sport: json_num(pkt, "sport")?,
                dport: json_num(pkt, "dport")?,
                seq: json_num(pkt, "seq")?,
                ack: json_num(pkt, "ack")?,
                flags: tcp_flags_from_letters(
                    pkt.get("flags")
                        .and_then(Value::as_str)
                        .ok_or("no \"flags\"")?,
                )?,
            },
            17 => L4::Udp {
                sport: json_num(pkt, "sport")?,
                dport: json_num(pkt, "dport")?,
            },
            1 if !is_v6 => icmp_from_json(pkt)?,
            58 if is_v6 => icmp_from_json(pkt)?,
            p => L4::Other(p),
        })
    };
    Ok(match l3 {
        "ipv4" => Packet::Ipv4 {
            src: v4("saddr")?,
            dst: v4("daddr")?,
            l4: l4(false)?,
        },
        "ipv6" => Packet::Ipv6 {
            src: v6("saddr")?,
            dst: v6("daddr")?,
            l4: l4(true)?,
        },
        "arp" => Packet::Arp {
            op: json_num(pkt, "arp_op")?,
            sender: v4("saddr")?,
            target: v4("daddr")?,
        },
        "other" => Packet::Other {
            ethertype: json_num(pkt, "ethertype")?,
        },
        "unknown" => Packet::Unknown,
        other => return Err(format!("unknown l3 {other:?}")),
    })
}

fn icmp_from_json(pkt: &Value) -> Result<L4, String> {
    Ok(L4::Icmp {
        ty: json_num(pkt, "icmp_type")?,
        code: json_num(pkt, "icmp_code")?,
        // present for echo requests and replies only
        id: json_num(pkt, "icmp_id").unwrap_or(0),
        seq: json_num(pkt, "icmp_seq").unwrap_or(0),
    })
}

/// An event object of `nettrace -o json` as the `Event` it was printed from (the fields the
/// JSON carries; the others at their neutral values).
fn event_from_json(v: &Value) -> Result<Event, String> {
    let flag = |key| v.get(key).and_then(Value::as_bool) == Some(true);
    let packet = packet_from_json(v.get("pkt").ok_or("no \"pkt\"")?)?;
    let skb = v.get("skb").and_then(Value::as_str).ok_or("no \"skb\"")?;
    let mut flags = 0;
    if flag("from_sk") {
        flags |= F_FROM_SK;
    }
    if flag("skb_mode") {
        flags |= F_SKB_MODE;
    }
    if matches!(
        packet,
        Packet::Ipv4 {
            l4: L4::Unreadable(_),
            ..
        } | Packet::Ipv6 {
            l4: L4::Unreadable(_),
            ..
        }
    ) {
        flags |= F_L4_BAD;
    }
    Ok(Event {
        ts_ns: json_u64(v, "ts_ns")?,
        skb: u64::from_str_radix(skb, 16).map_err(|e| format!("skb {skb:?}: {e}"))?,
        location: 0,
        retval: None,
        tracer_id: 0,
        netns: json_num(v, "netns")?,
        ifindex: json_num(v, "ifindex")?,
        pid: json_num(v, "pid")?,
        stack_id: None,
        drop_reason: 0,
        flags,
        pkt_len: json_num(v, "len")?,
        ifname: v
            .get("ifname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        comm: v
            .get("comm")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        from_sk: flag("from_sk"),
        skb_mode: flag("skb_mode"),
        ip_id: v
            .get("pkt")
            .and_then(|p| p.get("ip_id"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        packet,
        tunnel: None,
        ct: None,
        bytes: None,
    })
}

/// The event objects of a run's stdout (its `lost` records are failures).
fn events_of(run: &Finished) -> Result<Vec<(Event, Value)>, String> {
    let mut events = Vec::new();
    for v in parse_json_lines(&run.stdout_lines) {
        match v.get("type").and_then(Value::as_str) {
            Some("event") => {
                let ev = event_from_json(&v).map_err(|e| format!("{e} in event {v}"))?;
                events.push((ev, v));
            }
            Some("lost") => return Err(format!("events were lost: {v}")),
            _ => return Err(format!("unexpected output object {v}")),
        }
    }
    Ok(events)
}

/// Counts the event lines printed so far (cheap, for waiting).
fn count_events(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("\"type\":\"event\""))
        .count()
}

// ---------------------------------------------------------------------------------------
// Runs

/// `parse(value)`, which must succeed.
fn valid<T, E: std::fmt::Debug>(opt: &str, value: &str, parse: fn(&str) -> Result<T, E>) -> T {
    parse(value).unwrap_or_else(|e| panic!("{opt} {value}: {e:?}"))
}

/// One filter: its options and the userspace `Filter` built from the same strings.
struct Case {
    args: Vec<String>,
    filter: Filter,
}

impl Case {
    /// `opts` (the filter) for the namespace `netns`, tracepoints attached as `attach` says.
    fn new(opts: &[&str], netns: u32, attach: &[&str]) -> Case {
        let mut filter = Filter {
            netns: Some(netns),
            ..Filter::default()
        };
        let mut it = opts.iter();
        while let Some(&opt) = it.next() {
            let value = *it.next().unwrap_or_else(|| panic!("{opt} without a value"));
            match opt {
                "-p" | "--proto" => filter.proto = Some(valid(opt, value, parse_proto)),
                "-s" | "--saddr" => filter.saddr = Some(valid(opt, value, parse_addr)),
                "-d" | "--daddr" => filter.daddr = Some(valid(opt, value, parse_addr)),
                "--addr" => filter.addr = Some(valid(opt, value, parse_addr)),
                "--sport" => filter.sport = Some(valid(opt, value, parse_port)),
                "--dport" => filter.dport = Some(valid(opt, value, parse_port)),
                "--port" => filter.port = Some(valid(opt, value, parse_port)),
                _ => panic!("option {opt} is not a packet filter"),
            }
        }
        let netns = netns.to_string();
        let args = ["-t", "netif_receive_skb", "-o", "json"]
            .iter()
            .chain(attach)
            .chain(&["--netns", netns.as_str()])
            .chain(opts)
            .map(|s| s.to_string())
            .collect();
        Case { args, filter }
    }

    fn label(&self) -> String {
        self.args.join(" ")
    }
}

/// Whether process `pid` has exited (a zombie not yet waited for, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| matches!(state, "Z" | "X" | "x")),
        Err(_) => true,
    }
}

/// Starts `nettrace` once per argument list, all at the same time, and waits until each has
/// printed `begin tracing`. A run that exits or times out fails the test with its output.
fn start_all(arg_lists: &[&[String]]) -> Vec<Nettrace> {
    let bin = nettrace_bin();
    let mut runs: Vec<Nettrace> = arg_lists
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Nettrace::start_bin(&bin, &args)
        })
        .collect();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut waiting = false;
        for i in 0..runs.len() {
            if runs[i]
                .stderr_lines()
                .iter()
                .any(|l| l.contains(READY_MARKER))
            {
                continue;
            }
            if exited(runs[i].pid()) {
                // stop() of an exited run panics with everything it printed
                runs.swap_remove(i).stop();
                unreachable!();
            }
            if Instant::now() > deadline {
                let fin = runs.swap_remove(i).stop();
                panic!(
                    "nettrace did not print `{READY_MARKER}` within {READY_TIMEOUT:?}\n{}",
                    fin.describe()
                );
            }
            waiting = true;
        }
        if !waiting {
            return runs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cases` (at the same time, with an unfiltered reference run) over one injection of
/// `frames`; returns the reference's run, each case's, and how long the steps took.
fn run_batch(
    sock: &PacketSocket,
    frames: &[Frame],
    reference: &Case,
    cases: &[Case],
) -> (Finished, Vec<Finished>, String) {
    let t0 = Instant::now();
    let mut arg_lists = vec![reference.args.as_slice()];
    arg_lists.extend(cases.iter().map(|c| c.args.as_slice()));
    let runs = start_all(&arg_lists);
    let ready = t0.elapsed();
    for f in frames {
        sock.send(&f.bytes);
    }
    // The reference sees every frame; each filtered run got its events at the same
    // tracepoint hits, and prints them within the same delay (and the rest at exit).
    runs[0].wait_for_stdout(DELIVERY_TIMEOUT, |l| count_events(l) >= frames.len());
    let deadline = Instant::now() + STRAGGLERS;
    let by_len = reference_by_len(&runs[0].stdout_lines());
    for (run, case) in runs[1..].iter().zip(cases) {
        let want = by_len
            .values()
            .filter(|v| event_from_json(v).is_ok_and(|ev| case.filter.matches(&ev)))
            .count();
        let left = deadline.saturating_duration_since(Instant::now());
        run.wait_for_stdout(left, |l| count_events(l) >= want);
    }
    std::thread::sleep(Duration::from_millis(200));
    let delivered = t0.elapsed();
    for run in &runs {
        run.signal(Signal::SIGINT);
    }
    let mut fins: Vec<Finished> = runs
        .into_iter()
        .map(|run| run.wait_exit(STOP_TIMEOUT))
        .collect();
    for fin in &fins {
        fin.assert_success();
    }
    let reference = fins.remove(0);
    let took = format!(
        "{} runs ready in {ready:.1?}, events in by {delivered:.1?}, stopped by {:.1?}",
        fins.len() + 1,
        t0.elapsed()
    );
    (reference, fins, took)
}

/// The reference run's event objects so far, by `len` (for waiting only).
fn reference_by_len(lines: &[String]) -> BTreeMap<u64, Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("event"))
        .filter_map(|v| Some((v.get("len")?.as_u64()?, v)))
        .collect()
}

/// Checks the reference run: every frame exactly once, nothing else, each parsed as built.
/// Returns what the kernel parsed, by `len`.
fn check_reference(
    frames: &[Frame],
    by_len: &BTreeMap<u32, &Frame>,
    run: &Finished,
    netns: u32,
    failures: &mut Vec<String>,
) -> BTreeMap<u32, (Event, String)> {
    let events = events_of(run).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()));
    let mut seen: BTreeMap<u32, (Event, String)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (ev, v) in events {
        let summary = v["summary"].as_str().unwrap_or_default().to_string();
        if ev.netns != netns || v["tracer"] != "netif_receive_skb" {
            problems.push(format!("event from elsewhere: {v}"));
            continue;
        }
        let len = ev.pkt_len;
        let Some(frame) = by_len.get(&len) else {
            problems.push(format!("event of no frame (len {len}): {v}"));
            continue;
        };
        if seen.contains_key(&len) {
            problems.push(format!("{} seen twice", frame.describe()));
            continue;
        }
        if ev.packet != frame.expect && Some(ev.packet) != frame.also {
            problems.push(format!(
                "{}\n      parsed by the kernel as: {} ({summary})",
                frame.describe(),
                describe_packet(&ev.packet)
            ));
        }
        seen.insert(len, (ev, summary));
    }
    for f in frames {
        if !seen.contains_key(&f.skb_len()) {
            problems.push(format!("{} never seen", f.describe()));
        }
    }
    if !problems.is_empty() {
        failures.push(format!(
            "the unfiltered run ({}) does not show each frame once, as built:\n    {}",
            run.args.join(" "),
            problems.join("\n    ")
        ));
    }
    seen
}

/// Compares one filtered run with `Filter::matches` over the reference's events.
fn check_case(
    case: &Case,
    run: &Finished,
    by_len: &BTreeMap<u32, &Frame>,
    parsed: &BTreeMap<u32, (Event, String)>,
    failures: &mut Vec<String>,
) -> (usize, usize) {
    let events = match events_of(run) {
        Ok(e) => e,
        Err(e) => {
            failures.push(format!("{}: {e}", case.label()));
            return (0, 0);
        }
    };
    let mut kernel = BTreeSet::new();
    let mut problems = Vec::new();
    for (ev, v) in &events {
        if !by_len.contains_key(&ev.pkt_len) || !kernel.insert(ev.pkt_len) {
            problems.push(format!("unexpected or repeated event: {v}"));
        }
    }
    let model: BTreeSet<u32> = parsed
        .iter()
        .filter(|(_, (ev, _))| case.filter.matches(ev))
        .map(|(len, _)| *len)
        .collect();
    let line = |len: &u32| {
        let frame = by_len.get(len).expect("only lengths of frames");
        match parsed.get(len) {
            Some((ev, _)) if ev.packet == frame.expect => frame.describe(),
            Some((ev, summary)) => format!(
                "{}\n        parsed by the kernel as: {} ({summary})",
                frame.describe(),
                describe_packet(&ev.packet)
            ),
            None => format!("{} (not in the unfiltered run)", frame.describe()),
        }
    };
    for (lens, verdict) in [
        (
            kernel.difference(&model).collect::<Vec<_>>(),
            "kernel matched, Filter::matches did not",
        ),
        (
            model.difference(&kernel).collect(),
            "Filter::matches matched, kernel did not",
        ),
    ] {
        if lens.is_empty() {
            continue;
        }
        problems.push(format!("{verdict} ({}):", lens.len()));
        problems.extend(
            lens.iter()
                .take(MAX_LISTED)
                .map(|len| format!("  {}", line(len))),
        );
        if lens.len() > MAX_LISTED {
            problems.push(format!("  ... and {} more", lens.len() - MAX_LISTED));
        }
    }
    if !problems.is_empty() {
        failures.push(format!(
            "filter `{}`: kernel matched {} frames, Filter::matches {}:\n    {}",
            case.label(),
            kernel.len(),
            model.len(),
            problems.join("\n    ")
        ));
    }
    (kernel.len(), model.len())
}

#[test]
fn kernel_filter_agrees_with_filter_matches() {
    preflight();
    let started = Instant::now();
    let frames = generate(SEED, FRAMES);
    let by_len: BTreeMap<u32, &Frame> = frames.iter().map(|f| (f.skb_len(), f)).collect();
    assert_eq!(by_len.len(), frames.len(), "frame lengths are not unique");

    let ns = Netns::new();
    let (m0, m1) = (
        nettrace_tests::inject::mac_str(&MAC_V0),
        nettrace_tests::inject::mac_str(&MAC_V1),
    );
    ns.ip(&[
        "link", "add", "v0", "address", &m0, "type", "veth", "peer", "name", "v1", "address", &m1,
    ]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    let netns = u32::try_from(ns.inode()).expect("namespace inode fits in 32 bits");
    let sock = PacketSocket::open(&ns, "v0");

    let mut failures = Vec::new();
    // per filter, per attach mode: (kernel, model) counts
    let mut counts = vec![Vec::new(); FILTERS.len()];
    let mut timing = Vec::new();
    for (mode, attach) in ATTACH {
        let reference = Case::new(&[], netns, attach);
        let cases: Vec<Case> = FILTERS
            .iter()
            .map(|f| Case::new(f, netns, attach))
            .collect();
        for (b, batch) in cases.chunks(BATCH).enumerate() {
            let (ref_run, runs, took) = run_batch(&sock, &frames, &reference, batch);
            timing.push(format!("{mode} batch {b}: {took}"));
            // Each batch's filtered runs are compared with that batch's reference; the same
            // problem of the reference in several batches is reported once.
            let mut ref_failures = Vec::new();
            let parsed = check_reference(&frames, &by_len, &ref_run, netns, &mut ref_failures);
            for f in ref_failures {
                if !failures.contains(&f) {
                    failures.push(f);
                }
            }
            for (i, (case, run)) in batch.iter().zip(&runs).enumerate() {
                let km = check_case(case, run, &by_len, &parsed, &mut failures);
                counts[b * BATCH + i].push(km);
            }
        }
    }
    let table: Vec<String> = FILTERS
        .iter()
        .zip(&counts)
        .map(|(opts, km)| {
            let cells: Vec<String> = km.iter().map(|(k, m)| format!("{k:>3}/{m:<3}")).collect();
            format!("{}  {}", cells.join("  "), opts.join(" "))
        })
        .collect();
    eprintln!(
        "{} frames, {} filters, attach modes {:?}, {:.1?} ({})\n\
         matched by the kernel/by Filter::matches, per attach mode:\n  {}",
        frames.len(),
        FILTERS.len(),
        ATTACH.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
        started.elapsed(),
        timing.join("; "),
        table.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} disagreement(s) between the kernel filter and Filter::matches (or a bad reference):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The frames make every filter worth running: each selects some frames and leaves others
/// (by the frames as built, which the kernel test checks the kernel parses alike).
#[test]
fn every_filter_selects_some_frames() {
    let frames = generate(SEED, FRAMES);
    let mut bad = Vec::new();
    for opts in FILTERS {
        let case = Case::new(opts, 1, &[]);
        let hits = frames
            .iter()
            .filter(|f| {
                [Some(f.expect), f.also]
                    .iter()
                    .flatten()
                    .any(|p| case.filter.matches(&event_of(p, 1)))
            })
            .count();
        let want_none = *opts == MATCHES_NOTHING;
        if (want_none && hits != 0) || (!want_none && (hits == 0 || hits == frames.len())) {
            bad.push(format!("{hits:>4} of {}: {}", frames.len(), opts.join(" ")));
        }
    }
    assert!(
        bad.is_empty(),
        "filters that select no frame or all of them (change SEED, FRAMES or the pools):\n  {}",
        bad.join("\n  ")
    );
}

/// An event of `packet` in namespace `netns`, the other fields at neutral values.
fn event_of(packet: &Packet, netns: u32) -> Event {
    Event {
        ts_ns: 0,
        skb: 0,
        location: 0,
        retval: None,
        tracer_id: 0,
        netns,
        ifindex: 0,
        pid: 0,
        stack_id: None,
        drop_reason: 0,
        flags: 0,
        pkt_len: 0,
        ifname: String::new(),
        comm: String::new(),
        from_sk: false,
        skb_mode: false,
        packet: *packet,
        tunnel: None,
        ip_id: None,
        ct: None,
        bytes: None,
    }
}
