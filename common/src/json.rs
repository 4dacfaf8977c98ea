//! JSON lines output (`--json`): one object per line.
//!
//! Every line is one object with a `"type"`:
//!
//! **event** — one traced function or tracepoint hit:
//! ```json
//! {"type":"event","time":"453516.922978","ts_ns":453516922978000,
//!  "tracer":"ip_rcv","group":"ip-in","skb":"ffff8887b6260800",
//!  "netns":4026531840,"ifindex":2,"ifname":"eth1","pid":0,"comm":"swapper/3","len":84,
//!  "pkt":{"l3":"ipv4","ethertype":2048,"saddr":"10.35.13.63","daddr":"9.135.224.89",
//!         "proto":"icmp","icmp_type":8,"icmp_code":0,"icmp_id":77,"icmp_seq":1},
//!  "summary":"ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1"}
//! ```
//! - `time`: `seconds.microseconds` of the monotonic clock; `ts_ns`: nanoseconds.
//! - `skb`: the sk_buff address, 16 hex digits.
//! - `ifname`: omitted when the skb has no device (`ifindex` 0).
//! - `skb_mode`: `true` only when the event was emitted because `--skb-mode`
//!   remembered the skb; `from_sk`: `true` only when addresses came from the socket.
//!   Both are omitted otherwise.
//! - `pkt`: only the keys that apply:
//!   - `l3`: `"ipv4"`, `"ipv6"`, `"arp"`, `"other"` or `"unknown"` (headers not parsed);
//!   - `ethertype` (number; not for `unknown`);
//!   - `saddr`, `daddr`: IP addresses (ARP: sender and target protocol addresses);
//!   - `ip_id`: the IPv4 identification (IPv4 only);
//!   - `proto`: `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"` or the IP protocol number;
//!   - TCP: `sport`, `dport`, `seq`, `ack`, `flags` (letters `SFRPAUEC`, `-` for none);
//!   - UDP: `sport`, `dport`;
//!   - ICMP/ICMPv6: `icmp_type`, `icmp_code`, and for echo request/reply `icmp_id`, `icmp_seq`;
//!   - ARP: `arp_op` (1 request, 2 reply);
//!   - `l4_unreadable`: `true` when the transport header could not be read (no ports then).
//! - `tunnel`: only for an encapsulated packet (then `pkt` is the inner packet):
//!   `kind` (`"vxlan"`, `"geneve"`, `"ipip"`, `"ip6ip"`), `vni` (0 for IP-in-IP) and
//!   `outer`, the outer packet as a `pkt` object (UDP ports for VXLAN and Geneve).
//! - `summary`: the same one-line summary as the text output.
//! - `drop_reason` (name) and `drop_reason_code` (number): only for drops.
//! - `location`: where the skb was freed (`symbol+0xoffset`), when known.
//! - `ret`: the traced function's return value as a hex string, only with `--ret`.
//! - `stack`: the kernel call stack frames, innermost first, only with `--stack`.
//! - `nft`: with `--nft-trace`, the netfilter rule that dropped the packet:
//!   `{"family","table","chain","handle"?,"verdict","comment"?}` (no `handle`
//!   for a chain's policy).
//! - `ct`: with `--detail`, the conntrack entry the skb carries, when it has
//!   one and the kernel's BTF describes conntrack (see [`crate::conntrack`]):
//!   `{"state":"established","status":["dnat","confirmed","seen_reply"],
//!   "orig":{"proto":"tcp","src":"10.250.56.2:40123","dst":"10.250.58.100:80"},
//!   "reply":{"proto":"tcp","src":"10.250.57.2:8080","dst":"10.250.56.2:40123"}}`.
//!   `state`: `new`, `established`, `related`, `established_reply`,
//!   `related_reply` or `untracked` (then no tuples); `status`: the set
//!   `IPS_*` bits by name (`snat`, `dnat`, `confirmed`, `seen_reply`,
//!   `assured`, `expected`, `seq_adjust`, `snat_done`, `dnat_done`, `dying`,
//!   `fixed_timeout`, `template`, `untracked`, `helper`, `offload`,
//!   `hw_offload`, `bitN`); a tuple's `proto` is a name (`tcp`, `udp`,
//!   `icmp`, `icmpv6`, `sctp`, `dccp`, `udplite`, `gre`) or a number, `src`
//!   and `dst` are `ADDR:PORT` for protocols with ports, the address
//!   otherwise; ICMP tuples add `icmp_id`, `icmp_type`, `icmp_code`.
//! - `link`, `caplen`, `origlen`, `bytes`: with `--pcap`, the packet's first
//!   bytes as the kernel held them: `link` says where they start
//!   (`"ethernet"`: the MAC header; `"raw_ip"`: the network header), `caplen`
//!   how many were copied, `origlen` the packet's length from there, `bytes`
//!   the bytes in lower-case hex. Absent when they could not be copied.
//!
//! **timeline** — one finished skb context in `--timeline` mode:
//! `{"type":"timeline","skb":"ffff88858f243100","events":[<event objects>]}`,
//! with `"nat":[{"at":3,"kind":"dnat","from":"10.96.0.20:80","to":"10.244.1.5:8080"}]`
//! when the packet's addresses or ports changed (`at`: the first event after
//! the change; `kind`: `dnat` or `snat`; ports only for TCP and UDP).
//!
//! **lost** — loss counters (at exit or when they change):
//! `{"type":"lost","events":12,"skb_map_full":0,"stack_failed":0,"matched":1000,"rate_limited":0}`
//! where `events` counts events dropped because the ring buffer was full;
//! `"bytes_failed":N` is added when events went without the packet bytes
//! `--pcap` asked for.

