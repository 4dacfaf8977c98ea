//! Scenario 2: filters. Each case runs its own topology; negative cases run a positive
//! control nettrace at the same time so that "nothing appeared" is meaningful.

use std::net::SocketAddr;
use std::time::Duration;

use nettrace_tests::*;

const SUBNET_ADDR: u8 = 20;
/// A subnet no test uses: the filter that must match nothing.
const SUBNET_OTHER: u8 = 29;
const SUBNET_PROTO: u8 = 21;
const SUBNET_DPORT: u8 = 22;
const SUBNET_DIRECTION: u8 = 23;

const WAIT: Duration = Duration::from_secs(10);

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn addr_of_another_subnet_sees_nothing() {
    preflight();
    let t = Topology::bridged(SUBNET_ADDR);
    let b = t.b_addr.to_string();
    let other = format!("10.250.{SUBNET_OTHER}.2");
    let control = Nettrace::spawn(&["-p", "icmp", "--addr", &b]);
    let filtered = Nettrace::spawn(&["-p", "icmp", "--addr", &other]);
    ping(&t.a, t.b_addr, 1);
    let reply = icmp_reply(t.b_addr, t.a_addr, 1);
    let control = control.stop_when(WAIT, |l| has_line(l, &reply));
    let filtered = filtered.stop();
    control.assert_success();
    filtered.assert_success();
    assert_subsequence(
        &control.stdout_lines,
        &[("*", &icmp_request(t.a_addr, t.b_addr, 1)), ("*", &reply)],
    );
    let ours = format!("10.250.{SUBNET_ADDR}.");
    assert_no_line(
        &filtered.stdout_lines,
        "event of this ping with --addr of another subnet",
        |l| l.contains(&ours),
    );
}

#[test]
fn proto_udp_excludes_icmp() {
    preflight();
    let t = Topology::bridged(SUBNET_PROTO);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&["-p", "udp", "--addr", &b]);
    ping(&t.a, t.b_addr, 1);
    udp_send(&t.a, SocketAddr::from((t.b_addr, 42101)), b"x", 42102);
    let want = format!("UDP: {}:42102 -> {}:42101", t.a_addr, t.b_addr);
    let fin = nt.stop_when(WAIT, |l| has_line(l, &want));
    fin.assert_success();
    assert_subsequence(&fin.stdout_lines, &[("*", &want)]);
    assert_no_line(&fin.stdout_lines, "ICMP event with -p udp", |l| {
        l.contains("ICMP")
    });
}

#[test]
fn dport_matches_only_that_port() {
    preflight();
    let t = Topology::bridged(SUBNET_DPORT);
    let nt = Nettrace::spawn(&["-p", "udp", "--dport", "42201"]);
    udp_send(&t.a, SocketAddr::from((t.b_addr, 42201)), b"yes", 42211);
    udp_send(&t.a, SocketAddr::from((t.b_addr, 42202)), b"no", 42212);
    let want = format!("UDP: {}:42211 -> {}:42201", t.a_addr, t.b_addr);
    let fin = nt.stop_when(WAIT, |l| has_line(l, &want));
    fin.assert_success();
    assert_subsequence(&fin.stdout_lines, &[("*", &want)]);
    assert_no_line(&fin.stdout_lines, "event for the other port", |l| {
        l.contains(":42202") || l.contains(":42212")
    });
}

#[test]
fn saddr_and_daddr_select_a_direction() {
    preflight();
    let t = Topology::bridged(SUBNET_DIRECTION);
    let a = t.a_addr.to_string();
    let from_a = Nettrace::spawn(&["-p", "icmp", "-s", &a]);
    let to_a = Nettrace::spawn(&["-p", "icmp", "-d", &a]);
    ping(&t.a, t.b_addr, 1);
    let request = icmp_request(t.a_addr, t.b_addr, 1);
    let reply = icmp_reply(t.b_addr, t.a_addr, 1);
    let from_a = from_a.stop_when(WAIT, |l| has_line(l, &request));
    let to_a = to_a.stop_when(WAIT, |l| has_line(l, &reply));
    from_a.assert_success();
    to_a.assert_success();

    assert_subsequence(&from_a.stdout_lines, &[("*", &request)]);
    let fwd = format!("ICMP: {} -> {}", t.a_addr, t.b_addr);
    assert_no_line(&from_a.stdout_lines, "event not from A with -s A", |l| {
        parse_line(l).is_some_and(|e| !e.summary.starts_with(&fwd))
    });

    assert_subsequence(&to_a.stdout_lines, &[("*", &reply)]);
    let back = format!("ICMP: {} -> {}", t.b_addr, t.a_addr);
    assert_no_line(&to_a.stdout_lines, "event not to A with -d A", |l| {
        parse_line(l).is_some_and(|e| !e.summary.starts_with(&back))
    });
}
