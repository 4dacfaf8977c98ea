//! `nettrace agent`: the node agent. Speaks protocol v1
//! (`nettrace_common::protocol`) on stdin/stdout: says hello, reads one
//! spec, resolves its containers, traces, and streams annotated events
//! until the deadline, a signal, `count`, or the plugin closing stdin.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nettrace_common::format::{Annotations, LossStats};
use nettrace_common::protocol::{
    self, Annotation, Bye, ByeReason, Clock, ErrorMsg, Hello, Lost, Message, Ready, Resolved,
    ResolvedTarget, Scope, Spec, Target,
};
use nettrace_common::{json, Event, TraceConfig, TracerTree};
use tokio::sync::oneshot;

use crate::cli::HostArgs;
use crate::containers;
use crate::session::{Control, Stop};
use crate::sink::{LossReport, Sink};
use crate::system::Backends;

/// Where the agent finds processes.
const PROC: &str = "/proc";
/// The agent's own network namespace: "host side" is relative to it.
const HOST_NETNS: &str = "/proc/self/ns/net";

impl From<Stop> for ByeReason {
    fn from(s: Stop) -> ByeReason {
        match s {
            Stop::Signal => ByeReason::Signal,
            Stop::Count => ByeReason::Count,
            Stop::Deadline => ByeReason::Deadline,
            Stop::InputClosed => ByeReason::InputClosed,
            Stop::Idle => ByeReason::Idle,
            Stop::LineTooLong => ByeReason::Error,
        }
    }
}

/// Writes one protocol line to stdout. Only the few lines around the
/// session go this way (`hello`, `resolved`, `ready` before it, `error` and
/// `bye` after it): the event loop's own output goes through the session's
/// writer, so nothing here can stall the loop.
pub fn emit(msg: &Message) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", msg.to_line()).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// The agent's entry point.
pub fn main() -> ExitCode {
    let result = run();
    let (last, code) = match result {
        Ok(Stop::LineTooLong) => (
            vec![
                Message::Error(ErrorMsg {
                    message: too_long_message(),
                }),
                Message::Bye(Bye {
                    reason: ByeReason::Error,
                }),
            ],
            ExitCode::FAILURE,
        ),
        Ok(stop) => (
            vec![Message::Bye(Bye {
                reason: stop.into(),
            })],
            ExitCode::SUCCESS,
        ),
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            (
                vec![
                    Message::Error(ErrorMsg { message }),
                    Message::Bye(Bye {
                        reason: ByeReason::Error,
                    }),
                ],
                ExitCode::FAILURE,
            )
        }
    };
    emit_last(last);
    code
}

/// How long the last lines may wait for a reader that stopped reading: the
/// programs are detached already, and the agent must end within a second.
const LAST_LINES_WAIT: Duration = Duration::from_millis(300);

/// Writes the agent's last lines (`error`, `bye`) from a thread of their own
/// and waits for them at most [`LAST_LINES_WAIT`]: a plugin that stopped
/// reading must not keep the agent alive.
fn emit_last(msgs: Vec<Message>) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("last-lines".into())
        .spawn(move || {
            for m in &msgs {
                if emit(m).is_err() {
                    break;
                }
            }
            let _ = done_tx.send(());
        });
    if spawned.is_ok() {
        let _ = done_rx.recv_timeout(LAST_LINES_WAIT);
    }
}

