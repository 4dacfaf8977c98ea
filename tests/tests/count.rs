//! Scenario: `-c N` without `--timeline` counts events: nettrace prints exactly N event lines
//! and exits by itself with status 0.

use std::time::Duration;

use nettrace_tests::*;

const SUBNET: u8 = 130;
const COUNT: usize = 3;

/// The first events of a ping request leaving A over the veth once A knows B's MAC address
/// (measured on the 6.18 host): queued and transmitted on `a0`, then received by the veth
/// peer. (While ARP is pending, the kernel sends a copy of the request and the original skb
/// is freed first: `consume_skb` would come before `net_dev_queue`.)
const FIRST_TRACERS: [&str; COUNT] = ["net_dev_queue", "net_dev_start_xmit", "netif_rx_entry"];

#[test]
fn count_three_events_then_exit() {
    preflight();
    let t = Topology::bridged(SUBNET);
    let b = t.b_addr.to_string();
    let count = COUNT.to_string();
    // Resolve B's MAC address before tracing (see FIRST_TRACERS).
    ping(&t.a, t.b_addr, 1);
    let nt = Nettrace::spawn(&["-c", &count, "-p", "icmp", "--addr", &b]);
    // Two pings make dozens of matching events: far more than COUNT.
    ping(&t.a, t.b_addr, 2);
    let fin = nt.wait_exit(Duration::from_secs(15));
    if !fin.status.success() {
        panic!(
            "nettrace -c {COUNT} did not exit with 0 by itself\n{}",
            fin.describe()
        );
    }
    let out = &fin.stdout_lines;
    let events = find_events(out);
    assert_eq!(
        events.len(),
        COUNT,
        "expected exactly {COUNT} event lines\n{}",
        fin.describe()
    );
    assert_eq!(
        out.len(),
        COUNT,
        "stdout has lines other than the events\n{}",
        fin.describe()
    );
    let request = icmp_request(t.a_addr, t.b_addr, 1);
    for (ev, tracer) in events.iter().zip(FIRST_TRACERS) {
        assert_eq!(
            (ev.tracer.as_str(), ev.summary.as_str()),
            (tracer, request.as_str()),
            "unexpected event {:?}\n{}",
            ev.raw,
            fin.describe()
        );
    }
}
