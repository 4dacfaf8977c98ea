//! Loading the eBPF object and attaching the planned programs with aya.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::{FEntry, FExit, KProbe, ProgramError, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader, Pod};
use nettrace_common::Role;

use crate::plan::{Backend, FunctionTarget, Plan, PlannedTracer};
use crate::slots::{Family, Slot, SlotAllocator};

/// The filter bytes (`struct nt_filter`), as a global aya can write.
#[derive(Clone, Copy)]
#[repr(C)]
struct RawFilter([u8; 80]);
// SAFETY: a plain byte array, no padding, valid for any bit pattern.
unsafe impl Pod for RawFilter {}

/// `struct nt_slot` of nt_abi.h.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct RawSlot {
    tracer_id: u32,
    skb_arg: u8,
    sk_arg: u8,
    role: u8,
    stack: u8,
    enabled: u8,
    ret: u8,
    dev_arg: u8,
    pad: u8,
}
// SAFETY: repr(C) with explicit padding fields; any bit pattern is valid.
unsafe impl Pod for RawSlot {}

const ARG_NONE: u8 = 0xff;

impl RawSlot {
    fn new(id: u32, t: &PlannedTracer, ret: bool) -> RawSlot {
        RawSlot {
            tracer_id: id,
            skb_arg: t.skb_arg,
            sk_arg: t.sk_arg.unwrap_or(ARG_NONE),
            role: match t.role {
                Role::Consume => 1,
                Role::Drop => 2,
                Role::Clone => 3,
                Role::Normal => 0,
            },
            stack: u8::from(t.stack),
            enabled: 1,
            ret: u8::from(ret),
            dev_arg: t.dev_arg.unwrap_or(ARG_NONE),
            pad: 0,
        }
    }
}

/// Indexes of the `nt_stats` counters.
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
    /// How long loading and attaching took.
    pub elapsed: Duration,
}

/// Bounds on what tracing may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Size of the ring buffer in bytes.
    pub ringbuf_bytes: u32,
    /// Events per second allowed on each CPU; 0 for no limit.
    pub rate_per_cpu: u32,
}

/// Loads the object with `filter` and attaches every attachable tracer of
/// `plan`, updating the plan with the backend each function leaf got.
pub fn load_and_attach(
    plan: &mut Plan,
    btf: &Btf,
    filter: [u8; 80],
    limits: Limits,
) -> Result<Loaded> {
    let started = Instant::now();
    let raw = RawFilter(filter);
    let ringbuf_bytes = limits.ringbuf_bytes;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .override_global("nt_cfg", &raw, true)
        .override_global("nt_rate", &limits.rate_per_cpu, true)
        .map_max_entries("nt_events", ringbuf_bytes)
        .load(nettrace_ebpf::object())
        .context("loading the eBPF object failed")?;

    let mut attached = Vec::new();
    let mut functions = FunctionAttacher::default();
    for id in 0..plan.tracers.len() {
        let id32 = id as u32;
        let tracer = plan.tracers[id].clone();
        let outcome = match &tracer.backend {
            Backend::Tracepoint { event, slot, .. } => {
                write_slot(&mut ebpf, slot.index, RawSlot::new(id32, &tracer, false))
                    .and_then(|()| attach_raw_tracepoint(&mut ebpf, &slot.program, event))
                    .map(|prog| (prog, None))
            }
            Backend::Function(target) => functions.attach(&mut ebpf, btf, id32, &tracer, target),
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
    Ok(Loaded {
        ebpf,
        attached,
        elapsed: started.elapsed(),
    })
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

fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, event: &str) -> Result<u32> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the eBPF object"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {program}"))?;
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
}

impl FunctionAttacher {
    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &Btf,
        id: u32,
        t: &PlannedTracer,
        target: &FunctionTarget,
    ) -> Result<(u32, Option<Backend>)> {
        let mut why = Vec::new();
        if let (Some(family), None) = (target.fentry, &self.fentry_refused) {
            match self.attach_fentry(ebpf, btf, id, t, target, family) {
                Ok(done) => return Ok(done),
                Err(e) => {
                    if let Some(ProgramError::LoadError { .. }) = e.downcast_ref::<ProgramError>() {
                        self.fentry_refused = Some(format!("{e:#}"));
                    }
                    why.push(format!("fentry: {e:#}"));
                }
            }
        }
        if let Some((symbol, addr, program)) = &target.kprobe {
            match self.attach_kprobe(ebpf, id, t, target, symbol, *addr, program) {
                Ok(done) => return Ok(done),
                Err(e) => why.push(format!("kprobe: {e:#}")),
            }
        }
        if why.is_empty() {
            why.push(
                self.fentry_refused
                    .clone()
                    .unwrap_or_else(|| target.why_not.clone()),
            );
        }
        Err(anyhow!(why.join("; ")))
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
                ret,
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
        {
            let map = ebpf
                .map_mut("nt_funcs")
                .ok_or_else(|| anyhow!("the eBPF object has no nt_funcs map"))?;
            let mut funcs: BpfHashMap<&mut MapData, u64, RawSlot> = BpfHashMap::try_from(map)?;
            funcs
                .insert(addr, RawSlot::new(id, t, ret.is_some()), 0)
                .context("writing nt_funcs")?;
        }
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
                ret,
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

    /// Takes the stack trace map out of the object.
    pub fn take_stacks(&mut self) -> Result<StackTraceMap<MapData>> {
        let map = self
            .ebpf
            .take_map("nt_stacks")
            .ok_or_else(|| anyhow!("no nt_stacks map"))?;
        Ok(StackTraceMap::try_from(map)?)
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
