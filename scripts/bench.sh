#!/usr/bin/env bash
# End-to-end benchmarks of nettrace, side by side with bpftrace; rewrites
# BENCHMARKS.md at the top of the repository.
#
#   sudo scripts/bench.sh            # about 8 to 11 minutes on a 2-core machine
#
# What it measures (issues 5 and 9; every figure is the median of
# NT_BENCH_RUNS alternating runs and a ratio against baselines measured in
# the same run):
#   a. datapath cost: two network namespaces over veth, UDP 64-byte frames at
#      the sender's highest rate and a TCP 1-byte request/response load, with
#      no tracing; the floor (an empty program of the same type on each hook
#      nettrace attaches, loaded by scripts/bench-floor.c: the cost of the
#      mechanism itself); nettrace with every tracer (-t all) and a filter
#      matching nothing by address, by port (-p tcp --port 1) and by network
#      namespace (--netns of a third namespace that carries no traffic);
#      nettrace matching every packet printing to a file; and bpftrace on the
#      same tracepoints with the same filter, matching nothing and printing.
#      Every rate is reported as a ratio to the untraced rate and to the
#      floor's rate of the same round. Then, in shorter loads of their own
#      with the kernel's BPF statistics on (what kernel.bpf_stats_enabled=1
#      does, but held by `bench-floor --stats` through BPF_ENABLE_STATS, so
#      nothing is left on, nor switched off for others; their two clock reads
#      per program run are a visible cost, so the rates are measured without
#      them), the run_cnt and run_time_ns of the programs the tracer process
#      holds (found through /proc/PID/fdinfo and bpftool's pids) give BPF
#      program runs ("hits") per packet and ns per hit for each case.
#      The floor's hooks and program types are those nettrace reports with -v
#      (-t all) on this kernel, checked against bpftool.
#   b. event pipeline: the highest event rate delivered with zero loss (text
#      and JSON to a file), found by raising a paced UDP load; beyond it, the
#      accounting check produced = delivered + lost + dropped by the writer (JSON "lost" record).
#   c. start and stop, timed on the launches of (a): launch to "begin
#      tracing", SIGINT to exit (bpftrace's BEGIN and exit as the baseline);
#      peak RSS (VmHWM) during (b).
#   d. userspace cost per event: `cargo bench -p nettrace-common`.
# Benchmarks never fail on a number: the exit status is non-zero only when
# the machine cannot run them (not root, no network namespaces, no build).
#
# Environment: NT_BENCH_RUNS (3), NT_BENCH_SECS (seconds per load, 3),
# NT_BENCH_STATS_SECS (seconds per load with bpf_stats on, 1; 0: none),
# NT_BENCH_NO_BUILD=1 (use the existing target/release/nettrace),
# NT_BENCH_BIN (measure this nettrace binary instead; implies no build),
# NT_BENCH_SKIP="cargo" (skip parts: any of datapath pipeline cargo),
# NT_BENCH_OUT (output file, default BENCHMARKS.md).
#
# Everything runs inside two network namespaces created here (10.250.77.0/24)
# and removed at exit with the idle third one; no traffic leaves them.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${NT_BENCH_RUNS:-3}
SECS=${NT_BENCH_SECS:-3}
STATS_SECS=${NT_BENCH_STATS_SECS:-1}
SKIP=${NT_BENCH_SKIP:-}
OUT=${NT_BENCH_OUT:-$ROOT/BENCHMARKS.md}
NT=${NT_BENCH_BIN:-$ROOT/target/release/nettrace}
WORK=$(mktemp -d /tmp/nettrace-bench.XXXXXX)
NSA=ntb-a-$$
NSB=ntb-b-$$
NSC=ntb-c-$$ # carries no traffic: the --netns case filters on it
IPA=10.250.77.1
IPB=10.250.77.2
UNUSED=10.250.99.99
# 10.250.77.2 as the u32 an iphdr field reads as on a little-endian machine
IPB_LE=0x024dfa0a
UDP_PORT=9000
TCP_PORT=9001
PAYLOAD=22 # 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 22 = 64-byte frames

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
skipped() { [[ " $SKIP " == *" $1 "* ]]; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo scripts/bench.sh)"

