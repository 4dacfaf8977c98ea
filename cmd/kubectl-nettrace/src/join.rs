//! One timeline per packet across nodes.
//!
//! Each agent groups what its node saw of a packet into a block (one skb
//! context). A packet that crosses nodes therefore arrives as several
//! blocks: node 1's, up to the overlay or uplink transmit, and node 2's,
//! from the receive on. [`Joiner`] holds the blocks of all nodes for a
//! while and joins those that show the same packet — the same identity
//! ([`PacketId`]: addresses, protocol, ports, TCP sequence/ack/flags, ICMP
//! type/id/sequence) in any of their events, within [`JOIN_GAP_NS`] of each
//! other on the Unix time line — into one block in time order.
//!
//! Nodes that share one kernel (the same boot id: kind, k3d, this project's
//! bench) may both see an event; it is kept once ([`SeenOnce`] does the same
//! for events outside timelines).
//!
//! A joined block whose packet was headed to a pod of another traced node,
//! was last seen on its way there, and never showed up on that node, ends
//! with a `lost between NODE-A and NODE-B` line.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nettrace_common::filter::Filter;
use nettrace_common::protocol::{Annotation, Clock, ResolvedTarget};
use nettrace_common::remote::PacketId;

use crate::merge::unix_ns;
use crate::stream::Item;

/// How long the first block of a packet waits for the other nodes' blocks.
/// An agent sends a block when the skb ends, or once it has been idle for
/// `TIMELINE_IDLE_FLUSH` (1 s; checked every second), when the skb went on
/// into another node's scope: well within this.
pub const JOIN_HOLD: Duration = Duration::from_secs(3);

/// Blocks of one packet are at most this far apart in time (clocks of
/// different nodes included). Less than TCP's shortest retransmission
/// timeout (200 ms), so that a retransmission stays a packet of its own.
pub const JOIN_GAP_NS: i128 = 100_000_000;

/// A packet's events from all nodes, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The skb of its earliest event.
    pub skb: String,
    /// Each event with the index of the node that saw it.
    pub events: Vec<(usize, Item)>,
    /// Set when the packet was lost between two nodes.
    pub lost: Option<LostBetween>,
}

/// A packet that left one traced node for another and never arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostBetween {
    /// Node index it was last seen on.
    pub from: usize,
    /// Node index of its destination pod.
    pub to: usize,
    /// Where it was last seen: tracer, interface, encapsulation.
    pub last_seen: String,
}

impl LostBetween {
    /// The line that ends the block, with node names from `nodes`.
    pub fn line(&self, nodes: &[String]) -> String {
        let name = |i: usize| nodes.get(i).map(String::as_str).unwrap_or("?");
        format!(
            "lost between {} and {}: last seen on {} at {}",
            name(self.from),
            name(self.to),
            name(self.from),
            self.last_seen
        )
    }
}

/// One node's block, with the Unix time of each event.
#[derive(Debug)]
struct Part {
    node: usize,
    skb: String,
    items: Vec<(i128, Item)>,
}

#[derive(Debug)]
struct Group {
    parts: Vec<Part>,
    keys: HashSet<PacketId>,
    first: i128,
    last: i128,
    arrived: Instant,
}

/// Joins the timeline blocks of several nodes (see the module doc).
#[derive(Debug)]
pub struct Joiner {
    groups: Vec<Group>,
    hold: Duration,
    /// Per node, its clock.
    clocks: Vec<Clock>,
    /// Which nodes share a kernel, and which namespaces are whose.
    kernels: Kernels,
    /// The node each traced pod's address lives on.
    homes: HashMap<IpAddr, usize>,
    /// The agents' packet filter.
    filter: Filter,
}

impl Joiner {
    /// A joiner for `nodes` nodes, holding blocks for `hold`; `homes` gives
    /// the node of each pod address the trace involves, `filter` is the
    /// agents' packet filter.
    pub fn new(
        nodes: usize,
        hold: Duration,
        homes: HashMap<IpAddr, usize>,
        filter: Filter,
    ) -> Self {
        Joiner {
            groups: Vec::new(),
            hold,
            clocks: vec![Clock::default(); nodes],
            kernels: Kernels::new(nodes),
            homes,
            filter,
        }
    }

