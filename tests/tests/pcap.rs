//! `--pcap FILE`: the events as a pcap-ng file that Debian's tshark reads.
//!
//! A ping that B's iptables drops, traced with `-o json --detail --pcap FILE`:
//! tshark reads every block without a word on stderr, there is one packet per
//! event printed, the Ethernet and raw-IP bytes decode as the ping, and
//! `tshark -V` shows our comments with the tracer names and the drop reason
//! (and the drop's conntrack entry and stack, carried with its bytes). A UDP
//! datagram traced with `--timeline --snaplen 200`: its payload is in the
//! file's bytes, and with `--pcap -` stdout is the pcap-ng stream alone, cut
//! at `--snaplen`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nettrace_tests::*;
use serde_json::Value;

/// Subnet of the ping test.
const PING_SUBNET: u8 = 86;
/// Subnet of the UDP test.
const UDP_SUBNET: u8 = 87;
const WAIT: Duration = Duration::from_secs(10);
const UDP_PORT: u16 = 5087;
const PAYLOAD: &[u8] = b"nettrace-pcap-test-payload-87";

/// A file under the target directory, removed first.
fn scratch(name: &str) -> PathBuf {
    let dir = workspace_dir().join("target/pcap-test");
    std::fs::create_dir_all(&dir).expect("create target/pcap-test");
    let p = dir.join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// `tshark ARGS`: its stdout; fails on a non-zero exit or on anything on
/// stderr but its warning about running as root.
fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tshark {args:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("Running as user"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "tshark {args:?}: {}\n{stderr}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line per packet of `file`: the fields asked for, tab separated.
fn fields(file: &Path, filter: Option<&str>, names: &[&str]) -> Vec<String> {
    let f = file.to_string_lossy();
    let mut args = vec!["-r", &f, "-T", "fields", "-E", "occurrence=a"];
    if let Some(y) = filter {
        args.extend(["-Y", y]);
    }
    for n in names {
        args.extend(["-e", n]);
    }
    tshark(&args).lines().map(str::to_string).collect()
}

fn events(lines: &[String]) -> Vec<Value> {
    parse_json_lines(lines)
        .into_iter()
        .filter(|v| v["type"] == "event")
        .collect()
}

#[test]
fn a_dropped_ping_opens_in_tshark_one_packet_per_event_with_our_comments() {
    preflight();
    require_tools(&["tshark"]);
    let t = Topology::bridged(PING_SUBNET);
    // A rule that needs conntrack: the dropped skb carries an entry (state new).
    t.b.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "icmp",
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ]);
    let file = scratch("drop.pcapng");
    let b = t.b_addr.to_string();
    let f = file.to_string_lossy().into_owned();
    // --detail and --stack-tracer: the conntrack entry, the bytes and the
    // stack in one record, in that order.
    let nt = Nettrace::spawn(&[
        "-o",
        "json",
        "-p",
        "icmp",
        "--addr",
        &b,
        "--detail",
        "--stack-tracer",
        "kfree_skb",
        "--pcap",
        &f,
    ]);
    ping_expect_loss(&t.a, t.b_addr, 1);
    let fin = nt.stop_when(WAIT, |l| {
        l.iter()
            .any(|x| x.contains("\"drop_reason\":\"NETFILTER_DROP\""))
    });
    fin.assert_success();
    let evs = events(&fin.stdout_lines);
    assert!(!evs.is_empty(), "{}", fin.describe());
    // The JSON carries the bytes too: every event here has them.
    for v in &evs {
        assert!(
            v["bytes"].as_str().is_some_and(|h| h.len() >= 2 * 20)
                && matches!(v["link"].as_str(), Some("ethernet" | "raw_ip")),
            "event without its bytes: {v}\n{}",
            fin.describe()
        );
        assert_eq!(
            v["caplen"].as_u64(),
            v["bytes"].as_str().map(|h| h.len() as u64 / 2)
        );
    }

    // Every block reads, one packet per event printed, in order.
    let rows = fields(
        &file,
        None,
        &["frame.interface_name", "frame.protocols", "frame.comment"],
    );
    assert_eq!(
        rows.len(),
        evs.len(),
        "packets vs events\n{}\n{}",
        rows.join("\n"),
        fin.describe()
    );
    for (row, v) in rows.iter().zip(&evs) {
        let cols: Vec<&str> = row.split('\t').collect();
        let tracer = v["tracer"].as_str().unwrap_or("?");
        let ifname = v["ifname"].as_str().unwrap_or("-");
        assert_eq!(cols[0], format!("{ifname}@{}", v["netns"]), "{row}");
        let want = match v["link"].as_str() {
            Some("ethernet") => "eth:ethertype:ip:icmp",
            _ => "raw:ip:icmp",
        };
        assert!(cols[1].starts_with(want), "{want} vs {row}");
        assert!(
            cols[2].contains(&format!("nettrace: {tracer} (group ")),
            "{row}"
        );
        let skb = v["skb"].as_str().unwrap_or("?");
        assert!(cols[2].contains(&format!("skb {skb}")), "{row}");
    }
    // The drop's record had all three blocks.
    let drop = evs
        .iter()
        .find(|v| v["drop_reason"] == "NETFILTER_DROP")
        .expect("the drop");
    assert_eq!(drop["ct"]["state"], "new", "{drop}");
    assert!(
        drop["stack"].as_array().is_some_and(|s| !s.is_empty()),
        "{drop}"
    );
    let drop_row = &rows[evs.iter().position(|v| v == drop).unwrap_or(0)];
    assert!(drop_row.contains("ct: new"), "{drop_row}");
    assert!(drop_row.contains("stack: "), "{drop_row}");
    // Both ways of starting: the frame (Ethernet) and the IP header.
    assert!(rows.iter().any(|r| r.contains("\teth:ethertype:ip:icmp")));
    // The ICMP requests, as tshark decodes them from our bytes.
    let requests = fields(&file, Some("icmp.type == 8"), &["ip.src", "ip.dst"]);
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r, &format!("{}\t{}", t.a_addr, t.b_addr));
    }

    // tshark -V shows the comments: tracers and the drop reason.
    let v = tshark(&["-r", &f, "-V"]);
    assert!(v.contains("Packet comments"), "{v}");
    for tracer in ["net_dev_queue", "netif_receive_skb", "kfree_skb"] {
        assert!(
            v.contains(&format!("nettrace: {tracer} (group ")),
            "no {tracer} comment in tshark -V"
        );
    }
    assert!(
        v.contains("drop reason NETFILTER_DROP, location nft_do_chain"),
        "no drop reason comment in tshark -V:\n{v}"
    );
    assert!(v.contains("Encapsulation type: Ethernet"), "{v}");
    assert!(v.contains(&format!("Interface name: {}@", t.b_if)), "{v}");
    // Real times: within a minute of now.
    let epoch = fields(&file, None, &["frame.time_epoch"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    for e in epoch {
        let t: f64 = e.parse().unwrap_or(0.0);
        assert!((now - t).abs() < 60.0, "frame time {e}, now {now}");
    }
    let _ = std::fs::remove_file(&file);
}

/// Runs `nettrace ARGS` with stdout into `out` until it exits by itself.
fn run_to_file(args: &[&str], out: &Path, traffic: impl FnOnce()) -> Vec<String> {
    let file = std::fs::File::create(out).expect("create the output file");
    let mut child = Command::new(nettrace_bin())
        .args(args)
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nettrace");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l.clone());
            lines.push(l);
        }
        lines
    });
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("begin tracing") => break,
            _ if started.elapsed() > Duration::from_secs(60) => {
                let _ = child.kill();
                panic!("nettrace {args:?} did not begin tracing");
            }
            _ => {}
        }
    }
    traffic();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nettrace {args:?} did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = reader.join().unwrap_or_default();
    assert!(status.success(), "nettrace {args:?}: {status}\n{lines:?}");
    lines
}

