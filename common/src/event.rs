//! The event record the kernel programs write to the ring buffer
//! (`struct nt_event` in `ebpf/include/nt_abi.h`), decoded by byte offset.
//!
//! A record is the event ([`EVENT_SIZE`] bytes), then optional blocks, each
//! present when its flag says so, in a fixed order: the skb's conntrack
//! entry ([`F_CT`], [`crate::conntrack::CT_SIZE`] bytes), the packet's bytes
//! ([`F_BYTES`], `struct nt_bytes` and the bytes), then the kernel stack
//! frames (`stack_id` counts them). [`Layout`] is the one place that says
//! where each starts.

use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::conntrack::{Conntrack, CT_SIZE};

/// Size in bytes of one event record.
pub const EVENT_SIZE: usize = 200;

/// A value stored little endian in a record: what a field holds.
pub trait Le: Sized {
    /// Size in bytes.
    const SIZE: usize;
    /// Reads the value from the first `SIZE` bytes of `b`.
    fn read(b: &[u8]) -> Self;
    /// Writes the value into the first `SIZE` bytes of `b`.
    fn write(&self, b: &mut [u8]);
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
            fn write(&self, b: &mut [u8]) {
                b[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_int!(u8, u16, u32, i32, u64);

impl Le for [u8; 16] {
    const SIZE: usize = 16;
    fn read(b: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        a
    }
    fn write(&self, b: &mut [u8]) {
        b[..16].copy_from_slice(self);
    }
}

/// A field of a kernel record: its byte offset, typed by what it holds (so
/// its size is that of the type read and written there).
#[derive(Debug)]
pub struct At<T> {
    /// Byte offset in the record.
    pub off: usize,
    ty: PhantomData<T>,
}

impl<T> Clone for At<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for At<T> {}

impl<T: Le> At<T> {
    /// The field at byte offset `off`.
    pub const fn new(off: usize) -> At<T> {
        At {
            off,
            ty: PhantomData,
        }
    }

    /// Size of the field in bytes.
    pub const fn size(self) -> usize {
        T::SIZE
    }

    /// Reads the field from record `b`.
    pub fn get(self, b: &[u8]) -> T {
        T::read(&b[self.off..])
    }

    /// Writes the field into record `b`.
    pub fn put(self, b: &mut [u8], v: T) {
        v.write(&mut b[self.off..]);
    }
}

/// Where each field of the record is: the layout of `struct nt_event` (with
/// its `pkt` member, `struct nt_pkt`, flattened), in one place for
/// [`Event::decode`] and [`encode`]. The test `abi` of node-agent checks
/// every one of them against the compiled object's BTF.
pub mod offsets {
    use super::At;

    /// `ts_ns`: bpf_ktime_get_ns().
    pub const TS_NS: At<u64> = At::new(0);
    /// `skb`: address of the sk_buff.
    pub const SKB: At<u64> = At::new(8);
    /// `location`: kfree_skb/consume_skb caller.
    pub const LOCATION: At<u64> = At::new(16);
    /// `retval`: return value, valid with `F_RET`.
    pub const RETVAL: At<u64> = At::new(24);
    /// `tracer_id`.
    pub const TRACER_ID: At<u32> = At::new(32);
    /// `netns`: netns inode.
    pub const NETNS: At<u32> = At::new(36);
    /// `ifindex`.
    pub const IFINDEX: At<u32> = At::new(40);
    /// `pid` (tgid).
    pub const PID: At<u32> = At::new(44);
    /// `stack_id`: stack frames after the record, -1 for none.
    pub const STACK_ID: At<i32> = At::new(48);
    /// `drop_reason`.
    pub const DROP_REASON: At<u32> = At::new(52);
    /// `flags`: `F_*`.
    pub const FLAGS: At<u32> = At::new(56);
    /// `pkt_len`: skb->len.
    pub const PKT_LEN: At<u32> = At::new(60);
    /// `ifname`, NUL padded.
    pub const IFNAME: At<[u8; 16]> = At::new(64);
    /// `comm`, NUL padded.
    pub const COMM: At<[u8; 16]> = At::new(80);
    /// `pkt.saddr` (ARP: sender IP).
    pub const SADDR: At<[u8; 16]> = At::new(96);
    /// `pkt.daddr` (ARP: target IP).
    pub const DADDR: At<[u8; 16]> = At::new(112);
    /// `pkt.seq`: TCP sequence number.
    pub const SEQ: At<u32> = At::new(128);
    /// `pkt.ack`: TCP acknowledgment number.
    pub const ACK: At<u32> = At::new(132);
    /// `pkt.l3_proto`: ethertype, 0 = not parsed.
    pub const L3_PROTO: At<u16> = At::new(136);
    /// `pkt.sport`.
    pub const SPORT: At<u16> = At::new(138);
    /// `pkt.dport`.
    pub const DPORT: At<u16> = At::new(140);
    /// `pkt.icmp_id`.
    pub const ICMP_ID: At<u16> = At::new(142);
    /// `pkt.icmp_seq`.
    pub const ICMP_SEQ: At<u16> = At::new(144);
    /// `pkt.arp_op`.
    pub const ARP_OP: At<u16> = At::new(146);
    /// `pkt.l4_proto`: IPPROTO_*.
    pub const L4_PROTO: At<u8> = At::new(148);
    /// `pkt.tcp_flags`.
    pub const TCP_FLAGS: At<u8> = At::new(149);
    /// IPv4 packets: the identification (the bytes of `ARP_OP`).
    pub const IP_ID: At<u16> = At::new(146);
    /// `pkt.icmp_type`.
    pub const ICMP_TYPE: At<u8> = At::new(150);
    /// `pkt.icmp_code`.
    pub const ICMP_CODE: At<u8> = At::new(151);
    /// `tun.saddr`: the outer source address of a tunnel.
    pub const TUN_SADDR: At<[u8; 16]> = At::new(152);
    /// `tun.daddr`.
    pub const TUN_DADDR: At<[u8; 16]> = At::new(168);
    /// `tun.vni`.
    pub const TUN_VNI: At<u32> = At::new(184);
    /// `tun.l3_proto`: the outer ethertype.
    pub const TUN_L3_PROTO: At<u16> = At::new(188);
    /// `tun.sport`: the outer UDP source port.
    pub const TUN_SPORT: At<u16> = At::new(190);
    /// `tun.dport`.
    pub const TUN_DPORT: At<u16> = At::new(192);
    /// `tun.kind` (`enum nt_tunnel_kind`).
    pub const TUN_KIND: At<u8> = At::new(194);
}

/// `flags` bit: `retval` holds a return value.
pub const F_RET: u32 = 0x1;
/// `flags` bit: addresses and ports were taken from the socket.
pub const F_FROM_SK: u32 = 0x2;
/// `flags` bit: emitted because `--skb-mode` remembered the skb.
pub const F_SKB_MODE: u32 = 0x4;
/// `flags` bit: the L3 header was parsed but the L4 header was not readable.
pub const F_L4_BAD: u32 = 0x8;
/// `flags` bit: the packet is the inner one of a tunnel, whose outer headers
/// are in the record's `tun` part.
pub const F_TUNNEL: u32 = 0x10;
/// `flags` bit: the skb's conntrack entry (`struct nt_ct`) follows the
/// record (`--detail`).
pub const F_CT: u32 = 0x20;

/// `flags` bit: the packet's first bytes (`struct nt_bytes` and the bytes)
/// follow the event (`--pcap`).
pub const F_BYTES: u32 = 0x40;

/// Where the blocks that may follow the event start in a record, by its
/// flags: the one place that knows their order (the kernel side writes them
/// in the same order, see `struct nt_scratch_rec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The conntrack entry (`struct nt_ct`), with [`F_CT`].
    pub ct: Option<usize>,
    /// The packet bytes block (`struct nt_bytes`), with [`F_BYTES`].
    pub bytes: Option<usize>,
    /// The stack frames (as many as `stack_id` counts), after the others.
    pub stack: usize,
}

impl Layout {
    /// The layout of record `buf` (a record shorter than its blocks gets
    /// offsets past its end: nothing is read there).
    pub fn of(buf: &[u8]) -> Layout {
        let flags = buf
            .get(..EVENT_SIZE)
            .map(|b| offsets::FLAGS.get(b))
            .unwrap_or(0);
        let mut at = EVENT_SIZE;
        let ct = (flags & F_CT != 0).then_some(at);
        if ct.is_some() {
            at += CT_SIZE;
        }
        let bytes = (flags & F_BYTES != 0).then_some(at);
        if bytes.is_some() {
            at += bytes_block_len(buf.get(at..).unwrap_or_default());
        }
        Layout {
            ct,
            bytes,
            stack: at,
        }
    }
}

/// Most packet bytes a record carries (`NT_MAX_SNAPLEN`): the largest
/// `--snaplen`.
pub const MAX_SNAPLEN: usize = 2048;

/// Size of `struct nt_bytes`, the header of the packet bytes block.
pub const BYTES_HEADER_SIZE: usize = 8;

/// Where each field of `struct nt_bytes` is, from the start of the block.
pub mod bytes_offsets {
    use super::At;

    /// `origlen`: bytes from where the copy starts to the packet's end.
    pub const ORIGLEN: At<u32> = At::new(0);
    /// `caplen`: bytes copied, which follow the header.
    pub const CAPLEN: At<u16> = At::new(4);
    /// `link`: `enum nt_link`.
    pub const LINK: At<u8> = At::new(6);
}

/// The length of a packet bytes block: its header and its bytes, padded to
/// a multiple of 8.
fn bytes_block_len(block: &[u8]) -> usize {
    let cap = block
        .get(..BYTES_HEADER_SIZE)
        .map(|h| usize::from(bytes_offsets::CAPLEN.get(h)))
        .unwrap_or(0);
    BYTES_HEADER_SIZE + cap.div_ceil(8) * 8
}

/// What the copied bytes start with (`enum nt_link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The MAC header: an Ethernet frame.
    Ethernet,
    /// The network header: an IPv4 or IPv6 packet.
    RawIp,
}

impl Link {
    /// The link of `NT_LINK_*` code `code`.
    pub fn from_code(code: u8) -> Option<Link> {
        match code {
            1 => Some(Link::Ethernet),
            2 => Some(Link::RawIp),
            _ => None,
        }
    }

