//! The node agent's line protocol, version 1.
//!
//! One JSON object per line, each with `"v":1` and a `"type"`. The plugin
//! writes one [`Spec`] (`"type":"spec"`) on the agent's stdin, then `ping`
//! lines to show it is alive; the agent answers on stdout, once it has the
//! spec (so that a plugin attaching late misses nothing), with `hello`,
//! `resolved`, `ready`, then `event`, `timeline` and `lost` lines, `error`
//! lines when something goes wrong, and `bye` last. Unknown keys are ignored (additions keep version 1); an
//! unknown version or type is an error. The README documents the schema.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The protocol version this code speaks.
pub const VERSION: u64 = 1;

/// Why a protocol line could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// No `"v"` key.
    #[error("no protocol version (\"v\") in the line")]
    NoVersion,
    /// A version this code does not speak.
    #[error("unsupported protocol version {0} (this side speaks version {VERSION})")]
    Version(String),
    /// No `"type"` key.
    #[error("no message type (\"type\") in the line")]
    NoType,
    /// A known version but an unknown type, or fields of the wrong shape.
    #[error("bad {ty:?} message: {reason}")]
    Message {
        /// The `"type"` of the line.
        ty: String,
        /// What serde said.
        reason: String,
    },
}

/// One line of the protocol, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
// One message lives at a time, per line: the spec's size costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// Plugin → agent: what to trace.
    Spec(Spec),
    /// Agent → plugin, first line: who is tracing.
    Hello(Hello),
    /// Agent → plugin: what each target resolved to.
    Resolved(Resolved),
    /// Agent → plugin: the tracers are attached.
    Ready(Ready),
    /// Agent → plugin: one traced hit.
    Event(EventMsg),
    /// Agent → plugin: the events of one skb (with `timeline`).
    Timeline(TimelineMsg),
    /// Agent → plugin: loss counters (when they grow, and at the end).
    Lost(Lost),
    /// Agent → plugin: something failed.
    Error(ErrorMsg),
    /// Agent → plugin, last line.
    Bye(Bye),
    /// Plugin → agent: still here (resets the agent's idle timer).
    Ping(Ping),
}

/// A pod container to trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Container id with its runtime prefix (`containerd://…`, `cri-o://…`, `docker://…`).
    pub container_id: String,
    /// Pod uid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

pub use crate::options::TraceOptions;

/// The spec's `options`: the trace options both binaries accept (one type,
/// flattened: its keys sit beside `follow_host`), and the plugin's scoping
/// choice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecOptions {
    /// Filters, tracers and views, as `nettrace` takes them.
    #[serde(flatten)]
    pub trace: TraceOptions,
    /// Do not scope to the targets' network namespaces: follow matching
    /// packets across the host too (events there are annotated when they are
    /// on a target's host-side veth).
    pub follow_host: bool,
    /// Scope to the node's own network namespace too (bridges, overlay
    /// devices, the uplink), besides the targets': what a packet crossing
    /// nodes goes through between its pod and the wire. The plugin sets it
    /// when the traced pods are on several nodes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub node_netns: bool,
    /// Copy the packets' first bytes (`snaplen` of them) into the events
    /// (`"bytes"`): the plugin sets it for `--pcap`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pcap: bool,
}

/// Plugin → agent: what to trace, and for how long.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The containers to trace (empty: the whole node).
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Filters, tracers, views and scoping.
    #[serde(default)]
    pub options: SpecOptions,
    /// The agent stops by itself after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<u64>,
    /// Other pods on the node, resolved only to annotate events that reach
    /// them (the pod a traced packet is delivered to, say); not traced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Target>,
    /// The agent stops when no line has arrived on its stdin for this many
    /// seconds (default [`DEFAULT_IDLE_TIMEOUT_SECS`]); the plugin sends
    /// `ping` lines well within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// How long an agent waits for a line from its plugin before it stops, when
/// the spec does not say.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;

/// Plugin → agent: a keep-alive line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {}

/// The two clocks read at the same moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// CLOCK_MONOTONIC in ns (the clock of the events' `ts_ns`).
    pub monotonic_ns: u64,
    /// CLOCK_REALTIME in ns (Unix time).
    pub realtime_ns: u64,
}

