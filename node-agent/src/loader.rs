//! Loading the eBPF object and attaching the planned programs with aya.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::RawTracePoint;
use aya::{Btf, Ebpf, EbpfLoader, Pod};
use nettrace_common::Role;

use crate::plan::{Backend, Plan};

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
    pad: [u8; 3],
}
// SAFETY: repr(C) with explicit padding fields; any bit pattern is valid.
unsafe impl Pod for RawSlot {}

const ARG_NONE: u8 = 0xff;

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

/// Loads the object with `filter` and attaches every attachable tracer of `plan`.
pub fn load_and_attach(plan: &mut Plan, filter: [u8; 80], ringbuf_bytes: u32) -> Result<Loaded> {
    let started = Instant::now();
    let btf =
        Btf::from_sys_fs().context("cannot read the kernel's BTF from /sys/kernel/btf/vmlinux")?;
    let raw = RawFilter(filter);
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("nt_cfg", &raw, true)
        .map_max_entries("nt_events", ringbuf_bytes)
        .load(nettrace_ebpf::object())
        .context("loading the eBPF object failed")?;

    {
        let map = ebpf
            .map_mut("nt_slots")
            .ok_or_else(|| anyhow!("the eBPF object has no nt_slots map"))?;
        let mut slots: Array<&mut MapData, RawSlot> = Array::try_from(map)?;
        for (id, t) in plan.attachable() {
            let Backend::Tracepoint { slot, .. } = &t.backend else {
                continue;
            };
            let raw = RawSlot {
                tracer_id: id,
                skb_arg: t.skb_arg,
                sk_arg: t.sk_arg.unwrap_or(ARG_NONE),
                role: match t.role {
                    Role::Consume => 1,
                    Role::Drop => 2,
                    _ => 0,
                },
                stack: u8::from(t.stack),
                enabled: 1,
                pad: [0; 3],
            };
            slots
                .set(slot.index, raw, 0)
                .context("writing the slot configuration")?;
        }
    }

    let mut attached = Vec::new();
    let targets: Vec<(u32, String, String)> = plan
        .attachable()
        .filter_map(|(id, t)| match &t.backend {
            Backend::Tracepoint { event, slot, .. } => {
                Some((id, slot.program.clone(), event.clone()))
            }
            Backend::Unavailable(_) => None,
        })
        .collect();
    for (id, program, event) in targets {
        match attach_raw_tracepoint(&mut ebpf, &program, &event) {
            Ok(prog_id) => attached.push(Attached { id, prog_id }),
            Err(e) => {
                let why = format!("attaching failed: {e:#}");
                plan.tracers[id as usize].backend = Backend::Unavailable(why);
            }
        }
    }
    Ok(Loaded {
        ebpf,
        attached,
        elapsed: started.elapsed(),
    })
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
