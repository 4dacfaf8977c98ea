//! `nettrace agent`: protocol v1 against a fake container (a process in its
//! own network namespace and in a cgroup named after a container id), with
//! real pings. The agent runs inside a "node" namespace, so the host side of
//! the container's veth is that namespace's end.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nettrace_tests::*;
use serde_json::{json, Value};

/// A process standing for a container: `sleep` in network namespace `pod`,
/// in cgroup `nettrace-test-<id>`. Killed and removed on drop.
struct FakeContainer {
    id: String,
    child: Child,
    cgroup: PathBuf,
}

/// The cgroup hierarchy to create test cgroups in (v2, hybrid or v1).
fn cgroup_root() -> PathBuf {
    for dir in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
    ] {
        let dir = PathBuf::from(dir);
        if dir.join("cgroup.procs").is_file() {
            return dir;
        }
    }
    panic!("no writable cgroup hierarchy found under /sys/fs/cgroup");
}

impl FakeContainer {
    fn start(pod: &Netns, tag: u8) -> FakeContainer {
        let id = format!(
            "{:08x}{:08x}{:02x}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
            tag,
            "c0ffee".repeat(8)
        );
        let cgroup = cgroup_root().join(format!("nettrace-test-{id}"));
        std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", pod.name(), "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let fake = FakeContainer { id, child, cgroup };
        std::fs::write(fake.cgroup.join("cgroup.procs"), fake.pid().to_string()).unwrap_or_else(
            |e| panic!("moving {} into {}: {e}", fake.pid(), fake.cgroup.display()),
        );
        fake
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: cannot remove {}", self.cgroup.display());
    }
}

/// A "node" namespace and a "pod" namespace joined by a veth:
/// `vh0` (node, 10.250.S.1) — `eth0` (pod, 10.250.S.2).
struct Bench {
    node: Netns,
    pod: Netns,
    node_addr: Ipv4Addr,
}

