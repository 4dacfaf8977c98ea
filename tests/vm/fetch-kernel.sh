#!/usr/bin/env bash
# fetch-kernel.sh SERIES OUTDIR
#
# Finds the newest Debian cloud kernel of SERIES (6.1 or 6.12) known to apt
# (linux-image-<SERIES>...-cloud-amd64, signed or -unsigned), downloads the .deb with
# `apt-get download` (nothing is installed on the host) and unpacks it under
# OUTDIR/<package>/ (reused when already there). Prints three lines:
#   package=<name>_<version>
#   kernel=<path of vmlinuz>
#   modules=<path of lib/modules/<release>>
#
# Runs `apt-get update` only when apt knows no such package yet (or when
# NT_VM_APT_UPDATE=1). Needs root for apt-get update; apt-get download does not.
set -euo pipefail

series="${1:?usage: fetch-kernel.sh SERIES OUTDIR}"
outdir="${2:?usage: fetch-kernel.sh SERIES OUTDIR}"
case "$series" in
    6.1 | 6.12) ;;
    *) echo "fetch-kernel: unsupported series $series (6.1 or 6.12)" >&2; exit 2 ;;
esac
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

say() { printf 'fetch-kernel: %s\n' "$*" >&2; }

# linux-image-6.1.0-56-cloud-amd64, linux-image-6.12.117+deb12-cloud-amd64 (optionally
# -unsigned); never the -dbg packages nor the meta packages (linux-image-6.12-cloud-amd64).
re="^linux-image-${series//./\\.}[.-][0-9][^ ]*-cloud-amd64(-unsigned)?\$"

# The "ABI" part between linux-image- and -cloud-amd64, newest first.
candidates() {
    apt-cache search --names-only "$re" 2>/dev/null | awk '{print $1}' \
        | grep -Ev -- '-dbg$' | grep -E -- "$re" || true
}

# A cached unpack wins unless asked to refresh: quick and offline on the second run.
cached_release() {
    local d
    for d in $(ls -1d "$outdir"/linux-image-"$series"[.-]*-cloud-amd64* 2>/dev/null | sort -V -r); do
        if [ -f "$d/.complete" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

print_result() {
    local dir="$1" rel kernel
    rel="$(ls -1 "$dir/lib/modules" | head -n1)"
    kernel="$dir/boot/vmlinuz-$rel"
    [ -f "$kernel" ] || { say "no kernel image in $dir/boot"; exit 1; }
    echo "package=$(cat "$dir/.package")"
    echo "kernel=$kernel"
    echo "modules=$dir/lib/modules/$rel"
}

if [ "${NT_VM_REFRESH:-0}" != 1 ] && dir="$(cached_release)"; then
    print_result "$dir"
    exit 0
fi

command -v apt-cache >/dev/null || { say "apt-cache not found (a Debian host is needed)"; exit 1; }
names="$(candidates)"
if [ -z "$names" ] || [ "${NT_VM_APT_UPDATE:-0}" = 1 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || { say "apt-get update failed"; exit 1; }
    names="$(candidates)"
fi
[ -n "$names" ] || {
    say "no linux-image-$series*-cloud-amd64 package known to apt (bookworm / bookworm-backports / trixie)"
    exit 1
}

# Newest ABI first; for one ABI prefer -unsigned, then the signed image. A package listed
# by apt-cache search may have no downloadable candidate (stale lists): try the next one.
abis="$(printf '%s\n' "$names" | sed -E 's/^linux-image-//; s/-cloud-amd64(-unsigned)?$//' | sort -u -V -r)"
workdir="$(mktemp -d)"
chmod 755 "$workdir"
trap 'rm -rf "$workdir"' EXIT
pkg=""
for abi in $abis; do
    for cand in "linux-image-$abi-cloud-amd64-unsigned" "linux-image-$abi-cloud-amd64"; do
        printf '%s\n' "$names" | grep -qx -- "$cand" || continue
        if [ -d "$outdir/$cand" ] && [ -f "$outdir/$cand/.complete" ]; then
            print_result "$outdir/$cand"
            exit 0
        fi
        say "apt-get download $cand"
        if (cd "$workdir" && apt-get download -qq "$cand" >&2); then
            pkg="$cand"
            break 2
        fi
        say "could not download $cand; trying the next candidate"
    done
done
[ -n "$pkg" ] || { say "no candidate of series $series could be downloaded"; exit 1; }

deb="$(ls -1 "$workdir"/*.deb | head -n1)"
dest="$outdir/$pkg"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
basename "$deb" .deb | sed 's/_amd64$//' >"$dest.tmp/.package"
touch "$dest.tmp/.complete"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
print_result "$dest"
