//! What a problem seen on the wire means and what to do next, as data: one
//! table of kernel drop reasons (by the name the `kfree_skb` tracepoint
//! prints, without the `SKB_DROP_REASON_` prefix), one of the ICMP errors the
//! kernel sends (`icmp_send`, `icmp6_send`), and single entries for a TCP reset
//! sent (`tcp_send_reset`), a retransmission and a rate-limited reply.
//!
//! Every text follows one convention, checked by the tests: ASCII, one line
//! of at most [`MAX_PART_LEN`] characters, no trailing period and no `;`
//! (the printed line joins the two halves with `"; "`).

/// The longest explanation or next step, in characters.
pub const MAX_PART_LEN: usize = 160;

/// What a situation means and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// What happened, in plain words.
    pub explanation: &'static str,
    /// What to check or run next.
    pub next_step: &'static str,
}

impl Advice {
    /// The one line printed under an event or a summary row:
    /// `advice: <explanation>; <next step>`.
    pub fn line(&self) -> String {
        format!("advice: {}", self.text())
    }

    /// `<explanation>; <next step>`, the line without its `advice: ` label
    /// (the JSON form).
    pub fn text(&self) -> String {
        format!("{}; {}", self.explanation, self.next_step)
    }
}

const fn a(explanation: &'static str, next_step: &'static str) -> Advice {
    Advice {
        explanation,
        next_step,
    }
}