# --- what the benchmarks need ----------------------------------------------
need=()
command -v bpftrace >/dev/null || need+=(bpftrace)
command -v ip >/dev/null || need+=(iproute2)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v python3 >/dev/null || need+=(python3)
command -v taskset >/dev/null || need+=(util-linux)
command -v bpftool >/dev/null || need+=(bpftool)
[[ -f /usr/include/bpf/libbpf.h ]] || need+=(libbpf-dev)
if ((${#need[@]})); then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cleanup() {
    set +e
    for p in $(jobs -p); do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    for ns in "$NSA" "$NSB" "$NSC"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------
BUILD_NOTE="built from this tree by the run"
if [[ -n ${NT_BENCH_BIN:-} ]]; then
    BUILD_NOTE="$NT (NT_BENCH_BIN)"
elif [[ ${NT_BENCH_NO_BUILD:-} != 1 ]]; then
    log "cargo build --release -p nettrace"
    if ! (cd "$ROOT" && cargo build --release -p nettrace >"$WORK/build.log" 2>&1); then
        tail -5 "$WORK/build.log" >&2
        [[ -x $NT ]] || die "the build failed and there is no $NT"
        BUILD_NOTE="WARNING: the build failed; an older target/release/nettrace was measured"
        log "$BUILD_NOTE"
    fi
else
    BUILD_NOTE="existing target/release/nettrace (NT_BENCH_NO_BUILD=1)"
fi
[[ -x $NT ]] || die "no $NT"
LOAD=$WORK/bench-load
cc -O2 -o "$LOAD" "$ROOT/scripts/bench-load.c"
FLOOR=$WORK/bench-floor
if ! cc -O2 -o "$FLOOR" "$ROOT/scripts/bench-floor.c" -lbpf -lelf -lz 2>"$WORK/floor-cc.log"; then
    cat "$WORK/floor-cc.log" >&2
    log "WARNING: scripts/bench-floor.c did not build: no floor"
    FLOOR=
fi

# --- namespaces ---------------------------------------------------------------
ip netns add "$NSA"
ip netns add "$NSB"
ip netns add "$NSC"
ip link add ntb-va netns "$NSA" type veth peer name ntb-vb netns "$NSB"
ip -n "$NSA" addr add $IPA/24 dev ntb-va
ip -n "$NSB" addr add $IPB/24 dev ntb-vb
for ns in "$NSA" "$NSB"; do
    ip -n "$ns" link set lo up
done
ip -n "$NSA" link set ntb-va up
ip -n "$NSB" link set ntb-vb up
ip netns exec "$NSA" ping -c1 -W2 $IPB >/dev/null || die "the namespaces cannot reach each other"

NCPU=$(nproc)
CPU_SEND=0
CPU_RECV=$((NCPU > 1 ? 1 : 0))
ipa() { ip netns exec "$NSA" "$@"; }
ipb() { ip netns exec "$NSB" "$@"; }

# --- tracers ------------------------------------------------------------------
# The tracepoints nettrace attaches here that carry an skbaddr field (the
# bpftrace peer reads the same skb; udp_fail_queue_rcv_skb and
# sock_rcvqueue_full have none and never fire in these loads).
TRACEFS=/sys/kernel/tracing
[[ -d $TRACEFS/events ]] || TRACEFS=/sys/kernel/debug/tracing
TPS=()
for tp in net/napi_gro_receive_entry net/napi_gro_frags_entry net/netif_rx_entry net/netif_rx \
    net/netif_receive_skb_entry net/netif_receive_skb_list_entry net/netif_receive_skb \
    net/net_dev_queue net/net_dev_start_xmit net/net_dev_xmit qdisc/qdisc_enqueue \
    qdisc/qdisc_dequeue tcp/tcp_probe tcp/tcp_bad_csum tcp/tcp_retransmit_skb tcp/tcp_send_reset \
    icmp/icmp_send skb/skb_copy_datagram_iovec skb/consume_skb skb/kfree_skb; do
    if grep -q 'skbaddr;' "$TRACEFS/events/$tp/format" 2>/dev/null; then
        TPS+=("tracepoint:${tp/\//:}")
    fi
done

# bpftrace_script ADDR_LE: the peer program: parse the IPv4 header like
# nettrace does, keep packets from or to the address, print one line each.
bpftrace_script() {
    local probes
    probes=$(IFS=,; echo "${TPS[*]}")
    cat <<EOF
BEGIN { printf("ready\n"); }
${probes//,/, }
{
  \$skb = (struct sk_buff *)args->skbaddr;
  \$off = (uint64)\$skb->network_header;
  if (\$off == 0 || \$off == 0xffff) { \$off = (uint64)\$skb->mac_header + 14; }
  \$ip = (struct iphdr *)(\$skb->head + \$off);
  if (\$ip->saddr == $1 || \$ip->daddr == $1) {
    printf("%llu: [%s] %s -> %s proto %d len %u skb %llx\n", nsecs, probe,
           ntop(\$ip->saddr), ntop(\$ip->daddr), \$ip->protocol, \$skb->len, (uint64)\$skb);
  }
}
EOF
}

TRACER_PID=
# wait_for FILE PATTERN SECONDS [PID]: gives up early when PID has exited
wait_for() {
    local i
    for ((i = 0; i < $3 * 100; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        if [[ -n ${4:-} ]] && ! kill -0 "$4" 2>/dev/null; then
            grep -q "$2" "$1" 2>/dev/null
            return
        fi
        sleep 0.01
    done
    return 1
}
now_s() { date +%s.%N; }
elapsed() { awk "BEGIN {printf \"%.3f\", $(now_s) - $1}"; }

# start_tracer KIND OUTFILE: none | floor | nt-nomatch | nt-port | nt-netns |
# nt-match | nt-match-json | nt-over | nt-over-json | bt-nomatch | bt-match.
# Sets TRACER_PID, and START_S: seconds from launch to the ready line
# ("begin tracing" on nettrace's stderr; the output of bpftrace's BEGIN
# probe, which runs once every probe is attached; "ready N" from the floor).
start_tracer() {
    local kind=$1 out=$2 t0
    TRACER_PID=
    START_S=
    : >"$out"
    t0=$(now_s)
    case $kind in
    none) return 0 ;;
    floor) "$FLOOR" "${FLOOR_HOOKS[@]}" >"$out" 2>"$out.err" & ;;
    nt-nomatch) "$NT" -t all --addr $UNUSED >"$out" 2>"$out.err" & ;;
    nt-port) "$NT" -t all -p tcp --port 1 >"$out" 2>"$out.err" & ;;
    nt-netns) "$NT" -t all --netns "/run/netns/$NSC" >"$out" 2>"$out.err" & ;;
    nt-match) "$NT" -t all --addr $IPB >"$out" 2>"$out.err" & ;;
    nt-match-json) "$NT" -t all --addr $IPB -o json >"$out" 2>"$out.err" & ;;
    # overload: on the sender's CPU, with a small ring buffer
    nt-over) taskset -c $CPU_SEND "$NT" -t all --addr $IPB --ringbuf-kb 64 >"$out" 2>"$out.err" & ;;
    nt-over-json) taskset -c $CPU_SEND "$NT" -t all --addr $IPB --ringbuf-kb 64 -o json >"$out" 2>"$out.err" & ;;
    bt-nomatch)
        bpftrace_script 0x63630afa >"$WORK/peer.bt" # 10.250.99.99, matches nothing
        BPFTRACE_PERF_RB_PAGES=${BPFTRACE_PERF_RB_PAGES:-1024} bpftrace "$WORK/peer.bt" >"$out" 2>"$out.err" &
        ;;
    bt-match)
        bpftrace_script $IPB_LE >"$WORK/peer.bt"
        BPFTRACE_PERF_RB_PAGES=${BPFTRACE_PERF_RB_PAGES:-1024} bpftrace "$WORK/peer.bt" >"$out" 2>"$out.err" &
        ;;
    esac
    TRACER_PID=$!
    local ready="begin tracing" where="$out.err"
    if [[ $kind == bt-* || $kind == floor ]]; then
        ready="^ready"
        where="$out"
    fi
    if ! wait_for "$where" "$ready" 120 "$TRACER_PID"; then
        log "$kind did not start:"
        cat "$out.err" >&2
        kill "$TRACER_PID" 2>/dev/null
        wait "$TRACER_PID" 2>/dev/null || true
        TRACER_PID=
        return 1
    fi
    START_S=$(elapsed "$t0")
    sleep 0.3
}

