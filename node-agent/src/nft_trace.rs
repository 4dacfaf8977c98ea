//! The engine of `--nft-trace`: nftables rule tracing for one network
//! namespace.
//!
//! # What it does
//!
//! [`NftTrace::start`] adds a table of ours, `inet nettrace_trace_<pid>`, with
//! two base chains, `prerouting` and `output`, at priority [`PRIORITY`]
//! (-350: after defragmentation at -400, before `raw` at -300 and conntrack
//! at -200, so before the chains of iptables, kube-proxy and most
//! rulesets). Their rules do `meta nftrace set 1` for the packets of the
//! [`Filter`] (L3 family, L4 protocol, addresses, ports; every packet without
//! those fields). From then on the kernel reports each nftables chain and
//! rule such a packet meets, in every table of the namespace, as an
//! `NFT_MSG_TRACE` message to the netlink group `NFNLGRP_NFTRACE`; our
//! second socket listens to it, and [`NftTrace::next_event`] decodes each
//! message into a [`TraceEvent`]. Events of our own table are left out.
//! [`NftTrace::rule`] turns a rule handle into a [`RuleInfo`] (comment and a
//! short list of its expressions), fetched with an `NFT_MSG_GETRULE` dump of
//! the chain and cached per (family, table, chain, handle).
//!
//! What is not traced: ARP (it crosses no `inet` hook; `-p arp` is refused),
//! chains that run before ours on a packet's first pass (`netdev` ingress,
//! `bridge` hooks, and chains of priority below -350 on prerouting or
//! output), and iptables-legacy rules (below).
//!
//! # Rule comments: nftables and iptables-nft
//!
//! nft keeps a rule's comment in the rule's user data (`NFTA_RULE_USERDATA`):
//! type-length-value records, type 0 (`NFTNL_UDATA_RULE_COMMENT`) holding a
//! NUL-terminated string. kube-proxy's nftables mode writes comments that way.
//! iptables-nft (Debian's `iptables`, 1.8.9 measured here) does not: it keeps
//! `-m comment --comment TEXT` as the x_tables `comment` match running under
//! `nft_compat`, an expression named `match` whose `NFTA_MATCH_NAME` is
//! `comment` and whose `NFTA_MATCH_INFO` is `struct xt_comment_info` (a
//! 256-byte NUL-terminated string). `nft --debug=netlink` shows it as
//! `[ match name comment rev 0 ]`. kube-proxy's iptables mode comments are of
//! that kind. [`RuleInfo::comment`] reads both; the user data wins when a
//! rule has both ([`CommentSource`] says which one was used).
//!
//! # NFTA_TRACE_ID and correlation with skb events
//!
//! `nft_trace_init()` computes the id once per base-chain evaluation as
//! `siphash_3u32(hash32_ptr(skb), skb_get_hash(skb), skb->skb_iif, trace_key)`
//! (newer kernels spell the hash `skb_get_hash_net(net, skb)`), where
//! `trace_key` is a random key drawn once per boot (`net_get_random_once`).
//! Checked: the current upstream source; this machine's 6.18 (`nft_trace_init`
//! and `siphash_3u32` in `/proc/kallsyms`); Debian's 6.1 and 6.12
//! `nf_tables.ko`, which import `siphash_3u32` and hold a static `trace_key`.
//! The code that introduced tracing used `jhash_2words(hash32_ptr(skb),
//! skb_get_hash(skb), skb->skb_iif)` without a secret, which user space could
//! have recomputed from an skb address; none of the kernels we support does
//! that any more. So the id cannot be derived from an skb address: it only
//! groups the events of one packet pass, as the same skb, hash and input
//! interface give the same id in every chain it meets (it changes when
//! `skb_iif` changes, e.g. between the output path and the receive path of a
//! packet sent over `lo`).
//!
//! Correlation with the skb events of the eBPF side therefore goes by the
//! packet itself: the first event of each base-chain pass carries the
//! network header (`NFTA_TRACE_NETWORK_HEADER`, up to 40 bytes) and the
//! transport header (up to 20 bytes). [`PacketKey`] takes from them the
//! addresses, protocol, IPv4 identification, ports and TCP sequence or ICMP
//! id/sequence, and [`correlate`] picks the skb event with the same key
//! nearest in time to when the trace message was read
//! ([`TraceEvent::received_ns`], `CLOCK_MONOTONIC` like `bpf_ktime_get_ns`).
//! [`Correlator`] remembers the key of each trace id so that the later
//! events of the same pass (which carry no headers) are matched too. An
//! encapsulated packet is compared by its outer headers here, while the
//! eBPF side reports the inner packet: such packets do not correlate.
//!
//! # Removal, and what a caller must do about signals
//!
//! The table is created with `NFT_TABLE_F_OWNER` (Linux 5.12 and later): it
//! belongs to our control socket, so the kernel removes it when that socket
//! is closed, which also happens when the process is killed (even by
//! `SIGKILL`) or crashes; other processes cannot change or delete it (they
//! get `EPERM`). On older kernels the flag is refused and the table is made
//! without it ([`NftTrace::kernel_owned`] says which). [`NftTrace::finish`] (or dropping the [`NftTrace`])
//! removes it explicitly. [`NftTrace::start`] also removes every table named
//! with [`TABLE_PREFIX`] whose pid is no longer alive (left by a killed run
//! on a kernel without the owner flag) and lists them in
//! [`NftTrace::removed_stale`] so that the caller can say so.
//!
//! Callers that handle `SIGINT`/`SIGTERM` the usual way (a flag or
//! `tokio::signal`, then leaving the event loop) need to do nothing more than
//! call `finish()` or let the tracer drop. Never call `finish()` from inside
//! a signal handler (it allocates and waits for the kernel's answer): a
//! caller that installs a raw handler and wants the table gone before the
//! process goes on or exits takes [`NftTrace::signal_cleanup`] beforehand,
//! stores it in a static, and calls [`SignalCleanup::run`] in the handler; it
//! only calls `send(2)`, which is async-signal-safe.
//!
//! # iptables-legacy
//!
//! iptables-legacy rules run in x_tables, not in nf_tables, and produce no
//! trace events. When the namespace has iptables-legacy tables
//! (`/proc/net/ip_tables_names` or `ip6_tables_names`, read from inside the
//! namespace) and no nftables table, [`NftTrace::start`] fails with
//! [`LegacyOnly`]; when it has both, [`NftTrace::warnings`] says that the
//! legacy ones are not traced.
//!
//! # Network namespaces
//!
//! A netlink socket belongs to the network namespace it was created in.
//! [`Netns::Path`] and [`Netns::Fd`] open both sockets (and read the legacy
//! table names) on a short-lived thread that entered the namespace with
//! `setns(2)`; everything after that goes through the sockets, from any
//! thread, without touching the caller's namespace.
//!
//! # Crates
//!
//! `netlink-packet-netfilter` (pure Rust, MIT) encodes every request (batch
//! begin/end, table, chains, rules with their `meta`/`payload`/`cmp`/
//! `immediate` expressions, dumps, deletions) and decodes table and rule
//! dumps; `netlink-sys` makes the sockets. The crate leaves
//! `NFT_MSG_TRACE` attributes and x_tables match/target data undecoded, so
//! those two are decoded here from the kernel's UAPI layout
//! (`include/uapi/linux/netfilter/nf_tables.h`). `rustables` was not used: it
//! is GPL-3.0-or-later (this project is GPL-2.0-only) and generates its
//! bindings with bindgen at build time; `nftnl` needs the libnftnl C library.

// The session (`crate::nft_rules`) uses the tracer, its events and rule
// lookups, and relies on Drop and the kernel-owned table for removal; the
// explicit `finish`, the signal-handler cleanup, the counters and the
// skb-address correlation are exercised by this module's tests only.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_APPEND,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook,
    HookNumber, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableFlags, TableMessage,
    VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use nettrace_common::event::{Event, Packet, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, L4};
use nettrace_common::filter::Filter;

/// Name prefix of our tables; the pid of the process that made one follows.
pub const TABLE_PREFIX: &str = "nettrace_trace_";

/// Priority of our base chains: after defragmentation (-400), before `raw`
/// (-300), conntrack (-200) and the `filter` priority (0).
pub const PRIORITY: i32 = -350;

/// What to say about iptables-legacy rules.
pub const LEGACY_WARNING: &str =
    "iptables-legacy rules cannot be traced with --nft-trace; only nftables (and iptables-nft) rules";