    /// Records a node's clock, boot id and network namespace (from its
    /// `hello`).
    pub fn hello(&mut self, node: usize, clock: Clock, boot_id: &str, netns: u64) {
        if let Some(c) = self.clocks.get_mut(node) {
            *c = clock;
        }
        self.kernels.hello(node, boot_id, netns);
    }

    /// Which nodes share a kernel, and which namespaces are whose.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// The same, to record what is learnt on the way (the pods each agent
    /// resolved).
    pub fn kernels_mut(&mut self) -> &mut Kernels {
        &mut self.kernels
    }

    /// The clock to convert a node's times with: on a shared kernel, the
    /// first of its nodes' (one monotonic clock, so one conversion keeps
    /// their events in their true order).
    pub fn clock_of(&self, node: usize) -> Clock {
        let first = self.kernels.first_sharing(node).unwrap_or(node);
        self.clocks.get(first).copied().unwrap_or_default()
    }

    /// Adds one node's block, arrived at `now`.
    pub fn push(&mut self, node: usize, skb: String, items: Vec<Item>, now: Instant) {
        let clock = self.clock_of(node);
        let items: Vec<(i128, Item)> = items
            .into_iter()
            .map(|i| (unix_ns(i.event.ts_ns, &clock), i))
            .collect();
        let keys: HashSet<PacketId> = items
            .iter()
            .map(|(_, i)| &i.event.pkt)
            .filter(|k| k.is_known())
            .cloned()
            .collect();
        let first = items.iter().map(|(t, _)| *t).min().unwrap_or(0);
        let last = items.iter().map(|(t, _)| *t).max().unwrap_or(0);
        let part = Part { node, skb, items };
        let mut group = Group {
            parts: vec![part],
            keys,
            first,
            last,
            arrived: now,
        };
        // Every held group of other nodes that shows the same packet at
        // about the same time joins this one.
        let mut i = 0;
        while i < self.groups.len() {
            let g = &self.groups[i];
            let same = !group.keys.is_disjoint(&g.keys)
                && first <= g.last + JOIN_GAP_NS
                && last + JOIN_GAP_NS >= g.first;
            if same {
                let g = self.groups.swap_remove(i);
                group.first = group.first.min(g.first);
                group.last = group.last.max(g.last);
                group.arrived = group.arrived.min(g.arrived);
                group.keys.extend(g.keys);
                group.parts.extend(g.parts);
            } else {
                i += 1;
            }
        }
        self.groups.push(group);
    }

