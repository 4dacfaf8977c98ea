/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The ABI shared by the kernel programs and user space: the event record
 * written to the ring buffer, the filter held in .rodata, the per-slot
 * configuration, the slot numbering and the statistics counters.
 *
 * Every number of the contract is a struct layout or an enum constant, so
 * that the compiled object's BTF carries it (see nt_abi_anchor at the end).
 * The Rust side decodes by its own constants (common/src/event.rs `offsets`,
 * common/src/filter.rs `offsets`, node-agent/src/loader.rs, slots.rs), and
 * node-agent/src/slots/abi.rs checks each of them against the BTF of the
 * object built from this file: a change made on one side only fails there.
 */
#ifndef NT_ABI_H
#define NT_ABI_H

#define NT_IFNAMSIZ 16
#define NT_COMM_LEN 16

enum nt_limits {
	NT_MAX_SLOTS = 1024,      /* entries of nt_slots */
	NT_MAX_STACK_DEPTH = 32,  /* kernel stack frames after a record, at most */
	NT_MAX_SNAPLEN = 2048,    /* packet bytes after a record, at most (--snaplen); a power of two */
};

/* nt_event.flags */
enum nt_event_flags {
	NT_F_RET = 0x1,       /* retval holds a return value */
	NT_F_FROM_SK = 0x2,   /* addresses/ports were taken from the socket */
	NT_F_SKB_MODE = 0x4,  /* emitted because skb-mode remembered the skb */
	NT_F_L4_BAD = 0x8,    /* L3 parsed, L4 header not readable */
	NT_F_TUNNEL = 0x10,   /* pkt is the inner packet of the tunnel in nt_event.tun */
	NT_F_CT = 0x20,       /* a struct nt_ct (the skb's conntrack entry) follows the record */
	NT_F_BYTES = 0x40,    /* a struct nt_bytes and the packet's first bytes follow the record */
};

/* nt_tunnel.kind */
enum nt_tunnel_kind {
	NT_TUN_NONE = 0,
	NT_TUN_VXLAN = 1,     /* UDP to 4789 (IANA) or 8472 (Linux's and flannel's default) */
	NT_TUN_GENEVE = 2,    /* UDP to 6081 */
	NT_TUN_IPIP = 3,      /* IP protocol 4: IPv4 inside */
	NT_TUN_IP6IP = 4,     /* IP protocol 41: IPv6 inside */
};

/* The outer packet of an encapsulated one (nt_event.flags NT_F_TUNNEL). */
struct nt_tunnel {
	__u8 saddr[16];     /*  0 (152 in nt_event): outer source, IPv4 in the first 4 bytes */
	__u8 daddr[16];     /* 16 (168) */
	__u32 vni;          /* 32 (184): VXLAN/Geneve network identifier, 0 for IP-in-IP */
	__u16 l3_proto;     /* 36 (188): outer ethertype, host order */
	__u16 sport;        /* 38 (190): outer UDP ports, host order; 0 for IP-in-IP */
	__u16 dport;        /* 40 (192) */
	__u8 kind;          /* 42 (194): NT_TUN_* */
	__u8 pad[5];        /* 43 (195) */
};                          /* 48 */

_Static_assert(sizeof(struct nt_tunnel) == 48, "nt_tunnel layout");

/* What the kernel read of a packet's headers (the tail of nt_event). */
struct nt_pkt {
	__u8 saddr[16];     /*  0 (96 in nt_event): IPv4 in the first 4 bytes, network order */
	__u8 daddr[16];     /* 16 (112) */
	__u32 seq;          /* 32 (128): TCP seq (host order) */
	__u32 ack;          /* 36 (132): TCP ack (host order) */
	__u16 l3_proto;     /* 40 (136): ethertype, host order; 0 = not parsed */
	__u16 sport;        /* 42 (138): host order */
	__u16 dport;        /* 44 (140): host order */
	__u16 icmp_id;      /* 46 (142): host order */
	__u16 icmp_seq;     /* 48 (144): host order */
	union {
		__u16 arp_op;   /* 50 (146): ARP operation, host order */
		__u16 ip_id;    /* 50 (146): IPv4 identification, host order */
	};
	__u8 l4_proto;      /* 52 (148): IPPROTO_* */
	__u8 tcp_flags;     /* 53 (149): FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128 */
	__u8 icmp_type;     /* 54 (150) */
	__u8 icmp_code;     /* 55 (151) */
};

