//! Overlays: a ping between two "pods" on two "nodes" joined by VXLAN (flannel's port 8472),
//! traced by the inner destination, is one timeline block from pod A's `eth0` through the
//! encapsulated hops on node 1's and node 2's underlay devices to pod B's `eth0`; the
//! encapsulated hops show the tunnel before the inner packet. Filtering by the outer packet
//! (`-p udp --port 8472`) selects the encapsulated hops only.
//!
//! Topology (each node and pod its own namespace):
//! `pod1 eth0 -- vp1 [br0 + vx0] node1 u1 == u2 node2 [br0 + vx0] vp2 -- eth0 pod2`;
//! underlay 10.250.140.1 - .2, pods 10.250.141.1 - .2 on one L2 segment over VXLAN id 1.
//!
//! IPv6 pods over the IPv4 underlay: a filter on an inner IPv6 address still selects the
//! encapsulated hops, whose outer packet is IPv4.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use nettrace_tests::*;

const UNDERLAY: [Ipv4Addr; 2] = [
    Ipv4Addr::new(10, 250, 140, 1),
    Ipv4Addr::new(10, 250, 140, 2),
];
const PODS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(10, 250, 141, 1),
    Ipv4Addr::new(10, 250, 141, 2),
];
const PODS6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x250, 0x141, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0x250, 0x141, 0, 0, 0, 0, 2),
];
const VNI: u32 = 1;
const VXLAN_PORT: &str = "8472";

/// Two nodes with a VXLAN overlay and a pod behind a bridge on each.
struct Overlay {
    nodes: [Netns; 2],
    pods: [Netns; 2],
}

impl Overlay {
    fn new() -> Overlay {
        let o = Overlay {
            nodes: [Netns::new(), Netns::new()],
            pods: [Netns::new(), Netns::new()],
        };
        let [n1, n2] = &o.nodes;
        n1.ip(&[
            "link",
            "add",
            "u1",
            "type",
            "veth",
            "peer",
            "name",
            "u2",
            "netns",
            n2.name(),
        ]);
        for (i, (node, pod)) in o.nodes.iter().zip(&o.pods).enumerate() {
            let (u, vp) = (format!("u{}", i + 1), format!("vp{}", i + 1));
            let (local, remote) = (UNDERLAY[i].to_string(), UNDERLAY[1 - i].to_string());
            node.ip(&["addr", "add", &format!("{local}/24"), "dev", &u]);
            node.ip(&["link", "set", &u, "up"]);
            let vni = VNI.to_string();
            node.ip(&[
                "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", &local, "remote",
                &remote, "dstport", VXLAN_PORT, "dev", &u,
            ]);
            node.ip(&["link", "add", "br0", "type", "bridge"]);
            node.ip(&["link", "set", "vx0", "master", "br0"]);
            node.ip(&[
                "link",
                "add",
                &vp,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ]);
            node.ip(&["link", "set", &vp, "master", "br0"]);
            for dev in ["lo", "br0", "vx0", vp.as_str()] {
                node.ip(&["link", "set", dev, "up"]);
            }
            pod.ip(&["addr", "add", &format!("{}/24", PODS[i]), "dev", "eth0"]);
            pod.ip(&["link", "set", "lo", "up"]);
            pod.ip(&["link", "set", "eth0", "up"]);
        }
        o
    }

    /// The encapsulated hops of a ping from pod 1 to pod 2 and its reply, in order: the
    /// request leaving node 1's underlay device and arriving on node 2's, then the reply
    /// the way back (`enc_*`: the lines' summaries).
    fn underlay_hops(&self, enc_request: &str, enc_reply: &str) -> [Step; 4] {
        let [n1, n2] = &self.nodes;
        [
            Step::exact("net_dev_queue", enc_request).iface(n1.iface_label("u1")),
            Step::exact("netif_receive_skb", enc_request).iface(n2.iface_label("u2")),
            Step::exact("net_dev_queue", enc_reply).iface(n2.iface_label("u2")),
            Step::exact("netif_receive_skb", enc_reply).iface(n1.iface_label("u1")),
        ]
    }

    /// Gives each pod's `eth0` its IPv6 address too (the underlay stays IPv4).
    fn with_ipv6(self) -> Overlay {
        for (pod, addr) in self.pods.iter().zip(PODS6) {
            pod.sysctl("net.ipv6.conf.eth0.disable_ipv6", "0");
            pod.ip(&["addr", "add", &format!("{addr}/64"), "dev", "eth0", "nodad"]);
        }
        self
    }
}

/// `VXLAN vni 1 SRC -> DST | ` for the underlay addresses of node `from` to the other.
fn vxlan_prefix(from: usize) -> String {
    format!(
        "VXLAN vni {VNI} {} -> {} | ",
        UNDERLAY[from],
        UNDERLAY[1 - from]
    )
}