use std::fmt::{self, Display};
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::conntrack::Conntrack;
use crate::event::{Event, Packet, L4};
use crate::format::{write_hex16, write_timestamp, Annotations, LossStats, Timestamp};
use crate::summary::{icmp_type_name, write_tcp_flags};
use crate::summary::{v4_str, write_dec};

/// Serializes `value` into `out` through a per-thread scratch buffer (one
/// bulk copy instead of many small writes).
fn append_json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            // Serializing these types into memory cannot fail.
            let _ = serde_json::to_writer(&mut *buf, value);
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        // only if serialization re-entered this function
        Err(_) => {
            let mut buf = Vec::with_capacity(512);
            let _ = serde_json::to_writer(&mut buf, value);
            out.push_str(&String::from_utf8_lossy(&buf));
        }
    });
}

/// Appends one `event` object and a newline to a byte buffer.
pub fn write_event_json_bytes(out: &mut Vec<u8>, ev: &Event, ann: &Annotations<'_>) {
    let _ = serde_json::to_writer(&mut *out, &event_json(ev, ann));
    out.push(b'\n');
}

/// Serializes a value through its `Display` output.
struct AsStr<T>(T);

impl<T: Display> Serialize for AsStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct Hex16(u64);
impl Display for Hex16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

struct Hex(u64);
impl Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

struct TcpFlags(u8);
impl Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_tcp_flags(f, self.0)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ProtoJson {
    Name(&'static str),
    Number(u8),
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Default)]
struct PktJson {
    l3: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ethertype: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    saddr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daddr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<ProtoJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<AsStr<TcpFlags>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_seq: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arp_op: Option<u16>,
    #[serde(skip_serializing_if = "is_false")]
    l4_unreadable: bool,
}

fn l4_json(p: &mut PktJson, l4: &L4, v6: bool) {
    let proto = l4.proto(v6);
    p.proto = Some(match proto {
        6 => ProtoJson::Name("tcp"),
        17 => ProtoJson::Name("udp"),
        1 if !v6 => ProtoJson::Name("icmp"),
        58 if v6 => ProtoJson::Name("icmpv6"),
        n => ProtoJson::Number(n),
    });
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
        } => {
            p.sport = Some(sport);
            p.dport = Some(dport);
            p.seq = Some(seq);
            p.ack = Some(ack);
            p.flags = Some(AsStr(TcpFlags(flags)));
        }
        L4::Udp { sport, dport } => {
            p.sport = Some(sport);
            p.dport = Some(dport);
        }
        L4::Icmp { ty, code, id, seq } => {
            p.icmp_type = Some(ty);
            p.icmp_code = Some(code);
            if matches!(icmp_type_name(ty, v6), Some((_, true))) {
                p.icmp_id = Some(id);
                p.icmp_seq = Some(seq);
            }
        }
        L4::Other(_) => {}
        L4::Unreadable(_) => p.l4_unreadable = true,
    }
}

fn pkt_json(pkt: &Packet, ip_id: Option<u16>) -> PktJson {
    let mut p = PktJson {
        ip_id: ip_id.filter(|_| matches!(pkt, Packet::Ipv4 { .. })),
        ..PktJson::default()
    };
    match pkt {
        Packet::Ipv4 { src, dst, l4 } => {
            p.l3 = "ipv4";
            p.saddr = Some(IpAddr::V4(*src));
            p.daddr = Some(IpAddr::V4(*dst));
            l4_json(&mut p, l4, false);
        }
        Packet::Ipv6 { src, dst, l4 } => {
            p.l3 = "ipv6";
            p.saddr = Some(IpAddr::V6(*src));
            p.daddr = Some(IpAddr::V6(*dst));
            l4_json(&mut p, l4, true);
        }
        Packet::Arp { op, sender, target } => {
            p.l3 = "arp";
            p.saddr = Some(IpAddr::V4(*sender));
            p.daddr = Some(IpAddr::V4(*target));
            p.arp_op = Some(*op);
        }
        Packet::Other { .. } => p.l3 = "other",
        Packet::Unknown => p.l3 = "unknown",
    }
    if !matches!(pkt, Packet::Unknown) {
        p.ethertype = Some(pkt.ethertype());
    }
    p
}

