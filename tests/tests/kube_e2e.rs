//! `kubectl nettrace` end to end on the real bench cluster (`tests/kube/cluster.sh`): an
//! upstream API server, two nodes with their own containerd, kubelet and kube-proxy, a VXLAN
//! overlay between them, real RBAC and Pod Security admission. The plugin starts the real
//! agent image on the nodes and traces busybox pods that send real packets.
//!
//! Needs root and the cluster's pieces (`./dev test` brings the cluster up first and takes it
//! down after); a missing piece fails the test. Each test has a namespace of its own
//! (`TestNs`); run as the admin, its agent pods go there too, so two tests can run at once.
//! Both nodes share this host's kernel: an agent follows a matched skb into the other node's
//! namespace too, so the assertions are exact about the lines that name a pod and do not
//! assume an agent sees only its own node.

use std::time::{Duration, Instant};

use nettrace_tests::cluster::{
    agent_pods_named, agent_prog_ids, blocks, exclusive_host, find_path, nettrace_progs, pod_of,
    shared_host, step, NodeRule, TestNs, AGENT_NS, CONTAINER,
};
use nettrace_tests::{assert_progs_gone, Finished};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// What host nettrace and the plugin both say to `--stack` on every tracer.
const COSTLY_STACK: &str = "--stack with the whole \"all\" tracer is costly: pick tracers with -t, use --stack-tracer without --stack, or add --force-stack";

fn assert_exit_ok(fin: &Finished) {
    assert!(fin.status.success(), "plugin failed\n{}", fin.describe());
}

/// Every line that names `pod` names `node` right after it (`, pod: P[ via V], node: N`).
fn assert_pod_lines_on(fin: &Finished, pod: &str, node: &str) -> usize {
    let lines: Vec<&String> = fin
        .stdout_lines
        .iter()
        .filter(|l| l.contains(&format!("{pod},")) || l.contains(&format!("{pod} via ")))
        .collect();
    for l in &lines {
        assert!(
            l.ends_with(&format!(", node: {node}")),
            "a line of {pod} not from {node}: {l}\n{}",
            fin.describe()
        );
    }
    lines.len()
}

/// Packets sent by a node's VXLAN device.
fn vxlan_tx_packets(node: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-n", node, "-j", "-s", "link", "show", "nt-vx0"])
        .output()
        .expect("ip -s link show");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tx counter for nt-vx0 in {node}: {v}"))
}

#[test]
fn pod_to_pod_on_one_node_crosses_its_bridge_annotated_with_both_pods() {
    let _host = shared_host();
    let mut ns = TestNs::new("onenode");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let (a_ip, c_ip) = (ns.ip("a"), ns.ip("c"));
    let (a_veth, c_veth) = (ns.host_veth("a", "nt-node1"), ns.host_veth("c", "nt-node1"));

    let nt = ns.trace(&["pod/a", "-p", "icmp", "--timeline", "--detail"]);
    ns.exec_ok("a", &["ping", "-c", "1", "-W", "2", &c_ip]);
    let (pa, pc) = (pod_of(&ns, "a"), pod_of(&ns, "c"));
    let fin = nt.stop_when(Duration::from_secs(20), |lines| {
        lines
            .iter()
            .any(|l| l.contains("ping reply") && l.ends_with(&pa))
    });
    assert_exit_ok(&fin);

    // One agent: no node suffix. The request leaves a's eth0, enters the node at a's veth,
    // is bridged to c's veth and arrives on c's eth0, each hop named after its pod.
    let request = format!("ICMP: {a_ip} -> {c_ip}, ping request");
    let path = [
        step(&["][2:eth0]", &request, &format!(", {pa}")]),
        step(&[
            &format!(":{a_veth}]"),
            &request,
            &format!(", {pa} via {a_veth}"),
        ]),
        step(&[
            &format!(":{c_veth}]"),
            &request,
            &format!(", {pc} via {c_veth}"),
        ]),
        step(&["][2:eth0]", &request, &format!(", {pc}")]),
    ];
    let all = blocks(&fin.stdout_lines);
    let found = all.iter().find_map(|b| find_path(b, &path));
    let found = found.unwrap_or_else(|| {
        panic!(
            "no timeline block follows the request from a's eth0 over the node to c's eth0\n{}",
            fin.describe()
        )
    });
    assert!(found[0].ends_with(&pa), "{}", found[0]);
    assert!(found[3].ends_with(&pc), "{}", found[3]);
    // And the reply comes back to a.
    let reply = format!("ICMP: {c_ip} -> {a_ip}, ping reply");
    assert!(
        fin.stdout_lines
            .iter()
            .any(|l| l.contains("][2:eth0]") && l.contains(&reply) && l.ends_with(&pa)),
        "{}",
        fin.describe()
    );
    ns.assert_no_agents(Duration::from_secs(10), "after Ctrl-C");
}