    /// Its `NT_LINK_*` code.
    pub fn code(self) -> u8 {
        match self {
            Link::Ethernet => 1,
            Link::RawIp => 2,
        }
    }

    /// Its name in JSON (`ethernet`, `raw_ip`).
    pub fn json_name(self) -> &'static str {
        match self {
            Link::Ethernet => "ethernet",
            Link::RawIp => "raw_ip",
        }
    }

    /// The link named `name` in JSON.
    pub fn from_json_name(name: &str) -> Option<Link> {
        [Link::Ethernet, Link::RawIp]
            .into_iter()
            .find(|l| l.json_name() == name)
    }
}

/// The first bytes of a packet as the kernel held them at the hook
/// (`--pcap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Where the bytes start.
    pub link: Link,
    /// The packet's length from there (the bytes are its first `data.len()`).
    pub origlen: u32,
    /// The bytes copied (at most `--snaplen`).
    pub data: Vec<u8>,
}

impl Captured {
    /// Reads a packet bytes block (`None` if it is cut short or unknown).
    pub fn decode(block: &[u8]) -> Option<Captured> {
        use bytes_offsets::*;
        let h = block.get(..BYTES_HEADER_SIZE)?;
        let cap = usize::from(CAPLEN.get(h));
        Some(Captured {
            link: Link::from_code(LINK.get(h))?,
            origlen: ORIGLEN.get(h),
            data: block
                .get(BYTES_HEADER_SIZE..BYTES_HEADER_SIZE + cap)?
                .to_vec(),
        })
    }

