//! `--pcap`: traced events as a pcap-ng file that Wireshark and tshark read.
//!
//! Each event becomes an Enhanced Packet Block holding the packet's bytes as
//! the kernel held them at that hook ([`crate::event::Captured`]; none when
//! they could not be copied), its time (Unix time, nanoseconds) and comments
//! saying what nettrace saw ([`Notes`]). Each place a packet was seen (an
//! interface in a network namespace, and in `kubectl nettrace` a node and a
//! pod) becomes an Interface Description Block, written before its first
//! packet, with the link type of the bytes: Ethernet when they start at the
//! MAC header, raw IP when they start at the network header.
//!
//! Only the blocks nettrace needs are written (one Section Header Block,
//! then Interface Description and Enhanced Packet Blocks), in the host's
//! byte order, as the format's specification lays them out
//! (draft-ietf-opsawg-pcapng: every block is its type, its total length, its
//! body, its total length again; options are code, length and value padded
//! to 32 bits, ended by `opt_endofopt`). Writing goes into a `Vec<u8>`: the
//! caller owns the file.
//!
//! Written here rather than with the `pcap-file` crate (2.0.0): that crate
//! writes Enhanced Packet Block times as raw nanoseconds whatever the
//! interface's `if_tsresol` says (right only with an `if_tsresol` of 9, which
//! it leaves to the caller), and it would bring a second `thiserror` and a
//! proc-macro crate into `common/`, which otherwise needs serde and
//! thiserror only; the three block types nettrace writes are checked byte
//! by byte against the specification in this module's tests.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::event::{Captured, Link};

/// Block type of the Section Header Block.
pub const SHB: u32 = 0x0A0D_0D0A;
/// Block type of the Interface Description Block.
pub const IDB: u32 = 0x0000_0001;
/// Block type of the Enhanced Packet Block.
pub const EPB: u32 = 0x0000_0006;
/// The byte-order magic of a Section Header Block.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// `LINKTYPE_ETHERNET`: the bytes start with an Ethernet header.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// `LINKTYPE_RAW`: the bytes start with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u16 = 101;

/// Option code: end of options.
const OPT_ENDOFOPT: u16 = 0;
/// Option code: a comment (any block).
const OPT_COMMENT: u16 = 1;
/// Section Header Block option: the application that wrote the file.
const SHB_USERAPPL: u16 = 4;
/// Interface Description Block option: the interface's name.
const IF_NAME: u16 = 2;
/// Interface Description Block option: its description.
const IF_DESCRIPTION: u16 = 3;
/// Interface Description Block option: time stamp resolution.
const IF_TSRESOL: u16 = 9;
/// `if_tsresol` for nanoseconds (10^-9 s).
const TSRESOL_NS: u8 = 9;

/// The pcap link type of bytes that start at `link`.
pub fn link_type(link: Link) -> u16 {
    match link {
        Link::Ethernet => LINKTYPE_ETHERNET,
        Link::RawIp => LINKTYPE_RAW,
    }
}

/// A place packets were seen: one Interface Description Block per place
/// and link type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interface {
    /// `if_name`: `IFNAME@NETNS` (and in `kubectl nettrace` the pod and
    /// the node), what Wireshark shows as the packet's interface.
    pub name: String,
    /// `if_description`: the same in words.
    pub description: String,
}

impl Interface {
    /// The interface `ifname` (empty: no device) of network namespace
    /// `netns`, named `IFNAME@NETNS`, with `more` (the pod, the node)
    /// after a space when given.
    pub fn new(ifname: &str, ifindex: u32, netns: u64, more: &str) -> Interface {
        let dev = if ifname.is_empty() { "-" } else { ifname };
        let mut name = format!("{dev}@{netns}");
        let mut description = if ifname.is_empty() {
            format!("no device, network namespace {netns}")
        } else {
            format!("{ifname} (ifindex {ifindex}), network namespace {netns}")
        };
        if !more.is_empty() {
            name.push(' ');
            name.push_str(more);
            description.push_str(", ");
            description.push_str(more);
        }
        Interface { name, description }
    }
}

