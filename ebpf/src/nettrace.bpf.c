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
#define IPPROTO_IPIP 4
#define IPPROTO_IPV6 41
#define ETH_P_TEB 0x6558 /* Ethernet inside (Geneve's protocol type) */
#define VXLAN_PORT 4789
#define VXLAN_LINUX_PORT 8472
#define GENEVE_PORT 6081
#define AF_INET 2
#define AF_INET6 10
#define NO_OFFSET 0xffff

char LICENSE[] SEC("license") = "GPL";

/* The filter; user space overrides it before loading (aya set_global). */
const volatile struct nt_filter nt_cfg = {};

/* --rate-limit: events per second on the whole machine; 0 = no limit. */
const volatile __u32 nt_rate = 0;

/*
 * The filter, read through a pointer the compiler cannot see through (an
 * empty asm): its loads are plain ones, so the same field read twice on a
 * path is loaded once, where naming the volatile nt_cfg loads it at every
 * mention. The verifier still knows each value (the pointer is the frozen
 * map's), and keeps only the paths the filter allows.
 */
static __always_inline const struct nt_filter *nt_cfg_ptr(void)
{
	const struct nt_filter *p = (const struct nt_filter *)&nt_cfg;

	asm("" : "+r"(p));
	return p;
}

#define CFG (*nt_cfg_ptr())

#define NSEC_PER_SEC 1000000000ULL

/*
 * The rate limit's window: (second of the monotonic clock << 32) | events
 * admitted in that second, shared by every CPU and updated atomically.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nt_rate_window SEC(".maps");

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


static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&nt_stats, &idx);

	if (v)
		*v += 1;
}

/*
 * Admits at most nt_rate events per second of the monotonic clock, whatever
 * CPUs they come from: the first event of a new second opens its window
 * (compare-and-swap), the others count themselves in (fetch-and-add).
 * Returns 0, and counts the event as suppressed, past the limit.
 */
static __always_inline int rate_ok(void)
{
	__u32 zero = 0;
	__u64 *w, sec, cur;
	int i;

	if (!nt_rate)
		return 1;
	w = bpf_map_lookup_elem(&nt_rate_window, &zero);
	if (!w)
		return 1;
	sec = (bpf_ktime_get_ns() / NSEC_PER_SEC) & 0xffffffff;
	for (i = 0; i < 4; i++) {
		cur = *(volatile __u64 *)w;
		if ((cur >> 32) == sec)
			break;
		if (__sync_val_compare_and_swap(w, cur, (sec << 32) | 1) == cur)
			return 1;
	}
	cur = __sync_fetch_and_add(w, 1);
	if ((cur >> 32) == sec && (cur & 0xffffffff) < nt_rate)
		return 1;
	stat_inc(NT_STAT_RATE_LIMITED);
	return 0;
}

/* Arguments of the hook that fired, as the body needs them. */
struct nt_args {
	__u64 skb;
	__u64 sk;
	__u64 dev;
	__u64 location;
	__u64 reason;
};

/*
 * The kernel functions the loader provided (NT_KF_*, see nt_abi.h), frozen
 * in .rodata: the verifier keeps only the paths they allow.
 */
const volatile __u32 nt_kfuncs = 0;

/*
 * bpf_rdonly_cast(obj, btf_id) (Linux 6.2+): obj as a read-only pointer to
 * the kernel type btf_id, read with plain loads that the JIT makes
 * fault-safe. Called by a marker number that the loader rewrites into the
 * kfunc call (aya 0.14 cannot link kfuncs). The kernel turns the call itself
 * into a register move, so the cast costs nothing at run time.
 */
static void *(*const nt_rdonly_cast)(const void *obj, __u32 btf_id) = (void *)NT_MARK_RDONLY_CAST;

/* nt_kfuncs, read the way nt_cfg_ptr() reads the filter. */
static __always_inline __u32 nt_kfuncs_now(void)
{
	const __u32 *p = (const __u32 *)&nt_kfuncs;

	asm("" : "+r"(p));
	return *p;
}

#define NT_CAST() (nt_kfuncs_now() & NT_KF_RDONLY_CAST)

/*
 * A read-only view of the kernel memory at p as `type`: where the kernel has
 * bpf_rdonly_cast, p itself, typed; else a copy in *buf (NULL when p can't
 * be read).
 */
#define NT_VIEW(type, p, buf)                                                    \
	(NT_CAST() ? (const type *)nt_rdonly_cast((p), bpf_core_type_id_kernel(type)) \
		   : (bpf_probe_read_kernel((buf), sizeof(type), (p)) ? (const type *)0 \
								       : (const type *)(buf)))

/*
 * Reads field f of pointer p. Typed pointers (tp_btf and fentry arguments,
 * and any pointer after bpf_rdonly_cast) are read with direct loads; the
 * others copied with bpf_probe_read_kernel. `typed` is a constant.
 */
#define NT_RD(typed, p, f) ((typed) ? (p)->f : BPF_CORE_READ((p), f))

/* The skb fields that locate its headers. */
/*
 * Whether p can be a kernel object: skb->dev shares its storage with
 * dev_scratch (UDP keeps lengths and flags there once the skb is queued to a
 * socket), which is no pointer; a direct load from such a value faults, and a
 * fault costs a microsecond. Kernel addresses have the top bit set.
 */
static __always_inline int kernel_ptr(const void *p)
{
	return (long)p < 0;
}

struct nt_meta {
	unsigned char *head;
	unsigned char *data; /* copied ones only: see meta_data */
	struct sk_buff *typed_skb; /* the skb, when typed; else 0 */
	__u16 proto; /* host order */
	__u16 nh;
	__u16 mac;
	__u16 no_l2; /* the network header equals the MAC header on a device without one */
};

/*
 * A network header at the MAC header is ambiguous: a device without a link
 * layer header (IP-in-IP, WireGuard, tun) puts the IP header there; an
 * Ethernet frame whose headers were just reset starts with its Ethernet
 * header. The device's hard_header_len tells (read only in that case).
 */
static __always_inline __u16 no_l2_header(struct sk_buff *skb, const struct nt_meta *m,
					  const int typed)
{
	struct net_device *dev;

	if (m->nh != m->mac || m->nh == NO_OFFSET)
		return 0;
	dev = NT_RD(typed, skb, dev);
	if (!dev || !kernel_ptr(dev))
		return 0;
	return NT_RD(typed, dev, hard_header_len) == 0;
}

/*
 * Reads the header-locating fields of an untyped skb. They sit together in
 * every kernel since 4.x (protocol, the header offsets, tail, end, head,
 * data), so one 48-byte copy from an 8-aligned offset usually gets them all;
 * otherwise they are copied one by one. The offsets are CO-RE relocated
 * constants, so the verifier keeps only one of the two paths.
 */
static __always_inline int read_meta_raw(struct sk_buff *skb, struct nt_meta *m)
{
	__u64 buf[6];
	__u32 o_p = bpf_core_field_offset(skb->protocol);
	__u32 o_nh = bpf_core_field_offset(skb->network_header);
	__u32 o_mac = bpf_core_field_offset(skb->mac_header);
	__u32 o_head = bpf_core_field_offset(skb->head);
	__u32 o_data = bpf_core_field_offset(skb->data);
	__u32 base = o_p & ~7U;

	if (o_nh > base && o_mac > base && o_head > base && o_data > base &&
	    o_data + 8 - base <= sizeof(buf) && !(o_head & 7) && !(o_data & 7) &&
	    (o_p & 7) <= 6 && (o_nh & 7) <= 6 && (o_mac & 7) <= 6) {
		if (bpf_probe_read_kernel(buf, sizeof(buf), (char *)skb + base))
			return -1;
		/* Fields are taken out of whole words: the verifier refuses
		 * byte arithmetic that clang may turn into a pointer OR. */
		m->proto = bpf_ntohs((__u16)(buf[(o_p - base) / 8] >> ((o_p & 7) * 8)));
		m->nh = (__u16)(buf[(o_nh - base) / 8] >> ((o_nh & 7) * 8));
		m->mac = (__u16)(buf[(o_mac - base) / 8] >> ((o_mac & 7) * 8));
		m->head = (unsigned char *)buf[(o_head - base) / 8];
		m->data = (unsigned char *)buf[(o_data - base) / 8];
		m->typed_skb = 0;
		m->no_l2 = no_l2_header(skb, m, 0);
		return 0;
	}
	m->proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	m->nh = BPF_CORE_READ(skb, network_header);
	m->mac = BPF_CORE_READ(skb, mac_header);
	m->head = BPF_CORE_READ(skb, head);
	m->data = BPF_CORE_READ(skb, data);
	m->typed_skb = 0;
	m->no_l2 = no_l2_header(skb, m, 0);
	return 0;
}