# stop_tracer: SIGINT and wait (in the shell that started the tracer). Sets
# STOP_S (seconds from SIGINT to exit) and STOP_HWM (VmHWM in kB just before).
stop_tracer() {
    local t0
    STOP_HWM=0
    STOP_S=
    [[ -n $TRACER_PID ]] || return 0
    STOP_HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$TRACER_PID/status" 2>/dev/null || echo 0)
    t0=$(now_s)
    kill -INT "$TRACER_PID" 2>/dev/null || true
    wait "$TRACER_PID" 2>/dev/null || true
    STOP_S=$(elapsed "$t0")
    TRACER_PID=
}

# udp_load [PPS]: prints "sent_pps recv_pps sent_packets"; runs LOAD_SECS
# (default SECS) seconds, as tcp_load does
udp_load() {
    local r s secs=${LOAD_SECS:-$SECS}
    ipb taskset -c $CPU_RECV "$LOAD" udp-recv $UDP_PORT "$secs" >"$WORK/recv.out" &
    r=$!
    sleep 0.2
    s=$(ipa taskset -c $CPU_SEND "$LOAD" udp-send $IPB $UDP_PORT "$(awk "BEGIN {print $secs + 0.3}")" $PAYLOAD ${1:-})
    wait $r || true
    echo "$(awk '{print $4}' <<<"$s") $(awk '{print $4}' "$WORK/recv.out") $(awk '{print $2}' <<<"$s")"
}

# tcp_load: prints "transactions_per_s transactions"
tcp_load() {
    ipa taskset -c $CPU_SEND "$LOAD" tcp-rr $IPB $TCP_PORT "${LOAD_SECS:-$SECS}" | awk '{print $4, $2}'
}

# bpf_snap PID: prints "programs run_cnt run_time_ns", summed over the BPF
# programs PID holds: the prog_id of each program or link fd in
# /proc/PID/fdinfo, and the programs bpftool lists with PID among their
# "pids" (bpftool builds without skeletons list none). The counters come from
# bpftool (kernel.bpf_stats_enabled=1), else from the program fds' fdinfo.
bpf_snap() {
    python3 - "$1" <<'PY'
import json, os, subprocess, sys
pid = sys.argv[1]
ids, stats = set(), {}
fdinfo = f"/proc/{pid}/fdinfo"
try:
    names = os.listdir(fdinfo)
except OSError:
    names = []
for n in names:
    try:
        with open(f"{fdinfo}/{n}") as f:
            kv = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    except OSError:
        continue
    kv = {k.strip(): v.strip() for k, v in kv.items()}
    if "prog_id" in kv:
        i = int(kv["prog_id"])
        ids.add(i)
        if "run_cnt" in kv:
            stats[i] = (int(kv["run_cnt"]), int(kv.get("run_time_ns", 0)))
try:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                         text=True, check=True).stdout
    for p in json.loads(out):
        if p["id"] in ids or any(str(x.get("pid")) == pid for x in p.get("pids", [])):
            stats[p["id"]] = (p.get("run_cnt", 0), p.get("run_time_ns", 0))
except Exception:
    pass
print(len(stats), sum(v[0] for v in stats.values()), sum(v[1] for v in stats.values()))
PY
}

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:] if x not in ("", "nan")]; print(statistics.median(v) if v else "nan")' "$@"; }
fmt_int() { python3 -c 'import sys; v=sys.argv[1]; print("n/a" if v=="nan" else f"{float(v):,.0f}")' "$1"; }
fmt_ratio() { python3 -c 'import sys; v=sys.argv[1]; print("n/a" if v=="nan" else f"{float(v):.3f}")' "$1"; }
# ratio A B: A / B, or nan (awk: called often, between loads)
ratio() { awk -v a="${1:-nan}" -v b="${2:-nan}" 'BEGIN { if (a == "nan" || b == "nan" || b + 0 == 0) print "nan"; else printf "%.10g\n", a / b }'; }
fmt_num() { awk -v v="${1:-nan}" 'BEGIN { if (v == "nan") print "n/a"; else printf "%.1f\n", v }'; }

declare -A RES # RES[key] = space-separated samples
add() { RES[$1]="${RES[$1]:-} $2"; }

