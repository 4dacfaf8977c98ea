//! kprobe-multi (fprobe) links: one `bpf_link` attaches a program to many
//! kernel functions at once.
//!
//! Attaching ~100 kprobes one by one costs a kprobe registration each, and
//! detaching them an RCU grace period each (tens of seconds under
//! emulation); a kprobe-multi link is one registration and one grace period.
//! aya 0.14 cannot load a program with the `BPF_TRACE_KPROBE_MULTI` attach
//! type, so this module relocates its own copy of the object against the maps
//! aya created (aya-obj does the CO-RE, map and call relocations) and issues
//! `BPF_PROG_LOAD` and `BPF_LINK_CREATE` itself.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, CString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::Map;
use aya::{Btf, Ebpf};
use aya_obj::Object;

use crate::loader::Image;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_KPROBE_MULTI: u32 = 42;
const BPF_F_KPROBE_MULTI_RETURN: u32 = 1;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD` (the kernel
/// treats the fields after them as zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with its `kprobe_multi` part.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    kprobe_multi_flags: u32,
    cnt: u32,
    syms: u64,
    addrs: u64,
    cookies: u64,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<RawFd> {
    // SAFETY: attr is a live, properly sized repr(C) bpf_attr prefix; every
    // pointer inside it refers to memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    RawFd::try_from(ret).map_err(|_| std::io::Error::other("bpf() returned an out-of-range fd"))
}

/// The relocated object, ready to load kprobe-multi programs from.
pub struct MultiLoader {
    obj: Object,
}

/// The fd of a map aya created, for the map kinds our object has.
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::RingBuf(d)
        | Map::StackTraceMap(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// The names of the kprobe-multi programs start with this.
const PROGRAM_PREFIX: &str = "nt_kpm_";

impl MultiLoader {
    /// Relocates a copy of the object `image` (the one given to aya, with
    /// the same globals) against `ebpf`'s maps and `btf`.
    pub fn new(ebpf: &Ebpf, btf: &Btf, image: &Image<'_>) -> Result<MultiLoader> {
        let mut obj = Object::parse(image.object).context("parsing the eBPF object")?;
        obj.patch_map_data(
            image
                .globals
                .iter()
                .map(|(k, v)| (*k, (*v, true)))
                .collect(),
        )
        .context("setting the object's globals")?;
        obj.relocate_btf(btf).context("CO-RE relocation")?;
        // Only the kprobe-multi programs are loaded from this copy. Drop the
        // hundreds of others before linking, which copies the shared
        // subprograms into every program (CO-RE relocation above needs them
        // all: its records point into every function).
        let programs: HashSet<(usize, u64)> =
            obj.programs.values().map(|p| p.function_key()).collect();
        obj.programs
            .retain(|name, _| name.starts_with(PROGRAM_PREFIX));
        let kept: HashSet<(usize, u64)> = obj.programs.values().map(|p| p.function_key()).collect();
        obj.functions
            .retain(|key, _| kept.contains(key) || !programs.contains(key));
        let fds: HashMap<String, RawFd> = ebpf
            .maps()
            .filter_map(|(name, map)| map_fd(map).map(|fd| (name.to_string(), fd)))
            .collect();
        let maps: Vec<(String, aya_obj::Map)> = obj
            .maps
            .iter()
            .map(|(name, map)| (name.clone(), map.clone()))
            .collect();
        if let Some((missing, _)) = maps.iter().find(|(name, _)| !fds.contains_key(name)) {
            bail!("map {missing} was not created by the loader");
        }
        let text_sections: HashSet<usize> =
            obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(
            maps.iter()
                .filter_map(|(name, map)| fds.get(name).map(|fd| (name.as_str(), *fd, map))),
            &text_sections,
        )
        .context("map relocation")?;
        obj.relocate_calls(&text_sections)
            .context("call relocation")?;
        Ok(MultiLoader { obj })
    }

    /// Loads program `name` as a kprobe-multi program.
    pub fn load(&self, name: &str) -> Result<OwnedFd> {
        let prog = self
            .obj
            .programs
            .get(name)
            .ok_or_else(|| anyhow!("no program {name} in the object"))?;
        let func = self
            .obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| anyhow!("no code for program {name}"))?;
        let insns = &func.instructions;
        let license = c"GPL";
        let mut prog_name = [0u8; 16];
        for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_KPROBE,
            insn_cnt: u32::try_from(insns.len()).context("program too large")?,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name,
            expected_attach_type: BPF_TRACE_KPROBE_MULTI,
            ..ProgLoadAttr::default()
        };
        match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: the kernel just returned this new fd to us.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(first) => {
                // Load again with the verifier log, to say why.
                let mut log = vec![0u8; 1 << 20];
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                let _ = sys_bpf(BPF_PROG_LOAD, &mut attr);
                let text = String::from_utf8_lossy(&log);
                let last = text
                    .trim_end_matches('\0')
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                bail!("loading {name} as a kprobe-multi program: {first} {last}")
            }
        }
    }
}

/// Attaches `prog` to every symbol of `syms`; `retprobe` attaches to the
/// functions' returns instead. No cookies: the programs find their function
/// by address (`bpf_get_func_ip`, the map `nt_funcs`), which costs less than
/// the kernel's search for a cookie on every hit.
pub fn attach(prog: &OwnedFd, syms: &[CString], retprobe: bool) -> Result<OwnedFd> {
    if syms.is_empty() {
        bail!("kprobe-multi needs at least one symbol");
    }
    let ptrs: Vec<*const c_char> = syms.iter().map(|s| s.as_ptr()).collect();
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).context("bad program fd")?,
        attach_type: BPF_TRACE_KPROBE_MULTI,
        kprobe_multi_flags: if retprobe {
            BPF_F_KPROBE_MULTI_RETURN
        } else {
            0
        },
        cnt: u32::try_from(syms.len()).context("too many symbols")?,
        syms: ptrs.as_ptr() as u64,
        ..LinkCreateAttr::default()
    };
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr).context("creating a kprobe-multi link")?;
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's id of a loaded program (as `bpftool prog list` shows it).
pub fn prog_id(prog: &OwnedFd) -> u32 {
    // struct bpf_prog_info starts with type and id.
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    match sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) {
        Ok(_) => info[1],
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel_abi() {
        // Offsets from <linux/bpf.h>: expected_attach_type at 68,
        // link_create.kprobe_multi.flags at 16.
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, kprobe_multi_flags), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, cookies), 40);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
    }

    #[test]
    fn every_kprobe_multi_program_is_in_the_object() {
        let obj = Object::parse(nettrace_ebpf::object()).expect("object parses");
        for name in [
            "nt_kpm_a0",
            "nt_kpm_a1",
            "nt_kpm_a2",
            "nt_kpm_a3",
            "nt_kpm_a4",
            "nt_kpm_ret",
        ] {
            assert!(obj.programs.contains_key(name), "{name}");
            assert!(name.starts_with(PROGRAM_PREFIX), "{name}");
        }
    }
}
