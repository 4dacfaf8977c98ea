//! The VM bench: nettrace inside QEMU guests running Debian's 6.1 and 6.12 cloud kernels.
//!
//! The host kernel has no kprobes and refuses fentry, so the function backends can only be
//! tested in a guest. For every kernel in [`KERNELS`] this test
//! 1. fetches the newest Debian `linux-image-<series>…-cloud-amd64` package
//!    (`tests/vm/fetch-kernel.sh`, cached under `target/vm/kernels/`),
//! 2. builds a static nettrace (`target/vm/cargo`, separate from the normal build),
//! 3. builds an initramfs with busybox, Debian's ip/ping/iptables, the needed kernel modules
//!    and the scenario `tests/vm/scenarios/bench.sh` (`tests/vm/build-initramfs.sh`),
//! 4. boots it under TCG with no network device (`tests/vm/run.sh`); both kernels boot in
//!    parallel, once for the whole test binary,
//! 5. splits the serial console into steps (`=== BEGIN name ===` … `=== END name rc=N ===`)
//!    and asserts each step in its own test function.
//!
//! Missing tools, packages or a failed build are failures, never skips. Consoles are kept
//! in `target/vm/console-<series>.txt`. `NETTRACE_VM_BIN` overrides the static binary
//! (no build then); `NT_VM_TIMEOUT` the per-boot timeout in seconds.
//!
//! Run alone: `cargo test -p nettrace-tests --test vm -- --nocapture` (as root: apt).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nettrace_tests::*;

// ---------------------------------------------------------------------------------------
// What is asserted (adjust here when the backends change).

/// Kernel series booted; each is `fetch-kernel.sh`'s SERIES argument.
const KERNELS: &[&str] = &["6.1", "6.12"];

/// Per-boot timeout. A guest runs its scenarios in 4-5 minutes on a quiet 2-core machine
/// (TCG); under `./dev test` the bench cluster runs beside it, and the 6.1 guest once took
/// over 600 s there.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// Console lines that mean the guest kernel broke.
const PANIC_MARKERS: &[&str] = &["Kernel panic", "BUG:", "Oops", "general protection fault"];

/// Addresses of the scenario file (`tests/vm/scenarios/bench.sh`).
const T_A: &str = "10.250.10.1";
const T_B: &str = "10.250.10.2";
const F_A: &str = "10.250.20.1";
const F_B: &str = "10.250.20.2";
const D_A: &str = "10.250.30.1";
const D_B: &str = "10.250.30.2";
const R_A: &str = "10.250.40.2";
const R_B: &str = "10.250.41.2";
const R_VIP: &str = "10.250.49.100";

/// Tracepoint scenario (as tests/tests/icmp_bridge.rs): the request's path, (tracer,
/// topology role of the interface or "" for anywhere).
const TP_REQUEST_PATH: &[(&str, &str)] = &[
    ("net_dev_queue", "a"),
    ("netif_receive_skb", "mid_a"),
    ("netif_receive_skb", "b"),
    ("consume_skb", ""),
];
const TP_REPLY_PATH: &[(&str, &str)] = &[
    ("net_dev_queue", "b"),
    ("netif_receive_skb", "mid_b"),
    ("netif_receive_skb", "a"),
    ("consume_skb|kfree_skb", ""),
];
const TP_GROUPS: &[(&str, &str)] = &[
    ("net_dev_queue", "link-out"),
    ("netif_receive_skb", "link-in"),
];

/// Scenario a: those of these that show up in the request's block must be in this order.
/// `ip_rcv_finish` is attached on 6.1 and 6.12 but never hit on this path: `ip_rcv` calls it
/// inlined through NF_HOOK (the out-of-line copy serves the list-receive path), so it is
/// ordered when present but not required.
const FUNC_PATH_ORDER: &[&str] = &[
    "ip_rcv",
    "ip_rcv_finish",
    "ip_local_deliver",
    "icmp_rcv",
    "consume_skb",
];
/// Scenario a: these must be attached (`-v`) and present in the request's block.
const FUNC_PATH_REQUIRED: &[&str] = &[
    "ip_rcv",
    "ip_local_deliver",
    "icmp_rcv",
    "nf_hook_slow",
    "consume_skb",
];
/// Groups printed by `--detail` for function leaves.
const FUNC_GROUPS: &[(&str, &str)] = &[
    ("ip_rcv", "ip-in"),
    ("ip_rcv_finish", "ip-in"),
    ("ip_local_deliver", "ip-in"),
    ("icmp_rcv", "icmp-in"),
    ("nf_hook_slow", "netfilter"),
    ("skb_clone", "life"),
    ("__dev_queue_xmit", "link-out"),
    ("br_forward", "bridge"),
];
/// `--ret` line under an event in `--timeline` mode (16 spaces).
const RET_PREFIX: &str = "                return value:";
/// Scenario b: the cloning function.
const CLONE_TRACER: &str = "skb_clone";
/// Scenario c: the drop.
const DROP_TRACER: &str = "kfree_skb";
const DROP_REASON: &str = "NETFILTER_DROP";
/// Scenario d: the hook after which the request is shown rewritten.
const NAT_HOOK: &str = "nf_hook_slow";
/// Scenario e: `-v` lines.
const ATTACHED_SUMMARY: &str = "attached ";
const DETACHED_SUMMARY: &str = "detached in ";

