//! The real bench cluster (`tests/kube/cluster.sh`, see `tests/kube/README.md`): two nodes,
//! `nt-node1` and `nt-node2`, network namespaces of this host with their own containerd,
//! kubelet and kube-proxy, and an upstream control plane.
//!
//! [`cluster`] brings it up once per test process (`cluster.sh up` is idempotent and locked:
//! concurrent test processes share one cluster) and panics, never skips, when it cannot.
//! `./dev test` starts it before the tests and takes it down after them.
//!
//! Each test works in a namespace of its own ([`TestNs`], deleted on drop with everything in
//! it): busybox pods placed on a node with `nodeName`, `kubectl exec` in them, and the plugin
//! (`$KUBECTL_NETTRACE_BIN`) run with a kubeconfig. The namespace allows privileged pods, so a
//! test run as the admin may also put its agent pods there (`--agent-namespace`) and see
//! only its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::env::{plugin_bin, require_root, workspace_dir};
use crate::runner::Nettrace;

/// The nodes: name, underlay address, pod CIDR prefix.
pub const NODES: [(&str, &str, &str); 2] = [
    ("nt-node1", "10.240.0.11", "10.244.1."),
    ("nt-node2", "10.240.0.12", "10.244.2."),
];
/// The busybox image the bench imports into both nodes.
pub const BUSYBOX: &str = "localhost/nt-kube/busybox:1.35";
/// The agent namespace of `manifests/namespace.yaml` (the plugin's default).
pub const AGENT_NS: &str = "nettrace";
/// The label every agent pod carries (`app.kubernetes.io/name=nettrace-agent`).
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=nettrace-agent";
/// The container name of the test pods.
pub const CONTAINER: &str = "main";

/// The running cluster: its kubeconfigs and the kubectl the tests use.
pub struct Cluster {
    /// `nt-admin`, system:masters.
    pub admin: PathBuf,
    /// `nt-user`: exactly `manifests/rbac.yaml`.
    pub user: PathBuf,
    /// `nt-noattach`: `manifests/rbac.yaml` without `pods/attach`.
    pub noattach: PathBuf,
    /// kubectl 1.33 (`scripts/fetch-kubectl.sh`).
    pub kubectl: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
/// A test that checks that its agents leave no BPF program takes this for writing (no other
/// agent runs meanwhile); every test that starts agents takes it for reading.
static HOST_STATE: RwLock<()> = RwLock::new(());

/// Shared use of the agents (a test that starts agents).
pub fn shared_host() -> RwLockReadGuard<'static, ()> {
    HOST_STATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Exclusive use of the agents (a test that checks no agent holds a BPF program).
pub fn exclusive_host() -> RwLockWriteGuard<'static, ()> {
    HOST_STATE.write().unwrap_or_else(|e| e.into_inner())
}

/// The cluster, brought up on first use. Panics with what went wrong when it cannot.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        require_root();
        plugin_bin();
        let root = workspace_dir();
        let kubectl = root.join("target/kubectl/1.33/kubectl");
        assert!(
            kubectl.is_file(),
            "{} is missing: run scripts/fetch-kubectl.sh (./dev test does)",
            kubectl.display()
        );
        let script = root.join("tests/kube/cluster.sh");
        let started = Instant::now();
        // Up already (`./dev test` started it, with the agent image of this build): reuse it
        // as it is, without rebuilding the static agent under the running tests.
        let up = Command::new(&script)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let mut cmd = Command::new(&script);
        if up {
            cmd.env("NT_KUBE_SKIP_AGENT_BUILD", "1");
        }
        let out = cmd
            .arg("up")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let admin = stdout
            .lines()
            .find_map(|l| l.strip_prefix("KUBECONFIG="))
            .map(PathBuf::from);
        let admin = match (out.status.success(), admin) {
            (true, Some(a)) => a,
            _ => panic!(
                "the bench cluster did not come up ({} up: {}; stdout: {stdout}); \
                 logs in target/kube/last-failure/, see tests/kube/README.md",
                script.display(),
                out.status
            ),
        };
        eprintln!("bench cluster up after {:?}", started.elapsed());
        let dir = admin.parent().expect("a directory").to_path_buf();
        let c = Cluster {
            user: dir.join("nt-user.kubeconfig"),
            noattach: dir.join("nt-noattach.kubeconfig"),
            admin,
            kubectl,
        };
        for k in [&c.admin, &c.user, &c.noattach] {
            assert!(
                k.is_file(),
                "{} is missing after cluster.sh up",
                k.display()
            );
        }
        c
    })
}

