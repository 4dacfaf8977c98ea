//! The trace options that `nettrace` and `kubectl nettrace` share, written
//! once: [`TraceOptions`] is flattened into both command lines (clap), is
//! the `options` of the agent's spec (serde), and is checked by one
//! function, [`TraceOptions::validate`], which the host, the plugin (before
//! it touches the cluster) and the agent (on the spec it receives) all call.
//!
//! Options only one binary has stay in its own command line: `--netns`,
//! `--ifname`, `--pid`, `--tracer-file`, `--ringbuf-kb`, `-c` (the count's
//! short form) on the host; the Kubernetes ones, `-c` (the container) among
//! them, in the plugin.

use std::collections::BTreeSet;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::filter::{parse_addr, parse_port, parse_proto, Filter, FilterError};
use crate::format::TextOptions;
use crate::tracer::{Leaf, TracerTree, TreeError};

/// Help heading of the filter options.
pub const FILTERS: &str = "Filters";
/// Help heading of the output options.
pub const OUTPUT: &str = "Output";

/// Backend for kernel-function tracers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The best one available: fentry, else kprobe.
    #[default]
    Auto,
    /// fentry/fexit only.
    Fentry,
    /// kprobe/kretprobe only.
    Kprobe,
    /// Tracepoints only (function leaves are left out).
    Tracepoint,
}

impl Backend {
    /// The name on the command line and in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }

    /// True for [`Backend::Auto`] (the spec leaves it out).
    pub fn is_auto(&self) -> bool {
        *self == Backend::Auto
    }
}

/// The filter, tracer and view options both binaries accept, as typed: the
/// values are strings as on the command line until [`TraceOptions::validate`]
/// checks them. The serde form is the spec's `options` (protocol v1: keys
/// `proto`, `saddr`, `daddr`, `addr`, `sport`, `dport`, `port`, `tracers`,
/// `stack_tracers`, `detail`, `timeline`, `skb_mode`, `ret`, `stack`,
/// `force_stack`, `raw_tp`, `probe_read`, `no_kprobe_multi`, `count`, `rate_limit`, `backend`,
/// `diag`, `nft_trace`, `snaplen`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Args)]
#[serde(default)]
pub struct TraceOptions {
    /// IP source address (IPv4 or IPv6)
    #[arg(
        short = 's',
        long = "saddr",
        value_name = "SADDR",
        help_heading = FILTERS
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<String>,
    /// IP destination address
    #[arg(
        short = 'd',
        long = "daddr",
        value_name = "DADDR",
        help_heading = FILTERS
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<String>,
    /// IP source or destination address
    #[arg(long, value_name = "ADDR", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Protocol (L3 or L4), lower case: ip, ip6, arp, tcp, udp, icmp, icmp6, sctp
    #[arg(
        short = 'p',
        long = "proto",
        value_name = "PROTO",
        help_heading = FILTERS
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// TCP/UDP destination port
    #[arg(long, value_name = "DPORT", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<String>,
    /// TCP/UDP source port
    #[arg(long, value_name = "SPORT", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<String>,
    /// TCP/UDP source or destination port
    #[arg(long, value_name = "PORT", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Tracers (groups or kernel functions/tracepoints) to trace, comma separated (default: all); `nettrace -t ?` lists them
    #[arg(
        short = 't',
        long = "tracer",
        value_name = "TRACER",
        value_delimiter = ',',
        help_heading = FILTERS
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracers: Vec<String>,
    /// Keep tracing an skb once it matched, even after NAT rewrites it
    #[arg(long = "skb-mode", help_heading = FILTERS)]
    pub skb_mode: bool,
    /// At most this many events per second, enforced in the kernel (suppressed events are counted and reported)
    #[arg(
        long = "rate-limit",
        value_name = "EVENTS_PER_SEC",
        help_heading = FILTERS
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Backend for kernel-function tracers: auto (fentry, else kprobe), fentry, kprobe, or tracepoint (functions left out)
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        value_name = "BACKEND",
        help_heading = FILTERS
    )]
    #[serde(skip_serializing_if = "Backend::is_auto")]
    pub backend: Backend,
    /// Attach tracepoints as raw tracepoints (bpf_probe_read_kernel for every skb field) even where BTF-typed tp_btf programs load; for comparison and for kernels where tp_btf misbehaves
    #[arg(long = "raw-tp", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw_tp: bool,
    /// Read skbs and packet headers with bpf_probe_read_kernel even where the kernel can cast them to typed pointers (bpf_rdonly_cast, Linux 6.2+); for comparison and for kernels where the cast misbehaves
    #[arg(long = "probe-read", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probe_read: bool,
    /// Give each kernel function its own kprobe even where one kprobe-multi link could attach them all (fprobe, Linux 5.18+); for comparison and for kernels where kprobe-multi misbehaves
    #[arg(long = "no-kprobe-multi", help_heading = FILTERS)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_kprobe_multi: bool,

    /// Show more per event: skb address, interface, pid and task name, tracer group
    #[arg(long, help_heading = OUTPUT)]
    pub detail: bool,
    /// Group events per skb and print each group when the skb is freed
    #[arg(long, help_heading = OUTPUT)]
    pub timeline: bool,
    /// Stop after COUNT events (COUNT skbs with --timeline)
    #[arg(long, value_name = "COUNT", help_heading = OUTPUT)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Trace the return value of kernel functions
    #[arg(long, help_heading = OUTPUT)]
    pub ret: bool,
    /// Print the kernel call stack of each event
    #[arg(long, help_heading = OUTPUT)]
    pub stack: bool,
    /// Print the kernel call stack only for these tracers (comma separated)
    #[arg(
        long = "stack-tracer",
        value_name = "STACK_TRACER",
        value_delimiter = ',',
        help_heading = OUTPUT
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack_tracers: Vec<String>,
    /// Allow --stack together with the whole "all" tracer
    #[arg(long = "force-stack", help_heading = OUTPUT)]
    pub force_stack: bool,
    /// Name the netfilter rule that dropped a packet: adds a temporary nftables table that marks matching packets for the kernel's rule tracing (removed at exit), in the traced namespace (iptables-nft and nft rules; not iptables-legacy)
    #[arg(long = "nft-trace", help_heading = OUTPUT)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nft_trace: bool,
    /// Print only the packets that went wrong (dropped, reset, retransmitted, answered with an ICMP error), each with its path (implies --timeline) and advice, and a summary at exit
    #[arg(long, help_heading = OUTPUT)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub diag: bool,
    /// With --pcap: copy at most this many bytes of each packet, from its MAC header (or its network header when it has none), in the kernel (default 128, at most 2048)
    #[arg(long, value_name = "BYTES", help_heading = OUTPUT)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u16>,
}