/// `NFPROTO_INET`.
pub const NFPROTO_INET: u8 = 1;
/// `NFPROTO_IPV4`: the family of iptables-nft's `ip` tables.
pub const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_ARP`.
pub const NFPROTO_ARP: u8 = 3;
/// `NFPROTO_NETDEV`.
pub const NFPROTO_NETDEV: u8 = 5;
/// `NFPROTO_BRIDGE`.
pub const NFPROTO_BRIDGE: u8 = 7;
/// `NFPROTO_IPV6`.
pub const NFPROTO_IPV6: u8 = 10;

// include/uapi/linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNLGRP_NFTRACE: u32 = 9;

// include/uapi/linux/netfilter/nf_tables.h
const NFT_MSG_TRACE: u8 = 17;

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_LL_HEADER: u16 = 7;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_IIFTYPE: u16 = 11;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_OIFTYPE: u16 = 13;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;

const NFT_TRACETYPE_POLICY: u32 = 1;
const NFT_TRACETYPE_RETURN: u32 = 2;
const NFT_TRACETYPE_RULE: u32 = 3;

const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

// x_tables match/target expressions of nft_compat.
const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_INFO: u16 = 3;

// libnftnl's rule user data record holding the comment.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

// include/uapi/linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

const NF_ACCEPT: u32 = 1;

/// How long to wait for the kernel's answer to one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Tracers started by this process so far (the second one in a process gets a
/// suffix, so that two namespaces or two runs never share a name).
static STARTED: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// The network namespace to trace.
#[derive(Debug, Clone, Copy)]
pub enum Netns<'a> {
    /// The calling thread's namespace.
    Current,
    /// A namespace file such as `/proc/PID/ns/net` or `/run/netns/NAME`.
    Path(&'a Path),
    /// An open namespace file.
    Fd(BorrowedFd<'a>),
}

/// Why a trace event was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A rule matched (`NFT_TRACETYPE_RULE`): the verdict is the rule's.
    Rule,
    /// The end of a chain was reached, or a rule returned
    /// (`NFT_TRACETYPE_RETURN`).
    Return,
    /// The base chain's policy was applied (`NFT_TRACETYPE_POLICY`).
    Policy,
    /// Another type number.
    Other(u32),
}

impl fmt::Display for TraceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceKind::Rule => f.write_str("rule"),
            TraceKind::Return => f.write_str("return"),
            TraceKind::Policy => f.write_str("policy"),
            TraceKind::Other(n) => write!(f, "type {n}"),
        }
    }
}

/// A netfilter or nf_tables verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `NF_ACCEPT`.
    Accept,
    /// `NF_DROP`.
    Drop,
    /// `NF_STOLEN`.
    Stolen,
    /// `NF_QUEUE` to this queue number.
    Queue(u16),
    /// `NF_REPEAT`.
    Repeat,
    /// `NF_STOP`.
    Stop,
    /// `NFT_CONTINUE`: go on with the next rule.
    Continue,
    /// `NFT_BREAK`: the rule did not match.
    Break,
    /// `NFT_JUMP` to this chain.
    Jump(String),
    /// `NFT_GOTO` to this chain.
    Goto(String),
    /// `NFT_RETURN`.
    Return,
    /// Another code.
    Other(u32),
}

impl Verdict {
    /// Decodes a verdict code (and the chain of a jump or goto).
    pub fn from_code(code: u32, chain: Option<String>) -> Verdict {
        match code as i32 {
            -1 => Verdict::Continue,
            -2 => Verdict::Break,
            -3 => Verdict::Jump(chain.unwrap_or_default()),
            -4 => Verdict::Goto(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            c if c >= 0 => match code & 0xff {
                0 => Verdict::Drop,
                1 => Verdict::Accept,
                2 => Verdict::Stolen,
                3 => Verdict::Queue((code >> 16) as u16),
                4 => Verdict::Repeat,
                5 => Verdict::Stop,
                _ => Verdict::Other(code),
            },
            _ => Verdict::Other(code),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Stolen => f.write_str("stolen"),
            Verdict::Queue(n) => write!(f, "queue {n}"),
            Verdict::Repeat => f.write_str("repeat"),
            Verdict::Stop => f.write_str("stop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Break => f.write_str("break"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Other(n) => write!(f, "verdict {n:#x}"),
        }
    }
}

/// One decoded `NFT_MSG_TRACE` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// `NFTA_TRACE_ID`: the same for every event of one packet pass (see the
    /// module documentation); not computable from the skb address.
    pub id: u32,
    /// Family of the base chain's table (`NFPROTO_*`, see [`family_name`]).
    pub family: u8,
    /// `NFTA_TRACE_NFPROTO`: the packet's family (IPv4 or IPv6 in an `inet`
    /// table).
    pub nfproto: Option<u8>,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// The rule's handle; absent for policies and the implicit return at the
    /// end of a chain.
    pub rule_handle: Option<u64>,
    /// Why the event was sent.
    pub kind: TraceKind,
    /// The rule's verdict, or the policy for [`TraceKind::Policy`].
    pub verdict: Option<Verdict>,
    /// Input interface index, in the traced namespace.
    pub iif: Option<u32>,
    /// Input interface type (`ARPHRD_*`).
    pub iif_type: Option<u16>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Output interface type.
    pub oif_type: Option<u16>,
    /// `skb->mark`, when not zero.
    pub mark: Option<u32>,
    /// Up to 20 bytes of link-layer header (first event of a pass only).
    pub ll_header: Option<Vec<u8>>,
    /// Up to 40 bytes of network header (first event of a pass only).
    pub network_header: Option<Vec<u8>>,
    /// Up to 20 bytes of transport header (first event of a pass only).
    pub transport_header: Option<Vec<u8>>,
    /// `CLOCK_MONOTONIC` nanoseconds when user space read the message.
    pub received_ns: u64,
}

impl TraceEvent {
    /// Decodes the attributes of an `NFT_MSG_TRACE` message (the bytes after
    /// the `nfgenmsg` header).
    pub fn decode(family: u8, attrs: &[u8], received_ns: u64) -> Result<TraceEvent> {
        let mut ev = TraceEvent {
            id: 0,
            family,
            nfproto: None,
            table: String::new(),
            chain: String::new(),
            rule_handle: None,
            kind: TraceKind::Other(0),
            verdict: None,
            iif: None,
            iif_type: None,
            oif: None,
            oif_type: None,
            mark: None,
            ll_header: None,
            network_header: None,
            transport_header: None,
            received_ns,
        };
        let mut policy = None;
        let mut have_id = false;
        for (kind, v) in raw_attrs(attrs)? {
            match kind {
                NFTA_TRACE_TABLE => ev.table = cstr(v),
                NFTA_TRACE_CHAIN => ev.chain = cstr(v),
                NFTA_TRACE_RULE_HANDLE => ev.rule_handle = Some(be64(v)?),
                NFTA_TRACE_TYPE => {
                    ev.kind = match be32(v)? {
                        NFT_TRACETYPE_RULE => TraceKind::Rule,
                        NFT_TRACETYPE_RETURN => TraceKind::Return,
                        NFT_TRACETYPE_POLICY => TraceKind::Policy,
                        n => TraceKind::Other(n),
                    }
                }
                NFTA_TRACE_VERDICT => {
                    let mut code = None;
                    let mut chain = None;
                    for (k, v) in raw_attrs(v)? {
                        match k {
                            NFTA_VERDICT_CODE => code = Some(be32(v)?),
                            NFTA_VERDICT_CHAIN => chain = Some(cstr(v)),
                            _ => {}
                        }
                    }
                    ev.verdict = code.map(|c| Verdict::from_code(c, chain));
                }
                NFTA_TRACE_ID => {
                    ev.id = be32(v)?;
                    have_id = true;
                }
                NFTA_TRACE_LL_HEADER => ev.ll_header = Some(v.to_vec()),
                NFTA_TRACE_NETWORK_HEADER => ev.network_header = Some(v.to_vec()),
                NFTA_TRACE_TRANSPORT_HEADER => ev.transport_header = Some(v.to_vec()),
                NFTA_TRACE_IIF => ev.iif = Some(be32(v)?),
                NFTA_TRACE_IIFTYPE => ev.iif_type = Some(be16(v)?),
                NFTA_TRACE_OIF => ev.oif = Some(be32(v)?),
                NFTA_TRACE_OIFTYPE => ev.oif_type = Some(be16(v)?),
                NFTA_TRACE_MARK => ev.mark = Some(be32(v)?),
                NFTA_TRACE_NFPROTO => ev.nfproto = Some(be32(v)? as u8),
                NFTA_TRACE_POLICY => policy = Some(be32(v)?),
                _ => {}
            }
        }
        if !have_id {
            bail!("nftables trace message without NFTA_TRACE_ID");
        }
        if ev.kind == TraceKind::Policy {
            if let Some(p) = policy {
                ev.verdict = Some(Verdict::from_code(p, None));
            }
        }
        Ok(ev)
    }

    /// The packet seen by this event, when it carries the headers.
    pub fn packet_key(&self) -> Option<PacketKey> {
        PacketKey::from_headers(
            self.network_header.as_deref()?,
            self.transport_header.as_deref(),
        )
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trace id {:08x} {} {} {} {}",
            self.id,
            family_name(self.family),
            self.table,
            self.chain,
            self.kind
        )?;
        if let Some(h) = self.rule_handle {
            write!(f, " handle {h}")?;
        }
        if let Some(v) = &self.verdict {
            write!(f, " verdict {v}")?;
        }
        Ok(())
    }
}

/// The name nft gives a table family.
pub fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_ARP => "arp",
        NFPROTO_NETDEV => "netdev",
        NFPROTO_BRIDGE => "bridge",
        NFPROTO_IPV6 => "ip6",
        _ => "unknown",
    }
}

/// Where a rule's comment was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentSource {
    /// The rule's user data (nft, kube-proxy's nftables mode).
    UserData,
    /// An x_tables `comment` match (iptables-nft `-m comment`).
    XtMatch,
}

/// What a rule handle stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Table family (`NFPROTO_*`).
    pub family: u8,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// The rule's handle.
    pub handle: u64,
    /// The rule's comment.
    pub comment: Option<String>,
    /// Where the comment came from.
    pub comment_source: Option<CommentSource>,
    /// The rule's expressions in order, briefly: `meta`, `cmp`, `payload`,
    /// `counter`..., `match NAME`/`target NAME` for x_tables extensions, and
    /// the verdict of an `immediate` (`drop`, `jump CHAIN`).
    pub exprs: Vec<String>,
}

impl RuleInfo {
    /// One line: the expressions, then the comment.
    pub fn text(&self) -> String {
        let mut s = self.exprs.join(" ");
        if let Some(c) = &self.comment {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("comment \"{c}\""));
        }
        s
    }
}

/// The namespace has iptables-legacy tables and no nftables table: nothing
/// of its firewall can be traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyOnly {
    /// The legacy tables (`filter`, `nat`, ...; IPv6 ones as `ip6 NAME`).
    pub tables: Vec<String>,
}

impl fmt::Display for LegacyOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{LEGACY_WARNING} (this network namespace has the iptables-legacy tables {} and no nftables table)",
            self.tables.join(", ")
        )
    }
}

impl std::error::Error for LegacyOnly {}

/// A request the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// What was asked.
    pub what: String,
    /// The errno.
    pub errno: i32,
    /// The kernel's extended-ack message, if any.
    pub message: Option<String>,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {}

/// Removes our table from a signal handler: see the module documentation.
/// Made by [`NftTrace::signal_cleanup`]; it holds its own duplicate of the
/// control socket (never closed) and a prepared message, so it stays valid
/// after the tracer is gone (then it does nothing useful and no harm).
#[derive(Debug, Clone, Copy)]
pub struct SignalCleanup {
    fd: RawFd,
    msg: &'static [u8],
}

impl SignalCleanup {
    /// Asks the kernel to delete the table. Async-signal-safe: one
    /// non-blocking `send(2)`, no allocation, no lock; the answer is not
    /// awaited.
    pub fn run(&self) {
        // SAFETY: the pointer and length describe a leaked, immutable buffer.
        unsafe {
            libc::send(
                self.fd,
                self.msg.as_ptr().cast(),
                self.msg.len(),
                libc::MSG_DONTWAIT,
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The tracer
// ---------------------------------------------------------------------------

/// nftables tracing in one network namespace (see the module documentation).
pub struct NftTrace {
    control: Control,
    events: Socket,
    table: String,
    owned: bool,
    removed: bool,
    stale: Vec<String>,
    warnings: Vec<String>,
    queue: VecDeque<TraceEvent>,
    lost: u64,
    undecodable: u64,
    rules: HashMap<(u8, String, String, u64), Option<Arc<RuleInfo>>>,
    cleanup: Option<SignalCleanup>,
    buf: Vec<u8>,
}

impl NftTrace {
    /// Starts tracing the packets of `filter` in `netns`: removes stale
    /// tables of ours, adds ours and listens to the trace events. Fails with
    /// [`LegacyOnly`] when the namespace only has iptables-legacy tables, and
    /// with an error that names the filter field when a filter cannot be
    /// expressed (ARP, which crosses no `inet` hook).
    pub fn start(netns: Netns<'_>, filter: &Filter) -> Result<NftTrace> {
        let rules = trace_rules(filter)?;
        let opened = in_netns(netns, open_sockets)?;
        let mut control = opened.control;

        let tables = control.list_tables(0)?;
        let nft_tables: Vec<&(u8, String)> = tables
            .iter()
            .filter(|(_, name)| !name.starts_with(TABLE_PREFIX))
            .collect();
        let mut warnings = Vec::new();
        if !opened.legacy.is_empty() {
            if nft_tables.is_empty() {
                return Err(LegacyOnly {
                    tables: opened.legacy,
                }
                .into());
            }
            warnings.push(format!(
                "{LEGACY_WARNING}; the iptables-legacy tables {} of this network namespace are not traced",
                opened.legacy.join(", ")
            ));
        }

        let mut stale = Vec::new();
        for (family, name) in &tables {
            if *family != NFPROTO_INET || !is_stale(name) {
                continue;
            }
            match control.delete_table(NFPROTO_INET, name) {
                Ok(()) => stale.push(name.clone()),
                // Owned by a live socket after all (another pid namespace),
                // or gone meanwhile.
                Err(e) if errno_of(&e).is_some() => {}
                Err(e) => return Err(e),
            }
        }

        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let table = if n == 0 {
            format!("{TABLE_PREFIX}{}", std::process::id())
        } else {
            format!("{TABLE_PREFIX}{}_{n}", std::process::id())
        };
        let owned = match control.add_trace_table(&table, &rules, true) {
            Ok(()) => true,
            Err(e) if matches!(errno_of(&e), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                // A kernel before 5.12 knows no NFT_TABLE_F_OWNER.
                control.add_trace_table(&table, &rules, false)?;
                false
            }
            Err(e) => return Err(e),
        };
        Ok(NftTrace {
            control,
            events: opened.events,
            table,
            owned,
            removed: false,
            stale,
            warnings,
            queue: VecDeque::new(),
            lost: 0,
            undecodable: 0,
            rules: HashMap::new(),
            cleanup: None,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Our table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the kernel owns the table to our socket (removes it when the
    /// process ends, however it ends).
    pub fn kernel_owned(&self) -> bool {
        self.owned
    }

    /// Tables left by runs that are gone, removed by [`NftTrace::start`].
    pub fn removed_stale(&self) -> &[String] {
        &self.stale
    }

    /// What the caller should tell the user (iptables-legacy tables that
    /// are not traced).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Trace messages the kernel could not deliver because our socket's
    /// buffer was full (counted per overflow, not per message).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Trace messages skipped because they could not be decoded.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// The socket the trace events arrive on, to wait for it with
    /// `poll(2)` or tokio's `AsyncFd`; then call [`NftTrace::try_next_event`].
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// The next trace event not of our own table, waiting up to `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<TraceEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !wait_readable(self.events.as_raw_fd(), left)? {
                return Ok(None);
            }
            match recv(self.events.as_raw_fd(), &mut self.buf) {
                Ok(n) => {
                    let now = monotonic_ns();
                    let n = n.min(self.buf.len());
                    for m in split_messages(&self.buf[..n]) {
                        if m.ty != (NFNL_SUBSYS_NFTABLES << 8) | u16::from(NFT_MSG_TRACE) {
                            continue;
                        }
                        let Some(family) = m.body.first() else {
                            continue;
                        };
                        // A message we cannot read (a kernel with another
                        // layout) is skipped and counted.
                        let Ok(ev) =
                            TraceEvent::decode(*family, m.body.get(4..).unwrap_or(&[]), now)
                        else {
                            self.undecodable += 1;
                            continue;
                        };
                        if ev.table != self.table || ev.family != NFPROTO_INET {
                            self.queue.push_back(ev);
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.lost += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("reading nftables trace events"),
            }
            // Nothing usable in that datagram (our own table's events): the
            // next round polls again, and returns when nothing is waiting.
        }
    }

    /// The next trace event if one is waiting, without blocking.
    pub fn try_next_event(&mut self) -> Result<Option<TraceEvent>> {
        self.next_event(Duration::ZERO)
    }

    /// The rule behind a handle, from an `NFT_MSG_GETRULE` dump of its
    /// chain; cached. `None` when the chain no longer has that rule.
    pub fn rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        handle: u64,
    ) -> Result<Option<Arc<RuleInfo>>> {
        let key = (family, table.to_string(), chain.to_string(), handle);
        if let Some(hit) = self.rules.get(&key) {
            return Ok(hit.clone());
        }
        for info in self.control.chain_rules(family, table, chain)? {
            let k = (family, table.to_string(), chain.to_string(), info.handle);
            self.rules.insert(k, Some(Arc::new(info)));
        }
        Ok(self.rules.entry(key).or_insert(None).clone())
    }

    /// The rule of a trace event, when it names one.
    pub fn rule_of(&mut self, ev: &TraceEvent) -> Result<Option<Arc<RuleInfo>>> {
        match ev.rule_handle {
            Some(h) => self.rule(ev.family, &ev.table, &ev.chain, h),
            None => Ok(None),
        }
    }

    /// A handle that removes the table from a signal handler.
    pub fn signal_cleanup(&mut self) -> Result<SignalCleanup> {
        if let Some(c) = self.cleanup {
            return Ok(c);
        }
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
        let fd = unsafe { libc::fcntl(self.control.sock.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("duplicating the nftables socket");
        }
        // Sequence number 0 is never one of our requests: the answer, if
        // any, is skipped by the control socket's reader.
        let msg = delete_table_batch(&self.table, 0);
        let c = SignalCleanup {
            fd,
            msg: Box::leak(msg.into_boxed_slice()),
        };
        self.cleanup = Some(c);
        Ok(c)
    }

    /// Removes the table and stops.
    pub fn finish(mut self) -> Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        match self.control.delete_table(NFPROTO_INET, &self.table) {
            Err(e) if errno_of(&e) == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

impl Drop for NftTrace {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// A table name of ours whose process is gone.
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TABLE_PREFIX) else {
        return false;
    };
    let Ok(pid) = rest.split('_').next().unwrap_or("").parse::<i32>() else {
        return false;
    };
    if pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn errno_of(e: &anyhow::Error) -> Option<i32> {
    e.downcast_ref::<NetlinkError>().map(|n| n.errno)
}

// ---------------------------------------------------------------------------
// Filter to rules
// ---------------------------------------------------------------------------

/// One match of a rule of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    /// `meta nfproto`.
    NfProto(u8),
    /// `meta l4proto`.
    L4Proto(u8),
    /// Network header bytes at an offset.
    Network { offset: u32, value: Vec<u8> },
    /// Transport header bytes at an offset.
    Transport { offset: u32, value: Vec<u8> },
}

/// The rules (each a list of matches, all to be true) whose packets get
/// `nftrace` set. A packet is traced when any rule matches; "source or
/// destination" filters become two rules.
fn trace_rules(f: &Filter) -> Result<Vec<Vec<Cond>>> {
    f.validate().map_err(|e| anyhow!("{e}"))?;
    let has_addrs = f.saddr.is_some() || f.daddr.is_some() || f.addr.is_some();
    let has_ports = f.sport.is_some() || f.dport.is_some() || f.port.is_some();
    let v6 = match f.proto.and_then(|p| p.l3) {
        Some(ETH_P_IP) => Some(false),
        Some(ETH_P_IPV6) => Some(true),
        Some(ETH_P_ARP) => {
            bail!("--nft-trace cannot trace '-p arp': ARP packets cross no inet hook of nftables")
        }
        Some(other) => bail!("--nft-trace cannot trace ethertype {other:#06x}"),
        None if has_addrs => Some(f.is_v6()),
        None => None,
    };
    let l4s: Vec<Option<u8>> = match f.proto.and_then(|p| p.l4) {
        Some(p) => vec![Some(p)],
        None if has_ports => vec![Some(6), Some(17)],
        None => vec![None],
    };
    let (soff, doff) = if v6 == Some(true) { (8, 24) } else { (12, 16) };
    let addr_bytes = |a: &IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let net = |offset, a: &IpAddr| Cond::Network {
        offset,
        value: addr_bytes(a),
    };
    let th = |offset, p: u16| Cond::Transport {
        offset,
        value: p.to_be_bytes().to_vec(),
    };
    let addr_alts: Vec<Vec<Cond>> = match &f.addr {
        Some(a) => vec![vec![net(soff, a)], vec![net(doff, a)]],
        None => vec![vec![]],
    };
    let port_alts: Vec<Vec<Cond>> = match f.port {
        Some(p) => vec![vec![th(0, p)], vec![th(2, p)]],
        None => vec![vec![]],
    };
    let mut rules = Vec::new();
    for l4 in &l4s {
        for a in &addr_alts {
            for p in &port_alts {
                let mut r = Vec::new();
                if let Some(v6) = v6 {
                    r.push(Cond::NfProto(if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }));
                }
                if let Some(l4) = l4 {
                    r.push(Cond::L4Proto(*l4));
                }
                if let Some(s) = &f.saddr {
                    r.push(net(soff, s));
                }
                if let Some(d) = &f.daddr {
                    r.push(net(doff, d));
                }
                r.extend(a.iter().cloned());
                if let Some(s) = f.sport {
                    r.push(th(0, s));
                }
                if let Some(d) = f.dport {
                    r.push(th(2, d));
                }
                r.extend(p.iter().cloned());
                rules.push(r);
            }
        }
    }
    Ok(rules)
}

