//! The command line: host `nettrace`'s filter and view options, plus the
//! Kubernetes ones. Everything is checked here, before the cluster is touched.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use nettrace_common::filter::{parse_addr, parse_port, parse_proto, Filter};
use nettrace_common::protocol::TraceOptions;
use nettrace_common::TracerTree;
use thiserror::Error;

/// The tracer tree the agents ship (to check `-t` names up front).
const TRACER_TREE: &str = include_str!("../../../tracer.json");

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    // The lines host nettrace prints, with the pod (and node) appended.
    Text,
    // JSON lines: host nettrace's objects with "pod" and "node" keys added.
    Json,
}

/// Backends for kernel-function tracers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    // fentry where possible, else kprobes.
    Auto,
    // fentry/fexit only.
    Fentry,
    // kprobes only.
    Kprobe,
    // Tracepoints only (kernel-function tracers left out).
    Tracepoint,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

const AFTER_HELP: &str = "\
Targets: pod/NAME or NAME (a pod in -n NAMESPACE), node/NAME (the whole node, no pod scoping).
Differences from host nettrace: -c is the container (kubectl's convention), so the event
count is --count N only; --netns, --ifname, --pid, --tracer-file and --ringbuf-kb are not
available (the agent scopes to the pods' network namespaces).

For each node involved, an agent pod (privileged, host PID and network) is created in
--agent-namespace, attached to, and deleted when tracing stops (Ctrl-C, --count, --timeout).
If kubectl-nettrace is killed, the agent stops when its stdin closes or after
--agent-idle-timeout (60 s) without a keep-alive, and the pod's activeDeadlineSeconds
(--timeout + 60 s) bounds the rest. Keep-alives do not depend on stdout: when it is not read
fast enough (`| less`, left alone), up to 4 MiB of output wait for the reader, events beyond
that are dropped, counted and reported on stderr, and the trace goes on.

Examples:
  kubectl nettrace pod/client -p icmp --addr 10.244.1.7
  kubectl nettrace client server -n shop -p tcp --port 8080 --timeline --detail
  kubectl nettrace node/worker-1 -t kfree_skb --stack -o json
  kubectl nettrace pod/client --print-manifest | kubectl apply --dry-run=server -f -";

/// Trace the packets of Kubernetes pods through the Linux network stack of their nodes.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-nettrace",
    bin_name = "kubectl nettrace",
    version,
    about = "Trace the packets of Kubernetes pods through the Linux network stack of their nodes",
    max_term_width = 110,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// What to trace: pod/NAME, NAME (a pod) or node/NAME; several allowed
    #[arg(value_name = "TARGET", required = true)]
    pub targets: Vec<String>,

    /// Namespace of the pods (default: the context's namespace, else "default")
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        help_heading = "Kubernetes"
    )]
    pub namespace: Option<String>,
    /// Trace only this container of the pod(s) (default: all; they share the pod's network namespace)
    #[arg(
        short = 'c',
        long,
        value_name = "CONTAINER",
        help_heading = "Kubernetes"
    )]
    pub container: Option<String>,
    /// Agent image
    #[arg(long, value_name = "IMAGE", default_value = concat!("ghcr.io/nettrace/nettrace:", env!("CARGO_PKG_VERSION")), help_heading = "Kubernetes")]
    pub image: String,
    /// Namespace of the agent pods (create it with: kubectl apply -f manifests/namespace.yaml)
    #[arg(
        long = "agent-namespace",
        value_name = "NS",
        default_value = "nettrace",
        help_heading = "Kubernetes"
    )]
    pub agent_namespace: String,
    /// Stop tracing after this long (e.g. 30s, 5m, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration, help_heading = "Kubernetes")]
    pub timeout: Duration,
    /// Give up when an agent pod is not running after this long
    #[arg(long = "start-timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration, help_heading = "Kubernetes")]
    pub start_timeout: Duration,
    /// Path of the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
    #[arg(long, value_name = "FILE", help_heading = "Kubernetes")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context to use
    #[arg(long, value_name = "NAME", help_heading = "Kubernetes")]
    pub context: Option<String>,
    /// Print the agent pod manifest(s) as JSON and exit without creating anything
    #[arg(long = "print-manifest", help_heading = "Kubernetes")]
    pub print_manifest: bool,
    /// An agent stops after this many seconds without a keep-alive from the plugin (which pings it
    /// four times within it, at most every 15 s): how soon agents go away when the plugin is killed
    #[arg(
        long = "agent-idle-timeout",
        value_name = "SECS",
        default_value_t = nettrace_common::protocol::DEFAULT_IDLE_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=86400),
        help_heading = "Kubernetes"
    )]
    pub agent_idle_timeout: u64,
    /// Follow matching packets out of the pods (across the host side of their veth and beyond)
    #[arg(long = "follow-host", help_heading = "Kubernetes")]
    pub follow_host: bool,

    /// IP source address (IPv4 or IPv6)
    #[arg(
        short = 's',
        long = "saddr",
        value_name = "SADDR",
        help_heading = "Filters"
    )]
    pub saddr: Option<String>,
    /// IP destination address
    #[arg(
        short = 'd',
        long = "daddr",
        value_name = "DADDR",
        help_heading = "Filters"
    )]
    pub daddr: Option<String>,
    /// IP source or destination address
    #[arg(long, value_name = "ADDR", help_heading = "Filters")]
    pub addr: Option<String>,
    /// Protocol: ip, ip6, arp, tcp, udp, icmp, icmp6, sctp
    #[arg(
        short = 'p',
        long = "proto",
        value_name = "PROTO",
        help_heading = "Filters"
    )]
    pub proto: Option<String>,
    /// TCP/UDP destination port
    #[arg(long, value_name = "DPORT", help_heading = "Filters")]
    pub dport: Option<String>,
    /// TCP/UDP source port
    #[arg(long, value_name = "SPORT", help_heading = "Filters")]
    pub sport: Option<String>,
    /// TCP/UDP source or destination port
    #[arg(long, value_name = "PORT", help_heading = "Filters")]
    pub port: Option<String>,
    /// Tracers (groups or kernel functions/tracepoints), comma separated (`nettrace -t ?` on a node lists them)
    #[arg(
        short = 't',
        long = "tracer",
        value_name = "TRACER",
        value_delimiter = ',',
        help_heading = "Filters"
    )]
    pub tracer: Vec<String>,
    /// Keep tracing an skb once it matched, even after NAT rewrites it
    #[arg(long = "skb-mode", help_heading = "Filters")]
    pub skb_mode: bool,
    /// At most this many events per second per node, enforced in the kernel
    #[arg(
        long = "rate-limit",
        value_name = "EVENTS_PER_SEC",
        help_heading = "Filters"
    )]
    pub rate_limit: Option<u32>,
    /// Backend for kernel-function tracers
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        value_name = "BACKEND",
        help_heading = "Filters"
    )]
    pub backend: Backend,

    /// Show more per event: skb address, interface, pid and task name, tracer group
    #[arg(long, help_heading = "Output")]
    pub detail: bool,
    /// Group events per skb and print each group when the skb is freed
    #[arg(long, help_heading = "Output")]
    pub timeline: bool,
    /// Stop after COUNT events (COUNT skbs with --timeline), over all nodes
    #[arg(long, value_name = "COUNT", help_heading = "Output")]
    pub count: Option<u64>,
    /// Print the return value of kernel functions
    #[arg(long, help_heading = "Output")]
    pub ret: bool,
    /// Print the kernel call stack of each event
    #[arg(long, help_heading = "Output")]
    pub stack: bool,
    /// Print the kernel call stack only for these tracers (comma separated)
    #[arg(
        long = "stack-tracer",
        value_name = "STACK_TRACER",
        value_delimiter = ',',
        help_heading = "Output"
    )]
    pub stack_tracer: Vec<String>,
    /// Allow --stack together with the whole "all" tracer
    #[arg(long = "force-stack", help_heading = "Output")]
    pub force_stack: bool,
    /// Output format
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        help_heading = "Output"
    )]
    pub output: OutputFormat,
    /// Say more: agent pods, what each target resolved to, how events are scoped
    #[arg(short = 'v', long, help_heading = "Output")]
    pub verbose: bool,
}

