//! `kubectl nettrace` with a reader that stops reading, and with an agent that sends a line
//! that never ends (issue 10, item 7).
//!
//! - A reader that does not read the plugin's stdout for longer than the agent's idle
//!   timeout, while events flow: the trace survives (the keep-alives do not wait for
//!   stdout), the events that did not fit are dropped, counted and reported on stderr, and
//!   events flow again once the reader is back. On the real bench cluster
//!   (`tests/kube/cluster.sh`, `nettrace_tests::cluster`) with the real agent image.
//! - An agent whose stdout line goes past the protocol's limit: the plugin stops with an
//!   error naming the node, in bounded memory. A real cluster cannot run a broken agent on
//!   demand: this one runs on the fake control plane (`tests/src/fakekube`), whose kubelet
//!   runs a shell script as the agent image.
//!
//! Needs root and the cluster's pieces (`./dev test` has them all); a missing piece fails the
//! test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nettrace_tests::cluster::{shared_host, TestNs};
use nettrace_tests::fakekube::{self, FakeCluster};
use nettrace_tests::{plugin_bin, require_root};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "nettrace-bp-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A kilobyte figure of `/proc/PID/status` (`VmRSS`, `VmHWM`), if the process is alive.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CLOCK_MONOTONIC in ns: the clock of the events' `ts_ns` on this (single) node.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// Collects the lines of a stream on a thread.
fn collect_lines<R: Read + Send + 'static>(src: R) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Reads the plugin's JSON stdout, unless paused: while paused it does not read at all,
/// like `less` left alone.
#[derive(Default)]
struct Reader {
    paused: Mutex<bool>,
    wake: Condvar,
    /// Event objects read.
    events: AtomicU64,
    /// The largest `ts_ns` of an event read.
    last_ts: AtomicU64,
    /// Lines that are not JSON objects.
    bad: Mutex<Vec<String>>,
}

impl Reader {
    fn start<R: Read + Send + 'static>(src: R) -> Arc<Reader> {
        let reader = Arc::new(Reader::default());
        let me = reader.clone();
        std::thread::spawn(move || {
            let mut src = BufReader::with_capacity(8192, src);
            let mut line = Vec::new();
            loop {
                {
                    let mut p = me.paused.lock().unwrap();
                    while *p {
                        p = me.wake.wait(p).unwrap();
                    }
                }
                line.clear();
                match src.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(v) if v["type"] == "event" => {
                        me.events.fetch_add(1, Ordering::Relaxed);
                        if let Some(ts) = v["ts_ns"].as_u64() {
                            me.last_ts.fetch_max(ts, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => me
                        .bad
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&line).into_owned()),
                }
            }
        });
        reader
    }

    fn pause(&self, on: bool) {
        *self.paused.lock().unwrap() = on;
        self.wake.notify_all();
    }

    fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

fn describe(stderr: &Mutex<Vec<String>>, reader: &Reader) -> String {
    format!(
        "events read: {}\nunreadable stdout lines: {:?}\n--- plugin stderr ---\n{}\n--- end ---",
        reader.events(),
        reader
            .bad
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .collect::<Vec<_>>(),
        stderr.lock().unwrap().join("\n")
    )
}