/// Bytes of each packet `--pcap` copies when `--snaplen` does not say.
pub const DEFAULT_SNAPLEN: u16 = 128;

/// Shared options that cannot be used, in one line each (the same line
/// whichever binary, or the agent, checks them).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionsError {
    /// A filter value that does not parse.
    #[error("{option}: {error}")]
    Value {
        /// The option, as `--saddr`.
        option: &'static str,
        /// What is wrong with its value.
        error: FilterError,
    },
    /// Filter values that do not go together.
    #[error("{0}")]
    Filter(FilterError),
    /// A `-t` or `--stack-tracer` name that is not in the tracer tree.
    #[error("{0}")]
    Tracer(TreeError),
    /// `-t ?` where nothing can print the list.
    #[error("the tracer list is printed by the agent binary: run `nettrace -t ?` on a node (or in the agent image)")]
    TracerList,
    /// `--stack` on the whole tree without `--force-stack`.
    #[error("--stack with the whole \"all\" tracer is costly: pick tracers with -t, use --stack-tracer without --stack, or add --force-stack")]
    CostlyStack,
    /// `--count 0`.
    #[error("--count must be at least 1")]
    ZeroCount,
    /// `--rate-limit 0`.
    #[error("--rate-limit must be at least 1 event per second")]
    ZeroRateLimit,
    /// A `--snaplen` out of range.
    #[error("--snaplen must be between 1 and {max} bytes, got {0}", max = crate::event::MAX_SNAPLEN)]
    Snaplen(u16),
    /// `--snaplen` without `--pcap`.
    #[error("--snaplen sets how much of each packet --pcap writes; give --pcap FILE too")]
    SnaplenWithoutPcap,
}

