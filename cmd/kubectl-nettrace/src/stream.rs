//! Talking to one agent: the spec it gets, attaching to its pod, keep-alive
//! pings, and its stdout lines read into [`Incoming`] messages.
//!
//! The pings have a task of their own, so that nothing on the reading side
//! (a busy session, a full channel) delays them; and the lines are read with
//! a bound on their length, so that an agent cannot make the plugin hold an
//! unbounded line in memory.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use nettrace_common::protocol::{
    Annotation, ByeReason, Hello, LineSplitter, Lost, Message, Ping, Ready, Resolved, Spec,
    SpecOptions, Split, Target, MAX_AGENT_LINE_BYTES, MAX_LINE_BYTES, VERSION,
};
use nettrace_common::remote::RemoteEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::agent_pod::CONTAINER;
use crate::target::NodePlan;

/// How often, at most, the plugin tells the agent it is still there.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// How often to ping an agent whose idle timeout is `idle_secs`: four times
/// within it, at most every [`PING_EVERY`], at least every 250 ms.
pub fn ping_every(idle_secs: u64) -> Duration {
    (Duration::from_secs(idle_secs) / 4).clamp(Duration::from_millis(250), PING_EVERY)
}

/// The spec for one node's agent.
pub fn build_spec(
    plan: &NodePlan,
    peers: Vec<Target>,
    options: &SpecOptions,
    timeout: Duration,
    idle_secs: u64,
) -> Spec {
    Spec {
        targets: if plan.whole_node {
            Vec::new()
        } else {
            plan.targets.clone()
        },
        options: options.clone(),
        deadline_secs: Some(timeout.as_secs()),
        peers,
        idle_timeout_secs: Some(idle_secs),
    }
}

/// One event as received: its object text (kept byte for byte for JSON
/// output), the same parsed for text output, and the pod it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The event object exactly as the agent sent it.
    pub raw: String,
    /// The same, parsed.
    pub event: RemoteEvent,
    /// The pod it belongs to, when known.
    pub annotation: Option<Annotation>,
}

/// What an agent said (or what happened to its connection).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `hello`.
    Hello(Hello),
    /// `resolved`.
    Resolved(Resolved),
    /// `ready`.
    Ready(Ready),
    /// `event`.
    Event(Box<Item>),
    /// `timeline`.
    Timeline {
        /// skb address.
        skb: String,
        /// Its events.
        events: Vec<Item>,
    },
    /// `lost`.
    Lost(Lost),
    /// `error`.
    Error(String),
    /// `bye`.
    Bye(ByeReason),
    /// A line the agent wrote on stderr.
    Stderr(String),
    /// A stdout line longer than the limit (given): a protocol error.
    TooLong(usize),
    /// A stdout line that is not protocol v1.
    Garbled {
        /// The line.
        line: String,
        /// What is wrong with it.
        why: String,
    },
    /// The attach stream ended (with the error, when it broke).
    Closed(Option<String>),
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(default)]
    annotation: Option<Annotation>,
}

/// An `event` or `timeline` line, read in one pass with its event objects
/// kept as text (other types leave the fields empty).
#[derive(Deserialize)]
struct WireLine<'a> {
    v: u64,
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default)]
    annotation: Option<Annotation>,
    #[serde(default)]
    skb: Option<String>,
    #[serde(default, borrow)]
    events: Option<Vec<WireEvent<'a>>>,
}

fn item(w: &WireEvent<'_>) -> Result<Item, serde_json::Error> {
    Ok(Item {
        raw: w.event.get().to_string(),
        event: RemoteEvent::parse(w.event.get())?,
        annotation: w.annotation.clone(),
    })
}

