//! The command line: host `nettrace`'s trace options (the same type,
//! [`TraceOptions`], flattened in), plus the Kubernetes ones. Everything is
//! checked here, before the cluster is touched, by the validator host
//! `nettrace` and the agent use.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use nettrace_common::filter::Filter;
use nettrace_common::options::OUTPUT;
use nettrace_common::protocol::SpecOptions;
use nettrace_common::{OptionsError, TextOptions, TraceConfig, TraceOptions, TracerTree};
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

const AFTER_HELP: &str = "\
Targets: pod/NAME or NAME (a pod in -n NAMESPACE), node/NAME (the whole node, no pod scoping).
An address given with -s, -d or --addr that is a pod's, or a Service's ClusterIP, adds the nodes
of the pods behind it; with --timeline, what several nodes see of one packet is one block.
Differences from host nettrace: -c is the container (kubectl's convention), so the event
count is --count N only; --netns, --ifname, --pid, --tracer-file and --ringbuf-kb are not
available (the agent scopes to the pods' network namespaces). The other options are host
nettrace's own, checked here as nettrace checks them.

For each node involved, an agent pod (privileged, host PID and network) is created in
--agent-namespace, attached to, and deleted when tracing stops (Ctrl-C, --count, --timeout).
If kubectl-nettrace is killed, the agent stops when its stdin closes or after
--agent-idle-timeout (60 s) without a keep-alive, and the pod's activeDeadlineSeconds
(--timeout + 60 s) bounds the rest; the next run deletes the finished pods it left. Keep-alives do not depend on stdout: when it is not read
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
    after_help = AFTER_HELP,
    mut_arg("count", |a| a.help("Stop after COUNT events (COUNT skbs with --timeline), over all nodes")),
    mut_arg("rate_limit", |a| a.help("At most this many events per second per node, enforced in the kernel")),
    mut_arg("tracers", |a| a.help("Tracers (groups or kernel functions/tracepoints), comma separated (default: all); `nettrace -t ?` on a node lists them"))
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

    /// The options host `nettrace` takes too.
    #[command(flatten)]
    pub trace: TraceOptions,

    /// Output format
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        help_heading = OUTPUT
    )]
    pub output: OutputFormat,
    /// Say more: agent pods, what each target resolved to, how events are scoped
    #[arg(short = 'v', long, help_heading = OUTPUT)]
    pub verbose: bool,
    /// Also write every event, with the packet's first bytes (--snaplen) copied by the agents, to this pcap-ng file, all nodes merged ("-": stdout, instead of the text or JSON output; e.g. | wireshark -k -i -)
    #[arg(long, value_name = "FILE", help_heading = OUTPUT)]
    pub pcap: Option<std::path::PathBuf>,
}

/// A command-line value that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionError {
    /// A trace option, as host `nettrace` and the agent would refuse it.
    #[error("{0}")]
    Trace(#[from] OptionsError),
    /// A zero `--timeout`.
    #[error("--timeout must be at least one second")]
    ZeroTimeout,
}

impl Cli {
    /// Checks the trace options with the validator host `nettrace` and the
    /// agent use (against the tracer tree the agents ship), and the
    /// plugin's own; gives the spec's options.
    pub fn spec_options(&self) -> Result<SpecOptions, OptionError> {
        self.packet_filter()?;
        self.trace.check_pcap(self.pcap.is_some())?;
        if self.timeout.as_secs() == 0 {
            return Err(OptionError::ZeroTimeout);
        }
        Ok(SpecOptions {
            trace: self.trace.clone(),
            follow_host: self.follow_host,
            node_netns: false,
            pcap: self.pcap.is_some(),
        })
    }
}

impl Cli {
    /// The packet filter the agents apply, as they build it from the trace
    /// options.
    pub fn packet_filter(&self) -> Result<Filter, OptionError> {
        self.with_config(|c| c.filter.clone())
    }

    /// The text layout the options ask for, as host `nettrace` takes it.
    pub fn text_options(&self) -> Result<TextOptions, OptionError> {
        self.with_config(|c| c.text_options())
    }