ipb "$LOAD" tcp-rr-server $TCP_PORT &
sleep 0.2

# --- the floor's hooks: what nettrace -t all attaches on this kernel ---------
# nettrace -v says per tracer "attached NAME: BACKEND CAT/EVENT (prog id N)"
# for tracepoints (BACKEND "tracepoint" or "tp_btf"; functions: "fentry
# FUNC", "kprobe FUNC"...); bpftool gives each program's type, so the floor
# loads the same type (raw_tracepoint -> raw_tp, tracing -> tp_btf).
FLOOR_HOOKS=() # [raw_tp:|tp_btf:]EVENT, the arguments of bench-floor
FLOOR_NOTE=
probe_hooks() {
    local out=$WORK/probe pid
    "$NT" -t all -v --addr $UNUSED >"$out" 2>"$out.err" &
    pid=$!
    if ! wait_for "$out.err" "begin tracing" 120 "$pid"; then
        log "nettrace -t all -v did not start:"
        tail -5 "$out.err" >&2
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    # the programs are loaded now: ask bpftool for their types
    python3 - "$out.err" "$WORK/hooks" <<'PY'
import json, re, subprocess, sys
types = {}
try:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                         text=True, check=True).stdout
    types = {p["id"]: p.get("type", "") for p in json.loads(out)}
except Exception as e:
    print(f"bpftool prog show failed ({e}): assuming raw_tp", file=sys.stderr)
kinds = {"raw_tracepoint": "raw_tp", "tracing": "tp_btf"}
hooks, counts, other = [], {}, []
for line in open(sys.argv[1]):
    m = re.match(r"attached (\S+): (\S+) (\S+).*\(prog id (\d+)\)\s*$", line)
    if not m:
        continue
    name, backend, what, prog = m.group(1), m.group(2), m.group(3), int(m.group(4))
    # "tracepoint CAT/EVENT", "tp_btf CAT/EVENT", ...; functions have no "/"
    if not re.fullmatch(r"\w+/\w+", what):
        other.append(f"{name} ({backend})")
        continue
    t = types.get(prog)
    kind = kinds.get(t) if t else ("tp_btf" if backend == "tp_btf" else "raw_tp")
    if kind is None:
        print(f"{name}: program {prog} is of type {t}; the floor uses raw_tp", file=sys.stderr)
        kind = "raw_tp"
    hooks.append(f"{kind}:{what.split('/')[-1]}")
    counts[kind] = counts.get(kind, 0) + 1
note = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
if other:
    note += f"; {len(other)} hooks of other kinds left out: " + ", ".join(other)
with open(sys.argv[2], "w") as f:
    f.write(note + "\n")
    f.write("\n".join(hooks) + "\n")
