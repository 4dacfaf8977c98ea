//! Pods backed by real containers: a private containerd, runc, and the CNI `bridge`
//! (`nt-cni0`, ipMasq, host-local IPAM on 10.250.240.0/24) and `portmap` plugins.
//!
//! Containers are started with `ctr run -d --rootfs --cni ROOTFS ID /bin/sleep 3600` on a
//! busybox rootfs directory, so their network namespaces, veths, addresses, cgroups and the
//! CNI NAT rules are the real thing.
//!
//! Lifecycle:
//! - Each [`ContainerBench`] owns one containerd (own config, socket, root and state
//!   directories), started from a keeper thread with `PR_SET_PDEATHSIG` so it dies with the
//!   test process, and stopped on `Drop`. One per test keeps tests independent (a test that
//!   panics cannot leave another one's daemon half-torn-down); a daemon starts in ~0.1 s.
//! - The pieces every bench shares (the bridge, the IPAM range, the CNI config, the rootfs,
//!   `ip_forward`, which the bridge plugin turns on) are set up by the first bench of the
//!   process and removed by the last one, under an exclusive `flock` on
//!   `/run/nettrace-test-ctrd/lock`: bench-using processes are serialized. What a run changed
//!   on the host (directories it created, the `ip_forward` it found) is written to
//!   `/run/nettrace-test-ctrd/record.json`; if a run is SIGKILLed, containerd dies with it
//!   but the shims and containers survive, and the next run to take the lock kills them and
//!   removes all of it before starting.
//! - `ctr run --cni` reads `/etc/cni/net.d` (the first config) and `/opt/cni/bin`, fixed paths
//!   in containerd 1.6. Nothing is installed there: `ctr` runs in a private mount namespace
//!   where our config directory and the plugin directory are bind-mounted on those paths
//!   (an empty mount point is created if missing, and removed afterwards), so a CRI on the
//!   machine never sees our network.
//! - `ctr task delete` does not undo `--cni` (measured: the IPAM lease, the result cache and
//!   the MASQUERADE chain stay), so [`Container`]'s `Drop` runs the plugins' `DEL` itself while
//!   the container's netns still exists, then kills and deletes the task and the container.
//!
//! Filtering on this bench: the kernel has `br_netfilter` built in and
//! `net.bridge.bridge-nf-call-iptables = 1`, so bridged pod-to-pod IPv4 goes through
//! iptables: a pod-to-ClusterIP DNAT ([`service_dnat`]) to another pod on the same bridge
//! works (the reply is un-DNATed), and a FORWARD drop ([`drop_to`]) drops pod-to-pod traffic.
//! With the sysctl at 0 (measured) neither works: the DNATed connection times out and the
//! drop is bypassed.

use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::env::find_tool;
use crate::fakekube::{format_rfc3339, random_hex};

/// CNI network name (also the prefix of the IPAM directory and of the result cache files).
pub const NETWORK: &str = "nettrace-test";
/// The CNI bridge.
pub const BRIDGE: &str = "nt-cni0";
/// The pod subnet (host-local IPAM range).
pub const SUBNET: &str = "10.250.240.0/24";
/// The bridge's address, the pods' default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 250, 240, 1);
/// The containerd namespace (also the parent cgroup of the containers: `/nettrace-test/ID`).
pub const NAMESPACE: &str = "nettrace-test";
/// Interface name of the pods' end of the veth.
pub const POD_IFNAME: &str = "eth0";
/// Image name reported in pod JSON.
pub const IMAGE: &str = "busybox:bench";

const RUN_DIR: &str = "/run/nettrace-test-ctrd";
const LIB_DIR: &str = "/var/lib/nettrace-test-ctrd";
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";
const CNI_STATE_DIR: &str = "/var/lib/cni";
const CONFLIST_NAME: &str = "10-nettrace-test.conflist";
/// Where containerd 1.6 puts shim sockets whatever its config says.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Comment on the drop rules (to find leftovers).
const DROP_COMMENT: &str = "nettrace-test drop";
/// Prefix of the kube-proxy-shaped chains.
pub const KUBE_PREFIX: &str = "NT-KUBE-";
const KUBE_SERVICES: &str = "NT-KUBE-SERVICES";
const KUBE_HOOK_COMMENT: &str = "nettrace-test service portals";

/// Tools the bench needs.
pub const TOOLS: &[&str] = &[
    "containerd",
    "ctr",
    "runc",
    "nsenter",
    "unshare",
    "ip",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ping",
    "busybox",
];

static BENCH_COUNTER: AtomicU32 = AtomicU32::new(0);
static EXEC_COUNTER: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------
// small helpers

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn describe(program: &str, args: &[&str], out: &Output) -> String {
    format!(
        "{program} {} ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {}: {e}", args.join(" ")))
}

fn run_ok(program: &str, args: &[&str]) -> Output {
    let out = run(program, args);
    assert!(out.status.success(), "{}", describe(program, args, &out));
    out
}

/// `iptables -w ARGS`, panicking on failure.
fn iptables(args: &[&str]) {
    let mut full = vec!["-w"];
    full.extend_from_slice(args);
    run_ok("iptables", &full);
}

/// `iptables -w ARGS`, ignoring failure (cleanup paths).
fn iptables_quiet(args: &[&str]) -> bool {
    let mut full = vec!["-w"];
    full.extend_from_slice(args);
    run("iptables", &full).status.success()
}

