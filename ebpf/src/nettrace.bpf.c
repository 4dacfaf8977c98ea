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
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
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

/* --rate-limit: events per second on each CPU; 0 = no limit. */
const volatile __u32 nt_rate = 0;

#define NSEC_PER_SEC 1000000000ULL

/* Token bucket of the rate limit, per CPU; one event costs NSEC_PER_SEC. */
struct nt_bucket {
	__u64 last_ns;
	__u64 tokens;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_bucket);
} nt_buckets SEC(".maps");

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

/*
 * The scope of an agent: network namespaces (key netns << 32) and
 * interfaces (key netns << 32 | ifindex) whose packets match.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} nt_scope SEC(".maps");

/* Filter flags under which matched skbs are remembered in nt_skbs. */
#define NT_FL_REMEMBER (NT_FL_SKB_MODE | NT_FL_FOLLOW)

static __always_inline int in_scope(const struct nt_event *e)
{
	__u64 key = (__u64)e->netns << 32;

	if (bpf_map_lookup_elem(&nt_scope, &key))
		return 1;
	key |= e->ifindex;
	return e->ifindex && bpf_map_lookup_elem(&nt_scope, &key) != 0;
}

/* kprobe entry programs find their tracer by function address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct nt_slot);
} nt_funcs SEC(".maps");

/* Events of function entries whose return probe will emit them again. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct nt_stash_key);
	__type(value, struct nt_event);
} nt_stash SEC(".maps");

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

/*
 * Takes one event's worth from this CPU's bucket, which refills at nt_rate
 * per second and holds a tenth of a second's worth (at least one event).
 * Returns 0, and counts the event as suppressed, when the bucket is empty.
 */
static __always_inline int rate_ok(void)
{
	__u32 zero = 0;
	struct nt_bucket *b;
	__u64 now, elapsed, cap, tokens;

	if (!nt_rate)
		return 1;
	b = bpf_map_lookup_elem(&nt_buckets, &zero);
	if (!b)
		return 1;
	now = bpf_ktime_get_ns();
	elapsed = now - b->last_ns;
	if (elapsed > 10 * NSEC_PER_SEC)
		elapsed = 10 * NSEC_PER_SEC;
	cap = ((__u64)(nt_rate / 10) + 1) * NSEC_PER_SEC;
	tokens = b->tokens + elapsed * nt_rate;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < NSEC_PER_SEC) {
		b->tokens = tokens;
		stat_inc(NT_STAT_RATE_LIMITED);
		return 0;
	}
	b->tokens = tokens - NSEC_PER_SEC;
	return 1;
}

/* Arguments of the hook that fired, as the body needs them. */
struct nt_args {
	__u64 skb;
	__u64 sk;
	__u64 dev;
	__u64 location;
	__u64 reason;
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

static __noinline int nt_handle(void *ctx, struct nt_args *a, struct nt_slot *slot)
{
	struct sk_buff *skb = (struct sk_buff *)a->skb;
	struct net_device *dev;
	struct nt_event *e;
	__u32 zero = 0;
	__u64 pid_tgid;
	int remembered = 0;

	if (!skb || !slot || !slot->enabled)
		return 0;

	if (nt_cfg.flags & NT_FL_REMEMBER)
		remembered = bpf_map_lookup_elem(&nt_skbs, &a->skb) != 0;

	pid_tgid = bpf_get_current_pid_tgid();
	if (!remembered && nt_cfg.pid && nt_cfg.pid != (__u32)(pid_tgid >> 32))
		return 0;

	e = bpf_map_lookup_elem(&nt_scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));

