//! How many events per second `kubectl nettrace` carries from the kernel to its stdout, and
//! what it loses: UDP from pod a to pod b at paced rates, traced from pod a through the fake
//! control plane, the real agent (attached over WebSocket) and the plugin's JSON output.
//!
//! Root only. Measure release builds:
//! `cargo build --release --workspace --bins && sudo NETTRACE_BIN=target/release/nettrace
//! KUBECTL_NETTRACE_BIN=target/release/kubectl-nettrace cargo bench -p nettrace-tests --bench
//! kube_stream`. Prints one row per rate.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nettrace_tests::containerd::{pod_json, ContainerBench};
use nettrace_tests::fakekube::FakeCluster;
use nettrace_tests::{plugin_bin, preflight, workspace_dir};
use serde_json::Value;

const SECONDS: u64 = 3;
const PORT: &str = "9999";

/// What the plugin printed.
#[derive(Default)]
struct Tally {
    events: u64,
    /// The last `lost` object (totals).
    lost: Option<Value>,
    ready: bool,
    /// Warnings and errors the plugin printed.
    complaints: Vec<String>,
}

fn main() {
    preflight();
    let load = std::env::temp_dir().join(format!("nettrace-bench-load-{}", std::process::id()));
    let cc = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&load)
        .arg(workspace_dir().join("scripts/bench-load.c"))
        .status()
        .expect("run cc");
    assert!(cc.success(), "cc scripts/bench-load.c failed");

    let cluster = FakeCluster::with_agent(&["node-1"], "nettrace-agent:bench");
    let kubeconfig = std::env::temp_dir().join(format!("nettrace-bench-kc-{}", std::process::id()));
    cluster.write_kubeconfig(&kubeconfig, "bench", "default");
    let bench = ContainerBench::start();
    let (a, b) = (bench.run_pod("a"), bench.run_pod("b"));
    cluster.insert_pod(pod_json("default", "a", "node-1", &[("app", &a)], false));
    cluster.insert_pod(pod_json("default", "b", "node-1", &[("app", &b)], false));

    println!("kubectl nettrace pod/a -p udp --dport {PORT} -t net_dev_queue -o json, {SECONDS} s of 64-byte UDP a -> b");
    println!("(net_dev_queue fires twice per packet: on a's eth0 and, followed, on b's host veth)");
    println!(
        "{:>12} {:>12} {:>14} {:>12} {:>10} {:>8}",
        "offered pps", "sent", "events/s out", "events", "ring lost", "loss %"
    );
    for pps in ["10000", "25000", "50000", "100000", "0"] {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut plugin = Command::new(plugin_bin())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--image",
                "nettrace-agent:bench",
                "pod/a",
                "-p",
                "udp",
                "--dport",
                PORT,
            ])
            .args(["-t", "net_dev_queue", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl-nettrace");
        let out = plugin.stdout.take().expect("stdout");
        let err = plugin.stderr.take().expect("stderr");
        let t = tally.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("{\"type\":\"event\"") {
                    t.lock().expect("tally").events += 1;
                } else if line.starts_with("{\"type\":\"lost\"") {
                    t.lock().expect("tally").lost = serde_json::from_str(&line).ok();
                }
            }
        });
        let t = tally.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("begin tracing") {
                    t.lock().expect("tally").ready = true;
                } else if line.starts_with("warning") || line.starts_with("error") {
                    t.lock().expect("tally").complaints.push(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !tally.lock().expect("tally").ready {
            assert!(
                Instant::now() < deadline,
                "the plugin did not begin tracing"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let started = Instant::now();
        let sent = Command::new("nsenter")
            .arg("-t")
            .arg(a.pid.to_string())
            .arg("-n")
            .arg(&load)
            .args([
                "udp-send",
                &b.ip.to_string(),
                PORT,
                &SECONDS.to_string(),
                "64",
                pps,
            ])
            .output()
            .expect("run bench-load");
        let sent_text = String::from_utf8_lossy(&sent.stdout);
        let sent_n: u64 = sent_text
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        // Let the stream drain, then stop as a user would.
        std::thread::sleep(Duration::from_secs(2));
        let elapsed = started.elapsed().as_secs_f64() - 2.0;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(plugin.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let status = plugin.wait().expect("wait for the plugin");
        let _ = reader.join();
        let t = tally.lock().expect("tally");
        let ring_lost = t
            .lost
            .as_ref()
            .and_then(|l| l["events"].as_u64())
            .unwrap_or(0);
        let produced = t.events + ring_lost;
        println!(
            "{:>12} {:>12} {:>14.0} {:>12} {:>10} {:>7.2}%{}",
            if pps == "0" { "max" } else { pps },
            sent_n,
            t.events as f64 / elapsed.max(0.001),
            t.events,
            ring_lost,
            100.0 * ring_lost as f64 / (produced.max(1)) as f64,
            if status.success() {
                ""
            } else {
                "  (plugin failed)"
            }
        );
        for c in &t.complaints {
            println!("    {c}");
        }
    }
    let _ = std::fs::remove_file(&load);
    let _ = std::fs::remove_file(&kubeconfig);
}