/// Drop reasons by name, sorted by name (byte order) for binary search.
const DROP_REASONS: &[(&str, Advice)] = &[
    (
        "BPF_CGROUP_EGRESS",
        a(
            "a cgroup eBPF program attached to the sending process's cgroup refused the packet on its way out",
            "list cgroup programs with bpftool cgroup tree (network policy agents such as Cilium or Calico eBPF install them)",
        ),
    ),
    (
        "CPU_BACKLOG",
        a(
            "the per-CPU input backlog was full (net.core.netdev_max_backlog) or the RPS flow limit was hit, the receiving CPU fell behind",
            "check the drop column of /proc/net/softnet_stat and softirq load, raise netdev_max_backlog or spread the load with RPS/RSS",
        ),
    ),
    (
        "DEV_HDR",
        a(
            "the device driver found its own header or metadata for this packet invalid",
            "check the driver (ethtool -i) and offload settings of virtio, tun/tap or veth devices, rerun with --stack to see the driver function",
        ),
    ),
    (
        "DEV_READY",
        a(
            "the device was not ready to send or receive: it is down, or its queues are not set up (e.g. a tun/tap nobody has open)",
            "check ip link show in that namespace (state UP, the veth peer exists and is up) and that the process behind a tun/tap runs",
        ),
    ),
    (
        "DUP_FRAG",
        a(
            "a duplicate IP fragment arrived and was discarded",
            "harmless once, many point at a retransmitting sender or a looped path",
        ),
    ),
    (
        "FRAG_REASM_TIMEOUT",
        a(
            "IP fragments waited for the rest of their datagram until the reassembly timer expired: some fragment was lost or filtered",
            "trace the missing fragments by address (they carry no ports) and avoid fragmentation with a consistent MTU along the path",
        ),
    ),
    (
        "FRAG_TOO_FAR",
        a(
            "an IPv4 fragment arrived too far out of order among fragments from the same source (net.ipv4.ipfrag_max_dist)",
            "look for heavy reordering on the path, raise ipfrag_max_dist, or avoid fragmentation with a consistent MTU",
        ),
    ),
    (
        "FULL_RING",
        a(
            "the device's ring or queue was full (e.g. the ring of a tun/tap whose reader is slow), so the packet could not be queued",
            "check that the reader (VM, container runtime, XDP program) keeps up, and ring sizes with ethtool -g",
        ),
    ),
    (
        "HDR_TRUNC",
        a(
            "a protocol header could not be pulled from the packet data: the packet is shorter than its headers need",
            "look for a sender, tunnel or tc/XDP program that truncates packets or writes wrong lengths (tcpdump on the receiving device)",
        ),
    ),
    (
        "ICMP_CSUM",
        a(
            "an ICMP message had a wrong checksum",
            "look for corruption or a tc/XDP program or NAT that rewrites ICMP without fixing the checksum",
        ),
    ),
    (
        "INVALID_PROTO",
        a(
            "the packet breaks the rules of its protocol (e.g. an ICMP timestamp request sent to a broadcast address)",
            "find the sender with --detail and see what it sends (tcpdump -v)",
        ),
    ),
    (
        "IPV6DISABLED",
        a(
            "IPv6 is disabled on the device the packet came in on",
            "check net.ipv6.conf.<dev>.disable_ipv6 in that namespace, or stop sending IPv6 there",
        ),
    ),
    (
        "IPV6_BAD_EXTHDR",
        a(
            "an IPv6 extension header was malformed or not allowed where it was",
            "check what the sender puts after the IPv6 header (tcpdump -v) and any middlebox that rewrites it",
        ),
    ),
    (
        "IP_CSUM",
        a(
            "the IPv4 header checksum was wrong: the packet was corrupted or a device or program rewrote the header badly",
            "check checksum offload (ethtool -k) on both ends and any tunnel, NAT or tc/XDP program that edits the IP header",
        ),
    ),
    (
        "IP_INADDRERRORS",
        a(
            "host unreachable: the packet was not for this host and could not be forwarded (forwarding off on the input device, or no usable route)",
            "check net.ipv4.ip_forward and conf.<dev>.forwarding in that namespace, and ip route get <daddr> from <saddr> iif <dev>",
        ),
    ),
    (
        "IP_INHDR",
        a(
            "the IP header was invalid (version, length, options) or its TTL ran out while this host forwarded it",
            "a TTL that runs out points at a routing loop (traceroute, ip route on each hop), otherwise capture the packet to inspect the header",
        ),
    ),
    (
        "IP_INNOROUTES",
        a(
            "network unreachable: no route to the destination for a packet received on this host",
            "check ip route get <daddr> from <saddr> iif <dev> in that namespace (a missing pod or node route)",
        ),
    ),
    (
        "IP_INVALID_DEST",
        a(
            "the destination IP address was invalid (0.0.0.0)",
            "find the sender with --detail (pid, comm) and fix the address it sends to",
        ),
    ),
    (
        "IP_INVALID_SOURCE",
        a(
            "the source IP address was invalid: multicast, limited broadcast, or zero where zero is not allowed",
            "find the sender and check its address configuration (e.g. an interface used before it got its address)",
        ),
    ),
    (
        "IP_LOCALNET",
        a(
            "the source or destination is a loopback address (127.0.0.0/8) on a packet that did not come over the loopback device",
            "check net.ipv4.conf.<dev>.route_localnet and NAT rules that send traffic to 127.0.0.1 (e.g. a NodePort on localhost)",
        ),
    ),
    (
        "IP_LOCAL_SOURCE",
        a(
            "a packet came in from outside with one of this host's own addresses as its source",
            "look for a duplicate address, a loop that reflects packets back, or hairpin NAT without SNAT (conf.<dev>.accept_local)",
        ),
    ),
    (
        "IP_NOPROTO",
        a(
            "nothing in this namespace handles the packet's IP protocol (e.g. SCTP or GRE not loaded), the host answers protocol unreachable",
            "check the protocol number of the packet, load the protocol module or stop sending that protocol",
        ),
    ),
    (
        "IP_OUTNOROUTES",
        a(
            "the sending host found no route for the packet when sending it",
            "check ip route get <daddr> and ip rule in the sending namespace (e.g. a pod without a default route)",
        ),
    ),
    (
        "IP_RPFILTER",
        a(
            "the reverse path filter dropped it: the route back to the source does not leave through the interface the packet came in on",
            "check net.ipv4.conf.{all,<dev>}.rp_filter (the higher value wins) and the routes back to the source (asymmetric routing)",
        ),
    ),
    (
        "IP_TUNNEL_ECN",
        a(
            "a decapsulated packet was dropped per RFC 6040: the outer header says congestion experienced but the inner packet is not ECN capable",
            "check ECN settings of the tunnel endpoints and which underlay device marks congestion",
        ),
    ),
    (
        "LOCAL_MAC",
        a(
            "a frame came in whose source MAC address is the receiving device's own address",
            "look for a layer 2 loop or a bridge or switch that reflects frames back, and for duplicate MAC addresses",
        ),
    ),
    (
        "MAC_INVALID_SOURCE",
        a(
            "the frame's source MAC address was invalid (zero or multicast)",
            "find the sender of that frame (bridge fdb show, the remote tunnel endpoint) and fix its MAC address",
        ),
    ),
    (
        "NEIGH_CREATEFAIL",
        a(
            "no neighbour (ARP/NDP) entry could be created for the next hop, the neighbour table is probably full",
            "compare ip neigh show | wc -l with net.ipv4.neigh.default.gc_thresh3 (and the ipv6 one) and raise it on large nodes",
        ),
    ),
    (
        "NEIGH_DEAD",
        a(
            "the neighbour entry of the next hop was being removed when the packet tried to use it",
            "usually brief after a device or route change, check whether the device was just deleted or flapped (ip monitor)",
        ),
    ),
    (
        "NEIGH_FAILED",
        a(
            "the next hop did not answer ARP (IPv4) or neighbour solicitation (IPv6), so its MAC address is unknown",
            "check that the next hop or pod is up on that link (ip neigh shows FAILED), trace the ARP requests with -p arp",
        ),
    ),
    (
        "NEIGH_QUEUEFULL",
        a(
            "too many packets waited for the same next hop to answer ARP/NDP, the queue of unresolved packets overflowed",
            "the neighbour answers slowly or not at all (ip neigh), raise neigh.<dev>.unres_qlen_bytes only if bursts are expected",
        ),
    ),
    (
        "NETFILTER_DROP",
        a(
            "a netfilter rule (iptables or nftables) dropped the packet: a firewall, a NetworkPolicy, or a kube-proxy rule",
            "name the rule with --nft-trace, or read the rules with nft list ruleset or iptables-save in that namespace",
        ),
    ),
    (
        "NOMEM",
        a(
            "the kernel could not allocate memory while handling the packet",
            "check memory pressure on the node (free, /proc/meminfo) and the cgroup limits of the pod",
        ),
    ),
    (
        "NOT_SPECIFIED",
        a(
            "the kernel dropped the packet without saying why",
            "the location shows which function dropped it, rerun with --stack to see how it got there",
        ),
    ),
    (
        "NO_SOCKET",
        a(
            "no socket matched the packet: nothing listens on that address and port in that namespace, or the connection is gone",
            "check that the server listens on that address and port in that network namespace (ss -lntu inside the pod)",
        ),
    ),
    (
        "NO_TX_TARGET",
        a(
            "a tunnel device (e.g. VXLAN) knew no remote endpoint to send this packet to",
            "check bridge fdb show dev <vxlan> for the destination MAC and the remote or group of the device (ip -d link show)",
        ),
    ),
    (
        "OTHERHOST",
        a(
            "the frame was addressed to another MAC address and only arrived because the device is promiscuous",
            "check the MAC the sender used (a stale ARP entry, a flooding bridge) and whether the packet reached the right host",
        ),
    ),
    (
        "PKT_TOO_BIG",
        a(
            "the packet was larger than the MTU of the device or path and could not be fragmented",
            "compare MTUs along the path (pod, veth, tunnel overhead, underlay) and make sure ICMP too big or frag needed is not filtered",
        ),
    ),
    (
        "PKT_TOO_SMALL",
        a(
            "the packet was shorter than its headers say it is",
            "look for truncation by the sender, a tunnel or a tc/XDP program (tcpdump on the receiving device)",
        ),
    ),
    (
        "PROTO_MEM",
        a(
            "the protocol's memory limit was reached (e.g. net.ipv4.udp_mem or tcp_mem for the whole host)",
            "compare /proc/net/sockstat with udp_mem and tcp_mem, and find the sockets that hold the memory (ss -m)",
        ),
    ),
    (
        "QDISC_CONGESTED",
        a(
            "the queueing discipline's active queue management dropped the packet because of congestion",
            "check tc -s qdisc show dev <dev> and the traffic sent through that device",
        ),
    ),
    (
        "QDISC_DROP",
        a(
            "the queueing discipline of the outgoing device refused the packet: its queue was full or its policy drops",
            "check drops and backlog with tc -s qdisc show dev <dev>, and txqueuelen or the qdisc limit",
        ),
    ),
    (
        "QDISC_OVERLIMIT",
        a(
            "the queueing discipline of the outgoing device was over its buffer limit",
            "check drops and backlog with tc -s qdisc show dev <dev>, and the qdisc limit",
        ),
    ),
    (
        "QUEUE_PURGE",
        a(
            "a whole queue of packets was freed at once (a socket closed or a device went down)",
            "usually the end of a connection or device, look at what closed or went down just before",
        ),
    ),
    (
        "SECURITY_HOOK",
        a(
            "a security module (an LSM such as SELinux or a BPF LSM program) refused the packet",
            "check the audit log for denials and the BPF LSM programs (bpftool prog show)",
        ),
    ),
    (
        "SKB_CSUM",
        a(
            "computing the packet's checksum failed",
            "check checksum offload settings (ethtool -k) of the devices on the path",
        ),
    ),
    (
        "SKB_GSO_SEG",
        a(
            "splitting a large (GSO) packet into segments failed",
            "check segmentation offloads (ethtool -k) of the devices on the path, especially tunnels",
        ),
    ),
    (
        "SKB_UCOPY_FAULT",
        a(
            "copying the packet data from the sending application's memory failed",
            "look at the sending process (--detail shows pid and comm), it passed a bad buffer",
        ),
    ),
    (
        "SOCKET_BACKLOG",
        a(
            "the socket was busy and its backlog was full, the packet could not wait for the application",
            "the application is slow (CPU, locks), check its load and TcpExtTCPBacklogDrop in nstat",
        ),
    ),
    (
        "SOCKET_CLOSE",
        a(
            "the socket was closed with this data still queued on it",
            "the application closed before reading everything, usually harmless",
        ),
    ),
    (
        "SOCKET_FILTER",
        a(
            "a filter attached to the socket (classic BPF or eBPF, e.g. SO_ATTACH_FILTER) refused the packet",
            "see which program owns the socket and its filter (ss -p -b)",
        ),
    ),
    (
        "SOCKET_RCVBUFF",
        a(
            "the socket's receive buffer was full: the application does not read fast enough",
            "check Recv-Q of that socket with ss inside the pod, raise SO_RCVBUF or net.core.rmem_max, or find why the application is slow",
        ),
    ),
    (
        "TCP_ABORT_ON_DATA",
        a(
            "data arrived for a TCP socket the application had already closed, so the connection was aborted with a reset",
            "the application closed the connection while the peer was still sending, check the protocol between them",
        ),
    ),
    (
        "TCP_ACK_UNSENT_DATA",
        a(
            "the peer acknowledged data this host has not sent yet",
            "look for a middlebox that rewrites sequence numbers or a peer that confuses two connections (NAT port reuse)",
        ),
    ),
    (
        "TCP_CLOSE",
        a(
            "a segment arrived for a TCP socket already in CLOSE state",
            "the connection was already torn down on this side, look for a reset or timeout before it",
        ),
    ),
    (
        "TCP_CSUM",
        a(
            "the TCP checksum was wrong",
            "check checksum offload (ethtool -k) on the sender and tunnel devices, and tc/XDP programs that rewrite without fixing checksums",
        ),
    ),
    (
        "TCP_FLAGS",
        a(
            "the TCP flags did not fit the connection state (e.g. a segment with none of SYN, ACK or RST)",
            "look at the peer or a middlebox that crafts or rewrites segments (a scanner, a broken NAT)",
        ),
    ),
    (
        "TCP_INVALID_ACK_SEQUENCE",
        a(
            "the segment acknowledged data outside what this host has sent and not yet seen acknowledged",
            "the two ends disagree on the connection, look for a NAT or load balancer that moved the flow or a peer that restarted",
        ),
    ),
    (
        "TCP_INVALID_SEQUENCE",
        a(
            "the segment's sequence number was outside the receive window",
            "the two ends disagree on the connection, look for a NAT or load balancer that moved the flow or a peer that restarted",
        ),
    ),
    (
        "TCP_INVALID_SYN",
        a(
            "a SYN arrived on a connection that already exists (the kernel answers with a challenge ACK)",
            "the peer restarted or reused the port, check NAT port reuse between pods sharing a source address",
        ),
    ),
    (
        "TCP_LISTEN_OVERFLOW",
        a(
            "the listening socket's accept queue was full: the server does not accept new connections fast enough",
            "compare Recv-Q and Send-Q of the listener in ss -lnt, raise the listen backlog and net.core.somaxconn, or find why the server is slow",
        ),
    ),
    (
        "TCP_MD5FAILURE",
        a(
            "the segment's TCP MD5 signature (RFC 2385) was wrong",
            "make sure both peers use the same MD5 key (e.g. the BGP password)",
        ),
    ),
    (
        "TCP_MD5NOTFOUND",
        a(
            "a segment without a TCP MD5 signature reached a socket that requires one",
            "configure the same MD5 key on the peer (e.g. the BGP password)",
        ),
    ),
    (
        "TCP_MD5UNEXPECTED",
        a(
            "a segment carried a TCP MD5 signature the socket does not expect",
            "configure the MD5 key on this side too, or remove it on the peer",
        ),
    ),
    (
        "TCP_MINTTL",
        a(
            "the packet's TTL or hop limit was below the minimum the socket accepts (IP_MINTTL or IPV6_MINHOPCOUNT, e.g. BGP GTSM)",
            "the peer is more hops away than the application allows, check the path and the application's TTL security setting",
        ),
    ),
    (
        "TCP_OFOMERGE",
        a(
            "the segment's data was already in the out-of-order queue (a duplicate)",
            "harmless once, many point at retransmissions on a lossy or reordering path",
        ),
    ),
    (
        "TCP_OFO_DROP",
        a(
            "out-of-order data could not be queued: it was already received or fell outside the window",
            "harmless once, many point at retransmissions or a receiver whose buffer is full",
        ),
    ),
    (
        "TCP_OFO_QUEUE_PRUNE",
        a(
            "data in the out-of-order queue was thrown away to free memory for the socket",
            "the receive buffer is too small for the loss and reordering on the path, look for drops upstream and check net.ipv4.tcp_rmem",
        ),
    ),
    (
        "TCP_OLD_ACK",
        a(
            "the segment carried an old acknowledgement (still in the window)",
            "harmless once, many point at reordering or duplicated packets on the path",
        ),
    ),
    (
        "TCP_OLD_DATA",
        a(
            "the segment carried data this host had already received and acknowledged (a retransmission)",
            "the acknowledgement was probably lost or late on its way back, trace the ACKs towards the sender",
        ),
    ),
    (
        "TCP_OLD_SEQUENCE",
        a(
            "the segment's sequence number was old (a duplicate packet)",
            "harmless once, many point at retransmissions or duplicated packets on the path",
        ),
    ),
    (
        "TCP_OVERWINDOW",
        a(
            "the segment's data went beyond the right edge of the receive window",
            "the sender ignores the advertised window or a middlebox changed window scaling, compare the window scale options of the SYNs",
        ),
    ),
    (
        "TCP_RESET",
        a(
            "a TCP reset was refused because its sequence number does not fit the connection (the kernel answers with a challenge ACK)",
            "look for a middlebox or a stale peer that sends resets for an old connection",
        ),
    ),
    (
        "TCP_RFC7323_PAWS",
        a(
            "PAWS: the segment's TCP timestamp was older than the last one seen on this connection",
            "often clients behind one NAT that reuse a port, or a peer that restarted, check NAT port reuse and net.ipv4.tcp_timestamps",
        ),
    ),
    (
        "TCP_TOO_OLD_ACK",
        a(
            "the segment acknowledged data from before the current window (a very old acknowledgement)",
            "look for duplicated or long-delayed packets, or a NAT that mixes two connections",
        ),
    ),
    (
        "TCP_ZEROWINDOW",
        a(
            "the receive window was zero: the application did not read and its buffer was full",
            "check Recv-Q of the receiving socket (ss -nt inside the pod) and why the application does not read",
        ),
    ),
    (
        "TC_CHAIN_NOTFOUND",
        a(
            "a tc action jumped to a chain that does not exist",
            "check the tc filters and chains of the device (tc filter show dev <dev> ingress or egress)",
        ),
    ),
    (
        "TC_EGRESS",
        a(
            "a tc filter or BPF program on the device's egress hook dropped the packet",
            "list them with tc filter show dev <dev> egress and bpftool net show (CNI plugins such as Cilium attach programs there)",
        ),
    ),
    (
        "TC_INGRESS",
        a(
            "a tc filter or BPF program on the device's ingress hook dropped the packet",
            "list them with tc filter show dev <dev> ingress and bpftool net show (CNI plugins such as Cilium attach programs there)",
        ),
    ),
    (
        "TC_RECLASSIFY_LOOP",
        a(
            "a tc classification looped more often than the kernel allows",
            "check the tc filters of the device for actions that reclassify in a cycle",
        ),
    ),
    (
        "TUNNEL_TXINFO",
        a(
            "a packet reached a tunnel device in external (collect_md) mode without the metadata that says where to send it",
            "the BPF program or route that should set the tunnel key did not, check the CNI's programs or routes with encap",
        ),
    ),
    (
        "UDP_CSUM",
        a(
            "the UDP checksum was wrong",
            "check checksum offload (ethtool -k) on the sender and tunnel devices, and tc/XDP programs that rewrite without fixing checksums",
        ),
    ),
    (
        "UNHANDLED_PROTO",
        a(
            "the protocol of the packet is not implemented or not supported where it arrived",
            "find the sender with --detail and see what it sends (tcpdump -v)",
        ),
    ),
    (
        "UNICAST_IN_L2_MULTICAST",
        a(
            "a unicast IP packet arrived in a multicast or broadcast frame",
            "find the sender or the proxy that answered ARP/NDP with a multicast MAC, see conf.<dev>.drop_unicast_in_l2_multicast",
        ),
    ),
    (
        "VXLAN_ENTRY_EXISTS",
        a(
            "a VXLAN frame would have moved a static forwarding entry (or one pointing to a nexthop) to another remote",
            "check bridge fdb show dev <vxlan> for the source MAC, a static entry may point to the wrong node",
        ),
    ),
    (
        "VXLAN_INVALID_HDR",
        a(
            "the VXLAN header was invalid (reserved bits set or the I flag missing)",
            "check that both ends use the same VXLAN options (GBP, GPE) and that only VXLAN reaches that UDP port",
        ),
    ),
    (
        "VXLAN_NO_REMOTE",
        a(
            "a VXLAN device knew no remote endpoint to send this packet to",
            "check bridge fdb show dev <vxlan> for the destination MAC and the remote or group of the device (ip -d link show)",
        ),
    ),
    (
        "VXLAN_VNI_NOT_FOUND",
        a(
            "no VXLAN device on this host has the VNI of the received packet",
            "compare the VNI with ip -d link show type vxlan on this node and the configuration of the sending node",
        ),
    ),
    (
        "XDP",
        a(
            "an XDP program on the receiving device dropped the packet",
            "list XDP programs with ip link show dev <dev> or bpftool net show, and check what the program filters",
        ),
    ),
    (
        "XFRM_POLICY",
        a(
            "an IPsec (xfrm) policy check failed: the packet was not protected the way a policy requires, or a block policy matched",
            "check ip xfrm policy and ip xfrm state (e.g. an expired security association of an encrypting CNI)",
        ),
    ),
];

