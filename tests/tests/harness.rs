//! Self-tests of the harness (no nettrace needed): namespaces, topologies, traffic, cleanup.

use nettrace_tests::{require_root, require_tools, DEFAULT_TOOLS};

/// Like `preflight` without requiring the nettrace binary.
fn preflight() {
    require_root();
    require_tools(DEFAULT_TOOLS);
}

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use nettrace_tests::traffic::in_netns;
use nettrace_tests::{
    assert_subsequence, ping, ping_expect_loss, prog_ids_from_verbose, tcp_exchange, udp_send,
    Netns, Nettrace, Topology,
};

#[test]
fn netns_is_removed_on_drop_even_on_panic() {
    preflight();
    let mut seen = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new();
        assert!(ns.inode() > 0);
        seen = Some(ns.path());
        assert!(ns.path().exists());
        panic!("deliberate panic with a live namespace");
    }));
    assert!(r.is_err());
    let p = seen.expect("namespace was created");
    assert!(!p.exists(), "{} still exists after a panic", p.display());
}

#[test]
fn bridged_ping_and_labels() {
    preflight();
    let t = Topology::bridged(201);
    ping(&t.a, t.b_addr, 1);
    ping(&t.b, t.a_addr, 1);
    assert!(t.a_label().ends_with(":a0"));
    assert!(t.mid_b_label().ends_with(":pb"));
}

#[test]
fn routed_ping_dnat_udp_tcp() {
    preflight();
    let t = Topology::routed(203);
    ping(&t.a, t.b_addr, 1);
    let vip = Ipv4Addr::new(10, 250, 204, 100);
    t.add_dnat(vip, t.b_addr);
    ping(&t.a, vip, 1);

    // UDP: a receiver in B sees the datagram from A's chosen source port.
    let got = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            in_netns(&t.b, || {
                let sock = UdpSocket::bind((t.b_addr, 41001)).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                (buf[..n].to_vec(), from)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        udp_send(&t.a, SocketAddr::from((t.b_addr, 41001)), b"hi", 41002);
        rx.join().unwrap()
    });
    assert_eq!(got.0, b"hi");
    assert_eq!(got.1, SocketAddr::from((t.a_addr, 41002)));

    let x = tcp_exchange(&t.a, &t.b, SocketAddrV4::new(t.b_addr, 41003), 41004);
    assert_eq!(x.client, SocketAddrV4::new(t.a_addr, 41004));
}

#[test]
fn bridged_v6_ping_and_udp() {
    preflight();
    let t = Topology::bridged_v6(125);
    assert_eq!(t.a6().to_string(), "fd00:250:125::1");
    assert_eq!(t.b6().to_string(), "fd00:250:125::2");
    ping(&t.a, t.b6(), 1);
    ping(&t.b, t.a6(), 1);
    // IPv4 still works; other topologies keep IPv6 off.
    ping(&t.a, t.b_addr, 1);
    let plain = Topology::bridged(126);
    assert!(plain.a_addr6.is_none());
    let v6_off = plain
        .a
        .exec_ok(&["cat", "/proc/sys/net/ipv6/conf/a0/disable_ipv6"]);
    assert_eq!(String::from_utf8_lossy(&v6_off.stdout).trim(), "1");

    let got = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            in_netns(&t.b, || {
                let sock = UdpSocket::bind((t.b6(), 41011)).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                (buf[..n].to_vec(), from)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        udp_send(&t.a, SocketAddr::from((t.b6(), 41011)), b"hi6", 41012);
        rx.join().unwrap()
    });
    assert_eq!(got.0, b"hi6");
    assert_eq!(got.1, SocketAddr::from((t.a6(), 41012)));
}

#[test]
fn ping_expect_loss_with_drop_rule() {
    preflight();
    let t = Topology::bridged(205);
    t.b.iptables(&["-A", "INPUT", "-p", "icmp", "-j", "DROP"]);
    ping_expect_loss(&t.a, t.b_addr, 1);
}

/// A stand-in for nettrace: attaches nothing, prints like it, exits 0 on SIGINT/SIGTERM.
const FAKE: &str = r#"#!/bin/sh
trap 'echo "bye" >&2; exit 0' INT TERM
echo "attached netif_rx, prog id 1" >&2
echo "begin tracing......" >&2
echo "1.000001: [netif_rx                ]: ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1"
while true; do sleep 0.05; done
"#;

#[test]
fn runner_spawns_and_stops_with_signals() {
    let dir = std::env::temp_dir().join(format!("ntt-{}-fake", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("nettrace");
    std::fs::write(&bin, FAKE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();

    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let nt = Nettrace::spawn_bin(&bin, &["-v"]);
        assert!(nt.wait_for_stdout(Duration::from_secs(5), |l| !l.is_empty()));
        let fin = nt.stop_with(sig);
        fin.assert_success();
        assert_eq!(prog_ids_from_verbose(&fin.stderr_lines), vec![1]);
        assert_subsequence(&fin.stdout_lines, &[("netif_rx", "ping request")]);
        assert!(fin.stderr_lines.iter().any(|l| l == "bye"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
