# Helpers for the scenario scripts run by the guest's /init (under Debian's bash; /init
# itself sources this file under busybox ash for `step`, so keep it POSIX sh).
# Installed in the initramfs as /vm/lib.sh; a scenario starts with `. /vm/lib.sh`.
#
# Output protocol on the console (parsed by tests/tests/vm.rs):
#   === BEGIN <name> ===
#   ... the step's output; `trace` prints sections headed `--- <section> ---`
#   === END <name> rc=<exit code> ===
#   === TIME <name> start=<uptime s> end=<uptime s> ===
#
# Everything happens inside network namespaces of the guest, which has no network device
# of its own (qemu -nic none): no packet can leave it.

NT=${NT:-/bin/nettrace}
# Seconds to wait for `begin tracing` (attaching ~100 kprobes under TCG is slow).
NT_ATTACH_TIMEOUT=${NT_ATTACH_TIMEOUT:-240}
# Seconds to wait for nettrace to exit after SIGINT (detaching is slower than attaching).
NT_DETACH_TIMEOUT=${NT_DETACH_TIMEOUT:-240}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# alive PID: the process exists and is not a zombie (ash reaps background jobs lazily).
alive() {
    [ -r "/proc/$1/stat" ] || return 1
    _st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$_st" ] && [ "$_st" != Z ]
}

# step NAME COMMAND [ARGS...]: runs COMMAND (a shell function or program) between markers.
step() {
    _name=$1
    shift
    _t0=$(uptime_s)
    echo "=== BEGIN $_name ==="
    # A subshell: a step that fails (set -e in the topology builders) ends only itself.
    ("$@") >/tmp/step.out 2>&1
    _rc=$?
    cat /tmp/step.out
    _t1=$(uptime_s)
    echo "=== END $_name rc=$_rc ==="
    echo "=== TIME $_name start=$_t0 end=$_t1 ==="
    return 0
}

# ifindex NS DEV -> "ifindex:DEV" (the --detail interface column)
iface_label() {
    _i=$(ip -n "$1" -o link show dev "$2" | cut -d: -f1)
    echo "$_i:$2"
}

# Per-namespace setup shared by the topologies: lo up, IPv6 off (less noise in traces).
ns_new() {
    ip netns add "$1" || return 1
    ip netns exec "$1" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;
        echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6' 2>/dev/null
    ip -n "$1" link set lo up
}

# topo_bridged NAME ID: namespaces NAMEa, NAMEb, NAMEm; in NAMEm bridge br0 with ports
# pa (peer a0 in NAMEa, 10.250.ID.1/24) and pb (peer b0 in NAMEb, 10.250.ID.2/24).
# Prints `topo NAME ROLE LABEL` lines: roles a, mid_a, mid_b, b, br.
topo_bridged() {
    _n=$1 _id=$2
    set -e
    ns_new "${_n}a"
    ns_new "${_n}b"
    ns_new "${_n}m"
    ip -n "${_n}m" link add pa type veth peer name a0 netns "${_n}a"
    ip -n "${_n}m" link add pb type veth peer name b0 netns "${_n}b"
    ip -n "${_n}m" link add br0 type bridge
    ip -n "${_n}m" link set pa master br0
    ip -n "${_n}m" link set pb master br0
    for d in br0 pa pb; do ip -n "${_n}m" link set "$d" up; done
    ip -n "${_n}a" addr add "10.250.$_id.1/24" dev a0
    ip -n "${_n}a" link set a0 up
    ip -n "${_n}b" addr add "10.250.$_id.2/24" dev b0
    ip -n "${_n}b" link set b0 up
    set +e
    echo "topo $_n a $(iface_label "${_n}a" a0)"
    echo "topo $_n mid_a $(iface_label "${_n}m" pa)"
    echo "topo $_n mid_b $(iface_label "${_n}m" pb)"
    echo "topo $_n b $(iface_label "${_n}b" b0)"
    echo "topo $_n br $(iface_label "${_n}m" br0)"
}