    /// The packets whose first block has waited the hold, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<Joined> {
        let hold = self.hold;
        let (due, kept): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|g| now.saturating_duration_since(g.arrived) >= hold);
        self.groups = kept;
        self.finish(due)
    }

    /// Everything held, earliest first.
    pub fn drain(&mut self) -> Vec<Joined> {
        let all = std::mem::take(&mut self.groups);
        self.finish(all)
    }

    /// When the earliest held group falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.groups.iter().map(|g| g.arrived + self.hold).min()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn finish(&self, mut groups: Vec<Group>) -> Vec<Joined> {
        groups.sort_by_key(|g| g.first);
        groups.into_iter().map(|g| self.join(g)).collect()
    }

    fn join(&self, g: Group) -> Joined {
        let mut parts = g.parts;
        parts.sort_by_key(|p| p.items.first().map(|(t, _)| *t).unwrap_or(0));
        let skb = parts.first().map(|p| p.skb.clone()).unwrap_or_default();
        let mut events: Vec<(i128, usize, Item)> = parts
            .into_iter()
            .flat_map(|p| {
                let node = p.node;
                p.items.into_iter().map(move |(t, i)| (t, node, i))
            })
            .collect();
        // Stable: a node's own order stays for events at the same time.
        events.sort_by_key(|(t, _, _)| *t);
        // On a shared kernel every agent whose scope or following reaches
        // a hook reports it, each stamped by its own program a few µs
        // apart: the same hook hit is the same skb, tracer, place, length
        // and packet within DUP_WINDOW_NS, from another node of that
        // kernel. Each event is shown on the node it happened on.
        let mut kept: Vec<(i128, Vec<usize>, usize, Item)> = Vec::with_capacity(events.len());
        for (t, reporter, mut item) in events {
            let node = self.kernels.place(reporter, &mut item);
            let copy = kept
                .iter_mut()
                .rev()
                .take_while(|(kt, ..)| t - *kt <= DUP_WINDOW_NS)
                .find(|(_, reporters, _, kitem)| {
                    !reporters.contains(&reporter)
                        && reporters
                            .first()
                            .is_some_and(|&r| self.kernels.same(r, reporter))
                        && same_hit(&item, kitem)
                });
            match copy {
                Some((_, reporters, knode, kitem)) => {
                    reporters.push(reporter);
                    // the copy that names its pod, on that pod's node
                    if kitem.annotation.is_none() && item.annotation.is_some() {
                        *kitem = item;
                        *knode = node;
                    }
                }
                None => kept.push((t, vec![reporter], node, item)),
            }
        }
        let kept: Vec<(usize, Item)> = kept.into_iter().map(|(_, _, n, i)| (n, i)).collect();
        let lost = self.lost_between(&kept);
        Joined {
            skb,
            events: kept,
            lost,
        }
    }

    /// A packet last seen on one node, not dropped there, headed to a pod
    /// of another traced node that never saw it although that node's
    /// filter admits it.
    fn lost_between(&self, events: &[(usize, Item)]) -> Option<LostBetween> {
        let (from, last) = events.last()?;
        if last.event.drop_reason.is_some() {
            return None;
        }
        let pkt = &last.event.pkt;
        let (saddr, daddr) = (pkt.saddr?, pkt.daddr?);
        let to = *self.homes.get(&daddr)?;
        if to == *from || events.iter().any(|(n, _)| *n == to) {
            return None;
        }
        let ports = pkt.sport.zip(pkt.dport);
        if !self.filter.matches_endpoints(Some((saddr, daddr)), ports) {
            // e.g. after a DNAT: that node's agent does not look for it
            return None;
        }
        let ev = &last.event;
        let mut at = ev.tracer.clone();
        let mut detail: Vec<String> = Vec::new();
        if let Some(ifname) = ev.ifname.as_deref().filter(|n| !n.is_empty()) {
            detail.push(ifname.to_string());
        }
        if let Some(t) = &ev.tunnel {
            detail.push(t.describe());
        }
        if !detail.is_empty() {
            at = format!("{at} ({})", detail.join(", "));
        }
        Some(LostBetween {
            from: *from,
            to,
            last_seen: at,
        })
    }
}

/// Copies of one hook hit reported by several agents of one kernel are at
/// most this far apart (each agent's program stamps its own copy).
pub const DUP_WINDOW_NS: i128 = 1_000_000;

/// Whether two events are copies of one hook hit (times aside).
fn same_hit(a: &Item, b: &Item) -> bool {
    let (a, b) = (&a.event, &b.event);
    a.skb == b.skb
        && a.tracer == b.tracer
        && a.netns == b.netns
        && a.ifindex == b.ifindex
        && a.len == b.len
        && a.pkt == b.pkt
}

/// Which nodes share a kernel (their agents reported the same boot id), and
/// what each node's agent knows of its namespaces: its own (from its
/// `hello`), its pods' and their host-side veths (from what it resolved, or
/// annotated).
///
/// On a shared kernel an agent that follows a packet out of its pods
/// follows it into the other nodes' namespaces too: [`Kernels::place`]
/// puts such an event on the node it happened on, with that node's pod.
#[derive(Debug, Clone, Default)]
pub struct Kernels {
    ids: Vec<String>,
    /// Each node's own network namespace.
    own: Vec<u64>,
    /// Network namespace → the nodes that know it, with its pod.
    claims: HashMap<u64, Vec<(usize, Option<Annotation>)>>,
    /// (node, ifindex in the node's namespace) → the pod of that veth.
    veths: HashMap<(usize, u32), Annotation>,
}

