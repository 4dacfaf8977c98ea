//! `kubectl nettrace`: trace the packets of Kubernetes pods with nettrace.
//!
//! For each node involved the plugin creates a privileged agent pod
//! (`nettrace agent`, see `manifests/agent-pod.yaml`), attaches to it, sends
//! the trace spec (protocol v1, `nettrace_common::protocol`), prints what the
//! agents send, and deletes the pods when tracing stops. If the plugin is
//! killed, each agent stops when its stdin closes or when no keep-alive
//! arrives for `--agent-idle-timeout` (60 s), and the pod's
//! `activeDeadlineSeconds` (`--timeout` + 60 s) bounds the rest.
//!
//! Stdout and stderr are written by threads behind bounded queues
//! ([`console`]): a reader that stops reading never stops the session, so
//! the agents' output is still read and their keep-alives still sent; the
//! events that do not fit are dropped, counted and reported on stderr.
//!
//! # Output
//!
//! Text (default): each event exactly as host `nettrace` prints it (default,
//! `--detail`, `--timeline` blocks, `return value:` and `Call Stack:` lines),
//! with `, pod: NAMESPACE/POD/CONTAINER` appended to events in a pod's network
//! namespace, `, pod: NAMESPACE/POD/CONTAINER via HOST_IFNAME` to events on a
//! pod's host-side veth, and `, node: NODE` when several nodes are traced.
//!
//! JSON (`-o json`), one object per line:
//!
//! - **event**: the object host `nettrace -o json` prints (see the README),
//!   byte for byte, with two keys added at the end: `"pod"`:
//!   `{"namespace","name","container","host_ifname"?}` when the event
//!   belongs to a traced (or peer) pod, and `"node"`: the node's name.
//!   ```json
//!   {"type":"event","time":"5226.642937","ts_ns":5226642937795,"tracer":"net_dev_queue",...,"summary":"ICMP: 10.244.1.7 -> 10.244.2.9, ping request   , seq: 1","pod":{"namespace":"shop","name":"client","container":"app"},"node":"worker-1"}
//!   ```
//! - **timeline** (`--timeline`): `{"type":"timeline","node":"worker-1","skb":"ffff888139b46500","events":[<event objects, with "pod" when annotated>]}`;
//!   with several nodes, one object per packet across them ([`join`]):
//!   `"nodes"` (in order of appearance), each event with its `"node"`, and
//!   `"lost_between":{"from","to","last_seen"}` for a packet lost between two nodes.
//! - **lost**: `{"type":"lost","node":"worker-1","events":0,"skb_map_full":0,"stack_failed":0,"matched":8,"rate_limited":0}`
//!   (one node's totals since its start, when they grow and at its end).
//!
//! Times stay each node's monotonic clock, as host `nettrace` prints them;
//! with several nodes, events are printed in the order of their Unix time
//! (each node's clock converted with the agent's `hello.clock`) through a
//! 500 ms reorder buffer, and timeline blocks are held 3 s to be joined.
//!
//! An address of `-s`, `-d` or `--addr` that is a pod's, or a Service's
//! ClusterIP, adds the nodes of the pods behind it ([`address`]).

mod address;
mod agent_pod;
mod cli;
mod console;
mod join;
mod launch;
mod merge;
mod output;
mod session;
mod stream;
mod target;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use nettrace_common::filter::Filter;
use nettrace_common::format::TextOptions;
use nettrace_common::protocol::SpecOptions;
use tokio::sync::{mpsc, watch};

use crate::address::Behind;
use crate::agent_pod::AgentPod;
use crate::cli::Cli;
use crate::console::{say, Pipe};
use crate::session::{End, Session};
use crate::target::{NodePlan, ResolvedPod, TargetArg};
use std::collections::HashMap;
use std::net::IpAddr;

fn main() -> ExitCode {
    let code = plugin_main();
    // What is left for stderr (bounded: the process is ending).
    console::close_stderr(
        if console::INTERRUPTED.load(std::sync::atomic::Ordering::Acquire) {
            console::STOP_BUDGET
        } else {
            std::time::Duration::from_secs(3600)
        },
    );
    code
}

