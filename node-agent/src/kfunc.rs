//! Kernel functions (kfuncs) for the eBPF object.
//!
//! The programs read skbs and packet headers through `bpf_rdonly_cast`
//! where the kernel has it (Linux 6.2+): a typed pointer read with plain,
//! fault-safe loads instead of a `bpf_probe_read_kernel` call per header.
//! aya 0.14 cannot link calls to kernel functions (it rejects the extern
//! symbol clang emits for them), and no crate does this for aya, so the C
//! side calls a marker helper number (`enum nt_kfunc_mark` in nt_abi.h) and
//! this module rewrites the object's code before aya reads it:
//!
//! - where the running kernel's BTF has the function, each marker call
//!   becomes a kfunc call (`src_reg = BPF_PSEUDO_KFUNC_CALL`, `imm` = the
//!   function's BTF id in vmlinux), and its bit is set in the global
//!   `nt_kfuncs`;
//! - otherwise (or with `--probe-read`) each becomes `r0 = 0`, on a path the
//!   verifier never takes because `nt_kfuncs` (frozen in `.rodata`) says the
//!   function is absent: the programs copy with `bpf_probe_read_kernel`.

use anyhow::{bail, Context, Result};
use aya::Btf;
use aya_obj::btf::BtfKind;
use object::{Object, ObjectSection, SectionKind};

/// `NT_MARK_RDONLY_CAST` of nt_abi.h (checked by the test `slots::abi`).
pub(crate) const MARK_RDONLY_CAST: i32 = 0x6e74_0001;
/// `NT_KF_RDONLY_CAST`: the bit of `nt_kfuncs` saying the cast is linked.
pub(crate) const KF_RDONLY_CAST: u32 = 0x1;

const BPF_JMP_CALL: u8 = 0x85;
const BPF_LD_IMM64: u8 = 0x18;
const BPF_MOV64_IMM: u8 = 0xb7;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// The object, with its kfunc markers linked to the running kernel.
pub struct Linked {
    /// The ELF bytes to hand to aya.
    pub object: Vec<u8>,
    /// The value of the global `nt_kfuncs` (`NT_KF_*` bits).
    pub kfuncs: u32,
}

impl Linked {
    /// Whether packets are read through `bpf_rdonly_cast`.
    pub fn cast(&self) -> bool {
        self.kfuncs & KF_RDONLY_CAST != 0
    }
}

/// Links the kfunc markers of `object` against `btf` (the running kernel's),
/// or disables them all when `allow` is false.
pub fn link(object: &[u8], btf: &Btf, allow: bool) -> Result<Linked> {
    let cast = if allow {
        btf.id_by_type_name_kind("bpf_rdonly_cast", BtfKind::Func)
            .ok()
    } else {
        None
    };
    let mut out = object.to_vec();
    let n = rewrite(&mut out, |mark| match mark {
        MARK_RDONLY_CAST => Some(cast),
        _ => None,
    })?;
    if n == 0 {
        bail!("the eBPF object has no bpf_rdonly_cast marker call: it was built without nt_abi.h's markers");
    }
    Ok(Linked {
        object: out,
        kfuncs: if cast.is_some() { KF_RDONLY_CAST } else { 0 },
    })
}

/// Rewrites every marker call in the code sections of the ELF `elf`:
/// `resolve(imm)` gives `None` for a call that is no marker, `Some(Some(id))`
/// to call kfunc `id`, `Some(None)` to put `r0 = 0` there. Returns how many
/// calls were rewritten.
fn rewrite(elf: &mut [u8], resolve: impl Fn(i32) -> Option<Option<u32>>) -> Result<usize> {
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*elf).context("parsing the eBPF object")?;
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| s.file_range())
            .map(|(off, len)| (off as usize, len as usize))
            .collect()
    };
    let mut count = 0;
    for (off, len) in ranges {
        let code = elf
            .get_mut(off..off + len)
            .context("a code section lies outside the eBPF object")?;
        let mut i = 0;
        while i + 8 <= code.len() {
            let insn = &mut code[i..i + 8];
            let op = insn[0];
            let src = insn[1] >> 4;
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            if op == BPF_JMP_CALL && src == 0 {
                if let Some(target) = resolve(imm) {
                    match target {
                        Some(id) => {
                            insn[1] = BPF_PSEUDO_KFUNC_CALL << 4;
                            insn[2..4].copy_from_slice(&0u16.to_le_bytes());
                            insn[4..8].copy_from_slice(&id.to_le_bytes());
                        }
                        None => {
                            insn.copy_from_slice(&[BPF_MOV64_IMM, 0, 0, 0, 0, 0, 0, 0]);
                        }
                    }
                    count += 1;
                }
            }
            // A 64-bit immediate load takes two slots.
            i += if op == BPF_LD_IMM64 { 16 } else { 8 };
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(elf: &[u8], want: impl Fn(&[u8]) -> bool) -> usize {
        let file = object::File::parse(elf).expect("object parses");
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .map(|s| {
                s.data()
                    .expect("section data")
                    .chunks_exact(8)
                    .filter(|c| want(c))
                    .count()
            })
            .sum()
    }

    fn is_marker(c: &[u8]) -> bool {
        c[0] == BPF_JMP_CALL
            && c[1] >> 4 == 0
            && i32::from_le_bytes([c[4], c[5], c[6], c[7]]) == MARK_RDONLY_CAST
    }

    #[test]
    fn every_marker_becomes_a_kfunc_call_or_a_zero() {
        let obj = nettrace_ebpf::object();
        let markers = calls(obj, is_marker);
        assert!(markers > 0, "the object calls bpf_rdonly_cast somewhere");

        let mut linked = obj.to_vec();
        let n = rewrite(&mut linked, |m| {
            (m == MARK_RDONLY_CAST).then_some(Some(4242))
        })
        .unwrap();
        assert_eq!(n, markers);
        assert_eq!(calls(&linked, is_marker), 0);
        let kfunc = |c: &[u8]| {
            c[0] == BPF_JMP_CALL
                && c[1] >> 4 == BPF_PSEUDO_KFUNC_CALL
                && u32::from_le_bytes([c[4], c[5], c[6], c[7]]) == 4242
        };
        assert_eq!(calls(&linked, kfunc), markers);

        let mut off = obj.to_vec();
        rewrite(&mut off, |m| (m == MARK_RDONLY_CAST).then_some(None)).unwrap();
        assert_eq!(calls(&off, is_marker), 0);
        assert_eq!(calls(&off, kfunc), 0);
        // Nothing else changed.
        let changed = obj.iter().zip(&off).filter(|(a, b)| a != b).count();
        assert!(
            changed <= 8 * markers,
            "{changed} bytes changed for {markers} calls"
        );
    }

    #[test]
    fn disallowed_casts_leave_no_kfunc() {
        let btf = Btf::from_sys_fs().expect("this kernel has BTF");
        let linked = link(nettrace_ebpf::object(), &btf, false).unwrap();
        assert!(!linked.cast());
        assert_eq!(calls(&linked.object, is_marker), 0);
    }
}
