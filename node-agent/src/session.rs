//! The tracing session: reads events from the ring buffer until told to stop,
//! and prints them (directly, or grouped per skb in timeline mode) through a
//! [`Sink`]: the command line's text or JSON lines, or the agent's protocol.
//!
//! Stdout is written by a thread behind a bounded queue ([`crate::output`]):
//! a reader that stops reading never blocks the loop. What does not fit is
//! dropped and counted ("output stalled"), and a signal ends the session
//! within a second whatever the reader does.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use nettrace_common::format::{Annotations, LossStats};
use nettrace_common::{Block, Event, RawEvent, Role, Timeline};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use nettrace_common::diag::{DiagKey, Problem, Summary};
use nettrace_common::rule::NftRule;

use crate::loader::{stat, Loaded, Stats};
use crate::nft_rules::RuleFinder;
use crate::output::{Finish, Output};
use crate::pcap::Pcap;
use crate::plan::Plan;
use crate::sink::{LossReport, Sink};
use crate::symbols::Symbols;

/// How events are grouped, and when to stop (how they look is the sink's).
#[derive(Debug, Clone, Copy)]
pub struct Views {
    /// Group events per skb.
    pub timeline: bool,
    /// Stop after this many timeline blocks (or events without --timeline).
    pub count: Option<u64>,
    /// Report detach time at exit.
    pub verbose: bool,
    /// `--diag`: only the blocks that show a problem, and a summary at exit.
    pub diag: bool,
    /// Timeline mode: hand out a context unfinished once nothing was added
    /// to it for this long ([`TIMELINE_IDLE_FLUSH`]).
    pub idle_flush: Option<Duration>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
    /// `count` reached.
    Count,
    /// The deadline passed.
    Deadline,
    /// The input closed (the agent's stdin), or what --netns, --ifname or
    /// --pid named is gone.
    InputClosed,
    /// No line from the plugin within the idle timeout.
    Idle,
    /// A line on the agent's stdin longer than the protocol allows.
    LineTooLong,
}

/// What else ends a session besides signals and `count` (the agent's
/// deadline and stdin; nothing for the command line).
#[derive(Debug, Default)]
pub struct Control {
    /// When to stop.
    pub deadline: Option<tokio::time::Instant>,
    /// Fires, with the reason, when the input has ended.
    pub input_ended: Option<oneshot::Receiver<Stop>>,
}

/// An event with what had to be resolved on arrival (stacks are read from a
/// kernel map whose entries are reused, so they cannot wait).
struct Record {
    ev: Event,
    stack: Option<Vec<String>>,
    /// `--nft-trace`: the rule that dropped the packet (drops only).
    rule: Option<NftRule>,
}

/// Formatted output is written out whenever this much has accumulated.
const WRITE_CHUNK: usize = 256 * 1024;

/// How long a finished block waits for the return values of its functions.
const RETURN_WAIT: Duration = Duration::from_millis(500);

/// In timeline mode, how long an skb context stays open without a new event
/// before it is printed unfinished: its skb went on where nothing is traced
/// (out of `--netns`, or, for an agent, into another node's scope) and its
/// end will not be seen; without it, the next packet that gets the same skb
/// address would join the old block.
pub const TIMELINE_IDLE_FLUSH: Duration = Duration::from_secs(1);

/// Most skb contexts kept open in timeline mode before the oldest is printed.
const MAX_OPEN_CONTEXTS: usize = 65536;

/// Most events handled per wake-up, and most time spent on them, before the
/// loop looks at signals and the clock again (a flood never empties the ring).
const DRAIN_BATCH: usize = 4096;
const DRAIN_TIME: Duration = Duration::from_millis(20);

/// After a signal, how long the output may take to reach the reader before
/// nettrace exits without it (what is left is counted as lost).
const STOP_BUDGET: Duration = Duration::from_millis(700);

