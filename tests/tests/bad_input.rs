//! Scenario 9: bad input is refused with exactly one stderr line, before loading anything.

use std::path::PathBuf;
use std::time::Duration;

use nettrace_tests::*;

/// A file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, content: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("ntt-{}-{tag}.json", std::process::id()));
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        TempFile(p)
    }
    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks one bad command line; returns a description of what was wrong, if anything.
fn check(args: &[&str]) -> Option<String> {
    let fin = Nettrace::run_to_end(args, Duration::from_secs(20));
    let mut problems = Vec::new();
    if fin.status.success() {
        problems.push("exit status 0".to_string());
    }
    let lines = fin.nonempty_stderr();
    if lines.len() != 1 {
        problems.push(format!(
            "{} non-empty stderr lines instead of 1",
            lines.len()
        ));
    }
    if fin.began_tracing() {
        problems.push("printed `begin tracing`".to_string());
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!("{}\n{}", problems.join(", "), fin.describe()))
    }
}

#[test]
fn bad_input_is_refused_with_one_line() {
    require_root();
    let bad_syntax = TempFile::new("syntax", "{\"name\": \"all\", \"children\": [ {\"func\": ");
    let bad_shape = TempFile::new(
        "shape",
        "{\"name\": \"all\", \"desc\": \"x\", \"children\": [ {\"skb\": 0} ]}",
    );
    let missing = format!("/nonexistent-ntt-{}/tracer.json", std::process::id());
    let (syntax, shape) = (bad_syntax.path(), bad_shape.path());
    let cases: Vec<Vec<&str>> = vec![
        vec!["--addr", "10.0.0.300"],
        vec!["-s", "not-an-address"],
        vec!["--port", "0"],
        vec!["--port", "70000"],
        vec!["--dport", "abc"],
        vec!["-p", "foo"],
        vec!["-t", "nosuchtracer"],
        vec!["--tracer-file", &syntax],
        vec!["--tracer-file", &shape],
        vec!["--tracer-file", &missing],
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|args| check(args).map(|p| format!("nettrace {}: {p}", args.join(" "))))
        .collect();
    assert!(
        failures.is_empty(),
        "{} bad-input case(s) not handled as expected:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// Issue 10: every value names what it claims to name, or is refused in one
// exact line, non-zero, before anything is loaded.

/// Runs a command line that must be refused: exactly `expected` on stderr,
/// a non-zero exit within `timeout`, no `begin tracing`, nothing on stdout.
fn assert_refused_within(args: &[&str], expected: &str, timeout: Duration) {
    let fin = Nettrace::run_to_end(args, timeout);
    assert!(
        !fin.status.success(),
        "nettrace accepted it (exit 0)\n{}",
        fin.describe()
    );
    assert!(
        !fin.began_tracing(),
        "nettrace began tracing\n{}",
        fin.describe()
    );
    assert_eq!(
        fin.nonempty_stderr(),
        vec![expected],
        "expected exactly this one stderr line\n{}",
        fin.describe()
    );
    assert!(
        fin.stdout_lines.iter().all(|l| l.trim().is_empty()),
        "stdout not empty\n{}",
        fin.describe()
    );
}

fn assert_refused(args: &[&str], expected: &str) {
    assert_refused_within(args, expected, Duration::from_secs(20));
}

const NOT_A_NAMESPACE: &str =
    "is not a namespace file; give /proc/PID/ns/net, /run/netns/NAME or a namespace inode number";

#[test]
fn netns_regular_file_is_refused() {
    preflight();
    let f = TempFile::new("netns-file", "{}");
    let p = f.path();
    assert_refused(
        &["-p", "icmp", "--netns", &p],
        &format!("nettrace: --netns: {p} {NOT_A_NAMESPACE}"),
    );
}

#[test]
fn netns_directory_is_refused() {
    preflight();
    let dir = std::env::temp_dir().join(format!("ntt-{}-netns-dir", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a directory");
    let p = dir.to_string_lossy().into_owned();
    let result = std::panic::catch_unwind(|| {
        assert_refused(
            &["-p", "icmp", "--netns", &p],
            &format!("nettrace: --netns: {p} {NOT_A_NAMESPACE}"),
        )
    });
    let _ = std::fs::remove_dir(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn netns_of_another_type_is_refused() {
    preflight();
    assert_refused(
        &["-p", "icmp", "--netns", "/proc/self/ns/uts"],
        "nettrace: --netns: /proc/self/ns/uts is a UTS namespace, not a network namespace",
    );
}

#[test]
fn netns_inode_of_nothing_is_refused() {
    preflight();
    // Namespace inodes are allocated from 0xEFFFFFFF up: 12345 is never one.
    assert_refused(
        &["-p", "icmp", "--netns", "12345"],
        "nettrace: --netns: 12345 is the inode of no network namespace in use (by a process or a mount)",
    );
}

#[test]
fn netns_zero_is_refused() {
    preflight();
    // 0 is what the kernel filter reads as "any namespace".
    assert_refused(
        &["-p", "icmp", "--netns", "0"],
        "nettrace: --netns: '0' names no network namespace; give its inode number (above 0, as `stat -L -c %i /proc/PID/ns/net` prints it) or a path such as /proc/PID/ns/net or /run/netns/NAME",
    );
}

#[test]
fn pid_of_no_process_is_refused() {
    preflight();
    let pid = (1..=999_999u32)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid");
    let pid = pid.to_string();
    assert_refused(
        &["-p", "icmp", "--pid", &pid],
        &format!("nettrace: --pid {pid}: no such process"),
    );
}

#[test]
fn pid_of_a_thread_is_refused() {
    preflight();
    // The filter compares process ids: a thread id would never match.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        tx.send(nix::unistd::gettid().as_raw()).expect("send tid");
        let _ = stop_rx.recv();
    });
    let tid = rx.recv().expect("tid").to_string();
    let me = std::process::id();
    let result = std::panic::catch_unwind(|| {
        assert_refused(
            &["-p", "icmp", "--pid", &tid],
            &format!(
                "nettrace: --pid {tid} is a thread of process {me}; give the process id, {me}"
            ),
        )
    });
    drop(stop_tx);
    thread.join().expect("thread");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn endless_tracer_file_is_refused() {
    preflight();
    // Before: read until memory ran out (300 MB/s), deaf to SIGINT.
    assert_refused_within(
        &["-p", "icmp", "--tracer-file", "/dev/zero"],
        "nettrace: tracer file /dev/zero is larger than 1 MiB; a tracer tree is a few KiB of JSON",
        Duration::from_secs(8),
    );
}

#[test]
fn large_tracer_file_is_refused() {
    preflight();
    // A valid tree after 2 MiB of blanks.
    let text = format!(
        "{}{{\"name\": \"all\", \"children\": [{{\"tp\": \"net/netif_rx\", \"skb\": 0}}]}}",
        " ".repeat(2 << 20)
    );
    let f = TempFile::new("large", &text);
    let p = f.path();
    assert_refused(
        &["-p", "icmp", "--addr", "10.250.90.2", "--tracer-file", &p],
        &format!(
            "nettrace: tracer file {p} is larger than 1 MiB; a tracer tree is a few KiB of JSON"
        ),
    );
}

/// A tree whose groups nest `levels` deep, with one tracepoint leaf.
fn nested(levels: usize) -> String {
    let mut s = String::from(r#"{"name": "all", "children": ["#);
    for i in 2..=levels {
        s.push_str(&format!(r#"{{"name": "g{i}", "children": ["#));
    }
    s.push_str(r#"{"tp": "net/netif_rx", "skb": 0}"#);
    for _ in 0..levels {
        s.push_str("]}");
    }
    s
}

#[test]
fn deeply_nested_tracer_file_is_refused_as_too_deep() {
    preflight();
    // 33 levels (serde_json itself would take it), and 200 (serde_json
    // calls it a syntax error: "recursion limit exceeded").
    for levels in [33, 200] {
        let text = nested(levels);
        let f = TempFile::new(&format!("deep{levels}"), &text);
        let p = f.path();
        let column = text.find(r#""g33""#).expect("g33") + r#""g33", "children": ["#.len();
        assert_refused(
            &["-p", "icmp", "--addr", "10.250.90.2", "--tracer-file", &p],
            &format!("nettrace: tracer file {p}: tracer.json is nested too deeply at line 1, column {column}: at most 32 levels of groups; flatten the tree"),
        );
    }
}

#[test]
fn tracer_file_with_unknown_tracepoint_is_refused_before_loading() {
    preflight();
    // Before: the programs were loaded, then "none of the selected tracers
    // can be attached".
    let f = TempFile::new(
        "tp-missing",
        r#"{"name": "all", "children": [{"tp": "skb/nonexistent", "skb": 0}]}"#,
    );
    let p = f.path();
    assert_refused(
        &["-p", "icmp", "--tracer-file", &p],
        &format!("nettrace: tracer file {p}: tracer 'nonexistent': tracepoint skb/nonexistent does not exist on this kernel (no /sys/kernel/tracing/events/skb/nonexistent)"),
    );
}

#[test]
fn tracepoint_skb_index_past_its_arguments_is_refused() {
    preflight();
    // net_dev_xmit(struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len)
    let f = TempFile::new(
        "tp-index",
        r#"{"name": "all", "children": [{"tp": "net/net_dev_xmit", "skb": 7}]}"#,
    );
    let p = f.path();
    assert_refused(
        &["-p", "icmp", "--tracer-file", &p],
        &format!("nettrace: tracer file {p}: tracer 'net_dev_xmit': \"skb\" is argument 7, but tracepoint net/net_dev_xmit has 4 arguments (0 to 3)"),
    );
}

#[test]
fn tracepoint_skb_index_of_another_type_is_refused() {
    preflight();
    // Before: attached, reading an int as an skb pointer.
    let f = TempFile::new(
        "tp-type",
        r#"{"name": "all", "children": [{"tp": "net/net_dev_xmit", "skb": 1}]}"#,
    );
    let p = f.path();
    assert_refused(
        &["-p", "icmp", "--addr", "10.250.90.2", "--tracer-file", &p],
        &format!("nettrace: tracer file {p}: tracer 'net_dev_xmit': \"skb\" is argument 1 of tracepoint net/net_dev_xmit, whose type is int, not struct sk_buff *"),
    );
}

#[test]
fn stack_on_every_tracer_is_refused_in_the_words_kubectl_nettrace_uses() {
    preflight();
    // The same validator, and so the same line, as `kubectl nettrace pod/a --stack
    // --stack-tracer kfree_skb` (kube_e2e.rs); --stack-tracer does not make --stack cheaper.
    let line = "nettrace: --stack with the whole \"all\" tracer is costly: pick tracers with -t, use --stack-tracer without --stack, or add --force-stack";
    assert_refused(&["-p", "icmp", "--stack"], line);
    assert_refused(
        &["-p", "icmp", "--stack", "--stack-tracer", "kfree_skb"],
        line,
    );
    assert_refused(
        &["-p", "icmp", "--count", "0"],
        "nettrace: --count must be at least 1",
    );
    assert_refused(
        &["-p", "icmp", "--rate-limit", "0"],
        "nettrace: --rate-limit must be at least 1 event per second",
    );
}