/// What a drop with this reason means, by the reason's name as the kernel
/// prints it (`NO_SOCKET`; a `SKB_DROP_REASON_` prefix is ignored). `None` for
/// reasons not in the table: callers still print the name.
pub fn for_drop_reason(name: &str) -> Option<Advice> {
    let name = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(name);
    DROP_REASONS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| DROP_REASONS[i].1)
}

/// The drop reason names the table covers, in byte order.
pub fn known_reasons() -> impl Iterator<Item = &'static str> {
    DROP_REASONS.iter().map(|(n, _)| *n)
}

/// A TCP reset this host sent (`tcp_send_reset`).
pub fn for_tcp_reset() -> Advice {
    a(
        "this host answered with a TCP reset: nothing listens on the port, the connection is unknown here, or the application aborted it",
        "check ss -lnt in that namespace for the port, and for an unknown connection the drop or NAT events just before the reset",
    )
}

/// A TCP segment sent again.
pub fn for_retransmit() -> Advice {
    a(
        "a TCP segment was sent again: the first copy or its acknowledgement was lost or late",
        "look for a drop of the first copy or of the ACK on this path, in both directions",
    )
}

/// An ICMP error sent, its type unknown (the `icmp_send` tracepoint names
/// the packet it answers).
pub fn for_icmp_sent() -> Advice {
    a(
        "this host answered the packet with an ICMP error: unreachable (no socket, no route, a reject rule), time exceeded or fragmentation needed",
        "the events just before it say which: a NO_SOCKET drop is a closed UDP port, IP_OUTNOROUTES a missing route",
    )
}

