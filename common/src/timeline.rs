//! Timeline mode: records are grouped into one context per skb (clones join
//! their parent's context) and a context is handed out as a [`Block`] once
//! every skb in it has been consumed or dropped.

use std::collections::{BTreeMap, HashMap};

/// The records of one finished (or evicted, or flushed) context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<R> {
    /// The first skb seen in the context.
    pub skb: u64,
    /// The records in arrival order.
    pub records: Vec<R>,
}

#[derive(Debug)]
struct Context<R> {
    first_skb: u64,
    /// skbs of this context that have not ended yet.
    live: Vec<u64>,
    records: Vec<R>,
}

/// Groups records into per-skb contexts, keeping at most `max_contexts` open.
#[derive(Debug)]
pub struct Timeline<R> {
    max_contexts: usize,
    /// Live skb address -> context id.
    by_skb: HashMap<u64, u64>,
    /// Open contexts by id; ids grow, so the first entry is the oldest.
    contexts: BTreeMap<u64, Context<R>>,
    next_id: u64,
}

impl<R> Timeline<R> {
    /// A timeline that keeps at most `max_contexts` (at least 1) contexts open;
    /// beyond that the oldest is handed out unfinished.
    pub fn new(max_contexts: usize) -> Self {
        Timeline {
            max_contexts: max_contexts.max(1),
            by_skb: HashMap::new(),
            contexts: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Number of open contexts.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// True when no context is open.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Adds a record seen on `skb`.
    ///
    /// `ends` marks the skb as finished (consumed or dropped); `clone_child`
    /// is a new skb (e.g. the return value of `skb_clone`) that joins this
    /// skb's context. Returns the block that this record completed, or the
    /// oldest context when opening a new one went over the bound. At most one
    /// context can finish per record: a record touches one context, plus at
    /// most one other whose only live skb was a stale `clone_child` address,
    /// and a clone keeps its own context open.
    pub fn push(
        &mut self,
        skb: u64,
        rec: R,
        ends: bool,
        clone_child: Option<u64>,
    ) -> Option<Block<R>> {
        let mut done = None;
        let id = match self.by_skb.get(&skb) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.contexts.insert(
                    id,
                    Context {
                        first_skb: skb,
                        live: vec![skb],
                        records: Vec::new(),
                    },
                );
                self.by_skb.insert(skb, id);
                id
            }
        };
        if let Some(ctx) = self.contexts.get_mut(&id) {
            ctx.records.push(rec);
        }
        match clone_child.filter(|&c| c != skb && c != 0) {
            Some(child) => {
                done = self.join(id, child);
                if ends {
                    // the child is live, so this context stays open
                    self.by_skb.remove(&skb);
                    let _ = self.remove_live(id, skb);
                }
            }
            None if ends => {
                self.by_skb.remove(&skb);
                done = self.remove_live(id, skb);
            }
            None => {}
        }
        // Only a new context can push the count over the bound, and then
        // nothing finished above.
        if self.contexts.len() > self.max_contexts {
            if let Some((_, ctx)) = self.contexts.pop_first() {
                for s in &ctx.live {
                    self.by_skb.remove(s);
                }
                done = Some(Block {
                    skb: ctx.first_skb,
                    records: ctx.records,
                });
            }
        }
        done
    }

    /// Makes `child` a live skb of context `id`. A child address still live
    /// elsewhere means its end was missed: it leaves that context, which may
    /// finish.
    fn join(&mut self, id: u64, child: u64) -> Option<Block<R>> {
        let mut done = None;
        if let Some(old) = self.by_skb.insert(child, id) {
            if old != id {
                done = self.remove_live(old, child);
            }
        }
        if let Some(ctx) = self.contexts.get_mut(&id) {
            if !ctx.live.contains(&child) {
                ctx.live.push(child);
            }
        }
        done
    }

