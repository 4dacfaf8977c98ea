//! NAT made explicit: A connects to VIP:80, which router R DNATs to B:8080. In the
//! `--timeline` block of the SYN a line between the last event before the rewrite and the
//! first after it names both endpoints; the SYN-ACK's block names the reverse rewrite; in
//! JSON the timeline object carries the same as `nat`.

use std::net::Ipv4Addr;
use std::time::Duration;

use nettrace_tests::*;

/// Uses subnets 56 (A side) and 57 (B side).
const SUBNET: u8 = 56;
/// Off both subnets, so A routes it to R; reserved for this test.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 250, 58, 100);
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_dnat_is_a_nat_line_between_the_events_before_and_after_it() {
    preflight();
    let t = Topology::routed(SUBNET);
    t.add_port_dnat(VIP);
    let (a, b) = (t.a_addr, t.b_addr);
    let client_port = 40123;

    let nt = Nettrace::spawn_tcp_client(a, client_port, &["--timeline"]);
    let x = t.vip_exchange(VIP, client_port);
    assert_eq!(x.client.ip(), &a);
    let dnat = format!("                NAT  {VIP}:80 -> {b}:8080 (DNAT)");
    let undo = format!("                NAT  {b}:8080 -> {VIP}:80 (SNAT)");
    let fin = nt.stop_when(WAIT, |l| l.contains(&dnat) && l.contains(&undo));
    fin.assert_success();

    let syn_to_vip = format!("TCP: {a}:{client_port} -> {VIP}:80, seq: ");
    let syn_to_b = format!("TCP: {a}:{client_port} -> {b}:8080, seq: ");
    let blocks = parse_timeline(&fin.stdout_lines);
    let syn = blocks
        .iter()
        .find(|bl| bl.lines.contains(&dnat))
        .unwrap_or_else(|| panic!("no block with {dnat:?}\n{}", fin.describe()));
    let at = syn.lines.iter().position(|l| *l == dnat).unwrap_or(0);
    assert!(
        at > 0,
        "the NAT line follows events\n{}",
        syn.lines.join("\n")
    );
    assert!(
        syn.lines[..at].iter().all(|l| l.contains(&syn_to_vip)),
        "before the line, the SYN goes to the VIP\n{}",
        syn.lines.join("\n")
    );
    assert!(
        at + 1 < syn.lines.len() && syn.lines[at + 1..].iter().all(|l| l.contains(&syn_to_b)),
        "after it, to B\n{}",
        syn.lines.join("\n")
    );
    assert_eq!(
        syn.lines.iter().filter(|l| l.contains(" NAT ")).count(),
        1,
        "{}",
        syn.lines.join("\n")
    );
    // The SYN-ACK, rewritten back on its way to A.
    let synack = blocks
        .iter()
        .find(|bl| bl.lines.contains(&undo))
        .unwrap_or_else(|| panic!("no block with {undo:?}\n{}", fin.describe()));
    let at = synack.lines.iter().position(|l| *l == undo).unwrap_or(0);
    let from_b = format!("TCP: {b}:8080 -> {a}:{client_port}, seq: ");
    let from_vip = format!("TCP: {VIP}:80 -> {a}:{client_port}, seq: ");
    assert!(
        at > 0
            && synack.lines[..at].iter().all(|l| l.contains(&from_b))
            && synack.lines[at + 1..].iter().all(|l| l.contains(&from_vip)),
        "{}",
        synack.lines.join("\n")
    );

    // JSON: the same change as a "nat" member, at the first event after it.
    let nt = Nettrace::spawn_tcp_client(a, client_port + 1, &["--timeline", "-o", "json"]);
    t.vip_exchange(VIP, client_port + 1);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains(r#""kind":"dnat""#)));
    fin.assert_success();
    let timelines: Vec<serde_json::Value> = parse_json_lines(&fin.stdout_lines)
        .into_iter()
        .filter(|v| v["type"] == "timeline" && v.get("nat").is_some())
        .collect();
    let syn = timelines
        .iter()
        .find(|v| v["nat"][0]["kind"] == "dnat")
        .unwrap_or_else(|| panic!("no timeline with a dnat\n{}", fin.describe()));
    let nat = &syn["nat"][0];
    assert_eq!(nat["from"], format!("{VIP}:80"), "{syn}");
    assert_eq!(nat["to"], format!("{b}:8080"), "{syn}");
    let i = nat["at"].as_u64().unwrap_or(0) as usize;
    assert!(i > 0, "{syn}");
    assert_eq!(
        syn["events"][i - 1]["pkt"]["daddr"],
        VIP.to_string(),
        "{syn}"
    );
    assert_eq!(syn["events"][i]["pkt"]["daddr"], b.to_string(), "{syn}");
    assert_eq!(syn["events"][i]["pkt"]["dport"], 8080, "{syn}");
}
