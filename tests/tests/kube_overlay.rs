//! `kubectl nettrace` following one packet across the nodes of the bench cluster
//! (`tests/kube/cluster.sh`): pod a on nt-node1, the destination on nt-node2, the VXLAN
//! overlay (nt-vx0, VNI 4242) between them over this host's bridge.
//!
//! The plugin joins what the two agents send for one packet into one timeline block. Both
//! nodes share this host's kernel (the same boot id): an agent follows a matched skb into the
//! other node's namespaces too, so these tests also check that each hook hit is shown once,
//! on the node whose namespace it happened in.
//!
//! Needs root and the cluster (`./dev test` brings it up); a missing piece fails the test.

use std::process::Command;
use std::time::Duration;

use nettrace_tests::cluster::{
    blocks, exclusive_host, find_path, pod_of, shared_host, step, TestNs,
};
use nettrace_tests::{parse_json_lines, Finished};
use serde_json::Value;

fn assert_exit_ok(fin: &Finished) {
    assert!(fin.status.success(), "plugin failed\n{}", fin.describe());
}

#[test]
fn a_ping_to_a_pod_on_another_node_is_one_block_from_pod_to_pod_across_the_overlay() {
    let _host = shared_host();
    let mut ns = TestNs::new("across");
    ns.pods(&[("a", "nt-node1"), ("b", "nt-node2")]);
    let (a_ip, b_ip) = (ns.ip("a"), ns.ip("b"));
    let a_veth = ns.host_veth("a", "nt-node1");
    let b_veth = ns.host_veth("b", "nt-node2");
    let (pa, pb) = (pod_of(&ns, "a"), pod_of(&ns, "b"));
    // Neighbours resolved before tracing: the requests traced are plain ones.
    ns.exec_ok("a", &["ping", "-c", "1", "-W", "2", &b_ip]);

    // As nt-user (manifests/rbac.yaml): only b's address names the second node.
    let user = ns.cluster.user.clone();
    let nt = ns.trace_as(
        &user,
        &["pod/a", "-d", &b_ip, "-p", "icmp", "--timeline", "--detail"],
    );
    let said = format!("-d {b_ip} is pod {}/b: also tracing it", ns.name);
    let stderr = nt.stderr_lines();
    assert!(stderr.contains(&said), "{stderr:?}");
    ns.exec_ok("a", &["ping", "-c", "2", "-i", "0.2", "-W", "2", &b_ip]);
    let delivered = format!(", {pb}, node: nt-node2");
    let fin = nt.stop_when(Duration::from_secs(30), |lines| {
        lines
            .iter()
            .filter(|l| l.contains("[consume_skb") && l.ends_with(&delivered))
            .count()
            >= 2
    });
    assert_exit_ok(&fin);

    let request = format!("ICMP: {a_ip} -> {b_ip}, ping request");
    // a's eth0, its host veth, the bridge and the VXLAN device of nt-node1, the encapsulated
    // packet leaving nt-node1 and arriving on nt-node2, decapsulated on nt-node2's VXLAN
    // device, b's host veth, b's eth0.
    let path = [
        step(&["][2:eth0]", &request, &format!(", {pa}, node: nt-node1")]),
        step(&[
            &format!(":{a_veth}]"),
            &request,
            &format!(", {pa} via {a_veth}, node: nt-node1"),
        ]),
        step(&[":ntbr0]", &request, ", node: nt-node1"]),
        step(&[
            ":nt-vx0]",
            "[net_dev_start_xmit",
            &request,
            ", node: nt-node1",
        ]),
        step(&[
            "][2:eth0]",
            "[net_dev_start_xmit",
            "VXLAN vni 4242 10.240.0.11 -> 10.240.0.12 | ",
            &request,
            ", node: nt-node1",
        ]),
        step(&[
            "][2:eth0]",
            "[netif_receive_skb",
            "VXLAN vni 4242 10.240.0.11 -> 10.240.0.12 | ",
            &request,
            ", node: nt-node2",
        ]),
        step(&[":nt-vx0]", &request, ", node: nt-node2"]),
        step(&[":ntbr0]", &request, ", node: nt-node2"]),
        step(&[
            &format!(":{b_veth}]"),
            &request,
            &format!(", {pb} via {b_veth}, node: nt-node2"),
        ]),
        step(&["][2:eth0]", "[consume_skb", &request, &delivered]),
    ];
    let all = blocks(&fin.stdout_lines);
    let joined: Vec<&Vec<String>> = all
        .iter()
        .filter(|b| find_path(b, &path).is_some())
        .collect();
    assert_eq!(
        joined.len(),
        2,
        "each request is one block from a to b\n{}",
        fin.describe()
    );
    for (seq, block) in joined.iter().enumerate() {
        // the event lines (not the indented ct: lines --detail adds under them)
        let events: Vec<&String> = block[1..].iter().filter(|l| !l.starts_with(' ')).collect();
        assert!(
            events.iter().all(|l| l.contains(&format!("seq: {seq},"))),
            "one packet per block\n{}",
            block.join("\n")
        );
        // each hook hit once, though both agents saw most of them
        assert_eq!(
            events.iter().filter(|l| l.contains("[consume_skb")).count(),
            1,
            "{}",
            block.join("\n")
        );
        // (a copy from the other agent differs only in its time stamp)
        let mut seen = std::collections::HashSet::new();
        for l in events {
            let hit = l.split_once(": [").map(|(_, rest)| rest).unwrap_or(l);
            assert!(seen.insert(hit), "shown twice: {l}\n{}", block.join("\n"));
        }
    }
    assert!(
        !fin.stdout_lines
            .iter()
            .any(|l| l.starts_with("lost between")),
        "{}",
        fin.describe()
    );
}