/// Runs the session until SIGINT/SIGTERM/SIGHUP, or until `count` is reached
/// (or `control` says so), writing what `sink` formats to stdout, and each
/// event printed as a packet to `pcap` when given.
///
/// After a signal, returns (or exits the process, when stdout is blocked)
/// within a second: the programs are detached first, then the final counters
/// go to stderr.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: Sink>(
    mut loaded: Loaded,
    plan: Plan,
    symbols: Symbols,
    views: Views,
    sink: S,
    control: Control,
    rules: Option<RuleFinder>,
    pcap: Option<Pcap>,
) -> Result<Stop> {
    let ring = loaded.take_ring_buffer()?;
    let stats = loaded.take_stats()?;
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as
    // long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {}", e.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let Control {
        deadline,
        input_ended,
    } = control;
    let deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let input_ended = async move {
        match input_ended {
            // A dropped sender means the watcher is gone too.
            Some(rx) => rx.await.unwrap_or(Stop::InputClosed),
            None => std::future::pending().await,
        }
    };
    // What --netns, --ifname or --pid named is gone (main says what).
    let vanished = crate::watch::vanished();
    tokio::pin!(deadline, input_ended, vanished);

    let mut printer = Printer {
        plan: &plan,
        symbols: &symbols,
        views,
        timeline: Timeline::new(MAX_OPEN_CONTEXTS),
        out: Output::stdout().context("cannot start the stdout writer")?,
        buf: String::with_capacity(64 * 1024),
        buf_events: 0,
        stalled: 0,
        printed: 0,
        reported_loss: LossStats::default(),
        reported_stalled: 0,
        last_message: None,
        decode_errors: 0,
        parked: std::collections::VecDeque::new(),
        summary: views.diag.then(Summary::new),
        rules,
        sink,
        pcap,
    };

    let mut done = false;
    let mut stop = Stop::Count;
    // When a signal asked to stop.
    let mut signalled: Option<Instant> = None;
    while !done {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let (finished, more) = printer.drain(guard.get_inner_mut(), true)?;
                done = finished;
                if more {
                    // Events are left: come back at once (the kernel wakes
                    // a reader only once it has caught up), but let the
                    // runtime look at signals and timers first (it does
                    // when the loop yields, which a flood never makes it do).
                    guard.retain_ready();
                    drop(guard);
                    tokio::task::yield_now().await;
                } else {
                    guard.clear_ready();
                }
            }
            _ = sigint.recv() => { stop = Stop::Signal; signalled = Some(Instant::now()); break }
            _ = sigterm.recv() => { stop = Stop::Signal; signalled = Some(Instant::now()); break }
            _ = sighup.recv() => { stop = Stop::Signal; signalled = Some(Instant::now()); break }
            _ = &mut deadline => { stop = Stop::Deadline; break }
            why = &mut input_ended => { stop = why; break }
            // Any reason but a signal: the output is flushed as usual; the
            // command line does not look at the reason.
            _ = &mut vanished => { stop = Stop::InputClosed; break }
            _ = tick.tick() => {
                done = printer.release_parked(RETURN_WAIT) || printer.flush_idle();
                printer.write_out()?;
                printer.report_loss(&stats, false)?;
            }
        }
    }
    // Stop the producers before the last drain and the last look at the
    // counters: then every event the kernel produced has either been
    // delivered or been counted as lost. (The ring buffer, stack and
    // counter maps were taken out of `loaded` and outlive the programs.)
    let detaching = Instant::now();
    drop(loaded);
    let detach_ms = detaching.elapsed().as_millis();
    if !done {
        printer.drain(ring.get_mut(), false)?;
        printer.flush_timeline()?;
    }
    printer.write_summary()?;
    let now = printer.loss_now(&stats);
    printer.report_loss_stdout(&now, true)?;

    // Let the writers finish, the pcap one first. Without a signal, as long
    // as it takes (a reader that reads slowly gets everything), unless a
    // signal comes.
    if let Some(p) = printer.pcap.as_mut() {
        let mut r = None;
        if signalled.is_none() {
            tokio::select! {
                done = p.out.finish(None) => r = Some(done),
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
                _ = sighup.recv() => {}
            }
            if r.is_none() {
                signalled = Some(Instant::now());
            }
        }
        let r = match r {
            Some(r) => r,
            None => {
                let limit = signalled.map(|t| tokio::time::Instant::from_std(t + STOP_BUDGET));
                p.out.finish(limit).await
            }
        };
        match r {
            Finish::Done(r) => r.context("writing the pcap file")?,
            // What its reader never took is lost.
            Finish::TimedOut => p.dropped += p.out.events_in_flight(),
        }
        if let Some(m) = p.dropped_message() {
            eprintln!("{m}");
        }
    }
    if signalled.is_none() {
        tokio::select! {
            r = printer.out.finish(None) => {
                let detach_ms = views.verbose.then_some(detach_ms);
                return printer.finish_done(r, &now, detach_ms).map(|()| stop);
            }
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = sighup.recv() => {}
        }
        signalled = Some(Instant::now());
    }
    let limit = signalled.map(|t| tokio::time::Instant::from_std(t + STOP_BUDGET));
    let r = printer.out.finish(limit).await;
    printer
        .finish_done(r, &now, views.verbose.then_some(detach_ms))
        .map(|()| stop)
}