    /// `f` of the checked trace options.
    fn with_config<R>(&self, f: impl FnOnce(&TraceConfig<'_>) -> R) -> Result<R, OptionError> {
        let tree = TracerTree::parse(TRACER_TREE).map_err(OptionsError::Tracer)?;
        Ok(f(&self.trace.validate(&tree)?))
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
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
        let o = c.spec_options().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.trace, c.trace);
        let o = o.trace;
        assert_eq!(o.proto.as_deref(), Some("tcp"));
        assert_eq!(o.port.as_deref(), Some("8080"));
        assert_eq!(o.tracers, ["link", "kfree_skb"]);
        assert_eq!(o.stack_tracers, ["kfree_skb"]);
        assert_eq!(o.count, Some(3));
        assert_eq!(o.backend, nettrace_common::Backend::Kprobe);
        assert_eq!(o.rate_limit, Some(100));
        assert!(o.timeline && o.detail && o.ret && o.stack && !o.skb_mode);
        assert!(!c.spec_options().is_ok_and(|o| o.follow_host));
        assert!(cli(&["a", "--follow-host"])
            .spec_options()
            .is_ok_and(|o| o.follow_host));
        assert_eq!(
            cli(&["a"]).spec_options().map(|o| o.trace),
            Ok(TraceOptions::default())
        );
    }

    #[test]
    fn every_shared_option_parses_here_and_reaches_the_agent_unchanged() {
        use nettrace_common::protocol::{Message, Spec};
        let (args, options) = nettrace_common::options::every_option();
        let mut argv = vec!["pod/a", "-c", "app", "--pcap", "out.pcapng"];
        argv.extend(&args);
        let c = cli(&argv);
        assert_eq!(c.trace, options);
        assert_eq!(c.container.as_deref(), Some("app"));
        let sent = c.spec_options().unwrap_or_else(|e| panic!("{e}"));
        assert!(sent.pcap, "--pcap asks the agents for the bytes");
        // --snaplen means nothing without --pcap, here as on the host.
        let mut no_pcap = vec!["pod/a"];
        no_pcap.extend(&args);
        assert_eq!(
            cli(&no_pcap).spec_options().map(|_| ()),
            Err(OptionError::Trace(OptionsError::SnaplenWithoutPcap))
        );
        assert!(!cli(&["pod/a"]).spec_options().is_ok_and(|o| o.pcap));
        let line = Message::Spec(Spec {
            options: sent.clone(),
            ..Spec::default()
        })
        .to_line();
        let Ok(Message::Spec(got)) = Message::parse(&line) else {
            panic!("{line}");
        };
        assert_eq!(got.options, sent);
        // What the agent checks is what was checked here.
        let tree = TracerTree::parse(TRACER_TREE).expect("tree");
        assert_eq!(
            got.options.trace.validate(&tree),
            c.trace.validate(&tree),
            "{line}"
        );
    }

    #[test]
    fn bad_options_are_refused_before_the_cluster() {
        let err = |args: &[&str]| {
            cli(args)
                .spec_options()
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
        assert!(err(&["a", "--rate-limit", "0"]).contains("at least 1"));
        assert!(err(&["a", "--timeout", "0"]).contains("--timeout"));
        assert!(cli(&["a", "--stack", "--force-stack"])
            .spec_options()
            .is_ok());
        assert!(cli(&["a", "--stack", "-t", "kfree_skb"])
            .spec_options()
            .is_ok());
        assert!(cli(&["a", "--stack-tracer", "kfree_skb"])
            .spec_options()
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
        // Host-only options stay on the host.
        for host_only in [
            "--netns",
            "--ifname",
            "--pid",
            "--tracer-file",
            "--ringbuf-kb",
        ] {
            assert!(parse(&["a", host_only, "1"]).is_err(), "{host_only}");
        }
    }

    #[test]
    fn stack_with_stack_tracer_on_every_tracer_is_refused_as_the_host_refuses_it() {
        // Before: accepted here, then refused by each agent once its pod ran.
        assert_eq!(
            cli(&["pod/a", "--stack", "--stack-tracer", "kfree_skb"]).spec_options(),
            Err(OptionError::Trace(OptionsError::CostlyStack))
        );
        assert_eq!(
            OptionError::Trace(OptionsError::CostlyStack).to_string(),
            "--stack with the whole \"all\" tracer is costly: pick tracers with -t, use --stack-tracer without --stack, or add --force-stack"
        );
    }
}