/// A reply the kernel held back under its rate limit (an ICMP error, a TCP
/// challenge ACK).
pub fn for_rate_limited() -> Advice {
    a(
        "the kernel held back a reply (an ICMP error or a TCP challenge ACK) because of its rate limit",
        "check net.ipv4.icmp_ratelimit, icmp_msgs_per_sec, net.ipv6.icmp.ratelimit or tcp_challenge_ack_limit, and what triggers so many replies",
    )
}

/// One ICMP or ICMPv6 error the kernel may send. `code: None` matches every
/// code of the type.
struct IcmpEntry {
    v6: bool,
    icmp_type: u8,
    code: Option<u8>,
    name: &'static str,
    advice: Advice,
}

const fn icmp(
    v6: bool,
    icmp_type: u8,
    code: Option<u8>,
    name: &'static str,
    advice: Advice,
) -> IcmpEntry {
    IcmpEntry {
        v6,
        icmp_type,
        code,
        name,
        advice,
    }
}

const NET_UNREACH: Advice = a(
    "no route to the destination network: this host (the sender of the error) could not route the packet",
    "check ip route get <daddr> in the namespace that sent the error",
);
const HOST_UNREACH: Advice = a(
    "the destination host could not be reached: usually no ARP/NDP answer from it, or no route to it",
    "check that the destination is up and on that link (ip neigh in the namespace that sent the error, -p arp)",
);
const PORT_UNREACH: Advice = a(
    "nothing listens on that port at the destination, or a REJECT rule refused it (port unreachable is REJECT's default)",
    "check ss -lnu in the destination namespace, a Service without endpoints, or name the REJECT rule with --nft-trace",
);
const ADMIN_PROHIBITED: Advice = a(
    "a firewall rule rejected the packet and said so (administratively prohibited)",
    "name the rule with --nft-trace (a REJECT in iptables or nftables, e.g. from a NetworkPolicy)",
);
const TOO_BIG: Advice = a(
    "the packet was larger than the MTU of the next link and could not be fragmented, the sender must send smaller packets",
    "make sure this error reaches the sender (not filtered) and compare MTUs of pod, veth, tunnel and underlay",
);
const TTL_EXCEEDED: Advice = a(
    "the TTL or hop limit ran out while this host forwarded the packet: a routing loop or too many hops",
    "look for a routing loop (traceroute, ip route on each hop) or a sender with a very low TTL",
);
const REASM_EXCEEDED: Advice = a(
    "fragment reassembly timed out: some fragment of the datagram never arrived",
    "trace the missing fragments by address (they carry no ports) and avoid fragmentation with a consistent MTU",
);
const PARAM_PROBLEM: Advice = a(
    "a header field of the packet was invalid (parameter problem)",
    "capture the packet (tcpdump -v) and check the field the error points at",
);

