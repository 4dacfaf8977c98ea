//! Scenario 5: `--skb-mode` keeps following an skb after DNAT rewrote its destination.
//!
//! A -- R -- B with `iptables -t nat -A PREROUTING -d VIP -j DNAT --to-destination B` in R.
//! Filtering on VIP: with `--skb-mode` the request is still shown after the rewrite
//! (`A -> B`); without it, nothing with `-> B` shows up for the request.

use std::net::Ipv4Addr;
use std::time::Duration;

use nettrace_tests::*;

/// Uses subnets 50 (A side) and 51 (B side).
const SUBNET: u8 = 50;
/// Off both subnets, so A routes it to R; reserved for this test.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 250, 59, 100);
/// A tracer that must show the rewritten request (on R's B-side leg).
const POST_NAT_TRACER: &str = "net_dev_queue";
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn skb_mode_follows_dnat() {
    preflight();
    let t = Topology::routed(SUBNET);
    t.add_dnat(VIP, t.b_addr);
    let vip = VIP.to_string();
    let pre_nat = icmp_request(t.a_addr, VIP, 1);
    let post_nat = icmp_request(t.a_addr, t.b_addr, 1);

    // With --skb-mode.
    let nt = Nettrace::spawn(&["-p", "icmp", "--addr", &vip, "--skb-mode", "--timeline"]);
    ping(&t.a, VIP, 1);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains(&post_nat)));
    fin.assert_success();
    assert_subsequence(
        &fin.stdout_lines,
        &[("*", &pre_nat), (POST_NAT_TRACER, &post_nat)],
    );
    assert!(
        !parse_timeline(&fin.stdout_lines).is_empty(),
        "--timeline printed no block\n{}",
        fin.describe()
    );

    // Without --skb-mode: the rewritten request is not matched any more.
    let nt = Nettrace::spawn(&["-p", "icmp", "--addr", &vip, "--timeline"]);
    ping(&t.a, VIP, 1);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains(&vip)));
    fin.assert_success();
    // Control: the filter did match this ping somewhere (request before DNAT, or the
    // un-NATed reply `VIP -> A`).
    assert!(
        fin.stdout_lines
            .iter()
            .filter_map(|l| parse_line(l))
            .any(|e| e.summary.contains(&vip)),
        "no event mentioning {vip} without --skb-mode\n{}",
        fin.describe()
    );
    let to_b = format!("-> {}, ping request", t.b_addr);
    assert_no_line(
        &fin.stdout_lines,
        "rewritten request without --skb-mode",
        |l| l.contains(&to_b),
    );
}
