//! What the running kernel offers, and the preparations it needs (tracefs).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::programs::ProgramType;
use aya::Btf;
use aya_obj::btf::BtfKind;
use nettrace_common::Kallsyms;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The time of clock `id` (`libc::CLOCK_MONOTONIC`, the clock of the
/// events' timestamps, or `CLOCK_REALTIME`) in ns; 0 if unreadable.
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec to write to.
    if unsafe { libc::clock_gettime(id, &mut t) } != 0 {
        return 0;
    }
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

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

/// Where a kernel function can be probed.
#[derive(Debug, Clone)]
pub struct FunctionSymbol {
    /// The symbol: the function's name or a variant such as `ip_rcv_core.isra.0`.
    pub symbol: String,
    /// Its address.
    pub addr: u64,
    /// Whether it belongs to a module rather than the core kernel.
    pub in_module: bool,
}

/// Kernel tracing facilities, probed once.
pub struct Kernel {
    /// Where tracefs is mounted, when it could be found or mounted.
    pub tracefs: Option<PathBuf>,
    /// Whether the kernel has kprobes (CONFIG_KPROBES).
    pub kprobes: bool,
    /// Whether the kernel loads BTF tracing programs (fentry/fexit).
    pub fentry: bool,
    /// The kernel's BTF, when readable.
    pub btf: Option<Btf>,
    /// Symbols of the functions asked for at probe time (see [`Kernel::probe`]).
    symbols: HashMap<String, FunctionSymbol>,
    /// The parsed `/proc/kallsyms`, when the probe had to read it.
    kallsyms: Option<Kallsyms>,
}

/// Which kernel-function attach types this kernel offers (cheap: no BTF
/// parsing, no kallsyms).
#[derive(Debug, Clone, Copy)]
pub struct Backends {
    /// kprobes and kretprobes.
    pub kprobes: bool,
    /// fentry and fexit.
    pub fentry: bool,
}

impl Backends {
    /// Asks the kernel.
    pub fn probe() -> Backends {
        let root = nix::unistd::geteuid().is_root();
        Backends {
            // The kprobe PMU exists exactly when the kernel can create kprobes.
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            // An error (EPERM on a kernel that refuses them) means no fentry.
            fentry: root && aya::sys::is_program_supported(ProgramType::Tracing).unwrap_or(false),
        }
    }
}

impl Kernel {
    /// Probes the running kernel; `functions` are the kernel functions the
    /// caller may trace (their symbols are looked up once, in kallsyms).
    /// Without root, tracefs and fentry support may stay unknown.
    pub fn probe(functions: &[&str]) -> Kernel {
        let root = nix::unistd::geteuid().is_root();
        let tracefs = if root {
            tracefs().ok()
        } else {
            [TRACEFS, DEBUGFS_TRACING]
                .iter()
                .map(PathBuf::from)
                .find(|d| d.join("events").is_dir())
        };
        let Backends { kprobes, fentry } = Backends::probe();
        // Parsing the BTF and reading kallsyms are the slow parts (seconds
        // under emulation): do them side by side.
        let read_symbols = || -> (Option<Kallsyms>, HashMap<String, FunctionSymbol>) {
            if functions.is_empty() || !kprobes {
                return (None, HashMap::new());
            }
            let Ok(text) = fs::read_to_string("/proc/kallsyms") else {
                return (None, HashMap::new());
            };
            let kallsyms = Kallsyms::parse(&text);
            let symbols = kallsyms
                .functions(functions)
                .into_iter()
                .map(|(func, (symbol, addr))| {
                    let in_module = kallsyms.resolve(addr).is_some_and(|s| s.module.is_some());
                    (
                        func,
                        FunctionSymbol {
                            symbol,
                            addr,
                            in_module,
                        },
                    )
                })
                .collect();
            (Some(kallsyms), symbols)
        };
        let (btf, (kallsyms, symbols)) = std::thread::scope(|s| {
            let btf = s.spawn(|| Btf::from_sys_fs().ok());
            let symbols = read_symbols();
            (btf.join().ok().flatten(), symbols)
        });
        Kernel {
            tracefs,
            kprobes,
            fentry,
            btf,
            symbols,
            kallsyms,
        }
    }

    /// Hands over the `/proc/kallsyms` table the probe read, if it read one,
    /// so that nobody reads and parses it a second time.
    pub fn take_kallsyms(&mut self) -> Option<Kallsyms> {
        self.kallsyms.take()
    }

    /// Whether `func` is a function in the kernel's BTF (fentry needs it).
    pub fn has_btf_function(&self, func: &str) -> bool {
        self.btf
            .as_ref()
            .is_some_and(|btf| btf.id_by_type_name_kind(func, BtfKind::Func).is_ok())
    }

    /// The symbol (possibly a compiler-renamed variant) of `func`.
    pub fn function_symbol(&self, func: &str) -> Option<&FunctionSymbol> {
        self.symbols.get(func)
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
}
