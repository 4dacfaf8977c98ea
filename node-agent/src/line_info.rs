//! Dropping the eBPF object's line info before aya reads it.
//!
//! clang records, in `.BTF.ext`, the source line of every instruction of a
//! section. aya 0.14 hands each program a copy of its whole section's line
//! info and then keeps only the program's own lines, without giving back the
//! rest of the copy. Our sections hold up to 160 entry programs each (one per
//! slot, each with the prefilter inlined), so that made about 165 MB of
//! heap, held for the whole trace, and a good share of the start time
//! (measured with heaptrack: `aya_obj::btf::info::LineInfo::get`).
//!
//! The kernel needs no line info to verify or run a program; it only puts
//! source lines into verifier logs and `bpftool prog dump xlated`. Setting the
//! length of the line-info subsection to zero in the `.BTF.ext` header leaves
//! everything else (function info, CO-RE relocations) as it was. To read a
//! verifier log against the source, disassemble the object with
//! `llvm-objdump -S` (instruction numbers are the same).
//!
//! No crate edits `.BTF.ext` in place; the header is a fixed layout
//! (`struct btf_ext_header` in the kernel's `include/uapi/linux/btf.h`).

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection};

/// `struct btf_ext_header`: magic (u16), version, flags, hdr_len (u32), then
/// the offset and length (u32 each) of func_info, line_info, core_relo.
const BTF_MAGIC: u16 = 0xeb9f;
const LINE_INFO_LEN_AT: usize = 20;

/// Sets the line-info length in the `.BTF.ext` section of the ELF `elf` to
/// zero. An object without `.BTF.ext` is left as it is.
pub fn drop_line_info(elf: &mut [u8]) -> Result<()> {
    let range = {
        let file = object::File::parse(&*elf).context("parsing the eBPF object")?;
        let Some(section) = file.section_by_name(".BTF.ext") else {
            return Ok(());
        };
        section.file_range()
    };
    let Some((off, len)) = range else {
        return Ok(());
    };
    let header = elf
        .get_mut(off as usize..(off + len) as usize)
        .context(".BTF.ext lies outside the eBPF object")?;
    if header.len() < LINE_INFO_LEN_AT + 4 {
        bail!(
            ".BTF.ext is too short for its header ({} bytes)",
            header.len()
        );
    }
    let magic = u16::from_le_bytes([header[0], header[1]]);
    if magic != BTF_MAGIC {
        bail!(".BTF.ext has magic {magic:#x}, not {BTF_MAGIC:#x} (a little-endian object)");
    }
    header[LINE_INFO_LEN_AT..LINE_INFO_LEN_AT + 4].copy_from_slice(&0u32.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_info_len(elf: &[u8]) -> u32 {
        let file = object::File::parse(elf).expect("object parses");
        let data = file
            .section_by_name(".BTF.ext")
            .expect(".BTF.ext")
            .data()
            .expect("data");
        u32::from_le_bytes(
            data[LINE_INFO_LEN_AT..LINE_INFO_LEN_AT + 4]
                .try_into()
                .expect("4 bytes"),
        )
    }

    #[test]
    fn only_the_line_info_length_changes() {
        let obj = nettrace_ebpf::object();
        assert!(line_info_len(obj) > 0, "clang wrote line info");
        let mut out = obj.to_vec();
        drop_line_info(&mut out).unwrap();
        assert_eq!(line_info_len(&out), 0);
        let changed = obj.iter().zip(&out).filter(|(a, b)| a != b).count();
        assert!((1..=4).contains(&changed), "{changed} bytes changed");
    }
}