impl Kernels {
    /// `nodes` nodes, none reported yet.
    pub fn new(nodes: usize) -> Self {
        Kernels {
            ids: vec![String::new(); nodes],
            own: vec![0; nodes],
            ..Kernels::default()
        }
    }

    /// Records a node's boot id and own network namespace (0: unknown).
    pub fn hello(&mut self, node: usize, boot_id: &str, netns: u64) {
        if let Some(b) = self.ids.get_mut(node) {
            *b = boot_id.to_string();
        }
        if let Some(n) = self.own.get_mut(node) {
            *n = netns;
        }
        self.claim(node, netns, None);
    }

    /// Records what a node's agent resolved one of its pods to.
    pub fn resolved(&mut self, node: usize, r: &ResolvedTarget) {
        let Some((ann, host)) = r.annotations() else {
            return;
        };
        if let (Some(index), Some(host)) = (r.host_ifindex, host) {
            self.veths.insert((node, index), host);
        }
        if let Some(netns) = r.netns {
            self.claim(node, netns, Some(ann));
        }
    }

    /// Learns from an event a node's agent annotated: the pod's namespace,
    /// or the host-side veth in the node's, is that node's.
    pub fn annotated(&mut self, node: usize, item: &Item) {
        let Some(ann) = &item.annotation else {
            return;
        };
        if ann.host_ifname.is_some() {
            self.veths
                .entry((node, item.event.ifindex))
                .or_insert_with(|| ann.clone());
        } else if !self
            .claims
            .get(&item.event.netns)
            .is_some_and(|c| c.iter().any(|(n, p)| *n == node && p.is_some()))
        {
            self.claim(node, item.event.netns, Some(ann.clone()));
        }
    }

    /// Records that network namespace `netns` is `node`'s (0: unknown).
    pub fn claim(&mut self, node: usize, netns: u64, pod: Option<Annotation>) {
        if netns == 0 {
            return;
        }
        let claims = self.claims.entry(netns).or_default();
        match claims.iter_mut().find(|(n, _)| *n == node) {
            Some((_, p)) => {
                if pod.is_some() {
                    *p = pod;
                }
            }
            None => claims.push((node, pod)),
        }
    }

    /// Whether nodes `a` and `b` share a kernel (the same node does).
    pub fn same(&self, a: usize, b: usize) -> bool {
        a == b
            || self
                .ids
                .get(a)
                .is_some_and(|x| !x.is_empty() && self.ids.get(b) == Some(x))
    }

    /// The first node that shares `node`'s kernel (maybe itself).
    pub fn first_sharing(&self, node: usize) -> Option<usize> {
        (0..self.ids.len()).find(|&n| self.same(n, node))
    }

    /// Whether two nodes reported the same boot id.
    pub fn any_shared(&self) -> bool {
        let known: Vec<&String> = self.ids.iter().filter(|b| !b.is_empty()).collect();
        let distinct: HashSet<&&String> = known.iter().collect();
        distinct.len() < known.len()
    }

    /// The node an event reported by `reporter` happened on: the node of
    /// its kernel that knows its namespace (the reporter first), else the
    /// reporter. An event placed on another node gets that node's pod.
    pub fn place(&self, reporter: usize, item: &mut Item) -> usize {
        let ev = &item.event;
        let Some(claims) = self.claims.get(&ev.netns) else {
            return reporter;
        };
        if claims.iter().any(|(n, _)| *n == reporter) {
            return reporter;
        }
        let Some((node, pod)) = claims.iter().find(|(n, _)| self.same(*n, reporter)) else {
            return reporter;
        };
        if item.annotation.is_none() {
            item.annotation = pod.clone().or_else(|| {
                (self.own.get(*node) == Some(&ev.netns))
                    .then(|| self.veths.get(&(*node, ev.ifindex)).cloned())
                    .flatten()
            });
        }
        *node
    }
}