// ---------------------------------------------------------------------------------------
// The console.

/// One `=== BEGIN name ===` … `=== END name rc=N ===` step.
#[derive(Debug, Clone, Default)]
struct StepOut {
    name: String,
    /// `None`: no END marker (the guest died or hung in the step).
    rc: Option<i32>,
    lines: Vec<String>,
    /// `--- stdout ---` and the like: section name (first word) -> lines.
    sections: BTreeMap<String, Vec<String>>,
    /// The header line of each section (`--- traffic rc=0 ---`, `--- timing … ---`).
    section_headers: BTreeMap<String, String>,
    /// Guest uptime at start and end (`=== TIME … ===`).
    time: Option<(f64, f64)>,
}

impl StepOut {
    fn section(&self, name: &str) -> &[String] {
        self.sections.get(name).map(|v| v.as_slice()).unwrap_or(&[])
    }

    fn stdout(&self) -> &[String] {
        self.section("stdout")
    }

    fn stderr(&self) -> &[String] {
        self.section("stderr")
    }

    fn describe(&self) -> String {
        format!(
            "step {} (rc {:?}):\n{}",
            self.name,
            self.rc,
            dump(&self.lines)
        )
    }
}

#[derive(Debug)]
struct Boot {
    series: String,
    package: String,
    console_path: PathBuf,
    console: Vec<String>,
    steps: Vec<StepOut>,
    /// Host wall time of the qemu run.
    wall: Duration,
    status: String,
    /// `topo NAME ROLE LABEL` lines: (topology, role) -> `ifindex:name`.
    topo: BTreeMap<(String, String), String>,
}

fn parse_console(text: &str) -> (Vec<String>, Vec<StepOut>) {
    let console: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    let mut steps = Vec::new();
    let mut cur: Option<StepOut> = None;
    let mut section: Option<String> = None;
    for line in &console {
        if let Some(name) = line
            .strip_prefix("=== BEGIN ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            if let Some(s) = cur.take() {
                steps.push(s);
            }
            cur = Some(StepOut {
                name: name.to_string(),
                ..StepOut::default()
            });
            section = None;
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("=== END ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            if let Some((name, rc)) = rest.rsplit_once(" rc=") {
                if let Some(mut s) = cur.take() {
                    if s.name == name {
                        s.rc = rc.parse().ok();
                    }
                    steps.push(s);
                }
            }
            section = None;
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("=== TIME ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap_or("");
            let mut start = None;
            let mut end = None;
            for p in parts {
                if let Some(v) = p.strip_prefix("start=") {
                    start = v.parse().ok();
                } else if let Some(v) = p.strip_prefix("end=") {
                    end = v.parse().ok();
                }
            }
            if let Some(s) = steps.iter_mut().rev().find(|s| s.name == name) {
                if let (Some(a), Some(b)) = (start, end) {
                    s.time = Some((a, b));
                }
            }
            continue;
        }
        let Some(s) = cur.as_mut() else { continue };
        s.lines.push(line.clone());
        if let Some(inner) = line
            .strip_prefix("--- ")
            .and_then(|r| r.strip_suffix(" ---"))
        {
            let key = inner.split_whitespace().next().unwrap_or("").to_string();
            s.section_headers.insert(key.clone(), line.clone());
            s.sections.entry(key.clone()).or_default();
            section = Some(key);
            continue;
        }
        if let Some(key) = &section {
            s.sections
                .entry(key.clone())
                .or_default()
                .push(line.clone());
        }
    }
    if let Some(s) = cur.take() {
        steps.push(s);
    }
    (console, steps)
}

// ---------------------------------------------------------------------------------------
// Building and booting (once per test binary).

fn vm_dir() -> PathBuf {
    workspace_dir().join("tests/vm")
}

fn target_vm() -> PathBuf {
    workspace_dir().join("target/vm")
}

