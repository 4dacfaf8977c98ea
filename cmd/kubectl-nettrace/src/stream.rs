//! Talking to one agent: the spec it gets, attaching to its pod, keep-alive
//! pings, and its stdout lines read into [`Incoming`] messages.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use nettrace_common::protocol::{
    Annotation, ByeReason, Hello, Lost, Message, Ping, Ready, Resolved, Spec, Target, TraceOptions,
    DEFAULT_IDLE_TIMEOUT_SECS, VERSION,
};
use nettrace_common::remote::RemoteEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::agent_pod::CONTAINER;
use crate::target::NodePlan;

/// How often the plugin tells the agent it is still there.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// The spec for one node's agent.
pub fn build_spec(
    plan: &NodePlan,
    peers: Vec<Target>,
    options: &TraceOptions,
    timeout: Duration,
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
        idle_timeout_secs: Some(DEFAULT_IDLE_TIMEOUT_SECS),
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

/// Attaches to an agent pod and writes its spec; the returned task streams
/// its lines to `tx` until the connection ends, pinging every
/// [`PING_EVERY`], and closes the agent's stdin when `stop` turns true.
pub async fn attach(
    api: &Api<Pod>,
    pod: &str,
    node: usize,
    spec: &Spec,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::Sender<NodeMsg>,
) -> Result<tokio::task::JoinHandle<()>> {
    let ap = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(true)
        .stderr(true);
    let ns = api.namespace().unwrap_or("").to_string();
    let mut attached = api
        .attach(pod, &ap)
        .await
        .with_context(|| format!("cannot attach to agent pod {ns}/{pod}"))?;
    let mut stdin = attached.stdin();
    let stdout = attached
        .stdout()
        .with_context(|| format!("no stdout from agent pod {ns}/{pod}"))?;
    let line = format!("{}\n", Message::Spec(spec.clone()).to_line());
    if let Some(w) = stdin.as_mut() {
        w.write_all(line.as_bytes())
            .await
            .with_context(|| format!("cannot send the spec to agent pod {ns}/{pod}"))?;
        w.flush().await.ok();
    }
    if let Some(stderr) = attached.stderr() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx
                    .send(NodeMsg {
                        node,
                        msg: Incoming::Stderr(l),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let ping = format!("{}\n", Message::Ping(Ping {}).to_line());
    Ok(tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let closed = loop {
            tokio::select! {
                l = lines.next_line() => match l {
                    Ok(Some(l)) if l.trim().is_empty() => {}
                    Ok(Some(l)) => {
                        if tx.send(NodeMsg { node, msg: parse_line(&l) }).await.is_err() {
                            break None;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                },
                _ = ticker.tick(), if stdin.is_some() => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(ping.as_bytes()).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                r = stop.changed(), if stdin.is_some() => {
                    if r.is_err() || *stop.borrow() {
                        // dropping the writer closes the agent's stdin
                        if let Some(mut w) = stdin.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                }
            }
        };
        drop(stdin);
        let status = attached.join().await.err().map(|e| e.to_string());
        let _ = tx
            .send(NodeMsg {
                node,
                msg: Incoming::Closed(closed.or(status)),
            })
            .await;
    }))
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
        let opts = TraceOptions {
            proto: Some("icmp".into()),
            count: Some(2),
            ..TraceOptions::default()
        };
        let spec = build_spec(&plan, vec![t.clone()], &opts, Duration::from_secs(3600));
        assert_eq!(spec.targets, std::slice::from_ref(&t));
        assert_eq!(spec.peers, std::slice::from_ref(&t));
        assert_eq!(spec.deadline_secs, Some(3600));
        assert_eq!(spec.idle_timeout_secs, Some(60));
        assert!(
            PING_EVERY.as_secs() * 3 < 60,
            "pings well within the idle timeout"
        );
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
        assert!(build_spec(&whole, vec![t], &opts, Duration::from_secs(5))
            .targets
            .is_empty());
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
}
