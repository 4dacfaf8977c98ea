//! `--diag` and the advice lines, on real packets in real namespaces.
//!
//! Bridged A — B, traced with `--netns <B>` (B's side of every packet):
//! - an iptables DROP rule in B for UDP port 7777: `--diag` prints only the dropped datagrams
//!   (pings and UDP to a port B reads are left out), each `kfree_skb ... reason: NETFILTER_DROP`
//!   followed by its advice line, and at exit the summary table with one row counting them
//!   (text and `-o json`);
//! - UDP to a closed port with `--detail --timeline`: `icmp_send` and the `NO_SOCKET` drop, each
//!   with its advice line, and no summary;
//! - TCP to a closed port with `--diag`: `tcp_send_reset` and the `NO_SOCKET` drop of the SYN,
//!   the reset itself left out, and a summary of two rows.
//!
//! The advice texts are the ones of `nettrace_common::advice`; the summary layout is the one
//! `common/src/diag.rs` documents (columns as wide as their widest cell, two spaces apart,
//! `COUNT` right-aligned, the advice line indented to the `WHAT` column), rebuilt here from the
//! values the events carry.

use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use nettrace_common::advice::{self, Advice};
use nettrace_tests::*;

/// `--diag` against a netfilter drop (text and JSON).
const SUBNET_DROP: u8 = 76;
/// UDP to a closed port, `--detail --timeline`.
const SUBNET_UDP: u8 = 77;
/// TCP to a closed port, `--diag`.
const SUBNET_TCP: u8 = 78;

const WAIT: Duration = Duration::from_secs(10);
/// The port B's iptables rule drops.
const DROPPED_PORT: u16 = 7777;
/// A port B listens on and reads from.
const OPEN_PORT: u16 = 7778;
/// How many datagrams go to the dropping rule.
const DROPPED: usize = 5;
/// Comment of the DROP rule.
const RULE_COMMENT: &str = "nettrace diag test";

/// Indentation of the advice line under an event.
const EVENT_ADVICE_INDENT: &str = "                ";
const SUMMARY_MARKER: &str = "--- diag summary ---";

/// The line `--detail`/`--diag` prints under an event.
fn event_advice(a: Advice) -> String {
    format!("{EVENT_ADVICE_INDENT}{}", a.line())
}

fn drop_advice(reason: &str) -> Advice {
    advice::for_drop_reason(reason).unwrap_or_else(|| panic!("no advice for {reason}"))
}

/// One expected row of the summary table.
struct Row {
    count: u64,
    what: String,
    place: String,
    rule: String,
    first: String,
    last: String,
    advice: Advice,
}

/// The text summary as `common/src/diag.rs` documents it: header, then each row and its
/// advice line.
fn summary_table(rows: &[Row]) -> Vec<String> {
    let header = ["COUNT", "WHAT", "WHERE", "RULE", "FIRST", "LAST"].map(String::from);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.count.to_string(),
                r.what.clone(),
                r.place.clone(),
                r.rule.clone(),
                r.first.clone(),
                r.last.clone(),
            ]
        })
        .collect();
    let mut w = header.clone().map(|h| h.len());
    for c in &cells {
        for (wi, ci) in w.iter_mut().zip(c) {
            *wi = (*wi).max(ci.len());
        }
    }
    let line = |c: &[String; 6]| {
        format!(
            "{:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        )
    };
    let mut out = vec![line(&header)];
    for (c, r) in cells.iter().zip(rows) {
        out.push(line(c));
        out.push(format!("{:w0$}  {}", "", r.advice.line(), w0 = w[0]));
    }
    out
}

/// The lines after `--- diag summary ---` (which must appear exactly once).
fn summary_lines(fin: &Finished) -> &[String] {
    let lines = &fin.stdout_lines;
    let at: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i] == SUMMARY_MARKER)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "one `{SUMMARY_MARKER}` line expected\n{}",
        fin.describe()
    );
    &lines[at[0] + 1..]
}

/// Index of the only line of `block` whose event is from `tracer`.
fn only_event(block: &Block, tracer: &str) -> usize {
    let at: Vec<usize> = (0..block.lines.len())
        .filter(|&i| parse_line(&block.lines[i]).is_some_and(|e| e.tracer == tracer))
        .collect();
    assert_eq!(
        at.len(),
        1,
        "one [{tracer}] line expected in the block\n{}",
        block.lines.join("\n")
    );
    at[0]
}

