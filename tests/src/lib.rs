//! nettrace integration test harness.
//!
//! Everything here needs root: the tests create network namespaces, veth pairs and bridges,
//! send real packets between them and run the real `nettrace` binary against that traffic.
//! A missing environment (not root, a missing tool, a missing binary) is a test failure,
//! never a skip.
//!
//! Traffic never leaves the machine: every address used lives inside namespaces created
//! here (10.250.0.0/16, and fd00:250::/32 for IPv6 topologies), and every namespace is deleted on `Drop`, including when a test
//! panics.
//!
//! Modules:
//! - [`env`]: `require_root`, `require_tools`, locating the binary under test.
//! - [`netns`]: the `Netns` RAII handle and the `Topology` builders.
//! - [`traffic`]: `ping`, `udp_send`, `tcp_exchange`.
//! - [`runner`]: `Nettrace` (spawn, wait for `begin tracing`, stop with a signal).
//! - [`output`]: parsers for text lines, timeline blocks and JSON lines, and assertions.
//! - [`kernel`]: what the running kernel offers for tracing functions (kprobes, fentry).
//! - [`bpf`]: program ids from `-v` output and `bpftool` checks.
//! - [`containerd`]: pods backed by real containers (private containerd, runc, CNI bridge).
//! - [`cluster`]: the real two-node bench cluster (`tests/kube/cluster.sh`): namespaces, pods,
//!   `kubectl exec`, the plugin run against it.

pub mod bpf;
pub mod cluster;
pub mod containerd;
pub mod env;
pub mod fakekube;
pub mod inject;
pub mod kernel;
pub mod netns;
pub mod output;
pub mod runner;
pub mod traffic;

pub use bpf::{assert_progs_gone, prog_exists, prog_ids_from_verbose};
pub use containerd::{Container, ContainerBench};
pub use env::{
    nettrace_bin, plugin_bin, require_root, require_tools, workspace_dir, DEFAULT_TOOLS,
};
pub use netns::{Netns, Topology};
pub use output::{
    assert_no_line, assert_subsequence, assert_subsequence_steps, dump, find_events, icmp6_reply,
    icmp6_request, icmp_reply, icmp_request, parse_drop_suffix, parse_json_lines, parse_line,
    parse_timeline, Block, Event, Step, TcpSummary,
};
pub use runner::{Finished, Nettrace};
pub use traffic::{
    in_netns, ping, ping_expect_loss, tcp_exchange, tcp_exchange_via, udp_send, TcpExchange,
};

/// Standard preamble for a privileged test: root, the usual tools and the binary under test
/// (checked before any namespace is created).
pub fn preflight() {
    require_root();
    require_tools(DEFAULT_TOOLS);
    nettrace_bin();
}
