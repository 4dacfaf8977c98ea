//! The tracing session: reads events from the ring buffer until told to stop,
//! and prints them (directly, or grouped per skb in timeline mode).

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use nettrace_common::format::{self, Annotations, LossStats, TextOptions};
use nettrace_common::{json, Block, Event, RawEvent, Role, Timeline};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::agent::{self, Control, Stop};
use crate::cli::OutputFormat;
use crate::loader::{stat, Loaded, Stats};
use crate::plan::Plan;
use crate::symbols::Symbols;

/// How events are shown.
#[derive(Debug, Clone, Copy)]
pub struct Views {
    /// Text layout options.
    pub text: TextOptions,
    /// Group events per skb.
    pub timeline: bool,
    /// Text or JSON lines.
    pub output: OutputFormat,
    /// Stop after this many timeline blocks (or events without --timeline).
    pub count: Option<u64>,
    /// Report detach time at exit.
    pub verbose: bool,
}

/// An event with what had to be resolved on arrival (stacks are read from a
/// kernel map whose entries are reused, so they cannot wait).
struct Record {
    ev: Event,
    stack: Option<Vec<String>>,
}

/// Formatted output is written out whenever this much has accumulated.
const WRITE_CHUNK: usize = 256 * 1024;

/// How long a finished block waits for the return values of its functions.
const RETURN_WAIT: Duration = Duration::from_millis(500);

/// Most skb contexts kept open in timeline mode before the oldest is printed.
const MAX_OPEN_CONTEXTS: usize = 65536;

/// Runs the session until SIGINT/SIGTERM, or until `count` is reached (in
/// agent mode also until the deadline or the end of stdin).
pub async fn run(
    mut loaded: Loaded,
    plan: Plan,
    symbols: Symbols,
    views: Views,
    control: Option<Control>,
) -> Result<Stop> {
    let ring = loaded.take_ring_buffer()?;
    let stats = loaded.take_stats()?;
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as
    // long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {}", e.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (sink, deadline, input_ended) = match control {
        Some(c) => (Some(c.sink), c.deadline, Some(c.input_ended)),
        None => (None, None, None),
    };
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
    tokio::pin!(deadline, input_ended);

    let mut printer = Printer {
        plan: &plan,
        symbols: &symbols,
        views,
        timeline: Timeline::new(MAX_OPEN_CONTEXTS),
        out: io::stdout().lock(),
        buf: String::with_capacity(64 * 1024),
        printed: 0,
        reported_loss: LossStats::default(),
        decode_errors: 0,
        parked: std::collections::VecDeque::new(),
        sink,
    };

    let mut done = false;
    let mut stop = Stop::Count;
    while !done {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                done = printer.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = sigint.recv() => { stop = Stop::Signal; break }
            _ = sigterm.recv() => { stop = Stop::Signal; break }
            _ = &mut deadline => { stop = Stop::Deadline; break }
            why = &mut input_ended => { stop = why; break }
            _ = tick.tick() => {
                done = printer.release_parked(RETURN_WAIT);
                printer.write_out()?;
                printer.report_loss(&stats, false)?;
            }
        }
    }
    // Stop the producers before the last drain and the last look at the
    // counters: then every event the kernel produced has either been
    // delivered or been counted as lost. (The ring buffer, stack and
    // counter maps were taken out of `loaded` and outlive the programs.)
    let detaching = std::time::Instant::now();
    drop(loaded);
    let detach_ms = detaching.elapsed().as_millis();
    if !done {
        printer.drain(ring.get_mut())?;
        printer.flush_timeline()?;
    }
    printer.report_loss(&stats, true)?;
    if views.verbose {
        eprintln!("detached in {detach_ms} ms");
    }
    Ok(stop)
}

struct Printer<'a> {
    plan: &'a Plan,
    symbols: &'a Symbols,
    views: Views,
    timeline: Timeline<Record>,
    out: io::StdoutLock<'static>,
    buf: String,
    printed: u64,
    reported_loss: LossStats,
    decode_errors: u64,
    /// Finished blocks waiting for return values, oldest first.
    parked: std::collections::VecDeque<(Block<Record>, std::time::Instant)>,
    /// Agent mode: scoping, annotations, protocol lines.
    sink: Option<agent::AgentSink>,
}