fn run_checked(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require_host_tools() -> Result<(), String> {
    let tools: &[(&str, &str)] = &[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("apt-get", "apt (a Debian host)"),
        ("apt-cache", "apt (a Debian host)"),
        ("dpkg-deb", "dpkg"),
        ("xz", "xz-utils"),
        ("gzip", "gzip"),
        ("file", "file"),
        ("ldd", "libc-bin"),
        ("bash", "bash"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("xtables-nft-multi", "iptables"),
        ("timeout", "coreutils"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(t, _)| nettrace_tests::env::find_tool(t).is_none())
        .map(|(t, p)| format!("`{t}` (install {p})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the VM bench needs: {}. `./dev deps` installs them on Debian.",
            missing.join(", ")
        ))
    }
}

struct Kernel {
    series: String,
    package: String,
    image: PathBuf,
    dir: PathBuf,
}

fn fetch_kernel(series: &str) -> Result<Kernel, String> {
    let out = run_checked(
        &format!("fetching the {series} kernel"),
        Command::new(vm_dir().join("fetch-kernel.sh"))
            .arg(series)
            .arg(target_vm().join("kernels")),
    )?;
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .ok_or_else(|| format!("fetch-kernel.sh {series} printed no {k}=: {out}"))
    };
    let image = PathBuf::from(get("kernel")?);
    let modules = PathBuf::from(get("modules")?);
    // KERNEL_DIR is the package root: <dir>/lib/modules/<release>.
    let dir = modules
        .ancestors()
        .nth(3)
        .ok_or("bad modules path")?
        .to_path_buf();
    Ok(Kernel {
        series: series.to_string(),
        package: get("package")?,
        image,
        dir,
    })
}

/// The static nettrace for the guests: `$NETTRACE_VM_BIN`, or a `+crt-static` release build
/// in `target/vm/cargo`.
fn static_nettrace() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NETTRACE_VM_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NETTRACE_VM_BIN={} does not exist", p.display()))
        };
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target_dir = target_vm().join("cargo");
    run_checked(
        "building the static nettrace for the guests",
        Command::new(cargo)
            .current_dir(workspace_dir())
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "build",
                "-p",
                "nettrace",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
            ]),
    )?;
    let bin = target_dir.join("x86_64-unknown-linux-gnu/release/nettrace");
    let file = run_checked("file", Command::new("file").arg("-L").arg(&bin))?;
    if !(file.contains("statically linked") || file.contains("static-pie linked")) {
        // build-initramfs.sh copies the libraries of a dynamic binary; say so.
        eprintln!("vm: warning: {} is not static: {file}", bin.display());
    }
    Ok(bin)
}

/// Tests of the host suite whose expectations come from probing the kernel; they run in
/// every guest too (scenario step `suite-NAME`), to show they hold on kernels with kprobes
/// and fentry as well as on the build host.
const GUEST_SUITE: &[&str] = &["tracer_list", "lifecycle"];

/// Static builds of the [`GUEST_SUITE`] test executables, as `SRC:/bin/nt-test-NAME` entries
/// for build-initramfs.sh's `NT_VM_EXTRA`.
fn static_suite() -> Result<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_dir())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", target_vm().join("cargo"))
        .args([
            "test",
            "--no-run",
            "-p",
            "nettrace-tests",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--message-format=json",
        ]);
    for t in GUEST_SUITE {
        cmd.args(["--test", t]);
    }
    let out = run_checked("building the guest suite", &mut cmd)?;
    let mut extra = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str())
        else {
            continue;
        };
        if GUEST_SUITE.contains(&name) {
            extra.push(format!("{exe}:/bin/nt-test-{name}"));
        }
    }
    if extra.len() != GUEST_SUITE.len() {
        return Err(format!(
            "the guest suite build gave {extra:?}, expected {GUEST_SUITE:?}"
        ));
    }
    Ok(extra.join(" "))
}

