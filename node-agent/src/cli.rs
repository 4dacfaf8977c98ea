//! The command line of the host `nettrace` binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Output format for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines, as the original nettrace prints them.
    Text,
    /// JSON lines, one object per event (schema in the README).
    Json,
}

/// Trace packets through the Linux network stack with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "nettrace",
    version,
    about,
    max_term_width = 110,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Another mode than tracing from the command line.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// IP source address (IPv4 or IPv6)
    #[arg(short = 's', long = "saddr", value_name = "SADDR")]
    pub saddr: Option<String>,
    /// IP destination address
    #[arg(short = 'd', long = "daddr", value_name = "DADDR")]
    pub daddr: Option<String>,
    /// IP source or destination address
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// Protocol (L3 or L4), lower case: ip, ip6, arp, tcp, udp, icmp, icmp6, sctp
    #[arg(short = 'p', long = "proto", value_name = "PROTO")]
    pub proto: Option<String>,
    /// TCP/UDP destination port
    #[arg(long, value_name = "DPORT")]
    pub dport: Option<String>,
    /// TCP/UDP source port
    #[arg(long, value_name = "SPORT")]
    pub sport: Option<String>,
    /// TCP/UDP source or destination port
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    /// Tracers (groups or kernel functions/tracepoints) to trace, comma separated; "-t ?" lists them
    #[arg(
        short = 't',
        long = "tracer",
        value_name = "TRACER",
        value_delimiter = ','
    )]
    pub tracer: Vec<String>,
    /// Show more verbose information (what was attached, how long it took)
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Show more per event: skb address, interface, pid and task name, tracer group
    #[arg(long)]
    pub detail: bool,
    /// Print the kernel call stack of each event
    #[arg(long)]
    pub stack: bool,
    /// Print the kernel call stack only for these tracers (comma separated)
    #[arg(
        long = "stack-tracer",
        value_name = "STACK_TRACER",
        value_delimiter = ','
    )]
    pub stack_tracer: Vec<String>,
    /// Group events per skb and print each group when the skb is freed
    #[arg(long)]
    pub timeline: bool,
    /// Stop after COUNT skbs (with --timeline) or COUNT events
    #[arg(short = 'c', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Trace the return value of kernel functions
    #[arg(long)]
    pub ret: bool,
    /// Keep tracing an skb once it matched, even after NAT rewrites it
    #[arg(long = "skb-mode")]
    pub skb_mode: bool,
    /// Allow --stack together with the whole "all" tracer
    #[arg(long = "force-stack")]
    pub force_stack: bool,
    /// Only packets of this network namespace: an inode number or a path (/proc/PID/ns/net, /run/netns/NAME)
    ///
    /// It is held open while tracing, so that its inode cannot pass to another namespace. The trace ends, with a line and a non-zero exit, when the path no longer names it or, given as an inode or a /proc path, when no process or mount holds it any more.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,
    /// Only packets on this interface (of --netns when given, else of nettrace's own namespace)
    ///
    /// The trace ends, with a line and a non-zero exit, when the interface is deleted (or leaves the namespace).
    #[arg(long, value_name = "IFNAME")]
    pub ifname: Option<String>,
    /// Only events in the context of this process id; the trace ends when it exits
    ///
    /// A process id, not a thread id. When the process exits the trace ends, with a line and a non-zero exit: the number may go to another process next.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Read the tracer tree from this file instead of the built-in tracer.json
    #[arg(long = "tracer-file", value_name = "PATH")]
    pub tracer_file: Option<PathBuf>,
    /// Backend for kernel-function tracers: auto (fentry, else kprobe), fentry, kprobe, or tracepoint (functions left out)
    #[arg(long, value_enum, default_value = "auto", value_name = "BACKEND")]
    pub backend: crate::plan::BackendChoice,
    /// Attach tracepoints as raw tracepoints (bpf_probe_read_kernel for every skb field) even where BTF-typed tp_btf programs load; for comparison and for kernels where tp_btf misbehaves
    #[arg(long = "raw-tp")]
    pub raw_tp: bool,
    /// At most this many events per second, enforced in the kernel (suppressed events are counted and reported)
    #[arg(long = "rate-limit", value_name = "EVENTS_PER_SEC")]
    pub rate_limit: Option<u32>,
    /// Size of the event ring buffer in KiB (a power of two, at least 4)
    #[arg(long = "ringbuf-kb", value_name = "KIB", default_value_t = 4096)]
    pub ringbuf_kb: u32,
}

/// Modes of the binary besides the command-line tracer.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node agent: read one protocol v1 `spec` line on stdin, answer with JSON lines on stdout
    Agent,
}

impl Cli {
    /// True when the user asked for the tracer list (`-t ?`).
    pub fn wants_tracer_list(&self) -> bool {
        self.tracer.iter().any(|t| t == "?")
    }
}

/// Turns a clap error into one line (without the usage block clap adds).
pub fn one_line_error(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    first.trim_start_matches("error: ").trim().to_string()
}
