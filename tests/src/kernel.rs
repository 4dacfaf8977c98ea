//! What the running kernel offers for tracing kernel functions, probed here independently
//! of nettrace, so that tests expect what this kernel can do rather than what one build
//! machine could: kprobes (the kprobe PMU exists) and fentry (a BTF tracing program on
//! `ip_rcv` loads).

use std::path::Path;

/// Kernel-function tracing on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionTracing {
    /// kprobes are built in (`/sys/bus/event_source/devices/kprobe/type`).
    pub kprobes: bool,
    /// An fentry program on `ip_rcv` loads.
    pub fentry: bool,
}

impl FunctionTracing {
    /// Probes the running kernel (needs root for the fentry load).
    pub fn probe() -> FunctionTracing {
        FunctionTracing {
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            fentry: fentry_loads("ip_rcv"),
        }
    }

    /// Whether kernel-function tracers such as `ip_rcv` can attach at all.
    pub fn any(self) -> bool {
        self.kprobes || self.fentry
    }
}

/// Whether the kernel has the kfunc `bpf_rdonly_cast` (Linux 6.2+; its BTF names the
/// function), through which nettrace reads packets with typed loads.
pub fn has_rdonly_cast() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .ok()
        .and_then(|btf| func_btf_id(&btf, "bpf_rdonly_cast"))
        .is_some()
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_FENTRY: u32 = 24;

/// Loads `r0 = 0; exit` as an fentry program on `func`; true when the kernel accepts it.
fn fentry_loads(func: &str) -> bool {
    let Some(btf_id) = std::fs::read("/sys/kernel/btf/vmlinux")
        .ok()
        .and_then(|btf| func_btf_id(&btf, func))
    else {
        return false;
    };
    // mov64 r0, 0 ; exit
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), 0x95];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_TRACING.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[68..72].copy_from_slice(&BPF_TRACE_FENTRY.to_ne_bytes());
    attr[108..112].copy_from_slice(&btf_id.to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr for BPF_PROG_LOAD of the given size; the pointers in
    // it (instructions, license) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd is a file descriptor the syscall just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The BTF type id of function `name` in a raw (little-endian) BTF blob.
fn func_btf_id(btf: &[u8], name: &str) -> Option<u32> {
    if btf.get(0..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
    let strings = btf.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
    let name_at = |off: usize| -> Option<&[u8]> {
        let s = strings.get(off..)?;
        Some(&s[..s.iter().position(|&c| c == 0)?])
    };
    let mut pos = 0;
    let mut id = 1u32;
    while pos + 12 <= types.len() {
        let name_off = u32_at(types, pos)? as usize;
        let info = u32_at(types, pos + 4)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        const FUNC: u32 = 12;
        if kind == FUNC && name_at(name_off)? == name.as_bytes() {
            return Some(id);
        }
        // The data that follows each kind's 12-byte header.
        let extra = match kind {
            1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
            3 => 12,              // ARRAY
            4 | 5 => 12 * vlen,   // STRUCT, UNION
            6 | 13 => 8 * vlen,   // ENUM, FUNC_PROTO
            15 | 19 => 12 * vlen, // DATASEC, ENUM64
            _ => 0,               // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        };
        pos += 12 + extra;
        id += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ip_rcv_in_this_kernels_btf() {
        let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
        assert!(func_btf_id(&btf, "ip_rcv").is_some());
        assert!(func_btf_id(&btf, "no_such_function_here").is_none());
    }
}