fn plugin_main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(cli::one_line_error(&e)),
    };
    let checked = cli
        .spec_options()
        .and_then(|o| Ok((o, cli.packet_filter()?, cli.text_options()?)));
    let (options, filter, text) = match checked {
        Ok(o) => o,
        Err(e) => return fail(e.to_string()),
    };
    let targets = match cli
        .targets
        .iter()
        .map(|t| target::parse_target(t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(&cli, options, filter, text, targets)) {
        Ok(End::Ok) => ExitCode::SUCCESS,
        Ok(End::Failed) => ExitCode::FAILURE,
        Err(e) => fail(format!("{e:#}")),
    }
}

fn fail(msg: String) -> ExitCode {
    say!("error: {msg}");
    ExitCode::FAILURE
}

/// A kube client from `--kubeconfig` (else `KUBECONFIG`, else
/// `~/.kube/config`) and `--context`, with the namespace to use.
async fn client(cli: &Cli) -> Result<(Client, String)> {
    let kubeconfig = match &cli.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?,
        None => Kubeconfig::read().context(
            "cannot read a kubeconfig ($KUBECONFIG or ~/.kube/config); pass --kubeconfig FILE",
        )?,
    };
    if let Some(ctx) = &cli.context {
        if !kubeconfig.contexts.iter().any(|c| &c.name == ctx) {
            let known: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            anyhow::bail!(
                "context \"{ctx}\" is not in the kubeconfig; its contexts: {}",
                known.join(", ")
            );
        }
    }
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("cannot use the kubeconfig")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("cannot build a Kubernetes client")?;
    Ok((client, namespace))
}

/// Watches for SIGINT and SIGTERM: the first one stops tracing (and the
/// agent pods are deleted); a second one exits at once, saying how to delete
/// what may be left.
fn interrupt_watch(agent_namespace: String, session: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        next_signal(&mut term).await;
        console::INTERRUPTED.store(true, std::sync::atomic::Ordering::Release);
        let _ = tx.send(true);
        next_signal(&mut term).await;
        say!(
            "interrupted again: exiting without cleaning up; delete what is left with: kubectl delete pods -n {agent_namespace} -l {}={session}",
            agent_pod::SESSION_LABEL
        );
        console::close_stderr(console::STOP_BUDGET);
        std::process::exit(130);
    });
    rx
}

