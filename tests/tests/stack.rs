//! Scenario 11: `--stack` prints kernel call stacks; `-t all --stack` needs `--force-stack`.

use std::time::Duration;

use nettrace_tests::*;

const SUBNET: u8 = 90;
const STACK_HEADER: &str = "Call Stack:";
/// A frame the stack of an nft DROP must contain.
const DROP_FRAME: &str = "nft_do_chain";
const DROP_TRACER: &str = "kfree_skb";

#[test]
fn stack_of_an_iptables_drop() {
    preflight();
    let t = Topology::bridged(SUBNET);
    t.b.iptables(&["-A", "INPUT", "-p", "icmp", "-j", "DROP"]);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&["-t", DROP_TRACER, "--stack", "-p", "icmp", "--addr", &b]);
    ping_expect_loss(&t.a, t.b_addr, 1);
    let fin = nt.stop_when(Duration::from_secs(10), |l| {
        l.iter().any(|x| x.contains(DROP_FRAME))
    });
    fin.assert_success();
    let out = &fin.stdout_lines;

    // Every event is from the one selected tracer.
    assert_no_line(out, "event of another tracer with -t kfree_skb", |l| {
        parse_line(l).is_some_and(|e| e.tracer != DROP_TRACER)
    });
    // An event of the drop, then a stack header, then frames (until an empty or event line)
    // of which one is nft_do_chain.
    let request = icmp_request(t.a_addr, t.b_addr, 1);
    let found = out.iter().enumerate().any(|(i, l)| {
        let is_drop = parse_line(l)
            .is_some_and(|e| e.tracer == DROP_TRACER && e.summary.starts_with(&request));
        if !is_drop {
            return false;
        }
        let rest = &out[i + 1..];
        let Some(h) = rest.iter().take(3).position(|x| x.trim() == STACK_HEADER) else {
            return false;
        };
        rest[h + 1..]
            .iter()
            .take_while(|x| !x.trim().is_empty() && parse_line(x).is_none())
            .any(|x| x.contains(DROP_FRAME))
    });
    assert!(
        found,
        "no `{DROP_TRACER}` event of the request followed by `{STACK_HEADER}` and a `{DROP_FRAME}` frame\n{}",
        dump(out)
    );
}

#[test]
fn stack_with_all_tracers_needs_force() {
    require_root();
    let fin = Nettrace::run_to_end(&["-t", "all", "--stack"], Duration::from_secs(20));
    assert!(
        !fin.status.success(),
        "`-t all --stack` was accepted\n{}",
        fin.describe()
    );
    assert_eq!(
        fin.nonempty_stderr().len(),
        1,
        "expected exactly one stderr line\n{}",
        fin.describe()
    );
    assert!(!fin.began_tracing(), "began tracing\n{}", fin.describe());
}

/// Many different kernel paths, each with `--stack`: every event carries its stack and no
/// stack is counted as failed. With a kernel stack map (4096 buckets, never emptied, a bucket
/// collision of two different stacks refused with EEXIST) this failed after a few dozen
/// distinct stacks; the stack now travels in the event record itself.
#[test]
fn every_event_keeps_its_stack_across_many_paths() {
    preflight();
    let t = Topology::bridged(SUBNET + 1);
    t.b.iptables(&["-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP"]);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&[
        "-t",
        "all",
        "--stack",
        "--force-stack",
        "-o",
        "json",
        "--addr",
        &b,
    ]);
    // ICMP there and back, UDP to a closed port (ICMP error), UDP dropped by a rule, TCP to a
    // listener and to a closed port (reset): each crosses other functions.
    ping(&t.a, t.b_addr, 2);
    for port in [7u16, 9, 11] {
        udp_send(
            &t.a,
            std::net::SocketAddr::new(t.b_addr.into(), port),
            b"stacks",
            40000 + port,
        );
    }
    let server = std::net::SocketAddrV4::new(t.b_addr, 8081);
    tcp_exchange(&t.a, &t.b, server, 41000);
    let _ =
        t.a.exec(&["bash", "-c", &format!("exec 3<>/dev/tcp/{b}/8082")]);
    ping(&t.a, t.b_addr, 2);
    std::thread::sleep(Duration::from_millis(500));
    let fin = nt.stop();
    fin.assert_success();
    let values = parse_json_lines(&fin.stdout_lines);
    let events: Vec<_> = values.iter().filter(|v| v["type"] == "event").collect();
    assert!(
        events.len() > 100,
        "only {} events\n{}",
        events.len(),
        fin.describe()
    );
    let distinct: std::collections::HashSet<String> =
        events.iter().map(|e| e["stack"].to_string()).collect();
    assert!(
        distinct.len() > 30,
        "only {} distinct stacks",
        distinct.len()
    );
    let without: Vec<_> = events
        .iter()
        .filter(|e| e["stack"].as_array().is_none_or(|s| s.is_empty()))
        .collect();
    assert!(
        without.is_empty(),
        "{} of {} events without a stack, e.g. {}",
        without.len(),
        events.len(),
        without[0]
    );
    // A lost record appears only when something was lost.
    if let Some(lost) = values.iter().rfind(|v| v["type"] == "lost") {
        assert_eq!(lost["stack_failed"], 0, "stacks failed: {lost}");
    }
}