static __always_inline int read_meta(struct sk_buff *skb, struct nt_meta *m, const int typed)
{
	if (!typed)
		return read_meta_raw(skb, m);
	m->proto = bpf_ntohs(skb->protocol);
	m->nh = skb->network_header;
	m->mac = skb->mac_header;
	m->head = skb->head;
	m->data = 0;
	m->typed_skb = skb;
	m->no_l2 = no_l2_header(skb, m, 1);
	return 0;
}

/*
 * skb->data. A typed skb's is loaded only where it is used: the network or
 * MAC header locates almost every packet, and a rejected packet then costs
 * one load less. (A copy holds it already.)
 */
static __always_inline unsigned char *meta_data(const struct nt_meta *m)
{
	return m->typed_skb ? m->typed_skb->data : m->data;
}

/* Verdicts of the packet parser. */
#define NT_REJECT 0 /* the filter can't match: stop here */
#define NT_PARSED 1 /* headers read into the packet */
#define NT_NOHDR 2  /* no readable headers (try the socket) */
#define NT_MATCHED 3 /* a tunnel: the outer or the inner packet matched the filter */

/* Where a tunnel's inner packet is, as the outer packet's parser found it. */
struct nt_inner {
	unsigned char *l3; /* its L3 header; 0: no tunnel */
	__u32 vni;
	__u16 proto;       /* its ethertype */
	__u8 kind;         /* NT_TUN_* */
};

static __always_inline int tunnel_port(__u16 dport)
{
	return dport == VXLAN_PORT || dport == VXLAN_LINUX_PORT || dport == GENEVE_PORT;
}

static __always_inline int has_port_filter(void)
{
	return CFG.flags & NT_FL_PORTS;
}

/*
 * Whether a packet of ethertype proto can pass the packet filter at all,
 * decided before its L3 header is read (mirrors packet_matches).
 */
static __always_inline int l3_may_match(__u16 proto)
{
	__u32 fl = CFG.flags;

	if (CFG.l3_proto && CFG.l3_proto != proto)
		return 0;
	if ((CFG.l4_proto || has_port_filter()) && proto != ETH_P_IP && proto != ETH_P_IPV6)
		return 0;
	if (fl & (NT_FL_SADDR | NT_FL_DADDR | NT_FL_ADDR)) {
		if (fl & NT_FL_V6)
			return proto == ETH_P_IPV6;
		return proto == ETH_P_IP || proto == ETH_P_ARP;
	}
	return 1;
}

static __always_inline int addr_eq(const __u8 *want, const __u8 *have, int v6)
{
	if (!v6)
		return *(const __u32 *)want == *(const __u32 *)have;
	return *(const __u64 *)want == *(const __u64 *)have &&
	       *(const __u64 *)(want + 8) == *(const __u64 *)(have + 8);
}

/* The address part of the filter, on parsed addresses. */
static __always_inline int addrs_match(const struct nt_pkt *p)
{
	__u32 fl = CFG.flags;
	int v6 = fl & NT_FL_V6;

	if ((fl & NT_FL_SADDR) && !addr_eq(CFG.saddr, p->saddr, v6))
		return 0;
	if ((fl & NT_FL_DADDR) && !addr_eq(CFG.daddr, p->daddr, v6))
		return 0;
	if ((fl & NT_FL_ADDR) && !addr_eq(CFG.addr, p->saddr, v6) &&
	    !addr_eq(CFG.addr, p->daddr, v6))
		return 0;
	return 1;
}

/* The L4 protocol part of the filter, once the L3 header names it. */
static __always_inline int l4_may_match(__u8 l4)
{
	if (CFG.l4_proto && CFG.l4_proto != l4)
		return 0;
	if (has_port_filter() && l4 != IPPROTO_TCP && l4 != IPPROTO_UDP)
		return 0;
	return 1;
}

/* The port part of the filter, on ports in host order. */
static __always_inline int ports_ok(__u16 sport, __u16 dport)
{
	if (CFG.sport && CFG.sport != sport)
		return 0;
	if (CFG.dport && CFG.dport != dport)
		return 0;
	if (CFG.port && CFG.port != sport && CFG.port != dport)
		return 0;
	return 1;
}

static __always_inline int ports_match(const struct nt_pkt *p)
{
	return ports_ok(p->sport, p->dport);
}

/* The whole packet filter, on a parsed packet. */
static __always_inline int packet_matches(const struct nt_pkt *p, __u32 flags)
{
	if (!l3_may_match(p->l3_proto))
		return 0;
	if (p->l3_proto == ETH_P_ARP)
		return addrs_match(p);
	if ((CFG.l4_proto || has_port_filter()) && !l4_may_match(p->l4_proto))
		return 0;
	if (!addrs_match(p))
		return 0;
	if (has_port_filter() && ((flags & NT_F_L4_BAD) || !ports_match(p)))
		return 0;
	return 1;
}

/*
 * Decodes the VXLAN or Geneve header after the UDP header at l4 into *in.
 * A header that is not one (VXLAN without its I flag, Geneve carrying
 * something else than Ethernet or IP) leaves *in alone: plain UDP.
 */
static __always_inline void parse_udp_tunnel(unsigned char *l4, __u16 dport, struct nt_inner *in)
{
	union {
		struct udphdr___tun tun;
		struct ethhdr___nt eth;
	} buf;
	const struct udphdr___tun *th = NT_VIEW(struct udphdr___tun, l4 + 8, &buf);
	const struct ethhdr___nt *eh;
	unsigned char *inner = l4 + 16;
	__u16 w0, w1, proto = ETH_P_TEB;
	__u32 vni;
	__u8 kind = NT_TUN_VXLAN;

	if (!th)
		return;
	w0 = bpf_ntohs(th->w0);
	w1 = bpf_ntohs(th->w1);
	vni = ((__u32)bpf_ntohs(th->w2) << 8) | (bpf_ntohs(th->w3) >> 8);
	if (dport == GENEVE_PORT) {
		/* version (2 bits) and option length (6 bits, in 4-byte words),
		 * flags, protocol type */
		if (w0 >> 14)
			return;
		kind = NT_TUN_GENEVE;
		inner += ((w0 >> 8) & 0x3f) * 4;
		proto = w1;
		if (proto != ETH_P_TEB && proto != ETH_P_IP && proto != ETH_P_IPV6)
			return;
	} else if (!(w0 & 0x0800)) {
		/* VXLAN: the I flag says the VNI is valid */
		return;
	}
	if (proto == ETH_P_TEB) {
		eh = NT_VIEW(struct ethhdr___nt, inner, &buf);
		if (!eh)
			return;
		proto = bpf_ntohs(eh->h_proto);
		inner += ETH_HLEN;
	}
	in->l3 = inner;
	in->proto = proto;
	in->kind = kind;
	in->vni = vni;
}

/*
 * Reads the L4 header at l4 into p. With check, stops (NT_REJECT) as soon as
 * the ports show that the filter can't match. With in (the outer packet),
 * UDP to a tunnel port is decoded into *in instead, and never rejected here:
 * the inner packet may match.
 */
static __always_inline int parse_l4(struct nt_pkt *p, __u32 *flags, unsigned char *l4, int check,
				    struct nt_inner *in)
{
	union {
		struct tcphdr___nt tcp;
		struct udphdr___nt udp;
		struct icmphdr___nt icmp;
	} buf;

	switch (p->l4_proto) {
	case IPPROTO_TCP: {
		const struct tcphdr___nt *th = NT_VIEW(struct tcphdr___nt, l4, &buf);

		if (!th)
			goto bad;
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		if (check && has_port_filter() && !ports_match(p))
			return NT_REJECT;
		p->tcp_flags = th->flags;
		p->seq = bpf_ntohl(th->seq);
		p->ack = bpf_ntohl(th->ack_seq);
		return NT_PARSED;
	}
	case IPPROTO_UDP: {
		const struct udphdr___nt *uh = NT_VIEW(struct udphdr___nt, l4, &buf);

		if (!uh)
			goto bad;
		p->sport = bpf_ntohs(uh->source);
		p->dport = bpf_ntohs(uh->dest);
		if (in && tunnel_port(p->dport)) {
			parse_udp_tunnel(l4, p->dport, in);
			if (in->l3)
				return NT_PARSED;
		}
		if (check && has_port_filter() && !ports_match(p))
			return NT_REJECT;
		return NT_PARSED;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		const struct icmphdr___nt *ih = NT_VIEW(struct icmphdr___nt, l4, &buf);

		if (!ih)
			goto bad;
		p->icmp_type = ih->type;
		p->icmp_code = ih->code;
		p->icmp_id = bpf_ntohs(ih->id);
		p->icmp_seq = bpf_ntohs(ih->sequence);
		return NT_PARSED;
	}
	default:
		return NT_PARSED;
	}
bad:
	*flags |= NT_F_L4_BAD;
	return (check && has_port_filter()) ? NT_REJECT : NT_PARSED;
}

