//! The conntrack entry with `--detail`: A connects to VIP:80, which router R DNATs to
//! B:8080. On R, after the DNAT, each event of the connection's packets carries the entry:
//! in text a `ct:` line under the event line, in JSON a `ct` object. The SYN's entry is new,
//! with the `dnat` status bit, the original tuple to the VIP and the reply tuple from B;
//! the client's later packets are established, the server's replies established in the
//! reply direction; a kernel stack (`--stack-tracer`) still reads right after the entry.
//! Without `--detail` no event carries one.

use std::net::Ipv4Addr;
use std::time::Duration;

use nettrace_tests::*;
use serde_json::{json, Value};

/// Uses subnets 66 (A side) and 67 (B side).
const SUBNET: u8 = 66;
/// Off both subnets, so A routes it to R; reserved for this test.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 250, 68, 100);
const WAIT: Duration = Duration::from_secs(10);
/// How a conntrack line starts (indented like `return value:` lines).
const CT: &str = "                ct: ";

/// A `ct:` line split into its state, its status bits and the rest (the tuples).
fn split_ct(line: &str) -> Option<(&str, Vec<&str>, &str)> {
    let rest = line.strip_prefix(CT)?;
    let (state, rest) = rest.split_once(", ").unwrap_or((rest, ""));
    if rest.starts_with("orig ") {
        return Some((state, Vec::new(), rest));
    }
    let (status, tuples) = rest.split_once(", ").unwrap_or((rest, ""));
    Some((state, status.split(' ').collect(), tuples))
}

/// The `ct:` line under event `e` (`what` names it), and its parts as [`split_ct`] gives
/// them; panics when there is none or it does not parse.
fn ct_under<'a>(
    what: &str,
    (e, ct): &'a (Event, Option<String>),
    fin: &Finished,
) -> (&'a str, (&'a str, Vec<&'a str>, &'a str)) {
    let line = ct
        .as_deref()
        .unwrap_or_else(|| panic!("no ct line under {what}: {}\n{}", e.raw, fin.describe()));
    (line, split_ct(line).unwrap_or_else(|| panic!("{line}")))
}

/// The tracers that see a packet leave R: after its conntrack hooks, before the veth
/// hands it to the next namespace (which drops the entry, `skb_scrub_packet`).
fn leaving(e: &Event) -> bool {
    matches!(e.tracer.as_str(), "net_dev_queue" | "net_dev_start_xmit")
}

/// The event lines of a block, each with the `ct:` line under it, if any.
fn events_with_ct(block: &Block) -> Vec<(Event, Option<String>)> {
    let mut out = Vec::new();
    for (i, l) in block.lines.iter().enumerate() {
        if let Some(ev) = parse_line(l) {
            let ct = block
                .lines
                .get(i + 1)
                .filter(|n| n.starts_with(CT))
                .cloned();
            out.push((ev, ct));
        }
    }
    out
}

