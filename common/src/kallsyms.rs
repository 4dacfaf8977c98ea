//! Kernel text symbols from the text of `/proc/kallsyms`, for turning
//! addresses into `symbol+0xoffset`.

use std::fmt;

/// One stored symbol: address and byte ranges into the name arena.
#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    name: (u32, u32),
    /// Empty range when the symbol is in the core kernel.
    module: (u32, u32),
}

/// Text symbols sorted by address.
#[derive(Debug, Clone, Default)]
pub struct Kallsyms {
    names: String,
    entries: Vec<Entry>,
}

/// A resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sym<'a> {
    /// Symbol name.
    pub name: &'a str,
    /// Module name, `None` for the core kernel.
    pub module: Option<&'a str>,
    /// Distance from the symbol's start.
    pub offset: u64,
}

impl fmt::Display for Sym<'_> {
    /// `name+0xoff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+0x{:x}", self.name, self.offset)
    }
}

impl Kallsyms {
    /// Parses `/proc/kallsyms` text, keeping text symbols (`t T w W`).
    ///
    /// Lines that do not parse and zero addresses (hidden by
    /// `kptr_restrict`) are skipped.
    pub fn parse(text: &str) -> Kallsyms {
        let mut names = String::with_capacity(text.len() / 2);
        let mut entries = Vec::with_capacity(text.len() / 40);
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let module = it
                .next()
                .and_then(|m| m.strip_prefix('['))
                .and_then(|m| m.strip_suffix(']'));
            let mut push = |s: &str| {
                let start = names.len();
                names.push_str(s);
                (
                    u32::try_from(start).unwrap_or(u32::MAX),
                    u32::try_from(names.len()).unwrap_or(u32::MAX),
                )
            };
            let name = push(name);
            let module = match module {
                Some(m) => push(m),
                None => (0, 0),
            };
            entries.push(Entry { addr, name, module });
        }
        // Stable: of several names at one address the first listed is kept.
        entries.sort_by_key(|e| e.addr);
        entries.dedup_by_key(|e| e.addr);
        Kallsyms { names, entries }
    }

    /// Number of symbols kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no symbol was kept (e.g. addresses hidden from this user).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn text(&self, r: (u32, u32)) -> &str {
        self.names.get(r.0 as usize..r.1 as usize).unwrap_or("")
    }

    /// The symbol containing `addr`: the greatest symbol at or below it.
    pub fn resolve(&self, addr: u64) -> Option<Sym<'_>> {
        if addr == 0 {
            return None;
        }
        let idx = self.entries.partition_point(|e| e.addr <= addr);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        Some(Sym {
            name: self.text(e.name),
            module: (e.module.1 > e.module.0).then(|| self.text(e.module)),
            offset: addr - e.addr,
        })
    }

    /// Start address of a symbol by name (linear search).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| self.text(e.name) == name)
            .map(|e| e.addr)
    }

    /// Finds the symbols of several functions in one pass: each wanted name
    /// maps to `(symbol, address)`, the symbol being the name itself or,
    /// when the compiler renamed the function, a variant such as
    /// `ip_rcv_core.isra.0` (`.isra`, `.constprop`, `.part`; `.cold`
    /// fragments are not entry points). An exact name wins over a variant.
    pub fn functions(&self, wanted: &[&str]) -> std::collections::HashMap<String, (String, u64)> {
        use std::collections::HashMap;
        let want: std::collections::HashSet<&str> = wanted.iter().copied().collect();
        let mut found: HashMap<String, (String, u64, bool)> = HashMap::new();
        for e in &self.entries {
            let name = self.text(e.name);
            let (base, exact) = match name.split_once('.') {
                None => (name, true),
                Some((base, suffix))
                    if ["isra.", "constprop.", "part."]
                        .iter()
                        .any(|p| suffix.starts_with(p)) =>
                {
                    (base, false)
                }
                Some(_) => continue,
            };
            if !want.contains(base) {
                continue;
            }
            match found.get(base) {
                Some((_, _, true)) => {}
                Some(_) if !exact => {}
                _ => {
                    found.insert(base.to_string(), (name.to_string(), e.addr, exact));
                }
            }
        }
        found
            .into_iter()
            .map(|(k, (sym, addr, _))| (k, (sym, addr)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_finds_exact_names_and_compiler_variants() {
        let k = Kallsyms::parse(
            "ffffffff81000100 T ip_rcv\n\
             ffffffff81000200 t ip_rcv_core.isra.0\n\
             ffffffff81000300 t ip_rcv_core.cold\n\
             ffffffff81000400 t tcp_v4_rcv.part.0\n\
             ffffffff81000500 T tcp_v4_rcv\n\
             ffffffff81000600 t nf_hook_slow.cold\n",
        );
        let f = k.functions(&[
            "ip_rcv",
            "ip_rcv_core",
            "tcp_v4_rcv",
            "nf_hook_slow",
            "absent",
        ]);
        assert_eq!(
            f.get("ip_rcv"),
            Some(&("ip_rcv".to_string(), 0xffffffff81000100))
        );
        assert_eq!(
            f.get("ip_rcv_core"),
            Some(&("ip_rcv_core.isra.0".to_string(), 0xffffffff81000200))
        );
        assert_eq!(
            f.get("tcp_v4_rcv"),
            Some(&("tcp_v4_rcv".to_string(), 0xffffffff81000500))
        );
        assert_eq!(f.get("nf_hook_slow"), None);
        assert_eq!(f.get("absent"), None);
        assert_eq!(f.len(), 3);
    }

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 t helper_one
ffffffff81000800 T startup_64
0000000000000000 A fixed_percpu_data
ffffffff82000000 D some_data
ffffffff81002000 W weak_fn
garbage line
ffffffffc0a01000 t veth_xmit\t[veth]
ffffffffc0a01200 t veth_poll\t[veth]
";

    #[test]
    fn keeps_text_symbols_sorted() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.len(), 6);
        assert_eq!(k.address_of("startup_64"), Some(0xffff_ffff_8100_0800));
        assert_eq!(k.address_of("some_data"), None);
        assert_eq!(k.address_of("fixed_percpu_data"), None);
        assert_eq!(
            k.address_of("_text"),
            None,
            "alias at the same address dropped"
        );
    }

    #[test]
    fn resolves() {
        let k = Kallsyms::parse(SAMPLE);
        let s = k.resolve(0xffff_ffff_8100_0000).expect("exact");
        assert_eq!(s.to_string(), "_stext+0x0");
        assert_eq!(s.module, None);
        let s = k.resolve(0xffff_ffff_8100_109c).expect("inside");
        assert_eq!(s.to_string(), "helper_one+0x9c");
        assert_eq!(
            k.resolve(0xffff_ffff_8100_0fff)
                .expect("inside")
                .to_string(),
            "startup_64+0x7ff"
        );
        assert_eq!(
            k.resolve(0xffff_ffff_8100_2abc).expect("weak").to_string(),
            "weak_fn+0xabc"
        );
        let s = k.resolve(0xffff_ffff_c0a0_1234).expect("module");
        assert_eq!(s.to_string(), "veth_poll+0x34");
        assert_eq!(s.module, Some("veth"));
        assert_eq!(k.resolve(0xffff_ffff_80ff_ffff), None);
        assert_eq!(k.resolve(0), None);
    }

    #[test]
    fn hidden_addresses_give_an_empty_table() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\n");
        assert!(k.is_empty());
        assert_eq!(k.resolve(0xffff_ffff_8100_0000), None);
        assert!(Kallsyms::parse("").is_empty());
    }

    #[test]
    fn many_lines() {
        let mut text = String::new();
        for i in (0..200_000u64).rev() {
            text.push_str(&format!(
                "{:016x} t fn_{i}\n",
                0xffff_ffff_8100_0000u64 + i * 16
            ));
        }
        let k = Kallsyms::parse(&text);
        assert_eq!(k.len(), 200_000);
        assert_eq!(
            k.resolve(0xffff_ffff_8100_0000 + 1234 * 16 + 5)
                .expect("hit")
                .to_string(),
            "fn_1234+0x5"
        );
    }
}
