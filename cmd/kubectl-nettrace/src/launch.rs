//! Agent pod lifecycle: create, wait until it runs (watching it, with
//! progress on stderr), explain why it did not start (its Warning events),
//! and delete.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::time::Instant;

use crate::agent_pod::CONTAINER;
use crate::console::say;

/// Container waiting reasons that will not resolve by themselves.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "ErrImageNeverPull",
    "RunContainerError",
];

/// Waiting reasons that are about the image (`--image`).
const IMAGE_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Where an agent pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not running yet; the text says why (`Pending`, `ContainerCreating`...).
    Waiting(String),
    /// The agent container runs: attach to it.
    Running,
    /// It will not start; the text is the reason (`ErrImagePull`, `Evicted`...).
    Failed(String),
}

/// Reads the state of an agent pod from its status.
pub fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = pod.status.as_ref() else {
        return PodState::Waiting("Pending".into());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        let reason = status.reason.clone().or_else(|| {
            agent_status(pod).and_then(|s| s.state.as_ref()?.terminated.as_ref()?.reason.clone())
        });
        return PodState::Failed(reason.unwrap_or_else(|| phase.to_string()));
    }
    let unschedulable = status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if unschedulable {
        return PodState::Failed("Unschedulable".into());
    }
    if let Some(state) = agent_status(pod).and_then(|s| s.state.as_ref()) {
        if let Some(w) = &state.waiting {
            let reason = w.reason.clone().unwrap_or_else(|| "Waiting".into());
            if FATAL_WAITING.contains(&reason.as_str()) {
                // The kubelet's own words (the pull error...), on one line.
                let message = one_line(w.message.as_deref());
                if message.is_empty() {
                    return PodState::Failed(reason);
                }
                let hint = if IMAGE_REASONS.contains(&reason.as_str()) {
                    "; pass --image with an image every node can pull"
                } else {
                    ""
                };
                return PodState::Failed(format!("{reason}: {message}{hint}"));
            }
            return PodState::Waiting(reason);
        }
        if let Some(t) = &state.terminated {
            return PodState::Failed(format!(
                "the agent exited ({}, exit code {})",
                t.reason.as_deref().unwrap_or("terminated"),
                t.exit_code
            ));
        }
        if state.running.is_some() {
            return PodState::Running;
        }
    }
    PodState::Waiting(phase.to_string())
}

fn agent_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

/// One readable line per Warning event: `Warning REASON: message`.
pub fn event_lines(events: &[Event]) -> Vec<String> {
    let mut evs: Vec<&Event> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    evs.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
    evs.iter()
        .map(|e| {
            let msg = one_line(e.message.as_deref());
            let count = e
                .count
                .filter(|&c| c > 1)
                .map(|c| format!(" (x{c})"))
                .unwrap_or_default();
            format!(
                "  Warning {}: {msg}{count}",
                e.reason.as_deref().unwrap_or("Unknown")
            )
        })
        .collect()
}

/// Creates the agent pod; a missing namespace gets a hint.
pub async fn create(api: &Api<Pod>, pod: &Pod, namespace: &str) -> Result<()> {
    match api.create(&PostParams::default(), pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => bail!(
            "namespace \"{namespace}\" does not exist; create it with `kubectl apply -f manifests/namespace.yaml` (or pass --agent-namespace)"
        ),
        Err(kube::Error::Api(s)) if s.code == 403 => match pod_security_level(&s.message) {
            Some(level) => bail!(
                "namespace \"{namespace}\" has Pod Security level \"{level}\", which forbids the privileged agent pod ({}); label it pod-security.kubernetes.io/enforce=privileged (as manifests/namespace.yaml does) or pass --agent-namespace with a namespace that is",
                pod_security_violations(&s.message)
            ),
            None => bail!(
                "not allowed to create pods in namespace \"{namespace}\": {}; see manifests/rbac.yaml",
                s.message
            ),
        },
        Err(e) => Err(e).with_context(|| format!("cannot create an agent pod in namespace \"{namespace}\"")),
    }
}

/// The Pod Security level named by an admission refusal
/// (`... violates PodSecurity "baseline:latest": ...`), without its version.
pub fn pod_security_level(message: &str) -> Option<&str> {
    let rest = message.split("violates PodSecurity \"").nth(1)?;
    let level = rest.split('"').next()?;
    Some(level.split(':').next().unwrap_or(level))
}