PY
    kill -INT "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    FLOOR_NOTE=$(head -1 "$WORK/hooks")
    mapfile -t FLOOR_HOOKS < <(tail -n +2 "$WORK/hooks" | grep . || true)
    if ((${#FLOOR_HOOKS[@]} == 0)); then
        log "nettrace -t all -v named no tracepoint it attached:"
        grep -v '^unavailable' "$out.err" | head -5 >&2
        return 1
    fi
}

# --- a. datapath cost ----------------------------------------------------------
CASES=(none floor nt-nomatch nt-port nt-netns nt-match bt-nomatch bt-match)
# the per-round figures of a case: rates, and from bpf_stats (UDP phase, TCP
# phase) hits per packet/transaction, ns per hit, ns per packet/transaction
RATES=(udp udprecv tcp)
STATS=(udp.hits udp.nsph udp.nspp tcp.hits tcp.nsph tcp.nspt)
if ! skipped datapath; then
    if [[ -n $FLOOR ]] && probe_hooks && ((${#FLOOR_HOOKS[@]})); then
        log "floor: ${#FLOOR_HOOKS[@]} hooks ($FLOOR_NOTE)"
    else
        log "WARNING: no floor this run"
        FLOOR_HOOKS=()
        CASES=(none nt-nomatch nt-port nt-netns nt-match bt-nomatch bt-match)
    fi
    # Statistics cost two clock reads per program run, a visible share of
    # the rate, so the rates are measured without them and the statistics in
    # loads of their own, switched on by a holder process (bench-floor
    # --stats: BPF_ENABLE_STATS, counted per holder, so it neither switches
    # off someone else's statistics nor outlives this script).
    if ((STATS_SECS > 0)) && [[ -z $FLOOR ]]; then
        log "WARNING: no bench-floor: no ns per hit"
        STATS_SECS=0
    fi
    STATS_ON_NOTE=
    # warm-up: the first load after setting up is slower (connection set-up,
    # caches), which would always hit the first case of round 1
    LOAD_SECS=1 udp_load >/dev/null
    LOAD_SECS=1 tcp_load >/dev/null
    for ((run = 0; run < RUNS; run++)); do
        # rotate the order so no case always runs first or last
        order=("${CASES[@]:run % ${#CASES[@]}}" "${CASES[@]:0:run % ${#CASES[@]}}")
        declare -A ROUND=()
        for c in "${order[@]}"; do
            if ! start_tracer "$c" "$WORK/a-$c.out"; then continue; fi
            up=$START_S
            pid=$TRACER_PID
            if [[ -z $STATS_ON_NOTE && $(sysctl -n kernel.bpf_stats_enabled 2>/dev/null) == 1 ]]; then
                STATS_ON_NOTE="kernel.bpf_stats_enabled was on (set outside this script) during some of these loads: their rates include its cost."
                log "WARNING: $STATS_ON_NOTE"
            fi
            read -r sent recv sentn < <(udp_load)
            read -r tps tn < <(tcp_load)
            stats=
            if [[ -n $pid ]] && ((STATS_SECS > 0)); then
                s0=(0 0 0) s1=(0 0 0) s2=(0 0 0)
                "$FLOOR" --stats >"$WORK/stats.out" 2>&1 &
                holder=$!
                wait_for "$WORK/stats.out" "^ready" 10 "$holder" || log "WARNING: bench-floor --stats: $(cat "$WORK/stats.out")"
                read -r -a s0 < <(bpf_snap "$pid") || true
                read -r _ _ sn < <(LOAD_SECS=$STATS_SECS udp_load)
                read -r -a s1 < <(bpf_snap "$pid") || true
                read -r _ stn < <(LOAD_SECS=$STATS_SECS tcp_load)
                read -r -a s2 < <(bpf_snap "$pid") || true
                kill -INT "$holder" 2>/dev/null
                wait "$holder" 2>/dev/null || true
                udp_hits=$((s1[1] - s0[1])) udp_ns=$((s1[2] - s0[2]))
                tcp_hits=$((s2[1] - s1[1])) tcp_ns=$((s2[2] - s1[2]))
                ROUND[$c.udp.hits]=$(ratio "$udp_hits" "${sn:-0}")
                ROUND[$c.udp.nsph]=$(ratio "$udp_ns" "$udp_hits")
                ROUND[$c.udp.nspp]=$(ratio "$udp_ns" "${sn:-0}")
                ROUND[$c.tcp.hits]=$(ratio "$tcp_hits" "${stn:-0}")
                ROUND[$c.tcp.nsph]=$(ratio "$tcp_ns" "$tcp_hits")
                ROUND[$c.tcp.nspt]=$(ratio "$tcp_ns" "${stn:-0}")
                add "$c.progs" "${s0[0]}"
                stats="; ${s0[0]} programs, udp $(fmt_num "${ROUND[$c.udp.hits]}") hits/pkt at $(fmt_num "${ROUND[$c.udp.nsph]}") ns, tcp $(fmt_num "${ROUND[$c.tcp.hits]}") hits/trans at $(fmt_num "${ROUND[$c.tcp.nsph]}") ns"
            fi
            stop_tracer
            lines=$(wc -l <"$WORK/a-$c.out")
            log "datapath run $((run + 1))/$RUNS $c: udp sent $sent recv $recv pps, tcp_rr $tps tps, $lines lines; start ${up:-0} s, stop ${STOP_S:-0} s$stats"
            # c. start and stop, from these launches
            case $c in
            nt-*) add nt.up "$up" ;;&
            bt-*) add bt.up "$up" ;;&
            nt-nomatch | nt-port | nt-netns) add nt.down "$STOP_S" ;;
            bt-nomatch) add bt.down "$STOP_S" ;;
            nt-match) add nt.down.busy "$STOP_S" ;;
            bt-match) add bt.down.busy "$STOP_S" ;;
            esac
            ROUND[$c.udp]=$sent
            ROUND[$c.udprecv]=$recv
            ROUND[$c.tcp]=$tps
        done
        for c in "${CASES[@]}"; do
            for m in "${RATES[@]}" "${STATS[@]}"; do
                if [[ -n ${ROUND[$c.$m]:-} ]]; then add "$c.$m" "${ROUND[$c.$m]}"; fi
            done
            for m in "${RATES[@]}"; do
                if [[ -n ${ROUND[$c.$m]:-} && -n ${ROUND[none.$m]:-} ]]; then
                    add "$c.$m.ratio" "$(ratio "${ROUND[$c.$m]}" "${ROUND[none.$m]}")"
                fi
            done
            for m in "${RATES[@]}" udp.nsph udp.nspp tcp.nsph tcp.nspt; do
                if [[ -n ${ROUND[$c.$m]:-} && -n ${ROUND[floor.$m]:-} ]]; then
                    add "$c.$m.floor" "$(ratio "${ROUND[$c.$m]}" "${ROUND[floor.$m]}")"
                fi
            done
        done
        unset ROUND
    done
fi