impl Bench {
    fn new(subnet: u8) -> Bench {
        let (node, pod) = (Netns::new(), Netns::new());
        node.ip(&[
            "link",
            "add",
            "vh0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ]);
        let node_addr = Ipv4Addr::new(10, 250, subnet, 1);
        node.ip(&["addr", "add", &format!("{node_addr}/24"), "dev", "vh0"]);
        node.ip(&["link", "set", "vh0", "up"]);
        pod.ip(&[
            "addr",
            "add",
            &format!("10.250.{subnet}.2/24"),
            "dev",
            "eth0",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        Bench {
            node,
            pod,
            node_addr,
        }
    }
}

/// `nettrace agent` running in a namespace, with its stdout collected.
struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect<R: std::io::Read + Send + 'static>(src: R, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
}

impl Agent {
    fn spawn(ns: &Netns) -> Agent {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()]).arg(nettrace_bin());
        Agent::spawn_cmd(cmd)
    }

    fn spawn_cmd(mut cmd: Command) -> Agent {
        let mut child = cmd
            .arg("agent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nettrace agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), lines.clone());
        collect(child.stderr.take().expect("stderr"), stderr.clone());
        let stdin = child.stdin.take();
        Agent {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// `nettrace agent` in the test's own (host) namespace.
    fn spawn_host() -> Agent {
        Agent::spawn_cmd(Command::new(nettrace_bin()))
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to agent");
        stdin.flush().expect("flush to agent");
    }

    fn messages(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.lines.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Waits until `pred` holds for the messages so far.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let start = Instant::now();
        while !pred(&self.messages()) {
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}\n{}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the agent to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // let the reader threads take the last lines
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("agent did not exit within {timeout:?}\n{}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ty(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

fn has(ty_name: &'static str) -> impl Fn(&[Value]) -> bool {
    move |m| m.iter().any(|v| ty(v) == ty_name)
}

/// Events of `event` and `timeline` messages, each with its annotation.
fn events(msgs: &[Value]) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for m in msgs {
        match ty(m) {
            "event" => out.push((m["event"].clone(), m["annotation"].clone())),
            "timeline" => {
                for e in m["events"].as_array().into_iter().flatten() {
                    out.push((e["event"].clone(), e["annotation"].clone()));
                }
            }
            _ => {}
        }
    }
    out
}

fn target(c: &FakeContainer, pod: &str) -> Value {
    json!({"namespace": "shop", "pod": pod, "container": "app",
           "container_id": format!("containerd://{}", c.id)})
}

fn is_reply_to(ev: &Value, node: &str) -> bool {
    ev["pkt"]["saddr"] == node
        && ev["summary"]
            .as_str()
            .is_some_and(|s| s.contains("ping reply"))
}

/// Checks every line carries the version and the sequence is
/// hello, resolved, ready, (event | timeline | lost)*, bye.
fn assert_sequence(msgs: &[Value], agent: &Agent) {
    let types: Vec<&str> = msgs.iter().map(ty).collect();
    assert!(
        msgs.iter().all(|m| m["v"] == 1),
        "a line without v:1\n{}",
        agent.describe()
    );
    assert_eq!(
        &types[..3],
        ["hello", "resolved", "ready"],
        "{}",
        agent.describe()
    );
    assert_eq!(types.last(), Some(&"bye"), "{}", agent.describe());
    for t in &types[3..types.len() - 1] {
        assert!(
            matches!(*t, "event" | "timeline" | "lost"),
            "unexpected {t} line\n{}",
            agent.describe()
        );
    }
}

#[test]
fn agent_streams_annotated_pod_events_and_stops_when_stdin_closes() {
    preflight();
    let b = Bench::new(230);
    let c = FakeContainer::start(&b.pod, 1);
    let mut agent = Agent::spawn(&b.node);
    // The agent says hello once it has the spec (a plugin attaching late
    // misses nothing): nothing comes before.
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.messages().is_empty(), "{}", agent.describe());
    let spec = json!({"v": 1, "type": "spec", "targets": [target(&c, "client")],
                      "options": {"proto": "icmp", "addr": b.node_addr.to_string()},
                      "deadline_secs": 120});
    agent.send(&spec.to_string());
    agent.wait_for("ready", Duration::from_secs(60), has("ready"));

    let msgs = agent.messages();
    let hello = &msgs[0];
    assert!(
        hello["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "{hello}"
    );
    assert!(hello["backends"]
        .as_array()
        .is_some_and(|b| b.contains(&json!("tracepoint"))));
    assert!(hello["clock"]["monotonic_ns"]
        .as_u64()
        .is_some_and(|n| n > 0));
    assert!(hello["clock"]["realtime_ns"]
        .as_u64()
        .is_some_and(|n| n > 1_600_000_000_000_000_000));
    let r = &msgs[1]["targets"][0];
    assert_eq!(r["pid"], c.pid(), "{r}");
    assert_eq!(r["netns"], b.pod.inode(), "{r}");
    assert_eq!(r["host_ifname"], "vh0", "{r}");
    assert_eq!(r["host_ifindex"], b.node.ifindex("vh0"), "{r}");
    assert_eq!(r["pod"], "client");
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(msgs[2]["scope"], "kernel");
    assert!(msgs[2]["tracers"].as_u64().is_some_and(|n| n > 0));

    ping(&b.pod, b.node_addr, 1);
    let node = b.node_addr.to_string();
    agent.wait_for("the reply in the pod", Duration::from_secs(15), |m| {
        events(m).iter().any(|(e, _)| is_reply_to(e, &node))
    });
    std::thread::sleep(Duration::from_millis(300));
    // The plugin goes away: stdin closes.
    drop(agent.stdin.take());
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit {status}\n{}", agent.describe());

    let msgs = agent.messages();
    assert_sequence(&msgs, &agent);
    assert_eq!(
        msgs.last().map(|m| m["reason"].clone()),
        Some(json!("input-closed"))
    );
    assert!(
        msgs.iter().any(|m| ty(m) == "lost"),
        "no lost line\n{}",
        agent.describe()
    );
    let evs = events(&msgs);
    assert!(!evs.is_empty());
    let vh0 = b.node.ifindex("vh0");
    for (ev, ann) in &evs {
        assert_eq!(ev["type"], "event");
        assert!(
            ev["tracer"].is_string() && ev["summary"].is_string(),
            "{ev}"
        );
        // Scoped in the kernel to the pod's namespace and its host-side
        // veth: the request is followed onto vh0 up to the node's stack, the
        // reply is caught on vh0 on its way in.
        if ev["netns"] == b.pod.inode() {
            assert_eq!(
                *ann,
                json!({"namespace": "shop", "pod": "client", "container": "app"}),
                "{ev}"
            );
        } else {
            assert_eq!(ev["netns"], b.node.inode(), "{ev}");
            assert_eq!(ev["ifindex"], vh0, "{ev}");
            assert_eq!(
                *ann,
                json!({"namespace": "shop", "pod": "client", "container": "app",
                       "host_ifname": "vh0"}),
                "{ev}"
            );
        }
    }
    assert!(evs.iter().any(|(e, _)| e["ifname"] == "eth0"));
    let node = b.node_addr.to_string();
    assert!(
        evs.iter()
            .any(|(e, _)| e["netns"] == b.node.inode() && is_reply_to(e, &node)),
        "the reply was not caught on the host side\n{}",
        agent.describe()
    );
}

#[test]
fn agent_follows_the_host_side_in_timelines_until_the_deadline() {
    preflight();
    let b = Bench::new(231);
    let c = FakeContainer::start(&b.pod, 2);
    let mut agent = Agent::spawn(&b.node);
    let spec = json!({"v": 1, "type": "spec", "targets": [target(&c, "web")],
                      "options": {"proto": "icmp", "addr": b.node_addr.to_string(),
                                  "timeline": true, "follow_host": true},
                      "deadline_secs": 6});
    agent.send(&spec.to_string());
    agent.wait_for("ready", Duration::from_secs(60), has("ready"));
    assert_eq!(agent.messages()[2]["scope"], "none");
    ping(&b.pod, b.node_addr, 1);
    // stdin stays open: the deadline stops the agent
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status}\n{}", agent.describe());

    let msgs = agent.messages();
    assert_sequence(&msgs, &agent);
    assert_eq!(
        msgs.last().map(|m| m["reason"].clone()),
        Some(json!("deadline"))
    );
    let timelines: Vec<&Value> = msgs.iter().filter(|m| ty(m) == "timeline").collect();
    assert!(!timelines.is_empty(), "no timeline\n{}", agent.describe());
    for t in &timelines {
        for e in t["events"].as_array().into_iter().flatten() {
            assert_eq!(e["event"]["skb"], t["skb"], "{t}");
        }
    }
    let evs = events(&msgs);
    let host_side: Vec<&(Value, Value)> = evs
        .iter()
        .filter(|(e, _)| e["netns"] == b.node.inode() && e["ifname"] == "vh0")
        .collect();
    assert!(
        !host_side.is_empty(),
        "no event on the host side\n{}",
        agent.describe()
    );
    for (_, ann) in &host_side {
        assert_eq!(
            *ann,
            json!({"namespace": "shop", "pod": "web", "container": "app", "host_ifname": "vh0"})
        );
    }
    assert!(
        evs.iter()
            .any(|(e, a)| e["netns"] == b.pod.inode() && a["pod"] == "web"),
        "no annotated event in the pod\n{}",
        agent.describe()
    );
}

#[test]
fn agent_scopes_several_pods_in_the_kernel_and_follows_what_leaves_them() {
    preflight();
    let (b1, b2) = (Bench::new(232), Bench::new(233));
    let (c1, c2) = (
        FakeContainer::start(&b1.pod, 3),
        FakeContainer::start(&b2.pod, 4),
    );
    // The agent runs in the host's namespace here: the veths lead elsewhere.
    let mut agent = Agent::spawn_host();
    let spec = json!({"v": 1, "type": "spec",
                      "targets": [target(&c1, "one"), target(&c2, "two")],
                      "options": {"proto": "icmp", "tracers": ["link"]}, "deadline_secs": 60});
    agent.send(&spec.to_string());
    agent.wait_for("ready", Duration::from_secs(60), has("ready"));
    let msgs = agent.messages();
    assert_eq!(msgs[2]["scope"], "kernel", "{}", agent.describe());
    let (ns1, ns2) = (b1.pod.inode(), b2.pod.inode());
    for (r, netns) in msgs[1]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .zip([ns1, ns2])
    {
        assert_eq!(r["netns"], netns, "{r}");
        assert!(r.get("error").is_none(), "{r}");
        // the peer is not in the agent's namespace: traced, without host side
        assert!(
            r["host_if_error"]
                .as_str()
                .is_some_and(|e| e.contains("peer")),
            "{r}"
        );
    }
    // A third namespace pinging is not in scope.
    let other = Bench::new(234);
    ping(&b1.pod, b1.node_addr, 1);
    ping(&b2.pod, b2.node_addr, 1);
    ping(&other.pod, other.node_addr, 1);
    agent.wait_for("replies in both pods", Duration::from_secs(15), |m| {
        let evs = events(m);
        [(ns1, &b1), (ns2, &b2)].iter().all(|(ns, b)| {
            evs.iter()
                .any(|(e, _)| e["netns"] == *ns && is_reply_to(e, &b.node_addr.to_string()))
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(agent.stdin.take());
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit {status}\n{}", agent.describe());
    let msgs = agent.messages();
    assert_sequence(&msgs, &agent);
    let mut seen_in_scope = std::collections::HashSet::new();
    let mut followed = 0;
    for (ev, ann) in events(&msgs) {
        let pod = if ev["netns"] == ns1 {
            "one"
        } else if ev["netns"] == ns2 {
            "two"
        } else {
            // Out of the pods only as the continuation of an skb that
            // matched in one of them (the request, on its node's side).
            assert!(
                seen_in_scope.contains(&ev["skb"]),
                "event out of scope: {ev}\n{}",
                agent.describe()
            );
            assert!(
                ev["netns"] == b1.node.inode() || ev["netns"] == b2.node.inode(),
                "{ev}"
            );
            assert_eq!(ann, Value::Null, "{ev}");
            followed += 1;
            continue;
        };
        seen_in_scope.insert(ev["skb"].clone());
        assert_eq!(ann["pod"], pod, "{ev}");
    }
    assert!(followed > 0, "nothing followed\n{}", agent.describe());
}

#[test]
fn agent_traces_the_node_namespace_when_asked_and_sends_idle_blocks() {
    preflight();
    let b = Bench::new(236);
    let c = FakeContainer::start(&b.pod, 5);
    let mut agent = Agent::spawn(&b.node);
    // Link tracers only: no skb ends in what is traced, so each block
    // comes out once its skb has been idle for a second.
    let spec = json!({"v": 1, "type": "spec", "targets": [target(&c, "web")],
                      "options": {"proto": "icmp", "tracers": ["link"], "timeline": true,
                                  "node_netns": true},
                      "deadline_secs": 120});
    agent.send(&spec.to_string());
    agent.wait_for("ready", Duration::from_secs(60), has("ready"));
    let msgs = agent.messages();
    assert_eq!(msgs[2]["scope"], "kernel", "{}", agent.describe());
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(msgs[0]["boot_id"], boot_id.as_str(), "{}", msgs[0]);
    assert_eq!(msgs[0]["netns"], b.node.inode(), "{}", msgs[0]);
    // The node pings itself: no pod involved, in scope only through the
    // node's namespace.
    ping(&b.node, Ipv4Addr::LOCALHOST, 1);
    agent.wait_for(
        "a block from the node's loopback, stdin still open",
        Duration::from_secs(15),
        |m| {
            m.iter().filter(|m| ty(m) == "timeline").any(|t| {
                t["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["event"]["netns"] == b.node.inode() && e["event"]["ifname"] == "lo")
            })
        },
    );
    drop(agent.stdin.take());
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit {status}\n{}", agent.describe());
}

#[test]
fn agent_stops_when_the_plugin_goes_quiet() {
    preflight();
    let mut agent = Agent::spawn_host();
    let spec = json!({"v": 1, "type": "spec", "options": {"proto": "icmp", "tracers": ["link"]},
                      "idle_timeout_secs": 2, "deadline_secs": 120});
    agent.send(&spec.to_string());
    agent.wait_for("ready", Duration::from_secs(60), has("ready"));
    // Pings keep it alive past the idle timeout...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        agent.send(r#"{"v":1,"type":"ping"}"#);
    }
    assert!(
        !agent.messages().iter().any(|m| ty(m) == "bye"),
        "{}",
        agent.describe()
    );
    // ...and silence, with stdin still open, stops it.
    let status = agent.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}\n{}", agent.describe());
    let msgs = agent.messages();
    assert_eq!(
        msgs.last().map(|m| m["reason"].clone()),
        Some(json!("idle"))
    );
}

#[test]
fn agent_rejects_bad_specs_with_one_error_line() {
    preflight();
    for (spec, needle) in [
        ("not json".to_string(), "not a JSON object"),
        (r#"{"v":2,"type":"spec"}"#.to_string(), "unsupported protocol version 2"),
        (r#"{"v":1,"type":"bye","reason":"signal"}"#.to_string(), "expected a \"spec\""),
        (
            json!({"v": 1, "type": "spec", "targets": [{"namespace": "n", "pod": "p", "container": "c",
                   "container_id": "containerd://0000000000000000000000000000dead"}]})
            .to_string(),
            "no target could be resolved",
        ),
        (
            json!({"v": 1, "type": "spec", "options": {"proto": "nope"}}).to_string(),
            "--proto: unknown protocol 'nope'",
        ),
        // The validator's line, as `nettrace` and `kubectl nettrace` print it.
        (
            json!({"v": 1, "type": "spec", "options": {"stack": true, "stack_tracers": ["kfree_skb"]}})
                .to_string(),
            "--stack with the whole \"all\" tracer is costly: pick tracers with -t, use --stack-tracer without --stack, or add --force-stack",
        ),
        (
            json!({"v": 1, "type": "spec", "options": {"backend": "ebpf"}}).to_string(),
            "unknown variant `ebpf`",
        ),
    ] {
        let mut agent = Agent::spawn_host();
        agent.send(&spec);
        let status = agent.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(1), "{spec}\n{}", agent.describe());
        let msgs = agent.messages();
        let types: Vec<&str> = msgs.iter().map(ty).collect();
        assert_eq!(types.first(), Some(&"hello"), "{spec}\n{}", agent.describe());
        assert_eq!(&types[types.len() - 2..], ["error", "bye"], "{spec}\n{}", agent.describe());
        let message = msgs[msgs.len() - 2]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{spec}: {message}");
        assert_eq!(msgs[msgs.len() - 1]["reason"], "error");
    }
}

/// Peak RSS (`VmHWM`, kB) of a live process.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes `n` bytes of `x` (no newline) on the agent's stdin from a thread, then keeps
/// stdin open until the agent is gone (a plugin that never ends its line).
fn flood_stdin(agent: &mut Agent, n: usize) -> std::thread::JoinHandle<()> {
    let mut stdin = agent.stdin.take().expect("stdin open");
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 16];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            if stdin.write_all(&chunk[..k]).is_err() {
                return; // the agent is gone
            }
            left -= k;
        }
        // Stdin stays open: only the agent ending the session ends this.
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if stdin.write_all(b"x").and_then(|()| stdin.flush()).is_err() {
                return;
            }
        }
    })
}

/// Waits for the agent to exit by itself, tracking its peak RSS (kB).
fn wait_exit_rss(agent: &mut Agent, timeout: Duration) -> (ExitStatus, u64) {
    let pid = agent.child.id();
    let start = Instant::now();
    let mut peak = 0;
    loop {
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        if let Some(status) = agent.child.try_wait().expect("try_wait") {
            std::thread::sleep(Duration::from_millis(200));
            return (status, peak);
        }
        if start.elapsed() > timeout {
            let _ = agent.child.kill();
            panic!(
                "agent did not exit within {timeout:?} (peak RSS {peak} kB)\n{}",
                agent.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last two messages are one `error` saying the line is too long, then `bye` with
/// reason `error`.
fn assert_line_too_long(agent: &Agent) {
    let msgs = agent.messages();
    let types: Vec<&str> = msgs.iter().map(ty).collect();
    assert!(types.len() >= 2, "{}", agent.describe());
    assert_eq!(
        &types[types.len() - 2..],
        ["error", "bye"],
        "{}",
        agent.describe()
    );
    assert_eq!(
        types.iter().filter(|t| **t == "error").count(),
        1,
        "{}",
        agent.describe()
    );
    let message = msgs[msgs.len() - 2]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("longer than 1048576 bytes"),
        "{message}\n{}",
        agent.describe()
    );
    assert_eq!(msgs[msgs.len() - 1]["reason"], "error");
}

#[test]
fn agent_refuses_a_line_past_the_limit_in_bounded_memory() {
    preflight();
    // Instead of a spec: 50 MiB without a newline.
    let mut agent = Agent::spawn_host();
    let started = Instant::now();
    let writer = flood_stdin(&mut agent, 50 << 20);
    let (status, peak) = wait_exit_rss(&mut agent, Duration::from_secs(20));
    eprintln!(
        "before the spec: exit after {:?}, peak RSS {} MiB",
        started.elapsed(),
        peak / 1024
    );
    assert_eq!(status.code(), Some(1), "{}", agent.describe());
    assert!(started.elapsed() < Duration::from_secs(10), "exits at once");
    assert!(peak < 40 * 1024, "peak RSS {peak} kB: the line was held");
    assert_eq!(agent.messages().first().map(ty), Some("hello"));
    assert_line_too_long(&agent);
    let _ = writer.join();

    // While tracing: the same, after the spec and a ping.
    let mut agent = Agent::spawn_host();
    let spec = json!({"v": 1, "type": "spec", "options": {"proto": "icmp", "tracers": ["link"]},
                      "deadline_secs": 120});
    agent.send(&spec.to_string());
    agent.wait_for("ready", Duration::from_secs(60), has("ready"));
    agent.send(r#"{"v":1,"type":"ping"}"#);
    let started = Instant::now();
    let writer = flood_stdin(&mut agent, 50 << 20);
    let (status, _) = wait_exit_rss(&mut agent, Duration::from_secs(30));
    eprintln!("while tracing: exit after {:?}", started.elapsed());
    assert_eq!(status.code(), Some(1), "{}", agent.describe());
    assert!(started.elapsed() < Duration::from_secs(10), "exits at once");
    assert_line_too_long(&agent);
    let _ = writer.join();
}