impl Clock {
    /// A `ts_ns` of this clock's machine (monotonic) as Unix time in ns.
    pub fn unix_ns(&self, ts_ns: u64) -> u64 {
        let t = i128::from(ts_ns) - i128::from(self.monotonic_ns) + i128::from(self.realtime_ns);
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }
}

/// Agent → plugin, first line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `nettrace` version of the agent.
    pub agent: String,
    /// The node's kernel release (`uname -r`).
    pub kernel: String,
    /// Attach backends available: `tracepoint`, `fentry`, `kprobe`, `kprobe-multi`.
    pub backends: Vec<String>,
    /// Clocks, to put events of several nodes on one time line.
    pub clock: Clock,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): nodes that
    /// report the same one share a kernel (kind, k3d, network-namespace
    /// nodes) and each sees the others' packets. Empty from older agents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// Inode of the node's network namespace (the agent's): on a shared
    /// kernel, which node an event in a node's own namespace belongs to.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub netns: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one target resolved to (or why it did not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedTarget {
    /// The target as given.
    #[serde(flatten)]
    pub target: Target,
    /// A process of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Inode of the container's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// The container shares the host's network namespace (hostNetwork pod):
    /// only addresses and ports can scope it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Index of the host end of the container's veth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
    /// Name of the host end of the container's veth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    /// Why the host end is unknown, when it is (the target is traced anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_if_error: Option<String>,
    /// Why the target could not be resolved (then it is not traced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ResolvedTarget {
    /// The annotations of its events: in its network namespace, and on its
    /// host-side veth (with `host_ifname`, when known). `None` when it did
    /// not resolve or shares the host's network namespace.
    pub fn annotations(&self) -> Option<(Annotation, Option<Annotation>)> {
        if self.error.is_some() || self.host_network {
            return None;
        }
        let ann = Annotation {
            namespace: self.target.namespace.clone(),
            pod: self.target.pod.clone(),
            container: self.target.container.clone(),
            host_ifname: None,
        };
        let host = self.host_ifname.as_ref().map(|name| Annotation {
            host_ifname: Some(name.clone()),
            ..ann.clone()
        });
        Some((ann, host))
    }
}

/// Agent → plugin: the resolution of every target, in spec order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// One entry per target of the spec.
    pub targets: Vec<ResolvedTarget>,
}

/// How events are scoped to the targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In the kernel: packets that match in the targets' network namespaces
    /// or on their host-side veths, followed from there wherever they go.
    Kernel,
    /// Not scoped (no resolved target, hostNetwork, or `follow_host`).
    #[default]
    None,
}

/// Agent → plugin: tracing has begun.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// How many tracers are attached.
    pub tracers: usize,
    /// How events are scoped to the targets' network namespaces.
    pub scope: Scope,
}

/// Who an event belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Set when the event is on the host side, on this interface leading to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
}

/// Agent → plugin: one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMsg {
    /// The event object exactly as `nettrace -o json` prints it.
    pub event: Value,
    /// The pod it belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Annotation>,
}

/// Agent → plugin: the events of one skb context, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineMsg {
    /// The skb address, 16 hex digits.
    pub skb: String,
    /// The events.
    pub events: Vec<EventMsg>,
}

/// Agent → plugin: loss counters (totals since the start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// Events lost because the ring buffer was full.
    pub events: u64,
    /// skbs not remembered by `skb_mode` because its map was full.
    pub skb_map_full: u64,
    /// Stacks that could not be taken.
    pub stack_failed: u64,
    /// Events that matched the filter.
    pub matched: u64,
    /// Events suppressed by the rate limit.
    pub rate_limited: u64,
    /// Events sent without the packet bytes `pcap` asked for (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_failed: u64,
}

/// Agent → plugin: an error (the agent may go on, or say `bye` next).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// One line.
    pub message: String,
}

/// Why the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ByeReason {
    /// `deadline_secs` elapsed.
    Deadline,
    /// SIGINT or SIGTERM.
    Signal,
    /// Stdin closed: the plugin is gone.
    InputClosed,
    /// `count` reached.
    Count,
    /// A fatal error (reported in an `error` line before).
    Error,
    /// No line from the plugin within the idle timeout (or no spec within
    /// it): the plugin is presumed gone.
    Idle,
}

