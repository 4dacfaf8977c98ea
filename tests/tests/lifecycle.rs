//! Scenario 8: programs are loaded while running and all gone after SIGINT / SIGTERM; -v
//! says how packets are read (typed casts where the kernel has them, or `--probe-read`).

use std::time::Duration;

use nettrace_tests::kernel::FunctionTracing;
use nettrace_tests::*;
use nix::sys::signal::Signal;

/// Program name prefix in `bpftool prog show`.
const PROG_PREFIX: &str = "nt_";
/// Time allowed for the kernel to free programs after the process exited.
const GRACE: Duration = Duration::from_secs(10);

/// Runs `nettrace -v -p icmp --addr ADDR [--probe-read]` and stops it with `sig`.
fn lifecycle(sig: Signal, addr: &str, probe_read: bool) {
    preflight();
    let mut args = vec!["-v", "-p", "icmp", "--addr", addr];
    if probe_read {
        args.push("--probe-read");
    }
    let nt = Nettrace::spawn(&args);
    let stderr = nt.stderr_lines();
    let ids = prog_ids_from_verbose(&stderr);
    assert!(
        !ids.is_empty(),
        "no `prog id N` in -v output:\n{}",
        stderr.join("\n")
    );
    // Function leaves attach where the kernel has kprobes or fentry (probed here), and are
    // reported unavailable where it has neither.
    let ft = FunctionTracing::probe();
    let function_attached = stderr.iter().any(|l| {
        l.starts_with("attached ")
            && [": fentry ", ": kprobe ", ": kprobe-multi "]
                .iter()
                .any(|k| l.contains(k))
    });
    let unavailable = stderr.iter().any(|l| l.starts_with("unavailable"));
    // Packets are read through bpf_rdonly_cast exactly where the kernel has it, unless
    // --probe-read says not to.
    let reads = if nettrace_tests::kernel::has_rdonly_cast() && !probe_read {
        "packet reads: typed loads through bpf_rdonly_cast"
    } else {
        "packet reads: bpf_probe_read_kernel"
    };
    assert!(
        stderr.iter().any(|l| l == reads),
        "-v does not say `{reads}`:\n{}",
        stderr.join("\n")
    );
    if ft.any() {
        assert!(
            function_attached,
            "the kernel has {ft:?} but no function tracer attached:\n{}",
            stderr.join("\n")
        );
    } else {
        assert!(
            unavailable && !function_attached,
            "no kprobes and no fentry here, yet -v does not report the function tracers unavailable:\n{}",
            stderr.join("\n")
        );
    }
    for &id in &ids {
        let out = std::process::Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "prog id {id} from -v is not loaded");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("name {PROG_PREFIX}")),
            "prog id {id} is not named {PROG_PREFIX}*: {text}"
        );
    }
    let fin = nt.stop_with(sig);
    assert!(
        fin.status.success(),
        "nettrace did not exit 0 on {sig}\n{}",
        fin.describe()
    );
    assert_progs_gone(&ids, GRACE);
}

#[test]
fn sigint_unloads_everything() {
    lifecycle(Signal::SIGINT, "10.250.80.2", false);
}

#[test]
fn sigterm_unloads_everything() {
    lifecycle(Signal::SIGTERM, "10.250.81.2", true);
}