/// The expressions of one rule of ours: its matches, then
/// `meta nftrace set 1`.
fn rule_exprs(conds: &[Cond]) -> Vec<ListAttribute<ExpressionAttribute>> {
    let reg = Register::Reg1;
    let cmp = |value: Vec<u8>| {
        Expressions::Cmp(vec![
            Cmp::SourceRegister(reg),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(value)),
        ])
    };
    let mut out = Vec::new();
    for c in conds {
        match c {
            Cond::NfProto(v) | Cond::L4Proto(v) => {
                let key = if matches!(c, Cond::NfProto(_)) {
                    MetaKey::Nfproto
                } else {
                    MetaKey::L4Proto
                };
                out.push(Expressions::Meta(vec![
                    Meta::Key(key),
                    Meta::DestinationRegister(reg),
                ]));
                out.push(cmp(vec![*v]));
            }
            Cond::Network { offset, value } | Cond::Transport { offset, value } => {
                let base = if matches!(c, Cond::Network { .. }) {
                    NFT_PAYLOAD_NETWORK_HEADER
                } else {
                    NFT_PAYLOAD_TRANSPORT_HEADER
                };
                out.push(Expressions::Payload(vec![
                    Payload::DestinationRegister(reg),
                    Payload::Base(base),
                    Payload::Offset(*offset),
                    Payload::Len(value.len() as u32),
                ]));
                out.push(cmp(value.clone()));
            }
        }
    }
    out.push(Expressions::Immediate(vec![
        Immediate::DestinationRegister(reg),
        Immediate::Data(DataAttribute::Value(vec![1])),
    ]));
    out.push(Expressions::Meta(vec![
        Meta::Key(MetaKey::NftraceBit),
        Meta::SourceRegister(reg),
    ]));
    out.into_iter().map(Into::into).collect()
}

