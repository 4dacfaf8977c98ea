//! The agent pod manifest (the same template as `manifests/agent-pod.yaml`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// Label every agent pod carries.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Label value of [`NAME_LABEL`].
pub const NAME_VALUE: &str = "nettrace-agent";
/// Label naming the session that created the pod.
pub const SESSION_LABEL: &str = "nettrace.io/session";
/// Annotation listing the targets the pod traces.
pub const TARGETS_ANNOTATION: &str = "nettrace.io/targets";
/// The agent container's name.
pub const CONTAINER: &str = "agent";
/// How much longer than `--timeout` the pod may live (agent start and stop).
pub const DEADLINE_SLACK_SECS: u64 = 60;

/// A session id: 8 characters of `[a-z0-9]`, random enough to tell
/// concurrent sessions apart.
pub fn session_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let mut v = h.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| {
            let c = ALPHABET[(v % 36) as usize];
            v /= 36;
            char::from(c)
        })
        .collect()
}

/// `nettrace-<session>-<node>`, made a DNS-1123 label (lower case,
/// `[a-z0-9-]`, at most 63 characters; a long node name is cut and a short
/// hash of it keeps names distinct).
pub fn pod_name(session: &str, node: &str) -> String {
    let mut clean: String = node
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let prefix = format!("nettrace-{session}-");
    let room = 63 - prefix.len();
    if clean.len() > room {
        let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) & 0xff_ffff;
        clean.truncate(room - 7);
        clean = format!("{}-{hash:06x}", clean.trim_end_matches('-'));
    }
    let name = format!("{prefix}{clean}");
    name.trim_end_matches('-').to_string()
}

/// What an agent pod is made of.
#[derive(Debug, Clone)]
pub struct AgentPod<'a> {
    /// Session id.
    pub session: &'a str,
    /// The node to run on.
    pub node: &'a str,
    /// Namespace of the agent pods.
    pub namespace: &'a str,
    /// Image with `nettrace` at `/usr/local/bin/nettrace`.
    pub image: &'a str,
    /// `--timeout`.
    pub timeout: Duration,
    /// The targets it serves (`pod/NS/NAME`, `node/NAME`), for the annotation.
    pub targets: &'a [String],
}

impl AgentPod<'_> {
    /// The pod object, ready to create or to print for `kubectl apply -f -`.
    pub fn manifest(&self) -> Pod {
        let labels: BTreeMap<&str, &str> = [
            (NAME_LABEL, NAME_VALUE),
            ("app.kubernetes.io/managed-by", "kubectl-nettrace"),
            (SESSION_LABEL, self.session),
        ]
        .into_iter()
        .collect();
        let value = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name(self.session, self.node),
                "namespace": self.namespace,
                "labels": labels,
                "annotations": { TARGETS_ANNOTATION: self.targets.join(",") },
            },
            "spec": {
                "nodeName": self.node,
                "hostPID": true,
                "hostNetwork": true,
                "dnsPolicy": "ClusterFirstWithHostNet",
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "activeDeadlineSeconds": self.timeout.as_secs() + DEADLINE_SLACK_SECS,
                "terminationGracePeriodSeconds": 5,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{
                    "name": CONTAINER,
                    "image": self.image,
                    "command": ["/usr/local/bin/nettrace", "agent"],
                    "stdin": true,
                    "stdinOnce": true,
                    "tty": false,
                    "securityContext": {"privileged": true},
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }],
            },
        });
        // A fixed, valid shape: this conversion cannot fail.
        serde_json::from_value(value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        AgentPod {
            session: "k3x9q2ab",
            node: "worker-1",
            namespace: "nettrace",
            image: "example.org/nettrace:1",
            timeout: Duration::from_secs(3600),
            targets: &["pod/shop/client".to_string(), "pod/shop/server".to_string()],
        }
        .manifest()
    }

    #[test]
    fn the_manifest_runs_privileged_on_the_node_without_credentials() {
        let p = pod();
        let meta = &p.metadata;
        assert_eq!(meta.name.as_deref(), Some("nettrace-k3x9q2ab-worker-1"));
        assert_eq!(meta.namespace.as_deref(), Some("nettrace"));
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(NAME_LABEL).map(String::as_str),
            Some("nettrace-agent")
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("kubectl-nettrace")
        );
        assert_eq!(
            labels.get(SESSION_LABEL).map(String::as_str),
            Some("k3x9q2ab")
        );
        let ann = meta.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get(TARGETS_ANNOTATION).map(String::as_str),
            Some("pod/shop/client,pod/shop/server")
        );
        let spec = p.spec.unwrap_or_default();
        assert_eq!(spec.node_name.as_deref(), Some("worker-1"));
        assert_eq!(spec.host_pid, Some(true));
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.active_deadline_seconds, Some(3660));
        assert_eq!(spec.termination_grace_period_seconds, Some(5));
        assert_eq!(spec.priority_class_name, None);
        assert!(spec.volumes.is_none(), "no host mounts");
        let tol = spec.tolerations.unwrap_or_default();
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert!(tol[0].key.is_none() && tol[0].effect.is_none());
        assert_eq!(spec.containers.len(), 1);
        let c = &spec.containers[0];
        assert_eq!(c.name, "agent");
        assert_eq!(c.image.as_deref(), Some("example.org/nettrace:1"));
        assert_eq!(
            c.command.clone().unwrap_or_default(),
            ["/usr/local/bin/nettrace", "agent"]
        );
        assert_eq!(
            (c.stdin, c.stdin_once, c.tty),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(
            c.security_context.as_ref().and_then(|s| s.privileged),
            Some(true)
        );
        assert!(c.volume_mounts.is_none());
        assert!(c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some());
    }

    #[test]
    fn the_manifest_prints_as_applicable_json() {
        let v = serde_json::to_value(pod()).unwrap_or_default();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["spec"]["containers"][0]["stdinOnce"], true);
    }

    #[test]
    fn the_documented_template_says_the_same() {
        let yaml = include_str!("../../../manifests/agent-pod.yaml");
        for line in [
            "nodeName: <node>",
            "hostPID: true",
            "hostNetwork: true",
            "dnsPolicy: ClusterFirstWithHostNet",
            "restartPolicy: Never",
            "automountServiceAccountToken: false",
            "enableServiceLinks: false",
            "activeDeadlineSeconds: 3660",
            "terminationGracePeriodSeconds: 5",
            "- operator: Exists",
            "- name: agent",
            "command: [\"/usr/local/bin/nettrace\", \"agent\"]",
            "stdin: true",
            "stdinOnce: true",
            "tty: false",
            "privileged: true",
            "cpu: 50m",
            "memory: 64Mi",
            "app.kubernetes.io/name: nettrace-agent",
            "app.kubernetes.io/managed-by: kubectl-nettrace",
            "nettrace.io/session: <session>",
            "nettrace.io/targets: ",
        ] {
            assert!(
                yaml.lines().any(|l| l.trim().starts_with(line)),
                "agent-pod.yaml lacks {line:?}"
            );
        }
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(
            pod_name("abc", "Worker_1.example.com"),
            "nettrace-abc-worker-1-example-com"
        );
        let long = "a".repeat(40) + ".very-long-domain-name.example.com";
        let n = pod_name("k3x9q2ab", &long);
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with("nettrace-k3x9q2ab-aaaa"));
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert_ne!(n, pod_name("k3x9q2ab", &(long.clone() + "x")));
        let id = session_id();
        assert_eq!(id.len(), 8);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
