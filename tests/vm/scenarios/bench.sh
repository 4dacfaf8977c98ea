#!/bin/bash
# The VM bench: run by the guest's /init after the modules are loaded (see lib.sh for the
# step protocol). tests/tests/vm.rs boots every kernel with this file and asserts each step.
#
# Addresses (guest only, inside namespaces; the guest has no network device):
#   t: bridged 10.250.10.0/24 (tracepoints)
#   f: bridged 10.250.20.0/24 with an ACCEPT rule in B (function backends: path, clone)
#   d: bridged 10.250.30.0/24 with `iptables -A INPUT -p icmp -j DROP` in B
#   r: routed  10.250.40.0/24 | 10.250.41.0/24, VIP 10.250.49.100 DNATed to 10.250.41.2
#   g: Geneve VNI 50 over 10.250.50.0/24, 10.250.51.0/24 inside
#   i: IP-in-IP over 10.250.52.0/24, 10.250.53.1 <-> 10.250.53.2 inside
#
# How the clone is made: with the bridge device in promiscuous mode, br_handle_frame_finish
# passes every forwarded frame up to br0 too (local_rcv), so br_forward() hands a clone
# (deliver_clone -> skb_clone) to the egress port and the original goes up the bridge
# device. That is deterministic for every forwarded ICMP packet on 6.1 and 6.12, needs no
# packet socket and no extra tool.
. /vm/lib.sh

# ret_pairs BACKEND: traces ip_rcv with --ret under two paced ping flows whose receive side
# is steered (RPS) to the other CPU, then prints one line:
#   ret-pairs entries=N returns=N pid0=N keys=N unpaired=N
# where a key is one skb address with one packet summary; unpaired counts the keys whose
# entries and returns differ in number (a return emitted for another CPU's entry).
ret_pairs() {
    _be=$1
    ip netns exec tb sh -c 'echo 2 > /sys/class/net/b0/queues/rx-0/rps_cpus' || return 1
    ip netns exec fb sh -c 'echo 1 > /sys/class/net/b0/queues/rx-0/rps_cpus' || return 1
    $NT --backend "$_be" -t ip_rcv --ret -p icmp -o json >/tmp/ret.json 2>/tmp/ret.err &
    _pid=$!
    _i=0
    while ! grep -q "begin tracing" /tmp/ret.err 2>/dev/null; do
        alive "$_pid" && [ "$_i" -lt $((NT_ATTACH_TIMEOUT * 10)) ] || { cat /tmp/ret.err; return 1; }
        usleep 100000
        _i=$((_i + 1))
    done
    # busybox's taskset runs its own applet for a bare `ping`: name Debian's by its path.
    _ping=$(readlink -f /bin/ping)
    ip netns exec ta taskset -c 0 "$_ping" -q -c 600 -i 0.003 10.250.10.2 >/dev/null &
    _p1=$!
    ip netns exec fa taskset -c 1 "$_ping" -q -c 600 -i 0.003 10.250.20.2 >/dev/null
    wait $_p1
    sleep 1
    kill -INT "$_pid"
    wait "$_pid"
    _rc=$?
    ip netns exec tb sh -c 'echo 0 > /sys/class/net/b0/queues/rx-0/rps_cpus'
    ip netns exec fb sh -c 'echo 0 > /sys/class/net/b0/queues/rx-0/rps_cpus'
    grep -v '^{' /tmp/ret.err
    awk '/"type":"event"/ {
            r = index($0, "\"ret\":") > 0
            match($0, /"skb":"[0-9a-f]+"/); k = substr($0, RSTART, RLENGTH)
            match($0, /"summary":"[^"]*"/); k = k substr($0, RSTART, RLENGTH)
            if (r) { ret[k]++; nr++ } else { ent[k]++; ne++ }
            if (index($0, "\"pid\":0,") > 0) p0++
        }
        END {
            for (k in ent) { n++; if (ret[k] != ent[k]) bad++ }
            for (k in ret) if (!(k in ent)) { n++; bad++ }
            printf "ret-pairs entries=%d returns=%d pid0=%d keys=%d unpaired=%d\n", ne, nr, p0, n, bad
        }' /tmp/ret.json
    return $_rc
}

PING="ping -c 1 -W 2"
BACKENDS=${BACKENDS:-fentry kprobe}

