//! Pods backed by real containers: a private containerd, runc and the CNI bridge
//! (`nettrace_tests::containerd`). Root only; a missing containerd, ctr, runc, nsenter or
//! static busybox is a failure ("run ./dev deps"), never a skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nettrace_tests::containerd::{
    bridge_nf_call_iptables, bridge_ports, drop_to, leftovers, pod_json, service_dnat, BRIDGE,
    GATEWAY,
};
use nettrace_tests::{nettrace_bin, Container, ContainerBench};
use serde_json::{json, Value};

fn in_subnet(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[..3] == [10, 250, 240] && o[3] > 1 && o[3] < 255
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Pings `dst` from inside `from` (the host's ping in the pod's netns).
fn ping_from(from: &Container, dst: Ipv4Addr, count: u32) -> std::process::Output {
    let (count, dst) = (count.to_string(), dst.to_string());
    from.exec(&["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", &dst])
}

/// Checks what a container measured against the machine.
fn check_container(c: &Container) {
    assert_eq!(c.id.len(), 64, "{c:?}");
    assert!(c.id.bytes().all(|b| b.is_ascii_hexdigit()), "{c:?}");
    assert_eq!(c.container_id_uri(), format!("containerd://{}", c.id));
    assert!(in_subnet(c.ip), "{c:?} not in 10.250.240.0/24");
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).expect("cgroup");
    assert!(cgroup.contains(&c.id), "{cgroup}");
    let ifindex = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", c.host_veth))
        .expect("host veth in /sys/class/net");
    assert_eq!(ifindex.trim(), c.host_ifindex.to_string(), "{c:?}");
    assert!(
        bridge_ports().contains(&c.host_veth),
        "{c:?} not on {BRIDGE}"
    );
    let host_ns = std::fs::metadata("/proc/self/ns/net").expect("own netns");
    assert_ne!(
        c.netns_inode,
        std::os::unix::fs::MetadataExt::ino(&host_ns),
        "{c:?}"
    );
}

#[test]
fn two_pods_on_the_bridge_ping_each_other_and_leave_nothing_behind() {
    let bench = ContainerBench::start();
    let a = bench.run_pod("a");
    let b = bench.run_pod("b");
    check_container(&a);
    check_container(&b);
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.netns_inode, b.netns_inode);

    let out = ping_from(&a, b.ip, 3);
    assert!(
        out.status.success() && stdout(&out).contains(" 0% packet loss"),
        "{}",
        stdout(&out)
    );
    // Inside the container proper: busybox sees its own address and default route.
    let out = a.ctr_exec(&["/bin/ip", "-4", "addr", "show", "eth0"]);
    assert!(
        stdout(&out).contains(&format!("inet {}/24", a.ip)),
        "{out:?}"
    );
    let out = a.ctr_exec(&["/bin/ip", "route"]);
    assert!(
        stdout(&out).contains(&format!("default via {GATEWAY}")),
        "{out:?}"
    );

    let pod = pod_json("shop", "web", "node-1", &[("app", &a)], false);
    assert_eq!(pod["metadata"]["namespace"], "shop");
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(pod["status"]["podIP"], a.ip.to_string());
    assert_eq!(pod["status"]["podIPs"][0]["ip"], a.ip.to_string());
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["containerID"], a.container_id_uri());
    assert_eq!(status["name"], "app");
    assert!(status["state"]["running"]["startedAt"]
        .as_str()
        .is_some_and(|t| t.len() == 20 && t.ends_with('Z')));
    assert_eq!(pod["spec"]["containers"][0]["name"], "app");
    assert_eq!(
        pod_json("kube-system", "h", "node-1", &[("h", &b)], true)["spec"]["hostNetwork"],
        true
    );

    let (ids, veths) = (
        [a.id.clone(), b.id.clone()],
        [a.host_veth.clone(), b.host_veth.clone()],
    );
    drop(a);
    drop(b);
    for id in &ids {
        let left = leftovers(Some(id));
        assert!(left.is_empty(), "container {id} left: {left:#?}");
    }
    for v in &veths {
        assert!(
            !std::path::Path::new("/sys/class/net").join(v).exists(),
            "{v} still exists"
        );
    }
    assert!(bench.ctr(&["container", "ls", "-q"]).stdout.is_empty());
}