/*
 * Where the L3 header starts. The network header offset is only trustworthy
 * once set past the MAC header; on early receive paths it is still 0 and the
 * IP header sits right after the Ethernet header.
 */
static __always_inline unsigned char *l3_of(const struct nt_meta *m)
{
	if (m->nh != NO_OFFSET && m->nh != 0 && (m->mac == NO_OFFSET || m->nh > m->mac || m->no_l2))
		return m->head + m->nh;
	if (m->mac != NO_OFFSET)
		return m->head + m->mac + ETH_HLEN;
	return meta_data(m);
}

/* An IPv4 address pair against the address filter, before p is filled. */
static __always_inline int addrs4_match(__be32 sa, __be32 da)
{
	__u32 fl = CFG.flags;

	if ((fl & NT_FL_SADDR) && *(const __u32 *)CFG.saddr != sa)
		return 0;
	if ((fl & NT_FL_DADDR) && *(const __u32 *)CFG.daddr != da)
		return 0;
	if ((fl & NT_FL_ADDR) && *(const __u32 *)CFG.addr != sa &&
	    *(const __u32 *)CFG.addr != da)
		return 0;
	return 1;
}

/* Whether IP protocol l4 may carry a tunnel the parser decodes. */
static __always_inline int tunnel_l4(__u8 l4)
{
	return l4 == IPPROTO_UDP || l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6;
}

/*
 * Reads the L3 header at l3 (ethertype proto) and what follows into p,
 * layer by layer; with check, each layer is filtered as soon as it is read
 * and NT_REJECT returned at the first that can't match, before the next is
 * read. p is zeroed and filled only once the first checks passed (unless
 * NT_REJECT, p is then complete). With in (an outer packet), a tunnel is
 * decoded into *in, and a packet that may be one is not rejected on its
 * outer headers alone (the caller judges outer and inner).
 */
static __always_inline int parse_l3(struct nt_pkt *p, __u32 *flags, __u16 proto,
				    unsigned char *l3, int check, struct nt_inner *in)
{
	union {
		struct iphdr___nt v4;
		struct ipv6hdr___nt v6;
		__u8 arp[28];
	} buf;

	if (proto != ETH_P_IP && proto != ETH_P_IPV6) {
		if (check && !l3_may_match(proto))
			return NT_REJECT;
		__builtin_memset(p, 0, sizeof(*p));
		p->l3_proto = proto;
		if (proto == ETH_P_ARP) {
			/* Ethernet/IPv4 ARP: op at 6, sender IP at 14, target IP at 24. */
			if (bpf_probe_read_kernel(buf.arp, sizeof(buf.arp), l3))
				return NT_PARSED;
			p->arp_op = ((__u16)buf.arp[6] << 8) | buf.arp[7];
			__builtin_memcpy(p->saddr, &buf.arp[14], 4);
			__builtin_memcpy(p->daddr, &buf.arp[24], 4);
			if (check && !addrs_match(p))
				return NT_REJECT;
		}
		return NT_PARSED;
	}
	if (check && !in && !l3_may_match(proto))
		return NT_REJECT;

	if (proto == ETH_P_IP) {
		const struct iphdr___nt *ih = NT_VIEW(struct iphdr___nt, l3, &buf.v4);
		__be32 sa, da;
		__u8 vihl, l4;
		int hold;

		if (!ih || ((vihl = ih->ver_ihl) >> 4) != 4) {
			__builtin_memset(p, 0, sizeof(*p));
			return NT_NOHDR;
		}
		l4 = ih->protocol;
		sa = ih->saddr;
		da = ih->daddr;
		hold = in && tunnel_l4(l4);
		if (check && !hold &&
		    (!l3_may_match(proto) || !l4_may_match(l4) ||
		     (!(CFG.flags & NT_FL_V6) && !addrs4_match(sa, da))))
			return NT_REJECT;
		__builtin_memset(p, 0, sizeof(*p));
		p->l3_proto = proto;
		p->l4_proto = l4;
		__builtin_memcpy(p->saddr, &sa, 4);
		p->ip_id = bpf_ntohs(ih->id);
		__builtin_memcpy(p->daddr, &da, 4);
		if (bpf_ntohs(ih->frag_off) & 0x1fff) {
			*flags |= NT_F_L4_BAD;
			return (check && !hold && has_port_filter()) ? NT_REJECT : NT_PARSED;
		}
		if (in && (l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6)) {
			in->l3 = l3 + (vihl & 0xf) * 4;
			in->proto = l4 == IPPROTO_IPIP ? ETH_P_IP : ETH_P_IPV6;
			in->kind = l4 == IPPROTO_IPIP ? NT_TUN_IPIP : NT_TUN_IP6IP;
			in->vni = 0;
			return NT_PARSED;
		}
		return parse_l4(p, flags, l3 + (vihl & 0xf) * 4, check && !hold, in);
	}

	{
		const struct ipv6hdr___nt *h6 = NT_VIEW(struct ipv6hdr___nt, l3, &buf.v6);
		__be32 w;
		__u8 l4;
		int i, hold;

		if (!h6 || (h6->ver_prio >> 4) != 6) {
			__builtin_memset(p, 0, sizeof(*p));
			return NT_NOHDR;
		}
		l4 = h6->nexthdr;
		hold = in && tunnel_l4(l4);
		if (check && !hold && (!l3_may_match(proto) || !l4_may_match(l4)))
			return NT_REJECT;
		__builtin_memset(p, 0, sizeof(*p));
		p->l3_proto = proto;
		p->l4_proto = l4;
		for (i = 0; i < 4; i++) {
			w = h6->saddr[i];
			__builtin_memcpy(&p->saddr[4 * i], &w, 4);
			w = h6->daddr[i];
			__builtin_memcpy(&p->daddr[4 * i], &w, 4);
		}
		if (check && !hold && !addrs_match(p))
			return NT_REJECT;
		if (in && (l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6)) {
			in->l3 = l3 + 40;
			in->proto = l4 == IPPROTO_IPIP ? ETH_P_IP : ETH_P_IPV6;
			in->kind = l4 == IPPROTO_IPIP ? NT_TUN_IPIP : NT_TUN_IP6IP;
			in->vni = 0;
			return NT_PARSED;
		}
		return parse_l4(p, flags, l3 + 40, check && !hold, in);
	}
}

/*
 * Reads the packet's headers into p, and an encapsulated packet's outer
 * headers into *tun (then p is the inner packet and NT_F_TUNNEL is set).
 * With check: NT_REJECT as soon as the filter can't match; for a tunnel,
 * NT_MATCHED or NT_REJECT, matched when the outer or the inner packet
 * matches. Otherwise the caller applies the filter to p.
 */
static __always_inline int parse_pkt(struct nt_pkt *p, __u32 *flags, const struct nt_meta *m,
				     struct nt_tunnel *tun, int check)
{
	struct nt_inner in;
	__u16 proto = m->proto;
	unsigned char *l3 = l3_of(m);
	__u32 iflags = 0;
	int v, outer_ok;

	if (!proto) {
		/* Local output before skb->protocol is set: trust the version. */
		struct iphdr___nt vbuf;
		const struct iphdr___nt *vh = NT_VIEW(struct iphdr___nt, l3, &vbuf);
		__u8 ver = vh ? vh->ver_ihl >> 4 : 0;

		if (ver == 4) {
			proto = ETH_P_IP;
		} else if (ver == 6) {
			proto = ETH_P_IPV6;
		} else {
			__builtin_memset(p, 0, sizeof(*p));
			return NT_NOHDR;
		}
	}
	__builtin_memset(&in, 0, sizeof(in));
	v = parse_l3(p, flags, proto, l3, check, &in);
	if (v == NT_REJECT || !in.l3)
		return v;

	/* Encapsulated: p is the outer packet. */
	outer_ok = check && packet_matches(p, *flags);
	__builtin_memcpy(tun->saddr, p->saddr, sizeof(tun->saddr));
	__builtin_memcpy(tun->daddr, p->daddr, sizeof(tun->daddr));
	tun->vni = in.vni;
	tun->l3_proto = p->l3_proto;
	tun->sport = p->sport;
	tun->dport = p->dport;
	tun->kind = in.kind;
	__builtin_memset(tun->pad, 0, sizeof(tun->pad));

	v = parse_l3(p, &iflags, in.proto, in.l3, 0, (struct nt_inner *)0);
	*flags = (*flags & ~NT_F_L4_BAD) | iflags | NT_F_TUNNEL;
	if (!check)
		return NT_PARSED;
	if (outer_ok || (v != NT_NOHDR && packet_matches(p, iflags)))
		return NT_MATCHED;
	return NT_REJECT;
}