/// Reads one stdout line of an agent.
pub fn parse_line(line: &str) -> Incoming {
    let garbled = |why: String| Incoming::Garbled {
        line: line.chars().take(200).collect(),
        why,
    };
    // Events are nearly all the traffic: read them in one pass, their
    // objects kept as text. Every other line, and an event line that does
    // not read so, goes through Message::parse and its errors.
    if let Ok(w) = serde_json::from_str::<WireLine<'_>>(line) {
        match (w.v, w.ty, w.event, w.skb, w.events) {
            (VERSION, "event", Some(event), _, _) => {
                let wire = WireEvent {
                    event,
                    annotation: w.annotation,
                };
                return match item(&wire) {
                    Ok(i) => Incoming::Event(Box::new(i)),
                    Err(e) => garbled(e.to_string()),
                };
            }
            (VERSION, "timeline", _, Some(skb), Some(events)) => {
                return match events.iter().map(item).collect::<Result<Vec<_>, _>>() {
                    Ok(events) => Incoming::Timeline { skb, events },
                    Err(e) => garbled(e.to_string()),
                };
            }
            _ => {}
        }
    }
    let msg = match Message::parse(line) {
        Ok(m) => m,
        Err(e) => return garbled(e.to_string()),
    };
    match msg {
        Message::Hello(h) => Incoming::Hello(h),
        Message::Resolved(r) => Incoming::Resolved(r),
        Message::Ready(r) => Incoming::Ready(r),
        Message::Lost(l) => Incoming::Lost(l),
        Message::Error(e) => Incoming::Error(e.message),
        Message::Bye(b) => Incoming::Bye(b.reason),
        // Read by Message::parse but not as a wire line: a shape the fast
        // path does not know, so no text to pass on unchanged.
        Message::Event(_) | Message::Timeline(_) => {
            garbled("an event line that cannot be passed on unchanged".into())
        }
        Message::Spec(_) | Message::Ping(_) => garbled("a plugin-to-agent message".into()),
    }
}

/// A message from the agent of node number `node`.
#[derive(Debug)]
pub struct NodeMsg {
    /// Index of the node.
    pub node: usize,
    /// What it said.
    pub msg: Incoming,
}

/// Reads the lines of `input`, each at most `limit` bytes long, into
/// messages for `tx` (through `what`); a longer line becomes
/// [`Incoming::TooLong`] and is skipped up to its newline, in bounded
/// memory. Returns at the end of input (with the read error, if any) or
/// when nobody listens any more.
pub async fn read_lines<R: AsyncRead + Unpin>(
    input: R,
    node: usize,
    limit: usize,
    tx: &mpsc::Sender<NodeMsg>,
    what: impl Fn(&[u8]) -> Option<Incoming>,
) -> Option<String> {
    let mut input = BufReader::with_capacity(64 << 10, input);
    let mut split = LineSplitter::new(limit);
    let mut ended = false;
    while !ended {
        let got = match input.fill_buf().await {
            Ok([]) => {
                ended = true;
                split.finish()
            }
            Ok(bytes) => {
                let (used, got) = split.push(bytes);
                input.consume(used);
                got
            }
            Err(e) => return Some(e.to_string()),
        };
        let msg = match got {
            None => continue,
            Some(Split::Line) => match what(split.line()) {
                Some(m) => m,
                None => continue,
            },
            Some(Split::TooLong) => Incoming::TooLong(limit),
        };
        if tx.send(NodeMsg { node, msg }).await.is_err() {
            return None;
        }
    }
    None
}

/// An agent's stdout line as a message (blank lines are skipped).
fn stdout_line(line: &[u8]) -> Option<Incoming> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(match std::str::from_utf8(line) {
        Ok(l) => parse_line(l),
        Err(e) => Incoming::Garbled {
            line: String::from_utf8_lossy(line).chars().take(200).collect(),
            why: e.to_string(),
        },
    })
}

/// An agent's stderr line as a message.
fn stderr_line(line: &[u8]) -> Option<Incoming> {
    Some(Incoming::Stderr(String::from_utf8_lossy(line).into_owned()))
}

/// Pings the agent every `every` until `stop` turns true (or its sender
/// goes), then closes the agent's stdin; gives up when stdin cannot be
/// written. Nothing else is awaited here: only the connection itself can
/// hold a ping back.
pub async fn keep_alive<W: AsyncWrite + Unpin>(
    mut stdin: W,
    every: Duration,
    stop: watch::Receiver<bool>,
) {
    let ping = format!("{}\n", Message::Ping(Ping {}).to_line());
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&stop) => break,
            _ = ticker.tick() => {
                let sent = tokio::select! {
                    r = async {
                        stdin.write_all(ping.as_bytes()).await?;
                        stdin.flush().await
                    } => r.is_ok(),
                    _ = stopped(&stop) => break,
                };
                if !sent {
                    return;
                }
            }
        }
    }
    // closing the writer closes the agent's stdin
    let _ = stdin.shutdown().await;
}

/// Resolves once `stop` is true, or its sender is gone.
async fn stopped(stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    let _ = stop.wait_for(|s| *s).await;
}

