#!/usr/bin/env bash
# build-initramfs.sh KERNEL_DIR SCENARIO OUT.cpio.gz
#
# Builds a busybox initramfs for the Debian kernel unpacked in KERNEL_DIR (by
# fetch-kernel.sh: KERNEL_DIR/lib/modules/<release>/...) that runs the scenario script
# SCENARIO and powers off. It holds:
#   - busybox-static (every applet as a symlink),
#   - the static nettrace ($NETTRACE_VM_BIN, default target/vm/cargo/x86_64-unknown-linux-gnu/release/nettrace),
#   - Debian's ip (iproute2), ping (iputils), iptables (nft flavour, xtables-nft-multi) and
#     bpftool
#     with their shared libraries (from ldd) and the xtables extensions,
#   - the kernel modules the scenarios need, with their dependencies (read from each
#     module's .modinfo `depends=`; the packages ship no modules.dep), decompressed, and
#     loaded in dependency order by /init,
#   - tests/vm/lib.sh as /vm/lib.sh, the scenario as /scenario.sh, and /init,
#   - the extra files a scenario needs: $NT_VM_EXTRA, space-separated SRC[:DEST] (DEST, an
#     absolute path in the guest, defaults to /bin/<name of SRC>); static programs, since
#     their libraries are not copied.
set -euo pipefail

kdir="${1:?usage: build-initramfs.sh KERNEL_DIR SCENARIO OUT.cpio.gz}"
scenario="${2:?usage: build-initramfs.sh KERNEL_DIR SCENARIO OUT.cpio.gz}"
out="${3:?usage: build-initramfs.sh KERNEL_DIR SCENARIO OUT.cpio.gz}"

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${NETTRACE_VM_BIN:-$root/target/vm/cargo/x86_64-unknown-linux-gnu/release/nettrace}"

say() { printf 'build-initramfs: %s\n' "$*" >&2; }
die() { printf 'build-initramfs: error: %s\n' "$*" >&2; exit 1; }

# Modules the scenarios use (built-in ones are skipped; dependencies are added).
MODULES="veth bridge nf_tables nft_compat nft_chain_nat nf_nat nf_conntrack nf_defrag_ipv4
nf_defrag_ipv6 x_tables xt_nat xt_tcpudp xt_conntrack xt_addrtype xt_MASQUERADE nft_masq nft_ct
nf_reject_ipv4 nft_reject nft_reject_ipv4 nft_reject_inet ipt_REJECT af_packet ipv6 geneve ipip"

[ -f "$scenario" ] || die "no scenario file $scenario"
[ -d "$kdir/lib/modules" ] || die "$kdir/lib/modules not found (run fetch-kernel.sh first)"
rel="$(ls -1 "$kdir/lib/modules" | head -n1)"
moddir="$kdir/lib/modules/$rel"
[ -x "$bin" ] || die "static nettrace not found at $bin (build it: see tests/vm/README or ./dev vm-build)"

busybox=""
for c in /bin/busybox /usr/bin/busybox; do
    if [ -x "$c" ] && file -L "$c" | grep -q 'statically linked'; then busybox="$c"; break; fi
done
[ -n "$busybox" ] || die "a static busybox is needed: apt-get install busybox-static"
command -v ldd >/dev/null || die "ldd not found"
for t in gzip xz; do command -v "$t" >/dev/null || die "$t not found"; done

ip_bin="$(command -v ip || true)"; [ -n "$ip_bin" ] || ip_bin=/usr/sbin/ip
ping_bin="$(command -v ping || true)"; [ -n "$ping_bin" ] || ping_bin=/usr/bin/ping
xt_bin=/usr/sbin/xtables-nft-multi
for b in "$ip_bin" "$ping_bin" "$xt_bin"; do
    [ -x "$b" ] || die "$b not found (apt-get install iproute2 iputils-ping iptables)"
done
xt_ext=""
for d in /usr/lib/x86_64-linux-gnu/xtables /usr/lib/xtables /usr/lib64/xtables; do
    [ -d "$d" ] && { xt_ext="$d"; break; }
done
[ -n "$xt_ext" ] || die "iptables extensions directory (xtables) not found"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run/netns,etc,vm,modules,var/run,lib64}

# Copies FILE to the same path in the stage, following symlinks for the content.
put() {
    local f="$1" dst="$stage$1"
    [ -e "$dst" ] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L "$f" "$dst"
}

# Copies a dynamically linked program (or library) and every library ldd lists.
put_with_libs() {
    local f="$1" lib
    put "$f"
    for lib in $(ldd "$f" 2>/dev/null | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'); do
        put "$lib"
        # ld.so and libc may be reached through /lib64 or /lib/x86_64-linux-gnu; the real
        # file path is what the loader searches, so keep both spellings.
        local real
        real="$(readlink -f "$lib")"
        [ "$real" != "$lib" ] && put "$real"
    done
}

# --- busybox
cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list); do
    case "$applet" in busybox) continue ;; esac
    [ -e "$stage/bin/$applet" ] || ln -s busybox "$stage/bin/$applet"
done