/// Agent → plugin, last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Why.
    pub reason: ByeReason,
}

impl Message {
    /// Serializes the message as one line (without the newline), `"v"` first.
    pub fn to_line(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        let body = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        match body.strip_prefix('{') {
            Some(rest) if rest != "}" => format!("{{\"v\":{VERSION},{rest}"),
            _ => format!("{{\"v\":{VERSION}}}"),
        }
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Result<Message, ProtocolError> {
        let mut value: Value =
            serde_json::from_str(line.trim()).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| ProtocolError::NotJson("not an object".to_string()))?;
        match obj.remove("v") {
            None => return Err(ProtocolError::NoVersion),
            Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
            Some(other) => return Err(ProtocolError::Version(other.to_string())),
        }
        let ty = match obj.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(ProtocolError::NoType),
        };
        serde_json::from_value(value).map_err(|e| ProtocolError::Message {
            ty,
            reason: e.to_string(),
        })
    }
}

/// An `event` line built around an event object already serialized as
/// `-o json` prints it (kept byte for byte, key order included); parses
/// back as [`Message::Event`].
pub fn event_line(event_json: &str, annotation: Option<&Annotation>) -> String {
    let mut line = format!("{{\"v\":{VERSION},\"type\":\"event\",");
    push_event_fields(&mut line, event_json, annotation);
    line.push('}');
    line
}

/// A `timeline` line from serialized event objects (see [`event_line`]).
pub fn timeline_line<'a, I>(skb: u64, events: I) -> String
where
    I: IntoIterator<Item = (&'a str, Option<&'a Annotation>)>,
{
    let mut line =
        format!("{{\"v\":{VERSION},\"type\":\"timeline\",\"skb\":\"{skb:016x}\",\"events\":[");
    for (i, (event_json, annotation)) in events.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('{');
        push_event_fields(&mut line, event_json, annotation);
        line.push('}');
    }
    line.push_str("]}");
    line
}

fn push_event_fields(line: &mut String, event_json: &str, annotation: Option<&Annotation>) {
    line.push_str("\"event\":");
    line.push_str(event_json.trim_end());
    if let Some(a) = annotation {
        line.push_str(",\"annotation\":");
        // Serializing an Annotation (strings only) cannot fail.
        line.push_str(&serde_json::to_string(a).unwrap_or_else(|_| "null".to_string()));
    }
}

/// The longest line an agent reads on its stdin (the spec, pings): 1 MiB,
/// its newline not counted. A spec naming every pod of a large node is a
/// few tens of KiB.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The longest line the plugin reads from an agent: 16 MiB, its newline not
/// counted. A `timeline` line carries every event of one skb, stacks
/// included, so it may be far longer than any other line.
pub const MAX_AGENT_LINE_BYTES: usize = 16 << 20;

// The plugin reads whatever an agent may read.
const _: () = assert!(MAX_LINE_BYTES <= MAX_AGENT_LINE_BYTES);

/// What [`LineSplitter::push`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A whole line: [`LineSplitter::line`] holds it.
    Line,
    /// The current line went past the limit. What was kept of it is
    /// dropped; the rest of it, up to its newline, is skipped by later
    /// pushes (a caller may also just stop reading).
    TooLong,
}