// ---------------------------------------------------------------------------
// Sockets and the namespace
// ---------------------------------------------------------------------------

struct Opened {
    control: Control,
    events: Socket,
    legacy: Vec<String>,
}

/// Runs `f` in `netns`: here, or on a thread that entered it.
fn in_netns<T: Send>(netns: Netns<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file;
    let fd = match netns {
        Netns::Current => return f(),
        Netns::Path(p) => {
            file = File::open(p)
                .with_context(|| format!("opening network namespace {}", p.display()))?;
            file.as_fd()
        }
        Netns::Fd(fd) => fd,
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the network namespace (setns)")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("the thread that entered the network namespace panicked"))?
    })
}

/// Opens the control and event sockets and reads the iptables-legacy table
/// names, in the calling thread's namespace.
fn open_sockets() -> Result<Opened> {
    let control = Control::open()?;
    let mut events =
        Socket::new(NETLINK_NETFILTER).context("opening a netfilter netlink socket")?;
    events
        .bind_auto()
        .context("binding a netfilter netlink socket")?;
    events
        .add_membership(NFNLGRP_NFTRACE)
        .context("joining the nftables trace group (NFNLGRP_NFTRACE)")?;
    set_rcvbuf(events.as_raw_fd(), 8 << 20);
    let mut legacy = Vec::new();
    for (file, prefix) in [("ip_tables_names", ""), ("ip6_tables_names", "ip6 ")] {
        let path = format!("/proc/thread-self/net/{file}");
        if let Ok(text) = std::fs::read_to_string(&path) {
            legacy.extend(text.split_whitespace().map(|t| format!("{prefix}{t}")));
        }
    }
    Ok(Opened {
        control,
        events,
        legacy,
    })
}

/// The request socket, the owner of our table.
struct Control {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// One netlink message of a datagram.
struct RawMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    /// After the netlink header.
    body: &'a [u8],
    /// The whole message.
    whole: &'a [u8],
}

fn split_messages(mut buf: &[u8]) -> Vec<RawMsg<'_>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        out.push(RawMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
            body: &buf[NLMSG_HDRLEN..len],
            whole: &buf[..len],
        });
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

/// The errno and extended-ack text of an `NLMSG_ERROR` message (0 for an
/// acknowledgement).
fn error_of(m: &RawMsg<'_>) -> (i32, Option<String>) {
    let Some(code) = m.body.get(..4) else {
        return (libc::EIO, None);
    };
    let errno = -i32::from_ne_bytes(code.try_into().unwrap());
    let mut text = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        let mut off = 4 + NLMSG_HDRLEN;
        if m.flags & NLM_F_CAPPED == 0 {
            // The whole request follows.
            if let Some(h) = m.body.get(4..8) {
                off = 4 + u32::from_ne_bytes(h.try_into().unwrap()) as usize;
            }
        }
        if let Ok(attrs) = raw_attrs(m.body.get((off + 3) & !3..).unwrap_or(&[])) {
            for (k, v) in attrs {
                if k == NLMSGERR_ATTR_MSG {
                    text = Some(cstr(v));
                }
            }
        }
    }
    (errno, text)
}

/// Encodes one nfnetlink message.
fn encode(
    family: u8,
    res_id: u16,
    inner: impl Into<NetfilterMessageInner>,
    flags: u16,
    seq: u32,
) -> Vec<u8> {
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::from(family), 0, res_id),
        inner,
    ));
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// A batch deleting one `inet` table, as [`SignalCleanup`] sends it.
fn delete_table_batch(table: &str, seq: u32) -> Vec<u8> {
    let mut buf = encode(
        0,
        NFNL_SUBSYS_NFTABLES,
        ControlMessage::BatchBegin,
        NLM_F_REQUEST,
        seq,
    );
    buf.extend(encode(
        NFPROTO_INET,
        0,
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }),
        NLM_F_REQUEST,
        seq,
    ));
    buf.extend(encode(
        0,
        NFNL_SUBSYS_NFTABLES,
        ControlMessage::BatchEnd,
        NLM_F_REQUEST,
        seq,
    ));
    buf
}

impl Control {
    fn open() -> Result<Control> {
        let mut sock =
            Socket::new(NETLINK_NETFILTER).context("opening a netfilter netlink socket")?;
        sock.bind_auto()
            .context("binding a netfilter netlink socket")?;
        // Errors carry the kernel's explanation, and not our whole request.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        set_rcvbuf(sock.as_raw_fd(), 4 << 20);
        Ok(Control {
            sock,
            seq: 1,
            buf: vec![0; 256 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, buf: &[u8]) -> Result<()> {
        let n = self
            .sock
            .send(buf, 0)
            .context("sending to the kernel's nftables")?;
        if n != buf.len() {
            bail!(
                "short send to the kernel's nftables ({n} of {} bytes)",
                buf.len()
            );
        }
        Ok(())
    }

    /// Receives one datagram, waiting until `deadline`; `None` at the
    /// deadline.
    fn recv_until(&mut self, deadline: Instant) -> Result<Option<usize>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !wait_readable(self.sock.as_raw_fd(), left)? {
                return Ok(None);
            }
            match recv(self.sock.as_raw_fd(), &mut self.buf) {
                Ok(n) if n > self.buf.len() => {
                    bail!("an nftables answer of {n} bytes did not fit in the buffer")
                }
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e).context("reading the kernel's nftables answer"),
            }
        }
    }