/* Fills the packet from the socket, for skbs whose headers are not built yet. */
static __always_inline void parse_sock(struct nt_pkt *p, __u32 *flags, struct sock *sk)
{
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET) {
		__be32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		p->l3_proto = ETH_P_IP;
		__builtin_memcpy(p->saddr, &s, 4);
		__builtin_memcpy(p->daddr, &d, 4);
	} else if (family == AF_INET6) {
		p->l3_proto = ETH_P_IPV6;
		BPF_CORE_READ_INTO(&p->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&p->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		return;
	}
	p->l4_proto = IPPROTO_TCP;
	p->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	p->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	*flags |= NT_F_FROM_SK;
}

/* Which pointers a body may read with direct loads (compile-time flags). */
#define NT_TYPED_SKB 1 /* the skb argument is BTF-typed (tp_btf, fentry) */
#define NT_TYPED_DEV 2 /* so is the hook's device argument */
#define NT_LATE_SLOT 4 /* kprobes: the tracer is found by function address, once a packet matched */

/* The skb as a typed pointer where the kernel can cast (see NT_VIEW). */
#define NT_SKB_TYPED(typed) (((typed) & NT_TYPED_SKB) || NT_CAST())

/*
 * Whether a packet whose own headers can't match the filter may carry a
 * tunnel whose inner packet might: IP-in-IP, or UDP to a tunnel port (the
 * body decodes those and matches on either packet).
 */
static __always_inline int may_carry_tunnel(__u8 l4, unsigned char *l4h)
{
	const struct udphdr___nt *uh;

	if (l4 == IPPROTO_IPIP || l4 == IPPROTO_IPV6)
		return 1;
	if (l4 != IPPROTO_UDP)
		return 0;
	uh = nt_rdonly_cast(l4h, bpf_core_type_id_kernel(struct udphdr___nt));
	return tunnel_port(bpf_ntohs(uh->dest));
}

/*
 * The port filter on the TCP or UDP header at l4h of an unfragmented packet
 * whose addresses and L4 protocol passed. 0 only when neither this packet
 * nor a tunnelled one inside it can match.
 */
static __always_inline int ports_may_match(__u8 l4, unsigned char *l4h)
{
	const struct udphdr___nt *uh;
	__u16 dport;

	if (!has_port_filter())
		return 1;
	/* TCP and UDP both start with the two ports. */
	uh = nt_rdonly_cast(l4h, bpf_core_type_id_kernel(struct udphdr___nt));
	dport = bpf_ntohs(uh->dest);
	if (ports_ok(bpf_ntohs(uh->source), dport))
		return 1;
	return l4 == IPPROTO_UDP && tunnel_port(dport);
}

/* An IPv6 address of the filter against one in a header, word by word (the
 * header is a BTF-typed view, read by its 32-bit words; addr_eq compares
 * copies 64 bits at a time). */
static __always_inline int addr6_eq(const __u8 *want, const __be32 *have)
{
	const __u32 *w = (const __u32 *)want;

	return w[0] == have[0] && w[1] == have[1] && w[2] == have[2] && w[3] == have[3];
}

/*
 * The IPv6 address filter on an IPv6 header. Early returns keep few values
 * live: the prefilter's stack adds to the body's, under the 512-byte limit
 * of the two frames.
 */
static __always_inline int addrs6_match(const struct ipv6hdr___nt *h6)
{
	__u32 fl = CFG.flags;

	if ((fl & NT_FL_SADDR) && !addr6_eq(CFG.saddr, h6->saddr))
		return 0;
	if ((fl & NT_FL_DADDR) && !addr6_eq(CFG.daddr, h6->daddr))
		return 0;
	if ((fl & NT_FL_ADDR) && !addr6_eq(CFG.addr, h6->saddr) && !addr6_eq(CFG.addr, h6->daddr))
		return 0;
	return 1;
}

/* The prefilter on an IPv4 header (see nt_may_match). */
static __always_inline int ip4_may_match(const struct iphdr___nt *ih, unsigned char *l3)
{
	unsigned char *l4h = l3 + (ih->ver_ihl & 0xf) * 4;
	__u8 l4 = ih->protocol;

	if (!l3_may_match(ETH_P_IP) || !l4_may_match(l4) ||
	    (!(CFG.flags & NT_FL_V6) && !addrs4_match(ih->saddr, ih->daddr)))
		return may_carry_tunnel(l4, l4h);
	/* A later fragment: the body decides (no ports to read). */
	if (has_port_filter() && (bpf_ntohs(ih->frag_off) & 0x1fff))
		return 1;
	return ports_may_match(l4, l4h);
}

/* The prefilter on an IPv6 header (see nt_may_match). */
static __always_inline int ip6_may_match(unsigned char *l3)
{
	const struct ipv6hdr___nt *h6 =
		nt_rdonly_cast(l3, bpf_core_type_id_kernel(struct ipv6hdr___nt));
	__u8 l4 = h6->nexthdr;

	if (!l3_may_match(ETH_P_IPV6) || !l4_may_match(l4) || !addrs6_match(h6))
		return may_carry_tunnel(l4, l3 + 40);
	return ports_may_match(l4, l3 + 40);
}

/*
 * The device that names where a packet is: the hook's own device argument
 * (dev_arg, typed when typed has NT_TYPED_DEV, else cast where the kernel
 * can) when it has one, since after a veth transmit skb->dev is already the
 * peer; else skb->dev. 0 when there is none. The prefilter and read_where
 * both take it from here, so they judge the same device.
 */
static __always_inline struct net_device *hook_dev(struct sk_buff *skb, __u64 dev_arg,
						   const int typed)
{
	struct net_device *dev;

	if (dev_arg) {
		dev = (struct net_device *)dev_arg;
		if (!(typed & NT_TYPED_DEV) && NT_CAST())
			dev = nt_rdonly_cast(dev, bpf_core_type_id_kernel(struct net_device));
		return dev;
	}
	dev = NT_RD(NT_SKB_TYPED(typed), skb, dev);
	return kernel_ptr(dev) ? dev : 0;
}

/* Whether hook_dev's device can be read with direct loads. */
static __always_inline int hook_dev_typed(__u64 dev_arg, const int typed)
{
	return dev_arg ? (typed & NT_TYPED_DEV) || NT_CAST() : NT_SKB_TYPED(typed);
}

/*
 * The device and namespace filters (--ifname, --netns) before the body, on
 * hook_dev's device, loaded directly (the caller checked that the skb can
 * be, and then so can a device argument). 1 when the body must decide: an
 * skb that is followed may be anywhere, and one without a device is placed
 * by its socket.
 */
static __always_inline int where_may_match(struct sk_buff *skb, __u64 dev_arg, const int typed)
{
	struct net_device *dev;

	if (!(CFG.netns || CFG.ifindex) || (CFG.flags & NT_FL_REMEMBER))
		return 1;
	dev = hook_dev(skb, dev_arg, typed | NT_TYPED_SKB);
	if (!dev)
		return 1;
	if (CFG.ifindex && CFG.ifindex != dev->ifindex)
		return 0;
	return !CFG.netns || CFG.netns == dev->nd_net.net->ns.inum;
}

/*
 * The packet filter's first rejections (see nt_may_match) on a skb whose
 * fields can be loaded directly: its protocol and, for IP, the L4 protocol,
 * the addresses and the ports. It mirrors the body's parse_l3/parse_l4 with
 * check: a tunnel's outer headers never reject.
 */
static __always_inline int pkt_may_match(struct sk_buff *skb, const int typed)
{
	const struct iphdr___nt *ih;
	struct nt_meta m;
	unsigned char *l3;
	__u16 proto;
	__u8 ver;

	proto = bpf_ntohs(skb->protocol);
	if (proto && proto != ETH_P_IP && proto != ETH_P_IPV6)
		return l3_may_match(proto);
	/* IP, or no protocol yet (local output): the headers decide, and a
	 * tunnel's inner packet may match where the outer can't. Unless the
	 * filter has nothing to check there, or they can't be loaded directly
	 * (an untyped skb got here through the cast: it is there). */
	if ((typed & NT_TYPED_SKB) && !NT_CAST())
		return 1;
	if (!(CFG.l3_proto || CFG.l4_proto || has_port_filter() ||
	      (CFG.flags & (NT_FL_SADDR | NT_FL_DADDR | NT_FL_ADDR))))
		return 1;
	read_meta(skb, &m, 1);
	l3 = l3_of(&m);
	ih = nt_rdonly_cast(l3, bpf_core_type_id_kernel(struct iphdr___nt));
	/* Without a protocol the body trusts the version; a header that is not
	 * the one the protocol says is left to the body (it may use the socket). */
	ver = ih->ver_ihl >> 4;
	if (ver == 4 && proto != ETH_P_IPV6)
		return ip4_may_match(ih, l3);
	if (ver == 6 && proto != ETH_P_IP)
		return ip6_may_match(l3);
	return 1;
}

