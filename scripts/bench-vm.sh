#!/usr/bin/env bash
# Per-hit cost of nettrace's kernel-function backends against their floor, in Debian's
# 6.12 cloud kernel under QEMU (issue 9); writes (or replaces) the section
# "## e. Kernel-function backends in the Debian 6.12 guest" of BENCHMARKS.md and leaves
# the rest of the file alone (scripts/bench.sh carries that section over).
#
#   sudo scripts/bench-vm.sh         # about 10 minutes on a 2-core machine (TCG)
#
# What it does: fetches the kernel (tests/vm/fetch-kernel.sh, cached in target/vm/kernels),
# builds the static nettrace the VM bench uses (target/vm/cargo) and a static
# scripts/bench-floor.c, puts both in a busybox initramfs with the scenario
# tests/vm/scenarios/cost.sh (tests/vm/build-initramfs.sh, NT_VM_EXTRA), boots it once
# (tests/vm/run.sh, software emulation) and turns the scenario's COST lines into the
# section's tables. In the guest, for each backend (kprobe-multi, kprobe, fentry) the same
# 12 core-kernel receive/transmit functions are hooked at the same time by nettrace
# (non-matching: -p tcp --port 1) and by the floor (empty programs of that type, and
# others with nettrace's pre-filter work added step by step), so that one `ping -f` load
# runs them all side by side; then nettrace matching (--addr of the flood's destination)
# beside the empty floor under a second load. kernel.bpf_stats_enabled=1: ns per hit =
# run_time_ns / run_cnt of each process's programs.
# Benchmarks never fail on a number: the exit status is non-zero only when the machine
# cannot run them (not root, no kernel, no build, the guest did not finish).
#
# Environment: NT_BENCH_VM_SERIES (6.12), NT_BENCH_VM_COUNT (pings per load, 10000),
# NT_BENCH_VM_ROUNDS (5), NT_BENCH_VM_TIMEOUT (guest seconds, 3600),
# NT_BENCH_VM_BIN (a static nettrace to measure instead of building one),
# NT_BENCH_VM_REV (build that git revision from a clean export instead of the work tree),
# NT_BENCH_VM_CONSOLE (render this saved console instead of booting),
# NT_BENCH_OUT (output file, default BENCHMARKS.md); NT_VM_SMP, NT_VM_MEM (run.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERIES=${NT_BENCH_VM_SERIES:-6.12}
COUNT=${NT_BENCH_VM_COUNT:-10000}
ROUNDS=${NT_BENCH_VM_ROUNDS:-5}
TIMEOUT=${NT_BENCH_VM_TIMEOUT:-3600}
OUT=${NT_BENCH_OUT:-$ROOT/BENCHMARKS.md}
VM=$ROOT/target/vm
CONSOLE=${NT_BENCH_VM_CONSOLE:-}