fn run() -> Result<Stop> {
    // Every stdin line goes through one reader thread: the spec first, then
    // the plugin's pings, which keep the agent alive.
    let lines = spawn_stdin_reader();
    let first = lines.recv_timeout(Duration::from_secs(protocol::DEFAULT_IDLE_TIMEOUT_SECS));
    // Hello comes once the plugin is surely listening (it wrote the spec),
    // or is surely gone.
    emit(&Message::Hello(hello()))?;
    let first = match first {
        Ok(Input::Line(line)) => line,
        Ok(Input::TooLong) => bail!("{}", too_long_message()),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            emit(&Message::Error(ErrorMsg {
                message: format!(
                    "no spec arrived on stdin within {} s",
                    protocol::DEFAULT_IDLE_TIMEOUT_SECS
                ),
            }))?;
            return Ok(Stop::Idle);
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Stop::InputClosed),
    };
    let spec = match Message::parse(&first).context("reading the spec")? {
        Message::Spec(spec) => spec,
        other => bail!(
            "expected a \"spec\" line first, got {:?}",
            other.to_line().chars().take(80).collect::<String>()
        ),
    };
    let deadline = spec
        .deadline_secs
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let idle = Duration::from_secs(
        spec.idle_timeout_secs
            .unwrap_or(protocol::DEFAULT_IDLE_TIMEOUT_SECS)
            .max(1),
    );

    let resolved = resolve_targets(&spec.targets);
    emit(&Message::Resolved(Resolved {
        targets: resolved.clone(),
    }))?;
    if !spec.targets.is_empty() && resolved.iter().all(|r| r.error.is_some()) {
        bail!("no target could be resolved on this node");
    }
    // Peers only annotate: one that cannot be resolved is left out.
    let mut peers = resolve_targets(&spec.peers);
    peers.retain(|r| r.error.is_none());
    let sink = AgentSink::new(&spec, &resolved, &peers)?;

    let tree = crate::load_tree(None)?;
    let (config, host) = run_config(&spec, &tree)?;
    // The packets' bytes only when the plugin writes a pcap file.
    let snaplen = spec.options.pcap.then_some(config.snaplen);
    let prepared = crate::prepare(&config, &host, &tree, &sink.kernel_scope, snaplen)?;
    let rules = if config.nft_trace {
        // the node's namespace, and each traced pod's
        let pods: Vec<(String, std::path::PathBuf)> = resolved
            .iter()
            .filter(|r| r.error.is_none() && !r.host_network)
            .filter(|r| {
                // one per namespace (a pod's containers share it)
                let ns = r.netns.unwrap_or(0);
                !resolved
                    .iter()
                    .take_while(|o| !std::ptr::eq(*o, *r))
                    .any(|o| o.error.is_none() && o.netns.unwrap_or(1) == ns)
            })
            .filter_map(|r| {
                let pid = r.pid?;
                Some((
                    format!("pod {}/{}", r.target.namespace, r.target.pod),
                    std::path::PathBuf::from(format!("/proc/{pid}/ns/net")),
                ))
            })
            .collect();
        let mut ns = vec![("the node".to_string(), crate::nft_trace::Netns::Current)];
        ns.extend(
            pods.iter()
                .map(|(l, p)| (l.clone(), crate::nft_trace::Netns::Path(p))),
        );
        Some(crate::nft_rules::RuleFinder::start(&ns, &config.filter)?)
    } else {
        None
    };
    emit(&Message::Ready(Ready {
        tracers: prepared.loaded.attached.len(),
        scope: sink.scope,
    }))?;

    let control = Control {
        deadline,
        input_ended: Some(watch_input(lines, idle)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::session::run(
        prepared.loaded,
        prepared.plan,
        prepared.symbols,
        prepared.views,
        sink,
        control,
        rules,
        None,
    ))
}

/// What the agent traces with: the spec's options, checked by the validator
/// the command line (`nettrace` and `kubectl nettrace`) uses, and the host's
/// own options at their agent values. [`crate::prepare`] takes it from
/// there, as it takes the command line's.
fn run_config<'t>(spec: &Spec, tree: &'t TracerTree) -> Result<(TraceConfig<'t>, HostArgs)> {
    let config = spec.options.trace.validate(tree)?;
    Ok((config, HostArgs::agent()))
}

/// What the stdin reader passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    /// One line, without its newline.
    Line(String),
    /// A line longer than [`protocol::MAX_LINE_BYTES`]: the reader stopped
    /// there (nothing more comes).
    TooLong,
}

fn too_long_message() -> String {
    format!(
        "a line on stdin is longer than {} bytes, the protocol's limit",
        protocol::MAX_LINE_BYTES
    )
}

/// Reads stdin line by line on a thread; the channel closes at end of input.
fn spawn_stdin_reader() -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_lines(io::stdin().lock(), protocol::MAX_LINE_BYTES, &tx));
    rx
}