#[test]
fn detail_shows_the_conntrack_entry_of_a_dnat() {
    preflight();
    let t = Topology::routed(SUBNET);
    t.add_port_dnat(VIP);
    let (a, b) = (t.a_addr, t.b_addr);
    let client_port = 40321;
    let (r_a, r_b) = (t.mid_a_label(), t.mid_b_label());

    let nt = Nettrace::spawn_tcp_client(
        a,
        client_port,
        &[
            "--timeline",
            "--detail",
            "-v",
            "--stack-tracer",
            "net_dev_start_xmit",
        ],
    );
    t.vip_exchange(VIP, client_port);
    let tuples =
        format!("orig tcp {a}:{client_port} -> {VIP}:80, reply {b}:8080 -> {a}:{client_port}");
    // The exchange is over: the SYN's block and one of B's replies mean the trace saw it
    // (blocks whose skb is still alive, as the client's last ones may be, print at exit).
    let fin = nt.stop_when(WAIT, |l| {
        let ct: Vec<&String> = l.iter().filter(|x| x.starts_with(CT)).collect();
        ct.iter().any(|x| x.starts_with(&format!("{CT}new, ")))
            && ct
                .iter()
                .any(|x| x.starts_with(&format!("{CT}established-reply, ")))
    });
    fin.assert_success();
    assert!(
        fin.stderr_lines.iter().any(|l| {
            l
            == "conntrack: entries are read from skb->_nfct (struct nf_conn is in the kernel's BTF)"
        }),
        "-v --detail says whether conntrack entries can be read\n{}",
        fin.describe()
    );
    let blocks = parse_timeline(&fin.stdout_lines);
    let all: Vec<(Event, Option<String>)> = blocks.iter().flat_map(events_with_ct).collect();
    let from_a = format!("TCP: {a}:{client_port} -> {b}:8080, ");
    let from_b = format!("TCP: {VIP}:80 -> {a}:{client_port}, ");

    // The SYN, DNATed, leaving R towards B: a new entry.
    let syn = all
        .iter()
        .find(|(e, _)| {
            leaving(e)
                && e.iface.as_deref() == Some(r_b.as_str())
                && e.summary.starts_with(&from_a)
                && e.summary.ends_with("flags: S")
        })
        .unwrap_or_else(|| panic!("no SYN on R's B leg\n{}", fin.describe()));
    let (line, (state, status, rest)) = ct_under("the SYN on R", syn, &fin);
    assert_eq!(state, "new", "{line}");
    assert!(
        status.contains(&"dnat") && status.contains(&"confirmed"),
        "{line}"
    );
    assert!(!status.contains(&"seen-reply"), "{line}");
    assert_eq!(rest, tuples, "{line}");

    // A stack follows the entry in the record: the frames under the ct line are the
    // transmit path, not bytes of the entry.
    let sent = |l: &String| {
        parse_line(l).is_some_and(|e| {
            e.tracer == "net_dev_start_xmit"
                && e.iface.as_deref() == Some(r_b.as_str())
                && e.summary.ends_with("flags: S")
        })
    };
    let (block, at) = blocks
        .iter()
        .find_map(|bl| Some((bl, bl.lines.iter().position(sent)?)))
        .unwrap_or_else(|| panic!("no SYN sent on R's B leg\n{}", fin.describe()));
    let under: Vec<&str> = block.lines[at + 1..]
        .iter()
        .take(4)
        .map(String::as_str)
        .collect();
    assert!(
        under.len() == 4
            && under[0].starts_with(CT)
            && under[1] == "Call Stack:"
            && under[2..]
                .iter()
                .any(|f| f.starts_with("    -> dev_hard_start_xmit+")
                    || f.starts_with("    -> __dev_queue_xmit+")),
        "the ct line, then the stack of the transmit\n{}",
        block.lines.join("\n")
    );

    // The client's later packets: established.
    let later = all
        .iter()
        .filter(|(e, _)| {
            leaving(e)
                && e.iface.as_deref() == Some(r_b.as_str())
                && e.summary.starts_with(&from_a)
                && !e.summary.ends_with("flags: S")
        })
        .collect::<Vec<_>>();
    assert!(!later.is_empty(), "{}", fin.describe());
    for ev in &later {
        let (line, (state, status, rest)) = ct_under("a later packet", ev, &fin);
        let e = &ev.0;
        assert_eq!(state, "established", "{}\n{line}", e.raw);
        assert!(
            status.contains(&"dnat") && status.contains(&"seen-reply"),
            "{line}"
        );
        assert_eq!(rest, tuples, "{line}");
    }

    // B's replies, un-DNATed, leaving R towards A: the reply direction.
    let replies = all
        .iter()
        .filter(|(e, _)| {
            leaving(e) && e.iface.as_deref() == Some(r_a.as_str()) && e.summary.starts_with(&from_b)
        })
        .collect::<Vec<_>>();
    assert!(!replies.is_empty(), "{}", fin.describe());
    for ev in &replies {
        let (line, (state, status, rest)) = ct_under("a reply", ev, &fin);
        let e = &ev.0;
        assert_eq!(state, "established-reply", "{}\n{line}", e.raw);
        assert!(status.contains(&"dnat"), "{line}");
        assert_eq!(rest, tuples, "{line}");
    }
    // Only after a conntrack hook saw the packet: not where it enters R, not in A or B
    // (no rule there needs conntrack).
    for (e, ct) in &all {
        let on_r = [r_a.as_str(), r_b.as_str()].contains(&e.iface.as_deref().unwrap_or(""));
        if e.tracer == "netif_receive_skb" || !on_r {
            assert!(ct.is_none(), "{}\n{ct:?}\n{}", e.raw, fin.describe());
        }
    }

    // JSON: the same entry as the event's `ct` object, on the first event after the DNAT.
    let port = client_port + 1;
    let nt = Nettrace::spawn_tcp_client(a, port, &["--timeline", "--detail", "-o", "json"]);
    t.vip_exchange(VIP, port);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains(r#""kind":"dnat""#)));
    fin.assert_success();
    let timelines: Vec<Value> = parse_json_lines(&fin.stdout_lines)
        .into_iter()
        .filter(|v| v["type"] == "timeline")
        .collect();
    let syn = timelines
        .iter()
        .find(|v| v["nat"][0]["kind"] == "dnat")
        .unwrap_or_else(|| panic!("no timeline with a dnat\n{}", fin.describe()));
    let i = syn["nat"][0]["at"].as_u64().unwrap_or(0) as usize;
    let ev = &syn["events"][i];
    assert_eq!(ev["ifname"], t.mid_b_if, "{syn}");
    let ct = &ev["ct"];
    assert_eq!(ct["state"], "new", "{syn}");
    let status: Vec<&str> = ct["status"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        status.contains(&"dnat") && status.contains(&"confirmed"),
        "{ct}"
    );
    assert_eq!(
        ct["orig"],
        json!({"proto": "tcp", "src": format!("{a}:{port}"), "dst": format!("{VIP}:80")}),
        "{ct}"
    );
    assert_eq!(
        ct["reply"],
        json!({"proto": "tcp", "src": format!("{b}:8080"), "dst": format!("{a}:{port}")}),
        "{ct}"
    );
    assert!(
        syn["events"][i - 1].get("ct").is_none(),
        "the SYN entering R has no entry yet\n{syn}"
    );

    // Without --detail nothing is read.
    let port = client_port + 2;
    let nt = Nettrace::spawn_tcp_client(a, port, &["-o", "json"]);
    t.vip_exchange(VIP, port);
    let to_b = format!(r#""daddr":"{b}""#);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains(&to_b)));
    fin.assert_success();
    let events = parse_json_lines(&fin.stdout_lines);
    assert!(
        events.iter().any(|v| v["ifname"] == t.mid_b_if),
        "{}",
        fin.describe()
    );
    assert!(
        events.iter().all(|v| v.get("ct").is_none()),
        "{}",
        fin.describe()
    );
}
