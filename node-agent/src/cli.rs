//! The command line of the host `nettrace` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nettrace_common::options::{FILTERS, OUTPUT};
use nettrace_common::TraceOptions;

/// Output format for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines, as the original nettrace prints them.
    Text,
    /// JSON lines, one object per event (schema in the README).
    Json,
}

/// The default `--ringbuf-kb`.
pub const DEFAULT_RINGBUF_KB: u32 = 4096;

/// Trace packets through the Linux network stack with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "nettrace",
    version,
    about,
    max_term_width = 110,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    // The shared options have --count only (-c is the container in
    // kubectl nettrace); here it is -c as well.
    mut_arg("count", |a| a.short('c'))
)]
pub struct Cli {
    /// Another mode than tracing from the command line.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The options `kubectl nettrace` takes too.
    #[command(flatten)]
    pub trace: TraceOptions,
    /// The options of this binary only.
    #[command(flatten)]
    pub host: HostArgs,
}

/// The options of the host binary that `kubectl nettrace` does not have.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct HostArgs {
    /// Only packets of this network namespace: an inode number or a path (/proc/PID/ns/net, /run/netns/NAME)
    ///
    /// It is held open while tracing, so that its inode cannot pass to another namespace. The trace ends, with a line and a non-zero exit, when the path no longer names it or, given as an inode or a /proc path, when no process or mount holds it any more.
    #[arg(long, value_name = "NETNS", help_heading = FILTERS)]
    pub netns: Option<String>,
    /// Only packets on this interface (of --netns when given, else of nettrace's own namespace)
    ///
    /// The trace ends, with a line and a non-zero exit, when the interface is deleted (or leaves the namespace).
    #[arg(long, value_name = "IFNAME", help_heading = FILTERS)]
    pub ifname: Option<String>,
    /// Only events in the context of this process id; the trace ends when it exits
    ///
    /// A process id, not a thread id. When the process exits the trace ends, with a line and a non-zero exit: the number may go to another process next.
    #[arg(long, value_name = "PID", help_heading = FILTERS)]
    pub pid: Option<u32>,
    /// Output format
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        help_heading = OUTPUT
    )]
    pub output: OutputFormat,
    /// Show more verbose information (what was attached, how long it took)
    #[arg(short = 'v', long, help_heading = OUTPUT)]
    pub verbose: bool,
    /// Read the tracer tree from this file instead of the built-in tracer.json
    #[arg(long = "tracer-file", value_name = "PATH")]
    pub tracer_file: Option<PathBuf>,
    /// Size of the event ring buffer in KiB (a power of two, at least 4)
    #[arg(long = "ringbuf-kb", value_name = "KIB", default_value_t = DEFAULT_RINGBUF_KB)]
    pub ringbuf_kb: u32,
    /// Also write every event, with the packet's first bytes (--snaplen) as the kernel held them, to this pcap-ng file ("-": stdout, instead of the text or JSON output; e.g. | wireshark -k -i -)
    #[arg(long, value_name = "FILE", help_heading = OUTPUT)]
    pub pcap: Option<PathBuf>,
}

impl HostArgs {
    /// What the node agent runs with: none of these options (the spec
    /// cannot give them), JSON events (the agent's sink wraps them).
    pub fn agent() -> HostArgs {
        HostArgs {
            netns: None,
            ifname: None,
            pid: None,
            output: OutputFormat::Json,
            verbose: false,
            tracer_file: None,
            ringbuf_kb: DEFAULT_RINGBUF_KB,
            pcap: None,
        }
    }
}

/// Modes of the binary besides the command-line tracer.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node agent: read one protocol v1 `spec` line on stdin, answer with JSON lines on stdout
    Agent,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["nettrace"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_shared_option_parses_here() {
        let (args, options) = nettrace_common::options::every_option();
        assert_eq!(cli(&args).trace, options);
        // -c is the count here (kubectl nettrace has --count only).
        let short: Vec<&str> = args
            .iter()
            .map(|a| if *a == "--count" { "-c" } else { a })
            .collect();
        assert_eq!(cli(&short).trace, options);
    }

    #[test]
    fn host_options_stay_apart() {
        let c = cli(&[
            "-p",
            "icmp",
            "--addr",
            "10.250.200.2",
            "--timeline",
            "--detail",
            "-c",
            "2",
            "--netns",
            "/run/netns/a",
            "--ifname",
            "eth0",
            "--pid",
            "7",
            "-o",
            "json",
            "-v",
            "--tracer-file",
            "t.json",
            "--ringbuf-kb",
            "64",
            "--pcap",
            "-",
            "-t",
            "?",
        ]);
        assert_eq!(c.trace.count, Some(2));
        assert!(c.trace.timeline && c.trace.detail && c.trace.wants_tracer_list());
        assert_eq!(c.host.netns.as_deref(), Some("/run/netns/a"));
        assert_eq!(c.host.ifname.as_deref(), Some("eth0"));
        assert_eq!(c.host.pid, Some(7));
        assert_eq!(c.host.output, OutputFormat::Json);
        assert!(c.host.verbose);
        assert_eq!(c.host.tracer_file, Some(PathBuf::from("t.json")));
        assert_eq!(c.host.ringbuf_kb, 64);
        assert_eq!(c.host.pcap, Some(PathBuf::from("-")));
        assert!(c.command.is_none());
        let d = cli(&[]);
        assert_eq!(d.trace, TraceOptions::default());
        assert_eq!(
            d.host,
            HostArgs {
                output: OutputFormat::Text,
                ..HostArgs::agent()
            }
        );
        assert!(matches!(cli(&["agent"]).command, Some(Command::Agent)));
        assert!(Cli::try_parse_from(["nettrace", "--container", "x"]).is_err());
        assert!(Cli::try_parse_from(["nettrace", "--follow-host"]).is_err());
    }
}