_Static_assert(sizeof(struct nt_pkt) == 56, "nt_pkt layout");

struct nt_event {
	__u64 ts_ns;        /*   0: bpf_ktime_get_ns() */
	__u64 skb;          /*   8: address of the sk_buff */
	__u64 location;     /*  16: kfree_skb/consume_skb caller, 0 if none */
	__u64 retval;       /*  24: return value when NT_F_RET */
	__u32 tracer_id;    /*  32: id of the tracer (index in the attach plan) */
	__u32 netns;        /*  36: netns inode of skb->dev (or the socket) */
	__u32 ifindex;      /*  40: skb->dev->ifindex, 0 without a device */
	__u32 pid;          /*  44: tgid of the current task */
	__s32 stack_id;     /*  48: frames of the kernel stack that follow the record, -1 when none */
	__u32 drop_reason;  /*  52: kfree_skb drop reason, 0 when none */
	__u32 flags;        /*  56: NT_F_* */
	__u32 pkt_len;      /*  60: skb->len */
	char ifname[NT_IFNAMSIZ]; /* 64 */
	char comm[NT_COMM_LEN];   /* 80 */
	struct nt_pkt pkt;  /*  96: the packet's headers (the inner ones of a tunnel) */
	struct nt_tunnel tun; /* 152: the outer packet when NT_F_TUNNEL, else zero */
};                          /* 200 */

_Static_assert(sizeof(struct nt_event) == 200, "nt_event layout");

/*
 * nt_ct.ctinfo: the kernel's enum ip_conntrack_info, as skb->_nfct's low
 * three bits hold it (5, "new" in the reply direction, is never set; 6 is unused).
 */
enum nt_ct_info {
	NT_CT_ESTABLISHED = 0,
	NT_CT_RELATED = 1,
	NT_CT_NEW = 2,
	NT_CT_ESTABLISHED_REPLY = 3,
	NT_CT_RELATED_REPLY = 4,
	NT_CT_UNTRACKED = 7,  /* IP_CT_UNTRACKED: no entry on purpose (-j NOTRACK) */
};

/* One direction of a conntrack entry (the kernel's struct nf_conntrack_tuple). */
struct nt_ct_tuple {
	__u8 saddr[16];     /*  0: IPv4 in the first 4 bytes, network order */
	__u8 daddr[16];     /* 16 */
	__u16 sport;        /* 32: src.u.all, host order: a port; ICMP: the echo id */
	__u16 dport;        /* 34: dst.u.all, host order: a port; ICMP: type << 8 | code */
	__u16 l3num;        /* 36: AF_INET (2) or AF_INET6 (10) */
	__u8 protonum;      /* 38: IPPROTO_* */
	__u8 pad;           /* 39 */
};                          /* 40 */

_Static_assert(sizeof(struct nt_ct_tuple) == 40, "nt_ct_tuple layout");

/*
 * The conntrack entry of an skb (skb->_nfct), read with --detail (NT_FL_CT):
 * it follows the record when nt_event.flags has NT_F_CT, before the other
 * optional blocks (the packet bytes, the stack frames). An skb without an entry (not seen by conntrack yet, or found
 * invalid) gets none.
 */
struct nt_ct {
	__u32 status;       /*  0: ct->status, the kernel's IPS_* bits; 0 when untracked */
	__u8 ctinfo;        /*  4: enum nt_ct_info */
	__u8 pad[3];        /*  5 */
	struct nt_ct_tuple orig;  /*  8: tuplehash[IP_CT_DIR_ORIGINAL]; zero when untracked */
	struct nt_ct_tuple reply; /* 48: tuplehash[IP_CT_DIR_REPLY] */
};                          /* 88 */