#[test]
fn pod_to_pod_across_nodes_is_seen_by_both_agents_over_the_overlay_as_the_restricted_user() {
    let _host = shared_host();
    let mut ns = TestNs::new("twonodes");
    ns.pods(&[("a", "nt-node1"), ("b", "nt-node2")]);
    let (a_ip, b_ip) = (ns.ip("a"), ns.ip("b"));
    let a_veth = ns.host_veth("a", "nt-node1");
    let b_veth = ns.host_veth("b", "nt-node2");
    let (pa, pb) = (pod_of(&ns, "a"), pod_of(&ns, "b"));

    // nt-user has exactly manifests/rbac.yaml: its agents go to the namespace "nettrace".
    let user = ns.cluster.user.clone();
    let nt = ns.trace_as(
        &user,
        &["pod/a", "pod/b", "-p", "icmp", "--timeline", "--detail"],
    );
    let stderr = nt.stderr_lines();
    for node in ["nt-node1", "nt-node2"] {
        assert!(
            stderr.iter().any(|l| l.starts_with(&format!(
                "node {node}: agent {}, kernel ",
                env!("CARGO_PKG_VERSION")
            ))),
            "no agent on {node}: {stderr:?}"
        );
    }
    let tx_before = vxlan_tx_packets("nt-node1");
    ns.exec_ok("a", &["ping", "-c", "2", "-i", "0.2", "-W", "2", &b_ip]);
    let tx_after = vxlan_tx_packets("nt-node1");
    let fin = nt.stop_when(Duration::from_secs(20), |lines| {
        lines
            .iter()
            .any(|l| l.contains("ping reply") && l.ends_with(&format!("{pa}, node: nt-node1")))
    });
    assert_exit_ok(&fin);
    assert!(
        tx_after >= tx_before + 2,
        "the pings crossed the overlay: nt-vx0 of nt-node1 sent {} packets",
        tx_after - tx_before
    );

    let request = format!("ICMP: {a_ip} -> {b_ip}, ping request");
    let all = blocks(&fin.stdout_lines);
    // nt-node1's agent: from a's eth0 into its node, and out of the node's VXLAN device.
    let sent = [
        step(&["][2:eth0]", &request, &format!(", {pa}, node: nt-node1")]),
        step(&[
            &format!(":{a_veth}]"),
            &request,
            &format!(", {pa} via {a_veth}, node: nt-node1"),
        ]),
        step(&[":nt-vx0]", &request, ", node: nt-node1"]),
    ];
    assert!(
        all.iter().any(|b| find_path(b, &sent).is_some()),
        "no block of nt-node1 follows the request from a over the overlay\n{}",
        fin.describe()
    );
    // nt-node2's agent: the same request into b through b's veth.
    let received = [
        step(&[
            &format!(":{b_veth}]"),
            &request,
            &format!(", {pb} via {b_veth}, node: nt-node2"),
        ]),
        step(&["][2:eth0]", &request, &format!(", {pb}, node: nt-node2")]),
    ];
    assert!(
        all.iter().any(|b| find_path(b, &received).is_some()),
        "no block of nt-node2 follows the request into b\n{}",
        fin.describe()
    );
    // The lines that name a pod name its node; every line names one of the two nodes.
    assert!(assert_pod_lines_on(&fin, &pa, "nt-node1") >= 4);
    assert!(assert_pod_lines_on(&fin, &pb, "nt-node2") >= 4);
    for l in fin.stdout_lines.iter().filter(|l| l.contains("ICMP: ")) {
        assert!(
            l.ends_with(", node: nt-node1") || l.ends_with(", node: nt-node2"),
            "{l}"
        );
    }
    // Merged in time order: the blocks' first events never go back in time.
    let firsts: Vec<f64> = all
        .iter()
        .filter_map(|b| b.get(1))
        .map(|l| {
            l.split(':')
                .next()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_else(|| panic!("no timestamp: {l}"))
        })
        .collect();
    assert!(firsts.len() >= 4, "{}", fin.describe());
    assert!(
        firsts.windows(2).all(|w| w[0] <= w[1]),
        "blocks out of time order: {firsts:?}\n{}",
        fin.describe()
    );
    let agents = agent_pods_named(&fin.stderr_lines, AGENT_NS);
    assert_eq!(agents.len(), 2, "{}", fin.describe());
    ns.cluster
        .assert_pods_gone(AGENT_NS, &agents, Duration::from_secs(10));
}

