//! Loading the eBPF object and attaching the planned programs with aya.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader, Pod};
use nettrace_common::filter::FILTER_SIZE;
use nettrace_common::{Filter, Role};

use crate::kfunc;
use crate::kprobe_multi::{self, MultiLoader};
use crate::plan::{Backend, FunctionTarget, Plan, PlannedTracer};
use crate::slots::{Family, Slot, SlotAllocator};

/// The filter bytes (`struct nt_filter`), as a global aya can write.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct RawFilter(pub(crate) [u8; FILTER_SIZE]);
// SAFETY: a plain byte array, no padding, valid for any bit pattern.
unsafe impl Pod for RawFilter {}

/// `struct nt_slot` of nt_abi.h (checked against the object's BTF by the
/// test `slots::abi`).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct RawSlot {
    pub(crate) tracer_id: u32,
    pub(crate) skb_arg: u8,
    pub(crate) sk_arg: u8,
    pub(crate) role: u8,
    pub(crate) stack: u8,
    pub(crate) enabled: u8,
    pub(crate) ret: u8,
    pub(crate) dev_arg: u8,
    pub(crate) pad: u8,
}
// SAFETY: repr(C) with explicit padding fields; any bit pattern is valid.
unsafe impl Pod for RawSlot {}

/// `nt_slot.sk_arg`/`dev_arg` when there is no such argument (`NT_ARG_NONE`).
pub(crate) const ARG_NONE: u8 = 0xff;

/// Values of `nt_slot.role` (`enum nt_role`).
pub(crate) mod role {
    /// `NT_ROLE_NONE`: the skb passes through.
    pub const NONE: u8 = 0;
    /// `NT_ROLE_CONSUME`: the skb ends here normally.
    pub const CONSUME: u8 = 1;
    /// `NT_ROLE_DROP`: the skb is dropped here.
    pub const DROP: u8 = 2;
    /// `NT_ROLE_CLONE`: returns a clone of the skb.
    pub const CLONE: u8 = 3;
}

/// The `nt_slot.role` of a tracer's role.
pub(crate) fn role_code(r: Role) -> u8 {
    match r {
        Role::Consume => role::CONSUME,
        Role::Drop => role::DROP,
        Role::Clone => role::CLONE,
        Role::Normal => role::NONE,
    }
}

impl RawSlot {
    pub(crate) fn new(id: u32, t: &PlannedTracer, ret: bool) -> RawSlot {
        RawSlot {
            tracer_id: id,
            skb_arg: t.skb_arg,
            sk_arg: t.sk_arg.unwrap_or(ARG_NONE),
            role: role_code(t.role),
            stack: u8::from(t.stack),
            enabled: 1,
            ret: u8::from(ret),
            dev_arg: t.dev_arg.unwrap_or(ARG_NONE),
            pad: 0,
        }
    }
}

/// Indexes of the `nt_stats` counters (`enum nt_stat`, checked against the
/// object's BTF by the test `slots::abi`).
pub mod stat {
    /// Events that passed the filter.
    pub const MATCHED: u32 = 0;
    /// Events lost because the ring buffer was full.
    pub const RB_FULL: u32 = 1;
    /// skbs skb-mode could not remember.
    pub const SKB_MAP_FULL: u32 = 2;
    /// Stacks that could not be collected.
    pub const STACK_FAIL: u32 = 3;
    /// Events suppressed by the rate limit.
    pub const RATE_LIMITED: u32 = 4;
    /// Events sent without the packet bytes `--pcap` asked for.
    pub const BYTES_FAIL: u32 = 5;
}

/// One attached tracer.
#[derive(Debug, Clone)]
pub struct Attached {
    /// Tracer id.
    pub id: u32,
    /// Kernel program id (as `bpftool prog list` shows it).
    pub prog_id: u32,
}

/// The loaded object and what got attached. Dropping it detaches and unloads
/// everything (programs live only as long as their file descriptors).
pub struct Loaded {
    /// The aya object (programs and remaining maps).
    pub ebpf: Ebpf,
    /// Tracers attached, with their program ids.
    pub attached: Vec<Attached>,
    /// kprobe-multi programs and links, held open: closing them detaches.
    #[allow(dead_code)]
    links: Vec<OwnedFd>,
    /// How long loading and attaching took.
    pub elapsed: Duration,
    /// How long each phase of it took (object, tracepoints and fentry, kprobes).
    pub phases: Vec<(&'static str, Duration)>,
    /// Whether the programs read skbs and headers through `bpf_rdonly_cast`
    /// (else with `bpf_probe_read_kernel`).
    pub cast: bool,
}

/// Bounds on what tracing may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Size of the ring buffer in bytes.
    pub ringbuf_bytes: u32,
    /// Events per second allowed on the whole machine; 0 for no limit.
    pub rate: u32,
}

