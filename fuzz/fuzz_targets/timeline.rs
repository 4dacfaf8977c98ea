//! Timeline assembly: a sequence of operations (`push` with ends and
//! clone children, `adopt`, `amend`, `flush`) on a small `Timeline` decoded
//! from the fuzz input.
//!
//! Checks: every pushed record comes out exactly once (in a block from
//! `push`/`adopt`, or from the final `flush`), in arrival order within its
//! block, and the number of open contexts never exceeds the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettrace_common::{Block, Timeline};

fuzz_target!(|data: &[u8]| {
    let Some((&bound, ops)) = data.split_first() else {
        return;
    };
    let bound = usize::from(bound % 8) + 1;
    let mut tl: Timeline<u32> = Timeline::new(bound);
    let mut seen: Vec<u32> = Vec::new();
    let mut next = 0u32;
    let take = |b: Block<u32>, seen: &mut Vec<u32>| {
        assert!(!b.records.is_empty());
        assert!(b.records.windows(2).all(|w| w[0] < w[1]), "{:?}", b.records);
        seen.extend(b.records);
    };
    for op in ops.chunks(3) {
        let kind = op[0] % 4;
        let skb = u64::from(op.get(1).copied().unwrap_or(0) % 8);
        let other = u64::from(op.get(2).copied().unwrap_or(0) % 9);
        match kind {
            0 | 1 => {
                let child = (op[0] & 0x10 != 0).then_some(other);
                if let Some(b) = tl.push(skb, next, kind == 1, child) {
                    take(b, &mut seen);
                }
                next += 1;
            }
            2 => {
                if let Some(b) = tl.adopt(skb, other) {
                    take(b, &mut seen);
                }
            }
            _ => {
                let _ = tl.amend(skb, |r| *r % 2 == 0);
            }
        }
        assert!(tl.len() <= bound);
    }
    for b in tl.flush() {
        take(b, &mut seen);
    }
    assert!(tl.is_empty());
    seen.sort_unstable();
    assert_eq!(seen, (0..next).collect::<Vec<_>>());
});
