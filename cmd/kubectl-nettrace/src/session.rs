//! The tracing session once the agents run: their messages on stderr and
//! stdout, merged in time order across nodes, and stopping (count, signal,
//! timeout, an agent's end) by closing every agent's stdin and waiting a
//! little for its `bye`.

use std::collections::HashMap;
use std::net::IpAddr;

use nettrace_common::filter::Filter;
use std::time::Duration;

use nettrace_common::protocol::{ByeReason, Clock, Lost, Scope};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::console::say;
use crate::join::{Joiner, SeenOnce, JOIN_HOLD};
use crate::merge::{unix_ns, Reorder, HOLD};
use crate::output::{loss_grew, loss_stats, Output, Printable};
use crate::stream::{Incoming, NodeMsg};

/// Once asked to stop, how long the agents may stay silent before the plugin
/// gives up on their `bye` (while they still send, what is in flight is
/// drained).
pub const BYE_WAIT: Duration = Duration::from_secs(5);
/// The longest drain after a stop, however busy the agents still are.
pub const DRAIN_CAP: Duration = Duration::from_secs(60);
/// While events are being dropped because stdout is not read fast enough,
/// how often the running count is reported on stderr.
pub const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

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
    /// The node (index) of each pod address the trace involves: where a
    /// packet to it should arrive.
    pub homes: HashMap<IpAddr, usize>,
    /// The agents' packet filter (a packet it rejects is not expected on
    /// its destination's node).
    pub filter: Filter,
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Kernel => "in the kernel (the pods' namespaces and host-side veths; with pods on several nodes, the node's own namespace too)",
        Scope::None => "none (whole node, host network or --follow-host)",
    }
}

