//! Printing what the agents traced: host nettrace's text lines with the pod
//! and node appended, or its JSON objects with `"pod"` and `"node"` keys.
//!
//! Output goes to a writer thread through a bounded queue
//! ([`crate::console::Pipe`]): when stdout is not read fast enough, what
//! does not fit is dropped and counted, and the session goes on reading the
//! agents.

use std::sync::Arc;

use nettrace_common::format::{LossStats, TextOptions};
use nettrace_common::pcapng::{Interface, Mark, Notes, Record, Writer};
use nettrace_common::protocol::{Annotation, Clock, Lost};
use nettrace_common::remote::{nat_json, write_remote_event, write_remote_timeline};

use crate::cli::OutputFormat;
use crate::console::Pipe;
use nettrace_common::diag::{DiagKey, Problem, Summary};

use crate::join::Joined;
use crate::stream::Item;

/// Something to print, from one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Printable {
    /// One event.
    Event(usize, Box<Item>),
    /// One timeline block.
    Timeline(usize, String, Vec<Item>),
    /// One packet's timeline blocks from several nodes, joined.
    Joined(Box<Joined>),
    /// Loss counters (JSON output only).
    Lost(usize, Lost),
}

/// Formats and counts output.
pub struct Output {
    format: OutputFormat,
    text: TextOptions,
    nodes: Vec<String>,
    count: Option<u64>,
    printed: u64,
    buf: String,
    /// Events rendered into `buf`.
    buf_events: u64,
    out: Arc<Pipe>,
    /// `--diag`: what went wrong, over all nodes.
    summary: Option<Summary>,
    /// `--pcap`: every event printed, as a packet.
    pcap: Option<Pcap>,
    /// Whether lines are printed (not with `--pcap -`: stdout is the pcap).
    lines: bool,
}

/// The pcap-ng stream of `--pcap`, all nodes merged.
struct Pcap {
    writer: Writer,
    out: Arc<Pipe>,
    /// Each node's clock (from its `hello`), to put its times on Unix time.
    clocks: Vec<Clock>,
    buf: Vec<u8>,
    /// Packets in `buf`.
    buf_events: u64,
    /// What the writer had written at the last hand-over.
    mark: Mark,
}

impl Pcap {
    /// Appends one node's event as a packet, with the NAT lines printed
    /// before it.
    fn add(&mut self, nodes: &[String], node: usize, item: &Item, nat: &[String]) {
        let ev = &item.event;
        let node_name = nodes.get(node).map(String::as_str).unwrap_or("?");
        let pod = item.annotation.as_ref().map(|a| {
            let mut s = format!("{}/{}/{}", a.namespace, a.pod, a.container);
            if let Some(i) = &a.host_ifname {
                s.push_str(" via ");
                s.push_str(i);
            }
            s
        });
        let rule = ev.nft.as_ref().map(|r| {
            let mut s = String::new();
            r.write_line(&mut s);
            s
        });
        let bytes = ev.captured();
        let comments = Notes {
            tracer: &ev.tracer,
            group: &ev.group,
            skb: &ev.skb,
            ifindex: ev.ifindex,
            ifname: ev.ifname.as_deref().unwrap_or(""),
            netns: ev.netns,
            pid: ev.pid,
            comm: &ev.comm,
            summary: &ev.summary,
            drop_reason: ev.drop_reason.as_deref(),
            location: ev.location.as_deref(),
            ret: ev.ret.as_deref(),
            nat,
            ct: ev.ct.as_ref(),
            rule: rule.as_deref(),
            stack: ev.stack.as_deref(),
            pod: pod.as_deref(),
            node: Some(node_name),
            no_bytes: bytes.is_none(),
        }
        .comments();
        let place = match &item.annotation {
            Some(a) => format!("pod/{}/{} node/{node_name}", a.namespace, a.pod),
            None => format!("node/{node_name}"),
        };
        let iface = Interface::new(
            ev.ifname.as_deref().unwrap_or(""),
            ev.ifindex,
            ev.netns,
            &place,
        );
        let clock = self.clocks.get(node).copied().unwrap_or_default();
        self.writer.packet(
            &mut self.buf,
            &Record {
                interface: &iface,
                unix_ns: clock.unix_ns(ev.ts_ns),
                bytes: bytes.as_ref(),
                len: ev.len,
                comments: &comments,
            },
        );
        self.buf_events += 1;
    }