# --- Debian tools (replace busybox's applets of the same name). The scenarios run under
# Debian's bash: Debian's static busybox ash prefers its own applets (`ip`, `ping`) to
# whatever PATH says, and busybox `ip` knows no netns/veth, busybox `ping` starts at seq 0.
rm -f "$stage/bin/ip" "$stage/bin/ping"
put_with_libs "$(readlink -f "$(command -v bash)")"
[ -e "$stage/bin/bash" ] || ln -sf "$(readlink -f "$(command -v bash)")" "$stage/bin/bash"
put_with_libs "$ip_bin"
[ "$ip_bin" = /bin/ip ] || ln -sf "$ip_bin" "$stage/bin/ip"
put_with_libs "$ping_bin"
[ "$ping_bin" = /bin/ping ] || ln -sf "$ping_bin" "$stage/bin/ping"
put_with_libs "$xt_bin"
for n in iptables iptables-nft iptables-save iptables-restore; do
    ln -sf "$xt_bin" "$stage/usr/sbin/$n"
done
for so in "$xt_ext"/*.so; do
    put_with_libs "$so"
done
# bpftool: the host suite's tests run in the guest check programs with it.
bpftool_bin="$(command -v bpftool || true)"; [ -n "$bpftool_bin" ] || bpftool_bin=/usr/sbin/bpftool
[ -x "$bpftool_bin" ] || die "$bpftool_bin not found (apt-get install bpftool)"
put_with_libs "$(readlink -f "$bpftool_bin")"
[ -e "$stage/usr/sbin/bpftool" ] || ln -sf "$(readlink -f "$bpftool_bin")" "$stage/usr/sbin/bpftool"
[ -f /etc/protocols ] && cp /etc/protocols "$stage/etc/protocols"
[ -f /etc/ethertypes ] && cp /etc/ethertypes "$stage/etc/ethertypes"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

# --- nettrace
if file -L "$bin" | grep -Eq 'statically linked|static-pie linked'; then
    cp "$bin" "$stage/bin/nettrace"
else
    say "warning: $bin is dynamically linked; copying its libraries too"
    put_with_libs "$bin"
    ln -sf "$bin" "$stage/bin/nettrace"
fi

# --- extra files ($NT_VM_EXTRA)
for x in ${NT_VM_EXTRA:-}; do
    src="${x%%:*}" dst="/bin/$(basename "${x%%:*}")"
    [ "$x" = "$src" ] || dst="${x#*:}"
    [ -f "$src" ] || die "NT_VM_EXTRA: no file $src"
    mkdir -p "$stage$(dirname "$dst")"
    cp -L "$src" "$stage$dst"
done

# --- kernel modules
# Path of module NAME (relative to moddir), or nothing if it is not a module file.
mod_path() {
    local n="$1" alt
    alt="$(printf '%s' "$n" | tr _ -)"
    find "$moddir/kernel" \( -name "$n.ko" -o -name "$n.ko.xz" -o -name "$n.ko.zst" -o -name "$n.ko.gz" \
        -o -name "$alt.ko" -o -name "$alt.ko.xz" -o -name "$alt.ko.zst" -o -name "$alt.ko.gz" \) \
        -print -quit
}
mod_cat() {
    case "$1" in
        *.xz) xz -dc "$1" ;;
        *.zst) zstd -q -dc "$1" ;;
        *.gz) gzip -dc "$1" ;;
        *) cat "$1" ;;
    esac
}
is_builtin() {
    grep -Eq "/($1|$(printf '%s' "$1" | tr _ -))\.ko\$" "$moddir/modules.builtin" 2>/dev/null
}

declare -A seen=()
order=()
add_mod() {
    local n="$1" p deps d
    [ -n "${seen[$n]:-}" ] && return 0
    seen[$n]=1
    p="$(mod_path "$n")"
    if [ -z "$p" ]; then
        if is_builtin "$n"; then
            echo "builtin $n" >>"$stage/modules/builtin.txt"
        else
            echo "absent $n" >>"$stage/modules/builtin.txt"
        fi
        return 0
    fi
    mod_cat "$p" >"$stage/modules/$n.ko"
    deps="$(tr '\0' '\n' <"$stage/modules/$n.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' ')"
    for d in $deps; do
        add_mod "$d"
    done
    order+=("$n")
}
for m in $MODULES; do
    add_mod "$m"
done
printf '%s\n' "${order[@]}" >"$stage/modules/order"
say "modules for $rel: ${order[*]}"

# --- scenario and init
cp "$here/lib.sh" "$stage/vm/lib.sh"
cp "$scenario" "$stage/scenario.sh"
cat >"$stage/init" <<'EOF'
#!/bin/sh
# Generated by tests/vm/build-initramfs.sh: set up the guest, run /scenario.sh, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t tmpfs tmpfs /run
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /run/netns /sys/kernel/tracing /sys/kernel/debug /sys/fs/bpf
mount -t tracefs nodev /sys/kernel/tracing
mount -t debugfs nodev /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
echo 1 > /sys/kernel/rcu_expedited
ip link set lo up 2>/dev/null
echo "=== GUEST START $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime) ==="
. /vm/lib.sh
load_modules() {
    _fail=0
    for m in $(cat /modules/order); do
        if insmod "/modules/$m.ko"; then
            echo "loaded $m"
        else
            echo "FAILED $m"
            _fail=1
        fi
    done
    cat /modules/builtin.txt 2>/dev/null
    return $_fail
}
step modules load_modules
step kernel-facts kernel_facts
bash /scenario.sh
echo "=== SCENARIO DONE rc=$? ==="
echo "=== BEGIN dmesg ==="
dmesg | tail -n 80
echo "=== END dmesg rc=0 ==="
echo "=== GUEST END uptime=$(cut -d' ' -f1 /proc/uptime) ==="
sync
echo o > /proc/sysrq-trigger
sleep 5
poweroff -f
EOF
chmod 755 "$stage/init" "$stage/scenario.sh"

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
say "wrote $out ($(du -h "$out" | cut -f1))"
