//! From command-line values to what they name: parsing (pure, in common),
//! then the lookups that need the system. Every value must name something
//! that exists, or fail in one line before anything is loaded: a network
//! namespace (opened and held for the whole trace, so that its inode cannot
//! be reused by another one), an interface, a process (held as a pidfd), and
//! each tracepoint of a tracer file (checked against the kernel's BTF).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nettrace_common::filter::parse_netns;
use nettrace_common::tracer::MAX_FILE_BYTES;
use nettrace_common::{Filter, Leaf, LeafKind, NetnsArg, TracerTree};

use crate::cli::HostArgs;
use crate::system::Kernel;

/// Checks the host-only filter values (the shared ones are checked by
/// [`nettrace_common::TraceOptions::validate`]); no system lookups yet.
pub fn check_host_args(host: &HostArgs) -> Result<()> {
    if let Some(netns) = &host.netns {
        parse_netns(netns).context("--netns")?;
    }
    if host.pid == Some(0) {
        bail!("--pid must be a process id above 0");
    }
    Ok(())
}

/// What the kernel filter's netns, ifindex and pid name, held for as long
/// as the trace runs (see `crate::watch`, which ends the trace when one of
/// them disappears).
#[derive(Debug, Default)]
pub struct Scopes {
    /// `--netns`, open.
    pub netns: Option<HeldNetns>,
    /// `--ifname`, with the index it had when the trace began.
    pub iface: Option<Iface>,
    /// `--pid`, as a pidfd.
    pub pid: Option<HeldPid>,
}

impl Scopes {
    /// True when nothing is scoped (nothing to watch).
    pub fn is_empty(&self) -> bool {
        self.netns.is_none() && self.iface.is_none() && self.pid.is_none()
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct HeldNetns {
    /// The namespace file, open for the whole trace: while it is, the
    /// namespace lives on and its inode number cannot name another one.
    pub fd: OwnedFd,
    /// Its inode number (what the kernel filter compares).
    pub ino: u64,
    /// The device of nsfs, which every namespace file shares.
    pub dev: u64,
    /// The value as given, for messages.
    pub label: String,
    /// What keeps it meaningful.
    pub named_by: NamedBy,
}

/// What a `--netns` value names the namespace through, and so what its
/// disappearance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedBy {
    /// A path outside /proc (`/run/netns/NAME`, any bind mount): the
    /// namespace is gone when the path no longer names it.
    Path(PathBuf),
    /// An inode number or a /proc path: the namespace is gone when no
    /// process and no mount holds it any more, besides nettrace.
    Holders,
}

/// The interface `--ifname` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// As given.
    pub name: String,
    /// Its index in its namespace.
    pub index: u32,
}

/// The process `--pid` named.
#[derive(Debug)]
pub struct HeldPid {
    /// As given.
    pub pid: u32,
    /// A pidfd: readable once the process has exited, and never confused
    /// with a later process that reuses the number.
    pub fd: OwnedFd,
}

/// Opens what `--netns`, `--ifname` and `--pid` name, fills the filter's
/// netns inode and interface index, and hands back what must stay held.
pub fn resolve_kernel_scopes(host: &HostArgs, filter: &mut Filter) -> Result<Scopes> {
    let mut scopes = Scopes::default();
    if let Some(value) = &host.netns {
        let ns = match parse_netns(value).context("--netns")? {
            NetnsArg::Inode(ino) => open_netns_inode(ino)?,
            NetnsArg::Path(p) => open_netns_path(&p)?,
        };
        filter.netns = Some(u32::try_from(ns.ino).context("--netns: inode out of range")?);
        scopes.netns = Some(ns);
    }
    if let Some(name) = &host.ifname {
        let index = match &scopes.netns {
            Some(ns) => ifindex_in_netns(name, ns)?,
            None => {
                // An index means something in one namespace only: scope the
                // filter to ours, where the name was looked up.
                let own = fs::metadata("/proc/self/ns/net")
                    .context("cannot read this process's network namespace")?;
                filter.netns = u32::try_from(own.ino()).ok();
                ifindex(name)?
            }
        };
        filter.ifindex = Some(index);
        scopes.iface = Some(Iface {
            name: name.clone(),
            index,
        });
    }
    if let Some(pid) = host.pid {
        scopes.pid = Some(hold_pid(pid)?);
    }
    Ok(scopes)
}

// ---------------------------------------------------------------------------
// Network namespaces