/// A random RFC 4122 version-4 UUID (pod uids look like this).
pub fn random_uuid() -> String {
    let h = random_hex(16);
    let variant = ["8", "9", "a", "b"][usize::from(h.as_bytes()[16] % 4)];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

/// `t` as RFC 3339 UTC with second precision (`2026-11-25T16:11:11Z`), as the apiserver writes.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Whether an ELF file is statically linked (has no `PT_INTERP` program header).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != 3)
    })
}

/// Panics (pointing at `./dev deps`) unless root and every tool of [`TOOLS`] is there, and
/// `busybox` is the static one.
pub fn require_container_tools() {
    crate::env::require_root();
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "missing tools for the container bench: {}; run ./dev deps (containerd, runc, \
         containernetworking-plugins, util-linux, busybox-static, iptables, iproute2, iputils-ping)",
        missing.join(", ")
    );
    let busybox = find_tool("busybox").expect("checked above");
    assert!(
        is_static_elf(&busybox),
        "{} is not statically linked: install busybox-static (run ./dev deps)",
        busybox.display()
    );
    plugin_dir();
}

/// The directory holding the `bridge`, `host-local` and `portmap` CNI plugins.
pub fn plugin_dir() -> PathBuf {
    ["/opt/cni/bin", "/usr/lib/cni", "/usr/libexec/cni"]
        .iter()
        .map(PathBuf::from)
        .find(|d| {
            ["bridge", "host-local", "portmap"]
                .iter()
                .all(|p| d.join(p).is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "CNI plugins bridge, host-local and portmap not found in /opt/cni/bin, \
                 /usr/lib/cni or /usr/libexec/cni: run ./dev deps (containernetworking-plugins)"
            )
        })
}

/// The CNI network configuration list.
pub fn conflist() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The id the CNI plugins know a container by (`ctr` uses `NAMESPACE-ID`).
fn cni_container_id(id: &str) -> String {
    format!("{NAMESPACE}-{id}")
}

/// libcni's result cache file of a container.
fn cni_cache_file(id: &str) -> PathBuf {
    Path::new(CNI_STATE_DIR)
        .join("results")
        .join(format!("{NETWORK}-{}-{POD_IFNAME}", cni_container_id(id)))
}

// ---------------------------------------------------------------------------------------
// state shared by the benches of this process (and, through the lock, across processes)

struct Shared {
    users: usize,
    lock: Option<File>,
    /// Directories this run created, parents first.
    created: Vec<PathBuf>,
    ip_forward: String,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    users: 0,
    lock: None,
    created: Vec::new(),
    ip_forward: String::new(),
});

fn shared() -> MutexGuard<'static, Shared> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

fn rootfs_dir() -> PathBuf {
    Path::new(RUN_DIR).join("rootfs")
}

fn conf_dir() -> PathBuf {
    Path::new(RUN_DIR).join("net.d")
}

/// Creates `dir` and its missing parents, recording each one created.
fn mkdir_recorded(dir: &Path, created: &mut Vec<PathBuf>) {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        created.push(d);
    }
}

/// Takes a share of the process-wide state, setting it up if this is the first user.
fn acquire() {
    let mut s = shared();
    if s.users == 0 {
        let lock = lock_run_dir();
        // A run that was killed left its record: undo what it changed once its state is gone.
        let stale = read_record();
        scrub();
        if let Some((created, ip_forward)) = stale {
            undo_host_changes(&created, &ip_forward);
        }
        s.ip_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "0".to_string());
        let mut created = Vec::new();
        for d in [
            Path::new(CNI_CONF_DIR),
            Path::new(CNI_BIN_DIR),
            Path::new(LIB_DIR),
            Path::new(CNI_STATE_DIR),
        ] {
            mkdir_recorded(d, &mut created);
        }
        // Created by containerd and the CNI plugins: only noted, to remove them if empty.
        for d in [
            Path::new(SHIM_SOCKET_DIR).to_path_buf(),
            Path::new(CNI_STATE_DIR).join("networks"),
            Path::new(CNI_STATE_DIR).join("results"),
        ] {
            let mut cur = Some(d.as_path());
            let mut missing = Vec::new();
            while let Some(d) = cur.filter(|d| !d.exists()) {
                missing.push(d.to_path_buf());
                cur = d.parent();
            }
            created.extend(missing.into_iter().rev());
        }
        s.created = created;
        let record = json!({"created": s.created, "ip_forward": s.ip_forward});
        fs::write(record_path(), record.to_string()).expect("write the bench record");
        fs::create_dir_all(conf_dir()).expect("mkdir the CNI config dir");
        let conf = serde_json::to_string_pretty(&conflist()).expect("serialize conflist");
        fs::write(conf_dir().join(CONFLIST_NAME), conf).expect("write the conflist");
        build_rootfs(&rootfs_dir());
        s.lock = Some(lock);
    }
    s.users += 1;
}

/// Gives back a share; the last user removes everything and unlocks.
fn release() {
    let mut s = shared();
    s.users -= 1;
    if s.users > 0 {
        return;
    }
    // A normal run leaves only the bridge, the (empty) IPAM directory and the parent cgroups
    // (runc removes only the containers' own): report anything else.
    let stray: Vec<String> = leftovers(None)
        .into_iter()
        .filter(|l| !l.starts_with("bridge ") && !l.starts_with("IPAM directory "))
        .filter(|l| !l.starts_with("directory "))
        .filter(|l| !(l.starts_with("cgroup ") && l.ends_with(&format!("/{NAMESPACE}"))))
        .collect();
    if !stray.is_empty() {
        eprintln!("container bench: removing stray state: {stray:#?}");
    }
    scrub();
    let _ = fs::remove_dir_all(conf_dir());
    let _ = fs::remove_dir_all(rootfs_dir());
    let created = std::mem::take(&mut s.created);
    undo_host_changes(&created, &s.ip_forward);
    let _ = fs::remove_file(record_path());
    // Unlinked while still locked: a waiter holding the old file notices and retries.
    let _ = fs::remove_file(Path::new(RUN_DIR).join("lock"));
    let _ = fs::remove_dir(RUN_DIR);
    s.lock = None;
}