fn boot_one(k: &Kernel, bin: &Path, extra: &str) -> Result<Boot, String> {
    let initrd = target_vm().join(format!("initramfs-{}.cpio.gz", k.series));
    run_checked(
        &format!("building the {} initramfs", k.series),
        Command::new(vm_dir().join("build-initramfs.sh"))
            .env("NETTRACE_VM_BIN", bin)
            .env("NT_VM_EXTRA", extra)
            .arg(&k.dir)
            .arg(vm_dir().join("scenarios/bench.sh"))
            .arg(&initrd),
    )?;
    let timeout = std::env::var("NT_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(BOOT_TIMEOUT.as_secs());
    let start = Instant::now();
    let out = Command::new(vm_dir().join("run.sh"))
        .arg(&k.image)
        .arg(&initrd)
        .arg(timeout.to_string())
        .output()
        .map_err(|e| format!("cannot run tests/vm/run.sh: {e}"))?;
    let wall = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let console_path = target_vm().join(format!("console-{}.txt", k.series));
    let _ = std::fs::write(
        &console_path,
        format!(
            "{text}\n--- qemu stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    let status = match out.status.code() {
        Some(124) | Some(137) | None => format!("timed out after {timeout} s"),
        Some(0) => "ok".to_string(),
        Some(c) => format!(
            "qemu exited with {c}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    };
    let (console, steps) = parse_console(&text);
    let mut topo = BTreeMap::new();
    for s in steps.iter().filter(|s| s.name.starts_with("topo-")) {
        for l in &s.lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 4 && f[0] == "topo" {
                topo.insert((f[1].to_string(), f[2].to_string()), f[3].to_string());
            }
        }
    }
    Ok(Boot {
        series: k.series.clone(),
        package: k.package.clone(),
        console_path,
        console,
        steps,
        wall,
        status,
        topo,
    })
}

fn boot_all() -> Result<Vec<Boot>, String> {
    require_root();
    require_host_tools()?;
    let t0 = Instant::now();
    let kernels: Vec<Kernel> = KERNELS
        .iter()
        .map(|s| fetch_kernel(s))
        .collect::<Result<_, _>>()?;
    let bin = static_nettrace()?;
    let extra = static_suite()?;
    eprintln!(
        "vm: kernels and static nettrace ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let boots: Vec<Result<Boot, String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = kernels
            .iter()
            .map(|k| {
                let (bin, extra) = (&bin, &extra);
                sc.spawn(move || boot_one(k, bin, extra))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("boot thread panicked".into()))
            })
            .collect()
    });
    let boots: Vec<Boot> = boots.into_iter().collect::<Result<_, _>>()?;
    let mut report = format!(
        "vm: bench done in {:.1} s (fetch, build, boots)\n",
        t0.elapsed().as_secs_f64()
    );
    for b in &boots {
        let _ = writeln!(
            report,
            "vm: {} ({}): qemu {:.1} s, {}",
            b.series,
            b.package,
            b.wall.as_secs_f64(),
            b.status
        );
        for s in &b.steps {
            let t = s.time.map(|(a, e)| e - a).unwrap_or(f64::NAN);
            let timing = s
                .section_headers
                .get("timing")
                .map(|h| h.trim_matches('-').trim().to_string())
                .unwrap_or_default();
            let _ = writeln!(
                report,
                "vm:   {:<18} rc={:<4} {:>6.2} s  {timing}",
                s.name,
                s.rc.map(|r| r.to_string()).unwrap_or("-".into()),
                t
            );
            for l in s.stderr() {
                if l.starts_with(ATTACHED_SUMMARY) && l.contains(" tracers in ")
                    || l.starts_with(DETACHED_SUMMARY)
                {
                    let _ = writeln!(report, "vm:       {l}");
                }
            }
        }
    }
    eprint!("{report}");
    let _ = std::fs::write(target_vm().join("report.txt"), &report);
    Ok(boots)
}

static BOOTS: OnceLock<Result<Vec<Boot>, String>> = OnceLock::new();

/// The boot of `series`; panics if the bench could not run or the guest kernel broke.
fn boot(series: &str) -> &'static Boot {
    let boots = match BOOTS.get_or_init(boot_all) {
        Ok(b) => b,
        Err(e) => panic!("the VM bench could not run: {e}"),
    };
    let b = boots
        .iter()
        .find(|b| b.series == series)
        .unwrap_or_else(|| panic!("no boot of {series}"));
    if let Some(l) = b
        .console
        .iter()
        .find(|l| PANIC_MARKERS.iter().any(|m| l.contains(m)))
    {
        panic!(
            "the {series} guest kernel broke: {l:?} (console: {})",
            b.console_path.display()
        );
    }
    if b.status != "ok" {
        panic!(
            "the {series} guest: {} (console: {})\n{}",
            b.status,
            b.console_path.display(),
            tail(&b.console, 60)
        );
    }
    b
}

fn tail(lines: &[String], n: usize) -> String {
    dump(&lines[lines.len().saturating_sub(n)..])
}

impl Boot {
    /// The step `name`; panics if it is missing or has no END marker.
    fn step(&self, name: &str) -> &StepOut {
        let s = self
            .steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "{}: step {name} never began (console: {})\n{}",
                    self.series,
                    self.console_path.display(),
                    tail(&self.console, 40)
                )
            });
        if s.rc.is_none() {
            panic!(
                "{}: step {name} has no END marker\n{}",
                self.series,
                s.describe()
            );
        }
        s
    }

    /// A nettrace step that must have attached, seen traffic and exited 0.
    fn trace_step(&self, name: &str) -> &StepOut {
        let s = self.step(name);
        let header = s.section_headers.get("timing").cloned().unwrap_or_default();
        assert!(
            header.contains("began=1"),
            "{}: nettrace never printed `begin tracing` in {name}\n{}",
            self.series,
            s.describe()
        );
        assert!(
            !header.contains("killed=1"),
            "{}: nettrace had to be killed in {name}\n{}",
            self.series,
            s.describe()
        );
        assert_eq!(
            s.rc,
            Some(0),
            "{}: nettrace failed in {name}\n{}",
            self.series,
            s.describe()
        );
        s
    }

    fn label(&self, topo: &str, role: &str) -> String {
        self.topo
            .get(&(topo.to_string(), role.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("{}: no interface {topo}/{role}", self.series))
    }
}

