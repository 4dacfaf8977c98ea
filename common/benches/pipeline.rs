//! Userspace cost per event: decoding the 152-byte ring buffer record and
//! formatting it (default text, `--detail` text, JSON), and timeline
//! assembly. Run with `cargo bench -p nettrace-common`.
//!
//! No framework (`harness = false`): each case runs for `NT_BENCH_MS`
//! milliseconds (default 400) `NT_BENCH_ROUNDS` times (default 5) and the
//! median round is reported as ns/event and events/s on one core, in CPU
//! time of the benchmark thread (robust to other load on a shared machine). The goal
//! (issue 5) is at least 1M events/s per core, i.e. at most 1000 ns/event.
//!
//! The records are a realistic mix: a UDP flow, a TCP flow, ICMP, IPv6 and
//! drops (with reason and location annotations, as the binary prints them),
//! over 8 tracers per skb.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use nettrace_common::event::encode;
use nettrace_common::format::{self, Annotations, TextOptions};
use nettrace_common::{json, Block, Event, Packet, RawEvent, Timeline, L4};

const TRACERS: [(&str, &str, bool); 8] = [
    ("net_dev_queue", "link-out", false),
    ("net_dev_start_xmit", "link-out", false),
    ("netif_rx_entry", "link-in", false),
    ("netif_rx", "link-in", false),
    ("net_dev_xmit", "link-out", false),
    ("netif_receive_skb", "link-in", false),
    ("skb_copy_datagram_iovec", "sock", false),
    ("consume_skb", "life", true),
];

/// `n` records: `skbs` skbs in flight, their events interleaved round-robin,
/// the 8th event of each skb ending it (every 5th skb is dropped instead).
fn records(n: usize, skbs: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        let step = i / skbs; // which tracer
        let slot = i % skbs; // which skb in flight
        let generation = i / (skbs * TRACERS.len());
        let skb_no = generation * skbs + slot;
        let tracer = step % TRACERS.len();
        let drop = tracer == TRACERS.len() - 1 && skb_no.is_multiple_of(5);
        let packet = match skb_no % 4 {
            0 => Packet::Ipv4 {
                src: Ipv4Addr::new(10, 250, 250, 1),
                dst: Ipv4Addr::new(10, 250, 250, 2),
                l4: L4::Udp {
                    sport: 40000 + (skb_no % 1000) as u16,
                    dport: 9,
                },
            },
            1 => Packet::Ipv4 {
                src: Ipv4Addr::new(10, 250, 250, 2),
                dst: Ipv4Addr::new(10, 250, 250, 1),
                l4: L4::Tcp {
                    sport: 5201,
                    dport: 41234,
                    seq: skb_no as u32 * 1448,
                    ack: 7,
                    flags: 0x18,
                },
            },
            2 => Packet::Ipv4 {
                src: Ipv4Addr::new(10, 250, 250, 1),
                dst: Ipv4Addr::new(10, 250, 250, 2),
                l4: L4::Icmp {
                    ty: 8,
                    code: 0,
                    id: 77,
                    seq: skb_no as u16,
                },
            },
            _ => Packet::Ipv6 {
                src: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
                dst: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
                l4: L4::Udp {
                    sport: 5353,
                    dport: 53,
                },
            },
        };
        let ev = Event {
            ts_ns: 1_379_453_013_000 + i as u64 * 700,
            skb: 0xffff_8881_3900_0000 + (skb_no as u64 % 4096) * 0x100,
            location: if drop { 0xffff_ffff_81fb_e3ff } else { 0 },
            retval: None,
            tracer_id: if drop { 8 } else { tracer as u32 },
            netns: 4_026_532_305,
            ifindex: 2 + (tracer as u32 % 2),
            pid: 19_005,
            stack_id: None,
            drop_reason: if drop { 12 } else { 0 },
            flags: 0,
            pkt_len: 92,
            ifname: if tracer.is_multiple_of(2) {
                "eth0"
            } else {
                "veth-a"
            }
            .into(),
            comm: "udpblast".into(),
            from_sk: false,
            skb_mode: false,
            packet,
            tunnel: None,
            ip_id: Some(1),
            ct: None,
            bytes: None,
        };
        out.push(encode(&ev));
        i += 1;
    }
    out
}

fn annotations(ev: &Event) -> Annotations<'static> {
    if ev.tracer_id as usize >= TRACERS.len() {
        return Annotations {
            tracer: "kfree_skb",
            group: "life",
            drop_reason: Some("NETFILTER_DROP"),
            location: Some("nft_do_chain+0x46f"),
            stack: None,
            rule: None,
        };
    }
    let (tracer, group, _) = TRACERS[ev.tracer_id as usize];
    Annotations {
        tracer,
        group,
        ..Annotations::default()
    }
}

fn ends(ev: &Event) -> bool {
    ev.tracer_id as usize >= TRACERS.len() || TRACERS[ev.tracer_id as usize].2
}

/// Where formatted output goes: a buffer written out (here: dropped) each
/// time it holds 64 KiB, as the binary writes its buffer after each ring
/// buffer drain.
struct Sink {
    out: String,
    bytes: usize,
}