	/* The hook's own device argument, when it has one, names where the
	 * packet is (after a veth transmit, skb->dev is already the peer). */
	dev = a->dev ? (struct net_device *)a->dev : BPF_CORE_READ(skb, dev);
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
		if ((nt_cfg.flags & NT_FL_SCOPE) && !in_scope(e))
			return 0;
	}

	if (parse_skb(e, skb) && a->sk)
		parse_sock(e, (struct sock *)a->sk);

	/* skb-mode follows a remembered skb whatever its headers became;
	 * following alone only lifts the scope, the packet filter still holds. */
	if (remembered && (nt_cfg.flags & NT_FL_SKB_MODE)) {
		e->flags |= NT_F_SKB_MODE;
	} else {
		if (!packet_matches(e))
			return 0;
		if (!remembered && (nt_cfg.flags & NT_FL_REMEMBER)) {
			__u8 one = 1;

			if (bpf_map_update_elem(&nt_skbs, &a->skb, &one, BPF_ANY))
				stat_inc(NT_STAT_SKB_MAP_FULL);
		}
	}

	if ((slot->role == NT_ROLE_CONSUME || slot->role == NT_ROLE_DROP) &&
	    (nt_cfg.flags & NT_FL_REMEMBER))
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
	if (!rate_ok())
		return 0;
	if (slot->ret) {
		struct nt_stash_key key = { .pid_tgid = pid_tgid, .tracer_id = slot->tracer_id };

		bpf_map_update_elem(&nt_stash, &key, e, BPF_ANY);
	}
	if (bpf_ringbuf_output(&nt_events, e, sizeof(*e), 0))
		stat_inc(NT_STAT_RB_FULL);
	return 0;
}

/*
 * A traced function returned: emit its entry event again with the return
 * value. A clone (skb_clone) of a followed skb is followed too.
 */
static __noinline int nt_handle_ret(struct nt_slot *slot, __u64 retval)
{
	struct nt_stash_key key = {};
	struct nt_event *e;

	if (!slot || !slot->enabled)
		return 0;
	key.pid_tgid = bpf_get_current_pid_tgid();
	key.tracer_id = slot->tracer_id;
	e = bpf_map_lookup_elem(&nt_stash, &key);
	if (!e)
		return 0;
	e->retval = retval;
	e->flags |= NT_F_RET;
	e->ts_ns = bpf_ktime_get_ns();
	e->stack_id = -1;
	if (slot->role == NT_ROLE_CLONE && retval && (nt_cfg.flags & NT_FL_REMEMBER)) {
		__u8 one = 1;

		if (bpf_map_update_elem(&nt_skbs, &retval, &one, BPF_ANY))
			stat_inc(NT_STAT_SKB_MAP_FULL);
	}
	stat_inc(NT_STAT_MATCHED);
	if (rate_ok() && bpf_ringbuf_output(&nt_events, e, sizeof(*e), 0))
		stat_inc(NT_STAT_RB_FULL);
	bpf_map_delete_elem(&nt_stash, &key);
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
	struct nt_args a = {};
	struct nt_slot *slot = bpf_map_lookup_elem(&nt_slots, &slot_idx);

	if (!slot)
		return 0;
	a.skb = rtp_arg(ctx, slot->skb_arg, max);
	if (slot->sk_arg != NT_ARG_NONE)
		a.sk = rtp_arg(ctx, slot->sk_arg, max);
	if (slot->dev_arg != NT_ARG_NONE)
		a.dev = rtp_arg(ctx, slot->dev_arg, max);
	return nt_handle(ctx, &a, slot);
}

/* kfree_skb(skb, location, reason, ...): the drop reason and where. */
static __always_inline int rtp_drop_entry(struct bpf_raw_tracepoint_args *ctx, __u32 slot_idx)
{
	struct nt_args a = {
		.skb = ctx->args[0],
		.location = ctx->args[1],
		.reason = ctx->args[2],
	};

	return nt_handle(ctx, &a, bpf_map_lookup_elem(&nt_slots, &slot_idx));
}

/*
 * A remembered skb (skb-mode, following) is forgotten when it is freed,
 * whichever tracers were chosen: its address is soon another skb's. The
 * loader attaches these after the tracers, so a tracer on the same
 * tracepoint still sees the skb as remembered.
 */