/// A command-line value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionError {
    /// A filter value or combination.
    #[error("{0}")]
    Filter(#[from] nettrace_common::FilterError),
    /// An unknown tracer name.
    #[error("{0}")]
    Tracer(String),
    /// `-t ?` is a host feature.
    #[error("the tracer list is printed by the agent binary: run `nettrace -t ?` on a node (or in the agent image)")]
    TracerList,
    /// `--stack` on every tracer without `--force-stack`.
    #[error("--stack with the whole \"all\" tracer is costly: pick tracers with -t, use --stack-tracer, or add --force-stack")]
    CostlyStack,
    /// `--count 0`.
    #[error("--count must be at least 1")]
    ZeroCount,
    /// A zero `--timeout`.
    #[error("--timeout must be at least one second")]
    ZeroTimeout,
}

impl Cli {
    /// Checks the filter and view options as host nettrace does and turns
    /// them into the spec's options.
    pub fn trace_options(&self) -> Result<TraceOptions, OptionError> {
        let filter = Filter {
            saddr: self.saddr.as_deref().map(parse_addr).transpose()?,
            daddr: self.daddr.as_deref().map(parse_addr).transpose()?,
            addr: self.addr.as_deref().map(parse_addr).transpose()?,
            proto: self.proto.as_deref().map(parse_proto).transpose()?,
            sport: self.sport.as_deref().map(parse_port).transpose()?,
            dport: self.dport.as_deref().map(parse_port).transpose()?,
            port: self.port.as_deref().map(parse_port).transpose()?,
            skb_mode: self.skb_mode,
            ..Filter::default()
        };
        filter.validate()?;
        let tracers: Vec<String> = self.tracer.iter().map(|t| t.trim().to_string()).collect();
        let stack_tracers: Vec<String> = self
            .stack_tracer
            .iter()
            .map(|t| t.trim().to_string())
            .collect();
        if tracers.iter().any(|t| t == "?") {
            return Err(OptionError::TracerList);
        }
        let tree = TracerTree::parse(TRACER_TREE)
            .map_err(|e| OptionError::Tracer(format!("built-in tracer.json: {e}")))?;
        for list in [&tracers, &stack_tracers] {
            let names: Vec<&str> = list.iter().map(String::as_str).collect();
            if !names.is_empty() {
                tree.select(&names)
                    .map_err(|e| OptionError::Tracer(e.to_string()))?;
            }
        }
        let all = tracers.is_empty() || tracers.iter().any(|t| t == "all");
        if self.stack && stack_tracers.is_empty() && all && !self.force_stack {
            return Err(OptionError::CostlyStack);
        }
        if self.count == Some(0) {
            return Err(OptionError::ZeroCount);
        }
        if self.timeout.as_secs() == 0 {
            return Err(OptionError::ZeroTimeout);
        }
        Ok(TraceOptions {
            proto: self.proto.clone(),
            saddr: self.saddr.clone(),
            daddr: self.daddr.clone(),
            addr: self.addr.clone(),
            sport: self.sport.clone(),
            dport: self.dport.clone(),
            port: self.port.clone(),
            tracers,
            detail: self.detail,
            timeline: self.timeline,
            count: self.count,
            skb_mode: self.skb_mode,
            ret: self.ret,
            stack: self.stack,
            stack_tracers,
            force_stack: self.force_stack,
            backend: (self.backend != Backend::Auto).then(|| self.backend.name().to_string()),
            rate_limit: self.rate_limit,
            follow_host: self.follow_host,
        })
    }
}

