//! From a container id to its process, network namespace and host-side veth,
//! through `/proc` and `/sys` only (so it works with any container runtime).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::netlink;

/// What a container resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// A process of the container (the lowest pid found).
    pub pid: u32,
    /// Inode of its network namespace.
    pub netns: u64,
    /// It shares the reference ("host") network namespace.
    pub host_network: bool,
    /// The reference-namespace end of its veth: (ifindex, name).
    pub host_if: Option<(u32, String)>,
    /// Why `host_if` is unknown (not for hostNetwork).
    pub host_if_error: Option<String>,
}

/// Strips the runtime prefix (`containerd://`, `cri-o://`, `docker://`, any
/// `scheme://`) and checks what is left looks like a container id.
pub fn strip_runtime_prefix(id: &str) -> Result<&str> {
    let bare = id.split_once("://").map_or(id, |(_, rest)| rest).trim();
    if bare.len() < 12 || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        bail!("{id:?} is not a container id (expected runtime://hex digits, at least 12)");
    }
    Ok(bare)
}

/// Whether a `/proc/PID/cgroup` text puts the process in a cgroup whose path
/// holds the container id as a whole path component part (e.g.
/// `cri-containerd-ID.scope`, `docker-ID.scope`, `crio-ID`, `/docker/ID`).
pub fn cgroup_matches(cgroup_text: &str, id: &str) -> bool {
    cgroup_text.lines().any(|line| {
        // hierarchy-ID:controller-list:cgroup-path
        let Some(path) = line.splitn(3, ':').nth(2) else {
            return false;
        };
        path.split('/').any(|component| {
            component.match_indices(id).any(|(at, _)| {
                let before = component[..at].chars().next_back();
                let after = component[at + id.len()..].chars().next();
                let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
                boundary(before) && boundary(after)
            })
        })
    })
}

/// For each container id, the lowest pid whose cgroup path holds it, in one
/// scan of `proc` (a node may run thousands of processes).
pub fn find_pids(proc: &Path, ids: &[&str]) -> Result<Vec<Option<u32>>> {
    let entries = fs::read_dir(proc).with_context(|| format!("cannot list {}", proc.display()))?;
    let mut found: Vec<Option<u32>> = vec![None; ids.len()];
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we scan: unreadable ones are skipped.
        let Ok(text) = fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        for (id, slot) in ids.iter().zip(found.iter_mut()) {
            if slot.is_none_or(|f| pid < f) && cgroup_matches(&text, id) {
                *slot = Some(pid);
            }
        }
    }
    Ok(found)
}

/// Inode of a network namespace file.
pub fn netns_inode(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .ino())
}

/// Runs `f` on a short-lived thread that entered the network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let file = File::open(ns).with_context(|| format!("cannot open {}", ns.display()))?;
    let name = ns.display().to_string();
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter network namespace {name}"))?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("network namespace thread panicked"))?
}

fn read_u32(path: &Path) -> Result<u32> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {:?}, not a number", path.display(), text.trim()))
}

/// Mounts a sysfs of the current thread's network namespace on `/sys` in
/// a private mount namespace (`/sys/class/net` shows the namespace of the
/// sysfs mount, not of the thread).
fn private_sysfs() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot make a private mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make mounts private")?;
    match mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        // The sysfs on /sys already is this namespace's.
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).context("cannot mount sysfs"),
    }
}

const SYS_NET: &str = "/sys/class/net";

/// `(ifindex, iflink)` of an interface in `/sys/class/net`.
fn index_and_link(name: &str) -> Result<(u32, u32)> {
    let dir = Path::new(SYS_NET).join(name);
    Ok((
        read_u32(&dir.join("ifindex"))?,
        read_u32(&dir.join("iflink"))?,
    ))
}

fn interface_names() -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(SYS_NET)
        .with_context(|| format!("cannot list {SYS_NET}"))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// `(ifindex, iflink)` of `eth0`, else of the first non-loopback interface
/// with a peer (`iflink` differs from `ifindex`), in the current thread's
/// network namespace.
fn container_interface() -> Result<(u32, u32)> {
    private_sysfs()?;
    if Path::new(SYS_NET).join("eth0").exists() {
        return index_and_link("eth0");
    }
    interface_names()?
        .iter()
        .filter(|n| *n != "lo")
        .filter_map(|n| index_and_link(n).ok())
        .find(|(index, link)| index != link)
        .ok_or_else(|| anyhow!("the container has no eth0 and no other interface with a peer"))
}

/// One container, for the tests.
#[cfg(test)]
fn resolve(proc: &Path, container_id: &str, host_ns: &Path) -> Result<Container> {
    resolve_all(proc, &[container_id], host_ns).remove(0)
}