SEC("raw_tracepoint")
int nt_forget(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 skb = ctx->args[0];

	bpf_map_delete_elem(&nt_skbs, &skb);
	return 0;
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
 * Kernel functions:
 *  64..127 fentry a0   128..175 fentry a1   176..207 fentry a2
 * 208..215 fentry a3   216..223 fentry a4
 * 224..351 fexit      352..479 kretprobe
 * 480..991 kprobe-multi (one per function; the attach cookie is the slot)
 */
#define NT_SLOT_BASE_A0 0
#define NT_SLOT_BASE_A1 24
#define NT_SLOT_BASE_A2 40
#define NT_SLOT_BASE_A3 48
#define NT_SLOT_BASE_DROP 52
#define NT_SLOT_BASE_FE0 64
#define NT_SLOT_BASE_FE1 128
#define NT_SLOT_BASE_FE2 176
#define NT_SLOT_BASE_FE3 208
#define NT_SLOT_BASE_FE4 216
#define NT_SLOT_BASE_FEXIT 224
#define NT_SLOT_BASE_KRET 352

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

/* ---- Kernel functions ---- */

/*
 * kprobe entries: one program per position of the skb argument, attached to
 * many functions; the function is found by its address in nt_funcs.
 */
static __always_inline int kp_entry(struct pt_regs *ctx, __u64 skb)
{
	__u64 ip = bpf_get_func_ip(ctx);
	struct nt_slot *slot = bpf_map_lookup_elem(&nt_funcs, &ip);
	struct nt_args a = { .skb = skb };

	if (!slot) {
		/* Some kernels with IBT report the address after the ENDBR. */
		ip -= 4;
		slot = bpf_map_lookup_elem(&nt_funcs, &ip);
	}
	return nt_handle(ctx, &a, slot);
}

/*
 * kprobe-multi (fprobe) programs: one link attaches a program to every
 * function of a family at once, and each function's attach cookie is its
 * slot. User space loads these itself (aya 0.14 can't set the attach type).
 */
static __always_inline int kpm_entry(struct pt_regs *ctx, __u64 skb)
{
	__u32 i = bpf_get_attach_cookie(ctx);
	struct nt_args a = { .skb = skb };

	return nt_handle(ctx, &a, bpf_map_lookup_elem(&nt_slots, &i));
}

SEC("kprobe") int nt_kpm_a0(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM1(ctx)); }
SEC("kprobe") int nt_kpm_a1(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM2(ctx)); }
SEC("kprobe") int nt_kpm_a2(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM3(ctx)); }
SEC("kprobe") int nt_kpm_a3(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM4(ctx)); }
SEC("kprobe") int nt_kpm_a4(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM5(ctx)); }

SEC("kprobe") int nt_kpm_ret(struct pt_regs *ctx)
{
	__u32 i = bpf_get_attach_cookie(ctx);

	return nt_handle_ret(bpf_map_lookup_elem(&nt_slots, &i), PT_REGS_RC(ctx));
}

SEC("kprobe") int nt_kp_a0(struct pt_regs *ctx) { return kp_entry(ctx, PT_REGS_PARM1(ctx)); }
SEC("kprobe") int nt_kp_a1(struct pt_regs *ctx) { return kp_entry(ctx, PT_REGS_PARM2(ctx)); }
SEC("kprobe") int nt_kp_a2(struct pt_regs *ctx) { return kp_entry(ctx, PT_REGS_PARM3(ctx)); }
SEC("kprobe") int nt_kp_a3(struct pt_regs *ctx) { return kp_entry(ctx, PT_REGS_PARM4(ctx)); }
SEC("kprobe") int nt_kp_a4(struct pt_regs *ctx) { return kp_entry(ctx, PT_REGS_PARM5(ctx)); }