/// Keeps each event once when nodes share a kernel, outside timelines: of
/// the copies of one hook hit (see [`same_hit`]) that agents of one kernel
/// report, the first is shown, on the node it happened on. Remembers the
/// last [`SeenOnce::WINDOW`] events.
#[derive(Debug, Default)]
pub struct SeenOnce {
    recent: HashMap<HitKey, Vec<(u64, Vec<usize>)>>,
    order: VecDeque<HitKey>,
}

/// A hook hit's identity, times aside: kernel, skb, tracer, place, length,
/// packet.
type HitKey = (usize, String, String, u64, u32, u32, PacketId);

impl SeenOnce {
    /// How many recent events are remembered.
    pub const WINDOW: usize = 65536;

    /// The node to show an event reported by `reporter` on, or `None` for
    /// a copy of one already shown.
    pub fn admit(&mut self, kernels: &Kernels, reporter: usize, item: &mut Item) -> Option<usize> {
        let node = kernels.place(reporter, item);
        let ev = &item.event;
        let key: HitKey = (
            kernels.first_sharing(reporter).unwrap_or(reporter),
            ev.skb.clone(),
            ev.tracer.clone(),
            ev.netns,
            ev.ifindex,
            ev.len,
            ev.pkt.clone(),
        );
        let window = u64::try_from(DUP_WINDOW_NS).unwrap_or(u64::MAX);
        let hits = self.recent.entry(key.clone()).or_default();
        if let Some((_, reporters)) = hits
            .iter_mut()
            .find(|(ts, r)| !r.contains(&reporter) && ts.abs_diff(ev.ts_ns) <= window)
        {
            reporters.push(reporter);
            return None;
        }
        hits.push((ev.ts_ns, vec![reporter]));
        self.order.push_back(key);
        if self.order.len() > Self::WINDOW {
            if let Some(old) = self.order.pop_front() {
                if let Some(h) = self.recent.get_mut(&old) {
                    if h.len() <= 1 {
                        self.recent.remove(&old);
                    } else {
                        h.remove(0);
                    }
                }
            }
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettrace_common::remote::RemoteEvent;

    fn clock() -> Clock {
        Clock {
            monotonic_ns: 0,
            realtime_ns: 1_000_000_000_000,
        }
    }

    /// An ICMP echo request event of seq 1 from 10.244.1.2 to 10.244.2.3.
    fn ev(ts_ns: u64, tracer: &str, ifname: &str, skb: &str) -> Item {
        let raw = format!(
            r#"{{"type":"event","ts_ns":{ts_ns},"tracer":"{tracer}","skb":"{skb}","ifname":"{ifname}","pkt":{{"l3":"ipv4","saddr":"10.244.1.2","daddr":"10.244.2.3","proto":"icmp","icmp_type":8,"icmp_id":7,"icmp_seq":1}},"summary":"ICMP: 10.244.1.2 -> 10.244.2.3, ping request   , seq: 1"}}"#
        );
        Item {
            event: RemoteEvent::parse(&raw).unwrap_or_else(|e| panic!("{raw}: {e}")),
            raw,
            annotation: None,
        }
    }

    fn homes() -> HashMap<IpAddr, usize> {
        let mut h = HashMap::new();
        h.insert(
            "10.244.1.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            0,
        );
        h.insert(
            "10.244.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            1,
        );
        h
    }

    fn joiner(boots: [&str; 2]) -> Joiner {
        let mut j = Joiner::new(2, JOIN_HOLD, homes(), Filter::default());
        j.hello(0, clock(), boots[0], 11);
        j.hello(1, clock(), boots[1], 12);
        j
    }

    fn tracers(j: &Joined) -> Vec<(usize, &str)> {
        j.events
            .iter()
            .map(|(n, i)| (*n, i.event.tracer.as_str()))
            .collect()
    }

    #[test]
    fn blocks_of_two_nodes_join_in_time_order() {
        let t0 = Instant::now();
        let mut j = joiner(["a", "b"]);
        // node 2's block arrives first (its skb ended), node 1's later
        j.push(
            1,
            "ffff2".into(),
            vec![
                ev(2_000, "vxlan_rcv", "vxlan0", "ffff2"),
                ev(3_000, "kfree_skb", "eth0", "ffff2"),
            ],
            t0,
        );
        j.push(
            0,
            "ffff1".into(),
            vec![
                ev(1_000, "net_dev_queue", "eth0", "ffff1"),
                ev(1_500, "net_dev_xmit", "eth0", "ffff1"),
            ],
            t0 + Duration::from_secs(2),
        );
        assert!(j.pop_due(t0 + Duration::from_millis(2_999)).is_empty());
        let out = j.pop_due(t0 + JOIN_HOLD);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].skb, "ffff1");
        assert_eq!(
            tracers(&out[0]),
            [
                (0, "net_dev_queue"),
                (0, "net_dev_xmit"),
                (1, "vxlan_rcv"),
                (1, "kfree_skb")
            ]
        );
        assert_eq!(out[0].lost, None);
        assert!(j.is_empty());
    }

