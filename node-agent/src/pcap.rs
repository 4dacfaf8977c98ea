//! `nettrace --pcap FILE`: every event the session prints also goes, as a
//! packet of a pcap-ng stream ([`nettrace_common::pcapng`]), to a file of
//! its own or (`-`) to stdout. The stream is written by its own writer
//! thread behind a bounded queue ([`Output`]), as stdout is: a reader that
//! does not keep up (`| wireshark -k -i -`, stalled) never blocks tracing;
//! what does not fit is dropped and counted.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use nettrace_common::format::Annotations;
use nettrace_common::pcapng::{Interface, Mark, Notes, Record, Writer};
use nettrace_common::protocol::Clock;
use nettrace_common::summary::write_event_summary;
use nettrace_common::Event;

use crate::output::Output;

/// Formatted packets are handed to the writer once this much accumulated.
const WRITE_CHUNK: usize = 256 * 1024;

/// The pcap-ng output of a session.
pub struct Pcap {
    writer: Writer,
    /// The writer thread (file or stdout).
    pub out: Output,
    /// Blocks formatted since the last hand-over.
    buf: Vec<u8>,
    /// Packets in `buf`.
    buf_events: u64,
    /// What the writer had written at the last hand-over.
    mark: Mark,
    /// Packets dropped because the queue was full.
    pub dropped: u64,
    /// To put the events' monotonic times on Unix time.
    clock: Clock,
}

impl Pcap {
    /// The pcap-ng stream of `--pcap PATH` (`-`: stdout), whose packets
    /// hold at most `snaplen` bytes.
    pub fn open(path: &Path, snaplen: u16, clock: Clock) -> Result<Pcap> {
        let out = if path == Path::new("-") {
            Output::stdout()
        } else {
            let file = File::create(path)
                .with_context(|| format!("--pcap: cannot create {}", path.display()))?;
            Output::file(file)
        }
        .context("cannot start the pcap writer")?;
        let mut writer = Writer::new(concat!("nettrace ", env!("CARGO_PKG_VERSION")), snaplen);
        // The header right away: a reader (wireshark -k -i -) starts at once.
        let mut buf = Vec::new();
        writer.start(&mut buf);
        Ok(Pcap {
            mark: writer.mark(),
            writer,
            out,
            buf,
            buf_events: 0,
            dropped: 0,
            clock,
        })
    }

    /// Whether the writer's queue has room (else the event is counted as
    /// dropped, not formatted).
    pub fn has_room(&mut self) -> bool {
        if self.out.has_room(WRITE_CHUNK) {
            return true;
        }
        self.dropped += 1;
        false
    }

    /// Appends one event as a packet; `nat` holds the NAT lines printed
    /// before it in its timeline block.
    pub fn event(&mut self, ev: &Event, ann: &Annotations<'_>, nat: &[String]) {
        let skb = format!("{:016x}", ev.skb);
        let mut summary = String::with_capacity(96);
        let _ = write_event_summary(&mut summary, ev);
        let ret = ev.retval.map(|r| format!("{r:x}"));
        let rule = ann.rule.map(|r| {
            let mut s = String::new();
            r.write_line(&mut s);
            s
        });
        let comments = Notes {
            tracer: ann.tracer,
            group: ann.group,
            skb: &skb,
            ifindex: ev.ifindex,
            ifname: &ev.ifname,
            netns: u64::from(ev.netns),
            pid: ev.pid,
            comm: &ev.comm,
            summary: &summary,
            drop_reason: ann.drop_reason,
            location: ann.location,
            ret: ret.as_deref(),
            nat,
            ct: ev.ct.as_ref(),
            rule: rule.as_deref(),
            stack: ann.stack,
            pod: None,
            node: None,
            no_bytes: ev.bytes.is_none(),
        }
        .comments();
        let iface = Interface::new(&ev.ifname, ev.ifindex, u64::from(ev.netns), "");
        self.writer.packet(
            &mut self.buf,
            &Record {
                interface: &iface,
                unix_ns: self.clock.unix_ns(ev.ts_ns),
                bytes: ev.bytes.as_ref(),
                len: ev.pkt_len,
                comments: &comments,
            },
        );
        self.buf_events += 1;
    }

    /// Whether enough is formatted to hand it over.
    pub fn full(&self) -> bool {
        self.buf.len() >= WRITE_CHUNK
    }

    /// Hands what was formatted to the writer; when its queue is full, drops
    /// it (counted) and has the writer describe its interfaces again.
    pub fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.buf);
        let events = std::mem::take(&mut self.buf_events);
        if self
            .out
            .send_bytes(bytes, events)
            .context("writing the pcap file")?
        {
            self.mark = self.writer.mark();
        } else {
            self.writer.rollback(self.mark);
            self.dropped += events;
        }
        Ok(())
    }

    /// The stderr line about packets the pcap output dropped, if any.
    pub fn dropped_message(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "nettrace: {} {} not written to the pcap output (its reader did not keep up)",
                self.dropped,
                if self.dropped == 1 {
                    "packet"
                } else {
                    "packets"
                }
            )
        })
    }
}