_Static_assert(sizeof(struct nt_ct) == 88, "nt_ct layout");
/* nt_bytes.link: where the copied bytes start. */
enum nt_link {
	NT_LINK_ETHERNET = 1, /* at the MAC header: an Ethernet frame */
	NT_LINK_RAW_IP = 2,   /* at the network header: an IPv4 or IPv6 packet */
};

/*
 * The packet's first bytes as the kernel held them at the hook (--pcap,
 * NT_FL_BYTES): this header, then caplen bytes, zero padded to a multiple
 * of 8. It follows the record when nt_event.flags has NT_F_BYTES, after the
 * other optional blocks (see common/src/event.rs `Layout`) and before the
 * stack frames.
 */
struct nt_bytes {
	__u32 origlen;      /* 0: bytes from where the copy starts to the packet's end */
	__u16 caplen;       /* 4: bytes copied (at most the filter's snaplen) */
	__u8 link;          /* 6: enum nt_link */
	__u8 pad;           /* 7 */
};                          /* 8 */

_Static_assert(sizeof(struct nt_bytes) == 8, "nt_bytes layout");

/* nt_filter.flags */
enum nt_filter_flags {
	NT_FL_SADDR = 0x1,
	NT_FL_DADDR = 0x2,
	NT_FL_ADDR = 0x4,
	NT_FL_SKB_MODE = 0x8,
	NT_FL_V6 = 0x10,      /* the address filters are IPv6 addresses */
	NT_FL_SCOPE = 0x20,   /* only (netns, ifindex) pairs in nt_scope match */
	NT_FL_FOLLOW = 0x40,  /* an skb that matched is followed out of the scope */
	NT_FL_CT = 0x80,      /* --detail: read the conntrack entry of matched skbs (skb->_nfct) */
	NT_FL_BYTES = 0x100,  /* --pcap: copy up to snaplen bytes of matched packets (struct nt_bytes) */
	NT_FL_PORTS = 0x200,  /* sport, dport or port is set (one register test on the reject path) */
};

/* The packet filter, written once into .rodata before loading. */
struct nt_filter {
	__u8 saddr[16];     /*  0 */
	__u8 daddr[16];     /* 16 */
	__u8 addr[16];      /* 32 */
	__u32 netns;        /* 48: 0 = any */
	__u32 ifindex;      /* 52: 0 = any */
	__u32 pid;          /* 56: 0 = any */
	__u32 flags;        /* 60: NT_FL_* */
	__u16 l3_proto;     /* 64: ethertype, 0 = any */
	__u16 sport;        /* 66: 0 = any */
	__u16 dport;        /* 68 */
	__u16 port;         /* 70 */
	__u8 l4_proto;      /* 72: 0 = any */
	__u8 pad;           /* 73 */
	__u16 snaplen;      /* 74: with NT_FL_BYTES, bytes to copy, 1..NT_MAX_SNAPLEN */
	__u8 pad2[4];       /* 76 */
};                          /* 80 */

_Static_assert(sizeof(struct nt_filter) == 80, "nt_filter layout");

/* nt_slot.role */
enum nt_role {
	NT_ROLE_NONE = 0,
	NT_ROLE_CONSUME = 1,  /* the skb ends here normally */
	NT_ROLE_DROP = 2,     /* the skb is dropped here; args carry the reason */
	NT_ROLE_CLONE = 3,    /* returns a clone of the skb */
};

/*
 * Calls the loader rewrites before loading (node-agent/src/kfunc.rs): the
 * programs call these helper numbers, which no kernel has; the loader turns
 * each call into a call of the kernel function it stands for, or, where the
 * kernel lacks it, into "r0 = 0" on a path its global nt_kfuncs disables.
 */
enum nt_kfunc_mark {
	NT_MARK_RDONLY_CAST = 0x6e740001, /* void *bpf_rdonly_cast(void *, u32 btf_id) (6.2+) */
};

/* Bits of the global nt_kfuncs: the kernel functions the loader provided. */
enum nt_kfunc_bits {
	NT_KF_RDONLY_CAST = 0x1,
};

/* nt_slot.sk_arg and dev_arg */
enum nt_arg {
	NT_ARG_NONE = 0xff,   /* no such argument */
};