/// The next SIGINT or SIGTERM.
async fn next_signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn interrupted(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn manifests(cli: &Cli, session: &str, plans: &[(String, NodePlan)]) -> Vec<Pod> {
    plans
        .iter()
        .map(|(node, plan)| {
            AgentPod {
                session,
                node,
                namespace: &cli.agent_namespace,
                image: &cli.image,
                timeout: cli.timeout,
                targets: &plan.labels,
            }
            .manifest()
        })
        .collect()
}

fn print_manifests(pods: &[Pod]) -> Result<End> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for p in pods {
        let text = serde_json::to_string_pretty(p).context("cannot print the manifest")?;
        match writeln!(out, "{text}") {
            Ok(()) => {}
            // the reader is gone (`| head`): nothing more to say
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    Ok(End::Ok)
}

async fn run(
    cli: &Cli,
    mut options: SpecOptions,
    filter: Filter,
    text: TextOptions,
    targets: Vec<TargetArg>,
) -> Result<End> {
    let session = agent_pod::session_id();
    let mut node_names: Vec<String> = targets
        .iter()
        .filter_map(|t| match t {
            TargetArg::Node(n) => Some(n.clone()),
            TargetArg::Pod(_) => None,
        })
        .collect();
    let pod_names: Vec<&String> = targets
        .iter()
        .filter_map(|t| match t {
            TargetArg::Pod(p) => Some(p),
            TargetArg::Node(_) => None,
        })
        .collect();
    if cli.print_manifest && pod_names.is_empty() {
        // nothing to resolve: no cluster needed
        let plans: Vec<(String, NodePlan)> =
            target::plan_nodes(&[], &node_names).into_iter().collect();
        return print_manifests(&manifests(cli, &session, &plans));
    }
    let interrupt = interrupt_watch(cli.agent_namespace.clone(), session.clone());
    let (client, namespace) = client(cli).await?;
    let mut pods = Vec::new();
    for name in pod_names {
        let p = target::fetch_pod(&client, &namespace, name, cli.container.as_deref()).await?;
        if !p.skipped.is_empty() {
            say!(
                "warning: pod {}/{}: container(s) {} have no ID yet and are not traced",
                p.namespace,
                p.name,
                p.skipped.join(", ")
            );
        }
        if p.host_network {
            say!(
                "warning: pod {}/{} uses the host network: events cannot be scoped to it, filter by address or port",
                p.namespace, p.name
            );
        }
        if cli.verbose {
            say!(
                "pod {}/{} on node {}: IPs {}, containers {}",
                p.namespace,
                p.name,
                p.node,
                p.ips.join(", "),
                p.targets
                    .iter()
                    .map(|t| t.container.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        pods.push(p);
    }
    add_address_targets(cli, &client, &mut pods, &mut node_names).await?;
    if !cli.print_manifest {
        for n in &node_names {
            target::check_node(&client, n).await?;
        }
    }
    let plans: Vec<(String, NodePlan)> =
        target::plan_nodes(&pods, &node_names).into_iter().collect();
    let pod_nodes: std::collections::BTreeSet<&str> =
        pods.iter().map(|p| p.node.as_str()).collect();
    if pod_nodes.len() > 1 {
        // A packet between these pods crosses nodes: what it goes through
        // between its pod and the wire (bridge, overlay, uplink) is in
        // each node's own namespace.
        options.node_netns = true;
        if cli.verbose {
            say!("the pods are on several nodes: each node's own network namespace is traced too (bridges, overlay devices, uplink)");
        }
    }
    let homes = homes(&pods, &plans);
    let manifests = manifests(cli, &session, &plans);
    if cli.print_manifest {
        return print_manifests(&manifests);
    }

    let api: Api<Pod> = Api::namespaced(client.clone(), &cli.agent_namespace);
    launch::delete_finished(&api).await;
    let mut created: Vec<String> = Vec::new();
    let stdout = Pipe::stdout();
    // --pcap FILE: created before any agent is; "-" is stdout.
    let pcap = match cli.pcap.as_deref() {
        None => None,
        Some(p) if p == std::path::Path::new("-") => Some(stdout.clone()),
        Some(p) => {
            let file = std::fs::File::create(p)
                .with_context(|| format!("--pcap: cannot create {}", p.display()))?;
            Some(Pipe::start("pcap", console::STDOUT_QUEUE, file))
        }
    };
    let run = Run {
        cli,
        client: &client,
        api: &api,
        options: &options,
        plans: &plans,
        manifests: &manifests,
        stdout: &stdout,
        homes,
        filter,
        text,
        pcap: pcap.clone(),
    };
    let result = trace(&run, &mut created, interrupt).await;
    // Whatever happened above, the agent pods go.
    launch::delete_all(&api, &created).await;
    // Then the output still queued reaches its reader (as slowly as it
    // reads; after a signal, within a second or it is dropped).
    if let Some(p) = pcap.filter(|p| !std::sync::Arc::ptr_eq(p, &stdout)) {
        p.finish().await;
        if let Some(e) = p.error() {
            say!("error: writing the pcap file: {e}");
        }
        let dropped = p.dropped();
        if dropped > 0 {
            say!("kubectl-nettrace: {dropped} packet(s) not written to the pcap file (it was not written fast enough)");
        }
    }
    stdout.finish().await;
    let dropped = stdout.dropped();
    if dropped > 0 {
        say!("{}", session::dropped_message(dropped));
    }
    result
}

/// What a trace run works from, once the targets are resolved.
struct Run<'a> {
    cli: &'a Cli,
    client: &'a Client,
    /// Pods of the agent namespace.
    api: &'a Api<Pod>,
    options: &'a SpecOptions,
    /// Per node, what to trace there.
    plans: &'a [(String, NodePlan)],
    /// The agent pods, in the order of `plans`.
    manifests: &'a [Pod],
    /// Stdout.
    stdout: &'a std::sync::Arc<Pipe>,
    /// The node (index in `plans`) of each traced pod's addresses.
    homes: HashMap<IpAddr, usize>,
    /// The agents' packet filter.
    filter: Filter,
    /// The text layout.
    text: TextOptions,
    /// `--pcap`: where the pcap-ng stream goes (stdout's pipe for "-").
    pcap: Option<std::sync::Arc<Pipe>>,
}

/// The node (index in `plans`) of each address of the traced pods.
fn homes(pods: &[ResolvedPod], plans: &[(String, NodePlan)]) -> HashMap<IpAddr, usize> {
    let mut homes = HashMap::new();
    for p in pods {
        let Some(node) = plans.iter().position(|(n, _)| *n == p.node) else {
            continue;
        };
        for ip in p.ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            homes.insert(ip, node);
        }
    }
    homes
}

/// The pods (or hostNetwork nodes) behind the addresses of `-s`, `-d` and
/// `--addr` are traced too: a packet to them is followed onto their nodes.
/// Says so on stderr, one line per address.
async fn add_address_targets(
    cli: &Cli,
    client: &Client,
    pods: &mut Vec<ResolvedPod>,
    nodes: &mut Vec<String>,
) -> Result<()> {
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (option, ip) in address::option_addresses(&cli.trace) {
        let behind = address::behind(client, ip).await?;
        if let Some(line) = behind.describe(option, ip) {
            say!("{line}");
        }
        match behind {
            Behind::Pod { namespace, name } => wanted.push((namespace, name)),
            Behind::Service { pods, .. } => wanted.extend(pods),
            Behind::HostNetworkPod { node, .. } => {
                if !nodes.contains(&node) {
                    nodes.push(node);
                }
            }
            Behind::Nothing => {}
        }
    }
    for (namespace, name) in wanted {
        if pods
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
        {
            continue;
        }
        match target::fetch_pod(client, &namespace, &name, None).await {
            Ok(p) => pods.push(p),
            Err(e) => say!("warning: pod {namespace}/{name} is not traced: {e:#}"),
        }
    }
    Ok(())
}

async fn trace(
    run: &Run<'_>,
    created: &mut Vec<String>,
    interrupt: watch::Receiver<bool>,
) -> Result<End> {
    let (cli, plans) = (run.cli, run.plans);
    let (tx, rx) = mpsc::channel(4096);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Until the agents are attached, a signal just ends it (the pods are deleted).
    let setup = start_agents(run, created, stop_rx, tx);
    let tasks = tokio::select! {
        r = setup => r?,
        _ = interrupted(interrupt.clone()) => {
            say!("interrupted");
            return Ok(End::Ok);
        }
    };
    let nodes: Vec<String> = plans.iter().map(|(n, _)| n.clone()).collect();
    let output = output::Output::new(
        cli.output,
        run.text,
        nodes.clone(),
        cli.trace.count,
        run.stdout.clone(),
    )
    .with_diag(cli.trace.diag);
    let output = match &run.pcap {
        Some(pipe) => {
            // the snaplen the agents copy (checked with the options)
            let snaplen = cli
                .trace
                .snaplen
                .unwrap_or(nettrace_common::options::DEFAULT_SNAPLEN);
            output.with_pcap(
                pipe.clone(),
                snaplen,
                !std::sync::Arc::ptr_eq(pipe, run.stdout),
            )
        }
        None => output,
    };
    let end = Session {
        nodes,
        output,
        rx,
        stop_tx,
        interrupted: interrupt,
        timeout: cli.timeout,
        verbose: cli.verbose,
        homes: run.homes.clone(),
        filter: run.filter.clone(),
    }
    .run()
    .await;
    for t in tasks {
        t.abort();
    }
    Ok(end)
}

/// Creates the agent pods (recording their names in `created` for the
/// caller to delete), waits until they run, and attaches to each.
async fn start_agents(
    run: &Run<'_>,
    created: &mut Vec<String>,
    stop_rx: watch::Receiver<bool>,
    tx: mpsc::Sender<stream::NodeMsg>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let (cli, client, api, plans) = (run.cli, run.client, run.api, run.plans);
    let (options, manifests) = (run.options, run.manifests);
    let events: Api<Event> = Api::namespaced(client.clone(), &cli.agent_namespace);
    let mut specs = Vec::new();
    for (node, plan) in plans {
        let peers = target::fetch_peers(client, node).await?;
        specs.push(stream::build_spec(
            plan,
            peers,
            options,
            cli.timeout,
            cli.agent_idle_timeout,
        ));
    }
    for (pod, (node, _)) in manifests.iter().zip(plans) {
        launch::create(api, pod, &cli.agent_namespace).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        if cli.verbose {
            say!(
                "created agent pod {}/{name} on node {node}",
                cli.agent_namespace
            );
        }
        created.push(name);
    }
    let waits = created
        .iter()
        .zip(plans)
        .map(|(name, (node, _))| launch::wait_running(api, &events, name, node, cli.start_timeout));
    for r in futures::future::join_all(waits).await {
        r?;
    }
    let mut tasks = Vec::new();
    let ping_every = stream::ping_every(cli.agent_idle_timeout);
    for (i, (name, spec)) in created.iter().zip(&specs).enumerate() {
        tasks.extend(
            stream::attach(api, name, i, spec, ping_every, stop_rx.clone(), tx.clone()).await?,
        );
    }
    Ok(tasks)
}