    #[test]
    fn other_packets_and_distant_times_stay_apart() {
        let t0 = Instant::now();
        let mut j = joiner(["a", "b"]);
        j.push(
            0,
            "ffff1".into(),
            vec![ev(1_000, "net_dev_queue", "eth0", "ffff1")],
            t0,
        );
        // same identity, but a retransmission's distance later
        j.push(
            1,
            "ffff2".into(),
            vec![ev(1_000 + 300_000_000, "ip_rcv", "eth0", "ffff2")],
            t0,
        );
        // another packet (seq 2) at the same time
        let mut other = ev(1_200, "ip_rcv", "eth0", "ffff3");
        other.event.pkt.icmp_seq = Some(2);
        j.push(1, "ffff3".into(), vec![other], t0);
        // the same flow and time, another IPv4 identification (two UDP
        // datagrams of one socket, say)
        let mut a = ev(5_000_000, "ip_rcv", "eth0", "ffff4");
        a.event.pkt.ip_id = Some(1);
        let mut b = a.clone();
        b.event.pkt.ip_id = Some(2);
        j.push(0, "ffff4".into(), vec![a], t0);
        j.push(1, "ffff5".into(), vec![b], t0);
        assert_eq!(j.drain().len(), 5);
    }

    #[test]
    fn a_shared_kernel_keeps_each_event_once_preferring_the_annotated_copy() {
        let t0 = Instant::now();
        let mut j = joiner(["same", "same"]);
        let mut annotated = ev(1_530, "ip_rcv", "eth0", "ffff1");
        annotated.annotation = Some(Annotation {
            namespace: "ns".into(),
            pod: "b".into(),
            container: "c".into(),
            host_ifname: None,
        });
        j.push(
            0,
            "ffff1".into(),
            vec![
                ev(1_000, "net_dev_queue", "eth0", "ffff1"),
                ev(1_500, "ip_rcv", "eth0", "ffff1"),
            ],
            t0,
        );
        j.push(
            1,
            "ffff1".into(),
            vec![annotated, ev(2_000, "kfree_skb", "eth0", "ffff1")],
            t0,
        );
        let out = j.drain();
        assert_eq!(out.len(), 1);
        assert_eq!(
            tracers(&out[0]),
            [(0, "net_dev_queue"), (1, "ip_rcv"), (1, "kfree_skb")]
        );
        assert!(out[0].events[1].1.annotation.is_some());
        // an event in node 2's own namespace, followed there by node 1's
        // agent, belongs to node 2
        let mut on2 = ev(1_000, "vxlan_rcv", "vxlan0", "ffff1");
        on2.event.netns = 12;
        j.push(0, "ffff1".into(), vec![on2.clone()], t0);
        j.push(1, "ffff1".into(), vec![on2], t0);
        assert_eq!(tracers(&j.drain()[0]), [(1, "vxlan_rcv")]);
    }

