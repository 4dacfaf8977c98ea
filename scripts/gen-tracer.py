#!/usr/bin/env python3
"""Writes tracer.json from the compact table below (run from the repo root).

Leaves: f(func, skb_idx, **opts) kernel function; t("cat/event", skb_idx, **opts) tracepoint.
opts: name, sk, dev, role, default (see the README's tracer file section).
"""
import json

def f(func, skb, **o): return dict(func=func, skb=skb, **o)
def t(tp, skb, **o): return dict(tp=tp, skb=skb, **o)
def g(name, desc, children, **o): return dict(name=name, desc=desc, **o, children=children)

tree = g("all", "trace the whole kernel network stack", [
  g("link", "link layer (L2) of the network stack", [
    g("link-in", "link layer (L2) of packet in", [
      f("napi_gro_receive", 1), f("enqueue_to_backlog", 0), f("netif_receive_generic_xdp", 0),
      f("xdp_do_generic_redirect", 1), f("generic_xdp_tx", 0), f("sch_handle_ingress", 0),
      f("__netif_receive_skb", 0),
      t("net/napi_gro_receive_entry", 0), t("net/napi_gro_frags_entry", 0),
      t("net/netif_rx_entry", 0), t("net/netif_rx", 0),
      t("net/netif_receive_skb_entry", 0), t("net/netif_receive_skb_list_entry", 0),
      t("net/netif_receive_skb", 0),
    ]),
    g("link-out", "link layer (L2) of packet out", [
      f("__dev_queue_xmit", 0), f("dev_hard_start_xmit", 0),
      t("net/net_dev_queue", 0), t("net/net_dev_start_xmit", 0, dev=1), t("net/net_dev_xmit", 0, dev=2),
    ]),
    g("sched", "TC (traffic control) and qdiscs", [
      f("tcf_classify", 0), f("sch_handle_egress", 0), f("cls_bpf_classify", 0), f("tcf_bpf_act", 0),
      t("qdisc/qdisc_enqueue", 2), t("qdisc/qdisc_dequeue", 3),
    ]),
    g("bridge", "software bridge", [
      f("br_handle_frame_finish", 2), f("br_forward", 1), f("__br_forward", 1),
      f("br_forward_finish", 2), f("br_pass_frame_up", 0), f("br_dev_xmit", 0),
      f("br_nf_pre_routing", 1, default=False), f("br_nf_forward_ip", 1, default=False),
    ]),
    g("vlan", "802.1q VLAN devices", [f("vlan_dev_hard_start_xmit", 0)]),
    g("vxlan", "VXLAN tunnels", [f("vxlan_rcv", 1), f("vxlan_xmit", 0), f("vxlan_xmit_one", 0)]),
    g("ipvlan", "ipvlan devices", [f("ipvlan_queue_xmit", 0), f("ipvlan_start_xmit", 0),
                                   f("ipvlan_process_v4_outbound", 0)]),
    g("bonding", "bonding devices", [f("bond_dev_queue_xmit", 1), f("bond_start_xmit", 0)]),
    g("veth", "virtual ethernet pairs", [f("veth_xmit", 0)]),
  ]),
  g("packet", "packet sockets (tcpdump, AF_PACKET)", [
    g("pkt-in", "packet socket receive", [f("tpacket_rcv", 0), f("packet_rcv", 0)]),
    g("pkt-out", "packet socket send", [f("packet_direct_xmit", 0)]),
  ]),
  g("netfilter", "netfilter hooks and tables", [
    f("nf_hook_slow", 0), f("ipt_do_table", 1), f("ip6t_do_table", 1), f("nft_do_chain_ipv4", 1, default=False),
    g("conntrack", "connection tracking and NAT", [
      f("nf_conntrack_in", 0), f("ipv4_confirm", 1), f("nf_confirm", 1),
      f("nf_nat_ipv4_pre_routing", 1), f("nf_nat_ipv4_local_fn", 1), f("nf_nat_ipv4_out", 1),
      f("nf_nat_inet_fn", 1),
    ], default=False),
  ]),
  g("ip", "network layer (L3)", [
    g("ip-in", "IP receive", [
      f("ip_rcv", 0), f("ip_rcv_core", 0), f("ip_rcv_finish", 2), f("ip_local_deliver", 0),
      f("ip_local_deliver_finish", 2), f("ip_forward", 0), f("ip_forward_finish", 2),
      f("ipv6_rcv", 0), f("ip6_rcv_core", 0), f("ip6_rcv_finish", 2), f("ip6_input", 0),
      f("ip6_forward", 0),
    ]),
    g("ip-out", "IP send", [
      f("__ip_queue_xmit", 1), f("ip_send_skb", 1), f("__ip_local_out", 2), f("ip_output", 2),
      f("ip_finish_output", 2), f("ip_finish_output_gso", 2), f("ip_finish_output2", 2),
      f("ip_fragment", 2, default=False), f("ip6_output", 2), f("ip6_finish_output", 2),
      f("ip6_finish_output2", 2), f("ip6_send_skb", 0), f("ip6_xmit", 1),
    ]),
    g("route", "routing decisions", [
      f("ip_route_input_slow", 0), f("ip_route_input_noref", 0), f("fib_validate_source", 0, default=False),
    ]),
    g("xfrm", "IPsec (xfrm, esp)", [
      f("xfrm4_rcv", 0), f("xfrm_input", 0), f("xfrm_output", 1), f("esp_input", 1), f("esp_output", 1),
    ], default=False),
  ]),
  g("tcp", "TCP (L4)", [
    g("tcp-in", "TCP receive", [
      f("tcp_v4_rcv", 0), f("tcp_v6_rcv", 0), f("tcp_v4_do_rcv", 1), f("tcp_rcv_established", 1),
      f("tcp_rcv_state_process", 1), f("tcp_queue_rcv", 1), f("tcp_data_queue_ofo", 1),
      t("tcp/tcp_probe", 1, sk=0), t("tcp/tcp_bad_csum", 0),
    ]),
    g("tcp-out", "TCP send", [
      f("__tcp_transmit_skb", 1), f("__tcp_retransmit_skb", 1), f("tcp_v4_send_reset", 1),
      t("tcp/tcp_retransmit_skb", 1, sk=0), t("tcp/tcp_send_reset", 1, sk=0),
    ]),
  ]),
  g("udp", "UDP (L4)", [
    g("udp-in", "UDP receive", [
      f("udp_rcv", 0), f("udp_unicast_rcv_skb", 1), f("udp_queue_rcv_skb", 1),
      f("__udp_queue_rcv_skb", 1), f("udpv6_rcv", 0),
      t("udp/udp_fail_queue_rcv_skb", 2, sk=1),
    ]),
    g("udp-out", "UDP send", [f("udp_send_skb", 0), f("udp_v6_send_skb", 0)]),
  ]),
  g("icmp", "ICMP", [
    g("icmp-in", "ICMP receive", [f("icmp_rcv", 0), f("icmp_echo", 0), f("icmpv6_rcv", 0)]),
    g("icmp-out", "ICMP errors sent", [t("icmp/icmp_send", 0)]),
  ]),
  g("sock", "socket queues", [
    f("sock_queue_rcv_skb_reason", 1), f("__sk_receive_skb", 1),
    t("sock/sock_rcvqueue_full", 1, sk=0), t("skb/skb_copy_datagram_iovec", 0),
  ]),
  g("life", "skb life: clone, consume, drop", [
    f("skb_clone", 0, role="clone"), t("skb/consume_skb", 0, role="consume"),
    t("skb/kfree_skb", 0, role="drop"),
  ]),
])

with open("tracer.json", "w") as fh:
    json.dump(tree, fh, indent=1)
    fh.write("\n")