struct Printer<'a, S> {
    plan: &'a Plan,
    symbols: &'a Symbols,
    views: Views,
    timeline: Timeline<Record>,
    out: Output,
    buf: String,
    /// Events formatted into `buf`.
    buf_events: u64,
    /// Events dropped because the output queue was full.
    stalled: u64,
    printed: u64,
    reported_loss: LossStats,
    reported_stalled: u64,
    /// The last loss line printed on stderr (never printed twice in a row).
    last_message: Option<String>,
    decode_errors: u64,
    /// Finished blocks waiting for return values, oldest first.
    parked: std::collections::VecDeque<(Block<Record>, std::time::Instant)>,
    /// `--diag`: what went wrong so far.
    summary: Option<Summary>,
    /// `--nft-trace`: the rules that dropped packets.
    rules: Option<RuleFinder>,
    /// Formats events for stdout.
    sink: S,
    /// `--pcap`: each event printed, as a packet.
    pcap: Option<Pcap>,
}

impl<'a, S: Sink> Printer<'a, S> {
    /// Handles the events available now (with `bounded`, at most a batch);
    /// returns whether `count` is reached and whether events were left.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, bounded: bool) -> Result<(bool, bool)> {
        let mut done = false;
        let mut more = false;
        let started = Instant::now();
        let mut handled = 0usize;
        loop {
            if bounded
                && handled > 0
                && (handled >= DRAIN_BATCH
                    || (handled.is_multiple_of(256) && started.elapsed() >= DRAIN_TIME))
            {
                more = true;
                break;
            }
            let Some(item) = ring.next() else {
                break;
            };
            handled += 1;
            let ev = match RawEvent::decode(&item) {
                Ok(ev) => ev,
                Err(_) => {
                    self.decode_errors += 1;
                    continue;
                }
            };
            let ips = match ev.stack_id {
                Some(frames) => nettrace_common::event::stack_ips(&item, frames),
                None => Vec::new(),
            };
            drop(item);
            if !self.views.timeline && !self.out.has_room(WRITE_CHUNK) {
                // The reader does not keep up: the event would be dropped
                // (see write_record); not even its stack is resolved.
                self.stalled += 1;
                self.printed += 1;
                if self.views.count.is_some_and(|c| self.printed >= c) {
                    done = true;
                    break;
                }
                continue;
            }
            if self.handle(ev, &ips) {
                done = true;
                break;
            }
            // Under a sustained flood the ring buffer never runs empty: write
            // as we go, so memory stays bounded and output keeps flowing.
            if self.buf.len() >= WRITE_CHUNK || self.pcap.as_ref().is_some_and(Pcap::full) {
                self.write_out()?;
            }
        }
        self.write_out()?;
        Ok((done, more))
    }

    /// Prints or buffers one event; true once `count` is reached.
    fn handle(&mut self, ev: Event, ips: &[u64]) -> bool {
        let stack = ev.stack_id.map(|_| self.symbols.stack(ips));
        // --nft-trace only: the tracer's role is looked up for nothing else
        let rule = match &mut self.rules {
            Some(rules)
                if self
                    .plan
                    .tracers
                    .get(ev.tracer_id as usize)
                    .is_some_and(|t| t.role == Role::Drop) =>
            {
                rules.rule_for(&ev)
            }
            _ => None,
        };
        let rec = Record { ev, stack, rule };
        if !self.views.timeline {
            self.write_record(&rec);
            self.printed += 1;
            return self.views.count.is_some_and(|c| self.printed >= c);
        }
        let Some(tracer) = self.plan.tracers.get(rec.ev.tracer_id as usize) else {
            return false;
        };
        let skb = rec.ev.skb;
        if let Some(ret) = rec.ev.retval {
            // A function returned: its value belongs under its entry line
            // (in an open context, or in a finished block waiting for its
            // returns), and a clone it returned joins the parent's context.
            let tracer_id = rec.ev.tracer_id;
            let set_ret = |r: &mut Record| {
                let matches =
                    r.ev.skb == skb && r.ev.tracer_id == tracer_id && r.ev.retval.is_none();
                if matches {
                    r.ev.retval = Some(ret);
                }
                matches
            };
            let mut done = false;
            if !self.timeline.amend(skb, set_ret) {
                done = self.amend_parked(set_ret);
            }
            if tracer.role == Role::Clone {
                if let Some(block) = self.timeline.adopt(skb, ret) {
                    done |= self.emit_block(block);
                }
            }
            return done;
        }
        let ends = matches!(tracer.role, Role::Consume | Role::Drop);
        self.push_record(skb, rec, ends)
    }

    /// Adds a record to the timeline; true once `count` is reached.
    fn push_record(&mut self, skb: u64, rec: Record, ends: bool) -> bool {
        match self.timeline.push(skb, rec, ends, None) {
            Some(block) => self.emit_block(block),
            None => false,
        }
    }

    /// Whether a record still waits for its function's return value.
    fn awaits_return(&self, rec: &Record) -> bool {
        rec.ev.retval.is_none()
            && self
                .plan
                .tracers
                .get(rec.ev.tracer_id as usize)
                .is_some_and(|t| t.has_ret())
    }

    /// Prints a finished block, or parks it while return values of its
    /// functions are still to come (the skb often dies inside the functions
    /// that handle it); true once `count` is reached.
    fn emit_block(&mut self, block: Block<Record>) -> bool {
        if block.records.iter().any(|r| self.awaits_return(r)) {
            self.parked.push_back((block, std::time::Instant::now()));
            return false;
        }
        self.print_block(&block)
    }

    fn print_block(&mut self, block: &Block<Record>) -> bool {
        if self.summary.is_some() && !self.tally_problems(block) {
            // --diag: nothing went wrong with this packet
            return false;
        }
        self.write_block(block);
        self.printed += 1;
        self.views.count.is_some_and(|c| self.printed >= c)
    }

    /// Gives a return value to a parked block; prints the block once it
    /// has them all. True once `count` is reached.
    fn amend_parked(&mut self, mut set_ret: impl FnMut(&mut Record) -> bool) -> bool {
        let Some(pos) = self
            .parked
            .iter_mut()
            .rev()
            .position(|(b, _)| b.records.iter_mut().rev().any(&mut set_ret))
        else {
            return false;
        };
        let pos = self.parked.len() - 1 - pos;
        let complete = self.parked[pos]
            .0
            .records
            .iter()
            .all(|r| !self.awaits_return(r));
        match complete.then(|| self.parked.remove(pos)).flatten() {
            Some((block, _)) => self.print_block(&block),
            None => false,
        }
    }

    /// Prints parked blocks that waited `max_wait` or longer (all of them
    /// with `Duration::ZERO`); true once `count` is reached.
    fn release_parked(&mut self, max_wait: Duration) -> bool {
        while let Some((_, since)) = self.parked.front() {
            if since.elapsed() < max_wait {
                break;
            }
            let Some((block, _)) = self.parked.pop_front() else {
                break;
            };
            if self.print_block(&block) {
                return true;
            }
        }
        false
    }

    /// `--diag`: adds the problems a block shows to the summary; whether it
    /// shows any.
    fn tally_problems(&mut self, block: &Block<Record>) -> bool {
        let resolver = self.resolver();
        let mut any = false;
        for r in &block.records {
            let (mut loc, mut reason) = (String::new(), String::new());
            let ann = resolver.annotations(r, &mut loc, &mut reason);
            let Some(kind) = Problem::of_event(ann.tracer, ann.drop_reason, ann.location) else {
                continue;
            };
            any = true;
            let key = DiagKey {
                kind,
                place: self.sink.place(&r.ev),
                rule: r.rule.as_ref().map(NftRule::short),
            };
            if let Some(s) = self.summary.as_mut() {
                s.add(key, r.ev.ts_ns);
            }
        }
        any
    }

    /// Appends the `--diag` summary, once.
    fn write_summary(&mut self) -> Result<()> {
        if let Some(s) = self.summary.take() {
            self.sink.diag_summary(&mut self.buf, &s);
            self.write_out()?;
        }
        Ok(())
    }

    /// Emits the contexts idle for `views.idle_flush`; true once `count`
    /// is reached.
    fn flush_idle(&mut self) -> bool {
        let Some(idle) = self.views.idle_flush.filter(|_| self.views.timeline) else {
            return false;
        };
        let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        let before = crate::system::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(idle_ns);
        for block in self.timeline.flush_idle(before, |r| r.ev.ts_ns) {
            if self.emit_block(block) {
                return true;
            }
        }
        false
    }

    fn flush_timeline(&mut self) -> Result<()> {
        if self.release_parked(Duration::ZERO) {
            return self.write_out();
        }
        for block in self.timeline.flush() {
            if self.views.count.is_some_and(|c| self.printed >= c) || self.print_block(&block) {
                break;
            }
        }
        self.write_out()
    }
}

