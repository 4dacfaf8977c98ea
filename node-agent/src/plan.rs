//! The attach plan: which selected tracer is traced how on this kernel.

use nettrace_common::{Leaf, LeafKind, Role};

use crate::slots::{Family, Slot, SlotAllocator};
use crate::system::Kernel;

/// How one tracer will be (or cannot be) traced.
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
    },
    /// Not traceable here, and why.
    Unavailable(String),
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
    /// Whether to collect a kernel stack for its events.
    pub stack: bool,
    /// How it is traced.
    pub backend: Backend,
}

/// All selected tracers, in tree order.
#[derive(Debug, Default)]
pub struct Plan {
    /// Indexed by tracer id.
    pub tracers: Vec<PlannedTracer>,
}

/// Decides how `leaf` can be traced on `kernel` (without taking a slot).
pub fn backend_status(kernel: &Kernel, leaf: &Leaf) -> Result<Family, String> {
    match &leaf.kind {
        LeafKind::Function { .. } => Err(kernel.function_unavailable_reason().to_string()),
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
            if leaf.role == Role::Drop {
                return Ok(Family::Drop);
            }
            let max = leaf.skb_arg.max(leaf.sk_arg.unwrap_or(0));
            Family::for_max_arg(max).ok_or_else(|| {
                format!("argument index {max} is beyond the 4 that tracepoint programs read")
            })
        }
    }
}

impl Plan {
    /// Builds the plan for `leaves`; `stack` says which get stacks.
    pub fn build(kernel: &Kernel, leaves: &[&Leaf], stack: impl Fn(&Leaf) -> bool) -> Plan {
        let mut slots = SlotAllocator::default();
        let tracers = leaves
            .iter()
            .map(|leaf| {
                let backend = match backend_status(kernel, leaf) {
                    Err(why) => Backend::Unavailable(why),
                    Ok(family) => match (&leaf.kind, slots.take(family)) {
                        (LeafKind::Tracepoint { category, event }, Some(slot)) => {
                            Backend::Tracepoint {
                                tp: format!("{category}/{event}"),
                                event: event.clone(),
                                slot,
                            }
                        }
                        (_, None) => {
                            Backend::Unavailable("no free tracepoint program slot left".to_string())
                        }
                        (LeafKind::Function { .. }, _) => {
                            Backend::Unavailable(kernel.function_unavailable_reason().to_string())
                        }
                    },
                };
                PlannedTracer {
                    name: leaf.name.clone(),
                    group: leaf.group.clone(),
                    role: leaf.role,
                    skb_arg: leaf.skb_arg,
                    sk_arg: leaf.sk_arg,
                    stack: stack(leaf),
                    backend,
                }
            })
            .collect();
        Plan { tracers }
    }

    /// The tracers that will be attached.
    pub fn attachable(&self) -> impl Iterator<Item = (u32, &PlannedTracer)> {
        self.tracers
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.backend, Backend::Tracepoint { .. }))
            .map(|(i, t)| (i as u32, t))
    }
}
