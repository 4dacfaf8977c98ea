//! Issue 10: what `--netns`, `--ifname` and `--pid` name may disappear while nettrace traces.
//! It must then stop by itself, with exactly one stderr line saying what went and a non-zero
//! exit, instead of tracing a number that now names nothing, or something else (a deleted
//! namespace's inode reused by the next one).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nettrace_tests::netns::{run, run_ok, PREFIX};
use nettrace_tests::*;

/// From the disappearance to nettrace's exit (it looks once a second).
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// A namespace made with `ip netns add NAME` under a name of our own (so that the test can
/// delete and re-create names itself); deleted on drop if still there.
struct NamedNetns(String);

impl NamedNetns {
    fn add(tag: &str) -> NamedNetns {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        assert!(name.len() <= 15, "namespace name too long: {name}");
        run_ok("ip", &["netns", "add", &name]);
        NamedNetns(name)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    fn inode(&self) -> u64 {
        inode(&self.path()).unwrap_or_else(|| panic!("cannot stat {}", self.path()))
    }
    fn delete(&self) {
        run_ok("ip", &["netns", "del", &self.0]);
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if std::path::Path::new(&self.path()).exists() {
            let _ = run("ip", &["netns", "del", &self.0]);
        }
    }
}

/// The inode of a file (of a namespace, through its /proc link).
fn inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A child process killed and reaped on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for nettrace to stop by itself and checks how: non-zero, `begin tracing` and then
/// exactly `expected` on stderr.
fn assert_stops_with(nt: Nettrace, expected: &str) -> Finished {
    let fin = nt.wait_exit(EXIT_WITHIN);
    assert!(
        !fin.status.success(),
        "nettrace exited with 0 after its scope disappeared\n{}",
        fin.describe()
    );
    assert_eq!(
        fin.nonempty_stderr(),
        vec!["begin tracing......", expected],
        "expected `begin tracing` and this one line on stderr\n{}",
        fin.describe()
    );
    fin
}

/// `ip netns del x; ip netns add z` while tracing /run/netns/x: z may get x's inode back
/// (before: it did, and z's packets were printed). nettrace holds x open, so its inode is not
/// reused, and stops when /run/netns/x is gone.
#[test]
fn netns_path_deleted_and_replaced_stops_the_trace() {
    preflight();
    let x = NamedNetns::add("vx");
    let path = x.path();
    let x_inode = x.inode();
    let nt = Nettrace::spawn(&["-p", "icmp", "--netns", &path]);
    x.delete();
    // The kernel frees a namespace's inode a moment after its last holder let go: make z
    // until it gets x's inode back (as it did before, when nettrace held nothing) or 5 s pass.
    let mut z = NamedNetns::add("vz");
    for _ in 0..20 {
        if z.inode() == x_inode {
            break;
        }
        drop(z);
        std::thread::sleep(Duration::from_millis(250));
        z = NamedNetns::add("vz");
    }
    run_ok("ip", &["-n", &z.0, "link", "set", "lo", "up"]);
    // Traffic in z, which must not be traced as x's.
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &z.0,
            "ping",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "127.0.0.1",
        ],
    );
    assert!(out.status.success(), "ping in z failed: {out:?}");
    let fin = assert_stops_with(
        nt,
        &format!(
            "nettrace: network namespace {path} is gone: the path was removed; tracing stopped"
        ),
    );
    assert_no_line(
        &fin.stdout_lines,
        "event of z, the namespace made after x",
        |l| l.contains("127.0.0.1"),
    );
}

/// The same, the namespace given by inode: once no process and no mount holds it any more.
#[test]
fn netns_inode_deleted_stops_the_trace() {
    preflight();
    let x = NamedNetns::add("vi");
    let ino = x.inode().to_string();
    let nt = Nettrace::spawn(&["-p", "icmp", "--netns", &ino]);
    x.delete();
    let _z = NamedNetns::add("vj");
    assert_stops_with(
        nt,
        &format!("nettrace: network namespace {ino} is gone: no process is in it and no mount holds it; tracing stopped"),
    );
}

/// A /proc/PID/ns/net path, the namespace of a process that has it to itself: the trace stops
/// when that process exits.
#[test]
fn netns_of_a_process_that_exits_stops_the_trace() {
    preflight();
    require_tools(&["unshare", "sleep"]);
    let child = Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn unshare --net sleep");
    let mut child = Reap(child);
    let pid = child.0.id();
    let path = format!("/proc/{pid}/ns/net");
    // unshare enters its namespace, then execs sleep.
    let own = inode("/proc/self/ns/net");
    let moved = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim() == "sleep" && inode(&path).is_some_and(|i| Some(i) != own)
    });
    assert!(
        moved,
        "unshare --net sleep did not start in a namespace of its own"
    );
    let ino = inode(&path).expect("stat the namespace");
    let nt = Nettrace::spawn(&["-p", "icmp", "--netns", &path]);
    child.0.kill().expect("kill sleep");
    child.0.wait().expect("reap sleep");
    assert_stops_with(
        nt,
        &format!("nettrace: network namespace {path} (inode {ino}) is gone: no process is in it and no mount holds it; tracing stopped"),
    );
}

/// `--ifname` of an interface deleted while tracing: before, its stale index stayed in the
/// filter without a word.
#[test]
fn ifname_deleted_stops_the_trace() {
    preflight();
    let ns = Netns::new();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let index = ns.ifindex("v0");
    let path = ns.path().to_string_lossy().into_owned();
    let nt = Nettrace::spawn(&["-p", "icmp", "--netns", &path, "--ifname", "v0"]);
    ns.ip(&["link", "del", "v0"]);
    assert_stops_with(
        nt,
        &format!("nettrace: interface v0 (index {index}) is gone from network namespace {path}; tracing stopped"),
    );
}

/// `--pid` of a process that exits while tracing: said once, and the trace ends (the number
/// may go to another process next).
#[test]
fn pid_exiting_stops_the_trace() {
    preflight();
    require_tools(&["sleep"]);
    let child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let mut child = Reap(child);
    let pid = child.0.id().to_string();
    let nt = Nettrace::spawn(&["-p", "icmp", "--pid", &pid]);
    child.0.kill().expect("kill sleep");
    child.0.wait().expect("reap sleep");
    assert_stops_with(
        nt,
        &format!("nettrace: process {pid} exited; tracing stopped"),
    );
}
