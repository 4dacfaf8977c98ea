//! Event records from the ring buffer: `RawEvent::decode`, then the decoded
//! event printed as text (default, `--detail`, timeline) and as JSON, with
//! annotations made from the bytes after the 152-byte record.
//!
//! Checks: a short buffer is an error naming its length; every output is
//! one line per event (plus return value / stack lines), the JSON is valid
//! and names the same skb; encoding the event gives back the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettrace_common::event::encode;
use nettrace_common::format::{self, Annotations, TextOptions};
use nettrace_common::{json, DecodeError, RawEvent, EVENT_SIZE};

fuzz_target!(|data: &[u8]| {
    let ev = match RawEvent::decode(data) {
        Ok(ev) => ev,
        Err(e) => {
            assert!(data.len() < EVENT_SIZE);
            assert_eq!(e, DecodeError::Short(data.len()));
            return;
        }
    };
    // Annotations from the tail: NUL-separated strings.
    let tail = String::from_utf8_lossy(&data[EVENT_SIZE..]);
    let mut parts = tail.split('\0');
    let tracer = parts.next().unwrap_or("");
    let group = parts.next().unwrap_or("");
    let reason = parts.next();
    let location = parts.next();
    let stack: Vec<String> = parts.map(str::to_string).collect();
    let ann = Annotations {
        tracer,
        group,
        drop_reason: reason,
        location,
        stack: (!stack.is_empty()).then_some(stack.as_slice()),
    };

    for (detail, timeline) in [(false, false), (true, false), (true, true)] {
        let mut s = String::new();
        format::write_event(&mut s, &ev, &ann, TextOptions { detail, timeline });
        assert!(s.ends_with('\n'));
    }
    let mut s = String::new();
    format::write_timeline_block(
        &mut s,
        ev.skb,
        [(&ev, ann), (&ev, Annotations::default())],
        TextOptions::default(),
    );

    let mut s = String::new();
    json::write_event_json(&mut s, &ev, &ann);
    assert!(s.ends_with('\n'));
    assert_eq!(s.matches('\n').count(), 1, "one JSON line: {s:?}");
    let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
    assert_eq!(v["ts_ns"].as_u64(), Some(ev.ts_ns));
    assert_eq!(v["skb"].as_str(), Some(format!("{:016x}", ev.skb).as_str()));
    assert_eq!(v["tracer"].as_str(), Some(tracer));
    assert_eq!(v["group"].as_str(), Some(group));
    assert_eq!(v["comm"].as_str(), Some(ev.comm.as_str()));
    if ev.ifindex != 0 {
        assert_eq!(v["ifname"].as_str(), Some(ev.ifname.as_str()));
    }
    assert_eq!(v["drop_reason"].as_str(), reason);
    assert_eq!(v["location"].as_str(), location);
    if !stack.is_empty() {
        let frames: Vec<&str> = v["stack"]
            .as_array()
            .expect("stack array")
            .iter()
            .map(|f| f.as_str().expect("frame string"))
            .collect();
        assert_eq!(frames, stack);
    }
    // the direct writer and the serde_json one agree byte for byte
    let mut b = Vec::new();
    json::write_event_json_bytes(&mut b, &ev, &ann);
    assert_eq!(s.as_bytes(), b.as_slice());
    let mut s = String::new();
    json::write_timeline_json(&mut s, ev.skb, [(&ev, ann), (&ev, ann)]);
    let v: serde_json::Value = serde_json::from_str(&s).expect("valid timeline JSON");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2));

    // decode(encode(ev)) == ev, except the raw flags (recomputed) and names
    // that are not valid UTF-8 up to 15 bytes (decoded lossily).
    let names_ok = |raw: &[u8], s: &str| {
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        end < 16 && std::str::from_utf8(&raw[..end]) == Ok(s)
    };
    if names_ok(&data[64..80], &ev.ifname) && names_ok(&data[80..96], &ev.comm) {
        let mut again = RawEvent::decode(&encode(&ev)).expect("encoded event decodes");
        again.flags = ev.flags;
        assert_eq!(again, ev);
    }
});