/// The `tunnel` object of an encapsulated packet's event.
#[derive(Serialize)]
struct TunnelJson {
    kind: &'static str,
    vni: u32,
    outer: PktJson,
}

#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    time: AsStr<Timestamp>,
    ts_ns: u64,
    tracer: &'a str,
    group: &'a str,
    skb: AsStr<Hex16>,
    netns: u32,
    ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ifname: Option<&'a str>,
    pid: u32,
    comm: &'a str,
    len: u32,
    #[serde(skip_serializing_if = "is_false")]
    skb_mode: bool,
    #[serde(skip_serializing_if = "is_false")]
    from_sk: bool,
    pkt: PktJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<TunnelJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ct: Option<&'a Conntrack>,
    summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ret: Option<AsStr<Hex>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nft: Option<&'a crate::rule::NftRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caplen: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origlen: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<AsStr<HexBytes<'a>>>,
}

/// Bytes as lower-case hex digits, two per byte.
struct HexBytes<'a>(&'a [u8]);
impl Display for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn event_json<'a>(ev: &'a Event, ann: &Annotations<'a>) -> EventJson<'a> {
    EventJson {
        ty: "event",
        time: AsStr(Timestamp(ev.ts_ns)),
        ts_ns: ev.ts_ns,
        tracer: ann.tracer,
        group: ann.group,
        skb: AsStr(Hex16(ev.skb)),
        netns: ev.netns,
        ifindex: ev.ifindex,
        ifname: (ev.ifindex != 0).then_some(ev.ifname.as_str()),
        pid: ev.pid,
        comm: &ev.comm,
        len: ev.pkt_len,
        skb_mode: ev.skb_mode,
        from_sk: ev.from_sk,
        pkt: pkt_json(&ev.packet, ev.ip_id),
        tunnel: ev.tunnel.map(|t| TunnelJson {
            kind: t.kind.json_name(),
            vni: t.vni,
            outer: pkt_json(&t.outer, None),
        }),
        ct: ev.ct.as_ref(),
        // one escape pass over the finished text is cheaper than per fragment
        summary: {
            let mut s = String::with_capacity(96);
            let _ = crate::summary::write_event_summary(&mut s, ev);
            s
        },
        drop_reason: ann.drop_reason,
        drop_reason_code: ann.drop_reason.map(|_| ev.drop_reason),
        location: ann.location,
        ret: ev.retval.map(|r| AsStr(Hex(r))),
        stack: ann.stack,
        nft: ann.rule,
        link: ev.bytes.as_ref().map(|c| c.link.json_name()),
        caplen: ev.bytes.as_ref().map(|c| c.data.len()),
        origlen: ev.bytes.as_ref().map(|c| c.origlen),
        bytes: ev.bytes.as_ref().map(|c| AsStr(HexBytes(&c.data))),
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json does.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` and `i + 1` are char boundaries
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends `,"key":` (the key is a literal that needs no escaping).
fn push_key(out: &mut String, key: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
}

fn push_num(out: &mut String, key: &str, n: u64) {
    push_key(out, key);
    let _ = write_dec(out, n);
}

fn push_display(out: &mut String, key: &str, v: impl Display) {
    push_key(out, key);
    out.push('"');
    // addresses and hex numbers: nothing to escape
    let _ = fmt::Write::write_fmt(out, format_args!("{v}"));
    out.push('"');
}

/// The `pkt` object of [`PktJson`], written directly.
fn write_pkt_object(out: &mut String, pkt: &Packet, ip_id: Option<u16>) {
    type Parts<'p> = (
        &'static str,
        Option<(IpAddr, IpAddr)>,
        Option<(&'p L4, bool)>,
    );
    let (l3, addrs, l4): Parts<'_> = match pkt {
        Packet::Ipv4 { src, dst, l4 } => (
            "ipv4",
            Some((IpAddr::V4(*src), IpAddr::V4(*dst))),
            Some((l4, false)),
        ),
        Packet::Ipv6 { src, dst, l4 } => (
            "ipv6",
            Some((IpAddr::V6(*src), IpAddr::V6(*dst))),
            Some((l4, true)),
        ),
        Packet::Arp { sender, target, .. } => (
            "arp",
            Some((IpAddr::V4(*sender), IpAddr::V4(*target))),
            None,
        ),
        Packet::Other { .. } => ("other", None, None),
        Packet::Unknown => ("unknown", None, None),
    };
    out.push_str("{\"l3\":\"");
    out.push_str(l3);
    out.push('"');
    if !matches!(pkt, Packet::Unknown) {
        push_num(out, "ethertype", u64::from(pkt.ethertype()));
    }
    if let Some((src, dst)) = addrs {
        for (key, a) in [("saddr", src), ("daddr", dst)] {
            push_key(out, key);
            out.push('"');
            match a {
                IpAddr::V4(v4) => out.push_str(v4_str(&v4, &mut [0; 15])),
                IpAddr::V6(v6) => {
                    let _ = fmt::Write::write_fmt(out, format_args!("{v6}"));
                }
            }
            out.push('"');
        }
    }
    if let (Some(id), Packet::Ipv4 { .. }) = (ip_id, pkt) {
        push_num(out, "ip_id", u64::from(id));
    }
    if let Some((l4, v6)) = l4 {
        push_key(out, "proto");
        match l4.proto(v6) {
            6 => out.push_str("\"tcp\""),
            17 => out.push_str("\"udp\""),
            1 if !v6 => out.push_str("\"icmp\""),
            58 if v6 => out.push_str("\"icmpv6\""),
            n => {
                let _ = write_dec(out, u64::from(n));
            }
        }
        match *l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
            } => {
                push_num(out, "sport", u64::from(sport));
                push_num(out, "dport", u64::from(dport));
                push_num(out, "seq", u64::from(seq));
                push_num(out, "ack", u64::from(ack));
                push_key(out, "flags");
                out.push('"');
                let _ = write_tcp_flags(out, flags);
                out.push('"');
            }
            L4::Udp { sport, dport } => {
                push_num(out, "sport", u64::from(sport));
                push_num(out, "dport", u64::from(dport));
            }
            L4::Icmp { ty, code, id, seq } => {
                push_num(out, "icmp_type", u64::from(ty));
                push_num(out, "icmp_code", u64::from(code));
                if matches!(icmp_type_name(ty, v6), Some((_, true))) {
                    push_num(out, "icmp_id", u64::from(id));
                    push_num(out, "icmp_seq", u64::from(seq));
                }
            }
            L4::Other(_) => {}
            L4::Unreadable(_) => out.push_str(",\"l4_unreadable\":true"),
        }
    }
    if let Packet::Arp { op, .. } = pkt {
        push_num(out, "arp_op", u64::from(*op));
    }
    out.push('}');
}

/// One event object (no newline), the same bytes as serializing
/// [`EventJson`] with serde_json, without its intermediate structures, the
/// summary string and the copy.
fn write_event_object(out: &mut String, ev: &Event, ann: &Annotations<'_>) {
    out.push_str("{\"type\":\"event\",\"time\":\"");
    let _ = write_timestamp(out, ev.ts_ns);
    out.push('"');
    push_num(out, "ts_ns", ev.ts_ns);
    push_key(out, "tracer");
    push_json_str(out, ann.tracer);
    push_key(out, "group");
    push_json_str(out, ann.group);
    push_key(out, "skb");
    out.push('"');
    let _ = write_hex16(out, ev.skb);
    out.push('"');
    push_num(out, "netns", u64::from(ev.netns));
    push_num(out, "ifindex", u64::from(ev.ifindex));
    if ev.ifindex != 0 {
        push_key(out, "ifname");
        push_json_str(out, &ev.ifname);
    }
    push_num(out, "pid", u64::from(ev.pid));
    push_key(out, "comm");
    push_json_str(out, &ev.comm);
    push_num(out, "len", u64::from(ev.pkt_len));
    if ev.skb_mode {
        out.push_str(",\"skb_mode\":true");
    }
    if ev.from_sk {
        out.push_str(",\"from_sk\":true");
    }
    push_key(out, "pkt");
    write_pkt_object(out, &ev.packet, ev.ip_id);
    if let Some(t) = &ev.tunnel {
        push_key(out, "tunnel");
        out.push_str("{\"kind\":\"");
        out.push_str(t.kind.json_name());
        out.push('"');
        push_num(out, "vni", u64::from(t.vni));
        push_key(out, "outer");
        write_pkt_object(out, &t.outer, None);
        out.push('}');
    }
    if let Some(ct) = &ev.ct {
        push_key(out, "ct");
        crate::conntrack::write_ct_json(out, ct);
    }
    // The summary is built from numbers, addresses and fixed ASCII names:
    // nothing in it needs escaping.
    push_key(out, "summary");
    out.push('"');
    let _ = crate::summary::write_event_summary(out, ev);
    out.push('"');
    if let Some(reason) = ann.drop_reason {
        push_key(out, "drop_reason");
        push_json_str(out, reason);
        push_num(out, "drop_reason_code", u64::from(ev.drop_reason));
    }
    if let Some(loc) = ann.location {
        push_key(out, "location");
        push_json_str(out, loc);
    }
    if let Some(ret) = ev.retval {
        push_display(out, "ret", Hex(ret));
    }
    if let Some(stack) = ann.stack {
        push_key(out, "stack");
        out.push('[');
        for (i, frame) in stack.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, frame);
        }
        out.push(']');
    }
    if let Some(rule) = ann.rule {
        push_key(out, "nft");
        out.push_str(&serde_json::to_string(rule).unwrap_or_else(|_| "null".into()));
    }
    if let Some(c) = &ev.bytes {
        push_key(out, "link");
        push_json_str(out, c.link.json_name());
        push_num(out, "caplen", c.data.len() as u64);
        push_num(out, "origlen", u64::from(c.origlen));
        push_display(out, "bytes", HexBytes(&c.data));
    }
    out.push('}');
}

/// Appends one `event` object and a newline.
pub fn write_event_json(out: &mut String, ev: &Event, ann: &Annotations<'_>) {
    write_event_object(out, ev, ann);
    out.push('\n');
}

/// Appends one `timeline` object (the events of one skb context) and a newline.
pub fn write_timeline_json<'a, I>(out: &mut String, skb: u64, items: I)
where
    I: IntoIterator<Item = (&'a Event, Annotations<'a>)>,
{
    out.push_str("{\"type\":\"timeline\",\"skb\":\"");
    let _ = fmt::Write::write_fmt(out, format_args!("{skb:016x}"));
    out.push_str("\",\"events\":[");
    let mut tracker = crate::nat::Tracker::default();
    let mut nats = Vec::new();
    for (i, (ev, ann)) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let now = crate::nat::Endpoints::of_event(ev);
        nats.extend(tracker.next(now).into_iter().map(|n| (i, n)));
        write_event_object(out, ev, &ann);
    }
    out.push(']');
    if !nats.is_empty() {
        out.push_str(",\"nat\":[");
        for (k, (i, n)) in nats.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            n.write_json(out, Some(*i));
        }
        out.push(']');
    }
    out.push_str("}\n");
}

#[derive(Serialize)]
struct LostJson {
    #[serde(rename = "type")]
    ty: &'static str,
    events: u64,
    skb_map_full: u64,
    stack_failed: u64,
    matched: u64,
    rate_limited: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_stalled: Option<u64>,
}

/// Appends one `lost` object and a newline.
pub fn write_lost_json(out: &mut String, stats: &LossStats) {
    write_lost_json_stalled(out, stats, 0);
}

/// [`write_lost_json`] with `output_stalled` (events dropped because stdout
/// was not read), a key present only when it is not 0.
pub fn write_lost_json_stalled(out: &mut String, stats: &LossStats, output_stalled: u64) {
    append_json(
        out,
        &LostJson {
            ty: "lost",
            events: stats.ringbuf_full,
            skb_map_full: stats.skb_map_full,
            stack_failed: stats.stack_failed,
            matched: stats.matched,
            rate_limited: stats.rate_limited,
            bytes_failed: (stats.bytes_failed > 0).then_some(stats.bytes_failed),
            output_stalled: (output_stalled > 0).then_some(output_stalled),
        },
    );
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample;
    use serde_json::{json, Value};

    fn ann<'a>() -> Annotations<'a> {
        Annotations {
            tracer: "ip_rcv",
            group: "ip-in",
            ..Annotations::default()
        }
    }

    fn one(ev: &Event, a: &Annotations<'_>) -> Value {
        let mut s = String::new();
        write_event_json(&mut s, ev, a);
        assert!(s.ends_with('\n'));
        assert_eq!(s.matches('\n').count(), 1, "one line: {s}");
        serde_json::from_str(&s).expect("valid JSON")
    }

    #[test]
    fn captured_bytes_are_hex_with_their_link_and_lengths() {
        let mut ev = sample();
        assert!(one(&ev, &ann()).get("bytes").is_none());
        ev.bytes = Some(crate::event::Captured {
            link: crate::event::Link::RawIp,
            origlen: 84,
            data: vec![0x45, 0x00, 0x00, 0x54, 0xab],
        });
        let v = one(&ev, &ann());
        assert_eq!(v["link"], "raw_ip");
        assert_eq!(v["caplen"], 5);
        assert_eq!(v["origlen"], 84);
        assert_eq!(v["bytes"], "45000054ab");
    }

    #[test]
    fn a_tunnel_is_an_object_beside_the_inner_packet() {
        let ev = crate::event::tests::vxlan_sample();
        let v = one(&ev, &ann());
        assert_eq!(
            v["tunnel"],
            json!({"kind": "vxlan", "vni": 1, "outer": {"l3": "ipv4", "ethertype": 2048,
                "saddr": "192.168.77.1", "daddr": "192.168.77.2", "proto": "udp",
                "sport": 51000, "dport": 8472}})
        );
        assert_eq!(v["pkt"]["saddr"], "10.35.13.63");
        assert_eq!(
            v["summary"],
            "VXLAN vni 1 192.168.77.1 -> 192.168.77.2 | ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1"
        );
        assert!(one(&sample(), &ann()).get("tunnel").is_none());
    }

    /// The direct writer gives the same bytes as serde_json on the
    /// `EventJson` structures (still used by `write_event_json_bytes`).
    #[test]
    fn direct_writer_matches_serde() {
        let mut events = vec![sample()];
        let packets = [
            Packet::Unknown,
            Packet::Other { ethertype: 0x88cc },
            Packet::Arp {
                op: 2,
                sender: "10.0.0.1".parse().expect("addr"),
                target: "10.0.0.2".parse().expect("addr"),
            },
        ];
        let l4s = [
            L4::Tcp {
                sport: 1,
                dport: 65535,
                seq: u32::MAX,
                ack: 0,
                flags: 0,
            },
            L4::Tcp {
                sport: 80,
                dport: 4000,
                seq: 1,
                ack: 2,
                flags: 0xff,
            },
            L4::Udp {
                sport: 53,
                dport: 5353,
            },
            L4::Icmp {
                ty: 0,
                code: 0,
                id: 1,
                seq: 2,
            },
            L4::Icmp {
                ty: 3,
                code: 1,
                id: 1,
                seq: 2,
            },
            L4::Icmp {
                ty: 128,
                code: 0,
                id: 1,
                seq: 2,
            },
            L4::Icmp {
                ty: 200,
                code: 9,
                id: 1,
                seq: 2,
            },
            L4::Other(132),
            L4::Unreadable(6),
            L4::Unreadable(1),
        ];
        for (i, l4) in l4s.into_iter().enumerate() {
            let mut e = sample();
            e.packet = if i % 2 == 0 {
                Packet::Ipv4 {
                    src: "1.2.3.4".parse().expect("addr"),
                    dst: "255.0.10.100".parse().expect("addr"),
                    l4,
                }
            } else {
                Packet::Ipv6 {
                    src: "fd00::1".parse().expect("addr"),
                    dst: "::ffff:10.0.0.1".parse().expect("addr"),
                    l4,
                }
            };
            e.skb_mode = i % 3 == 0;
            e.from_sk = i % 4 == 0;
            e.retval = (i % 2 == 1).then_some(0xffff_8885_8f24_2900 + i as u64);
            e.ifindex = (i % 5) as u32;
            if i % 3 == 1 {
                e.bytes = Some(crate::event::Captured {
                    link: crate::event::Link::Ethernet,
                    origlen: 98,
                    data: vec![0, 0x0a, 0xff, 0x45],
                });
            }
            events.push(e);
        }
        for (kind, outer) in [
            (
                crate::event::TunnelKind::Vxlan,
                Packet::Ipv4 {
                    src: "192.168.77.1".parse().expect("addr"),
                    dst: "192.168.77.2".parse().expect("addr"),
                    l4: L4::Udp {
                        sport: 40000,
                        dport: 8472,
                    },
                },
            ),
            (
                crate::event::TunnelKind::Ip6ip,
                Packet::Ipv6 {
                    src: "fd00::1".parse().expect("addr"),
                    dst: "fd00::2".parse().expect("addr"),
                    l4: L4::Other(41),
                },
            ),
        ] {
            let mut e = sample();
            e.tunnel = Some(crate::event::Tunnel {
                kind,
                vni: 7,
                outer,
            });
            events.push(e);
        }
        for p in packets {
            let mut e = sample();
            e.packet = p;
            events.push(e);
        }
        for ct in [
            crate::conntrack::tests::dnat_sample(),
            Conntrack {
                state: crate::conntrack::CtState::Untracked,
                status: 0,
                orig: None,
                reply: None,
            },
        ] {
            let mut e = sample();
            e.ct = Some(ct);
            events.push(e);
        }
        let mut odd = sample();
        odd.comm = "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é\u{fffd}".into();
        odd.ifname = "\u{0}x".into();
        events.push(odd);
        let stack = vec!["a+0x1".to_string(), "q\"\\\u{2}".to_string()];
        let anns = [
            ann(),
            Annotations {
                tracer: "t\"\u{1b}",
                group: "",
                drop_reason: Some("NETFILTER_DROP"),
                location: Some("nf_hook_slow+0x9c\\"),
                stack: Some(&stack),
                rule: None,
            },
            Annotations {
                stack: Some(&[]),
                ..ann()
            },
        ];
        for ev in &events {
            for a in &anns {
                let mut direct = String::new();
                write_event_json(&mut direct, ev, a);
                let mut serde = Vec::new();
                write_event_json_bytes(&mut serde, ev, a);
                assert_eq!(direct, String::from_utf8(serde).expect("utf-8"));
            }
        }
    }

    #[test]
    fn a_conntrack_entry_is_the_ct_object() {
        let mut ev = sample();
        ev.ct = Some(crate::conntrack::tests::dnat_sample());
        let v = one(&ev, &ann());
        assert_eq!(
            v["ct"],
            json!({"state": "established", "status": ["dnat", "confirmed", "seen_reply"],
                "orig": {"proto": "tcp", "src": "10.250.56.2:40123", "dst": "10.250.58.100:80"},
                "reply": {"proto": "tcp", "src": "10.250.57.2:8080", "dst": "10.250.56.2:40123"}})
        );
        assert!(one(&sample(), &ann()).get("ct").is_none());
    }

    #[test]
    fn icmp_event() {
        let v = one(&sample(), &ann());
        assert_eq!(
            v,
            json!({
                "type": "event", "time": "453516.922978", "ts_ns": 453516922978000u64,
                "tracer": "ip_rcv", "group": "ip-in", "skb": "ffff8887b6260800",
                "netns": 4026531840u32, "ifindex": 2, "ifname": "eth1", "pid": 0,
                "comm": "swapper/3", "len": 84,
                "pkt": {"l3": "ipv4", "ethertype": 2048, "saddr": "10.35.13.63",
                        "daddr": "9.135.224.89", "ip_id": 7238, "proto": "icmp", "icmp_type": 8,
                        "icmp_code": 0, "icmp_id": 77, "icmp_seq": 1},
                "summary": "ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1"
            })
        );
    }

    #[test]
    fn drop_with_everything() {
        let mut ev = sample();
        ev.ifindex = 0;
        ev.ifname.clear();
        ev.skb_mode = true;
        ev.drop_reason = 12;
        ev.retval = Some(0xffff_8885_8f24_2900);
        ev.packet = Packet::Ipv6 {
            src: "fd00::1".parse().expect("addr"),
            dst: "fd00::2".parse().expect("addr"),
            l4: L4::Tcp {
                sport: 80,
                dport: 4000,
                seq: 1,
                ack: 2,
                flags: 0x12,
            },
        };
        let stack = vec!["a+0x1".to_string(), "b\"quoted\"+0x2".to_string()];
        let a = Annotations {
            tracer: "kfree_skb",
            group: "life",
            drop_reason: Some("NETFILTER_DROP"),
            location: Some("nf_hook_slow+0x9c"),
            stack: Some(&stack),
            rule: None,
        };
        let v = one(&ev, &a);
        assert_eq!(v.get("ifname"), None);
        assert_eq!(v["skb_mode"], json!(true));
        assert_eq!(v.get("from_sk"), None);
        assert_eq!(v["drop_reason"], json!("NETFILTER_DROP"));
        assert_eq!(v["drop_reason_code"], json!(12));
        assert_eq!(v["location"], json!("nf_hook_slow+0x9c"));
        assert_eq!(v["ret"], json!("ffff88858f242900"));
        assert_eq!(v["stack"], json!(["a+0x1", "b\"quoted\"+0x2"]));
        assert_eq!(
            v["pkt"],
            json!({"l3": "ipv6", "ethertype": 34525, "saddr": "fd00::1", "daddr": "fd00::2",
                   "proto": "tcp", "sport": 80, "dport": 4000, "seq": 1, "ack": 2, "flags": "SA"})
        );
        assert_eq!(
            v["summary"],
            json!("TCP: [fd00::1]:80 -> [fd00::2]:4000, seq: 1, ack: 2, flags: SA")
        );
    }

    #[test]
    fn packet_kinds() {
        let mut ev = sample();
        // (the identification is checked in icmp_event)
        ev.ip_id = None;
        let pkt = |ev: &Event| one(ev, &ann())["pkt"].clone();
        ev.packet = Packet::Arp {
            op: 1,
            sender: "10.0.0.1".parse().expect("addr"),
            target: "10.0.0.2".parse().expect("addr"),
        };
        assert_eq!(
            pkt(&ev),
            json!({"l3": "arp", "ethertype": 2054, "saddr": "10.0.0.1", "daddr": "10.0.0.2", "arp_op": 1})
        );
        ev.packet = Packet::Other { ethertype: 0x88cc };
        assert_eq!(pkt(&ev), json!({"l3": "other", "ethertype": 35020}));
        ev.packet = Packet::Unknown;
        assert_eq!(pkt(&ev), json!({"l3": "unknown"}));
        ev.packet = Packet::Ipv4 {
            src: "10.0.0.1".parse().expect("addr"),
            dst: "10.0.0.2".parse().expect("addr"),
            l4: L4::Other(47),
        };
        assert_eq!(
            pkt(&ev),
            json!({"l3": "ipv4", "ethertype": 2048, "saddr": "10.0.0.1", "daddr": "10.0.0.2", "proto": 47})
        );
        ev.packet = Packet::Ipv4 {
            src: "10.0.0.1".parse().expect("addr"),
            dst: "10.0.0.2".parse().expect("addr"),
            l4: L4::Unreadable(17),
        };
        assert_eq!(
            pkt(&ev),
            json!({"l3": "ipv4", "ethertype": 2048, "saddr": "10.0.0.1", "daddr": "10.0.0.2",
                   "proto": "udp", "l4_unreadable": true})
        );
        ev.packet = Packet::Ipv4 {
            src: "10.0.0.1".parse().expect("addr"),
            dst: "10.0.0.2".parse().expect("addr"),
            l4: L4::Icmp {
                ty: 3,
                code: 1,
                id: 5,
                seq: 6,
            },
        };
        assert_eq!(
            pkt(&ev),
            json!({"l3": "ipv4", "ethertype": 2048, "saddr": "10.0.0.1", "daddr": "10.0.0.2",
                   "proto": "icmp", "icmp_type": 3, "icmp_code": 1})
        );
    }

    #[test]
    fn timeline_and_lost() {
        let ev = sample();
        let mut ev2 = sample();
        ev2.skb = 0xffff_8885_8f24_2900;
        let mut s = String::new();
        write_timeline_json(&mut s, ev.skb, [(&ev, ann()), (&ev2, ann())]);
        write_lost_json(
            &mut s,
            &LossStats {
                ringbuf_full: 12,
                skb_map_full: 1,
                stack_failed: 2,
                matched: 1000,
                rate_limited: 3,
                bytes_failed: 0,
            },
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        let t: Value = serde_json::from_str(lines[0]).expect("valid JSON");
        assert_eq!(t["type"], json!("timeline"));
        assert_eq!(t["skb"], json!("ffff8887b6260800"));
        assert_eq!(t["events"].as_array().map(Vec::len), Some(2));
        assert_eq!(t["events"][1]["skb"], json!("ffff88858f242900"));
        assert_eq!(t["events"][0]["type"], json!("event"));
        let l: Value = serde_json::from_str(lines[1]).expect("valid JSON");
        assert_eq!(
            l,
            json!({"type": "lost", "events": 12, "skb_map_full": 1, "stack_failed": 2, "matched": 1000, "rate_limited": 3})
        );
        let mut s = String::new();
        write_lost_json_stalled(&mut s, &LossStats::default(), 7);
        let l: Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(l["output_stalled"], json!(7));
    }

    #[test]
    fn empty_timeline_is_valid() {
        let mut s = String::new();
        write_timeline_json(&mut s, 1, std::iter::empty());
        assert_eq!(
            s,
            "{\"type\":\"timeline\",\"skb\":\"0000000000000001\",\"events\":[]}\n"
        );
    }

    #[test]
    fn bytes_and_string_variants_agree() {
        let mut ev = sample();
        ev.comm = "naïve".into();
        let mut s = String::from("prefix\n");
        write_event_json(&mut s, &ev, &ann());
        let mut b = b"prefix\n".to_vec();
        write_event_json_bytes(&mut b, &ev, &ann());
        assert_eq!(s.as_bytes(), &b[..]);
        let v: Value = serde_json::from_str(s.lines().nth(1).expect("line")).expect("valid JSON");
        assert_eq!(v["comm"], json!("naïve"));
    }

    #[test]
    fn control_chars_are_escaped() {
        let mut ev = sample();
        ev.comm = "tab\there\u{1}".into();
        let v = one(&ev, &ann());
        assert_eq!(v["comm"], json!("tab\there\u{1}"));
    }
}