#[test]
fn a_service_cluster_ip_is_followed_through_kube_proxy_dnat_with_skb_mode() {
    let _host = shared_host();
    let mut ns = TestNs::new("service");
    ns.pods(&[("a", "nt-node1")]);
    let vip = ns.web_service("nt-node1", "a");
    let (a_ip, web_ip) = (ns.ip("a"), ns.ip("web"));
    let (a_veth, web_veth) = (
        ns.host_veth("a", "nt-node1"),
        ns.host_veth("web", "nt-node1"),
    );
    let nt = ns.trace(&[
        "pod/a",
        "-p",
        "tcp",
        "-d",
        &vip,
        "--dport",
        "80",
        "--skb-mode",
        "--timeline",
        "--detail",
    ]);
    let answer = ns.exec_ok("a", &["nc", "-w", "2", &vip, "80"]);
    assert!(answer.contains("hello"), "{answer}");
    let (pa, pw) = (pod_of(&ns, "a"), pod_of(&ns, "web"));
    let backend = format!("-> {web_ip}:8080");
    let fin = nt.stop_when(Duration::from_secs(20), |lines| {
        lines
            .iter()
            .any(|l| l.contains(&backend) && l.ends_with(&pw))
    });
    assert_exit_ok(&fin);

    // One skb: sent by a to the ClusterIP, DNATed by kube-proxy's rules in the node,
    // delivered to the backend pod.
    let to_vip = format!("-> {vip}:80");
    let path = [
        step(&[
            "][2:eth0]",
            &format!("TCP: {a_ip}:"),
            &to_vip,
            &format!(", {pa}"),
        ]),
        step(&[
            &format!(":{a_veth}]"),
            &to_vip,
            &format!(", {pa} via {a_veth}"),
        ]),
        step(&[
            &format!(":{web_veth}]"),
            &format!("TCP: {a_ip}:"),
            &backend,
            &format!(", {pw} via {web_veth}"),
        ]),
        step(&["][2:eth0]", &backend, &format!(", {pw}")]),
    ];
    let all = blocks(&fin.stdout_lines);
    let found = all.iter().find_map(|b| find_path(b, &path));
    let found = found.unwrap_or_else(|| {
        panic!(
            "no block follows a's SYN to the ClusterIP and, rewritten, into the backend\n{}",
            fin.describe()
        )
    });
    assert!(found[0].ends_with(&pa), "{}", found[0]);
    assert!(found[3].ends_with(&pw), "{}", found[3]);
    // --detail: after kube-proxy's DNAT the skb carries its conntrack entry, both tuples.
    let tuples = format!(" -> {vip}:80, reply {web_ip}:8080 -> {a_ip}:");
    assert!(
        fin.stdout_lines.iter().any(|l| {
            l.starts_with("                ct: new, dnat")
                && l.contains(&format!("orig tcp {a_ip}:"))
                && l.contains(&tuples)
        }),
        "no conntrack entry of kube-proxy's DNAT\n{}",
        fin.describe()
    );
}

#[test]
fn an_iptables_drop_of_traffic_to_a_pod_shows_its_reason_and_pod() {
    let _host = shared_host();
    let mut ns = TestNs::new("drop");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let (a_ip, c_ip) = (ns.ip("a"), ns.ip("c"));
    let c_veth = ns.host_veth("c", "nt-node1");
    // A NetworkPolicy-like rule in the node: ICMP to c is dropped on the bridge's FORWARD.
    let comment = format!("nt-e2e {}", ns.name);
    let _rule = NodeRule::drop_icmp_to("nt-node1", &c_ip, &comment);

    let nt = ns.trace(&["pod/a", "-p", "icmp", "-d", &c_ip]);
    let out = ns.exec("a", &["ping", "-c", "1", "-W", "1", &c_ip]);
    assert!(!out.status.success(), "the ping should be dropped");
    let fin = nt.stop_when(Duration::from_secs(20), |lines| {
        lines.iter().any(|l| l.contains("NETFILTER_DROP"))
    });
    assert_exit_ok(&fin);
    let request = format!("ICMP: {a_ip} -> {c_ip}, ping request");
    let drop = fin
        .stdout_lines
        .iter()
        .find(|l| l.contains("[kfree_skb") && l.contains("reason: NETFILTER_DROP"))
        .unwrap_or_else(|| panic!("no NETFILTER_DROP line\n{}", fin.describe()));
    assert!(drop.contains(&request), "{drop}");
    assert!(
        drop.contains(", location: nft_do_chain+0x")
            || drop.contains(", location: nf_hook_slow+0x"),
        "the drop is located in netfilter: {drop}"
    );
    // Dropped in the node's bridge FORWARD hook on its way out to c: annotated with the pod
    // the traffic was for, through its host-side veth.
    assert!(
        drop.ends_with(&format!(", {} via {c_veth}", pod_of(&ns, "c"))),
        "{drop}\n{}",
        fin.describe()
    );
    // Nothing reached c's namespace.
    let pc = pod_of(&ns, "c");
    assert!(
        !fin.stdout_lines.iter().any(|l| l.ends_with(&pc)),
        "{}",
        fin.describe()
    );
}