    /// Hands what was formatted to the writer (dropped and counted when
    /// its queue is full: then the interfaces in it are described again).
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.buf);
        let events = std::mem::take(&mut self.buf_events);
        if self.out.send_bytes(bytes, events) {
            self.mark = self.writer.mark();
        } else {
            self.writer.rollback(self.mark);
        }
    }
}

/// The NAT lines before each event of one packet's events, as the text
/// prints them.
fn nat_lines<'a>(events: impl IntoIterator<Item = &'a Item>) -> Vec<Vec<String>> {
    let mut tracker = nettrace_common::nat::Tracker::default();
    events
        .into_iter()
        .map(|i| {
            let now = (!i.event.from_sk)
                .then(|| nettrace_common::nat::Endpoints::of_remote(&i.event.pkt))
                .flatten();
            tracker
                .next(now)
                .iter()
                .map(|n| {
                    let mut s = String::new();
                    n.write_line(&mut s);
                    s
                })
                .collect()
        })
        .collect()
}

/// How many events a printable holds.
fn events_in(p: &Printable) -> u64 {
    match p {
        Printable::Event(..) => 1,
        Printable::Timeline(_, _, items) => items.len() as u64,
        Printable::Joined(j) => j.events.len() as u64,
        Printable::Lost(..) => 0,
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut String, s: &str) {
    // Serializing a string cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// The agent's event object with `"pod"` (when annotated) and `"node"` (when
/// given) added before its closing brace.
pub fn annotated_json(raw: &str, ann: Option<&Annotation>, node: Option<&str>) -> String {
    let raw = raw.trim();
    let body = raw.strip_suffix('}').unwrap_or(raw);
    let mut out = String::with_capacity(raw.len() + 96);
    out.push_str(body);
    let empty = body.trim_end().ends_with('{');
    let mut sep = if empty { "" } else { "," };
    if let Some(a) = ann {
        out.push_str(sep);
        out.push_str("\"pod\":{\"namespace\":");
        push_str(&mut out, &a.namespace);
        out.push_str(",\"name\":");
        push_str(&mut out, &a.pod);
        out.push_str(",\"container\":");
        push_str(&mut out, &a.container);
        if let Some(ifname) = &a.host_ifname {
            out.push_str(",\"host_ifname\":");
            push_str(&mut out, ifname);
        }
        out.push('}');
        sep = ",";
    }
    if let Some(n) = node {
        out.push_str(sep);
        out.push_str("\"node\":");
        push_str(&mut out, n);
    }
    out.push('}');
    out
}

impl Output {
    /// `nodes` are the node names by index; the node is named in text lines
    /// only when there are several.
    pub fn new(
        format: OutputFormat,
        text: TextOptions,
        nodes: Vec<String>,
        count: Option<u64>,
        out: Arc<Pipe>,
    ) -> Self {
        Output {
            format,
            text,
            nodes,
            count,
            printed: 0,
            buf: String::new(),
            buf_events: 0,
            out,
            summary: None,
            pcap: None,
            lines: true,
        }
    }

    /// `--pcap`: every event printed also goes to `out` as a packet of one
    /// pcap-ng stream (at most `snaplen` bytes each); with `lines` false,
    /// nothing else is printed (`--pcap -`: `out` is stdout).
    pub fn with_pcap(mut self, out: Arc<Pipe>, snaplen: u16, lines: bool) -> Self {
        let mut writer = Writer::new(
            concat!("kubectl-nettrace ", env!("CARGO_PKG_VERSION")),
            snaplen,
        );
        // The header right away: a reader (wireshark -k -i -) starts at once.
        let mut header = Vec::new();
        writer.start(&mut header);
        out.send_bytes(header, 0);
        self.pcap = Some(Pcap {
            mark: writer.mark(),
            writer,
            out,
            clocks: vec![Clock::default(); self.nodes.len()],
            buf: Vec::new(),
            buf_events: 0,
        });
        self.lines = lines;
        self
    }

    /// A node's clock (its `hello`), for the pcap's Unix times.
    pub fn set_clock(&mut self, node: usize, clock: Clock) {
        if let Some(c) = self.pcap.as_mut().and_then(|p| p.clocks.get_mut(node)) {
            *c = clock;
        }
    }

    /// `--pcap`: the packets of one printable.
    fn render_pcap(&mut self, p: &Printable) {
        let Some(pcap) = self.pcap.as_mut() else {
            return;
        };
        if !pcap.out.has_room(pcap.buf.len() + 1) {
            pcap.out.count_dropped(events_in(p));
            return;
        }
        match p {
            Printable::Event(n, item) => pcap.add(&self.nodes, *n, item, &[]),
            Printable::Timeline(n, _, items) => {
                for (item, nat) in items.iter().zip(nat_lines(items)) {
                    pcap.add(&self.nodes, *n, item, &nat);
                }
            }
            Printable::Joined(j) => {
                let nats = nat_lines(j.events.iter().map(|(_, i)| i));
                for ((n, item), nat) in j.events.iter().zip(nats) {
                    pcap.add(&self.nodes, *n, item, &nat);
                }
            }
            Printable::Lost(..) => {}
        }
    }

    /// `--diag`: sum up the problems of what is printed, for [`Output::write_summary`].
    pub fn with_diag(mut self, diag: bool) -> Self {
        self.summary = diag.then(Summary::new);
        self
    }

    /// Adds the problems of one node's events to the summary, each placed
    /// at its node and pod (or namespace).
    fn tally<'a>(&mut self, items: impl IntoIterator<Item = (usize, &'a Item)>) {
        let Some(summary) = self.summary.as_mut() else {
            return;
        };
        for (node, item) in items {
            let ev = &item.event;
            let Some(kind) = Problem::of_event(
                &ev.tracer,
                ev.drop_reason.as_deref(),
                ev.location.as_deref(),
            ) else {
                continue;
            };
            let node = self.nodes.get(node).map(String::as_str).unwrap_or("?");
            let place = match &item.annotation {
                Some(a) => format!("{node} {}/{}", a.namespace, a.pod),
                None => format!("{node} netns {}", ev.netns),
            };
            summary.add(
                DiagKey {
                    kind,
                    place,
                    rule: ev.nft.as_ref().map(|r| r.short()),
                },
                ev.ts_ns,
            );
        }
    }

    /// The `--diag` summary (text table, or JSON rows), once, at the end.
    pub fn write_summary(&mut self) {
        let Some(summary) = self.summary.take() else {
            return;
        };
        if !self.lines {
            // --pcap -: stdout carries the pcap only
            return;
        }
        let mut text = String::new();
        summary.write(&mut text, self.format == OutputFormat::Json);
        self.flush();
        self.out.send_control(text);
    }

    /// Events dropped so far because stdout was not read fast enough.
    pub fn dropped(&self) -> u64 {
        self.out.dropped()
    }

    /// Why stdout cannot be written any more (its reader went away).
    pub fn failed(&self) -> Option<String> {
        self.out.error()
    }

    /// True once `--count` events (or blocks) were printed.
    pub fn done(&self) -> bool {
        self.count.is_some_and(|c| self.printed >= c)
    }

    fn text_node(&self, node: usize) -> Option<&str> {
        (self.nodes.len() > 1)
            .then(|| self.nodes.get(node).map(String::as_str))
            .flatten()
    }

    /// Appends the output of one item to the internal buffer (nothing once
    /// `--count` is reached).
    pub fn render(&mut self, p: &Printable) {
        if self.done() && !matches!(p, Printable::Lost(..)) {
            return;
        }
        // (counted even when stdout drops it)
        match p {
            Printable::Event(n, item) => self.tally([(*n, item.as_ref())]),
            Printable::Timeline(n, _, items) => self.tally(items.iter().map(|i| (*n, i))),
            Printable::Joined(j) => self.tally(j.events.iter().map(|(n, i)| (*n, i))),
            Printable::Lost(..) => {}
        }
        let events = events_in(p);
        if events > 0 {
            self.render_pcap(p);
        }
        if !self.lines {
            // --pcap -: the pcap is the output
            if events > 0 {
                self.printed += 1;
            }
            return;
        }
        if events > 0 && !self.out.has_room(self.buf.len() + 1) {
            // The reader does not keep up: what would be dropped anyway is
            // not formatted. It counts towards --count, as printed events
            // do (the host's nettrace does the same).
            self.out.count_dropped(events);
            self.printed += 1;
            return;
        }
        self.buf_events += events;
        let mut buf = std::mem::take(&mut self.buf);
        match (p, self.format) {
            (Printable::Event(n, item), OutputFormat::Text) => {
                write_remote_event(
                    &mut buf,
                    &item.event,
                    item.annotation.as_ref(),
                    self.text_node(*n),
                    self.text,
                );
                self.printed += 1;
            }
            (Printable::Event(n, item), OutputFormat::Json) => {
                let node = self.nodes.get(*n).map(String::as_str);
                buf.push_str(&annotated_json(&item.raw, item.annotation.as_ref(), node));
                buf.push('\n');
                self.printed += 1;
            }
            (Printable::Timeline(n, skb, items), OutputFormat::Text) => {
                let node = self.text_node(*n);
                write_remote_timeline(
                    &mut buf,
                    skb,
                    items
                        .iter()
                        .map(|i| (&i.event, i.annotation.as_ref(), node)),
                    None,
                    self.text,
                );
                self.printed += 1;
            }
            (Printable::Timeline(n, skb, items), OutputFormat::Json) => {
                buf.push_str("{\"type\":\"timeline\",\"node\":");
                push_str(
                    &mut buf,
                    self.nodes.get(*n).map(String::as_str).unwrap_or(""),
                );
                buf.push_str(",\"skb\":");
                push_str(&mut buf, skb);
                buf.push_str(",\"events\":[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        buf.push(',');
                    }
                    buf.push_str(&annotated_json(&item.raw, item.annotation.as_ref(), None));
                }
                buf.push(']');
                buf.push_str(&nat_json(items.iter().map(|i| &i.event)));
                buf.push_str("}\n");
                self.printed += 1;
            }
            (Printable::Joined(j), OutputFormat::Text) => {
                let lost = j.lost.as_ref().map(|l| l.line(&self.nodes));
                let nodes = &self.nodes;
                write_remote_timeline(
                    &mut buf,
                    &j.skb,
                    j.events.iter().map(|(n, i)| {
                        (
                            &i.event,
                            i.annotation.as_ref(),
                            nodes.get(*n).map(String::as_str),
                        )
                    }),
                    lost.as_deref(),
                    self.text,
                );
                self.printed += 1;
            }
            (Printable::Joined(j), OutputFormat::Json) => {
                self.joined_json(&mut buf, j);
                self.printed += 1;
            }
            (Printable::Lost(n, l), OutputFormat::Json) => {
                buf.push_str("{\"type\":\"lost\",\"node\":");
                push_str(
                    &mut buf,
                    self.nodes.get(*n).map(String::as_str).unwrap_or(""),
                );
                buf.push_str(&format!(
                    ",\"events\":{},\"skb_map_full\":{},\"stack_failed\":{},\"matched\":{},\"rate_limited\":{}",
                    l.events, l.skb_map_full, l.stack_failed, l.matched, l.rate_limited
                ));
                if l.bytes_failed > 0 {
                    buf.push_str(&format!(",\"bytes_failed\":{}", l.bytes_failed));
                }
                buf.push_str("}\n");
            }
            (Printable::Lost(..), OutputFormat::Text) => {}
        }
        self.buf = buf;
    }

    /// A joined block as one `timeline` object: `node` (the first node),
    /// `nodes` (all, in order of appearance), each event with its `node`,
    /// and `lost_between` when the packet was lost between nodes.
    fn joined_json(&self, buf: &mut String, j: &Joined) {
        let name = |n: usize| self.nodes.get(n).map(String::as_str).unwrap_or("");
        let mut order: Vec<usize> = Vec::new();
        for (n, _) in &j.events {
            if !order.contains(n) {
                order.push(*n);
            }
        }
        buf.push_str("{\"type\":\"timeline\",\"node\":");
        push_str(buf, order.first().map(|&n| name(n)).unwrap_or(""));
        buf.push_str(",\"nodes\":[");
        for (k, &n) in order.iter().enumerate() {
            if k > 0 {
                buf.push(',');
            }
            push_str(buf, name(n));
        }
        buf.push_str("],\"skb\":");
        push_str(buf, &j.skb);
        buf.push_str(",\"events\":[");
        for (k, (n, item)) in j.events.iter().enumerate() {
            if k > 0 {
                buf.push(',');
            }
            buf.push_str(&annotated_json(
                &item.raw,
                item.annotation.as_ref(),
                Some(name(*n)),
            ));
        }
        buf.push(']');
        buf.push_str(&nat_json(j.events.iter().map(|(_, i)| &i.event)));
        if let Some(l) = &j.lost {
            buf.push_str(",\"lost_between\":{\"from\":");
            push_str(buf, name(l.from));
            buf.push_str(",\"to\":");
            push_str(buf, name(l.to));
            buf.push_str(",\"last_seen\":");
            push_str(buf, &l.last_seen);
            buf.push('}');
        }
        buf.push_str("}\n");
    }

    /// Takes what was rendered so far.
    #[cfg(test)]
    pub fn take(&mut self) -> String {
        self.buf_events = 0;
        std::mem::take(&mut self.buf)
    }

    /// Renders and hands to stdout at once.
    pub fn print(&mut self, p: &Printable) {
        self.render(p);
        self.flush();
    }

    /// Hands what was rendered to the stdout writer; drops it (counted) when
    /// its queue is full. Never blocks.
    pub fn flush(&mut self) {
        if let Some(p) = self.pcap.as_mut() {
            p.flush();
        }
        if self.buf.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.buf);
        let events = std::mem::take(&mut self.buf_events);
        if events == 0 {
            // loss records only: small, kept when the events are dropped
            self.out.send_control(text);
        } else {
            self.out.send(text, events);
        }
    }
}

