//! Scenario: IPv6. A bridged topology with IPv6 on in A and B (`Topology::bridged_v6`):
//! ICMPv6 ping summaries, an IPv6 UDP summary (`[addr]:port`), and a source filter on an
//! IPv6 address. Each case runs its own topology.

use std::net::SocketAddr;
use std::time::Duration;

use nettrace_tests::*;

const SUBNET_PING: u8 = 120;
const SUBNET_UDP: u8 = 121;
const SUBNET_SADDR: u8 = 122;

const WAIT: Duration = Duration::from_secs(10);

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// Whether an event line's summary is about an IPv4 packet: `PROTO: ` followed by a dotted
/// quad (ICMP, or TCP/UDP without IPv6 brackets).
fn is_ipv4_event(line: &str) -> bool {
    parse_line(line).is_some_and(|e| {
        let Some((_, rest)) = e.summary.split_once(": ") else {
            return false;
        };
        let first = rest.split([' ', ',']).next().unwrap_or("");
        let host = first.rsplit_once(':').map_or(first, |(h, _)| h);
        host.parse::<std::net::Ipv4Addr>().is_ok()
    })
}

#[test]
fn icmp6_ping_request_and_reply() {
    preflight();
    let t = Topology::bridged_v6(SUBNET_PING);
    let (a6, b6) = (t.a6(), t.b6());
    let nt = Nettrace::spawn(&["-p", "icmp6", "--addr", &b6.to_string()]);
    ping(&t.a, b6, 1);

    let request = icmp6_request(a6, b6, 1);
    let reply = icmp6_reply(b6, a6, 1);
    let fin = nt.stop_when(WAIT, |l| {
        l.iter()
            .filter_map(|l| parse_line(l))
            .any(|e| e.tracer == "netif_receive_skb" && e.summary == reply)
    });
    fin.assert_success();
    let out = &fin.stdout_lines;
    assert_subsequence_steps(
        out,
        &[
            Step::exact("net_dev_queue", &request),
            Step::exact("netif_receive_skb", &request),
            Step::exact("net_dev_queue", &reply),
            Step::exact("netif_receive_skb", &reply),
        ],
    );
    assert_no_line(out, "IPv4 event with -p icmp6", is_ipv4_event);
    let ours = format!("ICMPv6: {a6} -> {b6}, ");
    let back = format!("ICMPv6: {b6} -> {a6}, ");
    assert_no_line(out, "event other than this ping's ICMPv6", |l| {
        parse_line(l)
            .is_some_and(|e| !e.summary.starts_with(&ours) && !e.summary.starts_with(&back))
    });
}

#[test]
fn udp6_summary_has_bracketed_addresses() {
    preflight();
    let t = Topology::bridged_v6(SUBNET_UDP);
    let (a6, b6) = (t.a6(), t.b6());
    let nt = Nettrace::spawn(&["-p", "udp", "--dport", "42121"]);
    udp_send(&t.a, SocketAddr::from((b6, 42121)), b"v6", 42131);
    // Same source, another port: must be filtered out by --dport.
    udp_send(&t.a, SocketAddr::from((b6, 42122)), b"no", 42132);
    let want = format!("UDP: [{a6}]:42131 -> [{b6}]:42121");
    let fin = nt.stop_when(WAIT, |l| {
        l.iter()
            .filter_map(|l| parse_line(l))
            .any(|e| e.tracer == "netif_receive_skb" && e.summary == want)
    });
    fin.assert_success();
    let out = &fin.stdout_lines;
    assert_subsequence_steps(
        out,
        &[
            Step::exact("net_dev_queue", &want),
            Step::exact("netif_receive_skb", &want),
        ],
    );
    // Nobody listens in B: the datagram ends in kfree_skb with a drop reason, and every
    // event of it has exactly this summary (a drop suffix may follow).
    let exact = Step::exact("*", &want);
    assert_no_line(out, "event that is not the datagram to port 42121", |l| {
        parse_line(l).is_some_and(|e| !exact.matches(&e))
    });
    assert_no_line(out, "event for the other port", |l| {
        l.contains(":42122") || l.contains(":42132")
    });
}

#[test]
fn saddr6_selects_the_reply_direction() {
    preflight();
    let t = Topology::bridged_v6(SUBNET_SADDR);
    let (a6, b6) = (t.a6(), t.b6());
    // A positive control without a direction, to know the request was there to be filtered.
    let control = Nettrace::spawn(&["-p", "icmp6", "--addr", &b6.to_string()]);
    let from_b = Nettrace::spawn(&["-s", &b6.to_string()]);
    ping(&t.a, b6, 1);

    let request = icmp6_request(a6, b6, 1);
    let reply = icmp6_reply(b6, a6, 1);
    let from_b = from_b.stop_when(WAIT, |l| has_line(l, &reply));
    let control = control.stop_when(WAIT, |l| has_line(l, &reply));
    from_b.assert_success();
    control.assert_success();
    assert_subsequence(&control.stdout_lines, &[("*", &request), ("*", &reply)]);

    let out = &from_b.stdout_lines;
    assert_subsequence_steps(
        out,
        &[
            Step::exact("net_dev_queue", &reply),
            Step::exact("netif_receive_skb", &reply),
        ],
    );
    let from = format!("ICMPv6: {b6} -> ");
    assert_no_line(out, "event not from B with -s B", |l| {
        parse_line(l).is_some_and(|e| !e.summary.starts_with(&from))
    });
    assert_no_line(out, "request event with -s B", |l| l.contains(&request));
}