/*
 * The filter's first rejections, inlined in every entry program before the
 * shared body is called, with direct loads into a few registers (no copies,
 * no stores, no map lookup): the packet, then where it is (dev_arg: the
 * hook's device argument, 0 if none). 0: the body would reject the packet
 * too; 1: the body decides. It runs only where loads are direct (typed skbs,
 * or bpf_rdonly_cast) and skb-mode can't lift the filter; the body applies
 * the whole filter again to what passes.
 */
static __always_inline int nt_may_match(struct sk_buff *skb, __u64 dev_arg, const int typed)
{
	if (!skb || !NT_SKB_TYPED(typed) || (CFG.flags & NT_FL_SKB_MODE))
		return 1;
	if (!(typed & NT_TYPED_SKB))
		skb = nt_rdonly_cast(skb, bpf_core_type_id_kernel(struct sk_buff));
	/* The packet first: where a packet filter is set, most hits end there. */
	return pkt_may_match(skb, typed) && where_may_match(skb, dev_arg, typed);
}

/* Where a packet is: the hook's device (or skb->dev), its namespace. */
struct nt_where {
	struct net_device *dev;
	__u32 ifindex;
	__u32 netns;
};

/* hook_dev's device and its namespace; without a device, the socket's namespace. */
static __always_inline void read_where(struct nt_where *w, struct sk_buff *skb, __u64 dev_arg,
				       const int typed)
{
	const int tskb = NT_SKB_TYPED(typed);
	struct net_device *dev = hook_dev(skb, dev_arg, typed);
	struct sock *sk;

	w->dev = dev;
	w->ifindex = 0;
	w->netns = 0;
	if (dev) {
		if (hook_dev_typed(dev_arg, typed)) {
			w->ifindex = dev->ifindex;
			w->netns = dev->nd_net.net->ns.inum;
		} else {
			w->ifindex = BPF_CORE_READ(dev, ifindex);
			w->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
		}
		return;
	}
	sk = NT_RD(tskb, skb, sk);
	if (sk)
		w->netns = tskb ? sk->__sk_common.skc_net.net->ns.inum
				: BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline int in_scope(const struct nt_where *w)
{
	__u64 key = (__u64)w->netns << 32;

	if (bpf_map_lookup_elem(&nt_scope, &key))
		return 1;
	key |= w->ifindex;
	return w->ifindex && bpf_map_lookup_elem(&nt_scope, &key) != 0;
}

/*
 * Scratch space of a matched event and what follows it in the record (too
 * big for the stack). The optional blocks follow the event in a fixed order,
 * each only when the record has it, at a running offset into tail: the
 * conntrack entry (NT_F_CT), the packet's bytes (NT_F_BYTES), then the stack
 * frames (common/src/event.rs `Layout` reads them in the same order).
 */
#define NT_STACK_ROOM (8 * NT_MAX_STACK_DEPTH)
/* The bytes block at its longest; 8 more because the verifier bounds the
 * padded length (caplen + 7) & ~7 by 2055, not 2048. */
#define NT_BYTES_ROOM (sizeof(struct nt_bytes) + NT_MAX_SNAPLEN + 8)

struct nt_scratch_rec {
	struct nt_event e;
	union {
		__u8 tail[sizeof(struct nt_ct) + NT_BYTES_ROOM + NT_STACK_ROOM];
		/* The conntrack entry, first when present. */
		struct nt_ct ct;
		/* Not used by name: it puts the block's layout into the object's
		 * BTF, for the ABI tests. */
		struct nt_bytes bytes;
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_scratch_rec);
} nt_scratch SEC(".maps");

/* One direction of a conntrack entry, read with direct loads (typed t). */
static __always_inline void ct_tuple_typed(struct nt_ct_tuple *o, const struct nf_conntrack_tuple *t)
{
	__u32 w;
	int i;

	for (i = 0; i < 4; i++) {
		w = t->src.u3.all[i];
		__builtin_memcpy(&o->saddr[4 * i], &w, 4);
		w = t->dst.u3.all[i];
		__builtin_memcpy(&o->daddr[4 * i], &w, 4);
	}
	o->sport = bpf_ntohs(t->src.u.all);
	o->dport = bpf_ntohs(t->dst.u.all);
	o->l3num = t->src.l3num;
	o->protonum = t->dst.protonum;
	o->pad = 0;
}

/* The same, copied with bpf_probe_read_kernel (kernels without bpf_rdonly_cast). */
static __always_inline void ct_tuple_copy(struct nt_ct_tuple *o, const struct nf_conntrack_tuple *t)
{
	if (BPF_CORE_READ_INTO(&o->saddr, t, src.u3))
		__builtin_memset(o->saddr, 0, sizeof(o->saddr));
	if (BPF_CORE_READ_INTO(&o->daddr, t, dst.u3))
		__builtin_memset(o->daddr, 0, sizeof(o->daddr));
	o->sport = bpf_ntohs(BPF_CORE_READ(t, src.u.all));
	o->dport = bpf_ntohs(BPF_CORE_READ(t, dst.u.all));
	o->l3num = BPF_CORE_READ(t, src.l3num);
	o->protonum = BPF_CORE_READ(t, dst.protonum);
	o->pad = 0;
}

/*
 * --detail: the conntrack entry the skb carries into *c. 0 (nothing
 * written) when it has none, or the running kernel's BTF can't describe it:
 * no _nfct in sk_buff (conntrack not configured), no struct nf_conn in
 * vmlinux (nf_conntrack is a module). skb is typed when tskb is set.
 */
static __always_inline int read_ct(struct sk_buff *skb, const int tskb, struct nt_ct *c)
{
	const struct nf_conn *ct;
	unsigned long nfct;

	if (!bpf_core_field_exists(skb->_nfct) || !bpf_core_type_exists(struct nf_conn))
		return 0;
	nfct = NT_RD(tskb, skb, _nfct);
	if (!nfct)
		return 0;
	c->ctinfo = nfct & 7;
	__builtin_memset(c->pad, 0, sizeof(c->pad));
	ct = (const struct nf_conn *)(nfct & ~7UL);
	if (!ct) {
		/* IP_CT_UNTRACKED: a state without an entry. */
		c->status = 0;
		__builtin_memset(&c->orig, 0, sizeof(c->orig));
		__builtin_memset(&c->reply, 0, sizeof(c->reply));
		return 1;
	}
	c->status = BPF_CORE_READ(ct, status);
	if (NT_CAST()) {
		/* Cast per tuple: the kernel's BTF also has nf_conn___init (a
		 * kfunc wrapper), which makes struct nf_conn's own type id
		 * ambiguous to CO-RE. */
		const __u32 id = bpf_core_type_id_kernel(struct nf_conntrack_tuple);

		ct_tuple_typed(&c->orig, nt_rdonly_cast(&ct->tuplehash[0].tuple, id));
		ct_tuple_typed(&c->reply, nt_rdonly_cast(&ct->tuplehash[1].tuple, id));
	} else {
		ct_tuple_copy(&c->orig, &ct->tuplehash[0].tuple);
		ct_tuple_copy(&c->reply, &ct->tuplehash[1].tuple);
	}
	return 1;
}

/*
 * --pcap: the packet's first bytes, as the kernel holds them now, into b: a
 * struct nt_bytes, then at most CFG.snaplen bytes, zero padded to a multiple
 * of 8. They start at the MAC header when the packet has one before its
 * network header (an Ethernet frame; see l3_of), else at the network header
 * (an IP packet). Only the linear part is read (the headers are always in
 * it); origlen counts the fragments too. Returns the block's length, 0 when
 * nothing could be copied. skb is typed when tskb is set.
 */
static __always_inline __u32 read_bytes(struct sk_buff *skb, const int tskb,
					const struct nt_meta *m, __u32 len, __u8 *b)
{
	struct nt_bytes *h = (struct nt_bytes *)b;
	unsigned char *l3 = l3_of(m), *start = l3, *end, *data = meta_data(m);
	__u32 data_len = NT_RD(tskb, skb, data_len), cap;
	long total;
	__u8 link = NT_LINK_RAW_IP;

	if (m->mac != NO_OFFSET && l3 > m->head + m->mac) {
		start = m->head + m->mac;
		link = NT_LINK_ETHERNET;
	}
	if (data_len > len)
		return 0;
	/* skb->len counts from skb->data, which may lie before or after start */
	end = data + (len - data_len);
	if (end <= start)
		return 0;
	total = (long)len + (data - start);
	cap = end - start;
	if (cap > CFG.snaplen)
		cap = CFG.snaplen;
	if (cap > NT_MAX_SNAPLEN)
		cap = NT_MAX_SNAPLEN;
	if (!cap)
		return 0;
	/* the padding after the bytes, before they are copied over its start */
	*(__u64 *)(b + sizeof(*h) + (cap & ~7U)) = 0;
	if (bpf_probe_read_kernel(b + sizeof(*h), cap, start))
		return 0;
	h->origlen = total > cap ? total : cap;
	h->caplen = cap;
	h->link = link;
	h->pad = 0;
	return sizeof(*h) + ((cap + 7) & ~7U);
}

/*
 * The key under which a function entry waits for its return. A task runs on
 * one CPU at a time (and may migrate between entry and return), so its pid
 * is enough; but softirqs in the idle loop run as pid 0 on every CPU at once,
 * so for pid 0 the CPU is part of the key.
 */
static __always_inline struct nt_stash_key stash_key(__u64 pid_tgid, __u32 tracer_id)
{
	struct nt_stash_key key = {
		.pid_tgid = pid_tgid,
		.tracer_id = tracer_id,
		.cpu = pid_tgid ? 0 : bpf_get_smp_processor_id() + 1,
	};

	return key;
}

/*
 * The value of a BPF-to-BPF call, hidden from the optimiser on both sides:
 * the verifier checks r0 at every exit of a subprogram, and clang leaves r0
 * undefined in a callee whose return value it can prove or finds unused.
 * Subprograms return nt_opaque(value); their callers take nt_done(call).
 */
static __always_inline int nt_opaque(int r)
{
	asm volatile("" : "+r"(r));
	return r;
}

/* A subprogram's result, consumed; entry programs return 0 (fentry must). */
static __always_inline int nt_done(int r)
{
	asm volatile("" : : "r"(r));
	return 0;
}

/*
 * The shared body: filters cheaply first (configuration decides what is
 * read; nothing is copied or looked up for a packet the filter rejects),
 * then builds and emits the event. `typed` (NT_TYPED_*, NT_LATE_SLOT: a
 * constant) says which pointers the kernel handed over typed, and whether
 * the tracer (slot) is still to be found.
 */
static __always_inline int nt_body(void *ctx, struct nt_args *a, struct nt_slot *slot,
				   const int typed)
{
	struct sk_buff *skb = (struct sk_buff *)a->skb;
	__u64 skb_key = a->skb;
	/* p is zeroed by the parser, only once the first checks passed: a
	 * rejected packet costs no stores for it. w and tun are zeroed here:
	 * clang keeps them in registers, and a value left undefined on some
	 * path is one the verifier refuses to spill (R2 !read_ok). */
	struct nt_where w = {};
	struct nt_pkt p;
	struct nt_tunnel tun = {};
	struct nt_meta m;
	struct nt_scratch_rec *r;
	struct nt_event *e;
	__u32 zero = 0, flags = 0, tail = 0;
	__u64 pid_tgid = 0;
	int remembered = 0, where_read = 0, follow_any = 0, v;
	long n;

	if (!skb)
		return 0;
	if (!(typed & NT_LATE_SLOT) && (!slot || !slot->enabled))
		return 0;
	if (!(typed & NT_TYPED_SKB) && NT_CAST())
		skb = nt_rdonly_cast(skb, bpf_core_type_id_kernel(struct sk_buff));

	if (CFG.flags & NT_FL_REMEMBER)
		remembered = bpf_map_lookup_elem(&nt_skbs, &skb_key) != 0;
	follow_any = remembered && (CFG.flags & NT_FL_SKB_MODE);

	if (CFG.pid && !remembered) {
		pid_tgid = bpf_get_current_pid_tgid();
		if (CFG.pid != (__u32)(pid_tgid >> 32))
			return 0;
	}

	if (!remembered && (CFG.netns || CFG.ifindex || (CFG.flags & NT_FL_SCOPE))) {
		read_where(&w, skb, a->dev, typed);
		where_read = 1;
		if (CFG.netns && CFG.netns != w.netns)
			return 0;
		if (CFG.ifindex && CFG.ifindex != w.ifindex)
			return 0;
		if ((CFG.flags & NT_FL_SCOPE) && !in_scope(&w))
			return 0;
	}

	if (read_meta(skb, &m, NT_SKB_TYPED(typed)))
		return 0;
	/* skb-mode follows a remembered skb whatever its headers became;
	 * following alone only lifts the scope, the packet filter still holds. */
	v = parse_pkt(&p, &flags, &m, &tun, !follow_any);
	if (v == NT_REJECT)
		return 0;
	if (v == NT_NOHDR && a->sk)
		parse_sock(&p, &flags, (struct sock *)a->sk);

	if (!follow_any && v != NT_MATCHED && !packet_matches(&p, flags))
		return 0;
	if (typed & NT_LATE_SLOT) {
		/* User space keys each function by its address and, for kernels
		 * with IBT that report the address after the ENDBR, that
		 * address + 4. */
		__u64 ip = bpf_get_func_ip(ctx);

		slot = bpf_map_lookup_elem(&nt_funcs, &ip);
		if (!slot || !slot->enabled)
			return 0;
	}
	if (follow_any) {
		flags |= NT_F_SKB_MODE;
	} else {
		if (!remembered && (CFG.flags & NT_FL_REMEMBER) &&
		    slot->role != NT_ROLE_CONSUME && slot->role != NT_ROLE_DROP) {
			__u8 one = 1;

			if (bpf_map_update_elem(&nt_skbs, &skb_key, &one, BPF_ANY))
				stat_inc(NT_STAT_SKB_MAP_FULL);
		}
	}
	if (remembered && (slot->role == NT_ROLE_CONSUME || slot->role == NT_ROLE_DROP))
		bpf_map_delete_elem(&nt_skbs, &skb_key);

	/* A match: from here on the event is built. */
	stat_inc(NT_STAT_MATCHED);
	if (!rate_ok())
		return 0;
	r = bpf_map_lookup_elem(&nt_scratch, &zero);
	if (!r)
		return 0;
	e = &r->e;
	if (!where_read)
		read_where(&w, skb, a->dev, typed);
	if (!pid_tgid)
		pid_tgid = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_ns();
	e->skb = skb_key;
	e->location = a->location;
	e->retval = 0;
	e->tracer_id = slot->tracer_id;
	e->netns = w.netns;
	e->ifindex = w.ifindex;
	e->pid = pid_tgid >> 32;
	e->stack_id = -1;
	e->drop_reason = a->reason;
	e->flags = flags;
	e->pkt_len = NT_RD(NT_SKB_TYPED(typed), skb, len);
	e->pkt = p;
	e->tun = tun;
	if (w.dev) {
		if (bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), w.dev->name) < 0)
			e->ifname[0] = 0;
	} else {
		e->ifname[0] = 0;
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* --detail only: without NT_FL_CT the verifier drops this. */
	if ((CFG.flags & NT_FL_CT) && read_ct(skb, NT_SKB_TYPED(typed), &r->ct)) {
		e->flags |= NT_F_CT;
		tail = sizeof(struct nt_ct);
	}

	if (slot->ret) {
		struct nt_stash_key key = stash_key(pid_tgid, slot->tracer_id);

		bpf_map_update_elem(&nt_stash, &key, e, BPF_ANY);
	}
	/* --pcap only: without NT_FL_BYTES the verifier drops this. After the
	 * stash, so that a return's event (which has no bytes) lacks the flag. */
	if (CFG.flags & NT_FL_BYTES) {
		__u32 got = read_bytes(skb, NT_SKB_TYPED(typed), &m, e->pkt_len, r->tail + tail);

		if (got) {
			e->flags |= NT_F_BYTES;
			tail += got;
		} else {
			stat_inc(NT_STAT_BYTES_FAIL);
		}
	}
	if (slot->stack) {
		n = bpf_get_stack(ctx, r->tail + tail, NT_STACK_ROOM, 0);
		if (n <= 0) {
			stat_inc(NT_STAT_STACK_FAIL);
		} else {
			e->stack_id = n / 8;
			if (n > NT_STACK_ROOM)
				n = NT_STACK_ROOM;
			if (bpf_ringbuf_output(&nt_events, r, sizeof(r->e) + tail + n, 0))
				stat_inc(NT_STAT_RB_FULL);
			return 0;
		}
	}
	if (bpf_ringbuf_output(&nt_events, r, sizeof(r->e) + tail, 0))
		stat_inc(NT_STAT_RB_FULL);
	return 0;
}

