//! Scenario 7: `-o json` prints one JSON object per line.

use std::time::Duration;

use nettrace_tests::*;
use serde_json::Value;

const SUBNET: u8 = 70;
/// Values of `"type"` that may appear.
const TYPES: &[&str] = &["event", "lost"];
/// Keys every event object has.
const EVENT_KEYS: &[&str] = &[
    "time", "ts_ns", "tracer", "group", "skb", "netns", "ifindex", "pid", "comm", "pkt", "summary",
];

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[test]
fn json_events_parse() {
    preflight();
    let t = Topology::bridged(SUBNET);
    let (a, b) = (t.a_addr.to_string(), t.b_addr.to_string());
    let nt = Nettrace::spawn(&["-o", "json", "-p", "icmp", "--addr", &b]);
    ping(&t.a, t.b_addr, 1);
    let fin = nt.stop_when(Duration::from_secs(10), |lines| {
        lines.iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                matches!(s(&v, "tracer"), Some("consume_skb" | "kfree_skb"))
                    && v.pointer("/pkt/saddr").and_then(Value::as_str) == Some(b.as_str())
            })
        })
    });
    fin.assert_success();
    let values = parse_json_lines(&fin.stdout_lines);
    assert!(!values.is_empty(), "no output\n{}", fin.describe());

    let mut requests = 0;
    let mut replies = 0;
    for v in &values {
        let ty = s(v, "type").unwrap_or_else(|| panic!("no \"type\" in {v}"));
        assert!(TYPES.contains(&ty), "unknown type {ty:?} in {v}");
        if ty != "event" {
            continue;
        }
        for k in EVENT_KEYS {
            assert!(v.get(k).is_some(), "event without {k:?}: {v}");
        }
        // The schema omits "ifname" exactly when the skb has no device.
        let has_dev = v["ifindex"].as_u64().is_some_and(|i| i != 0);
        assert_eq!(v.get("ifname").is_some(), has_dev, "ifname vs ifindex: {v}");
        assert!(v["ts_ns"].is_u64(), "ts_ns not an integer: {v}");
        let skb = s(v, "skb").unwrap_or("");
        assert!(
            !skb.is_empty() && skb.bytes().all(|c| c.is_ascii_hexdigit()),
            "bad skb in {v}"
        );
        let pkt = &v["pkt"];
        assert_eq!(s(pkt, "l3"), Some("ipv4"), "pkt.l3 in {v}");
        assert_eq!(s(pkt, "proto"), Some("icmp"), "pkt.proto in {v}");
        let (src, dst) = (s(pkt, "saddr"), s(pkt, "daddr"));
        let seq = pkt.get("icmp_seq").and_then(Value::as_u64);
        if src == Some(a.as_str()) && dst == Some(b.as_str()) && seq == Some(1) {
            requests += 1;
            assert!(
                s(v, "summary").is_some_and(|x| x.contains("ping request")),
                "summary of a request: {v}"
            );
        } else if src == Some(b.as_str()) && dst == Some(a.as_str()) && seq == Some(1) {
            replies += 1;
            assert!(
                s(v, "summary").is_some_and(|x| x.contains("ping reply")),
                "summary of a reply: {v}"
            );
        } else {
            panic!("event of another packet: {v}\n{}", fin.describe());
        }
    }
    assert!(requests > 0, "no request event\n{}", fin.describe());
    assert!(replies > 0, "no reply event\n{}", fin.describe());
}