/// The loss counters of the protocol as the host's [`LossStats`].
pub fn loss_stats(l: &Lost) -> LossStats {
    LossStats {
        ringbuf_full: l.events,
        skb_map_full: l.skb_map_full,
        stack_failed: l.stack_failed,
        matched: l.matched,
        rate_limited: l.rate_limited,
        bytes_failed: l.bytes_failed,
    }
}

/// Whether `now` shows losses `before` did not.
pub fn loss_grew(before: &Lost, now: &Lost) -> bool {
    now.events > before.events
        || now.skb_map_full > before.skb_map_full
        || now.stack_failed > before.stack_failed
        || now.rate_limited > before.rate_limited
        || now.bytes_failed > before.bytes_failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testing::Capture;
    use nettrace_common::protocol::Clock;
    use nettrace_common::remote::RemoteEvent;

    fn pipe() -> Arc<Pipe> {
        Pipe::start("test", 1 << 20, Capture::default())
    }

    const RAW: &str = r#"{"type":"event","time":"1.000000","ts_ns":1000000000,"tracer":"ip_rcv","group":"ip-in","skb":"ffff888100000000","netns":1,"ifindex":2,"ifname":"eth0","pid":3,"comm":"ping","len":84,"summary":"ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1"}"#;

    fn item(ann: Option<Annotation>) -> Item {
        Item {
            raw: RAW.into(),
            event: RemoteEvent::parse(RAW).unwrap_or_default(),
            annotation: ann,
        }
    }

    fn ann(host: Option<&str>) -> Annotation {
        Annotation {
            namespace: "shop".into(),
            pod: "client".into(),
            container: "app".into(),
            host_ifname: host.map(String::from),
        }
    }

    #[test]
    fn json_gets_pod_and_node_keys() {
        let s = annotated_json(RAW, Some(&ann(Some("veth1"))), Some("w1"));
        assert!(
            s.starts_with(&RAW[..RAW.len() - 1]),
            "the agent's bytes are kept: {s}"
        );
        assert!(s.ends_with(r#","pod":{"namespace":"shop","name":"client","container":"app","host_ifname":"veth1"},"node":"w1"}"#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(v["pod"]["name"], "client");
        assert_eq!(annotated_json(RAW, None, None), RAW);
        assert_eq!(
            annotated_json("{}", None, Some("w\"1")),
            r#"{"node":"w\"1"}"#
        );
    }

    #[test]
    fn text_names_the_node_only_with_several_nodes_and_count_stops_output() {
        let mut one = Output::new(
            OutputFormat::Text,
            TextOptions::default(),
            vec!["w1".into()],
            Some(2),
            pipe(),
        );
        one.render(&Printable::Event(0, Box::new(item(Some(ann(None))))));
        assert_eq!(
            one.take(),
            "1.000000: [ip_rcv                  ]: ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1, pod: shop/client/app\n"
        );
        one.render(&Printable::Event(0, Box::new(item(None))));
        assert!(one.done());
        one.render(&Printable::Event(0, Box::new(item(None))));
        assert_eq!(one.take().lines().count(), 1, "nothing after --count");
        let mut two = Output::new(
            OutputFormat::Text,
            TextOptions::default(),
            vec!["w1".into(), "w2".into()],
            None,
            pipe(),
        );
        two.render(&Printable::Timeline(
            1,
            "ffff888100000000".into(),
            vec![item(None)],
        ));
        assert_eq!(
            two.take(),
            "<------------------- skb: ffff888100000000 ---------------------->\n\
             1.000000: [ip_rcv                  ]: ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1, node: w2\n\n"
        );
    }

    #[test]
    fn json_timelines_and_lost_records() {
        let mut o = Output::new(
            OutputFormat::Json,
            TextOptions::default(),
            vec!["w1".into()],
            None,
            pipe(),
        );
        o.render(&Printable::Timeline(
            0,
            "ffff888100000000".into(),
            vec![item(Some(ann(None)))],
        ));
        o.render(&Printable::Lost(
            0,
            Lost {
                events: 2,
                matched: 9,
                ..Lost::default()
            },
        ));
        let s = o.take();
        let lines: Vec<serde_json::Value> = s
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        assert_eq!(lines[0]["type"], "timeline");
        assert_eq!(lines[0]["node"], "w1");
        assert_eq!(lines[0]["events"][0]["pod"]["container"], "app");
        assert_eq!(lines[1]["type"], "lost");
        assert_eq!(lines[1]["node"], "w1");
        assert_eq!(lines[1]["events"], 2);
        assert_eq!(lines[1]["matched"], 9);
    }

    #[tokio::test]
    async fn pcap_merges_the_nodes_on_unix_time_with_their_pods() {
        const WITH_BYTES: &str = r#"{"type":"event","time":"1.000000","ts_ns":1000000000,"tracer":"kfree_skb","group":"life","skb":"ffff888100000000","netns":7,"ifindex":2,"ifname":"eth0","pid":3,"comm":"ping","len":84,"summary":"ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1","drop_reason":"NO_SOCKET","link":"raw_ip","caplen":4,"origlen":84,"bytes":"45000054"}"#;
        let with_bytes = |ann: Option<Annotation>| Item {
            raw: WITH_BYTES.into(),
            event: RemoteEvent::parse(WITH_BYTES).unwrap_or_default(),
            annotation: ann,
        };
        let stdout = Capture::default();
        let file = Capture::default();
        let pcap = Pipe::start("pcap", 1 << 20, file.clone());
        let mut o = Output::new(
            OutputFormat::Text,
            TextOptions::default(),
            vec!["n1".into(), "n2".into()],
            None,
            Pipe::start("stdout", 1 << 20, stdout.clone()),
        )
        .with_pcap(pcap.clone(), 128, true);
        o.set_clock(
            0,
            Clock {
                monotonic_ns: 1_000_000_000,
                realtime_ns: 1_700_000_000_000_000_000,
            },
        );
        o.set_clock(
            1,
            Clock {
                monotonic_ns: 500_000_000,
                realtime_ns: 1_700_000_000_000_000_000,
            },
        );
        o.print(&Printable::Event(0, Box::new(with_bytes(Some(ann(None))))));
        o.print(&Printable::Timeline(
            1,
            "ffff888100000000".into(),
            vec![item(None), with_bytes(None)],
        ));
        assert_eq!(pcap.finish().await, 0);
        let b = file.data.lock().map(|d| d.clone()).unwrap_or_default();
        // the blocks: type and body
        let mut blocks = Vec::new();
        let mut p = 0;
        while p + 8 <= b.len() {
            let ty = u32::from_ne_bytes(b[p..p + 4].try_into().unwrap_or_default());
            let len = u32::from_ne_bytes(b[p + 4..p + 8].try_into().unwrap_or_default()) as usize;
            blocks.push((ty, b[p + 8..p + len - 4].to_vec()));
            p += len;
        }
        assert_eq!(p, b.len());
        let types: Vec<u32> = blocks.iter().map(|x| x.0).collect();
        // header; n1's pod interface and its packet; on n2 a packet without
        // bytes (netns 1) and one with them (netns 7), each after its interface
        assert_eq!(types, [0x0A0D_0D0A, 1, 6, 1, 6, 1, 6]);
        let text = |i: usize| String::from_utf8_lossy(&blocks[i].1).into_owned();
        assert!(
            text(1).contains("eth0@7 pod/shop/client node/n1"),
            "{}",
            text(1)
        );
        assert!(text(3).contains("eth0@1 node/n2"), "{}", text(3));
        assert!(text(5).contains("eth0@7 node/n2"), "{}", text(5));
        let ts = |i: usize| {
            let body = &blocks[i].1;
            let hi = u32::from_ne_bytes(body[4..8].try_into().unwrap_or_default());
            let lo = u32::from_ne_bytes(body[8..12].try_into().unwrap_or_default());
            (u64::from(hi) << 32) | u64::from(lo)
        };
        // ts_ns 1 s on both nodes; n2's monotonic clock started 0.5 s later
        assert_eq!(ts(2), 1_700_000_000_000_000_000);
        assert_eq!(ts(6), 1_700_000_000_500_000_000);
        assert_eq!(&blocks[6].1[20..24], &[0x45, 0, 0, 0x54]);
        assert!(text(2).contains("pod shop/client/app"));
        assert!(text(2).contains("drop reason NO_SOCKET"));
        assert!(text(4).contains("no packet bytes"));
        // the lines still go to stdout
        assert_eq!(o.dropped(), 0);
    }

    #[tokio::test]
    async fn a_stalled_stdout_drops_counts_and_resumes() {
        let cap = Capture::default();
        cap.stall(true);
        let line_len = {
            let mut o = Output::new(
                OutputFormat::Text,
                TextOptions::default(),
                vec!["w1".into()],
                None,
                pipe(),
            );
            o.render(&Printable::Event(0, Box::new(item(None))));
            o.take().len()
        };
        // room for ten lines
        let out = Pipe::start("test", 10 * line_len, cap.clone());
        let mut o = Output::new(
            OutputFormat::Text,
            TextOptions::default(),
            vec!["w1".into()],
            None,
            out.clone(),
        );
        for _ in 0..25 {
            o.print(&Printable::Event(0, Box::new(item(None))));
        }
        o.print(&Printable::Timeline(
            0,
            "ffff888100000000".into(),
            vec![item(None), item(None)],
        ));
        assert_eq!(o.dropped(), 17, "15 events and a block of 2");
        assert!(o.failed().is_none());
        cap.stall(false);
        // the writer empties its queue: there is room again
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !out.has_room(line_len) {
            assert!(std::time::Instant::now() < deadline, "the writer is stuck");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        o.print(&Printable::Event(0, Box::new(item(Some(ann(None))))));
        assert_eq!(out.finish().await, 0);
        let text = cap.text();
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(text
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(", pod: shop/client/app")));
        assert_eq!(o.dropped(), 17);
    }
}