/* The body for untyped skb values (raw tracepoints, kprobes). */
static __noinline int nt_handle(void *ctx, struct nt_args *a, struct nt_slot *slot)
{
	return nt_opaque(nt_body(ctx, a, slot, 0));
}

/* The body for kprobes: the tracer is found by function address after the filter. */
static __noinline int nt_handle_kp(void *ctx, struct nt_args *a)
{
	return nt_opaque(nt_body(ctx, a, 0, NT_LATE_SLOT));
}

/* The body for BTF-typed skb pointers (tp_btf, fentry). */
static __noinline int nt_handle_typed(void *ctx, struct nt_args *a, struct nt_slot *slot)
{
	return nt_opaque(nt_body(ctx, a, slot, NT_TYPED_SKB));
}

/* The body for BTF-typed skb and device arguments (tp_btf with a device). */
static __noinline int nt_handle_typed_dev(void *ctx, struct nt_args *a, struct nt_slot *slot)
{
	return nt_opaque(nt_body(ctx, a, slot, NT_TYPED_SKB | NT_TYPED_DEV));
}

/*
 * A traced function returned: emit its entry event again with the return
 * value. A clone (skb_clone) of a followed skb is followed too.
 */
static __always_inline int nt_ret_body(struct nt_slot *slot, __u64 retval)
{
	struct nt_stash_key key = {};
	struct nt_event *e;

	if (!slot || !slot->enabled)
		return 0;
	key = stash_key(bpf_get_current_pid_tgid(), slot->tracer_id);
	e = bpf_map_lookup_elem(&nt_stash, &key);
	if (!e)
		return 0;
	e->retval = retval;
	/* The entry's conntrack entry stayed in its own record. */
	e->flags = (e->flags & ~NT_F_CT) | NT_F_RET;
	e->ts_ns = bpf_ktime_get_ns();
	e->stack_id = -1;
	if (slot->role == NT_ROLE_CLONE && retval && (CFG.flags & NT_FL_REMEMBER)) {
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

static __noinline int nt_handle_ret(struct nt_slot *slot, __u64 retval)
{
	return nt_opaque(nt_ret_body(slot, retval));
}

/*
 * Reads argument i of a raw tracepoint or tp_btf context (both an array of
 * u64), never touching an index above max (a compile-time constant), so the
 * program attaches to any tracepoint with more than max arguments.
 */
static __always_inline __u64 ctx_arg(unsigned long long *ctx, __u8 i, const int max)
{
	/*
	 * Load every allowed argument at a constant offset first: selecting the
	 * pointer instead lets clang emit ctx+8*i, which the verifier rejects.
	 */
	__u64 a0 = ctx[0];
	__u64 a1 = max >= 1 ? ctx[1] : 0;
	__u64 a2 = max >= 2 ? ctx[2] : 0;
	__u64 a3 = max >= 3 ? ctx[3] : 0;

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

static __always_inline __u64 rtp_arg(struct bpf_raw_tracepoint_args *ctx, __u8 i, const int max)
{
	return ctx_arg((unsigned long long *)ctx->args, i, max);
}

static __always_inline int rtp_entry(struct bpf_raw_tracepoint_args *ctx, __u32 slot_idx,
				     const int max)
{
	struct nt_args a = {};
	struct nt_slot *slot = bpf_map_lookup_elem(&nt_slots, &slot_idx);

	if (!slot)
		return 0;
	a.skb = rtp_arg(ctx, slot->skb_arg, max);
	if (slot->dev_arg != NT_ARG_NONE)
		a.dev = rtp_arg(ctx, slot->dev_arg, max);
	if (!nt_may_match((struct sk_buff *)a.skb, a.dev, 0))
		return 0;
	if (slot->sk_arg != NT_ARG_NONE)
		a.sk = rtp_arg(ctx, slot->sk_arg, max);
	return nt_done(nt_handle(ctx, &a, slot));
}

/* kfree_skb(skb, location, reason, ...): the drop reason and where. */
static __always_inline int rtp_drop_entry(struct bpf_raw_tracepoint_args *ctx, __u32 slot_idx)
{
	struct nt_args a = {
		.skb = ctx->args[0],
		.location = ctx->args[1],
		.reason = ctx->args[2],
	};

	if (!nt_may_match((struct sk_buff *)a.skb, 0, 0))
		return 0;
	return nt_done(nt_handle(ctx, &a, bpf_map_lookup_elem(&nt_slots, &slot_idx)));
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

	/* Most freed skbs were never remembered: a lookup is lock-free, a
	 * delete takes the LRU's lock. */
	if (bpf_map_lookup_elem(&nt_skbs, &skb))
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

/* Slot numbering: enum nt_slot_base in nt_abi.h. */

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

/*
 * tp_btf entries: the same slots as the raw tracepoint programs above (a
 * tracer uses one or the other), bound to their tracepoint when loaded; the
 * kernel hands them BTF-typed arguments, so the body reads the skb with
 * direct loads instead of bpf_probe_read_kernel.
 */
static __always_inline int btf_body(unsigned long long *ctx, __u32 slot_idx, const int max,
				    const int skb, const int dev_last)
{
	struct nt_args a = {};
	struct nt_slot *slot = bpf_map_lookup_elem(&nt_slots, &slot_idx);

	if (!slot)
		return 0;
	/* The skb (and a device that is the last argument read) at constant
	 * indexes keep their BTF types; the verifier would otherwise try every
	 * argument as each. */
	a.skb = ctx[skb];
	if (slot->sk_arg != NT_ARG_NONE)
		a.sk = ctx_arg(ctx, slot->sk_arg, max);
	if (dev_last) {
		a.dev = ctx[max];
		return nt_done(nt_handle_typed_dev(ctx, &a, slot));
	}
	if (slot->dev_arg != NT_ARG_NONE)
		a.dev = ctx_arg(ctx, slot->dev_arg, max);
	return nt_done(nt_handle_typed(ctx, &a, slot));
}

/* The prefilter first: a rejected packet costs no store (the body's
 * zeroed arguments and map key, declared in it, are not hoisted above). */
static __always_inline int btf_entry(unsigned long long *ctx, __u32 slot_idx, const int max,
				     const int skb, const int dev_last)
{
	if (!nt_may_match((struct sk_buff *)ctx[skb], dev_last ? ctx[max] : 0,
			  NT_TYPED_SKB | (dev_last ? NT_TYPED_DEV : 0)))
		return 0;
	return btf_body(ctx, slot_idx, max, skb, dev_last);
}

/* nt_bt_a<max>_s<skb>_<n>: the twin of raw slot nt_a<max>_<n> for a
 * tracepoint whose skb is argument <skb>; nt_bt_a<max>_s<skb>d_<n> for one
 * whose device is argument <max>. */
#define BTF_SLOT(fam, skb, n)                                                    \
	SEC("tp_btf")                                                            \
	int nt_bt_a##fam##_s##skb##_##n(unsigned long long *ctx)                 \
	{                                                                        \
		return btf_entry(ctx, NT_SLOT_BASE_A##fam + n, fam, skb, 0);     \
	}

#define BTF_DEV_SLOT(fam, skb, n)                                                \
	SEC("tp_btf")                                                            \
	int nt_bt_a##fam##_s##skb##d_##n(unsigned long long *ctx)                \
	{                                                                        \
		return btf_entry(ctx, NT_SLOT_BASE_A##fam + n, fam, skb, 1);     \
	}

#define BTF_DROP_SLOT(n)                                                         \
	SEC("tp_btf")                                                            \
	int nt_bt_drop_##n(unsigned long long *ctx)                              \
	{                                                                        \
		__u32 i = NT_SLOT_BASE_DROP + n;                                 \
		struct nt_args a = {                                             \
			.skb = ctx[0],                                           \
			.location = ctx[1],                                      \
			.reason = ctx[2],                                        \
		};                                                               \
		if (!nt_may_match((struct sk_buff *)ctx[0], 0, NT_TYPED_SKB))  \
			return 0;                                                \
		return nt_done(nt_handle_typed(ctx, &a, bpf_map_lookup_elem(&nt_slots, &i))); \
	}

BTF_SLOT(0, 0, 0) BTF_SLOT(0, 0, 1) BTF_SLOT(0, 0, 2) BTF_SLOT(0, 0, 3)
BTF_SLOT(0, 0, 4) BTF_SLOT(0, 0, 5) BTF_SLOT(0, 0, 6) BTF_SLOT(0, 0, 7)
BTF_SLOT(0, 0, 8) BTF_SLOT(0, 0, 9) BTF_SLOT(0, 0, 10) BTF_SLOT(0, 0, 11)
BTF_SLOT(0, 0, 12) BTF_SLOT(0, 0, 13) BTF_SLOT(0, 0, 14) BTF_SLOT(0, 0, 15)
BTF_SLOT(0, 0, 16) BTF_SLOT(0, 0, 17) BTF_SLOT(0, 0, 18) BTF_SLOT(0, 0, 19)
BTF_SLOT(0, 0, 20) BTF_SLOT(0, 0, 21) BTF_SLOT(0, 0, 22) BTF_SLOT(0, 0, 23)
BTF_SLOT(1, 0, 0) BTF_SLOT(1, 0, 1) BTF_SLOT(1, 0, 2) BTF_SLOT(1, 0, 3)
BTF_SLOT(1, 0, 4) BTF_SLOT(1, 0, 5) BTF_SLOT(1, 0, 6) BTF_SLOT(1, 0, 7)
BTF_SLOT(1, 0, 8) BTF_SLOT(1, 0, 9) BTF_SLOT(1, 0, 10) BTF_SLOT(1, 0, 11)
BTF_SLOT(1, 0, 12) BTF_SLOT(1, 0, 13) BTF_SLOT(1, 0, 14) BTF_SLOT(1, 0, 15)
BTF_SLOT(1, 1, 0) BTF_SLOT(1, 1, 1) BTF_SLOT(1, 1, 2) BTF_SLOT(1, 1, 3)
BTF_SLOT(1, 1, 4) BTF_SLOT(1, 1, 5) BTF_SLOT(1, 1, 6) BTF_SLOT(1, 1, 7)
BTF_SLOT(1, 1, 8) BTF_SLOT(1, 1, 9) BTF_SLOT(1, 1, 10) BTF_SLOT(1, 1, 11)
BTF_SLOT(1, 1, 12) BTF_SLOT(1, 1, 13) BTF_SLOT(1, 1, 14) BTF_SLOT(1, 1, 15)
BTF_SLOT(2, 0, 0) BTF_SLOT(2, 0, 1) BTF_SLOT(2, 0, 2) BTF_SLOT(2, 0, 3)
BTF_SLOT(2, 0, 4) BTF_SLOT(2, 0, 5) BTF_SLOT(2, 0, 6) BTF_SLOT(2, 0, 7)
BTF_SLOT(2, 1, 0) BTF_SLOT(2, 1, 1) BTF_SLOT(2, 1, 2) BTF_SLOT(2, 1, 3)
BTF_SLOT(2, 1, 4) BTF_SLOT(2, 1, 5) BTF_SLOT(2, 1, 6) BTF_SLOT(2, 1, 7)
BTF_SLOT(2, 2, 0) BTF_SLOT(2, 2, 1) BTF_SLOT(2, 2, 2) BTF_SLOT(2, 2, 3)
BTF_SLOT(2, 2, 4) BTF_SLOT(2, 2, 5) BTF_SLOT(2, 2, 6) BTF_SLOT(2, 2, 7)
BTF_SLOT(3, 0, 0) BTF_SLOT(3, 0, 1) BTF_SLOT(3, 0, 2) BTF_SLOT(3, 0, 3)
BTF_SLOT(3, 1, 0) BTF_SLOT(3, 1, 1) BTF_SLOT(3, 1, 2) BTF_SLOT(3, 1, 3)
BTF_SLOT(3, 2, 0) BTF_SLOT(3, 2, 1) BTF_SLOT(3, 2, 2) BTF_SLOT(3, 2, 3)
BTF_SLOT(3, 3, 0) BTF_SLOT(3, 3, 1) BTF_SLOT(3, 3, 2) BTF_SLOT(3, 3, 3)
BTF_DEV_SLOT(1, 0, 0) BTF_DEV_SLOT(1, 0, 1) BTF_DEV_SLOT(1, 0, 2) BTF_DEV_SLOT(1, 0, 3)
BTF_DEV_SLOT(1, 0, 4) BTF_DEV_SLOT(1, 0, 5) BTF_DEV_SLOT(1, 0, 6) BTF_DEV_SLOT(1, 0, 7)
BTF_DEV_SLOT(1, 0, 8) BTF_DEV_SLOT(1, 0, 9) BTF_DEV_SLOT(1, 0, 10) BTF_DEV_SLOT(1, 0, 11)
BTF_DEV_SLOT(1, 0, 12) BTF_DEV_SLOT(1, 0, 13) BTF_DEV_SLOT(1, 0, 14) BTF_DEV_SLOT(1, 0, 15)
BTF_DEV_SLOT(2, 0, 0) BTF_DEV_SLOT(2, 0, 1) BTF_DEV_SLOT(2, 0, 2) BTF_DEV_SLOT(2, 0, 3)
BTF_DEV_SLOT(2, 0, 4) BTF_DEV_SLOT(2, 0, 5) BTF_DEV_SLOT(2, 0, 6) BTF_DEV_SLOT(2, 0, 7)
BTF_DEV_SLOT(2, 1, 0) BTF_DEV_SLOT(2, 1, 1) BTF_DEV_SLOT(2, 1, 2) BTF_DEV_SLOT(2, 1, 3)
BTF_DEV_SLOT(2, 1, 4) BTF_DEV_SLOT(2, 1, 5) BTF_DEV_SLOT(2, 1, 6) BTF_DEV_SLOT(2, 1, 7)
BTF_DEV_SLOT(3, 0, 0) BTF_DEV_SLOT(3, 0, 1) BTF_DEV_SLOT(3, 0, 2) BTF_DEV_SLOT(3, 0, 3)
BTF_DEV_SLOT(3, 1, 0) BTF_DEV_SLOT(3, 1, 1) BTF_DEV_SLOT(3, 1, 2) BTF_DEV_SLOT(3, 1, 3)
BTF_DEV_SLOT(3, 2, 0) BTF_DEV_SLOT(3, 2, 1) BTF_DEV_SLOT(3, 2, 2) BTF_DEV_SLOT(3, 2, 3)
BTF_DROP_SLOT(0) BTF_DROP_SLOT(1)

/* ---- Kernel functions ---- */

/*
 * kprobe entries: one program per position of the skb argument, attached to
 * many functions; the function is found by its address in nt_funcs, and
 * only for packets that pass the filter (most hits are rejected without
 * knowing which function fired).
 */
static __always_inline int kp_body(struct pt_regs *ctx, __u64 skb)
{
	struct nt_args a = { .skb = skb };

	return nt_done(nt_handle_kp(ctx, &a));
}

static __always_inline int kp_entry(struct pt_regs *ctx, __u64 skb)
{
	if (!nt_may_match((struct sk_buff *)skb, 0, 0))
		return 0;
	return kp_body(ctx, skb);
}

/*
 * kprobe-multi (fprobe) programs: one link attaches a program to every
 * function of a family at once. User space loads these itself (aya 0.14
 * can't set the attach type). They find their tracer by function address
 * like the kprobes: the link's attach cookie would do too, but the kernel
 * finds a cookie by searching the link's addresses on every hit, which
 * costs more than the whole filter (measured in the 6.12 guest).
 */
static __always_inline int kpm_entry(struct pt_regs *ctx, __u64 skb)
{
	return kp_entry(ctx, skb);
}

SEC("kprobe") int nt_kpm_a0(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM1(ctx)); }
SEC("kprobe") int nt_kpm_a1(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM2(ctx)); }
SEC("kprobe") int nt_kpm_a2(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM3(ctx)); }
SEC("kprobe") int nt_kpm_a3(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM4(ctx)); }
SEC("kprobe") int nt_kpm_a4(struct pt_regs *ctx) { return kpm_entry(ctx, PT_REGS_PARM5(ctx)); }

SEC("kprobe") int nt_kpm_ret(struct pt_regs *ctx)
{
	/* On a kprobe-multi return, the function's address is its entry's. */
	__u64 ip = bpf_get_func_ip(ctx);

	return nt_done(nt_handle_ret(bpf_map_lookup_elem(&nt_funcs, &ip), PT_REGS_RC(ctx)));
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
		return nt_done(nt_handle_ret(bpf_map_lookup_elem(&nt_slots, &i),         \
				     PT_REGS_RC(ctx)));                           \
	}

/*
 * fentry/fexit programs are bound to one function when loaded, so they are
 * slots too; fentry slots come in families by the skb argument position (a
 * program may only read arguments its function has).
 */
/* Past the first check: nothing is stored before it. */
static __always_inline int fentry_entry(unsigned long long *ctx, __u32 slot_idx, __u64 skb)
{
	struct nt_args a = { .skb = skb };

	return nt_done(nt_handle_typed(ctx, &a, bpf_map_lookup_elem(&nt_slots, &slot_idx)));
}

#define FENTRY_SLOT(arg, n)                                                      \
	SEC("fentry")                                                            \
	int nt_fe_a##arg##_##n(unsigned long long *ctx)                          \
	{                                                                        \
		if (!nt_may_match((struct sk_buff *)ctx[arg], 0, NT_TYPED_SKB)) \
			return 0;                                                \
		return fentry_entry(ctx, NT_SLOT_BASE_FE##arg + n, ctx[arg]);  \
	}

#define FEXIT_SLOT(n)                                                            \
	SEC("fexit")                                                             \
	int nt_fx_##n(unsigned long long *ctx)                                   \
	{                                                                        \
		__u32 i = NT_SLOT_BASE_FEXIT + n;                                \
		__u64 ret = 0;                                                   \
		bpf_get_func_ret(ctx, &ret);                                     \
		return nt_done(nt_handle_ret(bpf_map_lookup_elem(&nt_slots, &i), ret));   \
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
