//! The fake Kubernetes control plane and kubelet (`nettrace_tests::fakekube`), driven by
//! kube-rs 2.0.1 (the plugin's client library) and by raw HTTP and WebSocket: what the
//! plugin needs of it where a real cluster cannot serve (an agent that misbehaves on demand,
//! `kube_backpressure.rs`, and the `kube_stream` bench). kubectl against a server (1.20 and
//! 1.33), admission, image pulls and eviction are checked on the real bench cluster
//! (`kube_e2e.rs`), not here.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nettrace_tests::fakekube::FakeCluster;
use serde_json::{json, Value};

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

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
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
    // The main process and its background child (same process group), once sh forked it.
    let group_of = || -> Vec<i32> {
        std::fs::read_dir("/proc")
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
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut group = group_of();
    while group.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        group = group_of();
    }
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
