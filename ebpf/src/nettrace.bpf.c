// SPDX-License-Identifier: GPL-2.0
/*
 * nettrace kernel side: one shared body that reads an skb, filters it and
 * emits an nt_event to the ring buffer; thin entry programs per attach point.
 *
 * Raw tracepoint programs can't tell which tracepoint fired them, so each
 * entry program is a numbered "slot": user space writes what the slot traces
 * (tracer id, argument positions, role) into nt_slots before attaching.
 * A raw tracepoint program may only read as many arguments as the tracepoint
 * has, so slots come in families by the highest argument index they read.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "nt_core.h"
#include "nt_abi.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define ETH_P_ARP 0x0806
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define AF_INET 2
#define AF_INET6 10
#define NO_OFFSET 0xffff

char LICENSE[] SEC("license") = "GPL";

/* The filter; user space overrides it before loading (aya set_global). */
const volatile struct nt_filter nt_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} nt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NT_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct nt_slot);
} nt_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} nt_stats SEC(".maps");

/* Per-CPU scratch space for the event being built (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_event);
} nt_scratch SEC(".maps");

/* skb-mode: skbs that matched once and are followed until freed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} nt_skbs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, NT_MAX_STACK_DEPTH * sizeof(__u64));
} nt_stacks SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&nt_stats, &idx);

	if (v)
		*v += 1;
}

/* Arguments of the hook that fired, as the body needs them. */
struct nt_args {
	__u64 skb;
	__u64 sk;
	__u64 location;
	__u64 reason;
	__u32 slot;
};

static __always_inline int parse_l4(struct nt_event *e, unsigned char *l4)
{
	switch (e->l4_proto) {
	case IPPROTO_TCP: {
		__u8 th[14];

		if (bpf_probe_read_kernel(th, sizeof(th), l4))
			return -1;
		e->sport = ((__u16)th[0] << 8) | th[1];
		e->dport = ((__u16)th[2] << 8) | th[3];
		e->seq = ((__u32)th[4] << 24) | ((__u32)th[5] << 16) | ((__u32)th[6] << 8) | th[7];
		e->ack = ((__u32)th[8] << 24) | ((__u32)th[9] << 16) | ((__u32)th[10] << 8) | th[11];
		e->tcp_flags = th[13];
		return 0;
	}
	case IPPROTO_UDP: {
		__u8 uh[4];

		if (bpf_probe_read_kernel(uh, sizeof(uh), l4))
			return -1;
		e->sport = ((__u16)uh[0] << 8) | uh[1];
		e->dport = ((__u16)uh[2] << 8) | uh[3];
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 ih[8];

		if (bpf_probe_read_kernel(ih, sizeof(ih), l4))
			return -1;
		e->icmp_type = ih[0];
		e->icmp_code = ih[1];
		e->icmp_id = ((__u16)ih[4] << 8) | ih[5];
		e->icmp_seq = ((__u16)ih[6] << 8) | ih[7];
		return 0;
	}
	}
	return 0;
}

