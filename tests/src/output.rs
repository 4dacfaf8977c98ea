//! Parsing what `nettrace` prints, and assertions that show the whole output when they fail.
//!
//! Text event lines come in two shapes:
//! - default: `TS: [TRACER]: SUMMARY`
//! - `--detail`: `TS: [SKB][IFACE][pid:PID,COMM][GROUP][TRACER]: SUMMARY`
//!
//! where fields may be space padded (`IFACE` is `ifindex:name` or blanks). Anything else
//! (the timeline headers, `Call Stack:` lines, blank lines) is not an event line.

use std::fmt::Write as _;

/// One parsed text event line. Fields are trimmed of their padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The line as printed.
    pub raw: String,
    /// `seconds.micros` as printed.
    pub ts: String,
    /// Skb address (hex, no 0x); `--detail` only.
    pub skb: Option<String>,
    /// `ifindex:name`, or an empty string when the skb has no device; `--detail` only.
    pub iface: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Tracer group (the leaf's parent); `--detail` only.
    pub group: Option<String>,
    pub tracer: String,
    /// Everything after `]: `, e.g. `ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1`.
    pub summary: String,
}

fn is_ts(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Parses a text event line (default or `--detail` shape); `None` for anything else.
pub fn parse_line(line: &str) -> Option<Event> {
    let (ts, mut rest) = line.split_once(": ")?;
    if !is_ts(ts) {
        return None;
    }
    let mut fields = Vec::new();
    while let Some(after) = rest.strip_prefix('[') {
        let end = after.find(']')?;
        fields.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    let summary = rest.strip_prefix(": ")?;
    let mut ev = Event {
        raw: line.to_string(),
        ts: ts.to_string(),
        skb: None,
        iface: None,
        pid: None,
        comm: None,
        group: None,
        tracer: String::new(),
        summary: summary.to_string(),
    };
    match fields.len() {
        1 => ev.tracer = fields[0].trim().to_string(),
        5 => {
            ev.skb = Some(fields[0].trim().to_string());
            ev.iface = Some(fields[1].trim().to_string());
            let task = fields[2].trim();
            let task = task.strip_prefix("pid:")?;
            let (pid, comm) = task.split_once(',')?;
            ev.pid = Some(pid.trim().parse().ok()?);
            ev.comm = Some(comm.trim().to_string());
            ev.group = Some(fields[3].trim().to_string());
            ev.tracer = fields[4].trim().to_string();
        }
        _ => return None,
    }
    if ev.tracer.is_empty() {
        return None;
    }
    Some(ev)
}

/// Every event line of `lines`, parsed (other lines are skipped).
pub fn find_events(lines: &[String]) -> Vec<Event> {
    lines.iter().filter_map(|l| parse_line(l)).collect()
}

/// Renders lines for a failure message.
pub fn dump(lines: &[String]) -> String {
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(s, "{i:4} | {l}");
    }
    s
}

/// One expected event in a sequence.
#[derive(Debug, Clone)]
pub struct Step {
    /// Tracer name; `*` matches any; `a|b` matches either.
    pub tracer: String,
    /// Text the summary must contain (or equal, if `exact`).
    pub summary: String,
    pub exact: bool,
    /// `ifindex:name` the `--detail` iface column must equal.
    pub iface: Option<String>,
    /// Group the `--detail` group column must equal.
    pub group: Option<String>,
}

impl Step {
    /// Tracer `tracer` with a summary containing `summary`.
    pub fn new(tracer: &str, summary: &str) -> Step {
        Step {
            tracer: tracer.to_string(),
            summary: summary.to_string(),
            exact: false,
            iface: None,
            group: None,
        }
    }

    /// Tracer `tracer` with exactly the packet summary `summary` (a drop suffix
    /// `, reason: R, location: L` may follow it).
    pub fn exact(tracer: &str, summary: &str) -> Step {
        Step {
            exact: true,
            ..Step::new(tracer, summary)
        }
    }

    /// Also require the iface column (`ifindex:name`).
    pub fn iface(mut self, label: impl Into<String>) -> Step {
        self.iface = Some(label.into());
        self
    }

    /// Also require the group column.
    pub fn group(mut self, group: &str) -> Step {
        self.group = Some(group.to_string());
        self
    }

    pub fn matches(&self, ev: &Event) -> bool {
        if !self.tracer.split('|').any(|t| t == "*" || t == ev.tracer) {
            return false;
        }
        let summary_ok = if self.exact {
            // Exact packet summary; a drop suffix (`, reason: ..., location: ...`) may follow.
            ev.summary
                .strip_prefix(self.summary.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(", reason: "))
        } else {
            ev.summary.contains(&self.summary)
        };
        if !summary_ok {
            return false;
        }
        if let Some(want) = &self.iface {
            if ev.iface.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.group {
            if ev.group.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        true
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "[{}] summary {} {:?}",
            self.tracer,
            if self.exact { "==" } else { "contains" },
            self.summary
        );
        if let Some(i) = &self.iface {
            let _ = write!(s, ", iface {i:?}");
        }
        if let Some(g) = &self.group {
            let _ = write!(s, ", group {g:?}");
        }
        s
    }
}

/// Asserts that events matching `steps` appear in `lines` in this order (other lines may be
/// interleaved). Returns the matched events. On failure, shows the steps and all the lines.
pub fn assert_subsequence_steps(lines: &[String], steps: &[Step]) -> Vec<Event> {
    let mut matched = Vec::new();
    let mut pos = 0;
    for (n, step) in steps.iter().enumerate() {
        let found = lines[pos..].iter().enumerate().find_map(|(i, l)| {
            parse_line(l)
                .filter(|ev| step.matches(ev))
                .map(|ev| (i, ev))
        });
        match found {
            Some((i, ev)) => {
                pos += i + 1;
                matched.push(ev);
            }
            None => {
                let mut msg =
                    String::from("expected event sequence not found in nettrace output\n");
                for (k, s) in steps.iter().enumerate() {
                    let mark = if k < n {
                        "ok  "
                    } else if k == n {
                        "MISS"
                    } else {
                        "    "
                    };
                    let _ = writeln!(msg, "  {mark} step {k}: {}", s.describe());
                }
                let _ = writeln!(msg, "(searched from line {pos})\n--- output ---");
                msg.push_str(&dump(lines));
                panic!("{msg}");
            }
        }
    }
    matched
}

/// [`assert_subsequence_steps`] with `(tracer, summary substring)` pairs.
pub fn assert_subsequence(lines: &[String], expected: &[(&str, &str)]) -> Vec<Event> {
    let steps: Vec<Step> = expected.iter().map(|(t, s)| Step::new(t, s)).collect();
    assert_subsequence_steps(lines, &steps)
}

/// Asserts that no line satisfies `bad`; `what` says what was not expected.
pub fn assert_no_line(lines: &[String], what: &str, bad: impl Fn(&str) -> bool) {
    let hits: Vec<&String> = lines.iter().filter(|l| bad(l)).collect();
    if !hits.is_empty() {
        let mut msg = format!("unexpected {what}: {} line(s)\n", hits.len());
        for h in hits.iter().take(20) {
            let _ = writeln!(msg, "  > {h}");
        }
        msg.push_str("--- output ---\n");
        msg.push_str(&dump(lines));
        panic!("{msg}");
    }
}

/// One `--timeline` block: a header line, the skb's lines, and an empty line.
#[derive(Debug, Clone)]
pub struct Block {
    /// The skb address from the header.
    pub skb: String,
    /// The lines between the header and the empty line (events, `return value`, stacks).
    pub lines: Vec<String>,
    /// Whether the empty line that ends a block was seen.
    pub terminated: bool,
}

impl Block {
    /// The event lines of the block, parsed.
    pub fn events(&self) -> Vec<Event> {
        find_events(&self.lines)
    }
}

/// Parses a header `<------------------- skb: ffff88858f243100 ---------------------->`.
pub fn parse_timeline_header(line: &str) -> Option<String> {
    let inner = line.trim().strip_prefix('<')?.strip_suffix('>')?;
    let inner = inner.trim_matches('-').trim();
    let skb = inner.strip_prefix("skb:")?.trim();
    if skb.is_empty() || !skb.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(skb.to_string())
}

/// Splits `--timeline` output into blocks. Lines outside blocks are ignored.
pub fn parse_timeline(lines: &[String]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut cur: Option<Block> = None;
    for l in lines {
        if let Some(skb) = parse_timeline_header(l) {
            if let Some(b) = cur.take() {
                blocks.push(b);
            }
            cur = Some(Block {
                skb,
                lines: Vec::new(),
                terminated: false,
            });
        } else if l.trim().is_empty() {
            if let Some(mut b) = cur.take() {
                b.terminated = true;
                blocks.push(b);
            }
        } else if let Some(b) = cur.as_mut() {
            b.lines.push(l.clone());
        }
    }
    if let Some(b) = cur {
        blocks.push(b);
    }
    blocks
}

/// Parses every stdout line as one JSON value (`-o json`); panics naming the first bad line.
pub fn parse_json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "line {i} of -o json output is not JSON ({e}): {l:?}\n--- output ---\n{}",
                    dump(lines)
                )
            })
        })
        .collect()
}

