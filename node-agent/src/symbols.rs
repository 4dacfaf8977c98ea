//! Kernel symbols and drop-reason names, read from the running kernel.

use std::fs;

use aya::maps::StackTraceMap;
use nettrace_common::{DropReasons, Kallsyms};

use crate::system::Kernel;

/// What turns kernel addresses and codes into names.
#[derive(Default)]
pub struct Symbols {
    /// `/proc/kallsyms`, when needed and readable.
    pub kallsyms: Option<Kallsyms>,
    /// Names of `enum skb_drop_reason`, from the kfree_skb tracepoint format.
    pub drop_reasons: Option<DropReasons>,
}

impl Symbols {
    /// Reads what the selected views need: symbols for drop locations and
    /// stacks, drop reasons for kfree_skb.
    pub fn load(kernel: &Kernel, want_kallsyms: bool, want_drop_reasons: bool) -> Symbols {
        let kallsyms = want_kallsyms
            .then(|| fs::read_to_string("/proc/kallsyms").ok())
            .flatten()
            .map(|text| Kallsyms::parse(&text));
        let drop_reasons = want_drop_reasons
            .then(|| kernel.tracepoint_format("skb", "kfree_skb"))
            .flatten()
            .and_then(|text| DropReasons::from_tracepoint_format(&text).ok());
        Symbols {
            kallsyms,
            drop_reasons,
        }
    }

    /// `symbol+0xoff` for a kernel address, or the bare address.
    pub fn symbolize(&self, addr: u64) -> String {
        match self.kallsyms.as_ref().and_then(|k| k.resolve(addr)) {
            Some(sym) => sym.to_string(),
            None => format!("0x{addr:x}"),
        }
    }

    /// The name of a drop reason code.
    pub fn drop_reason(&self, code: u32) -> String {
        match self.drop_reasons.as_ref().and_then(|d| d.name(code)) {
            Some(name) => name.to_string(),
            None => format!("reason {code}"),
        }
    }

    /// The symbolised frames of kernel stack `id`, innermost first.
    pub fn stack<T: std::borrow::Borrow<aya::maps::MapData>>(
        &self,
        stacks: &StackTraceMap<T>,
        id: u32,
    ) -> Option<Vec<String>> {
        let trace = stacks.get(&id, 0).ok()?;
        Some(
            trace
                .frames()
                .iter()
                .map(|f| self.symbolize(f.ip))
                .collect(),
        )
    }
}
