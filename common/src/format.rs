//! Text output: one line per event (plus return value and call stack lines),
//! timeline blocks and the lost-events message.

use std::fmt::{self, Display, Write};

use crate::conntrack::Conntrack;
use crate::event::Event;
use crate::summary::{write_dec, write_event_summary, write_padded};

/// What user space resolved for one event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Annotations<'a> {
    /// Display name of the tracer that fired.
    pub tracer: &'a str,
    /// Name of the tracer's group (its parent in the tracer tree).
    pub group: &'a str,
    /// Drop reason name; when set, `, reason: NAME` is appended.
    pub drop_reason: Option<&'a str>,
    /// Resolved `location` (`sym+0xoff`); when set, `, location: ...` is appended.
    pub location: Option<&'a str>,
    /// Resolved call stack frames, innermost first.
    pub stack: Option<&'a [String]>,
    /// The netfilter rule that decided the packet's fate (`--nft-trace`).
    pub rule: Option<&'a crate::rule::NftRule>,
}

/// Which text layout to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// `--detail`: skb, interface, task and group columns.
    pub detail: bool,
    /// `--timeline`: pad the interface and task columns to a fixed width.
    pub timeline: bool,
    /// `--detail` or `--diag`: an `advice:` line under drops, resets,
    /// retransmissions and ICMP errors sent ([`crate::advice`]).
    pub advice: bool,
}

/// A monotonic timestamp shown as `seconds.microseconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_timestamp(f, self.0)
    }
}

/// `seconds.micros` of a nanosecond count, without the formatting machinery.
pub(crate) fn write_timestamp<W: Write + ?Sized>(out: &mut W, ns: u64) -> fmt::Result {
    write_dec(out, ns / 1_000_000_000)?;
    let mut micros = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
    let mut m = (ns % 1_000_000_000) / 1_000;
    for d in micros[1..].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    micros
        .iter()
        .try_for_each(|&c| out.write_char(char::from(c)))
}

/// The 16 lower-case hex digits of `v`.
pub(crate) fn write_hex16<W: Write + ?Sized>(out: &mut W, v: u64) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    for (i, d) in buf.iter_mut().enumerate() {
        *d = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    buf.iter().try_for_each(|&c| out.write_char(char::from(c)))
}

/// Width of the `{iface}][{task}` part of a detail line in timeline mode.
const TIMELINE_DEV_TASK_WIDTH: usize = 30;

/// Appends the line(s) of one event to `out`, each ending with `\n`.
///
/// Default: `{ts}: [{tracer:<24}]: {summary}`; with `detail`:
/// `{ts}: [{skb:016x}][{ifindex}:{ifname}][pid:{pid},{comm}][{group:<12}][{tracer:<24}]: {summary}`.
/// Followed by, when present, in this order: the netfilter rule line
/// (`--nft-trace`), the conntrack entry's `ct:` line (with `detail` only, see
/// [`crate::conntrack::write_ct_line`]), the `advice:` line, a
/// `return value:` line and a `Call Stack:` block.
pub fn write_event(out: &mut String, ev: &Event, ann: &Annotations<'_>, opts: TextOptions) {
    // fmt::Write for String never fails.
    let _ = write_event_inner(out, ev, ann, opts);
}

fn write_event_inner(
    out: &mut String,
    ev: &Event,
    ann: &Annotations<'_>,
    opts: TextOptions,
) -> fmt::Result {
    // The hot path of text output: plain appends rather than `write!`.
    let cols = Columns {
        skb: Skb::Addr(ev.skb),
        ifindex: ev.ifindex,
        ifname: &ev.ifname,
        pid: ev.pid,
        comm: &ev.comm,
        group: ann.group,
    };
    write_head(out, ev.ts_ns, opts.then_cols(&cols), ann.tracer)?;
    write_event_summary(out, ev)?;
    write_drop(out, ann.drop_reason, ann.location);
    out.push('\n');
    if let Some(rule) = ann.rule {
        rule.write_line(out);
    }
    write_ct(out, ev.ct.as_ref(), opts);
    if opts.advice {
        write_advice(out, ann.tracer, ann.drop_reason);
    }
    if let Some(ret) = ev.retval {
        writeln!(out, "                return value:{ret:x}")?;
    }
    write_stack(out, ann.stack)
}