# --- b. event pipeline -----------------------------------------------------------
# events per packet of this load with the match filter, learnt from a probe run
pipeline_run() { # FORMAT PPS [over] -> "delivered lost matched|- hwm_kb stalled"
    local fmt=$1 pps=$2 kind=nt-match out="$WORK/b.out"
    [[ ${3:-} == over ]] && kind=nt-over
    [[ $fmt == json ]] && kind=$kind-json
    [[ $kind == nt-match-json-json ]] && kind=nt-match-json
    start_tracer $kind "$out" || { echo "nan nan nan 0"; return; }
    udp_load "$pps" >/dev/null
    sleep 0.3
    local hwm delivered lost matched stalled=0
    stop_tracer
    hwm=$STOP_HWM
    if [[ $fmt == json ]]; then
        delivered=$(grep -c '"type":"event"' "$out" || true)
        local last
        last=$(grep '"type":"lost"' "$out" | tail -1 || true)
        # ring-buffer losses, events produced, and events formatted but dropped because
        # the writer fell behind (output_stalled, absent when 0), from one record
        read -r lost matched stalled < <(python3 -c 'import sys,json
l = sys.argv[1].strip()
r = json.loads(l) if l else {}
print(r.get("events", 0), r.get("matched", "-"), r.get("output_stalled", 0))' "$last")
        [[ $matched == - ]] && matched=
    else
        delivered=$(grep -c ': \[' "$out" || true)
        lost=$( (grep -o '[0-9]* events\? lost' "$out.err" || true) | tail -1 | awk '{print $1}')
        matched=
    fi
    echo "$delivered ${lost:-0} ${matched:--} ${hwm:-0} ${stalled:-0}"
}

PIPE_ROWS=()
INVARIANT_ROWS=()
PEAK_HWM=0
if ! skipped pipeline; then
    for fmt in text json; do
        best=0
        best_pps=0
        lossy_pps=0
        # paced packets/s; raised until events are lost, then one bisection
        for pps in 5000 10000 20000 40000 60000 80000 120000 160000 240000 0; do
            read -r delivered lost matched hwm stalled < <(pipeline_run $fmt $pps)
            [[ $matched == - ]] && matched=
            ((hwm > PEAK_HWM)) && PEAK_HWM=$hwm
            rate=$(python3 -c "print(round($delivered / $SECS))")
            log "pipeline $fmt $([[ $pps == 0 ]] && echo max || echo $pps) pps: delivered $delivered ($rate/s), lost $lost, dropped by the writer $stalled, matched ${matched:-?}, VmHWM ${hwm} kB"
            PIPE_ROWS+=("| $fmt | $([[ $pps == 0 ]] && echo max || fmt_int $pps) | $(fmt_int "$rate") | $(fmt_int "$lost") | $(fmt_int "$stalled") | ${matched:+$(fmt_int "$matched")} | $((hwm / 1024)) |")
            if [[ $fmt == json && $((lost + stalled)) != 0 && -n $matched ]]; then
                ok=$([[ $matched == $((delivered + lost + stalled)) ]] && echo yes || echo NO)
                INVARIANT_ROWS+=("| $(fmt_int "$matched") | $(fmt_int "$delivered") | $(fmt_int "$lost") | $(fmt_int "$stalled") | $ok |")
            fi
            if [[ $((lost + stalled)) == 0 ]]; then
                if ((rate > best)); then best=$rate; best_pps=$pps; fi
            else
                lossy_pps=$pps
                break
            fi
        done
        if ((lossy_pps > 0 && best_pps > 0)); then
            pps=$(((best_pps + lossy_pps) / 2))
            read -r delivered lost matched hwm stalled < <(pipeline_run $fmt $pps)
            [[ $matched == - ]] && matched=
            rate=$(python3 -c "print(round($delivered / $SECS))")
            log "pipeline $fmt $pps pps: delivered $delivered ($rate/s), lost $lost, dropped by the writer $stalled, matched ${matched:-?}"
            PIPE_ROWS+=("| $fmt | $(fmt_int $pps) | $(fmt_int "$rate") | $(fmt_int "$lost") | $(fmt_int "$stalled") | ${matched:+$(fmt_int "$matched")} | $((hwm / 1024)) |")
            if [[ $((lost + stalled)) == 0 ]] && ((rate > best)); then best=$rate; fi
            if [[ $fmt == json && $((lost + stalled)) != 0 && -n $matched ]]; then
                ok=$([[ $matched == $((delivered + lost + stalled)) ]] && echo yes || echo NO)
                INVARIANT_ROWS+=("| $(fmt_int "$matched") | $(fmt_int "$delivered") | $(fmt_int "$lost") | $(fmt_int "$stalled") | $ok |")
            fi
        fi
        RES[pipe.$fmt]=$best
        RES[pipe.$fmt.lossless_max]=$([[ $lossy_pps == 0 ]] && echo yes || echo no)
        if [[ $lossy_pps == 0 ]]; then
            # The load never overflowed the ring buffer: overload nettrace on
            # purpose (on the sender's CPU, 64 KiB ring buffer) to check the
            # accounting.
            read -r delivered lost matched hwm stalled < <(pipeline_run $fmt 0 over)
            [[ $matched == - ]] && matched=
            rate=$(python3 -c "print(round($delivered / $SECS))")
            log "pipeline $fmt overload: delivered $delivered ($rate/s), lost $lost, dropped by the writer $stalled, matched ${matched:-?}"
            PIPE_ROWS+=("| $fmt, overload (same CPU as the sender, --ringbuf-kb 64) | max | $(fmt_int "$rate") | $(fmt_int "$lost") | $(fmt_int "$stalled") | ${matched:+$(fmt_int "$matched")} | $((hwm / 1024)) |")
            if [[ $fmt == json && -n $matched ]]; then
                ok=$([[ $matched == $((delivered + lost + stalled)) ]] && echo yes || echo NO)
                INVARIANT_ROWS+=("| $(fmt_int "$matched") | $(fmt_int "$delivered") | $(fmt_int "$lost") | $(fmt_int "$stalled") | $ok |")
            fi
        fi
    done
fi

# --- d. userspace cost per event ---------------------------------------------------
CARGO_BENCH=
if ! skipped cargo; then
    log "cargo bench -p nettrace-common"
    if (cd "$ROOT" && cargo bench -q -p nettrace-common --bench pipeline >"$WORK/cargo-bench.out" 2>"$WORK/cargo-bench.err"); then
        CARGO_BENCH=$(cat "$WORK/cargo-bench.out")
    else
        CARGO_BENCH="(cargo bench failed: $(tail -1 "$WORK/cargo-bench.err"))"
    fi
fi

# --- report -------------------------------------------------------------------------
m() { median ${RES[$1]:-}; }
# MED[key]: the median of RES[key]'s samples, all in one python run
declare -A MED=()
while read -r k v; do MED[$k]=$v; done < <(
    for k in "${!RES[@]}"; do echo "$k ${RES[$k]}"; done | python3 -c 'import sys, statistics
def num(x):
    try:
        return float(x)
    except ValueError:
        return None
for line in sys.stdin:
    k, *raw = line.split()
    v = [f for f in map(num, raw) if f is not None and f == f]
    # non-numeric samples (yes/no flags) pass through as the last one given
    print(k, statistics.median(v) if v else (raw[-1] if raw else "nan"))'
)
# mf int|ratio|num KEY: MED[KEY] formatted (1,234 / 0.123 / 1,234.5)
mf() {
    awk -v f="$1" -v v="${MED[$2]:-nan}" 'BEGIN {
        if (v == "nan") { print "n/a"; exit }
        s = sprintf(f == "ratio" ? "%.3f" : f == "num" ? "%.1f" : "%.0f", v)
        if (f == "ratio") { print s; exit }
        i = index(s, "."); frac = i ? substr(s, i) : ""; int_ = i ? substr(s, 1, i - 1) : s
        sign = ""; if (substr(int_, 1, 1) == "-") { sign = "-"; int_ = substr(int_, 2) }
        while (length(int_) > 3) { frac = "," substr(int_, length(int_) - 2) frac; int_ = substr(int_, 1, length(int_) - 3) }
        print sign int_ frac
    }'
}
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
keep=
vm_section= # "## e." comes from scripts/bench-vm.sh (the 6.12 guest): carried over as it is
if [[ -f $OUT ]]; then
    keep=$(awk '/^<!-- keep -->$/ {k=1} k {print} /^<!-- \/keep -->$/ {k=0}' "$OUT")
    vm_section=$(awk '/^<!-- keep -->$/ || /^## / {k=0} /^## e\. Kernel-function backends/ {k=1} k {print}' "$OUT")