/// Loads the object with `filter` and attaches every attachable tracer of
/// `plan`, updating the plan with the backend each function leaf got.
/// `scope` fills the scope map (keys `netns << 32 | ifindex`, ifindex 0 for
/// a whole namespace) before anything is attached.
pub fn load_and_attach(
    plan: &mut Plan,
    btf: &Btf,
    filter: &Filter,
    limits: Limits,
    scope: &[u64],
) -> Result<Loaded> {
    let started = Instant::now();
    let raw = RawFilter(filter.encode());
    let ringbuf_bytes = limits.ringbuf_bytes;
    let mut linked = kfunc::link(nettrace_ebpf::object(), btf, !plan.probe_read)?;
    crate::line_info::drop_line_info(&mut linked.object)?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .override_global("nt_cfg", &raw, true)
        .override_global("nt_rate", &limits.rate, true)
        .override_global("nt_kfuncs", &linked.kfuncs, true)
        .map_max_entries("nt_events", ringbuf_bytes)
        .load(&linked.object)
        .context("loading the eBPF object failed")?;
    fill_scope(&mut ebpf, scope)?;
    let mut phases = vec![("object", started.elapsed())];
    let preloaded = preload_tracepoints(&mut ebpf, plan, btf);

    let mut attached = Vec::new();
    let mut functions = FunctionAttacher::default();
    for id in 0..plan.tracers.len() {
        let id32 = id as u32;
        let tracer = plan.tracers[id].clone();
        let outcome = match &tracer.backend {
            Backend::Tracepoint {
                tp, event, slot, ..
            } => match preloaded.get(&slot.program) {
                Some(Ok(typed)) => {
                    let typed = *typed;
                    write_slot(&mut ebpf, slot.index, RawSlot::new(id32, &tracer, false))
                        .and_then(|()| attach_tracepoint(&mut ebpf, slot, &tracer, event, typed))
                        .map(|prog| {
                            let backend = Backend::Tracepoint {
                                tp: tp.clone(),
                                event: event.clone(),
                                slot: slot.clone(),
                                typed,
                            };
                            (prog, Some(backend))
                        })
                }
                Some(Err(e)) => Err(anyhow!("loading {}: {e}", slot.program)),
                None => Err(anyhow!("{} was not loaded", slot.program)),
            },
            Backend::Function(target) => {
                match functions.attach(&mut ebpf, btf, id32, &tracer, target) {
                    Ok(Some(done)) => Ok(done),
                    // Queued for the kprobe pass below.
                    Ok(None) => continue,
                    Err(e) => Err(e),
                }
            }
            _ => continue,
        };
        match outcome {
            Ok((prog_id, backend)) => {
                if let Some(b) = backend {
                    plan.tracers[id].backend = b;
                }
                attached.push(Attached { id: id32, prog_id });
            }
            Err(e) => {
                plan.tracers[id].backend = Backend::Unavailable(format!("attaching failed: {e:#}"))
            }
        }
    }
    let image = Image {
        object: &linked.object,
        globals: [
            ("nt_cfg", &raw.0),
            ("nt_rate", &limits.rate.to_ne_bytes()),
            ("nt_kfuncs", &linked.kfuncs.to_ne_bytes()),
        ],
    };
    phases.push(("tracepoints and fentry", started.elapsed()));
    let links = functions.attach_kprobes(&mut ebpf, btf, &image, plan, &mut attached);
    phases.push(("kprobes", started.elapsed()));
    if filter.skb_mode || filter.follow {
        attach_forget(&mut ebpf)?;
    }
    Ok(Loaded {
        ebpf,
        attached,
        links,
        elapsed: started.elapsed(),
        phases: phases
            .windows(2)
            .map(|w| (w[1].0, w[1].1 - w[0].1))
            .chain(phases.first().copied())
            .collect(),
        cast: linked.cast(),
    })
}

/// What the kprobe-multi loader needs to load programs the way aya did: the
/// linked object and the globals given to aya.
pub(crate) struct Image<'a> {
    pub(crate) object: &'a [u8],
    pub(crate) globals: [(&'a str, &'a [u8]); 3],
}

/// The tracepoints where skbs are freed, where remembered ones are forgotten.
const FREEING_TRACEPOINTS: [&str; 2] = ["consume_skb", "kfree_skb"];

