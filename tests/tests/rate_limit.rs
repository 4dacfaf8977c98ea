//! `--rate-limit N` is one limit for the whole machine: in every full second of a flood that
//! produces far more than N events, between 0.9·N and N events are delivered, whether the
//! traffic runs on one CPU or on all of them (the limit used to be split into N / CPUs per
//! CPU: traffic on one CPU got 55 of 100 events per second on two CPUs).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use nettrace_tests::*;
use serde_json::Value;

const LIMIT: u64 = 200;
const PORT: u16 = 40_150;
const FLOOD: Duration = Duration::from_millis(4500);

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity({cpu})");
    }
}

/// Floods B from A for `FLOOD`, one sender thread pinned to each CPU of `cpus`.
fn flood(t: &Topology, cpus: &[usize]) {
    let to = SocketAddr::new(t.b_addr.into(), PORT);
    std::thread::scope(|s| {
        for &cpu in cpus {
            let a = &t.a;
            s.spawn(move || {
                in_netns(a, move || {
                    pin(cpu);
                    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind in A");
                    let start = Instant::now();
                    while start.elapsed() < FLOOD {
                        for _ in 0..64 {
                            // ECONNREFUSED from an ICMP port unreachable is expected.
                            let _ = sock.send_to(b"nettrace rate limit", to);
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            });
        }
    });
}

/// Events delivered per second of the kernel's clock, full seconds only.
fn per_second(fin: &Finished) -> Vec<u64> {
    let mut seconds: BTreeMap<u64, u64> = BTreeMap::new();
    for v in parse_json_lines(&fin.stdout_lines) {
        if v["type"] == "event" {
            let ts = v["ts_ns"].as_u64().expect("ts_ns");
            *seconds.entry(ts / 1_000_000_000).or_default() += 1;
        }
    }
    let keys: Vec<u64> = seconds.keys().copied().collect();
    // The first and last seconds are partial.
    keys.iter()
        .skip(1)
        .take(keys.len().saturating_sub(2))
        .map(|k| seconds[k])
        .collect()
}

fn check(subnet: u8, cpus: &[usize]) {
    preflight();
    let t = Topology::bridged(subnet);
    let b = t.b_addr.to_string();
    let port = PORT.to_string();
    let limit = LIMIT.to_string();
    let nt = Nettrace::spawn(&[
        "-o",
        "json",
        "-p",
        "udp",
        "--addr",
        &b,
        "--dport",
        &port,
        "--rate-limit",
        &limit,
    ]);
    flood(&t, cpus);
    std::thread::sleep(Duration::from_millis(300));
    let fin = nt.stop();
    fin.assert_success();
    let values = parse_json_lines(&fin.stdout_lines);
    let lost: Vec<&Value> = values.iter().filter(|v| v["type"] == "lost").collect();
    let suppressed = lost
        .last()
        .and_then(|l| l["rate_limited"].as_u64())
        .unwrap_or(0);
    assert!(
        suppressed > 0,
        "the flood never reached the limit\n{}",
        fin.describe()
    );
    let counts = per_second(&fin);
    assert!(counts.len() >= 2, "fewer than two full seconds: {counts:?}");
    for c in &counts {
        assert!(
            *c * 10 >= LIMIT * 9 && *c <= LIMIT,
            "cpus {cpus:?}: {c} events in a second with --rate-limit {LIMIT} (all: {counts:?})"
        );
    }
}

#[test]
fn rate_limit_holds_for_traffic_on_one_cpu() {
    check(150, &[0]);
}

#[test]
fn rate_limit_holds_for_traffic_on_every_cpu() {
    let cpus: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    check(151, &cpus);
}
