//! Scenario: under overload nothing is lost silently. A UDP flood through a bridge, traced
//! with a 4 KiB ring buffer (room for about 25 events) or a rate limit, must end with a `lost`
//! record whose counters add up exactly: every event the kernel produced (`matched`) was
//! either delivered (an `event` line) or counted as lost (`events`, ring buffer full) or
//! suppressed (`rate_limited`).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use nettrace_tests::*;
use serde_json::Value;

const DATAGRAMS: usize = 20_000;
const PORT: u16 = 40_140;

/// Sends `DATAGRAMS` small datagrams from A to B as fast as one socket can.
fn flood(t: &Topology) {
    let to = SocketAddr::new(t.b_addr.into(), PORT);
    in_netns(&t.a, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind in A");
        for _ in 0..DATAGRAMS {
            // ECONNREFUSED from an earlier ICMP port unreachable is expected: nobody listens.
            let _ = sock.send_to(b"nettrace accounting", to);
        }
    });
}

struct Counts {
    delivered: u64,
    matched: u64,
    lost: u64,
    rate_limited: u64,
}

fn counts(fin: &Finished) -> Counts {
    let values = parse_json_lines(&fin.stdout_lines);
    let delivered = values.iter().filter(|v| v["type"] == "event").count() as u64;
    let lost: Vec<&Value> = values.iter().filter(|v| v["type"] == "lost").collect();
    let last = lost
        .last()
        .unwrap_or_else(|| panic!("no lost record\n{}", fin.describe()));
    let field = |k: &str| {
        last[k]
            .as_u64()
            .unwrap_or_else(|| panic!("lost record without {k}: {last}"))
    };
    Counts {
        delivered,
        matched: field("matched"),
        lost: field("events"),
        rate_limited: field("rate_limited"),
    }
}

fn run(subnet: u8, extra: &[&str]) -> Counts {
    preflight();
    let t = Topology::bridged(subnet);
    let b = t.b_addr.to_string();
    let port = PORT.to_string();
    let mut args = vec!["-o", "json", "-p", "udp", "--addr", &b, "--dport", &port];
    args.extend_from_slice(extra);
    let nt = Nettrace::spawn(&args);
    flood(&t);
    std::thread::sleep(Duration::from_millis(300));
    let fin = nt.stop();
    fin.assert_success();
    let c = counts(&fin);
    assert_eq!(
        c.matched,
        c.delivered + c.lost + c.rate_limited,
        "produced {} != delivered {} + lost {} + rate-limited {}\n{}",
        c.matched,
        c.delivered,
        c.lost,
        c.rate_limited,
        fin.nonempty_stderr().join("\n")
    );
    // Every datagram crosses at least four tracepoints on its way to B.
    assert!(
        c.matched >= 4 * DATAGRAMS as u64,
        "only {} events produced",
        c.matched
    );
    c
}

#[test]
fn ring_buffer_overload_is_counted_exactly() {
    let c = run(140, &["--ringbuf-kb", "4"]);
    assert!(
        c.lost > 0,
        "a 4 KiB ring buffer did not overflow: {} delivered",
        c.delivered
    );
    assert_eq!(c.rate_limited, 0);
}

#[test]
fn rate_limit_suppresses_and_counts() {
    let c = run(141, &["--rate-limit", "1000"]);
    assert!(
        c.rate_limited > 0,
        "nothing suppressed: {} delivered",
        c.delivered
    );
    // A 1000/s limit over well under ten seconds of flood delivers far fewer than produced.
    assert!(
        c.delivered < c.matched / 2,
        "{} delivered of {}",
        c.delivered,
        c.matched
    );
}