/// Width the ICMP kind (`ping request`, `ping reply`) is padded to in summaries.
pub const ICMP_KIND_WIDTH: usize = 15;

/// `ICMP: SRC -> DST, ping request   , seq: N`.
pub fn icmp_request(src: impl std::fmt::Display, dst: impl std::fmt::Display, seq: u16) -> String {
    format!(
        "ICMP: {src} -> {dst}, {:<w$}, seq: {seq}",
        "ping request",
        w = ICMP_KIND_WIDTH
    )
}

/// `ICMP: SRC -> DST, ping reply     , seq: N`.
pub fn icmp_reply(src: impl std::fmt::Display, dst: impl std::fmt::Display, seq: u16) -> String {
    format!(
        "ICMP: {src} -> {dst}, {:<w$}, seq: {seq}",
        "ping reply",
        w = ICMP_KIND_WIDTH
    )
}

/// `ICMPv6: SRC -> DST, ping request   , seq: N`.
pub fn icmp6_request(src: impl std::fmt::Display, dst: impl std::fmt::Display, seq: u16) -> String {
    format!(
        "ICMPv6: {src} -> {dst}, {:<w$}, seq: {seq}",
        "ping request",
        w = ICMP_KIND_WIDTH
    )
}

/// `ICMPv6: SRC -> DST, ping reply     , seq: N`.
pub fn icmp6_reply(src: impl std::fmt::Display, dst: impl std::fmt::Display, seq: u16) -> String {
    format!(
        "ICMPv6: {src} -> {dst}, {:<w$}, seq: {seq}",
        "ping reply",
        w = ICMP_KIND_WIDTH
    )
}