/// Cuts a byte stream into lines, holding at most `limit` bytes of a line:
/// memory stays bounded whatever the other side sends. Pure: the caller
/// reads (`BufRead::fill_buf`, or its async twin), pushes what it got, and
/// consumes what was used.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    buf: Vec<u8>,
    limit: usize,
    /// `buf` holds a whole line (cleared at the next push).
    complete: bool,
    /// Inside a line that went past the limit: skip to its newline.
    skipping: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `limit` bytes (newline not counted).
    pub fn new(limit: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            limit,
            complete: false,
            skipping: false,
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes bytes of `input` up to and including the first newline.
    /// Returns how many bytes were used (the caller consumes them) and
    /// whether a line ended ([`Split::Line`]) or went past the limit.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Split>) {
        if self.complete {
            self.buf.clear();
            self.complete = false;
        }
        let newline = input.iter().position(|&b| b == b'\n');
        if self.skipping {
            return match newline {
                Some(i) => {
                    self.skipping = false;
                    (i + 1, None)
                }
                None => (input.len(), None),
            };
        }
        let take = newline.unwrap_or(input.len());
        if self.buf.len() + take > self.limit {
            self.buf.clear();
            self.buf.shrink_to(64 << 10);
            return match newline {
                Some(i) => (i + 1, Some(Split::TooLong)),
                None => {
                    self.skipping = true;
                    (input.len(), Some(Split::TooLong))
                }
            };
        }
        self.buf.extend_from_slice(&input[..take]);
        match newline {
            Some(i) => {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                self.complete = true;
                (i + 1, Some(Split::Line))
            }
            None => (input.len(), None),
        }
    }

    /// At the end of the input: [`Split::Line`] when a last line had no
    /// newline (then [`LineSplitter::line`] holds it).
    pub fn finish(&mut self) -> Option<Split> {
        if self.complete {
            self.buf.clear();
            self.complete = false;
        }
        if self.skipping || self.buf.is_empty() {
            self.skipping = false;
            return None;
        }
        self.complete = true;
        Some(Split::Line)
    }

    /// The line found by the last push or finish that returned
    /// [`Split::Line`] (without its newline).
    pub fn line(&self) -> &[u8] {
        if self.complete {
            &self.buf
        } else {
            &[]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_convert_to_unix_time() {
        let c = Clock {
            monotonic_ns: 5_000,
            realtime_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(c.unix_ns(5_100), 1_700_000_000_000_000_100);
        assert_eq!(c.unix_ns(4_900), 1_699_999_999_999_999_900);
    }
    use serde_json::json;

    fn target() -> Target {
        Target {
            namespace: "default".into(),
            pod: "a".into(),
            container: "app".into(),
            container_id: "containerd://0123abcd".into(),
            pod_uid: Some("9f1c-uid".into()),
        }
    }

    fn all_messages() -> Vec<Message> {
        let event = json!({"type":"event","ts_ns":1u64 << 60,"tracer":"ip_rcv","skb":"ffff888100000000",
            "pkt":{"l3":"ipv4","saddr":"10.0.0.1"},"summary":"ICMP: 10.0.0.1 -> 10.0.0.2"});
        let ann = Annotation {
            namespace: "default".into(),
            pod: "a".into(),
            container: "app".into(),
            host_ifname: Some("veth1234".into()),
        };
        vec![
            Message::Spec(Spec {
                targets: vec![target()],
                options: SpecOptions {
                    trace: TraceOptions {
                        proto: Some("icmp".into()),
                        addr: Some("10.0.0.2".into()),
                        port: Some("53".into()),
                        tracers: vec!["link".into(), "kfree_skb".into()],
                        detail: true,
                        timeline: true,
                        count: Some(3),
                        skb_mode: true,
                        ret: true,
                        stack: true,
                        stack_tracers: vec!["kfree_skb".into()],
                        backend: crate::options::Backend::Tracepoint,
                        rate_limit: Some(1000),
                        raw_tp: true,
                        snaplen: Some(200),
                        ..TraceOptions::default()
                    },
                    follow_host: true,
                    node_netns: true,
                    pcap: true,
                },
                deadline_secs: Some(60),
                peers: vec![Target {
                    pod: "b".into(),
                    ..target()
                }],
                idle_timeout_secs: Some(30),
            }),
            Message::Spec(Spec::default()),
            Message::Ping(Ping {}),
            Message::Hello(Hello {
                agent: "0.1.0".into(),
                kernel: "6.18.0".into(),
                backends: vec!["tracepoint".into(), "kprobe".into()],
                clock: Clock {
                    monotonic_ns: u64::MAX,
                    realtime_ns: 1_764_000_000_000_000_000,
                },
                boot_id: "5c1bd8a4-7b0e-4c52-9f0d-2f1e3b6a9c01".into(),
                netns: 4026531840,
            }),
            Message::Resolved(Resolved {
                targets: vec![
                    ResolvedTarget {
                        target: target(),
                        pid: Some(42),
                        netns: Some(4026532000),
                        host_network: false,
                        host_ifindex: Some(7),
                        host_ifname: Some("veth1234".into()),
                        host_if_error: None,
                        error: None,
                    },
                    ResolvedTarget {
                        target: Target::default(),
                        host_network: true,
                        host_if_error: Some("no peer".into()),
                        error: Some("no process".into()),
                        ..ResolvedTarget::default()
                    },
                ],
            }),
            Message::Ready(Ready {
                tracers: 12,
                scope: Scope::Kernel,
            }),
            Message::Event(EventMsg {
                event: event.clone(),
                annotation: Some(ann.clone()),
            }),
            Message::Event(EventMsg {
                event: event.clone(),
                annotation: None,
            }),
            Message::Timeline(TimelineMsg {
                skb: "ffff888100000000".into(),
                events: vec![EventMsg {
                    event,
                    annotation: Some(ann),
                }],
            }),
            Message::Lost(Lost {
                events: 1,
                skb_map_full: 2,
                stack_failed: 3,
                matched: 4,
                rate_limited: 5,
                bytes_failed: 6,
            }),
            Message::Error(ErrorMsg {
                message: "boom".into(),
            }),
            Message::Bye(Bye {
                reason: ByeReason::InputClosed,
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_exactly() {
        for msg in all_messages() {
            let line = msg.to_line();
            assert!(line.starts_with("{\"v\":1,\"type\":\""), "{line}");
            assert!(!line.contains('\n'));
            let back = Message::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back, msg, "{line}");
            assert_eq!(back.to_line(), line);
        }
    }

    #[test]
    fn prebuilt_event_lines_parse_as_messages() {
        let raw = r#"{"type":"event","tracer":"ip_rcv","ts_ns":5,"skb":"00000000000000ff"}"#;
        let ann = Annotation {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
            host_ifname: None,
        };
        let line = event_line(&format!("{raw}\n"), Some(&ann));
        assert!(line.contains(raw), "{line}");
        let expected = EventMsg {
            event: serde_json::from_str(raw).unwrap_or_default(),
            annotation: Some(ann.clone()),
        };
        assert_eq!(Message::parse(&line), Ok(Message::Event(expected.clone())));
        let line = event_line(raw, None);
        assert_eq!(
            Message::parse(&line),
            Ok(Message::Event(EventMsg {
                annotation: None,
                ..expected.clone()
            }))
        );
        let line = timeline_line(255, [(raw, Some(&ann)), (raw, Some(&ann))]);
        assert_eq!(
            Message::parse(&line),
            Ok(Message::Timeline(TimelineMsg {
                skb: "00000000000000ff".into(),
                events: vec![expected.clone(), expected],
            }))
        );
    }

    #[test]
    fn wire_shapes_are_stable() {
        let bye = Message::Bye(Bye {
            reason: ByeReason::InputClosed,
        });
        assert_eq!(
            bye.to_line(),
            r#"{"v":1,"type":"bye","reason":"input-closed"}"#
        );
        let ready = Message::Ready(Ready {
            tracers: 3,
            scope: Scope::Kernel,
        });
        assert_eq!(
            ready.to_line(),
            r#"{"v":1,"type":"ready","tracers":3,"scope":"kernel"}"#
        );
    }

    #[test]
    fn spec_options_keep_their_keys_flat() {
        // The README's example: the trace options and follow_host side by side.
        let o: SpecOptions = serde_json::from_str(
            r#"{"proto":"icmp","addr":"10.250.240.1","tracers":["net_dev_queue","kfree_skb"],"follow_host":true}"#,
        )
        .expect("parse");
        assert!(o.follow_host);
        assert_eq!(o.trace.addr.as_deref(), Some("10.250.240.1"));
        assert_eq!(o.trace.tracers, ["net_dev_queue", "kfree_skb"]);
        let v = serde_json::to_value(&o).expect("json");
        assert_eq!(v["proto"], "icmp");
        assert_eq!(v["follow_host"], true);
        assert!(v.get("trace").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<SpecOptions>(v).expect("back"), o);
    }

    #[test]
    fn minimal_spec_parses_with_defaults() {
        let line = r#"{"v":1,"type":"spec","targets":[{"namespace":"n","pod":"p","container":"c","container_id":"docker://ab"}],"options":{"proto":"icmp"},"extra":true}"#;
        let Ok(Message::Spec(spec)) = Message::parse(line) else {
            panic!("not a spec");
        };
        assert_eq!(spec.targets.len(), 1);
        assert_eq!(spec.targets[0].pod_uid, None);
        assert_eq!(spec.options.trace.proto.as_deref(), Some("icmp"));
        assert!(!spec.options.trace.timeline && !spec.options.follow_host);
        assert_eq!(spec.deadline_secs, None);
    }

    #[test]
    fn malformed_lines_give_clear_errors() {
        assert!(matches!(
            Message::parse("not json"),
            Err(ProtocolError::NotJson(_))
        ));
        assert!(matches!(
            Message::parse("[1]"),
            Err(ProtocolError::NotJson(_))
        ));
        assert_eq!(
            Message::parse(r#"{"type":"bye","reason":"signal"}"#),
            Err(ProtocolError::NoVersion)
        );
        assert_eq!(
            Message::parse(r#"{"v":2,"type":"bye","reason":"signal"}"#),
            Err(ProtocolError::Version("2".into()))
        );
        assert_eq!(
            Message::parse(r#"{"v":"1","type":"bye"}"#),
            Err(ProtocolError::Version("\"1\"".into()))
        );
        assert_eq!(Message::parse(r#"{"v":1}"#), Err(ProtocolError::NoType));
        let err = Message::parse(r#"{"v":1,"type":"nope"}"#).unwrap_err();
        assert!(matches!(&err, ProtocolError::Message { ty, .. } if ty == "nope"));
        let err = Message::parse(r#"{"v":1,"type":"spec","targets":[{"pod":"p"}]}"#).unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        let err = Message::parse(r#"{"v":1,"type":"bye","reason":"tired"}"#).unwrap_err();
        assert!(err.to_string().starts_with("bad \"bye\" message"), "{err}");
    }

    /// Feeds `input` in pieces of `step` bytes; the lines (lossy) and
    /// `None` for each line past the limit.
    fn split(limit: usize, input: &[u8], step: usize) -> (Vec<Option<String>>, usize) {
        let mut s = LineSplitter::new(limit);
        let mut out = Vec::new();
        let mut most = 0;
        for piece in input.chunks(step) {
            let mut at = 0;
            while at < piece.len() {
                let (used, got) = s.push(&piece[at..]);
                assert!(used > 0, "progress");
                at += used;
                most = most.max(s.buf.len());
                match got {
                    Some(Split::Line) => out.push(Some(String::from_utf8_lossy(s.line()).into())),
                    Some(Split::TooLong) => out.push(None),
                    None => {}
                }
            }
        }
        if s.finish() == Some(Split::Line) {
            out.push(Some(String::from_utf8_lossy(s.line()).into()));
        }
        (out, most)
    }

    #[test]
    fn lines_are_split_whatever_the_pieces() {
        let input = b"{\"a\":1}\n\r\n\nsecond\r\nlast";
        for step in [1, 2, 3, 7, 100] {
            let (lines, _) = split(64, input, step);
            assert_eq!(
                lines,
                [
                    Some("{\"a\":1}"),
                    Some(""),
                    Some(""),
                    Some("second"),
                    Some("last")
                ]
                .map(|l| l.map(String::from)),
                "pieces of {step}"
            );
        }
    }

    #[test]
    fn a_line_past_the_limit_is_reported_once_and_skipped_in_bounded_memory() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend(b"\nafter\n12345678\n123456789");
        for step in [1, 5, 8, 9, 4096, 20_000] {
            let (lines, most) = split(8, &input, step);
            assert_eq!(
                lines,
                [Some("short"), None, Some("after"), Some("12345678"), None]
                    .map(|l| l.map(String::from)),
                "pieces of {step}"
            );
            assert!(most <= 8, "held {most} bytes");
        }
        // A line of exactly the limit passes; one more byte does not.
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"abcd\n"), (5, Some(Split::Line)));
        assert_eq!(s.line(), b"abcd");
        assert_eq!(s.push(b"abcde"), (5, Some(Split::TooLong)));
        assert_eq!(s.line(), b"");
        assert_eq!(s.push(b"fg\nhi\n"), (3, None));
        assert_eq!(s.push(b"hi\n"), (3, Some(Split::Line)));
        assert_eq!(s.line(), b"hi");
        assert_eq!(s.finish(), None);
    }
}
