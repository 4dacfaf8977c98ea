//! Printing what the agents traced: host nettrace's text lines with the pod
//! and node appended, or its JSON objects with `"pod"` and `"node"` keys.
//!
//! Output goes to a writer thread through a bounded queue
//! ([`crate::console::Pipe`]): when stdout is not read fast enough, what
//! does not fit is dropped and counted, and the session goes on reading the
//! agents.

use std::sync::Arc;

use nettrace_common::format::{LossStats, TextOptions};
use nettrace_common::protocol::{Annotation, Lost};
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