log() { printf '[bench-vm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$ROOT" && git status --porcelain -- ebpf node-agent common 2>/dev/null | grep -q . \
    && echo " (with uncommitted changes in ebpf/, node-agent/ or common/)" || true)
BUILD_NOTE="static build of this tree ($commit$dirty)"

if [[ -z $CONSOLE ]]; then
    [[ $(id -u) -eq 0 ]] || die "run as root (sudo scripts/bench-vm.sh): apt-get, QEMU"
    need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    [[ -x /bin/busybox ]] || need+=(busybox-static)
    command -v cc >/dev/null || need+=(gcc libc6-dev)
    command -v python3 >/dev/null || need+=(python3)
    command -v file >/dev/null || need+=(file)
    command -v xz >/dev/null || need+=(xz-utils)
    [[ -f /usr/include/bpf/libbpf.h ]] || need+=(libbpf-dev)
    for a in libbpf.a:libbpf-dev libelf.a:libelf-dev libz.a:zlib1g-dev; do
        compgen -G "/usr/lib/*/${a%%:*}" >/dev/null || compgen -G "/usr/lib/${a%%:*}" >/dev/null \
            || need+=("${a#*:}")
    done
    if ((${#need[@]})); then
        command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
        log "installing ${need[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi

    # --- kernel
    kout=$("$ROOT/tests/vm/fetch-kernel.sh" "$SERIES" "$VM/kernels") || die "no $SERIES kernel"
    image=$(sed -n 's/^kernel=//p' <<<"$kout")
    kdir=$(sed -n 's/^modules=//p' <<<"$kout")
    kdir=${kdir%/lib/modules/*}
    log "kernel: $(sed -n 's/^package=//p' <<<"$kout")"

    # --- nettrace, static (as ./dev vm builds it)
    if [[ -n ${NT_BENCH_VM_BIN:-} ]]; then
        bin=$NT_BENCH_VM_BIN
        BUILD_NOTE="$bin (NT_BENCH_VM_BIN)"
    elif [[ -n ${NT_BENCH_VM_REV:-} ]]; then
        rev=$(cd "$ROOT" && git rev-parse --short "$NT_BENCH_VM_REV^{commit}") || die "no revision $NT_BENCH_VM_REV"
        log "building the static nettrace of $rev from a clean export (target/vm/cost-src, target/vm/cost-cargo)"
        if [[ $(cat "$VM/cost-src/.rev" 2>/dev/null) != "$rev" ]]; then # else keep its mtimes
            rm -rf "$VM/cost-src"
            mkdir -p "$VM/cost-src"
            (cd "$ROOT" && git archive "$rev") | tar -x -C "$VM/cost-src"
            echo "$rev" >"$VM/cost-src/.rev"
        fi
        (cd "$VM/cost-src" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$VM/cost-cargo" \
            cargo build -q -p nettrace --release --target x86_64-unknown-linux-gnu) \
            || die "the static build of nettrace $rev failed"
        bin=$VM/cost-cargo/x86_64-unknown-linux-gnu/release/nettrace
        BUILD_NOTE="static build of commit $rev"
    else
        log "building the static nettrace (target/vm/cargo)"
        (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$VM/cargo" \
            cargo build -q -p nettrace --release --target x86_64-unknown-linux-gnu) \
            || die "the static build of nettrace failed"
        bin=$VM/cargo/x86_64-unknown-linux-gnu/release/nettrace
    fi
    [[ -x $bin ]] || die "no $bin"

    # --- the floor, static (libelf.a may want zstd on newer distributions)
    mkdir -p "$VM"
    floor=$VM/bench-floor
    cflags=(-O2 -static -o "$floor" "$ROOT/scripts/bench-floor.c" -lbpf -lelf -lz)
    if ! cc "${cflags[@]}" 2>"$VM/bench-floor.log"; then
        if ! compgen -G "/usr/lib/*/libzstd.a" >/dev/null; then
            log "installing libzstd-dev"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libzstd-dev >/dev/null || true
        fi
        cc "${cflags[@]}" -lzstd 2>"$VM/bench-floor.log" || { cat "$VM/bench-floor.log" >&2; die "scripts/bench-floor.c did not build static"; }
    fi

    # --- initramfs and boot
    initrd=$VM/initramfs-cost-$SERIES.cpio.gz
    NETTRACE_VM_BIN=$bin NT_VM_EXTRA="$floor" \
        "$ROOT/tests/vm/build-initramfs.sh" "$kdir" "$ROOT/tests/vm/scenarios/cost.sh" "$initrd"
    CONSOLE=$VM/console-cost-$SERIES.txt
    log "booting $SERIES under QEMU (TCG): $ROUNDS rounds of $COUNT pings per case; console in $CONSOLE"
    rc=0
    NT_VM_APPEND="nt_cost_count=$COUNT nt_cost_rounds=$ROUNDS ${NT_VM_APPEND:-}" \
        "$ROOT/tests/vm/run.sh" "$image" "$initrd" "$TIMEOUT" >"$CONSOLE" 2>&1 || rc=$?
    printf '%s\n%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$BUILD_NOTE" >"$CONSOLE.build"
    grep -q '^=== SCENARIO DONE' "$CONSOLE" || die "the guest did not finish (qemu rc $rc); see $CONSOLE"
    grep -E '^COST .*error=' "$CONSOLE" >&2 || true
fi
[[ -f $CONSOLE ]] || die "no console $CONSOLE"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
if [[ -f $CONSOLE.build ]]; then # when that boot ran, and what it measured
    DATE=$(sed -n 1p "$CONSOLE.build")
    BUILD_NOTE=$(sed -n 2p "$CONSOLE.build")
fi

# --- the section
python3 - "$CONSOLE" "$OUT" "$DATE" "$BUILD_NOTE" <<'PY'
import os, re, statistics, sys

console, out, date, build = sys.argv[1:5]
text = open(console, errors="replace").read()
kernel = (re.search(r"=== GUEST START (\S+)", text) or [None, "?"])[1]
funcs = (re.search(r"^funcs=(.*)$", text, re.M) or [None, "?"])[1].split()
conf = dict(re.findall(r"(\w+)=(\S+)", (re.search(r"^count=.*$", text, re.M) or [""])[0]))
rows = {}  # (backend, set, case) -> [COST fields], one per round
errors = []
for line in text.splitlines():
    if not line.startswith("COST "):
        continue
    if "error=" in line:
        errors.append(line)
        continue
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if int(kv.get("hits", 0)) > 0:
        rows.setdefault((kv["backend"], kv.get("set", ""), kv["case"]), []).append(kv)

def med(be, case, st="nonmatch", key="ns_per_hit"):
    v = [float(r[key]) for r in rows.get((be, st, case), [])]
    return statistics.median(v) if v else None

def ratio(be, a, b="floor-empty", st="nonmatch"):
    """median over rounds of a / b, both under the same load (same round and set)"""
    ra = {r["round"]: float(r["ns_per_hit"]) for r in rows.get((be, st, a), [])}
    rb = {r["round"]: float(r["ns_per_hit"]) for r in rows.get((be, st, b), [])}
    v = [ra[k] / rb[k] for k in ra if k in rb and rb[k] > 0]
    return statistics.median(v) if v else None

def f(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)

def first(be, case, key, st="nonmatch"):
    r = rows.get((be, st, case))
    return r[0].get(key, "?") if r else "n/a"

def cell(be, c, st="nonmatch"):
    v, r = med(be, c, st), ratio(be, c, st=st)
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if c == "floor-empty" or r is None else f"{v:,.0f} ({r:.2f}×)"

backends = ["kprobe-multi", "kprobe", "fentry"]
rounds = conf.get("rounds", "?")
L = []
L.append("## e. Kernel-function backends in the Debian 6.12 guest")
L.append("")
L.append("Generated by `sudo scripts/bench-vm.sh` (this section only; `scripts/bench.sh` carries it")
L.append("over). Goal (issue 9): in the 6.12 guest, the per-hit cost of a non-matching hit within 2 × that")
L.append("of an empty program of the same type, measured side by side.")
L.append("")
L.append("| | |")
L.append("|---|---|")
L.append(f"| date | {date} |")
L.append(f"| guest kernel | {kernel} (Debian cloud image), QEMU software emulation (TCG), 2 vCPUs |")
L.append(f"| nettrace | {build} |")
L.append(f"| load | `ping -f -q -c {conf.get('count', '?')}` between two namespaces over one veth pair (a ping is two packets); {rounds} round(s) |")
L.append(f"| functions | {len(funcs)}, the same for every case: {', '.join('`' + x + '`' for x in funcs)} |")
L.append("")
L.append("Side by side, literally: per backend and round, nettrace (`-t` those functions, `-p tcp --port 1`,")
L.append("matching nothing) and the floor (`scripts/bench-floor.c`: an empty program of the same type on")
L.append("each function; for kprobe-multi one program and one link for all, as nettrace) are attached at")
L.append("the same time, so every hit of one load runs both, under the same conditions; then nettrace")
L.append("matching every packet (`--addr` of the flood's destination, output counted) beside the floor")
L.append("under a second load. ns per hit = run_time_ns / run_cnt (`kernel.bpf_stats_enabled=1`) summed")
L.append("over the programs each process holds, read from `/proc/PID/fdinfo` before and after the load.")
L.append("Ratio = nettrace's ns per hit / the floor's in the same load, median over rounds (ns: medians).")
L.append("Under TCG every absolute time is inflated (roughly ten times; more, and at random, when the host")
L.append("is busy, because the guest's clock keeps running while QEMU's vCPU thread waits for a core) and")
L.append("the statistics' own two clock reads per run are part of every figure: read the ratios, not the ns.")
L.append("")
L.append("| backend | floor (empty program) ns/hit | nettrace non-matching ns/hit | ratio | ≤ 2× | nettrace matching ns/hit | ratio | hits per packet (floor / nettrace) | programs with hits (floor / nettrace) |")
L.append("|---|---:|---:|---:|---|---:|---:|---|---|")
verdicts = {}
for be in backends:
    r = ratio(be, "nettrace-nonmatch")
    ok = "n/a" if r is None else ("yes" if r <= 2 else "no")
    verdicts[be] = (r, ok)
    name = "kprobe (plain, one perf event per function) ¹" if be == "kprobe" else be
    L.append(f"| {name} | {f(med(be, 'floor-empty'))} | {f(med(be, 'nettrace-nonmatch'))} | {f(r, '{:.2f}')} | {ok} "
             f"| {f(med(be, 'nettrace-match', 'match'))} | {f(ratio(be, 'nettrace-match', st='match'), '{:.1f}')} "
             f"| {f(med(be, 'floor-empty', key='hits_per_packet'), '{:.1f}')} / {f(med(be, 'nettrace-nonmatch', key='hits_per_packet'), '{:.1f}')} "
             f"| {first(be, 'floor-empty', 'programs')} / {first(be, 'nettrace-nonmatch', 'programs')} |")
L.append("")
L.append("¹ `--backend kprobe` attaches core-kernel functions through kprobe-multi links wherever the")
L.append("kernel has fprobe (6.12 does): that is the kprobe-multi row. The kprobe row is nettrace with")
L.append("`--no-kprobe-multi` (one kprobe per function), as it attaches module functions where kprobe-multi")
L.append("can't, and every function on kernels without fprobe.")
L.append("")
L.append("Where the non-matching time goes: in the same loads, more floors beside the empty one, with")
L.append("nettrace's work before its filter can reject added step by step (`bench-floor --body`): *entry* =")
L.append("how the program learns which function fired (`bpf_get_attach_cookie` for kprobe-multi,")
L.append("`bpf_get_func_ip` for kprobe; nothing for fentry, bound to one function when loaded), *lookup* =")
L.append("+ the slot's map lookup (an array indexed by the cookie, or by a constant for fentry; for kprobe a")
L.append("hash keyed by the address, as nettrace's `nt_funcs`), *read* = + one `bpf_probe_read_kernel` of 48")
L.append("bytes, *read2* = + a second one of 20 bytes; *cast* = entry and lookup, then, instead of the two")
L.append("probe reads, direct loads of five fields through `bpf_rdonly_cast` (a kfunc since Linux 6.2: a")
L.append("pointer cast to `struct sk_buff`, then to `struct iphdr`). Before its filter rejects a packet,")
L.append("nettrace's kprobe and kprobe-multi programs do neither entry nor lookup (the function is looked up only")
L.append("for a packet that matched) and read the skb's fields and the IP header with direct loads through")
L.append("`bpf_rdonly_cast`; its fentry programs a constant-index lookup, direct loads of the skb's fields")
L.append("and of the IP header through the cast; both then call their shared body (a BPF-to-BPF call) and")
L.append("run the filter logic. *--probe-read* = nettrace non-matching with `--probe-read`, in the same")
L.append("load: the headers copied with `bpf_probe_read_kernel` instead (kprobes: the skb's fields in")
L.append("one 48-byte copy, then the IP header; fentry: the IP header), as on kernels before 6.2. ns per")
L.append("hit, and × the empty program of the same load (median over rounds):")
L.append("")
L.append("| backend | empty | + entry | + lookup | + read | + read2 | cast (instead of read, read2) | nettrace non-matching | nettrace non-matching, --probe-read |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for be in backends:
    cells = [cell(be, c) for c in ["floor-empty", "floor-entry", "floor-lookup", "floor-read", "floor-read2", "floor-cast", "nettrace-nonmatch", "nettrace-nonmatch-pr"]]
    L.append(f"| {be} | " + " | ".join(cells) + " |")
L.append("")
if med("kprobe-multi", "floor-lookup-byip") is not None:
    L.append("kprobe-multi with the function found the way plain kprobes do (`--by-ip`: `bpf_get_func_ip`, which")
    L.append("kprobe-multi answers from its run context, and a hash keyed by the address) instead of by the attach")
    L.append(f"cookie and an array: entry + lookup {cell('kprobe-multi', 'floor-lookup-byip')} ns per hit, against")
    L.append(f"{cell('kprobe-multi', 'floor-lookup')} with the cookie (6.12 finds a kprobe-multi cookie by a binary search")
    L.append("of the link's sorted addresses on every call).")
    L.append("")
hits = {}
for line in text.splitlines():
    if line.startswith("HITS backend=fentry set=nonmatch case=floor-empty "):
        for k, v in re.findall(r"(\S+)=(\d+)", line):
            if k not in ("round",):
                hits.setdefault(k, []).append(int(v))
if hits and conf.get("count"):
    n = 2 * int(conf["count"])
    per = ", ".join(f"`{k}` {statistics.median(v) / n:.2f}" for k, v in hits.items())
    L.append(f"Hits per packet of each function (fentry floor): {per}.")
    L.append("")
if errors:
    L.append("Cases that failed in the guest: " + "; ".join(f"`{e}`" for e in errors))
    L.append("")
L.append("<details><summary>every case of every round</summary>")
L.append("")
L.append("| backend | load | case | round | programs with hits | hooks | hits | hits per packet | ns per hit | attach s | load s | detach s |")
L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (be, st, case), rs in rows.items():
    for r in rs:
        L.append(f"| {be} | {st} | {case} | {r['round']} | {r['programs']} | {r['hooks']} | {int(r['hits']):,} | {r['hits_per_packet']} | {float(r['ns_per_hit']):,.1f} | {r['attach_s']} | {r['load_s']} | {r['detach_s']} |")
L.append("")
L.append("</details>")
section = "\n".join(L) + "\n"

try:
    doc = open(out).read()
except FileNotFoundError:
    doc = "# Benchmarks\n\n"
lines = doc.splitlines(keepends=True)
start = next((i for i, l in enumerate(lines) if l.startswith("## e. Kernel-function backends")), None)
if start is not None:
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].rstrip("\n") == "<!-- keep -->"), len(lines))
    new = lines[:start] + [section, "\n"] + lines[end:]
else:
    keep = next((i for i, l in enumerate(lines) if l.rstrip("\n") == "<!-- keep -->"), None)
    if keep is None:
        new = lines + (["\n"] if lines and lines[-1].strip() else []) + [section]
    else:
        new = lines[:keep] + [section, "\n"] + lines[keep:]
open(out + ".tmp", "w").write("".join(new))
os.replace(out + ".tmp", out)
for be in backends:
    r, ok = verdicts[be]
    print(f"{be}: non-matching / empty = {f(r, '{:.2f}')} (within 2x: {ok})", file=sys.stderr)
PY
log "wrote section e of $OUT"