/// Polls `pred` every 50 ms for up to `within`.
fn wait_until(within: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `within` for the child to exit, tracking its peak RSS; kills it past that.
/// Returns the status (None: it had to be killed) and the peak RSS seen, in kB.
fn wait_exit_tracking_rss(child: &mut Child, within: Duration) -> (Option<ExitStatus>, u64) {
    let pid = child.id();
    let deadline = Instant::now() + within;
    let mut peak = 0;
    loop {
        if let Some(kb) = status_kb(pid, "VmHWM") {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (Some(status), peak);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that no agent pod and no agent process is left, waiting up to `within`.
fn assert_no_agents(cluster: &FakeCluster, within: Duration) {
    let gone = wait_until(within, || {
        cluster.processes().is_empty()
            && !cluster
                .pods()
                .iter()
                .any(|p| p["metadata"]["namespace"] == fakekube::AGENT_NAMESPACE)
    });
    assert!(
        gone,
        "agents left after {within:?}: processes {:?}",
        cluster.processes()
    );
}

/// The plugin traces pod a's pings to c (about 100 a second, a few thousand JSON events a
/// second), both on `nt-node1` of the real bench cluster, while its reader stops reading for
/// `stall`. With `idle_secs`, the agent's idle timeout is set to that
/// (`--agent-idle-timeout`); without, it is the default (60 s).
fn stalled_reader(idle_secs: Option<u64>, stall: Duration) {
    let _host = shared_host();
    let mut ns = TestNs::new("stall");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let c_ip = ns.ip("c");
    let kubeconfig = ns.cluster.admin.clone();

    let idle = idle_secs.map(|s| s.to_string());
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "-n",
        &ns.name,
        "--agent-namespace",
        &ns.name,
        "pod/a",
        "-p",
        "icmp",
        "-o",
        "json",
    ];
    if let Some(idle) = &idle {
        args.extend(["--agent-idle-timeout", idle]);
    }
    let mut plugin = Reaped(
        Command::new(plugin_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl-nettrace"),
    );
    let pid = plugin.0.id();
    let stderr = collect_lines(plugin.0.stderr.take().expect("stderr"));
    let reader = Reader::start(plugin.0.stdout.take().expect("stdout"));
    let began = wait_until(Duration::from_secs(90), || {
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("begin tracing"))
    });
    assert!(began, "no `begin tracing`\n{}", describe(&stderr, &reader));

    let _pings = Reaped(ns.exec_spawn("a", &["ping", "-q", "-i", "0.01", &c_ip]));
    assert!(
        wait_until(Duration::from_secs(20), || reader.events() >= 100),
        "events do not flow\n{}",
        describe(&stderr, &reader)
    );

    // The reader goes away for longer than the agent's idle timeout.
    reader.pause(true);
    let stalled_at = Instant::now();
    let read_before = reader.events();
    let mut peak_rss = 0;
    while stalled_at.elapsed() < stall {
        if let Some(status) = plugin.0.try_wait().expect("try_wait") {
            panic!(
                "the plugin ended {:?} into the stall ({status})\n{}",
                stalled_at.elapsed(),
                describe(&stderr, &reader)
            );
        }
        if let Some(kb) = status_kb(pid, "VmRSS") {
            peak_rss = peak_rss.max(kb);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let dropping = |l: &String| l.contains("events dropped (output stalled");
    let reported_in_stall = stderr.lock().unwrap().iter().any(dropping);
    eprintln!(
        "stalled {stall:?}: plugin RSS at most {} MiB",
        peak_rss / 1024
    );
    assert!(
        peak_rss < 200 * 1024,
        "the plugin grew to {peak_rss} kB while stdout was not read"
    );

    // The reader is back: what was queued arrives, then new events.
    let resumed_ns = monotonic_ns();
    reader.pause(false);
    assert!(
        wait_until(Duration::from_secs(30), || reader
            .last_ts
            .load(Ordering::Relaxed)
            > resumed_ns),
        "no event from after the stall arrived\n{}",
        describe(&stderr, &reader)
    );
    assert!(reader.events() > read_before);
    assert!(
        reported_in_stall,
        "no drops reported on stderr during the stall\n{}",
        describe(&stderr, &reader)
    );
    drop(_pings);

    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT the plugin");
    let (status, _) = wait_exit_tracking_rss(&mut plugin.0, Duration::from_secs(60));
    // let the reader threads take the last lines
    std::thread::sleep(Duration::from_millis(300));
    let status =
        status.unwrap_or_else(|| panic!("the plugin did not exit\n{}", describe(&stderr, &reader)));
    assert!(
        status.success(),
        "the plugin failed ({status})\n{}",
        describe(&stderr, &reader)
    );
    let errs = stderr.lock().unwrap().clone();
    assert!(
        !errs
            .iter()
            .any(|l| l.starts_with("error:") || l.contains("keep-alive")),
        "{}",
        describe(&stderr, &reader)
    );
    // The final summary counts the drops.
    let last = errs
        .iter()
        .rev()
        .find(|l| dropping(l))
        .unwrap_or_else(|| panic!("no drop summary\n{}", describe(&stderr, &reader)));
    let n: u64 = last
        .trim_start_matches("nettrace: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {last:?}"));
    assert!(n > 0, "{last}");
    eprintln!(
        "{} events read in all, {read_before} before the stall\n{}",
        reader.events(),
        errs.join("\n")
    );
    assert!(
        reader.bad.lock().unwrap().is_empty(),
        "{}",
        describe(&stderr, &reader)
    );
    ns.assert_no_agents(Duration::from_secs(10), "after the stalled reader");
}

#[test]
fn a_reader_stalled_past_the_agent_idle_timeout_loses_events_not_the_trace() {
    // An idle timeout of 5 s, a reader gone for 20 s.
    stalled_reader(Some(5), Duration::from_secs(20));
}

#[test]
fn a_reader_stalled_for_three_minutes_loses_events_not_the_trace() {
    stalled_reader(None, Duration::from_secs(180));
}

/// A stand-in for the agent: the start of the protocol, then 128 MiB without a newline.
const BROKEN_AGENT: &str = r#"#!/bin/sh
read -r spec
echo '{"v":1,"type":"hello","agent":"broken","kernel":"k","backends":["tracepoint"],"clock":{"monotonic_ns":1,"realtime_ns":1}}'
echo '{"v":1,"type":"resolved","targets":[]}'
echo '{"v":1,"type":"ready","tracers":1,"scope":"none"}'
head -c 134217728 /dev/zero | tr '\0' x
exec sleep 600
"#;

fn write_script(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn an_agent_line_past_the_limit_fails_the_trace_naming_the_node_in_bounded_memory() {
    require_root();
    let image = Scratch::new("image");
    write_script(&image.0, "nettrace", BROKEN_AGENT);
    let cluster = FakeCluster::start(
        &["node-1"],
        HashMap::from([("broken-agent:1".to_string(), image.0.clone())]),
    );
    cluster.create_namespace(
        fakekube::AGENT_NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    );
    let dir = Scratch::new("long");
    let kubeconfig = dir.0.join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig, "bp", "default");
    let mut plugin = Reaped(
        Command::new(plugin_bin())
            .args(["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")])
            .args(["--image", "broken-agent:1", "node/node-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl-nettrace"),
    );
    let stderr = collect_lines(plugin.0.stderr.take().expect("stderr"));
    let started = Instant::now();
    let (status, peak) = wait_exit_tracking_rss(&mut plugin.0, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let errs = stderr.lock().unwrap().join("\n");
    eprintln!(
        "the plugin ended after {:?}, peak RSS {} MiB; its stderr:\n{errs}",
        started.elapsed(),
        peak / 1024
    );
    let status = status.unwrap_or_else(|| {
        panic!("the plugin did not exit within 60 s (peak RSS {peak} kB)\n{errs}")
    });
    assert_eq!(status.code(), Some(1), "{errs}");
    assert!(
        errs.lines().any(|l| l
            .starts_with("error: node node-1: the agent sent a line longer than 16777216 bytes")),
        "{errs}"
    );
    assert!(
        peak < 96 * 1024,
        "the plugin's RSS reached {peak} kB: the line was held in memory\n{errs}"
    );
    assert_no_agents(&cluster, Duration::from_secs(15));
}
