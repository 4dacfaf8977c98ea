//! Scenario 6: `--timeline -c 1` prints exactly one block and exits by itself.

use std::time::Duration;

use nettrace_tests::*;

const SUBNET: u8 = 60;
/// Tracers that may end an skb's block.
const LAST_TRACERS: &[&str] = &["consume_skb", "kfree_skb"];
/// With --detail in timeline mode the `[pid:N,comm]` column is padded to this width.
/// The seed pads the interface and task columns together: `{iface}][{task}` is 30 wide
/// (`[2:eth1][pid:0,swapper/3       ]`, `[    ][pid:0,swapper/2         ]`).
const TIMELINE_DEV_TASK_WIDTH: usize = 30;
/// Whether every line of a block must show the header's skb address (no clone tracking
/// with tracepoints only).
const SAME_SKB_IN_BLOCK: bool = true;

/// The interface and task columns of a detail line, `{iface}][{task}` with the padding.
fn dev_task_columns(raw: &str) -> Option<&str> {
    let mut rest = raw;
    for _ in 0..2 {
        let i = rest.find('[')?;
        rest = &rest[i + 1..];
    }
    let task_start = rest.find("][pid:")? + 2;
    Some(&rest[..task_start + rest[task_start..].find(']')?])
}

#[test]
fn timeline_count_one_exits_after_one_block() {
    preflight();
    let t = Topology::bridged(SUBNET);
    let b = t.b_addr.to_string();
    let nt = Nettrace::spawn(&[
        "--timeline",
        "-c",
        "1",
        "-p",
        "icmp",
        "--addr",
        &b,
        "--detail",
    ]);
    ping(&t.a, t.b_addr, 1);
    let fin = nt.wait_exit(Duration::from_secs(30));
    assert!(
        fin.status.success(),
        "nettrace -c 1 did not exit with 0 by itself\n{}",
        fin.describe()
    );
    let blocks = parse_timeline(&fin.stdout_lines);
    assert_eq!(
        blocks.len(),
        1,
        "expected exactly one block\n{}",
        fin.describe()
    );
    let block = &blocks[0];
    assert!(
        block.terminated,
        "block not ended by an empty line\n{}",
        fin.describe()
    );
    let events = block.events();
    assert!(!events.is_empty(), "empty block\n{}", fin.describe());
    let last = events.last().unwrap();
    assert!(
        LAST_TRACERS.contains(&last.tracer.as_str()),
        "block does not end with {LAST_TRACERS:?}: {:?}\n{}",
        last.raw,
        fin.describe()
    );
    for ev in &events {
        assert!(ev.summary.starts_with("ICMP: "), "not ICMP: {:?}", ev.raw);
        if SAME_SKB_IN_BLOCK {
            assert_eq!(
                ev.skb.as_deref(),
                Some(block.skb.as_str()),
                "event of another skb in the block: {:?}\n{}",
                ev.raw,
                fin.describe()
            );
        }
        let col = dev_task_columns(&ev.raw).unwrap_or("");
        assert_eq!(
            col.len(),
            TIMELINE_DEV_TASK_WIDTH.max(col.trim_end().len()),
            "interface and task columns not padded to {TIMELINE_DEV_TASK_WIDTH}: {:?}",
            ev.raw
        );
    }
}