step topo-t topo_bridged t 10
step topo-f topo_bridged f 20
step topo-d topo_bridged d 30
step topo-r topo_routed r 40
# An ACCEPT rule in f's B registers the filter INPUT hook there, so that the request goes
# through nf_hook_slow (without any hook in a namespace the kernel never calls it).
step topo-g topo_tunnel g 50 geneve
step topo-i topo_tunnel i 52 ipip
step iptables-f ip netns exec fb iptables -w -A INPUT -p icmp -j ACCEPT
step iptables-d ip netns exec db iptables -w -A INPUT -p icmp -j DROP
step iptables-r ip netns exec rm iptables -w -t nat -A PREROUTING -d 10.250.49.100 -j DNAT \
    --to-destination 10.250.41.2
# Prime the ARP caches and the bridge FDBs, so that the traced pings are plain IP.
step warmup bash -c "ip netns exec ta $PING 10.250.10.2; ip netns exec fa $PING 10.250.20.2;
    ip netns exec ra $PING 10.250.41.2; ip netns exec da $PING 10.250.30.2;
    ip netns exec ga $PING 10.250.51.2; ip netns exec ia $PING 10.250.53.2; true"

# 1. Tracepoints only (what the host can do too): the icmp_bridge scenario.
step tracepoint-icmp trace "-p icmp --addr 10.250.10.2 --detail" \
    "ip netns exec ta $PING 10.250.10.2" 2

# 1b. Overlays this host kernel lacks (Geneve, IP-in-IP are modules here): the tunnel's
#     outer packet before the inner one, by the inner destination.
step tunnel-geneve trace "--backend tracepoint -p icmp --addr 10.250.51.2 --detail" \
    "ip netns exec ga $PING 10.250.51.2" 2
step tunnel-ipip trace "--backend tracepoint -p icmp --addr 10.250.53.2 --detail" \
    "ip netns exec ia $PING 10.250.53.2" 2

# 2. The function backends.
for be in $BACKENDS; do
    # a. the request's path through B, with return values (the whole tree: `-v` shows what
    #    attaches on this kernel, and how long attaching ~80 tracers takes)
    step "$be-icmp" trace "--backend $be -v -p icmp --addr 10.250.20.2 --timeline --detail --ret -c 2" \
        "ip netns exec fa $PING 10.250.20.2" 5
    # b-d trace a few groups only: attaching and detaching cost tens of seconds under TCG.
    # b. a clone made by the promiscuous bridge joins its parent's block
    ip -n fm link set br0 promisc on
    step "$be-clone" trace "--backend $be -v -t link,bridge,ip-in,icmp-in,life -p icmp --addr 10.250.20.2 --timeline --detail --ret" \
        "ip netns exec fa $PING 10.250.20.2" 3
    ip -n fm link set br0 promisc off
    # c. iptables DROP in B
    step "$be-drop" trace "--backend $be -v -t netfilter,ip-in,life -p icmp --addr 10.250.30.2 --detail" \
        "ip netns exec da ping -c 1 -W 1 10.250.30.2" 2
    # d. skb-mode through DNAT
    step "$be-dnat" trace "--backend $be -v -t netfilter,ip-in,link-out,life -p icmp --addr 10.250.49.100 --skb-mode --timeline --detail" \
        "ip netns exec ra $PING 10.250.49.100" 3
    # e. --ret pairs each return with its own entry while softirqs run in the idle loop
    #    (pid 0) on both CPUs at once: RPS hands t's and f's receive work in B to the CPU
    #    that is not sending, which is idle between two pings.
    step "$be-ret-idle" ret_pairs "$be"
done
# f. --no-kprobe-multi: one kprobe per function, also where a kprobe-multi link would do
#    (6.12), with their return probes.
step kprobe-single trace "--backend kprobe --no-kprobe-multi -v -t ip-in,icmp-in -p icmp --addr 10.250.20.2 --ret" \
    "ip netns exec fa $PING 10.250.20.2" 2

# 3. The host suite's tests whose expectations come from probing the kernel (what attaches),
#    on this kernel: /bin/nt-test-NAME, built static by tests/tests/vm.rs.
for t in /bin/nt-test-*; do
    [ -x "$t" ] || continue
    step "suite-${t#/bin/nt-test-}" env NETTRACE_BIN=/bin/nettrace RUST_BACKTRACE=0 "$t" --test-threads=1
done