/* Return probes are per function (slot), so each knows what returned. */
#define KRET_SLOT(n)                                                             \
	SEC("kretprobe")                                                         \
	int nt_kr_##n(struct pt_regs *ctx)                                       \
	{                                                                        \
		__u32 i = NT_SLOT_BASE_KRET + n;                                 \
		return nt_handle_ret(bpf_map_lookup_elem(&nt_slots, &i),         \
				     PT_REGS_RC(ctx));                           \
	}

/*
 * fentry/fexit programs are bound to one function when loaded, so they are
 * slots too; fentry slots come in families by the skb argument position (a
 * program may only read arguments its function has).
 */
#define FENTRY_SLOT(arg, n)                                                      \
	SEC("fentry")                                                            \
	int nt_fe_a##arg##_##n(unsigned long long *ctx)                          \
	{                                                                        \
		__u32 i = NT_SLOT_BASE_FE##arg + n;                              \
		struct nt_args a = { .skb = ctx[arg] };                          \
		return nt_handle(ctx, &a, bpf_map_lookup_elem(&nt_slots, &i));   \
	}

#define FEXIT_SLOT(n)                                                            \
	SEC("fexit")                                                             \
	int nt_fx_##n(unsigned long long *ctx)                                   \
	{                                                                        \
		__u32 i = NT_SLOT_BASE_FEXIT + n;                                \
		__u64 ret = 0;                                                   \
		bpf_get_func_ret(ctx, &ret);                                     \
		return nt_handle_ret(bpf_map_lookup_elem(&nt_slots, &i), ret);   \
	}