    #[test]
    fn a_packet_that_never_reaches_its_node_is_lost_between() {
        let t0 = Instant::now();
        let mut j = joiner(["a", "b"]);
        let mut xmit = ev(1_500, "net_dev_xmit", "eth0", "ffff1");
        xmit.event.tunnel = Some(nettrace_common::remote::RemoteTunnel {
            kind: "vxlan".into(),
            vni: 1,
        });
        j.push(
            0,
            "ffff1".into(),
            vec![ev(1_000, "net_dev_queue", "eth0", "ffff1"), xmit],
            t0,
        );
        let out = j.drain();
        let nodes = ["nt-node1".to_string(), "nt-node2".to_string()];
        assert_eq!(
            out[0].lost.as_ref().map(|l| l.line(&nodes)).as_deref(),
            Some("lost between nt-node1 and nt-node2: last seen on nt-node1 at net_dev_xmit (eth0, VXLAN vni 1)")
        );
        // dropped on node 1: not lost between
        let mut drop = ev(1_500, "kfree_skb", "eth0", "ffff1");
        drop.event.drop_reason = Some("NETFILTER_DROP".into());
        j.push(0, "ffff1".into(), vec![drop], t0);
        assert_eq!(j.drain()[0].lost, None);
        // rewritten to 10.244.2.3 (a DNAT) while the agents look for
        // 10.96.0.10: node 2's agent was not looking for it
        j.filter = Filter {
            daddr: "10.96.0.10".parse().ok(),
            ..Filter::default()
        };
        j.push(
            0,
            "ffff1".into(),
            vec![ev(1_500, "net_dev_xmit", "eth0", "ffff1")],
            t0,
        );
        assert_eq!(j.drain()[0].lost, None);
        j.filter = Filter::default();
        // headed somewhere no agent traces: nothing to say
        let mut away = ev(1_500, "net_dev_xmit", "eth0", "ffff1");
        away.event.pkt.daddr = "192.0.2.1".parse().ok();
        j.push(0, "ffff1".into(), vec![away], t0);
        assert_eq!(j.drain()[0].lost, None);
    }

    #[test]
    fn events_of_a_shared_kernel_are_kept_once() {
        let mut k = Kernels::new(3);
        k.hello(0, "k1", 10);
        assert!(!k.any_shared());
        k.hello(1, "k1", 11);
        k.hello(2, "k2", 10);
        assert!(k.any_shared());
        let mut s = SeenOnce::default();
        let mut e = ev(1_000, "ip_rcv", "eth0", "ffff1");
        assert_eq!(s.admit(&k, 0, &mut e.clone()), Some(0));
        e.event.ts_ns += 30_000;
        assert_eq!(
            s.admit(&k, 1, &mut e.clone()),
            None,
            "the same kernel, 30 µs later"
        );
        assert_eq!(
            s.admit(&k, 2, &mut e.clone()),
            Some(2),
            "another kernel's event"
        );
        e.event.ts_ns += 5_000_000;
        assert_eq!(s.admit(&k, 1, &mut e.clone()), Some(1), "a later hit");
        // in node 1's pod, reported by node 0 (which followed the packet
        // there): shown on node 1 with node 1's pod; node 1's copy is a copy
        k.resolved(
            1,
            &ResolvedTarget {
                target: nettrace_common::protocol::Target {
                    namespace: "ns".into(),
                    pod: "b".into(),
                    container: "c".into(),
                    ..Default::default()
                },
                netns: Some(77),
                ..ResolvedTarget::default()
            },
        );
        let mut in_b = ev(9_000_000, "ip_rcv", "eth0", "ffff1");
        in_b.event.netns = 77;
        let mut copy = in_b.clone();
        assert_eq!(s.admit(&k, 0, &mut in_b), Some(1));
        assert_eq!(in_b.annotation.map(|a| a.pod).as_deref(), Some("b"));
        assert_eq!(s.admit(&k, 1, &mut copy), None);
        // node 2's kernel has its own namespace 10: it stays node 2's
        let mut on2 = ev(9_000_000, "ip_rcv", "eth0", "ffff1");
        on2.event.netns = 10;
        assert_eq!(s.admit(&k, 2, &mut on2), Some(2));
    }
}