/// A parsed `TCP: SRC:SPORT -> DST:DPORT, seq: N, ack: N, flags: XY` summary
/// (anything after the flags, such as a drop reason, is kept in `rest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSummary {
    pub src: String,
    pub dst: String,
    pub seq: u32,
    pub ack: u32,
    pub flags: String,
    pub rest: String,
}

impl TcpSummary {
    pub fn parse(summary: &str) -> Option<TcpSummary> {
        let s = summary.strip_prefix("TCP: ")?;
        let (src, s) = s.split_once(" -> ")?;
        let (dst, s) = s.split_once(", seq: ")?;
        let (seq, s) = s.split_once(", ack: ")?;
        let (ack, s) = s.split_once(", flags: ")?;
        let (flags, rest) = match s.split_once(',') {
            Some((f, r)) => (f, format!(",{r}")),
            None => (s, String::new()),
        };
        Some(TcpSummary {
            src: src.trim().to_string(),
            dst: dst.trim().to_string(),
            seq: seq.trim().parse().ok()?,
            ack: ack.trim().parse().ok()?,
            flags: flags.trim().to_string(),
            rest,
        })
    }
}

/// Splits a drop suffix `..., reason: R, location: SYM+0xHEX` into `(reason, sym, offset)`.
pub fn parse_drop_suffix(summary: &str) -> Option<(String, String, u64)> {
    let (_, tail) = summary.rsplit_once(", reason: ")?;
    let (reason, loc) = tail.split_once(", location: ")?;
    let (sym, off) = loc.trim().rsplit_once("+0x")?;
    if sym.is_empty() || reason.trim().is_empty() {
        return None;
    }
    let off = u64::from_str_radix(off, 16).ok()?;
    Some((reason.trim().to_string(), sym.to_string(), off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_line() {
        let ev = parse_line("453516.922978: [napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1").unwrap();
        assert_eq!(ev.tracer, "napi_gro_receive");
        assert_eq!(ev.ts, "453516.922978");
        assert_eq!(
            ev.summary,
            "ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1"
        );
        assert!(ev.skb.is_none());
    }

    #[test]
    fn detail_line() {
        let ev = parse_line("454861.534996: [ffff8887b6260800][2:eth1][pid:0,swapper/3][link-in     ][napi_gro_receive        ]: ICMP: 10.35.13.63 -> 9.135.224.89, ping request   , seq: 1").unwrap();
        assert_eq!(ev.skb.as_deref(), Some("ffff8887b6260800"));
        assert_eq!(ev.iface.as_deref(), Some("2:eth1"));
        assert_eq!(ev.pid, Some(0));
        assert_eq!(ev.comm.as_deref(), Some("swapper/3"));
        assert_eq!(ev.group.as_deref(), Some("link-in"));
        assert_eq!(ev.tracer, "napi_gro_receive");
    }

    #[test]
    fn detail_timeline_line_without_iface() {
        let ev = parse_line("461052.796174: [ffff88858f243a00][    ][pid:0,swapper/2         ][ip-out      ][ip_send_skb             ]: ICMP: 9.135.224.89 -> 10.35.13.63, ping reply     , seq: 1").unwrap();
        assert_eq!(ev.iface.as_deref(), Some(""));
        assert_eq!(ev.comm.as_deref(), Some("swapper/2"));
        assert_eq!(ev.tracer, "ip_send_skb");
    }

    #[test]
    fn non_events() {
        assert!(parse_line("begin tracing......").is_none());
        assert!(parse_line("                return value:ffff88858f242900").is_none());
        assert!(parse_line("Call Stack:").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn timeline_blocks() {
        let text = "<------------------- skb: ffff88858f243100 ---------------------->\n\
                    1.000001: [a]: x\n\
                    1.000002: [consume_skb]: x\n\
                    \n\
                    <------------------- skb: ffff88858f243a00 ---------------------->\n\
                    2.000001: [b]: y\n";
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let blocks = parse_timeline(&lines);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].skb, "ffff88858f243100");
        assert_eq!(blocks[0].events().len(), 2);
        assert!(blocks[0].terminated);
        assert!(!blocks[1].terminated);
    }

    #[test]
    fn summaries() {
        assert_eq!(
            icmp_request("10.0.0.1", "10.0.0.2", 1),
            "ICMP: 10.0.0.1 -> 10.0.0.2, ping request   , seq: 1"
        );
        assert_eq!(
            icmp_reply("10.0.0.2", "10.0.0.1", 3),
            "ICMP: 10.0.0.2 -> 10.0.0.1, ping reply     , seq: 3"
        );
        assert_eq!(
            icmp6_request("fd00::1", "fd00::2", 1),
            "ICMPv6: fd00::1 -> fd00::2, ping request   , seq: 1"
        );
        assert_eq!(
            icmp6_reply("fd00::2", "fd00::1", 2),
            "ICMPv6: fd00::2 -> fd00::1, ping reply     , seq: 2"
        );
        let t =
            TcpSummary::parse("TCP: 10.0.0.1:34567 -> 10.0.0.2:8080, seq: 123, ack: 0, flags: S")
                .unwrap();
        assert_eq!(t.src, "10.0.0.1:34567");
        assert_eq!(t.seq, 123);
        assert_eq!(t.flags, "S");
        let d = parse_drop_suffix(
            "ICMP: 1.1.1.1 -> 2.2.2.2, ping request   , seq: 1, reason: NETFILTER_DROP, location: nf_hook_slow+0xa2",
        )
        .unwrap();
        assert_eq!(d, ("NETFILTER_DROP".into(), "nf_hook_slow".into(), 0xa2));
    }

    #[test]
    fn subsequence() {
        let lines: Vec<String> = ["1.1: [a]: one", "1.2: [b]: two", "1.3: [c]: three"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_subsequence(&lines, &[("a", "one"), ("c", "thr")]);
        assert_subsequence(&lines, &[("x|b", "two"), ("*", "three")]);
        let r = std::panic::catch_unwind(|| assert_subsequence(&lines, &[("c", ""), ("a", "")]));
        assert!(r.is_err());
    }
}