impl<'a> Printer<'a> {
    /// Handles every event available now; returns true once `count` is reached.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<bool> {
        let mut done = false;
        while let Some(item) = ring.next() {
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
            if self.handle(ev, &ips) {
                done = true;
                break;
            }
            // Under a sustained flood the ring buffer never runs empty: write
            // as we go, so memory stays bounded and output keeps flowing.
            if self.buf.len() >= WRITE_CHUNK {
                self.write_out()?;
            }
        }
        self.write_out()?;
        Ok(done)
    }

    /// Prints or buffers one event; true once `count` is reached.
    fn handle(&mut self, ev: Event, ips: &[u64]) -> bool {
        let stack = ev.stack_id.map(|_| self.symbols.stack(ips));
        let rec = Record { ev, stack };
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

    fn flush_timeline(&mut self) -> Result<()> {
        if self.release_parked(Duration::ZERO) {
            return self.write_out();
        }
        for block in self.timeline.flush() {
            if self.views.count.is_some_and(|c| self.printed >= c) {
                break;
            }
            self.write_block(&block);
            self.printed += 1;
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
        }
    }
}

impl<'a> Printer<'a> {
    fn write_record(&mut self, rec: &Record) {
        let (mut loc, mut reason) = (String::new(), String::new());
        let ann = self.resolver().annotations(rec, &mut loc, &mut reason);
        let mut buf = std::mem::take(&mut self.buf);
        if let Some(sink) = self.sink.as_mut() {
            sink.write_event(&mut buf, &rec.ev, &ann);
        } else {
            match self.views.output {
                OutputFormat::Text => format::write_event(&mut buf, &rec.ev, &ann, self.views.text),
                OutputFormat::Json => json::write_event_json(&mut buf, &rec.ev, &ann),
            }
        }
        self.buf = buf;
    }

    fn write_block(&mut self, block: &Block<Record>) {
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
        if let Some(sink) = self.sink.as_mut() {
            sink.write_timeline(&mut buf, block.skb, items);
            self.buf = buf;
            return;
        }
        match self.views.output {
            OutputFormat::Text => {
                format::write_timeline_block(&mut buf, block.skb, items, self.views.text)
            }
            OutputFormat::Json => json::write_timeline_json(&mut buf, block.skb, items),
        }
        self.buf = buf;
    }

    fn resolver(&self) -> Resolver<'a> {
        Resolver {
            plan: self.plan,
            symbols: self.symbols,
        }
    }

    fn write_out(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.out
                .write_all(self.buf.as_bytes())
                .context("writing events to stdout")?;
            self.out.flush().context("writing events to stdout")?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Reports new losses on stderr (and as a JSON record); at exit, the totals.
    fn report_loss(&mut self, stats: &Stats, at_exit: bool) -> Result<()> {
        let now = LossStats {
            matched: stats.get(stat::MATCHED),
            ringbuf_full: stats.get(stat::RB_FULL),
            skb_map_full: stats.get(stat::SKB_MAP_FULL),
            stack_failed: stats.get(stat::STACK_FAIL),
            rate_limited: stats.get(stat::RATE_LIMITED),
        };
        let grew = now.ringbuf_full > self.reported_loss.ringbuf_full
            || now.skb_map_full > self.reported_loss.skb_map_full
            || now.stack_failed > self.reported_loss.stack_failed
            || now.rate_limited > self.reported_loss.rate_limited;
        if self.sink.is_some() {
            if grew || at_exit {
                self.buf.push_str(&agent::lost_msg(&now).to_line());
                self.buf.push('\n');
                self.write_out()?;
                self.reported_loss = now;
            }
        } else if grew || (at_exit && !now.is_clean()) {
            if let Some(msg) = now.message() {
                eprintln!("{msg}");
            }
            if self.views.output == OutputFormat::Json {
                json::write_lost_json(&mut self.buf, &now);
                self.write_out()?;
            }
            self.reported_loss = now;
        }
        if at_exit && self.decode_errors > 0 {
            eprintln!(
                "nettrace: {} event records could not be decoded",
                self.decode_errors
            );
        }
        Ok(())
    }
}