impl Cluster {
    /// `kubectl --kubeconfig KCFG ARGS` with a deadline (past it: killed, test fails).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        output_within(cmd, stdin, Duration::from_secs(120))
    }

    /// `kubectl` as the admin; panics with its stderr unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl_in_ok(args, None)
    }

    /// [`Cluster::kubectl_ok`] with `stdin` (e.g. `apply -f -`).
    pub fn kubectl_in_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_as(&self.admin, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pods of `namespace` matching `selector`, as JSON.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<Value> {
        let out = self.kubectl_ok(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]);
        let v: Value = serde_json::from_str(&out).expect("kubectl get -o json");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (up to `within`) until none of the named pods of `namespace` exists.
    pub fn assert_pods_gone(&self, namespace: &str, names: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left: Vec<String> = self
                .pods(namespace, AGENT_SELECTOR)
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .filter(|n| names.contains(n))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent pods {left:?} still in namespace {namespace} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// `bpftool prog show` names of the loaded programs that start with `nt_` (nettrace's).
pub fn nettrace_progs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run bpftool: {e}"));
    assert!(out.status.success(), "bpftool prog show: {}", out.status);
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool -j prog show");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            name.starts_with("nt_")
                .then(|| format!("{} (id {})", name, p["id"]))
        })
        .collect()
}

