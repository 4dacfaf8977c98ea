#!/bin/bash
# Per-hit cost of the kernel-function backends against their floor (issue 9), run by the
# guest's /init (see lib.sh for the step protocol). Booted by scripts/bench-vm.sh (or
# `./dev vm 6.12 tests/vm/scenarios/cost.sh` with /bin/bench-floor in the initramfs:
# NT_VM_EXTRA); not part of tests/tests/vm.rs, which boots bench.sh.
#
# Two namespaces over one veth pair (ca 10.250.60.1 -- cb 10.250.60.2), the kernel's BPF
# statistics on (kernel.bpf_stats_enabled=1), and for each backend the same fixed set of
# core-kernel receive and transmit functions that nettrace traces, hooked by:
#   floor-<body>       bench-floor: empty programs of that type (--body empty), and the
#                      same with, step by step, the work nettrace does before its filter
#                      can reject (entry, lookup, read, read2; cast instead of the reads:
#                      see scripts/bench-floor.c);
#                      for kprobe-multi also floor-lookup-byip (--body lookup --by-ip:
#                      the function found by bpf_get_func_ip and a hash, not the cookie);
#   nettrace-nonmatch  nettrace --backend B -t FUNCS -p tcp --port 1 (matches nothing;
#                      for backend kprobe with --no-kprobe-multi: one kprobe per function);
#   nettrace-nonmatch-pr  the same with --probe-read (headers copied with
#                      bpf_probe_read_kernel, not read through bpf_rdonly_cast);
#   nettrace-match     nettrace --backend B -t FUNCS --addr 10.250.60.2 (every packet;
#                      its output counted by wc).
# Side by side, literally: the cases of one set are attached AT ONCE to the same functions
# (each process its own programs and links), so every hit of the load runs all of them, one
# after the other, under the same conditions; a busy host, which stretches the guest's clock
# at random, then weighs on all of them alike. Per backend and round two sets, each under
# one load (`ping -f -q -c COUNT` from ca to cb):
#   set "nonmatch": nettrace-nonmatch and every floor-<body>;
#   set "match":    nettrace-match and floor-empty.
# The counters are the run_cnt and run_time_ns of the programs each process holds, read
# from /proc/PID/fdinfo before and after the load. One line per case and load:
#   COST backend=B set=S case=C round=R programs=P hooks=K hits=H packets=N hits_per_packet=X ns_per_hit=Y ...
# and, for the floors with one program per function, the hits of each:
#   HITS backend=B set=S case=C round=R FUNC=H ...
#
# nettrace's kprobe backend attaches core-kernel functions through kprobe-multi links
# wherever the kernel has fprobe (6.12 does); backend "kprobe" (plain kprobes, one perf
# event each, as nettrace attaches module functions and every function on kernels without
# fprobe) runs it with --no-kprobe-multi.
#
# Settings from the kernel command line (NT_VM_APPEND): nt_cost_count=N pings (10000),
# nt_cost_rounds=R (1), nt_cost_backends=a,b (kprobe-multi,kprobe,fentry),
# nt_cost_bodies=a,b (empty,entry,lookup,read,read2,cast).
. /vm/lib.sh

