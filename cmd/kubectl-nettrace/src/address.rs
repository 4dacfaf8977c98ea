//! Addresses of the command line (`-s`, `-d`, `--addr`) resolved to the pods
//! behind them: a pod's IP, a Service's ClusterIP (its ready pods, through
//! its EndpointSlices) or the node IP of a hostNetwork pod. The matching is
//! done by pure functions over `k8s_openapi` objects; [`behind`] fetches them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::Client;
use nettrace_common::TraceOptions;

/// What an address on the command line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behind {
    /// The IP of a running pod.
    Pod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A Service's ClusterIP.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its ready pods, as (namespace, name), sorted and deduplicated.
        pods: Vec<(String, String)>,
    },
    /// The IP of a running hostNetwork pod, which is its node's.
    HostNetworkPod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The node whose IP it is.
        node: String,
    },
    /// No pod or Service has it (an address outside the cluster).
    Nothing,
}

impl Behind {
    /// One line for stderr saying what `option` (`-s`, `-d`, `--addr`) and
    /// its address `ip` name, or `None` for [`Behind::Nothing`].
    pub fn describe(&self, option: &str, ip: IpAddr) -> Option<String> {
        let what = match self {
            Behind::Pod { namespace, name } => {
                format!("pod {namespace}/{name}: also tracing it")
            }
            Behind::Service {
                namespace,
                name,
                pods,
            } if pods.is_empty() => {
                format!("service {namespace}/{name}, which has no ready pods to trace")
            }
            Behind::Service {
                namespace,
                name,
                pods,
            } => {
                let list: Vec<String> = pods.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
                let noun = if pods.len() == 1 { "pod" } else { "pods" };
                format!(
                    "service {namespace}/{name}: also tracing {noun} {}",
                    list.join(", ")
                )
            }
            Behind::HostNetworkPod {
                namespace,
                name,
                node,
            } => {
                format!("the IP of node {node} (hostNetwork pod {namespace}/{name}): also tracing on node {node}")
            }
            Behind::Nothing => return None,
        };
        Some(format!("{option} {ip} is {what}"))
    }
}

/// The addresses given to `-s`, `-d` and `--addr`, each with its option,
/// parsed; values that are not IP addresses are left to option validation,
/// and an address given twice is kept once (with its first option).
pub fn option_addresses(opts: &TraceOptions) -> Vec<(&'static str, IpAddr)> {
    let mut out: Vec<(&'static str, IpAddr)> = Vec::new();
    for (option, value) in [
        ("-s", &opts.saddr),
        ("-d", &opts.daddr),
        ("--addr", &opts.addr),
    ] {
        let Some(ip) = value
            .as_deref()
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
        else {
            continue;
        };
        if !out.iter().any(|(_, seen)| *seen == ip) {
            out.push((option, ip));
        }
    }
    out
}

/// Whether `s` is the address `ip` (textual forms may differ for IPv6).
fn same_ip(s: &str, ip: IpAddr) -> bool {
    s.trim().parse::<IpAddr>().is_ok_and(|a| a == ip)
}

/// The running pod in `pods` with `ip` among its `podIPs` (or its `podIP`):
/// a pod, or the hostNetwork pod on whose node's IP it is when no other pod
/// has it. `None` if no running pod has it.
pub fn pod_with_ip(pods: &[Pod], ip: IpAddr) -> Option<Behind> {
    let mut host_network = None;
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if status.phase.as_deref() != Some("Running") {
            continue;
        }
        let in_ips = status.pod_ips.iter().flatten().any(|p| same_ip(&p.ip, ip));
        if !in_ips && !status.pod_ip.as_deref().is_some_and(|p| same_ip(p, ip)) {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            host_network.get_or_insert(Behind::HostNetworkPod {
                namespace,
                name,
                node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            });
        } else {
            return Some(Behind::Pod { namespace, name });
        }
    }
    host_network
}

/// The (namespace, name) of the Service in `services` with the ClusterIP
/// `ip` (any of `clusterIPs`, or `clusterIP`).
pub fn service_with_ip(services: &[Service], ip: IpAddr) -> Option<(String, String)> {
    services
        .iter()
        .find(|svc| {
            svc.spec.as_ref().is_some_and(|spec| {
                spec.cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .any(|c| same_ip(c, ip))
            })
        })
        .map(|svc| {
            (
                svc.metadata.namespace.clone().unwrap_or_default(),
                svc.metadata.name.clone().unwrap_or_default(),
            )
        })
}

