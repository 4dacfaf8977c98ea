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
