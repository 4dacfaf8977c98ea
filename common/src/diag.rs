//! The `--diag` summary: problems seen (drops, resets, ICMP errors,
//! retransmissions, rate-limited replies) counted per kind, place and
//! netfilter rule, and rendered at exit as a text table with an advice line
//! under each row (from [`crate::advice`]), or as JSON lines.
//!
//! Text form: a header, then one row per key by count descending then first
//! time; columns as wide as their widest cell, two spaces apart, `COUNT`
//! right-aligned, `-` for no rule, times as `seconds.microseconds`; the
//! advice line, when there is one, is indented to the `WHAT` column
//! (advice shortened here). An empty summary renders as `no problems seen`.
//! ```text
//! COUNT  WHAT                                       WHERE             RULE                FIRST      LAST
//!     3  drop NETFILTER_DROP at nft_do_chain+0x46f  default/client    inet filter fwd #4  12.000100  14.500000
//!        advice: a netfilter rule (iptables or nftables) dropped the packet: ...; name the rule with --nft-trace, ...
//!     1  tcp reset                                  netns 4026531840  -                   5.000000   5.000000
//!        advice: this host answered with a TCP reset: ...; check ss -lnt in that namespace for the port, ...
//! ```
//! JSON form, one object per row in the same order:
//! `{"type":"diag_summary","kind":"drop","reason":"NETFILTER_DROP","location":"nft_do_chain+0x46f",
//! "where":"default/client","rule":"inet filter fwd #4","count":3,"first":"12.000100","last":"14.500000",
//! "advice":"<explanation>; <next step>"}` where `kind` is `drop`, `reset`, `icmp_error`,
//! `retransmit` or `rate_limited`; `reason` is the drop reason or the ICMP
//! error (`icmp port unreachable`, `icmp6 too big`), else null; `location`,
//! `rule` and `advice` are null when unknown.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::advice::{self, Advice};
use crate::format::Timestamp;

/// A kind of problem `--diag` reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Problem {
    /// A packet freed as dropped (`kfree_skb` with a reason).
    Drop {
        /// The drop reason name as the kernel prints it (`NO_SOCKET`).
        reason: String,
        /// Where it was freed (`symbol+0xoffset`), empty when unknown.
        location: String,
    },
    /// A TCP reset this host sent (`tcp_send_reset`).
    Reset,
    /// An ICMP or ICMPv6 error this host sent (`icmp_send`, `icmp6_send`).
    IcmpError {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// ICMPv6 rather than ICMP.
        v6: bool,
    },
    /// A TCP segment sent again.
    Retransmit,
    /// A reply (ICMP error, TCP challenge ACK) the kernel held back under its
    /// rate limit.
    RateLimited,
    /// An ICMP error this host sent, of a type the event does not carry
    /// (the `icmp_send` tracepoint's packet is the one it answers).
    IcmpSent,
}

impl Problem {
    /// The JSON `kind`: `drop`, `reset`, `icmp_error`, `retransmit`,
    /// `rate_limited`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Problem::Drop { .. } => "drop",
            Problem::Reset => "reset",
            Problem::IcmpError { .. } => "icmp_error",
            Problem::Retransmit => "retransmit",
            Problem::RateLimited => "rate_limited",
            Problem::IcmpSent => "icmp_error",
        }
    }

    /// The ICMP error as `icmp port unreachable` (`icmp6 ...` for ICMPv6;
    /// `icmp type T code C` when the table does not name it).
    fn icmp_text(icmp_type: u8, code: u8, v6: bool) -> String {
        let family = if v6 { "icmp6" } else { "icmp" };
        match advice::icmp_error_name(v6, icmp_type, code) {
            Some(name) => format!("{family} {name}"),
            None => format!("{family} type {icmp_type} code {code}"),
        }
    }

    /// The summary's `WHAT` column: `drop NETFILTER_DROP at nft_do_chain+0x46f`,
    /// `tcp reset`, `icmp port unreachable`, `retransmit`, `rate limited`.
    pub fn what(&self) -> String {
        match self {
            Problem::Drop { reason, location } => {
                let mut s = String::from("drop");
                if !reason.is_empty() {
                    s.push(' ');
                    s.push_str(reason);
                }
                if !location.is_empty() {
                    s.push_str(" at ");
                    s.push_str(location);
                }
                s
            }
            Problem::Reset => "tcp reset".to_string(),
            Problem::IcmpError {
                icmp_type,
                code,
                v6,
            } => Self::icmp_text(*icmp_type, *code, *v6),
            Problem::Retransmit => "retransmit".to_string(),
            Problem::RateLimited => "rate limited".to_string(),
            Problem::IcmpSent => "icmp error sent".to_string(),
        }
    }

    /// What this problem means and what to do, when known.
    pub fn advice(&self) -> Option<Advice> {
        match self {
            Problem::Drop { reason, .. } => advice::for_drop_reason(reason),
            Problem::Reset => Some(advice::for_tcp_reset()),
            Problem::IcmpError {
                icmp_type,
                code,
                v6,
            } => advice::for_icmp_error(*v6, *icmp_type, *code),
            Problem::Retransmit => Some(advice::for_retransmit()),
            Problem::RateLimited => Some(advice::for_rate_limited()),
            Problem::IcmpSent => Some(advice::for_icmp_sent()),
        }
    }

    /// The problem an event shows, from its tracer and, for drops, its
    /// reason (`Some` only for drops) and location: a drop, a TCP reset or
    /// retransmission sent, an ICMP error sent; `None` for the rest.
    pub fn of_event(
        tracer: &str,
        drop_reason: Option<&str>,
        location: Option<&str>,
    ) -> Option<Problem> {
        if let Some(reason) = drop_reason {
            return Some(Problem::Drop {
                reason: reason.to_string(),
                location: location.unwrap_or_default().to_string(),
            });
        }
        match tracer {
            "tcp_send_reset" | "tcp_v4_send_reset" | "tcp_v6_send_reset" => Some(Problem::Reset),
            "tcp_retransmit_skb" | "__tcp_retransmit_skb" => Some(Problem::Retransmit),
            "icmp_send" | "__icmp_send" | "icmp6_send" => Some(Problem::IcmpSent),
            _ => None,
        }
    }
}