    /// Adds `child` (a clone of `parent`, known only once the cloning
    /// function returned) to the open context of `parent`, without a record.
    /// Returns a context that finished because it lost its last live skb.
    /// Does nothing when `parent` has no open context.
    pub fn adopt(&mut self, parent: u64, child: u64) -> Option<Block<R>> {
        if child == parent || child == 0 {
            return None;
        }
        let id = *self.by_skb.get(&parent)?;
        self.join(id, child)
    }

    /// Lets `update` amend the newest record of `skb`'s open context for
    /// which it returns true (e.g. to attach a return value to its entry
    /// record). Returns whether a record was amended.
    pub fn amend(&mut self, skb: u64, update: impl FnMut(&mut R) -> bool) -> bool {
        let Some(id) = self.by_skb.get(&skb) else {
            return false;
        };
        let Some(ctx) = self.contexts.get_mut(id) else {
            return false;
        };
        ctx.records.iter_mut().rev().any(update)
    }

    /// Removes `skb` from the live set of context `id`; finishes the context
    /// when nothing is left.
    fn remove_live(&mut self, id: u64, skb: u64) -> Option<Block<R>> {
        let ctx = self.contexts.get_mut(&id)?;
        ctx.live.retain(|&s| s != skb);
        if !ctx.live.is_empty() {
            return None;
        }
        let ctx = self.contexts.remove(&id)?;
        Some(Block {
            skb: ctx.first_skb,
            records: ctx.records,
        })
    }