/// What nettrace knew of one event, written as the packet's comments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notes<'a> {
    /// The tracer that fired.
    pub tracer: &'a str,
    /// Its group.
    pub group: &'a str,
    /// The skb address, in hex.
    pub skb: &'a str,
    /// Interface index (0: none).
    pub ifindex: u32,
    /// Interface name (empty: none).
    pub ifname: &'a str,
    /// Network namespace inode.
    pub netns: u64,
    /// The task the kernel ran.
    pub pid: u32,
    /// Its name.
    pub comm: &'a str,
    /// The packet summary of the text output.
    pub summary: &'a str,
    /// Drop reason, drops only.
    pub drop_reason: Option<&'a str>,
    /// Where it was dropped.
    pub location: Option<&'a str>,
    /// The return value, in hex (`--ret`).
    pub ret: Option<&'a str>,
    /// The NAT lines before this event (`--timeline`), as the text shows them.
    pub nat: &'a [String],
    /// The skb's conntrack entry (`--detail`).
    pub ct: Option<&'a crate::conntrack::Conntrack>,
    /// The netfilter rule that decided (`--nft-trace`), as the text shows it.
    pub rule: Option<&'a str>,
    /// The kernel stack, innermost first (`--stack`).
    pub stack: Option<&'a [String]>,
    /// The pod (`kubectl nettrace`): `NAMESPACE/POD/CONTAINER[ via IFNAME]`.
    pub pod: Option<&'a str>,
    /// The node (`kubectl nettrace`).
    pub node: Option<&'a str>,
    /// The event came without the packet's bytes.
    pub no_bytes: bool,
}

impl Notes<'_> {
    /// The comments, one per fact.
    pub fn comments(&self) -> Vec<String> {
        let mut c = Vec::with_capacity(8);
        c.push(format!(
            "nettrace: {} (group {}), skb {}",
            self.tracer, self.group, self.skb
        ));
        let dev = if self.ifindex == 0 {
            "no device".to_string()
        } else {
            format!("{} (ifindex {})", self.ifname, self.ifindex)
        };
        c.push(format!(
            "{dev}, netns {}, pid {} {}",
            self.netns, self.pid, self.comm
        ));
        c.push(self.summary.to_string());
        if let Some(reason) = self.drop_reason {
            let mut s = format!("drop reason {reason}");
            if let Some(loc) = self.location {
                let _ = write!(s, ", location {loc}");
            }
            c.push(s);
        }
        if let Some(ret) = self.ret {
            c.push(format!("return value {ret}"));
        }
        c.extend(self.nat.iter().map(|n| n.trim().to_string()));
        if let Some(ct) = self.ct {
            let mut s = String::new();
            crate::conntrack::write_ct_line(&mut s, ct);
            c.push(s.trim().to_string());
        }
        if let Some(rule) = self.rule {
            c.push(rule.trim().to_string());
        }
        if let Some(stack) = self.stack {
            c.push(format!("stack: {}", stack.join(" <- ")));
        }
        if let Some(pod) = self.pod {
            c.push(format!("pod {pod}"));
        }
        if let Some(node) = self.node {
            c.push(format!("node {node}"));
        }
        if self.no_bytes {
            c.push("no packet bytes: none were copied for this event".to_string());
        }
        c
    }
}

/// One packet record: where, when, what.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Where it was seen.
    pub interface: &'a Interface,
    /// When, in nanoseconds of Unix time.
    pub unix_ns: u64,
    /// The bytes, when the kernel could copy them.
    pub bytes: Option<&'a Captured>,
    /// The packet's length when it has no bytes (`skb->len`).
    pub len: u32,
    /// Its comments.
    pub comments: &'a [String],
}

