//! The tracing session once the agents run: their messages on stderr and
//! stdout, merged in time order across nodes, and stopping (count, signal,
//! timeout, an agent's end) by closing every agent's stdin and waiting a
//! little for its `bye`.

use std::time::Duration;

use nettrace_common::protocol::{ByeReason, Clock, Lost, Scope};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::merge::{unix_ns, Reorder, HOLD};
use crate::output::{loss_grew, loss_stats, Output, Printable};
use crate::stream::{Incoming, NodeMsg};

/// How long agents get to say `bye` once asked to stop.
pub const BYE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct NodeState {
    name: String,
    clock: Clock,
    ready: bool,
    done: bool,
    bye: Option<ByeReason>,
    lost: Lost,
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Normally (count, signal, timeout, the agents' deadline).
    Ok,
    /// Something failed; already reported on stderr.
    Failed,
}

/// What the session loop needs.
pub struct Session {
    /// Node names by index.
    pub nodes: Vec<String>,
    /// Formats output.
    pub output: Output,
    /// Messages of all agents.
    pub rx: mpsc::Receiver<NodeMsg>,
    /// Turned true to close every agent's stdin.
    pub stop_tx: watch::Sender<bool>,
    /// Turns true on SIGINT/SIGTERM.
    pub interrupted: watch::Receiver<bool>,
    /// `--timeout`.
    pub timeout: Duration,
    /// `-v`.
    pub verbose: bool,
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Kernel => "in the kernel (the pods' namespaces and host-side veths)",
        Scope::None => "none (whole node, host network or --follow-host)",
    }
}

fn first_ts(p: &Printable) -> u64 {
    match p {
        Printable::Event(_, i) => i.event.ts_ns,
        Printable::Timeline(_, _, items) => items.first().map(|i| i.event.ts_ns).unwrap_or(0),
        Printable::Lost(..) => 0,
    }
}