/* Reads the L3/L4 headers of the skb into e; returns -1 when there are none. */
static __always_inline int parse_skb(struct nt_event *e, struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 mac = BPF_CORE_READ(skb, mac_header);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	unsigned char *l3;
	__u8 first;

	/*
	 * The network header offset is only trustworthy once set past the MAC
	 * header; on early receive paths it is still 0 and the IP header sits
	 * right after the Ethernet header.
	 */
	if (nh != NO_OFFSET && nh != 0 && (mac == NO_OFFSET || nh > mac))
		l3 = head + nh;
	else if (mac != NO_OFFSET)
		l3 = head + mac + ETH_HLEN;
	else
		l3 = BPF_CORE_READ(skb, data);

	if (bpf_probe_read_kernel(&first, 1, l3))
		return -1;
	if (proto == 0) {
		/* Local output before skb->protocol is set: trust the version. */
		if ((first >> 4) == 4)
			proto = ETH_P_IP;
		else if ((first >> 4) == 6)
			proto = ETH_P_IPV6;
		else
			return -1;
	}
	e->l3_proto = proto;

	if (proto == ETH_P_IP) {
		__u8 iph[20];
		__u16 frag;

		if (bpf_probe_read_kernel(iph, sizeof(iph), l3) || (iph[0] >> 4) != 4)
			return -1;
		e->l4_proto = iph[9];
		__builtin_memcpy(e->saddr, &iph[12], 4);
		__builtin_memcpy(e->daddr, &iph[16], 4);
		frag = ((__u16)(iph[6] & 0x1f) << 8) | iph[7];
		if (frag || parse_l4(e, l3 + (iph[0] & 0xf) * 4))
			e->flags |= NT_F_L4_BAD;
	} else if (proto == ETH_P_IPV6) {
		__u8 ip6h[40];

		if (bpf_probe_read_kernel(ip6h, sizeof(ip6h), l3) || (ip6h[0] >> 4) != 6)
			return -1;
		e->l4_proto = ip6h[6];
		__builtin_memcpy(e->saddr, &ip6h[8], 16);
		__builtin_memcpy(e->daddr, &ip6h[24], 16);
		if (parse_l4(e, l3 + 40))
			e->flags |= NT_F_L4_BAD;
	} else if (proto == ETH_P_ARP) {
		__u8 arp[28];

		/* Ethernet/IPv4 ARP: op at 6, sender IP at 14, target IP at 24. */
		if (bpf_probe_read_kernel(arp, sizeof(arp), l3))
			return 0;
		e->arp_op = ((__u16)arp[6] << 8) | arp[7];
		__builtin_memcpy(e->saddr, &arp[14], 4);
		__builtin_memcpy(e->daddr, &arp[24], 4);
	}
	return 0;
}

/* Fills addresses from the socket, for skbs whose headers are not built yet. */
static __always_inline void parse_sock(struct nt_event *e, struct sock *sk)
{
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		e->l3_proto = ETH_P_IP;
		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	} else if (family == AF_INET6) {
		e->l3_proto = ETH_P_IPV6;
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		return;
	}
	e->l4_proto = IPPROTO_TCP;
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->flags |= NT_F_FROM_SK;
}

static __always_inline int addr_eq(const volatile __u8 *want, const __u8 *have, int v6)
{
	if (!v6)
		return *(const volatile __u32 *)want == *(const __u32 *)have;
	return *(const volatile __u64 *)want == *(const __u64 *)have &&
	       *(const volatile __u64 *)(want + 8) == *(const __u64 *)(have + 8);
}

/* The packet part of the filter (device and task parts are checked earlier). */
static __always_inline int packet_matches(const struct nt_event *e)
{
	__u32 fl = nt_cfg.flags;
	int v6 = fl & NT_FL_V6;

	if (nt_cfg.l3_proto && nt_cfg.l3_proto != e->l3_proto)
		return 0;
	if (nt_cfg.l4_proto && (e->l3_proto == ETH_P_ARP || nt_cfg.l4_proto != e->l4_proto))
		return 0;
	if (fl & (NT_FL_SADDR | NT_FL_DADDR | NT_FL_ADDR)) {
		__u16 want = v6 ? ETH_P_IPV6 : ETH_P_IP;

		if (e->l3_proto != want && !(e->l3_proto == ETH_P_ARP && !v6))
			return 0;
		if ((fl & NT_FL_SADDR) && !addr_eq(nt_cfg.saddr, e->saddr, v6))
			return 0;
		if ((fl & NT_FL_DADDR) && !addr_eq(nt_cfg.daddr, e->daddr, v6))
			return 0;
		if ((fl & NT_FL_ADDR) && !addr_eq(nt_cfg.addr, e->saddr, v6) &&
		    !addr_eq(nt_cfg.addr, e->daddr, v6))
			return 0;
	}
	if (nt_cfg.sport || nt_cfg.dport || nt_cfg.port) {
		if ((e->l4_proto != IPPROTO_TCP && e->l4_proto != IPPROTO_UDP) ||
		    (e->flags & NT_F_L4_BAD) || e->l3_proto == ETH_P_ARP)
			return 0;
		if (nt_cfg.sport && nt_cfg.sport != e->sport)
			return 0;
		if (nt_cfg.dport && nt_cfg.dport != e->dport)
			return 0;
		if (nt_cfg.port && nt_cfg.port != e->sport && nt_cfg.port != e->dport)
			return 0;
	}
	return 1;
}

