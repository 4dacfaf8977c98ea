//! The kernel ABI, checked against the compiled object.
//!
//! `ebpf/include/nt_abi.h` is built into the object with `clang -g`, which
//! writes every struct layout and (through `nt_abi_anchor`) every enum of the
//! contract into the object's BTF. These tests read that BTF and compare it
//! with the numbers the Rust code itself uses: the offsets `Event::decode`
//! reads and `Filter::encode` writes, `RawSlot`, the role and stat numbers
//! of the loader, the flags, and the slot families of [`super::Family`]
//! (with the programs the object really holds). A change on one side only
//! fails here, naming the field or number on both sides.

use std::collections::{BTreeMap, HashSet};
use std::mem::{offset_of, size_of};
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use nettrace_common::event::{self, Event, Packet, L4};
use nettrace_common::filter::{self, Filter, Proto};
use nettrace_common::Role;

use super::{kprobe_program, Family, SlotAllocator, ALL_FAMILIES};
use crate::loader::{role_code, stat, RawFilter, RawSlot, ARG_NONE};
use crate::plan::{Backend, PlannedTracer};

/// The part of a BTF type these tests need.
#[derive(Debug)]
enum Ty {
    Int {
        size: u32,
    },
    Ptr,
    Array {
        elem: u32,
        len: u32,
    },
    Record {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        name: String,
        values: Vec<(String, i64)>,
    },
    /// typedef, const, volatile, restrict, type tag: the type it names.
    Alias(u32),
    Other,
}

#[derive(Debug)]
struct Member {
    name: String,
    ty: u32,
    bit_off: u32,
    bitfield: u32,
}

