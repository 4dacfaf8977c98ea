//! Where the session's events go. The session ([`crate::session`]) decodes,
//! groups and resolves events, and hands each one (or each timeline block)
//! to a [`Sink`] that formats it: [`Lines`], the text or JSON lines of the
//! command line, or the agent's protocol lines (`crate::agent::AgentSink`).
//! The session knows nothing of either.

use nettrace_common::diag::Summary;
use nettrace_common::format::{self, Annotations, LossStats, TextOptions};
use nettrace_common::{json, Event};

use crate::cli::OutputFormat;

/// What the loss counters did since they were last reported.
#[derive(Debug, Clone, Copy)]
pub struct LossReport<'a> {
    /// The kernel's counters now (totals).
    pub now: &'a LossStats,
    /// Events dropped so far because stdout was not read fast enough.
    pub stalled: u64,
    /// A kernel counter grew since the last report.
    pub kernel_grew: bool,
    /// A kernel counter or `stalled` grew since the last report.
    pub grew: bool,
    /// The last report, at the end of the session.
    pub at_exit: bool,
}

/// Formats what the session hands it, appending to the session's buffer
/// (which goes to stdout).
pub trait Sink {
    /// Appends one event.
    fn event(&mut self, out: &mut String, ev: &Event, ann: &Annotations<'_>);

    /// Appends the events of one skb (`--timeline`).
    fn timeline<'a, I>(&mut self, out: &mut String, skb: u64, items: I)
    where
        I: IntoIterator<Item = (&'a Event, Annotations<'a>)>;

    /// Appends the loss record for stdout, when there is one to write.
    fn lost(&mut self, out: &mut String, report: &LossReport<'_>);

    /// Whether the kernel's loss counters also go to stderr. When they do
    /// not, the reader gets them on stdout, and stderr only says why stdout
    /// itself lost events.
    fn losses_on_stderr(&self) -> bool;

    /// Where an event happened, for the `--diag` summary.
    fn place(&self, ev: &Event) -> String {
        format!("netns {}", ev.netns)
    }

    /// Appends the `--diag` summary at the end of the session.
    fn diag_summary(&mut self, out: &mut String, summary: &Summary);
}

/// The command line's output: text lines (as the original nettrace prints
/// them) or JSON lines.
#[derive(Debug, Clone, Copy)]
pub enum Lines {
    /// Text, with its layout.
    Text(TextOptions),
    /// JSON objects.
    Json,
    /// Nothing: stdout carries something else (`--pcap -`).
    Off,
}

impl Lines {
    /// The sink of `-o FORMAT`; `Off` when stdout is taken (`--pcap -`).
    pub fn new(output: OutputFormat, text: TextOptions, stdout_taken: bool) -> Lines {
        match output {
            _ if stdout_taken => Lines::Off,
            OutputFormat::Text => Lines::Text(text),
            OutputFormat::Json => Lines::Json,
        }
    }
}

impl Sink for Lines {
    fn event(&mut self, out: &mut String, ev: &Event, ann: &Annotations<'_>) {
        match *self {
            Lines::Text(opts) => format::write_event(out, ev, ann, opts),
            Lines::Json => json::write_event_json(out, ev, ann),
            Lines::Off => {}
        }
    }

    fn timeline<'a, I>(&mut self, out: &mut String, skb: u64, items: I)
    where
        I: IntoIterator<Item = (&'a Event, Annotations<'a>)>,
    {
        match *self {
            Lines::Text(opts) => format::write_timeline_block(out, skb, items, opts),
            Lines::Json => json::write_timeline_json(out, skb, items),
            Lines::Off => {}
        }
    }

    fn lost(&mut self, out: &mut String, r: &LossReport<'_>) {
        // Text has no loss record on stdout: stderr says it.
        if matches!(self, Lines::Json)
            && (r.grew || (r.at_exit && (!r.now.is_clean() || r.stalled > 0)))
        {
            json::write_lost_json_stalled(out, r.now, r.stalled);
        }
    }

    fn losses_on_stderr(&self) -> bool {
        true
    }

    fn diag_summary(&mut self, out: &mut String, summary: &Summary) {
        match self {
            // stdout carries the pcap-ng stream: the summary goes to stderr
            Lines::Off => {
                let mut text = String::new();
                summary.write(&mut text, false);
                eprint!("{text}");
            }
            _ => summary.write(out, matches!(self, Lines::Json)),
        }
    }
}