static __noinline int nt_handle(void *ctx, struct nt_args *a)
{
	struct sk_buff *skb = (struct sk_buff *)a->skb;
	struct net_device *dev;
	struct nt_slot *slot;
	struct nt_event *e;
	__u32 zero = 0;
	__u64 pid_tgid;
	int remembered = 0;

	if (!skb)
		return 0;
	slot = bpf_map_lookup_elem(&nt_slots, &a->slot);
	if (!slot || !slot->enabled)
		return 0;

	if (nt_cfg.flags & NT_FL_SKB_MODE)
		remembered = bpf_map_lookup_elem(&nt_skbs, &a->skb) != 0;

	pid_tgid = bpf_get_current_pid_tgid();
	if (!remembered && nt_cfg.pid && nt_cfg.pid != (__u32)(pid_tgid >> 32))
		return 0;

	e = bpf_map_lookup_elem(&nt_scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));

	dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		e->ifindex = BPF_CORE_READ(dev, ifindex);
		e->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		struct sock *sk = BPF_CORE_READ(skb, sk);

		if (sk)
			e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	if (!remembered) {
		if (nt_cfg.netns && nt_cfg.netns != e->netns)
			return 0;
		if (nt_cfg.ifindex && nt_cfg.ifindex != e->ifindex)
			return 0;
	}

	if (parse_skb(e, skb) && a->sk)
		parse_sock(e, (struct sock *)a->sk);

	if (remembered) {
		e->flags |= NT_F_SKB_MODE;
	} else {
		if (!packet_matches(e))
			return 0;
		if (nt_cfg.flags & NT_FL_SKB_MODE) {
			__u8 one = 1;

			if (bpf_map_update_elem(&nt_skbs, &a->skb, &one, BPF_ANY))
				stat_inc(NT_STAT_SKB_MAP_FULL);
		}
	}

	if ((slot->role == NT_ROLE_CONSUME || slot->role == NT_ROLE_DROP) &&
	    (nt_cfg.flags & NT_FL_SKB_MODE))
		bpf_map_delete_elem(&nt_skbs, &a->skb);

	e->ts_ns = bpf_ktime_get_ns();
	e->skb = a->skb;
	e->tracer_id = slot->tracer_id;
	e->pid = pid_tgid >> 32;
	e->pkt_len = BPF_CORE_READ(skb, len);
	e->location = a->location;
	e->drop_reason = a->reason;
	e->stack_id = -1;
	if (dev)
		bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), dev->name);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (slot->stack) {
		long id = bpf_get_stackid(ctx, &nt_stacks, 0);

		if (id < 0)
			stat_inc(NT_STAT_STACK_FAIL);
		else
			e->stack_id = id;
	}

	stat_inc(NT_STAT_MATCHED);
	if (bpf_ringbuf_output(&nt_events, e, sizeof(*e), 0))
		stat_inc(NT_STAT_RB_FULL);
	return 0;
}

/*
 * Reads raw tracepoint argument i, never touching an index above max (a
 * compile-time constant), so the program attaches to any tracepoint with
 * more than max arguments.
 */
static __always_inline __u64 rtp_arg(struct bpf_raw_tracepoint_args *ctx, __u8 i, const int max)
{
	/*
	 * Load every allowed argument at a constant offset first: selecting the
	 * pointer instead lets clang emit ctx+8*i, which the verifier rejects.
	 */
	__u64 a0 = ctx->args[0];
	__u64 a1 = max >= 1 ? ctx->args[1] : 0;
	__u64 a2 = max >= 2 ? ctx->args[2] : 0;
	__u64 a3 = max >= 3 ? ctx->args[3] : 0;

	asm volatile("" : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3));
	if (i == 0)
		return a0;
	if (i == 1)
		return a1;
	if (i == 2)
		return a2;
	if (i == 3)
		return a3;
	return 0;
}

static __always_inline int rtp_entry(struct bpf_raw_tracepoint_args *ctx, __u32 slot_idx,
				     const int max)
{
	struct nt_args a = { .slot = slot_idx };
	struct nt_slot *slot = bpf_map_lookup_elem(&nt_slots, &slot_idx);

	if (!slot)
		return 0;
	a.skb = rtp_arg(ctx, slot->skb_arg, max);
	if (slot->sk_arg != NT_ARG_NONE)
		a.sk = rtp_arg(ctx, slot->sk_arg, max);
	return nt_handle(ctx, &a);
}

