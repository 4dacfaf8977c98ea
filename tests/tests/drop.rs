//! Scenario 4: an iptables DROP shows up as kfree_skb with reason NETFILTER_DROP and a location.

use std::time::Duration;

use nettrace_tests::*;

const SUBNET: u8 = 40;
const DROP_TRACER: &str = "kfree_skb";
const DROP_REASON: &str = "NETFILTER_DROP";

#[test]
fn iptables_drop_has_reason_and_location() {
    preflight();
    let t = Topology::bridged(SUBNET);
    t.b.iptables(&["-A", "INPUT", "-p", "icmp", "-j", "DROP"]);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&["-p", "icmp", "--addr", &b]);
    ping_expect_loss(&t.a, t.b_addr, 1);
    let request = icmp_request(t.a_addr, t.b_addr, 1);
    let fin = nt.stop_when(Duration::from_secs(10), |l| {
        l.iter()
            .filter_map(|x| parse_line(x))
            .any(|e| e.tracer == DROP_TRACER && e.summary.starts_with(&request))
    });
    fin.assert_success();
    let out = &fin.stdout_lines;
    let ev = assert_subsequence_steps(
        out,
        &[Step::new(
            DROP_TRACER,
            &format!("{request}, reason: {DROP_REASON}, location: "),
        )],
    )
    .remove(0);
    assert!(
        ev.summary.starts_with(&format!("{request}, reason: ")),
        "drop suffix not right after the packet summary: {:?}",
        ev.raw
    );
    let (reason, sym, _off) = parse_drop_suffix(&ev.summary).unwrap_or_else(|| {
        panic!(
            "drop line does not end in `, reason: R, location: SYM+0xHEX`: {:?}",
            ev.raw
        )
    });
    assert_eq!(reason, DROP_REASON);
    assert!(
        sym.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.'),
        "location symbol looks wrong: {sym:?} in {:?}",
        ev.raw
    );
    assert_no_line(out, "ping reply despite the DROP rule", |l| {
        l.contains("ping reply")
    });
}