#[test]
fn a_ping_over_vxlan_is_one_block_with_the_encapsulated_hops() {
    preflight();
    let o = Overlay::new();
    let [n1, n2] = &o.nodes;
    let [p1, p2] = &o.pods;
    let inner = PODS[1].to_string();
    let by_inner = Nettrace::spawn(&["--timeline", "--detail", "-p", "icmp", "--addr", &inner]);
    let by_outer = Nettrace::spawn(&["--detail", "-p", "udp", "--port", VXLAN_PORT]);
    ping(p1, PODS[1], 1);
    let request = icmp_request(PODS[0], PODS[1], 1);
    let reply = icmp_reply(PODS[1], PODS[0], 1);
    let enc_request = format!("{}{request}", vxlan_prefix(0));
    let enc_reply = format!("{}{reply}", vxlan_prefix(1));
    let done = |lines: &[String]| {
        lines.iter().any(|l| l.ends_with(&reply))
            && lines
                .iter()
                .any(|l| l.contains("consume_skb") && l.ends_with(&request))
    };
    let fin = by_inner.stop_when(Duration::from_secs(15), done);
    let outer = by_outer.stop_when(Duration::from_secs(5), |l| {
        l.iter().any(|x| x.ends_with(&enc_reply))
    });

    // The request: one block from pod 1 to pod 2, encapsulated between the nodes.
    let blocks = parse_timeline(&fin.stdout_lines);
    let block = blocks
        .iter()
        .find(|b| b.events().iter().any(|e| e.summary == enc_request))
        .unwrap_or_else(|| panic!("no block with {enc_request:?}\n{}", fin.describe()));
    let lines: Vec<String> = block.lines.clone();
    let steps = [
        Step::exact("net_dev_queue", &request).iface(p1.iface_label("eth0")),
        Step::exact("net_dev_queue", &request).iface(n1.iface_label("vx0")),
        Step::exact("net_dev_queue", &enc_request).iface(n1.iface_label("u1")),
        Step::exact("netif_receive_skb", &enc_request).iface(n2.iface_label("u2")),
        Step::exact("netif_receive_skb", &request).iface(n2.iface_label("vx0")),
        Step::exact("netif_receive_skb", &request).iface(p2.iface_label("eth0")),
    ];
    assert_subsequence_steps(&lines, &steps);
    for ev in block.events() {
        assert!(
            ev.summary == request || ev.summary == enc_request,
            "a line of the request's block is neither the request nor its encapsulation: {:?}\n{}",
            ev.raw,
            fin.describe()
        );
    }
    // The reply takes the way back, encapsulated from node 2 to node 1.
    assert_subsequence_steps(
        &fin.stdout_lines,
        &[
            Step::exact("net_dev_queue", &enc_reply).iface(n2.iface_label("u2")),
            Step::exact("netif_receive_skb", &enc_reply).iface(n1.iface_label("u1")),
            Step::exact("netif_receive_skb", &reply).iface(p1.iface_label("eth0")),
        ],
    );

    // By the outer packet: the encapsulated hops, and nothing else of the ping.
    assert_subsequence_steps(
        &outer.stdout_lines,
        &o.underlay_hops(&enc_request, &enc_reply),
    );
    for ev in find_events(&outer.stdout_lines) {
        assert!(
            ev.summary.starts_with("VXLAN vni 1 "),
            "-p udp --port {VXLAN_PORT} printed a hop outside the tunnel: {:?}\n{}",
            ev.raw,
            outer.describe()
        );
    }
}

#[test]
fn an_inner_ipv6_address_selects_the_hops_of_its_ipv4_overlay() {
    preflight();
    let o = Overlay::new().with_ipv6();
    let p1 = &o.pods[0];
    // The outer packet is IPv4: only its inner packet can match an IPv6 address.
    let nt = Nettrace::spawn(&["--detail", "-p", "icmp6", "--addr", &PODS6[1].to_string()]);
    ping(p1, PODS6[1], 1);
    let request = icmp6_request(PODS6[0], PODS6[1], 1);
    let reply = icmp6_reply(PODS6[1], PODS6[0], 1);
    let enc_request = format!("{}{request}", vxlan_prefix(0));
    let enc_reply = format!("{}{reply}", vxlan_prefix(1));
    let fin = nt.stop_when(Duration::from_secs(15), |l| {
        l.iter().any(|x| x.ends_with(&enc_reply))
    });
    assert_subsequence_steps(
        &fin.stdout_lines,
        &o.underlay_hops(&enc_request, &enc_reply),
    );
}
