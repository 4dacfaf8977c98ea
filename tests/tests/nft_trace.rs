//! `--nft-trace`: an iptables rule with a comment drops ICMP in a namespace; nettrace names
//! the table, chain, handle and comment under the drop, leaves no table of its own behind
//! (after a normal end and after SIGKILL), and removes a table an earlier run left, saying so.

use std::process::Command;
use std::time::Duration;

use nettrace_tests::*;

const COMMENT: &str = "nettrace test: no pings";
const WAIT: Duration = Duration::from_secs(10);

/// `nft list tables` in a namespace: the tables of ours (`inet nettrace_trace_*`).
fn our_tables(ns: &Netns) -> Vec<String> {
    let out = ns.exec(&["nft", "list", "tables"]);
    assert!(
        out.status.success(),
        "nft list tables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("nettrace_trace_"))
        .map(|l| l.trim().to_string())
        .collect()
}

fn dropping_namespace() -> Netns {
    let ns = Netns::new();
    ns.ip(&["link", "set", "lo", "up"]);
    ns.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "icmp",
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "DROP",
    ]);
    ns
}

#[test]
fn the_rule_that_dropped_a_ping_is_named_with_its_comment() {
    preflight();
    require_tools(&["nft"]);
    let ns = dropping_namespace();
    let netns = ns.path().display().to_string();
    let nt = Nettrace::spawn(&["--netns", &netns, "-p", "icmp", "--timeline", "--nft-trace"]);
    assert_eq!(our_tables(&ns).len(), 1, "our table while tracing");
    let out = ns.exec(&["ping", "-c", "1", "-W", "1", "127.0.0.1"]);
    assert!(!out.status.success(), "the ping was not dropped");
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains("rule: ")));
    fin.assert_success();
    let blocks = parse_timeline(&fin.stdout_lines);
    let block = blocks
        .iter()
        .find(|b| b.lines.iter().any(|l| l.contains("reason: NETFILTER_DROP")))
        .unwrap_or_else(|| panic!("no NETFILTER_DROP\n{}", fin.describe()));
    let at = block
        .lines
        .iter()
        .position(|l| l.contains("[kfree_skb") && l.contains("reason: NETFILTER_DROP"))
        .unwrap_or(0);
    let rule = block.lines.get(at + 1).cloned().unwrap_or_default();
    let prefix = "                rule: ip filter INPUT #";
    let suffix = format!(": drop, comment \"{COMMENT}\"");
    assert!(
        rule.starts_with(prefix)
            && rule.ends_with(&suffix)
            && rule[prefix.len()..rule.len() - suffix.len()]
                .parse::<u64>()
                .is_ok(),
        "the line after the drop names the rule: {rule:?}\n{}",
        fin.describe()
    );
    assert!(
        our_tables(&ns).is_empty(),
        "a table of ours is left: {:?}",
        our_tables(&ns)
    );

    // JSON: the same as "nft".
    let nt = Nettrace::spawn(&["--netns", &netns, "-p", "icmp", "--nft-trace", "-o", "json"]);
    let _ = ns.exec(&["ping", "-c", "1", "-W", "1", "127.0.0.1"]);
    let fin = nt.stop_when(WAIT, |l| l.iter().any(|x| x.contains("\"nft\":")));
    fin.assert_success();
    let drop = parse_json_lines(&fin.stdout_lines)
        .into_iter()
        .find(|v| v.get("nft").is_some())
        .unwrap_or_else(|| panic!("no nft member\n{}", fin.describe()));
    assert_eq!(drop["drop_reason"], "NETFILTER_DROP", "{drop}");
    assert_eq!(drop["nft"]["table"], "filter", "{drop}");
    assert_eq!(drop["nft"]["chain"], "INPUT", "{drop}");
    assert_eq!(drop["nft"]["verdict"], "drop", "{drop}");
    assert_eq!(drop["nft"]["comment"], COMMENT, "{drop}");
    assert!(drop["nft"]["handle"].is_u64(), "{drop}");
}

#[test]
fn no_table_is_left_after_sigkill_and_a_stale_one_is_removed_at_the_next_start() {
    preflight();
    require_tools(&["nft"]);
    let ns = dropping_namespace();
    let netns = ns.path().display().to_string();
    let nt = Nettrace::spawn(&["--netns", &netns, "-p", "icmp", "--nft-trace"]);
    assert_eq!(our_tables(&ns).len(), 1);
    nt.signal(nix::sys::signal::Signal::SIGKILL);
    // The table is the killed socket's (NFT_TABLE_F_OWNER): the kernel removes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !our_tables(&ns).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left after SIGKILL: {:?}",
            our_tables(&ns)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A table left by a run on a kernel without owned tables, or by hand: a pid above
    // Linux's limit is never alive.
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "nft",
            "add",
            "table",
            "inet",
            "nettrace_trace_4194305",
        ])
        .status()
        .expect("nft add table");
    assert!(st.success());
    let nt = Nettrace::spawn(&["--netns", &netns, "-p", "icmp", "--nft-trace"]);
    let said = format!(
        "nettrace: removed nftables table nettrace_trace_4194305 left by an earlier run (netns {netns})"
    );
    assert!(nt.stderr_lines().contains(&said), "{:?}", nt.stderr_lines());
    let fin = nt.stop();
    fin.assert_success();
    assert!(our_tables(&ns).is_empty(), "{:?}", our_tables(&ns));
}