const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE`, `_IO(0xb7, 0x3)` in linux/nsfs.h.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

fn ns_type_name(t: i32) -> &'static str {
    match t {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWUTS => "UTS",
        libc::CLONE_NEWIPC => "IPC",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "PID",
        libc::CLONE_NEWNET => "network",
        0x80 => "time",
        _ => "unknown",
    }
}

/// The `CLONE_NEW*` type of an open namespace file; None when `fd` is not
/// on nsfs.
fn ns_type(fd: BorrowedFd<'_>) -> Option<i32> {
    // SAFETY: statfs is plain old data, filled by fstatfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid statfs to write to.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 || st.f_type as i64 != NSFS_MAGIC {
        return None;
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type.
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    (t > 0).then_some(t)
}

const NOT_A_NAMESPACE: &str =
    "is not a namespace file; give /proc/PID/ns/net, /run/netns/NAME or a namespace inode number";

/// Opens `path` and checks that it is a network namespace.
fn open_netns_file(path: &Path, label: &str) -> Result<(OwnedFd, fs::Metadata)> {
    // Never open what is not a regular file (a FIFO would block): nsfs
    // files are regular files.
    let meta = fs::metadata(path).with_context(|| format!("--netns: cannot open {label}"))?;
    if !meta.is_file() {
        bail!("--netns: {label} {NOT_A_NAMESPACE}");
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("--netns: cannot open {label}"))?;
    let fd = OwnedFd::from(file);
    match ns_type(fd.as_fd()) {
        Some(libc::CLONE_NEWNET) => {}
        Some(t) => bail!(
            "--netns: {label} is a {} namespace, not a network namespace",
            ns_type_name(t)
        ),
        None => bail!("--netns: {label} {NOT_A_NAMESPACE}"),
    }
    let meta = File::from(fd.try_clone().context("--netns: dup")?)
        .metadata()
        .with_context(|| format!("--netns: cannot stat {label}"))?;
    Ok((fd, meta))
}

fn open_netns_path(path: &str) -> Result<HeldNetns> {
    let (fd, meta) = open_netns_file(Path::new(path), path)?;
    let named_by = if Path::new(path).starts_with("/proc") {
        NamedBy::Holders
    } else {
        NamedBy::Path(PathBuf::from(path))
    };
    Ok(HeldNetns {
        fd,
        ino: meta.ino(),
        dev: meta.dev(),
        label: path.to_string(),
        named_by,
    })
}

fn open_netns_inode(ino: u32) -> Result<HeldNetns> {
    let dev = fs::metadata("/proc/self/ns/net")
        .context("cannot read this process's network namespace")?
        .dev();
    let ino = u64::from(ino);
    let label = ino.to_string();
    // A holder may go away between the scan and the open: look again.
    for _ in 0..3 {
        let Some(holder) = find_netns_holder(ino, dev) else {
            break;
        };
        let Ok((fd, meta)) = open_netns_file(&holder, &label) else {
            continue;
        };
        if meta.ino() == ino && meta.dev() == dev {
            return Ok(HeldNetns {
                fd,
                ino,
                dev,
                label,
                named_by: NamedBy::Holders,
            });
        }
    }
    bail!("--netns: {ino} is the inode of no network namespace in use (by a process or a mount)")
}

/// Whether `path` is the namespace file (`ino` on nsfs device `dev`).
pub fn names_netns(path: &Path, ino: u64, dev: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.ino() == ino && m.dev() == dev)
}

/// A path through which something other than this process holds the
/// network namespace `ino`: a mount of it (in this mount namespace, then in
/// others, through `/proc/PID/root`), or a process or thread in it. None when
/// nothing does. Reads the process table (cheap enough once a second at the
/// most; the watch only calls it when the last holder it knew of let go).
pub fn find_netns_holder(ino: u64, dev: u64) -> Option<PathBuf> {
    use procfs::process::{all_processes, Process};

    let nsfs_mounts = |p: &Process| -> Vec<PathBuf> {
        p.mountinfo()
            .map(|m| {
                m.into_iter()
                    .filter(|m| m.fs_type == "nsfs")
                    .map(|m| m.mount_point)
                    .collect()
            })
            .unwrap_or_default()
    };
    let me = Process::myself().ok()?;
    let my_pid = me.pid();
    if let Some(m) = nsfs_mounts(&me)
        .into_iter()
        .find(|m| names_netns(m, ino, dev))
    {
        return Some(m);
    }
    let ns_id = |p: &Process, kind: &str| {
        p.namespaces()
            .ok()
            .and_then(|n| n.0.get(std::ffi::OsStr::new(kind)).map(|n| n.identifier))
    };
    let my_mnt = ns_id(&me, "mnt");
    // Other mount namespaces, each with one process to look through.
    let mut other_mnt: HashMap<u64, i32> = HashMap::new();
    for p in all_processes().ok()?.flatten() {
        let pid = p.pid();
        if pid == my_pid {
            continue;
        }
        let Ok(spaces) = p.namespaces() else {
            continue;
        };
        let get = |kind: &str| spaces.0.get(std::ffi::OsStr::new(kind));
        if get("net").is_some_and(|n| n.identifier == ino && n.device_id == dev) {
            return Some(PathBuf::from(format!("/proc/{pid}/ns/net")));
        }
        if let Some(mnt) = get("mnt").map(|n| n.identifier) {
            if Some(mnt) != my_mnt {
                other_mnt.entry(mnt).or_insert(pid);
            }
        }
        // A thread may have moved to another namespace than its process.
        if let Ok(tasks) = p.tasks() {
            for t in tasks.flatten().filter(|t| t.tid != pid) {
                let path = PathBuf::from(format!("/proc/{pid}/task/{}/ns/net", t.tid));
                if names_netns(&path, ino, dev) {
                    return Some(path);
                }
            }
        }
    }
    for pid in other_mnt.into_values() {
        let Ok(p) = Process::new(pid) else { continue };
        for m in nsfs_mounts(&p) {
            let rel = m.strip_prefix("/").unwrap_or(&m);
            let path = PathBuf::from(format!("/proc/{pid}/root")).join(rel);
            if names_netns(&path, ino, dev) {
                return Some(path);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Interfaces

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).context("--ifname contains a NUL byte")?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("--ifname: no interface named {name}");
    }
    Ok(index)
}

/// Looks an interface up inside another netns, from a short-lived thread
/// (a network namespace is a per-thread property).
fn ifindex_in_netns(name: &str, ns: &HeldNetns) -> Result<u32> {
    let fd = ns.fd.try_clone().context("--netns: dup")?;
    let name = name.to_string();
    let label = ns.label.clone();
    std::thread::spawn(move || -> Result<u32> {
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter network namespace {label}"))?;
        ifindex(&name).with_context(|| format!("in network namespace {label}"))
    })
    .join()
    .map_err(|_| anyhow!("interface lookup thread panicked"))?
}

// ---------------------------------------------------------------------------
// Processes

fn hold_pid(pid: u32) -> Result<HeldPid> {
    let no_such = || anyhow!("--pid {pid}: no such process");
    let raw = i32::try_from(pid).map_err(|_| no_such())?;
    // SAFETY: pidfd_open(2) takes a pid and flags, returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => return Err(no_such()),
            Some(libc::EINVAL | libc::ENOENT) => {
                // Not a thread-group leader: a thread id. The filter
                // compares process ids, so it would never match.
                let tgid = procfs::process::Process::new(raw)
                    .and_then(|p| p.status())
                    .map(|s| s.tgid);
                match tgid {
                    Ok(tgid) if tgid != raw => bail!(
                        "--pid {pid} is a thread of process {tgid}; give the process id, {tgid}"
                    ),
                    _ => return Err(no_such()),
                }
            }
            _ => return Err(err).with_context(|| format!("--pid {pid}: cannot watch the process")),
        }
    }
    // SAFETY: fd is a fresh descriptor that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if pidfd_exited(fd.as_fd(), 0) {
        bail!("--pid {pid}: the process has already exited");
    }
    Ok(HeldPid { pid, fd })
}

/// Waits up to `timeout_ms` for the process of a pidfd to exit; true once
/// it has.
pub fn pidfd_exited(fd: BorrowedFd<'_>, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

// ---------------------------------------------------------------------------
// Tracer files

/// Reads a tracer file, at most [`MAX_FILE_BYTES`] of it: a longer one
/// (or an endless one such as /dev/zero) is refused.
pub fn read_tracer_file(path: &Path) -> Result<String> {
    let cannot = || format!("cannot read tracer file {}", path.display());
    let file = File::open(path).with_context(cannot)?;
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(cannot)?;
    if buf.len() > MAX_FILE_BYTES {
        bail!(
            "tracer file {} is larger than 1 MiB; a tracer tree is a few KiB of JSON",
            path.display()
        );
    }
    String::from_utf8(buf).map_err(|_| anyhow!("tracer file {} is not UTF-8 text", path.display()))
}

/// Checks every tracepoint leaf of a tracer file against the running
/// kernel, before anything is loaded: the tracepoint exists (in tracefs),
/// and its `skb`, `sk` and `dev` indexes are arguments of the tracepoint
/// (its `TP_PROTO`, from the `btf_trace_<event>` typedef of the kernel's
/// BTF) of the right type.
pub fn check_tracepoint_leaves(kernel: &Kernel, tree: &TracerTree) -> Result<()> {
    let leaves: Vec<(&Leaf, &str, &str)> = tree
        .leaves()
        .filter_map(|l| match &l.kind {
            LeafKind::Tracepoint { category, event } => {
                Some((l, category.as_str(), event.as_str()))
            }
            LeafKind::Function { .. } => None,
        })
        .collect();
    if leaves.is_empty() {
        return Ok(());
    }
    let tracefs = match &kernel.tracefs {
        Some(dir) => dir.clone(),
        None => crate::system::tracefs()?,
    };
    for (leaf, category, event) in &leaves {
        let dir = tracefs.join("events").join(category).join(event);
        if !dir.join("format").is_file() {
            bail!(
                "tracer '{}': tracepoint {category}/{event} does not exist on this kernel (no {})",
                leaf.name,
                dir.display()
            );
        }
    }
    let wanted: HashSet<&str> = leaves.iter().map(|(_, _, e)| *e).collect();
    let Some(btf) = fs::read(VMLINUX_BTF).ok().and_then(RawBtf::parse) else {
        // Without readable BTF the kernel checks the indexes when attaching.
        return Ok(());
    };
    let protos = btf.tracepoint_protos(&wanted);
    for (leaf, category, event) in leaves {
        // Tracepoints of modules have their BTF elsewhere: not checked here.
        if let Some(params) = protos.get(event) {
            check_args(&btf, params, leaf, &format!("{category}/{event}"))?;
        }
    }
    Ok(())
}

/// Checks a leaf's `skb`, `sk` and `dev` indexes against the argument types
/// `params` of its tracepoint `tp`.
fn check_args(btf: &RawBtf, params: &[u32], leaf: &Leaf, tp: &str) -> Result<()> {
    let fields = [
        ("skb", Some(leaf.skb_arg), "sk_buff"),
        ("sk", leaf.sk_arg, "sock"),
        ("dev", leaf.dev_arg, "net_device"),
    ];
    for (key, index, want) in fields {
        let Some(index) = index else { continue };
        let Some(&ty) = params.get(usize::from(index)) else {
            let has = match params.len() {
                0 => "no arguments".to_string(),
                1 => "1 argument (0)".to_string(),
                n => format!("{n} arguments (0 to {})", n - 1),
            };
            bail!(
                "tracer '{}': \"{key}\" is argument {index}, but tracepoint {tp} has {has}",
                leaf.name
            );
        };
        if btf.pointee_struct(ty) != Some(want) {
            bail!(
                "tracer '{}': \"{key}\" is argument {index} of tracepoint {tp}, whose type is {}, not struct {want} *",
                leaf.name,
                btf.render(ty, 0)
            );
        }
    }
    Ok(())
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

// BTF kinds (linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_FLOAT: u32 = 16;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Just enough of a BTF blob to read function prototypes: the offset of
/// each type, and the strings. (aya parses the BTF too, but does not let
/// its types be read.)
struct RawBtf {
    data: Vec<u8>,
    /// Offset of type id `i` at index `i` (index 0, `void`, unused).
    types: Vec<usize>,
    strings: std::ops::Range<usize>,
}

impl RawBtf {
    fn u32_at(data: &[u8], off: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(data.get(off..off + 4)?.try_into().ok()?))
    }

    fn parse(data: Vec<u8>) -> Option<RawBtf> {
        let magic = u16::from_ne_bytes(data.get(0..2)?.try_into().ok()?);
        if magic != 0xeb9f {
            return None;
        }
        let word = |i: usize| Self::u32_at(&data, 4 + 4 * i).map(|v| v as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (word(0)?, word(1)?, word(2)?, word(3)?, word(4)?);
        let start = hdr_len.checked_add(type_off)?;
        let end = start.checked_add(type_len)?.min(data.len());
        let strings = hdr_len + str_off..(hdr_len + str_off + str_len).min(data.len());
        let mut types = vec![0];
        let mut off = start;
        while off + 12 <= end {
            types.push(off);
            let info = Self::u32_at(&data, off + 4)?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                KIND_INT => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => 12 * vlen,
                KIND_ENUM => 8 * vlen,
                KIND_FUNC_PROTO => 8 * vlen,
                14 | 17 => 4,                  // VAR, DECL_TAG
                15 | KIND_ENUM64 => 12 * vlen, // DATASEC
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | 12 | KIND_FLOAT | KIND_TYPE_TAG => 0,
                _ => return None,
            };
            off += 12 + extra;
        }
        Some(RawBtf {
            data,
            types,
            strings,
        })
    }

    /// (kind, vlen, kind_flag, name, size_or_type, offset) of a type.
    fn ty(&self, id: u32) -> Option<(u32, usize, bool, &str, u32, usize)> {
        let off = *self.types.get(id as usize).filter(|_| id != 0)?;
        let name_off = Self::u32_at(&self.data, off)? as usize;
        let info = Self::u32_at(&self.data, off + 4)?;
        let next = Self::u32_at(&self.data, off + 8)?;
        Some((
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            self.string(name_off),
            next,
            off,
        ))
    }

    fn string(&self, off: usize) -> &str {
        let s = self.strings.start.saturating_add(off);
        let bytes = self.data.get(s..self.strings.end).unwrap_or(&[]);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("?")
    }

    /// Skips const, volatile, restrict, type tags and typedefs.
    fn strip(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.ty(id) {
                Some((
                    KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG | KIND_TYPEDEF,
                    _,
                    _,
                    _,
                    next,
                    _,
                )) => id = next,
                _ => break,
            }
        }
        id
    }

    /// The argument types of each tracepoint of `events`: the parameters of
    /// the function pointer `btf_trace_<event>`, less its first (`void *`).
    fn tracepoint_protos(&self, events: &HashSet<&str>) -> HashMap<String, Vec<u32>> {
        let mut out = HashMap::new();
        for id in 1..self.types.len() as u32 {
            let Some((KIND_TYPEDEF, _, _, name, next, _)) = self.ty(id) else {
                continue;
            };
            let Some(event) = name.strip_prefix("btf_trace_") else {
                continue;
            };
            if !events.contains(event) {
                continue;
            }
            let Some((KIND_PTR, _, _, _, proto, _)) = self.ty(self.strip(next)) else {
                continue;
            };
            let Some((KIND_FUNC_PROTO, vlen, _, _, _, off)) = self.ty(proto) else {
                continue;
            };
            let params: Vec<u32> = (1..vlen)
                .filter_map(|i| Self::u32_at(&self.data, off + 12 + 8 * i + 4))
                .collect();
            out.insert(event.to_string(), params);
        }
        out
    }

    /// `NAME` when `id` is a pointer to `struct NAME`.
    fn pointee_struct(&self, id: u32) -> Option<&str> {
        let (kind, _, _, _, next, _) = self.ty(self.strip(id))?;
        if kind != KIND_PTR {
            return None;
        }
        match self.ty(self.strip(next))? {
            (KIND_STRUCT, _, _, name, _, _) => Some(name),
            (KIND_FWD, _, false, name, _, _) => Some(name),
            _ => None,
        }
    }

    /// A C spelling of a type, for messages.
    fn render(&self, id: u32, depth: usize) -> String {
        if id == 0 {
            return "void".to_string();
        }
        let Some((kind, _, flag, name, next, off)) = self.ty(id) else {
            return "?".to_string();
        };
        if depth > 8 {
            return "?".to_string();
        }
        let inner = |id| self.render(id, depth + 1);
        match kind {
            KIND_PTR => format!("{} *", inner(next)),
            KIND_CONST => format!("const {}", inner(next)),
            KIND_VOLATILE => format!("volatile {}", inner(next)),
            KIND_RESTRICT | KIND_TYPE_TAG => inner(next),
            KIND_STRUCT => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            KIND_FWD => format!("{} {name}", if flag { "union" } else { "struct" }),
            KIND_ENUM | KIND_ENUM64 => format!("enum {name}"),
            KIND_ARRAY => {
                let elem = Self::u32_at(&self.data, off + 12).unwrap_or(0);
                format!("{}[]", inner(elem))
            }
            KIND_FUNC_PROTO => "function".to_string(),
            _ => name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argument types of a few tracepoints, read from the kernel's own BTF
    /// (as Linux 6.18 has them).
    #[test]
    fn tracepoint_arguments_are_read_from_btf() {
        let Some(btf) = fs::read(VMLINUX_BTF).ok().and_then(RawBtf::parse) else {
            panic!("cannot read {VMLINUX_BTF}");
        };
        let events: HashSet<&str> = ["net_dev_xmit", "kfree_skb", "tcp_send_reset"]
            .into_iter()
            .collect();
        let protos = btf.tracepoint_protos(&events);
        let xmit = &protos["net_dev_xmit"];
        let types: Vec<String> = xmit.iter().map(|&t| btf.render(t, 0)).collect();
        assert_eq!(
            types,
            [
                "struct sk_buff *",
                "int",
                "struct net_device *",
                "unsigned int"
            ]
        );
        assert_eq!(btf.pointee_struct(xmit[0]), Some("sk_buff"));
        assert_eq!(btf.pointee_struct(xmit[1]), None);
        assert_eq!(btf.pointee_struct(xmit[2]), Some("net_device"));
        // const-qualified pointers are still pointers to the struct
        let reset = &protos["tcp_send_reset"];
        assert_eq!(btf.render(reset[0], 0), "const struct sock *");
        assert_eq!(btf.pointee_struct(reset[0]), Some("sock"));
        assert_eq!(btf.pointee_struct(reset[1]), Some("sk_buff"));
        assert_eq!(btf.render(protos["kfree_skb"][1], 0), "void *");
    }

    /// Every tracepoint leaf of the shipped tracer.json that this kernel's
    /// BTF describes passes the check a tracer file gets; a wrong index or
    /// type does not.
    #[test]
    fn shipped_tree_passes_the_tracer_file_check() {
        let btf = fs::read(VMLINUX_BTF)
            .ok()
            .and_then(RawBtf::parse)
            .expect("the kernel's BTF");
        let tree = TracerTree::parse(include_str!("../../tracer.json")).expect("tracer.json");
        let tps: Vec<(&Leaf, String, &str)> = tree
            .leaves()
            .filter_map(|l| match &l.kind {
                LeafKind::Tracepoint { category, event } => {
                    Some((l, format!("{category}/{event}"), event.as_str()))
                }
                LeafKind::Function { .. } => None,
            })
            .collect();
        let events: HashSet<&str> = tps.iter().map(|(_, _, e)| *e).collect();
        let protos = btf.tracepoint_protos(&events);
        assert!(
            protos.len() > 10,
            "only {} tracepoints in BTF",
            protos.len()
        );
        for (leaf, tp, event) in &tps {
            if let Some(params) = protos.get(*event) {
                check_args(&btf, params, leaf, tp).unwrap_or_else(|e| panic!("{tp}: {e:#}"));
            }
        }
        let (xmit, tp, _) = tps
            .iter()
            .find(|(l, _, _)| l.name == "net_dev_xmit")
            .expect("net_dev_xmit");
        let params = &protos["net_dev_xmit"];
        let mut bad = (*xmit).clone();
        bad.dev_arg = Some(1);
        assert_eq!(
            check_args(&btf, params, &bad, tp).unwrap_err().to_string(),
            "tracer 'net_dev_xmit': \"dev\" is argument 1 of tracepoint net/net_dev_xmit, whose type is int, not struct net_device *"
        );
        bad.dev_arg = None;
        bad.sk_arg = Some(4);
        assert_eq!(
            check_args(&btf, params, &bad, tp).unwrap_err().to_string(),
            "tracer 'net_dev_xmit': \"sk\" is argument 4, but tracepoint net/net_dev_xmit has 4 arguments (0 to 3)"
        );
        assert_eq!(
            check_args(&btf, &params[..1], &bad, tp).unwrap_err().to_string(),
            "tracer 'net_dev_xmit': \"sk\" is argument 4, but tracepoint net/net_dev_xmit has 1 argument (0)"
        );
    }

    #[test]
    fn garbage_is_not_btf() {
        assert!(RawBtf::parse(Vec::new()).is_none());
        assert!(RawBtf::parse(vec![0x9f, 0xeb, 1, 0]).is_none());
        assert!(RawBtf::parse(vec![0u8; 64]).is_none());
    }
}