/// Attaches `nt_forget` to the freeing tracepoints (after the tracers).
fn attach_forget(ebpf: &mut Ebpf) -> Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut("nt_forget")
        .ok_or_else(|| anyhow!("program nt_forget missing from the eBPF object"))?
        .try_into()?;
    prog.load().context("loading nt_forget")?;
    for event in FREEING_TRACEPOINTS {
        prog.attach(event)
            .with_context(|| format!("attaching nt_forget to raw tracepoint {event}"))?;
    }
    Ok(())
}

fn fill_scope(ebpf: &mut Ebpf, scope: &[u64]) -> Result<()> {
    if scope.is_empty() {
        return Ok(());
    }
    let map = ebpf
        .map_mut("nt_scope")
        .ok_or_else(|| anyhow!("the eBPF object has no nt_scope map"))?;
    let mut keys: BpfHashMap<&mut MapData, u64, u8> = BpfHashMap::try_from(map)?;
    for key in scope {
        keys.insert(key, 1, 0)
            .with_context(|| format!("adding {key:#x} to the scope map"))?;
    }
    Ok(())
}

fn write_slot(ebpf: &mut Ebpf, index: u32, raw: RawSlot) -> Result<()> {
    let map = ebpf
        .map_mut("nt_slots")
        .ok_or_else(|| anyhow!("the eBPF object has no nt_slots map"))?;
    let mut slots: Array<&mut MapData, RawSlot> = Array::try_from(map)?;
    slots
        .set(index, raw, 0)
        .context("writing the slot configuration")
}

/// Keys a kernel function's configuration by its address in `nt_funcs`, where
/// the kprobe and kprobe-multi programs find it with `bpf_get_func_ip`.
/// Kernels with IBT report the address after the ENDBR (+4): both are keyed,
/// so one lookup finds it.
fn write_func(ebpf: &mut Ebpf, addr: u64, raw: RawSlot) -> Result<()> {
    let map = ebpf
        .map_mut("nt_funcs")
        .ok_or_else(|| anyhow!("the eBPF object has no nt_funcs map"))?;
    let mut funcs: BpfHashMap<&mut MapData, u64, RawSlot> = BpfHashMap::try_from(map)?;
    for key in [addr, addr + 4] {
        funcs.insert(key, raw, 0).context("writing nt_funcs")?;
    }
    Ok(())
}

/// The tp_btf twin of a raw tracepoint slot program (same slot, typed body):
/// `nt_a<max>_<n>` becomes `nt_bt_a<max>_s<skb_arg>_<n>`, or
/// `nt_bt_a<max>_s<skb_arg>d_<n>` when the tracer's device is argument `<max>`;
/// `nt_drop_<n>` becomes `nt_bt_drop_<n>`. A device at another position has
/// no twin (the raw program serves it).
fn typed_program(raw: &str, t: &PlannedTracer) -> Option<String> {
    let rest = raw.trim_start_matches("nt_");
    match rest.split_once('_') {
        Some((family, n)) if family.starts_with('a') => {
            let max: u8 = family[1..].parse().ok()?;
            let skb = t.skb_arg;
            match t.dev_arg {
                None => Some(format!("nt_bt_{family}_s{skb}_{n}")),
                Some(d) if d == max && skb < max => Some(format!("nt_bt_{family}_s{skb}d_{n}")),
                Some(_) => None,
            }
        }
        _ => Some(format!("nt_bt_{rest}")),
    }
}

/// A tracepoint program pair to load: raw program name, event, the tp_btf
/// twin and the raw program.
type PreloadJob<'p> = (
    String,
    String,
    Option<&'p mut Program>,
    Option<&'p mut Program>,
);