/// The `resolved` line of `nettrace agent` for a spec naming `containers`.
fn agent_resolve(containers: &[&Container]) -> Value {
    let mut child = Command::new(nettrace_bin())
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nettrace agent");
    let targets: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({"namespace": "shop", "pod": c.name, "container": "app",
                   "container_id": c.container_id_uri()})
        })
        .collect();
    let spec = json!({"v": 1, "type": "spec", "targets": targets,
                      "options": {"proto": "icmp"}, "deadline_secs": 30});
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{spec}").expect("write spec");
    stdin.flush().expect("flush spec");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut seen = Vec::new();
    let resolved = loop {
        let left = Duration::from_secs(30).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent printed non-JSON ({e}): {line}"));
                if v["type"] == "resolved" {
                    break v;
                }
                assert_ne!(v["type"], "bye", "agent ended early: {seen:#?} {line}");
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("no resolved line within 30 s; got {seen:#?}\nstderr: {err}");
            }
        }
    };
    // Closing stdin stops it.
    drop(stdin);
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("agent did not exit after stdin closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    resolved
}

#[test]
fn agent_resolves_real_containers() {
    nettrace_bin();
    let bench = ContainerBench::start();
    let a = bench.run_pod("client");
    let b = bench.run_pod("server");
    let resolved = agent_resolve(&[&a, &b]);
    let targets = resolved["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2, "{resolved}");
    for (r, c) in targets.iter().zip([&a, &b]) {
        assert_eq!(r["error"], Value::Null, "{r}");
        assert_eq!(r["container_id"], c.container_id_uri(), "{r}");
        let pid = r["pid"].as_u64().expect("pid") as u32;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(
            pid == c.pid || cgroup.contains(&c.id),
            "pid {pid} is not in {c:?}"
        );
        assert_eq!(r["netns"], c.netns_inode, "{r}");
        assert_eq!(r["host_ifname"], c.host_veth.as_str(), "{r}");
        assert_eq!(r["host_ifindex"], c.host_ifindex, "{r}");
        assert_eq!(r["host_network"], Value::Null, "{r}");
    }
}

#[test]
fn service_dnat_reaches_the_backend_and_forward_drop_drops_bridged_traffic() {
    assert_eq!(
        bridge_nf_call_iptables(),
        Some(true),
        "br_netfilter with bridge-nf-call-iptables=1 is needed for the pod-to-pod cases"
    );
    let bench = ContainerBench::start();
    let client = bench.run_pod("client");
    let backend = bench.run_pod("backend");
    let vip = Ipv4Addr::new(10, 250, 241, 10);

    // ClusterIP 10.250.241.10:80 -> backend:8080, kube-proxy style.
    let rules = service_dnat(vip, 80, &backend, 8080);
    assert!(rules.svc_chain.starts_with("NT-KUBE-SVC-") && rules.svc_chain.len() <= 28);
    assert!(rules.sep_chain.starts_with("NT-KUBE-SEP-") && rules.sep_chain.len() <= 28);
    let server = backend.ctr_spawn(&[
        "/bin/sh",
        "-c",
        "echo hello-from-backend | /bin/nc -l -p 8080",
    ]);
    let start = Instant::now();
    let reply = loop {
        let out = client.ctr_exec(&["/bin/sh", "-c", "/bin/nc -w 2 10.250.241.10 80 </dev/null"]);
        let text = stdout(&out);
        if text.contains("hello-from-backend") {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no answer through the VIP: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(reply.contains("hello-from-backend"));
    let server = server.wait_with_output().expect("server exits");
    assert!(server.status.success(), "{server:?}");
    drop(rules);

    // A FORWARD drop for the backend's address: bridged pod-to-pod pings are lost...
    let out = ping_from(&client, backend.ip, 1);
    assert!(out.status.success(), "{}", stdout(&out));
    let rule = drop_to(&backend);
    let out = ping_from(&client, backend.ip, 2);
    assert!(
        !out.status.success() && stdout(&out).contains("100% packet loss"),
        "{}",
        stdout(&out)
    );
    // ...the host's own pings (OUTPUT, not FORWARD) are not...
    let out = Command::new("ping")
        .args(["-n", "-c", "1", "-W", "1", &backend.ip.to_string()])
        .output()
        .expect("ping");
    assert!(out.status.success(), "{}", stdout(&out));
    // ...and removing the rule restores the path.
    drop(rule);
    let out = ping_from(&client, backend.ip, 1);
    assert!(out.status.success(), "{}", stdout(&out));
    let nat = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    assert!(!stdout(&nat).contains("NT-KUBE-"), "{}", stdout(&nat));
}