/// The record of what this run changed on the host (for the next run if this one is killed).
fn record_path() -> PathBuf {
    Path::new(RUN_DIR).join("record.json")
}

/// The directories a run created and the `ip_forward` it found, from its record.
fn read_record() -> Option<(Vec<PathBuf>, String)> {
    let v: Value = serde_json::from_slice(&fs::read(record_path()).ok()?).ok()?;
    let created = v["created"]
        .as_array()?
        .iter()
        .filter_map(|p| p.as_str().map(PathBuf::from))
        .collect();
    Some((created, v["ip_forward"].as_str()?.to_string()))
}

/// Restores `ip_forward` and removes the (empty) directories of `created`, deepest first.
fn undo_host_changes(created: &[PathBuf], ip_forward: &str) {
    if ip_forward == "0" || ip_forward == "1" {
        let _ = fs::write("/proc/sys/net/ipv4/ip_forward", ip_forward);
    }
    for d in created.iter().rev() {
        if let Err(e) = fs::remove_dir(d) {
            if d.exists() {
                eprintln!("container bench: cannot remove {}: {e}", d.display());
            }
        }
    }
}

/// Creates and locks `RUN_DIR/lock` (exclusive `flock`, waiting for another test process if
/// needed). The last user unlinks the file, so the lock is retried until the locked file is
/// the one at the path.
fn lock_run_dir() -> File {
    let lock_path = Path::new(RUN_DIR).join("lock");
    let mut announced = false;
    loop {
        fs::create_dir_all(RUN_DIR).unwrap_or_else(|e| panic!("mkdir {RUN_DIR}: {e}"));
        let lock = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("open {}: {e}", lock_path.display()),
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if !announced {
                eprintln!("container bench: waiting for another test process ({RUN_DIR})");
                announced = true;
            }
            // SAFETY: as above, blocking.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            assert_eq!(rc, 0, "flock {}", lock_path.display());
        }
        let held = lock.metadata().map(|m| m.ino()).ok();
        let current = fs::metadata(&lock_path).map(|m| m.ino()).ok();
        if held.is_some() && held == current {
            return lock;
        }
    }
}

/// The busybox rootfs: `/bin/busybox` and applet links, `/etc/hosts`, mount points.
fn build_rootfs(root: &Path) {
    let _ = fs::remove_dir_all(root);
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(root.join(d)).unwrap_or_else(|e| panic!("mkdir rootfs/{d}: {e}"));
    }
    let busybox = find_tool("busybox").expect("busybox (run ./dev deps)");
    fs::copy(&busybox, root.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", busybox.display()));
    for applet in [
        "sh", "sleep", "ping", "nc", "ip", "cat", "echo", "ls", "ps", "hostname", "ifconfig",
        "route", "wget", "true", "false", "kill", "env", "timeout",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .unwrap_or_else(|e| panic!("symlink rootfs/bin/{applet}: {e}"));
    }
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )
    .expect("write rootfs/etc/hosts");
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")
        .expect("write rootfs/etc/passwd");
    fs::write(root.join("etc/resolv.conf"), "").expect("write rootfs/etc/resolv.conf");
}

/// Pids of processes that belong to a bench (a containerd or shim of ours, or a process in
/// one of our container cgroups), other than this process.
fn bench_processes() -> Vec<i32> {
    let me = std::process::id() as i32;
    let cgroup_mark = format!("/{NAMESPACE}/");
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if pid == me || zombie {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let ours_cmd = String::from_utf8_lossy(&cmdline).contains(RUN_DIR);
        let ours_cgroup = fs::read_to_string(entry.path().join("cgroup"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|p| p.starts_with(&cgroup_mark));
        if ours_cmd || ours_cgroup {
            pids.push(pid);
        }
    }
    pids
}

/// Paths of the listening sockets in [`SHIM_SOCKET_DIR`] that `pids` hold open (a killed
/// shim leaves its socket file behind).
fn shim_sockets(pids: &[i32]) -> Vec<PathBuf> {
    let mut inodes = Vec::new();
    for pid in pids {
        for fd in fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.push(inode.to_string());
            }
        }
    }
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (inode, path) = (cols.get(6)?, cols.get(7)?);
            (inodes.iter().any(|i| i == inode) && path.starts_with(SHIM_SOCKET_DIR))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// Mount points under our directories, deepest first.
