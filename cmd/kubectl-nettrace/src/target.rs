//! Targets: parsing `pod/NAME`, `NAME` and `node/NAME`, resolving pods to
//! their node and containers (pure functions over `k8s_openapi` pods), and
//! the API calls that fetch them.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use nettrace_common::protocol::Target;
use thiserror::Error;

/// One target of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetArg {
    /// A pod of the namespace.
    Pod(String),
    /// A whole node.
    Node(String),
}

/// Why a target cannot be traced.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    /// Not `pod/NAME`, `NAME` or `node/NAME`.
    #[error("'{0}' is not a target; use pod/NAME, NAME (a pod) or node/NAME")]
    Syntax(String),
    /// No such pod.
    #[error("pod \"{pod}\" not found in namespace \"{namespace}\"")]
    PodNotFound {
        /// Namespace looked in.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// No such node.
    #[error("node \"{0}\" not found")]
    NodeNotFound(String),
    /// The scheduler has not placed the pod yet.
    #[error("pod \"{namespace}/{pod}\" is not scheduled to a node yet; wait until it is (kubectl get pod {pod} -n {namespace} -o wide)")]
    NotScheduled {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// The pod is not running.
    #[error("pod \"{namespace}/{pod}\" is not running (phase: {phase})")]
    NotRunning {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Its phase.
        phase: String,
    },
    /// `-c` names no container of the pod.
    #[error("container \"{container}\" not found in pod \"{namespace}/{pod}\"; its containers: {available}")]
    UnknownContainer {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// What was asked.
        container: String,
        /// The pod's containers, comma separated.
        available: String,
    },
    /// The container has not been created yet.
    #[error("container \"{container}\" of pod \"{namespace}/{pod}\" has no container ID yet ({state}); wait until it runs")]
    NoContainerId {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Container name.
        container: String,
        /// Its state, e.g. `waiting: ContainerCreating`.
        state: String,
    },
}

/// Parses one command-line target.
pub fn parse_target(s: &str) -> Result<TargetArg, TargetError> {
    let bad = || TargetError::Syntax(s.to_string());
    let (kind, name) = match s.split_once('/') {
        Some((k, n)) => (Some(k), n),
        None => (None, s),
    };
    if name.is_empty() || name.contains('/') {
        return Err(bad());
    }
    match kind.map(str::to_ascii_lowercase).as_deref() {
        None | Some("pod" | "pods" | "po") => Ok(TargetArg::Pod(name.to_string())),
        Some("node" | "nodes" | "no") => Ok(TargetArg::Node(name.to_string())),
        Some(_) => Err(bad()),
    }
}

/// A pod ready to be traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its IP addresses.
    pub ips: Vec<String>,
    /// Shares the node's network namespace.
    pub host_network: bool,
    /// The containers to trace.
    pub targets: Vec<Target>,
    /// Containers left out because they have no ID yet (without `-c`).
    pub skipped: Vec<String>,
}

fn state_of(pod: &Pod, container: &str) -> String {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container));
    let Some(state) = status.and_then(|s| s.state.as_ref()) else {
        return "no status yet".to_string();
    };
    if let Some(w) = &state.waiting {
        return format!(
            "waiting: {}",
            w.reason.as_deref().unwrap_or("unknown reason")
        );
    }
    if let Some(t) = &state.terminated {
        return format!(
            "terminated: {}",
            t.reason.as_deref().unwrap_or("unknown reason")
        );
    }
    "running".to_string()
}

fn container_id(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .container_id
        .clone()
        .filter(|id| !id.is_empty())
}