// ---------------------------------------------------------------------------------------
// Assertions.

fn check_boot(series: &str) {
    let b = boot(series);
    for s in &b.steps {
        assert!(
            s.rc.is_some(),
            "{series}: step {} has no END marker\n{}",
            s.name,
            s.describe()
        );
    }
    assert!(
        b.console.iter().any(|l| l.starts_with("=== GUEST END")),
        "{series}: the scenario did not finish\n{}",
        tail(&b.console, 40)
    );
    for name in [
        "modules",
        "kernel-facts",
        "topo-t",
        "topo-f",
        "topo-d",
        "topo-r",
        "topo-g",
        "topo-i",
        "iptables-f",
        "iptables-d",
        "iptables-r",
    ] {
        let s = b.step(name);
        assert_eq!(
            s.rc,
            Some(0),
            "{series}: setup step {name} failed\n{}",
            s.describe()
        );
    }
    let facts = b.step("kernel-facts");
    for want in ["btf yes", "kprobe_pmu yes"] {
        assert!(
            facts.lines.iter().any(|l| l == want),
            "{series}: kernel facts lack {want:?}\n{}",
            facts.describe()
        );
    }
}

fn check_tracepoint_icmp(series: &str) {
    let b = boot(series);
    let s = b.trace_step("tracepoint-icmp");
    let out = s.stdout();
    let steps = |path: &[(&str, &str)], summary: &str| -> Vec<Step> {
        path.iter()
            .map(|(tracer, role)| {
                let st = Step::exact(tracer, summary);
                if role.is_empty() {
                    st
                } else {
                    st.iface(b.label("t", role))
                }
            })
            .collect()
    };
    let request = icmp_request(T_A, T_B, 1);
    let reply = icmp_reply(T_B, T_A, 1);
    assert_subsequence_steps(out, &steps(TP_REQUEST_PATH, &request));
    assert_subsequence_steps(out, &steps(TP_REPLY_PATH, &reply));
    let events = find_events(out);
    assert!(!events.is_empty(), "{series}: no events\n{}", s.describe());
    for ev in events {
        let skb = ev.skb.as_deref().unwrap_or("");
        assert!(
            skb.len() >= 8 && skb.bytes().all(|c| c.is_ascii_hexdigit()),
            "{series}: bad skb column in {:?}",
            ev.raw
        );
        assert!(
            ev.pid.is_some() && ev.comm.is_some(),
            "no task in {:?}",
            ev.raw
        );
        if let Some((_, group)) = TP_GROUPS.iter().find(|(tr, _)| *tr == ev.tracer) {
            assert_eq!(ev.group.as_deref(), Some(*group), "group of {:?}", ev.raw);
        }
        assert!(
            ev.summary.contains(T_A) && ev.summary.contains(T_B),
            "{series}: event about another packet: {:?}\n{}",
            ev.raw,
            s.describe()
        );
    }
}

/// An overlay this host cannot build (Geneve, IP-in-IP): traced by the inner destination,
/// the request shows on node a's tunnel device, then encapsulated (the tunnel before the
/// inner packet) on a's and b's underlay, then decapsulated on b's tunnel device; the reply
/// is encapsulated the other way.
fn check_tunnel(series: &str, kind: &str) {
    let b = boot(series);
    let s = b.trace_step(&format!("tunnel-{kind}"));
    let out = s.stdout();
    let (topo, id, head) = match kind {
        "geneve" => ("g", 50, "Geneve vni 50"),
        _ => ("i", 52, "IPIP"),
    };
    let prefix = |a: &str, z: &str| format!("{head} {a} -> {z} | ");
    let under = |h: u8| format!("10.250.{id}.{h}");
    let inner = |h: u8| format!("10.250.{}.{h}", id + 1);
    let request = icmp_request(inner(1), inner(2), 1);
    let reply = icmp_reply(inner(2), inner(1), 1);
    let enc_request = format!("{}{request}", prefix(&under(1), &under(2)));
    let enc_reply = format!("{}{reply}", prefix(&under(2), &under(1)));
    let at = |tracer: &str, summary: &str, role: &str| {
        Step::exact(tracer, summary).iface(b.label(topo, role))
    };
    assert_subsequence_steps(
        out,
        &[
            at("net_dev_queue", &request, "a_tun"),
            at("net_dev_queue", &enc_request, "a_u"),
            at("netif_receive_skb", &enc_request, "b_u"),
            at("netif_receive_skb", &request, "b_tun"),
        ],
    );
    assert_subsequence_steps(
        out,
        &[
            at("net_dev_queue", &enc_reply, "b_u"),
            at("netif_receive_skb", &enc_reply, "a_u"),
            at("netif_receive_skb", &reply, "a_tun"),
        ],
    );
    for ev in find_events(out) {
        // a drop line carries `, reason: ..., location: ...` after the packet
        let packet = ev.summary.split(", reason: ").next().unwrap_or_default();
        assert!(
            [&request, &reply, &enc_request, &enc_reply]
                .iter()
                .any(|s| s.as_str() == packet),
            "{series}: an event of another packet with --addr {}: {:?}\n{}",
            inner(2),
            ev.raw,
            s.describe()
        );
    }
}