/// What the writer had written at some point (see [`Writer::rollback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    started: bool,
    interfaces: usize,
}

/// The state of one pcap-ng stream: whether its header is out, and the
/// interfaces it has described (ids in order).
#[derive(Debug)]
pub struct Writer {
    app: String,
    snaplen: u32,
    started: bool,
    interfaces: Vec<(Interface, u16)>,
    ids: HashMap<(Interface, u16), u32>,
}

impl Writer {
    /// A stream written by `app` (`shb_userappl`) whose packets hold at
    /// most `snaplen` bytes.
    pub fn new(app: &str, snaplen: u16) -> Writer {
        Writer {
            app: app.to_string(),
            snaplen: u32::from(snaplen),
            started: false,
            interfaces: Vec::new(),
            ids: HashMap::new(),
        }
    }

    /// The Section Header Block, when nothing was written yet (a stream
    /// without packets is a valid empty file).
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes()); // major version
        body.extend_from_slice(&0u16.to_ne_bytes()); // minor version
        body.extend_from_slice(&(-1i64).to_ne_bytes()); // section length: not given
        let mut opts = Options::default();
        opts.push(SHB_USERAPPL, self.app.as_bytes());
        block(out, SHB, &body, &opts.finish());
    }

    /// Appends one packet, after the section header and its interface's
    /// description when they are not out yet.
    pub fn packet(&mut self, out: &mut Vec<u8>, r: &Record<'_>) {
        self.start(out);
        let id = self.interface(out, r.interface, r.bytes.map(|c| c.link));
        let (data, origlen): (&[u8], u32) = match r.bytes {
            Some(c) => (&c.data, c.origlen.max(c.data.len() as u32)),
            None => (&[], r.len),
        };
        let mut body = Vec::with_capacity(20 + data.len() + 3);
        body.extend_from_slice(&id.to_ne_bytes());
        body.extend_from_slice(&((r.unix_ns >> 32) as u32).to_ne_bytes());
        body.extend_from_slice(&(r.unix_ns as u32).to_ne_bytes());
        body.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        body.extend_from_slice(&origlen.to_ne_bytes());
        body.extend_from_slice(data);
        pad4(&mut body);
        let mut opts = Options::default();
        for c in r.comments {
            opts.push(OPT_COMMENT, clip(c).as_bytes());
        }
        block(out, EPB, &body, &opts.finish());
    }

    /// The id of `iface` with `link` (`None`: a packet without bytes, which
    /// takes the place's first description, whatever its link), after its
    /// description when it is new.
    fn interface(&mut self, out: &mut Vec<u8>, iface: &Interface, link: Option<Link>) -> u32 {
        let lt = match link {
            Some(l) => link_type(l),
            None => self
                .interfaces
                .iter()
                .find(|(i, _)| i == iface)
                .map(|(_, lt)| *lt)
                .unwrap_or(LINKTYPE_RAW),
        };
        let key = (iface.clone(), lt);
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.interfaces.len() as u32;
        let mut body = Vec::with_capacity(8);
        body.extend_from_slice(&lt.to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes()); // reserved
        body.extend_from_slice(&self.snaplen.to_ne_bytes());
        let mut opts = Options::default();
        opts.push(IF_NAME, clip(&iface.name).as_bytes());
        opts.push(IF_DESCRIPTION, clip(&iface.description).as_bytes());
        opts.push(IF_TSRESOL, &[TSRESOL_NS]);
        block(out, IDB, &body, &opts.finish());
        self.interfaces.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    /// What has been written so far.
    pub fn mark(&self) -> Mark {
        Mark {
            started: self.started,
            interfaces: self.interfaces.len(),
        }
    }

    /// Forgets what was written after `m`: the caller dropped those bytes
    /// (its output could not take them), so the header and the interface
    /// descriptions among them are written again when needed.
    pub fn rollback(&mut self, m: Mark) {
        self.started = m.started;
        for key in self.interfaces.drain(m.interfaces..) {
            self.ids.remove(&key);
        }
    }
}

