//! Scenario 10: `nettrace -t ?` prints the tracer tree.

use std::time::Duration;

use nettrace_tests::*;

const HEADER: &str = "available tracer:";
/// Lines that must appear somewhere.
const MUST_CONTAIN: &[&str] = &["all: ", "link-in"];
/// (leaf, text its line must contain): a tracepoint leaf and a function leaf that this host
/// cannot attach (no kprobes, no fentry).
const LEAF_MARKS: &[(&str, &str)] = &[
    ("netif_receive_skb", "tracepoint"),
    ("ip_rcv", "unavailable"),
];

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
    for (leaf, mark) in LEAF_MARKS {
        let line =
            leaf_line(out, leaf).unwrap_or_else(|| panic!("{leaf} not listed\n{}", fin.describe()));
        assert!(
            line.to_lowercase().contains(mark),
            "line of {leaf} does not say {mark:?}: {line:?}\n{}",
            fin.describe()
        );
    }
    assert!(
        !fin.began_tracing(),
        "`-t ?` began tracing\n{}",
        fin.describe()
    );
}