/// `-v` lines: tracer name -> (kind, target), for `attached NAME: KIND TARGET (prog id N)`,
/// with kprobe-multi counted as kprobe.
fn attached(s: &StepOut) -> BTreeMap<String, (String, String)> {
    attached_as(s)
        .into_iter()
        .map(|(name, (kind, target))| {
            // `--backend kprobe` attaches through one kprobe-multi link where the kernel
            // has fprobe (6.12), else one kprobe per function (6.1): both are the kprobe
            // backend.
            let kind = if kind == "kprobe-multi" {
                "kprobe".to_string()
            } else {
                kind
            };
            (name, (kind, target))
        })
        .collect()
}

/// `-v` lines: tracer name -> (kind, target), each kind as printed.
fn attached_as(s: &StepOut) -> BTreeMap<String, (String, String)> {
    let mut m = BTreeMap::new();
    for l in s.stderr() {
        let Some(rest) = l.trim().strip_prefix("attached ") else {
            continue;
        };
        let Some((name, what)) = rest.split_once(": ") else {
            continue;
        };
        let mut w = what.split_whitespace();
        let (Some(kind), Some(target)) = (w.next(), w.next()) else {
            continue;
        };
        m.insert(name.to_string(), (kind.to_string(), target.to_string()));
    }
    m
}

/// Scenario e for one step: the attach summary and, at exit, the detach time; every
/// function leaf attached with the forced backend.
fn check_verbose(series: &str, backend: &str, s: &StepOut) -> BTreeMap<String, (String, String)> {
    let err = s.stderr();
    assert!(
        err.iter()
            .any(|l| l.starts_with(ATTACHED_SUMMARY) && l.contains(" tracers in ")),
        "{series}/{backend}: no `attached N of M tracers in X ms` line\n{}",
        s.describe()
    );
    assert!(
        err.iter().any(|l| l.starts_with(DETACHED_SUMMARY)),
        "{series}/{backend}: no `detached in X ms` line\n{}",
        s.describe()
    );
    let att = attached(s);
    for (name, (kind, _)) in &att {
        assert!(
            kind == backend || kind == "tp_btf" || kind == "raw_tp",
            "{series}: {name} attached as {kind} with --backend {backend}\n{}",
            s.describe()
        );
    }
    assert!(
        att.values().any(|(k, _)| k == backend),
        "{series}: nothing attached as {backend}\n{}",
        s.describe()
    );
    att
}

fn norm_hex(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let s = s.trim_start_matches('0');
    s.to_ascii_lowercase()
}

/// Scenario a (+ e).
fn check_func_path(series: &str, backend: &str) {
    let b = boot(series);
    let s = b.trace_step(&format!("{backend}-icmp"));
    let att = check_verbose(series, backend, s);
    for f in FUNC_PATH_REQUIRED {
        assert!(
            att.contains_key(*f),
            "{series}/{backend}: {f} was not attached\n{}",
            s.describe()
        );
    }
    let out = s.stdout();
    let request = icmp_request(F_A, F_B, 1);
    let blocks = parse_timeline(out);
    let block = blocks
        .iter()
        .find(|bl| {
            bl.events()
                .iter()
                .any(|e| e.tracer == "icmp_rcv" && e.summary.starts_with(&request))
        })
        .unwrap_or_else(|| {
            panic!(
                "{series}/{backend}: no timeline block with the request's icmp_rcv\n{}",
                s.describe()
            )
        });
    let events = block.events();
    let order: Vec<Step> = FUNC_PATH_ORDER
        .iter()
        .filter(|f| events.iter().any(|e| e.tracer == **f))
        .map(|f| Step::exact(f, &request))
        .collect();
    assert_subsequence_steps(&block.lines, &order);
    for f in FUNC_PATH_REQUIRED {
        assert!(
            events
                .iter()
                .any(|e| e.tracer == *f && e.summary.starts_with(&request)),
            "{series}/{backend}: {f} missing from the request's block\n{}",
            dump(&block.lines)
        );
    }
    let b0 = b.label("f", "b");
    assert!(
        events
            .iter()
            .any(|e| e.tracer == "ip_rcv" && e.iface.as_deref() == Some(b0.as_str())),
        "{series}/{backend}: no ip_rcv on {b0}\n{}",
        dump(&block.lines)
    );
    for e in &events {
        if let Some((_, g)) = FUNC_GROUPS.iter().find(|(t, _)| *t == e.tracer) {
            assert_eq!(e.group.as_deref(), Some(*g), "group of {:?}", e.raw);
        }
    }
    assert!(
        out.iter().any(|l| l.starts_with(RET_PREFIX)),
        "{series}/{backend}: no `return value:` line with --ret\n{}",
        s.describe()
    );
}