    /// Sends the messages as one nftables transaction and waits for every
    /// acknowledgement. Each message comes with a description for errors.
    fn batch(&mut self, msgs: Vec<(u8, NfTablesMessage, u16, String)>) -> Result<()> {
        let begin = self.next_seq();
        let mut buf = encode(
            0,
            NFNL_SUBSYS_NFTABLES,
            ControlMessage::BatchBegin,
            NLM_F_REQUEST,
            begin,
        );
        let mut pending: HashMap<u32, String> = HashMap::new();
        for (family, msg, flags, what) in msgs {
            let seq = self.next_seq();
            buf.extend(encode(
                family,
                0,
                msg,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
            ));
            pending.insert(seq, what);
        }
        let end = self.next_seq();
        buf.extend(encode(
            0,
            NFNL_SUBSYS_NFTABLES,
            ControlMessage::BatchEnd,
            NLM_F_REQUEST,
            end,
        ));
        self.send(&buf)?;

        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut first_err: Option<NetlinkError> = None;
        while !pending.is_empty() {
            // After an error the other answers may not come: wait briefly.
            let until = match first_err {
                Some(_) => deadline.min(Instant::now() + Duration::from_millis(100)),
                None => deadline,
            };
            let Some(n) = self.recv_until(until)? else {
                break;
            };
            for m in split_messages(&self.buf[..n]) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let what = if m.seq == begin || m.seq == end {
                    Some("nftables transaction".to_string())
                } else {
                    pending.remove(&m.seq)
                };
                let Some(what) = what else { continue };
                let (errno, message) = error_of(&m);
                if errno != 0 && first_err.is_none() {
                    first_err = Some(NetlinkError {
                        what,
                        errno,
                        message,
                    });
                }
            }
            if first_err.is_some() && pending.is_empty() {
                break;
            }
        }
        if let Some(e) = first_err {
            return Err(e.into());
        }
        if !pending.is_empty() {
            bail!(
                "the kernel did not answer {} nftables request(s) within {:?}",
                pending.len(),
                ANSWER_TIMEOUT
            );
        }
        Ok(())
    }

    /// Sends a dump request and collects the answers.
    fn dump(
        &mut self,
        family: u8,
        msg: NfTablesMessage,
        what: &str,
    ) -> Result<Vec<(u8, NfTablesMessage)>> {
        let seq = self.next_seq();
        let req = encode(family, 0, msg, NLM_F_REQUEST | NLM_F_DUMP, seq);
        self.send(&req)?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut out = Vec::new();
        loop {
            let Some(n) = self.recv_until(deadline)? else {
                bail!("the kernel did not finish the dump of {what} within {ANSWER_TIMEOUT:?}");
            };
            for m in split_messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let (errno, message) = error_of(&m);
                        if errno == 0 {
                            continue;
                        }
                        return Err(NetlinkError {
                            what: format!("listing {what}"),
                            errno,
                            message,
                        }
                        .into());
                    }
                    _ => {}
                }
                let Some(&fam) = m.body.first() else { continue };
                // A message the crate cannot read is skipped: one odd
                // table or rule must not hide the others.
                if let Ok(parsed) = NetlinkMessage::<NetfilterMessage>::deserialize(m.whole) {
                    if let NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::NfTables(msg),
                        ..
                    }) = parsed.payload
                    {
                        out.push((fam, msg));
                    }
                }
            }
        }
    }

    /// `(family, name)` of every table of `family` (0: all families).
    fn list_tables(&mut self, family: u8) -> Result<Vec<(u8, String)>> {
        let msgs = self.dump(
            family,
            NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
            "nftables tables",
        )?;
        let mut out = Vec::new();
        for (fam, msg) in msgs {
            if let NfTablesMessage::NewTable(TableMessage { attributes }) = msg {
                for a in attributes {
                    if let TableAttribute::Name(n) = a {
                        out.push((fam, n));
                    }
                }
            }
        }
        Ok(out)
    }

    fn delete_table(&mut self, family: u8, name: &str) -> Result<()> {
        self.batch(vec![(
            family,
            NfTablesMessage::DeleteTable(TableMessage {
                attributes: vec![TableAttribute::Name(name.to_string())],
            }),
            0,
            format!("removing table {} {name}", family_name(family)),
        )])
    }

    /// Adds our table, its two chains and the rules, in one transaction.
    fn add_trace_table(&mut self, table: &str, rules: &[Vec<Cond>], owner: bool) -> Result<()> {
        let mut attributes = vec![TableAttribute::Name(table.to_string())];
        if owner {
            attributes.push(TableAttribute::Flags(TableFlags::Owner));
        }
        let mut msgs = vec![(
            NFPROTO_INET,
            NfTablesMessage::NewTable(TableMessage { attributes }),
            NLM_F_CREATE,
            format!("adding table inet {table}"),
        )];
        for (chain, hook) in [
            ("prerouting", InetHookNumber::PreRouting),
            ("output", InetHookNumber::LocalOut),
        ] {
            msgs.push((
                NFPROTO_INET,
                NfTablesMessage::NewChain(ChainMessage {
                    attributes: vec![
                        ChainAttribute::Table(table.to_string()),
                        ChainAttribute::Name(chain.to_string()),
                        ChainAttribute::Hook(vec![
                            Hook::Number(HookNumber::Inet(hook)),
                            Hook::Priority(PRIORITY as u32),
                        ]),
                        ChainAttribute::Type("filter".to_string()),
                        ChainAttribute::Policy(NF_ACCEPT),
                    ],
                }),
                NLM_F_CREATE,
                format!("adding chain inet {table} {chain}"),
            ));
            for conds in rules {
                msgs.push((
                    NFPROTO_INET,
                    NfTablesMessage::NewRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(table.to_string()),
                            RuleAttribute::Chain(chain.to_string()),
                            RuleAttribute::Expressions(rule_exprs(conds)),
                        ],
                    }),
                    NLM_F_CREATE | NLM_F_APPEND,
                    format!("adding the nftrace rule to chain inet {table} {chain}"),
                ));
            }
        }
        self.batch(msgs)
    }

    /// Every rule of a chain.
    fn chain_rules(&mut self, family: u8, table: &str, chain: &str) -> Result<Vec<RuleInfo>> {
        let msgs = self.dump(
            family,
            NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table.to_string()),
                    RuleAttribute::Chain(chain.to_string()),
                ],
            }),
            &format!("the rules of {} {table} {chain}", family_name(family)),
        )?;
        let mut out = Vec::new();
        for (fam, msg) in msgs {
            if fam != family {
                continue;
            }
            if let NfTablesMessage::NewRule(RuleMessage { attributes }) = msg {
                if let Some(info) = rule_info(family, table, chain, &attributes) {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Rules: comments and a short text
// ---------------------------------------------------------------------------

fn rule_info(family: u8, table: &str, chain: &str, attrs: &[RuleAttribute]) -> Option<RuleInfo> {
    let mut info = RuleInfo {
        family,
        table: table.to_string(),
        chain: chain.to_string(),
        handle: 0,
        comment: None,
        comment_source: None,
        exprs: Vec::new(),
    };
    let mut handle = None;
    let mut udata_comment = None;
    let mut xt_comment = None;
    for a in attrs {
        match a {
            RuleAttribute::Table(t) if t != table => return None,
            RuleAttribute::Chain(c) if c != chain => return None,
            RuleAttribute::Handle(h) => handle = Some(*h),
            RuleAttribute::UserData(u) => udata_comment = comment_from_udata(u),
            RuleAttribute::Expressions(list) => {
                for e in list {
                    let ListAttribute::Element(parts) = e else {
                        continue;
                    };
                    let (text, comment) = describe_expr(parts);
                    if xt_comment.is_none() {
                        xt_comment = comment;
                    }
                    info.exprs.push(text);
                }
            }
            _ => {}
        }
    }
    info.handle = handle?;
    if let Some(c) = udata_comment {
        info.comment = Some(c);
        info.comment_source = Some(CommentSource::UserData);
    } else if let Some(c) = xt_comment {
        info.comment = Some(c);
        info.comment_source = Some(CommentSource::XtMatch);
    }
    Some(info)
}

/// The comment record of a rule's user data.
fn comment_from_udata(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (ty, len) = (u[0], usize::from(u[1]));
        let v = u.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(cstr(v));
        }
        u = &u[2 + len..];
    }
    None
}

fn nla_value(n: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0; n.value_len()];
    n.emit_value(&mut v);
    v
}

/// A word or two for one expression, and the comment of an x_tables
/// `comment` match.
fn describe_expr(parts: &[ExpressionAttribute]) -> (String, Option<String>) {
    let mut name = String::new();
    let mut data = None;
    for p in parts {
        match p {
            ExpressionAttribute::Name(n) => name = n.clone(),
            ExpressionAttribute::Data(d) => data = Some(d),
            _ => {}
        }
    }
    match data {
        Some(Expressions::Other {
            expression_type,
            attributes,
        }) if expression_type == "match" || expression_type == "target" => {
            let mut xt_name = String::new();
            let mut xt_info = None;
            for a in attributes {
                match a.kind() & NLA_TYPE_MASK {
                    NFTA_MATCH_NAME => xt_name = cstr(&nla_value(a)),
                    NFTA_MATCH_INFO => xt_info = Some(nla_value(a)),
                    _ => {}
                }
            }
            let comment = match (expression_type.as_str(), xt_name.as_str(), xt_info) {
                ("match", "comment", Some(info)) => Some(cstr(&info)),
                _ => None,
            };
            (format!("{expression_type} {xt_name}"), comment)
        }
        Some(Expressions::Immediate(imm)) => {
            for i in imm {
                if let Immediate::Data(DataAttribute::Verdict(v)) = i {
                    let mut code = None;
                    let mut chain = None;
                    for a in v {
                        match a {
                            VerdictAttribute::Code(c) => code = Some(u32::from(*c)),
                            VerdictAttribute::Chain(c) => chain = Some(c.clone()),
                            _ => {}
                        }
                    }
                    if let Some(c) = code {
                        return (Verdict::from_code(c, chain).to_string(), None);
                    }
                }
            }
            (name, None)
        }
        _ => (name, None),
    }
}