/// Appends the `ct:` line of a conntrack entry, with `--detail` only (the
/// same for host and remote events).
pub(crate) fn write_ct(out: &mut String, ct: Option<&Conntrack>, opts: TextOptions) {
    if let (Some(ct), true) = (ct, opts.detail) {
        crate::conntrack::write_ct_line(out, ct);
    }
}

/// The `                advice: ...` line of an event that shows a problem
/// (see [`crate::diag::Problem::of_event`]), when there is advice for it.
pub fn write_advice(out: &mut String, tracer: &str, drop_reason: Option<&str>) {
    let advice = crate::diag::Problem::of_event(tracer, drop_reason, None).and_then(|p| p.advice());
    if let Some(a) = advice {
        out.push_str("                ");
        out.push_str(&a.line());
        out.push('\n');
    }
}

/// An skb address, as the kernel gave it or as text (16 hex digits).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Skb<'a> {
    /// The address.
    Addr(u64),
    /// Already formatted.
    Text(&'a str),
}

/// The columns `--detail` adds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns<'a> {
    pub(crate) skb: Skb<'a>,
    pub(crate) ifindex: u32,
    pub(crate) ifname: &'a str,
    pub(crate) pid: u32,
    pub(crate) comm: &'a str,
    pub(crate) group: &'a str,
}

impl TextOptions {
    /// The detail columns to write, with the timeline padding, when `detail` is on.
    pub(crate) fn then_cols<'c, 'a>(
        &self,
        cols: &'c Columns<'a>,
    ) -> Option<(&'c Columns<'a>, bool)> {
        self.detail.then_some((cols, self.timeline))
    }
}