/// A value that fits an option (at most 65535 bytes), cut at a character.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Zero bytes up to a multiple of 4.
fn pad4(b: &mut Vec<u8>) {
    b.resize(b.len().div_ceil(4) * 4, 0);
}

/// A block's options, as the format lays them out.
#[derive(Default)]
struct Options(Vec<u8>);

impl Options {
    fn push(&mut self, code: u16, value: &[u8]) {
        self.0.extend_from_slice(&code.to_ne_bytes());
        self.0
            .extend_from_slice(&(value.len() as u16).to_ne_bytes());
        self.0.extend_from_slice(value);
        pad4(&mut self.0);
    }

    /// The options with their end marker (nothing when there is none).
    fn finish(mut self) -> Vec<u8> {
        if !self.0.is_empty() {
            self.0.extend_from_slice(&OPT_ENDOFOPT.to_ne_bytes());
            self.0.extend_from_slice(&0u16.to_ne_bytes());
        }
        self.0
    }
}

/// Appends a block: type, total length, body, options, total length.
fn block(out: &mut Vec<u8>, ty: u32, body: &[u8], options: &[u8]) {
    let total = (12 + body.len() + options.len()) as u32;
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&total.to_ne_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(options);
    out.extend_from_slice(&total.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_ne_bytes([b[off], b[off + 1]])
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
    }

    /// The blocks of a stream: (type, body and options), each checked for
    /// the format's framing on the way (lengths that agree, multiples of 4).
    fn blocks(b: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < b.len() {
            let ty = u32_at(b, p);
            let len = u32_at(b, p + 4) as usize;
            assert_eq!(len % 4, 0, "block at {p}: length {len}");
            assert!(
                len >= 12 && p + len <= b.len(),
                "block at {p}: length {len}"
            );
            assert_eq!(
                u32_at(b, p + len - 4) as usize,
                len,
                "trailing length at {p}"
            );
            out.push((ty, &b[p + 8..p + len - 4]));
            p += len;
        }
        out
    }

    /// The options after a block's fixed part: (code, value).
    fn options(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut p = 0;
        loop {
            let (code, len) = (u16_at(b, p), usize::from(u16_at(b, p + 2)));
            if code == OPT_ENDOFOPT {
                assert_eq!(len, 0);
                assert_eq!(p + 4, b.len(), "opt_endofopt ends the block");
                return out;
            }
            out.push((code, b[p + 4..p + 4 + len].to_vec()));
            p += 4 + len.div_ceil(4) * 4;
        }
    }

    fn eth(data: Vec<u8>, origlen: u32) -> Captured {
        Captured {
            link: Link::Ethernet,
            origlen,
            data,
        }
    }

    #[test]
    fn a_section_header_opens_the_stream() {
        let mut w = Writer::new("nettrace 0.1.0", 128);
        let mut out = Vec::new();
        w.start(&mut out);
        w.start(&mut out);
        // type, length 52: magic, 1.0, section length -1, shb_userappl
        // "nettrace 0.1.0" (14 bytes, padded to 16), opt_endofopt, length
        let mut want = Vec::new();
        want.extend_from_slice(&0x0A0D_0D0Au32.to_ne_bytes());
        want.extend_from_slice(&52u32.to_ne_bytes());
        want.extend_from_slice(&0x1A2B_3C4Du32.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&0u16.to_ne_bytes());
        want.extend_from_slice(&[0xff; 8]);
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&14u16.to_ne_bytes());
        want.extend_from_slice(b"nettrace 0.1.0\0\0");
        want.extend_from_slice(&[0; 4]);
        want.extend_from_slice(&52u32.to_ne_bytes());
        assert_eq!(out, want);
    }

    #[test]
    fn packets_come_after_their_interface_with_the_format_layout() {
        let mut w = Writer::new("t", 64);
        let mut out = Vec::new();
        let eth0 = Interface::new("eth0", 2, 4_026_531_840, "");
        let comments = vec!["nettrace: kfree_skb".to_string(), "drop".to_string()];
        let c = eth((1..=5).collect(), 98);
        w.packet(
            &mut out,
            &Record {
                interface: &eth0,
                unix_ns: 0x0001_0002_0003_0004,
                bytes: Some(&c),
                len: 84,
                comments: &comments,
            },
        );
        let b = blocks(&out);
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), [SHB, IDB, EPB]);
        // IDB: link type, reserved, snaplen, then options
        let idb = b[1].1;
        assert_eq!(u16_at(idb, 0), LINKTYPE_ETHERNET);
        assert_eq!(u16_at(idb, 2), 0);
        assert_eq!(u32_at(idb, 4), 64);
        assert_eq!(
            options(&idb[8..]),
            [
                (IF_NAME, b"eth0@4026531840".to_vec()),
                (
                    IF_DESCRIPTION,
                    b"eth0 (ifindex 2), network namespace 4026531840".to_vec()
                ),
                (IF_TSRESOL, vec![9]),
            ]
        );
        // EPB: interface 0, time high and low, captured and original
        // lengths, the bytes padded to 4, then the comments
        let epb = b[2].1;
        assert_eq!(u32_at(epb, 0), 0);
        assert_eq!(u32_at(epb, 4), 0x0001_0002);
        assert_eq!(u32_at(epb, 8), 0x0003_0004);
        assert_eq!(u32_at(epb, 12), 5);
        assert_eq!(u32_at(epb, 16), 98);
        assert_eq!(&epb[20..28], &[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(
            options(&epb[28..]),
            [
                (OPT_COMMENT, b"nettrace: kfree_skb".to_vec()),
                (OPT_COMMENT, b"drop".to_vec())
            ]
        );
    }

    #[test]
    fn each_place_and_link_is_described_once() {
        let mut w = Writer::new("t", 128);
        let mut out = Vec::new();
        let a = Interface::new("veth1", 5, 1, "pod/shop/client node/n1");
        let b = Interface::new("", 0, 2, "");
        let raw = Captured {
            link: Link::RawIp,
            origlen: 20,
            data: vec![0x45; 20],
        };
        let e = eth(vec![0; 14], 14);
        let rec = |i, bytes| Record {
            interface: i,
            unix_ns: 1,
            bytes,
            len: 7,
            comments: &[],
        };
        for r in [
            rec(&a, Some(&e)),
            rec(&a, Some(&e)),
            rec(&a, Some(&raw)),
            rec(&b, None),
            rec(&a, None),
        ] {
            w.packet(&mut out, &r);
        }
        let bl = blocks(&out);
        let types: Vec<u32> = bl.iter().map(|x| x.0).collect();
        assert_eq!(types, [SHB, IDB, EPB, EPB, IDB, EPB, IDB, EPB, EPB]);
        assert_eq!(u16_at(bl[4].1, 0), LINKTYPE_RAW);
        assert_eq!(
            options(&bl[1].1[8..])[0].1,
            b"veth1@1 pod/shop/client node/n1"
        );
        assert_eq!(options(&bl[6].1[8..])[0].1, b"-@2");
        // interface ids in order of description; a packet without bytes
        // takes its place's first description (and no options: no comment)
        let ids: Vec<u32> = [2, 3, 5, 7, 8]
            .iter()
            .map(|&i| u32_at(bl[i].1, 0))
            .collect();
        assert_eq!(ids, [0, 0, 1, 2, 0]);
        assert_eq!(u32_at(bl[7].1, 12), 0, "no bytes captured");
        assert_eq!(u32_at(bl[7].1, 16), 7, "the skb's length");
        assert_eq!(bl[7].1.len(), 20);
    }

    #[test]
    fn a_dropped_stretch_is_written_again() {
        let mut w = Writer::new("t", 128);
        let a = Interface::new("eth0", 2, 1, "");
        let b = Interface::new("eth1", 3, 1, "");
        let e = eth(vec![0; 14], 14);
        let rec = |i| Record {
            interface: i,
            unix_ns: 1,
            bytes: Some(&e),
            len: 14,
            comments: &[],
        };
        let mut kept = Vec::new();
        let m0 = w.mark();
        let mut lost = Vec::new();
        w.packet(&mut lost, &rec(&a));
        // the first stretch did not reach the file: header and eth0 again
        w.rollback(m0);
        w.packet(&mut kept, &rec(&a));
        let m1 = w.mark();
        let mut lost = Vec::new();
        w.packet(&mut lost, &rec(&b));
        w.rollback(m1);
        w.packet(&mut kept, &rec(&b));
        w.packet(&mut kept, &rec(&a));
        let types: Vec<u32> = blocks(&kept).iter().map(|x| x.0).collect();
        assert_eq!(types, [SHB, IDB, EPB, IDB, EPB, EPB]);
        let ids: Vec<u32> = [2, 4, 5]
            .iter()
            .map(|&i| u32_at(blocks(&kept)[i].1, 0))
            .collect();
        assert_eq!(ids, [0, 1, 0]);
    }

    #[test]
    fn comments_say_what_nettrace_saw() {
        let nat = ["                NAT  10.96.0.20:80 -> 10.244.1.5:8080 (DNAT)".to_string()];
        let stack = [
            "sk_skb_reason_drop+0x90".to_string(),
            "ip_rcv+0x1".to_string(),
        ];
        let ct = crate::conntrack::tests::dnat_sample();
        let mut ct_line = String::new();
        crate::conntrack::write_ct_line(&mut ct_line, &ct);
        let ct_line = ct_line.trim().to_string();
        assert!(ct_line.starts_with("ct: "), "{ct_line}");
        let n = Notes {
            tracer: "kfree_skb",
            group: "life",
            skb: "ffff888139b46100",
            ifindex: 2,
            ifname: "eth0",
            netns: 4_026_532_315,
            pid: 10559,
            comm: "ping",
            summary: "ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1",
            drop_reason: Some("NO_SOCKET"),
            location: Some("ping_rcv+0xb3"),
            ret: None,
            nat: &nat,
            ct: Some(&ct),
            rule: Some("                rule: ip filter INPUT #2: drop"),
            stack: Some(&stack),
            pod: Some("shop/client/app via veth1"),
            node: Some("nt-node1"),
            no_bytes: false,
        };
        assert_eq!(
            n.comments(),
            [
                "nettrace: kfree_skb (group life), skb ffff888139b46100",
                "eth0 (ifindex 2), netns 4026532315, pid 10559 ping",
                "ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1",
                "drop reason NO_SOCKET, location ping_rcv+0xb3",
                "NAT  10.96.0.20:80 -> 10.244.1.5:8080 (DNAT)",
                &ct_line,
                "rule: ip filter INPUT #2: drop",
                "stack: sk_skb_reason_drop+0x90 <- ip_rcv+0x1",
                "pod shop/client/app via veth1",
                "node nt-node1",
            ]
        );
        let plain = Notes {
            tracer: "ip_rcv",
            group: "ip-in",
            skb: "ffff888100000000",
            ..Notes::default()
        };
        assert_eq!(plain.comments()[1], "no device, netns 0, pid 0 ");
        assert_eq!(plain.comments().len(), 3);
        let none = Notes {
            no_bytes: true,
            ..plain
        };
        assert!(none.comments()[3].starts_with("no packet bytes"));
    }

    #[test]
    fn long_values_are_clipped_at_a_character() {
        let s = "é".repeat(40_000);
        let c = clip(&s);
        assert!(c.len() <= 65535 && c.len() >= 65534);
        assert!(c.chars().all(|ch| ch == 'é'));
    }
}