// ---------------------------------------------------------------------------
// Correlation with skb events
// ---------------------------------------------------------------------------

/// The transport part of a [`PacketKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Key {
    /// TCP ports and sequence number.
    Tcp { sport: u16, dport: u16, seq: u32 },
    /// UDP ports.
    Udp { sport: u16, dport: u16 },
    /// ICMP or ICMPv6 type, code, id and sequence.
    Icmp { ty: u8, code: u8, id: u16, seq: u16 },
    /// Not known (another protocol, a later fragment, no header).
    Unknown,
}

/// What identifies a packet on both sides: the trace event's headers and
/// the eBPF side's parsed [`Packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol (IPv6: the next header after the fixed header).
    pub proto: u8,
    /// IPv4 identification.
    pub ip_id: Option<u16>,
    /// Transport fields.
    pub l4: L4Key,
}

impl PacketKey {
    /// From a network header (IPv4 or IPv6) and a transport header.
    pub fn from_headers(network: &[u8], transport: Option<&[u8]>) -> Option<PacketKey> {
        let version = network.first()? >> 4;
        let (src, dst, proto, ip_id, later_fragment) = match version {
            4 if network.len() >= 20 => {
                let src = Ipv4Addr::from(<[u8; 4]>::try_from(&network[12..16]).ok()?);
                let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&network[16..20]).ok()?);
                let frag = u16::from_be_bytes([network[6], network[7]]) & 0x1fff;
                (
                    IpAddr::V4(src),
                    IpAddr::V4(dst),
                    network[9],
                    Some(u16::from_be_bytes([network[4], network[5]])),
                    frag != 0,
                )
            }
            6 if network.len() >= 40 => {
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&network[8..24]).ok()?);
                let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&network[24..40]).ok()?);
                (IpAddr::V6(src), IpAddr::V6(dst), network[6], None, false)
            }
            _ => return None,
        };
        let t = transport.unwrap_or(&[]);
        let be16 = |i: usize| t.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let l4 = if later_fragment {
            L4Key::Unknown
        } else {
            match proto {
                6 => match (be16(0), be16(2), t.get(4..8)) {
                    (Some(sport), Some(dport), Some(s)) => L4Key::Tcp {
                        sport,
                        dport,
                        seq: u32::from_be_bytes(s.try_into().ok()?),
                    },
                    _ => L4Key::Unknown,
                },
                17 => match (be16(0), be16(2)) {
                    (Some(sport), Some(dport)) => L4Key::Udp { sport, dport },
                    _ => L4Key::Unknown,
                },
                1 | 58 if t.len() >= 8 => L4Key::Icmp {
                    ty: t[0],
                    code: t[1],
                    id: be16(4)?,
                    seq: be16(6)?,
                },
                _ => L4Key::Unknown,
            }
        };
        Some(PacketKey {
            src,
            dst,
            proto,
            ip_id,
            l4,
        })
    }

    /// From an skb event of the eBPF side.
    pub fn from_event(ev: &Event) -> Option<PacketKey> {
        let l4key = |l4: &L4| match *l4 {
            L4::Tcp {
                sport, dport, seq, ..
            } => L4Key::Tcp { sport, dport, seq },
            L4::Udp { sport, dport } => L4Key::Udp { sport, dport },
            L4::Icmp { ty, code, id, seq } => L4Key::Icmp { ty, code, id, seq },
            L4::Other(_) | L4::Unreadable(_) => L4Key::Unknown,
        };
        match ev.packet {
            Packet::Ipv4 { src, dst, l4 } => Some(PacketKey {
                src: IpAddr::V4(src),
                dst: IpAddr::V4(dst),
                proto: l4.proto(false),
                ip_id: ev.ip_id,
                l4: l4key(&l4),
            }),
            Packet::Ipv6 { src, dst, l4 } => Some(PacketKey {
                src: IpAddr::V6(src),
                dst: IpAddr::V6(dst),
                proto: l4.proto(true),
                ip_id: None,
                l4: l4key(&l4),
            }),
            _ => None,
        }
    }

    /// Whether two keys may describe the same packet: equal addresses, and
    /// equal protocol, IPv4 id and transport fields where both sides know
    /// them.
    pub fn matches(&self, other: &PacketKey) -> bool {
        if self.src != other.src || self.dst != other.dst {
            return false;
        }
        if let (Some(a), Some(b)) = (self.ip_id, other.ip_id) {
            if a != b {
                return false;
            }
        }
        if self.l4 == L4Key::Unknown || other.l4 == L4Key::Unknown {
            // IPv6 extension headers hide the protocol from the trace side.
            return self.proto == other.proto || self.src.is_ipv6();
        }
        self.proto == other.proto && self.l4 == other.l4
    }
}

/// The skb event of the packet `key` nearest in time to `received_ns` (when
/// the trace message was read), within `window_ns` either way.
pub fn correlate<'a>(
    key: &PacketKey,
    received_ns: u64,
    events: impl IntoIterator<Item = &'a Event>,
    window_ns: u64,
) -> Option<&'a Event> {
    events
        .into_iter()
        .filter(|ev| ev.ts_ns.abs_diff(received_ns) <= window_ns)
        .filter(|ev| PacketKey::from_event(ev).is_some_and(|k| key.matches(&k)))
        .min_by_key(|ev| ev.ts_ns.abs_diff(received_ns))
}

/// Correlates a stream of trace events with skb events: remembers the
/// packet of each trace id (only the first event of a pass carries the
/// headers) and the skb address found for it.
#[derive(Debug)]
pub struct Correlator {
    window_ns: u64,
    keys: HashMap<u32, (PacketKey, u64)>,
    skbs: HashMap<u32, u64>,
}

impl Correlator {
    /// Matches skb events within `window` of a trace message.
    pub fn new(window: Duration) -> Correlator {
        Correlator {
            window_ns: window.as_nanos() as u64,
            keys: HashMap::new(),
            skbs: HashMap::new(),
        }
    }

    /// The packet of a trace event: its own headers, or those of an earlier
    /// event with the same id.
    pub fn key(&mut self, ev: &TraceEvent) -> Option<PacketKey> {
        self.expire(ev.received_ns);
        if let Some(k) = ev.packet_key() {
            self.keys.insert(ev.id, (k, ev.received_ns));
            self.skbs.remove(&ev.id);
            return Some(k);
        }
        self.keys.get(&ev.id).map(|(k, _)| *k)
    }

    /// The skb address of a trace event's packet, from the given recent skb
    /// events (or from an earlier call for the same id).
    pub fn skb_of<'a>(
        &mut self,
        ev: &TraceEvent,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Option<u64> {
        let key = self.key(ev)?;
        if let Some(skb) = self.skbs.get(&ev.id) {
            return Some(*skb);
        }
        let found = correlate(&key, ev.received_ns, events, self.window_ns)?;
        self.skbs.insert(ev.id, found.skb);
        Some(found.skb)
    }

    fn expire(&mut self, now: u64) {
        if self.keys.len() < 4096 {
            return;
        }
        let horizon = now.saturating_sub(self.window_ns.saturating_mul(4));
        let old: HashSet<u32> = self
            .keys
            .iter()
            .filter(|(_, (_, t))| *t < horizon)
            .map(|(id, _)| *id)
            .collect();
        self.keys.retain(|id, _| !old.contains(id));
        self.skbs.retain(|id, _| !old.contains(id));
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// `(type, value)` of each netlink attribute in `buf` (flags masked off).
fn raw_attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            bail!("bad netlink attribute: length {len} of {} bytes", buf.len());
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(out)
}

fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn be16(v: &[u8]) -> Result<u16> {
    Ok(u16::from_be_bytes(
        v.get(..2).context("short attribute")?.try_into()?,
    ))
}

fn be32(v: &[u8]) -> Result<u32> {
    Ok(u32::from_be_bytes(
        v.get(..4).context("short attribute")?.try_into()?,
    ))
}

fn be64(v: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(
        v.get(..8).context("short attribute")?.try_into()?,
    ))
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits until `fd` is readable; false on timeout.
fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for the netlink socket");
        }
        return Ok(r > 0);
    }
}