/// Resolves many containers (ids with or without runtime prefix) under
/// `proc`, relative to the reference network namespace `host_ns` (the
/// agent's own, `/proc/self/ns/net`, on a node), with one scan of `proc`.
pub fn resolve_all(proc: &Path, container_ids: &[&str], host_ns: &Path) -> Vec<Result<Container>> {
    let ids: Vec<Result<&str>> = container_ids
        .iter()
        .map(|c| strip_runtime_prefix(c))
        .collect();
    let valid: Vec<&str> = ids
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let mut pids = match find_pids(proc, &valid) {
        Ok(p) => p.into_iter(),
        Err(e) => {
            let msg = format!("{e:#}");
            return container_ids
                .iter()
                .map(|_| Err(anyhow!("{msg}")))
                .collect();
        }
    };
    ids.into_iter()
        .map(|id| {
            let id = id?;
            let pid = pids
                .next()
                .flatten()
                .ok_or_else(|| anyhow!("no process of container {id} on this node"))?;
            resolve_pid(proc, pid, host_ns)
        })
        .collect()
}

/// The namespace and host-side interface of the container process `pid`.
fn resolve_pid(proc: &Path, pid: u32, host_ns: &Path) -> Result<Container> {
    let ns_path = proc.join(pid.to_string()).join("ns/net");
    let netns = netns_inode(&ns_path)?;
    let host_netns = netns_inode(host_ns)?;
    if netns == host_netns {
        return Ok(Container {
            pid,
            netns,
            host_network: true,
            host_if: None,
            host_if_error: None,
        });
    }
    let host_if = host_side(&ns_path, host_ns);
    Ok(Container {
        pid,
        netns,
        host_network: false,
        host_if_error: host_if
            .as_ref()
            .err()
            .map(|e| format!("{e:#}").replace('\n', " ")),
        host_if: host_if.ok(),
    })
}

