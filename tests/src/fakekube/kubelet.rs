//! The fake kubelets: run pods' containers as local processes and keep pod status current.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};

use super::store::Kind;
use super::{lock, now_rfc3339, random_hex, PodKey, Shared, NODE_IP};

/// Longest grace period the fake honours, in seconds.
pub(crate) const MAX_GRACE_SECS: u64 = 5;

/// Why a pod's kubelet task must stop its containers.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// The pod was deleted with this grace period (seconds, already capped).
    Delete(u64),
}

/// Output of a process, as seen by attach sessions.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// Bytes on channel 1 (stdout) or 2 (stderr).
    Data(u8, Bytes),
    /// The process exited with this code (128+signal when killed); all output was sent.
    Exit(i32),
}

/// A process run by a kubelet: a container's main process or an exec.
pub(crate) struct ContainerRt {
    pub(crate) pid: u32,
    /// The process's stdin, when it was started with a pipe; `None` once closed.
    pub(crate) stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    /// `stdinOnce`: close stdin when the first attach session ends.
    pub(crate) stdin_once: bool,
    /// Set once an attach session with stdin has ended.
    pub(crate) first_attach_done: AtomicBool,
    /// Live output, for attach sessions (nobody subscribed = nobody attached). Unbounded:
    /// a slow client delays nothing and loses nothing.
    out: Mutex<Vec<mpsc::UnboundedSender<Output>>>,
    /// Everything the process wrote (stdout and stderr interleaved), for `pods/log`.
    pub(crate) log: Mutex<Vec<u8>>,
    /// The exit code, once the process exited and its output was drained.
    pub(crate) exit: watch::Sender<Option<i32>>,
}

impl ContainerRt {
    /// Starts receiving the live output (and then the exit). If the process already exited,
    /// the receiver gets only the exit.
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<Output> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = lock(&self.out);
        match self.exit_code() {
            Some(code) => {
                let _ = tx.send(Output::Exit(code));
            }
            None => subs.push(tx),
        }
        rx
    }

    /// Appends output to the log and hands it to the attached sessions.
    fn publish(&self, channel: u8, data: &[u8]) {
        let mut subs = lock(&self.out);
        lock(&self.log).extend_from_slice(data);
        let out = Output::Data(channel, Bytes::copy_from_slice(data));
        subs.retain(|tx| tx.send(out.clone()).is_ok());
    }

    /// Records the exit and tells the attached sessions.
    fn exited(&self, code: i32) {
        let mut subs = lock(&self.out);
        self.exit.send_replace(Some(code));
        for tx in subs.drain(..) {
            let _ = tx.send(Output::Exit(code));
        }
    }

    /// Closes the process's stdin (the process reads EOF).
    pub(crate) async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }

    /// Waits until the process exited; returns its code.
    pub(crate) async fn wait(&self) -> i32 {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(c) = *rx.borrow_and_update() {
                return c;
            }
            if rx.changed().await.is_err() {
                return 128;
            }
        }
    }

    /// The exit code if the process has exited.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }
}

/// What to run.
pub(crate) struct ProcessSpec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
    pub(crate) pipe_stdin: bool,
    pub(crate) stdin_once: bool,
}

/// Sends `sig` to the process group led by `pid` (every process is started as a group
/// leader, so its children are signalled too).
pub(crate) fn signal_group(pid: u32, sig: nix::sys::signal::Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// Starts a process in its own process group. Returns its handle and an output receiver
/// subscribed before any output could be produced. Must run inside the runtime.
pub(crate) fn spawn_process(
    shared: &Arc<Shared>,
    spec: ProcessSpec,
) -> std::io::Result<(Arc<ContainerRt>, mpsc::UnboundedReceiver<Output>)> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(if spec.pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    lock(&shared.pids).insert(pid);
    let rt = Arc::new(ContainerRt {
        pid,
        stdin: tokio::sync::Mutex::new(child.stdin.take()),
        stdin_once: spec.stdin_once,
        first_attach_done: AtomicBool::new(false),
        out: Mutex::new(Vec::new()),
        log: Mutex::new(Vec::new()),
        exit: watch::channel(None).0,
    });
    let rx = rt.subscribe();
    let r1 = tokio::spawn(pump(child.stdout.take(), 1, rt.clone()));
    let r2 = tokio::spawn(pump(child.stderr.take(), 2, rt.clone()));
    let (shared, rt2) = (shared.clone(), rt.clone());
    tokio::spawn(async move {
        let status = child.wait().await;
        lock(&shared.pids).remove(&pid);
        // Output still buffered in the pipes belongs before the exit. A grandchild holding
        // the pipes open must not wedge the pod forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = r1.await;
            let _ = r2.await;
        })
        .await;
        let code = match status {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
            Err(_) => 128,
        };
        rt2.stdin.lock().await.take();
        rt2.exited(code);
    });
    Ok((rt, rx))
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, channel: u8, rt: Arc<ContainerRt>) {
    let Some(mut r) = r else { return };
    let mut buf = vec![0u8; 16384];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => rt.publish(channel, &buf[..n]),
        }
    }
}

