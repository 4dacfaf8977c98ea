//! Text output of events received from a node agent (`kubectl nettrace`).
//!
//! An agent sends each event as the object `nettrace -o json` prints
//! ([`crate::json`]); [`RemoteEvent`] reads it back, and
//! [`write_remote_event`] prints the very line host `nettrace` would have
//! printed for it, with the pod (and node) it belongs to appended before the
//! newline:
//!
//! ```text
//! 1379.453013: [net_dev_queue           ]: ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1, pod: shop/client/app
//! 1379.453041: [netif_receive_skb       ]: ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1, pod: shop/client/app via veth3f9a1c, node: worker-1
//! ```

use std::fmt::{self, Write};

use serde::{Deserialize, Serialize};

use crate::conntrack::Conntrack;
use crate::format::{write_ct, write_drop, write_head, write_stack, Columns, Skb, TextOptions};
use crate::protocol::Annotation;

/// One event object as `nettrace -o json` prints it (the keys text output
/// needs, and the packet's identity to join what several nodes saw of one
/// packet; the others are skipped). Missing keys take defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteEvent {
    /// Monotonic timestamp of the agent's node, in ns.
    pub ts_ns: u64,
    /// The tracer that fired.
    pub tracer: String,
    /// Its group in the tracer tree.
    pub group: String,
    /// The skb address, 16 hex digits.
    pub skb: String,
    /// Network namespace inode of the skb's device.
    pub netns: u64,
    /// Interface index (0: none).
    pub ifindex: u32,
    /// Interface name, absent without a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Task the kernel was running.
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// `skb->len`.
    pub len: u32,
    /// The packet summary, as in the text output.
    pub summary: String,
    /// Drop reason name, drops only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// Where the skb was dropped (`symbol+0xoffset`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Return value in hex (`--ret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// Call stack, innermost first (`--stack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
    /// The (inner) packet's identity.
    pub pkt: PacketId,
    /// The encapsulation, for a tunnelled packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<RemoteTunnel>,
    /// The addresses came from the socket, not the packet's headers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_sk: bool,
    /// The netfilter rule that decided its fate (`--nft-trace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nft: Option<crate::rule::NftRule>,
    /// The skb's conntrack entry (`--detail`); one that does not parse is
    /// left out.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::conntrack::deserialize_lenient"
    )]
    pub ct: Option<Conntrack>,
    /// Where the packet bytes start (`ethernet`, `raw_ip`), when the agent
    /// copied them (`pcap` in the spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The packet's length from where the bytes start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origlen: Option<u32>,
    /// The packet's first bytes, in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// The keys of an event's `pkt` object that tell one packet from another:
/// addresses, IPv4 identification, protocol, ports, TCP sequence,
/// acknowledgment and flags, ICMP type, id and sequence. Not the length: it changes along the path (link
/// headers, encapsulation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct PacketId {
    /// Source address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<std::net::IpAddr>,
    /// Destination address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<std::net::IpAddr>,
    /// IPv4 identification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_id: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Source port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// TCP sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    /// TCP acknowledgment number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<u32>,
    /// TCP flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// ICMP type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP echo id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
    /// ICMP echo sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_seq: Option<u16>,
}

impl PacketId {
    /// Whether it names a packet at all (an IP packet with addresses).
    pub fn is_known(&self) -> bool {
        self.saddr.is_some() && self.daddr.is_some() && self.proto.is_some()
    }
}

/// An IP protocol as `pkt.proto` gives it: a name, or a number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Proto {
    /// `tcp`, `udp`, `icmp`, `icmpv6`.
    Name(String),
    /// Any other protocol.
    Number(u8),
}

/// An event's `tunnel` object (the keys output needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteTunnel {
    /// `vxlan`, `geneve`, `ipip` or `ip6ip`.
    pub kind: String,
    /// VNI (VXLAN, Geneve).
    pub vni: u32,
}

