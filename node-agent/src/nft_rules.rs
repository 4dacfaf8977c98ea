//! `--nft-trace` during a session: one [`NftTrace`] per traced network
//! namespace, their trace events drained as the session goes, and the rule
//! that dropped the packet of an skb event ([`RuleFinder::rule_for`]).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Result;
use nettrace_common::rule::NftRule;
use nettrace_common::{Event, Filter};

use crate::nft_trace::{
    family_name, Correlator, LegacyOnly, Netns, NftTrace, PacketKey, TraceKind, Verdict,
};

/// How far apart in time a trace message and the skb event of its packet
/// may be (the message is read after the kernel sent it).
const WINDOW: Duration = Duration::from_secs(2);
/// Verdicts kept to be matched, at most.
const KEEP: usize = 4096;

/// The nftables tracers of a session and the drop verdicts they saw.
pub struct RuleFinder {
    traces: Vec<NftTrace>,
    correlator: Correlator,
    /// Recent drop verdicts: the packet, when read, and the rule.
    drops: VecDeque<(PacketKey, u64, NftRule)>,
}

impl RuleFinder {
    /// Starts tracing the rules of each namespace (`label` names it in
    /// messages). A namespace whose firewall is iptables-legacy only is
    /// left out with a warning; tables a killed run left are removed, and
    /// said so.
    pub fn start(namespaces: &[(String, Netns<'_>)], filter: &Filter) -> Result<RuleFinder> {
        let mut traces = Vec::new();
        for (label, ns) in namespaces {
            match NftTrace::start(*ns, filter) {
                Ok(t) => {
                    for stale in t.removed_stale() {
                        eprintln!("nettrace: removed nftables table {stale} left by an earlier run ({label})");
                    }
                    for w in t.warnings() {
                        eprintln!("warning: {label}: {w}");
                    }
                    traces.push(t);
                }
                Err(e) if e.downcast_ref::<LegacyOnly>().is_some() => {
                    eprintln!("warning: {label}: {e}");
                }
                Err(e) => return Err(e.context(format!("--nft-trace in {label}"))),
            }
        }
        Ok(RuleFinder {
            traces,
            correlator: Correlator::new(WINDOW),
            drops: VecDeque::new(),
        })
    }

    /// Reads the trace messages that arrived, keeping the drop verdicts.
    pub fn poll(&mut self) {
        for t in &mut self.traces {
            while let Ok(Some(te)) = t.try_next_event() {
                let key = self.correlator.key(&te);
                let dropped = matches!(te.verdict, Some(Verdict::Drop))
                    && matches!(te.kind, TraceKind::Rule | TraceKind::Policy);
                let Some(key) = key.filter(|_| dropped) else {
                    continue;
                };
                let comment = match te.rule_handle {
                    Some(h) => t
                        .rule(te.family, &te.table, &te.chain, h)
                        .ok()
                        .flatten()
                        .and_then(|r| r.comment.clone()),
                    None => None,
                };
                let rule = NftRule {
                    family: family_name(te.family).to_string(),
                    table: te.table.clone(),
                    chain: te.chain.clone(),
                    handle: te.rule_handle,
                    verdict: "drop".into(),
                    comment,
                };
                self.drops.push_back((key, te.received_ns, rule));
                if self.drops.len() > KEEP {
                    self.drops.pop_front();
                }
            }
        }
    }

    /// The rule that dropped the packet of `ev` (a drop event), when a
    /// tracer saw it.
    pub fn rule_for(&mut self, ev: &Event) -> Option<NftRule> {
        self.poll();
        let key = PacketKey::from_event(ev)?;
        let window = u64::try_from(WINDOW.as_nanos()).unwrap_or(u64::MAX);
        self.drops
            .iter()
            .rev()
            .find(|(k, at, _)| k.matches(&key) && at.abs_diff(ev.ts_ns) <= window)
            .map(|(_, _, r)| r.clone())
    }
}