fn bench_mounts() -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(RUN_DIR) || m.starts_with(LIB_DIR))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// `iptables-save -t TABLE` lines.
fn iptables_save(table: &str) -> Vec<String> {
    let out = run_ok("iptables-save", &["-t", table]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether an `iptables-save` line is a rule or chain of this bench.
fn is_our_rule(line: &str) -> bool {
    line.contains(&format!("name: \\\"{NETWORK}\\\""))
        || line.contains(KUBE_PREFIX)
        || line.contains(DROP_COMMENT)
}

/// Removes the bench's rules and chains from `table` with one `iptables-restore --noflush`.
fn scrub_iptables(table: &str) {
    let lines = iptables_save(table);
    let mut script = format!("*{table}\n");
    let mut chains: Vec<String> = Vec::new();
    for line in &lines {
        if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split(' ').next().unwrap_or("");
            let ours_chain =
                chain.starts_with(KUBE_PREFIX) || (chain.starts_with("CNI-") && is_our_rule(line));
            if ours_chain && !chains.iter().any(|c| c == chain) {
                chains.push(chain.to_string());
            }
            if is_our_rule(line) && !ours_chain {
                script.push_str(&format!("-D {rule}\n"));
            }
        }
    }
    for line in &lines {
        // chains of ours that are now empty of our rules
        if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split(' ').next().unwrap_or("");
            if chain.starts_with(KUBE_PREFIX) && !chains.iter().any(|c| c == chain) {
                chains.push(chain.to_string());
            }
        }
    }
    if script.lines().count() == 1 && chains.is_empty() {
        return;
    }
    for c in &chains {
        script.push_str(&format!("-F {c}\n"));
    }
    for c in &chains {
        script.push_str(&format!("-X {c}\n"));
    }
    script.push_str("COMMIT\n");
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to iptables-restore");
    let out = child.wait_with_output().expect("wait iptables-restore");
    if !out.status.success() {
        eprintln!(
            "container bench: iptables cleanup failed: {}\n{script}",
            text(&out.stderr)
        );
    }
}

/// Removes everything a bench may leave: processes, mounts, directories, the bridge, IPAM
/// leases and result caches, iptables rules, cgroups. Only called under the lock with no
/// live bench in this process, so whatever it finds is stale.
fn scrub() {
    let pids = bench_processes();
    let shim_sockets = shim_sockets(&pids);
    for &pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let start = Instant::now();
    while !bench_processes().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for m in bench_mounts() {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    for entry in fs::read_dir(RUN_DIR).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            let _ = fs::remove_dir_all(entry.path());
        } else if entry.file_name() != "lock" {
            let _ = fs::remove_file(entry.path());
        }
    }
    for socket in &shim_sockets {
        let _ = fs::remove_file(socket);
    }
    let _ = fs::remove_dir_all(LIB_DIR);
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
    let _ = fs::remove_dir_all(Path::new(CNI_STATE_DIR).join("networks").join(NETWORK));
    let prefix = format!("{NETWORK}-");
    for entry in fs::read_dir(Path::new(CNI_STATE_DIR).join("results"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
    scrub_iptables("nat");
    scrub_iptables("filter");
    for hierarchy in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = hierarchy.path().join(NAMESPACE);
        let dirs = [dir.clone(), PathBuf::from("/sys/fs/cgroup").join(NAMESPACE)];
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for child in fs::read_dir(dir).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = fs::remove_dir(child.path());
                }
            }
            let _ = fs::remove_dir(dir);
        }
    }
}