/// Resolves the names an event prints with.
#[derive(Clone, Copy)]
struct Resolver<'a> {
    plan: &'a Plan,
    symbols: &'a Symbols,
}

impl<'a> Resolver<'a> {
    fn annotations<'r>(
        self,
        rec: &'r Record,
        location: &'r mut String,
        reason: &'r mut String,
    ) -> Annotations<'r>
    where
        'a: 'r,
    {
        let (tracer, group, role) = match self.plan.tracers.get(rec.ev.tracer_id as usize) {
            Some(t) => (t.name.as_str(), t.group.as_str(), t.role),
            None => ("?", "?", Role::Normal),
        };
        let is_drop = role == Role::Drop;
        if is_drop {
            *reason = self.symbols.drop_reason(rec.ev.drop_reason);
            if rec.ev.location != 0 {
                *location = self.symbols.symbolize(rec.ev.location);
            }
        }
        Annotations {
            tracer,
            group,
            drop_reason: is_drop.then_some(reason.as_str()),
            location: (is_drop && rec.ev.location != 0).then_some(location.as_str()),
            stack: rec.stack.as_deref(),
            rule: rec.rule.as_ref(),
        }
    }
}

impl<'a, S: Sink> Printer<'a, S> {
    fn write_record(&mut self, rec: &Record) {
        let (mut loc, mut reason) = (String::new(), String::new());
        let ann = self.resolver().annotations(rec, &mut loc, &mut reason);
        if let Some(p) = self.pcap.as_mut() {
            if p.has_room() {
                p.event(&rec.ev, &ann, &[]);
            }
        }
        if !self.out.has_room(WRITE_CHUNK) {
            // The reader does not keep up: don't format what would be
            // dropped anyway.
            self.stalled += 1;
            return;
        }
        self.sink.event(&mut self.buf, &rec.ev, &ann);
        self.buf_events += 1;
    }