FENTRY_SLOT(0, 0) FENTRY_SLOT(0, 1) FENTRY_SLOT(0, 2) FENTRY_SLOT(0, 3)
FENTRY_SLOT(0, 4) FENTRY_SLOT(0, 5) FENTRY_SLOT(0, 6) FENTRY_SLOT(0, 7)
FENTRY_SLOT(0, 8) FENTRY_SLOT(0, 9) FENTRY_SLOT(0, 10) FENTRY_SLOT(0, 11)
FENTRY_SLOT(0, 12) FENTRY_SLOT(0, 13) FENTRY_SLOT(0, 14) FENTRY_SLOT(0, 15)
FENTRY_SLOT(0, 16) FENTRY_SLOT(0, 17) FENTRY_SLOT(0, 18) FENTRY_SLOT(0, 19)
FENTRY_SLOT(0, 20) FENTRY_SLOT(0, 21) FENTRY_SLOT(0, 22) FENTRY_SLOT(0, 23)
FENTRY_SLOT(0, 24) FENTRY_SLOT(0, 25) FENTRY_SLOT(0, 26) FENTRY_SLOT(0, 27)
FENTRY_SLOT(0, 28) FENTRY_SLOT(0, 29) FENTRY_SLOT(0, 30) FENTRY_SLOT(0, 31)
FENTRY_SLOT(0, 32) FENTRY_SLOT(0, 33) FENTRY_SLOT(0, 34) FENTRY_SLOT(0, 35)
FENTRY_SLOT(0, 36) FENTRY_SLOT(0, 37) FENTRY_SLOT(0, 38) FENTRY_SLOT(0, 39)
FENTRY_SLOT(0, 40) FENTRY_SLOT(0, 41) FENTRY_SLOT(0, 42) FENTRY_SLOT(0, 43)
FENTRY_SLOT(0, 44) FENTRY_SLOT(0, 45) FENTRY_SLOT(0, 46) FENTRY_SLOT(0, 47)
FENTRY_SLOT(0, 48) FENTRY_SLOT(0, 49) FENTRY_SLOT(0, 50) FENTRY_SLOT(0, 51)
FENTRY_SLOT(0, 52) FENTRY_SLOT(0, 53) FENTRY_SLOT(0, 54) FENTRY_SLOT(0, 55)
FENTRY_SLOT(0, 56) FENTRY_SLOT(0, 57) FENTRY_SLOT(0, 58) FENTRY_SLOT(0, 59)
FENTRY_SLOT(0, 60) FENTRY_SLOT(0, 61) FENTRY_SLOT(0, 62) FENTRY_SLOT(0, 63)
FENTRY_SLOT(1, 0) FENTRY_SLOT(1, 1) FENTRY_SLOT(1, 2) FENTRY_SLOT(1, 3)
FENTRY_SLOT(1, 4) FENTRY_SLOT(1, 5) FENTRY_SLOT(1, 6) FENTRY_SLOT(1, 7)
FENTRY_SLOT(1, 8) FENTRY_SLOT(1, 9) FENTRY_SLOT(1, 10) FENTRY_SLOT(1, 11)
FENTRY_SLOT(1, 12) FENTRY_SLOT(1, 13) FENTRY_SLOT(1, 14) FENTRY_SLOT(1, 15)
FENTRY_SLOT(1, 16) FENTRY_SLOT(1, 17) FENTRY_SLOT(1, 18) FENTRY_SLOT(1, 19)
FENTRY_SLOT(1, 20) FENTRY_SLOT(1, 21) FENTRY_SLOT(1, 22) FENTRY_SLOT(1, 23)
FENTRY_SLOT(1, 24) FENTRY_SLOT(1, 25) FENTRY_SLOT(1, 26) FENTRY_SLOT(1, 27)
FENTRY_SLOT(1, 28) FENTRY_SLOT(1, 29) FENTRY_SLOT(1, 30) FENTRY_SLOT(1, 31)
FENTRY_SLOT(1, 32) FENTRY_SLOT(1, 33) FENTRY_SLOT(1, 34) FENTRY_SLOT(1, 35)
FENTRY_SLOT(1, 36) FENTRY_SLOT(1, 37) FENTRY_SLOT(1, 38) FENTRY_SLOT(1, 39)
FENTRY_SLOT(1, 40) FENTRY_SLOT(1, 41) FENTRY_SLOT(1, 42) FENTRY_SLOT(1, 43)
FENTRY_SLOT(1, 44) FENTRY_SLOT(1, 45) FENTRY_SLOT(1, 46) FENTRY_SLOT(1, 47)
FENTRY_SLOT(2, 0) FENTRY_SLOT(2, 1) FENTRY_SLOT(2, 2) FENTRY_SLOT(2, 3)
FENTRY_SLOT(2, 4) FENTRY_SLOT(2, 5) FENTRY_SLOT(2, 6) FENTRY_SLOT(2, 7)
FENTRY_SLOT(2, 8) FENTRY_SLOT(2, 9) FENTRY_SLOT(2, 10) FENTRY_SLOT(2, 11)
FENTRY_SLOT(2, 12) FENTRY_SLOT(2, 13) FENTRY_SLOT(2, 14) FENTRY_SLOT(2, 15)
FENTRY_SLOT(2, 16) FENTRY_SLOT(2, 17) FENTRY_SLOT(2, 18) FENTRY_SLOT(2, 19)
FENTRY_SLOT(2, 20) FENTRY_SLOT(2, 21) FENTRY_SLOT(2, 22) FENTRY_SLOT(2, 23)
FENTRY_SLOT(2, 24) FENTRY_SLOT(2, 25) FENTRY_SLOT(2, 26) FENTRY_SLOT(2, 27)
FENTRY_SLOT(2, 28) FENTRY_SLOT(2, 29) FENTRY_SLOT(2, 30) FENTRY_SLOT(2, 31)
FENTRY_SLOT(3, 0) FENTRY_SLOT(3, 1) FENTRY_SLOT(3, 2) FENTRY_SLOT(3, 3)
FENTRY_SLOT(3, 4) FENTRY_SLOT(3, 5) FENTRY_SLOT(3, 6) FENTRY_SLOT(3, 7)
FENTRY_SLOT(4, 0) FENTRY_SLOT(4, 1) FENTRY_SLOT(4, 2) FENTRY_SLOT(4, 3)
FENTRY_SLOT(4, 4) FENTRY_SLOT(4, 5) FENTRY_SLOT(4, 6) FENTRY_SLOT(4, 7)
FEXIT_SLOT(0) FEXIT_SLOT(1) FEXIT_SLOT(2) FEXIT_SLOT(3)
FEXIT_SLOT(4) FEXIT_SLOT(5) FEXIT_SLOT(6) FEXIT_SLOT(7)
FEXIT_SLOT(8) FEXIT_SLOT(9) FEXIT_SLOT(10) FEXIT_SLOT(11)
FEXIT_SLOT(12) FEXIT_SLOT(13) FEXIT_SLOT(14) FEXIT_SLOT(15)
FEXIT_SLOT(16) FEXIT_SLOT(17) FEXIT_SLOT(18) FEXIT_SLOT(19)
FEXIT_SLOT(20) FEXIT_SLOT(21) FEXIT_SLOT(22) FEXIT_SLOT(23)
FEXIT_SLOT(24) FEXIT_SLOT(25) FEXIT_SLOT(26) FEXIT_SLOT(27)
FEXIT_SLOT(28) FEXIT_SLOT(29) FEXIT_SLOT(30) FEXIT_SLOT(31)
FEXIT_SLOT(32) FEXIT_SLOT(33) FEXIT_SLOT(34) FEXIT_SLOT(35)
FEXIT_SLOT(36) FEXIT_SLOT(37) FEXIT_SLOT(38) FEXIT_SLOT(39)
FEXIT_SLOT(40) FEXIT_SLOT(41) FEXIT_SLOT(42) FEXIT_SLOT(43)
FEXIT_SLOT(44) FEXIT_SLOT(45) FEXIT_SLOT(46) FEXIT_SLOT(47)
FEXIT_SLOT(48) FEXIT_SLOT(49) FEXIT_SLOT(50) FEXIT_SLOT(51)
FEXIT_SLOT(52) FEXIT_SLOT(53) FEXIT_SLOT(54) FEXIT_SLOT(55)
FEXIT_SLOT(56) FEXIT_SLOT(57) FEXIT_SLOT(58) FEXIT_SLOT(59)
FEXIT_SLOT(60) FEXIT_SLOT(61) FEXIT_SLOT(62) FEXIT_SLOT(63)
FEXIT_SLOT(64) FEXIT_SLOT(65) FEXIT_SLOT(66) FEXIT_SLOT(67)
FEXIT_SLOT(68) FEXIT_SLOT(69) FEXIT_SLOT(70) FEXIT_SLOT(71)
FEXIT_SLOT(72) FEXIT_SLOT(73) FEXIT_SLOT(74) FEXIT_SLOT(75)
FEXIT_SLOT(76) FEXIT_SLOT(77) FEXIT_SLOT(78) FEXIT_SLOT(79)
FEXIT_SLOT(80) FEXIT_SLOT(81) FEXIT_SLOT(82) FEXIT_SLOT(83)
FEXIT_SLOT(84) FEXIT_SLOT(85) FEXIT_SLOT(86) FEXIT_SLOT(87)
FEXIT_SLOT(88) FEXIT_SLOT(89) FEXIT_SLOT(90) FEXIT_SLOT(91)
FEXIT_SLOT(92) FEXIT_SLOT(93) FEXIT_SLOT(94) FEXIT_SLOT(95)
FEXIT_SLOT(96) FEXIT_SLOT(97) FEXIT_SLOT(98) FEXIT_SLOT(99)
FEXIT_SLOT(100) FEXIT_SLOT(101) FEXIT_SLOT(102) FEXIT_SLOT(103)
FEXIT_SLOT(104) FEXIT_SLOT(105) FEXIT_SLOT(106) FEXIT_SLOT(107)
FEXIT_SLOT(108) FEXIT_SLOT(109) FEXIT_SLOT(110) FEXIT_SLOT(111)
FEXIT_SLOT(112) FEXIT_SLOT(113) FEXIT_SLOT(114) FEXIT_SLOT(115)
FEXIT_SLOT(116) FEXIT_SLOT(117) FEXIT_SLOT(118) FEXIT_SLOT(119)
FEXIT_SLOT(120) FEXIT_SLOT(121) FEXIT_SLOT(122) FEXIT_SLOT(123)
FEXIT_SLOT(124) FEXIT_SLOT(125) FEXIT_SLOT(126) FEXIT_SLOT(127)
KRET_SLOT(0) KRET_SLOT(1) KRET_SLOT(2) KRET_SLOT(3)
KRET_SLOT(4) KRET_SLOT(5) KRET_SLOT(6) KRET_SLOT(7)
KRET_SLOT(8) KRET_SLOT(9) KRET_SLOT(10) KRET_SLOT(11)
KRET_SLOT(12) KRET_SLOT(13) KRET_SLOT(14) KRET_SLOT(15)
KRET_SLOT(16) KRET_SLOT(17) KRET_SLOT(18) KRET_SLOT(19)
KRET_SLOT(20) KRET_SLOT(21) KRET_SLOT(22) KRET_SLOT(23)
KRET_SLOT(24) KRET_SLOT(25) KRET_SLOT(26) KRET_SLOT(27)
KRET_SLOT(28) KRET_SLOT(29) KRET_SLOT(30) KRET_SLOT(31)
KRET_SLOT(32) KRET_SLOT(33) KRET_SLOT(34) KRET_SLOT(35)
KRET_SLOT(36) KRET_SLOT(37) KRET_SLOT(38) KRET_SLOT(39)
KRET_SLOT(40) KRET_SLOT(41) KRET_SLOT(42) KRET_SLOT(43)
KRET_SLOT(44) KRET_SLOT(45) KRET_SLOT(46) KRET_SLOT(47)
KRET_SLOT(48) KRET_SLOT(49) KRET_SLOT(50) KRET_SLOT(51)
KRET_SLOT(52) KRET_SLOT(53) KRET_SLOT(54) KRET_SLOT(55)
KRET_SLOT(56) KRET_SLOT(57) KRET_SLOT(58) KRET_SLOT(59)
KRET_SLOT(60) KRET_SLOT(61) KRET_SLOT(62) KRET_SLOT(63)
KRET_SLOT(64) KRET_SLOT(65) KRET_SLOT(66) KRET_SLOT(67)
KRET_SLOT(68) KRET_SLOT(69) KRET_SLOT(70) KRET_SLOT(71)
KRET_SLOT(72) KRET_SLOT(73) KRET_SLOT(74) KRET_SLOT(75)
KRET_SLOT(76) KRET_SLOT(77) KRET_SLOT(78) KRET_SLOT(79)
KRET_SLOT(80) KRET_SLOT(81) KRET_SLOT(82) KRET_SLOT(83)
KRET_SLOT(84) KRET_SLOT(85) KRET_SLOT(86) KRET_SLOT(87)
KRET_SLOT(88) KRET_SLOT(89) KRET_SLOT(90) KRET_SLOT(91)
KRET_SLOT(92) KRET_SLOT(93) KRET_SLOT(94) KRET_SLOT(95)
KRET_SLOT(96) KRET_SLOT(97) KRET_SLOT(98) KRET_SLOT(99)
KRET_SLOT(100) KRET_SLOT(101) KRET_SLOT(102) KRET_SLOT(103)
KRET_SLOT(104) KRET_SLOT(105) KRET_SLOT(106) KRET_SLOT(107)
KRET_SLOT(108) KRET_SLOT(109) KRET_SLOT(110) KRET_SLOT(111)
KRET_SLOT(112) KRET_SLOT(113) KRET_SLOT(114) KRET_SLOT(115)
KRET_SLOT(116) KRET_SLOT(117) KRET_SLOT(118) KRET_SLOT(119)
KRET_SLOT(120) KRET_SLOT(121) KRET_SLOT(122) KRET_SLOT(123)
KRET_SLOT(124) KRET_SLOT(125) KRET_SLOT(126) KRET_SLOT(127)