/// Attaches to an agent pod and writes its spec; the returned tasks stream
/// its lines to `tx` until the connection ends, and ping it every
/// `ping_every` (on a task of their own), closing its stdin when `stop`
/// turns true.
pub async fn attach(
    api: &Api<Pod>,
    pod: &str,
    node: usize,
    spec: &Spec,
    ping_every: Duration,
    stop: watch::Receiver<bool>,
    tx: mpsc::Sender<NodeMsg>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let ap = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(true)
        .stderr(true);
    let ns = api.namespace().unwrap_or("").to_string();
    let mut attached = match api.attach(pod, &ap).await {
        Ok(a) => a,
        Err(kube::Error::UpgradeConnection(
            kube::client::UpgradeConnectionError::ProtocolSwitch(status),
        )) if status.as_u16() == 403 => anyhow::bail!(
            "not allowed to attach to agent pod {ns}/{pod} (403 Forbidden): the pods/attach permission (verbs create and get) is missing in namespace \"{ns}\"; see manifests/rbac.yaml"
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot attach to agent pod {ns}/{pod}"))
        }
    };
    let stdin = attached.stdin();
    let stdout = attached
        .stdout()
        .with_context(|| format!("no stdout from agent pod {ns}/{pod}"))?;
    let line = format!("{}\n", Message::Spec(spec.clone()).to_line());
    let mut tasks = Vec::new();
    if let Some(mut w) = stdin {
        w.write_all(line.as_bytes())
            .await
            .with_context(|| format!("cannot send the spec to agent pod {ns}/{pod}"))?;
        w.flush().await.ok();
        tasks.push(tokio::spawn(keep_alive(w, ping_every, stop)));
    }
    if let Some(stderr) = attached.stderr() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            read_lines(stderr, node, MAX_LINE_BYTES, &tx, stderr_line).await;
        }));
    }
    let pinger = tasks.first().map(|t| t.abort_handle());
    tasks.push(tokio::spawn(async move {
        let closed = read_lines(stdout, node, MAX_AGENT_LINE_BYTES, &tx, stdout_line).await;
        // the agent's output ended: its stdin goes too
        if let Some(p) = pinger {
            p.abort();
        }
        let status = attached.join().await.err().map(|e| e.to_string());
        let _ = tx
            .send(NodeMsg {
                node,
                msg: Incoming::Closed(closed.or(status)),
            })
            .await;
    }));
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettrace_common::protocol::Scope;

    #[test]
    fn the_spec_carries_targets_peers_options_and_deadlines() {
        let t = Target {
            namespace: "shop".into(),
            pod: "client".into(),
            container: "app".into(),
            container_id: "containerd://abc".into(),
            pod_uid: None,
        };
        let plan = NodePlan {
            targets: vec![t.clone()],
            whole_node: false,
            labels: vec!["pod/shop/client".into()],
        };
        let opts = SpecOptions {
            trace: nettrace_common::TraceOptions {
                proto: Some("icmp".into()),
                count: Some(2),
                ..nettrace_common::TraceOptions::default()
            },
            ..SpecOptions::default()
        };
        let spec = build_spec(&plan, vec![t.clone()], &opts, Duration::from_secs(3600), 60);
        assert_eq!(spec.targets, std::slice::from_ref(&t));
        assert_eq!(spec.peers, std::slice::from_ref(&t));
        assert_eq!(spec.deadline_secs, Some(3600));
        assert_eq!(spec.idle_timeout_secs, Some(60));
        assert_eq!(ping_every(60), PING_EVERY);
        assert_eq!(ping_every(5), Duration::from_millis(1250));
        assert_eq!(ping_every(1), Duration::from_millis(250));
        assert_eq!(ping_every(3600), PING_EVERY);
        assert_eq!(spec.options, opts);
        let line = Message::Spec(spec).to_line();
        assert!(
            line.starts_with(r#"{"v":1,"type":"spec","targets":[{"namespace":"shop""#),
            "{line}"
        );
        let whole = NodePlan {
            whole_node: true,
            ..plan
        };
        let whole = build_spec(&whole, vec![t], &opts, Duration::from_secs(5), 7);
        assert!(whole.targets.is_empty());
        assert_eq!(whole.idle_timeout_secs, Some(7));
        assert_eq!(Message::Ping(Ping {}).to_line(), r#"{"v":1,"type":"ping"}"#);
    }

    #[test]
    fn agent_lines_become_messages() {
        let ev = r#"{"type":"event","time":"1.000000","ts_ns":1000000000,"tracer":"ip_rcv","group":"ip-in","skb":"ffff888100000000","netns":1,"ifindex":2,"ifname":"eth0","pid":3,"comm":"ping","len":84,"pkt":{"l3":"ipv4"},"summary":"ICMP: a -> b"}"#;
        let line = format!(
            r#"{{"v":1,"type":"event","event":{ev},"annotation":{{"namespace":"shop","pod":"client","container":"app"}}}}"#
        );
        let Incoming::Event(item) = parse_line(&line) else {
            panic!("not an event");
        };
        assert_eq!(item.raw, ev, "kept byte for byte");
        assert_eq!(item.event.tracer, "ip_rcv");
        assert_eq!(item.annotation.map(|a| a.pod), Some("client".into()));
        let tl = format!(
            r#"{{"v":1,"type":"timeline","skb":"ffff888100000000","events":[{{"event":{ev}}},{{"event":{ev}}}]}}"#
        );
        let Incoming::Timeline { skb, events } = parse_line(&tl) else {
            panic!("not a timeline");
        };
        assert_eq!(skb, "ffff888100000000");
        assert_eq!(events.len(), 2);
        assert!(events[1].annotation.is_none());
        assert_eq!(
            parse_line(r#"{"v":1,"type":"ready","tracers":3,"scope":"kernel"}"#),
            Incoming::Ready(Ready {
                tracers: 3,
                scope: Scope::Kernel
            })
        );
        assert_eq!(
            parse_line(r#"{"v":1,"type":"bye","reason":"idle"}"#),
            Incoming::Bye(ByeReason::Idle)
        );
        assert!(matches!(
            parse_line("panic: oops"),
            Incoming::Garbled { .. }
        ));
        assert!(matches!(
            parse_line(r#"{"v":2,"type":"bye"}"#),
            Incoming::Garbled { .. }
        ));
        assert!(matches!(
            parse_line(r#"{"v":1,"type":"ping"}"#),
            Incoming::Garbled { .. }
        ));
        // event lines with a wrong version, no event, or an event that is
        // not an object
        for bad in [
            format!(r#"{{"v":2,"type":"event","event":{ev}}}"#),
            r#"{"v":1,"type":"event"}"#.to_string(),
            r#"{"v":1,"type":"event","event":"x"}"#.to_string(),
            r#"{"v":1,"type":"timeline","skb":"ff","events":[{"event":7}]}"#.to_string(),
        ] {
            assert!(
                matches!(parse_line(&bad), Incoming::Garbled { .. }),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn agent_lines_are_read_with_a_bound() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut input = b"{\"v\":1,\"type\":\"bye\",\"reason\":\"idle\"}\r\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 << 20));
        input.extend(b"\n\xff\xfe\n{\"v\":1,\"type\":\"bye\",\"reason\":\"count\"}");
        let closed = read_lines(&input[..], 3, 1 << 20, &tx, stdout_line).await;
        assert_eq!(closed, None);
        drop(tx);
        let mut got = Vec::new();
        while let Some(m) = rx.recv().await {
            assert_eq!(m.node, 3);
            got.push(m.msg);
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], Incoming::Bye(ByeReason::Idle));
        assert_eq!(got[1], Incoming::TooLong(1 << 20));
        assert!(
            matches!(&got[2], Incoming::Garbled { why, .. } if why.contains("utf-8")),
            "{:?}",
            got[2]
        );
        assert_eq!(got[3], Incoming::Bye(ByeReason::Count));
    }

    #[tokio::test(start_paused = true)]
    async fn pings_go_out_on_their_own_and_stop_closes_stdin() {
        let (w, r) = tokio::io::duplex(4096);
        let (stop_tx, stop) = watch::channel(false);
        let pinger = tokio::spawn(keep_alive(w, Duration::from_secs(2), stop));
        tokio::time::sleep(Duration::from_millis(7100)).await;
        stop_tx.send(true).unwrap_or_else(|e| panic!("{e}"));
        pinger.await.unwrap_or_else(|e| panic!("{e}"));
        let mut lines = BufReader::new(r).lines();
        let mut pings = 0;
        while let Ok(Some(l)) = lines.next_line().await {
            assert_eq!(l, r#"{"v":1,"type":"ping"}"#);
            pings += 1;
        }
        assert_eq!(pings, 3, "at 2, 4 and 6 s, then end of input");
    }
}
