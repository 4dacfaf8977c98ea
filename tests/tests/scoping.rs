//! Scenario: scoping by network namespace (`--netns` path or inode), interface (`--ifname`)
//! and process (`--pid`). The filtered traces run while unrelated traffic flows elsewhere, so
//! that "only ours" is meaningful.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use nettrace_tests::*;

const SUBNET_NETNS_PATH: u8 = 110;
const SUBNET_NETNS_PATH_OTHER: u8 = 111;
const SUBNET_NETNS_INODE: u8 = 112;
const SUBNET_NETNS_INODE_OTHER: u8 = 113;
const SUBNET_IFNAME: u8 = 114;
const SUBNET_IFNAME_OTHER: u8 = 115;
const SUBNET_IFNAME_MISSING: u8 = 116;
const SUBNET_PID: u8 = 117;

const WAIT: Duration = Duration::from_secs(10);
const PINGS: u16 = 3;

/// Pings A -> B in `t` and, at the same time, in `other`, `PINGS` times each.
fn ping_both(t: &Topology, other: &Topology) {
    std::thread::scope(|s| {
        let o = s.spawn(|| ping(&other.a, other.b_addr, PINGS.into()));
        ping(&t.a, t.b_addr, PINGS.into());
        o.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

/// Checks a `--detail -p icmp` trace scoped to B's namespace: every event is on `b0` of `t`'s
/// B and is this topology's request or reply; the request's arrival in B and the reply's
/// departure from B are there for every sequence number.
fn assert_only_b_side(t: &Topology, other: &Topology, out: &[String]) {
    let b0 = t.b_label();
    for seq in 1..=PINGS {
        let request = icmp_request(t.a_addr, t.b_addr, seq);
        let reply = icmp_reply(t.b_addr, t.a_addr, seq);
        assert_subsequence_steps(
            out,
            &[
                Step::exact("netif_receive_skb", &request).iface(b0.clone()),
                Step::exact("net_dev_queue", &reply).iface(b0.clone()),
                // Named by the hook's device argument: skb->dev is already
                // the peer, in another namespace, when it fires.
                Step::exact("net_dev_xmit", &reply).iface(b0.clone()),
            ],
        );
    }
    assert_no_line(out, "event not on B's b0", |l| {
        parse_line(l).is_some_and(|e| e.iface.as_deref() != Some(b0.as_str()))
    });
    let fwd = format!("ICMP: {} -> {}, ", t.a_addr, t.b_addr);
    let back = format!("ICMP: {} -> {}, ", t.b_addr, t.a_addr);
    assert_no_line(out, "event of another packet", |l| {
        parse_line(l).is_some_and(|e| !e.summary.starts_with(&fwd) && !e.summary.starts_with(&back))
    });
    let theirs = [other.a_addr.to_string(), other.b_addr.to_string()];
    assert_no_line(out, "event of the unrelated topology", |l| {
        theirs.iter().any(|a| l.contains(a.as_str()))
    });
    // Outside B's namespace: A's transmit and the bridge ports must not show.
    assert_no_line(out, "event with A's request transmit", |l| {
        parse_line(l).is_some_and(|e| e.tracer == "net_dev_queue" && e.summary.starts_with(&fwd))
    });
}

fn trace_b_netns(t: &Topology, other: &Topology, netns_arg: &str) -> Finished {
    let nt = Nettrace::spawn(&["-p", "icmp", "--detail", "--netns", netns_arg]);
    ping_both(t, other);
    let last = icmp_reply(t.b_addr, t.a_addr, PINGS);
    nt.stop_when(WAIT, |l| l.iter().any(|l| l.contains(&last)))
}

#[test]
fn netns_path_scopes_to_b() {
    preflight();
    let t = Topology::bridged(SUBNET_NETNS_PATH);
    let other = Topology::bridged(SUBNET_NETNS_PATH_OTHER);
    let path = t.b.path().to_string_lossy().into_owned();
    assert_eq!(path, format!("/run/netns/{}", t.b.name()));
    let fin = trace_b_netns(&t, &other, &path);
    fin.assert_success();
    assert_only_b_side(&t, &other, &fin.stdout_lines);
}

#[test]
fn netns_inode_scopes_to_b() {
    preflight();
    let t = Topology::bridged(SUBNET_NETNS_INODE);
    let other = Topology::bridged(SUBNET_NETNS_INODE_OTHER);
    let fin = trace_b_netns(&t, &other, &t.b.inode().to_string());
    fin.assert_success();
    assert_only_b_side(&t, &other, &fin.stdout_lines);
}

#[test]
fn ifname_in_netns_scopes_to_that_port() {
    preflight();
    let t = Topology::bridged(SUBNET_IFNAME);
    // The unrelated topology's middle namespace has a `pa` too (same ifindex, same name).
    let other = Topology::bridged(SUBNET_IFNAME_OTHER);
    let mid = t.mid.path().to_string_lossy().into_owned();
    let nt = Nettrace::spawn(&["-p", "icmp", "--detail", "--ifname", "pa", "--netns", &mid]);
    ping_both(&t, &other);
    let last = icmp_reply(t.b_addr, t.a_addr, PINGS);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|l| l.contains(&last)));
    fin.assert_success();
    let out = &fin.stdout_lines;

    let pa = t.mid_a_label();
    for seq in 1..=PINGS {
        let request = icmp_request(t.a_addr, t.b_addr, seq);
        let reply = icmp_reply(t.b_addr, t.a_addr, seq);
        assert_subsequence_steps(
            out,
            &[
                Step::exact("netif_receive_skb", &request).iface(pa.clone()),
                Step::exact("net_dev_queue", &reply).iface(pa.clone()),
            ],
        );
    }
    assert_no_line(out, "event not on mid's pa", |l| {
        parse_line(l).is_some_and(|e| e.iface.as_deref() != Some(pa.as_str()))
    });
    let theirs = [other.a_addr.to_string(), other.b_addr.to_string()];
    assert_no_line(out, "event of the unrelated topology", |l| {
        theirs.iter().any(|a| l.contains(a.as_str()))
    });
}

/// The one-line error for `--ifname` naming no interface: non-zero exit, nothing traced.
fn assert_ifname_error(args: &[&str], expected: &str) {
    let fin = Nettrace::run_to_end(args, Duration::from_secs(30));
    assert!(
        !fin.status.success(),
        "nettrace accepted a missing interface\n{}",
        fin.describe()
    );
    assert!(
        !fin.began_tracing(),
        "nettrace began tracing with a missing interface\n{}",
        fin.describe()
    );
    assert_eq!(
        fin.nonempty_stderr(),
        vec![expected],
        "expected exactly one error line\n{}",
        fin.describe()
    );
    assert!(
        fin.stdout_lines.iter().all(|l| l.trim().is_empty()),
        "stdout not empty\n{}",
        fin.describe()
    );
}

#[test]
fn ifname_missing_is_an_error() {
    preflight();
    assert_ifname_error(
        &["-p", "icmp", "--ifname", "ntt-nosuch0"],
        "nettrace: --ifname: no interface named ntt-nosuch0",
    );
    // `b0` exists, but in B: it is resolved in the --netns given (mid), where it does not.
    let t = Topology::bridged(SUBNET_IFNAME_MISSING);
    let mid = t.mid.path().to_string_lossy().into_owned();
    assert_ifname_error(
        &["-p", "icmp", "--ifname", "b0", "--netns", &mid],
        &format!("nettrace: in network namespace {mid}: --ifname: no interface named b0"),
    );
}

#[test]
fn pid_keeps_only_that_process() {
    preflight();
    let t = Topology::bridged(SUBNET_PID);
    // Resolve the neighbours first: while ARP is pending the kernel parks the request and
    // transmits it later from whichever task handles the ARP reply, which --pid rightly
    // filters out.
    ping(&t.a, t.b_addr, 1);
    ping(&t.b, t.a_addr, 1);
    // `ip netns exec` execs `sh`, which waits for a line on stdin and then execs ping: the
    // pid is ping's, and ping starts only once nettrace is tracing (on EOF, sh just exits).
    let b = t.b_addr.to_string();
    let script = format!("read _go && exec ping -n -c {PINGS} -i 0.3 -W 1 {b}");
    let mut child = Command::new("ip")
        .args(["netns", "exec", t.a.name(), "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip netns exec ... ping");
    let pid = child.id();
    // Kill the child if anything below panics before it finished.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let mut reap = Reap(Some(child));
    let nt = Nettrace::spawn(&["--pid", &pid.to_string(), "-p", "icmp", "--detail"]);
    writeln!(stdin, "go").expect("start ping");
    drop(stdin);
    // Unrelated ICMP from other processes at the same time (B pings A).
    ping(&t.b, t.a_addr, PINGS.into());
    let out = reap.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ping in A failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // nettrace ends the trace itself, saying so once, when the process has exited.
    let fin = nt.wait_exit(WAIT);
    assert!(!fin.status.success(), "{}", fin.describe());
    assert_eq!(
        fin.nonempty_stderr().last().copied(),
        Some(format!("nettrace: process {pid} exited; tracing stopped").as_str()),
        "{}",
        fin.describe()
    );
    let lines = &fin.stdout_lines;

    for seq in 1..=PINGS {
        let request = icmp_request(t.a_addr, t.b_addr, seq);
        let ev = assert_subsequence_steps(
            lines,
            &[Step::exact("net_dev_queue", &request).iface(t.a_label())],
        );
        assert_eq!(ev[0].pid, Some(pid), "{}", ev[0].raw);
    }
    let task = format!("[pid:{pid},ping");
    assert_no_line(lines, "event of another task with --pid", |l| {
        parse_line(l).is_some_and(|e| {
            e.pid != Some(pid) || e.comm.as_deref() != Some("ping") || !l.contains(&task)
        })
    });
}