/// The shared options once checked: what tracing is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig<'t> {
    /// The packet filter (no netns, interface or pid: those are the host's).
    pub filter: Filter,
    /// The `-t` names as given, trimmed (empty: the whole tree).
    pub tracers: Vec<String>,
    /// The leaves they select, in tree order.
    pub leaves: Vec<&'t Leaf>,
    /// `--stack`: a stack for every event.
    pub stack: bool,
    /// The leaves `--stack-tracer` selects (by name).
    pub stack_leaves: BTreeSet<String>,
    /// `--ret`.
    pub ret: bool,
    /// `--raw-tp`.
    pub raw_tp: bool,
    /// `--probe-read`.
    pub probe_read: bool,
    /// `--no-kprobe-multi`.
    pub no_kprobe_multi: bool,
    /// `--backend`.
    pub backend: Backend,
    /// `--rate-limit`, events per second (0: none).
    pub rate_limit: u32,
    /// `--count` (at least 1).
    pub count: Option<u64>,
    /// `--detail`.
    pub detail: bool,
    /// `--timeline` (or `--diag`).
    pub timeline: bool,
    /// `--diag`.
    pub diag: bool,
    /// `--nft-trace`.
    pub nft_trace: bool,
    /// `--snaplen` (or its default): bytes of each packet `--pcap` copies.
    pub snaplen: u16,
}

impl TraceConfig<'_> {
    /// Whether events of `leaf` carry a kernel stack.
    pub fn wants_stack(&self, leaf: &Leaf) -> bool {
        self.stack || self.stack_leaves.contains(&leaf.name)
    }

    /// The text layout.
    pub fn text_options(&self) -> TextOptions {
        TextOptions {
            detail: self.detail,
            timeline: self.timeline,
            advice: self.detail || self.diag,
        }
    }
}

impl TraceOptions {
    /// Checks the options that only mean something with the front end's
    /// `--pcap` (`pcap`: whether it was given).
    pub fn check_pcap(&self, pcap: bool) -> Result<(), OptionsError> {
        if self.snaplen.is_some() && !pcap {
            return Err(OptionsError::SnaplenWithoutPcap);
        }
        Ok(())
    }

    /// True when `-t ?` asks for the tracer list.
    pub fn wants_tracer_list(&self) -> bool {
        self.tracers.iter().any(|t| t.trim() == "?")
    }

    /// Checks every option against the others and the tracer tree, and
    /// turns them into what tracing is configured from. The first problem
    /// found is the error, in one line.
    pub fn validate<'t>(&self, tree: &'t TracerTree) -> Result<TraceConfig<'t>, OptionsError> {
        fn value<T>(
            v: &Option<String>,
            option: &'static str,
            parse: fn(&str) -> Result<T, FilterError>,
        ) -> Result<Option<T>, OptionsError> {
            v.as_deref()
                .map(parse)
                .transpose()
                .map_err(|error| OptionsError::Value { option, error })
        }
        let filter = Filter {
            saddr: value(&self.saddr, "--saddr", parse_addr)?,
            daddr: value(&self.daddr, "--daddr", parse_addr)?,
            addr: value(&self.addr, "--addr", parse_addr)?,
            proto: value(&self.proto, "--proto", parse_proto)?,
            sport: value(&self.sport, "--sport", parse_port)?,
            dport: value(&self.dport, "--dport", parse_port)?,
            port: value(&self.port, "--port", parse_port)?,
            skb_mode: self.skb_mode,
            ..Filter::default()
        };
        filter.validate().map_err(OptionsError::Filter)?;

        let trimmed =
            |v: &[String]| -> Vec<String> { v.iter().map(|t| t.trim().to_string()).collect() };
        let tracers = trimmed(&self.tracers);
        let stack_tracers = trimmed(&self.stack_tracers);
        if tracers.iter().chain(&stack_tracers).any(|t| t == "?") {
            return Err(OptionsError::TracerList);
        }
        let names: Vec<&str> = if tracers.is_empty() {
            vec!["all"]
        } else {
            tracers.iter().map(String::as_str).collect()
        };
        let leaves = tree.select(&names).map_err(OptionsError::Tracer)?;
        let stack_leaves = if stack_tracers.is_empty() {
            BTreeSet::new()
        } else {
            let names: Vec<&str> = stack_tracers.iter().map(String::as_str).collect();
            tree.select(&names)
                .map_err(OptionsError::Tracer)?
                .into_iter()
                .map(|l| l.name.clone())
                .collect()
        };
        // --stack-tracer adds stacks to some tracers; with --stack every
        // event of the whole tree would carry one.
        if self.stack && names.contains(&"all") && !self.force_stack {
            return Err(OptionsError::CostlyStack);
        }
        if self.count == Some(0) {
            return Err(OptionsError::ZeroCount);
        }
        let rate_limit = match self.rate_limit {
            None => 0,
            Some(0) => return Err(OptionsError::ZeroRateLimit),
            Some(n) => n,
        };
        let snaplen = self.snaplen.unwrap_or(DEFAULT_SNAPLEN);
        if snaplen == 0 || usize::from(snaplen) > crate::event::MAX_SNAPLEN {
            return Err(OptionsError::Snaplen(snaplen));
        }
        Ok(TraceConfig {
            filter,
            tracers,
            leaves,
            stack: self.stack,
            stack_leaves,
            ret: self.ret,
            raw_tp: self.raw_tp,
            probe_read: self.probe_read,
            no_kprobe_multi: self.no_kprobe_multi,
            backend: self.backend,
            rate_limit,
            count: self.count,
            detail: self.detail,
            timeline: self.timeline || self.diag,
            diag: self.diag,
            nft_trace: self.nft_trace,
            snaplen,
        })
    }
}