fi
label() {
    case $1 in
    none) echo "no tracing" ;;
    floor) echo "floor: an empty program on each of nettrace's ${#FLOOR_HOOKS[@]} hooks" ;;
    nt-nomatch) echo "nettrace, all tracers, filter matching nothing (\`--addr $UNUSED\`)" ;;
    nt-port) echo "nettrace, all tracers, \`-p tcp --port 1\` (matches nothing)" ;;
    nt-netns) echo "nettrace, all tracers, \`--netns\` of a namespace without traffic" ;;
    nt-match) echo "nettrace, all tracers, matching every packet, text to a file" ;;
    bt-nomatch) echo "bpftrace, same tracepoints, filter matching nothing" ;;
    bt-match) echo "bpftrace, same tracepoints, matching every packet, printing to a file" ;;
    esac
}
{
    echo "# Benchmarks"
    echo
    echo "Generated by \`sudo scripts/bench.sh\` — do not edit by hand except inside the"
    echo "\`<!-- keep -->\` section at the end, which the script carries over."
    echo "Absolute numbers on a shared VM are noise; read the ratios. Benchmarks never fail CI."
    echo
    echo "## Machine"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| nettrace commit | $commit$dirty; $BUILD_NOTE |"
    echo "| kernel | $(uname -r) |"
    echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) × $(nproc) |"
    echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
    echo "| peer | $(bpftrace --version 2>/dev/null | head -1) |"
    echo "| runs | $RUNS alternating runs per figure, $SECS s per load |"
    echo
    if ! skipped datapath; then
        echo "## a. Datapath cost"
        echo
        echo "Two namespaces over veth. UDP: 64-byte frames (22-byte payload) from one sender"
        echo "pinned to CPU $CPU_SEND (sendmmsg, batches of 64; the veth receive path runs on the"
        echo "sender's CPU), one receiver on CPU $CPU_RECV. TCP: one connection, 1-byte request and"
        echo "response. nettrace runs with every tracer (\`-t all\`): it attaches what is available on"
        if ((${#FLOOR_HOOKS[@]})); then
            echo "this kernel (${#FLOOR_HOOKS[@]} hooks: $FLOOR_NOTE; \`nettrace -t all -v\`). The floor is"
            echo "\`scripts/bench-floor.c\`: one empty program (\`r0 = 0; exit\`) of the same type on each"
            echo "of those hooks, i.e. the cost of entering a BPF program there, which any tracer on"
            echo "these hooks pays; what a tracer costs beyond it is its own."
        else
            echo "this kernel. (No floor this run: see the log.)"
        fi
        echo "bpftrace attaches the ${#TPS[@]} tracepoints with an skb, reads the IPv4 header the same"
        echo "way and prints one line per match (stdout to a file)."
        echo "Ratios: rate / untraced rate and rate / floor rate of the same round, median over"
        echo "rounds.${STATS_ON_NOTE:+ WARNING: $STATS_ON_NOTE}"
        echo
        echo "| case | UDP sent pkt/s | ÷ untraced | ÷ floor | UDP received pkt/s | ÷ untraced | ÷ floor | TCP RR trans/s | ÷ untraced | ÷ floor |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for c in "${CASES[@]}"; do
            row="| $(label $c)"
            for k in udp udprecv tcp; do
                row+=" | $(mf int $c.$k)"
                if [[ $c == none ]]; then row+=" | 1"; else row+=" | $(mf ratio $c.$k.ratio)"; fi
                if [[ $c == none ]]; then row+=" | —"; else row+=" | $(mf ratio $c.$k.floor)"; fi
            done
            echo "$row |"
        done
        echo
        if ((STATS_SECS > 0)); then
            echo "BPF program time, from the kernel's BPF statistics (BPF_ENABLE_STATS, what"
            echo "\`kernel.bpf_stats_enabled=1\` switches on), on only during a UDP and a TCP load of $STATS_SECS s of"
            echo "their own after the loads above, with the same tracer still attached (the statistics'"
            echo "two clock reads per program run cost a visible share of the rate, so the rates above"
            echo "are measured without them): the \`run_cnt\` and \`run_time_ns\` of the programs the"
            echo "tracer process holds, read before and after each load. Hits = program runs per UDP packet"
            echo "sent or per TCP transaction; ns per hit = run_time_ns / run_cnt, the time inside the"
            echo "programs (it leaves out the cost of reaching them, which the floor's rates show, and"
            echo "includes the statistics' own clock reads); ns per packet = run_time_ns / packets sent."
            echo "The programs see the whole machine, so other traffic during a load counts too."
            echo "÷ floor: ns per packet (transaction) / the floor's, same round, median."
            echo
            echo "| case | BPF programs | UDP hits per packet | ns per hit | ns per packet | ÷ floor | TCP RR hits per transaction | ns per hit | ns per transaction | ÷ floor |"
            echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            for c in "${CASES[@]}"; do
                [[ $c == none ]] && continue
                echo "| $(label $c) | $(mf int $c.progs) | $(mf num $c.udp.hits) | $(mf num $c.udp.nsph) | $(mf num $c.udp.nspp) | $(mf ratio $c.udp.nspp.floor) | $(mf num $c.tcp.hits) | $(mf num $c.tcp.nsph) | $(mf num $c.tcp.nspt) | $(mf ratio $c.tcp.nspt.floor) |"
            done
            echo
        fi
        echo "Goals (issue 5): non-matching ≥ 0.95; matching at least as good as bpftrace's ratio."
        echo "Issue 9: every figure also against the floor, whose own ratio to untraced is the part"
        echo "of the cost no tracer on these hooks can avoid."
        echo
    fi
    if ! skipped pipeline; then
        echo "## b. Event pipeline"
        echo
        echo "nettrace matching every packet of a paced UDP load, output to a file; the load is"
        echo "raised until events are lost (in the ring buffer, or dropped by the writer), then bisected"
        echo "once. Events/s = delivered / $SECS s."
        echo
        echo "| highest rate with zero loss | events/s | lossless even at the sender's top rate |"
        echo "|---|---:|---|"
        echo "| text | $(fmt_int "${RES[pipe.text]:-nan}") | ${RES[pipe.text.lossless_max]:-} |"
        echo "| JSON | $(fmt_int "${RES[pipe.json]:-nan}") | ${RES[pipe.json.lossless_max]:-} |"
        echo
        echo "When nothing was lost even at the sender's top rate, the figure is bounded by the load"
        echo "(the traced datapath of one sender on this machine), not by nettrace; an overload run"
        echo "(nettrace on the sender's CPU, 64 KiB ring buffer) then checks the accounting."
        echo "Goal: ≥ 500,000 events/s delivered on this 2-core machine."
        echo
        echo "<details><summary>every step</summary>"
        echo
        echo "| format | load pkt/s | delivered events/s | lost (ring buffer full) | dropped by the writer | matched (JSON \`lost\` record) | VmHWM MiB |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        printf '%s\n' "${PIPE_ROWS[@]}"
        echo
        echo "</details>"
        echo
        echo "Accounting beyond the lossless rate (JSON run; \`matched\` and \`events\` from the last"
        echo "\`lost\` record, delivered = event lines in the file; lost in the ring buffer = its \`events\`,"
        echo "dropped by the writer = its \`output_stalled\`: formatted while the output queue was full):"
        echo
        echo "| produced (matched) | delivered | lost in the ring buffer | dropped by the writer | produced = delivered + lost + dropped |"
        echo "|---:|---:|---:|---:|---|"
        if ((${#INVARIANT_ROWS[@]})); then printf '%s\n' "${INVARIANT_ROWS[@]}"; else echo "| no loss reached | | | | |"; fi
        echo
    fi
    if ! skipped datapath || ! skipped pipeline; then
        echo "## c. Start and stop"
        echo
        if ! skipped datapath; then
            echo "From the launches of (a): nettrace with the whole tracer tree (every available tracer),"
            echo "bpftrace with the peer program. Start: launch to \`begin tracing\` on stderr (bpftrace: to"
            echo "the output of its BEGIN probe, which runs once every probe is attached). Stop: SIGINT to"
            echo "exit, idle (filter matching nothing) and busy (matching every packet of the UDP/TCP load"
            echo "just ended, buffers to drain). Ratio = nettrace / bpftrace (lower is better)."
            echo
            echo "| | nettrace s | bpftrace s | ratio |"
            echo "|---|---:|---:|---:|"
            for k in up down down.busy; do
                case $k in up) l=start ;; down) l="stop, idle" ;; down.busy) l="stop, busy" ;; esac
                echo "| $l | $(fmt_ratio "$(m nt.$k)") | $(fmt_ratio "$(m bt.$k)") | $(fmt_ratio "$(ratio "$(m nt.$k)" "$(m bt.$k)")") |"
            done
            echo
        fi
        if ! skipped pipeline; then
            echo "Peak resident memory (VmHWM) of nettrace during (b): $((PEAK_HWM / 1024)) MiB."
            echo
        fi
        echo "Goals: < 1 s each; < 64 MiB."
        echo
    fi
    if ! skipped cargo; then
        echo "## d. Userspace cost per event (\`cargo bench -p nettrace-common\`)"
        echo
        echo '```text'
        echo "$CARGO_BENCH"
        echo '```'
        echo
        echo "Goal: ≥ 1M events/s per core (a well-known peer needs ~2.7 µs per event)."
        echo
    fi
    if [[ -n $vm_section ]]; then
        echo "$vm_section"
        echo
    fi
    if [[ -n $keep ]]; then
        echo "$keep"
    else
        echo "<!-- keep -->"
        echo "## Notes"
        echo "<!-- /keep -->"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT"
