//! Scenario 1: one ping across a bridge, traced with `--detail`.
//!
//! A (a0) -- (pa) br0 (pb) -- (b0) B. The request must show up leaving A, entering the bridge
//! port, entering B and being consumed; the reply the other way round. The `--detail` iface
//! column must name the right interface (ifindex:name inside its namespace).

use std::time::Duration;

use nettrace_tests::*;

const SUBNET: u8 = 10;

/// Where an expected event happens.
#[derive(Clone, Copy, Debug)]
enum At {
    A,
    MidA,
    MidB,
    B,
    Anywhere,
}

/// The request's path (tracer, interface), in order; other events may be interleaved.
const REQUEST_PATH: &[(&str, At)] = &[
    ("net_dev_queue", At::A),
    // net_dev_xmit fires after the veth handed the skb to its peer: it must
    // still name the transmitting device (the tracepoint's own argument).
    ("net_dev_xmit", At::A),
    ("netif_receive_skb", At::MidA),
    ("netif_receive_skb", At::B),
    ("consume_skb", At::Anywhere),
];

/// The reply's path. Measured on the 6.18 host with bpftrace: ping (as root, in a new netns)
/// uses a raw socket, so the reply skb itself ends in `kfree_skb` (NO_SOCKET at ping_rcv) and
/// the raw socket's clone in `consume_skb`; either may come last.
const REPLY_PATH: &[(&str, At)] = &[
    ("net_dev_queue", At::B),
    ("net_dev_xmit", At::B),
    ("netif_receive_skb", At::MidB),
    ("netif_receive_skb", At::A),
    ("consume_skb|kfree_skb", At::Anywhere),
];

/// Group printed by `--detail` for some tracers (checked on every such event).
const GROUPS: &[(&str, &str)] = &[
    ("net_dev_queue", "link-out"),
    ("netif_receive_skb", "link-in"),
];

fn steps(t: &Topology, path: &[(&str, At)], summary: &str) -> Vec<Step> {
    path.iter()
        .map(|(tracer, at)| {
            let step = Step::exact(tracer, summary);
            match at {
                At::A => step.iface(t.a_label()),
                At::MidA => step.iface(t.mid_a_label()),
                At::MidB => step.iface(t.mid_b_label()),
                At::B => step.iface(t.b_label()),
                At::Anywhere => step,
            }
        })
        .collect()
}

#[test]
fn ping_across_bridge_detail() {
    preflight();
    let t = Topology::bridged(SUBNET);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&["-p", "icmp", "--addr", &b, "--detail"]);
    ping(&t.a, t.b_addr, 1);

    let request = icmp_request(t.a_addr, t.b_addr, 1);
    let reply = icmp_reply(t.b_addr, t.a_addr, 1);
    let fin = nt.stop_when(Duration::from_secs(10), |lines| {
        lines.iter().filter_map(|l| parse_line(l)).any(|e| {
            (e.tracer == "consume_skb" || e.tracer == "kfree_skb") && e.summary.starts_with(&reply)
        })
    });
    fin.assert_success();
    let out = &fin.stdout_lines;

    assert_subsequence_steps(out, &steps(&t, REQUEST_PATH, &request));
    assert_subsequence_steps(out, &steps(&t, REPLY_PATH, &reply));

    for ev in find_events(out) {
        let skb = ev.skb.as_deref().unwrap_or("");
        assert!(
            skb.len() >= 8 && skb.bytes().all(|c| c.is_ascii_hexdigit()),
            "bad skb column in {:?}",
            ev.raw
        );
        assert!(
            ev.pid.is_some() && ev.comm.is_some(),
            "no task in {:?}",
            ev.raw
        );
        if let Some((_, group)) = GROUPS.iter().find(|(tr, _)| *tr == ev.tracer) {
            assert_eq!(ev.group.as_deref(), Some(*group), "group of {:?}", ev.raw);
        }
        assert!(
            ev.summary.contains(&t.a_addr.to_string()) && ev.summary.contains(&b),
            "event about another packet: {:?}\n{}",
            ev.raw,
            dump(out)
        );
    }
}