/// What one summary row counts: a problem, where it happened and the
/// netfilter rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiagKey {
    /// The problem.
    pub kind: Problem,
    /// Where: a pod `ns/pod`, `node/pod`, or `netns 4026531840`.
    pub place: String,
    /// The netfilter rule (from `--nft-trace`), when known.
    pub rule: Option<String>,
}

/// Count and first and last time (monotonic nanoseconds) of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// How many times it was seen.
    pub count: u64,
    /// Earliest timestamp seen.
    pub first_ns: u64,
    /// Latest timestamp seen.
    pub last_ns: u64,
}

/// The problems seen so far, per [`DiagKey`].
#[derive(Debug, Clone, Default)]
pub struct Summary {
    rows: HashMap<DiagKey, Tally>,
}

const HEADER: [&str; 6] = ["COUNT", "WHAT", "WHERE", "RULE", "FIRST", "LAST"];
const GAP: &str = "  ";

impl Summary {
    /// An empty summary.
    pub fn new() -> Summary {
        Summary::default()
    }

    /// Counts one occurrence of `key` at `ts_ns` (events may come out of
    /// order: first and last are the minimum and maximum).
    pub fn add(&mut self, key: DiagKey, ts_ns: u64) {
        self.rows
            .entry(key)
            .and_modify(|t| {
                t.count = t.count.saturating_add(1);
                t.first_ns = t.first_ns.min(ts_ns);
                t.last_ns = t.last_ns.max(ts_ns);
            })
            .or_insert(Tally {
                count: 1,
                first_ns: ts_ns,
                last_ns: ts_ns,
            });
    }

    /// All occurrences counted.
    pub fn total(&self) -> u64 {
        self.rows
            .values()
            .fold(0u64, |n, t| n.saturating_add(t.count))
    }

    /// Number of distinct keys (rows).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The tally of one key.
    pub fn get(&self, key: &DiagKey) -> Option<Tally> {
        self.rows.get(key).copied()
    }

    /// The rows in table order: count descending, then first time, then key.
    pub fn rows(&self) -> Vec<(&DiagKey, Tally)> {
        let mut rows: Vec<(&DiagKey, Tally)> = self.rows.iter().map(|(k, t)| (k, *t)).collect();
        rows.sort_by(|(ka, a), (kb, b)| {
            b.count
                .cmp(&a.count)
                .then(a.first_ns.cmp(&b.first_ns))
                .then_with(|| ka.cmp(kb))
        });
        rows
    }