/// ICMP and ICMPv6 errors, exact codes before whole types.
const ICMP_ERRORS: &[IcmpEntry] = &[
    icmp(false, 3, Some(0), "net unreachable", NET_UNREACH),
    icmp(false, 3, Some(1), "host unreachable", HOST_UNREACH),
    icmp(
        false,
        3,
        Some(2),
        "protocol unreachable",
        a(
            "the destination does not handle the packet's IP protocol (e.g. SCTP or GRE not loaded)",
            "load the protocol module at the destination or stop sending that protocol",
        ),
    ),
    icmp(false, 3, Some(3), "port unreachable", PORT_UNREACH),
    icmp(false, 3, Some(4), "frag needed", TOO_BIG),
    icmp(false, 3, Some(9), "net prohibited", ADMIN_PROHIBITED),
    icmp(false, 3, Some(10), "host prohibited", ADMIN_PROHIBITED),
    icmp(false, 3, Some(13), "admin prohibited", ADMIN_PROHIBITED),
    icmp(false, 11, Some(0), "ttl exceeded", TTL_EXCEEDED),
    icmp(false, 11, Some(1), "reassembly timeout", REASM_EXCEEDED),
    icmp(false, 12, None, "param problem", PARAM_PROBLEM),
    icmp(true, 1, Some(0), "no route", NET_UNREACH),
    icmp(true, 1, Some(1), "admin prohibited", ADMIN_PROHIBITED),
    icmp(
        true,
        1,
        Some(2),
        "beyond scope",
        a(
            "the destination is beyond the scope of the source address (e.g. a link-local source sent off its link)",
            "check the source address the sender chose (ip route get <daddr>) and give it a global address",
        ),
    ),
    icmp(true, 1, Some(3), "address unreachable", HOST_UNREACH),
    icmp(true, 1, Some(4), "port unreachable", PORT_UNREACH),
    icmp(true, 1, Some(5), "source policy failed", ADMIN_PROHIBITED),
    icmp(
        true,
        1,
        Some(6),
        "reject route",
        a(
            "a reject route (ip route add prohibit or unreachable) matched the destination",
            "check ip -6 route and ip -6 rule in the namespace that sent the error",
        ),
    ),
    icmp(true, 2, None, "too big", TOO_BIG),
    icmp(true, 3, Some(0), "hop limit exceeded", TTL_EXCEEDED),
    icmp(true, 3, Some(1), "reassembly timeout", REASM_EXCEEDED),
    icmp(true, 4, None, "param problem", PARAM_PROBLEM),
];