/* kfree_skb(skb, location, reason, ...): the drop reason and where. */
static __always_inline int rtp_drop_entry(struct bpf_raw_tracepoint_args *ctx, __u32 slot_idx)
{
	struct nt_args a = {
		.slot = slot_idx,
		.skb = ctx->args[0],
		.location = ctx->args[1],
		.reason = ctx->args[2],
	};

	return nt_handle(ctx, &a);
}

#define RTP_SLOT(fam, max, n)                                                    \
	SEC("raw_tracepoint")                                                    \
	int nt_a##fam##_##n(struct bpf_raw_tracepoint_args *ctx)                 \
	{                                                                        \
		return rtp_entry(ctx, NT_SLOT_BASE_A##fam + n, max);             \
	}

#define RTP_DROP_SLOT(n)                                                         \
	SEC("raw_tracepoint")                                                    \
	int nt_drop_##n(struct bpf_raw_tracepoint_args *ctx)                     \
	{                                                                        \
		return rtp_drop_entry(ctx, NT_SLOT_BASE_DROP + n);               \
	}

/*
 * Slot numbering, mirrored in node-agent/src/slots.rs:
 *   0..23  family a0 (reads arg 0)       24..39 family a1 (args 0-1)
 *  40..47  family a2 (args 0-2)          48..51 family a3 (args 0-3)
 *  52..53  drop (kfree_skb signature)
 */
#define NT_SLOT_BASE_A0 0
#define NT_SLOT_BASE_A1 24
#define NT_SLOT_BASE_A2 40
#define NT_SLOT_BASE_A3 48
#define NT_SLOT_BASE_DROP 52

/* One entry program per slot (literal numbers: the preprocessor can't count). */
RTP_SLOT(0, 0, 0) RTP_SLOT(0, 0, 1) RTP_SLOT(0, 0, 2) RTP_SLOT(0, 0, 3)
RTP_SLOT(0, 0, 4) RTP_SLOT(0, 0, 5) RTP_SLOT(0, 0, 6) RTP_SLOT(0, 0, 7)
RTP_SLOT(0, 0, 8) RTP_SLOT(0, 0, 9) RTP_SLOT(0, 0, 10) RTP_SLOT(0, 0, 11)
RTP_SLOT(0, 0, 12) RTP_SLOT(0, 0, 13) RTP_SLOT(0, 0, 14) RTP_SLOT(0, 0, 15)
RTP_SLOT(0, 0, 16) RTP_SLOT(0, 0, 17) RTP_SLOT(0, 0, 18) RTP_SLOT(0, 0, 19)
RTP_SLOT(0, 0, 20) RTP_SLOT(0, 0, 21) RTP_SLOT(0, 0, 22) RTP_SLOT(0, 0, 23)
RTP_SLOT(1, 1, 0) RTP_SLOT(1, 1, 1) RTP_SLOT(1, 1, 2) RTP_SLOT(1, 1, 3)
RTP_SLOT(1, 1, 4) RTP_SLOT(1, 1, 5) RTP_SLOT(1, 1, 6) RTP_SLOT(1, 1, 7)
RTP_SLOT(1, 1, 8) RTP_SLOT(1, 1, 9) RTP_SLOT(1, 1, 10) RTP_SLOT(1, 1, 11)
RTP_SLOT(1, 1, 12) RTP_SLOT(1, 1, 13) RTP_SLOT(1, 1, 14) RTP_SLOT(1, 1, 15)
RTP_SLOT(2, 2, 0) RTP_SLOT(2, 2, 1) RTP_SLOT(2, 2, 2) RTP_SLOT(2, 2, 3)
RTP_SLOT(2, 2, 4) RTP_SLOT(2, 2, 5) RTP_SLOT(2, 2, 6) RTP_SLOT(2, 2, 7)
RTP_SLOT(3, 3, 0) RTP_SLOT(3, 3, 1) RTP_SLOT(3, 3, 2) RTP_SLOT(3, 3, 3)
RTP_DROP_SLOT(0) RTP_DROP_SLOT(1)