/// The BPF programs the node agents (`/usr/local/bin/nettrace agent`, host PID namespace)
/// hold right now, by id: read from their file descriptors (`/proc/PID/fdinfo`, `prog_id:`
/// of program and link fds). Exact even while other tests run host `nettrace`.
pub fn agent_prog_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline.starts_with(b"/usr/local/bin/nettrace\0agent") {
            continue;
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            ids.extend(info.lines().filter_map(|l| {
                l.strip_prefix("prog_id:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            }));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The agent pods a plugin run announced on stderr (`... agent pod NS/NAME on node ...`).
pub fn agent_pods_named(stderr: &[String], namespace: &str) -> Vec<String> {
    let prefix = format!("agent pod {namespace}/");
    let mut names: Vec<String> = stderr
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find(&prefix)? + prefix.len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A namespace of one test (`nt-e2e-<pid>-<n>-<tag>`), Pod Security "privileged", deleted on
/// drop with its pods.
pub struct TestNs {
    /// Its name.
    pub name: String,
    /// The cluster.
    pub cluster: &'static Cluster,
    pods: Vec<String>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestNs {
    /// Creates the namespace (the cluster comes up first if it is not).
    pub fn new(tag: &str) -> TestNs {
        let cluster = cluster();
        let name = format!(
            "nt-e2e-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    \
             pod-security.kubernetes.io/enforce: privileged\n    nettrace.io/test: e2e\n"
        );
        cluster.kubectl_in_ok(&["apply", "-f", "-"], Some(&manifest));
        // Pods need the namespace's default service account.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster
            .kubectl_as(
                &cluster.admin,
                &["get", "serviceaccount", "default", "-n", &name],
                None,
            )
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "no service account default in {name}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        TestNs {
            name,
            cluster,
            pods: Vec::new(),
        }
    }

    /// Creates busybox pods (`name`, `node`) that sleep, and waits until all are Ready.
    pub fn pods(&mut self, pods: &[(&str, &str)]) {
        for (name, node) in pods {
            self.pod_with(name, node, &["sleep", "3600"], "");
        }
        let names: Vec<&str> = pods.iter().map(|(n, _)| *n).collect();
        self.wait_ready(&names);
    }

    /// Creates one busybox pod on `node` running `command`, with `labels` (YAML flow
    /// mapping entries, e.g. `app: web`), without waiting for it.
    pub fn pod_with(&mut self, name: &str, node: &str, command: &[&str], labels: &str) {
        self.pod_spec(name, node, command, labels, "");
    }

    /// [`TestNs::pod_with`] with more `spec` fields (YAML lines indented by two spaces, e.g.
    /// `"  hostNetwork: true\n"`).
    pub fn pod_spec(&mut self, name: &str, node: &str, command: &[&str], labels: &str, spec: &str) {
        let cmd: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
             labels: {{test: e2e{sep}{labels}}}\nspec:\n  nodeName: {node}\n  \
             terminationGracePeriodSeconds: 0\n  automountServiceAccountToken: false\n{spec}  \
             containers:\n    - name: {CONTAINER}\n      image: {BUSYBOX}\n      \
             imagePullPolicy: Never\n      command: [{cmd}]\n",
            ns = self.name,
            sep = if labels.is_empty() { "" } else { ", " },
            cmd = cmd.join(", ")
        );
        self.cluster
            .kubectl_in_ok(&["apply", "-f", "-"], Some(&manifest));
        self.pods.push(name.to_string());
    }

    /// Waits until the pods are Ready.
    pub fn wait_ready(&self, names: &[&str]) {
        let mut args = vec![
            "wait",
            "-n",
            &self.name,
            "--for=condition=Ready",
            "--timeout=90s",
        ];
        let names: Vec<String> = names.iter().map(|n| format!("pod/{n}")).collect();
        args.extend(names.iter().map(String::as_str));
        self.cluster.kubectl_ok(&args);
    }

    /// The host end of a pod's veth, in its node's namespace (named by its `eth0`'s iflink).
    pub fn host_veth(&self, pod: &str, node: &str) -> String {
        let index = self.exec_ok(pod, &["cat", "/sys/class/net/eth0/iflink"]);
        let index = index.trim();
        let out = Command::new("ip")
            .args(["-n", node, "-o", "link", "show"])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (i, rest) = l.split_once(": ")?;
                (i == index).then(|| rest.split(['@', ':']).next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no interface {index} in {node}:\n{text}"))
    }

    /// A pod's IP address.
    pub fn ip(&self, pod: &str) -> String {
        let ip = self.cluster.kubectl_ok(&[
            "get",
            "pod",
            pod,
            "-n",
            &self.name,
            "-o",
            "jsonpath={.status.podIP}",
        ]);
        assert!(!ip.is_empty(), "pod {pod} has no IP");
        ip
    }

    /// A pod `web` on `node` answering `hello` on TCP 8080, behind a Service `web` on port 80;
    /// returns the ClusterIP once `client` (a pod of this namespace) gets an answer through it
    /// (kube-proxy programs its rules a moment after the endpoints exist).
    pub fn web_service(&mut self, node: &str, client: &str) -> String {
        self.pod_with(
            "web",
            node,
            &[
                "sh",
                "-c",
                "while true; do echo hello | nc -l -p 8080; done",
            ],
            "app: web",
        );
        self.wait_ready(&["web"]);
        let svc = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {}}}\n\
             spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n",
            self.name
        );
        self.cluster
            .kubectl_in_ok(&["apply", "-f", "-"], Some(&svc));
        let vip = self.cluster.kubectl_ok(&[
            "get",
            "service",
            "web",
            "-n",
            &self.name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        assert!(vip.starts_with("10.96."), "ClusterIP {vip}");
        let start = Instant::now();
        while !String::from_utf8_lossy(&self.exec(client, &["nc", "-w", "2", &vip, "80"]).stdout)
            .contains("hello")
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no answer through {vip}:80"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        vip
    }

    /// `kubectl exec POD -- ARGS`.
    pub fn exec(&self, pod: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", "-n", &self.name, pod, "--"];
        all.extend_from_slice(args);
        self.cluster.kubectl_as(&self.cluster.admin, &all, None)
    }

    /// [`TestNs::exec`] that must succeed; returns its stdout.
    pub fn exec_ok(&self, pod: &str, args: &[&str]) -> String {
        let out = self.exec(pod, args);
        assert!(
            out.status.success(),
            "exec in {pod} {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl exec` in the background (e.g. a ping loop), killed by the caller.
    pub fn exec_spawn(&self, pod: &str, args: &[&str]) -> Child {
        Command::new(&self.cluster.kubectl)
            .arg("--kubeconfig")
            .arg(&self.cluster.admin)
            .args(["exec", "-n", &self.name, pod, "--"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl exec")
    }

    /// The plugin's arguments with a kubeconfig; as the admin the agent pods go to this
    /// namespace (`--agent-namespace`), as another user to `nettrace`.
    fn plugin_args(&self, kubeconfig: &Path, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--kubeconfig".to_string(),
            kubeconfig.to_str().expect("utf-8 path").to_string(),
            "-n".to_string(),
            self.name.clone(),
        ];
        if kubeconfig == self.cluster.admin {
            all.extend(["--agent-namespace".to_string(), self.name.clone()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// Starts the plugin as `kubeconfig`'s user and waits for `begin tracing`.
    pub fn trace_as(&self, kubeconfig: &Path, args: &[&str]) -> Nettrace {
        let all = self.plugin_args(kubeconfig, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Nettrace::spawn_bin(&plugin_bin(), &all)
    }

    /// Starts the plugin as the admin without waiting.
    pub fn start_as(&self, kubeconfig: &Path, args: &[&str]) -> Nettrace {
        let all = self.plugin_args(kubeconfig, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Nettrace::start_bin(&plugin_bin(), &all)
    }

    /// The plugin as the admin, agents in this namespace, waiting for `begin tracing`.
    pub fn trace(&self, args: &[&str]) -> Nettrace {
        self.trace_as(&self.cluster.admin, args)
    }

    /// The agent pods in this namespace.
    pub fn agent_pods(&self) -> Vec<Value> {
        self.cluster.pods(&self.name, AGENT_SELECTOR)
    }

    /// Waits (up to `within`) until no agent pod is left in this namespace.
    pub fn assert_no_agents(&self, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let pods = self.agent_pods();
            if pods.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: agent pods left after {within:?}: {:?}",
                pods.iter()
                    .map(|p| (p["metadata"]["name"].clone(), p["status"]["phase"].clone()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Pods first, at once (grace 0), then the namespace; do not wait for it to go.
        let _ = self.cluster.kubectl_as(
            &self.cluster.admin,
            &[
                "delete",
                "pods",
                "--all",
                "-n",
                &self.name,
                "--grace-period=0",
                "--force",
                "--wait=false",
            ],
            None,
        );
        let _ = self.cluster.kubectl_as(
            &self.cluster.admin,
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

/// Runs `cmd` (with `stdin`) to its end; past `within` kills it and fails.
pub fn output_within(mut cmd: Command, stdin: Option<&str>, within: Duration) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(text) = stdin {
        use std::io::Write;
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(text.as_bytes()).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not finish within {within:?}");
        }
    }
}

/// The timeline blocks of a text output: the lines between a header and the empty line.
pub fn blocks(lines: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for l in lines {
        if l.starts_with("<------------------- skb: ") {
            cur = Some(vec![l.clone()]);
        } else if l.is_empty() {
            if let Some(b) = cur.take() {
                out.push(b);
            }
        } else if let Some(b) = cur.as_mut() {
            b.push(l.clone());
        }
    }
    out
}

/// Finds, in order, a line matching each step (all of a step's needles), within one block.
pub fn find_path<'a>(block: &'a [String], steps: &[Vec<String>]) -> Option<Vec<&'a str>> {
    let mut found = Vec::new();
    let mut at = 0;
    for step in steps {
        let i = block[at..]
            .iter()
            .position(|l| step.iter().all(|n| l.contains(n.as_str())))?;
        found.push(block[at + i].as_str());
        at += i + 1;
    }
    Some(found)
}

/// One step of [`find_path`]: the needles a line must all contain.
pub fn step(needles: &[&str]) -> Vec<String> {
    needles.iter().map(|s| s.to_string()).collect()
}
/// `pod: NS/POD/main`, the annotation of the lines of a test pod.
pub fn pod_of(ns: &TestNs, pod: &str) -> String {
    format!("pod: {}/{pod}/{CONTAINER}", ns.name)
}

/// An iptables rule in a node's namespace, removed when this is dropped.
pub struct NodeRule {
    node: String,
    rule: Vec<String>,
}

impl NodeRule {
    /// `iptables -I FORWARD -d DST -p icmp -m comment --comment COMMENT -j DROP` in `node`:
    /// a NetworkPolicy-like drop of the ICMP forwarded to a pod on the node's bridge.
    pub fn drop_icmp_to(node: &str, dst: &str, comment: &str) -> NodeRule {
        let rule: Vec<String> = [
            "FORWARD",
            "-d",
            dst,
            "-p",
            "icmp",
            "-m",
            "comment",
            "--comment",
            comment,
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = NodeRule {
            node: node.to_string(),
            rule,
        };
        let out = r.iptables("-I");
        assert!(out.status.success(), "{out:?}");
        r
    }

    fn iptables(&self, op: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.node, "iptables", op])
            .args(&self.rule)
            .output()
            .expect("iptables")
    }
}

impl Drop for NodeRule {
    fn drop(&mut self) {
        let _ = self.iptables("-D");
    }
}