/// Asserts that the line after `block.lines[i]` is `want`.
fn assert_followed_by(block: &Block, i: usize, want: &str) {
    assert_eq!(
        block.lines.get(i + 1).map(String::as_str),
        Some(want),
        "the line after {:?} must be the advice line\n{}",
        block.lines[i],
        block.lines.join("\n")
    );
}

/// `(reason, location)` of a drop line's summary (`..., reason: R, location: SYM+0xOFF`).
fn drop_of(ev: &Event) -> (String, String) {
    let (reason, sym, off) = parse_drop_suffix(&ev.summary)
        .unwrap_or_else(|| panic!("no reason/location on a drop line: {}", ev.raw));
    (reason, format!("{sym}+{off:#x}"))
}

/// Starts a UDP socket on `addr` in `ns` that reads `n` datagrams (bounded by
/// `SOCKET_TIMEOUT` each); returns once it is bound. Join the handle for the payloads.
fn udp_reader<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ns: &'s Netns,
    addr: SocketAddrV4,
    n: usize,
) -> std::thread::ScopedJoinHandle<'s, Vec<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<()>();
    let h = s.spawn(move || {
        in_netns(ns, move || {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
            sock.set_read_timeout(Some(nettrace_tests::traffic::SOCKET_TIMEOUT))
                .unwrap();
            tx.send(()).unwrap();
            (0..n)
                .map(|i| {
                    let mut buf = [0u8; 1500];
                    let (len, _) = sock
                        .recv_from(&mut buf)
                        .unwrap_or_else(|e| panic!("udp read {i} on {addr}: {e}"));
                    buf[..len].to_vec()
                })
                .collect()
        })
    });
    rx.recv_timeout(nettrace_tests::traffic::SOCKET_TIMEOUT)
        .expect("udp reader did not bind");
    h
}

/// Sends the dropped and the good traffic of the first test: [`DROPPED`] datagrams to
/// B:DROPPED_PORT from source ports `drop_ports`, then 3 to B:OPEN_PORT (read by B) from
/// `good_port`.., then 2 pings (B's replies last: B sends nothing before).
fn mixed_traffic(t: &Topology, good_port: u16, drop_ports: &[u16]) {
    let b = t.b_addr;
    for &p in drop_ports {
        udp_send(
            &t.a,
            SocketAddr::from((b, DROPPED_PORT)),
            b"dropped datagram",
            p,
        );
    }
    std::thread::scope(|s| {
        let reader = udp_reader(s, &t.b, SocketAddrV4::new(b, OPEN_PORT), 3);
        for i in 0..3 {
            udp_send(
                &t.a,
                SocketAddr::from((b, OPEN_PORT)),
                b"good datagram",
                good_port + i,
            );
        }
        let got = reader
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert_eq!(got, vec![b"good datagram".to_vec(); 3]);
    });
    ping(&t.a, b, 2);
}