/// A BTF blob (`.BTF` section), by type id.
struct Btf {
    types: Vec<Ty>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl Btf {
    /// Parses raw BTF as the kernel documents it (Documentation/bpf/btf.rst).
    fn parse(data: &[u8]) -> Btf {
        assert_eq!(
            u16::from_le_bytes([data[0], data[1]]),
            0xeb9f,
            "not little endian BTF"
        );
        let hdr_len = u32_at(data, 4) as usize;
        let (type_off, type_len) = (u32_at(data, 8) as usize, u32_at(data, 12) as usize);
        let (str_off, str_len) = (u32_at(data, 16) as usize, u32_at(data, 20) as usize);
        let strings = &data[hdr_len + str_off..hdr_len + str_off + str_len];
        let name = |off: u32| -> String {
            let s = &strings[off as usize..];
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let t = &data[hdr_len + type_off..hdr_len + type_off + type_len];
        let mut types = vec![Ty::Other]; // id 0: void
        let mut p = 0;
        while p < t.len() {
            let name_off = u32_at(t, p);
            let info = u32_at(t, p + 4);
            let size_or_type = u32_at(t, p + 8);
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            p += 12;
            let (ty, extra) = match kind {
                1 => (Ty::Int { size: size_or_type }, 4),
                2 => (Ty::Ptr, 0),
                3 => (
                    Ty::Array {
                        elem: u32_at(t, p),
                        len: u32_at(t, p + 8),
                    },
                    12,
                ),
                4 | 5 => {
                    let members = (0..vlen)
                        .map(|i| {
                            let m = p + 12 * i;
                            let off = u32_at(t, m + 8);
                            let (bit_off, bitfield) = if kind_flag {
                                (off & 0xff_ffff, off >> 24)
                            } else {
                                (off, 0)
                            };
                            Member {
                                name: name(u32_at(t, m)),
                                ty: u32_at(t, m + 4),
                                bit_off,
                                bitfield,
                            }
                        })
                        .collect();
                    let ty = Ty::Record {
                        name: name(name_off),
                        size: size_or_type,
                        members,
                    };
                    (ty, 12 * vlen)
                }
                6 => {
                    let values = (0..vlen)
                        .map(|i| {
                            let v = u32_at(t, p + 8 * i + 4);
                            let v = if kind_flag {
                                i64::from(v as i32)
                            } else {
                                i64::from(v)
                            };
                            (name(u32_at(t, p + 8 * i)), v)
                        })
                        .collect();
                    let ty = Ty::Enum {
                        name: name(name_off),
                        values,
                    };
                    (ty, 8 * vlen)
                }
                19 => {
                    let values = (0..vlen)
                        .map(|i| {
                            let e = p + 12 * i;
                            let v =
                                u64::from(u32_at(t, e + 4)) | (u64::from(u32_at(t, e + 8)) << 32);
                            (name(u32_at(t, e)), v as i64)
                        })
                        .collect();
                    let ty = Ty::Enum {
                        name: name(name_off),
                        values,
                    };
                    (ty, 12 * vlen)
                }
                8 | 9 | 10 | 11 | 18 => (Ty::Alias(size_or_type), 0),
                7 | 12 | 16 => (Ty::Other, 0),
                13 => (Ty::Other, 8 * vlen),
                14 | 17 => (Ty::Other, 4),
                15 => (Ty::Other, 12 * vlen),
                k => panic!("unknown BTF kind {k}"),
            };
            p += extra;
            types.push(ty);
        }
        Btf { types }
    }

    fn resolve(&self, mut id: u32) -> &Ty {
        loop {
            match &self.types[id as usize] {
                Ty::Alias(next) => id = *next,
                ty => return ty,
            }
        }
    }

    fn size(&self, id: u32) -> usize {
        match self.resolve(id) {
            Ty::Int { size } => *size as usize,
            Ty::Ptr => 8,
            Ty::Array { elem, len } => self.size(*elem) * *len as usize,
            Ty::Record { size, .. } => *size as usize,
            Ty::Enum { .. } => 4,
            ty => panic!("no size for {ty:?}"),
        }
    }

    /// The struct `name`: its size and its fields, nested structs flattened
    /// into `outer.inner` with offsets from the start of `name`.
    fn layout(&self, name: &str) -> (usize, BTreeMap<String, (usize, usize)>) {
        let (size, members) = self
            .types
            .iter()
            .find_map(|t| match t {
                Ty::Record {
                    name: n,
                    size,
                    members,
                } if n == name => Some((*size as usize, members)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("struct {name} is not in the object's BTF"));
        let mut fields = BTreeMap::new();
        self.flatten(members, "", 0, &mut fields);
        (size, fields)
    }

    fn flatten(
        &self,
        members: &[Member],
        prefix: &str,
        base: usize,
        out: &mut BTreeMap<String, (usize, usize)>,
    ) {
        for m in members {
            assert_eq!(m.bitfield, 0, "bit field {prefix}{} in the ABI", m.name);
            assert_eq!(m.bit_off % 8, 0, "{prefix}{} is not byte aligned", m.name);
            let off = base + m.bit_off as usize / 8;
            match self.resolve(m.ty) {
                // an anonymous union or struct: its members are the parent's
                Ty::Record { members: inner, .. } if m.name.is_empty() => {
                    self.flatten(inner, prefix, off, out)
                }
                Ty::Record { members: inner, .. } => {
                    self.flatten(inner, &format!("{prefix}{}.", m.name), off, out)
                }
                _ => {
                    out.insert(format!("{prefix}{}", m.name), (off, self.size(m.ty)));
                }
            }
        }
    }

    /// The enumerators of enum `name`.
    fn enumerators(&self, name: &str) -> BTreeMap<String, i64> {
        self.types
            .iter()
            .find_map(|t| match t {
                Ty::Enum { name: n, values } if n == name => {
                    Some(values.iter().cloned().collect())
                }
                _ => None,
            })
            .unwrap_or_else(|| {
                panic!("enum {name} is not in the object's BTF (is it a member of struct nt_abi_enums?)")
            })
    }

    /// The value of enumerator `name` of enum `of`.
    fn value(&self, of: &str, name: &str) -> i64 {
        *self
            .enumerators(of)
            .get(name)
            .unwrap_or_else(|| panic!("enum {of} of the object has no {name}"))
    }
}

/// The object's BTF and the names of its programs.
fn object() -> &'static (Btf, HashSet<String>) {
    static OBJECT: OnceLock<(Btf, HashSet<String>)> = OnceLock::new();
    OBJECT.get_or_init(|| {
        let obj = aya_obj::Object::parse(nettrace_ebpf::object()).expect("the eBPF object parses");
        let btf = obj
            .btf
            .as_ref()
            .expect("the eBPF object carries BTF (built with clang -g)");
        let programs = obj.programs.keys().cloned().collect();
        (Btf::parse(&btf.to_bytes()), programs)
    })
}

/// Fails listing every disagreement.
fn check(what: &str, errors: Vec<String>) {
    assert!(
        errors.is_empty(),
        "{what}: the compiled eBPF object (ebpf/include/nt_abi.h) and the Rust side disagree:\n  {}",
        errors.join("\n  ")
    );
}

/// Compares struct `name` of the object with the Rust side's `size` and
/// `(field, offset, size)` list; fields in `unused` need no Rust side.
fn compare_struct(
    name: &str,
    size: usize,
    rust: &str,
    fields: &[(&str, usize, usize)],
    unused: &[&str],
) -> Vec<String> {
    let (btf_size, btf_fields) = object().0.layout(name);
    let mut errors = Vec::new();
    if btf_size != size {
        errors.push(format!(
            "struct {name} is {btf_size} bytes in the object, {size} in {rust}"
        ));
    }
    for (field, &(off, len)) in &btf_fields {
        if !unused.contains(&field.as_str()) && !fields.iter().any(|f| f.0 == field) {
            errors.push(format!(
                "{name}.{field} (offset {off}, {len} bytes) has no counterpart in {rust}"
            ));
        }
    }
    for &(field, off, len) in fields {
        match btf_fields.get(field) {
            None => errors.push(format!(
                "{rust} has {field} (offset {off}), struct {name} has no such field"
            )),
            Some(&(o, l)) if (o, l) != (off, len) => errors.push(format!(
                "{name}.{field} is at offset {o}, {l} bytes in the object; {rust} uses offset {off}, {len} bytes"
            )),
            Some(_) => {}
        }
    }
    errors
}

/// Compares enum `name` of the object with the Rust side's values; each
/// enumerator must have one, except those in `unused`.
fn compare_enum(name: &str, rust: &str, values: &[(&str, i64)], unused: &[&str]) -> Vec<String> {
    let btf = object().0.enumerators(name);
    let mut errors = Vec::new();
    for (e, v) in &btf {
        if !unused.contains(&e.as_str()) && !values.iter().any(|x| x.0 == e) {
            errors.push(format!(
                "{e} = {v} (enum {name}) has no counterpart in {rust}"
            ));
        }
    }
    for &(e, v) in values {
        match btf.get(e) {
            None => errors.push(format!("{rust} uses {e} = {v}, enum {name} has no {e}")),
            Some(&b) if b != v => errors.push(format!(
                "{e} is {b} in the object (enum {name}), {v} in {rust}"
            )),
            Some(_) => {}
        }
    }
    errors
}

/// `(name, offset, size)` of a field of a Rust record (`event::At`).
macro_rules! at {
    ($name:literal, $at:expr) => {
        ($name, $at.off, $at.size())
    };
}

#[test]
fn event_record_matches_the_object() {
    use event::offsets::*;
    let fields = [
        at!("ts_ns", TS_NS),
        at!("skb", SKB),
        at!("location", LOCATION),
        at!("retval", RETVAL),
        at!("tracer_id", TRACER_ID),
        at!("netns", NETNS),
        at!("ifindex", IFINDEX),
        at!("pid", PID),
        at!("stack_id", STACK_ID),
        at!("drop_reason", DROP_REASON),
        at!("flags", FLAGS),
        at!("pkt_len", PKT_LEN),
        at!("ifname", IFNAME),
        at!("comm", COMM),
        at!("pkt.saddr", SADDR),
        at!("pkt.daddr", DADDR),
        at!("pkt.seq", SEQ),
        at!("pkt.ack", ACK),
        at!("pkt.l3_proto", L3_PROTO),
        at!("pkt.sport", SPORT),
        at!("pkt.dport", DPORT),
        at!("pkt.icmp_id", ICMP_ID),
        at!("pkt.icmp_seq", ICMP_SEQ),
        at!("pkt.arp_op", ARP_OP),
        at!("pkt.ip_id", IP_ID),
        at!("pkt.l4_proto", L4_PROTO),
        at!("pkt.tcp_flags", TCP_FLAGS),
        at!("pkt.icmp_type", ICMP_TYPE),
        at!("pkt.icmp_code", ICMP_CODE),
        at!("tun.saddr", TUN_SADDR),
        at!("tun.daddr", TUN_DADDR),
        at!("tun.vni", TUN_VNI),
        at!("tun.l3_proto", TUN_L3_PROTO),
        at!("tun.sport", TUN_SPORT),
        at!("tun.dport", TUN_DPORT),
        at!("tun.kind", TUN_KIND),
    ];
    let rust = "common/src/event.rs (offsets, EVENT_SIZE)";
    let mut errors = compare_struct("nt_event", event::EVENT_SIZE, rust, &fields, &["tun.pad"]);
    errors.extend(compare_enum(
        "nt_event_flags",
        "common/src/event.rs F_*",
        &[
            ("NT_F_RET", event::F_RET.into()),
            ("NT_F_FROM_SK", event::F_FROM_SK.into()),
            ("NT_F_SKB_MODE", event::F_SKB_MODE.into()),
            ("NT_F_L4_BAD", event::F_L4_BAD.into()),
            ("NT_F_TUNNEL", event::F_TUNNEL.into()),
            ("NT_F_CT", event::F_CT.into()),
            ("NT_F_BYTES", event::F_BYTES.into()),
        ],
        &[],
    ));
    let kinds = [
        event::TunnelKind::Vxlan,
        event::TunnelKind::Geneve,
        event::TunnelKind::Ipip,
        event::TunnelKind::Ip6ip,
    ];
    let names = [
        "NT_TUN_VXLAN",
        "NT_TUN_GENEVE",
        "NT_TUN_IPIP",
        "NT_TUN_IP6IP",
    ];
    let values: Vec<(&str, i64)> = names
        .iter()
        .zip(kinds)
        .map(|(n, k)| (*n, i64::from(k.code())))
        .collect();
    errors.extend(compare_enum(
        "nt_tunnel_kind",
        "common/src/event.rs TunnelKind::code",
        &values,
        &["NT_TUN_NONE"],
    ));
    check("struct nt_event", errors);
}

/// A record laid out by the object's BTF decodes to what the kernel wrote.
#[test]
fn a_record_laid_out_by_the_object_decodes() {
    let btf = &object().0;
    let (size, fields) = btf.layout("nt_event");
    let mut b = vec![0u8; size];
    let set = |b: &mut [u8], field: &str, v: &[u8]| {
        let (off, len) = fields[field];
        assert!(v.len() <= len, "{field}");
        b[off..off + v.len()].copy_from_slice(v);
    };
    let flag = |name: &str| btf.value("nt_event_flags", name) as u32;
    set(&mut b, "ts_ns", &0x0102_0304_0506_0708u64.to_le_bytes());
    set(&mut b, "skb", &0xffff_8887_b626_0800u64.to_le_bytes());
    set(&mut b, "location", &0xffff_ffff_8100_1234u64.to_le_bytes());
    set(&mut b, "retval", &0xffff_8885_8f24_2900u64.to_le_bytes());
    set(&mut b, "tracer_id", &7u32.to_le_bytes());
    set(&mut b, "netns", &4_026_531_992u32.to_le_bytes());
    set(&mut b, "ifindex", &2u32.to_le_bytes());
    set(&mut b, "pid", &897_081u32.to_le_bytes());
    set(&mut b, "stack_id", &5i32.to_le_bytes());
    set(&mut b, "drop_reason", &12u32.to_le_bytes());
    let flags = flag("NT_F_RET") | flag("NT_F_FROM_SK") | flag("NT_F_SKB_MODE");
    set(&mut b, "flags", &flags.to_le_bytes());
    set(&mut b, "pkt_len", &1500u32.to_le_bytes());
    set(&mut b, "ifname", b"eth1");
    set(&mut b, "comm", b"nettrace");
    set(&mut b, "pkt.saddr", &[10, 0, 0, 1]);
    set(&mut b, "pkt.daddr", &[10, 0, 0, 2]);
    set(&mut b, "pkt.seq", &123u32.to_le_bytes());
    set(&mut b, "pkt.ack", &456u32.to_le_bytes());
    set(&mut b, "pkt.l3_proto", &event::ETH_P_IP.to_le_bytes());
    set(&mut b, "pkt.sport", &34567u16.to_le_bytes());
    set(&mut b, "pkt.dport", &8080u16.to_le_bytes());
    set(&mut b, "pkt.l4_proto", &[event::IPPROTO_TCP]);
    set(&mut b, "pkt.tcp_flags", &[0x12]);
    set(&mut b, "pkt.ip_id", &0x1c46u16.to_le_bytes());
    let want = Event {
        ts_ns: 0x0102_0304_0506_0708,
        skb: 0xffff_8887_b626_0800,
        location: 0xffff_ffff_8100_1234,
        retval: Some(0xffff_8885_8f24_2900),
        tracer_id: 7,
        netns: 4_026_531_992,
        ifindex: 2,
        pid: 897_081,
        stack_id: Some(5),
        drop_reason: 12,
        flags,
        pkt_len: 1500,
        ifname: "eth1".into(),
        comm: "nettrace".into(),
        from_sk: true,
        skb_mode: true,
        packet: Packet::Ipv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            l4: L4::Tcp {
                sport: 34567,
                dport: 8080,
                seq: 123,
                ack: 456,
                flags: 0x12,
            },
        },
        tunnel: None,
        ip_id: Some(0x1c46),
        ct: None,
        bytes: None,
    };
    assert_eq!(Event::decode(&b), Ok(want.clone()));

    // The same packet inside VXLAN.
    let tflags = flags | flag("NT_F_TUNNEL");
    set(&mut b, "flags", &tflags.to_le_bytes());
    set(&mut b, "tun.saddr", &[192, 168, 77, 1]);
    set(&mut b, "tun.daddr", &[192, 168, 77, 2]);
    set(&mut b, "tun.vni", &42u32.to_le_bytes());
    set(&mut b, "tun.l3_proto", &event::ETH_P_IP.to_le_bytes());
    set(&mut b, "tun.sport", &51234u16.to_le_bytes());
    set(&mut b, "tun.dport", &8472u16.to_le_bytes());
    let vxlan = btf.value("nt_tunnel_kind", "NT_TUN_VXLAN") as u8;
    set(&mut b, "tun.kind", &[vxlan]);
    let tunneled = Event {
        flags: tflags,
        tunnel: Some(event::Tunnel {
            kind: event::TunnelKind::Vxlan,
            vni: 42,
            outer: Packet::Ipv4 {
                src: Ipv4Addr::new(192, 168, 77, 1),
                dst: Ipv4Addr::new(192, 168, 77, 2),
                l4: L4::Udp {
                    sport: 51234,
                    dport: 8472,
                },
            },
        }),
        ..want.clone()
    };
    assert_eq!(Event::decode(&b), Ok(tunneled.clone()));
    assert_eq!(event::encode(&tunneled), b);
    set(&mut b, "flags", &flags.to_le_bytes());
    for f in [
        "tun.saddr",
        "tun.daddr",
        "tun.vni",
        "tun.l3_proto",
        "tun.sport",
        "tun.dport",
        "tun.kind",
    ] {
        let (off, len) = fields[f];
        b[off..off + len].fill(0);
    }

    set(&mut b, "pkt.l4_proto", &[event::IPPROTO_ICMP]);
    set(&mut b, "pkt.icmp_type", &[8]);
    set(&mut b, "pkt.icmp_code", &[3]);
    set(&mut b, "pkt.icmp_id", &77u16.to_le_bytes());
    set(&mut b, "pkt.icmp_seq", &9u16.to_le_bytes());
    let ev = Event::decode(&b).expect("decodes");
    assert_eq!(
        ev.packet.l4().map(|(_, l4)| *l4),
        Some(L4::Icmp {
            ty: 8,
            code: 3,
            id: 77,
            seq: 9
        })
    );
    set(&mut b, "pkt.l3_proto", &event::ETH_P_ARP.to_le_bytes());
    set(&mut b, "pkt.arp_op", &2u16.to_le_bytes());
    let ev = Event::decode(&b).expect("decodes");
    assert!(matches!(ev.packet, Packet::Arp { op: 2, .. }), "{ev:?}");
    set(&mut b, "pkt.l3_proto", &event::ETH_P_IP.to_le_bytes());
    set(&mut b, "flags", &flag("NT_F_L4_BAD").to_le_bytes());
    let ev = Event::decode(&b).expect("decodes");
    assert_eq!(ev.retval, None);
    assert!(matches!(
        ev.packet,
        Packet::Ipv4 {
            l4: L4::Unreadable(_),
            ..
        }
    ));
}

#[test]
fn conntrack_block_matches_the_object() {
    use nettrace_common::conntrack::{self as ct, offsets::*, CtState};
    let tuple = |dir: &'static str, base: usize| {
        [
            ("saddr", T_SADDR.off, T_SADDR.size()),
            ("daddr", T_DADDR.off, T_DADDR.size()),
            ("sport", T_SPORT.off, T_SPORT.size()),
            ("dport", T_DPORT.off, T_DPORT.size()),
            ("l3num", T_L3NUM.off, T_L3NUM.size()),
            ("protonum", T_PROTONUM.off, T_PROTONUM.size()),
        ]
        .map(|(f, off, size)| (format!("{dir}{f}"), base + off, size))
    };
    let rust = "common/src/conntrack.rs (offsets, CT_SIZE)";
    let named: Vec<(String, usize, usize)> = [
        ("status".to_string(), STATUS.off, STATUS.size()),
        ("ctinfo".to_string(), CTINFO.off, CTINFO.size()),
    ]
    .into_iter()
    .chain(tuple("orig.", ORIG))
    .chain(tuple("reply.", REPLY))
    .collect();
    let fields: Vec<(&str, usize, usize)> =
        named.iter().map(|(f, o, s)| (f.as_str(), *o, *s)).collect();
    let mut errors = compare_struct(
        "nt_ct",
        ct::CT_SIZE,
        rust,
        &fields,
        &["pad", "orig.pad", "reply.pad"],
    );
    let named: Vec<(String, usize, usize)> = tuple("", 0).into_iter().collect();
    let fields: Vec<(&str, usize, usize)> =
        named.iter().map(|(f, o, s)| (f.as_str(), *o, *s)).collect();
    errors.extend(compare_struct(
        "nt_ct_tuple",
        TUPLE_SIZE,
        rust,
        &fields,
        &["pad"],
    ));
    let states = [
        ("NT_CT_ESTABLISHED", CtState::Established),
        ("NT_CT_RELATED", CtState::Related),
        ("NT_CT_NEW", CtState::New),
        ("NT_CT_ESTABLISHED_REPLY", CtState::EstablishedReply),
        ("NT_CT_RELATED_REPLY", CtState::RelatedReply),
        ("NT_CT_UNTRACKED", CtState::Untracked),
    ];
    let values: Vec<(&str, i64)> = states
        .iter()
        .map(|&(n, s)| (n, i64::from(s.code())))
        .collect();
    errors.extend(compare_enum(
        "nt_ct_info",
        "common/src/conntrack.rs CtState::code",
        &values,
        &[],
    ));
    for (_, s) in states {
        if CtState::from_code(s.code()) != s {
            errors.push(format!("CtState::from_code does not invert code for {s:?}"));
        }
    }
    check("struct nt_ct", errors);
}

/// A record of the object's `nt_event` layout followed by `tail` zero bytes,
/// with event flags `flags` and one stack frame announced; and the event's size.
fn record_with_tail(flags: u32, tail: usize) -> (Vec<u8>, usize) {
    let (ev_size, ev_fields) = object().0.layout("nt_event");
    let mut b = vec![0u8; ev_size + tail];
    let (off, _) = ev_fields["flags"];
    b[off..off + 4].copy_from_slice(&flags.to_le_bytes());
    let (off, _) = ev_fields["stack_id"];
    b[off..off + 4].copy_from_slice(&1i32.to_le_bytes());
    (b, ev_size)
}

/// A record with a conntrack block laid out by the object's BTF decodes to
/// what the kernel wrote, and the stack frames after it stay the stack.
#[test]
fn a_conntrack_block_laid_out_by_the_object_decodes() {
    use nettrace_common::conntrack::{Conntrack, CtState, CtTuple, CT_SIZE};
    let btf = &object().0;
    let (ct_size, fields) = btf.layout("nt_ct");
    let flags = btf.value("nt_event_flags", "NT_F_CT") as u32;
    let (mut b, ev_size) = record_with_tail(flags, ct_size);
    let set = |b: &mut [u8], field: &str, v: &[u8]| {
        let (off, len) = fields[field];
        assert!(v.len() <= len, "{field}");
        b[ev_size + off..ev_size + off + v.len()].copy_from_slice(v);
    };
    let status = (1u32 << 5) | (1 << 3);
    set(&mut b, "status", &status.to_le_bytes());
    let new = btf.value("nt_ct_info", "NT_CT_NEW") as u8;
    set(&mut b, "ctinfo", &[new]);
    for (dir, (s, d, sp, dp)) in [
        ("orig", ([10, 0, 0, 1], [10, 0, 0, 100], 40000u16, 80u16)),
        ("reply", ([10, 0, 1, 2], [10, 0, 0, 1], 8080, 40000)),
    ] {
        set(&mut b, &format!("{dir}.saddr"), &s);
        set(&mut b, &format!("{dir}.daddr"), &d);
        set(&mut b, &format!("{dir}.sport"), &sp.to_le_bytes());
        set(&mut b, &format!("{dir}.dport"), &dp.to_le_bytes());
        set(&mut b, &format!("{dir}.l3num"), &2u16.to_le_bytes());
        set(&mut b, &format!("{dir}.protonum"), &[event::IPPROTO_TCP]);
    }
    b.extend_from_slice(&0xffff_ffff_8100_0042u64.to_ne_bytes());
    let tcp = |s: [u8; 4], d: [u8; 4], sport, dport| CtTuple {
        proto: event::IPPROTO_TCP,
        src: Ipv4Addr::from(s).into(),
        dst: Ipv4Addr::from(d).into(),
        sport,
        dport,
    };
    let want = Conntrack {
        state: CtState::New,
        status,
        orig: Some(tcp([10, 0, 0, 1], [10, 0, 0, 100], 40000, 80)),
        reply: Some(tcp([10, 0, 1, 2], [10, 0, 0, 1], 8080, 40000)),
    };
    assert_eq!(ct_size, CT_SIZE);
    let ev = Event::decode(&b).expect("decodes");
    assert_eq!(ev.ct, Some(want));
    assert_eq!(event::stack_ips(&b, 1), [0xffff_ffff_8100_0042]);
    assert_eq!(&want.encode()[..], &b[ev_size..ev_size + ct_size]);
}

#[test]
fn packet_bytes_block_matches_the_object() {
    use event::bytes_offsets::*;
    let fields = [
        at!("origlen", ORIGLEN),
        at!("caplen", CAPLEN),
        at!("link", LINK),
    ];
    let rust = "common/src/event.rs (bytes_offsets, BYTES_HEADER_SIZE)";
    let mut errors = compare_struct(
        "nt_bytes",
        event::BYTES_HEADER_SIZE,
        rust,
        &fields,
        &["pad"],
    );
    let links = [
        ("NT_LINK_ETHERNET", event::Link::Ethernet),
        ("NT_LINK_RAW_IP", event::Link::RawIp),
    ];
    let values: Vec<(&str, i64)> = links
        .iter()
        .map(|&(n, l)| (n, i64::from(l.code())))
        .collect();
    errors.extend(compare_enum(
        "nt_link",
        "common/src/event.rs Link::code",
        &values,
        &[],
    ));
    let max = object().0.value("nt_limits", "NT_MAX_SNAPLEN");
    if max != event::MAX_SNAPLEN as i64 {
        errors.push(format!(
            "NT_MAX_SNAPLEN is {max} in the object, event::MAX_SNAPLEN {}",
            event::MAX_SNAPLEN
        ));
    }
    check("struct nt_bytes", errors);
}

/// A record with a conntrack block and packet bytes laid out by the object's
/// BTF decodes to what the kernel wrote: the bytes after the conntrack
/// block, the stack frames after the bytes.
#[test]
fn a_packet_bytes_block_laid_out_by_the_object_decodes() {
    let btf = &object().0;
    let (ct_size, _) = btf.layout("nt_ct");
    let (hdr, fields) = btf.layout("nt_bytes");
    let data: Vec<u8> = (1..=13).collect();
    let flags =
        (btf.value("nt_event_flags", "NT_F_BYTES") | btf.value("nt_event_flags", "NT_F_CT")) as u32;
    // the header, 13 bytes, 3 of padding (the kernel pads to 8)
    let (mut b, ev_size) = record_with_tail(flags, ct_size + hdr + 16);
    let at = ev_size + ct_size;
    let set = |b: &mut [u8], field: &str, v: &[u8]| {
        let (off, len) = fields[field];
        assert_eq!(v.len(), len, "{field}");
        b[at + off..at + off + len].copy_from_slice(v);
    };
    set(&mut b, "origlen", &1514u32.to_le_bytes());
    set(&mut b, "caplen", &13u16.to_le_bytes());
    let eth = btf.value("nt_link", "NT_LINK_ETHERNET") as u8;
    set(&mut b, "link", &[eth]);
    b[at + hdr..at + hdr + 13].copy_from_slice(&data);
    b.extend_from_slice(&0xffff_ffff_8100_0042u64.to_ne_bytes());
    let want = event::Captured {
        link: event::Link::Ethernet,
        origlen: 1514,
        data,
    };
    let ev = Event::decode(&b).expect("decodes");
    assert_eq!(ev.bytes.as_ref(), Some(&want));
    // (an all-zero conntrack block: state established, no tuples)
    assert!(ev.ct.is_some());
    assert_eq!(event::stack_ips(&b, 1), [0xffff_ffff_8100_0042]);
    assert_eq!(want.encode(), &b[at..at + hdr + 16]);
}

#[test]
fn filter_matches_the_object() {
    use filter::offsets::*;
    let fields = [
        at!("saddr", SADDR),
        at!("daddr", DADDR),
        at!("addr", ADDR),
        at!("netns", NETNS),
        at!("ifindex", IFINDEX),
        at!("pid", PID),
        at!("flags", FLAGS),
        at!("l3_proto", L3_PROTO),
        at!("sport", SPORT),
        at!("dport", DPORT),
        at!("port", PORT),
        at!("l4_proto", L4_PROTO),
        at!("snaplen", SNAPLEN),
    ];
    let rust = "common/src/filter.rs (offsets, FILTER_SIZE)";
    let mut errors = compare_struct(
        "nt_filter",
        filter::FILTER_SIZE,
        rust,
        &fields,
        &["pad", "pad2"],
    );
    if size_of::<RawFilter>() != filter::FILTER_SIZE {
        errors.push(format!(
            "loader.rs RawFilter is {} bytes, FILTER_SIZE {}",
            size_of::<RawFilter>(),
            filter::FILTER_SIZE
        ));
    }
    errors.extend(compare_enum(
        "nt_filter_flags",
        "common/src/filter.rs FL_*",
        &[
            ("NT_FL_SADDR", filter::FL_SADDR.into()),
            ("NT_FL_DADDR", filter::FL_DADDR.into()),
            ("NT_FL_ADDR", filter::FL_ADDR.into()),
            ("NT_FL_SKB_MODE", filter::FL_SKB_MODE.into()),
            ("NT_FL_V6", filter::FL_V6.into()),
            ("NT_FL_SCOPE", filter::FL_SCOPE.into()),
            ("NT_FL_FOLLOW", filter::FL_FOLLOW.into()),
            ("NT_FL_CT", filter::FL_CT.into()),
            ("NT_FL_BYTES", filter::FL_BYTES.into()),
            ("NT_FL_PORTS", filter::FL_PORTS.into()),
        ],
        &[],
    ));
    check("struct nt_filter", errors);
}

/// `Filter::encode` puts every value where the object's BTF says.
#[test]
fn an_encoded_filter_reads_back_by_the_object_layout() {
    let btf = &object().0;
    let (size, fields) = btf.layout("nt_filter");
    let flag = |name: &str| btf.value("nt_filter_flags", name) as u64;
    let read = |b: &[u8], field: &str| -> u64 {
        let (off, len) = fields[field];
        let mut v = [0u8; 8];
        v[..len.min(8)].copy_from_slice(&b[off..off + len.min(8)]);
        u64::from_le_bytes(v)
    };
    let f = Filter {
        saddr: Some("10.0.0.1".parse().expect("addr")),
        daddr: Some("10.0.0.2".parse().expect("addr")),
        addr: Some("10.0.0.3".parse().expect("addr")),
        proto: Some(Proto {
            name: "tcp over IPv4",
            l3: Some(event::ETH_P_IP),
            l4: Some(event::IPPROTO_TCP),
        }),
        sport: Some(1001),
        dport: Some(1002),
        port: Some(1003),
        netns: Some(4_026_531_840),
        ifindex: Some(7),
        pid: Some(4242),
        skb_mode: true,
        scope_map: true,
        follow: true,
        conntrack: true,
        snaplen: Some(1500),
    };
    let b = f.encode();
    assert_eq!(b.len(), size);
    for (field, a) in [("saddr", 1u8), ("daddr", 2), ("addr", 3)] {
        let (off, _) = fields[field];
        assert_eq!(b[off..off + 4], [10, 0, 0, a], "{field}");
    }
    let want = [
        ("netns", 4_026_531_840),
        ("ifindex", 7),
        ("pid", 4242),
        ("sport", 1001),
        ("dport", 1002),
        ("port", 1003),
        ("l3_proto", u64::from(event::ETH_P_IP)),
        ("l4_proto", u64::from(event::IPPROTO_TCP)),
        ("pad", 0),
        ("snaplen", 1500),
        ("pad2", 0),
        (
            "flags",
            [
                "SADDR", "DADDR", "ADDR", "SKB_MODE", "SCOPE", "FOLLOW", "CT", "BYTES", "PORTS",
            ]
            .iter()
            .map(|f| flag(&format!("NT_FL_{f}")))
            .fold(0, |a, b| a | b),
        ),
    ];
    for (field, v) in want {
        assert_eq!(read(&b, field), v, "nt_filter.{field}");
    }
    let v6 = Filter {
        daddr: Some("fd00::2".parse().expect("addr")),
        ..Filter::default()
    };
    let b = v6.encode();
    assert_eq!(
        read(&b, "flags"),
        flag("NT_FL_DADDR") | flag("NT_FL_V6"),
        "IPv6 filter flags"
    );
    let (off, len) = fields["daddr"];
    assert_eq!(b[off + len - 1], 2);
}

/// `(name, offset, size)` of a field of `RawSlot`.
macro_rules! slot_field {
    ($f:ident) => {{
        fn size<F>(_: fn(&RawSlot) -> &F) -> usize {
            size_of::<F>()
        }
        (
            stringify!($f),
            offset_of!(RawSlot, $f),
            size(|s: &RawSlot| &s.$f),
        )
    }};
}

#[test]
fn slot_config_matches_the_object() {
    let fields = [
        slot_field!(tracer_id),
        slot_field!(skb_arg),
        slot_field!(sk_arg),
        slot_field!(role),
        slot_field!(stack),
        slot_field!(enabled),
        slot_field!(ret),
        slot_field!(dev_arg),
        slot_field!(pad),
    ];
    let rust = "node-agent/src/loader.rs RawSlot";
    let mut errors = compare_struct("nt_slot", size_of::<RawSlot>(), rust, &fields, &[]);
    errors.extend(compare_enum(
        "nt_role",
        "loader.rs role_code",
        &[
            ("NT_ROLE_NONE", role_code(Role::Normal).into()),
            ("NT_ROLE_CONSUME", role_code(Role::Consume).into()),
            ("NT_ROLE_DROP", role_code(Role::Drop).into()),
            ("NT_ROLE_CLONE", role_code(Role::Clone).into()),
        ],
        &[],
    ));
    errors.extend(compare_enum(
        "nt_arg",
        "loader.rs ARG_NONE",
        &[("NT_ARG_NONE", ARG_NONE.into())],
        &[],
    ));
    check("struct nt_slot", errors);
}

/// `RawSlot::new` puts every value where the object's BTF says.
#[test]
fn a_slot_written_by_the_loader_reads_back_by_the_object_layout() {
    let btf = &object().0;
    let (size, fields) = btf.layout("nt_slot");
    for (role, c_role) in [
        (Role::Normal, "NT_ROLE_NONE"),
        (Role::Consume, "NT_ROLE_CONSUME"),
        (Role::Drop, "NT_ROLE_DROP"),
        (Role::Clone, "NT_ROLE_CLONE"),
    ] {
        let t = PlannedTracer {
            name: "t".into(),
            group: "g".into(),
            role,
            skb_arg: 2,
            sk_arg: None,
            dev_arg: Some(1),
            stack: true,
            backend: Backend::Unavailable(String::new()),
        };
        let raw = RawSlot::new(0x0a0b_0c0d, &t, true);
        assert_eq!(size_of::<RawSlot>(), size);
        // SAFETY: RawSlot is repr(C) without padding (Pod); reading its bytes is sound.
        let b = unsafe {
            std::slice::from_raw_parts((&raw as *const RawSlot).cast::<u8>(), size_of::<RawSlot>())
        };
        let at = |field: &str| -> u64 {
            let (off, len) = fields[field];
            let mut v = [0u8; 8];
            v[..len].copy_from_slice(&b[off..off + len]);
            u64::from_le_bytes(v)
        };
        let none = btf.value("nt_arg", "NT_ARG_NONE") as u64;
        let want = [
            ("tracer_id", 0x0a0b_0c0d),
            ("skb_arg", 2),
            ("sk_arg", none),
            ("role", btf.value("nt_role", c_role) as u64),
            ("stack", 1),
            ("enabled", 1),
            ("ret", 1),
            ("dev_arg", 1),
            ("pad", 0),
        ];
        for (field, v) in want {
            assert_eq!(at(field), v, "nt_slot.{field} for {role:?}");
        }
    }
}

#[test]
fn stat_indexes_match_the_object() {
    let btf = &object().0;
    let counters = [
        ("NT_STAT_MATCHED", stat::MATCHED),
        ("NT_STAT_RB_FULL", stat::RB_FULL),
        ("NT_STAT_SKB_MAP_FULL", stat::SKB_MAP_FULL),
        ("NT_STAT_STACK_FAIL", stat::STACK_FAIL),
        ("NT_STAT_RATE_LIMITED", stat::RATE_LIMITED),
        ("NT_STAT_BYTES_FAIL", stat::BYTES_FAIL),
    ];
    let values: Vec<(&str, i64)> = counters.iter().map(|&(n, v)| (n, v.into())).collect();
    let mut errors = compare_enum(
        "nt_stat",
        "node-agent/src/loader.rs stat",
        &values,
        &["NT_STAT_MAX"],
    );
    let max = btf.value("nt_stat", "NT_STAT_MAX");
    if counters.iter().any(|&(_, v)| i64::from(v) >= max) {
        errors.push(format!(
            "a loader.rs stat index is not below NT_STAT_MAX ({max}), the size of nt_stats"
        ));
    }
    check("enum nt_stat", errors);
}

#[test]
fn kfunc_markers_match_the_object() {
    let mut errors = compare_enum(
        "nt_kfunc_mark",
        "node-agent/src/kfunc.rs",
        &[("NT_MARK_RDONLY_CAST", crate::kfunc::MARK_RDONLY_CAST.into())],
        &[],
    );
    errors.extend(compare_enum(
        "nt_kfunc_bits",
        "node-agent/src/kfunc.rs",
        &[("NT_KF_RDONLY_CAST", crate::kfunc::KF_RDONLY_CAST.into())],
        &[],
    ));
    check("enum nt_kfunc_mark / nt_kfunc_bits", errors);
}

/// The `enum nt_slot_base` enumerator of a family's first slot.
fn base_name(f: Family) -> String {
    match f {
        Family::Args(n) => format!("NT_SLOT_BASE_A{n}"),
        Family::Drop => "NT_SLOT_BASE_DROP".into(),
        Family::Fentry(n) => format!("NT_SLOT_BASE_FE{n}"),
        Family::Fexit => "NT_SLOT_BASE_FEXIT".into(),
        Family::Kretprobe => "NT_SLOT_BASE_KRET".into(),
    }
}

#[test]
fn slot_families_match_the_object() {
    let (btf, programs) = object();
    let rust = "node-agent/src/slots.rs Family::layout";
    let counters: HashSet<usize> = ALL_FAMILIES.iter().map(|f| f.layout().3).collect();
    assert_eq!(
        counters.len(),
        ALL_FAMILIES.len(),
        "ALL_FAMILIES lists a family twice"
    );
    let values: Vec<(String, i64)> = ALL_FAMILIES
        .iter()
        .map(|&f| (base_name(f), f.layout().0.into()))
        .collect();
    let values: Vec<(&str, i64)> = values.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut errors = compare_enum("nt_slot_base", rust, &values, &["NT_SLOT_END"]);
    let max_slots = btf.value("nt_limits", "NT_MAX_SLOTS");
    let end = btf.value("nt_slot_base", "NT_SLOT_END");
    // The slots the allocator hands out, family by family.
    let mut ranges = Vec::new();
    for f in ALL_FAMILIES {
        let base = btf.value("nt_slot_base", &base_name(f));
        let (_, len, prefix, _) = f.layout();
        let mut a = SlotAllocator::default();
        let slots: Vec<_> = std::iter::from_fn(|| a.take(f)).collect();
        if slots.len() != len as usize {
            errors.push(format!(
                "{f:?}: the allocator gives {} slots, not {len}",
                slots.len()
            ));
        }
        for (n, s) in slots.iter().enumerate() {
            if i64::from(s.index) != base + n as i64 {
                errors.push(format!(
                    "{f:?}: slot {n} ({}) is index {} in {rust}, {} + {n} in the object ({})",
                    s.program,
                    s.index,
                    base,
                    base_name(f)
                ));
                break;
            }
        }
        // Every family has one program per slot, numbered from 0.
        let in_object = (0..).take_while(|n| programs.contains(&format!("nt_{prefix}_{n}")));
        let count = in_object.count();
        if count != slots.len() {
            errors.push(format!(
                "{f:?}: {rust} gives {} slots, the object has {count} programs nt_{prefix}_0..",
                slots.len()
            ));
        }
        if let Some(s) = slots.iter().find(|s| !programs.contains(&s.program)) {
            errors.push(format!("{f:?}: program {} is not in the object", s.program));
        }
        ranges.push((base, base + i64::from(len), f));
    }
    ranges.sort_by_key(|r| r.0);
    for w in ranges.windows(2) {
        if w[0].1 > w[1].0 {
            errors.push(format!(
                "{:?} (slots {}..{}) overlaps {:?} (from {})",
                w[0].2, w[0].0, w[0].1, w[1].2, w[1].0
            ));
        }
    }
    if let Some(&(_, last, f)) = ranges.last() {
        if last != end {
            errors.push(format!(
                "{f:?}, the last family, ends at {last} in {rust}, NT_SLOT_END is {end}"
            ));
        }
        if last > max_slots {
            errors.push(format!(
                "slots end at {last}, past NT_MAX_SLOTS ({max_slots})"
            ));
        }
    }
    // The kprobe entry programs, one per skb argument position.
    let kp = (0..)
        .take_while(|n| programs.contains(&format!("nt_kp_a{n}")))
        .count();
    let rust_kp = (0..=u8::MAX)
        .take_while(|&n| kprobe_program(n).is_some())
        .count();
    if kp != rust_kp {
        errors.push(format!(
            "the object has {kp} kprobe programs nt_kp_a*, slots.rs kprobe_program knows {rust_kp}"
        ));
    }
    check("slot numbering", errors);
}
