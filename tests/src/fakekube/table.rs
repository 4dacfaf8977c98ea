//! `meta.k8s.io` Table rendering (what `kubectl get` asks for with `Accept: ...;as=Table`).

use serde_json::{json, Value};

use super::store::Kind;
use super::{now_secs, parse_rfc3339};

/// Formats an age like apimachinery's `duration.HumanDuration`.
pub(crate) fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    let y = h / 24 / 365;
    if h < 24 * 365 * 8 {
        let d = h / 24 % 365;
        return if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        };
    }
    format!("{y}y")
}

fn age(obj: &Value) -> String {
    match obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_rfc3339)
    {
        Some(t) => human_duration(now_secs() - t),
        None => "<unknown>".into(),
    }
}

fn col(name: &str, ty: &str, format: &str, priority: u32, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn none_if_empty(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<none>"),
    }
}

/// The READY and STATUS cells of a pod, as kubectl's pod printer computes them.
pub(crate) fn pod_ready_status(pod: &Value) -> (String, String) {
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let st = &pod["status"];
    let mut reason = st["reason"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| st["phase"].as_str())
        .unwrap_or("")
        .to_string();
    let mut ready = 0;
    let mut has_running = false;
    let statuses = st["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in statuses.iter().rev() {
        let s = &c["state"];
        if let Some(r) = s["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_string();
        } else if let Some(r) = s["terminated"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_string();
        } else if s["terminated"].is_object() {
            let sig = s["terminated"]["signal"].as_i64().unwrap_or(0);
            reason = if sig != 0 {
                format!("Signal:{sig}")
            } else {
                format!(
                    "ExitCode:{}",
                    s["terminated"]["exitCode"].as_i64().unwrap_or(0)
                )
            };
        } else if c["ready"] == true && s["running"].is_object() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        let pod_ready = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        reason = if pod_ready {
            "Running".into()
        } else {
            "NotReady".into()
        };
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if st["reason"] == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    (format!("{ready}/{total}"), reason)
}

fn columns(kind: Kind) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    match kind {
        Kind::Pod => vec![
            name,
            col("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age,
            col("IP", "string", "", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", "string", "", 1, "NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
            col("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Kind::Node => vec![
            name,
            col("Status", "string", "", 0, "The status of the node"),
            col("Roles", "string", "", 0, "The roles of the node"),
            age,
            col("Version", "string", "", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", "", 1, "List of addresses reachable to the node."),
            col("External-IP", "string", "", 1, "List of addresses reachable to the node."),
            col("OS-Image", "string", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            col("Kernel-Version", "string", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            col("Container-Runtime", "string", "", 1, "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        Kind::Namespace => vec![
            name,
            col("Status", "string", "", 0, "The status of the namespace"),
            age,
        ],
        Kind::Event => vec![
            col("Last Seen", "string", "", 0, "Time of the last occurrence."),
            col("Type", "string", "", 0, "Type of this event (Normal, Warning)."),
            col("Reason", "string", "", 0, "Why the action was taken."),
            col("Object", "string", "", 0, "The object this Event is about."),
            col("Message", "string", "", 0, "A human-readable description of the status of this operation."),
        ],
    }
}

fn cells(kind: Kind, obj: &Value) -> Vec<Value> {
    let name = json!(obj["metadata"]["name"]);
    match kind {
        Kind::Pod => {
            let (ready, status) = pod_ready_status(obj);
            let restarts: i64 = obj["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum();
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts),
                json!(age(obj)),
                none_if_empty(&obj["status"]["podIP"]),
                none_if_empty(&obj["spec"]["nodeName"]),
                none_if_empty(&obj["status"]["nominatedNodeName"]),
                json!("<none>"),
            ]
        }
        Kind::Node => {
            let st = &obj["status"];
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map_or("Unknown", |c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                });
            let mut status = ready.to_string();
            if obj["spec"]["unschedulable"] == true {
                status += ",SchedulingDisabled";
            }
            let mut roles: Vec<String> = obj["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .collect();
            roles.sort();
            let addr = |t: &str| {
                st["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map_or(json!("<none>"), |a| a["address"].clone())
            };
            let info = &st["nodeInfo"];
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                json!(age(obj)),
                json!(info["kubeletVersion"]),
                addr("InternalIP"),
                addr("ExternalIP"),
                json!(info["osImage"]),
                json!(info["kernelVersion"]),
                json!(info["containerRuntimeVersion"]),
            ]
        }
        Kind::Namespace => vec![name, json!(obj["status"]["phase"]), json!(age(obj))],
        Kind::Event => {
            let last = obj["lastTimestamp"].as_str().and_then(parse_rfc3339);
            let io = &obj["involvedObject"];
            vec![
                json!(last.map_or("<unknown>".to_string(), |t| human_duration(now_secs() - t))),
                json!(obj["type"]),
                json!(obj["reason"]),
                json!(format!(
                    "{}/{}",
                    io["kind"].as_str().unwrap_or("").to_lowercase(),
                    io["name"].as_str().unwrap_or("")
                )),
                json!(obj["message"]),
            ]
        }
    }
}

/// A Table of `objects`. `api_version` is `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`;
/// `include_object` is `None`, `Metadata` (default) or `Object`.
pub(crate) fn table(
    kind: Kind,
    objects: &[Value],
    rv: u64,
    api_version: &str,
    include_object: &str,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }),
            };
            let mut row = json!({"cells": cells(kind, o)});
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(50 * 3600), "2d2h");
    }

    #[test]
    fn pod_status_cells() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "ready": true, "state": {"running": {}}},
                {"name": "b", "ready": false, "state": {"waiting": {"reason": "ErrImagePull"}}},
            ]},
        });
        assert_eq!(
            pod_ready_status(&pod),
            ("1/2".into(), "ErrImagePull".into())
        );
    }
}