    /// Hands out, unfinished, the contexts whose newest record is older than
    /// `before` (by `ts_of`), ordered by their first record: the skb left
    /// what is traced (for an agent, into another node's scope) and its end
    /// will not be seen here.
    pub fn flush_idle(&mut self, before: u64, ts_of: impl Fn(&R) -> u64) -> Vec<Block<R>> {
        let idle: Vec<u64> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.records.last().is_none_or(|r| ts_of(r) < before))
            .map(|(&id, _)| id)
            .collect();
        let mut out = Vec::with_capacity(idle.len());
        for id in idle {
            if let Some(ctx) = self.contexts.remove(&id) {
                for s in &ctx.live {
                    self.by_skb.remove(s);
                }
                out.push(Block {
                    skb: ctx.first_skb,
                    records: ctx.records,
                });
            }
        }
        out
    }

    /// Hands out every open context, ordered by their first record.
    pub fn flush(&mut self) -> Vec<Block<R>> {
        self.by_skb.clear();
        std::mem::take(&mut self.contexts)
            .into_values()
            .map(|ctx| Block {
                skb: ctx.first_skb,
                records: ctx.records,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs<'a, I>(blocks: I) -> Vec<(u64, Vec<&'static str>)>
    where
        I: IntoIterator<Item = &'a Block<&'static str>>,
    {
        blocks
            .into_iter()
            .map(|b| (b.skb, b.records.clone()))
            .collect()
    }

    #[test]
    fn interleaved_skbs_finish_independently() {
        let mut t = Timeline::new(16);
        assert!(t.push(1, "a1", false, None).is_none());
        assert!(t.push(2, "b1", false, None).is_none());
        assert!(t.push(1, "a2", false, None).is_none());
        assert_eq!(t.len(), 2);
        let out = t.push(2, "b2", true, None);
        assert_eq!(recs(&out), vec![(2, vec!["b1", "b2"])]);
        let out = t.push(1, "a3", true, None);
        assert_eq!(recs(&out), vec![(1, vec!["a1", "a2", "a3"])]);
        assert!(t.is_empty());
        assert!(t.flush().is_empty());
    }

    #[test]
    fn idle_contexts_leave_unfinished_and_their_skbs_start_afresh() {
        let mut t = Timeline::new(16);
        t.push(1, ("a1", 100), false, None);
        t.push(2, ("b1", 150), false, None);
        t.push(1, ("a2", 300), false, None);
        let ts = |r: &(&str, u64)| r.1;
        assert!(t.flush_idle(100, ts).is_empty());
        let out = t.flush_idle(200, ts);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].skb, out[0].records.clone()), (2, vec![("b1", 150)]));
        assert_eq!(t.len(), 1);
        // skb 2 seen again: a new context
        t.push(2, ("b2", 400), true, None);
        assert_eq!(t.len(), 1);
        let out = t.flush_idle(1000, ts);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].records, [("a1", 100), ("a2", 300)]);
        assert!(t.is_empty());
    }

    #[test]
    fn clone_freed_before_parent() {
        let mut t = Timeline::new(16);
        t.push(10, "rcv", false, None);
        assert!(t.push(10, "skb_clone", false, Some(11)).is_none());
        assert!(t.push(11, "nf_hook", false, None).is_none());
        assert!(t.push(11, "consume clone", true, None).is_none());
        let out = t.push(10, "consume parent", true, None);
        assert_eq!(
            recs(&out),
            vec![(
                10,
                vec![
                    "rcv",
                    "skb_clone",
                    "nf_hook",
                    "consume clone",
                    "consume parent"
                ]
            )]
        );
    }

    #[test]
    fn clone_freed_after_parent() {
        let mut t = Timeline::new(16);
        t.push(10, "rcv", false, None);
        t.push(10, "skb_clone", false, Some(11));
        assert!(t.push(10, "consume parent", true, None).is_none());
        // the parent's address is free again: a new skb there is a new context
        assert!(t.push(10, "new skb", false, None).is_none());
        assert_eq!(t.len(), 2);
        let out = t.push(11, "consume clone", true, None);
        assert_eq!(
            recs(&out),
            vec![(
                10,
                vec!["rcv", "skb_clone", "consume parent", "consume clone"]
            )]
        );
        assert_eq!(recs(&t.flush()), vec![(10, vec!["new skb"])]);
    }

    #[test]
    fn clone_of_clone_stays_in_one_context() {
        let mut t = Timeline::new(16);
        t.push(1, "a", false, Some(2));
        t.push(2, "b", false, Some(3));
        assert!(t.push(1, "end1", true, None).is_none());
        assert!(t.push(3, "end3", true, None).is_none());
        let out = t.push(2, "end2", true, None);
        assert_eq!(
            recs(&out),
            vec![(1, vec!["a", "b", "end1", "end3", "end2"])]
        );
    }

    #[test]
    fn address_reuse_starts_a_new_context() {
        let mut t = Timeline::new(16);
        let out = t.push(5, "first life", true, None);
        assert_eq!(recs(&out), vec![(5, vec!["first life"])]);
        t.push(5, "second life", false, None);
        let out = t.push(5, "second end", true, None);
        assert_eq!(recs(&out), vec![(5, vec!["second life", "second end"])]);
    }

    #[test]
    fn stale_child_address_moves_to_the_new_parent() {
        let mut t = Timeline::new(16);
        t.push(1, "a", false, Some(2));
        t.push(1, "a ends", true, None);
        // 2's end was never seen; it is now reported as a clone of 7
        t.push(7, "b", false, None);
        let out = t.push(7, "b clones", false, Some(2));
        assert_eq!(recs(&out), vec![(1, vec!["a", "a ends"])]);
        t.push(7, "b ends", true, None);
        let out = t.push(2, "clone ends", true, None);
        assert_eq!(
            recs(&out),
            vec![(7, vec!["b", "b clones", "b ends", "clone ends"])]
        );
    }

    #[test]
    fn bound_evicts_the_oldest() {
        let mut t = Timeline::new(2);
        t.push(1, "a", false, None);
        t.push(2, "b", false, None);
        t.push(1, "a2", false, None);
        let out = t.push(3, "c", false, None);
        assert_eq!(recs(&out), vec![(1, vec!["a", "a2"])]);
        assert_eq!(t.len(), 2);
        // 1 was forgotten: it starts over
        let out = t.push(1, "a3", false, None);
        assert_eq!(recs(&out), vec![(2, vec!["b"])]);
        // an skb that ends at once never needs an eviction
        let out = t.push(9, "z", true, None);
        assert_eq!(recs(&out), vec![(9, vec!["z"])]);
        assert_eq!(recs(&t.flush()), vec![(3, vec!["c"]), (1, vec!["a3"])]);
    }

    #[test]
    fn ending_record_with_a_clone_keeps_the_context() {
        let mut t = Timeline::new(16);
        t.push(1, "a", false, None);
        assert!(t.push(1, "clone and free", true, Some(2)).is_none());
        let out = t.push(2, "child ends", true, None);
        assert_eq!(
            recs(&out),
            vec![(1, vec!["a", "clone and free", "child ends"])]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn stale_child_leaves_a_busy_context_open() {
        let mut t = Timeline::new(16);
        t.push(1, "a", false, Some(2));
        t.push(7, "b", false, Some(2));
        // 1 is still live, so its context stays open
        assert_eq!(t.len(), 2);
        let out = t.push(1, "a ends", true, None);
        assert_eq!(recs(&out), vec![(1, vec!["a", "a ends"])]);
        assert!(t.push(7, "b ends", true, None).is_none());
        let out = t.push(2, "child ends", true, None);
        assert_eq!(recs(&out), vec![(7, vec!["b", "b ends", "child ends"])]);
    }

    #[test]
    fn adopted_clone_keeps_the_context_open_until_freed() {
        let mut t = Timeline::new(8);
        assert!(t.push(1, "entry", false, None).is_none());
        assert!(t.adopt(1, 2).is_none());
        assert!(t.push(2, "clone seen", false, None).is_none());
        assert!(t.push(1, "parent freed", true, None).is_none());
        let b = t
            .push(2, "clone freed", true, None)
            .expect("context ends with its clone");
        assert_eq!(b.skb, 1);
        assert_eq!(
            b.records,
            vec!["entry", "clone seen", "parent freed", "clone freed"]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn adopt_without_parent_context_does_nothing() {
        let mut t: Timeline<&str> = Timeline::new(8);
        assert!(t.adopt(1, 2).is_none());
        assert!(t.is_empty());
        assert!(t.push(1, "a", false, None).is_none());
        assert!(t.adopt(1, 1).is_none());
        assert!(t.adopt(1, 0).is_none());
        assert_eq!(
            t.push(1, "end", true, None).map(|b| b.records),
            Some(vec!["a", "end"])
        );
    }

    #[test]
    fn amend_updates_the_newest_matching_record() {
        let mut t = Timeline::new(8);
        t.push(1, ("f", 0), false, None);
        t.push(1, ("g", 0), false, None);
        t.push(1, ("f", 0), false, None);
        assert!(t.amend(1, |r| r.0 == "f" && {
            r.1 = 7;
            true
        }));
        assert!(!t.amend(1, |r| r.0 == "h"));
        assert!(!t.amend(9, |_| true));
        let b = t.push(1, ("end", 0), true, None).expect("ends");
        assert_eq!(b.records, vec![("f", 0), ("g", 0), ("f", 7), ("end", 0)]);
    }

    #[test]
    fn zero_bound_means_one() {
        let mut t = Timeline::new(0);
        assert!(t.push(1, "a", false, None).is_none());
        let out = t.push(2, "b", false, None);
        assert_eq!(recs(&out), vec![(1, vec!["a"])]);
    }

    #[test]
    fn flush_orders_by_first_record() {
        let mut t = Timeline::new(16);
        t.push(30, "x", false, None);
        t.push(10, "y", false, None);
        t.push(20, "z", false, None);
        t.push(30, "x2", false, None);
        assert_eq!(
            recs(&t.flush()),
            vec![(30, vec!["x", "x2"]), (10, vec!["y"]), (20, vec!["z"])]
        );
        assert!(t.is_empty());
        // the timeline is usable after a flush
        let out = t.push(30, "again", true, None);
        assert_eq!(recs(&out), vec![(30, vec!["again"])]);
    }

    #[test]
    fn self_clone_and_null_clone_are_ignored() {
        let mut t = Timeline::new(16);
        t.push(4, "a", false, Some(4));
        t.push(4, "b", false, Some(0));
        let out = t.push(4, "c", true, None);
        assert_eq!(recs(&out), vec![(4, vec!["a", "b", "c"])]);
    }
}