/// Parses `90`, `30s`, `5m`, `1h30m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration; write e.g. 30s, 5m, 1h30m");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Turns a clap error into one line (without the usage block clap adds).
pub fn one_line_error(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let first = first.trim_start_matches("error: ");
    match (first.ends_with(':'), lines.next()) {
        // "the following required arguments were not provided:" + the list
        (true, Some(next)) if !next.starts_with("Usage:") => format!("{first} {next}"),
        _ => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["kubectl-nettrace"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "m", "5x", "1h30", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_become_the_spec_options() {
        let c = cli(&[
            "pod/a",
            "-n",
            "shop",
            "-c",
            "app",
            "-p",
            "tcp",
            "--port",
            "8080",
            "-t",
            "link,kfree_skb",
            "--timeline",
            "--detail",
            "--count",
            "3",
            "--ret",
            "--stack",
            "--stack-tracer",
            "kfree_skb",
            "--backend",
            "kprobe",
            "--rate-limit",
            "100",
            "-o",
            "json",
            "--timeout",
            "5m",
        ]);
        assert_eq!(c.container.as_deref(), Some("app"));
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.output, OutputFormat::Json);
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.start_timeout, Duration::from_secs(120));
        assert_eq!(c.agent_namespace, "nettrace");
        assert_eq!(c.agent_idle_timeout, 60);
        assert_eq!(
            cli(&["a", "--agent-idle-timeout", "5"]).agent_idle_timeout,
            5
        );
        assert!(c.image.starts_with("ghcr.io/nettrace/nettrace:"));
        let o = c.trace_options().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.proto.as_deref(), Some("tcp"));
        assert_eq!(o.port.as_deref(), Some("8080"));
        assert_eq!(o.tracers, ["link", "kfree_skb"]);
        assert_eq!(o.stack_tracers, ["kfree_skb"]);
        assert_eq!(o.count, Some(3));
        assert_eq!(o.backend.as_deref(), Some("kprobe"));
        assert_eq!(o.rate_limit, Some(100));
        assert!(o.timeline && o.detail && o.ret && o.stack && !o.skb_mode && !o.follow_host);
        assert_eq!(cli(&["a"]).trace_options().map(|o| o.backend), Ok(None));
    }

    #[test]
    fn bad_options_are_refused_before_the_cluster() {
        let err = |args: &[&str]| {
            cli(args)
                .trace_options()
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["a", "--addr", "10.0.0.300"]).contains("not an IP address"));
        assert!(err(&["a", "--port", "0"]).contains("not a port"));
        assert!(err(&["a", "-p", "quic"]).contains("unknown protocol"));
        assert!(err(&["a", "-p", "icmp", "--port", "53"]).contains("port filters"));
        assert!(err(&["a", "-s", "10.0.0.1", "-d", "fd00::1"]).contains("mix IPv4 and IPv6"));
        assert!(err(&["a", "-t", "no_such_tracer"]).contains("no_such_tracer"));
        assert!(err(&["a", "-t", "?"]).contains("nettrace -t ?"));
        assert!(err(&["a", "--stack"]).contains("--force-stack"));
        assert!(err(&["a", "--count", "0"]).contains("at least 1"));
        assert!(cli(&["a", "--stack", "--force-stack"])
            .trace_options()
            .is_ok());
        assert!(cli(&["a", "--stack", "-t", "kfree_skb"])
            .trace_options()
            .is_ok());
        let parse = |args: &[&str]| {
            let mut v = vec!["kubectl-nettrace"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).map(|_| ())
        };
        assert!(parse(&[]).is_err(), "a target is required");
        assert!(parse(&["a", "--timeout", "soon"]).is_err());
        assert!(parse(&["a", "-o", "yaml"]).is_err());
        assert!(parse(&["a", "--backend", "ebpf"]).is_err());
        assert!(parse(&["a", "--agent-idle-timeout", "0"]).is_err());
        assert!(parse(&["a", "--agent-idle-timeout", "soon"]).is_err());
    }
}