FLOOR=${FLOOR:-/bin/bench-floor}
# Every one of these runs once per packet of the load on 6.12 (ip_send_skb and ip_rcv_finish,
# also in nettrace's tree, are inlined on this path there and never fire).
FUNCS=${COST_FUNCS:-"__ip_local_out ip_output ip_finish_output2 __dev_queue_xmit dev_hard_start_xmit
enqueue_to_backlog __netif_receive_skb ip_rcv ip_rcv_core ip_local_deliver ip_local_deliver_finish
icmp_rcv"}
FUNCS=$(echo $FUNCS)
FUNCS_COMMA=$(echo "$FUNCS" | tr ' ' ',')
DST=10.250.60.2

cmdline_opt() { # NAME DEFAULT
    _v=$(tr ' ' '\n' <"${COST_CMDLINE:-/proc/cmdline}" | sed -n "s/^$1=//p" | tail -n1)
    echo "${_v:-$2}"
}
COUNT=$(cmdline_opt nt_cost_count 10000)
ROUNDS=$(cmdline_opt nt_cost_rounds 1)
BACKENDS=$(cmdline_opt nt_cost_backends kprobe-multi,kprobe,fentry | tr ',' ' ')
BODIES=$(cmdline_opt nt_cost_bodies empty,entry,lookup,read,read2,cast | tr ',' ' ')

topo() {
    set -e
    ns_new ca
    ns_new cb
    ip -n ca link add c0 type veth peer name c1 netns cb
    ip -n ca addr add 10.250.60.1/24 dev c0
    ip -n cb addr add $DST/24 dev c1
    ip -n ca link set c0 up
    ip -n cb link set c1 up
    # ARP resolved before any load
    ip netns exec ca ping -c 1 -W 2 $DST
}

stats_on() {
    echo 1 >/proc/sys/kernel/bpf_stats_enabled
    echo "kernel.bpf_stats_enabled=$(cat /proc/sys/kernel/bpf_stats_enabled)"
    echo "count=$COUNT rounds=$ROUNDS backends=$BACKENDS bodies=$BODIES"
    echo "funcs=$FUNCS"
}

# snap PID: "prog_id run_cnt run_time_ns" per program fd PID holds (link fds name a
# prog_id too, but carry no counters).
snap() {
    for _f in /proc/$1/fdinfo/*; do
        awk '/^prog_id:/ { id = $2 } /^run_cnt:/ { c = $2 } /^run_time_ns:/ { t = $2 }
            END { if (id != "" && c != "") print id, c, t }' "$_f" 2>/dev/null
    done | sort -u -k1,1n
}

# wait_ready FILE PATTERN PID SECONDS
wait_ready() {
    _i=0
    while [ "$_i" -lt $(($4 * 10)) ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        alive "$3" || return 1
        usleep 100000
        _i=$((_i + 1))
    done
    return 1
}

# stop PID: SIGINT, then SIGKILL after NT_DETACH_TIMEOUT seconds.
stop() {
    kill -INT "$1" 2>/dev/null
    _i=0
    while alive "$1"; do
        if [ "$_i" -ge $((NT_DETACH_TIMEOUT * 10)) ]; then
            kill -KILL "$1" 2>/dev/null
            echo "killed $1"
            break
        fi
        usleep 100000
        _i=$((_i + 1))
    done
    wait "$1" 2>/dev/null
}

declare -A PID ATT DET WC

# start_case BACKEND CASE: starts what CASE names (files /tmp/c.CASE.*), waits until it
# is attached; sets PID[CASE] and ATT[CASE] (seconds to attach).
start_case() {
    local be=$1 c=$2 d=/tmp/c.$2 t0 pid ready where body byip ntbe filter out extra
    rm -f "$d".*
    t0=$(uptime_s)
    case $c in
    floor-*)
        body=${c#floor-} byip=
        [ "$body" = lookup-byip ] && body=lookup byip=--by-ip
        # shellcheck disable=SC2086 # FUNCS is a word list
        "$FLOOR" --body "$body" $byip --type "$(echo "$be" | tr - _)" $FUNCS >"$d.out" 2>"$d.err" &
        pid=$! ready="^ready" where=$d.out
        ;;
    nettrace-*)
        ntbe=$be filter="-p tcp --port 1" out=$d.out extra=
        [ "$c" = nettrace-nonmatch-pr ] && extra=--probe-read
        [ "$be" = kprobe-multi ] && ntbe=kprobe
        [ "$be" = kprobe ] && extra="$extra --no-kprobe-multi"
        if [ "$c" = nettrace-match ]; then
            filter="--addr $DST" out=$d.fifo
            mkfifo "$d.fifo"
            wc -l <"$d.fifo" >"$d.count" &
            WC[$c]=$!
        fi
        # shellcheck disable=SC2086 # word lists
        $NT --backend "$ntbe" -v -t "$FUNCS_COMMA" $filter $extra >"$out" 2>"$d.err" &
        pid=$! ready="begin tracing" where=$d.err
        ;;
    esac
    if ! wait_ready "$where" "$ready" "$pid" "$NT_ATTACH_TIMEOUT"; then
        echo "COST backend=$be set=$SET case=$c round=$ROUND error=did-not-start"
        cat "$d.err"
        stop "$pid"
        return 1
    fi
    PID[$c]=$pid
    ATT[$c]=$(elapsed "$t0" "$(uptime_s)")
}

# measure_set BACKEND SET ROUND CASE...: attaches every CASE, runs one load, prints a COST
# line per case.
measure_set() {
    local be=$1 c d t0 t1 td prc recv hooks events started=()
    SET=$2 ROUND=$3
    shift 3
    for c in "$@"; do
        start_case "$be" "$c" && started+=("$c")
    done
    [ ${#started[@]} -gt 0 ] || return 1
    for c in "${started[@]}"; do snap "${PID[$c]}" >"/tmp/c.$c.s0"; done
    t0=$(uptime_s)
    ip netns exec ca ping -f -q -c "$COUNT" $DST >/tmp/ping.out 2>&1
    prc=$?
    t1=$(uptime_s)
    for c in "${started[@]}"; do snap "${PID[$c]}" >"/tmp/c.$c.s1"; done
    for c in "${started[@]}"; do
        td=$(uptime_s)
        stop "${PID[$c]}"
        DET[$c]=$(elapsed "$td" "$(uptime_s)")
    done
    recv=$(sed -n 's/.*packets transmitted, \([0-9]*\) received.*/\1/p' /tmp/ping.out)
    for c in "${started[@]}"; do
        d=/tmp/c.$c
        hooks=$(sed -n 's/^ready //p' "$d.out" 2>/dev/null | head -n1)
        events=
        case $c in
        nettrace-*)
            hooks=$(sed -n 's/^attached \([0-9]*\) of .*/\1/p' "$d.err" | head -n1)
            grep -v '^begin tracing' "$d.err"
            if [ -n "${WC[$c]:-}" ]; then
                wait "${WC[$c]}"
                events=" events=$(cat "$d.count" 2>/dev/null)"
            fi
            ;;
        *) cat "$d.err" ;;
        esac
        awk -v be="$be" -v set="$SET" -v cs="$c" -v r="$ROUND" -v n="$((COUNT * 2))" \
            -v hooks="${hooks:-0}" -v prc="$prc" -v recv="${recv:-0}" -v extra="$events" \
            -v att="${ATT[$c]}" -v load="$(elapsed "$t0" "$t1")" -v det="${DET[$c]}" '
            NR == FNR { c0[$1] = $2; t0[$1] = $3; next }
            { dc = $2 - c0[$1]; dt = $3 - t0[$1]; if (dc > 0) { p++; h += dc; t += dt } }
            END {
                printf "COST backend=%s set=%s case=%s round=%s programs=%d hooks=%s hits=%d run_time_ns=%d packets=%d replies=%s ping_rc=%s hits_per_packet=%.2f ns_per_hit=%.1f attach_s=%s load_s=%s detach_s=%s%s\n",
                    be, set, cs, r, p, hooks, h, t, n, recv, prc, n ? h / n : 0, h ? t / h : 0, att, load, det, extra
            }' "$d.s0" "$d.s1"
        # the floor loads one program per function in FUNCS order (ascending ids)
        case $be/$c in
        kprobe-multi/* | */nettrace-*) ;;
        *)
            awk -v be="$be" -v set="$SET" -v cs="$c" -v r="$ROUND" -v funcs="$FUNCS" '
                NR == FNR { c0[$1] = $2; next }
                { id[++n] = $1; d[n] = $2 - c0[$1] }
                END {
                    k = split(funcs, f, " ")
                    line = "HITS backend=" be " set=" set " case=" cs " round=" r
                    for (i = 1; i <= k && i <= n; i++) line = line " " f[i] "=" d[i]
                    print line
                }' "$d.s0" "$d.s1"
            ;;
        esac
    done
    grep -E 'transmitted|rtt' /tmp/ping.out
}

step topo-cost topo
step stats-on stats_on
# The first load after boot warms caches; not measured.
step warmup ip netns exec ca ping -f -q -c "$COUNT" $DST

r=1
while [ "$r" -le "$ROUNDS" ]; do
    for be in $BACKENDS; do
        cases="nettrace-nonmatch nettrace-nonmatch-pr"
        for b in $BODIES; do
            cases="$cases floor-$b"
            [ "$b" = lookup ] && [ "$be" = kprobe-multi ] && cases="$cases floor-lookup-byip"
        done
        # shellcheck disable=SC2086 # a word list
        step "cost-$be-nonmatch-$r" measure_set "$be" nonmatch "$r" $cases
        step "cost-$be-match-$r" measure_set "$be" match "$r" nettrace-match floor-empty
    done
    r=$((r + 1))
done