impl RemoteTunnel {
    /// As the text output names it: `VXLAN vni 1`, `Geneve vni 7`, `IPIP`.
    pub fn describe(&self) -> String {
        match crate::event::TunnelKind::from_json_name(&self.kind) {
            Some(k @ (crate::event::TunnelKind::Vxlan | crate::event::TunnelKind::Geneve)) => {
                format!("{} vni {}", k.name(), self.vni)
            }
            Some(k) => k.name().to_string(),
            None => self.kind.clone(),
        }
    }
}

impl RemoteEvent {
    /// Reads one event object.
    pub fn parse(json: &str) -> Result<RemoteEvent, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The packet bytes the event carries (`None` without them, or when
    /// they are not well formed).
    pub fn captured(&self) -> Option<crate::event::Captured> {
        let hex = self.bytes.as_deref()?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let data = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(crate::event::Captured {
            link: crate::event::Link::from_json_name(self.link.as_deref()?)?,
            origlen: self.origlen.unwrap_or(data.len() as u32),
            data,
        })
    }
}

/// Appends the line(s) of one remote event, each ending with `\n`: the host
/// `nettrace` text (see [`crate::format::write_event`]) with
/// `, pod: NAMESPACE/POD/CONTAINER[ via HOST_IFNAME]` when annotated and
/// `, node: NODE` when `node` is given, both before the newline of the
/// event's first line.
pub fn write_remote_event(
    out: &mut String,
    ev: &RemoteEvent,
    ann: Option<&Annotation>,
    node: Option<&str>,
    opts: TextOptions,
) {
    // fmt::Write for String never fails.
    let _ = write_inner(out, ev, ann, node, opts);
}

fn write_inner(
    out: &mut String,
    ev: &RemoteEvent,
    ann: Option<&Annotation>,
    node: Option<&str>,
    opts: TextOptions,
) -> fmt::Result {
    let cols = Columns {
        skb: Skb::Text(&ev.skb),
        ifindex: ev.ifindex,
        ifname: ev.ifname.as_deref().unwrap_or(""),
        pid: ev.pid,
        comm: &ev.comm,
        group: &ev.group,
    };
    write_head(out, ev.ts_ns, opts.then_cols(&cols), &ev.tracer)?;
    out.push_str(&ev.summary);
    write_drop(out, ev.drop_reason.as_deref(), ev.location.as_deref());
    write_suffix(out, ann, node);
    out.push('\n');
    if let Some(rule) = &ev.nft {
        rule.write_line(out);
    }
    write_ct(out, ev.ct.as_ref(), opts);
    if opts.advice {
        crate::format::write_advice(out, &ev.tracer, ev.drop_reason.as_deref());
    }
    if let Some(ret) = &ev.ret {
        writeln!(out, "                return value:{ret}")?;
    }
    write_stack(out, ev.stack.as_deref())
}

/// Appends `, pod: NS/POD/CONTAINER[ via IFNAME]` and `, node: NODE`.
pub fn write_suffix(out: &mut String, ann: Option<&Annotation>, node: Option<&str>) {
    if let Some(a) = ann {
        out.push_str(", pod: ");
        out.push_str(&a.namespace);
        out.push('/');
        out.push_str(&a.pod);
        out.push('/');
        out.push_str(&a.container);
        if let Some(ifname) = &a.host_ifname {
            out.push_str(" via ");
            out.push_str(ifname);
        }
    }
    if let Some(node) = node {
        out.push_str(", node: ");
        out.push_str(node);
    }
}

/// The `,"nat":[...]` member of a timeline object over these events (the
/// translations, each with `at`, the index of the first event after it),
/// empty when there is none.
pub fn nat_json<'a, I>(events: I) -> String
where
    I: IntoIterator<Item = &'a RemoteEvent>,
{
    let mut tracker = crate::nat::Tracker::default();
    let mut out = String::new();
    for (i, ev) in events.into_iter().enumerate() {
        let now = (!ev.from_sk)
            .then(|| crate::nat::Endpoints::of_remote(&ev.pkt))
            .flatten();
        for n in tracker.next(now) {
            out.push_str(if out.is_empty() { ",\"nat\":[" } else { "," });
            n.write_json(&mut out, Some(i));
        }
    }
    if !out.is_empty() {
        out.push(']');
    }
    out
}

/// Appends a whole timeline block of remote events: the
/// `<------------------- skb: ... ---------------------->` header, the
/// event lines (annotated as by [`write_remote_event`], each with its node
/// when given) with the `NAT` lines between them ([`crate::nat`]), the
/// `end` line when given (e.g. where the packet was lost), one empty line.
pub fn write_remote_timeline<'a, I>(
    out: &mut String,
    skb: &str,
    items: I,
    end: Option<&str>,
    opts: TextOptions,
) where
    I: IntoIterator<Item = (&'a RemoteEvent, Option<&'a Annotation>, Option<&'a str>)>,
{
    let _ = writeln!(
        out,
        "<------------------- skb: {skb} ---------------------->"
    );
    let mut nat = crate::nat::Tracker::default();
    for (ev, ann, node) in items {
        let now = (!ev.from_sk)
            .then(|| crate::nat::Endpoints::of_remote(&ev.pkt))
            .flatten();
        for n in nat.next(now) {
            n.write_line(out);
        }
        write_remote_event(out, ev, ann, node, opts);
    }
    if let Some(end) = end {
        out.push_str(end);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample;
    use crate::event::{Event, Packet, L4};
    use crate::format::{write_event, write_timeline_block, Annotations};
    use crate::json::{write_event_json, write_timeline_json};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ALL_OPTS: [TextOptions; 4] = [
        TextOptions {
            detail: false,
            timeline: false,
            advice: false,
        },
        TextOptions {
            detail: true,
            timeline: false,
            advice: true,
        },
        TextOptions {
            detail: false,
            timeline: true,
            advice: false,
        },
        TextOptions {
            detail: true,
            timeline: true,
            advice: true,
        },
    ];

    /// Events covering every part of a text line.
    fn events() -> Vec<Event> {
        let mut v = vec![sample()];
        let mut no_dev = sample();
        no_dev.ifindex = 0;
        no_dev.ifname.clear();
        no_dev.comm = "swapper/2".into();
        v.push(no_dev);
        let mut ret = sample();
        ret.retval = Some(0xffff_8885_8f24_2900);
        ret.comm = "ping".into();
        ret.pid = 897_081;
        v.push(ret);
        let mut tcp = sample();
        tcp.packet = Packet::Ipv6 {
            src: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            dst: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            l4: L4::Tcp {
                sport: 35338,
                dport: 8080,
                seq: 1,
                ack: 2,
                flags: 0x12,
            },
        };
        tcp.skb_mode = true;
        v.push(tcp);
        let mut arp = sample();
        arp.packet = Packet::Arp {
            op: 1,
            sender: Ipv4Addr::new(10, 0, 0, 1),
            target: Ipv4Addr::new(10, 0, 0, 2),
        };
        v.push(arp);
        let mut drop = sample();
        drop.drop_reason = 7;
        v.push(drop);
        let mut ct = sample();
        ct.ct = Some(crate::conntrack::tests::dnat_sample());
        ct.retval = Some(0x2a);
        v.push(ct);
        let mut untracked = sample();
        untracked.ct = Some(Conntrack {
            state: crate::conntrack::CtState::Untracked,
            status: 0,
            orig: None,
            reply: None,
        });
        v.push(untracked);
        v
    }

    fn stack() -> Vec<String> {
        vec![
            "sk_skb_reason_drop+0x90".into(),
            "nft_do_chain+0x46f".into(),
        ]
    }

    /// The annotation variants: plain, drop with location and stack.
    fn anns(stack: &[String]) -> Vec<Annotations<'_>> {
        vec![
            Annotations {
                tracer: "napi_gro_receive",
                group: "link-in",
                ..Annotations::default()
            },
            Annotations {
                tracer: "__netif_receive_skb_core",
                group: "a-long-group-name",
                ..Annotations::default()
            },
            Annotations {
                tracer: "kfree_skb",
                group: "life",
                drop_reason: Some("NETFILTER_DROP"),
                location: Some("nft_do_chain+0x46f"),
                stack: Some(stack),
                rule: None,
            },
            Annotations {
                tracer: "kfree_skb",
                group: "life",
                drop_reason: Some("NO_SOCKET"),
                location: None,
                stack: None,
                rule: None,
            },
        ]
    }

    fn via_json(ev: &Event, ann: &Annotations<'_>) -> RemoteEvent {
        let mut json = String::new();
        write_event_json(&mut json, ev, ann);
        RemoteEvent::parse(&json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn packet_bytes_come_back_from_the_json_object() {
        let mut ev = sample();
        let ann = Annotations::default();
        assert_eq!(via_json(&ev, &ann).captured(), None);
        let c = crate::event::Captured {
            link: crate::event::Link::Ethernet,
            origlen: 98,
            data: vec![0x02, 0x00, 0xff, 0x10, 0x08, 0x00],
        };
        ev.bytes = Some(c.clone());
        assert_eq!(via_json(&ev, &ann).captured(), Some(c));
        let bad = RemoteEvent {
            link: Some("ethernet".into()),
            bytes: Some("0g".into()),
            ..RemoteEvent::default()
        };
        assert_eq!(bad.captured(), None);
        let odd = RemoteEvent {
            bytes: Some("abc".into()),
            ..bad
        };
        assert_eq!(odd.captured(), None);
    }

    #[test]
    fn remote_lines_equal_host_lines() {
        let stack = stack();
        for ev in events() {
            for ann in anns(&stack) {
                let remote = via_json(&ev, &ann);
                for opts in ALL_OPTS {
                    let mut host = String::new();
                    write_event(&mut host, &ev, &ann, opts);
                    let mut mine = String::new();
                    write_remote_event(&mut mine, &remote, None, None, opts);
                    assert_eq!(mine, host, "{opts:?}");
                }
            }
        }
    }

    #[test]
    fn remote_timeline_blocks_equal_host_blocks() {
        let stack = stack();
        let evs = events();
        let anns = anns(&stack);
        let items: Vec<(&Event, Annotations<'_>)> =
            evs.iter().zip(anns.iter().cycle().copied()).collect();
        for opts in ALL_OPTS {
            let mut host = String::new();
            write_timeline_block(
                &mut host,
                0xffff_8887_b626_0800,
                items.iter().cloned(),
                opts,
            );
            let mut json = String::new();
            write_timeline_json(&mut json, 0xffff_8887_b626_0800, items.iter().cloned());
            #[derive(Deserialize)]
            struct Tl {
                skb: String,
                events: Vec<RemoteEvent>,
            }
            let tl: Tl = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let mut mine = String::new();
            write_remote_timeline(
                &mut mine,
                &tl.skb,
                tl.events.iter().map(|e| (e, None, None)),
                None,
                opts,
            );
            assert_eq!(mine, host, "{opts:?}");
        }
    }

    fn ann(host_ifname: Option<&str>) -> Annotation {
        Annotation {
            namespace: "shop".into(),
            pod: "client".into(),
            container: "app".into(),
            host_ifname: host_ifname.map(str::to_string),
        }
    }

    #[test]
    fn pod_and_node_suffixes_go_before_the_newline() {
        let stack = stack();
        let a = anns(&stack);
        let remote = via_json(&sample(), &a[0]);
        let mut s = String::new();
        write_remote_event(
            &mut s,
            &remote,
            Some(&ann(None)),
            None,
            TextOptions::default(),
        );
        assert_eq!(
            s,
            "453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1, pod: shop/client/app\n"
        );
        s.clear();
        write_remote_event(
            &mut s,
            &remote,
            Some(&ann(Some("veth3f9a1c"))),
            Some("worker-1"),
            TextOptions::default(),
        );
        assert_eq!(
            s,
            "453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1, pod: shop/client/app via veth3f9a1c, node: worker-1\n"
        );
        s.clear();
        write_remote_event(
            &mut s,
            &remote,
            None,
            Some("worker-2"),
            TextOptions::default(),
        );
        assert!(s.ends_with("seq: 1, node: worker-2\n"), "{s}");
    }

    #[test]
    fn suffix_follows_drop_location_and_precedes_ret_and_stack() {
        let stack = stack();
        let a = anns(&stack);
        let mut ev = sample();
        ev.retval = Some(0x2a);
        let remote = via_json(&ev, &a[2]);
        let mut s = String::new();
        write_remote_event(
            &mut s,
            &remote,
            Some(&ann(None)),
            Some("n1"),
            TextOptions::default(),
        );
        assert_eq!(
            s,
            "453516.922978: [kfree_skb               ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1, reason: NETFILTER_DROP, location: nft_do_chain+0x46f, pod: shop/client/app, node: n1\n\
             \x20               return value:2a\n\
             Call Stack:\n    -> sk_skb_reason_drop+0x90\n    -> nft_do_chain+0x46f\n"
        );
    }

    #[test]
    fn timeline_block_with_annotations() {
        let stack = stack();
        let a = anns(&stack);
        let remote = via_json(&sample(), &a[0]);
        let pod = ann(None);
        let mut s = String::new();
        write_remote_timeline(
            &mut s,
            "ffff8887b6260800",
            [
                (&remote, Some(&pod), Some("n1")),
                (&remote, None, Some("n2")),
            ],
            Some("lost between n2 and n3: last seen at x on n2"),
            TextOptions::default(),
        );
        assert_eq!(
            s,
            "<------------------- skb: ffff8887b6260800 ---------------------->\n\
             453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1, pod: shop/client/app, node: n1\n\
             453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1, node: n2\n\
             lost between n2 and n3: last seen at x on n2\n\n"
        );
    }

    #[test]
    fn packet_identity_and_tunnel_are_read_from_the_json() {
        let stack = stack();
        let a = anns(&stack);
        let tcp = &events()[3];
        let r = via_json(tcp, &a[0]);
        assert_eq!(
            r.pkt,
            PacketId {
                saddr: "fd00::1".parse().ok(),
                daddr: "fd00::2".parse().ok(),
                proto: Some(Proto::Name("tcp".into())),
                sport: Some(35338),
                dport: Some(8080),
                seq: Some(1),
                ack: Some(2),
                flags: Some("SA".into()),
                ..PacketId::default()
            }
        );
        assert!(r.pkt.is_known() && r.tunnel.is_none());
        let icmp = via_json(&sample(), &a[0]);
        assert_eq!(icmp.pkt.icmp_type, Some(8));
        assert_eq!(icmp.pkt.icmp_seq, Some(1));
        assert!(icmp.pkt.icmp_id.is_some());
        let arp = via_json(&events()[4], &a[0]);
        assert_eq!(arp.pkt.proto, None);
        assert!(!arp.pkt.is_known());
        let vx = via_json(&crate::event::tests::vxlan_sample(), &a[0]);
        assert_eq!(
            vx.tunnel.as_ref().map(RemoteTunnel::describe).as_deref(),
            Some("VXLAN vni 1")
        );
        assert!(vx.pkt.is_known());
    }

    #[test]
    fn sparse_objects_parse_with_defaults() {
        let ev = RemoteEvent::parse(r#"{"type":"event","tracer":"x","extra":[1]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.tracer, "x");
        assert_eq!(ev.ts_ns, 0);
        assert!(RemoteEvent::parse("42").is_err());
        assert!(RemoteEvent::parse(r#"{"ts_ns":"x"}"#).is_err());
    }
}