/// The MAC address of `dev` in `ns`.
fn mac(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    v[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address for {dev} in {}: {v}", ns.name()))
        .to_string()
}

/// A bridged topology whose ends know each other's MAC address (permanent neighbour
/// entries): no ARP while tracing. An ARP reply B sends leaves its skb's context open under
/// `--netns <B>` (it is freed in A, out of scope), and a datagram that arrives later in a
/// recycled skb at the same address is then printed in that same block.
fn topology(subnet: u8) -> Topology {
    let t = Topology::bridged(subnet);
    let (a_mac, b_mac) = (mac(&t.a, t.a_if), mac(&t.b, t.b_if));
    for (ns, peer, lladdr, dev) in [
        (&t.a, t.b_addr, &b_mac, t.a_if),
        (&t.b, t.a_addr, &a_mac, t.b_if),
    ] {
        ns.ip(&[
            "neigh",
            "replace",
            &peer.to_string(),
            "lladdr",
            lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    t
}

fn count_lines(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn diag_prints_only_the_dropped_packets_and_counts_them_per_rule() {
    preflight();
    let t = topology(SUBNET_DROP);
    t.b.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        &DROPPED_PORT.to_string(),
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "DROP",
    ]);
    let (a, b) = (t.a_addr, t.b_addr);
    let b_ns = t.b.path();
    let b_ns = b_ns.to_str().unwrap();
    let place = format!("netns {}", t.b.inode());
    let nf = drop_advice("NETFILTER_DROP");
    assert!(nf.next_step.contains("--nft-trace"), "{nf:?}");
    let drop_ports: Vec<u16> = (0..DROPPED as u16).map(|i| 41001 + i).collect();

    // --diag, and beside it a plain --timeline of the same namespace: the control that the
    // good traffic was there to be left out.
    let diag = Nettrace::spawn(&["--netns", b_ns, "--diag"]);
    let control = Nettrace::spawn(&["--netns", b_ns, "--timeline"]);
    mixed_traffic(&t, 41100, &drop_ports);
    let fin = diag.stop_when(WAIT, |l| {
        count_lines(l, "reason: NETFILTER_DROP") >= DROPPED
    });
    let ctl = control.stop_when(WAIT, |l| {
        l.iter().any(|x| x.contains("ping request   , seq: 2"))
    });
    fin.assert_success();
    ctl.assert_success();

    // The control saw the good traffic: both ping requests and the 3 datagrams B read.
    for seq in 1..=2 {
        let req = icmp_request(a, b, seq);
        assert!(
            ctl.stdout_lines.iter().any(|l| l.contains(&req)),
            "control --timeline did not see {req:?}\n{}",
            ctl.describe()
        );
    }
    for i in 0..3 {
        let good = format!("UDP: {a}:{} -> {b}:{OPEN_PORT}", 41100 + i);
        assert!(
            ctl.stdout_lines.iter().any(|l| l.contains(&good)),
            "control --timeline did not see {good:?}\n{}",
            ctl.describe()
        );
    }

    // --diag: the dropped datagrams only, one block each.
    assert_no_line(&fin.stdout_lines, "good traffic under --diag", |l| {
        l.contains("ICMP: ") || l.contains(&format!(":{OPEN_PORT}"))
    });
    let blocks = parse_timeline(&fin.stdout_lines);
    assert_eq!(
        blocks.len(),
        DROPPED,
        "one block per dropped datagram\n{}",
        fin.describe()
    );
    let mut seen_ports = Vec::new();
    let mut drops = Vec::new();
    for block in &blocks {
        assert!(block.terminated, "{}", fin.describe());
        let events = block.events();
        let sport = events
            .first()
            .and_then(|e| e.summary.strip_prefix(&format!("UDP: {a}:")))
            .and_then(|s| s.split_once(' '))
            .and_then(|(p, _)| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("block of no datagram from A\n{}", block.lines.join("\n")));
        seen_ports.push(sport);
        let pkt = format!("UDP: {a}:{sport} -> {b}:{DROPPED_PORT}");
        for e in &events {
            assert!(
                e.summary == pkt || e.summary.starts_with(&format!("{pkt}, reason: ")),
                "an event of another packet in the block of {pkt}: {}\n{}",
                e.raw,
                block.lines.join("\n")
            );
        }
        let i = only_event(block, "kfree_skb");
        let ev = parse_line(&block.lines[i]).unwrap();
        let (reason, location) = drop_of(&ev);
        assert_eq!(reason, "NETFILTER_DROP", "{}", ev.raw);
        assert_followed_by(block, i, &event_advice(nf));
        // Nothing else in the block is a problem, so the advice line is the only one.
        assert_eq!(
            block.lines.iter().filter(|l| l.contains("advice:")).count(),
            1,
            "{}",
            block.lines.join("\n")
        );
        drops.push((ev.ts, location));
    }
    seen_ports.sort_unstable();
    assert_eq!(seen_ports, drop_ports, "{}", fin.describe());
    let location = drops[0].1.clone();
    assert!(
        drops.iter().all(|(_, l)| *l == location),
        "the drops happened at different places: {drops:?}"
    );
    let mut times: Vec<&str> = drops.iter().map(|(ts, _)| ts.as_str()).collect();
    times.sort_by(|x, y| {
        x.parse::<f64>()
            .unwrap()
            .total_cmp(&y.parse::<f64>().unwrap())
    });

    // The summary: the last lines of stdout, one row for the rule's drops.
    let summary = summary_lines(&fin);
    let want = summary_table(&[Row {
        count: DROPPED as u64,
        what: format!("drop NETFILTER_DROP at {location}"),
        place: place.clone(),
        rule: "-".into(),
        first: times[0].to_string(),
        last: times[DROPPED - 1].to_string(),
        advice: nf,
    }]);
    assert_eq!(summary, want.as_slice(), "\n{}", fin.describe());
    assert!(
        summary[1].starts_with(&format!("    {DROPPED}  drop NETFILTER_DROP at ")),
        "{}",
        summary[1]
    );
    assert!(summary[2].contains("--nft-trace"), "{}", summary[2]);

    // The same in JSON: the timelines of the drops, then one diag_summary object.
    let drop_ports: Vec<u16> = (0..DROPPED as u16).map(|i| 41011 + i).collect();
    let nt = Nettrace::spawn(&["--netns", b_ns, "--diag", "-o", "json"]);
    mixed_traffic(&t, 41200, &drop_ports);
    let fin = nt.stop_when(WAIT, |l| {
        count_lines(l, r#""drop_reason":"NETFILTER_DROP""#) >= DROPPED
    });
    fin.assert_success();
    let values = parse_json_lines(&fin.stdout_lines);
    let timelines: Vec<&serde_json::Value> =
        values.iter().filter(|v| v["type"] == "timeline").collect();
    let rows: Vec<&serde_json::Value> = values
        .iter()
        .filter(|v| v["type"] == "diag_summary")
        .collect();
    assert_eq!(
        timelines.len() + rows.len(),
        values.len(),
        "only timelines and summary rows expected\n{}",
        fin.describe()
    );
    assert_eq!(timelines.len(), DROPPED, "{}", fin.describe());
    let mut times = Vec::new();
    let mut seen_ports = Vec::new();
    for tl in &timelines {
        let events = tl["events"].as_array().expect("events");
        let drops: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e.get("drop_reason").is_some())
            .collect();
        assert_eq!(drops.len(), 1, "{tl}");
        let d = drops[0];
        assert_eq!(d["tracer"], "kfree_skb", "{tl}");
        assert_eq!(d["drop_reason"], "NETFILTER_DROP", "{tl}");
        assert_eq!(d["location"], location.as_str(), "{tl}");
        assert_eq!(d["pkt"]["dport"], DROPPED_PORT, "{tl}");
        assert_eq!(d["pkt"]["saddr"], a.to_string(), "{tl}");
        seen_ports.push(d["pkt"]["sport"].as_u64().unwrap_or(0) as u16);
        times.push((d["ts_ns"].as_u64().unwrap(), d["time"].as_str().unwrap()));
    }
    seen_ports.sort_unstable();
    assert_eq!(seen_ports, drop_ports, "{}", fin.describe());
    times.sort_unstable();
    assert_eq!(rows.len(), 1, "one summary row\n{}", fin.describe());
    let want = serde_json::json!({
        "type": "diag_summary",
        "kind": "drop",
        "reason": "NETFILTER_DROP",
        "location": location,
        "where": place,
        "rule": null,
        "count": DROPPED,
        "first": times[0].1,
        "last": times[DROPPED - 1].1,
        "advice": nf.text(),
    });
    assert_eq!(*rows[0], want, "{}", fin.describe());
    assert_eq!(
        fin.stdout_lines.last().map(|l| l.contains("diag_summary")),
        Some(true),
        "the summary comes last\n{}",
        fin.describe()
    );
}

#[test]
fn detail_puts_advice_under_the_no_socket_drop_of_udp_to_a_closed_port() {
    preflight();
    let t = topology(SUBNET_UDP);
    let (a, b) = (t.a_addr, t.b_addr);
    let b_ns = t.b.path();
    let (sport, dport) = (42001u16, 7100u16);

    let nt = Nettrace::spawn(&["--netns", b_ns.to_str().unwrap(), "--detail", "--timeline"]);
    udp_send(&t.a, SocketAddr::from((b, dport)), b"anyone there?", sport);
    let unreachable = format!("ICMP: {b} -> {a}, unreachable    , code: 3");
    // B's ICMP error is freed in A, out of scope: its block is printed at exit.
    let fin = nt.stop_when(WAIT, |l| count_lines(l, "reason: NO_SOCKET") >= 1);
    fin.assert_success();
    assert_no_line(&fin.stdout_lines, "a diag summary without --diag", |l| {
        l.contains("diag summary") || l.contains("COUNT  WHAT")
    });

    let pkt = format!("UDP: {a}:{sport} -> {b}:{dport}");
    let blocks = parse_timeline(&fin.stdout_lines);
    let dropped: Vec<&Block> = blocks
        .iter()
        .filter(|bl| bl.lines.iter().any(|l| l.contains("reason: NO_SOCKET")))
        .collect();
    assert_eq!(dropped.len(), 1, "{}", fin.describe());
    let block = dropped[0];
    for e in block.events() {
        assert!(
            e.summary == pkt || e.summary.starts_with(&format!("{pkt}, reason: ")),
            "{}\n{}",
            e.raw,
            block.lines.join("\n")
        );
        assert_eq!(e.iface.as_deref(), Some(t.b_label().as_str()), "{}", e.raw);
    }
    // The kernel answers with port unreachable (icmp_send) before it frees the datagram.
    let icmp = only_event(block, "icmp_send");
    let drop = only_event(block, "kfree_skb");
    assert!(icmp < drop, "{}", block.lines.join("\n"));
    let ev = parse_line(&block.lines[drop]).unwrap();
    assert_eq!(drop_of(&ev).0, "NO_SOCKET", "{}", ev.raw);
    assert_followed_by(block, icmp, &event_advice(advice::for_icmp_sent()));
    let no_socket = drop_advice("NO_SOCKET");
    assert!(no_socket.next_step.contains("ss -lntu"), "{no_socket:?}");
    assert_followed_by(block, drop, &event_advice(no_socket));
    assert_eq!(
        block.lines.iter().filter(|l| l.contains("advice:")).count(),
        2,
        "advice only under the two problem events\n{}",
        block.lines.join("\n")
    );

    // Not --diag: the ICMP error B sends back is printed too, and without advice (nothing
    // went wrong with it).
    let reply: Vec<&Block> = blocks
        .iter()
        .filter(|bl| bl.lines.iter().any(|l| l.contains(&unreachable)))
        .collect();
    assert_eq!(reply.len(), 1, "{}", fin.describe());
    assert!(
        reply[0].lines.iter().all(|l| !l.contains("advice:")),
        "{}",
        reply[0].lines.join("\n")
    );
}

#[test]
fn diag_shows_the_reset_of_tcp_to_a_closed_port() {
    preflight();
    let t = topology(SUBNET_TCP);
    let (a, b) = (t.a_addr, t.b_addr);
    let b_ns = t.b.path();
    let dport = 7200u16;
    let place = format!("netns {}", t.b.inode());

    let nt = Nettrace::spawn(&["--netns", b_ns.to_str().unwrap(), "--diag"]);
    let server = SocketAddrV4::new(b, dport);
    let err = in_netns(&t.a, || {
        TcpStream::connect_timeout(&server.into(), Duration::from_secs(5))
            .expect_err("connect to a closed port succeeded")
    });
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "connect to {server}: {err}"
    );
    let fin = nt.stop_when(WAIT, |l| {
        count_lines(l, "[tcp_send_reset") >= 1 && count_lines(l, "reason: NO_SOCKET") >= 1
    });
    fin.assert_success();

    // One block: the SYN, answered with a reset and dropped. The reset itself went fine and
    // is not printed.
    let blocks = parse_timeline(&fin.stdout_lines);
    assert_eq!(blocks.len(), 1, "{}", fin.describe());
    let block = &blocks[0];
    assert!(block.terminated, "{}", fin.describe());
    for e in block.events() {
        let tcp =
            TcpSummary::parse(&e.summary).unwrap_or_else(|| panic!("not a TCP summary: {}", e.raw));
        assert!(tcp.src.starts_with(&format!("{a}:")), "{}", e.raw);
        assert_eq!(tcp.dst, format!("{b}:{dport}"), "{}", e.raw);
        assert_eq!((tcp.flags.as_str(), tcp.ack), ("S", 0), "{}", e.raw);
    }
    assert_no_line(&fin.stdout_lines, "a packet from B under --diag", |l| {
        l.contains(&format!("TCP: {b}:"))
    });
    let reset = only_event(block, "tcp_send_reset");
    let drop = only_event(block, "kfree_skb");
    assert!(reset < drop, "{}", block.lines.join("\n"));
    assert_followed_by(block, reset, &event_advice(advice::for_tcp_reset()));
    assert_followed_by(block, drop, &event_advice(drop_advice("NO_SOCKET")));
    let reset_ev = parse_line(&block.lines[reset]).unwrap();
    let drop_ev = parse_line(&block.lines[drop]).unwrap();
    let (reason, location) = drop_of(&drop_ev);
    assert_eq!(reason, "NO_SOCKET");

    // Two rows, one problem each, the reset first (same count, earlier).
    let want = summary_table(&[
        Row {
            count: 1,
            what: "tcp reset".into(),
            place: place.clone(),
            rule: "-".into(),
            first: reset_ev.ts.clone(),
            last: reset_ev.ts.clone(),
            advice: advice::for_tcp_reset(),
        },
        Row {
            count: 1,
            what: format!("drop NO_SOCKET at {location}"),
            place,
            rule: "-".into(),
            first: drop_ev.ts.clone(),
            last: drop_ev.ts.clone(),
            advice: drop_advice("NO_SOCKET"),
        },
    ]);
    let summary = summary_lines(&fin);
    assert_eq!(summary, want.as_slice(), "\n{}", fin.describe());
    assert!(
        summary[1].starts_with("    1  tcp reset  "),
        "{}",
        summary[1]
    );
}