/// Sends each line of `input` (at most `limit` bytes held at any time);
/// stops at the end of input, at a line longer than `limit` (after sending
/// [`Input::TooLong`]), at a read error, or when nobody listens.
fn read_lines(mut input: impl BufRead, limit: usize, tx: &mpsc::Sender<Input>) {
    let mut split = protocol::LineSplitter::new(limit);
    loop {
        let got = match input.fill_buf() {
            Ok([]) => split.finish(),
            Ok(bytes) => {
                let (used, got) = split.push(bytes);
                input.consume(used);
                match got {
                    Some(g) => Some(g),
                    None => continue,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => None,
        };
        let msg = match got {
            Some(protocol::Split::Line) => {
                Input::Line(String::from_utf8_lossy(split.line()).into_owned())
            }
            Some(protocol::Split::TooLong) => Input::TooLong,
            // end of input (or a read error, the same to the agent)
            None => return,
        };
        let last = msg == Input::TooLong;
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}

/// Watches the plugin's lines: fires with [`Stop::InputClosed`] at end of
/// input, [`Stop::Idle`] when nothing arrived for `idle`, or
/// [`Stop::LineTooLong`].
fn watch_input(lines: mpsc::Receiver<Input>, idle: Duration) -> oneshot::Receiver<Stop> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let stop = loop {
            match lines.recv_timeout(idle) {
                Ok(Input::TooLong) => break Stop::LineTooLong,
                // Pings and anything else only show the plugin is alive.
                Ok(Input::Line(_)) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break Stop::Idle,
                Err(mpsc::RecvTimeoutError::Disconnected) => break Stop::InputClosed,
            }
        };
        let _ = tx.send(stop);
    });
    rx
}

fn hello() -> Hello {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    // Only what is cheap to learn: the BTF is parsed once, when tracing is
    // prepared.
    let k = Backends::probe();
    let mut backends = vec!["tracepoint".to_string()];
    if k.fentry {
        backends.push("fentry".into());
    }
    if k.kprobes {
        backends.push("kprobe".into());
        // multi-link kprobes arrived in 5.18
        let (major, minor) = kernel_version(&kernel);
        if (major, minor) >= (5, 18) {
            backends.push("kprobe-multi".into());
        }
    }
    Hello {
        agent: env!("CARGO_PKG_VERSION").to_string(),
        kernel,
        backends,
        clock: read_clocks(),
        boot_id: procfs::sys::kernel::random::boot_id()
            .map(|id| id.trim().to_string())
            .unwrap_or_default(),
        netns: containers::netns_inode(Path::new(HOST_NETNS)).unwrap_or(0),
    }
}

/// `(major, minor)` of a kernel release string, `(0, 0)` when unreadable.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Both clocks, the realtime one read between two monotonic readings and
/// paired with their midpoint.
pub(crate) fn read_clocks() -> Clock {
    let ns = crate::system::clock_ns;
    let m1 = ns(libc::CLOCK_MONOTONIC);
    let realtime_ns = ns(libc::CLOCK_REALTIME);
    let m2 = ns(libc::CLOCK_MONOTONIC);
    Clock {
        monotonic_ns: m1 + (m2.saturating_sub(m1)) / 2,
        realtime_ns,
    }
}

/// Resolves targets (or peers) with one scan of `/proc`.
fn resolve_targets(targets: &[Target]) -> Vec<ResolvedTarget> {
    let ids: Vec<&str> = targets.iter().map(|t| t.container_id.as_str()).collect();
    let found = containers::resolve_all(Path::new(PROC), &ids, Path::new(HOST_NETNS));
    targets
        .iter()
        .zip(found)
        .map(|(t, c)| {
            let mut r = ResolvedTarget {
                target: t.clone(),
                ..ResolvedTarget::default()
            };
            match c {
                Ok(c) => {
                    r.pid = Some(c.pid);
                    r.netns = Some(c.netns);
                    r.host_network = c.host_network;
                    if let Some((index, name)) = c.host_if {
                        r.host_ifindex = Some(index);
                        r.host_ifname = Some(name);
                    }
                    r.host_if_error = c.host_if_error;
                }
                Err(e) => r.error = Some(format!("{e:#}").replace('\n', " ")),
            }
            r
        })
        .collect()
}

/// Scoping and annotation of events for the targets of a spec.
pub struct AgentSink {
    /// How events are scoped.
    pub scope: Scope,
    /// The scope map's keys for the kernel (scope `kernel`): each target's
    /// netns (`netns << 32`) and host-side veth (`host netns << 32 | ifindex`).
    pub kernel_scope: Vec<u64>,
    /// Pods (targets and peers) by network namespace inode.
    by_netns: HashMap<u32, Annotation>,
    /// Pods by the ifindex of their host-side veth (in `host_netns`).
    by_host_if: HashMap<u32, Annotation>,
    /// The agent's network namespace inode.
    host_netns: u32,
    /// Scratch buffer for event objects.
    scratch: String,
}