# topo_routed NAME ID: A (10.250.ID.2) -- router NAMEm (10.250.ID.1 | 10.250.ID+1.1) --
# B (10.250.ID+1.2), forwarding on in the router, default routes via the router.
topo_routed() {
    _n=$1 _id=$2 _id2=$(($2 + 1))
    set -e
    ns_new "${_n}a"
    ns_new "${_n}b"
    ns_new "${_n}m"
    ip -n "${_n}m" link add pa type veth peer name a0 netns "${_n}a"
    ip -n "${_n}m" link add pb type veth peer name b0 netns "${_n}b"
    ip netns exec "${_n}m" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    ip -n "${_n}m" addr add "10.250.$_id.1/24" dev pa
    ip -n "${_n}m" addr add "10.250.$_id2.1/24" dev pb
    ip -n "${_n}m" link set pa up
    ip -n "${_n}m" link set pb up
    ip -n "${_n}a" addr add "10.250.$_id.2/24" dev a0
    ip -n "${_n}a" link set a0 up
    ip -n "${_n}a" route add default via "10.250.$_id.1"
    ip -n "${_n}b" addr add "10.250.$_id2.2/24" dev b0
    ip -n "${_n}b" link set b0 up
    ip -n "${_n}b" route add default via "10.250.$_id2.1"
    set +e
    echo "topo $_n a $(iface_label "${_n}a" a0)"
    echo "topo $_n mid_a $(iface_label "${_n}m" pa)"
    echo "topo $_n mid_b $(iface_label "${_n}m" pb)"
    echo "topo $_n b $(iface_label "${_n}b" b0)"
}

# topo_tunnel NAME ID KIND: "nodes" NAMEa and NAMEb joined by veth u0 (10.250.ID.1/24,
# 10.250.ID.2/24), and a KIND tunnel device tun0 over it in each (KIND geneve: VNI ID, L2;
# ipip: point to point), with 10.250.ID+1.1 and .2 on the tunnel devices.
# Prints `topo NAME ROLE LABEL` lines: roles a_u, b_u (underlay), a_tun, b_tun.
topo_tunnel() {
    _n=$1 _id=$2 _kind=$3 _id2=$(($2 + 1))
    set -e
    ns_new "${_n}a"
    ns_new "${_n}b"
    ip -n "${_n}a" link add u0 type veth peer name u0 netns "${_n}b"
    for s in a:1:2 b:2:1; do
        _ns=${_n}${s%%:*} _me=${s#*:} _me=${_me%%:*} _peer=${s##*:}
        ip -n "$_ns" addr add "10.250.$_id.$_me/24" dev u0
        ip -n "$_ns" link set u0 up
        case $_kind in
        geneve)
            ip -n "$_ns" link add tun0 type geneve id "$_id" remote "10.250.$_id.$_peer"
            ip -n "$_ns" addr add "10.250.$_id2.$_me/24" dev tun0
            ;;
        ipip)
            ip -n "$_ns" link add tun0 type ipip local "10.250.$_id.$_me" remote "10.250.$_id.$_peer"
            ip -n "$_ns" addr add "10.250.$_id2.$_me/32" peer "10.250.$_id2.$_peer" dev tun0
            ;;
        esac
        ip -n "$_ns" link set tun0 up
    done
    set +e
    echo "topo $_n a_u $(iface_label "${_n}a" u0)"
    echo "topo $_n b_u $(iface_label "${_n}b" u0)"
    echo "topo $_n a_tun $(iface_label "${_n}a" tun0)"
    echo "topo $_n b_tun $(iface_label "${_n}b" tun0)"
}

