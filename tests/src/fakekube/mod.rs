//! A fake Kubernetes control plane and kubelet, for what the real bench cluster
//! (`tests/kube/cluster.sh`, [`crate::cluster`]) cannot do on demand: run a misbehaving
//! stand-in as the agent image (`tests/tests/kube_backpressure.rs`), and the `kube_stream`
//! bench. Everything else about `kubectl nettrace` (kubectl 1.20 and 1.33, RBAC, Pod Security,
//! image pulls, eviction, the overlay, kube-proxy) is tested on the real cluster.
//!
//! [`FakeCluster::start`] serves the subset of the core/v1 API that kube-rs uses
//! (discovery, pods with watch, logs, attach and exec over WebSocket, nodes, namespaces,
//! events) over plain HTTP on `127.0.0.1` (random port). Objects are JSON
//! values with a global, monotonically increasing resourceVersion. Errors are `Status`
//! objects, exactly like a real apiserver's.
//!
//! Pods created through the API with `spec.nodeName` set to a known node are run by that
//! node's fake kubelet as local processes: each container's image is looked up in the
//! `images` map (image reference → directory, or → entrypoint file) and `command[0]` is
//! resolved by its file name in that directory. Pods inserted with
//! [`FakeCluster::insert_pod`] are never run: they stand for real containers.
//!
//! Fidelity notes:
//! - Processes run on the host as the test's user, each in its own process group, with a
//!   clean environment (`PATH`, `HOSTNAME`, `HOME`, then the container's `env`: `value` and
//!   `valueFrom.fieldRef`). No namespaces, cgroups, volumes, probes, service-account token
//!   or `KUBERNETES_SERVICE_*`; containers are Ready as soon as they start; `podIP` and
//!   `hostIP` are [`NODE_IP`].
//! - No scheduler (pods without `spec.nodeName` stay Pending/Unschedulable), no restarts
//!   (every pod behaves as `restartPolicy: Never`), one image pull attempt; a container
//!   whose image is missing keeps the whole pod from starting.
//! - PATCH of pods and namespaces with merge patches (a strategic merge patch is applied as
//!   a merge patch: lists are replaced); no PUT, JSON patch or server-side apply, no
//!   namespace deletion; `limit`/`continue` are ignored (one page).
//! - Streaming is WebSocket only (`v5.channel.k8s.io`, `v4.channel.k8s.io`): kubectl before
//!   1.30 (SPDY) gets a clear 400 for attach/exec.
//! - No OpenAPI, no `Table` output (kubectl is not a client of the fake any more), no Pod
//!   Security admission, no eviction.
//! - Any `Authorization` is accepted; the server speaks plain HTTP/1.1.
//!
//! Set `FAKEKUBE_TRACE=1` to log every request (method, URI, Accept) on stderr.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::path::PathBuf;
//! use nettrace_tests::fakekube::FakeCluster;
//!
//! // Image "nettrace:dev" runs binaries from target/debug (command[0] resolved by file name).
//! let images = HashMap::from([("nettrace:dev".to_string(), PathBuf::from("target/debug"))]);
//! let cluster = FakeCluster::start(&["node-a", "node-b"], images);
//! cluster.create_namespace("nettrace", &[("pod-security.kubernetes.io/enforce", "privileged")]);
//! cluster.write_kubeconfig("/tmp/kubeconfig".as_ref(), "fake", "default");
//! // ... run `kubectl nettrace` with KUBECONFIG=/tmp/kubeconfig, then look:
//! assert!(cluster.processes().is_empty());
//! ```

mod http;
mod kubelet;
mod store;
mod stream;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use kubelet::{ContainerRt, Stop};
use store::{Kind, Store};

/// How to stop a pod's kubelet task.
pub(crate) type StopSender = tokio::sync::watch::Sender<Option<Stop>>;

/// A pod's (namespace, name).
pub(crate) type PodKey = (String, String);

/// The processes of a pod's containers, by container name.
pub(crate) type PodContainers = Vec<(String, Arc<ContainerRt>)>;

/// State shared by the HTTP server and the kubelets.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) nodes: Vec<String>,
    pub(crate) images: HashMap<String, PathBuf>,
    pub(crate) port: u16,
    /// Pods whose kubelet task is still running, by (namespace, name): how to stop it.
    pub(crate) stops: Mutex<HashMap<PodKey, (String, StopSender)>>,
    /// Containers of kubelet-run pods (kept until the pod is deleted, for logs).
    pub(crate) containers: Mutex<HashMap<PodKey, PodContainers>>,
    /// Pods inserted by the test (never run by a kubelet).
    pub(crate) inserted: Mutex<HashSet<PodKey>>,
    /// Pids of live processes started by the kubelets (containers and execs).
    pub(crate) pids: Mutex<HashSet<u32>>,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake cluster. Dropping it stops the server and kills every process it started.