#[test]
fn nft_trace_names_the_iptables_rule_and_diag_sums_it_up_by_pod_and_node() {
    let _host = shared_host();
    let mut ns = TestNs::new("nftdiag");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let (a_ip, c_ip) = (ns.ip("a"), ns.ip("c"));
    // A NetworkPolicy-like rule in the node: ICMP to c is dropped on the bridge's FORWARD.
    let comment = format!("nt-e2e {}", ns.name);
    let _rule = NodeRule::drop_icmp_to("nt-node1", &c_ip, &comment);

    let nt = ns.trace(&["pod/a", "-p", "icmp", "-d", &c_ip, "--nft-trace", "--diag"]);
    let out = ns.exec("a", &["ping", "-c", "2", "-i", "0.2", "-W", "1", &c_ip]);
    assert!(!out.status.success(), "the pings should be dropped");
    let fin = nt.stop_when(Duration::from_secs(20), |lines| {
        lines
            .iter()
            .filter(|l| l.contains("rule: ip filter FORWARD #"))
            .count()
            >= 2
    });
    assert_exit_ok(&fin);
    let request = format!("ICMP: {a_ip} -> {c_ip}, ping request");
    let rule_line = |l: &String| {
        l.starts_with("                rule: ip filter FORWARD #")
            && l.ends_with(&format!(": drop, comment \"{comment}\""))
    };
    // each drop, and only drops (--diag), with the rule under it
    let lines = &fin.stdout_lines;
    let drops: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("[kfree_skb") && lines[i].contains("reason: NETFILTER_DROP"))
        .collect();
    assert_eq!(drops.len(), 2, "{}", fin.describe());
    for &i in &drops {
        assert!(lines[i].contains(&request), "{}", lines[i]);
        assert!(
            lines.get(i + 1).is_some_and(rule_line),
            "the rule under the drop\n{}",
            fin.describe()
        );
    }
    // The summary names the pod the traffic was for and its node, and the rule.
    let at = lines
        .iter()
        .position(|l| l == "--- diag summary ---")
        .unwrap_or_else(|| panic!("no summary\n{}", fin.describe()));
    let row = lines
        .get(at + 2)
        .unwrap_or_else(|| panic!("no summary row\n{}", fin.describe()));
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells.first(), Some(&"2"), "{row}");
    assert!(
        cells
            .get(1)
            .is_some_and(|c| c.starts_with("drop NETFILTER_DROP")),
        "{row}"
    );
    assert_eq!(
        cells.get(2).copied(),
        Some(format!("nt-node1 {}/c", ns.name).as_str()),
        "{row}"
    );
    assert!(
        cells
            .get(3)
            .is_some_and(|c| c.starts_with("ip filter FORWARD #")),
        "{row}"
    );
}