/// What of the bench is still on the machine (for "no leftovers" assertions): processes,
/// mounts, the bridge, IPAM leases, cached results, iptables rules, cgroups. With `id`,
/// only what belongs to that container (veth, lease, cache file, NAT chain, cgroup).
pub fn leftovers(id: Option<&str>) -> Vec<String> {
    let mut found = Vec::new();
    match id {
        Some(id) => {
            let cni_id = cni_container_id(id);
            if cni_cache_file(id).exists() {
                found.push(format!("cache {}", cni_cache_file(id).display()));
            }
            let leases = Path::new(CNI_STATE_DIR).join("networks").join(NETWORK);
            for entry in fs::read_dir(&leases).into_iter().flatten().flatten() {
                if fs::read_to_string(entry.path()).is_ok_and(|t| t.contains(&cni_id)) {
                    found.push(format!("IPAM lease {}", entry.path().display()));
                }
            }
            for table in ["nat", "filter"] {
                for line in iptables_save(table) {
                    if line.contains(&cni_id) {
                        found.push(format!("iptables -t {table}: {line}"));
                    }
                }
            }
            for entry in fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = entry.path().join(NAMESPACE).join(id);
                if dir.exists() {
                    found.push(format!("cgroup {}", dir.display()));
                }
            }
            for pid in bench_processes() {
                let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                if cg.contains(id) {
                    found.push(format!("process {pid}"));
                }
            }
        }
        None => {
            for pid in bench_processes() {
                found.push(format!("process {pid}"));
            }
            for m in bench_mounts() {
                found.push(format!("mount {m}"));
            }
            for dir in [PathBuf::from(LIB_DIR), rootfs_dir(), conf_dir()] {
                if dir.exists() {
                    found.push(format!("directory {}", dir.display()));
                }
            }
            if Path::new("/sys/class/net").join(BRIDGE).exists() {
                found.push(format!("bridge {BRIDGE}"));
            }
            let leases = Path::new(CNI_STATE_DIR).join("networks").join(NETWORK);
            if leases.exists() {
                found.push(format!("IPAM directory {}", leases.display()));
            }
            for table in ["nat", "filter"] {
                for line in iptables_save(table) {
                    if is_our_rule(&line) || line.starts_with(&format!(":{KUBE_PREFIX}")) {
                        found.push(format!("iptables -t {table}: {line}"));
                    }
                }
            }
            for entry in fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = entry.path().join(NAMESPACE);
                if dir.exists() {
                    found.push(format!("cgroup {}", dir.display()));
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// containerd

/// The containerd child, owned by a keeper thread (`PR_SET_PDEATHSIG` fires when the thread
/// that forked the child exits, so that thread lives exactly as long as the daemon).
struct Daemon {
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn spawn(config: &Path, log: &Path) -> Daemon {
        let log_file =
            File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let log_err = log_file.try_clone().expect("dup log fd");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        // SAFETY: prctl is async-signal-safe and nothing is allocated between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        let keeper = std::thread::Builder::new()
            .name("containerd-keeper".into())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Returns on a stop request or when the bench is dropped.
                let _ = stop_rx.recv();
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(5) {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            })
            .expect("spawn the containerd keeper thread");
        ready_rx
            .recv()
            .expect("keeper thread answers")
            .unwrap_or_else(|e| panic!("cannot start containerd: {e}"));
        Daemon {
            stop: Some(stop_tx),
            keeper: Some(keeper),
        }
    }

    fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

struct Inner {
    run_dir: PathBuf,
    lib_dir: PathBuf,
    socket: PathBuf,
    daemon: Mutex<Daemon>,
    /// Dropped last, after the daemon is gone.
    _share: Share,
}

/// A share of the process-wide state ([`acquire`] / [`release`]).
struct Share;

impl Share {
    fn acquire() -> Share {
        acquire();
        Share
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        release();
    }
}

impl Inner {
    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE]);
        cmd
    }

    fn ctr_out(&self, args: &[&str]) -> Output {
        self.ctr()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr {}: {e}", args.join(" ")))
    }

    fn fifo_dir(&self) -> PathBuf {
        self.run_dir.join("fifo")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Containers normally delete themselves; anything left (a leaked `Container`) goes now.
        for id in text(&self.ctr_out(&["container", "ls", "-q"]).stdout).lines() {
            let _ = self.ctr_out(&["task", "rm", "-f", id]);
            let _ = self.ctr_out(&["container", "rm", id]);
        }
        self.daemon.lock().unwrap_or_else(|e| e.into_inner()).stop();
        for m in bench_mounts() {
            if m.starts_with(&*self.run_dir.to_string_lossy())
                || m.starts_with(&*self.lib_dir.to_string_lossy())
            {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = fs::remove_dir_all(&self.run_dir);
        let _ = fs::remove_dir_all(&self.lib_dir);
    }
}

/// A private containerd (and a share of the CNI network). See the module docs.
pub struct ContainerBench {
    inner: Arc<Inner>,
}

impl ContainerBench {
    /// Checks the tools, sets up the shared pieces if needed, starts containerd with its own
    /// config, root, state and socket, and waits until `ctr version` answers.
    pub fn start() -> ContainerBench {
        require_container_tools();
        let share = Share::acquire();
        let tag = format!(
            "{}-{}",
            std::process::id(),
            BENCH_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let run_dir = Path::new(RUN_DIR).join(&tag);
        let lib_dir = Path::new(LIB_DIR).join(&tag);
        for d in [&run_dir, &lib_dir] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let socket = run_dir.join("containerd.sock");
        let config = run_dir.join("config.toml");
        let disabled = [
            "io.containerd.grpc.v1.cri",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.internal.v1.opt",
            "io.containerd.internal.v1.tracing",
            "io.containerd.tracing.processor.v1.otlp",
        ];
        let toml = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = {:?}\n\n\
             [grpc]\n  address = {:?}\n\n[ttrpc]\n  address = {:?}\n\n\
             [debug]\n  address = \"\"\n\n[metrics]\n  address = \"\"\n",
            lib_dir.join("root").display().to_string(),
            run_dir.join("state").display().to_string(),
            disabled,
            socket.display().to_string(),
            format!("{}.ttrpc", socket.display()),
        );
        fs::write(&config, toml).expect("write the containerd config");
        let log = run_dir.join("containerd.log");
        let bench = ContainerBench {
            inner: Arc::new(Inner {
                daemon: Mutex::new(Daemon::spawn(&config, &log)),
                run_dir,
                lib_dir,
                socket,
                _share: share,
            }),
        };
        let start = Instant::now();
        loop {
            let out = bench.inner.ctr_out(&["version"]);
            if out.status.success() {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "containerd did not answer within 20 s: {}\nlog:\n{}",
                    text(&out.stderr),
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bench
    }

    /// The containerd socket (for `ctr --address`).
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// `ctr --address SOCKET --namespace nettrace-test ARGS` (output whatever the status).
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.inner.ctr_out(args)
    }

    /// Starts a container running `/bin/sleep 3600` on the CNI network, with a random
    /// 64-hex id like the ones Kubernetes shows, and measures its pid, address, netns and
    /// host veth. `name` is stored and put in a label.
    pub fn run_pod(&self, name: &str) -> Container {
        self.run(name, false)
    }

    /// Starts a container in the host's network namespace (a hostNetwork pod's), running
    /// `/bin/sleep 3600`: no veth, its address is the node's ([`GATEWAY`] stands for it).
    pub fn run_host_pod(&self, name: &str) -> Container {
        self.run(name, true)
    }

    fn run(&self, name: &str, host_network: bool) -> Container {
        let id = random_hex(32);
        let mut c = Container {
            name: name.to_string(),
            id: id.clone(),
            pid: 0,
            ip: Ipv4Addr::UNSPECIFIED,
            netns_inode: 0,
            host_veth: String::new(),
            host_ifindex: 0,
            started_at: SystemTime::now(),
            host_network: false,
            bench: self.inner.clone(),
        };
        let pid_file = self.inner.run_dir.join(format!("{id}.pid"));
        let plugins = plugin_dir();
        // ctr reads the fixed /etc/cni/net.d and /opt/cni/bin: give it ours in a private
        // mount namespace.
        let script = "set -e; mount --bind \"$1\" /etc/cni/net.d; \
                      [ \"$2\" = /opt/cni/bin ] || mount --bind \"$2\" /opt/cni/bin; \
                      shift 2; exec \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(conf_dir())
        .arg(&plugins)
        .arg("ctr")
        .arg("--address")
        .arg(&self.inner.socket)
        .args(["--namespace", NAMESPACE, "run", "-d", "--rootfs"])
        .arg(if host_network { "--net-host" } else { "--cni" })
        .arg("--fifo-dir")
        .arg(self.inner.fifo_dir())
        .arg("--runc-root")
        .arg(self.inner.run_dir.join("runc"))
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--label")
        .arg(format!("io.kubernetes.pod.name={name}"))
        .arg(rootfs_dir())
        .arg(&id)
        .args(["/bin/sleep", "3600"])
        .stdin(Stdio::null());
        let out = cmd.output().expect("run unshare ... ctr run");
        if !out.status.success() {
            panic!(
                "ctr run {name} failed ({}): {}\n{}",
                out.status,
                text(&out.stderr),
                text(&out.stdout)
            );
        }
        let pid_text = fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", pid_file.display()));
        c.pid = pid_text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("pid file {} holds {pid_text:?}: {e}", pid_file.display()));
        let _ = fs::remove_file(&pid_file);
        c.netns_inode = fs::metadata(format!("/proc/{}/ns/net", c.pid))
            .unwrap_or_else(|e| panic!("stat /proc/{}/ns/net: {e}", c.pid))
            .ino();
        if host_network {
            c.host_network = true;
            c.ip = GATEWAY;
            return c;
        }

        let addrs = c.ip_json(&["-4", "addr", "show", "dev", POD_IFNAME]);
        let local = addrs[0]["addr_info"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["family"] == "inet"))
            .and_then(|i| i["local"].as_str())
            .unwrap_or_else(|| panic!("no IPv4 address on {POD_IFNAME} in {name}: {addrs}"));
        c.ip = local
            .parse()
            .unwrap_or_else(|e| panic!("bad address {local:?} in {name}: {e}"));

        let link = c.ip_json(&["link", "show", "dev", POD_IFNAME]);
        let peer = link[0]["link_index"]
            .as_u64()
            .unwrap_or_else(|| panic!("no peer ifindex for {POD_IFNAME} in {name}: {link}"));
        let host_links = ip_json(&run_ok("ip", &["-j", "link", "show"]).stdout);
        let host = host_links
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["ifindex"].as_u64() == Some(peer))
            .unwrap_or_else(|| panic!("no host interface with ifindex {peer} for {name}"));
        assert_eq!(
            host["master"], BRIDGE,
            "host end of {name}'s veth is not on {BRIDGE}: {host}"
        );
        c.host_ifindex = peer as u32;
        c.host_veth = host["ifname"]
            .as_str()
            .expect("host interface has a name")
            .to_string();
        c
    }
}