/// Scenario b: a block with two skb addresses, linked by skb_clone's return value.
fn check_clone(series: &str, backend: &str) {
    let b = boot(series);
    let s = b.trace_step(&format!("{backend}-clone"));
    check_verbose(series, backend, s);
    let out = s.stdout();
    let blocks = parse_timeline(out);
    let mut why = String::new();
    for bl in &blocks {
        let skbs: BTreeSet<String> = bl
            .events()
            .iter()
            .filter_map(|e| e.skb.as_deref().map(norm_hex))
            .collect();
        if skbs.len() < 2 {
            continue;
        }
        for (i, l) in bl.lines.iter().enumerate() {
            let Some(ev) = parse_line(l) else { continue };
            if ev.tracer != CLONE_TRACER {
                continue;
            }
            let Some(ret) = bl.lines.get(i + 1).and_then(|n| n.strip_prefix(RET_PREFIX)) else {
                let _ = writeln!(why, "skb_clone line without a return value: {l:?}");
                continue;
            };
            let child = norm_hex(ret);
            let parent = norm_hex(ev.skb.as_deref().unwrap_or(""));
            let later = bl.lines[i + 1..]
                .iter()
                .filter_map(|l| parse_line(l))
                .any(|e| e.skb.as_deref().map(norm_hex).as_deref() == Some(child.as_str()));
            if child != parent && later {
                return;
            }
            let _ = writeln!(
                why,
                "clone {child} of {parent}: no later line with the child's address"
            );
        }
    }
    panic!(
        "{series}/{backend}: no timeline block holding an skb and its clone \
         (skb_clone … return value:CHILD, then lines of CHILD)\n{why}{}",
        s.describe()
    );
}

/// Scenario c: iptables DROP shows as kfree_skb with NETFILTER_DROP.
fn check_drop(series: &str, backend: &str) {
    let b = boot(series);
    let s = b.trace_step(&format!("{backend}-drop"));
    let att = check_verbose(series, backend, s);
    let request = icmp_request(D_A, D_B, 1);
    let mut steps = Vec::new();
    if att.contains_key(NAT_HOOK) {
        steps.push(Step::exact(NAT_HOOK, &request));
    }
    steps.push(Step::new(DROP_TRACER, &format!("reason: {DROP_REASON}")));
    let matched = assert_subsequence_steps(s.stdout(), &steps);
    let drop = matched.last().expect("a matched drop");
    assert!(
        drop.summary.starts_with(&request),
        "{series}/{backend}: the drop is not the request: {:?}",
        drop.raw
    );
}

/// Scenario d: with --skb-mode the request is followed past DNAT.
fn check_dnat(series: &str, backend: &str) {
    let b = boot(series);
    let s = b.trace_step(&format!("{backend}-dnat"));
    check_verbose(series, backend, s);
    let pre = icmp_request(R_A, R_VIP, 1);
    let post = icmp_request(R_A, R_B, 1);
    assert_subsequence_steps(
        s.stdout(),
        &[Step::exact(NAT_HOOK, &pre), Step::exact("*", &post)],
    );
}

/// Scenario e: under two paced ping flows whose receive work runs in the idle loop (pid 0)
/// of both CPUs at once, every `--ret` return is emitted for its own entry: each (skb,
/// packet) has as many returns as entries. A return stash keyed by pid alone handed one
/// CPU's entry to the other CPU's return.
fn check_ret_idle(series: &str, backend: &str) {
    let b = boot(series);
    let s = b.step(&format!("{backend}-ret-idle"));
    assert_eq!(s.rc, Some(0), "{series}/{backend}: {}", s.describe());
    let line = s
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("ret-pairs "))
        .unwrap_or_else(|| panic!("{series}/{backend}: no ret-pairs line\n{}", s.describe()));
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series}/{backend}: no {k} in {line:?}"))
    };
    // 2 flows x 600 pings: requests in B and replies in A each enter ip_rcv once.
    assert!(
        field("entries") >= 2000,
        "{series}/{backend}: too few entries: {line}"
    );
    assert!(
        field("pid0") > 0,
        "{series}/{backend}: no event in the idle loop (pid 0): the scenario did not run as designed: {line}"
    );
    assert_eq!(field("unpaired"), 0, "{series}/{backend}: {line}");
    assert_eq!(
        field("entries"),
        field("returns"),
        "{series}/{backend}: {line}"
    );
}

