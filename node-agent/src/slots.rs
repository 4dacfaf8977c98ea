//! The numbered entry programs of the eBPF object ("slots").
//!
//! A raw tracepoint program cannot learn which tracepoint fired it, and may
//! only read as many arguments as that tracepoint has. So the object carries
//! families of identical entry programs, each reading arguments up to a fixed
//! index; user space gives each attached tracer its own slot. The numbering
//! is `enum nt_slot_base` of `ebpf/include/nt_abi.h`; the test [`abi`] checks
//! [`Family::layout`] against the compiled object (its BTF and programs).

#[cfg(test)]
mod abi;

/// A family of entry programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Raw tracepoint programs reading arguments up to this index (0..=3).
    Args(u8),
    /// Raw tracepoint programs reading `kfree_skb`'s (skb, location, reason).
    Drop,
    /// fentry programs reading the skb at this argument index (0..=4).
    Fentry(u8),
    /// fexit programs (return values).
    Fexit,
    /// kretprobe programs (return values).
    Kretprobe,
}

/// Number of families, for the allocator's counters.
const FAMILIES: usize = 12;

/// Every family (each counter index once), for the tests.
#[cfg(test)]
const ALL_FAMILIES: [Family; FAMILIES] = [
    Family::Args(0),
    Family::Args(1),
    Family::Args(2),
    Family::Args(3),
    Family::Drop,
    Family::Fentry(0),
    Family::Fentry(1),
    Family::Fentry(2),
    Family::Fentry(3),
    Family::Fentry(4),
    Family::Fexit,
    Family::Kretprobe,
];

impl Family {
    /// (first slot, number of slots, program name prefix, counter index)
    fn layout(self) -> (u32, u32, &'static str, usize) {
        match self {
            Family::Args(0) => (0, 24, "a0", 0),
            Family::Args(1) => (24, 16, "a1", 1),
            Family::Args(2) => (40, 8, "a2", 2),
            Family::Args(_) => (48, 4, "a3", 3),
            Family::Drop => (52, 2, "drop", 4),
            Family::Fentry(0) => (64, 64, "fe_a0", 5),
            Family::Fentry(1) => (128, 48, "fe_a1", 6),
            Family::Fentry(2) => (176, 32, "fe_a2", 7),
            Family::Fentry(3) => (208, 8, "fe_a3", 8),
            Family::Fentry(_) => (216, 8, "fe_a4", 9),
            Family::Fexit => (224, 128, "fx", 10),
            Family::Kretprobe => (352, 128, "kr", 11),
        }
    }

    /// The family able to read an argument at `max_index`, if any.
    pub fn for_max_arg(max_index: u8) -> Option<Family> {
        (max_index <= 3).then_some(Family::Args(max_index))
    }
}

/// One entry program: its slot index in `nt_slots` and its program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Index into the `nt_slots` map.
    pub index: u32,
    /// Name of the program in the object.
    pub program: String,
}

/// The kprobe entry program reading the skb at argument `index` (0..=4);
/// unlike the slots, one such program is attached to many functions.
pub fn kprobe_program(index: u8) -> Option<String> {
    (index <= 4).then(|| format!("nt_kp_a{index}"))
}

/// Hands out free slots per family.
#[derive(Debug, Default)]
pub struct SlotAllocator {
    used: [u32; FAMILIES],
}

impl SlotAllocator {
    /// Takes the next free slot of `family`, or None when all are taken.
    pub fn take(&mut self, family: Family) -> Option<Slot> {
        if let Family::Fentry(n) = family {
            if n > 4 {
                return None;
            }
        }
        let (base, len, prefix, idx) = family.layout();
        let counter = &mut self.used[idx];
        if *counter >= len {
            return None;
        }
        let n = *counter;
        *counter += 1;
        Some(Slot {
            index: base + n,
            program: format!("nt_{prefix}_{n}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_c_numbering() {
        let mut a = SlotAllocator::default();
        assert_eq!(
            a.take(Family::Args(0)),
            Some(Slot {
                index: 0,
                program: "nt_a0_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Args(0)),
            Some(Slot {
                index: 1,
                program: "nt_a0_1".into()
            })
        );
        assert_eq!(
            a.take(Family::Args(1)),
            Some(Slot {
                index: 24,
                program: "nt_a1_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Args(2)),
            Some(Slot {
                index: 40,
                program: "nt_a2_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Args(3)),
            Some(Slot {
                index: 48,
                program: "nt_a3_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Drop),
            Some(Slot {
                index: 52,
                program: "nt_drop_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Drop),
            Some(Slot {
                index: 53,
                program: "nt_drop_1".into()
            })
        );
        assert_eq!(a.take(Family::Drop), None);
        assert_eq!(
            a.take(Family::Fentry(0)),
            Some(Slot {
                index: 64,
                program: "nt_fe_a0_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Fentry(2)),
            Some(Slot {
                index: 176,
                program: "nt_fe_a2_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Fentry(4)),
            Some(Slot {
                index: 216,
                program: "nt_fe_a4_0".into()
            })
        );
        assert_eq!(a.take(Family::Fentry(5)), None);
        assert_eq!(
            a.take(Family::Fexit),
            Some(Slot {
                index: 224,
                program: "nt_fx_0".into()
            })
        );
        assert_eq!(
            a.take(Family::Kretprobe),
            Some(Slot {
                index: 352,
                program: "nt_kr_0".into()
            })
        );
        assert_eq!(kprobe_program(1).as_deref(), Some("nt_kp_a1"));
        assert_eq!(kprobe_program(5), None);
    }

    #[test]
    fn every_slot_program_exists_in_the_object() {
        let names: Vec<String> = {
            let obj = nettrace_ebpf::object();
            // Program names appear as NUL-terminated strings in the ELF's string table.
            obj.split(|&b| b == 0)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect()
        };
        let mut a = SlotAllocator::default();
        for family in ALL_FAMILIES {
            let (_, len, _, _) = family.layout();
            let mut last = None;
            while let Some(slot) = a.take(family) {
                last = Some(slot);
            }
            let last = last.expect("every family has slots");
            assert!(last.index < 480, "{family:?} ends at {}", last.index);
            assert!(
                names.contains(&last.program),
                "{} missing from the object",
                last.program
            );
            assert_eq!(
                last.program.rsplit('_').next(),
                Some((len - 1).to_string().as_str())
            );
        }
        for i in 0..=4 {
            assert!(names.contains(&format!("nt_kp_a{i}")));
        }
    }

    #[test]
    fn a_family_runs_out() {
        let mut a = SlotAllocator::default();
        for i in 0..4 {
            assert_eq!(a.take(Family::Args(3)).map(|s| s.index), Some(48 + i));
        }
        assert_eq!(a.take(Family::Args(3)), None);
        assert_eq!(Family::for_max_arg(4), None);
    }
}