/// Loads (has the kernel verify) the planned tracepoint programs on two
/// threads; verification is most of the cost of attaching a tracepoint.
/// Each tracer gets its tp_btf program (typed, direct loads) where the kernel
/// accepts it, else its raw tracepoint program. Returns, per raw program
/// name, whether the typed one loaded, or why neither did.
fn preload_tracepoints(
    ebpf: &mut Ebpf,
    plan: &Plan,
    btf: &Btf,
) -> HashMap<String, Result<bool, String>> {
    let wanted: HashMap<String, String> = plan
        .tracers
        .iter()
        .filter_map(|t| match &t.backend {
            Backend::Tracepoint { slot, event, .. } => Some((slot.program.clone(), event.clone())),
            _ => None,
        })
        .collect();
    let typed_names: HashMap<String, String> = plan
        .tracers
        .iter()
        .filter_map(|t| match &t.backend {
            Backend::Tracepoint { slot, .. } => {
                Some((typed_program(&slot.program, t)?, slot.program.clone()))
            }
            _ => None,
        })
        .collect();
    let mut raw_progs: HashMap<String, &mut Program> = HashMap::new();
    let mut typed_progs: HashMap<String, &mut Program> = HashMap::new();
    for (name, p) in ebpf.programs_mut() {
        if wanted.contains_key(name) {
            raw_progs.insert(name.to_string(), p);
        } else if let Some(raw) = typed_names.get(name) {
            typed_progs.insert(raw.clone(), p);
        }
    }
    let mut jobs: Vec<PreloadJob> = raw_progs
        .into_iter()
        .map(|(raw, p)| {
            let event = wanted[&raw].clone();
            let typed = typed_progs.remove(&raw).filter(|_| !plan.raw_tracepoints);
            (raw, event, typed, Some(p))
        })
        .collect();
    let load_all = |jobs: &mut [PreloadJob]| -> Vec<(String, Result<bool, String>)> {
        jobs.iter_mut()
            .map(|(raw, event, typed, plain)| {
                let typed_err = match typed.as_deref_mut().map(<&mut BtfTracePoint>::try_from) {
                    Some(Ok(p)) => match p.load(event, btf) {
                        Ok(()) => return (raw.clone(), Ok(true)),
                        Err(e) => format!("tp_btf: {e:#}"),
                    },
                    _ => "tp_btf not tried".to_string(),
                };
                let res = match plain.as_deref_mut().map(<&mut RawTracePoint>::try_from) {
                    Some(Ok(p)) => p
                        .load()
                        .map(|()| false)
                        .map_err(|e| format!("{e:#} (and {typed_err})")),
                    _ => Err(format!("no raw tracepoint program (and {typed_err})")),
                };
                (raw.clone(), res)
            })
            .collect()
    };
    let half = jobs.len() / 2;
    let (first, second) = jobs.split_at_mut(half);
    std::thread::scope(|s| {
        let other = s.spawn(|| load_all(first));
        let mut done = load_all(second);
        done.extend(other.join().unwrap_or_default());
        done.into_iter().collect()
    })
}

/// Attaches a preloaded tracepoint program (`typed`: its tp_btf twin).
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    slot: &Slot,
    tracer: &PlannedTracer,
    event: &str,
    typed: bool,
) -> Result<u32> {
    if typed {
        let name = typed_program(&slot.program, tracer)
            .ok_or_else(|| anyhow!("{} has no tp_btf twin", slot.program))?;
        let prog: &mut BtfTracePoint = program(ebpf, &name)?.try_into()?;
        prog.attach()
            .with_context(|| format!("attaching tp_btf to {event}"))?;
        return Ok(prog.info().map(|i| i.id()).unwrap_or(0));
    }
    let prog: &mut RawTracePoint = program(ebpf, &slot.program)?.try_into()?;
    prog.attach(event)
        .with_context(|| format!("attaching to raw tracepoint {event}"))?;
    Ok(prog.info().map(|i| i.id()).unwrap_or(0))
}

/// Attaches function leaves: fentry first where planned, falling back to
/// kprobe per function; remembers what was learnt on the way.
#[derive(Default)]
struct FunctionAttacher {
    slots: SlotAllocator,
    /// Set once the kernel refused an fentry load: no more fentry tries.
    fentry_refused: Option<String>,
    /// kprobe entry programs already loaded, with their program ids.
    kprobe_loaded: HashMap<String, u32>,
    /// Function leaves left for kprobes, attached together at the end.
    kprobe_jobs: Vec<KprobeJob>,
}

/// A function leaf waiting for its kprobe.
#[derive(Clone)]
struct KprobeJob {
    id: u32,
    tracer: PlannedTracer,
    target: FunctionTarget,
    /// Why fentry was not used, when it was tried.
    fentry_error: Option<String>,
}