    /// The block as the kernel writes it (header, bytes, padding).
    pub fn encode(&self) -> Vec<u8> {
        use bytes_offsets::*;
        let cap = self.data.len().min(usize::from(u16::MAX));
        let mut b = vec![0u8; BYTES_HEADER_SIZE];
        ORIGLEN.put(&mut b, self.origlen);
        CAPLEN.put(&mut b, cap as u16);
        LINK.put(&mut b, self.link.code());
        b.extend_from_slice(&self.data[..cap]);
        b.resize(bytes_block_len(&b), 0);
        b
    }
}

/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// A record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer is shorter than [`EVENT_SIZE`].
    #[error(
        "event record is {0} bytes, expected {EVENT_SIZE}; the eBPF object and the nettrace binary do not match, rebuild them together"
    )]
    Short(usize),
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    /// Address of the `sk_buff`.
    pub skb: u64,
    /// Caller of kfree_skb/consume_skb, 0 when none.
    pub location: u64,
    /// Return value of the traced function, when collected.
    pub retval: Option<u64>,
    /// Id of the tracer (index in the attach plan).
    pub tracer_id: u32,
    /// Inode of the network namespace.
    pub netns: u32,
    /// Interface index, 0 without a device.
    pub ifindex: u32,
    /// Thread group id of the current task.
    pub pid: u32,
    /// Number of kernel stack frames that follow the record (see
    /// [`stack_ips`]), `None` when no stack was collected.
    pub stack_id: Option<u32>,
    /// Drop reason code, 0 when none.
    pub drop_reason: u32,
    /// Raw `NT_F_*` flags.
    pub flags: u32,
    /// `skb->len`.
    pub pkt_len: u32,
    /// Interface name (empty without a device).
    pub ifname: String,
    /// Name of the current task.
    pub comm: String,
    /// Addresses and ports were taken from the socket.
    pub from_sk: bool,
    /// Emitted because `--skb-mode` remembered the skb.
    pub skb_mode: bool,
    /// The parsed packet headers (the inner packet of a tunnel).
    pub packet: Packet,
    /// The tunnel the packet travels in, when it is encapsulated.
    pub tunnel: Option<Tunnel>,
    /// The IPv4 identification of the (inner) packet; `None` for others.
    pub ip_id: Option<u16>,
    /// The conntrack entry the skb carries (`--detail`, where the kernel's
    /// BTF describes it); `None` without one.
    pub ct: Option<Conntrack>,
    /// The packet's first bytes (`--pcap`), when they could be copied.
    pub bytes: Option<Captured>,
}

/// An encapsulation the kernel side decodes (`enum nt_tunnel_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    /// VXLAN: UDP to port 4789 or 8472.
    Vxlan,
    /// Geneve: UDP to port 6081.
    Geneve,
    /// IPv4 inside IP (protocol 4).
    Ipip,
    /// IPv6 inside IP (protocol 41).
    Ip6ip,
}

impl TunnelKind {
    /// The kind of `NT_TUN_*` code `code`, `None` for none or unknown.
    pub fn from_code(code: u8) -> Option<TunnelKind> {
        match code {
            1 => Some(TunnelKind::Vxlan),
            2 => Some(TunnelKind::Geneve),
            3 => Some(TunnelKind::Ipip),
            4 => Some(TunnelKind::Ip6ip),
            _ => None,
        }
    }

    /// Its `NT_TUN_*` code.
    pub fn code(self) -> u8 {
        match self {
            TunnelKind::Vxlan => 1,
            TunnelKind::Geneve => 2,
            TunnelKind::Ipip => 3,
            TunnelKind::Ip6ip => 4,
        }
    }

    /// The name shown in text output (`VXLAN`, `Geneve`, `IPIP`, `IP6IP`).
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "VXLAN",
            TunnelKind::Geneve => "Geneve",
            TunnelKind::Ipip => "IPIP",
            TunnelKind::Ip6ip => "IP6IP",
        }
    }

    /// The name in JSON (`vxlan`, `geneve`, `ipip`, `ip6ip`).
    pub fn json_name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Ip6ip => "ip6ip",
        }
    }

    /// The kind named `name` in JSON.
    pub fn from_json_name(name: &str) -> Option<TunnelKind> {
        [
            TunnelKind::Vxlan,
            TunnelKind::Geneve,
            TunnelKind::Ipip,
            TunnelKind::Ip6ip,
        ]
        .into_iter()
        .find(|k| k.json_name() == name)
    }
}

