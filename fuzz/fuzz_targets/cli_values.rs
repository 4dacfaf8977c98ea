//! The command-line value parsers (`parse_addr`, `parse_port`,
//! `parse_proto`, `parse_netns_arg`) and `Filter::validate`/`encode`/
//! `matches` on a filter built from the fuzz input.
//!
//! Input: newline-separated fields `saddr daddr addr proto sport dport port
//! netns`, then (after a NUL) bytes for an event to match.
//! Checks: accepted values round-trip through their canonical text; the
//! encoded filter has the flag bits of the fields that are set; a filter
//! that validates encodes the same addresses.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use nettrace_common::filter::{
    parse_addr, parse_netns_arg, parse_port, parse_proto, FILTER_SIZE, FL_ADDR, FL_DADDR, FL_SADDR,
    FL_SKB_MODE, FL_V6,
};
use nettrace_common::{Filter, NetnsArg, RawEvent};

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let f: Vec<&str> = text.split('\n').collect();
    let field = |i: usize| f.get(i).copied().unwrap_or("");

    let addr = |s: &str| -> Option<IpAddr> {
        let r = parse_addr(s);
        if let Ok(a) = r {
            assert_eq!(parse_addr(&a.to_string()), Ok(a));
        }
        r.ok()
    };
    let port = |s: &str| -> Option<u16> {
        let r = parse_port(s);
        if let Ok(p) = r {
            assert_ne!(p, 0);
            assert_eq!(parse_port(&p.to_string()), Ok(p));
        }
        r.ok()
    };
    let proto = parse_proto(field(3)).ok();
    if let Some(p) = proto {
        assert_eq!(parse_proto(p.name), Ok(p));
    }
    let netns = match parse_netns_arg(field(7)) {
        NetnsArg::Inode(n) => {
            assert_eq!(parse_netns_arg(&n.to_string()), NetnsArg::Inode(n));
            Some(n)
        }
        NetnsArg::Path(p) => {
            assert_eq!(p, field(7));
            None
        }
    };
    let flags_byte = rest.first().copied().unwrap_or(0);
    let filter = Filter {
        saddr: addr(field(0)),
        daddr: addr(field(1)),
        addr: addr(field(2)),
        proto,
        sport: port(field(4)),
        dport: port(field(5)),
        port: port(field(6)),
        netns,
        ifindex: (flags_byte & 1 != 0).then_some(u32::from(flags_byte)),
        pid: (flags_byte & 2 != 0).then_some(u32::from(flags_byte) * 7),
        skb_mode: flags_byte & 4 != 0,
        scope_map: flags_byte & 8 != 0,
        follow: flags_byte & 16 != 0,
    };
    let valid = filter.validate().is_ok();
    let b = filter.encode();
    assert_eq!(b.len(), FILTER_SIZE);
    let fl = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
    assert_eq!(fl & FL_SADDR != 0, filter.saddr.is_some());
    assert_eq!(fl & FL_DADDR != 0, filter.daddr.is_some());
    assert_eq!(fl & FL_ADDR != 0, filter.addr.is_some());
    assert_eq!(fl & FL_SKB_MODE != 0, filter.skb_mode);
    assert_eq!(fl & FL_V6 != 0, filter.is_v6());
    assert!(b[73..].iter().all(|&z| z == 0));
    if valid {
        let off = [(0, filter.saddr), (16, filter.daddr), (32, filter.addr)];
        for (off, a) in off {
            match a {
                Some(IpAddr::V4(v4)) => assert_eq!(&b[off..off + 4], &v4.octets()),
                Some(IpAddr::V6(v6)) => assert_eq!(&b[off..off + 16], &v6.octets()),
                None => assert!(b[off..off + 16].iter().all(|&z| z == 0)),
            }
        }
    }
    if let Ok(ev) = RawEvent::decode(rest) {
        let _ = filter.matches(&ev);
        // an empty filter matches everything
        assert!(Filter::default().matches(&ev));
    }
});