/// Resolves a fetched pod: its node, IPs and the containers to trace (all
/// of them, or the one named by `-c`).
pub fn resolve_pod(pod: &Pod, container: Option<&str>) -> Result<ResolvedPod, TargetError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let node = spec
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| TargetError::NotScheduled {
            namespace: namespace.clone(),
            pod: name.clone(),
        })?;
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".to_string());
    if phase != "Running" {
        return Err(TargetError::NotRunning {
            namespace,
            pod: name,
            phase,
        });
    }
    let ips = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .or_else(|| status.and_then(|s| s.pod_ip.clone()).map(|ip| vec![ip]))
        .unwrap_or_default();
    let names: Vec<String> = spec
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let wanted: Vec<&str> = match container {
        Some(c) if names.iter().any(|n| n == c) => vec![c],
        Some(c) => {
            return Err(TargetError::UnknownContainer {
                namespace,
                pod: name,
                container: c.to_string(),
                available: names.join(", "),
            })
        }
        None => names.iter().map(String::as_str).collect(),
    };
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    let mut first_missing = None;
    for c in &wanted {
        match container_id(pod, c) {
            Some(id) => targets.push(Target {
                namespace: namespace.clone(),
                pod: name.clone(),
                container: c.to_string(),
                container_id: id,
                pod_uid: pod.metadata.uid.clone(),
            }),
            None => {
                first_missing.get_or_insert(*c);
                skipped.push(c.to_string());
            }
        }
    }
    if targets.is_empty() {
        let c = first_missing.or(wanted.first().copied()).unwrap_or("");
        return Err(TargetError::NoContainerId {
            state: state_of(pod, c),
            namespace,
            pod: name,
            container: c.to_string(),
        });
    }
    Ok(ResolvedPod {
        namespace,
        name,
        node,
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        targets,
        skipped,
    })
}

/// The peers of a node: every container with an ID of the running,
/// non-hostNetwork pods in `pods` (the pods of that node).
pub fn peers_of(pods: &[Pod]) -> Vec<Target> {
    let mut peers = Vec::new();
    for pod in pods {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if !running || host_network {
            continue;
        }
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten() {
            if let Some(id) = cs.container_id.as_ref().filter(|id| !id.is_empty()) {
                peers.push(Target {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    container: cs.name.clone(),
                    container_id: id.clone(),
                    pod_uid: pod.metadata.uid.clone(),
                });
            }
        }
    }
    peers
}

/// What one node traces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// The containers to trace there (empty with `whole_node`).
    pub targets: Vec<Target>,
    /// `node/NAME` was given: no pod scoping.
    pub whole_node: bool,
    /// The command-line targets it serves, for the agent pod's annotation.
    pub labels: Vec<String>,
}

/// Groups resolved pods and node targets per node.
pub fn plan_nodes(pods: &[ResolvedPod], nodes: &[String]) -> BTreeMap<String, NodePlan> {
    let mut plans: BTreeMap<String, NodePlan> = BTreeMap::new();
    for p in pods {
        let plan = plans.entry(p.node.clone()).or_default();
        plan.targets.extend(p.targets.iter().cloned());
        plan.labels.push(format!("pod/{}/{}", p.namespace, p.name));
    }
    for n in nodes {
        let plan = plans.entry(n.clone()).or_default();
        plan.whole_node = true;
        plan.labels.push(format!("node/{n}"));
    }
    for plan in plans.values_mut() {
        if plan.whole_node {
            plan.targets.clear();
        }
        plan.labels.dedup();
    }
    plans
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Fetches and resolves one pod.
pub async fn fetch_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<ResolvedPod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = match api.get(name).await {
        Ok(p) => p,
        Err(e) if is_not_found(&e) => {
            return Err(TargetError::PodNotFound {
                namespace: namespace.to_string(),
                pod: name.to_string(),
            }
            .into())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot get pod \"{namespace}/{name}\"")),
    };
    Ok(resolve_pod(&pod, container)?)
}

/// Checks that a node exists.
pub async fn check_node(client: &Client, name: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    match api.get(name).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(TargetError::NodeNotFound(name.to_string()).into()),
        Err(e) => Err(e).with_context(|| format!("cannot get node \"{name}\"")),
    }
}

