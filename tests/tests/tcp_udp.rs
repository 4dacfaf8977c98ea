//! Scenario 3: TCP handshake/data and UDP summaries.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use nettrace_tests::*;

const SUBNET_TCP: u8 = 30;
const SUBNET_UDP: u8 = 31;
const SERVER_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 43001;
const UDP_SPORT: u16 = 43101;
const UDP_DPORT: u16 = 43102;
/// Whether the UDP summary is exactly `UDP: a:sp -> b:dp` (nothing after it).
const UDP_SUMMARY_EXACT: bool = true;

const WAIT: Duration = Duration::from_secs(10);

/// TCP events of the output, in order.
fn tcp_events(lines: &[String]) -> Vec<(Event, TcpSummary)> {
    find_events(lines)
        .into_iter()
        .filter_map(|e| TcpSummary::parse(&e.summary).map(|t| (e, t)))
        .collect()
}

fn position(
    evs: &[(Event, TcpSummary)],
    from: usize,
    what: &str,
    lines: &[String],
    pred: impl Fn(&TcpSummary) -> bool,
) -> usize {
    match evs.iter().skip(from).position(|(_, t)| pred(t)) {
        Some(i) => from + i,
        None => panic!(
            "no TCP event for {what} (after event #{from})\n{}",
            dump(lines)
        ),
    }
}

#[test]
fn tcp_handshake_and_data() {
    preflight();
    let t = Topology::bridged(SUBNET_TCP);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&["-p", "tcp", "--addr", &b]);
    let x = tcp_exchange(
        &t.a,
        &t.b,
        SocketAddrV4::new(t.b_addr, SERVER_PORT),
        CLIENT_PORT,
    );
    assert_eq!(x.client, SocketAddrV4::new(t.a_addr, CLIENT_PORT));
    let client = format!("{}:{CLIENT_PORT}", t.a_addr);
    let server = format!("{}:{SERVER_PORT}", t.b_addr);
    let fin = nt.stop_when(WAIT, |l| {
        tcp_events(l)
            .iter()
            .any(|(_, s)| s.src == server && s.flags.contains('F'))
    });
    fin.assert_success();
    let out = &fin.stdout_lines;
    let evs = tcp_events(out);
    assert!(!evs.is_empty(), "no TCP event\n{}", dump(out));

    // Every TCP event is about this connection, in one direction or the other.
    for (e, s) in &evs {
        let fwd = s.src == client && s.dst == server;
        let back = s.src == server && s.dst == client;
        assert!(
            fwd || back,
            "TCP event of another flow: {:?}\n{}",
            e.raw,
            dump(out)
        );
    }

    // The first TCP event is the client's SYN.
    let (first_ev, syn) = &evs[0];
    assert!(
        syn.src == client && syn.dst == server && syn.ack == 0 && syn.flags == "S",
        "first TCP event is not the SYN `TCP: {client} -> {server}, seq: N, ack: 0, flags: S`: {:?}\n{}",
        first_ev.raw,
        dump(out)
    );
    let isn = syn.seq;
    let synack_i = position(&evs, 1, "SYN-ACK", out, |s| {
        s.src == server && s.flags == "SA" && s.ack == isn.wrapping_add(1)
    });
    let server_isn = evs[synack_i].1.seq;
    let ack_i = position(&evs, synack_i + 1, "handshake ACK", out, |s| {
        s.src == client
            && s.flags == "A"
            && s.seq == isn.wrapping_add(1)
            && s.ack == server_isn.wrapping_add(1)
    });
    let req_i = position(&evs, ack_i, "client data (PA)", out, |s| {
        s.src == client && s.flags == "PA" && s.seq == isn.wrapping_add(1)
    });
    position(&evs, req_i + 1, "server reply (PA)", out, |s| {
        s.src == server
            && s.flags == "PA"
            && s.seq == server_isn.wrapping_add(1)
            && s.ack == isn.wrapping_add(1 + x.request.len() as u32)
    });
}

#[test]
fn udp_summary() {
    preflight();
    let t = Topology::bridged(SUBNET_UDP);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&["-p", "udp", "--addr", &b]);
    udp_send(
        &t.a,
        SocketAddr::from((t.b_addr, UDP_DPORT)),
        b"hello",
        UDP_SPORT,
    );
    let want = format!("UDP: {}:{UDP_SPORT} -> {}:{UDP_DPORT}", t.a_addr, t.b_addr);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains(&want)));
    fin.assert_success();
    let step = if UDP_SUMMARY_EXACT {
        Step::exact("*", &want)
    } else {
        Step::new("*", &want)
    };
    assert_subsequence_steps(&fin.stdout_lines, &[step]);
    assert_no_line(&fin.stdout_lines, "non-UDP event with -p udp", |l| {
        parse_line(l).is_some_and(|e| !e.summary.starts_with("UDP: "))
    });
}