/// Writes `{ts}: ` then, with `cols`, the detail columns (padded for timelines when the
/// flag is set), then `[{tracer:<24}]: `.
pub(crate) fn write_head(
    out: &mut String,
    ts_ns: u64,
    cols: Option<(&Columns<'_>, bool)>,
    tracer: &str,
) -> fmt::Result {
    write_timestamp(out, ts_ns)?;
    out.push_str(": ");
    if let Some((c, timeline)) = cols {
        out.push('[');
        match c.skb {
            Skb::Addr(a) => write_hex16(out, a)?,
            Skb::Text(t) => out.push_str(t),
        }
        out.push_str("][");
        let start = out.len();
        if c.ifindex == 0 {
            out.push_str("    ");
        } else {
            write_dec(out, u64::from(c.ifindex))?;
            out.push(':');
            out.push_str(c.ifname);
        }
        out.push_str("][pid:");
        write_dec(out, u64::from(c.pid))?;
        out.push(',');
        out.push_str(c.comm);
        if timeline {
            let used = out[start..].chars().count();
            for _ in used..TIMELINE_DEV_TASK_WIDTH {
                out.push(' ');
            }
        }
        out.push_str("][");
        write_padded(out, c.group, 12)?;
        out.push(']');
    }
    out.push('[');
    write_padded(out, tracer, 24)?;
    out.push_str("]: ");
    Ok(())
}

/// Appends `, reason: NAME` and `, location: SYM+0xOFF` when set.
pub(crate) fn write_drop(out: &mut String, reason: Option<&str>, location: Option<&str>) {
    if let Some(reason) = reason {
        out.push_str(", reason: ");
        out.push_str(reason);
    }
    if let Some(loc) = location {
        out.push_str(", location: ");
        out.push_str(loc);
    }
}

/// Appends the `Call Stack:` block when there is a stack.
pub(crate) fn write_stack(out: &mut String, stack: Option<&[String]>) -> fmt::Result {
    if let Some(stack) = stack {
        out.push_str("Call Stack:\n");
        for frame in stack {
            writeln!(out, "    -> {frame}")?;
        }
    }
    Ok(())
}

/// Appends the header line that starts a timeline block.
pub fn write_timeline_header(out: &mut String, skb: u64) {
    let _ = writeln!(
        out,
        "<------------------- skb: {skb:016x} ---------------------->"
    );
}

/// Appends a whole timeline block: header, event lines with a `NAT` line
/// where the packet's addresses or ports changed ([`crate::nat`]), one
/// empty line.
pub fn write_timeline_block<'a, I>(out: &mut String, skb: u64, items: I, opts: TextOptions)
where
    I: IntoIterator<Item = (&'a Event, Annotations<'a>)>,
{
    write_timeline_header(out, skb);
    let mut nat = crate::nat::Tracker::default();
    for (ev, ann) in items {
        let now = crate::nat::Endpoints::of_event(ev);
        for n in nat.next(now) {
            n.write_line(out);
        }
        write_event(out, ev, &ann, opts);
    }
    out.push('\n');
}

/// Loss counters read from the kernel's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossStats {
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// skbs that `--skb-mode` could not remember (map full).
    pub skb_map_full: u64,
    /// Call stacks that could not be collected.
    pub stack_failed: u64,
    /// Events that passed the filter (produced in the kernel, including the
    /// ones later lost or rate-limited).
    pub matched: u64,
    /// Events suppressed by `--rate-limit`.
    pub rate_limited: u64,
    /// Events sent without the packet bytes `--pcap` asked for (they could
    /// not be copied in the kernel).
    pub bytes_failed: u64,
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

impl LossStats {
    /// True when nothing was lost.
    pub fn is_clean(&self) -> bool {
        self.ringbuf_full == 0
            && self.skb_map_full == 0
            && self.stack_failed == 0
            && self.rate_limited == 0
            && self.bytes_failed == 0
    }

    /// One line for stderr (without `\n`) when something was lost, e.g.
    /// `nettrace: 12 events lost (ring buffer full); 3 skbs not remembered by --skb-mode (map full)`.
    pub fn message(&self) -> Option<String> {
        if self.is_clean() {
            return None;
        }
        let mut s = String::from("nettrace: ");
        let mut sep = "";
        if self.ringbuf_full > 0 {
            let n = self.ringbuf_full;
            let _ = write!(
                s,
                "{n} {} lost (ring buffer full; narrow the filter or trace fewer functions)",
                plural(n, "event", "events")
            );
            sep = "; ";
        }
        if self.skb_map_full > 0 {
            let n = self.skb_map_full;
            let _ = write!(
                s,
                "{sep}{n} {} not remembered by --skb-mode (map full)",
                plural(n, "skb", "skbs")
            );
            sep = "; ";
        }
        if self.stack_failed > 0 {
            let n = self.stack_failed;
            let _ = write!(
                s,
                "{sep}{n} call {} not collected",
                plural(n, "stack", "stacks")
            );
            sep = "; ";
        }
        if self.rate_limited > 0 {
            let n = self.rate_limited;
            let _ = write!(
                s,
                "{sep}{n} {} suppressed by --rate-limit",
                plural(n, "event", "events")
            );
            sep = "; ";
        }
        if self.bytes_failed > 0 {
            let n = self.bytes_failed;
            let _ = write!(
                s,
                "{sep}{n} {} without its packet bytes (not copied in the kernel; in the pcap file with no bytes)",
                plural(n, "event", "events")
            );
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::sample;
    use crate::event::{Packet, L4};
    use std::net::Ipv4Addr;

    const DETAIL: TextOptions = TextOptions {
        detail: true,
        timeline: false,
        advice: true,
    };
    const TIMELINE: TextOptions = TextOptions {
        detail: true,
        timeline: true,
        advice: true,
    };

    fn ann<'a>(tracer: &'a str, group: &'a str) -> Annotations<'a> {
        Annotations {
            tracer,
            group,
            ..Annotations::default()
        }
    }

    fn line(ev: &Event, a: &Annotations<'_>, o: TextOptions) -> String {
        let mut s = String::new();
        write_event(&mut s, ev, a, o);
        s
    }

    #[test]
    fn hex16_matches_std_formatting() {
        for v in [0u64, 1, 0xffff_8881_3900_0000, u64::MAX] {
            let mut s = String::new();
            write_hex16(&mut s, v).expect("string write");
            assert_eq!(s, format!("{v:016x}"));
        }
        assert_eq!(Timestamp(u64::MAX).to_string(), "18446744073.709551");
    }

    #[test]
    fn timestamp() {
        assert_eq!(Timestamp(453_516_922_978_000).to_string(), "453516.922978");
        assert_eq!(Timestamp(1_000_999).to_string(), "0.001000");
        assert_eq!(Timestamp(0).to_string(), "0.000000");
        assert_eq!(Timestamp(5_000_000_000).to_string(), "5.000000");
    }

    #[test]
    fn default_line_like_the_seed() {
        let ev = sample();
        assert_eq!(
            line(&ev, &ann("napi_gro_receive", "link-in"), TextOptions::default()),
            "453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1\n"
        );
        assert_eq!(
            line(&ev, &ann("__netif_receive_skb_core", "link-in"), TextOptions::default()),
            "453516.922978: [__netif_receive_skb_core]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1\n"
        );
    }

    #[test]
    fn detail_line_like_the_seed() {
        let mut ev = sample();
        ev.ts_ns = 454_861_534_996_123;
        assert_eq!(
            line(&ev, &ann("napi_gro_receive", "link-in"), DETAIL),
            "454861.534996: [ffff8887b6260800][2:eth1][pid:0,swapper/3][link-in     ][napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1\n"
        );
    }

    #[test]
    fn timeline_lines_like_the_seed() {
        let mut ev = sample();
        ev.ts_ns = 456_901_372_921_000;
        ev.skb = 0xffff_8887_b626_0200;
        ev.pid = 897_081;
        ev.comm = "nettrace".into();
        ev.retval = Some(0xffff_8885_8f24_2900);
        assert_eq!(
            line(&ev, &ann("skb_clone", "life"), TIMELINE),
            "456901.372921: [ffff8887b6260200][2:eth1][pid:897081,nettrace   ][life        ][skb_clone               ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1\n                return value:ffff88858f242900\n"
        );
        let mut ev = sample();
        ev.ts_ns = 456_901_372_837_000;
        ev.skb = 0xffff_8887_b626_0200;
        assert_eq!(
            line(&ev, &ann("napi_gro_receive", "link-in"), TIMELINE),
            "456901.372837: [ffff8887b6260200][2:eth1][pid:0,swapper/3       ][link-in     ][napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1\n"
        );
        // without a device the task column takes the room of the interface
        let mut ev = sample();
        ev.ts_ns = 461_052_796_174_000;
        ev.skb = 0xffff_8885_8f24_3a00;
        ev.ifindex = 0;
        ev.ifname.clear();
        ev.comm = "swapper/2".into();
        ev.packet = Packet::Ipv4 {
            src: Ipv4Addr::new(9, 135, 224, 89),
            dst: Ipv4Addr::new(10, 35, 13, 63),
            l4: L4::Icmp {
                ty: 0,
                code: 0,
                id: 1,
                seq: 1,
            },
        };
        assert_eq!(
            line(&ev, &ann("ip_send_skb", "ip-out"), TIMELINE),
            "461052.796174: [ffff88858f243a00][    ][pid:0,swapper/2         ][ip-out      ][ip_send_skb             ]: ICMP: 9.135.224.89 -> 10.35.13.63, ping reply     , seq: 1\n"
        );
        // outside timeline mode nothing is padded
        assert_eq!(
            line(&ev, &ann("ip_send_skb", "ip-out"), DETAIL),
            "461052.796174: [ffff88858f243a00][    ][pid:0,swapper/2][ip-out      ][ip_send_skb             ]: ICMP: 9.135.224.89 -> 10.35.13.63, ping reply     , seq: 1\n"
        );
    }

    #[test]
    fn drop_reason_location_and_stack() {
        let ev = sample();
        let stack = vec![
            "kfree_skb_reason+0x0".to_string(),
            "nf_hook_slow+0x9c".to_string(),
        ];
        let a = Annotations {
            tracer: "kfree_skb",
            group: "life",
            drop_reason: Some("NETFILTER_DROP"),
            location: Some("nf_hook_slow+0x9c"),
            stack: Some(&stack),
            rule: None,
        };
        assert_eq!(
            line(&ev, &a, TextOptions::default()),
            "453516.922978: [kfree_skb               ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1, reason: NETFILTER_DROP, location: nf_hook_slow+0x9c\n\
             Call Stack:\n    -> kfree_skb_reason+0x0\n    -> nf_hook_slow+0x9c\n"
        );
    }

    #[test]
    fn conntrack_line_with_detail_only() {
        let mut ev = sample();
        ev.ct = Some(crate::conntrack::tests::dnat_sample());
        ev.retval = Some(0x2a);
        let a = ann("net_dev_queue", "link-out");
        let ct = "                ct: established, dnat confirmed seen-reply, orig tcp 10.250.56.2:40123 -> 10.250.58.100:80, reply 10.250.57.2:8080 -> 10.250.56.2:40123\n";
        for opts in [DETAIL, TIMELINE] {
            let text = line(&ev, &a, opts);
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            assert_eq!(lines.len(), 3, "{text}");
            assert_eq!(lines[1], ct);
            assert_eq!(lines[2], "                return value:2a\n");
        }
        let plain = line(&ev, &a, TextOptions::default());
        assert!(!plain.contains("ct:"), "{plain}");
    }

    #[test]
    fn timeline_block() {
        let ev = sample();
        let mut out = String::new();
        write_timeline_block(
            &mut out,
            0xffff_8885_8f24_3100,
            [(&ev, ann("napi_gro_receive", "link-in"))],
            TextOptions::default(),
        );
        assert_eq!(
            out,
            "<------------------- skb: ffff88858f243100 ---------------------->\n\
             453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1\n\n"
        );
    }

    #[test]
    fn loss_message() {
        assert_eq!(LossStats::default().message(), None);
        let s = LossStats {
            ringbuf_full: 12,
            skb_map_full: 3,
            stack_failed: 0,
            matched: 1000,
            rate_limited: 0,
            bytes_failed: 0,
        };
        assert_eq!(
            s.message().as_deref(),
            Some("nettrace: 12 events lost (ring buffer full; narrow the filter or trace fewer functions); 3 skbs not remembered by --skb-mode (map full)")
        );
        let s = LossStats {
            ringbuf_full: 0,
            skb_map_full: 1,
            stack_failed: 1,
            matched: 5,
            rate_limited: 0,
            bytes_failed: 0,
        };
        assert_eq!(
            s.message().as_deref(),
            Some("nettrace: 1 skb not remembered by --skb-mode (map full); 1 call stack not collected")
        );
        let r = LossStats {
            rate_limited: 5,
            matched: 100,
            ..LossStats::default()
        };
        assert!(!r.is_clean());
        assert_eq!(
            r.message().as_deref(),
            Some("nettrace: 5 events suppressed by --rate-limit")
        );
        let b = LossStats {
            rate_limited: 1,
            bytes_failed: 2,
            ..LossStats::default()
        };
        assert!(!b.is_clean());
        assert_eq!(
            b.message().as_deref(),
            Some("nettrace: 1 event suppressed by --rate-limit; 2 events without its packet bytes (not copied in the kernel; in the pcap file with no bytes)")
        );
    }
}