pub struct FakeCluster {
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

/// The namespace `kubectl nettrace` creates its agent pods in by default.
pub const AGENT_NAMESPACE: &str = "nettrace";

/// The node address every fake node reports (`InternalIP`), and pods' `hostIP`/`podIP`.
pub const NODE_IP: &str = "127.0.0.1";

impl FakeCluster {
    /// Starts the API server on `127.0.0.1:<random port>` with the given nodes (each with a
    /// kubelet) and image map. An image maps to a directory holding its binaries (a
    /// container's `command[0]` is looked up there by file name), or to a file: its
    /// entrypoint, run when the container has no `command` (other commands are looked up in
    /// its directory). Creates the namespaces `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease`.
    pub fn start(nodes: &[&str], images: HashMap<String, PathBuf>) -> FakeCluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fakekube")
            .enable_all()
            .build()
            .expect("fakekube: building the tokio runtime");
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fakekube: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("fakekube: local_addr").port();
        listener
            .set_nonblocking(true)
            .expect("fakekube: set_nonblocking");
        let shared = Arc::new(Shared {
            store: Store::new(),
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            images,
            port,
            stops: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            pids: Mutex::new(HashSet::new()),
            inserted: Mutex::new(HashSet::new()),
        });
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        for node in nodes {
            let obj = node_object(node, &kernel);
            shared
                .store
                .create(Kind::Node, obj)
                .expect("fakekube: duplicate node name");
        }
        let cluster = FakeCluster {
            rt: Some(rt),
            shared: shared.clone(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            cluster.create_namespace(ns, &[]);
        }
        let rt = cluster.rt.as_ref().expect("runtime");
        rt.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("fakekube: listener: {e}");
                    return;
                }
            };
            http::serve(listener, shared).await;
        });
        cluster
    }

    /// The API server URL, `http://127.0.0.1:PORT`.
    /// A cluster whose kubelets run `image` from the directory of the `nettrace` binary
    /// under test (so the plugin's agent pods run the real agent), with the agent namespace
    /// `nettrace` labelled for privileged pods, as `manifests/namespace.yaml` makes it.
    pub fn with_agent(nodes: &[&str], image: &str) -> FakeCluster {
        let bin = crate::env::nettrace_bin();
        let dir = bin.parent().expect("the nettrace binary has a directory");
        let cluster = FakeCluster::start(
            nodes,
            HashMap::from([(image.to_string(), dir.to_path_buf())]),
        );
        cluster.create_namespace(
            AGENT_NAMESPACE,
            &[("pod-security.kubernetes.io/enforce", "privileged")],
        );
        cluster
    }

    pub fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// Writes a kubeconfig for this cluster: cluster `fakekube`, user `fakekube-admin` (a
    /// bearer token; the server accepts any), and one context `context_name` (the current
    /// one) whose default namespace is `namespace`.
    pub fn write_kubeconfig(&self, path: &Path, context_name: &str, namespace: &str) {
        self.write_kubeconfig_contexts(path, &[(context_name, namespace)]);
    }

    /// Like [`write_kubeconfig`](Self::write_kubeconfig) with several contexts, given as
    /// (context name, default namespace), all on this cluster; the first is current. For
    /// tests of `--context`: each context selects its namespace.
    pub fn write_kubeconfig_contexts(&self, path: &Path, contexts: &[(&str, &str)]) {
        let mut s = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        s += &format!(
            "- name: fakekube\n  cluster:\n    server: {}\n",
            self.server()
        );
        s += "users:\n- name: fakekube-admin\n  user:\n    token: fake-token\n";
        s += "contexts:\n";
        for (name, ns) in contexts {
            s += &format!(
                "- name: {name}\n  context:\n    cluster: fakekube\n    user: fakekube-admin\n    namespace: {ns}\n"
            );
        }
        let current = contexts.first().map_or("", |c| c.0);
        s += &format!("current-context: {current}\npreferences: {{}}\n");
        std::fs::write(path, s).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Stores a pod as given (incl. `status`), creating its namespace if needed. No kubelet
    /// runs it: it stands for a pod backed by a real container. Returns the stored object.
    pub fn insert_pod(&self, pod: Value) -> Value {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        if self.shared.store.get(Kind::Namespace, "", &ns).is_none() {
            self.create_namespace(&ns, &[]);
        }
        let mut pod = pod;
        pod["metadata"]["namespace"] = json!(ns);
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        lock(&self.shared.inserted).insert((ns.clone(), name));
        self.shared
            .store
            .create(Kind::Pod, pod)
            .unwrap_or_else(|e| panic!("insert_pod: {}", e.message))
    }

    /// Creates a namespace with labels (e.g. `pod-security.kubernetes.io/enforce=baseline`).
    /// Does nothing if it exists.
    pub fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let mut l = serde_json::Map::new();
        l.insert("kubernetes.io/metadata.name".into(), json!(name));
        for (k, v) in labels {
            l.insert(k.to_string(), json!(v));
        }
        let obj = json!({
            "metadata": {"name": name, "labels": l},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let _ = self.shared.store.create(Kind::Namespace, obj);
    }

    /// Every pod, as stored.
    pub fn pods(&self) -> Vec<Value> {
        self.shared.store.list(Kind::Pod, None).0
    }

    /// One pod, as stored.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store.get(Kind::Pod, namespace, name)
    }

    /// Changes a stored pod in place (e.g. the status of an inserted pod) and notifies
    /// watchers (MODIFIED). Returns the new object, or `None` if there is no such pod.
    pub fn update_pod(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        self.shared.store.update(Kind::Pod, namespace, name, f)
    }

    /// Removes a pod at once, as if it vanished (no grace period, no kubelet involvement
    /// beyond killing its processes), and notifies watchers (DELETED).
    pub fn remove_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(rts) = lock(&self.shared.containers).get(&key) {
            for (_, rt) in rts {
                kubelet::signal_group(rt.pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        lock(&self.shared.stops).remove(&key);
        lock(&self.shared.containers).remove(&key);
        lock(&self.shared.inserted).remove(&key);
        self.shared.store.delete(Kind::Pod, namespace, name)
    }

    /// What a kubelet-run container wrote so far (stdout and stderr interleaved), or `None`
    /// if the kubelet has not run that container.
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> Option<Vec<u8>> {
        let key = (namespace.to_string(), pod.to_string());
        let containers = lock(&self.shared.containers);
        let (_, rt) = containers.get(&key)?.iter().find(|(c, _)| c == container)?;
        let log = lock(&rt.log).clone();
        Some(log)
    }

    /// Every event, as stored.
    pub fn events(&self) -> Vec<Value> {
        self.shared.store.list(Kind::Event, None).0
    }

    /// Pids of the live processes the kubelets started (containers and execs).
    pub fn processes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = lock(&self.shared.pids).iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Polls [`pod`](Self::pod) until `pred` holds, or panics after `timeout` with the pod.
    pub fn wait_pod(
        &self,
        namespace: &str,
        name: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = std::time::Instant::now() + timeout;
        loop {
            let pod = self.pod(namespace, name);
            if let Some(p) = &pod {
                if pred(p) {
                    return p.clone();
                }
            }
            if std::time::Instant::now() > end {
                panic!("timed out after {timeout:?} waiting for pod {namespace}/{name}: {pod:#?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Polls until the pod is gone, or panics after `timeout`.
    pub fn wait_pod_gone(&self, namespace: &str, name: &str, timeout: std::time::Duration) {
        let end = std::time::Instant::now() + timeout;
        while let Some(p) = self.pod(namespace, name) {
            if std::time::Instant::now() > end {
                panic!(
                    "timed out after {timeout:?} waiting for pod {namespace}/{name} to go: {p:#}"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster")
            .field("server", &self.server())
            .field("nodes", &self.shared.nodes)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for pid in lock(&self.shared.pids).iter() {
            kubelet::signal_group(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Dropped inside an async test: blocking here would panic.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(std::time::Duration::from_secs(2));
            }
        }
    }
}

fn node_object(name: &str, kernel: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now_rfc3339(),
                "lastTransitionTime": now_rfc3339(),
            }],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": kernel,
                "containerRuntimeVersion": "containerd://1.6.20",
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0",
                "machineID": read_trimmed("/etc/machine-id"),
                "systemUUID": "",
                "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            },
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        },
    })
}

/// A small file's content without surrounding whitespace ("" when unreadable).
fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, as RFC 3339 in UTC with second precision (`2026-11-25T16:11:11Z`).
pub(crate) fn now_rfc3339() -> String {
    format_rfc3339(now_secs())
}

/// Formats epoch seconds as RFC 3339 UTC.
pub(crate) fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Days to civil date (proleptic Gregorian), after H. Hinnant's published algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Parses what [`format_rfc3339`] writes (fractional seconds ignored); `None` otherwise.
#[cfg(test)]
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// `n` random bytes from the kernel.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// A random UUID-shaped uid.
pub(crate) fn new_uid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix the apiserver appends to `generateName`.
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes(5)
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_564_800), "2026-11-25T00:00:00Z");
        for t in [0, 951_782_400, 1_795_651_871, 4_107_542_399] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }
}