/// The pods behind EndpointSlices, as (namespace, name), sorted and
/// deduplicated: endpoints whose `targetRef` is a Pod, except those not
/// ready. A `targetRef` without a namespace is in the slice's.
pub fn pods_of_slices(slices: &[EndpointSlice]) -> Vec<(String, String)> {
    let mut pods = BTreeSet::new();
    for slice in slices {
        for ep in &slice.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(target) = ep.target_ref.as_ref() else {
                continue;
            };
            let Some(name) = target
                .name
                .clone()
                .filter(|_| target.kind.as_deref() == Some("Pod"))
            else {
                continue;
            };
            let namespace = target
                .namespace
                .clone()
                .or_else(|| slice.metadata.namespace.clone())
                .unwrap_or_default();
            pods.insert((namespace, name));
        }
    }
    pods.into_iter().collect()
}

/// The context of a failed list: what could not be listed and, for a 403,
/// the permission that is missing (`missing` as in "list services in all
/// namespaces").
fn list_context(e: &kube::Error, what: &str, missing: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "not allowed to list {what} (403 Forbidden): the permission to {missing} is missing; see manifests/rbac.yaml"
        ),
        _ => format!("cannot list {what}"),
    }
}

/// A list's result, its error with [`list_context`].
fn listed<T>(r: kube::Result<T>, what: &str, missing: &str) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            let context = list_context(&e, what, missing);
            Err(e).context(context)
        }
    }
}