/// The outer side of an encapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Which encapsulation.
    pub kind: TunnelKind,
    /// VXLAN or Geneve network identifier (0 for IP-in-IP).
    pub vni: u32,
    /// The outer packet: IPv4 or IPv6, with its UDP ports for VXLAN and
    /// Geneve, or the IP-in-IP protocol number.
    pub outer: Packet,
}

/// The network layer of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// IPv4 packet.
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        l4: L4,
    },
    /// IPv6 packet.
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        l4: L4,
    },
    /// ARP packet; `sender`/`target` are the protocol (IP) addresses.
    Arp {
        op: u16,
        sender: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// Another ethertype, not parsed further.
    Other { ethertype: u16 },
    /// The headers were not parsed (`l3_proto` 0).
    Unknown,
}

/// The transport layer of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP segment.
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    /// UDP datagram.
    Udp { sport: u16, dport: u16 },
    /// ICMP, or ICMPv6 inside IPv6.
    Icmp { ty: u8, code: u8, id: u16, seq: u16 },
    /// Another IP protocol, by number.
    Other(u8),
    /// The L4 header of this protocol could not be read.
    Unreadable(u8),
}

impl L4 {
    /// IP protocol number; `v6` selects ICMPv6 for [`L4::Icmp`].
    pub fn proto(&self, v6: bool) -> u8 {
        match *self {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::Icmp { .. } if v6 => IPPROTO_ICMPV6,
            L4::Icmp { .. } => IPPROTO_ICMP,
            L4::Other(p) | L4::Unreadable(p) => p,
        }
    }
}

impl Packet {
    /// Ethertype of the packet, 0 for [`Packet::Unknown`].
    pub fn ethertype(&self) -> u16 {
        match *self {
            Packet::Ipv4 { .. } => ETH_P_IP,
            Packet::Ipv6 { .. } => ETH_P_IPV6,
            Packet::Arp { .. } => ETH_P_ARP,
            Packet::Other { ethertype } => ethertype,
            Packet::Unknown => 0,
        }
    }

    /// The L4 part with its IP protocol number, for IP packets.
    pub fn l4(&self) -> Option<(u8, &L4)> {
        match self {
            Packet::Ipv4 { l4, .. } => Some((l4.proto(false), l4)),
            Packet::Ipv6 { l4, .. } => Some((l4.proto(true), l4)),
            _ => None,
        }
    }
}

/// Namespace for decoding raw records.
pub struct RawEvent;

impl RawEvent {
    /// Decodes one record; extra bytes past [`EVENT_SIZE`] are ignored.
    pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
        Event::decode(buf)
    }
}

fn c_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// At most 15 bytes of `s`, leaving room for the NUL.
fn c_name(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(15)]
}

