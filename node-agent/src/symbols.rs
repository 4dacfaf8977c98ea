//! Kernel symbols and drop-reason names, read from the running kernel.

use std::fs;

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
    /// stacks (the table the kernel probe already read, when it read one),
    /// drop reasons for kfree_skb.
    pub fn load(kernel: &mut Kernel, want_kallsyms: bool, want_drop_reasons: bool) -> Symbols {
        let kallsyms = want_kallsyms
            .then(|| {
                kernel.take_kallsyms().or_else(|| {
                    fs::read_to_string("/proc/kallsyms")
                        .ok()
                        .map(|text| Kallsyms::parse(&text))
                })
            })
            .flatten();
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

    /// The symbolised frames of a kernel stack (addresses innermost first),
    /// starting at the kernel code that hit the tracer (our own program and
    /// the tracing trampolines above it are left out).
    pub fn stack(&self, ips: &[u64]) -> Vec<String> {
        let frames: Vec<String> = ips.iter().map(|&ip| self.symbolize(ip)).collect();
        let skip = frames.iter().take_while(|f| is_tracing_frame(f)).count();
        frames[skip..].to_vec()
    }
}

/// Frames that belong to the tracing machinery, not to the traced code path.
fn is_tracing_frame(frame: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        "bpf_prog_",
        "bpf_trace_run",
        "__traceiter_",
        "__bpf_trace_",
        "bpf_dispatcher_",
    ];
    PREFIXES.iter().any(|p| frame.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::is_tracing_frame;

    #[test]
    fn tracing_frames_are_recognised() {
        for f in [
            "bpf_prog_e5365cee1c20154c_nt_handle+0x9cd",
            "bpf_trace_run4+0x10d",
            "__traceiter_kfree_skb+0x41",
        ] {
            assert!(is_tracing_frame(f), "{f}");
        }
        for f in [
            "sk_skb_reason_drop+0x90",
            "nft_do_chain+0x46f",
            "0xffffffff81000000",
        ] {
            assert!(!is_tracing_frame(f), "{f}");
        }
    }
}
