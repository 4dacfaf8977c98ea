//! Raw Ethernet frames: builders for the headers the tests need, and an `AF_PACKET` sender that
//! puts frames on an interface inside a namespace exactly as built, bypassing the sender's IP
//! stack (any addresses, protocols, fragments, ARP).
//!
//! Frames sent on one end of a veth pair arrive on the peer end: `veth_xmit` forwards them
//! and the peer's receive path (`netif_rx`, then `__netif_receive_skb_core`, where the
//! `net/netif_receive_skb` tracepoint fires) sees each one once, with `skb->len` = the frame
//! length minus the 14-byte Ethernet header (`eth_type_trans` has pulled it). Nothing checks
//! the destination MAC, the IP header or any checksum before that tracepoint.
//!
//! The builders leave L4 checksums at 0 (the frames are meant for the hooks that come before
//! any checksum verification); the IPv4 header checksum is computed.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::netns::Netns;
use crate::traffic::in_netns;

/// Length of an Ethernet header (no VLAN tag).
pub const ETH_HLEN: usize = 14;
/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// The broadcast MAC address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// IPv4 flags/fragment-offset field: "more fragments".
pub const IP_MF: u16 = 0x2000;
/// IPv4 flags/fragment-offset field: "don't fragment".
pub const IP_DF: u16 = 0x4000;

/// TCP flag bit FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag bit SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag bit RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag bit PSH.
pub const TCP_PSH: u8 = 0x08;
/// TCP flag bit ACK.
pub const TCP_ACK: u8 = 0x10;

/// `aa:bb:cc:dd:ee:ff` for a MAC address.
pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An Ethernet frame: `dst`, `src`, `ethertype`, then `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of an IPv4 header that the tests vary.
#[derive(Debug, Clone)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset as on the wire: [`IP_DF`], [`IP_MF`] and the offset in
    /// 8-byte units (at most 0x1fff).
    pub frag: u16,
    /// Options, padded with zeros (end of options) to a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
}

impl Ipv4Header {
    /// A header without options, not fragmented, TTL 64.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ipv4Header {
        Ipv4Header {
            src,
            dst,
            proto,
            ttl: 64,
            id: 0,
            frag: 0,
            options: Vec::new(),
        }
    }

    /// Header length in bytes (20 plus the padded options).
    pub fn len(&self) -> usize {
        20 + self.options.len().div_ceil(4) * 4
    }

    /// Always false: a header is at least 20 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An IPv4 packet: `h` (total length and header checksum filled in) then `payload`.
pub fn ipv4(h: &Ipv4Header, payload: &[u8]) -> Vec<u8> {
    let hlen = h.len();
    assert!(hlen <= 60, "IPv4 options longer than 40 bytes");
    let total = hlen + payload.len();
    assert!(total <= 0xffff, "IPv4 packet too long");
    let mut p = Vec::with_capacity(total);
    p.push(0x40 | (hlen / 4) as u8);
    p.push(0); // DSCP/ECN
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&h.id.to_be_bytes());
    p.extend_from_slice(&h.frag.to_be_bytes());
    p.push(h.ttl);
    p.push(h.proto);
    p.extend_from_slice(&[0, 0]); // checksum, below
    p.extend_from_slice(&h.src.octets());
    p.extend_from_slice(&h.dst.octets());
    p.extend_from_slice(&h.options);
    p.resize(hlen, 0);
    let sum = inet_checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet: fixed header (payload length filled in) then `payload`, which starts with
/// the header named by `next_header` (an extension header or the L4 header).
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 0xffff, "IPv6 payload too long");
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(next_header);
    p.push(64); // hop limit
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 fragment extension header (8 bytes) followed by `payload`: `offset` in 8-byte
/// units, `more` = M flag.
pub fn ipv6_fragment(next_header: u8, offset: u16, more: bool, id: u32, payload: &[u8]) -> Vec<u8> {
    assert!(offset <= 0x1fff, "fragment offset out of range");
    let mut p = Vec::with_capacity(8 + payload.len());
    p.push(next_header);
    p.push(0);
    p.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A TCP segment with a 20-byte header (no options, window 64240, checksum 0).
pub fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(5 << 4); // data offset
    s.push(flags);
    s.extend_from_slice(&64240u16.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    s.extend_from_slice(payload);
    s
}

/// A UDP datagram (length filled in, checksum 0).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    assert!(len <= 0xffff, "UDP datagram too long");
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// An ICMP or ICMPv6 message: type, code, checksum 0, then `rest` (for echo: identifier and
/// sequence number) and `payload`.
pub fn icmp(ty: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + payload.len());
    m.extend_from_slice(&[ty, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(payload);
    m
}

/// `rest` of an ICMP echo request/reply: identifier and sequence number.
pub fn echo_rest(id: u16, seq: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    [a, b, c, d]
}

/// An Ethernet/IPv4 ARP packet (28 bytes): `op` 1 request, 2 reply; sender and target
/// hardware and protocol addresses.
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    a.extend_from_slice(&ETH_P_IP.to_be_bytes());
    a.push(6);
    a.push(4);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// A raw `AF_PACKET` socket bound to nothing, sending on one interface of a namespace.
/// Frames go out exactly as given (the Ethernet header included).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens the socket inside `ns` (a socket belongs to the namespace it was created in, and
    /// keeps sending there from any thread) for interface `ifname` of that namespace.
    /// Protocol 0: the socket receives nothing.
    pub fn open(ns: &Netns, ifname: &str) -> PacketSocket {
        let ifindex = ns.ifindex(ifname) as i32;
        let fd = in_netns(ns, || {
            // SAFETY: plain socket(2); the fd is owned right away.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(
                raw >= 0,
                "socket(AF_PACKET, SOCK_RAW): {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: raw is a fresh, valid fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(raw) }
        });
        PacketSocket { fd, ifindex }
    }

    /// Sends one frame (at least an Ethernet header); panics unless all of it was sent.
    pub fn send(&self, frame: &[u8]) {
        assert!(
            frame.len() >= ETH_HLEN,
            "frame shorter than an Ethernet header"
        );
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        // The ethertype, already in network byte order in the frame.
        sll.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: valid fd, buffer and sockaddr_ll of the right length.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert!(
            n >= 0,
            "sendto(AF_PACKET, ifindex {}, {} bytes): {}",
            self.ifindex,
            frame.len(),
            std::io::Error::last_os_error()
        );
        assert_eq!(n as usize, frame.len(), "short AF_PACKET send");
    }
}