/// What `ip` is in the cluster: a pod's IP, a Service's ClusterIP (with the
/// ready pods behind it), a hostNetwork pod's node IP, or nothing.
pub async fn behind(client: &Client, ip: IpAddr) -> Result<Behind> {
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("status.podIP={ip}"));
    let list = listed(
        pods.list(&lp).await,
        &format!("the pods with IP {ip}"),
        "list pods in all namespaces",
    )?;
    if let Some(found) = pod_with_ip(&list.items, ip) {
        return Ok(found);
    }

    let services: Api<Service> = Api::all(client.clone());
    let list = listed(
        services.list(&ListParams::default()).await,
        "the services of all namespaces",
        "list services in all namespaces",
    )?;
    let Some((namespace, name)) = service_with_ip(&list.items, ip) else {
        return Ok(Behind::Nothing);
    };

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let list = listed(
        slices.list(&lp).await,
        &format!("the endpointslices of service {namespace}/{name}"),
        &format!("list endpointslices (group discovery.k8s.io) in namespace \"{namespace}\""),
    )?;
    Ok(Behind::Service {
        pods: pods_of_slices(&list.items),
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn pod(name: &str, phase: &str, host_network: bool, ips: &[&str]) -> Pod {
        let pod_ips: Vec<_> = ips.iter().map(|i| json!({"ip": i})).collect();
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": "worker-1", "hostNetwork": host_network, "containers": [{"name": "app"}]},
            "status": {"phase": phase, "podIP": ips.first(), "podIPs": pod_ips}
        }))
        .unwrap_or_else(|e| panic!("pod fixture: {e}"))
    }

    fn service(name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec
        }))
        .unwrap_or_else(|e| panic!("service fixture: {e}"))
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints
        }))
        .unwrap_or_else(|e| panic!("endpointslice fixture: {e}"))
    }

    #[test]
    fn option_addresses_are_parsed_and_deduplicated() {
        let opts = TraceOptions {
            saddr: Some("10.244.1.7".into()),
            daddr: Some(" fd00::0007 ".into()),
            addr: Some("10.244.1.7".into()),
            ..TraceOptions::default()
        };
        assert_eq!(
            option_addresses(&opts),
            [("-s", ip("10.244.1.7")), ("-d", ip("fd00::7"))]
        );
        let opts = TraceOptions {
            saddr: Some("10.0.0.300".into()),
            addr: Some("10.96.0.10".into()),
            ..TraceOptions::default()
        };
        assert_eq!(option_addresses(&opts), [("--addr", ip("10.96.0.10"))]);
        assert!(option_addresses(&TraceOptions::default()).is_empty());
    }

    #[test]
    fn a_pod_ip_is_the_running_pod_with_it() {
        let pods = [
            pod("old", "Succeeded", false, &["10.244.1.7"]),
            pod("web-1", "Running", false, &["10.244.1.7", "fd00::7"]),
        ];
        let web = Behind::Pod {
            namespace: "shop".into(),
            name: "web-1".into(),
        };
        assert_eq!(pod_with_ip(&pods, ip("10.244.1.7")), Some(web.clone()));
        // the second IP of a dual-stack pod, written differently
        assert_eq!(pod_with_ip(&pods, ip("fd00:0::7")), Some(web));
        assert_eq!(pod_with_ip(&pods, ip("10.244.1.8")), None);
        assert_eq!(pod_with_ip(&pods[..1], ip("10.244.1.7")), None);
    }

    #[test]
    fn a_host_network_pod_ip_is_its_node() {
        let pods = [
            pod("kube-proxy-x", "Running", true, &["192.168.1.10"]),
            pod("pending", "Pending", false, &["192.168.1.10"]),
        ];
        assert_eq!(
            pod_with_ip(&pods, ip("192.168.1.10")),
            Some(Behind::HostNetworkPod {
                namespace: "shop".into(),
                name: "kube-proxy-x".into(),
                node: "worker-1".into()
            })
        );
        // a pod of its own wins over a hostNetwork pod listed first
        let both = [
            pod("kube-proxy-x", "Running", true, &["10.244.1.7"]),
            pod("web-1", "Running", false, &["10.244.1.7"]),
        ];
        assert_eq!(
            pod_with_ip(&both, ip("10.244.1.7")),
            Some(Behind::Pod {
                namespace: "shop".into(),
                name: "web-1".into()
            })
        );
    }

    #[test]
    fn a_cluster_ip_is_its_service() {
        let services = [
            service(
                "headless",
                json!({"clusterIP": "None", "clusterIPs": ["None"]}),
            ),
            service(
                "external",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
            service(
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"]}),
            ),
            service("old", json!({"clusterIP": "10.96.0.20"})),
        ];
        let shop = |n: &str| Some(("shop".to_string(), n.to_string()));
        assert_eq!(service_with_ip(&services, ip("10.96.0.10")), shop("web"));
        assert_eq!(service_with_ip(&services, ip("fd00:96::000a")), shop("web"));
        assert_eq!(service_with_ip(&services, ip("10.96.0.20")), shop("old"));
        assert_eq!(service_with_ip(&services, ip("10.96.0.30")), None);
    }

    #[test]
    fn slices_give_their_ready_pods_once() {
        let slices = [
            slice(json!([
                {"addresses": ["10.244.1.7"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                {"addresses": ["10.244.2.9"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "web-2", "namespace": "shop"}},
                {"addresses": ["10.244.3.4"],
                 "targetRef": {"kind": "Pod", "name": "web-0"}},
                {"addresses": ["192.168.1.50"]},
                {"addresses": ["192.168.1.51"], "targetRef": {"kind": "Node", "name": "worker-1"}}
            ])),
            slice(json!([
                {"addresses": ["fd00::7"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}}
            ])),
        ];
        assert_eq!(
            pods_of_slices(&slices),
            [
                ("shop".to_string(), "web-0".to_string()),
                ("shop".to_string(), "web-1".to_string())
            ]
        );
        assert!(pods_of_slices(&[slice(json!([]))]).is_empty());
    }

    #[test]
    fn descriptions() {
        let d = |b: Behind, o: &str, a: &str| b.describe(o, ip(a));
        let s = |n: &str| ("shop".to_string(), n.to_string());
        assert_eq!(
            d(
                Behind::Pod {
                    namespace: "shop".into(),
                    name: "web-1".into()
                },
                "-s",
                "10.244.1.7"
            )
            .as_deref(),
            Some("-s 10.244.1.7 is pod shop/web-1: also tracing it")
        );
        let svc = |pods| Behind::Service {
            namespace: "shop".into(),
            name: "web".into(),
            pods,
        };
        assert_eq!(
            d(svc(vec![s("web-1")]), "-d", "10.96.0.10").as_deref(),
            Some("-d 10.96.0.10 is service shop/web: also tracing pod shop/web-1")
        );
        assert_eq!(
            d(svc(vec![s("web-1"), s("web-2")]), "--addr", "fd00:96::a").as_deref(),
            Some("--addr fd00:96::a is service shop/web: also tracing pods shop/web-1, shop/web-2")
        );
        assert_eq!(
            d(svc(vec![]), "-d", "10.96.0.10").as_deref(),
            Some("-d 10.96.0.10 is service shop/web, which has no ready pods to trace")
        );
        assert_eq!(
            d(
                Behind::HostNetworkPod {
                    namespace: "kube-system".into(),
                    name: "kube-proxy-x".into(),
                    node: "worker-1".into()
                },
                "-d",
                "192.168.1.10"
            )
            .as_deref(),
            Some("-d 192.168.1.10 is the IP of node worker-1 (hostNetwork pod kube-system/kube-proxy-x): also tracing on node worker-1")
        );
        assert_eq!(d(Behind::Nothing, "-d", "8.8.8.8"), None);
    }

    #[test]
    fn a_forbidden_list_names_the_missing_permission() {
        let api_error = |code: u16, reason: &str| {
            kube::Error::Api(kube::core::ErrorResponse {
                status: "Failure".into(),
                message: "services is forbidden".into(),
                reason: reason.into(),
                code,
            })
        };
        let what = "the services of all namespaces";
        let missing = "list services in all namespaces";
        assert_eq!(
            list_context(&api_error(403, "Forbidden"), what, missing),
            "not allowed to list the services of all namespaces (403 Forbidden): the permission to list services in all namespaces is missing; see manifests/rbac.yaml"
        );
        assert_eq!(
            list_context(&api_error(500, "InternalError"), what, missing),
            "cannot list the services of all namespaces"
        );
        let err = listed::<()>(Err(api_error(500, "InternalError")), what, missing)
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("cannot list the services of all namespaces".into())
        );
    }
}