/// The peers of a node, from the pods scheduled there (all namespaces).
pub async fn fetch_peers(client: &Client, node: &str) -> Result<Vec<Target>> {
    let api: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let list = api
        .list(&lp)
        .await
        .with_context(|| format!("cannot list the pods of node \"{node}\""))?;
    Ok(peers_of(&list.items))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A running pod with two containers, `app` (with an ID) and `sidecar`.
    pub(crate) fn fixture() -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "client", "namespace": "shop", "uid": "uid-1"},
            "spec": {"nodeName": "worker-1", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}, {"ip": "fd00::7"}],
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://abc", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                     "state": {"running": {}}},
                    {"name": "sidecar", "containerID": "cri-o://def", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                     "state": {"running": {}}}
                ]}
        }))
        .unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("pod/foo"), Ok(TargetArg::Pod("foo".into())));
        assert_eq!(parse_target("pods/foo"), Ok(TargetArg::Pod("foo".into())));
        assert_eq!(parse_target("foo"), Ok(TargetArg::Pod("foo".into())));
        assert_eq!(parse_target("node/w1"), Ok(TargetArg::Node("w1".into())));
        assert_eq!(parse_target("Nodes/w1"), Ok(TargetArg::Node("w1".into())));
        for bad in ["", "pod/", "svc/foo", "pod/a/b", "/foo"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_target("svc/foo").map_err(|e| e.to_string()),
            Err("'svc/foo' is not a target; use pod/NAME, NAME (a pod) or node/NAME".into())
        );
    }

    #[test]
    fn a_running_pod_resolves_to_its_containers() {
        let r = resolve_pod(&fixture(), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.node, "worker-1");
        assert_eq!(r.ips, ["10.244.1.7", "fd00::7"]);
        assert!(!r.host_network);
        assert_eq!(r.targets.len(), 2);
        assert_eq!(r.targets[0].container_id, "containerd://abc");
        assert_eq!(r.targets[1].container_id, "cri-o://def");
        assert_eq!(r.targets[0].pod_uid.as_deref(), Some("uid-1"));
        let one = resolve_pod(&fixture(), Some("sidecar")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.targets.len(), 1);
        assert_eq!(one.targets[0].container, "sidecar");
    }

    #[test]
    fn resolution_errors_say_what_is_wrong() {
        let err =
            |pod: &Pod, c: Option<&str>| resolve_pod(pod, c).map(|_| ()).unwrap_err().to_string();
        assert_eq!(
            err(&fixture(), Some("db")),
            "container \"db\" not found in pod \"shop/client\"; its containers: app, sidecar"
        );
        let mut pending = fixture();
        if let Some(s) = pending.status.as_mut() {
            s.phase = Some("Pending".into());
        }
        assert_eq!(
            err(&pending, None),
            "pod \"shop/client\" is not running (phase: Pending)"
        );
        let mut unscheduled = fixture();
        if let Some(s) = unscheduled.spec.as_mut() {
            s.node_name = None;
        }
        assert!(err(&unscheduled, None).contains("is not scheduled to a node yet"));
        let mut no_id = fixture();
        if let Some(cs) = no_id
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            cs[1].container_id = None;
            cs[1].state =
                serde_json::from_value(json!({"waiting": {"reason": "ContainerCreating"}})).ok();
        }
        assert_eq!(
            err(&no_id, Some("sidecar")),
            "container \"sidecar\" of pod \"shop/client\" has no container ID yet (waiting: ContainerCreating); wait until it runs"
        );
        // without -c the container with an ID is traced, the other skipped
        let r = resolve_pod(&no_id, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.targets.len(), 1);
        assert_eq!(r.skipped, ["sidecar"]);
        assert_eq!(
            TargetError::PodNotFound {
                namespace: "default".into(),
                pod: "foo".into()
            }
            .to_string(),
            "pod \"foo\" not found in namespace \"default\""
        );
    }

    #[test]
    fn peers_skip_host_network_and_pods_not_running() {
        let mut host = fixture();
        if let Some(s) = host.spec.as_mut() {
            s.host_network = Some(true);
        }
        let mut done = fixture();
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        let peers = peers_of(&[fixture(), host, done]);
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].pod, "client");
        assert_eq!(peers[1].container, "sidecar");
    }

    #[test]
    fn nodes_group_targets_and_whole_nodes_drop_scoping() {
        let a = resolve_pod(&fixture(), Some("app")).unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        b.node = "worker-2".into();
        b.name = "server".into();
        let plans = plan_nodes(&[a.clone(), b], &["worker-3".into()]);
        assert_eq!(plans.len(), 3);
        assert_eq!(plans["worker-1"].targets.len(), 1);
        assert_eq!(plans["worker-1"].labels, ["pod/shop/client"]);
        assert!(plans["worker-3"].whole_node && plans["worker-3"].targets.is_empty());
        let plans = plan_nodes(&[a], &["worker-1".into()]);
        assert!(plans["worker-1"].whole_node && plans["worker-1"].targets.is_empty());
        assert_eq!(
            plans["worker-1"].labels,
            ["pod/shop/client", "node/worker-1"]
        );
    }
}
