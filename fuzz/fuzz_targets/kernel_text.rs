//! Kernel text parsed at start-up: `/proc/kallsyms` (`Kallsyms::parse`,
//! `resolve`, `address_of`, `functions`) and the kfree_skb tracepoint
//! format (`DropReasons::from_tracepoint_format`, `name`, `display`).
//!
//! Checks: a resolved address is at or after its symbol; the symbols that
//! `functions` returns exist and resolve to themselves; every parsed drop
//! reason is found by its code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettrace_common::{DropReasons, Kallsyms};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let syms = Kallsyms::parse(&text);
    // addresses: every hex word in the text, plus its neighbours
    let mut probes: Vec<u64> = vec![0, 1, u64::MAX];
    for w in text.split_ascii_whitespace().take(64) {
        if let Ok(a) = u64::from_str_radix(w, 16) {
            probes.extend([a, a.wrapping_add(1), a.wrapping_sub(1)]);
        }
    }
    for a in probes {
        if let Some(s) = syms.resolve(a) {
            assert!(s.offset <= a);
            let start = a - s.offset;
            assert_eq!(syms.resolve(start).map(|s| s.offset), Some(0));
            let _ = s.to_string();
        }
    }
    let wanted: Vec<&str> = text
        .split_ascii_whitespace()
        .filter(|w| w.len() > 2)
        .take(32)
        .collect();
    for (want, (sym, addr)) in syms.functions(&wanted) {
        assert!(wanted.contains(&want.as_str()));
        assert!(sym.starts_with(want.as_str()));
        let got = syms.resolve(addr).expect("a found function resolves");
        assert_eq!(got.offset, 0);
        assert!(syms.address_of(&sym).is_some());
    }
    for w in wanted.iter().take(4) {
        let _ = syms.address_of(w);
    }

    if let Ok(reasons) = DropReasons::from_tracepoint_format(&text) {
        assert!(!reasons.is_empty());
        for code in 0..reasons.len().min(512) as u32 {
            let shown = reasons.display(code).to_string();
            assert_eq!(reasons.name_or_code(code), shown);
            if let Some(n) = reasons.name(code) {
                assert_eq!(n, shown);
            }
        }
    }
});