impl Session {
    /// Runs until every agent is done (or gone quiet after being asked to stop).
    pub async fn run(mut self) -> End {
        let mut nodes: Vec<NodeState> = self
            .nodes
            .iter()
            .map(|n| NodeState {
                name: n.clone(),
                ..NodeState::default()
            })
            .collect();
        let multi = nodes.len() > 1;
        let mut reorder: Reorder<Printable> = Reorder::new(HOLD);
        let mut failed = false;
        let mut stopping: Option<Instant> = None;
        let mut begun = false;
        let timeout_at = Instant::now() + self.timeout;
        let far = Instant::now() + Duration::from_secs(365 * 86400);
        let mut interrupted = self.interrupted.clone();
        let mut stdout_ok = true;

        loop {
            if nodes.iter().all(|n| n.done) {
                break;
            }
            let due = reorder.next_due().map(Instant::from_std).unwrap_or(far);
            let stop_wait = stopping.map(|t| t + BYE_WAIT).unwrap_or(far);
            let mut stop_now = false;
            tokio::select! {
                m = self.rx.recv() => {
                    let Some(NodeMsg { node, msg }) = m else { break };
                    let Some(st) = nodes.get_mut(node) else { continue };
                    let name = st.name.clone();
                    let tag = |s: &str| if multi { format!("{s} (node {name})") } else { s.to_string() };
                    match msg {
                        Incoming::Hello(h) => {
                            st.clock = h.clock;
                            eprintln!(
                                "node {name}: agent {}, kernel {}, backends: {}",
                                h.agent,
                                h.kernel,
                                h.backends.join(", ")
                            );
                        }
                        Incoming::Resolved(r) => {
                            for t in &r.targets {
                                let who = format!("{}/{}/{}", t.target.namespace, t.target.pod, t.target.container);
                                if let Some(e) = &t.error {
                                    eprintln!("warning: {who} on node {name} is not traced: {e}");
                                } else if self.verbose {
                                    let host = t
                                        .host_ifname
                                        .clone()
                                        .or_else(|| t.host_if_error.as_ref().map(|e| format!("unknown ({e})")))
                                        .unwrap_or_else(|| "-".into());
                                    eprintln!(
                                        "{who} on node {name}: pid {}, netns {}, host side {host}{}",
                                        t.pid.unwrap_or(0),
                                        t.netns.unwrap_or(0),
                                        if t.host_network { ", hostNetwork" } else { "" }
                                    );
                                }
                            }
                        }
                        Incoming::Ready(r) => {
                            st.ready = true;
                            if self.verbose {
                                eprintln!("node {name}: {} tracers attached, scoping: {}", r.tracers, scope_name(r.scope));
                            }
                            if !begun && nodes.iter().all(|n| n.ready) {
                                begun = true;
                                eprintln!("begin tracing......");
                            }
                        }
                        Incoming::Event(item) => {
                            let p = Printable::Event(node, item);
                            if multi {
                                let key = unix_ns(first_ts(&p), &st.clock);
                                reorder.push(key, std::time::Instant::now(), p);
                            } else {
                                stdout_ok &= self.output.print(&p).is_ok();
                            }
                        }
                        Incoming::Timeline { skb, events } => {
                            let p = Printable::Timeline(node, skb, events);
                            if multi {
                                let key = unix_ns(first_ts(&p), &st.clock);
                                reorder.push(key, std::time::Instant::now(), p);
                            } else {
                                stdout_ok &= self.output.print(&p).is_ok();
                            }
                        }
                        Incoming::Lost(l) => {
                            // once stopping, the summary at the end says it
                            if loss_grew(&st.lost, &l) && stopping.is_none() {
                                if let Some(m) = loss_stats(&l).message() {
                                    eprintln!("{}", tag(&m));
                                }
                            }
                            st.lost = l;
                            stdout_ok &= self.output.print(&Printable::Lost(node, l)).is_ok();
                        }
                        Incoming::Error(e) => eprintln!("error: node {name}: {e}"),
                        Incoming::Bye(reason) => {
                            st.bye = Some(reason);
                            if reason == ByeReason::Error {
                                failed = true;
                            } else if self.verbose {
                                eprintln!("node {name}: agent stopped ({})", bye_name(reason));
                            }
                            stop_now = true;
                        }
                        Incoming::Stderr(l) => eprintln!("{name}: {l}"),
                        Incoming::Garbled { line, why } => {
                            eprintln!("warning: node {name}: unreadable agent line ({why}): {line}");
                        }
                        Incoming::Closed(err) => {
                            st.done = true;
                            if st.bye.is_none() && stopping.is_none() {
                                eprintln!(
                                    "error: lost the connection to the agent on node {name}{}",
                                    err.map(|e| format!(": {e}")).unwrap_or_default()
                                );
                                failed = true;
                                stop_now = true;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(due), if !reorder.is_empty() => {
                    for p in reorder.pop_due(std::time::Instant::now()) {
                        self.output.render(&p);
                    }
                    stdout_ok &= self.output.flush().is_ok();
                }
                r = interrupted.changed(), if stopping.is_none() => {
                    if r.is_err() || *interrupted.borrow() {
                        stop_now = true;
                    }
                }
                _ = tokio::time::sleep_until(timeout_at), if stopping.is_none() => {
                    if self.verbose {
                        eprintln!("--timeout reached after {}s", self.timeout.as_secs());
                    }
                    stop_now = true;
                }
                _ = tokio::time::sleep_until(stop_wait), if stopping.is_some() => {
                    let quiet: Vec<&str> = nodes.iter().filter(|n| !n.done).map(|n| n.name.as_str()).collect();
                    eprintln!("warning: no goodbye from the agent on node(s) {} within {}s", quiet.join(", "), BYE_WAIT.as_secs());
                    break;
                }
            }
            if self.output.done() || !stdout_ok {
                stop_now = true;
            }
            if stop_now && stopping.is_none() {
                stopping = Some(Instant::now());
                let _ = self.stop_tx.send(true);
            }
        }
        for p in reorder.drain() {
            self.output.render(&p);
        }
        let _ = self.output.flush();
        let total = nodes.iter().fold(Lost::default(), |a, n| Lost {
            events: a.events + n.lost.events,
            skb_map_full: a.skb_map_full + n.lost.skb_map_full,
            stack_failed: a.stack_failed + n.lost.stack_failed,
            matched: a.matched + n.lost.matched,
            rate_limited: a.rate_limited + n.lost.rate_limited,
        });
        if let Some(m) = loss_stats(&total).message() {
            eprintln!("{m}");
        }
        if failed {
            End::Failed
        } else {
            End::Ok
        }
    }
}

fn bye_name(r: ByeReason) -> &'static str {
    match r {
        ByeReason::Deadline => "deadline",
        ByeReason::Signal => "signal",
        ByeReason::InputClosed => "input closed",
        ByeReason::Count => "count reached",
        ByeReason::Error => "error",
        ByeReason::Idle => "idle",
    }
}