fn first_ts(p: &Printable) -> u64 {
    match p {
        Printable::Event(_, i) => i.event.ts_ns,
        Printable::Timeline(_, _, items) => items.first().map(|i| i.event.ts_ns).unwrap_or(0),
        Printable::Joined(_) | Printable::Lost(..) => 0,
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
        // Several nodes: timeline blocks of one packet are joined, and an
        // event that nodes sharing a kernel both saw is kept once.
        let mut joiner = Joiner::new(
            nodes.len(),
            JOIN_HOLD,
            std::mem::take(&mut self.homes),
            std::mem::take(&mut self.filter),
        );
        let mut seen = SeenOnce::default();
        let mut said_shared = false;
        let mut failed = false;
        let mut stopping: Option<Instant> = None;
        let mut begun = false;
        let timeout_at = Instant::now() + self.timeout;
        let far = Instant::now() + Duration::from_secs(365 * 86400);
        let mut interrupted = self.interrupted.clone();
        let mut last_heard = Instant::now();
        // Events dropped because stdout is not read fast enough: reported
        // within a second when it starts, then every DROP_REPORT_EVERY
        // while it goes on (stderr is often the terminal the reader draws
        // on), and in the final summary.
        let mut reported_dropped = 0u64;
        let mut reported_at: Option<Instant> = None;
        let mut report = tokio::time::interval(Duration::from_secs(1));
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            if nodes.iter().all(|n| n.done) {
                break;
            }
            let due = reorder.next_due().map(Instant::from_std).unwrap_or(far);
            let join_due = joiner.next_due().map(Instant::from_std).unwrap_or(far);
            let stop_wait = stopping
                .map(|t| (last_heard.max(t) + BYE_WAIT).min(t + DRAIN_CAP))
                .unwrap_or(far);
            let mut stop_now = false;
            tokio::select! {
                m = self.rx.recv() => {
                    let Some(NodeMsg { node, msg }) = m else { break };
                    last_heard = Instant::now();
                    let Some(st) = nodes.get_mut(node) else { continue };
                    let name = st.name.clone();
                    let tag = |s: &str| if multi { format!("{s} (node {name})") } else { s.to_string() };
                    match msg {
                        Incoming::Hello(h) => {
                            st.clock = h.clock;
                            joiner.hello(node, h.clock, &h.boot_id, h.netns);
                            // (nodes sharing a kernel share its first node's clock)
                            for n in 0..self.nodes.len() {
                                self.output.set_clock(n, joiner.clock_of(n));
                            }
                            if joiner.kernels().any_shared() && !said_shared && self.verbose {
                                said_shared = true;
                                say!("some nodes share one kernel (the same boot id): an event several of their agents see is shown once");
                            }
                            say!(
                                "node {name}: agent {}, kernel {}, backends: {}",
                                h.agent,
                                h.kernel,
                                h.backends.join(", ")
                            );
                        }
                        Incoming::Resolved(r) => {
                            for t in r.targets.iter().filter(|t| t.error.is_none()) {
                                joiner.kernels_mut().resolved(node, t);
                            }
                            if !r.targets.is_empty() && r.targets.iter().all(|t| t.error.is_some()) {
                                say!("error: none of the targets on node {name} could be resolved");
                                failed = true;
                                stop_now = true;
                            }
                            for t in &r.targets {
                                let who = format!("{}/{}/{}", t.target.namespace, t.target.pod, t.target.container);
                                if let Some(e) = &t.error {
                                    say!("warning: {who} on node {name} is not traced: {e}");
                                } else if self.verbose {
                                    let host = t
                                        .host_ifname
                                        .clone()
                                        .or_else(|| t.host_if_error.as_ref().map(|e| format!("unknown ({e})")))
                                        .unwrap_or_else(|| "-".into());
                                    say!(
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
                                say!("node {name}: {} tracers attached, scoping: {}", r.tracers, scope_name(r.scope));
                            }
                            if !begun && nodes.iter().all(|n| n.ready) {
                                begun = true;
                                say!("begin tracing......");
                            }
                        }
                        Incoming::Event(mut item) => {
                            let mut node = node;
                            if multi && joiner.kernels().any_shared() {
                                joiner.kernels_mut().annotated(node, &item);
                                match seen.admit(joiner.kernels(), node, &mut item) {
                                    Some(n) => node = n,
                                    None => continue,
                                }
                            }
                            let p = Printable::Event(node, item);
                            if multi {
                                let key = unix_ns(first_ts(&p), &st.clock);
                                reorder.push(key, std::time::Instant::now(), p);
                            } else {
                                self.output.print(&p);
                            }
                        }
                        Incoming::Timeline { skb, events } => {
                            if multi {
                                for item in &events {
                                    joiner.kernels_mut().annotated(node, item);
                                }
                                joiner.push(node, skb, events, std::time::Instant::now());
                            } else {
                                self.output.print(&Printable::Timeline(node, skb, events));
                            }
                        }
                        Incoming::Lost(l) => {
                            // once stopping, the summary at the end says it
                            if loss_grew(&st.lost, &l) && stopping.is_none() {
                                if let Some(m) = loss_stats(&l).message() {
                                    say!("{}", tag(&m));
                                }
                            }
                            st.lost = l;
                            self.output.print(&Printable::Lost(node, l));
                        }
                        Incoming::Error(e) => say!("error: node {name}: {e}"),
                        Incoming::Bye(reason) => {
                            st.bye = Some(reason);
                            if reason == ByeReason::Error {
                                failed = true;
                            } else if let (None, Some(why)) = (stopping, unasked_stop(reason)) {
                                say!("error: the agent on node {name} stopped: {why}");
                                failed = true;
                            } else if self.verbose {
                                say!("node {name}: agent stopped ({})", bye_name(reason));
                            }
                            stop_now = true;
                        }
                        Incoming::Stderr(l) => say!("{name}: {l}"),
                        Incoming::TooLong(limit) => {
                            say!("error: node {name}: the agent sent a line longer than {limit} bytes, the protocol's limit");
                            failed = true;
                            stop_now = true;
                        }
                        Incoming::Garbled { line, why } => {
                            say!("warning: node {name}: unreadable agent line ({why}): {line}");
                        }
                        Incoming::Closed(err) => {
                            st.done = true;
                            if st.bye.is_none() && stopping.is_none() {
                                say!(
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
                    self.output.flush();
                }
                _ = tokio::time::sleep_until(join_due), if !joiner.is_empty() => {
                    for j in joiner.pop_due(std::time::Instant::now()) {
                        self.output.render(&Printable::Joined(Box::new(j)));
                    }
                    self.output.flush();
                }
                _ = report.tick() => {
                    let dropped = self.output.dropped();
                    let due = reported_at.is_none_or(|t| t.elapsed() >= DROP_REPORT_EVERY);
                    if dropped > reported_dropped && stopping.is_none() && due {
                        say!("{}", dropped_message(dropped));
                        reported_dropped = dropped;
                        reported_at = Some(Instant::now());
                    }
                }
                r = interrupted.changed(), if stopping.is_none() => {
                    if r.is_err() || *interrupted.borrow() {
                        stop_now = true;
                    }
                }
                _ = tokio::time::sleep_until(timeout_at), if stopping.is_none() => {
                    if self.verbose {
                        say!("--timeout reached after {}s", self.timeout.as_secs());
                    }
                    stop_now = true;
                }
                _ = tokio::time::sleep_until(stop_wait), if stopping.is_some() => {
                    let quiet: Vec<&str> = nodes.iter().filter(|n| !n.done).map(|n| n.name.as_str()).collect();
                    let waited = stopping.map(|t| t.elapsed().as_secs()).unwrap_or(0);
                    say!("warning: no goodbye from the agent on node(s) {} after {waited}s: events still in flight are not shown", quiet.join(", "));
                    break;
                }
            }
            if self.output.done() {
                stop_now = true;
            }
            if let (Some(e), None) = (self.output.failed(), stopping) {
                if self.verbose {
                    say!("stdout: {e}: stopping");
                }
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
        for j in joiner.drain() {
            self.output.render(&Printable::Joined(Box::new(j)));
        }
        self.output.flush();
        self.output.write_summary();
        self.output.flush();
        let total = nodes.iter().fold(Lost::default(), |a, n| Lost {
            events: a.events + n.lost.events,
            skb_map_full: a.skb_map_full + n.lost.skb_map_full,
            stack_failed: a.stack_failed + n.lost.stack_failed,
            matched: a.matched + n.lost.matched,
            rate_limited: a.rate_limited + n.lost.rate_limited,
            bytes_failed: a.bytes_failed + n.lost.bytes_failed,
        });
        if let Some(m) = loss_stats(&total).message() {
            say!("{m}");
        }
        if failed {
            End::Failed
        } else {
            End::Ok
        }
    }
}

/// The stderr line for events dropped because stdout was not read fast
/// enough (`N` in all so far).
pub fn dropped_message(n: u64) -> String {
    format!(
        "nettrace: {n} {} dropped (output stalled: stdout is not read fast enough)",
        if n == 1 { "event" } else { "events" }
    )
}

/// Why an agent stopped when the plugin did not ask it to, for the reasons
/// that mean something went wrong.
fn unasked_stop(r: ByeReason) -> Option<&'static str> {
    match r {
        ByeReason::Signal => {
            Some("it was terminated (its pod was deleted or evicted, or the node is shutting down)")
        }
        ByeReason::InputClosed => Some("its input closed (the attach connection broke)"),
        ByeReason::Idle => Some("no keep-alive reached it within its idle timeout"),
        ByeReason::Deadline | ByeReason::Count | ByeReason::Error => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputFormat;
    use crate::console::testing::Capture;
    use crate::console::Pipe;
    use crate::stream::{parse_line, Incoming};
    use nettrace_common::format::TextOptions;
    use nettrace_common::protocol::{Hello, Ready, Resolved, ResolvedTarget};

    const EVENT: &str = r#"{"v":1,"type":"event","event":{"type":"event","ts_ns":1000,"tracer":"ip_rcv","skb":"ffff888100000000","summary":"x"}}"#;

    struct Harness {
        tx: mpsc::Sender<NodeMsg>,
        stop: watch::Receiver<bool>,
        interrupt: watch::Sender<bool>,
        run: tokio::task::JoinHandle<End>,
        stdout: Capture,
        pipe: std::sync::Arc<Pipe>,
    }

    fn start(nodes: &[&str], count: Option<u64>) -> Harness {
        start_with(nodes, count, 1 << 20)
    }

    /// With a stdout queue of `queue` bytes.
    fn start_with(nodes: &[&str], count: Option<u64>, queue: usize) -> Harness {
        let stdout = Capture::default();
        let pipe = Pipe::start("test", queue, stdout.clone());
        let (tx, rx) = mpsc::channel(64);
        let (stop_tx, stop) = watch::channel(false);
        let (interrupt, interrupted) = watch::channel(false);
        let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let session = Session {
            output: Output::new(
                OutputFormat::Json,
                TextOptions::default(),
                names.clone(),
                count,
                pipe.clone(),
            ),
            nodes: names,
            rx,
            stop_tx,
            interrupted,
            timeout: Duration::from_secs(3600),
            verbose: true,
            homes: HashMap::new(),
            filter: Filter::default(),
        };
        Harness {
            tx,
            stop,
            interrupt,
            run: tokio::spawn(session.run()),
            stdout,
            pipe,
        }
    }

    impl Harness {
        async fn send(&self, node: usize, msg: Incoming) {
            self.tx
                .send(NodeMsg { node, msg })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }

        async fn start_node(&self, node: usize) {
            self.send(node, Incoming::Hello(Hello::default())).await;
            self.send(node, Incoming::Ready(Ready::default())).await;
        }

        async fn stop_requested(&mut self) -> bool {
            tokio::time::timeout(Duration::from_secs(2), self.stop.wait_for(|s| *s))
                .await
                .is_ok()
        }

        async fn end(self) -> End {
            match tokio::time::timeout(Duration::from_secs(10), self.run).await {
                Ok(Ok(end)) => end,
                other => panic!("session did not end: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn count_stops_every_agent_and_ends_well() {
        let mut h = start(&["w1", "w2"], Some(2));
        h.start_node(0).await;
        h.start_node(1).await;
        for node in [0, 1, 0] {
            h.send(node, parse_line(EVENT)).await;
        }
        // the reorder buffer releases them after its hold, then the count is reached
        assert!(
            tokio::time::timeout(Duration::from_secs(3), h.stop.wait_for(|s| *s))
                .await
                .is_ok(),
            "--count asks the agents to stop"
        );
        for node in [0, 1] {
            h.send(node, Incoming::Bye(ByeReason::InputClosed)).await;
            h.send(node, Incoming::Closed(None)).await;
        }
        assert_eq!(h.end().await, End::Ok);
    }

    #[tokio::test]
    async fn an_agent_stopping_unasked_fails_the_session() {
        let mut h = start(&["w1", "w2"], None);
        h.start_node(0).await;
        h.start_node(1).await;
        // evicted: SIGTERM, the agent says goodbye by itself
        h.send(1, Incoming::Bye(ByeReason::Signal)).await;
        assert!(h.stop_requested().await);
        h.send(1, Incoming::Closed(None)).await;
        h.send(0, Incoming::Bye(ByeReason::InputClosed)).await;
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Failed);
    }

    #[tokio::test]
    async fn an_agent_error_fails_the_session() {
        let mut h = start(&["w1"], None);
        h.start_node(0).await;
        h.send(0, Incoming::Error("attach failed".into())).await;
        h.send(0, Incoming::Bye(ByeReason::Error)).await;
        assert!(h.stop_requested().await);
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Failed);
    }

    #[tokio::test]
    async fn a_lost_connection_fails_and_stops_the_others() {
        let mut h = start(&["w1", "w2"], None);
        h.start_node(0).await;
        h.start_node(1).await;
        h.send(1, Incoming::Closed(Some("connection reset".into())))
            .await;
        assert!(h.stop_requested().await);
        h.send(0, Incoming::Bye(ByeReason::InputClosed)).await;
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Failed);
    }

    #[tokio::test]
    async fn unresolved_targets_fail_the_session() {
        let mut h = start(&["w1"], None);
        let bad = ResolvedTarget {
            error: Some("no process of container abc".into()),
            ..ResolvedTarget::default()
        };
        h.send(0, Incoming::Resolved(Resolved { targets: vec![bad] }))
            .await;
        assert!(h.stop_requested().await);
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_agent_is_drained_past_the_quiet_time() {
        let mut h = start(&["w1"], None);
        h.start_node(0).await;
        h.interrupt.send(true).unwrap_or_else(|e| panic!("{e}"));
        assert!(h.stop_requested().await);
        // Still sending what was in flight, longer than BYE_WAIT in all.
        for _ in 0..(2 * BYE_WAIT.as_secs()) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            h.send(0, parse_line(EVENT)).await;
        }
        assert!(!h.run.is_finished(), "gave up on an agent still sending");
        h.send(0, Incoming::Bye(ByeReason::InputClosed)).await;
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_is_given_up_after_the_quiet_time() {
        let mut h = start(&["w1"], None);
        h.start_node(0).await;
        h.interrupt.send(true).unwrap_or_else(|e| panic!("{e}"));
        assert!(h.stop_requested().await);
        tokio::time::sleep(BYE_WAIT + Duration::from_secs(1)).await;
        assert!(h.run.is_finished(), "still waiting for a silent agent");
        assert_eq!(h.end().await, End::Ok);
    }

    #[tokio::test]
    async fn a_signal_closes_stdin_and_waits_for_goodbye() {
        let mut h = start(&["w1"], None);
        h.start_node(0).await;
        h.interrupt.send(true).unwrap_or_else(|e| panic!("{e}"));
        assert!(h.stop_requested().await);
        h.send(0, Incoming::Bye(ByeReason::InputClosed)).await;
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Ok);
    }

    #[tokio::test]
    async fn a_stalled_stdout_never_stops_the_session_and_drops_are_counted() {
        // room for about ten JSON event lines
        let mut h = start_with(&["w1"], None, 2000);
        h.stdout.stall(true);
        h.start_node(0).await;
        // Far more than the channel and the queue hold: each send returns
        // because the session keeps reading.
        let started = std::time::Instant::now();
        for _ in 0..5000 {
            tokio::time::timeout(Duration::from_secs(5), h.send(0, parse_line(EVENT)))
                .await
                .unwrap_or_else(|_| panic!("the session stopped reading"));
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        // everything sent was taken
        while h.tx.capacity() < h.tx.max_capacity() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dropped = h.pipe.dropped();
        assert!(dropped > 4900, "dropped {dropped}");
        assert!(!h.run.is_finished());
        // The reader comes back: new events are printed again.
        h.stdout.stall(false);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // (all of the queue free: everything queued is written)
        while !h.pipe.has_room(2000) {
            assert!(std::time::Instant::now() < deadline, "stdout never drained");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = h.stdout.text().lines().count();
        h.send(0, parse_line(EVENT)).await;
        h.interrupt.send(true).unwrap_or_else(|e| panic!("{e}"));
        assert!(h.stop_requested().await);
        h.send(0, Incoming::Bye(ByeReason::InputClosed)).await;
        h.send(0, Incoming::Closed(None)).await;
        let (pipe, stdout) = (h.pipe.clone(), h.stdout.clone());
        assert_eq!(h.end().await, End::Ok);
        assert_eq!(pipe.finish().await, 0);
        let after = stdout.text().lines().count();
        assert_eq!(after, before + 1, "the event after the stall is printed");
        assert_eq!(pipe.dropped(), dropped, "nothing dropped after the stall");
    }

    /// A `timeline` line of one ICMP request event per `(ts_ns, tracer, netns)`.
    fn icmp_timeline(skb: &str, events: &[(u64, &str, u64)]) -> Incoming {
        let evs: Vec<String> = events
            .iter()
            .map(|(ts, tracer, netns)| {
                format!(
                    r#"{{"event":{{"type":"event","ts_ns":{ts},"tracer":"{tracer}","skb":"{skb}","netns":{netns},"pkt":{{"l3":"ipv4","saddr":"10.244.1.2","daddr":"10.244.2.3","proto":"icmp","icmp_type":8,"icmp_id":9,"icmp_seq":1}},"summary":"ICMP"}}}}"#
                )
            })
            .collect();
        parse_line(&format!(
            r#"{{"v":1,"type":"timeline","skb":"{skb}","events":[{}]}}"#,
            evs.join(",")
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn blocks_of_one_packet_from_two_nodes_print_as_one_timeline() {
        let mut h = start(&["w1", "w2"], None);
        for (node, netns) in [(0, 11), (1, 12)] {
            let hello = Hello {
                boot_id: "one-kernel".into(),
                netns,
                ..Hello::default()
            };
            h.send(node, Incoming::Hello(hello)).await;
            h.send(node, Incoming::Ready(Ready::default())).await;
        }
        // w2's agent sees the end; w1's followed the skb into w2's
        // namespace and sends its block later, once idle.
        h.send(
            1,
            icmp_timeline(
                "ffff1",
                &[(3_000, "netif_receive_skb", 12), (4_000, "consume_skb", 0)],
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.send(
            0,
            icmp_timeline(
                "ffff1",
                &[
                    (1_000, "net_dev_queue", 11),
                    (3_000, "netif_receive_skb", 12),
                ],
            ),
        )
        .await;
        tokio::time::sleep(JOIN_HOLD).await;
        h.interrupt.send(true).unwrap_or_else(|e| panic!("{e}"));
        assert!(h.stop_requested().await);
        for node in [0, 1] {
            h.send(node, Incoming::Bye(ByeReason::InputClosed)).await;
            h.send(node, Incoming::Closed(None)).await;
        }
        let (pipe, stdout) = (h.pipe.clone(), h.stdout.clone());
        assert_eq!(h.end().await, End::Ok);
        assert_eq!(pipe.finish().await, 0);
        let text = stdout.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .filter(|v: &serde_json::Value| v["type"] == "timeline")
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["nodes"], serde_json::json!(["w1", "w2"]));
        let evs: Vec<(String, String)> = lines[0]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["tracer"].as_str().unwrap_or("").to_string(),
                    e["node"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want = [
            ("net_dev_queue", "w1"),
            ("netif_receive_skb", "w2"),
            ("consume_skb", "w2"),
        ];
        assert_eq!(
            evs,
            want.map(|(a, b)| (a.to_string(), b.to_string())),
            "{text}"
        );
        assert!(lines[0].get("lost_between").is_none());
    }

    #[tokio::test]
    async fn an_over_long_agent_line_fails_the_session() {
        let mut h = start(&["w1"], None);
        h.start_node(0).await;
        h.send(0, Incoming::TooLong(16 << 20)).await;
        assert!(h.stop_requested().await, "the agents are stopped");
        h.send(0, Incoming::Bye(ByeReason::InputClosed)).await;
        h.send(0, Incoming::Closed(None)).await;
        assert_eq!(h.end().await, End::Failed);
    }
}