fn ip_json(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("ip -j printed no JSON ({e}): {}", text(stdout)))
}

/// A running container on the bench network; killed and deleted, with its network, on drop.
pub struct Container {
    /// Name given to [`ContainerBench::run_pod`].
    pub name: String,
    /// The containerd container id (64 hex digits).
    pub id: String,
    /// The container's init process, as seen from the host.
    pub pid: u32,
    /// Address of `eth0` inside the container.
    pub ip: Ipv4Addr,
    /// Inode of its network namespace.
    pub netns_inode: u64,
    /// Host end of its veth (on [`BRIDGE`]).
    pub host_veth: String,
    /// Ifindex of the host end.
    pub host_ifindex: u32,
    /// When it was started.
    pub started_at: SystemTime,
    /// Started by [`ContainerBench::run_host_pod`]: in the host's network namespace.
    pub host_network: bool,
    bench: Arc<Inner>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("ip", &self.ip)
            .field("netns_inode", &self.netns_inode)
            .field("host_veth", &self.host_veth)
            .field("host_ifindex", &self.host_ifindex)
            .finish()
    }
}

impl Container {
    /// `containerd://ID`, the `containerID` of a Kubernetes container status.
    pub fn container_id_uri(&self) -> String {
        format!("containerd://{}", self.id)
    }

    /// Runs a host command in the container's network namespace (`nsenter -t PID -n`).
    pub fn exec(&self, args: &[&str]) -> Output {
        let pid = self.pid.to_string();
        let mut full = vec!["-t", pid.as_str(), "-n", "--"];
        full.extend_from_slice(args);
        run("nsenter", &full)
    }