/// The end in `host_ns` of the veth whose other end is the container's
/// interface (seen in `ns_path`).
///
/// ifindexes are per namespace: the interface `iflink` names is checked to
/// link back to the container's interface, in the container's namespace.
pub fn host_side(ns_path: &Path, host_ns: &Path) -> Result<(u32, String)> {
    let (index, link) =
        in_netns(ns_path, container_interface).context("finding the container's interface")?;
    let ns_file =
        File::open(ns_path).with_context(|| format!("cannot open {}", ns_path.display()))?;
    in_netns(host_ns, move || {
        let info = netlink::get_link(link)?;
        let nsid = netlink::netns_id(ns_file.as_raw_fd())?;
        if info.link != Some(index) || info.link_netnsid.is_none_or(|id| id != nsid) {
            bail!(
                "interface {link} ({}) is not the peer of the container's interface",
                info.name
            );
        }
        Ok((link, info.name))
    })
    .with_context(|| format!("in the namespace {}", host_ns.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a9c1e77b0d3aa5c6e8f9012345678abcdef0123456789abcdef0123456789";

    #[test]
    fn runtime_prefixes_are_stripped() {
        for prefix in ["containerd://", "cri-o://", "docker://", ""] {
            assert_eq!(
                strip_runtime_prefix(&format!("{prefix}{ID}")).ok(),
                Some(ID)
            );
        }
        assert!(strip_runtime_prefix("containerd://").is_err());
        assert!(strip_runtime_prefix("docker://abc").is_err());
        assert!(strip_runtime_prefix("containerd://../../etc/passwd").is_err());
    }

    #[test]
    fn cgroup_lines_of_every_runtime_match() {
        let cases = [
            format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope\n"),
            format!("0::/kubepods/besteffort/pod1/{ID}\n"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n"),
            format!("12:memory:/docker/{ID}\n0::/system.slice/docker-{ID}.scope\n"),
            format!("0::/nettrace-test-{ID}\n"),
        ];
        for text in &cases {
            assert!(cgroup_matches(text, ID), "{text}");
        }
    }

    #[test]
    fn cgroup_lines_of_other_containers_do_not_match() {
        let short = &ID[..12];
        assert!(!cgroup_matches("0::/user.slice/session-1.scope\n", ID));
        // a prefix of a longer id is another container
        assert!(!cgroup_matches(&format!("0::/docker/{ID}ff\n"), ID));
        assert!(!cgroup_matches(&format!("0::/docker/ab{short}\n"), short));
        assert!(cgroup_matches(&format!("0::/docker/{short}\n"), short));
        // the id in the controller list is not a path
        assert!(!cgroup_matches(&format!("0:{ID}:/\n"), ID));
        assert!(!cgroup_matches("garbage", ID));
    }

    /// Real namespaces, processes and cgroups (needs root, like the
    /// project's other privileged tests: fails rather than skips).
    mod live {
        use super::super::*;
        use std::path::PathBuf;
        use std::process::{Child, Command, Stdio};

        fn ip(args: &[&str]) {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }

        /// Namespaces, a process per namespace (None: the test's own) in a
        /// cgroup named after a fake id; all removed on drop.
        struct Scene {
            netns: Vec<String>,
            procs: Vec<(Child, PathBuf)>,
        }

        impl Scene {
            fn netns(&mut self, name: &str) -> PathBuf {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
                ip(&["netns", "add", name]);
                self.netns.push(name.to_string());
                PathBuf::from("/run/netns").join(name)
            }

            fn container(&mut self, ns: Option<&str>, id: &str) -> u32 {
                let root = [
                    "/sys/fs/cgroup",
                    "/sys/fs/cgroup/unified",
                    "/sys/fs/cgroup/pids",
                ]
                .iter()
                .map(PathBuf::from)
                .find(|d| d.join("cgroup.procs").is_file())
                .expect("a cgroup hierarchy");
                let cg = root.join(format!("nettrace-test-{id}"));
                fs::create_dir_all(&cg).expect("mkdir cgroup");
                let mut cmd = match ns {
                    Some(ns) => {
                        let mut c = Command::new("ip");
                        c.args(["netns", "exec", ns, "sleep", "60"]);
                        c
                    }
                    None => {
                        let mut c = Command::new("sleep");
                        c.arg("60");
                        c
                    }
                };
                let child = cmd.stdin(Stdio::null()).spawn().expect("spawn sleep");
                let pid = child.id();
                self.procs.push((child, cg.clone()));
                fs::write(cg.join("cgroup.procs"), pid.to_string()).expect("join cgroup");
                pid
            }
        }

        impl Drop for Scene {
            fn drop(&mut self) {
                for (child, cg) in &mut self.procs {
                    let _ = child.kill();
                    let _ = child.wait();
                    for _ in 0..50 {
                        if fs::remove_dir(&*cg).is_ok() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
                for ns in &self.netns {
                    let _ = Command::new("ip").args(["netns", "del", ns]).output();
                }
            }
        }

        #[test]
        fn containers_resolve_to_pid_netns_and_host_veth() {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test needs root (network namespaces, cgroups)"
            );
            let tag = format!("{:08x}", std::process::id());
            let (node_name, pod_name) = (format!("ntc-n-{tag}"), format!("ntc-p-{tag}"));
            let mut scene = Scene {
                netns: Vec::new(),
                procs: Vec::new(),
            };
            let node = scene.netns(&node_name);
            let pod = scene.netns(&pod_name);
            ip(&[
                "-n", &node_name, "link", "add", "vh0", "type", "veth", "peer", "name", "eth0",
                "netns", &pod_name,
            ]);
            // another interface in the pod, so eth0 is found among several
            ip(&[
                "-n", &pod_name, "link", "add", "x0", "type", "veth", "peer", "name", "x1",
            ]);
            let id = format!("{tag}{}", "5eed".repeat(14));
            let host_id = format!("{tag}{}", "beef".repeat(14));
            let pid = scene.container(Some(&pod_name), &id);
            let host_pid = scene.container(None, &host_id);

            let c = resolve(Path::new("/proc"), &format!("cri-o://{id}"), &node).expect("resolves");
            assert_eq!(c.pid, pid);
            assert_eq!(c.netns, netns_inode(&pod).expect("inode"));
            assert!(!c.host_network);
            let (index, name) = c.host_if.expect("host side found");
            assert_eq!(name, "vh0");
            let out = Command::new("ip")
                .args(["-n", &node_name, "-o", "link", "show", "vh0"])
                .output()
                .expect("ip link show");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.starts_with(&format!("{index}: vh0@")), "{text}");

            // From the test's own namespace the peer is not there: traced
            // anyway, with the reason the host side is unknown.
            let c = resolve(
                Path::new("/proc"),
                &format!("containerd://{id}"),
                Path::new("/proc/self/ns/net"),
            )
            .expect("resolves");
            assert_eq!(c.host_if, None);
            assert!(c.host_if_error.is_some_and(|e| e.contains("not the peer")));

            // A process in the reference namespace is a hostNetwork container.
            let c = resolve(
                Path::new("/proc"),
                &format!("docker://{host_id}"),
                Path::new("/proc/self/ns/net"),
            )
            .expect("resolves");
            assert_eq!(c.pid, host_pid);
            assert!(c.host_network);
            assert_eq!(c.host_if, None);

            let err = resolve(
                Path::new("/proc"),
                &format!("containerd://{}", "0".repeat(64)),
                &node,
            )
            .expect_err("no such container");
            assert!(err.to_string().contains("no process of container"), "{err}");
        }
    }
}