#[test]
fn a_udp_payload_is_in_the_file_and_pcap_to_stdout_is_all_stdout_carries() {
    preflight();
    require_tools(&["tshark"]);
    let t = Topology::bridged(UDP_SUBNET);
    let to = std::net::SocketAddr::from((t.b_addr, UDP_PORT));
    let port = UDP_PORT.to_string();

    // --timeline: the blocks' events are the packets.
    let file = scratch("udp.pcapng");
    let f = file.to_string_lossy().into_owned();
    let nt = Nettrace::spawn(&[
        "-p",
        "udp",
        "--port",
        &port,
        "--timeline",
        "--snaplen",
        "200",
        "--pcap",
        &f,
    ]);
    udp_send(&t.a, to, PAYLOAD, 40087);
    let fin = nt.stop_when(WAIT, |l| {
        l.iter()
            .any(|x| x.contains("[kfree_skb") || x.contains("[consume_skb"))
    });
    fin.assert_success();
    let printed = fin
        .stdout_lines
        .iter()
        .filter(|l| l.contains(&format!("-> {}:{UDP_PORT}", t.b_addr)))
        .count();
    assert!(printed > 0, "{}", fin.describe());
    let bytes = std::fs::read(&file).expect("read the pcap file");
    assert!(
        bytes.windows(PAYLOAD.len()).any(|w| w == PAYLOAD),
        "the payload is not in the file"
    );
    let rows = fields(&file, None, &["udp.dstport", "data.data", "frame.comment"]);
    assert_eq!(
        rows.len(),
        printed,
        "{}\n{}",
        rows.join("\n"),
        fin.describe()
    );
    let hex: String = PAYLOAD.iter().map(|b| format!("{b:02x}")).collect();
    for r in &rows {
        assert!(r.starts_with(&format!("{UDP_PORT}\t{hex}\t")), "{r}");
    }

    // --pcap -: stdout is the pcap-ng stream alone, packets cut at --snaplen.
    let out = scratch("stdout.pcapng");
    let stderr = run_to_file(
        &[
            "-p",
            "udp",
            "--port",
            &port,
            "-t",
            "net_dev_queue",
            "-c",
            "1",
            "--snaplen",
            "50",
            "--pcap",
            "-",
        ],
        &out,
        || udp_send(&t.a, to, PAYLOAD, 40088),
    );
    let rows = fields(&out, None, &["frame.cap_len", "frame.len", "frame.comment"]);
    assert_eq!(rows.len(), 1, "{rows:?} {stderr:?}");
    let cols: Vec<&str> = rows[0].split('\t').collect();
    assert_eq!(cols[0], "50", "{rows:?}");
    // Ethernet + IPv4 + UDP headers and the payload
    let len = 14 + 20 + 8 + PAYLOAD.len();
    assert_eq!(cols[1], len.to_string(), "{rows:?}");
    assert!(cols[2].contains("nettrace: net_dev_queue"), "{rows:?}");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&out);
}