/// One datagram, without blocking; the length is the real one
/// (`MSG_TRUNC`), which may exceed the buffer.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Enlarges a socket's receive buffer (beyond `rmem_max` as root).
fn set_rcvbuf(fd: RawFd, size: libc::c_int) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: an int option on our socket.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettrace_common::filter::{parse_addr, parse_proto};
    use std::path::PathBuf;
    use std::process::{Command, Output};

    // ---- pure tests ----

    #[test]
    fn nft_trace_rules_for_filters() {
        // No filter: one rule without matches, every packet is traced.
        assert_eq!(trace_rules(&Filter::default()).unwrap(), vec![vec![]]);

        let icmp = Filter {
            proto: Some(parse_proto("icmp").unwrap()),
            ..Filter::default()
        };
        assert_eq!(
            trace_rules(&icmp).unwrap(),
            vec![vec![Cond::NfProto(NFPROTO_IPV4), Cond::L4Proto(1)]]
        );

        // --addr and --port without -p: tcp and udp, source or destination
        // address, source or destination port.
        let f = Filter {
            addr: Some(parse_addr("10.0.0.1").unwrap()),
            port: Some(53),
            ..Filter::default()
        };
        let rules = trace_rules(&f).unwrap();
        assert_eq!(rules.len(), 8);
        assert_eq!(
            rules[0],
            vec![
                Cond::NfProto(NFPROTO_IPV4),
                Cond::L4Proto(6),
                Cond::Network {
                    offset: 12,
                    value: vec![10, 0, 0, 1]
                },
                Cond::Transport {
                    offset: 0,
                    value: vec![0, 53]
                },
            ]
        );

        let v6 = Filter {
            daddr: Some(parse_addr("fd00::2").unwrap()),
            ..Filter::default()
        };
        let rules = trace_rules(&v6).unwrap();
        assert_eq!(rules.len(), 1);
        assert!(matches!(rules[0][0], Cond::NfProto(NFPROTO_IPV6)));
        assert!(matches!(rules[0][1], Cond::Network { offset: 24, .. }));

        let arp = Filter {
            proto: Some(parse_proto("arp").unwrap()),
            ..Filter::default()
        };
        let err = trace_rules(&arp).unwrap_err().to_string();
        assert!(err.contains("arp"), "{err}");
    }

    fn attr(out: &mut Vec<u8>, kind: u16, v: &[u8]) {
        out.extend(((4 + v.len()) as u16).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(v);
        out.resize((out.len() + 3) & !3, 0);
    }

    #[test]
    fn nft_trace_decodes_trace_message() {
        let mut verdict = Vec::new();
        attr(
            &mut verdict,
            NFTA_VERDICT_CODE,
            &(-3i32 as u32).to_be_bytes(),
        );
        attr(&mut verdict, NFTA_VERDICT_CHAIN, b"KUBE-SERVICES\0");
        let ip = [
            0x45, 0, 0, 84, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        let icmp = [8, 0, 0, 0, 0x00, 0x07, 0x00, 0x01];
        let mut b = Vec::new();
        attr(&mut b, NFTA_TRACE_NFPROTO, &2u32.to_be_bytes());
        attr(&mut b, NFTA_TRACE_TYPE, &NFT_TRACETYPE_RULE.to_be_bytes());
        attr(&mut b, NFTA_TRACE_ID, &0xdeadbeefu32.to_be_bytes());
        attr(&mut b, NFTA_TRACE_CHAIN, b"PREROUTING\0");
        attr(&mut b, NFTA_TRACE_TABLE, b"nat\0");
        attr(&mut b, NFTA_TRACE_RULE_HANDLE, &7u64.to_be_bytes());
        attr(&mut b, NFTA_TRACE_VERDICT | 0x8000, &verdict);
        attr(&mut b, NFTA_TRACE_MARK, &0x4000u32.to_be_bytes());
        attr(&mut b, NFTA_TRACE_IIF, &3u32.to_be_bytes());
        attr(&mut b, NFTA_TRACE_IIFTYPE, &1u16.to_be_bytes());
        attr(&mut b, NFTA_TRACE_NETWORK_HEADER, &ip);
        attr(&mut b, NFTA_TRACE_TRANSPORT_HEADER, &icmp);
        let ev = TraceEvent::decode(NFPROTO_IPV4, &b, 42).unwrap();
        assert_eq!(ev.id, 0xdeadbeef);
        assert_eq!(
            (ev.table.as_str(), ev.chain.as_str()),
            ("nat", "PREROUTING")
        );
        assert_eq!(ev.rule_handle, Some(7));
        assert_eq!(ev.kind, TraceKind::Rule);
        assert_eq!(ev.verdict, Some(Verdict::Jump("KUBE-SERVICES".into())));
        assert_eq!((ev.iif, ev.iif_type, ev.oif), (Some(3), Some(1), None));
        assert_eq!(ev.mark, Some(0x4000));
        assert_eq!(ev.nfproto, Some(2));
        assert_eq!(
            ev.to_string(),
            "trace id deadbeef ip nat PREROUTING rule handle 7 verdict jump KUBE-SERVICES"
        );

        // The key, and the skb event it belongs to.
        let key = ev.packet_key().unwrap();
        assert_eq!(key.ip_id, Some(0x1234));
        assert_eq!(
            key.l4,
            L4Key::Icmp {
                ty: 8,
                code: 0,
                id: 7,
                seq: 1
            }
        );
        let skb_event = |skb: u64, seq: u16, ts_ns: u64| Event {
            ts_ns,
            skb,
            location: 0,
            retval: None,
            tracer_id: 0,
            netns: 0,
            ifindex: 1,
            pid: 0,
            stack_id: None,
            drop_reason: 0,
            flags: 0,
            pkt_len: 84,
            ifname: "lo".into(),
            comm: String::new(),
            from_sk: false,
            skb_mode: false,
            packet: Packet::Ipv4 {
                src: Ipv4Addr::LOCALHOST,
                dst: Ipv4Addr::LOCALHOST,
                l4: L4::Icmp {
                    ty: 8,
                    code: 0,
                    id: 7,
                    seq,
                },
            },
            tunnel: None,
            ip_id: Some(0x1234),
            ct: None,
            bytes: None,
        };
        let events = [
            skb_event(0x1000, 2, 40),
            skb_event(0x2000, 1, 10),
            skb_event(0x3000, 1, 41),
            skb_event(0x4000, 1, 10_000),
        ];
        assert_eq!(
            correlate(&key, 42, &events, 100).map(|e| e.skb),
            Some(0x3000)
        );
        let mut c = Correlator::new(Duration::from_nanos(100));
        assert_eq!(c.skb_of(&ev, &events), Some(0x3000));
        // A later event of the same pass carries no headers.
        let mut later = ev.clone();
        later.network_header = None;
        later.transport_header = None;
        later.received_ns = 500;
        assert_eq!(c.skb_of(&later, &[]), Some(0x3000));

        // A policy event takes its verdict from NFTA_TRACE_POLICY.
        let mut b = Vec::new();
        attr(&mut b, NFTA_TRACE_TYPE, &NFT_TRACETYPE_POLICY.to_be_bytes());
        attr(&mut b, NFTA_TRACE_ID, &1u32.to_be_bytes());
        attr(&mut b, NFTA_TRACE_POLICY, &0u32.to_be_bytes());
        let ev = TraceEvent::decode(NFPROTO_INET, &b, 0).unwrap();
        assert_eq!(
            (ev.kind, ev.verdict),
            (TraceKind::Policy, Some(Verdict::Drop))
        );
    }

    #[test]
    fn nft_trace_reads_comments() {
        // nft's user data: a comment record after another record.
        let mut u = vec![1, 4, 0, 0, 0, 0, NFTNL_UDATA_RULE_COMMENT, 6];
        u.extend(b"hello\0");
        assert_eq!(comment_from_udata(&u).as_deref(), Some("hello"));
        assert_eq!(comment_from_udata(&[1, 1, 0]), None);

        // iptables-nft's `-m comment`: an xt match expression.
        let mut info = b"kube: svc".to_vec();
        info.resize(256, 0);
        let xt: ListAttribute<ExpressionAttribute> = Expressions::Other {
            expression_type: "match".into(),
            attributes: vec![
                DefaultNla::new(NFTA_MATCH_NAME, b"comment\0".to_vec()),
                DefaultNla::new(2, 0u32.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_MATCH_INFO, info),
            ],
        }
        .into();
        let drop: ListAttribute<ExpressionAttribute> = Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                netlink_packet_netfilter::nftables::Verdict::Other(0),
            )])),
        ])
        .into();
        let attrs = vec![
            RuleAttribute::Table("filter".into()),
            RuleAttribute::Chain("INPUT".into()),
            RuleAttribute::Handle(9),
            RuleAttribute::Expressions(vec![xt, drop]),
        ];
        let info = rule_info(NFPROTO_IPV4, "filter", "INPUT", &attrs).unwrap();
        assert_eq!(info.handle, 9);
        assert_eq!(info.comment.as_deref(), Some("kube: svc"));
        assert_eq!(info.comment_source, Some(CommentSource::XtMatch));
        assert_eq!(info.text(), "match comment drop comment \"kube: svc\"");
    }

    // ---- privileged tests: real namespaces, iptables and the kernel ----

    /// A network namespace deleted on drop, also when the test panics.
    struct TestNetns {
        name: String,
    }

    impl TestNetns {
        fn new(tag: &str) -> TestNetns {
            let name = format!("nt-nfttest-{}-{tag}", std::process::id());
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .expect("running ip (iproute2 is required)");
            assert!(
                out.status.success(),
                "ip netns add {name} failed (these tests need root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ns = TestNetns { name };
            ns.ok(&["ip", "link", "set", "lo", "up"]);
            ns
        }

        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/run/netns/{}", self.name))
        }

        fn exec(&self, args: &[&str]) -> Output {
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
        }

        fn ok(&self, args: &[&str]) {
            let out = self.exec(args);
            assert!(
                out.status.success(),
                "{args:?} failed in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn control(&self) -> Control {
            let p = self.path();
            in_netns(Netns::Path(&p), Control::open).unwrap()
        }

        fn our_tables(&self) -> Vec<String> {
            self.control()
                .list_tables(0)
                .unwrap()
                .into_iter()
                .filter(|(_, n)| n.starts_with(TABLE_PREFIX))
                .map(|(_, n)| n)
                .collect()
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }

    fn icmp_filter() -> Filter {
        Filter {
            proto: Some(parse_proto("icmp").unwrap()),
            ..Filter::default()
        }
    }

    #[test]
    fn nft_trace_ping_dropped_by_commented_iptables_rule() {
        let ns = TestNetns::new("ping");
        ns.ok(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "-m",
            "comment",
            "--comment",
            "nettrace test: no pings",
            "-j",
            "DROP",
        ]);
        let path = ns.path();
        let mut tr = NftTrace::start(Netns::Path(&path), &icmp_filter()).unwrap();
        assert!(tr.removed_stale().is_empty());
        assert!(tr.warnings().is_empty(), "{:?}", tr.warnings());
        assert!(tr.kernel_owned());
        assert_eq!(ns.our_tables(), vec![tr.table().to_string()]);

        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "127.0.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ping = Reap(ping);

        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        let mut hit = None;
        while Instant::now() < deadline && hit.is_none() {
            let Some(ev) = tr.next_event(Duration::from_millis(200)).unwrap() else {
                continue;
            };
            assert_ne!(ev.table, tr.table(), "events of our own table are left out");
            if ev.table == "filter" && ev.chain == "INPUT" && ev.verdict == Some(Verdict::Drop) {
                hit = Some(ev.clone());
            }
            seen.push(ev);
        }
        drop(ping); // kills ping rather than waiting for its timeout
        let ev = hit.unwrap_or_else(|| panic!("no drop in filter INPUT; events: {seen:#?}"));
        assert_eq!(ev.family, NFPROTO_IPV4);
        assert_eq!(ev.kind, TraceKind::Rule);
        let handle = ev.rule_handle.expect("a rule handle");
        let key = ev
            .packet_key()
            .expect("the first event of the pass has headers");
        assert_eq!(key.dst, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(matches!(key.l4, L4Key::Icmp { ty: 8, .. }), "{key:?}");
        assert_eq!(ev.iif, Some(1), "lo");

        let rule = tr.rule_of(&ev).unwrap().expect("the rule");
        assert_eq!(rule.handle, handle);
        assert_eq!(rule.comment.as_deref(), Some("nettrace test: no pings"));
        assert!(rule.comment_source.is_some());
        assert!(rule.exprs.iter().any(|e| e == "drop"), "{:?}", rule.exprs);
        // Cached: the same answer without asking the kernel again.
        let again = tr.rule(NFPROTO_IPV4, "filter", "INPUT", handle);
        assert!(Arc::ptr_eq(&again.unwrap().unwrap(), &rule));
        assert_eq!(
            tr.rule(NFPROTO_IPV4, "filter", "INPUT", 999_999).unwrap(),
            None
        );

        tr.finish().unwrap();
        assert!(
            ns.our_tables().is_empty(),
            "our table is gone after finish()"
        );
    }

    struct Reap(std::process::Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Sends one UDP datagram from inside the namespace.
    fn send_udp(ns: &TestNetns, to: &str) {
        let p = ns.path();
        let to: std::net::SocketAddr = to.parse().unwrap();
        in_netns(Netns::Path(&p), move || {
            let any: std::net::SocketAddr = if to.is_ipv6() {
                "[::1]:0".parse()?
            } else {
                "127.0.0.1:0".parse()?
            };
            std::net::UdpSocket::bind(any)?.send_to(b"nettrace", to)?;
            Ok(())
        })
        .unwrap();
    }

    /// The events until `want` says stop (and 100 ms more, to catch any
    /// that should not be there), or a second.
    fn events_until(tr: &mut NftTrace, want: impl Fn(&TraceEvent) -> bool) -> Vec<TraceEvent> {
        let mut deadline = Instant::now() + Duration::from_secs(1);
        let mut seen = Vec::new();
        let mut stopping = false;
        while Instant::now() < deadline {
            if let Some(ev) = tr.next_event(Duration::from_millis(20)).unwrap() {
                if !stopping && want(&ev) {
                    stopping = true;
                    deadline = Instant::now() + Duration::from_millis(100);
                }
                seen.push(ev);
            }
        }
        seen
    }

    #[test]
    fn nft_trace_filter_selects_packets() {
        let ns = TestNetns::new("filter");
        for cmd in ["iptables", "ip6tables"] {
            ns.ok(&[
                cmd,
                "-A",
                "OUTPUT",
                "-p",
                "udp",
                "-m",
                "comment",
                "--comment",
                "udp out",
                "-j",
                "ACCEPT",
            ]);
        }
        let path = ns.path();

        // --port 5353 without -p: tcp or udp, either port.
        let f = Filter {
            port: Some(5353),
            ..Filter::default()
        };
        let mut tr = NftTrace::start(Netns::Path(&path), &f).unwrap();
        send_udp(&ns, "127.0.0.1:5454");
        send_udp(&ns, "127.0.0.1:5353");
        let seen = events_until(&mut tr, |ev| ev.chain == "OUTPUT");
        let out: Vec<&TraceEvent> = seen.iter().filter(|e| e.chain == "OUTPUT").collect();
        assert_eq!(out.len(), 1, "only the datagram to 5353: {seen:#?}");
        let key = out[0].packet_key().unwrap();
        assert!(matches!(key.l4, L4Key::Udp { dport: 5353, .. }), "{key:?}");
        assert_eq!(out[0].verdict, Some(Verdict::Accept));
        assert_eq!(out[0].oif, Some(1), "lo");
        let rule = tr.rule_of(out[0]).unwrap().unwrap();
        assert_eq!(rule.comment.as_deref(), Some("udp out"));
        tr.finish().unwrap();

        // IPv6 destination and -p udp --dport.
        let f = Filter {
            daddr: Some(parse_addr("::1").unwrap()),
            proto: Some(parse_proto("udp").unwrap()),
            dport: Some(5353),
            ..Filter::default()
        };
        let mut tr = NftTrace::start(Netns::Path(&path), &f).unwrap();
        send_udp(&ns, "127.0.0.1:5353");
        send_udp(&ns, "[::1]:5353");
        let seen = events_until(&mut tr, |ev| ev.chain == "OUTPUT");
        let out: Vec<&TraceEvent> = seen.iter().filter(|e| e.chain == "OUTPUT").collect();
        assert_eq!(out.len(), 1, "only the IPv6 datagram: {seen:#?}");
        assert_eq!(out[0].family, NFPROTO_IPV6);
        let key = out[0].packet_key().unwrap();
        assert_eq!(key.dst, parse_addr("::1").unwrap());
        tr.finish().unwrap();
        assert!(ns.our_tables().is_empty());
    }

    #[test]
    fn nft_trace_removes_stale_tables_and_cleans_up_on_signal() {
        let ns = TestNetns::new("stale");
        // A table left by a killed run on a kernel without the owner flag:
        // 4194305 is above PID_MAX_LIMIT, so no process has that pid.
        let stale = format!("{TABLE_PREFIX}4194305");
        ns.control()
            .add_trace_table(&stale, &[vec![]], false)
            .unwrap();
        // One of a live process (ours, another instance) stays.
        let live = format!("{TABLE_PREFIX}{}_77", std::process::id());
        ns.control()
            .add_trace_table(&live, &[vec![]], false)
            .unwrap();

        let path = ns.path();
        let mut tr = NftTrace::start(Netns::Path(&path), &Filter::default()).unwrap();
        assert_eq!(tr.removed_stale(), std::slice::from_ref(&stale));
        let mut tables = ns.our_tables();
        tables.sort();
        let mut want = vec![live.clone(), tr.table().to_string()];
        want.sort();
        assert_eq!(tables, want);

        // What a signal handler would do.
        let cleanup = tr.signal_cleanup().unwrap();
        cleanup.run();
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !ns.our_tables().contains(&tr.table().to_string())
        });
        assert!(gone, "SignalCleanup::run removed the table");
        // finish() after that is fine.
        tr.finish().unwrap();
        // A refused request names what was asked and the errno.
        let err = ns.control().delete_table(NFPROTO_INET, "nope").unwrap_err();
        assert_eq!(errno_of(&err), Some(libc::ENOENT));
        assert!(
            err.to_string().starts_with("removing table inet nope: "),
            "{err}"
        );
        assert_eq!(ns.our_tables(), vec![live]);
    }

    #[test]
    fn nft_trace_owned_table_goes_with_the_socket() {
        let ns = TestNetns::new("owner");
        let path = ns.path();
        let file = File::open(&path).unwrap();
        let mut tr = NftTrace::start(Netns::Fd(file.as_fd()), &icmp_filter()).unwrap();
        assert_eq!(ns.our_tables(), vec![tr.table().to_string()]);
        // No explicit removal: closing the owner socket (as the end of the
        // process does, however it ends) is enough.
        tr.removed = true;
        drop(tr);
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            ns.our_tables().is_empty()
        });
        assert!(gone, "the kernel removed the owned table with its socket");
    }

    #[test]
    fn nft_trace_refuses_iptables_legacy_only() {
        let ns = TestNetns::new("legacy");
        ns.ok(&["iptables-legacy", "-A", "INPUT", "-p", "icmp", "-j", "DROP"]);
        let path = ns.path();
        let err = NftTrace::start(Netns::Path(&path), &icmp_filter())
            .err()
            .expect("legacy-only namespace refused");
        let legacy = err
            .downcast_ref::<LegacyOnly>()
            .expect("a LegacyOnly error");
        assert_eq!(legacy.tables, vec!["filter".to_string()]);
        assert!(err.to_string().starts_with(LEGACY_WARNING), "{err}");
        assert!(ns.our_tables().is_empty());

        // With nftables rules too: a warning, and tracing goes on.
        ns.ok(&["iptables-nft", "-A", "INPUT", "-p", "tcp", "-j", "ACCEPT"]);
        let tr = NftTrace::start(Netns::Path(&path), &icmp_filter()).unwrap();
        assert_eq!(tr.warnings().len(), 1);
        assert!(tr.warnings()[0].starts_with(LEGACY_WARNING));
        tr.finish().unwrap();
    }
}
