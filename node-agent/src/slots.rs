//! The numbered entry programs of the eBPF object ("slots").
//!
//! A raw tracepoint program cannot learn which tracepoint fired it, and may
//! only read as many arguments as that tracepoint has. So the object carries
//! families of identical entry programs, each reading arguments up to a fixed
//! index; user space gives each attached tracer its own slot. The numbering
//! mirrors `ebpf/src/nettrace.bpf.c`.

/// A family of entry programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Reads raw tracepoint arguments up to this index (0..=3).
    Args(u8),
    /// Reads `kfree_skb`'s (skb, location, reason).
    Drop,
}

impl Family {
    fn layout(self) -> (u32, u32, &'static str) {
        match self {
            Family::Args(0) => (0, 24, "a0"),
            Family::Args(1) => (24, 16, "a1"),
            Family::Args(2) => (40, 8, "a2"),
            Family::Args(_) => (48, 4, "a3"),
            Family::Drop => (52, 2, "drop"),
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

/// Hands out free slots per family.
#[derive(Debug, Default)]
pub struct SlotAllocator {
    used: [u32; 5],
}

impl SlotAllocator {
    /// Takes the next free slot of `family`, or None when all are taken.
    pub fn take(&mut self, family: Family) -> Option<Slot> {
        let (base, len, prefix) = family.layout();
        let counter = match family {
            Family::Args(n) => &mut self.used[usize::from(n.min(3))],
            Family::Drop => &mut self.used[4],
        };
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