/* What one attached program slot needs to know, in the nt_slots array map. */
struct nt_slot {
	__u32 tracer_id;    /* 0 */
	__u8 skb_arg;       /* 4: argument index of the skb */
	__u8 sk_arg;        /* 5: argument index of a struct sock *, or NT_ARG_NONE */
	__u8 role;          /* 6: NT_ROLE_* */
	__u8 stack;         /* 7: 1 = collect a kernel stack */
	__u8 enabled;       /* 8 */
	__u8 ret;           /* 9: 1 = a return probe follows: stash the event */
	__u8 dev_arg;       /* 10: argument index of a struct net_device *, or NT_ARG_NONE */
	__u8 pad;
};                          /* 12 */

/* Key of nt_stash: the event of a function entry waiting for its return. */
struct nt_stash_key {
	__u64 pid_tgid;
	__u32 tracer_id;
	__u32 cpu;          /* for pid 0 (idle: softirqs on every CPU at once): CPU + 1; else 0 */
};

_Static_assert(sizeof(struct nt_slot) == 12, "nt_slot layout");

/* Indexes of the nt_stats per-CPU counters. */
enum nt_stat {
	NT_STAT_MATCHED = 0,       /* events produced (passed the filter) */
	NT_STAT_RB_FULL = 1,       /* events lost: ring buffer reservation failed */
	NT_STAT_SKB_MAP_FULL = 2,  /* skb-mode could not remember an skb */
	NT_STAT_STACK_FAIL = 3,    /* bpf_get_stack failed */
	NT_STAT_RATE_LIMITED = 4,  /* events suppressed by the rate limit */
	NT_STAT_BYTES_FAIL = 5,    /* events sent without the packet bytes asked for (NT_FL_BYTES) */
	NT_STAT_MAX = 6,           /* number of counters */
};

/*
 * Slot numbering: the first index in nt_slots of each family of entry
 * programs (node-agent/src/slots.rs `Family`). A family's size is the number
 * of its programs below (nt_a0_0 .. nt_a0_23, ...). kprobe and kprobe-multi
 * programs have no slots: they find their tracer in nt_funcs by address.
 *   0..23  family a0 (reads arg 0)       24..39 family a1 (args 0-1)
 *  40..47  family a2 (args 0-2)          48..51 family a3 (args 0-3)
 *  52..53  drop (kfree_skb signature)
 * Kernel functions:
 *  64..127 fentry a0   128..175 fentry a1   176..207 fentry a2
 * 208..215 fentry a3   216..223 fentry a4
 * 224..351 fexit      352..479 kretprobe
 */
enum nt_slot_base {
	NT_SLOT_BASE_A0 = 0,
	NT_SLOT_BASE_A1 = 24,
	NT_SLOT_BASE_A2 = 40,
	NT_SLOT_BASE_A3 = 48,
	NT_SLOT_BASE_DROP = 52,
	NT_SLOT_BASE_FE0 = 64,
	NT_SLOT_BASE_FE1 = 128,
	NT_SLOT_BASE_FE2 = 176,
	NT_SLOT_BASE_FE3 = 208,
	NT_SLOT_BASE_FE4 = 216,
	NT_SLOT_BASE_FEXIT = 224,
	NT_SLOT_BASE_KRET = 352,
	NT_SLOT_END = 480,         /* past the last family */
};

_Static_assert(NT_SLOT_END <= NT_MAX_SLOTS, "slots fit in nt_slots");

/*
 * Not read by any program: a global of this type puts every enum above into
 * the object's BTF (clang emits only the types that something uses), where
 * the Rust tests read the numbers. Each member is the type of one family.
 */
struct nt_abi_enums {
	enum nt_limits limits;
	enum nt_event_flags event_flags;
	enum nt_filter_flags filter_flags;
	enum nt_role role;
	enum nt_arg arg;
	enum nt_stat stat;
	enum nt_slot_base slot_base;
	enum nt_kfunc_mark kfunc_mark;
	enum nt_kfunc_bits kfunc_bits;
	enum nt_tunnel_kind tunnel_kind;
	enum nt_ct_info ct_info;
	enum nt_link link;
};

const volatile struct nt_abi_enums nt_abi_anchor __attribute__((used)) = {};

#endif