impl AgentSink {
    /// Builds the scoping of a spec from what its targets resolved to, and
    /// the annotations from its targets and peers.
    pub fn new(
        spec: &Spec,
        resolved: &[ResolvedTarget],
        peers: &[ResolvedTarget],
    ) -> Result<AgentSink> {
        let host_netns = u32::try_from(containers::netns_inode(Path::new(HOST_NETNS))?)
            .context("netns inode out of range")?;
        let mut sink = AgentSink {
            scope: Scope::None,
            kernel_scope: Vec::new(),
            by_netns: HashMap::new(),
            by_host_if: HashMap::new(),
            host_netns,
            scratch: String::new(),
        };
        // Peers first: a pod given both ways is annotated as the target.
        for r in peers.iter().chain(resolved) {
            sink.add_annotation(r);
        }
        let mut any_host_network = false;
        for r in resolved.iter().filter(|r| r.error.is_none()) {
            if r.host_network {
                // hostNetwork pods share the node's namespace: events there
                // cannot be told apart by namespace or interface.
                any_host_network = true;
                continue;
            }
            if let Some(ns) = r.netns.and_then(|n| u32::try_from(n).ok()) {
                sink.kernel_scope.push(u64::from(ns) << 32);
            }
            if let Some(index) = r.host_ifindex {
                sink.kernel_scope
                    .push(u64::from(host_netns) << 32 | u64::from(index));
            }
        }
        if spec.options.node_netns && !sink.kernel_scope.is_empty() {
            sink.kernel_scope.push(u64::from(host_netns) << 32);
        }
        sink.kernel_scope.sort_unstable();
        sink.kernel_scope.dedup();
        if spec.options.follow_host || any_host_network || sink.kernel_scope.is_empty() {
            sink.kernel_scope.clear();
        } else {
            sink.scope = Scope::Kernel;
        }
        Ok(sink)
    }

    fn add_annotation(&mut self, r: &ResolvedTarget) {
        let Some((ann, host)) = r.annotations() else {
            return;
        };
        if let (Some(index), Some(host)) = (r.host_ifindex, host) {
            self.by_host_if.insert(index, host);
        }
        if let Some(ns) = r.netns.and_then(|n| u32::try_from(n).ok()) {
            self.by_netns.insert(ns, ann);
        }
    }

    /// The pod an event belongs to, when known.
    pub fn annotation(&self, ev: &Event) -> Option<Annotation> {
        if let Some(a) = self.by_netns.get(&ev.netns) {
            return Some(a.clone());
        }
        if ev.netns == self.host_netns && ev.ifindex != 0 {
            return self.by_host_if.get(&ev.ifindex).cloned();
        }
        None
    }
}

impl Sink for AgentSink {
    /// The `event` line of an event (its `-o json` object, annotated).
    fn event(&mut self, out: &mut String, ev: &Event, ann: &Annotations<'_>) {
        self.scratch.clear();
        json::write_event_json(&mut self.scratch, ev, ann);
        out.push_str(&protocol::event_line(
            &self.scratch,
            self.annotation(ev).as_ref(),
        ));
        out.push('\n');
    }

    /// The `timeline` line of one skb's events.
    fn timeline<'a, I>(&mut self, out: &mut String, skb: u64, items: I)
    where
        I: IntoIterator<Item = (&'a Event, Annotations<'a>)>,
    {
        let rendered: Vec<(String, Option<Annotation>)> = items
            .into_iter()
            .map(|(ev, ann)| {
                let mut obj = String::new();
                json::write_event_json(&mut obj, ev, &ann);
                (obj, self.annotation(ev))
            })
            .collect();
        out.push_str(&protocol::timeline_line(
            skb,
            rendered.iter().map(|(o, a)| (o.as_str(), a.as_ref())),
        ));
        out.push('\n');
    }

    /// The pod, when known.
    fn place(&self, ev: &Event) -> String {
        match self.annotation(ev) {
            Some(a) => format!("{}/{}", a.namespace, a.pod),
            None => format!("netns {}", ev.netns),
        }
    }

    /// Nothing: the plugin sums up what every node sent.
    fn diag_summary(&mut self, _out: &mut String, _summary: &nettrace_common::diag::Summary) {}

    /// A `lost` line when the kernel's counters grew, and at the end.
    fn lost(&mut self, out: &mut String, r: &LossReport<'_>) {
        if r.kernel_grew || r.at_exit {
            out.push_str(&lost_msg(r.now).to_line());
            out.push('\n');
        }
    }

    /// The plugin gets the counters in `lost` lines.
    fn losses_on_stderr(&self) -> bool {
        false
    }
}