fn icmp_entry(v6: bool, icmp_type: u8, code: u8) -> Option<&'static IcmpEntry> {
    ICMP_ERRORS
        .iter()
        .find(|e| e.v6 == v6 && e.icmp_type == icmp_type && e.code.is_none_or(|c| c == code))
}

/// What an ICMP (or ICMPv6 when `v6`) error the kernel sent means. `None`
/// for types and codes not in the table (echo, redirects, ...).
pub fn for_icmp_error(v6: bool, icmp_type: u8, code: u8) -> Option<Advice> {
    icmp_entry(v6, icmp_type, code).map(|e| e.advice)
}

/// A short name of an ICMP (or ICMPv6) error, as `port unreachable`; `None`
/// when it is not in the table.
pub fn icmp_error_name(v6: bool, icmp_type: u8, code: u8) -> Option<&'static str> {
    icmp_entry(v6, icmp_type, code).map(|e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_advice() -> Vec<(String, Advice)> {
        let mut v: Vec<(String, Advice)> = DROP_REASONS
            .iter()
            .map(|(n, a)| ((*n).to_string(), *a))
            .collect();
        v.extend(
            ICMP_ERRORS
                .iter()
                .map(|e| (format!("icmp {} {:?} {}", e.v6, e.code, e.name), e.advice)),
        );
        v.push(("tcp reset".into(), for_tcp_reset()));
        v.push(("retransmit".into(), for_retransmit()));
        v.push(("rate limited".into(), for_rate_limited()));
        v
    }

    #[test]
    fn table_is_sorted_unique_and_large_enough() {
        for w in DROP_REASONS.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        assert!(DROP_REASONS.len() >= 40, "{}", DROP_REASONS.len());
        assert_eq!(known_reasons().count(), DROP_REASONS.len());
    }

    #[test]
    fn names_look_like_kernel_names() {
        for name in known_reasons() {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn texts_follow_the_convention() {
        for (what, adv) in all_advice() {
            for part in [adv.explanation, adv.next_step] {
                assert!(!part.is_empty(), "{what}: empty");
                assert!(part.is_ascii(), "{what}: not ASCII: {part}");
                assert!(
                    part.len() <= MAX_PART_LEN,
                    "{what}: {} chars: {part}",
                    part.len()
                );
                assert!(!part.ends_with('.'), "{what}: trailing period: {part}");
                assert!(!part.contains(';'), "{what}: has ';': {part}");
                assert!(!part.contains('\n'), "{what}: has a newline");
                assert_eq!(part, part.trim(), "{what}: surrounding space");
                assert!(!part.contains("  "), "{what}: double space: {part}");
            }
        }
    }

    #[test]
    fn common_reasons_are_covered() {
        for name in [
            "NO_SOCKET",
            "NETFILTER_DROP",
            "IP_RPFILTER",
            "IP_INADDRERRORS",
            "OTHERHOST",
            "NEIGH_FAILED",
            "QDISC_DROP",
            "TCP_CSUM",
            "SOCKET_RCVBUFF",
            "PKT_TOO_BIG",
            "IP_NOPROTO",
            "SOCKET_FILTER",
            "UDP_CSUM",
            "IP_OUTNOROUTES",
            "IP_CSUM",
            "IP_INHDR",
            "IPV6_BAD_EXTHDR",
            "TCP_FLAGS",
            "TCP_ZEROWINDOW",
            "TCP_OLD_DATA",
            "TCP_OVERWINDOW",
            "TCP_OFOMERGE",
            "TCP_RFC7323_PAWS",
            "TCP_INVALID_SEQUENCE",
            "TCP_RESET",
            "TCP_INVALID_SYN",
            "TCP_CLOSE",
            "TCP_LISTEN_OVERFLOW",
            "XDP",
            "TC_INGRESS",
            "TC_EGRESS",
            "NEIGH_CREATEFAIL",
            "NEIGH_QUEUEFULL",
            "NEIGH_DEAD",
            "FULL_RING",
            "NOMEM",
            "DEV_READY",
            "DEV_HDR",
            "BPF_CGROUP_EGRESS",
            "UNICAST_IN_L2_MULTICAST",
            "XFRM_POLICY",
            "IP_LOCAL_SOURCE",
            "IP_INVALID_SOURCE",
            "IP_LOCALNET",
            "IP_INVALID_DEST",
            "PKT_TOO_SMALL",
            "SKB_UCOPY_FAULT",
            "NOT_SPECIFIED",
            "TUNNEL_TXINFO",
            "VXLAN_INVALID_HDR",
            "VXLAN_VNI_NOT_FOUND",
            "MAC_INVALID_SOURCE",
            "VXLAN_ENTRY_EXISTS",
            "IP_TUNNEL_ECN",
            "NO_TX_TARGET",
            "FRAG_REASM_TIMEOUT",
            "FRAG_TOO_FAR",
            "TCP_MD5NOTFOUND",
            "TCP_MD5UNEXPECTED",
            "TCP_MD5FAILURE",
            "SOCKET_CLOSE",
        ] {
            assert!(for_drop_reason(name).is_some(), "{name}");
        }
    }

    #[test]
    fn lookup_by_name() {
        let adv = for_drop_reason("NETFILTER_DROP").expect("known");
        assert!(adv.next_step.contains("--nft-trace"));
        assert_eq!(for_drop_reason("SKB_DROP_REASON_NETFILTER_DROP"), Some(adv));
        assert!(for_drop_reason("NO_SOCKET")
            .expect("known")
            .next_step
            .contains("ss -lntu"));
        assert!(for_drop_reason("IP_RPFILTER")
            .expect("known")
            .next_step
            .contains("rp_filter"));
        assert_eq!(for_drop_reason("NOT_A_REASON"), None);
        assert_eq!(for_drop_reason("reason 77"), None);
        assert_eq!(for_drop_reason(""), None);
        assert_eq!(for_drop_reason("netfilter_drop"), None);
    }

    #[test]
    fn line_joins_the_halves() {
        let adv = Advice {
            explanation: "what",
            next_step: "then",
        };
        assert_eq!(adv.line(), "advice: what; then");
        assert_eq!(adv.text(), "what; then");
    }

    #[test]
    fn icmp_errors() {
        assert_eq!(icmp_error_name(false, 3, 3), Some("port unreachable"));
        assert_eq!(icmp_error_name(true, 1, 4), Some("port unreachable"));
        assert_eq!(icmp_error_name(false, 3, 4), Some("frag needed"));
        assert_eq!(icmp_error_name(true, 2, 0), Some("too big"));
        assert_eq!(icmp_error_name(false, 11, 0), Some("ttl exceeded"));
        assert_eq!(icmp_error_name(true, 3, 0), Some("hop limit exceeded"));
        assert_eq!(icmp_error_name(false, 12, 2), Some("param problem"));
        assert_eq!(for_icmp_error(false, 3, 13), for_icmp_error(true, 1, 1));
        assert_eq!(for_icmp_error(false, 3, 3), for_icmp_error(true, 1, 4));
        for (t, c) in [
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4),
            (3, 9),
            (3, 10),
            (3, 13),
            (11, 0),
            (11, 1),
        ] {
            assert!(for_icmp_error(false, t, c).is_some(), "icmp {t}/{c}");
        }
        // Echo and unknown codes have no advice.
        assert_eq!(for_icmp_error(false, 8, 0), None);
        assert_eq!(for_icmp_error(false, 0, 0), None);
        assert_eq!(for_icmp_error(true, 128, 0), None);
        assert_eq!(for_icmp_error(false, 3, 200), None);
        assert_eq!(icmp_error_name(false, 5, 0), None);
    }

    #[test]
    fn reset_mentions_the_port_check() {
        assert!(for_tcp_reset().next_step.contains("ss -lnt"));
    }
}