    /// Like [`Container::exec`], panicking with the output on failure.
    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {}",
            self.name,
            describe("nsenter", args, &out)
        );
        out
    }

    fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["ip", "-j"];
        full.extend_from_slice(args);
        ip_json(&self.exec_ok(&full).stdout)
    }

    fn ctr_exec_cmd(&self, args: &[&str]) -> Command {
        let exec_id = format!("ex{}", EXEC_COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut cmd = self.bench.ctr();
        cmd.args(["task", "exec", "--fifo-dir"])
            .arg(self.bench.fifo_dir())
            .args(["--exec-id", &exec_id, &self.id])
            .args(args);
        cmd
    }

    /// Runs a command inside the container (`ctr task exec`; absolute paths, busybox applets).
    pub fn ctr_exec(&self, args: &[&str]) -> Output {
        self.ctr_exec_cmd(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr task exec {}: {e}", args.join(" ")))
    }

    /// Starts a command inside the container in the background (stdout and stderr piped).
    /// It dies with the container at the latest.
    pub fn ctr_spawn(&self, args: &[&str]) -> Child {
        self.ctr_exec_cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ctr task exec {}: {e}", args.join(" ")))
    }

    /// Runs the CNI plugins' `DEL`, last plugin first, like libcni does for a conflist.
    fn cni_del(&self) {
        let conf = conflist();
        let cache: Option<Value> = fs::read(cni_cache_file(&self.id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let netns = if self.pid != 0 && Path::new(&format!("/proc/{}/ns/net", self.pid)).exists() {
            format!("/proc/{}/ns/net", self.pid)
        } else {
            String::new()
        };
        let plugins = plugin_dir();
        let list = conf["plugins"].as_array().cloned().unwrap_or_default();
        for plugin in list.iter().rev() {
            let mut p = plugin.clone();
            p["name"] = json!(NETWORK);
            p["cniVersion"] = conf["cniVersion"].clone();
            if let Some(result) = cache.as_ref().map(|c| &c["result"]) {
                if !result.is_null() {
                    p["prevResult"] = result.clone();
                }
            }
            let ty = p["type"].as_str().unwrap_or_default().to_string();
            let child = Command::new(plugins.join(&ty))
                .env("CNI_COMMAND", "DEL")
                .env("CNI_CONTAINERID", cni_container_id(&self.id))
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", POD_IFNAME)
                .env("CNI_PATH", &plugins)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                eprintln!("container bench: cannot run CNI plugin {ty}");
                continue;
            };
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(p.to_string().as_bytes());
            }
            match child.wait_with_output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "container bench: CNI DEL {ty} for {} failed: {} {}",
                    self.name,
                    text(&out.stdout),
                    text(&out.stderr)
                ),
                Err(e) => eprintln!("container bench: CNI DEL {ty}: {e}"),
            }
        }
        let _ = fs::remove_file(cni_cache_file(&self.id));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.host_network {
            self.cni_del();
        }
        let _ = self
            .bench
            .ctr_out(&["task", "kill", "-s", "SIGKILL", &self.id]);
        let start = Instant::now();
        loop {
            let _ = self.bench.ctr_out(&["task", "rm", "-f", &self.id]);
            let tasks = self.bench.ctr_out(&["task", "ls", "-q"]);
            let listed = String::from_utf8_lossy(&tasks.stdout)
                .lines()
                .any(|l| l.trim() == self.id);
            if (tasks.status.success() && !listed) || start.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.bench.ctr_out(&["container", "rm", &self.id]);
        if !out.status.success() {
            eprintln!(
                "container bench: ctr container rm {} failed: {}",
                self.id,
                text(&out.stderr)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes views

/// A pod object as the apiserver returns it (`v1.Pod`), for pod `namespace/name` on `node`
/// whose containers are `containers` (Kubernetes container name, container). With
/// `host_network`, `spec.hostNetwork` is set and the pod IP is the host IP ([`GATEWAY`],
/// the node's address on the pod network, stands for both).
pub fn pod_json(
    namespace: &str,
    name: &str,
    node: &str,
    containers: &[(&str, &Container)],
    host_network: bool,
) -> Value {
    let started = containers
        .iter()
        .map(|(_, c)| c.started_at)
        .min()
        .unwrap_or_else(SystemTime::now);
    let start_time = rfc3339(started);
    let pod_ip = match (host_network, containers.first()) {
        (false, Some((_, c))) => c.ip.to_string(),
        _ => GATEWAY.to_string(),
    };
    let specs: Vec<Value> = containers
        .iter()
        .map(|(cname, _)| json!({"name": cname, "image": IMAGE, "imagePullPolicy": "IfNotPresent"}))
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(cname, c)| {
            json!({
                "name": cname,
                "containerID": c.container_id_uri(),
                "image": format!("docker.io/library/{IMAGE}"),
                "imageID": format!("docker.io/library/busybox@sha256:{}", "0".repeat(64)),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "lastState": {},
                "state": {"running": {"startedAt": rfc3339(c.started_at)}}
            })
        })
        .collect();
    let mut spec = json!({
        "nodeName": node,
        "containers": specs,
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
    });
    if host_network {
        spec["hostNetwork"] = json!(true);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": random_uuid(),
            "resourceVersion": "1",
            "creationTimestamp": start_time,
            "labels": {"app": name},
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "hostIP": GATEWAY.to_string(),
            "hostIPs": [{"ip": GATEWAY.to_string()}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": start_time,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": start_time},
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": start_time},
                {"type": "ContainersReady", "status": "True", "lastProbeTime": null, "lastTransitionTime": start_time},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": start_time}
            ],
            "containerStatuses": statuses,
        }
    })
}

// ---------------------------------------------------------------------------------------
// iptables: a kube-proxy-shaped service, and a drop rule

/// Users of the `NT-KUBE-SERVICES` chain in this process.
static SERVICES_USERS: Mutex<usize> = Mutex::new(0);