/// What the admission refusal lists after `violates PodSecurity "...": `.
fn pod_security_violations(message: &str) -> &str {
    message
        .split("violates PodSecurity \"")
        .nth(1)
        .and_then(|r| r.split_once("\": "))
        .map(|(_, v)| v.trim())
        .unwrap_or(message)
}

/// Warning events of a pod, as lines (empty when they cannot be read).
pub async fn warning_events(events: &Api<Event>, pod: &str) -> Vec<String> {
    let lp = ListParams::default().fields(&format!(
        "involvedObject.name={pod},involvedObject.kind=Pod"
    ));
    match events.list(&lp).await {
        Ok(list) => event_lines(&list.items),
        Err(e) => vec![format!("  (cannot read its events: {e})")],
    }
}

/// Waits until the agent pod runs, printing each state change on stderr.
pub async fn wait_running(
    api: &Api<Pod>,
    events: &Api<Event>,
    name: &str,
    node: &str,
    start_timeout: Duration,
) -> Result<()> {
    let ns = api_namespace(api);
    let deadline = Instant::now() + start_timeout;
    let mut last = None;
    let failed = |reason: &str, lines: Vec<String>| {
        let mut msg = format!("agent pod {ns}/{name} on node {node} could not start: {reason}");
        // A reason with the kubelet's message says it all: the events would repeat it.
        let explained = reason.contains(": ");
        for l in lines.into_iter().filter(|_| !explained) {
            msg.push('\n');
            msg.push_str(&l);
        }
        anyhow!(msg)
    };
    let mut observe = |pod: &Pod| -> Option<std::result::Result<(), String>> {
        let state = pod_state(pod);
        match &state {
            PodState::Running => return Some(Ok(())),
            PodState::Failed(r) => return Some(Err(r.clone())),
            PodState::Waiting(w) => {
                if last.as_ref() != Some(w) {
                    say!("waiting for agent pod {ns}/{name} on node {node}: {w}");
                    last = Some(w.clone());
                }
            }
        }
        None
    };
    loop {
        let pod = api
            .get(name)
            .await
            .with_context(|| format!("cannot read agent pod {ns}/{name}"))?;
        match observe(&pod) {
            Some(Ok(())) => return Ok(()),
            Some(Err(reason)) => return Err(failed(&reason, warning_events(events, name).await)),
            None => {}
        }
        let version = pod
            .metadata
            .resource_version
            .clone()
            .unwrap_or_else(|| "0".into());
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(60);
        let stream = api.watch(&wp, &version).await;
        let mut stream = match stream {
            Ok(s) => s.boxed(),
            Err(e) => return Err(e).with_context(|| format!("cannot watch agent pod {ns}/{name}")),
        };
        loop {
            let next = tokio::time::timeout_at(deadline, stream.try_next()).await;
            let event = match next {
                Err(_) => {
                    let lines = warning_events(events, name).await;
                    let reason = format!(
                        "not running after {}s (--start-timeout); last state: {}",
                        start_timeout.as_secs(),
                        last.clone().unwrap_or_else(|| "unknown".into())
                    );
                    return Err(failed(&reason, lines));
                }
                Ok(Ok(Some(ev))) => ev,
                // the watch ended or broke: read the pod again and re-watch
                Ok(Ok(None)) | Ok(Err(_)) => break,
            };
            match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => match observe(&p) {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(reason)) => {
                        return Err(failed(&reason, warning_events(events, name).await))
                    }
                    None => {}
                },
                WatchEvent::Deleted(_) => {
                    return Err(failed("the pod was deleted", Vec::new()));
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(_) => break,
            }
        }
        if Instant::now() >= deadline {
            let reason = format!(
                "not running after {}s (--start-timeout)",
                start_timeout.as_secs()
            );
            return Err(failed(&reason, warning_events(events, name).await));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn api_namespace(api: &Api<Pod>) -> String {
    api.namespace().unwrap_or("").to_string()
}

/// Deletes the finished agent pods (`Succeeded` or `Failed`) in the agent namespace: an
/// earlier run that was killed (SIGKILL, a lost machine) could not delete its own, and its
/// agents exited by themselves. One stderr line each; nothing when they cannot be listed.
pub async fn delete_finished(api: &Api<Pod>) {
    let ns = api_namespace(api);
    let lp = ListParams::default().labels(&format!(
        "{}={}",
        crate::agent_pod::NAME_LABEL,
        crate::agent_pod::NAME_VALUE
    ));
    let Ok(list) = api.list(&lp).await else {
        return;
    };
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for pod in list.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        if api.delete(name, &dp).await.is_ok() {
            say!("deleting agent pod {ns}/{name} (finished, left by an earlier run)");
        }
    }
}

/// Deletes agent pods and waits (bounded) until they are gone.
pub async fn delete_all(api: &Api<Pod>, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let ns = api_namespace(api);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for name in names {
        match api.delete(name, &dp).await {
            Ok(_) => say!("deleting agent pod {ns}/{name}"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => say!(
                "warning: cannot delete agent pod {ns}/{name}: {e}; delete it with: kubectl delete pod -n {ns} {name}"
            ),
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut told = false;
    let mut left: Vec<String> = names.to_vec();
    while !left.is_empty() {
        let mut still = Vec::new();
        for name in &left {
            match api.get_opt(name).await {
                Ok(None) => {}
                Ok(Some(_)) => still.push(name.clone()),
                Err(_) => still.push(name.clone()),
            }
        }
        left = still;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            say!(
                "warning: agent pod(s) still terminating after 30s: {}; check with: kubectl get pods -n {ns} -l {}={}",
                left.join(", "),
                crate::agent_pod::NAME_LABEL,
                crate::agent_pod::NAME_VALUE
            );
            return;
        }
        if !told && started.elapsed() >= Duration::from_secs(2) {
            say!("waiting for agent pod(s) to go: {}", left.join(", "));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Kubernetes message (kubelet or event text, possibly multi-line) on one
/// line, its whitespace runs collapsed; empty when there is none.
fn one_line(message: Option<&str>) -> String {
    message
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn waiting(reason: &str) -> Pod {
        pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "agent", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}]}),
        )
    }

    #[test]
    fn states_from_status() {
        assert_eq!(
            pod_state(&pod(json!({"phase": "Pending"}))),
            PodState::Waiting("Pending".into())
        );
        assert_eq!(
            pod_state(&waiting("ContainerCreating")),
            PodState::Waiting("ContainerCreating".into())
        );
        for fatal in [
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
            "CreateContainerConfigError",
            "CreateContainerError",
            "CrashLoopBackOff",
        ] {
            assert_eq!(pod_state(&waiting(fatal)), PodState::Failed(fatal.into()));
        }
        assert_eq!(
            pod_state(&pod(json!({"phase": "Failed", "reason": "Evicted"}))),
            PodState::Failed("Evicted".into())
        );
        assert_eq!(
            pod_state(&pod(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]})
            )),
            PodState::Failed("Unschedulable".into())
        );
        let running = pod(
            json!({"phase": "Running", "containerStatuses": [{"name": "agent", "image": "i", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        assert_eq!(pod_state(&running), PodState::Running);
    }

    #[test]
    fn pod_security_refusals_name_the_level() {
        let m = "pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true), privileged (container \"agent\" must not set securityContext.privileged=true)";
        assert_eq!(pod_security_level(m), Some("baseline"));
        assert_eq!(
            pod_security_violations(m),
            "host namespaces (hostNetwork=true), privileged (container \"agent\" must not set securityContext.privileged=true)"
        );
        assert_eq!(
            pod_security_level("pods is forbidden: User \"u\" cannot create"),
            None
        );
    }

    #[test]
    fn an_image_failure_carries_the_kubelets_message_and_a_hint() {
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "agent", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull",
            "message": "failed to pull\n image \"i\""}}}]}),
        );
        assert_eq!(
            pod_state(&p),
            PodState::Failed(
                "ErrImagePull: failed to pull image \"i\"; pass --image with an image every node can pull"
                    .into()
            )
        );
    }

    #[test]
    fn warning_events_read_in_one_line_each() {
        let evs: Vec<Event> = serde_json::from_value(json!([
            {"metadata": {"name": "e1"}, "involvedObject": {}, "type": "Normal", "reason": "Scheduled", "message": "ok"},
            {"metadata": {"name": "e2"}, "involvedObject": {}, "type": "Warning", "reason": "Failed",
             "message": "Failed to pull image \"x\":\n  not found", "count": 3},
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            event_lines(&evs),
            ["  Warning Failed: Failed to pull image \"x\": not found (x3)"]
        );
    }
}
