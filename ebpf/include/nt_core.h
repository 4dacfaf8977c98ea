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
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
};

#pragma clang attribute pop

#endif