    /// `--pcap`: the packets of a block, each with the NAT lines the text
    /// prints before it.
    fn pcap_block(&mut self, block: &Block<Record>) {
        let resolver = self.resolver();
        let Some(p) = self.pcap.as_mut() else {
            return;
        };
        let mut nat = nettrace_common::nat::Tracker::default();
        for r in &block.records {
            let lines: Vec<String> = nat
                .next(nettrace_common::nat::Endpoints::of_event(&r.ev))
                .iter()
                .map(|n| {
                    let mut s = String::new();
                    n.write_line(&mut s);
                    s
                })
                .collect();
            if !p.has_room() {
                continue;
            }
            let (mut loc, mut reason) = (String::new(), String::new());
            let ann = resolver.annotations(r, &mut loc, &mut reason);
            p.event(&r.ev, &ann, &lines);
        }
    }

    fn write_block(&mut self, block: &Block<Record>) {
        self.pcap_block(block);
        if !self.out.has_room(WRITE_CHUNK) {
            self.stalled += block.records.len() as u64;
            return;
        }
        self.buf_events += block.records.len() as u64;
        let mut buf = std::mem::take(&mut self.buf);
        let resolver = self.resolver();
        let mut scratch: Vec<(String, String)> = block
            .records
            .iter()
            .map(|_| (String::new(), String::new()))
            .collect();
        let anns: Vec<Annotations<'_>> = block
            .records
            .iter()
            .zip(scratch.iter_mut())
            .map(|(r, (l, d))| resolver.annotations(r, l, d))
            .collect();
        let items = block.records.iter().zip(anns).map(|(r, a)| (&r.ev, a));
        self.sink.timeline(&mut buf, block.skb, items);
        self.buf = buf;
    }

