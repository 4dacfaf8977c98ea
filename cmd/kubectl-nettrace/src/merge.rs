//! Putting the events of several nodes on one time line: each node's
//! monotonic clock converted to Unix time with its `hello.clock`, and a small
//! reorder buffer that holds items for a while and releases them in time
//! order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use nettrace_common::protocol::Clock;

/// How long an item waits in the reorder buffer for earlier items of other nodes.
pub const HOLD: Duration = Duration::from_millis(500);

/// A node's monotonic `ts_ns` as Unix time in ns ([`Clock::unix_ns`]), as
/// the key the reorder buffer and the joiner sort by.
pub fn unix_ns(ts_ns: u64, clock: &Clock) -> i128 {
    i128::from(clock.unix_ns(ts_ns))
}

struct Held<T> {
    key: i128,
    seq: u64,
    arrived: Instant,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

/// Items keyed by time, released in key order once the earliest has been
/// held for [`HOLD`] (ties keep their arrival order).
pub struct Reorder<T> {
    heap: BinaryHeap<Reverse<Held<T>>>,
    seq: u64,
    hold: Duration,
}

impl<T> Reorder<T> {
    /// An empty buffer holding items for `hold`.
    pub fn new(hold: Duration) -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            seq: 0,
            hold,
        }
    }

    /// Adds an item with its time key, arrived at `now`.
    pub fn push(&mut self, key: i128, now: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Held {
            key,
            seq: self.seq,
            arrived: now,
            item,
        }));
    }

    /// The items due at `now`, in key order: the earliest item is released
    /// once it has waited `hold`, and with it everything before it.
    pub fn pop_due(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(Reverse(top)) = self.heap.peek() {
            if now.saturating_duration_since(top.arrived) < self.hold {
                break;
            }
            if let Some(Reverse(h)) = self.heap.pop() {
                out.push(h.item);
            }
        }
        out
    }

    /// Everything left, in key order.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.heap.len());
        while let Some(Reverse(h)) = self.heap.pop() {
            out.push(h.item);
        }
        out
    }

    /// When the earliest item falls due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(h)| h.arrived + self.hold)
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_leave_in_time_order_after_the_hold() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD);
        // node B's event (later in time) arrives first, node A's shortly after
        r.push(200, t0, "b@200");
        r.push(100, t0 + Duration::from_millis(100), "a@100");
        r.push(150, t0 + Duration::from_millis(100), "a@150");
        assert!(r.pop_due(t0 + Duration::from_millis(499)).is_empty());
        assert_eq!(r.next_due(), Some(t0 + Duration::from_millis(600)));
        // the earliest key (a@100) is held until 600 ms
        assert!(r.pop_due(t0 + Duration::from_millis(550)).is_empty());
        assert_eq!(
            r.pop_due(t0 + Duration::from_millis(600)),
            ["a@100", "a@150", "b@200"]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn ties_keep_arrival_order_and_drain_empties() {
        let t0 = Instant::now();
        let mut r = Reorder::new(HOLD);
        r.push(7, t0, 1);
        r.push(7, t0, 2);
        r.push(3, t0, 0);
        r.push(9, t0 + Duration::from_secs(1), 3);
        assert_eq!(r.pop_due(t0 + HOLD), [0, 1, 2]);
        assert_eq!(r.drain(), [3]);
        assert_eq!(r.next_due(), None);
    }
}