    /// The text table printed at exit (see the module doc), each line ending
    /// in `\n`; `no problems seen\n` when empty.
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return "no problems seen\n".to_string();
        }
        let cells: Vec<([String; 6], Option<Advice>)> = self
            .rows()
            .into_iter()
            .map(|(k, t)| {
                (
                    [
                        t.count.to_string(),
                        k.kind.what(),
                        k.place.clone(),
                        k.rule.clone().unwrap_or_else(|| "-".to_string()),
                        Timestamp(t.first_ns).to_string(),
                        Timestamp(t.last_ns).to_string(),
                    ],
                    k.kind.advice(),
                )
            })
            .collect();
        let mut widths = HEADER.map(|h| h.chars().count());
        for (row, _) in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header = HEADER.map(String::from);
        write_row(&mut out, &header, &widths);
        for (row, adv) in &cells {
            write_row(&mut out, row, &widths);
            if let Some(adv) = adv {
                let _ = writeln!(out, "{:w$}{GAP}{}", "", adv.line(), w = widths[0]);
            }
        }
        out
    }

    /// The summary as it ends the output: `--- diag summary ---` and the
    /// table, or one `diag_summary` JSON object per line.
    pub fn write(&self, out: &mut String, json: bool) {
        if json {
            for row in self.render_json() {
                out.push_str(&row);
                out.push('\n');
            }
        } else {
            out.push_str("--- diag summary ---\n");
            out.push_str(&self.render());
        }
    }

    /// One JSON object per row, in table order (see the module doc).
    pub fn render_json(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .map(|(k, t)| {
                let (reason, location) = match &k.kind {
                    Problem::Drop { reason, location } => (
                        non_empty(reason).map(str::to_string),
                        non_empty(location).map(str::to_string),
                    ),
                    Problem::IcmpError {
                        icmp_type,
                        code,
                        v6,
                    } => (Some(Problem::icmp_text(*icmp_type, *code, *v6)), None),
                    _ => (None, None),
                };
                let row = RowJson {
                    ty: "diag_summary",
                    kind: k.kind.kind_name(),
                    reason,
                    location,
                    place: &k.place,
                    rule: k.rule.as_deref(),
                    count: t.count,
                    first: Timestamp(t.first_ns).to_string(),
                    last: Timestamp(t.last_ns).to_string(),
                    advice: k.kind.advice().map(|a| a.text()),
                };
                // A struct of strings and integers always serializes.
                serde_json::to_string(&row).unwrap_or_default()
            })
            .collect()
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Writes one table line: `COUNT` right-aligned, the middle columns padded,
/// the last column as is (no trailing spaces).
fn write_row(out: &mut String, cells: &[String; 6], widths: &[usize; 6]) {
    let _ = write!(out, "{:>w$}", cells[0], w = widths[0]);
    for (c, w) in cells[1..5].iter().zip(&widths[1..5]) {
        let _ = write!(out, "{GAP}{c:<w$}");
    }
    let _ = writeln!(out, "{GAP}{}", cells[5]);
}

#[derive(Serialize)]
struct RowJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    kind: &'static str,
    reason: Option<String>,
    location: Option<String>,
    #[serde(rename = "where")]
    place: &'a str,
    rule: Option<&'a str>,
    count: u64,
    first: String,
    last: String,
    advice: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop(reason: &str, location: &str, place: &str, rule: Option<&str>) -> DiagKey {
        DiagKey {
            kind: Problem::Drop {
                reason: reason.into(),
                location: location.into(),
            },
            place: place.into(),
            rule: rule.map(String::from),
        }
    }

    fn key(kind: Problem, place: &str) -> DiagKey {
        DiagKey {
            kind,
            place: place.into(),
            rule: None,
        }
    }

    fn sample() -> Summary {
        let mut s = Summary::new();
        let nf = drop(
            "NETFILTER_DROP",
            "nft_do_chain+0x46f",
            "default/client",
            Some("inet filter fwd #4"),
        );
        s.add(nf.clone(), 14_500_000_000);
        s.add(nf.clone(), 12_000_100_000);
        s.add(nf, 13_000_000_999);
        s.add(key(Problem::Reset, "netns 4026531840"), 5_000_000_000);
        s.add(
            key(
                Problem::IcmpError {
                    icmp_type: 3,
                    code: 3,
                    v6: false,
                },
                "default/server",
            ),
            3_000_001_000,
        );
        s
    }

    #[test]
    fn counting_and_total() {
        let s = sample();
        assert_eq!(s.total(), 5);
        assert_eq!(s.len(), 3);
        let t = s
            .get(&drop(
                "NETFILTER_DROP",
                "nft_do_chain+0x46f",
                "default/client",
                Some("inet filter fwd #4"),
            ))
            .expect("counted");
        assert_eq!(
            t,
            Tally {
                count: 3,
                first_ns: 12_000_100_000,
                last_ns: 14_500_000_000
            }
        );
        // The rule is part of the key.
        let mut s2 = Summary::new();
        s2.add(drop("NETFILTER_DROP", "x", "p", Some("a")), 1);
        s2.add(drop("NETFILTER_DROP", "x", "p", Some("b")), 2);
        s2.add(drop("NETFILTER_DROP", "x", "p", None), 3);
        assert_eq!(s2.len(), 3);
        assert_eq!(s2.total(), 3);
        assert!(Summary::new().is_empty());
        assert_eq!(Summary::new().total(), 0);
    }

    #[test]
    fn ordering_count_then_first() {
        let mut s = Summary::new();
        s.add(key(Problem::Retransmit, "b"), 50);
        s.add(key(Problem::Reset, "a"), 40);
        s.add(key(Problem::RateLimited, "c"), 10);
        s.add(key(Problem::RateLimited, "c"), 60);
        let order: Vec<&str> = s.rows().iter().map(|(k, _)| k.place.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
    }

    #[test]
    fn text_table() {
        let expected = "\
COUNT  WHAT                                       WHERE             RULE                FIRST      LAST
    3  drop NETFILTER_DROP at nft_do_chain+0x46f  default/client    inet filter fwd #4  12.000100  14.500000
       advice: a netfilter rule (iptables or nftables) dropped the packet: a firewall, a NetworkPolicy, or a kube-proxy rule; name the rule with --nft-trace, or read the rules with nft list ruleset or iptables-save in that namespace
    1  icmp port unreachable                      default/server    -                   3.000001   3.000001
       advice: nothing listens on that port at the destination, or a REJECT rule refused it (port unreachable is REJECT's default); check ss -lnu in the destination namespace, a Service without endpoints, or name the REJECT rule with --nft-trace
    1  tcp reset                                  netns 4026531840  -                   5.000000   5.000000
       advice: this host answered with a TCP reset: nothing listens on the port, the connection is unknown here, or the application aborted it; check ss -lnt in that namespace for the port, and for an unknown connection the drop or NAT events just before the reset
";
        assert_eq!(sample().render(), expected);
    }

    #[test]
    fn text_without_advice_and_empty() {
        let mut s = Summary::new();
        s.add(drop("SOME_NEW_REASON", "", "netns 1", None), 1_000);
        s.add(
            key(
                Problem::IcmpError {
                    icmp_type: 5,
                    code: 1,
                    v6: false,
                },
                "netns 1",
            ),
            2_000,
        );
        let expected = "\
COUNT  WHAT                  WHERE    RULE  FIRST     LAST
    1  drop SOME_NEW_REASON  netns 1  -     0.000001  0.000001
    1  icmp type 5 code 1    netns 1  -     0.000002  0.000002
";
        assert_eq!(s.render(), expected);
        assert_eq!(Summary::new().render(), "no problems seen\n");
        assert!(Summary::new().render_json().is_empty());
    }

    #[test]
    fn json_rows() {
        let lines = sample().render_json();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            r#"{"type":"diag_summary","kind":"drop","reason":"NETFILTER_DROP","location":"nft_do_chain+0x46f","where":"default/client","rule":"inet filter fwd #4","count":3,"first":"12.000100","last":"14.500000","advice":"a netfilter rule (iptables or nftables) dropped the packet: a firewall, a NetworkPolicy, or a kube-proxy rule; name the rule with --nft-trace, or read the rules with nft list ruleset or iptables-save in that namespace"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"type":"diag_summary","kind":"icmp_error","reason":"icmp port unreachable","location":null,"where":"default/server","rule":null,"count":1,"first":"3.000001","last":"3.000001","advice":"nothing listens on that port at the destination, or a REJECT rule refused it (port unreachable is REJECT's default); check ss -lnu in the destination namespace, a Service without endpoints, or name the REJECT rule with --nft-trace"}"#
        );
        assert_eq!(
            lines[2],
            r#"{"type":"diag_summary","kind":"reset","reason":null,"location":null,"where":"netns 4026531840","rule":null,"count":1,"first":"5.000000","last":"5.000000","advice":"this host answered with a TCP reset: nothing listens on the port, the connection is unknown here, or the application aborted it; check ss -lnt in that namespace for the port, and for an unknown connection the drop or NAT events just before the reset"}"#
        );
        let mut s = Summary::new();
        s.add(drop("SOME_NEW_REASON", "", "n\"s/p", None), 7);
        assert_eq!(
            s.render_json(),
            [
                r#"{"type":"diag_summary","kind":"drop","reason":"SOME_NEW_REASON","location":null,"where":"n\"s/p","rule":null,"count":1,"first":"0.000000","last":"0.000000","advice":null}"#
            ]
        );
    }

    #[test]
    fn what_column() {
        let d = Problem::Drop {
            reason: "NO_SOCKET".into(),
            location: String::new(),
        };
        assert_eq!(d.what(), "drop NO_SOCKET");
        assert_eq!(Problem::Reset.what(), "tcp reset");
        assert_eq!(Problem::Retransmit.what(), "retransmit");
        assert_eq!(Problem::RateLimited.what(), "rate limited");
        let too_big = Problem::IcmpError {
            icmp_type: 2,
            code: 0,
            v6: true,
        };
        assert_eq!(too_big.what(), "icmp6 too big");
        assert!(too_big.advice().is_some());
        assert_eq!(Problem::RateLimited.kind_name(), "rate_limited");
    }
}