    fn resolver(&self) -> Resolver<'a> {
        Resolver {
            plan: self.plan,
            symbols: self.symbols,
        }
    }

    /// Hands what was formatted to the writer; drops it (counted) when the
    /// writer's queue is full.
    fn write_out(&mut self) -> Result<()> {
        if let Some(p) = self.pcap.as_mut() {
            p.write_out()?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.buf);
        let events = std::mem::take(&mut self.buf_events);
        if !self
            .out
            .send(text, events)
            .context("writing events to stdout")?
        {
            self.stalled += events;
        }
        Ok(())
    }

    /// The loss counters now.
    fn loss_now(&self, stats: &Stats) -> LossStats {
        LossStats {
            matched: stats.get(stat::MATCHED),
            ringbuf_full: stats.get(stat::RB_FULL),
            skb_map_full: stats.get(stat::SKB_MAP_FULL),
            stack_failed: stats.get(stat::STACK_FAIL),
            rate_limited: stats.get(stat::RATE_LIMITED),
            bytes_failed: stats.get(stat::BYTES_FAIL),
        }
    }

    /// Reports new losses within a second: on stderr (a line that changed
    /// since the last one) and on stdout (a JSON record, a protocol line).
    fn report_loss(&mut self, stats: &Stats, at_exit: bool) -> Result<()> {
        let now = self.loss_now(stats);
        self.report_loss_stdout(&now, at_exit)?;
        self.report_loss_stderr(&now);
        Ok(())
    }

    /// The stdout side of [`Printer::report_loss`] (the stderr side comes
    /// at exit once the writer is done: its stalled count is final then).
    fn report_loss_stdout(&mut self, now: &LossStats, at_exit: bool) -> Result<()> {
        let kernel_grew = now.ringbuf_full > self.reported_loss.ringbuf_full
            || now.skb_map_full > self.reported_loss.skb_map_full
            || now.stack_failed > self.reported_loss.stack_failed
            || now.rate_limited > self.reported_loss.rate_limited
            || now.bytes_failed > self.reported_loss.bytes_failed;
        let grew = kernel_grew || self.stalled > self.reported_stalled;
        // What was formatted goes first (or is counted as dropped first).
        self.write_out()?;
        let mut line = String::new();
        self.sink.lost(
            &mut line,
            &LossReport {
                now,
                stalled: self.stalled,
                kernel_grew,
                grew,
                at_exit,
            },
        );
        if !line.is_empty() {
            self.out
                .send_control(line)
                .context("writing events to stdout")?;
        }
        self.reported_loss = *now;
        self.reported_stalled = self.stalled;
        Ok(())
    }

    /// Prints the loss line on stderr unless it is the one printed last.
    fn report_loss_stderr(&mut self, now: &LossStats) {
        // The agent's losses go on stdout; stderr only says why stdout
        // itself lost some.
        if !self.sink.losses_on_stderr() && self.stalled == 0 {
            return;
        }
        let Some(msg) = loss_message(now, self.stalled) else {
            return;
        };
        if self.last_message.as_deref() != Some(msg.as_str()) {
            eprintln!("{msg}");
            self.last_message = Some(msg);
        }
    }

    /// The end, once the writer is done or given up on: the final counters
    /// on stderr; when the writer is still blocked, the process exits here
    /// (the programs are already detached).
    fn finish_done(&mut self, r: Finish, now: &LossStats, detach_ms: Option<u128>) -> Result<()> {
        let blocked = matches!(r, Finish::TimedOut);
        if blocked {
            // What the reader never took is lost too.
            self.stalled += self.out.events_in_flight();
        }
        self.report_loss_stderr(now);
        if self.decode_errors > 0 {
            eprintln!(
                "nettrace: {} event records could not be decoded",
                self.decode_errors
            );
        }
        if let Some(ms) = detach_ms {
            eprintln!("detached in {ms} ms");
        }
        if blocked {
            let _ = io::stderr().flush();
            std::process::exit(0);
        }
        match r {
            Finish::Done(r) => r.context("writing events to stdout"),
            Finish::TimedOut => Ok(()),
        }
    }
}

/// The stderr loss line: the kernel's counters and the events dropped
/// because stdout was not read.
fn loss_message(now: &LossStats, stalled: u64) -> Option<String> {
    let msg = now.message();
    if stalled == 0 {
        return msg;
    }
    let part = format!(
        "{stalled} {} dropped (output stalled: stdout is not read fast enough)",
        if stalled == 1 { "event" } else { "events" }
    );
    Some(match msg {
        Some(m) => format!("{m}; {part}"),
        None => format!("nettrace: {part}"),
    })
}
