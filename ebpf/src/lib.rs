//! The compiled kernel programs of nettrace, as an ELF object for aya.

/// Wrapper that gives the embedded object the 8-byte alignment aya requires.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/nettrace.bpf.o")));

/// The ELF object holding every nettrace eBPF program and map.
pub fn object() -> &'static [u8] {
    &OBJECT.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_is_an_aligned_bpf_elf() {
        let obj = super::object();
        assert_eq!(&obj[..4], b"\x7fELF");
        // e_machine at offset 18: EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 247);
        assert_eq!(obj.as_ptr() as usize % 8, 0);
    }
}
