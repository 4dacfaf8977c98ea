//! Scenario 10: `nettrace -t ?` prints the tracer tree.

use std::time::Duration;

use nettrace_tests::kernel::FunctionTracing;
use nettrace_tests::*;

const HEADER: &str = "available tracer:";
/// Lines that must appear somewhere.
const MUST_CONTAIN: &[&str] = &["all: ", "link-in"];
/// A tracepoint leaf, listed as such on every kernel.
const TRACEPOINT_LEAF: &str = "netif_receive_skb";
/// A function leaf: how it is listed depends on what the kernel offers (probed).
const FUNCTION_LEAF: &str = "ip_rcv";

/// The line listing `leaf` (its trimmed text starts with the name as a whole word).
fn leaf_line<'a>(lines: &'a [String], leaf: &str) -> Option<&'a String> {
    lines.iter().find(|l| {
        l.trim_start().strip_prefix(leaf).is_some_and(|rest| {
            rest.chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        })
    })
}

#[test]
fn tracer_tree_is_listed() {
    require_root();
    let fin = Nettrace::run_to_end(&["-t", "?"], Duration::from_secs(30));
    fin.assert_success();
    let out = &fin.stdout_lines;
    assert!(
        out.first().is_some_and(|l| l.starts_with(HEADER)),
        "stdout does not start with {HEADER:?}\n{}",
        fin.describe()
    );
    for want in MUST_CONTAIN {
        assert!(
            out.iter().any(|l| l.contains(want)),
            "no {want:?} in the list\n{}",
            fin.describe()
        );
    }
    // What the function leaf can get here, probed independently of nettrace.
    let ft = FunctionTracing::probe();
    let marks: &[&str] = match (ft.fentry, ft.kprobes) {
        (true, _) => &["fentry"],
        (false, true) => &["kprobe"],
        (false, false) => &["unavailable"],
    };
    for (leaf, marks) in [
        (TRACEPOINT_LEAF, &["tracepoint"][..]),
        (FUNCTION_LEAF, marks),
    ] {
        let line =
            leaf_line(out, leaf).unwrap_or_else(|| panic!("{leaf} not listed\n{}", fin.describe()));
        assert!(
            marks.iter().any(|m| line.to_lowercase().contains(m)),
            "line of {leaf} does not say {marks:?} on this kernel ({ft:?}): {line:?}\n{}",
            fin.describe()
        );
    }
    assert!(
        !fin.began_tracing(),
        "`-t ?` began tracing\n{}",
        fin.describe()
    );
}
