//! The attach plan: which selected tracer is traced how on this kernel.
//!
//! Tracepoint leaves attach as raw tracepoints. Function leaves get, per
//! kernel, the best backend that works: fentry/fexit (BTF trampolines) when
//! the kernel loads tracing programs and has the function in its BTF, else a
//! kprobe/kretprobe on the function's symbol (also its `.isra.0`-style
//! variants). Program slots are assigned by the loader, which may still fall
//! back from fentry to kprobe when a load fails.

use nettrace_common::{Leaf, LeafKind, Role};

use crate::slots::{kprobe_program, Family, Slot};
use crate::system::{FunctionSymbol, Kernel};

/// In `auto`, selections with more kernel functions than this use kprobes
/// (attached all at once with a kprobe-multi link) rather than one fentry
/// program each: every fentry program is verified and attached on its own,
/// which took 45 s for 79 functions on a 6.12 guest under emulation.
pub const AUTO_FENTRY_MAX: usize = 8;

/// Which backend to use for kernel-function leaves (`--backend`, one of
/// the shared options).
pub use nettrace_common::Backend as BackendChoice;

/// How one tracer is traced (or why it is not).
#[derive(Debug, Clone)]
pub enum Backend {
    /// A raw tracepoint program in `slot`, attached to `event`.
    Tracepoint {
        /// `category/event`, for messages.
        tp: String,
        /// The event name the raw tracepoint attaches to.
        event: String,
        /// The entry program.
        slot: Slot,
        /// Attached as tp_btf (BTF-typed arguments, direct loads) rather
        /// than as a raw tracepoint; set by the loader.
        typed: bool,
    },
    /// A kernel function, to be attached by the loader.
    Function(FunctionTarget),
    /// An fentry program (and an fexit one for return values).
    Fentry {
        /// The function, as named in BTF.
        func: String,
        /// Whether an fexit program traces its returns.
        ret: bool,
    },
    /// The shared kprobe program (and a kretprobe for return values).
    Kprobe {
        /// The symbol attached to (may be a `.isra.0` variant).
        symbol: String,
        /// Attached through a kprobe-multi link (else one kprobe of its own).
        multi: bool,
        /// Whether a return probe traces its returns.
        ret: bool,
    },
    /// Not traceable here, and why.
    Unavailable(String),
}

/// What the loader needs to attach a function leaf.
#[derive(Debug, Clone)]
pub struct FunctionTarget {
    /// The function name in the tracer tree.
    pub func: String,
    /// Try fentry first (the function is in BTF and tracing programs load).
    pub fentry: Option<Family>,
    /// The kprobe to use or fall back to, and its single-probe entry program.
    pub kprobe: Option<(FunctionSymbol, String)>,
    /// Whether a return probe is needed (`--ret`, or a clone role).
    pub want_ret: bool,
    /// Why neither backend is possible, if so.
    pub why_not: String,
}

/// A selected tracer with its id (the index in [`Plan::tracers`]).
#[derive(Debug, Clone)]
pub struct PlannedTracer {
    /// Display name.
    pub name: String,
    /// Group shown by `--detail`.
    pub group: String,
    /// Role in the skb's life.
    pub role: Role,
    /// Skb argument index.
    pub skb_arg: u8,
    /// Socket argument index, if any.
    pub sk_arg: Option<u8>,
    /// Device argument index, if any.
    pub dev_arg: Option<u8>,
    /// Whether to collect a kernel stack for its events.
    pub stack: bool,
    /// How it is traced.
    pub backend: Backend,
}

impl PlannedTracer {
    /// Whether a return probe will emit this tracer's events a second time.
    pub fn has_ret(&self) -> bool {
        matches!(
            &self.backend,
            Backend::Fentry { ret: true, .. } | Backend::Kprobe { ret: true, .. }
        )
    }
}

/// All selected tracers, in tree order.
#[derive(Debug, Default)]
pub struct Plan {
    /// Indexed by tracer id.
    pub tracers: Vec<PlannedTracer>,
    /// Attach tracepoints as raw tracepoints only, never tp_btf (`--raw-tp`).
    pub raw_tracepoints: bool,
    /// Read skbs and headers with `bpf_probe_read_kernel` even where the
    /// kernel has `bpf_rdonly_cast` (`--probe-read`).
    pub probe_read: bool,
    /// One kprobe per function even where kprobe-multi links work
    /// (`--no-kprobe-multi`).
    pub single_kprobes: bool,
}

/// How `leaf` would be traced on `kernel` with `choice`, for `-t ?` and
/// the plan; Err says why it can't.
pub fn backend_status(
    kernel: &Kernel,
    leaf: &Leaf,
    choice: BackendChoice,
) -> Result<String, String> {
    match &leaf.kind {
        LeafKind::Tracepoint { category, event } => {
            match kernel.has_tracepoint(category, event) {
                Some(true) => {}
                Some(false) => {
                    return Err(format!(
                        "tracepoint {category}/{event} does not exist on this kernel"
                    ))
                }
                None => return Err("tracefs is not available (run as root to probe)".to_string()),
            }
            tracepoint_family(leaf).map(|_| format!("tracepoint {category}/{event}"))
        }
        LeafKind::Function { func } => {
            let target = function_target(kernel, func, leaf.skb_arg, false, choice);
            match (&target.fentry, &target.kprobe) {
                (Some(_), _) => Ok(format!("fentry {func}")),
                (None, Some((sym, _))) => Ok(format!("kprobe {}", sym.symbol)),
                (None, None) => Err(target.why_not),
            }
        }
    }
}