/// No node agent process holds a BPF program (within 10 s).
fn assert_no_agent_progs(what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = agent_prog_ids();
        if ids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: agents still hold BPF programs {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn ctrl_c_and_sigkill_of_the_plugin_leave_no_agent_pod_and_no_bpf_program() {
    // Alone among the agent tests: no other test's agent may run meanwhile. The programs
    // are the ones the agents hold (their fds), so host nettrace elsewhere does not count;
    // both nodes share this kernel, so one look covers both.
    let _host = exclusive_host();
    let mut ns = TestNs::new("stop");
    ns.pods(&[("a", "nt-node1"), ("b", "nt-node2")]);
    assert_no_agent_progs("before the test");

    // Ctrl-C: the plugin deletes both agent pods; their programs are gone.
    let nt = ns.trace(&["pod/a", "pod/b", "-p", "icmp"]);
    let pods = ns.agent_pods();
    assert_eq!(pods.len(), 2, "one agent pod per node: {pods:?}");
    let mut nodes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or(""))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["nt-node1", "nt-node2"]);
    for p in &pods {
        let spec = &p["spec"];
        assert_eq!(spec["hostPID"], true);
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
        assert!(spec["activeDeadlineSeconds"].as_u64().is_some(), "{p}");
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        assert!(
            p["metadata"]["labels"]["nettrace.io/session"].is_string(),
            "{p}"
        );
    }
    let ids = agent_prog_ids();
    assert!(!ids.is_empty(), "the agents hold no BPF program");
    let ours = nettrace_progs();
    for id in &ids {
        assert!(
            ours.iter().any(|p| p.ends_with(&format!("(id {id})"))),
            "agent program {id} is not one of nettrace's nt_* programs: {ours:?}"
        );
    }
    let fin = nt.stop_with(Signal::SIGINT);
    assert_exit_ok(&fin);
    ns.assert_no_agents(Duration::from_secs(10), "after Ctrl-C");
    assert_progs_gone(&ids, Duration::from_secs(10));
    assert_no_agent_progs("after Ctrl-C");

    // SIGKILL: nobody deletes the pods, but each agent notices its plugin is gone, detaches
    // and exits; the pods end Succeeded, no container runs.
    let nt = ns.trace(&["pod/a", "pod/b", "-p", "icmp", "--agent-idle-timeout", "5"]);
    let ids = agent_prog_ids();
    assert!(!ids.is_empty(), "the agents hold no BPF program");
    let killed = Instant::now();
    let fin = nt.stop_with(Signal::SIGKILL);
    assert_eq!(fin.status.code(), None, "killed by a signal");
    let deadline = killed + Duration::from_secs(60);
    loop {
        let pods = ns.agent_pods();
        let running: Vec<String> = pods
            .iter()
            .filter(|p| p["status"]["phase"] != "Succeeded")
            .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
            .collect();
        assert_eq!(pods.len(), 2, "{pods:?}");
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents still not finished 60 s after the plugin died: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "agents exited {:?} after the plugin was killed",
        killed.elapsed()
    );
    assert_progs_gone(&ids, Duration::from_secs(10));
    assert_no_agent_progs("after SIGKILL");

    // The next run deletes the finished pods the killed one left, and its own.
    let left: Vec<String> = ns
        .agent_pods()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let fin = ns
        .start_as(
            &ns.cluster.admin,
            &["pod/a", "-p", "icmp", "--timeout", "2s"],
        )
        .wait_exit(Duration::from_secs(90));
    assert_exit_ok(&fin);
    for name in &left {
        let want = format!(
            "deleting agent pod {}/{name} (finished, left by an earlier run)",
            ns.name
        );
        assert!(
            fin.stderr_lines.contains(&want),
            "{want}\n{}",
            fin.describe()
        );
    }
    ns.assert_no_agents(Duration::from_secs(10), "after the next run");
    assert_no_agent_progs("after the next run");
}

#[test]
fn an_agent_image_that_does_not_exist_fails_fast_with_the_kubelets_errimagepull_in_one_line() {
    let _host = shared_host();
    let mut ns = TestNs::new("image");
    ns.pods(&[("a", "nt-node1")]);
    // A registry on the node's own loopback, where nothing listens: the pull fails at once
    // and nothing leaves the machine.
    let image = "localhost/nt-kube/no-such-agent:0";
    let started = Instant::now();
    let fin = ns
        .start_as(&ns.cluster.admin, &["--image", image, "pod/a"])
        .wait_exit(Duration::from_secs(90));
    assert_eq!(fin.status.code(), Some(1), "{}", fin.describe());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "fails fast: {:?}",
        started.elapsed()
    );
    let errs: Vec<&str> = fin
        .nonempty_stderr()
        .into_iter()
        .filter(|l| {
            !l.starts_with("waiting for agent pod ") && !l.starts_with("deleting agent pod ")
        })
        .collect();
    assert_eq!(errs.len(), 1, "one line\n{}", fin.describe());
    let want = format!("error: agent pod {}/nettrace-", ns.name);
    assert!(errs[0].starts_with(&want), "{}", errs[0]);
    assert!(
        errs[0].contains(&format!(
            "-nt-node1 on node nt-node1 could not start: ErrImagePull: failed to pull and unpack image \"{image}\": "
        )),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].ends_with("; pass --image with an image every node can pull"),
        "{}",
        errs[0]
    );
    assert!(fin.stdout_lines.is_empty(), "{}", fin.describe());
    ns.assert_no_agents(Duration::from_secs(10), "after a failed start");
}