#[test]
fn a_connection_to_a_service_on_another_node_is_natted_then_crosses_the_overlay_in_one_json_timeline(
) {
    let _host = shared_host();
    let mut ns = TestNs::new("svcacross");
    ns.pods(&[("a", "nt-node1")]);
    let vip = ns.web_service("nt-node2", "a");
    let (a_ip, web_ip) = (ns.ip("a"), ns.ip("web"));

    let nt = ns.trace(&[
        "pod/a",
        "-d",
        &vip,
        "-p",
        "tcp",
        "--dport",
        "80",
        "--skb-mode",
        "--timeline",
        "-o",
        "json",
    ]);
    let said = format!(
        "-d {vip} is service {ns}/web: also tracing pod {ns}/web",
        ns = ns.name
    );
    let stderr = nt.stderr_lines();
    assert!(stderr.contains(&said), "{stderr:?}");
    let answer = ns.exec_ok("a", &["nc", "-w", "2", &vip, "80"]);
    assert!(answer.contains("hello"), "{answer}");
    let fin = nt.stop_when(Duration::from_secs(30), |lines| {
        lines
            .iter()
            .any(|l| l.starts_with(r#"{"type":"timeline""#) && l.contains(r#""name":"web""#))
    });
    assert_exit_ok(&fin);

    // One object: a's SYN to the ClusterIP, DNATed on nt-node1, encapsulated there, and on
    // nt-node2 delivered to web, each event with its node.
    let on = |e: &Value, node: &str| e["node"] == node;
    let timelines: Vec<Value> = parse_json_lines(&fin.stdout_lines)
        .into_iter()
        .filter(|v| v["type"] == "timeline")
        .collect();
    let syn = timelines.iter().find(|t| {
        let evs = t["events"].as_array().cloned().unwrap_or_default();
        let pos = |f: &dyn Fn(&Value) -> bool| evs.iter().position(f);
        let steps = [
            pos(&|e| {
                on(e, "nt-node1")
                    && e["pkt"]["daddr"] == vip.as_str()
                    && e["pkt"]["saddr"] == a_ip.as_str()
                    && e["pod"]["name"] == "a"
            }),
            pos(&|e| {
                on(e, "nt-node1")
                    && e["pkt"]["daddr"] == web_ip.as_str()
                    && e["pkt"]["dport"] == 8080
            }),
            pos(&|e| on(e, "nt-node1") && e["tunnel"]["kind"] == "vxlan"),
            pos(&|e| on(e, "nt-node2") && e["tunnel"]["kind"] == "vxlan"),
            pos(&|e| {
                on(e, "nt-node2")
                    && e["pod"]["name"] == "web"
                    && e["pkt"]["daddr"] == web_ip.as_str()
                    && e["tunnel"].is_null()
            }),
        ];
        steps.iter().all(Option::is_some) && steps.windows(2).all(|w| w[0] < w[1])
    });
    let syn = syn.unwrap_or_else(|| {
        panic!(
            "no timeline follows a's packet to the ClusterIP through the DNAT and the overlay into web\n{}",
            fin.describe()
        )
    });
    assert_eq!(
        syn["nodes"],
        serde_json::json!(["nt-node1", "nt-node2"]),
        "{syn}"
    );
    assert!(syn.get("lost_between").is_none(), "{syn}");
}

/// Drops the VXLAN packets from nt-node1 to nt-node2 on this host's bridge (the bench's
/// underlay) while it lives.
struct UnderlayDrop;

const UNDERLAY_RULE: [&str; 11] = [
    "FORWARD",
    "-s",
    "10.240.0.11",
    "-d",
    "10.240.0.12",
    "-p",
    "udp",
    "--dport",
    "4789",
    "-j",
    "DROP",
];

impl UnderlayDrop {
    fn new() -> UnderlayDrop {
        let st = Command::new("iptables")
            .arg("-I")
            .args(UNDERLAY_RULE)
            .status()
            .expect("iptables");
        assert!(st.success(), "iptables -I {UNDERLAY_RULE:?}: {st}");
        UnderlayDrop
    }
}

impl Drop for UnderlayDrop {
    fn drop(&mut self) {
        let _ = Command::new("iptables")
            .arg("-D")
            .args(UNDERLAY_RULE)
            .status();
    }
}

#[test]
fn a_packet_lost_between_the_nodes_ends_its_block_saying_where_it_was_last_seen() {
    // The overlay is cut for a moment: no other test may cross it meanwhile.
    let _host = exclusive_host();
    let mut ns = TestNs::new("lost");
    ns.pods(&[("a", "nt-node1"), ("b", "nt-node2")]);
    let (a_ip, b_ip) = (ns.ip("a"), ns.ip("b"));
    ns.exec_ok("a", &["ping", "-c", "1", "-W", "2", &b_ip]);
    // Link-layer tracers only: the drop on the host's bridge, which in a real cluster is a
    // switch nobody traces, stays unseen.
    let nt = ns.trace(&[
        "pod/a",
        "-d",
        &b_ip,
        "-p",
        "icmp",
        "--timeline",
        "-t",
        "link",
    ]);
    {
        let _cut = UnderlayDrop::new();
        let out = ns.exec("a", &["ping", "-c", "1", "-W", "2", &b_ip]);
        assert!(!out.status.success(), "the ping crossed a cut overlay");
    }
    let fin = nt.stop_when(Duration::from_secs(30), |lines| {
        lines.iter().any(|l| l.starts_with("lost between "))
    });
    assert_exit_ok(&fin);
    let all = blocks(&fin.stdout_lines);
    let lost: Vec<&Vec<String>> = all
        .iter()
        .filter(|b| b.last().is_some_and(|l| l.starts_with("lost between ")))
        .collect();
    assert_eq!(lost.len(), 1, "{}", fin.describe());
    let block = lost[0];
    assert_eq!(
        block.last().map(String::as_str),
        Some(
            "lost between nt-node1 and nt-node2: last seen on nt-node1 at netif_receive_skb (nt-node1-h, VXLAN vni 4242)"
        ),
        "{}",
        fin.describe()
    );
    let request = format!("ICMP: {a_ip} -> {b_ip}, ping request   , seq: 0");
    let events = &block[1..block.len() - 1];
    assert!(
        events
            .iter()
            .all(|l| l.contains(&request) && l.ends_with(", node: nt-node1")),
        "{}",
        block.join("\n")
    );
    assert!(events.len() >= 6, "{}", block.join("\n"));
}

/// `kubectl nettrace --pcap FILE` on a ping from pod a on nt-node1 to pod b on nt-node2: one
/// file that Debian's tshark reads without a word, one packet per event printed, packets of
/// both nodes on interfaces named after their node and pod, the pods in the comments.
#[test]
fn the_pcap_of_a_ping_across_the_nodes_holds_both_nodes_packets_and_the_pods() {
    let _host = shared_host();
    nettrace_tests::require_tools(&["tshark"]);
    let mut ns = TestNs::new("pcap");
    ns.pods(&[("a", "nt-node1"), ("b", "nt-node2")]);
    let b_ip = ns.ip("b");
    ns.exec_ok("a", &["ping", "-c", "1", "-W", "2", &b_ip]);
    let dir = nettrace_tests::workspace_dir().join("target/pcap-test");
    std::fs::create_dir_all(&dir).expect("create target/pcap-test");
    let file = dir.join(format!("kube-{}.pcapng", std::process::id()));
    let f = file.to_string_lossy().into_owned();
    let nt = ns.trace(&["pod/a", "pod/b", "-p", "icmp", "--timeline", "--pcap", &f]);
    ns.exec_ok("a", &["ping", "-c", "2", "-i", "0.2", "-W", "2", &b_ip]);
    let (pa, pb) = (pod_of(&ns, "a"), pod_of(&ns, "b"));
    let fin = nt.stop_when(Duration::from_secs(30), |lines| {
        lines
            .iter()
            .filter(|l| l.contains("[consume_skb") && l.contains(&pb))
            .count()
            >= 2
    });
    assert_exit_ok(&fin);
    let printed = fin
        .stdout_lines
        .iter()
        .filter(|l| l.contains(": [") && l.contains(", node: "))
        .count();

    let out = Command::new("tshark")
        .args(["-r", &f, "-T", "fields", "-E", "occurrence=a"])
        .args(["-e", "frame.interface_name", "-e", "frame.comment"])
        .args(["-e", "frame.protocols"])
        .output()
        .expect("run tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stderr
                .lines()
                .all(|l| l.trim().is_empty() || l.contains("Running as user")),
        "tshark: {stderr}"
    );
    let rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        rows.len(),
        printed,
        "one packet per event\n{}\n{}",
        rows.join("\n"),
        fin.describe()
    );
    for node in ["nt-node1", "nt-node2"] {
        assert!(
            rows.iter().any(|r| r
                .split('\t')
                .next()
                .is_some_and(|i| i.ends_with(&format!(" node/{node}")))),
            "no packet of {node}\n{}",
            rows.join("\n")
        );
    }
    for (pod, name) in [(&pa, "a"), (&pb, "b")] {
        let named = pod.replacen("pod: ", "pod ", 1);
        assert!(
            rows.iter().any(|r| r.contains(&named)),
            "{named} in no comment\n{}",
            rows.join("\n")
        );
        let iface = format!(" pod/{}/{name} node/", ns.name);
        assert!(
            rows.iter().any(|r| r.contains(&iface)),
            "no interface{iface}…\n{}",
            rows.join("\n")
        );
    }
    // The agents copied the bytes: tshark decodes the pings (an agent image older than
    // --pcap sends none, and its packets are empty).
    let icmp = rows.iter().filter(|r| r.ends_with(":ip:icmp:data")).count();
    assert_eq!(
        icmp,
        rows.len(),
        "packets without their bytes\n{}",
        rows.join("\n")
    );
    let _ = std::fs::remove_file(&file);
}