/// The `lost` message of the loss counters.
fn lost_msg(s: &LossStats) -> Message {
    Message::Lost(Lost {
        events: s.ringbuf_full,
        skb_map_full: s.skb_map_full,
        stack_failed: s.stack_failed,
        matched: s.matched,
        rate_limited: s.rate_limited,
        bytes_failed: s.bytes_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_lines_are_bounded() {
        let (tx, rx) = mpsc::channel();
        let mut input = b"{\"v\":1,\"type\":\"ping\"}\r\nok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend(b"\nnever read\n");
        read_lines(io::BufReader::with_capacity(7, &input[..]), 32, &tx);
        drop(tx);
        let got: Vec<Input> = rx.iter().collect();
        assert_eq!(
            got,
            [
                Input::Line(r#"{"v":1,"type":"ping"}"#.into()),
                Input::Line("ok".into()),
                Input::TooLong
            ]
        );
        let (tx, rx) = mpsc::channel();
        read_lines(&b"last, no newline"[..], 16, &tx);
        drop(tx);
        assert_eq!(
            rx.iter().collect::<Vec<_>>(),
            [Input::Line("last, no newline".into())]
        );
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.0-rc1+"), (6, 18));
        assert_eq!(kernel_version("5.4.0-150-generic"), (5, 4));
        assert_eq!(kernel_version("weird"), (0, 0));
    }

    /// A spec line carrying `options`, read back as the agent reads it.
    fn spec_through_the_wire(options: &nettrace_common::TraceOptions) -> Spec {
        let spec = Spec {
            options: protocol::SpecOptions {
                trace: options.clone(),
                ..protocol::SpecOptions::default()
            },
            ..Spec::default()
        };
        match Message::parse(&Message::Spec(spec).to_line()) {
            Ok(Message::Spec(spec)) => spec,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spec_options_configure_the_agent_as_the_command_line_does_the_host() {
        use clap::Parser;
        let tree = crate::load_tree(None).expect("tree");
        let (args, options) = nettrace_common::options::every_option();
        let mut argv = vec!["nettrace"];
        argv.extend(&args);
        argv.extend(["-o", "json"]);
        let cli = crate::cli::Cli::try_parse_from(&argv).expect("host command line");
        assert_eq!(cli.trace, options);
        let host_config = cli.trace.validate(&tree).expect("valid");

        let spec = spec_through_the_wire(&options);
        assert_eq!(
            spec.options.trace, options,
            "the options reach the agent unchanged"
        );
        let (config, host) = run_config(&spec, &tree).expect("valid spec");
        assert_eq!(config, host_config);
        assert_eq!(host, cli.host, "the agent runs as `nettrace -o json` does");

        // And with nothing given: the defaults on both sides.
        let cli = crate::cli::Cli::try_parse_from(["nettrace", "-o", "json"]).expect("parse");
        let (config, host) =
            run_config(&spec_through_the_wire(&cli.trace), &tree).expect("valid spec");
        assert_eq!(config, cli.trace.validate(&tree).expect("valid"));
        assert_eq!(host, cli.host);
    }

    #[test]
    fn bad_spec_options_are_refused_with_the_validators_message() {
        use nettrace_common::{OptionsError, TraceOptions};
        let tree = crate::load_tree(None).expect("tree");
        let refused = |o: nettrace_common::TraceOptions| {
            let spec = spec_through_the_wire(&o);
            let agent = run_config(&spec, &tree).map(|_| ()).expect_err("refused");
            let validator = o.validate(&tree).map(|_| ()).expect_err("refused");
            assert_eq!(format!("{agent:#}"), validator.to_string());
            validator
        };
        assert_eq!(
            refused(TraceOptions {
                stack: true,
                stack_tracers: vec!["kfree_skb".into()],
                ..TraceOptions::default()
            }),
            OptionsError::CostlyStack
        );
        assert_eq!(
            refused(TraceOptions {
                tracers: vec!["?".into()],
                ..TraceOptions::default()
            }),
            OptionsError::TracerList
        );
        assert!(matches!(
            refused(TraceOptions {
                proto: Some("nope".into()),
                ..TraceOptions::default()
            }),
            OptionsError::Value {
                option: "--proto",
                ..
            }
        ));
        assert_eq!(
            refused(TraceOptions {
                rate_limit: Some(0),
                ..TraceOptions::default()
            }),
            OptionsError::ZeroRateLimit
        );
    }
}