#[test]
fn a_pod_security_level_that_forbids_privileged_pods_is_one_line_saying_what_to_change() {
    let _host = shared_host();
    let mut ns = TestNs::new("psa");
    ns.pods(&[("a", "nt-node1")]);
    // The agent namespace enforces "baseline" (the test pods are already running).
    ns.cluster.kubectl_ok(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=baseline",
        "--overwrite",
    ]);
    let fin = ns
        .start_as(&ns.cluster.admin, &["pod/a", "-p", "icmp"])
        .wait_exit(Duration::from_secs(60));
    assert_eq!(fin.status.code(), Some(1), "{}", fin.describe());
    assert_eq!(
        fin.nonempty_stderr(),
        [format!(
            "error: namespace \"{}\" has Pod Security level \"baseline\", which forbids the privileged agent pod (host namespaces (hostNetwork=true, hostPID=true), privileged (container \"agent\" must not set securityContext.privileged=true)); label it pod-security.kubernetes.io/enforce=privileged (as manifests/namespace.yaml does) or pass --agent-namespace with a namespace that is",
            ns.name
        )],
        "{}",
        fin.describe()
    );
    ns.assert_no_agents(Duration::from_secs(1), "after the refusal");
}

#[test]
fn a_user_without_pods_attach_fails_in_one_line_naming_the_permission() {
    let _host = shared_host();
    let mut ns = TestNs::new("noattach");
    ns.pods(&[("a", "nt-node1")]);
    let who = ns.cluster.noattach.clone();
    let fin = ns
        .start_as(&who, &["pod/a", "-p", "icmp"])
        .wait_exit(Duration::from_secs(90));
    assert_eq!(fin.status.code(), Some(1), "{}", fin.describe());
    let errs: Vec<&str> = fin
        .nonempty_stderr()
        .into_iter()
        .filter(|l| {
            !l.starts_with("waiting for agent pod ") && !l.starts_with("deleting agent pod ")
        })
        .collect();
    let agents = agent_pods_named(&fin.stderr_lines, AGENT_NS);
    assert_eq!(agents.len(), 1, "{}", fin.describe());
    assert_eq!(
        errs,
        [format!(
            "error: not allowed to attach to agent pod {AGENT_NS}/{} (403 Forbidden): the pods/attach permission (verbs create and get) is missing in namespace \"{AGENT_NS}\"; see manifests/rbac.yaml",
            agents[0]
        )],
        "{}",
        fin.describe()
    );
    // It could create the pod, so it deleted it.
    ns.cluster
        .assert_pods_gone(AGENT_NS, &agents, Duration::from_secs(10));
}

#[test]
fn bad_input_is_one_clear_line() {
    let _host = shared_host();
    let mut ns = TestNs::new("badinput");
    ns.pods(&[("a", "nt-node1")]);
    ns.pod_spec(
        "done",
        "nt-node1",
        &["true"],
        "",
        "  restartPolicy: Never\n",
    );
    let start = Instant::now();
    while ns.cluster.kubectl_ok(&[
        "get",
        "pod",
        "done",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.status.phase}",
    ]) != "Succeeded"
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pod done never Succeeded"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let n = &ns.name;
    for (args, want) in [
        (
            vec!["pod/nope", "-p", "icmp"],
            format!("error: pod \"nope\" not found in namespace \"{n}\""),
        ),
        (
            vec!["pod/done"],
            format!("error: pod \"{n}/done\" is not running (phase: Succeeded)"),
        ),
        (
            vec!["pod/a", "-c", "web"],
            format!("error: container \"web\" not found in pod \"{n}/a\"; its containers: main"),
        ),
        (
            vec!["pod/a", "-p", "nope"],
            "error: --proto: unknown protocol 'nope'".to_string(),
        ),
        (
            vec!["pod/a", "--stack", "--stack-tracer", "kfree_skb"],
            format!("error: {COSTLY_STACK}"),
        ),
    ] {
        let fin = ns
            .start_as(&ns.cluster.admin, &args)
            .wait_exit(Duration::from_secs(60));
        assert_eq!(fin.status.code(), Some(1), "{args:?}\n{}", fin.describe());
        let errs = fin.nonempty_stderr();
        assert_eq!(errs.len(), 1, "{args:?}: one line\n{}", fin.describe());
        assert!(errs[0].starts_with(&want), "{args:?}: {}", errs[0]);
        assert!(fin.stdout_lines.is_empty(), "{}", fin.describe());
    }
    ns.assert_no_agents(Duration::from_secs(1), "after bad input");
}