impl FunctionAttacher {
    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        id: u32,
        t: &PlannedTracer,
        target: &FunctionTarget,
    ) -> Result<Option<(u32, Option<Backend>)>> {
        let mut fentry_error = None;
        if let (Some(family), None) = (target.fentry, &self.fentry_refused) {
            match self.attach_fentry(ebpf, btf, id, t, target, family) {
                Ok(done) => return Ok(Some(done)),
                Err(e) => {
                    if let Some(ProgramError::LoadError { .. }) = e.downcast_ref::<ProgramError>() {
                        self.fentry_refused = Some(format!("{e:#}"));
                    }
                    fentry_error = Some(format!("fentry: {e:#}"));
                }
            }
        }
        if target.kprobe.is_some() {
            self.kprobe_jobs.push(KprobeJob {
                id,
                tracer: t.clone(),
                target: target.clone(),
                fentry_error,
            });
            return Ok(None);
        }
        Err(anyhow!(fentry_error
            .or_else(|| self.fentry_refused.clone())
            .unwrap_or_else(|| target.why_not.clone())))
    }

    /// Attaches the queued kprobe leaves: core-kernel functions through one
    /// kprobe-multi link per skb-argument position (and one for returns),
    /// the rest (module functions on kernels whose kprobe-multi can't see
    /// them, when a link fails, or with `--no-kprobe-multi`) one kprobe
    /// each. Returns the fds that keep the kprobe-multi programs and links
    /// alive.
    fn attach_kprobes(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        image: &Image<'_>,
        plan: &mut Plan,
        attached: &mut Vec<Attached>,
    ) -> Vec<OwnedFd> {
        let jobs = std::mem::take(&mut self.kprobe_jobs);
        let mut fds = Vec::new();
        let mut single = Vec::new();
        let mut multi = Vec::new();
        for job in jobs {
            match &job.target.kprobe {
                Some(_) if !plan.single_kprobes => multi.push(job),
                _ => single.push(job),
            }
        }
        if !multi.is_empty() {
            let (done, left, error) = self.attach_multi(ebpf, btf, image, &multi, &mut fds);
            for (i, prog_id, ret) in done {
                let job = &multi[i];
                let symbol = job
                    .target
                    .kprobe
                    .as_ref()
                    .map(|(s, _)| s.symbol.clone())
                    .unwrap_or_default();
                plan.tracers[job.id as usize].backend = Backend::Kprobe {
                    symbol,
                    multi: true,
                    ret,
                };
                attached.push(Attached {
                    id: job.id,
                    prog_id,
                });
            }
            if let Some(e) = error {
                let unsupported = e
                    .chain()
                    .filter_map(|c| c.downcast_ref::<std::io::Error>())
                    .any(|io| io.raw_os_error() == Some(libc::EOPNOTSUPP));
                if unsupported {
                    eprintln!(
                        "nettrace: this kernel has no kprobe-multi links (CONFIG_FPROBE is off); attaching {} kprobes one by one (slower)",
                        left.len()
                    );
                } else {
                    eprintln!(
                        "nettrace: a kprobe-multi link failed ({e:#}); attaching {} kprobes one by one (slower)",
                        left.len()
                    );
                }
            }
            single.extend(left.into_iter().map(|i| multi[i].clone()));
        }
        for job in single {
            let Some((sym, program)) = job.target.kprobe.clone() else {
                continue;
            };
            match self.attach_kprobe(
                ebpf,
                job.id,
                &job.tracer,
                &job.target,
                &sym.symbol,
                sym.addr,
                &program,
            ) {
                Ok((prog_id, backend)) => {
                    if let Some(b) = backend {
                        plan.tracers[job.id as usize].backend = b;
                    }
                    attached.push(Attached {
                        id: job.id,
                        prog_id,
                    });
                }
                Err(e) => {
                    let why = match &job.fentry_error {
                        Some(f) => format!("{f}; kprobe: {e:#}"),
                        None => format!("kprobe: {e:#}"),
                    };
                    plan.tracers[job.id as usize].backend =
                        Backend::Unavailable(format!("attaching failed: {why}"));
                }
            }
        }
        fds
    }

    /// The kprobe-multi part of [`FunctionAttacher::attach_kprobes`]:
    /// returns (job index, program id, return traced) of what attached, the
    /// indexes of the jobs left for single kprobes, and the first error.
    #[allow(clippy::type_complexity)]
    fn attach_multi(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        image: &Image<'_>,
        jobs: &[KprobeJob],
        fds: &mut Vec<OwnedFd>,
    ) -> (Vec<(usize, u32, bool)>, Vec<usize>, Option<anyhow::Error>) {
        let all: Vec<usize> = (0..jobs.len()).collect();
        let loader = match MultiLoader::new(ebpf, btf, image) {
            Ok(l) => l,
            Err(e) => return (Vec::new(), all, Some(e)),
        };
        let symbol = |job: &KprobeJob| -> CString {
            let s = job
                .target
                .kprobe
                .as_ref()
                .map(|(s, _)| s.symbol.as_str())
                .unwrap_or("");
            CString::new(s).unwrap_or_default()
        };
        let syms_of =
            |set: &[usize]| -> Vec<CString> { set.iter().map(|&i| symbol(&jobs[i])).collect() };
        // One link for `set`; when that fails and module functions are in it
        // (kprobe-multi reaches modules only from Linux 6.2 on), one for the
        // core-kernel functions alone. Returns what got attached.
        let link_set = |name: &str, set: &[usize], retprobe: bool, fds: &mut Vec<OwnedFd>| {
            let try_once = |set: &[usize]| {
                loader.load(name).and_then(|prog| {
                    kprobe_multi::attach(&prog, &syms_of(set), retprobe).map(|link| (prog, link))
                })
            };
            let core: Vec<usize> = set
                .iter()
                .copied()
                .filter(|&i| {
                    jobs[i]
                        .target
                        .kprobe
                        .as_ref()
                        .is_some_and(|(s, _)| !s.in_module)
                })
                .collect();
            let (attached, outcome) = match try_once(set) {
                Ok(done) => (set.to_vec(), Ok(done)),
                Err(e) if !core.is_empty() && core.len() < set.len() => match try_once(&core) {
                    Ok(done) => (core, Ok(done)),
                    Err(_) => (Vec::new(), Err(e)),
                },
                Err(e) => (Vec::new(), Err(e)),
            };
            match outcome {
                Ok((prog, link)) => {
                    let id = kprobe_multi::prog_id(&prog);
                    fds.push(prog);
                    fds.push(link);
                    (attached, id, None)
                }
                Err(e) => (attached, 0, Some(e)),
            }
        };
        let mut first_error = None;
        // Returns first: an entry only stashes its event when its return is traced.
        let ret_set: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| jobs[i].target.want_ret)
            .collect();
        let mut ret_ok = HashSet::new();
        if !ret_set.is_empty() {
            let (attached, _, error) = link_set("nt_kpm_ret", &ret_set, true, fds);
            ret_ok.extend(attached);
            if let Some(e) = error {
                first_error = Some(e.context("return values"));
            }
        }
        for (i, job) in jobs.iter().enumerate() {
            let raw = RawSlot::new(job.id, &job.tracer, ret_ok.contains(&i));
            let addr = job.target.kprobe.as_ref().map_or(0, |(s, _)| s.addr);
            if let Err(e) = write_func(ebpf, addr, raw) {
                return (Vec::new(), all, Some(e));
            }
        }
        let mut by_arg: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            by_arg.entry(job.tracer.skb_arg).or_default().push(i);
        }
        let mut done = Vec::new();
        let mut left = Vec::new();
        for (arg, set) in by_arg {
            let (attached, prog_id, error) = link_set(&format!("nt_kpm_a{arg}"), &set, false, fds);
            if let Some(e) = error {
                first_error.get_or_insert(e);
            }
            left.extend(set.iter().copied().filter(|i| !attached.contains(i)));
            done.extend(
                attached
                    .into_iter()
                    .map(|i| (i, prog_id, ret_ok.contains(&i))),
            );
        }
        (done, left, first_error)
    }

    fn attach_fentry(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        id: u32,
        t: &PlannedTracer,
        target: &FunctionTarget,
        family: Family,
    ) -> Result<(u32, Option<Backend>)> {
        let func = target.func.as_str();
        let slot = self
            .slots
            .take(family)
            .ok_or_else(|| anyhow!("no free fentry program slot left"))?;
        // The return side first: it does nothing until the entry stashes.
        let ret = if target.want_ret {
            Some(self.attach_fexit(ebpf, btf, id, t, func)?)
        } else {
            None
        };
        write_slot(ebpf, slot.index, RawSlot::new(id, t, ret.is_some()))?;
        let prog: &mut FEntry = program(ebpf, &slot.program)?.try_into()?;
        prog.load(func, btf)?;
        prog.attach()
            .with_context(|| format!("attaching fentry to {func}"))?;
        let prog_id = prog.info().map(|i| i.id()).unwrap_or(0);
        Ok((
            prog_id,
            Some(Backend::Fentry {
                func: func.to_string(),
                ret: ret.is_some(),
            }),
        ))
    }

    fn attach_fexit(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        id: u32,
        t: &PlannedTracer,
        func: &str,
    ) -> Result<Slot> {
        let slot = self
            .slots
            .take(Family::Fexit)
            .ok_or_else(|| anyhow!("no free fexit program slot left"))?;
        write_slot(ebpf, slot.index, RawSlot::new(id, t, false))?;
        let prog: &mut FExit = program(ebpf, &slot.program)?.try_into()?;
        prog.load(func, btf)?;
        prog.attach()
            .with_context(|| format!("attaching fexit to {func}"))?;
        Ok(slot)
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_kprobe(
        &mut self,
        ebpf: &mut Ebpf,
        id: u32,
        t: &PlannedTracer,
        target: &FunctionTarget,
        symbol: &str,
        addr: u64,
        entry: &str,
    ) -> Result<(u32, Option<Backend>)> {
        let ret = if target.want_ret {
            let slot = self
                .slots
                .take(Family::Kretprobe)
                .ok_or_else(|| anyhow!("no free kretprobe slot left"))?;
            write_slot(ebpf, slot.index, RawSlot::new(id, t, false))?;
            let prog: &mut KProbe = program(ebpf, &slot.program)?.try_into()?;
            prog.load()?;
            prog.attach(symbol, 0)
                .with_context(|| format!("attaching kretprobe to {symbol}"))?;
            Some(slot)
        } else {
            None
        };
        write_func(ebpf, addr, RawSlot::new(id, t, ret.is_some()))?;
        let prog: &mut KProbe = program(ebpf, entry)?.try_into()?;
        if !self.kprobe_loaded.contains_key(entry) {
            prog.load()?;
            let prog_id = prog.info().map(|i| i.id()).unwrap_or(0);
            self.kprobe_loaded.insert(entry.to_string(), prog_id);
        }
        prog.attach(symbol, 0)
            .with_context(|| format!("attaching kprobe to {symbol}"))?;
        let prog_id = self.kprobe_loaded.get(entry).copied().unwrap_or(0);
        Ok((
            prog_id,
            Some(Backend::Kprobe {
                symbol: symbol.to_string(),
                multi: false,
                ret: ret.is_some(),
            }),
        ))
    }
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))
}