impl Sink {
    fn flush_if_full(&mut self) {
        if self.out.len() >= 64 * 1024 {
            self.bytes += self.out.len();
            black_box(self.out.as_str());
            self.out.clear();
        }
    }
}

/// One case: handles every record once, returns how many.
type Case = fn(&[Vec<u8>], &mut Sink) -> usize;

/// CPU time of this thread in ns: unlike wall time, it does not count the
/// time other processes (on a shared 2-core VM) took the CPU away.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` over all records repeatedly for about `budget` of wall time;
/// returns CPU ns/event.
fn measure(recs: &[Vec<u8>], budget: Duration, sink: &mut Sink, f: Case) -> f64 {
    black_box(f(recs, sink)); // warm-up
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut events = 0usize;
    while start.elapsed() < budget {
        events += f(recs, sink);
    }
    (thread_cpu_ns() - cpu0) as f64 / events as f64
}

fn decode_only(recs: &[Vec<u8>], _: &mut Sink) -> usize {
    for r in recs {
        black_box(RawEvent::decode(black_box(r)).expect("decodes"));
    }
    recs.len()
}

fn text(recs: &[Vec<u8>], sink: &mut Sink, opts: TextOptions) -> usize {
    for r in recs {
        let ev = RawEvent::decode(r).expect("decodes");
        format::write_event(&mut sink.out, &ev, &annotations(&ev), opts);
        sink.flush_if_full();
    }
    recs.len()
}

fn text_default(recs: &[Vec<u8>], sink: &mut Sink) -> usize {
    text(recs, sink, TextOptions::default())
}

fn text_detail(recs: &[Vec<u8>], sink: &mut Sink) -> usize {
    let opts = TextOptions {
        detail: true,
        timeline: false,
        advice: true,
    };
    text(recs, sink, opts)
}

fn json_lines(recs: &[Vec<u8>], sink: &mut Sink) -> usize {
    for r in recs {
        let ev = RawEvent::decode(r).expect("decodes");
        json::write_event_json(&mut sink.out, &ev, &annotations(&ev));
        sink.flush_if_full();
    }
    recs.len()
}

/// Decodes every record into a timeline; finished blocks go to `emit`.
fn timeline(recs: &[Vec<u8>], sink: &mut Sink, emit: fn(Block<Event>, &mut Sink)) -> usize {
    let mut tl: Timeline<Event> = Timeline::new(65536);
    for r in recs {
        let ev = RawEvent::decode(r).expect("decodes");
        let (skb, end) = (ev.skb, ends(&ev));
        if let Some(block) = tl.push(skb, ev, end, None) {
            emit(block, sink);
        }
    }
    for block in tl.flush() {
        emit(block, sink);
    }
    recs.len()
}

fn timeline_push(recs: &[Vec<u8>], sink: &mut Sink) -> usize {
    timeline(recs, sink, |block, _| {
        black_box(block);
    })
}

fn timeline_text(recs: &[Vec<u8>], sink: &mut Sink) -> usize {
    timeline(recs, sink, |block, sink| {
        let opts = TextOptions {
            detail: true,
            timeline: true,
            advice: true,
        };
        let items = block.records.iter().map(|e| (e, annotations(e)));
        format::write_timeline_block(&mut sink.out, block.skb, items, opts);
        sink.flush_if_full();
    })
}

fn timeline_json(recs: &[Vec<u8>], sink: &mut Sink) -> usize {
    timeline(recs, sink, |block, sink| {
        let items = block.records.iter().map(|e| (e, annotations(e)));
        json::write_timeline_json(&mut sink.out, block.skb, items);
        sink.flush_if_full();
    })
}

const SKBS: usize = 64;

const CASES: [(&str, Case); 7] = [
    ("decode only", decode_only),
    ("decode + text (default)", text_default),
    ("decode + text (--detail)", text_detail),
    ("decode + JSON", json_lines),
    ("decode + timeline push (64 skbs in flight)", timeline_push),
    (
        "decode + timeline + text (--detail --timeline)",
        timeline_text,
    ),
    ("decode + timeline + JSON", timeline_json),
];

fn main() {
    // `cargo bench` passes `--bench`; a plain argument selects cases by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let ms = env("NT_BENCH_MS", 400);
    let rounds = env("NT_BENCH_ROUNDS", 5).max(1) as usize;
    let budget = Duration::from_millis(ms);
    let recs = records(8192, SKBS);
    let mut sink = Sink {
        out: String::with_capacity(128 * 1024),
        bytes: 0,
    };
    println!(
        "userspace cost per event (thread CPU time): {} records, {SKBS} skbs interleaved, median of {rounds} rounds of {ms} ms",
        recs.len()
    );
    println!(
        "{:<48} {:>10} {:>14} {:>9}",
        "case", "ns/event", "events/s", "vs 1M/s"
    );
    for (name, f) in CASES {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        let mut samples: Vec<f64> = (0..rounds)
            .map(|_| measure(&recs, budget, &mut sink, f))
            .collect();
        samples.sort_by(f64::total_cmp);
        let ns = samples[samples.len() / 2];
        let rate = 1e9 / ns;
        println!(
            "{name:<48} {ns:>10.1} {:>14} {:>8.2}x",
            group_thousands(rate as u64),
            rate / 1e6
        );
    }
    black_box(sink.out.len() + sink.bytes);
}

fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