/// SIGTERM, up to `grace` seconds, then SIGKILL; waits for the exit.
pub(crate) async fn kill_process(rt: &ContainerRt, grace: u64) {
    if rt.exit_code().is_some() {
        return;
    }
    signal_group(rt.pid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(grace), rt.wait())
        .await
        .is_err()
    {
        signal_group(rt.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), rt.wait()).await;
    }
}

/// A strictly increasing nanosecond timestamp: event names are `<object>.<hex nanos>`, as
/// client-go's recorder makes them, so listing (in name order) gives events in time order.
fn event_stamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// Records a core/v1 Event about `pod` (aggregated by reason and message, like the
/// apiserver's event correlator: a repeat bumps `count` and `lastTimestamp`).
pub(crate) fn record_event(
    shared: &Shared,
    pod: &Value,
    etype: &str,
    reason: &str,
    message: &str,
    component: &str,
    field_path: Option<&str>,
) {
    let m = &pod["metadata"];
    let ns = m["namespace"].as_str().unwrap_or("default");
    let uid = m["uid"].as_str().unwrap_or("");
    let existing = shared
        .store
        .list(Kind::Event, Some(ns))
        .0
        .into_iter()
        .find(|e| {
            e["involvedObject"]["uid"] == uid && e["reason"] == reason && e["message"] == message
        });
    let now = now_rfc3339();
    if let Some(e) = existing {
        let name = e["metadata"]["name"].as_str().unwrap_or("").to_string();
        shared.store.update(Kind::Event, ns, &name, |e| {
            let c = e["count"].as_u64().unwrap_or(1);
            e["count"] = json!(c + 1);
            e["lastTimestamp"] = json!(now);
        });
        return;
    }
    let host = pod["spec"]["nodeName"].as_str().unwrap_or("");
    let mut involved = json!({
        "kind": "Pod",
        "namespace": ns,
        "name": m["name"],
        "uid": uid,
        "apiVersion": "v1",
        "resourceVersion": m["resourceVersion"],
    });
    if let Some(fp) = field_path {
        involved["fieldPath"] = json!(fp);
    }
    let mut source = json!({"component": component});
    if component == "kubelet" && !host.is_empty() {
        source["host"] = json!(host);
    }
    let ev = json!({
        "metadata": {
            "name": format!("{}.{:x}", m["name"].as_str().unwrap_or("pod"), event_stamp()),
            "namespace": ns,
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": etype,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": if component == "kubelet" { host } else { "" },
    });
    let _ = shared.store.create(Kind::Event, ev);
}

fn condition(t: &str, ok: bool, reason: Option<&str>, message: Option<&str>) -> Value {
    let mut c = json!({
        "type": t,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now_rfc3339(),
    });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn containers_of(pod: &Value) -> Vec<Value> {
    pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn cname(c: &Value) -> String {
    c["name"].as_str().unwrap_or("").to_string()
}

/// Sets the pod's phase and conditions from its container statuses.
fn refresh_phase(pod: &mut Value) {
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = statuses.len();
    let running = statuses
        .iter()
        .filter(|s| s["state"]["running"].is_object())
        .count();
    let terminated: Vec<&Value> = statuses
        .iter()
        .filter(|s| s["state"]["terminated"].is_object())
        .collect();
    let phase = if pod["status"]["reason"].is_string() {
        // DeadlineExceeded: final, whatever the exit codes.
        "Failed"
    } else if n > 0 && terminated.len() == n {
        if terminated
            .iter()
            .all(|s| s["state"]["terminated"]["exitCode"] == 0)
        {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if running + terminated.len() == n && running > 0 {
        "Running"
    } else {
        "Pending"
    };
    let not_ready: Vec<String> = statuses
        .iter()
        .filter(|s| s["ready"] != true)
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    let ready = not_ready.is_empty() && n > 0;
    let (reason, message) = if ready {
        (None, None)
    } else if phase == "Succeeded" || phase == "Failed" {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                not_ready.join(" ")
            )),
        )
    };
    let st = &mut pod["status"];
    st["phase"] = json!(phase);
    st["conditions"] = json!([
        condition(
            "PodReadyToStartContainers",
            phase != "Pending" || running > 0,
            None,
            None
        ),
        condition("Initialized", true, None, None),
        condition("Ready", ready, reason, message.as_deref()),
        condition("ContainersReady", ready, reason, message.as_deref()),
        condition("PodScheduled", true, None, None),
    ]);
}

/// A pod as the kubelet knows it: by uid too, so a task of a deleted pod never touches a
/// new pod of the same name.
pub(crate) struct PodRef {
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) uid: String,
}

impl PodRef {
    pub(crate) fn of(pod: &Value) -> PodRef {
        let m = &pod["metadata"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        PodRef {
            ns: s(&m["namespace"]),
            name: s(&m["name"]),
            uid: s(&m["uid"]),
        }
    }

    fn key(&self) -> PodKey {
        (self.ns.clone(), self.name.clone())
    }
}

/// The pod, if it is still this one.
fn get_pod(shared: &Shared, r: &PodRef) -> Option<Value> {
    shared
        .store
        .get(Kind::Pod, &r.ns, &r.name)
        .filter(|p| p["metadata"]["uid"] == r.uid.as_str())
}

fn update_pod(shared: &Shared, r: &PodRef, f: impl FnOnce(&mut Value)) -> Option<Value> {
    shared.store.update_if(
        Kind::Pod,
        &r.ns,
        &r.name,
        |p| p["metadata"]["uid"] == r.uid.as_str(),
        f,
    )
}

/// Sets one container's status fields (`state`, `ready`, ...), then the pod's phase.
fn set_container(shared: &Shared, r: &PodRef, container: &str, fields: Value) {
    update_pod(shared, r, |p| {
        if let Some(arr) = p["status"]["containerStatuses"].as_array_mut() {
            for s in arr.iter_mut().filter(|s| s["name"] == container) {
                if let (Some(s), Some(f)) = (s.as_object_mut(), fields.as_object()) {
                    for (k, v) in f {
                        s.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        refresh_phase(p);
    });
}

/// The pod's QoS class, as the apiserver computes it from cpu/memory requests and limits.
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let containers = containers_of(pod);
    let res = |c: &Value, kind: &str, r: &str| {
        c["resources"][kind][r]
            .as_str()
            .map(str::to_string)
            .or_else(|| c["resources"][kind][r].as_i64().map(|n| n.to_string()))
    };
    let any = containers.iter().any(|c| {
        ["requests", "limits"]
            .iter()
            .any(|k| ["cpu", "memory"].iter().any(|r| res(c, k, r).is_some()))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = res(c, "limits", r);
            // A missing request defaults to the limit.
            limit.is_some() && res(c, "requests", r).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Starts the lifecycle of a pod just created through the API.
pub(crate) fn start_pod(shared: &Arc<Shared>, pod: &Value) {
    let r = PodRef::of(pod);
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        let n = shared.nodes.len();
        let msg = format!(
            "0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        );
        if let Some(p) = update_pod(shared, &r, |p| {
            p["status"] = json!({
                "phase": "Pending",
                "qosClass": qos_class(pod),
                "conditions": [condition("PodScheduled", false, Some("Unschedulable"), Some(&msg))],
            });
        }) {
            record_event(
                shared,
                &p,
                "Warning",
                "FailedScheduling",
                &msg,
                "default-scheduler",
                None,
            );
        }
        return;
    }
    let (tx, rx) = watch::channel(None);
    lock(&shared.stops).insert(r.key(), (r.uid.clone(), tx));
    let shared = shared.clone();
    tokio::spawn(async move {
        lifecycle(&shared, &r, rx).await;
        {
            let mut stops = lock(&shared.stops);
            if stops.get(&r.key()).is_some_and(|(uid, _)| *uid == r.uid) {
                stops.remove(&r.key());
            }
        }
        let deleting =
            get_pod(&shared, &r).is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string());
        if deleting {
            finish_delete(&shared, &r);
        }
    });
}

/// Removes a pod whose processes are gone.
pub(crate) fn finish_delete(shared: &Shared, r: &PodRef) {
    let mine = |p: &Value| p["metadata"]["uid"] == r.uid.as_str();
    if shared
        .store
        .delete_if(Kind::Pod, &r.ns, &r.name, mine)
        .is_some()
    {
        lock(&shared.containers).remove(&r.key());
        lock(&shared.inserted).remove(&r.key());
    }
}

async fn wait_stop(rx: &mut watch::Receiver<Option<Stop>>) -> Option<Stop> {
    loop {
        if let Some(s) = rx.borrow_and_update().clone() {
            return Some(s);
        }
        if rx.changed().await.is_err() {
            return None;
        }
    }
}

fn grace_of(pod: &Value) -> u64 {
    pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30)
        .min(MAX_GRACE_SECS)
}

/// Kills the containers and records the outcome of a stop request.
async fn apply_stop(shared: &Shared, r: &PodRef, stop: Stop, rts: &[(String, Arc<ContainerRt>)]) {
    let pod = get_pod(shared, r).unwrap_or(Value::Null);
    match stop {
        Stop::Delete(grace) => {
            for (c, rt) in rts {
                if rt.exit_code().is_none() {
                    let msg = format!("Stopping container {c}");
                    let fp = format!("spec.containers{{{c}}}");
                    record_event(
                        shared,
                        &pod,
                        "Normal",
                        "Killing",
                        &msg,
                        "kubelet",
                        Some(&fp),
                    );
                }
            }
            kill_all(rts, grace).await;
        }
    }
}

async fn kill_all(rts: &[(String, Arc<ContainerRt>)], grace: u64) {
    let kills = rts.iter().map(|(_, rt)| kill_process(rt, grace));
    futures_util::future::join_all(kills).await;
}

fn mark_terminated(shared: &Shared, r: &PodRef, rts: &[(String, Arc<ContainerRt>)]) {
    for (c, rt) in rts {
        let code = rt.exit_code().unwrap_or(137);
        let started = get_pod(shared, r)
            .and_then(|p| {
                p["status"]["containerStatuses"]
                    .as_array()?
                    .iter()
                    .find(|s| s["name"] == c.as_str())
                    .map(|s| {
                        (
                            s["state"]["running"]["startedAt"].clone(),
                            s["containerID"].clone(),
                        )
                    })
            })
            .unwrap_or((Value::Null, Value::Null));
        set_container(
            shared,
            r,
            c,
            json!({
                "ready": false,
                "started": false,
                "state": {"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": started.0,
                    "finishedAt": now_rfc3339(),
                    "containerID": started.1,
                }},
            }),
        );
    }
}

/// The value of an env var's `valueFrom.fieldRef`.
fn field_ref(pod: &Value, path: &str) -> String {
    let v = match path {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "metadata.uid" => &pod["metadata"]["uid"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        "status.hostIP" | "status.podIP" => return NODE_IP.to_string(),
        _ => &Value::Null,
    };
    v.as_str().unwrap_or("").to_string()
}

/// The environment of a container: a minimal image-like base plus the container's `env`
/// (`value` and `valueFrom.fieldRef`).
fn container_env(pod: &Value, c: &Value) -> Vec<(String, String)> {
    let host = if pod["spec"]["hostNetwork"] == true {
        pod["spec"]["nodeName"].as_str().unwrap_or("")
    } else {
        pod["metadata"]["name"].as_str().unwrap_or("")
    };
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOSTNAME".to_string(), host.to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let Some(k) = e["name"].as_str() else {
            continue;
        };
        let v = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(p) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, p)
        } else {
            String::new()
        };
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v));
    }
    env
}