/// 16 uppercase hex digits from a string (FNV-1a, twice), like kube-proxy's chain hashes.
fn chain_hash(s: &str) -> String {
    let fnv = |seed: u64| {
        s.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let h = fnv(0xcbf2_9ce4_8422_2325) ^ fnv(0x84222325cbf29ce4).rotate_left(32);
    format!("{h:016X}")
}

/// The nat rules kube-proxy (iptables mode) writes for a ClusterIP TCP service with one
/// endpoint: `PREROUTING`/`OUTPUT` → `NT-KUBE-SERVICES` → `NT-KUBE-SVC-…` → `NT-KUBE-SEP-…`
/// (`DNAT --to-destination`). Removed on drop.
#[derive(Debug)]
pub struct ServiceRules {
    /// The `NT-KUBE-SVC-…` chain.
    pub svc_chain: String,
    /// The `NT-KUBE-SEP-…` chain.
    pub sep_chain: String,
    services_rule: Vec<String>,
}

/// Adds the rules of a ClusterIP TCP service `vip:port` whose only endpoint is
/// `backend:backend_port`.
pub fn service_dnat(
    vip: Ipv4Addr,
    port: u16,
    backend: &Container,
    backend_port: u16,
) -> ServiceRules {
    let svc_name = format!("{NAMESPACE}/svc-{vip}-{port}:tcp");
    let endpoint = format!("{}:{backend_port}", backend.ip);
    let svc_chain = format!("{KUBE_PREFIX}SVC-{}", chain_hash(&svc_name));
    let sep_chain = format!(
        "{KUBE_PREFIX}SEP-{}",
        chain_hash(&format!("{svc_name}{endpoint}"))
    );
    {
        let mut users = SERVICES_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if *users == 0 {
            iptables(&["-t", "nat", "-N", KUBE_SERVICES]);
            for hook in ["PREROUTING", "OUTPUT"] {
                iptables(&[
                    "-t",
                    "nat",
                    "-I",
                    hook,
                    "-m",
                    "comment",
                    "--comment",
                    KUBE_HOOK_COMMENT,
                    "-j",
                    KUBE_SERVICES,
                ]);
            }
        }
        *users += 1;
    }
    let services_rule: Vec<String> = [
        KUBE_SERVICES,
        "-d",
        &format!("{vip}/32"),
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        &format!("{svc_name} cluster IP"),
        "-m",
        "tcp",
        "--dport",
        &port.to_string(),
        "-j",
        &svc_chain,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rules = ServiceRules {
        svc_chain,
        sep_chain,
        services_rule,
    };
    iptables(&["-t", "nat", "-N", &rules.svc_chain]);
    iptables(&["-t", "nat", "-N", &rules.sep_chain]);
    iptables(&[
        "-t",
        "nat",
        "-A",
        &rules.sep_chain,
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        &svc_name,
        "-m",
        "tcp",
        "-j",
        "DNAT",
        "--to-destination",
        &endpoint,
    ]);
    iptables(&[
        "-t",
        "nat",
        "-A",
        &rules.svc_chain,
        "-m",
        "comment",
        "--comment",
        &format!("{svc_name} -> {endpoint}"),
        "-j",
        &rules.sep_chain,
    ]);
    let mut add = vec!["-t", "nat", "-A"];
    add.extend(rules.services_rule.iter().map(String::as_str));
    iptables(&add);
    rules
}

impl Drop for ServiceRules {
    fn drop(&mut self) {
        let mut del = vec!["-t", "nat", "-D"];
        del.extend(self.services_rule.iter().map(String::as_str));
        iptables_quiet(&del);
        for chain in [&self.svc_chain, &self.sep_chain] {
            iptables_quiet(&["-t", "nat", "-F", chain]);
            iptables_quiet(&["-t", "nat", "-X", chain]);
        }
        let mut users = SERVICES_USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            for hook in ["PREROUTING", "OUTPUT"] {
                iptables_quiet(&[
                    "-t",
                    "nat",
                    "-D",
                    hook,
                    "-m",
                    "comment",
                    "--comment",
                    KUBE_HOOK_COMMENT,
                    "-j",
                    KUBE_SERVICES,
                ]);
            }
            iptables_quiet(&["-t", "nat", "-F", KUBE_SERVICES]);
            iptables_quiet(&["-t", "nat", "-X", KUBE_SERVICES]);
        }
    }
}

/// One iptables rule, deleted on drop.
#[derive(Debug)]
pub struct Rule {
    table: String,
    spec: Vec<String>,
}

impl Rule {
    /// Inserts `spec` (`CHAIN match... -j TARGET`) first in `table`.
    pub fn insert(table: &str, spec: &[&str]) -> Rule {
        let mut args = vec!["-t", table, "-I"];
        args.extend_from_slice(spec);
        iptables(&args);
        Rule {
            table: table.to_string(),
            spec: spec.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        let mut args = vec!["-t", self.table.as_str(), "-D"];
        args.extend(self.spec.iter().map(String::as_str));
        iptables_quiet(&args);
    }
}

/// `iptables -I FORWARD -d POD_IP/32 -j DROP`: drops what the host forwards to `target`,
/// which includes bridged pod-to-pod traffic on [`BRIDGE`] when `br_netfilter` hands bridged
/// IPv4 to iptables (`net.bridge.bridge-nf-call-iptables = 1`, see [`bridge_nf_call_iptables`]).
/// Traffic from the host itself goes through OUTPUT, not FORWARD, and is not dropped.
pub fn drop_to(target: &Container) -> Rule {
    Rule::insert(
        "filter",
        &[
            "FORWARD",
            "-d",
            &format!("{}/32", target.ip),
            "-m",
            "comment",
            "--comment",
            DROP_COMMENT,
            "-j",
            "DROP",
        ],
    )
}

/// `net.bridge.bridge-nf-call-iptables` in the host namespace: `Some(true)` when
/// `br_netfilter` is there and passes bridged IPv4 through iptables, `None` without it.
pub fn bridge_nf_call_iptables() -> Option<bool> {
    fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .ok()
        .map(|t| t.trim() == "1")
}

/// Host interfaces enslaved to [`BRIDGE`], by name.
pub fn bridge_ports() -> Vec<String> {
    let out = run("ip", &["-j", "link", "show", "master", BRIDGE]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_date() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_764_087_071), "2025-11-25T16:11:11Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn ids_and_chain_names_have_the_kubernetes_shapes() {
        let uuid = random_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_eq!(random_hex(32).len(), 64);
        let h = chain_hash("shop/web:http");
        assert_eq!(h.len(), 16);
        assert_ne!(h, chain_hash("shop/web:https"));
        assert!(format!("{KUBE_PREFIX}SEP-{h}").len() <= 28);
    }
}