fn v4(a: [u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

/// The kernel stack carried after the event record `buf` (and its other
/// blocks, see [`Layout`]), innermost frame first: at most `frames` 8-byte
/// addresses, as many as the record holds.
pub fn stack_ips(buf: &[u8], frames: u32) -> Vec<u64> {
    buf.get(Layout::of(buf).stack..)
        .unwrap_or_default()
        .chunks_exact(8)
        .take(frames as usize)
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

impl Event {
    /// Decodes one record: the event and, after it, with [`F_CT`] the
    /// conntrack entry and with [`F_BYTES`] the packet's bytes (each `None`
    /// if the record is too short for it); the stack frames are left for
    /// [`stack_ips`].
    pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
        use offsets::*;
        let b: &[u8; EVENT_SIZE] = buf
            .get(..EVENT_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Short(buf.len()))?;
        let flags = FLAGS.get(b);
        let stack_id = STACK_ID.get(b);
        let saddr = SADDR.get(b);
        let daddr = DADDR.get(b);
        let l3 = L3_PROTO.get(b);
        let l4_proto = L4_PROTO.get(b);
        let v6 = l3 == ETH_P_IPV6;
        let l4 = if flags & F_L4_BAD != 0 {
            L4::Unreadable(l4_proto)
        } else {
            match l4_proto {
                IPPROTO_TCP => L4::Tcp {
                    sport: SPORT.get(b),
                    dport: DPORT.get(b),
                    seq: SEQ.get(b),
                    ack: ACK.get(b),
                    flags: TCP_FLAGS.get(b),
                },
                IPPROTO_UDP => L4::Udp {
                    sport: SPORT.get(b),
                    dport: DPORT.get(b),
                },
                IPPROTO_ICMP if !v6 => icmp(b),
                IPPROTO_ICMPV6 if v6 => icmp(b),
                p => L4::Other(p),
            }
        };
        let packet = match l3 {
            0 => Packet::Unknown,
            ETH_P_IP => Packet::Ipv4 {
                src: v4(saddr),
                dst: v4(daddr),
                l4,
            },
            ETH_P_IPV6 => Packet::Ipv6 {
                src: Ipv6Addr::from(saddr),
                dst: Ipv6Addr::from(daddr),
                l4,
            },
            ETH_P_ARP => Packet::Arp {
                op: ARP_OP.get(b),
                sender: v4(saddr),
                target: v4(daddr),
            },
            ethertype => Packet::Other { ethertype },
        };
        Ok(Event {
            ts_ns: TS_NS.get(b),
            skb: SKB.get(b),
            location: LOCATION.get(b),
            retval: (flags & F_RET != 0).then(|| RETVAL.get(b)),
            tracer_id: TRACER_ID.get(b),
            netns: NETNS.get(b),
            ifindex: IFINDEX.get(b),
            pid: PID.get(b),
            stack_id: u32::try_from(stack_id).ok(),
            drop_reason: DROP_REASON.get(b),
            flags,
            pkt_len: PKT_LEN.get(b),
            ifname: c_string(&IFNAME.get(b)),
            comm: c_string(&COMM.get(b)),
            from_sk: flags & F_FROM_SK != 0,
            skb_mode: flags & F_SKB_MODE != 0,
            packet,
            tunnel: if flags & F_TUNNEL != 0 {
                decode_tunnel(b)
            } else {
                None
            },
            ip_id: (l3 == ETH_P_IP).then(|| IP_ID.get(b)),
            ct: Layout::of(buf)
                .ct
                .and_then(|at| buf.get(at..))
                .and_then(Conntrack::decode),
            bytes: Layout::of(buf)
                .bytes
                .and_then(|at| buf.get(at..))
                .and_then(Captured::decode),
        })
    }
}

fn decode_tunnel(b: &[u8; EVENT_SIZE]) -> Option<Tunnel> {
    use offsets::*;
    let kind = TunnelKind::from_code(TUN_KIND.get(b))?;
    let l4 = match kind {
        TunnelKind::Vxlan | TunnelKind::Geneve => L4::Udp {
            sport: TUN_SPORT.get(b),
            dport: TUN_DPORT.get(b),
        },
        TunnelKind::Ipip => L4::Other(4),
        TunnelKind::Ip6ip => L4::Other(41),
    };
    let (s, d) = (TUN_SADDR.get(b), TUN_DADDR.get(b));
    let outer = match TUN_L3_PROTO.get(b) {
        ETH_P_IP => Packet::Ipv4 {
            src: v4(s),
            dst: v4(d),
            l4,
        },
        ETH_P_IPV6 => Packet::Ipv6 {
            src: Ipv6Addr::from(s),
            dst: Ipv6Addr::from(d),
            l4,
        },
        _ => return None,
    };
    Some(Tunnel {
        kind,
        vni: TUN_VNI.get(b),
        outer,
    })
}

fn icmp(b: &[u8; EVENT_SIZE]) -> L4 {
    use offsets::*;
    L4::Icmp {
        ty: ICMP_TYPE.get(b),
        code: ICMP_CODE.get(b),
        id: ICMP_ID.get(b),
        seq: ICMP_SEQ.get(b),
    }
}

/// Builds the record of an event (the inverse of [`Event::decode`]).
///
/// `flags` is taken from the event with the RET, FROM_SK, SKB_MODE, L4_BAD,
/// TUNNEL, CT and BYTES bits set from `retval`, `from_sk`, `skb_mode`, the
/// packet, the tunnel, the conntrack entry and the bytes (the last two
/// appended after the event, in the order of [`Layout`]).
pub fn encode(ev: &Event) -> Vec<u8> {
    use offsets::*;
    let mut b = vec![0u8; EVENT_SIZE];
    let mut flags =
        ev.flags & !(F_RET | F_FROM_SK | F_SKB_MODE | F_L4_BAD | F_TUNNEL | F_CT | F_BYTES);
    if ev.retval.is_some() {
        flags |= F_RET;
    }
    if ev.from_sk {
        flags |= F_FROM_SK;
    }
    if ev.skb_mode {
        flags |= F_SKB_MODE;
    }
    TS_NS.put(&mut b, ev.ts_ns);
    SKB.put(&mut b, ev.skb);
    LOCATION.put(&mut b, ev.location);
    RETVAL.put(&mut b, ev.retval.unwrap_or(0));
    TRACER_ID.put(&mut b, ev.tracer_id);
    NETNS.put(&mut b, ev.netns);
    IFINDEX.put(&mut b, ev.ifindex);
    PID.put(&mut b, ev.pid);
    let stack = ev
        .stack_id
        .and_then(|s| i32::try_from(s).ok())
        .unwrap_or(-1);
    STACK_ID.put(&mut b, stack);
    DROP_REASON.put(&mut b, ev.drop_reason);
    PKT_LEN.put(&mut b, ev.pkt_len);
    let put_name = |b: &mut [u8], at: At<[u8; 16]>, s: &str| {
        let s = c_name(s);
        b[at.off..at.off + s.len()].copy_from_slice(s);
    };
    put_name(&mut b, IFNAME, &ev.ifname);
    put_name(&mut b, COMM, &ev.comm);
    L3_PROTO.put(&mut b, ev.packet.ethertype());
    let v4_bytes = |a: &Ipv4Addr| {
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&a.octets());
        o
    };
    let mut put_l4 = |b: &mut [u8], l4: &L4, v6: bool| {
        L4_PROTO.put(b, l4.proto(v6));
        match *l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags: tf,
            } => {
                SPORT.put(b, sport);
                DPORT.put(b, dport);
                SEQ.put(b, seq);
                ACK.put(b, ack);
                TCP_FLAGS.put(b, tf);
            }
            L4::Udp { sport, dport } => {
                SPORT.put(b, sport);
                DPORT.put(b, dport);
            }
            L4::Icmp { ty, code, id, seq } => {
                ICMP_TYPE.put(b, ty);
                ICMP_CODE.put(b, code);
                ICMP_ID.put(b, id);
                ICMP_SEQ.put(b, seq);
            }
            L4::Other(_) => {}
            L4::Unreadable(_) => flags |= F_L4_BAD,
        }
    };
    match &ev.packet {
        Packet::Ipv4 { src, dst, l4 } => {
            SADDR.put(&mut b, v4_bytes(src));
            DADDR.put(&mut b, v4_bytes(dst));
            IP_ID.put(&mut b, ev.ip_id.unwrap_or(0));
            put_l4(&mut b, l4, false);
        }
        Packet::Ipv6 { src, dst, l4 } => {
            SADDR.put(&mut b, src.octets());
            DADDR.put(&mut b, dst.octets());
            put_l4(&mut b, l4, true);
        }
        Packet::Arp { op, sender, target } => {
            SADDR.put(&mut b, v4_bytes(sender));
            DADDR.put(&mut b, v4_bytes(target));
            ARP_OP.put(&mut b, *op);
        }
        Packet::Other { .. } | Packet::Unknown => {}
    }
    if let Some(t) = &ev.tunnel {
        let outer = match t.outer {
            Packet::Ipv4 { src, dst, l4 } => Some((ETH_P_IP, v4_bytes(&src), v4_bytes(&dst), l4)),
            Packet::Ipv6 { src, dst, l4 } => Some((ETH_P_IPV6, src.octets(), dst.octets(), l4)),
            _ => None,
        };
        if let Some((l3, s, d, l4)) = outer {
            flags |= F_TUNNEL;
            TUN_KIND.put(&mut b, t.kind.code());
            TUN_VNI.put(&mut b, t.vni);
            TUN_L3_PROTO.put(&mut b, l3);
            TUN_SADDR.put(&mut b, s);
            TUN_DADDR.put(&mut b, d);
            if let L4::Udp { sport, dport } = l4 {
                TUN_SPORT.put(&mut b, sport);
                TUN_DPORT.put(&mut b, dport);
            }
        }
    }
    if let Some(ct) = &ev.ct {
        flags |= F_CT;
        b.extend_from_slice(&ct.encode());
    }
    if let Some(c) = &ev.bytes {
        flags |= F_BYTES;
        b.extend_from_slice(&c.encode());
    }
    FLAGS.put(&mut b, flags);
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// [`sample`] inside VXLAN (VNI 1, 192.168.77.1:51000 -> 192.168.77.2:8472), used
    /// across the crate's tests.
    pub(crate) fn vxlan_sample() -> Event {
        Event {
            tunnel: Some(Tunnel {
                kind: TunnelKind::Vxlan,
                vni: 1,
                outer: Packet::Ipv4 {
                    src: Ipv4Addr::new(192, 168, 77, 1),
                    dst: Ipv4Addr::new(192, 168, 77, 2),
                    l4: L4::Udp {
                        sport: 51000,
                        dport: 8472,
                    },
                },
            }),
            ..sample()
        }
    }

    /// A plain IPv4 ICMP echo request event used across the crate's tests.
    pub(crate) fn sample() -> Event {
        Event {
            ts_ns: 453_516_922_978_000,
            skb: 0xffff_8887_b626_0800,
            location: 0,
            retval: None,
            tracer_id: 3,
            netns: 4_026_531_840,
            ifindex: 2,
            pid: 0,
            stack_id: None,
            drop_reason: 0,
            flags: 0,
            pkt_len: 84,
            ifname: "eth1".into(),
            comm: "swapper/3".into(),
            from_sk: false,
            skb_mode: false,
            packet: Packet::Ipv4 {
                src: Ipv4Addr::new(10, 35, 13, 63),
                dst: Ipv4Addr::new(9, 135, 224, 89),
                l4: L4::Icmp {
                    ty: 8,
                    code: 0,
                    id: 77,
                    seq: 1,
                },
            },
            tunnel: None,
            ip_id: Some(0x1c46),
            ct: None,
            bytes: None,
        }
    }

    #[test]
    fn decodes_fields_at_their_offsets() {
        let mut b = [0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        b[8..16].copy_from_slice(&0xffff_8887_b626_0800u64.to_le_bytes());
        b[16..24].copy_from_slice(&0xffff_ffff_8100_1234u64.to_le_bytes());
        b[24..32].copy_from_slice(&0xffff_8885_8f24_2900u64.to_le_bytes());
        b[32..36].copy_from_slice(&7u32.to_le_bytes());
        b[36..40].copy_from_slice(&4_026_531_992u32.to_le_bytes());
        b[40..44].copy_from_slice(&2u32.to_le_bytes());
        b[44..48].copy_from_slice(&897_081u32.to_le_bytes());
        b[48..52].copy_from_slice(&42i32.to_le_bytes());
        b[52..56].copy_from_slice(&12u32.to_le_bytes());
        b[56..60].copy_from_slice(&(F_RET | F_SKB_MODE).to_le_bytes());
        b[60..64].copy_from_slice(&1500u32.to_le_bytes());
        b[64..68].copy_from_slice(b"eth1");
        b[80..88].copy_from_slice(b"nettrace");
        b[96..100].copy_from_slice(&[10, 0, 0, 1]);
        b[112..116].copy_from_slice(&[10, 0, 0, 2]);
        b[128..132].copy_from_slice(&123u32.to_le_bytes());
        b[132..136].copy_from_slice(&456u32.to_le_bytes());
        b[136..138].copy_from_slice(&ETH_P_IP.to_le_bytes());
        b[138..140].copy_from_slice(&34567u16.to_le_bytes());
        b[140..142].copy_from_slice(&8080u16.to_le_bytes());
        b[148] = IPPROTO_TCP;
        b[149] = 0x12;
        let ev = Event::decode(&b).expect("full record decodes");
        assert_eq!(ev.ts_ns, 0x0102_0304_0506_0708);
        assert_eq!(ev.skb, 0xffff_8887_b626_0800);
        assert_eq!(ev.location, 0xffff_ffff_8100_1234);
        assert_eq!(ev.retval, Some(0xffff_8885_8f24_2900));
        assert_eq!(ev.tracer_id, 7);
        assert_eq!(ev.netns, 4_026_531_992);
        assert_eq!(ev.ifindex, 2);
        assert_eq!(ev.pid, 897_081);
        assert_eq!(ev.stack_id, Some(42));
        assert_eq!(ev.drop_reason, 12);
        assert_eq!(ev.pkt_len, 1500);
        assert_eq!(ev.ifname, "eth1");
        assert_eq!(ev.comm, "nettrace");
        assert!(ev.skb_mode);
        assert!(!ev.from_sk);
        assert_eq!(
            ev.packet,
            Packet::Ipv4 {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                l4: L4::Tcp {
                    sport: 34567,
                    dport: 8080,
                    seq: 123,
                    ack: 456,
                    flags: 0x12
                },
            }
        );
    }

    #[test]
    fn short_buffer_is_an_error_long_is_accepted() {
        let err = Event::decode(&[0u8; 151]).unwrap_err();
        assert_eq!(err, DecodeError::Short(151));
        assert!(err.to_string().contains("rebuild"));
        let mut long = encode(&sample());
        long.extend_from_slice(&[0xaa; 8]);
        assert_eq!(RawEvent::decode(&long), Ok(sample()));
    }

    #[test]
    fn negative_stack_id_and_no_ret_flag() {
        let mut b = encode(&sample());
        b[24..32].copy_from_slice(&99u64.to_le_bytes());
        b[48..52].copy_from_slice(&(-14i32).to_le_bytes());
        let ev = Event::decode(&b).expect("decodes");
        assert_eq!(ev.stack_id, None);
        assert_eq!(ev.retval, None);
    }

    #[test]
    fn icmp_kind_follows_l3() {
        let mut b = encode(&sample());
        b[136..138].copy_from_slice(&ETH_P_IPV6.to_le_bytes());
        // protocol 1 inside IPv6 is not ICMPv6
        let ev = Event::decode(&b).expect("decodes");
        assert!(matches!(
            ev.packet,
            Packet::Ipv6 {
                l4: L4::Other(1),
                ..
            }
        ));
        b[148] = IPPROTO_ICMPV6;
        let ev = Event::decode(&b).expect("decodes");
        assert!(matches!(
            ev.packet,
            Packet::Ipv6 {
                l4: L4::Icmp { ty: 8, seq: 1, .. },
                ..
            }
        ));
    }

    #[test]
    fn l4_bad_flag_gives_unreadable() {
        let mut b = encode(&sample());
        b[56] |= F_L4_BAD as u8;
        let ev = Event::decode(&b).expect("decodes");
        assert!(matches!(
            ev.packet,
            Packet::Ipv4 {
                l4: L4::Unreadable(IPPROTO_ICMP),
                ..
            }
        ));
    }

    #[test]
    fn round_trips() {
        let mut evs = vec![sample()];
        let mut e = sample();
        e.retval = Some(0xffff_8885_8f24_2900);
        e.stack_id = Some(5);
        e.from_sk = true;
        e.skb_mode = true;
        e.drop_reason = 12;
        e.location = 0xffff_ffff_81aa_0000;
        e.packet = Packet::Ipv6 {
            src: "fd00::1".parse().expect("addr"),
            dst: "fd00::2".parse().expect("addr"),
            l4: L4::Udp {
                sport: 5353,
                dport: 53,
            },
        };
        evs.push(e.clone());
        e.packet = Packet::Ipv6 {
            src: "fd00::1".parse().expect("addr"),
            dst: "fd00::2".parse().expect("addr"),
            l4: L4::Unreadable(IPPROTO_TCP),
        };
        evs.push(e.clone());
        e.packet = Packet::Arp {
            op: 2,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            target: Ipv4Addr::new(10, 0, 0, 2),
        };
        evs.push(e.clone());
        e.packet = Packet::Other { ethertype: 0x88cc };
        evs.push(e.clone());
        e.packet = Packet::Unknown;
        evs.push(e.clone());
        for mut ev in evs {
            // only IPv4 packets have an identification
            if !matches!(ev.packet, Packet::Ipv4 { .. }) {
                ev.ip_id = None;
            }
            let mut want = ev.clone();
            let bytes = encode(&ev);
            assert_eq!(bytes.len(), EVENT_SIZE);
            let got = Event::decode(&bytes).expect("decodes");
            want.flags = got.flags;
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_conntrack_entry_follows_the_event_and_the_stack_follows_it() {
        let mut ev = sample();
        ev.ct = Some(crate::conntrack::tests::dnat_sample());
        ev.stack_id = Some(2);
        let mut b = encode(&ev);
        assert_eq!(b.len(), EVENT_SIZE + CT_SIZE);
        assert_eq!(offsets::FLAGS.get(&b) & F_CT, F_CT);
        b.extend_from_slice(&0xffff_ffff_8100_0001u64.to_ne_bytes());
        b.extend_from_slice(&0xffff_ffff_8100_0002u64.to_ne_bytes());
        let got = Event::decode(&b).expect("decodes");
        assert_eq!(got.ct, ev.ct);
        assert_eq!(got.flags & F_CT, F_CT);
        assert_eq!(
            stack_ips(&b, 2),
            [0xffff_ffff_8100_0001, 0xffff_ffff_8100_0002]
        );
        // without the flag, the same bytes after the event are the stack
        let plain = encode(&sample());
        assert_eq!(stack_ips(&plain, 4), Vec::<u64>::new());
        // a record cut short of its entry decodes without it
        let short = Event::decode(&b[..EVENT_SIZE + CT_SIZE - 1]).expect("decodes");
        assert_eq!(short.ct, None);
        // the CT bit of `flags` follows the entry
        let mut no_ct = ev.clone();
        no_ct.ct = None;
        no_ct.flags = F_CT;
        assert_eq!(encode(&no_ct).len(), EVENT_SIZE);
        assert_eq!(offsets::FLAGS.get(&encode(&no_ct)) & F_CT, 0);
    }

    #[test]
    fn packet_bytes_follow_the_event_and_the_stack_follows_them() {
        let mut ev = sample();
        ev.bytes = Some(Captured {
            link: Link::Ethernet,
            origlen: 98,
            data: (0u8..21).collect(),
        });
        ev.stack_id = Some(2);
        let mut b = encode(&ev);
        // header, 21 bytes, 3 of padding
        assert_eq!(b.len(), EVENT_SIZE + BYTES_HEADER_SIZE + 24);
        assert_eq!(offsets::FLAGS.get(&b) & F_BYTES, F_BYTES);
        assert_eq!(
            Layout::of(&b),
            Layout {
                ct: None,
                bytes: Some(EVENT_SIZE),
                stack: EVENT_SIZE + 32
            }
        );
        b.extend_from_slice(&0xffff_ffff_8100_0001u64.to_ne_bytes());
        b.extend_from_slice(&0xffff_ffff_8100_0002u64.to_ne_bytes());
        let got = Event::decode(&b).expect("decodes");
        assert_eq!(got.bytes, ev.bytes);
        assert_eq!(
            stack_ips(&b, 2),
            [0xffff_ffff_8100_0001, 0xffff_ffff_8100_0002]
        );
        // a record cut short of its bytes decodes without them
        let short = Event::decode(&b[..EVENT_SIZE + 20]).expect("decodes");
        assert_eq!(short.bytes, None);
        // without the flag, what follows the event is the stack
        let plain = encode(&sample());
        assert_eq!(Layout::of(&plain).stack, EVENT_SIZE);
        // the BYTES bit of `flags` follows the bytes
        let mut none = ev.clone();
        none.bytes = None;
        none.flags = F_BYTES;
        assert_eq!(offsets::FLAGS.get(&encode(&none)) & F_BYTES, 0);
        // a block of a multiple of 8 has no padding
        let c = Captured {
            link: Link::RawIp,
            origlen: 16,
            data: vec![0x45; 16],
        };
        assert_eq!(c.encode().len(), BYTES_HEADER_SIZE + 16);
        assert_eq!(Captured::decode(&c.encode()), Some(c));
        assert_eq!(Link::from_json_name("raw_ip"), Some(Link::RawIp));
        assert_eq!(Link::from_code(3), None);
    }

    #[test]
    fn the_conntrack_entry_then_the_bytes_then_the_stack() {
        let mut ev = sample();
        ev.ct = Some(crate::conntrack::tests::dnat_sample());
        ev.bytes = Some(Captured {
            link: Link::RawIp,
            origlen: 84,
            data: vec![0x45; 9],
        });
        ev.stack_id = Some(1);
        let mut b = encode(&ev);
        assert_eq!(
            Layout::of(&b),
            Layout {
                ct: Some(EVENT_SIZE),
                bytes: Some(EVENT_SIZE + CT_SIZE),
                stack: EVENT_SIZE + CT_SIZE + BYTES_HEADER_SIZE + 16,
            }
        );
        assert_eq!(b.len(), Layout::of(&b).stack);
        b.extend_from_slice(&0xffff_ffff_8100_0007u64.to_ne_bytes());
        let got = Event::decode(&b).expect("decodes");
        assert_eq!((&got.ct, &got.bytes), (&ev.ct, &ev.bytes));
        assert_eq!(stack_ips(&b, 1), [0xffff_ffff_8100_0007]);
    }

    #[test]
    fn names_stop_at_nul_and_tolerate_bad_utf8() {
        let mut b = encode(&sample());
        b[64..80].copy_from_slice(b"veth0\0garbage!!!");
        b[80..84].copy_from_slice(&[b'a', 0xff, b'b', 0]);
        let ev = Event::decode(&b).expect("decodes");
        assert_eq!(ev.ifname, "veth0");
        assert_eq!(ev.comm, "a\u{fffd}b");
    }
}