/// Resolves a command by its file name in an image: the directory the image maps to, or
/// the directory of the file (the entrypoint) it maps to.
pub(crate) fn resolve_in_image(image: &Path, cmd: &str) -> Option<PathBuf> {
    let dir = if image.is_file() {
        image.parent()?
    } else {
        image
    };
    let file = Path::new(cmd).file_name()?;
    let p = dir.join(file);
    p.is_file().then_some(p)
}

/// Runs a pod to completion (or until stopped). Returns its processes.
async fn lifecycle(
    shared: &Arc<Shared>,
    r: &PodRef,
    mut stop_rx: watch::Receiver<Option<Stop>>,
) -> Vec<(String, Arc<ContainerRt>)> {
    let Some(pod) = get_pod(shared, r) else {
        return vec![];
    };
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    let containers = containers_of(&pod);
    let qos = qos_class(&pod);
    let waiting = |reason: &str| {
        containers
            .iter()
            .map(|c| {
                json!({
                    "name": cname(c), "image": c["image"], "imageID": "", "ready": false,
                    "restartCount": 0, "started": false, "lastState": {},
                    "state": {"waiting": {"reason": reason}},
                })
            })
            .collect::<Vec<_>>()
    };
    let pending = |statuses: Vec<Value>| {
        move |p: &mut Value| {
            p["status"] = json!({
                "phase": "Pending",
                "hostIP": NODE_IP,
                "hostIPs": [{"ip": NODE_IP}],
                "startTime": now_rfc3339(),
                "qosClass": qos,
                "containerStatuses": statuses,
            });
            refresh_phase(p);
        }
    };
    let kubelet_up = shared.nodes.contains(&node);
    if !kubelet_up {
        // Bound to a node that does not exist: only the scheduler's condition.
        update_pod(shared, r, |p| {
            p["status"] = json!({
                "phase": "Pending",
                "qosClass": qos,
                "conditions": [condition("PodScheduled", true, None, None)],
            });
        });
        if let Some(s) = wait_stop(&mut stop_rx).await {
            apply_stop(shared, r, s, &[]).await;
        }
        return vec![];
    }
    update_pod(shared, r, pending(waiting("ContainerCreating")));

    // Images.
    let missing: Vec<(String, String)> = containers
        .iter()
        .filter_map(|c| {
            let image = c["image"].as_str().unwrap_or("").to_string();
            (!shared.images.contains_key(&image)).then(|| (cname(c), image))
        })
        .collect();
    if !missing.is_empty() {
        let stop = async {
            for (c, image) in &missing {
                let fp = format!("spec.containers{{{c}}}");
                let msg = format!("Pulling image \"{image}\"");
                record_event(
                    shared,
                    &pod,
                    "Normal",
                    "Pulling",
                    &msg,
                    "kubelet",
                    Some(&fp),
                );
                let msg = format!(
                    "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
                );
                record_event(
                    shared,
                    &pod,
                    "Warning",
                    "Failed",
                    &msg,
                    "kubelet",
                    Some(&fp),
                );
                record_event(
                    shared,
                    &pod,
                    "Warning",
                    "Failed",
                    "Error: ErrImagePull",
                    "kubelet",
                    Some(&fp),
                );
                set_container(
                    shared,
                    r,
                    c,
                    json!({"state": {"waiting": {"reason": "ErrImagePull", "message": msg}}}),
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (c, image) in &missing {
                let fp = format!("spec.containers{{{c}}}");
                let msg = format!("Back-off pulling image \"{image}\"");
                record_event(
                    shared,
                    &pod,
                    "Normal",
                    "BackOff",
                    &msg,
                    "kubelet",
                    Some(&fp),
                );
                record_event(
                    shared,
                    &pod,
                    "Warning",
                    "Failed",
                    "Error: ImagePullBackOff",
                    "kubelet",
                    Some(&fp),
                );
                set_container(
                    shared,
                    r,
                    c,
                    json!({"state": {"waiting": {"reason": "ImagePullBackOff", "message": msg}}}),
                );
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = stop => {}
            s = wait_stop(&mut stop_rx) => if let Some(s) = s {
                apply_stop(shared, r, s, &[]).await;
            }
        }
        return vec![];
    }

    // Start every container.
    let mut rts: Vec<(String, Arc<ContainerRt>)> = Vec::new();
    for c in &containers {
        let cn = cname(c);
        let image = c["image"].as_str().unwrap_or("");
        let fp = format!("spec.containers{{{cn}}}");
        let dir = &shared.images[image];
        let msg = format!("Container image \"{image}\" already present on machine");
        record_event(shared, &pod, "Normal", "Pulled", &msg, "kubelet", Some(&fp));
        let strings = |k: &str| -> Vec<String> {
            c[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        let mut cmd = strings("command");
        if cmd.is_empty() && dir.is_file() {
            // No command: the image's entrypoint, when the image maps to a file.
            cmd.push(dir.to_string_lossy().into_owned());
        }
        cmd.extend(strings("args"));
        let spawned = match cmd.first() {
            None => Err("fakekube: the container has no command and its image maps to a directory (no entrypoint)".to_string()),
            Some(c0) => match resolve_in_image(dir, c0) {
                None => Err(format!(
                    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{c0}\": stat {c0}: no such file or directory: unknown"
                )),
                Some(program) => spawn_process(
                    shared,
                    ProcessSpec {
                        program,
                        args: cmd[1..].to_vec(),
                        env: container_env(&pod, c),
                        cwd: c["workingDir"].as_str().map(PathBuf::from).filter(|p| p.is_dir()).unwrap_or_else(|| "/".into()),
                        pipe_stdin: c["stdin"] == true,
                        stdin_once: c["stdinOnce"] == true,
                    },
                )
                .map(|(rt, _)| rt)
                .map_err(|e| format!("failed to start container process: {e}")),
            },
        };
        match spawned {
            Ok(rt) => {
                record_event(
                    shared,
                    &pod,
                    "Normal",
                    "Created",
                    &format!("Created container: {cn}"),
                    "kubelet",
                    Some(&fp),
                );
                record_event(
                    shared,
                    &pod,
                    "Normal",
                    "Started",
                    &format!("Started container {cn}"),
                    "kubelet",
                    Some(&fp),
                );
                rts.push((cn, rt));
            }
            Err(msg) => {
                record_event(
                    shared,
                    &pod,
                    "Warning",
                    "Failed",
                    &format!("Error: {msg}"),
                    "kubelet",
                    Some(&fp),
                );
                set_container(
                    shared,
                    r,
                    &cn,
                    json!({"state": {"terminated": {
                        "exitCode": 128, "reason": "StartError", "message": msg,
                        "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now_rfc3339(),
                    }}}),
                );
            }
        }
    }
    lock(&shared.containers).insert(r.key(), rts.clone());
    let started = now_rfc3339();
    update_pod(shared, r, |p| {
        p["status"]["podIP"] = json!(NODE_IP);
        p["status"]["podIPs"] = json!([{"ip": NODE_IP}]);
        if let Some(arr) = p["status"]["containerStatuses"].as_array_mut() {
            for s in arr.iter_mut() {
                if rts.iter().any(|(c, _)| s["name"] == c.as_str()) {
                    s["state"] = json!({"running": {"startedAt": started}});
                    s["ready"] = json!(true);
                    s["started"] = json!(true);
                    s["containerID"] = json!(format!("containerd://{}", random_hex(32)));
                    s["imageID"] = json!(format!("sha256:{}", random_hex(32)));
                }
            }
        }
        refresh_phase(p);
    });

    // Watch each container's exit.
    for (c, rt) in &rts {
        let (shared, rt, c) = (shared.clone(), rt.clone(), c.clone());
        let r = PodRef {
            ns: r.ns.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        };
        tokio::spawn(async move {
            rt.wait().await;
            mark_terminated(&shared, &r, &[(c, rt)]);
        });
    }
    let all_exited = futures_util::future::join_all(rts.iter().map(|(_, rt)| rt.wait()));
    // activeDeadlineSeconds counts from the pod's start and may be changed (PATCH) while
    // the pod runs: re-read it.
    let started_at = tokio::time::Instant::now();
    let deadline = async {
        loop {
            let limit =
                get_pod(shared, r).and_then(|p| p["spec"]["activeDeadlineSeconds"].as_u64());
            let wait = match limit {
                Some(s) => {
                    let end = started_at + Duration::from_secs(s);
                    if tokio::time::Instant::now() >= end {
                        return;
                    }
                    (end - tokio::time::Instant::now()).min(Duration::from_millis(250))
                }
                None => Duration::from_millis(250),
            };
            tokio::time::sleep(wait).await;
        }
    };
    tokio::select! {
        _ = all_exited => {}
        s = wait_stop(&mut stop_rx) => if let Some(s) = s {
            apply_stop(shared, r, s, &rts).await;
        },
        _ = deadline => {
            let msg = "Pod was active on the node longer than the specified deadline";
            record_event(shared, &pod, "Warning", "DeadlineExceeded", msg, "kubelet", None);
            update_pod(shared, r, |p| {
                p["status"]["phase"] = json!("Failed");
                p["status"]["reason"] = json!("DeadlineExceeded");
                p["status"]["message"] = json!(msg);
            });
            kill_all(&rts, grace_of(&pod)).await;
            mark_terminated(shared, r, &rts);
        }
    }
    rts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "a", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "50m", "memory": "64Mi"}}))),
            "Burstable"
        );
        let same = json!({"cpu": "1", "memory": "1Gi"});
        assert_eq!(
            qos_class(&pod(json!({"requests": same, "limits": same}))),
            "Guaranteed"
        );
        assert_eq!(qos_class(&pod(json!({"limits": same}))), "Guaranteed");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
