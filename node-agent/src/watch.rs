//! Watches what `--netns`, `--ifname` and `--pid` name while the trace runs,
//! and ends the trace when one of them disappears: the kernel filter keeps
//! a namespace inode, an interface index and a process id, numbers that
//! would otherwise go on matching nothing, or something else.
//!
//! A thread checks about once a second (at once for a process, through its
//! pidfd). When something is gone it records one message and wakes
//! [`vanished`], which the session selects on; the caller prints the
//! message from [`vanished_message`] and exits non-zero.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

use crate::netlink;
use crate::resolve::{self, HeldNetns, NamedBy, Scopes};

/// How often the namespace and the interface are looked at.
const PERIOD: Duration = Duration::from_secs(1);

static GONE: Notify = Notify::const_new();
static MESSAGE: OnceLock<String> = OnceLock::new();

/// Resolves once a watched scope has disappeared; never when nothing is
/// watched. `session::run` selects on it.
pub async fn vanished() {
    GONE.notified().await
}

/// What disappeared, once something has.
pub fn vanished_message() -> Option<&'static str> {
    MESSAGE.get().map(String::as_str)
}

fn report(msg: String) {
    if MESSAGE.set(msg).is_ok() {
        // A stored permit: the session sees it even if it selects later.
        GONE.notify_one();
    }
}

/// Starts watching (a thread that owns the held namespace and pidfd from
/// now on, for the rest of the process). Nothing to watch: nothing started.
pub fn start(scopes: Scopes) {
    if scopes.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("nettrace-watch".into())
        .spawn(move || {
            if let Some(msg) = watch(&scopes) {
                report(msg);
            }
            // Keep holding the namespace until the process exits: the
            // session is still winding down with its inode in the filter.
            loop {
                std::thread::park();
            }
        });
    if let Err(e) = spawned {
        eprintln!("nettrace: cannot watch --netns/--ifname/--pid ({e}); they are not checked while tracing");
    }
}

/// Polls until something is gone; returns what.
fn watch(scopes: &Scopes) -> Option<String> {
    let Scopes { netns, iface, pid } = scopes;
    // Interface indexes are looked up over rtnetlink in this thread's
    // namespace: move the thread into the traced one.
    // (If it cannot enter, the interface is not watched.)
    let iface = match (iface, netns) {
        (Some(i), Some(ns)) => enter(ns).then_some(i),
        (iface, _) => iface.as_ref(),
    };
    let mut holder: Option<std::path::PathBuf> = None;
    loop {
        match pid {
            Some(p) => {
                let ms = i32::try_from(PERIOD.as_millis()).unwrap_or(1000);
                if resolve::pidfd_exited(p.fd.as_fd(), ms) {
                    return Some(format!("process {} exited; tracing stopped", p.pid));
                }
            }
            None => std::thread::sleep(PERIOD),
        }
        if let Some(ns) = netns {
            if let Some(msg) = netns_gone(ns, &mut holder) {
                return Some(msg);
            }
        }
        if let Some(i) = iface {
            if interface_gone(i.index) {
                let place = match netns {
                    Some(ns) => format!(" from network namespace {}", ns.label),
                    None => String::new(),
                };
                return Some(format!(
                    "interface {} (index {}) is gone{place}; tracing stopped",
                    i.name, i.index
                ));
            }
        }
    }
}

/// Moves this thread into the namespace.
fn enter(ns: &HeldNetns) -> bool {
    match ns.fd.try_clone() {
        Ok(fd) => nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).is_ok(),
        Err(_) => false,
    }
}

/// Whether the namespace is gone: for a path, the path no longer names it;
/// otherwise nothing but nettrace holds it (`holder` remembers the last
/// process or mount seen holding it, so that the process table is read only
/// when that one lets go).
fn netns_gone(ns: &HeldNetns, holder: &mut Option<std::path::PathBuf>) -> Option<String> {
    match &ns.named_by {
        NamedBy::Path(p) => {
            if resolve::names_netns(p, ns.ino, ns.dev) {
                return None;
            }
            let why = if p.exists() {
                "the path now names another namespace"
            } else {
                "the path was removed"
            };
            Some(format!(
                "network namespace {} is gone: {why}; tracing stopped",
                ns.label
            ))
        }
        NamedBy::Holders => {
            if holder
                .as_deref()
                .is_some_and(|h: &Path| resolve::names_netns(h, ns.ino, ns.dev))
            {
                return None;
            }
            *holder = resolve::find_netns_holder(ns.ino, ns.dev);
            if holder.is_some() {
                return None;
            }
            let label = if ns.label == ns.ino.to_string() {
                ns.label.clone()
            } else {
                format!("{} (inode {})", ns.label, ns.ino)
            };
            Some(format!(
                "network namespace {label} is gone: no process is in it and no mount holds it; tracing stopped"
            ))
        }
    }
}

/// Whether interface `index` has left this thread's namespace (deleted or
/// moved). Other errors say nothing either way.
fn interface_gone(index: u32) -> bool {
    match netlink::get_link(index) {
        Ok(_) => false,
        Err(e) => e
            .chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.raw_os_error() == Some(libc::ENODEV)),
    }
}