/// A command line that gives every shared option a value other than its
/// default, and the options it stands for. The tests of both binaries parse
/// it with their own command line (each must get exactly these) and send it
/// through a spec to the agent's side; the test here checks that no field
/// is left at its default, so that a new option cannot be left out.
#[doc(hidden)]
pub fn every_option() -> (Vec<&'static str>, TraceOptions) {
    let args = vec![
        "-s",
        "10.0.0.1",
        "-d",
        "10.0.0.2",
        "--addr",
        "10.0.0.3",
        "-p",
        "tcp",
        "--dport",
        "80",
        "--sport",
        "1000",
        "--port",
        "443",
        "-t",
        "link,kfree_skb",
        "--skb-mode",
        "--rate-limit",
        "100",
        "--backend",
        "kprobe",
        "--raw-tp",
        "--probe-read",
        "--no-kprobe-multi",
        "--detail",
        "--timeline",
        "--count",
        "3",
        "--ret",
        "--stack",
        "--stack-tracer",
        "kfree_skb,consume_skb",
        "--force-stack",
        "--diag",
        "--nft-trace",
        "--snaplen",
        "256",
    ];
    let options = TraceOptions {
        saddr: Some("10.0.0.1".into()),
        daddr: Some("10.0.0.2".into()),
        addr: Some("10.0.0.3".into()),
        proto: Some("tcp".into()),
        dport: Some("80".into()),
        sport: Some("1000".into()),
        port: Some("443".into()),
        tracers: vec!["link".into(), "kfree_skb".into()],
        skb_mode: true,
        rate_limit: Some(100),
        backend: Backend::Kprobe,
        raw_tp: true,
        probe_read: true,
        no_kprobe_multi: true,
        detail: true,
        timeline: true,
        count: Some(3),
        ret: true,
        stack: true,
        stack_tracers: vec!["kfree_skb".into(), "consume_skb".into()],
        force_stack: true,
        diag: true,
        nft_trace: true,
        snaplen: Some(256),
    };
    (args, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const TREE: &str = include_str!("../../tracer.json");

    /// The shared options alone, as both binaries flatten them.
    #[derive(Debug, Parser)]
    struct Only {
        #[command(flatten)]
        trace: TraceOptions,
    }

    fn parse(args: &[&str]) -> TraceOptions {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        Only::try_parse_from(v)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .trace
    }

    fn err(args: &[&str]) -> String {
        let tree = TracerTree::parse(TREE).expect("tree");
        parse(args)
            .validate(&tree)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn every_option_sets_every_field() {
        let (args, options) = every_option();
        // Listing the fields makes a new one a compile error here.
        let TraceOptions {
            saddr,
            daddr,
            addr,
            proto,
            dport,
            sport,
            port,
            tracers,
            skb_mode,
            rate_limit,
            backend,
            raw_tp,
            probe_read,
            no_kprobe_multi,
            detail,
            timeline,
            count,
            ret,
            stack,
            stack_tracers,
            force_stack,
            diag,
            nft_trace,
            snaplen,
        } = &options;
        for set in [
            saddr.is_some(),
            daddr.is_some(),
            addr.is_some(),
            proto.is_some(),
            dport.is_some(),
            sport.is_some(),
            port.is_some(),
            !tracers.is_empty(),
            *skb_mode,
            rate_limit.is_some(),
            !backend.is_auto(),
            *raw_tp,
            *probe_read,
            *no_kprobe_multi,
            *detail,
            *timeline,
            count.is_some(),
            *ret,
            *stack,
            !stack_tracers.is_empty(),
            *force_stack,
            *diag,
            *nft_trace,
            snaplen.is_some(),
        ] {
            assert!(set, "{options:?}");
        }
        assert_eq!(parse(&args), options);
        let tree = TracerTree::parse(TREE).expect("tree");
        let config = options.validate(&tree).expect("valid");
        assert_eq!(config.tracers, ["link", "kfree_skb"]);
        assert_eq!(config.backend, Backend::Kprobe);
        assert_eq!(config.rate_limit, 100);
        assert!(config.stack_leaves.contains("consume_skb"));
        // Every key of the spec's options is written.
        let json = serde_json::to_value(&options).expect("json");
        assert_eq!(json.as_object().map(|o| o.len()), Some(24), "{json}");
        assert_eq!(config.snaplen, 256);
        assert_eq!(json["tracers"], serde_json::json!(["link", "kfree_skb"]));
        assert_eq!(json["backend"], "kprobe");
        assert_eq!(
            serde_json::from_value::<TraceOptions>(json).expect("back"),
            options
        );
    }

    #[test]
    fn defaults_are_the_empty_options() {
        assert_eq!(parse(&[]), TraceOptions::default());
        assert_eq!(
            serde_json::to_string(&TraceOptions::default()).expect("json"),
            r#"{"skb_mode":false,"detail":false,"timeline":false,"ret":false,"stack":false,"force_stack":false}"#
        );
        let tree = TracerTree::parse(TREE).expect("tree");
        let config = TraceOptions::default().validate(&tree).expect("valid");
        assert_eq!(
            config.leaves.len(),
            tree.select(&["all"]).expect("all").len()
        );
        assert_eq!((config.rate_limit, config.count), (0, None));
        assert_eq!(config.snaplen, DEFAULT_SNAPLEN);
        assert_eq!(config.backend, Backend::Auto);
    }

    #[test]
    fn bad_options_are_one_line_each() {
        assert_eq!(
            err(&["--addr", "10.0.0.300"]),
            "--addr: '10.0.0.300' is not an IP address; give an IPv4 or IPv6 address such as 10.0.0.1 or fd00::1"
        );
        assert!(err(&["--port", "0"]).starts_with("--port: '0' is not a port"));
        assert!(err(&["-p", "quic"]).starts_with("--proto: unknown protocol 'quic'"));
        assert!(err(&["-p", "icmp", "--port", "53"]).contains("port filters"));
        assert!(err(&["-s", "10.0.0.1", "-d", "fd00::1"]).contains("mix IPv4 and IPv6"));
        assert_eq!(
            err(&["-t", "no_such_tracer"]),
            "unknown tracer 'no_such_tracer'; run 'nettrace -t ?' to list them"
        );
        assert!(err(&["--stack-tracer", "nope"]).contains("'nope'"));
        assert!(err(&["-t", "?"]).contains("nettrace -t ?"));
        let costly = OptionsError::CostlyStack.to_string();
        assert_eq!(err(&["--stack"]), costly);
        assert_eq!(err(&["--stack", "-t", "all"]), costly);
        // Before, the plugin let this through and the agent refused it.
        assert_eq!(err(&["--stack", "--stack-tracer", "kfree_skb"]), costly);
        assert_eq!(err(&["--count", "0"]), "--count must be at least 1");
        assert_eq!(
            err(&["--rate-limit", "0"]),
            "--rate-limit must be at least 1 event per second"
        );
        assert_eq!(
            err(&["--snaplen", "0"]),
            "--snaplen must be between 1 and 2048 bytes, got 0"
        );
        assert!(err(&["--snaplen", "2049"]).contains("got 2049"));
        assert_eq!(
            parse(&["--snaplen", "64"]).check_pcap(false),
            Err(OptionsError::SnaplenWithoutPcap)
        );
        assert!(parse(&["--snaplen", "64"]).check_pcap(true).is_ok());
        assert!(parse(&[]).check_pcap(false).is_ok());
        let tree = TracerTree::parse(TREE).expect("tree");
        for ok in [
            &["--stack", "--force-stack"][..],
            &["--stack", "-t", "kfree_skb"],
            &["--stack-tracer", "kfree_skb"],
            &["-t", " link , kfree_skb "],
        ] {
            assert!(parse(ok).validate(&tree).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn the_spec_form_reads_what_older_plugins_wrote() {
        let o: TraceOptions = serde_json::from_str(
            r#"{"proto":"icmp","tracers":["link"],"backend":"tracepoint","count":2,"follow_host":true,"future":1}"#,
        )
        .expect("parse");
        assert_eq!(o.proto.as_deref(), Some("icmp"));
        assert_eq!(o.backend, Backend::Tracepoint);
        assert_eq!(o.count, Some(2));
        assert!(serde_json::from_str::<TraceOptions>(r#"{"backend":"ebpf"}"#).is_err());
        assert!(
            serde_json::from_str::<TraceOptions>(r#"{"backend":"auto"}"#)
                .is_ok_and(|o| o.backend.is_auto())
        );
    }
}
