/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel types nettrace reads, declared by hand for CO-RE.
 *
 * Only the fields we read are listed, in any order: with
 * preserve_access_index the loader relocates every access against the
 * running kernel's BTF (fields nested in anonymous unions there are found by
 * name). Nothing here has to match a kernel's real layout.
 */
#ifndef NT_CORE_H
#define NT_CORE_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	unsigned short hard_header_len;
	possible_net_t nd_net;
};

struct in6_addr {
	__u8 bytes[16]; /* a union in the kernel; read whole */
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
};

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	unsigned int data_len; /* bytes of len in page fragments, past the linear part */
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
	unsigned long _nfct; /* conntrack entry | ctinfo; absent without CONFIG_NF_CONNTRACK */
};

/*
 * The conntrack entry (net/netfilter). Only in vmlinux's BTF where conntrack
 * is built in: readers check bpf_core_type_exists(struct nf_conn) first.
 */
union nf_inet_addr {
	__u32 all[4];
};

union nf_conntrack_man_proto {
	__be16 all;
};

struct nf_conntrack_man {
	union nf_inet_addr u3;
	union nf_conntrack_man_proto u;
	__u16 l3num;
};

struct nf_conntrack_tuple {
	struct nf_conntrack_man src;
	struct {
		union nf_inet_addr u3;
		union {
			__be16 all;
		} u;
		__u8 protonum;
	} dst;
};

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
};

struct nf_conn {
	struct nf_conntrack_tuple_hash tuplehash[2]; /* IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY */
	unsigned long status;
};

#pragma clang attribute pop

/*
 * Header layouts, fixed by the wire formats (no CO-RE needed), read through
 * bpf_rdonly_cast: the ___nt suffix makes bpf_core_type_id_kernel() name the
 * kernel's iphdr, ipv6hdr, ... whose BTF the verifier checks each load
 * against (member by member: so each load here is one whole member there,
 * and IPv6 addresses are read as the kernel's 32-bit words).
 */
struct iphdr___nt {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr___nt {
	__u8 ver_prio;
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

struct tcphdr___nt {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__be16 window;
	__u16 check;
	__be16 urg_ptr;
};

struct udphdr___nt {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

/* An 8-byte VXLAN or Geneve header, read as the kernel's udphdr (same size,
 * four 16-bit words; vmlinux may lack the tunnel types when they are modules). */
struct udphdr___tun {
	__be16 w0;
	__be16 w1;
	__be16 w2;
	__be16 w3;
};

struct ethhdr___nt {
	__u8 h_dest[6];
	__u8 h_source[6];
	__be16 h_proto;
};

struct icmphdr___nt {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__be16 id;
	__be16 sequence;
};

#endif