#[test]
fn json_lines_carry_pod_and_node() {
    let _host = shared_host();
    let mut ns = TestNs::new("json");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let (a_ip, c_ip) = (ns.ip("a"), ns.ip("c"));
    let nt = ns.trace(&["pod/a", "-p", "icmp", "-o", "json", "--count", "3"]);
    ns.exec_ok("a", &["ping", "-c", "1", "-W", "2", &c_ip]);
    let fin = nt.wait_exit(Duration::from_secs(30));
    assert_exit_ok(&fin);
    let objs: Vec<Value> = fin
        .stdout_lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&Value> = objs.iter().filter(|o| o["type"] == "event").collect();
    assert_eq!(events.len(), 3, "--count 3\n{}", fin.describe());
    for ev in &events {
        assert_eq!(ev["node"], "nt-node1", "{ev}");
        assert_eq!(ev["pkt"]["saddr"], a_ip, "{ev}");
        assert_eq!(ev["pkt"]["daddr"], c_ip, "{ev}");
        assert_eq!(ev["pod"]["namespace"], ns.name, "{ev}");
        assert_eq!(ev["pod"]["name"], "a", "{ev}");
        assert_eq!(ev["pod"]["container"], CONTAINER, "{ev}");
    }
    ns.assert_no_agents(Duration::from_secs(10), "after --count");
}

#[test]
fn a_whole_node_is_traced_without_pod_scoping() {
    let _host = shared_host();
    let mut ns = TestNs::new("node");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let (a_ip, c_ip) = (ns.ip("a"), ns.ip("c"));
    let nt = ns.trace(&[
        "node/nt-node1",
        "-p",
        "icmp",
        "--addr",
        &c_ip,
        "--count",
        "4",
    ]);
    ns.exec_ok("a", &["ping", "-c", "1", "-W", "2", &c_ip]);
    let fin = nt.wait_exit(Duration::from_secs(30));
    assert_exit_ok(&fin);
    assert_eq!(fin.stdout_lines.len(), 4, "--count 4\n{}", fin.describe());
    // Not scoped to a pod, yet the pods of the node are still named.
    let prefix = format!(", pod: {}/", ns.name);
    assert!(
        fin.stdout_lines
            .iter()
            .all(|l| l.contains(&format!("ICMP: {a_ip} -> {c_ip}")) && l.contains(&prefix)),
        "{}",
        fin.describe()
    );
    ns.assert_no_agents(Duration::from_secs(10), "after --count");
}

#[test]
fn an_agent_pod_evicted_mid_trace_ends_the_trace_with_an_error_naming_the_node() {
    let _host = shared_host();
    let mut ns = TestNs::new("evict");
    ns.pods(&[("a", "nt-node1")]);
    let nt = ns.trace(&["pod/a", "-p", "icmp"]);
    let pods = ns.agent_pods();
    assert_eq!(pods.len(), 1, "{pods:?}");
    let name = pods[0]["metadata"]["name"].as_str().expect("a name");
    // The Eviction API, as `kubectl drain` uses it.
    let eviction = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": ns.name},
        "deleteOptions": {"gracePeriodSeconds": 0}
    })
    .to_string();
    let path = format!("/api/v1/namespaces/{}/pods/{name}/eviction", ns.name);
    ns.cluster
        .kubectl_in_ok(&["create", "--raw", &path, "-f", "-"], Some(&eviction));
    let fin = nt.wait_exit(Duration::from_secs(60));
    assert_eq!(fin.status.code(), Some(1), "{}", fin.describe());
    let errs = fin.nonempty_stderr();
    assert!(
        errs.iter()
            .any(|l| l.starts_with("error: ") && l.contains("nt-node1")),
        "an error line names the node\n{}",
        fin.describe()
    );
    ns.assert_no_agents(Duration::from_secs(30), "after the eviction");
}

#[test]
fn a_host_network_pod_is_resolved_but_cannot_be_scoped() {
    let _host = shared_host();
    let mut ns = TestNs::new("hostnet");
    ns.pods(&[("c", "nt-node1")]);
    ns.pod_spec(
        "h",
        "nt-node1",
        &["sleep", "3600"],
        "",
        "  hostNetwork: true\n",
    );
    ns.wait_ready(&["h"]);
    let c_ip = ns.ip("c");
    let nt = ns.trace(&["pod/h", "-p", "icmp", "--addr", &c_ip, "-v"]);
    let stderr = nt.stderr_lines();
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with(&format!("warning: pod {}/h uses the host network", ns.name))),
        "{stderr:?}"
    );
    // h (the node's network) pings c: only the address filter narrows the trace.
    ns.exec_ok("h", &["ping", "-c", "1", "-W", "2", &c_ip]);
    let pc = pod_of(&ns, "c");
    let fin = nt.stop_when(Duration::from_secs(20), |lines| {
        lines
            .iter()
            .any(|l| l.contains("ping reply") && l.ends_with(&pc))
    });
    assert_exit_ok(&fin);
    let stderr = fin.stderr_lines.join("\n");
    assert!(
        stderr.contains("hostNetwork"),
        "the resolution says so:\n{stderr}"
    );
    // The node reaches c from its bridge address.
    assert!(
        fin.stdout_lines
            .iter()
            .any(|l| l.contains(&format!("ICMP: 10.244.1.1 -> {c_ip}, ping request"))),
        "{}",
        fin.describe()
    );
}