/// Scenario f: `--no-kprobe-multi` attaches each function with a kprobe of its own (and
/// its return with a kretprobe), also on a kernel with kprobe-multi links, and the request
/// is seen there.
fn check_single_kprobes(series: &str) {
    let b = boot(series);
    let s = b.trace_step("kprobe-single");
    let att = attached_as(s);
    for f in ["ip_rcv", "ip_local_deliver", "icmp_rcv"] {
        let kind = att.get(f).map(|(k, _)| k.as_str());
        assert_eq!(
            kind,
            Some("kprobe"),
            "{series}: {f} with --no-kprobe-multi\n{}",
            s.describe()
        );
    }
    assert!(
        att.values().all(|(k, _)| k != "kprobe-multi"),
        "{series}: a kprobe-multi link with --no-kprobe-multi\n{}",
        s.describe()
    );
    let request = icmp_request(F_A, F_B, 1);
    let out = s.stdout();
    assert_subsequence_steps(
        out,
        &[
            Step::exact("ip_rcv", &request),
            Step::exact("ip_local_deliver", &request),
            Step::exact("icmp_rcv", &request),
        ],
    );
    assert!(
        out.iter().any(|l| l.starts_with(RET_PREFIX)),
        "{series}: no `return value:` line with --ret\n{}",
        s.describe()
    );
}

/// The host suite's kernel-dependent tests, run in the guest: every test passed.
fn check_suite(series: &str, name: &str) {
    let b = boot(series);
    let s = b.step(&format!("suite-{name}"));
    assert_eq!(
        s.rc,
        Some(0),
        "{series}: {name} failed in the guest\n{}",
        s.describe()
    );
    assert!(
        s.lines
            .iter()
            .any(|l| l.starts_with("test result: ok.") && l.contains(" 0 failed")),
        "{series}: no passing `test result` line of {name}\n{}",
        s.describe()
    );
}

// ---------------------------------------------------------------------------------------
// The tests: one per kernel and scenario; the boots are shared.

macro_rules! vm_tests {
    ($($series:literal => $m:ident),* $(,)?) => {$(
        mod $m {
            use super::*;

            #[test]
            fn boot_clean() {
                check_boot($series);
            }

            #[test]
            fn tracepoint_icmp() {
                check_tracepoint_icmp($series);
            }

            #[test]
            fn tunnel_geneve() {
                check_tunnel($series, "geneve");
            }

            #[test]
            fn tunnel_ipip() {
                check_tunnel($series, "ipip");
            }

            #[test]
            fn fentry_path() {
                check_func_path($series, "fentry");
            }

            #[test]
            fn fentry_clone() {
                check_clone($series, "fentry");
            }

            #[test]
            fn fentry_drop() {
                check_drop($series, "fentry");
            }

            #[test]
            fn fentry_dnat() {
                check_dnat($series, "fentry");
            }

            #[test]
            fn kprobe_path() {
                check_func_path($series, "kprobe");
            }

            #[test]
            fn kprobe_clone() {
                check_clone($series, "kprobe");
            }

            #[test]
            fn kprobe_drop() {
                check_drop($series, "kprobe");
            }

            #[test]
            fn kprobe_dnat() {
                check_dnat($series, "kprobe");
            }

            #[test]
            fn suite_tracer_list() {
                check_suite($series, "tracer_list");
            }

            #[test]
            fn suite_lifecycle() {
                check_suite($series, "lifecycle");
            }

            #[test]
            fn fentry_ret_idle() {
                check_ret_idle($series, "fentry");
            }

            #[test]
            fn kprobe_ret_idle() {
                check_ret_idle($series, "kprobe");
            }

            #[test]
            fn kprobe_single() {
                check_single_kprobes($series);
            }
        }
    )*};
}

vm_tests! {
    "6.1" => k6_1,
    "6.12" => k6_12,
}

#[test]
fn kernels_listed_match_tests() {
    assert_eq!(KERNELS, &["6.1", "6.12"], "update vm_tests! with KERNELS");
}

#[test]
fn console_parser() {
    let text =
        "noise\r\n=== BEGIN a ===\r\nx\r\n--- stdout ---\r\n1.0: [t]: s\r\n--- stderr ---\r\n\
                e\r\n--- timing attach=1.00 began=1 killed=0 ---\r\n=== END a rc=3 ===\r\n\
                === TIME a start=1.5 end=2.5 ===\r\n=== BEGIN b ===\r\ny\r\n";
    let (_, steps) = parse_console(text);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].name, "a");
    assert_eq!(steps[0].rc, Some(3));
    assert_eq!(steps[0].stdout(), &["1.0: [t]: s".to_string()]);
    assert_eq!(steps[0].stderr(), &["e".to_string()]);
    assert_eq!(steps[0].time, Some((1.5, 2.5)));
    assert!(steps[0].section_headers["timing"].contains("began=1"));
    assert_eq!(steps[1].rc, None);
    assert_eq!(norm_hex("0xFFFF0001"), "ffff0001");
}