# trace "NETTRACE ARGS" "TRAFFIC COMMAND" [SETTLE]
#
# Starts nettrace in the background, waits for `begin tracing` on its stderr, runs the
# traffic command (a shell command line), then waits up to SETTLE seconds (default 3) for
# nettrace to exit by itself (-c N), sends SIGINT, and waits for it to exit. Prints sections
#   --- stdout ---, --- stderr ---, --- traffic rc=N ---, --- timing attach=S wait=S detach=S began=0|1 killed=0|1 ---
# and returns nettrace's exit status.
trace() {
    _args=$1 _traffic=$2 _settle=${3:-3}
    rm -f /tmp/nt.out /tmp/nt.err /tmp/traffic.out
    _t0=$(uptime_s)
    # shellcheck disable=SC2086 # word splitting of the argument string is intended
    $NT $_args >/tmp/nt.out 2>/tmp/nt.err &
    _pid=$!
    _began=0
    _i=0
    while [ "$_i" -lt $((NT_ATTACH_TIMEOUT * 10)) ]; do
        if grep -q "begin tracing" /tmp/nt.err 2>/dev/null; then
            _began=1
            break
        fi
        alive "$_pid" || break
        usleep 100000
        _i=$((_i + 1))
    done
    _t1=$(uptime_s)
    _trc=-1
    if [ "$_began" = 1 ]; then
        bash -c "$_traffic" >/tmp/traffic.out 2>&1
        _trc=$?
    fi
    _t2=$(uptime_s)
    _i=0
    while [ "$_i" -lt $((_settle * 10)) ] && alive "$_pid"; do
        usleep 100000
        _i=$((_i + 1))
    done
    _t3=$(uptime_s)
    kill -INT "$_pid" 2>/dev/null
    _killed=0
    _i=0
    while alive "$_pid"; do
        if [ "$_i" -ge $((NT_DETACH_TIMEOUT * 10)) ]; then
            kill -KILL "$_pid" 2>/dev/null
            _killed=1
            break
        fi
        usleep 100000
        _i=$((_i + 1))
    done
    wait "$_pid"
    _rc=$?
    _t4=$(uptime_s)
    echo "--- stdout ---"
    cat /tmp/nt.out
    echo "--- stderr ---"
    cat /tmp/nt.err
    echo "--- traffic rc=$_trc ---"
    cat /tmp/traffic.out 2>/dev/null
    echo "--- timing attach=$(elapsed "$_t0" "$_t1") traffic=$(elapsed "$_t1" "$_t2") wait=$(elapsed "$_t2" "$_t3") stop=$(elapsed "$_t3" "$_t4") began=$_began killed=$_killed ---"
    return $_rc
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Facts about the running kernel, for the report and for the assertions.
kernel_facts() {
    echo "uname $(uname -r)"
    [ -e /sys/kernel/btf/vmlinux ] && echo "btf yes" || echo "btf no"
    [ -e /sys/bus/event_source/devices/kprobe/type ] && echo "kprobe_pmu yes" || echo "kprobe_pmu no"
    [ -e /sys/kernel/tracing/available_filter_functions ] \
        && echo "ftrace_functions $(wc -l </sys/kernel/tracing/available_filter_functions)" \
        || echo "ftrace_functions none"
    # One read of each list: they are large and slow to generate under TCG.
    cat /sys/kernel/tracing/available_filter_functions >/tmp/aff 2>/dev/null
    for f in ip_rcv ip_rcv_core ip_rcv_finish ip_local_deliver ip_local_deliver_finish icmp_rcv \
        nf_hook_slow skb_clone __dev_queue_xmit br_forward __br_forward br_handle_frame_finish \
        kfree_skb_reason sk_skb_reason_drop consume_skb; do
        echo "$f"
    done >/tmp/want
    awk 'NR == FNR { want[$1] = 1; next } { sub(/ .*/, "", $0); if ($0 in want) got[$0] = 1 }
        END { for (f in want) print "func " f (f in got ? " traceable" : " not-traceable") }' \
        /tmp/want /tmp/aff | sort
    echo "lockdown $(cat /sys/kernel/security/lockdown 2>/dev/null || echo n/a)"
}