impl Loaded {
    /// Takes the event ring buffer out of the object.
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("nt_events")
            .ok_or_else(|| anyhow!("no nt_events map"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Takes the statistics counters out of the object.
    pub fn take_stats(&mut self) -> Result<Stats> {
        let map = self
            .ebpf
            .take_map("nt_stats")
            .ok_or_else(|| anyhow!("no nt_stats map"))?;
        Ok(Stats(PerCpuArray::try_from(map)?))
    }
}

/// The kernel-side counters (summed over CPUs).
pub struct Stats(PerCpuArray<MapData, u64>);

impl Stats {
    /// The current value of counter `idx` (see [`stat`]).
    pub fn get(&self, idx: u32) -> u64 {
        self.0.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    //! The verifier's view of the entry programs under every kind of filter.
    //!
    //! The filter is frozen in `.rodata`, so the verifier walks different code for each
    //! filter, and clang's register allocation shifts with every change of the C source:
    //! a value left undefined on one path is one the verifier refuses to spill
    //! (`R2 !read_ok`), and only some filters reach it. Tests that trace real packets use
    //! a few filters each; this one loads (verifies, attaches nothing) the kprobe and raw
    //! tracepoint entry programs, and tp_btf ones on two tracepoints, under one filter of
    //! every kind, with and without `bpf_rdonly_cast`. kprobe programs load on kernels
    //! without kprobes (only attaching needs them), so every machine checks them.

    use super::*;
    use aya::programs::{BtfTracePoint, KProbe, RawTracePoint};
    use nettrace_common::filter::{parse_addr, parse_proto};

    /// One filter of every kind the kernel side branches on.
    fn filters() -> Vec<(&'static str, Filter)> {
        let addr = |s: &str| Some(parse_addr(s).expect("address"));
        let proto = |s: &str| Some(parse_proto(s).expect("protocol"));
        vec![
            ("none", Filter::default()),
            (
                "-p tcp --port 1",
                Filter {
                    proto: proto("tcp"),
                    port: Some(1),
                    ..Filter::default()
                },
            ),
            (
                "-p udp --dport 53",
                Filter {
                    proto: proto("udp"),
                    dport: Some(53),
                    ..Filter::default()
                },
            ),
            (
                "-p icmp",
                Filter {
                    proto: proto("icmp"),
                    ..Filter::default()
                },
            ),
            (
                "-p arp",
                Filter {
                    proto: proto("arp"),
                    ..Filter::default()
                },
            ),
            (
                "-p ip6",
                Filter {
                    proto: proto("ip6"),
                    ..Filter::default()
                },
            ),
            (
                "-s v4",
                Filter {
                    saddr: addr("10.0.0.1"),
                    ..Filter::default()
                },
            ),
            (
                "--addr v6",
                Filter {
                    addr: addr("fd00::1"),
                    ..Filter::default()
                },
            ),
            (
                "-d v4 --sport 80",
                Filter {
                    daddr: addr("10.0.0.2"),
                    sport: Some(80),
                    ..Filter::default()
                },
            ),
            (
                "--netns",
                Filter {
                    netns: Some(4_026_531_840),
                    ..Filter::default()
                },
            ),
            (
                "--ifname",
                Filter {
                    ifindex: Some(2),
                    proto: proto("tcp"),
                    ..Filter::default()
                },
            ),
            (
                "--pid",
                Filter {
                    pid: Some(1),
                    ..Filter::default()
                },
            ),
            (
                "--skb-mode",
                Filter {
                    skb_mode: true,
                    proto: proto("icmp"),
                    ..Filter::default()
                },
            ),
            (
                "agent scope",
                Filter {
                    scope_map: true,
                    follow: true,
                    ..Filter::default()
                },
            ),
            (
                "--detail",
                Filter {
                    conntrack: true,
                    ..Filter::default()
                },
            ),
            (
                "--detail -p tcp --port 80 --skb-mode",
                Filter {
                    conntrack: true,
                    proto: proto("tcp"),
                    port: Some(80),
                    skb_mode: true,
                    ..Filter::default()
                },
            ),
            (
                "--detail agent scope -d v6",
                Filter {
                    conntrack: true,
                    scope_map: true,
                    follow: true,
                    daddr: addr("fd00::2"),
                    ..Filter::default()
                },
            ),
            (
                "--pcap",
                Filter {
                    snaplen: Some(128),
                    ..Filter::default()
                },
            ),
            (
                "--pcap --snaplen 2048 -p tcp --port 80 --skb-mode",
                Filter {
                    snaplen: Some(2048),
                    proto: proto("tcp"),
                    port: Some(80),
                    skb_mode: true,
                    ..Filter::default()
                },
            ),
            (
                "--pcap --snaplen 1 --detail agent scope -d v6",
                Filter {
                    snaplen: Some(1),
                    conntrack: true,
                    scope_map: true,
                    follow: true,
                    daddr: addr("fd00::2"),
                    ..Filter::default()
                },
            ),
        ]
    }

    /// Entry programs loadable without an attach target.
    const KPROBES: &[&str] = &[
        "nt_kp_a0",
        "nt_kp_a1",
        "nt_kp_a4",
        "nt_kpm_a0",
        "nt_kpm_a2",
        "nt_kpm_ret",
        "nt_kr_0",
    ];
    const RAW_TPS: &[&str] = &["nt_a0_0", "nt_a1_0", "nt_a2_0", "nt_a3_0", "nt_drop_0"];
    /// tp_btf programs and the tracepoint each is loaded for.
    const TP_BTF: &[(&str, &str)] = &[
        ("nt_bt_a0_s0_0", "netif_receive_skb"),
        ("nt_bt_drop_0", "kfree_skb"),
    ];

    #[test]
    fn entry_programs_verify_under_every_filter() {
        let btf = Btf::from_sys_fs().expect("this kernel has BTF (/sys/kernel/btf/vmlinux)");
        let mut failures = Vec::new();
        for (name, filter) in filters() {
            for allow_cast in [true, false] {
                let linked = kfunc::link(nettrace_ebpf::object(), &btf, allow_cast).expect("link");
                let raw = RawFilter(filter.encode());
                let mut ebpf = EbpfLoader::new()
                    .btf(Some(&btf))
                    .override_global("nt_cfg", &raw, true)
                    .override_global("nt_rate", &0u32, true)
                    .override_global("nt_kfuncs", &linked.kfuncs, true)
                    .map_max_entries("nt_events", 4096)
                    .load(&linked.object)
                    .expect("the object loads");
                let mode = if linked.cast() { "cast" } else { "probe-read" };
                let mut check = |prog: &str, r: Result<(), ProgramError>| {
                    if let Err(e) = r {
                        let text = format!("{e:#}");
                        let tail: Vec<&str> = text.lines().rev().take(4).collect();
                        failures.push(format!("{prog} [{name}, {mode}]: {}", tail.join(" | ")));
                    }
                };
                for &p in KPROBES {
                    let prog: &mut KProbe = ebpf
                        .program_mut(p)
                        .and_then(|x| x.try_into().ok())
                        .unwrap_or_else(|| panic!("{p} is a kprobe program of the object"));
                    check(p, prog.load());
                }
                for &p in RAW_TPS {
                    let prog: &mut RawTracePoint = ebpf
                        .program_mut(p)
                        .and_then(|x| x.try_into().ok())
                        .unwrap_or_else(|| panic!("{p} is a raw tracepoint program"));
                    check(p, prog.load());
                }
                for &(p, tp) in TP_BTF {
                    let prog: &mut BtfTracePoint = ebpf
                        .program_mut(p)
                        .and_then(|x| x.try_into().ok())
                        .unwrap_or_else(|| panic!("{p} is a tp_btf program"));
                    check(p, prog.load(tp, &btf));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} entry program(s) refused by the verifier:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
}