fn tracepoint_family(leaf: &Leaf) -> Result<Family, String> {
    if leaf.role == Role::Drop {
        return Ok(Family::Drop);
    }
    let max = leaf
        .skb_arg
        .max(leaf.sk_arg.unwrap_or(0))
        .max(leaf.dev_arg.unwrap_or(0));
    Family::for_max_arg(max).ok_or_else(|| {
        format!("argument index {max} is beyond the 4 that tracepoint programs read")
    })
}

/// Works out which function backends can trace `func` here.
fn function_target(
    kernel: &Kernel,
    func: &str,
    skb_arg: u8,
    want_ret: bool,
    choice: BackendChoice,
) -> FunctionTarget {
    let mut reasons = Vec::new();
    let fentry = match choice {
        BackendChoice::Kprobe | BackendChoice::Tracepoint => None,
        BackendChoice::Auto | BackendChoice::Fentry => {
            if !kernel.fentry {
                reasons.push("the kernel refuses fentry programs".to_string());
                None
            } else if !kernel.has_btf_function(func) {
                reasons.push(format!(
                    "{func} is not in the kernel's BTF (inlined, renamed or in a module)"
                ));
                None
            } else if skb_arg > 4 {
                reasons.push(format!(
                    "skb argument {skb_arg} is beyond the 5 that fentry programs read"
                ));
                None
            } else {
                Some(Family::Fentry(skb_arg))
            }
        }
    };
    let kprobe = match choice {
        BackendChoice::Fentry | BackendChoice::Tracepoint => None,
        BackendChoice::Auto | BackendChoice::Kprobe => {
            if !kernel.kprobes {
                reasons.push("this kernel has no kprobes, CONFIG_KPROBES is off".to_string());
                None
            } else {
                match (kernel.function_symbol(func), kprobe_program(skb_arg)) {
                    (Some(sym), Some(program)) => Some((sym.clone(), program)),
                    (None, _) => {
                        reasons.push(format!(
                            "{func} is not a kernel symbol here (inlined or absent)"
                        ));
                        None
                    }
                    (_, None) => {
                        reasons.push(format!(
                            "skb argument {skb_arg} is beyond the 5 that kprobe programs read"
                        ));
                        None
                    }
                }
            }
        }
    };
    if choice == BackendChoice::Tracepoint {
        reasons.push("--backend tracepoint leaves kernel functions out".to_string());
    }
    reasons.dedup();
    FunctionTarget {
        func: func.to_string(),
        fentry,
        kprobe,
        want_ret,
        why_not: reasons.join("; "),
    }
}

impl Plan {
    /// Builds the plan for `leaves`. `stack` says which get stacks; `ret`
    /// asks for return values of every function leaf.
    pub fn build(
        kernel: &Kernel,
        leaves: &[&Leaf],
        choice: BackendChoice,
        ret: bool,
        stack: impl Fn(&Leaf) -> bool,
    ) -> Plan {
        let mut slots = crate::slots::SlotAllocator::default();
        let functions = leaves
            .iter()
            .filter(|l| matches!(l.kind, LeafKind::Function { .. }))
            .count();
        let choice =
            if choice == BackendChoice::Auto && functions > AUTO_FENTRY_MAX && kernel.kprobes {
                BackendChoice::Kprobe
            } else {
                choice
            };
        let tracers = leaves
            .iter()
            .map(|leaf| {
                let backend = match &leaf.kind {
                    LeafKind::Tracepoint { category, event } => {
                        match backend_status(kernel, leaf, choice)
                            .and_then(|_| tracepoint_family(leaf))
                        {
                            Err(why) => Backend::Unavailable(why),
                            Ok(family) => match slots.take(family) {
                                Some(slot) => Backend::Tracepoint {
                                    tp: format!("{category}/{event}"),
                                    event: event.clone(),
                                    slot,
                                    typed: false,
                                },
                                None => Backend::Unavailable(
                                    "no free tracepoint program slot left".to_string(),
                                ),
                            },
                        }
                    }
                    LeafKind::Function { func } => {
                        let want_ret = ret || leaf.role == Role::Clone;
                        let target = function_target(kernel, func, leaf.skb_arg, want_ret, choice);
                        if target.fentry.is_none() && target.kprobe.is_none() {
                            Backend::Unavailable(target.why_not)
                        } else {
                            Backend::Function(target)
                        }
                    }
                };
                PlannedTracer {
                    name: leaf.name.clone(),
                    group: leaf.group.clone(),
                    role: leaf.role,
                    skb_arg: leaf.skb_arg,
                    sk_arg: leaf.sk_arg,
                    dev_arg: leaf.dev_arg,
                    stack: stack(leaf),
                    backend,
                }
            })
            .collect();
        Plan {
            tracers,
            raw_tracepoints: false,
            probe_read: false,
            single_kprobes: false,
        }
    }

    /// Tracers that are (or will be) attached, with their ids.
    pub fn attachable(&self) -> impl Iterator<Item = (u32, &PlannedTracer)> {
        self.tracers
            .iter()
            .enumerate()
            .filter(|(_, t)| !matches!(t.backend, Backend::Unavailable(_)))
            .map(|(i, t)| (i as u32, t))
    }
}