#[test]
fn kubectl_1_33_and_1_20_run_the_plugin_with_kubeconfig_context_and_namespace() {
    let _host = shared_host();
    let mut ns = TestNs::new("kubectl");
    ns.pods(&[("a", "nt-node1"), ("c", "nt-node1")]);
    let (a_ip, c_ip) = (ns.ip("a"), ns.ip("c"));
    let (a_veth, c_veth) = (ns.host_veth("a", "nt-node1"), ns.host_veth("c", "nt-node1"));
    let cluster = ns.cluster;
    // A kubeconfig with two contexts for the admin: the current one, "ops", defaults to
    // kube-system; "e2e" to the test's namespace.
    let dir = std::env::temp_dir().join(format!("nt-e2e-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("a directory");
    let kubeconfig = dir.join("two-contexts");
    std::fs::copy(&cluster.admin, &kubeconfig).expect("copy the admin kubeconfig");
    let kc = |args: &[&str]| {
        let out = cluster.kubectl_as(&kubeconfig, args, None);
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    kc(&[
        "config",
        "set-context",
        "ops",
        "--cluster=nt-kube",
        "--user=admin",
        "--namespace=kube-system",
    ]);
    kc(&[
        "config",
        "set-context",
        "e2e",
        "--cluster=nt-kube",
        "--user=admin",
        &format!("--namespace={}", ns.name),
    ]);
    kc(&["config", "use-context", "ops"]);

    let plugin = nettrace_tests::plugin_bin();
    let plugin_dir = plugin.parent().expect("a directory").to_path_buf();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |kubectl: &std::path::Path, args: &[&str]| {
        let mut cmd = std::process::Command::new(kubectl);
        cmd.arg("nettrace")
            .args(["--agent-namespace", &ns.name])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", &path);
        cmd
    };

    // Debian's kubectl 1.20 and kubectl 1.33 (scripts/fetch-kubectl.sh) against the 1.34
    // API server, each running the plugin from PATH.
    for version in ["1.33", "1.20"] {
        let kubectl =
            nettrace_tests::workspace_dir().join(format!("target/kubectl/{version}/kubectl"));
        assert!(
            kubectl.is_file(),
            "{} is missing: run scripts/fetch-kubectl.sh",
            kubectl.display()
        );
        // The current context's namespace is kube-system: no pod "a" there.
        let out = nettrace_tests::cluster::output_within(
            run(&kubectl, &["pod/a", "-p", "icmp"]),
            None,
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(1), "kubectl {version}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "error: pod \"a\" not found in namespace \"kube-system\""
        );

        // --context picks the other context and its namespace; -n overrides the current one.
        let ns_name = ns.name.clone();
        for args in [
            vec!["--context", "e2e", "pod/a"],
            vec!["-n", &ns_name, "pod/a"],
        ] {
            let mut pinger = ns.exec_spawn(
                "a",
                &[
                    "sh",
                    "-c",
                    &format!("while true; do ping -c 1 -W 1 {c_ip}; sleep 0.25; done"),
                ],
            );
            let mut all = args.clone();
            all.extend(["-p", "icmp", "--count", "2"]);
            let out = nettrace_tests::cluster::output_within(
                run(&kubectl, &all),
                None,
                Duration::from_secs(90),
            );
            let _ = pinger.kill();
            let _ = pinger.wait();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "kubectl {version} {args:?}: {}\n{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = stdout.lines().collect();
            assert_eq!(lines.len(), 2, "--count 2: {stdout}");
            // The trace starts while the pings run, so its first two hits may be on any hop:
            // each pod's eth0 or its host-side veth.
            let suffixes = [
                pod_of(&ns, "a"),
                format!("{} via {a_veth}", pod_of(&ns, "a")),
                pod_of(&ns, "c"),
                format!("{} via {c_veth}", pod_of(&ns, "c")),
            ];
            assert!(
                lines
                    .iter()
                    .all(|l| (l.contains(&format!("ICMP: {a_ip} -> {c_ip}"))
                        || l.contains(&format!("ICMP: {c_ip} -> {a_ip}")))
                        && suffixes.iter().any(|s| l.ends_with(s.as_str()))),
                "{stdout}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    ns.assert_no_agents(Duration::from_secs(10), "after kubectl nettrace");
}
