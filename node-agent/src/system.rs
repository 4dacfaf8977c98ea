//! What the running kernel offers, and the preparations it needs (tracefs).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Fails with an actionable message unless we run as root.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "nettrace loads eBPF programs and needs root (CAP_BPF, CAP_PERFMON): run it with sudo"
        );
    }
    Ok(())
}

/// Fails unless the kernel exposes its BTF, which CO-RE relocation needs.
pub fn require_btf() -> Result<()> {
    if !Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing): nettrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

/// The tracefs mount point, mounting tracefs first when nothing provides it.
pub fn tracefs() -> Result<PathBuf> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!("tracefs is not mounted and mounting it on {TRACEFS} failed; mount it with `mount -t tracefs nodev {TRACEFS}`")
    })?;
    Ok(PathBuf::from(TRACEFS))
}

/// Kernel tracing facilities, probed once.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Where tracefs is mounted, when it could be found or mounted.
    pub tracefs: Option<PathBuf>,
    /// Whether the kernel has kprobes (CONFIG_KPROBES).
    pub kprobes: bool,
}

impl Kernel {
    /// Probes the running kernel. Without root, tracefs may stay unknown.
    pub fn probe() -> Kernel {
        let tracefs = if nix::unistd::geteuid().is_root() {
            tracefs().ok()
        } else {
            [TRACEFS, DEBUGFS_TRACING]
                .iter()
                .map(PathBuf::from)
                .find(|d| d.join("events").is_dir())
        };
        Kernel {
            tracefs,
            // The kprobe PMU exists exactly when the kernel can create kprobes.
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
        }
    }

    /// Whether tracepoint `category/event` exists on this kernel.
    pub fn has_tracepoint(&self, category: &str, event: &str) -> Option<bool> {
        let dir = self.tracefs.as_ref()?;
        Some(dir.join("events").join(category).join(event).is_dir())
    }

    /// The `format` file text of a tracepoint, if readable.
    pub fn tracepoint_format(&self, category: &str, event: &str) -> Option<String> {
        let dir = self.tracefs.as_ref()?;
        fs::read_to_string(dir.join("events").join(category).join(event).join("format")).ok()
    }

    /// Why kernel functions cannot be traced on this kernel.
    pub fn function_unavailable_reason(&self) -> &'static str {
        if self.kprobes {
            "kernel-function tracing (kprobe/fentry backends) is not part of this build"
        } else {
            "this kernel has no kprobes, CONFIG_KPROBES is off"
        }
    }
}
